//! The race matrix: every pair of operations that can touch one block or
//! one participant slot, run at the same moment on the same target, many
//! times, with a precise check after each round (see `matrix_testkit::race`).
//!
//! Each test prints one line `race-matrix | pair | mode | runs | iterations
//! | result`; the table in the README is made from them. The time budget per
//! pair is ~1.5 s (10–20 s for the pairs ignored as failing: a race stops at
//! its first failure); `MATRIX_RACE_SECONDS=<s>` sets every pair's budget.
//!
//! Most rounds race a batch of [`BATCH`] blocks: both sides walk the same
//! list in the same order, so their progress drifts past each other and
//! some pair of operations meets at every relative timing (one block per
//! round found a window of a few instructions far less often).
//!
//! Pairs that fail on the current code are `#[ignore]`d with the defect
//! they show; `--include-ignored` runs them.

use matrix_core::state::{self, ALLOCATED, CACHED, FREE};
use matrix_core::{Observer, OwnerId};
use matrix_handler::{
    Block, BlockToken, HandlerError, HandlerFunctions, MatrixHandler, SharedHandler,
};
use matrix_testkit::race::{self, ChildSide, RaceConfig};
use matrix_testkit::segment::SegmentName;
use matrix_testkit::stress::child::Launcher;
use matrix_testkit::{audit, check_invariants};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The resize rows (`reallocate` against the operations that can touch
/// the block or its neighbour at the same moment).
#[path = "race_matrix/resize.rs"]
mod resize;

const SEGMENT: u32 = 256 << 10;
/// Blocks raced per round (both sides in the same order).
const BATCH: usize = 32;

/// Side B of the process races, looked up by name in the child.
const SIDES: &[ChildSide] = &[
    ChildSide {
        name: "adopt",
        op: |h, ts| {
            CHILD_WALK.bits(ts, |&t| {
                let t = BlockToken::from_word(t, h.segment_nonce());
                h.block_from_token::<u64>(t)
                    .and_then(|b| h.adopt(&b))
                    .is_ok()
            })
        },
    },
    ChildSide {
        name: "free",
        op: |h, ts| {
            CHILD_WALK.bits(ts, |&t| {
                free_token(h, BlockToken::from_word(t, h.segment_nonce())).is_ok()
            })
        },
    },
    ChildSide {
        name: "allocate-sized",
        op: resize::child_allocate_sized,
    },
    ChildSide {
        name: "transition-61",
        op: |h, ts| {
            CHILD_WALK.bits(ts, |&t| {
                let t = BlockToken::from_word(t, h.segment_nonce());
                h.block_from_token::<u64>(t)
                    .and_then(|b| h.transition_state(&b, ALLOCATED, 61, SeqCst))
                    .is_ok()
            })
        },
    },
];

/// Children re-run this binary with a filter naming this test, which then
/// plays their role and exits.
#[test]
fn race_child() {
    if let Some(code) = race::run_child(SIDES) {
        std::process::exit(code);
    }
    assert!(
        std::env::var(matrix_testkit::stress::child::ENV_ROLE).is_err(),
        "a child role must have been run"
    );
}

/// `op` on every token word in order (rebuilt without a segment nonce: `op`
/// uses offset and generation only); bit i of the result is its result on
/// token i.
fn bits(tokens: &[u64], mut op: impl FnMut(BlockToken) -> bool) -> u64 {
    tokens.iter().enumerate().fold(0, |acc, (i, &t)| {
        acc | ((op(BlockToken::from_word(t, 0)) as u64) << i)
    })
}

/// How side B walks a round's batch: the same way as side A in one round,
/// the other way in the next. Side by side, the two meet at the offset the
/// delays chose; in opposite directions they cross on some block whatever
/// their speeds. Each finds windows the other misses.
struct Walk(AtomicU64);

/// Side A following side B block by block: B announces the block it is
/// about to work on, A starts on it as soon as it sees that (after a few
/// random spins), so the two operations overlap on every block of the batch
/// rather than where the walks happen to cross. For windows of a few
/// instructions between two words (a load of one, a CAS of the other).
struct Lead(AtomicU64);

impl Lead {
    const fn new() -> Self {
        Lead(AtomicU64::new(0))
    }
    /// Before a round (in its setup).
    fn reset(&self) {
        self.0.store(0, SeqCst);
    }
    /// Side B: about to work on item `i`.
    fn announce(&self, i: usize) {
        self.0.store(i as u64 + 1, SeqCst);
    }
    /// Side A: waits (a bounded number of spins) for side B to reach item `i`.
    fn follow(&self, i: usize) {
        let mut n = 0u32;
        while self.0.load(SeqCst) <= i as u64 && n < 1 << 16 {
            std::hint::spin_loop();
            n += 1;
        }
        for _ in 0..fastrand::u32(0..24) {
            std::hint::spin_loop();
        }
    }
}

/// Side B's walk in a child process.
static CHILD_WALK: Walk = Walk::new();

impl Walk {
    const fn new() -> Self {
        Walk(AtomicU64::new(0))
    }

    /// `op` on every item in this round's direction; results in item order.
    fn map<T, R>(&self, items: &[T], op: impl FnMut(&T) -> R) -> Vec<R> {
        if self.0.fetch_add(1, SeqCst) % 2 == 0 {
            return items.iter().map(op).collect();
        }
        let mut out: Vec<R> = items.iter().rev().map(op).collect();
        out.reverse();
        out
    }

    /// As [`Walk::map`]; bit i of the result is `op` on item i.
    fn bits<T>(&self, items: &[T], op: impl FnMut(&T) -> bool) -> u64 {
        self.map(items, op)
            .iter()
            .enumerate()
            .fold(0, |acc, (i, &ok)| acc | ((ok as u64) << i))
    }
}

fn words_of(tokens: &[BlockToken]) -> Vec<u64> {
    tokens.iter().map(|t| t.word()).collect()
}

fn launcher() -> Launcher {
    Launcher::current_exe_with_args(["race_child", "--exact", "--nocapture", "--test-threads=1"])
        .expect("current exe")
}

fn cfg() -> RaceConfig {
    RaceConfig::default().with_env()
}

/// A round of [`BATCH`] targets.
fn batch_cfg() -> RaceConfig {
    RaceConfig {
        targets_per_round: BATCH as u64,
        ..cfg()
    }
}

/// For a pair that shows a defect of a window of a few instructions: a
/// race stops at its first failure, so a longer budget costs time only
/// once the defect is fixed, and makes the failure reliable on a loaded
/// 2-core machine (1.5 s found these in only some runs; `seconds` is what
/// found each in every run we made, at load averages up to 9, except
/// recover × recover, which fails in some runs only).
fn defect_cfg(base: RaceConfig, seconds: u64) -> RaceConfig {
    RaceConfig {
        budget: Duration::from_secs(seconds),
        ..base
    }
    .with_env()
}

/// A named segment (so other participants can open it), removed on drop.
struct Seg {
    h: MatrixHandler,
    name: SegmentName,
}

fn seg(label: &str) -> Seg {
    let name = SegmentName::new(label);
    let h = MatrixHandler::create(name.as_str(), SEGMENT).expect("create segment");
    Seg { h, name }
}

impl Seg {
    /// Another participant on the same segment.
    fn peer(&self) -> MatrixHandler {
        MatrixHandler::open(self.name.as_str()).expect("open segment")
    }
}

fn free_token(h: &impl HandlerFunctions, t: BlockToken) -> Result<(), matrix_core::BlockError> {
    // The token's generation is the low 36 bits; generations in these tests
    // stay far below 2^36, so it is the block's whole generation.
    h.matrix().free(t.offset() - 32, Some(t.generation()))
}

/// `(state, generation, owner)` of the block whose payload is at `offset`.
fn words(h: &impl HandlerFunctions, offset: u32) -> (u32, u64, OwnerId) {
    let (hdr, _) = h
        .matrix()
        .block_header(offset - 32)
        .expect("a block header");
    let w = hdr.state.load(SeqCst);
    (
        state::state_of(w),
        state::generation_of(w),
        OwnerId(state::owner_of(w)),
    )
}

fn alloc_token(h: &impl HandlerFunctions) -> Result<BlockToken, String> {
    Ok(h.allocate::<u64>().map_err(|e| e.to_string())?.token())
}

/// A batch of blocks, with a second handle to each (rebuilt from its token).
#[allow(clippy::type_complexity)]
fn handles(h: &impl HandlerFunctions) -> Result<(Vec<BlockToken>, Vec<Block<u64>>), String> {
    let ts = alloc_batch(h)?;
    let bs = handles_of(h, &ts)?;
    Ok((ts, bs))
}

fn handles_of(h: &impl HandlerFunctions, ts: &[BlockToken]) -> Result<Vec<Block<u64>>, String> {
    ts.iter()
        .map(|&t| h.block_from_token::<u64>(t))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())
}

/// As [`bits`], over handles.
fn bits_of<T>(blocks: &[Block<T>], mut op: impl FnMut(&Block<T>) -> bool) -> u64 {
    blocks
        .iter()
        .enumerate()
        .fold(0, |acc, (i, b)| acc | ((op(b) as u64) << i))
}

fn alloc_batch(h: &impl HandlerFunctions) -> Result<Vec<BlockToken>, String> {
    (0..BATCH).map(|_| alloc_token(h)).collect()
}

fn free_all(h: &impl HandlerFunctions, tokens: &[BlockToken]) -> Result<(), String> {
    for &t in tokens {
        free_token(h, t).map_err(|e| format!("free of {}: {e}", t.offset() - 32))?;
    }
    Ok(())
}

/// Flushes this thread's cache and runs the checker.
fn quiet_check(h: &impl HandlerFunctions) -> Result<matrix_testkit::Report, String> {
    h.matrix().flush_thread_cache();
    check_invariants(h).map_err(|v| format!("checker: {v}"))
}

/// A non-live block must not name a participant that does not hold it:
/// the freer (which has it in its cache) or the segment (in the index).
fn freed_block_owner(
    h: &impl HandlerFunctions,
    t: BlockToken,
    freer: OwnerId,
    what: &str,
) -> Result<(), String> {
    let (st, _, owner) = words(h, t.offset());
    let ok = match st {
        CACHED => owner == freer,
        FREE => owner == OwnerId::SEGMENT,
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "block {} is {} in the freer's cache (freer {:#x}) but its owner word names {:#x} \
             ({what}): the {what} CASed the owner word after a plain check of the state",
            t.offset() - 32,
            state::state_name(st),
            freer.0,
            owner.0
        ))
    }
}

/// What a block in two hands leads to once the stray owner detaches: its
/// recovery puts the block in the index while the freer's cache still holds
/// it, and the cache flush puts it there again.
fn after_detach(h: &MatrixHandler, stray: MatrixHandler) -> Result<(), String> {
    drop(stray);
    let rec = h.recover().map_err(|e| format!("recover: {e}"))?;
    h.matrix().flush_thread_cache();
    let a = audit(h.matrix());
    match a.violations.first() {
        Some(v) => Err(format!(
            "after the stray owner detached, recover() reclaimed {} blocks and the freer's cache \
             flush followed: {} violations, first: {v}",
            rec.blocks,
            a.violations.len()
        )),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------- ownership

#[test]
fn adopt_x_free() {
    let s = seg("race-adopt-free");
    let adopter = s.peer();
    let me = s.h.matrix().owner_id();
    let lead = Lead::new();
    let result = race::pair(
        &defect_cfg(batch_cfg(), 10),
        |_| {
            lead.reset();
            alloc_batch(&s.h)
        },
        |ts| {
            ts.iter().enumerate().try_for_each(|(i, &t)| {
                lead.follow(i);
                free_token(&s.h, t)
            })
        },
        |ts| {
            for (i, &t) in ts.iter().enumerate() {
                lead.announce(i);
                let _ = adopter
                    .block_from_token::<u64>(t)
                    .and_then(|b| adopter.adopt(&b));
            }
        },
        |_, ts, freed, ()| {
            freed.map_err(|e| format!("the owner's free failed: {e}"))?;
            ts.iter()
                .try_for_each(|&t| freed_block_owner(&s.h, t, me, "adopter"))
        },
    );
    let end = if result.is_err() {
        after_detach(&s.h, adopter)
    } else {
        drop(adopter);
        race::all_back(&s.h)
    };
    race::record("adopt × free", result, end);
}

#[test]
fn adopt_x_free_processes() {
    let s = seg("race-adopt-free-p");
    let me = s.h.matrix().owner_id();
    let result = race::process_pair(
        &defect_cfg(batch_cfg(), 20),
        &launcher(),
        s.name.as_str(),
        "adopt",
        |_| {
            alloc_batch(&s.h)
                .map(|ts| (words_of(&ts), ts))
                .map(|(w, t)| (t, w))
        },
        |ts| free_all(&s.h, ts),
        |_, ts, freed, _| {
            freed.map_err(|e| format!("the owner's free failed: {e}"))?;
            ts.iter()
                .try_for_each(|&t| freed_block_owner(&s.h, t, me, "adopting child"))
        },
    );
    // The child has exited: its slot is detached, as in `after_detach`.
    let end = (|| {
        let rec = s.h.recover().map_err(|e| format!("recover: {e}"))?;
        s.h.matrix().flush_thread_cache();
        match audit(s.h.matrix()).violations.first() {
            Some(v) => Err(format!(
                "after the child exited, recover() reclaimed {} blocks, then the cache flush: {v}",
                rec.blocks
            )),
            None => race::all_back(&s.h),
        }
    })();
    race::record("adopt × free", result, end);
}

#[test]
fn adopt_x_adopt() {
    let s = seg("race-adopt-adopt");
    let (p2, p3) = (s.peer(), s.peer());
    let (o2, o3) = (p2.matrix().owner_id(), p3.matrix().owner_id());
    let adopt =
        |h: &MatrixHandler, t: BlockToken| h.block_from_token::<u64>(t).and_then(|b| h.adopt(&b));
    let walk = Walk::new();
    let result = race::pair(
        &batch_cfg(),
        |_| alloc_batch(&s.h),
        |ts| {
            ts.iter()
                .map(|&t| adopt(&p2, t))
                .collect::<Result<Vec<_>, _>>()
        },
        |ts| {
            walk.map(ts, |&t| adopt(&p3, t))
                .into_iter()
                .collect::<Result<Vec<_>, _>>()
        },
        |_, ts, a, b| {
            a.map_err(|e| format!("adopt by slot 2 failed: {e}"))?;
            b.map_err(|e| format!("adopt by slot 3 failed: {e}"))?;
            for &t in &ts {
                let (st, _, owner) = words(&s.h, t.offset());
                if st != ALLOCATED || (owner != o2 && owner != o3) {
                    return Err(format!(
                        "after two adopts the block is {} owned by {:#x}, neither adopter",
                        state::state_name(st),
                        owner.0
                    ));
                }
            }
            free_all(&s.h, &ts)
        },
    );
    drop((p2, p3));
    race::record("adopt × adopt", result, race::all_back(&s.h));
}

#[test]
fn free_x_release_to_segment() {
    let s = seg("race-free-release");
    let p2 = s.peer();
    let me = s.h.matrix().owner_id();
    let lead = Lead::new();
    let result = race::pair(
        &defect_cfg(batch_cfg(), 10),
        |_| {
            lead.reset();
            alloc_batch(&s.h)
        },
        |ts| {
            ts.iter().enumerate().try_for_each(|(i, &t)| {
                lead.follow(i);
                free_token(&s.h, t)
            })
        },
        |ts| {
            for (i, &t) in ts.iter().enumerate() {
                lead.announce(i);
                let _ = p2
                    .block_from_token::<u64>(t)
                    .and_then(|b| p2.release_to_segment(&b));
            }
        },
        |_, ts, freed, ()| {
            freed.map_err(|e| format!("the owner's free failed: {e}"))?;
            ts.iter()
                .try_for_each(|&t| freed_block_owner(&s.h, t, me, "release to the segment"))
        },
    );
    drop(p2);
    race::record("free × release_to_segment", result, race::all_back(&s.h));
}

// -------------------------------------------------------------- double frees

/// Bit i of `a` and `b`: the two frees of block i; exactly one may succeed.
fn exactly_one(a: u64, b: u64) -> Result<(), String> {
    let all = if BATCH == 64 {
        u64::MAX
    } else {
        (1u64 << BATCH) - 1
    };
    if a ^ b == all && a & b == 0 {
        Ok(())
    } else {
        let i = ((a ^ b) ^ all | (a & b)).trailing_zeros();
        Err(format!(
            "two frees of block {i} of the round: results {} and {}, exactly one must succeed",
            a >> i & 1 == 1,
            b >> i & 1 == 1
        ))
    }
}

#[test]
fn free_x_free() {
    let s = seg("race-free-free");
    let walk = Walk::new();
    let result = race::pair(
        &batch_cfg(),
        |_| alloc_batch(&s.h),
        |ts| bits(&words_of(ts), |t| free_token(&s.h, t).is_ok()),
        |ts| walk.bits(ts, |&t| free_token(&s.h, t).is_ok()),
        |round, _, a, b| {
            exactly_one(a, b)?;
            if round % 512 == 0 {
                quiet_check(&s.h)?;
            }
            Ok(())
        },
    );
    race::record("free × free", result, race::all_back(&s.h));
}

#[test]
fn free_x_free_processes() {
    let s = seg("race-free-free-p");
    let result = race::process_pair(
        &batch_cfg(),
        &launcher(),
        s.name.as_str(),
        "free",
        |_| {
            alloc_batch(&s.h)
                .map(|ts| (words_of(&ts), ts))
                .map(|(w, t)| (t, w))
        },
        |ts| bits(&words_of(ts), |t| free_token(&s.h, t).is_ok()),
        |round, _, a, b| {
            exactly_one(a, b)?;
            if round % 512 == 0 {
                quiet_check(&s.h)?;
            }
            Ok(())
        },
    );
    race::record("free × free", result, race::all_back(&s.h));
}

#[test]
fn free_x_free_at() {
    let s = seg("race-free-free-at");
    let walk = Walk::new();
    let result = race::pair(
        &batch_cfg(),
        |_| alloc_batch(&s.h),
        |ts| bits(&words_of(ts), |t| free_token(&s.h, t).is_ok()),
        |ts| walk.bits(ts, |&t| s.h.free_at(t.offset() - 32).is_ok()),
        |round, _, a, b| {
            exactly_one(a, b)?;
            if round % 512 == 0 {
                quiet_check(&s.h)?;
            }
            Ok(())
        },
    );
    race::record("free × free_at", result, race::all_back(&s.h));
}

/// A free through a thread's own `LocalHandler` (its cache, no
/// thread-local lookup) racing a free of the same block through the
/// shared handle on another thread: the same one CAS decides.
#[test]
fn local_free_x_free() {
    let s = seg("race-local-free-free");
    let walk = Walk::new();
    let result = race::pair(
        &batch_cfg(),
        |_| alloc_batch(&s.h),
        |ts| {
            // Made on this side's thread (it is not Send); its drop at the
            // end of the round returns what it cached.
            let mut local = s.h.local();
            bits(&words_of(ts), |t| local.free_at(t.offset() - 32).is_ok())
        },
        |ts| walk.bits(ts, |&t| free_token(&s.h, t).is_ok()),
        |round, _, a, b| {
            exactly_one(a, b)?;
            if round % 512 == 0 {
                quiet_check(&s.h)?;
            }
            Ok(())
        },
    );
    race::record("local free × free", result, race::all_back(&s.h));
}

/// The same with a handle-checked local free (`LocalHandler::free`, with
/// the generation) against a free by another process.
#[test]
fn local_free_x_free_processes() {
    let s = seg("race-local-free-free-p");
    let result = race::process_pair(
        &batch_cfg(),
        &launcher(),
        s.name.as_str(),
        "free",
        |_| {
            let ts = alloc_batch(&s.h)?;
            let bs = handles_of(&s.h, &ts)?;
            Ok(((ts.clone(), Mutex::new(Some(bs))), words_of(&ts)))
        },
        |(_, bs)| {
            let mut local = s.h.local();
            let bs = bs.lock().unwrap().take().expect("the round's handles");
            bs.into_iter()
                .enumerate()
                .fold(0, |acc, (i, b)| acc | ((local.free(b).is_ok() as u64) << i))
        },
        |round, _, a, b| {
            exactly_one(a, b)?;
            if round % 512 == 0 {
                quiet_check(&s.h)?;
            }
            Ok(())
        },
    );
    race::record("local free × free", result, race::all_back(&s.h));
}

// ------------------------------------------------- handles rebuilt mid-free

#[test]
fn free_x_block_from_token() {
    let s = seg("race-free-token");
    let walk = Walk::new();
    let result = race::pair(
        &batch_cfg(),
        |_| alloc_batch(&s.h),
        // Free and allocate again: the same offset, a new generation.
        |ts| {
            ts.iter()
                .map(|&t| {
                    free_token(&s.h, t).map_err(|e| e.to_string())?;
                    alloc_token(&s.h)
                })
                .collect::<Result<Vec<_>, _>>()
        },
        |ts| walk.map(ts, |&t| s.h.block_from_token::<u64>(t).ok()),
        |_, old, new, rebuilt| {
            let new = new?;
            for (old, b) in old.iter().zip(rebuilt) {
                let Some(b) = b else { continue };
                if b.generation() != old.generation() {
                    return Err(format!(
                        "block_from_token of generation {} returned generation {}",
                        old.generation(),
                        b.generation()
                    ));
                }
                if let Ok(v) = s.h.read_pod(&b) {
                    return Err(format!(
                        "a handle to the freed generation still reads the new block ({v})"
                    ));
                }
            }
            free_all(&s.h, &new)
        },
    );
    race::record("free × block_from_token", result, race::all_back(&s.h));
}

/// The large block `block_at` validates is freed, merged back into the
/// wilderness and a small block carved at the same offset meanwhile: a
/// handle for the large type must never come back for the small block.
#[test]
fn free_x_block_at_large_then_small() {
    type Big = [u64; 128]; // 1 KiB
    let s = seg("race-free-block-at");
    let result = race::pair(
        &RaceConfig {
            max_spins: 2048,
            ..cfg()
        },
        |_| {
            let b = s.h.allocate::<Big>().map_err(|e| e.to_string())?;
            Ok(b.token())
        },
        |&t| -> Result<BlockToken, String> {
            free_token(&s.h, t).map_err(|e| e.to_string())?;
            s.h.consolidate().map_err(|e| e.to_string())?;
            let small = s.h.allocate_raw(16).map_err(|e| e.to_string())?;
            let (_, generation, _) = words(&s.h, small.offset());
            Ok(BlockToken::new(
                small.offset(),
                generation,
                s.h.segment_nonce(),
            ))
        },
        // block_at polled while the block is freed and re-carved: every
        // handle it returns is checked.
        |&t| {
            (0..64)
                .filter_map(|_| s.h.block_at::<Big>(t.offset()).ok())
                .filter(|b| b.generation() != t.generation())
                .collect::<Vec<_>>()
        },
        |_, _, small, handles| {
            let small = small?;
            for b in handles {
                let (hdr, size) = s.h.matrix().block_header(b.header_offset()).unwrap();
                let w = hdr.state.load(SeqCst);
                let payload = size - 32;
                if state::generation_of(w) == b.generation()
                    && state::is_live(state::state_of(w))
                    && (payload as usize) < std::mem::size_of::<Big>() * b.len()
                {
                    return Err(format!(
                        "block_at::<[u64; 128]> returned a handle of {} B for the live block of \
                         {payload} B at {} (generation {})",
                        std::mem::size_of::<Big>() * b.len(),
                        b.header_offset(),
                        b.generation()
                    ));
                }
            }
            free_token(&s.h, small).map_err(|e| format!("free: {e}"))?;
            s.h.consolidate().map_err(|e| e.to_string())?;
            Ok(())
        },
    );
    race::record(
        "free × block_at (large, then small)",
        result,
        race::all_back(&s.h),
    );
}

// ------------------------------------------------------------------ states

#[test]
fn free_x_set_state() {
    let s = seg("race-free-set-state");
    let walk = Walk::new();
    let result = race::pair(
        &batch_cfg(),
        |_| handles(&s.h),
        |(ts, _)| free_all(&s.h, ts),
        |(_, bs)| {
            walk.map(bs, |b| s.h.set_state(b, 60));
        },
        |round, (ts, _), freed, ()| {
            freed.map_err(|e| format!("free of a live block failed: {e}"))?;
            for t in ts {
                let (st, _, _) = words(&s.h, t.offset());
                if state::is_live(st) {
                    return Err(format!(
                        "after free and set_state the block is {}: set_state revived a freed block",
                        state::state_name(st)
                    ));
                }
            }
            if round % 512 == 0 {
                quiet_check(&s.h)?;
            }
            Ok(())
        },
    );
    race::record("free × set_state", result, race::all_back(&s.h));
}

#[test]
fn set_state_x_transition_state() {
    let s = seg("race-set-transition");
    let walk = Walk::new();
    let result = race::pair(
        &batch_cfg(),
        |_| handles(&s.h),
        |(_, bs)| bs.iter().try_for_each(|b| s.h.set_state(b, 60)),
        |(_, bs)| walk.map(bs, |b| s.h.transition_state(b, ALLOCATED, 61, SeqCst)),
        |_, (ts, _), set, moved| {
            set.map_err(|e| format!("set_state failed: {e}"))?;
            // Whatever the order, the last word is set_state's: a transition
            // after it finds 60, not ALLOCATED.
            for (t, moved) in ts.iter().zip(moved) {
                let (st, _, _) = words(&s.h, t.offset());
                match (st, &moved) {
                    (60, Ok(_)) | (60, Err(HandlerError::TransitionFailed(60))) => {}
                    _ => {
                        return Err(format!(
                            "set_state(60) and transition(ALLOCATED -> 61) left state {st}, \
                             transition result {moved:?}"
                        ))
                    }
                }
            }
            free_all(&s.h, &ts)
        },
    );
    race::record("set_state × transition_state", result, race::all_back(&s.h));
}

/// Bit i of `a` / `b`: whether side A's (-> 60) / side B's (-> 61)
/// transition of block i won.
fn one_transition(h: &MatrixHandler, ts: &[BlockToken], a: u64, b: u64) -> Result<(), String> {
    for (i, t) in ts.iter().enumerate() {
        let (a_won, b_won) = (a >> i & 1 == 1, b >> i & 1 == 1);
        let (st, _, _) = words(h, t.offset());
        match (a_won, b_won, st) {
            (true, false, 60) | (false, true, 61) => {}
            _ => {
                return Err(format!(
                    "two transitions from ALLOCATED: won {a_won} / {b_won}, final state {st}; \
                     exactly one must win and leave its state"
                ))
            }
        }
    }
    Ok(())
}

#[test]
fn transition_state_x_transition_state() {
    let s = seg("race-transition-transition");
    let walk = Walk::new();
    let result = race::pair(
        &batch_cfg(),
        |_| {
            let (ts, a) = handles(&s.h)?;
            let (_, b) = (ts.clone(), handles_of(&s.h, &ts)?);
            Ok((ts, a, b))
        },
        |(_, a, _)| {
            bits_of(a, |b| {
                s.h.transition_state(b, ALLOCATED, 60, SeqCst).is_ok()
            })
        },
        |(_, _, b)| {
            walk.bits(b, |b| {
                s.h.transition_state(b, ALLOCATED, 61, SeqCst).is_ok()
            })
        },
        |_, (ts, _, _), a, b| {
            one_transition(&s.h, &ts, a, b)?;
            free_all(&s.h, &ts)
        },
    );
    race::record(
        "transition_state × transition_state",
        result,
        race::all_back(&s.h),
    );
}

#[test]
fn transition_state_x_transition_state_processes() {
    let s = seg("race-transition-transition-p");
    let result = race::process_pair(
        &batch_cfg(),
        &launcher(),
        s.name.as_str(),
        "transition-61",
        |_| {
            let (ts, a) = handles(&s.h)?;
            let w = words_of(&ts);
            Ok(((ts, a), w))
        },
        |(_, a)| {
            bits_of(a, |b| {
                s.h.transition_state(b, ALLOCATED, 60, SeqCst).is_ok()
            })
        },
        |_, (ts, _), a, b| {
            one_transition(&s.h, &ts, a, b)?;
            free_all(&s.h, &ts)
        },
    );
    race::record(
        "transition_state × transition_state",
        result,
        race::all_back(&s.h),
    );
}

// -------------------------------------------------------------- payload I/O

#[test]
#[ignore = "a limit of the trust model, not a defect the allocator can close: write_pod checks the handle, then writes; a second handle's write can land in the block its owner freed and re-allocated in between (docs/ARCHITECTURE.md, trust model)"]
fn write_pod_x_free() {
    type P = [u64; 4];
    const MINE: P = [0xAAAA_AAAA_AAAA_AAAA; 4];
    const THEIRS: P = [0xBBBB_BBBB_BBBB_BBBB; 4];
    let s = seg("race-write-free");
    let walk = Walk::new();
    let result = race::pair(
        &defect_cfg(batch_cfg(), 20),
        |_| {
            let bs = (0..BATCH)
                .map(|_| s.h.allocate::<P>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            Ok((
                bs.iter().map(|b| b.token()).collect::<Vec<_>>(),
                Mutex::new(bs),
            ))
        },
        |(_, bs)| {
            let mut bs = bs.lock().unwrap();
            bs.iter_mut()
                .map(|b| s.h.write_pod(b, MINE))
                .collect::<Vec<_>>()
        },
        // Free, allocate again (the same offset, from this thread's cache)
        // and write: the old handle's write must not land there.
        |(ts, _)| -> Result<Vec<BlockToken>, String> {
            walk.map(ts, |&t| {
                free_token(&s.h, t).map_err(|e| e.to_string())?;
                let mut again = s.h.allocate::<P>().map_err(|e| e.to_string())?;
                s.h.write_pod(&mut again, THEIRS)
                    .map_err(|e| e.to_string())?;
                Ok(again.token())
            })
            .into_iter()
            .collect()
        },
        |_, _, written, again| {
            let again = again?;
            for (new, written) in again.iter().zip(&written) {
                let b = s.h.block_from_token::<P>(*new).map_err(|e| e.to_string())?;
                let now = s.h.read_pod(&b).map_err(|e| e.to_string())?;
                if now != THEIRS {
                    return Err(format!(
                        "the block re-allocated at {} holds {:#x} instead of its owner's {:#x}: \
                         a write_pod through the freed handle ({written:?}) landed in it",
                        new.offset() - 32,
                        now[0],
                        THEIRS[0]
                    ));
                }
                if let Err(e) = written {
                    if !matches!(e, HandlerError::Block(_)) {
                        return Err(format!("write_pod after free: untyped error {e:?}"));
                    }
                }
            }
            free_all(&s.h, &again)
        },
    );
    race::record("write_pod × free", result, race::all_back(&s.h));
}

// ---------------------------------------------------------------- recovery

/// A participant that allocated `n` blocks and detached (its handle dropped).
fn detached_blocks(s: &Seg, n: usize) -> Result<Vec<BlockToken>, String> {
    let d = s.peer();
    let tokens = (0..n).map(|_| alloc_token(&d)).collect::<Result<_, _>>()?;
    drop(d);
    Ok(tokens)
}

/// recover() and a free of the same dead participant's block: the block
/// goes back exactly once.
fn recover_x_free_check(
    s: &Seg,
    t: BlockToken,
    rec: Result<matrix_core::RecoveryReport, HandlerError>,
    freed: Result<(), matrix_core::BlockError>,
) -> Result<(), String> {
    let rec = rec.map_err(|e| format!("recover: {e}"))?;
    if rec.participants != 1 || rec.blocks > 1 {
        return Err(format!(
            "recover reclaimed {rec:?}, expected the one participant"
        ));
    }
    // A free that comes after the whole recovery finds the block free: a
    // typed refusal. Before (or during) it, the free succeeds.
    match freed {
        Ok(()) => {}
        Err(matrix_core::BlockError::DoubleFree { .. }) if rec.blocks == 1 => {}
        Err(e) => {
            return Err(format!(
                "free of the dead participant's block: {e} (recover returned {} blocks)",
                rec.blocks
            ))
        }
    }
    let (st, _, _) = words(&s.h, t.offset());
    if st != FREE {
        return Err(format!(
            "the block is {} after recover and free",
            state::state_name(st)
        ));
    }
    quiet_check(&s.h).map(drop)
}

#[test]
fn recover_x_free() {
    let s = seg("race-recover-free");
    let p2 = s.peer();
    let result = race::pair(
        &cfg(),
        |_| Ok(detached_blocks(&s, 1)?[0]),
        |_| s.h.recover(),
        |&t| {
            let r = free_token(&p2, t);
            p2.matrix().flush_thread_cache();
            r
        },
        |_, t, rec, freed| recover_x_free_check(&s, t, rec, freed),
    );
    drop(p2);
    race::record(
        "recover × free (detached owner)",
        result,
        race::all_back(&s.h),
    );
}

#[test]
fn recover_x_free_sigkill() {
    let s = seg("race-recover-free-kill");
    let p2 = s.peer();
    let launcher = launcher();
    let c = cfg();
    let result = race::pair(
        &c,
        |_| {
            let (mut child, tokens) =
                race::spawn_holder(&launcher, s.name.as_str(), 1, 64, c.timeout)?;
            child.kill().map_err(|e| format!("kill: {e}"))?;
            Ok(tokens[0])
        },
        |_| s.h.recover(),
        |&t| {
            let r = free_token(&p2, t);
            p2.matrix().flush_thread_cache();
            r
        },
        |_, t, rec, freed| recover_x_free_check(&s, t, rec, freed),
    );
    // Every round was a child that allocated and was SIGKILLed.
    let result = race::in_processes(result);
    drop(p2);
    race::record(
        "recover × free (SIGKILLed owner)",
        result,
        race::all_back(&s.h),
    );
}

#[test]
fn recover_x_adopt() {
    let s = seg("race-recover-adopt");
    let p2 = s.peer();
    let o2 = p2.matrix().owner_id();
    let result = race::pair(
        &cfg(),
        |_| Ok(detached_blocks(&s, 1)?[0]),
        |_| s.h.recover(),
        |&t| p2.block_from_token::<u64>(t).and_then(|b| p2.adopt(&b)),
        |_, t, rec, adopted| {
            let rec = rec.map_err(|e| format!("recover: {e}"))?;
            let (st, _, owner) = words(&s.h, t.offset());
            let consistent = match &adopted {
                Ok(()) => rec.blocks == 0 && st == ALLOCATED && owner == o2,
                Err(_) => rec.blocks == 1 && st == FREE,
            };
            if !consistent || rec.participants != 1 {
                return Err(format!(
                    "recover {rec:?} and adopt {adopted:?}: block left {} owned by {:#x}; \
                     exactly one of them must hold it",
                    state::state_name(st),
                    owner.0
                ));
            }
            if adopted.is_ok() {
                free_token(&p2, t).map_err(|e| format!("free: {e}"))?;
                p2.matrix().flush_thread_cache();
            }
            quiet_check(&s.h).map(drop)
        },
    );
    drop(p2);
    race::record("recover × adopt", result, race::all_back(&s.h));
}

#[test]
fn recover_x_recover() {
    const BLOCKS: usize = 4;
    let s = seg("race-recover-recover");
    let p2 = s.peer();
    let result = race::pair(
        &defect_cfg(cfg(), 20),
        |_| detached_blocks(&s, BLOCKS),
        |_| s.h.recover(),
        |_| p2.recover(),
        |_, _, a, b| {
            let (a, b) = (a.map_err(|e| e.to_string())?, b.map_err(|e| e.to_string())?);
            if a.participants + b.participants != 1 || a.blocks + b.blocks != BLOCKS as u64 {
                return Err(format!(
                    "two recoveries of one detached participant with {BLOCKS} blocks: \
                     {} + {} participants, {} + {} blocks",
                    a.participants, b.participants, a.blocks, b.blocks
                ));
            }
            quiet_check(&s.h).map(drop)
        },
    );
    drop(p2);
    race::record("recover × recover", result, race::all_back(&s.h));
}

// ------------------------------------------------------------ consolidation

#[test]
fn consolidate_x_free() {
    let s = seg("race-consolidate-free");
    let p2 = s.peer();
    let result = race::pair(
        &cfg(),
        |_| {
            // x y z w: x and z free in the index, y freed during the merge.
            let t: Vec<BlockToken> = (0..4)
                .map(|_| alloc_token(&s.h))
                .collect::<Result<_, _>>()?;
            free_token(&s.h, t[0]).map_err(|e| e.to_string())?;
            free_token(&s.h, t[2]).map_err(|e| e.to_string())?;
            s.h.matrix().flush_thread_cache();
            Ok(t)
        },
        |_| s.h.consolidate(),
        |t| {
            let r = free_token(&p2, t[1]);
            p2.matrix().flush_thread_cache();
            r
        },
        |_, t, merged, freed| {
            merged.map_err(|e| format!("consolidate: {e}"))?;
            freed.map_err(|e| format!("free during the merge: {e}"))?;
            quiet_check(&s.h)?;
            free_token(&s.h, t[3]).map_err(|e| format!("free: {e}"))?;
            quiet_check(&s.h).map(drop)
        },
    );
    drop(p2);
    race::record("consolidate × free", result, race::all_back(&s.h));
}

#[test]
fn consolidate_x_allocate() {
    let s = seg("race-consolidate-alloc");
    let p2 = s.peer();
    let result = race::pair(
        &cfg(),
        |round| {
            // Eight blocks; six go back to the index, two stay live with a pattern.
            let mut keep = Vec::new();
            for i in 0..8u64 {
                let mut b = s.h.allocate::<u64>().map_err(|e| e.to_string())?;
                if i % 4 == 1 {
                    s.h.write_pod(&mut b, round ^ i)
                        .map_err(|e| e.to_string())?;
                    keep.push((b, round ^ i));
                } else {
                    s.h.free(b).map_err(|e| e.to_string())?;
                }
            }
            s.h.matrix().flush_thread_cache();
            Ok(keep)
        },
        |_| s.h.consolidate(),
        |_| -> Result<BlockToken, String> {
            let mut b = p2.allocate::<u64>().map_err(|e| e.to_string())?;
            p2.write_pod(&mut b, u64::MAX).map_err(|e| e.to_string())?;
            Ok(b.token())
        },
        |_, keep, merged, fresh| {
            merged.map_err(|e| format!("consolidate: {e}"))?;
            let fresh = fresh?;
            for (b, v) in &keep {
                let now = s.h.read_pod(b).map_err(|e| e.to_string())?;
                if now != *v || b.offset() == fresh.offset() {
                    return Err(format!(
                        "live block {} holds {now:#x}, expected {v:#x} (new block at {})",
                        b.header_offset(),
                        fresh.offset() - 32
                    ));
                }
            }
            quiet_check(&s.h)?;
            for (b, _) in keep {
                s.h.free(b).map_err(|e| format!("free: {e}"))?;
            }
            free_token(&s.h, fresh).map_err(|e| format!("free: {e}"))?;
            Ok(())
        },
    );
    drop(p2);
    race::record("consolidate × allocate", result, race::all_back(&s.h));
}

#[test]
fn consolidate_x_consolidate() {
    let s = seg("race-consolidate-consolidate");
    let p2 = s.peer();
    let result = race::pair(
        &cfg(),
        |_| {
            let t: Vec<BlockToken> = (0..6)
                .map(|_| alloc_token(&s.h))
                .collect::<Result<_, _>>()?;
            for &x in &t[..5] {
                free_token(&s.h, x).map_err(|e| e.to_string())?;
            }
            s.h.matrix().flush_thread_cache();
            Ok(t[5])
        },
        |_| s.h.consolidate(),
        |_| p2.consolidate(),
        |_, last, a, b| {
            a.map_err(|e| format!("consolidate: {e}"))?;
            b.map_err(|e| format!("consolidate: {e}"))?;
            quiet_check(&s.h)?;
            free_token(&s.h, last).map_err(|e| format!("free: {e}"))
        },
    );
    drop(p2);
    race::record("consolidate × consolidate", result, race::all_back(&s.h));
}

// ------------------------------------------------- detach, exit, fork, look

/// A participant's last handle dropped on one thread while another thread of
/// it exits with blocks in its cache: the exit flushes them to the index
/// while the detach lets a recovery take them back.
#[test]
fn detach_x_thread_exit() {
    let name = SegmentName::new("race-detach-exit");
    // 1 MiB: a thread cache holds up to 1/16 of the arena.
    let s = Seg {
        h: MatrixHandler::create(name.as_str(), 1 << 20).expect("create segment"),
        name,
    };
    let result = race::pair(
        &defect_cfg(
            RaceConfig {
                fresh_thread: true,
                ..cfg()
            },
            20,
        ),
        |_| {
            let d = s.peer();
            let shared = d.share();
            Ok((
                Mutex::new(Some(d)),
                Mutex::new(Some(shared)),
                AtomicBool::new(false),
            ))
        },
        // The last handle goes once the exiting thread dropped its own, and
        // a recovery follows at once, while the exit flushes the cache.
        |(d, _, dropped)| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !dropped.load(SeqCst) && Instant::now() < deadline {
                std::hint::spin_loop();
            }
            for _ in 0..fastrand::u32(0..256) {
                std::hint::spin_loop();
            }
            drop(d.lock().unwrap().take());
            s.h.recover()
        },
        |(_, shared, dropped)| -> Result<(), String> {
            let h: SharedHandler = shared.lock().unwrap().take().expect("the handle");
            // Enough cached blocks that the exit's flush takes a while.
            let blocks = (0..192)
                .map(|i| h.allocate_slice::<u8>(16 + 16 * (i % 6)))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            for b in blocks {
                h.free(b).map_err(|e| e.to_string())?;
            }
            drop(h);
            dropped.store(true, SeqCst);
            Ok(()) // the thread exits now, flushing its cache
        },
        |_, _, rec, exited| {
            rec.map_err(|e| format!("recover: {e}"))?;
            exited?;
            // Whoever dropped the last handle, the slot is detached now.
            s.h.recover().map_err(|e| format!("recover: {e}"))?;
            quiet_check(&s.h).map(drop)
        },
    );
    race::record(
        "detach (drop handler) × thread exit",
        result,
        race::all_back(&s.h),
    );
}

/// A thread's `LocalHandler` dropped (flushing the blocks it cached) while
/// another thread drops the participant's last other handle and recovers:
/// the local handle keeps the attachment, so the slot is detached only
/// after its flush, and no block ends up both flushed and reclaimed.
#[test]
fn local_flush_on_drop_x_detach_recover() {
    let name = SegmentName::new("race-local-drop-detach");
    // 1 MiB: a cache holds up to 1/16 of the arena.
    let s = Seg {
        h: MatrixHandler::create(name.as_str(), 1 << 20).expect("create segment"),
        name,
    };
    let result = race::pair(
        &RaceConfig {
            fresh_thread: true,
            ..cfg()
        },
        |_| {
            let d = s.peer();
            let shared = d.share();
            Ok((
                Mutex::new(Some(d)),
                Mutex::new(Some(shared)),
                AtomicBool::new(false),
            ))
        },
        |(d, _, dropped)| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !dropped.load(SeqCst) && Instant::now() < deadline {
                std::hint::spin_loop();
            }
            for _ in 0..fastrand::u32(0..256) {
                std::hint::spin_loop();
            }
            drop(d.lock().unwrap().take());
            s.h.recover()
        },
        |(_, shared, dropped)| -> Result<(), String> {
            let h: SharedHandler = shared.lock().unwrap().take().expect("the handle");
            let mut local = h.local();
            drop(h);
            // Enough cached blocks that the drop's flush takes a while.
            let blocks = (0..192)
                .map(|i| local.allocate_raw(16 + 16 * (i % 6)))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            for b in blocks {
                local.free_raw(b).map_err(|e| e.to_string())?;
            }
            dropped.store(true, SeqCst);
            drop(local); // flushes while the other side detaches and recovers
            Ok(())
        },
        |_, _, rec, flushed| {
            rec.map_err(|e| format!("recover: {e}"))?;
            flushed?;
            // The local handle was the last: the slot is detached now.
            s.h.recover().map_err(|e| format!("recover: {e}"))?;
            quiet_check(&s.h).map(drop)
        },
    );
    race::record(
        "local flush on drop × detach + recover",
        result,
        race::all_back(&s.h),
    );
}

#[test]
fn observer_x_allocate_free() {
    let s = seg("race-observer");
    let observer = Observer::open(s.name.as_str()).expect("observer");
    let p2 = s.peer();
    let arena = s.h.segment_size() as u64;
    let result = race::pair(
        &cfg(),
        |_| Ok(()),
        |_| -> Result<(u64, u64), String> {
            let stats = observer.stats();
            let mut walked = 0u64;
            for b in observer.blocks().take(1 << 16) {
                match b {
                    Ok(b) => {
                        if b.offset as u64 + b.size as u64 > arena {
                            return Err(format!("the walk reports a block past the end: {b:?}"));
                        }
                        walked += b.size as u64;
                    }
                    Err(_) => break, // a typed error on a moving chain
                }
            }
            let total = stats.map(|s| s.used_bytes + s.free_bytes).unwrap_or(0);
            Ok((walked, total))
        },
        |_| -> Result<(), String> {
            let blocks = (0..4)
                .map(|i| p2.allocate_slice::<u8>(16 << i))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            for b in blocks {
                p2.free(b).map_err(|e| e.to_string())?;
            }
            Ok(())
        },
        |round, _, seen, allocated| {
            allocated?;
            let (walked, total) = seen?;
            if walked > arena || total > arena {
                return Err(format!(
                    "the observer saw {walked} B of blocks / {total} B in stats in a {arena} B segment"
                ));
            }
            if round % 256 == 0 {
                quiet_check(&s.h)?;
            }
            Ok(())
        },
    );
    drop(p2);
    race::record("Observer × allocate/free", result, race::all_back(&s.h));
}

/// fork() while a sibling thread allocates; the child drops the handle it
/// inherited and exits. The parent's participant must stay alive and keep
/// every block.
#[test]
fn fork_child_drop_x_parent_allocate() {
    let s = seg("race-fork");
    let pf = s.peer();
    let of = pf.matrix().owner_id();
    let c = cfg();
    let result = race::pair(
        &RaceConfig {
            budget: c.budget.min(Duration::from_millis(1500)),
            ..c.clone()
        },
        |_| alloc_token(&pf),
        |_| -> Result<(), String> {
            for _ in 0..16 {
                let b = pf.allocate::<u64>().map_err(|e| e.to_string())?;
                pf.free(b).map_err(|e| e.to_string())?;
            }
            Ok(())
        },
        |_| -> Result<(), String> {
            // SAFETY: fork has no memory preconditions; the child below only
            // drops its copy of the handle and leaves with _exit.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // SAFETY: in the child, `pf` is this process's own copy of
                // the parent's handle; reading it out and dropping it runs
                // the handle's drop here only (the parent's copy is untouched).
                drop(unsafe { std::ptr::read(&pf) });
                // SAFETY: _exit ends the child without running the parent's
                // atexit handlers or destructors.
                unsafe { libc::_exit(0) };
            }
            if pid < 0 {
                return Err("fork failed".into());
            }
            let deadline = std::time::Instant::now() + c.timeout;
            loop {
                let mut status = 0;
                // SAFETY: waits for our own child; `status` is a valid out-pointer.
                let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
                if r == pid {
                    return Ok(());
                }
                if std::time::Instant::now() >= deadline {
                    // SAFETY: kills and reaps our own child.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                        libc::waitpid(pid, &mut status, 0);
                    }
                    return Err("the fork child did not exit".into());
                }
                std::thread::sleep(Duration::from_micros(100));
            }
        },
        |_, t, allocs, forked| {
            allocs?;
            forked?;
            let info = s.h.matrix().participants();
            let slot = info.iter().find(|p| p.owner == of);
            let rec = s.h.recover().map_err(|e| format!("recover: {e}"))?;
            let (st, _, owner) = words(&s.h, t.offset());
            if rec.participants != 0 || st != ALLOCATED || owner != of {
                return Err(format!(
                    "after the fork child dropped its inherited handle: the parent's slot is \
                     {slot:?}; recover() reclaimed {} participants / {} blocks; the parent's \
                     live block is {} owned by {:#x}",
                    rec.participants,
                    rec.blocks,
                    state::state_name(st),
                    owner.0
                ));
            }
            free_token(&pf, t).map_err(|e| format!("free: {e}"))
        },
    );
    // Every round was a forked child.
    let result = race::in_processes(result);
    drop(pf);
    race::record(
        "fork + child drop × parent allocate",
        result,
        race::all_back(&s.h),
    );
}
