//! Raw images: the file is the disk. Holes in the file are unallocated (zero) ranges.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::direct::{DirectBuffer, DIRECT_ALIGN};
use crate::error::{ImageError, Result};
use crate::format::Allocation;

#[derive(Debug)]
pub struct RawImage {
    file: File,
    path: PathBuf,
    writable: bool,
    size: u64,
    /// Present when the file was opened for direct I/O (`O_DIRECT`): every read and write goes
    /// through this aligned buffer (see [`crate::direct`]).
    direct: Option<DirectBuffer>,
}

impl RawImage {
    pub(crate) fn open(file: File, path: &Path, writable: bool) -> Result<RawImage> {
        let size = crate::file::file_length(&file, path)?;
        Ok(RawImage {
            file,
            path: path.to_path_buf(),
            writable,
            size,
            direct: None,
        })
    }

    /// A raw image on a file opened with `O_DIRECT` (by `file::open_image_file_direct`). Its
    /// size must be a multiple of [`DIRECT_ALIGN`]: the last block could not be read otherwise.
    pub(crate) fn open_direct(file: File, path: &Path, writable: bool) -> Result<RawImage> {
        let mut image = RawImage::open(file, path, writable)?;
        if image.size % DIRECT_ALIGN as u64 != 0 {
            return Err(ImageError::DirectIo {
                path: path.to_path_buf(),
                reason: format!("size {} is not a multiple of {DIRECT_ALIGN}", image.size),
            });
        }
        image.direct = Some(DirectBuffer::new());
        Ok(image)
    }

    pub fn virtual_size(&self) -> u64 {
        self.size
    }

    /// The open file (its locks; tests look at how it was opened).
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    pub(crate) fn path(&self) -> &std::path::Path {
        &self.path
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        if offset.checked_add(len).is_none_or(|end| end > self.size) {
            return Err(ImageError::OutOfRange {
                path: self.path.clone(),
                offset,
                len,
                size: self.size,
            });
        }
        Ok(())
    }

    pub fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.check_range(offset, buf.len() as u64)?;
        match &mut self.direct {
            None => self.file.read_exact_at(buf, offset),
            Some(bounce) => bounce.read_at(&self.file, buf, offset),
        }
        .map_err(|e| ImageError::io(&self.path, e))
    }

    pub fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        if !self.writable {
            return Err(ImageError::ReadOnly {
                path: self.path.clone(),
            });
        }
        self.check_range(offset, buf.len() as u64)?;
        match &mut self.direct {
            None => self.file.write_all_at(buf, offset),
            Some(bounce) => bounce.write_at(&self.file, buf, offset),
        }
        .map_err(|e| ImageError::io(&self.path, e))
    }

    /// Uses SEEK_DATA/SEEK_HOLE: holes read as zeros.
    pub fn allocation(&mut self, offset: u64, max_len: u64) -> Result<(Allocation, u64)> {
        let fd = self.file.as_raw_fd();
        let max_len = max_len.min(self.size.saturating_sub(offset));
        // SAFETY: lseek on a valid fd; we only use positioned I/O, so moving the offset is harmless.
        let data = unsafe { libc::lseek(fd, offset as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            let err = std::io::Error::last_os_error();
            return Ok(if err.raw_os_error() == Some(libc::ENXIO) {
                (Allocation::Zero, max_len)
            } else {
                (Allocation::Data, max_len) // no hole information: treat as data
            });
        }
        let data = data as u64;
        if data > offset {
            return Ok((Allocation::Zero, (data - offset).min(max_len)));
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, offset as libc::off_t, libc::SEEK_HOLE) };
        if hole < 0 || (hole as u64) <= offset {
            return Ok((Allocation::Data, max_len));
        }
        Ok((Allocation::Data, (hole as u64 - offset).min(max_len)))
    }

    /// See [`Image::prefetch`](crate::Image).
    pub(crate) fn prefetch(&self, offset: u64, len: u64) {
        let len = len.min(self.size.saturating_sub(offset));
        advise_willneed(&self.file, offset, len);
    }

    pub fn resize(&mut self, new_size: u64) -> Result<()> {
        if !self.writable {
            return Err(ImageError::ReadOnly {
                path: self.path.clone(),
            });
        }
        self.file
            .set_len(new_size)
            .map_err(|e| ImageError::io(&self.path, e))?;
        self.size = new_size;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        if self.writable {
            self.file
                .sync_data()
                .map_err(|e| ImageError::io(&self.path, e))?;
        }
        Ok(())
    }
}

/// Asks the kernel to start reading a file range into the page cache now, without waiting for
/// it. Only a hint: errors are ignored (the later read reports any real problem).
pub(crate) fn advise_willneed(file: &File, offset: u64, len: u64) {
    if len == 0 {
        return;
    }
    // SAFETY: plain syscall on a valid fd; no memory is passed.
    unsafe {
        libc::posix_fadvise(
            file.as_raw_fd(),
            offset as libc::off_t,
            len as libc::off_t,
            libc::POSIX_FADV_WILLNEED,
        )
    };
}
