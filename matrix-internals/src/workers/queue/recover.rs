//! Repairing slots that dead participants left claimed; see the table in
//! the module docs of [`super`].

use super::{
    empty_seq, seq_of, stamp, who_of, QueueRecovery, Slot, WorkQueue, HEADER_BYTES, SLOT_BYTES,
};
use crate::shm::{self, owner_alive};
use crate::sync::Ordering::*;
use matrix_core::{state, OwnerId, BLOCK_HEADER_SIZE};
use matrix_handler::{Block, BlockToken, HandlerFunctions};

impl<T, H: HandlerFunctions> WorkQueue<T, H> {
    /// Finishes what dead participants left half done in the ring (see the
    /// table in the module docs). Run it after the handler's `recover()`
    /// or before; the two never contend for a block.
    pub fn recover(&self) -> QueueRecovery<T> {
        let mut report = QueueRecovery::default();
        for index in 0..self.capacity as u64 {
            if let Some(block) = self.heal(index, &mut report, true) {
                report.unplaced.push(block);
            }
        }
        report
    }

    /// Repairs slot `index` if a dead participant claimed it.
    ///
    /// A block a dead consumer claimed but never adopted is delivered again,
    /// still owned by the segment: at the tail (claimed like a producer), or
    /// *in place* when the tail waits on this very slot (READING(p) goes
    /// straight to FULL(p + capacity), the slot's next lap). If the queue is
    /// full for another reason the slot is left for later (`deferred`). Only
    /// if the queue is closed (consumers may already have drained past any
    /// place it could go) is the block adopted and returned instead, when
    /// `may_take`; otherwise the slot is left for a recoverer that may.
    pub(super) fn heal(
        &self,
        index: u64,
        report: &mut QueueRecovery<T>,
        may_take: bool,
    ) -> Option<Block<T>> {
        // SAFETY: index < capacity (callers mask it); validated at open_at.
        let slot: &Slot = unsafe {
            shm::shared(
                &self.handler,
                self.offset as u64 + HEADER_BYTES + index * SLOT_BYTES,
            )
        };
        // Acquire: pairs with the claimant's CAS.
        let s = slot.stamp.load(Acquire);
        let who = who_of(s);
        if who == 0 || owner_alive(self.handler.matrix(), who) {
            return None;
        }
        let seq = seq_of(s);
        // Acquire: the dead claimant's stores to `value` and to the block's
        // owner were made before it died and are visible once its death is
        // (its liveness lock, freed by the kernel at its death); Acquire orders our reads after that.
        let token = BlockToken::from_word(slot.value.load(Acquire), self.handler.segment_nonce());
        let in_custody = token.word() != 0 && self.in_custody(token);
        if seq % 2 == 0 {
            // A producer died mid-push: deliver if it handed the block over.
            // AcqRel: one recoverer takes the slot; it sees what the claim published.
            if slot
                .stamp
                .compare_exchange(s, stamp(seq, self.owner), AcqRel, Relaxed)
                .is_err()
            {
                return None;
            }
            if in_custody {
                report.pushes_completed += 1;
            } else {
                // Relaxed: published by publish_full's Release.
                slot.value.store(0, Relaxed);
                report.pushes_abandoned += 1;
            }
            self.publish_full(slot, seq);
            return None;
        }
        // A consumer died mid-pop.
        let next_lap_empty = seq.wrapping_sub(1).wrapping_add(2 * self.capacity);
        if !in_custody {
            // It had adopted the block (or the slot was a hole): just free the slot.
            // AcqRel: as for a producer's slot above.
            if slot
                .stamp
                .compare_exchange(s, stamp(seq, self.owner), AcqRel, Relaxed)
                .is_err()
            {
                return None;
            }
            report.pops_finished += 1;
            // Relaxed: published by the Release in finish_slot.
            slot.value.store(0, Relaxed);
            self.finish_slot(slot, next_lap_empty);
            return None;
        }
        if self.is_closed() {
            return self.take_back(slot, s, token, next_lap_empty, report, may_take);
        }
        // Acquire: pairs with `advance`'s Release.
        let tail = self.header().tail.load(Acquire);
        if empty_seq(tail) == next_lap_empty {
            // The tail waits on this very slot (it cannot pass it): deliver
            // the block again in place, as position p + capacity.
            return self.redeliver_in_place(slot, s, next_lap_empty, report);
        }
        // Deliver it again at the tail, like a producer; the block stays
        // the segment's throughout.
        let Some((target, pos)) = self.claim_for_push() else {
            // Full, and not because of this slot: a later heal (a producer
            // that reaches this slot, or recover()) finishes it.
            report.deferred += 1;
            return None;
        };
        let target_empty = empty_seq(pos);
        // AcqRel: as for a producer's slot above.
        if slot
            .stamp
            .compare_exchange(s, stamp(seq, self.owner), AcqRel, Relaxed)
            .is_err()
        {
            self.publish_full(target, target_empty); // a hole: another recoverer has it
            return None;
        }
        // SeqCst: as a producer's check after its claim.
        if self.header().closed.load(SeqCst) != 0 {
            self.publish_full(target, target_empty);
            // Release: gives the slot back to its dead claimant for a recoverer
            // that may take the block.
            slot.stamp.store(s, Release);
            return self.take_back(slot, s, token, next_lap_empty, report, may_take);
        }
        // Relaxed (both): published by the Release stores of the stamps that follow.
        slot.value.store(0, Relaxed);
        target.value.store(token.word(), Relaxed);
        self.publish_full(target, target_empty);
        self.finish_slot(slot, next_lap_empty);
        report.redelivered += 1;
        None
    }

    /// Moves a dead consumer's READING slot straight to FULL for the next
    /// lap of the same slot. Only done while the tail waits on this slot, so
    /// every earlier position is claimed and the message leaves no gap: a
    /// close() racing with it still drains it.
    fn redeliver_in_place(
        &self,
        slot: &Slot,
        s: u64,
        next_lap_empty: u32,
        report: &mut QueueRecovery<T>,
    ) -> Option<Block<T>> {
        // Release: the message (value, block owner) is visible to the
        // consumer that Acquires this stamp; one recoverer wins.
        if slot
            .stamp
            .compare_exchange(
                s,
                stamp(next_lap_empty.wrapping_add(1), 0),
                Release,
                Relaxed,
            )
            .is_err()
        {
            return None;
        }
        report.redelivered += 1;
        let q = self.header();
        self.notify(&q.not_empty, &q.consumers_waiting);
        None
    }

    /// On a closed queue, adopts a dead consumer's unadopted block and
    /// returns it (if `may_take`): consumers may already have drained past
    /// where it could be delivered again.
    fn take_back(
        &self,
        slot: &Slot,
        s: u64,
        token: BlockToken,
        empty: u32,
        report: &mut QueueRecovery<T>,
        may_take: bool,
    ) -> Option<Block<T>> {
        if !may_take {
            return None;
        }
        // AcqRel: as for a producer's slot above.
        if slot
            .stamp
            .compare_exchange(s, stamp(seq_of(s), self.owner), AcqRel, Relaxed)
            .is_err()
        {
            return None;
        }
        self.hand_back(slot, token, empty, report)
    }

    /// Adopts the block of a slot we took over and empties the slot.
    fn hand_back(
        &self,
        slot: &Slot,
        token: BlockToken,
        empty: u32,
        report: &mut QueueRecovery<T>,
    ) -> Option<Block<T>> {
        let block = self.adopt(token).ok();
        if block.is_none() {
            report.pops_finished += 1;
        }
        // Relaxed: published by the Release in finish_slot.
        slot.value.store(0, Relaxed);
        self.finish_slot(slot, empty);
        block
    }

    /// Stores an EMPTY stamp with sequence `empty` into a slot we hold.
    fn finish_slot(&self, slot: &Slot, empty: u32) {
        // Release: as in release_slot.
        slot.stamp.store(stamp(empty, 0), Release);
        let q = self.header();
        self.notify(&q.not_full, &q.producers_waiting);
    }

    /// Whether the token names a live block of that generation owned by the
    /// segment, i.e. one that is in the queue's hands.
    fn in_custody(&self, token: BlockToken) -> bool {
        let Some(header) = token.offset().checked_sub(BLOCK_HEADER_SIZE) else {
            return false;
        };
        match self.handler.matrix().block_header(header) {
            Ok((hdr, _)) => {
                // Acquire: pairs with the Release of the state word's last change.
                let word = hdr.state.load(Acquire);
                state::is_live(state::state_of(word))
                    && token.matches_generation(state::generation_of(word))
                    && state::owner_of(word) == OwnerId::SEGMENT.0
            }
            Err(_) => false,
        }
    }
}
