//! What one slot word of a [`ShmMap`](super::ShmMap) says, and the key hash.
//!
//! ```text
//!  63                                  28 27                  0
//! +--------------------------------------+---------------------+
//! | generation, low 36 bits              | entry offset / 16   |   LIVE: an entry's token word
//! +--------------------------------------+---------------------+
//! | claim: intent + 1 (12) | tag (24)    |          0          |   CLAIMED by an inserter
//! | 0                      | 1           |          0          |   TOMBSTONE: a removed key
//! | 0                                                          |   EMPTY: never used
//! +------------------------------------------------------------+
//! ```
//!
//! No entry has payload offset 0 (the segment header is there), so a word
//! whose offset field is 0 is never a token.

/// Never used: ends every probe chain.
pub(crate) const EMPTY: u64 = 0;
/// A key was removed here; reusable by any later insert.
pub(crate) const TOMBSTONE: u64 = 1 << 28;
const OFFSET_MASK: u64 = (1 << 28) - 1;
/// Bits of the hash a claim carries.
pub(crate) const TAG_MASK: u64 = (1 << 24) - 1;

/// A decoded slot word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    Empty,
    Tombstone,
    /// Claimed by the inserter holding intent entry `intent`, for a key
    /// whose hash has the low 24 bits `tag`.
    Claimed {
        intent: usize,
        tag: u32,
    },
    /// An entry: the token word of its block.
    Live(u64),
}

/// The word of a claim by intent entry `intent` for a key of hash `tag`.
pub(crate) const fn claim(intent: usize, tag: u32) -> u64 {
    ((intent as u64 + 1) << 24 | (tag as u64 & TAG_MASK)) << 28
}

/// What `word` says; `intents` bounds a valid claim (garbage reads as a
/// tombstone: skipped by lookups, reusable by inserts).
pub(crate) fn decode(word: u64, intents: usize) -> Slot {
    if word == EMPTY {
        return Slot::Empty;
    }
    if word & OFFSET_MASK != 0 {
        return Slot::Live(word);
    }
    let upper = word >> 28;
    let intent = (upper >> 24) as usize;
    if intent == 0 || intent > intents {
        return Slot::Tombstone;
    }
    Slot::Claimed {
        intent: intent - 1,
        tag: (upper & TAG_MASK) as u32,
    }
}

/// A 64-bit hash of key bytes (8 bytes at a time, then a final mix).
pub(crate) fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0x243F_6A88_85A3_08D3 ^ bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for c in chunks.by_ref() {
        let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        h = (h ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^= h >> 29;
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    h = (h ^ u64::from_le_bytes(tail)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^= h >> 32;
    h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_decode_to_what_they_encode() {
        assert_eq!(decode(EMPTY, 64), Slot::Empty);
        assert_eq!(decode(TOMBSTONE, 64), Slot::Tombstone);
        assert_eq!(
            decode(claim(63, 0xAB_CDEF), 64),
            Slot::Claimed {
                intent: 63,
                tag: 0xAB_CDEF
            }
        );
        assert_eq!(decode(claim(0, 0), 64), Slot::Claimed { intent: 0, tag: 0 });
        // A claim naming an intent entry the map does not have is garbage.
        assert_eq!(decode(claim(64, 5), 64), Slot::Tombstone);
        let token = matrix_handler::BlockToken::new(4096, (1 << 36) - 1, 7).word();
        assert_eq!(decode(token, 64), Slot::Live(token));
    }

    #[test]
    fn the_hash_depends_on_every_byte_and_the_length() {
        assert_ne!(hash(b""), hash(b"\0"));
        assert_ne!(hash(b"abcdefgh1"), hash(b"abcdefgh2"));
        assert_ne!(hash(b"a"), hash(b"a\0"));
        assert_eq!(hash(b"orders"), hash(b"orders"));
    }
}
