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
//! [`open_writable`] maps the segment shared instead, for the participant-less
//! `recover()` of `fsck --repair`, which also clears the slot the tool's own
//! short-lived `AtomicMatrix` left behind.

use crate::error::CliError;
use crate::sync::Ordering::Acquire;
use matrix_core::layout::{slot_state, ParticipantSlot, MAGIC};
use matrix_core::participant::holder_alive;
use matrix_core::{Arena, SegmentError};
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

/// Whether `pid` names a running, non-zombie process.
pub fn process_alive(pid: u32) -> bool {
    pid != 0 && matrix_core::participant::process_start_time(pid).is_some_and(|(_, zombie)| !zombie)
}

/// Whether the participant in `slot` counts as live: claimed (or being
/// claimed) and its process still running.
pub fn slot_live(slot: &ParticipantSlot) -> bool {
    // Acquire: pairs with claim's Release of ACTIVE, so `holder_alive`
    // checks the pid and start time published with it.
    matches!(
        slot.state.load(Acquire),
        slot_state::ACTIVE | slot_state::CLAIMING
    ) && holder_alive(slot)
}

/// Pids of the live participants of the segment `arena` views.
pub fn live_participant_pids<A: Arena>(arena: &A) -> Vec<u32> {
    arena
        .segment()
        .participants
        .iter()
        .filter(|s| slot_live(s))
        // Relaxed: `slot_live` Acquired the state the pid was published with.
        .map(|s| s.pid.load(crate::sync::Ordering::Relaxed))
        .collect()
}
