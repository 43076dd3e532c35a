//! The native engine in oxvirtd, on a host without hardware KVM (like this project's machines):
//! definitions it cannot run are refused at define time, naming the element, and a start says
//! clearly that there is no hardware KVM and leaves nothing behind. Booting native guests is
//! tested on real KVM in the nested lab (tests/native_lab.rs).

mod common;

use common::TestEnv;
use oxvirt_api::{code, Accel, ClientError, DomainState, Engine};

const UUID: &str = "5b0c7d4e-1a2b-4c3d-8e9f-0a1b2c3d4e5f";

fn native_xml(name: &str, os_extra: &str, devices: &str) -> String {
    let kit = oxvirt_testkit::guest_kit();
    format!(
        "<domain type='kvm' xmlns:oxvirt='urn:oxvirt:domain:1.0'>
  <name>{name}</name>
  <uuid>{UUID}</uuid>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type>{os_extra}</os>
  <devices><serial type='pty'/>{devices}</devices>
  <oxvirt:engine name='native'/>
</domain>",
        os_extra = if os_extra.is_empty() {
            format!(
                "<kernel>{}</kernel><initrd>{}</initrd><cmdline>console=ttyS0 panic=-1</cmdline>",
                kit.kernel.display(),
                kit.initramfs.display()
            )
        } else {
            os_extra.to_string()
        },
    )
}

/// Pids whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

fn api_error(result: Result<impl std::fmt::Debug, ClientError>) -> oxvirt_api::ApiError {
    match result {
        Err(ClientError::Api(e)) => e,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn define_refuses_what_the_native_engine_cannot_run_naming_the_element() {
    let mut env = TestEnv::new();
    env.start_daemon().await;
    let client = env.client();
    let cases = [
        ("", "<graphics type='vnc' autoport='yes'/>", "<graphics>"),
        ("", "<video><model type='vga'/></video>", "<video>"),
        (
            "",
            "<disk type='file' device='cdrom'><source file='/tmp/x.iso'/><target dev='hdc' bus='ide'/></disk>",
            "device='cdrom'",
        ),
        (
            "",
            "<interface type='network'><source network='default'/><model type='e1000'/></interface>",
            "<model type='e1000'>",
        ),
        (
            "",
            "<interface type='user'><model type='virtio'/></interface>",
            "type='user'",
        ),
        (
            "<loader type='rom'>/usr/share/seabios/bios-256k.bin</loader>",
            "",
            "<os><loader>",
        ),
        ("<boot dev='cdrom'/>", "", "<os> without <kernel>"),
    ];
    for (os, devices, element) in cases {
        let err = api_error(
            client
                .define_domain(&native_xml("refused", os, devices))
                .await,
        );
        assert_eq!(err.code, code::UNSUPPORTED, "{element}: {}", err.message);
        assert!(
            err.message.contains(element) && err.message.contains("native engine"),
            "the error does not name {element}: {}",
            err.message
        );
    }
    assert!(
        client.list_domains().await.unwrap().is_empty(),
        "a refused definition was stored"
    );
    // The same devices are fine for the QEMU engine.
    let qemu = native_xml("qemu-ok", "", "<graphics type='vnc' autoport='yes'/>")
        .replace("<oxvirt:engine name='native'/>", "");
    client.define_domain(&qemu).await.unwrap();
    let info = client.domain_info("qemu-ok").await.unwrap();
    assert_eq!(info.engine, Engine::Qemu);
}

#[tokio::test(flavor = "multi_thread")]
async fn starting_a_native_domain_without_hardware_kvm_fails_clearly_and_leaves_nothing() {
    let probe = oxvirt_qemu::probe_accel();
    assert_eq!(
        probe.accel,
        oxvirt_qemu::Accel::Tcg,
        "this test is for hosts without hardware KVM (this project's machines); on real KVM \
         the native engine is tested by tests/native_lab.rs"
    );
    let mut env = TestEnv::new();
    env.start_daemon().await;
    let client = env.client();
    client
        .define_domain(&native_xml("nat", "", ""))
        .await
        .unwrap();
    let info = client.domain_info("nat").await.unwrap();
    assert_eq!(info.engine, Engine::Native);
    assert_eq!(info.accel, Accel::Kvm);
    assert!(
        info.warnings.iter().any(|w| w.contains("no hardware KVM")),
        "dominfo should warn: {:?}",
        info.warnings
    );

    let err = api_error(client.start("nat").await);
    assert_eq!(err.code, code::UNSUPPORTED, "{}", err.message);
    assert!(
        err.message.contains("needs hardware KVM") && err.message.contains("QEMU engine"),
        "unclear error: {}",
        err.message
    );

    // Nothing behind: still shut off, no VMM, no files in the run directory.
    let list = client.list_domains().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].state, DomainState::ShutOff);
    assert_eq!(list[0].id, None);
    // A VMM would name the run directory, and so the uuid, in its arguments.
    assert!(
        processes_mentioning(UUID).is_empty(),
        "a process was left running"
    );
    let run_dir = env.state_dir.join("run").join(UUID);
    let leftovers: Vec<_> = std::fs::read_dir(&run_dir)
        .map(|entries| entries.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        leftovers.is_empty(),
        "files left in {}: {leftovers:?}",
        run_dir.display()
    );
    // The domain stays usable: it can be undefined.
    client.undefine_domain("nat", None).await.unwrap();
}

fn disk_xml(path: &std::path::Path, format: &str) -> String {
    format!(
        "<disk type='file' device='disk'><driver name='qemu' type='{format}'/>\
         <source file='{}'/><target dev='vda' bus='virtio'/></disk>",
        path.display()
    )
}

/// A shut-off native domain's snapshots need no VMM: its disks' internal snapshots are taken
/// offline, and a raw disk is refused naming it, with nothing stored. The machine state a
/// snapshot of a running native guest keeps beside the images (tests/native_lab.rs takes real
/// ones) goes with its snapshot, and all of them with `undefine --snapshots-metadata`.
#[tokio::test(flavor = "multi_thread")]
async fn native_snapshots_of_a_shut_off_domain_and_their_state_files() {
    use oxvirt_api::{CreateSnapshot, DeleteSnapshot, UndefineOptions};
    let mut env = TestEnv::new();
    env.start_daemon().await;
    let client = env.client();
    let images = tempfile::tempdir().unwrap();
    let raw = images.path().join("root.raw");
    std::fs::write(&raw, vec![0u8; 1 << 20]).unwrap();
    client
        .define_domain(&native_xml("nat", "", &disk_xml(&raw, "raw")))
        .await
        .unwrap();
    let named = |name: &str| CreateSnapshot {
        xml: format!("<domainsnapshot><name>{name}</name></domainsnapshot>"),
        ..CreateSnapshot::default()
    };
    let err = api_error(client.create_snapshot("nat", &named("s1")).await);
    assert!(
        err.message.contains("disk 'vda'") && err.message.contains("qcow2"),
        "the refusal should name the disk: {}",
        err.message
    );
    assert!(client.list_snapshots("nat").await.unwrap().is_empty());

    let qcow2 = images.path().join("root.qcow2");
    oxvirt_images::create(
        &qcow2,
        &oxvirt_images::CreateOptions {
            format: oxvirt_images::Format::Qcow2,
            size: Some(1 << 20),
            ..oxvirt_images::CreateOptions::default()
        },
    )
    .unwrap();
    client
        .define_domain(&native_xml("nat", "", &disk_xml(&qcow2, "qcow2")))
        .await
        .unwrap();
    for name in ["s1", "s2"] {
        let taken = client.create_snapshot("nat", &named(name)).await.unwrap();
        assert_eq!(taken.state, "shutoff");
    }
    let image = oxvirt_images::Image::open(&qcow2, &oxvirt_images::OpenOptions::default()).unwrap();
    let tags: Vec<String> = image
        .as_qcow2()
        .unwrap()
        .snapshots()
        .iter()
        .map(|s| s.name.clone())
        .collect();
    assert_eq!(tags, ["s1", "s2"]);
    drop(image);

    // What a running guest's snapshots would have left (the lab makes real ones).
    let states = env.state_dir.join("snapshot").join(UUID);
    std::fs::create_dir_all(&states).unwrap();
    for name in ["s1", "s2"] {
        std::fs::write(states.join(format!("{name}.save")), b"state").unwrap();
    }
    client
        .delete_snapshot("nat", "s1", &DeleteSnapshot::default())
        .await
        .unwrap();
    assert!(!states.join("s1.save").exists(), "s1's state file stayed");
    assert!(states.join("s2.save").exists(), "s2's state file went too");
    client
        .undefine_domain_with(
            "nat",
            &UndefineOptions {
                snapshots_metadata: true,
                ..UndefineOptions::default()
            },
        )
        .await
        .unwrap();
    assert!(!states.exists(), "{} stayed", states.display());
}
