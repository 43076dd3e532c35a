//! The CPU model database: the named x86 models this host's QEMU offers and each one's feature
//! set, asked of QEMU itself (never a table of our own, so it follows the installed QEMU).
//!
//! [`probe`] runs a short-lived `qemu-system-x86_64 -machine none -accel tcg -nodefaults
//! -nographic -qmp stdio` (`qmp_probe.rs`) and asks it `query-cpu-definitions`, then
//! `query-cpu-model-expansion` (type `static`: a model as `base` plus the properties it sets,
//! under QEMU's canonical names) for each named model and for `max`, the CPU TCG provides. Feature names are then given
//! libvirt's spelling where it differs ([`libvirt_feature_name`]), so the sets compare with
//! libvirt `<cpu>` descriptions. The caller caches the result by QEMU's version.

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::qmp_probe::{self, Session};
use crate::QemuError;

/// Every named model of one architecture and the CPU the hypervisor provides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuDatabase {
    /// QEMU's version as its QMP greeting gives it (`7.2.22`), the cache key.
    pub qemu_version: String,
    pub arch: String,
    /// In QEMU's order of `query-cpu-definitions`, versioned names (`Haswell-v4`) and the
    /// non-models `max`, `host`, `base` left out: the names virsh lists.
    pub models: Vec<CpuModel>,
    /// TCG's `max` CPU: what `virttype='qemu'` provides on this host.
    pub tcg_max: BTreeSet<String>,
    /// The CPUID vendor string of TCG's `max`. (A cache written before it was kept does not
    /// read, so it is asked of QEMU again.)
    pub tcg_max_vendor: String,
}

/// One named model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuModel {
    pub name: String,
    /// CPUID vendor string (`GenuineIntel`, `AuthenticAMD`), empty if QEMU gives none.
    pub vendor: String,
    /// QEMU under TCG can run it as is (no unavailable features).
    pub usable: bool,
    /// Features the model enables, under libvirt's names.
    pub features: BTreeSet<String>,
}

/// QEMU's feature name in libvirt's spelling, or `None` for the paravirtual `kvm*` features,
/// which describe the hypervisor rather than a CPU and which libvirt's CPU models never list.
/// libvirt keeps underscores in a few names QEMU has turned into dashes, and `pclmuldq`.
pub fn libvirt_feature_name(qemu: &str) -> Option<String> {
    const UNDERSCORED: &[&str] = &[
        "cmp-legacy",
        "ds-cpl",
        "fxsr-opt",
        "lahf-lm",
        "nodeid-msr",
        "perfctr-core",
        "perfctr-nb",
        "tsc-adjust",
    ];
    if qemu.starts_with("kvm") {
        return None;
    }
    if qemu == "pclmulqdq" {
        return Some("pclmuldq".to_string());
    }
    if UNDERSCORED.contains(&qemu) {
        return Some(qemu.replace('-', "_"));
    }
    Some(qemu.to_string())
}

/// Linux's names (`/proc/cpuinfo` flags) of CPU features whose libvirt name differs.
const LINUX_RENAMED: &[(&str, &str)] = &[
    ("pclmulqdq", "pclmuldq"),
    ("sse4_1", "sse4.1"),
    ("sse4_2", "sse4.2"),
    ("tsc_deadline_timer", "tsc-deadline"),
    ("cr8_legacy", "cr8legacy"),
    ("sha_ni", "sha-ni"),
    ("avx512_vbmi2", "avx512vbmi2"),
    ("avx512_vnni", "avx512vnni"),
    ("avx512_bitalg", "avx512bitalg"),
    ("avx512_vpopcntdq", "avx512-vpopcntdq"),
    ("avx512_bf16", "avx512-bf16"),
    ("avx512_4vnniw", "avx512-4vnniw"),
    ("avx512_4fmaps", "avx512-4fmaps"),
    ("avx512_vp2intersect", "avx512-vp2intersect"),
    ("avx512_fp16", "avx512-fp16"),
    ("nrip_save", "nrip-save"),
    ("amd_ssbd", "amd-ssbd"),
    ("amd_stibp", "amd-stibp"),
    ("virt_ssbd", "virt-ssbd"),
];

/// libvirt feature names that no QEMU model sets (so the model database does not know them)
/// but that libvirt reports for a host CPU, under the same name as Linux's flag.
const LIBVIRT_HOST_ONLY: &[&str] = &[
    "vme",
    "ht",
    "ds",
    "acpi",
    "tm",
    "pbe",
    "dtes64",
    "ds_cpl",
    "vmx",
    "smx",
    "est",
    "tm2",
    "xtpr",
    "pdcm",
    "dca",
    "osxsave",
    "cmp_legacy",
    "extapic",
    "ibs",
    "skinit",
    "wdt",
    "lwp",
    "nodeid_msr",
    "perfctr_nb",
    "tsc_adjust",
    "avx512ifma",
    "pku",
    "ospke",
    "md-clear",
    "flush-l1d",
];

/// The host CPU's features under libvirt's names, in `/proc/cpuinfo`'s order, from its
/// `flags`: a flag counts when its libvirt name is one `known` (every feature of the model
/// database) or one libvirt reports only for hosts; Linux's own flags (`constant_tsc`,
/// `rep_good`, ...) are left out. `invtsc` (an invariant TSC) is what Linux shows as
/// `constant_tsc` with `nonstop_tsc`.
pub fn host_cpu_features(flags: &[String], known: &BTreeSet<String>) -> Vec<String> {
    let has = |flag: &str| flags.iter().any(|f| f == flag);
    let mut features: Vec<String> = Vec::new();
    for flag in flags {
        let name = LINUX_RENAMED
            .iter()
            .find(|(linux, _)| linux == flag)
            .map(|(_, libvirt)| (*libvirt).to_string())
            .or_else(|| {
                [flag.clone(), flag.replace('_', "-")]
                    .into_iter()
                    .find(|name| known.contains(name) || LIBVIRT_HOST_ONLY.contains(&name.as_str()))
            });
        if let Some(name) = name {
            if !features.contains(&name) {
                features.push(name);
            }
        }
    }
    if has("constant_tsc") && has("nonstop_tsc") {
        features.push("invtsc".to_string());
    }
    features
}

/// Whether `name` is one of QEMU's versioned model names (`Haswell-v4`), which virsh does not
/// list: the unversioned alias stands for it.
fn is_versioned(name: &str) -> bool {
    name.rsplit_once("-v")
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Asks `emulator` for the database of `arch` (only `x86_64` is supported).
pub fn probe(emulator: &Path, arch: &str) -> Result<CpuDatabase, QemuError> {
    if arch != "x86_64" {
        return Err(QemuError::Protocol(format!(
            "no CPU models for architecture '{arch}': this QEMU engine supports x86_64 only"
        )));
    }
    qmp_probe::ask(emulator, |session| converse(session, arch))
}

fn converse(session: &mut Session, arch: &str) -> Result<CpuDatabase, QemuError> {
    let definitions = session.execute(json!({"execute": "query-cpu-definitions"}))?;
    let definitions = definitions
        .as_array()
        .ok_or_else(|| QemuError::Protocol("query-cpu-definitions: not a list".into()))?;
    let mut models = Vec::new();
    for definition in definitions {
        let Some(name) = definition.get("name").and_then(Value::as_str) else {
            continue;
        };
        if is_versioned(name) || matches!(name, "max" | "host" | "base") {
            continue;
        }
        let usable = definition
            .get("unavailable-features")
            .and_then(Value::as_array)
            .is_none_or(|list| list.is_empty());
        let (vendor, features) = expand(session, name)?;
        models.push(CpuModel {
            name: name.to_string(),
            vendor,
            usable,
            features,
        });
    }
    let (tcg_max_vendor, tcg_max) = expand(session, "max")?;
    Ok(CpuDatabase {
        qemu_version: session.qemu_version.clone(),
        arch: arch.to_string(),
        models,
        tcg_max,
        tcg_max_vendor,
    })
}

/// One model's vendor and enabled features (libvirt's names).
fn expand(session: &mut Session, name: &str) -> Result<(String, BTreeSet<String>), QemuError> {
    let reply = session.execute(json!({
        "execute": "query-cpu-model-expansion",
        "arguments": {"type": "static", "model": {"name": name}},
    }))?;
    Ok(features_of(&reply["model"]["props"]))
}

/// The vendor and the boolean properties set to true, renamed for libvirt.
fn features_of(props: &Value) -> (String, BTreeSet<String>) {
    let vendor = props["vendor"].as_str().unwrap_or_default().to_string();
    let features = props
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, value)| value.as_bool() == Some(true))
        .filter_map(|(name, _)| libvirt_feature_name(name))
        .collect();
    (vendor, features)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_names_become_libvirt_names() {
        assert_eq!(libvirt_feature_name("lahf-lm").as_deref(), Some("lahf_lm"));
        assert_eq!(
            libvirt_feature_name("pclmulqdq").as_deref(),
            Some("pclmuldq")
        );
        assert_eq!(libvirt_feature_name("sse4.2").as_deref(), Some("sse4.2"));
        assert_eq!(
            libvirt_feature_name("spec-ctrl").as_deref(),
            Some("spec-ctrl")
        );
        assert_eq!(libvirt_feature_name("kvmclock"), None);
    }

    #[test]
    fn linux_flags_get_libvirts_names() {
        let flags: Vec<String> =
            "fpu vme pni pclmulqdq sse4_2 rep_good constant_tsc lahf_lm nonstop_tsc"
                .split(' ')
                .map(String::from)
                .collect();
        let known: BTreeSet<String> = ["fpu", "pni", "lahf_lm", "sse4.2"].map(String::from).into();
        assert_eq!(
            host_cpu_features(&flags, &known),
            ["fpu", "vme", "pni", "pclmuldq", "sse4.2", "lahf_lm", "invtsc"]
        );
    }

    #[test]
    fn versioned_names_are_recognised() {
        assert!(is_versioned("Haswell-v4"));
        assert!(is_versioned("486-v1"));
        assert!(!is_versioned("Haswell-noTSX-IBRS"));
        assert!(!is_versioned("EPYC-Rome"));
        assert!(!is_versioned("x-v"));
    }

    #[test]
    fn only_true_booleans_are_features() {
        let props = json!({"vendor": "AuthenticAMD", "sse": true, "avx": false,
                           "family": 23, "lahf-lm": true, "kvmclock": true});
        let (vendor, features) = features_of(&props);
        assert_eq!(vendor, "AuthenticAMD");
        assert_eq!(features.into_iter().collect::<Vec<_>>(), ["lahf_lm", "sse"]);
    }

    /// The real QEMU of this host: the models virsh knows are there with plausible sets.
    #[test]
    fn probe_asks_the_installed_qemu() {
        let db = probe(Path::new(crate::DEFAULT_EMULATOR), "x86_64").expect("probe");
        let haswell = db
            .models
            .iter()
            .find(|m| m.name == "Haswell-noTSX-IBRS")
            .expect("Haswell-noTSX-IBRS listed");
        assert_eq!(haswell.vendor, "GenuineIntel");
        for feature in ["avx2", "fma", "lahf_lm", "pclmuldq", "spec-ctrl"] {
            assert!(haswell.features.contains(feature), "{feature}");
        }
        assert!(!haswell.features.contains("hle"), "noTSX has no hle");
        assert!(db.models.iter().all(|m| !is_versioned(&m.name)));
        assert!(db.tcg_max.contains("sse4.2"));
        assert!(!db.qemu_version.is_empty());
        assert!(probe(Path::new(crate::DEFAULT_EMULATOR), "aarch64").is_err());
    }
}
