//! The machine types this host's QEMU offers (`<capabilities><guest><arch><machine>` and
//! `domcapabilities --machine`), asked of QEMU itself with QMP `query-machines` on a
//! short-lived QEMU (`qmp_probe.rs`). The caller caches the answer by QEMU's version.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::qmp_probe;
use crate::QemuError;

/// Every machine type of one QEMU binary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineDatabase {
    /// QEMU's version as its QMP greeting gives it (`7.2.22`), the cache key.
    pub qemu_version: String,
    /// libvirt's order: the default machine first, then QEMU's order of `query-machines`;
    /// `none` (no machine at all) left out.
    pub machines: Vec<Machine>,
}

/// One machine type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// The canonical, versioned name (`pc-i440fx-7.2`).
    pub name: String,
    /// The short name that stands for it (`pc`, `q35`), if any.
    pub alias: Option<String>,
    /// The most vCPUs it takes.
    pub max_cpus: u32,
    pub deprecated: bool,
    /// QEMU starts it when no `-machine` is given.
    pub is_default: bool,
}

impl MachineDatabase {
    /// The machine `name` names, by its canonical name or its alias.
    pub fn find(&self, name: &str) -> Option<&Machine> {
        self.machines
            .iter()
            .find(|m| m.name == name || m.alias.as_deref() == Some(name))
    }

    /// The machine QEMU picks by default (`pc-i440fx-7.2` for x86_64 QEMU 7.2).
    pub fn default_machine(&self) -> Option<&Machine> {
        self.machines.iter().find(|m| m.is_default)
    }
}

/// Asks `emulator` for its machine types.
pub fn probe(emulator: &Path) -> Result<MachineDatabase, QemuError> {
    qmp_probe::ask(emulator, |session| {
        let reply = session.execute(json!({"execute": "query-machines"}))?;
        Ok(MachineDatabase {
            qemu_version: session.qemu_version.clone(),
            machines: machines_of(&reply)?,
        })
    })
}

fn machines_of(reply: &Value) -> Result<Vec<Machine>, QemuError> {
    let list = reply
        .as_array()
        .ok_or_else(|| QemuError::Protocol("query-machines: not a list".into()))?;
    let mut machines: Vec<Machine> = list
        .iter()
        .filter_map(|entry| {
            let name = entry.get("name")?.as_str()?;
            (name != "none").then(|| Machine {
                name: name.to_string(),
                alias: entry.get("alias").and_then(Value::as_str).map(String::from),
                max_cpus: entry
                    .get("cpu-max")
                    .and_then(Value::as_u64)
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or(1),
                deprecated: entry
                    .get("deprecated")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                is_default: entry
                    .get("is-default")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            })
        })
        .collect();
    // A stable sort: the default first, the rest as QEMU listed them (libvirt's order).
    machines.sort_by_key(|m| !m.is_default);
    Ok(machines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_goes_first_and_none_is_left_out() {
        let reply = json!([
            {"name": "pc-q35-7.2", "alias": "q35", "cpu-max": 288, "deprecated": false},
            {"name": "none", "cpu-max": 1},
            {"name": "pc-i440fx-1.4", "cpu-max": 255, "deprecated": true},
            {"name": "pc-i440fx-7.2", "alias": "pc", "is-default": true, "cpu-max": 255},
        ]);
        let db = MachineDatabase {
            qemu_version: "7.2.0".into(),
            machines: machines_of(&reply).expect("machines"),
        };
        let names: Vec<&str> = db.machines.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["pc-i440fx-7.2", "pc-q35-7.2", "pc-i440fx-1.4"]);
        assert_eq!(db.find("q35").map(|m| m.max_cpus), Some(288));
        assert!(db.find("pc-i440fx-1.4").is_some_and(|m| m.deprecated));
        assert_eq!(
            db.default_machine().map(|m| m.name.as_str()),
            Some("pc-i440fx-7.2")
        );
        assert!(db.find("none").is_none());
    }

    /// The real QEMU of this host.
    #[test]
    fn probe_asks_the_installed_qemu() {
        let db = probe(Path::new(crate::DEFAULT_EMULATOR)).expect("probe");
        let pc = db.find("pc").expect("pc");
        assert!(pc.name.starts_with("pc-i440fx-"), "{pc:?}");
        assert!(pc.is_default);
        assert_eq!(db.machines[0].name, pc.name);
        assert!(db.find("q35").is_some_and(|m| m.max_cpus >= 255));
    }
}
