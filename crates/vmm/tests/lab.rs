//! Nested lab: real KVM inside a QEMU TCG guest (L1, `-cpu max` has SVM), with oxvirt-vmm booting the test
//! kernel as L2. One L1 boot runs every scenario of `lab/l1.sh`; each test below checks its own scenario's
//! output, so failures are reported per acceptance item.
//!
//! The lab needs qemu-system-x86_64, cpio and the guest kit; if any is missing the tests fail (they never skip).

use oxvirt_testkit::lab::{initramfs_with, install_binary, run_l1};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use oxvirt_vmm::cpuid;
use oxvirt_vmm::protocol::ExitReason;

const L1_SCRIPT: &str = include_str!("lab/l1.sh");
const L2_SCRIPT: &str = include_str!("lab/l2.sh");
/// Upper bound for the whole L1 run (all scenarios).
const LAB_TIMEOUT: Duration = Duration::from_secs(900);

/// Output of one scenario.
#[derive(Debug, Default, Clone)]
struct Scenario {
    console: Vec<String>,
    stderr: Vec<String>,
    rc: Option<i32>,
}

impl Scenario {
    fn value(&self, key: &str) -> Option<&str> {
        let prefix = format!("{key}=");
        self.console
            .iter()
            .find_map(|l| l.trim_end().strip_prefix(&prefix))
    }

    fn has(&self, line: &str) -> bool {
        self.console.iter().any(|l| l.trim_end() == line)
    }

    fn describe(&self) -> String {
        format!(
            "rc={:?}\n--- console (last 30 lines) ---\n{}\n--- stderr ---\n{}",
            self.rc,
            self.console
                .iter()
                .rev()
                .take(30)
                .rev()
                .cloned()
                .collect::<Vec<_>>()
                .join("\n"),
            self.stderr.join("\n")
        )
    }
}

struct Lab {
    scenarios: BTreeMap<String, Scenario>,
    /// Lines of L1's console outside any scenario.
    top: Vec<String>,
}

impl Lab {
    fn scenario(&self, name: &str) -> &Scenario {
        self.scenarios.get(name).unwrap_or_else(|| {
            panic!(
                "lab scenario {name} did not run; L1 said:\n{}",
                self.top.join("\n")
            )
        })
    }

    fn top_value(&self, key: &str) -> Option<&str> {
        let prefix = format!("{key}=");
        self.top
            .iter()
            .find_map(|l| l.trim_end().strip_prefix(&prefix))
    }

    fn top_has(&self, line_start: &str) -> Option<&str> {
        self.top
            .iter()
            .map(|l| l.trim_end())
            .find(|l| l.starts_with(line_start))
    }
}

fn write_script(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn build_and_run_lab() -> Lab {
    let kit = oxvirt_testkit::guest_kit();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();

    // L2: the guest kit plus the L2 check script.
    let l2_root = w.join("l2-root");
    write_script(&l2_root.join("lab/run.sh"), L2_SCRIPT);
    let l2_initramfs = w.join("l2-initramfs.img");
    initramfs_with(&kit.initramfs, &l2_root, &l2_initramfs);

    // L1: the guest kit plus the VMM, its API client, the L2 kernel and initramfs, and the L1 script.
    let l1_root = w.join("l1-root");
    write_script(&l1_root.join("lab/run.sh"), L1_SCRIPT);
    install_binary(
        &l1_root,
        Path::new(env!("CARGO_BIN_EXE_oxvirt-vmm")),
        "oxvirt-vmm",
    );
    install_binary(
        &l1_root,
        Path::new(env!("CARGO_BIN_EXE_oxvirt-vmm-api")),
        "oxvirt-vmm-api",
    );
    std::fs::create_dir_all(l1_root.join("lab/l2")).unwrap();
    std::fs::copy(&kit.kernel, l1_root.join("lab/l2/vmlinuz")).unwrap();
    std::fs::copy(&l2_initramfs, l1_root.join("lab/l2/initramfs.img")).unwrap();
    let l1_initramfs = w.join("l1-initramfs.img");
    initramfs_with(&kit.initramfs, &l1_root, &l1_initramfs);

    let text = run_l1(&kit.kernel, &l1_initramfs, w, LAB_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    parse(&text)
}

fn parse(text: &str) -> Lab {
    let mut scenarios: BTreeMap<String, Scenario> = BTreeMap::new();
    let mut top = Vec::new();
    for raw in text.lines() {
        let line = raw.trim_end_matches('\r');
        if let Some(rest) = line.strip_prefix('[') {
            if let Some((name, body)) = rest.split_once("] ") {
                match name.strip_suffix(":err") {
                    Some(n) => scenarios
                        .entry(n.into())
                        .or_default()
                        .stderr
                        .push(body.into()),
                    None => scenarios
                        .entry(name.into())
                        .or_default()
                        .console
                        .push(body.into()),
                }
                continue;
            }
        }
        if let Some(rest) = line.strip_prefix("LAB-END ") {
            if let Some((name, rc)) = rest.split_once(" rc=") {
                scenarios.entry(name.into()).or_default().rc = rc.trim().parse().ok();
                continue;
            }
        }
        top.push(line.to_string());
    }
    Lab { scenarios, top }
}

/// The lab's one run, shared by every test. A failed run is kept as its message: a panicking initializer would
/// let the next waiting test boot the whole lab again, multiplying a hang by the number of test threads.
fn lab() -> &'static Lab {
    static LAB: OnceLock<Result<Lab, String>> = OnceLock::new();
    let run = LAB.get_or_init(|| {
        std::panic::catch_unwind(build_and_run_lab).map_err(|payload| {
            payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the nested lab panicked".into())
        })
    });
    match run {
        Ok(lab) => lab,
        Err(message) => panic!("the nested lab failed:\n{message}"),
    }
}

/// The exit record the VMM of scenario `name` left (L1 prints it as `RECORD-<name>=<json>`).
fn exit_record(lab: &Lab, name: &str) -> ExitReason {
    let json = lab
        .top_value(&format!("RECORD-{name}"))
        .unwrap_or_else(|| panic!("no RECORD-{name} line; L1 said:\n{}", lab.top.join("\n")));
    serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("scenario {name} left no readable exit record ({e}): {json:?}"))
}

fn flags(s: &Scenario) -> BTreeSet<String> {
    s.value("FLAGS")
        .unwrap_or_else(|| panic!("no FLAGS line:\n{}", s.describe()))
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// The guest booted to its init, ran the check, and powered off cleanly (VMM exit status 0).
fn assert_clean_boot(s: &Scenario) {
    assert!(
        s.has("OXVIRT-GUEST-BOOTED"),
        "guest did not reach its init:\n{}",
        s.describe()
    );
    assert!(
        s.has("OXVIRT-LAB-EXIT=0"),
        "guest check script failed:\n{}",
        s.describe()
    );
    assert_eq!(
        s.rc,
        Some(0),
        "VMM did not exit 0 after the guest powered off:\n{}",
        s.describe()
    );
}

/// The flags Linux shows that we can vouch for, restricted to the known universe.
fn known(flags: &BTreeSet<String>) -> BTreeSet<String> {
    let universe = cpuid::known_linux_flags();
    flags
        .iter()
        .filter(|f| universe.contains(f.as_str()))
        .cloned()
        .collect()
}

fn model_flags(name: &str) -> BTreeSet<String> {
    let m = cpuid::model(name).unwrap();
    m.features
        .iter()
        .filter_map(|f| cpuid::feature(f).and_then(|f| f.linux))
        .map(String::from)
        .collect()
}

fn passthrough_flags(lab: &Lab) -> BTreeSet<String> {
    lab.top_value("PT-FLAGS")
        .unwrap_or_else(|| panic!("no PT-FLAGS line; L1 said:\n{}", lab.top.join("\n")))
        .split_whitespace()
        .map(String::from)
        .collect()
}

#[test]
fn boots_with_one_vcpu_and_hides_svm_on_request() {
    let s = lab().scenario("boot1");
    assert_clean_boot(s);
    assert_eq!(s.value("NPROC"), Some("1"), "{}", s.describe());
    assert!(
        !flags(s).contains("svm"),
        "svm visible although -svm was given"
    );
    assert!(flags(s).contains("hypervisor"));
}

#[test]
fn boots_with_two_vcpus_and_host_passthrough_shows_what_kvm_supports() {
    let lab = lab();
    let s = lab.scenario("boot2");
    assert_clean_boot(s);
    assert_eq!(s.value("NPROC"), Some("2"), "{}", s.describe());
    let pt = passthrough_flags(lab);
    assert!(
        pt.contains("svm"),
        "KVM in L1 should offer nested SVM: {pt:?}"
    );
    assert_eq!(
        known(&flags(s)),
        known(&pt),
        "guest flags differ from KVM's supported CPUID"
    );
}

#[test]
fn topology_sockets_are_visible_to_the_guest() {
    let s = lab().scenario("topo");
    assert_clean_boot(s);
    assert_eq!(s.value("NPROC"), Some("2"), "{}", s.describe());
    assert_eq!(s.value("SOCKETS"), Some("2"), "{}", s.describe());
}

#[test]
fn host_model_shows_the_named_features_kvm_supports() {
    let lab = lab();
    let s = lab.scenario("hostmodel");
    assert_clean_boot(s);
    assert_eq!(known(&flags(s)), known(&passthrough_flags(lab)));
}

fn assert_exact_model(name: &str, scenario: &str) {
    let s = lab().scenario(scenario);
    assert_clean_boot(s);
    assert_eq!(
        known(&flags(s)),
        model_flags(name),
        "guest flags are not exactly model {name}'s"
    );
}

#[test]
fn custom_qemu64_gives_exactly_its_flags() {
    assert_exact_model("qemu64", "qemu64");
}

#[test]
fn custom_kvm64_gives_exactly_its_flags() {
    assert_exact_model("kvm64", "kvm64");
}

#[test]
fn custom_haswell_is_exact_or_names_the_missing_features() {
    let lab = lab();
    let s = lab.scenario("haswell");
    let pt = passthrough_flags(lab);
    let want = model_flags("Haswell-noTSX-IBRS");
    let missing: Vec<&str> = cpuid::model("Haswell-noTSX-IBRS")
        .unwrap()
        .features
        .iter()
        .filter(|f| **f != "hypervisor")
        .filter(|f| {
            cpuid::feature(f)
                .and_then(|f| f.linux)
                .is_some_and(|l| !pt.contains(l))
        })
        .copied()
        .collect();
    if missing.is_empty() {
        assert_clean_boot(s);
        assert_eq!(known(&flags(s)), want);
    } else {
        assert_ne!(s.rc, Some(0), "{}", s.describe());
        let err = s.stderr.join("\n");
        assert_eq!(s.stderr.len(), 1, "one-line error expected: {err}");
        for m in missing {
            assert!(
                err.contains(m),
                "error does not name missing feature {m}: {err}"
            );
        }
        assert!(!s.has("OXVIRT-GUEST-BOOTED"));
    }
}

#[test]
fn custom_haswell_minus_what_the_lab_lacks_is_exact() {
    let s = lab().scenario("haswell-reduced");
    assert_clean_boot(s);
    let mut want = model_flags("Haswell-noTSX-IBRS");
    want.remove("invpcid");
    want.remove("pcid");
    assert_eq!(known(&flags(s)), want);
}

#[test]
fn guest_reboot_ends_the_vmm_with_the_reset_status() {
    let s = lab().scenario("reboot");
    assert!(s.has("OXVIRT-GUEST-BOOTED"), "{}", s.describe());
    assert_eq!(
        s.rc,
        Some(oxvirt_vmm::EXIT_STATUS_RESET),
        "{}",
        s.describe()
    );
}

#[test]
fn exit_records_say_reset_poweroff_host_stop_or_error() {
    let lab = lab();
    assert_eq!(exit_record(lab, "reboot"), ExitReason::GuestReset);
    // The API's poweroff pressed the power button; the guest powered itself off.
    assert_eq!(exit_record(lab, "pause"), ExitReason::GuestPoweroff);
    assert_eq!(exit_record(lab, "config"), ExitReason::GuestPoweroff);
    assert_eq!(exit_record(lab, "sigterm"), ExitReason::HostStop);
    match exit_record(lab, "err-disk") {
        ExitReason::Error { message } => {
            assert!(message.contains("/nonexistent/disk.img"), "{message}")
        }
        other => panic!("err-disk: expected an error record, got {other:?}"),
    }
}

#[test]
fn a_config_file_boots_the_guest_it_describes() {
    let s = lab().scenario("config");
    assert_clean_boot(s);
    assert_eq!(s.value("NPROC"), Some("2"), "{}", s.describe());
    assert_eq!(s.value("SOCKETS"), Some("2"), "{}", s.describe());
    assert!(
        !flags(s).contains("svm"),
        "svm visible although the config disables it"
    );
}

#[test]
fn virtio_blk_reads_known_bytes_and_writes_reach_the_host_file() {
    let lab = lab();
    let s = lab.scenario("blk");
    assert_clean_boot(s);
    assert_eq!(s.value("BLK-RO"), Some("0"));
    assert_eq!(
        s.value("BLK-READ"),
        Some("OXVIRT-DISK-PATTERN"),
        "{}",
        s.describe()
    );
    assert_eq!(
        s.value("BLK-REREAD"),
        Some("WRITTEN-BY-L2"),
        "{}",
        s.describe()
    );
    assert_eq!(lab.top_value("HOST-READBACK"), Some("WRITTEN-BY-L2"));
}

/// `--jail` (docs/native-vmm.md, "The jail") under `unshare --pid --fork`: the same guest as
/// `blk` boots, reads the disk's known bytes and writes its own, which reach the host file (still
/// root's: nothing relabelled); the exit record, written in place, says poweroff.
#[test]
fn a_jailed_vmm_boots_and_its_guest_reads_and_writes_its_disk() {
    let lab = lab();
    let s = lab.scenario("jail");
    assert_clean_boot(s);
    assert_eq!(
        s.value("BLK-READ"),
        Some("OXVIRT-DISK-PATTERN"),
        "{}",
        s.describe()
    );
    assert_eq!(lab.top_value("JAIL-READBACK"), Some("WRITTEN-BY-L2"));
    assert_eq!(lab.top_value("JAIL-DISK-OWNER"), Some("0"));
    assert_eq!(exit_record(lab, "jail"), ExitReason::GuestPoweroff);
}

#[test]
fn virtio_blk_readonly_disk_is_readonly_in_the_guest() {
    let s = lab().scenario("blkro");
    assert_clean_boot(s);
    assert_eq!(s.value("BLK-RO"), Some("1"), "{}", s.describe());
    assert_eq!(s.value("BLK-READ"), Some("OXVIRT-DISK-PATTERN"));
    assert_eq!(s.value("BLK-WRITE"), Some("refused"));
}

#[test]
fn virtio_net_over_tap_pings_l1_and_the_tap_goes_away() {
    let lab = lab();
    let s = lab.scenario("net");
    assert_clean_boot(s);
    assert_eq!(
        s.value("NET-MAC"),
        Some("52:54:00:aa:bb:cc"),
        "{}",
        s.describe()
    );
    assert!(s.has("PING-OK"), "{}", s.describe());
    assert!(lab.top_has("TAP-GONE").is_some(), "TAP device left behind");
}

#[test]
fn pause_stops_the_console_resume_restarts_it_and_api_poweroff_is_clean() {
    let lab = lab();
    let s = lab.scenario("pause");
    let line = |p: &str| {
        lab.top_has(p)
            .unwrap_or_else(|| panic!("no {p} line; L1 said:\n{}", lab.top.join("\n")))
    };
    assert!(line("API-PAUSE").contains("\"ok\":true"));
    assert!(line("API-STATUS-PAUSED").contains("\"state\":\"paused\""));
    let ticks: Vec<u32> = line("PAUSED-TICKS")
        .split_whitespace()
        .skip(1)
        .filter_map(|n| n.parse().ok())
        .collect();
    assert_eq!(ticks.len(), 2);
    assert!(
        ticks[0] >= 6,
        "guest was ticking before the pause: {ticks:?}"
    );
    assert_eq!(ticks[0], ticks[1], "console output continued while paused");
    assert!(line("API-RESUME").contains("\"ok\":true"));
    assert!(
        lab.top_has("RESUMED-TICKS-GROW").is_some(),
        "no output after resume"
    );
    assert!(line("API-STATUS-RUNNING").contains("\"state\":\"running\""));
    assert!(line("API-POWEROFF").contains("\"ok\":true"));
    // The VMM exits 0 only when the guest writes S5 to the ACPI PM control register; the ticker would have run
    // for minutes, so that write came from the guest's power-button handling.
    assert_eq!(s.rc, Some(0), "{}", s.describe());
    assert!(
        !s.has("OXVIRT-LAB-EXIT=0"),
        "the ticker ended by itself instead of being powered off"
    );
    assert!(
        lab.top_has("API-SOCKET-GONE").is_some(),
        "API socket left behind"
    );
}

#[test]
fn sigterm_stops_the_vm_and_cleans_up() {
    let lab = lab();
    let s = lab.scenario("sigterm");
    assert!(
        s.console.iter().any(|l| l.starts_with("TICK 3")),
        "{}",
        s.describe()
    );
    assert_eq!(s.rc, Some(0), "{}", s.describe());
    assert!(
        lab.top_has("SIGTERM-SOCKET-GONE").is_some(),
        "API socket left behind after SIGTERM"
    );
}

/// The counter lines of the `counter` L2 mode: (count, uptime, tmpfs marker), complete lines only (a line
/// the pause cut in two is left out).
fn counts(s: &Scenario) -> Vec<(u64, f64, String)> {
    s.console
        .iter()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                ["COUNT", n, "UP", up, "MARK", mark] if mark.len() == 36 => {
                    Some((n.parse().ok()?, up.parse().ok()?, mark.to_string()))
                }
                _ => None,
            }
        })
        .collect()
}

#[test]
fn saved_state_restores_into_a_new_vmm_and_the_guest_goes_on() {
    let lab = lab();
    let value = |key: &str| {
        lab.top_value(key)
            .unwrap_or_else(|| panic!("no {key} line; L1 said:\n{}", lab.top.join("\n")))
    };
    let before = lab.scenario("snapshot");
    let after = lab.scenario("restored");
    assert!(value("SNAP-PAUSE").contains("\"ok\":true"));
    assert!(
        value("SNAP-SAVE").contains("\"ok\":true"),
        "{}\n{}",
        value("SNAP-SAVE"),
        before.describe()
    );
    assert!(
        value("SNAP-SAVE-RUNNING-REFUSED").contains("pause it before saving"),
        "{}",
        value("SNAP-SAVE-RUNNING-REFUSED")
    );
    // The bytes before the offset are the caller's and stay.
    assert_eq!(value("SNAP-HEADER"), "DAEMON-HEADER");
    let bytes: u64 = value("SNAP-STATE-BYTES").parse().unwrap();
    // Zero pages are left out: far less than the 256 MiB of RAM.
    assert!(bytes < 200 << 20, "{bytes} bytes");
    assert!(value("SNAP-STATUS-RESTORED").contains("\"state\":\"paused\""));
    assert!(value("SNAP-RESUME").contains("\"ok\":true"));
    // For docs/benchmarks.md (no assertion on timing).
    let said = |s: &Scenario, what: &str| {
        s.stderr
            .iter()
            .find(|l| l.contains(what))
            .cloned()
            .unwrap_or_default()
    };
    println!(
        "snapshot timing (256 MiB guest, nested lab): restore to running (new VMM process to resumed) {} ms; \
         state {bytes} bytes; {}; {}",
        value("SNAP-RESTORE-TO-RUNNING-MS"),
        said(before, "saved the machine state"),
        said(after, "restored the machine state")
    );

    let old = counts(before);
    let new = counts(after);
    let marker = before.value("MARKER").expect("no MARKER line");
    let (last_n, last_up, _) = old
        .last()
        .cloned()
        .unwrap_or_else(|| panic!("{}", before.describe()));
    let (first_n, first_up, _) = new
        .first()
        .cloned()
        .unwrap_or_else(|| panic!("{}", after.describe()));
    assert!(last_n >= 25, "{}", before.describe());
    // The next count (or the one after, when the pause cut its line): not from 0.
    assert!(
        first_n == last_n + 1 || first_n == last_n + 2,
        "counted to {last_n} before the save, went on at {first_n}\n{}",
        after.describe()
    );
    assert!(
        new.windows(2).all(|w| w[1].0 == w[0].0 + 1),
        "{}",
        after.describe()
    );
    assert!(
        new.iter().all(|(_, _, m)| m == marker),
        "tmpfs marker changed:\n{}",
        after.describe()
    );
    // The guest's clock goes on from where it was saved.
    assert!(
        first_up >= last_up,
        "uptime {last_up} before, {first_up} after"
    );
    let (_, end_up, _) = new.last().cloned().unwrap();
    assert!(
        end_up > first_up,
        "uptime stands still after the restore: {first_up}..{end_up}"
    );
    // virtio-blk serves requests made after the restore.
    let blk_after = after
        .console
        .iter()
        .filter(|l| l.trim_end() == "BLK OXVIRT-DISK-PATTERN")
        .count();
    assert!(blk_after >= 2, "{}", after.describe());
    // The power button (PM state restored) ends the restored guest cleanly.
    assert!(value("SNAP-POWEROFF").contains("\"ok\":true"));
    assert_eq!(after.rc, Some(0), "{}", after.describe());
}

#[test]
fn a_truncated_state_or_another_machine_is_refused_with_one_clear_line() {
    assert_refused("snap-truncated", "the state stream is truncated");
    assert_refused(
        "snap-mismatch",
        "does not match this configuration: memory: saved 256 MiB, configured 512 MiB",
    );
}

fn assert_refused(name: &str, phrase: &str) {
    let s = lab().scenario(name);
    assert!(
        s.rc.is_some_and(|rc| rc != 0),
        "{name} was accepted:\n{}",
        s.describe()
    );
    assert_eq!(
        s.stderr.len(),
        1,
        "{name}: one-line error expected:\n{}",
        s.describe()
    );
    let err = &s.stderr[0];
    assert!(err.starts_with("oxvirt-vmm: error: "), "{err}");
    assert!(
        err.contains(phrase),
        "{name}: error should mention {phrase:?}: {err}"
    );
    assert!(!err.contains("panicked"));
    assert!(!s.has("OXVIRT-GUEST-BOOTED"));
}

#[test]
fn bad_input_is_refused_with_one_clear_line() {
    assert_refused("err-nokernel", "/nonexistent/vmlinuz");
    assert_refused("err-notkernel", "is not a Linux kernel");
    assert_refused("err-memory", "exceeds the host's total memory");
    assert_refused("err-vcpus", "KVM supports at most");
    assert_refused("err-disk", "/nonexistent/disk.img");
    assert_refused("err-rodisk", "/ro/disk.img");
    assert_eq!(
        lab().top_value("LEFTOVER-VMM"),
        Some("0"),
        "VMM processes left behind"
    );
}

#[test]
fn seccomp_filters_every_vmm_thread() {
    let lab = lab();
    let s = lab.scenario("seccomp");
    assert!(
        lab.top_has("SECCOMP-NO-TICKS").is_none(),
        "the filtered guest did not run:\n{}",
        s.describe()
    );
    // "SECCOMP-THREAD <comm> <Seccomp mode> <Seccomp_filters>" per thread of the running VMM.
    let threads: BTreeMap<String, (String, u32)> = lab
        .top
        .iter()
        .filter_map(|l| l.trim_end().strip_prefix("SECCOMP-THREAD "))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let name = f.next()?.to_string();
            let mode = f.next().unwrap_or("").to_string();
            let filters = f.next().and_then(|n| n.parse().ok()).unwrap_or(0);
            Some((name, (mode, filters)))
        })
        .collect();
    for expected in ["oxvirt-vmm", "vcpu_0", "api", "virtio-blk"] {
        assert!(
            threads.contains_key(expected),
            "no thread {expected} in {threads:?}"
        );
    }
    for (name, (mode, filters)) in &threads {
        // Mode 2 is SECCOMP_MODE_FILTER.
        assert_eq!(mode, "2", "thread {name} is not filtered: {threads:?}");
        assert!(*filters >= 1, "thread {name} has no filter: {threads:?}");
    }
    assert!(lab
        .top_has("SECCOMP-POWEROFF")
        .is_some_and(|l| l.contains("\"ok\":true")));
    assert_eq!(
        s.rc,
        Some(0),
        "filtered VMM did not power off cleanly:\n{}",
        s.describe()
    );
}

#[test]
fn seccomp_violation_kills_the_vmm_and_no_scenario_hit_the_filter() {
    let lab = lab();
    let s = lab.scenario("seccomp-kill");
    // The shell reports a death by SIGSYS (31) as 128 + 31.
    assert_eq!(s.rc, Some(128 + libc::SIGSYS), "{}", s.describe());
    assert!(
        !s.has("OXVIRT-GUEST-BOOTED"),
        "the guest ran although vCPU 0 made a forbidden call"
    );
    let audits: Vec<&str> = lab
        .top
        .iter()
        .filter_map(|l| l.trim_end().strip_prefix("SECCOMP-AUDIT "))
        .collect();
    assert!(
        audits.iter().any(|a| a.contains("oxvirt-vmm")
            && a.contains(" sig=31 ")
            && a.contains(" syscall=41 ")),
        "the kernel did not log the kill for the hook's socket(2): {audits:?}"
    );
    assert_eq!(
        audits.len(),
        1,
        "seccomp stopped a system call outside the self-test: {audits:?}"
    );
}
