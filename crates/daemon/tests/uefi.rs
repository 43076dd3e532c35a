//! `<os firmware='efi'>`: the guest boots through OVMF, the firmware libvirt would pick from the
//! host's QEMU firmware descriptors (Debian's ovmf), with a private NVRAM made on the first
//! start, kept across starts and removed by undefine.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use common::TestEnv;
use oxvirt_api::NvramOnUndefine;

async fn in_guest(env: &TestEnv, name: &str, command: &str) -> String {
    let mut console = env.console(name).await;
    tokio::task::block_in_place(|| console.run(command, Duration::from_secs(60)))
        .unwrap_or_else(|| panic!("no answer from the guest to `{command}`"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_efi_guest_boots_through_ovmf_with_its_own_nvram() {
    let mut env = TestEnv::new();
    env.start_daemon().await;
    let client = env.client();
    let xml = env
        .domain_xml("efi", None)
        .replace("<os>", "<os firmware='efi'>");
    client.define_domain(&xml).await.unwrap();
    // The stored definition is libvirt's inactive form: the firmware is chosen at start.
    let stored = client.domain_xml("efi").await.unwrap();
    assert!(stored.contains("<os firmware='efi'>"), "{stored}");
    assert!(!stored.contains("<loader"), "{stored}");

    client.start("efi").await.unwrap();
    env.wait_for_boot("efi").await;
    let seen = in_guest(
        &env,
        "efi",
        "test -d /sys/firmware/efi && echo booted-by-uefi; cat /sys/firmware/efi/fw_platform_size",
    )
    .await;
    assert!(seen.contains("booted-by-uefi"), "{seen}");
    assert!(seen.contains("64"), "{seen}");

    let uuid = client.domain_info("efi").await.unwrap().uuid;
    let nvram = env.state_dir.join("nvram").join(format!("{uuid}_VARS.fd"));
    let meta = std::fs::metadata(&nvram).expect("the NVRAM was made");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let cmdline: String = env
        .pids_mentioning(&uuid)
        .into_iter()
        .map(|pid| {
            String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap())
                .replace('\0', " ")
        })
        .collect();
    assert!(
        cmdline.contains("/usr/share/OVMF/OVMF_CODE_4M.fd"),
        "{cmdline}"
    );
    assert!(
        cmdline.contains("pflash1=libvirt-pflash1-format"),
        "{cmdline}"
    );
    client.destroy("efi").await.unwrap();

    // A second start keeps the variables (the same file, not a fresh copy).
    // (A fresh copy would be a new file: copies are written aside and renamed into place.)
    let inode = std::fs::metadata(&nvram).unwrap().ino();
    client.start("efi").await.unwrap();
    env.wait_for_boot("efi").await;
    client.destroy("efi").await.unwrap();
    assert_eq!(std::fs::metadata(&nvram).unwrap().ino(), inode);

    // As libvirt: undefine says no while the NVRAM is there and nothing says what to do with
    // it; --keep-nvram keeps the file, --nvram removes it.
    let refused = client.undefine_domain("efi", None).await.unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("cannot undefine domain 'efi' with nvram"),
        "{refused}"
    );
    assert!(client.domain_info("efi").await.is_ok(), "still defined");
    client
        .undefine_domain("efi", Some(NvramOnUndefine::Keep))
        .await
        .unwrap();
    assert!(nvram.exists(), "--keep-nvram keeps it");
    // Defined again with the same uuid, the domain finds its variables again.
    let same = xml.replacen("</name>", &format!("</name><uuid>{uuid}</uuid>"), 1);
    client.define_domain(&same).await.unwrap();
    client
        .undefine_domain("efi", Some(NvramOnUndefine::Remove))
        .await
        .unwrap();
    assert!(!nvram.exists(), "--nvram removes the NVRAM it made");
}
