//! `<oxvirt:engine>`: how a definition picks the native engine, in oxvirt's own XML namespace.

use oxvirt_domain::{parse_domain_xml, Engine, OXVIRT_NAMESPACE};

fn definition(extension: &str) -> String {
    format!(
        "<domain type='kvm' xmlns:oxvirt='{OXVIRT_NAMESPACE}'>\n  <name>micro</name>\n  \
         <memory unit='MiB'>128</memory>\n  <os>\n    <type>hvm</type>\n    \
         <kernel>/boot/vmlinuz</kernel>\n  </os>\n  {extension}\n</domain>\n"
    )
}

#[test]
fn a_plain_libvirt_definition_runs_on_qemu_and_prints_no_oxvirt_namespace() {
    let domain = parse_domain_xml(&definition("")).unwrap();
    assert_eq!(domain.engine, Engine::Qemu);
    let xml = domain.to_xml();
    assert!(!xml.contains("oxvirt"), "{xml}");
}

#[test]
fn the_native_engine_is_chosen_by_an_oxvirt_element_and_survives_a_round_trip() {
    let domain = parse_domain_xml(&definition("<oxvirt:engine name='native'/>")).unwrap();
    assert_eq!(domain.engine, Engine::Native);
    let xml = domain.to_xml();
    assert!(
        xml.starts_with(&format!(
            "<domain type='kvm' xmlns:oxvirt='{OXVIRT_NAMESPACE}'>"
        )),
        "{xml}"
    );
    assert!(
        xml.contains("  <oxvirt:engine name='native'/>\n</domain>"),
        "{xml}"
    );
    assert_eq!(parse_domain_xml(&xml).unwrap(), domain);
}

#[test]
fn the_prefix_is_the_user_s_choice_only_the_namespace_counts() {
    let xml =
        "<domain type='kvm' xmlns:ox='urn:oxvirt:domain:1.0'><name>a</name><memory>131072</memory>\
               <os><type>hvm</type></os><ox:engine name='native'/></domain>";
    assert_eq!(parse_domain_xml(xml).unwrap().engine, Engine::Native);
}

#[test]
fn unknown_engines_and_unknown_oxvirt_elements_are_errors_naming_them() {
    let err = parse_domain_xml(&definition("<oxvirt:engine name='xen'/>"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("'xen'") && err.contains("oxvirt:engine") && err.contains("line 8"),
        "{err}"
    );

    let err = parse_domain_xml(&definition("<oxvirt:turbo/>"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unsupported element <oxvirt:turbo> at line 8"),
        "{err}"
    );

    let err = parse_domain_xml(&definition(
        "<oxvirt:engine name='native'/><oxvirt:engine name='qemu'/>",
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("oxvirt:engine"), "{err}");

    let err = parse_domain_xml(&definition("<oxvirt:engine/>"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("'name'"), "{err}");
}

#[test]
fn oxvirt_elements_are_only_understood_directly_under_domain() {
    let xml = definition("<devices><oxvirt:engine name='native'/></devices>");
    let err = parse_domain_xml(&xml).unwrap_err().to_string();
    assert!(
        err.contains("unsupported element <devices/engine>"),
        "{err}"
    );
}

#[test]
fn other_namespaces_stay_unsupported() {
    let xml =
        "<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'><name>a</name>\
               <memory>131072</memory><os><type>hvm</type></os><qemu:commandline/></domain>";
    let err = parse_domain_xml(xml).unwrap_err().to_string();
    assert!(err.contains("unsupported element"), "{err}");
}
