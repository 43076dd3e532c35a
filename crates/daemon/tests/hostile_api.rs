//! Requests a careless or hostile client sends: each gets a JSON error naming what is wrong,
//! and the daemon keeps serving everybody else.

mod common;

use std::time::Duration;

use common::{raw_request, TestEnv};
use oxvirt_api::{code, ClientError, DomainState};

/// The status line and the JSON error code of a raw reply.
fn status_and_code(reply: &str) -> (String, String) {
    let status = reply.lines().next().unwrap_or_default().to_string();
    let body = reply.split("\r\n\r\n").nth(1).unwrap_or_default();
    let error: oxvirt_api::ApiError = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("the error reply is not the API's JSON ({e}):\n{reply}"));
    assert!(!error.message.is_empty(), "{reply}");
    (status, error.code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_undecodable_requests_get_json_errors() {
    let mut env = TestEnv::new();
    env.start_daemon().await;
    let socket = env.socket.clone();

    let oversized = "x".repeat((8 << 20) + 1);
    let reply = tokio::task::spawn_blocking(move || {
        raw_request(&socket, "POST", "/v1/domains", &oversized)
    })
    .await
    .unwrap();
    let (status, error) = status_and_code(&reply);
    assert!(status.starts_with("HTTP/1.1 413"), "{reply}");
    assert_eq!(error, "too_large");

    // A path segment that is not UTF-8 once decoded.
    let reply = raw_request(&env.socket, "GET", "/v1/domains/%ff", "");
    let (status, error) = status_and_code(&reply);
    assert!(status.starts_with("HTTP/1.1 400"), "{reply}");
    assert_eq!(error, code::BAD_REQUEST);

    let client = env.client();
    assert!(client.version().await.is_ok());
    assert!(client.list_domains().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlong_shutdown_timeout_is_refused_before_the_guest_is_touched() {
    let mut env = TestEnv::new();
    env.start_daemon().await;
    let client = env.client();
    client
        .define_domain(&env.domain_xml("patient", None))
        .await
        .unwrap();
    client.start("patient").await.unwrap();
    env.wait_for_boot("patient").await;
    // Wait for the shell: by then acpid listens for the power button.
    drop(env.console("patient").await);

    for seconds in [u64::MAX, 86401] {
        match client.shutdown("patient", Some(seconds)).await {
            Err(ClientError::Api(e)) => {
                assert_eq!(e.code, code::BAD_REQUEST, "{}", e.message);
                assert!(e.message.contains(&seconds.to_string()), "{}", e.message);
            }
            other => panic!("shutdown --timeout {seconds}: {other:?}"),
        }
    }
    // The power button was not pressed: the guest still answers on its console.
    let mut console = env.console("patient").await;
    let out = tokio::task::block_in_place(|| {
        console.run("echo still-$((40+2))", Duration::from_secs(30))
    })
    .expect("run a command in the guest");
    assert!(out.contains("still-42"), "{out}");
    drop(console);
    assert_eq!(
        client.domain_info("patient").await.unwrap().state,
        DomainState::Running
    );

    // The largest accepted timeout works as a normal shutdown.
    client.shutdown("patient", Some(86400)).await.unwrap();
    assert_eq!(
        client.domain_info("patient").await.unwrap().state,
        DomainState::ShutOff
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_that_is_a_fifo_is_refused_at_start() {
    let mut env = TestEnv::new();
    env.start_daemon().await;
    let client = env.client();
    let fifo = env.dir.path().join("disk.fifo");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    let xml = env.domain_xml("piped", None).replace(
        "  <devices>\n",
        &format!(
            "  <devices>\n    <disk type='file' device='disk'><source file='{}'/><target dev='vda' bus='virtio'/></disk>\n",
            fifo.display()
        ),
    );
    client.define_domain(&xml).await.unwrap();
    match client.start("piped").await {
        Err(ClientError::Api(e)) => {
            assert_eq!(e.code, code::BAD_REQUEST, "{}", e.message);
            assert!(
                e.message.contains(&fifo.display().to_string()),
                "{}",
                e.message
            );
        }
        other => panic!("start with a FIFO as its disk: {other:?}"),
    }
    assert_eq!(
        client.domain_info("piped").await.unwrap().state,
        DomainState::ShutOff
    );
    assert!(env.pids_mentioning(&fifo.display().to_string()).is_empty());
}
