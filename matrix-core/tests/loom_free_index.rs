//! loom models of the free index: the tagged Treiber stack (including the
//! ABA case) and the bitmap hints racing a push.
//!
//! Run with `scripts/loom.sh` (or `RUSTFLAGS="--cfg loom" cargo test -p
//! matrix-core --release --test loom_free_index`).
#![cfg(loom)]

mod loom_common;

use loom::sync::atomic::Ordering::SeqCst;
use loom::sync::Arc;
use loom::thread;
use matrix_core::free_index::{bucket_offsets, clear_if_empty, find_nonempty, pop, push};
use matrix_core::size_class::{class_of, SizeClass};
use matrix_core::{Arena, ModelArena};

/// Three block offsets of a model arena, all of one size class.
fn three_blocks(arena: &ModelArena) -> ([u32; 3], SizeClass) {
    let view = arena.participant(0);
    let start = view.arena_start();
    ([start, start + 48, start + 96], class_of(48))
}

fn push_all(arena: &ModelArena, offsets: &[u32], class: SizeClass) {
    let view = arena.participant(0);
    for &o in offsets {
        push(&view.segment().index, view.header(o).unwrap(), o, class);
    }
}

fn list(arena: &ModelArena, class: SizeClass) -> Vec<u32> {
    bucket_offsets(&arena.participant(0), class, 16)
}

/// Two threads pop concurrently from a list of three: each block ends up in
/// exactly one place (one popper's hands, or still in the list).
#[test]
fn concurrent_pops_take_distinct_blocks() {
    loom::model(|| {
        let arena = Arc::new(ModelArena::new(256));
        let (blocks, class) = three_blocks(&arena);
        push_all(&arena, &blocks, class);
        let t = {
            let arena = arena.clone();
            thread::spawn(move || pop(&arena.participant(1), class, 0, None).unwrap())
        };
        let mine = pop(&arena.participant(0), class, 0, None).unwrap();
        let theirs = t.join().unwrap();
        let (a, b) = (mine.expect("list had 3"), theirs.expect("list had 3"));
        assert_ne!(a, b, "one block popped twice");
        let rest = list(&arena, class);
        assert_eq!(rest.len(), 1);
        assert!(!rest.contains(&a) && !rest.contains(&b));
    });
}

/// The ABA case: one thread pops while another pops A, pops B and pushes A
/// back. An untagged CAS would install B (held by the second thread) as the
/// head; the tag makes the first thread's stale CAS fail.
#[test]
fn aba_pop_pop_push_back_is_detected_by_the_tag() {
    loom::model(|| {
        let arena = Arc::new(ModelArena::new(256));
        let (blocks, class) = three_blocks(&arena);
        // List: A -> B -> C (pushed in reverse).
        push_all(&arena, &[blocks[2], blocks[1], blocks[0]], class);
        let t = {
            let arena = arena.clone();
            thread::spawn(move || pop(&arena.participant(1), class, 0, None).unwrap())
        };
        let me = arena.participant(0);
        let a = pop(&me, class, 0, None).unwrap().unwrap();
        let b = pop(&me, class, 0, None).unwrap();
        push(&me.segment().index, me.header(a).unwrap(), a, class);
        let theirs = t.join().unwrap();
        let rest = list(&arena, class);
        // Every block is held by exactly one party.
        let mut all: Vec<u32> = rest.clone();
        all.extend(b);
        all.extend(theirs);
        all.sort_unstable();
        let mut expected = blocks.to_vec();
        expected.sort_unstable();
        assert_eq!(
            all, expected,
            "list {rest:?}, held b={b:?}, theirs={theirs:?}"
        );
    });
}

/// Three threads: two push back what they pop, one pops and keeps.
#[test]
fn three_threads_push_and_pop() {
    loom::model(|| {
        let arena = Arc::new(ModelArena::new(256));
        let (blocks, class) = three_blocks(&arena);
        push_all(&arena, &blocks[..2], class);
        let recycle = |slot: usize| {
            let arena = arena.clone();
            thread::spawn(move || {
                let view = arena.participant(slot);
                if let Some(o) = pop(&view, class, 0, None).unwrap() {
                    push(&view.segment().index, view.header(o).unwrap(), o, class);
                }
            })
        };
        let t1 = recycle(1);
        let t2 = recycle(2);
        let kept = pop(&arena.participant(0), class, 0, None).unwrap();
        t1.join().unwrap();
        t2.join().unwrap();
        let mut all = list(&arena, class);
        all.extend(kept);
        all.sort_unstable();
        assert_eq!(all, blocks[..2].to_vec());
    });
}

/// A searcher that found the bucket empty clears its bit while a pusher
/// fills it: once both finish, a non-empty bucket has its bits set and the
/// search finds it.
#[test]
fn bitmap_clear_racing_a_push_never_hides_the_bucket() {
    loom::model(|| {
        let arena = Arc::new(ModelArena::new(256));
        let (blocks, class) = three_blocks(&arena);
        // The bit is set but the bucket is empty (a stale hint).
        push_all(&arena, &blocks[..1], class);
        pop(&arena.participant(0), class, 0, None).unwrap().unwrap();
        let t = {
            let arena = arena.clone();
            thread::spawn(move || {
                let view = arena.participant(1);
                let o = blocks[1];
                push(&view.segment().index, view.header(o).unwrap(), o, class);
            })
        };
        clear_if_empty(&arena.participant(0).segment().index, class);
        t.join().unwrap();
        let view = arena.participant(0);
        let index = &view.segment().index;
        assert!(
            index.sl_bitmap[class.fl].load(SeqCst) & (1 << class.sl) != 0,
            "bucket hidden"
        );
        assert!(
            index.fl_bitmap.load(SeqCst) & (1 << class.fl) != 0,
            "level hidden"
        );
        assert_eq!(
            find_nonempty(index, SizeClass { fl: 0, sl: 0 }),
            Some(class)
        );
    });
}
