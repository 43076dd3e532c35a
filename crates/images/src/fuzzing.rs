//! Support for the `qcow2` fuzz target and the hostile-input tests: open whatever bytes are in a
//! file as an image and exercise every read path. Errors are expected; panics, hangs and huge
//! allocations are bugs.

use std::path::Path;

use crate::image::{Image, OpenOptions};

/// Opens `path` (no locks, no backing file), reads a bounded sample of the disk, queries
/// allocation, and runs a read-only check. Returns how many reads succeeded.
pub fn read_through(path: &Path) -> usize {
    let options = OpenOptions {
        force_share: true,
        no_backing: true,
        ..OpenOptions::default()
    };
    let Ok(mut image) = Image::open(path, &options) else {
        return 0;
    };
    let size = image.virtual_size();
    let mut ok = 0;
    let mut buf = vec![0u8; 64 << 10];
    // The first 1 MiB, then 64 spots spread over the whole disk, each 64 KiB long.
    let mut spots: Vec<u64> = (0..16).map(|i| i * (64 << 10)).collect();
    spots.extend((0..64).map(|i| size / 64 * i));
    for offset in spots {
        if offset >= size {
            continue;
        }
        let len = (size - offset).min(buf.len() as u64) as usize;
        if image.read_at(&mut buf[..len], offset).is_ok() {
            ok += 1;
        }
        let _ = image.allocation(offset, len as u64);
    }
    if let Some(qcow2) = image.as_qcow2_mut() {
        let _ = qcow2.check(None);
        let _ = qcow2.snapshots().len();
    }
    ok
}
