//! Whole-image operations: convert and compare.

use std::path::Path;

use crate::error::{ImageError, Result};
use crate::image::{create, Allocation, CreateOptions, Format, Image, OpenOptions};

/// Work is done in chunks of this size (and progress reported after each).
const CHUNK: u64 = 2 << 20;

/// Merges consecutive ranges with the same allocation, up to `max_len`.
fn extent(image: &mut Image, offset: u64, max_len: u64) -> Result<(Allocation, u64)> {
    let (kind, mut len) = image.allocation(offset, max_len)?;
    while len < max_len {
        let (next, more) = image.allocation(offset + len, max_len - len)?;
        if next != kind || more == 0 {
            break;
        }
        len += more;
    }
    Ok((kind, len.max(1)))
}

/// Parameters of `convert`.
#[derive(Clone, Debug)]
pub struct ConvertOptions {
    pub format: Format,
    pub cluster_size: u64,
    pub overwrite: bool,
}

/// Copies the guest-visible contents of `source` (flattening its backing chain) into a new
/// image. Ranges that read as zeros are not written, so they stay holes / unallocated.
/// `progress(done, total)` is called as work proceeds.
pub fn convert(
    source: &mut Image,
    destination: &Path,
    options: &ConvertOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<()> {
    let size = source.virtual_size();
    create(
        destination,
        &CreateOptions {
            format: options.format,
            size: Some(size),
            cluster_size: options.cluster_size,
            overwrite: options.overwrite,
            ..CreateOptions::default()
        },
    )?;
    let mut target = Image::open(
        destination,
        &OpenOptions {
            format: Some(options.format),
            write: true,
            ..OpenOptions::default()
        },
    )?;
    // Zero detection granularity: a whole cluster for qcow2 (a partial one would allocate it).
    let granularity = match options.format {
        Format::Qcow2 => options.cluster_size,
        Format::Raw => 4096,
    };
    let mut buf = vec![0u8; CHUNK as usize];
    let mut offset = 0;
    progress(0, size);
    while offset < size {
        let (kind, len) = extent(source, offset, CHUNK.min(size - offset))?;
        if kind == Allocation::Data {
            let data = &mut buf[..len as usize];
            source.read_at(data, offset)?;
            // Write runs of non-zero blocks (blocks aligned to the granularity in guest offsets).
            let mut run_start: Option<usize> = None;
            let mut at = 0usize;
            while at < data.len() {
                let guest = offset + at as u64;
                let block_end =
                    ((guest / granularity + 1) * granularity - offset).min(len) as usize;
                let nonzero = data[at..block_end].iter().any(|&b| b != 0);
                match (nonzero, run_start) {
                    (true, None) => run_start = Some(at),
                    (false, Some(start)) => {
                        target.write_at(&data[start..at], offset + start as u64)?;
                        run_start = None;
                    }
                    _ => {}
                }
                at = block_end;
            }
            if let Some(start) = run_start {
                target.write_at(&data[start..], offset + start as u64)?;
            }
        }
        offset += len;
        progress(offset, size);
    }
    target.flush()
}

/// Result of `compare`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comparison {
    Identical,
    /// First differing guest offset.
    Mismatch {
        offset: u64,
    },
}

/// Compares guest-visible contents like `qemu-img compare` (not strict): an image larger than
/// the other must read as zeros beyond the shorter one's end.
pub fn compare(
    a: &mut Image,
    b: &mut Image,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Comparison> {
    let common = a.virtual_size().min(b.virtual_size());
    let total = a.virtual_size().max(b.virtual_size());
    let mut buf_a = vec![0u8; CHUNK as usize];
    let mut buf_b = vec![0u8; CHUNK as usize];
    let mut offset = 0;
    while offset < common {
        let (kind_a, len_a) = extent(a, offset, CHUNK.min(common - offset))?;
        let (kind_b, len_b) = extent(b, offset, len_a)?;
        let len = len_a.min(len_b);
        if !(kind_a == Allocation::Zero && kind_b == Allocation::Zero) {
            let (x, y) = (&mut buf_a[..len as usize], &mut buf_b[..len as usize]);
            a.read_at(x, offset)?;
            b.read_at(y, offset)?;
            if let Some(i) = x.iter().zip(y.iter()).position(|(p, q)| p != q) {
                return Ok(Comparison::Mismatch {
                    offset: offset + i as u64,
                });
            }
        }
        offset += len;
        progress(offset, total);
    }
    let longer = if a.virtual_size() > common { a } else { b };
    while offset < total {
        let (kind, len) = extent(longer, offset, CHUNK.min(total - offset))?;
        if kind == Allocation::Data {
            let x = &mut buf_a[..len as usize];
            longer.read_at(x, offset)?;
            if let Some(i) = x.iter().position(|&p| p != 0) {
                return Ok(Comparison::Mismatch {
                    offset: offset + i as u64,
                });
            }
        }
        offset += len;
        progress(offset, total);
    }
    Ok(Comparison::Identical)
}

/// Fails with a clear error if `path` would be overwritten by accident.
pub fn refuse_existing(path: &Path, overwrite: bool) -> Result<()> {
    if !overwrite && path.exists() {
        return Err(ImageError::Exists {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}
