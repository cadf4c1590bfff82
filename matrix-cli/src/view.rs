//! Looking at a segment without becoming a participant.
//!
//! `AtomicMatrix::open` claims a participant slot, and dropping it leaves the
//! slot `DETACHED` until a later `recover()`. A tool that only looks must not
//! leave such traces, nor count itself among the participants it reports, so
//! the inspecting commands use a [`SegmentView`] instead:
//!
//! ```text
//!  /dev/shm/NAME ──open(O_RDONLY | O_NOFOLLOW)──► fd ──mmap(MAP_PRIVATE)──► view
//!                                                        │
//!  nothing the tool does reaches the file: the mapping is copy-on-write and
//!  the tool never writes it; unwritten private pages show the live segment
//! ```
//!
//! A [`SegmentView`] implements [`Arena`] with [`OwnerId::SEGMENT`] as its
//! owner, so the engine's read-only walks (`walk`, `stats`,
//! `bucket_offsets`, the participant list) run over it unchanged.
//!
//! [`SegmentView::open_shared`] maps the segment for writing instead; the
//! `fsck --repair` path uses it for a participant-less `recover()` (the same
//! kind of view `AtomicMatrix` itself uses while attaching), which also clears
//! the slot the tool's own short-lived `AtomicMatrix` left behind.

use crate::error::CliError;
use matrix_core::layout::{
    init, layout_fingerprint, slot_state, ParticipantSlot, SegmentHeader, ARENA_START, BLOCK_ALIGN,
    FORMAT_VERSION, MAGIC, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE,
};
use matrix_core::participant::holder_alive;
use matrix_core::{Arena, BlockHeader, OwnerId, SegmentError};
use memmap2::{MmapMut, MmapOptions, MmapRaw};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Acquire;

/// Directory holding named segments.
pub const SHM_DIR: &str = "/dev/shm";

/// Path of the segment `name`, after checking the name.
pub fn segment_path(name: &str) -> Result<PathBuf, CliError> {
    matrix_core::name::validate_name(name).map_err(CliError::Segment)?;
    Ok(Path::new(SHM_DIR).join(name))
}

enum Map {
    /// Private copy-on-write mapping of a read-only descriptor.
    Private(MmapMut),
    /// Shared writable mapping.
    Shared(MmapRaw),
}

/// A validated mapping of a segment that is not a participant of it.
pub struct SegmentView {
    map: Map,
    base: *mut u8,
    len: usize,
    arena_end: u32,
    name: String,
}

/// What the first bytes of a file say about it, read without mapping it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Starts with our magic.
    Segment,
    /// A regular file that does not: its first 8 bytes (little-endian),
    /// or `None` if it is shorter.
    Foreign(Option<u64>),
    /// Not a regular file (directory, FIFO, socket, symlink…).
    NotRegular,
}

/// Checks the type and first 8 bytes of `path` without following a symlink,
/// without blocking on a FIFO, and without opening anything for writing.
pub fn probe(path: &Path) -> std::io::Result<Probe> {
    let meta = std::fs::symlink_metadata(path)?;
    let kind = meta.file_type();
    if !kind.is_file() || kind.is_fifo() || kind.is_socket() {
        return Ok(Probe::NotRegular);
    }
    if meta.len() < 8 {
        return Ok(Probe::Foreign(None));
    }
    let mut file = open_read_only(path)?;
    let mut magic = [0u8; 8];
    file.read_exact(&mut magic)?;
    let magic = u64::from_le_bytes(magic);
    Ok(if magic == MAGIC {
        Probe::Segment
    } else {
        Probe::Foreign(Some(magic))
    })
}

/// Why a file with these first bytes is not a segment, in words.
pub fn foreign_reason(magic: Option<u64>) -> String {
    match magic {
        None => "it is shorter than the 8-byte magic number".into(),
        Some(found) => {
            format!("it starts with {found:#018x}, not the matrix magic number {MAGIC:#018x}")
        }
    }
}

fn open_read_only(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
}

fn open_error(name: &str, op: &'static str, err: std::io::Error) -> CliError {
    match err.kind() {
        std::io::ErrorKind::NotFound => CliError::Segment(SegmentError::NotFound {
            name: name.to_owned(),
        }),
        _ => CliError::Segment(SegmentError::Io {
            op,
            kind: err.kind(),
            message: err.to_string(),
        }),
    }
}

impl SegmentView {
    /// Opens `/dev/shm/<name>` read-only and validates it like
    /// `AtomicMatrix::open` does, without claiming a participant slot.
    pub fn open(name: &str) -> Result<Self, CliError> {
        let path = segment_path(name)?;
        let file = Self::checked_file(name, &path)?;
        // A private mapping of a read-only descriptor: writable from this
        // process's point of view (so atomic loads are on writable memory),
        // never written, and nothing could reach the file anyway.
        // SAFETY: other processes change the file's contents while it is
        // mapped; this view reads the mapping only through atomics (the
        // segment and block headers) and never through the byte slice.
        let mut map = unsafe { MmapOptions::new().map_copy(&file) }
            .map_err(|e| open_error(name, "map segment", e))?;
        let (base, len) = (map.as_mut_ptr(), map.len());
        Self::validated(Map::Private(map), base, len, name)
    }

    /// Opens the segment for writing (shared mapping), still without a
    /// participant slot. Used only by repair paths.
    pub fn open_shared(name: &str) -> Result<Self, CliError> {
        let path = segment_path(name)?;
        Self::checked_file(name, &path)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| open_error(name, "open segment file for writing", e))?;
        let map = MmapOptions::new()
            .map_raw(&file)
            .map_err(|e| open_error(name, "map segment", e))?;
        let (base, len) = (map.as_mut_ptr(), map.len());
        Self::validated(Map::Shared(map), base, len, name)
    }

    /// Opens the file read-only after checking it is a regular file that
    /// starts with our magic and is large enough for a header.
    fn checked_file(name: &str, path: &Path) -> Result<File, CliError> {
        match probe(path).map_err(|e| open_error(name, "read segment file", e))? {
            Probe::Segment => {}
            Probe::NotRegular => {
                return Err(CliError::NotASegment {
                    name: name.to_owned(),
                    why: "it is not a regular file".into(),
                })
            }
            Probe::Foreign(magic) => {
                return Err(CliError::NotASegment {
                    name: name.to_owned(),
                    why: foreign_reason(magic),
                })
            }
        }
        let file = open_read_only(path).map_err(|e| open_error(name, "open segment file", e))?;
        let size = file
            .metadata()
            .map_err(|e| open_error(name, "stat segment file", e))?
            .len();
        if size < MIN_SEGMENT_SIZE {
            return Err(CliError::Segment(SegmentError::TooSmallForHeader {
                file_size: size,
                header_size: MIN_SEGMENT_SIZE,
            }));
        }
        if size > MAX_SEGMENT_SIZE {
            return Err(CliError::Segment(SegmentError::SizeTooLarge {
                requested: size,
                maximum: MAX_SEGMENT_SIZE,
            }));
        }
        Ok(file)
    }

    fn validated(map: Map, base: *mut u8, len: usize, name: &str) -> Result<Self, CliError> {
        let mut view = SegmentView {
            map,
            base,
            len,
            arena_end: ARENA_START,
            name: name.to_owned(),
        };
        let seg = view.segment();
        let fail = |e| Err(CliError::Segment(e));
        let magic = seg.magic.load(Acquire);
        if magic != MAGIC {
            return fail(SegmentError::WrongMagic {
                expected: MAGIC,
                found: magic,
            });
        }
        // Acquire: pairs with the formatter's Release of READY, so the fields
        // checked below are the ones it wrote.
        let state = seg.init_state.load(Acquire);
        if state != init::READY {
            let pid = seg.formatter_pid.load(Acquire);
            return if state == init::FORMATTING && !process_alive(pid) {
                fail(SegmentError::FormatterDied { pid })
            } else {
                fail(SegmentError::NotReady { init_state: state })
            };
        }
        let version = seg.version.load(Acquire);
        if version != FORMAT_VERSION {
            return fail(SegmentError::WrongVersion {
                expected: FORMAT_VERSION,
                found: version,
            });
        }
        let fingerprint = seg.fingerprint.load(Acquire);
        if fingerprint != layout_fingerprint() {
            return fail(SegmentError::WrongFingerprint {
                expected: layout_fingerprint(),
                found: fingerprint,
            });
        }
        let recorded = seg.segment_size.load(Acquire);
        if recorded != len as u64 {
            return fail(SegmentError::SizeMismatch {
                recorded,
                actual: len as u64,
            });
        }
        let start = seg.arena_start.load(Acquire);
        if start != ARENA_START {
            return fail(SegmentError::CorruptHeader {
                field: "arena_start",
                found: start as u64,
            });
        }
        let end = seg.arena_end.load(Acquire);
        if end as u64 != len as u64 & !(BLOCK_ALIGN as u64 - 1) {
            return fail(SegmentError::CorruptHeader {
                field: "arena_end",
                found: end as u64,
            });
        }
        let top = seg.top.load(Acquire);
        if top < start || top > end || top % BLOCK_ALIGN != 0 {
            return fail(SegmentError::CorruptHeader {
                field: "top",
                found: top as u64,
            });
        }
        view.arena_end = end;
        Ok(view)
    }

    /// The segment name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Size of the mapping (= the segment) in bytes.
    pub fn len(&self) -> usize {
        match &self.map {
            Map::Private(m) => m.len(),
            Map::Shared(m) => m.len(),
        }
    }

    /// Whether the mapping is empty (never, for a validated segment).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether this view can write the segment.
    pub fn is_shared(&self) -> bool {
        matches!(self.map, Map::Shared(_))
    }

    /// Whether the participant in `slot` counts as live: claimed (or being
    /// claimed) and its process still running.
    pub fn slot_live(&self, slot: &ParticipantSlot) -> bool {
        matches!(
            slot.state.load(Acquire),
            slot_state::ACTIVE | slot_state::CLAIMING
        ) && holder_alive(slot)
    }

    /// How many participants are live.
    pub fn live_participants(&self) -> usize {
        self.segment()
            .participants
            .iter()
            .filter(|s| self.slot_live(s))
            .count()
    }

    /// Walks every block of the chain (weakly consistent while others work).
    pub fn blocks(&self) -> matrix_core::walk::ChainWalk<'_, Self> {
        matrix_core::walk::walk(self)
    }

    /// Used / free bytes, free blocks, largest free block, fragmentation.
    pub fn stats(&self) -> Result<matrix_core::ArenaStats, matrix_core::BlockError> {
        matrix_core::walk::stats(self)
    }

    /// Pids of the live participants.
    pub fn live_participant_pids(&self) -> Vec<u32> {
        self.segment()
            .participants
            .iter()
            .filter(|s| self.slot_live(s))
            .map(|s| s.pid.load(Acquire))
            .collect()
    }
}

/// Whether `pid` names a running, non-zombie process.
pub fn process_alive(pid: u32) -> bool {
    pid != 0 && matrix_core::participant::process_start_time(pid).is_some_and(|(_, zombie)| !zombie)
}

impl Arena for SegmentView {
    fn segment(&self) -> &SegmentHeader {
        // SAFETY: the mapping is at least MIN_SEGMENT_SIZE bytes (checked
        // before mapping), page-aligned (so aligned for SegmentHeader), lives
        // as long as `self`, and SegmentHeader holds only atomics, for which
        // any bit pattern is valid.
        unsafe { &*(self.base as *const SegmentHeader) }
    }
    fn arena_start(&self) -> u32 {
        ARENA_START
    }
    fn arena_end(&self) -> u32 {
        self.arena_end.min(self.len as u32)
    }
    fn header(&self, offset: u32) -> Option<&BlockHeader> {
        if !self.in_bounds(offset) {
            return None;
        }
        // SAFETY: `in_bounds` keeps `offset + 32 <= arena_end <= len` and
        // `offset` 16-aligned; BlockHeader holds only atomics (any bit
        // pattern is valid) and the mapping lives as long as `self`.
        Some(unsafe { &*(self.base.add(offset as usize) as *const BlockHeader) })
    }
    fn owner(&self) -> OwnerId {
        OwnerId::SEGMENT
    }
    fn is_alive(&self, slot: &ParticipantSlot) -> bool {
        holder_alive(slot)
    }
}
