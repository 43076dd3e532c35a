//! Canonical XML trees for comparing our output with libvirt's.
#![allow(dead_code)]

use std::collections::BTreeMap;

/// A canonical XML element: name, sorted attributes, trimmed text, ordered children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canon {
    pub name: String,
    pub attrs: BTreeMap<String, String>,
    pub text: String,
    pub children: Vec<Canon>,
}

pub fn canon_of(node: oxvirt_xml::roxmltree::Node) -> Canon {
    let mut text = String::new();
    let mut children = Vec::new();
    for child in node.children() {
        if child.is_element() {
            children.push(canon_of(child));
        } else if child.is_text() {
            text.push_str(child.text().unwrap_or(""));
        }
    }
    Canon {
        name: node.tag_name().name().to_string(),
        attrs: node
            .attributes()
            .map(|a| (a.name().to_string(), a.value().to_string()))
            .collect(),
        text: text.trim().to_string(),
        children,
    }
}

/// Parses `xml` into a canonical tree and applies the comparison's exclusions.
///
/// Left out of the comparison, in both trees:
/// - `<interface><mac>` when the input had no MAC: libvirt and oxvirt both generate a
///   random one.
/// - `<disk model='usb-storage'>` (the `model` attribute of a disk): libvirt fills it for
///   USB disks; oxvirt does not model disk models.
pub fn canonical(xml: &str, input_had_mac: &[bool]) -> Canon {
    let doc = oxvirt_xml::roxmltree::Document::parse(xml).expect("reference XML parses");
    let mut root = canon_of(doc.root_element());
    if let Some(devices) = root.children.iter_mut().find(|c| c.name == "devices") {
        let mut nic = 0;
        for dev in devices.children.iter_mut() {
            if dev.name == "interface" {
                if !input_had_mac.get(nic).copied().unwrap_or(true) {
                    dev.children.retain(|c| c.name != "mac");
                }
                nic += 1;
            }
            if dev.name == "disk" {
                dev.attrs.remove("model");
            }
        }
    }
    root
}

/// First difference between two trees, as a readable path.
pub fn first_difference(ours: &Canon, theirs: &Canon, path: &str) -> Option<String> {
    let here = format!("{path}/{}", theirs.name);
    if ours.name != theirs.name {
        return Some(format!(
            "{path}: ours <{}> vs libvirt <{}>",
            ours.name, theirs.name
        ));
    }
    if ours.attrs != theirs.attrs {
        return Some(format!(
            "{here}: attributes ours {:?} vs libvirt {:?}",
            ours.attrs, theirs.attrs
        ));
    }
    if ours.text != theirs.text {
        return Some(format!(
            "{here}: text ours {:?} vs libvirt {:?}",
            ours.text, theirs.text
        ));
    }
    for (i, (a, b)) in ours.children.iter().zip(&theirs.children).enumerate() {
        if let Some(d) = first_difference(a, b, &format!("{here}[{i}]")) {
            return Some(d);
        }
    }
    if ours.children.len() != theirs.children.len() {
        let names = |c: &Canon| {
            c.children
                .iter()
                .map(|c| c.name.clone())
                .collect::<Vec<_>>()
        };
        return Some(format!(
            "{here}: children ours {:?} vs libvirt {:?}",
            names(ours),
            names(theirs)
        ));
    }
    None
}

/// Whether each `<interface>` of the input has a `<mac>`.
pub fn input_macs(xml: &str) -> Vec<bool> {
    let Ok(doc) = oxvirt_xml::roxmltree::Document::parse(xml) else {
        return Vec::new();
    };
    doc.descendants()
        .filter(|n| {
            n.has_tag_name("interface") && n.parent().is_some_and(|p| p.has_tag_name("devices"))
        })
        .map(|n| n.children().any(|c| c.has_tag_name("mac")))
        .collect()
}

/// Removes, in a tree printed by oxvirt or by libvirt 9.0 (`virsh dumpxml`), what only differs because
/// that libvirt ran on a real host (docs/xml-support.md, "Not reproduced"):
/// - `<uuid>`: random on both sides when the input had none (pass `input_had_uuid`);
/// - `machine`: libvirt expands the alias `pc`/`q35` to the installed QEMU's versioned machine
///   (`pc-i440fx-7.2`); oxvirt keeps the alias (it does not know the QEMU version);
/// - USB addresses and the `<hub>` libvirt adds when the UHCI controller runs out of ports:
///   oxvirt assigns no USB addresses (libvirt's own test suite output has none either);
/// - `clusters` on `<topology>`: libvirt 9.0 predates it; newer libvirt prints it.
pub fn strip_libvirt9_only_except_uuid(tree: &mut Canon, input_had_uuid: bool) {
    if !input_had_uuid {
        tree.children.retain(|c| c.name != "uuid");
    }
    for child in &mut tree.children {
        match child.name.as_str() {
            "os" => {
                for t in child.children.iter_mut().filter(|t| t.name == "type") {
                    if let Some(machine) = t.attrs.get_mut("machine") {
                        if machine.starts_with("pc-i440fx-") {
                            *machine = "pc".to_string();
                        } else if machine.starts_with("pc-q35-") {
                            *machine = "q35".to_string();
                        }
                    }
                }
            }
            "cpu" => {
                for t in child.children.iter_mut().filter(|t| t.name == "topology") {
                    t.attrs.remove("clusters");
                }
            }
            "devices" => {
                child.children.retain(|d| d.name != "hub");
                for device in &mut child.children {
                    device.children.retain(|a| {
                        !(a.name == "address"
                            && a.attrs.get("type").map(String::as_str) == Some("usb"))
                    });
                }
            }
            _ => {}
        }
    }
}

/// [`strip_libvirt9_only_except_uuid`] for inputs without a `<uuid>` (both sides random).
pub fn strip_libvirt9_only(tree: &mut Canon) {
    strip_libvirt9_only_except_uuid(tree, false);
}

/// Whether the input has a `<uuid>` directly under `<domain>`.
pub fn input_has_uuid(xml: &str) -> bool {
    oxvirt_xml::roxmltree::Document::parse(xml).is_ok_and(|doc| {
        doc.root_element()
            .children()
            .any(|c| c.has_tag_name("uuid"))
    })
}

/// libvirt's own qemuxmlconf test data (LGPL-2.1-or-later test files from libvirt's
/// `tests/qemuxmlconfdata`, see INDEX.md there), which `scripts/conformance.sh` compares against:
/// `$OXVIRT_LIBVIRT_CORPUS`, else `../shared/conformance/libvirt-qemuxmlconf` beside the
/// repository. Panics, saying where it comes from, when it is not there.
pub fn libvirt_corpus() -> std::path::PathBuf {
    let dir = std::env::var_os("OXVIRT_LIBVIRT_CORPUS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../../shared/conformance/libvirt-qemuxmlconf")
        });
    assert!(
        dir.join("INDEX.md").is_file(),
        "libvirt's qemuxmlconf corpus is missing at {}: it is the project's shared folder \
         (shared/conformance/libvirt-qemuxmlconf beside the repository, as CI lays it out), files \
         copied from libvirt's tests/qemuxmlconfdata; put it there or set OXVIRT_LIBVIRT_CORPUS",
        dir.display()
    );
    dir
}
