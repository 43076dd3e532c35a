//! Removable media of a running guest (`change-media`): the block nodes a new CD-ROM medium
//! gets, named as `storage.rs` names a drive's nodes at start, so QMP commands (and a later
//! change) find them under the same names.

use oxvirt_domain::{Disk, DiskDevice, DiskType};
use serde_json::{json, Value};

use super::storage::disk_node;
use crate::QemuError;

/// The `blockdev-add` arguments for `disk`'s medium (its `source`), the protocol node first,
/// then the format node the drive reads ([`disk_node`]). A CD-ROM medium is read-only.
pub fn medium_blockdevs(disk: &Disk) -> Result<Vec<Value>, QemuError> {
    let element = format!("devices/disk[target@dev='{}']", disk.target.dev);
    if disk.device != DiskDevice::Cdrom {
        return Err(QemuError::invalid(
            element,
            disk.line,
            "only a CD-ROM drive has a removable medium",
        ));
    }
    let Some(source) = &disk.source else {
        return Err(QemuError::invalid(
            format!("{element}/source"),
            disk.source_line,
            "a medium to insert needs a source",
        ));
    };
    let protocol_driver = match disk.disk_type {
        // As at start: a real optical drive is host_cdrom, any other block device host_device.
        DiskType::Block if source.starts_with("/dev/sr") || source.starts_with("/dev/cdrom") => {
            "host_cdrom"
        }
        DiskType::Block => "host_device",
        DiskType::File => "file",
        DiskType::Volume | DiskType::Network => {
            return Err(QemuError::unsupported(
                format!("{element}/source"),
                disk.source_line,
                "a medium changed in a running guest must be a file or a block device",
            ))
        }
    };
    let node = disk_node(&disk.target.dev);
    Ok(vec![
        json!({
            "driver": protocol_driver,
            "filename": source,
            "node-name": format!("{node}-file"),
            "read-only": true,
        }),
        json!({
            "driver": disk.driver.format.as_str(),
            "node-name": node,
            "file": format!("{node}-file"),
            "read-only": true,
        }),
    ])
}

/// The nodes a drive's medium may have, top first, for `blockdev-del` after the medium left
/// the drive (a copy-on-read filter, the format node, the protocol node).
pub fn medium_node_names(dev: &str) -> Vec<String> {
    let node = disk_node(dev);
    vec![format!("{node}-cor"), node.clone(), format!("{node}-file")]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(xml_disk: &str) -> Disk {
        let domain = oxvirt_domain::parse_domain_xml(&format!(
            "<domain type='qemu'><name>m</name><memory>131072</memory><os><type>hvm</type></os>\
             <devices>{xml_disk}</devices></domain>"
        ))
        .unwrap();
        domain.devices.disks[0].clone()
    }

    #[test]
    fn a_new_medium_gets_the_node_names_of_the_start() {
        let mut cdrom =
            disk("<disk type='file' device='cdrom'><target dev='hdc' bus='ide'/></disk>");
        assert!(medium_blockdevs(&cdrom).is_err(), "nothing to insert");
        cdrom.source = Some("/srv/a.iso".into());
        let nodes = medium_blockdevs(&cdrom).unwrap();
        assert_eq!(
            nodes[0],
            json!({"driver": "file", "filename": "/srv/a.iso", "node-name": "drive-hdc-file", "read-only": true})
        );
        assert_eq!(
            nodes[1],
            json!({"driver": "raw", "node-name": "drive-hdc", "file": "drive-hdc-file", "read-only": true})
        );
        assert_eq!(
            medium_node_names("hdc"),
            ["drive-hdc-cor", "drive-hdc", "drive-hdc-file"]
        );
        let hard_disk = disk(
            "<disk type='file' device='disk'><source file='/srv/d.raw'/><target dev='vda' bus='virtio'/></disk>",
        );
        let err = medium_blockdevs(&hard_disk).unwrap_err().to_string();
        assert!(err.contains("only a CD-ROM drive"), "{err}");
    }
}
