//! `matrix fsck`: check a segment's invariants, and repair what can be repaired.
//!
//! The checks, exact when the segment is quiescent (no allocation or free in
//! flight); with live participants a block caught mid-operation may show up
//! as a finding that a second run no longer reports:
//!
//! | check | severity when it fails |
//! |---|---|
//! | the chain of blocks tiles `[arena_start, top)`, every header genuine, aligned, sized | corruption |
//! | no block in a reserved state (4–48) | corruption |
//! | every free-list entry is a FREE block of the chain, filed under its size class, listed once; lists end | corruption |
//! | every non-empty bucket has its bitmap bits set | corruption |
//! | every FREE block is in a free list | leak (repair) |
//! | no block is held (ALLOCATED, ACKED, COALESCING, CACHED) by a dead, detached or vanished participant | leak (recover / repair) |
//! | no carve intent or consolidation is left by a dead participant | leak (recover) |
//! | user-state blocks of departed participants, dead slots that hold nothing | note |
//!
//! Corruption and leaks are problems (exit code 1); notes are not.

use crate::error::CliError;
use crate::view::SegmentView;
use matrix_core::free_index::bucket_offsets;
use matrix_core::layout::{slot_state, ParticipantSlot};
use matrix_core::size_class::{class_of, SizeClass, FL_COUNT, SL_COUNT};
use matrix_core::state::{self, state_name, ACKED, CACHED, COALESCING, FREE};
use matrix_core::walk::BlockInfo;
use matrix_core::{Arena, AtomicMatrix, OwnerId, RecoveryReport};
use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering::Acquire;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; not a problem.
    Note,
    /// Memory nobody can allocate until `recover()` or a repair reclaims it.
    Leak,
    /// The segment's structures contradict each other.
    Corruption,
}

/// One thing the checker found.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// How bad it is.
    pub severity: Severity,
    /// A short, stable identifier for scripts (`stranded-free-block`, …).
    pub kind: &'static str,
    /// Header offset of the block concerned, if one.
    pub offset: Option<u32>,
    /// What was found, in words.
    pub message: String,
}

/// The checker's result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    /// Blocks walked.
    pub blocks: u64,
    /// Free-list entries walked.
    pub free_list_entries: u64,
    /// Live participants while checking (findings may be transient if > 0).
    pub live_participants: usize,
    /// Everything found.
    pub findings: Vec<Finding>,
}

impl CheckReport {
    /// Findings that are problems (not notes).
    pub fn problems(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity > Severity::Note)
            .count()
    }

    fn add(
        &mut self,
        severity: Severity,
        kind: &'static str,
        offset: Option<u32>,
        message: String,
    ) {
        self.findings.push(Finding {
            severity,
            kind,
            offset,
            message,
        });
    }
}

/// Whether a participant slot's holder is gone (or the slot is detached or
/// being recovered by a dead recoverer), i.e. what it holds awaits recovery.
fn slot_departed<A: Arena>(arena: &A, slot: &ParticipantSlot) -> bool {
    match slot.state.load(Acquire) {
        slot_state::EMPTY => false,
        slot_state::ACTIVE | slot_state::CLAIMING => !arena.is_alive(slot),
        slot_state::DETACHED => true,
        slot_state::RECOVERING => {
            let recoverer = OwnerId(slot.recoverer.load(Acquire));
            recoverer
                .slot()
                .is_none_or(|s| !arena.is_alive(&arena.segment().participants[s]))
        }
        _ => true,
    }
}

/// What the owner id on a block says about who holds it.
enum Holder {
    /// The segment itself (never reclaimed automatically).
    Segment,
    /// A live participant.
    Live,
    /// A participant slot awaiting recovery.
    Departed { slot: usize, pid: u32 },
    /// No slot carries this owner id any more (slot empty or reused).
    Vanished,
}

fn holder_of<A: Arena>(arena: &A, owner: OwnerId) -> Holder {
    if owner == OwnerId::SEGMENT {
        return Holder::Segment;
    }
    let Some(index) = owner.slot() else {
        return Holder::Vanished;
    };
    let slot = &arena.segment().participants[index];
    if slot.state.load(Acquire) == slot_state::EMPTY
        || OwnerId::new(index, slot.generation.load(Acquire)) != owner
    {
        return Holder::Vanished;
    }
    if slot_departed(arena, slot) {
        Holder::Departed {
            slot: index,
            pid: slot.pid.load(Acquire),
        }
    } else {
        Holder::Live
    }
}

/// Runs every check over `arena`; see the module docs for the list.
pub fn check<A: Arena>(arena: &A) -> CheckReport {
    let seg = arena.segment();
    let mut report = CheckReport {
        live_participants: seg
            .participants
            .iter()
            .filter(|s| {
                matches!(
                    s.state.load(Acquire),
                    slot_state::ACTIVE | slot_state::CLAIMING
                ) && arena.is_alive(s)
            })
            .count(),
        ..CheckReport::default()
    };

    // 1. The chain.
    let mut chain: Vec<BlockInfo> = Vec::new();
    let mut chain_ok = true;
    for info in matrix_core::walk::walk(arena) {
        match info {
            Ok(info) => chain.push(info),
            Err(e) => {
                report.add(
                    Severity::Corruption,
                    "broken-chain",
                    None,
                    format!("the block chain is broken: {e}"),
                );
                chain_ok = false;
            }
        }
    }
    report.blocks = chain.len() as u64;
    let index_of: HashMap<u32, usize> = chain
        .iter()
        .enumerate()
        .map(|(i, b)| (b.offset, i))
        .collect();

    // 2. Each block's state and holder.
    let mut held_by: HashMap<(usize, u32), (u64, u64)> = HashMap::new();
    for b in &chain {
        if b.carving {
            continue;
        }
        if state::is_reserved(b.state) {
            report.add(
                Severity::Corruption,
                "reserved-state",
                Some(b.offset),
                format!("block at {} is in reserved state {}", b.offset, b.state),
            );
            continue;
        }
        if b.state == FREE {
            continue;
        }
        let what = format!(
            "{} block at {} ({} B)",
            state_name(b.state),
            b.offset,
            b.size
        );
        let user = b.state >= state::USER_STATE_MIN;
        match holder_of(arena, b.owner) {
            Holder::Segment | Holder::Live => {
                if matches!(b.state, ACKED | COALESCING | CACHED) && b.owner == OwnerId::SEGMENT {
                    report.add(
                        Severity::Leak,
                        "unowned-transient-block",
                        Some(b.offset),
                        format!("{what} is owned by nobody; a repair reclaims it"),
                    );
                }
            }
            Holder::Departed { slot, pid } if user => report.add(
                Severity::Note,
                "user-state-block-of-departed",
                Some(b.offset),
                format!(
                    "{what} in user state {} is held by departed participant slot {slot} (pid {pid}); \
                     kept by design, `fsck --repair --reclaim-user-states` frees it",
                    b.state
                ),
            ),
            Holder::Departed { slot, pid } => {
                let entry = held_by.entry((slot, pid)).or_default();
                entry.0 += 1;
                entry.1 += b.size as u64;
            }
            Holder::Vanished if user => report.add(
                Severity::Note,
                "user-state-block-of-vanished",
                Some(b.offset),
                format!(
                    "{what} in user state {} belongs to owner {:#x}, which no participant slot carries any more; \
                     kept by design, `fsck --repair --reclaim-user-states` frees it when no one else is attached",
                    b.state, b.owner.0
                ),
            ),
            Holder::Vanished => report.add(
                Severity::Leak,
                "orphaned-block",
                Some(b.offset),
                format!(
                    "{what} belongs to owner {:#x}, which no participant slot carries any more; \
                     `fsck --repair` reclaims it when no one else is attached",
                    b.owner.0
                ),
            ),
        }
    }
    let holding: Vec<usize> = held_by.keys().map(|&(slot, _)| slot).collect();
    let mut held: Vec<_> = held_by.into_iter().collect();
    held.sort();
    for ((slot, pid), (blocks, bytes)) in held {
        report.add(
            Severity::Leak,
            "held-by-departed",
            None,
            format!(
                "{blocks} block(s), {bytes} B, are held by departed participant slot {slot} (pid {pid}); \
                 `fsck --repair` (recover) reclaims them"
            ),
        );
    }

    // 3. Participant slots: departed ones, carve intents, the consolidation word.
    for (index, slot) in seg.participants.iter().enumerate() {
        let st = slot.state.load(Acquire);
        if st == slot_state::EMPTY || !slot_departed(arena, slot) {
            continue;
        }
        let pid = slot.pid.load(Acquire);
        let intents = slot
            .carve_intents
            .iter()
            .filter(|e| e.load(Acquire) > 1)
            .count();
        if intents > 0 {
            report.add(
                Severity::Leak,
                "dead-carve-intent",
                None,
                format!("departed participant slot {index} (pid {pid}) left {intents} carve(s) unfinished; recover rebuilds them"),
            );
        } else if !holding.contains(&index) {
            report.add(
                Severity::Note,
                "departed-participant",
                None,
                format!("participant slot {index} (pid {pid}) is departed and holds nothing; the next recover() frees the slot"),
            );
        }
    }
    let consolidator = OwnerId(seg.consolidator.load(Acquire));
    if consolidator != OwnerId::SEGMENT {
        match holder_of(arena, consolidator) {
            Holder::Departed { slot, pid } => report.add(
                Severity::Leak,
                "dead-consolidator",
                None,
                format!("a consolidation was left running by departed participant slot {slot} (pid {pid})"),
            ),
            Holder::Vanished => report.add(
                Severity::Leak,
                "dead-consolidator",
                None,
                format!("a consolidation is marked running by owner {:#x}, which no slot carries", consolidator.0),
            ),
            Holder::Segment | Holder::Live => {}
        }
    }

    // 4. The free index against the chain.
    let limit = chain.len() + 1;
    let mut listed: HashMap<u32, SizeClass> = HashMap::new();
    for fl in 0..FL_COUNT {
        let sl_bits = seg.index.sl_bitmap[fl].load(Acquire);
        let fl_bit = seg.index.fl_bitmap.load(Acquire) & (1 << fl) != 0;
        for sl in 0..SL_COUNT {
            let class = SizeClass { fl, sl };
            let entries = bucket_offsets(arena, class, limit);
            report.free_list_entries += entries.len() as u64;
            if entries.is_empty() {
                continue;
            }
            if sl_bits & (1 << sl) == 0 || !fl_bit {
                report.add(
                    Severity::Corruption,
                    "hidden-bucket",
                    None,
                    format!(
                        "bucket [{fl}][{sl}] holds {} block(s) but its bitmap bit is clear",
                        entries.len()
                    ),
                );
            }
            if entries.len() >= limit {
                report.add(
                    Severity::Corruption,
                    "free-list-cycle",
                    None,
                    format!("free list [{fl}][{sl}] is longer than the chain: it loops"),
                );
            }
            for &offset in &entries {
                if let Some(previous) = listed.insert(offset, class) {
                    report.add(
                        Severity::Corruption,
                        "listed-twice",
                        Some(offset),
                        format!(
                            "block at {offset} is in free list [{fl}][{sl}] and in [{}][{}]",
                            previous.fl, previous.sl
                        ),
                    );
                    continue;
                }
                let Some(&i) = index_of.get(&offset) else {
                    if chain_ok {
                        report.add(
                            Severity::Corruption,
                            "list-entry-not-a-block",
                            Some(offset),
                            format!("free list [{fl}][{sl}] names offset {offset}, where no block of the chain starts"),
                        );
                    }
                    continue;
                };
                let b = &chain[i];
                if b.state != FREE {
                    report.add(
                        Severity::Corruption,
                        "listed-block-not-free",
                        Some(offset),
                        format!(
                            "{} block at {offset} is in free list [{fl}][{sl}]",
                            state_name(b.state)
                        ),
                    );
                } else if class_of(b.size) != class {
                    report.add(
                        Severity::Corruption,
                        "wrong-bucket",
                        Some(offset),
                        format!(
                            "free block at {offset} of {} B is filed under [{fl}][{sl}]",
                            b.size
                        ),
                    );
                }
            }
        }
    }
    let mut stranded = 0u64;
    let mut stranded_bytes = 0u64;
    for b in chain
        .iter()
        .filter(|b| b.state == FREE && !b.carving && !listed.contains_key(&b.offset))
    {
        stranded += 1;
        stranded_bytes += b.size as u64;
        if stranded <= 8 {
            report.add(
                Severity::Leak,
                "stranded-free-block",
                Some(b.offset),
                format!(
                    "free block at {} ({} B) is in no free list; `fsck --repair` reclaims it",
                    b.offset, b.size
                ),
            );
        }
    }
    if stranded > 8 {
        report.add(
            Severity::Leak,
            "stranded-free-block",
            None,
            format!(
                "{} more stranded free block(s) ({stranded_bytes} B in all)",
                stranded - 8
            ),
        );
    }
    report
}

/// What `fsck --repair` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairSummary {
    /// Participants recovered by `recover()`.
    pub recovered_participants: u32,
    /// Blocks `recover()` returned to the free index.
    pub recovered_blocks: u64,
    /// Their bytes.
    pub recovered_bytes: u64,
    /// Blocks the consolidation took in and pushed back.
    pub consolidated_in: usize,
    /// Blocks after merging.
    pub consolidated_out: usize,
    /// Whether the offline repair (rebuild of the free index) ran.
    pub rebuilt_index: bool,
    /// Why it did not, when it did not.
    pub rebuild_skipped: Option<String>,
    /// Blocks the offline repair reclaimed.
    pub rebuilt_blocks: u64,
    /// Their bytes.
    pub rebuilt_bytes: u64,
}

fn add_recovery(summary: &mut RepairSummary, r: &RecoveryReport) {
    summary.recovered_participants += r.participants;
    summary.recovered_blocks += r.blocks;
    summary.recovered_bytes += r.bytes;
}

/// Repairs segment `name`: `recover()` and a consolidation as a short-lived
/// participant, then — when no other participant is alive — the offline
/// `repair()` that rebuilds the free index from the chain. Finally the slot
/// the tool itself used is recovered too, so it leaves no trace.
pub fn repair(name: &str, reclaim_user_states: bool) -> Result<RepairSummary, CliError> {
    let mut summary = RepairSummary::default();
    {
        let matrix = AtomicMatrix::open(name)?;
        add_recovery(&mut summary, &matrix.recover(reclaim_user_states)?);
        let c = matrix.consolidate()?;
        summary.consolidated_in = c.blocks_in;
        summary.consolidated_out = c.blocks_out;
        match matrix.repair(reclaim_user_states) {
            Ok(r) => {
                summary.rebuilt_index = true;
                summary.rebuilt_blocks = r.blocks;
                summary.rebuilt_bytes = r.bytes;
            }
            Err(matrix_core::RepairError::Segment(e @ matrix_core::SegmentError::InUse { .. })) => {
                summary.rebuild_skipped = Some(e.to_string());
            }
            Err(e) => return Err(e.into()),
        }
    }
    release_tool_slot(name)?;
    Ok(summary)
}

/// Recovers detached slots (the one a just-dropped `AtomicMatrix` of this
/// process left, and any other) through a participant-less view.
pub fn release_tool_slot(name: &str) -> Result<(), CliError> {
    let view = SegmentView::open_shared(name)?;
    matrix_core::recover::recover(&view, false)?;
    Ok(())
}

/// Everything `matrix fsck` reports.
#[derive(Debug, Clone, Serialize)]
pub struct FsckReport {
    /// Segment name.
    pub name: String,
    /// No problem found (after repair, if one ran).
    pub clean: bool,
    /// Problems found (after repair, if one ran).
    pub problems: usize,
    /// The check before any repair.
    pub before: CheckReport,
    /// What the repair did, if `--repair` was given.
    pub repair: Option<RepairSummary>,
    /// The check after the repair.
    pub after: Option<CheckReport>,
}

/// Renders a check report.
pub fn render_check(title: &str, r: &CheckReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{title}: {} blocks, {} free-list entries, {} live participant(s): {} problem(s)",
        r.blocks,
        r.free_list_entries,
        r.live_participants,
        r.problems()
    );
    if r.live_participants > 0 {
        let _ = writeln!(out, "  (the segment is in use: a block caught mid-operation may be reported; run again to confirm)");
    }
    for f in &r.findings {
        let tag = match f.severity {
            Severity::Note => "note",
            Severity::Leak => "LEAK",
            Severity::Corruption => "CORRUPT",
        };
        let _ = writeln!(out, "  {tag:<8} {:<28} {}", f.kind, f.message);
    }
    out
}

/// Renders the whole fsck run.
pub fn render_fsck(r: &FsckReport) -> String {
    let mut out = render_check(&format!("fsck {}", r.name), &r.before);
    if let Some(s) = &r.repair {
        let _ = writeln!(
            out,
            "repair: recovered {} participant(s), {} block(s), {} B; consolidation {} -> {} free blocks",
            s.recovered_participants, s.recovered_blocks, s.recovered_bytes, s.consolidated_in, s.consolidated_out
        );
        if s.rebuilt_index {
            let _ = writeln!(
                out,
                "repair: free index rebuilt from the chain, {} block(s), {} B reclaimed",
                s.rebuilt_blocks, s.rebuilt_bytes
            );
        } else if let Some(why) = &s.rebuild_skipped {
            let _ = writeln!(out, "repair: free index not rebuilt: {why}");
        }
    }
    if let Some(after) = &r.after {
        out.push_str(&render_check("after repair", after));
    }
    let _ = writeln!(out, "{}", if r.clean { "clean" } else { "problems found" });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use matrix_core::state::pack;
    use matrix_core::BLOCK_HEADER_SIZE;
    use std::sync::atomic::Ordering::{Relaxed, SeqCst};

    fn kinds(r: &CheckReport) -> Vec<&'static str> {
        r.findings
            .iter()
            .filter(|f| f.severity > Severity::Note)
            .map(|f| f.kind)
            .collect()
    }

    /// An arena with live blocks and free blocks in the index.
    fn busy_arena() -> (AtomicMatrix, Vec<u32>) {
        let m = AtomicMatrix::anonymous(1 << 20).unwrap();
        let headers: Vec<u32> = (0..32)
            .map(|i| m.allocate(32 + i * 24, 0).unwrap().offset() - BLOCK_HEADER_SIZE)
            .collect();
        for &h in headers.iter().step_by(2) {
            m.free(h, None).unwrap();
        }
        // Freed blocks wait in this thread's cache; put them in the index.
        m.flush_thread_cache();
        (m, headers)
    }

    #[test]
    fn a_healthy_arena_is_clean() {
        let (m, _) = busy_arena();
        let r = check(&m);
        assert_eq!(kinds(&r), Vec::<&str>::new(), "{r:#?}");
        assert_eq!(r.blocks, 32);
        assert_eq!(r.free_list_entries, 16);
        assert_eq!(r.live_participants, 1);
    }

    #[test]
    fn a_free_block_outside_every_list_is_a_leak() {
        let (m, headers) = busy_arena();
        let h = headers[1];
        let hdr = m.block_header(h).unwrap().0;
        let generation = state::generation_of(hdr.state.load(Relaxed));
        hdr.state.store(pack(generation, FREE), Relaxed);
        assert_eq!(kinds(&check(&m)), ["stranded-free-block"]);
    }

    #[test]
    fn a_listed_block_that_is_not_free_is_corruption() {
        let (m, headers) = busy_arena();
        let hdr = m.block_header(headers[0]).unwrap().0;
        let generation = state::generation_of(hdr.state.load(Relaxed));
        hdr.state.store(pack(generation, state::ALLOCATED), Relaxed);
        assert_eq!(kinds(&check(&m)), ["listed-block-not-free"]);
    }

    #[test]
    fn a_reserved_state_is_corruption() {
        let (m, headers) = busy_arena();
        let hdr = m.block_header(headers[3]).unwrap().0;
        hdr.state.store(pack(0, 7), Relaxed);
        assert_eq!(kinds(&check(&m)), ["reserved-state"]);
    }

    #[test]
    fn a_cleared_bitmap_bit_over_a_non_empty_bucket_is_corruption() {
        let (m, headers) = busy_arena();
        let size = m.block_header(headers[0]).unwrap().1;
        let class = class_of(size);
        m.header().index.sl_bitmap[class.fl].fetch_and(!(1 << class.sl), SeqCst);
        assert_eq!(kinds(&check(&m)), ["hidden-bucket"]);
    }

    #[test]
    fn a_block_of_a_vanished_owner_is_an_orphan() {
        let (m, headers) = busy_arena();
        let hdr = m.block_header(headers[5]).unwrap().0;
        hdr.owner.store(OwnerId::new(9, 3).0, Relaxed);
        assert_eq!(kinds(&check(&m)), ["orphaned-block"]);
    }

    #[test]
    fn cached_blocks_of_a_live_participant_are_fine() {
        let m = AtomicMatrix::anonymous(1 << 20).unwrap();
        let p = m.allocate(64, 0).unwrap();
        let _keep = m.allocate(64, 0).unwrap();
        m.free(p.offset() - BLOCK_HEADER_SIZE, None).unwrap();
        let r = check(&m);
        assert_eq!(kinds(&r), Vec::<&str>::new(), "{r:#?}");
        let hdr = m.block_header(p.offset() - BLOCK_HEADER_SIZE).unwrap().0;
        assert_eq!(
            state::state_of(hdr.state.load(Relaxed)),
            CACHED,
            "the free went to the thread cache"
        );
        hdr.owner.store(OwnerId::SEGMENT.0, Relaxed);
        assert_eq!(kinds(&check(&m)), ["unowned-transient-block"]);
    }

    #[test]
    fn a_broken_chain_is_corruption() {
        let (m, headers) = busy_arena();
        m.block_header(headers[7]).unwrap().0.size.store(8, Relaxed);
        assert!(kinds(&check(&m)).contains(&"broken-chain"));
    }
}
