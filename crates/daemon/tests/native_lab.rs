//! The native engine end to end on real KVM: a nested lab (QEMU TCG `-cpu max` L1 guest, where
//! kvm-amd gives hardware KVM) runs oxvirtd, the oxvirt CLI and oxvirt-vmm; the guest kit boots
//! as a native domain (L2) and `native_lab/l1.sh` first checks `oxvirt host validate` on real KVM
//! (hardware virtualization, hardware KVM, nested as kvm_amd reports it), then drives the domain's
//! whole lifecycle through the CLI:
//! start, console (and a virtio disk and a bridged NIC seen by the guest), list, dominfo,
//! suspend/resume, guest reboot (on_reboot), an oxvirtd SIGKILL
//! and restart (the log writer filling vmm.log outlives it as the VMM does), shutdown, destroy, undefine.
//! Then `native_lab/snapshots.sh` runs a second native domain with a qcow2 disk through
//! snapshot-create-as/-revert/-delete, save/restore and managedsave/start, checking what its
//! guest kept (disk, tmpfs, a counter, uptime). Then `native_lab/balloon.sh` drives a native
//! domain's virtio balloon through oxvirtd (`setmem --live`: the guest's MemTotal down to half
//! and back, refused above the maximum with nothing changed; `dommemstat` and its `--period`;
//! the VMM's own API agrees), its disk counters (`domblkstat` grows by what the guest read and
//! wrote with dd), checks guest RAM's KSM flag with and without `<nosharepages/>`, and the
//! vCPU threads (vcpuinfo, vcpupin, emulatorpin). `native_lab/jail.sh` checks, while the first
//! domain runs, that its VMM is jailed (every scenario runs jailed, oxvirtd's default), and l1.sh
//! that `oxvirtd --no-sandbox` turns the jail off. Last, `native_lab/cgroups.sh` mounts cgroup v2
//! in L1 and checks a native domain's cgroups: `<cputune>` and `<memtune>` in the kernel's files,
//! the vCPU thread in `vcpu0`, a busy loop held to its quota, the VMM's user unable to write its
//! groups, the verbs live, and the kernel's OOM kill at a hard limit lowered under the guest's use.
//! `native_lab/migrate.sh` (before the cgroups) runs a second oxvirtd in L1 and migrates a native
//! domain to it live (its state streamed while it runs) and back paused (its saved state over the
//! migration's connection), with the refusals and an aborted migration of each kind first.
//! Every test reads the same lab run (one L1 boot).
//! This machine's own /dev/kvm is never used.
//!
//! Needs qemu-system-x86_64, cpio, ldd and the guest kit, and the `oxvirt` and `oxvirt-vmm`
//! binaries next to `oxvirtd` (`cargo build --workspace --bins`); it fails, never skips, without
//! them.

use oxvirt_testkit::lab::{initramfs_with, install_binary, run_l1};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

const L1_SCRIPT: &str = include_str!("native_lab/l1.sh");
const SNAPSHOTS_SCRIPT: &str = include_str!("native_lab/snapshots.sh");
const BALLOON_SCRIPT: &str = include_str!("native_lab/balloon.sh");
const JAIL_SCRIPT: &str = include_str!("native_lab/jail.sh");
const CGROUPS_SCRIPT: &str = include_str!("native_lab/cgroups.sh");
const MIGRATE_SCRIPT: &str = include_str!("native_lab/migrate.sh");
/// L1 runs under TCG: each L2 boot takes about 50 s there, each save or restore of a guest a few.
const LAB_TIMEOUT: Duration = Duration::from_secs(1200);
const UUID: &str = "6f1d2c3b-4a59-4e6f-8a7b-9c0d1e2f3a4b";
/// The domain of the snapshot scenario (snapshots.sh says the same).
const SNAP_UUID: &str = "7a2e3d4c-5b6a-4f70-8b9c-0d1e2f3a4b5c";
/// The domains of the balloon scenario (balloon.sh says the same).
const BAL_UUID: &str = "8b3f4e5d-6c7b-4081-9cad-1e2f3a4b5c6d";
const NSP_UUID: &str = "9c4a5f6e-7d8c-4192-8dbe-2f3a4b5c6d7e";
/// The domain of the migration scenario (migrate.sh says the same).
const MIG_UUID: &str = "be6c7b8a-9fae-4b14-8fd0-4b5c6d7e8f90";
/// The domain of the cgroup scenario (cgroups.sh says the same).
const CG_UUID: &str = "ad5b6a7f-8e9d-4a03-9ecf-3a4b5c6d7e8f";

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

/// A native domain for L1's oxvirtd (paths inside L1): the guest kit, 256 MiB, one vCPU, virtio
/// disk `vda` of `format` at `disk`, and `devices`.
fn native_domain_xml(name: &str, uuid: &str, format: &str, disk: &str, devices: &str) -> String {
    format!(
        "<domain type='kvm' xmlns:oxvirt='urn:oxvirt:domain:1.0'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
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
      <driver name='qemu' type='{format}'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
{devices}    <serial type='pty'/>
  </devices>
  <oxvirt:engine name='native'/>
</domain>
"
    )
}

/// The lifecycle scenario's domain: a raw disk, a bridged NIC, an rng.
fn domain_xml() -> String {
    native_domain_xml(
        "nat",
        UUID,
        "raw",
        "/tmp/disk.raw",
        "    <interface type='bridge'>
      <mac address='52:54:00:aa:bb:cc'/>
      <source bridge='br0'/>
      <model type='virtio'/>
    </interface>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
",
    )
}

/// The snapshot scenario's domain: a qcow2 disk L1 makes, no NIC.
fn snap_domain_xml() -> String {
    native_domain_xml("snap", SNAP_UUID, "qcow2", "/tmp/snap.qcow2", "")
}

/// The balloon scenario's domain: a virtio balloon (what every definition gets, written out).
fn bal_domain_xml() -> String {
    native_domain_xml(
        "bal",
        BAL_UUID,
        "raw",
        "/tmp/bal.raw",
        "    <memballoon model='virtio'/>\n",
    )
}

/// The same guest with `<memoryBacking><nosharepages/>`.
fn nsp_domain_xml() -> String {
    native_domain_xml("nsp", NSP_UUID, "raw", "/tmp/bal.raw", "").replace(
        "  <vcpu>1</vcpu>",
        "  <memoryBacking><nosharepages/></memoryBacking>\n  <vcpu>1</vcpu>",
    )
}

/// The migration scenario's domain: a raw disk both oxvirtd reach at the same path.
fn mig_domain_xml() -> String {
    native_domain_xml("mig", MIG_UUID, "raw", "/tmp/mig.raw", "")
}

/// The cgroup scenario's domain: `<cputune>` shares, vCPU and emulator bandwidth and pins (L1 has
/// one CPU, 0), and a `<memtune>` hard limit.
fn cg_domain_xml() -> String {
    native_domain_xml("cg", CG_UUID, "raw", "/tmp/cg.raw", "").replace(
        "  <vcpu>1</vcpu>",
        "  <vcpu>1</vcpu>
  <cputune>
    <shares>512</shares>
    <period>100000</period>
    <quota>20000</quota>
    <emulator_period>100000</emulator_period>
    <emulator_quota>50000</emulator_quota>
    <vcpupin vcpu='0' cpuset='0'/>
    <emulatorpin cpuset='0'/>
  </cputune>
  <memtune>
    <hard_limit unit='MiB'>512</hard_limit>
  </memtune>",
    )
}

/// The lab's L1 console log, from one run shared by every test of this file.
fn lab() -> &'static str {
    static LAB: OnceLock<String> = OnceLock::new();
    LAB.get_or_init(run_lab)
}

/// Boots L1 with the lab and returns its console log once the script ended.
fn run_lab() -> String {
    let kit = oxvirt_testkit::guest_kit();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();

    let root = w.join("l1-root");
    write_file(&root.join("lab/run.sh"), L1_SCRIPT, 0o755);
    write_file(&root.join("lab/nat.xml"), &domain_xml(), 0o644);
    write_file(&root.join("lab/snapshots.sh"), SNAPSHOTS_SCRIPT, 0o644);
    write_file(&root.join("lab/snap.xml"), &snap_domain_xml(), 0o644);
    write_file(&root.join("lab/balloon.sh"), BALLOON_SCRIPT, 0o644);
    write_file(&root.join("lab/jail.sh"), JAIL_SCRIPT, 0o644);
    write_file(&root.join("lab/bal.xml"), &bal_domain_xml(), 0o644);
    write_file(&root.join("lab/nsp.xml"), &nsp_domain_xml(), 0o644);
    write_file(&root.join("lab/cgroups.sh"), CGROUPS_SCRIPT, 0o644);
    write_file(&root.join("lab/cg.xml"), &cg_domain_xml(), 0o644);
    write_file(&root.join("lab/migrate.sh"), MIGRATE_SCRIPT, 0o644);
    write_file(&root.join("lab/mig.xml"), &mig_domain_xml(), 0o644);
    install_binary(&root, Path::new(env!("CARGO_BIN_EXE_oxvirtd")), "oxvirtd");
    install_binary(&root, &sibling_binary("oxvirt"), "oxvirt");
    install_binary(&root, &sibling_binary("oxvirt-vmm"), "oxvirt-vmm");
    install_binary(&root, &sibling_binary("oxvirt-vmm-api"), "oxvirt-vmm-api");
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

/// The checks the lab script reported: (name, passed).
fn checks(text: &str) -> Vec<(&str, bool)> {
    text.lines()
        .filter_map(|l| l.trim_end().strip_prefix("CHECK "))
        .filter_map(|l| {
            let (name, verdict) = l.split_once(' ')?;
            Some((name, verdict == "ok"))
        })
        .collect()
}

/// Fails naming every check of `expected` that failed or is missing.
fn assert_checks(text: &str, expected: &[&str]) {
    let checks = checks(text);
    let failed: Vec<&str> = expected
        .iter()
        .copied()
        .filter(|name| !checks.iter().any(|(n, ok)| n == name && *ok))
        .collect();
    assert!(
        failed.is_empty(),
        "failed or missing checks: {failed:?}\nL1 console:\n{}",
        tail(text, 200)
    );
}

/// Fails unless the lab script reported `MARKER=0`: no oxvirt-vmm left once its scenario ended.
fn assert_no_vmm_left(text: &str, marker: &str) {
    assert!(
        text.lines().any(|l| l.trim_end() == format!("{marker}=0")),
        "oxvirt-vmm processes left behind ({marker}):\n{}",
        tail(text, 60)
    );
}

#[test]
fn oxvirt_drives_a_native_domain_on_real_kvm_like_a_qemu_one() {
    let text = lab();
    let expected = [
        "host-validate-hardware",
        "host-validate-kvm",
        "host-validate-nested",
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
    assert_checks(text, &expected);
    assert_no_vmm_left(text, "LEFTOVER-VMM");
}

/// oxvirtd jails each oxvirt-vmm by default (docs/security.md): a user of its own, no new
/// privileges, seccomp, PID 1 of its own PID namespace, new mount/IPC/network namespaces, an
/// empty read-only root, resource limits; the guest still reads and writes its disk (and the
/// lifecycle, snapshot and balloon scenarios all run jailed). `--no-sandbox` turns it off.
#[test]
fn the_native_vmm_runs_jailed() {
    assert_checks(
        lab(),
        &[
            "jail-uid",
            "jail-gid",
            "jail-dominfo-label",
            "jail-seccomp",
            "jail-no-new-privs",
            "jail-pid-namespace",
            "jail-namespaces",
            "jail-root-empty",
            "jail-limits",
            "jail-guest-disk",
            "jail-disk-in-host-file",
            "jail-nothing-relabelled",
            "no-sandbox-unjailed",
            "no-sandbox-seccomp",
        ],
    );
}

#[test]
fn native_snapshots_and_saves_keep_what_the_guest_had() {
    let text = lab();
    assert_checks(
        text,
        &[
            "snap-img-create",
            "snap-define",
            "snap-start",
            "snap-booted",
            "snap-guest-setup",
            "snap-count-before",
            "snapshot-create",
            "snapshot-running-after",
            "snapshot-state-file",
            "snapshot-listed",
            "snapshot-xml-memory",
            "snap-guest-goes-on",
            "snapshot-revert",
            "snapshot-revert-running",
            "revert-answers",
            "revert-disk-a",
            "revert-tmpfs-a",
            "revert-count-continues",
            "save-uptime-before",
            "save",
            "saved-shut-off",
            "restore",
            "restored-running",
            "restore-answers",
            "restore-uptime-continues",
            "restore-tmpfs",
            "managedsave-uptime-before",
            "managedsave",
            "managedsave-shut-off",
            "managedsave-dominfo",
            "managedsave-start",
            "managedsave-running",
            "managedsave-consumed",
            "managedsave-answers",
            "managedsave-uptime-continues",
            "managedsave-tmpfs",
            "never-rebooted",
            "snapshot-paused-suspend",
            "snapshot-create-paused",
            "snapshot-paused-after",
            "snapshot-paused-state",
            "snapshot-paused-resume",
            "snapshot-delete",
            "snapshot-delete-running",
            "snapshot-delete-state-file",
            "snapshot-delete-listed",
            "snapshot-delete-answers",
            "never-rebooted-after-delete",
            "snap-destroy",
            "snap-image-tags",
            "snap-undefine",
            "snap-state-dir-removed",
        ],
    );
    assert_no_vmm_left(text, "SNAP-LEFTOVER-VMM");
}

#[test]
fn native_balloon_and_memory_backing() {
    let text = lab();
    assert_checks(
        text,
        &[
            "bal-define",
            "bal-start",
            "bal-ram-mergeable",
            "bal-booted",
            "bal-driver",
            "bal-stats-keys",
            "bal-stats-guest-keys",
            "bal-actual-full",
            "bal-set-half",
            "bal-actual-half",
            "bal-vmm-agrees-half",
            "bal-memtotal-drops",
            "bal-live-xml-half",
            "bal-refused-above",
            "bal-refused-unchanged",
            "bal-set-full",
            "bal-actual-back",
            "bal-vmm-agrees-back",
            "bal-memtotal-back",
            "bal-stats-period",
            "bal-stats-period-vmm",
            "bal-stats-refresh",
            "bal-blkstat-before",
            "bal-blkstat-guest-io",
            "bal-blkstat-rd-bytes",
            "bal-blkstat-wr-bytes",
            "bal-blkstat-requests",
            "bal-blkstat-times",
            "bal-blkstat-all",
            "bal-blkstat-vmm",
            "bal-blkstat-unknown-disk",
            "bal-vcpuinfo",
            "bal-vcpuinfo-vcpu0",
            "bal-vcpupin",
            "bal-emulatorpin",
            "bal-destroy",
            "bal-undefine",
            "nsp-define",
            "nsp-start",
            "nsp-ram-flags",
            "nsp-ram-not-mergeable",
            "nsp-destroy",
            "nsp-undefine",
        ],
    );
    assert_no_vmm_left(text, "BAL-LEFTOVER-VMM");
}

/// A native guest's cgroups (docs/cgroups.md), on cgroup v2 in L1: oxvirtd places the jailed VMM
/// before the guest's first instruction (the VMM starts paused), `<cputune>` and `<memtune>` are in
/// the kernel's files, vCPU 0's thread alone in `vcpu0` and the others in `emulator`, a busy loop
/// in the guest held to about its 20% quota (from `cpu.stat`), none of the groups' files writable
/// by the VMM's user, `schedinfo`/`memtune`/`blkiotune` live, and a hard limit lowered under the
/// guest's use: the kernel OOM-kills the VMM (as under libvirt) and the domain is shut off.
#[test]
fn native_guests_get_cgroups() {
    let text = lab();
    assert_checks(
        text,
        &[
            "cg-v2-mounted",
            "cg-define",
            "cg-start",
            "cg-vmm-in-group",
            "cg-vcpu0-thread",
            "cg-emulator-threads",
            "cg-values",
            "cg-schedinfo-lift",
            "cg-schedinfo-lifted",
            "cg-booted",
            "cg-files-root-only",
            "cg-vmm-unprivileged",
            "cg-vmm-cannot-write",
            "cg-schedinfo-quota",
            "cg-schedinfo-file",
            "cg-loop-runs",
            "cg-quota-holds",
            "cg-schedinfo-live",
            "cg-schedinfo-changed",
            "cg-schedinfo-shows",
            "cg-memtune-live",
            "cg-memtune-file",
            "cg-memtune-shows",
            "cg-blkiotune-live",
            "cg-live-xml",
            "cg-oom-killed",
            "cg-oom-by-kernel",
            "cg-oom-shut-off",
            "cg-groups-removed",
            "cg-undefine",
        ],
    );
    assert_no_vmm_left(text, "CG-LEFTOVER-VMM");
}

/// A native guest migrates (docs/migration.md, "The native engine"), live and paused:
/// `--live --postcopy` and `--copy-storage-all` are refused naming why, and so is a name the
/// destination already has (its domain unchanged), the guest running on A throughout with its
/// counter going on. A live migration at 1 MiB/s shows its bytes in `domjobinfo` but no total
/// (the stream's length is not known before it ends), the guest running meanwhile, and
/// `domjobabort` ends it: the guest never stopped (the same VMM process, its counter going on),
/// B has nothing. A paused migration at 1 MiB/s shows its bytes and total (the guest shut off on
/// A meanwhile, its VMM ended) and `domjobabort` brings it back running on A from its saved
/// state (same tmpfs, counter going on), B left with nothing. Then it moves to B live with a
/// 10 ms `migrate-setmaxdowntime` while it rewrites 16 MiB of its tmpfs, so it never converges
/// by itself: `--timeout 1` pauses it (A's log says so) and the VMM made more than two passes
/// but fewer than its cap's 31 (A's log), `running (migrated)` on B with no boot in its
/// console, the same uptime and tmpfs, every file it rewrote whole (md5) and its counter going
/// on; A has it `shut off (migrated)` and no VMM of it, one VMM in all, no state file left, the
/// job completed with its downtime and the VMM's passes. Last it moves back paused with
/// `--undefinesource`: running on A with no boot in its console, its counter going on, gone
/// from B.
#[test]
fn native_guests_migrate_between_two_oxvirtd() {
    let text = lab();
    assert_checks(
        text,
        &[
            "mig-second-oxvirtd",
            "mig-define",
            "mig-start",
            "mig-booted",
            "mig-guest-setup",
            "mig-postcopy-refused",
            "mig-postcopy-says-why",
            "mig-postcopy-b-nothing",
            "mig-copy-storage-refused",
            "mig-b-define-same-name",
            "mig-name-refused",
            "mig-name-b-unchanged",
            "mig-b-undefine-same-name",
            "mig-refusals-leave-it-running",
            "mig-counts-after-refusals",
            "mig-live-jobinfo-progress",
            "mig-live-jobinfo-no-total",
            "mig-live-runs-meanwhile",
            "mig-live-jobabort",
            "mig-live-abort-fails",
            "mig-live-abort-same-vmm",
            "mig-live-abort-job-cancelled",
            "mig-live-abort-b-nothing",
            "mig-live-abort-counter-goes-on",
            "mig-jobinfo-progress",
            "mig-jobinfo-total",
            "mig-paused-vmm-ended",
            "mig-jobabort",
            "mig-abort-fails",
            "mig-abort-running-here",
            "mig-abort-job-cancelled",
            "mig-abort-b-nothing",
            "mig-abort-no-image",
            "mig-abort-counter-goes-on",
            "mig-before-move",
            "mig-setmaxdowntime",
            "mig-migrate",
            "mig-live-passes",
            "mig-live-timeout",
            "mig-b-running",
            "mig-b-reason",
            "mig-a-shut-off",
            "mig-a-no-vmm",
            "mig-one-vmm",
            "mig-a-no-image",
            "mig-job-completed",
            "mig-job-downtime",
            "mig-job-iteration",
            "mig-b-answers",
            "mig-b-same-boot",
            "mig-b-tmpfs",
            "mig-b-counter-continues",
            "mig-b-counter-goes-on",
            "mig-b-dirty-answers",
            "mig-b-dirty-whole",
            "mig-never-rebooted",
            "mig-a-undefine",
            "mig-back",
            "mig-back-running",
            "mig-back-b-undefined",
            "mig-back-b-no-vmm",
            "mig-back-counter-goes-on",
            "mig-back-same-boot",
            "mig-destroy",
            "mig-undefine",
        ],
    );
    assert_no_vmm_left(text, "MIG-LEFTOVER-VMM");
}
