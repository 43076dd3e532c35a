//! Domain snapshots' metadata (`snapshots`): one row per snapshot, its XML as
//! `snapshot-dumpxml` prints it, its parent by name, and which one is the domain's current
//! snapshot. The snapshot data itself lives in the disk images (internal snapshots, overlays)
//! or in files beside them; the row is written only once that data exists, so a crash leaves
//! either a usable snapshot or none (see services/snapshots.rs).

use rusqlite::{params, OptionalExtension, Transaction};
use uuid::Uuid;

/// One snapshot's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    pub domain: Uuid,
    pub name: String,
    pub parent: Option<String>,
    /// Seconds since the epoch (also the listing's tie-breaker after the name).
    pub created: i64,
    pub current: bool,
    /// `<domainsnapshot>` as `snapshot-dumpxml` prints it.
    pub xml: String,
}

pub(super) fn v6_snapshots(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE snapshots (
            domain TEXT NOT NULL REFERENCES domains(uuid),
            name TEXT NOT NULL,
            parent TEXT,
            created INTEGER NOT NULL,
            current INTEGER NOT NULL DEFAULT 0,
            xml TEXT NOT NULL,
            PRIMARY KEY (domain, name)
        ) WITHOUT ROWID;",
    )
}

fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<SnapshotRecord> {
    let domain: String = row.get(0)?;
    Ok(SnapshotRecord {
        domain: Uuid::parse_str(&domain).map_err(|err| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(err))
        })?,
        name: row.get(1)?,
        parent: row.get(2)?,
        created: row.get(3)?,
        current: row.get(4)?,
        xml: row.get(5)?,
    })
}

const COLUMNS: &str = "domain, name, parent, created, current, xml";

/// Every snapshot of a domain, by name (the order `snapshot-list` prints).
pub fn snapshots(tx: &Transaction<'_>, domain: &Uuid) -> rusqlite::Result<Vec<SnapshotRecord>> {
    let mut statement = tx.prepare(&format!(
        "SELECT {COLUMNS} FROM snapshots WHERE domain = ?1 ORDER BY name"
    ))?;
    let rows = statement.query_map(params![domain.to_string()], from_row)?;
    rows.collect()
}

pub fn snapshot(
    tx: &Transaction<'_>,
    domain: &Uuid,
    name: &str,
) -> rusqlite::Result<Option<SnapshotRecord>> {
    tx.query_row(
        &format!("SELECT {COLUMNS} FROM snapshots WHERE domain = ?1 AND name = ?2"),
        params![domain.to_string(), name],
        from_row,
    )
    .optional()
}

pub fn snapshot_count(tx: &Transaction<'_>, domain: &Uuid) -> rusqlite::Result<u64> {
    tx.query_row(
        "SELECT COUNT(*) FROM snapshots WHERE domain = ?1",
        params![domain.to_string()],
        |row| row.get(0),
    )
}

/// Records a new snapshot; with `record.current` it becomes the only current one.
pub fn insert_snapshot(tx: &Transaction<'_>, record: &SnapshotRecord) -> rusqlite::Result<()> {
    if record.current {
        clear_current(tx, &record.domain)?;
    }
    tx.execute(
        &format!("INSERT INTO snapshots ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
        params![
            record.domain.to_string(),
            record.name,
            record.parent,
            record.created,
            record.current,
            record.xml
        ],
    )?;
    Ok(())
}

fn clear_current(tx: &Transaction<'_>, domain: &Uuid) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE snapshots SET current = 0 WHERE domain = ?1",
        params![domain.to_string()],
    )?;
    Ok(())
}

/// Makes `name` the domain's current snapshot (`None`: no snapshot is current).
pub fn set_current_snapshot(
    tx: &Transaction<'_>,
    domain: &Uuid,
    name: Option<&str>,
) -> rusqlite::Result<()> {
    clear_current(tx, domain)?;
    if let Some(name) = name {
        tx.execute(
            "UPDATE snapshots SET current = 1 WHERE domain = ?1 AND name = ?2",
            params![domain.to_string(), name],
        )?;
    }
    Ok(())
}

/// Replaces a snapshot's parent and XML (after its parent was deleted, or `snapshot-edit`).
pub fn update_snapshot(
    tx: &Transaction<'_>,
    domain: &Uuid,
    name: &str,
    parent: Option<&str>,
    xml: &str,
) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE snapshots SET parent = ?3, xml = ?4 WHERE domain = ?1 AND name = ?2",
        params![domain.to_string(), name, parent, xml],
    )?;
    Ok(())
}

pub fn delete_snapshot(tx: &Transaction<'_>, domain: &Uuid, name: &str) -> rusqlite::Result<()> {
    tx.execute(
        "DELETE FROM snapshots WHERE domain = ?1 AND name = ?2",
        params![domain.to_string(), name],
    )?;
    Ok(())
}

/// Forgets every snapshot of a domain (`undefine --snapshots-metadata`).
pub fn delete_domain_snapshots(tx: &Transaction<'_>, domain: &Uuid) -> rusqlite::Result<()> {
    tx.execute(
        "DELETE FROM snapshots WHERE domain = ?1",
        params![domain.to_string()],
    )?;
    Ok(())
}
