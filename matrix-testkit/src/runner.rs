//! Drives a real handler and the [`ShadowModel`] with the same operations.

use crate::invariants::{audit, Audit};
use crate::model::{
    Actor, AllocKind, Divergence, Expected, Fill, FreeAtTarget, ModelBlock, ModelError, Op,
    ShadowModel, SizeSpec,
};
use crate::segment::SegmentName;
use matrix_core::state::{self, ALLOCATED, CACHED, FREE};
use matrix_core::{AllocError, OwnerId, BLOCK_HEADER_SIZE, MIN_PAYLOAD};
use matrix_handler::{
    layout_tag, Block, BlockToken, HandlerError, HandlerFunctions, MatrixHandler,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;

/// How a model run is set up.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// Segment size in bytes.
    pub segment_size: u32,
    /// Label used in the segment name.
    pub label: String,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            segment_size: 256 << 10,
            label: "model".into(),
        }
    }
}

/// What a run did, for reporting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Operations applied.
    pub ops: u64,
    /// Successful allocations.
    pub allocations: u64,
    /// Successful frees (all entry points).
    pub frees: u64,
    /// Allocations refused as out of memory (each checked against the chain).
    pub out_of_memory: u64,
    /// Allocations refused as too large.
    pub too_large: u64,
    /// Operations refused with the error the model predicted.
    pub refused: u64,
    /// Blocks reclaimed by `recover`.
    pub recovered_blocks: u64,
}

/// A block handle of either payload type the runner allocates.
enum Handle {
    Bytes(Block<u8>),
    Words(Block<[u64; 8]>),
}

impl Handle {
    fn generation(&self) -> u64 {
        match self {
            Handle::Bytes(b) => b.generation(),
            Handle::Words(b) => b.generation(),
        }
    }
    fn offset(&self) -> u32 {
        match self {
            Handle::Bytes(b) => b.offset(),
            Handle::Words(b) => b.offset(),
        }
    }
}

type Check = Result<(), String>;

/// A real segment with a main participant and an optional peer, driven in
/// lock-step with a [`ShadowModel`]. After every operation it runs the
/// invariant checker and compares the chain and every payload with the model.
///
/// The segment may be shared with other structures (a registry, your own
/// structure): blocks that were live when the runner was made
/// ([`with_setup`](Self::with_setup)) or that a user operation
/// ([`apply_user`](Self::apply_user)) left live are *foreign*: the model
/// leaves them alone and the checks compare only the blocks it allocated,
/// while the invariant checker still covers the whole segment.
pub struct ModelRunner {
    handles: BTreeMap<u32, Handle>,
    /// Header offsets of live blocks the model did not allocate.
    foreign: BTreeSet<u32>,
    peer: Option<MatrixHandler>,
    main: MatrixHandler,
    segment: SegmentName,
    model: ShadowModel,
    detached: u32,
    arena_len: u64,
    stats: RunStats,
    step: usize,
}

impl ModelRunner {
    /// Creates a fresh named segment for one run.
    pub fn new(config: &ModelConfig) -> Result<Self, HandlerError> {
        let segment = SegmentName::new(&config.label);
        let main = MatrixHandler::create(segment.as_str(), config.segment_size)?;
        let m = main.matrix();
        let arena_len = (matrix_core::Arena::arena_end(m) - m.first_block_offset()) as u64;
        Ok(ModelRunner {
            handles: BTreeMap::new(),
            foreign: BTreeSet::new(),
            peer: None,
            main,
            segment,
            model: ShadowModel::default(),
            detached: 0,
            arena_len,
            stats: RunStats::default(),
            step: 0,
        })
    }

    /// A fresh segment on which `setup` builds other structures first (the
    /// root registry, your structure); the blocks it leaves live are
    /// foreign to the model.
    pub fn with_setup(
        config: &ModelConfig,
        setup: impl FnOnce(&MatrixHandler) -> Result<(), String>,
    ) -> Result<Self, Divergence> {
        let fail = |what: String| Divergence {
            step: 0,
            op: "setup".into(),
            what,
        };
        let mut runner =
            Self::new(config).map_err(|e| fail(format!("cannot create the segment: {e}")))?;
        setup(&runner.main).map_err(fail)?;
        runner.refresh_foreign();
        runner.verify_inner().map_err(fail)?;
        Ok(runner)
    }

    /// Runs one operation of your own on the shared segment (through the
    /// main participant's handler), then re-reads which blocks are foreign
    /// and verifies the model's blocks and the invariants as after
    /// [`apply`](Self::apply). `label` names the operation in a divergence.
    pub fn apply_user(
        &mut self,
        label: &str,
        op: impl FnOnce(&MatrixHandler) -> Result<(), String>,
    ) -> Result<(), Divergence> {
        let result = op(&self.main).and_then(|()| {
            self.refresh_foreign();
            self.verify_inner()
        });
        let step = self.step;
        self.step += 1;
        self.stats.ops += 1;
        result.map_err(|what| Divergence {
            step,
            op: label.to_owned(),
            what,
        })
    }

    /// Header offsets of the live blocks the model did not allocate.
    pub fn foreign_blocks(&self) -> &BTreeSet<u32> {
        &self.foreign
    }

    fn refresh_foreign(&mut self) {
        self.foreign = audit(self.main.matrix())
            .chain
            .iter()
            .filter(|c| c.state != FREE && c.state != CACHED)
            .map(|c| c.offset)
            .filter(|o| !self.model.blocks.contains_key(o))
            .collect();
    }

    /// The model as it stands.
    pub fn model(&self) -> &ShadowModel {
        &self.model
    }

    /// The main participant's handler.
    pub fn handler(&self) -> &MatrixHandler {
        &self.main
    }

    /// Counts so far.
    pub fn stats(&self) -> &RunStats {
        &self.stats
    }

    /// Applies one operation to both sides, then verifies everything.
    pub fn apply(&mut self, op: &Op) -> Result<(), Divergence> {
        let result = self.apply_inner(op).and_then(|()| self.verify_inner());
        let step = self.step;
        self.step += 1;
        self.stats.ops += 1;
        result.map_err(|what| Divergence {
            step,
            op: format!("{op:?}"),
            what,
        })
    }

    /// Frees everything, detaches and recovers the peer, consolidates, and
    /// checks that the whole arena came back as one free region.
    pub fn drain(&mut self) -> Result<(), Divergence> {
        let result = self.drain_inner();
        result.map_err(|what| Divergence {
            step: self.step,
            op: "drain".into(),
            what,
        })
    }

    fn drain_inner(&mut self) -> Check {
        let headers: Vec<u32> = self.model.blocks.keys().copied().collect();
        for header in headers {
            self.free_block(Actor::Main, header)?;
        }
        self.apply_inner(&Op::DetachPeer)?;
        self.apply_inner(&Op::Recover)?;
        self.main
            .consolidate()
            .map_err(|e| format!("final consolidate: {e}"))?;
        self.verify_inner()?;
        let a = audit(self.main.matrix());
        if !self.foreign.is_empty() {
            // Other structures keep their blocks: everything else is free.
            let foreign: u64 = a
                .chain
                .iter()
                .filter(|c| self.foreign.contains(&c.offset))
                .map(|c| c.size as u64)
                .sum();
            if a.report.used_bytes != foreign {
                return Err(format!(
                    "after freeing everything: {} B used, the foreign blocks hold {foreign} B",
                    a.report.used_bytes
                ));
            }
            return Ok(());
        }
        if a.report.used_bytes != 0 || a.report.free_bytes != a.report.arena_bytes {
            return Err(format!("after freeing everything: {:?}", a.report));
        }
        if !a.chain.is_empty() || a.report.wilderness_bytes != a.report.arena_bytes {
            return Err(format!(
                "after freeing everything and consolidating, the arena is not one free region: {} blocks, {} B wilderness of {} B",
                a.chain.len(),
                a.report.wilderness_bytes,
                a.report.arena_bytes
            ));
        }
        Ok(())
    }

    fn actor(&mut self, actor: Actor) -> Result<&MatrixHandler, String> {
        match actor {
            Actor::Main => Ok(&self.main),
            Actor::Peer => {
                if self.peer.is_none() {
                    let peer = MatrixHandler::open(self.segment.as_str())
                        .map_err(|e| format!("peer attach: {e}"))?;
                    self.peer = Some(peer);
                }
                Ok(self.peer.as_ref().expect("attached above"))
            }
        }
    }

    fn apply_inner(&mut self, op: &Op) -> Check {
        match *op {
            Op::Allocate { actor, size, kind } => self.allocate(actor, size, kind),
            Op::Free { actor, pick } => match self.model.pick(pick).map(|b| b.header) {
                Some(header) => self.free_block(actor, header),
                None => Ok(()),
            },
            Op::FreeAt { target } => self.free_at(target),
            Op::StaleToken { pick } => self.stale_token(pick),
            Op::Write { pick, seed, zero } => self.write(pick, Fill { seed, zero }),
            Op::SetState { pick, state } => self.set_state(pick, state),
            Op::Transition {
                pick,
                expected,
                next,
            } => self.transition(pick, expected, next),
            Op::ReleaseToSegment { pick } => self.reassign(pick, false),
            Op::Adopt { pick } => self.reassign(pick, true),
            Op::Consolidate => self.consolidate(),
            Op::DetachPeer => {
                if let Some(peer) = self.peer.take() {
                    let id = peer.matrix().owner_id();
                    drop(peer);
                    for b in self.model.blocks.values_mut() {
                        if b.owner == id {
                            b.orphan = true;
                        }
                    }
                    self.detached += 1;
                }
                Ok(())
            }
            Op::Recover => self.recover(),
        }
    }

    fn allocate(&mut self, actor: Actor, size: SizeSpec, kind: AllocKind) -> Check {
        let max_payload = self.arena_len - BLOCK_HEADER_SIZE as u64;
        let n: u64 = match (kind, size) {
            (AllocKind::Typed, _) => 64,
            (_, SizeSpec::Exact(n)) => n as u64,
            (_, SizeSpec::MaxPayload) => max_payload,
            (_, SizeSpec::JustTooLarge) => max_payload + 1,
            (AllocKind::Slice, SizeSpec::Huge) => u64::MAX,
            (_, SizeSpec::Huge) => u32::MAX as u64,
        };
        let block_size = (n
            .max(MIN_PAYLOAD as u64)
            .saturating_add(BLOCK_HEADER_SIZE as u64 + 15))
            & !15;
        let too_large = block_size > self.arena_len;
        let h = self.actor(actor)?;
        let owner = h.matrix().owner_id();
        let result: Result<Handle, HandlerError> = match kind {
            AllocKind::Slice => h
                .allocate_slice::<u8>(n.min(usize::MAX as u64) as usize)
                .map(Handle::Bytes),
            AllocKind::Typed => h.allocate::<[u64; 8]>().map(Handle::Words),
            AllocKind::Raw => match h.allocate_raw(n.min(u32::MAX as u64) as u32) {
                Ok(p) => Ok(Handle::Bytes(
                    h.block_at::<u8>(p.offset())
                        .map_err(|e| format!("block_at of a fresh raw block: {e}"))?,
                )),
                Err(e) => Err(e),
            },
        };
        match result {
            // A slice whose element count exceeds u32 is refused by the
            // handler before the allocator sees it.
            Err(
                HandlerError::AllocationFailed(AllocError::TooLarge { .. })
                | HandlerError::SliceTooLarge { .. },
            ) if too_large => {
                self.stats.too_large += 1;
                Ok(())
            }
            Err(HandlerError::AllocationFailed(AllocError::OutOfMemory {
                requested,
                largest_free,
            })) if !too_large => {
                self.stats.out_of_memory += 1;
                if requested != n {
                    return Err(format!(
                        "out of memory reports {requested} B requested, asked {n}"
                    ));
                }
                let a = audit(self.main.matrix());
                if a.report.largest_free_run >= block_size {
                    return Err(format!(
                        "spurious out of memory: {block_size} B block needed, the chain has a free run of {} B after consolidation ({:?})",
                        a.report.largest_free_run, a.report
                    ));
                }
                let largest = a
                    .report
                    .largest_free_block
                    .saturating_sub(BLOCK_HEADER_SIZE as u64);
                if largest_free as u64 != largest {
                    return Err(format!("out of memory reports largest free {largest_free} B, the chain has {largest} B"));
                }
                Ok(())
            }
            Err(e) => Err(format!(
                "allocate {n} B ({kind:?}): unexpected {e:?} (too large: {too_large})"
            )),
            Ok(handle) if too_large => Err(format!(
                "allocate {n} B succeeded at {} but exceeds the arena",
                handle.offset()
            )),
            Ok(mut handle) => {
                self.check_new_block(&handle, n, block_size, owner, kind)?;
                let header = handle.offset() - BLOCK_HEADER_SIZE;
                let (_, size) = self
                    .main
                    .matrix()
                    .block_header(header)
                    .map_err(|e| e.to_string())?;
                let fill = Fill {
                    seed: (self.stats.allocations as u8).wrapping_mul(13) | 1,
                    zero: false,
                };
                let filled = if kind == AllocKind::Typed {
                    64
                } else {
                    n as usize
                };
                self.fill(&mut handle, fill, filled)?;
                self.model.insert(ModelBlock {
                    header,
                    size,
                    generation: handle.generation(),
                    requested: n as u32,
                    state: ALLOCATED,
                    owner,
                    orphan: false,
                    filled,
                    fill,
                });
                self.handles.insert(header, handle);
                self.stats.allocations += 1;
                Ok(())
            }
        }
    }

    fn check_new_block(
        &self,
        handle: &Handle,
        n: u64,
        block_size: u64,
        owner: OwnerId,
        kind: AllocKind,
    ) -> Check {
        let m = self.main.matrix();
        let offset = handle.offset();
        if offset % 16 != 0 || offset < m.first_block_offset() + BLOCK_HEADER_SIZE {
            return Err(format!(
                "payload offset {offset} misaligned or before the arena"
            ));
        }
        let header = offset - BLOCK_HEADER_SIZE;
        let (hdr, size) = m
            .block_header(header)
            .map_err(|e| format!("new block header: {e}"))?;
        if (size as u64) < block_size {
            return Err(format!(
                "block at {header} holds {size} B, {block_size} B needed (undersized)"
            ));
        }
        if let Some(other) = self.model.overlaps(header, size) {
            return Err(format!(
                "new block [{header}, +{size}) overlaps live block [{}, +{}) (double allocation)",
                other.header, other.size
            ));
        }
        let word = hdr.state.load(Ordering::Acquire);
        if state::state_of(word) != ALLOCATED || state::generation_of(word) != handle.generation() {
            return Err(format!(
                "new block state word {word:#x}, handle generation {}",
                handle.generation()
            ));
        }
        let found_owner = state::owner_of(word);
        if found_owner != owner.0 {
            return Err(format!(
                "new block owner {found_owner:#x}, allocator {:#x}",
                owner.0
            ));
        }
        let requested = hdr.requested.load(Ordering::Acquire);
        if requested as u64 != n {
            return Err(format!(
                "new block records {requested} B requested, asked {n}"
            ));
        }
        let tag = hdr.type_tag.load(Ordering::Acquire);
        let want = match kind {
            AllocKind::Slice => layout_tag::<u8>(),
            AllocKind::Raw => 0,
            AllocKind::Typed => layout_tag::<[u64; 8]>(),
        };
        if tag != want {
            return Err(format!("new block type tag {tag:#x}, expected {want:#x}"));
        }
        Ok(())
    }

    fn fill(&mut self, handle: &mut Handle, fill: Fill, len: usize) -> Check {
        let bytes: Vec<u8> = (0..len).map(|i| fill.byte(i)).collect();
        let h = &self.main;
        match handle {
            Handle::Bytes(b) => h.write_slice(b, &bytes),
            Handle::Words(b) => {
                let words: [u64; 8] = std::array::from_fn(|w| {
                    u64::from_le_bytes(std::array::from_fn(|i| bytes[w * 8 + i]))
                });
                h.write_pod(b, words)
            }
        }
        .map_err(|e| format!("writing a live block: {e}"))
    }

    /// Copies `len` payload bytes from `from` of the block at `header`.
    fn payload(&self, header: u32, from: usize, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        let start = (header + BLOCK_HEADER_SIZE) as usize + from;
        // SAFETY: callers pass a live model block and a range inside its
        // filled payload, which was checked to lie inside the block and the
        // block inside the mapping when it was allocated; the mapping lives
        // as long as `self.main`. Shared memory is only read (bytes are Pod).
        unsafe {
            std::ptr::copy_nonoverlapping(self.main.base_ptr().add(start), out.as_mut_ptr(), len)
        };
        out
    }

    fn check_payload(&self, b: &ModelBlock, full: bool) -> Check {
        let ranges: Vec<(usize, usize)> = if full || b.filled <= 128 {
            vec![(0, b.filled)]
        } else {
            vec![(0, 64), (b.filled - 64, 64)]
        };
        for (from, len) in ranges {
            let bytes = self.payload(b.header, from, len);
            if let Some(i) = (0..len).find(|&i| bytes[i] != b.fill.byte(from + i)) {
                return Err(format!(
                    "payload of block {} changed at byte {}: {:#04x}, expected {:#04x} (overlap or header damage)",
                    b.header,
                    from + i,
                    bytes[i],
                    b.fill.byte(from + i)
                ));
            }
        }
        Ok(())
    }

    fn free_block(&mut self, actor: Actor, header: u32) -> Check {
        let b = self
            .model
            .blocks
            .get(&header)
            .cloned()
            .ok_or("free of a block the model does not know")?;
        self.check_payload(&b, true)?;
        let handle = self
            .handles
            .remove(&header)
            .ok_or("no handle for a live block")?;
        let h = self.actor(actor)?;
        let result = match handle {
            Handle::Bytes(block) => h.free(block),
            Handle::Words(block) => h.free(block),
        };
        result.map_err(|e| format!("free of live block {header}: {e}"))?;
        self.model.remove(header);
        self.stats.frees += 1;
        Ok(())
    }

    fn free_at(&mut self, target: FreeAtTarget) -> Check {
        let pick = |i: usize| self.model.pick(i).map(|b| (b.header, b.size));
        let offset = match target {
            FreeAtTarget::Live(i) => pick(i).map(|(h, _)| h),
            FreeAtTarget::Freed(i) => self.model.pick_freed(i).map(|(h, _)| h),
            FreeAtTarget::Payload(i) => pick(i).map(|(h, _)| h + BLOCK_HEADER_SIZE),
            FreeAtTarget::Inside(i, k) => pick(i).map(|(h, size)| {
                let slots = (size - BLOCK_HEADER_SIZE) / 16;
                h + BLOCK_HEADER_SIZE + 16 * (k % slots.max(1))
            }),
            FreeAtTarget::Misaligned(i) => pick(i).map(|(h, _)| h + 8),
            FreeAtTarget::Raw(x) => Some(x),
        };
        let Some(offset) = offset else { return Ok(()) };
        if self.foreign.contains(&offset) {
            // Another structure's block: not the model's to free.
            return Ok(());
        }
        if let Some(b) = self.model.blocks.get(&offset).cloned() {
            self.check_payload(&b, true)?;
            self.main
                .free_at(offset)
                .map_err(|e| format!("free_at of live block {offset}: {e}"))?;
            self.handles.remove(&offset);
            self.model.remove(offset);
            self.stats.frees += 1;
            return Ok(());
        }
        match self.main.free_at(offset) {
            Ok(()) => Err(format!(
                "free_at({offset}) accepted an offset where no live block starts"
            )),
            Err(HandlerError::Block(_)) | Err(HandlerError::InvalidOffset(_)) => {
                self.stats.refused += 1;
                Ok(())
            }
            Err(e) => Err(format!("free_at({offset}): unexpected error kind {e:?}")),
        }
    }

    fn stale_token(&mut self, pick: usize) -> Check {
        let Some((header, generation)) = self.model.pick_freed(pick) else {
            return Ok(());
        };
        let token = BlockToken::new(
            header + BLOCK_HEADER_SIZE,
            generation,
            self.main.segment_nonce(),
        );
        match self.main.block_from_token::<u8>(token) {
            Ok(b) => Err(format!(
                "stale token (offset {header}, generation {generation}) accepted: a freed block's generation came back (live now: {:?})",
                self.model.blocks.get(&header).map(|m| m.generation).or(Some(b.generation()))
            )),
            Err(_) => {
                self.stats.refused += 1;
                Ok(())
            }
        }
    }

    fn write(&mut self, pick: usize, fill: Fill) -> Check {
        let Some(b) = self.model.pick(pick).cloned() else {
            return Ok(());
        };
        self.check_payload(&b, true)?;
        let mut handle = self
            .handles
            .remove(&b.header)
            .ok_or("no handle for a live block")?;
        let result = self.fill(&mut handle, fill, b.filled);
        self.handles.insert(b.header, handle);
        result?;
        self.model
            .blocks
            .get_mut(&b.header)
            .expect("picked above")
            .fill = fill;
        Ok(())
    }

    fn with_handle<R>(
        &self,
        header: u32,
        f: impl FnOnce(&MatrixHandler, &Handle) -> R,
    ) -> Result<R, String> {
        let handle = self
            .handles
            .get(&header)
            .ok_or("no handle for a live block")?;
        Ok(f(&self.main, handle))
    }

    fn set_state(&mut self, pick: usize, new: u32) -> Check {
        let Some(b) = self.model.pick(pick).cloned() else {
            return Ok(());
        };
        let got = self.with_handle(b.header, |h, handle| match handle {
            Handle::Bytes(x) => h.set_state(x, new),
            Handle::Words(x) => h.set_state(x, new),
        })?;
        let want = ShadowModel::expect_set_state(new);
        match (got, want) {
            (Ok(()), Ok(())) => {
                self.model.blocks.get_mut(&b.header).expect("picked").state = new;
                Ok(())
            }
            (Err(HandlerError::ReservedStatus(s)), Err(ModelError::ReservedStatus(t)))
                if s == t =>
            {
                self.stats.refused += 1;
                Ok(())
            }
            (
                Err(HandlerError::StateOutOfRange { state: s }),
                Err(ModelError::StateOutOfRange(t)),
            ) if s == t => {
                self.stats.refused += 1;
                Ok(())
            }
            (got, want) => Err(format!(
                "set_state({new}) on state {}: got {got:?}, model {want:?}",
                b.state
            )),
        }
    }

    fn transition(&mut self, pick: usize, expected: Expected, next: u32) -> Check {
        let Some(b) = self.model.pick(pick).cloned() else {
            return Ok(());
        };
        let expected = match expected {
            Expected::Current => b.state,
            Expected::State(s) => s,
        };
        let got = self.with_handle(b.header, |h, handle| match handle {
            Handle::Bytes(x) => h.transition_state(x, expected, next, Ordering::AcqRel),
            Handle::Words(x) => h.transition_state(x, expected, next, Ordering::AcqRel),
        })?;
        let want = ShadowModel::expect_transition(b.state, expected, next);
        match (got, want) {
            (Ok(prev), Ok(p)) if prev == p => {
                self.model.blocks.get_mut(&b.header).expect("picked").state = next;
                Ok(())
            }
            (Err(HandlerError::ReservedStatus(s)), Err(ModelError::ReservedStatus(t)))
                if s == t =>
            {
                self.stats.refused += 1;
                Ok(())
            }
            (
                Err(HandlerError::StateOutOfRange { state: s }),
                Err(ModelError::StateOutOfRange(t)),
            ) if s == t => {
                self.stats.refused += 1;
                Ok(())
            }
            (Err(HandlerError::TransitionFailed(s)), Err(ModelError::TransitionFailed(t)))
                if s == t =>
            {
                self.stats.refused += 1;
                Ok(())
            }
            (got, want) => Err(format!(
                "transition {expected} -> {next} on state {}: got {got:?}, model {want:?}",
                b.state
            )),
        }
    }

    fn reassign(&mut self, pick: usize, adopt: bool) -> Check {
        let Some(b) = self.model.pick(pick).cloned() else {
            return Ok(());
        };
        let got = self.with_handle(b.header, |h, handle| match (handle, adopt) {
            (Handle::Bytes(x), true) => h.adopt(x),
            (Handle::Words(x), true) => h.adopt(x),
            (Handle::Bytes(x), false) => h.release_to_segment(x),
            (Handle::Words(x), false) => h.release_to_segment(x),
        })?;
        got.map_err(|e| {
            format!(
                "{} of a live block: {e}",
                if adopt { "adopt" } else { "release_to_segment" }
            )
        })?;
        let owner = if adopt {
            self.main.matrix().owner_id()
        } else {
            OwnerId::SEGMENT
        };
        let m = self.model.blocks.get_mut(&b.header).expect("picked");
        m.owner = owner;
        m.orphan = false;
        Ok(())
    }

    fn consolidate(&mut self) -> Check {
        self.main
            .consolidate()
            .map_err(|e| format!("consolidate: {e}"))?;
        let a = audit(self.main.matrix());
        check_merged(&a)
    }

    fn recover(&mut self) -> Check {
        let report = self.main.recover().map_err(|e| format!("recover: {e}"))?;
        let reclaim: Vec<u32> = self
            .model
            .blocks
            .values()
            .filter(|b| b.orphan && b.state == ALLOCATED)
            .map(|b| b.header)
            .collect();
        let mut users: Vec<(u32, u32)> = self
            .model
            .blocks
            .values()
            .filter(|b| b.orphan && b.state >= state::USER_STATE_MIN)
            .map(|b| (b.header, b.state))
            .collect();
        let mut reported = report.user_state_blocks.clone();
        users.sort_unstable();
        reported.sort_unstable();
        if report.participants != self.detached
            || report.blocks != reclaim.len() as u64
            || reported != users
        {
            return Err(format!(
                "recover reclaimed {} participants / {} blocks, reported user-state blocks {reported:?}; model: {} / {} / {users:?}",
                report.participants,
                report.blocks,
                self.detached,
                reclaim.len()
            ));
        }
        for header in reclaim {
            self.handles.remove(&header);
            self.model.remove(header);
        }
        for b in self.model.blocks.values_mut() {
            if b.orphan && b.state >= state::USER_STATE_MIN {
                // Kept, and handed to DEPARTED so the slot's next holder
                // does not inherit them.
                b.owner = OwnerId::DEPARTED;
            }
            b.orphan = false;
        }
        self.stats.recovered_blocks += report.blocks;
        self.detached = 0;
        Ok(())
    }

    fn verify_inner(&self) -> Check {
        let a = audit(self.main.matrix());
        if !a.violations.is_empty() {
            let list: Vec<String> = a.violations.iter().map(|v| v.to_string()).collect();
            return Err(format!("invariants broken: {}", list.join("; ")));
        }
        let mut live = 0usize;
        for c in &a.chain {
            if c.state == FREE || c.state == CACHED {
                if self.model.blocks.contains_key(&c.offset) {
                    return Err(format!(
                        "live block {} is {} in the chain",
                        c.offset,
                        state::state_name(c.state)
                    ));
                }
                continue;
            }
            if self.foreign.contains(&c.offset) {
                continue;
            }
            live += 1;
            let Some(b) = self.model.blocks.get(&c.offset) else {
                return Err(format!(
                    "chain has a {} block at {} the model never allocated",
                    state::state_name(c.state),
                    c.offset
                ));
            };
            if (c.size, c.state, c.generation, c.owner, c.requested)
                != (b.size, b.state, b.generation, b.owner, b.requested)
            {
                return Err(format!("block {}: chain {c:?}, model {b:?}", c.offset));
            }
        }
        if live != self.model.blocks.len() {
            return Err(format!(
                "{} live blocks in the model, {live} in the chain",
                self.model.blocks.len()
            ));
        }
        for b in self.model.blocks.values() {
            self.check_payload(b, false)?;
        }
        Ok(())
    }
}

/// After a consolidation on a quiescent segment: no two physically adjacent
/// FREE blocks, and no FREE block touching the wilderness.
fn check_merged(a: &Audit) -> Check {
    for pair in a.chain.windows(2) {
        if pair[0].state == FREE && pair[1].state == FREE {
            return Err(format!(
                "after consolidate, free blocks {} and {} are adjacent but not merged",
                pair[0].offset, pair[1].offset
            ));
        }
    }
    if let Some(last) = a.chain.last() {
        if last.state == FREE {
            return Err(format!(
                "after consolidate, free block {} still borders the wilderness",
                last.offset
            ));
        }
    }
    Ok(())
}

/// Runs `ops` on a fresh segment, then drains it; the first divergence
/// found is returned.
pub fn run_ops(ops: &[Op], config: &ModelConfig) -> Result<RunStats, Divergence> {
    let mut runner = ModelRunner::new(config).map_err(|e| Divergence {
        step: 0,
        op: "setup".into(),
        what: format!("cannot create the segment: {e}"),
    })?;
    for op in ops {
        runner.apply(op)?;
    }
    runner.drain()?;
    Ok(runner.stats.clone())
}
