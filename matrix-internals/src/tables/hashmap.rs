//! [`ShmHashMap`]: a fixed-capacity hash map of plain-old-data keys and
//! values, living in one block and shared by threads and processes.
//!
//! ```text
//!  MapHeader | slot 0 | slot 1 | ... | slot n-1        (n = power of two ≥ 4/3 · capacity)
//!  slot:  ctl | home lock | key words | value buffer A | value buffer B
//!  ctl:   version (32) | lock holder (28) | state: EMPTY / LIVE / TOMBSTONE | CURRENT | LOCKED
//!  home lock: 0, or the holder inserting a new key whose home is this slot
//! ```
//!
//! Open addressing with linear probing. Everything a decision about a slot
//! depends on — its state, whether it is locked, which value buffer is
//! current, its version — is one word, `ctl`, changed by CAS (to lock) or
//! by the lock holder's single Release store (to commit and unlock):
//!
//! | from | to | by |
//! |---|---|---|
//! | EMPTY, TOMBSTONE | TOMBSTONE + LOCKED (a claim) | an insert of a new key, holding the key's home lock |
//! | TOMBSTONE + LOCKED | LIVE | the claimant: key and value written, version + 1 |
//! | LIVE | LIVE + LOCKED | an update, overwrite or remove of the slot's key |
//! | LIVE + LOCKED | LIVE | the writer: the other value buffer made current, version + 1 |
//! | LIVE + LOCKED | REMOVING + LOCKED | a remove, version + 1: the key is gone |
//! | REMOVING + LOCKED | TOMBSTONE | the remover, once the key's room is given back: the slot is free for any key |
//! | any + LOCKED by a dead holder | the same, LOCKED by the taker | whoever needs the slot next |
//! | TOMBSTONE + LOCKED by a dead holder | TOMBSTONE | an insert that found no room: the claim's room is given back |
//! | REMOVING + LOCKED by a dead holder | TOMBSTONE (or claimed) | an insert that found no room (or needs the slot); no room is given back |
//!
//! A slot never returns to EMPTY, so EMPTY ends every probe chain; the
//! slot's key words change only while it is a claimed tombstone.
//!
//! - **Lookups** (get, iter, and the searches of writers) never wait.
//!   They load `ctl`, copy the key words and the current value buffer,
//!   and load `ctl` again: if its committed bits (version, state, CURRENT)
//!   are unchanged, the copy is one snapshot of that slot — every change
//!   of a key or value commits a new version. So a get never returns the
//!   value of a key that replaced its key in a reused slot: the reuse
//!   committed twice (the remove, then the new key) in between. A changed
//!   word means the copy is retried. Searches skip tombstones and stop at
//!   an EMPTY slot or past the longest probe distance any claim used.
//! - **New keys** are created only by the holder of the key's *home lock*
//!   (a word of the key's home slot). Holding it, the inserter scans the
//!   key's whole chain; only if the key is not LIVE in it does it claim the
//!   first free slot (one CAS of that slot's `ctl`), write key and value
//!   and commit LIVE. Two inserts of one key serialize on its home lock,
//!   so the second finds the first's key and overwrites it: a key is never
//!   LIVE twice, even when one insert could reuse a tombstone nearer the
//!   home slot than the key's live slot.
//! - **Values** are double-buffered. A writer of a LIVE slot locks it
//!   (one CAS), checks under the lock that the slot still holds its key,
//!   writes the buffer that is *not* current, then commits: flips CURRENT
//!   and bumps the version (or turns the slot into a tombstone) in one
//!   Release store. Readers keep reading the current buffer meanwhile.
//!   Writers of the same key serialize on the lock for the time of one
//!   copy; inserts of new keys of one home slot serialize on its home lock.
//! - **Dead holders.** A lock (a slot's or a home lock) whose holder is
//!   dead — its participant slot claimed again since, or its liveness lock
//!   free; unknown counts as alive — is taken over by the next participant
//!   that needs it. A dead
//!   writer's half-written buffer was never current, so the committed
//!   value stands; a dead claimant's slot is a tombstone again, and the
//!   room it reserved is given back. A participant killed between two
//!   adjacent steps — an insert between taking room and claiming a slot,
//!   a remove between its commit and giving its room back — leaves no
//!   trace that says whether the room was given, so it is kept: the map
//!   holds one key fewer from then on (the safe side: never more than
//!   `capacity`).
//!
//! `capacity` bounds the keys the map holds plus the inserts of new keys
//! in flight: room is a counter in the map header, taken before a claim
//! and given back by a remove. A remove keeps its slot locked as REMOVING
//! from its commit until its room is back (and unlocks it just after), so
//! an insert refused for room, or finding no free slot, can see it and
//! wait: [`MapError::Full`] means the map was full at a moment of the
//! insert, never that a committed remove had not yet given its room back
//! or its slot (see `settle_room` and `create_key`).
//!
//! Every operation on one key is linearizable: insert/update/remove at the
//! Release store that commits them, a get that finds the key at the first
//! load of `ctl` of the copy it kept. A key never moves while present (it
//! leaves a slot only by a remove), so a key present for the whole of a
//! search is in a slot the search reads; a miss is linearized at a moment
//! of its search when the key was absent. [`iter`](ShmHashMap::iter) is
//! weakly consistent: under concurrent writes it may skip a key, or list
//! one removed and inserted again elsewhere twice. Keys compare by their
//! bytes.

mod ctl;

use crate::shm::{self, checked_region, fault, NotThere};
use crate::sync::{fence, AtomicU32, AtomicU64, Ordering::*};
use crate::tables::{MapError, Registry, TypeFingerprint};
use crossbeam_utils::Backoff;
use ctl::{COMMITTED, EMPTY, LIVE, LOCKED, REMOVING, TOMBSTONE};
use matrix_core::{OwnerId, BLOCK_HEADER_SIZE};
use matrix_handler::{HandlerError, HandlerFunctions, Pod};
use std::fmt;
use std::marker::PhantomData;

pub(crate) const MAP_MAGIC: u64 = u64::from_le_bytes(*b"MXHMAP03");
/// Largest number of keys one map may hold.
pub const MAX_MAP_CAPACITY: u32 = 1 << 26;
const MAP_TYPE_ID: u64 = crate::tables::type_id("matrix-internals::ShmHashMap v3");

#[repr(C)]
struct MapHeader {
    magic: AtomicU64,
    /// Keys the map may hold.
    capacity: AtomicU32,
    /// Slots (a power of two).
    slots: AtomicU32,
    key_size: AtomicU32,
    value_size: AtomicU32,
    /// Fingerprint of (K, V), checked on open.
    types: AtomicU64,
    /// Room taken, low 32 bits: LIVE keys, plus inserts of new keys and
    /// removes in flight; bounded by `capacity`. High 32 bits: a count of
    /// the changes of the low ones, so that two loads of the same word
    /// prove that no room was taken or given back in between.
    room: AtomicU64,
    /// The longest probe distance any claim used (never decreases).
    max_probe: AtomicU32,
    _pad: u32,
    _reserved: [u64; 2],
}

const HEADER_BYTES: u64 = std::mem::size_of::<MapHeader>() as u64;
const _: () = assert!(HEADER_BYTES == 64 && std::mem::align_of::<MapHeader>() == 8);

/// A fixed-capacity hash map of `K` → `V` in a block of the segment,
/// whose removed slots are reused; see the module docs.
pub struct ShmHashMap<K, V, H: HandlerFunctions> {
    handler: H,
    offset: u32,
    capacity: u32,
    mask: u64,
    /// This participant's identity in a lock word.
    me: u32,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V, H: HandlerFunctions + Clone> Clone for ShmHashMap<K, V, H> {
    fn clone(&self) -> Self {
        ShmHashMap {
            handler: self.handler.clone(),
            ..*self
        }
    }
}

impl<K, V, H: HandlerFunctions> fmt::Debug for ShmHashMap<K, V, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShmHashMap")
            .field("key", &std::any::type_name::<K>())
            .field("value", &std::any::type_name::<V>())
            .field("offset", &self.offset)
            .field("capacity", &self.capacity)
            .finish()
    }
}

/// Hands a locked slot back with its committed word `committed` when
/// dropped (only on a panic: the normal path forgets it and commits).
struct Unlock<'a> {
    ctl: &'a AtomicU64,
    committed: u64,
}

impl Drop for Unlock<'_> {
    fn drop(&mut self) {
        // Release: like every hand-back, keeps the holders' chain ordered.
        self.ctl.store(self.committed, Release);
    }
}

/// What a validated look at one slot found.
enum View<V> {
    /// Never used: the end of every chain through it.
    Empty(u64),
    /// A tombstone nobody holds: free for a claim from this word.
    Free(u64),
    /// A tombstone claimed by the holder in this word, or a slot whose
    /// remover holds it until its room is back (REMOVING).
    Claimed(u64),
    /// A key, and whether it is the one looked for (then with its value,
    /// when asked for).
    Live { matches: bool, value: Option<V> },
}

/// Where the search of an insert holding the home lock ended.
struct Scan {
    /// The slot where the key is LIVE.
    found: Option<u64>,
    /// The first slot of the chain a claim may take, and its word.
    free: Option<(u64, u64)>,
    /// Whether, before any free slot, a live remover held a slot REMOVING
    /// (such a slot is free once its remover unlocks it).
    removing: bool,
}

/// The room word `w` with `taken` keys of room taken, and one more change.
const fn room_changed(w: u64, taken: u32) -> u64 {
    ((w >> 32).wrapping_add(1) << 32) | taken as u64
}

/// 8-byte words needed for `bytes` bytes.
const fn words(bytes: usize) -> u64 {
    bytes.div_ceil(8) as u64
}

fn to_words<T: Pod>(value: &T, out: &mut [u64]) {
    let bytes = bytemuck::bytes_of(value);
    for (i, w) in out.iter_mut().enumerate() {
        let mut chunk = [0u8; 8];
        let start = (i * 8).min(bytes.len());
        let end = (start + 8).min(bytes.len());
        chunk[..end - start].copy_from_slice(&bytes[start..end]);
        *w = u64::from_le_bytes(chunk);
    }
}

fn from_words<T: Pod>(words: &[u64]) -> T {
    let mut value = T::zeroed();
    let bytes = bytemuck::bytes_of_mut(&mut value);
    for (i, w) in words.iter().enumerate() {
        let start = (i * 8).min(bytes.len());
        let end = (start + 8).min(bytes.len());
        bytes[start..end].copy_from_slice(&w.to_le_bytes()[..end - start]);
    }
    value
}

fn hash(words: &[u64]) -> u64 {
    let mut h: u64 = 0x243F_6A88_85A3_08D3;
    for &w in words {
        h = (h ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^= h >> 29;
    }
    h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^ (h >> 32)
}

/// Keys and values (up to 512 bytes each) are copied through a stack buffer of this many words.
const MAX_WORDS: usize = 64;

impl<K: Pod, V: Pod, H: HandlerFunctions> ShmHashMap<K, V, H> {
    const KEY_WORDS: u64 = words(std::mem::size_of::<K>());
    const VALUE_WORDS: u64 = words(std::mem::size_of::<V>());
    /// ctl, home lock, key, two value buffers.
    const SLOT_WORDS: u64 = 2 + Self::KEY_WORDS + 2 * Self::VALUE_WORDS;
    const FITS: () = assert!(
        (Self::KEY_WORDS as usize) <= MAX_WORDS && (Self::VALUE_WORDS as usize) <= MAX_WORDS,
        "ShmHashMap keys and values are limited to 512 bytes each"
    );

    /// The layout of (K, V): sizes and alignments. Like the handler's
    /// `layout_tag`, it is the same in every build, so separately built
    /// programs sharing a map agree; types of identical layout are not
    /// told apart.
    fn types() -> u64 {
        use std::mem::{align_of, size_of};
        let layout = [
            size_of::<K>(),
            align_of::<K>(),
            size_of::<V>(),
            align_of::<V>(),
        ];
        layout.iter().fold(MAP_TYPE_ID, |h, &x| {
            (h ^ x as u64).wrapping_mul(0x0000_0100_0000_01B3)
        })
    }

    fn fingerprint() -> TypeFingerprint {
        TypeFingerprint {
            size: HEADER_BYTES as u32,
            align: 8,
            type_id: Self::types(),
        }
    }

    /// Creates an unnamed map for `capacity` keys; the block belongs to the
    /// segment. Hand [`offset`](Self::offset) to other processes.
    pub fn create(handler: H, capacity: u32) -> Result<Self, MapError> {
        #[allow(clippy::let_unit_value)]
        let () = Self::FITS;
        let offset = Self::allocate(&handler, capacity)?;
        handler
            .matrix()
            .set_owner(offset - BLOCK_HEADER_SIZE, None, OwnerId::SEGMENT)
            .map_err(HandlerError::from)?;
        Self::open_at(handler, offset)
    }

    /// Opens `name` in the root registry, or creates it for `capacity` keys.
    /// Exactly one of several racing processes creates it.
    pub fn open_or_create(handler: H, name: &str, capacity: u32) -> Result<(Self, bool), MapError> {
        #[allow(clippy::let_unit_value)]
        let () = Self::FITS;
        if capacity == 0 || capacity > MAX_MAP_CAPACITY {
            return Err(MapError::InvalidCapacity {
                requested: capacity,
            });
        }
        let (offset, created) =
            Registry::root(&handler)?.find_or_create_raw(name, Self::fingerprint(), || {
                Self::allocate(&handler, capacity).map_err(|e| match e {
                    MapError::Handler(h) => h,
                    other => unreachable!("capacity validated above: {other}"),
                })
            })?;
        Ok((Self::open_at(handler, offset)?, created))
    }

    /// Opens the map registered under `name`.
    pub fn open(handler: H, name: &str) -> Result<Self, MapError> {
        let offset = Registry::root(&handler)?.find(name, Self::fingerprint())?;
        Self::open_at(handler, offset)
    }

    /// Opens the map whose payload starts at `offset`, checking the block,
    /// the header and the key and value types.
    pub fn open_at(handler: H, offset: u32) -> Result<Self, MapError> {
        let not = |what| MapError::NotAMap { offset, what };
        // SAFETY: MapHeader is repr(C), atomics and integers, magic first.
        let hdr: &MapHeader = unsafe { shm::structure_header(&handler, offset, MAP_MAGIC) }
            .map_err(|e| match e {
                NotThere::NoBlock => not("no live block of a map's size there"),
                NotThere::WrongMagic => not("wrong magic"),
            })?;
        if hdr.types.load(Relaxed) != Self::types()
            || hdr.key_size.load(Relaxed) as usize != std::mem::size_of::<K>()
            || hdr.value_size.load(Relaxed) as usize != std::mem::size_of::<V>()
        {
            return Err(not("created for other key or value types"));
        }
        // Relaxed: ordered after the magic's Acquire load above.
        let (capacity, slots) = (hdr.capacity.load(Relaxed), hdr.slots.load(Relaxed));
        if capacity == 0
            || capacity > MAX_MAP_CAPACITY
            || !slots.is_power_of_two()
            || (slots as u64) < capacity as u64
        {
            return Err(not("impossible capacity"));
        }
        checked_region(
            &handler,
            offset,
            HEADER_BYTES + slots as u64 * Self::SLOT_WORDS * 8,
        )
        .map_err(|_| not("block smaller than its recorded capacity"))?;
        let me = ctl::identity(handler.matrix());
        Ok(ShmHashMap {
            handler,
            offset,
            capacity,
            mask: slots as u64 - 1,
            me,
            _types: PhantomData,
        })
    }

    fn allocate(handler: &H, capacity: u32) -> Result<u32, MapError> {
        if capacity == 0 || capacity > MAX_MAP_CAPACITY {
            return Err(MapError::InvalidCapacity {
                requested: capacity,
            });
        }
        let slots = ((capacity as u64 * 4).div_ceil(3))
            .next_power_of_two()
            .max(4);
        let bytes = HEADER_BYTES + slots * Self::SLOT_WORDS * 8;
        let bytes32 = u32::try_from(bytes).map_err(|_| MapError::InvalidCapacity {
            requested: capacity,
        })?;
        let offset = handler.allocate_raw(bytes32)?.offset();
        // SAFETY: freshly allocated payload of `bytes` bytes, known to nobody
        // else yet; all-zero is an EMPTY slot with a free home lock.
        unsafe {
            std::ptr::write_bytes(
                handler.base_ptr().add(offset as usize) as *mut u8,
                0,
                bytes as usize,
            )
        };
        // SAFETY: the header at the start of the payload just allocated.
        let hdr: &MapHeader = unsafe { shm::shared(handler, offset as u64) };
        hdr.capacity.store(capacity, Relaxed);
        hdr.slots.store(slots as u32, Relaxed);
        hdr.key_size.store(std::mem::size_of::<K>() as u32, Relaxed);
        hdr.value_size
            .store(std::mem::size_of::<V>() as u32, Relaxed);
        // Relaxed (all of these): published by the magic's Release store.
        hdr.types.store(Self::types(), Relaxed);
        // Release: a process that Acquires the magic sees the whole map.
        hdr.magic.store(MAP_MAGIC, Release);
        Ok(offset)
    }

    /// Payload offset of the map block.
    pub fn offset(&self) -> u32 {
        self.offset
    }

    /// Keys the map can hold at once.
    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// Keys in the map: a walk over every slot (exact at quiescence).
    pub fn len(&self) -> usize {
        (0..=self.mask)
            // Relaxed: a count; each word is read once, no data depends on it.
            .filter(|&i| ctl::state(self.ctl(i).load(Relaxed)) == LIVE)
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

    /// Word `i` of slot `index`.
    #[inline]
    fn word(&self, index: u64, i: u64) -> &AtomicU64 {
        debug_assert!(index <= self.mask && i < Self::SLOT_WORDS);
        let at = self.offset as u64 + HEADER_BYTES + (index * Self::SLOT_WORDS + i) * 8;
        // SAFETY: index < slots and i < SLOT_WORDS, inside the region
        // validated at open_at; 8-aligned.
        unsafe { shm::shared(&self.handler, at) }
    }

    fn ctl(&self, index: u64) -> &AtomicU64 {
        self.word(index, 0)
    }

    fn home_lock(&self, index: u64) -> &AtomicU64 {
        self.word(index, 1)
    }

    fn key_words(&self, index: u64) -> impl Iterator<Item = &AtomicU64> + '_ {
        (0..Self::KEY_WORDS).map(move |i| self.word(index, 2 + i))
    }

    fn buffer(&self, index: u64, which: u64) -> impl Iterator<Item = &AtomicU64> + '_ {
        let base = 2 + Self::KEY_WORDS + which * Self::VALUE_WORDS;
        (0..Self::VALUE_WORDS).map(move |i| self.word(index, base + i))
    }

    fn key_matches(&self, index: u64, key: &[u64]) -> bool {
        // Relaxed: validated by the ctl re-check (lookups) or stable under
        // the slot's lock (writers); see `view` and `lock_live`.
        self.key_words(index)
            .zip(key)
            .all(|(w, k)| w.load(Relaxed) == *k)
    }

    fn read_key(&self, index: u64) -> K {
        let mut w = [0u64; MAX_WORDS];
        for (dst, src) in w.iter_mut().zip(self.key_words(index)) {
            // Relaxed: as in key_matches.
            *dst = src.load(Relaxed);
        }
        from_words(&w[..Self::KEY_WORDS as usize])
    }

    fn read_buffer(&self, index: u64, which: u64) -> V {
        let mut w = [0u64; MAX_WORDS];
        for (dst, src) in w.iter_mut().zip(self.buffer(index, which)) {
            // Relaxed: validated by the ctl re-check (lookups) or ordered
            // by holding the lock (writers).
            *dst = src.load(Relaxed);
        }
        from_words(&w[..Self::VALUE_WORDS as usize])
    }

    fn write_buffer(&self, index: u64, which: u64, value: &V) {
        let mut w = [0u64; MAX_WORDS];
        to_words(value, &mut w[..Self::VALUE_WORDS as usize]);
        for (dst, src) in self.buffer(index, which).zip(w) {
            // Relaxed: published by the commit's Release store.
            dst.store(src, Relaxed);
        }
    }

    fn write_key(&self, index: u64, key: &[u64]) {
        for (w, k) in self.key_words(index).zip(key) {
            // Relaxed: published by the commit's Release store.
            w.store(*k, Relaxed);
        }
    }

    /// A consistent look at slot `index` for `key`: `copy` runs on a LIVE
    /// slot whose key matches, and what it read is kept only if the slot's
    /// committed bits did not change meanwhile.
    fn view<T>(&self, index: u64, key: &[u64], copy: impl Fn(u64) -> T) -> View<T> {
        let ctl = self.ctl(index);
        loop {
            // Acquire: pairs with the Release commit that published this
            // version's key words and current buffer.
            let c1 = ctl.load(Acquire);
            match ctl::state(c1) {
                EMPTY => return View::Empty(c1),
                TOMBSTONE if c1 & LOCKED != 0 => return View::Claimed(c1),
                TOMBSTONE => return View::Free(c1),
                REMOVING => return View::Claimed(c1),
                _ => {}
            }
            let matches = self.key_matches(index, key);
            let value = matches.then(|| copy(c1));
            // Acquire fence: the key and buffer loads above are ordered
            // before the re-check. If one of them read a word a later
            // writer stored, that writer's lock (followed by its Release
            // fence) is visible to the re-check, and the writer could only
            // touch what we read after a commit past `c1`: the re-check
            // then sees a new version. Correct on weak memory: it is the
            // fence-to-fence synchronization of a seqlock, not a TSO
            // assumption.
            fence(Acquire);
            // Relaxed: ordered by the fence.
            if ctl.load(Relaxed) & COMMITTED == c1 & COMMITTED {
                return View::Live { matches, value };
            }
        }
    }

    fn home(&self, key: &[u64]) -> u64 {
        hash(key) & self.mask
    }

    /// How far to search: the longest probe distance any claim used.
    fn reach(&self) -> u64 {
        // SeqCst: in one order with the claims' raises (see `claim`); an
        // insert that finished before this search began raised it first.
        (self.header().max_probe.load(SeqCst) as u64).min(self.mask)
    }

    /// The slot where `key` is LIVE (with `copy` of its value), searching
    /// without waiting.
    fn find<T>(&self, key: &[u64], copy: impl Fn(u64, u64) -> T) -> Option<(u64, Option<T>)> {
        let home = self.home(key);
        for d in 0..=self.reach() {
            let index = (home + d) & self.mask;
            match self.view(index, key, |c| copy(index, c)) {
                View::Empty(_) => return None,
                View::Live {
                    matches: true,
                    value,
                } => return Some((index, value)),
                _ => {}
            }
        }
        None
    }

    fn key_of(key: &K) -> [u64; MAX_WORDS] {
        let mut w = [0u64; MAX_WORDS];
        to_words(key, &mut w[..Self::KEY_WORDS as usize]);
        w
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &K) -> Option<V> {
        let k = Self::key_of(key);
        let k = &k[..Self::KEY_WORDS as usize];
        self.find(k, |index, c| self.read_buffer(index, ctl::current(c)))
            .and_then(|(_, v)| v)
    }

    /// Whether `key` has a value.
    pub fn contains_key(&self, key: &K) -> bool {
        let k = Self::key_of(key);
        self.find(&k[..Self::KEY_WORDS as usize], |_, _| ())
            .is_some()
    }

    /// Sets `key` to `value`; returns the previous value.
    ///
    /// # Errors
    /// [`MapError::Full`] when `key` is new and, at a moment during the
    /// call, the map held `capacity` keys plus inserts of other new keys
    /// still in flight. A remove that has committed is never counted: an
    /// insert refused for room first waits for removes between their commit
    /// and their room's give-back.
    pub fn insert(&self, key: &K, value: V) -> Result<Option<V>, MapError> {
        self.modify(key, true, |_| Some(value)).map(|(old, _)| old)
    }

    /// Removes `key`; returns its value. Its slot is free for any key.
    pub fn remove(&self, key: &K) -> Option<V> {
        self.modify(key, false, |_| None)
            .ok()
            .and_then(|(old, _)| old)
    }

    /// Replaces the value of `key` with `f(old)`, atomically with respect to
    /// other writers of that key; returns the new value, or `None` (and does
    /// nothing) if `key` has no value.
    pub fn update(&self, key: &K, f: impl FnOnce(V) -> V) -> Option<V> {
        let mut f = Some(f);
        self.modify(key, false, |old| {
            old.map(|v| (f.take().expect("called once"))(v))
        })
        .ok()
        .and_then(|(_, new)| new)
    }

    /// Inserts `value` if `key` has none; returns the value now present.
    ///
    /// # Errors
    /// [`MapError::Full`], as for [`insert`](Self::insert).
    pub fn get_or_insert(&self, key: &K, value: V) -> Result<V, MapError> {
        self.modify(key, true, |old| Some(old.unwrap_or(value)))
            .map(|(_, new)| new.expect("just set"))
    }

    /// Runs `change(old) -> new` on `key` (once), under the lock of its
    /// slot, or — for a new key, with `insert` — under its home lock.
    /// Returns (old, new).
    fn modify(
        &self,
        key: &K,
        insert: bool,
        change: impl FnOnce(Option<V>) -> Option<V>,
    ) -> Result<(Option<V>, Option<V>), MapError> {
        let k = Self::key_of(key);
        let k = &k[..Self::KEY_WORDS as usize];
        let mut change = Some(change);
        loop {
            if let Some((index, _)) = self.find(k, |_, _| ()) {
                let Some(c) = self.lock_live(index, k) else {
                    // Removed (or its slot reused) since the search: again.
                    continue;
                };
                let current = ctl::current(c);
                let old = self.read_buffer(index, current);
                // `update`'s closure may panic: the slot is then handed
                // back unchanged, not left locked by a live participant.
                let unlock = Unlock {
                    ctl: self.ctl(index),
                    committed: c,
                };
                let new = (change.take().expect("called once"))(Some(old));
                std::mem::forget(unlock);
                match new {
                    Some(v) => {
                        let other = current ^ 1;
                        self.write_buffer(index, other, &v);
                        fault::at(fault::MAP_WRITING);
                        // Release: readers and the next holder that Acquire
                        // this word see the buffer written under the lock.
                        self.ctl(index).store(ctl::commit(c, LIVE, other), Release);
                    }
                    None => self.commit_remove(index, c, current),
                }
                return Ok((Some(old), new));
            }
            if !insert {
                return Ok((None, None));
            }
            let home = self.home(k);
            self.lock_home(home);
            let created = self.create_key(k, &mut change);
            // Release: the next holder sees our claim and max_probe raise.
            self.home_lock(home).store(0, Release);
            match created? {
                Some(new) => return Ok((None, new)),
                // The key appeared before we held its home lock: modify it.
                None => continue,
            }
        }
    }

    /// A remove's commit, with slot `index` locked as `c`: the key leaves
    /// the map (REMOVING, still locked), its room is given back, and only
    /// then is the slot a free tombstone. Room in flight is thus always
    /// visible in some slot, which is what lets [`settle_room`]
    /// (Self::settle_room) tell a full map from one whose room is coming
    /// back.
    fn commit_remove(&self, index: u64, c: u64, current: u64) {
        let removing = ctl::locked(ctl::commit(c, REMOVING, current), REMOVING, self.me);
        // SeqCst: in one order with the room word's changes and the loads
        // of `settle_room`, whose argument needs all three ordered; it is
        // also a Release (readers see the key gone with the new version).
        self.ctl(index).store(removing, SeqCst);
        fault::at(fault::MAP_REMOVED);
        self.unreserve();
        // SeqCst: as above; a `settle_room` pass that sees the tombstone
        // then sees the room given back.
        self.ctl(index)
            .store(ctl::unlocked_tombstone(removing), SeqCst);
    }

    /// With the home lock of `key` held: creates it with `change(None)`
    /// (`Some(new)`), or finds it LIVE (`None`).
    fn create_key(
        &self,
        key: &[u64],
        change: &mut Option<impl FnOnce(Option<V>) -> Option<V>>,
    ) -> Result<Option<Option<V>>, MapError> {
        let full = MapError::Full {
            capacity: self.capacity,
        };
        let backoff = Backoff::new();
        let mut value = None;
        loop {
            let scan = self.scan(key);
            if scan.found.is_some() {
                return Ok(None);
            }
            let v = match value {
                Some(v) => v,
                None => match (change.take().expect("called once"))(None) {
                    Some(v) => *value.insert(v),
                    None => return Ok(Some(None)),
                },
            };
            let Some((index, c)) = scan.free else {
                // No slot free: every one holds a key, a claim of an insert
                // in flight or a remove. A remove holds its slot until just
                // after its room is back, so a full chain of slots is not a
                // full map while a live remover holds one of them: wait.
                if scan.removing {
                    backoff.snooze();
                    continue;
                }
                return Err(full);
            };
            if let Err(seen) = self.reserve() {
                if self.settle_room(seen, &backoff) {
                    continue;
                }
                return Err(full);
            }
            let distance = (index.wrapping_sub(self.home(key)) & self.mask) as u32;
            let Some(c) = self.claim(index, c, distance) else {
                self.unreserve();
                continue;
            };
            fault::at(fault::MAP_KEY_CLAIMED);
            self.write_key(index, key);
            let other = ctl::current(c) ^ 1;
            self.write_buffer(index, other, &v);
            fault::at(fault::MAP_WRITING);
            // Release: a lookup that Acquires LIVE sees the key and value.
            self.ctl(index).store(ctl::commit(c, LIVE, other), Release);
            return Ok(Some(Some(v)));
        }
    }

    /// With the home lock of `key` held: its whole chain. No other
    /// participant can create `key` meanwhile, so "not found" stays true
    /// until we release the lock; the search goes past the longest probe
    /// distance only as far as the first free slot.
    fn scan(&self, key: &[u64]) -> Scan {
        let home = self.home(key);
        let reach = self.reach();
        let mut free = None;
        let mut removing = false;
        for d in 0..=self.mask {
            let index = (home + d) & self.mask;
            match self.view(index, key, |_| ()) {
                View::Empty(c) => {
                    free.get_or_insert((index, c));
                    break;
                }
                View::Free(c) => {
                    free.get_or_insert((index, c));
                }
                View::Claimed(c) if free.is_none() => {
                    if ctl::holder_dead(self.handler.matrix(), ctl::holder(c)) {
                        free = Some((index, c));
                    } else if ctl::state(c) == REMOVING {
                        removing = true;
                    }
                }
                View::Claimed(_) => {}
                View::Live { matches: true, .. } => {
                    return Scan {
                        found: Some(index),
                        free,
                        removing,
                    }
                }
                View::Live { .. } => {}
            }
            if d >= reach && free.is_some() {
                break;
            }
        }
        Scan {
            found: None,
            free,
            removing,
        }
    }

    /// Claims slot `index`, `distance` from the key's home and seen as `c`
    /// (EMPTY, a free tombstone, or a dead claimant's); `None` if it
    /// changed meanwhile. Returns the claimed word. The caller holds one
    /// unit of room; a dead claimant's is given back.
    fn claim(&self, index: u64, c: u64, distance: u32) -> Option<u64> {
        let mine = ctl::locked(c, TOMBSTONE, self.me);
        // Acquire: pairs with the Release commit of the slot's last holder,
        // so our buffer writes come after its reads and writes.
        if self
            .ctl(index)
            .compare_exchange(c, mine, Acquire, Relaxed)
            .is_err()
        {
            return None;
        }
        // Release fence: a reader whose load sees a key or buffer word we
        // write next also sees the claim (see `view`).
        fence(Release);
        // A dead claimant's room is ours now: we hold our own. A dead
        // remover's slot gives nothing back — it may have given its room
        // back already (see `settle_room`).
        if c & LOCKED != 0 && ctl::state(c) == TOMBSTONE {
            self.unreserve();
        }
        // SeqCst: before the commit that publishes the key, in one order
        // with the searches' loads (see `reach`).
        self.header().max_probe.fetch_max(distance, SeqCst);
        Some(mine)
    }

    /// After a reserve refused for room on the room word `seen`: whether
    /// the insert should try again. One pass over the slots gives back the
    /// room of every claim whose holder is dead and frees the slots of dead
    /// removers (their room may be back already: none is given, so a
    /// remover killed between its two steps costs one key of room — the
    /// safe side). It then says "try again" if any room came back, if a
    /// live remover is still between its commit and its give-back (after a
    /// short wait), or if the room word changed since `seen`.
    ///
    /// Otherwise the refusal was right at the moment of `seen`: a remove
    /// whose room was not back then held its slot REMOVING from its commit
    /// (before `seen`) until after its give-back, which is after the second
    /// load of the unchanged word — so the pass, in between, saw it. All
    /// loads and the remover's stores are SeqCst for this one order. So
    /// `Full` is returned only when the map held `capacity` keys plus
    /// inserts of other new keys in flight.
    fn settle_room(&self, seen: u64, backoff: &Backoff) -> bool {
        let matrix = self.handler.matrix();
        let mut retry = false;
        for index in 0..=self.mask {
            // SeqCst: see above.
            let c = self.ctl(index).load(SeqCst);
            let state = ctl::state(c);
            let locked_by_dead = || c & LOCKED != 0 && ctl::holder_dead(matrix, ctl::holder(c));
            match state {
                TOMBSTONE if locked_by_dead() => {
                    // Release: keeps the slot's chain of holders ordered
                    // for the next claimant (nothing else was written).
                    if self
                        .ctl(index)
                        .compare_exchange(c, c & COMMITTED, Release, Relaxed)
                        .is_ok()
                    {
                        self.unreserve();
                    }
                    retry = true;
                }
                REMOVING if locked_by_dead() => {
                    // Release: as above.
                    let _ = self.ctl(index).compare_exchange(
                        c,
                        ctl::unlocked_tombstone(c),
                        Release,
                        Relaxed,
                    );
                }
                REMOVING => retry = true,
                _ => {}
            }
        }
        if retry {
            backoff.snooze();
            return true;
        }
        // SeqCst: see above.
        self.header().room.load(SeqCst) != seen
    }

    /// Locks slot `index` if it is LIVE with `key`; returns its committed
    /// word. `None` if it is not (it was removed, or reused by another key).
    fn lock_live(&self, index: u64, key: &[u64]) -> Option<u64> {
        let ctl = self.ctl(index);
        let backoff = Backoff::new();
        let mut waited = 0u32;
        loop {
            // Relaxed: the CAS below Acquires.
            let c = ctl.load(Relaxed);
            if ctl::state(c) != LIVE {
                return None;
            }
            let free = c & LOCKED == 0;
            if !free && backoff.is_completed() {
                waited = waited.wrapping_add(1);
            }
            // The holder's liveness lock is asked (a syscall): every 64th wait.
            let dead = !free
                && waited % 64 == 1
                && ctl::holder_dead(self.handler.matrix(), ctl::holder(c));
            if free || dead {
                // Acquire: pairs with the previous holder's Release commit,
                // so the key and current buffer it wrote are visible.
                if ctl
                    .compare_exchange(c, ctl::locked(c, LIVE, self.me), Acquire, Relaxed)
                    .is_ok()
                {
                    // Release fence: as in `claim`.
                    fence(Release);
                    // Under the lock the key words cannot change.
                    if self.key_matches(index, key) {
                        return Some(c & COMMITTED);
                    }
                    // Release: hands the slot on unchanged, keeping the
                    // holders' chain ordered.
                    ctl.store(c & COMMITTED, Release);
                    return None;
                }
                continue;
            }
            backoff.snooze();
        }
    }

    /// Takes the home lock of slot `home`.
    fn lock_home(&self, home: u64) {
        let lock = self.home_lock(home);
        // Never 0: the owner id of a participant is not.
        let me = self.me as u64 | 1 << 32;
        let backoff = Backoff::new();
        let mut waited = 0u32;
        loop {
            // Relaxed: the CAS below Acquires.
            let h = lock.load(Relaxed);
            let free = h == 0;
            if !free && backoff.is_completed() {
                waited = waited.wrapping_add(1);
            }
            // The holder's liveness lock is asked (a syscall): every 64th wait.
            let dead =
                !free && waited % 64 == 1 && ctl::holder_dead(self.handler.matrix(), h as u32);
            // Acquire: pairs with the previous holder's Release unlock, so
            // its claim, commit and max_probe raise are visible to our scan.
            if (free || dead) && lock.compare_exchange(h, me, Acquire, Relaxed).is_ok() {
                return;
            }
            if !free {
                backoff.snooze();
            }
        }
    }

    /// Takes one key of room; on a full map, the room word it found.
    fn reserve(&self) -> Result<u64, u64> {
        // SeqCst: in one order with `settle_room` and `commit_remove` (no
        // data is published through this word).
        self.header().room.fetch_update(SeqCst, SeqCst, |w| {
            ((w as u32) < self.capacity).then(|| room_changed(w, w as u32 + 1))
        })
    }

    fn unreserve(&self) {
        // SeqCst: see reserve. Never below 0, even on a corrupted count.
        let _ = self.header().room.fetch_update(SeqCst, SeqCst, |w| {
            (w as u32).checked_sub(1).map(|k| room_changed(w, k))
        });
    }

    /// Every key with its value (weakly consistent under concurrent writes:
    /// each pair was in the map at some moment during the call).
    pub fn iter(&self) -> impl Iterator<Item = (K, V)> + '_ {
        (0..=self.mask).filter_map(move |index| {
            let ctl = self.ctl(index);
            loop {
                // Acquire: as in `view`.
                let c1 = ctl.load(Acquire);
                if ctl::state(c1) != LIVE {
                    return None;
                }
                let pair = (
                    self.read_key(index),
                    self.read_buffer(index, ctl::current(c1)),
                );
                // Acquire fence, Relaxed re-check: as in `view`.
                fence(Acquire);
                if ctl.load(Relaxed) & COMMITTED == c1 & COMMITTED {
                    return Some(pair);
                }
            }
        })
    }
}
