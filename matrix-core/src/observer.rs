//! Looking at a segment without becoming a participant.
//!
//! [`AtomicMatrix::open`](crate::AtomicMatrix::open) claims a participant
//! slot; a tool that only looks must not, nor count itself among the
//! participants it reports. An [`Observer`] maps and validates the segment
//! exactly as `open` does, acts as the segment itself (owner 0), and by
//! default maps it privately from a read-only descriptor, so nothing it does
//! can reach the file:
//!
//! ```text
//!  /dev/shm/NAME ──open(O_RDONLY | O_NOFOLLOW)──► fd ──mmap(MAP_PRIVATE)──► Observer
//! ```
//!
//! [`Observer::open_writable`] maps it shared instead, for the repair paths
//! of tools (`recover`, `repair`). Those act through a short-lived
//! participant of their own (a slot and its liveness lock, so other
//! recoverers can tell it is alive), which [`AtomicMatrix::close`]
//! (crate::AtomicMatrix::close) empties again before they return: the tool
//! leaves no slot behind.
//!
//! An observer's liveness answers come from `F_OFD_GETLK` on its own
//! descriptor, which works on a read-only descriptor and from any PID
//! namespace.

use crate::arena::{Arena, OwnerId};
use crate::error::{BlockError, SegmentError};
use crate::layout::{BlockHeader, SegmentHeader};
use crate::participant::{self, Liveness, ParticipantInfo};
use crate::recover::{RecoveryReport, RepairError};
use crate::segment::{self, Mapping};
use crate::walk::{self, ArenaStats, ChainWalk};
use crate::AtomicMatrix;

/// A validated view of a segment that is not a participant of it.
pub struct Observer {
    mapping: Mapping,
    writable: bool,
}

impl Observer {
    /// Opens `/dev/shm/<name>` read-only and validates it.
    pub fn open(name: &str) -> Result<Self, SegmentError> {
        Ok(Observer {
            mapping: segment::open_observer(name, false)?,
            writable: false,
        })
    }

    /// Opens the segment shared and writable, still without a participant
    /// slot: for `recover` / `repair` run by tools.
    pub fn open_writable(name: &str) -> Result<Self, SegmentError> {
        Ok(Observer {
            mapping: segment::open_observer(name, true)?,
            writable: true,
        })
    }

    /// The segment name.
    pub fn name(&self) -> &str {
        self.mapping.name.as_deref().unwrap_or("")
    }

    /// Segment size in bytes.
    pub fn segment_size(&self) -> u64 {
        self.mapping.len() as u64
    }

    /// This process's base address of the mapping; payload offsets resolve
    /// against it. Read it through atomics only: other processes change the
    /// segment under it (and a read-only view's writes would never reach
    /// the file).
    pub fn base_ptr(&self) -> *const u8 {
        self.mapping.base()
    }

    /// The segment header.
    pub fn header(&self) -> &SegmentHeader {
        self.mapping.segment_header()
    }

    /// Walks every block of the chain.
    pub fn blocks(&self) -> ChainWalk<'_, Self> {
        walk::walk(self)
    }

    /// Used / free bytes, free blocks, largest free block, fragmentation.
    pub fn stats(&self) -> Result<ArenaStats, BlockError> {
        walk::stats(self)
    }

    /// The participant table, with liveness as this observer sees it.
    pub fn participants(&self) -> Vec<ParticipantInfo> {
        participant::list(self)
    }

    fn participant(&self, operation: &'static str) -> Result<AtomicMatrix, SegmentError> {
        if !self.writable {
            return Err(SegmentError::NotAParticipant { operation });
        }
        AtomicMatrix::open(self.name())
    }

    /// Reclaims the blocks of dead or detached participants, through a
    /// short-lived participant of its own that it closes again (needs
    /// [`open_writable`](Self::open_writable)).
    pub fn recover(&self, reclaim_user_states: bool) -> Result<RecoveryReport, BlockError> {
        let tool = self
            .participant("Observer::recover")
            .map_err(BlockError::Refused)?;
        let report = tool.recover(reclaim_user_states);
        tool.close()?;
        report
    }

    /// Rebuilds the free index from the chain, through a short-lived
    /// participant of its own; refuses while any other participant is alive
    /// or of unknown liveness (needs [`open_writable`](Self::open_writable)).
    pub fn repair(&self, reclaim_user_states: bool) -> Result<RecoveryReport, RepairError> {
        let tool = self
            .participant("Observer::repair")
            .map_err(RepairError::Segment)?;
        let report = tool.repair(reclaim_user_states);
        tool.close().map_err(RepairError::Block)?;
        report
    }
}

impl Arena for Observer {
    #[inline]
    fn segment(&self) -> &SegmentHeader {
        self.mapping.segment()
    }
    #[inline]
    fn arena_start(&self) -> u32 {
        self.mapping.arena_start()
    }
    #[inline]
    fn arena_end(&self) -> u32 {
        self.mapping.arena_end()
    }
    #[inline]
    fn header(&self, offset: u32) -> Option<&BlockHeader> {
        Arena::header(&self.mapping, offset)
    }
    fn owner(&self) -> OwnerId {
        OwnerId::SEGMENT
    }
    fn liveness(&self, index: usize) -> Liveness {
        self.mapping.slot_liveness(index)
    }
}
