//! The schema of the state database, as an ordered list of migrations.
//!
//! `PRAGMA user_version` holds the number of migrations applied. At open, the missing ones run in
//! order, in one transaction with the version update, so a database is either at its old version
//! or at the new one, never in between. Released migrations are never edited: a change to the
//! schema is a new migration at the end of [`MIGRATIONS`].

use std::path::Path;

use rusqlite::{params, Connection, Transaction, TransactionBehavior};

use super::error::StoreError;
use super::macs::index_macs;

/// One step of the schema.
pub(super) struct Migration {
    /// What the step brings, for the log.
    pub what: &'static str,
    pub apply: fn(&Transaction<'_>) -> rusqlite::Result<()>,
}

/// In order; the version of a database is how many of these it has.
pub(super) const MIGRATIONS: &[Migration] = &[
    Migration {
        what: "domains, runtime, counters, networks, live_domains, pools",
        apply: v1_tables,
    },
    Migration {
        what: "domain_macs: the MAC addresses of stored and live definitions, indexed",
        apply: v2_domain_macs,
    },
    Migration {
        what: "volume_formats: the recorded format and backing file of every storage volume",
        apply: v3_volume_formats,
    },
    Migration {
        what: "secrets: secret definitions and their values (secret-define, secret-set-value)",
        apply: v4_secrets,
    },
    Migration {
        what: "next_definitions: a running domain's definition for its next start (define while running)",
        apply: v5_next_definitions,
    },
    Migration {
        what: "snapshots: domain snapshots' metadata (snapshot-create, snapshot-list, ...)",
        apply: super::snapshots::v6_snapshots,
    },
    Migration {
        what: "users, tokens: who may use the remote API (argon2 password hashes, token digests)",
        apply: super::users::v7_users_tokens,
    },
    Migration {
        what: "guest_users, security_labels: the users QEMU guests run as and their files' owners before",
        apply: v8_security_labels,
    },
];

/// Version 1: the tables as oxvirtd created them before the schema had versions (the store,
/// `networks.rs` and `pools.rs` each ran their own `CREATE TABLE IF NOT EXISTS`). It keeps `IF NOT
/// EXISTS`, so such a database (user_version 0, some or all tables present) becomes version 1
/// unchanged. Later migrations create what is new to them without it.
const V1: &str = "
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
CREATE TABLE IF NOT EXISTS pools (
    uuid TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL UNIQUE,
    target TEXT NOT NULL,
    autostart INTEGER NOT NULL DEFAULT 0,
    active INTEGER NOT NULL DEFAULT 0
);
";

fn v1_tables(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(V1)
}

/// Version 2: what MAC uniqueness needs, so a define looks up its MACs instead of parsing every
/// stored and live definition. `live` is 0 for the stored definition, 1 for the live one of a
/// running guest (which may have hot-plugged NICs the stored one lacks). Filled from the XML
/// already stored.
fn v2_domain_macs(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE domain_macs (
            mac TEXT NOT NULL,
            uuid TEXT NOT NULL,
            live INTEGER NOT NULL,
            PRIMARY KEY (mac, uuid, live)
        ) WITHOUT ROWID;
        CREATE INDEX domain_macs_by_uuid ON domain_macs (uuid, live);",
    )?;
    for (table, live) in [("domains", false), ("live_domains", true)] {
        // `table` is one of two literals.
        let rows: Vec<(String, String)> = {
            let mut stmt = tx.prepare(&format!("SELECT uuid, xml FROM {table}"))?;
            let rows = stmt.query_map(params![], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        for (uuid, xml) in rows {
            // A definition that is not even XML any more cannot be indexed; it was invisible to
            // the MAC check before this migration too. Say so instead of failing the upgrade.
            if let Err(err) = index_macs(tx, &uuid, live, &xml) {
                tracing::warn!(
                    uuid,
                    "{table}: the MAC addresses of this definition cannot be read: {err}"
                );
            }
        }
    }
    Ok(())
}

/// Version 3: what each volume file is, recorded when oxvirtd creates, clones or first sees it,
/// and never probed again: a guest writes the contents of its raw disk, so a format read from
/// them would be the guest's choice (see docs/security.md). Keyed by the file's path, so the
/// record outlives a pool being undefined and defined again over the same directory. Volumes of
/// databases from before this version are recorded when they are first seen.
fn v3_volume_formats(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE volume_formats (
            path TEXT PRIMARY KEY NOT NULL,
            format TEXT NOT NULL,
            backing_path TEXT,
            backing_format TEXT,
            origin TEXT NOT NULL
        ) WITHOUT ROWID;",
    )
}

/// Version 4: secrets (passwords and keys that network disks' `<auth>` name). `xml` is the
/// normalized definition; `usage` is `TYPE ID` (unique: one secret per usage, as in libvirt);
/// `value` is NULL until secret-set-value. The database file is private to root (mode 0600 in
/// a 0700 state directory), as libvirt's secret files are.
fn v4_secrets(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE secrets (
            uuid TEXT PRIMARY KEY NOT NULL,
            usage TEXT UNIQUE,
            xml TEXT NOT NULL,
            value BLOB
        ) WITHOUT ROWID;",
    )
}

/// Version 5: the definition a running domain gets when it next stops (libvirt's persistent
/// config of a running domain: `define` while it runs stores it here, `dumpxml --inactive`
/// shows it, and it replaces `domains.xml` when the guest stops). At most one per domain.
fn v5_next_definitions(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE next_definitions (
            uuid TEXT PRIMARY KEY NOT NULL REFERENCES domains(uuid),
            xml TEXT NOT NULL,
            engine TEXT NOT NULL
        ) WITHOUT ROWID;",
    )
}

/// Version 8: libvirt's DAC model (`labels.rs`): the user each running QEMU guest runs as
/// (`uid` unique: a guest's user is its own), and the owner each file given to that user had
/// before. A file is given to one guest at a time (`path` is the key).
fn v8_security_labels(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE guest_users (
            uuid TEXT PRIMARY KEY NOT NULL,
            uid INTEGER NOT NULL UNIQUE
        ) WITHOUT ROWID;
        CREATE TABLE security_labels (
            path TEXT PRIMARY KEY NOT NULL,
            uuid TEXT NOT NULL,
            uid INTEGER NOT NULL,
            gid INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX security_labels_by_uuid ON security_labels (uuid);",
    )
}

/// The schema version this oxvirtd writes.
pub(super) fn latest() -> u32 {
    MIGRATIONS.len() as u32
}

pub(super) fn user_version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

/// Brings the database at `path` to the latest version, in one transaction.
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let sqlite = |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    // IMMEDIATE: take the write lock before reading the version, so what we read stays true.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite)?;
    let from = user_version(&tx).map_err(sqlite)?;
    let to = latest();
    if from > to {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found: from,
            known: to,
        });
    }
    if from == to {
        return Ok(());
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(from as usize) {
        (migration.apply)(&tx).map_err(|source| StoreError::Migration {
            path: path.to_path_buf(),
            version: index as u32 + 1,
            source,
        })?;
        tracing::info!(
            "state database {}: schema version {}: {}",
            path.display(),
            index + 1,
            migration.what
        );
    }
    tx.pragma_update(None, "user_version", to).map_err(sqlite)?;
    tx.commit().map_err(sqlite)?;
    tracing::info!(
        "state database {}: upgraded from schema version {from} to {to}",
        path.display()
    );
    Ok(())
}
