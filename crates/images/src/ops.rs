//! Whole-image operations: convert and compare.

use std::path::Path;

use crate::error::Result;
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
    progress(0, size);
    // A reader thread stays a few chunks ahead, so reading the source overlaps with writing.
    std::thread::scope(|scope| -> Result<()> {
        let (chunks, received) = std::sync::mpsc::sync_channel::<Result<Chunk>>(4);
        scope.spawn(move || {
            let mut offset = 0;
            while offset < size {
                let chunk = read_chunk(source, offset, CHUNK.min(size - offset));
                let next = chunk.as_ref().ok().map(|c| c.offset + c.len);
                if chunks.send(chunk).is_err() {
                    break; // the writer gave up
                }
                match next {
                    Some(next) => offset = next,
                    None => break, // the error was sent
                }
            }
        });
        for chunk in received {
            let chunk = chunk?;
            if let Some(data) = &chunk.data {
                write_nonzero(&mut target, data, chunk.offset, granularity)?;
            }
            progress(chunk.offset + chunk.len, size);
        }
        Ok(())
    })?;
    target.flush()
}

/// A piece of the source: its data, or None where it reads as zeros.
struct Chunk {
    offset: u64,
    len: u64,
    data: Option<Vec<u8>>,
}

fn read_chunk(source: &mut Image, offset: u64, max_len: u64) -> Result<Chunk> {
    let (kind, len) = extent(source, offset, max_len)?;
    let data = if kind == Allocation::Data {
        let mut data = vec![0u8; len as usize];
        source.read_at(&mut data, offset)?;
        Some(data)
    } else {
        None
    };
    Ok(Chunk { offset, len, data })
}

/// Writes the runs of non-zero blocks of `data` (blocks aligned to `granularity` in guest
/// offsets), so that zero blocks stay holes in the new image.
fn write_nonzero(target: &mut Image, data: &[u8], offset: u64, granularity: u64) -> Result<()> {
    let len = data.len() as u64;
    let mut run_start: Option<usize> = None;
    let mut at = 0usize;
    while at < data.len() {
        let guest = offset + at as u64;
        let block_end = ((guest / granularity + 1) * granularity - offset).min(len) as usize;
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
    Ok(())
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
