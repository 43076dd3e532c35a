//! virtio-blk requests as Linux's virtio_blk driver builds them, and helpers for tests that
//! run qemu-img against images a device holds.

use std::path::Path;

use super::{Buf, Driver, DATA_BASE};

pub const T_IN: u32 = 0;
pub const T_OUT: u32 = 1;
pub const T_FLUSH: u32 = 4;
pub const T_GET_ID: u32 = 8;
pub const S_OK: u8 = 0;
pub const S_IOERR: u8 = 1;
pub const S_UNSUPP: u8 = 2;
pub const F_SEG_MAX: u64 = 1 << 2;
pub const F_RO: u64 = 1 << 5;
pub const F_BLK_SIZE: u64 = 1 << 6;
pub const F_FLUSH: u64 = 1 << 9;
/// What Linux's virtio_blk asks for (and what these tests accept).
pub const BLK_FEATURES: u64 = F_SEG_MAX | F_BLK_SIZE | F_FLUSH | F_RO;

pub const HEADER: u64 = DATA_BASE;
pub const STATUS: u64 = DATA_BASE + 0x100;
pub const DATA: u64 = DATA_BASE + 0x1000;

/// Send one request: header, then either `out` data or `in_len` bytes to fill, then status.
/// Returns (status, used length, data read). Buffers to fill are first set to 0xee, so data
/// the device did not write is visible.
pub fn request(
    d: &mut Driver,
    kind: u32,
    sector: u64,
    out: Option<&[u8]>,
    in_len: u32,
) -> (u8, u32, Vec<u8>) {
    let mut header = [0u8; 16];
    header[0..4].copy_from_slice(&kind.to_le_bytes());
    header[8..16].copy_from_slice(&sector.to_le_bytes());
    d.write_mem(HEADER, &header);
    d.write_mem(STATUS, &[0xff]);
    let mut bufs = vec![Buf::out(HEADER, 16)];
    if let Some(out) = out {
        d.write_mem(DATA, out);
        bufs.push(Buf::out(DATA, out.len() as u32));
    } else if in_len > 0 {
        d.write_mem(DATA, &vec![0xee; in_len as usize]);
        bufs.push(Buf::input(DATA, in_len));
    }
    bufs.push(Buf::input(STATUS, 1));
    let used = d.submit(0, &bufs);
    let status = d.read_mem(STATUS, 1)[0];
    (status, used, d.read_mem(DATA, in_len as usize))
}

/// Writes `data` at byte `offset` (sector-aligned) and insists on success.
pub fn write_ok(d: &mut Driver, offset: u64, data: &[u8]) {
    assert_eq!(offset % 512, 0);
    let (status, _, _) = request(d, T_OUT, offset / 512, Some(data), 0);
    assert_eq!(status, S_OK, "write of {} bytes at {offset}", data.len());
}

/// Reads `len` bytes at byte `offset` (sector-aligned) and insists on success.
pub fn read_ok(d: &mut Driver, offset: u64, len: usize) -> Vec<u8> {
    assert_eq!(offset % 512, 0);
    let (status, used, data) = request(d, T_IN, offset / 512, None, len as u32);
    assert_eq!(status, S_OK, "read of {len} bytes at {offset}");
    assert_eq!(used as usize, len + 1, "used length covers data and status");
    data
}

// Each test binary uses its own subset of these.
#[allow(unused_imports)]
pub use oxvirt_testkit::process::{close, ok, p, run, spawn, spawn_guard, text};

/// `qemu-img check` must find nothing at all: exit 0 and "No errors were found".
pub fn qemu_check_clean(path: &Path) {
    let out = run("qemu-img", &["check", "-f", "qcow2", p(path)]);
    assert_eq!(out.status.code(), Some(0), "qemu-img check: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("No errors were found"),
        "qemu-img check: {}",
        text(&out)
    );
}

/// Converts a qcow2 image to a (sparse) raw file next to it with `qemu-img convert -O raw`.
pub fn qemu_convert_to_raw_file(path: &Path) -> std::path::PathBuf {
    let raw = path.with_extension("converted.raw");
    ok(
        "qemu-img",
        &["convert", "-f", "qcow2", "-O", "raw", p(path), p(&raw)],
    );
    raw
}

/// The guest-visible content of a qcow2 image as QEMU reads it (`qemu-img convert -O raw`).
pub fn qemu_convert_to_raw(path: &Path) -> Vec<u8> {
    let raw = qemu_convert_to_raw_file(path);
    let data = std::fs::read(&raw).unwrap();
    std::fs::remove_file(&raw).unwrap();
    data
}

/// Asserts two disk contents are equal, naming the first differing byte instead of dumping
/// megabytes.
pub fn assert_same_disk(actual: &[u8], expected: &[u8], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: size");
    if let Some(at) = actual.iter().zip(expected).position(|(a, e)| a != e) {
        panic!(
            "{what}: first difference at byte {at}: {:#04x}, expected {:#04x}",
            actual[at], expected[at]
        );
    }
}
