//! The state database through the real oxvirtd binary: MAC uniqueness reads the store's index.

mod common;

use common::TestEnv;
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

fn database(env: &TestEnv) -> std::path::PathBuf {
    env.state_dir.join("oxvirt.db")
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
