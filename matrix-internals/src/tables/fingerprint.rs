//! Type fingerprints and registry names.

use crate::shm::fnv1a;
use std::fmt;

/// Longest registry name, in bytes.
pub const MAX_NAME_LEN: usize = 63;

/// What a registry records about the type of a shared object, so that a
/// process opening it by name with another type is refused.
///
/// `size` and `align` come from the compiler; `type_id` is a stable number
/// chosen by the user (see [`type_id`]) or derived from the type's name
/// ([`TypeFingerprint::derived`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TypeFingerprint {
    /// `size_of` the type (for a structure with a variable tail, its header).
    pub size: u32,
    /// `align_of` the type.
    pub align: u32,
    /// A stable identifier of the type.
    pub type_id: u64,
}

impl TypeFingerprint {
    /// The fingerprint of `T` with a user-chosen stable `type_id`.
    ///
    /// Prefer this across builds: the id survives renames and compiler
    /// upgrades, which [`derived`](Self::derived) does not promise.
    pub const fn of<T>(type_id: u64) -> Self {
        TypeFingerprint {
            size: std::mem::size_of::<T>() as u32,
            align: std::mem::align_of::<T>() as u32,
            type_id,
        }
    }

    /// The fingerprint of `T` with an id hashed from
    /// `std::any::type_name::<T>()`.
    ///
    /// The type name is stable for one build, so processes running the same
    /// binary (or binaries built by the same compiler from the same code)
    /// agree; across different builds use [`of`](Self::of).
    pub fn derived<T>() -> Self {
        Self::of::<T>(type_id(std::any::type_name::<T>()))
    }
}

impl fmt::Display for TypeFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{{size {}, align {}, id {:#018x}}}",
            self.size, self.align, self.type_id
        )
    }
}

/// A stable 64-bit type id from a string, e.g. `type_id("my-app::Quote v2")`.
pub const fn type_id(label: &str) -> u64 {
    fnv1a(label.as_bytes())
}

/// Why a name cannot be registered.
pub(crate) fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("the name is empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("the name is longer than 63 bytes")
    } else if !name.bytes().all(|b| b.is_ascii_graphic()) {
        Some("the name may only hold printable ASCII without spaces")
    } else {
        None
    }
}

/// A validated name packed into the eight words an entry stores.
pub(crate) fn name_words(name: &str) -> [u64; 8] {
    let mut bytes = [0u8; 64];
    bytes[..name.len()].copy_from_slice(name.as_bytes());
    std::array::from_fn(|i| {
        u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
    })
}

/// The name stored in `words` (`len` bytes), lossy on garbage.
pub(crate) fn name_from_words(words: &[u64; 8], len: usize) -> String {
    let mut bytes = [0u8; 64];
    for (i, w) in words.iter().enumerate() {
        bytes[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
    String::from_utf8_lossy(&bytes[..len.min(MAX_NAME_LEN)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(name_problem("orders.v1").is_none());
        assert!(name_problem(&"x".repeat(63)).is_none());
        assert!(name_problem(&"x".repeat(64)).is_some());
        assert!(name_problem("").is_some());
        assert!(name_problem("has space").is_some());
        assert!(name_problem("tab\t").is_some());
        assert!(name_problem("é").is_some());
    }

    #[test]
    fn names_round_trip_through_words() {
        let name = "a-name_with.63-bytes-max";
        assert_eq!(name_from_words(&name_words(name), name.len()), name);
    }

    #[test]
    fn fingerprints_differ_by_layout_and_id() {
        assert_ne!(TypeFingerprint::of::<u64>(1), TypeFingerprint::of::<u32>(1));
        assert_ne!(TypeFingerprint::of::<u64>(1), TypeFingerprint::of::<u64>(2));
        assert_eq!(
            TypeFingerprint::derived::<u64>(),
            TypeFingerprint::derived::<u64>()
        );
        assert_ne!(
            TypeFingerprint::derived::<u64>(),
            TypeFingerprint::derived::<i64>()
        );
    }
}
