//! Fills in what libvirt fills in when it defines a domain, so `to_xml` prints what
//! `virsh dumpxml` prints. What is reproduced (and what is not) is listed in
//! `docs/xml-support.md`.
//!
//! Normalization is idempotent: normalizing a normalized domain changes nothing, which
//! is what makes `parse(to_xml(d)) == d` hold.

use crate::model::*;
use crate::pci::{self, insert_controller};
use crate::rules::{disk_index, is_q35, MAX_CONTROLLER_INDEX, UNSET_INDEX};
use crate::units::generate_mac;

/// The emulator libvirt reports for x86_64 guests on Debian.
pub const DEFAULT_EMULATOR: &str = "/usr/bin/qemu-system-x86_64";
/// QEMU's default CPU model for the x86 `pc` and `q35` machine types.
pub const DEFAULT_CPU_MODEL: &str = "qemu64";

pub(crate) fn normalize(d: &mut Domain) {
    if d.uuid.is_nil() {
        d.uuid = Uuid::new_v4();
    }
    normalize_numa(d);
    if d.current_memory_kib == 0 || d.current_memory_kib > d.memory_kib {
        d.current_memory_kib = d.memory_kib;
    }
    if d.vcpu.current == Some(d.vcpu.max) {
        d.vcpu.current = None;
    }
    if let Some(tune) = &d.cputune {
        if *tune == CpuTune::default() {
            d.cputune = None;
        }
    }
    normalize_iothreads(&mut d.iothreads);
    // libvirt keeps pinnings per vCPU / IOThread and prints them in the order of its vCPUs and
    // IOThreads (vCPU ids; IOThreads in their list's order).
    if let Some(tune) = d.cputune.as_mut() {
        tune.vcpupins.sort_by_key(|p| p.vcpu);
        let ids = &d.iothreads.ids;
        tune.iothreadpins
            .sort_by_key(|p| ids.iter().position(|id| *id == p.iothread));
    }
    if let Some(backing) = &d.memory_backing {
        if backing.is_empty() {
            d.memory_backing = None;
        }
    }
    // libvirt reads these as strings that are absent when empty.
    for text in [
        &mut d.title,
        &mut d.description,
        &mut d.os.kernel,
        &mut d.os.initrd,
        &mut d.os.cmdline,
    ] {
        if text.as_deref() == Some("") {
            *text = None;
        }
    }
    normalize_os(d);
    normalize_cpu(d);
    normalize_devices(d);
}

/// libvirt prints `<iothreadids>` when any id was not filled in by itself; ids that are not
/// `1..=count` in order (after an IOThread was deleted, say) must be printed to read back the
/// same (libvirt's IOThread deletion marks the ids after it stated for that reason).
fn normalize_iothreads(threads: &mut IoThreads) {
    threads.ids_stated = threads.print_ids();
}

/// libvirt's NUMA rules: with guest NUMA cells, `<memory>` is the sum of theirs; automatic
/// placement of the vCPUs and of the memory go together (a numatune placed automatically
/// makes vCPUs without a cpuset automatic too, and automatic vCPUs give memory a strict
/// automatic numatune); an empty `<numatune/>` is dropped.
fn normalize_numa(d: &mut Domain) {
    if let Some(cpu) = &d.cpu {
        if !cpu.numa.is_empty() {
            d.memory_kib = cpu
                .numa
                .iter()
                .fold(0u64, |sum, cell| sum.saturating_add(cell.memory_kib));
        }
    }
    if d.numatune
        .as_ref()
        .is_some_and(|t| t.memory.is_none() && t.memnodes.is_empty())
    {
        d.numatune = None;
    }
    let memory_auto = d
        .numatune
        .as_ref()
        .and_then(|t| t.memory.as_ref())
        .is_some_and(|m| m.placement == VcpuPlacement::Auto);
    if memory_auto && d.vcpu.cpuset.is_none() {
        d.vcpu.placement = VcpuPlacement::Auto;
    }
    if d.vcpu.placement == VcpuPlacement::Auto {
        let tune = d.numatune.get_or_insert_with(NumaTune::default);
        tune.memory.get_or_insert(NumaMemory {
            mode: NumaMode::Strict,
            placement: VcpuPlacement::Auto,
            nodeset: None,
            line: SourceLine::NONE,
        });
    }
}

fn normalize_os(d: &mut Domain) {
    if d.os.arch.is_empty() {
        d.os.arch = "x86_64".to_string();
    }
    if d.os.machine.is_empty() {
        d.os.machine = "pc".to_string();
    }
    // A loader given by path without a type is a ROM when no firmware is autoselected
    // (libvirt 9.0 prints `<loader type='rom'>`, with or without `<nvram>`).
    if d.os.firmware.is_none() {
        if let Some(loader) = d.os.loader.as_mut() {
            if loader.path.is_some() && loader.loader_type.is_none() {
                loader.loader_type = Some(LoaderType::Rom);
            }
        }
    }
    // libvirt reads the boot menu timeout only with enable='yes'.
    if let Some(menu) = d.os.bootmenu.as_mut() {
        if !menu.enable {
            menu.timeout = None;
        }
    }
    let per_device_boot = d.devices.disks.iter().any(|x| x.boot_order.is_some())
        || d.devices.interfaces.iter().any(|x| x.boot_order.is_some())
        || d.devices.hostdevs.iter().any(|x| x.boot_order.is_some());
    if d.os.boot.is_empty() && !per_device_boot {
        d.os.boot.push(BootDevice::Hd);
    }
}

fn normalize_cpu(d: &mut Domain) {
    let domain_type = d.domain_type;
    // The CPU libvirt adds when there is none is never checked against the host, for
    // kvm as well as qemu domains (seen with libvirt 9.0).
    let cpu = d.cpu.get_or_insert_with(|| Cpu {
        mode: CpuMode::Custom,
        match_: None,
        check: Some(CpuCheck::None),
        migratable: None,
        model: None,
        vendor: None,
        topology: None,
        features: Vec::new(),
        numa: Vec::new(),
        line: SourceLine::NONE,
        vendor_line: SourceLine::NONE,
    });
    match cpu.mode {
        CpuMode::Custom => {
            // Features or a vendor without a model stay invalid (validation reports it), as
            // in libvirt.
            if cpu.model.is_none() && cpu.features.is_empty() && cpu.vendor.is_none() {
                cpu.model = Some(CpuModel {
                    name: DEFAULT_CPU_MODEL.to_string(),
                    fallback: Some(CpuFallback::Forbid),
                    line: SourceLine::NONE,
                });
            }
            if let Some(model) = &mut cpu.model {
                model.fallback.get_or_insert(CpuFallback::Allow);
            }
            cpu.match_.get_or_insert(CpuMatch::Exact);
            // TCG guests are not compared against the host CPU by default.
            cpu.check.get_or_insert(match domain_type {
                DomainType::Qemu => CpuCheck::None,
                DomainType::Kvm => CpuCheck::Partial,
            });
        }
        // libvirt keeps `match` for custom CPUs only (below too).
        CpuMode::HostModel => {
            cpu.match_ = None;
            cpu.check.get_or_insert(CpuCheck::Partial);
        }
        CpuMode::HostPassthrough => {
            cpu.match_ = None;
            cpu.check.get_or_insert(CpuCheck::None);
            cpu.migratable.get_or_insert(true);
        }
        CpuMode::Maximum => {
            cpu.match_ = None;
            cpu.check.get_or_insert(CpuCheck::None);
        }
    }
}

fn normalize_devices(d: &mut Domain) {
    let q35 = is_q35(&d.os.machine);
    let devices = &mut d.devices;
    if devices.emulator.is_none() {
        devices.emulator = Some(DEFAULT_EMULATOR.to_string());
    }
    // libvirt's disk order (see `order`; the parser already applied it with the buses as
    // written, this keeps a domain built in code in that order too).
    let disks = std::mem::take(&mut devices.disks)
        .into_iter()
        .map(|disk| {
            let bus = Some(disk.target.bus);
            (disk, bus)
        })
        .collect();
    devices.disks = crate::order::libvirt_disk_order(disks);
    for disk in &mut devices.disks {
        if disk.device == DiskDevice::Cdrom {
            disk.readonly = true;
        }
        if disk.address.is_none() {
            disk.address = drive_address(&disk.target);
        }
    }
    assign_controller_indexes(&mut devices.controllers);
    // libvirt keeps the controllers of one type together, sorted by index, in the order
    // each type first appears (libvirt 9.0 sorts `scsi 1, usb 0, scsi 0` as `scsi 0, scsi 1,
    // usb 0`; one without an index it leaves where it was until it reloads its output, which
    // then is sorted too: oxvirt prints the sorted form, which parses back to itself).
    for controller in std::mem::take(&mut devices.controllers) {
        insert_controller(&mut devices.controllers, controller);
    }
    add_default_controllers(devices, q35);
    add_disk_controllers(devices);
    for controller in &mut devices.controllers {
        if controller.controller_type == ControllerType::Scsi && controller.model.is_none() {
            controller.model = Some("lsilogic".to_string());
        }
    }
    normalize_chardevs(devices);
    normalize_inputs(devices);
    normalize_channels(devices);
    if devices.audios.is_empty() {
        // libvirt's default audio backend follows the display: SPICE carries sound to its
        // client (the last display decides: libvirt goes through them in order); without
        // SPICE, no host audio.
        let spice = devices.graphics.last().is_some_and(|g| g.spice.is_some());
        devices.audios.push(Audio {
            id: 1,
            audio_type: if spice {
                AudioType::Spice
            } else {
                AudioType::None
            },
            timer_period: None,
            server_name: None,
            sdl_driver: None,
            path: None,
            input: None,
            output: None,
            line: SourceLine::NONE,
        });
    }
    normalize_videos(devices);
    for graphics in devices.graphics.iter_mut().filter(|g| g.spice.is_none()) {
        // A UNIX-socket VNC server has no TCP port, and autoport wins over a fixed one.
        if matches!(graphics.listen, VncListen::Socket(_)) || graphics.autoport {
            graphics.port = None;
        }
        // A socket display prints no port nor autoport: it reads back with autoport on.
        // `autoport='no'` without a port stays so (libvirt prints it without a port); the
        // QEMU engine lets QEMU pick a display for it as for autoport.
        if matches!(graphics.listen, VncListen::Socket(_)) {
            graphics.autoport = true;
        }
    }
    // A statistics period of 0 turns the statistics off: libvirt does not print it.
    if let Some(balloon) = devices.memballoon.as_mut() {
        if balloon.stats_period == Some(0) {
            balloon.stats_period = None;
        }
    }
    if devices.memballoon.is_none() {
        devices.memballoon = Some(MemBalloon {
            model: MemBalloonModel::Virtio,
            autodeflate: None,
            stats_period: None,
            address: None,
            line: SourceLine::NONE,
        });
    }
    for iface in &mut devices.interfaces {
        // One queue is what a NIC has anyway: libvirt does not print queues='1'.
        if iface.driver_queues == Some(1) {
            iface.driver_queues = None;
        }
        // QEMU's default NIC on x86 machines; libvirt writes it out.
        if iface.model.is_none() {
            iface.model = Some("rtl8139".to_string());
        }
        // Names with libvirt's reserved auto-generated prefixes are dropped at define
        // time (a new one is picked at start).
        if iface.target_dev.as_deref().is_some_and(|dev| {
            ["vnet", "vif", "macvtap", "macvlan"]
                .iter()
                .any(|p| dev.starts_with(p))
        }) {
            iface.target_dev = None;
        }
        if iface.mac.is_none() {
            let random = Uuid::new_v4();
            let b = random.as_bytes();
            iface.mac = Some(generate_mac([b[0], b[1], b[2]]));
        }
    }
    // PCI buses and addresses last: they depend on every device and model above. An error
    // (an address the machine cannot take) leaves the layout unfinished; validation reports
    // it (`pci::check`).
    let _ = pci::assign(d);
}

/// The drive address libvirt derives from the target name for ide/sata/scsi/fdc disks.
fn drive_address(target: &DiskTarget) -> Option<Address> {
    let idx = disk_index(&target.dev)?;
    let address = match target.bus {
        DiskBus::Ide => DriveAddress {
            controller: idx / 4,
            bus: (idx % 4) / 2,
            target: 0,
            unit: idx % 2,
            line: SourceLine::NONE,
        },
        DiskBus::Sata => DriveAddress {
            controller: idx / 6,
            bus: 0,
            target: 0,
            unit: idx % 6,
            line: SourceLine::NONE,
        },
        DiskBus::Scsi => DriveAddress {
            controller: idx / 7,
            bus: 0,
            target: 0,
            unit: idx % 7,
            line: SourceLine::NONE,
        },
        DiskBus::Fdc => DriveAddress {
            controller: 0,
            bus: 0,
            target: 0,
            unit: idx,
            line: SourceLine::NONE,
        },
        DiskBus::Virtio | DiskBus::Usb => return None,
    };
    Some(Address::Drive(address))
}

/// Controllers without an index get the lowest index unused by their type; a USB companion
/// (with `<master>`) takes the index of the USB controller before it, its master, as libvirt
/// gives it (virt-install writes an ich9-ehci1 and its three ich9-uhci companions unindexed).
fn assign_controller_indexes(controllers: &mut [Controller]) {
    for i in 0..controllers.len() {
        if controllers[i].index != UNSET_INDEX {
            continue;
        }
        let kind = controllers[i].controller_type;
        if kind == ControllerType::Usb && controllers[i].master_startport.is_some() {
            let master = controllers[..i]
                .iter()
                .rev()
                .find(|c| c.controller_type == ControllerType::Usb)
                .map(|c| c.index);
            if let Some(index) = master {
                controllers[i].index = index;
                continue;
            }
        }
        let mut index = 0;
        while controllers
            .iter()
            .any(|c| c.controller_type == kind && c.index == index)
        {
            index += 1;
        }
        controllers[i].index = index;
    }
}

fn has_controller(devices: &Devices, kind: ControllerType, index: u32) -> bool {
    devices
        .controllers
        .iter()
        .any(|c| c.controller_type == kind && c.index == index)
}

fn add_default_controllers(devices: &mut Devices, q35: bool) {
    let usb_model = if q35 { "qemu-xhci" } else { "piix3-uhci" };
    if !devices
        .controllers
        .iter()
        .any(|c| c.controller_type == ControllerType::Usb)
    {
        insert_controller(
            &mut devices.controllers,
            Controller::new(ControllerType::Usb, 0, Some(usb_model)),
        );
    }
    for c in &mut devices.controllers {
        if c.controller_type == ControllerType::Usb && c.index == 0 && c.model.is_none() {
            c.model = Some(usb_model.to_string());
        }
    }
    // libvirt adds the q35's built-in SATA controller before the root bus.
    if q35 && !has_controller(devices, ControllerType::Sata, 0) {
        insert_controller(
            &mut devices.controllers,
            Controller::new(ControllerType::Sata, 0, None),
        );
    }
    let root_model = if q35 { "pcie-root" } else { "pci-root" };
    if !has_controller(devices, ControllerType::Pci, 0) {
        insert_controller(
            &mut devices.controllers,
            Controller::new(ControllerType::Pci, 0, Some(root_model)),
        );
    }
    for c in &mut devices.controllers {
        // The UHCI companions of an ICH9 EHCI take two ports each, in order.
        let first_port = match c.model.as_deref() {
            Some("ich9-uhci1") => 0,
            Some("ich9-uhci2") => 2,
            Some("ich9-uhci3") => 4,
            _ => continue,
        };
        c.master_startport.get_or_insert(first_port);
    }
}

/// Each ide/sata/scsi/fdc disk needs its controller.
fn add_disk_controllers(devices: &mut Devices) {
    let mut needed = Vec::new();
    for disk in &devices.disks {
        let kind = match disk.target.bus {
            DiskBus::Ide => ControllerType::Ide,
            DiskBus::Sata => ControllerType::Sata,
            DiskBus::Scsi => ControllerType::Scsi,
            DiskBus::Fdc => ControllerType::Fdc,
            DiskBus::Virtio | DiskBus::Usb => continue,
        };
        if let Some(Address::Drive(a)) = &disk.address {
            needed.push((kind, a.controller));
        }
    }
    // libvirt adds, type by type in this order, every index up to the highest one a disk of
    // that bus uses (virDomainDefAddImplicitControllers).
    for kind in [
        ControllerType::Scsi,
        ControllerType::Fdc,
        ControllerType::Ide,
        ControllerType::Sata,
    ] {
        let Some(highest) = needed
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, index)| *index)
            .max()
        else {
            continue;
        };
        for index in 0..=highest.min(MAX_CONTROLLER_INDEX) {
            if !has_controller(devices, kind, index) {
                insert_controller(&mut devices.controllers, Controller::new(kind, index, None));
            }
        }
    }
}

/// The x86 console compatibility rules: `<console>` 0 of target type serial is the same
/// device as `<serial>` 0 (created from the console when there is no serial).
fn normalize_chardevs(devices: &mut Devices) {
    // Serials without a port take, in document order, the ports after the highest port any
    // serial states (libvirt 9.0: `port='1'` then a portless serial gives 1, 2; a portless
    // serial then `port='0'` gives 1, 0), not the lowest free ones.
    let mut next_port = devices
        .serials
        .iter()
        .filter_map(|s| s.target.port)
        .max()
        .map_or(0, |p| p.saturating_add(1));
    for serial in devices.serials.iter_mut() {
        let target = &mut serial.target;
        if target.target_type.is_none() {
            target.target_type = Some("isa-serial".to_string());
        }
        if target.port.is_none() {
            target.port = Some(next_port);
            next_port = next_port.saturating_add(1);
        }
        if target.model.is_none() {
            let model = match target.target_type.as_deref() {
                Some("isa-serial") => Some("isa-serial"),
                Some("usb-serial") => Some("usb-serial"),
                Some("pci-serial") => Some("pci-serial"),
                _ => None,
            };
            target.model = model.map(str::to_string);
        }
    }
    if let Some(first) = devices.consoles.first_mut() {
        if first.target.target_type.is_none() {
            first.target.target_type = Some("serial".to_string());
        }
    }
    // With a serial port, console 0 is always its alias: libvirt inserts one in front
    // when the first console is something else (or there is none).
    let first_is_serial = devices
        .consoles
        .first()
        .is_some_and(|c| c.target.target_type.as_deref() == Some("serial"));
    if !first_is_serial {
        if let Some(serial) = devices.serials.first() {
            // The alias is the serial port itself, so it points where the serial was written.
            let alias = CharDevice {
                source: serial.source.clone(),
                target: CharTarget {
                    target_type: Some("serial".to_string()),
                    port: serial.target.port,
                    model: None,
                    line: serial.target.line,
                },
                line: serial.line,
            };
            devices.consoles.insert(0, alias);
        }
    }
    // Consoles after the first default to virtio; libvirt numbers a virtio console by its
    // place among the consoles (after the serial alias is in front), whatever port it was
    // given: `<target type='virtio' port='5'/>` as the second console becomes port 1.
    for (i, console) in devices.consoles.iter_mut().enumerate() {
        if i > 0 && console.target.target_type.is_none() {
            console.target.target_type = Some("virtio".to_string());
        }
        if console.target.target_type.as_deref() == Some("virtio") {
            console.target.port = u32::try_from(i).ok();
        }
    }
    let needs_virtio_serial = devices
        .consoles
        .iter()
        .any(|c| c.target.target_type.as_deref() == Some("virtio"));
    if needs_virtio_serial
        && !devices
            .controllers
            .iter()
            .any(|c| c.controller_type == ControllerType::VirtioSerial)
    {
        insert_controller(
            &mut devices.controllers,
            Controller::new(ControllerType::VirtioSerial, 0, None),
        );
    }
    let Some(console) = devices.consoles.first_mut() else {
        return;
    };
    if console.target.target_type.as_deref() != Some("serial") {
        return;
    }
    console.target.port.get_or_insert(0);
    console.target.model = None;
    match devices.serials.first() {
        Some(serial) => {
            console.source = serial.source.clone();
            console.target.port = serial.target.port;
        }
        None => {
            console.target.port = Some(0);
            // Made from the console, so it points where the console was written.
            let serial = CharDevice {
                source: console.source.clone(),
                target: CharTarget {
                    target_type: Some("isa-serial".to_string()),
                    port: Some(0),
                    model: Some("isa-serial".to_string()),
                    line: console.target.line,
                },
                line: console.line,
            };
            devices.serials.push(serial);
        }
    }
}

/// Channels are ports of virtio-serial controller 0 (added when missing); one without an
/// address takes the lowest free port from 1 on its bus 0 (port 0 is the console's), as
/// libvirt numbers them.
fn normalize_channels(devices: &mut Devices) {
    if devices.channels.is_empty() {
        return;
    }
    if !devices
        .controllers
        .iter()
        .any(|c| c.controller_type == ControllerType::VirtioSerial)
    {
        insert_controller(
            &mut devices.controllers,
            Controller::new(ControllerType::VirtioSerial, 0, None),
        );
    }
    let mut used: Vec<(u32, u32, u32)> = devices
        .channels
        .iter()
        .filter_map(|c| match &c.address {
            Some(Address::VirtioSerial(a)) => Some((a.controller, a.bus, a.port)),
            _ => None,
        })
        .collect();
    for channel in devices.channels.iter_mut() {
        if channel.address.is_some() {
            continue;
        }
        let port = (1..).find(|p| !used.contains(&(0, 0, *p))).unwrap_or(1);
        used.push((0, 0, port));
        channel.address = Some(Address::VirtioSerial(VirtioSerialAddress {
            controller: 0,
            bus: 0,
            port,
            line: SourceLine::NONE,
        }));
    }
}

fn normalize_inputs(devices: &mut Devices) {
    for kind in [InputType::Mouse, InputType::Keyboard] {
        if !devices
            .inputs
            .iter()
            .any(|i| i.input_type == kind && i.bus == InputBus::Ps2)
        {
            devices.inputs.push(Input {
                input_type: kind,
                bus: InputBus::Ps2,
                address: None,
                line: SourceLine::NONE,
            });
        }
    }
}

fn normalize_videos(devices: &mut Devices) {
    // A display needs a video card: libvirt adds its x86 default, cirrus.
    if !devices.graphics.is_empty() && devices.videos.is_empty() {
        devices.videos.push(Video {
            model: VideoModel::Cirrus,
            ram_kib: None,
            vram_kib: None,
            vgamem_kib: None,
            heads: None,
            primary: false,
            address: None,
            line: SourceLine::NONE,
            model_line: SourceLine::NONE,
        });
    }
    // libvirt keeps the primary video first.
    if let Some(i) = devices.videos.iter().position(|v| v.primary) {
        let primary = devices.videos.remove(i);
        devices.videos.insert(0, primary);
    }
    for (i, video) in devices.videos.iter_mut().enumerate() {
        if video.model == VideoModel::None {
            continue;
        }
        if matches!(
            video.model,
            VideoModel::Vga | VideoModel::Cirrus | VideoModel::Bochs
        ) {
            video.vram_kib.get_or_insert(16384);
        }
        if video.model == VideoModel::Qxl {
            // libvirt's QXL defaults (KiB).
            video.ram_kib.get_or_insert(65536);
            video.vram_kib.get_or_insert(65536);
            video.vgamem_kib.get_or_insert(16384);
        }
        // libvirt rounds the video RAM up to a power of two (9216 KiB becomes 16384).
        if let Some(vram) = video.vram_kib.as_mut() {
            if *vram > 0 {
                *vram = vram.checked_next_power_of_two().unwrap_or(*vram);
            }
        }
        video.heads.get_or_insert(1);
        if i == 0 {
            video.primary = true;
        }
    }
}
