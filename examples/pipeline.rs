//! # The main job: a cross-process pipeline through one shared segment
//!
//! ```text
//!                      /dev/shm/matrix-pipeline-<pid>
//!   producer process ──► WorkQueue "pipeline.messages" ──► consumer process 0
//!   allocate a block,     (ring of block tokens in the    ├► consumer process 1
//!   write the message,     segment; a block's owner is    └► …
//!   push its token         the segment while queued)      pop, adopt, read,
//!                                                         verify, free
//! ```
//!
//! The parent creates the segment, the queue (found by the children by name,
//! through the segment's registry), a control block and one result block
//! per child, then starts one producer and N consumers — this same program,
//! re-executed — and flips the control block's user state from WAITING (49)
//! to RUNNING (50). For `--seconds` the producer streams messages of random
//! size: each is a block of the shared arena, written once by the producer
//! and read once by whichever consumer pops it; no message is ever copied
//! through a pipe or a socket.
//!
//! Every message carries its sequence number, the producer's
//! `CLOCK_MONOTONIC` stamp and a checksum. Consumers measure one-way latency
//! (stamp → pop), verify the checksum, set the sequence number's bit in a
//! bitmap, and free the block. At the end the parent merges the consumers'
//! bitmaps and histograms and prints throughput, latency percentiles, a
//! verification line (every message received exactly once, checksums
//! correct) and the allocator's state before and after. The segment is
//! removed on success, on error and on Ctrl-C.
//!
//! Run: `cargo run --release --example pipeline` (defaults: 3 s, 64–4096 B,
//! 2 consumers), or e.g. `… -- --seconds 10 --min-size 32 --max-size 65536 --consumers 3`.

use bytemuck::Zeroable;
use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use matrix_examples::{
    catch_interrupts, child_process_setup, describe_stats, format_bytes, format_ns, interrupted,
    monotonic_ns, progress_target, unique_name, ChildRole, LatencyHistogram, SegmentGuard,
};
use matrix_handler::{
    AllocError, Block, BlockToken, HandlerError, HandlerFunctions, MatrixHandler, Pod,
};
use matrix_internals::{PopError, PushError, WorkQueue};
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};
use std::time::{Duration, Instant};

/// Registry name of the message queue.
const QUEUE_NAME: &str = "pipeline.messages";
/// Control-block states.
const WAITING: u32 = 49;
const RUNNING: u32 = 50;
const STOP: u32 = 51;
/// Words of the message header: sequence number, send stamp, length, checksum.
const HEADER_WORDS: usize = 4;
/// Most messages one run can verify (the bitmaps' size: 4 MiB per consumer).
const MESSAGE_CAP: u64 = 1 << 25;
/// How long anyone waits for a process that should answer promptly.
const PATIENCE: Duration = Duration::from_secs(60);

#[derive(Parser, Debug)]
#[command(
    name = "pipeline",
    about = "One producer and N consumer processes streaming messages through a WorkQueue in shared memory"
)]
struct Args {
    /// How long the producer streams, in seconds
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Smallest message, in bytes (at least 32: the header)
    #[arg(long, default_value_t = 64)]
    min_size: u32,
    /// Largest message, in bytes (at most 1 MiB)
    #[arg(long, default_value_t = 4096)]
    max_size: u32,
    /// Consumer processes
    #[arg(long, default_value_t = 2)]
    consumers: u32,
    /// Queue slots (a short queue keeps latency low; the producer waits when it is full)
    #[arg(long, default_value_t = 64)]
    capacity: u32,
    /// Messages per second the producer aims at (0: as fast as it can)
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// (internal) child role: producer or consumer
    #[arg(long, hide = true)]
    role: Option<String>,
    /// (internal) segment name
    #[arg(long, hide = true)]
    segment: Option<String>,
    /// (internal) consumer index
    #[arg(long, hide = true, default_value_t = 0)]
    index: u32,
    /// (internal) control block token
    #[arg(long, hide = true)]
    control: Option<u128>,
    /// (internal) result block token
    #[arg(long, hide = true)]
    result: Option<u128>,
    /// (internal) bitmap block token
    #[arg(long, hide = true)]
    bitmap: Option<u128>,
}

/// Written by the parent before RUNNING; read by the children after.
#[derive(Clone, Copy, Debug, Pod, Zeroable, matrix_handler::ShmSafe)]
#[repr(C)]
struct Control {
    /// When the stream starts (monotonic): paced sends are due from here.
    start_ns: u64,
    deadline_ns: u64,
    rate: u64,
    seed: u64,
    min_words: u32,
    max_words: u32,
}

/// The producer's counts (also its progress, rewritten as it goes).
#[derive(Clone, Copy, Debug, Pod, Zeroable, matrix_handler::ShmSafe)]
#[repr(C)]
struct ProducerResult {
    sent: u64,
    bytes: u64,
    /// Allocations that found the arena full and waited for consumers.
    alloc_waits: u64,
    /// Pushes that found the queue full and waited.
    push_waits: u64,
    /// Nanoseconds from the start signal to the last push.
    elapsed_ns: u64,
    done: u64,
}

/// One consumer's counts and latency histogram.
#[derive(Clone, Copy, Debug, Pod, Zeroable, matrix_handler::ShmSafe)]
#[repr(C)]
struct ConsumerResult {
    received: u64,
    bytes: u64,
    checksum_errors: u64,
    /// Messages this consumer saw twice.
    duplicates: u64,
    /// Sequence numbers beyond what the producer can have sent.
    out_of_range: u64,
    /// Queue entries that were not valid blocks.
    corrupted: u64,
    done: u64,
    latency: LatencyHistogram,
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
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("pipeline: {e}");
            std::process::exit(1);
        }
    }
}

/// The message's checksum: its sequence number, length and payload words.
fn checksum(words: &[u64]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ words[0] ^ (words[2] << 48);
    for &w in &words[HEADER_WORDS..] {
        h = (h ^ w).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(29);
    }
    h
}

/// Payload word `i` of message `seq`.
#[inline]
fn pattern(seq: u64, i: usize) -> u64 {
    seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i as u64).wrapping_mul(0xD1B5_4A32_D192_ED03)
}

fn child_args(role: &str, name: &str, control: BlockToken, result: BlockToken) -> Vec<String> {
    [
        "--role",
        role,
        "--segment",
        name,
        "--control",
        &control.to_u128().to_string(),
        "--result",
        &result.to_u128().to_string(),
    ]
    .into_iter()
    .map(str::to_owned)
    .collect()
}

/// `987`, `12.3k`, `4.56M`: a count in at most six columns.
fn abbreviated(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{:.1}k", n as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.2}M", n as f64 / 1e6),
        _ => format!("{:.2}G", n as f64 / 1e9),
    }
}

fn with_commas(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

// ---------------------------------------------------------------- parent

/// Refuses an argument the way clap refuses one it cannot parse: one
/// `error:` line on stderr and exit code 2.
fn argument_error(message: &str) -> ! {
    use clap::CommandFactory;
    Args::command()
        .error(clap::error::ErrorKind::ValueValidation, message)
        .exit()
}

fn coordinator(args: &Args) -> Result<i32> {
    if !(args.seconds > 0.0 && args.seconds <= 3600.0) {
        argument_error("--seconds must be more than 0 and at most 3600");
    }
    if args.min_size < (HEADER_WORDS * 8) as u32
        || args.max_size < args.min_size
        || args.max_size > 1 << 20
    {
        argument_error("message sizes must satisfy 32 <= --min-size <= --max-size <= 1048576");
    }
    if args.consumers == 0 || args.consumers > 32 {
        argument_error("--consumers must be 1 to 32");
    }
    if args.capacity == 0 {
        argument_error("--capacity must be at least 1");
    }
    catch_interrupts();
    let min_words = args.min_size.div_ceil(8);
    let max_words = (args.max_size / 8).max(min_words);
    let bitmap_words = (MESSAGE_CAP / 64) as usize;
    let in_flight = args.capacity as u64 * (max_words as u64 * 8 + 64);
    let size = (64 << 20) + args.consumers as u64 * bitmap_words as u64 * 8 + 2 * in_flight;
    let size = size.min(u32::MAX as u64 & !0xFFF) as u32;

    let name = unique_name("matrix-pipeline");
    let guard = SegmentGuard::new(&name);
    let handler = MatrixHandler::create(&name, size)?;
    let queue = WorkQueue::<u64, _>::create(handler.share(), QUEUE_NAME, args.capacity)?;

    let mut control = handler.allocate::<Control>()?;
    handler.write_pod(&mut control, Control::zeroed())?;
    handler.set_state(&control, WAITING)?;
    let mut producer_result = handler.allocate::<ProducerResult>()?;
    handler.write_pod(&mut producer_result, ProducerResult::zeroed())?;
    let mut consumer_results = Vec::new();
    let mut bitmaps = Vec::new();
    for _ in 0..args.consumers {
        let mut result = handler.allocate::<ConsumerResult>()?;
        handler.write_pod(&mut result, ConsumerResult::zeroed())?;
        consumer_results.push(result);
        bitmaps.push(handler.allocate_slice::<u64>(bitmap_words)?);
    }
    let before = handler.stats()?;

    println!(
        "pipeline: 1 producer -> WorkQueue ({} slots) -> {} consumers, {} s, messages {} to {}{}",
        queue.capacity(),
        args.consumers,
        args.seconds,
        format_bytes(min_words as u64 * 8),
        format_bytes(max_words as u64 * 8),
        if args.rate > 0 {
            format!(", {} messages/s", with_commas(args.rate))
        } else {
            String::new()
        }
    );
    println!("segment  /dev/shm/{name} ({})", format_bytes(size as u64));

    let mut consumers = Vec::new();
    for (index, (result, bitmap)) in consumer_results.iter().zip(&bitmaps).enumerate() {
        let mut argv = child_args("consumer", &name, control.token(), result.token());
        argv.extend([
            "--index".into(),
            index.to_string(),
            "--bitmap".into(),
            bitmap.token().to_u128().to_string(),
        ]);
        consumers.push(ChildRole::spawn(&format!("consumer {index}"), &argv)?);
    }
    let mut producer = ChildRole::spawn(
        "producer",
        &child_args("producer", &name, control.token(), producer_result.token()),
    )?;
    for child in consumers.iter_mut().chain(std::iter::once(&mut producer)) {
        child.wait_for_line("ready", PATIENCE)?;
    }

    // Go.
    let started = Instant::now();
    let go = monotonic_ns();
    let control_value = Control {
        start_ns: go,
        deadline_ns: go + (args.seconds * 1e9) as u64,
        rate: args.rate,
        seed: u64::from(std::process::id()),
        min_words,
        max_words,
    };
    handler.write_pod(&mut control, control_value)?;
    // AcqRel: its Release publishes the control fields to the children's
    // Acquire of RUNNING (in wait_for_start).
    handler.transition_state(&control, WAITING, RUNNING, AcqRel)?;

    // Drawn short of the terminal's last columns (see `progress_target`);
    // the counts are abbreviated so that the message fits in 80 columns.
    let bar =
        ProgressBar::with_draw_target(Some((args.seconds * 1000.0) as u64), progress_target());
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:20}] {msg:.wide_msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let mut interrupted_run = false;
    let mut failure = None;
    loop {
        if interrupted() && !interrupted_run {
            interrupted_run = true;
            // Cleared now and drawn no more: the terminal's own echo of
            // ^C would otherwise leave a stale bar line above the results.
            bar.finish_and_clear();
            bar.set_draw_target(ProgressDrawTarget::hidden());
            // AcqRel: nothing rides on it but the flag; the usual pairing.
            let _ = handler.transition_state(&control, RUNNING, STOP, AcqRel);
        }
        if let Some(status) = producer.exited() {
            if !status.success() {
                failure = Some(format!("the producer failed ({status})"));
            }
            break;
        }
        // A consumer that drained the closed queue exits 0, and may be seen
        // before the producer's own exit is: only a failed consumer ends the
        // run here; one that left too soon shows in the count and the time
        // limit.
        if let Some((i, status)) = consumers
            .iter_mut()
            .enumerate()
            .find_map(|(i, c)| c.exited().filter(|s| !s.success()).map(|s| (i, s)))
        {
            failure = Some(format!("consumer {i} stopped early ({status})"));
            break;
        }
        if started.elapsed() > Duration::from_secs_f64(args.seconds) + PATIENCE {
            failure = Some("the producer did not finish in time".into());
            break;
        }
        let sent = handler.read_pod(&producer_result)?.sent;
        let received: u64 = consumer_results
            .iter()
            .map(|r| handler.read_pod(r).map_or(0, |r| r.received))
            .sum();
        bar.set_position(started.elapsed().as_millis() as u64);
        bar.set_message(format!(
            "{:.1}/{}s sent {} recv {} queue {}",
            started.elapsed().as_secs_f64().min(args.seconds),
            args.seconds,
            abbreviated(sent),
            abbreviated(received),
            queue.len()
        ));
        std::thread::sleep(Duration::from_millis(100));
    }
    if failure.is_some() {
        // AcqRel: as above; the close below wakes whoever sleeps.
        let _ = handler.transition_state(&control, RUNNING, STOP, AcqRel);
        queue.close();
    }
    for (i, child) in consumers.iter_mut().enumerate() {
        match child.wait_timeout(PATIENCE) {
            Ok(status) if status.success() => {}
            Ok(status) => failure = failure.or(Some(format!("consumer {i} failed ({status})"))),
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    bar.finish_and_clear();
    if let Some(failure) = failure {
        return Err(failure.into());
    }

    // Results.
    let p = handler.read_pod(&producer_result)?;
    let mut latency = LatencyHistogram::default();
    let mut union = vec![0u64; bitmap_words];
    let (
        mut received,
        mut bytes,
        mut checksum_errors,
        mut duplicates,
        mut out_of_range,
        mut corrupted,
    ) = (0, 0, 0, 0, 0, 0);
    let mut per_consumer = Vec::new();
    let mut bits = vec![0u64; bitmap_words];
    for (result, bitmap) in consumer_results.iter().zip(&bitmaps) {
        let r = handler.read_pod(result)?;
        if r.done == 0 {
            return Err("a consumer exited without reporting".into());
        }
        latency.merge(&r.latency);
        received += r.received;
        bytes += r.bytes;
        checksum_errors += r.checksum_errors;
        duplicates += r.duplicates;
        out_of_range += r.out_of_range;
        corrupted += r.corrupted;
        per_consumer.push(r.received);
        handler.read_slice(bitmap, &mut bits)?;
        for (u, b) in union.iter_mut().zip(&bits) {
            duplicates += (*u & b).count_ones() as u64;
            *u |= b;
        }
    }
    let distinct: u64 = union.iter().map(|w| w.count_ones() as u64).sum();
    // Bits at sequence numbers the producer never sent (must be none).
    let beyond_sent: u64 = union
        .iter()
        .enumerate()
        .skip((p.sent / 64) as usize)
        .map(|(i, &w)| {
            let first = (i as u64 * 64).max(p.sent) - i as u64 * 64;
            (w & (!0u64).checked_shl(first as u32).unwrap_or(0)).count_ones() as u64
        })
        .sum();
    let lost = p.sent - (distinct - beyond_sent);

    // The children detached when they exited; recover their slots (and
    // anything they still held) and merge the free blocks.
    let recovered = handler.recover()?;
    handler.consolidate()?;
    let after = handler.stats()?;
    let seconds = (p.elapsed_ns as f64 / 1e9).max(1e-9);

    println!(
        "throughput {} messages/s, {}/s ({} messages, {} in {:.2} s)",
        with_commas((p.sent as f64 / seconds) as u64),
        format_bytes((p.bytes as f64 / seconds) as u64),
        with_commas(p.sent),
        format_bytes(p.bytes),
        seconds
    );
    println!(
        "latency    p50 {}  p99 {}  p99.9 {}  max {}  (one-way: producer stamp -> consumer pop, {} samples)",
        format_ns(latency.percentile(50.0)),
        format_ns(latency.percentile(99.0)),
        format_ns(latency.percentile(99.9)),
        format_ns(latency.percentile(100.0)),
        with_commas(latency.count())
    );
    let shares: Vec<String> = per_consumer
        .iter()
        .enumerate()
        .map(|(i, n)| format!("#{i} {}", with_commas(*n)))
        .collect();
    println!(
        "consumers  {}  (producer waited {} times for a free slot, {} times for memory)",
        shares.join("  "),
        with_commas(p.push_waits),
        with_commas(p.alloc_waits)
    );
    let exact = received == p.sent
        && distinct == p.sent
        && lost == 0
        && duplicates == 0
        && beyond_sent == 0
        && out_of_range == 0;
    let sound = checksum_errors == 0 && corrupted == 0 && bytes == p.bytes;
    // Nothing sent verifies nothing: a run that sent no message fails.
    let verdict = if exact && sound && p.sent > 0 {
        "verified"
    } else {
        "FAILED  "
    };
    println!(
        "{verdict}   every message received exactly once: {} sent, {} received, {} lost, {} duplicated; \
         checksums {} ({} errors, {} checked)",
        with_commas(p.sent),
        with_commas(received),
        lost,
        duplicates,
        if sound { "match" } else { "DO NOT match" },
        checksum_errors + corrupted,
        format_bytes(bytes)
    );
    println!("allocator  before: {}", describe_stats(&before));
    println!("           after:  {}", describe_stats(&after));
    println!(
        "           {} blocks carried messages and all came back (used before = after: {}); recover() cleared {} detached participant slot(s)",
        with_commas(p.sent),
        if after.used_bytes == before.used_bytes { "yes" } else { "NO" },
        recovered.participants
    );
    if p.sent >= MESSAGE_CAP {
        println!(
            "note: the run stopped at the verification cap of {} messages",
            with_commas(MESSAGE_CAP)
        );
    }
    drop(queue);
    drop(handler);
    drop(guard);
    println!("removed    /dev/shm/{name}");
    if interrupted_run {
        println!("interrupted: stopped early on Ctrl-C");
        return Ok(130);
    }
    if p.sent == 0 {
        println!(
            "note: no message was sent in {} s; give a longer --seconds",
            args.seconds
        );
    }
    Ok(
        if exact && sound && p.sent > 0 && after.used_bytes == before.used_bytes {
            0
        } else {
            1
        },
    )
}

// -------------------------------------------------------------- children

/// Opens the segment and the control block, says "ready", and waits for RUNNING.
fn attach(args: &Args) -> Result<(MatrixHandler, Block<Control>)> {
    child_process_setup();
    let name = args.segment.as_deref().ok_or("--segment missing")?;
    let handler = MatrixHandler::open(name)?;
    let control = handler.block_from_token::<Control>(BlockToken::from_u128(
        args.control.ok_or("--control missing")?,
    ))?;
    Ok((handler, control))
}

fn wait_for_start(handler: &MatrixHandler, control: &Block<Control>) -> Result<Control> {
    println!("ready");
    let deadline = Instant::now() + PATIENCE;
    loop {
        // Acquire: pairs with the parent's transition to RUNNING, so the
        // control fields written before it are visible.
        match handler.get_state(control, Acquire) {
            RUNNING => return Ok(handler.read_pod(control)?),
            STOP => return Err("stopped before the start".into()),
            _ if Instant::now() > deadline => return Err("the start signal never came".into()),
            _ => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

fn producer(args: &Args) -> Result<i32> {
    let (handler, control) = attach(args)?;
    let queue = WorkQueue::<u64, _>::open(handler.share(), QUEUE_NAME)?;
    let mut result_block = handler.block_from_token::<ProducerResult>(BlockToken::from_u128(
        args.result.ok_or("--result missing")?,
    ))?;
    let c = wait_for_start(&handler, &control)?;
    let start = monotonic_ns();
    let mut rng = fastrand::Rng::with_seed(c.seed);
    let mut buf = vec![0u64; c.max_words as usize];
    let mut r = ProducerResult::zeroed();
    let mut seq = 0u64;
    'stream: loop {
        // Unpaced runs stop at the deadline, looked at every 256 messages;
        // paced ones when the next message is due after it (below), so
        // they send exactly `rate × seconds`, late ones included.
        if seq % 256 == 0 {
            let now = monotonic_ns();
            if (c.rate == 0 && now >= c.deadline_ns)
                || seq >= MESSAGE_CAP
                // Relaxed: a stop flag; nothing is read on the strength of it.
                || handler.get_state(&control, Relaxed) == STOP
            {
                break;
            }
            if seq % 16_384 == 0 {
                handler.write_pod(&mut result_block, r)?;
            }
        }
        if let Some(interval) = (seq * 1_000_000_000).checked_div(c.rate) {
            let due = c.start_ns + interval;
            if due >= c.deadline_ns {
                break;
            }
            while monotonic_ns() < due {
                std::hint::spin_loop();
            }
        }
        let words = rng.u32(c.min_words..=c.max_words) as usize;
        let mut block = loop {
            match handler.allocate_slice::<u64>(words) {
                Ok(block) => break block,
                Err(HandlerError::AllocationFailed(AllocError::OutOfMemory { .. })) => {
                    // The consumers are behind: wait for them to free blocks.
                    r.alloc_waits += 1;
                    if monotonic_ns() >= c.deadline_ns {
                        break 'stream;
                    }
                    std::thread::sleep(Duration::from_micros(50));
                }
                Err(e) => return Err(e.into()),
            }
        };
        buf[0] = seq;
        buf[2] = words as u64;
        for (i, w) in buf[HEADER_WORDS..words].iter_mut().enumerate() {
            *w = pattern(seq, i);
        }
        buf[3] = checksum(&buf[..words]);
        buf[1] = monotonic_ns();
        handler.write_slice(&mut block, &buf[..words])?;
        match queue.try_push(block) {
            Ok(()) => {
                seq += 1;
                r.sent += 1;
                r.bytes += words as u64 * 8;
                continue;
            }
            Err(PushError::Full(b)) => {
                r.push_waits += 1;
                block = b;
            }
            Err(PushError::Closed(b)) => {
                handler.free(b)?;
                break;
            }
            Err(e) => return Err(e.to_string().into()),
        }
        loop {
            match queue.push_timeout(block, Duration::from_millis(100)) {
                Ok(()) => break,
                Err(PushError::Timeout(b) | PushError::Full(b)) => {
                    // Relaxed: a stop flag, as above.
                    if handler.get_state(&control, Relaxed) == STOP {
                        handler.free(b)?;
                        break 'stream;
                    }
                    block = b;
                }
                Err(PushError::Closed(b)) => {
                    handler.free(b)?;
                    break 'stream;
                }
                Err(e @ PushError::Refused(..)) => return Err(e.to_string().into()),
            }
        }
        seq += 1;
        r.sent += 1;
        r.bytes += words as u64 * 8;
    }
    r.elapsed_ns = monotonic_ns() - start;
    // Every push that succeeded is popped before a consumer hears Closed.
    queue.close();
    r.done = 1;
    handler.write_pod(&mut result_block, r)?;
    Ok(0)
}

fn consumer(args: &Args) -> Result<i32> {
    let (handler, control) = attach(args)?;
    let queue = WorkQueue::<u64, _>::open(handler.share(), QUEUE_NAME)?;
    let mut result_block = handler.block_from_token::<ConsumerResult>(BlockToken::from_u128(
        args.result.ok_or("--result missing")?,
    ))?;
    let mut bitmap_block = handler.block_from_token::<u64>(BlockToken::from_u128(
        args.bitmap.ok_or("--bitmap missing")?,
    ))?;
    let mut seen = vec![0u64; bitmap_block.len()];
    let c = wait_for_start(&handler, &control)?;
    let mut buf = vec![0u64; c.max_words as usize];
    let mut r = ConsumerResult::zeroed();
    loop {
        match queue.pop_timeout(Duration::from_millis(100)) {
            Ok(block) => {
                let now = monotonic_ns();
                let words = block.len();
                if words < HEADER_WORDS || words > buf.len() {
                    r.corrupted += 1;
                    handler.free(block)?;
                    continue;
                }
                handler.read_slice(&block, &mut buf[..words])?;
                handler.free(block)?;
                r.latency.record(now.saturating_sub(buf[1]));
                r.received += 1;
                r.bytes += words as u64 * 8;
                if buf[2] != words as u64 || checksum(&buf[..words]) != buf[3] {
                    r.checksum_errors += 1;
                }
                let seq = buf[0];
                match seen.get_mut((seq / 64) as usize) {
                    Some(w) if *w & (1 << (seq % 64)) != 0 => r.duplicates += 1,
                    Some(w) => *w |= 1 << (seq % 64),
                    None => r.out_of_range += 1,
                }
                if r.received % 16_384 == 0 {
                    handler.write_pod(&mut result_block, r)?;
                }
            }
            Err(PopError::Closed) => break,
            Err(PopError::Corrupted { .. }) => r.corrupted += 1,
            Err(PopError::Timeout | PopError::Empty) => {
                // Relaxed: a stop flag; the queue's own close is the real signal.
                if handler.get_state(&control, Relaxed) == STOP && queue.is_closed() {
                    break;
                }
            }
        }
    }
    handler.write_slice(&mut bitmap_block, &seen)?;
    r.done = 1;
    handler.write_pod(&mut result_block, r)?;
    Ok(0)
}
