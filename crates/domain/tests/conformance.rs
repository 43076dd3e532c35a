//! Conformance against libvirt's own qemuxmlconf test data
//! (`/work/shared/conformance/libvirt-qemuxmlconf`, see its INDEX.md).
//!
//! For every `NAME.xml` input:
//! - a `NAME.x86_64-latest.err` case must be rejected;
//! - otherwise the input must either parse, or be rejected with an error (unsupported
//!   element/attribute/value, or a validation error), never panic;
//! - if it parses and there is a `NAME.x86_64-latest.xml` (libvirt's normalized output),
//!   our `to_xml()` must equal it, compared as trees (see `canonical` for what the
//!   comparison leaves out, also listed in docs/xml-support.md);
//! - anything parsed must round-trip: `parse(to_xml(d)) == d`.
//!
//! The counts printed at the end must not fall below the published ones.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use oxvirt_domain::{parse_domain_xml, DomainError};

/// Published counts (docs/xml-support.md). Raise them when support grows.
const MIN_PARSED_AND_EQUAL: usize = 0;
const MIN_PARSED_NO_REFERENCE: usize = 0;
const MIN_ERROR_EXPECTED_AND_GOT: usize = 5;

fn conformance_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/libvirt-qemuxmlconf")
}

/// A canonical XML element: name, sorted attributes, trimmed text, ordered children.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Canon {
    name: String,
    attrs: BTreeMap<String, String>,
    text: String,
    children: Vec<Canon>,
}

fn canon_of(node: roxmltree::Node) -> Canon {
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
fn canonical(xml: &str, input_had_mac: &[bool]) -> Canon {
    let doc = roxmltree::Document::parse(xml).expect("reference XML parses");
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
fn first_difference(ours: &Canon, theirs: &Canon, path: &str) -> Option<String> {
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
fn input_macs(xml: &str) -> Vec<bool> {
    let Ok(doc) = roxmltree::Document::parse(xml) else {
        return Vec::new();
    };
    doc.descendants()
        .filter(|n| {
            n.has_tag_name("interface") && n.parent().is_some_and(|p| p.has_tag_name("devices"))
        })
        .map(|n| n.children().any(|c| c.has_tag_name("mac")))
        .collect()
}

#[test]
fn libvirt_qemuxmlconf_conformance() {
    let dir = conformance_dir();
    assert!(
        dir.join("INDEX.md").is_file(),
        "conformance data missing at {} (expected /work/shared/conformance/libvirt-qemuxmlconf)",
        dir.display()
    );
    let mut inputs: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("read conformance dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.ends_with(".xml") && !name.contains(".x86_64-latest")
        })
        .collect();
    inputs.sort();
    assert!(
        inputs.len() >= 50,
        "expected the 50+ cases of INDEX.md, found {}",
        inputs.len()
    );

    let mut parsed_and_equal = Vec::new();
    let mut parsed_no_reference = Vec::new();
    let mut rejected_unsupported = Vec::new();
    let mut rejected_validation = Vec::new();
    let mut error_expected_and_got = Vec::new();
    let mut failures = Vec::new();

    for input in &inputs {
        let name = input
            .file_stem()
            .and_then(|n| n.to_str())
            .unwrap_or("?")
            .to_string();
        let xml = fs::read_to_string(input).expect("read input");
        let err_file = dir.join(format!("{name}.x86_64-latest.err"));
        let latest_file = dir.join(format!("{name}.x86_64-latest.xml"));
        let result = std::panic::catch_unwind(|| parse_domain_xml(&xml));
        let result = match result {
            Ok(r) => r,
            Err(_) => {
                failures.push(format!("{name}: parse_domain_xml panicked"));
                continue;
            }
        };
        if err_file.exists() {
            match result {
                Err(e) => error_expected_and_got.push(format!("{name}: {e}")),
                Ok(_) => failures.push(format!(
                    "{name}: libvirt rejects this input, we accepted it"
                )),
            }
            continue;
        }
        let domain = match result {
            Ok(d) => d,
            Err(e) => {
                let unsupported =
                    e.is_unsupported() || matches!(e, DomainError::InvalidEnumValue { .. });
                if unsupported {
                    rejected_unsupported.push(format!("{name}: {e}"));
                } else {
                    rejected_validation.push(format!("{name}: {e}"));
                }
                continue;
            }
        };
        let ours = domain.to_xml();
        match parse_domain_xml(&ours) {
            Ok(again) if again == domain => {}
            Ok(_) => failures.push(format!("{name}: parse(to_xml(d)) != d\n{ours}")),
            Err(e) => failures.push(format!(
                "{name}: our own output does not parse: {e}\n{ours}"
            )),
        }
        if !latest_file.exists() {
            parsed_no_reference.push(name);
            continue;
        }
        let mut reference = fs::read_to_string(&latest_file).expect("read latest");
        if reference.trim() == format!("{name}.xml") {
            // Upstream symlink to the input: libvirt's output equals its input.
            reference = xml.clone();
        }
        let macs = input_macs(&xml);
        let theirs = canonical(&reference, &macs);
        let mine = canonical(&ours, &macs);
        match first_difference(&mine, &theirs, "") {
            None => parsed_and_equal.push(name),
            Some(d) => failures.push(format!(
                "{name}: differs from libvirt at {d}\n--- ours:\n{ours}"
            )),
        }
    }

    println!("parsed and equal to libvirt ({}):", parsed_and_equal.len());
    for n in &parsed_and_equal {
        println!("  {n}");
    }
    println!(
        "parsed, no libvirt reference output ({}):",
        parsed_no_reference.len()
    );
    for n in &parsed_no_reference {
        println!("  {n}");
    }
    println!("rejected as unsupported ({}):", rejected_unsupported.len());
    for n in &rejected_unsupported {
        println!("  {n}");
    }
    println!("rejected by validation ({}):", rejected_validation.len());
    for n in &rejected_validation {
        println!("  {n}");
    }
    println!("error expected and got ({}):", error_expected_and_got.len());
    for n in &error_expected_and_got {
        println!("  {n}");
    }
    println!(
        "SUMMARY: {} cases: parsed-and-equal {} / parsed-no-reference {} / rejected-as-unsupported {} / rejected-by-validation {} / error-expected-and-got {} / failures {}",
        inputs.len(),
        parsed_and_equal.len(),
        parsed_no_reference.len(),
        rejected_unsupported.len(),
        rejected_validation.len(),
        error_expected_and_got.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "conformance failures:\n{}",
        failures.join("\n\n")
    );
    assert!(
        parsed_and_equal.len() >= MIN_PARSED_AND_EQUAL,
        "parsed-and-equal fell below {MIN_PARSED_AND_EQUAL}"
    );
    assert!(
        parsed_no_reference.len() >= MIN_PARSED_NO_REFERENCE,
        "parsed-no-reference fell below {MIN_PARSED_NO_REFERENCE}"
    );
    assert!(
        error_expected_and_got.len() >= MIN_ERROR_EXPECTED_AND_GOT,
        "error-expected-and-got fell below {MIN_ERROR_EXPECTED_AND_GOT}"
    );
}
