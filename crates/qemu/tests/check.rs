//! The define-time check (`oxvirt_qemu::check`): a dry run of the command-line builder, whose
//! refusals name the element and the line it was written on.

use oxvirt_qemu::{build_command_line, check, Accel, QemuError, RunPaths};

fn domain(xml: &str) -> oxvirt_qemu::Domain {
    oxvirt_domain::parse_domain_xml(xml)
        .unwrap_or_else(|err| panic!("test domain must parse: {err}\n{xml}"))
}

/// A pc domain, one element per line; `devices` go inside `<devices>`, from line 8 on.
fn xml(machine: &str, devices: &str) -> String {
    format!(
        "<domain type='kvm'>
  <name>vm1</name>
  <memory unit='MiB'>256</memory>
  <os>
    <type arch='x86_64' machine='{machine}'>hvm</type>
  </os>
  <devices>
{devices}
  </devices>
</domain>
"
    )
}

/// The line `needle` is on.
fn line_of(xml: &str, needle: &str) -> u32 {
    xml.lines()
        .position(|line| line.contains(needle))
        .map(|index| index as u32 + 1)
        .unwrap_or_else(|| panic!("{needle:?} not in the XML"))
}

#[test]
fn a_refused_disk_driver_attribute_is_named_with_its_line() {
    let xml = xml(
        "pc",
        "    <disk type='file' device='disk'>
      <source file='/img/a.raw'/>
      <target dev='vda' bus='virtio'/>
      <driver name='qemu' type='raw' cache='writeback' io='native'/>
    </disk>",
    );
    let line = line_of(&xml, "io='native'");
    let err = check(&domain(&xml)).unwrap_err();
    match &err {
        QemuError::Invalid { element, .. } => {
            assert_eq!(element, "devices/disk[target@dev='vda']/driver@io")
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert_eq!(err.line(), Some(line));
    assert_eq!(
        err.to_string(),
        format!(
            "invalid <devices/disk[target@dev='vda']/driver@io> at line {line}: \
             io='native' needs cache='none' or 'directsync' (O_DIRECT)"
        )
    );
    // With O_DIRECT it is fine.
    check(&domain(&xml.replace("writeback", "none"))).unwrap();
}

#[test]
fn interface_refusals_point_at_the_child_element_that_asks() {
    let xml = xml(
        "pc",
        "    <interface type='user'>
      <model type='e1000'/>
      <driver queues='2'/>
    </interface>
    <interface type='user'>
      <model type='ne2k_pci'/>
    </interface>",
    );
    let err = check(&domain(&xml)).unwrap_err();
    assert!(
        matches!(&err, QemuError::Unsupported { element, .. } if element == "devices/interface[0]/driver@queues"),
        "{err}"
    );
    assert_eq!(err.line(), Some(line_of(&xml, "<driver queues='2'/>")));

    let second = xml.replace("<driver queues='2'/>", "");
    let err = check(&domain(&second)).unwrap_err();
    assert!(
        matches!(&err, QemuError::Unsupported { element, .. } if element == "devices/interface[1]/model@type"),
        "{err}"
    );
    assert_eq!(err.line(), Some(line_of(&second, "ne2k_pci")));
    assert!(
        err.to_string().starts_with(&format!(
            "unsupported <devices/interface[1]/model@type> at line {}: ",
            line_of(&second, "ne2k_pci")
        )),
        "{err}"
    );
}

#[test]
fn an_element_added_by_default_is_named_as_such() {
    // q35 has no IDE bus; the normalizer adds IDE controller 0 for an IDE disk, and the engine
    // refuses that controller, which the definition does not contain.
    let xml = xml(
        "q35",
        "    <disk type='file' device='disk'><source file='/i/a'/><target dev='hda' bus='ide'/></disk>",
    );
    let err = check(&domain(&xml)).unwrap_err();
    assert_eq!(err.line(), None);
    assert_eq!(
        err.to_string(),
        "unsupported <devices/controller[@type='ide'][@index='0']> (added by default): \
         IDE exists only as the pc machine's built-in controller 0"
    );
}

#[test]
fn the_check_refuses_exactly_what_a_start_refuses() {
    let cases = [
        "    <controller type='usb' index='0' model='ehci'/>",
        "    <serial type='pty'/>\n    <serial type='pty'/>",
        "    <console type='pty'><target type='virtio'/></console>",
        "    <video><model type='cirrus' heads='2'/></video>",
        "    <graphics type='vnc'/>\n    <graphics type='vnc'/>",
        "    <disk type='file' device='cdrom'><source file='/i/x.iso'/><target dev='sda' bus='usb'/></disk>",
        "    <interface type='user'><model type='virtio'/><mtu size='1400'/><target dev='tap0'/></interface>",
    ];
    let run = RunPaths::new("/run/oxvirt/vm");
    for devices in cases {
        let d = domain(&xml("pc", devices));
        let at_define = check(&d).expect_err(devices);
        let at_start = build_command_line(&d, &run, Accel::Kvm).expect_err(devices);
        assert_eq!(at_define.to_string(), at_start.to_string(), "{devices}");
        assert!(at_define.line().is_some(), "{at_define}");
    }
    // A vCPU affinity beyond the mask launch applies used to fail only at start.
    let pinned = domain(&xml("pc", "").replace("<memory", "<vcpu cpuset='2000'>1</vcpu><memory"));
    let err = check(&pinned).unwrap_err();
    assert!(err.to_string().contains("<vcpu@cpuset> at line 3"), "{err}");
}

#[test]
fn what_only_a_start_provides_is_not_required_at_define() {
    // No TAP device yet (the network layer makes it at start), a pool volume not resolved yet,
    // files that need not exist on this host, vhost and huge pages the host may lack.
    let d = domain(&xml(
        "pc",
        "    <interface type='network'><source network='default'/><model type='virtio'/><driver name='vhost'/></interface>
    <interface type='bridge'><source bridge='br0'/></interface>
    <disk type='volume' device='disk'><source pool='p' volume='v'/><target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='disk'><source file='/nonexistent/b.qcow2'/><target dev='vdb' bus='virtio'/></disk>",
    ).replace("</os>", "<kernel>/nonexistent/vmlinuz</kernel></os><memoryBacking><hugepages/></memoryBacking>"));
    check(&d).unwrap();
    // A start without them is refused, naming what is missing.
    let run = RunPaths::new("/run/oxvirt/vm");
    let err = build_command_line(&d, &run, Accel::Kvm).unwrap_err();
    assert!(err.to_string().contains("must be resolved"), "{err}");
    let mut resolved = d.clone();
    resolved.devices.disks.remove(0);
    let err = build_command_line(&resolved, &run, Accel::Kvm).unwrap_err();
    assert!(err.to_string().contains("TAP"), "{err}");
}

#[test]
fn the_accelerator_is_the_one_the_domain_type_asks_for() {
    // kvmclock needs KVM: fine for a kvm domain (a host without KVM is a start-time matter),
    // refused for a qemu (TCG) domain wherever it runs.
    let kvmclock = xml("pc", "").replace(
        "<devices>",
        "<clock offset='utc'><timer name='kvmclock' present='yes'/></clock>\n  <devices>",
    );
    check(&domain(&kvmclock)).unwrap();
    let tcg = kvmclock.replace("type='kvm'", "type='qemu'");
    let err = check(&domain(&tcg)).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("unsupported <clock/timer[@name='kvmclock']> at line 7"),
        "{err}"
    );
}

/// What virt-install writes (the `virt-install-*` cases of the domain crate, made by
/// `scripts/virt-install-cases.sh`), and libvirt's `dumpxml` of it: the qemu engine runs every
/// one, on pc and on q35 (virt-install's default), `--boot uefi` included (the firmware is
/// resolved at start; `crate::firmware`).
#[test]
fn virt_install_output_is_accepted() {
    let cases = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../domain/tests/data/cases");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&cases).expect("the domain crate's cases") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        // The input and libvirt's normalized output of it (`.libvirt.xml`) alike.
        if !name.starts_with("virt-install-") || !name.ends_with(".xml") {
            continue;
        }
        let xml = std::fs::read_to_string(&path).expect("case");
        check(&domain(&xml)).unwrap_or_else(|err| panic!("{name}: {err}"));
        checked.push(name);
    }
    assert!(checked.len() >= 30, "{checked:?}");
}
