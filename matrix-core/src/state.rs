//! Block states and the state word.
//!
//! Every block header holds one 64-bit *state word*: the block's generation
//! in the high half and its state in the low half. Keeping both in one word
//! lets `free` and the lifecycle transitions compare the generation and the
//! state in a single CAS, so a stale handle can never act on the block's next
//! occupant.
//!
//! | state | value | meaning | who may enter it | from |
//! |---|---|---|---|---|
//! | `FREE` | 0 | in a bucket of the free index (or in the hands of the thread that just popped it) | `free`, split (new remainder), consolidation, recovery, cache flush | `ACKED`, `COALESCING`, `CACHED`, fresh header |
//! | `ALLOCATED` | 1 | owned by a participant; payload belongs to the user | `allocate` (bumps the generation) | `FREE` (after a pop), `CACHED` (by the caching thread) |
//! | `ACKED` | 2 | being returned by `free` | `free`, recovery | `ALLOCATED`, user states |
//! | `COALESCING` | 3 | held by a consolidator | consolidation | `FREE` (after a pop) |
//! | `CACHED` | 4 | freed into the freeing thread's cache; reused by that thread without touching the free index | `free` (thread-cache path) | `ALLOCATED`, user states |
//! | reserved | 5–48 | future internal states; never entered | nobody | — |
//! | user | ≥ 49 | user lifecycle; never reclaimed automatically | `set_state` / `transition_state` | `ALLOCATED`, user states |

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
/// The lowest state a user lifecycle may use; 5–48 are reserved.
pub const USER_STATE_MIN: u32 = 49;

/// Whether `state` is one a live (not free) block may be in: allocated or user.
#[inline]
pub const fn is_live(state: u32) -> bool {
    state == ALLOCATED || state >= USER_STATE_MIN
}

/// Whether `state` is reserved for future internal use (5–48).
#[inline]
pub const fn is_reserved(state: u32) -> bool {
    state > CACHED && state < USER_STATE_MIN
}

/// Whether `state` means "free memory" (in the index or in a thread cache).
#[inline]
pub const fn is_free(state: u32) -> bool {
    state == FREE || state == CACHED
}

/// Packs a generation and a state into one state word.
#[inline]
pub const fn pack(generation: u32, state: u32) -> u64 {
    ((generation as u64) << 32) | state as u64
}

/// The state half of a state word.
#[inline]
pub const fn state_of(word: u64) -> u32 {
    word as u32
}

/// The generation half of a state word.
#[inline]
pub const fn generation_of(word: u64) -> u32 {
    (word >> 32) as u32
}

/// A short name for a state, for messages and tools.
pub fn state_name(state: u32) -> &'static str {
    match state {
        FREE => "FREE",
        ALLOCATED => "ALLOCATED",
        ACKED => "ACKED",
        COALESCING => "COALESCING",
        CACHED => "CACHED",
        s if is_reserved(s) => "RESERVED",
        _ => "USER",
    }
}
