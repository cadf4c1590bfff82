//! Participant slots: claiming, detaching, recovering, and telling a live
//! participant from a dead one.
//!
//! # The slot word
//!
//! Each slot's state, the generation of its current claim and the identity
//! of whoever recovers it share one `AtomicU64` ([`slot_word`]), so every
//! transition is one CAS from the exact word a decision was made on:
//!
//! | from                    | to                      | by                                              |
//! |-------------------------|-------------------------|-------------------------------------------------|
//! | `EMPTY(g)`              | `ACTIVE(g+1)`           | a claimer holding the slot's liveness lock      |
//! | `ACTIVE(g)`             | `DETACHED(g)`           | the holder, when its attachment drops           |
//! | `ACTIVE(g)` judged dead | `RECOVERING(g, by r)`   | recoverer `r` (a live participant)              |
//! | `DETACHED(g)`           | `RECOVERING(g, by r)`   | recoverer `r`                                   |
//! | `RECOVERING(g, by d)`, `d` dead | `RECOVERING(g, by r)` | recoverer `r` (takes over a dead recoverer) |
//! | `RECOVERING(g, by r)`   | `EMPTY(g)`              | `r`, after the slot's blocks are back           |
//! | `RECOVERING(g, by r)`   | the word `r` judged     | `r`, when reclaiming failed (gives it back)     |
//! | `ACTIVE(g)` judged dead | `RECOVERING(g, by i)`   | an attacher taking dead slot `i` for itself (all slots full) |
//! | `RECOVERING(g, by i)` (its own) | `ACTIVE(g+1)`   | that attacher, after reclaiming                 |
//!
//! `r` is recorded as its slot index and the low 16 bits of its own claim's
//! generation, so a recoverer whose slot has been recycled since is not
//! mistaken for the participant now holding that slot.
//!
//! # Liveness
//!
//! "Is the holder of slot `i` alive?" has three answers ([`Liveness`]), and
//! only [`Liveness::Dead`] lets anyone reclaim. For a named segment every
//! attachment opens the segment file itself (its own open file description)
//! and holds an OFD write lock (`F_OFD_SETLK`) on the byte
//! `LIVENESS_LOCK_BASE + i` while it holds slot `i`: taken *before* the
//! slot becomes ACTIVE, released only *after* it is DETACHED. Any process
//! that has the file open asks with `F_OFD_GETLK`: a conflicting lock means
//! alive, none means dead (the kernel drops the lock when the last
//! descriptor of the holder's description closes, which includes its
//! death), and an error means unknown. This needs no `/proc` and holds
//! across PID namespaces, hidepid mounts and pid reuse. The pid and start
//! time kept in the slot are for display only.
//!
//! After `fork()` the child shares the parent's open file descriptions; a
//! `pthread_atfork` child handler closes the child's copies of every lock
//! descriptor, so a child cannot keep a dead parent looking alive, and bumps
//! the fork epoch that tells an inherited attachment from one the child
//! made itself.

use crate::arena::{Arena, OwnerId};
#[cfg(not(loom))]
use crate::layout::LIVENESS_LOCK_BASE;
use crate::layout::{slot_state, slot_word, ParticipantSlot};
use crate::sync::Ordering::{AcqRel, Acquire, Relaxed, Release};

/// Whether a participant is alive, as far as this process can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Liveness {
    /// It holds its slot: its liveness lock is held (or it is the asker).
    Alive,
    /// It is gone: its slot says it is attached but nobody holds its lock.
    Dead,
    /// The question could not be answered (e.g. the lock query failed);
    /// treated as possibly alive, so nothing is reclaimed.
    Unknown,
}

impl Liveness {
    /// `"alive"`, `"dead"` or `"unknown"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Liveness::Alive => "alive",
            Liveness::Dead => "dead",
            Liveness::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for Liveness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Start time of `pid` in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`), and whether it is a zombie; `None` if it cannot be
/// read. For display only: liveness never depends on it.
pub fn process_start_time(pid: u32) -> Option<(u64, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let zombie = fields.next()? == "Z";
    // `rest` starts at field 3 (state); start time is field 22.
    let start = fields.nth(18)?.parse().ok()?;
    Some((start, zombie))
}

// ---------------------------------------------------------------------------
// Slot word transitions (shared by the real segment and the loom models).
// ---------------------------------------------------------------------------

/// Claims slot `slot` if it is EMPTY: `EMPTY(g)` → `ACTIVE(g+1)`. The caller
/// already holds the slot's liveness lock, so from the moment the slot is
/// ACTIVE a liveness query says alive. Returns the new generation.
pub fn claim_slot(slot: &ParticipantSlot) -> Option<u32> {
    // Acquire: pairs with the Release of EMPTY by the recoverer that emptied
    // the slot, so its reclaiming happened before this claim.
    let word = slot.word.load(Acquire);
    if slot_word::state_of(word) != slot_state::EMPTY {
        return None;
    }
    let generation = slot_word::generation_of(word).wrapping_add(1);
    let active = slot_word::pack(slot_state::ACTIVE, None, 0, generation);
    // AcqRel: Acquire as above. Release: the liveness lock was taken before
    // this CAS, so a recoverer that Acquires ACTIVE(g+1) (the word load in
    // `recover`) and then asks the lock finds it held; without it, the
    // loom model `recover_racing_a_new_claim_of_the_slot` sees a stale
    // "unlocked" and reclaims the new holder.
    slot.word
        .compare_exchange(word, active, AcqRel, Relaxed)
        .ok()
        .map(|_| generation)
}

/// Detaches slot `slot` held at `generation`: `ACTIVE(g)` → `DETACHED(g)`.
/// Returns `false` if the slot is not that claim any more (a recoverer
/// wrongly took it; nothing to undo then).
pub fn detach_slot(slot: &ParticipantSlot, generation: u32) -> bool {
    let active = slot_word::pack(slot_state::ACTIVE, None, 0, generation);
    let detached = slot_word::pack(slot_state::DETACHED, None, 0, generation);
    // Release: everything this participant did happens before the Acquire
    // of a recoverer that claims the DETACHED word.
    slot.word
        .compare_exchange(active, detached, Release, Relaxed)
        .is_ok()
}

/// Whether the recoverer named in a RECOVERING word of slot `index` is gone,
/// so its recovery may be taken over.
fn recoverer_gone<A: Arena + ?Sized>(arena: &A, index: usize, word: u64) -> bool {
    let seg = arena.segment();
    let Some(r) = slot_word::recoverer_of(word) else {
        // Never written by this build: nobody to wait for.
        return true;
    };
    if r == index {
        // An attacher claiming this dead slot for itself holds its lock.
        return arena.liveness(index) == Liveness::Dead;
    }
    let Some(rslot) = seg.participant(r) else {
        return true; // a garbage recoverer field names nobody
    };
    // Acquire: pairs with the Release CAS that set the recoverer's own slot
    // word, so a recycled slot shows its new generation.
    let rword = rslot.word.load(Acquire);
    let same_claim =
        slot_word::generation_of(rword) & 0xFFFF == slot_word::recoverer_generation_of(word);
    match slot_word::state_of(rword) {
        // Still the claim that started the recovery: ask its lock.
        slot_state::ACTIVE if same_claim => arena.liveness(r) == Liveness::Dead,
        // Detached, being recovered itself, emptied or re-claimed since: a
        // recovery runs inside a method of a live attachment, so that claim
        // is not recovering anything any more.
        _ => true,
    }
}

/// Whether slot `index`, whose word was read as `word`, may be recovered by
/// `arena`'s participant: detached, or held by a participant that is
/// [`Liveness::Dead`], or being recovered by one that is gone. Only a
/// definite *dead* counts; *unknown* never does.
pub fn is_recoverable<A: Arena + ?Sized>(arena: &A, index: usize, word: u64) -> bool {
    match slot_word::state_of(word) {
        slot_state::DETACHED => true,
        slot_state::ACTIVE => arena.liveness(index) == Liveness::Dead,
        slot_state::RECOVERING => recoverer_gone(arena, index, word),
        _ => false,
    }
}

/// The word a recoverer in slot `me` (claimed at `my_generation`) writes to
/// take over a slot judged as `judged`.
pub fn recovering_word(judged: u64, me: usize, my_generation: u32) -> u64 {
    slot_word::pack(
        slot_state::RECOVERING,
        Some(me),
        my_generation,
        slot_word::generation_of(judged),
    )
}

/// Takes slot `slot`, judged recoverable as `judged`, for recoverer `me`:
/// one CAS from exactly the judged word (a slot re-claimed, detached or
/// taken by another recoverer since is a different word and is left alone).
pub fn begin_recovery(slot: &ParticipantSlot, judged: u64, mine: u64) -> bool {
    // AcqRel: Acquire pairs with the holder's Release (claim, detach) and
    // the previous recoverer's, so everything they published is visible
    // before its blocks are reclaimed; Release makes `mine` visible to other
    // recoverers that judge the slot.
    slot.word
        .compare_exchange(judged, mine, AcqRel, Relaxed)
        .is_ok()
}

/// Finishes a recovery: `RECOVERING(g, by me)` → `EMPTY(g)`, after clearing
/// what the old holder left in the slot.
pub fn finish_recovery(slot: &ParticipantSlot, mine: u64) -> bool {
    for e in &slot.carve_intents {
        // Relaxed: published by the Release CAS to EMPTY below.
        e.store(0, Relaxed);
    }
    // Relaxed: display only.
    slot.pid.store(0, Relaxed);
    let empty = slot_word::pack(slot_state::EMPTY, None, 0, slot_word::generation_of(mine));
    // Release: the slot is reusable only after its blocks are back; pairs
    // with the Acquire of the next claimer.
    slot.word
        .compare_exchange(mine, empty, Release, Relaxed)
        .is_ok()
}

/// Gives a slot back after a failed recovery: `RECOVERING(g, by me)` → the
/// word that was judged, so a later recovery tries again instead of finding
/// it held by a live recoverer forever.
pub fn give_back(slot: &ParticipantSlot, mine: u64, judged: u64) {
    // Release: blocks this attempt did reclaim are published to the next
    // recoverer, which Acquires the word.
    let _ = slot.word.compare_exchange(mine, judged, Release, Relaxed);
}

/// A participant slot as tools see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantInfo {
    /// Slot index.
    pub slot: usize,
    /// `slot_state::*`.
    pub state: u32,
    /// Process id of the holder, in its own PID namespace (display only).
    pub pid: u32,
    /// Owner id its blocks carry.
    pub owner: OwnerId,
    /// Whether its holder is alive, as far as the asker can tell (a
    /// detached slot's holder counts as dead).
    pub liveness: Liveness,
    /// The recovering participant's slot, while `RECOVERING`.
    pub recoverer: Option<usize>,
}

/// Lists the non-empty slots, with liveness as `arena` sees it.
pub fn list<A: Arena + ?Sized>(arena: &A) -> Vec<ParticipantInfo> {
    arena
        .segment()
        .participants()
        .enumerate()
        .filter_map(|(index, slot)| {
            // Acquire: pairs with the Release CAS that set the word.
            let word = slot.word.load(Acquire);
            let state = slot_word::state_of(word);
            (state != slot_state::EMPTY).then(|| ParticipantInfo {
                slot: index,
                state,
                // Relaxed: display only.
                pid: slot.pid.load(Relaxed),
                owner: OwnerId::of_slot(index),
                liveness: match state {
                    slot_state::DETACHED => Liveness::Dead,
                    _ => arena.liveness(index),
                },
                recoverer: slot_word::recoverer_of(word),
            })
        })
        .collect()
}

/// Counts the other participants (not `me`) that are attached and
/// [`Liveness::Alive`], and those whose liveness is unknown.
pub fn count_live<A: Arena + ?Sized>(arena: &A, me: Option<usize>) -> (usize, usize) {
    let (mut alive, mut unknown) = (0, 0);
    for (index, slot) in arena.segment().participants().enumerate() {
        if Some(index) == me {
            continue;
        }
        // Acquire: pairs with the Release CAS that set the word.
        let state = slot.state(Acquire);
        if matches!(state, slot_state::ACTIVE | slot_state::RECOVERING) {
            match arena.liveness(index) {
                Liveness::Alive => alive += 1,
                Liveness::Unknown => unknown += 1,
                Liveness::Dead => {}
            }
        }
    }
    (alive, unknown)
}

// ---------------------------------------------------------------------------
// File locks and fork (real segments only).
// ---------------------------------------------------------------------------

#[cfg(not(loom))]
pub(crate) use os::*;
#[cfg(not(loom))]
pub use os::{formatter_liveness, slot_lock_liveness};

#[cfg(not(loom))]
mod os {
    use super::Liveness;
    use std::os::fd::RawFd;
    // Process-local bookkeeping, not shared memory: std atomics are right here.
    use std::sync::atomic::{AtomicI32, AtomicU64, Ordering::Relaxed};
    use std::sync::Once;

    /// Bumped in every forked child; an attachment made under an older
    /// epoch was inherited and must not act.
    static FORK_EPOCH: AtomicU64 = AtomicU64::new(0);
    static ATFORK: Once = Once::new();

    /// Lock descriptors a forked child must close: fixed size, so the fork
    /// handler needs no allocation and no lock.
    pub(crate) const MAX_LOCK_FDS: usize = 256;
    static LOCK_FDS: [AtomicI32; MAX_LOCK_FDS] = [const { AtomicI32::new(-1) }; MAX_LOCK_FDS];

    extern "C" fn after_fork_in_child() {
        // Relaxed: the child is single-threaded right after fork.
        FORK_EPOCH.fetch_add(1, Relaxed);
        for entry in &LOCK_FDS {
            // Relaxed: single-threaded, as above.
            let fd = entry.swap(-1, Relaxed);
            if fd >= 0 {
                // SAFETY: close(2) is async-signal-safe; `fd` is the child's
                // copy of a lock descriptor, which nothing in the child uses
                // (an inherited attachment never touches it again).
                unsafe { libc::close(fd) };
            }
        }
    }

    /// Registers the fork handler once per process.
    pub(crate) fn install_fork_hook() {
        ATFORK.call_once(|| {
            // SAFETY: registers a plain function that bumps an atomic and
            // closes descriptors, both async-signal-safe as pthread_atfork
            // requires of child handlers.
            unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
        });
    }

    /// The current fork epoch (0 in a process that never forked from one
    /// with attachments, incremented in each child).
    #[inline]
    pub(crate) fn fork_epoch() -> u64 {
        // Relaxed: the epoch changes only in a child right after fork,
        // while the child is single-threaded.
        FORK_EPOCH.load(Relaxed)
    }

    /// Records `fd` so a forked child closes its copy; `None` if the table
    /// is full.
    pub(crate) fn register_lock_fd(fd: RawFd) -> Option<usize> {
        // Relaxed: the fork handler runs in a single-threaded child, which
        // sees this process's memory as of the fork.
        LOCK_FDS
            .iter()
            .position(|e| e.compare_exchange(-1, fd, Relaxed, Relaxed).is_ok())
    }

    /// Forgets entry `entry` (before its descriptor is closed).
    pub(crate) fn unregister_lock_fd(entry: usize) {
        // Relaxed: as in `register_lock_fd`.
        LOCK_FDS[entry].store(-1, Relaxed);
    }

    fn flock(kind: libc::c_int, offset: u64) -> libc::flock {
        // SAFETY: `flock` is a plain C struct for which all zeroes is valid.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = kind as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        fl.l_start = offset as libc::off_t;
        fl.l_len = 1;
        // l_pid must be 0 for OFD locks.
        fl
    }

    /// Tries to take the write lock on byte `offset` through `fd`'s open
    /// file description. `Ok(false)`: another description holds it.
    pub(crate) fn try_lock(fd: RawFd, offset: u64) -> std::io::Result<bool> {
        let mut fl = flock(libc::F_WRLCK, offset);
        // SAFETY: fcntl(F_OFD_SETLK) reads the flock struct we pass.
        let rc = unsafe { libc::fcntl(fd, libc::F_OFD_SETLK, &mut fl) };
        if rc == 0 {
            return Ok(true);
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(false),
            _ => Err(err),
        }
    }

    /// Releases the lock on byte `offset` held through `fd`.
    pub(crate) fn unlock(fd: RawFd, offset: u64) {
        let mut fl = flock(libc::F_UNLCK, offset);
        // SAFETY: fcntl(F_OFD_SETLK) reads the flock struct we pass.
        unsafe { libc::fcntl(fd, libc::F_OFD_SETLK, &mut fl) };
    }

    /// Whether another open file description holds a lock on byte `offset`
    /// (works through a read-only descriptor: the query asks about a read
    /// lock, which any write lock conflicts with).
    pub(crate) fn query_lock(fd: RawFd, offset: u64) -> Liveness {
        let mut fl = flock(libc::F_RDLCK, offset);
        // SAFETY: fcntl(F_OFD_GETLK) reads and writes the flock struct we pass.
        let rc = unsafe { libc::fcntl(fd, libc::F_OFD_GETLK, &mut fl) };
        if rc != 0 {
            return Liveness::Unknown;
        }
        match fl.l_type as libc::c_int {
            libc::F_UNLCK => Liveness::Dead,
            libc::F_WRLCK | libc::F_RDLCK => Liveness::Alive,
            _ => Liveness::Unknown,
        }
    }

    /// Whether the formatter of the segment open as `file` is alive: it holds
    /// the formatter lock while the segment is FORMATTING (for tools that
    /// read the init state without mapping the file).
    pub fn formatter_liveness(file: &std::fs::File) -> Liveness {
        use std::os::fd::AsRawFd;
        query_lock(file.as_raw_fd(), crate::layout::FORMAT_LOCK)
    }

    /// Liveness of the holder of slot `index` of the segment open as `file`
    /// (any descriptor, read-only too), for tools without a mapping.
    pub fn slot_lock_liveness(file: &std::fs::File, index: usize) -> Liveness {
        use std::os::fd::AsRawFd;
        query_lock(file.as_raw_fd(), slot_lock(index))
    }

    /// File offset of slot `index`'s liveness lock byte.
    pub(crate) const fn slot_lock(index: usize) -> u64 {
        super::LIVENESS_LOCK_BASE + index as u64
    }
}
