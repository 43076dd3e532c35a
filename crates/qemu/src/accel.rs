//! Choosing between hardware KVM and TCG.
//!
//! `/dev/kvm` existing (or even opening) proves nothing: some hosts provide a paravirtual KVM
//! (`kvm_pvm`) under that name that emulates guest supervisor code instruction by instruction and
//! cannot boot a stock kernel. Hardware KVM is assumed only when all three hold: `/dev/kvm` opens,
//! the CPU advertises `vmx` or `svm`, and the `kvm_intel` or `kvm_amd` module is loaded.

use std::fs::OpenOptions;
use std::path::Path;

/// How QEMU executes guest code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Accel {
    /// Hardware-assisted KVM (`-accel kvm`).
    Kvm,
    /// QEMU's binary translator (`-accel tcg`), slower but available everywhere.
    Tcg,
}

impl Accel {
    /// The value for QEMU's `-accel` option.
    pub fn qemu_name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// The probe's verdict and why, in words an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccelProbe {
    pub accel: Accel,
    pub reason: String,
}

/// What the probe looked at; separated from the decision so the decision can be tested.
#[derive(Debug, Clone)]
struct HostFacts {
    /// `Err(reason)` if `/dev/kvm` could not be opened read-write.
    dev_kvm: Result<(), String>,
    /// `vmx` or `svm` in `/proc/cpuinfo` flags.
    virt_flag: Option<&'static str>,
    /// Loaded vendor modules among kvm_intel, kvm_amd.
    vendor_module: Option<&'static str>,
    /// `kvm_pvm` is loaded (the paravirtual KVM that is not hardware KVM).
    kvm_pvm: bool,
}

/// Decide whether this host has hardware KVM usable by QEMU.
pub fn probe_accel() -> AccelProbe {
    decide(&gather_facts(Path::new("/")))
}

fn gather_facts(root: &Path) -> HostFacts {
    let dev_kvm = OpenOptions::new()
        .read(true)
        .write(true)
        .open(root.join("dev/kvm"))
        .map(drop)
        .map_err(|err| err.to_string());
    let cpuinfo = std::fs::read_to_string(root.join("proc/cpuinfo")).unwrap_or_default();
    let module_loaded = |name: &str| root.join("sys/module").join(name).exists();
    HostFacts {
        dev_kvm,
        virt_flag: cpu_virt_flag(&cpuinfo),
        vendor_module: ["kvm_intel", "kvm_amd"]
            .into_iter()
            .find(|name| module_loaded(name)),
        kvm_pvm: module_loaded("kvm_pvm"),
    }
}

/// The hardware virtualization flag in the first `flags` line of /proc/cpuinfo, if any.
fn cpu_virt_flag(cpuinfo: &str) -> Option<&'static str> {
    let flags = cpuinfo
        .lines()
        .find(|line| line.starts_with("flags"))?
        .split_once(':')?
        .1;
    flags.split_whitespace().find_map(|flag| match flag {
        "vmx" => Some("vmx"),
        "svm" => Some("svm"),
        _ => None,
    })
}

fn decide(facts: &HostFacts) -> AccelProbe {
    let tcg = |why: String| AccelProbe {
        accel: Accel::Tcg,
        reason: format!("{why}: using TCG"),
    };
    if let Err(err) = &facts.dev_kvm {
        return tcg(format!("/dev/kvm cannot be opened ({err})"));
    }
    if facts.kvm_pvm && facts.vendor_module.is_none() {
        return tcg("/dev/kvm is kvm_pvm, not hardware KVM".to_string());
    }
    let Some(flag) = facts.virt_flag else {
        return tcg(
            "/dev/kvm opens but the CPU has no vmx/svm flag, so it is not hardware KVM".into(),
        );
    };
    let Some(module) = facts.vendor_module else {
        return tcg(format!(
            "the CPU has {flag} but neither kvm_intel nor kvm_amd is loaded"
        ));
    };
    AccelProbe {
        accel: Accel::Kvm,
        reason: format!("/dev/kvm opens, the CPU has {flag} and {module} is loaded: using KVM"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPUINFO_SVM: &str = "processor\t: 0\nflags\t\t: fpu vme sse2 svm lm\n";
    const CPUINFO_HYPERVISOR: &str = "processor\t: 0\nflags\t\t: fpu vme sse2 hypervisor lm\n";

    fn facts(dev_kvm: bool, cpuinfo: &str, vendor: Option<&'static str>, pvm: bool) -> HostFacts {
        HostFacts {
            dev_kvm: if dev_kvm {
                Ok(())
            } else {
                Err("No such file or directory".into())
            },
            virt_flag: cpu_virt_flag(cpuinfo),
            vendor_module: vendor,
            kvm_pvm: pvm,
        }
    }

    #[test]
    fn hardware_kvm_needs_all_three() {
        let probe = decide(&facts(true, CPUINFO_SVM, Some("kvm_amd"), false));
        assert_eq!(probe.accel, Accel::Kvm, "{}", probe.reason);
        assert!(probe.reason.contains("svm") && probe.reason.contains("kvm_amd"));
    }

    #[test]
    fn pvm_kvm_is_not_hardware_kvm() {
        let probe = decide(&facts(true, CPUINFO_HYPERVISOR, None, true));
        assert_eq!(probe.accel, Accel::Tcg);
        assert!(probe.reason.contains("kvm_pvm"), "{}", probe.reason);
    }

    #[test]
    fn missing_pieces_each_fall_back_to_tcg() {
        let no_dev = decide(&facts(false, CPUINFO_SVM, Some("kvm_amd"), false));
        assert_eq!(no_dev.accel, Accel::Tcg);
        assert!(no_dev.reason.contains("/dev/kvm cannot be opened"));
        let no_flag = decide(&facts(true, CPUINFO_HYPERVISOR, Some("kvm_amd"), false));
        assert_eq!(no_flag.accel, Accel::Tcg);
        assert!(no_flag.reason.contains("no vmx/svm"));
        let no_module = decide(&facts(true, CPUINFO_SVM, None, false));
        assert_eq!(no_module.accel, Accel::Tcg);
        assert!(no_module.reason.contains("kvm_intel nor kvm_amd"));
    }

    #[test]
    fn flag_must_be_a_whole_word() {
        assert_eq!(cpu_virt_flag("flags\t: vmxfoo svmbar\n"), None);
        assert_eq!(cpu_virt_flag("flags\t: a vmx b\n"), Some("vmx"));
        assert_eq!(cpu_virt_flag(""), None);
    }
}
