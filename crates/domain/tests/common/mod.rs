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
