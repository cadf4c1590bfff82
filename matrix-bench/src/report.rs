//! Turns the samples into the markdown tables, the issue-5 target checks
//! and the JSON document.

use crate::contenders::Contender;
use crate::machine::Machine;
use crate::plan::{contenders_of, thousands, Budget, Mode, Plan, Section, ARENA};
use crate::runner::{CellResults, Failure, Samples};
use matrix_core::{layout::ARENA_START, SegmentHeader, BLOCK_HEADER_SIZE};
use serde::Serialize;
use std::fmt::Write;

/// Median, min and max of a contender's ns/op on one workload.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Stat {
    /// Median over the repetitions.
    pub median: f64,
    /// Fastest repetition.
    pub min: f64,
    /// Slowest repetition.
    pub max: f64,
}

/// The statistics of a list of samples (None when empty).
pub fn stat(samples: &[f64]) -> Option<Stat> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    Some(Stat {
        median,
        min: sorted[0],
        max: sorted[n - 1],
    })
}

/// The memory facts of the segment format.
#[derive(Clone, Debug, Serialize)]
pub struct MemoryFacts {
    /// In-band header of every block.
    pub block_header_bytes: u32,
    /// `size_of::<SegmentHeader>()`: bitmaps, bucket heads, participants, counters.
    pub segment_header_bytes: usize,
    /// Offset of the first block.
    pub arena_start: u32,
    /// `arena_start` as a percentage of a 64 MiB segment.
    pub metadata_percent_of_64_mib: f64,
}

impl MemoryFacts {
    /// Reads them from `matrix-core`.
    pub fn of_this_build() -> MemoryFacts {
        MemoryFacts {
            block_header_bytes: BLOCK_HEADER_SIZE,
            segment_header_bytes: std::mem::size_of::<SegmentHeader>(),
            arena_start: ARENA_START,
            metadata_percent_of_64_mib: ARENA_START as f64 * 100.0 / ARENA as f64,
        }
    }
}

/// One issue-5 target and whether this run meets it.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    /// What is asked.
    pub target: String,
    /// What was measured.
    pub figure: String,
    /// Met, missed, or not measurable in this run (None).
    pub holds: Option<bool>,
}

/// A contender's figures on one row, for JSON.
#[derive(Clone, Debug, Serialize)]
pub struct ContenderRow<'a> {
    /// Which contender.
    pub contender: Contender,
    /// Raw samples and failure.
    pub samples: &'a Samples,
    /// Median / min / max ns per op.
    pub ns_per_op: Option<Stat>,
    /// Ours' median divided by this contender's (below 1: ours is faster).
    pub ours_ratio: Option<f64>,
}

/// A table row, for JSON.
#[derive(Clone, Debug, Serialize)]
pub struct JsonRow<'a> {
    /// Table.
    pub section: Section,
    /// Label.
    pub label: &'a str,
    /// The workload's parameters.
    pub spec: &'a crate::workload::Spec,
    /// Every contender's figures.
    pub contenders: Vec<ContenderRow<'a>>,
}

/// The whole JSON document.
#[derive(Clone, Debug, Serialize)]
pub struct JsonReport<'a> {
    /// How the run was started.
    pub command: &'a str,
    /// Mode.
    pub mode: Mode,
    /// Op counts and repetitions.
    pub budget: Budget,
    /// Machine.
    pub machine: &'a Machine,
    /// Wall time of the whole run.
    pub elapsed_s: f64,
    /// Every row.
    pub rows: Vec<JsonRow<'a>>,
    /// Scaling combinations left out.
    pub skipped: &'a [String],
    /// Memory facts.
    pub memory: MemoryFacts,
    /// Target checks (not in verify mode).
    pub targets: Vec<Target>,
}

/// A finished run, ready to print.
pub struct Report<'a> {
    /// How the run was started.
    pub command: &'a str,
    /// Mode.
    pub mode: Mode,
    /// Machine.
    pub machine: &'a Machine,
    /// What ran.
    pub plan: &'a Plan,
    /// What came out, per cell.
    pub results: &'a [CellResults],
    /// Wall time of the whole run.
    pub elapsed_s: f64,
}

impl Report<'_> {
    fn samples(&self, cell: usize, who: Contender) -> Option<&Samples> {
        self.results.get(cell).and_then(|r| r.get(&who))
    }

    fn median(&self, cell: usize, who: Contender) -> Option<f64> {
        self.samples(cell, who)
            .filter(|s| s.failure.is_none())
            .and_then(|s| stat(&s.ns_per_op))
            .map(|s| s.median)
    }

    /// Ours' median over `who`'s median on a cell.
    pub fn ratio(&self, cell: usize, who: Contender) -> Option<f64> {
        Some(self.median(cell, Contender::Ours)? / self.median(cell, who)?)
    }

    fn cell_of(&self, label: &str) -> Option<usize> {
        self.plan
            .rows
            .iter()
            .find(|r| r.label == label)
            .map(|r| r.cell)
    }

    fn cell_text(&self, cell: usize, who: Contender) -> String {
        if !contenders_of(&self.plan.cells[cell]).contains(&who) {
            return "—".to_owned();
        }
        let Some(samples) = self.samples(cell, who) else {
            return "not run".to_owned();
        };
        if let Some(failure) = &samples.failure {
            return short_failure(failure);
        }
        if self.mode == Mode::Verify {
            return "verified".to_owned();
        }
        let Some(s) = stat(&samples.ns_per_op) else {
            return "not run".to_owned();
        };
        let figure = format!("{} ({}–{})", fmt_ns(s.median), fmt_ns(s.min), fmt_ns(s.max));
        match (who, self.ratio(cell, who)) {
            (Contender::Ours, _) | (_, None) => figure,
            (_, Some(r)) => format!("{figure}, ours {r:.2}×"),
        }
    }

    /// The report in markdown.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let budget = self.mode.budget();
        let _ = writeln!(out, "## matrix-bench ({})\n", mode_name(self.mode));
        let _ = writeln!(out, "{}\n", self.machine.markdown());
        let _ = writeln!(
            out,
            "Command: `{}` — {} repetition(s), contenders interleaved, each run in its own process, {:.0} s in all.",
            self.command, budget.reps, self.elapsed_s
        );
        if self.mode == Mode::Verify {
            let _ = writeln!(
                out,
                "Every byte of every block filled and checked before free; no timings.\n"
            );
        } else {
            let _ = writeln!(
                out,
                "Cells: ns per op, median (min–max); \"ours 0.80×\" = ours' median ÷ that contender's \
                 (below 1: ours is faster).\n"
            );
        }
        let sections = [
            (Section::Main, "Workloads", "workload"),
            (
                Section::Sizes,
                "Sizes (alloc + free pairs, one thread)",
                "size",
            ),
            (
                Section::Scaling,
                "Scaling (mixed, one thread)",
                "arena, live set",
            ),
        ];
        for (section, title, first) in sections {
            let rows: Vec<_> = self
                .plan
                .rows
                .iter()
                .filter(|r| r.section == section)
                .collect();
            if rows.is_empty() {
                continue;
            }
            let _ = writeln!(out, "### {title}\n");
            let _ = write!(out, "| {first} | ops |");
            for c in Contender::ALL {
                let _ = write!(out, " {} |", c.label());
            }
            let _ = writeln!(out);
            let _ = writeln!(out, "|---|---:|{}", "---|".repeat(Contender::ALL.len()));
            for row in rows {
                let spec = &self.plan.cells[row.cell];
                let _ = write!(out, "| {} | {} |", row.label, thousands(spec.ops));
                for c in Contender::ALL {
                    let _ = write!(out, " {} |", self.cell_text(row.cell, c));
                }
                let _ = writeln!(out);
            }
            let _ = writeln!(out);
            if section == Section::Scaling {
                for skipped in &self.plan.skipped {
                    let _ = writeln!(out, "- skipped: {skipped}");
                }
                for (live, flat) in self.arena_flatness() {
                    let _ = writeln!(
                        out,
                        "- ours with {} live blocks, slowest ÷ fastest arena: {flat:.2}",
                        thousands(live as u64)
                    );
                }
                let _ = writeln!(out);
            }
        }
        let failures = self.failures();
        if !failures.is_empty() {
            let _ = writeln!(out, "### Failures\n");
            for failure in failures {
                let _ = writeln!(out, "- {failure}");
            }
            let _ = writeln!(out);
        }
        self.memory_markdown(&mut out);
        if self.mode != Mode::Verify {
            let _ = writeln!(out, "### Issue 5 targets\n");
            let _ = writeln!(out, "| target | this run | holds |\n|---|---|---|");
            for t in self.targets() {
                let holds = match t.holds {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "not measured",
                };
                let _ = writeln!(out, "| {} | {} | {holds} |", t.target, t.figure);
            }
            let _ = writeln!(out);
        }
        out
    }

    fn memory_markdown(&self, out: &mut String) {
        let facts = MemoryFacts::of_this_build();
        let _ = writeln!(out, "### Memory (ours)\n");
        let _ = writeln!(
            out,
            "- block header: {} B per block",
            facts.block_header_bytes
        );
        let _ = writeln!(
            out,
            "- allocator metadata: `SegmentHeader` {} B, first block at {} B = {:.3} % of a 64 MiB segment",
            facts.segment_header_bytes, facts.arena_start, facts.metadata_percent_of_64_mib
        );
        for row in &self.plan.rows {
            let spec = &self.plan.cells[row.cell];
            if spec.kind != crate::workload::Kind::Mixed {
                continue;
            }
            if let Some(samples) = self.samples(row.cell, Contender::Ours) {
                if !samples.free_blocks_after.is_empty() {
                    let _ = writeln!(
                        out,
                        "- {}: free blocks after freeing every block + one consolidation: {:?}",
                        row.label, samples.free_blocks_after
                    );
                }
            }
        }
        let _ = writeln!(out);
    }

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
    fn arena_flatness(&self) -> Vec<(usize, f64)> {
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

    /// The issue-5 targets, checked against this run.
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
        ratio_target("pair64", Contender::Rlsf, 1.0);
        ratio_target("mixed, 1 thread", Contender::Rlsf, 1.0);
        ratio_target("mixed, 2 threads", Contender::RlsfMutex, 0.35);
        ratio_target("handoff", Contender::RlsfMutex, 0.35);
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

    /// The JSON document.
    pub fn json(&self) -> String {
        let rows = self
            .plan
            .rows
            .iter()
            .map(|row| JsonRow {
                section: row.section,
                label: &row.label,
                spec: &self.plan.cells[row.cell],
                contenders: Contender::ALL
                    .into_iter()
                    .filter_map(|c| {
                        let samples = self.samples(row.cell, c)?;
                        Some(ContenderRow {
                            contender: c,
                            samples,
                            ns_per_op: stat(&samples.ns_per_op),
                            ours_ratio: self.ratio(row.cell, c),
                        })
                    })
                    .collect(),
            })
            .collect();
        let report = JsonReport {
            command: self.command,
            mode: self.mode,
            budget: self.mode.budget(),
            machine: self.machine,
            elapsed_s: self.elapsed_s,
            rows,
            skipped: &self.plan.skipped,
            memory: MemoryFacts::of_this_build(),
            targets: if self.mode == Mode::Verify {
                Vec::new()
            } else {
                self.targets()
            },
        };
        serde_json::to_string_pretty(&report).expect("the report serializes")
    }

    /// Whether any cell of ours failed (verify mode fails the run on it).
    pub fn ours_failed(&self) -> bool {
        self.results.iter().any(|cell| {
            cell.get(&Contender::Ours)
                .is_some_and(|s| s.failure.is_some())
        })
    }

    /// Every failed cell, as `contender on row: failure`.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        for row in &self.plan.rows {
            for (c, samples) in self.results.get(row.cell).into_iter().flatten() {
                if let Some(f) = &samples.failure {
                    out.push(format!("{} on {}: {f}", c.key(), row.label));
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

/// A failure short enough for a table cell; the full text is listed below the tables.
fn short_failure(failure: &Failure) -> String {
    match failure {
        Failure::Failed(message) if message.contains("VERIFY FAILED") => {
            "failed: live block overwritten".to_owned()
        }
        Failure::Failed(message) if message.contains("allocation of") => {
            "failed: allocation failed".to_owned()
        }
        Failure::Failed(_) => "failed (see below)".to_owned(),
        other => other.to_string(),
    }
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Quick => "--quick",
        Mode::Full => "full run",
        Mode::Verify => "--verify",
    }
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1000.0 {
        format!("{ns:.0}")
    } else if ns >= 100.0 {
        format!("{ns:.1}")
    } else {
        format!("{ns:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let s = stat(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(stat(&[4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
        assert!(stat(&[]).is_none());
    }

    #[test]
    fn metadata_is_measured_against_64_mib() {
        let facts = MemoryFacts::of_this_build();
        assert_eq!(facts.block_header_bytes, 32);
        assert!(facts.arena_start as usize >= facts.segment_header_bytes);
    }
}
