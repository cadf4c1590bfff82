//! Walking the physical chain: every block from `arena_start` to `top`.
//!
//! Exact at quiescence. Under concurrency it is weakly consistent: a block
//! may be seen before or after a concurrent split or merge. A carve in
//! progress (its header not yet written) is stepped over using the carver's
//! recorded intent. The walk is bounded: each step moves forward by at least
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
    pub generation: u32,
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
    /// Payload capacity.
    pub fn payload_size(&self) -> u32 {
        self.size - BLOCK_HEADER_SIZE
    }
}

/// Iterator over the chain; see the module docs.
pub struct ChainWalk<'a, A: Arena> {
    arena: &'a A,
    position: u32,
    previous: Option<(u32, u32)>,
    done: bool,
}

/// Walks the chain of `arena`.
pub fn walk<A: Arena>(arena: &A) -> ChainWalk<'_, A> {
    ChainWalk {
        arena,
        position: arena.arena_start(),
        previous: None,
        done: false,
    }
}

/// The size of the carve some participant has in progress at `offset`, if any.
pub(crate) fn carve_in_progress<A: Arena>(arena: &A, offset: u32) -> Option<u32> {
    arena.segment().participants.iter().find_map(|slot| {
        slot.carve_intents.iter().find_map(|e| {
            // SeqCst: pairs with the carver's intent store (see alloc::carve).
            let v = e.load(SeqCst);
            (v > 1 && v as u32 == offset).then_some((v >> 32) as u32)
        })
    })
}

impl<A: Arena> ChainWalk<'_, A> {
    fn step(&mut self) -> Result<Option<BlockInfo>, BlockError> {
        let arena = self.arena;
        // Acquire: pairs with the SeqCst CAS of a carver or retracter, so
        // headers below the `top` seen here were published before it moved.
        let top = arena.segment().top.load(Acquire).min(arena.arena_end());
        let offset = self.position;
        if offset >= top {
            return Ok(None);
        }
        let corrupt = |what| Err(BlockError::Corrupted { offset, what });
        let Some(hdr) = arena.header(offset) else {
            return corrupt("chain leaves the arena");
        };
        // Acquire: pairs with the Release that published (or, in a merge,
        // cleared) this header's check word.
        if hdr.check.load(Acquire) != header_check(offset) {
            // A merge may have absorbed this header after we read the
            // predecessor's size: re-read it and step again.
            if let Some((prev, prev_size)) = self.previous {
                let now = arena
                    .header(prev)
                    .map(|h| h.size.load(Acquire))
                    .unwrap_or(prev_size);
                if now != prev_size && now >= MIN_BLOCK && prev as u64 + now as u64 > offset as u64
                {
                    self.position = prev + now;
                    self.previous = Some((prev, now));
                    return self.step();
                }
            }
            if let Some(size) = carve_in_progress(arena, offset) {
                self.position = offset.saturating_add(size.max(MIN_BLOCK));
                return Ok(Some(BlockInfo {
                    offset,
                    size,
                    state: state::ALLOCATED,
                    generation: 0,
                    owner: OwnerId::SEGMENT,
                    type_tag: 0,
                    carving: true,
                }));
            }
            // Acquire: as above; a retract may have moved `top` meanwhile.
            if arena.segment().top.load(Acquire) <= offset {
                return Ok(None); // retracted into the wilderness meanwhile
            }
            return Err(BlockError::NotABlock { offset });
        }
        let size = hdr.size.load(Acquire);
        if size < MIN_BLOCK || size % BLOCK_ALIGN != 0 || offset as u64 + size as u64 > top as u64 {
            return corrupt("impossible block size");
        }
        // Acquire: pairs with the Release store of the state (mark_allocated,
        // set_state) so the owner and tag read next are the ones it published.
        let word = hdr.state.load(Acquire);
        self.previous = Some((offset, size));
        self.position = offset + size;
        Ok(Some(BlockInfo {
            offset,
            size,
            state: state::state_of(word),
            generation: state::generation_of(word),
            owner: OwnerId(hdr.owner.load(Acquire)),
            type_tag: hdr.type_tag.load(Acquire),
            carving: false,
        }))
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
