//! Disk image formats behind virtio-blk: raw files and qcow2 images (through `oxvirt-images`).
//!
//! The format is always stated by the caller, never guessed from the content. A guest owns
//! every byte of a raw disk, so it can write a qcow2 header into sector 0; a host that probes
//! would then open the raw disk as qcow2 and follow a backing-file name the guest chose (any
//! host file). QEMU warns about probing and libvirt never does it; we follow them: the format
//! defaults to raw, and every backing file in a qcow2 chain must have its format recorded in
//! the image that names it.
//!
//! Every disk is opened with QEMU-compatible OFD locks (see `oxvirt_images::lock`): a writable
//! disk refuses QEMU, `qemu-img` and `oxvirt img` as long as the device exists, and a disk one
//! of them holds refuses us.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use oxvirt_images::image::{resolve_backing, MAX_CHAIN_DEPTH};
use oxvirt_images::{Format, Image, ImageError, OpenOptions};

use crate::block::{BlockBackend, BlockConfig, RawFileBackend};
use crate::Error;

/// On-disk format of a virtio-blk disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DiskFormat {
    /// The file (or block device) is the disk.
    #[default]
    Raw,
    /// qcow2 (version 2 or 3), with its backing chain.
    Qcow2,
}

impl DiskFormat {
    pub fn name(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }

    fn image_format(self) -> Format {
        match self {
            DiskFormat::Raw => Format::Raw,
            DiskFormat::Qcow2 => Format::Qcow2,
        }
    }
}

impl fmt::Display for DiskFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DiskFormat {
    type Err = Error;

    /// Accepts `raw` and `qcow2`. There is deliberately no "auto" (see the module docs).
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "raw" => Ok(DiskFormat::Raw),
            "qcow2" => Ok(DiskFormat::Qcow2),
            other => Err(Error::UnknownDiskFormat(other.to_string())),
        }
    }
}

/// Opens the backend for `config` in `format`, locked against other users of the image.
///
/// Raw disks use [`RawFileBackend`] (it supports `direct` and block devices); qcow2 uses
/// [`ImageBackend`], which refuses `direct`.
pub fn open_backend(
    config: &BlockConfig,
    format: DiskFormat,
) -> Result<Box<dyn BlockBackend>, Error> {
    match format {
        DiskFormat::Raw => Ok(Box::new(RawFileBackend::open(
            &config.path,
            config.readonly,
            config.direct,
        )?)),
        DiskFormat::Qcow2 => {
            if config.direct {
                return Err(Error::BadDisk {
                    path: config.path.clone(),
                    reason: "direct I/O (cache=none) is supported for raw disks only; use the \
                             default cache mode for qcow2"
                        .to_string(),
                });
            }
            Ok(Box::new(ImageBackend::open(
                &config.path,
                DiskFormat::Qcow2,
                config.readonly,
            )?))
        }
    }
}

/// An image opened through `oxvirt-images` (qcow2 with its backing chain, or raw), serving
/// virtio-blk requests.
///
/// Writes go through the images crate's write path, which orders metadata updates so that a
/// process killed at any point leaves at most leaked clusters; `flush` is `fdatasync` of the
/// top image (the only one written).
#[derive(Debug)]
pub struct ImageBackend {
    image: Image,
    size: u64,
}

impl ImageBackend {
    /// Opens `path` as `format` (read-only or read-write, backing files always read-only),
    /// taking QEMU-compatible locks on every file of the chain. Refuses a chain in which a
    /// backing file's format is not recorded.
    pub fn open(path: &Path, format: DiskFormat, readonly: bool) -> Result<Self, Error> {
        check_backing_formats(path, format)?;
        let options = OpenOptions {
            format: Some(format.image_format()),
            write: !readonly,
            ..OpenOptions::default()
        };
        let image = Image::open(path, &options).map_err(Error::Image)?;
        let size = image.virtual_size();
        Ok(ImageBackend { image, size })
    }
}

/// Walks the backing chain from its metadata alone (no backing file is opened as an image on
/// the way) and fails if some image names a backing file without its format: opening that
/// chain would mean probing the backing file's format.
fn check_backing_formats(path: &Path, format: DiskFormat) -> Result<(), Error> {
    let mut current: PathBuf = path.to_path_buf();
    let mut current_format = format.image_format();
    // Loops and over-deep chains are reported by the real open; stop looking after the limit.
    for _ in 0..MAX_CHAIN_DEPTH {
        if current_format != Format::Qcow2 {
            return Ok(());
        }
        // Only the header is needed, and the real open that follows takes the locks.
        let peek = OpenOptions {
            format: Some(Format::Qcow2),
            force_share: true,
            no_backing: true,
            ..OpenOptions::default()
        };
        let image = Image::open(&current, &peek).map_err(Error::Image)?;
        let Some(header) = image.as_qcow2().map(|q| q.header()) else {
            return Ok(());
        };
        let Some(name) = header.backing_file.clone() else {
            return Ok(());
        };
        let Some(backing_format) = header.backing_format.clone() else {
            return Err(Error::BadDisk {
                path: current,
                reason: format!(
                    "its backing file {name:?} has no recorded format, and probing it would let \
                     a guest choose the format; record it with \
                     `qemu-img rebase -u -b {name} -F raw|qcow2`"
                ),
            });
        };
        current_format = Format::parse(&backing_format).map_err(Error::Image)?;
        current = resolve_backing(&current, &name);
    }
    Ok(())
}

fn to_io(error: ImageError) -> io::Error {
    io::Error::other(error)
}

impl BlockBackend for ImageBackend {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.image.read_at(buf, offset).map_err(to_io)
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.image.write_at(buf, offset).map_err(to_io)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.image.flush().map_err(to_io)
    }
}
