//! The shared structures and their pinned layout.
//!
//! ```text
//!  offset 0                                                      segment_size
//!  +----------------+---------+---------+-----+-----------------+-----------+
//!  | SegmentHeader  | block 0 | block 1 | ... | block n         | wilderness|
//!  | magic, version,| hdr|pay | hdr|pay |     | hdr|payload     | (untouched|
//!  | index, slots   |         |         |     |                 |  memory)  |
//!  +----------------+---------+---------+-----+-----------------+-----------+
//!                   ^ arena_start                               ^ top
//! ```
//!
//! Everything here is `#[repr(C)]`, holds only atomics and offsets, and has
//! its size and alignment pinned below. The layout fingerprint stored in each
//! segment hashes these facts, so a build with a different layout refuses to
//! open a segment instead of misreading it.

use crate::size_class::{FL_COUNT, SL_COUNT};
use crate::sync::{AtomicU32, AtomicU64};
use crossbeam_utils::CachePadded;

/// `ATMATRX` + format byte, read as a little-endian `u64`.
pub const MAGIC: u64 = u64::from_le_bytes(*b"ATMATRX1");
/// Version of the segment format; bumped on any incompatible change
/// (3: the participant table's size is chosen at create time).
pub const FORMAT_VERSION: u32 = 3;
/// Bytes of the in-band header in front of every payload.
pub const BLOCK_HEADER_SIZE: u32 = 32;
/// Alignment of every block and every payload.
pub const BLOCK_ALIGN: u32 = 16;
/// Smallest payload a block carries.
pub const MIN_PAYLOAD: u32 = 16;
/// Smallest block: header plus minimum payload.
pub const MIN_BLOCK: u32 = BLOCK_HEADER_SIZE + MIN_PAYLOAD;
/// Offset value that means "no block" (offset 0 is the segment header).
pub const NIL: u32 = 0;
/// Largest segment: offsets are `u32`.
pub const MAX_SEGMENT_SIZE: u64 = u32::MAX as u64;

/// Participant slots of a segment created with default options.
#[cfg(not(loom))]
pub const DEFAULT_PARTICIPANTS: usize = 64;
/// Participant slots of a segment created with default options.
#[cfg(loom)]
pub const DEFAULT_PARTICIPANTS: usize = 4;
/// Most participant slots a segment can have: every slot needs an owner id
/// in the block state word's owner field, below [`crate::state::OWNER_MAX`]
/// (which means "departed"), and a recoverer value in the slot word.
pub const MAX_PARTICIPANTS: usize = crate::state::OWNER_MAX as usize - 1;

/// File offset of the liveness lock byte of participant slot 0; slot `i`
/// locks byte `LIVENESS_LOCK_BASE + i`. Beyond any segment size, so no
/// other lock (or read of the file) ever touches them.
pub const LIVENESS_LOCK_BASE: u64 = 1 << 40;
/// File offset of the lock byte a formatter holds while it formats: just
/// below the slots' lock bytes, so no table size reaches it.
pub const FORMAT_LOCK: u64 = LIVENESS_LOCK_BASE - 1;

/// Segment life: `UNINIT` → `FORMATTING` → `READY`.
pub mod init {
    /// Fresh zero-filled file.
    pub const UNINIT: u32 = 0;
    /// A creator is writing the header.
    pub const FORMATTING: u32 = 1;
    /// Formatted and usable.
    pub const READY: u32 = 2;
}

/// The in-band header in front of every payload (32 bytes).
///
/// Fields are atomics because any process may read any header at any time
/// (walkers, poppers reading `next_free`, recovery).
#[repr(C)]
pub struct BlockHeader {
    /// Generation, owner and state in one word; see [`crate::state`].
    pub state: AtomicU64,
    /// Whole block size, header included; a multiple of 16, at least [`MIN_BLOCK`].
    pub size: AtomicU32,
    /// Next block in the same free-index bucket ([`NIL`] ends the list).
    pub next_free: AtomicU32,
    /// Zero; reserved for a future format (the owner lives in `state`).
    pub reserved: AtomicU32,
    /// Type fingerprint of the payload (0 = untyped bytes).
    pub type_tag: AtomicU32,
    /// `HEADER_CHECK ^ offset` while this is a real block header; cleared when
    /// the header is absorbed by a merge.
    pub check: AtomicU32,
    /// Payload bytes the allocation asked for.
    pub requested: AtomicU32,
}

/// Mixed with a header's own offset into its `check` word.
pub const HEADER_CHECK: u32 = 0xB10C_4EAD;

/// The `check` value a genuine header at `offset` carries.
#[inline]
pub const fn header_check(offset: u32) -> u32 {
    HEADER_CHECK ^ offset
}

impl BlockHeader {
    /// A zeroed header, for model arenas built in ordinary memory.
    pub fn new() -> Self {
        Self {
            state: AtomicU64::new(0),
            size: AtomicU32::new(0),
            next_free: AtomicU32::new(0),
            reserved: AtomicU32::new(0),
            type_tag: AtomicU32::new(0),
            check: AtomicU32::new(0),
            requested: AtomicU32::new(0),
        }
    }
}

impl Default for BlockHeader {
    fn default() -> Self {
        Self::new()
    }
}

/// The free index: TLSF bitmaps and one tagged Treiber stack per bucket.
///
/// Invariant at quiescence: bit `sl` of `sl_bitmap[fl]` is set iff
/// `heads[fl][sl]` is non-empty, and bit `fl` of `fl_bitmap` is set iff
/// `sl_bitmap[fl] != 0`. Under concurrency the bits are hints: a set bit may
/// name an empty bucket (cleared lazily by the next search that finds it
/// empty); a clear bit never hides a non-empty bucket once every push and
/// every clear has finished (both re-check; see `free_index.rs`).
#[repr(C)]
pub struct FreeIndex {
    /// Bit `fl` set when first level `fl` may have a non-empty bucket.
    pub fl_bitmap: CachePadded<AtomicU32>,
    /// Per first level: bit `sl` set when bucket `[fl][sl]` may be non-empty.
    pub sl_bitmap: [AtomicU32; FL_COUNT],
    /// Per bucket: `tag << 32 | offset of the first free block`.
    pub heads: [[AtomicU64; SL_COUNT]; FL_COUNT],
}

impl FreeIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self {
            fl_bitmap: CachePadded::new(AtomicU32::new(0)),
            sl_bitmap: std::array::from_fn(|_| AtomicU32::new(0)),
            heads: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }
}

impl Default for FreeIndex {
    fn default() -> Self {
        Self::new()
    }
}

/// One participant (an attached handle of one process).
///
/// Everything a decision about the slot depends on (its state, the
/// generation of the current claim, who is recovering it) lives in the one
/// word [`ParticipantSlot::word`], so every transition is a single CAS from
/// the exact value that was judged; see [`slot_word`] and
/// `participant.rs` for the protocol. `pid` and `start_time` are for display
/// only: liveness comes from the slot's file lock, never from them.
#[repr(C)]
pub struct ParticipantSlot {
    /// The slot word: state, recoverer and generation (see [`slot_word`]).
    pub word: AtomicU64,
    /// Process id of the holder, as its own PID namespace numbers it (display only).
    pub pid: AtomicU32,
    _reserved: AtomicU32,
    /// Start time of the holder process (clock ticks since boot; display only).
    pub start_time: AtomicU64,
    /// Carve intents, `size << 32 | offset` of a wilderness carve in progress
    /// (0 = unused). Several threads of one participant each take an entry.
    pub carve_intents: [AtomicU64; CARVE_INTENTS],
    _pad: AtomicU64,
}

/// Carve intents per participant slot.
pub const CARVE_INTENTS: usize = 4;

impl ParticipantSlot {
    /// An empty slot, for model arenas.
    pub fn new() -> Self {
        Self {
            word: AtomicU64::new(0),
            pid: AtomicU32::new(0),
            _reserved: AtomicU32::new(0),
            start_time: AtomicU64::new(0),
            carve_intents: std::array::from_fn(|_| AtomicU64::new(0)),
            _pad: AtomicU64::new(0),
        }
    }

    /// The slot state (`slot_state::*`), from one load of the slot word.
    #[inline]
    pub fn state(&self, order: crate::sync::Ordering) -> u32 {
        slot_word::state_of(self.word.load(order))
    }

    /// The generation of the current (or last) claim, from one load of the slot word.
    #[inline]
    pub fn generation(&self, order: crate::sync::Ordering) -> u32 {
        slot_word::generation_of(self.word.load(order))
    }
}

impl Default for ParticipantSlot {
    fn default() -> Self {
        Self::new()
    }
}

/// States of a participant slot (the low 4 bits of the slot word).
pub mod slot_state {
    /// Unused.
    pub const EMPTY: u32 = 0;
    /// Held by a participant whose liveness lock tells whether it is alive.
    pub const ACTIVE: u32 = 2;
    /// Its handle was dropped; its blocks are reclaimed by the next `recover()`.
    pub const DETACHED: u32 = 3;
    /// A recoverer (named in the slot word) is reclaiming its blocks.
    pub const RECOVERING: u32 = 4;
}

/// The participant slot word: one `u64` holding everything a transition of
/// the slot depends on.
///
/// ```text
///  63                    32 31             16 15          4 3         0
/// +------------------------+-----------------+-------------+-----------+
/// | generation (32)        | recoverer gen16 | recoverer   | state     |
/// |                        | (low 16 bits)   | (slot + 1)  | slot_state|
/// +------------------------+-----------------+-------------+-----------+
/// ```
///
/// The recoverer field has 12 bits, enough for [`MAX_PARTICIPANTS`] slots.
///
/// The generation is bumped by every claim (EMPTY → ACTIVE) and names it;
/// the recoverer fields are non-zero only in `RECOVERING` and name the
/// recovering participant's slot and the low 16 bits of the generation of
/// *its* claim, so a recoverer whose slot was recycled since is told apart
/// from the participant now holding that slot.
pub mod slot_word {
    /// Packs a slot word; `recoverer` is a slot index, `None` for none.
    #[inline]
    pub const fn pack(
        state: u32,
        recoverer: Option<usize>,
        recoverer_generation: u32,
        generation: u32,
    ) -> u64 {
        let rec = match recoverer {
            Some(slot) => (slot as u64 + 1) & 0xFFF,
            None => 0,
        };
        let rec_gen = if recoverer.is_some() {
            (recoverer_generation & 0xFFFF) as u64
        } else {
            0
        };
        ((generation as u64) << 32) | (rec_gen << 16) | (rec << 4) | (state as u64 & 0xF)
    }

    /// The state (`slot_state::*`).
    #[inline]
    pub const fn state_of(word: u64) -> u32 {
        (word & 0xF) as u32
    }

    /// The recovering participant's slot index, if any.
    #[inline]
    pub const fn recoverer_of(word: u64) -> Option<usize> {
        match (word >> 4) & 0xFFF {
            0 => None,
            s => Some(s as usize - 1),
        }
    }

    /// The low 16 bits of the recovering participant's own claim generation.
    #[inline]
    pub const fn recoverer_generation_of(word: u64) -> u32 {
        ((word >> 16) & 0xFFFF) as u32
    }

    /// The generation of the slot's current (or last) claim.
    #[inline]
    pub const fn generation_of(word: u64) -> u32 {
        (word >> 32) as u32
    }
}

/// Monotonic event counters, for tools.
#[repr(C)]
pub struct Counters {
    /// Consolidations run.
    pub consolidations: AtomicU64,
    /// Participants recovered.
    pub recoveries: AtomicU64,
    /// Out-of-memory results returned.
    pub out_of_memory: AtomicU64,
    /// Offline repairs run.
    pub repairs: AtomicU64,
}

/// One entry of the participant table, padded to its own cache line(s).
pub type SlotEntry = CachePadded<ParticipantSlot>;

/// The header at offset 0 of every segment: fixed fields, then the
/// participant table, whose length is chosen at create time
/// ([`participant_count`](SegmentHeaderOf::participant_count)).
///
/// `T` is the table: `[SlotEntry]` in [`SegmentHeader`], the form every
/// segment is used through; `[SlotEntry; N]` for a header built in ordinary
/// memory (which coerces to it) and `[SlotEntry; 0]` for the fixed part
/// alone ([`SegmentFixed`], whose size is where the table starts).
#[repr(C)]
pub struct SegmentHeaderOf<T: ?Sized> {
    /// [`MAGIC`] once formatting has begun.
    pub magic: AtomicU64,
    /// [`FORMAT_VERSION`].
    pub version: AtomicU32,
    /// `init::*`.
    pub init_state: AtomicU32,
    /// [`layout_fingerprint`] of the formatter's build.
    pub fingerprint: AtomicU64,
    /// Random, never 0, chosen at format time: the segment's identity.
    /// Handles carry it, so a handle made by one segment is refused by
    /// another (generations alone repeat across segments).
    pub nonce: AtomicU64,
    /// Size of the segment in bytes.
    pub segment_size: AtomicU64,
    /// Offset of the first block.
    pub arena_start: AtomicU32,
    /// End of the arena (segment size rounded down to 16).
    pub arena_end: AtomicU32,
    /// Process id of the formatter.
    pub formatter_pid: AtomicU32,
    /// Offset of the root registry block (0 = none); owned by `matrix-internals`.
    pub root_registry: AtomicU32,
    /// Event counters.
    pub counters: Counters,
    /// Owner id of the running consolidator (0 = none).
    pub consolidator: AtomicU32,
    /// Source of block generations: every allocation takes the next value,
    /// so a generation never repeats at any offset (until 2^40 allocations
    /// later), whatever the memory under a re-created header held.
    pub generations: AtomicU64,
    /// Completed consolidations; allocators use it to avoid consolidation storms.
    pub consolidation_epoch: AtomicU64,
    /// Start of the wilderness: `[arena_start, top)` is tiled by blocks.
    pub top: CachePadded<AtomicU32>,
    /// The free index.
    pub index: FreeIndex,
    /// Participant slots formatted (the table's length); written at format
    /// time, checked against the mapping at open, never changed after.
    pub participant_count: AtomicU32,
    _reserved: AtomicU32,
    /// The participant table; reached through
    /// [`participant`](SegmentHeaderOf::participant) and
    /// [`participants`](SegmentHeaderOf::participants).
    table: T,
}

/// A segment header with its participant table, as a mapped segment has it.
pub type SegmentHeader = SegmentHeaderOf<[SlotEntry]>;
/// The fixed part of a segment header (an empty table).
pub type SegmentFixed = SegmentHeaderOf<[SlotEntry; 0]>;

impl SegmentHeader {
    /// Participant slot `index`, `None` beyond the table.
    #[inline]
    pub fn participant(&self, index: usize) -> Option<&ParticipantSlot> {
        self.table.get(index).map(|e| &**e)
    }

    /// Slots in the participant table.
    #[inline]
    pub fn participant_count(&self) -> usize {
        self.table.len()
    }

    /// Every participant slot, in index order.
    #[inline]
    pub fn participants(&self) -> impl ExactSizeIterator<Item = &ParticipantSlot> + '_ {
        self.table.iter().map(|e| &**e)
    }
}

impl<const N: usize> SegmentHeaderOf<[SlotEntry; N]> {
    /// A zeroed header with `N` slots, for model arenas built in ordinary
    /// memory (`Box<Self>` coerces to `Box<SegmentHeader>`).
    pub fn new() -> Self {
        Self {
            magic: AtomicU64::new(0),
            version: AtomicU32::new(0),
            init_state: AtomicU32::new(0),
            fingerprint: AtomicU64::new(0),
            nonce: AtomicU64::new(0),
            segment_size: AtomicU64::new(0),
            arena_start: AtomicU32::new(0),
            arena_end: AtomicU32::new(0),
            formatter_pid: AtomicU32::new(0),
            root_registry: AtomicU32::new(0),
            counters: Counters {
                consolidations: AtomicU64::new(0),
                recoveries: AtomicU64::new(0),
                out_of_memory: AtomicU64::new(0),
                repairs: AtomicU64::new(0),
            },
            consolidator: AtomicU32::new(0),
            generations: AtomicU64::new(0),
            consolidation_epoch: AtomicU64::new(0),
            top: CachePadded::new(AtomicU32::new(0)),
            index: FreeIndex::new(),
            participant_count: AtomicU32::new(N as u32),
            _reserved: AtomicU32::new(0),
            table: std::array::from_fn(|_| CachePadded::new(ParticipantSlot::new())),
        }
    }
}

impl<const N: usize> Default for SegmentHeaderOf<[SlotEntry; N]> {
    fn default() -> Self {
        Self::new()
    }
}

/// Offset of the participant table (the size of the fixed part).
pub const TABLE_OFFSET: usize = std::mem::size_of::<SegmentFixed>();

/// Offset of the first block of a segment with `participants` slots: the
/// header and its table rounded up to 16 (in practice to a cache line,
/// which the table's entries already are). `None` if `participants` is 0,
/// above [`MAX_PARTICIPANTS`], or the header would not fit a `u32` offset.
pub const fn arena_start_for(participants: usize) -> Option<u32> {
    if participants == 0 || participants > MAX_PARTICIPANTS {
        return None;
    }
    let end = TABLE_OFFSET + participants * std::mem::size_of::<SlotEntry>();
    let rounded = (end + BLOCK_ALIGN as usize - 1) & !(BLOCK_ALIGN as usize - 1);
    if rounded > u32::MAX as usize {
        return None;
    }
    Some(rounded as u32)
}

/// Offset of the first block with the default table
/// ([`DEFAULT_PARTICIPANTS`] slots).
pub const ARENA_START: u32 = match arena_start_for(DEFAULT_PARTICIPANTS) {
    Some(start) => start,
    None => panic!("the default participant table fits"),
};

/// Smallest segment with the default table: the header and one minimum block.
pub const MIN_SEGMENT_SIZE: u64 = ARENA_START as u64 + MIN_BLOCK as u64;

/// Smallest segment with `participants` slots, `None` for a table size
/// [`arena_start_for`] refuses.
pub const fn min_segment_size_for(participants: usize) -> Option<u64> {
    match arena_start_for(participants) {
        Some(start) => Some(start as u64 + MIN_BLOCK as u64),
        None => None,
    }
}

const fn fnv1a(mut hash: u64, value: u64) -> u64 {
    let mut i = 0;
    while i < 8 {
        hash ^= (value >> (i * 8)) & 0xff;
        hash = hash.wrapping_mul(0x0000_0100_0000_01B3);
        i += 1;
    }
    hash
}

/// The slot word's field positions, as one fact for the fingerprint: a
/// build that packs the word differently must not open the segment.
const SLOT_WORD_LAYOUT: u64 = slot_word::pack(0xB, Some(0xCCC), 0xDDEE, 0x1234_5678);

/// Hash of every layout fact two processes must agree on: struct sizes,
/// alignments, field offsets, index shape and slot count.
pub const fn layout_fingerprint() -> u64 {
    use std::mem::{align_of, offset_of, size_of};
    let facts: [u64; 27] = [
        size_of::<SegmentFixed>() as u64,
        align_of::<SegmentFixed>() as u64,
        size_of::<SlotEntry>() as u64,
        offset_of!(SegmentFixed, participant_count) as u64,
        size_of::<BlockHeader>() as u64,
        align_of::<BlockHeader>() as u64,
        size_of::<ParticipantSlot>() as u64,
        size_of::<CachePadded<ParticipantSlot>>() as u64,
        offset_of!(ParticipantSlot, word) as u64,
        offset_of!(ParticipantSlot, pid) as u64,
        offset_of!(ParticipantSlot, carve_intents) as u64,
        SLOT_WORD_LAYOUT,
        FL_COUNT as u64,
        SL_COUNT as u64,
        MAX_PARTICIPANTS as u64,
        offset_of!(SegmentFixed, top) as u64,
        offset_of!(SegmentFixed, index) as u64,
        offset_of!(SegmentFixed, table) as u64,
        offset_of!(SegmentFixed, consolidator) as u64,
        offset_of!(SegmentFixed, nonce) as u64,
        offset_of!(BlockHeader, state) as u64,
        offset_of!(BlockHeader, size) as u64,
        offset_of!(BlockHeader, next_free) as u64,
        offset_of!(BlockHeader, reserved) as u64,
        offset_of!(BlockHeader, check) as u64,
        FORMAT_LOCK,
        FORMAT_VERSION as u64,
    ];
    let mut hash = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < facts.len() {
        hash = fnv1a(hash, facts[i]);
        i += 1;
    }
    hash
}

#[cfg(not(loom))]
mod pinned {
    use super::*;
    use static_assertions::const_assert;
    use std::mem::{align_of, offset_of, size_of};

    const_assert!(size_of::<BlockHeader>() == BLOCK_HEADER_SIZE as usize);
    const_assert!(align_of::<BlockHeader>() == 8);
    const_assert!(offset_of!(BlockHeader, state) == 0);
    const_assert!(offset_of!(BlockHeader, size) == 8);
    const_assert!(offset_of!(BlockHeader, next_free) == 12);
    const_assert!(offset_of!(BlockHeader, reserved) == 16);
    const_assert!(offset_of!(BlockHeader, check) == 24);
    const_assert!(size_of::<ParticipantSlot>() == 64);
    const_assert!(offset_of!(ParticipantSlot, word) == 0);
    const_assert!(offset_of!(ParticipantSlot, pid) == 8);
    const_assert!(offset_of!(ParticipantSlot, start_time) == 16);
    const_assert!(offset_of!(ParticipantSlot, carve_intents) == 24);
    const_assert!(SLOT_WORD_LAYOUT == 0x1234_5678_DDEE_CCDB);
    // The recoverer field (slot + 1, 12 bits) names every slot.
    const_assert!(MAX_PARTICIPANTS < 0xFFF);
    // The table starts right after the fixed part, aligned for its entries.
    const_assert!(offset_of!(SegmentFixed, table) == TABLE_OFFSET);
    const_assert!(TABLE_OFFSET % align_of::<SlotEntry>() == 0);
    // The largest table still leaves a u32 arena.
    const_assert!(arena_start_for(MAX_PARTICIPANTS).is_some());
    // The sizes docs/ARCHITECTURE.md gives for x86_64.
    #[cfg(target_arch = "x86_64")]
    const _: () = {
        assert!(TABLE_OFFSET == 3840 && size_of::<SlotEntry>() == 128);
        assert!(ARENA_START == 12_032);
        assert!(matches!(arena_start_for(1024), Some(134_912)));
        assert!(matches!(arena_start_for(MAX_PARTICIPANTS), Some(527_872)));
    };
    // The formatter's lock byte is no slot's.
    const_assert!(FORMAT_LOCK < LIVENESS_LOCK_BASE);
    // Lock bytes live beyond any segment (offsets are u32), one per slot.
    const_assert!(LIVENESS_LOCK_BASE > MAX_SEGMENT_SIZE);
    const_assert!(offset_of!(SegmentFixed, magic) == 0);
    const_assert!(offset_of!(SegmentFixed, version) == 8);
    const_assert!(offset_of!(SegmentFixed, init_state) == 12);
    const_assert!(offset_of!(SegmentFixed, fingerprint) == 16);
    const_assert!(offset_of!(SegmentFixed, nonce) == 24);
    const_assert!(ARENA_START % BLOCK_ALIGN == 0);
    // Every slot has an owner value in the state word's owner field.
    const_assert!(MAX_PARTICIPANTS < crate::state::OWNER_MAX as usize);
    // The index and the default slot table stay well under 1 % of a 64 MiB segment.
    const_assert!((ARENA_START as usize) < 64 * 1024 * 1024 / 100);
}
