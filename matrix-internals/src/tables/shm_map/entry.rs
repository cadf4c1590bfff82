//! One entry of a [`ShmMap`](super::ShmMap): a block holding the key's hash,
//! the value and the key's bytes, written once before it is published and
//! never changed after.
//!
//! ```text
//!  payload: hash u64 | key_len u32 | value_size u32 | value V | key bytes
//! ```
//!
//! The value's own blocks (a `ShmVec`'s buffer, the strings inside it) are
//! named by the tokens inside `V`; [`OwnsBlocks::visit_blocks`] finds them.

use crate::dynamic::{DynError, OwnsBlocks};
use crate::sync::Ordering::Acquire;
use matrix_core::{state, BlockError, OwnerId, BLOCK_HEADER_SIZE};
use matrix_handler::{BlockToken, HandlerError, HandlerFunctions, ShmSafe};

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct EntryHead<V> {
    pub(crate) hash: u64,
    pub(crate) key_len: u32,
    pub(crate) value_size: u32,
    pub(crate) value: V,
}

/// An entry read from the segment.
pub(crate) struct Entry<'a, V> {
    pub(crate) hash: u64,
    pub(crate) value: V,
    pub(crate) key: &'a [u8],
}

pub(crate) const fn head_bytes<V>() -> usize {
    std::mem::size_of::<EntryHead<V>>()
}

/// Allocates and writes an entry (owned by this participant).
pub(crate) fn build<V: ShmSafe + Copy, H: HandlerFunctions>(
    h: &H,
    hash: u64,
    key: &[u8],
    value: V,
) -> Result<BlockToken, HandlerError> {
    let bytes = head_bytes::<V>() + key.len();
    let b = h.allocate_array::<u8>(bytes)?;
    let head = EntryHead {
        hash,
        key_len: key.len() as u32,
        value_size: std::mem::size_of::<V>() as u32,
        value,
    };
    let at = b.offset() as usize;
    // SAFETY: `b` was just allocated with `bytes` bytes of payload at `at`
    // (16-aligned, and EntryHead<V> is at most 16-aligned, checked by the
    // map); no other participant knows the block yet, so nothing reads or
    // writes these bytes meanwhile.
    unsafe {
        let base = h.base_ptr().add(at) as *mut u8;
        std::ptr::write(base as *mut EntryHead<V>, head);
        std::ptr::copy_nonoverlapping(key.as_ptr(), base.add(head_bytes::<V>()), key.len());
    }
    Ok(b.token())
}

/// Reads the entry named by `token`, bounds-checked against its block.
/// `None`: no such live entry (freed since, or not an entry).
pub(crate) fn read<V: ShmSafe + Copy, H: HandlerFunctions>(
    h: &H,
    token: BlockToken,
) -> Option<Entry<'_, V>> {
    let b = h.block_from_token::<u8>(token).ok()?;
    let (ptr, len) = {
        let all = h.get_slice(&b).ok()?;
        (all.as_ptr(), all.len())
    };
    crate::shm::fault::at(crate::shm::fault::MAP_ENTRY_CHECKED);
    // SAFETY: `get_slice` validated `len` bytes of a live block inside
    // `h`'s mapping, which lives as long as `h` is borrowed; u8 has no
    // invalid values whatever another process writes there later (a
    // changed entry is caught by the caller's re-validation of its slot).
    let bytes: &[u8] = unsafe { std::slice::from_raw_parts(ptr, len) };
    if bytes.len() < head_bytes::<V>() {
        return None;
    }
    // SAFETY: the slice holds at least size_of::<EntryHead<V>>() bytes of a
    // live block inside `h`'s mapping; EntryHead<V> is made of integers and
    // a ShmSafe V, so every bit pattern is a valid value; read_unaligned
    // copies it out whatever the alignment.
    let head: EntryHead<V> =
        unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const EntryHead<V>) };
    let key = bytes
        .get(head_bytes::<V>()..)?
        .get(..head.key_len as usize)?;
    if head.value_size as usize != std::mem::size_of::<V>() {
        return None;
    }
    Some(Entry {
        hash: head.hash,
        value: head.value,
        key,
    })
}

/// The header offset and full generation of the block `token` names, if it
/// is still that block and live.
fn current(h: &impl HandlerFunctions, token: BlockToken) -> Result<(u32, u64, u32), HandlerError> {
    if token.nonce() != h.segment_nonce() {
        return Err(HandlerError::InvalidOffset(token.offset()));
    }
    let header = token
        .offset()
        .checked_sub(BLOCK_HEADER_SIZE)
        .ok_or(HandlerError::InvalidOffset(token.offset()))?;
    let (hdr, _) = h.matrix().block_header(header)?;
    // Acquire: pairs with the Release that published the block's word.
    let word = hdr.state.load(Acquire);
    let generation = state::generation_of(word);
    if !token.matches_generation(generation) {
        return Err(BlockError::Stale {
            offset: header,
            expected: token.generation(),
            found: generation,
        }
        .into());
    }
    Ok((header, generation, state::owner_of(word)))
}

/// Frees the block `token` names if it is still that block (the free's
/// CAS re-checks the generation, so a block re-allocated meanwhile is
/// refused).
pub(crate) fn free_token(h: &impl HandlerFunctions, token: BlockToken) -> bool {
    match current(h, token) {
        Ok((header, generation, _)) => h.matrix().free(header, Some(generation)).is_ok(),
        Err(_) => false,
    }
}

/// Gives the block `token` names to the segment, if it is still that block
/// and this participant's; `false` if it was the segment's already.
fn release_token(h: &impl HandlerFunctions, token: BlockToken) -> Result<bool, DynError> {
    let (header, generation, owner) = current(h, token)?;
    if owner == OwnerId::SEGMENT.0 {
        return Ok(false);
    }
    let me = h.matrix().owner_id();
    h.matrix()
        .set_owner_of(header, generation, Some(me), OwnerId::SEGMENT)
        .map_err(|e| DynError::from(HandlerError::from(e)))?;
    Ok(true)
}

/// Every block of the entry `token` names, the entry first (pre-order).
pub(crate) fn blocks_of<V: ShmSafe + Copy + OwnsBlocks, H: HandlerFunctions>(
    h: &H,
    token: BlockToken,
) -> Vec<BlockToken> {
    let mut all = vec![token];
    if let Some(e) = read::<V, H>(h, token) {
        e.value.visit_blocks(h, &mut |t| all.push(t));
    }
    all
}

/// Frees every block of the entry that is still live, the entry last, so
/// that a freer killed half way leaves an entry through which the rest is
/// found again. Returns the blocks freed.
pub(crate) fn free_entry<V: ShmSafe + Copy + OwnsBlocks, H: HandlerFunctions>(
    h: &H,
    token: BlockToken,
) -> usize {
    let all = blocks_of::<V, H>(h, token);
    all.iter().rev().filter(|&&t| free_token(h, t)).count()
}

/// Hands the entry and every block of its value to the segment, outer
/// blocks first (see [`free_entry`] for why that order). On an error the
/// blocks handed over are taken back.
pub(crate) fn hand_over<V: ShmSafe + Copy + OwnsBlocks, H: HandlerFunctions>(
    h: &H,
    token: BlockToken,
    value: &V,
) -> Result<(), DynError> {
    let mut all = vec![token];
    value.visit_blocks(h, &mut |t| all.push(t));
    let mut moved = Vec::with_capacity(all.len());
    for &t in &all {
        crate::shm::fault::at(crate::shm::fault::MAP_HANDING_OVER);
        match release_token(h, t) {
            Ok(true) => moved.push(t),
            Ok(false) => {}
            Err(e) => {
                let me = h.matrix().owner_id();
                for &back in &moved {
                    if let Ok((header, generation, _)) = current(h, back) {
                        let _ =
                            h.matrix()
                                .set_owner_of(header, generation, Some(OwnerId::SEGMENT), me);
                    }
                }
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Undoes [`hand_over`] for the value's blocks (they are the caller's
/// again) and frees the entry block alone: an insert that could not link.
pub(crate) fn give_back<V: ShmSafe + Copy + OwnsBlocks, H: HandlerFunctions>(
    h: &H,
    token: BlockToken,
    value: &V,
) {
    let me = h.matrix().owner_id();
    value.visit_blocks(h, &mut |t| {
        if let Ok((header, generation, _)) = current(h, t) {
            let _ = h
                .matrix()
                .set_owner_of(header, generation, Some(OwnerId::SEGMENT), me);
        }
    });
    free_token(h, token);
}
