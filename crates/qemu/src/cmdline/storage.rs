//! Controllers and disks: `-blockdev` node pairs and their frontends.

use oxvirt_domain::{
    Address, ControllerType, DetectZeroes, Disk, DiskBus, DiskCache, DiskDevice, DiskDiscard,
    DiskFormat, DiskIo, DiskType,
};
use serde_json::{json, Map, Value};

use super::{controller_type_name, is_qemu_identifier, on_off, Builder, Chipset};
use crate::QemuError;

impl Builder<'_> {
    // ----- controllers and disks --------------------------------------------------------------

    pub(super) fn controllers(&mut self) -> Result<(), QemuError> {
        for controller in &self.domain.devices.controllers {
            let index = controller.index;
            let model = controller.model.as_deref();
            let element = format!(
                "devices/controller[@type='{}'][@index='{index}']",
                controller_type_name(controller.controller_type)
            );
            let device = match (controller.controller_type, model) {
                (ControllerType::Pci, Some("pci-root"))
                    if self.chipset == Chipset::I440fx && index == 0 =>
                {
                    None
                }
                (ControllerType::Pci, Some("pcie-root"))
                    if self.chipset == Chipset::Q35 && index == 0 =>
                {
                    None
                }
                (ControllerType::Pci, _) => {
                    return Err(QemuError::unsupported(
                        element,
                        "only the root PCI(e) bus is supported (no bridges or root ports)",
                    ))
                }
                (ControllerType::Ide, _) if self.chipset == Chipset::I440fx && index == 0 => None,
                (ControllerType::Ide, _) => {
                    return Err(QemuError::unsupported(
                        element,
                        "IDE exists only as the pc machine's built-in controller 0",
                    ))
                }
                (ControllerType::Sata, _) if self.chipset == Chipset::Q35 && index == 0 => None,
                (ControllerType::Sata, None | Some("ahci")) => {
                    Some(json!({"driver": "ich9-ahci", "id": format!("sata{index}")}))
                }
                (ControllerType::Usb, Some("none")) => None,
                (ControllerType::Usb, _) if index != 0 => {
                    return Err(QemuError::unsupported(
                        element,
                        "only one USB controller (index 0)",
                    ))
                }
                (ControllerType::Usb, None) => Some(json!({"driver": match self.chipset {
                    Chipset::I440fx => "piix3-usb-uhci",
                    Chipset::Q35 => "qemu-xhci",
                }, "id": "usb"})),
                (ControllerType::Usb, Some("piix3-uhci")) => {
                    Some(json!({"driver": "piix3-usb-uhci", "id": "usb"}))
                }
                (ControllerType::Usb, Some("qemu-xhci")) => {
                    Some(json!({"driver": "qemu-xhci", "id": "usb"}))
                }
                (ControllerType::Scsi, None | Some("lsilogic")) => {
                    Some(json!({"driver": "lsi", "id": format!("scsi{index}")}))
                }
                (ControllerType::Scsi, Some("virtio-scsi")) => {
                    let mut device =
                        json!({"driver": "virtio-scsi-pci", "id": format!("scsi{index}")});
                    if let Some(queues) = controller.driver_queues {
                        device["num_queues"] = json!(queues);
                    }
                    Some(device)
                }
                (ControllerType::VirtioSerial, _) => Some(
                    json!({"driver": "virtio-serial-pci", "id": format!("virtio-serial{index}")}),
                ),
                (ControllerType::Fdc, _) => {
                    return Err(QemuError::unsupported(
                        element,
                        "floppy controllers are not supported",
                    ))
                }
                (_, Some(model)) => {
                    return Err(QemuError::unsupported(
                        format!("{element}@model"),
                        format!("model '{model}'"),
                    ))
                }
            };
            if controller.driver_queues.is_some() && model != Some("virtio-scsi") {
                return Err(QemuError::unsupported(
                    format!("{element}/driver@queues"),
                    "queues apply to virtio-scsi controllers only",
                ));
            }
            if let Some(device) = device {
                self.add_pci_device(device, controller.address.as_ref(), &element)?;
            } else if controller.address.is_some()
                && !is_builtin_address_ok(controller, self.chipset)
            {
                return Err(QemuError::unsupported(
                    format!("{element}/address"),
                    "built-in controllers sit where the machine puts them",
                ));
            }
        }
        Ok(())
    }

    /// Read-only (protocol, format) block node pairs for `disk`'s backing chain, nearest first,
    /// each format node pointing at the next and the last at nothing.
    fn backing_nodes(
        &self,
        disk: &Disk,
        drive: &str,
        element: &str,
        cache: Option<CacheFlags>,
    ) -> Result<Vec<(Value, Value)>, QemuError> {
        if !disk.backing_chain.is_empty() && disk.driver.format != DiskFormat::Qcow2 {
            return Err(QemuError::invalid(
                format!("{element}/driver@type"),
                "only a qcow2 image can have a backing chain",
            ));
        }
        let node = |layer: usize| format!("{drive}-backing{layer}");
        let mut nodes = Vec::new();
        for (index, layer) in disk.backing_chain.iter().enumerate() {
            let name = node(index + 1);
            let mut protocol = json!({
                "driver": "file",
                "filename": layer.path,
                "node-name": format!("{name}-file"),
                "read-only": true,
            });
            let mut format = json!({
                "driver": match layer.format { DiskFormat::Raw => "raw", DiskFormat::Qcow2 => "qcow2" },
                "node-name": name,
                "file": format!("{name}-file"),
                "read-only": true,
            });
            if layer.format == DiskFormat::Qcow2 {
                format["backing"] = match disk.backing_chain.get(index + 1) {
                    Some(_) => json!(node(index + 2)),
                    None => Value::Null,
                };
            } else if index + 1 < disk.backing_chain.len() {
                return Err(QemuError::invalid(
                    format!("{element}/source"),
                    format!(
                        "backing image {} is raw, so nothing can be below it",
                        layer.path
                    ),
                ));
            }
            if let Some(cache) = cache {
                let flags = json!({"direct": cache.direct, "no-flush": cache.no_flush});
                protocol["cache"] = flags.clone();
                format["cache"] = flags;
            }
            nodes.push((protocol, format));
        }
        Ok(nodes)
    }

    pub(super) fn has_controller(&self, kind: ControllerType, index: u32) -> bool {
        let builtin = match (kind, self.chipset) {
            (ControllerType::Ide, Chipset::I440fx) | (ControllerType::Sata, Chipset::Q35) => {
                index == 0
            }
            _ => false,
        };
        builtin
            || self.domain.devices.controllers.iter().any(|c| {
                c.controller_type == kind && c.index == index && c.model.as_deref() != Some("none")
            })
    }

    pub(super) fn disk(&mut self, index: usize) -> Result<(), QemuError> {
        let disk: &Disk = &self.domain.devices.disks[index];
        let dev = &disk.target.dev;
        let element = format!("devices/disk[target@dev='{dev}']");
        if !is_qemu_identifier(dev) || !dev.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return Err(QemuError::invalid(
                format!("{element}/target@dev"),
                "target dev must be like vda, sda or hda",
            ));
        }
        if disk.disk_type == DiskType::Volume {
            // QEMU opens files and devices; the pool volume must be resolved to its file
            // (by oxvirtd, which knows the pools) before a command line is built.
            return Err(QemuError::invalid(
                format!("{element}/source"),
                "a pool volume must be resolved to its file before QEMU can open it",
            ));
        }
        let driver = &disk.driver;
        let cdrom = disk.device == DiskDevice::Cdrom;
        let readonly = disk.readonly || cdrom;
        let drive = format!("drive-{dev}");

        // Block nodes: a protocol node (the file or block device) and a format node on top.
        let mut has_medium = false;
        if let Some(source) = &disk.source {
            has_medium = true;
            let cache = CacheFlags::of(driver.cache);
            // host_cdrom knows about tray and media changes of a real optical drive; any other
            // block device (an LV holding an ISO, say) is plain host_device, as in libvirt.
            let real_cd_drive = source.starts_with("/dev/sr") || source.starts_with("/dev/cdrom");
            let protocol_driver = match disk.disk_type {
                // (Volume disks were refused above.)
                DiskType::File | DiskType::Volume => "file",
                DiskType::Block if cdrom && real_cd_drive => "host_cdrom",
                DiskType::Block => "host_device",
            };
            let mut protocol = json!({
                "driver": protocol_driver,
                "filename": source,
                "node-name": format!("{drive}-file"),
                "read-only": readonly,
            });
            let mut format = json!({
                "driver": match driver.format { DiskFormat::Raw => "raw", DiskFormat::Qcow2 => "qcow2" },
                "node-name": drive,
                "file": format!("{drive}-file"),
                "read-only": readonly,
            });
            if let Some(cache) = cache {
                let flags = json!({"direct": cache.direct, "no-flush": cache.no_flush});
                protocol["cache"] = flags.clone();
                format["cache"] = flags;
            }
            if let Some(io) = driver.io {
                if io == DiskIo::Native && !cache.is_some_and(|c| c.direct) {
                    return Err(QemuError::invalid(
                        format!("{element}/driver@io"),
                        "io='native' needs cache='none' or 'directsync' (O_DIRECT)",
                    ));
                }
                protocol["aio"] = json!(match io {
                    DiskIo::Native => "native",
                    DiskIo::Threads => "threads",
                    DiskIo::IoUring => "io_uring",
                });
            }
            if let Some(discard) = driver.discard {
                let value = json!(match discard {
                    DiskDiscard::Unmap => "unmap",
                    DiskDiscard::Ignore => "ignore",
                });
                protocol["discard"] = value.clone();
                format["discard"] = value;
            }
            if let Some(detect) = driver.detect_zeroes {
                // QEMU accepts 'unmap' only where discards are passed down; libvirt degrades it
                // to 'on' otherwise, and so do we.
                let value = match detect {
                    DetectZeroes::Off => "off",
                    DetectZeroes::On => "on",
                    DetectZeroes::Unmap if driver.discard == Some(DiskDiscard::Unmap) => "unmap",
                    DetectZeroes::Unmap => "on",
                };
                format["detect-zeroes"] = json!(value);
            }
            // QEMU follows the backing file named in a qcow2 header (probing its format if
            // the header does not say) unless told otherwise; the host resolved the chain from
            // trusted metadata, so QEMU gets exactly that chain and nothing else.
            let backing_nodes = self.backing_nodes(disk, &drive, &element, cache)?;
            if driver.format == DiskFormat::Qcow2 {
                format["backing"] = match backing_nodes.first() {
                    Some((_, node)) => node["node-name"].clone(),
                    None => Value::Null,
                };
            }
            // A node must exist before a node names it: the deepest backing image first.
            for (protocol, format) in backing_nodes.into_iter().rev() {
                self.arg("-blockdev", protocol.to_string());
                self.arg("-blockdev", format.to_string());
            }
            self.arg("-blockdev", protocol.to_string());
            self.arg("-blockdev", format.to_string());
        } else if !cdrom {
            return Err(QemuError::invalid(
                format!("{element}/source"),
                "a disk needs a source (only a cdrom may be empty)",
            ));
        }

        let (kind, address) = self.disk_placement(disk, &element)?;
        let mut device = Map::new();
        let driver_name = match (kind, cdrom) {
            (DiskBus::Virtio, false) => "virtio-blk-pci",
            (DiskBus::Ide | DiskBus::Sata, false) => "ide-hd",
            (DiskBus::Ide | DiskBus::Sata, true) => "ide-cd",
            (DiskBus::Scsi, false) => "scsi-hd",
            (DiskBus::Scsi, true) => "scsi-cd",
            (DiskBus::Usb, false) => "usb-storage",
            (DiskBus::Virtio | DiskBus::Usb, true) => {
                return Err(QemuError::unsupported(
                    element,
                    "a cdrom must be on an ide, sata or scsi bus",
                ))
            }
            (DiskBus::Fdc, _) => {
                return Err(QemuError::unsupported(
                    element,
                    "floppy disks are not supported",
                ))
            }
        };
        device.insert("driver".into(), json!(driver_name));
        for (key, value) in address {
            device.insert(key, value);
        }
        if has_medium {
            device.insert("drive".into(), json!(drive));
        }
        device.insert("id".into(), json!(dev));
        if let Some(bootindex) = self.disk_boot[index] {
            device.insert("bootindex".into(), json!(bootindex));
        }
        if let Some(cache) = CacheFlags::of(driver.cache) {
            device.insert("write-cache".into(), json!(on_off(cache.write_cache)));
        }
        if let Some(serial) = &disk.serial {
            if driver_name == "usb-storage" || cdrom && kind == DiskBus::Scsi {
                return Err(QemuError::unsupported(
                    format!("{element}/serial"),
                    "this disk type has no serial number",
                ));
            }
            device.insert("serial".into(), json!(serial));
        }
        if disk.shareable {
            device.insert("share-rw".into(), json!(true));
        }
        if let Some(iothread) = driver.iothread {
            if kind != DiskBus::Virtio {
                return Err(QemuError::unsupported(
                    format!("{element}/driver@iothread"),
                    "IOThreads apply to virtio disks only",
                ));
            }
            if iothread == 0 || iothread > self.domain.iothreads.unwrap_or(0) {
                return Err(QemuError::invalid(
                    format!("{element}/driver@iothread"),
                    format!("iothread {iothread} is not defined by <iothreads>"),
                ));
            }
            device.insert("iothread".into(), json!(format!("iothread{iothread}")));
        }
        let device = Value::Object(device);
        if kind == DiskBus::Virtio {
            self.add_pci_device(device, disk.address.as_ref(), &element)?;
        } else {
            self.devices.on_buses.push(device);
        }
        Ok(())
    }

    /// Where a non-PCI disk plugs in: bus properties for its `-device`, per bus type.
    pub(super) fn disk_placement(
        &self,
        disk: &Disk,
        element: &str,
    ) -> Result<(DiskBus, Vec<(String, Value)>), QemuError> {
        let bus = disk.target.bus;
        let drive_address = match &disk.address {
            Some(Address::Drive(address)) => Some(*address),
            Some(Address::Pci(_)) if bus == DiskBus::Virtio => None,
            Some(Address::Usb(_)) if bus == DiskBus::Usb => None,
            None => None,
            Some(_) => {
                return Err(QemuError::invalid(
                    format!("{element}/address"),
                    "address type does not fit the disk bus",
                ))
            }
        };
        let unit_index = target_index(&disk.target.dev);
        let props: Vec<(String, Value)> = match bus {
            DiskBus::Virtio => Vec::new(),
            DiskBus::Ide => {
                if self.chipset == Chipset::Q35 {
                    return Err(QemuError::unsupported(
                        element,
                        "q35 has no IDE bus: use bus='sata'",
                    ));
                }
                let (ide_bus, unit) = match drive_address {
                    Some(a) if a.controller == 0 && a.target == 0 && a.bus < 2 && a.unit < 2 => {
                        (a.bus, a.unit)
                    }
                    Some(_) => {
                        return Err(QemuError::invalid(
                            format!("{element}/address"),
                            "IDE has controller 0, buses 0-1, units 0-1",
                        ))
                    }
                    None => match unit_index {
                        Some(i) if i < 4 => (i / 2, i % 2),
                        _ => return Err(QemuError::invalid(element, "IDE targets are hda-hdd")),
                    },
                };
                vec![
                    ("bus".into(), json!(format!("ide.{ide_bus}"))),
                    ("unit".into(), json!(unit)),
                ]
            }
            DiskBus::Sata => {
                let (controller, port) = match drive_address {
                    Some(a) if a.bus == 0 && a.target == 0 => (a.controller, a.unit),
                    Some(_) => {
                        return Err(QemuError::invalid(
                            format!("{element}/address"),
                            "SATA uses controller and unit only",
                        ))
                    }
                    None => match unit_index {
                        Some(i) => (i / 6, i % 6),
                        None => {
                            return Err(QemuError::invalid(
                                element,
                                "cannot derive a SATA port from the target dev",
                            ))
                        }
                    },
                };
                if port >= 6 {
                    return Err(QemuError::invalid(
                        format!("{element}/address"),
                        "an AHCI controller has ports 0-5",
                    ));
                }
                if !self.has_controller(ControllerType::Sata, controller) {
                    return Err(QemuError::invalid(
                        element,
                        format!("no SATA controller {controller}"),
                    ));
                }
                let bus = match (self.chipset, controller) {
                    (Chipset::Q35, 0) => format!("ide.{port}"),
                    _ => format!("sata{controller}.{port}"),
                };
                vec![("bus".into(), json!(bus))]
            }
            DiskBus::Scsi => {
                let address = match drive_address {
                    Some(a) => a,
                    None => match unit_index {
                        Some(i) => oxvirt_domain::DriveAddress {
                            controller: i / 7,
                            bus: 0,
                            target: 0,
                            unit: i % 7,
                            line: oxvirt_domain::SourceLine::NONE,
                        },
                        None => {
                            return Err(QemuError::invalid(
                                element,
                                "cannot derive a SCSI unit from the target dev",
                            ))
                        }
                    },
                };
                if !self.has_controller(ControllerType::Scsi, address.controller) {
                    return Err(QemuError::invalid(
                        element,
                        format!("no SCSI controller {}", address.controller),
                    ));
                }
                let virtio = self.domain.devices.controllers.iter().any(|c| {
                    c.controller_type == ControllerType::Scsi
                        && c.index == address.controller
                        && c.model.as_deref() == Some("virtio-scsi")
                });
                let mut props =
                    vec![("bus".into(), json!(format!("scsi{}.0", address.controller)))];
                if virtio {
                    props.push(("channel".into(), json!(address.bus)));
                    props.push(("scsi-id".into(), json!(address.target)));
                    props.push(("lun".into(), json!(address.unit)));
                } else {
                    // The LSI controller is a parallel SCSI HBA: one LUN per target, unit is the id.
                    if address.bus != 0 || address.target != 0 {
                        return Err(QemuError::unsupported(
                            format!("{element}/address"),
                            "the lsi controller uses unit only",
                        ));
                    }
                    props.push(("scsi-id".into(), json!(address.unit)));
                }
                props
            }
            DiskBus::Usb => {
                if !self.has_controller(ControllerType::Usb, 0) {
                    return Err(QemuError::invalid(
                        element,
                        "a USB disk needs a USB controller",
                    ));
                }
                let mut props = vec![
                    ("bus".into(), json!("usb.0")),
                    ("removable".into(), json!(false)),
                ];
                if let Some(Address::Usb(usb)) = &disk.address {
                    if usb.bus != 0 {
                        return Err(QemuError::invalid(
                            format!("{element}/address"),
                            "there is one USB bus, 0",
                        ));
                    }
                    if let Some(port) = &usb.port {
                        props.push(("port".into(), json!(port)));
                    }
                }
                props
            }
            DiskBus::Fdc => Vec::new(),
        };
        Ok((bus, props))
    }
}

/// How a libvirt cache mode maps onto QEMU's three knobs: O_DIRECT on the host file, whether
/// guest flushes are honoured, and whether the emulated disk reports a volatile write cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CacheFlags {
    direct: bool,
    no_flush: bool,
    write_cache: bool,
}

impl CacheFlags {
    pub(super) fn of(cache: Option<DiskCache>) -> Option<CacheFlags> {
        let (direct, no_flush, write_cache) = match cache? {
            DiskCache::None => (true, false, true),
            DiskCache::Writeback => (false, false, true),
            DiskCache::Writethrough => (false, false, false),
            DiskCache::Directsync => (true, false, false),
            DiskCache::Unsafe => (false, true, true),
        };
        Some(CacheFlags {
            direct,
            no_flush,
            write_cache,
        })
    }
}

/// Built-in controllers (pc's IDE at 00:01.1 and root bus, q35's AHCI at 00:1f.2) may carry
/// their fixed address in the definition.
fn is_builtin_address_ok(controller: &oxvirt_domain::Controller, chipset: Chipset) -> bool {
    match (&controller.address, controller.controller_type, chipset) {
        (Some(Address::Pci(a)), ControllerType::Ide, Chipset::I440fx) => {
            a.bus == 0 && a.slot == 1 && a.function == 1
        }
        (Some(Address::Pci(a)), ControllerType::Sata, Chipset::Q35) => {
            a.bus == 0 && a.slot == 0x1f && a.function == 2
        }
        _ => false,
    }
}

/// `vda` → 0, `sdb` → 1, `hdaa` → 26: the index libvirt derives from a target name.
fn target_index(dev: &str) -> Option<u32> {
    let letters = ["xvd", "vd", "sd", "hd", "fd"]
        .iter()
        .find_map(|prefix| dev.strip_prefix(prefix))?;
    if letters.is_empty() || !letters.bytes().all(|b| b.is_ascii_lowercase()) || letters.len() > 3 {
        return None;
    }
    let mut index: u32 = 0;
    for byte in letters.bytes() {
        index = index * 26 + u32::from(byte - b'a' + 1);
    }
    Some(index - 1)
}
