//! Writing a stream of bytes into a file so that its all-zero blocks stay holes: how an image
//! that travels as a plain byte stream (an upload, a download, an archive member) lands on disk
//! as sparse as it left.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};

/// Zero detection granularity: the file system block size on every file system oxvirt uses.
const BLOCK: usize = 4096;

/// Writes sequentially into `file`, seeking over whole zero blocks instead of writing them;
/// [`SparseWriter::finish`] sets the file's length to what was written, so a trailing hole is
/// there too.
#[derive(Debug)]
pub struct SparseWriter {
    file: File,
    /// Bytes written (or skipped) so far: the file's logical length.
    position: u64,
    /// A partial block waiting for the rest of its bytes.
    pending: Vec<u8>,
}

impl SparseWriter {
    /// A writer at the start of `file` (which should be empty: skipped blocks are not written,
    /// so old data under them would stay).
    pub fn new(file: File) -> SparseWriter {
        SparseWriter {
            file,
            position: 0,
            pending: Vec::with_capacity(BLOCK),
        }
    }

    /// Bytes taken so far.
    pub fn len(&self) -> u64 {
        self.position + self.pending.len() as u64
    }

    /// Whether nothing was taken yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn put_block(&mut self, block: &[u8]) -> std::io::Result<()> {
        if block.iter().all(|&b| b == 0) {
            self.file
                .seek(SeekFrom::Current(block.len() as i64))
                .map(|_| ())?;
        } else {
            self.file.write_all(block)?;
        }
        self.position += block.len() as u64;
        Ok(())
    }

    /// Takes the next bytes of the stream.
    pub fn write_all(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            let take = (BLOCK - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() < BLOCK {
                return Ok(());
            }
            let block = std::mem::take(&mut self.pending);
            self.put_block(&block)?;
            self.pending = block;
            self.pending.clear();
        }
        let whole = data.len() - data.len() % BLOCK;
        for block in data[..whole].chunks(BLOCK) {
            self.put_block(block)?;
        }
        self.pending.extend_from_slice(&data[whole..]);
        Ok(())
    }

    /// Writes the last partial block, sets the length, syncs, and gives the file back.
    pub fn finish(mut self) -> std::io::Result<File> {
        let pending = std::mem::take(&mut self.pending);
        if !pending.is_empty() {
            // A short tail is written as it is (the length below covers a zero one too).
            if pending.iter().any(|&b| b != 0) {
                self.file.write_all(&pending)?;
            }
            self.position += pending.len() as u64;
        }
        self.file.set_len(self.position)?;
        self.file.sync_all()?;
        Ok(self.file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn zero_blocks_become_holes_and_the_data_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut writer = SparseWriter::new(File::create(&path).unwrap());
        let mut expected = Vec::new();
        // Odd piece sizes, so blocks straddle calls; 4 MiB of zeros in the middle.
        for piece in [
            vec![1u8; 1000],
            vec![0u8; 4 << 20],
            vec![2u8; 5000],
            vec![0u8; 3],
        ] {
            for part in piece.chunks(777) {
                writer.write_all(part).unwrap();
            }
            expected.extend_from_slice(&piece);
        }
        assert_eq!(writer.len(), expected.len() as u64);
        writer.finish().unwrap();
        let back = std::fs::read(&path).unwrap();
        assert_eq!(back.len(), expected.len());
        assert!(back == expected, "contents differ");
        let allocated = std::fs::metadata(&path).unwrap().blocks() * 512;
        assert!(allocated < 1 << 20, "{allocated} bytes allocated");
    }
}
