//! Finding shared objects by name, and a shared hash map.
//!
//! - [`Registry`]: name (up to 63 bytes) → payload offset + [`TypeFingerprint`].
//!   The segment's root registry ([`Registry::root`]) is where
//!   [`WorkQueue`](crate::workers::WorkQueue)s and named maps are found.
//! - [`ShmHashMap`]: a fixed-capacity hash map of plain-old-data keys and
//!   values living in one block; removed keys' slots are reused.
//! - [`ShmMap`]: a concurrent map of string or byte keys to dynamic values
//!   (`ShmVec`, `ShmString`, records of them); removed keys free their
//!   blocks and their slots are reused.

mod error;
mod fingerprint;
mod hashmap;
mod registry;
mod shm_map;

pub use error::{MapError, RegistryError, ShmMapError};

pub use fingerprint::{type_id, TypeFingerprint, MAX_NAME_LEN};
pub use hashmap::{ShmHashMap, MAX_MAP_CAPACITY};
pub use registry::{
    EntryDamage, EntryRecord, EntryState, ObjectBlock, ObjectKind, Registry, RegistryEntry,
    RegistryRecord, MAX_REGISTRY_CAPACITY, ROOT_CAPACITY,
};
pub use shm_map::{MapKey, MapRecovery, ShmMap, MAX_KEY_LEN, MAX_SHM_MAP_CAPACITY};
