//! # Lifecycle states across processes
//!
//! A producer process writes orders into blocks of a shared segment and marks
//! each one READY; consumer processes (this same program, re-executed) race
//! to claim them with a compare-and-swap on the block's state word, fill in
//! the total, and mark them DONE; the producer archives and frees them.
//!
//! ```text
//!  state  name      who moves the block there        from
//!  49     READY     producer, after writing the order   ALLOCATED
//!  50     CLAIMED   the one consumer whose CAS wins      READY
//!  51     DONE      that consumer, after writing total   CLAIMED
//!  52     ARCHIVED  producer, after checking the total   DONE   → then freed
//! ```
//!
//! States 0–48 belong to the allocator: asking for one is refused. A block in
//! a user state is never reclaimed behind your back; the producer frees each
//! order when its lifecycle ends, and a handle kept after that is refused as
//! stale instead of aliasing whatever is allocated there next.
//!
//! Run: `cargo run --release --example lifecycle -- --orders 2000 --consumers 2`

use clap::Parser;
use matrix_examples::{child_process_setup, describe_stats, unique_name, ChildRole, SegmentGuard};
use matrix_handler::{
    BlockToken, HandlerError, HandlerFunctions, MatrixHandler, Pod, Zeroable, STATE_ALLOCATED,
};
use std::sync::atomic::Ordering::{AcqRel, Acquire};
use std::time::{Duration, Instant};

const READY: u32 = 49;
const CLAIMED: u32 = 50;
const DONE: u32 = 51;
const ARCHIVED: u32 = 52;

/// How long anyone waits for the others before giving up.
const PATIENCE: Duration = Duration::from_secs(60);

/// One order, as it lives in its block.
#[derive(Clone, Copy, Debug, Pod, Zeroable, matrix_handler::ShmSafe)]
#[repr(C)]
struct Order {
    id: u64,
    price_cents: u64,
    total_cents: u64,
    quantity: u32,
    /// 1 + index of the consumer that processed it (0 = nobody yet).
    processed_by: u32,
}

#[derive(Parser, Debug)]
#[command(
    about = "Lifecycle states (READY=49 → CLAIMED=50 → DONE=51 → ARCHIVED=52) across processes"
)]
struct Args {
    /// Orders to process
    #[arg(long, default_value_t = 2000)]
    orders: u32,
    /// Consumer processes racing for the orders
    #[arg(long, default_value_t = 2)]
    consumers: u32,
    /// (internal) run as consumer INDEX of segment NAME with mailbox TOKEN
    #[arg(long, num_args = 3, value_names = ["INDEX", "NAME", "TOKEN"], hide = true)]
    consumer: Option<Vec<String>>,
}

fn main() {
    let args = Args::parse();
    let result = match &args.consumer {
        Some(c) => consumer(&c[0], &c[1], &c[2]),
        None => producer(&args),
    };
    if let Err(e) = result {
        eprintln!("lifecycle: {e}");
        std::process::exit(1);
    }
}

type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

fn producer(args: &Args) -> Result<()> {
    if args.orders == 0 || args.consumers == 0 {
        return Err("--orders and --consumers must be at least 1".into());
    }
    let name = unique_name("matrix-example-lifecycle");
    let _guard = SegmentGuard::new(&name);
    let handler = MatrixHandler::create(&name, 8 << 20)?;
    println!(
        "segment /dev/shm/{name}: {}",
        describe_stats(&handler.stats()?)
    );

    // Allocate every order first, and publish their tokens in a mailbox
    // block the consumers read once.
    let mut orders = Vec::with_capacity(args.orders as usize);
    for _ in 0..args.orders {
        orders.push(handler.allocate::<Order>()?);
    }
    let tokens: Vec<u64> = orders.iter().map(|b| b.token().word()).collect();
    let mut mailbox = handler.allocate_slice::<u64>(tokens.len())?;
    handler.write_slice(&mut mailbox, &tokens)?;

    // A reserved state is refused, whatever the block.
    match handler.set_state(&orders[0], 3) {
        Err(HandlerError::ReservedStatus(3)) => {
            println!("set_state(3) refused: states 0-48 belong to the allocator")
        }
        other => return Err(format!("set_state(3) should be refused, got {other:?}").into()),
    }

    let mut children = Vec::new();
    for index in 0..args.consumers {
        let argv = [
            "--consumer".to_owned(),
            index.to_string(),
            name.clone(),
            mailbox.token().to_u128().to_string(),
        ];
        children.push(ChildRole::spawn(&format!("consumer {index}"), &argv)?);
    }
    // Start marking orders READY once every consumer is watching, so they race.
    for child in &mut children {
        child.wait_for_line("started", PATIENCE)?;
    }
    let started = Instant::now();
    for (i, order) in orders.iter_mut().enumerate() {
        let i = i as u64;
        let value = Order {
            id: i,
            price_cents: 100 + i % 900,
            total_cents: 0,
            quantity: 1 + (i % 7) as u32,
            processed_by: 0,
        };
        handler.write_pod(order, value)?;
        // Release inside set_state: the order's bytes are visible to the
        // consumer that Acquires READY.
        handler.set_state(order, READY)?;
    }

    // Wait for every order to be DONE, then check, archive and free it.
    let mut per_consumer = vec![0u64; args.consumers as usize];
    for order in orders {
        let deadline = Instant::now() + PATIENCE;
        // Acquire: pairs with the Release half of the consumer's AcqRel
        // transition to DONE, so the total it wrote is visible.
        while handler.get_state(&order, Acquire) != DONE {
            if Instant::now() > deadline {
                return Err(format!("order {} never reached DONE", order.offset()).into());
            }
            std::thread::yield_now();
        }
        let value = handler.read_pod(&order)?;
        if value.total_cents != value.price_cents * value.quantity as u64 || value.processed_by == 0
        {
            return Err(format!("order {} came back wrong: {value:?}", value.id).into());
        }
        per_consumer[value.processed_by as usize - 1] += 1;
        // AcqRel: the producer is the only one moving DONE on; Acquire keeps
        // the read above before it, Release orders it before the free.
        handler.transition_state(&order, DONE, ARCHIVED, AcqRel)?;
        let token = order.token();
        handler.free(order)?;
        if handler.block_from_token::<Order>(token).is_ok() {
            return Err("a freed order's token still resolved".into());
        }
    }
    let elapsed = started.elapsed();
    let mut lost_races = 0;
    for (index, child) in children.iter_mut().enumerate() {
        let line = child.wait_for_line("result", PATIENCE)?;
        let status = child.wait_timeout(PATIENCE)?;
        if !status.success() {
            return Err(format!("consumer {index} failed: {status}").into());
        }
        lost_races += line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("lost="))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
    }
    handler.free(mailbox)?;

    println!(
        "{} orders in {:.1} ms: READY -> CLAIMED -> DONE -> ARCHIVED -> freed",
        args.orders,
        elapsed.as_secs_f64() * 1e3
    );
    for (index, n) in per_consumer.iter().enumerate() {
        println!("  consumer {index} processed {n} orders");
    }
    println!("  {lost_races} times a consumer saw READY but another consumer's CAS 49 -> 50 won");
    println!(
        "verified: every order processed exactly once ({} = {}), totals correct, stale tokens refused",
        per_consumer.iter().sum::<u64>(),
        args.orders
    );
    handler.consolidate()?;
    println!("after: {}", describe_stats(&handler.stats()?));
    Ok(())
}

fn consumer(index: &str, name: &str, mailbox: &str) -> Result<()> {
    child_process_setup();
    let me: u32 = index.parse()?;
    let handler = MatrixHandler::open(name)?;
    let mailbox = handler.block_from_token::<u64>(BlockToken::from_u128(mailbox.parse()?))?;
    let mut tokens = vec![0u64; mailbox.len()];
    handler.read_slice(&mailbox, &mut tokens)?;
    let mut pending: Vec<BlockToken> = tokens
        .into_iter()
        .map(|word| BlockToken::from_word(word, handler.segment_nonce()))
        .collect();
    println!("started");
    let (mut claimed, mut lost) = (0u64, 0u64);
    let deadline = Instant::now() + PATIENCE;
    while !pending.is_empty() {
        if Instant::now() > deadline {
            return Err(format!("{} orders never became READY", pending.len()).into());
        }
        pending.retain(|&token| {
            let Ok(mut order) = handler.block_from_token::<Order>(token) else {
                return false; // already archived and freed by the producer
            };
            // Acquire: pairs with the producer's Release in set_state(READY).
            match handler.get_state(&order, Acquire) {
                STATE_ALLOCATED => return true, // not READY yet
                READY => {}
                _ => return false, // another consumer has it
            }
            // AcqRel: Acquire the order bytes published with READY; the one
            // consumer whose CAS wins owns the order from here.
            match handler.transition_state(&order, READY, CLAIMED, AcqRel) {
                Ok(_) => {}
                Err(HandlerError::TransitionFailed(_)) => {
                    lost += 1; // seen READY, but another consumer's CAS came first
                    return false;
                }
                Err(_) => return false,
            }
            // This consumer alone holds the order now.
            let Ok(mut value) = handler.read_pod(&order) else {
                return false;
            };
            value.total_cents = value.price_cents * value.quantity as u64;
            value.processed_by = me + 1;
            if handler.write_pod(&mut order, value).is_err() {
                return false;
            }
            // AcqRel: its Release publishes the total to the producer's
            // Acquire of DONE.
            if handler
                .transition_state(&order, CLAIMED, DONE, AcqRel)
                .is_ok()
            {
                claimed += 1;
            }
            false
        });
        std::thread::yield_now();
    }
    println!("result claimed={claimed} lost={lost}");
    Ok(())
}
