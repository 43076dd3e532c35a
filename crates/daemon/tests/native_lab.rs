//! The native engine end to end on real KVM: a nested lab (QEMU TCG `-cpu max` L1 guest, where
//! kvm-amd gives hardware KVM) runs oxvirtd, the oxvirt CLI and oxvirt-vmm; the guest kit boots
//! as a native domain (L2) and `native_lab/l1.sh` drives its whole lifecycle through the CLI:
//! start, console (and a virtio disk and a bridged NIC seen by the guest), list, dominfo,
//! suspend/resume, guest reboot (on_reboot), an oxvirtd SIGKILL
//! and restart (the log writer filling vmm.log outlives it as the VMM does), shutdown, destroy, undefine. This machine's own /dev/kvm is never used.
//!
//! Needs qemu-system-x86_64, cpio, ldd and the guest kit, and the `oxvirt` and `oxvirt-vmm`
//! binaries next to `oxvirtd` (`cargo build --workspace --bins`); it fails, never skips, without
//! them.

use oxvirt_testkit::lab::{initramfs_with, install_binary, run_l1};
use std::path::{Path, PathBuf};
use std::time::Duration;

const L1_SCRIPT: &str = include_str!("native_lab/l1.sh");
/// L1 runs under TCG: each L2 boot takes about 50 s there.
const LAB_TIMEOUT: Duration = Duration::from_secs(420);
const UUID: &str = "6f1d2c3b-4a59-4e6f-8a7b-9c0d1e2f3a4b";

/// A binary built next to oxvirtd.
fn sibling_binary(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_oxvirtd"))
        .parent()
        .expect("oxvirtd lives in a directory")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` before this test",
        path.display()
    );
    path
}

fn write_file(path: &Path, text: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The native domain L1's oxvirtd runs (paths inside L1).
fn domain_xml() -> String {
    format!(
        "<domain type='kvm' xmlns:oxvirt='urn:oxvirt:domain:1.0'>
  <name>nat</name>
  <uuid>{UUID}</uuid>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64'>hvm</type>
    <kernel>/lab/l2/vmlinuz</kernel>
    <initrd>/lab/l2/initramfs.img</initrd>
    <cmdline>console=ttyS0 panic=-1 quiet</cmdline>
  </os>
  <cpu mode='host-passthrough'><feature policy='disable' name='svm'/></cpu>
  <on_reboot>restart</on_reboot>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='/tmp/disk.raw'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='bridge'>
      <mac address='52:54:00:aa:bb:cc'/>
      <source bridge='br0'/>
      <model type='virtio'/>
    </interface>
    <serial type='pty'/>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
  </devices>
  <oxvirt:engine name='native'/>
</domain>
"
    )
}

/// Boots L1 with the lab and returns its console log once the script ended.
fn run_lab() -> String {
    let kit = oxvirt_testkit::guest_kit();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();

    let root = w.join("l1-root");
    write_file(&root.join("lab/run.sh"), L1_SCRIPT, 0o755);
    write_file(&root.join("lab/nat.xml"), &domain_xml(), 0o644);
    install_binary(&root, Path::new(env!("CARGO_BIN_EXE_oxvirtd")), "oxvirtd");
    install_binary(&root, &sibling_binary("oxvirt"), "oxvirt");
    install_binary(&root, &sibling_binary("oxvirt-vmm"), "oxvirt-vmm");
    std::fs::create_dir_all(root.join("lab/l2")).unwrap();
    std::fs::copy(&kit.kernel, root.join("lab/l2/vmlinuz")).unwrap();
    std::fs::copy(&kit.initramfs, root.join("lab/l2/initramfs.img")).unwrap();
    let initramfs = w.join("l1-initramfs.img");
    initramfs_with(&kit.initramfs, &root, &initramfs);

    run_l1(&kit.kernel, &initramfs, w, LAB_TIMEOUT).unwrap_or_else(|e| panic!("{e}"))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[test]
fn oxvirt_drives_a_native_domain_on_real_kvm_like_a_qemu_one() {
    let text = run_lab();
    let checks: Vec<(&str, bool)> = text
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix("CHECK "))
        .filter_map(|l| {
            let (name, verdict) = l.split_once(' ')?;
            Some((name, verdict == "ok"))
        })
        .collect();
    let expected = [
        "define",
        "start",
        "booted",
        "list-running",
        "vmm-log-writer",
        "dominfo-engine",
        "dominfo-accel",
        "console-answers",
        "guest-sees-disk",
        "guest-pings-bridge",
        "suspend",
        "list-paused",
        "silent-while-paused",
        "resume",
        "answers-after-resume",
        "running-after-resume",
        "console-closes-on-exit",
        "rebooted",
        "running-after-reboot",
        "vmm-survives-oxvirtd",
        "vmm-log-writer-survives-oxvirtd",
        "reattached-running",
        "console-after-restart",
        "suspend-after-restart",
        "resume-after-restart",
        "shutdown",
        "shut-off",
        "vmm-gone",
        "vmm-log-writer-gone",
        "exit-record-poweroff",
        "start-again",
        "running-again",
        "destroy",
        "destroyed",
        "exit-record-host-stop",
        "undefine",
        "undefined",
        "taps-removed",
    ];
    let failed: Vec<&str> = expected
        .iter()
        .copied()
        .filter(|name| !checks.iter().any(|(n, ok)| n == name && *ok))
        .collect();
    assert!(
        failed.is_empty(),
        "failed or missing checks: {failed:?}\nL1 console:\n{}",
        tail(&text, 200)
    );
    assert!(
        text.lines().any(|l| l.trim_end() == "LEFTOVER-VMM=0"),
        "oxvirt-vmm processes left behind:\n{}",
        tail(&text, 60)
    );
}
