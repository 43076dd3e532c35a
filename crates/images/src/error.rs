//! Typed errors for everything the images crate does.

use std::path::PathBuf;

/// Result alias used across the crate.
pub type Result<T, E = ImageError> = std::result::Result<T, E>;

/// What can go wrong while opening, reading, writing or checking an image.
///
/// Errors caused by the *contents* of an image (hostile or corrupt files) are
/// `Corrupt` or `Unsupported`; they always name the file and what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The OS error is part of the message (not a separate `source`), so it prints once.
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: image is corrupt: {what}")]
    Corrupt { path: PathBuf, what: String },
    #[error("{path}: unsupported image: {what}")]
    Unsupported { path: PathBuf, what: String },
    /// The qcow2 header's `compression_type` field (and incompatible feature bit 3, which must
    /// be set exactly when the type is not zlib) is refused, as QEMU refuses it.
    #[error("{path}: {}", compression_type_problem(*.compression_type, *.feature_bit_set))]
    CompressionType {
        path: PathBuf,
        /// The header field's value.
        compression_type: u8,
        /// Whether incompatible feature bit 3 ("compression type") is set.
        feature_bit_set: bool,
    },
    #[error("{path}: image is in use: failed to get {mode} \"{perm}\" lock (is a guest or another tool using the image?)")]
    Locked {
        path: PathBuf,
        /// "shared" or "exclusive" (the lock QEMU would report).
        mode: &'static str,
        /// The QEMU permission that conflicts ("write", "consistent read", ...).
        perm: &'static str,
    },
    #[error("{path}: file exists (pass --force to overwrite it)")]
    Exists { path: PathBuf },
    #[error("{path}: backing chain loop: {path} is already part of the chain")]
    BackingLoop { path: PathBuf },
    /// An overlay names a backing file without recording its format, and probing it was not
    /// asked for (see `OpenOptions::probe_backing_format`).
    #[error("{overlay}: its backing file {backing_name:?} has no recorded format, and backing formats are not probed (a guest could choose them; the file is {backing}); recreate the overlay with -F raw|qcow2, or record the format: qemu-img rebase -u -F raw|qcow2 -b '{backing_name}' '{overlay}'")]
    BackingFormatMissing {
        overlay: PathBuf,
        /// As stored in the overlay's header.
        backing_name: String,
        /// Resolved against the overlay's directory.
        backing: PathBuf,
    },
    #[error("{path}: backing chain is deeper than {max} images")]
    BackingTooDeep { path: PathBuf, max: usize },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("snapshot '{name}' not found in {path}")]
    SnapshotNotFound { path: PathBuf, name: String },
    #[error("{path}: access at offset {offset} length {len} is beyond the image size {size}")]
    OutOfRange {
        path: PathBuf,
        offset: u64,
        len: u64,
        size: u64,
    },
    #[error("{path}: image was opened read-only")]
    ReadOnly { path: PathBuf },
    /// Direct I/O (`O_DIRECT`, `cache=none`) cannot be used for this disk: the format is not
    /// raw, the file system does not support it, or the size is not a multiple of the
    /// alignment.
    #[error("{path}: direct I/O (cache=none) is not possible: {reason}")]
    DirectIo { path: PathBuf, reason: String },
    /// The path is a FIFO, a character device, a socket or a directory: reading it as a disk
    /// could block for ever or never end, so it is refused before anything is read.
    #[error("{path}: is {kind}, not a disk image")]
    NotAnImage { path: PathBuf, kind: FileKind },
}

impl ImageError {
    pub(crate) fn io(path: &std::path::Path, error: std::io::Error) -> Self {
        ImageError::Io {
            path: path.to_path_buf(),
            error,
        }
    }
    pub(crate) fn corrupt(path: &std::path::Path, what: impl Into<String>) -> Self {
        ImageError::Corrupt {
            path: path.to_path_buf(),
            what: what.into(),
        }
    }
    pub(crate) fn unsupported(path: &std::path::Path, what: impl Into<String>) -> Self {
        ImageError::Unsupported {
            path: path.to_path_buf(),
            what: what.into(),
        }
    }
}

/// What is wrong with a qcow2 header's compression type, in QEMU's terms. Never names an
/// unknown type.
fn compression_type_problem(value: u8, feature_bit_set: bool) -> String {
    use crate::qcow2::header::CompressionType;
    match CompressionType::from_field(value) {
        None => format!(
            "unsupported image: unknown compression type {value} in header field compression_type (0 is zlib, 1 is zstd)"
        ),
        Some(known) => {
            let (is, must) = if feature_bit_set {
                ("is set", "must not be")
            } else {
                ("is not set", "must be")
            };
            format!(
                "image is corrupt: header field compression_type is {value} ({}), but incompatible feature bit 3 (compression type) {is}; it {must} for this type",
                known.name()
            )
        }
    }
}

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
