//! [`RegistryRecord`]: what a registry holds, read without a participant.
//!
//! Each entry is copied as a seqlock reader (as lookups do); the registry's
//! lock is never taken, so a reader never waits for (or disturbs) a change
//! in progress: an entry that stays odd through every try is reported as
//! such. Every count and offset is validated before it is used.

use super::super::fingerprint::{name_from_words, name_problem, MAX_NAME_LEN};
use super::super::hashmap::MAP_MAGIC;
use super::super::TypeFingerprint;
use super::{
    Entry, RegistryHeader, Snapshot, CREATING, EMPTY, ENTRY_BYTES, HEADER_BYTES,
    MAX_REGISTRY_CAPACITY, READY, REGISTRY_MAGIC,
};
use crate::inspect::{at, first_word, region, InspectError, SegmentMemory};
use crate::sync::Ordering::{Acquire, Relaxed};
use matrix_core::{state, OwnerId, BLOCK_HEADER_SIZE};

/// What kind of object a registry entry names, told by the magic number
/// its block starts with (the registry itself records only a fingerprint).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    /// A [`WorkQueue`](crate::WorkQueue).
    WorkQueue,
    /// A nested [`Registry`](super::Registry).
    Registry,
    /// A [`ShmHashMap`](crate::ShmHashMap).
    HashMap,
    /// Anything else (a user's object, a plain-old-data block, …).
    Other,
}

impl ObjectKind {
    /// `work queue`, `registry`, `hash map` or `object`.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::WorkQueue => "work queue",
            ObjectKind::Registry => "registry",
            ObjectKind::HashMap => "hash map",
            ObjectKind::Other => "object",
        }
    }

    fn of_magic(word: Option<u64>) -> Self {
        match word {
            Some(REGISTRY_MAGIC) => ObjectKind::Registry,
            Some(MAP_MAGIC) => ObjectKind::HashMap,
            Some(w) if crate::workers::is_queue_magic(w) => ObjectKind::WorkQueue,
            _ => ObjectKind::Other,
        }
    }
}

/// The block a registry entry names, as the allocator records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectBlock {
    /// What the block holds.
    pub kind: ObjectKind,
    /// Payload bytes of the block (at least the fingerprint's size).
    pub payload_bytes: u32,
    /// The block's state (`ALLOCATED`, or a user state).
    pub state: u32,
    /// The block's owner (the segment, for a published object).
    pub owner: OwnerId,
}

/// Where an entry is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryState {
    /// Its creator holds the registry's lock and is making the object.
    Creating,
    /// Visible to lookups.
    Ready,
}

/// One entry of a registry that is not empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryRecord {
    /// Index of the entry in the table.
    pub index: u32,
    /// The name.
    pub name: String,
    /// Creating or ready.
    pub state: EntryState,
    /// Owner id of the participant that created it.
    pub creator: OwnerId,
    /// Payload offset of the object (0 while a creation has not recorded it).
    pub offset: u32,
    /// The type fingerprint it was registered with.
    pub fingerprint: TypeFingerprint,
    /// The object's block: `None` while a creation has not recorded it
    /// yet; an error when the offset names no live block with room for the
    /// fingerprint's size.
    pub object: Option<Result<ObjectBlock, InspectError>>,
}

/// An entry whose bytes no registry writes, or that never held still.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryDamage {
    /// Index of the entry in the table.
    pub index: u32,
    /// What is wrong with it.
    pub what: String,
}

/// What a registry holds: its size, its lock, and every entry in use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryRecord {
    /// Payload offset of the registry block.
    pub offset: u32,
    /// Entries it has room for.
    pub capacity: u32,
    /// Owner id holding its lock (0: nobody is changing entries).
    pub lock_holder: OwnerId,
    /// Entries in use, in table order.
    pub entries: Vec<EntryRecord>,
    /// Entries that cannot be read as entries.
    pub damaged: Vec<EntryDamage>,
}

impl RegistryRecord {
    /// The segment's root registry; `None` if it was never created.
    pub fn root<M: SegmentMemory>(mem: &M) -> Result<Option<Self>, InspectError> {
        // Acquire: pairs with the AcqRel CAS that published the root, so
        // its initialized header is visible.
        let offset = mem.segment().root_registry.load(Acquire);
        if offset == 0 {
            return Ok(None);
        }
        Self::read(mem, offset).map(Some)
    }

    /// The registry whose payload starts at `offset`, validated: a live
    /// block with the registry's magic and room for its recorded capacity.
    pub fn read<M: SegmentMemory>(mem: &M, offset: u32) -> Result<Self, InspectError> {
        region(mem, offset, HEADER_BYTES)?;
        // SAFETY: the header's bytes were checked just above at a payload
        // offset (16-aligned); RegistryHeader is repr(C) atomics and integers.
        let hdr: &RegistryHeader = unsafe { at(mem, offset as u64) };
        // Acquire: pairs with the Release store of the magic that ends the
        // registry's initialization (capacity written before it).
        let magic = hdr.magic.load(Acquire);
        if magic != REGISTRY_MAGIC {
            return Err(InspectError::WrongMagic {
                offset,
                expected: "registry",
                found: magic,
            });
        }
        // Relaxed: ordered after the magic's Acquire; never changes after.
        let capacity = hdr.capacity.load(Relaxed);
        if capacity == 0 || capacity > MAX_REGISTRY_CAPACITY {
            return Err(InspectError::Impossible {
                offset,
                what: format!("capacity {capacity} is not 1 to {MAX_REGISTRY_CAPACITY}"),
            });
        }
        region(mem, offset, HEADER_BYTES + capacity as u64 * ENTRY_BYTES)?;
        let mut record = RegistryRecord {
            offset,
            capacity,
            // Relaxed: shown as it is; nothing is read on its strength.
            lock_holder: OwnerId(hdr.lock.load(Relaxed)),
            entries: Vec::new(),
            damaged: Vec::new(),
        };
        for index in 0..capacity {
            let at_entry = offset as u64 + HEADER_BYTES + index as u64 * ENTRY_BYTES;
            // SAFETY: entry `index < capacity` lies in the region checked
            // above; 8-aligned (a 16-aligned offset plus multiples of 8);
            // Entry is repr(C) atomics and integers.
            let e: &Entry = unsafe { at(mem, at_entry) };
            match entry(mem, index, e) {
                Ok(Some(found)) => record.entries.push(found),
                Ok(None) => {}
                Err(what) => record.damaged.push(EntryDamage { index, what }),
            }
        }
        Ok(record)
    }
}

/// Entry `index`: `None` if empty, the reason if it is not an entry.
fn entry<M: SegmentMemory>(mem: &M, index: u32, e: &Entry) -> Result<Option<EntryRecord>, String> {
    let Some(s) = Snapshot::read(e) else {
        return Err(
            "its version stayed odd through every read: a change in progress, or one a dead writer left half done"
                .into(),
        );
    };
    let state = match s.state {
        EMPTY => return Ok(None),
        CREATING => EntryState::Creating,
        READY => EntryState::Ready,
        other => return Err(format!("state {other} is none of empty, creating, ready")),
    };
    if s.name_len == 0 || s.name_len as usize > MAX_NAME_LEN {
        return Err(format!(
            "its name length {} is not 1 to {MAX_NAME_LEN}",
            s.name_len
        ));
    }
    let name = name_from_words(&s.name, s.name_len as usize);
    if let Some(reason) = name_problem(&name) {
        return Err(format!("its name {name:?} is not one: {reason}"));
    }
    let object =
        (s.offset != 0 || state == EntryState::Ready).then(|| object(mem, s.offset, s.fingerprint));
    Ok(Some(EntryRecord {
        index,
        name,
        state,
        creator: OwnerId(s.creator),
        offset: s.offset,
        fingerprint: s.fingerprint,
        object,
    }))
}

/// The live block at payload `offset`, with room for the fingerprint's size.
fn object<M: SegmentMemory>(
    mem: &M,
    offset: u32,
    fingerprint: TypeFingerprint,
) -> Result<ObjectBlock, InspectError> {
    let payload_bytes = region(mem, offset, fingerprint.size as u64)?;
    // `region` checked a genuine header there (so the subtraction holds).
    let word = mem
        .header(offset - BLOCK_HEADER_SIZE)
        // Acquire: pairs with the Release of the state word's last change.
        .map(|h| h.state.load(Acquire))
        .unwrap_or(0);
    Ok(ObjectBlock {
        kind: ObjectKind::of_magic(first_word(mem, offset)),
        payload_bytes,
        state: state::state_of(word),
        owner: OwnerId(state::owner_of(word)),
    })
}
