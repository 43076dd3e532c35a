//! What an image is and how its data is stored: the format, QEMU's preallocation modes, how a
//! guest range is allocated, and what an overlay needs of the image below it ([`BackingImage`]).
//! A leaf: every other module of the crate may use it.

use crate::error::{ImageError, Result};

/// An image format: the one disk format type of oxvirt's I/O side (`oxvirt img`, the daemon's
/// volumes, `oxvirt-vmm` and its virtio-blk devices). Serialized, parsed (`FromStr`) and
/// displayed as its name (`"raw"`, `"qcow2"`), as in `oxvirt-vmm`'s config file. There is no
/// "auto": probing is an explicit call ([`probe`], `OpenOptions::format: None`), never a value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The default, as in libvirt and QEMU: a disk whose format is not stated is raw.
    #[default]
    Raw,
    Qcow2,
}

impl Format {
    /// Every format, in the order command lines list them.
    pub const ALL: [Format; 2] = [Format::Raw, Format::Qcow2];

    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
        }
    }
    pub fn parse(name: &str) -> Result<Format> {
        Format::ALL
            .into_iter()
            .find(|format| format.name() == name)
            .ok_or_else(|| {
                ImageError::InvalidArgument(format!(
                    "unsupported format '{name}' (raw and qcow2 are supported)"
                ))
            })
    }
}

impl std::str::FromStr for Format {
    type Err = ImageError;

    fn from_str(name: &str) -> Result<Format> {
        Format::parse(name)
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// QEMU's preallocation modes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Preallocation {
    /// Nothing allocated: the image is sparse.
    #[default]
    Off,
    /// qcow2 only: all metadata written and every cluster mapped; the file is sparse.
    Metadata,
    /// Space reserved with fallocate().
    Falloc,
    /// Zeros written over the whole disk.
    Full,
}

impl Preallocation {
    pub fn parse(name: &str) -> Result<Preallocation> {
        match name {
            "off" => Ok(Preallocation::Off),
            "metadata" => Ok(Preallocation::Metadata),
            "falloc" => Ok(Preallocation::Falloc),
            "full" => Ok(Preallocation::Full),
            other => Err(ImageError::InvalidArgument(format!(
                "unknown preallocation mode '{other}' (off, metadata, falloc, full)"
            ))),
        }
    }
}

/// How a guest range is stored, looking through the backing chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allocation {
    /// Holds data (which may still happen to be zeros).
    Data,
    /// Known to read as zeros.
    Zero,
}

/// What a qcow2 overlay needs of its backing image: the guest data below its own clusters.
/// [`crate::Image`] is one; the overlay does not need to know which format it has.
pub trait BackingImage: std::fmt::Debug + Send {
    fn virtual_size(&self) -> u64;
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<()>;
    /// How the range at `offset` is stored; see [`crate::Image::allocation`].
    fn allocation(&mut self, offset: u64, max_len: u64) -> Result<(Allocation, u64)>;
    /// Best-effort hint that the range will be read soon.
    fn prefetch(&mut self, offset: u64, len: u64);
}
