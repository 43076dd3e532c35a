//! The one place where this crate opens a path as an image file.
//!
//! A path named by an image header (a backing file) is chosen by whoever wrote the image, and
//! a guest writes its own disks. Opening such a path must never block, and nothing but a
//! regular file or a block device may be read as a disk: opening a FIFO for reading waits for a
//! writer that never comes, a character device such as /dev/zero or /dev/tty reads forever (and
//! a terminal could become our controlling terminal), and all of them would keep the locks of
//! the images opened before them. So every open here uses `O_NONBLOCK | O_NOCTTY`, looks at
//! what it got with `fstat` before reading anything, refuses anything else with
//! [`ImageError::NotAnImage`], and only then makes the descriptor blocking again.

use std::fs::{self, File};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

use crate::error::{ImageError, Result};
use crate::lock::{lock_image, LockMode};

/// What a path turned out to be, when that is not something a disk image can live in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Fifo,
    CharDevice,
    Socket,
    Directory,
    /// Anything else the kernel may report.
    Other,
}

impl std::fmt::Display for FileKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FileKind::Fifo => "a FIFO (named pipe)",
            FileKind::CharDevice => "a character device",
            FileKind::Socket => "a socket",
            FileKind::Directory => "a directory",
            FileKind::Other => "neither a regular file nor a block device",
        })
    }
}

/// How an image file is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    ReadWrite,
}

/// Opens an existing image file (or block device) without blocking, refusing every other kind
/// of file before a byte is read. No locks are taken (see [`crate::lock`]).
pub fn open_image_file(path: &Path, access: Access) -> Result<File> {
    let mut options = fs::OpenOptions::new();
    options.read(true).write(access == Access::ReadWrite);
    open_checked(path, &mut options).map_err(|e| e.into_image_error(path))
}

/// Why [`open_checked`] failed: the OS error is kept apart so callers can tell "file exists"
/// and "no such file" from the rest.
enum OpenError {
    Os(std::io::Error),
    Image(ImageError),
}

impl OpenError {
    fn into_image_error(self, path: &Path) -> ImageError {
        match self {
            OpenError::Os(e) => ImageError::io(path, e),
            OpenError::Image(e) => e,
        }
    }
}

fn open_checked(path: &Path, options: &mut fs::OpenOptions) -> Result<File, OpenError> {
    // std adds O_CLOEXEC itself.
    let file = options
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(OpenError::Os)?;
    let file_type = file.metadata().map_err(OpenError::Os)?.file_type();
    if !(file_type.is_file() || file_type.is_block_device()) {
        let kind = if file_type.is_fifo() {
            FileKind::Fifo
        } else if file_type.is_char_device() {
            FileKind::CharDevice
        } else if file_type.is_socket() {
            FileKind::Socket
        } else if file_type.is_dir() {
            FileKind::Directory
        } else {
            FileKind::Other
        };
        return Err(OpenError::Image(ImageError::NotAnImage {
            path: path.to_path_buf(),
            kind,
        }));
    }
    // Regular files and block devices never wait on open, but some file systems (FUSE, NFS)
    // honour O_NONBLOCK on reads and writes of regular files too, and would then fail them
    // with EAGAIN: from here on the descriptor is an ordinary blocking one.
    clear_nonblocking(&file).map_err(OpenError::Os)?;
    Ok(file)
}

fn clear_nonblocking(file: &File) -> std::io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: F_GETFL on a descriptor owned by `file`, which outlives the call; no memory is
    // passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags == -1 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above; F_SETFL only changes the status flags of this open file description.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Creates the output file of `create`/`convert` (or, with `overwrite`, opens the existing one,
/// which must be a regular file or block device nobody is using, and truncates it), holding a
/// write lock so an image in use by QEMU is never clobbered.
pub(crate) fn create_output_file(path: &Path, overwrite: bool) -> Result<File> {
    let mut options = fs::OpenOptions::new();
    options.read(true).write(true);
    if overwrite {
        options.create(true);
    } else {
        options.create_new(true);
    }
    let file = open_checked(path, &mut options).map_err(|e| match e {
        OpenError::Os(e) if e.kind() == std::io::ErrorKind::AlreadyExists => ImageError::Exists {
            path: path.to_path_buf(),
        },
        other => other.into_image_error(path),
    })?;
    lock_image(&file, path, LockMode::Write)?;
    file.set_len(0).map_err(|e| ImageError::io(path, e))?;
    Ok(file)
}
