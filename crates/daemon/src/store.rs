//! The daemon's persistent state: one SQLite database in the state directory.
//!
//! `domains` holds the definitions (normalized XML), `runtime` one row per active domain (what a
//! restarted daemon needs to find its guests again), `domain_macs` the MAC addresses of the
//! stored and live definitions (what MAC uniqueness checks read). Every change runs in one
//! transaction, so a failed operation leaves the store as it was.
//!
//! The store owns the whole schema, the tables of `networks.rs` and `pools.rs` included, as
//! versioned migrations (`store/migrations.rs`). Checks of the file before it is opened, backups
//! and restoring one are in `store/file.rs`; `docs/store.md` tells the operator's side.

mod file;
mod migrations;
mod volumes;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use oxvirt_api::DomainState;
use oxvirt_domain::MacAddr;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use uuid::Uuid;

pub use file::{
    check_database_file, list_backups, restore_backup, write_backup, BackupOutcome, DbFile,
    ReadOnlyDb,
};
pub use volumes::{
    delete_volume_record, put_volume_record, volume_record, VolumeOrigin, VolumeRecord,
};

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
static OPEN_DATABASE: RwLock<Option<PathBuf>> = RwLock::new(None);

/// `err`, naming the state database it came from.
pub fn named(err: rusqlite::Error) -> StoreError {
    let path = OPEN_DATABASE
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .unwrap_or_else(|| PathBuf::from(DATABASE_FILE));
    StoreError::Sqlite { path, source: err }
}

/// A stored definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainRecord {
    pub uuid: Uuid,
    pub name: String,
    /// Normalized XML (what `Domain::to_xml` printed).
    pub xml: String,
    pub autostart: bool,
    /// "qemu" or "native".
    pub engine: String,
    /// Why the domain last stopped, in virsh's words; shown while it is shut off.
    pub off_reason: String,
}

/// A stored active domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeRecord {
    pub uuid: Uuid,
    pub pid: u32,
    pub run_dir: PathBuf,
    pub state: DomainState,
    pub reason: String,
    pub id: u32,
    /// "kvm" or "tcg".
    pub accel: String,
    /// Unix seconds.
    pub started_at: i64,
}

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

    pub fn list_domains(&self) -> rusqlite::Result<Vec<DomainRecord>> {
        self.transaction(list_domains)
    }

    pub fn domain_by_uuid(&self, uuid: &Uuid) -> rusqlite::Result<Option<DomainRecord>> {
        self.transaction(|tx| domain_by_uuid(tx, uuid))
    }

    /// Looks a domain up by name, then by UUID (virsh accepts either).
    pub fn find_domain(&self, name_or_uuid: &str) -> rusqlite::Result<Option<DomainRecord>> {
        self.transaction(|tx| {
            if let Some(record) = domain_by_name(tx, name_or_uuid)? {
                return Ok(Some(record));
            }
            match Uuid::parse_str(name_or_uuid) {
                Ok(uuid) => domain_by_uuid(tx, &uuid),
                Err(_) => Ok(None),
            }
        })
    }

    pub fn runtime(&self, uuid: &Uuid) -> rusqlite::Result<Option<RuntimeRecord>> {
        self.transaction(|tx| runtime(tx, uuid))
    }

    pub fn list_runtime(&self) -> rusqlite::Result<Vec<RuntimeRecord>> {
        self.transaction(|tx| {
            let mut stmt = tx.prepare(
                "SELECT uuid, pid, run_dir, state, reason, id, accel, started_at FROM runtime ORDER BY id",
            )?;
            let rows = stmt.query_map([], runtime_from_row)?;
            rows.collect()
        })
    }

    /// Updates the state of an active domain (no-op if it is not active any more).
    pub fn set_runtime_state(
        &self,
        uuid: &Uuid,
        state: DomainState,
        reason: &str,
    ) -> rusqlite::Result<()> {
        self.transaction(|tx| {
            tx.execute(
                "UPDATE runtime SET state = ?2, reason = ?3 WHERE uuid = ?1",
                params![uuid.to_string(), state.as_str(), reason],
            )?;
            Ok(())
        })
    }

    /// Records that a domain stopped: drops its runtime row and remembers why.
    pub fn mark_stopped(&self, uuid: &Uuid, reason: &str) -> rusqlite::Result<()> {
        self.transaction(|tx| {
            tx.execute(
                "DELETE FROM runtime WHERE uuid = ?1",
                params![uuid.to_string()],
            )?;
            tx.execute(
                "UPDATE domains SET off_reason = ?2 WHERE uuid = ?1",
                params![uuid.to_string(), reason],
            )?;
            Ok(())
        })
    }

    pub fn set_autostart(&self, uuid: &Uuid, enabled: bool) -> rusqlite::Result<()> {
        self.transaction(|tx| {
            tx.execute(
                "UPDATE domains SET autostart = ?2 WHERE uuid = ?1",
                params![uuid.to_string(), enabled],
            )?;
            Ok(())
        })
    }
}

pub fn list_domains(tx: &Transaction<'_>) -> rusqlite::Result<Vec<DomainRecord>> {
    let mut stmt = tx.prepare(
        "SELECT uuid, name, xml, autostart, engine, off_reason FROM domains ORDER BY name",
    )?;
    let rows = stmt.query_map([], domain_from_row)?;
    rows.collect()
}

pub fn domain_by_uuid(tx: &Transaction<'_>, uuid: &Uuid) -> rusqlite::Result<Option<DomainRecord>> {
    tx.query_row(
        "SELECT uuid, name, xml, autostart, engine, off_reason FROM domains WHERE uuid = ?1",
        params![uuid.to_string()],
        domain_from_row,
    )
    .optional()
}

pub fn domain_by_name(tx: &Transaction<'_>, name: &str) -> rusqlite::Result<Option<DomainRecord>> {
    tx.query_row(
        "SELECT uuid, name, xml, autostart, engine, off_reason FROM domains WHERE name = ?1",
        params![name],
        domain_from_row,
    )
    .optional()
}

/// Stores a new definition and indexes its MAC addresses.
pub fn insert_domain(tx: &Transaction<'_>, record: &DomainRecord) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO domains (uuid, name, xml, autostart, engine, off_reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            record.uuid.to_string(),
            record.name,
            record.xml,
            record.autostart,
            record.engine,
            record.off_reason
        ],
    )?;
    index_macs(tx, &record.uuid.to_string(), false, &record.xml)
}

/// Replaces a definition and the index of its MAC addresses.
pub fn update_domain_xml(
    tx: &Transaction<'_>,
    uuid: &Uuid,
    xml: &str,
    engine: &str,
) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE domains SET xml = ?2, engine = ?3 WHERE uuid = ?1",
        params![uuid.to_string(), xml, engine],
    )?;
    index_macs(tx, &uuid.to_string(), false, xml)
}

/// Deletes a definition and its MAC addresses (the live ones go with the live definition).
pub fn delete_domain(tx: &Transaction<'_>, uuid: &Uuid) -> rusqlite::Result<()> {
    tx.execute(
        "DELETE FROM domains WHERE uuid = ?1",
        params![uuid.to_string()],
    )?;
    unindex_macs(tx, &uuid.to_string(), false)
}

pub fn runtime(tx: &Transaction<'_>, uuid: &Uuid) -> rusqlite::Result<Option<RuntimeRecord>> {
    tx.query_row(
        "SELECT uuid, pid, run_dir, state, reason, id, accel, started_at FROM runtime WHERE uuid = ?1",
        params![uuid.to_string()],
        runtime_from_row,
    )
    .optional()
}

pub fn insert_runtime(tx: &Transaction<'_>, record: &RuntimeRecord) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO runtime (uuid, pid, run_dir, state, reason, id, accel, started_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            record.uuid.to_string(),
            record.pid,
            record.run_dir.to_string_lossy(),
            record.state.as_str(),
            record.reason,
            record.id,
            record.accel,
            record.started_at
        ],
    )?;
    Ok(())
}

/// Hands out runtime ids 1, 2, 3, ... across daemon restarts, like libvirt.
pub fn next_runtime_id(tx: &Transaction<'_>) -> rusqlite::Result<u32> {
    let current: Option<i64> = tx
        .query_row(
            "SELECT value FROM counters WHERE name = 'runtime_id'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    let next = current.unwrap_or(0) + 1;
    let next = if next > i64::from(u32::MAX) { 1 } else { next };
    tx.execute(
        "INSERT INTO counters (name, value) VALUES ('runtime_id', ?1)
         ON CONFLICT(name) DO UPDATE SET value = excluded.value",
        params![next],
    )?;
    Ok(next as u32)
}

// ---- MAC addresses (`domain_macs`) ----

/// The MAC addresses a domain definition gives its interfaces
/// (`<devices><interface><mac address>`), read without validating the rest: what reserves a MAC
/// is that a definition names it. An address that is not a MAC is skipped (such a definition
/// never passed parsing); XML that is not well-formed is an error.
pub fn macs_of_xml(xml: &str) -> Result<Vec<MacAddr>, oxvirt_xml::XmlError> {
    let doc = oxvirt_xml::parse(xml)?;
    Ok(doc
        .root_element()
        .children()
        .filter(|c| c.has_tag_name("devices"))
        .flat_map(|devices| devices.children().filter(|c| c.has_tag_name("interface")))
        .flat_map(|iface| iface.children().filter(|c| c.has_tag_name("mac")))
        .filter_map(|mac| mac.attribute("address"))
        .filter_map(|text| oxvirt_domain::parse_mac(text).ok())
        .collect())
}

/// Replaces the indexed MACs of domain `uuid`'s stored (`live` false) or live definition.
pub(crate) fn index_macs(
    tx: &Transaction<'_>,
    uuid: &str,
    live: bool,
    xml: &str,
) -> rusqlite::Result<()> {
    // A definition whose MACs cannot be read would reserve none: refuse to store it.
    let macs =
        macs_of_xml(xml).map_err(|err| rusqlite::Error::ToSqlConversionFailure(Box::new(err)))?;
    unindex_macs(tx, uuid, live)?;
    let mut insert = tx.prepare_cached(
        "INSERT OR IGNORE INTO domain_macs (mac, uuid, live) VALUES (?1, ?2, ?3)",
    )?;
    for mac in macs {
        insert.execute(params![mac.to_string(), uuid, live])?;
    }
    Ok(())
}

fn unindex_macs(tx: &Transaction<'_>, uuid: &str, live: bool) -> rusqlite::Result<()> {
    tx.execute(
        "DELETE FROM domain_macs WHERE uuid = ?1 AND live = ?2",
        params![uuid, live],
    )?;
    Ok(())
}

/// Indexes the MACs of the live definition of running domain `uuid` (hot-plugged NICs included);
/// call in the transaction that writes that definition.
pub fn index_live_macs(tx: &Transaction<'_>, uuid: &Uuid, xml: &str) -> rusqlite::Result<()> {
    index_macs(tx, &uuid.to_string(), true, xml)
}

/// Forgets the MACs of domain `uuid`'s live definition (the guest is gone).
pub fn unindex_live_macs(tx: &Transaction<'_>, uuid: &Uuid) -> rusqlite::Result<()> {
    unindex_macs(tx, &uuid.to_string(), true)
}

/// The name of a domain whose stored or live definition has `mac` (its uuid if it has no stored
/// definition any more), leaving out the domain `except` (uuid, name): the one being defined.
pub fn mac_user(
    tx: &Transaction<'_>,
    mac: MacAddr,
    except: Option<(&Uuid, &str)>,
) -> rusqlite::Result<Option<String>> {
    let (uuid, name) = match except {
        Some((uuid, name)) => (Some(uuid.to_string()), Some(name)),
        None => (None, None),
    };
    tx.prepare_cached(
        "SELECT COALESCE(d.name, m.uuid) FROM domain_macs m
         LEFT JOIN domains d ON d.uuid = m.uuid
         WHERE m.mac = ?1 AND (?2 IS NULL OR (m.uuid != ?2 AND d.name IS NOT ?3))
         LIMIT 1",
    )?
    .query_row(params![mac.to_string(), uuid, name], |row| row.get(0))
    .optional()
}

/// A MAC address that domain `uuid` shares with another domain, and that domain's name: the
/// last word on uniqueness, inside the transaction that stores a definition, for two defines
/// that checked at the same time.
pub fn mac_clash(tx: &Transaction<'_>, uuid: &Uuid) -> rusqlite::Result<Option<(String, String)>> {
    tx.prepare_cached(
        "SELECT a.mac, COALESCE(d.name, b.uuid) FROM domain_macs a
         JOIN domain_macs b ON b.mac = a.mac AND b.uuid != a.uuid
         LEFT JOIN domains d ON d.uuid = b.uuid
         WHERE a.uuid = ?1
         LIMIT 1",
    )?
    .query_row(params![uuid.to_string()], |row| {
        Ok((row.get(0)?, row.get(1)?))
    })
    .optional()
}

fn parse_uuid(index: usize, text: String) -> rusqlite::Result<Uuid> {
    Uuid::parse_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn domain_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<DomainRecord> {
    Ok(DomainRecord {
        uuid: parse_uuid(0, row.get(0)?)?,
        name: row.get(1)?,
        xml: row.get(2)?,
        autostart: row.get(3)?,
        engine: row.get(4)?,
        off_reason: row.get(5)?,
    })
}

fn runtime_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RuntimeRecord> {
    let state_text: String = row.get(3)?;
    let state = parse_state(&state_text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            3,
            rusqlite::types::Type::Text,
            format!("unknown domain state '{state_text}'").into(),
        )
    })?;
    let run_dir: String = row.get(2)?;
    Ok(RuntimeRecord {
        uuid: parse_uuid(0, row.get(0)?)?,
        pid: row.get(1)?,
        run_dir: PathBuf::from(run_dir),
        state,
        reason: row.get(4)?,
        id: row.get(5)?,
        accel: row.get(6)?,
        started_at: row.get(7)?,
    })
}

fn parse_state(text: &str) -> Option<DomainState> {
    [
        DomainState::Running,
        DomainState::Paused,
        DomainState::ShutOff,
        DomainState::Crashed,
        DomainState::InShutdown,
        DomainState::PmSuspended,
    ]
    .into_iter()
    .find(|s| s.as_str() == text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> DomainRecord {
        DomainRecord {
            uuid: Uuid::new_v4(),
            name: name.to_string(),
            xml: format!("<domain><name>{name}</name></domain>"),
            autostart: false,
            engine: "qemu".to_string(),
            off_reason: "unknown".to_string(),
        }
    }

    #[test]
    fn failed_transaction_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("oxvirt.db")).unwrap();
        let a = record("a");
        store.transaction(|tx| insert_domain(tx, &a)).unwrap();
        let mut clash = record("b");
        clash.uuid = a.uuid;
        let result: rusqlite::Result<()> = store.transaction(|tx| {
            insert_domain(tx, &record("c"))?;
            insert_domain(tx, &clash)
        });
        assert!(result.is_err());
        assert_eq!(store.list_domains().unwrap(), vec![a]);
    }

    #[test]
    fn runtime_rows_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oxvirt.db");
        let a = record("a");
        {
            let store = Store::open(&path).unwrap();
            store
                .transaction(|tx| {
                    insert_domain(tx, &a)?;
                    let id = next_runtime_id(tx)?;
                    insert_runtime(
                        tx,
                        &RuntimeRecord {
                            uuid: a.uuid,
                            pid: 42,
                            run_dir: "/tmp/x".into(),
                            state: DomainState::Paused,
                            reason: "user".into(),
                            id,
                            accel: "tcg".into(),
                            started_at: 7,
                        },
                    )
                })
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let rows = store.list_runtime().unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].state, DomainState::Paused);
        assert_eq!(rows[0].id, 1);
        assert_eq!(store.transaction(next_runtime_id).unwrap(), 2);
        assert_eq!(
            store.find_domain(&a.uuid.to_string()).unwrap(),
            Some(a.clone())
        );
        assert_eq!(store.find_domain("a").unwrap(), Some(a));
        assert_eq!(store.find_domain("zz").unwrap(), None);
    }

    fn with_mac(name: &str, mac: &str) -> DomainRecord {
        DomainRecord {
            xml: format!(
                "<domain>\n  <name>{name}</name>\n  <devices>\n    <interface type='user'>\n      <mac address='{mac}'/>\n    </interface>\n  </devices>\n</domain>\n"
            ),
            ..record(name)
        }
    }

    fn mac(text: &str) -> MacAddr {
        oxvirt_domain::parse_mac(text).unwrap()
    }

    fn user_of(store: &Store, text: &str) -> Option<String> {
        store
            .transaction(|tx| mac_user(tx, mac(text), None))
            .unwrap()
    }

    // The schema of oxvirtd before versioned migrations, verbatim: store.rs, networks.rs and
    // pools.rs each ran theirs at start.
    const LEGACY_STORE: &str = "
CREATE TABLE IF NOT EXISTS domains (
    uuid TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL UNIQUE,
    xml TEXT NOT NULL,
    autostart INTEGER NOT NULL DEFAULT 0,
    engine TEXT NOT NULL DEFAULT 'qemu',
    off_reason TEXT NOT NULL DEFAULT 'unknown'
);
CREATE TABLE IF NOT EXISTS runtime (
    uuid TEXT PRIMARY KEY NOT NULL REFERENCES domains(uuid),
    pid INTEGER NOT NULL,
    run_dir TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL,
    id INTEGER NOT NULL UNIQUE,
    accel TEXT NOT NULL,
    started_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
);
";
    const LEGACY_NETWORKS: &str = "
CREATE TABLE IF NOT EXISTS networks (
    uuid TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL UNIQUE,
    xml TEXT NOT NULL,
    autostart INTEGER NOT NULL DEFAULT 0,
    active INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS live_domains (
    uuid TEXT PRIMARY KEY NOT NULL,
    xml TEXT NOT NULL,
    nics TEXT NOT NULL
);
";
    const LEGACY_POOLS: &str = "
CREATE TABLE IF NOT EXISTS pools (
    uuid TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL UNIQUE,
    target TEXT NOT NULL,
    autostart INTEGER NOT NULL DEFAULT 0,
    active INTEGER NOT NULL DEFAULT 0
);
";

    /// A database as the oxvirtd before versioned migrations left it, written with its SQL.
    fn legacy_database(path: &Path, a: &DomainRecord, live_xml: &str) {
        let conn = Connection::open(path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "foreign_keys", "ON").unwrap();
        for schema in [LEGACY_STORE, LEGACY_NETWORKS, LEGACY_POOLS] {
            conn.execute_batch(schema).unwrap();
        }
        conn.execute(
            "INSERT INTO domains (uuid, name, xml, autostart, engine, off_reason) VALUES (?1, ?2, ?3, 1, 'qemu', 'shutdown')",
            params![a.uuid.to_string(), a.name, a.xml],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO runtime (uuid, pid, run_dir, state, reason, id, accel, started_at)
             VALUES (?1, 4242, '/run/x', 'paused', 'user', 7, 'tcg', 99)",
            params![a.uuid.to_string()],
        )
        .unwrap();
        conn.execute_batch(
            "INSERT INTO counters (name, value) VALUES ('runtime_id', 7), ('default_network_offered', 1);
             INSERT INTO networks (uuid, name, xml, autostart, active)
                 VALUES ('6f1f7c0e-1111-4111-8111-111111111111', 'default', '<network/>', 1, 1);
             INSERT INTO pools (uuid, name, target, autostart, active)
                 VALUES ('6f1f7c0e-2222-4222-8222-222222222222', 'images', '/srv/images', 0, 1);",
        )
        .unwrap();
        conn.execute(
            "INSERT INTO live_domains (uuid, xml, nics) VALUES (?1, ?2, '[]')",
            params![a.uuid.to_string(), live_xml],
        )
        .unwrap();
        assert_eq!(migrations::user_version(&conn).unwrap(), 0);
    }

    #[test]
    fn database_of_the_unversioned_schema_upgrades_keeping_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oxvirt.db");
        let a = with_mac("a", "52:54:00:00:00:01");
        // The running guest got a NIC hot-plugged: its live definition has a second MAC.
        let live_xml = a.xml.replace(
            "  </devices>",
            "    <interface type='user'>\n      <mac address='52:54:00:00:00:02'/>\n    </interface>\n  </devices>",
        );
        legacy_database(&path, &a, &live_xml);

        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), migrations::latest());
        let domains = store.list_domains().unwrap();
        assert_eq!(
            domains,
            vec![DomainRecord {
                autostart: true,
                off_reason: "shutdown".into(),
                ..a.clone()
            }]
        );
        let runtime = store.list_runtime().unwrap();
        assert_eq!(runtime.len(), 1);
        assert_eq!((runtime[0].pid, runtime[0].id), (4242, 7));
        assert_eq!(runtime[0].state, DomainState::Paused);
        assert_eq!(store.transaction(next_runtime_id).unwrap(), 8);
        let (networks, pools, live): (String, String, String) = store
            .transaction(|tx| {
                Ok((
                    tx.query_row(
                        "SELECT name || ' ' || autostart || active FROM networks",
                        [],
                        |r| r.get(0),
                    )?,
                    tx.query_row(
                        "SELECT name || ' ' || target || ' ' || active FROM pools",
                        [],
                        |r| r.get(0),
                    )?,
                    tx.query_row("SELECT xml FROM live_domains", [], |r| r.get(0))?,
                ))
            })
            .unwrap();
        assert_eq!(networks, "default 11");
        assert_eq!(pools, "images /srv/images 1");
        assert_eq!(live, live_xml);
        // The MAC index was filled from the stored and the live definitions.
        assert_eq!(user_of(&store, "52:54:00:00:00:01").as_deref(), Some("a"));
        assert_eq!(user_of(&store, "52:54:00:00:00:02").as_deref(), Some("a"));
        assert_eq!(user_of(&store, "52:54:00:00:00:03"), None);
        drop(store);

        // Opening again changes nothing.
        let store = Store::open(&path).unwrap();
        assert_eq!(store.list_domains().unwrap(), domains);
    }

    #[test]
    fn database_with_only_some_of_the_old_tables_gets_the_others() {
        // A daemon killed after the store's tables were made, before the networks' and pools'.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oxvirt.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(LEGACY_STORE).unwrap();
        drop(conn);
        let store = Store::open(&path).unwrap();
        let tables: i64 = store
            .transaction(|tx| {
                tx.query_row(
                    "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'
                     AND name IN ('networks', 'live_domains', 'pools', 'domain_macs')",
                    [],
                    |r| r.get(0),
                )
            })
            .unwrap();
        assert_eq!(tables, 4);
    }

    #[test]
    fn database_of_a_newer_oxvirtd_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oxvirt.db");
        drop(Store::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", migrations::latest() + 1)
            .unwrap();
        drop(conn);
        let err = match Store::open(&path) {
            Err(err) => err,
            Ok(_) => panic!("a newer schema was opened"),
        };
        assert!(matches!(err, StoreError::TooNew { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("newer"), "{message}");
        let conn = Connection::open(&path).unwrap();
        assert_eq!(
            migrations::user_version(&conn).unwrap(),
            migrations::latest() + 1
        );
    }

    #[test]
    fn migrations_are_all_or_nothing() {
        // Version 2 creates `domain_macs`; if it is in the way, the whole upgrade rolls back.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oxvirt.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE domain_macs (x)").unwrap();
        drop(conn);
        let err = match Store::open(&path) {
            Err(err) => err,
            Ok(_) => panic!("the migration did not fail"),
        };
        assert!(
            matches!(err, StoreError::Migration { version: 2, .. }),
            "{err}"
        );
        let conn = Connection::open(&path).unwrap();
        assert_eq!(migrations::user_version(&conn).unwrap(), 0);
        let domains: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'domains'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(domains, 0, "version 1 was kept although version 2 failed");
    }

    #[test]
    fn mac_index_follows_define_edit_and_undefine() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("oxvirt.db")).unwrap();
        let a = with_mac("a", "52:54:00:00:00:01");
        store.transaction(|tx| insert_domain(tx, &a)).unwrap();
        assert_eq!(user_of(&store, "52:54:00:00:00:01").as_deref(), Some("a"));
        // The domain being defined does not clash with itself, by uuid or by name.
        for except in [(&a.uuid, "other"), (&Uuid::new_v4(), "a")] {
            let user = store
                .transaction(|tx| mac_user(tx, mac("52:54:00:00:00:01"), Some(except)))
                .unwrap();
            assert_eq!(user, None);
        }
        let edited = with_mac("a", "52:54:00:00:00:02");
        store
            .transaction(|tx| update_domain_xml(tx, &a.uuid, &edited.xml, "qemu"))
            .unwrap();
        assert_eq!(user_of(&store, "52:54:00:00:00:01"), None);
        assert_eq!(user_of(&store, "52:54:00:00:00:02").as_deref(), Some("a"));
        store.transaction(|tx| delete_domain(tx, &a.uuid)).unwrap();
        assert_eq!(user_of(&store, "52:54:00:00:00:02"), None);
    }

    #[test]
    fn damaged_stored_xml_still_reserves_its_macs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("oxvirt.db")).unwrap();
        let a = with_mac("a", "52:54:00:00:00:01");
        store.transaction(|tx| insert_domain(tx, &a)).unwrap();
        store
            .transaction(|tx| {
                tx.execute(
                    "UPDATE domains SET xml = '<domain><name>a</name' WHERE uuid = ?1",
                    params![a.uuid.to_string()],
                )
            })
            .unwrap();
        assert_eq!(user_of(&store, "52:54:00:00:00:01").as_deref(), Some("a"));
    }

    #[test]
    fn xml_that_is_not_xml_is_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("oxvirt.db")).unwrap();
        let broken = DomainRecord {
            xml: "<domain>".into(),
            ..record("b")
        };
        assert!(store.transaction(|tx| insert_domain(tx, &broken)).is_err());
        assert_eq!(store.list_domains().unwrap(), vec![]);
    }

    #[test]
    fn a_mac_taken_by_two_domains_is_a_clash() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("oxvirt.db")).unwrap();
        let a = with_mac("a", "52:54:00:00:00:01");
        let b = with_mac("b", "52:54:00:00:00:02");
        store.transaction(|tx| insert_domain(tx, &a)).unwrap();
        store.transaction(|tx| insert_domain(tx, &b)).unwrap();
        assert_eq!(
            store.transaction(|tx| mac_clash(tx, &b.uuid)).unwrap(),
            None
        );
        // The same domain's live definition having its stored MACs is no clash.
        store
            .transaction(|tx| index_live_macs(tx, &b.uuid, &b.xml))
            .unwrap();
        assert_eq!(
            store.transaction(|tx| mac_clash(tx, &b.uuid)).unwrap(),
            None
        );
        let b2 = with_mac("b", "52:54:00:00:00:01");
        store
            .transaction(|tx| update_domain_xml(tx, &b.uuid, &b2.xml, "qemu"))
            .unwrap();
        assert_eq!(
            store.transaction(|tx| mac_clash(tx, &b.uuid)).unwrap(),
            Some(("52:54:00:00:00:01".to_string(), "a".to_string()))
        );
    }

    #[test]
    fn backups_are_taken_when_something_changed_and_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let backups = dir.path().join("backups");
        let store = Store::open(&dir.path().join("oxvirt.db")).unwrap();
        assert_eq!(store.backup_if_changed(&backups, 2).unwrap(), None);
        let mut names = Vec::new();
        for name in ["a", "b", "c"] {
            store
                .transaction(|tx| insert_domain(tx, &record(name)))
                .unwrap();
            match store.backup_if_changed(&backups, 2).unwrap() {
                Some(BackupOutcome::Written(path)) => names.push(path),
                other => panic!("no backup after a change: {other:?}"),
            }
            assert_eq!(store.backup_if_changed(&backups, 2).unwrap(), None);
        }
        assert_eq!(list_backups(&backups).unwrap(), names[1..].to_vec());
        let newest = ReadOnlyDb::open(&names[2]).unwrap();
        newest.quick_check().unwrap();
        assert_eq!(newest.domain_count(), Some(3));
    }
}
