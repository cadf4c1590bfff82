//! Two threads hammering one arena with pattern-checked blocks.

use matrix_core::{AtomicMatrix, BLOCK_HEADER_SIZE};
use std::sync::Arc;

fn fill(m: &AtomicMatrix, payload: u32, len: usize, tag: u8) {
    // SAFETY: the block is live and owned by this thread; len fits its payload.
    unsafe { std::ptr::write_bytes(m.base_ptr().add(payload as usize) as *mut u8, tag, len) };
}

fn check(m: &AtomicMatrix, payload: u32, len: usize, tag: u8) -> bool {
    // SAFETY: as in `fill`.
    let bytes = unsafe { std::slice::from_raw_parts(m.base_ptr().add(payload as usize), len) };
    bytes.iter().all(|&b| b == tag)
}

#[test]
fn two_threads_mixed_workload_never_share_a_block() {
    let m = Arc::new(AtomicMatrix::anonymous(8 << 20).unwrap());
    let ops = 400_000;
    let handles: Vec<_> = (0..2u8)
        .map(|t| {
            let m = m.clone();
            std::thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(t as u64 + 1);
                let mut live: Vec<(u32, usize, u8)> = Vec::new();
                let mut mismatches = 0u64;
                let mut ooms = 0u64;
                for i in 0..ops {
                    if live.len() < 2000 && (rng.u32(0..10) < 7 || live.is_empty()) {
                        let len = rng.usize(32..=544);
                        match m.allocate(len as u64, 0) {
                            Ok(p) => {
                                let tag = (t * 100).wrapping_add((i % 97) as u8) | 1;
                                fill(&m, p.offset(), len, tag);
                                live.push((p.offset(), len, tag));
                            }
                            Err(_) => ooms += 1,
                        }
                    } else {
                        let (off, len, tag) = live.swap_remove(rng.usize(0..live.len()));
                        if !check(&m, off, len, tag) {
                            mismatches += 1;
                        }
                        m.free(off - BLOCK_HEADER_SIZE, None).unwrap();
                    }
                }
                for (off, len, tag) in live {
                    if !check(&m, off, len, tag) {
                        mismatches += 1;
                    }
                    m.free(off - BLOCK_HEADER_SIZE, None).unwrap();
                }
                (mismatches, ooms)
            })
        })
        .collect();
    for h in handles {
        let (mismatches, ooms) = h.join().unwrap();
        assert_eq!(mismatches, 0);
        assert_eq!(ooms, 0);
    }
    m.consolidate().unwrap();
    let s = m.stats().unwrap();
    assert_eq!(s.used_bytes, 0);
    assert_eq!(s.free_blocks, 1, "{s:?}");
}
