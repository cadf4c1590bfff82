//! User and group names for display and for `--group`, from the system's
//! databases (`getpwuid_r`, `getgrgid_r`, `getgrnam_r`).

use std::ffi::{CStr, CString};

/// Buffer for one database entry; retried larger on `ERANGE`.
const START_BUFFER: usize = 1024;
/// Largest buffer tried before giving up on an entry.
const MAX_BUFFER: usize = 1 << 20;

/// The name of user `uid`, or the number when it has none.
pub fn user_name(uid: u32) -> String {
    let mut buf = vec![0u8; START_BUFFER];
    loop {
        // SAFETY: `passwd` is plain old data, valid zeroed.
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call: `entry` and `found`
        // live across it, `buf` is `buf.len()` writable bytes.
        let rc = unsafe {
            libc::getpwuid_r(
                uid,
                &mut entry,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut found,
            )
        };
        if rc == libc::ERANGE && buf.len() < MAX_BUFFER {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 || found.is_null() || entry.pw_name.is_null() {
            return uid.to_string();
        }
        // SAFETY: on success `pw_name` points at a NUL-terminated string in `buf`.
        return unsafe { CStr::from_ptr(entry.pw_name) }
            .to_string_lossy()
            .into_owned();
    }
}

/// The name of group `gid`, or the number when it has none.
pub fn group_name(gid: u32) -> String {
    lookup_group(|entry, buf, found| {
        // SAFETY: as in `lookup_group`: valid pointers for the call.
        unsafe { libc::getgrgid_r(gid, entry, buf.as_mut_ptr().cast(), buf.len(), found) }
    })
    .map_or_else(|| gid.to_string(), |(name, _)| name)
}

/// The id of group `name` (a name, or a number).
pub fn group_id(name: &str) -> Option<u32> {
    if let Ok(gid) = name.parse::<u32>() {
        return Some(gid);
    }
    let cname = CString::new(name).ok()?;
    lookup_group(|entry, buf, found| {
        // SAFETY: as in `lookup_group`; `cname` is NUL-terminated and lives across the call.
        unsafe {
            libc::getgrnam_r(
                cname.as_ptr(),
                entry,
                buf.as_mut_ptr().cast(),
                buf.len(),
                found,
            )
        }
    })
    .map(|(_, gid)| gid)
}

fn lookup_group(
    call: impl Fn(&mut libc::group, &mut Vec<u8>, &mut *mut libc::group) -> libc::c_int,
) -> Option<(String, u32)> {
    let mut buf = vec![0u8; START_BUFFER];
    loop {
        // SAFETY: `group` is plain old data, valid zeroed.
        let mut entry: libc::group = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::group = std::ptr::null_mut();
        let rc = call(&mut entry, &mut buf, &mut found);
        if rc == libc::ERANGE && buf.len() < MAX_BUFFER {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 || found.is_null() || entry.gr_name.is_null() {
            return None;
        }
        // SAFETY: on success `gr_name` points at a NUL-terminated string in `buf`.
        let name = unsafe { CStr::from_ptr(entry.gr_name) }
            .to_string_lossy()
            .into_owned();
        return Some((name, entry.gr_gid));
    }
}

/// `rwxr-x---`-style text for the permission bits of `mode`, with the
/// setuid, setgid and sticky bits shown as `ls -l` shows them.
pub fn mode_text(mode: u32) -> String {
    let mut out = String::with_capacity(9);
    for (shift, special, set, unset) in [
        (6, 0o4000, 's', 'S'),
        (3, 0o2000, 's', 'S'),
        (0, 0o1000, 't', 'T'),
    ] {
        let bits = (mode >> shift) & 7;
        out.push(if bits & 4 != 0 { 'r' } else { '-' });
        out.push(if bits & 2 != 0 { 'w' } else { '-' });
        out.push(match (bits & 1 != 0, mode & special != 0) {
            (true, true) => set,
            (false, true) => unset,
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_like_ls() {
        assert_eq!(mode_text(0o600), "rw-------");
        assert_eq!(mode_text(0o660), "rw-rw----");
        assert_eq!(mode_text(0o1777), "rwxrwxrwt");
        assert_eq!(mode_text(0o1666), "rw-rw-rwT");
        assert_eq!(mode_text(0o2660), "rw-rwS---");
    }

    #[test]
    fn root_is_known_by_name_and_number() {
        assert_eq!(user_name(0), "root");
        assert_eq!(group_name(0), "root");
        assert_eq!(group_id("root"), Some(0));
        assert_eq!(group_id("0"), Some(0));
        assert_eq!(group_id("no-such-group-here"), None);
    }
}
