//! Whole-image operations: convert and compare.

use std::path::Path;

use crate::error::Result;
use crate::format::{Allocation, Format};
use crate::image::{create_output, open_output, CreateOptions, Image};

/// Work is done in chunks of this size (and progress reported after each).
const CHUNK: u64 = 2 << 20;
/// How far convert's reader asks the kernel to read ahead of itself.
const PREFETCH: u64 = 8 * CHUNK;

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
/// If the copy fails, the destination is removed again (unless it was not ours: an existing
/// file without `overwrite`, or one locked by somebody else, is left untouched).
/// `progress(done, total)` is called as work proceeds.
pub fn convert(
    source: &mut Image,
    destination: &Path,
    options: &ConvertOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<()> {
    let size = source.virtual_size();
    // Until `keep` below, any error (or panic) drops `output`, which removes the partial
    // file; `target` is declared later, so it is closed first.
    let output = create_output(
        destination,
        &CreateOptions {
            format: options.format,
            size: Some(size),
            cluster_size: options.cluster_size,
            overwrite: options.overwrite,
            ..CreateOptions::default()
        },
    )?;
    let mut target = open_output(&output, options.format)?;
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
            let mut prefetched = 0;
            while offset < size {
                // Keep the kernel reading PREFETCH bytes ahead: with a cold page cache the
                // disk then works on several requests at once instead of one read at a time.
                while prefetched < size.min(offset + PREFETCH) {
                    source.prefetch(prefetched, CHUNK);
                    prefetched += CHUNK;
                }
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
    target.flush()?;
    drop(target);
    output.keep();
    Ok(())
}

/// A piece of the source: its data, or None where it reads as zeros.
struct Chunk {
    offset: u64,
    len: u64,
    data: Option<Vec<u8>>,
}

/// Reads the next extent (at most `max_len`): its data, or None where it reads as zeros.
/// (Reading a chunk's holes too, as zeros, to write whole chunks at once was tried: scanning
/// the zeros cost more CPU than the saved writes, on this machine's loaded 2 cores.)
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
    if let Some(qcow2) = target.as_qcow2_mut() {
        if qcow2.cluster_size() == granularity {
            // Whole chunk at once: one refcount, one data and one L2 write per L2 table.
            return qcow2.write_skipping_zero_clusters(data, offset);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::OpenOptions;
    use std::os::unix::fs::FileExt;
    use std::process::Command;

    /// Convert to qcow2 writes each chunk with a few batched writes, skipping zero clusters:
    /// data clusters scattered between zero ones (and a chunk boundary inside a cluster) must
    /// land where they belong, the zero ones stay unallocated, and qemu-img agrees.
    #[test]
    fn convert_to_qcow2_keeps_scattered_clusters_and_leaves_zero_ones_unallocated() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.raw");
        let cluster = 65536u64;
        let size = 8 << 20;
        let file = std::fs::File::create(&src).unwrap();
        file.set_len(size).unwrap();
        let mut data_clusters = 0u64;
        for i in 0..size / cluster {
            // Holes in every 5th cluster, so data comes in runs of four; written zeros
            // (data in the source, zeros to the guest) in every 7th, some inside the runs.
            let fill = if i % 5 == 4 {
                None
            } else if i % 7 == 2 {
                Some(0u8)
            } else {
                Some((i % 251) as u8 + 1)
            };
            if let Some(byte) = fill {
                file.write_all_at(&vec![byte; cluster as usize], i * cluster)
                    .unwrap();
                data_clusters += (byte != 0) as u64;
            }
        }
        // A stretch that starts 4 KiB into a cluster (raw holes have 4 KiB granularity).
        let odd = 84 * cluster + 4096;
        file.write_all_at(&[0x5a; 12288], odd).unwrap();
        drop(file);

        let mut source = Image::open(&src, &OpenOptions::default()).unwrap();
        let out = dir.path().join("out.qcow2");
        let options = ConvertOptions {
            format: Format::Qcow2,
            cluster_size: cluster,
            overwrite: false,
        };
        convert(&mut source, &out, &options, &mut |_, _| {}).unwrap();

        let run = |args: &[&str]| {
            let output = Command::new("qemu-img").args(args).output().unwrap();
            assert!(output.status.success(), "qemu-img {args:?}: {output:?}");
            String::from_utf8(output.stdout).unwrap()
        };
        let (src_s, out_s) = (src.to_str().unwrap(), out.to_str().unwrap());
        run(&["compare", "-f", "raw", "-F", "qcow2", src_s, out_s]);
        run(&["check", out_s]);
        let map: Vec<serde_json::Value> =
            serde_json::from_str(&run(&["map", "--output", "json", out_s])).unwrap();
        let data_bytes: u64 = map
            .iter()
            .filter(|e| e["data"] == true)
            .map(|e| e["length"].as_u64().unwrap())
            .sum();
        // The odd stretch lies in cluster 84 (a hole before: 84 % 5 == 4), adding one cluster.
        assert_eq!(data_bytes, (data_clusters + 1) * cluster);
    }
}
