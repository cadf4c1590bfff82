//! Helpers shared by the handler integration tests.
#![allow(dead_code)]

/// Unique segment names removed on drop (also on panic).
#[allow(unused_imports)]
pub use matrix_core::ScratchName as SegmentGuard;

use matrix_core::free_index::bucket_offsets;
use matrix_core::size_class::{SizeClass, FL_COUNT, SL_COUNT};
use matrix_core::state::FREE;
use matrix_handler::HandlerFunctions;
use std::collections::HashSet;

/// At quiescence: the chain tiles the arena up to the wilderness, and the
/// free index holds exactly the FREE blocks, each once.
pub fn assert_consistent(h: &impl HandlerFunctions) {
    let m = h.matrix();
    let mut end = m.first_block_offset();
    let mut free_in_chain = HashSet::new();
    for info in m.blocks() {
        let info = info.expect("chain walk");
        assert_eq!(info.offset, end, "gap or overlap at {end}");
        end = info.offset + info.size;
        if info.state == FREE {
            free_in_chain.insert(info.offset);
        }
    }
    let top = m.header().top.load(std::sync::atomic::Ordering::Acquire);
    assert_eq!(end, top, "chain does not end at top");
    let mut listed = HashSet::new();
    for fl in 0..FL_COUNT {
        for sl in 0..SL_COUNT {
            for off in bucket_offsets(m, SizeClass { fl, sl }, 1 << 24) {
                assert!(listed.insert(off), "block {off} listed twice");
            }
        }
    }
    assert_eq!(listed, free_in_chain, "free index and FREE blocks differ");
}
