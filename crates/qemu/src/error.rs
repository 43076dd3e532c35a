//! The engine's error type.

use std::path::PathBuf;

/// Everything that can go wrong while turning a domain into a QEMU process or talking to it.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    /// The domain asks for something this engine cannot do; `element` names it (an XML path).
    #[error("unsupported by the QEMU engine: {element}: {reason}")]
    Unsupported { element: String, reason: String },

    /// The domain is inconsistent or refers to something that is not there (checked before spawning).
    #[error("invalid domain: {element}: {reason}")]
    Invalid { element: String, reason: String },

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

    /// The QMP connection closed (usually: QEMU exited).
    #[error("QMP connection closed")]
    Disconnected,
}

fn tail_suffix(log_tail: &Option<String>) -> String {
    match log_tail {
        Some(tail) if !tail.is_empty() => format!("; end of qemu.log:\n{tail}"),
        _ => String::new(),
    }
}

impl QemuError {
    pub(crate) fn unsupported(element: impl Into<String>, reason: impl Into<String>) -> Self {
        QemuError::Unsupported {
            element: element.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid(element: impl Into<String>, reason: impl Into<String>) -> Self {
        QemuError::Invalid {
            element: element.into(),
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
