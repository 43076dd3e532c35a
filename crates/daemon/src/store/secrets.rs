//! `secrets`: secret definitions (normalized XML) and their values (see the migration that made
//! the table). Ephemeral secrets never reach this table: the secrets service keeps them in
//! memory.

use rusqlite::{params, OptionalExtension, Transaction};
use uuid::Uuid;

/// A stored secret: its definition, and its value once one was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRecord {
    pub uuid: Uuid,
    /// `TYPE ID` of the definition's `<usage>`, if any.
    pub usage: Option<String>,
    pub xml: String,
    pub value: Option<Vec<u8>>,
}

fn secret_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<SecretRecord> {
    let uuid: String = row.get(0)?;
    let uuid = Uuid::parse_str(&uuid).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(SecretRecord {
        uuid,
        usage: row.get(1)?,
        xml: row.get(2)?,
        value: row.get(3)?,
    })
}

const SECRET_COLUMNS: &str = "uuid, usage, xml, value";

pub fn list_secrets(tx: &Transaction<'_>) -> rusqlite::Result<Vec<SecretRecord>> {
    let mut stmt = tx.prepare(&format!(
        "SELECT {SECRET_COLUMNS} FROM secrets ORDER BY uuid"
    ))?;
    let rows = stmt.query_map([], secret_from_row)?;
    rows.collect()
}

/// The secret whose `column` (`uuid` or `usage`) is `value`.
pub fn secret_by(
    tx: &Transaction<'_>,
    column: &str,
    value: &str,
) -> rusqlite::Result<Option<SecretRecord>> {
    tx.query_row(
        &format!("SELECT {SECRET_COLUMNS} FROM secrets WHERE {column} = ?1"),
        params![value],
        secret_from_row,
    )
    .optional()
}

/// Inserts or replaces the definition, keeping a stored value.
pub fn put_secret_definition(
    tx: &Transaction<'_>,
    uuid: &Uuid,
    usage: Option<&str>,
    xml: &str,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO secrets (uuid, usage, xml) VALUES (?1, ?2, ?3)
         ON CONFLICT(uuid) DO UPDATE SET usage = excluded.usage, xml = excluded.xml",
        params![uuid.to_string(), usage, xml],
    )?;
    Ok(())
}

pub fn set_secret_value(tx: &Transaction<'_>, uuid: &Uuid, value: &[u8]) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE secrets SET value = ?2 WHERE uuid = ?1",
        params![uuid.to_string(), value],
    )?;
    Ok(())
}

pub fn delete_secret(tx: &Transaction<'_>, uuid: &Uuid) -> rusqlite::Result<()> {
    tx.execute(
        "DELETE FROM secrets WHERE uuid = ?1",
        params![uuid.to_string()],
    )?;
    Ok(())
}
