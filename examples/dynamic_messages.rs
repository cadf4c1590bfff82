//! # Dynamic data across processes: records with strings and vectors
//!
//! ```text
//!   producer process                      WorkQueue "dynamic.readings"       consumer 0, 1
//!   Reading { name: ShmString,     ──►   (one block token per record)  ──►  pop, adopt,
//!             tags: ShmVec<ShmString>,                                       read in place,
//!             samples: ShmVec<f64> }                                         verify, free whole
//! ```
//!
//! The producer builds each record in the segment: a name, 0–4 tags and
//! 0..`--max-samples` samples pushed one by one (so the vectors grow
//! through `reallocate`, in place when they can), then sends the record's
//! block through a queue as one token. A consumer reads the name, the tags
//! and the samples where the producer wrote them — nothing is serialized
//! or copied — checks the record's checksum, counts its sequence number,
//! and frees the record and everything it owns with one `free_blocks`.
//! The parent checks that every record arrived exactly once with a correct
//! checksum and that the arena holds no more than before the run.
//!
//! Run: `cargo run --release --example dynamic_messages` (defaults: 2,000
//! records, up to 10,000 samples each, 2 consumers), or e.g.
//! `… -- --messages 500 --max-samples 1000`.

use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use matrix_examples::{
    catch_interrupts, child_process_setup, describe_stats, format_bytes, interrupted, unique_name,
    ChildRole, SegmentGuard,
};
use matrix_handler::{Block, BlockToken, HandlerFunctions, MatrixHandler, ResizeKind, ShmSafe};
use matrix_internals::dynamic::{OwnsBlocks, ShmString, ShmVec};
use matrix_internals::{PopError, WorkQueue};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::time::{Duration, Instant};

const QUEUE_NAME: &str = "dynamic.readings";
const PATIENCE: Duration = Duration::from_secs(60);
const NAMES: [&str; 5] = [
    "imu",
    "lidar-front",
    "wheel-odometry",
    "gnss",
    "température",
];
const TAGS: [&str; 6] = ["left", "right", "raw", "calibrated", "µs", "night"];

// Counter words of the shared counters block.
const SENT: usize = 0;
const SAMPLES: usize = 1;
const GROWS_IN_PLACE: usize = 2;
const GROWS_MOVED: usize = 3;
const RECEIVED: usize = 4;
const BAD: usize = 5;
const DONE: usize = 6;
const COUNTERS: usize = 8;

#[derive(Parser, Debug)]
#[command(
    about = "A producer sends records with strings and vectors to consumer processes, zero-copy"
)]
struct Args {
    /// Records to send
    #[arg(long, default_value_t = 2000)]
    messages: u32,
    /// Most samples per record (each gets 0..this many)
    #[arg(long, default_value_t = 10_000)]
    max_samples: u32,
    /// Consumer processes
    #[arg(long, default_value_t = 2)]
    consumers: u32,
    /// Seed of the record contents
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// (internal) child role: producer or consumer
    #[arg(long, hide = true)]
    role: Option<String>,
    /// (internal) segment name
    #[arg(long, hide = true)]
    segment: Option<String>,
    /// (internal) counters block token
    #[arg(long, hide = true)]
    counters: Option<u128>,
    /// (internal) exactly-once table token
    #[arg(long, hide = true)]
    seen: Option<u128>,
}

/// One message: plain fields and three containers, one block in the segment.
#[derive(ShmSafe, OwnsBlocks, Clone, Copy)]
#[repr(C)]
struct Reading {
    seq: u64,
    checksum: u64,
    name: ShmString,
    tags: ShmVec<ShmString>,
    samples: ShmVec<f64>,
}

type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

fn main() {
    let args = Args::parse();
    let result = match args.role.as_deref() {
        None => coordinator(&args),
        Some("producer") => producer(&args),
        Some("consumer") => consumer(&args),
        Some(other) => Err(format!("unknown role {other:?}").into()),
    };
    if let Err(e) = result {
        eprintln!("dynamic_messages: {e}");
        std::process::exit(1);
    }
}

/// FNV-style checksum over everything the record says.
fn checksum(seq: u64, name: &str, tags: &[&str], samples: &[f64]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seq;
    let mut mix = |x: u64| h = (h ^ x).wrapping_mul(0x0000_0100_0000_01b3);
    name.bytes().for_each(|b| mix(b as u64));
    for t in tags {
        mix(0xFF);
        t.bytes().for_each(|b| mix(b as u64));
    }
    samples.iter().for_each(|s| mix(s.to_bits()));
    h
}

fn coordinator(args: &Args) -> Result<()> {
    if args.messages == 0 || args.consumers == 0 || args.max_samples > 1_000_000 {
        return Err(
            "--messages and --consumers must be at least 1, --max-samples at most 1,000,000".into(),
        );
    }
    catch_interrupts();
    let name = unique_name("matrix-dynamic");
    let guard = SegmentGuard::new(&name);
    let size = 64u32 << 20;
    let h = MatrixHandler::create(&name, size)?;
    let queue = WorkQueue::<Reading, _>::create(h.share(), QUEUE_NAME, 64)?;
    let counters = h.allocate_array::<AtomicU64>(COUNTERS)?;
    let seen = h.allocate_array::<AtomicU8>(args.messages as usize)?;
    let before = h.stats()?;
    println!(
        "segment /dev/shm/{name}: {} — {} records of up to {} samples, 1 producer, {} consumers",
        format_bytes(size as u64),
        args.messages,
        args.max_samples,
        args.consumers
    );
    let common = |role: &str| -> Vec<String> {
        let mut v: Vec<String> = vec![
            "--role".into(),
            role.into(),
            "--segment".into(),
            name.clone(),
            "--counters".into(),
            counters.token().to_u128().to_string(),
            "--seen".into(),
            seen.token().to_u128().to_string(),
            "--messages".into(),
            args.messages.to_string(),
            "--max-samples".into(),
            args.max_samples.to_string(),
            "--seed".into(),
            args.seed.to_string(),
        ];
        v.shrink_to_fit();
        v
    };
    let start = Instant::now();
    let mut children = vec![ChildRole::spawn("producer", &common("producer"))?];
    for _ in 0..args.consumers {
        children.push(ChildRole::spawn("consumer", &common("consumer"))?);
    }
    let c = h.get_slice(&counters)?;
    let bar =
        ProgressBar::with_draw_target(Some(args.messages as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} records received {msg}")
            .expect("a valid template"),
    );
    let mut failed = None;
    while c[DONE].load(Relaxed) < args.consumers as u64 + 1 {
        bar.set_position(c[RECEIVED].load(Relaxed));
        if interrupted() {
            failed = Some("interrupted".to_string());
            break;
        }
        if let Some((i, s)) = children
            .iter_mut()
            .enumerate()
            .find_map(|(i, ch)| ch.exited().filter(|s| !s.success()).map(|s| (i, s)))
        {
            failed = Some(format!("child {i} failed: {s}"));
            break;
        }
        if start.elapsed() > PATIENCE * 5 {
            failed = Some("the run did not finish in time".into());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bar.set_position(c[RECEIVED].load(Relaxed));
    bar.finish_and_clear();
    if let Some(f) = failed {
        queue.close();
        return Err(f.into());
    }
    for child in &mut children {
        child.wait_timeout(PATIENCE)?;
    }
    let elapsed = start.elapsed();
    let seen_counts = h.get_slice(&seen)?;
    let once = seen_counts.iter().filter(|c| c.load(Relaxed) == 1).count();
    let missing = seen_counts.iter().filter(|c| c.load(Relaxed) == 0).count();
    let twice = seen_counts.len() - once - missing;
    let (in_place, moved) = (
        c[GROWS_IN_PLACE].load(Relaxed),
        c[GROWS_MOVED].load(Relaxed),
    );
    println!(
        "sent     {} records, {} samples in {:.2} s",
        c[SENT].load(Relaxed),
        c[SAMPLES].load(Relaxed),
        elapsed.as_secs_f64()
    );
    println!(
        "grows    {} buffer grows, {:.1} % in place (grown into the wilderness or a free neighbour), {} moved",
        in_place + moved,
        100.0 * in_place as f64 / (in_place + moved).max(1) as f64,
        moved
    );
    let bad = c[BAD].load(Relaxed);
    let all_once = once == args.messages as usize && bad == 0;
    println!(
        "verify   {once} of {} records received exactly once, {missing} missing, {twice} more than once, {bad} bad checksums: {}",
        args.messages,
        if all_once { "OK" } else { "FAILED" }
    );
    h.free(seen)?;
    h.free(counters)?;
    queue.destroy(Some(QUEUE_NAME)).map_err(|e| e.to_string())?;
    h.recover()?;
    h.consolidate()?;
    let after = h.stats()?;
    println!("arena    before: {}", describe_stats(&before));
    println!("arena    after:  {}", describe_stats(&after));
    let verified = all_once && after.used_bytes <= before.used_bytes;
    if after.used_bytes > before.used_bytes {
        println!(
            "arena    FAILED: {} B more in use than before the run",
            after.used_bytes - before.used_bytes
        );
    }
    drop(h);
    drop(guard);
    println!("segment  /dev/shm/{name} removed");
    if !verified {
        return Err("verification failed".into());
    }
    Ok(())
}

fn attach(args: &Args) -> Result<(MatrixHandler, Block<AtomicU64>, Block<AtomicU8>)> {
    child_process_setup();
    let h = MatrixHandler::open(args.segment.as_deref().ok_or("--segment missing")?)?;
    let counters = h.block_from_token(BlockToken::from_u128(
        args.counters.ok_or("--counters missing")?,
    ))?;
    let seen = h.block_from_token(BlockToken::from_u128(args.seen.ok_or("--seen missing")?))?;
    Ok((h, counters, seen))
}

fn producer(args: &Args) -> Result<()> {
    let (h, counters, _) = attach(args)?;
    let c = h.get_slice(&counters)?;
    let queue = WorkQueue::<Reading, _>::open(h.share(), QUEUE_NAME)?;
    let mut rng = fastrand::Rng::with_seed(args.seed);
    for seq in 0..args.messages as u64 {
        let name = NAMES[rng.usize(..NAMES.len())];
        let tag_names: Vec<&str> = (0..rng.usize(0..=4))
            .map(|_| TAGS[rng.usize(..TAGS.len())])
            .collect();
        let mut tags = ShmVec::new();
        for t in &tag_names {
            tags.push(&h, ShmString::from_str(&h, t)?)?;
        }
        let mut samples = ShmVec::new();
        let mut local = Vec::new();
        for i in 0..rng.u32(0..args.max_samples.max(1)) {
            let x = (seq as f64).sin() * 100.0 + i as f64 * 0.25;
            local.push(x);
            match samples.push(&h, x)? {
                Some(kind) if kind == ResizeKind::Moved => c[GROWS_MOVED].fetch_add(1, Relaxed),
                Some(_) => c[GROWS_IN_PLACE].fetch_add(1, Relaxed),
                None => 0,
            };
        }
        let reading = Reading {
            seq,
            checksum: checksum(seq, name, &tag_names, &local),
            name: ShmString::from_str(&h, name)?,
            tags,
            samples,
        };
        let block = h.allocate_with(reading)?;
        queue
            .push_timeout(block, PATIENCE)
            .map_err(|e| e.to_string())?;
        // Relaxed: statistics, read by the parent after the children exit.
        c[SENT].fetch_add(1, Relaxed);
        c[SAMPLES].fetch_add(local.len() as u64, Relaxed);
    }
    queue.close();
    c[DONE].fetch_add(1, Relaxed);
    Ok(())
}

fn consumer(args: &Args) -> Result<()> {
    let (h, counters, seen) = attach(args)?;
    let c = h.get_slice(&counters)?;
    let seen = h.get_slice(&seen)?;
    let queue = WorkQueue::<Reading, _>::open(h.share(), QUEUE_NAME)?;
    loop {
        let block = match queue.pop_timeout(PATIENCE) {
            Ok(block) => block,
            Err(PopError::Closed) => break,
            Err(e) => return Err(e.to_string().into()),
        };
        let mut r = *h.get(&block)?;
        // The hand-over: the record's buffers are this consumer's now.
        r.name.adopt(&h)?;
        r.tags.adopt(&h)?;
        r.samples.adopt(&h)?;
        // Read in place: the producer's bytes, at this process's mapping.
        let tags: Vec<&str> = r
            .tags
            .iter(&h)?
            .map(|t| t.as_str(&h))
            .collect::<std::result::Result<_, _>>()?;
        let sum = checksum(r.seq, r.name.as_str(&h)?, &tags, r.samples.as_slice(&h)?);
        if sum != r.checksum {
            c[BAD].fetch_add(1, Relaxed);
        }
        match seen.get(r.seq as usize) {
            Some(s) => {
                s.fetch_add(1, Relaxed);
            }
            None => {
                c[BAD].fetch_add(1, Relaxed);
            }
        }
        drop(tags);
        r.free_blocks(&h)?;
        h.free(block)?;
        c[RECEIVED].fetch_add(1, Relaxed);
    }
    c[DONE].fetch_add(1, Relaxed);
    Ok(())
}
