//! Host devices given to guests (`<hostdev>`): what the host must offer before a start, and the
//! driver changes of `managed='yes'` PCI devices.
//!
//! A PCI function goes to a guest through VFIO, which needs an IOMMU: the function must exist,
//! belong to an IOMMU group, and be bound to `vfio-pci` together with every other function of
//! its group that has a driver. With `managed='yes'` oxvirtd binds it (driver_override, unbind,
//! drivers_probe) at start and gives it back to the kernel's choice of driver when the guest
//! stops; with `managed='no'` (libvirt's default) the operator bound it. A USB device must be
//! present, unless `startupPolicy='optional'`, which leaves a missing one out of that start.
//! Every refusal names the device and says what the host lacks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use oxvirt_domain::{Domain, HostDevSource};
use oxvirt_host::devices::{
    iommu_enabled, usb_devices, PciFunction, SYS_IOMMU_GROUPS, SYS_PCI_DEVICES, SYS_USB_DEVICES,
};
use uuid::Uuid;

use super::error::{DaemonError, DaemonResult, ErrorKind};

const VFIO_DRIVER: &str = "vfio-pci";
const SYS_PCI_BUS: &str = "/sys/bus/pci";

pub struct HostDevs {
    pci_devices: PathBuf,
    iommu_groups: PathBuf,
    usb_devices: PathBuf,
    /// The PCI functions oxvirtd bound to vfio-pci for each running domain (`managed='yes'`),
    /// to give back when it stops. Lost with a daemon restart: those functions then stay on
    /// vfio-pci (safe: no host driver touches a device a guest may still use).
    bound: Mutex<HashMap<Uuid, Vec<String>>>,
}

impl Default for HostDevs {
    fn default() -> Self {
        HostDevs {
            pci_devices: PathBuf::from(SYS_PCI_DEVICES),
            iommu_groups: PathBuf::from(SYS_IOMMU_GROUPS),
            usb_devices: PathBuf::from(SYS_USB_DEVICES),
            bound: Mutex::new(HashMap::new()),
        }
    }
}

impl HostDevs {
    /// Checks the host devices of `domain` (the launched copy) and prepares them: binds
    /// managed PCI functions to vfio-pci, leaves out missing optional USB devices.
    pub(crate) fn prepare(&self, uuid: &Uuid, domain: &mut Domain) -> DaemonResult<()> {
        let name = domain.name.clone();
        let fail = |message: String| {
            DaemonError::new(
                ErrorKind::InvalidState,
                format!("cannot start domain '{name}': {message}"),
            )
        };
        if domain.devices.hostdevs.is_empty() {
            return Ok(());
        }
        let usb = usb_devices(&self.usb_devices);
        let mut to_bind = Vec::new();
        let mut kept = Vec::new();
        for hostdev in std::mem::take(&mut domain.devices.hostdevs) {
            match &hostdev.source {
                HostDevSource::Pci { .. } => {
                    let pci = hostdev.source.pci_name().unwrap_or_default();
                    let function = PciFunction::find(&self.pci_devices, &pci)
                        .ok_or_else(|| fail(format!("host PCI device {pci} does not exist")))?;
                    let Some(group) = function.iommu_group else {
                        let why = if iommu_enabled(&self.iommu_groups) {
                            "it is in no IOMMU group".to_string()
                        } else {
                            "this host has no IOMMU turned on (no IOMMU groups in /sys/kernel/iommu_groups): \
                             enable VT-d or AMD-Vi in the firmware and boot Linux with intel_iommu=on or \
                             amd_iommu=on"
                                .to_string()
                        };
                        return Err(fail(format!(
                            "host PCI device {pci} cannot be given to a guest: {why}"
                        )));
                    };
                    if !Path::new("/dev/vfio/vfio").exists() {
                        return Err(fail(format!(
                            "host PCI device {pci}: VFIO is not available (/dev/vfio/vfio is missing): \
                             modprobe vfio-pci"
                        )));
                    }
                    for peer in &function.group_peers {
                        match PciFunction::driver_of(&self.pci_devices, peer) {
                            None => {}
                            Some(driver) if driver == VFIO_DRIVER => {}
                            Some(driver) => {
                                return Err(fail(format!(
                                    "host PCI device {pci}: IOMMU group {group} also holds {peer}, \
                                     bound to {driver}; every device of the group must be bound to \
                                     vfio-pci or to no driver"
                                )))
                            }
                        }
                    }
                    match function.driver.as_deref() {
                        Some(VFIO_DRIVER) => {}
                        _ if hostdev.managed => to_bind.push(pci),
                        Some(driver) => {
                            return Err(fail(format!(
                                "host PCI device {pci} is bound to {driver}, not vfio-pci \
                                 (with managed='no' it must be bound beforehand; or set managed='yes')"
                            )))
                        }
                        None => {
                            return Err(fail(format!(
                                "host PCI device {pci} is bound to no driver, not vfio-pci \
                                 (with managed='no' it must be bound beforehand; or set managed='yes')"
                            )))
                        }
                    }
                    kept.push(hostdev);
                }
                HostDevSource::Usb {
                    vendor,
                    product,
                    bus,
                    device,
                    optional,
                } => {
                    let present = usb.iter().any(|d| {
                        vendor.is_none_or(|v| v == d.vendor)
                            && product.is_none_or(|p| p == d.product)
                            && bus.is_none_or(|b| b == d.bus)
                            && device.is_none_or(|n| n == d.device)
                    });
                    let described = match (vendor, product, bus, device) {
                        (Some(v), Some(p), _, _) => format!("{v:04x}:{p:04x}"),
                        (_, _, Some(b), Some(n)) => format!("at bus {b} device {n}"),
                        _ => "described".to_string(),
                    };
                    if present {
                        kept.push(hostdev);
                    } else if *optional {
                        tracing::warn!(domain = %name, "host USB device {described} is not present; left out (startupPolicy='optional')");
                    } else {
                        return Err(fail(format!("host USB device {described} is not present")));
                    }
                }
            }
        }
        domain.devices.hostdevs = kept;
        let mut bound: Vec<String> = Vec::new();
        for pci in to_bind {
            if let Err(err) = bind_to_vfio(&pci) {
                for done in &bound {
                    give_back(done);
                }
                return Err(fail(format!(
                    "cannot bind host PCI device {pci} to vfio-pci: {err}"
                )));
            }
            bound.push(pci);
        }
        if !bound.is_empty() {
            oxvirt_host::lock(&self.bound).insert(*uuid, bound);
        }
        Ok(())
    }

    /// Gives the managed PCI functions of domain `uuid` back to their host drivers (its guest
    /// stopped, or its start failed).
    pub(crate) fn release(&self, uuid: &Uuid) {
        let bound = oxvirt_host::lock(&self.bound).remove(uuid);
        for pci in bound.into_iter().flatten() {
            give_back(&pci);
        }
    }
}

/// driver_override makes vfio-pci the only driver that may take the function; unbind from
/// the current driver; drivers_probe binds it to vfio-pci.
fn bind_to_vfio(pci: &str) -> std::io::Result<()> {
    let dev = Path::new(SYS_PCI_DEVICES).join(pci);
    std::fs::write(dev.join("driver_override"), VFIO_DRIVER)?;
    if dev.join("driver").exists() {
        std::fs::write(dev.join("driver/unbind"), pci)?;
    }
    std::fs::write(Path::new(SYS_PCI_BUS).join("drivers_probe"), pci)?;
    match PciFunction::driver_of(Path::new(SYS_PCI_DEVICES), pci).as_deref() {
        Some(VFIO_DRIVER) => Ok(()),
        other => Err(std::io::Error::other(format!(
            "after probing it is bound to {}",
            other.unwrap_or("no driver")
        ))),
    }
}

/// The reverse of [`bind_to_vfio`]: the kernel picks the function's driver again.
fn give_back(pci: &str) {
    let dev = Path::new(SYS_PCI_DEVICES).join(pci);
    let steps = [
        (dev.join("driver_override"), "\n".to_string()),
        (dev.join("driver/unbind"), pci.to_string()),
        (
            Path::new(SYS_PCI_BUS).join("drivers_probe"),
            pci.to_string(),
        ),
    ];
    for (file, value) in steps {
        if let Err(err) = std::fs::write(&file, value) {
            tracing::warn!(
                "host PCI device {pci}: cannot write {}: {err}",
                file.display()
            );
        }
    }
}
