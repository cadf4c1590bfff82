//! Handle validation: segment identity, payload bounds under concurrent
//! re-allocation, size overflow, and the orderings state loads accept.

mod common;

use matrix_handler::{
    AllocError, Block, BlockError, HandlerError, HandlerFunctions, MatrixHandler,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// 16 KiB of plain data.
type Wide = [[u8; 4096]; 4];

/// A segment with a few KiB of arena.
const SMALL: u32 = matrix_core::layout::ARENA_START + (4 << 10);

/// Two fresh arenas of the same layout allocate their first block at the
/// same offset with the same generation, so only the segment nonce tells
/// the handles apart. A 16 KiB block of the big arena names, in the small
/// one, a 16-byte block whose payload ends well before 16 KiB.
#[test]
fn handles_and_tokens_of_another_segment_are_refused() {
    let big = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    let small = MatrixHandler::bootstrap(None, SMALL).unwrap();
    let mut wide = big.allocate::<Wide>().unwrap();
    let theirs = small.allocate::<u64>().unwrap();
    assert_eq!(wide.offset(), theirs.offset(), "same layout, same offset");
    assert_eq!(wide.generation(), theirs.generation(), "same generation");
    assert_ne!(big.segment_nonce(), small.segment_nonce());
    let foreign = |r: Result<(), HandlerError>| {
        matches!(r, Err(HandlerError::ForeignHandle { expected, found })
            if expected == small.segment_nonce() && found == big.segment_nonce())
    };

    // Reading 16 KiB at that offset of the small mapping would fault.
    assert!(foreign(small.read_pod(&wide).map(drop)));
    assert!(foreign(small.write_pod(&mut wide, [[7; 4096]; 4])));
    let mut out = [[[0u8; 4096]; 4]; 1];
    assert!(foreign(small.read_slice(&wide, &mut out)));
    assert!(foreign(small.write_slice(&mut wide, &out)));
    assert!(foreign(small.set_state(&wide, 60)));
    assert!(foreign(
        small.try_get_state(&wide, Ordering::Acquire).map(drop)
    ));
    assert!(foreign(
        small
            .transition_state(&wide, 1, 60, Ordering::AcqRel)
            .map(drop)
    ));
    assert!(foreign(small.adopt(&wide)));
    assert!(foreign(small.release_to_segment(&wide)));
    assert_eq!(small.get_state(&wide, Ordering::Acquire), 0, "reads FREE");

    // The rightful handler still uses its handle.
    assert_eq!(big.read_pod(&wide).unwrap()[0][0], 0);
    big.free(wide).unwrap();
    assert_eq!(small.get_state(&theirs, Ordering::Acquire), 1);
    small.free(theirs).unwrap();
}

/// A token of the same type, offset and generation from another segment is
/// refused, and a free through the wrong handler frees nothing.
#[test]
fn tokens_of_another_segment_are_refused() {
    let a = MatrixHandler::bootstrap(None, 1 << 16).unwrap();
    let b = MatrixHandler::bootstrap(None, 1 << 16).unwrap();
    let mut mine = a.allocate::<u64>().unwrap();
    a.write_pod(&mut mine, 5).unwrap();
    let twin = b.allocate::<u64>().unwrap();
    assert_eq!(
        (mine.offset(), mine.generation()),
        (twin.offset(), twin.generation())
    );
    let foreign =
        |r: Result<(), HandlerError>| matches!(r, Err(HandlerError::ForeignHandle { .. }));
    assert!(foreign(b.block_from_token::<u64>(mine.token()).map(drop)));
    assert!(foreign(a.block_from_token::<u64>(twin.token()).map(drop)));
    assert!(foreign(b.free(mine)));
    assert_eq!(b.get_state(&twin, Ordering::Acquire), 1, "still live");
    assert_eq!(b.stats().unwrap().used_blocks, 1);
    let again = a.block_from_token::<u64>(matrix_handler::BlockToken::from_u128(
        matrix_handler::BlockToken::from_word(twin.token().word(), a.segment_nonce()).to_u128(),
    ));
    assert_eq!(a.read_pod(&again.unwrap()).unwrap(), 5, "a's own block");
    b.free(twin).unwrap();
    assert!(HandlerError::ForeignHandle {
        expected: 1,
        found: 2
    }
    .to_string()
    .contains("use it with a handler of the segment that made it"));
}

/// The unchecked accessors cannot be steered outside the mapping either:
/// a foreign handle panics before any access.
#[test]
fn unchecked_accessors_refuse_a_foreign_handle() {
    let big = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    let small = MatrixHandler::bootstrap(None, SMALL).unwrap();
    let wide = big.allocate::<Wide>().unwrap();
    let _theirs = small.allocate::<u64>().unwrap();
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: deliberately broken promise; the accessor panics before
        // touching memory, which is what is tested.
        let _ = unsafe { small.read(&wide) }[0];
    }));
    let message = *read.unwrap_err().downcast::<String>().unwrap();
    assert!(message.contains("another segment"), "{message}");
}

const BIG: usize = 4096;
type Big = [u8; BIG];
/// States of the claim protocol between the re-allocating thread and the
/// racers: only the holder of CLAIMED writes, only the holder of TAKEN frees.
const AVAILABLE: u32 = 50;
const CLAIMED: u32 = 51;
const TAKEN: u32 = 52;

/// Whether `handle` claims more bytes than the block it names holds. Only
/// conclusive while the header is live and still carries the handle's
/// generation.
fn larger_than_its_block(h: &MatrixHandler, handle: &Block<Big>) -> bool {
    let Ok((hdr, _)) = h.matrix().block_header(handle.header_offset()) else {
        return false;
    };
    // Acquire (both state loads and the size): a seqlock read of the header,
    // pairing with the allocator's Release stores of size and state.
    let before = hdr.state.load(Ordering::Acquire);
    let size = hdr.size.load(Ordering::Acquire);
    let after = hdr.state.load(Ordering::Acquire);
    // Once freed, a block keeps its generation until re-allocated and may be
    // split meanwhile: only a live header is the handle's block.
    let live = matrix_core::state::is_live(matrix_core::state::state_of(before));
    before == after
        && live
        && matrix_core::state::generation_of(before) == handle.generation()
        && (handle.len() * BIG) as u64 > size as u64 - 32
}

/// Threads race `block_at::<[u8; 4096]>` on one offset while another thread
/// allocates a large block there, frees it, and re-allocates the same
/// memory split small, over and over. A handle may only ever be minted for
/// the large occupant; writes through claimed handles must leave the arena
/// sound.
#[test]
fn block_at_never_mints_a_handle_larger_than_its_block() {
    const CYCLES: u32 = 6_000;
    const RACERS: usize = 3;
    let h = Arc::new(MatrixHandler::bootstrap(None, 1 << 20).unwrap());
    // Untyped blocks, so the layout tag never refuses `Big`.
    let first = h.allocate_raw(2 * BIG as u32).unwrap();
    let _guard = h.allocate_raw(64).unwrap(); // keeps `first` off the wilderness
    let x = first.offset();
    h.free_at(x - 32).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let too_large = Arc::new(AtomicU64::new(0));
    let racers: Vec<_> = (0..RACERS)
        .map(|_| {
            let (h, stop, too_large) = (h.clone(), stop.clone(), too_large.clone());
            std::thread::spawn(move || {
                let mut writes = 0u64;
                // Relaxed: a stop flag; the join orders everything after it.
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut handle) = h.block_at::<Big>(x) else {
                        continue;
                    };
                    if larger_than_its_block(&h, &handle) {
                        // Relaxed: a counter read after the join.
                        too_large.fetch_add(1, Ordering::Relaxed);
                    }
                    let claim = h.transition_state(&handle, AVAILABLE, CLAIMED, Ordering::AcqRel);
                    if claim.is_ok() {
                        // Pinned by the claim: this check is conclusive.
                        if larger_than_its_block(&h, &handle) {
                            too_large.fetch_add(1, Ordering::Relaxed);
                        }
                        if h.write_pod(&mut handle, [0xA5; BIG]).is_ok() {
                            writes += 1;
                        }
                        h.transition_state(&handle, CLAIMED, AVAILABLE, Ordering::AcqRel)
                            .unwrap();
                    }
                }
                writes
            })
        })
        .collect();

    // One occupant of `x` at a time: allocate, offer it to the racers, take
    // it back, free it.
    let occupy = |payload: u32| -> Result<bool, HandlerError> {
        let ptr = h.allocate_raw(payload)?;
        let at_x = ptr.offset() == x;
        let mine = h.block_at::<u8>(ptr.offset())?;
        h.set_state(&mine, AVAILABLE)?;
        for _ in 0..256 {
            std::hint::spin_loop();
        }
        let mut spins = 0u64;
        loop {
            match h.transition_state(&mine, AVAILABLE, TAKEN, Ordering::AcqRel) {
                Ok(_) => break,
                Err(HandlerError::TransitionFailed(CLAIMED)) if spins < 1 << 30 => {
                    spins += 1;
                    std::thread::yield_now();
                }
                Err(e) => return Err(e),
            }
        }
        h.free(mine)?;
        h.matrix().flush_thread_cache();
        Ok(at_x)
    };
    let mut both_at_x = 0;
    let mut failure = None;
    for _ in 0..CYCLES {
        let cycle = occupy(2 * BIG as u32).and_then(|large| {
            let small = occupy(16)?;
            h.consolidate()?;
            Ok(large && small)
        });
        match cycle {
            Ok(hit) => both_at_x += u32::from(hit),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
        // Relaxed: a counter; a bad mint ends the run early.
        if too_large.load(Ordering::Relaxed) > 0 {
            break;
        }
    }
    // Relaxed: the joins below order the racers' last reads after it.
    stop.store(true, Ordering::Relaxed);
    let writes: u64 = racers.into_iter().map(|r| r.join().unwrap()).sum();
    // Relaxed: every racer has been joined.
    let bad = too_large.load(Ordering::Relaxed);
    assert_eq!(bad, 0, "{bad} handles minted larger than their block");
    assert!(failure.is_none(), "re-allocation failed: {failure:?}");
    assert!(
        both_at_x > 0,
        "the large and the small block never shared x"
    );
    assert!(writes > 0, "no racer ever wrote through a minted handle");
    if let Err(v) = matrix_testkit::check_invariants(&*h) {
        panic!("the arena is unsound after the race: {v:?}");
    }
}

/// A zero-length slice names a minimum block; reading one element of a
/// 64-byte type through it would read past the 16-byte payload.
#[test]
fn an_empty_slice_handle_reads_and_writes_nothing() {
    let h = MatrixHandler::bootstrap(None, 1 << 16).unwrap();
    let mut empty = h.allocate_slice::<[u64; 8]>(0).unwrap();
    assert!(empty.is_empty());
    assert!(matches!(
        h.read_pod(&empty),
        Err(HandlerError::Block(BlockError::TooSmall { .. }))
    ));
    assert!(matches!(
        h.write_pod(&mut empty, [1; 8]),
        Err(HandlerError::Block(BlockError::TooSmall { .. }))
    ));
    h.write_slice(&mut empty, &[]).unwrap();
    h.free(empty).unwrap();
}

#[test]
fn slice_and_raw_sizes_near_the_integer_limits_are_typed_errors() {
    let h = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    let before = h.stats().unwrap();
    // size × len overflows u64.
    let r = h.allocate_slice::<[u64; 1 << 12]>(usize::MAX / 2);
    assert!(
        matches!(r, Err(HandlerError::SliceTooLarge { len, elem_size, .. })
            if len == (usize::MAX / 2) as u64 && elem_size == 8 << 12),
        "{r:?}"
    );
    // 2^31 elements of 8 GiB: exactly 2^64 bytes, which a saturating
    // multiplication turns into u64::MAX and adding the header wraps.
    let r = h.allocate_slice::<[[[u8; 4096]; 4096]; 512]>(1 << 31);
    assert!(
        matches!(r, Err(HandlerError::SliceTooLarge { .. })),
        "{r:?}"
    );
    // Fits in u64, not in u32 elements.
    let r = h.allocate_slice::<u8>(u32::MAX as usize + 1);
    assert!(
        matches!(r, Err(HandlerError::SliceTooLarge { .. })),
        "{r:?}"
    );
    // Fits in u64 bytes, far beyond the segment (and beyond wrapping when the
    // header is added).
    let r = h.allocate_slice::<[[u8; 4096]; 256]>(1 << 40);
    assert!(
        matches!(r, Err(HandlerError::SliceTooLarge { .. })),
        "{r:?}"
    );
    let r = h.allocate_slice::<[u8; 4096]>(u32::MAX as usize);
    assert!(
        matches!(
            r,
            Err(HandlerError::AllocationFailed(AllocError::TooLarge { .. }))
        ),
        "{r:?}"
    );
    for size in [u32::MAX, u32::MAX - 15, u32::MAX - 40, 1 << 21] {
        let r = h.allocate_raw(size);
        assert!(
            matches!(
                r,
                Err(HandlerError::AllocationFailed(AllocError::TooLarge { .. }))
            ),
            "allocate_raw({size}): {r:?}"
        );
    }
    let after = h.stats().unwrap();
    assert_eq!(
        after.used_blocks, before.used_blocks,
        "nothing was allocated"
    );
    assert!(HandlerError::SliceTooLarge {
        len: 3,
        elem_size: 4,
        max_payload: 5
    }
    .to_string()
    .contains("ask for fewer"));
}

/// The raw allocator adds the header size to the payload: near `u64::MAX`
/// that must be an error, never a wrapped small block.
#[test]
fn raw_allocation_near_u64_max_is_refused() {
    let h = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    let mut offsets = Vec::new();
    for payload in [u64::MAX, u64::MAX - 15, u64::MAX - 40, u64::MAX - 47] {
        match h.raw_matrix().allocate(payload, 0) {
            Err(AllocError::TooLarge { .. }) => {}
            other => {
                if let Ok(p) = &other {
                    offsets.push(p.offset());
                }
                panic!("allocate({payload}) gave {other:?} (offsets so far {offsets:?})");
            }
        }
    }
}

/// A load has no release half; any ordering a caller passes must be
/// accepted rather than panic inside the atomic load.
#[test]
fn state_loads_accept_every_ordering() {
    let h = MatrixHandler::bootstrap(None, 1 << 16).unwrap();
    let b = h.allocate::<u64>().unwrap();
    h.set_state(&b, 77).unwrap();
    for order in [
        Ordering::Relaxed,
        Ordering::Acquire,
        Ordering::Release,
        Ordering::AcqRel,
        Ordering::SeqCst,
    ] {
        assert_eq!(h.get_state(&b, order), 77, "{order:?}");
        assert_eq!(h.try_get_state(&b, order).unwrap(), 77, "{order:?}");
    }
    h.free(b).unwrap();
}

/// `adopt_token` (validation and owner change in one) refuses exactly what
/// `block_from_token` and `set_owner_of` refuse, with the same typed errors,
/// and a refusal changes nothing: a foreign token, a bogus offset, a block
/// not owned by `from`, a block already freed, a stale token.
#[test]
fn adopt_token_refuses_what_validation_and_set_owner_refuse() {
    use matrix_handler::{BlockToken, OwnerId};
    let h = MatrixHandler::bootstrap(None, 1 << 16).unwrap();
    let other = MatrixHandler::bootstrap(None, 1 << 16).unwrap();
    let me = h.matrix().owner_id();
    let owner = |b: &Block<u64>| h.owner_of(b).unwrap();

    let mut b = h.allocate::<u64>().unwrap();
    h.write_pod(&mut b, 9).unwrap();
    let token = b.token();

    // Not owned by the segment yet: refused as set_owner_of refuses it.
    let r = h.adopt_token::<u64>(token, OwnerId::SEGMENT);
    assert!(
        matches!(
            r,
            Err(HandlerError::Block(BlockError::Corrupted { what, .. }))
                if what == "owner changed concurrently"
        ),
        "{r:?}"
    );
    assert_eq!(owner(&b), me, "a refusal changes nothing");

    // Given to the segment, then adopted: one success, then refused.
    h.release_to_segment(&b).unwrap();
    assert_eq!(owner(&b), OwnerId::SEGMENT);
    let adopted = h.adopt_token::<u64>(token, OwnerId::SEGMENT).unwrap();
    assert_eq!(
        (adopted.offset(), adopted.generation(), adopted.len()),
        (b.offset(), b.generation(), 1)
    );
    assert_eq!(h.read_pod(&adopted).unwrap(), 9);
    assert_eq!(owner(&b), me);
    assert!(matches!(
        h.adopt_token::<u64>(token, OwnerId::SEGMENT),
        Err(HandlerError::Block(BlockError::Corrupted { .. }))
    ));

    // A token of another segment, and bogus offsets of this one (a token
    // holds offsets / 16, so it cannot name a misaligned one).
    assert!(matches!(
        other.adopt_token::<u64>(token, OwnerId::SEGMENT),
        Err(HandlerError::ForeignHandle { .. })
    ));
    let nonce = h.segment_nonce();
    for (offset, what) in [
        (0u32, "below the header size"),
        (b.offset() + 16, "inside a payload"),
        ((1 << 16) - 16, "beyond top"),
    ] {
        let bogus = BlockToken::new(offset, b.generation(), nonce);
        let r = h.adopt_token::<u64>(bogus, OwnerId::SEGMENT);
        assert!(
            matches!(
                r,
                Err(HandlerError::InvalidOffset(_))
                    | Err(HandlerError::Block(
                        BlockError::Misaligned { .. }
                            | BlockError::OutOfBounds { .. }
                            | BlockError::NotABlock { .. }
                    ))
            ),
            "{what}: {r:?}"
        );
    }
    assert_eq!(owner(&b), me);

    // Freed: the token names no live block (a double take is refused).
    h.release_to_segment(&b).unwrap();
    h.free(adopted).unwrap();
    let r = h.adopt_token::<u64>(token, OwnerId::SEGMENT);
    assert!(
        matches!(r, Err(HandlerError::Block(BlockError::NotLive { .. }))),
        "{r:?}"
    );

    // The memory re-allocated: the old token is stale, the new block untouched.
    let again = h.allocate::<u64>().unwrap();
    assert_eq!(again.offset(), b.offset(), "the cache hands the block back");
    h.release_to_segment(&again).unwrap();
    let r = h.adopt_token::<u64>(token, OwnerId::SEGMENT);
    assert!(
        matches!(r, Err(HandlerError::Block(BlockError::Stale { .. }))),
        "{r:?}"
    );
    assert_eq!(h.owner_of(&again).unwrap(), OwnerId::SEGMENT);
    h.free(again).unwrap();
}
