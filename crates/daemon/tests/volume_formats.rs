//! A volume's format is recorded, never probed from contents its guest wrote: a guest that
//! writes a qcow2 header naming a host file into its raw disk must not make QEMU open that file
//! on the next start, nor make vol-clone copy it. Backing chains QEMU opens are the ones the host
//! read from trusted metadata.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::TestEnv;
use oxvirt_api::{code, ClientError, CreateVolumeRequest, DomainState};

const SECRET: &str = "HOST-SECRET-0123456789";
const MIB: u64 = 1 << 20;

fn pool_xml(name: &str, target: &Path) -> String {
    format!(
        "<pool type='dir'><name>{name}</name><target><path>{}</path></target></pool>",
        target.display()
    )
}

fn volume(name: &str, capacity: u64, format: &str) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.to_string(),
        capacity,
        format: format.to_string(),
        prealloc_metadata: false,
        allocation: None,
        backing_vol: None,
        backing_format: None,
        cluster_size: None,
    }
}

fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The test guest with `disks` (XML of `<disk>` elements) added.
fn domain_with_disks(env: &TestEnv, name: &str, disks: &str) -> String {
    env.domain_xml(name, None)
        .replace("  <devices>\n", &format!("  <devices>\n{disks}"))
}

/// Runs `command` in the running guest `name` and returns its output.
async fn in_guest(env: &TestEnv, name: &str, command: &str) -> String {
    let mut console = env.console(name).await;
    tokio::task::block_in_place(|| console.run(command, Duration::from_secs(60)))
        .unwrap_or_else(|| panic!("no answer from the guest to `{command}`"))
}

/// Whether any process whose command line names `needle` has the file `path` open.
fn opened_by(env: &TestEnv, needle: &str, path: &Path) -> bool {
    env.pids_mentioning(needle).into_iter().any(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == path))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_cannot_turn_its_raw_volume_into_a_qcow2_reading_host_files() {
    let mut env = TestEnv::new();
    env.start_daemon().await;
    let client = env.client();
    let pool_dir = env.dir.path().join("pool");
    std::fs::create_dir(&pool_dir).unwrap();
    client.define_pool(&pool_xml("p", &pool_dir)).await.unwrap();
    client.pool_action("p", "start").await.unwrap();
    client
        .create_volume("p", &volume("victim.raw", 4 * MIB, "raw"))
        .await
        .unwrap();

    // A host file the guest must never see, and what the guest will write onto its raw disk:
    // a qcow2 image (header and tables) naming that file as its raw backing file.
    let secret = env.dir.path().join("secret.raw");
    std::fs::write(&secret, SECRET.repeat(4096)).unwrap();
    let crafted = env.dir.path().join("crafted.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        secret.to_str().unwrap(),
        "-F",
        "raw",
        crafted.to_str().unwrap(),
        "4M",
    ]);

    // The guest: vda is the volume (no <driver type>, as users write volume disks), vdb the
    // crafted bytes; the guest copies them onto its own disk.
    let victim = pool_dir.join("victim.raw");
    let disks = format!(
        "    <disk type='volume' device='disk'><source pool='p' volume='victim.raw'/><target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{}'/><target dev='vdb' bus='virtio'/><readonly/></disk>
",
        crafted.display()
    );
    client
        .define_domain(&domain_with_disks(&env, "guest", &disks))
        .await
        .unwrap();
    client.start("guest").await.unwrap();
    env.wait_for_boot("guest").await;
    let out = in_guest(
        &env,
        "guest",
        "dd if=/dev/vdb of=/dev/vda bs=64k conv=fsync 2>&1 && echo copied-ok",
    )
    .await;
    assert!(out.contains("copied-ok"), "{out}");
    client.destroy("guest").await.unwrap();
    let on_disk = std::fs::read(&victim).unwrap();
    assert_eq!(&on_disk[..4], b"QFI\xfb", "the guest wrote a qcow2 header");

    // The volume is still what it was created as.
    let info = client.volume_info("p", "victim.raw").await.unwrap();
    assert_eq!(info.format, "raw");
    assert_eq!(info.backing_file, None);
    let xml = client.volume_xml("p", "victim.raw").await.unwrap();
    assert!(!xml.contains("backingStore"), "{xml}");

    // Next start: QEMU opens the volume as raw, and never the host file. The guest sees its
    // own bytes, not the secret.
    client.start("guest").await.unwrap();
    env.wait_for_boot("guest").await;
    let uuid = client.domain_info("guest").await.unwrap().uuid;
    assert!(
        !opened_by(&env, &uuid, &secret),
        "QEMU opened the host file the guest named"
    );
    let seen = in_guest(
        &env,
        "guest",
        "head -c 4 /dev/vda | od -An -c; head -c 65536 /dev/vda | grep -c HOST-SECRET",
    )
    .await;
    assert!(seen.contains("Q   F   I"), "{seen}");
    assert!(
        !seen.contains(SECRET),
        "the guest read the host file: {seen}"
    );
    client.destroy("guest").await.unwrap();

    // vol-clone copies the bytes, not the file the header names.
    let clone = client
        .clone_volume("p", "victim.raw", "copy.raw")
        .await
        .unwrap();
    assert_eq!(clone.format, "raw");
    let copied = std::fs::read(pool_dir.join("copy.raw")).unwrap();
    assert_eq!(copied, on_disk);
    assert!(!String::from_utf8_lossy(&copied).contains(SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlays_read_the_backing_chain_the_host_recorded() {
    let mut env = TestEnv::new();
    env.start_daemon().await;
    let client = env.client();
    let pool_dir = env.dir.path().join("pool");
    std::fs::create_dir(&pool_dir).unwrap();
    client.define_pool(&pool_xml("p", &pool_dir)).await.unwrap();
    client.pool_action("p", "start").await.unwrap();
    client
        .create_volume("p", &volume("base.raw", 4 * MIB, "raw"))
        .await
        .unwrap();
    let base: PathBuf = pool_dir.join("base.raw");
    let mut content = b"BASE-IMAGE-DATA".to_vec();
    content.resize(4 * MIB as usize, 0);
    std::fs::write(&base, &content).unwrap();
    // No backing format given: the backing volume's recorded one is used, never a probe.
    let overlay = CreateVolumeRequest {
        backing_vol: Some("base.raw".to_string()),
        ..volume("overlay.qcow2", 4 * MIB, "qcow2")
    };
    let created = client.create_volume("p", &overlay).await.unwrap();
    assert_eq!(created.backing_format.as_deref(), Some("raw"));

    // An image outside every pool has no recorded format, and it is not probed.
    let outside = env.dir.path().join("outside.img");
    std::fs::write(&outside, vec![0u8; MIB as usize]).unwrap();
    let unknown = CreateVolumeRequest {
        backing_vol: Some(outside.display().to_string()),
        ..volume("unknown.qcow2", MIB, "qcow2")
    };
    match client.create_volume("p", &unknown).await {
        Err(ClientError::Api(e)) => {
            assert_eq!(e.code, code::BAD_REQUEST, "{}", e.message);
            assert!(e.message.contains("never probed"), "{}", e.message);
        }
        other => panic!("backing image of unknown format: {other:?}"),
    }
    assert!(!pool_dir.join("unknown.qcow2").exists());

    let disks = "    <disk type='volume' device='disk'><source pool='p' volume='overlay.qcow2'/><target dev='vda' bus='virtio'/></disk>\n";
    client
        .define_domain(&domain_with_disks(&env, "layered", disks))
        .await
        .unwrap();
    client.start("layered").await.unwrap();
    env.wait_for_boot("layered").await;
    let seen = in_guest(&env, "layered", "head -c 15 /dev/vda; echo").await;
    assert!(seen.contains("BASE-IMAGE-DATA"), "{seen}");
    client.destroy("layered").await.unwrap();

    // The overlay's header changed behind oxvirt's back (rebased onto another file): refused.
    let other = env.dir.path().join("other.raw");
    std::fs::write(&other, vec![0u8; 4 * MIB as usize]).unwrap();
    qemu_img(&[
        "rebase",
        "-u",
        "-f",
        "qcow2",
        "-F",
        "raw",
        "-b",
        other.to_str().unwrap(),
        pool_dir.join("overlay.qcow2").to_str().unwrap(),
    ]);
    match client.start("layered").await {
        Err(ClientError::Api(e)) => {
            assert_eq!(e.code, code::BAD_REQUEST, "{}", e.message);
            assert!(
                e.message.contains("vda") && e.message.contains("changed outside oxvirt"),
                "{}",
                e.message
            );
        }
        other => panic!("start on a rebased overlay: {other:?}"),
    }
    assert_eq!(
        client.domain_info("layered").await.unwrap().state,
        DomainState::ShutOff
    );
}
