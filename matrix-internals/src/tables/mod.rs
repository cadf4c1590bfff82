//! Finding shared objects by name, and a shared hash map.
//!
//! - [`Registry`]: name (up to 63 bytes) → payload offset + [`TypeFingerprint`].
//!   The segment's root registry ([`Registry::root`]) is where
//!   [`WorkQueue`](crate::workers::WorkQueue)s and named maps are found.
//! - [`ShmHashMap`]: a fixed-capacity hash map of plain-old-data keys and
//!   values living in one block.

mod error;
mod fingerprint;
mod hashmap;
mod registry;

pub use error::{MapError, RegistryError};

pub use fingerprint::{type_id, TypeFingerprint, MAX_NAME_LEN};
pub use hashmap::{ShmHashMap, MAX_MAP_CAPACITY};
pub use registry::{
    EntryDamage, EntryRecord, EntryState, ObjectBlock, ObjectKind, Registry, RegistryEntry,
    RegistryRecord, MAX_REGISTRY_CAPACITY, ROOT_CAPACITY,
};
