//! Direct I/O (`O_DIRECT`, libvirt's and QEMU's `cache=none`) on raw images.
//!
//! With `O_DIRECT` the kernel moves data between the disk and our buffer without the page
//! cache, and refuses (EINVAL) any offset, length or buffer address that is not aligned to the
//! device's logical block size. Guest requests come in 512-byte sectors, and the library's
//! callers hand in buffers from anywhere, so every request goes through one bounce buffer
//! aligned to [`DIRECT_ALIGN`], which covers 512- and 4096-byte devices: reads fetch the
//! aligned windows around the range and copy the wanted part out, writes that do not cover
//! whole blocks read the partial blocks first (read-modify-write).

use std::fs::File;
use std::os::unix::fs::FileExt;

/// Alignment of offsets, lengths and buffers for `O_DIRECT`.
pub const DIRECT_ALIGN: usize = 4096;

/// Size of the bounce buffer: the most one system call moves.
const BOUNCE_LEN: usize = 128 * 1024;

/// A heap buffer whose start is aligned to [`DIRECT_ALIGN`], as `O_DIRECT` requires.
///
/// It is a slice of a `Vec` allocated [`DIRECT_ALIGN`]` - 1` bytes larger than needed and never
/// resized, so the aligned start stays where it is, without any unsafe code.
#[derive(Debug)]
pub(crate) struct DirectBuffer {
    storage: Vec<u8>,
    start: usize,
}

impl DirectBuffer {
    pub(crate) fn new() -> DirectBuffer {
        let storage = vec![0u8; BOUNCE_LEN + DIRECT_ALIGN - 1];
        // Only the address's value is used, to find the aligned offset inside the allocation.
        let address = storage.as_ptr() as usize;
        let start = address.next_multiple_of(DIRECT_ALIGN) - address;
        DirectBuffer { storage, start }
    }

    fn window(&mut self, len: usize) -> &mut [u8] {
        &mut self.storage[self.start..self.start + len]
    }

    /// Fills all of `buf` from `offset` of `file` (opened with `O_DIRECT`).
    pub(crate) fn read_at(
        &mut self,
        file: &File,
        buf: &mut [u8],
        offset: u64,
    ) -> std::io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let piece = Piece::at(offset + done as u64, buf.len() - done);
            let window = self.window(piece.window_len);
            file.read_exact_at(window, piece.window_start)?;
            buf[done..done + piece.len]
                .copy_from_slice(&window[piece.skip..piece.skip + piece.len]);
            done += piece.len;
        }
        Ok(())
    }

    /// Writes all of `buf` at `offset` of `file` (opened with `O_DIRECT`). The caller must not
    /// write the same blocks concurrently: partial blocks are read, changed and written back.
    pub(crate) fn write_at(&mut self, file: &File, buf: &[u8], offset: u64) -> std::io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let piece = Piece::at(offset + done as u64, buf.len() - done);
            let window = self.window(piece.window_len);
            if piece.skip != 0 || piece.len != piece.window_len {
                // A partial block at either end: read what the write keeps of it.
                file.read_exact_at(window, piece.window_start)?;
            }
            window[piece.skip..piece.skip + piece.len]
                .copy_from_slice(&buf[done..done + piece.len]);
            file.write_all_at(window, piece.window_start)?;
            done += piece.len;
        }
        Ok(())
    }
}

/// The part of a request that one aligned window of the bounce buffer serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Piece {
    /// Aligned file offset of the window.
    window_start: u64,
    /// Aligned length of the window, at most [`BOUNCE_LEN`].
    window_len: usize,
    /// Where the requested bytes start inside the window.
    skip: usize,
    /// How many requested bytes the window holds.
    len: usize,
}

impl Piece {
    /// The window for the first bytes of `remaining` bytes at file offset `pos`.
    fn at(pos: u64, remaining: usize) -> Piece {
        let window_start = pos - pos % DIRECT_ALIGN as u64;
        let skip = (pos - window_start) as usize;
        let len = remaining.min(BOUNCE_LEN - skip);
        Piece {
            window_start,
            window_len: (skip + len).next_multiple_of(DIRECT_ALIGN),
            skip,
            len,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_is_aligned() {
        for _ in 0..8 {
            let mut buffer = DirectBuffer::new();
            let window = buffer.window(BOUNCE_LEN);
            assert_eq!(window.as_ptr() as usize % DIRECT_ALIGN, 0);
            assert_eq!(window.len(), BOUNCE_LEN);
        }
    }

    #[test]
    fn pieces_cover_requests_with_aligned_windows() {
        // Unaligned start and end inside one window.
        assert_eq!(
            Piece::at(4096 + 512, 1024),
            Piece {
                window_start: 4096,
                window_len: 4096,
                skip: 512,
                len: 1024
            }
        );
        // A long request is cut where the bounce buffer ends.
        let first = Piece::at(512, 1 << 20);
        assert_eq!(
            first,
            Piece {
                window_start: 0,
                window_len: BOUNCE_LEN,
                skip: 512,
                len: BOUNCE_LEN - 512
            }
        );
        let second = Piece::at(512 + first.len as u64, (1 << 20) - first.len);
        assert_eq!(second.window_start, BOUNCE_LEN as u64);
        assert_eq!(second.skip, 0);
    }
}
