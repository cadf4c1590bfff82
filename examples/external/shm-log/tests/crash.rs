//! The log under the testkit's open harnesses: SIGKILLed producers, threads,
//! and hostile bytes. A `harness = false` binary: children re-execute it in
//! the registered worker role.

use matrix_handler::{HandlerFunctions, MatrixHandler};
use matrix_testkit::stress::{
    register_worker, run_child_role, run_crash_on, run_hostile_on, run_tests, run_threads_on,
    CheckPoint, Launcher, WorkerContext, WorkloadConfig,
};
use matrix_testkit::{check_invariants_with, SegmentName, Violation};
use shm_log::{LogError, ShmLog};
use std::collections::HashSet;
use std::time::Duration;

const LOG: &str = "orders";
const APPENDER: &str = "log-appender";

/// A producer: appends numbered messages until the harness says stop.
fn appender(cx: &WorkerContext<'_>) -> Result<(), String> {
    let (log, _) = ShmLog::open_or_create(cx.handler(), LOG).map_err(|e| e.to_string())?;
    let mut n = 0u64;
    while cx.keep_going() {
        let text = format!("{}:{n}", cx.seed());
        match log.append(cx.seed(), text.as_bytes()) {
            Ok(_) => n += 1,
            // A full segment is the workload's normal end; keep parking.
            Err(LogError::Handler(matrix_handler::HandlerError::AllocationFailed(_))) => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

/// The log's invariants and the allocator's, through the checker's hook.
fn check_log(h: &MatrixHandler) -> Result<usize, String> {
    let log = ShmLog::open(h, LOG).map_err(|e| e.to_string())?;
    log.recover().map_err(|e| format!("log recovery: {e}"))?;
    check_invariants_with(h, |_, chain| {
        let blocks = chain
            .iter()
            .map(|c| (c.offset, c.state, c.owner, c.type_tag));
        log.check(blocks)
            .map_err(|(offset, what)| Violation::structure(offset, what))
    })
    .map_err(|v| v.to_string())?;
    let messages = log.read_all().map_err(|e| e.to_string())?;
    let seqs: HashSet<u64> = messages.iter().map(|m| m.seq).collect();
    if seqs.len() != messages.len() {
        return Err("a sequence number appears twice".into());
    }
    for m in &messages {
        let text = String::from_utf8(m.data.clone()).map_err(|_| "not text")?;
        if !text.starts_with(&format!("{}:", m.producer)) {
            return Err(format!("message {} reads {text:?}", m.seq));
        }
    }
    Ok(messages.len())
}

fn crash_100_kills() {
    let name = SegmentName::new("shmlog-crash");
    let h = MatrixHandler::create(name.as_str(), 8 << 20).expect("create");
    ShmLog::open_or_create(&h, LOG).expect("log");
    let cfg = WorkloadConfig {
        workers: 2,
        kills: 100,
        gap: (Duration::from_millis(1), Duration::from_millis(6)),
        seed: 7,
        ..WorkloadConfig::default()
    };
    let mut finished_by_recovery = 0;
    let mut left_in_user_states = 0;
    let mut total_messages = 0;
    let mut check = |h: &MatrixHandler, point: &CheckPoint| -> Result<(), String> {
        if let CheckPoint::AfterKill { recovery, .. } = point {
            left_in_user_states += recovery.user_state_blocks.len();
            let log = ShmLog::open(h, LOG).map_err(|e| e.to_string())?;
            let r = log.recover().map_err(|e| e.to_string())?;
            finished_by_recovery += r.finished + r.freed;
            let n = check_log(h)?;
            // The survivors are parked: a quiescent moment to empty the log,
            // so that the producers keep appending instead of finding the
            // segment full.
            if n > 8_000 {
                total_messages += log.clear().map_err(|e| e.to_string())?;
            }
            return Ok(());
        }
        check_log(h).map(|_| ())
    };
    let launcher = Launcher::current_exe().expect("launcher");
    let report =
        run_crash_on(name.as_str(), &h, &cfg, &launcher, APPENDER, &mut check).expect("crash run");
    assert_eq!(report.kills, 100);
    assert_eq!(report.checks, 101);
    let log = ShmLog::open(&h, LOG).expect("log");
    let messages = log.read_all().expect("read");
    let total = total_messages + messages.len() as u64;
    assert!(total > 1000, "only {total} messages");
    println!(
        "  {} kills, {} messages, {} nodes left in user states by recover(), {} settled by the log's recovery, {} blocks freed by recover()",
        report.kills,
        total,
        left_in_user_states,
        finished_by_recovery,
        report.recovered_blocks
    );
    // Everything the log holds goes back.
    log.clear().expect("clear");
    let kept: Vec<_> = matrix_internals::blocks(&h)
        .map(|b| b.expect("walk"))
        .filter(|b| {
            b.state != matrix_handler::STATE_FREE && b.state != matrix_handler::STATE_CACHED
        })
        .collect();
    // The root registry and the log header remain, nothing else.
    assert_eq!(kept.len(), 2, "still live: {kept:?}");
}

fn threads_append() {
    let h = MatrixHandler::bootstrap(None, 4 << 20).expect("arena");
    ShmLog::open_or_create(&h, LOG).expect("log");
    let cfg = WorkloadConfig {
        workers: 4,
        duration: Duration::from_millis(300),
        ..WorkloadConfig::default()
    };
    let mut check = |h: &MatrixHandler, _: &CheckPoint| check_log(h).map(|_| ());
    let report = run_threads_on(&h, &cfg, appender, &mut check).expect("threads");
    let n = check_log(&h).expect("check");
    assert!(n > 0 && report.operations >= n as u64);
}

fn hostile_header_and_nodes() {
    let build = |h: &MatrixHandler| -> Result<(u32, u32), String> {
        let (log, _) = ShmLog::open_or_create(h, LOG).map_err(|e| e.to_string())?;
        for i in 0..8u64 {
            log.append(i, b"hostile").map_err(|e| e.to_string())?;
        }
        // The bytes to corrupt: from the header block to the last node.
        let start = log.header_block().offset() - 32;
        let end = h
            .matrix()
            .header()
            .top
            .load(std::sync::atomic::Ordering::Acquire);
        Ok((start, end - start))
    };
    let exercise = |h: &MatrixHandler, _: u32| -> Result<(), LogError> {
        let log = ShmLog::open(h, LOG)?;
        log.read_all()?;
        log.recover()?;
        Ok(())
    };
    let outcome = run_hostile_on(300, 11, 1 << 20, build, exercise).expect("hostile");
    assert_eq!(outcome.cases, 300);
    assert!(
        outcome.refused > 0,
        "no corruption was ever noticed: {outcome:?}"
    );
}

fn main() {
    register_worker(APPENDER, appender);
    if let Some(code) = run_child_role() {
        std::process::exit(code);
    }
    run_tests(&[
        ("crash_100_kills", crash_100_kills),
        ("threads_append", threads_append),
        ("hostile_header_and_nodes", hostile_header_and_nodes),
    ]);
}
