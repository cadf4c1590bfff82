//! The walk of one `free_blocks` / `visit_blocks` call through nested
//! values: which buffers it has entered, and how deep it is.
//!
//! A type may name itself through a container (`struct Node { next:
//! ShmBox<Node> }`), so safe code can build a cycle (a box whose value
//! names the box) or a chain deeper than a thread's stack. The walk enters
//! each buffer once — a buffer met again is skipped, so a cycle is freed
//! once and the walk ends — and refuses to go deeper than [`MAX_DEPTH`]
//! buffers, a typed error instead of a stack overflow.

use super::DynError;
use matrix_handler::BlockToken;
use std::cell::RefCell;
use std::collections::HashSet;

/// Nested buffers one walk may enter: a few hundred bytes of stack each,
/// well inside the 2 MiB of a spawned thread.
pub const MAX_DEPTH: u32 = 1024;

#[derive(Default)]
struct Walk {
    depth: u32,
    entered: HashSet<u128>,
}

thread_local! {
    static WALK: RefCell<Walk> = RefCell::new(Walk::default());
}

/// Inside the walk while alive; leaving the outermost buffer ends the walk.
pub(super) struct Entered(());

impl Drop for Entered {
    fn drop(&mut self) {
        WALK.with_borrow_mut(|w| {
            w.depth -= 1;
            if w.depth == 0 {
                w.entered.clear();
            }
        });
    }
}

/// Enters the buffer `token` names: `Ok(None)` when this walk entered it
/// already (a cycle: skip it), [`DynError::TooDeep`] past [`MAX_DEPTH`].
pub(super) fn enter(token: BlockToken) -> Result<Option<Entered>, DynError> {
    WALK.with_borrow_mut(|w| {
        if w.depth >= MAX_DEPTH {
            return Err(DynError::TooDeep { limit: MAX_DEPTH });
        }
        if !w.entered.insert(token.to_u128()) {
            return Ok(None);
        }
        w.depth += 1;
        Ok(Some(Entered(())))
    })
}
