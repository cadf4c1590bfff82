//! The participant table's size is a create option: the default table
//! admits 64 attachments and refuses the 65th, impossible sizes are typed
//! errors, and a segment made with 1,024 slots holds 256 processes attached
//! at once, each allocating and freeing, with nothing left behind.
//!
//! The processes are this test binary re-run as helpers (`helper_process`,
//! driven by `MATRIX_PARTICIPANTS_HELPER`), killed by a guard if the test
//! fails half-way.

mod common;

use common::SegmentGuard;
use matrix_core::layout::{arena_start_for, DEFAULT_PARTICIPANTS, MAX_PARTICIPANTS};
use matrix_core::{AtomicMatrix, CreateOptions, Liveness, Observer, SegmentError};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const HELPER_ENV: &str = "MATRIX_PARTICIPANTS_HELPER";
/// Processes attached at once.
const PROCESSES: usize = 256;
/// Slots of the segment they share (more than the default, at least 1,024).
const SLOTS: usize = 1024;
/// Blocks each helper holds while all are attached, and then churns.
const BLOCKS: usize = 40;
/// Longest the whole crowd may take to get attached, or to finish.
const WAIT: Duration = Duration::from_secs(120);

fn options(participants: usize) -> CreateOptions {
    CreateOptions {
        participants,
        ..CreateOptions::default()
    }
}

/// Entry point of the helper processes; a no-op in a normal test run.
#[test]
fn helper_process() {
    let Ok(name) = std::env::var(HELPER_ENV) else {
        return;
    };
    let m = AtomicMatrix::open(&name).expect("helper: open");
    let me = std::process::id() as u64;
    let write = |i: usize| -> Vec<(u32, u64)> {
        (0..BLOCKS)
            .map(|k| {
                let size = 16 + ((me as usize + k * 37 + i) % 32) * 16;
                let ptr = m.allocate(size as u64, 0).expect("helper: allocate");
                let seed = me << 32 | (i * BLOCKS + k) as u64;
                // SAFETY: the payload is at least 16 bytes, 16-aligned, and
                // this helper holds the block alone until it frees it.
                unsafe { (m.base_ptr().add(ptr.offset() as usize) as *mut u64).write(seed) };
                (ptr.offset(), seed)
            })
            .collect()
    };
    let check_and_free = |held: Vec<(u32, u64)>| {
        for (offset, seed) in held {
            // SAFETY: as in `write`: a live block this helper wrote.
            let found = unsafe { (m.base_ptr().add(offset as usize) as *const u64).read() };
            assert_eq!(found, seed, "helper: block at {offset} was overwritten");
            m.free(offset - matrix_core::BLOCK_HEADER_SIZE, None)
                .expect("helper: free");
        }
    };
    let held = write(0);
    println!("ready slot={}", m.owner_id().0);
    std::io::stdout().flush().unwrap();
    // Every helper is attached and holding its blocks; go on when told.
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    for round in 1..=10 {
        let more = write(round);
        check_and_free(more);
    }
    check_and_free(held);
    drop(m);
    println!("done");
    std::io::stdout().flush().unwrap();
    std::process::exit(0);
}

/// The helpers, killed and reaped when dropped (also when the test fails).
struct Crowd {
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
    lines: mpsc::Receiver<(usize, String)>,
}

impl Crowd {
    fn spawn(name: &str, n: usize) -> Crowd {
        let exe = std::env::current_exe().unwrap();
        let (tx, lines) = mpsc::channel();
        let mut crowd = Crowd {
            children: Vec::new(),
            stdins: Vec::new(),
            lines,
        };
        for i in 0..n {
            let mut child = Command::new(&exe)
                .args([
                    "--exact",
                    "helper_process",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(HELPER_ENV, name)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn helper");
            crowd.stdins.push(child.stdin.take().unwrap());
            let stdout = child.stdout.take().unwrap();
            crowd.children.push(child);
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if tx.send((i, line)).is_err() {
                        break;
                    }
                }
            });
        }
        crowd
    }

    /// Waits until every helper printed a line containing `word`.
    fn all_said(&self, word: &str) {
        let deadline = Instant::now() + WAIT;
        let mut said = vec![false; self.children.len()];
        while said.iter().any(|s| !s) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((i, line)) if line.contains(word) => said[i] = true,
                Ok(_) => {}
                Err(_) => panic!(
                    "{} of {} helpers did not say {word:?} in time",
                    said.iter().filter(|s| !**s).count(),
                    said.len()
                ),
            }
        }
    }
}

impl Drop for Crowd {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn two_hundred_fifty_six_processes_attach_at_once_and_leave_nothing_behind() {
    let name = SegmentGuard::new("crowd");
    let creator = AtomicMatrix::create_with(name.as_str(), 8 << 20, &options(SLOTS)).unwrap();
    assert_eq!(creator.header().participant_count(), SLOTS);
    assert_eq!(
        creator.first_block_offset(),
        arena_start_for(SLOTS).unwrap(),
        "the arena starts after the whole table"
    );
    let crowd = Crowd::spawn(name.as_str(), PROCESSES);
    crowd.all_said("ready");

    // All of them hold a slot at the same moment, each alive to an observer.
    let observer = Observer::open(name.as_str()).unwrap();
    let attached = observer.participants();
    let alive = attached
        .iter()
        .filter(|p| p.liveness == Liveness::Alive)
        .count();
    assert_eq!(alive, PROCESSES + 1, "the helpers and the creator");
    let mut slots: Vec<usize> = attached.iter().map(|p| p.slot).collect();
    slots.dedup();
    assert_eq!(slots.len(), PROCESSES + 1, "one slot each");
    assert!(
        slots.iter().any(|&s| s >= DEFAULT_PARTICIPANTS),
        "slots beyond the default table are in use"
    );

    let mut crowd = crowd;
    for stdin in &mut crowd.stdins {
        writeln!(stdin, "go").unwrap();
    }
    crowd.all_said("done");
    let deadline = Instant::now() + WAIT;
    for child in &mut crowd.children {
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "a helper did not exit");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(status.success(), "a helper failed: {status}");
    }
    drop(crowd);

    // Each helper freed what it allocated and detached; a recovery finds
    // the detached slots with nothing in them, and one consolidation
    // leaves a single free block.
    let report = creator.recover(false).unwrap();
    assert_eq!(report.blocks, 0, "{report:?}");
    assert_eq!(creator.participants().len(), 1, "only the creator is left");
    creator.consolidate().unwrap();
    let stats = creator.stats().unwrap();
    assert_eq!(stats.used_blocks, 0, "{stats:?}");
    assert_eq!(stats.free_blocks, 1, "{stats:?}");
}

#[test]
fn the_default_table_admits_sixty_four_and_refuses_the_next() {
    let name = SegmentGuard::new("default-table");
    let first = AtomicMatrix::create(name.as_str(), 1 << 20).unwrap();
    assert_eq!(first.header().participant_count(), DEFAULT_PARTICIPANTS);
    let mut others: Vec<AtomicMatrix> = (1..DEFAULT_PARTICIPANTS)
        .map(|_| AtomicMatrix::open(name.as_str()).unwrap())
        .collect();
    match AtomicMatrix::open(name.as_str()) {
        Err(SegmentError::TooManyParticipants { max, .. }) => assert_eq!(max, DEFAULT_PARTICIPANTS),
        other => panic!("the 65th attachment: {:?}", other.map(|m| m.owner_id())),
    }
    // A slot given back is taken again.
    others.pop();
    others.push(AtomicMatrix::open(name.as_str()).unwrap());
}

#[test]
fn a_one_slot_table_works_and_impossible_tables_are_refused() {
    let name = SegmentGuard::new("one-slot");
    let only = AtomicMatrix::create_with(name.as_str(), 1 << 20, &options(1)).unwrap();
    let block = only.allocate(100, 0).unwrap();
    only.free(block.offset() - matrix_core::BLOCK_HEADER_SIZE, None)
        .unwrap();
    assert!(matches!(
        AtomicMatrix::open(name.as_str()),
        Err(SegmentError::TooManyParticipants { max: 1, .. })
    ));
    drop(only);
    // Reopened, the table keeps its size.
    let again = AtomicMatrix::open(name.as_str()).unwrap();
    assert_eq!(again.header().participant_count(), 1);
    drop(again);

    for slots in [0, MAX_PARTICIPANTS + 1, usize::MAX] {
        let name = SegmentGuard::new("impossible");
        match AtomicMatrix::create_with(name.as_str(), 1 << 20, &options(slots)) {
            Err(SegmentError::InvalidParticipantCount { requested, maximum }) => {
                assert_eq!((requested, maximum), (slots, MAX_PARTICIPANTS));
            }
            other => panic!("{slots} slots: {:?}", other.map(|m| m.owner_id())),
        }
        assert!(!std::path::Path::new("/dev/shm")
            .join(name.as_str())
            .exists());
    }

    // The largest table needs its room: a segment too small for it is refused.
    let name = SegmentGuard::new("too-small");
    let start = arena_start_for(MAX_PARTICIPANTS).unwrap() as u64;
    assert!(matches!(
        AtomicMatrix::create_with(name.as_str(), start, &options(MAX_PARTICIPANTS)),
        Err(SegmentError::SizeTooSmall { .. })
    ));
    let big =
        AtomicMatrix::create_with(name.as_str(), start + (1 << 20), &options(MAX_PARTICIPANTS))
            .unwrap();
    assert_eq!(big.header().participant_count(), MAX_PARTICIPANTS);
}
