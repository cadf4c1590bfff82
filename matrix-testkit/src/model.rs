//! The shadow model: what the allocator and handler must have done.
//!
//! ```text
//!   Op ──► ModelRunner::apply ──► real handler call ──► result
//!                │                                        │
//!                └──► ShadowModel::expect_* ◄─── compare ─┘
//!   after every op: check_invariants + chain ⇔ model + payload patterns
//! ```
//!
//! The model does not re-implement placement: it knows which blocks are
//! live, their header offsets, sizes, generations, states, owners and
//! payload patterns, and it predicts every result that follows from those
//! (success, the exact error, the state returned). Where the allocator has
//! freedom (which offset it returns, whether memory is exhausted) the model
//! checks the claim instead: a new block must overlap no live block, and an
//! out-of-memory must be justified by the chain (no free run large enough
//! after the consolidation the allocator ran).

use matrix_core::state::{is_live, STATE_MAX, USER_STATE_MIN};
use matrix_core::OwnerId;
use std::collections::BTreeMap;
use std::fmt;

/// Which participant performs an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// The participant that lives for the whole run.
    Main,
    /// A second participant on the same segment, detached and re-attached by
    /// [`Op::DetachPeer`].
    Peer,
}

/// A payload size, resolved against the arena at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeSpec {
    /// That many bytes.
    Exact(u32),
    /// The largest payload the arena could ever hold.
    MaxPayload,
    /// One byte more than that: always `TooLarge`.
    JustTooLarge,
    /// An absurd request (`u32::MAX` bytes, or `usize::MAX` elements).
    Huge,
}

/// Which allocation entry point to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocKind {
    /// `allocate_slice::<u8>(n)`.
    Slice,
    /// `allocate_raw(n)` then `block_at::<u8>`.
    Raw,
    /// `allocate::<[u64; 8]>()` (the size is ignored).
    Typed,
}

/// The offset handed to `free_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreeAtTarget {
    /// The header of a live block (picked by index).
    Live(usize),
    /// The header offset of a block freed earlier (picked by index).
    Freed(usize),
    /// The payload offset of a live block (header + 32): not a header.
    Payload(usize),
    /// A 16-aligned offset strictly inside a live block's payload.
    Inside(usize, u32),
    /// A live block's header + 8: misaligned.
    Misaligned(usize),
    /// Any offset at all.
    Raw(u32),
}

/// The `expected` argument of a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// The block's current state (the transition succeeds if `next` is valid).
    Current,
    /// A given state (usually not the current one).
    State(u32),
}

/// One operation of a generated sequence. Indices pick among the live (or
/// freed) blocks in offset order, modulo their number; with none, the
/// operation does nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Allocate and fill with a pattern.
    Allocate {
        /// Who allocates.
        actor: Actor,
        /// How much.
        size: SizeSpec,
        /// Through which entry point.
        kind: AllocKind,
    },
    /// `free(Block)` of a live block (pattern checked first).
    Free {
        /// Who frees (any participant may free any block).
        actor: Actor,
        /// Which live block.
        pick: usize,
    },
    /// `free_at(offset)`.
    FreeAt {
        /// The offset.
        target: FreeAtTarget,
    },
    /// `block_from_token` with the token of a freed block: always refused.
    StaleToken {
        /// Which freed block.
        pick: usize,
    },
    /// Rewrite a live block's payload.
    Write {
        /// Which live block.
        pick: usize,
        /// Pattern seed.
        seed: u8,
        /// Write zeros instead of the pattern.
        zero: bool,
    },
    /// `set_state`.
    SetState {
        /// Which live block.
        pick: usize,
        /// The state (reserved ones must be refused).
        state: u32,
    },
    /// `transition_state`.
    Transition {
        /// Which live block.
        pick: usize,
        /// Expected state.
        expected: Expected,
        /// Next state.
        next: u32,
    },
    /// `release_to_segment`.
    ReleaseToSegment {
        /// Which live block.
        pick: usize,
    },
    /// `adopt` by the main participant.
    Adopt {
        /// Which live block.
        pick: usize,
    },
    /// `consolidate`.
    Consolidate,
    /// Drop the peer's handle: its live blocks become reclaimable by `recover`.
    DetachPeer,
    /// `recover`.
    Recover,
}

/// How a live block's payload is filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fill {
    /// Pattern seed.
    pub seed: u8,
    /// All zeros instead of the pattern.
    pub zero: bool,
}

impl Fill {
    /// The byte at payload position `i`.
    #[inline]
    pub fn byte(self, i: usize) -> u8 {
        if self.zero {
            0
        } else {
            self.seed.wrapping_add((i as u8).wrapping_mul(31)) ^ ((i >> 8) as u8)
        }
    }
}

/// What the model knows about one live block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelBlock {
    /// Header offset.
    pub header: u32,
    /// Whole block size read at allocation (never changes while live).
    pub size: u32,
    /// Generation the block was allocated at.
    pub generation: u64,
    /// Payload bytes requested.
    pub requested: u32,
    /// Current state (ALLOCATED or a user state).
    pub state: u32,
    /// Owner id the header must carry.
    pub owner: OwnerId,
    /// Owned by a detached participant, not yet recovered.
    pub orphan: bool,
    /// Payload bytes covered by `fill`.
    pub filled: usize,
    /// Payload contents.
    pub fill: Fill,
}

impl ModelBlock {
    /// One past the block's last byte.
    pub fn end(&self) -> u64 {
        self.header as u64 + self.size as u64
    }
}

/// The reference model: live blocks by header offset, plus freed tokens.
#[derive(Debug, Clone, Default)]
pub struct ShadowModel {
    /// Live blocks by header offset.
    pub blocks: BTreeMap<u32, ModelBlock>,
    /// `(header offset, generation)` of blocks freed or reclaimed.
    pub freed: Vec<(u32, u64)>,
}

impl ShadowModel {
    /// The live block `pick` selects (offset order), if any.
    pub fn pick(&self, pick: usize) -> Option<&ModelBlock> {
        if self.blocks.is_empty() {
            return None;
        }
        self.blocks.values().nth(pick % self.blocks.len())
    }

    /// The freed block `pick` selects, if any.
    pub fn pick_freed(&self, pick: usize) -> Option<(u32, u64)> {
        (!self.freed.is_empty()).then(|| self.freed[pick % self.freed.len()])
    }

    /// Whether `[header, header + size)` overlaps a live block.
    pub fn overlaps(&self, header: u32, size: u32) -> Option<&ModelBlock> {
        let end = header as u64 + size as u64;
        // The closest block starting below `end` is the only candidate whose
        // start is < end; blocks never overlap each other in the model.
        self.blocks
            .range(..end.min(u32::MAX as u64 + 1) as u32)
            .next_back()
            .map(|(_, b)| b)
            .filter(|b| b.end() > header as u64)
    }

    /// Records a new live block.
    pub fn insert(&mut self, block: ModelBlock) {
        self.blocks.insert(block.header, block);
    }

    /// Removes a live block (freed or reclaimed), remembering its token.
    pub fn remove(&mut self, header: u32) -> Option<ModelBlock> {
        let b = self.blocks.remove(&header)?;
        self.freed.push((header, b.generation));
        Some(b)
    }

    /// The result `set_state(block, state)` must have.
    pub fn expect_set_state(state: u32) -> Result<(), ModelError> {
        if state < USER_STATE_MIN {
            Err(ModelError::ReservedStatus(state))
        } else if state > STATE_MAX {
            Err(ModelError::StateOutOfRange(state))
        } else {
            Ok(())
        }
    }

    /// The result `transition_state(block, expected, next)` must have on a
    /// block currently in `current`.
    pub fn expect_transition(current: u32, expected: u32, next: u32) -> Result<u32, ModelError> {
        if next < USER_STATE_MIN {
            Err(ModelError::ReservedStatus(next))
        } else if !is_live(expected) {
            Err(ModelError::ReservedStatus(expected))
        } else if next > STATE_MAX {
            Err(ModelError::StateOutOfRange(next))
        } else if current != expected {
            Err(ModelError::TransitionFailed(current))
        } else {
            Ok(expected)
        }
    }
}

/// The handler errors the model predicts exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelError {
    /// `HandlerError::ReservedStatus`.
    ReservedStatus(u32),
    /// `HandlerError::TransitionFailed`.
    TransitionFailed(u32),
    /// `HandlerError::StateOutOfRange`.
    StateOutOfRange(u32),
}

/// A difference between the allocator and the model: the proof that
/// something is wrong, with the operation that exposed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// Index of the operation in the sequence.
    pub step: usize,
    /// The operation.
    pub op: String,
    /// What differed.
    pub what: String,
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "step {} ({}): {}", self.step, self.op, self.what)
    }
}

impl std::error::Error for Divergence {}
