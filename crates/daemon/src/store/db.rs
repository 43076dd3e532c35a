//! The connection to the state database: opening it (refusing a file SQLite would silently take
//! as a new database, or a newer schema), transactions, backups of the open database, and the
//! error type every part of the store returns.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, Transaction};
use uuid::Uuid;

use super::error::{StoreError, OPEN_DATABASE};
use super::file::{self, write_backup, BackupOutcome, ReadOnlyDb};
use super::migrations;

pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
    /// The connection's change count when the last backup was taken.
    backed_up: Mutex<u64>,
}

impl Store {
    /// Opens the database at `path` (created if missing) and brings its schema to the latest
    /// version. Refuses a file SQLite would silently take as a new database (empty, not SQLite)
    /// and a database of a newer schema; [`check_database_file`] is the fuller check to run first.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let sqlite = |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        file::check_header(path)?;
        let mut conn = Connection::open(path).map_err(sqlite)?;
        // Before anything could write (even the journal mode): a newer schema is not ours.
        let found = migrations::user_version(&conn).map_err(sqlite)?;
        if found > migrations::latest() {
            return Err(StoreError::TooNew {
                path: path.to_path_buf(),
                found,
                known: migrations::latest(),
            });
        }
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sqlite)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(sqlite)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sqlite)?;
        migrations::migrate(&mut conn, path)?;
        *OPEN_DATABASE.write().unwrap_or_else(|p| p.into_inner()) = Some(path.to_path_buf());
        let changes = conn.total_changes();
        Ok(Store {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
            backed_up: Mutex::new(changes),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        migrations::user_version(&conn).map_err(|source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        })
    }

    /// Writes a backup into `dir` (keeping the newest `keep`) if anything changed since the
    /// last one this store took (or since it opened: the start backup is taken before).
    /// Copies through a second, read-only connection, so the daemon's requests go on meanwhile.
    pub fn backup_if_changed(
        &self,
        dir: &Path,
        keep: usize,
    ) -> Result<Option<BackupOutcome>, StoreError> {
        let changes = self
            .conn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .total_changes();
        let mut backed_up = self.backed_up.lock().unwrap_or_else(|p| p.into_inner());
        if *backed_up == changes {
            return Ok(None);
        }
        let db = ReadOnlyDb::open(&self.path)?;
        let outcome = write_backup(&db, dir, keep)?;
        // The copy holds at least the changes counted before it was taken; later ones are
        // picked up by the next call.
        *backed_up = changes;
        Ok(Some(outcome))
    }

    /// Runs `f` in one transaction, committed only if it returns `Ok`.
    pub fn transaction<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        self.transaction_or(|e| e, f)
    }

    /// Like [`Store::transaction`] for closures with their own error type; `db_error` turns
    /// SQLite's errors (beginning or committing) into it.
    pub fn transaction_or<T, E>(
        &self,
        db_error: impl Fn(rusqlite::Error) -> E,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        // A poisoned lock only means another thread panicked mid-call; SQLite rolled its
        // transaction back, so the connection is still consistent.
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction().map_err(&db_error)?;
        let value = f(&tx)?;
        tx.commit().map_err(&db_error)?;
        Ok(value)
    }
}

pub(super) fn parse_uuid(index: usize, text: String) -> rusqlite::Result<Uuid> {
    Uuid::parse_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, Box::new(e))
    })
}
