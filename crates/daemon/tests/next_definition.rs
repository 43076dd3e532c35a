//! `define` of a running domain, as libvirt: the new definition is for the next start. The running
//! guest and `dumpxml` keep what it was started with, `dumpxml --inactive` shows the new one, and
//! when the guest stops the new one becomes the definition (a store schema step, version 5).

mod common;

use common::TestEnv;
use oxvirt_api::DomainState;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn define_while_running_takes_effect_at_the_next_start() {
    let mut env = TestEnv::new();
    env.start_daemon().await;
    let client = env.client();
    let xml = env.domain_xml("pending", None);
    let defined = client.define_domain(&xml).await.unwrap();
    client.start("pending").await.unwrap();

    // The same domain with a title: stored for later, the guest runs on.
    let titled = xml.replacen(
        "<name>pending</name>",
        "<name>pending</name><title>second definition</title>",
        1,
    );
    assert_ne!(titled, xml, "the test XML has the name element it rewrites");
    let redefined = client.define_domain(&titled).await.unwrap();
    assert_eq!(redefined.uuid, defined.uuid);
    assert_eq!(redefined.state, DomainState::Running);
    let live = client.domain_xml("pending").await.unwrap();
    assert!(!live.contains("second definition"), "{live}");
    let next = client.domain_inactive_xml("pending").await.unwrap();
    assert!(next.contains("<title>second definition</title>"), "{next}");
    let info = client.domain_info("pending").await.unwrap();
    assert!(info.persistent);
    assert_eq!(info.state, DomainState::Running);

    // A second define while running replaces the pending one.
    let retitled = titled.replace("second definition", "third definition");
    client.define_domain(&retitled).await.unwrap();
    let next = client.domain_inactive_xml("pending").await.unwrap();
    assert!(next.contains("third definition"), "{next}");

    // The guest stops: the pending definition is the definition now.
    client.destroy("pending").await.unwrap();
    env.wait_for_state("pending", DomainState::ShutOff).await;
    let now = client.domain_xml("pending").await.unwrap();
    assert!(now.contains("<title>third definition</title>"), "{now}");
    assert_eq!(client.domain_inactive_xml("pending").await.unwrap(), now);

    // And it survives a daemon restart (it is in the store), as does a pending one.
    client.start("pending").await.unwrap();
    client.define_domain(&xml).await.unwrap();
    env.stop_daemon();
    env.start_daemon().await;
    let client = env.client();
    let next = client.domain_inactive_xml("pending").await.unwrap();
    assert!(!next.contains("<title>"), "{next}");
    client.destroy("pending").await.unwrap();
    env.wait_for_state("pending", DomainState::ShutOff).await;
    let now = client.domain_xml("pending").await.unwrap();
    assert!(!now.contains("<title>"), "{now}");
    client.undefine_domain("pending", None).await.unwrap();
}
