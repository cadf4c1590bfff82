//! What a run measures: the workloads with their op counts, and the
//! contenders of each.

use crate::contenders::Contender;
use crate::workload::{Kind, Spec};
use serde::Serialize;

/// 1 MiB.
pub const MIB: u64 = 1 << 20;
/// The default segment / pool size.
pub const ARENA: u64 = 64 * MIB;
/// Live-set cap per thread of the `mixed` rows.
pub const MIXED_LIVE: usize = 10_000;
/// Block sizes of the `sizes` rows.
pub const SIZES: [usize; 5] = [16, 256, 4096, 64 * 1024, 1 << 20];
/// The largest arena of the scaling rows: 3.9 GiB, close to the 4 GiB − 1
/// a segment's `u32` offsets reach.
pub const ARENA_MAX: u64 = 3993 * MIB;
/// Arenas of the scaling rows.
pub const SCALING_ARENAS: [u64; 4] = [MIB, 64 * MIB, 1024 * MIB, ARENA_MAX];
/// Attached processes of the processes rows (1 is the main mixed row).
pub const PROCESSES: [usize; 3] = [2, 4, 8];
/// Untimed churn steps before the timed part of the fragmentation rows.
pub const CHURN: [u64; 3] = [100_000, 1_000_000, 10_000_000];
/// Live sets of the scaling rows.
pub const SCALING_LIVE: [usize; 3] = [100, 10_000, 1_000_000];
/// Arena bytes a live block of `mixed` may need, header and rounding
/// included, in the most wasteful contender (used to decide what fits).
const WORST_BLOCK: u64 = 640;

/// How long a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// `--quick`: short runs, 5 repetitions (under 2 minutes).
    Quick,
    /// The default: the numbers for the README (under 15 minutes).
    Full,
    /// `--verify`: every byte filled and checked, one repetition, no timings.
    Verify,
}

/// Op counts and repetitions of a mode.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Budget {
    /// Repetitions of every contender × workload.
    pub reps: usize,
    /// Timed ops of `pair64` and of each `size` row (before scaling down
    /// for big blocks in verify mode).
    pub pairs: u64,
    /// Timed ops of `mixed` (all threads together) and of the scaling rows.
    pub mixed: u64,
    /// Blocks handed over in `handoff`.
    pub handoff: u64,
    /// Seconds a child may take before it is killed and reported as hung.
    pub timeout_s: u64,
}

impl Mode {
    /// The budget of this mode.
    pub fn budget(self) -> Budget {
        match self {
            Mode::Quick => Budget {
                reps: 5,
                pairs: 1_000_000,
                mixed: 1_000_000,
                handoff: 500_000,
                timeout_s: 30,
            },
            Mode::Full => Budget {
                reps: 9,
                pairs: 5_000_000,
                mixed: 4_000_000,
                handoff: 2_000_000,
                timeout_s: 120,
            },
            Mode::Verify => Budget {
                reps: 1,
                pairs: 500_000,
                mixed: 2_000_000,
                handoff: 1_000_000,
                timeout_s: 120,
            },
        }
    }
}

/// Where a row is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Section {
    /// pair64, mixed, handoff.
    Main,
    /// The size sweep.
    Sizes,
    /// mixed over arena sizes and live sets.
    Scaling,
    /// mixed over thread counts beyond the two cores (oversubscribed).
    Threads,
    /// mixed (ours) with other processes attached to the segment.
    Processes,
    /// mixed after random-size churn.
    Fragmentation,
    /// Rows a module registers in [`EXTRA_ROWS`].
    Extra,
}

/// Adds a module's own rows to a plan (after the built-in ones); they are
/// shown in the "Extra" table with every contender that can run them.
pub type ExtraRows = fn(&mut Plan, Mode);

/// Modules with rows of their own register them here.
pub const EXTRA_ROWS: &[ExtraRows] = &[];

/// Thread counts of the threads section (1 and 2 are main rows).
pub const OVERSUBSCRIBED_THREADS: [usize; 2] = [4, 8];

/// A line of a table: a label and the measured cell it shows.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Table it belongs to.
    pub section: Section,
    /// First column.
    pub label: String,
    /// Index into [`Plan::cells`]; two rows with the same workload share one cell.
    pub cell: usize,
}

/// Everything to run.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// Distinct workloads, each run on its contenders.
    pub cells: Vec<Spec>,
    /// The rows of the tables.
    pub rows: Vec<Row>,
    /// Scaling combinations left out, and why.
    pub skipped: Vec<String>,
}

/// The contenders of a workload: rlsf alone on one thread, behind a mutex
/// on two.
pub fn contenders_of(spec: &Spec) -> Vec<Contender> {
    if spec.processes > 1 {
        // Only ours is one heap that several processes attach to.
        return vec![Contender::Ours];
    }
    Contender::ALL
        .into_iter()
        .filter(|c| {
            if spec.threads > 1 {
                c.thread_safe()
            } else {
                c.runs_single_threaded()
            }
        })
        .collect()
}

impl Plan {
    /// The plan of `mode` on a machine with `shm_free` bytes of /dev/shm and
    /// `mem_available` bytes of RAM.
    pub fn new(mode: Mode, shm_free: u64, mem_available: u64) -> Plan {
        let budget = mode.budget();
        let mut plan = Plan {
            cells: Vec::new(),
            rows: Vec::new(),
            skipped: Vec::new(),
        };
        let base = Spec {
            kind: Kind::Pair64,
            threads: 1,
            size: 64,
            arena: ARENA,
            live: 0,
            ops: 0,
            warmup: 0,
            processes: 1,
        };
        let pairs = Spec {
            ops: budget.pairs,
            warmup: budget.pairs / 10,
            ..base
        };
        plan.add(Section::Main, "pair64".into(), pairs);
        let mixed = Spec {
            kind: Kind::Mixed,
            live: MIXED_LIVE,
            ops: budget.mixed,
            ..base
        };
        plan.add(Section::Main, "mixed, 1 thread".into(), mixed);
        plan.add(
            Section::Main,
            "mixed, 2 threads".into(),
            Spec {
                threads: 2,
                ..mixed
            },
        );
        let handoff = Spec {
            kind: Kind::Handoff,
            threads: 2,
            ops: budget.handoff,
            warmup: budget.handoff / 10,
            ..base
        };
        plan.add(Section::Main, "handoff".into(), handoff);
        for size in SIZES {
            let ops = if mode == Mode::Verify {
                size_ops_verified(budget.pairs, size)
            } else {
                budget.pairs
            };
            let spec = Spec {
                kind: Kind::Size,
                size,
                ops,
                warmup: ops / 10,
                ..base
            };
            plan.add(Section::Sizes, bytes_label(size as u64), spec);
        }
        for arena in SCALING_ARENAS {
            for live in SCALING_LIVE {
                let label = format!(
                    "{} arena, {} live",
                    bytes_label(arena),
                    thousands(live as u64)
                );
                let needed = live as u64 * WORST_BLOCK + MIB / 4;
                if needed > arena {
                    plan.skipped.push(format!(
                        "{label}: does not fit (needs up to {} for its live set)",
                        bytes_label(needed.next_power_of_two())
                    ));
                } else if arena > shm_free / 2 || arena.saturating_mul(2) > mem_available {
                    plan.skipped.push(format!(
                        "{label}: not enough memory (/dev/shm free {}, RAM available {})",
                        bytes_label(shm_free),
                        bytes_label(mem_available)
                    ));
                } else {
                    plan.add(
                        Section::Scaling,
                        label,
                        Spec {
                            arena,
                            live,
                            ..mixed
                        },
                    );
                }
            }
        }
        for threads in OVERSUBSCRIBED_THREADS {
            plan.add(
                Section::Threads,
                format!("mixed, {threads} threads"),
                Spec { threads, ..mixed },
            );
        }
        for processes in PROCESSES {
            plan.add(
                Section::Processes,
                format!("mixed, {processes} processes attached"),
                Spec { processes, ..mixed },
            );
        }
        for churn in CHURN {
            plan.add(
                Section::Fragmentation,
                format!("mixed after {} churn ops", thousands(churn)),
                Spec {
                    warmup: churn,
                    ..mixed
                },
            );
        }
        for extra in EXTRA_ROWS {
            extra(&mut plan, mode);
        }
        plan
    }

    /// Adds a row measuring `spec` (cells are shared between equal specs).
    pub fn add(&mut self, section: Section, label: String, spec: Spec) {
        let cell = match self.cells.iter().position(|c| *c == spec) {
            Some(i) => i,
            None => {
                self.cells.push(spec);
                self.cells.len() - 1
            }
        };
        self.rows.push(Row {
            section,
            label,
            cell,
        });
    }

    /// Drops the rows whose arena is above `max` bytes and says so in
    /// [`skipped`](Self::skipped) (a quick check of the wiring need not
    /// fault in gigabytes).
    pub fn cap_arena(&mut self, max: u64) {
        let cells = &self.cells;
        let skipped = &mut self.skipped;
        self.rows.retain(|r| {
            let arena = cells[r.cell].arena;
            let keep = arena <= max;
            if !keep {
                skipped.push(format!(
                    "{}: arena {} above --max-arena {}",
                    r.label,
                    bytes_label(arena),
                    bytes_label(max)
                ));
            }
            keep
        });
    }

    /// Keeps only the rows whose label contains `filter` (and their cells).
    pub fn retain_rows(&mut self, filter: &str) {
        self.rows.retain(|r| r.label.contains(filter));
    }
}

/// In verify mode every byte is written and read: big blocks get fewer pairs.
fn size_ops_verified(pairs: u64, size: usize) -> u64 {
    (256 * MIB / size as u64).clamp(64, pairs)
}

/// `1 MiB`, `64 KiB`, `16 B`.
pub fn bytes_label(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (unit, name) in UNITS {
        if bytes >= unit && bytes % unit == 0 {
            return format!("{} {name}", bytes / unit);
        }
        if bytes >= unit {
            return format!("{:.1} {name}", bytes as f64 / unit as f64);
        }
    }
    format!("{bytes} B")
}

/// `1,000,000`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_read_well() {
        assert_eq!(bytes_label(16), "16 B");
        assert_eq!(bytes_label(64 * 1024), "64 KiB");
        assert_eq!(bytes_label(1 << 30), "1 GiB");
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(thousands(100), "100");
    }

    #[test]
    fn scaling_keeps_what_fits_and_says_what_it_skips() {
        let plan = Plan::new(Mode::Quick, 64 << 30, 64 << 30);
        let scaling: Vec<_> = plan
            .rows
            .iter()
            .filter(|r| r.section == Section::Scaling)
            .collect();
        assert_eq!(scaling.len(), 9, "{scaling:?}");
        assert_eq!(plan.skipped.len(), 3, "{:?}", plan.skipped);
        // The 64 MiB / 10,000 row is the same workload as "mixed, 1 thread".
        let mixed = plan
            .rows
            .iter()
            .find(|r| r.label == "mixed, 1 thread")
            .unwrap();
        assert!(scaling.iter().any(|r| r.cell == mixed.cell));
        assert!(plan
            .rows
            .iter()
            .any(|r| r.label == "3.9 GiB arena, 1,000,000 live"));
        let procs: Vec<_> = plan
            .rows
            .iter()
            .filter(|r| r.section == Section::Processes)
            .map(|r| &plan.cells[r.cell])
            .collect();
        assert_eq!(procs.len(), PROCESSES.len());
        assert!(procs
            .iter()
            .all(|s| contenders_of(s) == vec![Contender::Ours]));
        let mut capped = Plan::new(Mode::Quick, 64 << 30, 64 << 30);
        capped.cap_arena(64 * MIB);
        assert!(capped
            .rows
            .iter()
            .all(|r| capped.cells[r.cell].arena <= 64 * MIB));
        assert!(capped
            .rows
            .iter()
            .any(|r| r.label == "64 MiB arena, 100 live"));
        assert!(capped
            .skipped
            .iter()
            .any(|s| s.starts_with("3.9 GiB arena, 100 live: arena 3.9 GiB above")));
        let small = Plan::new(Mode::Quick, 512 * MIB, 64 << 30);
        assert!(small
            .skipped
            .iter()
            .any(|s| s.contains("not enough memory")));
    }
}
