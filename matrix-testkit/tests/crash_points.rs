//! Every kill window, deterministically: a child arms one crash point of
//! matrix-core (feature `fault-injection`), runs a workload until it
//! SIGKILLs itself there, and the parent checks what is left: an online
//! `recover()` + `consolidate()` — while another thread of the parent keeps
//! allocating and freeing — reclaims the dead participant, strands nothing,
//! and gives back the whole arena as one block; no `repair()` is needed.
//! The resize points run a child that keeps resizing segment-owned
//! blocks: after the kill and the recovery each of them is live exactly
//! once, with its bytes.
//! A second test kills children 1–4 ms into their life, while they are still
//! filling the segment, with the same bar.
//! `harness = false`: children re-execute this binary.

use matrix_core::fault;
use matrix_handler::{HandlerFunctions, MatrixHandler};
use matrix_testkit::audit;
use matrix_testkit::segment::SegmentName;
use matrix_testkit::stress::child::{env_var, Launcher};
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

const ROLE: &str = "crash-point";
const FILLER: &str = "early-filler";
const RESIZER: &str = "resizer";
/// Blocks the resizer child keeps resizing; each is owned by the segment,
/// so a kill must leave each of them live exactly once.
const RESIZED: u64 = 12;

/// The child: open the segment, arm the point, and churn until killed.
fn child() -> Result<(), String> {
    let name: String = env_var("MTK_SEGMENT")?;
    let point: u32 = env_var("MTK_POINT")?;
    let skip: u32 = env_var("MTK_SKIP")?;
    if point == fault::ATTACH_CLAIMED {
        fault::arm(point, skip);
    }
    let h = MatrixHandler::open(&name).map_err(|e| e.to_string())?;
    fault::arm(point, skip);
    let mut rng = fastrand::Rng::with_seed(point as u64 * 100 + skip as u64);
    let mut live = Vec::new();
    for round in 0..2_000 {
        for _ in 0..24 {
            let n = if rng.u32(0..8) == 0 {
                rng.usize(2048..40_000)
            } else {
                rng.usize(0..1024)
            };
            if let Ok(b) = h.allocate_slice::<u8>(n) {
                live.push(b);
            }
        }
        // Free a random half, and the newest block (which borders the
        // wilderness) so consolidations retract.
        for _ in 0..live.len() / 2 {
            let b = live.swap_remove(rng.usize(0..live.len()));
            h.free(b).map_err(|e| e.to_string())?;
        }
        if let Some(b) = live.pop() {
            h.free(b).map_err(|e| e.to_string())?;
        }
        if round % 3 == 2 {
            h.consolidate().map_err(|e| e.to_string())?;
        }
    }
    // The detach point is reached when the handle goes.
    drop(live);
    drop(h);
    Err(format!(
        "crash point {point} (skip {skip}) was never reached"
    ))
}

/// The resizer child: `RESIZED` segment-owned blocks, each tagged with
/// its id, resized at random (shrinks, grows at `top`, grows into freed
/// neighbours, moves) among filler blocks it allocates and frees, until
/// the armed point kills it.
fn resizer() -> Result<(), String> {
    use matrix_core::{OwnerId, BLOCK_HEADER_SIZE};
    let name: String = env_var("MTK_SEGMENT")?;
    let point: u32 = env_var("MTK_POINT")?;
    let skip: u32 = env_var("MTK_SKIP")?;
    let h = MatrixHandler::open(&name).map_err(|e| e.to_string())?;
    let m = h.matrix();
    let mut rng = fastrand::Rng::with_seed(point as u64 * 100 + skip as u64);
    let mut kept = Vec::new();
    for id in 0..RESIZED {
        let off = m.allocate(64, 0).map_err(|e| e.to_string())?.offset() - BLOCK_HEADER_SIZE;
        m.set_owner(off, None, OwnerId::SEGMENT)
            .map_err(|e| e.to_string())?;
        write_id(m, off, id);
        let generation = m
            .blocks()
            .flatten()
            .find(|b| b.offset == off)
            .map(|b| b.generation);
        kept.push((off, generation.ok_or("block not in the chain")?));
    }
    fault::arm(point, skip);
    let mut filler = Vec::new();
    for round in 0..20_000u32 {
        if filler.len() < 24 {
            let n = if rng.bool() {
                rng.u64(40_000..90_000)
            } else {
                rng.u64(16..2000)
            };
            if let Ok(p) = m.allocate(n, 0) {
                filler.push(p.offset() - BLOCK_HEADER_SIZE);
            }
        }
        if rng.u32(0..3) == 0 && !filler.is_empty() {
            let off = filler.swap_remove(rng.usize(0..filler.len()));
            m.free(off, None).map_err(|e| e.to_string())?;
        }
        if round % 16 == 0 {
            m.flush_thread_cache();
        }
        // Every fourth round the highest kept block grows a little: it is
        // often the last one, so `top` moves (the wilderness path).
        let (i, to) = if round % 4 == 0 {
            let i = (0..kept.len()).max_by_key(|&i| kept[i].0).unwrap_or(0);
            let size = m.block_header(kept[i].0).map_or(64, |(_, s)| s as u64);
            (i, (size + rng.u64(0..4000)).min(60_000))
        } else {
            (rng.usize(0..kept.len()), rng.u64(16..60_000))
        };
        let (off, generation) = kept[i];
        match m.reallocate(off, generation, to) {
            Ok(r) => kept[i] = (r.offset, r.generation),
            Err(matrix_core::ReallocError::Alloc(_)) => {}
            Err(e) => return Err(format!("reallocate: {e}")),
        }
    }
    Err(format!(
        "crash point {point} (skip {skip}) was never reached"
    ))
}

fn write_id(m: &matrix_core::AtomicMatrix, header: u32, id: u64) {
    let p = m
        .base_ptr()
        .wrapping_add((header + matrix_core::BLOCK_HEADER_SIZE) as usize);
    // SAFETY: a live block of this mapping with at least 16 payload bytes,
    // written by its only user; unaligned writes need no alignment.
    unsafe {
        (p as *mut u64).write_unaligned(id);
        (p.add(8) as *mut u64).write_unaligned(!id);
    }
}

fn read_id(m: &matrix_core::AtomicMatrix, header: u32) -> Option<u64> {
    let p = m
        .base_ptr()
        .wrapping_add((header + matrix_core::BLOCK_HEADER_SIZE) as usize);
    // SAFETY: as in `write_id`; the block is live and nobody writes it now.
    let (a, b) = unsafe {
        (
            (p as *const u64).read_unaligned(),
            (p.add(8) as *const u64).read_unaligned(),
        )
    };
    (a == !b).then_some(a)
}

/// After the resizer's kill and the recovery: every segment-owned block
/// must be live exactly once with its id intact (never both old and new,
/// never neither); they are freed so the arena can be checked whole.
fn resized_blocks_survive_once(h: &MatrixHandler) -> Result<(), String> {
    let m = h.matrix();
    let mut seen = Vec::new();
    for b in m.blocks() {
        let b = b.map_err(|e| e.to_string())?;
        if b.owner == matrix_core::OwnerId::SEGMENT && matrix_core::state::is_live(b.state) {
            seen.push((read_id(m, b.offset), b.offset, b.generation));
        }
        if b.state == matrix_core::state::RESIZING {
            return Err(format!("block {} still RESIZING after recovery", b.offset));
        }
    }
    let mut ids: Vec<Option<u64>> = seen.iter().map(|s| s.0).collect();
    ids.sort();
    let want: Vec<Option<u64>> = (0..RESIZED).map(Some).collect();
    if ids != want {
        return Err(format!(
            "segment-owned blocks after recovery: {ids:?}, want each of 0..{RESIZED} once"
        ));
    }
    for (_, off, generation) in seen {
        m.free(off, Some(generation)).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn point_name(p: u32) -> &'static str {
    match p {
        fault::REALLOC_HELD => "REALLOC_HELD",
        fault::REALLOC_SHRINKING => "REALLOC_SHRINKING",
        fault::REALLOC_TOP_MOVED => "REALLOC_TOP_MOVED",
        fault::REALLOC_NEIGHBOUR_POPPED => "REALLOC_NEIGHBOUR_POPPED",
        fault::REALLOC_NEIGHBOUR_SPLIT => "REALLOC_NEIGHBOUR_SPLIT",
        fault::REALLOC_ABSORBING => "REALLOC_ABSORBING",
        fault::REALLOC_SIZED => "REALLOC_SIZED",
        fault::REALLOC_COPIED => "REALLOC_COPIED",
        fault::REALLOC_MOVE_RECORDED => "REALLOC_MOVE_RECORDED",
        fault::REALLOC_COMMITTED => "REALLOC_COMMITTED",
        fault::REALLOC_HANDED => "REALLOC_HANDED",
        fault::ALLOC_POPPED => "ALLOC_POPPED",
        fault::ALLOC_SPLITTING => "ALLOC_SPLITTING",
        fault::CARVED => "CARVED",
        fault::CARVE_WRITTEN => "CARVE_WRITTEN",
        fault::RETIRED => "RETIRED",
        fault::RELEASE_OWNER => "RELEASE_OWNER",
        fault::RELEASE_FREE => "RELEASE_FREE",
        fault::CONSOLIDATE_POPPED => "CONSOLIDATE_POPPED",
        fault::CONSOLIDATE_MERGING => "CONSOLIDATE_MERGING",
        fault::RETRACTING => "RETRACTING",
        fault::CACHE_TAKEN => "CACHE_TAKEN",
        fault::ATTACH_CLAIMED => "ATTACH_CLAIMED",
        fault::DETACHING => "DETACHING",
        _ => "?",
    }
}

/// Kills a child at `point` (its `skip + 1`-th arrival) and checks the aftermath.
/// Returns the number of blocks the kill stranded.
fn kill_at(point: u32, skip: u32) -> Result<u64, String> {
    let name = SegmentName::new("crashpt");
    let h = MatrixHandler::create(name.as_str(), 4 << 20).map_err(|e| e.to_string())?;
    let launcher = Launcher::current_exe().map_err(|e| e.to_string())?;
    let resizing = fault::REALLOC.contains(&point);
    let mut child = launcher
        .spawn(
            if resizing { RESIZER } else { ROLE },
            &[
                ("MTK_SEGMENT", name.as_str().to_owned()),
                ("MTK_POINT", point.to_string()),
                ("MTK_SKIP", skip.to_string()),
            ],
        )
        .map_err(|e| e.to_string())?;
    let status = child
        .wait_timeout(Duration::from_secs(60))
        .map_err(|e| e.to_string())?;
    match status {
        Some(s) if s.signal() == Some(libc::SIGKILL) => {}
        Some(s) => return Err(format!("child did not die at the point: {s}")),
        None => return Err("child still running after 60 s".into()),
    }
    if resizing {
        check_online_recovery_keeping(&h, resized_blocks_survive_once)
    } else {
        check_online_recovery(&h)
    }
}

/// The parent's side after a kill: recover and consolidate online while a
/// second participant allocates and frees, then require that nothing is
/// stranded and the arena comes back whole (≥ 99 % of it allocatable as one
/// block) without `repair()`. Returns the stranded blocks (0 on success).
fn check_online_recovery(h: &MatrixHandler) -> Result<u64, String> {
    check_online_recovery_keeping(h, |_| Ok(()))
}

/// [`check_online_recovery`], with `kept` run right after the recovery to
/// check (and free) the blocks that were meant to survive the kill.
fn check_online_recovery_keeping(
    h: &MatrixHandler,
    kept: impl Fn(&MatrixHandler) -> Result<(), String>,
) -> Result<u64, String> {
    let initial = h.matrix().segment_size() as u64 - h.first_block_offset() as u64 - 32;
    let other =
        MatrixHandler::open(h.matrix().name().expect("named")).map_err(|e| e.to_string())?;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let result = std::thread::scope(|scope| {
        let churn = scope.spawn(|| {
            let mut rng = fastrand::Rng::with_seed(99);
            let mut live = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if live.len() < 64 {
                    if let Ok(b) = other.allocate_slice::<u8>(rng.usize(16..600)) {
                        live.push(b);
                    }
                } else {
                    let b = live.swap_remove(rng.usize(0..live.len()));
                    other.free(b).map_err(|e| e.to_string())?;
                }
            }
            for b in live {
                other.free(b).map_err(|e| e.to_string())?;
            }
            other.matrix().flush_thread_cache();
            Ok::<(), String>(())
        });
        let rec = h.recover().map_err(|e| format!("recover: {e}"));
        let consolidated = h.consolidate().map_err(|e| format!("consolidate: {e}"));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let churned = churn
            .join()
            .map_err(|_| "churn thread panicked".to_string());
        (rec, consolidated, churned)
    });
    let rec = result.0?;
    result.1?;
    result.2??;
    kept(h)?;
    if rec.participants != 1 {
        return Err(format!(
            "recover reclaimed {} participants: {rec:?}",
            rec.participants
        ));
    }
    drop(other);
    h.recover()
        .map_err(|e| format!("recover of the churn participant: {e}"))?;
    h.consolidate().map_err(|e| e.to_string())?;
    let a = audit(h.matrix());
    let hard: Vec<String> = a.hard_violations().map(|v| v.to_string()).collect();
    if !hard.is_empty() {
        return Err(format!("after recovery: {}", hard.join("; ")));
    }
    let stranded = a.report.stranded_blocks;
    let largest = h.stats().map_err(|e| e.to_string())?.largest_free as u64;
    if stranded != 0 || a.report.used_bytes != 0 || largest * 100 < initial * 99 {
        return Err(format!(
            "online recovery left {stranded} stranded block(s), {} used bytes, largest free \
             {largest} of {initial}: {:?}",
            a.report.used_bytes, a.violations
        ));
    }
    Ok(stranded)
}

/// The child of the early-kill test: open the segment and fill it with
/// small blocks as fast as it can, until killed.
fn filler() -> Result<(), String> {
    let name: String = env_var("MTK_SEGMENT")?;
    let seed: u64 = env_var("MTK_SKIP")?;
    let h = MatrixHandler::open(&name).map_err(|e| e.to_string())?;
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut live = Vec::new();
    loop {
        match h.allocate_slice::<u8>(rng.usize(32..=256)) {
            Ok(b) => live.push(b),
            Err(_) => {
                for b in live.drain(..).rev().step_by(2) {
                    h.free(b).map_err(|e| e.to_string())?;
                }
            }
        }
        if rng.u32(0..16) == 0 && !live.is_empty() {
            let b = live.swap_remove(rng.usize(0..live.len()));
            h.free(b).map_err(|e| e.to_string())?;
        }
    }
}

/// A participant killed 1–4 ms after it opened the segment, while it is
/// still filling it by splitting one large free block (remainders in
/// flight): the online recovery gives the whole arena back every time.
fn kills_early_in_a_participants_life_strand_nothing() {
    let kills: u32 = std::env::var("MTK_EARLY_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let mut failures = Vec::new();
    let mut rng = fastrand::Rng::with_seed(4);
    for i in 0..kills {
        let outcome = (|| -> Result<u64, String> {
            let name = SegmentName::new("earlykill");
            let h = MatrixHandler::create(name.as_str(), 16 << 20).map_err(|e| e.to_string())?;
            // Most of the arena as one free block in the index (a small block
            // after it keeps it from returning to the wilderness): the
            // child's first allocations split it, again and again.
            let big = h
                .allocate_slice::<u8>(15 << 20)
                .map_err(|e| e.to_string())?;
            let pin = h.allocate_slice::<u8>(64).map_err(|e| e.to_string())?;
            h.free(big).map_err(|e| e.to_string())?;
            h.matrix().flush_thread_cache();
            let launcher = Launcher::current_exe().map_err(|e| e.to_string())?;
            let mut child = launcher
                .spawn(
                    FILLER,
                    &[
                        ("MTK_SEGMENT", name.as_str().to_owned()),
                        ("MTK_SKIP", i.to_string()),
                    ],
                )
                .map_err(|e| e.to_string())?;
            // Wait until the child has attached, then let it run 1–4 ms.
            let attached = std::time::Instant::now();
            while h.matrix().participants().len() < 2 {
                if attached.elapsed() > Duration::from_secs(30) {
                    return Err("child never attached".into());
                }
                std::thread::yield_now();
            }
            std::thread::sleep(Duration::from_micros(rng.u64(1_000..4_000)));
            child.kill().map_err(|e| e.to_string())?;
            h.free(pin).map_err(|e| e.to_string())?;
            check_online_recovery(&h)
        })();
        if let Err(e) = outcome {
            failures.push(format!("kill {i}: {e}"));
        }
    }
    println!("    {kills} early kills, {} failed", failures.len());
    assert!(failures.is_empty(), "{failures:#?}");
}

fn every_window_recovers_online_and_strands_nothing() {
    let mut failures = Vec::new();
    // MTK_ONLY=<point number> runs one point (for debugging a window).
    let only: Option<u32> = std::env::var("MTK_ONLY").ok().and_then(|v| v.parse().ok());
    for point in fault::ALL
        .into_iter()
        .chain(fault::REALLOC)
        .filter(|p| only.is_none_or(|o| o == *p))
    {
        let mut stranded = Vec::new();
        // Attach and detach happen once per child.
        let skips: &[u32] = if point == fault::ATTACH_CLAIMED || point == fault::DETACHING {
            &[0, 0, 0]
        } else {
            &[0, 3, 17]
        };
        for &skip in skips {
            match kill_at(point, skip) {
                Ok(s) => stranded.push(s),
                Err(e) => failures.push(format!("{} (skip {skip}): {e}", point_name(point))),
            }
        }
        println!(
            "    {:<20} stranded per kill {stranded:?}",
            point_name(point)
        );
        if stranded.iter().any(|&s| s > 0) {
            failures.push(format!(
                "{}: a kill stranded blocks: {stranded:?}",
                point_name(point)
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

fn main() {
    let role = std::env::var(matrix_testkit::stress::child::ENV_ROLE);
    if role.as_deref() == Ok(ROLE)
        || role.as_deref() == Ok(FILLER)
        || role.as_deref() == Ok(RESIZER)
    {
        matrix_testkit::stress::child::bind_to_parent();
        let outcome = match role.as_deref() {
            Ok(ROLE) => child(),
            Ok(RESIZER) => resizer(),
            _ => filler(),
        };
        if let Err(e) = outcome {
            eprintln!("crash-point child: {e}");
            std::process::exit(2);
        }
        std::process::exit(0);
    }
    let tests: [(&str, fn()); 2] = [
        (
            "every_window_recovers_online_and_strands_nothing",
            every_window_recovers_online_and_strands_nothing,
        ),
        (
            "kills_early_in_a_participants_life_strand_nothing",
            kills_early_in_a_participants_life_strand_nothing,
        ),
    ];
    matrix_testkit::stress::run_tests(&tests);
}
