//! Controllers and disks: `-blockdev` node pairs and their frontends.

use oxvirt_domain::{
    Address, BackingLayer, Controller, ControllerTarget, ControllerType, DetectZeroes, Disk,
    DiskAuth, DiskBus, DiskCache, DiskDevice, DiskDiscard, DiskDriver, DiskErrorPolicy, DiskFormat,
    DiskIo, DiskTarget, DiskType, Domain, DriveAddress, NetworkHost, NetworkProtocol,
    NetworkSource, SecretUsageType, SourceLine, UsbAddress,
};
use serde_json::{json, Map, Value};

use super::{
    is_qemu_identifier, on_off, pci_properties, Builder, Chipset, DeviceGroups, MachineFirmware,
    PassedSocket,
};
use crate::{Accel, QemuError, RunPaths};

/// The NBD servers' sockets of `domain`'s disks on Unix sockets. Launch connects to each itself
/// (oxvirtd may reach a socket the guest's user may not) and hands QEMU the connected socket,
/// which the command line names (`server.type=fd`), as it hands over TAPs: QEMU never connects by
/// path, so it can run as the guest's user whoever owns the server's socket. (QEMU cannot
/// reconnect such a disk by itself: a server restart needs a guest restart.)
pub fn nbd_sockets(domain: &Domain) -> Vec<PassedSocket> {
    domain
        .devices
        .disks
        .iter()
        .enumerate()
        .filter_map(|(index, disk)| {
            let network = disk.network.as_ref()?;
            if network.protocol != NetworkProtocol::Nbd {
                return None;
            }
            let [NetworkHost::Unix { socket }] = network.hosts.as_slice() else {
                return None;
            };
            Some(PassedSocket {
                what: format!("the NBD server of disk '{}'", disk.target.dev),
                path: socket.clone(),
                bind: false,
                fd: nbd_socket_fd(index)?,
            })
        })
        .collect()
}

/// How many disks an NBD disk on a Unix socket may come after: their descriptors sit between
/// [`NBD_FD_BASE`] and the channels' sockets' (from 150).
const MAX_NBD_SOCKET_DISKS: usize = 50;
/// Far above what a fresh QEMU process has open (stdio, the log), below the channels' sockets'.
const NBD_FD_BASE: i32 = 100;

/// The descriptor of the NBD socket of the disk at `index` of the domain's disks.
fn nbd_socket_fd(index: usize) -> Option<i32> {
    (index < MAX_NBD_SOCKET_DISKS).then(|| NBD_FD_BASE + index as i32)
}

/// The name of the block node (the format node) the command line gives the disk with target
/// `dev` (`vda`): what QMP block commands (`block_resize`, `query-named-block-nodes`) name.
pub fn disk_node(dev: &str) -> String {
    format!("drive-{dev}")
}

/// A disk as [`Builder::disk_parts`] makes it, before it goes on a command line or to QMP.
struct DiskParts {
    /// `-object`s (a network disk's secret).
    objects: Vec<Value>,
    /// `-blockdev`s, each after the nodes it names.
    blockdevs: Vec<Value>,
    /// The frontend `-device`, without its PCI placement.
    device: Value,
    address: PartsPlacement,
    /// The disk's element path, for errors.
    element: String,
}

/// Where a disk's frontend goes.
enum PartsPlacement {
    /// A PCI device (virtio), at its `<address>` or one QEMU picks.
    Pci(Option<Address>),
    /// On a controller's bus (IDE, SATA, SCSI, USB): the placement is in the device already.
    OnBus,
}

/// A disk to hot-plug into a running guest: exactly the block nodes and the device a start
/// would give it ([`Builder::disk_parts`]), for `blockdev-add` (in this order) and `device_add`.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskPlug {
    /// A SCSI disk's controller as a start would give it (placed on its PCI bus), to
    /// `device_add` before the disk if the guest does not have it yet: as libvirt, the daemon
    /// adds a virtio-scsi controller to the live definition of a guest that has none.
    pub controller: Option<Value>,
    pub blockdevs: Vec<Value>,
    pub device: Value,
}

/// The hot-plug of the disk with target `dev` of `domain` (the running guest's definition with
/// the disk in it, normalized so it has its address, its volume and backing chain resolved as
/// for a start). Disks on a file or block device are hot-plugged: a virtio disk's device plugs
/// into a PCI slot (bus 0 on pc, a PCIe root port on q35), a SCSI disk or CD-ROM's into its
/// drive address on its SCSI controller.
pub fn hotplug_disk(domain: &Domain, dev: &str) -> Result<DiskPlug, QemuError> {
    let element = format!("devices/disk[target@dev='{dev}']");
    let (index, disk) = domain
        .devices
        .disks
        .iter()
        .enumerate()
        .find(|(_, disk)| disk.target.dev == dev)
        .ok_or_else(|| {
            QemuError::invalid(element.clone(), SourceLine::NONE, "no such disk to plug")
        })?;
    let pluggable = match disk.target.bus {
        DiskBus::Virtio => disk.device == DiskDevice::Disk,
        DiskBus::Scsi => true,
        _ => false,
    };
    if !pluggable {
        return Err(QemuError::unsupported(
            format!("{element}/target@bus"),
            disk.target.line,
            "only disks on bus 'virtio' or 'scsi' (and SCSI CD-ROMs) can be hot-plugged",
        ));
    }
    if !matches!(disk.disk_type, DiskType::File | DiskType::Block) {
        return Err(QemuError::unsupported(
            format!("{element}/source"),
            disk.source_line,
            "a hot-plugged disk must be a file or a block device",
        ));
    }
    let chipset = Chipset::of(&domain.os.machine).ok_or_else(|| {
        QemuError::unsupported(
            "os/type@machine",
            domain.os.type_line,
            format!("machine '{}'", domain.os.machine),
        )
    })?;
    // The run directory only names a network disk's secret file, and those are refused above.
    let run = RunPaths::new(super::CHECK_RUN_DIR);
    let builder = Builder {
        run: &run,
        accel: Accel::Tcg,
        chipset,
        args: Vec::new(),
        warnings: Vec::new(),
        devices: DeviceGroups::default(),
        controllers: &domain.devices.controllers,
        iothreads: &domain.iothreads.ids,
        // A hot-plugged disk is not a boot device (the firmware ran long ago).
        disk_boot: vec![None; domain.devices.disks.len()],
        interface_boot: Vec::new(),
        numa_cells: 0,
        numatune: None,
        machine_firmware: MachineFirmware::default(),
    };
    let DiskParts {
        objects,
        blockdevs,
        mut device,
        address,
        element,
    } = builder.disk_parts(index, disk)?;
    if !objects.is_empty() {
        return Err(QemuError::unsupported(
            format!("{element}/auth"),
            disk.source_line,
            "a hot-plugged disk cannot have credentials",
        ));
    }
    // device_add takes the PCI placement a start's layout would give (`bus`, `addr`).
    let place = |device: &mut Value, address: Option<&Address>, element: &str, line| {
        let Some(Address::Pci(pci)) = address else {
            return Err(QemuError::invalid(
                format!("{element}/address"),
                line,
                "a hot-plugged device needs its PCI address",
            ));
        };
        for (key, value) in pci_properties(pci, chipset, &domain.devices.controllers, element)? {
            device[key] = value;
        }
        Ok(())
    };
    let controller = match address {
        PartsPlacement::Pci(address) => {
            place(&mut device, address.as_ref(), &element, disk.line)?;
            None
        }
        PartsPlacement::OnBus => {
            // A SCSI disk: disk_parts() placed it on the controller of its drive address.
            let Some(Address::Drive(drive)) = &disk.address else {
                return Err(QemuError::invalid(
                    format!("{element}/address"),
                    disk.line,
                    "a hot-plugged SCSI disk needs its drive address",
                ));
            };
            let controller = domain
                .devices
                .controllers
                .iter()
                .find(|c| c.controller_type == ControllerType::Scsi && c.index == drive.controller)
                .ok_or_else(|| {
                    QemuError::invalid(
                        element.clone(),
                        disk.line,
                        format!("no SCSI controller {}", drive.controller),
                    )
                })?;
            let (Some(mut plugged), controller_element) = builder.controller_device(controller)?
            else {
                return Err(QemuError::unsupported(
                    element,
                    disk.line,
                    "its SCSI controller is not a device",
                ));
            };
            place(
                &mut plugged,
                controller.address.as_ref(),
                &controller_element,
                controller.line,
            )?;
            Some(plugged)
        }
    };
    Ok(DiskPlug {
        controller,
        blockdevs,
        device,
    })
}

impl Builder<'_> {
    // ----- controllers and disks --------------------------------------------------------------

    pub(super) fn controllers(&mut self) -> Result<(), QemuError> {
        // The PCI controllers first, by index: a bus must exist before what plugs into it
        // (libvirt's order too).
        let mut order: Vec<&Controller> = self.controllers.iter().collect();
        order.sort_by_key(|c| (c.controller_type != ControllerType::Pci, c.index));
        for controller in order {
            let (device, element) = self.controller_device(controller)?;
            if let Some(device) = device {
                self.add_pci_device(device, controller.address.as_ref(), &element)?;
            } else if let Some(address) = &controller.address {
                if !is_builtin_address_ok(address, controller.controller_type, self.chipset) {
                    return Err(QemuError::unsupported(
                        format!("{element}/address"),
                        address.line(),
                        "built-in controllers sit where the machine puts them",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The `-device` of a controller, without its PCI placement (`None`: a built-in one, or
    /// none at all), and the controller's element path for errors: the same for a start and
    /// for a controller hot-plugged with a disk ([`hotplug_disk`]).
    fn controller_device(
        &self,
        controller: &Controller,
    ) -> Result<(Option<Value>, String), QemuError> {
        let Controller {
            controller_type,
            index,
            model,
            driver_queues,
            // Placed by the caller (a start's PCI layout, or a hot-plug's device_add).
            address: _,
            ports,
            model_name,
            target,
            master_startport,
            line,
            driver_line,
            model_name_line,
            master_line,
        } = controller;
        let (index, line) = (*index, *line);
        let model = model.as_deref();
        let element = format!(
            "devices/controller[@type='{}'][@index='{index}']",
            controller_type.as_str()
        );
        if master_startport.is_some() && !is_usb_companion(model) {
            return Err(QemuError::unsupported(
                format!("{element}/master"),
                *master_line,
                "<master> applies to the UHCI companions (ich9-uhci1..3) of an ich9-ehci1",
            ));
        }
        if ports.is_some() && model != Some("qemu-xhci") {
            return Err(QemuError::unsupported(
                format!("{element}@ports"),
                line,
                "ports= is supported for the qemu-xhci USB controller only",
            ));
        }
        let device = match (controller_type, model) {
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
            (ControllerType::Pci, Some(kind @ ("pcie-root-port" | "pci-bridge" | "dmi-to-pci-bridge" | "pcie-to-pci-bridge")))
                if index > 0 =>
            {
                Some(pci_controller(
                    kind,
                    index,
                    (model_name.as_deref(), *model_name_line),
                    target.as_ref(),
                    &element,
                )?)
            }
            (ControllerType::Pci, _) => {
                return Err(QemuError::unsupported(
                    element,
                    line,
                    "PCI controller model: pci-root (pc) or pcie-root (q35) at index 0; pcie-root-port, pci-bridge, dmi-to-pci-bridge, pcie-to-pci-bridge above",
                ))
            }
            (ControllerType::Ide, _) if self.chipset == Chipset::I440fx && index == 0 => None,
            (ControllerType::Ide, _) => {
                return Err(QemuError::unsupported(
                    element,
                    line,
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
                    line,
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
                let mut device = json!({"driver": "qemu-xhci", "id": "usb"});
                if let Some(ports) = ports {
                    // USB 2 and USB 3 ports alike, as libvirt passes them.
                    device["p2"] = json!(ports);
                    device["p3"] = json!(ports);
                }
                Some(device)
            }
            (ControllerType::Usb, Some("ich9-ehci1")) => {
                Some(json!({"driver": "ich9-usb-ehci1", "id": "usb"}))
            }
            (ControllerType::Usb, Some(uhci @ ("ich9-uhci1" | "ich9-uhci2" | "ich9-uhci3"))) => {
                // A companion of the EHCI of its index: its ports are the EHCI's, from
                // its start port on; it has no bus of its own (no id).
                let ehci = self.controllers.iter().any(|c| {
                    c.controller_type == ControllerType::Usb
                        && c.index == index
                        && c.model.as_deref() == Some("ich9-ehci1")
                });
                if !ehci {
                    return Err(QemuError::unsupported(
                        element,
                        line,
                        "a UHCI companion needs the ich9-ehci1 controller of its index",
                    ));
                }
                let number = uhci.trim_start_matches("ich9-uhci");
                Some(json!({
                    "driver": format!("ich9-usb-uhci{number}"),
                    "masterbus": "usb.0",
                    "firstport": master_startport.unwrap_or(0),
                }))
            }
            (ControllerType::Scsi, None | Some("lsilogic")) => {
                Some(json!({"driver": "lsi", "id": format!("scsi{index}")}))
            }
            (ControllerType::Scsi, Some("virtio-scsi")) => {
                let mut device =
                    json!({"driver": "virtio-scsi-pci", "id": format!("scsi{index}")});
                if let Some(queues) = driver_queues {
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
                    line,
                    "floppy controllers are not supported",
                ))
            }
            (_, Some(model)) => {
                return Err(QemuError::unsupported(
                    format!("{element}@model"),
                    line,
                    format!("model '{model}'"),
                ))
            }
        };
        if driver_queues.is_some() && model != Some("virtio-scsi") {
            return Err(QemuError::unsupported(
                format!("{element}/driver@queues"),
                *driver_line,
                "queues apply to virtio-scsi controllers only",
            ));
        }
        Ok((device, element))
    }

    /// Read-only (protocol, format) block node pairs for a disk's backing chain, nearest first,
    /// each format node pointing at the next and the last at nothing.
    /// The protocol node of a network disk, as libvirt builds it for QEMU's block drivers, and
    /// the `secret` object its `<auth>` needs. The secret's value is never on the command line:
    /// the object reads [`RunPaths::disk_secret_file`], which the daemon writes at start.
    fn network_protocol(
        &self,
        (index, network): (usize, &NetworkSource),
        auth: Option<&DiskAuth>,
        dev: &str,
        (element, source_line): (&str, SourceLine),
    ) -> Result<(Value, Option<Value>), QemuError> {
        let NetworkSource {
            protocol,
            name,
            query,
            hosts,
            ssl_verify,
        } = network;
        let source = format!("{element}/source");
        let invalid = |why: String| QemuError::invalid(source.clone(), source_line, why);
        let protocol_name = protocol.as_str();
        let tcp = |host: &NetworkHost| match host {
            NetworkHost::Tcp { name, port } => Ok((name.clone(), *port)),
            NetworkHost::Unix { .. } => Err(invalid(format!(
                "protocol '{protocol_name}' takes a TCP host, not a unix socket"
            ))),
        };
        let one_host = || match hosts.as_slice() {
            [host] => Ok(host),
            [] => Err(invalid(format!(
                "protocol '{protocol_name}' needs a <host>"
            ))),
            _ => Err(invalid(format!(
                "protocol '{protocol_name}' accepts only one <host>"
            ))),
        };
        let inet = |name: &str, port: Option<u16>| {
            let mut server = json!({"type": "inet", "host": name});
            if let Some(port) = port {
                server["port"] = json!(port.to_string());
            }
            server
        };
        let name = name.as_deref();
        let secret_id = format!("{}-auth-secret", disk_node(dev));
        let (user, secret) = match auth {
            None => (None, None),
            Some(DiskAuth {
                username,
                secret_type,
                secret: _,
                under_disk: _,
                line,
            }) => {
                let wanted = match protocol {
                    NetworkProtocol::Iscsi
                    | NetworkProtocol::Http
                    | NetworkProtocol::Https
                    | NetworkProtocol::Ftp
                    | NetworkProtocol::Ftps => SecretUsageType::Iscsi,
                    NetworkProtocol::Rbd => SecretUsageType::Ceph,
                    NetworkProtocol::Nbd | NetworkProtocol::Gluster => {
                        return Err(QemuError::unsupported(
                            format!("{element}/auth"),
                            *line,
                            format!(
                                "protocol '{protocol_name}' has no user authentication in QEMU"
                            ),
                        ))
                    }
                };
                if *secret_type != wanted {
                    return Err(QemuError::invalid(
                        format!("{element}/auth/secret@type"),
                        *line,
                        format!(
                            "protocol '{protocol_name}' authenticates with a secret of type '{}'",
                            wanted.as_str()
                        ),
                    ));
                }
                let object = json!({
                    "qom-type": "secret",
                    "id": secret_id,
                    "format": "raw",
                    "file": self.run.disk_secret_file(dev),
                });
                (Some(username.clone()), Some(object))
            }
        };
        let node = match protocol {
            NetworkProtocol::Nbd => {
                let server = match one_host()? {
                    NetworkHost::Tcp { name, port } => inet(name, *port),
                    // Connected by launch and handed over (nbd_sockets).
                    NetworkHost::Unix { .. } => {
                        let fd = nbd_socket_fd(index).ok_or_else(|| {
                            invalid(format!(
                                "an NBD disk on a Unix socket must be one of the domain's first \
                                 {MAX_NBD_SOCKET_DISKS} disks"
                            ))
                        })?;
                        json!({"type": "fd", "str": fd.to_string()})
                    }
                };
                let mut node = json!({"driver": "nbd", "server": server});
                if let Some(export) = name {
                    node["export"] = json!(export);
                }
                node
            }
            NetworkProtocol::Iscsi => {
                let (host, port) = tcp(one_host()?)?;
                let name = name.unwrap_or_default();
                let (target, lun) = name
                    .rsplit_once('/')
                    .and_then(|(target, lun)| Some((target, lun.parse::<u32>().ok()?)))
                    .ok_or_else(|| invalid(format!("iSCSI name '{name}' is not IQN/LUN")))?;
                let portal = match port {
                    Some(port) => format!("{host}:{port}"),
                    None => host,
                };
                let mut node = json!({
                    "driver": "iscsi",
                    "portal": portal,
                    "target": target,
                    "lun": lun,
                    "transport": "tcp",
                });
                if let Some(user) = &user {
                    node["user"] = json!(user);
                    node["password-secret"] = json!(secret_id);
                }
                node
            }
            NetworkProtocol::Rbd => {
                let name = name.unwrap_or_default();
                let (pool, image) = name
                    .split_once('/')
                    .filter(|(pool, image)| !pool.is_empty() && !image.is_empty())
                    .ok_or_else(|| invalid(format!("RBD name '{name}' is not POOL/IMAGE")))?;
                let mut node = json!({"driver": "rbd", "pool": pool, "image": image});
                if !hosts.is_empty() {
                    let servers = hosts
                        .iter()
                        .map(|host| {
                            let (name, port) = tcp(host)?;
                            let mut server = json!({"host": name});
                            if let Some(port) = port {
                                server["port"] = json!(port.to_string());
                            }
                            Ok(server)
                        })
                        .collect::<Result<Vec<_>, QemuError>>()?;
                    node["server"] = json!(servers);
                }
                match &user {
                    Some(user) => {
                        node["user"] = json!(user);
                        node["auth-client-required"] = json!(["cephx", "none"]);
                        node["key-secret"] = json!(secret_id);
                    }
                    None => node["auth-client-required"] = json!(["none"]),
                }
                node
            }
            NetworkProtocol::Http
            | NetworkProtocol::Https
            | NetworkProtocol::Ftp
            | NetworkProtocol::Ftps => {
                let (host, port) = tcp(one_host()?)?;
                let path = name.unwrap_or_default();
                let slash = if path.starts_with('/') { "" } else { "/" };
                // An IPv6 literal is bracketed in a URL.
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host
                };
                let mut url = match port {
                    Some(port) => format!("{protocol_name}://{host}:{port}{slash}{path}"),
                    None => format!("{protocol_name}://{host}{slash}{path}"),
                };
                if let Some(query) = query {
                    url.push('?');
                    url.push_str(query);
                }
                let mut node = json!({"driver": protocol_name, "url": url});
                if let Some(verify) = ssl_verify {
                    node["sslverify"] = json!(verify);
                }
                if let Some(user) = &user {
                    node["username"] = json!(user);
                    node["password-secret"] = json!(secret_id);
                }
                node
            }
            NetworkProtocol::Gluster => {
                let name = name.unwrap_or_default();
                let (volume, path) = name
                    .split_once('/')
                    .filter(|(volume, path)| !volume.is_empty() && !path.is_empty())
                    .ok_or_else(|| invalid(format!("Gluster name '{name}' is not VOLUME/PATH")))?;
                if hosts.is_empty() {
                    return Err(invalid(
                        "protocol 'gluster' needs at least one <host>".into(),
                    ));
                }
                let servers: Vec<Value> = hosts
                    .iter()
                    .map(|host| match host {
                        NetworkHost::Tcp { name, port } => inet(name, *port),
                        NetworkHost::Unix { socket } => json!({"type": "unix", "path": socket}),
                    })
                    .collect();
                // libvirt's default gluster_debug_level (qemu.conf).
                json!({"driver": "gluster", "volume": volume, "path": path, "server": servers, "debug": 4})
            }
        };
        Ok((node, secret))
    }

    fn backing_nodes(
        &self,
        (format, chain): (DiskFormat, &[BackingLayer]),
        drive: &str,
        (element, driver_line, source_line): (&str, SourceLine, SourceLine),
        cache: Option<CacheFlags>,
    ) -> Result<Vec<(Value, Value)>, QemuError> {
        if !chain.is_empty() && format != DiskFormat::Qcow2 {
            return Err(QemuError::invalid(
                format!("{element}/driver@type"),
                driver_line,
                "only a qcow2 image can have a backing chain",
            ));
        }
        let node = |layer: usize| format!("{drive}-backing{layer}");
        let mut nodes = Vec::new();
        for (index, layer) in chain.iter().enumerate() {
            let BackingLayer { path, format } = layer;
            let name = node(index + 1);
            let mut protocol = json!({
                "driver": "file",
                "filename": path,
                "node-name": format!("{name}-file"),
                "read-only": true,
            });
            let mut format_node = json!({
                "driver": format.as_str(),
                "node-name": name,
                "file": format!("{name}-file"),
                "read-only": true,
            });
            if *format == DiskFormat::Qcow2 {
                format_node["backing"] = match chain.get(index + 1) {
                    Some(_) => json!(node(index + 2)),
                    None => Value::Null,
                };
            } else if index + 1 < chain.len() {
                return Err(QemuError::invalid(
                    format!("{element}/source"),
                    source_line,
                    format!("backing image {path} is raw, so nothing can be below it"),
                ));
            }
            if let Some(cache) = cache {
                let flags = json!({"direct": cache.direct, "no-flush": cache.no_flush});
                protocol["cache"] = flags.clone();
                format_node["cache"] = flags;
            }
            nodes.push((protocol, format_node));
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
            || self.controllers.iter().any(|c| {
                c.controller_type == kind && c.index == index && c.model.as_deref() != Some("none")
            })
    }

    pub(super) fn disk(&mut self, index: usize, disk: &Disk) -> Result<(), QemuError> {
        let DiskParts {
            objects,
            blockdevs,
            device,
            address,
            element,
        } = self.disk_parts(index, disk)?;
        for object in objects {
            self.arg("-object", object.to_string());
        }
        for node in blockdevs {
            self.arg("-blockdev", node.to_string());
        }
        match address {
            PartsPlacement::Pci(address) => {
                self.add_pci_device(device, address.as_ref(), &element)?
            }
            PartsPlacement::OnBus => self.devices.on_buses.push(device),
        }
        Ok(())
    }

    /// Everything disk `index` of the definition is in QEMU: the objects and block nodes (in
    /// the order they must be created) and the frontend device, the same for a start and a
    /// hot-plug ([`hotplug_disk`]).
    fn disk_parts(&self, index: usize, disk: &Disk) -> Result<DiskParts, QemuError> {
        let mut objects = Vec::new();
        let mut blockdevs = Vec::new();
        let Disk {
            disk_type,
            device,
            driver,
            source,
            // Resolved to `source` by the daemon before a start (refused below if it was not).
            volume: _,
            network,
            auth,
            target,
            // Not an argument: set over QMP before the guest runs (crate::throttle), as
            // libvirt does with -blockdev.
            iotune: _,
            readonly,
            shareable,
            serial,
            // Became `self.disk_boot` in boot_order().
            boot_order: _,
            address,
            backing_chain,
            line,
            source_line,
            serial_line,
            // Any disk can be shared (share-rw below).
            shareable_line: _,
            // Nothing about the limits is refused.
            iotune_line: _,
        } = disk;
        let DiskTarget {
            dev,
            bus,
            line: target_line,
        } = target;
        let DiskDriver {
            format,
            // The daemon opens a volume in its recorded format; by now `format` is it.
            format_stated: _,
            cache,
            io,
            discard,
            detect_zeroes,
            iothread,
            error_policy,
            rerror_policy,
            copy_on_read,
            queues,
            queue_size,
            line: driver_line,
        } = *driver;
        let element = format!("devices/disk[target@dev='{dev}']");
        if !is_qemu_identifier(dev) || !dev.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return Err(QemuError::invalid(
                format!("{element}/target@dev"),
                *target_line,
                "target dev must be like vda, sda or hda",
            ));
        }
        if *disk_type == DiskType::Volume {
            // QEMU opens files and devices; the pool volume must be resolved to its file
            // (by oxvirtd, which knows the pools) before a command line is built.
            return Err(QemuError::invalid(
                format!("{element}/source"),
                *source_line,
                "a pool volume must be resolved to its file before QEMU can open it",
            ));
        }
        let cdrom = *device == DiskDevice::Cdrom;
        let readonly = *readonly || cdrom;
        let drive = disk_node(dev);

        // Block nodes: a protocol node (the file or block device) and a format node on top.
        let mut has_medium = false;
        // The node the device reads: the format node, or a copy-on-read filter above it.
        let mut medium_node = drive.clone();
        let cache = CacheFlags::of(cache);
        let protocol = match (source, network) {
            (Some(source), _) => {
                // host_cdrom knows about tray and media changes of a real optical drive; any
                // other block device (an LV holding an ISO, say) is plain host_device, as in
                // libvirt.
                let real_cd_drive =
                    source.starts_with("/dev/sr") || source.starts_with("/dev/cdrom");
                let protocol_driver = match disk_type {
                    DiskType::Block if cdrom && real_cd_drive => "host_cdrom",
                    DiskType::Block => "host_device",
                    // (Volume disks were refused above; a network disk has no path.)
                    DiskType::File | DiskType::Volume | DiskType::Network => "file",
                };
                Some(json!({
                    "driver": protocol_driver,
                    "filename": source,
                }))
            }
            (None, Some(network)) => {
                if io.is_some() {
                    return Err(QemuError::unsupported(
                        format!("{element}/driver@io"),
                        driver_line,
                        "io= applies to file and block disks (QEMU's network drivers do their own I/O)",
                    ));
                }
                let (node, secret) = self.network_protocol(
                    (index, network),
                    auth.as_ref(),
                    dev,
                    (&element, *source_line),
                )?;
                objects.extend(secret);
                Some(node)
            }
            (None, None) => None,
        };
        if let Some(mut protocol) = protocol {
            has_medium = true;
            protocol["node-name"] = json!(format!("{drive}-file"));
            protocol["read-only"] = json!(readonly);
            let mut format_node = json!({
                "driver": format.as_str(),
                "node-name": drive,
                "file": format!("{drive}-file"),
                "read-only": readonly,
            });
            if let Some(cache) = cache {
                let flags = json!({"direct": cache.direct, "no-flush": cache.no_flush});
                protocol["cache"] = flags.clone();
                format_node["cache"] = flags;
            }
            if let Some(io) = io {
                if io == DiskIo::Native && !cache.is_some_and(|c| c.direct) {
                    return Err(QemuError::invalid(
                        format!("{element}/driver@io"),
                        driver_line,
                        "io='native' needs cache='none' or 'directsync' (O_DIRECT)",
                    ));
                }
                protocol["aio"] = json!(io.as_str());
            }
            if let Some(discard) = discard {
                let value = json!(discard.as_str());
                protocol["discard"] = value.clone();
                format_node["discard"] = value;
            }
            if let Some(detect) = detect_zeroes {
                // QEMU accepts 'unmap' only where discards are passed down; libvirt degrades it
                // to 'on' otherwise, and so do we.
                let value = match detect {
                    DetectZeroes::Off => "off",
                    DetectZeroes::On => "on",
                    DetectZeroes::Unmap if discard == Some(DiskDiscard::Unmap) => "unmap",
                    DetectZeroes::Unmap => "on",
                };
                format_node["detect-zeroes"] = json!(value);
            }
            // QEMU follows the backing file named in a qcow2 header (probing its format if
            // the header does not say) unless told otherwise; the host resolved the chain from
            // trusted metadata, so QEMU gets exactly that chain and nothing else.
            let backing_nodes = self.backing_nodes(
                (format, backing_chain),
                &drive,
                (&element, driver_line, *source_line),
                cache,
            )?;
            if format == DiskFormat::Qcow2 {
                format_node["backing"] = match backing_nodes.first() {
                    Some((_, node)) => node["node-name"].clone(),
                    None => Value::Null,
                };
            }
            // A node must exist before a node names it: the deepest backing image first.
            for (protocol, format) in backing_nodes.into_iter().rev() {
                blockdevs.push(protocol);
                blockdevs.push(format);
            }
            blockdevs.push(protocol);
            blockdevs.push(format_node);
            if copy_on_read == Some(true) {
                // As libvirt: a copy-on-read filter node on top of the format node, which the
                // device then uses (data read from a backing image is copied into the top one).
                let cor = format!("{drive}-cor");
                let node = json!({
                    "driver": "copy-on-read",
                    "node-name": cor,
                    "file": drive,
                    "discard": "unmap",
                });
                blockdevs.push(node);
                medium_node = cor;
            }
        } else if !cdrom {
            return Err(QemuError::invalid(
                format!("{element}/source"),
                *line,
                "a disk needs a source (only a cdrom may be empty)",
            ));
        }

        let placement = self.disk_placement((dev, *bus, *line), address.as_ref(), &element)?;
        let mut frontend = Map::new();
        let driver_name = match (*bus, cdrom) {
            (DiskBus::Virtio, false) => "virtio-blk-pci",
            (DiskBus::Ide | DiskBus::Sata, false) => "ide-hd",
            (DiskBus::Ide | DiskBus::Sata, true) => "ide-cd",
            (DiskBus::Scsi, false) => "scsi-hd",
            (DiskBus::Scsi, true) => "scsi-cd",
            (DiskBus::Usb, false) => "usb-storage",
            (DiskBus::Virtio | DiskBus::Usb, true) => {
                return Err(QemuError::unsupported(
                    element,
                    *line,
                    "a cdrom must be on an ide, sata or scsi bus",
                ))
            }
            (DiskBus::Fdc, _) => {
                return Err(QemuError::unsupported(
                    element,
                    *line,
                    "floppy disks are not supported",
                ))
            }
        };
        frontend.insert("driver".into(), json!(driver_name));
        for (key, value) in placement {
            frontend.insert(key, value);
        }
        if has_medium {
            frontend.insert("drive".into(), json!(medium_node));
        }
        frontend.insert("id".into(), json!(dev));
        // <boot order> was turned into this by boot_order().
        if let Some(bootindex) = self.disk_boot[index] {
            frontend.insert("bootindex".into(), json!(bootindex));
        }
        if let Some(cache) = cache {
            frontend.insert("write-cache".into(), json!(on_off(cache.write_cache)));
        }
        if let Some(serial) = serial {
            if driver_name == "usb-storage" || cdrom && *bus == DiskBus::Scsi {
                return Err(QemuError::unsupported(
                    format!("{element}/serial"),
                    *serial_line,
                    "this disk type has no serial number",
                ));
            }
            frontend.insert("serial".into(), json!(serial));
        }
        if *shareable {
            frontend.insert("share-rw".into(), json!(true));
        }
        if let Some(iothread) = iothread {
            if *bus != DiskBus::Virtio {
                return Err(QemuError::unsupported(
                    format!("{element}/driver@iothread"),
                    driver_line,
                    "IOThreads apply to virtio disks only",
                ));
            }
            if !self.iothreads.contains(&iothread) {
                return Err(QemuError::invalid(
                    format!("{element}/driver@iothread"),
                    driver_line,
                    format!("iothread {iothread} is not defined by <iothreads>/<iothreadids>"),
                ));
            }
            frontend.insert("iothread".into(), json!(super::iothread_qom_id(iothread)));
        }
        for (attribute, value, property) in [
            ("queues", queues, "num-queues"),
            ("queue_size", queue_size, "queue-size"),
        ] {
            let Some(value) = value else { continue };
            if driver_name != "virtio-blk-pci" {
                return Err(QemuError::invalid(
                    format!("{element}/driver@{attribute}"),
                    driver_line,
                    format!("{attribute} applies to virtio disks only"),
                ));
            }
            frontend.insert(property.into(), json!(value));
        }
        // libvirt's mapping: error_policy is werror (enospace spelled 'enospc'); rerror is
        // rerror_policy, or the same policy when only error_policy is given (QEMU has no
        // 'enospc' for reads, so that one leaves reads at QEMU's default).
        let werror = error_policy.map(|p| match p {
            DiskErrorPolicy::Enospace => "enospc",
            other => other.as_str(),
        });
        let rerror = match (rerror_policy, error_policy) {
            (Some(policy), _) => Some(policy.as_str()),
            (None, Some(DiskErrorPolicy::Enospace)) | (None, None) => None,
            (None, Some(policy)) => Some(policy.as_str()),
        };
        if werror.is_some() || rerror.is_some() {
            // usb-storage has no error properties in QEMU.
            if driver_name == "usb-storage" {
                return Err(QemuError::unsupported(
                    format!("{element}/driver@error_policy"),
                    driver_line,
                    "USB disks have no error policy in QEMU",
                ));
            }
            if let Some(werror) = werror {
                frontend.insert("werror".into(), json!(werror));
            }
            if let Some(rerror) = rerror {
                frontend.insert("rerror".into(), json!(rerror));
            }
        }
        Ok(DiskParts {
            objects,
            blockdevs,
            device: Value::Object(frontend),
            address: if *bus == DiskBus::Virtio {
                PartsPlacement::Pci(address.clone())
            } else {
                PartsPlacement::OnBus
            },
            element,
        })
    }

    /// Where a non-PCI disk plugs in: bus properties for its `-device`, per bus type. `disk` is
    /// the target's name and bus, and the line of the `<disk>`.
    pub(super) fn disk_placement(
        &self,
        (dev, bus, line): (&str, DiskBus, SourceLine),
        address: Option<&Address>,
        element: &str,
    ) -> Result<Vec<(String, Value)>, QemuError> {
        let drive_address = match address {
            Some(Address::Drive(address)) => Some(*address),
            Some(Address::Pci(_)) if bus == DiskBus::Virtio => None,
            Some(Address::Usb(_)) if bus == DiskBus::Usb => None,
            None => None,
            Some(other) => {
                return Err(QemuError::invalid(
                    format!("{element}/address"),
                    other.line(),
                    "address type does not fit the disk bus",
                ))
            }
        };
        // Errors about a drive address point at the <address>.
        let address_line = address.map_or(line, Address::line);
        let unit_index = target_index(dev);
        let props: Vec<(String, Value)> = match bus {
            DiskBus::Virtio => Vec::new(),
            DiskBus::Ide => {
                if self.chipset == Chipset::Q35 {
                    return Err(QemuError::unsupported(
                        element,
                        line,
                        "q35 has no IDE bus: use bus='sata'",
                    ));
                }
                let (ide_bus, unit) = match drive_address {
                    Some(DriveAddress {
                        controller: 0,
                        bus,
                        target: 0,
                        unit,
                        line: _,
                    }) if bus < 2 && unit < 2 => (bus, unit),
                    Some(_) => {
                        return Err(QemuError::invalid(
                            format!("{element}/address"),
                            address_line,
                            "IDE has controller 0, buses 0-1, units 0-1",
                        ))
                    }
                    None => match unit_index {
                        Some(i) if i < 4 => (i / 2, i % 2),
                        _ => {
                            return Err(QemuError::invalid(
                                element,
                                line,
                                "IDE targets are hda-hdd",
                            ))
                        }
                    },
                };
                vec![
                    ("bus".into(), json!(format!("ide.{ide_bus}"))),
                    ("unit".into(), json!(unit)),
                ]
            }
            DiskBus::Sata => {
                let (controller, port) = match drive_address {
                    Some(DriveAddress {
                        controller,
                        bus: 0,
                        target: 0,
                        unit,
                        line: _,
                    }) => (controller, unit),
                    Some(_) => {
                        return Err(QemuError::invalid(
                            format!("{element}/address"),
                            address_line,
                            "SATA uses controller and unit only",
                        ))
                    }
                    None => match unit_index {
                        Some(i) => (i / 6, i % 6),
                        None => {
                            return Err(QemuError::invalid(
                                element,
                                line,
                                "cannot derive a SATA port from the target dev",
                            ))
                        }
                    },
                };
                if port >= 6 {
                    return Err(QemuError::invalid(
                        format!("{element}/address"),
                        address_line,
                        "an AHCI controller has ports 0-5",
                    ));
                }
                if !self.has_controller(ControllerType::Sata, controller) {
                    return Err(QemuError::invalid(
                        element,
                        line,
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
                        Some(i) => DriveAddress {
                            controller: i / 7,
                            bus: 0,
                            target: 0,
                            unit: i % 7,
                            line: SourceLine::NONE,
                        },
                        None => {
                            return Err(QemuError::invalid(
                                element,
                                line,
                                "cannot derive a SCSI unit from the target dev",
                            ))
                        }
                    },
                };
                let DriveAddress {
                    controller,
                    bus: channel,
                    target,
                    unit,
                    line: _,
                } = address;
                if !self.has_controller(ControllerType::Scsi, controller) {
                    return Err(QemuError::invalid(
                        element,
                        line,
                        format!("no SCSI controller {controller}"),
                    ));
                }
                let virtio = self.controllers.iter().any(|c| {
                    c.controller_type == ControllerType::Scsi
                        && c.index == controller
                        && c.model.as_deref() == Some("virtio-scsi")
                });
                let mut props = vec![("bus".into(), json!(format!("scsi{controller}.0")))];
                if virtio {
                    props.push(("channel".into(), json!(channel)));
                    props.push(("scsi-id".into(), json!(target)));
                    props.push(("lun".into(), json!(unit)));
                } else {
                    // The LSI controller is a parallel SCSI HBA: one LUN per target, unit is the id.
                    if channel != 0 || target != 0 {
                        return Err(QemuError::unsupported(
                            format!("{element}/address"),
                            address_line,
                            "the lsi controller uses unit only",
                        ));
                    }
                    props.push(("scsi-id".into(), json!(unit)));
                }
                props
            }
            DiskBus::Usb => {
                if !self.has_controller(ControllerType::Usb, 0) {
                    return Err(QemuError::invalid(
                        element,
                        line,
                        "a USB disk needs a USB controller",
                    ));
                }
                let mut props = vec![
                    ("bus".into(), json!("usb.0")),
                    ("removable".into(), json!(false)),
                ];
                if let Some(Address::Usb(UsbAddress {
                    bus,
                    port,
                    line: usb_line,
                })) = address
                {
                    if *bus != 0 {
                        return Err(QemuError::invalid(
                            format!("{element}/address"),
                            *usb_line,
                            "there is one USB bus, 0",
                        ));
                    }
                    if let Some(port) = port {
                        props.push(("port".into(), json!(port)));
                    }
                }
                props
            }
            DiskBus::Fdc => Vec::new(),
        };
        Ok(props)
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
fn is_usb_companion(model: Option<&str>) -> bool {
    matches!(model, Some("ich9-uhci1" | "ich9-uhci2" | "ich9-uhci3"))
}

/// A PCI controller above the root bus: libvirt's `-device` for it, its bus `pci.N` (N its
/// index) for the devices plugged into it. The numbers come from the normalized definition
/// (libvirt's defaults are filled in there).
fn pci_controller(
    kind: &str,
    index: u32,
    (model_name, model_name_line): (Option<&str>, SourceLine),
    target: Option<&ControllerTarget>,
    element: &str,
) -> Result<Value, QemuError> {
    let (default_name, names): (&str, &[&str]) = match kind {
        "pcie-root-port" => ("pcie-root-port", &["pcie-root-port", "ioh3420"]),
        "pci-bridge" => ("pci-bridge", &["pci-bridge"]),
        "dmi-to-pci-bridge" => ("i82801b11-bridge", &["i82801b11-bridge"]),
        _ => ("pcie-pci-bridge", &["pcie-pci-bridge"]),
    };
    let driver = model_name.unwrap_or(default_name);
    if !names.contains(&driver) {
        return Err(QemuError::unsupported(
            format!("{element}/model@name"),
            model_name_line,
            format!("model name '{driver}' for a {kind}"),
        ));
    }
    let mut device = json!({"driver": driver});
    let ControllerTarget {
        chassis_nr,
        chassis,
        port,
        line: _,
    } = target.copied().unwrap_or_default();
    match kind {
        "pcie-root-port" => {
            if let Some(port) = port {
                device["port"] = json!(port);
            }
            if let Some(chassis) = chassis {
                device["chassis"] = json!(chassis);
            }
        }
        "pci-bridge" => {
            device["chassis_nr"] = json!(chassis_nr.unwrap_or(index));
        }
        _ => {}
    }
    device["id"] = json!(format!("pci.{index}"));
    Ok(device)
}

fn is_builtin_address_ok(address: &Address, kind: ControllerType, chipset: Chipset) -> bool {
    match (address, kind, chipset) {
        (Address::Pci(a), ControllerType::Ide, Chipset::I440fx) => {
            a.bus == 0 && a.slot == 1 && a.function == 1
        }
        (Address::Pci(a), ControllerType::Sata, Chipset::Q35) => {
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
