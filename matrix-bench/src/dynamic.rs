//! Rows for the dynamic containers (`--dynamic`): `ShmVec::push` and
//! `ShmString` appends against `Vec` / `String`, in one run, with the share
//! of buffer grows `reallocate` did in place.

use matrix_handler::{MatrixHandler, ResizeKind};
use matrix_internals::dynamic::{OwnsBlocks, ShmString, ShmVec};
use std::hint::black_box;
use std::time::Instant;

/// Repetitions per row; the median is reported.
const REPS: usize = 5;

struct Row {
    name: String,
    ours_ns: f64,
    std_ns: f64,
    grows: u64,
    in_place: u64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn count(kind: Option<ResizeKind>, grows: &mut u64, in_place: &mut u64) {
    if let Some(k) = kind {
        *grows += 1;
        *in_place += k.in_place() as u64;
    }
}

fn vec_push(h: &MatrixHandler, n: u64) -> Row {
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let (mut grows, mut in_place) = (0, 0);
    for _ in 0..REPS {
        let t = Instant::now();
        let mut v = ShmVec::<u64>::new();
        for i in 0..n {
            let kind = v.push(h, black_box(i)).expect("push");
            count(kind, &mut grows, &mut in_place);
        }
        ours.push(t.elapsed().as_nanos() as f64 / n as f64);
        assert_eq!(v.len() as u64, n);
        v.free_blocks(h).expect("free");
        let t = Instant::now();
        let mut s = Vec::new();
        for i in 0..n {
            s.push(black_box(i));
        }
        theirs.push(t.elapsed().as_nanos() as f64 / n as f64);
        black_box(&s);
    }
    Row {
        name: format!("ShmVec<u64>::push x {n} vs Vec::push"),
        ours_ns: median(ours),
        std_ns: median(theirs),
        grows: grows / REPS as u64,
        in_place: in_place / REPS as u64,
    }
}

fn string_append(h: &MatrixHandler, n: u64) -> Row {
    let piece = "sensor-reading, ";
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let (mut grows, mut in_place) = (0, 0);
    for _ in 0..REPS {
        let t = Instant::now();
        let mut s = ShmString::new();
        for _ in 0..n {
            // try_reserve reports the grow; push_str then has room.
            let kind = s.try_reserve(h, piece.len()).expect("reserve");
            count(kind, &mut grows, &mut in_place);
            s.push_str(h, black_box(piece)).expect("append");
        }
        ours.push(t.elapsed().as_nanos() as f64 / n as f64);
        assert_eq!(s.len() as u64, n * piece.len() as u64);
        s.free_blocks(h).expect("free");
        let t = Instant::now();
        let mut std = String::new();
        for _ in 0..n {
            std.push_str(black_box(piece));
        }
        theirs.push(t.elapsed().as_nanos() as f64 / n as f64);
        black_box(&std);
    }
    Row {
        name: format!("ShmString::push_str (16 B) x {n} vs String::push_str"),
        ours_ns: median(ours),
        std_ns: median(theirs),
        grows: grows / REPS as u64,
        in_place: in_place / REPS as u64,
    }
}

/// Runs the rows and prints them as a markdown table.
pub fn run() -> i32 {
    let h = match MatrixHandler::bootstrap(None, 256 << 20) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("cannot create the arena: {e}");
            return 2;
        }
    };
    let rows = [vec_push(&h, 1_000_000), string_append(&h, 200_000)];
    println!("| workload | ours ns/op | std ns/op | ours / std | grows | in place |");
    println!("|---|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {} | {:.0} % |",
            r.name,
            r.ours_ns,
            r.std_ns,
            r.ours_ns / r.std_ns,
            r.grows,
            100.0 * r.in_place as f64 / r.grows.max(1) as f64
        );
    }
    println!(
        "\n(median of {REPS} runs each; one process, an anonymous 256 MiB arena; each \
         container grows from empty, doubling its capacity)"
    );
    0
}
