//! Segment names.

use crate::error::SegmentError;

/// Longest accepted segment name.
pub const MAX_NAME_LEN: usize = 200;

/// Checks that `name` is `[A-Za-z0-9._-]{1,200}` and not only dots, so it
/// names exactly one file directly inside `/dev/shm`.
pub fn validate_name(name: &str) -> Result<(), SegmentError> {
    let bad = |reason| {
        Err(SegmentError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("it is longer than 200 bytes");
    }
    if name == "." || name == ".." {
        return bad("it names a directory");
    }
    if name.bytes().all(|b| b == b'.') {
        return bad("it is only dots, which reads as a path, not a name");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-".contains(*c)))
    {
        return if c == '/' {
            bad("it contains '/'")
        } else {
            bad("it contains a character outside A-Z a-z 0-9 . _ -")
        };
    }
    Ok(())
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        for name in ["a", "orders.v2", "md-feed_01", &"x".repeat(200)] {
            validate_name(name).unwrap();
        }
    }

    #[test]
    fn rejects_bad_names() {
        for name in [
            "",
            "a/b",
            "..",
            ".",
            "...",
            "/abs",
            "sp ace",
            "é",
            "nul\0",
            &"x".repeat(201),
            &"y".repeat(300),
        ] {
            assert!(
                matches!(validate_name(name), Err(SegmentError::InvalidName { .. })),
                "{name:?} accepted"
            );
        }
    }
}
