//! Image locking compatible with QEMU's file-posix driver, so that `oxvirt img` and a running
//! QEMU exclude each other.
//!
//! QEMU describes what an opener does with a file as a set of permissions (bit 0 consistent read,
//! bit 1 write, bit 2 write-unchanged, bit 3 resize). It takes an open-file-description (OFD)
//! shared lock on byte `100 + bit` for each permission it holds, and on byte `200 + bit` for each
//! permission it does not allow others to hold. Before using a permission it tests whether
//! anybody else locks `200 + bit` (they forbid it), and for every permission it forbids it tests
//! whether anybody else locks `100 + bit` (they hold it). We implement the same protocol
//! (observed: a running writable QEMU 7.2 guest holds bytes 100, 101, 103, 201 and 203).

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{ImageError, Result};

const PERM_BASE: i64 = 100;
const SHARED_BASE: i64 = 200;

const PERM_CONSISTENT_READ: u32 = 1 << 0;
const PERM_WRITE: u32 = 1 << 1;
const PERM_RESIZE: u32 = 1 << 3;
const PERM_BITS: u32 = 4;

fn perm_name(bit: u32) -> &'static str {
    match bit {
        0 => "consistent read",
        1 => "write",
        2 => "write unchanged",
        _ => "resize",
    }
}

/// How the image will be used, mapped onto QEMU permissions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    /// Reading: holds "consistent read", forbids others "write" and "resize" (like `qemu-img info`).
    Read,
    /// Writing: holds "consistent read", "write" and "resize", forbids others "write" and "resize".
    Write,
}

impl LockMode {
    fn held(self) -> u32 {
        match self {
            LockMode::Read => PERM_CONSISTENT_READ,
            LockMode::Write => PERM_CONSISTENT_READ | PERM_WRITE | PERM_RESIZE,
        }
    }
    fn forbidden(self) -> u32 {
        PERM_WRITE | PERM_RESIZE
    }
}

fn ofd_lock(
    file: &File,
    cmd: libc::c_int,
    kind: libc::c_int,
    byte: i64,
) -> std::io::Result<libc::flock> {
    ofd_lock_range(file, cmd, kind, byte, 1)
}

fn ofd_lock_range(
    file: &File,
    cmd: libc::c_int,
    kind: libc::c_int,
    start: i64,
    len: i64,
) -> std::io::Result<libc::flock> {
    // SAFETY: flock is a plain C struct; all-zero is a valid value that we then fill in.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start;
    fl.l_len = len;
    // OFD locks require l_pid to be 0.
    fl.l_pid = 0;
    // SAFETY: the fd is valid for the life of `file`, and `fl` is a valid flock the kernel may
    // read and (for F_OFD_GETLK) write.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), cmd, &mut fl as *mut libc::flock) };
    if rc == -1 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(fl)
    }
}

/// True if another open file description holds any lock on `byte`.
fn locked_by_others(file: &File, byte: i64) -> std::io::Result<bool> {
    let fl = ofd_lock(file, libc::F_OFD_GETLK, libc::F_WRLCK, byte)?;
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

/// Drops every lock [`lock_image`] took on `file` (bytes 100 to 299 of its open file
/// description), keeping the file open: how a live migration's source hands an image over to
/// the destination's process without closing it (QEMU inactivates its block nodes for the same).
pub fn unlock_image(file: &File, path: &Path) -> Result<()> {
    ofd_lock_range(
        file,
        libc::F_OFD_SETLK,
        libc::F_UNLCK,
        PERM_BASE,
        SHARED_BASE + PERM_BITS as i64 - PERM_BASE,
    )
    .map(drop)
    .map_err(|e| ImageError::io(path, e))
}

/// How long a conflicting lock may take to go away before it is reported. A lock another open
/// file description holds is normally another process's, and stays. But in a multi-threaded
/// process (oxvirtd, a test harness) a thread that starts a program forks a child holding a copy
/// of every descriptor until its exec closes those marked close-on-exec: an image this process
/// closed a moment ago can still be locked through that child for as long as it takes to be
/// scheduled and exec (milliseconds on a loaded machine). CI saw exactly that: an image closed
/// and opened again at once, refused as locked while another test thread spawned qemu-img.
const TRANSIENT_CONFLICT: Duration = Duration::from_millis(500);

/// Takes QEMU-compatible locks on `file` for `mode`, or reports the conflicting permission (one
/// that is still there after [`TRANSIENT_CONFLICT`]). The locks live as long as the file
/// description (they go away when `file` is closed).
pub fn lock_image(file: &File, path: &Path, mode: LockMode) -> Result<()> {
    let io = |e| ImageError::io(path, e);
    for bit in 0..PERM_BITS {
        if mode.held() & (1 << bit) != 0 {
            ofd_lock(
                file,
                libc::F_OFD_SETLK,
                libc::F_RDLCK,
                PERM_BASE + bit as i64,
            )
            .map_err(io)?;
        }
        if mode.forbidden() & (1 << bit) != 0 {
            ofd_lock(
                file,
                libc::F_OFD_SETLK,
                libc::F_RDLCK,
                SHARED_BASE + bit as i64,
            )
            .map_err(io)?;
        }
    }
    let deadline = Instant::now() + TRANSIENT_CONFLICT;
    loop {
        let Some((conflict, bit)) = conflict(file, mode).map_err(io)? else {
            return Ok(());
        };
        if Instant::now() >= deadline {
            return Err(ImageError::Locked {
                path: path.to_path_buf(),
                mode: conflict,
                perm: perm_name(bit),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The first permission another opener of the file stands against, if any: ("exclusive", bit)
/// when it forbids one `mode` holds, ("shared", bit) when it holds one `mode` forbids.
fn conflict(file: &File, mode: LockMode) -> std::io::Result<Option<(&'static str, u32)>> {
    for bit in 0..PERM_BITS {
        if mode.held() & (1 << bit) != 0 && locked_by_others(file, SHARED_BASE + bit as i64)? {
            return Ok(Some(("exclusive", bit)));
        }
        if mode.forbidden() & (1 << bit) != 0 && locked_by_others(file, PERM_BASE + bit as i64)? {
            return Ok(Some(("shared", bit)));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(path: &Path) -> File {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap()
    }

    /// A second open file description stands for the other opener: a process, or a child
    /// forked by another thread that has not exec'd yet.
    #[test]
    fn a_conflict_that_goes_at_once_is_waited_for_and_one_that_stays_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        std::fs::write(&path, b"").unwrap();
        let other = open(&path);
        lock_image(&other, &path, LockMode::Write).unwrap();

        let started = Instant::now();
        let err = lock_image(&open(&path), &path, LockMode::Write).unwrap_err();
        assert!(
            matches!(
                err,
                ImageError::Locked {
                    mode: "exclusive",
                    perm: "write",
                    ..
                }
            ),
            "{err}"
        );
        assert!(started.elapsed() >= TRANSIENT_CONFLICT, "reported at once");

        let ours = open(&path);
        let goes = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(other);
        });
        lock_image(&ours, &path, LockMode::Write).unwrap();
        goes.join().unwrap();
        // And now ours stands against the next writer.
        assert!(lock_image(&open(&path), &path, LockMode::Write).is_err());
    }
}
