//! `matrix fsck`: check a segment's invariants, and repair what can be repaired.
//!
//! The structural checks are `matrix_testkit`'s invariant checker
//! ([`matrix_testkit::audit`]), run over a participant-less view; fsck adds
//! what an operator needs on top of it: who holds what, and whether those
//! holders are still alive. Exact when the segment is quiescent (no
//! allocation or free in flight); with live participants every problem is
//! re-validated before it is reported ([`crate::confirm`]), and a check
//! that cannot be decided is reported inconclusive.
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
//! | no carve, resize, pop or consolidation left unfinished by a dead participant, each its own kind (a chain that stops at a dead carver's recorded offset is such a carve, not corruption) | leak (recover) |
//! | carves, consolidations and frees in flight in live participants; user-state blocks of departed participants; departed slots that hold nothing | note |
//!
//! Corruption and leaks are problems (exit code 1); notes are not.

use crate::confirm::Verdict;
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
    /// Participant slot concerned, if one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot: Option<usize>,
    /// Pid recorded in that slot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Blocks concerned, when more than one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocks: Option<u64>,
    /// Bytes concerned (headers included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// State of the block concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Free-list bucket concerned (`[first level, second level]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<[usize; 2]>,
    /// What was found, in words.
    pub message: String,
}

impl Finding {
    fn new(severity: Severity, kind: &'static str, offset: Option<u32>, message: String) -> Self {
        Finding {
            severity,
            kind,
            offset,
            slot: None,
            pid: None,
            blocks: None,
            bytes: None,
            state: None,
            bucket: None,
            message,
        }
    }

    fn of_slot(mut self, slot: usize, pid: u32) -> Self {
        self.slot = Some(slot);
        self.pid = Some(pid);
        self
    }
}

/// Findings of one kind.
#[derive(Debug, Clone, Serialize)]
pub struct KindCount {
    /// The kind.
    pub kind: &'static str,
    /// Its severity.
    pub severity: Severity,
    /// How many findings of it there are.
    pub count: usize,
}

/// The checker's result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    /// Blocks in the chain.
    pub blocks: u64,
    /// Blocks found in the free lists.
    pub free_list_entries: u64,
    /// Live participants while checking (or of unknown liveness).
    pub live_participants: usize,
    /// Bitmap bits set over empty buckets (allowed: bits are cleared lazily).
    pub stale_bitmap_bits: u64,
    /// Largest run of adjacent free blocks: what one consolidation could offer.
    pub largest_free_run: u64,
    /// Findings that a second look showed to be operations in flight.
    pub unconfirmed: u64,
    /// Passes whose findings could not all be decided (segment in use).
    pub undecided_rounds: u32,
    /// Whether the segment changed under every attempt too fast to tell:
    /// the findings are then the confirmed ones only, and more may exist.
    pub inconclusive: bool,
    /// Findings per kind (all of them, also those not listed below).
    pub summary: Vec<KindCount>,
    /// Findings left out of `findings` (beyond the first few of each kind).
    pub findings_omitted: usize,
    /// What was found (the first few of each kind unless all were asked for).
    pub findings: Vec<Finding>,
    /// The chain walk stopped at a live participant's carve: the blocks
    /// beyond it were not seen, so this pass is not the whole answer.
    #[serde(skip)]
    chain_cut_in_flight: bool,
}

impl CheckReport {
    /// Findings that are problems (not notes), omitted ones included.
    pub fn problems(&self) -> usize {
        if self.summary.is_empty() {
            return self
                .findings
                .iter()
                .filter(|f| f.severity > Severity::Note)
                .count();
        }
        self.summary
            .iter()
            .filter(|k| k.severity > Severity::Note)
            .map(|k| k.count)
            .sum()
    }

    fn add(
        &mut self,
        severity: Severity,
        kind: &'static str,
        offset: Option<u32>,
        message: String,
    ) {
        self.findings
            .push(Finding::new(severity, kind, offset, message));
    }

    /// Counts the findings per kind and keeps only the first `limit` of
    /// each in [`findings`](Self::findings) (`None`: keep all).
    pub fn summarize(&mut self, limit: Option<usize>) {
        let mut counts: BTreeMap<(&'static str, Severity), usize> = BTreeMap::new();
        for f in &self.findings {
            *counts.entry((f.kind, f.severity)).or_default() += 1;
        }
        self.summary = counts
            .iter()
            .map(|(&(kind, severity), &count)| KindCount {
                kind,
                severity,
                count,
            })
            .collect();
        if let Some(limit) = limit {
            let mut shown: BTreeMap<&str, usize> = BTreeMap::new();
            let before = self.findings.len();
            self.findings.retain(|f| {
                let n = shown.entry(f.kind).or_default();
                *n += 1;
                *n <= limit
            });
            self.findings_omitted += before - self.findings.len();
        }
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

/// A departed participant's intent entries, by what each records.
#[derive(Debug, Default, PartialEq, Eq)]
struct DepartedIntents {
    /// Wilderness carves or retracts (`alloc::is_carve_intent`).
    carves: usize,
    /// A resize's records: the block it holds and its owner and state
    /// (`realloc::is_resize_intent`, or the tentative record a hold writes
    /// first), or a move (`realloc::is_move_intent`).
    resizes: usize,
    /// Pops between a list's head CAS and the claim (`alloc::is_hold_intent`).
    holds: usize,
}

impl DepartedIntents {
    fn any(&self) -> bool {
        self.carves + self.resizes + self.holds > 0
    }
}

fn departed_intents(slot: &matrix_core::layout::ParticipantSlot) -> DepartedIntents {
    let mut found = DepartedIntents::default();
    for e in &slot.carve_intents {
        // Acquire: pairs with the participant's stores of its intent.
        let v = e.load(Acquire);
        if matrix_core::alloc::is_carve_intent(v) {
            found.carves += 1;
        } else if matrix_core::realloc::is_resize_intent(v)
            || matrix_core::realloc::is_tentative_resize_intent(v)
            || matrix_core::realloc::is_move_intent(v)
        {
            found.resizes += 1;
        } else if matrix_core::alloc::is_hold_intent(v) {
            found.holds += 1;
        }
    }
    found
}

/// Attempts at a conclusive check of a segment in use before it is
/// reported inconclusive.
pub const ATTEMPTS: u32 = 5;

/// Runs every check over `arena`; see the module docs for the list.
///
/// On a quiescent segment one pass is exact. When live participants are
/// attached, every problem of a pass is looked at twice more and reported
/// only if it held still ([`crate::confirm`]); findings that moved are
/// counted in [`CheckReport::unconfirmed`]. If some could not be decided
/// (the segment changed too fast), the whole check is tried again, up to
/// [`ATTEMPTS`] times; after that the report is
/// [`inconclusive`](CheckReport::inconclusive), with the confirmed problems
/// only.
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
    let mut unconfirmed = 0;
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            report = check_once(arena);
            report.live_participants = live;
        }
        let (problems, notes): (Vec<Finding>, Vec<Finding>) = report
            .findings
            .drain(..)
            .partition(|f| f.severity > Severity::Note);
        let verdicts = crate::confirm::confirm(arena, &problems, || {
            check_once(arena)
                .findings
                .iter()
                .filter(|f| f.severity > Severity::Note)
                .map(crate::confirm::key)
                .collect()
        });
        let mut undecided = usize::from(report.chain_cut_in_flight);
        let mut kept = Vec::new();
        for (f, v) in problems.into_iter().zip(verdicts) {
            match v {
                Verdict::Confirmed => kept.push(f),
                // A pass whose chain walk stopped at a change in flight saw
                // nothing beyond it: what it found is not the whole answer.
                Verdict::InFlight if f.kind == "broken-chain" => undecided += 1,
                Verdict::InFlight => unconfirmed += 1,
                Verdict::Undecidable => undecided += 1,
            }
        }
        kept.extend(notes);
        report.findings = kept;
        if undecided == 0 {
            report.inconclusive = false;
            break;
        }
        report.undecided_rounds += 1;
        report.inconclusive = true;
    }
    report.unconfirmed = unconfirmed;
    if unconfirmed > 0 {
        report.add(
            Severity::Note,
            "in-flight",
            None,
            format!(
                "{unconfirmed} finding(s) changed between two looks {} ms apart: operations in flight, not reported",
                crate::confirm::SETTLE.as_millis()
            ),
        );
    }
    report
}

/// The free-list bucket a violation concerns, if one.
fn bucket_of(kind: &ViolationKind) -> Option<[usize; 2]> {
    use ViolationKind::*;
    match kind {
        ListEntryNotFree { class, .. }
        | ListEntryNotABlock { class }
        | WrongBucket { class, .. }
        | ListCycle { class }
        | BitmapHidesBucket { class }
        | LevelBitHidesBucket { class } => Some([class.fl, class.sl]),
        ListedTwice { second, .. } => Some([second.fl, second.sl]),
        _ => None,
    }
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
        ..CheckReport::default()
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
        let mut finding = Finding::new(severity, kind, offset, format!("{v}{remedy}"));
        finding.bucket = bucket_of(&v.kind);
        if let ViolationKind::ListEntryNotFree { state, .. }
        | ViolationKind::TransientState { state, .. }
        | ViolationKind::UnknownOwner { state, .. }
        | ViolationKind::ReservedState { state } = &v.kind
        {
            finding.state = Some(state_name(*state).into());
        }
        report.findings.push(finding);
    }

    let mut cut_in_flight = false;
    // A chain that stops at a carve's recorded offset is a carve whose
    // header is not written yet: in flight if its carver lives, left
    // unfinished (and rebuilt by recover) if it is gone.
    for f in &mut report.findings {
        if f.kind != "broken-chain" {
            continue;
        }
        let Some(offset) = f.offset else { continue };
        let carver = seg.participants().position(|slot| {
            slot.carve_intents.iter().any(|e| {
                // Acquire: pairs with the carver's stores of its intent.
                let v = e.load(Acquire);
                matrix_core::alloc::is_carve_intent(v) && v as u32 == offset
            })
        });
        let Some(slot) = carver else { continue };
        // Relaxed: the pid is for the message only.
        let pid = seg.participant(slot).map_or(0, |s| s.pid.load(Relaxed));
        if slot_departed(arena, slot) {
            f.severity = Severity::Leak;
            f.kind = "unfinished-carve";
            f.message = format!(
                "offset {offset}: a carve of departed participant slot {slot} (pid {pid}) has no header yet; \
                 `fsck --repair` (recover) rebuilds it from the recorded intent"
            );
        } else {
            cut_in_flight = true;
            f.severity = Severity::Note;
            f.kind = "carve-in-flight";
            f.message = format!(
                "offset {offset}: participant slot {slot} (pid {pid}) is carving a block here"
            );
        }
        f.slot = Some(slot);
        f.pid = Some(pid);
    }
    report.chain_cut_in_flight = cut_in_flight;

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
            Holder::Departed { slot, pid } if user => report.findings.push(
                Finding::new(
                    Severity::Note,
                    "user-state-block-of-departed",
                    Some(b.offset),
                    format!(
                        "{what} in user state {} is held by departed participant slot {slot} (pid {pid}); \
                         kept by design, `fsck --repair --reclaim-user-states` frees it",
                        b.state
                    ),
                )
                .of_slot(slot, pid),
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
        let mut f = Finding::new(
            Severity::Leak,
            "held-by-departed",
            None,
            format!(
                "{blocks} block(s), {bytes} B, are held by departed participant slot {slot} (pid {pid}); \
                 `fsck --repair` (recover) reclaims them"
            ),
        )
        .of_slot(slot, pid);
        f.blocks = Some(blocks);
        f.bytes = Some(bytes);
        report.findings.push(f);
    }

    // 3. Departed participant slots: unfinished carves, resizes and pops; empty slots.
    for (index, slot) in seg.participants().enumerate() {
        // Acquire: pairs with claim's Release of ACTIVE (pid published before it).
        if slot.state(Acquire) == slot_state::EMPTY || !slot_departed(arena, index) {
            continue;
        }
        // Relaxed: published with the state Acquired above.
        let pid = slot.pid.load(Relaxed);
        let intents = departed_intents(slot);
        for (kind, count, what) in [
            ("dead-carve-intent", intents.carves, "carve(s) unfinished; `fsck --repair` (recover) rebuilds them"),
            ("dead-resize-intent", intents.resizes, "resize record(s) of an unfinished resize; `fsck --repair` (recover) hands each block back to its recorded owner and state"),
            ("dead-hold-intent", intents.holds, "pop(s) between taking a free block off a list and claiming it; `fsck --repair` (recover) puts each block back"),
        ] {
            if count == 0 {
                continue;
            }
            let mut f = Finding::new(
                Severity::Leak,
                kind,
                None,
                format!("departed participant slot {index} (pid {pid}) left {count} {what}"),
            )
            .of_slot(index, pid);
            f.blocks = Some(count as u64);
            report.findings.push(f);
        }
        if intents.any() {
            continue;
        }
        if !holding.contains(&index) {
            report.findings.push(
                Finding::new(
                    Severity::Note,
                    "departed-participant",
                    None,
                    format!(
                        "participant slot {index} (pid {pid}) is departed and holds nothing; \
                         the next recover() frees the slot"
                    ),
                )
                .of_slot(index, pid),
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
    /// Whether it ran first, because the free index itself was damaged.
    pub rebuilt_first: bool,
    /// Why it did not, when it did not.
    pub rebuild_skipped: Option<String>,
    /// Blocks the offline repair reclaimed.
    pub rebuilt_blocks: u64,
    /// Their bytes.
    pub rebuilt_bytes: u64,
    /// Participant slots the offline repair emptied.
    pub rebuilt_slots: u32,
    /// What could not be repaired, when something could not.
    pub cannot_repair: Option<String>,
    /// What to do about it.
    pub next_step: Option<String>,
}

fn add_recovery(summary: &mut RepairSummary, r: &RecoveryReport) {
    summary.recovered_participants += r.participants;
    summary.recovered_blocks += r.blocks;
    summary.recovered_bytes += r.bytes;
}

/// Kinds that mean the free index itself is damaged: `recover()` and a
/// consolidation walk its lists, so it is rebuilt from the chain first.
const INDEX_DAMAGE: &[&str] = &[
    "listed-block-not-free",
    "list-entry-not-a-block",
    "wrong-bucket",
    "free-list-cycle",
    "hidden-bucket",
    "hidden-level",
    "listed-twice",
];

/// Kinds that mean the block chain itself is damaged: nothing that walks
/// it (recovery, the rebuild of the index) can run past the damage.
const CHAIN_DAMAGE: &[&str] = &["broken-chain", "top-out-of-range", "wilderness-header"];

fn first_of<'a>(report: &'a CheckReport, kinds: &[&str]) -> Option<&'a Finding> {
    report.findings.iter().find(|f| kinds.contains(&f.kind))
}

fn has_kind(report: &CheckReport, kinds: &[&str]) -> bool {
    report.summary.iter().any(|k| kinds.contains(&k.kind)) || first_of(report, kinds).is_some()
}

/// Repairs segment `name`, whose check found `before`.
///
/// * A broken block chain cannot be repaired: nothing is attempted, and
///   the summary says what and the next step.
/// * A damaged free index is rebuilt from the chain first, by the offline
///   `repair()` (which also reclaims what dead participants held) — only
///   when every other participant is definitely dead; otherwise nothing is
///   attempted and the summary says whom to stop.
/// * Otherwise `recover()` and a consolidation run as a short-lived
///   participant, then — when every other participant is definitely dead —
///   the offline `repair()`. A participant that is alive, or whose
///   liveness cannot be told, keeps its blocks and skips the rebuild.
///
/// The tool's own participant slot is emptied again on every path, also
/// when a step fails (see [`AtomicMatrix::close`]).
pub fn repair(
    name: &str,
    reclaim_user_states: bool,
    before: &CheckReport,
) -> Result<RepairSummary, CliError> {
    let mut summary = RepairSummary::default();
    if has_kind(before, CHAIN_DAMAGE) {
        let at = first_of(before, CHAIN_DAMAGE)
            .and_then(|f| f.offset)
            .map_or_else(String::new, |o| format!(" at offset {o}"));
        summary.cannot_repair = Some(format!(
            "the block chain is broken{at}: the blocks from there on cannot be told apart, \
             so neither recovery nor a rebuild of the free index can run"
        ));
        summary.next_step = Some(format!(
            "let the programs attached to it save what they still can (blocks before the damage stay readable), \
             then remove it with `matrix rm {name} --force` and create it again"
        ));
        return Ok(summary);
    }
    let index_damaged = has_kind(before, INDEX_DAMAGE);
    if index_damaged {
        let view = crate::view::open(name)?;
        let (pids, unknown) = crate::view::live_participant_pids(&view);
        if !pids.is_empty() || unknown > 0 {
            let list: Vec<String> = pids.iter().map(u32::to_string).collect();
            summary.cannot_repair = Some(format!(
                "the free index is damaged and {} participant(s) are attached (pid {}{}); \
                 it can only be rebuilt with the segment to itself",
                pids.len() + unknown,
                if list.is_empty() {
                    "-".into()
                } else {
                    list.join(", ")
                },
                if unknown > 0 {
                    format!("; {unknown} of unknown liveness")
                } else {
                    String::new()
                }
            ));
            summary.next_step = Some(format!(
                "stop them (or wait until they exit), then run `matrix fsck {name} --repair` again"
            ));
            return Ok(summary);
        }
    }
    let matrix = AtomicMatrix::open(name)?;
    let outcome = repair_attached(&matrix, reclaim_user_states, index_damaged, &mut summary);
    let closed = matrix.close();
    outcome?;
    closed?;
    Ok(summary)
}

/// The steps of [`repair`] that run through the tool's participant.
fn repair_attached(
    matrix: &AtomicMatrix,
    reclaim_user_states: bool,
    index_damaged: bool,
    summary: &mut RepairSummary,
) -> Result<(), CliError> {
    if index_damaged {
        let r = match matrix.repair(reclaim_user_states) {
            Ok(r) => r,
            Err(e) => {
                summary.cannot_repair = Some(format!("the free index could not be rebuilt: {e}"));
                summary.next_step = Some(
                    "stop every program attached to the segment and run `matrix fsck NAME --repair` again; \
                     if it fails the same way, save what the programs still can and remove the segment"
                        .into(),
                );
                return Ok(());
            }
        };
        summary.rebuilt_index = true;
        summary.rebuilt_first = true;
        summary.rebuilt_blocks = r.blocks;
        summary.rebuilt_bytes = r.bytes;
        summary.rebuilt_slots = r.participants;
        let c = matrix.consolidate()?;
        summary.consolidated_in = c.blocks_in;
        summary.consolidated_out = c.blocks_out;
        return Ok(());
    }
    add_recovery(summary, &matrix.recover(reclaim_user_states)?);
    let c = matrix.consolidate()?;
    summary.consolidated_in = c.blocks_in;
    summary.consolidated_out = c.blocks_out;
    match matrix.repair(reclaim_user_states) {
        Ok(r) => {
            summary.rebuilt_index = true;
            summary.rebuilt_blocks = r.blocks;
            summary.rebuilt_bytes = r.bytes;
            summary.rebuilt_slots = r.participants;
        }
        Err(matrix_core::RepairError::Segment(
            e @ (matrix_core::SegmentError::InUse { .. }
            | matrix_core::SegmentError::LivenessUnknown { .. }),
        )) => {
            summary.rebuild_skipped = Some(e.to_string());
        }
        Err(e) => return Err(e.into()),
    }
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
    /// The check could not decide everything (segment in use); exit code 3.
    pub inconclusive: bool,
    /// The check before any repair.
    pub before: CheckReport,
    /// What the repair did, if `--repair` was given.
    pub repair: Option<RepairSummary>,
    /// The check after the repair.
    pub after: Option<CheckReport>,
}

/// Findings of one kind listed (text and JSON) unless `--all` is given.
pub const SHOWN_PER_KIND: usize = 20;

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
    if r.inconclusive {
        let _ = writeln!(
            out,
            "  INCONCLUSIVE: the segment changed under {} attempts too fast to tell; only confirmed problems are listed; run fsck again",
            r.undecided_rounds
        );
    } else if r.live_participants > 0 {
        let _ = writeln!(
            out,
            "  (the segment is in use: every problem was looked at twice more, {} ms apart, and only those that held still are reported)",
            crate::confirm::SETTLE.as_millis()
        );
    }
    let mut shown: BTreeMap<&str, usize> = BTreeMap::new();
    for f in &r.findings {
        *shown.entry(f.kind).or_default() += 1;
        let tag = match f.severity {
            Severity::Note => "note",
            Severity::Leak => "LEAK",
            Severity::Corruption => "CORRUPT",
        };
        let _ = writeln!(out, "  {tag:<8} {:<28} {}", f.kind, f.message);
    }
    for k in &r.summary {
        let listed = shown.get(k.kind).copied().unwrap_or(0);
        if k.count > listed {
            let _ = writeln!(
                out,
                "  ...      {:<28} {} more of this kind ({} in all; `--all` lists every one)",
                k.kind,
                k.count - listed,
                k.count
            );
        }
    }
    out
}

/// Renders the whole fsck run.
pub fn render_fsck(r: &FsckReport) -> String {
    let mut out = render_check(&format!("fsck {}", r.name), &r.before);
    if let Some(s) = &r.repair {
        if let Some(what) = &s.cannot_repair {
            let _ = writeln!(out, "repair: cannot repair: {what}");
            if let Some(next) = &s.next_step {
                let _ = writeln!(out, "repair: next step: {next}");
            }
        }
        if s.rebuilt_first {
            let _ = writeln!(
                out,
                "repair: the free index was damaged: rebuilt it from the chain first, {} block(s), {} B reclaimed, {} slot(s) emptied",
                s.rebuilt_blocks, s.rebuilt_bytes, s.rebuilt_slots
            );
            let _ = writeln!(
                out,
                "repair: consolidation {} -> {} free blocks",
                s.consolidated_in, s.consolidated_out
            );
        } else if s.cannot_repair.is_none() {
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
    }
    if let Some(after) = &r.after {
        out.push_str(&render_check("after repair", after));
    }
    let cannot = r.repair.as_ref().is_some_and(|s| s.cannot_repair.is_some());
    let verdict = if cannot {
        "cannot repair"
    } else if r.inconclusive && r.clean {
        "inconclusive"
    } else if r.clean {
        "clean"
    } else {
        "problems found"
    };
    let _ = writeln!(out, "{verdict}");
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

    /// A departed participant's unfinished resize is reported as one, not
    /// as a carve: a resize intent (and a move intent) beside one carve
    /// intent count one carve and two resizes.
    #[test]
    fn a_departed_resizer_s_intents_are_resizes_not_carves() {
        use matrix_core::layout::{slot_state, slot_word};
        use matrix_core::realloc::{move_intent, resize_intent};
        let (m, headers) = busy_arena();
        let slot = m.header().participant(5).unwrap();
        slot.word
            .store(slot_word::pack(slot_state::DETACHED, None, 0, 1), SeqCst);
        slot.pid.store(4242, SeqCst);
        let e = &slot.carve_intents;
        e[0].store(resize_intent(headers[1], 0, state::ALLOCATED), SeqCst);
        e[1].store(move_intent(headers[5], headers[3]), SeqCst);
        e[2].store(
            (48u64 << 32) | u64::from(m.header().top.load(SeqCst)),
            SeqCst,
        );
        let r = check(&m);
        let count = |kind: &str| {
            r.findings
                .iter()
                .filter(|f| f.kind == kind)
                .map(|f| f.blocks)
                .collect::<Vec<_>>()
        };
        assert_eq!(count("dead-resize-intent"), [Some(2)], "{r:#?}");
        assert_eq!(count("dead-carve-intent"), [Some(1)], "{r:#?}");
    }
}
