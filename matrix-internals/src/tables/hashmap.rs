//! [`ShmHashMap`]: a fixed-capacity hash map of plain-old-data keys and
//! values, living in one block and shared by threads and processes.
//!
//! ```text
//!  MapHeader | slot 0 | slot 1 | ... | slot n-1        (n = power of two ≥ 4/3 · capacity)
//!  slot:  key_state | value_ctl | key words | value buffer A | value buffer B
//!
//!  key_state: 0                      EMPTY
//!             tag << 32 | owner id   CLAIMED: a participant is writing a new key
//!             tag << 32 | KEYED      the key words are written and never change
//!  value_ctl: bit 0 LOCKED, bit 1 CURRENT buffer, bit 2 PRESENT,
//!             bits 3..32 version, bits 32..64 owner id of the lock holder
//! ```
//!
//! Open addressing with linear probing. A key, once written into a slot,
//! stays in that slot for the life of the map: removing it clears PRESENT,
//! and inserting it again reuses the slot. So `capacity` counts the distinct
//! keys a map ever holds, and probe chains never break.
//!
//! - **Keys** are claimed with one CAS on `key_state` (EMPTY → CLAIMED), then
//!   written, then published (KEYED, Release). An insert of the same key that
//!   meets a CLAIMED slot with its tag waits until it is KEYED (or takes it
//!   over if the claimant died); lookups never wait (a key not yet KEYED has
//!   no value yet, so it is not in the map).
//! - **Values** are double-buffered. A writer takes the slot's write lock
//!   (one CAS), writes the buffer that is *not* current, then flips CURRENT,
//!   bumps the version and sets or clears PRESENT in one Release store.
//!   Readers never wait for writers: they copy the current buffer and
//!   re-check the committed bits; they retry only if a write completed
//!   meanwhile. Writers of the *same key* serialize on the lock for the time
//!   of one copy; a lock holder that died is detected (its owner id) and the
//!   lock taken over — the buffer it was writing was not current, so the
//!   committed value is intact.
//!
//! Every operation on one key is linearizable: insert/update/remove at the
//! Release store that commits them, get at its first load of `value_ctl`.
//! Keys compare by their bytes.

use crate::shm::{self, checked_region, fault, owner_alive, NotThere};
use crate::sync::{fence, AtomicU32, AtomicU64, Ordering::*};
use crate::tables::{MapError, Registry, TypeFingerprint};
use crossbeam_utils::Backoff;
use matrix_core::{OwnerId, BLOCK_HEADER_SIZE};
use matrix_handler::{HandlerError, HandlerFunctions, Pod};
use std::fmt;
use std::marker::PhantomData;

pub(crate) const MAP_MAGIC: u64 = u64::from_le_bytes(*b"MXHMAP01");
/// Largest number of keys one map may hold.
pub const MAX_MAP_CAPACITY: u32 = 1 << 26;
const MAP_TYPE_ID: u64 = crate::tables::type_id("matrix-internals::ShmHashMap v1");

const KEYED: u32 = 0x100; // low byte 0: never an owner id
const LOCKED: u64 = 1;
const CURRENT: u64 = 2;
const PRESENT: u64 = 4;
const VERSION_ONE: u64 = 8;
const COMMITTED: u64 = 0xFFFF_FFFE; // CURRENT | PRESENT | version

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
    /// Keys written into slots (never decreases); bounded by `capacity`.
    keys: AtomicU32,
    /// Keys with a value present.
    len: AtomicU32,
    _reserved: [u64; 3],
}

const HEADER_BYTES: u64 = std::mem::size_of::<MapHeader>() as u64;
const _: () = assert!(HEADER_BYTES == 64 && std::mem::align_of::<MapHeader>() == 8);

/// A fixed-capacity lock-free hash map of `K` → `V` in a block of the
/// segment; see the module docs.
pub struct ShmHashMap<K, V, H: HandlerFunctions> {
    handler: H,
    offset: u32,
    capacity: u32,
    mask: u64,
    owner: u32,
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
    /// key_state, value_ctl, key, two value buffers.
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
        let owner = handler.matrix().owner_id().0;
        Ok(ShmHashMap {
            handler,
            offset,
            capacity,
            mask: slots as u64 - 1,
            owner,
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
        // else yet; all-zero is EMPTY for every slot.
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

    /// Distinct keys the map can hold.
    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// Keys with a value (exact at quiescence).
    pub fn len(&self) -> usize {
        // Relaxed: a counter; exact once writers are done.
        self.header().len.load(Relaxed) as usize
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

    fn key_state(&self, index: u64) -> &AtomicU64 {
        self.word(index, 0)
    }

    fn value_ctl(&self, index: u64) -> &AtomicU64 {
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
        // Relaxed: the key words were published by the KEYED Release store,
        // which our Acquire load of key_state synchronized with; they never change.
        self.key_words(index)
            .zip(key)
            .all(|(w, k)| w.load(Relaxed) == *k)
    }

    /// Probes for `key`; with `insert`, claims an empty slot for it.
    /// Returns the slot, or `None` (not present / no room).
    fn find(&self, key: &[u64], insert: bool) -> Result<Option<u64>, MapError> {
        let h = hash(key);
        let tag = (h >> 32) as u32;
        let mut index = h & self.mask;
        for _ in 0..=self.mask {
            let ks = self.key_state(index);
            let backoff = Backoff::new();
            let mut waited = 0u32;
            loop {
                // Acquire: pairs with the KEYED Release store (key words visible).
                let s = ks.load(Acquire);
                if s == 0 {
                    if !insert {
                        return Ok(None);
                    }
                    if !self.reserve_key() {
                        return Err(MapError::Full {
                            capacity: self.capacity,
                        });
                    }
                    // Acquire: a failed CAS re-reads the slot.
                    match ks.compare_exchange(
                        0,
                        (tag as u64) << 32 | self.owner as u64,
                        Acquire,
                        Relaxed,
                    ) {
                        Ok(_) => {
                            fault::at(fault::MAP_KEY_CLAIMED);
                            self.write_key(index, key, tag);
                            return Ok(Some(index));
                        }
                        Err(_) => {
                            self.unreserve_key();
                            continue;
                        }
                    }
                }
                if (s >> 32) as u32 != tag {
                    break;
                }
                let status = s as u32;
                if status == KEYED {
                    if self.key_matches(index, key) {
                        return Ok(Some(index));
                    }
                    break;
                }
                // CLAIMED with our tag: a key is being written here.
                if !insert {
                    // Not in the map yet (it has no value): lookups move on.
                    break;
                }
                if backoff.is_completed() {
                    waited = waited.wrapping_add(1);
                }
                // The claimant's liveness lock is queried (a syscall): only every 64th wait.
                if waited % 64 == 1 && !owner_alive(self.handler.matrix(), status) {
                    // Acquire: as above.
                    if ks
                        .compare_exchange(
                            s,
                            (tag as u64) << 32 | self.owner as u64,
                            Acquire,
                            Relaxed,
                        )
                        .is_ok()
                    {
                        // The dead claimant's reservation is reused.
                        self.write_key(index, key, tag);
                        return Ok(Some(index));
                    }
                    continue;
                }
                backoff.snooze();
            }
            index = (index + 1) & self.mask;
        }
        if insert {
            return Err(MapError::Full {
                capacity: self.capacity,
            });
        }
        Ok(None)
    }

    fn write_key(&self, index: u64, key: &[u64], tag: u32) {
        for (w, k) in self.key_words(index).zip(key) {
            // Relaxed: published by the KEYED Release store below.
            w.store(*k, Relaxed);
        }
        // Release: lookups that Acquire KEYED see the key words.
        self.key_state(index)
            .store((tag as u64) << 32 | KEYED as u64, Release);
    }

    fn reserve_key(&self) -> bool {
        // Relaxed: a counter bounding slot use; no data is published through it.
        self.header()
            .keys
            .fetch_update(Relaxed, Relaxed, |k| (k < self.capacity).then_some(k + 1))
            .is_ok()
    }

    fn unreserve_key(&self) {
        // Relaxed: see reserve_key.
        self.header().keys.fetch_sub(1, Relaxed);
    }

    /// Takes the value lock of a slot; returns the committed control bits.
    fn lock(&self, index: u64) -> u64 {
        let ctl = self.value_ctl(index);
        let backoff = Backoff::new();
        let mut waited = 0u32;
        loop {
            // Relaxed: the CAS below Acquires.
            let c = ctl.load(Relaxed);
            let holder = (c >> 32) as u32;
            let free = c & LOCKED == 0;
            if !free && backoff.is_completed() {
                waited = waited.wrapping_add(1);
            }
            // The holder's liveness lock is queried (a syscall): only every 64th wait.
            let dead = !free && waited % 64 == 1 && !owner_alive(self.handler.matrix(), holder);
            if free || dead {
                let mine = (c & COMMITTED) | LOCKED | (self.owner as u64) << 32;
                // Acquire: pairs with the previous writer's Release commit,
                // so the current buffer it wrote is visible.
                if ctl.compare_exchange(c, mine, Acquire, Relaxed).is_ok() {
                    // Release fence: readers that see a word we write next
                    // (in a buffer that becomes current later) also see the lock.
                    fence(Release);
                    return c & COMMITTED;
                }
                continue;
            }
            backoff.snooze();
        }
    }

    /// Publishes a slot's new committed bits and releases the lock.
    fn commit(&self, index: u64, committed: u64) {
        // Release: readers that Acquire the new control word see the buffer
        // written under the lock.
        self.value_ctl(index).store(committed & COMMITTED, Release);
    }

    fn read_buffer(&self, index: u64, which: u64) -> V {
        let mut w = [0u64; MAX_WORDS];
        for (dst, src) in w.iter_mut().zip(self.buffer(index, which)) {
            // Relaxed: validated by the control word re-check (get) or
            // ordered by holding the lock (writers).
            *dst = src.load(Relaxed);
        }
        from_words(&w[..Self::VALUE_WORDS as usize])
    }

    fn write_buffer(&self, index: u64, which: u64, value: &V) {
        let mut w = [0u64; MAX_WORDS];
        to_words(value, &mut w[..Self::VALUE_WORDS as usize]);
        for (dst, src) in self.buffer(index, which).zip(w) {
            // Relaxed: published by commit's Release.
            dst.store(src, Relaxed);
        }
    }

    /// A consistent copy of a slot's value, without waiting for writers.
    fn read_value(&self, index: u64) -> Option<V> {
        let ctl = self.value_ctl(index);
        loop {
            // Acquire: pairs with commit's Release.
            let c1 = ctl.load(Acquire) & COMMITTED;
            if c1 & PRESENT == 0 {
                return None;
            }
            let value = self.read_buffer(index, (c1 & CURRENT) >> 1);
            // Acquire fence: the buffer loads are ordered before the re-check
            // (pairs with the writer's Release fence after locking).
            fence(Acquire);
            // Relaxed: ordered by the fence.
            if ctl.load(Relaxed) & COMMITTED == c1 {
                return Some(value);
            }
        }
    }

    fn key_of(key: &K) -> [u64; MAX_WORDS] {
        let mut w = [0u64; MAX_WORDS];
        to_words(key, &mut w[..Self::KEY_WORDS as usize]);
        w
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &K) -> Option<V> {
        let k = Self::key_of(key);
        let index = self.find(&k[..Self::KEY_WORDS as usize], false).ok()??;
        self.read_value(index)
    }

    /// Whether `key` has a value.
    pub fn contains_key(&self, key: &K) -> bool {
        self.get(key).is_some()
    }

    /// Sets `key` to `value`; returns the previous value.
    ///
    /// # Errors
    /// [`MapError::Full`] when `key` is new and the map already holds
    /// `capacity` distinct keys.
    pub fn insert(&self, key: &K, value: V) -> Result<Option<V>, MapError> {
        self.modify(key, true, |_| Some(value)).map(|(old, _)| old)
    }

    /// Removes `key`; returns its value.
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
    pub fn get_or_insert(&self, key: &K, value: V) -> Result<V, MapError> {
        self.modify(key, true, |old| Some(old.unwrap_or(value)))
            .map(|(_, new)| new.expect("just set"))
    }

    /// Runs `change(old) -> new` under the slot's value lock. Returns (old, new).
    fn modify(
        &self,
        key: &K,
        insert: bool,
        change: impl FnOnce(Option<V>) -> Option<V>,
    ) -> Result<(Option<V>, Option<V>), MapError> {
        let k = Self::key_of(key);
        let Some(index) = self.find(&k[..Self::KEY_WORDS as usize], insert)? else {
            return Ok((None, None));
        };
        let c = self.lock(index);
        let current = (c & CURRENT) >> 1;
        let old = (c & PRESENT != 0).then(|| self.read_buffer(index, current));
        let new = change(old);
        let version = (c & !(CURRENT | PRESENT | LOCKED)).wrapping_add(VERSION_ONE);
        let committed = match new {
            Some(v) => {
                let other = current ^ 1;
                self.write_buffer(index, other, &v);
                fault::at(fault::MAP_WRITING);
                version | other << 1 | PRESENT
            }
            None if old.is_some() => version | current << 1,
            None => {
                self.commit(index, c);
                return Ok((old, new));
            }
        };
        self.commit(index, committed);
        // Relaxed: `len` is a counter, exact at quiescence.
        match (old.is_some(), new.is_some()) {
            (false, true) => drop(self.header().len.fetch_add(1, Relaxed)),
            (true, false) => drop(self.header().len.fetch_sub(1, Relaxed)),
            _ => {}
        }
        Ok((old, new))
    }

    /// Every key with its value (weakly consistent under concurrent writes:
    /// each pair was in the map at some moment during the call).
    pub fn iter(&self) -> impl Iterator<Item = (K, V)> + '_ {
        (0..=self.mask).filter_map(move |index| {
            // Acquire: pairs with the KEYED Release store.
            let s = self.key_state(index).load(Acquire);
            if s as u32 != KEYED {
                return None;
            }
            let value = self.read_value(index)?;
            let mut w = [0u64; MAX_WORDS];
            for (dst, src) in w.iter_mut().zip(self.key_words(index)) {
                // Relaxed: published by the KEYED store we Acquired; never changes.
                *dst = src.load(Relaxed);
            }
            Some((from_words::<K>(&w[..Self::KEY_WORDS as usize]), value))
        })
    }
}
