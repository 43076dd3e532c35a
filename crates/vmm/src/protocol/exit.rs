//! The exit record: why a VM ended, as a small JSON file the VMM writes just before it exits
//! (`{"reason": "guest-poweroff"}`, `{"reason": "error", "message": "..."}`).
//!
//! The manager of the VMM (oxvirtd) reads it after the process has gone, also when the VMM is not
//! its child and it cannot see the exit status. The file appears atomically (written to
//! `NAME.tmp`, then renamed), so a reader sees the whole record or none; none means the VMM did
//! not end by itself (it was killed, or seccomp stopped it).
//!
//! The temporary file is created when the VMM starts ([`ExitRecordWriter::prepare`]), because
//! by the time the VM ends the main thread's seccomp filter no longer allows opening files.
//!
//! A jailed VMM (`crate::jail`) cannot rename in its manager's directory, which is outside its
//! root: it writes the record in place instead ([`ExitRecordWriter::prepare_in_place`]), into
//! the file it emptied at start. An empty record is no record; its manager reads it only once
//! the VMM has gone, so it never sees a record being written.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why the VM ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ExitReason {
    /// The guest powered off (ACPI S5, also after the API's `poweroff` pressed the power button).
    GuestPoweroff,
    /// The guest asked for a reset (i8042 0xfe, the reset register 0xcf9, a triple fault). The
    /// VMM does not restart it: whoever manages it decides (libvirt's `on_reboot`).
    GuestReset,
    /// The host stopped the VM: the API's `stop`, SIGTERM or SIGINT.
    HostStop,
    /// The VMM could not go on (or could not start); `message` is its one-line error.
    Error { message: String },
}

/// The VMM's exit status after a guest reset.
pub const EXIT_STATUS_RESET: u8 = 3;

impl ExitReason {
    /// The VMM's process exit status for this ending (see docs/native-vmm.md, "Exit status").
    pub fn exit_status(&self) -> u8 {
        match self {
            ExitReason::GuestPoweroff | ExitReason::HostStop => 0,
            ExitReason::GuestReset => EXIT_STATUS_RESET,
            ExitReason::Error { .. } => 1,
        }
    }

    /// Reads the record at `path`; `Ok(None)` when there is none.
    pub fn read(path: &Path) -> Result<Option<ExitReason>, ExitRecordError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(ExitRecordError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        if text.is_empty() {
            return Ok(None);
        }
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|err| ExitRecordError::Malformed {
                path: path.to_path_buf(),
                message: err.to_string(),
            })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExitRecordError {
    #[error("exit record {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("exit record {}: {message}", path.display())]
    Malformed { path: PathBuf, message: String },
}

/// The exit record's temporary file, opened at start and published once at the end.
#[derive(Debug)]
pub struct ExitRecordWriter {
    path: PathBuf,
    /// Where the record is written: `PATH.tmp`, or `path` itself when written in place.
    temp: PathBuf,
    file: Option<File>,
}

impl ExitRecordWriter {
    /// Creates (or truncates) `PATH.tmp` next to `path`, where the record will be written. A
    /// record left by an earlier run at `path` is removed, so it cannot be taken for this run's.
    pub fn prepare(path: &Path) -> Result<ExitRecordWriter, ExitRecordError> {
        let io = |source| ExitRecordError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut temp_name = path.file_name().unwrap_or_default().to_os_string();
        temp_name.push(".tmp");
        let temp = path.with_file_name(temp_name);
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(io(err)),
        }
        let file = File::create(&temp).map_err(io)?;
        Ok(ExitRecordWriter {
            path: path.to_path_buf(),
            temp,
            file: Some(file),
        })
    }

    /// Empties the record at `path` (creating it), to be written in place at the end: for a
    /// VMM that will not be able to rename files in that directory (a jailed one).
    pub fn prepare_in_place(path: &Path) -> Result<ExitRecordWriter, ExitRecordError> {
        let file = File::create(path).map_err(|source| ExitRecordError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(ExitRecordWriter {
            path: path.to_path_buf(),
            temp: path.to_path_buf(),
            file: Some(file),
        })
    }

    /// Writes `reason` and renames the temporary file to the record's name.
    pub fn write(mut self, reason: &ExitReason) -> Result<(), ExitRecordError> {
        let io = |source| ExitRecordError::Io {
            path: self.path.clone(),
            source,
        };
        let Some(mut file) = self.file.take() else {
            return Ok(());
        };
        let mut text = serde_json::to_string(reason)
            .map_err(|err| io(std::io::Error::other(err.to_string())))?;
        text.push('\n');
        file.write_all(text.as_bytes()).map_err(io)?;
        // On disk before it has its name: after a host crash the record is whole or absent.
        file.sync_data().map_err(io)?;
        drop(file);
        if self.temp == self.path {
            return Ok(());
        }
        std::fs::rename(&self.temp, &self.path).map_err(io)
    }
}

impl Drop for ExitRecordWriter {
    fn drop(&mut self) {
        // Never written: leave no half-made record behind (an empty one in place says none).
        if self.file.take().is_some() && self.temp != self.path {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_serialize_as_tagged_json() {
        assert_eq!(
            serde_json::to_string(&ExitReason::GuestPoweroff).unwrap(),
            r#"{"reason":"guest-poweroff"}"#
        );
        assert_eq!(
            serde_json::to_string(&ExitReason::GuestReset).unwrap(),
            r#"{"reason":"guest-reset"}"#
        );
        assert_eq!(
            serde_json::to_string(&ExitReason::HostStop).unwrap(),
            r#"{"reason":"host-stop"}"#
        );
        assert_eq!(
            serde_json::to_string(&ExitReason::Error {
                message: "KVM_RUN failed".into()
            })
            .unwrap(),
            r#"{"reason":"error","message":"KVM_RUN failed"}"#
        );
    }

    #[test]
    fn a_record_appears_whole_and_only_when_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exit.json");
        std::fs::write(&path, r#"{"reason":"guest-reset"}"#).unwrap();
        let writer = ExitRecordWriter::prepare(&path).unwrap();
        // The previous run's record is gone as soon as this run starts.
        assert_eq!(ExitReason::read(&path).unwrap(), None);
        let reason = ExitReason::Error {
            message: "vCPU 0: KVM internal error".into(),
        };
        writer.write(&reason).unwrap();
        assert_eq!(ExitReason::read(&path).unwrap(), Some(reason));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("exit.json")]);
    }

    #[test]
    fn a_record_written_in_place_is_none_until_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exit.json");
        std::fs::write(&path, r#"{"reason":"guest-reset"}"#).unwrap();
        let writer = ExitRecordWriter::prepare_in_place(&path).unwrap();
        assert_eq!(ExitReason::read(&path).unwrap(), None);
        writer.write(&ExitReason::GuestPoweroff).unwrap();
        assert_eq!(
            ExitReason::read(&path).unwrap(),
            Some(ExitReason::GuestPoweroff)
        );
        drop(ExitRecordWriter::prepare_in_place(&path).unwrap());
        assert_eq!(ExitReason::read(&path).unwrap(), None);
    }

    #[test]
    fn an_unwritten_record_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exit.json");
        drop(ExitRecordWriter::prepare(&path).unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_garbled_record_is_an_error_not_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exit.json");
        std::fs::write(&path, r#"{"reason":"exploded"}"#).unwrap();
        assert!(matches!(
            ExitReason::read(&path),
            Err(ExitRecordError::Malformed { .. })
        ));
    }
}
