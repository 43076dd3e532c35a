//! Source lines in the model: the parser records where each element an engine may refuse was
//! written, elements the normalizer adds have none, and lines are not part of the domain's
//! value (equality, hashing, `to_xml` ignore them).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use oxvirt_domain::*;

/// A definition spread over many lines, with blank lines and a comment so that its lines and
/// those of its own `to_xml` differ.
const XML: &str = "<domain type='kvm'>
  <name>lines</name>

  <memory unit='MiB'>256</memory>
  <currentMemory unit='MiB'>128</currentMemory>
  <vcpu placement='static'>2</vcpu>
  <iothreads>1</iothreads>
  <iothreadids>
    <iothread id='3'/>
  </iothreadids>
  <cputune>
    <iothreadpin iothread='3' cpuset='0'/>
  </cputune>
  <!-- a comment moves everything below down by one -->
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>/k/vmlinuz</kernel>
    <cmdline>console=ttyS0</cmdline>
    <boot dev='network'/>
    <boot dev='hd'/>
  </os>
  <features><acpi/></features>
  <cpu mode='custom'>
    <model>Haswell</model>
    <topology sockets='1' cores='2' threads='1'/>
    <feature policy='disable' name='pcid'/>
  </cpu>
  <clock offset='utc'>
    <timer name='rtc' tickpolicy='catchup'/>
  </clock>
  <on_crash>restart</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw' cache='writeback' io='native'/>
      <source file='/img/a.raw'/>
      <target dev='vda' bus='virtio'/>
      <iotune><total_iops_sec>50</total_iops_sec></iotune>
      <serial>S1</serial>
      <address type='pci' domain='0' bus='0' slot='7' function='0'/>
    </disk>
    <controller type='scsi' index='0' model='virtio-scsi'>
      <driver queues='2'/>
    </controller>
    <interface type='bridge'>
      <source bridge='br0'/>
      <model type='virtio'/>
      <driver name='vhost' queues='2'/>
      <mtu size='1400'/>
    </interface>
    <serial type='pty'>
      <target port='0'/>
    </serial>
    <graphics type='vnc'/>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
  </devices>
</domain>
";

/// The (1-based) line of the first line of `xml` containing `needle`.
fn line_of(xml: &str, needle: &str) -> Option<u32> {
    let index = xml
        .lines()
        .position(|line| line.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} is not in the XML"));
    Some(index as u32 + 1)
}

#[test]
fn the_parser_records_the_line_of_each_element() {
    let d = parse_domain_xml(XML).expect("parses");
    let at = |needle| line_of(XML, needle);
    assert_eq!(d.line.get(), at("<domain type="));
    assert_eq!(d.memory_line.get(), at("<memory "));
    assert_eq!(d.current_memory_line.get(), at("<currentMemory"));
    assert_eq!(d.vcpu.line.get(), at("<vcpu"));
    assert_eq!(d.iothreads_line.get(), at("<iothreads>"));
    assert_eq!(d.iothreadids_line.get(), at("<iothreadids>"));
    assert_eq!(d.iothreads.ids, [3]);
    let tune = d.cputune.as_ref().expect("cputune");
    assert_eq!(tune.iothreadpins[0].line.get(), at("<iothreadpin"));
    // A pin naming an IOThread the domain lacks: the error points at the pin's line.
    let wrong = XML.replace("iothread='3'", "iothread='4'");
    let err = parse_domain_xml(&wrong).expect_err("IOThread 4 does not exist");
    assert_eq!(
        err.to_string(),
        format!(
            "invalid definition at <cputune/iothreadpin> at line {}: iothreadpin for IOThread 4 but the domain has 1 IOThreads (ids: 3)",
            at("<iothreadpin").unwrap()
        )
    );
    assert_eq!(d.on_crash_line.get(), at("<on_crash>"));
    assert_eq!(d.on_poweroff_line.get(), None, "not written");

    assert_eq!(d.os.line.get(), at("<os>"));
    assert_eq!(d.os.type_line.get(), at("<type arch"));
    assert_eq!(d.os.kernel_line.get(), at("<kernel>"));
    assert_eq!(d.os.cmdline_line.get(), at("<cmdline>"));
    assert_eq!(d.os.initrd_line.get(), None);
    assert_eq!(d.os.boot_lines.get(0).get(), at("<boot dev='network'"));
    assert_eq!(d.os.boot_lines.get(1).get(), at("<boot dev='hd'"));
    assert_eq!(d.os.boot_lines.get(2).get(), None, "past the end");
    assert_eq!(d.features.line.get(), at("<features>"));

    let cpu = d.cpu.as_ref().expect("a cpu");
    assert_eq!(cpu.line.get(), at("<cpu mode"));
    assert_eq!(cpu.model.as_ref().unwrap().line.get(), at("<model>Haswell"));
    assert_eq!(cpu.topology.unwrap().line.get(), at("<topology"));
    assert_eq!(cpu.features[0].line.get(), at("<feature policy"));
    assert_eq!(d.clock.line.get(), at("<clock"));
    assert_eq!(d.clock.timers[0].line.get(), at("<timer name='rtc'"));

    let disk = &d.devices.disks[0];
    assert_eq!(disk.line.get(), at("<disk type="));
    assert_eq!(disk.driver.line.get(), at("io='native'"));
    assert_eq!(disk.source_line.get(), at("<source file="));
    assert_eq!(disk.target.line.get(), at("<target dev='vda'"));
    assert_eq!(disk.serial_line.get(), at("<serial>S1"));
    assert_eq!(disk.shareable_line.get(), None);
    assert_eq!(disk.iotune_line.get(), at("<iotune>"));
    assert_eq!(
        disk.address.as_ref().unwrap().line().get(),
        at("slot='7'"),
        "a written address keeps its line"
    );

    let scsi = d
        .devices
        .controllers
        .iter()
        .find(|c| c.controller_type == ControllerType::Scsi)
        .unwrap();
    assert_eq!(scsi.line.get(), at("<controller type='scsi'"));
    assert_eq!(scsi.driver_line.get(), at("<driver queues='2'/>"));

    let nic = &d.devices.interfaces[0];
    assert_eq!(nic.line.get(), at("<interface type='bridge'>"));
    assert_eq!(nic.model_line.get(), at("<model type='virtio'/>"));
    assert_eq!(nic.driver_line.get(), at("<driver name='vhost'"));
    assert_eq!(nic.mtu_line.get(), at("<mtu"));
    assert_eq!(nic.target_line.get(), None);

    let serial = &d.devices.serials[0];
    assert_eq!(serial.line.get(), at("<serial type='pty'>"));
    assert_eq!(serial.target.line.get(), at("<target port='0'/>"));
    assert_eq!(d.devices.graphics[0].line.get(), at("<graphics"));
    assert_eq!(d.devices.rngs[0].line.get(), at("<rng"));
}

#[test]
fn what_the_normalizer_adds_has_no_line_and_what_it_derives_keeps_its_origin() {
    let d = parse_domain_xml(XML).expect("parses");
    let at = |needle| line_of(XML, needle);
    // Added: USB controller 0, pci-root, PS/2 inputs, the audio backend, the balloon, a cirrus
    // video for the display, and PCI addresses.
    for controller in &d.devices.controllers {
        if controller.controller_type != ControllerType::Scsi {
            assert_eq!(controller.line.get(), None, "{controller:?}");
        }
    }
    assert!(d.devices.inputs.iter().all(|i| i.line.get().is_none()));
    assert!(d.devices.audios.iter().all(|a| a.line.get().is_none()));
    let balloon = d.devices.memballoon.as_ref().unwrap();
    assert_eq!(balloon.line.get(), None);
    assert_eq!(balloon.address.as_ref().unwrap().line().get(), None);
    assert_eq!(d.devices.videos[0].line.get(), None);
    assert_eq!(
        d.devices.interfaces[0]
            .address
            .as_ref()
            .unwrap()
            .line()
            .get(),
        None
    );
    // The console alias of serial 0 is that serial port: it points where the serial was written.
    assert_eq!(d.devices.consoles[0].line.get(), at("<serial type='pty'>"));
    // A disk without <driver> gets the default driver, which has no line.
    let bare = parse_domain_xml(
        "<domain type='qemu'><name>b</name><memory>65536</memory><os><type>hvm</type></os>\n\
         <devices>\n<disk type='file'><source file='/x'/><target dev='vda'/></disk>\n\
         </devices></domain>",
    )
    .unwrap();
    assert_eq!(bare.devices.disks[0].line.get(), Some(3));
    assert_eq!(bare.devices.disks[0].driver.line.get(), None);
    let display = bare.devices.disks[0].driver.line.to_string();
    assert_eq!(display, "(added by default)");
    assert_eq!(bare.devices.disks[0].line.to_string(), "at line 3");
}

#[test]
fn lines_are_not_part_of_the_value() {
    let parsed = parse_domain_xml(XML).expect("parses");
    let printed = parsed.to_xml();
    assert!(!printed.contains("line="), "{printed}");
    let reparsed = parse_domain_xml(&printed).expect("its own XML parses");
    // The same elements sit on other lines in the printed form ...
    assert_ne!(
        parsed.devices.disks[0].driver.line.get(),
        reparsed.devices.disks[0].driver.line.get()
    );
    assert_ne!(parsed.os.type_line.get(), reparsed.os.type_line.get());
    // ... and the domains are still equal, print the same, and hash the same.
    assert_eq!(parsed, reparsed);
    assert_eq!(printed, reparsed.to_xml());
    let hash = |value: &DiskDriver| {
        let mut hasher = DefaultHasher::new();
        value.hash(&mut hasher);
        hasher.finish()
    };
    assert_eq!(
        hash(&parsed.devices.disks[0].driver),
        hash(&reparsed.devices.disks[0].driver)
    );
    // A domain built in code (no lines at all) equals its parsed XML too.
    let built = Domain::new(DomainType::Kvm, "built", 65536, 1).unwrap();
    let from_text = parse_domain_xml(&built.to_xml()).unwrap();
    assert_eq!(built, from_text);
    assert!(from_text.os.type_line.get().is_some() && built.os.type_line.get().is_none());
}
