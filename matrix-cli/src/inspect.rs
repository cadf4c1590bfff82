//! `matrix ls` and `matrix stat`: what is in `/dev/shm`, and what is inside one segment.

use crate::error::CliError;
use crate::size::format_size;
use crate::sync::Ordering::{Acquire, Relaxed};
use crate::view::{peek_init, probe, slot_liveness, Probe, SegmentView, SHM_DIR};
use matrix_core::layout::{init, slot_state, slot_word, MAGIC};
use matrix_core::state::{state_name, FREE};
use matrix_core::{Arena, Liveness, OwnerId, SegmentError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;

/// One line of `matrix ls`.
#[derive(Debug, Clone, Serialize)]
pub struct LsEntry {
    /// Segment name (file name in `/dev/shm`).
    pub name: String,
    /// File size in bytes.
    pub size_bytes: u64,
    /// Owner of the file (user name, or uid).
    pub owner: String,
    /// Group of the file (group name, or gid).
    pub group: String,
    /// File mode, octal digits (`0660`).
    pub mode: String,
    /// Seconds since the file was created (or last changed, where the
    /// file system records no creation time).
    pub age_seconds: Option<u64>,
    /// Bytes in blocks that are not free, over the arena size (0–100).
    pub used_percent: Option<f64>,
    /// Participant slots taken (alive, dead, detached or unknown).
    pub attached: Option<usize>,
    /// Live participants.
    pub participants_alive: Option<usize>,
    /// Dead or detached participants whose slots await recovery.
    pub participants_dead: Option<usize>,
    /// Participants whose liveness cannot be told (possibly alive).
    pub participants_unknown: Option<usize>,
    /// `ok`, `needs recover`, `inaccessible`, `permission denied`, or why
    /// the segment could not be read.
    pub status: String,
}

/// Lists the files of `/dev/shm` that start with the matrix magic number,
/// and those it may not read at all ("permission denied": they may be
/// segments). Other files are skipped: only their type and first 8 bytes
/// are read, through a read-only descriptor, and FIFOs, directories and
/// symlinks are not opened at all.
pub fn list_segments() -> Result<Vec<LsEntry>, CliError> {
    let entries = std::fs::read_dir(SHM_DIR).map_err(|err| CliError::Io {
        op: "list /dev/shm",
        err,
    })?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue; // vanished meanwhile
        };
        if !meta.file_type().is_file() {
            continue;
        }
        let mut row = LsEntry {
            name: name.clone(),
            size_bytes: meta.len(),
            owner: crate::users::user_name(meta.uid()),
            group: crate::users::group_name(meta.gid()),
            mode: format!("{:04o}", meta.mode() & 0o7777),
            age_seconds: age_of(&meta),
            used_percent: None,
            attached: None,
            participants_alive: None,
            participants_dead: None,
            participants_unknown: None,
            status: "ok".into(),
        };
        match probe(&path) {
            Ok(Probe::Segment) => {}
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                row.status = "permission denied".into();
                out.push(row);
                continue;
            }
            Err(_) => continue,
        }
        // A segment still being formatted (or abandoned mid-format) is
        // reported as it is; opening it would wait for the formatter.
        match peek_init(&path) {
            Ok((init::READY, _)) => {}
            Ok((state, pid)) => {
                let who = crate::view::formatter_liveness(&path).as_str();
                row.status = format!(
                    "not ready: init state {}, formatter pid {pid} ({who})",
                    init_state_name(state)
                );
                out.push(row);
                continue;
            }
            Err(e) => {
                row.status = format!("unreadable: {e}");
                out.push(row);
                continue;
            }
        }
        match crate::view::open(&name) {
            Ok(view) => {
                let counts = participant_counts(&view);
                row.attached = Some(counts.alive + counts.dead + counts.unknown);
                row.participants_alive = Some(counts.alive);
                row.participants_dead = Some(counts.dead);
                row.participants_unknown = Some(counts.unknown);
                row.status = if counts.unknown > 0 {
                    format!(
                        "inaccessible: the liveness of {} participant(s) cannot be told",
                        counts.unknown
                    )
                } else if counts.dead > 0 {
                    "needs recover".into()
                } else {
                    "ok".into()
                };
                match view.stats() {
                    Ok(s) => row.used_percent = Some(percent(s.used_bytes, s.total_bytes)),
                    Err(e) => row.status = format!("damaged: {e}"),
                }
            }
            Err(CliError::Segment(
                SegmentError::SizeMismatch { recorded, actual }
                | SegmentError::TooSmallForHeader {
                    file_size: actual,
                    header_size: recorded,
                },
            )) => {
                row.status = format!(
                    "truncated: the file has {}, the segment needs {}",
                    format_size(actual),
                    format_size(recorded)
                );
            }
            Err(CliError::Segment(SegmentError::Io {
                kind: std::io::ErrorKind::PermissionDenied,
                ..
            })) => {
                row.status = "permission denied".into();
            }
            Err(e) => row.status = e.to_string(),
        }
        out.push(row);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn age_of(meta: &std::fs::Metadata) -> Option<u64> {
    let born = meta.created().ok().or_else(|| {
        let secs = u64::try_from(meta.ctime()).ok()?;
        Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
    })?;
    std::time::SystemTime::now()
        .duration_since(born)
        .ok()
        .map(|d| d.as_secs())
}

/// `45s`, `12m`, `3h`, `2d`.
pub fn format_age(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// Renders `matrix ls` as a table.
pub fn render_ls(rows: &[LsEntry]) -> String {
    if rows.is_empty() {
        return "no matrix segments in /dev/shm\n".into();
    }
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
    let owner_width = rows
        .iter()
        .map(|r| r.owner.len() + 1 + r.group.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut out = format!(
        "{:<width$}  {:<owner_width$}  {:>4}  {:>10}  {:>4}  {:>6}  {:>3}  {:>5}  {:>4}  STATUS\n",
        "NAME", "OWNER", "MODE", "SIZE", "AGE", "USED", "ATT", "ALIVE", "DEAD"
    );
    for r in rows {
        let opt = |v: Option<usize>| v.map_or("-".to_owned(), |v| v.to_string());
        let used = r
            .used_percent
            .map_or("-".to_owned(), |p| format!("{p:.1}%"));
        let _ = writeln!(
            out,
            "{:<width$}  {:<owner_width$}  {:>4}  {:>10}  {:>4}  {:>6}  {:>3}  {:>5}  {:>4}  {}",
            r.name,
            format!("{}:{}", r.owner, r.group),
            r.mode,
            format_size(r.size_bytes),
            r.age_seconds.map_or("-".to_owned(), format_age),
            used,
            opt(r.attached),
            opt(r.participants_alive),
            opt(r.participants_dead),
            r.status
        );
    }
    out
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        (part as f64 * 1000.0 / whole as f64).round() / 10.0
    }
}

/// Participants by liveness.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    /// Attached and alive.
    pub alive: usize,
    /// Dead, or detached: awaiting recovery.
    pub dead: usize,
    /// Attached, liveness cannot be told (possibly alive).
    pub unknown: usize,
}

/// Participants of `view` by liveness.
pub fn participant_counts(view: &SegmentView) -> Counts {
    let mut counts = Counts::default();
    for (index, slot) in view.segment().participants().enumerate() {
        // Acquire: pairs with the Release CAS that set the slot word.
        if slot.state(Acquire) == slot_state::EMPTY {
            continue;
        }
        match slot_liveness(view, index) {
            Liveness::Alive => counts.alive += 1,
            Liveness::Unknown => counts.unknown += 1,
            Liveness::Dead => counts.dead += 1,
        }
    }
    counts
}

/// The segment header, field by field.
#[derive(Debug, Clone, Serialize)]
pub struct HeaderReport {
    /// The magic number as text (`ATMATRX1`).
    pub magic: String,
    /// Format version.
    pub version: u32,
    /// Layout fingerprint, hex.
    pub fingerprint: String,
    /// `UNINIT`, `FORMATTING` or `READY`.
    pub init_state: String,
    /// Segment size in bytes.
    pub segment_size: u64,
    /// Offset of the first block.
    pub arena_start: u32,
    /// End of the arena.
    pub arena_end: u32,
    /// Start of the wilderness.
    pub top: u32,
    /// Pid of the process that formatted the segment.
    pub formatter_pid: u32,
    /// Offset of the root registry block (0 = none).
    pub root_registry: u32,
    /// Owner id of a running consolidation (0 = none).
    pub consolidator: u32,
    /// Completed consolidations (the allocators' epoch).
    pub consolidation_epoch: u64,
    /// Consolidations run.
    pub consolidations: u64,
    /// Participants recovered.
    pub recoveries: u64,
    /// Out-of-memory results returned.
    pub out_of_memory: u64,
    /// Offline repairs run.
    pub repairs: u64,
}

/// Used and free space.
#[derive(Debug, Clone, Serialize)]
pub struct SpaceReport {
    /// Arena bytes (segment minus its header).
    pub total_bytes: u64,
    /// Bytes in blocks that are not free (headers included).
    pub used_bytes: u64,
    /// Bytes in free blocks plus the wilderness.
    pub free_bytes: u64,
    /// `used_bytes / total_bytes`, in percent.
    pub used_percent: f64,
    /// Bytes of free blocks parked in participants' thread caches (part of `free_bytes`).
    pub cached_bytes: u64,
    /// Free blocks (the wilderness counts as one).
    pub free_blocks: u64,
    /// Blocks that are not free.
    pub used_blocks: u64,
    /// Largest payload one allocation could get now.
    pub largest_free_payload: u32,
    /// Untouched bytes at the end of the arena.
    pub wilderness_bytes: u64,
    /// `1 - largest free block / free bytes` (0 = all free memory in one block).
    pub fragmentation: f64,
}

/// Blocks in one state.
#[derive(Debug, Clone, Serialize)]
pub struct StateCount {
    /// State number.
    pub state: u32,
    /// `FREE`, `ALLOCATED`, `ACKED`, `COALESCING`, `RESERVED` or `USER`.
    pub name: String,
    /// Blocks in that state.
    pub blocks: u64,
    /// Their bytes, headers included.
    pub bytes: u64,
}

/// One participant slot.
#[derive(Debug, Clone, Serialize)]
pub struct ParticipantReport {
    /// Slot index.
    pub slot: usize,
    /// `ACTIVE`, `DETACHED` or `RECOVERING`.
    pub state: String,
    /// Pid of the holder.
    pub pid: u32,
    /// Owner id its blocks carry.
    pub owner_id: u32,
    /// Whether it is known to be alive (its liveness lock is held).
    pub alive: bool,
    /// `alive`, `dead` or `unknown` (its lock could not be queried).
    pub liveness: String,
    /// Blocks it owns.
    pub blocks: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Command name of the process (`/proc/<pid>/comm`), when the pid is
    /// visible here and still names the process that attached.
    pub command: Option<String>,
    /// User the process runs as, on the same condition.
    pub user: Option<String>,
    /// Seconds since the process started, on the same condition.
    pub started_seconds_ago: Option<u64>,
}

/// What `/proc` says about the process that attached as `pid` at
/// `start_time` (clock ticks since boot): command, user, age. Nothing when
/// the pid is not visible here (another PID namespace) or names another
/// process now (its start time differs). For display only.
fn process_info(pid: u32, start_time: u64) -> (Option<String>, Option<String>, Option<u64>) {
    let now = matrix_core::participant::process_start_time(pid);
    if pid == 0 || start_time == 0 || now.map(|(s, _)| s) != Some(start_time) {
        return (None, None, None);
    }
    let command = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|c| c.trim_end().to_owned());
    let user = std::fs::metadata(format!("/proc/{pid}"))
        .ok()
        .map(|m| crate::users::user_name(m.uid()));
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let uptime = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|u| u.split(' ').next()?.parse::<f64>().ok());
    let age = match (uptime, ticks) {
        (Some(up), t) if t > 0 => Some((up - start_time as f64 / t as f64).max(0.0) as u64),
        _ => None,
    };
    (command, user, age)
}

/// Free blocks with sizes in `[min_size, max_size]`.
#[derive(Debug, Clone, Serialize)]
pub struct HistogramBucket {
    /// Smallest block size (header included) in the bucket.
    pub min_size: u64,
    /// Largest block size in the bucket.
    pub max_size: u64,
    /// Free blocks in it.
    pub blocks: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Everything `matrix stat` shows.
#[derive(Debug, Clone, Serialize)]
pub struct StatReport {
    /// Segment name.
    pub name: String,
    /// Header fields.
    pub header: HeaderReport,
    /// Space totals.
    pub space: SpaceReport,
    /// Blocks by state, user states each under their own number.
    pub blocks_by_state: Vec<StateCount>,
    /// Live participants.
    pub participants_alive: usize,
    /// Dead or detached participants.
    pub participants_dead: usize,
    /// Non-empty participant slots.
    pub participants: Vec<ParticipantReport>,
    /// Free-block sizes, power-of-two buckets (wilderness excluded).
    pub free_histogram: Vec<HistogramBucket>,
    /// The root registry's entries (`null`: the segment has none, or it
    /// is damaged; see `registry_damaged`).
    pub registry: Option<crate::objects::RegistryReport>,
    /// Why the root registry cannot be read, when it cannot.
    pub registry_damaged: Option<String>,
    /// Every queue named in the root registry.
    pub queues: Vec<crate::objects::QueueReport>,
}

fn slot_state_name(state: u32) -> &'static str {
    match state {
        slot_state::EMPTY => "EMPTY",
        slot_state::ACTIVE => "ACTIVE",
        slot_state::DETACHED => "DETACHED",
        slot_state::RECOVERING => "RECOVERING",
        _ => "INVALID",
    }
}

fn init_state_name(state: u32) -> String {
    match state {
        init::UNINIT => "UNINIT".into(),
        init::FORMATTING => "FORMATTING".into(),
        init::READY => "READY".into(),
        other => format!("INVALID({other})"),
    }
}

/// Reads the header fields.
pub fn header_report(view: &SegmentView) -> HeaderReport {
    let seg = view.segment();
    // Relaxed: every field is shown as it is; nothing else is read on the
    // strength of these values (the view was validated when opened).
    let magic = seg.magic.load(Relaxed);
    let text: String = magic
        .to_le_bytes()
        .iter()
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '.' })
        .collect();
    HeaderReport {
        magic: if magic == MAGIC {
            text
        } else {
            format!("{magic:#018x}")
        },
        version: seg.version.load(Relaxed),
        fingerprint: format!("{:#018x}", seg.fingerprint.load(Relaxed)),
        init_state: init_state_name(seg.init_state.load(Relaxed)),
        segment_size: seg.segment_size.load(Relaxed),
        arena_start: seg.arena_start.load(Relaxed),
        arena_end: seg.arena_end.load(Relaxed),
        top: seg.top.load(Relaxed),
        formatter_pid: seg.formatter_pid.load(Relaxed),
        root_registry: seg.root_registry.load(Relaxed),
        consolidator: seg.consolidator.load(Relaxed),
        consolidation_epoch: seg.consolidation_epoch.load(Relaxed),
        consolidations: seg.counters.consolidations.load(Relaxed),
        recoveries: seg.counters.recoveries.load(Relaxed),
        out_of_memory: seg.counters.out_of_memory.load(Relaxed),
        repairs: seg.counters.repairs.load(Relaxed),
    }
}

/// Collects everything `matrix stat` shows. Errors if the chain is damaged.
pub fn stat(view: &SegmentView) -> Result<StatReport, CliError> {
    let s = view.stats()?;
    let mut by_state: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    let mut by_owner: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    let mut histogram: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    for info in view.blocks() {
        let info = info?;
        let entry = by_state.entry(info.state).or_default();
        entry.0 += 1;
        entry.1 += info.size as u64;
        if info.state == FREE && !info.carving {
            let bucket = histogram.entry(31 - info.size.leading_zeros()).or_default();
            bucket.0 += 1;
            bucket.1 += info.size as u64;
        } else if info.owner != OwnerId::SEGMENT {
            let owner = by_owner.entry(info.owner.0).or_default();
            owner.0 += 1;
            owner.1 += info.size as u64;
        }
    }
    let participants: Vec<ParticipantReport> = view
        .segment()
        .participants()
        .enumerate()
        // Acquire: pairs with the Release CAS that set the slot word; state
        // and generation come from that one load.
        .map(|(index, slot)| (index, slot, slot.word.load(Acquire)))
        .filter(|&(_, _, word)| slot_word::state_of(word) != slot_state::EMPTY)
        .map(|(index, slot, word)| {
            let state = slot_word::state_of(word);
            let owner = OwnerId::of_slot(index);
            let (blocks, bytes) = by_owner.get(&owner.0).copied().unwrap_or_default();
            // Relaxed: display only.
            let pid = slot.pid.load(Relaxed);
            let (command, user, started_seconds_ago) =
                process_info(pid, slot.start_time.load(Relaxed));
            ParticipantReport {
                command,
                user,
                started_seconds_ago,
                slot: index,
                state: slot_state_name(state).into(),
                pid: slot.pid.load(Relaxed),
                owner_id: owner.0,
                alive: slot_liveness(view, index) == Liveness::Alive,
                liveness: slot_liveness(view, index).as_str().into(),
                blocks,
                bytes,
            }
        })
        .collect();
    let counts = participant_counts(view);
    let (alive, dead) = (counts.alive + counts.unknown, counts.dead);
    let objects = crate::objects::objects(view);
    Ok(StatReport {
        registry: objects.registry,
        registry_damaged: objects.registry_damaged,
        queues: objects.queues,
        name: view.name().to_owned(),
        header: header_report(view),
        space: SpaceReport {
            total_bytes: s.total_bytes,
            used_bytes: s.used_bytes,
            free_bytes: s.free_bytes,
            used_percent: percent(s.used_bytes, s.total_bytes),
            cached_bytes: s.cached_bytes,
            free_blocks: s.free_blocks,
            used_blocks: s.used_blocks,
            largest_free_payload: s.largest_free,
            wilderness_bytes: s.wilderness_bytes,
            fragmentation: (s.fragmentation * 10_000.0).round() / 10_000.0,
        },
        blocks_by_state: by_state
            .into_iter()
            .map(|(state, (blocks, bytes))| StateCount {
                state,
                name: state_name(state).into(),
                blocks,
                bytes,
            })
            .collect(),
        participants_alive: alive,
        participants_dead: dead,
        participants,
        free_histogram: histogram
            .into_iter()
            .map(|(log2, (blocks, bytes))| HistogramBucket {
                min_size: 1u64 << log2,
                max_size: (1u64 << (log2 + 1)) - 1,
                blocks,
                bytes,
            })
            .collect(),
    })
}

/// Renders `matrix stat` for a terminal, histogram included.
pub fn render_stat(r: &StatReport) -> String {
    let h = &r.header;
    let sp = &r.space;
    let mut out = String::new();
    let _ = writeln!(out, "segment       {} (/dev/shm/{})", r.name, r.name);
    let _ = writeln!(
        out,
        "format        magic {}, version {}, fingerprint {}, {}",
        h.magic, h.version, h.fingerprint, h.init_state
    );
    let _ = writeln!(
        out,
        "layout        size {} ({} B), arena {}..{}, top {}",
        format_size(h.segment_size),
        h.segment_size,
        h.arena_start,
        h.arena_end,
        h.top
    );
    let consolidator = if h.consolidator == 0 {
        "none".to_owned()
    } else {
        format!("owner {:#x}", h.consolidator)
    };
    let _ = writeln!(
        out,
        "header        formatter pid {}, root registry {}, consolidator {}, epoch {}",
        h.formatter_pid, h.root_registry, consolidator, h.consolidation_epoch
    );
    let _ = writeln!(
        out,
        "counters      consolidations {}, recoveries {}, out-of-memory {}, repairs {}",
        h.consolidations, h.recoveries, h.out_of_memory, h.repairs
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "used          {} of {} ({:.1} %) in {} blocks",
        format_size(sp.used_bytes),
        format_size(sp.total_bytes),
        sp.used_percent,
        sp.used_blocks
    );
    let _ = writeln!(
        out,
        "free          {} in {} blocks (wilderness {}, in thread caches {})",
        format_size(sp.free_bytes),
        sp.free_blocks,
        format_size(sp.wilderness_bytes),
        format_size(sp.cached_bytes)
    );
    let _ = writeln!(
        out,
        "largest free  {} payload ({} B)",
        format_size(sp.largest_free_payload as u64),
        sp.largest_free_payload
    );
    let _ = writeln!(out, "fragmentation {:.4}", sp.fragmentation);
    let _ = writeln!(out);
    let _ = writeln!(out, "blocks by state");
    if r.blocks_by_state.is_empty() {
        let _ = writeln!(
            out,
            "  no blocks yet: the whole arena ({}) is wilderness",
            format_size(sp.wilderness_bytes)
        );
    } else {
        let _ = writeln!(out, "  {:<14} {:>10} {:>12}", "STATE", "BLOCKS", "BYTES");
    }
    for c in &r.blocks_by_state {
        let label = if c.state >= matrix_core::state::USER_STATE_MIN
            || matrix_core::state::is_reserved(c.state)
        {
            format!("{} {}", c.name, c.state)
        } else {
            c.name.clone()
        };
        let _ = writeln!(
            out,
            "  {:<14} {:>10} {:>12}",
            label,
            c.blocks,
            format_size(c.bytes)
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "participants  {} alive, {} dead or detached",
        r.participants_alive, r.participants_dead
    );
    if !r.participants.is_empty() {
        let _ = writeln!(
            out,
            "  {:<5} {:<10} {:>8} {:<8} {:>8} {:>12}  {:<16} {:<10} {:>5}",
            "SLOT", "STATE", "PID", "LIVENESS", "BLOCKS", "BYTES", "COMMAND", "USER", "AGE"
        );
        for p in &r.participants {
            let dash = || "-".to_owned();
            let _ = writeln!(
                out,
                "  {:<5} {:<10} {:>8} {:<8} {:>8} {:>12}  {:<16} {:<10} {:>5}",
                p.slot,
                p.state,
                p.pid,
                p.liveness,
                p.blocks,
                format_size(p.bytes),
                p.command.clone().unwrap_or_else(dash),
                p.user.clone().unwrap_or_else(dash),
                p.started_seconds_ago.map_or_else(dash, format_age)
            );
        }
        if r.participants.iter().any(|p| p.command.is_none()) {
            let _ = writeln!(
                out,
                "  (COMMAND, USER, AGE: `-` when the pid is not visible from here or names another process now)"
            );
        }
    }
    let _ = writeln!(out);
    out.push_str(&crate::objects::render_objects(
        r.registry.as_ref(),
        r.registry_damaged.as_deref(),
        &r.queues,
    ));
    let _ = writeln!(out);
    out.push_str(&render_histogram(&r.free_histogram, sp.wilderness_bytes));
    out
}

/// Draws the free-block histogram with `#` bars scaled to the largest bucket.
pub fn render_histogram(buckets: &[HistogramBucket], wilderness: u64) -> String {
    const WIDTH: u64 = 40;
    let mut out = String::from("free-block sizes (header included; wilderness not shown)\n");
    if buckets.is_empty() {
        out.push_str("  no free blocks outside the wilderness\n");
    }
    let max = buckets.iter().map(|b| b.blocks).max().unwrap_or(1).max(1);
    for b in buckets {
        let len = (b.blocks * WIDTH).div_ceil(max) as usize;
        let range = format!(
            "{} - {}",
            format_size(b.min_size),
            format_size(b.max_size + 1)
        );
        let _ = writeln!(
            out,
            "  {:>22} | {:<40} {:>8} blocks, {}",
            range,
            "#".repeat(len),
            b.blocks,
            format_size(b.bytes)
        );
    }
    if wilderness > 0 {
        let _ = writeln!(
            out,
            "  wilderness: {} untouched at the end of the arena",
            format_size(wilderness)
        );
    }
    out
}
