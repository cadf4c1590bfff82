//! Block states and the state word.
//!
//! Every block header holds one 64-bit *state word*: the block's
//! generation, its owner and its state.
//!
//! ```text
//!  63                              24 23          12 11           0
//! +----------------------------------+--------------+--------------+
//! | generation (40 bits)             | owner (12)   | state (12)   |
//! +----------------------------------+--------------+--------------+
//! ```
//!
//! Every decision about a block depends on at least two of these facts: a
//! free needs "live, this generation" and moves the block out of its owner's
//! name; an adoption needs "live, this generation, owned by X"; a recovery
//! needs "owned by a dead participant, in a state it may reclaim". Because
//! all three live in one word, each of those transitions is a single CAS
//! from the exact word that was judged, and no other operation can slip in
//! between the check and the change.
//!
//! The owner is a participant slot + 1 (0 = the segment). The generation is
//! 40 bits wide: a stale handle aliases a new block at the same offset only
//! if exactly 2^40 generations were handed out in the meantime.
//!
//! | state | value | meaning | who may enter it | from |
//! |---|---|---|---|---|
//! | `FREE` | 0 | in a bucket of the free index (or in the hands of the thread that just popped it) | `free`, split (new remainder), consolidation, recovery, cache flush | `ACKED`, `COALESCING`, `CACHED`, fresh header |
//! | `ALLOCATED` | 1 | owned by a participant; payload belongs to the user | `allocate` (bumps the generation) | `FREE` (after a pop), `CACHED` (by the caching thread) |
//! | `ACKED` | 2 | being returned by `free`, or claimed by a recoverer | `free`, recovery | `ALLOCATED`, user states, `CACHED`, `COALESCING` (recovery) |
//! | `COALESCING` | 3 | held by a consolidator | consolidation | `FREE` (after a pop) |
//! | `CACHED` | 4 | freed into the freeing thread's cache; reused by that thread without touching the free index | `free` (thread-cache path) | `ALLOCATED`, user states |
//! | `RELEASING` | 5 | being pushed onto a free list by its releaser (owner = the releaser); a popper may claim it at once | `free`, split (new remainder), consolidation, recovery, cache flush | `ACKED`, `COALESCING`, `CACHED`, fresh header |
//! | `RESIZING` | 6 | held by its resizer (owner = the resizer); the owner and state to return to wait in a resize intent of the resizer's slot (`realloc::resize_intent`) | `reallocate`; recovery hands it back | `ALLOCATED`, user states |
//! | reserved | 7–48 | future internal states; never entered | nobody | — |
//! | user | 49–4095 | user lifecycle; never reclaimed automatically | `set_state` / `transition_state` | `ALLOCATED`, user states |

/// In a bucket of the free index.
pub const FREE: u32 = 0;
/// Owned by a participant.
pub const ALLOCATED: u32 = 1;
/// Being returned by `free` (the CAS that detects double frees).
pub const ACKED: u32 = 2;
/// Held by a consolidator.
pub const COALESCING: u32 = 3;
/// Free, held in the freeing thread's cache (owner = its participant).
pub const CACHED: u32 = 4;
/// On its way into a free list: its releaser (the owner) pushes it, then
/// moves it to FREE. Poppers claim it like a FREE block; a recoverer that
/// finds it under a dead owner cannot tell whether the push happened, and
/// resolves that by draining the index (see `recover.rs`).
pub const RELEASING: u32 = 5;
/// Held by a resizer (`realloc.rs`): not live, so frees, adoptions, state
/// changes and checked reads are refused until it is handed back.
pub const RESIZING: u32 = 6;
/// The lowest state a user lifecycle may use; 7–48 are reserved.
pub const USER_STATE_MIN: u32 = 49;
/// The highest state a block can be in (the state field is 12 bits).
pub const STATE_MAX: u32 = (1 << STATE_BITS) - 1;

/// Bits of the state field.
pub const STATE_BITS: u32 = 12;
/// Bits of the owner field.
pub const OWNER_BITS: u32 = 12;
/// Bits of the generation field.
pub const GENERATION_BITS: u32 = 64 - STATE_BITS - OWNER_BITS;
/// The largest owner value (slot + 1); one more than the last slot index.
pub const OWNER_MAX: u32 = (1 << OWNER_BITS) - 1;
/// Generations wrap at this mask.
pub const GENERATION_MASK: u64 = (1 << GENERATION_BITS) - 1;

const OWNER_SHIFT: u32 = STATE_BITS;
const GENERATION_SHIFT: u32 = STATE_BITS + OWNER_BITS;
const STATE_MASK: u64 = (1 << STATE_BITS) - 1;
const OWNER_MASK: u64 = ((1 << OWNER_BITS) - 1) << OWNER_SHIFT;

/// Whether `state` is one a live (not free) block may be in: allocated or user.
#[inline]
pub const fn is_live(state: u32) -> bool {
    state == ALLOCATED || state >= USER_STATE_MIN
}

/// Whether `state` is reserved for future internal use (7–48).
#[inline]
pub const fn is_reserved(state: u32) -> bool {
    state > RESIZING && state < USER_STATE_MIN
}

/// Whether a block in `state` may be claimed by whoever pops it from a free
/// list: FREE, or RELEASING (pushed, not yet marked FREE by its releaser).
#[inline]
pub const fn is_listable(state: u32) -> bool {
    state == FREE || state == RELEASING
}

/// Whether `state` means "free memory" (in the index or in a thread cache).
#[inline]
pub const fn is_free(state: u32) -> bool {
    state == FREE || state == CACHED
}

/// Whether `state` fits the state field and is one a user may set.
#[inline]
pub const fn is_user_state(state: u32) -> bool {
    state >= USER_STATE_MIN && state <= STATE_MAX
}

/// Packs a generation, an owner (slot + 1, 0 = segment) and a state into one
/// state word. Bits beyond each field's width are dropped.
#[inline]
pub const fn pack(generation: u64, owner: u32, state: u32) -> u64 {
    ((generation & GENERATION_MASK) << GENERATION_SHIFT)
        | (((owner as u64) << OWNER_SHIFT) & OWNER_MASK)
        | (state as u64 & STATE_MASK)
}

/// The state field of a state word.
#[inline]
pub const fn state_of(word: u64) -> u32 {
    (word & STATE_MASK) as u32
}

/// The owner field of a state word (slot + 1; 0 = the segment).
#[inline]
pub const fn owner_of(word: u64) -> u32 {
    ((word & OWNER_MASK) >> OWNER_SHIFT) as u32
}

/// The generation field of a state word.
#[inline]
pub const fn generation_of(word: u64) -> u64 {
    word >> GENERATION_SHIFT
}

/// `word` with its state field replaced.
#[inline]
pub const fn with_state(word: u64, state: u32) -> u64 {
    (word & !STATE_MASK) | (state as u64 & STATE_MASK)
}

/// `word` with its owner field replaced.
#[inline]
pub const fn with_owner(word: u64, owner: u32) -> u64 {
    (word & !OWNER_MASK) | (((owner as u64) << OWNER_SHIFT) & OWNER_MASK)
}

/// A short name for a state, for messages and tools.
pub fn state_name(state: u32) -> &'static str {
    match state {
        FREE => "FREE",
        ALLOCATED => "ALLOCATED",
        ACKED => "ACKED",
        COALESCING => "COALESCING",
        CACHED => "CACHED",
        RELEASING => "RELEASING",
        RESIZING => "RESIZING",
        s if is_reserved(s) => "RESERVED",
        _ => "USER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_and_do_not_bleed() {
        let w = pack(GENERATION_MASK, OWNER_MAX, STATE_MAX);
        assert_eq!(generation_of(w), GENERATION_MASK);
        assert_eq!(owner_of(w), OWNER_MAX);
        assert_eq!(state_of(w), STATE_MAX);
        let w = pack(0x12_3456_789A, 77, USER_STATE_MIN);
        assert_eq!(generation_of(w), 0x12_3456_789A);
        assert_eq!(owner_of(w), 77);
        assert_eq!(state_of(w), USER_STATE_MIN);
        assert_eq!(owner_of(with_state(w, ACKED)), 77);
        assert_eq!(state_of(with_owner(w, 3)), USER_STATE_MIN);
        assert_eq!(generation_of(with_owner(w, 3)), 0x12_3456_789A);
        // A generation past 40 bits wraps instead of reaching the owner.
        assert_eq!(owner_of(pack(u64::MAX, 0, 0)), 0);
    }

    #[test]
    fn user_states_end_at_the_field_width() {
        assert!(is_user_state(USER_STATE_MIN));
        assert!(is_user_state(STATE_MAX));
        assert!(!is_user_state(STATE_MAX + 1));
        assert!(!is_user_state(CACHED));
    }
}
