//! bpffs at `/sys/fs/bpf`, where the agents under test pin their maps and links. A machine (or
//! container) may have `/sys` without it; the harness mounts it once, the way systemd would.

use std::{
    ffi::CString,
    fs::File,
    io,
    os::{fd::AsRawFd as _, unix::ffi::OsStrExt as _},
    path::Path,
    sync::Mutex,
};

/// Where bpffs is mounted.
pub const ROOT: &str = "/sys/fs/bpf";

/// `BPF_FS_MAGIC` from `linux/magic.h`: the `f_type` statfs reports for bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Whether `path` is on a bpffs.
pub fn is_bpffs(path: &Path) -> io::Result<bool> {
    let path = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: an all-zero statfs is a valid value to be overwritten.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `stat` is a valid, writable statfs.
    if unsafe { libc::statfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // f_type is i64 on x86_64 but u32 or i32 on other architectures.
    Ok(stat.f_type as i64 == BPF_FS_MAGIC)
}

/// Mounts bpffs at [`ROOT`] unless it is there. Tests in other processes may do the same at the
/// same moment, and a second mount on top would hide the first one's pins, so the check and
/// the mount happen under a file lock shared by every test process.
pub fn ensure_mounted() -> io::Result<()> {
    static IN_PROCESS: Mutex<()> = Mutex::new(());
    let _guard = IN_PROCESS.lock().unwrap_or_else(|e| e.into_inner());
    let root = Path::new(ROOT);
    if is_bpffs(root)? {
        return Ok(());
    }
    let lock = File::create("/run/tracking-test-bpffs.lock")?;
    // SAFETY: flock on an open descriptor; the lock is released when `lock` is closed.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if is_bpffs(root)? {
        return Ok(());
    }
    let source = c"bpf";
    let target = CString::new(ROOT)?;
    // SAFETY: all strings are NUL-terminated and outlive the call; no mount data is passed.
    let mounted = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            source.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if mounted != 0 {
        let error = io::Error::last_os_error();
        return Err(io::Error::new(
            error.kind(),
            format!("cannot mount bpffs at {ROOT}: {error}"),
        ));
    }
    eprintln!("harness: mounted bpffs at {ROOT}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temporary_directory_is_not_bpffs() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_bpffs(dir.path()).unwrap());
    }

    #[test]
    fn a_missing_path_is_an_error_not_a_no() {
        assert!(is_bpffs(Path::new("/nonexistent/bpffs")).is_err());
    }
}
