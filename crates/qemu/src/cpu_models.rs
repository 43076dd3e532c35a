//! The CPU model database: the named x86 models this host's QEMU offers and each one's feature
//! set, asked of QEMU itself (never a table of our own, so it follows the installed QEMU).
//!
//! [`probe`] runs a short-lived `qemu-system-x86_64 -machine none -accel tcg -nodefaults
//! -nographic -qmp stdio` and asks it `query-cpu-definitions`, then `query-cpu-model-expansion`
//! (type `static`: a model as `base` plus the properties it sets, under QEMU's canonical names)
//! for each named model and for `max`, the CPU TCG provides. Feature names are then given
//! libvirt's spelling where it differs ([`libvirt_feature_name`]), so the sets compare with
//! libvirt `<cpu>` descriptions. The caller caches the result by QEMU's version.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::QemuError;

/// How long the whole probe may take (about 60 expansions; a second or two normally).
const PROBE_TIMEOUT: Duration = Duration::from_secs(120);

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
    let mut child = Command::new(emulator)
        .args([
            "-machine",
            "none",
            "-accel",
            "tcg",
            "-nodefaults",
            "-nographic",
        ])
        .args(["-qmp", "stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|err| QemuError::Spawn {
            emulator: emulator.to_path_buf(),
            reason: err.to_string(),
        })?;
    // A watchdog ends a QEMU that stops answering, which ends the reads below with EOF.
    let (done, watch) = mpsc::channel::<()>();
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = watch.recv_timeout(PROBE_TIMEOUT) {
            // SAFETY: kill(2) with a pid we spawned and have not reaped yet (the reaping
            // wait() below happens only after this thread is told to stop or has fired).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    });
    let result = converse(&mut child, arch);
    drop(done);
    let _ = watchdog.join();
    let _ = child.kill();
    let _ = child.wait();
    result
}

struct Session<'a> {
    stdin: ChildStdin,
    lines: std::io::Lines<BufReader<&'a mut std::process::ChildStdout>>,
}

impl Session<'_> {
    fn execute(&mut self, command: Value) -> Result<Value, QemuError> {
        let io = |err: std::io::Error| QemuError::Protocol(format!("QMP over stdio: {err}"));
        writeln!(self.stdin, "{command}").map_err(io)?;
        loop {
            let line = self
                .lines
                .next()
                .ok_or_else(|| QemuError::Protocol("QEMU exited during the CPU probe".into()))?
                .map_err(io)?;
            let reply: Value = serde_json::from_str(&line)
                .map_err(|err| QemuError::Protocol(format!("not JSON from QMP: {err}")))?;
            if reply.get("event").is_some() {
                continue;
            }
            if let Some(ret) = reply.get("return") {
                return Ok(ret.clone());
            }
            return Err(QemuError::Protocol(format!(
                "QMP refused {command}: {}",
                reply.get("error").unwrap_or(&reply)
            )));
        }
    }
}

fn converse(child: &mut Child, arch: &str) -> Result<CpuDatabase, QemuError> {
    let missing = || QemuError::Protocol("QEMU's stdio pipes are missing".into());
    let stdin = child.stdin.take().ok_or_else(missing)?;
    let stdout = child.stdout.as_mut().ok_or_else(missing)?;
    let mut lines = BufReader::new(stdout).lines();
    let greeting: Value = match lines.next() {
        Some(Ok(line)) => serde_json::from_str(&line)
            .map_err(|err| QemuError::Protocol(format!("QMP greeting is not JSON: {err}")))?,
        _ => return Err(QemuError::Protocol("QEMU gave no QMP greeting".into())),
    };
    let qemu_version = version_of(&greeting)?;
    let mut session = Session { stdin, lines };
    session.execute(json!({"execute": "qmp_capabilities"}))?;
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
        let (vendor, features) = expand(&mut session, name)?;
        models.push(CpuModel {
            name: name.to_string(),
            vendor,
            usable,
            features,
        });
    }
    let (_, tcg_max) = expand(&mut session, "max")?;
    let _ = session.execute(json!({"execute": "quit"}));
    Ok(CpuDatabase {
        qemu_version,
        arch: arch.to_string(),
        models,
        tcg_max,
    })
}

fn version_of(greeting: &Value) -> Result<String, QemuError> {
    let version = &greeting["QMP"]["version"]["qemu"];
    match (
        version["major"].as_u64(),
        version["minor"].as_u64(),
        version["micro"].as_u64(),
    ) {
        (Some(major), Some(minor), Some(micro)) => Ok(format!("{major}.{minor}.{micro}")),
        _ => Err(QemuError::Protocol(format!(
            "QMP greeting has no version: {greeting}"
        ))),
    }
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
