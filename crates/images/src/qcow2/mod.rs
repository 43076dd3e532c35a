//! qcow2 (version 3, and version 2 for reading): reading, writing with copy-on-write through
//! snapshots, refcount maintenance, creation, check/repair, snapshots and resize.
//!
//! Design: the L1 table and the refcount table are held in memory; L2 tables and refcount
//! blocks are read on demand into bounded caches. Every metadata update is written through at
//! once, in an order that can only leak clusters if the process dies half-way (refcount first,
//! then data, then the L2 entry that points at it): `check -r leaks` repairs such images.
//! New clusters are always taken at the end of the file.

pub mod check;
pub mod create;
pub mod header;
pub mod snapshot;

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{ImageError, Result};
use crate::format::{Allocation, BackingImage};
use crate::raw::advise_willneed;
use header::*;
pub use snapshot::Snapshot;

pub(crate) const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
pub(crate) const REFT_OFFSET_MASK: u64 = 0xffff_ffff_ffff_fe00;
pub(crate) const COPIED: u64 = 1 << 63;
pub(crate) const COMPRESSED: u64 = 1 << 62;
pub(crate) const ZERO: u64 = 1;

/// Upper bound for the bytes kept in each metadata cache.
const CACHE_BYTES: usize = 32 << 20;

/// What one L2 entry says about a guest cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mapping {
    /// Not allocated here: read from the backing file, or zeros.
    Unallocated,
    /// Reads as zeros; may still own a preallocated host cluster.
    Zero { host: Option<u64> },
    /// Plain data at `host`.
    Data { host: u64 },
    /// Deflate-compressed data: `len` bytes at `offset` (refcounts cover the 512-byte sectors
    /// holding them).
    Compressed { offset: u64, len: u64 },
}

/// A cache of metadata tables keyed by host offset, dropped wholesale when it grows too big
/// (everything in it is already on disk, so dropping is always safe).
struct Cache<T> {
    map: HashMap<u64, T>,
    bytes: usize,
    item_bytes: usize,
}

impl<T> Cache<T> {
    fn new(item_bytes: usize) -> Self {
        Cache {
            map: HashMap::new(),
            bytes: 0,
            item_bytes,
        }
    }
    fn insert(&mut self, key: u64, value: T) {
        if self.bytes + self.item_bytes > CACHE_BYTES {
            self.map.clear();
            self.bytes = 0;
        }
        if self.map.insert(key, value).is_none() {
            self.bytes += self.item_bytes;
        }
    }
}

pub struct Qcow2 {
    pub(crate) file: File,
    pub(crate) path: PathBuf,
    pub(crate) writable: bool,
    pub(crate) header: Header,
    pub(crate) cluster_bits: u32,
    pub(crate) cluster_size: u64,
    /// Entries per L2 table.
    pub(crate) l2_entries: u64,
    pub(crate) l1: Vec<u64>,
    pub(crate) reftable: Vec<u64>,
    /// How many reftable entries the on-disk table has room for.
    reftable_disk_entries: u64,
    refblocks: Cache<Vec<u8>>,
    l2_tables: Cache<Vec<u64>>,
    /// First cluster index never handed out yet (allocation is append-only).
    pub(crate) next_free: u64,
    pub(crate) file_len: u64,
    pub(crate) snapshots: Vec<Snapshot>,
    pub(crate) snapshot_table_bytes: u64,
    pub(crate) backing: Option<Box<dyn BackingImage>>,
    /// The last decompressed cluster (guest cluster offset, data), for sequential small reads.
    last_compressed: Option<(u64, Vec<u8>)>,
}

impl std::fmt::Debug for Qcow2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qcow2")
            .field("path", &self.path)
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

fn is_block_device(file: &File) -> bool {
    use std::os::unix::fs::FileTypeExt;
    file.metadata()
        .is_ok_and(|meta| meta.file_type().is_block_device())
}

pub(crate) fn read_at_exact(file: &File, path: &Path, buf: &mut [u8], offset: u64) -> Result<()> {
    file.read_exact_at(buf, offset)
        .map_err(|e| ImageError::io(path, e))
}

/// Reads at `offset`, filling whatever lies beyond the end of the file with zeros.
fn read_at_zero_fill(file: &File, path: &Path, buf: &mut [u8], offset: u64) -> Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => {
                buf[done..].fill(0);
                break;
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ImageError::io(path, e)),
        }
    }
    Ok(())
}

/// Reads and checks the header of the qcow2 image in `file`; returns it with the file length.
pub(crate) fn read_header(file: &File, path: &Path) -> Result<(Header, u64)> {
    let file_len = crate::file::file_length(file, path)?;
    // The first cluster (or as much as is there: at most 2 MiB) holds the header, its
    // extensions and the backing file name.
    let head_len = file_len.min(1 << MAX_CLUSTER_BITS) as usize;
    let mut head = vec![0u8; head_len];
    read_at_exact(file, path, &mut head, 0)?;
    let header = Header::parse(&head, file_len).map_err(|e| match e {
        HeaderError::Corrupt(w) => ImageError::corrupt(path, w),
        HeaderError::Unsupported(w) => ImageError::unsupported(path, w),
        HeaderError::CompressionType {
            compression_type,
            feature_bit_set,
        } => ImageError::CompressionType {
            path: path.to_path_buf(),
            compression_type,
            feature_bit_set,
        },
    })?;
    Ok((header, file_len))
}

impl Qcow2 {
    /// Opens the qcow2 metadata of `file` (the backing file is attached by the caller).
    pub(crate) fn open(file: File, path: &Path, writable: bool, repair: bool) -> Result<Qcow2> {
        let (header, file_len) = read_header(&file, path)?;
        let corrupt = |what: String| ImageError::corrupt(path, what);
        if writable && !repair && header.incompatible_features & INCOMPAT_CORRUPT != 0 {
            return Err(corrupt(
                "the image is marked corrupt; repair it with `check -r all` first".into(),
            ));
        }
        if writable && !repair && header.incompatible_features & INCOMPAT_DIRTY != 0 {
            return Err(corrupt(
                "the image is marked dirty (lazy refcounts); repair it with `check -r all` first"
                    .into(),
            ));
        }
        let cluster_bits = header.cluster_bits;
        let cluster_size = 1u64 << cluster_bits;
        let l2_entries = cluster_size / 8;

        // L1 table: must cover the virtual size, fit QEMU's limit and lie inside the file.
        let guest_clusters = header.size.div_ceil(cluster_size);
        let needed_l1 = guest_clusters.div_ceil(l2_entries);
        if (header.l1_size as u64) < needed_l1 {
            return Err(corrupt(format!(
                "L1 table has {} entries, the virtual size {} needs {needed_l1}",
                header.l1_size, header.size
            )));
        }
        let l1_bytes = header.l1_size as u64 * 8;
        if l1_bytes > MAX_L1_BYTES {
            return Err(corrupt(format!(
                "L1 table of {} entries exceeds QEMU's 32 MiB limit",
                header.l1_size
            )));
        }
        let l1 = read_table(
            &file,
            path,
            header.l1_table_offset,
            l1_bytes,
            cluster_size,
            file_len,
            "L1 table",
        )?;

        // Refcount table.
        let reftable_bytes = header.refcount_table_clusters as u64 * cluster_size;
        if reftable_bytes > MAX_REFTABLE_BYTES || header.refcount_table_clusters == 0 {
            return Err(corrupt(format!(
                "refcount table of {} clusters (must be 1..={} bytes)",
                header.refcount_table_clusters, MAX_REFTABLE_BYTES
            )));
        }
        let reftable = read_table(
            &file,
            path,
            header.refcount_table_offset,
            reftable_bytes,
            cluster_size,
            file_len,
            "refcount table",
        )?;

        let mut image = Qcow2 {
            file,
            path: path.to_path_buf(),
            writable,
            cluster_bits,
            cluster_size,
            l2_entries,
            l1,
            reftable_disk_entries: reftable.len() as u64,
            reftable,
            refblocks: Cache::new(cluster_size as usize),
            l2_tables: Cache::new(cluster_size as usize),
            next_free: file_len.div_ceil(cluster_size),
            file_len,
            snapshots: Vec::new(),
            snapshot_table_bytes: 0,
            backing: None,
            last_compressed: None,
            header,
        };
        if is_block_device(&image.file) {
            // A device's length is its capacity, not where the image's data ends: new clusters
            // go right after the last one the refcounts say is in use.
            image.next_free = image.clusters_in_use_end()?;
        }
        (image.snapshots, image.snapshot_table_bytes) = snapshot::read_table(&image)?;
        if writable && image.header.autoclear_features != 0 {
            // We do not maintain bitmaps: clearing the autoclear bits tells QEMU they are stale.
            image.header.autoclear_features = 0;
            image.write_meta(&0u64.to_be_bytes(), OFF_AUTOCLEAR)?;
        }
        Ok(image)
    }

    pub fn header(&self) -> &Header {
        &self.header
    }
    pub fn virtual_size(&self) -> u64 {
        self.header.size
    }
    pub fn cluster_size(&self) -> u64 {
        self.cluster_size
    }
    pub fn snapshots(&self) -> &[Snapshot] {
        &self.snapshots
    }
    pub(crate) fn refcount_bits(&self) -> u32 {
        1 << self.header.refcount_order
    }
    pub(crate) fn max_refcount(&self) -> u64 {
        match self.header.refcount_order {
            6 => u64::MAX,
            order => (1u64 << (1u32 << order)) - 1,
        }
    }
    /// log2 of the clusters covered by one refcount block.
    fn refblock_shift(&self) -> u32 {
        self.cluster_bits + 3 - self.header.refcount_order
    }

    // ----- raw metadata I/O --------------------------------------------------------------

    pub(crate) fn write_meta(&mut self, data: &[u8], offset: u64) -> Result<()> {
        if !self.writable {
            return Err(ImageError::ReadOnly {
                path: self.path.clone(),
            });
        }
        self.file
            .write_all_at(data, offset)
            .map_err(|e| ImageError::io(&self.path, e))?;
        self.file_len = self.file_len.max(offset + data.len() as u64);
        Ok(())
    }

    /// Checks that a metadata cluster offset is aligned and inside the file.
    pub(crate) fn check_meta_cluster(&self, offset: u64, what: &str) -> Result<()> {
        if offset % self.cluster_size != 0 {
            return Err(ImageError::corrupt(
                &self.path,
                format!("{what} offset {offset:#x} is not cluster aligned"),
            ));
        }
        if offset == 0 {
            return Err(ImageError::corrupt(
                &self.path,
                format!("{what} points at offset 0 (the header)"),
            ));
        }
        if offset.saturating_add(self.cluster_size) > self.file_len {
            return Err(ImageError::corrupt(
                &self.path,
                format!(
                    "{what} at offset {offset:#x} lies past the end of the file (length {})",
                    self.file_len
                ),
            ));
        }
        Ok(())
    }

    // ----- L2 tables ---------------------------------------------------------------------

    pub(crate) fn l2_table(&mut self, offset: u64) -> Result<&mut Vec<u64>> {
        if !self.l2_tables.map.contains_key(&offset) {
            self.check_meta_cluster(offset, "L2 table")?;
            let mut raw = vec![0u8; self.cluster_size as usize];
            read_at_exact(&self.file, &self.path, &mut raw, offset)?;
            let table = raw
                .chunks_exact(8)
                .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
                .collect();
            self.l2_tables.insert(offset, table);
        }
        // The entry is present: it was either there or inserted just above.
        self.l2_tables
            .map
            .get_mut(&offset)
            .ok_or_else(|| ImageError::corrupt(&self.path, "L2 cache lost an entry"))
    }

    fn indices(&self, guest: u64) -> (usize, usize) {
        let l2_bits = self.cluster_bits - 3;
        let l1_index = (guest >> (self.cluster_bits + l2_bits)) as usize;
        let l2_index = ((guest >> self.cluster_bits) & (self.l2_entries - 1)) as usize;
        (l1_index, l2_index)
    }

    /// The raw L2 entry for a guest offset (0 when no L2 table is allocated).
    pub(crate) fn l2_entry(&mut self, guest: u64) -> Result<u64> {
        let (l1_index, l2_index) = self.indices(guest);
        let l1_entry = *self
            .l1
            .get(l1_index)
            .ok_or_else(|| ImageError::corrupt(&self.path, "guest offset beyond the L1 table"))?;
        let l2_offset = l1_entry & OFFSET_MASK;
        if l2_offset == 0 {
            return Ok(0);
        }
        Ok(self.l2_table(l2_offset)?[l2_index])
    }

    pub(crate) fn decode(&self, entry: u64) -> Result<Mapping> {
        if entry & COMPRESSED != 0 {
            let x = 62 - (self.cluster_bits - 8);
            let offset = entry & ((1u64 << x) - 1);
            let sectors = ((entry >> x) & ((1u64 << (self.cluster_bits - 8)) - 1)) + 1;
            let len = sectors * 512 - (offset & 511);
            return Ok(Mapping::Compressed { offset, len });
        }
        let host = entry & OFFSET_MASK;
        if host % self.cluster_size != 0 {
            return Err(ImageError::corrupt(
                &self.path,
                format!("L2 entry {entry:#x} points at unaligned offset {host:#x}"),
            ));
        }
        Ok(if entry & ZERO != 0 {
            Mapping::Zero {
                host: (host != 0).then_some(host),
            }
        } else if host == 0 {
            Mapping::Unallocated
        } else {
            Mapping::Data { host }
        })
    }

    /// Host clusters whose refcounts an L2 entry holds (empty for unallocated/plain zero).
    pub(crate) fn host_clusters(&self, mapping: Mapping) -> std::ops::Range<u64> {
        match mapping {
            Mapping::Unallocated | Mapping::Zero { host: None } => 0..0,
            Mapping::Zero { host: Some(h) } | Mapping::Data { host: h } => {
                h >> self.cluster_bits..(h >> self.cluster_bits) + 1
            }
            Mapping::Compressed { offset, len } => {
                let start = offset & !511;
                let end = (offset + len).div_ceil(512) * 512;
                start >> self.cluster_bits..end.div_ceil(self.cluster_size)
            }
        }
    }

    // ----- refcounts ---------------------------------------------------------------------

    fn refblock(&mut self, offset: u64) -> Result<&mut Vec<u8>> {
        if !self.refblocks.map.contains_key(&offset) {
            self.check_meta_cluster(offset, "refcount block")?;
            let mut raw = vec![0u8; self.cluster_size as usize];
            read_at_exact(&self.file, &self.path, &mut raw, offset)?;
            self.refblocks.insert(offset, raw);
        }
        self.refblocks
            .map
            .get_mut(&offset)
            .ok_or_else(|| ImageError::corrupt(&self.path, "refcount cache lost an entry"))
    }

    /// The stored refcount of a host cluster (0 where no refcount block exists).
    pub fn refcount(&mut self, cluster: u64) -> Result<u64> {
        let shift = self.refblock_shift();
        let rt_index = (cluster >> shift) as usize;
        let Some(&entry) = self.reftable.get(rt_index) else {
            return Ok(0);
        };
        let block_offset = entry & REFT_OFFSET_MASK;
        if block_offset == 0 {
            return Ok(0);
        }
        let order = self.header.refcount_order;
        let index = (cluster & ((1u64 << shift) - 1)) as usize;
        let block = self.refblock(block_offset)?;
        Ok(refcount_get(block, index, order))
    }

    /// One past the highest host cluster with a non-zero refcount.
    fn clusters_in_use_end(&mut self) -> Result<u64> {
        let shift = self.refblock_shift();
        let order = self.header.refcount_order;
        for rt_index in (0..self.reftable.len()).rev() {
            let block_offset = self.reftable[rt_index] & REFT_OFFSET_MASK;
            if block_offset == 0 {
                continue;
            }
            let entries = 1usize << shift;
            let block = self.refblock(block_offset)?;
            if let Some(index) = (0..entries)
                .rev()
                .find(|&i| refcount_get(block, i, order) != 0)
            {
                return Ok(((rt_index as u64) << shift) + index as u64 + 1);
            }
        }
        Err(ImageError::corrupt(
            &self.path,
            "no cluster has a reference, not even the header's",
        ))
    }

    /// Sets the stored refcount of a host cluster, creating refcount blocks (and growing the
    /// refcount table) as needed.
    pub(crate) fn set_refcount(&mut self, cluster: u64, value: u64) -> Result<()> {
        if value > self.max_refcount() {
            return Err(ImageError::corrupt(
                &self.path,
                format!(
                    "refcount of cluster {cluster} would overflow {} bits",
                    self.refcount_bits()
                ),
            ));
        }
        let shift = self.refblock_shift();
        let rt_index = cluster >> shift;
        let block_offset = self.ensure_refblock(rt_index)?;
        let order = self.header.refcount_order;
        let index = (cluster & ((1u64 << shift) - 1)) as usize;
        let block = self.refblock(block_offset)?;
        let (at, len) = refcount_set(block, index, order, value);
        let bytes = block[at..at + len].to_vec();
        self.write_meta(&bytes, block_offset + at as u64)
    }

    pub(crate) fn adjust_refcount(&mut self, cluster: u64, delta: i64) -> Result<()> {
        let old = self.refcount(cluster)?;
        let new = if delta >= 0 {
            old.checked_add(delta as u64)
        } else {
            old.checked_sub(delta.unsigned_abs())
        };
        let new = new.ok_or_else(|| {
            ImageError::corrupt(
                &self.path,
                format!("refcount of cluster {cluster} is {old}, cannot apply {delta:+}"),
            )
        })?;
        self.set_refcount(cluster, new)
    }

    fn set_reftable_entry(&mut self, index: usize, value: u64) -> Result<()> {
        self.reftable[index] = value;
        if (index as u64) < self.reftable_disk_entries {
            let at = self.header.refcount_table_offset + index as u64 * 8;
            self.write_meta(&value.to_be_bytes(), at)?;
        }
        Ok(())
    }

    /// The offset of the refcount block for reftable index `rt_index`, allocating it if needed.
    fn ensure_refblock(&mut self, rt_index: u64) -> Result<u64> {
        if rt_index >= self.reftable.len() as u64 {
            self.grow_reftable(rt_index + 1)?;
        }
        let index = rt_index as usize;
        let existing = self.reftable[index] & REFT_OFFSET_MASK;
        if existing != 0 {
            return Ok(existing);
        }
        let shift = self.refblock_shift();
        let cluster = self.next_free;
        self.next_free += 1;
        let offset = cluster << self.cluster_bits;
        let mut block = vec![0u8; self.cluster_size as usize];
        let covers_itself = cluster >> shift == rt_index;
        if covers_itself {
            refcount_set(
                &mut block,
                (cluster & ((1u64 << shift) - 1)) as usize,
                self.header.refcount_order,
                1,
            );
        }
        self.write_meta(&block, offset)?;
        self.refblocks.insert(offset, block);
        self.set_reftable_entry(index, offset)?;
        if !covers_itself {
            self.set_refcount(cluster, 1)?;
        }
        Ok(offset)
    }

    /// Moves the refcount table to a bigger place at the end of the file.
    fn grow_reftable(&mut self, min_entries: u64) -> Result<()> {
        let per_cluster = self.cluster_size / 8;
        let shift = self.refblock_shift();
        let old_offset = self.header.refcount_table_offset;
        let old_clusters = self.header.refcount_table_clusters as u64;
        let mut clusters = min_entries
            .max(self.reftable.len() as u64 * 2)
            .div_ceil(per_cluster);
        // The new table (and a few refcount blocks) must themselves be covered.
        for _ in 0..3 {
            let end = self.next_free + clusters + 4;
            clusters = clusters.max(((end >> shift) + 2).div_ceil(per_cluster));
        }
        if clusters * self.cluster_size > MAX_REFTABLE_BYTES {
            return Err(ImageError::unsupported(
                &self.path,
                "the refcount table would exceed 8 MiB (image too large for its cluster size)",
            ));
        }
        let new_first = self.next_free;
        self.next_free += clusters;
        self.reftable.resize((clusters * per_cluster) as usize, 0);
        for cluster in new_first..new_first + clusters {
            self.set_refcount(cluster, 1)?;
        }
        let bytes: Vec<u8> = self.reftable.iter().flat_map(|e| e.to_be_bytes()).collect();
        let new_offset = new_first << self.cluster_bits;
        self.write_meta(&bytes, new_offset)?;
        let mut field = new_offset.to_be_bytes().to_vec();
        field.extend_from_slice(&(clusters as u32).to_be_bytes());
        self.write_meta(&field, OFF_REFTABLE)?;
        self.header.refcount_table_offset = new_offset;
        self.header.refcount_table_clusters = clusters as u32;
        self.reftable_disk_entries = clusters * per_cluster;
        for cluster in 0..old_clusters {
            self.adjust_refcount((old_offset >> self.cluster_bits) + cluster, -1)?;
        }
        Ok(())
    }

    /// Allocates `count` contiguous clusters at the end of the image with refcount 1.
    pub(crate) fn alloc_clusters(&mut self, count: u64) -> Result<u64> {
        let first = self.next_free;
        self.next_free += count;
        let shift = self.refblock_shift();
        let order = self.header.refcount_order;
        let mut cluster = first;
        while cluster < first + count {
            let rt_index = cluster >> shift;
            let block_offset = self.ensure_refblock(rt_index)?;
            let stop = ((rt_index + 1) << shift).min(first + count);
            let block = self.refblock(block_offset)?;
            let (mut lo, mut hi) = (usize::MAX, 0);
            for c in cluster..stop {
                let (at, len) = refcount_set(block, (c & ((1u64 << shift) - 1)) as usize, order, 1);
                lo = lo.min(at);
                hi = hi.max(at + len);
            }
            let bytes = block[lo..hi].to_vec();
            self.write_meta(&bytes, block_offset + lo as u64)?;
            cluster = stop;
        }
        Ok(first << self.cluster_bits)
    }

    /// Drops the references an L2 entry holds.
    pub(crate) fn release(&mut self, mapping: Mapping) -> Result<()> {
        for cluster in self.host_clusters(mapping) {
            self.adjust_refcount(cluster, -1)?;
        }
        Ok(())
    }

    // ----- guest reads -------------------------------------------------------------------

    fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        if offset
            .checked_add(len)
            .is_none_or(|end| end > self.header.size)
        {
            return Err(ImageError::OutOfRange {
                path: self.path.clone(),
                offset,
                len,
                size: self.header.size,
            });
        }
        Ok(())
    }

    pub fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.check_range(offset, buf.len() as u64)?;
        let mut done = 0usize;
        while done < buf.len() {
            let guest = offset + done as u64;
            let within = guest & (self.cluster_size - 1);
            let mut n = ((self.cluster_size - within) as usize).min(buf.len() - done);
            let entry = self.l2_entry(guest)?;
            let mapping = self.decode(entry)?;
            if let Mapping::Data { host } = mapping {
                // Clusters that follow each other on disk too are read with one call.
                while done + n < buf.len() {
                    let next_guest = guest + n as u64;
                    let next_entry = self.l2_entry(next_guest)?;
                    let next = self.decode(next_entry)?;
                    let next_host = host + within + n as u64;
                    if next != (Mapping::Data { host: next_host }) || next_host >= self.file_len {
                        break;
                    }
                    n += (self.cluster_size as usize).min(buf.len() - done - n);
                }
            }
            let chunk = &mut buf[done..done + n];
            match mapping {
                Mapping::Zero { .. } => chunk.fill(0),
                Mapping::Data { host } => {
                    // A cluster that starts past the end of the file was never written: the
                    // entry is corrupt. (A cluster cut short by the end of file reads zeros.)
                    if host >= self.file_len {
                        return Err(ImageError::corrupt(
                            &self.path,
                            format!("data cluster for guest offset {guest:#x} at {host:#x} lies past the end of the file"),
                        ));
                    }
                    read_at_zero_fill(&self.file, &self.path, chunk, host + within)?
                }
                Mapping::Compressed {
                    offset: coffset,
                    len,
                } => {
                    let cluster_start = guest - within;
                    let data = self.decompress(cluster_start, coffset, len)?;
                    chunk.copy_from_slice(&data[within as usize..within as usize + n]);
                }
                Mapping::Unallocated => self.read_backing(chunk, guest)?,
            }
            done += n;
        }
        Ok(())
    }

    /// See [`Image::prefetch`]: hints the host ranges of the data clusters mapped in the guest
    /// range (merged where they follow each other on disk), and the backing file's part of
    /// unallocated ones. Stops quietly at metadata errors: the read will report them.
    pub(crate) fn prefetch(&mut self, offset: u64, len: u64) {
        let end = offset.saturating_add(len).min(self.header.size);
        let mut guest = offset - offset % self.cluster_size;
        let mut host_run: Option<(u64, u64)> = None; // (start, end) in the file
        let mut backing_run: Option<(u64, u64)> = None; // (start, end) in the guest
        while guest < end {
            let Ok(mapping) = self.l2_entry(guest).and_then(|e| self.decode(e)) else {
                break;
            };
            match mapping {
                Mapping::Data { host } => match &mut host_run {
                    Some((_, run_end)) if *run_end == host => *run_end += self.cluster_size,
                    _ => {
                        if let Some((start, run_end)) = host_run.take() {
                            advise_willneed(&self.file, start, run_end - start);
                        }
                        host_run = Some((host, host + self.cluster_size));
                    }
                },
                Mapping::Unallocated if self.backing.is_some() => match &mut backing_run {
                    Some((_, run_end)) if *run_end == guest => *run_end += self.cluster_size,
                    _ => {
                        if let Some((start, run_end)) = backing_run.take() {
                            self.prefetch_backing(start, run_end);
                        }
                        backing_run = Some((guest, guest + self.cluster_size));
                    }
                },
                _ => {}
            }
            guest += self.cluster_size;
        }
        if let Some((start, run_end)) = host_run {
            advise_willneed(&self.file, start, run_end - start);
        }
        if let Some((start, run_end)) = backing_run {
            self.prefetch_backing(start, run_end);
        }
    }

    fn prefetch_backing(&mut self, start: u64, end: u64) {
        if let Some(backing) = &mut self.backing {
            let end = end.min(backing.virtual_size());
            if end > start {
                backing.prefetch(start, end - start);
            }
        }
    }

    fn read_backing(&mut self, chunk: &mut [u8], guest: u64) -> Result<()> {
        match &mut self.backing {
            Some(backing) => {
                let backing_size = backing.virtual_size();
                let inside = backing_size.saturating_sub(guest).min(chunk.len() as u64) as usize;
                if inside > 0 {
                    backing.read_at(&mut chunk[..inside], guest)?;
                }
                chunk[inside..].fill(0);
            }
            None => chunk.fill(0),
        }
        Ok(())
    }

    fn decompress(&mut self, guest_cluster: u64, offset: u64, len: u64) -> Result<&[u8]> {
        let cached = matches!(&self.last_compressed, Some((g, _)) if *g == guest_cluster);
        if !cached {
            if self.header.compression_type != 0 {
                return Err(ImageError::unsupported(
                    &self.path,
                    "zstd-compressed clusters",
                ));
            }
            if offset.saturating_add(len) > self.file_len || len > 2 * self.cluster_size {
                return Err(ImageError::corrupt(
                    &self.path,
                    format!("compressed cluster at {offset:#x}+{len} lies outside the file"),
                ));
            }
            let mut input = vec![0u8; len as usize];
            read_at_exact(&self.file, &self.path, &mut input, offset)?;
            let mut out = vec![0u8; self.cluster_size as usize];
            let mut inflater = flate2::Decompress::new(false);
            let status = inflater.decompress(&input, &mut out, flate2::FlushDecompress::Finish);
            let produced = inflater.total_out();
            if status.is_err() || produced != self.cluster_size {
                return Err(ImageError::corrupt(
                    &self.path,
                    format!("compressed cluster at {offset:#x} does not inflate to one cluster"),
                ));
            }
            self.last_compressed = Some((guest_cluster, out));
        }
        match &self.last_compressed {
            Some((_, data)) => Ok(data),
            None => Err(ImageError::corrupt(&self.path, "decompression cache empty")),
        }
    }

    /// How the guest range starting at `offset` is stored (at most to the end of its cluster).
    pub fn allocation(&mut self, offset: u64, max_len: u64) -> Result<(Allocation, u64)> {
        if offset >= self.header.size {
            return Ok((Allocation::Zero, 0));
        }
        let within = offset & (self.cluster_size - 1);
        let len = (self.cluster_size - within)
            .min(max_len)
            .min(self.header.size - offset);
        let entry = self.l2_entry(offset)?;
        Ok(match self.decode(entry)? {
            Mapping::Zero { .. } => (Allocation::Zero, len),
            Mapping::Data { .. } | Mapping::Compressed { .. } => (Allocation::Data, len),
            Mapping::Unallocated => match &mut self.backing {
                Some(backing) if offset < backing.virtual_size() => {
                    let in_backing = len.min(backing.virtual_size() - offset);
                    backing.allocation(offset, in_backing)?
                }
                _ => (Allocation::Zero, len),
            },
        })
    }

    // ----- guest writes ------------------------------------------------------------------

    pub fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        if !self.writable {
            return Err(ImageError::ReadOnly {
                path: self.path.clone(),
            });
        }
        self.check_range(offset, buf.len() as u64)?;
        self.write_spans(buf, offset, false)
    }

    /// Like [`write_at`](Self::write_at), but clusters that `buf` fills with zeros and that
    /// already read as zeros (unallocated without a backing file, or zero clusters) are left
    /// alone instead of being allocated: convert's way of keeping zero ranges unallocated
    /// while writing a whole chunk with a few writes.
    pub(crate) fn write_skipping_zero_clusters(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        if !self.writable {
            return Err(ImageError::ReadOnly {
                path: self.path.clone(),
            });
        }
        self.check_range(offset, buf.len() as u64)?;
        self.write_spans(buf, offset, true)
    }

    fn write_spans(&mut self, buf: &[u8], offset: u64, skip_zero_clusters: bool) -> Result<()> {
        // Work one L2 table (at most 32 MiB) at a time, so the clusters of a span are
        // allocated in one batch and their L2 entries written together.
        let l2_span = self.cluster_size * self.l2_entries;
        let mut done = 0usize;
        while done < buf.len() {
            let guest = offset + done as u64;
            let span_end = (guest / l2_span + 1) * l2_span;
            let n = ((span_end - guest).min(32 << 20) as usize).min(buf.len() - done);
            self.write_span(&buf[done..done + n], guest, skip_zero_clusters)?;
            done += n;
        }
        Ok(())
    }

    fn set_l1_entry(&mut self, index: usize, value: u64) -> Result<()> {
        self.l1[index] = value;
        let at = self.header.l1_table_offset + index as u64 * 8;
        self.write_meta(&value.to_be_bytes(), at)
    }

    pub(crate) fn set_l2_entry(&mut self, l2_offset: u64, index: usize, value: u64) -> Result<()> {
        self.l2_table(l2_offset)?[index] = value;
        self.write_meta(&value.to_be_bytes(), l2_offset + index as u64 * 8)
    }

    /// The L2 table for `l1_index`, allocated or copied (when shared with a snapshot) so that
    /// it may be modified.
    fn writable_l2(&mut self, l1_index: usize) -> Result<u64> {
        let entry = self.l1[l1_index];
        let offset = entry & OFFSET_MASK;
        if offset != 0 && entry & COPIED != 0 {
            return Ok(offset);
        }
        let table = if offset == 0 {
            vec![0u64; self.l2_entries as usize]
        } else {
            self.l2_table(offset)?.clone()
        };
        let new = self.alloc_clusters(1)?;
        let bytes: Vec<u8> = table.iter().flat_map(|e| e.to_be_bytes()).collect();
        self.write_meta(&bytes, new)?;
        self.l2_tables.insert(new, table);
        self.set_l1_entry(l1_index, new | COPIED)?;
        if offset != 0 {
            self.adjust_refcount(offset >> self.cluster_bits, -1)?;
        }
        Ok(new)
    }

    /// Writes `data` at guest `offset`; the range lies within one L2 table. New clusters are
    /// allocated first (refcounts), then data is written, then the L2 entries: dying half-way
    /// leaks the new clusters but never corrupts the image.
    fn write_span(&mut self, data: &[u8], offset: u64, skip_zero_clusters: bool) -> Result<()> {
        struct Piece {
            cluster_start: u64,
            within: u64,
            range: std::ops::Range<usize>,
            l2_index: usize,
            old_entry: u64,
            in_place: Option<u64>,
            /// The cluster reads as zeros now (unallocated without backing file, or zero).
            reads_zero: bool,
        }
        let (l1_index, _) = self.indices(offset);
        if l1_index >= self.l1.len() {
            return Err(ImageError::corrupt(
                &self.path,
                "guest offset beyond the L1 table",
            ));
        }
        let l2_offset = self.writable_l2(l1_index)?;
        let mut pieces = Vec::new();
        let mut to_allocate = 0;
        let mut done = 0usize;
        while done < data.len() {
            let guest = offset + done as u64;
            let within = guest & (self.cluster_size - 1);
            let n = ((self.cluster_size - within) as usize).min(data.len() - done);
            let (_, l2_index) = self.indices(guest);
            let entry = self.l2_table(l2_offset)?[l2_index];
            let mapping = self.decode(entry)?;
            let reads_zero = matches!(mapping, Mapping::Zero { .. })
                || (mapping == Mapping::Unallocated && self.backing.is_none());
            if skip_zero_clusters && reads_zero && data[done..done + n].iter().all(|&b| b == 0) {
                done += n;
                continue;
            }
            let in_place = match mapping {
                Mapping::Data { host } if entry & COPIED != 0 => {
                    self.check_not_metadata(host, l2_offset)?;
                    Some(host)
                }
                _ => {
                    to_allocate += 1;
                    None
                }
            };
            pieces.push(Piece {
                cluster_start: guest - within,
                within,
                range: done..done + n,
                l2_index,
                old_entry: entry,
                in_place,
                reads_zero,
            });
            done += n;
        }
        let mut next_host = if to_allocate > 0 {
            self.alloc_clusters(to_allocate)?
        } else {
            0
        };

        // Data. Runs of whole new clusters are contiguous on disk: one write each (gathered
        // into one buffer where skipped zero clusters leave gaps in the guest range).
        let mut run: Option<(u64, u64, Vec<std::ops::Range<usize>>)> = None; // host, len, ranges
        let mut linked = Vec::new();
        for piece in &pieces {
            if let Some(host) = piece.in_place {
                self.write_data(&data[piece.range.clone()], host + piece.within)?;
                continue;
            }
            let host = next_host;
            next_host += self.cluster_size;
            linked.push((piece.l2_index, host, piece.old_entry));
            if self
                .last_compressed
                .as_ref()
                .is_some_and(|(g, _)| *g == piece.cluster_start)
            {
                self.last_compressed = None;
            }
            let whole = piece.within == 0 && piece.range.len() as u64 == self.cluster_size;
            if whole {
                match &mut run {
                    Some((run_host, len, ranges)) if *run_host + *len == host => {
                        *len += self.cluster_size;
                        match ranges.last_mut() {
                            Some(last) if last.end == piece.range.start => {
                                last.end = piece.range.end
                            }
                            _ => ranges.push(piece.range.clone()),
                        }
                    }
                    _ => {
                        if let Some((run_host, _, ranges)) = run.take() {
                            self.write_gathered(data, &ranges, run_host)?;
                        }
                        run = Some((host, self.cluster_size, vec![piece.range.clone()]));
                    }
                }
                continue;
            }
            if piece.reads_zero && host >= self.file_len {
                // The new cluster lies past the end of the file, so it reads as zeros
                // already: write only the new bytes (not a whole cluster), and extend the
                // file over the rest of the cluster (a hole).
                self.write_data(&data[piece.range.clone()], host + piece.within)?;
                let cluster_end = host + self.cluster_size;
                if self.file_len < cluster_end {
                    self.file
                        .set_len(cluster_end)
                        .map_err(|e| ImageError::io(&self.path, e))?;
                    self.file_len = cluster_end;
                }
                continue;
            }
            let mut merged = vec![0u8; self.cluster_size as usize];
            let valid = (self.header.size - piece.cluster_start).min(self.cluster_size) as usize;
            self.read_at(&mut merged[..valid], piece.cluster_start)?;
            let at = piece.within as usize;
            merged[at..at + piece.range.len()].copy_from_slice(&data[piece.range.clone()]);
            self.write_data(&merged, host)?;
        }
        if let Some((run_host, _, ranges)) = run.take() {
            self.write_gathered(data, &ranges, run_host)?;
        }

        // L2 entries (one write for the whole changed stretch), then drop the old references.
        if let (Some(first), Some(last)) = (linked.first(), linked.last()) {
            let (lo, hi) = (first.0, last.0);
            let table = self.l2_table(l2_offset)?;
            for &(index, host, _) in &linked {
                table[index] = host | COPIED;
            }
            let bytes: Vec<u8> = table[lo..=hi]
                .iter()
                .flat_map(|e| e.to_be_bytes())
                .collect();
            self.write_meta(&bytes, l2_offset + lo as u64 * 8)?;
        }
        for (_, _, old_entry) in linked {
            let mapping = self.decode(old_entry)?;
            self.release(mapping)?;
        }
        Ok(())
    }

    /// Refuses in-place guest writes into metadata a damaged image maps as data (the header,
    /// L1 table, refcount table, snapshot table, or the L2 table being updated).
    fn check_not_metadata(&self, host: u64, l2_offset: u64) -> Result<()> {
        let h = &self.header;
        let cs = self.cluster_size;
        let overlaps = |start: u64, bytes: u64| {
            let end = start.saturating_add(bytes.div_ceil(cs).max(1) * cs);
            host >= start && host < end
        };
        let metadata = host == l2_offset
            || overlaps(0, cs)
            || overlaps(h.l1_table_offset, self.l1.len() as u64 * 8)
            || overlaps(
                h.refcount_table_offset,
                h.refcount_table_clusters as u64 * cs,
            )
            || (h.nb_snapshots > 0 && overlaps(h.snapshots_offset, self.snapshot_table_bytes));
        if metadata {
            return Err(ImageError::corrupt(
                &self.path,
                format!("L2 entry maps guest data onto metadata at {host:#x}; refusing to write"),
            ));
        }
        Ok(())
    }

    /// Writes the pieces `ranges` of `data` back to back at `host`.
    fn write_gathered(
        &mut self,
        data: &[u8],
        ranges: &[std::ops::Range<usize>],
        host: u64,
    ) -> Result<()> {
        if let [range] = ranges {
            return self.write_data(&data[range.clone()], host);
        }
        let mut gathered = Vec::with_capacity(ranges.iter().map(|r| r.len()).sum());
        for range in ranges {
            gathered.extend_from_slice(&data[range.clone()]);
        }
        self.write_data(&gathered, host)
    }

    fn write_data(&mut self, data: &[u8], host: u64) -> Result<()> {
        self.file
            .write_all_at(data, host)
            .map_err(|e| ImageError::io(&self.path, e))?;
        self.file_len = self.file_len.max(host + data.len() as u64);
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

    /// Rewrites the COPIED flags of the active L1 and L2 tables from the refcounts (a cluster
    /// referenced exactly once is "copied", i.e. may be written in place). Returns how many
    /// entries were wrong.
    pub(crate) fn fix_copied_flags(&mut self, repair: bool) -> Result<u64> {
        let mut wrong = 0;
        let mut seen = std::collections::HashSet::new();
        for l1_index in 0..self.l1.len() {
            let l1_entry = self.l1[l1_index];
            let l2_offset = l1_entry & OFFSET_MASK;
            // A table listed twice (only in broken images) is still visited once.
            if l2_offset == 0 || !seen.insert(l2_offset) {
                continue;
            }
            if self.check_meta_cluster(l2_offset, "L2 table").is_err() {
                continue; // reported by check
            }
            let refcount = self.refcount(l2_offset >> self.cluster_bits)?;
            let want = if refcount == 1 {
                l1_entry | COPIED
            } else {
                l1_entry & !COPIED
            };
            if want != l1_entry {
                wrong += 1;
                if repair {
                    self.set_l1_entry(l1_index, want)?;
                }
            }
            for l2_index in 0..self.l2_entries as usize {
                let entry = self.l2_table(l2_offset)?[l2_index];
                let Ok(mapping) = self.decode(entry) else {
                    continue;
                };
                let host = match mapping {
                    Mapping::Data { host } | Mapping::Zero { host: Some(host) } => host,
                    _ => continue,
                };
                let refcount = self.refcount(host >> self.cluster_bits)?;
                let want = if refcount == 1 {
                    entry | COPIED
                } else {
                    entry & !COPIED
                };
                if want != entry {
                    wrong += 1;
                    if repair {
                        // The L2 table itself must be ours alone to be edited in place.
                        let l2 = self.l1[l1_index] & OFFSET_MASK;
                        self.set_l2_entry(l2, l2_index, want)?;
                    }
                }
            }
        }
        Ok(wrong)
    }

    /// Writes the virtual size field.
    pub(crate) fn write_size(&mut self, size: u64) -> Result<()> {
        self.write_meta(&size.to_be_bytes(), OFF_SIZE)?;
        self.header.size = size;
        Ok(())
    }

    /// Points the header at a new L1 table (already written).
    pub(crate) fn write_l1_location(&mut self, offset: u64, entries: u32) -> Result<()> {
        let mut field = entries.to_be_bytes().to_vec();
        field.extend_from_slice(&offset.to_be_bytes());
        self.write_meta(&field, OFF_L1)?;
        self.header.l1_size = entries;
        self.header.l1_table_offset = offset;
        Ok(())
    }

    /// Changes the virtual size. Shrinking drops the clusters beyond the new end (refused while
    /// snapshots exist, as QEMU does).
    pub fn resize(&mut self, new_size: u64) -> Result<()> {
        let old_size = self.header.size;
        if new_size % 512 != 0 {
            return Err(ImageError::InvalidArgument(format!(
                "the new size {new_size} must be a multiple of 512 for qcow2"
            )));
        }
        if new_size > i64::MAX as u64 - self.cluster_size {
            return Err(ImageError::InvalidArgument(format!(
                "size {new_size} is too large"
            )));
        }
        let needed_l1 = new_size
            .div_ceil(self.cluster_size)
            .div_ceil(self.l2_entries);
        if new_size < old_size {
            if !self.snapshots.is_empty() {
                return Err(ImageError::InvalidArgument(
                    "cannot shrink an image that has internal snapshots".into(),
                ));
            }
            let first_dropped = new_size.div_ceil(self.cluster_size) * self.cluster_size;
            let mut guest = first_dropped;
            while guest < old_size {
                let (l1_index, l2_index) = self.indices(guest);
                let l2_offset = self.l1[l1_index] & OFFSET_MASK;
                if l2_offset != 0 {
                    let entry = self.l2_table(l2_offset)?[l2_index];
                    if entry != 0 {
                        let mapping = self.decode(entry)?;
                        let l2 = self.writable_l2(l1_index)?;
                        self.set_l2_entry(l2, l2_index, 0)?;
                        self.release(mapping)?;
                    }
                }
                guest += self.cluster_size;
            }
            self.write_size(new_size)?;
            return Ok(());
        }
        if needed_l1 > self.l1.len() as u64 {
            if needed_l1 * 8 > MAX_L1_BYTES {
                return Err(ImageError::InvalidArgument(format!(
                    "size {new_size} needs an L1 table above 32 MiB at this cluster size"
                )));
            }
            let clusters = (needed_l1 * 8).div_ceil(self.cluster_size);
            let old_offset = self.header.l1_table_offset;
            let old_clusters = (self.l1.len() as u64 * 8).div_ceil(self.cluster_size);
            let new_offset = self.alloc_clusters(clusters)?;
            let mut table = self.l1.clone();
            table.resize((clusters * self.cluster_size / 8) as usize, 0);
            let bytes: Vec<u8> = table.iter().flat_map(|e| e.to_be_bytes()).collect();
            self.write_meta(&bytes, new_offset)?;
            self.write_l1_location(new_offset, needed_l1 as u32)?;
            table.truncate(needed_l1 as usize);
            self.l1 = table;
            for cluster in 0..old_clusters {
                self.adjust_refcount((old_offset >> self.cluster_bits) + cluster, -1)?;
            }
        }
        self.write_size(new_size)?;
        // Bytes past the old end in its last cluster may be stale (left by an earlier shrink),
        // and a bigger backing file would show through the new range: both must read as zeros.
        let tail_end = (old_size.div_ceil(self.cluster_size) * self.cluster_size).min(new_size);
        if tail_end > old_size {
            let entry = self.l2_entry(old_size)?;
            let mapping = self.decode(entry)?;
            let backing_shows = self
                .backing
                .as_ref()
                .is_some_and(|b| b.virtual_size() > old_size);
            if backing_shows || matches!(mapping, Mapping::Data { .. } | Mapping::Compressed { .. })
            {
                self.write_at(&vec![0u8; (tail_end - old_size) as usize], old_size)?;
            }
        }
        if let Some(backing_size) = self.backing.as_ref().map(|b| b.virtual_size()) {
            let end = backing_size.min(new_size);
            if end > tail_end {
                self.zero_clusters(tail_end, end)?;
            }
        }
        Ok(())
    }

    /// Makes the cluster-aligned guest range `start..end` (end may be the unaligned disk end)
    /// read as zeros without allocating data: zero-flagged L2 entries (qcow2 v3).
    fn zero_clusters(&mut self, start: u64, end: u64) -> Result<()> {
        let mut guest = start;
        while guest < end {
            if self.header.version < 3 {
                let n = (end - guest).min(self.cluster_size);
                self.write_at(&vec![0u8; n as usize], guest)?;
                guest += n;
                continue;
            }
            let (l1_index, l2_index) = self.indices(guest);
            let l2_offset = self.writable_l2(l1_index)?;
            let old = self.l2_table(l2_offset)?[l2_index];
            self.set_l2_entry(l2_offset, l2_index, ZERO)?;
            let mapping = self.decode(old)?;
            self.release(mapping)?;
            guest += self.cluster_size;
        }
        Ok(())
    }
}

/// Reads a table of big-endian u64 entries, refusing tables outside the file.
fn read_table(
    file: &File,
    path: &Path,
    offset: u64,
    bytes: u64,
    cluster_size: u64,
    file_len: u64,
    what: &str,
) -> Result<Vec<u64>> {
    if bytes == 0 {
        return Ok(Vec::new());
    }
    if offset % cluster_size != 0 {
        return Err(ImageError::corrupt(
            path,
            format!("{what} offset {offset:#x} is not cluster aligned"),
        ));
    }
    if offset.checked_add(bytes).is_none_or(|end| end > file_len) {
        return Err(ImageError::corrupt(
            path,
            format!("{what} at {offset:#x} ({bytes} bytes) extends past the end of the file ({file_len} bytes)"),
        ));
    }
    let mut raw = vec![0u8; bytes as usize];
    read_at_exact(file, path, &mut raw, offset)?;
    Ok(raw
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
        .collect())
}

/// Reads refcount entry `index` of a refcount block with 2^order-bit entries.
pub(crate) fn refcount_get(block: &[u8], index: usize, order: u32) -> u64 {
    match order {
        0..=2 => {
            let bits = 1usize << order;
            let per_byte = 8 / bits;
            let byte = block[index / per_byte];
            ((byte >> ((index % per_byte) * bits)) & ((1u16 << bits) - 1) as u8) as u64
        }
        3 => block[index] as u64,
        4 => u16::from_be_bytes([block[index * 2], block[index * 2 + 1]]) as u64,
        5 => {
            let at = index * 4;
            u32::from_be_bytes([block[at], block[at + 1], block[at + 2], block[at + 3]]) as u64
        }
        _ => {
            let at = index * 8;
            let mut a = [0u8; 8];
            a.copy_from_slice(&block[at..at + 8]);
            u64::from_be_bytes(a)
        }
    }
}

/// Writes refcount entry `index`; returns the byte range that changed.
pub(crate) fn refcount_set(
    block: &mut [u8],
    index: usize,
    order: u32,
    value: u64,
) -> (usize, usize) {
    match order {
        0..=2 => {
            let bits = 1usize << order;
            let per_byte = 8 / bits;
            let shift = (index % per_byte) * bits;
            let mask = (((1u16 << bits) - 1) as u8) << shift;
            let at = index / per_byte;
            block[at] = (block[at] & !mask) | (((value as u8) << shift) & mask);
            (at, 1)
        }
        3 => {
            block[index] = value as u8;
            (index, 1)
        }
        4 => {
            block[index * 2..index * 2 + 2].copy_from_slice(&(value as u16).to_be_bytes());
            (index * 2, 2)
        }
        5 => {
            block[index * 4..index * 4 + 4].copy_from_slice(&(value as u32).to_be_bytes());
            (index * 4, 4)
        }
        _ => {
            block[index * 8..index * 8 + 8].copy_from_slice(&value.to_be_bytes());
            (index * 8, 8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Image;

    /// Small writes into new clusters write only their bytes (the rest of the cluster is a
    /// hole past the old end of the file), and the image still reads back right and passes
    /// qemu-img check and compare.
    #[test]
    fn small_allocating_writes_leave_the_rest_of_the_cluster_a_hole() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("w.qcow2");
        let size = 64u64 << 20;
        let options = crate::CreateOptions {
            format: crate::Format::Qcow2,
            size: Some(size),
            ..crate::CreateOptions::default()
        };
        crate::create(&img, &options).unwrap();
        let open = crate::OpenOptions {
            write: true,
            ..crate::OpenOptions::default()
        };
        let mut image = Image::open(&img, &open).unwrap();
        let mut model = vec![0u8; size as usize];
        // 4 KiB writes at every 37th 4 KiB block: new clusters, at varying places inside them,
        // some clusters written twice; the last one ends the disk.
        let mut offsets: Vec<u64> = (0..size / 4096).step_by(37).map(|b| b * 4096).collect();
        offsets.push(size - 4096);
        offsets.push(4096);
        for (i, &offset) in offsets.iter().enumerate() {
            let data = vec![(i % 255) as u8 + 1; 4096];
            image.write_at(&data, offset).unwrap();
            model[offset as usize..offset as usize + 4096].copy_from_slice(&data);
        }
        image.flush().unwrap();
        let mut back = vec![0u8; size as usize];
        image.read_at(&mut back, 0).unwrap();
        assert!(back == model, "read back differs from what was written");
        drop(image);

        let allocated = std::fs::metadata(&img).unwrap().blocks() * 512;
        assert!(
            allocated < 4 << 20,
            "{} writes of 4 KiB allocated {allocated} bytes on disk",
            offsets.len()
        );
        let raw = dir.path().join("model.raw");
        std::fs::write(&raw, &model).unwrap();
        for args in [
            vec!["check", img.to_str().unwrap()],
            vec![
                "compare",
                "-F",
                "raw",
                img.to_str().unwrap(),
                raw.to_str().unwrap(),
            ],
        ] {
            let out = std::process::Command::new("qemu-img")
                .args(&args)
                .output()
                .unwrap();
            assert!(out.status.success(), "qemu-img {args:?}: {out:?}");
        }
    }

    #[test]
    fn refcount_entries_round_trip_for_every_width() {
        for order in 0..=6u32 {
            let mut block = vec![0u8; 512];
            let max = if order == 6 {
                u64::MAX
            } else {
                (1u64 << (1u32 << order)) - 1
            };
            let entries = (512 * 8) >> order;
            for i in 0..entries {
                refcount_set(&mut block, i, order, (i as u64) & max);
            }
            for i in 0..entries {
                assert_eq!(
                    refcount_get(&block, i, order),
                    (i as u64) & max,
                    "order {order} index {i}"
                );
            }
        }
    }
}
