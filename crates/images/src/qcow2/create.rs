//! Writing a new, empty qcow2 image (version 3, 16-bit refcounts) with QEMU's preallocation modes.
//!
//! Layout: header cluster, refcount table, L1 table, refcount blocks, then (when preallocating)
//! all L2 tables and the data clusters. The refcount table is sized for the fully allocated
//! image so that normal use never has to move it.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use super::header::{Header, MAX_L1_BYTES, MAX_REFTABLE_BYTES};
use super::COPIED;
use crate::error::{ImageError, Result};
use crate::format::Preallocation;

const REFCOUNT_ORDER: u32 = 4;

/// What a new qcow2 image looks like.
pub(crate) struct NewQcow2<'a> {
    pub size: u64,
    pub cluster_size: u64,
    pub preallocation: Preallocation,
    /// (backing file name as stored, backing format name)
    pub backing: Option<(&'a str, &'a str)>,
}

impl NewQcow2<'_> {
    /// Builds the header; fails (before anything is written) if the parameters are invalid.
    pub fn header(&self) -> Result<Header> {
        let cs = self.cluster_size;
        if !cs.is_power_of_two() || !(512..=2 << 20).contains(&cs) {
            return Err(ImageError::InvalidArgument(format!(
                "cluster size {cs} must be a power of two between 512 and 2M"
            )));
        }
        if self.size > i64::MAX as u64 / 2 {
            return Err(ImageError::InvalidArgument(format!(
                "size {} is too large",
                self.size
            )));
        }
        let l1_entries = self.size.div_ceil(cs).div_ceil(cs / 8);
        if l1_entries * 8 > MAX_L1_BYTES {
            return Err(ImageError::InvalidArgument(format!(
                "size {} needs an L1 table above 32 MiB with {cs}-byte clusters (use a bigger cluster_size)",
                self.size
            )));
        }
        let header = Header {
            version: 3,
            cluster_bits: cs.trailing_zeros(),
            size: self.size,
            l1_size: l1_entries as u32,
            refcount_order: REFCOUNT_ORDER,
            header_length: super::header::V3_HEADER_LEN,
            backing_file: self.backing.map(|(name, _)| name.to_string()),
            backing_format: self.backing.map(|(_, fmt)| fmt.to_string()),
            ..Header::default()
        };
        if header.serialize_v3().is_none() {
            return Err(ImageError::InvalidArgument(
                "backing file name is empty or does not fit in the header cluster".into(),
            ));
        }
        Ok(header)
    }

    /// Writes the image into `file` (which must be empty).
    pub fn write(&self, file: &File, path: &Path) -> Result<()> {
        let mut header = self.header()?;
        let io = |e| ImageError::io(path, e);
        let cs = self.cluster_size;
        let l2_entries = cs / 8;
        let epb = cs * 8 / (1 << REFCOUNT_ORDER); // refcount entries per block
        let data_clusters = self.size.div_ceil(cs);
        let l1_entries = header.l1_size as u64;
        let l1_clusters = (l1_entries * 8).div_ceil(cs).max(1);
        let prealloc = self.preallocation != Preallocation::Off;
        let (l2_count, prealloc_data) = if prealloc {
            (l1_entries, data_clusters)
        } else {
            (0, 0)
        };

        let (mut rt, mut rb) = (1u64, 1u64);
        loop {
            let total = 1 + rt + l1_clusters + rb + l2_count + prealloc_data;
            let need_rb = total.div_ceil(epb);
            let full = 1 + rt + l1_clusters + need_rb + l1_entries + data_clusters + 16;
            let need_rt = (full.div_ceil(epb) * 8)
                .div_ceil(cs)
                .min(MAX_REFTABLE_BYTES / cs);
            if need_rb <= rb && need_rt <= rt {
                break;
            }
            rb = rb.max(need_rb);
            rt = rt.max(need_rt);
        }
        if rb * 8 > rt * cs {
            return Err(ImageError::InvalidArgument(
                "image too large for its cluster size (refcount table above 8 MiB)".into(),
            ));
        }
        let rt_offset = cs;
        let l1_offset = rt_offset + rt * cs;
        let rb_offset = l1_offset + l1_clusters * cs;
        let l2_offset = rb_offset + rb * cs;
        let data_offset = l2_offset + l2_count * cs;
        let total = data_offset / cs + prealloc_data;

        header.refcount_table_offset = rt_offset;
        header.refcount_table_clusters = rt as u32;
        header.l1_table_offset = l1_offset;
        let first = header
            .serialize_v3()
            .ok_or_else(|| ImageError::InvalidArgument("header does not fit".into()))?;
        let put = |bytes: &[u8], at: u64| file.write_all_at(bytes, at).map_err(io);
        put(&first, 0)?;

        let table = |entries: &mut dyn Iterator<Item = u64>, clusters: u64| -> Vec<u8> {
            let mut bytes: Vec<u8> = entries.flat_map(|e| e.to_be_bytes()).collect();
            bytes.resize((clusters * cs) as usize, 0);
            bytes
        };
        put(
            &table(&mut (0..rb).map(|i| rb_offset + i * cs), rt),
            rt_offset,
        )?;
        let l1 = (0..l1_entries).map(|i| {
            if prealloc {
                (l2_offset + i * cs) | COPIED
            } else {
                0
            }
        });
        put(&table(&mut l1.into_iter(), l1_clusters), l1_offset)?;
        for block in 0..rb {
            let mut bytes = vec![0u8; cs as usize];
            for index in 0..epb {
                if block * epb + index < total {
                    bytes[index as usize * 2..index as usize * 2 + 2]
                        .copy_from_slice(&1u16.to_be_bytes());
                }
            }
            put(&bytes, rb_offset + block * cs)?;
        }
        for l2 in 0..l2_count {
            let entries = (0..l2_entries).map(|j| {
                let k = l2 * l2_entries + j;
                if k < data_clusters {
                    (data_offset + k * cs) | COPIED
                } else {
                    0
                }
            });
            put(&table(&mut entries.into_iter(), 1), l2_offset + l2 * cs)?;
        }

        let end = total * cs;
        match self.preallocation {
            Preallocation::Off => file.set_len(data_offset).map_err(io)?,
            Preallocation::Metadata => file.set_len(end).map_err(io)?,
            Preallocation::Falloc => fallocate(file, path, data_offset, end - data_offset)?,
            Preallocation::Full => {
                // Setting the final length first spares the file system an i_size update
                // (a journalled inode change) on every extending write.
                file.set_len(end).map_err(io)?;
                write_zeros(file, path, data_offset, end - data_offset)?
            }
        }
        file.sync_data().map_err(io)
    }
}

pub(crate) fn fallocate(file: &File, path: &Path, offset: u64, len: u64) -> Result<()> {
    if len == 0 {
        return Ok(());
    }
    // SAFETY: plain syscall on a valid fd; no memory is passed.
    let rc = unsafe {
        libc::posix_fallocate(file.as_raw_fd(), offset as libc::off_t, len as libc::off_t)
    };
    if rc != 0 {
        return Err(ImageError::io(path, std::io::Error::from_raw_os_error(rc)));
    }
    Ok(())
}

pub(crate) fn write_zeros(file: &File, path: &Path, offset: u64, len: u64) -> Result<()> {
    const CHUNK: u64 = 4 << 20;
    let zeros = vec![0u8; CHUNK.min(len) as usize];
    let mut done = 0;
    while done < len {
        let n = CHUNK.min(len - done);
        file.write_all_at(&zeros[..n as usize], offset + done)
            .map_err(|e| ImageError::io(path, e))?;
        done += n;
    }
    Ok(())
}
