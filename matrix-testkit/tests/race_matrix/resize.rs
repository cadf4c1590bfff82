//! The race matrix's resize rows: `reallocate` against every operation that
//! can touch the same block, or the physical neighbour a grow absorbs, at
//! the same moment.
//!
//! Most rounds race a batch of triples `[B][N][C]` carved one after the
//! other from the wilderness (the round's setup gives every block back and
//! consolidates first, so the wilderness starts at the arena start): B is
//! a two-element block that side A grows by exactly N's size, N is the
//! neighbour (free and alone in its own size class, or live), C a fence.
//! A grow that absorbs N is `GrownIntoNeighbour`; one that cannot is
//! `Moved`. After each round: B keeps its two elements and its new ones
//! are zero (so nothing else wrote into them), no block the other side got
//! overlaps B, the checker is clean, and each row that can absorb the
//! neighbour must have done so at least once (else it tested nothing).

use super::*;
use matrix_core::BlockError;
use matrix_handler::ResizeKind;

/// Block size of triple i's neighbour: a size class of its own (classes
/// are 16 B wide up to 512 B, 32 B up to 1 KiB).
fn own_class_size(i: usize) -> u32 {
    48 + 16 * i as u32
}

/// The bytes of every neighbour.
const N_BYTE: u8 = 0x5A;

/// The elements B holds before its grow (`seed`, `!seed`).
fn pattern(seed: u64) -> [u64; 2] {
    [seed, !seed]
}

/// A round's triples.
struct Triples {
    /// B's handles; side A replaces each with the handle its resize returns.
    grow: Mutex<Vec<Block<u64>>>,
    /// B's header offsets and the seeds of their elements.
    b: Vec<(u32, u64)>,
    /// N: header offset, block size, token (the live block; stale once freed).
    n: Vec<(u32, u32, BlockToken)>,
    /// The fences (freed into the index when `c_free`).
    c: Vec<BlockToken>,
    c_free: bool,
    /// Bit i: triple i is laid out `[B][N][C]` (it is whenever the setup's
    /// consolidation gave the wilderness back; a triple that is not is
    /// still raced and checked, it just cannot absorb).
    adjacent: u64,
    /// The round that made it, and the word its two sides start at.
    round: u64,
    start: AtomicU64,
}

impl Triples {
    /// `count` triples, N of block size `size(i)` and filled with
    /// [`N_BYTE`]; N (and C) freed into the index when `n_free` (`c_free`).
    fn new(
        h: &impl HandlerFunctions,
        round: u64,
        count: usize,
        size: impl Fn(usize) -> u32,
        (n_free, c_free): (bool, bool),
    ) -> Result<Triples, String> {
        h.matrix().flush_thread_cache();
        h.consolidate().map_err(|e| format!("consolidate: {e}"))?;
        let (mut grow, mut b, mut n, mut c) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut adjacent = 0;
        for i in 0..count {
            let mut bb = h.allocate_array::<u64>(2).map_err(|e| e.to_string())?;
            let mut nn = h
                .allocate_slice::<u8>((size(i) - 32) as usize)
                .map_err(|e| e.to_string())?;
            h.write_slice(&mut nn, &vec![N_BYTE; (size(i) - 32) as usize])
                .map_err(|e| e.to_string())?;
            let cc = h.allocate::<u64>().map_err(|e| e.to_string())?;
            let seed = round << 8 | i as u64;
            h.write_elems(&mut bb, 0, &pattern(seed))
                .map_err(|e| e.to_string())?;
            if nn.header_offset() == bb.header_offset() + 48
                && cc.header_offset() == nn.header_offset() + size(i)
            {
                adjacent |= 1 << i;
            }
            b.push((bb.header_offset(), seed));
            n.push((nn.header_offset(), size(i), nn.token()));
            c.push(cc.token());
            grow.push(bb);
        }
        if n_free {
            for &(_, _, t) in &n {
                free_token(h, t).map_err(|e| format!("free of a neighbour: {e}"))?;
            }
        }
        if c_free {
            free_all(h, &c)?;
        }
        h.matrix().flush_thread_cache();
        Ok(Triples {
            grow: Mutex::new(grow),
            b,
            n,
            c,
            c_free,
            adjacent,
            round,
            start: AtomicU64::new(0),
        })
    }

    /// [`start_together`] on this round's own start word.
    fn begin(&self, side_a: bool) {
        start_together(&self.start, self.round, side_a);
    }

    /// [`Triples::grow_all`] after [`Triples::begin`] (side A).
    fn grow_together(&self, h: &impl HandlerFunctions) -> Vec<Result<ResizeKind, HandlerError>> {
        self.begin(true);
        self.grow_all(h)
    }

    /// Grows every B by its neighbour's size (side A), in order.
    fn grow_all(&self, h: &impl HandlerFunctions) -> Vec<Result<ResizeKind, HandlerError>> {
        let mut grow = self.grow.lock().unwrap();
        grow.iter_mut()
            .zip(&self.n)
            .map(|(b, &(_, size, _))| h.reallocate(b, (16 + size as usize) / 8))
            .collect()
    }
}

/// How often the rows' grows absorbed the neighbour and moved.
#[derive(Default)]
struct Kinds {
    absorbed: u64,
    moved: u64,
    /// Contended neighbours that went to the grow / to the other side.
    grow_won: u64,
    other_won: u64,
}

impl Kinds {
    fn count(&mut self, kinds: &[Result<ResizeKind, HandlerError>]) {
        for k in kinds {
            match k {
                Ok(ResizeKind::GrownIntoNeighbour) => self.absorbed += 1,
                Ok(ResizeKind::Moved) => self.moved += 1,
                _ => {}
            }
        }
    }

    /// Who got each contended neighbour of a round: the grow (absorbed
    /// it) or the other side (`taken`: header offsets it got).
    fn contest(&mut self, t: &Triples, grown: &[Result<ResizeKind, HandlerError>], taken: &[u32]) {
        for (i, k) in grown
            .iter()
            .enumerate()
            .filter(|(i, _)| i % UNCONTENDED != 0)
        {
            if matches!(k, Ok(ResizeKind::GrownIntoNeighbour)) {
                self.grow_won += 1;
            } else if taken.contains(&t.n[i].0) {
                self.other_won += 1;
            }
        }
    }

    /// A row whose grows can absorb the neighbour must have done so.
    fn exercised(&self, pair: &str) -> Result<(), String> {
        let contest = if self.grow_won + self.other_won > 0 {
            format!(
                "; contended neighbours: {} to the grow, {} to the other side",
                self.grow_won, self.other_won
            )
        } else {
            String::new()
        };
        println!(
            "resize-row | {pair} | grows: {} absorbed the neighbour, {} moved{contest}",
            self.absorbed, self.moved
        );
        if self.absorbed == 0 {
            return Err("no grow absorbed the neighbour: the row raced nothing".into());
        }
        Ok(())
    }
}

/// `[start, end)` of the block at header `offset` as the chain has it now.
fn extent(h: &impl HandlerFunctions, offset: u32) -> Result<(u32, u32), String> {
    let (_, size) = h
        .matrix()
        .block_header(offset)
        .map_err(|e| format!("block {offset}: {e}"))?;
    Ok((offset, offset + size))
}

fn overlaps(a: (u32, u32), b: (u32, u32)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// After side A's grows: every grow succeeded, B kept its elements and its
/// new ones are zero, no block in `others` (`[start, end)`, the other
/// side's) overlaps a grown B, and an in-place grow absorbed only an
/// adjacent free neighbour. Then frees every B (and the fences).
fn check_grown(
    h: &impl HandlerFunctions,
    t: &Triples,
    kinds: &[Result<ResizeKind, HandlerError>],
    others: &[(u32, u32)],
) -> Result<(), String> {
    let grown = std::mem::take(&mut *t.grow.lock().unwrap());
    for (i, (b, kind)) in grown.iter().zip(kinds).enumerate() {
        let kind = kind
            .as_ref()
            .map_err(|e| format!("grow of block {}: {e}", t.b[i].0))?;
        let elems = h.get_slice(b).map_err(|e| format!("grown block: {e}"))?;
        if elems[..2] != pattern(t.b[i].1) || elems[2..].iter().any(|&x| x != 0) {
            return Err(format!(
                "the block grown {kind:?} to {} holds {:x?}: its elements were not kept, or \
                 something else wrote into its new ones",
                b.header_offset(),
                &elems[..elems.len().min(8)]
            ));
        }
        let mine = extent(h, b.header_offset())?;
        if let Some(o) = others.iter().find(|&&o| overlaps(mine, o)) {
            return Err(format!(
                "the block grown {kind:?} to {mine:?} overlaps the other side's block {o:?}"
            ));
        }
        if *kind == ResizeKind::GrownIntoNeighbour && t.adjacent >> i & 1 == 0 {
            return Err(format!(
                "block {} grew into a neighbour it does not have",
                t.b[i].0
            ));
        }
    }
    for b in grown {
        h.free(b)
            .map_err(|e| format!("free of a grown block: {e}"))?;
    }
    if t.c_free {
        return Ok(());
    }
    free_all(h, &t.c)
}

/// Frees the neighbours still live under their round's generation.
fn free_live_neighbours(h: &impl HandlerFunctions, t: &Triples) {
    for &(_, _, token) in &t.n {
        let _ = free_token(h, token);
    }
}

// ------------------------------------------------------ the same block

/// Side A resizes the block, side B adopts it from another participant:
/// exactly one of them wins (the resize changes the generation, so a
/// later adoption is stale; an adoption changes the owner, so a later
/// resize is `NotOwner`), and the block ends as the winner left it.
#[test]
fn reallocate_x_adopt() {
    let s = seg("race-realloc-adopt");
    let adopter = s.peer();
    let (me, them) = (s.h.matrix().owner_id(), adopter.matrix().owner_id());
    let walk = Walk::new();
    let result = race::pair(
        &batch_cfg(),
        |_| {
            let bs = (0..BATCH)
                .map(|_| s.h.allocate_array::<u64>(2))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            let ts: Vec<BlockToken> = bs.iter().map(|b| b.token()).collect();
            Ok((Mutex::new(bs), ts))
        },
        |(bs, _)| {
            let mut bs = bs.lock().unwrap();
            bs.iter_mut()
                .enumerate()
                .map(|(i, b)| s.h.reallocate(b, [1, 2, 40][i % 3]).is_ok())
                .enumerate()
                .fold(0u64, |acc, (i, ok)| acc | (ok as u64) << i)
        },
        |(_, ts)| {
            walk.bits(ts, |&t| {
                adopter
                    .block_from_token::<u64>(t)
                    .and_then(|b| adopter.adopt(&b))
                    .is_ok()
            })
        },
        |_, (bs, ts), resized, adopted| {
            exactly_one(resized, adopted)
                .map_err(|e| format!("reallocate × adopt: {e} (the resize or the adoption)"))?;
            let bs = bs.into_inner().unwrap();
            for (i, (b, t)) in bs.into_iter().zip(&ts).enumerate() {
                let (st, generation, owner) = words(&s.h, b.offset());
                let want = if resized >> i & 1 == 1 {
                    (b.generation(), me)
                } else {
                    (t.generation(), them)
                };
                if st != ALLOCATED || (generation, owner) != want {
                    return Err(format!(
                        "block {} is {} gen {generation} owner {:#x}; the winner left gen {} \
                         owner {:#x}",
                        b.header_offset(),
                        state::state_name(st),
                        owner.0,
                        want.0,
                        want.1 .0
                    ));
                }
                s.h.free(b).map_err(|e| format!("free: {e}"))?;
            }
            quiet_check(&s.h).map(drop)
        },
    );
    drop(adopter);
    race::record("reallocate × adopt", result, race::all_back(&s.h));
}

/// Side A resizes, side B sets a user state through a second handle: the
/// resize always succeeds (the state is live and the owner unchanged), and
/// the block ends in state 60 exactly when set_state succeeded (before the
/// resize, whose hold records the state and hands it back); a set_state
/// during or after the resize is refused as not live or stale.
#[test]
fn reallocate_x_set_state() {
    let s = seg("race-realloc-set-state");
    let walk = Walk::new();
    let result = race::pair(
        &batch_cfg(),
        |_| {
            let bs = (0..BATCH)
                .map(|_| s.h.allocate_array::<u64>(2))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            let copies = handles_of(&s.h, &bs.iter().map(|b| b.token()).collect::<Vec<_>>())?;
            Ok((Mutex::new(bs), copies))
        },
        |(bs, _)| {
            let mut bs = bs.lock().unwrap();
            bs.iter_mut()
                .enumerate()
                .map(|(i, b)| s.h.reallocate(b, [1, 40][i % 2]))
                .collect::<Vec<_>>()
        },
        |(_, copies)| walk.map(copies, |b| s.h.set_state(b, 60)),
        |_, (bs, _), resized, set| {
            for (i, (b, (r, st_set))) in bs
                .into_inner()
                .unwrap()
                .into_iter()
                .zip(resized.into_iter().zip(set))
                .enumerate()
            {
                r.map_err(|e| format!("resize {i} failed beside a set_state: {e}"))?;
                let (st, _, _) = words(&s.h, b.offset());
                match (&st_set, st) {
                    (Ok(()), 60) => {}
                    (Err(HandlerError::Block(BlockError::Stale { .. })), ALLOCATED)
                    | (Err(HandlerError::Block(BlockError::NotLive { .. })), ALLOCATED) => {}
                    _ => {
                        return Err(format!(
                            "set_state(60) returned {st_set:?} beside a resize; the block is {}",
                            state::state_name(st)
                        ))
                    }
                }
                s.h.free(b).map_err(|e| format!("free: {e}"))?;
            }
            quiet_check(&s.h).map(drop)
        },
    );
    race::record("reallocate × set_state", result, race::all_back(&s.h));
}

/// Side A resizes (grow, shrink, same size: in place or moved), side B
/// frees the block through a second handle of the same generation:
/// exactly one of them gets it.
#[test]
fn reallocate_x_free() {
    let s = seg("race-realloc-free");
    let walk = Walk::new();
    let result = race::pair(
        &batch_cfg(),
        |_| {
            let bs = (0..BATCH)
                .map(|_| s.h.allocate_array::<u64>(4))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            let ts: Vec<BlockToken> = bs.iter().map(|b| b.token()).collect();
            Ok((Mutex::new(bs), ts))
        },
        |(bs, _)| {
            let mut bs = bs.lock().unwrap();
            bits_of_mut(&mut bs, |i, b| s.h.reallocate(b, [1, 4, 64][i % 3]).is_ok())
        },
        |(_, ts)| {
            let r = walk.bits(ts, |&t| free_token(&s.h, t).is_ok());
            s.h.matrix().flush_thread_cache();
            r
        },
        |_, (bs, _), resized, freed| {
            exactly_one(resized, freed)
                .map_err(|e| format!("reallocate × free: {e} (the resize or the free)"))?;
            for (i, b) in bs.into_inner().unwrap().into_iter().enumerate() {
                if resized >> i & 1 == 1 {
                    s.h.free(b)
                        .map_err(|e| format!("free of the resized block: {e}"))?;
                }
            }
            quiet_check(&s.h).map(drop)
        },
    );
    race::record(
        "reallocate × free (second handle)",
        result,
        race::all_back(&s.h),
    );
}

/// Every bit of a round's batch set: `what` succeeded on every target.
fn all_ok(bits: u64, what: &str) -> Result<(), String> {
    match (!bits).trailing_zeros() as usize {
        i if i >= BATCH => Ok(()),
        i => Err(format!("{what} {i} of the round failed")),
    }
}

/// Bit i: `op(i, &mut item i)`.
fn bits_of_mut<T>(items: &mut [T], mut op: impl FnMut(usize, &mut T) -> bool) -> u64 {
    items
        .iter_mut()
        .enumerate()
        .fold(0, |acc, (i, x)| acc | ((op(i, x) as u64) << i))
}

/// Side B frees by offset, whatever the generation: it may also free the
/// block right after an in-place resize. Outcomes: the free first (the
/// resize is refused), the free during the hold (refused as not live), or
/// after it (in place: it frees the resized block; moved: the old offset
/// is free already). Never both freed, never neither.
#[test]
fn reallocate_x_free_at() {
    let s = seg("race-realloc-free-at");
    let walk = Walk::new();
    let result = race::pair(
        &batch_cfg(),
        |_| {
            let bs = (0..BATCH)
                .map(|_| s.h.allocate_array::<u64>(4))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            let offsets: Vec<u32> = bs.iter().map(|b| b.header_offset()).collect();
            Ok((Mutex::new(bs), offsets))
        },
        |(bs, _)| {
            let mut bs = bs.lock().unwrap();
            bs.iter_mut()
                .enumerate()
                .map(|(i, b)| s.h.reallocate(b, [1, 4, 64][i % 3]).ok())
                .collect::<Vec<_>>()
        },
        // A move (to 512 B) never lands on an offset another block of the
        // batch left (64 B blocks), so a late free_at of an old offset
        // finds it free, never another block.
        |(_, offsets)| {
            let r = walk.bits(offsets, |&o| s.h.free_at(o).is_ok());
            s.h.matrix().flush_thread_cache();
            r
        },
        |_, (bs, offsets), kinds, freed| {
            for (i, (b, kind)) in bs.into_inner().unwrap().into_iter().zip(kinds).enumerate() {
                let free_ok = freed >> i & 1 == 1;
                let (st, _, _) = words(&s.h, b.offset());
                let live = state::is_live(st);
                let consistent = match kind {
                    None => free_ok && !live,
                    Some(k) if k.in_place() => free_ok != live,
                    Some(_) => !free_ok && live,
                };
                if !consistent {
                    return Err(format!(
                        "resize {kind:?} and free_at {free_ok} of block {}: the block at {} is {}",
                        offsets[i],
                        b.header_offset(),
                        state::state_name(st)
                    ));
                }
                if live {
                    s.h.free(b).map_err(|e| format!("free: {e}"))?;
                }
            }
            quiet_check(&s.h).map(drop)
        },
    );
    race::record("reallocate × free_at", result, race::all_back(&s.h));
}

/// Side A shrinks a 512-byte block to its minimum; side B validates it
/// again and again with `block_at::<[u64; 64]>`. A handle of the shrunk
/// generation must never come back for the type that no longer fits; a
/// handle of the old generation is stale once the shrink is done.
#[test]
fn reallocate_shrink_x_block_at() {
    type Big = [u64; 64];
    let s = seg("race-realloc-block-at");
    let result = race::pair(
        &RaceConfig {
            max_spins: 2048,
            ..cfg()
        },
        |_| {
            let b = s.h.allocate::<Big>().map_err(|e| e.to_string())?;
            let offset = b.header_offset();
            Ok((Mutex::new(Some(b)), offset))
        },
        |(b, _)| -> Result<Block<Big>, String> {
            let mut b = b.lock().unwrap().take().expect("the round's block");
            s.h.reallocate(&mut b, 0).map_err(|e| e.to_string())?;
            Ok(b)
        },
        |(_, offset)| {
            (0..64)
                .filter_map(|_| s.h.block_at::<Big>(offset + 32).ok())
                .collect::<Vec<_>>()
        },
        |_, _, shrunk, seen| {
            let shrunk = shrunk?;
            let (_, size) = s.h.matrix().block_header(shrunk.header_offset()).unwrap();
            for b in &seen {
                if b.generation() == shrunk.generation() {
                    return Err(format!(
                        "block_at::<[u64; 64]> returned a handle of the shrunk generation {} \
                         ({} B payload)",
                        b.generation(),
                        size - 32
                    ));
                }
                if s.h.get(b).is_ok() {
                    return Err("a handle of the generation before the shrink still reads".into());
                }
            }
            s.h.free(shrunk).map_err(|e| format!("free: {e}"))
        },
    );
    race::record(
        "reallocate (shrink) × block_at of the old size",
        result,
        race::all_back(&s.h),
    );
}

/// Two threads of one participant resize the same block through two
/// handles of one generation (one grows, one shrinks or keeps the size):
/// exactly one succeeds; the other is refused as not live (the block is
/// being resized) or stale (it was resized), and its handle is unchanged.
#[test]
fn reallocate_x_reallocate_same_block() {
    let s = seg("race-realloc-realloc");
    let walk = Walk::new();
    let result = race::pair(
        &batch_cfg(),
        |_| {
            let a = (0..BATCH)
                .map(|_| s.h.allocate_array::<u64>(4))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            let ts: Vec<BlockToken> = a.iter().map(|b| b.token()).collect();
            let b = handles_of(&s.h, &ts)?;
            Ok((Mutex::new(a), Mutex::new(b)))
        },
        |(a, _)| {
            let mut a = a.lock().unwrap();
            a.iter_mut()
                .enumerate()
                .map(|(i, b)| s.h.reallocate(b, [40, 4][i % 2]))
                .collect::<Vec<_>>()
        },
        |(_, b)| {
            let mut b = b.lock().unwrap();
            let order: Vec<usize> = (0..BATCH).collect();
            walk.map(&order, |&j| s.h.reallocate(&mut b[j], [1, 8][j % 2]))
        },
        |_, (a, b), ra, rb| {
            let (a, b) = (a.into_inner().unwrap(), b.into_inner().unwrap());
            for (i, ((x, y), (rx, ry))) in a.into_iter().zip(b).zip(ra.iter().zip(&rb)).enumerate()
            {
                let winner = match (rx, ry) {
                    (Ok(_), Err(e)) | (Err(e), Ok(_)) => {
                        // Not live (being resized), stale (resized in
                        // place) or, after a move, no block at the offset
                        // any more (its place merged into a neighbour).
                        if !matches!(
                            e,
                            HandlerError::Block(BlockError::NotLive { .. })
                                | HandlerError::Block(BlockError::Stale { .. })
                                | HandlerError::InvalidOffset(_)
                        ) {
                            return Err(format!("the losing resize of block {i}: {e:?}"));
                        }
                        if rx.is_ok() {
                            (x, y)
                        } else {
                            (y, x)
                        }
                    }
                    _ => {
                        return Err(format!(
                            "two resizes of block {i} by sibling threads: {rx:?} and {ry:?}; \
                             exactly one must succeed"
                        ))
                    }
                };
                let (won, lost) = winner;
                if s.h.get_slice(&lost).is_ok() {
                    return Err(format!("the loser's handle of block {i} still reads"));
                }
                let (st, _, _) = words(&s.h, won.offset());
                if st != ALLOCATED || s.h.get_slice(&won).is_err() {
                    return Err(format!(
                        "the winner's block {i} is {}",
                        state::state_name(st)
                    ));
                }
                s.h.free(won).map_err(|e| format!("free: {e}"))?;
            }
            quiet_check(&s.h).map(drop)
        },
    );
    race::record(
        "reallocate × reallocate (same block, sibling threads)",
        result,
        race::all_back(&s.h),
    );
}

// ------------------------------------------------------- the neighbour

/// The live neighbours of `t` still hold their bytes, and none overlaps a
/// grown block (checked by [`check_grown`] through `others`).
fn neighbours_intact(h: &impl HandlerFunctions, t: &Triples) -> Result<Vec<(u32, u32)>, String> {
    let mut extents = Vec::new();
    for &(offset, _, token) in &t.n {
        let b = h
            .block_from_token::<u8>(token)
            .map_err(|e| format!("the live neighbour {offset}: {e}"))?;
        let bytes = h.get_slice(&b).map_err(|e| e.to_string())?;
        if bytes.iter().any(|&x| x != N_BYTE) {
            return Err(format!("the live neighbour {offset} lost its bytes"));
        }
        extents.push(extent(h, offset)?);
    }
    Ok(extents)
}

/// Live blocks of participants other than `h` and the segment (a child's),
/// as `[start, end)`, each checked to hold only `byte`.
fn blocks_of_others(h: &impl HandlerFunctions, byte: u8) -> Result<Vec<(u32, u32)>, String> {
    let me = h.matrix().owner_id();
    let mut out = Vec::new();
    for info in h.matrix().blocks() {
        let info = info.map_err(|e| format!("walk: {e}"))?;
        if !state::is_live(info.state) || info.owner == me || info.owner == OwnerId::SEGMENT {
            continue;
        }
        let b = h
            .block_at::<u8>(info.offset + 32)
            .map_err(|e| format!("the other side's block {}: {e}", info.offset))?;
        if h.get_slice(&b)
            .map_err(|e| e.to_string())?
            .iter()
            .any(|&x| x != byte)
        {
            return Err(format!(
                "the other side's block {} lost its bytes",
                info.offset
            ));
        }
        out.push((info.offset, info.offset + info.size));
    }
    Ok(out)
}

/// Every `UNCONTENDED`-th triple's neighbour is left to the grow alone, so
/// that every round absorbs some neighbour whoever wins the others (a
/// row's check that it absorbed at all then tests its set-up, not luck).
const UNCONTENDED: usize = 4;

/// The neighbours the allocating side asks for: all but every
/// [`UNCONTENDED`]-th.
fn contended<T: Copy>(n: &[T]) -> Vec<T> {
    n.iter()
        .enumerate()
        .filter(|(i, _)| i % UNCONTENDED != 0)
        .map(|(_, &x)| x)
        .collect()
}

/// Side A grows each B by its free neighbour's size; side B (another
/// participant) allocates blocks of (most) neighbours' sizes, which look in
/// the neighbour's own size class first, so both want exactly that block.
/// Each neighbour goes to one of them: the other side's blocks keep their
/// bytes and never overlap a grown B.
#[test]
fn reallocate_grow_x_allocate_of_the_neighbour() {
    const BYTE: u8 = 0xC5;
    let s = seg("race-realloc-alloc-n");
    let p2 = s.peer();
    let walk = Walk::new();
    let flag = AtomicU64::new(0);
    let mut kinds = Kinds::default();
    let result = race::pair(
        &batch_cfg(),
        |round| Triples::new(&s.h, round, BATCH, own_class_size, (true, false)),
        |t| {
            start_together(&flag, t.round, true);
            t.grow_all(&s.h)
        },
        |t| {
            start_together(&flag, t.round, false);
            walk.map(&contended(&t.n), |&(_, size, _)| {
                let mut b = p2.allocate_slice::<u8>(size as usize - 32).ok()?;
                p2.write_slice(&mut b, &vec![BYTE; size as usize - 32])
                    .ok()?;
                Some(b)
            })
        },
        |_, t, grown, got| {
            kinds.count(&grown);
            let others = blocks_of_others(&s.h, BYTE)?;
            if others.len() != got.iter().flatten().count() {
                return Err(format!(
                    "{} blocks of the allocating side in the chain, {} allocated",
                    others.len(),
                    got.iter().flatten().count()
                ));
            }
            let taken: Vec<u32> = got.iter().flatten().map(|b| b.header_offset()).collect();
            kinds.contest(&t, &grown, &taken);
            check_grown(&s.h, &t, &grown, &others)?;
            for b in got.into_iter().flatten() {
                p2.free(b).map_err(|e| format!("free: {e}"))?;
            }
            p2.matrix().flush_thread_cache();
            quiet_check(&s.h).map(drop)
        },
    );
    drop(p2);
    let pair = "reallocate (grow into the neighbour) × allocate of its size";
    let end = kinds.exercised(pair).and_then(|()| race::all_back(&s.h));
    race::record(pair, result, end);
}

/// Side B of the process rows: the first target is `round << 32 |` the
/// payload offset of the start word (see [`start_together`]); then
/// allocate a block of each other target's size (`offset << 32 | block
/// size`), fill it with [`CHILD_BYTE`], keep it (the parent frees it);
/// bit i: the block of target i + 1 landed at its offset.
pub fn child_allocate_sized(h: &MatrixHandler, targets: &[u64]) -> u64 {
    let Some((&start, targets)) = targets.split_first() else {
        return 0;
    };
    let Ok(flag) = h.block_at::<AtomicU64>((start & 0xFFFF_FFFF) as u32) else {
        return 0;
    };
    let Ok(word) = h.get(&flag) else {
        return 0;
    };
    start_together(word, start >> 32, false);
    CHILD_WALK.bits(targets, |&w| {
        let (offset, size) = ((w >> 32) as u32, w as u32);
        let Ok(mut b) = h.allocate_slice::<u8>(size as usize - 32) else {
            return false;
        };
        let landed = b.header_offset() == offset;
        let _ = h.write_slice(&mut b, &vec![CHILD_BYTE; size as usize - 32]);
        // Kept: the parent frees it after its checks.
        landed
    })
}

/// What [`child_allocate_sized`] writes.
pub const CHILD_BYTE: u8 = 0xC6;

/// As [`reallocate_grow_x_allocate_of_the_neighbour`], the allocations in
/// another process.
#[test]
fn reallocate_grow_x_allocate_of_the_neighbour_processes() {
    let s = seg("race-realloc-alloc-n-p");
    let mut kinds = Kinds::default();
    // The start word both sides meet at (see `start_together`).
    let flag = s.h.allocate_zeroed::<AtomicU64>().expect("the start word");
    let result = race::process_pair(
        &batch_cfg(),
        &launcher(),
        s.name.as_str(),
        "allocate-sized",
        |round| {
            let t = Triples::new(&s.h, round, BATCH, own_class_size, (true, false))?;
            let words = std::iter::once(round << 32 | flag.offset() as u64)
                .chain(
                    contended(&t.n)
                        .iter()
                        .map(|&(o, size, _)| (o as u64) << 32 | size as u64),
                )
                .collect();
            Ok((t, words))
        },
        |t| {
            start_together(s.h.get(&flag).expect("the start word"), t.round, true);
            t.grow_all(&s.h)
        },
        |_, t, grown, landed| {
            kinds.count(&grown);
            let asked = (0..BATCH).filter(|i| i % UNCONTENDED != 0);
            for (bit, i) in asked.enumerate() {
                if landed >> bit & 1 == 1 && matches!(grown[i], Ok(ResizeKind::GrownIntoNeighbour))
                {
                    return Err(format!(
                        "neighbour {} went to the child's allocation and to the grow of {}",
                        t.n[i].0, t.b[i].0
                    ));
                }
            }
            let others = blocks_of_others(&s.h, CHILD_BYTE)?;
            let taken: Vec<u32> = others.iter().map(|o| o.0).collect();
            kinds.contest(&t, &grown, &taken);
            check_grown(&s.h, &t, &grown, &others)?;
            for (start, _) in others {
                s.h.free_at(start)
                    .map_err(|e| format!("free of the child's block: {e}"))?;
            }
            quiet_check(&s.h).map(drop)
        },
    );
    s.h.free(flag).expect("free of the start word");
    let pair = "reallocate (grow into the neighbour) × allocate of its size";
    let end = kinds.exercised(pair).and_then(|()| race::all_back(&s.h));
    race::record(pair, result, end);
}

/// Side A grows each B while side B frees B's live neighbour (and flushes
/// its cache, so the neighbour reaches the index at once): a grow that
/// judges the neighbour after the push absorbs it, one before moves.
#[test]
fn reallocate_grow_x_free_of_the_neighbour() {
    let s = seg("race-realloc-free-n");
    let p2 = s.peer();
    let walk = Walk::new();
    let mut kinds = Kinds::default();
    let result = race::pair(
        &batch_cfg(),
        |round| Triples::new(&s.h, round, BATCH, own_class_size, (false, false)),
        |t| t.grow_together(&s.h),
        |t| {
            t.begin(false);
            walk.bits(&t.n, |&(_, _, token)| {
                let r = free_token(&p2, token).is_ok();
                p2.matrix().flush_thread_cache();
                r
            })
        },
        |_, t, grown, freed| {
            kinds.count(&grown);
            all_ok(freed, "free of a live neighbour")?;
            check_grown(&s.h, &t, &grown, &[])?;
            quiet_check(&s.h).map(drop)
        },
    );
    drop(p2);
    let pair = "reallocate (grow into the neighbour) × free of the neighbour";
    let end = kinds.exercised(pair).and_then(|()| race::all_back(&s.h));
    race::record(pair, result, end);
}

/// The same through a `LocalHandler`: its free parks the neighbour in the
/// handle's own cache (CACHED, which no grow may absorb) until its flush
/// pushes it.
#[test]
fn reallocate_grow_x_local_free_of_the_neighbour() {
    let s = seg("race-realloc-local-free-n");
    let p2 = s.peer();
    let walk = Walk::new();
    let mut kinds = Kinds::default();
    let result = race::pair(
        &batch_cfg(),
        |round| Triples::new(&s.h, round, BATCH, own_class_size, (false, false)),
        |t| t.grow_together(&s.h),
        |t| {
            t.begin(false);
            let mut local = p2.local();
            walk.bits(&t.n, |&(offset, _, _)| {
                let r = local.free_at(offset).is_ok();
                local.flush();
                r
            })
        },
        |_, t, grown, freed| {
            kinds.count(&grown);
            all_ok(freed, "free of a live neighbour")?;
            check_grown(&s.h, &t, &grown, &[])?;
            quiet_check(&s.h).map(drop)
        },
    );
    drop(p2);
    let pair = "reallocate (grow into the neighbour) × local free of the neighbour";
    let end = kinds.exercised(pair).and_then(|()| race::all_back(&s.h));
    race::record(pair, result, end);
}

/// Side A grows each B by its free neighbour while side B consolidates;
/// the fences are free too, so the merge wants each neighbour with the
/// fence after it (a grow that finds the merged block absorbs part of it
/// and splits the rest off).
#[test]
fn reallocate_grow_x_consolidate() {
    let s = seg("race-realloc-consolidate");
    let p2 = s.peer();
    let mut kinds = Kinds::default();
    let result = race::pair(
        &batch_cfg(),
        |round| Triples::new(&s.h, round, BATCH, own_class_size, (true, true)),
        |t| t.grow_together(&s.h),
        |t| {
            t.begin(false);
            p2.consolidate()
        },
        |_, t, grown, merged| {
            kinds.count(&grown);
            merged.map_err(|e| format!("consolidate: {e}"))?;
            check_grown(&s.h, &t, &grown, &[])?;
            quiet_check(&s.h).map(drop)
        },
    );
    drop(p2);
    let pair = "reallocate (grow into the neighbour) × consolidate";
    let end = kinds.exercised(pair).and_then(|()| race::all_back(&s.h));
    race::record(pair, result, end);
}

/// N live and adopted by another participant while side A grows B: a live
/// block is never absorbed (every grow moves), and N ends owned by the
/// adopter with its bytes.
#[test]
fn reallocate_grow_x_adopt_of_the_neighbour() {
    let s = seg("race-realloc-adopt-n");
    let adopter = s.peer();
    let them = adopter.matrix().owner_id();
    let walk = Walk::new();
    let mut kinds = Kinds::default();
    let result = race::pair(
        &batch_cfg(),
        |round| Triples::new(&s.h, round, BATCH, own_class_size, (false, false)),
        |t| t.grow_together(&s.h),
        |t| {
            t.begin(false);
            walk.bits(&t.n, |&(_, _, token)| {
                adopter
                    .block_from_token::<u8>(token)
                    .and_then(|b| adopter.adopt(&b))
                    .is_ok()
            })
        },
        |_, t, grown, adopted| {
            kinds.count(&grown);
            all_ok(adopted, "adoption of a live neighbour")?;
            if kinds.absorbed != 0 {
                return Err("a grow absorbed a live neighbour".into());
            }
            let others = neighbours_intact(&s.h, &t)?;
            for &(offset, _, _) in &t.n {
                let (_, _, owner) = words(&s.h, offset + 32);
                if owner != them {
                    return Err(format!("neighbour {offset} is owned by {:#x}", owner.0));
                }
            }
            check_grown(&s.h, &t, &grown, &others)?;
            free_live_neighbours(&s.h, &t);
            quiet_check(&s.h).map(drop)
        },
    );
    drop(adopter);
    race::record(
        "reallocate (grow) × adopt of the live neighbour",
        result,
        race::all_back(&s.h),
    );
}

/// Side A grows each B while side B resizes B's live neighbour N to four
/// times its size (it moves: the fence is live), which frees N's old
/// place: a grow may absorb it only once N's bytes are in their new
/// block; both keep their bytes and never overlap.
#[test]
fn reallocate_grow_x_reallocate_of_the_neighbour() {
    let s = seg("race-realloc-realloc-n");
    let walk = Walk::new();
    let mut kinds = Kinds::default();
    let result = race::pair(
        &batch_cfg(),
        |round| {
            let t = Triples::new(&s.h, round, BATCH, own_class_size, (false, false))?;
            let ns = Mutex::new(
                t.n.iter()
                    .map(|&(_, _, token)| s.h.block_from_token::<u8>(token))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string())?,
            );
            Ok((t, ns))
        },
        |(t, _)| t.grow_together(&s.h),
        |(t, ns)| {
            t.begin(false);
            let mut ns = ns.lock().unwrap();
            let order: Vec<usize> = (0..ns.len()).collect();
            walk.map(&order, |&j| {
                let len = ns[j].len() * 4;
                s.h.reallocate(&mut ns[j], len)
            })
        },
        |_, (t, ns), grown, moved| {
            kinds.count(&grown);
            let ns = ns.into_inner().unwrap();
            let mut others = Vec::new();
            for (n, r) in ns.iter().zip(&moved) {
                r.as_ref()
                    .map_err(|e| format!("resize of the neighbour: {e}"))?;
                let bytes = s.h.get_slice(n).map_err(|e| e.to_string())?;
                let kept = bytes.len() / 4;
                if bytes[..kept].iter().any(|&x| x != N_BYTE)
                    || bytes[kept..].iter().any(|&x| x != 0)
                {
                    return Err(format!(
                        "the neighbour resized to {} lost its bytes",
                        n.header_offset()
                    ));
                }
                others.push(extent(&s.h, n.header_offset())?);
            }
            check_grown(&s.h, &t, &grown, &others)?;
            for n in ns {
                s.h.free(n).map_err(|e| format!("free: {e}"))?;
            }
            quiet_check(&s.h).map(drop)
        },
    );
    let pair = "reallocate (grow) × reallocate of the neighbour";
    let end = kinds.exercised(pair).and_then(|()| race::all_back(&s.h));
    race::record(pair, result, end);
}

/// N owned by a participant that detached; side B's `recover()` returns
/// every N to the index while side A grows each B: a grow absorbs a
/// neighbour only once recovery let go of it.
#[test]
fn reallocate_grow_x_recover_of_the_neighbour_s_owner() {
    let s = seg("race-realloc-recover-n");
    let p2 = s.peer();
    let mut kinds = Kinds::default();
    let result = race::pair(
        &batch_cfg(),
        |round| {
            let t = Triples::new(&s.h, round, BATCH, own_class_size, (false, false))?;
            let d = s.peer();
            for &(_, _, token) in &t.n {
                d.block_from_token::<u8>(token)
                    .and_then(|b| d.adopt(&b))
                    .map_err(|e| format!("adopt: {e}"))?;
            }
            drop(d);
            Ok(t)
        },
        |t| t.grow_together(&s.h),
        |t| {
            t.begin(false);
            p2.recover()
        },
        |_, t, grown, rec| {
            kinds.count(&grown);
            let rec = rec.map_err(|e| format!("recover: {e}"))?;
            if rec.participants != 1 || rec.blocks != BATCH as u64 {
                return Err(format!(
                    "recover of the neighbours' detached owner: {rec:?}, expected 1 participant \
                     and {BATCH} blocks"
                ));
            }
            check_grown(&s.h, &t, &grown, &[])?;
            quiet_check(&s.h).map(drop)
        },
    );
    drop(p2);
    let pair = "reallocate (grow into the neighbour) × recover (detached owner of the neighbour)";
    let end = kinds.exercised(pair).and_then(|()| race::all_back(&s.h));
    race::record(pair, result, end);
}

/// As above with the neighbours' owner a child process SIGKILLed holding
/// them: it allocates [`HELD`] blocks of the neighbours' size, which come
/// from their bucket (the neighbours, freed just before).
#[test]
fn reallocate_grow_x_recover_of_the_neighbour_s_owner_sigkill() {
    const HELD: usize = 8;
    const SIZE: u32 = 96;
    let s = seg("race-realloc-recover-n-kill");
    let p2 = s.peer();
    let launcher = launcher();
    let c = cfg();
    let mut kinds = Kinds::default();
    let mut held_neighbours = 0u64;
    let result = race::pair(
        &RaceConfig {
            targets_per_round: HELD as u64,
            ..c.clone()
        },
        |round| {
            let t = Triples::new(&s.h, round, HELD, |_| SIZE, (true, false))?;
            let (mut child, tokens) = race::spawn_holder(
                &launcher,
                s.name.as_str(),
                HELD,
                SIZE as usize - 32,
                c.timeout,
            )?;
            child.kill().map_err(|e| format!("kill: {e}"))?;
            held_neighbours += tokens
                .iter()
                .filter(|tk| t.n.iter().any(|n| n.0 == tk.offset() - 32))
                .count() as u64;
            Ok(t)
        },
        |t| t.grow_together(&s.h),
        |t| {
            t.begin(false);
            p2.recover()
        },
        |_, t, grown, rec| {
            kinds.count(&grown);
            let rec = rec.map_err(|e| format!("recover: {e}"))?;
            if rec.participants != 1 || rec.blocks != HELD as u64 {
                return Err(format!(
                    "recover of the SIGKILLed owner: {rec:?}, expected 1 participant and {HELD} \
                     blocks"
                ));
            }
            check_grown(&s.h, &t, &grown, &[])?;
            quiet_check(&s.h).map(drop)
        },
    );
    let result = race::in_processes(result);
    drop(p2);
    let pair = "reallocate (grow into the neighbour) × recover (SIGKILLed owner of the neighbour)";
    println!("resize-row | {pair} | {held_neighbours} neighbours held by the killed children");
    let end = kinds.exercised(pair).and_then(|()| race::all_back(&s.h));
    race::record(pair, result, end);
}

// ------------------------------------------------------- LocalHandler

/// A free through another thread's `LocalHandler` (with the generation;
/// the block goes to that handle's cache) racing a resize: exactly one
/// wins.
#[test]
fn reallocate_x_local_free() {
    let s = seg("race-realloc-local-free");
    let walk = Walk::new();
    let result = race::pair(
        &batch_cfg(),
        |_| {
            let bs = (0..BATCH)
                .map(|_| s.h.allocate_array::<u64>(4))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            let ts: Vec<BlockToken> = bs.iter().map(|b| b.token()).collect();
            let copies = handles_of(&s.h, &ts)?.into_iter().map(Some).collect();
            Ok((Mutex::new(bs), Mutex::new(copies)))
        },
        |(bs, _)| {
            let mut bs = bs.lock().unwrap();
            bits_of_mut(&mut bs, |i, b| s.h.reallocate(b, [1, 4, 64][i % 3]).is_ok())
        },
        |(_, copies): &(_, Mutex<Vec<Option<Block<u64>>>>)| {
            let mut local = s.h.local();
            let mut copies = copies.lock().unwrap();
            let order: Vec<usize> = (0..BATCH).collect();
            walk.bits(&order, |&j| {
                local
                    .free(copies[j].take().expect("each copy once"))
                    .is_ok()
            })
        },
        |_, (bs, _), resized, freed| {
            exactly_one(resized, freed)
                .map_err(|e| format!("reallocate × local free: {e} (the resize or the free)"))?;
            for (i, b) in bs.into_inner().unwrap().into_iter().enumerate() {
                if resized >> i & 1 == 1 {
                    s.h.free(b)
                        .map_err(|e| format!("free of the resized block: {e}"))?;
                }
            }
            quiet_check(&s.h).map(drop)
        },
    );
    race::record("reallocate × local free", result, race::all_back(&s.h));
}

/// As [`reallocate_grow_x_allocate_of_the_neighbour`], the allocations
/// through a `LocalHandler` (its cache is empty, so they take the shared
/// path from the handle's own cache miss).
#[test]
fn reallocate_grow_x_local_allocate_of_the_neighbour() {
    let s = seg("race-realloc-local-alloc-n");
    let p2 = s.peer();
    let walk = Walk::new();
    let flag = AtomicU64::new(0);
    let mut kinds = Kinds::default();
    let result = race::pair(
        &batch_cfg(),
        |round| Triples::new(&s.h, round, BATCH, own_class_size, (true, false)),
        |t| {
            start_together(&flag, t.round, true);
            t.grow_all(&s.h)
        },
        |t| {
            let mut local = p2.local();
            start_together(&flag, t.round, false);
            walk.map(&contended(&t.n), |&(_, size, _)| {
                local.allocate_raw(size - 32).ok()
            })
        },
        |_, t, grown, got| {
            kinds.count(&grown);
            let got: Vec<u32> = got.into_iter().flatten().map(|p| p.offset() - 32).collect();
            kinds.contest(&t, &grown, &got);
            let others = got
                .iter()
                .map(|&o| extent(&s.h, o))
                .collect::<Result<Vec<_>, _>>()?;
            check_grown(&s.h, &t, &grown, &others)?;
            for o in got {
                p2.free_at(o).map_err(|e| format!("free: {e}"))?;
            }
            p2.matrix().flush_thread_cache();
            quiet_check(&s.h).map(drop)
        },
    );
    drop(p2);
    let pair = "reallocate (grow into the neighbour) × local allocate of its size";
    let end = kinds.exercised(pair).and_then(|()| race::all_back(&s.h));
    race::record(pair, result, end);
}

// ------------------------------------------------------- the wilderness

/// The start of a row's operation on each side: on even rounds side A
/// leads (stores the round in `flag`) and side B follows, on odd rounds
/// the other way round. The follower waits (bounded, yielding now and
/// then: the leader may need this core) for the round, then a random
/// number of spins, so that it starts anywhere in the leader's operation.
/// Under load the side that arrives first at the rendezvous tends to start
/// last (it was yielding), and then one side won every round. `flag` may
/// be a word in the segment, for a side in another process.
fn start_together(flag: &AtomicU64, round: u64, side_a: bool) {
    if (round % 2 == 0) == side_a {
        flag.store(round, SeqCst);
        return;
    }
    let deadline = Instant::now() + Duration::from_millis(50);
    let mut n = 0u32;
    while flag.load(SeqCst) < round && Instant::now() < deadline {
        n = n.wrapping_add(1);
        if n % 64 == 0 {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
    for _ in 0..fastrand::u32(0..512) {
        std::hint::spin_loop();
    }
}

/// B is the last block; side A grows it into the wilderness while side B
/// allocates (the index is empty: the allocation carves from `top`). Both
/// CAS `top`: the grow stays in place only if it moved `top` from B's end
/// first, else it moves (after the carved block); the two never overlap.
#[test]
fn reallocate_grow_into_the_wilderness_x_a_carve() {
    let s = seg("race-realloc-carve");
    let p2 = s.peer();
    let (mut grown_in_place, mut won_top) = (0u64, 0u64);
    let flag = AtomicU64::new(0);
    let result = race::pair(
        &cfg(),
        |round| {
            s.h.matrix().flush_thread_cache();
            s.h.consolidate().map_err(|e| format!("consolidate: {e}"))?;
            let mut b = s.h.allocate_array::<u64>(2).map_err(|e| e.to_string())?;
            s.h.write_elems(&mut b, 0, &pattern(round))
                .map_err(|e| e.to_string())?;
            Ok((Mutex::new(b), round))
        },
        |&(ref b, round)| {
            let mut b = b.lock().unwrap();
            start_together(&flag, round, true);
            s.h.reallocate(&mut b, 130)
        },
        // Every eighth round the grow has the wilderness to itself, so
        // that the row's check that some grow stayed in place tests its
        // set-up, not the scheduler (under load one side tends to start
        // first, and then wins every round).
        |&(_, round)| {
            (round % 8 != 0).then(|| {
                start_together(&flag, round, false);
                p2.allocate_slice::<u8>(1000)
            })
        },
        |_, (b, round), grown, carved| {
            let kind = grown.map_err(|e| format!("grow: {e}"))?;
            let Some(carved) = carved else {
                let b = b.into_inner().unwrap();
                if kind != ResizeKind::GrownIntoWilderness {
                    return Err(format!("the last block grew {kind:?}, alone"));
                }
                grown_in_place += 1;
                s.h.free(b).map_err(|e| format!("free: {e}"))?;
                return quiet_check(&s.h).map(drop);
            };
            let carved = carved.map_err(|e| format!("allocate: {e}"))?;
            let b = b.into_inner().unwrap();
            let elems = s.h.get_slice(&b).map_err(|e| e.to_string())?;
            if elems[..2] != pattern(round) || elems[2..].iter().any(|&x| x != 0) {
                return Err(format!("the block grown {kind:?} lost its elements"));
            }
            let (mine, theirs) = (
                extent(&s.h, b.header_offset())?,
                extent(&s.h, carved.header_offset())?,
            );
            if overlaps(mine, theirs) {
                return Err(format!(
                    "the block grown {kind:?} to {mine:?} overlaps the carved block {theirs:?}"
                ));
            }
            match kind {
                ResizeKind::GrownIntoWilderness => won_top += 1,
                ResizeKind::Moved => {}
                k => return Err(format!("the last block grew {k:?}")),
            }
            s.h.free(b).map_err(|e| format!("free: {e}"))?;
            p2.free(carved).map_err(|e| format!("free: {e}"))?;
            p2.matrix().flush_thread_cache();
            quiet_check(&s.h).map(drop)
        },
    );
    drop(p2);
    let pair = "reallocate (grow into the wilderness) × allocate (a carve)";
    println!("resize-row | {pair} | in place: {grown_in_place} alone, {won_top} against a carve");
    let end = if grown_in_place == 0 {
        Err("no grow stayed in place: the row raced nothing".into())
    } else {
        race::all_back(&s.h)
    };
    race::record(pair, result, end);
}

/// `[B][N free]` at the end of the chain; side A grows B by N's size
/// while side B consolidates, which retracts N into the wilderness: the
/// grow absorbs N (popped first), grows into the wilderness (after the
/// retract), or moves (N held by the consolidation when it looked).
#[test]
fn reallocate_grow_x_consolidate_retracting_the_neighbour() {
    const N: u32 = 256;
    let s = seg("race-realloc-retract");
    let p2 = s.peer();
    let (mut absorbed, mut into_wilderness) = (0u64, 0u64);
    let flag = AtomicU64::new(0);
    let result = race::pair(
        &cfg(),
        |round| {
            s.h.matrix().flush_thread_cache();
            s.h.consolidate().map_err(|e| format!("consolidate: {e}"))?;
            let mut b = s.h.allocate_array::<u64>(2).map_err(|e| e.to_string())?;
            let n =
                s.h.allocate_slice::<u8>(N as usize - 32)
                    .map_err(|e| e.to_string())?;
            s.h.write_elems(&mut b, 0, &pattern(round))
                .map_err(|e| e.to_string())?;
            if n.header_offset() != b.header_offset() + 48 {
                return Err("the neighbour was not carved right after the block".into());
            }
            s.h.free(n).map_err(|e| e.to_string())?;
            s.h.matrix().flush_thread_cache();
            Ok((Mutex::new(b), round))
        },
        |&(ref b, round)| {
            let mut b = b.lock().unwrap();
            start_together(&flag, round, true);
            s.h.reallocate(&mut b, (16 + N as usize) / 8)
        },
        |&(_, round)| {
            start_together(&flag, round, false);
            p2.consolidate()
        },
        |_, (b, round), grown, merged| {
            let kind = grown.map_err(|e| format!("grow: {e}"))?;
            merged.map_err(|e| format!("consolidate: {e}"))?;
            let b = b.into_inner().unwrap();
            let elems = s.h.get_slice(&b).map_err(|e| e.to_string())?;
            if elems[..2] != pattern(round) || elems[2..].iter().any(|&x| x != 0) {
                return Err(format!("the block grown {kind:?} lost its elements"));
            }
            match kind {
                ResizeKind::GrownIntoNeighbour => absorbed += 1,
                ResizeKind::GrownIntoWilderness => into_wilderness += 1,
                ResizeKind::Moved => {}
                k => return Err(format!("the grow was {k:?}")),
            }
            s.h.free(b).map_err(|e| format!("free: {e}"))?;
            quiet_check(&s.h).map(drop)
        },
    );
    drop(p2);
    let pair = "reallocate (grow into the neighbour) × consolidate retracting it";
    println!(
        "resize-row | {pair} | grows: {absorbed} absorbed the neighbour, {into_wilderness} into \
         the wilderness"
    );
    let end = if absorbed + into_wilderness == 0 {
        Err("no grow stayed in place: the row raced nothing".into())
    } else {
        race::all_back(&s.h)
    };
    race::record(pair, result, end);
}
