//! Containers across processes: a record written by one process is read
//! in place and freed by another; a writer SIGKILLed at every resize crash
//! point while growing a vector leaves, after an online `recover()`,
//! exactly one live buffer with its elements, and nothing else.

mod common;

use common::{spawn, watchdog, SegmentGuard, ROLE, SEGMENT};
use matrix_core::fault;
use matrix_handler::{BlockToken, HandlerFunctions, MatrixHandler, ShmSafe};
use matrix_internals::dynamic::{OwnsBlocks, ShmBox, ShmString, ShmVec};
use std::io::Write;
use std::time::Duration;

#[derive(ShmSafe, OwnsBlocks, Clone, Copy)]
#[repr(C)]
struct Record {
    name: ShmString,
    tags: ShmVec<ShmString>,
    samples: ShmVec<f64>,
}

#[test]
fn child_role_dyn() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    // SAFETY: plain syscall: die with the parent test process.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let h = MatrixHandler::open(&std::env::var(SEGMENT).unwrap()).unwrap();
    match role.as_str() {
        "writer" => {
            let mut tags = ShmVec::new();
            for t in ["left", "wheel", "µ"] {
                tags.push(&h, ShmString::from_str(&h, t).unwrap()).unwrap();
            }
            let mut samples = ShmVec::new();
            for i in 0..5000 {
                samples.push(&h, i as f64 * 0.5).unwrap();
            }
            let rec = Record {
                name: ShmString::from_str(&h, "imu-3").unwrap(),
                tags,
                samples,
            };
            let b = ShmBox::new(&h, rec).unwrap();
            println!("@@{}", b.token().to_u128());
            std::io::stdout().flush().unwrap();
            // Stay attached until the reader is done (our blocks die with us).
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).unwrap();
        }
        "grower" => {
            let point: u32 = std::env::var("POINT").unwrap().parse().unwrap();
            let skip: u32 = std::env::var("SKIP").unwrap().parse().unwrap();
            let mut v = ShmVec::<u64>::with_capacity(&h, 1).unwrap();
            v.push(&h, 0).unwrap();
            v.release_to_segment(&h).unwrap();
            let mut rng = fastrand::Rng::with_seed(point as u64 * 7 + skip as u64);
            let mut filler = Vec::new();
            fault::arm(point, skip);
            for i in 1..400_000u64 {
                v.push(&h, i).unwrap();
                if i % 64 == 0 {
                    if filler.len() < 8 {
                        filler.push(h.allocate_array::<u8>(rng.usize(16..70_000)).unwrap());
                    } else {
                        h.free(filler.swap_remove(rng.usize(0..filler.len())))
                            .unwrap();
                    }
                    h.matrix().flush_thread_cache();
                }
                if i % 5000 == 0 {
                    // Shrinks go through the same path (and its crash points).
                    v.truncate(&h, (i / 2) as usize).unwrap();
                    v.shrink_to_fit(&h).unwrap();
                    v.extend_from_slice(&h, &((i / 2)..i).collect::<Vec<_>>())
                        .unwrap();
                }
            }
            eprintln!("crash point {point} (skip {skip}) never reached");
            std::process::exit(3);
        }
        other => panic!("unknown role {other}"),
    }
    std::process::exit(0);
}

#[test]
fn a_record_written_by_one_process_is_read_in_place_and_freed_by_another() {
    let _dog = watchdog(Duration::from_secs(60));
    let g = SegmentGuard::new("dyn-xproc");
    let h = MatrixHandler::create(g.as_str(), 8 << 20).unwrap();
    let mut child = spawn("child_role_dyn", "writer", g.as_str(), &[]);
    let token: u128 = child.line().expect("token line").parse().unwrap();
    let mut boxed = ShmBox::<Record>::from_token(BlockToken::from_u128(token));
    {
        let r = boxed.get(&h).unwrap();
        assert_eq!(r.name.as_str(&h).unwrap(), "imu-3");
        let tags: Vec<&str> = r
            .tags
            .iter(&h)
            .unwrap()
            .map(|t| t.as_str(&h).unwrap())
            .collect();
        assert_eq!(tags, ["left", "wheel", "µ"]);
        let s = r.samples.as_slice(&h).unwrap();
        assert_eq!(s.len(), 5000);
        assert!(s.iter().enumerate().all(|(i, &x)| x == i as f64 * 0.5));
    }
    boxed.free_blocks(&h).unwrap();
    writeln!(child.child.stdin.as_mut().unwrap()).unwrap();
    assert!(child.wait_success(Duration::from_secs(20)));
    h.recover().unwrap();
    h.consolidate().unwrap();
    assert_eq!(
        h.stats().unwrap().used_bytes,
        0,
        "the reader freed the record whole"
    );
}

#[test]
fn a_writer_killed_while_growing_leaves_one_buffer_at_every_resize_point() {
    let _dog = watchdog(Duration::from_secs(300));
    let mut failures = Vec::new();
    let mut reached = 0;
    for point in fault::REALLOC {
        for skip in [0u32, 2] {
            let g = SegmentGuard::new("dyn-grow");
            let h = MatrixHandler::create(g.as_str(), 16 << 20).unwrap();
            let mut child = spawn(
                "child_role_dyn",
                "grower",
                g.as_str(),
                &[("POINT", point.to_string()), ("SKIP", skip.to_string())],
            );
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            let status = loop {
                if let Some(s) = child.child.try_wait().unwrap() {
                    break s;
                }
                assert!(std::time::Instant::now() < deadline, "child hung");
                std::thread::sleep(Duration::from_millis(5));
            };
            use std::os::unix::process::ExitStatusExt;
            if status.signal() != Some(libc::SIGKILL) {
                failures.push(format!(
                    "point {point} skip {skip}: not killed there ({status})"
                ));
                continue;
            }
            reached += 1;
            let report = h.recover().unwrap();
            h.consolidate().unwrap();
            let live: Vec<_> = h
                .matrix()
                .blocks()
                .map(|b| b.unwrap())
                .filter(|b| {
                    matrix_core::state::is_live(b.state) || b.state == matrix_core::state::RESIZING
                })
                .collect();
            if live.len() != 1 || live[0].owner != matrix_core::OwnerId::SEGMENT {
                failures.push(format!(
                    "point {point} skip {skip}: live after recovery {live:?} ({report:?})"
                ));
                continue;
            }
            // The survivor holds 0, 1, 2, … from its start.
            let b = h.block_at::<u64>(live[0].payload_offset()).unwrap();
            let words = h.get_slice(&b).unwrap();
            if words.first() != Some(&0) || words.get(1).is_some_and(|&w| w != 1 && w != 0) {
                failures.push(format!(
                    "point {point} skip {skip}: survivor starts {:?}",
                    &words[..4.min(words.len())]
                ));
            }
            h.free(b).unwrap();
            h.consolidate().unwrap();
            let s = h.stats().unwrap();
            if s.used_bytes != 0 || s.free_blocks > 1 {
                failures.push(format!(
                    "point {point} skip {skip}: after freeing the survivor {s:?}"
                ));
            }
        }
    }
    println!("    {reached} kills at resize points");
    assert!(failures.is_empty(), "{failures:#?}");
}
