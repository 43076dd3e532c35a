//! The PCI topology on QEMU's command line against libvirt 9.0's: for the domain crate's own
//! PCI cases (`crates/domain/tests/data/cases/pci-*.xml`), `tests/data/pci/NAME.libvirt-devices`
//! holds the `-device` values on a PCI bus that Debian 12's libvirt 9.0 generates
//! (`virsh domxml-to-native qemu-argv` in an embedded root, one JSON object a line, other
//! devices left out). Every one of them must be in oxvirt's command line with the same bus,
//! address and topology options (root port `port`/`chassis`, bridge `chassis_nr`, bus ids
//! `pci.N`, `multifunction`, USB companions' `masterbus`/`firstport`, xhci ports), and oxvirt
//! must put nothing else on a PCI bus.

use std::path::Path;

use oxvirt_qemu::{command_line, Accel, QemuError, RunPaths};
use serde_json::Value;

/// The options compared (the others, such as drive and netdev names, are the engine's own).
const KEYS: &[&str] = &[
    "driver",
    "bus",
    "addr",
    "multifunction",
    "port",
    "chassis",
    "chassis_nr",
    "masterbus",
    "firstport",
    "p2",
    "p3",
];

fn comparable(device: &Value) -> String {
    let mut parts = Vec::new();
    for key in KEYS {
        if let Some(v) = device.get(*key) {
            parts.push(format!("{key}={v}"));
        }
    }
    // A PCI controller's id is the bus name the devices behind it use.
    if let Some(id) = device.get("id").and_then(Value::as_str) {
        if id.starts_with("pci.") {
            parts.push(format!("id={id}"));
        }
    }
    parts.join(",")
}

fn on_pci_bus(device: &Value) -> bool {
    device
        .get("bus")
        .and_then(Value::as_str)
        .is_some_and(|b| b.starts_with("pci"))
}

fn ours(name: &str) -> Result<Vec<String>, QemuError> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../domain/tests/data/cases")
        .join(format!("{name}.xml"));
    let xml = std::fs::read_to_string(&path).expect("case input");
    let mut domain = oxvirt_domain::parse_domain_xml(&xml).expect("case parses");
    // The network layer gives each network NIC its TAP when the domain starts.
    for (i, nic) in domain.devices.interfaces.iter_mut().enumerate() {
        if nic.interface_type != oxvirt_domain::InterfaceType::User {
            nic.target_dev.get_or_insert(format!("vnet{i}"));
        }
    }
    let args = command_line(&domain, &RunPaths::new("/run/oxvirt/vm"), Accel::Tcg)?;
    let mut devices = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "-device" {
            let value: Value = serde_json::from_str(iter.next().expect("value")).expect("json");
            if on_pci_bus(&value) {
                devices.push(comparable(&value));
            }
        }
    }
    devices.sort();
    Ok(devices)
}

fn libvirt(name: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/pci")
        .join(format!("{name}.libvirt-devices"));
    let text = std::fs::read_to_string(path).expect("reference");
    let mut devices: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| comparable(&serde_json::from_str(l).expect("json")))
        .collect();
    devices.sort();
    devices
}

#[test]
fn pci_devices_sit_where_libvirt_puts_them() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pci");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("tests/data/pci")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".libvirt-devices").map(str::to_string)
        })
        .collect();
    names.sort();
    assert!(names.len() >= 5, "{names:?}");
    let mut failures = Vec::new();
    for name in &names {
        match ours(name) {
            Ok(ours) => {
                let theirs = libvirt(name);
                if ours != theirs {
                    let missing: Vec<_> = theirs.iter().filter(|d| !ours.contains(d)).collect();
                    let extra: Vec<_> = ours.iter().filter(|d| !theirs.contains(d)).collect();
                    failures.push(format!(
                        "{name}:\n  libvirt has, oxvirt not: {missing:#?}\n  oxvirt has, libvirt not: {extra:#?}"
                    ));
                }
            }
            Err(e) => failures.push(format!("{name}: the engine refuses it: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
