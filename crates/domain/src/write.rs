//! [`Domain`] -> libvirt's normalized XML (element and attribute order as `virsh dumpxml`).

use std::fmt::Write as _;

use crate::iotune::{IoLevel, IoTune};
use crate::model::*;
use crate::names::*;

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// A tiny indenting XML writer.
struct Writer {
    out: String,
    depth: usize,
}

/// Attributes of one element, in order; `None` values are skipped.
type Attrs<'a> = &'a [(&'a str, Option<String>)];

impl Writer {
    fn indent(&mut self) {
        for _ in 0..self.depth {
            self.out.push_str("  ");
        }
    }

    fn open_tag(&mut self, name: &str, attrs: Attrs) {
        self.indent();
        self.out.push('<');
        self.out.push_str(name);
        for (key, value) in attrs {
            if let Some(value) = value {
                let _ = write!(self.out, " {key}='{}'", oxvirt_xml::escape_attr(value));
            }
        }
    }

    fn empty(&mut self, name: &str, attrs: Attrs) {
        self.open_tag(name, attrs);
        self.out.push_str("/>\n");
    }

    fn text(&mut self, name: &str, attrs: Attrs, text: &str) {
        self.open_tag(name, attrs);
        let _ = writeln!(self.out, ">{}</{name}>", oxvirt_xml::escape_text(text));
    }

    fn start(&mut self, name: &str, attrs: Attrs) {
        self.open_tag(name, attrs);
        self.out.push_str(">\n");
        self.depth += 1;
    }

    fn end(&mut self, name: &str) {
        self.depth = self.depth.saturating_sub(1);
        self.indent();
        let _ = writeln!(self.out, "</{name}>");
    }
}

fn s(v: impl ToString) -> Option<String> {
    Some(v.to_string())
}

pub(crate) fn to_xml(d: &Domain) -> String {
    let mut w = Writer {
        out: String::new(),
        depth: 0,
    };
    // The oxvirt namespace is declared only when an oxvirt element follows, so a plain libvirt
    // definition prints exactly as libvirt prints it.
    let native = d.engine == Engine::Native;
    w.start(
        "domain",
        &[
            ("type", s(name_of(DOMAIN_TYPES, d.domain_type))),
            ("xmlns:oxvirt", native.then(|| OXVIRT_NAMESPACE.to_string())),
        ],
    );
    w.text("name", &[], &d.name);
    w.text("uuid", &[], &d.uuid.hyphenated().to_string());
    if let Some(title) = &d.title {
        w.text("title", &[], title);
    }
    if let Some(description) = &d.description {
        w.text("description", &[], description);
    }
    if let Some(metadata) = &d.metadata {
        crate::metadata::write(metadata, w.depth, &mut w.out);
    }
    if let Some(max) = &d.max_memory {
        w.text(
            "maxMemory",
            &[
                ("slots", (max.slots > 0).then(|| max.slots.to_string())),
                ("unit", s("KiB")),
            ],
            &max.kib.to_string(),
        );
    }
    w.text("memory", &[("unit", s("KiB"))], &d.memory_kib.to_string());
    w.text(
        "currentMemory",
        &[("unit", s("KiB"))],
        &d.current_memory_kib.to_string(),
    );
    if let Some(tune) = &d.blkiotune {
        write_blkiotune(&mut w, tune);
    }
    if let Some(tune) = &d.memtune {
        write_memtune(&mut w, tune);
    }
    if let Some(backing) = &d.memory_backing {
        write_memory_backing(&mut w, backing);
    }
    w.text(
        "vcpu",
        &[
            ("placement", s(name_of(PLACEMENTS, d.vcpu.placement))),
            ("cpuset", d.vcpu.cpuset.as_ref().map(|c| c.to_string())),
            ("current", d.vcpu.current.map(|c| c.to_string())),
        ],
        &d.vcpu.max.to_string(),
    );
    if !d.vcpu.slots.is_empty() {
        w.start("vcpus", &[]);
        for slot in &d.vcpu.slots {
            w.empty(
                "vcpu",
                &[
                    ("id", s(slot.id)),
                    ("enabled", s(yes_no(slot.enabled))),
                    (
                        "hotpluggable",
                        slot.hotpluggable.map(|b| yes_no(b).to_string()),
                    ),
                    ("order", slot.order.map(|o| o.to_string())),
                ],
            );
        }
        w.end("vcpus");
    }
    if !d.iothreads.is_empty() {
        w.text("iothreads", &[], &d.iothreads.len().to_string());
        if d.iothreads.print_ids() {
            w.start("iothreadids", &[]);
            for id in &d.iothreads.ids {
                w.empty("iothread", &[("id", s(id))]);
            }
            w.end("iothreadids");
        }
    }
    if let Some(tune) = &d.cputune {
        write_cputune(&mut w, tune);
    }
    if let Some(tune) = &d.numatune {
        write_numatune(&mut w, tune);
    }
    if let Some(sysinfo) = &d.sysinfo {
        w.start("sysinfo", &[("type", s("smbios"))]);
        if !sysinfo.system.is_empty() {
            w.start("system", &[]);
            for (name, value) in &sysinfo.system {
                w.text("entry", &[("name", s(name))], value);
            }
            w.end("system");
        }
        w.end("sysinfo");
    }
    write_os(&mut w, &d.os);
    if d.features != Features::default() {
        w.start("features", &[]);
        for (on, name) in [
            (d.features.acpi, "acpi"),
            (d.features.apic, "apic"),
            (d.features.pae, "pae"),
        ] {
            if on {
                w.empty(name, &[]);
            }
        }
        if let Some(state) = d.features.vmport {
            w.empty("vmport", &[("state", s(on_off(state)))]);
        }
        w.end("features");
    }
    if let Some(cpu) = &d.cpu {
        write_cpu(&mut w, cpu);
    }
    write_clock(&mut w, &d.clock);
    w.text(
        "on_poweroff",
        &[],
        name_of(LIFECYCLE_ACTIONS, d.on_poweroff),
    );
    w.text("on_reboot", &[], name_of(LIFECYCLE_ACTIONS, d.on_reboot));
    w.text("on_crash", &[], name_of(LIFECYCLE_ACTIONS, d.on_crash));
    if let Some(pm) = &d.pm {
        write_pm(&mut w, pm);
    }
    write_devices(&mut w, &d.devices);
    if native {
        w.empty("oxvirt:engine", &[("name", s(d.engine.as_str()))]);
    }
    w.end("domain");
    w.out
}

fn write_pm(w: &mut Writer, pm: &Pm) {
    if pm.suspend_to_mem.is_none() && pm.suspend_to_disk.is_none() {
        w.empty("pm", &[]);
        return;
    }
    w.start("pm", &[]);
    for (name, value) in [
        ("suspend-to-mem", pm.suspend_to_mem),
        ("suspend-to-disk", pm.suspend_to_disk),
    ] {
        if let Some(enabled) = value {
            w.empty(name, &[("enabled", s(yes_no(enabled)))]);
        }
    }
    w.end("pm");
}

/// libvirt's order: the weight, then each device: its path, weight, read and write IOPS, read
/// and write bytes (libvirt prints the IOPS first, whatever the input's order); what is not
/// set is not printed.
fn write_blkiotune(w: &mut Writer, tune: &BlkioTune) {
    if tune.is_empty() {
        return;
    }
    w.start("blkiotune", &[]);
    if let Some(weight) = tune.weight {
        w.text("weight", &[], &weight.to_string());
    }
    for device in tune.devices.iter().filter(|d| !d.is_empty()) {
        w.start("device", &[]);
        w.text("path", &[], &device.path);
        let values = [
            ("weight", device.weight.map(u64::from)),
            ("read_iops_sec", device.read_iops_sec.map(u64::from)),
            ("write_iops_sec", device.write_iops_sec.map(u64::from)),
            ("read_bytes_sec", device.read_bytes_sec),
            ("write_bytes_sec", device.write_bytes_sec),
        ];
        for (name, value) in values {
            if let Some(value) = value {
                w.text(name, &[], &value.to_string());
            }
        }
        w.end("device");
    }
    w.end("blkiotune");
}

/// libvirt's order: hard_limit, soft_limit, min_guarantee, swap_hard_limit; an empty
/// `<memtune>` is not written.
fn write_memtune(w: &mut Writer, tune: &MemTune) {
    if tune.is_empty() {
        return;
    }
    let limits = [
        ("hard_limit", tune.hard_limit_kib),
        ("soft_limit", tune.soft_limit_kib),
        ("min_guarantee", tune.min_guarantee_kib),
        ("swap_hard_limit", tune.swap_hard_limit_kib),
    ];
    w.start("memtune", &[]);
    for (name, kib) in limits {
        if let Some(kib) = kib {
            w.text(name, &[("unit", s("KiB"))], &kib.to_string());
        }
    }
    w.end("memtune");
}

fn write_memory_backing(w: &mut Writer, backing: &MemoryBacking) {
    if backing.is_empty() {
        return;
    }
    w.start("memoryBacking", &[]);
    if let Some(huge) = &backing.hugepages {
        if huge.page_sizes_kib.is_empty() {
            w.empty("hugepages", &[]);
        } else {
            w.start("hugepages", &[]);
            for size in &huge.page_sizes_kib {
                w.empty("page", &[("size", s(size)), ("unit", s("KiB"))]);
            }
            w.end("hugepages");
        }
    }
    if backing.nosharepages {
        w.empty("nosharepages", &[]);
    }
    if backing.locked {
        w.empty("locked", &[]);
    }
    if let Some(source) = backing.source {
        w.empty("source", &[("type", s(name_of(MEMORY_SOURCES, source)))]);
    }
    if let Some(access) = backing.access {
        w.empty("access", &[("mode", s(name_of(MEMORY_ACCESSES, access)))]);
    }
    if backing.allocation.is_some() || backing.allocation_threads.is_some() {
        w.empty(
            "allocation",
            &[
                (
                    "mode",
                    backing
                        .allocation
                        .map(|a| name_of(MEMORY_ALLOCATIONS, a).to_string()),
                ),
                ("threads", backing.allocation_threads.map(|n| n.to_string())),
            ],
        );
    }
    if backing.discard {
        w.empty("discard", &[]);
    }
    w.end("memoryBacking");
}

fn write_cputune(w: &mut Writer, tune: &CpuTune) {
    if *tune == CpuTune::default() {
        return;
    }
    w.start("cputune", &[]);
    if let Some(v) = tune.shares {
        w.text("shares", &[], &v.to_string());
    }
    if let Some(v) = tune.period {
        w.text("period", &[], &v.to_string());
    }
    if let Some(v) = tune.quota {
        w.text("quota", &[], &v.to_string());
    }
    if let Some(v) = tune.emulator_period {
        w.text("emulator_period", &[], &v.to_string());
    }
    if let Some(v) = tune.emulator_quota {
        w.text("emulator_quota", &[], &v.to_string());
    }
    for pin in &tune.vcpupins {
        w.empty(
            "vcpupin",
            &[("vcpu", s(pin.vcpu)), ("cpuset", s(&pin.cpuset))],
        );
    }
    if let Some(set) = &tune.emulatorpin {
        w.empty("emulatorpin", &[("cpuset", s(set))]);
    }
    for pin in &tune.iothreadpins {
        w.empty(
            "iothreadpin",
            &[("iothread", s(pin.iothread)), ("cpuset", s(&pin.cpuset))],
        );
    }
    w.end("cputune");
}

fn write_os(w: &mut Writer, os: &Os) {
    w.start(
        "os",
        &[(
            "firmware",
            os.firmware.map(|f| name_of(FIRMWARES, f).to_string()),
        )],
    );
    w.text(
        "type",
        &[("arch", s(&os.arch)), ("machine", s(&os.machine))],
        "hvm",
    );
    if let Some(loader) = &os.loader {
        let attrs = [
            ("readonly", loader.readonly.map(|b| yes_no(b).to_string())),
            ("secure", loader.secure.map(|b| yes_no(b).to_string())),
            (
                "type",
                loader
                    .loader_type
                    .map(|t| name_of(LOADER_TYPES, t).to_string()),
            ),
        ];
        match &loader.path {
            Some(path) => w.text("loader", &attrs, path),
            None => w.empty("loader", &attrs),
        }
    }
    if let Some(nvram) = &os.nvram {
        let attrs = [("template", nvram.template.clone())];
        match &nvram.path {
            Some(path) => w.text("nvram", &attrs, path),
            None => w.empty("nvram", &attrs),
        }
    }
    if let Some(kernel) = &os.kernel {
        w.text("kernel", &[], kernel);
    }
    if let Some(initrd) = &os.initrd {
        w.text("initrd", &[], initrd);
    }
    if let Some(cmdline) = &os.cmdline {
        w.text("cmdline", &[], cmdline);
    }
    for dev in &os.boot {
        w.empty("boot", &[("dev", s(name_of(BOOT_DEVICES, *dev)))]);
    }
    if let Some(menu) = &os.bootmenu {
        w.empty(
            "bootmenu",
            &[
                ("enable", s(yes_no(menu.enable))),
                ("timeout", menu.timeout.map(|t| t.to_string())),
            ],
        );
    }
    if let Some(mode) = os.smbios {
        w.empty(
            "smbios",
            &[("mode", s(name_of(crate::sysinfo::SMBIOS_MODES, mode)))],
        );
    }
    if let Some(t) = os.bios_reboot_timeout {
        w.empty("bios", &[("rebootTimeout", s(t))]);
    }
    w.end("os");
}

fn write_cpu(w: &mut Writer, cpu: &Cpu) {
    let attrs = [
        ("mode", s(name_of(CPU_MODES, cpu.mode))),
        (
            "match",
            cpu.match_.map(|m| name_of(CPU_MATCHES, m).to_string()),
        ),
        (
            "check",
            cpu.check.map(|c| name_of(CPU_CHECKS, c).to_string()),
        ),
        ("migratable", cpu.migratable.map(|m| on_off(m).to_string())),
    ];
    if cpu.model.is_none()
        && cpu.vendor.is_none()
        && cpu.topology.is_none()
        && cpu.features.is_empty()
        && cpu.numa.is_empty()
    {
        w.empty("cpu", &attrs);
        return;
    }
    w.start("cpu", &attrs);
    if let Some(model) = &cpu.model {
        w.text(
            "model",
            &[(
                "fallback",
                model
                    .fallback
                    .map(|f| name_of(CPU_FALLBACKS, f).to_string()),
            )],
            &model.name,
        );
    }
    if let Some(vendor) = &cpu.vendor {
        w.text("vendor", &[], vendor);
    }
    if let Some(t) = &cpu.topology {
        w.empty(
            "topology",
            &[
                ("sockets", s(t.sockets)),
                ("dies", s(t.dies)),
                ("clusters", s(t.clusters)),
                ("cores", s(t.cores)),
                ("threads", s(t.threads)),
            ],
        );
    }
    for feature in &cpu.features {
        w.empty(
            "feature",
            &[
                ("policy", s(name_of(FEATURE_POLICIES, feature.policy))),
                ("name", s(&feature.name)),
            ],
        );
    }
    if !cpu.numa.is_empty() {
        w.start("numa", &[]);
        for (id, cell) in cpu.numa.iter().enumerate() {
            w.empty(
                "cell",
                &[
                    ("id", s(id)),
                    ("cpus", cell.cpus.as_ref().map(|c| c.to_string())),
                    ("memory", s(cell.memory_kib)),
                    ("unit", s("KiB")),
                    (
                        "memAccess",
                        cell.mem_access
                            .map(|a| name_of(MEMORY_ACCESSES, a).to_string()),
                    ),
                    ("discard", cell.discard.map(|b| yes_no(b).to_string())),
                ],
            );
        }
        w.end("numa");
    }
    w.end("cpu");
}

fn write_numatune(w: &mut Writer, tune: &NumaTune) {
    w.start("numatune", &[]);
    if let Some(memory) = &tune.memory {
        w.empty(
            "memory",
            &[
                ("mode", s(name_of(NUMA_MODES, memory.mode))),
                (
                    "placement",
                    (memory.placement == VcpuPlacement::Auto).then(|| "auto".to_string()),
                ),
                ("nodeset", memory.nodeset.as_ref().map(|n| n.to_string())),
            ],
        );
    }
    for node in &tune.memnodes {
        w.empty(
            "memnode",
            &[
                ("cellid", s(node.cellid)),
                ("mode", s(name_of(NUMA_MODES, node.mode))),
                ("nodeset", s(&node.nodeset)),
            ],
        );
    }
    w.end("numatune");
}

fn write_clock(w: &mut Writer, clock: &Clock) {
    let attrs = [("offset", s(name_of(CLOCK_OFFSETS, clock.offset)))];
    if clock.timers.is_empty() {
        w.empty("clock", &attrs);
        return;
    }
    w.start("clock", &attrs);
    for timer in &clock.timers {
        w.empty(
            "timer",
            &[
                ("name", s(name_of(TIMER_NAMES, timer.name))),
                (
                    "tickpolicy",
                    timer
                        .tickpolicy
                        .map(|t| name_of(TICK_POLICIES, t).to_string()),
                ),
                ("present", timer.present.map(|p| yes_no(p).to_string())),
            ],
        );
    }
    w.end("clock");
}

fn write_address(w: &mut Writer, address: &Option<Address>) {
    let Some(address) = address else { return };
    match address {
        Address::Pci(a) => w.empty(
            "address",
            &[
                ("type", s("pci")),
                ("domain", Some(format!("{:#06x}", a.domain))),
                ("bus", Some(format!("{:#04x}", a.bus))),
                ("slot", Some(format!("{:#04x}", a.slot))),
                ("function", Some(format!("{:#x}", a.function))),
                (
                    "multifunction",
                    a.multifunction.map(|m| on_off(m).to_string()),
                ),
            ],
        ),
        Address::Drive(a) => w.empty(
            "address",
            &[
                ("type", s("drive")),
                ("controller", s(a.controller)),
                ("bus", s(a.bus)),
                ("target", s(a.target)),
                ("unit", s(a.unit)),
            ],
        ),
        Address::Usb(a) => w.empty(
            "address",
            &[
                ("type", s("usb")),
                ("bus", s(a.bus)),
                ("port", a.port.clone()),
            ],
        ),
        Address::VirtioSerial(a) => w.empty(
            "address",
            &[
                ("type", s("virtio-serial")),
                ("controller", s(a.controller)),
                ("bus", s(a.bus)),
                ("port", s(a.port)),
            ],
        ),
    }
}

fn write_boot(w: &mut Writer, order: Option<u32>) {
    if let Some(order) = order {
        w.empty("boot", &[("order", s(order))]);
    }
}

fn write_devices(w: &mut Writer, devices: &Devices) {
    w.start("devices", &[]);
    if let Some(emulator) = &devices.emulator {
        w.text("emulator", &[], emulator);
    }
    for disk in &devices.disks {
        write_disk(w, disk);
    }
    for controller in &devices.controllers {
        write_controller(w, controller);
    }
    for iface in &devices.interfaces {
        write_interface(w, iface);
    }
    for serial in &devices.serials {
        write_chardev(w, "serial", serial);
    }
    for console in &devices.consoles {
        write_chardev(w, "console", console);
    }
    for channel in &devices.channels {
        write_channel(w, channel);
    }
    for input in &devices.inputs {
        let attrs = [
            ("type", s(name_of(INPUT_TYPES, input.input_type))),
            ("bus", s(name_of(INPUT_BUSES, input.bus))),
        ];
        if input.address.is_some() {
            w.start("input", &attrs);
            write_address(w, &input.address);
            w.end("input");
        } else {
            w.empty("input", &attrs);
        }
    }
    for graphics in &devices.graphics {
        write_graphics(w, graphics);
    }
    for sound in &devices.sounds {
        write_sound(w, sound);
    }
    for audio in &devices.audios {
        write_audio(w, audio);
    }
    for video in &devices.videos {
        w.start("video", &[]);
        w.empty(
            "model",
            &[
                ("type", s(name_of(VIDEO_MODELS, video.model))),
                ("ram", video.ram_kib.map(|v| v.to_string())),
                ("vram", video.vram_kib.map(|v| v.to_string())),
                ("vgamem", video.vgamem_kib.map(|v| v.to_string())),
                ("heads", video.heads.map(|h| h.to_string())),
                ("primary", video.primary.then(|| "yes".to_string())),
            ],
        );
        write_address(w, &video.address);
        w.end("video");
    }
    for hostdev in &devices.hostdevs {
        write_hostdev(w, hostdev);
    }
    for redirdev in &devices.redirdevs {
        let attrs = [("bus", s("usb")), ("type", s("spicevmc"))];
        if redirdev.address.is_some() {
            w.start("redirdev", &attrs);
            write_address(w, &redirdev.address);
            w.end("redirdev");
        } else {
            w.empty("redirdev", &attrs);
        }
    }
    if let Some(balloon) = &devices.memballoon {
        let attrs = [
            (
                "model",
                s(match balloon.model {
                    MemBalloonModel::Virtio => "virtio",
                    MemBalloonModel::None => "none",
                }),
            ),
            (
                "autodeflate",
                balloon.autodeflate.map(|a| on_off(a).to_string()),
            ),
        ];
        if balloon.stats_period.is_none() && balloon.address.is_none() {
            w.empty("memballoon", &attrs);
        } else {
            w.start("memballoon", &attrs);
            if let Some(period) = balloon.stats_period {
                w.empty("stats", &[("period", s(period))]);
            }
            write_address(w, &balloon.address);
            w.end("memballoon");
        }
    }
    for rng in &devices.rngs {
        w.start("rng", &[("model", s("virtio"))]);
        w.text("backend", &[("model", s("random"))], &rng.backend_random);
        write_address(w, &rng.address);
        w.end("rng");
    }
    w.end("devices");
}

fn write_hostdev(w: &mut Writer, hostdev: &HostDev) {
    let kind = match hostdev.source {
        HostDevSource::Pci { .. } => "pci",
        HostDevSource::Usb { .. } => "usb",
    };
    w.start(
        "hostdev",
        &[
            ("mode", s("subsystem")),
            ("type", s(kind)),
            ("managed", s(if hostdev.managed { "yes" } else { "no" })),
        ],
    );
    if hostdev.driver_vfio {
        w.empty("driver", &[("name", s("vfio"))]);
    }
    match &hostdev.source {
        HostDevSource::Pci {
            domain,
            bus,
            slot,
            function,
        } => {
            w.start("source", &[]);
            w.empty(
                "address",
                &[
                    ("domain", Some(format!("{domain:#06x}"))),
                    ("bus", Some(format!("{bus:#04x}"))),
                    ("slot", Some(format!("{slot:#04x}"))),
                    ("function", Some(format!("{function:#x}"))),
                ],
            );
            w.end("source");
        }
        HostDevSource::Usb {
            vendor,
            product,
            bus,
            device,
            optional,
        } => {
            w.start(
                "source",
                &[("startupPolicy", optional.then(|| "optional".to_string()))],
            );
            if let Some(vendor) = vendor {
                w.empty("vendor", &[("id", Some(format!("{vendor:#06x}")))]);
            }
            if let Some(product) = product {
                w.empty("product", &[("id", Some(format!("{product:#06x}")))]);
            }
            if let (Some(bus), Some(device)) = (bus, device) {
                w.empty("address", &[("bus", s(bus)), ("device", s(device))]);
            }
            w.end("source");
        }
    }
    write_boot(w, hostdev.boot_order);
    if let Some(bar) = hostdev.rom_bar {
        w.empty("rom", &[("bar", s(on_off(bar)))]);
    }
    write_address(w, &hostdev.address);
    w.end("hostdev");
}

fn write_disk(w: &mut Writer, disk: &Disk) {
    w.start(
        "disk",
        &[
            ("type", s(name_of(DISK_TYPES, disk.disk_type))),
            ("device", s(name_of(DISK_DEVICES, disk.device))),
        ],
    );
    let d = &disk.driver;
    w.empty(
        "driver",
        &[
            ("name", s("qemu")),
            (
                "type",
                d.format_stated
                    .then(|| name_of(DISK_FORMATS, d.format).to_string()),
            ),
            (
                "cache",
                d.cache.map(|c| name_of(DISK_CACHES, c).to_string()),
            ),
            (
                "error_policy",
                d.error_policy
                    .map(|c| name_of(DISK_ERROR_POLICIES, c).to_string()),
            ),
            (
                "rerror_policy",
                d.rerror_policy
                    .map(|c| name_of(DISK_ERROR_POLICIES, c).to_string()),
            ),
            ("io", d.io.map(|c| name_of(DISK_IOS, c).to_string())),
            (
                "copy_on_read",
                d.copy_on_read.map(|c| on_off(c).to_string()),
            ),
            (
                "discard",
                d.discard.map(|c| name_of(DISK_DISCARDS, c).to_string()),
            ),
            ("iothread", d.iothread.map(|c| c.to_string())),
            (
                "detect_zeroes",
                d.detect_zeroes
                    .map(|c| name_of(DETECT_ZEROES, c).to_string()),
            ),
            ("queues", d.queues.map(|n| n.to_string())),
            ("queue_size", d.queue_size.map(|n| n.to_string())),
        ],
    );
    if let Some(auth) = disk.auth.as_ref().filter(|a| a.under_disk) {
        write_disk_auth(w, auth);
    }
    if let Some(network) = &disk.network {
        write_network_source(w, network, disk.auth.as_ref().filter(|a| !a.under_disk));
    }
    if let Some(source) = &disk.source {
        let key = if disk.disk_type == DiskType::Block {
            "dev"
        } else {
            "file"
        };
        w.empty("source", &[(key, s(source))]);
    }
    if let Some(volume) = &disk.volume {
        w.empty(
            "source",
            &[("pool", s(&volume.pool)), ("volume", s(&volume.volume))],
        );
    }
    w.empty(
        "target",
        &[
            ("dev", s(&disk.target.dev)),
            ("bus", s(name_of(DISK_BUSES, disk.target.bus))),
        ],
    );
    if let Some(tune) = &disk.iotune {
        write_iotune(w, tune);
    }
    if disk.readonly {
        w.empty("readonly", &[]);
    }
    if disk.shareable {
        w.empty("shareable", &[]);
    }
    if let Some(serial) = &disk.serial {
        w.text("serial", &[], serial);
    }
    write_boot(w, disk.boot_order);
    write_address(w, &disk.address);
    w.end("disk");
}

/// `<iotune>` in libvirt's order: the limits set, the group before the burst lengths.
fn write_iotune(w: &mut Writer, tune: &IoTune) {
    if tune.is_empty() {
        return;
    }
    w.start("iotune", &[]);
    let mut group = tune.group_name.as_deref();
    for (limit, value) in tune.limits() {
        if limit.kind().2 == IoLevel::MaxLength {
            if let Some(name) = group.take() {
                w.text("group_name", &[], name);
            }
        }
        w.text(limit.name(), &[], &value.to_string());
    }
    if let Some(name) = group {
        w.text("group_name", &[], name);
    }
    w.end("iotune");
}

fn write_network_source(w: &mut Writer, source: &NetworkSource, auth: Option<&DiskAuth>) {
    let attrs = [
        ("protocol", s(name_of(NETWORK_PROTOCOLS, source.protocol))),
        ("name", source.name.clone()),
        ("query", source.query.clone()),
    ];
    if source.hosts.is_empty() && source.ssl_verify.is_none() && auth.is_none() {
        w.empty("source", &attrs);
        return;
    }
    w.start("source", &attrs);
    for host in &source.hosts {
        match host {
            NetworkHost::Tcp { name, port } => w.empty(
                "host",
                &[("name", s(name)), ("port", port.map(|p| p.to_string()))],
            ),
            NetworkHost::Unix { socket } => {
                w.empty("host", &[("transport", s("unix")), ("socket", s(socket))])
            }
        }
    }
    if let Some(verify) = source.ssl_verify {
        w.empty("ssl", &[("verify", s(if verify { "yes" } else { "no" }))]);
    }
    if let Some(auth) = auth {
        write_disk_auth(w, auth);
    }
    w.end("source");
}

fn write_disk_auth(w: &mut Writer, auth: &DiskAuth) {
    w.start("auth", &[("username", s(&auth.username))]);
    let (key, value) = match &auth.secret {
        SecretLookup::Uuid(uuid) => ("uuid", uuid.to_string()),
        SecretLookup::Usage(usage) => ("usage", usage.clone()),
    };
    w.empty(
        "secret",
        &[
            ("type", s(name_of(SECRET_USAGE_TYPES, auth.secret_type))),
            (key, Some(value)),
        ],
    );
    w.end("auth");
}

fn write_controller(w: &mut Writer, c: &Controller) {
    let kind = match c.controller_type {
        ControllerType::Ide => "ide",
        ControllerType::Fdc => "fdc",
        ControllerType::Scsi => "scsi",
        ControllerType::Sata => "sata",
        ControllerType::Usb => "usb",
        ControllerType::Pci => "pci",
        ControllerType::VirtioSerial => "virtio-serial",
    };
    let attrs = [
        ("type", s(kind)),
        ("index", s(c.index)),
        ("model", c.model.clone()),
        ("ports", c.ports.map(|p| p.to_string())),
    ];
    if c.driver_queues.is_none()
        && c.address.is_none()
        && c.model_name.is_none()
        && c.target.is_none()
        && c.master_startport.is_none()
    {
        w.empty("controller", &attrs);
        return;
    }
    w.start("controller", &attrs);
    // libvirt's order: <model>, <target>, <driver>, then the device info (<master>, <address>).
    if let Some(name) = &c.model_name {
        w.empty("model", &[("name", s(name))]);
    }
    if let Some(t) = &c.target {
        w.empty(
            "target",
            &[
                ("chassisNr", t.chassis_nr.map(|n| n.to_string())),
                ("chassis", t.chassis.map(|n| n.to_string())),
                ("port", t.port.map(|p| format!("{p:#x}"))),
            ],
        );
    }
    if let Some(queues) = c.driver_queues {
        w.empty("driver", &[("queues", s(queues))]);
    }
    if let Some(startport) = c.master_startport {
        w.empty("master", &[("startport", s(startport))]);
    }
    write_address(w, &c.address);
    w.end("controller");
}

fn write_interface(w: &mut Writer, iface: &Interface) {
    w.start(
        "interface",
        &[("type", s(name_of(INTERFACE_TYPES, iface.interface_type)))],
    );
    if let Some(mac) = &iface.mac {
        w.empty("mac", &[("address", s(mac))]);
    }
    match &iface.source {
        InterfaceSource::None => {}
        InterfaceSource::Network(n) => w.empty("source", &[("network", s(n))]),
        InterfaceSource::Bridge(b) => w.empty("source", &[("bridge", s(b))]),
        InterfaceSource::Direct { dev, mode } => w.empty(
            "source",
            &[("dev", s(dev)), ("mode", s(name_of(DIRECT_MODES, *mode)))],
        ),
    }
    if iface.target_dev.is_some() || iface.target_managed.is_some() {
        w.empty(
            "target",
            &[
                ("dev", iface.target_dev.clone()),
                (
                    "managed",
                    iface.target_managed.map(|m| yes_no(m).to_string()),
                ),
            ],
        );
    }
    if let Some(model) = &iface.model {
        w.empty("model", &[("type", s(model))]);
    }
    if iface.driver_name.is_some() || iface.driver_queues.is_some() {
        w.empty(
            "driver",
            &[
                (
                    "name",
                    iface
                        .driver_name
                        .map(|n| name_of(INTERFACE_DRIVERS, n).to_string()),
                ),
                ("queues", iface.driver_queues.map(|q| q.to_string())),
            ],
        );
    }
    if let Some(up) = iface.link_up {
        w.empty("link", &[("state", s(if up { "up" } else { "down" }))]);
    }
    if let Some(mtu) = iface.mtu {
        w.empty("mtu", &[("size", s(mtu))]);
    }
    write_boot(w, iface.boot_order);
    write_address(w, &iface.address);
    w.end("interface");
}

fn write_chardev(w: &mut Writer, element: &str, dev: &CharDevice) {
    let kind = match dev.source {
        CharSource::Pty => "pty",
        CharSource::File { .. } => "file",
        CharSource::Unix { .. } => "unix",
        CharSource::Tcp { .. } => "tcp",
        CharSource::Udp { .. } => "udp",
        CharSource::Null => "null",
        CharSource::Stdio => "stdio",
        CharSource::Vc => "vc",
    };
    w.start(element, &[("type", s(kind))]);
    match &dev.source {
        CharSource::Pty | CharSource::Null | CharSource::Stdio | CharSource::Vc => {}
        CharSource::Tcp {
            mode,
            host,
            service,
            protocol,
        } => {
            w.empty(
                "source",
                &[
                    ("mode", s(name_of(UNIX_MODES, *mode))),
                    ("host", s(host)),
                    ("service", s(service)),
                ],
            );
            w.empty(
                "protocol",
                &[("type", s(name_of(TCP_PROTOCOLS, *protocol)))],
            );
        }
        CharSource::Udp {
            bind_host,
            bind_service,
            connect_host,
            connect_service,
        } => {
            if bind_host.is_some() || bind_service.is_some() {
                w.empty(
                    "source",
                    &[
                        ("mode", s("bind")),
                        ("host", bind_host.clone()),
                        ("service", bind_service.clone()),
                    ],
                );
            }
            w.empty(
                "source",
                &[
                    ("mode", s("connect")),
                    ("host", connect_host.clone()),
                    ("service", s(connect_service)),
                ],
            );
        }
        CharSource::File { path, append } => w.empty(
            "source",
            &[
                ("path", s(path)),
                ("append", append.map(|a| on_off(a).to_string())),
            ],
        ),
        CharSource::Unix { path, mode } => w.empty(
            "source",
            &[("mode", s(name_of(UNIX_MODES, *mode))), ("path", s(path))],
        ),
    }
    let attrs = [
        ("type", dev.target.target_type.clone()),
        ("port", dev.target.port.map(|p| p.to_string())),
    ];
    match &dev.target.model {
        Some(model) => {
            w.start("target", &attrs);
            w.empty("model", &[("name", s(model))]);
            w.end("target");
        }
        None => w.empty("target", &attrs),
    }
    w.end(element);
}

fn write_channel(w: &mut Writer, channel: &Channel) {
    let kind = match channel.source {
        ChannelSource::Unix { .. } => "unix",
        ChannelSource::Pty => "pty",
        ChannelSource::SpiceVmc => "spicevmc",
    };
    w.start("channel", &[("type", s(kind))]);
    // A bind socket without a path is printed without <source>, as libvirt prints it (it
    // picks the path at start).
    if let ChannelSource::Unix {
        mode,
        path: Some(path),
    } = &channel.source
    {
        w.empty(
            "source",
            &[("mode", s(name_of(UNIX_MODES, *mode))), ("path", s(path))],
        );
    }
    w.empty(
        "target",
        &[("type", s("virtio")), ("name", s(&channel.target_name))],
    );
    write_address(w, &channel.address);
    w.end("channel");
}

fn write_sound(w: &mut Writer, sound: &Sound) {
    let attrs = [("model", s(name_of(SOUND_MODELS, sound.model)))];
    if sound.codecs.is_empty() && sound.audio_id.is_none() && sound.address.is_none() {
        w.empty("sound", &attrs);
        return;
    }
    w.start("sound", &attrs);
    for codec in &sound.codecs {
        w.empty("codec", &[("type", s(name_of(SOUND_CODECS, *codec)))]);
    }
    if let Some(id) = sound.audio_id {
        w.empty("audio", &[("id", s(id))]);
    }
    write_address(w, &sound.address);
    w.end("sound");
}

/// In libvirt's attribute order: common ones, then the backend type's, then `<settings>`.
fn write_audio(w: &mut Writer, audio: &Audio) {
    let attrs = [
        ("id", s(audio.id)),
        ("type", s(name_of(AUDIO_TYPES, audio.audio_type))),
        ("timerPeriod", audio.timer_period.map(|n| n.to_string())),
        ("serverName", audio.server_name.clone()),
        ("driver", audio.sdl_driver.clone()),
        ("path", audio.path.clone()),
    ];
    if audio.input.is_none() && audio.output.is_none() {
        w.empty("audio", &attrs);
        return;
    }
    w.start("audio", &attrs);
    for (name, stream) in [("input", &audio.input), ("output", &audio.output)] {
        let Some(stream) = stream else { continue };
        let attrs = [
            (
                "mixingEngine",
                stream.mixing_engine.map(|b| yes_no(b).to_string()),
            ),
            (
                "fixedSettings",
                stream.fixed_settings.map(|b| yes_no(b).to_string()),
            ),
            ("voices", stream.voices.map(|n| n.to_string())),
            ("bufferLength", stream.buffer_length.map(|n| n.to_string())),
            ("dev", stream.dev.clone()),
            ("tryPoll", stream.try_poll.map(|b| yes_no(b).to_string())),
            ("name", stream.name.clone()),
            ("streamName", stream.stream_name.clone()),
            ("latency", stream.latency.map(|n| n.to_string())),
        ];
        match &stream.settings {
            Some(settings) => {
                w.start(name, &attrs);
                w.empty(
                    "settings",
                    &[
                        ("frequency", settings.frequency.map(|n| n.to_string())),
                        ("channels", settings.channels.map(|n| n.to_string())),
                        (
                            "format",
                            settings
                                .format
                                .map(|f| name_of(AUDIO_FORMATS, f).to_string()),
                        ),
                    ],
                );
                w.end(name);
            }
            None => w.empty(name, &attrs),
        }
    }
    w.end("audio");
}

fn write_graphics(w: &mut Writer, g: &Graphics) {
    if let Some(spice) = &g.spice {
        write_spice(w, g, spice);
        return;
    }
    let mut attrs: Vec<(&str, Option<String>)> = vec![("type", s("vnc"))];
    match &g.listen {
        VncListen::Socket(path) => {
            attrs.push(("socket", s(path)));
        }
        VncListen::Address(address) => {
            // No port: `-1` with autoport; none at all with `autoport='no'`, as libvirt.
            attrs.push((
                "port",
                g.port
                    .map(|p| p.to_string())
                    .or_else(|| g.autoport.then(|| "-1".to_string())),
            ));
            attrs.push(("autoport", s(yes_no(g.autoport))));
            attrs.push(("listen", address.clone()));
        }
        VncListen::None => {}
    }
    attrs.push(("passwd", g.passwd.clone()));
    match &g.listen {
        VncListen::Socket(path) => {
            w.start("graphics", &attrs);
            w.empty("listen", &[("type", s("socket")), ("socket", s(path))]);
            w.end("graphics");
        }
        VncListen::Address(Some(address)) => {
            w.start("graphics", &attrs);
            w.empty("listen", &[("type", s("address")), ("address", s(address))]);
            w.end("graphics");
        }
        VncListen::Address(None) => {
            w.start("graphics", &attrs);
            w.empty("listen", &[("type", s("address"))]);
            w.end("graphics");
        }
        VncListen::None => {
            w.start("graphics", &attrs);
            w.empty("listen", &[("type", s("none"))]);
            w.end("graphics");
        }
    }
}

fn write_spice(w: &mut Writer, g: &Graphics, spice: &Spice) {
    let port = match (g.port, spice.port_any) {
        (Some(p), _) => Some(p.to_string()),
        (None, true) => Some("-1".to_string()),
        (None, false) => None,
    };
    // libvirt prints autoport (yes or no) for a display that listens on an address.
    let show_autoport = matches!(g.listen, VncListen::Address(_));
    let address = match &g.listen {
        VncListen::Address(a) => a.clone(),
        VncListen::Socket(_) | VncListen::None => None,
    };
    w.start(
        "graphics",
        &[
            ("type", s("spice")),
            ("port", port),
            (
                "autoport",
                show_autoport.then(|| yes_no(g.autoport).to_string()),
            ),
            ("listen", address.clone()),
            ("passwd", g.passwd.clone()),
        ],
    );
    match &g.listen {
        VncListen::None | VncListen::Socket(_) => w.empty("listen", &[("type", s("none"))]),
        VncListen::Address(_) => w.empty(
            "listen",
            &[("type", s("address")), ("address", address.clone())],
        ),
    }
    if let Some(compression) = spice.image_compression {
        w.empty(
            "image",
            &[(
                "compression",
                s(name_of(SPICE_IMAGE_COMPRESSIONS, compression)),
            )],
        );
    }
    w.end("graphics");
}
