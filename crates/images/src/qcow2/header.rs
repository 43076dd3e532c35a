//! The qcow2 header and its extensions (docs/interop/qcow2.txt in QEMU describes the format).

pub const MAGIC: [u8; 4] = *b"QFI\xfb";
pub const V2_HEADER_LEN: u32 = 72;
pub const V3_HEADER_LEN: u32 = 112;

pub const MIN_CLUSTER_BITS: u32 = 9;
pub const MAX_CLUSTER_BITS: u32 = 21;
/// QEMU refuses L1 tables above 32 MiB and refcount tables above 8 MiB; so do we.
pub const MAX_L1_BYTES: u64 = 32 << 20;
pub const MAX_REFTABLE_BYTES: u64 = 8 << 20;
pub const MAX_SNAPSHOTS: u32 = 65536;
pub const MAX_BACKING_NAME: u32 = 1023;

pub const INCOMPAT_DIRTY: u64 = 1 << 0;
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
pub const INCOMPAT_EXTL2: u64 = 1 << 4;
pub const COMPAT_LAZY_REFCOUNTS: u64 = 1 << 0;

pub const EXT_END: u32 = 0;
pub const EXT_BACKING_FORMAT: u32 = 0xE279_2ACA;
pub const EXT_FEATURE_TABLE: u32 = 0x6803_f857;

/// Byte offsets of header fields we update in place.
pub const OFF_SIZE: u64 = 24;
pub const OFF_L1: u64 = 36; // l1_size (u32) then l1_table_offset (u64)
pub const OFF_REFTABLE: u64 = 48; // offset (u64) then clusters (u32)
pub const OFF_SNAPSHOTS: u64 = 60; // nb_snapshots (u32) then snapshots_offset (u64)
pub const OFF_INCOMPAT: u64 = 72;
pub const OFF_AUTOCLEAR: u64 = 88;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub backing_file_offset: u64,
    pub backing_file_size: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub crypt_method: u32,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u32,
    pub nb_snapshots: u32,
    pub snapshots_offset: u64,
    pub incompatible_features: u64,
    pub compatible_features: u64,
    pub autoclear_features: u64,
    pub refcount_order: u32,
    pub header_length: u32,
    pub compression_type: u8,
    /// From the backing-format extension.
    pub backing_format: Option<String>,
    /// The backing file name (stored after the extensions).
    pub backing_file: Option<String>,
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

/// Why a header could not be parsed (turned into an `ImageError` by the caller).
pub enum HeaderError {
    Corrupt(String),
    Unsupported(String),
    /// The `compression_type` field and incompatible feature bit 3 break QEMU's rule (see
    /// [`CompressionType::check`]).
    CompressionType {
        compression_type: u8,
        feature_bit_set: bool,
    },
}

/// The compression types QEMU knows (header field `compression_type`, byte 104).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompressionType {
    Zlib,
    Zstd,
}

impl CompressionType {
    /// The type a header field value stands for; None for values no QEMU knows.
    pub fn from_field(value: u8) -> Option<CompressionType> {
        match value {
            0 => Some(CompressionType::Zlib),
            1 => Some(CompressionType::Zstd),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CompressionType::Zlib => "zlib",
            CompressionType::Zstd => "zstd",
        }
    }

    /// QEMU's rule (block/qcow2.c, `validate_compression_type`): the type is zlib or zstd;
    /// zlib images must not set the "compression type" incompatible feature bit, the others
    /// must (so that a QEMU that only knows zlib refuses them instead of misreading them).
    pub fn check(value: u8, feature_bit_set: bool) -> Option<CompressionType> {
        match (CompressionType::from_field(value)?, feature_bit_set) {
            (CompressionType::Zlib, false) => Some(CompressionType::Zlib),
            (CompressionType::Zstd, true) => Some(CompressionType::Zstd),
            _ => None,
        }
    }
}

impl Header {
    /// Parses the header from the start of the file. `head` holds the first bytes of the file
    /// (at least the first cluster when the file is that long); `file_len` bounds offsets.
    pub fn parse(head: &[u8], file_len: u64) -> Result<Header, HeaderError> {
        use HeaderError::{Corrupt, Unsupported};
        if head.len() < V2_HEADER_LEN as usize {
            return Err(Corrupt(format!(
                "file is too short for a qcow2 header ({} bytes)",
                head.len()
            )));
        }
        if head[0..4] != MAGIC {
            return Err(Corrupt("bad qcow2 magic".into()));
        }
        let mut h = Header {
            version: be32(head, 4),
            backing_file_offset: be64(head, 8),
            backing_file_size: be32(head, 16),
            cluster_bits: be32(head, 20),
            size: be64(head, 24),
            crypt_method: be32(head, 32),
            l1_size: be32(head, 36),
            l1_table_offset: be64(head, 40),
            refcount_table_offset: be64(head, 48),
            refcount_table_clusters: be32(head, 56),
            nb_snapshots: be32(head, 60),
            snapshots_offset: be64(head, 64),
            refcount_order: 4,
            header_length: V2_HEADER_LEN,
            ..Header::default()
        };
        match h.version {
            2 => {}
            3 => {
                if head.len() < V3_HEADER_LEN as usize - 8 {
                    return Err(Corrupt("truncated version 3 header".into()));
                }
                h.incompatible_features = be64(head, 72);
                h.compatible_features = be64(head, 80);
                h.autoclear_features = be64(head, 88);
                h.refcount_order = be32(head, 96);
                h.header_length = be32(head, 100);
                if h.header_length < 104 || h.header_length % 8 != 0 {
                    return Err(Corrupt(format!(
                        "invalid header length {}",
                        h.header_length
                    )));
                }
                if h.header_length > 104 {
                    if head.len() < 105 {
                        return Err(Corrupt("truncated version 3 header".into()));
                    }
                    h.compression_type = head[104];
                }
            }
            v => return Err(Unsupported(format!("qcow2 version {v}"))),
        }
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&h.cluster_bits) {
            return Err(Corrupt(format!(
                "cluster_bits {} outside {MIN_CLUSTER_BITS}..={MAX_CLUSTER_BITS}",
                h.cluster_bits
            )));
        }
        let cluster_size = 1u64 << h.cluster_bits;
        if h.header_length as u64 > cluster_size {
            return Err(Corrupt(format!(
                "header length {} exceeds the cluster size",
                h.header_length
            )));
        }
        if h.refcount_order > 6 {
            return Err(Corrupt(format!(
                "refcount_order {} above 6",
                h.refcount_order
            )));
        }
        if h.crypt_method != 0 {
            return Err(Unsupported("encrypted images".into()));
        }
        let known = INCOMPAT_DIRTY
            | INCOMPAT_CORRUPT
            | INCOMPAT_DATA_FILE
            | INCOMPAT_COMPRESSION
            | INCOMPAT_EXTL2;
        if h.incompatible_features & !known != 0 {
            return Err(Unsupported(format!(
                "unknown incompatible features {:#x}",
                h.incompatible_features & !known
            )));
        }
        // Images whose header has no compression_type field (version 2, or a version 3
        // header of 104 bytes) are zlib, as in QEMU.
        let feature_bit_set = h.incompatible_features & INCOMPAT_COMPRESSION != 0;
        if CompressionType::check(h.compression_type, feature_bit_set).is_none() {
            return Err(HeaderError::CompressionType {
                compression_type: h.compression_type,
                feature_bit_set,
            });
        }
        if h.incompatible_features & INCOMPAT_DATA_FILE != 0 {
            return Err(Unsupported("external data files".into()));
        }
        if h.incompatible_features & INCOMPAT_EXTL2 != 0 {
            return Err(Unsupported("extended L2 entries (subclusters)".into()));
        }
        if h.size > i64::MAX as u64 {
            return Err(Corrupt(format!("virtual size {} too large", h.size)));
        }

        // Header extensions live between the fixed header and the end of the first cluster.
        let ext_end = (cluster_size as usize).min(head.len());
        let mut at = h.header_length as usize;
        loop {
            if at + 8 > ext_end {
                break; // no end marker within the first cluster: tolerate, like QEMU
            }
            let kind = be32(head, at);
            let len = be32(head, at + 4) as usize;
            let data_at = at + 8;
            if kind == EXT_END {
                break;
            }
            if len > ext_end - data_at {
                return Err(Corrupt(format!(
                    "header extension {kind:#x} at {at} overruns the first cluster"
                )));
            }
            if kind == EXT_BACKING_FORMAT {
                let fmt = String::from_utf8_lossy(&head[data_at..data_at + len]).into_owned();
                h.backing_format = Some(fmt);
            }
            at = data_at + len.div_ceil(8) * 8;
        }

        if h.backing_file_offset != 0 {
            if h.backing_file_size > MAX_BACKING_NAME || h.backing_file_size == 0 {
                return Err(Corrupt(format!(
                    "backing file name length {} (must be 1..={MAX_BACKING_NAME})",
                    h.backing_file_size
                )));
            }
            let start = h.backing_file_offset;
            let end = start + h.backing_file_size as u64;
            if end > cluster_size || end as usize > head.len() || end > file_len {
                return Err(Corrupt(format!(
                    "backing file name at {start}..{end} lies outside the first cluster"
                )));
            }
            let name = &head[start as usize..end as usize];
            h.backing_file = Some(String::from_utf8_lossy(name).into_owned());
        }
        Ok(h)
    }

    /// Serializes a version 3 header with its extensions and backing file name into a buffer of
    /// `cluster_size` bytes (the first cluster). Returns None if it does not fit.
    pub fn serialize_v3(&self) -> Option<Vec<u8>> {
        let cluster_size = 1usize << self.cluster_bits;
        let mut b = vec![0u8; cluster_size];
        let put32 =
            |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_be_bytes());
        b[0..4].copy_from_slice(&MAGIC);
        put32(&mut b, 4, 3);
        put32(&mut b, 20, self.cluster_bits);
        put32(&mut b, 32, 0);
        put32(&mut b, 36, self.l1_size);
        put32(&mut b, 56, self.refcount_table_clusters);
        put32(&mut b, 60, self.nb_snapshots);
        put32(&mut b, 96, self.refcount_order);
        put32(&mut b, 100, V3_HEADER_LEN);
        let put64 =
            |b: &mut Vec<u8>, at: usize, v: u64| b[at..at + 8].copy_from_slice(&v.to_be_bytes());
        put64(&mut b, 24, self.size);
        put64(&mut b, 40, self.l1_table_offset);
        put64(&mut b, 48, self.refcount_table_offset);
        put64(&mut b, 64, self.snapshots_offset);
        put64(&mut b, 72, self.incompatible_features);
        put64(&mut b, 80, self.compatible_features);
        put64(&mut b, 88, self.autoclear_features);
        b[104] = self.compression_type;

        let mut at = V3_HEADER_LEN as usize;
        if let Some(fmt) = &self.backing_format {
            let padded = fmt.len().div_ceil(8) * 8;
            if at + 8 + padded > cluster_size {
                return None;
            }
            put32(&mut b, at, EXT_BACKING_FORMAT);
            put32(&mut b, at + 4, fmt.len() as u32);
            b[at + 8..at + 8 + fmt.len()].copy_from_slice(fmt.as_bytes());
            at += 8 + padded;
        }
        // End-of-extensions marker (already zero), then the backing file name.
        at += 8;
        if let Some(name) = &self.backing_file {
            if name.is_empty()
                || name.len() > MAX_BACKING_NAME as usize
                || at + name.len() > cluster_size
            {
                return None;
            }
            b[at..at + name.len()].copy_from_slice(name.as_bytes());
            put64(&mut b, 8, at as u64);
            put32(&mut b, 16, name.len() as u32);
        }
        Some(b)
    }
}
