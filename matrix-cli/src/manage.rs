//! `matrix create` and `matrix rm`.

use crate::error::CliError;
use crate::view::{foreign_reason, live_participant_pids, probe, segment_path, Probe, SegmentView};
use matrix_core::{AtomicMatrix, CreateOptions, SegmentError};
use serde::Serialize;
use std::os::unix::fs::MetadataExt;

/// What `matrix create` made.
#[derive(Debug, Clone, Serialize)]
pub struct Created {
    /// Segment name.
    pub name: String,
    /// Its path.
    pub path: String,
    /// Segment size in bytes.
    pub size: u64,
    /// Payload bytes the first allocation could get.
    pub largest_free: u32,
    /// The file's mode as created (octal digits, e.g. `0660`).
    pub mode: String,
    /// The same as `ls -l` shows it.
    pub permissions: String,
    /// Owner (user name, or uid).
    pub owner: String,
    /// Group (group name, or gid).
    pub group: String,
}

/// Parses `--mode`: octal, up to four digits (`600`, `0660`, `1777`).
pub fn parse_mode(text: &str) -> Result<u32, CliError> {
    let bad = |why: &str| CliError::Argument(format!("--mode {text:?} {why}"));
    if text.is_empty() || !text.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(bad(
            "is not an octal file mode (write e.g. 600, 660 or 1777)",
        ));
    }
    let mode = u32::from_str_radix(text, 8).map_err(|_| bad("is too large"))?;
    if mode & !0o7777 != 0 {
        return Err(bad(
            "has bits outside 7777: give permission bits, with setuid / setgid / sticky at most",
        ));
    }
    Ok(mode)
}

/// Parses `--group`: a group name or a numeric gid.
pub fn parse_group(text: &str) -> Result<u32, CliError> {
    crate::users::group_id(text)
        .ok_or_else(|| CliError::Argument(format!("--group {text:?}: no such group")))
}

/// Creates and formats segment `name` of `size` bytes with file `mode`
/// (exactly; the umask plays no part) and, if given, group `group`. The
/// tool's own participant slot is emptied before returning, so the new
/// segment has no participants.
pub fn create(name: &str, size: u64, mode: u32, group: Option<u32>) -> Result<Created, CliError> {
    let path = segment_path(name)?;
    match probe(&path) {
        Ok(Probe::Foreign(magic)) => {
            return Err(CliError::NotASegment {
                name: name.to_owned(),
                why: format!(
                    "{}; it is not ours to remove, so pick another name (or remove it with rm(1) if you know whose it is)",
                    foreign_reason(magic)
                ),
            })
        }
        Ok(Probe::NotRegular) => {
            return Err(CliError::NotASegment {
                name: name.to_owned(),
                why: "it is not a regular file; pick another name".into(),
            })
        }
        _ => {}
    }
    // `..default()` so that options added later keep their defaults.
    #[allow(clippy::needless_update)]
    let options = CreateOptions {
        mode,
        group,
        ..CreateOptions::default()
    };
    let matrix = AtomicMatrix::create_with(name, size, &options)?;
    let largest_free = matrix.stats()?.largest_free;
    matrix.close()?;
    let meta = std::fs::metadata(&path).map_err(|err| CliError::Io {
        op: "stat the new segment",
        err,
    })?;
    let real = meta.mode() & 0o7777;
    Ok(Created {
        name: name.to_owned(),
        path: path.display().to_string(),
        size,
        largest_free,
        mode: format!("{real:04o}"),
        permissions: crate::users::mode_text(real),
        owner: crate::users::user_name(meta.uid()),
        group: crate::users::group_name(meta.gid()),
    })
}

/// What `matrix rm` removed.
#[derive(Debug, Clone, Serialize)]
pub struct Removed {
    /// Segment name.
    pub name: String,
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
    if let Err(e) = matrix_core::unlink(name) {
        if let SegmentError::Io {
            kind: std::io::ErrorKind::PermissionDenied,
            ..
        } = e
        {
            let owner = std::fs::symlink_metadata(&path)
                .map(|m| crate::users::user_name(m.uid()))
                .unwrap_or_else(|_| "its owner".into());
            return Err(CliError::Denied(format!(
                "not permitted to remove /dev/shm/{name}: /dev/shm is sticky, so only the file's owner ({owner}) or root may remove it"
            )));
        }
        return Err(e.into());
    }
    Ok(Removed {
        name: name.to_owned(),
        live_participants: live,
    })
}

/// One segment `matrix rm --dead` found with no live participant.
#[derive(Debug, Clone, Serialize)]
pub struct DeadSegment {
    /// Segment name.
    pub name: String,
    /// File size in bytes.
    pub size_bytes: u64,
    /// Participant slots still taken by dead or detached holders.
    pub dead_participants: usize,
    /// Whether it was removed (only with `--yes`).
    pub removed: bool,
    /// Why it could not be removed, if it could not.
    pub error: Option<String>,
}

/// `matrix rm --dead`: every matrix segment in `/dev/shm` whose name starts
/// with `prefix`, with no live participant and none of unknown liveness;
/// removed only if `yes`.
/// Segments that cannot be read (permission, damage, still formatting)
/// are left alone: their participants cannot be told.
pub fn remove_dead(yes: bool, prefix: &str) -> Result<Vec<DeadSegment>, CliError> {
    let mut out = Vec::new();
    for row in crate::inspect::list_segments()? {
        if !row.name.starts_with(prefix) {
            continue;
        }
        if row.participants_alive != Some(0) || row.participants_unknown != Some(0) {
            continue;
        }
        let mut entry = DeadSegment {
            name: row.name.clone(),
            size_bytes: row.size_bytes,
            dead_participants: row.participants_dead.unwrap_or(0),
            removed: false,
            error: None,
        };
        if yes {
            // `remove` checks again, just before unlinking: a participant
            // that attached since the listing keeps the segment.
            match remove(&row.name, false) {
                Ok(_) => entry.removed = true,
                Err(e) => entry.error = Some(e.to_string()),
            }
        }
        out.push(entry);
    }
    Ok(out)
}
