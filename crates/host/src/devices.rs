//! Host devices as sysfs shows them, for device passthrough (`<hostdev>`): PCI functions with
//! their IOMMU group and driver, and USB devices by ids or bus/device number. The roots are
//! parameters so tests can point them at a made-up tree.

use std::path::{Path, PathBuf};

/// Where the kernel lists PCI devices and IOMMU groups.
pub const SYS_PCI_DEVICES: &str = "/sys/bus/pci/devices";
pub const SYS_IOMMU_GROUPS: &str = "/sys/kernel/iommu_groups";
pub const SYS_USB_DEVICES: &str = "/sys/bus/usb/devices";

/// One host PCI function (`0000:06:02.0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciFunction {
    pub name: String,
    /// Its IOMMU group, when the host has an IOMMU turned on.
    pub iommu_group: Option<u32>,
    /// The driver bound to it (`vfio-pci`, `e1000e`, ...), if any.
    pub driver: Option<String>,
    /// The other functions of its IOMMU group (all must be given to VFIO together).
    pub group_peers: Vec<String>,
}

fn link_name(path: &Path) -> Option<String> {
    std::fs::read_link(path)
        .ok()?
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
}

impl PciFunction {
    /// The function `name` under `root` (normally [`SYS_PCI_DEVICES`]), or `None` if the host
    /// has no such device.
    pub fn find(root: &Path, name: &str) -> Option<PciFunction> {
        let dir = root.join(name);
        if !dir.exists() {
            return None;
        }
        let iommu_group = link_name(&dir.join("iommu_group")).and_then(|g| g.parse().ok());
        let group_peers = std::fs::read_dir(dir.join("iommu_group/devices"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|peer| peer != name)
            .collect();
        Some(PciFunction {
            name: name.to_string(),
            iommu_group,
            driver: link_name(&dir.join("driver")),
            group_peers,
        })
    }

    /// The driver bound to another function (a peer in its group), read fresh.
    pub fn driver_of(root: &Path, name: &str) -> Option<String> {
        link_name(&root.join(name).join("driver"))
    }
}

/// Whether the host has an IOMMU in use: the kernel made at least one IOMMU group.
pub fn iommu_enabled(groups: &Path) -> bool {
    std::fs::read_dir(groups)
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false)
}

/// A USB device present on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsbDevice {
    pub vendor: u16,
    pub product: u16,
    pub bus: u32,
    pub device: u32,
}

/// Every USB device under `root` (normally [`SYS_USB_DEVICES`]); none when the host has no USB.
pub fn usb_devices(root: &Path) -> Vec<UsbDevice> {
    let read = |dir: &PathBuf, file: &str| {
        std::fs::read_to_string(dir.join(file))
            .ok()
            .map(|s| s.trim().to_string())
    };
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let dir = entry.path();
            Some(UsbDevice {
                vendor: u16::from_str_radix(&read(&dir, "idVendor")?, 16).ok()?,
                product: u16::from_str_radix(&read(&dir, "idProduct")?, 16).ok()?,
                bus: read(&dir, "busnum")?.parse().ok()?,
                device: read(&dir, "devnum")?.parse().ok()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_pci_function_and_its_group() {
        let root = tempfile::tempdir().unwrap();
        let devices = root.path().join("devices");
        let groups = root.path().join("groups");
        let drivers = root.path().join("drivers");
        for dir in [
            devices.join("0000:06:02.0"),
            devices.join("0000:06:02.1"),
            groups.join("7/devices"),
            drivers.join("e1000e"),
        ] {
            std::fs::create_dir_all(dir).unwrap();
        }
        assert!(iommu_enabled(&groups));
        std::os::unix::fs::symlink(groups.join("7"), devices.join("0000:06:02.0/iommu_group"))
            .unwrap();
        std::os::unix::fs::symlink(drivers.join("e1000e"), devices.join("0000:06:02.0/driver"))
            .unwrap();
        for peer in ["0000:06:02.0", "0000:06:02.1"] {
            std::os::unix::fs::symlink(devices.join(peer), groups.join("7/devices").join(peer))
                .unwrap();
        }
        let found = PciFunction::find(&devices, "0000:06:02.0").unwrap();
        assert_eq!(found.iommu_group, Some(7));
        assert_eq!(found.driver.as_deref(), Some("e1000e"));
        assert_eq!(found.group_peers, vec!["0000:06:02.1".to_string()]);
        assert_eq!(PciFunction::find(&devices, "0000:07:00.0"), None);
        assert!(!iommu_enabled(&root.path().join("none")));
    }

    #[test]
    fn reads_usb_devices() {
        let root = tempfile::tempdir().unwrap();
        let dev = root.path().join("1-4");
        std::fs::create_dir(&dev).unwrap();
        for (file, value) in [
            ("idVendor", "046d\n"),
            ("idProduct", "c52b\n"),
            ("busnum", "1\n"),
            ("devnum", "4\n"),
        ] {
            std::fs::write(dev.join(file), value).unwrap();
        }
        std::fs::create_dir(root.path().join("usb1-port1")).unwrap();
        assert_eq!(
            usb_devices(root.path()),
            vec![UsbDevice {
                vendor: 0x046d,
                product: 0xc52b,
                bus: 1,
                device: 4
            }]
        );
    }
}
