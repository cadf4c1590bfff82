//! # A named registry shared by two processes
//!
//! Processes that share a segment find each other's objects by name: the
//! segment's root registry maps a name to a block offset and a type
//! fingerprint (size, alignment, a stable type id), so an object opened with
//! the wrong type is refused instead of misread.
//!
//! ```text
//!  parent                                   child (this program, re-executed)
//!  create segment
//!  find_or_create_pod("app.config") → made
//!  spawn child ─────────────────────────►   open segment, Registry::root
//!                                           entries(): app.config …
//!                                           find_pod("app.config")  → same block
//!                                           find_pod::<Wrong>(…)    → TypeMismatch
//!                                           find_or_create_pod("app.reply") → made
//!  find_or_create_pod("app.go") ──────────►  (spins until "app.go" exists)
//!  both: find_or_create_pod("app.race.N") for every N < R, at the same
//!        time, the parent upwards from 0, the child downwards from R-1
//!        → for every N, exactly one of the two created it
//!  read "app.reply" (the child has exited; the block belongs to the segment)
//! ```
//!
//! Run: `cargo run --release --example registry -- --races 100`

use clap::Parser;
use matrix_examples::{child_process_setup, describe_stats, unique_name, ChildRole, SegmentGuard};
use matrix_handler::{HandlerFunctions, MatrixHandler, Pod, Zeroable};
use matrix_internals::tables::type_id;
use matrix_internals::{Registry, RegistryError};
use std::time::Duration;

/// Stable type ids: they survive renames and rebuilds, unlike type names.
const CONFIG_TYPE: u64 = type_id("matrix-examples::Config v1");
const REPLY_TYPE: u64 = type_id("matrix-examples::Reply v1");
const RACE_TYPE: u64 = type_id("matrix-examples::RaceWinner v1");

#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq)]
#[repr(C)]
struct Config {
    max_order_size: u64,
    tick_size_cents: u64,
    venue: [u8; 16],
}

#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
struct Reply {
    child_pid: u64,
    saw_max_order_size: u64,
}

/// Who created a race entry: the creator writes its pid.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
struct RaceWinner {
    pid: u64,
}

#[derive(Parser, Debug)]
#[command(about = "Find shared objects by name across processes; exactly one creator per name")]
struct Args {
    /// Names both processes race to create at the same time (the root registry holds 128 names)
    #[arg(long, default_value_t = 100)]
    races: u32,
    /// (internal) run as the child on segment NAME
    #[arg(long, value_name = "NAME", hide = true)]
    child: Option<String>,
}

type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

fn main() {
    let args = Args::parse();
    let result = match &args.child {
        Some(name) => child(name, args.races),
        None => parent(&args),
    };
    if let Err(e) = result {
        eprintln!("registry: {e}");
        std::process::exit(1);
    }
}

fn venue(name: &str) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..name.len()].copy_from_slice(name.as_bytes());
    v
}

/// Races for `app.race.0 ..`, in ascending or descending order; returns
/// how many names this process created. Going in opposite directions, the
/// two processes meet in the middle and contend there.
fn race(handler: &MatrixHandler, races: u32, ascending: bool) -> Result<u32> {
    let registry = Registry::root(handler)?;
    let me = std::process::id() as u64;
    let mut created = 0;
    for i in 0..races {
        let n = if ascending { i } else { races - 1 - i };
        let (block, made) =
            registry.find_or_create_pod(&format!("app.race.{n}"), RACE_TYPE, || RaceWinner {
                pid: me,
            })?;
        let winner = handler.read_pod(&block)?;
        if made != (winner.pid == me) {
            return Err(format!(
                "app.race.{n}: created={made} but the winner is pid {}",
                winner.pid
            )
            .into());
        }
        created += made as u32;
    }
    Ok(created)
}

fn parent(args: &Args) -> Result<()> {
    let room = matrix_internals::tables::ROOT_CAPACITY - 3;
    if args.races > room {
        return Err(format!(
            "--races must be at most {room}: the root registry holds {} names",
            room + 3
        )
        .into());
    }
    let name = unique_name("matrix-example-registry");
    let _guard = SegmentGuard::new(&name);
    let handler = MatrixHandler::create(&name, 4 << 20)?;
    println!(
        "segment /dev/shm/{name}: {}",
        describe_stats(&handler.stats()?)
    );
    let registry = Registry::root(&handler)?;
    let config = Config {
        max_order_size: 5_000,
        tick_size_cents: 1,
        venue: venue("XNAS"),
    };
    let (block, created) = registry.find_or_create_pod("app.config", CONFIG_TYPE, || config)?;
    println!(
        "parent: find_or_create_pod(\"app.config\") -> offset {}, created {created}",
        block.offset()
    );

    let mut child = ChildRole::spawn(
        "child",
        &[
            "--child".to_owned(),
            name.clone(),
            "--races".to_owned(),
            args.races.to_string(),
        ],
    )?;
    child.relay_until("ready", Duration::from_secs(60))?;
    // Open the gate: the child spins until this name appears, so both
    // processes start racing at the same moment.
    registry.find_or_create_pod("app.go", RACE_TYPE, || RaceWinner { pid: 0 })?;
    let mine = race(&handler, args.races, true)?;
    let theirs: u32 = child
        .wait_for_line("raced", Duration::from_secs(60))?
        .parse()?;
    let status = child.wait_timeout(Duration::from_secs(60))?;
    if !status.success() {
        return Err(format!("the child failed: {status}").into());
    }
    println!(
        "race: {} names, parent created {mine}, child created {theirs}: every name has exactly one creator ({})",
        args.races,
        if mine + theirs == args.races { "verified" } else { "FAILED" }
    );
    if mine + theirs != args.races {
        return Err("a name was created twice or not at all".into());
    }

    // The child is gone; what it registered lives on (the registry gives
    // created objects to the segment).
    let reply = registry.find_pod::<Reply>("app.reply", REPLY_TYPE)?;
    let r = handler.read_pod(&reply)?;
    println!(
        "parent: \"app.reply\" from child pid {} says max_order_size = {}",
        r.child_pid, r.saw_max_order_size
    );
    if r.saw_max_order_size != config.max_order_size {
        return Err("the child read another config".into());
    }

    // Clean up: unregister every name, then free its object.
    for entry in registry.entries() {
        registry.remove(&entry.name)?;
        handler.free_raw(entry.payload())?;
    }
    handler.recover()?;
    handler.consolidate()?;
    println!("verified: the child found the parent's object by name, a wrong type was refused, each race had one winner");
    println!("after: {}", describe_stats(&handler.stats()?));
    Ok(())
}

fn child(name: &str, races: u32) -> Result<()> {
    child_process_setup();
    let handler = MatrixHandler::open(name)?;
    let registry = Registry::root(&handler)?;
    for entry in registry.entries() {
        println!(
            "child: registry entry {:?} at offset {}, type {}",
            entry.name, entry.offset, entry.fingerprint
        );
    }
    let config = handler.read_pod(&registry.find_pod::<Config>("app.config", CONFIG_TYPE)?)?;
    let venue = String::from_utf8_lossy(&config.venue)
        .trim_end_matches('\0')
        .to_owned();
    println!(
        "child: app.config = max order {}, tick {} cent(s), venue {venue}",
        config.max_order_size, config.tick_size_cents
    );
    let (_, created) = registry.find_or_create_pod("app.config", CONFIG_TYPE, Config::zeroed)?;
    assert!(!created, "app.config exists: find_or_create must return it");
    match registry.find_pod::<Reply>("app.config", REPLY_TYPE) {
        Err(e @ RegistryError::TypeMismatch { .. }) => {
            println!("child: opening app.config as another type is refused: {e}")
        }
        other => return Err(format!("a wrong type was not refused: {other:?}").into()),
    }
    let me = std::process::id() as u64;
    registry.find_or_create_pod("app.reply", REPLY_TYPE, || Reply {
        child_pid: me,
        saw_max_order_size: config.max_order_size,
    })?;
    println!("ready");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while registry.lookup_entry("app.go").is_err() {
        if std::time::Instant::now() > deadline {
            return Err("the parent never opened the gate".into());
        }
        std::hint::spin_loop();
    }
    let created = race(&handler, races, false)?;
    println!("raced {created}");
    Ok(())
}
