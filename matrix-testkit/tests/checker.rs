//! The invariant checker accepts sound segments and reports every kind of
//! violation when a segment is corrupted on purpose.

use matrix_core::layout::{header_check, slot_state, BlockHeader};
use matrix_core::size_class::{class_of, SizeClass};
use matrix_core::state::{self, ACKED, ALLOCATED};
use matrix_core::{Arena, AtomicMatrix, OwnerId, SegmentHeader, BLOCK_HEADER_SIZE};
use matrix_handler::{Block, HandlerFunctions, MatrixHandler};
use matrix_testkit::{audit, check_invariants, Violation, ViolationKind};
use std::sync::atomic::Ordering::SeqCst;

/// A small arena with live blocks and free blocks in the lists:
/// `live` = [a, b, c, d], `freed` = header offsets of two 96-byte blocks
/// (same bucket) and one 512-byte block, each between live blocks.
struct Fixture {
    h: MatrixHandler,
    live: Vec<Block<u8>>,
    freed_small: [u32; 2],
    freed_large: u32,
}

fn fixture() -> Fixture {
    let h = MatrixHandler::bootstrap(None, 256 << 10).unwrap();
    let mut live = Vec::new();
    let mut temp = Vec::new();
    for payload in [64usize, 64, 64, 480, 64, 64] {
        live.push(h.allocate_slice::<u8>(64).unwrap());
        temp.push(h.allocate_slice::<u8>(payload).unwrap());
    }
    let freed_small = [temp[0].header_offset(), temp[1].header_offset()];
    let freed_large = temp[3].header_offset();
    for b in [temp.remove(3), temp.remove(1), temp.remove(0)] {
        h.free(b).unwrap();
    }
    // Frees may park blocks in this thread's cache; consolidation flushes
    // them into the free lists (nothing merges: each sits between live blocks).
    h.consolidate().unwrap();
    live.extend(temp);
    Fixture {
        h,
        live,
        freed_small,
        freed_large,
    }
}

fn m(f: &Fixture) -> &AtomicMatrix {
    f.h.matrix()
}

fn seg(f: &Fixture) -> &SegmentHeader {
    m(f).header()
}

fn hdr(f: &Fixture, offset: u32) -> &BlockHeader {
    Arena::header(m(f), offset).unwrap()
}

/// Replaces the owner field of the state word of the block at `offset`.
fn set_owner_word(f: &Fixture, offset: u32, owner: u32) {
    let word = hdr(f, offset).state.load(SeqCst);
    hdr(f, offset)
        .state
        .store(state::with_owner(word, owner), SeqCst);
}

fn bucket(f: &Fixture, offset: u32) -> SizeClass {
    class_of(hdr(f, offset).size.load(SeqCst))
}

fn set_head(f: &Fixture, class: SizeClass, offset: u32) {
    let head = &seg(f).index.heads[class.fl][class.sl];
    let old = head.load(SeqCst);
    head.store((old & !0xFFFF_FFFF) | offset as u64, SeqCst);
}

fn violations(f: &Fixture) -> Vec<Violation> {
    audit(m(f)).violations
}

#[track_caller]
fn assert_reports(f: &Fixture, offset: u32, pred: impl Fn(&ViolationKind) -> bool) {
    let found = violations(f);
    assert!(
        found.iter().any(|v| v.offset == offset && pred(&v.kind)),
        "expected violation at {offset} not reported; got {found:#?}"
    );
    // The public entry point must refuse the segment too.
    assert!(check_invariants(&f.h).is_err());
}

#[test]
fn sound_segments_pass_and_are_counted() {
    let f = fixture();
    let report = check_invariants(&f.h).unwrap();
    assert_eq!(report.blocks_by_state.get(&ALLOCATED), Some(&9));
    assert_eq!(report.free_blocks, 3);
    assert_eq!(report.listed_blocks, 3);
    assert_eq!(report.stranded_blocks, 0);
    assert_eq!(report.used_bytes + report.free_bytes, report.arena_bytes);
    assert!(report.fragmentation > 0.0 && report.fragmentation < 0.1);
    let stats = f.h.stats().unwrap();
    assert_eq!(stats.used_bytes, report.used_bytes);
    assert_eq!(stats.free_bytes, report.free_bytes);

    for b in f.live {
        f.h.free(b).unwrap();
    }
    f.h.consolidate().unwrap();
    let report = check_invariants(&f.h).unwrap();
    assert_eq!(report.used_bytes, 0);
    assert_eq!(report.fragmentation, 0.0);
    assert_eq!(report.largest_free_block, report.arena_bytes);
}

#[test]
fn top_out_of_range() {
    let f = fixture();
    let end = m(&f).arena_end();
    seg(&f).top.store(end + 16, SeqCst);
    assert_reports(&f, end + 16, |k| {
        matches!(k, ViolationKind::TopOutOfRange { .. })
    });
    seg(&f).top.store(m(&f).arena_start() + 8, SeqCst);
    assert_reports(&f, m(&f).arena_start() + 8, |k| {
        matches!(k, ViolationKind::TopOutOfRange { .. })
    });
}

#[test]
fn missing_header_gap_or_overlap() {
    let f = fixture();
    let victim = f.live[2].header_offset();
    hdr(&f, victim).check.store(0, SeqCst);
    assert_reports(&f, victim, |k| *k == ViolationKind::MissingHeader);

    // An overlap: a block grown over its neighbour puts the walk inside a payload.
    let f = fixture();
    let grown = f.live[0].header_offset();
    let size = hdr(&f, grown).size.load(SeqCst);
    hdr(&f, grown).size.store(size + 16, SeqCst);
    assert_reports(&f, grown + size + 16, |k| {
        *k == ViolationKind::MissingHeader
    });
}

#[test]
fn bad_sizes() {
    for bad in [0u32, 40, 88, !15] {
        let f = fixture();
        let victim = f.live[1].header_offset();
        hdr(&f, victim).size.store(bad, SeqCst);
        assert_reports(&f, victim, |k| *k == ViolationKind::BadSize { size: bad });
    }
}

#[test]
fn reserved_state() {
    let f = fixture();
    let victim = f.live[3].header_offset();
    let gen = state::generation_of(hdr(&f, victim).state.load(SeqCst));
    hdr(&f, victim).state.store(state::pack(gen, 0, 7), SeqCst);
    assert_reports(&f, victim, |k| {
        *k == ViolationKind::ReservedState { state: 7 }
    });
}

#[test]
fn free_block_with_an_owner() {
    let f = fixture();
    let victim = f.freed_large;
    set_owner_word(&f, victim, m(&f).owner_id().0);
    assert_reports(&f, victim, |k| {
        matches!(k, ViolationKind::FreeBlockOwned { .. })
    });
}

#[test]
fn unknown_owner() {
    let f = fixture();
    let victim = f.live[0].header_offset();
    let ghost = OwnerId::of_slot(40);
    set_owner_word(&f, victim, ghost.0);
    assert_reports(&f, victim, |k| {
        *k == ViolationKind::UnknownOwner {
            state: ALLOCATED,
            owner: ghost.0,
        }
    });
}

#[test]
fn orphaned_user_state_blocks_are_counted_not_refused() {
    let f = fixture();
    f.h.set_state(&f.live[0], 60).unwrap();
    set_owner_word(&f, f.live[0].header_offset(), OwnerId::of_slot(40).0);
    let report = check_invariants(&f.h).unwrap();
    assert_eq!(report.orphaned_user_blocks, 1);
}

#[test]
fn transient_state_at_quiescence() {
    let f = fixture();
    let victim = f.live[1].header_offset();
    let gen = state::generation_of(hdr(&f, victim).state.load(SeqCst));
    let owner = state::owner_of(hdr(&f, victim).state.load(SeqCst));
    hdr(&f, victim)
        .state
        .store(state::pack(gen, owner, ACKED), SeqCst);
    assert_reports(&f, victim, |k| {
        matches!(k, ViolationKind::TransientState { state: ACKED, .. })
    });
    // Owned by nobody: a stranded block, which the crash harness bounds.
    set_owner_word(&f, victim, 0);
    let v = violations(&f);
    assert!(
        v.iter().any(|v| v.offset == victim && v.is_stranding()),
        "{v:?}"
    );
}

#[test]
fn requested_exceeds_payload() {
    let f = fixture();
    let victim = f.live[0].header_offset();
    let size = hdr(&f, victim).size.load(SeqCst);
    hdr(&f, victim).requested.store(size, SeqCst);
    assert_reports(&f, victim, |k| {
        matches!(k, ViolationKind::RequestedExceedsPayload { .. })
    });
}

#[test]
fn free_block_in_no_list() {
    let f = fixture();
    let victim = f.freed_large;
    set_head(&f, bucket(&f, victim), 0);
    assert_reports(&f, victim, |k| *k == ViolationKind::FreeNotListed);
    let a = audit(m(&f));
    assert_eq!(a.report.stranded_blocks, 1);
    assert_eq!(
        a.report.stranded_bytes,
        hdr(&f, victim).size.load(SeqCst) as u64
    );
    assert_eq!(a.hard_violations().count(), 0);
}

#[test]
fn listed_twice() {
    let f = fixture();
    let victim = f.freed_large;
    let other = SizeClass { fl: 10, sl: 3 };
    set_head(&f, other, victim);
    assert_reports(&f, victim, |k| {
        matches!(k, ViolationKind::ListedTwice { .. })
    });
}

#[test]
fn list_entry_not_free() {
    let f = fixture();
    let victim = f.freed_large;
    let gen = state::generation_of(hdr(&f, victim).state.load(SeqCst));
    set_owner_word(&f, victim, m(&f).owner_id().0);
    hdr(&f, victim)
        .state
        .store(state::pack(gen, m(&f).owner_id().0, ALLOCATED), SeqCst);
    assert_reports(&f, victim, |k| {
        matches!(
            k,
            ViolationKind::ListEntryNotFree {
                state: ALLOCATED,
                ..
            }
        )
    });
}

#[test]
fn list_entry_not_a_block() {
    let f = fixture();
    let class = bucket(&f, f.freed_large);
    let inside = f.live[0].offset() + 16;
    set_head(&f, class, inside);
    assert_reports(&f, inside, |k| {
        matches!(k, ViolationKind::ListEntryNotABlock { .. })
    });
    // A link leaving the arena.
    hdr(&f, f.freed_large)
        .next_free
        .store(u32::MAX - 15, SeqCst);
    set_head(&f, class, f.freed_large);
    assert_reports(&f, u32::MAX - 15, |k| {
        matches!(k, ViolationKind::ListEntryNotABlock { .. })
    });
}

#[test]
fn wrong_bucket() {
    let f = fixture();
    let victim = f.freed_large;
    let right = bucket(&f, victim);
    let wrong = SizeClass {
        fl: right.fl,
        sl: (right.sl + 1) % 16,
    };
    set_head(&f, right, 0);
    set_head(&f, wrong, victim);
    let index = &seg(&f).index;
    index.sl_bitmap[wrong.fl].fetch_or(1 << wrong.sl, SeqCst);
    assert_reports(&f, victim, |k| {
        *k == ViolationKind::WrongBucket {
            class: wrong,
            expected: right,
        }
    });
}

#[test]
fn list_cycle() {
    let f = fixture();
    let [a, b] = f.freed_small;
    assert_eq!(
        bucket(&f, a),
        bucket(&f, b),
        "fixture: both small blocks share a bucket"
    );
    // The bucket holds b -> a -> NIL (last pushed first); close the loop.
    hdr(&f, a).next_free.store(b, SeqCst);
    let v = violations(&f);
    assert!(
        v.iter()
            .any(|v| matches!(v.kind, ViolationKind::ListCycle { .. })),
        "{v:#?}"
    );
    assert!(check_invariants(&f.h).is_err());
}

#[test]
fn bitmap_hides_a_bucket() {
    let f = fixture();
    let victim = f.freed_large;
    let class = bucket(&f, victim);
    seg(&f).index.sl_bitmap[class.fl].fetch_and(!(1 << class.sl), SeqCst);
    assert_reports(&f, victim, |k| {
        *k == ViolationKind::BitmapHidesBucket { class }
    });

    let f = fixture();
    seg(&f).index.fl_bitmap.fetch_and(!(1 << class.fl), SeqCst);
    assert_reports(&f, victim, |k| {
        *k == ViolationKind::LevelBitHidesBucket { class }
    });
}

#[test]
fn stale_bitmap_bits_are_allowed_and_counted() {
    let f = fixture();
    let class = SizeClass { fl: 12, sl: 5 };
    seg(&f).index.sl_bitmap[12].fetch_or(1 << 5, SeqCst);
    seg(&f).index.fl_bitmap.fetch_or(1 << class.fl, SeqCst);
    let report = check_invariants(&f.h).unwrap();
    assert_eq!(report.stale_bitmap_bits, 1);
}

#[test]
fn header_in_the_wilderness() {
    let f = fixture();
    let top = seg(&f).top.load(SeqCst);
    hdr(&f, top).check.store(header_check(top), SeqCst);
    assert_reports(&f, top, |k| *k == ViolationKind::WildernessHeader);
}

#[test]
fn stale_carve_intent_of_a_live_participant() {
    let f = fixture();
    let slot = m(&f).owner_id().slot().unwrap();
    let p = seg(&f).participant(slot).expect("a slot of the table");
    assert_eq!(p.state(SeqCst), slot_state::ACTIVE);
    let top = seg(&f).top.load(SeqCst);
    p.carve_intents[1].store((64u64 << 32) | top as u64, SeqCst);
    assert_reports(
        &f,
        top,
        |k| matches!(k, ViolationKind::StaleCarveIntent { slot: s, .. } if *s == slot),
    );
}

#[test]
fn consolidation_word_held_at_quiescence() {
    let f = fixture();
    seg(&f).consolidator.store(m(&f).owner_id().0, SeqCst);
    assert_reports(&f, 0, |k| {
        matches!(k, ViolationKind::ConsolidatorHeld { .. })
    });
}

#[test]
fn every_violation_has_a_message_naming_its_offset() {
    let f = fixture();
    let victim = f.live[0].header_offset();
    hdr(&f, victim).check.store(0, SeqCst);
    let v = check_invariants(&f.h).unwrap_err();
    assert!(v.to_string().contains(&victim.to_string()), "{v}");
    assert_eq!(victim + BLOCK_HEADER_SIZE, f.live[0].offset());
}

#[test]
fn cached_blocks_count_as_free_and_need_a_registered_owner() {
    let f = fixture();
    let b = f.h.allocate_slice::<u8>(64).unwrap();
    let offset = b.header_offset();
    f.h.free(b).unwrap();
    let a = audit(m(&f));
    let block = a.chain.iter().find(|c| c.offset == offset).unwrap();
    if block.state != matrix_core::state::CACHED {
        return; // this build frees straight into the index
    }
    assert!(a.violations.is_empty(), "{:?}", a.violations);
    assert_eq!(a.report.cached_blocks, 1);
    set_owner_word(&f, offset, OwnerId::of_slot(41).0);
    assert_reports(&f, offset, |k| {
        matches!(k, ViolationKind::UnknownOwner { .. })
    });
}
