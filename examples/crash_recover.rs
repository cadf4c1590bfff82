//! # A participant is SIGKILLed; `recover()` takes its memory back
//!
//! The parent creates a segment and starts a worker process (this same
//! program, re-executed) that attaches, allocates thousands of blocks, gives
//! one block to the segment so it outlives the worker, puts one block in a
//! user lifecycle state, reports "ready" — and is then killed with SIGKILL,
//! with no chance to clean up.
//!
//! ```text
//!  parent                          worker (pid W)
//!  create segment ──────────────►  open: participant slot, owner id
//!                                  allocate N blocks (owner = W's id)
//!                                  release_to_segment(survivor)
//!                                  set_state(user block, 60)
//!                 ◄──── "ready" ──
//!  SIGKILL W, waitpid
//!  recover(): W is gone → its N blocks go back to the free index;
//!             the survivor (owned by the segment) stays;
//!             the user-state block is reported, not freed
//!  free the user-state block explicitly; consolidate → all memory back
//! ```
//!
//! Run: `cargo run --release --example crash_recover -- --blocks 10000`

use clap::Parser;
use matrix_examples::{
    child_process_setup, describe_stats, format_bytes, unique_name, ChildRole, SegmentGuard,
};
use matrix_handler::{BlockToken, HandlerFunctions, MatrixHandler};
use std::time::Duration;

/// The user state the worker leaves one block in.
const WORKER_STATE: u32 = 60;
/// What the survivor block holds, to show it is intact after the crash.
const SURVIVOR_VALUE: [u64; 4] = [0xC0FFEE, 1, 2, 3];

#[derive(Parser, Debug)]
#[command(about = "Kill a participant with SIGKILL and watch recover() reclaim its blocks")]
struct Args {
    /// Blocks the worker allocates before it is killed
    #[arg(long, default_value_t = 10_000)]
    blocks: u32,
    /// Largest block the worker asks for, in bytes (sizes are random from 16)
    #[arg(long, default_value_t = 1024)]
    max_size: u32,
    /// (internal) run as the worker on segment NAME
    #[arg(long, value_name = "NAME", hide = true)]
    worker: Option<String>,
}

type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

fn main() {
    let args = Args::parse();
    let result = match &args.worker {
        Some(name) => worker(name, &args),
        None => parent(&args),
    };
    if let Err(e) = result {
        eprintln!("crash_recover: {e}");
        std::process::exit(1);
    }
}

fn parent(args: &Args) -> Result<()> {
    if args.max_size < 16 {
        return Err("--max-size must be at least 16".into());
    }
    let size = (args.blocks as u64 * (args.max_size as u64 + 64))
        .clamp(4 << 20, u32::MAX as u64 & !0xFFF) as u32;
    let name = unique_name("matrix-example-crash");
    let _guard = SegmentGuard::new(&name);
    let handler = MatrixHandler::create(&name, size)?;
    let baseline = handler.stats()?;
    println!("segment /dev/shm/{name} ({})", format_bytes(size as u64));
    println!("  fresh:             {}", describe_stats(&baseline));

    let argv = [
        "--worker".to_owned(),
        name.clone(),
        "--blocks".to_owned(),
        args.blocks.to_string(),
        "--max-size".to_owned(),
        args.max_size.to_string(),
    ];
    let mut child = ChildRole::spawn("worker", &argv)?;
    let pid = child.pid();
    let ready = child.wait_for_line("ready", Duration::from_secs(60))?;
    let mut words = ready.split_whitespace();
    let survivor_token = BlockToken::from_u128(
        words
            .next()
            .ok_or("worker sent no survivor token")?
            .parse()?,
    );
    let user_block: u32 = words
        .next()
        .ok_or("worker sent no user-state block")?
        .parse()?;
    let held = handler.stats()?;
    println!("  worker {pid} holds:  {}", describe_stats(&held));

    let status = child.kill().ok_or("the worker was already gone")?;
    println!(
        "killed worker {pid} with SIGKILL ({status}); its blocks are still marked as its own:"
    );
    println!("  after the kill:    {}", describe_stats(&handler.stats()?));

    let report = handler.recover()?;
    println!(
        "recover(): {} participant(s), {} block(s), {} reclaimed",
        report.participants,
        report.blocks,
        format_bytes(report.bytes)
    );
    for (offset, state) in &report.user_state_blocks {
        println!("  left alone: block at {offset} in user state {state} (user states are never reclaimed automatically)");
    }
    if report.blocks < args.blocks as u64 {
        return Err(format!(
            "recover() reclaimed {} blocks, the worker held at least {}",
            report.blocks, args.blocks
        )
        .into());
    }
    if report.user_state_blocks != [(user_block, WORKER_STATE)] {
        return Err(format!(
            "expected the user-state block at {user_block} to be reported, got {:?}",
            report.user_state_blocks
        )
        .into());
    }

    // The survivor belonged to the segment, not to the worker: still there.
    let survivor = handler.block_from_token::<[u64; 4]>(survivor_token)?;
    if handler.read_pod(&survivor)? != SURVIVOR_VALUE {
        return Err("the survivor block lost its contents".into());
    }
    println!(
        "survivor block at {} is intact (it was given to the segment)",
        survivor.offset()
    );
    handler.free(survivor)?;
    // The application decides when a user-state block's life ends.
    handler.free_at(user_block)?;
    handler.consolidate()?;
    let after = handler.stats()?;
    println!("  after recovery:    {}", describe_stats(&after));
    if after.used_bytes != baseline.used_bytes {
        return Err(format!(
            "{} B still in use after recovery",
            after.used_bytes - baseline.used_bytes
        )
        .into());
    }
    println!(
        "verified: all memory back ({} used, as before the worker started)",
        format_bytes(after.used_bytes)
    );
    Ok(())
}

fn worker(name: &str, args: &Args) -> Result<()> {
    child_process_setup();
    let handler = MatrixHandler::open(name)?;
    let mut rng = fastrand::Rng::with_seed(u64::from(std::process::id()));
    for _ in 0..args.blocks {
        let size = rng.u32(16..=args.max_size);
        handler.allocate_raw(size)?;
    }
    let mut survivor = handler.allocate::<[u64; 4]>()?;
    handler.write_pod(&mut survivor, SURVIVOR_VALUE)?;
    handler.release_to_segment(&survivor)?;
    let user = handler.allocate::<u64>()?;
    handler.set_state(&user, WORKER_STATE)?;
    println!(
        "ready {} {}",
        survivor.token().to_u128(),
        user.header_offset()
    );
    // Wait to be killed (the parent dies → PR_SET_PDEATHSIG kills us too).
    std::thread::sleep(Duration::from_secs(120));
    Err("the worker was never killed".into())
}
