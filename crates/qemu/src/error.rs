//! The engine's error type.

use std::path::PathBuf;

use oxvirt_domain::SourceLine;

/// Everything that can go wrong while turning a domain into a QEMU process or talking to it.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    /// The domain asks for something this engine cannot do. `element` names it as an XML path
    /// below `<domain>` (`devices/disk[target@dev='vda']/driver@io`: the attribute after `@`),
    /// `line` is where the element was written (or that the normalizer added it).
    #[error("unsupported <{element}> {line}: {reason}")]
    Unsupported {
        element: String,
        line: SourceLine,
        reason: String,
    },

    /// The domain is inconsistent or refers to something that is not there (checked before
    /// spawning). `element` and `line` as for [`QemuError::Unsupported`]; `line` is `None` when
    /// `element` is not part of the definition (the run directory).
    #[error("invalid {}: {reason}", located(element, line))]
    Invalid {
        element: String,
        line: Option<SourceLine>,
        reason: String,
    },

    /// A file or directory operation on the host failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// The emulator binary could not be found or started.
    #[error("cannot start emulator {}: {reason}", emulator.display())]
    Spawn { emulator: PathBuf, reason: String },

    /// QEMU exited (or vanished) before it was ready; `log_tail` is the end of qemu.log.
    #[error("QEMU exited during start-up; end of qemu.log:\n{log_tail}")]
    EarlyExit { log_tail: String },

    /// A bounded wait ran out.
    #[error(
        "timed out after {seconds} s waiting for {what}{}",
        tail_suffix(log_tail)
    )]
    Timeout {
        what: String,
        seconds: u64,
        log_tail: Option<String>,
    },

    /// QMP spoke something we did not expect (malformed JSON, wrong greeting, ...).
    #[error("QMP protocol error: {0}")]
    Protocol(String),

    /// QEMU answered a QMP command with an error.
    #[error("QMP command {command} failed: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },

    /// Saving or loading a guest's machine state failed; `reason` is QEMU's.
    #[error("{what} failed: {reason}")]
    Migration { what: &'static str, reason: String },

    /// The QMP connection closed (usually: QEMU exited).
    #[error("QMP connection closed")]
    Disconnected,
}

/// `<devices/disk/driver@io> at line 14`, `<devices/controller> (added by default)`, or the bare
/// name of what is not an element of the definition (`run directory`).
fn located(element: &str, line: &Option<SourceLine>) -> String {
    match line {
        Some(line) => format!("<{element}> {line}"),
        None => element.to_string(),
    }
}

fn tail_suffix(log_tail: &Option<String>) -> String {
    match log_tail {
        Some(tail) if !tail.is_empty() => format!("; end of qemu.log:\n{tail}"),
        _ => String::new(),
    }
}

impl QemuError {
    /// The line in the definition of the element the error names, when it names one that was
    /// written there.
    pub fn line(&self) -> Option<u32> {
        match self {
            QemuError::Unsupported { line, .. } => line.get(),
            QemuError::Invalid { line, .. } => line.and_then(SourceLine::get),
            _ => None,
        }
    }

    pub(crate) fn unsupported(
        element: impl Into<String>,
        line: SourceLine,
        reason: impl Into<String>,
    ) -> Self {
        QemuError::Unsupported {
            element: element.into(),
            line,
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid(
        element: impl Into<String>,
        line: SourceLine,
        reason: impl Into<String>,
    ) -> Self {
        QemuError::Invalid {
            element: element.into(),
            line: Some(line),
            reason: reason.into(),
        }
    }

    /// A problem with the run directory, which the definition does not name.
    pub(crate) fn invalid_run_dir(reason: impl Into<String>) -> Self {
        QemuError::Invalid {
            element: "run directory".to_string(),
            line: None,
            reason: reason.into(),
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        QemuError::Io {
            context: context.into(),
            source,
        }
    }
}
