//! Domain definitions (`domains`): the normalized XML, autostart, and why each last stopped.

use rusqlite::{params, OptionalExtension, Transaction};
use uuid::Uuid;

use super::db::{parse_uuid, Store};
use super::macs::{index_macs, unindex_macs};

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

impl Store {
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

/// Stores the definition a running domain takes when it stops (replacing an earlier one).
pub fn set_next_definition(
    tx: &Transaction<'_>,
    uuid: &Uuid,
    xml: &str,
    engine: &str,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO next_definitions (uuid, xml, engine) VALUES (?1, ?2, ?3)
         ON CONFLICT(uuid) DO UPDATE SET xml = excluded.xml, engine = excluded.engine",
        params![uuid.to_string(), xml, engine],
    )?;
    Ok(())
}

/// The definition a running domain takes when it stops, if `define` gave one.
pub fn next_definition(tx: &Transaction<'_>, uuid: &Uuid) -> rusqlite::Result<Option<String>> {
    tx.query_row(
        "SELECT xml FROM next_definitions WHERE uuid = ?1",
        params![uuid.to_string()],
        |row| row.get(0),
    )
    .optional()
}

/// The domain stopped: its next definition, if any, becomes its definition.
pub fn apply_next_definition(tx: &Transaction<'_>, uuid: &Uuid) -> rusqlite::Result<bool> {
    let next: Option<(String, String)> = tx
        .query_row(
            "SELECT xml, engine FROM next_definitions WHERE uuid = ?1",
            params![uuid.to_string()],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    let Some((xml, engine)) = next else {
        return Ok(false);
    };
    update_domain_xml(tx, uuid, &xml, &engine)?;
    tx.execute(
        "DELETE FROM next_definitions WHERE uuid = ?1",
        params![uuid.to_string()],
    )?;
    Ok(true)
}

/// Deletes a definition, its snapshots' metadata and its MAC addresses (the live ones go with
/// the live definition).
pub fn delete_domain(tx: &Transaction<'_>, uuid: &Uuid) -> rusqlite::Result<()> {
    super::delete_domain_snapshots(tx, uuid)?;
    tx.execute(
        "DELETE FROM next_definitions WHERE uuid = ?1",
        params![uuid.to_string()],
    )?;
    tx.execute(
        "DELETE FROM domains WHERE uuid = ?1",
        params![uuid.to_string()],
    )?;
    unindex_macs(tx, &uuid.to_string(), false)
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
