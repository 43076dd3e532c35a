//! Each engine checks a definition at define and at edit time, and its refusal names the
//! attribute and the line it is on: what a start would refuse is refused before anything is
//! stored. No guest is started.

mod common;

use std::path::Path;

use common::TestEnv;
use oxvirt_api::{code, ClientError};

/// A QEMU domain (or, with `native`, a native one) whose disk driver is `driver`, written on a
/// line of its own.
fn domain_xml(name: &str, driver: &str, native: bool) -> String {
    let plain = common::domain_xml(
        name,
        None,
        Path::new("/nonexistent/vmlinuz"),
        Path::new("/nonexistent/initrd"),
    );
    let disk = format!(
        "    <disk type='file' device='disk'>
      <source file='/nonexistent/disk.raw'/>
      {driver}
      <target dev='vda' bus='virtio'/>
    </disk>
  </devices>"
    );
    let xml = plain.replace("  </devices>", &disk);
    if native {
        xml.replace(
            "<domain type='qemu'>",
            "<domain type='kvm' xmlns:oxvirt='urn:oxvirt:domain:1.0'>",
        )
        .replace("</devices>", "</devices>\n  <oxvirt:engine name='native'/>")
    } else {
        xml
    }
}

/// The line `needle` is on.
fn line_of(xml: &str, needle: &str) -> usize {
    xml.lines()
        .position(|line| line.contains(needle))
        .map(|index| index + 1)
        .unwrap_or_else(|| panic!("{needle:?} not in:\n{xml}"))
}

fn api_error(result: Result<impl std::fmt::Debug, ClientError>) -> oxvirt_api::ApiError {
    match result {
        Err(ClientError::Api(e)) => e,
        other => panic!("expected an API error, got {other:?}"),
    }
}

const NATIVE_IO: &str = "<driver name='qemu' type='raw' cache='writeback' io='native'/>";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn define_and_edit_refuse_what_the_engine_cannot_run_naming_attribute_and_line() {
    let mut env = TestEnv::new();
    env.start_daemon().await;
    let client = env.client();

    // QEMU: aio=native needs O_DIRECT, which cache='writeback' does not give.
    let refused = domain_xml("checked", NATIVE_IO, false);
    let line = line_of(&refused, "io='native'");
    let err = api_error(client.define_domain(&refused).await);
    assert_eq!(err.code, code::INVALID_XML, "{}", err.message);
    assert!(
        err.message.contains(&format!(
            "<devices/disk[target@dev='vda']/driver@io> at line {line}: \
             io='native' needs cache='none' or 'directsync'"
        )),
        "{}",
        err.message
    );
    assert!(
        client.list_domains().await.unwrap().is_empty(),
        "a refused definition was stored"
    );

    // The same domain without the refused combination defines; an edit back to it is refused
    // the same way and leaves the stored definition as it was.
    let accepted = domain_xml(
        "checked",
        "<driver name='qemu' type='raw' cache='none' io='native'/>",
        false,
    );
    client.define_domain(&accepted).await.unwrap();
    let stored = client.domain_xml("checked").await.unwrap();
    let err = api_error(client.replace_domain_xml("checked", &refused).await);
    assert_eq!(err.code, code::INVALID_XML, "{}", err.message);
    assert!(
        err.message.contains(&format!(
            "<devices/disk[target@dev='vda']/driver@io> at line {line}"
        )),
        "{}",
        err.message
    );
    assert_eq!(client.domain_xml("checked").await.unwrap(), stored);

    // The native engine checks by planning; its refusals name the line too.
    let native = domain_xml("native-checked", NATIVE_IO, true);
    let line = line_of(&native, "io='native'");
    let err = api_error(client.define_domain(&native).await);
    assert_eq!(err.code, code::UNSUPPORTED, "{}", err.message);
    assert!(
        err.message
            .contains(&format!("<disk> vda: <driver io='native'> at line {line}")),
        "{}",
        err.message
    );
    let names: Vec<String> = client
        .list_domains()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(names, ["checked"]);
}
