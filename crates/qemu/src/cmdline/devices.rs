//! Serial ports, network, input, display, sound, memory balloon and RNG devices.

use oxvirt_domain::{
    Address, Channel, ChannelSource, CharDevice, CharSource, CharTarget, ControllerType, Graphics,
    HostDev, HostDevSource, Input, InputBus, InputType, Interface, InterfaceDriverName,
    InterfaceSource, InterfaceType, MacAddr, MemBalloon, MemBalloonModel, Rng, TcpProtocol,
    UnixMode, Video, VideoModel, VirtioSerialAddress, VncListen,
};
use serde_json::json;

use super::{
    escape_opt, kib_to_mib_rounded_up, on_off, Builder, DEFAULT_NIC_MODEL, VNC_AUTOPORT_DISPLAYS,
    VNC_BASE_PORT,
};
use crate::QemuError;

/// The memory balloon's device id (libvirt's alias for it).
const BALLOON_ID: &str = "balloon0";
/// Where the balloon device is in QEMU's object tree, for `qom-get`/`qom-set` of its
/// `guest-stats` and `guest-stats-polling-interval` properties.
pub const BALLOON_QOM_PATH: &str = "/machine/peripheral/balloon0";

/// QEMU's ids of one NIC: the guest device (`-device`, `device_add`) and its host backend
/// (`-netdev`, `netdev_add`). The command line and hot-plug name NICs by these rules, so the
/// daemon never builds QEMU ids itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicIds {
    pub device: String,
    pub netdev: String,
}

impl NicIds {
    /// The ids the command line gives interface number `index` of the definition.
    pub fn at_start(index: usize) -> NicIds {
        NicIds {
            device: format!("net{index}"),
            netdev: format!("hostnet{index}"),
        }
    }

    /// The ids of a NIC hot-plugged into a running guest: named after its MAC, so unique in
    /// the guest (a domain's MACs are unique) and never one of the start-time ids.
    pub fn hotplug(mac: MacAddr) -> NicIds {
        let hex: String = mac.0.iter().map(|b| format!("{b:02x}")).collect();
        NicIds {
            device: format!("net-hp{hex}"),
            netdev: format!("hostnet-hp{hex}"),
        }
    }
}

/// QEMU's device for a libvirt NIC model (`<model type=>`), if this engine supports it.
pub fn nic_driver(model: &str) -> Option<&'static str> {
    match model {
        "virtio" => Some("virtio-net-pci"),
        "e1000" => Some("e1000"),
        "e1000e" => Some("e1000e"),
        "rtl8139" => Some("rtl8139"),
        _ => None,
    }
}

impl Builder<'_> {
    // ----- character devices ------------------------------------------------------------------

    pub(super) fn serials(
        &mut self,
        serials: &[CharDevice],
        consoles: &[CharDevice],
    ) -> Result<(), QemuError> {
        for (index, console) in consoles.iter().enumerate() {
            match console.target.target_type.as_deref() {
                None | Some("serial") => {}
                Some(other) => {
                    return Err(QemuError::unsupported(
                        format!("devices/console[{index}]/target@type"),
                        console.target.line,
                        format!("console type '{other}': only serial consoles are supported"),
                    ))
                }
            }
        }
        let serials = effective_serials(serials, consoles);
        let mut console_socket_used = false;
        for (index, serial) in serials.iter().enumerate() {
            let CharDevice {
                source,
                target,
                line,
            } = serial;
            let CharTarget {
                target_type,
                port,
                model,
                line: target_line,
            } = target;
            let element = format!("devices/serial[{index}]");
            let port = port.unwrap_or(index as u32);
            let type_ok = matches!(target_type.as_deref(), None | Some("isa-serial"));
            let model_ok = matches!(model.as_deref(), None | Some("isa-serial"));
            if !type_ok || !model_ok {
                return Err(QemuError::unsupported(
                    format!("{element}/target"),
                    *target_line,
                    "only ISA serial ports are supported",
                ));
            }
            if port > 3 {
                return Err(QemuError::invalid(
                    format!("{element}/target@port"),
                    *target_line,
                    "a PC has ISA serial ports 0-3",
                ));
            }
            let id = format!("charserial{port}");
            let chardev = match source {
                CharSource::Pty if !console_socket_used => {
                    console_socket_used = true;
                    self.console_chardev(&id)
                }
                CharSource::Pty => {
                    return Err(QemuError::unsupported(
                        element,
                        *line,
                        "only one pty serial port: it is served as the VM console socket",
                    ))
                }
                CharSource::File { .. } => {
                    // Opened by launch and handed over (char_files): QEMU, maybe a user of its
                    // own, need not reach the file's directory. Launch emptied it or not;
                    // without append=on QEMU would truncate the handed file again (as libvirt,
                    // which hands files over the same way, always says append=on).
                    let (fd, set) = char_file_fd(port);
                    self.arg("-add-fd", format!("fd={fd},set={set}"));
                    format!("file,id={id},path=/dev/fdset/{set},append=on")
                }
                CharSource::Unix { mode, .. } => {
                    // Bound or connected by launch and handed over (char_sockets), as libvirt
                    // does: QEMU, maybe a user of its own, need not reach the socket's path.
                    let (fd, _) = char_file_fd(port);
                    let bind = *mode == UnixMode::Bind;
                    format!(
                        "socket,id={id},fd={fd},server={}{}",
                        on_off(bind),
                        if bind { ",wait=off" } else { "" }
                    )
                }
                CharSource::Tcp {
                    mode,
                    host,
                    service,
                    protocol,
                } => tcp_chardev(&id, *mode, host, service, *protocol),
                CharSource::Udp {
                    bind_host,
                    bind_service,
                    connect_host,
                    connect_service,
                } => udp_chardev(
                    &id,
                    (connect_host.as_deref(), connect_service),
                    (bind_host.as_deref(), bind_service.as_deref()),
                ),
                // What goes to stdio lands in qemu.log (QEMU's stdin is /dev/null).
                CharSource::Null => format!("null,id={id}"),
                CharSource::Stdio => format!("stdio,id={id}"),
                CharSource::Vc => format!("vc,id={id}"),
            };
            self.arg("-chardev", chardev);
            self.devices.on_buses.push(json!({
                "driver": "isa-serial", "chardev": id, "id": format!("serial{port}"), "index": port,
            }));
        }
        if serials.is_empty() {
            // Every VM gets a console on ttyS0 so the daemon can always offer one.
            let chardev = self.console_chardev("charserial0");
            self.arg("-chardev", chardev);
            self.devices.on_buses.push(json!({
                "driver": "isa-serial", "chardev": "charserial0", "id": "serial0", "index": 0,
            }));
        }
        Ok(())
    }

    pub(super) fn console_chardev(&self, id: &str) -> String {
        format!(
            "socket,id={id},path={},server=on,wait=off,logfile={},logappend=on",
            escape_opt(&self.run.console_socket().to_string_lossy()),
            escape_opt(&self.run.console_log_target().to_string_lossy()),
        )
    }

    // ----- network ----------------------------------------------------------------------------

    /// `fds`: the descriptors launch hands QEMU for this interface ([`nic_fds`]).
    pub(super) fn interface(
        &mut self,
        index: usize,
        interface: &Interface,
        fds: &NicFds,
    ) -> Result<(), QemuError> {
        let Interface {
            interface_type,
            mac,
            source,
            model,
            driver_name,
            driver_queues,
            target_dev,
            target_managed,
            mtu,
            // Set over QMP right after start (see launch): QEMU has no command-line property.
            link_up: _,
            // Became `self.interface_boot` in boot_order().
            boot_order: _,
            address,
            line,
            model_line,
            driver_line,
            target_line,
            mtu_line,
            // Any link state can be set (over QMP, like `link_up`).
            link_line: _,
        } = interface;
        let element = format!("devices/interface[{index}]");
        let ids = NicIds::at_start(index);
        let queues = driver_queues.unwrap_or(1);
        let model = model.as_deref().unwrap_or(DEFAULT_NIC_MODEL);
        let virtio = model == "virtio";

        let mut netdev = json!({"id": ids.netdev});
        match interface_type {
            InterfaceType::User => {
                netdev["type"] = json!("user");
                if queues > 1 {
                    return Err(QemuError::unsupported(
                        format!("{element}/driver@queues"),
                        *driver_line,
                        "user networking has one queue",
                    ));
                }
                if target_dev.is_some() {
                    return Err(QemuError::invalid(
                        format!("{element}/target"),
                        *target_line,
                        "type='user' has no host device",
                    ));
                }
                if *driver_name == Some(InterfaceDriverName::Vhost) {
                    return Err(QemuError::unsupported(
                        format!("{element}/driver@name"),
                        *driver_line,
                        "vhost needs a TAP device",
                    ));
                }
            }
            InterfaceType::Direct => {
                // The daemon made the macvtap device (<target dev>); launch opens its
                // /dev/tapN and hands it to QEMU as this descriptor, as libvirt does.
                if target_dev.is_none() {
                    return Err(QemuError::unsupported(
                        element,
                        *line,
                        "type='direct' needs the macvtap device the network layer makes (<target dev=>), which none was",
                    ));
                }
                if *driver_name == Some(InterfaceDriverName::Vhost) {
                    return Err(QemuError::unsupported(
                        format!("{element}/driver@name"),
                        *driver_line,
                        "vhost on a macvtap device needs a /dev/vhost-net descriptor, which oxvirt does not pass",
                    ));
                }
                if queues > 1 {
                    return Err(QemuError::unsupported(
                        format!("{element}/driver@queues"),
                        *driver_line,
                        "a macvtap device is opened once: one queue",
                    ));
                }
                netdev["type"] = json!("tap");
                netdev["fd"] = json!(fds.list(&fds.taps));
            }
            InterfaceType::Network | InterfaceType::Bridge | InterfaceType::Ethernet => {
                // The TAP device is created (and attached to the bridge, or the network's bridge)
                // by the daemon's network layer, or is the host's own (ethernet, managed='no');
                // launch opens it (once per queue) and hands QEMU the descriptors, as libvirt
                // does: a confined QEMU has no /dev/net/tun, nor /dev/vhost-net.
                let Some(tap) = target_dev else {
                    if *target_managed == Some(false) {
                        return Err(QemuError::invalid(
                            format!("{element}/target"),
                            *target_line,
                            "managed='no' names an existing TAP: it needs dev=",
                        ));
                    }
                    let what = match source {
                        InterfaceSource::Network(name) => format!("network '{name}'"),
                        InterfaceSource::Bridge(name) => format!("bridge '{name}'"),
                        InterfaceSource::None | InterfaceSource::Direct { .. } => {
                            "its TAP".to_string()
                        }
                    };
                    return Err(QemuError::unsupported(
                        element,
                        *line,
                        format!("connecting to {what} needs a TAP device prepared by the network layer (<target dev=>), which none was"),
                    ));
                };
                if tap.is_empty() || tap.len() > 15 || tap.contains(['/', ',', ' ']) {
                    return Err(QemuError::invalid(
                        format!("{element}/target@dev"),
                        *target_line,
                        format!("'{tap}' is not a network interface name"),
                    ));
                }
                if queues > MAX_NIC_QUEUES {
                    return Err(QemuError::invalid(
                        format!("{element}/driver@queues"),
                        *driver_line,
                        format!("a TAP has at most {MAX_NIC_QUEUES} queues"),
                    ));
                }
                netdev["type"] = json!("tap");
                // QEMU takes one descriptor as fd= (vhostfd=), several as fds= (vhostfds=),
                // and the queue count from them.
                let (fd_key, vhost_key) = if fds.taps.len() > 1 {
                    ("fds", "vhostfds")
                } else {
                    ("fd", "vhostfd")
                };
                netdev[fd_key] = json!(fds.list(&fds.taps));
                match driver_name {
                    Some(InterfaceDriverName::Vhost) => {
                        netdev["vhost"] = json!(true);
                        netdev[vhost_key] = json!(fds.list(&fds.vhosts));
                    }
                    Some(InterfaceDriverName::Qemu) => netdev["vhost"] = json!(false),
                    None => {}
                }
            }
        }
        self.arg("-netdev", netdev.to_string());

        let driver = nic_driver(model).ok_or_else(|| {
            QemuError::unsupported(
                format!("{element}/model@type"),
                *model_line,
                format!("NIC model '{model}'"),
            )
        })?;
        let mut device = json!({"driver": driver, "netdev": ids.netdev, "id": ids.device});
        if let Some(mac) = mac {
            device["mac"] = json!(mac.to_string());
        }
        if queues > 1 {
            if !virtio {
                return Err(QemuError::unsupported(
                    format!("{element}/driver@queues"),
                    *driver_line,
                    "multiqueue needs model virtio",
                ));
            }
            device["mq"] = json!(true);
            // One vector per RX and TX queue, plus config and control.
            device["vectors"] = json!(2 * queues + 2);
        }
        if let Some(mtu) = mtu {
            if !virtio {
                return Err(QemuError::unsupported(
                    format!("{element}/mtu"),
                    *mtu_line,
                    "an MTU can only be announced by virtio NICs",
                ));
            }
            device["host_mtu"] = json!(mtu);
        }
        if let Some(bootindex) = self.interface_boot[index] {
            device["bootindex"] = json!(bootindex);
        }
        self.add_pci_device(device, address.as_ref(), &element)
    }

    // ----- input, display, misc ---------------------------------------------------------------

    pub(super) fn inputs(&mut self, inputs: &[Input]) -> Result<(), QemuError> {
        for (index, input) in inputs.iter().enumerate() {
            let Input {
                input_type,
                bus,
                address,
                line,
            } = input;
            let element = format!("devices/input[{index}]");
            let driver = match (bus, input_type) {
                // The PS/2 keyboard and mouse are part of every PC (the i8042 controller).
                (InputBus::Ps2, InputType::Mouse | InputType::Keyboard) => continue,
                (InputBus::Ps2, InputType::Tablet) => {
                    return Err(QemuError::invalid(
                        element,
                        *line,
                        "there is no PS/2 tablet",
                    ))
                }
                (InputBus::Usb, kind) => {
                    if !self.has_controller(ControllerType::Usb, 0) {
                        return Err(QemuError::invalid(
                            element,
                            *line,
                            "a USB input device needs a USB controller",
                        ));
                    }
                    let driver = match kind {
                        InputType::Mouse => "usb-mouse",
                        InputType::Keyboard => "usb-kbd",
                        InputType::Tablet => "usb-tablet",
                    };
                    self.devices.on_buses.push(
                        json!({"driver": driver, "id": format!("input{index}"), "bus": "usb.0"}),
                    );
                    continue;
                }
                (InputBus::Virtio, InputType::Mouse) => "virtio-mouse-pci",
                (InputBus::Virtio, InputType::Keyboard) => "virtio-keyboard-pci",
                (InputBus::Virtio, InputType::Tablet) => "virtio-tablet-pci",
            };
            let device = json!({"driver": driver, "id": format!("input{index}")});
            self.add_pci_device(device, address.as_ref(), &element)?;
        }
        Ok(())
    }

    pub(super) fn graphics_and_video(
        &mut self,
        graphics: &[Graphics],
        videos: &[Video],
    ) -> Result<(), QemuError> {
        match graphics {
            [] => self.arg("-display", "none"),
            [graphics] => match &graphics.spice {
                Some(spice) => {
                    let spice = self.spice(graphics, spice)?;
                    self.arg("-spice", spice);
                }
                None => {
                    let vnc = self.vnc(graphics)?;
                    self.arg("-vnc", vnc);
                }
            },
            [_, second, ..] => {
                return Err(QemuError::unsupported(
                    "devices/graphics[1]",
                    second.line,
                    "only one graphics device",
                ))
            }
        }
        for (index, video) in videos.iter().enumerate() {
            let Video {
                model,
                ram_kib,
                vram_kib,
                vgamem_kib,
                heads,
                primary,
                address,
                line: _,
                model_line,
            } = video;
            let element = format!("devices/video[{index}]");
            let primary = index == 0 || *primary;
            let driver = match model {
                VideoModel::None => continue,
                VideoModel::Vga => "VGA",
                VideoModel::Cirrus => "cirrus-vga",
                VideoModel::Bochs => "bochs-display",
                VideoModel::Virtio if primary => "virtio-vga",
                VideoModel::Virtio => "virtio-gpu-pci",
                VideoModel::Ramfb => "ramfb",
                VideoModel::Qxl if primary => "qxl-vga",
                VideoModel::Qxl => "qxl",
            };
            let mut device = json!({"driver": driver, "id": format!("video{index}")});
            if *model == VideoModel::Qxl {
                // libvirt's QXL properties: ram and vram in bytes, vgamem in MiB, one output
                // per head (normalization filled in libvirt's defaults).
                if let Some(ram) = ram_kib {
                    device["ram_size"] = json!(ram * 1024);
                }
                if let Some(vram) = vram_kib {
                    device["vram_size"] = json!(vram * 1024);
                }
                device["vram64_size_mb"] = json!(0);
                if let Some(vgamem) = vgamem_kib {
                    device["vgamem_mb"] = json!(kib_to_mib_rounded_up(*vgamem));
                }
                device["max_outputs"] = json!(heads.unwrap_or(1));
            } else if ram_kib.is_some() || vgamem_kib.is_some() {
                return Err(QemuError::unsupported(
                    format!("{element}/model"),
                    *model_line,
                    "ram and vgamem apply to qxl only",
                ));
            }
            if let Some(vram) = vram_kib.as_ref().filter(|_| *model != VideoModel::Qxl) {
                match model {
                    VideoModel::Vga | VideoModel::Cirrus => device["vgamem_mb"] = json!(kib_to_mib_rounded_up(*vram)),
                    VideoModel::Bochs => device["vgamem"] = json!(vram * 1024),
                    _ => self.warnings.push(format!(
                        "{element}: vram is not adjustable for this video model in QEMU; using the model's own size"
                    )),
                }
            }
            match heads {
                Some(_) if *model == VideoModel::Qxl => {}
                Some(heads) if *heads > 1 && *model == VideoModel::Virtio => {
                    device["max_outputs"] = json!(heads)
                }
                Some(heads) if *heads > 1 => {
                    return Err(QemuError::unsupported(
                        format!("{element}/model@heads"),
                        *model_line,
                        "several heads need model virtio",
                    ))
                }
                _ => {}
            }
            if *model == VideoModel::Ramfb {
                self.devices.on_buses.push(device);
            } else {
                self.add_pci_device(device, address.as_ref(), &element)?;
            }
        }
        Ok(())
    }

    pub(super) fn vnc(&self, graphics: &Graphics) -> Result<String, QemuError> {
        let Graphics {
            listen,
            port,
            autoport,
            // Set over QMP right after start, so it never shows in `ps` (see launch).
            passwd,
            spice,
            line,
        } = graphics;
        if spice.is_some() {
            return Err(QemuError::invalid(
                "devices/graphics",
                *line,
                "a SPICE display is not a VNC one (spice.rs builds it)",
            ));
        }
        let mut vnc = match listen {
            VncListen::Socket(path) => format!("unix:{}", escape_opt(path)),
            // Only SPICE displays listen nowhere (refused above).
            VncListen::None => {
                return Err(QemuError::unsupported(
                    "devices/graphics/listen",
                    *line,
                    "a display without a listener",
                ))
            }
            VncListen::Address(address) => {
                let host = address.as_deref().unwrap_or("127.0.0.1");
                if host.contains(',') {
                    return Err(QemuError::invalid(
                        "devices/graphics@listen",
                        *line,
                        "not an address",
                    ));
                }
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host.to_string()
                };
                match (port, autoport) {
                    (Some(port), false) if *port >= VNC_BASE_PORT => {
                        format!("{host}:{}", port - VNC_BASE_PORT)
                    }
                    (Some(_), false) => {
                        return Err(QemuError::invalid(
                            "devices/graphics@port",
                            *line,
                            format!("VNC ports start at {VNC_BASE_PORT}"),
                        ))
                    }
                    // autoport: QEMU takes the first free display from :0 up.
                    _ => format!("{host}:0,to={VNC_AUTOPORT_DISPLAYS}"),
                }
            }
        };
        if passwd.is_some() {
            vnc.push_str(",password=on");
        }
        Ok(vnc)
    }

    /// `<channel>`: virtio-serial ports (`virtserialport`) on the controller normalization
    /// added, each with its chardev, as libvirt builds them.
    pub(super) fn channels(
        &mut self,
        channels: &[Channel],
        spice_display: bool,
    ) -> Result<(), QemuError> {
        for (index, channel) in channels.iter().enumerate() {
            let Channel {
                source,
                target_name,
                address,
                line,
            } = channel;
            let element = format!("devices/channel[{index}]");
            let id = format!("charchannel{index}");
            let chardev = match source {
                ChannelSource::Unix { mode, path } => {
                    let bind = *mode == UnixMode::Bind;
                    let socket = match path {
                        // At a path of the definition's: bound or connected by launch and
                        // handed over (char_sockets), as a serial port's.
                        Some(_) => {
                            let fd = channel_socket_fd(index).ok_or_else(|| {
                                QemuError::unsupported(
                                    element.clone(),
                                    *line,
                                    format!(
                                        "a channel on a Unix socket path must be one of the \
                                         first {MAX_CHANNEL_SOCKETS} channels"
                                    ),
                                )
                            })?;
                            format!("fd={fd}")
                        }
                        // A bind socket without a path goes into QEMU's part of the run
                        // directory, named after the port (libvirt: its channel directory),
                        // which QEMU makes as its own.
                        None => format!(
                            "path={}",
                            escape_opt(
                                &self
                                    .run
                                    .qemu_dir()
                                    .join(format!("channel-{index}.sock"))
                                    .to_string_lossy()
                            )
                        ),
                    };
                    format!(
                        "socket,id={id},{socket},server={}{}",
                        on_off(bind),
                        if bind { ",wait=off" } else { "" }
                    )
                }
                ChannelSource::Pty => {
                    return Err(QemuError::unsupported(
                        element,
                        *line,
                        "pty channels are not supported (use a unix socket)",
                    ))
                }
                // The SPICE agent's port, carried by the SPICE server.
                ChannelSource::SpiceVmc if spice_display => {
                    format!("spicevmc,id={id},name=vdagent")
                }
                ChannelSource::SpiceVmc => {
                    return Err(QemuError::invalid(
                        element,
                        *line,
                        "the SPICE agent channel needs a SPICE display",
                    ))
                }
            };
            let Some(Address::VirtioSerial(VirtioSerialAddress {
                controller,
                bus,
                port,
                line: _,
            })) = address
            else {
                return Err(QemuError::invalid(
                    element,
                    *line,
                    "a channel needs a virtio-serial address (normalization gives one)",
                ));
            };
            if *bus != 0 {
                return Err(QemuError::unsupported(
                    format!("{element}/address@bus"),
                    *line,
                    "virtio-serial bus 0 only",
                ));
            }
            self.arg("-chardev", chardev);
            self.devices.on_buses.push(json!({
                "driver": "virtserialport",
                "bus": format!("virtio-serial{controller}.0"),
                "nr": port,
                "chardev": id,
                "id": format!("channel{index}"),
                "name": target_name,
            }));
        }
        Ok(())
    }

    /// The balloon device, if the domain has one (id [`BALLOON_ID`]); returns whether it does.
    pub(super) fn memballoon(&mut self, balloon: Option<&MemBalloon>) -> Result<bool, QemuError> {
        let Some(MemBalloon {
            model,
            autodeflate,
            // Set over QMP right after start (see launch).
            stats_period: _,
            address,
            line: _,
        }) = balloon
        else {
            return Ok(false);
        };
        if *model == MemBalloonModel::None {
            return Ok(false);
        }
        let mut device = json!({"driver": "virtio-balloon-pci", "id": BALLOON_ID});
        if let Some(deflate) = autodeflate {
            device["deflate-on-oom"] = json!(deflate);
        }
        self.add_pci_device(device, address.as_ref(), "devices/memballoon")?;
        Ok(true)
    }

    /// `<hostdev>`: PCI functions through VFIO (`vfio-pci`), USB devices through `usb-host`,
    /// with libvirt's ids (`hostdev0`, ...). That the host can give the device (an IOMMU, the
    /// vfio-pci driver, the device present) is the daemon's start-time check.
    pub(super) fn hostdevs(&mut self, hostdevs: &[HostDev]) -> Result<(), QemuError> {
        for (index, hostdev) in hostdevs.iter().enumerate() {
            let HostDev {
                source,
                // Binding to vfio-pci at start (and back at stop) is the daemon's job.
                managed: _,
                // VFIO is the only PCI backend.
                driver_vfio: _,
                boot_order,
                rom_bar,
                address,
                line,
            } = hostdev;
            let element = format!("devices/hostdev[{index}]");
            let id = format!("hostdev{index}");
            match source {
                HostDevSource::Pci { .. } => {
                    let mut device = json!({
                        "driver": "vfio-pci",
                        "host": source.pci_name(),
                        "id": id,
                    });
                    if let Some(order) = boot_order {
                        device["bootindex"] = json!(order);
                    }
                    if let Some(bar) = rom_bar {
                        device["rombar"] = json!(u8::from(*bar));
                    }
                    self.add_pci_device(device, address.as_ref(), &element)?;
                }
                HostDevSource::Usb {
                    vendor,
                    product,
                    bus,
                    device: host_device,
                    // The daemon leaves a missing optional device out before a start.
                    optional: _,
                } => {
                    if !self.has_controller(ControllerType::Usb, 0) {
                        return Err(QemuError::invalid(
                            element,
                            *line,
                            "a USB host device needs a USB controller",
                        ));
                    }
                    if address.is_some() {
                        return Err(QemuError::unsupported(
                            format!("{element}/address"),
                            *line,
                            "USB host devices are placed on the first free port",
                        ));
                    }
                    let mut device = json!({"driver": "usb-host", "id": id, "bus": "usb.0"});
                    match (bus, host_device) {
                        (Some(bus), Some(host_device)) => {
                            device["hostbus"] = json!(bus);
                            device["hostaddr"] = json!(host_device);
                        }
                        _ => {
                            device["vendorid"] = json!(vendor.unwrap_or_default());
                            device["productid"] = json!(product.unwrap_or_default());
                        }
                    }
                    if let Some(order) = boot_order {
                        device["bootindex"] = json!(order);
                    }
                    self.devices.on_buses.push(device);
                }
            }
        }
        Ok(())
    }

    pub(super) fn rngs(&mut self, rngs: &[Rng]) -> Result<(), QemuError> {
        for (index, rng) in rngs.iter().enumerate() {
            let Rng {
                backend_random,
                address,
                line: _,
            } = rng;
            let backend = format!("objrng{index}");
            self.arg(
                "-object",
                json!({"qom-type": "rng-random", "id": backend, "filename": backend_random})
                    .to_string(),
            );
            let device =
                json!({"driver": "virtio-rng-pci", "rng": backend, "id": format!("rng{index}")});
            self.add_pci_device(device, address.as_ref(), &format!("devices/rng[{index}]"))?;
        }
        Ok(())
    }
}

/// `-chardev` of a tcp serial port, as libvirt 9.0 writes it: a listening socket does not
/// wait for its client (the guest runs without one); `telnet=on` for the telnet protocol.
fn tcp_chardev(
    id: &str,
    mode: UnixMode,
    host: &str,
    service: &str,
    protocol: TcpProtocol,
) -> String {
    let mut chardev = format!(
        "socket,id={id},host={},port={}",
        escape_opt(host),
        escape_opt(service)
    );
    if protocol == TcpProtocol::Telnet {
        chardev.push_str(",telnet=on");
    }
    if mode == UnixMode::Bind {
        chardev.push_str(",server=on,wait=off");
    }
    chardev
}

/// `-chardev` of a udp serial port: it sends to `host:port` (`connect`) and receives on
/// `localaddr:localport` (`bind`). Where libvirt passes empty hosts and `localport=0`, oxvirt
/// leaves them to QEMU's defaults (`localhost`, any local port), which mean the same.
fn udp_chardev(
    id: &str,
    (connect_host, connect_service): (Option<&str>, &str),
    (bind_host, bind_service): (Option<&str>, Option<&str>),
) -> String {
    let mut chardev = format!("udp,id={id}");
    if let Some(host) = connect_host {
        chardev.push_str(&format!(",host={}", escape_opt(host)));
    }
    chardev.push_str(&format!(",port={}", escape_opt(connect_service)));
    if let Some(host) = bind_host {
        chardev.push_str(&format!(",localaddr={}", escape_opt(host)));
    }
    if let Some(service) = bind_service {
        chardev.push_str(&format!(",localport={}", escape_opt(service)));
    }
    chardev
}

/// The serial ports of a definition: its `<serial>`s, or its serial `<console>` alone, which
/// is an alias of serial port 0 (libvirt creates that port when only the console is written).
fn effective_serials<'a>(
    serials: &'a [CharDevice],
    consoles: &'a [CharDevice],
) -> &'a [CharDevice] {
    match (serials, consoles.first()) {
        ([], Some(console)) => std::slice::from_ref(console),
        _ => serials,
    }
}

/// A file a serial port writes (`<serial type='file'>`): launch opens (makes) it and hands it
/// to QEMU at `fd`, in descriptor set `set`, which the command line names (`/dev/fdset/SET`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CharFile {
    pub path: String,
    /// Appended to rather than emptied (`append='on'`).
    pub append: bool,
    pub fd: i32,
    pub set: u32,
}

/// The files `domain`'s serial ports write ([`CharFile`]), at most one per port 0-3.
pub fn char_files(domain: &oxvirt_domain::Domain) -> Vec<CharFile> {
    let devices = &domain.devices;
    effective_serials(&devices.serials, &devices.consoles)
        .iter()
        .enumerate()
        .filter_map(|(index, serial)| {
            let CharSource::File { path, append } = &serial.source else {
                return None;
            };
            let port = serial.target.port.unwrap_or(index as u32);
            // The builder refuses other ports.
            (port <= 3).then(|| {
                let (fd, set) = char_file_fd(port);
                CharFile {
                    path: path.clone(),
                    append: *append == Some(true),
                    fd,
                    set,
                }
            })
        })
        .collect()
}

/// A Unix socket at a path of the definition's that launch binds (`bind`) or connects to for
/// QEMU and hands over at `fd`, which the command line names, as libvirt hands QEMU its
/// listening sockets: QEMU, maybe a user of its own, never reaches the path. Serial ports' and
/// channels' sockets ([`char_sockets`]) and NBD servers' ([`super::nbd_sockets`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassedSocket {
    /// What it serves, for errors: "serial port 1", "the NBD server of disk 'vda'".
    pub what: String,
    pub path: String,
    /// A listening socket QEMU accepts on (`mode='bind'`), else one connected to a server.
    pub bind: bool,
    pub fd: i32,
}

/// The Unix sockets at paths of `domain`'s own ([`PassedSocket`]): its serial ports', at most one
/// per port 0-3 (a port has one source: its file's descriptor number serves its socket), and
/// its channels'.
pub fn char_sockets(domain: &oxvirt_domain::Domain) -> Vec<PassedSocket> {
    let devices = &domain.devices;
    let channels = devices
        .channels
        .iter()
        .enumerate()
        .filter_map(|(index, channel)| {
            let oxvirt_domain::ChannelSource::Unix {
                mode,
                path: Some(path),
            } = &channel.source
            else {
                return None;
            };
            Some(PassedSocket {
                what: format!("channel {index}"),
                path: path.clone(),
                bind: *mode == UnixMode::Bind,
                fd: channel_socket_fd(index)?,
            })
        });
    effective_serials(&devices.serials, &devices.consoles)
        .iter()
        .enumerate()
        .filter_map(|(index, serial)| {
            let CharSource::Unix { path, mode } = &serial.source else {
                return None;
            };
            let port = serial.target.port.unwrap_or(index as u32);
            // The builder refuses other ports.
            (port <= 3).then(|| PassedSocket {
                what: format!("serial port {port}"),
                path: path.clone(),
                bind: *mode == UnixMode::Bind,
                fd: char_file_fd(port).0,
            })
        })
        .chain(channels)
        .collect()
}

/// How many channels one on a socket path may come after: their descriptors sit between
/// [`CHANNEL_FD_BASE`] and the serial ports' ([`char_file_fd`]).
const MAX_CHANNEL_SOCKETS: usize = 40;
/// Above the NBD sockets' descriptors (from 100), below the serial ports' (from 190).
const CHANNEL_FD_BASE: i32 = 150;

/// The descriptor of the socket of the channel at `index` of the domain's channels.
fn channel_socket_fd(index: usize) -> Option<i32> {
    (index < MAX_CHANNEL_SOCKETS).then(|| CHANNEL_FD_BASE + index as i32)
}

/// The descriptor number and set of serial port `port`'s file: below the NICs' ([`nic_fds`]),
/// one per port; sets far above those QMP `add-fd` picks at run time (from 0 up).
fn char_file_fd(port: u32) -> (i32, u32) {
    let port = port.min(3);
    (NIC_FD_BASE - 10 + port as i32, 1000 + port)
}

/// The descriptors launch opens for one interface and moves to these numbers before QEMU starts
/// (its command line names them): the TAP's or macvtap's files, one per queue, and a
/// /dev/vhost-net file per queue when the interface uses vhost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NicFds {
    pub taps: Vec<i32>,
    pub vhosts: Vec<i32>,
}

impl NicFds {
    /// `fds` as QEMU's `fds=` takes them: `A:B:...`.
    fn list(&self, fds: &[i32]) -> String {
        fds.iter().map(i32::to_string).collect::<Vec<_>>().join(":")
    }
}

/// The descriptors of each of `interfaces` (by index), numbered one after the other from a base
/// far above what a fresh QEMU has open. TAP interfaces (network, bridge, ethernet) get one per
/// queue (and as many /dev/vhost-net ones with `<driver name='vhost'>`), a direct one its
/// macvtap's, a user one none.
pub fn nic_fds(interfaces: &[Interface]) -> Vec<NicFds> {
    let mut next = NIC_FD_BASE;
    let mut take = |count: u32| -> Vec<i32> {
        (0..count)
            .map(|_| {
                let fd = next;
                next = next.saturating_add(1);
                fd
            })
            .collect()
    };
    interfaces
        .iter()
        .map(|iface| match iface.interface_type {
            InterfaceType::User => NicFds::default(),
            InterfaceType::Direct => NicFds {
                taps: take(1),
                vhosts: Vec::new(),
            },
            InterfaceType::Network | InterfaceType::Bridge | InterfaceType::Ethernet => {
                // The builder refuses more queues than a TAP has.
                let queues = iface.driver_queues.unwrap_or(1).clamp(1, MAX_NIC_QUEUES);
                let taps = take(queues);
                let vhosts = if iface.driver_name == Some(InterfaceDriverName::Vhost) {
                    take(queues)
                } else {
                    Vec::new()
                };
                NicFds { taps, vhosts }
            }
        })
        .collect()
}

/// The most queues a TAP has (the kernel's `MAX_TAP_QUEUES`).
const MAX_NIC_QUEUES: u32 = 256;

/// Far above what a fresh QEMU process has open (stdio, the log), so nothing else lands there.
const NIC_FD_BASE: i32 = 200;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nic_ids_at_start_and_when_hot_plugged() {
        let at_start = NicIds::at_start(2);
        assert_eq!(
            (at_start.device.as_str(), at_start.netdev.as_str()),
            ("net2", "hostnet2")
        );
        let plugged = NicIds::hotplug(MacAddr([0x52, 0x54, 0, 1, 2, 0xab]));
        assert_eq!(plugged.device, "net-hp5254000102ab");
        assert_eq!(plugged.netdev, "hostnet-hp5254000102ab");
        // QEMU ids: a letter first, then letters, digits, '-', '.', '_'; at most 127 bytes.
        for id in [&plugged.device, &plugged.netdev, &at_start.device] {
            assert!(id.starts_with(|c: char| c.is_ascii_alphabetic()), "{id}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)),
                "{id}"
            );
        }
        // Another MAC, other ids; never one the command line uses.
        let other = NicIds::hotplug(MacAddr([0x52, 0x54, 0, 1, 2, 0xac]));
        assert_ne!(other, plugged);
        assert_ne!(plugged, NicIds::at_start(0));
    }

    #[test]
    fn nic_models_this_engine_knows() {
        assert_eq!(nic_driver("virtio"), Some("virtio-net-pci"));
        assert_eq!(nic_driver("rtl8139"), Some("rtl8139"));
        assert_eq!(nic_driver("ne2k_pci"), None);
    }
}
