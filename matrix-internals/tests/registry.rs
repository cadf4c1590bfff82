//! Registry: names, types, removal, a race of four processes on one name,
//! and a creator killed inside its creation closure.

mod common;

use common::{spawn, watchdog, ChildGuard, SegmentGuard, ROLE, SEGMENT};
use matrix_handler::{HandlerError, HandlerFunctions, MatrixHandler};
use matrix_internals::tables::{type_id, TypeFingerprint, ROOT_CAPACITY};
use matrix_internals::{Registry, RegistryError};
use std::io::{BufRead, Write};
use std::time::Duration;

const COUNTER: u64 = type_id("tests::Counter v1");

fn fp() -> TypeFingerprint {
    TypeFingerprint::of::<[u64; 4]>(COUNTER)
}

#[test]
fn find_or_create_find_remove() {
    let h = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    let r = Registry::root(&h).unwrap();
    assert_eq!(r.capacity(), ROOT_CAPACITY);
    assert_eq!(
        Registry::root(&h).unwrap().offset(),
        r.offset(),
        "one root per segment"
    );
    assert_eq!(
        h.matrix()
            .header()
            .root_registry
            .load(std::sync::atomic::Ordering::Acquire),
        r.offset()
    );

    let (block, created) = r
        .find_or_create_pod::<[u64; 4]>("counters", COUNTER, || [1, 2, 3, 4])
        .unwrap();
    assert!(created);
    let (again, created) = r
        .find_or_create_pod::<[u64; 4]>("counters", COUNTER, || unreachable!())
        .unwrap();
    assert!(!created);
    assert_eq!(again.offset(), block.offset());
    assert_eq!(h.read_pod(&again).unwrap(), [1, 2, 3, 4]);
    assert_eq!(r.find("counters", fp()).unwrap(), block.offset());
    assert_eq!(
        r.find_pod::<[u64; 4]>("counters", COUNTER)
            .unwrap()
            .offset(),
        block.offset()
    );

    // Wrong type: by id, by size.
    let err = r
        .find("counters", TypeFingerprint::of::<[u64; 4]>(COUNTER + 1))
        .unwrap_err();
    assert!(matches!(err, RegistryError::TypeMismatch { .. }), "{err}");
    assert!(matches!(
        r.find_pod::<[u64; 2]>("counters", COUNTER),
        Err(RegistryError::TypeMismatch { .. })
    ));
    assert!(matches!(
        r.find_or_create_raw(
            "counters",
            TypeFingerprint::of::<u8>(COUNTER),
            || unreachable!()
        ),
        Err(RegistryError::TypeMismatch { .. })
    ));
    // Missing, invalid names.
    assert!(matches!(
        r.find("nope", fp()),
        Err(RegistryError::NotFound { .. })
    ));
    for bad in ["", "with space", &"x".repeat(64)] {
        assert!(
            matches!(r.find(bad, fp()), Err(RegistryError::InvalidName { .. })),
            "{bad:?}"
        );
    }
    assert!(r
        .find(&"x".repeat(63), fp())
        .is_err_and(|e| matches!(e, RegistryError::NotFound { .. })));

    let entries = r.entries();
    assert_eq!(entries.len(), 1);
    assert_eq!(
        (entries[0].name.as_str(), entries[0].fingerprint),
        ("counters", fp())
    );
    assert_eq!(entries[0].creator, h.matrix().owner_id());

    // A failed creation registers nothing.
    let failed = r.find_or_create_raw("broken", fp(), || Err(HandlerError::InvalidOffset(1)));
    assert!(matches!(failed, Err(RegistryError::CreateFailed(_))));
    assert!(matches!(
        r.find("broken", fp()),
        Err(RegistryError::NotFound { .. })
    ));

    let removed = r.remove("counters").unwrap();
    assert_eq!(removed.offset, block.offset());
    assert!(matches!(
        r.find("counters", fp()),
        Err(RegistryError::NotFound { .. })
    ));
    assert!(matches!(
        r.remove("counters"),
        Err(RegistryError::NotFound { .. })
    ));
    h.free(block).unwrap();
}

#[test]
fn a_full_registry_is_an_error_and_entries_are_reused() {
    let h = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    let r = Registry::create(&h, 4).unwrap();
    let mut blocks = Vec::new();
    for i in 0..4 {
        blocks.push(
            r.find_or_create_pod::<u64>(&format!("n{i}"), 1, || i)
                .unwrap()
                .0,
        );
    }
    assert!(matches!(
        r.find_or_create_pod::<u64>("n4", 1, || 4),
        Err(RegistryError::Full { capacity: 4 })
    ));
    r.remove("n2").unwrap();
    let (b, created) = r.find_or_create_pod::<u64>("n4", 1, || 4).unwrap();
    assert!(created);
    assert_eq!(h.read_pod(&b).unwrap(), 4);
    assert_eq!(h.read_pod(&r.find_pod::<u64>("n3", 1).unwrap()).unwrap(), 3);
    // Opened by offset; garbage refused.
    assert_eq!(
        Registry::open_at(&h, r.offset()).unwrap().entries().len(),
        4
    );
    let raw = h.allocate_raw(1024).unwrap();
    assert!(matches!(
        Registry::open_at(&h, raw.offset()),
        Err(RegistryError::NotARegistry { .. })
    ));
    assert!(matches!(
        Registry::open_at(&h, 7),
        Err(RegistryError::NotARegistry { .. })
    ));
}

#[test]
fn threads_racing_create_exactly_one() {
    let h = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    let creations = std::sync::atomic::AtomicU32::new(0);
    let barrier = std::sync::Barrier::new(4);
    let offsets: Vec<u32> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..4)
            .map(|_| {
                let (h, creations, barrier) = (h.share(), &creations, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    let r = Registry::root(&h).unwrap();
                    r.find_or_create_raw("shared", fp(), || {
                        creations.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(20));
                        Ok(h.allocate::<[u64; 4]>()?.offset())
                    })
                    .unwrap()
                    .0
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert_eq!(creations.into_inner(), 1);
    assert!(offsets.iter().all(|&o| o == offsets[0]));
}

#[test]
fn child_role() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    // SAFETY: plain syscall: die with the parent test process.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let h = MatrixHandler::open(&std::env::var(SEGMENT).unwrap()).unwrap();
    match role.as_str() {
        "racer" => {
            println!("@@ready");
            let mut go = String::new();
            std::io::stdin().lock().read_line(&mut go).unwrap();
            let r = Registry::root(&h).unwrap();
            let (offset, created) = r
                .find_or_create_raw("race", fp(), || {
                    // Widen the window so the others queue up behind the lock.
                    std::thread::sleep(Duration::from_millis(50));
                    let mut b = h.allocate::<[u64; 4]>()?;
                    h.write_pod(&mut b, [std::process::id() as u64, 0, 0, 0])?;
                    Ok(b.offset())
                })
                .unwrap();
            let wrong = r.find("race", TypeFingerprint::of::<[u32; 4]>(COUNTER));
            let refused = matches!(wrong, Err(RegistryError::TypeMismatch { .. }));
            println!("@@{created} {offset} {refused}");
        }
        "dying-creator" => {
            let r = Registry::root(&h).unwrap();
            matrix_internals::fault::arm(matrix_internals::fault::REGISTRY_CREATING);
            let _ = r.find_or_create_raw("orphan", fp(), || Ok(h.allocate::<[u64; 4]>()?.offset()));
            println!("@@survived");
        }
        other => panic!("unknown role {other}"),
    }
    std::process::exit(0);
}

#[test]
fn four_processes_race_find_or_create_and_one_creates() {
    let _dog = watchdog(Duration::from_secs(60));
    let g = SegmentGuard::new("reg-race");
    let h = MatrixHandler::create(g.name(), 1 << 20).unwrap();
    let mut racers: Vec<ChildGuard> = (0..4)
        .map(|_| spawn("child_role", "racer", g.name(), &[]))
        .collect();
    for c in &mut racers {
        assert_eq!(c.line().as_deref(), Some("ready"));
    }
    for c in &mut racers {
        writeln!(c.child.stdin.as_mut().unwrap(), "go").unwrap();
    }
    let mut results = Vec::new();
    for c in &mut racers {
        let line = c.line().expect("racer report");
        let parts: Vec<&str> = line.split(' ').collect();
        results.push((
            parts[0] == "true",
            parts[1].parse::<u32>().unwrap(),
            parts[2] == "true",
        ));
        assert!(c.wait_success(Duration::from_secs(20)));
    }
    assert_eq!(
        results.iter().filter(|r| r.0).count(),
        1,
        "exactly one creation: {results:?}"
    );
    assert!(
        results.iter().all(|r| r.1 == results[0].1),
        "everyone got the same object: {results:?}"
    );
    assert!(
        results.iter().all(|r| r.2),
        "a wrong type is refused: {results:?}"
    );
    let r = Registry::root(&h).unwrap();
    assert_eq!(r.entries().len(), 1);
    // The racers also raced to create the root registry: one root and one
    // object belong to the segment, the losers' blocks were freed.
    h.recover().unwrap();
    let given = matrix_internals::iter::owned_by(&h, matrix_core::OwnerId::SEGMENT).count();
    assert_eq!(given, 2);
    let b = r.find_pod::<[u64; 4]>("race", COUNTER).unwrap();
    assert_eq!(b.offset(), results[0].1);
    // The creator exited; its object belongs to the segment and survives recovery.
    h.recover().unwrap();
    assert!(h.read_pod(&b).unwrap()[0] > 0);
}

#[test]
fn a_creator_killed_inside_its_closure_is_rolled_back() {
    let _dog = watchdog(Duration::from_secs(60));
    let g = SegmentGuard::new("reg-dead");
    let h = MatrixHandler::create(g.name(), 1 << 20).unwrap();
    let mut child = spawn("child_role", "dying-creator", g.name(), &[]);
    assert_eq!(child.line(), None, "killed at the crash point");
    assert!(!child.wait_success(Duration::from_secs(20)));
    let r = Registry::root(&h).unwrap();
    // The half-made entry is invisible, and the dead holder's lock is taken over.
    assert!(matches!(
        r.find("orphan", fp()),
        Err(RegistryError::NotFound { .. })
    ));
    let (b, created) = r
        .find_or_create_pod::<[u64; 4]>("orphan", COUNTER, || [9; 4])
        .unwrap();
    assert!(created);
    assert_eq!(h.read_pod(&b).unwrap(), [9; 4]);
    assert_eq!(r.entries().len(), 1);
}
