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
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{FileKind, ImageError, Result};
use crate::lock::{lock_image, LockMode};

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

/// Opens an existing image file like [`open_image_file`], for direct I/O (`O_DIRECT`, QEMU's
/// `cache=none`): reads and writes then bypass the host page cache and must be aligned (the
/// raw image does that, see [`crate::direct`]). A file system without direct I/O is
/// [`ImageError::DirectIo`].
pub fn open_image_file_direct(path: &Path, access: Access) -> Result<File> {
    // O_DIRECT is set once the file is known to be an image: opening a FIFO with it fails
    // (EINVAL) before it could be refused as what it is.
    let file = open_image_file(path, access)?;
    set_status_flags(&file, 0, libc::O_DIRECT).map_err(|e| {
        if e.raw_os_error() == Some(libc::EINVAL) {
            ImageError::DirectIo {
                path: path.to_path_buf(),
                reason: "its file system does not support O_DIRECT".to_string(),
            }
        } else {
            ImageError::io(path, e)
        }
    })?;
    Ok(file)
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
    set_status_flags(&file, libc::O_NONBLOCK, 0).map_err(OpenError::Os)?;
    Ok(file)
}

/// The length of an image file in bytes: its size for a regular file, the device's capacity for
/// a block device (whose `st_size` is 0).
pub(crate) fn file_length(file: &File, path: &Path) -> Result<u64> {
    let meta = file.metadata().map_err(|e| ImageError::io(path, e))?;
    if !meta.file_type().is_block_device() {
        return Ok(meta.len());
    }
    // Seeking a shared descriptor is harmless here: every read and write of this crate is
    // positional (pread/pwrite), none depends on the file offset.
    let mut handle = file;
    std::io::Seek::seek(&mut handle, std::io::SeekFrom::End(0)).map_err(|e| ImageError::io(path, e))
}

/// Changes the status flags of `file`'s open file description: clears `clear`, sets `set`.
fn set_status_flags(file: &File, clear: libc::c_int, set: libc::c_int) -> std::io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: F_GETFL on a descriptor owned by `file`, which outlives the call; no memory is
    // passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags == -1 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above; F_SETFL only changes the status flags of this open file description.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, (flags & !clear) | set) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The output file of `create` or `convert`, made by [`create_output_file`] and held with a
/// write lock. Unless the operation calls [`keep`](Self::keep), dropping it removes the file
/// again, but only if this operation created or truncated it (never a file it left as it was,
/// e.g. one locked by a guest), and only if the path still names the very file it wrote (not
/// something put there since, and not a symlink to it).
#[derive(Debug)]
pub(crate) struct OutputFile {
    file: File,
    path: PathBuf,
    /// Device and inode of `file`, to recognise it at `path` before removing it.
    identity: (u64, u64),
    /// Whether a failure leaves this file worthless: we created it, or truncated it.
    remove_on_failure: bool,
}

impl OutputFile {
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The operation succeeded: the file stays (its lock goes away as it is closed).
    pub(crate) fn keep(mut self) {
        self.remove_on_failure = false;
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if !self.remove_on_failure {
            return;
        }
        // lstat: a symlink put at the path is not our file, even if it points to it.
        let still_ours = fs::symlink_metadata(&self.path)
            .is_ok_and(|meta| (meta.dev(), meta.ino()) == self.identity);
        if still_ours {
            // Best effort: the operation's own error is the one reported.
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Creates the output file of `create`/`convert`, or with `overwrite` opens the existing one
/// (a regular file or block device nobody is using) and truncates it. The file is held with a
/// write lock, so an image in use by QEMU is never clobbered.
pub(crate) fn create_output_file(path: &Path, overwrite: bool) -> Result<OutputFile> {
    // A new file is made with O_EXCL and an existing one opened without O_CREAT, so that we
    // always know whether the file is ours to remove. If somebody else creates or removes the
    // path in between, try again: a few times, never for ever.
    for _ in 0..8 {
        let mut new = fs::OpenOptions::new();
        new.read(true).write(true).create_new(true);
        match open_checked(path, &mut new) {
            Ok(file) => return locked_output(file, path, true),
            Err(OpenError::Os(e)) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.into_image_error(path)),
        }
        if !overwrite {
            return Err(ImageError::Exists {
                path: path.to_path_buf(),
            });
        }
        let mut existing = fs::OpenOptions::new();
        existing.read(true).write(true);
        match open_checked(path, &mut existing) {
            Ok(file) => return locked_output(file, path, false),
            Err(OpenError::Os(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into_image_error(path)),
        }
    }
    Err(ImageError::io(
        path,
        std::io::Error::other("the path keeps being created and removed by someone else"),
    ))
}

fn locked_output(file: File, path: &Path, created: bool) -> Result<OutputFile> {
    let meta = file.metadata().map_err(|e| ImageError::io(path, e))?;
    let mut output = OutputFile {
        file,
        path: path.to_path_buf(),
        identity: (meta.dev(), meta.ino()),
        // A file we just made is ours from the start, even if locking it fails.
        remove_on_failure: created,
    };
    lock_image(&output.file, path, LockMode::Write)?;
    if !created {
        output
            .file
            .set_len(0)
            .map_err(|e| ImageError::io(path, e))?;
        // Its old contents are gone: a failure from here on leaves nothing worth keeping.
        output.remove_on_failure = true;
    }
    Ok(output)
}
