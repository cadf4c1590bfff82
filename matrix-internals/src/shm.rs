//! The kit every structure in the segment is built with — `WorkQueue`,
//! `Registry` and `ShmHashMap` use exactly these functions, and so can yours.
//!
//! ```text
//!  payload offset (from allocate_raw, a registry entry, a queue slot …)
//!        │ checked_region: a live block starts there, with ≥ n payload bytes
//!        ▼
//!  structure_header::<H>(magic)  ── the header, once its magic is published
//!  shared::<T>(offset)           ── any field inside the checked region
//!        │
//!  owner_liveness / owner_alive  ── is the participant named in a word gone?
//!  futex_wait / futex_wake       ── sleep on a shared word, across processes
//! ```
//!
//! The rules that make a structure safe to share (see
//! `docs/WRITING_INTERNALS.md`):
//!
//! - Its shared types are `#[repr(C)]` and made of atomics, integers and
//!   payload offsets only, so any bit pattern another process left is a
//!   valid value and shared access is free of data races.
//! - Every offset read from the segment goes through [`checked_region`]
//!   before it is resolved: garbage yields an error, never an access out of
//!   bounds.
//! - Initialization stores a magic word last, with `Release`; openers check
//!   it with `Acquire` ([`structure_header`]).
//! - Only a participant that is definitely dead ([`Liveness::Dead`]) has its
//!   claims taken over; *unknown* counts as alive.

use crate::sync::{AtomicU32, AtomicU64, Ordering::Acquire};
use matrix_core::layout::{slot_state, slot_word};
use matrix_core::state;
pub use matrix_core::Liveness;
use matrix_core::{Arena, AtomicMatrix, BlockError, OwnerId, BLOCK_HEADER_SIZE};
use matrix_handler::{HandlerError, HandlerFunctions};
use std::time::Duration;

/// Checks that a live block starts at `payload_offset` with at least
/// `bytes` of payload, and returns its payload capacity.
///
/// Every structure resolves its shared memory only inside a region checked
/// here, so a garbage offset read from the segment is an error, never an
/// out-of-bounds access.
pub fn checked_region(
    handler: &impl HandlerFunctions,
    payload_offset: u32,
    bytes: u64,
) -> Result<u32, HandlerError> {
    let header = payload_offset
        .checked_sub(BLOCK_HEADER_SIZE)
        .ok_or(HandlerError::InvalidOffset(payload_offset))?;
    let (hdr, size) = handler.matrix().block_header(header)?;
    // Acquire: pairs with the Release that published the block's state.
    let st = state::state_of(hdr.state.load(Acquire));
    if !state::is_live(st) {
        return Err(BlockError::NotLive {
            offset: header,
            state: st,
        }
        .into());
    }
    let payload = size - BLOCK_HEADER_SIZE;
    if (payload as u64) < bytes {
        return Err(BlockError::TooSmall {
            offset: header,
            payload,
            needed: bytes,
        }
        .into());
    }
    if payload_offset as u64 + payload as u64 > handler.segment_size() as u64 {
        return Err(HandlerError::InvalidOffset(payload_offset));
    }
    Ok(payload)
}

/// A reference to the `T` at `offset` bytes into the mapping (an absolute
/// offset from the segment base, e.g. a payload offset plus a field's place).
/// The returned borrow is tied to `handler`, which keeps the mapping alive.
///
/// # Safety
/// - `offset .. offset + size_of::<T>()` lies inside a region validated by
///   [`checked_region`] for this mapping, and `offset` is aligned for `T`.
/// - `T` is made only of atomics and integers, so any bit pattern another
///   process left there is a valid `T`, and shared access is data-race free.
#[inline]
pub unsafe fn shared<T>(handler: &impl HandlerFunctions, offset: u64) -> &T {
    debug_assert!(offset + std::mem::size_of::<T>() as u64 <= handler.segment_size() as u64);
    debug_assert_eq!(offset % std::mem::align_of::<T>() as u64, 0);
    // SAFETY: forwarded to the caller: in bounds of the live mapping, which
    // `handler` keeps alive at least as long as the returned borrow; aligned;
    // every bit pattern is a valid T.
    unsafe { &*(handler.base_ptr().add(offset as usize) as *const T) }
}

/// Why [`structure_header`] found no structure at an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotThere {
    /// No live block there large enough for the header.
    NoBlock,
    /// A block, but its first word is not the structure's magic.
    WrongMagic,
}

/// The header of a shared structure whose payload starts at `offset`: a
/// live block holds at least the whole header, and the header's first word
/// is `magic` (the word every structure stores last when it initializes).
///
/// # Safety
/// `T` is `#[repr(C)]`, made only of atomics and integers, and starts with
/// its magic as an `AtomicU64`.
pub unsafe fn structure_header<T>(
    handler: &impl HandlerFunctions,
    offset: u32,
    magic: u64,
) -> Result<&T, NotThere> {
    checked_region(handler, offset, std::mem::size_of::<T>() as u64)
        .map_err(|_| NotThere::NoBlock)?;
    // SAFETY: size_of::<T>() bytes of live payload were validated just above
    // at a payload offset (16-aligned); `T` holds only atomics and integers
    // and starts with an AtomicU64 (the caller's contract).
    let (hdr, first): (&T, &AtomicU64) = unsafe {
        (
            shared(handler, offset as u64),
            shared(handler, offset as u64),
        )
    };
    // Acquire: pairs with the Release store of the magic that ends the
    // structure's initialization, so the fields read next are initialized.
    if first.load(Acquire) != magic {
        return Err(NotThere::WrongMagic);
    }
    Ok(hdr)
}

/// Whether the participant `owner` (an owner id stamped into a shared word,
/// e.g. `matrix.owner_id().0` of a lock holder) is alive, dead or unknown.
///
/// - [`Liveness::Alive`]: the caller itself, or a slot still ACTIVE whose
///   liveness lock is held.
/// - [`Liveness::Dead`]: the slot no longer carries an ACTIVE claim (its
///   holder detached, or was recovered), or the id names no slot, or the
///   slot's lock is free.
/// - [`Liveness::Unknown`]: the lock could not be asked. Treat it as alive.
///
/// An id of the segment ([`OwnerId::SEGMENT`]) or one that names no slot
/// is reported dead: nobody holds a claim under it. Asks the slot's
/// liveness lock (one `fcntl`), so it belongs on cold paths only.
pub fn owner_liveness(matrix: &AtomicMatrix, owner: u32) -> Liveness {
    let id = OwnerId(owner);
    if id == matrix.owner_id() {
        return Liveness::Alive;
    }
    let Some(index) = id.slot() else {
        return Liveness::Dead;
    };
    let Some(slot) = matrix.header().participant(index) else {
        return Liveness::Dead;
    };
    // Acquire: pairs with the Release CAS that made the slot ACTIVE.
    let word = slot.word.load(Acquire);
    if slot_word::state_of(word) != slot_state::ACTIVE {
        return Liveness::Dead;
    }
    matrix.liveness(index)
}

/// The generation of the current (or last) claim on the participant slot
/// that owner id `owner` names, or `None` if it names none. A lock word
/// that records its holder's owner id and this generation tells the holder
/// apart from a later participant of the same slot.
pub(crate) fn claim_generation(matrix: &AtomicMatrix, owner: u32) -> Option<u32> {
    let slot = matrix.header().participant(OwnerId(owner).slot()?)?;
    // Acquire: pairs with the Release CAS that claimed the slot.
    Some(slot_word::generation_of(slot.word.load(Acquire)))
}

/// Whether `owner` may still be running: [`owner_liveness`] is not
/// [`Liveness::Dead`] (unknown counts as running). A claim is taken over
/// only when this is `false`.
pub fn owner_alive(matrix: &AtomicMatrix, owner: u32) -> bool {
    owner_liveness(matrix, owner) != Liveness::Dead
}

/// Sleeps in the kernel while `word` holds `expected`, for at most
/// `timeout`. Returns early on a wake, a signal, or when the word already
/// differs. Not private: the word is shared with other processes.
///
/// A waiter must re-check its condition after waking (wake-ups may be
/// spurious), and the waker must publish its change before it wakes.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: FUTEX_WAIT reads the aligned u32 behind `word` (an atomic in a
    // live mapping) and the timespec on our stack; it writes nothing.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Wakes up to `count` sleepers on `word`, in any process.
pub fn futex_wake(word: &AtomicU32, count: i32) {
    // SAFETY: FUTEX_WAKE only uses the address of `word` as a key.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            count,
            std::ptr::null::<u32>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// FNV-1a over bytes, for stable type ids and name hashes.
pub const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01B3);
        i += 1;
    }
    hash
}

/// Test-only crash points: with the `fault-injection` feature, a process can
/// arm one point (by number) and SIGKILL itself when it gets there, and a
/// thread can stall at chosen points to widen a race window.
#[cfg(feature = "fault-injection")]
#[doc(hidden)]
pub mod fault {
    use crate::sync::{AtomicU32, Ordering::Relaxed};

    /// A consumer has claimed a queue slot and not yet adopted its block.
    pub const POP_CLAIMED: u32 = 1;
    /// A consumer has adopted the block but not yet released the slot.
    pub const POP_ADOPTED: u32 = 2;
    /// A producer has claimed a slot and not yet written it.
    pub const PUSH_CLAIMED: u32 = 3;
    /// A producer has written the slot and given the block to the segment,
    /// and not yet published it.
    pub const PUSH_WRITTEN: u32 = 4;
    /// A producer has claimed and written its slot and judged the block's
    /// owner from its state word, and not yet made the owner CAS that hands
    /// the block to the segment (the block is still the producer's).
    pub const PUSH_HANDING_OVER: u32 = 13;
    /// A consumer has read the token of the slot it claimed and not yet
    /// validated and adopted its block (one step, `adopt_token`).
    pub const POP_VALIDATED: u32 = 14;
    /// A registry creator is inside its creation closure.
    pub const REGISTRY_CREATING: u32 = 5;
    /// A map writer holds a value lock and has written the spare buffer.
    pub const MAP_WRITING: u32 = 6;
    /// A map inserter has claimed an empty slot and not yet written its key.
    pub const MAP_KEY_CLAIMED: u32 = 7;
    /// A `ShmMap` inserter is handing its entry's blocks to the segment
    /// (reached once per block).
    pub const MAP_HANDING_OVER: u32 = 8;
    /// A `ShmMap` inserter's entry is the segment's and not linked yet.
    pub const MAP_ENTRY_READY: u32 = 9;
    /// A `ShmMap` inserter holds a claim and has not published it.
    pub const MAP_SLOT_CLAIMED: u32 = 10;
    /// A `ShmMap` inserter linked its entry (and has not yet freed the one
    /// it replaced or cleared its intent).
    pub const MAP_LINKED: u32 = 11;
    /// A `ShmMap` remover unlinked an entry and has not freed it.
    pub const MAP_UNLINKED: u32 = 12;
    /// A `ShmHashMap` remover committed the remove and has not given the
    /// key's room back.
    pub const MAP_REMOVED: u32 = 15;
    /// A `ShmMap` scan has read a slot word and not yet acted on it (a
    /// window only: [`stall_at`] widens it; not in [`SHM_MAP`]).
    pub const MAP_SLOT_READ: u32 = 20;
    /// A `ShmMap` entry read found the entry's block live and has not yet
    /// copied its bytes (a window only, as [`MAP_SLOT_READ`]).
    pub const MAP_ENTRY_CHECKED: u32 = 21;
    /// Every `ShmMap` crash point.
    pub const SHM_MAP: [u32; 5] = [
        MAP_HANDING_OVER,
        MAP_ENTRY_READY,
        MAP_SLOT_CLAIMED,
        MAP_LINKED,
        MAP_UNLINKED,
    ];

    static ARMED: AtomicU32 = AtomicU32::new(0);

    static SKIP: AtomicU32 = AtomicU32::new(0);

    /// Kill this process the next time `point` is reached (0 disarms).
    pub fn arm(point: u32) {
        arm_after(point, 0);
    }

    /// Kill this process when `point` is reached for the `skip + 1`-th time.
    pub fn arm_after(point: u32, skip: u32) {
        // Relaxed: read by this process's own threads only; no data depends on it.
        SKIP.store(skip, Relaxed);
        ARMED.store(point, Relaxed);
    }

    std::thread_local! {
        /// Points (a bit each) at which this thread stalls.
        static STALLS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
        /// The state of this thread's stall lengths (xorshift).
        static STALL_RNG: std::cell::Cell<u32> = const { std::cell::Cell::new(0x9E37_79B9) };
    }

    /// Make the calling thread stall each time it reaches one of `points`
    /// (below 32; an empty list disarms): it spins for a random while of
    /// up to some microseconds (and now and then yields its core first), so that a race test
    /// lands the other side's steps inside that window.
    pub fn stall_at(points: &[u32]) {
        let mask = points.iter().fold(0, |m, &p| m | 1u32 << (p & 31));
        STALLS.with(|s| s.set(mask));
    }

    fn stall() {
        let x = STALL_RNG.with(|r| {
            let mut x = r.get();
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            r.set(x);
            x
        });
        // A yield only now and then: on a loaded machine each one can
        // cost a time slice.
        if x % 8 == 0 {
            std::thread::yield_now();
        }
        for _ in 0..(x >> 3) % 4096 {
            std::hint::spin_loop();
        }
    }

    /// Called at crash point `point`.
    #[inline]
    pub(crate) fn at(point: u32) {
        if STALLS.with(|s| s.get()) & 1 << (point & 31) != 0 {
            stall();
        }
        // Relaxed: see `arm`.
        if ARMED.load(Relaxed) == point
            && SKIP
                .fetch_update(Relaxed, Relaxed, |s| s.checked_sub(1))
                .is_err()
        {
            // SAFETY: raising a signal on ourselves has no memory effects.
            unsafe { libc::raise(libc::SIGKILL) };
        }
    }
}

#[cfg(not(feature = "fault-injection"))]
pub(crate) mod fault {
    #[inline(always)]
    pub(crate) fn at(_point: u32) {}
    pub(crate) const POP_CLAIMED: u32 = 1;
    pub(crate) const POP_ADOPTED: u32 = 2;
    pub(crate) const PUSH_CLAIMED: u32 = 3;
    pub(crate) const PUSH_WRITTEN: u32 = 4;
    pub(crate) const PUSH_HANDING_OVER: u32 = 13;
    pub(crate) const POP_VALIDATED: u32 = 14;
    pub(crate) const REGISTRY_CREATING: u32 = 5;
    pub(crate) const MAP_WRITING: u32 = 6;
    pub(crate) const MAP_KEY_CLAIMED: u32 = 7;
    pub(crate) const MAP_HANDING_OVER: u32 = 8;
    pub(crate) const MAP_ENTRY_READY: u32 = 9;
    pub(crate) const MAP_SLOT_CLAIMED: u32 = 10;
    pub(crate) const MAP_LINKED: u32 = 11;
    pub(crate) const MAP_UNLINKED: u32 = 12;
    pub(crate) const MAP_REMOVED: u32 = 15;
    pub(crate) const MAP_SLOT_READ: u32 = 20;
    pub(crate) const MAP_ENTRY_CHECKED: u32 = 21;
}
