//! WorkerPool: every job runs once, panics are reported without killing the
//! pool, shutdown drains, join waits for close.

use matrix_handler::{HandlerFunctions, MatrixHandler};
use matrix_internals::{WorkQueue, WorkerPool};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn every_job_runs_once_and_join_waits_for_close() {
    let h = MatrixHandler::bootstrap(None, 8 << 20).unwrap();
    let q = WorkQueue::<u64, _>::create(h.share(), "jobs", 256).unwrap();
    let sum = Arc::new(AtomicU64::new(0));
    let seen = sum.clone();
    let pool = WorkerPool::start(q.clone(), 4, move |h, block| {
        seen.fetch_add(h.read_pod(&block).unwrap(), Ordering::Relaxed);
        h.free(block).unwrap();
    })
    .unwrap();
    for i in 1..=20_000u64 {
        let mut b = h.allocate::<u64>().unwrap();
        h.write_pod(&mut b, i).unwrap();
        q.push_timeout(b, WAIT).unwrap();
    }
    q.close();
    let report = pool.join();
    assert_eq!(report.completed, 20_000);
    assert!(report.panics.is_empty() && report.corrupted.is_empty());
    assert_eq!(sum.load(Ordering::Relaxed), 20_000 * 20_001 / 2);
}

#[test]
fn a_panicking_job_is_reported_and_the_pool_carries_on() {
    let h = MatrixHandler::bootstrap(None, 8 << 20).unwrap();
    let q = WorkQueue::<u64, _>::create(h.share(), "jobs", 64).unwrap();
    let pool = WorkerPool::start(q.clone(), 2, |h, block| {
        let v = h.read_pod(&block).unwrap();
        h.free(block).unwrap();
        if v % 10 == 0 {
            panic!("job {v} refuses to run");
        }
    })
    .unwrap();
    for i in 1..=100u64 {
        let mut b = h.allocate::<u64>().unwrap();
        h.write_pod(&mut b, i).unwrap();
        q.push_timeout(b, WAIT).unwrap();
    }
    q.close();
    let report = pool.join();
    assert_eq!(report.completed, 90);
    let mut failed: Vec<String> = report.panics.iter().map(|p| p.message.clone()).collect();
    failed.sort();
    assert_eq!(failed.len(), 10);
    assert!(
        failed
            .iter()
            .all(|m| m.starts_with("job ") && m.ends_with("0 refuses to run")),
        "{failed:?}"
    );
    assert!(report
        .panics
        .iter()
        .all(|p| p.worker < 2 && p.block.word() != 0));
}

#[test]
fn shutdown_drains_what_is_queued() {
    let h = MatrixHandler::bootstrap(None, 8 << 20).unwrap();
    let q = WorkQueue::<u64, _>::create(h.share(), "jobs", 2048).unwrap();
    let gate = Arc::new(std::sync::Barrier::new(2));
    let (done, g) = (Arc::new(AtomicU64::new(0)), gate.clone());
    let counted = done.clone();
    // The single worker holds its first job until the queue is full.
    let pool = WorkerPool::start(q.clone(), 1, move |h, block| {
        if h.read_pod(&block).unwrap() == 0 {
            g.wait();
        }
        counted.fetch_add(1, Ordering::Relaxed);
        h.free(block).unwrap();
    })
    .unwrap();
    for i in 0..1000u64 {
        let mut b = h.allocate::<u64>().unwrap();
        h.write_pod(&mut b, i).unwrap();
        q.push_timeout(b, WAIT).unwrap();
    }
    gate.wait();
    let report = pool.shutdown();
    assert_eq!(report.completed, 1000, "shutdown drained the queue first");
    assert_eq!(done.load(Ordering::Relaxed), 1000);
    assert!(q.is_empty());
    assert!(!q.is_closed(), "shutdown stops the pool, not the queue");
}
