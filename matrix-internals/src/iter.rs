//! Walking the blocks of a segment.
//!
//! ```text
//!  first_block_offset                                      top   arena end
//!  | hdr | payload | hdr | payload ......... | hdr | payload |  wilderness |
//!  ^ block 0        ^ block 0 + size          ^ ...            (not walked)
//! ```
//!
//! Every block header records its size, so the physical chain is walked by
//! adding sizes, from the first block to the wilderness `top`. Each entry
//! gives offset, size, state, generation, owner and type tag.
//!
//! - Exact at quiescence: every block is seen once, in address order.
//! - Weakly consistent under concurrency: a block split or merged during
//!   the walk is seen before or after the change, never torn; a carve whose
//!   header is not written yet is reported with `carving` set.
//! - Bounded on a corrupt segment: each step moves forward by at least a
//!   minimum block and checks the header it lands on; a header that cannot
//!   be ends the walk with a [`WalkError`] instead of looping or reading
//!   out of bounds.

use matrix_core::{BlockError, BlockInfo, OwnerId};
use matrix_handler::{layout_tag, Block, BlockToken, HandlerError, HandlerFunctions};
use std::collections::BTreeMap;
use std::fmt;

/// The walk met a header that cannot be: the segment is damaged (or a
/// foreign process scribbled on it). Nothing after this point was walked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalkError {
    /// Blocks walked before the damage.
    pub blocks_seen: u64,
    /// What the damaged header looked like.
    pub error: BlockError,
}

impl fmt::Display for WalkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "block walk stopped after {} blocks: {}; run `matrix fsck`",
            self.blocks_seen, self.error
        )
    }
}

impl std::error::Error for WalkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// Iterator over every block of the chain; see the module docs.
///
/// Yields `Ok(BlockInfo)` per block, then at most one `Err(WalkError)`, then
/// nothing.
pub struct Blocks<'h> {
    walk: matrix_core::walk::ChainWalk<'h, matrix_handler::AtomicMatrix>,
    seen: u64,
    limit: u64,
    done: bool,
}

impl Iterator for Blocks<'_> {
    type Item = Result<BlockInfo, WalkError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = match self.walk.next() {
            None => None,
            // The chain walk already bounds itself; this is a second fence
            // in case a future change to it ever stops making progress.
            Some(Ok(_)) if self.seen >= self.limit => Some(Err(BlockError::Corrupted {
                offset: 0,
                what: "more blocks than the arena can hold",
            })),
            Some(Ok(info)) => {
                self.seen += 1;
                return Some(Ok(info));
            }
            Some(Err(e)) => Some(Err(e)),
        };
        self.done = true;
        item.map(|r| {
            r.map_err(|error| WalkError {
                blocks_seen: self.seen,
                error,
            })
        })
    }
}

impl std::iter::FusedIterator for Blocks<'_> {}

/// Every block of the segment, in address order.
pub fn blocks<H: HandlerFunctions>(handler: &H) -> Blocks<'_> {
    let m = handler.matrix();
    let arena = (m.segment_size() as u64).saturating_sub(m.first_block_offset() as u64);
    Blocks {
        walk: m.blocks(),
        seen: 0,
        limit: arena / matrix_core::layout::MIN_BLOCK as u64 + 1,
        done: false,
    }
}

/// The blocks in `state` (e.g. every block in user state 112). Errors of
/// the walk are passed through.
pub fn in_state<H: HandlerFunctions>(
    handler: &H,
    state: u32,
) -> impl Iterator<Item = Result<BlockInfo, WalkError>> + '_ {
    blocks(handler).filter(move |r| r.as_ref().map_or(true, |b| b.state == state && !b.carving))
}

/// The live blocks (allocated or in a user state) owned by `owner`;
/// `OwnerId::SEGMENT` selects the blocks given to the segment.
pub fn owned_by<H: HandlerFunctions>(
    handler: &H,
    owner: OwnerId,
) -> impl Iterator<Item = Result<BlockInfo, WalkError>> + '_ {
    blocks(handler).filter(move |r| {
        r.as_ref().map_or(true, |b| {
            b.owner == owner && !b.carving && matrix_core::state::is_live(b.state)
        })
    })
}

/// The blocks in `state` that were allocated for a `T`, as typed handles
/// (validated like `block_from_token`: a block freed or re-allocated since
/// the walk saw it is skipped).
pub fn typed_in_state<T, H: HandlerFunctions>(
    handler: &H,
    state: u32,
) -> impl Iterator<Item = Result<Block<T>, WalkError>> + '_ {
    in_state(handler, state).filter_map(move |r| match r {
        Err(e) => Some(Err(e)),
        Ok(b) if b.type_tag != layout_tag::<T>() => None,
        Ok(b) => {
            let token = BlockToken::new(b.payload_offset(), b.generation, handler.segment_nonce());
            match handler.block_from_token::<T>(token) {
                Ok(block) => Some(Ok(block)),
                Err(HandlerError::Block(_) | HandlerError::InvalidOffset(_)) => None,
                Err(_) => None,
            }
        }
    })
}

/// The blocks in a user state whose owner is gone, whoever runs it and
/// whether or not anyone ran `recover()` yet: owned by
/// [`OwnerId::DEPARTED`] (recovery hands a dead participant's user-state
/// blocks there instead of freeing them), or by a participant that is
/// definitely dead ([`owner_liveness`](crate::shm::owner_liveness); an
/// unknown one counts as alive). With `type_tag` (e.g.
/// `Some(layout_tag::<Node>())`), only blocks allocated for that type.
///
/// This is how a structure recovers its own blocks: its nodes live in a
/// user state while a producer fills them, and any process can list the
/// ones whose producer died, then free or re-link each (see
/// `docs/WRITING_INTERNALS.md`). Liveness is asked once per owner.
pub fn orphaned<H: HandlerFunctions>(
    handler: &H,
    type_tag: Option<u32>,
) -> impl Iterator<Item = Result<BlockInfo, WalkError>> + '_ {
    let mut verdicts: BTreeMap<OwnerId, bool> = BTreeMap::new();
    blocks(handler).filter(move |r| {
        let Ok(b) = r else { return true };
        if b.carving || !matrix_core::state::is_user_state(b.state) {
            return false;
        }
        if type_tag.is_some_and(|t| t != b.type_tag) {
            return false;
        }
        if b.owner == OwnerId::DEPARTED {
            return true;
        }
        if b.owner == OwnerId::SEGMENT {
            return false;
        }
        *verdicts.entry(b.owner).or_insert_with(|| {
            crate::shm::owner_liveness(handler.matrix(), b.owner.0) == matrix_core::Liveness::Dead
        })
    })
}

/// [`orphaned`] blocks allocated for a `T`, as typed handles (a block freed
/// or re-allocated since the walk saw it is skipped). Take one over with
/// `adopt` (or free it) to settle it.
pub fn orphaned_of<T, H: HandlerFunctions>(
    handler: &H,
) -> impl Iterator<Item = Result<Block<T>, WalkError>> + '_ {
    orphaned(handler, Some(layout_tag::<T>())).filter_map(move |r| match r {
        Err(e) => Some(Err(e)),
        Ok(b) => {
            let token = BlockToken::new(b.payload_offset(), b.generation, handler.segment_nonce());
            handler.block_from_token::<T>(token).ok().map(Ok)
        }
    })
}

/// Blocks and bytes in one state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateTotals {
    /// Number of blocks.
    pub blocks: u64,
    /// Bytes, headers included.
    pub bytes: u64,
    /// Payload bytes.
    pub payload_bytes: u64,
}

/// Totals per state over the whole chain (carves in progress count as
/// ALLOCATED, as `stats()` counts them). The wilderness is not a block and
/// is not counted.
pub fn sum_by_state<H: HandlerFunctions>(
    handler: &H,
) -> Result<BTreeMap<u32, StateTotals>, WalkError> {
    let mut totals: BTreeMap<u32, StateTotals> = BTreeMap::new();
    for info in blocks(handler) {
        let info = info?;
        let t = totals.entry(info.state).or_default();
        t.blocks += 1;
        t.bytes += info.size as u64;
        t.payload_bytes += info.payload_size() as u64;
    }
    Ok(totals)
}

/// Blocks and bytes in `state`.
pub fn totals_in_state<H: HandlerFunctions>(
    handler: &H,
    state: u32,
) -> Result<StateTotals, WalkError> {
    let mut t = StateTotals::default();
    for info in in_state(handler, state) {
        let info = info?;
        t.blocks += 1;
        t.bytes += info.size as u64;
        t.payload_bytes += info.payload_size() as u64;
    }
    Ok(t)
}
