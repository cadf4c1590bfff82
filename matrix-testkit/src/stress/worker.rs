//! The worker loop every stress harness runs, in threads or in processes.
//!
//! Each live block is filled with a pattern derived from a tag (worker,
//! sequence number) stored in its first 8 bytes; the pattern is verified
//! before every free, by the owner or by the receiver of a block sent
//! through the mailbox. A double allocation, an undersized block or a
//! header written into a payload shows up as a damaged pattern.

use crate::stress::control::{Control, WorkerStats, MAILBOX};
use crate::sync::Ordering;
use matrix_core::AllocError;
use matrix_handler::{Block, BlockToken, HandlerError, HandlerFunctions};
use std::time::Duration;

/// What one worker does.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Index of its counters in the control block (< 16).
    pub index: usize,
    /// Operations to perform; 0 = until the control block says stop.
    pub ops: u64,
    /// Most blocks held at once.
    pub max_live: usize,
    /// Smallest payload (at least 8: the tag).
    pub min_size: usize,
    /// Largest common payload (1 in 64 allocations goes up to 16 KiB).
    pub max_size: usize,
    /// Random seed.
    pub seed: u64,
    /// Send and receive blocks through the mailbox.
    pub transfer: bool,
    /// Send blocks (with `transfer`). A block in transit stays owned by its
    /// sender; if the receiver is killed between taking the token and
    /// freeing the block, only the sender's death returns it. Workers that
    /// never die (the crash harness's parent threads) therefore only receive.
    pub send: bool,
    /// Sometimes keep a received block (adopt it) instead of freeing it.
    pub adopt: bool,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            index: 0,
            ops: 10_000,
            max_live: 64,
            min_size: 8,
            max_size: 544,
            seed: 1,
            transfer: true,
            send: true,
            adopt: true,
        }
    }
}

/// Byte `i` (≥ 8) of the pattern for `tag`.
#[inline]
pub fn pattern_byte(tag: u64, i: usize) -> u8 {
    let x = tag ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x ^ (x >> 29) ^ (x >> 47)) as u8
}

/// Fills a block with `tag` and its pattern.
pub fn fill(
    h: &impl HandlerFunctions,
    block: &mut Block<u8>,
    tag: u64,
) -> Result<(), HandlerError> {
    let len = block.len();
    let mut bytes: Vec<u8> = (0..len).map(|i| pattern_byte(tag, i)).collect();
    let head = len.min(8);
    bytes[..head].copy_from_slice(&tag.to_le_bytes()[..head]);
    h.write_slice(block, &bytes)
}

/// Reads a block back: `(tag found, whether the whole pattern matches it)`.
/// With `expected`, the tag itself must match too.
pub fn verify(
    h: &impl HandlerFunctions,
    block: &Block<u8>,
    expected: Option<u64>,
) -> Result<(u64, bool), HandlerError> {
    let len = block.len();
    let mut bytes = vec![0u8; len];
    h.read_slice(block, &mut bytes)?;
    let mut tag_bytes = [0u8; 8];
    let head = len.min(8);
    tag_bytes[..head].copy_from_slice(&bytes[..head]);
    let mut tag = u64::from_le_bytes(tag_bytes);
    if let Some(e) = expected {
        if len < 8 {
            tag = e;
        } else if tag != e {
            return Ok((tag, false));
        }
    }
    let intact = (head..len).all(|i| bytes[i] == pattern_byte(tag, i));
    Ok((tag, intact))
}

/// Parks while the control block says pause; `false` once it says stop.
pub fn safe_point(ctl: &Control) -> bool {
    // Acquire: pairs with the parent's Release of stop / pause.
    if ctl.stop.load(Ordering::Acquire) != 0 {
        return false;
    }
    if ctl.pause.load(Ordering::Acquire) != 0 {
        // AcqRel: everything this worker did happens before the parent
        // (which Acquires `parked`) inspects the segment.
        ctl.parked.fetch_add(1, Ordering::AcqRel);
        while ctl.pause.load(Ordering::Acquire) != 0 && ctl.stop.load(Ordering::Acquire) == 0 {
            std::thread::sleep(Duration::from_micros(100));
        }
        ctl.parked.fetch_sub(1, Ordering::AcqRel);
    }
    ctl.stop.load(Ordering::Acquire) == 0
}

fn bump(counter: &crate::sync::AtomicU64) {
    // Relaxed: statistics; the parent reads them after the worker parked or exited.
    counter.fetch_add(1, Ordering::Relaxed);
}

struct Worker<'a, H: HandlerFunctions> {
    h: &'a H,
    ctl: &'a Control,
    stats: &'a WorkerStats,
    cfg: &'a WorkerConfig,
    rng: fastrand::Rng,
    live: Vec<(Block<u8>, u64)>,
    seq: u64,
    reported: u32,
}

impl<H: HandlerFunctions> Worker<'_, H> {
    fn complain(&mut self, what: std::fmt::Arguments<'_>) {
        if self.reported < 5 {
            self.reported += 1;
            eprintln!(
                "worker {} (pid {}): {what}",
                self.cfg.index,
                std::process::id()
            );
        }
    }

    fn allocate(&mut self) {
        let n = if self.rng.u32(0..64) == 0 {
            self.rng.usize(self.cfg.min_size..=16 << 10)
        } else {
            self.rng.usize(self.cfg.min_size..=self.cfg.max_size)
        };
        self.seq += 1;
        let tag = ((self.cfg.index as u64) << 56)
            | ((std::process::id() as u64 & 0xFF_FFFF) << 32)
            | self.seq;
        match self.h.allocate_slice::<u8>(n) {
            Ok(mut block) => {
                bump(&self.stats.allocations);
                match fill(self.h, &mut block, tag) {
                    Ok(()) => self.live.push((block, tag)),
                    Err(e) => {
                        bump(&self.stats.errors);
                        self.complain(format_args!("writing a fresh block: {e}"));
                    }
                }
            }
            Err(HandlerError::AllocationFailed(AllocError::OutOfMemory { .. })) => {
                bump(&self.stats.out_of_memory)
            }
            Err(e) => {
                bump(&self.stats.errors);
                self.complain(format_args!("allocate {n}: {e}"));
            }
        }
    }

    fn free_own(&mut self) {
        if self.live.is_empty() {
            return;
        }
        let (block, tag) = self.live.swap_remove(self.rng.usize(0..self.live.len()));
        let offset = block.offset();
        match verify(self.h, &block, Some(tag)) {
            Ok((_, true)) => {}
            Ok((found, false)) => {
                bump(&self.stats.overlaps);
                self.complain(format_args!(
                    "block {offset} (tag {tag:#x}) damaged, first word {found:#x}"
                ));
            }
            Err(e) => {
                bump(&self.stats.errors);
                self.complain(format_args!("reading own block {offset}: {e}"));
            }
        }
        match self.h.free(block) {
            Ok(()) => bump(&self.stats.frees),
            Err(e) => {
                bump(&self.stats.errors);
                self.complain(format_args!("free of own block {offset}: {e}"));
            }
        }
    }

    fn send(&mut self) {
        if self.live.is_empty() {
            return;
        }
        let i = self.rng.usize(0..self.live.len());
        let token = self.live[i].0.token().word();
        for _ in 0..8 {
            let slot = &self.ctl.mailbox[self.rng.usize(0..MAILBOX)];
            // Release: the receiver's AcqRel swap sees the payload written before.
            if slot
                .compare_exchange(0, token, Ordering::Release, Ordering::Relaxed)
                .is_ok()
            {
                self.live.swap_remove(i);
                bump(&self.stats.sent);
                return;
            }
        }
    }

    fn receive(&mut self) {
        let slot = &self.ctl.mailbox[self.rng.usize(0..MAILBOX)];
        // AcqRel: takes the token exclusively; pairs with the sender's Release.
        let token = slot.swap(0, Ordering::AcqRel);
        if token == 0 {
            return;
        }
        let block = match self
            .h
            .block_from_token::<u8>(BlockToken::from_word(token, self.h.segment_nonce()))
        {
            Ok(b) => b,
            Err(_) => {
                // The sender died and its blocks were reclaimed meanwhile.
                bump(&self.stats.stale);
                return;
            }
        };
        let keep = self.cfg.adopt && self.rng.u32(0..4) == 0 && self.live.len() < self.cfg.max_live;
        if keep && self.h.adopt(&block).is_err() {
            bump(&self.stats.stale);
            return;
        }
        let (tag, intact) = match verify(self.h, &block, None) {
            Ok(v) => v,
            Err(_) => {
                bump(&self.stats.stale);
                return;
            }
        };
        let offset = block.offset();
        if keep {
            if !intact {
                bump(&self.stats.overlaps);
                self.complain(format_args!(
                    "adopted block {offset} damaged (tag {tag:#x})"
                ));
            }
            bump(&self.stats.received);
            self.live.push((block, tag));
            return;
        }
        // Generation-checked free: success proves the block was this
        // generation all along, so a damaged pattern is a real overlap.
        match self.h.free(block) {
            Ok(()) => {
                bump(&self.stats.frees);
                bump(&self.stats.received);
                if !intact {
                    bump(&self.stats.overlaps);
                    self.complain(format_args!(
                        "received block {offset} damaged (tag {tag:#x})"
                    ));
                }
            }
            Err(_) => bump(&self.stats.stale),
        }
    }
}

/// Runs one worker until `cfg.ops` operations are done or the control block
/// says stop; then frees everything it still holds.
pub fn run_worker(h: &impl HandlerFunctions, ctl: &Control, cfg: &WorkerConfig) {
    let stats = &ctl.workers[cfg.index];
    let mut w = Worker {
        h,
        ctl,
        stats,
        cfg,
        rng: fastrand::Rng::with_seed(cfg.seed),
        live: Vec::new(),
        seq: 0,
        reported: 0,
    };
    // Relaxed: read by the parent only as a hint of which workers are running.
    stats.started.store(1, Ordering::Relaxed);
    let mut done = 0u64;
    while safe_point(ctl) && (cfg.ops == 0 || done < cfg.ops) {
        done += 1;
        bump(&stats.ops);
        let roll = w.rng.u32(0..100);
        match roll {
            0..45 if w.live.len() < cfg.max_live => w.allocate(),
            45..60 if cfg.transfer && cfg.send => w.send(),
            60..75 if cfg.transfer => w.receive(),
            _ if w.live.is_empty() => w.allocate(),
            _ => w.free_own(),
        }
    }
    while !w.live.is_empty() {
        w.free_own();
    }
}
