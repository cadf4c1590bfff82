//! Reading the registry and the queues from a read-only `Observer` (no
//! participant slot): what is registered, of which kind, and each queue's
//! depth, capacity and sleepers; and hostile bytes in either give a typed
//! error or a damaged entry, never a panic.

mod common;

use common::SegmentGuard;
use matrix_core::{Observer, OwnerId, BLOCK_HEADER_SIZE};
use matrix_handler::{HandlerFunctions, MatrixHandler, ShmSafe};
use matrix_internals::inspect::{EntryState, InspectError, ObjectKind, QueueStats, RegistryRecord};
use matrix_internals::{Registry, RegistryError, ShmHashMap, WorkQueue};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

#[derive(ShmSafe)]
#[repr(C)]
struct Hits {
    count: AtomicU64,
}

/// Polls `f` until it holds, for at most 30 s (never asserts a duration).
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

fn record(name: &str) -> RegistryRecord {
    RegistryRecord::root(&Observer::open(name).unwrap())
        .unwrap()
        .expect("a root registry")
}

#[test]
fn a_segment_without_a_registry_has_none() {
    let name = SegmentGuard::new("inspect-none");
    let _h = MatrixHandler::create(&name, 1 << 20).unwrap();
    assert_eq!(
        RegistryRecord::root(&Observer::open(&name).unwrap()).unwrap(),
        None
    );
}

#[test]
fn entries_kinds_and_queue_counters_are_read_without_attaching() {
    let name = SegmentGuard::new("inspect-entries");
    let h = MatrixHandler::create(&name, 4 << 20).unwrap();
    let registry = Registry::root(&h).unwrap();
    registry
        .find_or_create("hits", || {
            Ok::<_, RegistryError>(Hits {
                count: AtomicU64::new(0),
            })
        })
        .unwrap();
    registry.find_or_create_pod("limit", 7, || 42u64).unwrap();
    let _map = ShmHashMap::<u64, u64, _>::open_or_create(&h, "prices", 64).unwrap();
    let full = WorkQueue::<u64, _>::create(h.share(), "jobs", 4).unwrap();
    for i in 0..4 {
        let mut b = h.allocate::<u64>().unwrap();
        h.write_pod(&mut b, i).unwrap();
        full.try_push(b).unwrap();
    }
    let empty = WorkQueue::<u64, _>::create(h.share(), "idle", 8).unwrap();

    // A producer asleep on the full queue, a consumer asleep on the empty one.
    let blocked = h.allocate::<u64>().unwrap();
    let pusher = {
        let q = full.clone();
        std::thread::spawn(move || q.push_timeout(blocked, Duration::from_secs(60)).is_ok())
    };
    let popper = {
        let q = empty.clone();
        std::thread::spawn(move || {
            q.pop_timeout(Duration::from_secs(60))
                .ok()
                .map(|b| b.offset())
        })
    };
    let view = Observer::open(&name).unwrap();
    let queue_at = |n: &str| registry.lookup_entry(n).unwrap().offset;
    assert!(
        eventually(|| {
            let f = QueueStats::read(&view, queue_at("jobs")).unwrap();
            let e = QueueStats::read(&view, queue_at("idle")).unwrap();
            f.producers_waiting == 1 && e.consumers_waiting == 1
        }),
        "the sleepers never showed"
    );

    let r = record(&name);
    assert_eq!(r.capacity, matrix_internals::tables::ROOT_CAPACITY);
    assert!(r.damaged.is_empty(), "{:?}", r.damaged);
    let names: Vec<&str> = r.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["hits", "limit", "prices", "jobs", "idle"]);
    let kind = |n: &str| {
        let e = r.entries.iter().find(|e| e.name == n).unwrap();
        assert_eq!(e.state, EntryState::Ready);
        assert_eq!(e.creator, h.matrix().owner_id());
        let block = e.object.clone().unwrap().unwrap();
        assert!(block.payload_bytes >= e.fingerprint.size);
        assert_eq!(
            block.owner,
            OwnerId::SEGMENT,
            "published objects are the segment's"
        );
        block.kind
    };
    assert_eq!(kind("hits"), ObjectKind::Other);
    assert_eq!(kind("limit"), ObjectKind::Other);
    assert_eq!(kind("prices"), ObjectKind::HashMap);
    assert_eq!(kind("jobs"), ObjectKind::WorkQueue);
    assert_eq!(kind("idle"), ObjectKind::WorkQueue);
    let limit = r.entries.iter().find(|e| e.name == "limit").unwrap();
    assert_eq!(limit.fingerprint.type_id, 7);
    assert_eq!(limit.fingerprint.size, 8);

    let jobs = QueueStats::read(&view, queue_at("jobs")).unwrap();
    assert_eq!((jobs.capacity, jobs.depth), (4, 4));
    assert_eq!((jobs.producers_waiting, jobs.consumers_waiting), (1, 0));
    assert!(!jobs.closed);
    assert_eq!(jobs, full.stats().unwrap(), "a handle reads the same");
    let idle = QueueStats::read(&view, queue_at("idle")).unwrap();
    assert_eq!((idle.capacity, idle.depth), (8, 0));
    assert_eq!((idle.producers_waiting, idle.consumers_waiting), (0, 1));
    // Not a queue: refused by magic, not misread.
    assert!(matches!(
        QueueStats::read(&view, queue_at("prices")),
        Err(InspectError::WrongMagic { .. })
    ));

    full.close();
    empty.close();
    assert!(!pusher.join().unwrap(), "a closed queue refuses the push");
    assert_eq!(popper.join().unwrap(), None);
    let closed = QueueStats::read(&view, queue_at("jobs")).unwrap();
    assert!(closed.closed);
    assert_eq!(closed.producers_waiting, 0, "the sleeper left");
    // Looking attached no participant.
    assert_eq!(view.participants().len(), 1, "only the handler's own slot");
}

/// Payload offset of the root registry and the byte offset of entry `i`.
fn entry_at(h: &MatrixHandler, i: u32) -> usize {
    let root = h.matrix().header().root_registry.load(SeqCst);
    root as usize + 32 + i as usize * 104
}

fn word32(h: &MatrixHandler, at: usize) -> &AtomicU32 {
    // SAFETY: the tests only name offsets inside the root registry block,
    // 4-aligned; the handler keeps the mapping alive.
    unsafe { &*(h.base_ptr().add(at) as *const AtomicU32) }
}

#[test]
fn damaged_entries_are_reported_each_on_its_own() {
    let name = SegmentGuard::new("inspect-damage");
    let h = MatrixHandler::create(&name, 2 << 20).unwrap();
    let registry = Registry::root(&h).unwrap();
    for n in ["a", "b", "c", "d", "e", "f"] {
        registry.find_or_create_pod(n, 1, || 0u64).unwrap();
    }
    // Entry fields: version 0, state 4, creator 8, name_len 12, offset 16,
    // name from 40.
    word32(&h, entry_at(&h, 0) + 4).store(9, SeqCst);
    word32(&h, entry_at(&h, 1) + 12).store(200, SeqCst);
    word32(&h, entry_at(&h, 2) + 16).store(0xFFFF_FF00, SeqCst);
    word32(&h, entry_at(&h, 3)).store(1, SeqCst); // a writer that never finished
    word32(&h, entry_at(&h, 4) + 40).store(u32::from(b'\n'), SeqCst); // name "\n"
    let r = record(&name);
    let damaged: Vec<u32> = r.damaged.iter().map(|d| d.index).collect();
    assert_eq!(damaged, [0, 1, 3, 4], "{:#?}", r.damaged);
    assert!(r.damaged[0].what.contains("state 9"), "{:?}", r.damaged[0]);
    assert!(
        r.damaged[1].what.contains("length 200"),
        "{:?}",
        r.damaged[1]
    );
    assert!(r.damaged[2].what.contains("odd"), "{:?}", r.damaged[2]);
    assert!(r.damaged[3].what.contains("not one"), "{:?}", r.damaged[3]);
    let c = r.entries.iter().find(|e| e.name == "c").unwrap();
    assert!(
        matches!(
            c.object,
            Some(Err(InspectError::NoBlock {
                offset: 0xFFFF_FF00,
                ..
            }))
        ),
        "{c:?}"
    );
    let f = r.entries.iter().find(|e| e.name == "f").unwrap();
    assert!(matches!(f.object, Some(Ok(_))), "{f:?}");
}

#[test]
fn a_damaged_registry_or_queue_header_is_a_typed_error() {
    let name = SegmentGuard::new("inspect-header");
    let h = MatrixHandler::create(&name, 2 << 20).unwrap();
    let q = WorkQueue::<u64, _>::create(h.share(), "q", 16).unwrap();
    let root = h.matrix().header().root_registry.load(SeqCst);
    let view = || Observer::open(&name).unwrap();

    // Capacity beyond any registry's, then beyond its block.
    word32(&h, root as usize + 8).store(u32::MAX, SeqCst);
    assert!(matches!(
        RegistryRecord::root(&view()),
        Err(InspectError::Impossible { .. })
    ));
    word32(&h, root as usize + 8).store(60_000, SeqCst);
    assert!(matches!(
        RegistryRecord::root(&view()),
        Err(InspectError::TooSmall { .. })
    ));
    word32(&h, root as usize + 8).store(128, SeqCst);
    assert!(RegistryRecord::root(&view()).is_ok());
    word32(&h, root as usize).store(0, SeqCst);
    assert!(matches!(
        RegistryRecord::root(&view()),
        Err(InspectError::WrongMagic { .. })
    ));

    // The header's root offset pointing anywhere.
    for bogus in [1, 16, 48, root + 8, 1 << 30, u32::MAX] {
        h.matrix().header().root_registry.store(bogus, SeqCst);
        let e = RegistryRecord::root(&view()).unwrap_err();
        assert!(!e.to_string().is_empty());
    }

    // The queue: an impossible capacity, one larger than its block.
    let at = q.offset() as usize;
    word32(&h, at + 8).store(3, SeqCst);
    assert!(matches!(
        QueueStats::read(&view(), q.offset()),
        Err(InspectError::Impossible { .. })
    ));
    word32(&h, at + 8).store(1 << 20, SeqCst);
    assert!(matches!(
        QueueStats::read(&view(), q.offset()),
        Err(InspectError::TooSmall { .. })
    ));
    word32(&h, at + 8).store(16, SeqCst);
    assert_eq!(QueueStats::read(&view(), q.offset()).unwrap().capacity, 16);
    // A head beyond the tail reads as empty, not as a huge depth.
    // SAFETY: the head word of the queue header (offset 256), 8-aligned,
    // inside the queue block.
    let head = unsafe { &*(h.base_ptr().add(at + 256) as *const AtomicU64) };
    head.store(1 << 40, SeqCst);
    assert_eq!(QueueStats::read(&view(), q.offset()).unwrap().depth, 0);
    assert!(QueueStats::read(&view(), q.offset() - BLOCK_HEADER_SIZE).is_err());
}

/// Random bytes over the whole registry block, many times: every read ends
/// in a record or an error.
#[test]
fn random_registry_bytes_never_panic() {
    let name = SegmentGuard::new("inspect-fuzz");
    let h = MatrixHandler::create(&name, 2 << 20).unwrap();
    let registry = Registry::root(&h).unwrap();
    for i in 0..8 {
        registry
            .find_or_create_pod(&format!("n{i}"), i, || i)
            .unwrap();
    }
    let root = h.matrix().header().root_registry.load(SeqCst) as usize;
    let len = 32 + 128 * 104;
    let mut rng = fastrand::Rng::with_seed(11);
    let view = Observer::open(&name).unwrap();
    for round in 0..300 {
        // Keep the magic now and then, so the entries are read too.
        let from = if round % 2 == 0 { 8 } else { 0 };
        for _ in 0..rng.usize(1..64) {
            let at = root + rng.usize(from / 4..len / 4) * 4;
            let value = match rng.u8(0..4) {
                0 => rng.u32(0..4),
                1 => rng.u32(..),
                2 => rng.u32(0..70),
                _ => (root as u32).wrapping_add(rng.u32(0..4096)) & !0xF,
            };
            word32(&h, at).store(value, SeqCst);
        }
        match RegistryRecord::root(&view) {
            Ok(Some(r)) => {
                for e in &r.entries {
                    assert!(!e.name.is_empty() && e.name.len() <= 63);
                    if let Some(Ok(b)) = &e.object {
                        if b.kind == ObjectKind::WorkQueue {
                            let _ = QueueStats::read(&view, e.offset);
                        }
                    }
                }
            }
            Ok(None) => panic!("the root offset was not touched"),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
}
