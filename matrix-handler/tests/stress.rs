//! Two threads sharing one handler: 2,000,000 pattern-checked operations.

mod common;

use common::assert_consistent;
use matrix_handler::{HandlerFunctions, MatrixHandler, SharedHandler};

/// Fills a payload with a pattern naming its owner thread and block.
fn pattern(owner: u64, serial: u64, i: usize) -> u8 {
    (owner.wrapping_mul(131) ^ serial.wrapping_mul(2654435761) ^ i as u64) as u8
}

fn run(h: SharedHandler, owner: u64, ops: u64) -> (u64, u64) {
    let mut rng = fastrand::Rng::with_seed(owner * 7919 + 1);
    let mut live: Vec<(u32, usize, u64)> = Vec::new();
    let (mut mismatches, mut serial) = (0u64, 0u64);
    let base = h.base_ptr();
    let check = |off: u32, len: usize, serial: u64| -> bool {
        // SAFETY: the block is live and owned by this thread; `len` fits its payload.
        let bytes = unsafe { std::slice::from_raw_parts(base.add(off as usize), len) };
        bytes
            .iter()
            .enumerate()
            .all(|(i, &b)| b == pattern(owner, serial, i))
    };
    for _ in 0..ops {
        if live.len() < 10_000 && (live.is_empty() || rng.u32(0..100) < 70) {
            let len = rng.usize(32..=544);
            let p = h
                .allocate_raw(len as u32)
                .expect("arena sized for the live set");
            serial += 1;
            // SAFETY: freshly allocated block of at least `len` bytes, owned by this thread.
            let bytes = unsafe {
                std::slice::from_raw_parts_mut(base.add(p.offset() as usize) as *mut u8, len)
            };
            for (i, b) in bytes.iter_mut().enumerate() {
                *b = pattern(owner, serial, i);
            }
            live.push((p.offset(), len, serial));
        } else {
            let (off, len, s) = live.swap_remove(rng.usize(0..live.len()));
            mismatches += u64::from(!check(off, len, s));
            h.free_at(off - 32).unwrap();
        }
    }
    let left = live.len() as u64;
    for (off, len, s) in live {
        mismatches += u64::from(!check(off, len, s));
        h.free_at(off - 32).unwrap();
    }
    (mismatches, left)
}

#[test]
fn two_threads_two_million_mixed_ops_zero_mismatches() {
    let ops: u64 = std::env::var("MATRIX_STRESS_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let h = MatrixHandler::bootstrap(None, 64 << 20).unwrap();
    let threads: Vec<_> = (1..=2u64)
        .map(|owner| {
            let shared = h.share();
            std::thread::spawn(move || run(shared, owner, ops))
        })
        .collect();
    for t in threads {
        let (mismatches, _) = t.join().unwrap();
        assert_eq!(mismatches, 0, "a block was written by someone else");
    }
    assert_consistent(&h);
    h.consolidate().unwrap();
    let s = h.stats().unwrap();
    assert_eq!((s.used_bytes, s.free_blocks), (0, 1), "{s:?}");
    assert_consistent(&h);
}

#[test]
fn cross_thread_frees() {
    let h = MatrixHandler::bootstrap(None, 16 << 20).unwrap();
    let (tx, rx) = std::sync::mpsc::sync_channel::<u32>(1024);
    let producer = {
        let h = h.share();
        std::thread::spawn(move || {
            let mut rng = fastrand::Rng::with_seed(3);
            for i in 0..200_000u32 {
                let mut b = h.allocate_slice::<u32>(rng.usize(8..=136)).unwrap();
                let v = vec![i; b.len()];
                h.write_slice(&mut b, &v).unwrap();
                tx.send(b.offset()).unwrap();
            }
        })
    };
    let consumer = {
        let h = h.share();
        std::thread::spawn(move || {
            let mut bad = 0;
            for i in 0..200_000u32 {
                let off = rx.recv().unwrap();
                let b = h.block_at::<u32>(off).unwrap();
                let mut v = vec![0; b.len()];
                h.read_slice(&b, &mut v).unwrap();
                bad += v.iter().filter(|&&x| x != i).count();
                h.free(b).unwrap();
            }
            bad
        })
    };
    producer.join().unwrap();
    assert_eq!(consumer.join().unwrap(), 0);
    assert_consistent(&h);
}
