//! [`Registry`]: names → shared objects, so another process finds them.
//!
//! ```text
//!  payload of the registry block
//!  +------------------+----------+----------+-----+------------------+
//!  | RegistryHeader   | entry 0  | entry 1  | ... | entry cap-1      |
//!  | magic, capacity, | version  |          |     |                  |
//!  | lock (owner id), | state    |  104 B   |     |                  |
//!  | lock waiters     | name[64] |  each    |     |                  |
//!  +------------------+ offset,  +----------+-----+------------------+
//!                       size, align, type id
//! ```
//!
//! Lookups are lock-free: each entry is a seqlock (`version` odd while a
//! writer changes it), and a reader copies the entry and re-checks the
//! version. Changes (create, remove) are rare and serialize on one word,
//! `lock`, holding the owner id of the participant making them; that is what
//! makes `find_or_create` (and `find_or_create_raw`) create exactly one object when several processes
//! race on one name. A waiter sleeps on the word with a futex and checks
//! every few milliseconds whether the holder is still alive; if it died, the
//! waiter takes the lock over and rolls the dead holder's half-made entry
//! back (or forward, when the object was complete and already given to the
//! segment).
//!
//! Entry states: `EMPTY` → `CREATING` (name written, creation closure
//! running, under the lock) → `READY` (visible to lookups) → `EMPTY`
//! (removed).
//!
//! The root registry's offset lives in the segment header
//! (`root_registry`); [`Registry::root`] creates it on first use.

use super::fingerprint::{name_from_words, name_problem, name_words, TypeFingerprint};
use super::RegistryError;
use crate::shm::{self, checked_region, fault, owner_alive, NotThere};
use crate::sync::{fence, AtomicU32, AtomicU64, Ordering::*};
use crossbeam_utils::Backoff;
use matrix_core::{state, OwnerId, BLOCK_HEADER_SIZE};
use matrix_handler::{Block, HandlerError, HandlerFunctions, Pod, RelativePtr, ShmSafe};
use std::fmt;
use std::time::Duration;

mod inspect;
pub use inspect::{EntryDamage, EntryRecord, EntryState, ObjectBlock, ObjectKind, RegistryRecord};

const REGISTRY_MAGIC: u64 = u64::from_le_bytes(*b"MXREGIS1");
/// Entries of the root registry.
///
/// The root registry costs 13,344 bytes, taken at its first use: a 32-byte
/// header and 128 entries of 104 bytes (a name of up to 63 bytes in eight
/// words, offset, fingerprint, creator, seqlock version — checked at compile
/// time below). Entries are fixed-size so that a lookup is a lock-free scan
/// that allocates nothing, and the table never grows, so no process ever
/// sees it move. A structure that needs more names (or fewer bytes) makes
/// its own with [`Registry::create`] and registers that one in the root.
pub const ROOT_CAPACITY: u32 = 128;
/// Most entries one registry may have.
pub const MAX_REGISTRY_CAPACITY: u32 = 1 << 16;
/// How long a lock waiter sleeps before it checks the holder's pulse.
const HOLDER_CHECK: Duration = Duration::from_millis(10);

const EMPTY: u32 = 0;
const CREATING: u32 = 1;
const READY: u32 = 2;

#[repr(C)]
struct RegistryHeader {
    magic: AtomicU64,
    capacity: AtomicU32,
    /// Owner id of the participant changing entries; 0 = nobody.
    lock: AtomicU32,
    /// Processes sleeping on `lock`.
    lock_waiters: AtomicU32,
    _reserved: [u32; 3],
}

#[repr(C)]
struct Entry {
    /// Seqlock: odd while the lock holder rewrites the entry.
    version: AtomicU32,
    state: AtomicU32,
    /// Owner id of the participant that created the entry.
    creator: AtomicU32,
    name_len: AtomicU32,
    /// Payload offset of the object.
    offset: AtomicU32,
    size: AtomicU32,
    align: AtomicU32,
    _reserved: u32,
    type_id: AtomicU64,
    name: [AtomicU64; 8],
}

const HEADER_BYTES: u64 = std::mem::size_of::<RegistryHeader>() as u64;
const ENTRY_BYTES: u64 = std::mem::size_of::<Entry>() as u64;
const _: () = assert!(HEADER_BYTES == 32 && ENTRY_BYTES == 104);
const _: () = assert!(HEADER_BYTES + ROOT_CAPACITY as u64 * ENTRY_BYTES == 13_344);
const _: () =
    assert!(std::mem::align_of::<Entry>() == 8 && std::mem::align_of::<RegistryHeader>() == 8);

/// What a registry holds under one name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryEntry {
    /// The name.
    pub name: String,
    /// Payload offset of the object.
    pub offset: u32,
    /// Its type fingerprint.
    pub fingerprint: TypeFingerprint,
    /// Owner id of the participant that created it.
    pub creator: OwnerId,
}

impl RegistryEntry {
    /// The object's payload, as `free_raw` takes it.
    pub fn payload(&self) -> RelativePtr<u8> {
        RelativePtr::new(self.offset)
    }
}

/// A consistent copy of one entry.
#[derive(Clone, Copy)]
struct Snapshot {
    state: u32,
    creator: u32,
    name_len: u32,
    name: [u64; 8],
    offset: u32,
    fingerprint: TypeFingerprint,
}

impl Snapshot {
    /// Copies an entry as a seqlock reader; `None` if a writer kept it
    /// busy through every try. `name_len` is as stored (unchecked).
    fn read(e: &Entry) -> Option<Snapshot> {
        for _ in 0..64 {
            // Acquire: pairs with the writer's final Release version store.
            let v1 = e.version.load(Acquire);
            if v1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            // Relaxed: the fields are validated by the version re-check below.
            let snap = Snapshot {
                state: e.state.load(Relaxed),
                creator: e.creator.load(Relaxed),
                name_len: e.name_len.load(Relaxed),
                name: std::array::from_fn(|i| e.name[i].load(Relaxed)),
                offset: e.offset.load(Relaxed),
                fingerprint: TypeFingerprint {
                    size: e.size.load(Relaxed),
                    align: e.align.load(Relaxed),
                    type_id: e.type_id.load(Relaxed),
                },
            };
            // Acquire fence: orders the field loads before the re-check
            // (pairs with the writer's Release fence after making it odd).
            fence(Acquire);
            if e.version.load(Relaxed) == v1 {
                return Some(snap);
            }
        }
        None
    }

    fn is(&self, words: &[u64; 8], len: usize) -> bool {
        self.state == READY && self.name_len as usize == len && &self.name == words
    }

    fn entry(&self) -> RegistryEntry {
        RegistryEntry {
            name: name_from_words(&self.name, self.name_len as usize),
            offset: self.offset,
            fingerprint: self.fingerprint,
            creator: OwnerId(self.creator),
        }
    }
}

enum Lookup {
    Found(Snapshot),
    Missing,
    /// An entry was being rewritten; only a locked lookup is conclusive.
    Busy,
}

/// A name → object table living in a block of the segment.
///
/// Generic over any [`HandlerFunctions`] and, like every structure of this
/// crate, it owns the handler it is given: pass `&handler` to borrow one
/// (it is cheap to make a registry whenever a name must be resolved), or a
/// `SharedHandler` / `Arc` to keep it.
pub struct Registry<H: HandlerFunctions> {
    handler: H,
    offset: u32,
    capacity: u32,
}

impl<H: HandlerFunctions> Registry<H> {
    /// The segment's root registry, created on first use.
    ///
    /// Creation races are settled by one CAS on the segment header's
    /// `root_registry` word; the loser frees its block. A creator killed
    /// between giving its block to the segment and that CAS leaks the one
    /// block (a few KiB), never the word.
    pub fn root(handler: H) -> Result<Self, RegistryError> {
        // Acquire: pairs with the AcqRel CAS below that published the root,
        // so its initialized header is visible before we read it.
        let offset = handler.matrix().header().root_registry.load(Acquire);
        if offset != 0 {
            return Self::open_at(handler, offset);
        }
        let made = Self::create(handler, ROOT_CAPACITY)?;
        let word = &made.handler.matrix().header().root_registry;
        // AcqRel: Release publishes the initialized registry; Acquire (on
        // failure too) sees the winner's, which is never unpublished.
        match word.compare_exchange(0, made.offset, AcqRel, Acquire) {
            Ok(_) => Ok(made),
            Err(winner) => {
                made.handler.free_raw(RelativePtr::new(made.offset))?;
                Self::open_at(made.handler, winner)
            }
        }
    }

    /// A new, empty registry with room for `capacity` names, owned by the
    /// segment (it outlives its creator; free it with `free_at` when done).
    /// Pass its [`offset`](Self::offset) to other processes, or register it
    /// in the root registry.
    pub fn create(handler: H, capacity: u32) -> Result<Self, RegistryError> {
        if capacity == 0 || capacity > MAX_REGISTRY_CAPACITY {
            return Err(RegistryError::NotARegistry {
                offset: 0,
                what: "capacity must be 1 to 65536",
            });
        }
        let bytes = HEADER_BYTES + capacity as u64 * ENTRY_BYTES;
        let offset = handler.allocate_raw(bytes as u32)?.offset();
        // SAFETY: the block was just allocated for us with `bytes` bytes of
        // payload; nobody else knows its offset yet.
        unsafe {
            std::ptr::write_bytes(
                handler.base_ptr().add(offset as usize) as *mut u8,
                0,
                bytes as usize,
            )
        };
        let registry = Registry {
            handler,
            offset,
            capacity,
        };
        let hdr = registry.header();
        // Relaxed: published by the magic's Release store.
        hdr.capacity.store(capacity, Relaxed);
        // Release: whoever Acquires the magic sees the zeroed entries and capacity.
        hdr.magic.store(REGISTRY_MAGIC, Release);
        registry
            .handler
            .matrix()
            .set_owner(offset - BLOCK_HEADER_SIZE, None, OwnerId::SEGMENT)
            .map_err(HandlerError::from)?;
        Ok(registry)
    }

    /// Opens the registry whose payload starts at `offset`, checking that it
    /// is one.
    pub fn open_at(handler: H, offset: u32) -> Result<Self, RegistryError> {
        let not = |what| RegistryError::NotARegistry { offset, what };
        // SAFETY: RegistryHeader is repr(C), atomics and integers, magic first.
        let hdr: &RegistryHeader =
            unsafe { shm::structure_header(&handler, offset, REGISTRY_MAGIC) }.map_err(
                |e| match e {
                    NotThere::NoBlock => not("no live block of a registry's size there"),
                    NotThere::WrongMagic => not("wrong magic"),
                },
            )?;
        let capacity = hdr.capacity.load(Relaxed);
        if capacity == 0 || capacity > MAX_REGISTRY_CAPACITY {
            return Err(not("impossible capacity"));
        }
        checked_region(
            &handler,
            offset,
            HEADER_BYTES + capacity as u64 * ENTRY_BYTES,
        )
        .map_err(|_| not("block smaller than its recorded capacity"))?;
        Ok(Registry {
            handler,
            offset,
            capacity,
        })
    }

    /// Payload offset of the registry block.
    pub fn offset(&self) -> u32 {
        self.offset
    }

    /// How many names it can hold.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    fn header(&self) -> &RegistryHeader {
        // SAFETY: `offset` was validated for the header and all entries at
        // construction; the handler keeps the mapping alive.
        unsafe { shm::shared(&self.handler, self.offset as u64) }
    }

    fn entry(&self, index: u32) -> &Entry {
        debug_assert!(index < self.capacity);
        let at = self.offset as u64 + HEADER_BYTES + index as u64 * ENTRY_BYTES;
        // SAFETY: index < capacity, and the region for `capacity` entries
        // was validated at construction; 8-aligned (offset 16-aligned, sizes
        // multiples of 8).
        unsafe { shm::shared(&self.handler, at) }
    }

    /// Copies an entry; `None` if a writer kept it busy through every try.
    fn read(&self, e: &Entry) -> Option<Snapshot> {
        Snapshot::read(e)
    }

    /// Rewrites an entry under the lock, as a seqlock writer.
    fn write(&self, e: &Entry, change: impl FnOnce(&Entry)) {
        let v = e.version.load(Relaxed);
        // Relaxed + Release fence: readers that see a field written below
        // also see the odd version (their Acquire fence pairs with this one).
        e.version.store(v | 1, Relaxed);
        fence(Release);
        change(e);
        // Release: readers that see the even version see the whole change.
        e.version.store((v | 1).wrapping_add(1), Release);
    }

    fn lookup(&self, words: &[u64; 8], len: usize) -> Lookup {
        let mut busy = false;
        for i in 0..self.capacity {
            match self.read(self.entry(i)) {
                Some(s) if s.is(words, len) => return Lookup::Found(s),
                Some(_) => {}
                None => busy = true,
            }
        }
        if busy {
            Lookup::Busy
        } else {
            Lookup::Missing
        }
    }

    fn validated(name: &str) -> Result<[u64; 8], RegistryError> {
        match name_problem(name) {
            Some(reason) => Err(RegistryError::InvalidName {
                name: name.to_owned(),
                reason,
            }),
            None => Ok(name_words(name)),
        }
    }

    fn checked(name: &str, s: Snapshot, expected: TypeFingerprint) -> Result<u32, RegistryError> {
        if s.fingerprint != expected {
            return Err(RegistryError::TypeMismatch {
                name: name.to_owned(),
                expected,
                found: s.fingerprint,
            });
        }
        Ok(s.offset)
    }

    /// The entry registered under `name`, whatever its type.
    pub fn lookup_entry(&self, name: &str) -> Result<RegistryEntry, RegistryError> {
        let words = Self::validated(name)?;
        let found = match self.lookup(&words, name.len()) {
            Lookup::Found(s) => Some(s),
            Lookup::Missing => None,
            Lookup::Busy => {
                let _guard = self.lock();
                match self.lookup(&words, name.len()) {
                    Lookup::Found(s) => Some(s),
                    _ => None,
                }
            }
        };
        found
            .map(|s| s.entry())
            .ok_or_else(|| RegistryError::NotFound {
                name: name.to_owned(),
            })
    }

    /// The payload offset registered under `name`, if its type is `expected`.
    pub fn find(&self, name: &str, expected: TypeFingerprint) -> Result<u32, RegistryError> {
        let entry = self.lookup_entry(name)?;
        if entry.fingerprint != expected {
            return Err(RegistryError::TypeMismatch {
                name: name.to_owned(),
                expected,
                found: entry.fingerprint,
            });
        }
        Ok(entry.offset)
    }

    /// Finds `name` as a `T`, or creates it: exactly one of several
    /// processes racing on the name runs `init`, whose value is moved into a
    /// new block before the block is given to the segment and published
    /// under the name; the others wait for it and get its block. Returns the
    /// block and whether this call created it.
    ///
    /// The name records `T`'s fingerprint (its type name and layout,
    /// [`TypeFingerprint::derived`]), so a process asking for another type
    /// is refused with [`RegistryError::TypeMismatch`]. Errors of `init`
    /// come out as they are; the registry's own errors through
    /// `E: From<RegistryError>`. `init` runs under the registry's lock: it
    /// must not use this registry.
    ///
    /// ```
    /// use matrix_handler::{HandlerFunctions, MatrixHandler, ShmSafe};
    /// use matrix_internals::{Registry, RegistryError};
    /// use std::sync::atomic::{AtomicU64, Ordering};
    ///
    /// #[derive(ShmSafe)]
    /// #[repr(C)]
    /// struct Hits { count: AtomicU64 }
    ///
    /// let h = MatrixHandler::bootstrap(None, 1 << 20)?;
    /// let registry = Registry::root(&h)?;
    /// let (hits, created) = registry
    ///     .find_or_create("hits", || Ok::<_, RegistryError>(Hits { count: AtomicU64::new(0) }))?;
    /// assert!(created);
    /// h.get(&hits)?.count.fetch_add(1, Ordering::Relaxed);
    /// let (again, created) = registry.find_or_create("hits", || -> Result<Hits, RegistryError> {
    ///     unreachable!("it exists")
    /// })?;
    /// assert!(!created);
    /// assert_eq!(h.get(&again)?.count.load(Ordering::Relaxed), 1);
    /// # Ok::<(), RegistryError>(())
    /// ```
    pub fn find_or_create<T: ShmSafe, E: From<RegistryError>>(
        &self,
        name: &str,
        init: impl FnOnce() -> Result<T, E>,
    ) -> Result<(Block<T>, bool), E> {
        let made = self.find_or_create_with(name, TypeFingerprint::derived::<T>(), || {
            let value = init().map_err(Made::Init)?;
            let block = self.handler.allocate_with(value).map_err(Made::Handler)?;
            Ok(block.offset())
        });
        let (offset, created) = match made {
            Ok(found) => found,
            Err(Failed::Registry(e)) => return Err(e.into()),
            Err(Failed::Create(Made::Handler(e))) => {
                return Err(RegistryError::CreateFailed(e).into())
            }
            Err(Failed::Create(Made::Init(e))) => return Err(e),
        };
        let block = self
            .handler
            .block_at::<T>(offset)
            .map_err(RegistryError::from)?;
        Ok((block, created))
    }

    /// The block registered under `name`, if it was made for a `T` by
    /// [`find_or_create`](Self::find_or_create).
    pub fn find_block<T: ShmSafe>(&self, name: &str) -> Result<Block<T>, RegistryError> {
        let offset = self.find(name, TypeFingerprint::derived::<T>())?;
        Ok(self.handler.block_at::<T>(offset)?)
    }

    /// Finds `name`, or creates it with `create`, which allocates and
    /// initializes the object and returns its payload offset: the untyped
    /// form, for objects with a variable tail (a queue's ring, a map's
    /// slots). Returns the offset and whether this call created it.
    ///
    /// Run by several processes at once, exactly one runs `create`; the
    /// others wait for it and get its object. The created block is given to
    /// the segment before the name is published, so it outlives its creator
    /// and recovery never frees a published object. `create` runs under the
    /// registry's lock: it must not use this registry itself.
    pub fn find_or_create_raw(
        &self,
        name: &str,
        expected: TypeFingerprint,
        create: impl FnOnce() -> Result<u32, HandlerError>,
    ) -> Result<(u32, bool), RegistryError> {
        self.find_or_create_with(name, expected, create)
            .map_err(|e| match e {
                Failed::Registry(e) => e,
                Failed::Create(e) => RegistryError::CreateFailed(e),
            })
    }

    fn find_or_create_with<E>(
        &self,
        name: &str,
        expected: TypeFingerprint,
        create: impl FnOnce() -> Result<u32, E>,
    ) -> Result<(u32, bool), Failed<E>> {
        let words = Self::validated(name).map_err(Failed::Registry)?;
        if let Lookup::Found(s) = self.lookup(&words, name.len()) {
            return Self::checked(name, s, expected)
                .map(|o| (o, false))
                .map_err(Failed::Registry);
        }
        let _guard = self.lock();
        if let Lookup::Found(s) = self.lookup(&words, name.len()) {
            return Self::checked(name, s, expected)
                .map(|o| (o, false))
                .map_err(Failed::Registry);
        }
        let e = (0..self.capacity)
            .map(|i| self.entry(i))
            .find(|e| self.read(e).is_some_and(|s| s.state == EMPTY))
            .ok_or(Failed::Registry(RegistryError::Full {
                capacity: self.capacity,
            }))?;
        let me = self.handler.matrix().owner_id().0;
        // Relaxed (all fields): inside a seqlock write; see `write`.
        self.write(e, |e| {
            e.creator.store(me, Relaxed);
            e.name_len.store(name.len() as u32, Relaxed);
            for (w, v) in e.name.iter().zip(words) {
                w.store(v, Relaxed);
            }
            e.offset.store(0, Relaxed);
            e.size.store(expected.size, Relaxed);
            e.align.store(expected.align, Relaxed);
            e.type_id.store(expected.type_id, Relaxed);
            e.state.store(CREATING, Relaxed);
        });
        // Empties the entry again if creation fails or panics.
        let undo = Undo {
            registry: self,
            entry: e,
        };
        fault::at(fault::REGISTRY_CREATING);
        let offset = create().map_err(Failed::Create)?;
        // Relaxed: inside a seqlock write.
        self.write(e, |e| e.offset.store(offset, Relaxed));
        let header = offset
            .checked_sub(BLOCK_HEADER_SIZE)
            .ok_or(HandlerError::InvalidOffset(offset));
        header
            .and_then(|h| {
                self.handler
                    .matrix()
                    .set_owner(h, None, OwnerId::SEGMENT)
                    .map_err(HandlerError::from)
            })
            .map_err(|e| Failed::Registry(RegistryError::CreateFailed(e)))?;
        std::mem::forget(undo);
        // Relaxed: inside a seqlock write.
        self.write(e, |e| e.state.store(READY, Relaxed));
        Ok((offset, true))
    }

    /// [`find_or_create_raw`](Self::find_or_create_raw) for a plain-old-data object
    /// in its own block: `init` gives its first value.
    pub fn find_or_create_pod<T: Pod>(
        &self,
        name: &str,
        type_id: u64,
        init: impl FnOnce() -> T,
    ) -> Result<(Block<T>, bool), RegistryError> {
        let (offset, created) =
            self.find_or_create_raw(name, TypeFingerprint::of::<T>(type_id), || {
                let mut block = self.handler.allocate_slice::<T>(1)?;
                self.handler.write_pod(&mut block, init())?;
                Ok(block.offset())
            })?;
        Ok((self.handler.block_at::<T>(offset)?, created))
    }

    /// The plain-old-data object registered under `name` as a `T`.
    pub fn find_pod<T: Pod>(&self, name: &str, type_id: u64) -> Result<Block<T>, RegistryError> {
        let offset = self.find(name, TypeFingerprint::of::<T>(type_id))?;
        Ok(self.handler.block_at::<T>(offset)?)
    }

    /// Removes `name` and returns what it held. The object itself is left
    /// alone: free it (`free_raw(entry.payload())`) once no process uses it.
    pub fn remove(&self, name: &str) -> Result<RegistryEntry, RegistryError> {
        let words = Self::validated(name)?;
        let _guard = self.lock();
        for i in 0..self.capacity {
            let e = self.entry(i);
            if let Some(s) = self.read(e).filter(|s| s.is(&words, name.len())) {
                // Relaxed: inside a seqlock write.
                self.write(e, |e| {
                    e.state.store(EMPTY, Relaxed);
                    e.name_len.store(0, Relaxed);
                });
                return Ok(s.entry());
            }
        }
        Err(RegistryError::NotFound {
            name: name.to_owned(),
        })
    }

    /// Every registered name (weakly consistent under concurrent changes).
    pub fn entries(&self) -> Vec<RegistryEntry> {
        (0..self.capacity)
            .filter_map(|i| self.read(self.entry(i)))
            .filter(|s| s.state == READY)
            .map(|s| s.entry())
            .collect()
    }

    /// Takes the registry lock; see the module docs.
    fn lock(&self) -> LockGuard<'_> {
        let hdr = self.header();
        let matrix = self.handler.matrix();
        let me = matrix.owner_id().0;
        let backoff = Backoff::new();
        loop {
            // Acquire: pairs with the unlock's Release, so the previous
            // holder's entry writes are visible.
            let holder = match hdr.lock.compare_exchange(0, me, Acquire, Relaxed) {
                Ok(_) => return LockGuard { hdr },
                Err(holder) => holder,
            };
            if !backoff.is_completed() {
                backoff.snooze();
                continue;
            }
            if holder != 0 && !owner_alive(matrix, holder) {
                // Acquire: as above; the dead holder's writes are visible.
                if hdr
                    .lock
                    .compare_exchange(holder, me, Acquire, Relaxed)
                    .is_ok()
                {
                    self.roll_back_dead_holder();
                    return LockGuard { hdr };
                }
                continue;
            }
            // Relaxed + SeqCst fence: with the unlock's store + fence, either
            // it sees this waiter or the futex sees the word changed.
            hdr.lock_waiters.fetch_add(1, Relaxed);
            fence(SeqCst);
            shm::futex_wait(&hdr.lock, holder, HOLDER_CHECK);
            hdr.lock_waiters.fetch_sub(1, Relaxed);
        }
    }

    /// Repairs what a lock holder killed mid-change left behind: a torn
    /// entry gets an even version again; a `CREATING` entry is published if
    /// its object was complete and given to the segment, else emptied (its
    /// block, still owned by the dead creator, goes back with `recover()`).
    fn roll_back_dead_holder(&self) {
        for i in 0..self.capacity {
            let e = self.entry(i);
            let v = e.version.load(Relaxed);
            if v & 1 == 1 {
                // Release: readers that see the even version see the fields as they are.
                e.version.store(v.wrapping_add(1), Release);
            }
            if e.state.load(Relaxed) != CREATING {
                continue;
            }
            let offset = e.offset.load(Relaxed);
            let complete = offset != 0 && self.given_to_segment(offset);
            // Relaxed: inside a seqlock write.
            self.write(e, |e| {
                e.state.store(if complete { READY } else { EMPTY }, Relaxed)
            });
        }
    }

    fn given_to_segment(&self, offset: u32) -> bool {
        let Some(header) = offset.checked_sub(BLOCK_HEADER_SIZE) else {
            return false;
        };
        match self.handler.matrix().block_header(header) {
            // Acquire: pairs with the Release of the state word's last change.
            Ok((hdr, _)) => {
                let word = hdr.state.load(Acquire);
                state::is_live(state::state_of(word)) && state::owner_of(word) == OwnerId::SEGMENT.0
            }
            Err(_) => false,
        }
    }
}

impl<H: HandlerFunctions> fmt::Debug for Registry<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("offset", &self.offset)
            .field("capacity", &self.capacity)
            .finish()
    }
}

/// Why a creation under a name did not happen.
enum Failed<E> {
    Registry(RegistryError),
    Create(E),
}

/// Why the typed creation closure failed.
enum Made<E> {
    Init(E),
    Handler(HandlerError),
}

/// Empties a `CREATING` entry whose creation did not finish.
struct Undo<'r, H: HandlerFunctions> {
    registry: &'r Registry<H>,
    entry: &'r Entry,
}

impl<H: HandlerFunctions> Drop for Undo<'_, H> {
    fn drop(&mut self) {
        // Relaxed: inside a seqlock write.
        self.registry
            .write(self.entry, |e| e.state.store(EMPTY, Relaxed));
    }
}

/// Releases the registry lock on drop (also when a creation closure panics).
struct LockGuard<'a> {
    hdr: &'a RegistryHeader,
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        // Release: the entry writes made under the lock are visible to the
        // next holder's Acquire.
        self.hdr.lock.store(0, Release);
        // SeqCst fence: pairs with the waiter's fence (see `lock`).
        fence(SeqCst);
        if self.hdr.lock_waiters.load(Relaxed) != 0 {
            shm::futex_wake(&self.hdr.lock, i32::MAX);
        }
    }
}
