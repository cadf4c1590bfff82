//! # A hash map in shared memory, updated by several processes at once
//!
//! A `ShmHashMap<Symbol, Quote>` lives in one block of the segment, found by
//! name through the registry. Worker processes (this program, re-executed)
//! replay synthetic trades: for each one they `update` the symbol's quote —
//! volume += quantity, trades += 1, last price — atomically with respect to
//! every other writer of that symbol, in any process. Readers never wait.
//!
//! ```text
//!  map "quotes" (fixed capacity, open addressing, one block)
//!  ┌─────────┬──────────────────────────────┐
//!  │ "SYM042" │ last 101.25  volume 83,112 … │ ◄── update() from worker 0
//!  │ "SYM007" │ last  99.80  volume 79,540 … │ ◄── update() from worker 1
//!  └─────────┴──────────────────────────────┘
//! ```
//!
//! Each worker also totals what it sent; the parent checks that the map's
//! volumes and trade counts add up to exactly what the workers reported:
//! no update lost, none applied twice.
//!
//! Run: `cargo run --release --example hashmap -- --workers 2 --trades 200000 --symbols 500`

use clap::Parser;
use matrix_examples::{child_process_setup, describe_stats, unique_name, ChildRole, SegmentGuard};
use matrix_handler::{HandlerFunctions, MatrixHandler, Pod, SharedHandler, Zeroable};
use matrix_internals::ShmHashMap;
use std::time::{Duration, Instant};

const MAP_NAME: &str = "quotes";

/// A ticker symbol, NUL-padded.
type Symbol = [u8; 16];

/// The map's value for one symbol.
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq)]
#[repr(C)]
struct Quote {
    last_price_cents: u64,
    volume: u64,
    trades: u64,
}

#[derive(Parser, Debug)]
#[command(about = "Worker processes update a shared hash map concurrently; the totals must add up")]
struct Args {
    /// Worker processes
    #[arg(long, default_value_t = 2)]
    workers: u32,
    /// Trades each worker applies
    #[arg(long, default_value_t = 200_000)]
    trades: u64,
    /// Distinct symbols
    #[arg(long, default_value_t = 500)]
    symbols: u32,
    /// (internal) run as worker INDEX on segment NAME
    #[arg(long, num_args = 2, value_names = ["INDEX", "NAME"], hide = true)]
    worker: Option<Vec<String>>,
}

type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

fn main() {
    let args = Args::parse();
    let result = match &args.worker {
        Some(w) => worker(&w[0], &w[1], &args),
        None => parent(&args),
    };
    if let Err(e) = result {
        eprintln!("hashmap: {e}");
        std::process::exit(1);
    }
}

fn symbol(i: u32) -> Symbol {
    let mut s = [0u8; 16];
    let text = format!("SYM{i:03}");
    s[..text.len()].copy_from_slice(text.as_bytes());
    s
}

fn open_map(
    handler: &MatrixHandler,
    symbols: u32,
) -> Result<ShmHashMap<Symbol, Quote, SharedHandler>> {
    Ok(ShmHashMap::open_or_create(handler.share(), MAP_NAME, symbols)?.0)
}

fn parent(args: &Args) -> Result<()> {
    if args.workers == 0 || args.symbols == 0 {
        return Err("--workers and --symbols must be at least 1".into());
    }
    let name = unique_name("matrix-example-hashmap");
    let _guard = SegmentGuard::new(&name);
    let handler = MatrixHandler::create(&name, 16 << 20)?;
    let (map, created) =
        ShmHashMap::<Symbol, Quote, _>::open_or_create(handler.share(), MAP_NAME, args.symbols)?;
    println!(
        "segment /dev/shm/{name}: map {MAP_NAME:?} for {} symbols (created {created}); {}",
        map.capacity(),
        describe_stats(&handler.stats()?)
    );

    let started = Instant::now();
    let mut workers = Vec::new();
    for index in 0..args.workers {
        let argv = [
            "--worker".to_owned(),
            index.to_string(),
            name.clone(),
            "--trades".to_owned(),
            args.trades.to_string(),
            "--symbols".to_owned(),
            args.symbols.to_string(),
        ];
        workers.push(ChildRole::spawn(&format!("worker {index}"), &argv)?);
    }
    let (mut sent_volume, mut sent_trades) = (0u64, 0u64);
    for worker in &mut workers {
        let line = worker.wait_for_line("result", Duration::from_secs(120))?;
        let field = |key: &str| -> Result<u64> {
            let text = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .ok_or("malformed result line")?;
            Ok(text.parse()?)
        };
        sent_volume += field("volume=")?;
        sent_trades += field("trades=")?;
        let status = worker.wait_timeout(Duration::from_secs(60))?;
        if !status.success() {
            return Err(format!("a worker failed: {status}").into());
        }
    }
    let elapsed = started.elapsed();

    let (mut volume, mut trades) = (0u64, 0u64);
    let mut quotes: Vec<(Symbol, Quote)> = map.iter().collect();
    for (_, q) in &quotes {
        volume += q.volume;
        trades += q.trades;
    }
    quotes.sort_by_key(|(_, q)| std::cmp::Reverse(q.volume));
    println!(
        "{} workers applied {} trades to {} symbols in {:.0} ms ({:.0} updates/s)",
        args.workers,
        sent_trades,
        map.len(),
        elapsed.as_secs_f64() * 1e3,
        sent_trades as f64 / elapsed.as_secs_f64()
    );
    for (sym, q) in quotes.iter().take(3) {
        println!(
            "  {:<8} last {:>4}.{:02}  volume {:>9}  trades {:>7}",
            String::from_utf8_lossy(sym).trim_end_matches('\0'),
            q.last_price_cents / 100,
            q.last_price_cents % 100,
            q.volume,
            q.trades
        );
    }
    let exact = volume == sent_volume && trades == sent_trades;
    println!(
        "{}: map totals volume {volume} / trades {trades}, workers sent {sent_volume} / {sent_trades}: no update lost or doubled",
        if exact { "verified" } else { "FAILED" }
    );
    if !exact {
        return Err("the map's totals differ from what the workers sent".into());
    }
    let removed = map.remove(&symbol(0)).ok_or("SYM000 had no quote")?;
    println!(
        "remove(SYM000) -> {removed:?}; get(SYM000) -> {:?}",
        map.get(&symbol(0))
    );
    drop(map);
    handler.recover()?;
    println!("after: {}", describe_stats(&handler.stats()?));
    Ok(())
}

fn worker(index: &str, name: &str, args: &Args) -> Result<()> {
    child_process_setup();
    let index: u64 = index.parse()?;
    let handler = MatrixHandler::open(name)?;
    let map = open_map(&handler, args.symbols)?;
    let mut rng = fastrand::Rng::with_seed(0xC0DE ^ index);
    let (mut volume, mut trades) = (0u64, 0u64);
    for _ in 0..args.trades {
        let sym = symbol(rng.u32(0..args.symbols));
        let quantity = rng.u64(1..=500);
        let price = rng.u64(9_000..=11_000);
        // Make sure the symbol has a quote (one process inserts it), then
        // apply the trade atomically with respect to every other writer.
        map.get_or_insert(&sym, Quote::zeroed())?;
        map.update(&sym, |q| Quote {
            last_price_cents: price,
            volume: q.volume + quantity,
            trades: q.trades + 1,
        })
        .ok_or("a symbol vanished from the map")?;
        volume += quantity;
        trades += 1;
    }
    println!("result trades={trades} volume={volume}");
    Ok(())
}
