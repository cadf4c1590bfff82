//! `matrix`: inspect, check, repair and benchmark shared-memory matrix segments.
//!
//! See the crate README (or `matrix --help`) for the commands.

use clap::{Parser, Subcommand};
use matrix_cli::bench::{self, BenchOptions};
use matrix_cli::error::{CliError, EXIT_ERROR, EXIT_INCONCLUSIVE, EXIT_OK, EXIT_PROBLEMS};
use matrix_cli::fsck::{self, FsckReport};
use matrix_cli::size::{format_size, parse_size};
use matrix_cli::{inspect, manage, top, view};
use std::io::{IsTerminal, Write};

/// Inspect, check, repair and benchmark AtomicMatrix shared-memory segments in /dev/shm.
#[derive(Parser, Debug)]
#[command(name = "matrix", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the matrix segments in /dev/shm (other files are skipped)
    Ls {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Show a segment's header, space, blocks by state, participants and free-block histogram
    Stat {
        /// Segment name (the file name in /dev/shm)
        name: String,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Check a segment's invariants (exit 0 clean, 1 problems found, 2 error, 3 inconclusive)
    Fsck {
        /// Segment name
        name: String,
        /// Recover dead participants, consolidate, and rebuild the free index when no one else is attached
        #[arg(long)]
        repair: bool,
        /// With --repair: also free user-state blocks of dead participants
        #[arg(long, requires = "repair")]
        reclaim_user_states: bool,
        /// List every finding (default: the first 20 of each kind, with counts per kind)
        #[arg(long)]
        all: bool,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Remove a segment (refused while live participants hold it, unless --force)
    Rm {
        /// Segment name (not with --dead)
        #[arg(required_unless_present = "dead", conflicts_with = "dead")]
        name: Option<String>,
        /// Remove it even if live participants hold it (their mappings stay valid)
        #[arg(long)]
        force: bool,
        /// Every matrix segment with no live participant: list them (remove with --yes)
        #[arg(long, conflicts_with = "force")]
        dead: bool,
        /// With --dead: remove what was listed
        #[arg(long)]
        yes: bool,
        /// With --dead: only segments whose name starts with this
        #[arg(long, value_name = "TEXT")]
        prefix: Option<String>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Create and format a segment
    Create {
        /// Segment name: 1 to 200 of A-Z a-z 0-9 . _ - (not only dots)
        name: String,
        /// Size: a number of bytes or with a unit (B, KiB, MiB, GiB; KB, MB, GB)
        #[arg(long, short, default_value = "64MiB")]
        size: String,
        /// File mode, octal (e.g. 600, 660, 1777); set exactly, whatever the umask
        #[arg(long, default_value = "600")]
        mode: String,
        /// Group of the file (name or gid); you must belong to it, or be root
        #[arg(long)]
        group: Option<String>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Show a segment's space, allocation rate and participants, redrawn every interval
    Top {
        /// Segment name
        name: String,
        /// Seconds between frames
        #[arg(long, short, default_value_t = 1.0)]
        interval: f64,
        /// Frames to show before exiting (default: until interrupted)
        #[arg(long, short = 'n')]
        count: Option<u64>,
        /// One JSON object per frame, one per line
        #[arg(long)]
        json: bool,
    },
    /// Run the standard mixed workload (random 32-544 B, 70% alloc / 30% free) on this machine
    Bench {
        /// Worker threads
        #[arg(long, short, default_value_t = 2)]
        threads: usize,
        /// Seconds per allocator
        #[arg(long, short, default_value_t = 3.0)]
        seconds: f64,
        /// Arena size for the matrix run (default: enough for the live sets, at least 64MiB)
        #[arg(long)]
        arena: Option<String>,
        /// Skip the system-allocator baseline
        #[arg(long)]
        no_baseline: bool,
        /// Seed for the random sizes and choices
        #[arg(long, default_value_t = 0x5EED)]
        seed: u64,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, CliError> {
    serde_json::to_string_pretty(value)
        .map(|s| s + "\n")
        .map_err(|e| CliError::Io {
            op: "encode JSON",
            err: std::io::Error::other(e),
        })
}

/// Runs one command; returns the exit code and the text for stdout.
fn run(command: Command) -> Result<(i32, String), CliError> {
    match command {
        Command::Ls { json } => {
            let rows = inspect::list_segments()?;
            Ok((
                EXIT_OK,
                if json {
                    to_json(&rows)?
                } else {
                    inspect::render_ls(&rows)
                },
            ))
        }
        Command::Stat { name, json } => {
            let report = inspect::stat(&view::open(&name)?)?;
            Ok((
                EXIT_OK,
                if json {
                    to_json(&report)?
                } else {
                    inspect::render_stat(&report)
                },
            ))
        }
        Command::Fsck {
            name,
            repair,
            reclaim_user_states,
            all,
            json,
        } => {
            let limit = (!all).then_some(fsck::SHOWN_PER_KIND);
            let mut before = fsck::check(&view::open(&name)?);
            before.summarize(limit);
            let (repair, after) = if repair {
                let summary = fsck::repair(&name, reclaim_user_states, &before)?;
                let mut after = fsck::check(&view::open(&name)?);
                after.summarize(limit);
                (Some(summary), Some(after))
            } else {
                (None, None)
            };
            let last = after.as_ref().unwrap_or(&before);
            let problems = last.problems();
            let inconclusive = last.inconclusive;
            let cannot_repair = repair.as_ref().is_some_and(|r| r.cannot_repair.is_some());
            let report = FsckReport {
                name,
                clean: problems == 0 && !cannot_repair,
                problems,
                inconclusive,
                before,
                repair,
                after,
            };
            let code = if !report.clean {
                EXIT_PROBLEMS
            } else if inconclusive {
                EXIT_INCONCLUSIVE
            } else {
                EXIT_OK
            };
            Ok((
                code,
                if json {
                    to_json(&report)?
                } else {
                    fsck::render_fsck(&report)
                },
            ))
        }
        Command::Rm {
            name,
            force,
            dead,
            yes,
            prefix,
            json,
        } => {
            if prefix.is_some() && !dead {
                return Err(CliError::Argument("--prefix goes with --dead".into()));
            }
            if yes && !dead {
                return Err(CliError::Argument(
                    "--yes confirms `rm --dead`; to remove one segment, name it without --yes"
                        .into(),
                ));
            }
            if dead {
                let found = manage::remove_dead(yes, prefix.as_deref().unwrap_or(""))?;
                let failed = found.iter().any(|d| d.error.is_some());
                let code = if failed { EXIT_PROBLEMS } else { EXIT_OK };
                return Ok((
                    code,
                    if json {
                        to_json(&found)?
                    } else {
                        render_dead(&found, yes)
                    },
                ));
            }
            let name = name.unwrap_or_default();
            let removed = manage::remove(&name, force)?;
            if json {
                return Ok((EXIT_OK, to_json(&removed)?));
            }
            let note = if removed.live_participants > 0 {
                format!(
                    " ({} live participant(s) keep their mapping until they detach)",
                    removed.live_participants
                )
            } else {
                String::new()
            };
            Ok((EXIT_OK, format!("removed /dev/shm/{name}{note}\n")))
        }
        Command::Create {
            name,
            size,
            mode,
            group,
            json,
        } => {
            let bytes = parse_size(&size)?;
            let mode = manage::parse_mode(&mode)?;
            let group = group.as_deref().map(manage::parse_group).transpose()?;
            let created = manage::create(&name, bytes, mode, group)?;
            if json {
                return Ok((EXIT_OK, to_json(&created)?));
            }
            Ok((
                EXIT_OK,
                format!(
                    "created {}: {}, mode {} ({}), owner {}:{}, largest first allocation {}\n",
                    created.path,
                    format_size(created.size),
                    created.mode,
                    created.permissions,
                    created.owner,
                    created.group,
                    format_size(created.largest_free as u64)
                ),
            ))
        }
        Command::Top {
            name,
            interval,
            count,
            json,
        } => {
            if !(interval > 0.0 && interval <= 3600.0) {
                return Err(CliError::Argument(
                    "--interval must be more than 0 and at most 3600 seconds".into(),
                ));
            }
            if count == Some(0) {
                return Err(CliError::Argument("--count must be at least 1".into()));
            }
            top::top(
                &name,
                std::time::Duration::from_secs_f64(interval),
                count,
                json,
            )?;
            Ok((EXIT_OK, String::new()))
        }
        Command::Bench {
            threads,
            seconds,
            arena,
            no_baseline,
            seed,
            json,
        } => {
            let arena_bytes = arena.as_deref().map(parse_size).transpose()?;
            let options = BenchOptions {
                threads,
                seconds,
                arena_bytes,
                baseline: !no_baseline,
                seed,
                progress: !json && std::io::stderr().is_terminal(),
            };
            let report = bench::bench(&options)?;
            Ok((
                EXIT_OK,
                if json {
                    to_json(&report)?
                } else {
                    bench::render_bench(&report)
                },
            ))
        }
    }
}

/// `matrix rm --dead` as text.
fn render_dead(found: &[manage::DeadSegment], yes: bool) -> String {
    if found.is_empty() {
        return "no matrix segment without live participants\n".into();
    }
    let mut out = String::new();
    for d in found {
        let what = format!(
            "/dev/shm/{} ({}, {} dead participant(s))",
            d.name,
            format_size(d.size_bytes),
            d.dead_participants
        );
        let line = match (&d.error, d.removed) {
            (Some(e), _) => format!("not removed {what}: {e}"),
            (None, true) => format!("removed {what}"),
            (None, false) => format!("would remove {what}"),
        };
        out.push_str(&line);
        out.push('\n');
    }
    if !yes {
        out.push_str("(nothing removed; pass --yes to remove these)\n");
    }
    out
}

/// Whether the command line asks for JSON output.
fn wants_json() -> bool {
    std::env::args_os().skip(1).any(|a| a == "--json")
}

/// An error as one line of JSON on stdout: `{"error": ..., "exit_code": ...}`.
fn json_error(message: &str, code: i32) {
    let value = serde_json::json!({ "error": message, "exit_code": code });
    println!("{value}");
}

/// Clap's error as one line: the message lines before the usage, joined.
fn one_line(err: &clap::Error) -> String {
    let rendered = err.render().to_string();
    let message: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:"))
        .filter(|l| !l.is_empty())
        .collect();
    format!("{} (see `matrix --help`)", message.join(" "))
}

fn main() {
    // SAFETY: restoring the default disposition of SIGPIPE before any thread
    // starts, so `matrix ls | head` ends quietly like other Unix tools
    // instead of failing a write.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("error: internal error: {message}{at}; please report it");
        std::process::exit(EXIT_ERROR);
    }));

    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            let _ = e.print();
            std::process::exit(EXIT_OK);
        }
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            std::process::exit(EXIT_ERROR);
        }
        Err(e) => {
            let line = one_line(&e);
            if wants_json() {
                json_error(line.trim_start_matches("error: "), EXIT_ERROR);
            }
            eprintln!("{line}");
            std::process::exit(EXIT_ERROR);
        }
    };
    match run(cli.command) {
        Ok((code, text)) => {
            let mut out = std::io::stdout().lock();
            if out
                .write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .is_err()
            {
                std::process::exit(EXIT_ERROR);
            }
            std::process::exit(code);
        }
        Err(e) => {
            if wants_json() {
                json_error(&e.to_string(), e.exit_code());
            }
            eprintln!("error: {e}");
            std::process::exit(e.exit_code());
        }
    }
}
