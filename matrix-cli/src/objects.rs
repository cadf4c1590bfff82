//! The named objects of a segment, for `matrix stat`: the root registry's
//! entries, and the depth, capacity and sleepers of every queue found
//! through it.
//!
//! Read through `matrix_internals::inspect` on the participant-less view:
//! every offset and count the segment holds is validated there, so damaged
//! bytes come back as a `damaged: …` line (the registry as a whole, one
//! entry, or one queue), never as a failed `stat`.

use crate::size::format_size;
use matrix_core::state::state_name;
use matrix_core::OwnerId;
use matrix_internals::inspect::{
    EntryRecord, EntryState, ObjectKind, QueueStats, RegistryRecord, SegmentMemory,
};
use serde::Serialize;
use std::fmt::Write as _;

/// The root registry, as `stat` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RegistryReport {
    /// Payload offset of the registry block.
    pub offset: u32,
    /// Names it has room for.
    pub capacity: u32,
    /// Owner id holding its lock (0: nobody is changing it).
    pub lock_holder: u32,
    /// Entries in use.
    pub entries: Vec<EntryReport>,
    /// Entries that cannot be read as entries.
    pub damaged: Vec<DamagedEntry>,
}

/// A type fingerprint: what the registry records of an object's type.
#[derive(Debug, Clone, Serialize)]
pub struct TypeReport {
    /// `size_of` the type (for a structure with a variable tail, its header).
    pub size: u32,
    /// `align_of` the type.
    pub align: u32,
    /// Its stable id, hex.
    pub id: String,
}

/// One registry entry.
#[derive(Debug, Clone, Serialize)]
pub struct EntryReport {
    /// Index in the registry's table.
    pub index: u32,
    /// The name.
    pub name: String,
    /// `ready`, or `creating` (its creator is making the object).
    pub state: &'static str,
    /// `work queue`, `registry`, `hash map` or `object` (from the block's magic).
    pub kind: &'static str,
    /// What the registry records of the type.
    #[serde(rename = "type")]
    pub type_: TypeReport,
    /// Owner id of the participant that created it.
    pub creator: u32,
    /// Payload offset of the object.
    pub offset: u32,
    /// Payload bytes of the object's block.
    pub block_bytes: Option<u32>,
    /// The block's state (`ALLOCATED`, `USER 70`, …).
    pub block_state: Option<String>,
    /// Why the object cannot be read, when it cannot.
    pub damaged: Option<String>,
}

/// A registry entry whose bytes are not an entry.
#[derive(Debug, Clone, Serialize)]
pub struct DamagedEntry {
    /// Index in the registry's table.
    pub index: u32,
    /// What is wrong with it.
    pub damaged: String,
}

/// One queue found through the registry.
#[derive(Debug, Clone, Serialize)]
pub struct QueueReport {
    /// Its registry name.
    pub name: String,
    /// Payload offset of the queue block.
    pub offset: u32,
    /// Slots (0 when the queue cannot be read).
    pub capacity: u32,
    /// Messages queued.
    pub depth: u64,
    /// Consumers asleep waiting for a message.
    pub consumers_waiting: u32,
    /// Producers asleep waiting for a free slot.
    pub producers_waiting: u32,
    /// Whether it was closed.
    pub closed: bool,
    /// Slots claimed by a push or pop in flight (or by a dead participant).
    pub claimed_slots: u32,
    /// Owner ids holding those claims (at most 16).
    pub claimants: Vec<u32>,
    /// Why the queue cannot be read, when it cannot.
    pub damaged: Option<String>,
}

/// The registry section of `stat`: the registry (if any) or why it cannot
/// be read, and the queues it names.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    /// The root registry; `None` when there is none or it is damaged.
    pub registry: Option<RegistryReport>,
    /// Why the root registry cannot be read.
    pub registry_damaged: Option<String>,
    /// Queues named in it.
    pub queues: Vec<QueueReport>,
}

fn state_label(state: u32) -> String {
    if state >= matrix_core::state::USER_STATE_MIN || matrix_core::state::is_reserved(state) {
        format!("{} {state}", state_name(state))
    } else {
        state_name(state).to_owned()
    }
}

fn entry_report(e: &EntryRecord) -> EntryReport {
    let (kind, block_bytes, block_state, damaged) = match &e.object {
        None => ("object", None, None, None),
        Some(Ok(b)) => (
            b.kind.as_str(),
            Some(b.payload_bytes),
            Some(state_label(b.state)),
            None,
        ),
        Some(Err(err)) => ("object", None, None, Some(err.to_string())),
    };
    EntryReport {
        index: e.index,
        name: e.name.clone(),
        state: match e.state {
            EntryState::Ready => "ready",
            EntryState::Creating => "creating",
        },
        kind,
        type_: TypeReport {
            size: e.fingerprint.size,
            align: e.fingerprint.align,
            id: format!("{:#018x}", e.fingerprint.type_id),
        },
        creator: e.creator.0,
        offset: e.offset,
        block_bytes,
        block_state,
        damaged,
    }
}

fn queue_report(name: &str, offset: u32, read: Result<QueueStats, String>) -> QueueReport {
    let mut q = QueueReport {
        name: name.to_owned(),
        offset,
        capacity: 0,
        depth: 0,
        consumers_waiting: 0,
        producers_waiting: 0,
        closed: false,
        claimed_slots: 0,
        claimants: Vec::new(),
        damaged: None,
    };
    match read {
        Ok(s) => {
            q.capacity = s.capacity;
            q.depth = s.depth;
            q.consumers_waiting = s.consumers_waiting;
            q.producers_waiting = s.producers_waiting;
            q.closed = s.closed;
            q.claimed_slots = s.claimed_slots;
            q.claimants = s.claimants.iter().map(|o: &OwnerId| o.0).collect();
        }
        Err(e) => q.damaged = Some(e),
    }
    q
}

/// Reads the root registry of `mem` and every queue it names.
pub fn objects<M: SegmentMemory>(mem: &M) -> Objects {
    let record = match RegistryRecord::root(mem) {
        Ok(Some(r)) => r,
        Ok(None) => return Objects::default(),
        Err(e) => {
            return Objects {
                registry_damaged: Some(e.to_string()),
                ..Objects::default()
            }
        }
    };
    let queues = record
        .entries
        .iter()
        .filter(|e| matches!(&e.object, Some(Ok(b)) if b.kind == ObjectKind::WorkQueue))
        .map(|e| {
            let read = QueueStats::read(mem, e.offset).map_err(|err| err.to_string());
            queue_report(&e.name, e.offset, read)
        })
        .collect();
    Objects {
        registry: Some(RegistryReport {
            offset: record.offset,
            capacity: record.capacity,
            lock_holder: record.lock_holder.0,
            entries: record.entries.iter().map(entry_report).collect(),
            damaged: record
                .damaged
                .iter()
                .map(|d| DamagedEntry {
                    index: d.index,
                    damaged: d.what.clone(),
                })
                .collect(),
        }),
        registry_damaged: None,
        queues,
    }
}

/// Renders the registry and queue sections of `stat`.
pub fn render_objects(
    registry: Option<&RegistryReport>,
    damaged: Option<&str>,
    queues: &[QueueReport],
) -> String {
    let mut out = String::new();
    let Some(r) = registry else {
        match damaged {
            Some(why) => {
                let _ = writeln!(out, "registry      damaged: {why}");
            }
            None => {
                let _ = writeln!(
                    out,
                    "registry      none (nothing was ever registered by name)"
                );
            }
        }
        return out;
    };
    let lock = if r.lock_holder == 0 {
        String::new()
    } else {
        format!(", locked by owner {:#x}", r.lock_holder)
    };
    let _ = writeln!(
        out,
        "registry      {} of {} names in use (payload offset {}){lock}",
        r.entries.len(),
        r.capacity,
        r.offset
    );
    let width = r
        .entries
        .iter()
        .map(|e| e.name.len())
        .chain(queues.iter().map(|q| q.name.len()))
        .max()
        .unwrap_or(4)
        .max(4);
    if !r.entries.is_empty() {
        let _ = writeln!(
            out,
            "  {:<width$}  {:<10}  {:<8}  {:<34}  {:>10}  BLOCK STATE",
            "NAME", "KIND", "STATE", "TYPE (size, align, id)", "BLOCK"
        );
    }
    for e in &r.entries {
        let ty = format!(
            "{} B, align {}, {}",
            e.type_.size, e.type_.align, e.type_.id
        );
        let (block, state) = match (&e.block_bytes, &e.damaged) {
            (Some(bytes), _) => (
                format_size(*bytes as u64),
                e.block_state.clone().unwrap_or_default(),
            ),
            (None, Some(why)) => ("-".to_owned(), format!("damaged: {why}")),
            (None, None) => ("-".to_owned(), "(not made yet)".to_owned()),
        };
        let _ = writeln!(
            out,
            "  {:<width$}  {:<10}  {:<8}  {:<34}  {:>10}  {state}",
            e.name, e.kind, e.state, ty, block
        );
    }
    for d in &r.damaged {
        let _ = writeln!(out, "  entry {:<5} damaged: {}", d.index, d.damaged);
    }
    if queues.is_empty() {
        return out;
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "queues");
    let _ = writeln!(
        out,
        "  {:<width$}  {:>8}  {:>8}  {:>17}  {:>17}  {:>7}  CLOSED",
        "NAME", "DEPTH", "CAPACITY", "CONSUMERS WAITING", "PRODUCERS WAITING", "CLAIMED"
    );
    for q in queues {
        if let Some(why) = &q.damaged {
            let _ = writeln!(out, "  {:<width$}  damaged: {why}", q.name);
            continue;
        }
        let _ = writeln!(
            out,
            "  {:<width$}  {:>8}  {:>8}  {:>17}  {:>17}  {:>7}  {}",
            q.name,
            q.depth,
            q.capacity,
            q.consumers_waiting,
            q.producers_waiting,
            q.claimed_slots,
            if q.closed { "yes" } else { "no" }
        );
    }
    out
}
