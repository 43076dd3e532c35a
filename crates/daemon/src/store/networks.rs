//! Network definitions (`networks`): the XML as defined, and whether each is active and autostarts.

use rusqlite::{params, Transaction};
use uuid::Uuid;

use super::db::Store;

/// A stored network definition.
#[derive(Debug, Clone)]
pub struct NetworkRecord {
    pub uuid: Uuid,
    pub name: String,
    pub xml: String,
    pub autostart: bool,
    pub active: bool,
}

pub fn network_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<NetworkRecord> {
    let uuid: String = row.get(0)?;
    Ok(NetworkRecord {
        uuid: Uuid::parse_str(&uuid).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        })?,
        name: row.get(1)?,
        xml: row.get(2)?,
        autostart: row.get(3)?,
        active: row.get(4)?,
    })
}

pub fn list_networks(tx: &Transaction<'_>) -> rusqlite::Result<Vec<NetworkRecord>> {
    let mut stmt =
        tx.prepare("SELECT uuid, name, xml, autostart, active FROM networks ORDER BY name")?;
    let rows = stmt.query_map([], network_from_row)?;
    rows.collect()
}

pub fn insert_network(tx: &Transaction<'_>, record: &NetworkRecord) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO networks (uuid, name, xml, autostart, active) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            record.uuid.to_string(),
            record.name,
            record.xml,
            record.autostart,
            record.active
        ],
    )?;
    Ok(())
}

pub fn set_network_flag(
    store: &Store,
    uuid: &Uuid,
    column: &str,
    value: bool,
) -> rusqlite::Result<()> {
    // `column` is one of our two literal column names, never user input.
    let sql = format!("UPDATE networks SET {column} = ?2 WHERE uuid = ?1");
    store.transaction(|tx| {
        tx.execute(&sql, params![uuid.to_string(), value])?;
        Ok(())
    })
}

pub fn delete_network(tx: &Transaction<'_>, uuid: &Uuid) -> rusqlite::Result<()> {
    tx.execute(
        "DELETE FROM networks WHERE uuid = ?1",
        params![uuid.to_string()],
    )?;
    Ok(())
}

pub fn count_networks(tx: &Transaction<'_>) -> rusqlite::Result<i64> {
    tx.query_row("SELECT COUNT(*) FROM networks", [], |row| row.get(0))
}
