//! Rows for the dynamic containers (`--dynamic`): `ShmVec::push` and
//! `ShmString` appends against `Vec` / `String`, in one run, with the share
//! of buffer grows `reallocate` did in place; and `ShmMap` insert / get /
//! remove against `std::collections::HashMap` behind a `Mutex`, on 1 and 2
//! threads.

use matrix_handler::{MatrixHandler, ResizeKind};
use matrix_internals::dynamic::{OwnsBlocks, ShmString, ShmVec};
use matrix_internals::ShmMap;
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Mutex;
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

/// Keys per map row.
const MAP_KEYS: usize = 50_000;

/// ns per operation of each phase (insert, get, remove) of one repetition:
/// `threads` threads, each on its own share of `keys`, started together.
fn map_phases<M: Sync>(
    map: &M,
    keys: &[String],
    threads: usize,
    insert: impl Fn(&M, &str, u64) + Sync,
    get: impl Fn(&M, &str) -> Option<u64> + Sync,
    remove: impl Fn(&M, &str) -> bool + Sync,
) -> [f64; 3] {
    let share = keys.len() / threads;
    let phase = |op: &(dyn Fn(usize, &str) + Sync)| {
        let t = Instant::now();
        std::thread::scope(|s| {
            for th in 0..threads {
                let mine = &keys[th * share..(th + 1) * share];
                s.spawn(move || {
                    for (i, k) in mine.iter().enumerate() {
                        op(i, k);
                    }
                });
            }
        });
        t.elapsed().as_nanos() as f64 / (share * threads) as f64
    };
    let ins = phase(&|i, k| insert(map, k, i as u64));
    let got = phase(&|i, k| assert_eq!(get(map, k), Some(i as u64)));
    let rem = phase(&|_, k| assert!(remove(map, k)));
    [ins, got, rem]
}

/// Rows `ShmMap` insert / get / remove vs `Mutex<HashMap>` on `threads`.
fn map_rows(h: &MatrixHandler, threads: usize) -> Vec<Row> {
    let keys: Vec<String> = (0..MAP_KEYS).map(|i| format!("session/{i:08}")).collect();
    let map = ShmMap::<ShmString, u64, _>::create(h, 2 * MAP_KEYS as u32).expect("map");
    let std = Mutex::new(HashMap::<String, u64>::with_capacity(2 * MAP_KEYS));
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..REPS {
        ours.push(map_phases(
            &map,
            &keys,
            threads,
            |m, k, v| {
                m.insert(k, v).expect("insert");
            },
            |m, k| m.get(k).expect("get"),
            |m, k| m.remove(k).expect("remove"),
        ));
        theirs.push(map_phases(
            &std,
            &keys,
            threads,
            |m, k, v| {
                m.lock().unwrap().insert(k.to_owned(), v);
            },
            |m, k| m.lock().unwrap().get(k).copied(),
            |m, k| m.lock().unwrap().remove(k).is_some(),
        ));
    }
    ["insert", "get", "remove"]
        .iter()
        .enumerate()
        .map(|(p, name)| Row {
            name: format!(
                "ShmMap<ShmString, u64>::{name} x {MAP_KEYS}, {threads} thread{} vs Mutex<HashMap>",
                if threads == 1 { "" } else { "s" }
            ),
            ours_ns: median(ours.iter().map(|r| r[p]).collect()),
            std_ns: median(theirs.iter().map(|r| r[p]).collect()),
            grows: 0,
            in_place: 0,
        })
        .collect()
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
    let maps: Vec<Row> = [1, 2].iter().flat_map(|&t| map_rows(&h, t)).collect();
    println!("\n| workload | ShmMap ns/op | Mutex<HashMap> ns/op | ShmMap / std |");
    println!("|---|---:|---:|---:|");
    for r in &maps {
        println!(
            "| {} | {:.1} | {:.1} | {:.2} |",
            r.name,
            r.ours_ns,
            r.std_ns,
            r.ours_ns / r.std_ns
        );
    }
    println!(
        "\n(median of {REPS} runs; {MAP_KEYS} keys of 16 bytes, u64 values; with 2 threads \
         each inserts, reads and removes its own half of the keys at the same time, and \
         ns/op is wall time over all operations; both maps sized for 2x the keys)"
    );
    0
}
