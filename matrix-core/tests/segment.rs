//! Segment life: create, open, validation errors, unlink.

mod common;

use common::SegmentGuard;
use matrix_core::layout::{layout_fingerprint, FORMAT_VERSION, MAGIC, MIN_SEGMENT_SIZE};
use matrix_core::{AtomicMatrix, SegmentError};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;

fn write_at(path: &std::path::Path, offset: u64, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
}

#[test]
fn create_open_unlink_round_trip() {
    let g = SegmentGuard::new("roundtrip");
    let a = AtomicMatrix::create(g.as_str(), 1 << 20).unwrap();
    let mode = std::fs::metadata(g.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let p = a.allocate(100, 0).unwrap();
    let b = AtomicMatrix::open(g.as_str()).unwrap();
    assert_eq!(b.segment_size(), 1 << 20);
    assert_eq!(b.stats().unwrap().used_blocks, 1);
    b.free(p.offset() - 32, None).unwrap();
    assert_eq!(a.stats().unwrap().used_blocks, 0);
    matrix_core::unlink(g.as_str()).unwrap();
    assert_eq!(
        AtomicMatrix::open(g.as_str()).err(),
        Some(SegmentError::NotFound {
            name: g.as_str().into()
        })
    );
    assert_eq!(
        matrix_core::unlink(g.as_str()),
        Err(SegmentError::NotFound {
            name: g.as_str().into()
        })
    );
}

#[test]
fn bad_names_are_refused() {
    for name in ["a/b", "..", "", &"n".repeat(300)] {
        assert!(
            matches!(
                AtomicMatrix::create(name, 1 << 20),
                Err(SegmentError::InvalidName { .. })
            ),
            "{name:?}"
        );
        assert!(matches!(
            AtomicMatrix::open(name),
            Err(SegmentError::InvalidName { .. })
        ));
    }
}

#[test]
fn bad_sizes_are_refused() {
    let g = SegmentGuard::new("sizes");
    assert!(matches!(
        AtomicMatrix::create(g.as_str(), 0),
        Err(SegmentError::SizeTooSmall { requested: 0, .. })
    ));
    assert!(matches!(
        AtomicMatrix::create(g.as_str(), MIN_SEGMENT_SIZE - 1),
        Err(SegmentError::SizeTooSmall { .. })
    ));
    assert!(matches!(
        AtomicMatrix::create(g.as_str(), 1 << 32),
        Err(SegmentError::SizeTooLarge {
            requested: 4294967296,
            maximum: 4294967295
        })
    ));
    assert!(matches!(
        AtomicMatrix::anonymous(10),
        Err(SegmentError::SizeTooSmall { .. })
    ));
    assert!(!g.path().exists(), "a refused create leaves no file");
}

#[test]
fn create_is_exclusive() {
    let g = SegmentGuard::new("exclusive");
    let _a = AtomicMatrix::create(g.as_str(), 1 << 20).unwrap();
    assert_eq!(
        AtomicMatrix::create(g.as_str(), 1 << 20).err(),
        Some(SegmentError::AlreadyExists {
            name: g.as_str().into()
        })
    );
}

#[test]
fn create_does_not_follow_symlinks() {
    let g = SegmentGuard::new("symlink");
    let target = std::env::temp_dir().join(format!("matrix-symlink-target-{}", std::process::id()));
    std::os::unix::fs::symlink(&target, g.path()).unwrap();
    assert!(AtomicMatrix::create(g.as_str(), 1 << 20).is_err());
    assert!(AtomicMatrix::open(g.as_str()).is_err());
    assert!(!target.exists());
}

#[test]
fn open_validates_every_header_field() {
    let g = SegmentGuard::new("validate");
    drop(AtomicMatrix::create(g.as_str(), 1 << 20).unwrap());
    let original = std::fs::read(g.path()).unwrap();
    let restore = || std::fs::write(g.path(), &original).unwrap();

    write_at(&g.path(), 0, &0xDEAD_BEEFu64.to_le_bytes());
    assert_eq!(
        AtomicMatrix::open(g.as_str()).err(),
        Some(SegmentError::WrongMagic {
            expected: MAGIC,
            found: 0xDEAD_BEEF
        })
    );
    restore();

    write_at(&g.path(), 8, &(FORMAT_VERSION + 1).to_le_bytes());
    assert_eq!(
        AtomicMatrix::open(g.as_str()).err(),
        Some(SegmentError::WrongVersion {
            expected: FORMAT_VERSION,
            found: FORMAT_VERSION + 1
        })
    );
    restore();

    write_at(&g.path(), 16, &7u64.to_le_bytes());
    assert_eq!(
        AtomicMatrix::open(g.as_str()).err(),
        Some(SegmentError::WrongFingerprint {
            expected: layout_fingerprint(),
            found: 7
        })
    );
    restore();

    // File grown behind the header's back: recorded size differs.
    std::fs::OpenOptions::new()
        .write(true)
        .open(g.path())
        .unwrap()
        .set_len((1 << 20) + 4096)
        .unwrap();
    assert_eq!(
        AtomicMatrix::open(g.as_str()).err(),
        Some(SegmentError::SizeMismatch {
            recorded: 1 << 20,
            actual: (1 << 20) + 4096
        })
    );
    // Open never resizes.
    assert_eq!(std::fs::metadata(g.path()).unwrap().len(), (1 << 20) + 4096);
    restore();
    std::fs::OpenOptions::new()
        .write(true)
        .open(g.path())
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    AtomicMatrix::open(g.as_str()).unwrap();
}

#[test]
fn foreign_and_tiny_files_are_not_segments() {
    let g = SegmentGuard::new("foreign");
    std::fs::write(g.path(), b"hello").unwrap();
    assert!(matches!(
        AtomicMatrix::open(g.as_str()),
        Err(SegmentError::TooSmallForHeader { file_size: 5, .. })
    ));
    std::fs::write(g.path(), vec![0xAB; MIN_SEGMENT_SIZE as usize + 100]).unwrap();
    assert!(matches!(
        AtomicMatrix::open(g.as_str()),
        Err(SegmentError::WrongMagic { .. })
    ));
    // Nothing was written to the foreign file.
    assert!(std::fs::read(g.path()).unwrap().iter().all(|&b| b == 0xAB));
}

#[test]
fn dead_formatter_is_detected_and_reformat_recovers() {
    let g = SegmentGuard::new("formatter");
    drop(AtomicMatrix::create(g.as_str(), 1 << 20).unwrap());
    // Simulate a creator that died mid-format: state FORMATTING, pid of a reaped child.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = child.id();
    child.wait().unwrap();
    write_at(&g.path(), 12, &1u32.to_le_bytes()); // init_state = FORMATTING
    let pid_offset = std::mem::offset_of!(matrix_core::SegmentHeader, formatter_pid) as u64;
    write_at(&g.path(), pid_offset, &dead_pid.to_le_bytes());
    assert_eq!(
        AtomicMatrix::open(g.as_str()).err(),
        Some(SegmentError::FormatterDied { pid: dead_pid })
    );
    let m = AtomicMatrix::reformat_abandoned(g.as_str()).unwrap();
    m.allocate(64, 0).unwrap();
    drop(m);
    AtomicMatrix::open(g.as_str()).unwrap();
    // A ready segment is not "abandoned".
    assert!(AtomicMatrix::reformat_abandoned(g.as_str()).is_err());
}

#[test]
fn observers_look_without_participating() {
    use matrix_core::Observer;
    let g = SegmentGuard::new("observer");
    let m = AtomicMatrix::create(g.as_str(), 1 << 20).unwrap();
    let p = m.allocate(1000, 0).unwrap();
    let o = Observer::open(g.as_str()).unwrap();
    assert_eq!(o.participants().len(), 1, "the observer took no slot");
    assert_eq!(o.stats().unwrap(), m.stats().unwrap());
    assert_eq!(o.blocks().count(), 1);
    // Its view follows the live segment.
    m.free(p.offset() - 32, None).unwrap();
    m.consolidate().unwrap();
    assert_eq!(o.stats().unwrap().used_bytes, 0);
    drop(o);
    assert_eq!(m.participants().len(), 1);
    // Foreign and missing files are refused the same way as by open.
    std::fs::write(g.path().with_extension("x"), b"nope").unwrap();
    let foreign = format!("{}.x", g.as_str());
    assert!(matches!(
        Observer::open(&foreign),
        Err(SegmentError::TooSmallForHeader { .. })
    ));
    std::fs::remove_file(g.path().with_extension("x")).unwrap();
    assert!(matches!(
        Observer::open("no-such-segment-here"),
        Err(SegmentError::NotFound { .. })
    ));
}

#[test]
fn a_directory_under_the_name_is_not_a_segment() {
    let g = SegmentGuard::new("dir");
    std::fs::create_dir(g.path()).unwrap();
    let r = AtomicMatrix::open(g.as_str());
    std::fs::remove_dir(g.path()).unwrap();
    assert!(r.is_err());
}

#[test]
fn every_format_chooses_a_fresh_nonzero_nonce() {
    use std::sync::atomic::Ordering::Acquire;
    let g = SegmentGuard::new("nonce");
    let named = AtomicMatrix::create(g.as_str(), 1 << 16).unwrap();
    // Acquire: pairs with the formatter's Release of READY, after which the
    // nonce never changes.
    let nonce = named.header().nonce.load(Acquire);
    let reopened = AtomicMatrix::open(g.as_str()).unwrap();
    assert_eq!(
        reopened.header().nonce.load(Acquire),
        nonce,
        "open keeps it"
    );
    let mut seen = std::collections::HashSet::from([nonce]);
    for _ in 0..8 {
        let anon = AtomicMatrix::anonymous(1 << 16).unwrap();
        assert!(seen.insert(anon.header().nonce.load(Acquire)));
    }
    assert!(!seen.contains(&0), "0 is never a nonce");
}

#[test]
fn leftovers_of_a_killed_process_are_removed_by_pid() {
    use matrix_core::ScratchName;
    // A child that makes a scratch segment and is killed before its guard
    // runs: the file stays until someone removes the child's leftovers.
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let pid = child.id();
    let name = format!("matrix-scratch-{pid}-0-killed");
    let path = std::path::Path::new("/dev/shm").join(&name);
    std::fs::write(&path, b"left behind").unwrap();
    let other = ScratchName::new("kept");
    std::fs::write(other.path(), b"ours").unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(ScratchName::remove_leftovers_of(pid), 1);
    assert!(!path.exists());
    assert!(
        other.path().exists(),
        "another process's scratch files stay"
    );
    assert_eq!(ScratchName::remove_leftovers_of(pid), 0);
}
