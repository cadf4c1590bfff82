//! One contender × one workload, in this process: what `--single` runs,
//! whether started by hand, by `callgrind.sh`, or by the parent run.
//!
//! The result goes to stdout as one line, `RESULT_TAG` followed by the
//! [`Outcome`] in JSON. A failure (out of memory, a refused free, a
//! verification mismatch) prints `FAILURE_TAG` and a message, then exits
//! with [`FAILURE_EXIT`] at once, so that a panicking thread cannot leave
//! its partner spinning on a queue forever.

use crate::contenders::mimalloc::Mimalloc;
use crate::contenders::ours::Ours;
use crate::contenders::peer::Peer;
use crate::contenders::system::System;
use crate::contenders::tlsf::{RlsfLocal, RlsfMutex};
use crate::contenders::Contender;
use crate::touch::Touch;
use crate::workload::{run_local, run_shared, Outcome, Spec};
use std::io::Write;

/// Prefix of the result line.
pub const RESULT_TAG: &str = "MATRIX-BENCH-RESULT ";
/// Prefix of the failure line.
pub const FAILURE_TAG: &str = "MATRIX-BENCH-FAILED ";
/// Exit status of a run that failed without crashing.
pub const FAILURE_EXIT: i32 = 3;

/// Runs `spec` on `contender` and prints the result line.
///
/// `shm_name` names the segment of the two shared-memory contenders; the
/// parent removes `/dev/shm/<shm_name>` and `/dev/shm/matrix-<shm_name>`
/// after the child exits, whatever the way.
pub fn run(contender: Contender, spec: &Spec, verify: bool, shm_name: &str) -> Outcome {
    install_failure_hook();
    if spec.threads > 1 && !contender.thread_safe() {
        panic!(
            "{} is not thread-safe; {} needs {} threads",
            contender.key(),
            spec.kind.key(),
            spec.threads
        );
    }
    let touch = Touch::new(verify);
    let arena = usize::try_from(spec.arena).expect("arena size fits usize");
    let outcome = match contender {
        Contender::Ours => {
            let ours = Ours::create(shm_name, spec.arena);
            ours.attach_helpers(spec.processes.saturating_sub(1));
            crash_if_asked(contender);
            run_shared(&ours, spec, touch)
        }
        Contender::Rlsf => {
            let rlsf = RlsfLocal::new(arena);
            crash_if_asked(contender);
            run_local(&rlsf, spec, touch)
        }
        Contender::RlsfMutex => {
            let rlsf = RlsfMutex::new(arena);
            crash_if_asked(contender);
            run_shared(&rlsf, spec, touch)
        }
        Contender::System => {
            crash_if_asked(contender);
            run_shared(&System, spec, touch)
        }
        Contender::Mimalloc => {
            crash_if_asked(contender);
            run_shared(&Mimalloc, spec, touch)
        }
        Contender::Peer => {
            let peer = Peer::create(shm_name, arena);
            crash_if_asked(contender);
            run_shared(&peer, spec, touch)
        }
    };
    let json = serde_json::to_string(&outcome).expect("an Outcome serializes");
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{RESULT_TAG}{json}");
    let _ = out.flush();
    outcome
}

/// Environment variable naming a contender whose runs die of SIGSEGV right
/// after their allocator is set up: how the tests check that a crash is
/// reported, and that the crashed run's segment is removed.
pub const CRASH_ENV: &str = "MATRIX_BENCH_CRASH";

fn crash_if_asked(contender: Contender) {
    if std::env::var(CRASH_ENV).is_ok_and(|v| v == contender.key()) {
        // SAFETY: restoring the default action has no memory-safety
        // preconditions (std's handler only serves stack overflows, and a
        // raised signal would return from it without ending the process).
        unsafe { libc::signal(libc::SIGSEGV, libc::SIG_DFL) };
        // SAFETY: with the default action, SIGSEGV ends the process here.
        unsafe { libc::raise(libc::SIGSEGV) };
    }
}

/// Reports a panic on stdout, where the parent reads it, and exits.
fn install_failure_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = match (
            info.payload().downcast_ref::<&str>(),
            info.payload().downcast_ref::<String>(),
        ) {
            (Some(s), _) => (*s).to_owned(),
            (_, Some(s)) => s.clone(),
            _ => "panic".to_owned(),
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{FAILURE_TAG}{}", message.replace('\n', " "));
        let _ = out.flush();
        default(info);
        std::process::exit(FAILURE_EXIT);
    }));
}
