//! allocate and free.
//!
//! ```text
//! allocate(n):  size = round16(n + 32)
//!   1. own class:   pop heads[class_of(size)] if its head block is big enough
//!   2. round up:    first non-empty bucket >= class_at_least(size) (bitmaps), pop
//!   3. wilderness:  CAS top += size
//!   4. cold path:   consolidate (or wait for the running one), retry 1-3, else OOM
//!   then: split the tail off if it can hold a block (remainder header written
//!   completely, then the size shrunk with Release, then the remainder pushed),
//!   owner + generation + ALLOCATED stored with Release.
//!
//! free(block): CAS (gen, ALLOCATED|user) -> (gen, ACKED)   -- the double-free check
//!              store (gen, FREE), push (its Release publishes FREE)
//! ```
//!
//! A popped block belongs to the popper alone: nobody else can reach it
//! through the index, and walkers only read it. That is the whole ownership
//! argument: every block is in exactly one of {a bucket, one participant's
//! hands, the chain as a live block}.

use crate::arena::{Arena, OwnerId};
use crate::error::{AllocError, BlockError};
use crate::free_index;
use crate::layout::{
    header_check, BlockHeader, BLOCK_ALIGN, BLOCK_HEADER_SIZE, MIN_BLOCK, MIN_PAYLOAD,
};
use crate::size_class::{class_at_least, class_of};
use crate::state::{self, ACKED, ALLOCATED, CACHED, COALESCING, FREE};
use crate::sync::AtomicU64;
use crate::sync::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};

/// Block size (header included) for a payload of `payload` bytes.
#[inline]
pub fn block_size_for<A: Arena>(arena: &A, payload: u64) -> Result<u32, AllocError> {
    let arena_len = (arena.arena_end() - arena.arena_start()) as u64;
    let size =
        (payload.max(MIN_PAYLOAD as u64) + BLOCK_HEADER_SIZE as u64 + (BLOCK_ALIGN as u64 - 1))
            & !(BLOCK_ALIGN as u64 - 1);
    if size > arena_len {
        return Err(AllocError::TooLarge {
            requested: payload,
            max_payload: arena_len.saturating_sub(BLOCK_HEADER_SIZE as u64),
        });
    }
    Ok(size as u32)
}

/// Allocates a block with at least `payload` bytes; returns its header offset.
#[inline]
pub fn allocate<A: Arena>(arena: &A, payload: u64, type_tag: u32) -> Result<u32, AllocError> {
    let size = block_size_for(arena, payload)?;
    allocate_sized(arena, size, payload, type_tag)
}

/// [`allocate`] with the block size already computed by [`block_size_for`].
#[inline]
pub fn allocate_sized<A: Arena>(
    arena: &A,
    size: u32,
    payload: u64,
    type_tag: u32,
) -> Result<u32, AllocError> {
    let offset = match take_free_block(arena, size)? {
        Some(offset) => offset,
        None => match carve(arena, size) {
            Some(carved) => return Ok(carved_marked(arena, carved, payload, type_tag)),
            None => return allocate_slow(arena, size, payload, type_tag),
        },
    };
    finish(arena, offset, size, payload, type_tag)
}

fn carved_marked<A: Arena>(arena: &A, carved: Carved<'_>, payload: u64, type_tag: u32) -> u32 {
    let hdr = arena
        .header(carved.offset)
        .expect("carved block is in bounds");
    mark_allocated(arena, hdr, payload, type_tag);
    if let Some(intent) = carved.intent {
        // Release: recovery that sees the intent gone sees the header. The
        // entry is this carve's own: a sibling thread of this participant
        // may hold another entry naming the same offset (a retract).
        intent.store(0, Release);
    }
    carved.offset
}

#[cold]
fn allocate_slow<A: Arena>(
    arena: &A,
    size: u32,
    payload: u64,
    type_tag: u32,
) -> Result<u32, AllocError> {
    arena.flush_local_cache();
    crate::consolidate::consolidate_or_wait(arena)?;
    if let Some(offset) = take_free_block(arena, size)? {
        return finish(arena, offset, size, payload, type_tag);
    }
    if let Some(carved) = carve(arena, size) {
        return Ok(carved_marked(arena, carved, payload, type_tag));
    }
    // Relaxed: statistics only.
    arena.segment().counters.out_of_memory.fetch_add(1, Relaxed);
    Err(AllocError::OutOfMemory {
        requested: payload,
        largest_free: crate::walk::largest_free_payload(arena),
    })
}

/// Pops a block of at least `size` bytes from the free index.
#[inline]
fn take_free_block<A: Arena>(arena: &A, size: u32) -> Result<Option<u32>, AllocError> {
    let index = &arena.segment().index;
    // The request's own class first: a freed 4 KiB block sits in the class of
    // 4 KiB, one below where the round-up search starts.
    let own = class_of(size);
    if let Some(offset) = free_index::pop(arena, own, size)? {
        return Ok(Some(offset));
    }
    let Some(mut from) = class_at_least(size) else {
        return Ok(None);
    };
    // Bounded: each round either pops, or clears a bit that a concurrent
    // push may set again; after this many rounds the wilderness is tried.
    for _ in 0..64 {
        let Some(class) = free_index::find_nonempty(index, from) else {
            return Ok(None);
        };
        match free_index::pop(arena, class, 0)? {
            Some(offset) => return Ok(Some(offset)),
            None => {
                free_index::clear_if_empty(index, class);
                from = class;
            }
        }
    }
    Ok(None)
}

/// Splits and marks a popped block.
#[inline]
fn finish<A: Arena>(
    arena: &A,
    offset: u32,
    size: u32,
    payload: u64,
    type_tag: u32,
) -> Result<u32, AllocError> {
    let hdr = arena
        .header(offset)
        .expect("popped offsets were bounds-checked");
    crate::fault::at(crate::fault::ALLOC_POPPED);
    // A list entry must be a genuine FREE header; anything else is a corrupt
    // link (into a live block or a payload): hand nothing out.
    // Relaxed: the pop's Acquire CAS ordered the pusher's stores before these.
    if hdr.check.load(Relaxed) != header_check(offset)
        || state::state_of(hdr.state.load(Relaxed)) != FREE
    {
        return Err(AllocError::Corrupted {
            offset,
            what: "free-list entry is not a free block",
        });
    }
    // Relaxed: the pop's Acquire CAS ordered this after the pusher's stores.
    let block_size = hdr.size.load(Relaxed);
    if block_size < size || block_size % BLOCK_ALIGN != 0 || !fits(arena, offset, block_size) {
        // A damaged block: keep it out of circulation rather than hand it out.
        return Err(AllocError::Corrupted {
            offset,
            what: "free block with an impossible size",
        });
    }
    if block_size - size >= MIN_BLOCK {
        let rest = offset + size;
        let rest_hdr = arena.header(rest).expect("inside a checked block");
        write_free_header(rest_hdr, rest, block_size - size);
        crate::fault::at(crate::fault::ALLOC_SPLITTING);
        // Release: a walker that reads the new size also sees the complete
        // remainder header written just above.
        hdr.size.store(size, Release);
        free_index::push(
            &arena.segment().index,
            rest_hdr,
            rest,
            class_of(block_size - size),
        );
    }
    mark_allocated(arena, hdr, payload, type_tag);
    Ok(offset)
}

#[inline]
fn fits<A: Arena>(arena: &A, offset: u32, size: u32) -> bool {
    size >= MIN_BLOCK && offset as u64 + size as u64 <= arena.arena_end() as u64
}

/// Hands a block this participant holds exclusively (popped, carved or
/// cached) to the caller: next generation, owner, tag, ALLOCATED.
#[inline]
pub fn mark_allocated<A: Arena>(arena: &A, hdr: &BlockHeader, payload: u64, type_tag: u32) {
    mark_allocated_as(arena, hdr, payload, type_tag, arena.next_generation());
}

/// [`mark_allocated`] with a generation the caller already took from
/// [`Arena::next_generation`] (or a range reserved from it).
#[inline]
pub fn mark_allocated_as<A: Arena>(
    arena: &A,
    hdr: &BlockHeader,
    payload: u64,
    type_tag: u32,
    generation: u32,
) {
    // Relaxed: published by the Release store of the state word below.
    hdr.owner.store(arena.owner().0, Relaxed);
    hdr.type_tag.store(type_tag, Relaxed);
    hdr.requested
        .store(payload.min(u32::MAX as u64) as u32, Relaxed);
    // Release: whoever Acquires the state word (free, lookups, recovery,
    // walkers) sees the owner, tag and size stored before it.
    hdr.state.store(state::pack(generation, ALLOCATED), Release);
}

/// Writes a complete FREE header for a new block at `offset`. The generation
/// field keeps whatever the memory held; the next allocation replaces it with
/// a fresh one from [`Arena::next_generation`].
pub(crate) fn write_free_header(hdr: &BlockHeader, offset: u32, size: u32) {
    let generation = state::generation_of(hdr.state.load(Relaxed));
    hdr.size.store(size, Relaxed);
    hdr.next_free.store(0, Relaxed);
    // Relaxed stores: see the note at the end of this function.
    hdr.owner.store(0, Relaxed);
    hdr.type_tag.store(0, Relaxed);
    hdr.requested.store(0, Relaxed);
    hdr.state.store(state::pack(generation, FREE), Relaxed);
    // Relaxed: the header is published by the caller's Release (a size
    // store, a push, or the state store of `mark_allocated`).
    hdr.check.store(header_check(offset), Relaxed);
}

/// A block just carved from the wilderness, and the intent entry that
/// records the carve until the block is marked.
struct Carved<'a> {
    offset: u32,
    intent: Option<&'a AtomicU64>,
}

/// Carves `size` bytes from the wilderness; returns the new block's offset
/// with a complete FREE header and the carve intent still recorded.
fn carve<A: Arena>(arena: &A, size: u32) -> Option<Carved<'_>> {
    let seg = arena.segment();
    // An intent entry of this participant, claimed by CAS from 0 to the
    // placeholder 1 (Acquire: after its last holder's Release of 0; the
    // Relaxed pre-check only skips entries that are visibly taken).
    let intent = arena.my_slot().and_then(|slot| {
        slot.carve_intents
            .iter()
            .find(|e| e.load(Relaxed) == 0 && e.compare_exchange(0, 1, Acquire, Relaxed).is_ok())
    });
    // Relaxed: only the CAS's expected value; the CAS decides.
    let mut top = seg.top.load(Relaxed);
    loop {
        if top as u64 + size as u64 > arena.arena_end() as u64 || top < arena.arena_start() {
            if let Some(e) = intent {
                e.store(0, Release);
            }
            return None;
        }
        if let Some(e) = intent {
            // SeqCst: recovery reads `top`, then the intents (SeqCst); a carve
            // that moved `top` is visible to it as an intent or as a header.
            e.store(((size as u64) << 32) | top as u64, SeqCst);
        }
        match seg
            .top
            .compare_exchange_weak(top, top + size, SeqCst, Relaxed)
        {
            Ok(_) => break,
            Err(actual) => top = actual,
        }
    }
    let hdr = arena.header(top)?;
    crate::fault::at(crate::fault::CARVED);
    write_free_header(hdr, top, size);
    crate::fault::at(crate::fault::CARVE_WRITTEN);
    Some(Carved {
        offset: top,
        intent,
    })
}

/// Checks that `offset` is a genuine, sane block header and returns it with its size.
#[inline]
pub fn checked_header<A: Arena>(arena: &A, offset: u32) -> Result<(&BlockHeader, u32), BlockError> {
    if offset % BLOCK_ALIGN != 0 {
        return Err(BlockError::Misaligned { offset });
    }
    // Bounded by `top`, not just the arena end: a participant killed
    // mid-split can leave a stale (FREE) header inside a block that later
    // returns to the wilderness, and nothing above `top` is a block.
    let top = arena.segment().top.load(Acquire).min(arena.arena_end());
    if offset < arena.arena_start() || offset as u64 + MIN_BLOCK as u64 > top as u64 {
        return Err(BlockError::OutOfBounds {
            offset,
            arena_start: arena.arena_start(),
            arena_end: top,
        });
    }
    let hdr = arena.header(offset).ok_or(BlockError::OutOfBounds {
        offset,
        arena_start: arena.arena_start(),
        arena_end: top,
    })?;
    // Acquire: pairs with the Release that published the header.
    if hdr.check.load(Acquire) != header_check(offset) {
        return Err(BlockError::NotABlock { offset });
    }
    let size = hdr.size.load(Acquire);
    if size < MIN_BLOCK || size % BLOCK_ALIGN != 0 || offset as u64 + size as u64 > top as u64 {
        return Err(BlockError::Corrupted {
            offset,
            what: "impossible block size",
        });
    }
    Ok((hdr, size))
}

/// Frees the block whose header is at `offset`. With `generation`, the block
/// must still be that generation (a stale handle is refused).
pub fn free<A: Arena>(arena: &A, offset: u32, generation: Option<u32>) -> Result<(), BlockError> {
    if let Some((hdr, size)) = retire(arena, offset, generation, ACKED)? {
        release_block(arena, hdr, offset, size);
    }
    Ok(())
}

/// The double-free check: moves a live block (ALLOCATED or a user state) to
/// `into` (ACKED, or CACHED for a thread cache) with one CAS on the state
/// word, so exactly one of two racing frees wins and a stale generation never
/// matches. Then takes the block's owner word, so a recovery of the block's
/// previous (dead) owner cannot return the block a second time.
///
/// Returns the header and block size when the caller now holds the block,
/// or `None` when a recoverer claimed the owner word first: the block was
/// already the dead owner's to reclaim, and the recoverer returns it.
///
/// ```text
///  freer:     state live -> ACKED/CACHED,  then owner prev -> me  (CAS)
///  recoverer: owner dead -> RECLAIMING (CAS), then state -> ACKED, release
///  whoever wins the owner word returns the block; the other leaves it.
/// ```
#[inline]
pub fn retire<A: Arena>(
    arena: &A,
    offset: u32,
    generation: Option<u32>,
    into: u32,
) -> Result<Option<(&BlockHeader, u32)>, BlockError> {
    let (hdr, size) = checked_header(arena, offset)?;
    let me = arena.owner().0;
    // Acquire: pairs with mark_allocated's Release.
    let mut word = hdr.state.load(Acquire);
    loop {
        let (gen, st) = (state::generation_of(word), state::state_of(word));
        if let Some(expected) = generation {
            if expected != gen {
                return Err(BlockError::Stale {
                    offset,
                    expected,
                    found: gen,
                });
            }
        }
        match st {
            FREE | ACKED | CACHED => return Err(BlockError::DoubleFree { offset }),
            COALESCING => return Err(BlockError::NotLive { offset, state: st }),
            s if state::is_reserved(s) => {
                return Err(BlockError::ReservedState { offset, state: s })
            }
            _ => {}
        }
        // The owner as it stands with `word`, read before the state CAS: if
        // anyone (a recoverer) changes it afterwards, our owner CAS fails.
        // Acquire: pairs with the Release of whoever stored it
        // (mark_allocated, set_owner, a recoverer's claim).
        let prev = hdr.owner.load(Acquire);
        if prev == OwnerId::RECLAIMING.0 {
            return Ok(None); // the dead owner's recoverer returns it
        }
        // AcqRel: Acquire so the payload writes of whoever set this state
        // happen before the block is reused; Release so a recoverer that
        // Acquires the new state sees this participant's earlier writes.
        match hdr
            .state
            .compare_exchange(word, state::pack(gen, into), AcqRel, Acquire)
        {
            Ok(_) if prev == me => {
                crate::fault::at(crate::fault::RETIRED);
                return Ok(Some((hdr, size)));
            }
            Ok(_) => {
                // AcqRel: the word a recoverer claims with a CAS, so exactly
                // one of us holds the block; Release so a recoverer reading
                // this owner after Acquiring the state sees it is held.
                return Ok(hdr
                    .owner
                    .compare_exchange(prev, me, AcqRel, Relaxed)
                    .ok()
                    .map(|_| (hdr, size)));
            }
            Err(actual) => word = actual,
        }
    }
}

/// Returns a block this participant holds exclusively (ACKED, COALESCING or
/// CACHED) to the free index.
pub fn release_block<A: Arena>(arena: &A, hdr: &BlockHeader, offset: u32, size: u32) {
    let gen = state::generation_of(hdr.state.load(Relaxed));
    // Release: a `set_owner` that Acquires this owner also sees the block
    // is no longer live (the ACKED/COALESCING/CACHED state stored before).
    hdr.owner.store(OwnerId::SEGMENT.0, Release);
    crate::fault::at(crate::fault::RELEASE_OWNER);
    // Relaxed: the push's Release publishes FREE. Storing FREE after the push
    // could overwrite the ALLOCATED of whoever pops it next.
    hdr.state.store(state::pack(gen, FREE), Relaxed);
    crate::fault::at(crate::fault::RELEASE_FREE);
    free_index::push(&arena.segment().index, hdr, offset, class_of(size));
}

/// Moves ownership of a live block from `from` to `to` (CAS on the owner word).
pub fn set_owner<A: Arena>(
    arena: &A,
    offset: u32,
    from: Option<OwnerId>,
    to: OwnerId,
) -> Result<OwnerId, BlockError> {
    set_owner_of(arena, offset, None, from, to)
}

/// [`set_owner`], and with `generation` only while the block is still that
/// generation (a handle to a block freed and re-allocated since is refused).
pub fn set_owner_of<A: Arena>(
    arena: &A,
    offset: u32,
    generation: Option<u32>,
    from: Option<OwnerId>,
    to: OwnerId,
) -> Result<OwnerId, BlockError> {
    let (hdr, _) = checked_header(arena, offset)?;
    loop {
        // The owner first, then the state: a recoverer claims the owner word
        // before it frees the block, so a live state read after this owner
        // means the CAS below can only succeed on a block still live.
        // Acquire: pairs with the Release of the last owner change.
        let current = hdr.owner.load(Acquire);
        // Acquire: pairs with the Release of the last state change.
        let word = hdr.state.load(Acquire);
        let st = state::state_of(word);
        if !state::is_live(st) {
            return Err(BlockError::NotLive { offset, state: st });
        }
        if let Some(expected) = generation {
            let found = state::generation_of(word);
            if found != expected {
                return Err(BlockError::Stale {
                    offset,
                    expected,
                    found,
                });
            }
        }
        if current == OwnerId::RECLAIMING.0 {
            // A recoverer claimed the block of its dead owner first.
            return Err(BlockError::NotLive {
                offset,
                state: ACKED,
            });
        }
        if let Some(f) = from {
            if f.0 != current {
                return Err(BlockError::Corrupted {
                    offset,
                    what: "owner changed concurrently",
                });
            }
        }
        // AcqRel: ownership hand-over orders with the recovery that claims
        // the same word with a CAS.
        if hdr
            .owner
            .compare_exchange(current, to.0, AcqRel, Relaxed)
            .is_ok()
        {
            return Ok(OwnerId(current));
        }
    }
}
