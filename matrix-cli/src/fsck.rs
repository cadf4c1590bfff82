//! `matrix fsck`: check a segment's invariants, and repair what can be repaired.
//!
//! The structural checks are `matrix_testkit`'s invariant checker
//! ([`matrix_testkit::audit`]), run over a participant-less view; fsck adds
//! what an operator needs on top of it: who holds what, and whether those
//! holders are still alive. Exact when the segment is quiescent (no
//! allocation or free in flight); with live participants a block caught
//! mid-operation may be reported once and not again.
//!
//! | check | severity when it fails |
//! |---|---|
//! | `top` in the arena; the chain of blocks tiles `[arena_start, top)`, every header genuine, aligned, sized; no header in the wilderness | corruption |
//! | no block in a reserved state; no FREE block with an owner; no request larger than its payload | corruption |
//! | every free-list entry is a FREE block of the chain, filed under its size class, listed once; lists end | corruption |
//! | every non-empty bucket has its bitmap bits set | corruption |
//! | every FREE block is in a free list; no ACKED / COALESCING block owned by nobody | leak (repair) |
//! | no block held by an owner id no slot carries (a vanished participant) | leak (repair) |
//! | no block held (ALLOCATED, ACKED, COALESCING, CACHED) by a dead or detached participant | leak (recover) |
//! | no carve or consolidation left unfinished by a dead participant | leak (recover) |
//! | carves, consolidations and frees in flight in live participants; user-state blocks of departed participants; departed slots that hold nothing | note |
//!
//! Corruption and leaks are problems (exit code 1); notes are not.

use crate::error::CliError;
use crate::sync::Ordering::{Acquire, Relaxed};
use matrix_core::layout::{slot_state, slot_word};
use matrix_core::state::{self, state_name, FREE};
use matrix_core::{Arena, AtomicMatrix, OwnerId, RecoveryReport};
use matrix_testkit::{Violation, ViolationKind};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

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
    /// Blocks in the chain.
    pub blocks: u64,
    /// Blocks found in the free lists.
    pub free_list_entries: u64,
    /// Live participants while checking (findings may be transient if > 0).
    pub live_participants: usize,
    /// Bitmap bits set over empty buckets (allowed: bits are cleared lazily).
    pub stale_bitmap_bits: u64,
    /// Largest run of adjacent free blocks: what one consolidation could offer.
    pub largest_free_run: u64,
    /// Findings of one pass that the next pass no longer saw (segment in use).
    pub unconfirmed: u64,
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
/// being recovered by a recoverer that is gone), i.e. what it holds awaits
/// recovery: exactly what `recover()` would take. A holder of unknown
/// liveness is not departed.
fn slot_departed<A: Arena>(arena: &A, index: usize) -> bool {
    // Acquire: pairs with the Release CAS that set the slot word.
    let Some(slot) = arena.segment().participant(index) else {
        return false;
    };
    let word = slot.word.load(Acquire);
    matrix_core::participant::is_recoverable(arena, index, word)
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
    let Some(slot) = arena.segment().participant(index) else {
        return Holder::Vanished;
    };
    // Acquire: pairs with claim's Release of ACTIVE, which publishes the
    // pid (read Relaxed after it).
    // Acquire: pairs with the Release CAS that set the slot word.
    let word = slot.word.load(Acquire);
    if slot_word::state_of(word) == slot_state::EMPTY {
        return Holder::Vanished;
    }
    if slot_departed(arena, index) {
        Holder::Departed {
            slot: index,
            pid: slot.pid.load(Relaxed),
        }
    } else {
        Holder::Live
    }
}

/// Severity and stable kind of one violation of the invariant checker.
fn classify(v: &Violation) -> (Severity, &'static str) {
    use ViolationKind::*;
    match &v.kind {
        TopOutOfRange { .. } => (Severity::Corruption, "top-out-of-range"),
        MissingHeader | BadSize { .. } => (Severity::Corruption, "broken-chain"),
        ReservedState { .. } => (Severity::Corruption, "reserved-state"),
        FreeBlockOwned { .. } => (Severity::Corruption, "free-block-owned"),
        UnknownOwner { .. } => (Severity::Leak, "orphaned-block"),
        TransientState { owner: 0, .. } => (Severity::Leak, "stranded-transient-block"),
        TransientState { .. } => (Severity::Note, "free-in-flight"),
        RequestedExceedsPayload { .. } => (Severity::Corruption, "requested-exceeds-payload"),
        FreeNotListed => (Severity::Leak, "stranded-free-block"),
        ListedTwice { .. } => (Severity::Corruption, "listed-twice"),
        ListEntryNotFree { .. } => (Severity::Corruption, "listed-block-not-free"),
        ListEntryNotABlock { .. } => (Severity::Corruption, "list-entry-not-a-block"),
        WrongBucket { .. } => (Severity::Corruption, "wrong-bucket"),
        ListCycle { .. } => (Severity::Corruption, "free-list-cycle"),
        BitmapHidesBucket { .. } => (Severity::Corruption, "hidden-bucket"),
        LevelBitHidesBucket { .. } => (Severity::Corruption, "hidden-level"),
        WildernessHeader => (Severity::Corruption, "wilderness-header"),
        StaleCarveIntent { .. } => (Severity::Note, "carve-in-flight"),
        ConsolidatorHeld { .. } => (Severity::Note, "consolidation-in-flight"),
        Structure { .. } => (Severity::Corruption, "structure"),
    }
}

/// Passes over a segment in use: a finding is reported only if every pass sees it.
pub const CONFIRMING_PASSES: usize = 3;

/// Runs every check over `arena`; see the module docs for the list.
///
/// On a quiescent segment one pass is exact. When live participants are
/// attached, one pass is a snapshot taken while blocks move; so the checks
/// run [`CONFIRMING_PASSES`] times, a little apart, and only findings that
/// every pass sees are reported (the others are counted in
/// [`CheckReport::unconfirmed`]).
pub fn check<A: Arena>(arena: &A) -> CheckReport {
    // Alive or possibly alive (unknown): either may be changing blocks.
    let live = (0..arena.segment().participant_count())
        .filter(|&i| crate::view::slot_liveness(arena, i) != matrix_core::Liveness::Dead)
        .count();
    let mut report = check_once(arena);
    report.live_participants = live;
    if live == 0 {
        return report;
    }
    let key = |f: &Finding| (f.kind, f.offset, f.message.clone());
    for _ in 1..CONFIRMING_PASSES {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let again: std::collections::HashSet<_> =
            check_once(arena).findings.iter().map(key).collect();
        let before = report.findings.len();
        report.findings.retain(|f| again.contains(&key(f)));
        report.unconfirmed += (before - report.findings.len()) as u64;
    }
    if report.unconfirmed > 0 {
        report.add(
            Severity::Note,
            "in-flight",
            None,
            format!(
                "{} finding(s) seen in one pass but not in the next were operations in flight; not reported",
                report.unconfirmed
            ),
        );
    }
    report
}

/// One pass of every check.
fn check_once<A: Arena>(arena: &A) -> CheckReport {
    let seg = arena.segment();
    let audit = matrix_testkit::audit(arena);
    let mut report = CheckReport {
        blocks: audit.report.blocks,
        free_list_entries: audit.report.listed_blocks,
        live_participants: 0,
        stale_bitmap_bits: audit.report.stale_bitmap_bits,
        largest_free_run: audit.report.largest_free_run,
        unconfirmed: 0,
        findings: Vec::new(),
    };

    // 1. The invariant checker's violations.
    for v in &audit.violations {
        let (severity, kind) = classify(v);
        let remedy = match severity {
            Severity::Leak => "; `fsck --repair` reclaims it",
            Severity::Note => " (a live participant is mid-operation; run again to confirm)",
            Severity::Corruption => "",
        };
        let offset = (v.offset != 0).then_some(v.offset);
        report.add(severity, kind, offset, format!("{v}{remedy}"));
    }

    // 2. Who holds what: blocks of departed participants, user-state blocks.
    let mut held_by: BTreeMap<(usize, u32), (u64, u64)> = BTreeMap::new();
    for b in &audit.chain {
        if b.state == FREE || state::is_reserved(b.state) {
            continue;
        }
        let user = b.state >= state::USER_STATE_MIN;
        let what = format!(
            "{} block at {} ({} B)",
            state_name(b.state),
            b.offset,
            b.size
        );
        match holder_of(arena, b.owner) {
            Holder::Segment | Holder::Live => {}
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
            // Reported by the invariant checker (UnknownOwner).
            Holder::Vanished => {}
        }
    }
    let holding: Vec<usize> = held_by.keys().map(|&(slot, _)| slot).collect();
    for ((slot, pid), (blocks, bytes)) in held_by {
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

    // 3. Departed participant slots: unfinished carves, empty slots.
    for (index, slot) in seg.participants().enumerate() {
        // Acquire: pairs with claim's Release of ACTIVE (pid published before it).
        if slot.state(Acquire) == slot_state::EMPTY || !slot_departed(arena, index) {
            continue;
        }
        // Relaxed: published with the state Acquired above.
        let pid = slot.pid.load(Relaxed);
        let intents = slot
            .carve_intents
            .iter()
            // Acquire: pairs with the carver's stores of its intent.
            .filter(|e| e.load(Acquire) > 1)
            .count();
        if intents > 0 {
            report.add(
                Severity::Leak,
                "dead-carve-intent",
                None,
                format!(
                    "departed participant slot {index} (pid {pid}) left {intents} carve(s) unfinished; \
                     `fsck --repair` (recover) rebuilds them"
                ),
            );
        } else if !holding.contains(&index) {
            report.add(
                Severity::Note,
                "departed-participant",
                None,
                format!(
                    "participant slot {index} (pid {pid}) is departed and holds nothing; \
                     the next recover() frees the slot"
                ),
            );
        }
    }

    // 4. A consolidation left running by a participant that is gone.
    // Acquire: pairs with the consolidator's Release when it lets go.
    let consolidator = OwnerId(seg.consolidator.load(Acquire));
    if consolidator != OwnerId::SEGMENT {
        let message = match holder_of(arena, consolidator) {
            Holder::Departed { slot, pid } => Some(format!(
                "a consolidation was left running by departed participant slot {slot} (pid {pid})"
            )),
            Holder::Vanished => Some(format!(
                "a consolidation is marked running by owner {:#x}, which no slot carries",
                consolidator.0
            )),
            Holder::Segment | Holder::Live => None,
        };
        if let Some(message) = message {
            report.add(
                Severity::Leak,
                "dead-consolidator",
                None,
                format!("{message}; the next allocation miss or `fsck --repair` takes it over"),
            );
        }
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
/// participant, then — when every other participant is definitely dead —
/// the offline `repair()` that rebuilds the free index from the chain. A
/// participant that is alive, or whose liveness cannot be told, keeps its
/// blocks and skips the rebuild. Finally the tool closes its own slot, so
/// it leaves no trace.
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
            Err(matrix_core::RepairError::Segment(
                e @ (matrix_core::SegmentError::InUse { .. }
                | matrix_core::SegmentError::LivenessUnknown { .. }),
            )) => {
                summary.rebuild_skipped = Some(e.to_string());
            }
            Err(e) => return Err(e.into()),
        }
        matrix.close()?;
    }
    Ok(summary)
}

/// Recovers detached and dead participants' slots through a writable view
/// (which acts through a short-lived participant of its own and closes it).
pub fn release_tool_slot(name: &str) -> Result<(), CliError> {
    let view = crate::view::open_writable(name)?;
    view.recover(false)?;
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

/// Findings of one kind shown in text output (`--json` has them all).
const MAX_SHOWN_PER_KIND: usize = 20;

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
        let _ = writeln!(
            out,
            "  (the segment is in use: {CONFIRMING_PASSES} passes were made and only what each of them saw is reported)"
        );
    }
    let mut shown: BTreeMap<&str, usize> = BTreeMap::new();
    for f in &r.findings {
        let count = shown.entry(f.kind).or_default();
        *count += 1;
        if *count > MAX_SHOWN_PER_KIND {
            continue;
        }
        let tag = match f.severity {
            Severity::Note => "note",
            Severity::Leak => "LEAK",
            Severity::Corruption => "CORRUPT",
        };
        let _ = writeln!(out, "  {tag:<8} {:<28} {}", f.kind, f.message);
    }
    for (kind, count) in shown {
        if count > MAX_SHOWN_PER_KIND {
            let _ = writeln!(
                out,
                "  ...      {kind:<28} {} more (all are in --json)",
                count - MAX_SHOWN_PER_KIND
            );
        }
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
    use matrix_core::size_class::class_of;
    use matrix_core::state::{pack, CACHED};
    use matrix_core::BLOCK_HEADER_SIZE;
    use std::sync::atomic::Ordering::SeqCst;

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
        // What a participant killed right after popping the block leaves.
        hdr.state
            .store(pack(generation, OwnerId::SEGMENT.0, FREE), Relaxed);
        assert_eq!(kinds(&check(&m)), ["stranded-free-block"]);
    }

    #[test]
    fn a_listed_block_that_is_not_free_is_corruption() {
        let (m, headers) = busy_arena();
        let hdr = m.block_header(headers[0]).unwrap().0;
        let generation = state::generation_of(hdr.state.load(Relaxed));
        let owner = state::owner_of(hdr.state.load(Relaxed));
        hdr.state
            .store(pack(generation, owner, state::ALLOCATED), Relaxed);
        assert_eq!(kinds(&check(&m)), ["listed-block-not-free"]);
    }

    #[test]
    fn a_reserved_state_is_corruption() {
        let (m, headers) = busy_arena();
        let hdr = m.block_header(headers[3]).unwrap().0;
        hdr.state.store(pack(0, 0, 7), Relaxed);
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
        let word = hdr.state.load(Relaxed);
        hdr.state
            .store(state::with_owner(word, OwnerId::of_slot(9).0), Relaxed);
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
        let word = hdr.state.load(Relaxed);
        hdr.state
            .store(state::with_owner(word, OwnerId::SEGMENT.0), Relaxed);
        assert_eq!(kinds(&check(&m)), ["orphaned-block"]);
    }

    #[test]
    fn a_broken_chain_is_corruption() {
        let (m, headers) = busy_arena();
        m.block_header(headers[7]).unwrap().0.size.store(8, Relaxed);
        assert!(kinds(&check(&m)).contains(&"broken-chain"));
    }
}
