//! Opening images of any supported format, with their backing chains, behind one type.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{ImageError, Result};
use crate::file::{create_output_file, open_image_file, Access, OutputFile};
use crate::format::{Allocation, BackingImage, Format, Preallocation};
use crate::lock::{lock_image, LockMode};
use crate::qcow2::create::NewQcow2;
use crate::qcow2::Qcow2;
use crate::raw::RawImage;

/// Longest backing chain we follow.
pub const MAX_CHAIN_DEPTH: usize = 64;

#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// None: probe the top image (qcow2 magic, else raw). Callers that open disks a guest
    /// has written should state it (see `probe_backing_format` for why).
    pub format: Option<Format>,
    pub write: bool,
    /// Take no locks (qemu-img's -U): reading an image in use may see inconsistent data.
    pub force_share: bool,
    /// Do not open the backing file.
    pub no_backing: bool,
    /// Allow opening an image marked corrupt/dirty for writing, to repair it.
    pub repair: bool,
    /// Probe the format of a backing file whose overlay does not record one, as qemu-img
    /// does. Off by default, and then such a chain is refused
    /// ([`ImageError::BackingFormatMissing`]): a guest owns the contents of a raw disk, and
    /// if that disk is a backing file whose format is probed, a qcow2 header the guest wrote
    /// makes the host open whatever backing file the guest names. `oxvirt img` turns it on
    /// (it plays qemu-img's part); library users such as the daemon keep it off.
    pub probe_backing_format: bool,
}

/// One image of a backing chain, as [`backing_chain`] read it from the headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainLayer {
    /// The image's path: the one given for the top image, then each backing file name
    /// resolved against the directory of the image naming it (see [`resolve_backing`]).
    pub path: PathBuf,
    /// The format: the one given for the top image, then the one each overlay records.
    pub format: Format,
}

#[derive(Debug)]
pub enum Image {
    Raw(RawImage),
    Qcow2(Box<Qcow2>),
}

/// Where a backing file name stored in `image` points (relative names are relative to the
/// image's directory), spelled like qemu-img's "full-backing-filename".
pub fn resolve_backing(image: &Path, name: &str) -> PathBuf {
    let backing = Path::new(name);
    if backing.is_absolute() {
        return backing.to_path_buf();
    }
    match image.parent() {
        Some(dir) => dir.join(backing),
        None => backing.to_path_buf(),
    }
}

/// Reads the first bytes to tell qcow2 from raw.
pub fn probe(path: &Path) -> Result<Format> {
    let mut file = open_image_file(path, Access::Read)?;
    probe_file(&mut file, path)
}

fn probe_file(file: &mut File, path: &Path) -> Result<Format> {
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match file.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ImageError::io(path, e)),
        }
    }
    Ok(if got == 4 && magic == crate::qcow2::header::MAGIC {
        Format::Qcow2
    } else {
        Format::Raw
    })
}

impl Image {
    /// Opens an image and (unless `no_backing`) its whole backing chain, read-only below the top.
    pub fn open(path: &Path, options: &OpenOptions) -> Result<Image> {
        let mut chain = Vec::new();
        open_in_chain(path, options, &mut chain)
    }

    /// The top image's file and path (the one a guest writes; backing files are below it).
    pub(crate) fn top_file(&self) -> (&std::fs::File, &Path) {
        match self {
            Image::Raw(r) => (r.file(), r.path()),
            Image::Qcow2(q) => (&q.file, &q.path),
        }
    }

    pub fn format(&self) -> Format {
        match self {
            Image::Raw(_) => Format::Raw,
            Image::Qcow2(_) => Format::Qcow2,
        }
    }
    pub fn virtual_size(&self) -> u64 {
        match self {
            Image::Raw(r) => r.virtual_size(),
            Image::Qcow2(q) => q.virtual_size(),
        }
    }
    pub fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<()> {
        match self {
            Image::Raw(r) => r.read_at(buf, offset),
            Image::Qcow2(q) => q.read_at(buf, offset),
        }
    }
    pub fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        match self {
            Image::Raw(r) => r.write_at(buf, offset),
            Image::Qcow2(q) => q.write_at(buf, offset),
        }
    }
    /// How the range at `offset` is stored; the returned length is at most `max_len`, and 0
    /// only at or past the end of the disk.
    pub fn allocation(&mut self, offset: u64, max_len: u64) -> Result<(Allocation, u64)> {
        match self {
            Image::Raw(r) => r.allocation(offset, max_len),
            Image::Qcow2(q) => q.allocation(offset, max_len),
        }
    }
    /// Hints that the guest range at `offset` will be read soon, so that the kernel reads it
    /// from disk while earlier data is being processed (cold-cache convert reads sparse data
    /// in pieces the kernel's readahead does not recognise as sequential). Best effort.
    pub(crate) fn prefetch(&mut self, offset: u64, len: u64) {
        match self {
            Image::Raw(r) => r.prefetch(offset, len),
            Image::Qcow2(q) => q.prefetch(offset, len),
        }
    }
    pub fn flush(&mut self) -> Result<()> {
        match self {
            Image::Raw(r) => r.flush(),
            Image::Qcow2(q) => q.flush(),
        }
    }
    pub fn as_qcow2_mut(&mut self) -> Option<&mut Qcow2> {
        match self {
            Image::Qcow2(q) => Some(q),
            Image::Raw(_) => None,
        }
    }
    pub fn as_qcow2(&self) -> Option<&Qcow2> {
        match self {
            Image::Qcow2(q) => Some(q),
            Image::Raw(_) => None,
        }
    }
    /// Changes the virtual size. Shrinking needs `allow_shrink` (qemu-img's --shrink).
    pub fn resize(&mut self, new_size: u64, allow_shrink: bool) -> Result<()> {
        if new_size < self.virtual_size() && !allow_shrink {
            return Err(ImageError::InvalidArgument(
                "shrinking loses data at the end of the disk; pass --shrink to confirm".into(),
            ));
        }
        match self {
            Image::Raw(r) => r.resize(new_size),
            Image::Qcow2(q) => q.resize(new_size),
        }
    }
}

/// Reads the backing chain of `path` (of format `format`) from the image headers alone:
/// the first layer is the image itself, each following one the backing file of the one
/// before, with the format its overlay records. Nothing is probed and no guest data is read;
/// no locks are taken (only headers are read, like `qemu-img info -U`), so whoever then
/// opens the chain (QEMU, given it explicitly) takes its own.
///
/// Refuses a backing file without a recorded format ([`ImageError::BackingFormatMissing`]),
/// loops ([`ImageError::BackingLoop`]), chains of more than [`MAX_CHAIN_DEPTH`] images
/// ([`ImageError::BackingTooDeep`]), and anything that is not a regular file or block device.
pub fn backing_chain(path: &Path, format: Format) -> Result<Vec<ChainLayer>> {
    let mut layers = Vec::new();
    let mut seen = Vec::new();
    let mut next = Some(ChainLayer {
        path: path.to_path_buf(),
        format,
    });
    while let Some(layer) = next.take() {
        enter_chain(&layer.path, &mut seen)?;
        // Opened even when nothing is read from it (raw), so that a FIFO or device is
        // refused here and not handed to QEMU, which would block on it.
        let file = open_image_file(&layer.path, Access::Read)?;
        if layer.format == Format::Qcow2 {
            let (header, _) = crate::qcow2::read_header(&file, &layer.path)?;
            if let Some(backing) = backing_of(&layer.path, &header)? {
                next = Some(ChainLayer {
                    format: backing
                        .format
                        .ok_or_else(|| backing.format_missing(&layer.path))?,
                    path: backing.path,
                });
            }
        }
        layers.push(layer);
    }
    Ok(layers)
}

/// Adds the image at `path` to the chain being opened, refusing loops and over-deep chains.
fn enter_chain(path: &Path, chain: &mut Vec<PathBuf>) -> Result<()> {
    let canonical = fs::canonicalize(path).map_err(|e| ImageError::io(path, e))?;
    if chain.contains(&canonical) {
        return Err(ImageError::BackingLoop {
            path: path.to_path_buf(),
        });
    }
    if chain.len() >= MAX_CHAIN_DEPTH {
        return Err(ImageError::BackingTooDeep {
            path: path.to_path_buf(),
            max: MAX_CHAIN_DEPTH,
        });
    }
    chain.push(canonical);
    Ok(())
}

/// A backing file as its overlay's header describes it.
struct Backing {
    /// As stored in the header.
    name: String,
    /// Resolved against the overlay's directory.
    path: PathBuf,
    /// None: the overlay records no format.
    format: Option<Format>,
}

impl Backing {
    fn format_missing(&self, overlay: &Path) -> ImageError {
        ImageError::BackingFormatMissing {
            overlay: overlay.to_path_buf(),
            backing_name: self.name.clone(),
            backing: self.path.clone(),
        }
    }
}

/// The backing file named by `overlay`'s header, if any.
fn backing_of(overlay: &Path, header: &crate::qcow2::header::Header) -> Result<Option<Backing>> {
    let Some(name) = &header.backing_file else {
        return Ok(None);
    };
    let format = match header.backing_format.as_deref() {
        None => None,
        Some(recorded) => Some(Format::parse(recorded).map_err(|_| {
            ImageError::unsupported(
                overlay,
                format!(
                    "backing file '{name}' has format '{recorded}' (raw and qcow2 are supported)"
                ),
            )
        })?),
    };
    Ok(Some(Backing {
        name: name.clone(),
        path: resolve_backing(overlay, name),
        format,
    }))
}

impl BackingImage for Image {
    fn virtual_size(&self) -> u64 {
        Image::virtual_size(self)
    }
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<()> {
        Image::read_at(self, buf, offset)
    }
    fn allocation(&mut self, offset: u64, max_len: u64) -> Result<(Allocation, u64)> {
        Image::allocation(self, offset, max_len)
    }
    fn prefetch(&mut self, offset: u64, len: u64) {
        Image::prefetch(self, offset, len)
    }
}

fn open_in_chain(path: &Path, options: &OpenOptions, chain: &mut Vec<PathBuf>) -> Result<Image> {
    enter_chain(path, chain)?;
    let access = if options.write {
        Access::ReadWrite
    } else {
        Access::Read
    };
    let mut file = open_image_file(path, access)?;
    if !options.force_share {
        let mode = if options.write {
            LockMode::Write
        } else {
            LockMode::Read
        };
        lock_image(&file, path, mode)?;
    }
    let format = match options.format {
        Some(format) => format,
        None => probe_file(&mut file, path)?,
    };
    match format {
        Format::Raw => Ok(Image::Raw(RawImage::open(file, path, options.write)?)),
        Format::Qcow2 => {
            let mut image = Qcow2::open(file, path, options.write, options.repair)?;
            let backing = match options.no_backing {
                true => None,
                false => backing_of(path, &image.header)?,
            };
            if let Some(backing) = backing {
                if backing.format.is_none() && !options.probe_backing_format {
                    return Err(backing.format_missing(path));
                }
                let backing_options = OpenOptions {
                    format: backing.format,
                    write: false,
                    force_share: options.force_share,
                    no_backing: false,
                    repair: false,
                    probe_backing_format: options.probe_backing_format,
                };
                let backing = open_in_chain(&backing.path, &backing_options, chain)?;
                image.backing = Some(Box::new(backing));
            }
            Ok(Image::Qcow2(Box::new(image)))
        }
    }
}

/// Parameters of `create`.
#[derive(Clone, Debug)]
pub struct CreateOptions {
    pub format: Format,
    /// None: take the backing file's size.
    pub size: Option<u64>,
    pub preallocation: Preallocation,
    pub cluster_size: u64,
    pub backing_file: Option<String>,
    pub backing_format: Option<Format>,
    /// Replace an existing file (it must not be in use).
    pub overwrite: bool,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            format: Format::Raw,
            size: None,
            preallocation: Preallocation::Off,
            cluster_size: 65536,
            backing_file: None,
            backing_format: None,
            overwrite: false,
        }
    }
}

/// Creates an image. Everything is validated before the file is touched, and if writing it
/// fails, the file is removed again (an existing file is only touched, and then removed,
/// when `overwrite` allowed truncating it).
pub fn create(path: &Path, options: &CreateOptions) -> Result<()> {
    create_output(path, options)?.keep();
    Ok(())
}

/// [`create`], handing back the new file still open and locked, to be kept or (dropped)
/// removed by the caller.
pub(crate) fn create_output(path: &Path, options: &CreateOptions) -> Result<OutputFile> {
    let mut size = options.size;
    let mut backing = None;
    if let Some(name) = &options.backing_file {
        if options.format != Format::Qcow2 {
            return Err(ImageError::InvalidArgument(
                "backing files need the qcow2 format".into(),
            ));
        }
        let format = options.backing_format.ok_or_else(|| {
            ImageError::InvalidArgument("a backing file needs its format too (-F raw|qcow2)".into())
        })?;
        if options.preallocation != Preallocation::Off {
            return Err(ImageError::InvalidArgument(
                "backing file and preallocation cannot be used together (as in QEMU without extended L2)".into(),
            ));
        }
        let backing_path = resolve_backing(path, name);
        if let (Ok(a), Ok(b)) = (fs::canonicalize(&backing_path), fs::canonicalize(path)) {
            if a == b {
                return Err(ImageError::BackingLoop {
                    path: path.to_path_buf(),
                });
            }
        }
        // Only the size is needed, and it is in the backing file's own header: read it
        // without locking, like qemu-img does, and without following the chain below it
        // (which would mean probing or refusing formats that are not create's business).
        let probe_options = OpenOptions {
            format: Some(format),
            force_share: true,
            no_backing: true,
            ..OpenOptions::default()
        };
        let backing_image = Image::open(&backing_path, &probe_options)?;
        size = size.or(Some(backing_image.virtual_size()));
        backing = Some((name.clone(), format.name()));
    }
    let size =
        size.ok_or_else(|| ImageError::InvalidArgument("an image size is required".into()))?;
    // Like qemu-img, disks are whole 512-byte sectors.
    let size = size
        .checked_next_multiple_of(512)
        .filter(|s| *s <= i64::MAX as u64)
        .ok_or_else(|| ImageError::InvalidArgument(format!("size {size} is too large")))?;
    let qcow2 = NewQcow2 {
        size,
        cluster_size: options.cluster_size,
        preallocation: options.preallocation,
        backing: backing.as_ref().map(|(n, f)| (n.as_str(), *f)),
    };
    match options.format {
        Format::Qcow2 => {
            qcow2.header()?;
        }
        Format::Raw => {
            if options.preallocation == Preallocation::Metadata {
                return Err(ImageError::InvalidArgument(
                    "preallocation=metadata is not supported for raw images".into(),
                ));
            }
            if size > i64::MAX as u64 {
                return Err(ImageError::InvalidArgument(format!(
                    "size {size} is too large"
                )));
            }
        }
    }

    let output = create_output_file(path, options.overwrite)?;
    let file = output.file();
    let io = |e| ImageError::io(path, e);
    // On an error, `output` is dropped and the file we made (or truncated) removed.
    match options.format {
        Format::Qcow2 => qcow2.write(file, path)?,
        Format::Raw => {
            file.set_len(size).map_err(io)?;
            match options.preallocation {
                Preallocation::Falloc => crate::qcow2::create::fallocate(file, path, 0, size)?,
                Preallocation::Full => crate::qcow2::create::write_zeros(file, path, 0, size)?,
                Preallocation::Off | Preallocation::Metadata => {}
            }
            file.sync_data().map_err(io)?;
        }
    }
    Ok(output)
}

/// Opens the image just written into `output` by [`create_output`], for writing. It uses a
/// second descriptor of the same open file description, which shares the output's write
/// lock (a separate open would conflict with that lock).
pub(crate) fn open_output(output: &OutputFile, format: Format) -> Result<Image> {
    let path = output.path();
    let file = output
        .file()
        .try_clone()
        .map_err(|e| ImageError::io(path, e))?;
    Ok(match format {
        Format::Raw => Image::Raw(RawImage::open(file, path, true)?),
        Format::Qcow2 => Image::Qcow2(Box::new(Qcow2::open(file, path, true, false)?)),
    })
}
