//! `matrix create` and `matrix rm`.

use crate::error::CliError;
use crate::view::{foreign_reason, live_participant_pids, probe, segment_path, Probe, SegmentView};
use matrix_core::{AtomicMatrix, CreateOptions, SegmentError};

/// What `matrix create` made.
#[derive(Debug, Clone)]
pub struct Created {
    /// Segment size in bytes.
    pub size: u64,
    /// Payload bytes the first allocation could get.
    pub largest_free: u32,
}

/// Creates and formats segment `name` of `size` bytes with file `mode`.
/// The tool's own participant slot is recovered before returning, so the
/// new segment has no participants.
pub fn create(name: &str, size: u64, mode: u32) -> Result<Created, CliError> {
    if mode & !0o777 != 0 {
        return Err(CliError::Argument(format!(
            "--mode {mode:o} is not a file mode: use octal digits, e.g. 600 or 660"
        )));
    }
    let matrix = AtomicMatrix::create_with(
        name,
        size,
        &CreateOptions {
            mode,
            ..CreateOptions::default()
        },
    )?;
    let largest_free = matrix.stats()?.largest_free;
    matrix.close()?;
    Ok(Created { size, largest_free })
}

/// What `matrix rm` removed.
#[derive(Debug, Clone)]
pub struct Removed {
    /// Live participants that still had the segment mapped (only with `force`).
    pub live_participants: usize,
}

/// Removes segment `name`. Refuses a file that is not a matrix segment
/// (whatever `force` says), and one with live participants unless `force`.
/// Processes that have it mapped keep their mapping until they drop it.
pub fn remove(name: &str, force: bool) -> Result<Removed, CliError> {
    let path = segment_path(name)?;
    let not_found = || {
        CliError::Segment(SegmentError::NotFound {
            name: name.to_owned(),
        })
    };
    match probe(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
        Err(err) => {
            return Err(CliError::Io {
                op: "read segment file",
                err,
            })
        }
        Ok(Probe::Segment) => {}
        Ok(Probe::Foreign(magic)) => {
            return Err(CliError::NotASegment {
                name: name.to_owned(),
                why: format!("{}; not removed", foreign_reason(magic)),
            })
        }
        Ok(Probe::NotRegular) => {
            return Err(CliError::NotASegment {
                name: name.to_owned(),
                why: "it is not a regular file; not removed".into(),
            })
        }
    }
    let live = match SegmentView::open(name) {
        Ok(view) => {
            // Alive and unknown both refuse: only definitely dead holders
            // let the segment go without --force.
            let (pids, unknown) = live_participant_pids(&view);
            if (!pids.is_empty() || unknown > 0) && !force {
                return Err(CliError::InUse {
                    name: name.to_owned(),
                    pids,
                    unknown,
                });
            }
            pids.len() + unknown
        }
        // Ours by its magic, but unreadable (another format version, damaged
        // header): participants cannot be told, so only --force removes it.
        Err(e) if !force => {
            return Err(CliError::Argument(format!(
                "{e}; its participants cannot be checked, pass --force to remove it anyway"
            )))
        }
        Err(_) => 0,
    };
    matrix_core::unlink(name)?;
    Ok(Removed {
        live_participants: live,
    })
}
