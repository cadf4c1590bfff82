//! A multi-producer message log living in a shared segment: the worked
//! example of `docs/WRITING_INTERNALS.md`.
//!
//! ```text
//!  root registry: "orders" ─► LogHeader { head, next_seq }
//!                                  │ head: token word of the newest node
//!                                  ▼
//!            Node { next ─► Node { next ─► Node { next = 0 } } }
//!            newest                            oldest
//! ```
//!
//! Every node is its own block. An append is
//!
//! 1. `allocate_with(Node { .. })`: the whole message is in the block before
//!    anyone can see it (state ALLOCATED, owned by the producer);
//! 2. `set_state(PENDING)`: from now on `recover()` never frees it, even if
//!    the producer dies;
//! 3. CAS `head` from the old newest node to this one (its `next` set to
//!    the old one first): the node is linked, and readers can reach it;
//! 4. `transition(PENDING → LINKED)` and `release_to_segment`: the node
//!    belongs to the log, not to its producer.
//!
//! A producer killed between 1 and 2 leaves an ALLOCATED node nobody can
//! reach: `recover()` frees it. Killed between 2 and 4 it leaves a PENDING
//! node of a dead owner, linked or not; [`ShmLog::recover`] (any process, at
//! any time) finds those with `matrix_internals::orphaned_of`, finishes the
//! linked ones and frees the others. That order — user state *before*
//! linking — is the rule: a linked node in ALLOCATED would be freed by
//! `recover()` while still in the list.
//!
//! Nothing here uses `unsafe`: the header and the nodes are `ShmSafe`
//! (derived), shared through `get`, whose atomics give the interior
//! mutability.

#![forbid(unsafe_code)]

use matrix_handler::{
    Block, BlockToken, HandlerError, HandlerFunctions, OwnerId, ShmSafe, USER_STATE_MIN,
};
use matrix_internals::{RegistryError, WalkError};
use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// A node's state while its producer links it.
pub const PENDING: u32 = USER_STATE_MIN;
/// A node's state once it is in the log.
pub const LINKED: u32 = USER_STATE_MIN + 1;
/// Most payload bytes one message holds.
pub const MAX_MESSAGE: usize = 48;

/// The log's header, found by name in the root registry.
#[derive(ShmSafe)]
#[repr(C)]
pub struct LogHeader {
    /// Token word of the newest node (0: the log is empty).
    head: AtomicU64,
    /// The next sequence number to hand out.
    next_seq: AtomicU64,
    _spare: u64,
    _reserved: u64,
}

/// One message, in its own block.
#[derive(ShmSafe)]
#[repr(C)]
pub struct Node {
    /// Token word of the next older node (0: none).
    next: AtomicU64,
    seq: u64,
    producer: u64,
    checksum: u64,
    len: u32,
    _pad: u32,
    data: [u8; MAX_MESSAGE],
}

/// One message as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Its sequence number (unique per log).
    pub seq: u64,
    /// Who appended it.
    pub producer: u64,
    /// Its bytes.
    pub data: Vec<u8>,
}

/// What [`ShmLog::recover`] settled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogRecovery {
    /// Nodes of dead producers that were linked: now LINKED and the segment's.
    pub finished: u64,
    /// PENDING nodes of dead producers that were not: freed.
    pub freed: u64,
}

/// Why a log operation failed.
#[derive(Debug)]
pub enum LogError {
    /// Finding or creating the log by name failed.
    Registry(RegistryError),
    /// The allocator or a handle check refused.
    Handler(HandlerError),
    /// Walking the segment failed (it is damaged).
    Walk(WalkError),
    /// A message longer than [`MAX_MESSAGE`].
    TooLong {
        /// Its length.
        len: usize,
    },
    /// The log's memory does not hold what the log wrote there.
    Corrupt {
        /// What was wrong.
        what: String,
    },
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogError::Registry(e) => write!(f, "log registry: {e}"),
            LogError::Handler(e) => write!(f, "log: {e}"),
            LogError::Walk(e) => write!(f, "log: {e}"),
            LogError::TooLong { len } => {
                write!(
                    f,
                    "a {len} B message: a log message holds at most {MAX_MESSAGE} B"
                )
            }
            LogError::Corrupt { what } => write!(f, "log corrupt: {what}"),
        }
    }
}

impl std::error::Error for LogError {}

impl From<RegistryError> for LogError {
    fn from(e: RegistryError) -> Self {
        LogError::Registry(e)
    }
}

impl From<HandlerError> for LogError {
    fn from(e: HandlerError) -> Self {
        LogError::Handler(e)
    }
}

impl From<WalkError> for LogError {
    fn from(e: WalkError) -> Self {
        LogError::Walk(e)
    }
}

fn corrupt(what: impl Into<String>) -> LogError {
    LogError::Corrupt { what: what.into() }
}

fn checksum(seq: u64, producer: u64, data: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64 ^ seq.rotate_left(17) ^ producer;
    for &b in data {
        hash = (hash ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3);
    }
    hash
}

/// A handle on a log; like the project's structures it owns its handler
/// (pass `&handler` to borrow one).
pub struct ShmLog<H: HandlerFunctions> {
    handler: H,
    header: Block<LogHeader>,
}

impl<H: HandlerFunctions> ShmLog<H> {
    /// Opens the log registered as `name` in the root registry, or creates
    /// it; exactly one of several racing processes creates it. The flag
    /// says whether this call did.
    pub fn open_or_create(handler: H, name: &str) -> Result<(Self, bool), LogError> {
        let (header, created) = matrix_internals::Registry::root(&handler)?.find_or_create(
            name,
            || -> Result<LogHeader, LogError> {
                Ok(LogHeader {
                    head: AtomicU64::new(0),
                    _spare: 0,
                    next_seq: AtomicU64::new(0),
                    _reserved: 0,
                })
            },
        )?;
        Ok((ShmLog { handler, header }, created))
    }

    /// Opens an existing log.
    pub fn open(handler: H, name: &str) -> Result<Self, LogError> {
        let header = matrix_internals::Registry::root(&handler)?.find_block(name)?;
        Ok(ShmLog { handler, header })
    }

    /// The handler the log works through.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The header block (what the registry holds).
    pub fn header_block(&self) -> &Block<LogHeader> {
        &self.header
    }

    fn header(&self) -> Result<&LogHeader, LogError> {
        Ok(self.handler.get(&self.header)?)
    }

    /// Nodes linked so far (a walk of the list: a counter next to it would
    /// be a second word that a producer's death can leave behind).
    pub fn len(&self) -> Result<u64, LogError> {
        Ok(self.nodes()?.len() as u64)
    }

    /// Whether no node is linked.
    pub fn is_empty(&self) -> Result<bool, LogError> {
        Ok(self.len()? == 0)
    }

    /// Appends one message; returns its sequence number.
    pub fn append(&self, producer: u64, data: &[u8]) -> Result<u64, LogError> {
        if data.len() > MAX_MESSAGE {
            return Err(LogError::TooLong { len: data.len() });
        }
        let header = self.header()?;
        // Relaxed: only uniqueness matters, which the RMW gives.
        let seq = header.next_seq.fetch_add(1, Ordering::Relaxed);
        let mut bytes = [0u8; MAX_MESSAGE];
        bytes[..data.len()].copy_from_slice(data);
        let node = self.handler.allocate_with(Node {
            next: AtomicU64::new(0),
            seq,
            producer,
            checksum: checksum(seq, producer, data),
            len: data.len() as u32,
            _pad: 0,
            data: bytes,
        })?;
        // Before linking: from here on recover() keeps the node.
        self.handler.set_state(&node, PENDING)?;
        let word = node.token().word();
        let fields = self.handler.get(&node)?;
        // Relaxed: the CAS below (Release) publishes it.
        let mut old = header.head.load(Ordering::Relaxed);
        loop {
            // Relaxed: published by the Release of the CAS that links the node.
            fields.next.store(old, Ordering::Relaxed);
            // Release: a reader that Acquires head sees the node's fields and
            // `next`; Relaxed on failure: we only retry with the value.
            match header
                .head
                .compare_exchange_weak(old, word, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(actual) => old = actual,
            }
        }
        self.finish(&node)?;
        Ok(seq)
    }

    /// PENDING → LINKED, then the node belongs to the log. A producer
    /// killed between the two leaves a LINKED node of a dead owner, which
    /// [`recover`](Self::recover) gives to the segment.
    fn finish(&self, node: &Block<Node>) -> Result<(), LogError> {
        // AcqRel: ordered after the link; pairs with a recoverer's Acquire.
        self.handler
            .transition_state(node, PENDING, LINKED, Ordering::AcqRel)?;
        self.handler.release_to_segment(node)?;
        Ok(())
    }

    fn resolve(&self, word: u64) -> Result<Block<Node>, LogError> {
        let token = BlockToken::from_word(word, self.handler.segment_nonce());
        Ok(self.handler.block_from_token::<Node>(token)?)
    }

    /// The linked nodes, newest first, as handles; bounded by the number of
    /// blocks the segment can hold, so a corrupted cycle is an error.
    pub fn nodes(&self) -> Result<Vec<Block<Node>>, LogError> {
        let limit = self.handler.segment_size() as usize / 48 + 1;
        let mut out = Vec::new();
        // Acquire: pairs with the linking CAS (Release) of the newest node.
        let mut word = self.header()?.head.load(Ordering::Acquire);
        while word != 0 {
            if out.len() >= limit {
                return Err(corrupt("the list has a cycle"));
            }
            let node = self.resolve(word)?;
            // Acquire: `next` was stored before the Release CAS that linked
            // this node; later CASes on `head` continue its release sequence.
            word = self.handler.get(&node)?.next.load(Ordering::Acquire);
            out.push(node);
        }
        Ok(out)
    }

    /// Every message, oldest first, with its checksum verified.
    pub fn read_all(&self) -> Result<Vec<Message>, LogError> {
        let mut out = Vec::new();
        for node in self.nodes()?.iter().rev() {
            let n = self.handler.get(node)?;
            let len = n.len as usize;
            if len > MAX_MESSAGE {
                return Err(corrupt(format!("message {} claims {len} B", n.seq)));
            }
            let data = n.data[..len].to_vec();
            if checksum(n.seq, n.producer, &data) != n.checksum {
                return Err(corrupt(format!("message {} fails its checksum", n.seq)));
            }
            out.push(Message {
                seq: n.seq,
                producer: n.producer,
                data,
            });
        }
        Ok(out)
    }

    /// Settles the nodes of dead producers (any process, any time, also
    /// while others append): a LINKED node of a dead producer goes to the
    /// segment; a PENDING one is finished if it is linked, freed if not. A
    /// dead producer's node cannot become linked later (only its producer
    /// links it), so the list read here decides.
    pub fn recover(&self) -> Result<LogRecovery, LogError> {
        let mut report = LogRecovery::default();
        let orphans: Vec<Block<Node>> =
            matrix_internals::orphaned_of::<Node, _>(&self.handler).collect::<Result<_, _>>()?;
        if orphans.is_empty() {
            return Ok(report);
        }
        let linked: HashSet<u32> = self.nodes()?.iter().map(|b| b.offset()).collect();
        for node in orphans {
            let state = self.handler.try_get_state(&node, Ordering::Acquire);
            let settled = if state == Ok(LINKED) {
                self.handler
                    .release_to_segment(&node)
                    .map_err(LogError::from)
                    .map(|()| report.finished += 1)
            } else if state != Ok(PENDING) {
                // Not a node state of this log: left to its owner.
                Ok(())
            } else if linked.contains(&node.offset()) {
                // Taken over first, so the node is a live owner's while it
                // moves on.
                self.handler
                    .adopt(&node)
                    .map_err(LogError::from)
                    .and_then(|()| self.finish(&node))
                    .map(|()| report.finished += 1)
            } else {
                self.handler
                    .free(node)
                    .map_err(LogError::from)
                    .map(|()| report.freed += 1)
            };
            match settled {
                // Another recoverer settled it first (its state or
                // generation moved on): nothing left to do.
                Err(LogError::Handler(
                    HandlerError::TransitionFailed(_) | HandlerError::Block(_),
                )) => {}
                other => other?,
            }
        }
        Ok(report)
    }

    /// Frees every node and empties the log. Only at quiescence: no other
    /// process may append or read meanwhile.
    pub fn clear(&self) -> Result<u64, LogError> {
        let nodes = self.nodes()?;
        let header = self.header()?;
        // Release: a later reader sees an empty log before the freed nodes.
        header.head.store(0, Ordering::Release);
        let n = nodes.len() as u64;
        for node in nodes {
            self.handler.free(node)?;
        }
        Ok(n)
    }

    /// The log's own invariants over a chain the invariant checker read
    /// (`matrix_testkit::check_invariants_with`), given as
    /// `(header offset, state, owner, type tag)` per block: at quiescence
    /// after [`recover`](Self::recover), every block allocated for a
    /// [`Node`] in a user state is LINKED, owned by the segment, and in the
    /// list, and the list holds exactly `len()` of them. Returns the first
    /// problem as `(header offset, what)`.
    pub fn check(
        &self,
        chain: impl IntoIterator<Item = (u32, u32, OwnerId, u32)>,
    ) -> Result<(), (u32, String)> {
        let fail = |offset: u32, what: String| Err((offset, what));
        let nodes = match self.nodes() {
            Ok(n) => n,
            Err(e) => return fail(0, e.to_string()),
        };
        let linked: HashSet<u32> = nodes.iter().map(|b| b.offset()).collect();
        let tag = matrix_handler::layout_tag::<Node>();
        let mut seen = 0u64;
        for (offset, state, owner, _) in chain.into_iter().filter(|b| b.3 == tag) {
            if state < USER_STATE_MIN {
                continue;
            }
            if state != LINKED || owner != OwnerId::SEGMENT {
                return fail(offset, format!("node in state {state} owned by {owner:?}"));
            }
            if !linked.contains(&(offset + matrix_handler::BLOCK_HEADER_SIZE)) {
                return fail(offset, "a LINKED node that is not in the list".into());
            }
            seen += 1;
        }
        let len = self.len().unwrap_or(u64::MAX);
        if seen != linked.len() as u64 || seen != len {
            return fail(
                0,
                format!(
                    "{seen} LINKED nodes in the chain, {} in the list, len() {len}",
                    linked.len()
                ),
            );
        }
        Ok(())
    }
}
