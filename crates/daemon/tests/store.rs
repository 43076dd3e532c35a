//! The state database through the real oxvirtd binary: a database that is empty, not SQLite or
//! damaged stops the daemon instead of being taken for an empty one; backups and
//! `--restore-backup` bring the definitions back; MAC uniqueness reads the store's index.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{wait_until, RunOutput, TestEnv};
use oxvirt_api::{code, ClientError};

/// A definition the daemon accepts without any file behind it (nothing here starts a guest).
fn domain_xml(name: &str, mac: Option<&str>) -> String {
    let interface = mac
        .map(|mac| format!("<interface type='user'><mac address='{mac}'/></interface>"))
        .unwrap_or_default();
    format!(
        "<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>\
         <os><type arch='x86_64' machine='pc'>hvm</type></os>\
         <description>{}</description><devices>{interface}</devices></domain>",
        "padding so that the database spans many pages ".repeat(8)
    )
}

fn database(env: &TestEnv) -> PathBuf {
    env.state_dir.join("oxvirt.db")
}

/// The state directory's entries (names), sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn names_of(list: &[oxvirt_api::DomainSummary]) -> Vec<&str> {
    list.iter().map(|d| d.name.as_str()).collect()
}

/// A daemon that defined `names`, then stopped (SIGTERM, so the database is checkpointed).
async fn env_with_domains(names: &[&str]) -> TestEnv {
    let mut env = TestEnv::new();
    env.start_daemon().await;
    let client = env.client();
    for name in names {
        client.define_domain(&domain_xml(name, None)).await.unwrap();
    }
    env.stop_daemon();
    env
}

fn assert_refused(run: &RunOutput, path: &Path, what: &str) {
    assert_eq!(
        run.status.code(),
        Some(1),
        "{what}: oxvirtd did not exit with status 1 (None: it kept running and was killed): {run:?}"
    );
    let path = path.display().to_string();
    assert!(run.stderr.contains(&path), "{what}: {}", run.stderr);
    assert!(
        run.stderr.contains("--restore-backup"),
        "{what}: {}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_databases_are_refused_and_left_untouched() {
    let names: Vec<String> = (0..30).map(|i| format!("d{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let env = env_with_domains(&names).await;
    let path = database(&env);
    let good = std::fs::read(&path).unwrap();
    assert!(good.len() >= 16 * 4096, "{} bytes", good.len());
    // Bytes that are not SQLite (a fixed pseudo-random sequence).
    let random: Vec<u8> = (0..16_384u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let cases = [
        ("0-byte", Vec::new()),
        ("random bytes", random),
        ("truncated to half", good[..good.len() / 2].to_vec()),
    ];
    for (what, bytes) in cases {
        std::fs::write(&path, &bytes).unwrap();
        let before = listing(&env.state_dir);
        let run = env.run_oxvirtd(&[]);
        assert_refused(&run, &path, what);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bytes,
            "{what}: the database file changed"
        );
        assert_eq!(
            listing(&env.state_dir),
            before,
            "{what}: files appeared or went"
        );
        assert!(!env.socket.exists(), "{what}: the API socket was bound");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_of_a_newer_oxvirtd_is_refused() {
    let env = env_with_domains(&["a"]).await;
    let path = database(&env);
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 1000).unwrap();
    drop(conn);
    let run = env.run_oxvirtd(&[]);
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    assert!(
        run.stderr.contains(&path.display().to_string()) && run.stderr.contains("newer"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_backup_brings_back_the_definitions_of_a_zeroed_database() {
    let mut env = env_with_domains(&["alpha", "beta"]).await;
    let path = database(&env);
    std::fs::write(&path, b"").unwrap();
    assert_refused(&env.run_oxvirtd(&[]), &path, "zeroed");

    let run = env.run_oxvirtd(&["--restore-backup"]);
    assert_eq!(run.status.code(), Some(0), "{run:?}");
    assert!(
        run.stdout.contains("2 domain definition(s)") && run.stdout.contains("Installed"),
        "{}",
        run.stdout
    );
    // The zeroed database was moved aside, not deleted.
    let aside: Vec<String> = listing(&env.state_dir)
        .into_iter()
        .filter(|n| n.starts_with("oxvirt.db.broken-"))
        .collect();
    assert_eq!(aside.len(), 1, "{:?}", listing(&env.state_dir));
    assert_eq!(std::fs::read(env.state_dir.join(&aside[0])).unwrap(), b"");

    env.start_daemon().await;
    let list = env.client().list_domains().await.unwrap();
    assert_eq!(names_of(&list), ["alpha", "beta"]);

    // Not while a daemon uses the state directory: nothing is moved.
    let before = std::fs::read(&path).unwrap();
    let run = env.run_oxvirtd(&["--restore-backup"]);
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    assert!(run.stderr.contains("another oxvirtd"), "{}", run.stderr);
    assert_eq!(std::fs::read(&path).unwrap(), before);
    let list = env.client().list_domains().await.unwrap();
    assert_eq!(names_of(&list), ["alpha", "beta"]);
}

/// The domain names in a backup file.
fn domains_in(backup: &Path) -> Vec<String> {
    let Ok(conn) =
        rusqlite::Connection::open_with_flags(backup, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return Vec::new();
    };
    let Ok(mut stmt) = conn.prepare("SELECT name FROM domains ORDER BY name") else {
        return Vec::new();
    };
    stmt.query_map([], |row| row.get(0))
        .and_then(|rows| rows.collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_daemon_backs_up_changes() {
    let mut env = TestEnv::new();
    env.start_daemon_with(&["--backup-interval", "1"]).await;
    env.client()
        .define_domain(&domain_xml("gamma", None))
        .await
        .unwrap();
    let backups = env.state_dir.join("backups");
    let backed_up = wait_until(Duration::from_secs(60), || {
        let backups = backups.clone();
        async move {
            std::fs::read_dir(&backups)
                .map(|entries| {
                    entries
                        .filter_map(|e| e.ok())
                        .filter(|e| e.file_name().to_string_lossy().starts_with("oxvirt-"))
                        .any(|e| domains_in(&e.path()) == ["gamma"])
                })
                .unwrap_or(false)
        }
    })
    .await;
    assert!(
        backed_up,
        "no backup holds the new domain; logs:\n{}",
        env.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_definition_whose_stored_xml_is_damaged_keeps_its_mac() {
    let mut env = TestEnv::new();
    env.start_daemon().await;
    env.client()
        .define_domain(&domain_xml("owner", Some("52:54:00:12:34:56")))
        .await
        .unwrap();
    env.stop_daemon();
    // Something outside oxvirt damaged the stored definition.
    let conn = rusqlite::Connection::open(database(&env)).unwrap();
    conn.execute(
        "UPDATE domains SET xml = '<domain><name>owner</name' WHERE name = 'owner'",
        [],
    )
    .unwrap();
    drop(conn);

    env.start_daemon().await;
    match env
        .client()
        .define_domain(&domain_xml("thief", Some("52:54:00:12:34:56")))
        .await
    {
        Err(ClientError::Api(e)) => {
            assert_eq!(e.code, code::ALREADY_EXISTS, "{e:?}");
            assert!(e.message.contains("domain 'owner'"), "{}", e.message);
        }
        other => panic!("the MAC of 'owner' was given away: {other:?}"),
    }
}
