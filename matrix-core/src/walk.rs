//! Walking the physical chain: every block from `arena_start` to `top`.
//!
//! Exact at quiescence. Under concurrency it is weakly consistent: a block
//! may be seen before or after a concurrent split or merge. A carve in
//! progress (its header not yet written) is stepped over using the carver's
//! recorded intent. When the position it is about to read stops being a
//! block start (a merge absorbed it, a carve or retract finished while it
//! looked), the walk re-synchronizes: it walks again from the arena start
//! to where the chain crosses that position now, and goes on from there.
//! Only a position that stays lost over many re-synchronizations is
//! reported as damage. The walk is bounded: each step moves forward by at least
//! [`MIN_BLOCK`], and an impossible header ends it with an error, so a
//! corrupt segment never makes it loop or read out of bounds.

use crate::arena::{Arena, OwnerId};
use crate::error::BlockError;
use crate::layout::{header_check, BLOCK_ALIGN, BLOCK_HEADER_SIZE, MIN_BLOCK};
use crate::state;
use crate::sync::Ordering::{Acquire, SeqCst};

/// One block of the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockInfo {
    /// Header offset.
    pub offset: u32,
    /// Block size, header included.
    pub size: u32,
    /// State (see [`crate::state`]).
    pub state: u32,
    /// Generation.
    pub generation: u64,
    /// Owner id (0 = the segment).
    pub owner: OwnerId,
    /// Payload type fingerprint (0 = untyped).
    pub type_tag: u32,
    /// Whether this is a carve in progress whose header is not written yet.
    pub carving: bool,
}

impl BlockInfo {
    /// Offset of the payload.
    pub fn payload_offset(&self) -> u32 {
        self.offset + BLOCK_HEADER_SIZE
    }
    /// The payload, as `allocate_raw` returns it and `free_raw` takes it
    /// (the header [`offset`](Self::offset) is the other kind).
    pub fn payload(&self) -> crate::RelativePtr<u8> {
        crate::RelativePtr::new(self.payload_offset())
    }
    /// Payload capacity.
    pub fn payload_size(&self) -> u32 {
        self.size - BLOCK_HEADER_SIZE
    }
}

/// Iterator over the chain; see the module docs.
pub struct ChainWalk<'a, A: Arena> {
    arena: &'a A,
    position: u32,
    done: bool,
    resyncs: u32,
}

/// Walks the chain of `arena`.
pub fn walk<A: Arena>(arena: &A) -> ChainWalk<'_, A> {
    ChainWalk {
        arena,
        position: arena.arena_start(),
        done: false,
        resyncs: 0,
    }
}

/// How often one walk may find the chain changed under it and re-synchronize
/// before it reports what it sees as damage. A change needs a concurrent
/// merge, carve or retract at the walker's position; damage stays put.
const MAX_RESYNCS: u32 = 64;

/// The size of the carve some participant has in progress at `offset`, if any.
pub(crate) fn carve_in_progress<A: Arena>(arena: &A, offset: u32) -> Option<u32> {
    arena.segment().participants().find_map(|slot| {
        slot.carve_intents.iter().find_map(|e| {
            // SeqCst: pairs with the carver's intent store (see alloc::carve).
            let v = e.load(SeqCst);
            (v > 1 && v as u32 == offset).then_some((v >> 32) as u32)
        })
    })
}

/// What one look at the chain position found.
enum Step {
    Block(BlockInfo),
    End,
    /// The position is not (or no longer) a block start: a concurrent change
    /// or damage; the walk re-synchronizes to tell which.
    Lost(BlockError),
}

/// Reads the block at `offset`: the `check` word (Acquire), then size and
/// state word, then `check` again, so a header absorbed by a merge while it
/// was being read is not reported with a stale size.
fn look<A: Arena>(arena: &A, offset: u32) -> Step {
    // Acquire: pairs with the SeqCst CAS of a carver or retracter, so
    // headers below the `top` seen here were published before it moved.
    let top = arena.segment().top.load(Acquire).min(arena.arena_end());
    if offset >= top {
        return Step::End;
    }
    let Some(hdr) = arena.header(offset) else {
        return Step::Lost(BlockError::Corrupted {
            offset,
            what: "chain leaves the arena",
        });
    };
    // Acquire: pairs with the Release that published (or, in a merge,
    // cleared) this header's check word.
    if hdr.check.load(Acquire) != header_check(offset) {
        if let Some(size) = carve_in_progress(arena, offset) {
            return Step::Block(BlockInfo {
                offset,
                size: size.max(MIN_BLOCK),
                state: state::ALLOCATED,
                generation: 0,
                owner: OwnerId::SEGMENT,
                type_tag: 0,
                carving: true,
            });
        }
        // Acquire: as above; a retract may have moved `top` meanwhile.
        if arena.segment().top.load(Acquire) <= offset {
            return Step::End; // retracted into the wilderness meanwhile
        }
        return Step::Lost(BlockError::NotABlock { offset });
    }
    // Acquire: the size and the state word as published with the check.
    let size = hdr.size.load(Acquire);
    let word = hdr.state.load(Acquire);
    let type_tag = hdr.type_tag.load(Acquire);
    // Acquire: a merge clears the check (Release) after it grows the block
    // in front; a check still valid here means size and word belong to a
    // block that was at `offset` while they were read.
    if hdr.check.load(Acquire) != header_check(offset) {
        return Step::Lost(BlockError::NotABlock { offset });
    }
    if size < MIN_BLOCK || size % BLOCK_ALIGN != 0 || offset as u64 + size as u64 > top as u64 {
        return Step::Lost(BlockError::Corrupted {
            offset,
            what: "impossible block size",
        });
    }
    Step::Block(BlockInfo {
        offset,
        size,
        state: state::state_of(word),
        generation: state::generation_of(word),
        owner: OwnerId(state::owner_of(word)),
        type_tag,
        carving: false,
    })
}

impl<A: Arena> ChainWalk<'_, A> {
    fn step(&mut self) -> Result<Option<BlockInfo>, BlockError> {
        loop {
            match look(self.arena, self.position) {
                Step::Block(info) => {
                    self.position = info.offset + info.size;
                    return Ok(Some(info));
                }
                Step::End => return Ok(None),
                Step::Lost(error) => {
                    if self.resyncs >= MAX_RESYNCS {
                        return Err(error);
                    }
                    self.resyncs += 1;
                    crate::sync::spin_hint();
                    self.resync();
                }
            }
        }
    }

    /// Finds where the chain crosses the lost position now: walks from the
    /// arena start, without reporting, to the first block that starts at or
    /// after it. A block that now covers the position (a merge absorbed the
    /// block the walk was about to report) was reported already, with the
    /// size it had then; the walk goes on after it. Any inconsistency on the
    /// way leaves the position as it was, for the next round.
    fn resync(&mut self) {
        let target = self.position;
        let mut at = self.arena.arena_start();
        while at < target {
            match look(self.arena, at) {
                Step::Block(info) => at = info.offset + info.size,
                Step::End => break,
                Step::Lost(_) => return,
            }
        }
        self.position = at;
    }
}

impl<A: Arena> Iterator for ChainWalk<'_, A> {
    type Item = Result<BlockInfo, BlockError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(info)) => Some(Ok(info)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Totals over the chain and the wilderness.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ArenaStats {
    /// Arena bytes (segment minus its header).
    pub total_bytes: u64,
    /// Bytes in blocks that are neither FREE nor CACHED (headers included).
    pub used_bytes: u64,
    /// Bytes in FREE and CACHED blocks plus the wilderness.
    pub free_bytes: u64,
    /// Bytes in blocks held in thread caches (part of `free_bytes`).
    pub cached_bytes: u64,
    /// FREE blocks, plus one for a non-empty wilderness.
    pub free_blocks: u64,
    /// Blocks that are neither FREE nor CACHED.
    pub used_blocks: u64,
    /// Largest payload one allocation could get right now.
    pub largest_free: u32,
    /// Bytes of the untouched wilderness.
    pub wilderness_bytes: u64,
    /// Block count by state (user states each under their own number).
    pub blocks_by_state: std::collections::BTreeMap<u32, u64>,
    /// `1 - largest_free_block / free_bytes`: 0 when all free memory is one block.
    pub fragmentation: f64,
}

/// Walks the chain and sums it. Errors if the chain is corrupt.
pub fn stats<A: Arena>(arena: &A) -> Result<ArenaStats, BlockError> {
    let mut s = ArenaStats {
        total_bytes: (arena.arena_end() - arena.arena_start()) as u64,
        ..Default::default()
    };
    let mut largest_block = 0u64;
    let mut end = arena.arena_start();
    for info in walk(arena) {
        let info = info?;
        end = info.offset + info.size;
        *s.blocks_by_state.entry(info.state).or_default() += 1;
        if info.state == state::FREE && !info.carving {
            s.free_bytes += info.size as u64;
            s.free_blocks += 1;
            largest_block = largest_block.max(info.size as u64);
        } else if info.state == state::CACHED {
            s.free_bytes += info.size as u64;
            s.cached_bytes += info.size as u64;
        } else {
            s.used_bytes += info.size as u64;
            s.used_blocks += 1;
        }
    }
    let wilderness = (arena.arena_end() as u64).saturating_sub(end as u64);
    if wilderness > 0 {
        s.wilderness_bytes = wilderness;
        s.free_bytes += wilderness;
        s.free_blocks += 1;
        largest_block = largest_block.max(wilderness);
    }
    s.largest_free = largest_block
        .saturating_sub(BLOCK_HEADER_SIZE as u64)
        .min(u32::MAX as u64) as u32;
    s.fragmentation = if s.free_bytes == 0 {
        0.0
    } else {
        1.0 - largest_block as f64 / s.free_bytes as f64
    };
    Ok(s)
}

/// Largest payload a free block or the wilderness could give (0 if the chain is corrupt).
pub fn largest_free_payload<A: Arena>(arena: &A) -> u32 {
    stats(arena).map(|s| s.largest_free).unwrap_or(0)
}
