//! `matrix fsck --repair` per kind of damage: each ends with `fsck` clean,
//! or with an explicit "cannot repair: … next step: …"; and a repair that
//! fails leaves no participant slot behind.

mod common;

use common::{matrix, unique, ShmGuard};
use matrix_core::layout::{slot_state, slot_word, ARENA_START};
use matrix_core::size_class::{FL_COUNT, SL_COUNT};
use matrix_core::{Arena, AtomicMatrix, Observer, BLOCK_HEADER_SIZE};
use serde_json::Value;
use std::sync::atomic::Ordering::SeqCst;

/// A segment with allocated blocks and free blocks in the index, and no
/// participant attached.
fn populated(label: &str) -> (String, ShmGuard) {
    let name = unique(label);
    let guard = ShmGuard::new(&name);
    matrix(&["create", &name, "--size", "2MiB"]).expect(0);
    let m = AtomicMatrix::open(&name).unwrap();
    let headers: Vec<u32> = (0..40)
        .map(|i| m.allocate(40 + i * 24, 0).unwrap().offset() - BLOCK_HEADER_SIZE)
        .collect();
    for &h in headers.iter().step_by(2) {
        m.free(h, None).unwrap();
    }
    m.flush_thread_cache();
    // The odd blocks stay allocated, owned by the segment, past this close.
    for &h in headers.iter().skip(1).step_by(2) {
        m.set_owner(h, None, matrix_core::OwnerId::SEGMENT).unwrap();
    }
    m.close().unwrap();
    (name, guard)
}

/// A shared, writable view of the segment, for planting damage.
fn writable(name: &str) -> Observer {
    Observer::open_writable(name).unwrap()
}

/// The first non-empty bucket.
fn non_empty_bucket(view: &Observer) -> (usize, usize) {
    let index = &view.header().index;
    (0..FL_COUNT)
        .flat_map(|fl| (0..SL_COUNT).map(move |sl| (fl, sl)))
        .find(|&(fl, sl)| index.heads[fl][sl].load(SeqCst) as u32 != 0)
        .expect("some bucket holds a free block")
}

fn kinds(report: &Value, which: &str) -> Vec<String> {
    report[which]["summary"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|k| k["severity"] != "note")
                .map(|k| k["kind"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `fsck --repair` that must end clean, after finding `kind`.
fn repairs_to_clean(name: &str, kind: &str) -> Value {
    let found = matrix(&["fsck", name, "--json"]).expect(1).json();
    assert!(
        kinds(&found, "before").contains(&kind.to_owned()),
        "{found:#}"
    );
    let repaired = matrix(&["fsck", name, "--repair", "--json"])
        .expect(0)
        .json();
    assert_eq!(repaired["clean"], true, "{repaired:#}");
    assert_eq!(repaired["repair"]["cannot_repair"], Value::Null);
    matrix(&["fsck", name]).expect(0).stdout_has("clean");
    let ls = matrix(&["ls", "--json"]).expect(0).json();
    let row = ls
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap();
    assert_eq!(row["attached"], 0, "the tool left a slot: {row:#}");
    // The repaired segment works: a participant allocates most of it.
    let m = AtomicMatrix::open(name).unwrap();
    let big = m
        .allocate(1 << 20, 0)
        .expect("a large allocation after repair");
    m.free(big.offset() - BLOCK_HEADER_SIZE, None).unwrap();
    m.close().unwrap();
    repaired
}

#[test]
fn a_free_list_head_out_of_bounds_is_rebuilt_first() {
    let (name, _guard) = populated("head");
    let view = writable(&name);
    let (fl, sl) = non_empty_bucket(&view);
    view.header().index.heads[fl][sl].store((7 << 32) | 0xFFFF_FFF0, SeqCst);
    drop(view);
    let repaired = repairs_to_clean(&name, "list-entry-not-a-block");
    assert_eq!(repaired["repair"]["rebuilt_first"], true, "{repaired:#}");
    let text = matrix(&["fsck", &name, "--repair"])
        .expect(0)
        .stdout
        .clone();
    assert!(!text.contains("run `matrix fsck`"), "{text}");
}

#[test]
fn a_cleared_bitmap_bit_is_rebuilt_first() {
    let (name, _guard) = populated("bitmap");
    let view = writable(&name);
    let (fl, sl) = non_empty_bucket(&view);
    view.header().index.sl_bitmap[fl].fetch_and(!(1 << sl), SeqCst);
    drop(view);
    let repaired = repairs_to_clean(&name, "hidden-bucket");
    assert_eq!(repaired["repair"]["rebuilt_first"], true, "{repaired:#}");
}

#[test]
fn a_listed_block_that_is_allocated_is_rebuilt_first() {
    let (name, _guard) = populated("listed");
    let view = writable(&name);
    let (fl, sl) = non_empty_bucket(&view);
    let head = view.header().index.heads[fl][sl].load(SeqCst) as u32;
    let hdr = Arena::header(&view, head).unwrap();
    let word = hdr.state.load(SeqCst);
    hdr.state.store(
        matrix_core::state::pack(
            matrix_core::state::generation_of(word),
            0,
            matrix_core::state::ALLOCATED,
        ),
        SeqCst,
    );
    drop(view);
    repairs_to_clean(&name, "listed-block-not-free");
}

/// The first block's header destroyed: the chain cannot be walked.
fn break_first_header(name: &str) {
    let view = writable(name);
    Arena::header(&view, ARENA_START)
        .unwrap()
        .check
        .store(0, SeqCst);
}

#[test]
fn a_destroyed_first_header_cannot_be_repaired_and_says_what_next() {
    let (name, _guard) = populated("first");
    break_first_header(&name);
    let out = matrix(&["fsck", &name, "--repair"]);
    out.expect(1)
        .stdout_has("cannot repair: the block chain is broken at offset")
        .stdout_has("next step:")
        .stdout_has(&format!("matrix rm {name} --force"))
        .stdout_has("cannot repair");
    assert!(
        !out.stdout.contains("run `matrix fsck`"),
        "points back at itself: {}",
        out.stdout
    );
    let json = matrix(&["fsck", &name, "--repair", "--json"])
        .expect(1)
        .json();
    assert!(json["repair"]["cannot_repair"].is_string(), "{json:#}");
    assert!(json["repair"]["next_step"].is_string(), "{json:#}");
}

/// More failed repairs than there are participant slots: none leaves a
/// slot behind, so the segment still lists no participant and a new one
/// can attach.
#[test]
fn failed_repairs_leave_no_slot_behind() {
    let (name, _guard) = populated("failed");
    let slots = writable(&name).header().participant_count();
    break_first_header(&name);
    for _ in 0..slots + 4 {
        matrix(&["fsck", &name, "--repair"])
            .expect(1)
            .stdout_has("cannot repair");
    }
    let stat = matrix(&["stat", &name, "--json"]);
    let ls = matrix(&["ls", "--json"]).expect(0).json();
    let row = ls
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name.as_str())
        .unwrap()
        .clone();
    assert_eq!(row["participants_dead"], 0, "{row:#} {stat:#?}");
    assert_eq!(row["attached"], 0, "{row:#}");
    let m = AtomicMatrix::open(&name).expect("attach after the failed repairs");
    drop(m);
}

/// A damaged free index with a live participant attached: refused with
/// the next step, nothing touched; once it is gone the repair succeeds.
#[test]
fn a_damaged_index_waits_for_the_segment_to_itself() {
    let (name, _guard) = populated("busy");
    let view = writable(&name);
    let (fl, sl) = non_empty_bucket(&view);
    view.header().index.sl_bitmap[fl].fetch_and(!(1 << sl), SeqCst);
    drop(view);
    let live = AtomicMatrix::open(&name).unwrap();
    for _ in 0..3 {
        matrix(&["fsck", &name, "--repair"])
            .expect(1)
            .stdout_has(
                "cannot repair: the free index is damaged and 1 participant(s) are attached",
            )
            .stdout_has(&format!("pid {}", std::process::id()))
            .stdout_has("next step: stop them");
    }
    live.close().unwrap();
    repairs_to_clean(&name, "hidden-bucket");
}

/// Every slot taken by a dead holder whose blocks cannot be reclaimed: the
/// refusal names them and the way out, instead of claiming live holders.
#[test]
fn slot_exhaustion_names_the_unrecoverable_slots() {
    let (name, _guard) = populated("full");
    let view = writable(&name);
    for slot in view.header().participants() {
        let word = slot.word.load(SeqCst);
        slot.word.store(
            slot_word::pack(
                slot_state::DETACHED,
                None,
                0,
                slot_word::generation_of(word),
            ),
            SeqCst,
        );
    }
    let slots = view.header().participant_count();
    drop(view);
    break_first_header(&name);
    let err = match AtomicMatrix::open(&name) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("attached to a segment whose slots are all taken"),
    };
    assert!(err.contains("0 are held by live processes"), "{err}");
    assert!(err.contains(&format!("{slots} dead holder(s)")), "{err}");
    assert!(err.contains("--repair"), "{err}");
    let ls = matrix(&["ls", "--json"]).expect(0).json();
    let row = ls
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name.as_str())
        .unwrap()
        .clone();
    assert_eq!(row["participants_dead"], slots, "{row:#}");
    assert_eq!(row["participants_alive"], 0, "{row:#}");
    let status = row["status"].as_str().unwrap();
    assert!(status.starts_with("damaged: "), "{row:#}");
}

#[test]
fn counters_count_what_they_say() {
    let (name, _guard) = populated("counters");
    let fresh = unique("fresh");
    let _fresh_guard = ShmGuard::new(&fresh);
    matrix(&["create", &fresh, "--size", "1MiB"]).expect(0);
    matrix(&["fsck", &fresh, "--repair"]).expect(0);
    let stat = matrix(&["stat", &fresh, "--json"]).expect(0).json();
    assert_eq!(stat["header"]["recoveries"], 0, "{stat:#}");
    matrix(&["fsck", &name, "--repair"]).expect(0);
    let stat = matrix(&["stat", &name, "--json"]).expect(0).json();
    assert_eq!(stat["header"]["recoveries"], 0, "{stat:#}");
}

/// A participant killed mid-resize leaves its resize record in an intent
/// entry: fsck names it as such (not as a carve), and `--repair` hands the
/// block back and ends clean.
#[test]
fn a_dead_resizers_record_is_its_own_kind_and_is_settled() {
    use matrix_core::realloc::resize_intent;
    use matrix_core::state::{generation_of, pack, ALLOCATED, RESIZING};
    let (name, _guard) = populated("resize");
    let m = AtomicMatrix::open(&name).unwrap();
    let owner = m.owner_id().0;
    let header = m.allocate(200, 0).unwrap().offset() - BLOCK_HEADER_SIZE;
    let slot = m.owner_id().slot().unwrap();
    // Dropped, not closed: the slot is left DETACHED, as by a kill.
    drop(m);
    let view = writable(&name);
    let hdr = Arena::header(&view, header).unwrap();
    let word = hdr.state.load(SeqCst);
    // What a resizer killed after its hold's CAS leaves: the block
    // RESIZING under its name, the record of (owner, state) in its intent.
    view.header().participant(slot).unwrap().carve_intents[0]
        .store(resize_intent(header, owner, ALLOCATED), SeqCst);
    hdr.state
        .store(pack(generation_of(word), owner, RESIZING), SeqCst);
    drop(view);

    let found = matrix(&["fsck", &name, "--json"]).expect(1).json();
    let kinds = kinds(&found, "before");
    assert!(
        kinds.contains(&"dead-resize-intent".to_owned()),
        "{found:#}"
    );
    assert!(
        !kinds.contains(&"dead-carve-intent".to_owned()),
        "{found:#}"
    );
    let f = found["before"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "dead-resize-intent")
        .unwrap();
    assert_eq!(f["slot"], slot);
    assert_eq!(f["blocks"], 1);
    matrix(&["fsck", &name])
        .expect(1)
        .stdout_has("left 1 resize record(s) of an unfinished resize");
    repairs_to_clean(&name, "dead-resize-intent");
}
