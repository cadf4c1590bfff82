//! Looking at a segment without becoming a participant.
//!
//! `AtomicMatrix::open` claims a participant slot, and dropping it leaves the
//! slot `DETACHED` until a later `recover()`. A tool that only looks must not
//! leave such traces, nor count itself among the participants it reports, so
//! the inspecting commands use a [`SegmentView`] — `matrix_core::Observer`:
//!
//! ```text
//!  /dev/shm/NAME ──probe: type + first 8 bytes, O_RDONLY──► ours?
//!                ──open(O_RDONLY | O_NOFOLLOW)──► fd ──mmap(MAP_PRIVATE)──► SegmentView
//! ```
//!
//! Nothing a view does reaches the file: the mapping is copy-on-write and
//! never written; unwritten private pages show the live segment. It
//! implements `matrix_core::Arena` as the segment itself (owner 0), so the
//! engine's walks (`walk`, `stats`, `bucket_offsets`) run over it unchanged.
//!
//! [`open_writable`] maps the segment shared instead, for `fsck --repair`.
//!
//! Liveness comes from the participants' lock bytes (`F_OFD_GETLK` on the
//! view's own descriptor), never from `/proc`: it holds across PID
//! namespaces, and a holder that cannot be judged is reported "unknown".

use crate::error::CliError;
use crate::sync::Ordering::Acquire;
use matrix_core::layout::{slot_state, MAGIC};
use matrix_core::{Arena, Liveness, SegmentError};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A validated, participant-less view of a segment.
pub use matrix_core::Observer as SegmentView;

/// Directory holding named segments.
pub const SHM_DIR: &str = "/dev/shm";

/// Path of the segment `name`, after checking the name.
pub fn segment_path(name: &str) -> Result<PathBuf, CliError> {
    matrix_core::name::validate_name(name).map_err(CliError::Segment)?;
    Ok(Path::new(SHM_DIR).join(name))
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
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let mut magic = [0u8; 8];
    file.read_exact(&mut magic)?;
    let magic = u64::from_le_bytes(magic);
    Ok(if magic == MAGIC {
        Probe::Segment
    } else {
        Probe::Foreign(Some(magic))
    })
}

/// The init state and formatter pid of a segment file, read with `pread`
/// through a read-only descriptor (no mapping, no waiting).
pub fn peek_init(path: &Path) -> std::io::Result<(u32, u32)> {
    use matrix_core::layout::SegmentHeader;
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let word = |offset: usize| -> std::io::Result<u32> {
        let mut bytes = [0u8; 4];
        file.read_exact_at(&mut bytes, offset as u64)?;
        Ok(u32::from_le_bytes(bytes))
    };
    Ok((
        word(std::mem::offset_of!(SegmentHeader, init_state))?,
        word(std::mem::offset_of!(SegmentHeader, formatter_pid))?,
    ))
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

/// Probes `/dev/shm/<name>` and refuses anything but one of our segments,
/// with a message that names the file and what gave it away.
fn check_is_segment(name: &str) -> Result<(), CliError> {
    let path = segment_path(name)?;
    let not_ours = |why: String| CliError::NotASegment {
        name: name.to_owned(),
        why,
    };
    match probe(&path) {
        Ok(Probe::Segment) => Ok(()),
        Ok(Probe::Foreign(magic)) => Err(not_ours(foreign_reason(magic))),
        Ok(Probe::NotRegular) => Err(not_ours("it is not a regular file".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(CliError::Segment(SegmentError::NotFound {
                name: name.to_owned(),
            }))
        }
        Err(err) => Err(CliError::Io {
            op: "read segment file",
            err,
        }),
    }
}

/// Opens `/dev/shm/<name>` read-only and validates it like
/// `AtomicMatrix::open` does, without claiming a participant slot.
pub fn open(name: &str) -> Result<SegmentView, CliError> {
    check_is_segment(name)?;
    Ok(SegmentView::open(name)?)
}

/// Opens the segment shared and writable, still without a participant slot.
pub fn open_writable(name: &str) -> Result<SegmentView, CliError> {
    check_is_segment(name)?;
    Ok(SegmentView::open_writable(name)?)
}

/// Whether the formatter of the segment file at `path` is alive: it holds
/// the formatter lock while it formats (asked through a read-only
/// descriptor; works from any PID namespace).
pub fn formatter_liveness(path: &Path) -> Liveness {
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(file) => matrix_core::participant::formatter_liveness(&file),
        Err(_) => Liveness::Unknown,
    }
}

/// The liveness of the participant in slot `index`: attached (ACTIVE, or
/// RECOVERING by an attacher that took the slot for itself) and asked
/// through its lock; an EMPTY or DETACHED slot has no live holder.
pub fn slot_liveness<A: Arena>(arena: &A, index: usize) -> Liveness {
    // Acquire: pairs with the Release CAS that set the slot word.
    match arena.segment().participant(index).map(|s| s.state(Acquire)) {
        Some(slot_state::ACTIVE | slot_state::RECOVERING) => arena.liveness(index),
        _ => Liveness::Dead,
    }
}

/// Pids of the participants of the segment `arena` views that are alive,
/// and how many more are of unknown liveness (possibly alive).
pub fn live_participant_pids<A: Arena>(arena: &A) -> (Vec<u32>, usize) {
    let mut pids = Vec::new();
    let mut unknown = 0;
    for (index, slot) in arena.segment().participants().enumerate() {
        match slot_liveness(arena, index) {
            // Relaxed: the pid is for display only.
            Liveness::Alive => pids.push(slot.pid.load(crate::sync::Ordering::Relaxed)),
            Liveness::Unknown => unknown += 1,
            Liveness::Dead => {}
        }
    }
    (pids, unknown)
}
