//! Serial ports, network, input, display, memory balloon and RNG devices.

use oxvirt_domain::{
    CharDevice, CharSource, ControllerType, Graphics, InputBus, InputType, Interface,
    InterfaceDriverName, InterfaceSource, InterfaceType, MemBalloonModel, UnixMode, VideoModel,
    VncListen,
};
use serde_json::json;

use super::{
    escape_opt, kib_to_mib_rounded_up, on_off, Builder, DEFAULT_NIC_MODEL, VNC_AUTOPORT_DISPLAYS,
    VNC_BASE_PORT,
};
use crate::QemuError;

impl Builder<'_> {
    // ----- character devices ------------------------------------------------------------------

    pub(super) fn serials(&mut self) -> Result<(), QemuError> {
        let devices = &self.domain.devices;
        for (index, console) in devices.consoles.iter().enumerate() {
            match console.target.target_type.as_deref() {
                None | Some("serial") => {}
                Some(other) => {
                    return Err(QemuError::unsupported(
                        format!("devices/console[{index}]/target@type"),
                        format!("console type '{other}': only serial consoles are supported"),
                    ))
                }
            }
        }
        // A serial console (<console><target type='serial'>) is an alias of serial port 0;
        // libvirt creates that port when only the console is written.
        let mut serials: Vec<CharDevice> = devices.serials.clone();
        if serials.is_empty() {
            if let Some(console) = devices.consoles.first() {
                serials.push(console.clone());
            }
        }
        let mut console_socket_used = false;
        for (index, serial) in serials.iter().enumerate() {
            let element = format!("devices/serial[{index}]");
            let port = serial.target.port.unwrap_or(index as u32);
            let type_ok = matches!(
                serial.target.target_type.as_deref(),
                None | Some("isa-serial")
            );
            let model_ok = matches!(serial.target.model.as_deref(), None | Some("isa-serial"));
            if !type_ok || !model_ok {
                return Err(QemuError::unsupported(
                    format!("{element}/target"),
                    "only ISA serial ports are supported",
                ));
            }
            if port > 3 {
                return Err(QemuError::invalid(
                    format!("{element}/target@port"),
                    "a PC has ISA serial ports 0-3",
                ));
            }
            let id = format!("charserial{port}");
            let chardev = match &serial.source {
                CharSource::Pty if !console_socket_used => {
                    console_socket_used = true;
                    self.console_chardev(&id)
                }
                CharSource::Pty => {
                    return Err(QemuError::unsupported(
                        element,
                        "only one pty serial port: it is served as the VM console socket",
                    ))
                }
                CharSource::File { path, append } => format!(
                    "file,id={id},path={}{}",
                    escape_opt(path),
                    if *append == Some(true) {
                        ",append=on"
                    } else {
                        ""
                    }
                ),
                CharSource::Unix { path, mode } => format!(
                    "socket,id={id},path={},server={}{}",
                    escape_opt(path),
                    on_off(*mode == UnixMode::Bind),
                    if *mode == UnixMode::Bind {
                        ",wait=off"
                    } else {
                        ""
                    }
                ),
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
            escape_opt(&self.run.console_log().to_string_lossy()),
        )
    }

    // ----- network ----------------------------------------------------------------------------

    pub(super) fn interface(&mut self, index: usize) -> Result<(), QemuError> {
        let interface: &Interface = &self.domain.devices.interfaces[index];
        let element = format!("devices/interface[{index}]");
        let netdev_id = format!("hostnet{index}");
        let queues = interface.driver_queues.unwrap_or(1);
        let model = interface.model.as_deref().unwrap_or(DEFAULT_NIC_MODEL);
        let virtio = model == "virtio";

        let mut netdev = json!({"id": netdev_id});
        match (interface.interface_type, &interface.source) {
            (InterfaceType::User, _) => {
                netdev["type"] = json!("user");
                if queues > 1 {
                    return Err(QemuError::unsupported(
                        format!("{element}/driver@queues"),
                        "user networking has one queue",
                    ));
                }
                if interface.target_dev.is_some() {
                    return Err(QemuError::invalid(
                        format!("{element}/target"),
                        "type='user' has no host device",
                    ));
                }
                if interface.driver_name == Some(InterfaceDriverName::Vhost) {
                    return Err(QemuError::unsupported(
                        format!("{element}/driver@name"),
                        "vhost needs a TAP device",
                    ));
                }
            }
            (InterfaceType::Network | InterfaceType::Bridge, source) => {
                // The TAP device is created and attached (to the bridge, or the network's bridge)
                // by the daemon's network layer; QEMU only opens it by name.
                let Some(tap) = &interface.target_dev else {
                    let what = match source {
                        InterfaceSource::Network(name) => format!("network '{name}'"),
                        InterfaceSource::Bridge(name) => format!("bridge '{name}'"),
                        InterfaceSource::None => "its source".to_string(),
                    };
                    return Err(QemuError::unsupported(
                        element,
                        format!("connecting to {what} needs a TAP device prepared by the network layer (<target dev=>), which none was"),
                    ));
                };
                if tap.is_empty() || tap.len() > 15 || tap.contains(['/', ',', ' ']) {
                    return Err(QemuError::invalid(
                        format!("{element}/target@dev"),
                        format!("'{tap}' is not a network interface name"),
                    ));
                }
                netdev["type"] = json!("tap");
                netdev["ifname"] = json!(tap);
                netdev["script"] = json!("no");
                netdev["downscript"] = json!("no");
                match interface.driver_name {
                    Some(InterfaceDriverName::Vhost) => netdev["vhost"] = json!(true),
                    Some(InterfaceDriverName::Qemu) => netdev["vhost"] = json!(false),
                    None => {}
                }
                if queues > 1 {
                    netdev["queues"] = json!(queues);
                }
            }
        }
        self.arg("-netdev", netdev.to_string());

        let driver = match model {
            "virtio" => "virtio-net-pci",
            "e1000" => "e1000",
            "e1000e" => "e1000e",
            "rtl8139" => "rtl8139",
            other => {
                return Err(QemuError::unsupported(
                    format!("{element}/model@type"),
                    format!("NIC model '{other}'"),
                ))
            }
        };
        let mut device =
            json!({"driver": driver, "netdev": netdev_id, "id": format!("net{index}")});
        if let Some(mac) = interface.mac {
            device["mac"] = json!(mac.to_string());
        }
        if queues > 1 {
            if !virtio {
                return Err(QemuError::unsupported(
                    format!("{element}/driver@queues"),
                    "multiqueue needs model virtio",
                ));
            }
            device["mq"] = json!(true);
            // One vector per RX and TX queue, plus config and control.
            device["vectors"] = json!(2 * queues + 2);
        }
        if let Some(mtu) = interface.mtu {
            if !virtio {
                return Err(QemuError::unsupported(
                    format!("{element}/mtu"),
                    "an MTU can only be announced by virtio NICs",
                ));
            }
            device["host_mtu"] = json!(mtu);
        }
        if let Some(bootindex) = self.interface_boot[index] {
            device["bootindex"] = json!(bootindex);
        }
        // link state down is set through QMP right after start (see launch); QEMU has no
        // command-line property for it.
        self.add_pci_device(device, interface.address.as_ref(), &element)
    }

    // ----- input, display, misc ---------------------------------------------------------------

    pub(super) fn inputs(&mut self) -> Result<(), QemuError> {
        for (index, input) in self.domain.devices.inputs.iter().enumerate() {
            let element = format!("devices/input[{index}]");
            let driver = match (input.bus, input.input_type) {
                // The PS/2 keyboard and mouse are part of every PC (the i8042 controller).
                (InputBus::Ps2, InputType::Mouse | InputType::Keyboard) => continue,
                (InputBus::Ps2, InputType::Tablet) => {
                    return Err(QemuError::invalid(element, "there is no PS/2 tablet"))
                }
                (InputBus::Usb, kind) => {
                    if !self.has_controller(ControllerType::Usb, 0) {
                        return Err(QemuError::invalid(
                            element,
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
            self.add_pci_device(device, input.address.as_ref(), &element)?;
        }
        Ok(())
    }

    pub(super) fn graphics_and_video(&mut self) -> Result<(), QemuError> {
        let devices = &self.domain.devices;
        match devices.graphics.as_slice() {
            [] => self.arg("-display", "none"),
            [graphics] => {
                let vnc = self.vnc(graphics)?;
                self.arg("-vnc", vnc);
            }
            _ => {
                return Err(QemuError::unsupported(
                    "devices/graphics[1]",
                    "only one graphics device",
                ))
            }
        }
        for (index, video) in devices.videos.iter().enumerate() {
            let element = format!("devices/video[{index}]");
            let primary = index == 0 || video.primary;
            let driver = match video.model {
                VideoModel::None => continue,
                VideoModel::Vga => "VGA",
                VideoModel::Cirrus => "cirrus-vga",
                VideoModel::Bochs => "bochs-display",
                VideoModel::Virtio if primary => "virtio-vga",
                VideoModel::Virtio => "virtio-gpu-pci",
                VideoModel::Ramfb => "ramfb",
            };
            let mut device = json!({"driver": driver, "id": format!("video{index}")});
            if let Some(vram) = video.vram_kib {
                match video.model {
                    VideoModel::Vga | VideoModel::Cirrus => device["vgamem_mb"] = json!(kib_to_mib_rounded_up(vram)),
                    VideoModel::Bochs => device["vgamem"] = json!(vram * 1024),
                    _ => self.warnings.push(format!(
                        "{element}: vram is not adjustable for this video model in QEMU; using the model's own size"
                    )),
                }
            }
            match video.heads {
                Some(heads) if heads > 1 && video.model == VideoModel::Virtio => {
                    device["max_outputs"] = json!(heads)
                }
                Some(heads) if heads > 1 => {
                    return Err(QemuError::unsupported(
                        format!("{element}/model@heads"),
                        "several heads need model virtio",
                    ))
                }
                _ => {}
            }
            if video.model == VideoModel::Ramfb {
                self.devices.on_buses.push(device);
            } else {
                self.add_pci_device(device, video.address.as_ref(), &element)?;
            }
        }
        Ok(())
    }

    pub(super) fn vnc(&self, graphics: &Graphics) -> Result<String, QemuError> {
        let mut vnc = match &graphics.listen {
            VncListen::Socket(path) => format!("unix:{}", escape_opt(path)),
            VncListen::Address(address) => {
                let host = address.as_deref().unwrap_or("127.0.0.1");
                if host.contains(',') {
                    return Err(QemuError::invalid(
                        "devices/graphics@listen",
                        "not an address",
                    ));
                }
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host.to_string()
                };
                match (graphics.port, graphics.autoport) {
                    (Some(port), false) if port >= VNC_BASE_PORT => {
                        format!("{host}:{}", port - VNC_BASE_PORT)
                    }
                    (Some(_), false) => {
                        return Err(QemuError::invalid(
                            "devices/graphics@port",
                            format!("VNC ports start at {VNC_BASE_PORT}"),
                        ))
                    }
                    // autoport: QEMU takes the first free display from :0 up.
                    _ => format!("{host}:0,to={VNC_AUTOPORT_DISPLAYS}"),
                }
            }
        };
        if graphics.passwd.is_some() {
            // The password itself is set over QMP after start, so it never shows in `ps`.
            vnc.push_str(",password=on");
        }
        Ok(vnc)
    }

    pub(super) fn audio(&mut self) {
        for audio in &self.domain.devices.audios {
            // Only type='none' exists in the model: a backend that discards sound.
            self.arg("-audiodev", format!("none,id=audio{}", audio.id));
        }
    }

    pub(super) fn memballoon(&mut self) -> Result<(), QemuError> {
        let Some(balloon) = &self.domain.devices.memballoon else {
            return self.check_current_memory(false);
        };
        if balloon.model == MemBalloonModel::None {
            return self.check_current_memory(false);
        }
        let mut device = json!({"driver": "virtio-balloon-pci", "id": "balloon0"});
        if let Some(deflate) = balloon.autodeflate {
            device["deflate-on-oom"] = json!(deflate);
        }
        self.add_pci_device(device, balloon.address.as_ref(), "devices/memballoon")?;
        self.check_current_memory(true)
    }

    pub(super) fn check_current_memory(&self, have_balloon: bool) -> Result<(), QemuError> {
        let domain = self.domain;
        if domain.current_memory_kib < domain.memory_kib && !have_balloon {
            return Err(QemuError::unsupported(
                "currentMemory",
                "currentMemory below memory needs a virtio memballoon to take the difference back",
            ));
        }
        Ok(())
    }

    pub(super) fn rngs(&mut self) -> Result<(), QemuError> {
        for (index, rng) in self.domain.devices.rngs.iter().enumerate() {
            let backend = format!("objrng{index}");
            self.arg(
                "-object",
                json!({"qom-type": "rng-random", "id": backend, "filename": rng.backend_random})
                    .to_string(),
            );
            let device =
                json!({"driver": "virtio-rng-pci", "rng": backend, "id": format!("rng{index}")});
            self.add_pci_device(
                device,
                rng.address.as_ref(),
                &format!("devices/rng[{index}]"),
            )?;
        }
        Ok(())
    }
}
