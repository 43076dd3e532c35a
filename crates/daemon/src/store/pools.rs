//! Storage pool definitions (`pools`): name, target directory, autostart and whether active.

use std::path::{Path, PathBuf};

use rusqlite::{params, OptionalExtension, Transaction};
use uuid::Uuid;

/// A stored pool definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRecord {
    pub uuid: Uuid,
    pub name: String,
    pub target: PathBuf,
    pub autostart: bool,
    pub active: bool,
}

pub fn pool_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<PoolRecord> {
    let uuid: String = row.get(0)?;
    let uuid = Uuid::parse_str(&uuid).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })?;
    let target: String = row.get(2)?;
    Ok(PoolRecord {
        uuid,
        name: row.get(1)?,
        target: PathBuf::from(target),
        autostart: row.get(3)?,
        active: row.get(4)?,
    })
}

pub const POOL_COLUMNS: &str = "uuid, name, target, autostart, active";

pub fn list_pool_rows(tx: &Transaction<'_>) -> rusqlite::Result<Vec<PoolRecord>> {
    let mut stmt = tx.prepare(&format!("SELECT {POOL_COLUMNS} FROM pools ORDER BY name"))?;
    let rows = stmt.query_map([], pool_from_row)?;
    rows.collect()
}

pub fn pool_by(
    tx: &Transaction<'_>,
    column: &str,
    value: &str,
) -> rusqlite::Result<Option<PoolRecord>> {
    tx.query_row(
        &format!("SELECT {POOL_COLUMNS} FROM pools WHERE {column} = ?1"),
        params![value],
        pool_from_row,
    )
    .optional()
}

pub fn set_pool_flag(
    tx: &Transaction<'_>,
    uuid: &Uuid,
    column: &str,
    value: bool,
) -> rusqlite::Result<()> {
    tx.execute(
        &format!("UPDATE pools SET {column} = ?2 WHERE uuid = ?1"),
        params![uuid.to_string(), value],
    )?;
    Ok(())
}

pub fn insert_pool(tx: &Transaction<'_>, record: &PoolRecord) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO pools (uuid, name, target, autostart, active) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            record.uuid.to_string(),
            record.name,
            record.target.to_string_lossy(),
            record.autostart,
            record.active
        ],
    )?;
    Ok(())
}

pub fn set_pool_target(tx: &Transaction<'_>, uuid: &Uuid, target: &Path) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE pools SET target = ?2 WHERE uuid = ?1",
        params![uuid.to_string(), target.to_string_lossy()],
    )?;
    Ok(())
}

pub fn delete_pool(tx: &Transaction<'_>, uuid: &Uuid) -> rusqlite::Result<()> {
    tx.execute(
        "DELETE FROM pools WHERE uuid = ?1",
        params![uuid.to_string()],
    )?;
    Ok(())
}
