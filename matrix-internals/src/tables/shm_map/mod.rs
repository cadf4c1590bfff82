//! [`ShmMap`]: a concurrent hash map of variable-size keys (strings or
//! bytes) to dynamic values ([`ShmVec`](crate::dynamic::ShmVec),
//! [`ShmString`], records of them, or any `ShmSafe` value), shared by
//! threads and processes.
//!
//! ```text
//!  map block:  MapHeader | intents[64] | slot 0 | slot 1 | ... | slot n-1   (n = 2^k ≥ 4/3 · capacity)
//!  slot word:  EMPTY | TOMBSTONE | CLAIMED(intent, tag) | LIVE(token of an entry block)
//!  entry:      hash | key_len | value V | key bytes        (written once, then immutable)
//!                        └── V's tokens name its own blocks (buffers, nested strings)
//! ```
//!
//! Open addressing with linear probing over one word per slot; every
//! transition of a slot is one CAS on that word:
//!
//! | from | to | by |
//! |---|---|---|
//! | EMPTY, TOMBSTONE | CLAIMED | an insert of a new key (its first free slot: tombstones are reused) |
//! | CLAIMED | LIVE | the claimant, once its second scan found no rival |
//! | CLAIMED | TOMBSTONE | the claimant giving up, a rival aborting it, or recovery of a dead claimant |
//! | LIVE(e) | LIVE(e') | an insert of an existing key (overwrite) |
//! | LIVE(e) | TOMBSTONE | remove / clear |
//!
//! An entry is never changed after it is published, so "the slot still
//! holds `e`" means "the entry and every block of its value are intact":
//! a writer only frees an entry after its CAS moved the slot away from it.
//!
//! Every decision rests on one slot word, read once and then either acted
//! on by a CAS from that word or confirmed by one:
//!
//! - **Reading an entry.** A scan loads a slot word, then reads the entry
//!   it names; by then the entry may have been unlinked, freed and its
//!   block reused (by anything: a value buffer, another key's entry). So a
//!   read that says "the key's entry" is only acted on by a CAS from that
//!   word (a get's re-validation, an overwrite, an unlink), and a read
//!   that says "another key's" (or cannot be read) is confirmed by a CAS
//!   of the slot from the word onto itself before the scan walks past it;
//!   if that CAS fails, the slot is looked at again. The CAS (a write, not
//!   a load, AcqRel or SeqCst) orders the reads before it ahead of the
//!   CAS that later unlinks the entry, and so ahead of the entry's free:
//!   when it succeeds, the bytes read were the entry's. A lookup therefore
//!   never walks past a key that stays in the map, and a remove racing an
//!   overwrite finds the old entry or the new one.
//! - **Lookups** (get, remove's search) never wait. A get copies the
//!   entry's value, runs the caller's closure on it, then re-validates with
//!   that CAS of the slot from `e` to `e`: if it fails the entry was
//!   replaced or removed meanwhile, so the closure's result is dropped and
//!   the lookup restarts.
//! - **Inserts of a new key** raise `max_probe` to the distance of the
//!   slot they are about to claim, claim it (EMPTY or TOMBSTONE to
//!   CLAIMED), then scan the key's chain a second time (every access
//!   SeqCst). Of two claims for one key, the later one in that single
//!   order sees the earlier one in its second scan: the earlier claim is
//!   raised into `max_probe` before it, and every slot between the home
//!   slot and it was non-EMPTY when its claimant searched, and EMPTY never
//!   comes back. What the later scan sees there decides, one slot word at
//!   a time: the key LIVE — give up the claim and overwrite instead; a
//!   claim for the same hash tag nearer the home slot — give up and retry;
//!   one further away (or of a dead claimant) — abort it by a CAS to
//!   TOMBSTONE, after which its claimant's publishing CAS fails. If that
//!   abort fails, the slot moved on — perhaps to the rival's published
//!   entry — and its new word is judged again. So at most one claim for a
//!   key is ever published, and a key is LIVE in one slot at most.
//! - **Scans stop** at an EMPTY slot or after the longest probe distance
//!   any insert used (`max_probe`, raised before each claim), so
//!   tombstones left by removals do not make every miss a full scan.
//!
//! **Ownership of an entry's blocks.** The inserter builds the entry and
//! its value as its own blocks, records them in an *intent* entry of the
//! map, hands them to the segment (outer blocks first), then links the
//! entry. A remover (or an overwriting insert) records the entry it is
//! about to unlink, unlinks it, frees the value's blocks and the entry,
//! then clears its record. [`ShmMap::recover`] settles the intents of dead
//! participants: a half built entry is freed (its remaining blocks; the
//! allocator's `recover()` frees those the dead one still owned), a linked
//! one is kept, an entry unlinked by a dead remover or replaced by a dead
//! inserter is freed, and the dead one's claims become tombstones. Whether
//! a dead inserter's entry was linked is read from three places in turn —
//! a slot naming it, a live unlinker's record of it, its block freed — so
//! that an entry a live writer is unlinking at that moment counts as
//! linked. Nothing is leaked, nothing is freed while linked.
//!
//! **Progress.** Lookups and removes are lock-free. Inserts of keys with
//! equal hash tags can abort each other; one nearer the home slot always
//! wins, and a claim whose owner is dead is aborted by the next insert
//! that meets it.

mod entry;
mod intent;
mod slot;

use crate::dynamic::{OwnsBlocks, ShmBytes, ShmString};
use crate::shm::{self, checked_region, fault, NotThere};
use crate::sync::{AtomicU32, AtomicU64, Ordering::*};
use crate::tables::{Registry, ShmMapError, TypeFingerprint};
use crossbeam_utils::Backoff;
pub use intent::MapRecovery;
use intent::{Intent, Phase, INTENTS};
use matrix_core::{OwnerId, BLOCK_HEADER_SIZE};
use matrix_handler::{BlockToken, HandlerError, HandlerFunctions, ShmSafe};
use slot::{Slot, TOMBSTONE};
use std::fmt;
use std::marker::PhantomData;

const MAGIC: u64 = u64::from_le_bytes(*b"MXSHMAP1");
const TYPE_ID: u64 = crate::tables::type_id("matrix-internals::ShmMap v1");
/// Largest capacity of a [`ShmMap`] (slots stay below 2^24, so a claim's
/// 24-bit hash tag fixes the key's home slot).
pub const MAX_SHM_MAP_CAPACITY: u32 = 1 << 22;
/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 1 << 20;
/// Claims a lower one made us give up before we abort it anyway (a claim
/// held that long belongs to a participant that is stuck or gone, or to an
/// owner id reused since; aborting any claim is always safe).
const PATIENCE: u32 = 10_000;

/// The kinds of keys a [`ShmMap`] holds: [`ShmString`] (keys are `&str`)
/// and [`ShmBytes`] (keys are `&[u8]`). The key's bytes are stored inline
/// in the entry, so a key costs no block of its own.
pub trait MapKey: sealed::Sealed {
    /// What callers pass as a key.
    type Borrowed: ?Sized;
    /// The key's bytes.
    fn bytes(key: &Self::Borrowed) -> &[u8];
    /// The key stored as `bytes`, if they are one (UTF-8 for strings).
    fn from_bytes(bytes: &[u8]) -> Option<&Self::Borrowed>;
    #[doc(hidden)]
    const KIND: u64;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::dynamic::ShmString {}
    impl Sealed for crate::dynamic::ShmBytes {}
}

impl MapKey for ShmString {
    type Borrowed = str;
    fn bytes(key: &str) -> &[u8] {
        key.as_bytes()
    }
    fn from_bytes(bytes: &[u8]) -> Option<&str> {
        std::str::from_utf8(bytes).ok()
    }
    const KIND: u64 = 1;
}

impl MapKey for ShmBytes {
    type Borrowed = [u8];
    fn bytes(key: &[u8]) -> &[u8] {
        key
    }
    fn from_bytes(bytes: &[u8]) -> Option<&[u8]> {
        Some(bytes)
    }
    const KIND: u64 = 2;
}

#[repr(C)]
struct MapHeader {
    magic: AtomicU64,
    capacity: AtomicU32,
    /// Slots (a power of two, below 2^24).
    slots: AtomicU32,
    /// Fingerprint of (K, V), checked on open.
    types: AtomicU64,
    /// The longest probe distance any insert claimed at (never decreases).
    max_probe: AtomicU32,
    _pad: AtomicU32,
    _reserved: [AtomicU64; 4],
}

const HEADER_BYTES: u64 = std::mem::size_of::<MapHeader>() as u64;
const INTENT_BYTES: u64 = (std::mem::size_of::<Intent>() * INTENTS) as u64;
const _: () = assert!(HEADER_BYTES == 64 && std::mem::align_of::<MapHeader>() == 8);

/// A concurrent map of `K` keys ([`ShmString`] or [`ShmBytes`]) to `V`
/// values in a block of the segment; see the module docs.
pub struct ShmMap<K, V, H: HandlerFunctions> {
    handler: H,
    offset: u32,
    capacity: u32,
    mask: u64,
    /// This participant's identity in an intent's control word.
    me: u64,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V, H: HandlerFunctions + Clone> Clone for ShmMap<K, V, H> {
    fn clone(&self) -> Self {
        ShmMap {
            handler: self.handler.clone(),
            ..*self
        }
    }
}

impl<K, V, H: HandlerFunctions> fmt::Debug for ShmMap<K, V, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShmMap")
            .field("key", &std::any::type_name::<K>())
            .field("value", &std::any::type_name::<V>())
            .field("offset", &self.offset)
            .field("capacity", &self.capacity)
            .finish()
    }
}

/// Where a search ended.
enum Found {
    /// The key's slot and the entry word it holds.
    At(u64, u64),
    /// Not there; the first reusable slot of the chain and its word.
    Absent(Option<(u64, u64)>),
}

/// Whose entry a LIVE slot holds.
enum Holds {
    /// The key's (to be confirmed by the caller's CAS from that word).
    Key,
    /// Another key's: confirmed, the slot still held it after the read.
    Other,
    /// The slot changed while its entry was read; it holds this word now.
    Moved(u64),
}

/// What the second scan after a claim found.
enum Rivals {
    None,
    /// The key is LIVE elsewhere: overwrite it instead.
    KeyExists,
    /// A live claim for the same tag nearer the home slot: give up.
    Yield,
}

impl<K: MapKey, V: ShmSafe + Copy + OwnsBlocks, H: HandlerFunctions> ShmMap<K, V, H> {
    const ALIGN_OK: () = assert!(
        std::mem::align_of::<V>() <= 16,
        "ShmMap values are at most 16-aligned"
    );

    /// The layout of V and the kind of K, the same in every build.
    fn types() -> u64 {
        let layout = [
            K::KIND,
            std::mem::size_of::<V>() as u64,
            std::mem::align_of::<V>() as u64,
        ];
        layout
            .iter()
            .fold(TYPE_ID, |h, &x| (h ^ x).wrapping_mul(0x0000_0100_0000_01B3))
    }

    fn fingerprint() -> TypeFingerprint {
        TypeFingerprint {
            size: HEADER_BYTES as u32,
            align: 8,
            type_id: Self::types(),
        }
    }

    /// Creates an unnamed map for at least `capacity` keys; the block
    /// belongs to the segment. Hand [`offset`](Self::offset) to other
    /// processes, or use [`open_or_create`](Self::open_or_create).
    ///
    /// # Errors
    /// [`ShmMapError::InvalidCapacity`]; out of memory.
    pub fn create(handler: H, capacity: u32) -> Result<Self, ShmMapError> {
        let offset = Self::allocate(&handler, capacity)?;
        handler
            .matrix()
            .set_owner(offset - BLOCK_HEADER_SIZE, None, OwnerId::SEGMENT)
            .map_err(HandlerError::from)?;
        Self::open_at(handler, offset)
    }

    /// Opens `name` in the root registry, or creates it for `capacity`
    /// keys; `true` if this call created it. Exactly one of several racing
    /// processes creates it.
    ///
    /// # Errors
    /// As [`create`](Self::create); a name registered for other types.
    pub fn open_or_create(
        handler: H,
        name: &str,
        capacity: u32,
    ) -> Result<(Self, bool), ShmMapError> {
        Self::check_capacity(capacity)?;
        let (offset, created) =
            Registry::root(&handler)?.find_or_create_raw(name, Self::fingerprint(), || {
                Self::allocate(&handler, capacity).map_err(|e| match e {
                    ShmMapError::Handler(h) => h,
                    other => unreachable!("capacity validated above: {other}"),
                })
            })?;
        Ok((Self::open_at(handler, offset)?, created))
    }

    /// Opens the map registered under `name`.
    ///
    /// # Errors
    /// Not registered, registered for other types.
    pub fn open(handler: H, name: &str) -> Result<Self, ShmMapError> {
        let offset = Registry::root(&handler)?.find(name, Self::fingerprint())?;
        Self::open_at(handler, offset)
    }

    /// Opens the map whose payload starts at `offset`, checking the block,
    /// the header and the key and value types.
    ///
    /// # Errors
    /// [`ShmMapError::NotAMap`].
    pub fn open_at(handler: H, offset: u32) -> Result<Self, ShmMapError> {
        #[allow(clippy::let_unit_value)]
        let () = Self::ALIGN_OK;
        let not = |what| ShmMapError::NotAMap { offset, what };
        // SAFETY: MapHeader is repr(C), atomics and integers, magic first.
        let hdr: &MapHeader =
            unsafe { shm::structure_header(&handler, offset, MAGIC) }.map_err(|e| match e {
                NotThere::NoBlock => not("no live block of a map's size there"),
                NotThere::WrongMagic => not("wrong magic"),
            })?;
        if hdr.types.load(Relaxed) != Self::types() {
            return Err(not("created for other key or value types"));
        }
        // Relaxed: ordered after the magic's Acquire load above.
        let (capacity, slots) = (hdr.capacity.load(Relaxed), hdr.slots.load(Relaxed));
        if capacity == 0
            || capacity > MAX_SHM_MAP_CAPACITY
            || !slots.is_power_of_two()
            || slots >= 1 << 24
            || slots < capacity
        {
            return Err(not("impossible capacity"));
        }
        checked_region(&handler, offset, Self::block_bytes(slots as u64))
            .map_err(|_| not("block smaller than its recorded capacity"))?;
        let me = intent::identity(handler.matrix());
        Ok(ShmMap {
            handler,
            offset,
            capacity,
            mask: slots as u64 - 1,
            me,
            _types: PhantomData,
        })
    }

    fn check_capacity(capacity: u32) -> Result<u64, ShmMapError> {
        if capacity == 0 || capacity > MAX_SHM_MAP_CAPACITY {
            return Err(ShmMapError::InvalidCapacity {
                requested: capacity,
            });
        }
        Ok(((capacity as u64 * 4).div_ceil(3))
            .next_power_of_two()
            .max(4))
    }

    const fn block_bytes(slots: u64) -> u64 {
        HEADER_BYTES + INTENT_BYTES + slots * 8
    }

    fn allocate(handler: &H, capacity: u32) -> Result<u32, ShmMapError> {
        let slots = Self::check_capacity(capacity)?;
        let bytes = Self::block_bytes(slots);
        let bytes32 = u32::try_from(bytes).map_err(|_| ShmMapError::InvalidCapacity {
            requested: capacity,
        })?;
        let offset = handler.allocate_raw(bytes32)?.offset();
        // SAFETY: freshly allocated payload of `bytes` bytes, known to nobody
        // else yet; all-zero is an idle intent and an EMPTY slot.
        unsafe {
            std::ptr::write_bytes(
                handler.base_ptr().add(offset as usize) as *mut u8,
                0,
                bytes as usize,
            )
        };
        // SAFETY: the header at the start of the payload just allocated.
        let hdr: &MapHeader = unsafe { shm::shared(handler, offset as u64) };
        // Relaxed (all of these): published by the magic's Release store.
        hdr.capacity.store(capacity, Relaxed);
        hdr.slots.store(slots as u32, Relaxed);
        hdr.types.store(Self::types(), Relaxed);
        // Release: a process that Acquires the magic sees the whole map.
        hdr.magic.store(MAGIC, Release);
        Ok(offset)
    }

    /// Payload offset of the map block.
    pub fn offset(&self) -> u32 {
        self.offset
    }

    /// Keys the map was created for (it has room for at least these; its
    /// slot count, a power of two at least 4/3 of it, bounds it hard).
    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// The handler the map works through.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// Keys in the map: a walk over every slot (exact at quiescence).
    pub fn len(&self) -> usize {
        (0..=self.mask)
            .filter(|&i| matches!(self.decode(self.slot(i).load(Acquire)), Slot::Live(_)))
            .count()
    }

    /// Whether [`len`](Self::len) is 0.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn header(&self) -> &MapHeader {
        // SAFETY: validated at open_at; the handler keeps the mapping alive.
        unsafe { shm::shared(&self.handler, self.offset as u64) }
    }

    fn intent(&self, i: usize) -> &Intent {
        debug_assert!(i < INTENTS);
        let at = self.offset as u64 + HEADER_BYTES + (i * std::mem::size_of::<Intent>()) as u64;
        // SAFETY: i < INTENTS, inside the region validated at open_at;
        // Intent is atomics only, 8-aligned.
        unsafe { shm::shared(&self.handler, at) }
    }

    #[inline]
    fn slot(&self, i: u64) -> &AtomicU64 {
        debug_assert!(i <= self.mask);
        let at = self.offset as u64 + HEADER_BYTES + INTENT_BYTES + i * 8;
        // SAFETY: i < slots, inside the region validated at open_at; 8-aligned.
        unsafe { shm::shared(&self.handler, at) }
    }

    #[inline]
    fn decode(&self, word: u64) -> Slot {
        slot::decode(word, INTENTS)
    }

    fn token(&self, word: u64) -> BlockToken {
        BlockToken::from_word(word, self.handler.segment_nonce())
    }

    /// The slots a key's search visits, home first: up to the longest
    /// probe distance ever claimed at (and at most every slot).
    fn chain(&self, hash: u64) -> impl Iterator<Item = u64> {
        // SeqCst: in the single order with the claims' raises of max_probe
        // (see `link`): a claim this search must see raised it first.
        let reach = (self.header().max_probe.load(SeqCst) as u64).min(self.mask);
        let (home, mask) = (hash & self.mask, self.mask);
        (0..=reach).map(move |d| (home + d) & mask)
    }

    fn distance(&self, hash: u64, index: u64) -> u64 {
        index.wrapping_sub(hash & self.mask) & self.mask
    }

    fn key_bytes(key: &K::Borrowed) -> Result<&[u8], ShmMapError> {
        let bytes = K::bytes(key);
        if bytes.len() > MAX_KEY_LEN {
            return Err(ShmMapError::KeyTooLong { len: bytes.len() });
        }
        Ok(bytes)
    }

    /// Whether the entry `word`, read from slot `i`, is `key`'s.
    ///
    /// The entry's bytes are read after its slot word, so they may come
    /// from a block freed and reused meanwhile. A match needs no check
    /// here: every caller acts on it by a CAS of the slot from `word`, or
    /// only retries. A mismatch (or an unreadable entry) is confirmed by a
    /// CAS of the slot from `word` onto itself, as in
    /// [`get_with`](Self::get_with): if it succeeds the bytes were read
    /// before any unlink of the entry, so they were the entry's; if it
    /// fails the slot holds the word returned, to be looked at again.
    fn holds(&self, i: u64, word: u64, hash: u64, key: &[u8]) -> Result<Holds, ShmMapError> {
        let readable = match entry::read::<V, H>(&self.handler, self.token(word)) {
            Some(e) if e.hash == hash && e.key == key => return Ok(Holds::Key),
            Some(_) => true,
            None => false,
        };
        // SeqCst: a write, so its Release half orders the reads above
        // before any later CAS that unlinks the entry (and so before the
        // entry's free); in the one order with the claims and scans.
        // SeqCst on failure: the slot's newer word is read in that order.
        match self.slot(i).compare_exchange(word, word, SeqCst, SeqCst) {
            Ok(_) if readable => Ok(Holds::Other),
            Ok(_) => Err(ShmMapError::Corrupted {
                slot: i as u32,
                what: "names no live entry",
            }),
            Err(now) => Ok(Holds::Moved(now)),
        }
    }

    /// Searches `key`'s chain. An entry that cannot be read while its slot
    /// still names it is corruption; if the slot moved on, the search
    /// restarts (the entry was removed meanwhile).
    fn search(
        &self,
        hash: u64,
        key: &[u8],
        order: crate::sync::Ordering,
    ) -> Result<Found, ShmMapError> {
        'restart: loop {
            let mut reusable = None;
            for i in self.chain(hash) {
                // Acquire (at least): pairs with the CAS that published an
                // entry, so its bytes are visible.
                let w = self.slot(i).load(order);
                fault::at(fault::MAP_SLOT_READ);
                match self.decode(w) {
                    Slot::Empty => return Ok(Found::Absent(Some(*reusable.get_or_insert((i, w))))),
                    Slot::Tombstone => {
                        reusable.get_or_insert((i, w));
                    }
                    Slot::Claimed { .. } => {}
                    Slot::Live(word) => match self.holds(i, word, hash, key)? {
                        Holds::Key => return Ok(Found::At(i, word)),
                        Holds::Other => {}
                        Holds::Moved(_) => continue 'restart,
                    },
                }
            }
            // Past the longest chain: the first never-used slot beyond it
            // is reusable too (found by scanning on).
            if reusable.is_none() {
                reusable = self.first_free_beyond(hash);
            }
            return Ok(Found::Absent(reusable));
        }
    }

    /// The first EMPTY or TOMBSTONE slot past the chain's current reach.
    fn first_free_beyond(&self, hash: u64) -> Option<(u64, u64)> {
        let home = hash & self.mask;
        // SeqCst: as in `chain`.
        let reach = self.header().max_probe.load(SeqCst) as u64;
        (reach + 1..=self.mask).find_map(|d| {
            let i = (home + d) & self.mask;
            // SeqCst: the claim CAS that follows depends on it only by value.
            let w = self.slot(i).load(SeqCst);
            matches!(self.decode(w), Slot::Empty | Slot::Tombstone).then_some((i, w))
        })
    }

    /// Runs `f` on the value of `key` and returns its result, or `None` if
    /// the key is absent.
    ///
    /// `f` reads the value in place (`v.as_slice(map.handler())`, …). If
    /// the key is removed or replaced while `f` runs, that run's result is
    /// dropped and the lookup starts again, so `f` may run more than once
    /// and must not have effects beyond its result; a result returned was
    /// computed from an entry that was in the map until after `f` finished.
    /// Errors `f` meets in such a dropped run (a freed buffer) are part of
    /// its dropped result.
    ///
    /// # Errors
    /// [`ShmMapError::KeyTooLong`]; [`ShmMapError::Corrupted`].
    pub fn get_with<R>(
        &self,
        key: &K::Borrowed,
        mut f: impl FnMut(&V) -> R,
    ) -> Result<Option<R>, ShmMapError> {
        let key = Self::key_bytes(key)?;
        let hash = slot::hash(key);
        loop {
            let Found::At(i, word) = self.search(hash, key, Acquire)? else {
                return Ok(None);
            };
            let Some(e) = entry::read::<V, H>(&self.handler, self.token(word)) else {
                continue;
            };
            let r = f(&e.value);
            // AcqRel CAS of the word onto itself: if it succeeds, it comes
            // before any CAS that moves the slot away from this entry in
            // the slot's order, and its Release half makes everything read
            // above happen before that CAS — and so before the entry's
            // blocks are freed and reused. Acquire on failure: the retry
            // reads the newer slot.
            if self
                .slot(i)
                .compare_exchange(word, word, AcqRel, Acquire)
                .is_ok()
            {
                return Ok(Some(r));
            }
        }
    }

    /// A copy of the value of `key` (for values whose meaning does not
    /// depend on other blocks, e.g. numbers or a `ShmSafe` record of them).
    /// For containers use [`get_with`](Self::get_with): a copied `ShmVec`
    /// names a buffer that a later remove frees.
    ///
    /// # Errors
    /// As [`get_with`](Self::get_with).
    pub fn get(&self, key: &K::Borrowed) -> Result<Option<V>, ShmMapError> {
        self.get_with(key, |v| *v)
    }

    /// Whether `key` is in the map.
    ///
    /// # Errors
    /// As [`get_with`](Self::get_with).
    pub fn contains_key(&self, key: &K::Borrowed) -> Result<bool, ShmMapError> {
        Ok(self.get_with(key, |_| ())?.is_some())
    }

    /// Sets `key` to `value`. The map takes `value` and every block it
    /// owns (they become the segment's); the value it replaces is freed,
    /// with its blocks. Returns whether a value was replaced.
    ///
    /// # Errors
    /// [`ShmMapError::Full`] (no free slot in the key's chain),
    /// [`ShmMapError::KeyTooLong`], [`ShmMapError::Busy`], out of memory,
    /// or [`ShmMapError::Value`] when a block of `value` is freed, foreign
    /// or another live participant's. On an error the map is unchanged and
    /// `value`'s blocks are still the caller's.
    pub fn insert(&self, key: &K::Borrowed, value: V) -> Result<bool, ShmMapError> {
        let key = Self::key_bytes(key)?;
        let hash = slot::hash(key);
        let ix = self.claim_intent(Phase::Building)?;
        let token = match entry::build(&self.handler, hash, key, value) {
            Ok(t) => t,
            Err(e) => {
                self.release_intent(ix);
                return Err(e.into());
            }
        };
        let it = self.intent(ix);
        // SeqCst: before the hand-over below, for a recoverer that reads it
        // after judging us dead.
        it.new.store(token.word(), SeqCst);
        if let Err(e) = entry::hand_over(&self.handler, token, &value) {
            entry::free_token(&self.handler, token);
            self.release_intent(ix);
            return Err(ShmMapError::Value(e));
        }
        // SeqCst: the hand-over is complete before any slot can name the entry.
        it.ctl.store(self.me | Phase::Ready as u64, SeqCst);
        fault::at(fault::MAP_ENTRY_READY);
        let result = self.link(ix, hash, key, token.word());
        if result.is_err() {
            entry::give_back(&self.handler, token, &value);
        }
        self.release_intent(ix);
        result
    }

    /// Links the entry `new` (handed over, recorded in intent `ix`) under
    /// its key: overwrite, or claim + second scan + publish.
    fn link(&self, ix: usize, hash: u64, key: &[u8], new: u64) -> Result<bool, ShmMapError> {
        let tag = (hash & slot::TAG_MASK) as u32;
        let my_claim = slot::claim(ix, tag);
        let it = self.intent(ix);
        let backoff = Backoff::new();
        let mut yielded = 0u32;
        loop {
            match self.search(hash, key, SeqCst)? {
                Found::At(i, old) => {
                    // SeqCst: recorded before the CAS that may unlink `old`.
                    it.old.store(old, SeqCst);
                    // SeqCst: one order with the claims and second scans.
                    if self
                        .slot(i)
                        .compare_exchange(old, new, SeqCst, SeqCst)
                        .is_ok()
                    {
                        fault::at(fault::MAP_LINKED);
                        entry::free_entry::<V, H>(&self.handler, self.token(old));
                        return Ok(true);
                    }
                    // SeqCst: as above.
                    it.old.store(0, SeqCst);
                }
                Found::Absent(None) => {
                    return Err(ShmMapError::Full {
                        capacity: self.capacity,
                    })
                }
                Found::Absent(Some((c, seen))) => {
                    // SeqCst: the reach is raised before the claim, so any
                    // search or second scan that could miss the claim
                    // (it read the old reach) is earlier than the claim in
                    // the single order — and its own claim is then seen by
                    // our second scan.
                    self.header()
                        .max_probe
                        .fetch_max(self.distance(hash, c) as u32, SeqCst);
                    // SeqCst: the claim and every load of the second scans
                    // are in one order (the Dekker argument of the module docs).
                    if self
                        .slot(c)
                        .compare_exchange(seen, my_claim, SeqCst, SeqCst)
                        .is_err()
                    {
                        continue;
                    }
                    fault::at(fault::MAP_SLOT_CLAIMED);
                    match self.rivals(c, hash, tag, key, ix, yielded >= PATIENCE) {
                        Rivals::None => {
                            // SeqCst: publishes the entry (its bytes were
                            // written before) in the claims' order.
                            if self
                                .slot(c)
                                .compare_exchange(my_claim, new, SeqCst, SeqCst)
                                .is_ok()
                            {
                                fault::at(fault::MAP_LINKED);
                                return Ok(false);
                            }
                            // A rival aborted our claim: search again.
                        }
                        outcome => {
                            // SeqCst: as for the claim.
                            let _ = self
                                .slot(c)
                                .compare_exchange(my_claim, TOMBSTONE, SeqCst, Relaxed);
                            if matches!(outcome, Rivals::Yield) {
                                yielded += 1;
                                backoff.snooze();
                            }
                        }
                    }
                }
            }
        }
    }

    /// The second scan after claiming slot `c`: the key LIVE elsewhere, or
    /// a rival claim for the same tag (aborted if it is further from home
    /// or dead; with `force`, always). A slot that changes under a
    /// decision (an abort CAS that fails, an entry that moved while it was
    /// read) is looked at again with its new word: a rival published
    /// between our read and our abort is the key LIVE.
    fn rivals(&self, c: u64, hash: u64, tag: u32, key: &[u8], ix: usize, force: bool) -> Rivals {
        let mine = self.distance(hash, c);
        for i in self.chain(hash) {
            if i == c {
                continue;
            }
            // SeqCst: see `link`.
            let mut w = self.slot(i).load(SeqCst);
            fault::at(fault::MAP_SLOT_READ);
            loop {
                match self.decode(w) {
                    Slot::Empty => {
                        if self.distance(hash, i) < mine {
                            // Not reachable past a never-used slot: impossible
                            // for a slot claimed as a chain's first free one,
                            // but cheap to refuse.
                            return Rivals::Yield;
                        }
                        return Rivals::None;
                    }
                    Slot::Live(word) => match self.holds(i, word, hash, key) {
                        Ok(Holds::Key) => return Rivals::KeyExists,
                        Ok(Holds::Moved(now)) => {
                            w = now;
                            continue;
                        }
                        // Another key's entry, or one the search that
                        // follows a yield reports as corrupted.
                        Ok(Holds::Other) => {}
                        Err(_) => return Rivals::Yield,
                    },
                    Slot::Claimed { intent, tag: t } if t == tag && intent != ix => {
                        let nearer = self.distance(hash, i) < mine;
                        if nearer && !force && !self.claim_is_dead(intent) {
                            return Rivals::Yield;
                        }
                        // SeqCst: as for the claim; SeqCst on failure: the
                        // word it moved on to is judged in that order.
                        if let Err(now) =
                            self.slot(i).compare_exchange(w, TOMBSTONE, SeqCst, SeqCst)
                        {
                            w = now;
                            continue;
                        }
                    }
                    Slot::Tombstone | Slot::Claimed { .. } => {}
                }
                break;
            }
        }
        Rivals::None
    }

    /// Removes `key`, freeing its value (with every block it owns) and its
    /// entry; its slot becomes a tombstone that later inserts reuse.
    /// Returns whether the key was there.
    ///
    /// # Errors
    /// [`ShmMapError::KeyTooLong`], [`ShmMapError::Busy`],
    /// [`ShmMapError::Corrupted`].
    pub fn remove(&self, key: &K::Borrowed) -> Result<bool, ShmMapError> {
        let key = Self::key_bytes(key)?;
        let hash = slot::hash(key);
        let ix = self.claim_intent(Phase::Removing)?;
        let result = loop {
            match self.search(hash, key, Acquire) {
                Ok(Found::At(i, word)) => {
                    if self.unlink(ix, i, word) {
                        break Ok(true);
                    }
                }
                Ok(Found::Absent(_)) => break Ok(false),
                Err(e) => break Err(e),
            }
        };
        self.release_intent(ix);
        result
    }

    /// Unlinks the entry `word` from slot `i` (recorded in intent `ix`
    /// first) and frees it; `false` if the slot moved on.
    fn unlink(&self, ix: usize, i: u64, word: u64) -> bool {
        let it = self.intent(ix);
        // SeqCst: recorded before the CAS, for a recoverer.
        it.old.store(word, SeqCst);
        // SeqCst: in one order with the claims and second scans; its
        // Acquire half pairs with a get's re-validating CAS (see get_with).
        if self
            .slot(i)
            .compare_exchange(word, TOMBSTONE, SeqCst, Relaxed)
            .is_err()
        {
            // SeqCst: as above.
            it.old.store(0, SeqCst);
            return false;
        }
        fault::at(fault::MAP_UNLINKED);
        entry::free_entry::<V, H>(&self.handler, self.token(word));
        // SeqCst: as above.
        it.old.store(0, SeqCst);
        true
    }

    /// Removes every key (each removal as by [`remove`](Self::remove));
    /// returns how many were removed.
    ///
    /// # Errors
    /// [`ShmMapError::Busy`].
    pub fn clear(&self) -> Result<usize, ShmMapError> {
        let ix = self.claim_intent(Phase::Removing)?;
        let mut removed = 0;
        for i in 0..=self.mask {
            // Acquire: as in `search`.
            let w = self.slot(i).load(Acquire);
            if let Slot::Live(word) = self.decode(w) {
                removed += self.unlink(ix, i, word) as usize;
            }
        }
        self.release_intent(ix);
        Ok(removed)
    }

    /// Calls `f` with a copy of every key and value.
    ///
    /// Weakly consistent under concurrent writes: each pair passed to `f`
    /// was in the map when it was copied (its slot still named the entry
    /// after the copy), so `f` never sees a key or value read from freed
    /// memory; a key that stays in the map during the walk is passed once
    /// (with the value before or after a concurrent replace); a key
    /// removed or inserted during the walk may be passed or not. As with
    /// [`get`](Self::get), blocks the copied value names (a `ShmVec`'s
    /// buffer) are freed if its key is removed or replaced meanwhile.
    pub fn for_each(&self, mut f: impl FnMut(&K::Borrowed, &V)) {
        let mut key = Vec::new();
        for i in 0..=self.mask {
            // Acquire: as in `search`.
            let mut w = self.slot(i).load(Acquire);
            while let Slot::Live(word) = self.decode(w) {
                let value = entry::read::<V, H>(&self.handler, self.token(word)).map(|e| {
                    key.clear();
                    key.extend_from_slice(e.key);
                    e.value
                });
                // AcqRel: as in get_with, the copy was taken before any
                // unlink of the entry if this succeeds. Acquire on failure:
                // the slot's newer word is looked at next.
                match self.slot(i).compare_exchange(word, word, AcqRel, Acquire) {
                    Ok(_) => {
                        if let (Some(v), Some(k)) = (value, K::from_bytes(&key)) {
                            f(k, &v);
                        }
                        break;
                    }
                    Err(now) => w = now,
                }
            }
        }
    }

    /// Removes every key and frees the map's block. Needs every other user
    /// of the map to be done with it (their handles then name a freed block
    /// and are refused when they open it again).
    ///
    /// # Errors
    /// As [`clear`](Self::clear); freeing the block.
    pub fn destroy(self) -> Result<(), ShmMapError> {
        self.clear()?;
        self.handler
            .matrix()
            .free(self.offset - BLOCK_HEADER_SIZE, None)
            .map_err(HandlerError::from)?;
        Ok(())
    }
}
