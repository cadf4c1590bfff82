//! Turns the samples into the markdown tables, the performance-target checks
//! and the JSON document.

use crate::contenders::Contender;
use crate::machine::Machine;
use crate::plan::{contenders_of, thousands, Budget, Mode, Plan, Section};
use crate::runner::{CellResults, Failure, Samples};
use crate::targets::{MemoryFacts, Target};
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
    /// Repetitions run (the mode's default unless `--reps` said otherwise).
    pub reps: usize,
}

impl Report<'_> {
    pub(crate) fn samples(&self, cell: usize, who: Contender) -> Option<&Samples> {
        self.results.get(cell).and_then(|r| r.get(&who))
    }

    pub(crate) fn median(&self, cell: usize, who: Contender) -> Option<f64> {
        self.samples(cell, who)
            .filter(|s| s.failure.is_none())
            .and_then(|s| stat(&s.ns_per_op))
            .map(|s| s.median)
    }

    /// Ours' median over `who`'s median on a cell.
    pub fn ratio(&self, cell: usize, who: Contender) -> Option<f64> {
        Some(self.median(cell, Contender::Ours)? / self.median(cell, who)?)
    }

    pub(crate) fn cell_of(&self, label: &str) -> Option<usize> {
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
        let _ = writeln!(out, "## matrix-bench ({})\n", mode_name(self.mode));
        let _ = writeln!(out, "{}\n", self.machine.markdown());
        let _ = writeln!(
            out,
            "Command: `{}` — {} repetition(s), contenders interleaved, each run in its own process, {:.0} s in all.",
            self.command, self.reps, self.elapsed_s
        );
        if self.mode == Mode::Verify {
            let _ = writeln!(
                out,
                "Every byte of every block filled and checked before free; no timings.\n"
            );
        } else {
            let _ = writeln!(
                out,
                "Cells: ns per op, median (min–max) over the repetitions; \"ours 0.80×\" = ours' median \
                 ÷ that contender's (below 1: ours is faster). One-thread rows count the thread's CPU \
                 time, two-thread rows the wall time over the ops of both threads.\n"
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
            (
                Section::Threads,
                "Threads (mixed, more threads than cores)",
                "threads",
            ),
            (
                Section::Processes,
                "Attached processes (mixed, one measured thread; ours only)",
                "processes",
            ),
            (
                Section::Fragmentation,
                "Fragmentation (mixed, one thread, after untimed churn)",
                "churn",
            ),
            (Section::Extra, "Extra", "row"),
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
            let _ = writeln!(out, "### Targets\n");
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
            "- worst-case bytes a request takes beyond its payload (header, rounding to 16, and the \
             slack of the block that serves it: a cached block of the same class may be up to the \
             class width − 16 B larger, a split leaves at most 32 B it cannot cut off):\n"
        );
        let _ = writeln!(
            out,
            "  | request | class width | worst overhead | of the request |"
        );
        let _ = writeln!(out, "  |---:|---:|---:|---:|");
        for size in crate::targets::OVERHEAD_SIZES {
            let block = size.max(16).next_multiple_of(16) + 32;
            let worst = crate::targets::worst_overhead(size);
            let _ = writeln!(
                out,
                "  | {size} B | {} B | {worst} B | {:.0} % |",
                crate::targets::class_width(block),
                worst as f64 * 100.0 / size as f64
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "  Blocks of 32 KiB and more are cached in one short first-fit list: such a request may \
             get any cached larger block, at most half the thread's cache bound (1/32 of the arena, \
             4 MiB at most).\n"
        );
        let _ = writeln!(
            out,
            "- segment header: {} B fixed (free index, counters) + {} B per participant slot; \
             first block at {} B with the default 64 slots = {:.3} % of a 64 MiB segment, \
             {} B with 1,024 slots, {} B with the most ({} slots)",
            facts.fixed_header_bytes,
            facts.slot_bytes,
            facts.arena_start,
            facts.metadata_percent_of_64_mib,
            facts.arena_start_1024_slots,
            facts.arena_start_max_slots,
            facts.max_slots
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
}
