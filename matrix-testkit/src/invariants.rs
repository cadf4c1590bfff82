//! The invariant checker: what must hold in a segment at quiescence.
//!
//! ```text
//!  arena_start                                         top          arena_end
//!  | hdr|payload | hdr|payload | ... | hdr|payload     | wilderness |
//!  '-- the chain: sizes tile [arena_start, top) exactly --'
//!
//!  heads[fl][sl] ─► FREE ─► FREE ─► NIL     every FREE block of the chain is in
//!  sl_bitmap[fl] bit sl set if non-empty    exactly one list, the list of its
//!  fl_bitmap bit fl set if sl_bitmap != 0   size class; every entry is FREE
//! ```
//!
//! The checker reads the segment with its own walk and list traversal (it
//! does not use the allocator's walker, which is part of what it checks) and
//! reports *every* violation it finds, each with the offset it concerns.
//! It trusts nothing it reads: every offset is bounds-checked, every walk is
//! bounded, so a corrupt segment yields violations, never a hang.
//!
//! "At quiescence" means no allocator operation is in flight in any live
//! participant. Dead participants may have left transient states behind;
//! those are reported as violations only where recovery should already have
//! taken them back.

use matrix_core::layout::{header_check, slot_state, slot_word, ParticipantSlot, MIN_BLOCK, NIL};
use matrix_core::size_class::{class_of, SizeClass, FL_COUNT, SL_COUNT};
use matrix_core::state::{self, ACKED, ALLOCATED, CACHED, COALESCING, FREE, RESIZING};
use matrix_core::{Arena, AtomicMatrix, Liveness, OwnerId, BLOCK_HEADER_SIZE};
use matrix_handler::HandlerFunctions;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use crate::sync::Ordering::Acquire;

/// One block of the chain, as the checker read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainBlock {
    /// Header offset.
    pub offset: u32,
    /// Whole block size, header included.
    pub size: u32,
    /// State (low half of the state word).
    pub state: u32,
    /// Generation (high half of the state word).
    pub generation: u64,
    /// Owner id (0 = the segment).
    pub owner: OwnerId,
    /// Payload bytes the allocation asked for.
    pub requested: u32,
    /// Payload type fingerprint.
    pub type_tag: u32,
}

impl ChainBlock {
    /// Offset one past the block's last byte.
    pub fn end(&self) -> u64 {
        self.offset as u64 + self.size as u64
    }
    /// Payload offset (header + 32).
    pub fn payload_offset(&self) -> u32 {
        self.offset + BLOCK_HEADER_SIZE
    }
}

/// What is wrong at one offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViolationKind {
    /// `top` lies outside `[arena_start, arena_end]` or is not 16-aligned.
    TopOutOfRange {
        /// First block offset.
        arena_start: u32,
        /// End of the arena.
        arena_end: u32,
    },
    /// The chain expects a block header here, but the `check` word is wrong
    /// (a gap, an overlap, or a header destroyed).
    MissingHeader,
    /// The header's size is below the minimum block, not a multiple of 16,
    /// or runs past `top`.
    BadSize {
        /// Size found.
        size: u32,
    },
    /// The state is one of the reserved values 4–48.
    ReservedState {
        /// State found.
        state: u32,
    },
    /// A FREE block carries an owner.
    FreeBlockOwned {
        /// Owner found.
        owner: u32,
    },
    /// An ALLOCATED, ACKED, COALESCING or CACHED block whose owner is not a
    /// registered participant (nobody will ever free or recover it).
    UnknownOwner {
        /// State of the block.
        state: u32,
        /// Owner found.
        owner: u32,
    },
    /// ACKED or COALESCING at quiescence, held by a live participant or by
    /// nobody (owner 0): no operation in flight explains it.
    TransientState {
        /// State found.
        state: u32,
        /// Owner found.
        owner: u32,
    },
    /// A live block records a request larger than its payload.
    RequestedExceedsPayload {
        /// Bytes recorded as requested.
        requested: u32,
        /// Payload capacity.
        payload: u32,
    },
    /// A FREE block of the chain is in no bucket: nobody can allocate it.
    FreeNotListed,
    /// A block is in two buckets, or twice in one (reached from two links).
    ListedTwice {
        /// Bucket of the first sighting.
        first: SizeClass,
        /// Bucket of the second sighting.
        second: SizeClass,
    },
    /// A bucket entry is not FREE.
    ListEntryNotFree {
        /// Bucket holding it.
        class: SizeClass,
        /// State found.
        state: u32,
    },
    /// A bucket entry is not the start of a block of the chain.
    ListEntryNotABlock {
        /// Bucket holding it.
        class: SizeClass,
    },
    /// A FREE block is filed under a class its size does not belong to.
    WrongBucket {
        /// Bucket holding it.
        class: SizeClass,
        /// Bucket its size maps to.
        expected: SizeClass,
    },
    /// Following `next_free` from the bucket head comes back to this entry.
    ListCycle {
        /// Bucket holding the cycle.
        class: SizeClass,
    },
    /// A non-empty bucket whose second-level bit is clear: searches skip it.
    BitmapHidesBucket {
        /// The bucket.
        class: SizeClass,
    },
    /// A first level with non-empty buckets whose first-level bit is clear.
    LevelBitHidesBucket {
        /// The bucket.
        class: SizeClass,
    },
    /// A valid-looking header sits at `top`, in the wilderness.
    WildernessHeader,
    /// A live participant has a carve intent recorded at quiescence.
    StaleCarveIntent {
        /// Participant slot.
        slot: usize,
        /// The intent word.
        intent: u64,
    },
    /// The consolidation word is held by a live participant at quiescence.
    ConsolidatorHeld {
        /// Owner id in the word.
        holder: u32,
    },
    /// A structure's own invariant, reported by the hook of
    /// [`check_invariants_with`].
    Structure {
        /// What is wrong, in the structure's words.
        what: String,
    },
}

/// One broken invariant: where, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The offset concerned (a header offset; the head block of a list for
    /// list and bitmap violations; 0 for segment-wide ones).
    pub offset: u32,
    /// What is wrong.
    pub kind: ViolationKind,
}

impl Violation {
    /// A broken invariant of a structure built on the allocator, at
    /// `offset` (a header offset, or 0 for the structure as a whole): what
    /// a [`check_invariants_with`] hook returns.
    pub fn structure(offset: u32, what: impl Into<String>) -> Self {
        Violation {
            offset,
            kind: ViolationKind::Structure { what: what.into() },
        }
    }

    /// Whether this is a block stranded by a participant killed inside an
    /// allocator operation (FREE in no list, or ACKED/COALESCING/CACHED
    /// owned by nobody): the one loss the design allows online, reclaimed by
    /// `AtomicMatrix::repair`.
    pub fn is_stranding(&self) -> bool {
        matches!(
            self.kind,
            ViolationKind::FreeNotListed
                | ViolationKind::TransientState { owner: 0, .. }
                | ViolationKind::UnknownOwner {
                    state: CACHED,
                    owner: 0
                }
        )
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ViolationKind::*;
        let at = self.offset;
        match &self.kind {
            TopOutOfRange {
                arena_start,
                arena_end,
            } => write!(
                f,
                "top = {at} lies outside [{arena_start}, {arena_end}] or is not 16-aligned"
            ),
            MissingHeader => write!(
                f,
                "offset {at}: the chain expects a block header here, found none"
            ),
            BadSize { size } => write!(f, "offset {at}: impossible block size {size}"),
            ReservedState { state } => write!(f, "offset {at}: block in reserved state {state}"),
            FreeBlockOwned { owner } => {
                write!(f, "offset {at}: FREE block carries owner {owner:#x}")
            }
            UnknownOwner { state, owner } => write!(
                f,
                "offset {at}: {} block owned by {owner:#x}, which is no registered participant",
                state::state_name(*state)
            ),
            TransientState { state, owner } => write!(
                f,
                "offset {at}: {} block at quiescence (owner {owner:#x})",
                state::state_name(*state)
            ),
            RequestedExceedsPayload { requested, payload } => write!(
                f,
                "offset {at}: {requested} B requested but the payload holds {payload} B"
            ),
            FreeNotListed => write!(
                f,
                "offset {at}: FREE block is in no free-list bucket (stranded)"
            ),
            ListedTwice { first, second } => write!(
                f,
                "offset {at}: listed twice, in bucket {first:?} and in bucket {second:?}"
            ),
            ListEntryNotFree { class, state } => write!(
                f,
                "offset {at}: entry of bucket {class:?} is {}, not FREE",
                state::state_name(*state)
            ),
            ListEntryNotABlock { class } => {
                write!(
                    f,
                    "offset {at}: entry of bucket {class:?} is not a block of the chain"
                )
            }
            WrongBucket { class, expected } => {
                write!(
                    f,
                    "offset {at}: filed in bucket {class:?}, its size belongs in {expected:?}"
                )
            }
            ListCycle { class } => {
                write!(f, "offset {at}: bucket {class:?} loops back to this entry")
            }
            BitmapHidesBucket { class } => {
                write!(
                    f,
                    "bucket {class:?} (head {at}) is non-empty but its bitmap bit is clear"
                )
            }
            LevelBitHidesBucket { class } => write!(
                f,
                "bucket {class:?} (head {at}) is non-empty but first-level bit {} is clear",
                class.fl
            ),
            WildernessHeader => write!(
                f,
                "offset {at}: a valid block header sits at top, in the wilderness"
            ),
            StaleCarveIntent { slot, intent } => write!(
                f,
                "participant slot {slot} (alive) has carve intent {intent:#x} at quiescence"
            ),
            Structure { what } => write!(f, "offset {at}: {what}"),
            ConsolidatorHeld { holder } => {
                write!(
                    f,
                    "consolidation word held by live participant {holder:#x} at quiescence"
                )
            }
        }
    }
}

impl std::error::Error for Violation {}

/// What the checker counted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Bytes between `arena_start` and `arena_end`.
    pub arena_bytes: u64,
    /// Blocks in the chain.
    pub blocks: u64,
    /// Blocks by state (user states each under their own number).
    pub blocks_by_state: BTreeMap<u32, u64>,
    /// Bytes in blocks that are not FREE, headers included.
    pub used_bytes: u64,
    /// Bytes in FREE and CACHED blocks plus the wilderness.
    pub free_bytes: u64,
    /// FREE blocks (the wilderness not counted).
    pub free_blocks: u64,
    /// CACHED blocks (free, parked in a thread cache of their owner).
    pub cached_blocks: u64,
    /// Bytes in CACHED blocks (part of `free_bytes`).
    pub cached_bytes: u64,
    /// Bytes between `top` and `arena_end`.
    pub wilderness_bytes: u64,
    /// Largest single free block, header included (the wilderness counts as one).
    pub largest_free_block: u64,
    /// Largest run of physically adjacent free blocks (plus the wilderness if
    /// the run reaches `top`): what one consolidation could offer.
    pub largest_free_run: u64,
    /// `1 - largest_free_block / free_bytes` (0 when all free memory is one block).
    pub fragmentation: f64,
    /// Blocks found in the free lists.
    pub listed_blocks: u64,
    /// Stranded blocks ([`Violation::is_stranding`]).
    pub stranded_blocks: u64,
    /// Bytes in stranded blocks.
    pub stranded_bytes: u64,
    /// User-state blocks whose owner is no longer registered (left by
    /// `recover()` for the application to free).
    pub orphaned_user_blocks: u64,
    /// Bitmap bits set for empty buckets (allowed: bits are cleared lazily).
    pub stale_bitmap_bits: u64,
}

/// The full result of a check: counts, the chain read, every violation.
#[derive(Debug, Clone, Default)]
pub struct Audit {
    /// Counts.
    pub report: Report,
    /// The chain, in offset order (up to the first break).
    pub chain: Vec<ChainBlock>,
    /// Every violation found, in the order found.
    pub violations: Vec<Violation>,
}

impl Audit {
    /// `Ok(report)` if nothing is wrong, else the first violation.
    pub fn into_result(self) -> Result<Report, Violation> {
        match self.violations.into_iter().next() {
            Some(v) => Err(v),
            None => Ok(self.report),
        }
    }

    /// The violations that are not stranded blocks.
    pub fn hard_violations(&self) -> impl Iterator<Item = &Violation> {
        self.violations.iter().filter(|v| !v.is_stranding())
    }
}

/// Checks every invariant of the handler's segment. See the module docs.
///
/// ```
/// use matrix_handler::{HandlerFunctions, MatrixHandler};
/// let h = MatrixHandler::bootstrap(None, 1 << 20)?;
/// let b = h.allocate::<u64>()?;
/// let report = matrix_testkit::check_invariants(&h).expect("a fresh arena is sound");
/// assert_eq!(report.blocks_by_state.get(&1), Some(&1));
/// h.free(b)?;
/// # Ok::<(), matrix_handler::HandlerError>(())
/// ```
pub fn check_invariants(handler: &impl HandlerFunctions) -> Result<Report, Violation> {
    check_matrix(handler.matrix())
}

/// [`check_invariants`], then your structure's own invariants: `hook` gets
/// the handler and the chain the checker read (every block in address
/// order, with state, owner and type tag) and returns the first violation
/// it finds ([`Violation::structure`]). It runs only when the allocator's
/// invariants hold, so it may rely on a complete, well-formed chain.
///
/// ```
/// use matrix_handler::{HandlerFunctions, MatrixHandler, USER_STATE_MIN};
/// use matrix_testkit::{check_invariants_with, Violation};
/// let h = MatrixHandler::bootstrap(None, 1 << 20)?;
/// let node = h.allocate::<u64>()?;
/// h.set_state(&node, USER_STATE_MIN)?;
/// // "every node of mine is in state 49"
/// let report = check_invariants_with(&h, |_, chain| {
///     match chain.iter().find(|b| b.state != 0 && b.state != USER_STATE_MIN) {
///         Some(b) => Err(Violation::structure(b.offset, "a node outside state 49")),
///         None => Ok(()),
///     }
/// });
/// assert!(report.is_ok());
/// # Ok::<(), matrix_handler::HandlerError>(())
/// ```
pub fn check_invariants_with<H: HandlerFunctions>(
    handler: &H,
    hook: impl FnOnce(&H, &[ChainBlock]) -> Result<(), Violation>,
) -> Result<Report, Violation> {
    let a = audit(handler.matrix());
    if let Some(v) = a.violations.into_iter().next() {
        return Err(v);
    }
    hook(handler, &a.chain)?;
    Ok(a.report)
}

/// [`audit`] of a handler's segment, as [`check_invariants`] takes it.
pub fn audit_of(handler: &impl HandlerFunctions) -> Audit {
    audit(handler.matrix())
}

/// [`check_invariants`] on a raw attachment (for tools such as `matrix fsck`).
pub fn check_matrix(matrix: &AtomicMatrix) -> Result<Report, Violation> {
    audit(matrix).into_result()
}

/// [`check_invariants`] on any [`Arena`] view.
pub fn check_arena<A: Arena>(arena: &A) -> Result<Report, Violation> {
    audit(arena).into_result()
}

/// Reads the whole segment and returns every violation with the counts.
pub fn audit<A: Arena>(arena: &A) -> Audit {
    let mut audit = Audit::default();
    let seg = arena.segment();
    let (start, end) = (arena.arena_start(), arena.arena_end());
    audit.report.arena_bytes = end.saturating_sub(start) as u64;
    // Acquire: pairs with the Release/SeqCst updates of `top` (carve, retract, repair).
    let raw_top = seg.top.load(Acquire);
    let top = if raw_top < start || raw_top > end || raw_top % 16 != 0 {
        audit.violations.push(Violation {
            offset: raw_top,
            kind: ViolationKind::TopOutOfRange {
                arena_start: start,
                arena_end: end,
            },
        });
        raw_top.clamp(start, end) & !15
    } else {
        raw_top
    };
    let chain_complete = walk_chain(arena, top, &mut audit);
    check_wilderness(arena, top, &mut audit);
    let listed = check_lists(arena, chain_complete, &mut audit);
    check_blocks(arena, &listed, &mut audit);
    check_participants(arena, &mut audit);
    summarize(&mut audit, top, end);
    audit
}

/// Walks `[arena_start, top)`; returns whether it tiled exactly.
fn walk_chain<A: Arena>(arena: &A, top: u32, audit: &mut Audit) -> bool {
    let mut position = arena.arena_start();
    // Each step advances by at least MIN_BLOCK, so this bounds the loop.
    while position < top {
        let Some(hdr) = arena.header(position) else {
            audit.violations.push(Violation {
                offset: position,
                kind: ViolationKind::MissingHeader,
            });
            return false;
        };
        // Acquire on every field: pairs with the Release stores that publish
        // headers (split, mark_allocated, push); at quiescence all are visible.
        if hdr.check.load(Acquire) != header_check(position) {
            audit.violations.push(Violation {
                offset: position,
                kind: ViolationKind::MissingHeader,
            });
            return false;
        }
        let size = hdr.size.load(Acquire);
        if size < MIN_BLOCK || size % 16 != 0 || position as u64 + size as u64 > top as u64 {
            audit.violations.push(Violation {
                offset: position,
                kind: ViolationKind::BadSize { size },
            });
            return false;
        }
        let word = hdr.state.load(Acquire);
        audit.chain.push(ChainBlock {
            offset: position,
            size,
            state: state::state_of(word),
            generation: state::generation_of(word),
            owner: OwnerId(state::owner_of(word)),
            requested: hdr.requested.load(Acquire),
            type_tag: hdr.type_tag.load(Acquire),
        });
        position += size;
    }
    true
}

fn check_wilderness<A: Arena>(arena: &A, top: u32, audit: &mut Audit) {
    if let Some(hdr) = arena.header(top) {
        // Acquire: pairs with retract's Release clear of the check word.
        if hdr.check.load(Acquire) == header_check(top) {
            audit.violations.push(Violation {
                offset: top,
                kind: ViolationKind::WildernessHeader,
            });
        }
    }
}

/// Traverses every bucket; returns offset → bucket for each entry.
fn check_lists<A: Arena>(
    arena: &A,
    chain_complete: bool,
    audit: &mut Audit,
) -> HashMap<u32, SizeClass> {
    let seg = arena.segment();
    let index = &seg.index;
    let blocks: HashMap<u32, ChainBlock> = audit.chain.iter().map(|b| (b.offset, *b)).collect();
    let limit = (audit.report.arena_bytes / MIN_BLOCK as u64) as usize + 2;
    let mut listed: HashMap<u32, SizeClass> = HashMap::new();
    // Acquire on the index words: pairs with the pushers' SeqCst CAS and bit sets.
    let fl_bits = index.fl_bitmap.load(Acquire);
    if FL_COUNT < 32 {
        // Bits past the last first level name no bucket at all.
        audit.report.stale_bitmap_bits += (fl_bits >> FL_COUNT).count_ones() as u64;
    }
    for fl in 0..FL_COUNT {
        let sl_bits = index.sl_bitmap[fl].load(Acquire);
        if sl_bits == 0 && fl_bits & (1 << fl) != 0 {
            audit.report.stale_bitmap_bits += 1;
        }
        for sl in 0..SL_COUNT {
            let class = SizeClass { fl, sl };
            let head = index.heads[fl][sl].load(Acquire) as u32;
            if head == NIL {
                if sl_bits & (1 << sl) != 0 {
                    audit.report.stale_bitmap_bits += 1;
                }
                continue;
            }
            if sl_bits & (1 << sl) == 0 {
                audit.violations.push(Violation {
                    offset: head,
                    kind: ViolationKind::BitmapHidesBucket { class },
                });
            }
            if fl_bits & (1 << fl) == 0 {
                audit.violations.push(Violation {
                    offset: head,
                    kind: ViolationKind::LevelBitHidesBucket { class },
                });
            }
            let mut seen_here = HashSet::new();
            let mut offset = head;
            let mut steps = 0;
            while offset != NIL && steps < limit {
                steps += 1;
                if !seen_here.insert(offset) {
                    audit.violations.push(Violation {
                        offset,
                        kind: ViolationKind::ListCycle { class },
                    });
                    break;
                }
                let Some(hdr) = arena.header(offset) else {
                    audit.violations.push(Violation {
                        offset,
                        kind: ViolationKind::ListEntryNotABlock { class },
                    });
                    break;
                };
                match blocks.get(&offset) {
                    None if chain_complete => {
                        audit.violations.push(Violation {
                            offset,
                            kind: ViolationKind::ListEntryNotABlock { class },
                        });
                        break;
                    }
                    None => {}
                    Some(b) => {
                        if b.state != FREE {
                            audit.violations.push(Violation {
                                offset,
                                kind: ViolationKind::ListEntryNotFree {
                                    class,
                                    state: b.state,
                                },
                            });
                        }
                        let expected = class_of(b.size);
                        if expected != class {
                            audit.violations.push(Violation {
                                offset,
                                kind: ViolationKind::WrongBucket { class, expected },
                            });
                        }
                    }
                }
                if let Some(first) = listed.insert(offset, class) {
                    audit.violations.push(Violation {
                        offset,
                        kind: ViolationKind::ListedTwice {
                            first,
                            second: class,
                        },
                    });
                    break;
                }
                offset = hdr.next_free.load(Acquire);
            }
        }
    }
    audit.report.listed_blocks = listed.len() as u64;
    listed
}

/// Whether `owner` names a participant currently registered in its slot.
fn registered<A: Arena>(arena: &A, owner: OwnerId) -> Option<&ParticipantSlot> {
    let slot = arena.segment().participant(owner.slot()?)?;
    // Acquire: pairs with the claimer's Release CAS of the slot word.
    let word = slot.word.load(Acquire);
    (slot_word::state_of(word) != slot_state::EMPTY).then_some(slot)
}

/// Whether `owner` is registered, attached, and not definitely dead (a
/// participant whose liveness is unknown may be running).
fn live_participant<A: Arena>(arena: &A, owner: OwnerId) -> bool {
    let Some(index) = owner.slot() else {
        return false;
    };
    registered(arena, owner).is_some_and(|slot| {
        slot.state(Acquire) == slot_state::ACTIVE && arena.liveness(index) != Liveness::Dead
    })
}

fn check_blocks<A: Arena>(arena: &A, listed: &HashMap<u32, SizeClass>, audit: &mut Audit) {
    let mut violations = Vec::new();
    for b in &audit.chain {
        let at = b.offset;
        match b.state {
            FREE => {
                if b.owner != OwnerId::SEGMENT {
                    violations.push(Violation {
                        offset: at,
                        kind: ViolationKind::FreeBlockOwned { owner: b.owner.0 },
                    });
                }
                if !listed.contains_key(&at) {
                    violations.push(Violation {
                        offset: at,
                        kind: ViolationKind::FreeNotListed,
                    });
                }
            }
            CACHED => {
                // Owner 0: being returned from a cache by a participant that
                // died between clearing the owner and storing FREE (counted
                // as stranded, see `Violation::is_stranding`).
                if b.owner == OwnerId::SEGMENT || registered(arena, b.owner).is_none() {
                    violations.push(Violation {
                        offset: at,
                        kind: ViolationKind::UnknownOwner {
                            state: CACHED,
                            owner: b.owner.0,
                        },
                    });
                }
            }
            ACKED | COALESCING | RESIZING => {
                if b.owner == OwnerId::SEGMENT || live_participant(arena, b.owner) {
                    violations.push(Violation {
                        offset: at,
                        kind: ViolationKind::TransientState {
                            state: b.state,
                            owner: b.owner.0,
                        },
                    });
                } else if registered(arena, b.owner).is_none() {
                    violations.push(Violation {
                        offset: at,
                        kind: ViolationKind::UnknownOwner {
                            state: b.state,
                            owner: b.owner.0,
                        },
                    });
                }
            }
            s if state::is_reserved(s) => {
                violations.push(Violation {
                    offset: at,
                    kind: ViolationKind::ReservedState { state: s },
                });
            }
            s => {
                let unregistered =
                    b.owner != OwnerId::SEGMENT && registered(arena, b.owner).is_none();
                if unregistered && s == ALLOCATED {
                    violations.push(Violation {
                        offset: at,
                        kind: ViolationKind::UnknownOwner {
                            state: s,
                            owner: b.owner.0,
                        },
                    });
                } else if unregistered {
                    audit.report.orphaned_user_blocks += 1;
                }
                let payload = b.size - BLOCK_HEADER_SIZE;
                if b.requested > payload {
                    violations.push(Violation {
                        offset: at,
                        kind: ViolationKind::RequestedExceedsPayload {
                            requested: b.requested,
                            payload,
                        },
                    });
                }
            }
        }
    }
    audit.violations.extend(violations);
}

fn check_participants<A: Arena>(arena: &A, audit: &mut Audit) {
    let seg = arena.segment();
    for (index, slot) in seg.participants().enumerate() {
        let owner = OwnerId::of_slot(index);
        if !live_participant(arena, owner) {
            continue;
        }
        for intent in &slot.carve_intents {
            // Acquire: pairs with the carver's Release when it clears the intent.
            let v = intent.load(Acquire);
            if v != 0 {
                audit.violations.push(Violation {
                    offset: v as u32,
                    kind: ViolationKind::StaleCarveIntent {
                        slot: index,
                        intent: v,
                    },
                });
            }
        }
    }
    // Acquire: pairs with the consolidator's Release when it lets go.
    let holder = seg.consolidator.load(Acquire);
    if holder != 0 && live_participant(arena, OwnerId(holder)) {
        audit.violations.push(Violation {
            offset: 0,
            kind: ViolationKind::ConsolidatorHeld { holder },
        });
    }
}

fn summarize(audit: &mut Audit, top: u32, end: u32) {
    let r = &mut audit.report;
    let mut run = 0u64;
    let mut largest_run = 0u64;
    for b in &audit.chain {
        r.blocks += 1;
        *r.blocks_by_state.entry(b.state).or_default() += 1;
        if b.state == FREE {
            r.free_bytes += b.size as u64;
            r.free_blocks += 1;
            r.largest_free_block = r.largest_free_block.max(b.size as u64);
            run += b.size as u64;
        } else if b.state == CACHED {
            // Free, but only its owner's thread can reuse it; no merge sees it.
            r.free_bytes += b.size as u64;
            r.cached_blocks += 1;
            r.cached_bytes += b.size as u64;
            run = 0;
        } else {
            r.used_bytes += b.size as u64;
            run = 0;
        }
        largest_run = largest_run.max(run);
    }
    let chain_end = audit.chain.last().map(|b| b.end()).unwrap_or(top as u64);
    r.wilderness_bytes = (end as u64).saturating_sub(top as u64);
    r.free_bytes += r.wilderness_bytes;
    r.largest_free_block = r.largest_free_block.max(r.wilderness_bytes);
    if chain_end == top as u64 {
        run += r.wilderness_bytes;
    }
    r.largest_free_run = largest_run.max(run);
    r.fragmentation = if r.free_bytes == 0 {
        0.0
    } else {
        1.0 - r.largest_free_block as f64 / r.free_bytes as f64
    };
    for v in &audit.violations {
        if v.is_stranding() {
            r.stranded_blocks += 1;
            // The chain is in offset order: a binary search keeps this
            // linear-logarithmic however many blocks are stranded.
            r.stranded_bytes += audit
                .chain
                .binary_search_by_key(&v.offset, |b| b.offset)
                .ok()
                .map(|i| audit.chain[i].size as u64)
                .unwrap_or(0);
        }
    }
}
