//! Shared by the loom models: set-up helpers and an invariant check of a
//! `ModelArena` at quiescence (after every model thread has joined).
#![allow(dead_code)]

use matrix_core::free_index::bucket_offsets;
use matrix_core::layout::{header_check, MIN_BLOCK};
use matrix_core::size_class::{class_of, SizeClass, FL_COUNT, SL_COUNT};
use matrix_core::state::{self, FREE};
use matrix_core::walk::walk;
use matrix_core::Arena;
use std::collections::HashSet;

/// One block of the chain: `(offset, size, state)`.
pub type Block = (u32, u32, u32);

/// Walks the chain and the free index and panics on any broken invariant:
/// the chain tiles `[arena_start, top)`, every FREE block is in exactly one
/// bucket (its size's) and every entry is FREE, and a non-empty bucket has
/// its bitmap bits set. Returns the chain.
pub fn check<A: Arena>(arena: &A) -> Vec<Block> {
    let seg = arena.segment();
    let top = seg.top.load(loom::sync::atomic::Ordering::SeqCst);
    let mut chain = Vec::new();
    let mut end = arena.arena_start();
    for info in walk(arena) {
        let info = info.expect("chain walk at quiescence");
        assert_eq!(info.offset, end, "gap or overlap at {end}");
        assert!(!info.carving, "carve left in progress at {}", info.offset);
        assert!(info.size >= MIN_BLOCK);
        end = info.offset + info.size;
        chain.push((info.offset, info.size, info.state));
    }
    assert_eq!(end, top, "chain ends at {end}, top is {top}");
    if let Some(h) = arena.header(top) {
        let check = h.check.load(loom::sync::atomic::Ordering::SeqCst);
        assert_ne!(
            check,
            header_check(top),
            "a valid header in the wilderness at {top}"
        );
    }
    let mut listed = HashSet::new();
    for fl in 0..FL_COUNT {
        for sl in 0..SL_COUNT {
            let class = SizeClass { fl, sl };
            let entries = bucket_offsets(arena, class, 64);
            assert!(entries.len() < 64, "bucket {class:?} loops");
            if !entries.is_empty() {
                let sl_bits = seg.index.sl_bitmap[fl].load(loom::sync::atomic::Ordering::SeqCst);
                let fl_bits = seg
                    .index
                    .fl_bitmap
                    .load(loom::sync::atomic::Ordering::SeqCst);
                assert!(
                    sl_bits & (1 << sl) != 0,
                    "bucket {class:?} non-empty, bit clear"
                );
                assert!(fl_bits & (1 << fl) != 0, "level {fl} non-empty, bit clear");
            }
            for offset in entries {
                assert!(listed.insert(offset), "block {offset} listed twice");
                let &(_, size, st) = chain
                    .iter()
                    .find(|b| b.0 == offset)
                    .unwrap_or_else(|| panic!("list entry {offset} is not a block of the chain"));
                assert_eq!(st, FREE, "list entry {offset} is {}", state::state_name(st));
                assert_eq!(class_of(size), class, "block {offset} in the wrong bucket");
            }
        }
    }
    for &(offset, _, st) in &chain {
        if st == FREE {
            assert!(
                listed.contains(&offset),
                "FREE block {offset} is in no bucket"
            );
        }
    }
    chain
}

/// The block of the chain at `offset`.
pub fn block_at(chain: &[Block], offset: u32) -> Block {
    *chain
        .iter()
        .find(|b| b.0 == offset)
        .unwrap_or_else(|| panic!("no block at {offset}"))
}

/// Runs a loom model with room for the engine's longer paths (a
/// consolidation scans every bucket). `LOOM_MAX_PREEMPTIONS` and the other
/// loom variables still apply.
pub fn model<F: Fn() + Sync + Send + 'static>(f: F) {
    let mut builder = loom::model::Builder::new();
    if std::env::var("LOOM_MAX_BRANCHES").is_err() {
        builder.max_branches = 100_000;
    }
    builder.check(f);
}

/// [`model`] with at least `preemptions` preemptions explored (more if
/// LOOM_MAX_PREEMPTIONS asks), for a model whose schedule of interest
/// needs them.
pub fn model_with_preemptions<F: Fn() + Sync + Send + 'static>(preemptions: usize, f: F) {
    let mut builder = loom::model::Builder::new();
    if std::env::var("LOOM_MAX_BRANCHES").is_err() {
        builder.max_branches = 100_000;
    }
    builder.preemption_bound = Some(builder.preemption_bound.unwrap_or(0).max(preemptions));
    builder.check(f);
}
