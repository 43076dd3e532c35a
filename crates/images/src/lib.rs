//! oxvirt-images: raw and qcow2 disk images (see docs/images.md). The `oxvirt img` command
//! line over this library lives in the CLI crate (`crates/cli/src/img`).
//!
//! - [`Image`] opens raw/qcow2 files with their backing chains and reads/writes guest data.
//! - [`create`] makes new images; [`qcow2::Qcow2`] adds check/repair, snapshots and resize.
//! - [`ops`] has convert and compare; [`info`] the `info` data.
//! - [`Disk`] is an image opened for a guest (format stated, read-only or not, cache mode):
//!   what a VMM's virtio-blk device reads, writes, flushes and sizes. Raw disks can use
//!   direct I/O ([`direct`]).
//! - Every open takes QEMU-compatible OFD locks ([`lock`]) unless force-share is asked for.
//! - [`sparse::SparseWriter`] lands a byte stream in a file with its zero blocks as holes.
//! - Every path is opened through [`file`](mod@file), which refuses FIFOs, character devices
//!   and other non-disks without blocking.

// The only unsafe code is system calls (fcntl locks and flags, lseek, fadvise, fallocate) and
// the C struct fcntl locks take; each block is small and says why it is sound.

pub mod direct;
pub mod disk;
pub mod error;
pub mod file;
pub mod format;
pub mod fuzzing;
pub mod image;
pub mod info;
pub mod lock;
pub mod ops;
pub mod qcow2;
pub mod raw;
pub mod size;
pub mod sparse;

pub use disk::{CacheMode, Disk, DiskOptions};
pub use error::{ImageError, Result};
pub use format::{Allocation, Format, Preallocation};
pub use image::{backing_chain, create, ChainLayer, CreateOptions, Image, OpenOptions};
pub use size::parse_size;
