//! The harness's own control block, living in the segment under test.
//!
//! ```text
//!  Control (a segment-owned block; its offset travels in an env var)
//!  +-------+------+-------+--------+---------------------+------------------+
//!  | magic | stop | pause | parked | workers[16]: counts | mailbox[256]:    |
//!  |       |      |       |        | ops, overlaps, ...  | gen<<32|payload  |
//!  +-------+------+-------+--------+---------------------+------------------+
//! ```
//!
//! Workers (threads or processes) count what they do in their own
//! [`WorkerStats`], so the counts of a SIGKILLed child survive it. Blocks
//! travel between workers as tokens (generation << 32 | payload offset) in
//! the mailbox; 0 marks an empty slot. `pause` asks every worker to park at
//! its next safe point (between two allocator operations), so the parent can
//! check invariants at quiescence while the workers stay alive.

use crate::sync::{AtomicU32, AtomicU64, Ordering};
use matrix_handler::{HandlerError, HandlerFunctions};

/// Workers one control block can count.
pub const MAX_WORKERS: usize = 16;
/// Mailbox slots.
pub const MAILBOX: usize = 256;
const CONTROL_MAGIC: u64 = u64::from_le_bytes(*b"MTKCTRL1");

/// What one worker did. All counters only grow.
#[repr(C)]
#[derive(Default)]
pub struct WorkerStats {
    /// 1 once the worker entered its loop.
    pub started: AtomicU64,
    /// Allocator operations performed.
    pub ops: AtomicU64,
    /// Blocks allocated.
    pub allocations: AtomicU64,
    /// Blocks freed.
    pub frees: AtomicU64,
    /// Blocks whose pattern was damaged (overlap, undersized neighbour, ...).
    pub overlaps: AtomicU64,
    /// Blocks sent through the mailbox.
    pub sent: AtomicU64,
    /// Blocks received and verified.
    pub received: AtomicU64,
    /// Tokens received whose block had been reclaimed meanwhile (after a kill).
    pub stale: AtomicU64,
    /// Allocations refused as out of memory.
    pub out_of_memory: AtomicU64,
    /// Unexpected errors.
    pub errors: AtomicU64,
}

/// A snapshot of [`WorkerStats`], summed over workers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Allocator operations.
    pub ops: u64,
    /// Allocations.
    pub allocations: u64,
    /// Frees.
    pub frees: u64,
    /// Damaged patterns found.
    pub overlaps: u64,
    /// Blocks sent.
    pub sent: u64,
    /// Blocks received.
    pub received: u64,
    /// Stale tokens received.
    pub stale: u64,
    /// Out-of-memory refusals.
    pub out_of_memory: u64,
    /// Unexpected errors.
    pub errors: u64,
}

/// The control block. See the module docs.
#[repr(C)]
pub struct Control {
    magic: AtomicU64,
    /// Non-zero: workers finish (free what they hold) and exit.
    pub stop: AtomicU32,
    /// Non-zero: workers park at their next safe point.
    pub pause: AtomicU32,
    /// Workers currently parked.
    pub parked: AtomicU32,
    _pad: AtomicU32,
    /// Per-worker counters.
    pub workers: [WorkerStats; MAX_WORKERS],
    /// Block tokens in transit.
    pub mailbox: [AtomicU64; MAILBOX],
}

impl Control {
    /// Allocates a control block in the segment, owned by the segment so it
    /// outlives every worker; returns its payload offset.
    pub fn create(h: &impl HandlerFunctions) -> Result<u32, HandlerError> {
        let size = std::mem::size_of::<Control>();
        let mut block = h.allocate_slice::<u8>(size)?;
        h.write_slice(&mut block, &vec![0u8; size])?;
        h.release_to_segment(&block)?;
        let offset = block.offset();
        let ctl = Self::attach(h, offset).expect("a block just allocated for it");
        // Release: pairs with the Acquire in `attach` of other processes.
        ctl.magic.store(CONTROL_MAGIC, Ordering::Release);
        Ok(offset)
    }

    /// The control block at payload `offset`, after checking it is a live
    /// block large enough (and, once created, that it carries the magic).
    pub fn attach(h: &impl HandlerFunctions, offset: u32) -> Option<&Control> {
        let header = offset.checked_sub(matrix_core::BLOCK_HEADER_SIZE)?;
        let (_, size) = h.matrix().block_header(header).ok()?;
        if ((size - matrix_core::BLOCK_HEADER_SIZE) as usize) < std::mem::size_of::<Control>()
            || offset % 8 != 0
        {
            return None;
        }
        // SAFETY: the payload lies inside the mapping (block_header checked
        // the block against the arena), is 16-aligned and at least as large
        // as Control, which holds only atomics (any bit pattern is valid).
        // The borrow is tied to `h`, which keeps the mapping alive.
        let ctl = unsafe { &*(h.base_ptr().add(offset as usize) as *const Control) };
        // Acquire: pairs with the Release in `create`.
        let magic = ctl.magic.load(Ordering::Acquire);
        (magic == CONTROL_MAGIC || magic == 0).then_some(ctl)
    }

    /// Sum of every worker's counters.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for w in &self.workers {
            // Relaxed: counters are statistics read for reports.
            let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
            t.ops += get(&w.ops);
            t.allocations += get(&w.allocations);
            t.frees += get(&w.frees);
            t.overlaps += get(&w.overlaps);
            t.sent += get(&w.sent);
            t.received += get(&w.received);
            t.stale += get(&w.stale);
            t.out_of_memory += get(&w.out_of_memory);
            t.errors += get(&w.errors);
        }
        t
    }

    /// Takes every token left in the mailbox.
    pub fn drain_mailbox(&self) -> Vec<u64> {
        // AcqRel: the swap takes the token exclusively (pairs with the
        // sender's Release CAS, so the block's contents are visible).
        self.mailbox
            .iter()
            .map(|slot| slot.swap(0, Ordering::AcqRel))
            .filter(|&t| t != 0)
            .collect()
    }
}
