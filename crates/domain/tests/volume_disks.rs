//! `<disk type='volume'>` with `<source pool= volume=>`: parsed, validated and written in
//! libvirt's normalized form (checked against libvirt 9.0 in `tests/data/libvirt-9.0/define-8`).

use oxvirt_domain::{parse_domain_xml, DiskFormat, DiskType, DiskVolume, Domain, DomainError};

fn domain_with(disks: &str) -> String {
    format!(
        "<domain type='qemu'>
  <name>v</name>
  <memory unit='MiB'>128</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
{disks}
  </devices>
</domain>
"
    )
}

fn parse(disks: &str) -> Domain {
    match parse_domain_xml(&domain_with(disks)) {
        Ok(d) => d,
        Err(e) => panic!("does not parse: {e}\n{disks}"),
    }
}

fn parse_err(disks: &str) -> DomainError {
    match parse_domain_xml(&domain_with(disks)) {
        Ok(d) => panic!("expected an error, parsed:\n{}", d.to_xml()),
        Err(e) => e,
    }
}

#[test]
fn volume_disk_without_driver_type_keeps_the_format_unstated() {
    let d = parse(
        "<disk type='volume' device='disk'>
           <source pool='images' volume='root.qcow2'/>
           <target dev='vda' bus='virtio'/>
         </disk>",
    );
    let disk = &d.devices.disks[0];
    assert_eq!(disk.disk_type, DiskType::Volume);
    assert_eq!(disk.source, None);
    assert_eq!(
        disk.volume,
        Some(DiskVolume {
            pool: "images".into(),
            volume: "root.qcow2".into()
        })
    );
    assert!(!disk.driver.format_stated);
    let xml = d.to_xml();
    // libvirt prints the driver name but no type for such a disk.
    assert!(xml.contains("<disk type='volume' device='disk'>"), "{xml}");
    assert!(xml.contains("<driver name='qemu'/>"), "{xml}");
    assert!(
        xml.contains("<source pool='images' volume='root.qcow2'/>"),
        "{xml}"
    );
    let again = parse_domain_xml(&xml).expect("our output parses");
    assert_eq!(again, d);
}

#[test]
fn volume_disk_with_driver_type_states_it() {
    let d = parse(
        "<disk type='volume'>
           <driver name='qemu' type='qcow2' cache='none'/>
           <source pool='p' volume='v'/>
           <target dev='vda'/>
         </disk>",
    );
    let driver = &d.devices.disks[0].driver;
    assert!(driver.format_stated);
    assert_eq!(driver.format, DiskFormat::Qcow2);
    assert!(d
        .to_xml()
        .contains("<driver name='qemu' type='qcow2' cache='none'/>"));
}

#[test]
fn file_disks_get_raw_stated_as_libvirt_does() {
    let d = parse(
        "<disk type='file'><source file='/a.img'/><target dev='vda'/></disk>
         <disk type='block'><driver name='qemu'/><source dev='/dev/sdz'/><target dev='vdb'/></disk>",
    );
    for disk in &d.devices.disks {
        assert!(disk.driver.format_stated);
        assert_eq!(disk.driver.format, DiskFormat::Raw);
        assert_eq!(disk.volume, None);
    }
    assert_eq!(
        d.to_xml()
            .matches("<driver name='qemu' type='raw'/>")
            .count(),
        2
    );
}

#[test]
fn empty_volume_cdrom_becomes_a_file_cdrom() {
    let d = parse(
        "<disk type='volume' device='cdrom'>
           <driver name='qemu'/>
           <target dev='sda' bus='sata'/>
         </disk>",
    );
    let disk = &d.devices.disks[0];
    assert_eq!(disk.disk_type, DiskType::File);
    assert!(disk.driver.format_stated);
    assert!(d.to_xml().contains("<disk type='file' device='cdrom'>"));
}

#[test]
fn malformed_volume_sources_are_refused_by_name() {
    let cases = [
        (
            "<source pool='p' volume='v' mode='host'/>",
            &["unsupported attribute 'mode'", "devices/disk/source"][..],
        ),
        (
            "<source pool='p'/>",
            &["attribute 'volume'", "devices/disk/source"],
        ),
        (
            "<source volume='v'/>",
            &["attribute 'pool'", "devices/disk/source"],
        ),
        ("<source file='/x.img'/>", &["unsupported attribute 'file'"]),
        (
            "<source pool='' volume='v'/>",
            &["attribute 'pool'", "empty"],
        ),
        (
            "<source pool='p' volume=''/>",
            &["attribute 'volume'", "empty"],
        ),
    ];
    for (source, parts) in cases {
        let e = parse_err(&format!(
            "<disk type='volume'>{source}<target dev='vda'/></disk>"
        ));
        let msg = e.to_string();
        for part in parts {
            assert!(
                msg.contains(part),
                "{source}: message {msg:?} lacks {part:?}"
            );
        }
    }
    // A file disk does not take pool/volume.
    let e = parse_err("<disk type='file'><source pool='p' volume='v'/><target dev='vda'/></disk>");
    assert!(
        e.to_string().contains("unsupported attribute 'pool'"),
        "{e}"
    );
}

#[test]
fn volume_disk_without_source_is_refused() {
    let e = parse_err("<disk type='volume' device='disk'><target dev='vda'/></disk>");
    assert!(e.to_string().contains("has no source"), "{e}");
}

#[test]
fn validation_keeps_source_and_type_consistent() {
    let good = parse("<disk type='volume'><source pool='p' volume='v'/><target dev='vda'/></disk>");
    good.validate().expect("valid");

    let mut path_on_volume = good.clone();
    path_on_volume.devices.disks[0].source = Some("/x.img".into());
    let e = path_on_volume.validate().unwrap_err();
    assert!(e.to_string().contains("not a path"), "{e}");

    let mut volume_on_file = good.clone();
    volume_on_file.devices.disks[0].disk_type = DiskType::File;
    volume_on_file.devices.disks[0].source = Some("/x.img".into());
    let e = volume_on_file.validate().unwrap_err();
    assert!(e.to_string().contains("not type='volume'"), "{e}");

    let mut no_reference = good.clone();
    no_reference.devices.disks[0].volume = None;
    assert!(no_reference.validate().is_err());

    for bad in ["a/b", "x\ny", ""] {
        let mut bad_name = good.clone();
        bad_name.devices.disks[0].volume = Some(DiskVolume {
            pool: "p".into(),
            volume: bad.into(),
        });
        let e = bad_name.validate().unwrap_err();
        assert!(
            e.to_string().contains("invalid volume name"),
            "{bad:?}: {e}"
        );
    }
}
