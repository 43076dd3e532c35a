//! Domain definitions (`domains`) and the runtime rows of active domains (`runtime`): what a
//! restarted daemon needs to find its guests again.

use std::path::PathBuf;

use oxvirt_api::DomainState;
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
