//! oxvirt-logfile: log files that rotate by size, the one implementation behind oxvirtd's own
//! log (`log_max_size`, `log_max_backups`) and every guest's logs (`guest_log_max_size`,
//! `guest_log_max_backups`: QEMU's output, the serial console), as virtlogd's `max_size` and
//! `max_backups` in libvirt.
//!
//! A file rotates before a write would take it past `max_size` bytes: the live file is renamed
//! aside and a new one opened before anything is compressed, so every byte is either in the live
//! file or in a backup; then the backups shift (`FILE.1.gz` newest .. `FILE.N.gz` oldest, the
//! one beyond N deleted) and the old file becomes `FILE.1.gz`.
//!
//! [`writer`] is the per-guest log writer: a small process, started with the guest in its own
//! session, that reads the guest's pipes and writes rotated files, so that neither a chatty
//! guest nor a restart of oxvirtd (which it outlives, as QEMU does) touches the logs.

use std::fs::{File, OpenOptions};
use std::io::{Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub mod writer;

/// How a file rotates. The default never rotates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate before a write would take the file past this many bytes (0: never).
    pub max_size: u64,
    /// How many gzip-compressed backups to keep (0: rotated content is deleted).
    pub max_backups: u32,
}

/// A log file that rotates by size (see the crate documentation).
pub struct RotatingFile {
    path: PathBuf,
    file: File,
    size: u64,
    /// How many bytes at the end of the file follow its last newline (a line being written).
    partial: u64,
    rotation: Rotation,
    /// A rotation that failed is reported once (see [`RotatingFile::take_error`]), then writing
    /// carries on in the live file rather than losing output.
    failed: bool,
    error: Option<String>,
}

impl RotatingFile {
    /// Opens `path` for appending (creating it, mode 0600).
    pub fn open(path: &Path, rotation: Rotation) -> std::io::Result<RotatingFile> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_path_buf(),
            file,
            size,
            // Unknown for an existing file; a rotation then just moves whole files.
            partial: 0,
            rotation,
            failed: false,
            error: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one whole record (a formatted log line), rotating first if it would not fit.
    pub fn write_line(&mut self, line: &[u8]) {
        if self.size > 0 && self.size + line.len() as u64 > self.rotation.max_size {
            self.rotate_now();
        }
        self.append(line);
    }

    /// Appends a piece of a byte stream (a guest's output, read in arbitrary chunks, written at
    /// once: a prompt without a newline is in the file as soon as it is read). When the file
    /// would overflow, it rotates after the last newline that still fits; a line begun in the
    /// old file moves into the new one, so lines stay whole in one file unless a single line is
    /// longer than `max_size`.
    pub fn write_stream(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let room = self.rotation.max_size.saturating_sub(self.size);
            if self.rotation.max_size == 0 || self.failed || bytes.len() as u64 <= room {
                self.append(bytes);
                return;
            }
            // The part up to the last newline that fits goes into this file.
            let fits = &bytes[..room as usize];
            match fits.iter().rposition(|&b| b == b'\n') {
                Some(end) => {
                    self.append(&bytes[..=end]);
                    bytes = &bytes[end + 1..];
                }
                // The file holds only the start of one line longer than a whole file: it
                // is finished here, in a file of its own.
                None if self.partial == self.size => {
                    let end = bytes
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(bytes.len(), |end| end + 1);
                    self.append(&bytes[..end]);
                    bytes = &bytes[end..];
                    if bytes.is_empty() {
                        return;
                    }
                }
                None => {}
            }
            self.rotate_now();
        }
    }

    /// The error of a failed rotation, once.
    pub fn take_error(&mut self) -> Option<String> {
        self.error.take()
    }

    fn append(&mut self, bytes: &[u8]) {
        // A full disk must not stop the caller (a daemon, a guest's console): the bytes that
        // could not be written are dropped.
        if self.file.write_all(bytes).is_ok() {
            self.size += bytes.len() as u64;
            self.partial = match bytes.iter().rposition(|&b| b == b'\n') {
                Some(end) => (bytes.len() - end - 1) as u64,
                None => self.partial + bytes.len() as u64,
            };
        }
    }

    fn rotate_now(&mut self) {
        if self.rotation.max_size == 0 || self.failed {
            return;
        }
        if let Err(err) = self.rotate() {
            self.failed = true;
            self.error = Some(format!(
                "rotating log file {} failed: {err}",
                self.path.display()
            ));
        }
    }

    /// `FILE.N.gz`.
    pub fn backup_path(path: &Path, n: u32) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{n}.gz"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let mut staging = self.path.as_os_str().to_owned();
        staging.push(".rotating");
        let staging = PathBuf::from(staging);
        std::fs::rename(&self.path, &staging)?;
        self.file = open_append(&self.path)?;
        // The line being written moves on into the new file (its start is cut from the old
        // one), so every rotated file ends with a whole line.
        let carried = if self.partial > 0 && self.partial < self.size {
            let mut old = OpenOptions::new().read(true).write(true).open(&staging)?;
            let cut = self.size - self.partial;
            old.seek(std::io::SeekFrom::Start(cut))?;
            let mut tail = Vec::new();
            std::io::Read::read_to_end(&mut old, &mut tail)?;
            self.file.write_all(&tail)?;
            old.set_len(cut)?;
            tail.len() as u64
        } else {
            0
        };
        self.size = carried;
        self.partial = carried;
        let max_backups = self.rotation.max_backups;
        if max_backups == 0 {
            return std::fs::remove_file(&staging);
        }
        let _ = std::fs::remove_file(Self::backup_path(&self.path, max_backups));
        for n in (1..max_backups).rev() {
            let from = Self::backup_path(&self.path, n);
            if from.exists() {
                std::fs::rename(&from, Self::backup_path(&self.path, n + 1))?;
            }
        }
        let newest = Self::backup_path(&self.path, 1);
        let mut tmp = newest.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        {
            let mut input = File::open(&staging)?;
            let mut encoder =
                flate2::write::GzEncoder::new(open_new(&tmp)?, flate2::Compression::default());
            std::io::copy(&mut input, &mut encoder)?;
            encoder.finish()?.sync_all()?;
        }
        std::fs::rename(&tmp, newest)?;
        std::fs::remove_file(&staging)
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

fn open_new(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// Everything a rotated log holds, oldest first: the backups that remain (decompressed,
/// `FILE.N.gz` down to `FILE.1.gz`) and then the live file. For tests and tools.
pub fn read_all(path: &Path, max_backups: u32) -> std::io::Result<Vec<u8>> {
    let mut all = Vec::new();
    for n in (1..=max_backups).rev() {
        match File::open(RotatingFile::backup_path(path, n)) {
            Ok(file) => {
                std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(file), &mut all)?;
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
    }
    match std::fs::read(path) {
        Ok(live) => all.extend_from_slice(&live),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn numbers(text: &[u8]) -> Vec<u32> {
        String::from_utf8_lossy(text)
            .lines()
            .map(|l| l.trim_start_matches("line ").parse().unwrap())
            .collect()
    }

    #[test]
    fn lines_rotate_keep_every_line_and_cap_backups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.log");
        let rotation = Rotation {
            max_size: 100,
            max_backups: 2,
        };
        let mut file = RotatingFile::open(&path, rotation).unwrap();
        for i in 0..40 {
            file.write_line(format!("line {i:04}\n").as_bytes());
        }
        assert_eq!(names(dir.path()), ["d.log", "d.log.1.gz", "d.log.2.gz"]);
        let numbers = numbers(&read_all(&path, 2).unwrap());
        let first = numbers[0];
        assert!(first > 0, "the cap dropped the oldest lines");
        assert_eq!(numbers, (first..40).collect::<Vec<_>>());
        assert!(std::fs::metadata(&path).unwrap().len() <= 100);
    }

    #[test]
    fn a_stream_rotates_between_lines_whatever_its_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let rotation = Rotation {
            max_size: 64,
            max_backups: 3,
        };
        let mut file = RotatingFile::open(&path, rotation).unwrap();
        let text: String = (0..50).map(|i| format!("line {i:04}\n")).collect();
        // Chunks that cut lines anywhere, as reads from a pipe do.
        for chunk in text.as_bytes().chunks(7) {
            file.write_stream(chunk);
        }
        assert_eq!(
            names(dir.path()),
            [
                "console.log",
                "console.log.1.gz",
                "console.log.2.gz",
                "console.log.3.gz"
            ]
        );
        for n in 1..=3 {
            let mut one = Vec::new();
            let gz = File::open(RotatingFile::backup_path(&path, n)).unwrap();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gz), &mut one).unwrap();
            assert!(
                one.len() <= 64 && one.ends_with(b"\n"),
                "backup {n} whole lines"
            );
        }
        let numbers = numbers(&read_all(&path, 3).unwrap());
        let first = numbers[0];
        assert_eq!(numbers, (first..50).collect::<Vec<_>>());
    }

    #[test]
    fn a_stream_loses_and_repeats_nothing_whatever_its_chunks() {
        let text: String = (0..300).map(|i| format!("SEQ-{i}\r\n")).collect();
        for chunk in 1..=23 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("console.log");
            let rotation = Rotation {
                max_size: 256,
                max_backups: 100,
            };
            let mut file = RotatingFile::open(&path, rotation).unwrap();
            for piece in text.as_bytes().chunks(chunk) {
                file.write_stream(piece);
            }
            let all = read_all(&path, 100).unwrap();
            assert_eq!(String::from_utf8(all).unwrap(), text, "chunks of {chunk}");
        }
    }

    #[test]
    fn no_backups_and_no_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let mut none = RotatingFile::open(
            &path,
            Rotation {
                max_size: 10,
                max_backups: 0,
            },
        )
        .unwrap();
        for _ in 0..5 {
            none.write_stream(b"12345678\n");
        }
        assert_eq!(names(dir.path()), ["x.log"]);
        assert_eq!(std::fs::read(&path).unwrap(), b"12345678\n");
        let path = dir.path().join("y.log");
        let mut unlimited = RotatingFile::open(
            &path,
            Rotation {
                max_size: 0,
                max_backups: 2,
            },
        )
        .unwrap();
        for _ in 0..5 {
            unlimited.write_stream(b"12345678\n");
            unlimited.write_line(b"12345678\n");
        }
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 90);
    }
}
