//! Conformance against libvirt's own qemuxmlconf test data (libvirt's LGPL-2.1-or-later test
//! files, kept outside the repository in `../shared/conformance/libvirt-qemuxmlconf`, see its
//! INDEX.md). Not part of a plain `cargo test`: `scripts/conformance.sh` runs it (`--ignored`),
//! and fails when the corpus is missing. The project's own cases, compared with a real libvirt,
//! are `tests/cases.rs`.
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

use std::fs;
use std::path::PathBuf;

use oxvirt_domain::{parse_domain_xml, DomainError};

mod common;
use common::{canonical, first_difference, input_macs, libvirt_corpus};

/// Published counts (docs/xml-support.md). Raise them when support grows.
const MIN_PARSED_AND_EQUAL: usize = 20;
const MIN_PARSED_NO_REFERENCE: usize = 8;
const MIN_ERROR_EXPECTED_AND_GOT: usize = 5;

#[test]
#[ignore = "needs libvirt's qemuxmlconf corpus: run scripts/conformance.sh"]
fn libvirt_qemuxmlconf_conformance() {
    let dir = libvirt_corpus();
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

/// The comparison itself: insensitive to attribute order, quoting and indentation;
/// sensitive to values, text and element order.
#[test]
fn canonical_comparison_detects_differences() {
    let a = "<domain type='qemu'><memory unit='KiB'>1</memory><vcpu a='1' b='2'>1</vcpu></domain>";
    let same = "<domain type=\"qemu\">\n  <memory unit=\"KiB\"> 1 </memory>\n  <vcpu b='2' a='1'>1</vcpu>\n</domain>";
    let value =
        "<domain type='qemu'><memory unit='KiB'>2</memory><vcpu a='1' b='2'>1</vcpu></domain>";
    let attr =
        "<domain type='qemu'><memory unit='KiB'>1</memory><vcpu a='1' b='3'>1</vcpu></domain>";
    let order =
        "<domain type='qemu'><vcpu a='1' b='2'>1</vcpu><memory unit='KiB'>1</memory></domain>";
    let extra =
        "<domain type='qemu'><memory unit='KiB'>1</memory><vcpu a='1' b='2'>1</vcpu><x/></domain>";
    let base = canonical(a, &[]);
    assert_eq!(first_difference(&canonical(same, &[]), &base, ""), None);
    for other in [value, attr, order, extra] {
        assert!(
            first_difference(&canonical(other, &[]), &base, "").is_some(),
            "{other}"
        );
    }
}
