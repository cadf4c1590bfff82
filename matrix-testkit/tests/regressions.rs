//! Deterministic reproductions of allocator bugs the harnesses found.
//! Each test names the harness that found it.

use matrix_handler::{HandlerError, HandlerFunctions, MatrixHandler};

/// Found by the shadow model (`StaleToken`): a header re-created at an
/// offset took its generation from whatever the memory held, so after the
/// old header was absorbed by a merge and the payload zeroed, the next block
/// there got the same generation as a block freed long before, and that
/// block's stale token was accepted.
#[test]
fn stale_token_is_refused_after_the_offset_is_recreated_over_zeroed_memory() {
    let h = MatrixHandler::bootstrap(None, 64 << 10).unwrap();
    let first = h.allocate_slice::<u8>(64).unwrap();
    let second = h.allocate_slice::<u8>(64).unwrap();
    let stale = second.token();
    h.free(first).unwrap();
    h.free(second).unwrap();
    h.consolidate().unwrap(); // both merge and return to the wilderness

    // One block over both old headers, its payload zeroed by the user.
    let mut wide = h.allocate_slice::<u8>(160).unwrap();
    h.write_slice(&mut wide, &[0u8; 160]).unwrap();
    h.free(wide).unwrap();
    h.consolidate().unwrap();

    let again_first = h.allocate_slice::<u8>(64).unwrap();
    let again_second = h.allocate_slice::<u8>(64).unwrap();
    assert_eq!(again_second.offset(), stale.offset(), "the layout repeats");
    let result = h.block_from_token::<u8>(stale);
    assert!(
        matches!(result, Err(HandlerError::Block(_))),
        "stale token accepted: {result:?} (generation {} reused)",
        stale.generation()
    );
    h.free(again_first).unwrap();
    h.free(again_second).unwrap();
}

/// Found by the hostile-segment harness (`SlBitmap(0) = 0x10000`): a garbage
/// bit above the 16 second-level classes made the bucket search index past
/// the bucket table and panic.
#[test]
fn garbage_bitmap_bits_are_ignored_not_followed() {
    use matrix_core::size_class::{FL_COUNT, SL_COUNT};
    use std::sync::atomic::Ordering::SeqCst;
    let h = MatrixHandler::bootstrap(None, 64 << 10).unwrap();
    let index = &h.matrix().header().index;
    for fl in 0..FL_COUNT {
        index.sl_bitmap[fl].fetch_or(!0u32 << SL_COUNT, SeqCst);
    }
    index.fl_bitmap.fetch_or(!0u32, SeqCst);
    for n in [0usize, 100, 1000, 10_000] {
        let b = h
            .allocate_slice::<u8>(n)
            .expect("the index is empty, the wilderness serves");
        h.free(b).unwrap();
    }
    h.consolidate().unwrap();
    let b = h.allocate_slice::<u8>(100).unwrap();
    h.free(b).unwrap();
}

/// Found by the hostile-segment harness (overlapping blocks after a
/// `Head` corruption): a bucket head pointing at a live block's header made
/// the next allocation hand out that live block a second time. A popped
/// entry must be a genuine FREE header.
#[test]
fn a_corrupt_list_entry_is_not_handed_out() {
    use matrix_core::size_class::class_of;
    use std::sync::atomic::Ordering::SeqCst;
    let h = MatrixHandler::bootstrap(None, 256 << 10).unwrap();
    let live = h.allocate_slice::<u8>(64).unwrap();
    let _guard = h.allocate_slice::<u8>(64).unwrap();
    let head_offset = live.header_offset();
    let (_, size) = h.matrix().block_header(head_offset).unwrap();
    let class = class_of(size);
    let head = &h.matrix().header().index.heads[class.fl][class.sl];
    head.store(
        (head.load(SeqCst) & !0xFFFF_FFFF) | head_offset as u64,
        SeqCst,
    );
    h.matrix().header().index.sl_bitmap[class.fl].fetch_or(1 << class.sl, SeqCst);
    h.matrix()
        .header()
        .index
        .fl_bitmap
        .fetch_or(1 << class.fl, SeqCst);
    for _ in 0..4 {
        match h.allocate_slice::<u8>(64) {
            Ok(b) => assert_ne!(
                b.header_offset(),
                head_offset,
                "a live block was handed out twice"
            ),
            Err(HandlerError::AllocationFailed(_)) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    h.write_slice(&mut { live }, &[7u8; 64]).unwrap();
}

/// Found by the hostile-segment harness (a batch hung): a corrupt list
/// that cycles through a live block (head -> live block -> itself) made a
/// consolidation pop forever once it stopped taking non-free entries. Every
/// consolidation must end.
#[test]
fn consolidation_ends_on_a_list_cycling_through_a_live_block() {
    use matrix_core::size_class::class_of;
    use std::sync::atomic::Ordering::SeqCst;
    let h = MatrixHandler::bootstrap(None, 256 << 10).unwrap();
    let live = h.allocate_slice::<u8>(64).unwrap();
    let _guard = h.allocate_slice::<u8>(64).unwrap();
    let at = live.header_offset();
    let (hdr, size) = h.matrix().block_header(at).unwrap();
    hdr.next_free.store(at, SeqCst);
    let class = class_of(size);
    let head = &h.matrix().header().index.heads[class.fl][class.sl];
    head.store((head.load(SeqCst) & !0xFFFF_FFFF) | at as u64, SeqCst);
    let shared = h.share();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(shared.consolidate().map(|r| r.ran));
    });
    let result = finished.recv_timeout(std::time::Duration::from_secs(20));
    assert!(
        result.is_ok(),
        "consolidate did not finish within 20 s (a hang)"
    );
    assert!(
        h.block_at::<u8>(live.offset()).is_ok(),
        "the live block was left alone"
    );
}

/// Named by review: a free-list entry whose link points at itself, popped
/// by two threads at once, passed the "is it FREE" check (a plain load) in
/// both, and both handed the one block out. A pop now claims the entry by
/// a CAS of its state word, so at most one of them gets it. (On b9610d9,
/// before that fix, 1 of 20,000 rounds handed the block out twice;
/// `MATRIX_RACE_ROUNDS` sets the rounds.)
#[test]
fn a_self_looping_free_entry_popped_by_two_threads_is_handed_out_once() {
    use matrix_core::size_class::class_of;
    use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
    use std::sync::{Arc, Mutex};
    let rounds: u32 = std::env::var("MATRIX_RACE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4_000);
    // The round's segment, published before `go` moves to the round.
    let segment: Arc<Mutex<Option<Arc<MatrixHandler>>>> = Arc::default();
    let go = Arc::new(AtomicU32::new(0));
    let got = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let done = Arc::new(AtomicU32::new(0));
    let workers: Vec<_> = (0..2)
        .map(|side| {
            let (segment, go, got, done) = (segment.clone(), go.clone(), got.clone(), done.clone());
            std::thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(side as u64);
                for round in 1..=rounds {
                    // Both sides spin on one word, so they leave it together;
                    // a random spin then spreads their relative timing.
                    wait_until(|| go.load(SeqCst) >= round);
                    let h = segment.lock().unwrap().clone().unwrap();
                    for _ in 0..rng.u32(0..200) {
                        std::hint::spin_loop();
                    }
                    let offset = match h.allocate_slice::<u8>(64) {
                        // A handle frees nothing on drop: the block stays live.
                        Ok(b) => u64::from(b.header_offset()) | 1 << 32,
                        Err(_) => 0,
                    };
                    got[side].store(offset, SeqCst);
                    done.fetch_add(1, SeqCst);
                }
            })
        })
        .collect();
    let mut twice = 0;
    for round in 1..=rounds {
        let h = Arc::new(MatrixHandler::bootstrap(None, 64 << 10).unwrap());
        let victim = h.allocate_slice::<u8>(64).unwrap();
        let _guard = h.allocate_slice::<u8>(64).unwrap();
        let at = victim.header_offset();
        h.free(victim).unwrap();
        h.matrix().flush_thread_cache();
        let (hdr, size) = h.matrix().block_header(at).unwrap();
        hdr.next_free.store(at, SeqCst);
        let class = class_of(size);
        let head = &h.matrix().header().index.heads[class.fl][class.sl];
        assert_eq!(
            head.load(SeqCst) as u32,
            at,
            "the freed block heads its list"
        );
        *segment.lock().unwrap() = Some(h);
        done.store(0, SeqCst);
        go.store(round, SeqCst);
        wait_until(|| done.load(SeqCst) >= 2);
        let (a, b) = (got[0].load(SeqCst), got[1].load(SeqCst));
        if a != 0 && a == b {
            twice += 1;
        }
    }
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(
        twice, 0,
        "{twice} of {rounds} rounds handed one block to both threads"
    );
}

/// Spins briefly (so two waiters leave together), then yields: on a
/// machine with fewer cores than spinning threads a pure spin starves the
/// thread it waits for.
fn wait_until(ready: impl Fn() -> bool) {
    let mut spins = 0u32;
    while !ready() {
        if spins < 2_000 {
            spins += 1;
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}
