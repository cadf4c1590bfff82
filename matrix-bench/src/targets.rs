//! The performance targets, checked against a finished run, and the memory
//! facts of the segment format they include.

use crate::contenders::Contender;
use crate::plan::{Section, ARENA};
use crate::report::Report;
use matrix_core::{layout::ARENA_START, BLOCK_HEADER_SIZE};
use serde::Serialize;

/// The memory facts of the segment format.
#[derive(Clone, Debug, Serialize)]
pub struct MemoryFacts {
    /// In-band header of every block.
    pub block_header_bytes: u32,
    /// The fixed part of the segment header: bitmaps, bucket heads, counters.
    pub fixed_header_bytes: usize,
    /// One participant table entry (a slot padded to its cache lines).
    pub slot_bytes: usize,
    /// Offset of the first block with the default table (64 slots).
    pub arena_start: u32,
    /// Offset of the first block with 1,024 slots.
    pub arena_start_1024_slots: u32,
    /// Offset of the first block with the largest table.
    pub arena_start_max_slots: u32,
    /// Largest table.
    pub max_slots: usize,
    /// `arena_start` as a percentage of a 64 MiB segment.
    pub metadata_percent_of_64_mib: f64,
}

impl MemoryFacts {
    /// Reads them from `matrix-core`.
    pub fn of_this_build() -> MemoryFacts {
        use matrix_core::layout::{arena_start_for, SlotEntry, MAX_PARTICIPANTS, TABLE_OFFSET};
        MemoryFacts {
            block_header_bytes: BLOCK_HEADER_SIZE,
            fixed_header_bytes: TABLE_OFFSET,
            slot_bytes: std::mem::size_of::<SlotEntry>(),
            arena_start: ARENA_START,
            arena_start_1024_slots: arena_start_for(1024).unwrap_or(0),
            arena_start_max_slots: arena_start_for(MAX_PARTICIPANTS).unwrap_or(0),
            max_slots: MAX_PARTICIPANTS,
            metadata_percent_of_64_mib: ARENA_START as f64 * 100.0 / ARENA as f64,
        }
    }
}

/// Width in bytes of the size class that holds blocks of `block` bytes.
pub fn class_width(block: u32) -> u32 {
    let class = matrix_core::size_class::class_of(block);
    match matrix_core::size_class::next_class(class) {
        Some(next) => (next.lower_bound() - class.lower_bound()) as u32,
        None => u32::MAX,
    }
}

/// The most arena bytes a request of `payload` bytes can take beyond the
/// payload: the 32-byte header, rounding up to 16 (the minimum payload is
/// 16), and the slack of the block that serves it: a cached block of the
/// same class is up to the class width − 16 bytes larger, and a block from
/// the free index keeps a remainder it cannot split off (under
/// `MIN_BLOCK`, so at most 32 bytes). For blocks below 32 KiB (the
/// thread cache's per-class bins); larger ones share a first-fit list.
pub fn worst_overhead(payload: u32) -> u32 {
    use matrix_core::layout::{BLOCK_ALIGN, MIN_BLOCK, MIN_PAYLOAD};
    let rounded = payload.max(MIN_PAYLOAD).next_multiple_of(BLOCK_ALIGN);
    let block = rounded + BLOCK_HEADER_SIZE;
    let slack = (class_width(block) - BLOCK_ALIGN).max(MIN_BLOCK - BLOCK_ALIGN);
    BLOCK_HEADER_SIZE + (rounded - payload) + slack
}

/// Requests the memory table shows.
pub const OVERHEAD_SIZES: [u32; 8] = [1, 16, 64, 200, 544, 1024, 4096, 16384];

/// One performance target and whether this run meets it.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    /// What is asked.
    pub target: String,
    /// What was measured.
    pub figure: String,
    /// Met, missed, or not measurable in this run (None).
    pub holds: Option<bool>,
}

impl Report<'_> {
    /// Ours' slowest row ÷ fastest row in a section.
    fn flatness(&self, section: Section) -> Option<f64> {
        let medians: Vec<f64> = self
            .plan
            .rows
            .iter()
            .filter(|r| r.section == section)
            .filter_map(|r| self.median(r.cell, Contender::Ours))
            .collect();
        if medians.len() < 2 {
            return None;
        }
        let max = medians.iter().copied().fold(f64::MIN, f64::max);
        let min = medians.iter().copied().fold(f64::MAX, f64::min);
        Some(max / min)
    }

    /// Per live-set size of the scaling rows, ours' slowest ÷ fastest arena.
    pub(crate) fn arena_flatness(&self) -> Vec<(usize, f64)> {
        let mut by_live: std::collections::BTreeMap<usize, Vec<f64>> = Default::default();
        for row in self
            .plan
            .rows
            .iter()
            .filter(|r| r.section == Section::Scaling)
        {
            if let Some(m) = self.median(row.cell, Contender::Ours) {
                by_live
                    .entry(self.plan.cells[row.cell].live)
                    .or_default()
                    .push(m);
            }
        }
        by_live
            .into_iter()
            .filter(|(_, m)| m.len() > 1)
            .map(|(live, m)| {
                let max = m.iter().copied().fold(f64::MIN, f64::max);
                let min = m.iter().copied().fold(f64::MAX, f64::min);
                (live, max / min)
            })
            .collect()
    }

    /// The performance targets, checked against this run.
    pub fn targets(&self) -> Vec<Target> {
        let mut targets = Vec::new();
        let mut ratio_target = |label: &str, who: Contender, limit: f64| {
            let ratio = self.cell_of(label).and_then(|cell| self.ratio(cell, who));
            targets.push(Target {
                target: format!("{label}: ours ≤ {limit} × {}", who.label()),
                figure: ratio.map_or("—".to_owned(), |r| format!("{r:.2}×")),
                holds: ratio.map(|r| r <= limit),
            });
        };
        ratio_target("pair64", Contender::System, 1.0);
        ratio_target("mixed, 1 thread", Contender::System, 1.0);
        ratio_target("mixed, 1 thread", Contender::Mimalloc, 1.5);
        ratio_target("mixed, 2 threads", Contender::System, 1.0);
        ratio_target("handoff", Contender::Mimalloc, 0.5);
        let sizes: Vec<_> = self
            .plan
            .rows
            .iter()
            .filter(|r| r.section == Section::Sizes)
            .collect();
        let size_ratios: Vec<(String, Option<f64>)> = sizes
            .iter()
            .map(|r| (r.label.clone(), self.ratio(r.cell, Contender::Rlsf)))
            .collect();
        if !size_ratios.is_empty() {
            let worst = size_ratios
                .iter()
                .filter_map(|(_, r)| *r)
                .fold(f64::MIN, f64::max);
            let all = size_ratios.iter().all(|(_, r)| r.is_some());
            let figure = size_ratios
                .iter()
                .map(|(l, r)| format!("{l} {}", r.map_or("—".to_owned(), |r| format!("{r:.2}×"))))
                .collect::<Vec<_>>()
                .join(", ");
            targets.push(Target {
                target: "sizes: ours ≤ 1.2 × rlsf at every size".to_owned(),
                figure,
                holds: all.then_some(worst <= 1.2),
            });
            let flat = self.flatness(Section::Sizes);
            targets.push(Target {
                target: "sizes: flat, ours' slowest ÷ fastest size ≤ 1.3".to_owned(),
                figure: flat.map_or("—".to_owned(), |f| format!("{f:.2}")),
                holds: flat.map(|f| f <= 1.3),
            });
        }
        let mut peer = Vec::new();
        for row in &self.plan.rows {
            if let Some(r) = self.ratio(row.cell, Contender::Peer) {
                peer.push((row.label.as_str(), r));
            }
        }
        let crashed = self
            .plan
            .rows
            .iter()
            .filter(|r| {
                self.samples(r.cell, Contender::Peer)
                    .is_some_and(|s| s.failure.is_some())
            })
            .count();
        let worst_peer = peer
            .iter()
            .copied()
            .fold(None, |acc: Option<(&str, f64)>, p| match acc {
                Some(a) if a.1 >= p.1 => Some(a),
                _ => Some(p),
            });
        targets.push(Target {
            target: "vs atomic-matrix where it survives: ours ≤ 0.2 ×".to_owned(),
            figure: match worst_peer {
                Some((label, r)) => {
                    format!(
                        "worst {r:.2}× ({label}) over {} rows; it failed on {crashed} rows",
                        peer.len()
                    )
                }
                None => format!("no row survived; it failed on {crashed} rows"),
            },
            holds: worst_peer.map(|(_, r)| r <= 0.2),
        });
        let facts = MemoryFacts::of_this_build();
        targets.push(Target {
            target: "header 32 B per block".to_owned(),
            figure: format!("{} B", facts.block_header_bytes),
            holds: Some(facts.block_header_bytes == 32),
        });
        targets.push(Target {
            target: "allocator metadata ≤ 1 % of a 64 MiB segment".to_owned(),
            figure: format!(
                "{} B = {:.3} %",
                facts.arena_start, facts.metadata_percent_of_64_mib
            ),
            holds: Some(facts.metadata_percent_of_64_mib <= 1.0),
        });
        let counts: Vec<u64> = self
            .plan
            .cells
            .iter()
            .enumerate()
            .filter(|(_, spec)| spec.kind == crate::workload::Kind::Mixed)
            .filter_map(|(cell, _)| self.samples(cell, Contender::Ours))
            .flat_map(|s| s.free_blocks_after.iter().copied())
            .collect();
        targets.push(Target {
            target: "after each mixed run, free all + one consolidation leave one free block"
                .to_owned(),
            figure: format!(
                "{} runs, free blocks {}",
                counts.len(),
                match (counts.iter().min(), counts.iter().max()) {
                    (Some(a), Some(b)) if a == b => format!("{a}"),
                    (Some(a), Some(b)) => format!("{a}–{b}"),
                    _ => "—".to_owned(),
                }
            ),
            holds: (!counts.is_empty()).then(|| counts.iter().all(|&c| c == 1)),
        });
        targets
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::Machine;
    use crate::plan::{Mode, Plan};
    use crate::runner::{CellResults, Failure, Samples};

    fn samples(ns: f64) -> Samples {
        Samples {
            ns_per_op: vec![ns, ns * 1.1, ns * 0.9],
            free_blocks_after: vec![1],
            failure: None,
        }
    }

    /// Every cell: ours `ours(spec)` ns, rlsf and the system allocator 20,
    /// mimalloc and rlsf + Mutex 40, the peer crashed.
    fn report_targets(ours: impl Fn(&crate::workload::Spec) -> f64) -> Vec<Target> {
        let plan = Plan::new(Mode::Quick, 64 << 30, 64 << 30);
        let results: Vec<CellResults> = plan
            .cells
            .iter()
            .map(|spec| {
                let mut cell = CellResults::new();
                cell.insert(Contender::Ours, samples(ours(spec)));
                cell.insert(Contender::Rlsf, samples(20.0));
                cell.insert(Contender::RlsfMutex, samples(40.0));
                cell.insert(Contender::System, samples(20.0));
                cell.insert(Contender::Mimalloc, samples(40.0));
                let crashed = Samples {
                    failure: Some(Failure::Crashed("SIGSEGV".into())),
                    ..Samples::default()
                };
                cell.insert(Contender::Peer, crashed);
                cell
            })
            .collect();
        let machine = Machine::detect();
        let report = Report {
            command: "test",
            mode: Mode::Quick,
            machine: &machine,
            plan: &plan,
            results: &results,
            elapsed_s: 0.0,
            reps: 3,
        };
        report.targets()
    }

    fn holds(targets: &[Target], prefix: &str) -> Option<bool> {
        targets
            .iter()
            .find(|t| t.target.starts_with(prefix))
            .expect(prefix)
            .holds
    }

    #[test]
    fn targets_hold_and_miss_by_their_ratios() {
        let fast = report_targets(|_| 10.0);
        assert_eq!(holds(&fast, "pair64"), Some(true), "10 / 20");
        assert_eq!(
            holds(&fast, "handoff"),
            Some(true),
            "10 / 40 = 0.25 <= 0.5 mimalloc"
        );
        assert_eq!(holds(&fast, "sizes: flat"), Some(true));
        assert_eq!(
            holds(&fast, "vs atomic-matrix"),
            None,
            "it crashed everywhere: nothing to compare"
        );
        assert_eq!(holds(&fast, "after each mixed run"), Some(true));

        let uneven = report_targets(|spec| if spec.size == 1 << 20 { 30.0 } else { 21.0 });
        assert_eq!(holds(&uneven, "pair64"), Some(false), "21 / 20 system");
        assert_eq!(
            holds(&uneven, "handoff"),
            Some(false),
            "21 / 40 = 0.525 > 0.5 mimalloc"
        );
        assert_eq!(
            holds(&uneven, "sizes: ours"),
            Some(false),
            "30 / 20 at 1 MiB"
        );
        assert_eq!(holds(&uneven, "sizes: flat"), Some(false), "30 / 21");
    }

    #[test]
    fn no_block_exceeds_its_worst_overhead() {
        // Every request size below 8 KiB, served from a fresh carve, from
        // the free index after a split, and from the thread cache after a
        // free of a larger block of the same class.
        let m = matrix_core::AtomicMatrix::anonymous(64 << 20).unwrap();
        let size_of = |payload: u64| {
            let ptr = m.allocate(payload, 0).unwrap();
            let header = ptr.offset() - BLOCK_HEADER_SIZE;
            let (_, size) = m.block_header(header).unwrap();
            (header, size)
        };
        let mut served_larger = 0;
        for payload in 1..8192u32 {
            // A block 16 bytes larger, freed into the cache: in the same
            // class (above 512 B), the next request gets it.
            let (big, big_size) = size_of(payload as u64 + 16);
            m.free(big, None).unwrap();
            for _ in 0..2 {
                let (header, size) = size_of(payload as u64);
                assert!(
                    size - payload <= worst_overhead(payload),
                    "{payload} B got a {size} B block (worst {} beyond)",
                    worst_overhead(payload)
                );
                if size == big_size {
                    served_larger += 1;
                }
                m.free(header, None).unwrap();
            }
        }
        assert!(
            served_larger > 1000,
            "the cache served larger blocks {served_larger} times"
        );
    }

    #[test]
    fn metadata_is_measured_against_64_mib() {
        let facts = MemoryFacts::of_this_build();
        assert_eq!(facts.block_header_bytes, 32);
        assert!(facts.arena_start as usize >= facts.fixed_header_bytes + 64 * facts.slot_bytes);
    }
}
