//! The daemon's error type: what went wrong in an operation, as a kind a client can act on and a
//! complete sentence naming the thing ("domain 'web1' is already running"). The API layer
//! (`api/reply.rs`) is the one place that turns it into an HTTP reply.

use std::fmt;

use oxvirt_domain::DomainError;

use crate::engine::{EngineError, EngineErrorKind};
use crate::store;

/// What kind of failure, i.e. what the client can do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The domain, network, pool or volume named does not exist.
    NotFound,
    /// The definition is not valid libvirt XML, or not consistent.
    InvalidXml,
    /// A name is not acceptable (characters, length, a path component).
    InvalidName,
    /// The definition asks for something oxvirt (or its engine) does not implement.
    Unsupported,
    AlreadyExists,
    /// The object is not in a state that allows the operation (running, inactive, in use).
    InvalidState,
    /// Another operation on the same object is in progress.
    Busy,
    /// The engine failed (spawn, early exit, protocol).
    Engine,
    /// A wait the client asked for ran out.
    Timeout,
    /// The request itself is wrong (a number out of range, conflicting options).
    BadRequest,
    /// A failure inside the daemon (its state store, the file system).
    Internal,
    /// A service outside the daemon that this needs is out of reach (the cluster's etcd).
    Unavailable,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DaemonError {
    pub kind: ErrorKind,
    pub message: String,
}

pub type DaemonResult<T> = Result<T, DaemonError>;

impl DaemonError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> DaemonError {
        DaemonError {
            kind,
            message: message.into(),
        }
    }

    /// The same failure, with what it was about in front: "prefix: message".
    pub fn context(self, prefix: impl fmt::Display) -> DaemonError {
        DaemonError {
            kind: self.kind,
            message: format!("{prefix}: {}", self.message),
        }
    }
}

pub fn not_found(message: impl Into<String>) -> DaemonError {
    DaemonError::new(ErrorKind::NotFound, message)
}

pub fn invalid_state(message: impl Into<String>) -> DaemonError {
    DaemonError::new(ErrorKind::InvalidState, message)
}

pub fn bad_request(message: impl Into<String>) -> DaemonError {
    DaemonError::new(ErrorKind::BadRequest, message)
}

/// A failure inside the daemon: what it was doing, and why.
pub fn internal(context: &str, err: impl fmt::Display) -> DaemonError {
    DaemonError::new(ErrorKind::Internal, format!("{context}: {err}"))
}

/// An SQLite error, naming the database file.
pub fn db(err: rusqlite::Error) -> DaemonError {
    DaemonError::new(ErrorKind::Internal, store::named(err).to_string())
}

/// A definition the domain crate refused (a domain, pool or volume).
pub fn definition_error(err: DomainError) -> DaemonError {
    let kind = match &err {
        DomainError::InvalidName { .. } => ErrorKind::InvalidName,
        _ if err.is_unsupported() => ErrorKind::Unsupported,
        _ => ErrorKind::InvalidXml,
    };
    DaemonError::new(kind, err.to_string())
}

/// An engine's failure for domain `name`.
pub fn engine_failure(name: &str, err: EngineError) -> DaemonError {
    let kind = match err.kind {
        EngineErrorKind::Unsupported => ErrorKind::Unsupported,
        EngineErrorKind::Invalid => ErrorKind::InvalidXml,
        EngineErrorKind::Failed => ErrorKind::Engine,
    };
    DaemonError::new(kind, format!("domain '{name}': {err}"))
}
