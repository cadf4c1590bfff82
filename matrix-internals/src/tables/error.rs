//! Error types of the tables.

use super::hashmap::MAX_MAP_CAPACITY;
use super::TypeFingerprint;
use crate::dynamic::DynError;
use matrix_handler::HandlerError;
use std::fmt;

/// Why a registry operation failed. A failed operation changes nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistryError {
    /// The name is empty, longer than 63 bytes, or not printable ASCII.
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No object is registered under the name.
    NotFound {
        /// The name looked up.
        name: String,
    },
    /// The name is registered with another type.
    TypeMismatch {
        /// The name.
        name: String,
        /// The fingerprint asked for.
        expected: TypeFingerprint,
        /// The fingerprint registered.
        found: TypeFingerprint,
    },
    /// Every entry is in use.
    Full {
        /// Entries of this registry.
        capacity: u32,
    },
    /// The offset does not hold a registry (bad magic, capacity or size).
    NotARegistry {
        /// The payload offset given.
        offset: u32,
        /// What is wrong.
        what: &'static str,
    },
    /// The creation closure failed; nothing was registered.
    CreateFailed(HandlerError),
    /// A block operation on the registry itself failed.
    Handler(HandlerError),
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryError::InvalidName { name, reason } => {
                write!(
                    f,
                    "invalid registry name {name:?}: {reason} (use 1 to 63 printable ASCII bytes)"
                )
            }
            RegistryError::NotFound { name } => write!(f, "nothing is registered under {name:?}"),
            RegistryError::TypeMismatch {
                name,
                expected,
                found,
            } => write!(
                f,
                "{name:?} is registered as type {found}, not the requested {expected}: \
                 open it with its own type or register another name"
            ),
            RegistryError::Full { capacity } => {
                write!(f, "the registry is full ({capacity} entries): remove a name or use another registry")
            }
            RegistryError::NotARegistry { offset, what } => {
                write!(f, "no registry at offset {offset}: {what}")
            }
            RegistryError::CreateFailed(e) => write!(f, "creating the object failed: {e}"),
            RegistryError::Handler(e) => write!(f, "registry block: {e}"),
        }
    }
}

impl std::error::Error for RegistryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RegistryError::CreateFailed(e) | RegistryError::Handler(e) => Some(e),
            _ => None,
        }
    }
}

impl From<HandlerError> for RegistryError {
    fn from(e: HandlerError) -> Self {
        RegistryError::Handler(e)
    }
}

/// Why a map operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapError {
    /// A new key does not fit: the map already holds `capacity` keys
    /// (counting inserts of new keys in flight; a removed key's room is
    /// given back, and its slot reused, at its remove).
    Full {
        /// Keys the map may hold.
        capacity: u32,
    },
    /// The capacity is 0 or above the maximum.
    InvalidCapacity {
        /// The capacity asked for.
        requested: u32,
    },
    /// The offset does not hold a map of these key and value types.
    NotAMap {
        /// Payload offset.
        offset: u32,
        /// What is wrong.
        what: &'static str,
    },
    /// Finding or registering the name failed.
    Registry(RegistryError),
    /// Allocating or validating the block failed.
    Handler(HandlerError),
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapError::Full { capacity } => write!(
                f,
                "the map is full: it holds {capacity} keys; remove keys or create a larger map"
            ),
            MapError::InvalidCapacity { requested } => {
                write!(
                    f,
                    "map capacity {requested} is not in 1..={MAX_MAP_CAPACITY}"
                )
            }
            MapError::NotAMap { offset, what } => write!(f, "no map at offset {offset}: {what}"),
            MapError::Registry(e) => write!(f, "map name: {e}"),
            MapError::Handler(e) => write!(f, "map block: {e}"),
        }
    }
}

impl std::error::Error for MapError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MapError::Registry(e) => Some(e),
            MapError::Handler(e) => Some(e),
            _ => None,
        }
    }
}

impl From<RegistryError> for MapError {
    fn from(e: RegistryError) -> Self {
        MapError::Registry(e)
    }
}

impl From<HandlerError> for MapError {
    fn from(e: HandlerError) -> Self {
        MapError::Handler(e)
    }
}

/// Why a [`ShmMap`](crate::tables::ShmMap) operation failed. A failed
/// operation leaves the map as it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShmMapError {
    /// A new key does not fit: the map holds `capacity` keys.
    Full {
        /// Keys the map may hold.
        capacity: u32,
    },
    /// The capacity is 0 or above the maximum.
    InvalidCapacity {
        /// The capacity asked for.
        requested: u32,
    },
    /// The key is longer than an entry may hold.
    KeyTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// More writers at once than the map has intent entries (64); the
    /// operation did nothing, try again.
    Busy,
    /// The offset does not hold a map of these key and value types.
    NotAMap {
        /// Payload offset.
        offset: u32,
        /// What is wrong.
        what: &'static str,
    },
    /// A slot names an entry that is not one (written outside this API).
    Corrupted {
        /// The slot.
        slot: u32,
        /// What is wrong.
        what: &'static str,
    },
    /// The value's blocks could not be taken over (freed, foreign, or
    /// owned by another participant); the value is left with the caller.
    Value(DynError),
    /// Finding or registering the name failed.
    Registry(RegistryError),
    /// Allocating or validating a block failed.
    Handler(HandlerError),
}

impl fmt::Display for ShmMapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShmMapError::Full { capacity } => {
                write!(
                    f,
                    "the map is full ({capacity} keys): remove keys or create a larger map"
                )
            }
            ShmMapError::InvalidCapacity { requested } => write!(
                f,
                "map capacity {requested} is not in 1..={}",
                super::shm_map::MAX_SHM_MAP_CAPACITY
            ),
            ShmMapError::KeyTooLong { len } => write!(
                f,
                "a key of {len} bytes is longer than the {} an entry holds",
                super::shm_map::MAX_KEY_LEN
            ),
            ShmMapError::Busy => write!(
                f,
                "every intent entry of the map is in use by another writer: try again"
            ),
            ShmMapError::NotAMap { offset, what } => write!(f, "no map at offset {offset}: {what}"),
            ShmMapError::Corrupted { slot, what } => write!(f, "map slot {slot}: {what}"),
            ShmMapError::Value(e) => write!(f, "the value cannot be stored: {e}"),
            ShmMapError::Registry(e) => write!(f, "map name: {e}"),
            ShmMapError::Handler(e) => write!(f, "map block: {e}"),
        }
    }
}

impl std::error::Error for ShmMapError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ShmMapError::Value(e) => Some(e),
            ShmMapError::Registry(e) => Some(e),
            ShmMapError::Handler(e) => Some(e),
            _ => None,
        }
    }
}

impl From<RegistryError> for ShmMapError {
    fn from(e: RegistryError) -> Self {
        ShmMapError::Registry(e)
    }
}

impl From<HandlerError> for ShmMapError {
    fn from(e: HandlerError) -> Self {
        ShmMapError::Handler(e)
    }
}
