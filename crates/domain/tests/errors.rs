//! Each error kind: what the message says and which line it points at.

use oxvirt_domain::{parse_domain_xml, DomainError};

mod common;

/// A small valid definition; `{EXTRA_TOP}` and `{EXTRA_DEV}` are replaced by tests.
/// Line numbers: `<domain>` is line 1; text put at EXTRA_TOP starts line 8, at EXTRA_DEV line 11.
const BASE: &str = "<domain type='qemu'>
  <name>t</name>
  <memory unit='MiB'>256</memory>
  <vcpu>2</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
  </os>{EXTRA_TOP}
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>{EXTRA_DEV}
      <source file='/var/lib/oxvirt/t.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
  </devices>
</domain>
";

fn with(top: &str, dev: &str) -> String {
    BASE.replace("{EXTRA_TOP}", top).replace("{EXTRA_DEV}", dev)
}

fn err(xml: &str) -> DomainError {
    match parse_domain_xml(xml) {
        Ok(d) => panic!("expected an error, parsed:\n{}", d.to_xml()),
        Err(e) => e,
    }
}

fn assert_msg(e: &DomainError, parts: &[&str]) {
    let msg = e.to_string();
    for part in parts {
        assert!(msg.contains(part), "message {msg:?} lacks {part:?}");
    }
}

#[test]
fn base_parses_and_fills_defaults() {
    let d = parse_domain_xml(&with("", "")).unwrap();
    assert_eq!(d.memory_kib, 256 * 1024);
    assert_eq!(d.current_memory_kib, 256 * 1024);
    assert!(!d.uuid.is_nil());
    let xml = d.to_xml();
    assert!(xml.contains("<memory unit='KiB'>262144</memory>"), "{xml}");
    assert!(xml.contains("<vcpu placement='static'>2</vcpu>"), "{xml}");
    assert!(xml.contains("<driver name='qemu' type='qcow2'/>"), "{xml}");
    assert!(
        xml.contains("<model fallback='forbid'>qemu64</model>"),
        "{xml}"
    );
    assert!(xml.contains("<on_crash>destroy</on_crash>"), "{xml}");
    assert!(
        xml.contains("<address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0'/>"),
        "{xml}"
    );
}

#[test]
fn unsupported_element_names_path_and_line() {
    let e = err(&with("", "\n      <hostdev/>"));
    assert!(matches!(e, DomainError::UnsupportedElement { .. }), "{e:?}");
    assert_msg(
        &e,
        &["unsupported element <devices/disk/hostdev> at line 11"],
    );
    assert_eq!(e.line(), Some(11));
    assert!(e.is_unsupported());

    let e = err(&with("\n  <seclabel type='none'/>", ""));
    assert_msg(&e, &["unsupported element <seclabel> at line 8"]);

    let xml = with("", "").replace("  </devices>", "    <smartcard mode='host'/>\n  </devices>");
    let e = err(&xml);
    assert_msg(&e, &["unsupported element <devices/smartcard> at line 14"]);
}

#[test]
fn unsupported_attribute_names_it() {
    let e = err(&with("", "").replace("type='qcow2'", "type='qcow2' foo='bar'"));
    assert!(
        matches!(e, DomainError::UnsupportedAttribute { .. }),
        "{e:?}"
    );
    assert_msg(
        &e,
        &["unsupported attribute 'foo' on <devices/disk/driver> at line 10"],
    );

    let e = err(&with("", "").replace("<domain type='qemu'>", "<domain type='qemu' ids='3'>"));
    assert_msg(&e, &["unsupported attribute 'ids' on <domain> at line 1"]);
}

#[test]
fn malformed_xml_has_line_and_column() {
    let e = err("<domain type='qemu'>\n  <name>t</name>\n  <memory>1</memry>\n</domain>");
    match &e {
        DomainError::MalformedXml { line, column, .. } => {
            assert_eq!(*line, 3);
            assert!(*column > 1, "{e}");
        }
        other => panic!("expected MalformedXml, got {other:?}"),
    }
    assert_msg(&e, &["malformed XML at line 3, column"]);
    assert!(matches!(err(""), DomainError::MalformedXml { .. }));
    assert!(matches!(err("\u{0}"), DomainError::MalformedXml { .. }));
}

#[test]
fn enum_value_lists_allowed_values() {
    let e = err(&with("", "").replace("type='qcow2'", "type='vmdk'"));
    assert!(matches!(e, DomainError::InvalidEnumValue { .. }), "{e:?}");
    assert_msg(
        &e,
        &[
            "'vmdk'",
            "attribute 'type'",
            "<devices/disk/driver> at line 10",
            "raw, qcow2",
        ],
    );

    let e = err(&with("\n  <on_crash>explode</on_crash>", ""));
    assert_msg(
        &e,
        &["'explode'", "<on_crash> at line 8", "coredump-restart"],
    );

    let e = err(&with("", "").replace("<domain type='qemu'>", "<domain type='xen'>"));
    assert_msg(&e, &["'xen'", "kvm, qemu"]);
}

#[test]
fn bad_values_and_units() {
    let e = err(&with("", "").replace("unit='MiB'>256", "unit='MiB'>lots"));
    assert!(matches!(e, DomainError::InvalidValue { .. }), "{e:?}");
    assert_msg(&e, &["'lots", "<memory> at line 3"]);

    let e = err(&with("", "").replace("unit='MiB'>256", "unit='E'>9000"));
    assert_msg(&e, &["overflow", "line 3"]);

    let e = err(&with("", "").replace("unit='MiB'", "unit='furlongs'"));
    assert_msg(&e, &["'furlongs'", "attribute 'unit'", "GiB"]);

    let e = err(&with("", "").replace("<vcpu>2</vcpu>", "<vcpu cpuset='1-4,^x'>2</vcpu>"));
    assert_msg(&e, &["cpuset", "'1-4,^x'", "<vcpu> at line 4"]);
}

#[test]
fn missing_required_parts() {
    let e = err(&with("", "").replace("  <memory unit='MiB'>256</memory>\n", ""));
    assert!(matches!(e, DomainError::Missing { .. }), "{e:?}");
    assert_msg(&e, &["missing element <memory>", "<domain> at line 1"]);

    let e =
        err(&with("", "").replace("<target dev='vda' bus='virtio'/>", "<target bus='virtio'/>"));
    assert_msg(
        &e,
        &[
            "missing attribute 'dev'",
            "<devices/disk/target> at line 12",
        ],
    );
}

#[test]
fn duplicates_and_stray_text() {
    let e = err(&with("\n  <name>again</name>", ""));
    assert!(matches!(e, DomainError::Duplicate { .. }), "{e:?}");
    assert_msg(&e, &["duplicate element <name> at line 8"]);

    let e = err(&with("\n  stray words", ""));
    assert!(matches!(e, DomainError::UnexpectedText { .. }), "{e:?}");
    assert_msg(&e, &["unexpected text 'stray words'", "<domain>"]);
}

#[test]
fn validation_errors() {
    let e = err(&with(
        "\n  <cpu><topology sockets='1' cores='3' threads='1'/></cpu>",
        "",
    ));
    assert!(matches!(e, DomainError::Invalid { .. }), "{e:?}");
    assert_msg(
        &e,
        &["cpu/topology", "does not equal the maximum vCPU count 2"],
    );

    let e = err(&with("", "").replace("<vcpu>2</vcpu>", "<vcpu current='3'>2</vcpu>"));
    assert_msg(&e, &["current vCPUs 3"]);

    let e = err(&with("", "").replace("<name>t</name>", "<name>../etc</name>"));
    assert!(matches!(e, DomainError::InvalidName { .. }), "{e:?}");
    assert_msg(
        &e,
        &["invalid domain name '../etc' in <name> at line 2", "'/'"],
    );

    let e =
        err(&with("", "\n      <boot order='1'/>").replace("</os>", "  <boot dev='hd'/>\n  </os>"));
    assert_msg(&e, &["per-device <boot order>"]);

    let e = err(&with("", "").replace("type='qcow2'", "type='qcow2' iothread='1'"));
    assert_msg(&e, &["IOThread 1", "has 0"]);

    let e = err(&with("\n  <on_reboot>coredump-destroy</on_reboot>", ""));
    assert_msg(&e, &["only valid for on_crash"]);
}

#[test]
fn hostile_inputs_do_not_panic() {
    let deep = "<a>".repeat(10_000) + &"</a>".repeat(10_000);
    let inputs = [
        deep.as_str(),
        "<!DOCTYPE d [<!ENTITY x 'y'>]><domain type='kvm'/>",
        "<domain type='kvm'><name>\u{202e}</name></domain>",
        "<domain type='kvm'><memory unit='KiB'>18446744073709551615</memory></domain>",
        "<domain xmlns='urn:x' type='kvm'/>",
        "<domain type='kvm'><q:x xmlns:q='urn:q'/></domain>",
    ];
    for input in inputs {
        let _ = parse_domain_xml(input);
    }
}

/// Just over each XML limit: the error names the limit, whatever the rest of the document.
#[test]
fn inputs_just_over_each_xml_limit_are_refused() {
    use oxvirt_xml::{Limit, Limits};
    let limits = Limits::DEFAULT;
    let limit_of = |xml: &str| match parse_domain_xml(xml) {
        Err(DomainError::Limit(e)) => Some((e.limit, e.max)),
        other => panic!("expected a limit error, got {other:?}"),
    };
    let base = with("", "");
    // Size: padding in a comment, one byte over.
    let pad = limits.max_bytes + 1 - base.len() - "<!---->".len();
    let big = format!("{base}<!--{}-->", "x".repeat(pad));
    assert_eq!(big.len(), limits.max_bytes + 1);
    assert_eq!(limit_of(&big), Some((Limit::Size, 4 << 20)));
    // Depth: the domain is level 1, so 64 more levels inside <description> make 65.
    let nest = "<x>".repeat(64) + &"</x>".repeat(64);
    let e = err(&with(&format!("\n  <description>{nest}</description>"), ""));
    assert!(
        matches!(&e, DomainError::Limit(l) if l.limit == Limit::Depth && l.line == Some(8)),
        "{e:?}"
    );
    assert_msg(&e, &["nesting depth limit", "64", "line 8"]);
    // Attributes: 65 on the <driver> element.
    let attrs: String = (0..65).map(|n| format!(" a{n}='x'")).collect();
    let e = err(&with("", "").replace(
        "<driver name='qemu'",
        &format!("<driver name='qemu'{attrs}"),
    ));
    assert_msg(
        &e,
        &["attribute limit", "more than 64 attributes", "line 10"],
    );
    // Nodes: comments count.
    let comments = "<!---->".repeat(limits.max_nodes);
    assert_eq!(
        limit_of(&with(&comments, "")),
        Some((Limit::Nodes, 200_000))
    );
    // Namespace declarations.
    let declarations = "<x xmlns:q='urn:q'/>".repeat(limits.max_namespaces + 1);
    assert_eq!(
        limit_of(&with(&format!("<metadata>{declarations}</metadata>"), "")),
        Some((Limit::Namespaces, 64))
    );
}

/// Parses every truncation (every 5th byte) of every `.xml` in `dirs`: Ok or an error, never a
/// panic, and whatever parses round-trips. Returns how many truncations were checked.
fn truncations_never_panic(dirs: &[std::path::PathBuf]) -> usize {
    let mut checked = 0;
    for dir in dirs {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("entry").path();
            if path.extension().and_then(|e| e.to_str()) != Some("xml") {
                continue;
            }
            let xml = std::fs::read_to_string(&path).expect("read");
            for cut in (0..xml.len())
                .step_by(5)
                .filter(|i| xml.is_char_boundary(*i))
            {
                if let Ok(d) = parse_domain_xml(&xml[..cut]) {
                    assert_eq!(parse_domain_xml(&d.to_xml()).as_ref(), Ok(&d));
                }
                checked += 1;
            }
        }
    }
    checked
}

/// Every truncation of the project's own cases (inputs and libvirt's outputs) and examples gives Ok
/// or an error, never a panic, and whatever parses round-trips.
#[test]
fn truncated_inputs_never_panic() {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let checked = truncations_never_panic(&[
        manifest.join("tests/data/cases"),
        manifest.join("../../examples"),
    ]);
    assert!(checked > 10_000, "only {checked} truncations checked");
}

/// The same over libvirt's own test inputs (scripts/conformance.sh runs it; it needs the corpus
/// at ../shared/conformance/libvirt-qemuxmlconf or $OXVIRT_LIBVIRT_CORPUS).
#[test]
#[ignore = "needs libvirt's qemuxmlconf corpus: run scripts/conformance.sh"]
fn truncated_libvirt_inputs_never_panic() {
    let checked = truncations_never_panic(&[common::libvirt_corpus()]);
    assert!(checked > 1000, "only {checked} truncations checked");
}

#[test]
fn domain_new_builds_a_normalized_domain() {
    let d = oxvirt_domain::Domain::new(oxvirt_domain::DomainType::Qemu, "built", 512 * 1024, 2)
        .unwrap();
    assert_eq!(d.os.machine, "pc");
    assert_eq!(d.current_memory_kib, 512 * 1024);
    assert_eq!(parse_domain_xml(&d.to_xml()), Ok(d.clone()));
    let e = oxvirt_domain::Domain::new(oxvirt_domain::DomainType::Qemu, "bad/name", 1024, 1)
        .unwrap_err();
    assert!(matches!(e, DomainError::InvalidName { .. }), "{e:?}");
    let e =
        oxvirt_domain::Domain::new(oxvirt_domain::DomainType::Qemu, "zero", 1024, 0).unwrap_err();
    assert_msg(&e, &["vCPU count 0"]);
}

#[test]
fn vcpus_states_are_checked_as_libvirt_checks_them() {
    let slots = |inner: &str| with(&format!("\n  <vcpus>{inner}</vcpus>"), "");
    let e = err(&slots("<vcpu id='2' enabled='yes'/>"));
    assert_msg(
        &e,
        &[
            "vcpus/vcpu",
            "vcpu id '2' is out of range of maximum vcpu count",
        ],
    );
    let e = err(&slots("<vcpu id='0' enabled='no'/>"));
    assert_msg(&e, &["vcpu 0 can't be offline"]);
    let e = err(&slots("<vcpu id='0' enabled='yes' hotpluggable='yes'/>"));
    assert_msg(&e, &["vcpu0 can't be hotpluggable"]);
    let e = err(&slots(
        "<vcpu id='0' enabled='yes'/><vcpu id='0' enabled='yes'/>",
    ));
    assert_msg(&e, &["duplicate", "line 8"]);
    let e = err(&slots("<vcpu id='1'/>"));
    assert_msg(&e, &["attribute 'enabled'", "line 8"]);
    // Those left out are offline; the enabled ones make `current`.
    let d = parse_domain_xml(&slots(
        "<vcpu id='0' enabled='yes' hotpluggable='no' order='1'/>",
    ))
    .unwrap();
    assert_eq!(d.vcpu.current, Some(1));
    let xml = d.to_xml();
    assert!(
        xml.contains(
            "<vcpu placement='static' current='1'>2</vcpu>\n  <vcpus>\n    \
             <vcpu id='0' enabled='yes' hotpluggable='no' order='1'/>\n    \
             <vcpu id='1' enabled='no'/>\n  </vcpus>"
        ),
        "{xml}"
    );
}
