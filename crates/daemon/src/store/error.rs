//! The error type of the store, and the name of the database file every message carries.

use std::path::PathBuf;
use std::sync::RwLock;

/// The database's file name in the state directory.
pub const DATABASE_FILE: &str = "oxvirt.db";
/// The backups' directory in the state directory.
pub const BACKUPS_DIR: &str = "backups";

/// What can go wrong with the state database; every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state database {} is empty (0 bytes)", path.display())]
    Empty { path: PathBuf },
    #[error(
        "state database {} is not an SQLite database (it does not start with \"SQLite format 3\")",
        path.display()
    )]
    NotSqlite { path: PathBuf },
    #[error("state database {} is damaged: {detail}", path.display())]
    Damaged { path: PathBuf, detail: String },
    #[error(
        "state database {} has no database file, but its write-ahead log {} is there; SQLite would \
         replay it into a new, empty database",
        path.display(),
        wal.display()
    )]
    OrphanWal { path: PathBuf, wal: PathBuf },
    #[error(
        "state database {} has schema version {found}, newer than the {known} this oxvirtd knows: \
         it was written by a newer oxvirtd. Run that version, or restore a backup made before the \
         upgrade",
        path.display()
    )]
    TooNew {
        path: PathBuf,
        found: u32,
        known: u32,
    },
    #[error("state database {}: upgrading to schema version {version} failed: {source}", path.display())]
    Migration {
        path: PathBuf,
        version: u32,
        source: rusqlite::Error,
    },
    #[error("state database {} stayed busy; no consistent copy could be taken", path.display())]
    Busy { path: PathBuf },
    #[error("state database {}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl StoreError {
    /// The file's content is not a database oxvirtd may take as it is: the operator decides
    /// (restore a backup, or move the file aside).
    pub fn is_unusable_file(&self) -> bool {
        matches!(
            self,
            StoreError::Empty { .. }
                | StoreError::NotSqlite { .. }
                | StoreError::Damaged { .. }
                | StoreError::OrphanWal { .. }
        )
    }
}

/// The path of the open state database, for the messages of errors that reach their handlers as
/// bare `rusqlite::Error`s (queries inside transactions, turned into API errors by `daemon::db`
/// at many call sites). One oxvirtd opens one store (its state directory is locked), so the
/// store opened last is the daemon's.
pub(super) static OPEN_DATABASE: RwLock<Option<PathBuf>> = RwLock::new(None);

/// `err`, naming the state database it came from.
pub fn named(err: rusqlite::Error) -> StoreError {
    let path = OPEN_DATABASE
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .unwrap_or_else(|| PathBuf::from(DATABASE_FILE));
    StoreError::Sqlite { path, source: err }
}
