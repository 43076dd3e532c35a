//! libvirt's DAC model in the store: the user each running QEMU guest runs as (`guest_users`),
//! and the owner each file had before it was given to that user (`security_labels`), so that
//! it gets it back when the guest stops, also after a daemon restart or crash
//! (services/dac.rs). The tables are schema version 8 (migrations.rs).

use std::path::PathBuf;

use rusqlite::params;
use uuid::Uuid;

use super::db::{parse_uuid, Store};

/// A file given to a guest's user, with the owner it had before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityLabel {
    pub path: PathBuf,
    pub uid: u32,
    pub gid: u32,
}

impl Store {
    /// Records that the guest `uuid` runs as `uid` (replacing what an earlier start recorded).
    pub fn set_guest_user(&self, uuid: &Uuid, uid: u32) -> rusqlite::Result<()> {
        self.transaction(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO guest_users (uuid, uid) VALUES (?1, ?2)",
                params![uuid.to_string(), uid],
            )?;
            Ok(())
        })
    }

    /// The user the guest `uuid` runs as, if it has one.
    pub fn guest_user(&self, uuid: &Uuid) -> rusqlite::Result<Option<u32>> {
        use rusqlite::OptionalExtension;
        self.transaction(|tx| {
            tx.query_row(
                "SELECT uid FROM guest_users WHERE uuid = ?1",
                params![uuid.to_string()],
                |row| row.get(0),
            )
            .optional()
        })
    }

    /// Every guest with a user, and the user.
    pub fn guest_users(&self) -> rusqlite::Result<Vec<(Uuid, u32)>> {
        self.transaction(|tx| {
            let mut stmt = tx.prepare("SELECT uuid, uid FROM guest_users ORDER BY uid")?;
            let rows = stmt.query_map([], |row| {
                let uuid: String = row.get(0)?;
                Ok((parse_uuid(0, uuid)?, row.get(1)?))
            })?;
            rows.collect()
        })
    }

    /// Records `label` (the owner `path` has now) for the guest `uuid`, before the file is
    /// given to its user. `Ok(Some(other))`: the file is another guest's now, nothing recorded.
    pub fn record_label(
        &self,
        uuid: &Uuid,
        label: &SecurityLabel,
    ) -> rusqlite::Result<Option<Uuid>> {
        let path = label.path.to_string_lossy();
        self.transaction(|tx| {
            use rusqlite::OptionalExtension;
            let holder: Option<String> = tx
                .query_row(
                    "SELECT uuid FROM security_labels WHERE path = ?1",
                    params![path],
                    |row| row.get(0),
                )
                .optional()?;
            if let Some(holder) = holder.filter(|h| *h != uuid.to_string()) {
                return Ok(Some(parse_uuid(0, holder)?));
            }
            tx.execute(
                "INSERT OR IGNORE INTO security_labels (path, uuid, uid, gid) VALUES (?1, ?2, ?3, ?4)",
                params![path, uuid.to_string(), label.uid, label.gid],
            )?;
            Ok(None)
        })
    }

    /// Corrects the owner recorded for `path`, given to the guest `uuid`'s user: a guest that
    /// migrated in from another oxvirtd on shared storage found its files with the source's
    /// guest user, and they go back to their owner before that one (services/migration.rs).
    /// Changes nothing for a file not given to that guest.
    pub fn correct_label_owner(&self, uuid: &Uuid, label: &SecurityLabel) -> rusqlite::Result<()> {
        self.transaction(|tx| {
            tx.execute(
                "UPDATE security_labels SET uid = ?1, gid = ?2 WHERE path = ?3 AND uuid = ?4",
                params![
                    label.uid,
                    label.gid,
                    label.path.to_string_lossy(),
                    uuid.to_string()
                ],
            )?;
            Ok(())
        })
    }

    /// Forgets one label (its file has its owner back, or never lost it).
    pub fn forget_label(&self, path: &std::path::Path) -> rusqlite::Result<()> {
        self.transaction(|tx| {
            tx.execute(
                "DELETE FROM security_labels WHERE path = ?1",
                params![path.to_string_lossy()],
            )?;
            Ok(())
        })
    }

    /// The files given to the guest `uuid`'s user, with their owners before.
    pub fn labels_of(&self, uuid: &Uuid) -> rusqlite::Result<Vec<SecurityLabel>> {
        self.transaction(|tx| {
            let mut stmt = tx.prepare(
                "SELECT path, uid, gid FROM security_labels WHERE uuid = ?1 ORDER BY path",
            )?;
            let rows = stmt.query_map(params![uuid.to_string()], |row| {
                let path: String = row.get(0)?;
                Ok(SecurityLabel {
                    path: PathBuf::from(path),
                    uid: row.get(1)?,
                    gid: row.get(2)?,
                })
            })?;
            rows.collect()
        })
    }

    /// Forgets the guest `uuid`'s user and labels (its files have their owners back).
    pub fn forget_guest_user(&self, uuid: &Uuid) -> rusqlite::Result<()> {
        self.transaction(|tx| {
            tx.execute(
                "DELETE FROM security_labels WHERE uuid = ?1",
                params![uuid.to_string()],
            )?;
            tx.execute(
                "DELETE FROM guest_users WHERE uuid = ?1",
                params![uuid.to_string()],
            )?;
            Ok(())
        })
    }
}
