//! The control word of a [`ShmHashMap`](super::ShmHashMap) slot, and the
//! identity a lock holder stamps into it.
//!
//! ```text
//!  63                   32 31                       4 3     2 1         0
//! +-----------------------+--------------------------+-------+---------+--------+
//! | version (32)          | holder (28), 0 unlocked  | state | CURRENT | LOCKED |
//! +-----------------------+--------------------------+-------+---------+--------+
//!  holder: owner id (12) | low 16 bits of the generation of its participant claim
//! ```
//!
//! The *committed* bits (version, state, CURRENT) change only in a
//! holder's commit, and every commit adds one to the version; locking and
//! unlocking leave them as they are. A reader that finds the committed bits
//! unchanged around its copy of a slot's key and value therefore copied one
//! consistent snapshot of them — unless the slot saw exactly a multiple of
//! 2^32 commits between its two loads.

use crate::shm::{claim_generation, owner_alive};
use matrix_core::AtomicMatrix;

pub(super) const LOCKED: u64 = 1;
pub(super) const CURRENT: u64 = 2;
const STATE_MASK: u64 = 0b11 << 2;
/// Never used: ends every probe chain. A slot never returns to it.
pub(super) const EMPTY: u64 = 0;
/// Holds a key (words valid) with its value in the CURRENT buffer.
pub(super) const LIVE: u64 = 1 << 2;
/// Free for any key: removed, or claimed (then LOCKED) by an inserter.
pub(super) const TOMBSTONE: u64 = 2 << 2;
/// Removed, and LOCKED by its remover until it has given the key's room
/// back: the one trace of a remove between those two steps, so that an
/// insert refused for room can tell "full" from "room on its way back".
pub(super) const REMOVING: u64 = 3 << 2;
const HOLDER_SHIFT: u32 = 4;
const HOLDER_MASK: u64 = ((1 << 28) - 1) << HOLDER_SHIFT;
const VERSION_ONE: u64 = 1 << 32;
/// Version, state and CURRENT.
pub(super) const COMMITTED: u64 = !(LOCKED | HOLDER_MASK);

/// The slot's state: [`EMPTY`], [`LIVE`], [`TOMBSTONE`] or [`REMOVING`]
/// (an unlocked REMOVING, which this API never writes, reads as a
/// tombstone).
pub(super) const fn state(c: u64) -> u64 {
    match c & STATE_MASK {
        EMPTY => EMPTY,
        LIVE => LIVE,
        REMOVING if c & LOCKED != 0 => REMOVING,
        _ => TOMBSTONE,
    }
}

/// Which value buffer (0 or 1) is current.
pub(super) const fn current(c: u64) -> u64 {
    (c & CURRENT) >> 1
}

pub(super) const fn holder(c: u64) -> u32 {
    ((c & HOLDER_MASK) >> HOLDER_SHIFT) as u32
}

/// `c` locked by `holder`, with `state` (the committed bits otherwise kept).
pub(super) const fn locked(c: u64, state: u64, holder: u32) -> u64 {
    (c & COMMITTED & !STATE_MASK) | state | LOCKED | (holder as u64) << HOLDER_SHIFT
}

/// The unlocked word a holder of `c` commits: the next version, `state`,
/// and buffer `current` current.
pub(super) const fn commit(c: u64, state: u64, current: u64) -> u64 {
    ((c & !(VERSION_ONE - 1)).wrapping_add(VERSION_ONE)) | state | (current & 1) << 1
}

/// `c` (a REMOVING word) unlocked as a tombstone; the version is kept:
/// nothing a reader copies changed since the remove's commit.
pub(super) const fn unlocked_tombstone(c: u64) -> u64 {
    (c & COMMITTED & !STATE_MASK) | TOMBSTONE
}

/// This participant's holder identity: owner id and the low 16 bits of the
/// generation of its claim on its participant slot, so that a later
/// holder of the same slot is not mistaken for it.
pub(super) fn identity(matrix: &AtomicMatrix) -> u32 {
    let owner = matrix.owner_id().0;
    let generation = claim_generation(matrix, owner).unwrap_or(0);
    (generation & 0xFFFF) << 12 | (owner & 0xFFF)
}

/// Whether the holder with identity `holder` is certainly gone: its
/// participant slot was claimed again since, or its liveness lock says
/// dead. Unknown counts as alive. Asks the liveness lock (one `fcntl`):
/// cold paths only.
pub(super) fn holder_dead(matrix: &AtomicMatrix, holder: u32) -> bool {
    let owner = holder & 0xFFF;
    match claim_generation(matrix, owner) {
        None => true,
        Some(g) if g & 0xFFFF != holder >> 12 => true,
        Some(_) => !owner_alive(matrix, owner),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locking_keeps_and_committing_bumps_the_committed_bits() {
        let c = commit(0, LIVE, 1);
        assert_eq!((state(c), current(c), c & LOCKED), (LIVE, 1, 0));
        let l = locked(c, LIVE, 0xABC_DEF);
        assert_eq!(l & COMMITTED, c & COMMITTED);
        assert_eq!(holder(l), 0xABC_DEF);
        let t = commit(l, TOMBSTONE, current(l));
        assert_eq!(
            (state(t), current(t), t & LOCKED, holder(t)),
            (TOMBSTONE, 1, 0, 0)
        );
        assert_ne!(t & COMMITTED, c & COMMITTED);
        // A claim of a tombstone keeps its version: nothing a reader
        // validates against has changed.
        let claim = locked(t, TOMBSTONE, 5);
        assert_eq!(claim & COMMITTED, t & COMMITTED);
        // The version wraps without touching the other bits.
        let top = !(VERSION_ONE - 1);
        assert_eq!(commit(top, LIVE, 0), LIVE);
        assert_eq!(state(0b11 << 2), TOMBSTONE);
        // A remove's commit keeps the lock until the room is back.
        let removing = locked(commit(l, REMOVING, current(l)), REMOVING, 7);
        assert_eq!((state(removing), holder(removing)), (REMOVING, 7));
        assert_ne!(removing & COMMITTED, l & COMMITTED);
        let freed = unlocked_tombstone(removing);
        assert_eq!((state(freed), freed & LOCKED), (TOMBSTONE, 0));
        assert_eq!(freed >> 32, removing >> 32, "same version");
    }
}
