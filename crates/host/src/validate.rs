//! `oxvirt host validate`: can this host run guests, and how well? Every check of libvirt's
//! `virt-host-validate` (its QEMU and LXC sections, with its wording, so the two can be read
//! side by side), and what it leaves out: whether `/dev/kvm` is hardware KVM at all (see
//! [`crate::kvm_probe`]), nested virtualization with the fix, `/dev/vhost-vsock`, huge pages,
//! transparent huge pages, KSM and `fs.aio-max-nr` (section `OXVIRT`).
//!
//! The checks read the host through a [`HostView`] (a root directory: `/`, or a prepared tree
//! in tests) and take the probe's result as an argument, so they are plain functions of what
//! the host shows.

use std::path::PathBuf;

use crate::kvm_probe::KvmProbe;
pub use crate::view::HostView;

/// How a check came out; `Warn` and `Fail` carry the advice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Warn(String),
    Fail(String),
}

impl Verdict {
    /// `PASS`, `WARN` or `FAIL`.
    pub fn word(&self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Warn(_) => "WARN",
            Verdict::Fail(_) => "FAIL",
        }
    }

    pub fn advice(&self) -> Option<&str> {
        match self {
            Verdict::Pass => None,
            Verdict::Warn(advice) | Verdict::Fail(advice) => Some(advice),
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// `QEMU`, `LXC` (virt-host-validate's sections) or `OXVIRT` (checks it does not have).
    pub section: &'static str,
    /// What was checked, worded as "Checking ...": "for hardware virtualization".
    pub what: String,
    pub verdict: Verdict,
}

impl Check {
    fn new(section: &'static str, what: impl Into<String>, verdict: Verdict) -> Check {
        Check {
            section,
            what: what.into(),
            verdict,
        }
    }

    /// The line as virt-host-validate prints it.
    pub fn line(&self) -> String {
        let mut line = format!(
            "{:>6}: Checking {:<60}: {}",
            self.section,
            self.what,
            self.verdict.word()
        );
        if let Some(advice) = self.verdict.advice() {
            line.push_str(&format!(" ({advice})"));
        }
        line
    }
}

/// Every check, in report order.
pub fn validate(host: &HostView, probe: &KvmProbe) -> Vec<Check> {
    let flags = host.cpu_flags();
    let cgroups = Cgroups::of(host);
    let mut checks = qemu_checks(host, &flags, &cgroups);
    checks.extend(lxc_checks(host, &cgroups));
    checks.extend(oxvirt_checks(host, &flags, probe));
    checks
}

/// True when no check failed (virt-host-validate's exit status).
pub fn all_passed(checks: &[Check]) -> bool {
    !checks
        .iter()
        .any(|check| matches!(check.verdict, Verdict::Fail(_)))
}

fn has(flags: &[String], name: &str) -> bool {
    flags.iter().any(|flag| flag == name)
}

fn device(host: &HostView, section: &'static str, path: &str, missing: Verdict) -> Check {
    let verdict = if host.exists(path) {
        Verdict::Pass
    } else {
        missing
    };
    Check::new(section, format!("if device {path} exists"), verdict)
}

fn qemu_checks(host: &HostView, flags: &[String], cgroups: &Cgroups) -> Vec<Check> {
    const QEMU: &str = "QEMU";
    let mut checks = Vec::new();
    let hardware = has(flags, "vmx") || has(flags, "svm");
    checks.push(Check::new(
        QEMU,
        "for hardware virtualization",
        if hardware {
            Verdict::Pass
        } else {
            Verdict::Fail("Host not compatible with KVM; HW virtualization CPU features not found. Only emulated CPUs are available; performance will be significantly limited".into())
        },
    ));
    // As virt-host-validate: /dev/kvm matters only where the CPU can virtualize.
    if hardware {
        let kvm = device(
            host,
            QEMU,
            "/dev/kvm",
            Verdict::Fail(
                "Check that the 'kvm-intel' or 'kvm-amd' modules are loaded & the BIOS has enabled virtualization"
                    .into(),
            ),
        );
        let present = kvm.verdict == Verdict::Pass;
        checks.push(kvm);
        if present {
            let accessible = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(host.path("/dev/kvm"))
                .is_ok();
            checks.push(Check::new(
                QEMU,
                "if device /dev/kvm is accessible",
                if accessible {
                    Verdict::Pass
                } else {
                    Verdict::Fail("Check /dev/kvm is world writable or you are in a group that is allowed to access it".into())
                },
            ));
        }
    }
    checks.push(device(
        host,
        QEMU,
        "/dev/vhost-net",
        Verdict::Warn(
            "Load the 'vhost_net' module to improve performance of virtio networking".into(),
        ),
    ));
    checks.push(device(
        host,
        QEMU,
        "/dev/net/tun",
        Verdict::Fail("Load the 'tun' module to enable networking for QEMU guests".into()),
    ));
    for controller in ["cpu", "cpuacct", "cpuset", "memory", "devices", "blkio"] {
        checks.push(cgroups.check(QEMU, controller));
    }
    checks.push(iommu_check(host, flags));
    checks.push(secure_guest_check(host, flags));
    checks
}

fn iommu_check(host: &HostView, flags: &[String]) -> Check {
    let what = "for device assignment IOMMU support";
    let (table, option) = if has(flags, "vmx") {
        ("DMAR", "intel_iommu=on")
    } else if has(flags, "svm") {
        ("IVRS", "amd_iommu=on")
    } else {
        return Check::new(
            "QEMU",
            what,
            Verdict::Warn("Unknown if this platform has IOMMU support".into()),
        );
    };
    if !host.exists(&format!("/sys/firmware/acpi/tables/{table}")) {
        return Check::new(
            "QEMU",
            what,
            Verdict::Warn(format!("No ACPI {table} table found, IOMMU either disabled in BIOS or not supported by this hardware platform")),
        );
    }
    let groups = std::fs::read_dir(host.path("/sys/kernel/iommu_groups"))
        .map(|entries| entries.count())
        .unwrap_or(0);
    let verdict = if groups > 0 {
        Verdict::Pass
    } else {
        Verdict::Warn(format!(
            "IOMMU appears to be disabled in kernel. Add {option} to kernel cmdline arguments"
        ))
    };
    Check::new("QEMU", what, verdict)
}

fn secure_guest_check(host: &HostView, flags: &[String]) -> Check {
    let what = "for secure guest support";
    let sev_on = matches!(
        host.value("/sys/module/kvm_amd/parameters/sev").as_deref(),
        Some("1" | "Y" | "y")
    );
    let verdict = if sev_on && host.exists("/dev/sev") {
        Verdict::Pass
    } else if has(flags, "sev") {
        Verdict::Warn("AMD Secure Encrypted Virtualization appears to be disabled in kernel. Add kvm_amd.sev=1 to the kernel cmdline arguments".into())
    } else {
        Verdict::Warn("Unknown if this platform has Secure Guest support".into())
    };
    Check::new("QEMU", what, verdict)
}

fn lxc_checks(host: &HostView, cgroups: &Cgroups) -> Vec<Check> {
    const LXC: &str = "LXC";
    let mut checks = Vec::new();
    let release = host.value("/proc/sys/kernel/osrelease").unwrap_or_default();
    let recent = kernel_at_least(&release, (2, 6, 26));
    checks.push(Check::new(
        LXC,
        "for Linux >= 2.6.26",
        if recent {
            Verdict::Pass
        } else {
            Verdict::Fail("Upgrade to a kernel supporting namespaces".into())
        },
    ));
    for namespace in ["ipc", "mnt", "pid", "uts", "net", "user"] {
        let verdict = if host.exists(&format!("/proc/self/ns/{namespace}")) {
            Verdict::Pass
        } else {
            Verdict::Fail("Namespace support is recommended".into())
        };
        checks.push(Check::new(
            LXC,
            format!("for namespace {namespace}"),
            verdict,
        ));
    }
    for controller in [
        "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio",
    ] {
        checks.push(cgroups.check(LXC, controller));
    }
    checks.push(device(
        host,
        LXC,
        "/sys/fs/fuse/connections",
        Verdict::Warn("Load the 'fuse' module to enable /proc/ overrides".into()),
    ));
    checks
}

/// `6.1.0-13-amd64` >= (2, 6, 26)?
fn kernel_at_least(release: &str, wanted: (u32, u32, u32)) -> bool {
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|part| !part.is_empty())
        .map(|part| part.parse::<u32>().unwrap_or(0));
    let version = (
        numbers.next().unwrap_or(0),
        numbers.next().unwrap_or(0),
        numbers.next().unwrap_or(0),
    );
    version >= wanted
}

/// The cgroup controllers the host mounts: v1 hierarchies by name, v2's from
/// `cgroup.controllers` (where v1's `cpuacct` is part of `cpu`, `blkio` is `io`, `devices` is
/// a BPF program and `freezer` is `cgroup.freeze`).
struct Cgroups {
    v1: Vec<String>,
    v2: Option<(Vec<String>, PathBuf)>,
}

impl Cgroups {
    fn of(host: &HostView) -> Cgroups {
        let mut v1 = Vec::new();
        let mut v2 = None;
        for line in host
            .read("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
        {
            // "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER"
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mut fields = right.split_whitespace();
            let fstype = fields.next().unwrap_or_default();
            let super_options = fields.nth(1).unwrap_or_default();
            let mountpoint = left.split_whitespace().nth(4).unwrap_or_default();
            match fstype {
                "cgroup" => v1.extend(super_options.split(',').map(str::to_string)),
                "cgroup2" if v2.is_none() => {
                    let controllers = host
                        .read(&format!("{mountpoint}/cgroup.controllers"))
                        .unwrap_or_default()
                        .split_whitespace()
                        .map(str::to_string)
                        .collect();
                    v2 = Some((controllers, host.path(mountpoint)));
                }
                _ => {}
            }
        }
        Cgroups { v1, v2 }
    }

    fn has(&self, controller: &str) -> bool {
        if self.v1.iter().any(|c| c == controller) {
            return true;
        }
        let Some((controllers, mountpoint)) = &self.v2 else {
            return false;
        };
        let v2_name = match controller {
            "cpuacct" => "cpu",
            "blkio" => "io",
            "devices" => return true,
            "freezer" => return mountpoint.join("cgroup.freeze").exists(),
            other => other,
        };
        controllers.iter().any(|c| c == v2_name)
    }

    fn check(&self, section: &'static str, controller: &str) -> Check {
        let verdict = if self.has(controller) {
            Verdict::Pass
        } else {
            Verdict::Warn(format!(
                "Enable '{controller}' in kernel Kconfig file or mount/enable cgroup controller in your system"
            ))
        };
        Check::new(
            section,
            format!("for cgroup '{controller}' controller support"),
            verdict,
        )
    }
}

fn oxvirt_checks(host: &HostView, flags: &[String], probe: &KvmProbe) -> Vec<Check> {
    const OXVIRT: &str = "OXVIRT";
    let mut checks = vec![Check::new(
        OXVIRT,
        "if /dev/kvm runs guests as hardware KVM",
        kvm_verdict(host, flags, probe),
    )];
    checks.push(nested_check(host));
    checks.push(device(
        host,
        OXVIRT,
        "/dev/vhost-vsock",
        Verdict::Warn("Load the 'vhost_vsock' module for host-guest sockets (AF_VSOCK)".into()),
    ));
    checks.push(hugepages_check(host));
    checks.push(thp_check(host));
    checks.push(ksm_check(host));
    checks.push(aio_check(host));
    checks
}

fn kvm_verdict(host: &HostView, flags: &[String], probe: &KvmProbe) -> Verdict {
    let module = host.kvm_module();
    match probe {
        KvmProbe::Missing => Verdict::Fail(
            "no /dev/kvm: QEMU guests run under TCG (emulation, much slower) and native-engine guests cannot run; load kvm_intel or kvm_amd".into(),
        ),
        KvmProbe::Failed(why) => Verdict::Fail(format!(
            "/dev/kvm exists but a test VM did not run ({why}); QEMU guests run under TCG"
        )),
        KvmProbe::Ran { hidden } => {
            let mut reasons = Vec::new();
            if module == Some("kvm_pvm") {
                reasons.push("the module is kvm_pvm, a paravirtual KVM that emulates guest supervisor code".to_string());
            }
            if !(has(flags, "vmx") || has(flags, "svm")) {
                reasons.push("the CPU shows no vmx or svm".to_string());
            }
            if !hidden.is_empty() {
                reasons.push(format!(
                    "KVM hides {} from guests although the host CPU has them",
                    hidden.join(", ")
                ));
            }
            if reasons.is_empty() {
                Verdict::Pass
            } else {
                Verdict::Fail(format!(
                    "/dev/kvm runs a test guest, but it is not hardware KVM: {}; stock Linux guests do not boot on it, so oxvirt runs QEMU guests with TCG here and native-engine guests only in a nested lab",
                    reasons.join("; ")
                ))
            }
        }
    }
}

fn nested_check(host: &HostView) -> Check {
    let what = "for nested virtualization";
    let Some(module) = ["kvm_intel", "kvm_amd"]
        .into_iter()
        .find(|module| host.exists(&format!("/sys/module/{module}")))
    else {
        return Check::new(
            "OXVIRT",
            what,
            Verdict::Warn(
                "neither kvm_intel nor kvm_amd is loaded: guests cannot run KVM themselves".into(),
            ),
        );
    };
    let enabled = matches!(
        host.value(&format!("/sys/module/{module}/parameters/nested"))
            .as_deref(),
        Some("1" | "Y" | "y")
    );
    let verdict = if enabled {
        Verdict::Pass
    } else {
        Verdict::Warn(format!(
            "{module} has nested=0: add 'options {module} nested=1' to /etc/modprobe.d/kvm-nested.conf, then, with no guest running, 'modprobe -r {module} && modprobe {module}'"
        ))
    };
    Check::new("OXVIRT", what, verdict)
}

fn hugepages_check(host: &HostView) -> Check {
    let mut sizes: Vec<String> = Vec::new();
    let mut reserved = 0u64;
    if let Ok(entries) = std::fs::read_dir(host.path("/sys/kernel/mm/hugepages")) {
        let mut names: Vec<String> = entries
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in names {
            let dir = format!("/sys/kernel/mm/hugepages/{name}");
            let number = |file: &str| {
                host.value(&format!("{dir}/{file}"))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            let (total, free) = (number("nr_hugepages"), number("free_hugepages"));
            reserved += total;
            let size = name.trim_start_matches("hugepages-");
            sizes.push(format!("{size}: {free} of {total} free"));
        }
    }
    let verdict = if sizes.is_empty() {
        Verdict::Warn("the kernel has no huge pages: guests with <hugepages/> cannot start".into())
    } else if reserved == 0 {
        Verdict::Warn(format!(
            "none reserved ({}): guests with <hugepages/> cannot start; reserve them with 'sysctl vm.nr_hugepages=N'",
            sizes.join(", ")
        ))
    } else {
        Verdict::Pass
    };
    Check::new("OXVIRT", "for reserved huge pages", verdict)
}

fn thp_check(host: &HostView) -> Check {
    let mode = host
        .value("/sys/kernel/mm/transparent_hugepage/enabled")
        .and_then(|modes| {
            modes
                .split_whitespace()
                .find(|m| m.starts_with('['))
                .map(|m| m.trim_matches(|c| c == '[' || c == ']').to_string())
        });
    let verdict = match mode.as_deref() {
        Some("always" | "madvise") => Verdict::Pass,
        Some(other) => Verdict::Warn(format!(
            "transparent huge pages are '{other}': guest memory is backed by 4 KiB pages; 'echo madvise > /sys/kernel/mm/transparent_hugepage/enabled'"
        )),
        None => Verdict::Warn("the kernel has no transparent huge pages".into()),
    };
    Check::new("OXVIRT", "for transparent huge pages", verdict)
}

fn ksm_check(host: &HostView) -> Check {
    let verdict = match host.value("/sys/kernel/mm/ksm/run").as_deref() {
        Some("1") => Verdict::Pass,
        Some(_) => Verdict::Warn(
            "KSM is off: identical guest pages are not merged ('echo 1 > /sys/kernel/mm/ksm/run' turns it on; <nosharepages/> keeps a guest out)"
                .into(),
        ),
        None => Verdict::Warn("the kernel has no KSM".into()),
    };
    Check::new("OXVIRT", "for KSM (same-page merging)", verdict)
}

/// QEMU's io='native' takes up to 128 aio requests per disk queue from fs.aio-max-nr.
const AIO_WANTED: u64 = 1_048_576;

fn aio_check(host: &HostView) -> Check {
    let number = |path: &str| host.value(path).and_then(|v| v.parse::<u64>().ok());
    let verdict = match (number("/proc/sys/fs/aio-max-nr"), number("/proc/sys/fs/aio-nr")) {
        (Some(max), _) if max >= AIO_WANTED => Verdict::Pass,
        (Some(max), used) => Verdict::Warn(format!(
            "fs.aio-max-nr is {max} ({} in use): guests with io='native' disks take 128 per queue; 'sysctl fs.aio-max-nr={AIO_WANTED}'",
            used.unwrap_or(0)
        )),
        (None, _) => Verdict::Warn("cannot read fs.aio-max-nr".into()),
    };
    Check::new(
        "OXVIRT",
        "for enough asynchronous I/O requests (fs.aio-max-nr)",
        verdict,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_with(files: &[(&str, &str)]) -> (tempfile::TempDir, HostView) {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = dir.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let view = HostView::at(dir.path());
        (dir, view)
    }

    fn find<'a>(checks: &'a [Check], what: &str) -> &'a Check {
        checks
            .iter()
            .find(|c| c.what == what)
            .unwrap_or_else(|| panic!("no check {what}"))
    }

    #[test]
    fn lines_are_laid_out_as_virt_host_validate_lays_them_out() {
        let check = Check::new("QEMU", "for hardware virtualization", Verdict::Pass);
        assert_eq!(
            check.line(),
            "  QEMU: Checking for hardware virtualization                                 : PASS"
        );
        let check = Check::new("LXC", "if device /x exists", Verdict::Warn("do y".into()));
        assert!(check
            .line()
            .starts_with("   LXC: Checking if device /x exists"));
        assert!(check.line().ends_with(": WARN (do y)"));
    }

    #[test]
    fn a_vmx_host_with_nested_off_is_told_how_to_turn_it_on() {
        let (_dir, host) = host_with(&[
            ("/proc/cpuinfo", "processor\t: 0\nflags\t\t: fpu vmx pni\n"),
            ("/sys/module/kvm_intel/parameters/nested", "N\n"),
            ("/sys/firmware/acpi/tables/DMAR", "x"),
        ]);
        let checks = validate(&host, &KvmProbe::Ran { hidden: vec![] });
        assert_eq!(
            find(&checks, "for hardware virtualization").verdict,
            Verdict::Pass
        );
        let nested = find(&checks, "for nested virtualization");
        assert!(
            nested
                .verdict
                .advice()
                .unwrap()
                .contains("options kvm_intel nested=1"),
            "{nested:?}"
        );
        let iommu = find(&checks, "for device assignment IOMMU support");
        assert!(iommu.verdict.advice().unwrap().contains("intel_iommu=on"));
        assert_eq!(
            find(&checks, "if /dev/kvm runs guests as hardware KVM").verdict,
            Verdict::Pass
        );
        // No /dev/kvm in the tree: FAIL, and so the whole report.
        assert_eq!(
            find(&checks, "if device /dev/kvm exists").verdict.word(),
            "FAIL"
        );
        assert!(!all_passed(&checks));
    }

    #[test]
    fn a_paravirtual_kvm_is_named_and_its_hidden_features_listed() {
        let (_dir, host) = host_with(&[
            ("/proc/cpuinfo", "flags\t\t: fpu hypervisor pni ssse3\n"),
            ("/sys/module/kvm_pvm/refcnt", "0\n"),
        ]);
        let probe = KvmProbe::Ran {
            hidden: vec!["pni", "ssse3"],
        };
        let checks = validate(&host, &probe);
        let kvm = find(&checks, "if /dev/kvm runs guests as hardware KVM");
        let advice = kvm.verdict.advice().unwrap();
        assert_eq!(kvm.verdict.word(), "FAIL");
        assert!(
            advice.contains("kvm_pvm") && advice.contains("pni, ssse3"),
            "{advice}"
        );
        assert_eq!(
            find(&checks, "for device assignment IOMMU support").verdict,
            Verdict::Warn("Unknown if this platform has IOMMU support".into())
        );
    }

    #[test]
    fn cgroup_v2_controllers_stand_for_v1_names() {
        let (dir, _) = host_with(&[("/cg/cgroup.controllers", "cpuset cpu io memory pids\n")]);
        let mountinfo = format!(
            "30 1 0:26 / {}/cg rw - cgroup2 cgroup2 rw\n",
            "" // the mount point, relative to the view's root
        );
        std::fs::create_dir_all(dir.path().join("proc/self")).unwrap();
        std::fs::write(dir.path().join("proc/self/mountinfo"), mountinfo).unwrap();
        let host = HostView::at(dir.path());
        let cgroups = Cgroups::of(&host);
        for controller in ["cpu", "cpuacct", "cpuset", "memory", "devices", "blkio"] {
            assert!(cgroups.has(controller), "{controller}");
        }
        assert!(!cgroups.has("freezer"), "no cgroup.freeze in the tree");
    }

    #[test]
    fn kernel_versions_compare_by_number() {
        assert!(kernel_at_least("6.1.0-13-amd64", (2, 6, 26)));
        assert!(kernel_at_least("2.6.26", (2, 6, 26)));
        assert!(!kernel_at_least("2.6.9", (2, 6, 26)));
    }
}
