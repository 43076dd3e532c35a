//! Disks for guests: the one way a VMM opens an image to serve it to a virtual machine.
//!
//! A guest owns every byte of its disk, so nothing about how the disk is opened is taken from
//! its contents:
//!
//! - **The format is stated, never probed.** A guest can write a qcow2 header into sector 0 of
//!   a raw disk; a host that probed would then follow a backing-file name the guest chose (any
//!   host file). [`Format`] defaults to raw, as in libvirt and QEMU, and has no "auto".
//! - **Backing formats are never probed either**: every backing file of a qcow2 chain must have
//!   its format recorded in the image naming it ([`ImageError::BackingFormatMissing`]).
//! - **Locks**: the image and its backing files are locked like QEMU locks them (see
//!   [`crate::lock`]) for as long as the [`Disk`] lives, so QEMU, `qemu-img` and `oxvirt img`
//!   cannot write it meanwhile, and a disk one of them holds is refused
//!   ([`ImageError::Locked`]).
//! - Every path is opened through [`crate::file`], so a FIFO or a device that is not a disk is
//!   refused before anything is read.

use std::path::Path;

use crate::error::{ImageError, Result};
use crate::file::{open_image_file_direct, Access};
use crate::format::Format;
use crate::image::{Image, OpenOptions};
use crate::lock::{lock_image, unlock_image, LockMode};
use crate::raw::RawImage;

/// How the host caches a guest disk's I/O (the `cache` modes of libvirt and QEMU we implement).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CacheMode {
    /// Through the host page cache (`cache=writeback`); a guest flush is an `fdatasync`.
    #[default]
    Writeback,
    /// `O_DIRECT`, past the host page cache (`cache=none`). Raw images only: the qcow2 writer
    /// issues small, unaligned metadata writes that `O_DIRECT` would reject. The file's size
    /// must be a multiple of [`crate::direct::DIRECT_ALIGN`].
    Direct,
}

/// How to open a guest disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskOptions {
    /// The format, as the VM's configuration states it (never probed).
    pub format: Format,
    /// Open the image read-only; writes fail with [`ImageError::ReadOnly`].
    pub readonly: bool,
    pub cache: CacheMode,
}

/// An image opened for a guest (raw, or qcow2 with its backing chain): read, write, flush and
/// size are all a virtual disk device needs.
///
/// Writes to qcow2 go through the ordered write path (see docs/images.md, "How writes stay
/// consistent"), so a process killed at any point leaves at most leaked clusters; `flush` is
/// an `fdatasync` of the top image, the only one written.
#[derive(Debug)]
pub struct Disk {
    image: Image,
    /// How the top image is locked while the disk is open (see [`Disk::release_locks`]).
    lock: LockMode,
}

impl Disk {
    /// Opens `path` as `options` say: the top image read-write unless `readonly`, backing files
    /// read-only, every file locked.
    pub fn open(path: &Path, options: DiskOptions) -> Result<Disk> {
        let image = match (options.format, options.cache) {
            (format, CacheMode::Writeback) => Image::open(
                path,
                &OpenOptions {
                    format: Some(format),
                    write: !options.readonly,
                    ..OpenOptions::default()
                },
            )?,
            (Format::Raw, CacheMode::Direct) => {
                let (access, mode) = if options.readonly {
                    (Access::Read, LockMode::Read)
                } else {
                    (Access::ReadWrite, LockMode::Write)
                };
                let file = open_image_file_direct(path, access)?;
                lock_image(&file, path, mode)?;
                Image::Raw(RawImage::open_direct(file, path, !options.readonly)?)
            }
            (Format::Qcow2, CacheMode::Direct) => {
                return Err(ImageError::DirectIo {
                    path: path.to_path_buf(),
                    reason: "it is supported for raw disks only; use the default cache mode \
                             (writeback) for qcow2"
                        .to_string(),
                })
            }
        };
        let lock = if options.readonly {
            LockMode::Read
        } else {
            LockMode::Write
        };
        Ok(Disk { image, lock })
    }

    /// Drops the top image's locks, the file staying open: a live migration's source hands the
    /// image over to the destination's process this way once the guest is paused for good (QEMU
    /// inactivates its images for the same). Backing files keep their shared read locks, which
    /// never conflict with another reader. [`Disk::take_locks`] takes them back.
    pub fn release_locks(&self) -> Result<()> {
        let (file, path) = self.image.top_file();
        unlock_image(file, path)
    }

    /// Takes the top image's locks again after [`Disk::release_locks`]; fails (holding none)
    /// when another process holds a conflicting one (the destination has not let go of it).
    pub fn take_locks(&self) -> Result<()> {
        let (file, path) = self.image.top_file();
        lock_image(file, path, self.lock).inspect_err(|_| {
            let _ = unlock_image(file, path);
        })
    }

    pub fn format(&self) -> Format {
        self.image.format()
    }

    /// The guest-visible size in bytes.
    pub fn size(&self) -> u64 {
        self.image.virtual_size()
    }

    /// Fills all of `buf` from guest offset `offset`.
    pub fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.image.read_at(buf, offset)
    }

    /// Writes all of `buf` at guest offset `offset`.
    pub fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        self.image.write_at(buf, offset)
    }

    /// Makes completed writes durable.
    pub fn flush(&mut self) -> Result<()> {
        self.image.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::io::AsRawFd;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
            .collect()
    }

    fn raw_file(dir: &Path, len: usize) -> std::path::PathBuf {
        let path = dir.join("disk.raw");
        std::fs::write(&path, pattern(len)).unwrap();
        path
    }

    /// The file status flags of the descriptor a disk reads through, from /proc.
    fn status_flags(disk: &Disk) -> u32 {
        let Image::Raw(raw) = &disk.image else {
            panic!("not a raw disk");
        };
        let fdinfo =
            std::fs::read_to_string(format!("/proc/self/fdinfo/{}", raw.file().as_raw_fd()))
                .unwrap();
        let flags = fdinfo
            .lines()
            .find_map(|line| line.strip_prefix("flags:"))
            .unwrap();
        u32::from_str_radix(flags.trim(), 8).unwrap()
    }

    #[test]
    fn direct_disks_use_o_direct_and_keep_unaligned_requests_whole() {
        let dir = tempfile::tempdir().unwrap();
        let len = 64 << 10;
        let path = raw_file(dir.path(), len);
        let direct = DiskOptions {
            cache: CacheMode::Direct,
            ..DiskOptions::default()
        };
        let mut disk = Disk::open(&path, direct).unwrap();
        assert_ne!(status_flags(&disk) & libc::O_DIRECT as u32, 0);
        assert_eq!(status_flags(&disk) & libc::O_NONBLOCK as u32, 0);
        assert_eq!((disk.format(), disk.size()), (Format::Raw, len as u64));

        // Unaligned at both ends and across the 4 KiB blocks.
        let mut expected = pattern(len);
        let data: Vec<u8> = (0..9000).map(|i| (i * 7) as u8).collect();
        disk.write_at(&data, 4096 - 100).unwrap();
        expected[4096 - 100..4096 - 100 + 9000].copy_from_slice(&data);
        let mut back = vec![0u8; 10_000];
        disk.read_at(&mut back, 4000).unwrap();
        assert!(back == expected[4000..14_000]);
        disk.flush().unwrap();
        drop(disk);
        assert!(std::fs::read(&path).unwrap() == expected);

        let buffered = Disk::open(&path, DiskOptions::default()).unwrap();
        assert_eq!(status_flags(&buffered) & libc::O_DIRECT as u32, 0);
    }

    #[test]
    fn released_locks_let_another_opener_in_and_are_taken_back_once_it_has_gone() {
        let dir = tempfile::tempdir().unwrap();
        let path = raw_file(dir.path(), 64 << 10);
        let source = Disk::open(&path, DiskOptions::default()).unwrap();
        let err = Disk::open(&path, DiskOptions::default()).unwrap_err();
        assert!(matches!(err, ImageError::Locked { .. }), "{err}");
        source.release_locks().unwrap();
        let destination = Disk::open(&path, DiskOptions::default()).unwrap();
        // Taking them back while the other holds the image fails, and leaves it none.
        let err = source.take_locks().unwrap_err();
        assert!(matches!(err, ImageError::Locked { .. }), "{err}");
        drop(destination);
        assert!(Disk::open(&path, DiskOptions::default()).is_ok());
        source.take_locks().unwrap();
        let err = Disk::open(&path, DiskOptions::default()).unwrap_err();
        assert!(matches!(err, ImageError::Locked { .. }), "{err}");
    }

    #[test]
    fn direct_io_is_refused_where_it_cannot_work() {
        let dir = tempfile::tempdir().unwrap();
        let direct = |format| DiskOptions {
            format,
            cache: CacheMode::Direct,
            ..DiskOptions::default()
        };
        let odd = dir.path().join("odd.raw");
        std::fs::write(&odd, vec![0u8; 4096 + 512]).unwrap();
        let err = Disk::open(&odd, direct(Format::Raw)).unwrap_err();
        assert!(matches!(err, ImageError::DirectIo { .. }), "{err}");
        assert!(err.to_string().contains("multiple of 4096"), "{err}");
        // Refused before the file is opened: qcow2 itself is fine.
        let err = Disk::open(&odd, direct(Format::Qcow2)).unwrap_err();
        assert!(err.to_string().contains("raw disks only"), "{err}");
    }

    #[test]
    fn a_fifo_is_refused_at_once_in_every_cache_mode() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        for cache in [CacheMode::Writeback, CacheMode::Direct] {
            for readonly in [false, true] {
                let options = DiskOptions {
                    readonly,
                    cache,
                    ..DiskOptions::default()
                };
                let err = Disk::open(&fifo, options).unwrap_err();
                assert!(matches!(err, ImageError::NotAnImage { .. }), "{err}");
            }
        }
    }

    #[test]
    fn read_only_disks_refuse_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = raw_file(dir.path(), 8192);
        for cache in [CacheMode::Writeback, CacheMode::Direct] {
            let options = DiskOptions {
                readonly: true,
                cache,
                ..DiskOptions::default()
            };
            let mut disk = Disk::open(&path, options).unwrap();
            let err = disk.write_at(&[1; 512], 0).unwrap_err();
            assert!(matches!(err, ImageError::ReadOnly { .. }), "{err}");
            let mut sector = [0u8; 512];
            disk.read_at(&mut sector, 512).unwrap();
            assert!(sector[..] == pattern(1024)[512..]);
        }
    }
}
