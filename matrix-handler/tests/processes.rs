//! Several processes on one named segment. The test binary re-executes
//! itself: `child_role` does nothing unless `MATRIX_CHILD_ROLE` is set.

mod common;

use common::{assert_consistent, SegmentGuard};
use matrix_handler::{BlockToken, HandlerFunctions, MatrixHandler};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

const ROLE: &str = "MATRIX_CHILD_ROLE";
const SEGMENT: &str = "MATRIX_CHILD_SEGMENT";

fn pattern(owner: u64, token: u64, i: usize) -> u8 {
    (owner.wrapping_mul(131) ^ token.wrapping_mul(2654435761) ^ i as u64) as u8
}

fn fill(h: &impl HandlerFunctions, off: u32, len: usize, owner: u64, token: u64) {
    // SAFETY: a live block of at least `len` bytes owned by the caller.
    let bytes =
        unsafe { std::slice::from_raw_parts_mut(h.base_ptr().add(off as usize) as *mut u8, len) };
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = pattern(owner, token, i);
    }
}

fn matches(h: &impl HandlerFunctions, off: u32, len: usize, owner: u64, token: u64) -> bool {
    // SAFETY: a live block of at least `len` bytes that nobody writes now.
    let bytes = unsafe { std::slice::from_raw_parts(h.base_ptr().add(off as usize), len) };
    bytes
        .iter()
        .enumerate()
        .all(|(i, &b)| b == pattern(owner, token, i))
}

/// The pattern-checked 70/30 mix; returns mismatches.
fn mix(h: &impl HandlerFunctions, owner: u64, ops: u64) -> u64 {
    let mut rng = fastrand::Rng::with_seed(owner);
    let mut live: Vec<(u32, usize, u64)> = Vec::new();
    let mut bad = 0;
    for n in 0..ops {
        if live.len() < 5_000 && (live.is_empty() || rng.u32(0..100) < 70) {
            let len = rng.usize(32..=544);
            let p = h
                .allocate_raw(len as u32)
                .expect("arena sized for both live sets");
            fill(h, p.offset(), len, owner, n);
            live.push((p.offset(), len, n));
        } else {
            let (off, len, t) = live.swap_remove(rng.usize(0..live.len()));
            bad += u64::from(!matches(h, off, len, owner, t));
            h.free_at(off - 32).unwrap();
        }
    }
    for (off, len, t) in live {
        bad += u64::from(!matches(h, off, len, owner, t));
        h.free_at(off - 32).unwrap();
    }
    bad
}

struct ChildGuard(Child);
impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(role: &str, segment: &str) -> ChildGuard {
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_role", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(SEGMENT, segment)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    ChildGuard(child)
}

/// What the child prints after `@@` (the test harness may put its own
/// "test child_role ... " in front on the same line).
fn protocol_lines(child: &mut ChildGuard) -> impl Iterator<Item = String> + '_ {
    BufReader::new(child.0.stdout.as_mut().unwrap())
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| l.find("@@").map(|i| l[i + 2..].to_owned()))
}

#[test]
fn child_role() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let h = MatrixHandler::open(&std::env::var(SEGMENT).unwrap()).unwrap();
    let out = std::io::stdout();
    match role.as_str() {
        "mixer" => {
            // Free what the parent allocated (tokens on stdin), checking each pattern.
            let mut bad = 0;
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                if line == "end" {
                    break;
                }
                let token = BlockToken::from_u128(line.parse().unwrap());
                let b = h.block_from_token::<u8>(token).unwrap();
                bad += u64::from(!matches(&h, b.offset(), 64, 1, token.word()));
                h.free(b).unwrap();
            }
            bad += mix(&h, 2, 300_000);
            // Hand 1,000 blocks to the parent; they outlive this process.
            for _ in 0..1000 {
                let b = h.allocate_slice::<u8>(64).unwrap();
                fill(&h, b.offset(), 64, 2, b.token().word());
                h.release_to_segment(&b).unwrap();
                writeln!(out.lock(), "@@{}", b.token().to_u128()).unwrap();
            }
            writeln!(out.lock(), "@@bad {bad}").unwrap();
        }
        "holder" => {
            for i in 0..500u32 {
                h.allocate_raw(32 + (i % 17) * 48).unwrap();
            }
            writeln!(out.lock(), "@@ready").unwrap();
            std::thread::sleep(std::time::Duration::from_secs(30));
        }
        "churner" => {
            writeln!(out.lock(), "@@ready").unwrap();
            let mut rng = fastrand::Rng::with_seed(5);
            let mut live = Vec::new();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while std::time::Instant::now() < deadline {
                if live.len() < 2_000 && rng.bool() {
                    live.push(h.allocate_raw(rng.u32(16..600)).unwrap());
                } else if let Some(p) = live.pop() {
                    h.free_raw(p).unwrap();
                }
            }
        }
        other => panic!("unknown role {other}"),
    }
    out.lock().flush().unwrap();
    std::process::exit(0);
}

#[test]
fn two_processes_mix_and_free_each_others_blocks() {
    let g = SegmentGuard::new("twoproc");
    let h = MatrixHandler::create(g.as_str(), 32 << 20).unwrap();
    let mut child = spawn("mixer", g.as_str());
    {
        let mut stdin = child.0.stdin.take().unwrap();
        for _ in 0..1000 {
            let b = h.allocate_slice::<u8>(64).unwrap();
            fill(&h, b.offset(), 64, 1, b.token().word());
            writeln!(stdin, "{}", b.token().to_u128()).unwrap();
        }
        writeln!(stdin, "end").unwrap();
    }
    let parent_bad = mix(&h, 1, 300_000);
    let mut child_bad = None;
    let mut from_child = Vec::new();
    for line in protocol_lines(&mut child) {
        match line.strip_prefix("bad ") {
            Some(n) => child_bad = Some(n.parse::<u64>().unwrap()),
            None => from_child.push(BlockToken::from_u128(line.parse().unwrap())),
        }
    }
    assert!(child.0.wait().unwrap().success());
    assert_eq!((parent_bad, child_bad), (0, Some(0)));
    assert_eq!(from_child.len(), 1000);
    for token in from_child {
        let b = h.block_from_token::<u8>(token).unwrap();
        assert!(matches(&h, b.offset(), 64, 2, token.word()));
        h.free(b).unwrap();
    }
    h.recover().unwrap();
    let s = h.stats().unwrap();
    assert_eq!(s.used_bytes, 0, "{s:?}");
    assert_consistent(&h);
}

fn kill_and_reap(child: &mut ChildGuard) {
    // SAFETY: plain syscall; the pid is our own unreaped child.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGKILL) };
    child.0.wait().unwrap();
}

#[test]
fn sigkilled_child_blocks_are_recovered() {
    let g = SegmentGuard::new("sigkill");
    let h = MatrixHandler::create(g.as_str(), 8 << 20).unwrap();
    let mine: Vec<_> = (0..100).map(|_| h.allocate_raw(100).unwrap()).collect();
    let held = h.stats().unwrap().used_bytes;
    let mut child = spawn("holder", g.as_str());
    assert_eq!(protocol_lines(&mut child).next().as_deref(), Some("ready"));
    kill_and_reap(&mut child);
    assert!(h.stats().unwrap().used_bytes > held);
    let report = h.recover().unwrap();
    assert_eq!((report.participants, report.blocks), (1, 500), "{report:?}");
    assert_eq!(h.stats().unwrap().used_bytes, held);
    assert_consistent(&h);
    for p in mine {
        h.free_raw(p).unwrap();
    }
}

#[test]
fn child_killed_mid_workload_costs_at_most_what_it_held() {
    let g = SegmentGuard::new("midwork");
    let h = MatrixHandler::create(g.as_str(), 16 << 20).unwrap();
    let mine: Vec<_> = (0..50).map(|_| h.allocate_raw(200).unwrap()).collect();
    let held = h.stats().unwrap().used_bytes;
    for round in 0..10 {
        let mut child = spawn("churner", g.as_str());
        assert_eq!(protocol_lines(&mut child).next().as_deref(), Some("ready"));
        std::thread::sleep(std::time::Duration::from_millis(20 + round * 7));
        kill_and_reap(&mut child);
        h.recover().unwrap();
        // Every byte the child held is back; at most one block it was
        // popping may sit FREE outside the index until a repair.
        let s = h.stats().unwrap();
        assert_eq!(s.used_bytes, held, "round {round}");
        assert_eq!(
            s.cached_bytes, 0,
            "the dead child's thread cache was reclaimed"
        );
    }
    let repaired = h.matrix().repair(false).unwrap();
    assert_eq!(repaired.participants, 0, "{repaired:?}");
    assert_consistent(&h);
    for p in mine {
        h.free_raw(p).unwrap();
    }
    h.consolidate().unwrap();
    assert_eq!(h.stats().unwrap().free_blocks, 1);
}
