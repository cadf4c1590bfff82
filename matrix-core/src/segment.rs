//! Segment files: create, open, validate, unlink, and anonymous mappings.
//!
//! Create is exclusive (`O_CREAT | O_EXCL | O_NOFOLLOW`), gives the file
//! its group and exactly its mode (0600 unless configured; `fchmod`, so the
//! umask plays no part), reserves the file's pages up front so a full `/dev/shm`
//! is an error at create time rather than a SIGBUS later, and formats the
//! header: `init_state` goes UNINIT → FORMATTING (with the formatter's pid)
//! → READY, choosing the segment's random nonce (its identity, which
//! handles carry) on the way. Open validates, in order: the file is large
//! enough for a header, magic, init state (waiting briefly for a live formatter), version, layout
//! fingerprint, recorded size = file size, and the arena bounds. Open never
//! truncates or resizes.
//!
//! A formatter holds an OFD lock on the byte [`FORMAT_LOCK`] while the
//! segment is FORMATTING; an opener that finds FORMATTING and no lock knows
//! the formatter died, whatever PID namespace either of them runs in. Every
//! mapping keeps its own descriptor of the file, through which participants
//! hold their liveness locks and anyone asks about them (see
//! `participant.rs`).

use crate::arena::{Arena, OwnerId};
use crate::error::SegmentError;
use crate::layout::{
    arena_start_for, init, layout_fingerprint, min_segment_size_for, slot_state, BlockHeader,
    SegmentHeader, SlotEntry, BLOCK_ALIGN, DEFAULT_PARTICIPANTS, FORMAT_LOCK, FORMAT_VERSION,
    MAGIC, MAX_PARTICIPANTS, MAX_SEGMENT_SIZE, TABLE_OFFSET,
};
use crate::name::validate_name;
use crate::participant::{self, Liveness};
use crate::sync::Ordering::{Acquire, Relaxed, Release};
use memmap2::{MmapMut, MmapOptions, MmapRaw};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Directory holding named segments.
pub const SHM_DIR: &str = "/dev/shm";

/// Path of the segment called `name` (after validating the name).
pub fn segment_path(name: &str) -> Result<PathBuf, SegmentError> {
    validate_name(name)?;
    Ok(PathBuf::from(SHM_DIR).join(name))
}

/// How to create a segment.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// File mode of a named segment (default 0600), set exactly with
    /// `fchmod` after creation, whatever the umask; bits outside `0o7777`
    /// are refused ([`SegmentError::InvalidMode`]).
    pub mode: u32,
    /// Group of a named segment (default: the creator's), set with
    /// `fchown` before the mode; the creator must belong to it (or be root).
    pub group: Option<u32>,
    /// Participant slots: how many attachments can hold the segment at once
    /// (default [`DEFAULT_PARTICIPANTS`], at most [`MAX_PARTICIPANTS`]).
    /// Each slot takes 128 bytes of the segment header.
    pub participants: usize,
}

impl Default for CreateOptions {
    fn default() -> Self {
        Self {
            mode: 0o600,
            group: None,
            participants: DEFAULT_PARTICIPANTS,
        }
    }
}

/// Gives the new segment file its group and its exact mode: `open`'s mode
/// is reduced by the umask, and `fchown` may clear setgid, so the group
/// goes first and the mode last.
fn set_owner_and_mode(file: &File, options: &CreateOptions) -> Result<(), SegmentError> {
    use std::os::fd::AsRawFd;
    if let Some(group) = options.group {
        // SAFETY: plain syscall on a descriptor we own; uid -1 keeps the owner.
        let rc = unsafe { libc::fchown(file.as_raw_fd(), u32::MAX, group) };
        if rc != 0 {
            return Err(SegmentError::io(
                "set the segment file's group",
                std::io::Error::last_os_error(),
            ));
        }
    }
    // SAFETY: plain syscall on a descriptor we own.
    let rc = unsafe { libc::fchmod(file.as_raw_fd(), options.mode as libc::mode_t) };
    if rc != 0 {
        return Err(SegmentError::io(
            "set the segment file's mode",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

enum Map {
    /// Shared, writable: what participants and repair tools use.
    Shared(MmapRaw),
    /// Private copy-on-write mapping of a read-only descriptor: observers
    /// that only look. Pages never written show the live segment.
    Private(MmapMut),
}

/// A mapping of a whole, validated segment. It is itself an [`Arena`] acting
/// as the segment (owner 0), which is how participant-less code (observers,
/// recovery while attaching) walks and recovers.
pub(crate) struct Mapping {
    _map: Map,
    base: *mut u8,
    len: usize,
    arena_end: u32,
    /// Length of the participant table, process-local: set from the create
    /// option, or from the header once `validate` accepted it (0 before).
    slots: usize,
    /// First block: where the table ends (rounded to 16).
    arena_start: u32,
    pub(crate) name: Option<String>,
    /// The segment file, through its own open file description (`None` for
    /// an anonymous arena): liveness locks are held and queried through it.
    pub(crate) file: Option<File>,
}

// SAFETY: the mapping is shared memory accessed only through atomics; `base`
// is fixed for the mapping's life and nothing here is thread-local.
unsafe impl Send for Mapping {}
// SAFETY: as for Send; `&self` methods only load/store atomics.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(map: Map, name: Option<String>, file: Option<File>) -> Self {
        let (base, len) = match &map {
            Map::Shared(m) => (m.as_mut_ptr(), m.len()),
            Map::Private(m) => (m.as_ptr() as *mut u8, m.len()),
        };
        let arena_end = (len as u32) & !(BLOCK_ALIGN - 1);
        Mapping {
            _map: map,
            base,
            len,
            arena_end,
            slots: 0,
            arena_start: TABLE_OFFSET as u32,
            name,
            file,
        }
    }

    /// Gives the mapping its participant table of `slots` entries, which the
    /// caller has checked fits: `arena_start_for(slots) <= len`.
    fn with_table(mut self, slots: usize) -> Self {
        let start = arena_start_for(slots).expect("a checked table size");
        debug_assert!(start as usize <= self.len);
        self.slots = slots;
        self.arena_start = start;
        self
    }

    /// The raw descriptor of the segment file, if there is one.
    pub(crate) fn fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.file.as_ref().map(|f| f.as_raw_fd())
    }

    /// Liveness of slot `index` as this mapping's descriptor sees it: its
    /// lock held by another open file description = alive, not held =
    /// dead, the query failing = unknown. An anonymous arena has one
    /// process, which is alive while it holds the slot.
    pub(crate) fn slot_liveness(&self, index: usize) -> Liveness {
        match self.fd() {
            Some(fd) => participant::query_lock(fd, participant::slot_lock(index)),
            None => {
                let Some(slot) = self.segment_header().participant(index) else {
                    return Liveness::Unknown;
                };
                // Acquire: pairs with the Release CAS that set the word.
                match slot.state(Acquire) {
                    slot_state::ACTIVE | slot_state::RECOVERING => Liveness::Alive,
                    _ => Liveness::Dead,
                }
            }
        }
    }

    /// The segment header at offset 0, with the participant table this
    /// mapping was given (none before it was validated).
    pub(crate) fn segment_header(&self) -> &SegmentHeader {
        let table = std::ptr::slice_from_raw_parts(self.base as *const SlotEntry, self.slots);
        // SAFETY: every mapping is longer than the fixed header (checked at
        // create/open) and `slots` entries end at `arena_start <= len`
        // (`with_table`'s precondition); the base is page-aligned, enough
        // for the table's entries; the header holds only atomics, for which
        // any bit pattern is valid; it lives as long as `self`. The cast
        // keeps the slice length as the table's length.
        unsafe { &*(table as *const SegmentHeader) }
    }

    /// This process's base address of the mapping.
    pub(crate) fn base(&self) -> *mut u8 {
        self.base
    }

    /// Mapping length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The segment file's size now (the mapping length for an anonymous arena).
    fn file_len(&self) -> std::io::Result<u64> {
        match &self.file {
            Some(f) => f.metadata().map(|m| m.len()),
            None => Ok(self.len as u64),
        }
    }
}

impl Arena for Mapping {
    #[inline]
    fn segment(&self) -> &SegmentHeader {
        self.segment_header()
    }
    #[inline]
    fn arena_start(&self) -> u32 {
        self.arena_start
    }
    #[inline]
    fn arena_end(&self) -> u32 {
        self.arena_end
    }
    #[inline]
    fn header(&self, offset: u32) -> Option<&BlockHeader> {
        if !self.in_bounds(offset) {
            return None;
        }
        // SAFETY: `in_bounds` keeps `offset + 32 <= arena_end <= len` and
        // `offset` 16-aligned; BlockHeader holds only atomics, for which any
        // bit pattern is valid; the mapping outlives `&self`.
        Some(unsafe { &*(self.base.add(offset as usize) as *const BlockHeader) })
    }
    fn owner(&self) -> OwnerId {
        OwnerId::SEGMENT
    }
    fn liveness(&self, index: usize) -> Liveness {
        self.slot_liveness(index)
    }
}

/// Checks a segment size for a table of `participants` slots.
pub(crate) fn check_size(size: u64, participants: usize) -> Result<(), SegmentError> {
    let minimum =
        min_segment_size_for(participants).ok_or(SegmentError::InvalidParticipantCount {
            requested: participants,
            maximum: MAX_PARTICIPANTS,
        })?;
    if size < minimum {
        return Err(SegmentError::SizeTooSmall {
            requested: size,
            minimum,
        });
    }
    if size > MAX_SEGMENT_SIZE {
        return Err(SegmentError::SizeTooLarge {
            requested: size,
            maximum: MAX_SEGMENT_SIZE,
        });
    }
    Ok(())
}

/// Creates and formats a new named segment.
pub(crate) fn create(
    name: &str,
    size: u64,
    options: &CreateOptions,
) -> Result<Mapping, SegmentError> {
    let path = segment_path(name)?;
    check_size(size, options.participants)?;
    if options.mode & !0o7777 != 0 {
        return Err(SegmentError::InvalidMode { mode: options.mode });
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        // Owner-only until the exact mode is set below.
        .mode(options.mode & 0o700)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => SegmentError::AlreadyExists {
                name: name.to_owned(),
            },
            _ => SegmentError::io("create segment file", e),
        })?;
    let cleanup = |err: SegmentError| {
        let _ = std::fs::remove_file(&path);
        err
    };
    set_owner_and_mode(&file, options).map_err(cleanup)?;
    file.set_len(size)
        .map_err(|e| cleanup(SegmentError::io("size segment file", e)))?;
    reserve(&file, size).map_err(cleanup)?;
    let map = map_file(&file).map_err(cleanup)?;
    let mapping = Mapping::new(Map::Shared(map), Some(name.to_owned()), Some(file))
        .with_table(options.participants);
    format_locked(&mapping, size, init::UNINIT).map_err(cleanup)?;
    Ok(mapping)
}

/// Formats a named segment while holding its formatter lock, so openers can
/// tell a live formatter from a dead one without `/proc`. `expect` is the
/// init state the segment must still be in once the lock is held (another
/// re-formatter may have finished meanwhile).
fn format_locked(mapping: &Mapping, size: u64, expect: u32) -> Result<(), SegmentError> {
    let fd = mapping.fd().expect("named segments keep their file");
    match participant::try_lock(fd, FORMAT_LOCK) {
        Ok(true) => {}
        Ok(false) => {
            return Err(SegmentError::NotReady {
                init_state: init::FORMATTING,
            })
        }
        Err(e) => return Err(SegmentError::io("lock segment for formatting", e)),
    }
    // Acquire: pairs with the Release of READY by a formatter that held the
    // lock before us.
    let found = mapping.segment_header().init_state.load(Acquire);
    if found != expect {
        participant::unlock(fd, FORMAT_LOCK);
        return Err(SegmentError::NotReady { init_state: found });
    }
    format(mapping.segment_header(), size, mapping.arena_start);
    participant::unlock(fd, FORMAT_LOCK);
    Ok(())
}

fn reserve(file: &File, size: u64) -> Result<(), SegmentError> {
    use std::os::fd::AsRawFd;
    // SAFETY: plain syscall on a file descriptor we own.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, size as libc::off_t) };
    match rc {
        0 | libc::EOPNOTSUPP | libc::EINVAL => Ok(()),
        err => Err(SegmentError::io(
            "reserve segment pages",
            std::io::Error::from_raw_os_error(err),
        )),
    }
}

fn map_file(file: &File) -> Result<MmapRaw, SegmentError> {
    MmapOptions::new()
        .map_raw(file)
        .map_err(|e| SegmentError::io("map segment", e))
}

/// Maps an anonymous (process-private) arena.
pub(crate) fn anonymous(size: u64) -> Result<Mapping, SegmentError> {
    check_size(size, DEFAULT_PARTICIPANTS)?;
    let map = MmapOptions::new()
        .len(size as usize)
        .map_anon()
        .map_err(|e| SegmentError::io("map anonymous arena", e))?;
    let mapping =
        Mapping::new(Map::Shared(MmapRaw::from(map)), None, None).with_table(DEFAULT_PARTICIPANTS);
    format(mapping.segment_header(), size, mapping.arena_start);
    Ok(mapping)
}

/// Writes a fresh header into zeroed (or abandoned) memory; `seg`'s table
/// is the one to format, and ends at `arena_start`.
pub(crate) fn format(seg: &SegmentHeader, size: u64, arena_start: u32) {
    // Relaxed stores throughout: the segment is not READY yet, and the
    // Release store of READY at the end publishes all of them to openers,
    // which Acquire the init state before reading any field.
    seg.init_state.store(init::FORMATTING, Relaxed);
    // First, so a re-formatter after a crash here keeps the table size.
    seg.participant_count
        .store(seg.participant_count() as u32, Relaxed);
    seg.formatter_pid.store(std::process::id(), Relaxed);
    seg.magic.store(MAGIC, Relaxed);
    seg.version.store(FORMAT_VERSION, Relaxed);
    seg.fingerprint.store(layout_fingerprint(), Relaxed);
    seg.nonce.store(fresh_nonce(), Relaxed);
    seg.segment_size.store(size, Relaxed);
    seg.arena_start.store(arena_start, Relaxed);
    seg.arena_end
        .store((size as u32) & !(BLOCK_ALIGN - 1), Relaxed);
    seg.top.store(arena_start, Relaxed);
    seg.root_registry.store(0, Relaxed);
    seg.consolidator.store(0, Relaxed);
    for row in &seg.index.heads {
        for head in row {
            head.store(0, Relaxed);
        }
    }
    for bits in &seg.index.sl_bitmap {
        bits.store(0, Relaxed);
    }
    seg.index.fl_bitmap.store(0, Relaxed);
    for slot in seg.participants() {
        slot.word.store(0, Relaxed);
        slot.pid.store(0, Relaxed);
        for e in &slot.carve_intents {
            e.store(0, Relaxed);
        }
    }
    // Release: openers that Acquire READY see the whole header.
    seg.init_state.store(init::READY, Release);
}

/// A random segment nonce, never 0: from `getrandom(2)`, else
/// `/dev/urandom`; only if both fail (no kernel support and no device),
/// from the clock, the pid and the address of the stack, which still differ
/// between segments formatted at different times or by different processes.
fn fresh_nonce() -> u64 {
    loop {
        let nonce = random_u64().unwrap_or_else(weak_entropy);
        if nonce != 0 {
            return nonce;
        }
    }
}

fn random_u64() -> Option<u64> {
    let mut bytes = [0u8; 8];
    // SAFETY: one syscall writing at most `bytes.len()` bytes into `bytes`,
    // which lives across the call.
    let got = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if got == bytes.len() as isize {
        return Some(u64::from_ne_bytes(bytes));
    }
    use std::io::Read;
    let mut file = File::open("/dev/urandom").ok()?;
    file.read_exact(&mut bytes).ok()?;
    Some(u64::from_ne_bytes(bytes))
}

fn weak_entropy() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let local = 0u8;
    let mixed = now ^ ((std::process::id() as u64) << 32) ^ (&local as *const u8 as u64);
    // splitmix64 finalizer: spreads the few changing bits over the word.
    let mut z = mixed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// How long `open` waits for a live formatter.
const FORMAT_WAIT: Duration = Duration::from_secs(2);

/// Opens `/dev/shm/<name>` without following a symlink, checks that it is a
/// regular file whose size could hold a segment, and returns it with its size.
fn open_file(name: &str, writable: bool) -> Result<(File, u64), SegmentError> {
    let path = segment_path(name)?;
    let file = OpenOptions::new()
        .read(true)
        .write(writable)
        // O_NONBLOCK: a FIFO planted under the name must not block us.
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(&path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => SegmentError::NotFound {
                name: name.to_owned(),
            },
            _ => SegmentError::io("open segment file", e),
        })?;
    let meta = file
        .metadata()
        .map_err(|e| SegmentError::io("stat segment file", e))?;
    if !meta.is_file() {
        return Err(SegmentError::NotAFile {
            name: name.to_owned(),
        });
    }
    let file_size = meta.len();
    // The smallest table's segment: enough to read the fixed header; the
    // real table is checked against the file by `validate`.
    let smallest = min_segment_size_for(1).expect("one slot is a valid table");
    if file_size < smallest {
        return Err(SegmentError::TooSmallForHeader {
            file_size,
            header_size: smallest,
        });
    }
    if file_size > MAX_SEGMENT_SIZE {
        return Err(SegmentError::SizeTooLarge {
            requested: file_size,
            maximum: MAX_SEGMENT_SIZE,
        });
    }
    Ok((file, file_size))
}

/// Opens and validates an existing named segment for a participant.
pub(crate) fn open(name: &str) -> Result<Mapping, SegmentError> {
    let (file, file_size) = open_file(name, true)?;
    let map = Map::Shared(map_file(&file)?);
    let mapping = Mapping::new(map, Some(name.to_owned()), Some(file));
    check_mapped_size(&mapping, file_size)?;
    wait_ready(&mapping)?;
    let slots = validate(mapping.segment_header(), file_size)?;
    Ok(mapping.with_table(slots))
}

/// Opens and validates a segment for an observer: `writable` maps it shared
/// (for repairs), otherwise it is a private view of a read-only descriptor,
/// so nothing the observer does can reach the file.
pub(crate) fn open_observer(name: &str, writable: bool) -> Result<Mapping, SegmentError> {
    let (file, file_size) = open_file(name, writable)?;
    let map = if writable {
        Map::Shared(map_file(&file)?)
    } else {
        // SAFETY: other processes change the file while it is mapped; the
        // observer reads it only through atomics (segment and block headers).
        let map = unsafe { MmapOptions::new().map_copy(&file) };
        Map::Private(map.map_err(|e| SegmentError::io("map segment", e))?)
    };
    let mapping = Mapping::new(map, Some(name.to_owned()), Some(file));
    check_mapped_size(&mapping, file_size)?;
    wait_ready(&mapping)?;
    let slots = validate(mapping.segment_header(), file_size)?;
    Ok(mapping.with_table(slots))
}

/// Refuses a mapping whose length is not the size the file had when it was
/// checked, or whose file is shorter now: a file truncated between the
/// `stat` and the `mmap` would fault (SIGBUS) on the first read past its
/// end. Truncation by another process *after* this check is fatal, as for
/// any shared mapping; only the owner (or root) can do it.
fn check_mapped_size(mapping: &Mapping, file_size: u64) -> Result<(), SegmentError> {
    let now = mapping
        .file_len()
        .map_err(|e| SegmentError::io("stat segment", e))?;
    let mapped = mapping.len() as u64;
    if mapped != file_size || now < mapped {
        return Err(SegmentError::SizeMismatch {
            recorded: mapped,
            actual: now.min(file_size),
        });
    }
    Ok(())
}

fn wait_ready(mapping: &Mapping) -> Result<(), SegmentError> {
    let seg = mapping.segment_header();
    let deadline = Instant::now() + FORMAT_WAIT;
    loop {
        // Acquire: pairs with the formatter's Release of READY (below).
        let magic = seg.magic.load(Acquire);
        if magic != MAGIC && magic != 0 {
            return Err(SegmentError::WrongMagic {
                expected: MAGIC,
                found: magic,
            });
        }
        // Acquire: pairs with the formatter's Release of READY.
        let state = seg.init_state.load(Acquire);
        match state {
            init::READY if magic == MAGIC => return Ok(()),
            init::READY => {
                return Err(SegmentError::WrongMagic {
                    expected: MAGIC,
                    found: magic,
                })
            }
            init::FORMATTING => {
                // Relaxed: the pid is for the message only.
                let pid = seg.formatter_pid.load(Relaxed);
                // The formatter holds FORMAT_LOCK from before FORMATTING is
                // stored until after READY is: no lock (and still not
                // READY, re-checked) means it died. Unknown means wait.
                let formatter = mapping.fd().map_or(Liveness::Unknown, |fd| {
                    participant::query_lock(fd, FORMAT_LOCK)
                });
                // Acquire: as above; READY may have been stored just before
                // the lock was released.
                if formatter == Liveness::Dead && seg.init_state.load(Acquire) == init::FORMATTING {
                    return Err(SegmentError::FormatterDied { pid });
                }
            }
            init::UNINIT => {}
            other if magic == MAGIC => {
                return Err(SegmentError::CorruptHeader {
                    field: "init_state",
                    found: other as u64,
                })
            }
            _ => {
                return Err(SegmentError::WrongMagic {
                    expected: MAGIC,
                    found: magic,
                })
            }
        }
        if Instant::now() >= deadline {
            return Err(SegmentError::NotReady { init_state: state });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Checks every header field against this build and the file; returns the
/// length of the participant table, which then fits before the arena.
pub(crate) fn validate(seg: &SegmentHeader, file_size: u64) -> Result<usize, SegmentError> {
    // Acquire loads throughout: they pair with the formatter's Release of
    // READY (already observed by `wait_ready`), and cost nothing on x86.
    let magic = seg.magic.load(Acquire);
    if magic != MAGIC {
        return Err(SegmentError::WrongMagic {
            expected: MAGIC,
            found: magic,
        });
    }
    let version = seg.version.load(Acquire);
    if version != FORMAT_VERSION {
        return Err(SegmentError::WrongVersion {
            expected: FORMAT_VERSION,
            found: version,
        });
    }
    let fingerprint = seg.fingerprint.load(Acquire);
    if fingerprint != layout_fingerprint() {
        return Err(SegmentError::WrongFingerprint {
            expected: layout_fingerprint(),
            found: fingerprint,
        });
    }
    let recorded = seg.segment_size.load(Acquire);
    if recorded != file_size {
        return Err(SegmentError::SizeMismatch {
            recorded,
            actual: file_size,
        });
    }
    let slots = seg.participant_count.load(Acquire);
    let Some(table_end) = arena_start_for(slots as usize) else {
        return Err(SegmentError::CorruptHeader {
            field: "participant_count",
            found: slots as u64,
        });
    };
    let start = seg.arena_start.load(Acquire);
    if start != table_end || start as u64 > file_size {
        return Err(SegmentError::CorruptHeader {
            field: "arena_start",
            found: start as u64,
        });
    }
    let end = seg.arena_end.load(Acquire);
    if end as u64 != file_size & !(BLOCK_ALIGN as u64 - 1) {
        return Err(SegmentError::CorruptHeader {
            field: "arena_end",
            found: end as u64,
        });
    }
    let top = seg.top.load(Acquire);
    if top < start || top > end || top % BLOCK_ALIGN != 0 {
        return Err(SegmentError::CorruptHeader {
            field: "top",
            found: top as u64,
        });
    }
    Ok(slots as usize)
}

/// Re-formats a segment whose creator died while formatting it. Refuses a
/// segment that is ready or whose formatter is alive.
pub(crate) fn reformat_abandoned(name: &str) -> Result<Mapping, SegmentError> {
    let (file, size) = open_file(name, true)?;
    let map = Map::Shared(map_file(&file)?);
    let mapping = Mapping::new(map, Some(name.to_owned()), Some(file));
    match wait_ready(&mapping) {
        Err(SegmentError::FormatterDied { .. }) => {
            // The table size the dead formatter wrote (its first field after
            // FORMATTING), if it fits; else the default, else one slot.
            // Relaxed: the dead formatter published nothing; any value is
            // checked here before it sizes anything.
            let written = mapping.segment_header().participant_count.load(Relaxed) as usize;
            let slots = [written, DEFAULT_PARTICIPANTS, 1]
                .into_iter()
                .find(|&n| min_segment_size_for(n).is_some_and(|min| min <= size))
                .ok_or(SegmentError::TooSmallForHeader {
                    file_size: size,
                    header_size: min_segment_size_for(1).unwrap_or(u64::MAX),
                })?;
            let mapping = mapping.with_table(slots);
            // Two re-formatters cannot interleave: the formatter lock admits
            // one, and the other gets NotReady.
            format_locked(&mapping, size, init::FORMATTING)?;
            Ok(mapping)
        }
        Err(e) => Err(e),
        Ok(()) => Err(SegmentError::CorruptHeader {
            field: "init_state (segment is ready, not abandoned)",
            found: init::READY as u64,
        }),
    }
}

/// Removes the named segment. Mappings that are open stay valid until dropped.
pub fn unlink(name: &str) -> Result<(), SegmentError> {
    let path = segment_path(name)?;
    std::fs::remove_file(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => SegmentError::NotFound {
            name: name.to_owned(),
        },
        _ => SegmentError::io("remove segment file", e),
    })
}

/// A unique segment name, removed from `/dev/shm` when dropped — also when a
/// test panics — by the process that made it (a child given the name with
/// [`ScratchName::borrowed`], or a forked copy, removes nothing). For tests
/// and scratch segments: `ScratchName::new("orders")` gives
/// `matrix-scratch-<pid>-<n>-orders`.
#[derive(Debug)]
pub struct ScratchName {
    name: String,
    owner_pid: u32,
}

impl ScratchName {
    /// A fresh name carrying `label` (characters outside the name alphabet
    /// become `_`).
    pub fn new(label: &str) -> Self {
        // Process-local counter, not shared memory.
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        // Relaxed: only uniqueness within this process is needed.
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let label: String = label
            .chars()
            .take(64)
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let pid = std::process::id();
        ScratchName {
            name: format!("{}{n}-{label}", Self::prefix_of(pid)),
            owner_pid: pid,
        }
    }

    /// Removes every scratch segment that process `pid` made and left
    /// behind (a process killed by a signal never runs its guards'
    /// destructors). Returns how many files were removed.
    pub fn remove_leftovers_of(pid: u32) -> usize {
        let prefix = Self::prefix_of(pid);
        let Ok(dir) = std::fs::read_dir(SHM_DIR) else {
            return 0;
        };
        dir.flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .filter(|e| std::fs::remove_file(e.path()).is_ok())
            .count()
    }

    fn prefix_of(pid: u32) -> String {
        format!("matrix-scratch-{pid}-")
    }

    /// Adopts a name made elsewhere (e.g. by a parent process); dropping it
    /// removes nothing.
    pub fn borrowed(name: &str) -> Self {
        ScratchName {
            name: name.to_owned(),
            owner_pid: 0,
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The name (same as [`as_str`](Self::as_str)).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its path in `/dev/shm`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(SHM_DIR).join(&self.name)
    }
}

impl std::ops::Deref for ScratchName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.name
    }
}

impl Drop for ScratchName {
    fn drop(&mut self) {
        if self.owner_pid == std::process::id() {
            let _ = std::fs::remove_file(self.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A segment file cut short by another process while it is being opened
    /// is refused as a size mismatch; reading the mapping past the file's
    /// end would have raised SIGBUS.
    #[test]
    fn a_file_truncated_while_it_is_opened_is_a_size_mismatch_not_a_sigbus() {
        let name = ScratchName::new("truncated");
        crate::AtomicMatrix::create(name.as_str(), 1 << 20).unwrap();
        let mismatch =
            |r: Result<(), SegmentError>| matches!(r, Err(SegmentError::SizeMismatch { .. }));

        // Cut between the stat and the mmap: the mapping is shorter.
        let (file, size) = open_file(name.as_str(), true).unwrap();
        file.set_len(size / 2).unwrap();
        let mapping = Mapping::new(Map::Shared(map_file(&file).unwrap()), None, Some(file));
        assert!(mismatch(check_mapped_size(&mapping, size)));
        drop(mapping);

        // Cut after the mmap: the mapping runs past the file's end.
        let (file, _) = open_file(name.as_str(), true).unwrap();
        file.set_len(size).unwrap();
        let map = Map::Shared(map_file(&file).unwrap());
        file.set_len(size / 2).unwrap();
        let mapping = Mapping::new(map, None, Some(file));
        assert!(mismatch(check_mapped_size(&mapping, size)));
        drop(mapping);

        // A file that stays short is refused by open; restored, it opens.
        assert!(matches!(
            crate::AtomicMatrix::open(name.as_str()),
            Err(SegmentError::SizeMismatch { .. })
        ));
        let (file, _) = open_file(name.as_str(), true).unwrap();
        file.set_len(size).unwrap();
        crate::AtomicMatrix::open(name.as_str()).unwrap();
    }
}
