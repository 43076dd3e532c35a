//! Hostile XML against a running oxvirtd: pool and network XML nested 500 deep (which used to
//! overflow a tokio worker's stack and abort the daemon) and elements with 50,000 attributes
//! (which used to cost minutes of CPU) are refused with a 4xx JSON error naming the XML limit;
//! the daemon keeps answering and stores nothing. Networks are only defined, never started, so
//! no network namespace is needed.

mod common;

use common::{process_alive, raw_request, TestEnv};
use oxvirt_api::{code, ApiError};

/// `<x>` nested `depth` levels deep.
fn nested(depth: usize) -> String {
    "<x>".repeat(depth) + &"</x>".repeat(depth)
}

/// ` a0='0' a1='1' ...`: `count` attributes.
fn attributes(count: usize) -> String {
    (0..count).map(|n| format!(" a{n}='{n}'")).collect()
}

/// POSTs `xml` as an `XmlDocument` to `path` and returns the HTTP status and the JSON error.
fn post_xml(env: &TestEnv, path: &str, xml: &str) -> (u16, ApiError) {
    let body = serde_json::json!({ "xml": xml }).to_string();
    let reply = raw_request(&env.socket, "POST", path, &body);
    let status = reply
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no HTTP reply to POST {path} (did oxvirtd die?): {reply:?}\n{}",
                env.logs()
            )
        });
    let (_, json) = reply.split_once("\r\n\r\n").expect("a reply body");
    let error = serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("POST {path}: not a JSON error ({e}): {reply}"));
    (status, error)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_pool_and_network_xml_is_refused_and_the_daemon_lives_on() {
    let mut env = TestEnv::new();
    env.start_daemon().await;
    let pid = env.daemon_pid();
    let target = env.dir.path().join("pool");
    let pool = |inside: &str, attrs: &str| {
        format!(
            "<pool type='dir'{attrs}><name>hostile</name>{inside}<target><path>{}</path></target></pool>",
            target.display()
        )
    };
    let network = |inside: &str, attrs: &str| {
        format!("<network{attrs}><name>hostile</name>{inside}</network>")
    };
    let deep = nested(500);
    let wide = attributes(50_000);
    // The deep documents first: they are what used to kill the daemon.
    let cases = [
        (
            "pool nested 500 deep",
            "/v1/pools",
            pool(&deep, ""),
            "nesting depth limit",
        ),
        (
            "network nested 500 deep",
            "/v1/networks",
            network(&deep, ""),
            "nesting depth limit",
        ),
        (
            "pool with 50,000 attributes",
            "/v1/pools",
            pool("", &wide),
            "attribute limit",
        ),
        (
            "network with 50,000 attributes",
            "/v1/networks",
            network("", &wide),
            "attribute limit",
        ),
    ];
    for (what, path, xml, limit) in &cases {
        let (status, error) = post_xml(&env, path, xml);
        assert!(
            (400..500).contains(&status),
            "{what}: HTTP {status} {error:?}"
        );
        assert_eq!(error.code, code::INVALID_XML, "{what}: {error:?}");
        assert!(
            error.message.contains(limit) && error.message.contains("at line 1"),
            "{what}: {}",
            error.message
        );
        let client = env.client();
        assert!(
            client.version().await.is_ok() && process_alive(pid),
            "oxvirtd stopped answering after the {what}\n{}",
            env.logs()
        );
    }
    let client = env.client();
    assert!(client.list_pools().await.unwrap().is_empty());
    assert!(client.list_networks().await.unwrap().is_empty());
    assert!(!target.exists());
}
