//! The runtime state of running guests, in one place: one row per active domain (`runtime`: its
//! process, run directory, state and runtime id: what a restarted daemon needs to find its guests
//! again) and its live definition (`live_domains`: the launched copy of the definition, with the
//! TAPs and hot-plugged NICs, and its NICs' engine ids).

use std::path::PathBuf;

use oxvirt_api::DomainState;
use rusqlite::{params, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::counters::{counter, set_counter};
use super::db::{parse_uuid, Store};
use super::macs::{index_live_macs, unindex_live_macs};

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
            // A definition given while it ran is the one it has from now on.
            super::domains::apply_next_definition(tx, uuid)?;
            Ok(())
        })
    }
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

/// The `counters` row of the last runtime id handed out.
const RUNTIME_ID: &str = "runtime_id";

/// Hands out runtime ids 1, 2, 3, ... across daemon restarts, like libvirt.
pub fn next_runtime_id(tx: &Transaction<'_>) -> rusqlite::Result<u32> {
    let next = counter(tx, RUNTIME_ID)?.unwrap_or(0) + 1;
    let next = if next > i64::from(u32::MAX) { 1 } else { next };
    set_counter(tx, RUNTIME_ID, next)?;
    Ok(next as u32)
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

/// Engine ids of one NIC of a running guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicIds {
    pub mac: String,
    pub device: String,
    pub netdev: String,
}

/// The launched copy of a running domain's definition and its NICs' engine ids.
#[derive(Debug, Clone)]
pub struct LiveDomain {
    pub xml: String,
    pub nics: Vec<NicIds>,
}

pub fn live_domain(store: &Store, uuid: &Uuid) -> rusqlite::Result<Option<LiveDomain>> {
    store
        .transaction(|tx| {
            tx.query_row(
                "SELECT xml, nics FROM live_domains WHERE uuid = ?1",
                params![uuid.to_string()],
                |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)),
            )
            .optional()
        })
        .map(|row| {
            row.map(|(xml, nics)| LiveDomain {
                xml,
                nics: serde_json::from_str(&nics).unwrap_or_default(),
            })
        })
}

pub fn all_live_domains(store: &Store) -> rusqlite::Result<Vec<(Uuid, LiveDomain)>> {
    let rows: Vec<(String, String, String)> = store.transaction(|tx| {
        let mut stmt = tx.prepare("SELECT uuid, xml, nics FROM live_domains")?;
        let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
        rows.collect()
    })?;
    Ok(rows
        .into_iter()
        .filter_map(|(uuid, xml, nics)| {
            let uuid = Uuid::parse_str(&uuid).ok()?;
            let nics = serde_json::from_str(&nics).unwrap_or_default();
            Some((uuid, LiveDomain { xml, nics }))
        })
        .collect())
}

/// Records the live definition of running domain `uuid`, and its MACs in the store's index.
pub fn put_live_domain(store: &Store, uuid: &Uuid, live: &LiveDomain) -> rusqlite::Result<()> {
    let nics = serde_json::to_string(&live.nics).unwrap_or_else(|_| "[]".to_string());
    store.transaction(|tx| {
        tx.execute(
            "INSERT INTO live_domains (uuid, xml, nics) VALUES (?1, ?2, ?3)
             ON CONFLICT(uuid) DO UPDATE SET xml = excluded.xml, nics = excluded.nics",
            params![uuid.to_string(), live.xml, nics],
        )?;
        index_live_macs(tx, uuid, &live.xml)
    })
}

pub fn delete_live_domain(store: &Store, uuid: &Uuid) -> rusqlite::Result<()> {
    store.transaction(|tx| {
        tx.execute(
            "DELETE FROM live_domains WHERE uuid = ?1",
            params![uuid.to_string()],
        )?;
        unindex_live_macs(tx, uuid)
    })
}
