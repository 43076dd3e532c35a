//! Tests of the store: records, migrations of old databases, the MAC index.

use std::path::Path;

use oxvirt_api::DomainState;
use oxvirt_domain::MacAddr;
use rusqlite::{params, Connection};
use uuid::Uuid;

use super::file::ReadOnlyDb;
use super::migrations;
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
