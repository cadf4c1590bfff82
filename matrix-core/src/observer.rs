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
//! of tools (`recover`, `repair`) that must write without participating.

use crate::arena::{Arena, OwnerId};
use crate::error::{BlockError, SegmentError};
use crate::layout::{BlockHeader, ParticipantSlot, SegmentHeader};
use crate::participant::{self, ParticipantInfo};
use crate::recover::{self, RecoveryReport, RepairError};
use crate::segment::{self, Mapping};
use crate::walk::{self, ArenaStats, ChainWalk};

/// A validated view of a segment that is not a participant of it.
pub struct Observer {
    mapping: Mapping,
}

impl Observer {
    /// Opens `/dev/shm/<name>` read-only and validates it.
    pub fn open(name: &str) -> Result<Self, SegmentError> {
        Ok(Observer {
            mapping: segment::open_observer(name, false)?,
        })
    }

    /// Opens the segment shared and writable, still without a participant
    /// slot: for `recover` / `repair` run by tools.
    pub fn open_writable(name: &str) -> Result<Self, SegmentError> {
        Ok(Observer {
            mapping: segment::open_observer(name, true)?,
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

    /// The participant table.
    pub fn participants(&self) -> Vec<ParticipantInfo> {
        participant::list(self.header())
    }

    /// Reclaims the blocks of dead or detached participants (needs
    /// [`open_writable`](Self::open_writable); a read-only observer's
    /// changes stay in its private copy).
    pub fn recover(&self, reclaim_user_states: bool) -> Result<RecoveryReport, BlockError> {
        recover::recover(self, reclaim_user_states)
    }

    /// Rebuilds the free index from the chain; refuses while any participant is alive.
    pub fn repair(&self, reclaim_user_states: bool) -> Result<RecoveryReport, RepairError> {
        recover::repair(self, reclaim_user_states)
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
    fn is_alive(&self, slot: &ParticipantSlot) -> bool {
        self.mapping.is_alive(slot)
    }
}
