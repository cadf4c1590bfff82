//! Typed errors, one enum per kind of operation. Each says what was asked,
//! what was found and, where there is one, what to do about it.

use std::fmt;

/// Why a segment could not be created, opened, validated or removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentError {
    /// The name is not `[A-Za-z0-9._-]{1,200}` (or is `.` / `..`).
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The requested size cannot hold the header and one block.
    SizeTooSmall {
        /// Bytes asked for.
        requested: u64,
        /// Smallest usable size.
        minimum: u64,
    },
    /// The requested size does not fit 32-bit offsets.
    SizeTooLarge {
        /// Bytes asked for.
        requested: u64,
        /// Largest usable size (4 GiB − 1).
        maximum: u64,
    },
    /// `create` found a segment of that name already.
    AlreadyExists {
        /// The segment name.
        name: String,
    },
    /// `open` or `unlink` found no segment of that name.
    NotFound {
        /// The segment name.
        name: String,
    },
    /// The name exists in `/dev/shm` but is not a regular file.
    NotAFile {
        /// The segment name.
        name: String,
    },
    /// The file is smaller than a segment header: not one of ours.
    TooSmallForHeader {
        /// The file's size.
        file_size: u64,
        /// Size of a segment header.
        header_size: u64,
    },
    /// The file does not start with our magic number.
    WrongMagic {
        /// Magic expected.
        expected: u64,
        /// Magic found.
        found: u64,
    },
    /// The segment was written by an incompatible format version.
    WrongVersion {
        /// Version this build reads.
        expected: u32,
        /// Version found.
        found: u32,
    },
    /// The segment was laid out by a build with different struct layouts.
    WrongFingerprint {
        /// This build's layout fingerprint.
        expected: u64,
        /// Fingerprint found.
        found: u64,
    },
    /// The file size differs from the size recorded in the header.
    SizeMismatch {
        /// Size recorded in the header.
        recorded: u64,
        /// Size of the file.
        actual: u64,
    },
    /// A header field holds an impossible value.
    CorruptHeader {
        /// The field.
        field: &'static str,
        /// The value found.
        found: u64,
    },
    /// The creator died while formatting; `reformat_abandoned` may re-format it.
    FormatterDied {
        /// The dead formatter's pid.
        pid: u32,
    },
    /// The segment did not become ready in time (its creator is still formatting).
    NotReady {
        /// The init state seen last.
        init_state: u32,
    },
    /// The participant table size asked for (a create option) is 0 or above
    /// [`crate::layout::MAX_PARTICIPANTS`].
    InvalidParticipantCount {
        /// Slots asked for.
        requested: usize,
        /// Most slots a segment can have.
        maximum: usize,
    },
    /// No participant slot is free, and none could be taken over.
    TooManyParticipants {
        /// Slot count.
        max: usize,
        /// Slots held by live processes.
        alive: usize,
        /// Slots whose holder's liveness cannot be told (possibly alive).
        unknown: usize,
        /// Slots of dead or detached holders whose blocks could not be
        /// reclaimed (a damaged chain or free index).
        unrecoverable: Vec<usize>,
    },
    /// A file mode with bits outside `0o7777`.
    InvalidMode {
        /// The mode given.
        mode: u32,
    },
    /// Live participants prevent an operation that needs the segment alone.
    InUse {
        /// How many other live participants there are.
        live_participants: usize,
    },
    /// Participants whose liveness cannot be told (their lock could not be
    /// queried) prevent an operation that needs them definitely dead.
    LivenessUnknown {
        /// How many participants could not be judged.
        participants: usize,
    },
    /// The handle was inherited across `fork()` and belongs to the parent.
    InheritedHandle {
        /// The process that attached it.
        parent_pid: u32,
    },
    /// This process holds as many attachments of named segments as it can
    /// track for `fork()`.
    TooManyAttachments {
        /// Attachments one process can hold at once.
        max: usize,
    },
    /// The operation needs a participant (a slot and its liveness lock) to
    /// act in its name, and the view it was called on has none.
    NotAParticipant {
        /// What was asked.
        operation: &'static str,
    },
    /// The operating system refused an operation.
    Io {
        /// What we were doing.
        op: &'static str,
        /// The error kind.
        kind: std::io::ErrorKind,
        /// The OS message.
        message: String,
    },
}

impl SegmentError {
    // Only the file-backed segment code (absent under loom) builds these.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn io(op: &'static str, err: std::io::Error) -> Self {
        SegmentError::Io {
            op,
            kind: err.kind(),
            message: err.to_string(),
        }
    }
}

impl fmt::Display for SegmentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use SegmentError::*;
        match self {
            InvalidName { name, reason } => write!(
                f,
                "invalid segment name {name:?}: {reason} (use 1 to 200 of A-Z a-z 0-9 . _ -)"
            ),
            SizeTooSmall { requested, minimum } => write!(
                f,
                "segment size {requested} B is too small: at least {minimum} B is needed"
            ),
            SizeTooLarge { requested, maximum } => write!(
                f,
                "segment size {requested} B is too large: offsets are 32-bit, at most {maximum} B"
            ),
            AlreadyExists { name } => write!(
                f,
                "segment {name:?} already exists: open it, or remove it first (matrix rm)"
            ),
            NotFound { name } => write!(f, "no segment named {name:?} in /dev/shm"),
            NotAFile { name } => write!(f, "{name:?} in /dev/shm is not a regular file"),
            TooSmallForHeader { file_size, header_size } => write!(
                f,
                "not a matrix segment: the file has {file_size} B, a segment header needs {header_size} B"
            ),
            WrongMagic { expected, found } => write!(
                f,
                "not a matrix segment: magic {found:#018x}, expected {expected:#018x}"
            ),
            WrongVersion { expected, found } => write!(
                f,
                "segment format version {found}, this build reads version {expected}"
            ),
            WrongFingerprint { expected, found } => write!(
                f,
                "segment layout fingerprint {found:#018x} differs from this build's {expected:#018x}: \
                 it was created by an incompatible build"
            ),
            SizeMismatch { recorded, actual } => write!(
                f,
                "segment header records {recorded} B but the file has {actual} B: truncated or resized"
            ),
            CorruptHeader { field, found } => {
                write!(f, "segment header field `{field}` holds an impossible value {found}")
            }
            FormatterDied { pid } => write!(
                f,
                "the creator (pid {pid}) died while formatting the segment; re-format it \
                 (reformat_abandoned) or remove it"
            ),
            NotReady { init_state } => write!(
                f,
                "segment not ready (init state {init_state}): its creator is still formatting it"
            ),
            InvalidParticipantCount { requested, maximum } => write!(
                f,
                "a participant table of {requested} slots is not possible (1 to {maximum})"
            ),
            TooManyParticipants {
                max,
                alive,
                unknown,
                unrecoverable,
            } => {
                write!(
                    f,
                    "no free participant slot: of {max}, {alive} are held by live processes"
                )?;
                if *unknown > 0 {
                    write!(f, ", {unknown} by processes whose liveness cannot be told")?;
                }
                if !unrecoverable.is_empty() {
                    let list: Vec<String> = unrecoverable.iter().map(usize::to_string).collect();
                    write!(
                        f,
                        ", and {} dead holder(s) (slot {}) could not be recovered; \
                         `matrix fsck NAME --repair` with the segment to itself frees them, \
                         or remove the segment",
                        unrecoverable.len(),
                        list.join(", ")
                    )?;
                } else {
                    write!(f, "; stop a participant, or wait for one to exit")?;
                }
                Ok(())
            }
            InvalidMode { mode } => write!(
                f,
                "file mode {mode:o} has bits outside 7777 (octal): give permission bits, \
                 with setuid / setgid / sticky at most"
            ),
            InUse { live_participants } => write!(
                f,
                "{live_participants} other live participant(s) hold the segment; stop them first"
            ),
            LivenessUnknown { participants } => write!(
                f,
                "the liveness of {participants} participant(s) cannot be told (their lock could \
                 not be queried), so they count as possibly alive; retry, or stop them first"
            ),
            InheritedHandle { parent_pid } => write!(
                f,
                "this handle was attached by process {parent_pid} and inherited across fork(); \
                 it acts for that process only: open the segment again in this process"
            ),
            TooManyAttachments { max } => write!(
                f,
                "this process already holds {max} attachments of named segments; drop some first"
            ),
            NotAParticipant { operation } => write!(
                f,
                "{operation} needs a participant slot to act in its name, and this view has none: \
                 call it on an AtomicMatrix, or on an Observer opened with open_writable"
            ),
            Io { op, message, .. } => write!(f, "{op}: {message}"),
        }
    }
}

impl std::error::Error for SegmentError {}

/// Why an allocation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllocError {
    /// No free block fits, even after consolidation.
    OutOfMemory {
        /// Payload bytes asked for.
        requested: u64,
        /// Largest payload a free block (or the wilderness) could give.
        largest_free: u32,
    },
    /// The request exceeds the whole arena.
    TooLarge {
        /// Payload bytes asked for.
        requested: u64,
        /// Largest payload this arena could ever give.
        max_payload: u64,
    },
    /// The type's alignment exceeds the 16 bytes every payload has.
    Unaligned {
        /// Alignment asked for.
        align: usize,
    },
    /// The free index or a header is damaged.
    Corrupted {
        /// Offset of the bad block.
        offset: u32,
        /// What is wrong.
        what: &'static str,
    },
    /// The handle may not do this (e.g. it was inherited across `fork()`).
    Refused(SegmentError),
    /// Every intent entry of this participant stayed held by its other
    /// threads for the whole wait (about a second; only briefly for a
    /// resize, which holds one itself): they are stopped or stuck (a
    /// debugger, a signal stop). Nothing changed; the allocation may be
    /// tried again.
    IntentsBusy {
        /// Intent entries of one participant.
        entries: u32,
    },
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllocError::OutOfMemory { requested, largest_free } => write!(
                f,
                "out of memory: {requested} B requested, the largest free block holds {largest_free} B"
            ),
            AllocError::TooLarge { requested, max_payload } => write!(
                f,
                "{requested} B requested, but this arena can hold at most {max_payload} B in one block"
            ),
            AllocError::Unaligned { align } => {
                write!(f, "alignment {align} requested; payloads are 16-byte aligned")
            }
            AllocError::Corrupted { offset, what } => {
                write!(f, "segment corrupted at offset {offset}: {what}; run `matrix fsck`")
            }
            AllocError::Refused(e) => write!(f, "refused: {e}"),
            AllocError::IntentsBusy { entries } => write!(
                f,
                "all {entries} intent entries of this participant stayed held by its other threads \
                 (are they stopped?); nothing was allocated, try again"
            ),
        }
    }
}

impl std::error::Error for AllocError {}

/// Why an operation on an existing block (free, lookup, state change) was refused.
/// A refused operation changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockError {
    /// The offset lies outside the arena.
    OutOfBounds {
        /// The offset given.
        offset: u32,
        /// First valid header offset.
        arena_start: u32,
        /// End of the carved arena.
        arena_end: u32,
    },
    /// The offset is not 16-byte aligned.
    Misaligned {
        /// The offset given.
        offset: u32,
    },
    /// No block header at that offset (e.g. an offset inside a payload).
    NotABlock {
        /// The offset given.
        offset: u32,
    },
    /// The block is already free (or being freed).
    DoubleFree {
        /// Header offset.
        offset: u32,
    },
    /// The handle's generation is not the block's: it was freed and its
    /// memory re-allocated since the handle was made.
    Stale {
        /// Header offset.
        offset: u32,
        /// Generation the handle carries.
        expected: u64,
        /// Generation found.
        found: u64,
    },
    /// The block is not live (free, or held by a consolidator).
    NotLive {
        /// Header offset.
        offset: u32,
        /// State found.
        state: u32,
    },
    /// The block is in a reserved state (4–48) and is not ours to touch.
    ReservedState {
        /// Header offset.
        offset: u32,
        /// State found.
        state: u32,
    },
    /// The block's payload is smaller than the type asked for.
    TooSmall {
        /// Header offset.
        offset: u32,
        /// Payload bytes available.
        payload: u32,
        /// Bytes needed.
        needed: u64,
    },
    /// The block was allocated for another type.
    TypeMismatch {
        /// Header offset.
        offset: u32,
        /// Fingerprint of the requested type.
        expected: u32,
        /// Fingerprint recorded in the block.
        found: u32,
    },
    /// The block header holds impossible values.
    Corrupted {
        /// Header offset.
        offset: u32,
        /// What is wrong.
        what: &'static str,
    },
    /// A recovery could not finish now: the consolidator word stayed held
    /// by a live participant. Nothing was lost; run `recover()` again.
    Busy {
        /// What it waited for.
        what: &'static str,
    },
    /// The handle or view may not do this (inherited across `fork()`, or
    /// not a participant).
    Refused(SegmentError),
}

impl fmt::Display for BlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use BlockError::*;
        match self {
            OutOfBounds {
                offset,
                arena_start,
                arena_end,
            } => write!(
                f,
                "offset {offset} is outside the arena [{arena_start}, {arena_end})"
            ),
            Misaligned { offset } => write!(f, "offset {offset} is not 16-byte aligned"),
            NotABlock { offset } => write!(f, "no block header at offset {offset}"),
            DoubleFree { offset } => write!(f, "block at {offset} is already free (double free)"),
            Stale {
                offset,
                expected,
                found,
            } => write!(
                f,
                "stale handle: block at {offset} has generation {found}, the handle {expected} \
                 (it was freed and re-allocated)"
            ),
            NotLive { offset, state } => write!(
                f,
                "block at {offset} is not allocated (state {})",
                crate::state::state_name(*state)
            ),
            ReservedState { offset, state } => {
                write!(f, "block at {offset} is in reserved state {state}")
            }
            TooSmall {
                offset,
                payload,
                needed,
            } => write!(
                f,
                "block at {offset} holds {payload} B, {needed} B are needed"
            ),
            TypeMismatch {
                offset,
                expected,
                found,
            } => write!(
                f,
                "block at {offset} holds type {found:#010x}, not the requested {expected:#010x}"
            ),
            Corrupted { offset, what } => {
                write!(f, "block header at {offset} is corrupted: {what}")
            }
            Busy { what } => write!(
                f,
                "recovery postponed: {what}; nothing was lost, run recover() again"
            ),
            Refused(e) => write!(f, "refused: {e}"),
        }
    }
}

impl std::error::Error for BlockError {}
