//! Translating a [`Domain`] into QEMU's command line.
//!
//! The translation is total over the model: every element either becomes QEMU options or makes
//! the whole translation fail with [`QemuError::Unsupported`] naming it. Nothing is dropped
//! silently; where QEMU has no equivalent and the difference does not matter to the guest, the
//! result carries a warning the daemon can show.
//!
//! Devices and block nodes use QEMU's JSON syntax (`-device '{...}'`, `-blockdev '{...}'`), so user
//! strings (paths, serial numbers) need no escaping there. The few QemuOpts-style options
//! (`-chardev`, `-name`, `-vnc`, ...) escape commas by doubling them.
//!
//! Fixed choices, the same for every VM (see also the crate documentation):
//! - QMP on `RunPaths::qmp_socket`, serial port 0 on `RunPaths::console_socket` (logged to
//!   `console.log`), `-pidfile`, `-nodefaults -no-user-config`, `-display none` unless VNC.
//! - No `-no-shutdown` (unless `on_poweroff='preserve'`): a guest poweroff emits SHUTDOWN and
//!   QEMU exits, so the daemon sees both the event and the end of the process.
//! - No `-S`: the guest starts running at once; settings that only QMP can make (balloon target,
//!   VNC password, link state) are applied by [`crate::launch`] right after start.

use std::fmt::Write as _;

use oxvirt_domain::{
    Address, BootDevice, CharDevice, CharSource, ClockOffset, ControllerType, Cpu, CpuCheck,
    CpuMode, DetectZeroes, Disk, DiskBus, DiskCache, DiskDevice, DiskDiscard, DiskFormat, DiskIo,
    DiskType, Domain, DomainType, FeaturePolicy, Graphics, InputBus, InputType, Interface,
    InterfaceDriverName, InterfaceSource, InterfaceType, LifecycleAction, MemBalloonModel,
    PciAddress, TickPolicy, TimerName, UnixMode, VcpuPlacement, VideoModel, VncListen,
};
use serde_json::{json, Map, Value};

use crate::{Accel, QemuError, RunPaths};

/// The full translation: QEMU's arguments and what the operator should know about them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuCommandLine {
    /// Arguments, without argv\[0\].
    pub args: Vec<String>,
    /// Places where the VM differs from what the definition asked, in words (e.g. host CPU
    /// passthrough under TCG).
    pub warnings: Vec<String>,
}

/// QEMU's arguments for `domain` (without argv\[0\]); see [`build_command_line`] for warnings.
pub fn command_line(
    domain: &Domain,
    run: &RunPaths,
    accel: Accel,
) -> Result<Vec<String>, QemuError> {
    build_command_line(domain, run, accel).map(|line| line.args)
}

/// QEMU's arguments for `domain` plus the warnings the daemon should show.
pub fn build_command_line(
    domain: &Domain,
    run: &RunPaths,
    accel: Accel,
) -> Result<QemuCommandLine, QemuError> {
    run.check_socket_paths()?;
    let mut builder = Builder::new(domain, run, accel)?;
    builder.build()?;
    Ok(builder.finish())
}

/// The accelerator QEMU will really use: `<domain type='qemu'>` means TCG even where KVM exists.
pub fn effective_accel(domain: &Domain, available: Accel) -> Accel {
    match domain.domain_type {
        DomainType::Qemu => Accel::Tcg,
        DomainType::Kvm => available,
    }
}

/// The two x86 machine families; they differ in buses and built-in controllers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chipset {
    /// `pc`, `pc-i440fx-*`: PCI root bus `pci.0`, built-in IDE (`ide.0`, `ide.1`).
    I440fx,
    /// `q35`, `pc-q35-*`: PCIe root bus `pcie.0`, built-in AHCI `ide` (`ide.0`..`ide.5`).
    Q35,
}

impl Chipset {
    fn of(machine: &str) -> Option<Chipset> {
        if machine == "pc" || machine.starts_with("pc-i440fx-") || machine.starts_with("pc-1.") {
            Some(Chipset::I440fx)
        } else if machine == "q35" || machine.starts_with("pc-q35-") {
            Some(Chipset::Q35)
        } else {
            None
        }
    }

    fn root_bus(self) -> &'static str {
        match self {
            Chipset::I440fx => "pci.0",
            Chipset::Q35 => "pcie.0",
        }
    }
}

/// `-device` entries in three groups, emitted in this order so that QEMU's automatic PCI slot
/// assignment never takes a slot a later device names explicitly, and so that controllers exist
/// before the devices plugged into them.
#[derive(Default)]
struct DeviceGroups {
    pci_fixed: Vec<Value>,
    pci_auto: Vec<Value>,
    on_buses: Vec<Value>,
}

struct Builder<'a> {
    domain: &'a Domain,
    run: &'a RunPaths,
    accel: Accel,
    chipset: Chipset,
    args: Vec<String>,
    warnings: Vec<String>,
    devices: DeviceGroups,
    /// `(disk index, bootindex)` / `(interface index, bootindex)` derived from `<os><boot dev>`.
    disk_boot: Vec<Option<u32>>,
    interface_boot: Vec<Option<u32>>,
}

impl<'a> Builder<'a> {
    fn new(domain: &'a Domain, run: &'a RunPaths, available: Accel) -> Result<Self, QemuError> {
        let os = &domain.os;
        if os.arch != "x86_64" {
            return Err(QemuError::unsupported(
                "os/type@arch",
                format!("arch '{}': this engine runs x86_64 guests only", os.arch),
            ));
        }
        let chipset = Chipset::of(&os.machine).ok_or_else(|| {
            QemuError::unsupported(
                "os/type@machine",
                format!(
                    "machine '{}': only pc (i440fx) and q35 are supported",
                    os.machine
                ),
            )
        })?;
        let accel = effective_accel(domain, available);
        let mut warnings = Vec::new();
        if domain.domain_type == DomainType::Kvm && accel == Accel::Tcg {
            warnings.push(
                "domain type is 'kvm' but hardware KVM is not available: running under TCG (much slower)"
                    .to_string(),
            );
        }
        Ok(Builder {
            domain,
            run,
            accel,
            chipset,
            args: Vec::new(),
            warnings,
            devices: DeviceGroups::default(),
            disk_boot: vec![None; domain.devices.disks.len()],
            interface_boot: vec![None; domain.devices.interfaces.len()],
        })
    }

    fn arg(&mut self, option: &str, value: impl Into<String>) {
        self.args.push(option.to_string());
        self.args.push(value.into());
    }

    fn flag(&mut self, option: &str) {
        self.args.push(option.to_string());
    }

    fn finish(mut self) -> QemuCommandLine {
        let groups = std::mem::take(&mut self.devices);
        for device in groups
            .pci_fixed
            .into_iter()
            .chain(groups.pci_auto)
            .chain(groups.on_buses)
        {
            self.arg("-device", device.to_string());
        }
        self.arg("-msg", "timestamp=on");
        QemuCommandLine {
            args: self.args,
            warnings: self.warnings,
        }
    }

    fn build(&mut self) -> Result<(), QemuError> {
        let domain = self.domain;
        self.arg(
            "-name",
            format!("guest={},debug-threads=on", escape_opt(&domain.name)),
        );
        self.arg("-uuid", domain.uuid.to_string());
        self.flag("-no-user-config");
        self.flag("-nodefaults");
        self.machine_and_memory()?;
        self.arg("-accel", self.accel.qemu_name());
        self.cpu()?;
        self.smp()?;
        self.iothreads();
        self.monitor_and_pidfile();
        self.clock()?;
        self.lifecycle()?;
        self.boot()?;
        self.serials()?;
        self.controllers()?;
        for index in 0..domain.devices.disks.len() {
            self.disk(index)?;
        }
        for index in 0..domain.devices.interfaces.len() {
            self.interface(index)?;
        }
        self.inputs()?;
        self.graphics_and_video()?;
        self.audio();
        self.memballoon()?;
        self.rngs()?;
        Ok(())
    }

    // ----- machine, memory, CPU ---------------------------------------------------------------

    fn machine_and_memory(&mut self) -> Result<(), QemuError> {
        let domain = self.domain;
        if domain.os.firmware.is_some() || domain.os.loader.is_some() || domain.os.nvram.is_some() {
            return Err(QemuError::unsupported(
                "os/firmware|loader|nvram",
                "only the built-in BIOS (SeaBIOS) is supported; UEFI firmware selection is not implemented",
            ));
        }
        if domain.vcpu.placement == VcpuPlacement::Auto {
            return Err(QemuError::unsupported(
                "vcpu@placement",
                "placement='auto' needs numad, which this engine does not use",
            ));
        }
        if let Some(tune) = &domain.cputune {
            if *tune != Default::default() {
                return Err(QemuError::unsupported(
                    "cputune",
                    "per-vCPU pinning and CPU bandwidth limits are not implemented (vcpu cpuset is)",
                ));
            }
        }

        let mut machine = domain.os.machine.clone();
        machine.push_str(",usb=off,dump-guest-core=off");
        if !domain.features.acpi {
            // libvirt does the same: no <acpi/> means no ACPI tables. Note that guests then
            // cannot be powered down with the ACPI button, and Linux needs ACPI for SMP here.
            machine.push_str(",acpi=off");
        }
        if domain
            .clock
            .timers
            .iter()
            .any(|t| t.name == TimerName::Hpet && t.present == Some(false))
        {
            machine.push_str(",hpet=off");
        }
        let backing = domain.memory_backing.clone().unwrap_or_default();
        if backing.nosharepages {
            machine.push_str(",mem-merge=off");
        }

        let memory_mib = kib_to_mib_rounded_up(domain.memory_kib);
        let mut memory = format!("size={memory_mib}M");
        if let Some(max) = domain.max_memory {
            write!(
                memory,
                ",slots={},maxmem={}M",
                max.slots,
                kib_to_mib_rounded_up(max.kib)
            )
            .expect("writing to a String cannot fail");
        }

        let mut backend = None;
        if let Some(hugepages) = &backing.hugepages {
            if !hugepages.page_sizes_kib.is_empty() {
                return Err(QemuError::unsupported(
                    "memoryBacking/hugepages/page",
                    "explicit huge page sizes are not supported; <hugepages/> uses the host's default size from /dev/hugepages",
                ));
            }
            machine.push_str(",memory-backend=pc.ram");
            backend = Some(json!({
                "qom-type": "memory-backend-file",
                "id": "pc.ram",
                "mem-path": HUGEPAGES_MOUNT,
                "prealloc": true,
                "size": memory_mib * 1024 * 1024,
            }));
        }
        self.arg("-machine", machine);
        self.arg("-m", memory);
        if let Some(backend) = backend {
            self.arg("-object", backend.to_string());
        }
        Ok(())
    }

    fn cpu(&mut self) -> Result<(), QemuError> {
        let default_cpu = Cpu {
            mode: CpuMode::Custom,
            match_: None,
            check: None,
            migratable: None,
            model: None,
            vendor: None,
            topology: None,
            features: Vec::new(),
        };
        let cpu = self.domain.cpu.as_ref().unwrap_or(&default_cpu);
        let mut value = match cpu.mode {
            CpuMode::Custom => cpu
                .model
                .as_ref()
                .map(|model| model.name.clone())
                .unwrap_or_else(|| DEFAULT_CPU_MODEL.to_string()),
            CpuMode::Maximum => "max".to_string(),
            CpuMode::HostModel | CpuMode::HostPassthrough => match self.accel {
                Accel::Kvm => "host".to_string(),
                Accel::Tcg => {
                    let mode = if cpu.mode == CpuMode::HostModel {
                        "host-model"
                    } else {
                        "host-passthrough"
                    };
                    self.warnings.push(format!(
                        "cpu mode '{mode}' is impossible under TCG (there is no host CPU to pass through): using -cpu max, the most capable emulated CPU"
                    ));
                    "max".to_string()
                }
            },
        };
        if cpu
            .model
            .as_ref()
            .is_some_and(|m| !is_qemu_identifier(&m.name))
        {
            return Err(QemuError::invalid(
                "cpu/model",
                "model name must be letters, digits, '-', '_' or '.'",
            ));
        }
        if let Some(migratable) = cpu.migratable {
            if cpu.mode == CpuMode::HostPassthrough && self.accel == Accel::Kvm {
                write!(value, ",migratable={}", on_off(migratable)).expect("String write");
            }
        }
        if let Some(vendor) = &cpu.vendor {
            if vendor.len() != 12 || !vendor.is_ascii() || vendor.contains(',') {
                return Err(QemuError::invalid(
                    "cpu/vendor",
                    "a CPU vendor id is exactly 12 ASCII characters",
                ));
            }
            write!(value, ",vendor={vendor}").expect("String write");
        }
        for feature in &cpu.features {
            if !is_qemu_identifier(&feature.name) {
                return Err(QemuError::invalid(
                    "cpu/feature@name",
                    format!("'{}' is not a CPU feature name", feature.name),
                ));
            }
            // libvirt spells features with '_' where QEMU's canonical names use '-'.
            let name = feature.name.replace('_', "-");
            let on = match feature.policy {
                FeaturePolicy::Force | FeaturePolicy::Require | FeaturePolicy::Optional => true,
                FeaturePolicy::Disable | FeaturePolicy::Forbid => false,
            };
            write!(value, ",{name}={}", on_off(on)).expect("String write");
        }
        if cpu.check == Some(CpuCheck::Full) {
            // QEMU refuses to start rather than silently drop a feature the host lacks.
            value.push_str(",enforce=on");
        }
        self.arg("-cpu", value);
        Ok(())
    }

    fn smp(&mut self) -> Result<(), QemuError> {
        let vcpu = &self.domain.vcpu;
        let online = vcpu.online();
        let mut smp = online.to_string();
        if online != vcpu.max {
            write!(smp, ",maxcpus={}", vcpu.max).expect("String write");
        }
        match self.domain.cpu.as_ref().and_then(|cpu| cpu.topology) {
            Some(topology) => {
                if topology.total() != Some(vcpu.max) {
                    return Err(QemuError::invalid(
                        "cpu/topology",
                        format!(
                            "sockets*dies*clusters*cores*threads must equal the vcpu count {}",
                            vcpu.max
                        ),
                    ));
                }
                write!(smp, ",sockets={},dies={}", topology.sockets, topology.dies)
                    .expect("String write");
                if topology.clusters != 1 {
                    return Err(QemuError::unsupported(
                        "cpu/topology@clusters",
                        "x86 machines have no CPU clusters in QEMU 7.2",
                    ));
                }
                write!(
                    smp,
                    ",cores={},threads={}",
                    topology.cores, topology.threads
                )
                .expect("String write");
            }
            None => write!(smp, ",sockets={},cores=1,threads=1", vcpu.max).expect("String write"),
        }
        self.arg("-smp", smp);
        Ok(())
    }

    fn iothreads(&mut self) {
        for id in 1..=self.domain.iothreads.unwrap_or(0) {
            self.arg(
                "-object",
                json!({"qom-type": "iothread", "id": format!("iothread{id}")}).to_string(),
            );
        }
    }

    // ----- monitor, lifecycle, clock, boot ----------------------------------------------------

    fn monitor_and_pidfile(&mut self) {
        let qmp = escape_opt(&self.run.qmp_socket().to_string_lossy());
        self.arg(
            "-chardev",
            format!("socket,id=charmonitor,path={qmp},server=on,wait=off"),
        );
        self.arg("-mon", "chardev=charmonitor,id=monitor,mode=control");
        self.arg(
            "-pidfile",
            self.run.pid_file().to_string_lossy().into_owned(),
        );
    }

    fn clock(&mut self) -> Result<(), QemuError> {
        let clock = &self.domain.clock;
        let mut rtc = match clock.offset {
            ClockOffset::Utc => "base=utc".to_string(),
            ClockOffset::Localtime => "base=localtime".to_string(),
        };
        for timer in &clock.timers {
            let element = format!("clock/timer[@name='{}']", timer_name(timer.name));
            match (timer.name, timer.present, timer.tickpolicy) {
                (TimerName::Rtc, None | Some(true), Some(TickPolicy::Catchup)) => {
                    rtc.push_str(",driftfix=slew")
                }
                (TimerName::Rtc, None | Some(true), Some(TickPolicy::Delay) | None) => {}
                // The PIT's lost-tick policy only exists for the in-kernel PIT; QEMU's own PIT
                // (used under TCG) always delivers late ticks late, which is the same thing.
                (TimerName::Pit, None | Some(true), Some(TickPolicy::Delay) | None) => {
                    if self.accel == Accel::Kvm {
                        self.arg("-global", "kvm-pit.lost_tick_policy=delay");
                    }
                }
                // present='no' is on -machine (above); present='yes' is the default on pc/q35.
                (TimerName::Hpet, Some(_), None) => {}
                (TimerName::Kvmclock, Some(present), None) => {
                    if self.accel == Accel::Tcg && present {
                        return Err(QemuError::unsupported(element, "kvmclock needs KVM"));
                    }
                    if self.accel == Accel::Kvm && !present {
                        // Appended to -cpu, which was written just before.
                        self.append_to_cpu(",kvmclock=off");
                    }
                }
                _ => {
                    return Err(QemuError::unsupported(
                        element,
                        "only rtc tickpolicy catchup/delay, pit delay, hpet and kvmclock present are supported",
                    ))
                }
            }
        }
        self.arg("-rtc", rtc);
        Ok(())
    }

    fn append_to_cpu(&mut self, suffix: &str) {
        if let Some(at) = self.args.iter().position(|a| a == "-cpu") {
            if let Some(value) = self.args.get_mut(at + 1) {
                value.push_str(suffix);
            }
        }
    }

    fn lifecycle(&mut self) -> Result<(), QemuError> {
        let domain = self.domain;
        match domain.on_poweroff {
            // QEMU exits after the guest powers off; for 'restart' the daemon starts it again.
            LifecycleAction::Destroy | LifecycleAction::Restart => {}
            LifecycleAction::Preserve => self.flag("-no-shutdown"),
            other => return Err(unsupported_action("on_poweroff", other)),
        }
        match domain.on_reboot {
            LifecycleAction::Restart => {}
            LifecycleAction::Destroy => self.flag("-no-reboot"),
            other => return Err(unsupported_action("on_reboot", other)),
        }
        // A pvpanic device lets the guest report a panic (GUEST_PANICKED); without one QEMU
        // could not honour on_crash at all. 'restart' pauses the VM so the daemon can reset it
        // on the GuestPanicked event.
        let panic = match domain.on_crash {
            LifecycleAction::Destroy => "shutdown",
            LifecycleAction::Preserve | LifecycleAction::Restart => "pause",
            other => return Err(unsupported_action("on_crash", other)),
        };
        self.arg("-action", format!("panic={panic}"));
        self.devices
            .on_buses
            .push(json!({"driver": "pvpanic", "id": "panic0"}));
        Ok(())
    }

    fn boot(&mut self) -> Result<(), QemuError> {
        let domain = self.domain;
        let os = &domain.os;
        let per_device = domain.devices.disks.iter().any(|d| d.boot_order.is_some())
            || domain
                .devices
                .interfaces
                .iter()
                .any(|i| i.boot_order.is_some());
        if !per_device {
            // <os><boot dev=...> in order becomes bootindex 1, 2, ... on the first device of
            // each kind, as libvirt does.
            for (position, device) in os.boot.iter().enumerate() {
                let bootindex = position as u32 + 1;
                match device {
                    BootDevice::Hd => {
                        let first = domain
                            .devices
                            .disks
                            .iter()
                            .position(|d| d.device == DiskDevice::Disk);
                        if let Some(index) = first {
                            self.disk_boot[index] = Some(bootindex);
                        }
                    }
                    BootDevice::Cdrom => {
                        let first = domain
                            .devices
                            .disks
                            .iter()
                            .position(|d| d.device == DiskDevice::Cdrom);
                        if let Some(index) = first {
                            self.disk_boot[index] = Some(bootindex);
                        }
                    }
                    BootDevice::Network => {
                        if !domain.devices.interfaces.is_empty() {
                            self.interface_boot[0] = Some(bootindex);
                        }
                    }
                    BootDevice::Fd => {
                        return Err(QemuError::unsupported(
                            "os/boot@dev",
                            "floppy boot: floppies are not supported",
                        ))
                    }
                }
            }
        } else if !os.boot.is_empty() {
            return Err(QemuError::invalid(
                "os/boot",
                "<os><boot dev> and per-device <boot order> cannot be combined",
            ));
        }
        for (index, disk) in domain.devices.disks.iter().enumerate() {
            if disk.boot_order.is_some() {
                self.disk_boot[index] = disk.boot_order;
            }
        }
        for (index, interface) in domain.devices.interfaces.iter().enumerate() {
            if interface.boot_order.is_some() {
                self.interface_boot[index] = interface.boot_order;
            }
        }

        let mut boot = "strict=on".to_string();
        if let Some(menu) = os.bootmenu {
            write!(boot, ",menu={}", on_off(menu.enable)).expect("String write");
            if let Some(timeout) = menu.timeout {
                write!(boot, ",splash-time={timeout}").expect("String write");
            }
        }
        if let Some(timeout) = os.bios_reboot_timeout {
            write!(boot, ",reboot-timeout={timeout}").expect("String write");
        }
        self.arg("-boot", boot);

        if let Some(kernel) = &os.kernel {
            self.arg("-kernel", kernel.clone());
        }
        if let Some(initrd) = &os.initrd {
            if os.kernel.is_none() {
                return Err(QemuError::invalid(
                    "os/initrd",
                    "an initrd needs a <kernel>",
                ));
            }
            self.arg("-initrd", initrd.clone());
        }
        if let Some(cmdline) = &os.cmdline {
            if os.kernel.is_none() {
                return Err(QemuError::invalid(
                    "os/cmdline",
                    "a kernel command line needs a <kernel>",
                ));
            }
            self.arg("-append", cmdline.clone());
        }
        Ok(())
    }

    // ----- character devices ------------------------------------------------------------------

    fn serials(&mut self) -> Result<(), QemuError> {
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

    fn console_chardev(&self, id: &str) -> String {
        format!(
            "socket,id={id},path={},server=on,wait=off,logfile={},logappend=on",
            escape_opt(&self.run.console_socket().to_string_lossy()),
            escape_opt(&self.run.console_log().to_string_lossy()),
        )
    }

    // ----- controllers and disks --------------------------------------------------------------

    fn controllers(&mut self) -> Result<(), QemuError> {
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

    fn has_controller(&self, kind: ControllerType, index: u32) -> bool {
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

    fn disk(&mut self, index: usize) -> Result<(), QemuError> {
        let disk: &Disk = &self.domain.devices.disks[index];
        let dev = &disk.target.dev;
        let element = format!("devices/disk[target@dev='{dev}']");
        if !is_qemu_identifier(dev) || !dev.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return Err(QemuError::invalid(
                format!("{element}/target@dev"),
                "target dev must be like vda, sda or hda",
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
                DiskType::File => "file",
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
    fn disk_placement(
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

    // ----- network ----------------------------------------------------------------------------

    fn interface(&mut self, index: usize) -> Result<(), QemuError> {
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

    fn inputs(&mut self) -> Result<(), QemuError> {
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

    fn graphics_and_video(&mut self) -> Result<(), QemuError> {
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

    fn vnc(&self, graphics: &Graphics) -> Result<String, QemuError> {
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

    fn audio(&mut self) {
        for audio in &self.domain.devices.audios {
            // Only type='none' exists in the model: a backend that discards sound.
            self.arg("-audiodev", format!("none,id=audio{}", audio.id));
        }
    }

    fn memballoon(&mut self) -> Result<(), QemuError> {
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

    fn check_current_memory(&self, have_balloon: bool) -> Result<(), QemuError> {
        let domain = self.domain;
        if domain.current_memory_kib < domain.memory_kib && !have_balloon {
            return Err(QemuError::unsupported(
                "currentMemory",
                "currentMemory below memory needs a virtio memballoon to take the difference back",
            ));
        }
        Ok(())
    }

    fn rngs(&mut self) -> Result<(), QemuError> {
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

    /// Queue a PCI device, placing it at its `<address type='pci'>` if it has one.
    fn add_pci_device(
        &mut self,
        mut device: Value,
        address: Option<&Address>,
        element: &str,
    ) -> Result<(), QemuError> {
        match address {
            None => self.devices.pci_auto.push(device),
            Some(Address::Pci(pci)) => {
                for (key, value) in pci_properties(pci, self.chipset, element)? {
                    device[key] = value;
                }
                self.devices.pci_fixed.push(device);
            }
            Some(_) => {
                return Err(QemuError::invalid(
                    format!("{element}/address"),
                    "this is a PCI device: it needs a PCI address",
                ))
            }
        }
        Ok(())
    }
}

// ----- mappings and small helpers ----------------------------------------------------------------

/// libvirt's default CPU model for x86 QEMU guests.
const DEFAULT_CPU_MODEL: &str = "qemu64";
/// libvirt's default NIC model for x86 QEMU guests.
const DEFAULT_NIC_MODEL: &str = "rtl8139";
/// Where `<hugepages/>` memory comes from: the hugetlbfs mount of the default page size.
pub(crate) const HUGEPAGES_MOUNT: &str = "/dev/hugepages";
const VNC_BASE_PORT: u16 = 5900;
const VNC_AUTOPORT_DISPLAYS: u16 = 99;

/// How a libvirt cache mode maps onto QEMU's three knobs: O_DIRECT on the host file, whether
/// guest flushes are honoured, and whether the emulated disk reports a volatile write cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CacheFlags {
    direct: bool,
    no_flush: bool,
    write_cache: bool,
}

impl CacheFlags {
    fn of(cache: Option<DiskCache>) -> Option<CacheFlags> {
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

fn pci_properties(
    pci: &PciAddress,
    chipset: Chipset,
    element: &str,
) -> Result<Vec<(&'static str, Value)>, QemuError> {
    if pci.domain != 0 || pci.bus != 0 {
        return Err(QemuError::unsupported(
            format!("{element}/address"),
            "only PCI domain 0 bus 0 exists (no bridges)",
        ));
    }
    if pci.slot > 31 || pci.function > 7 {
        return Err(QemuError::invalid(
            format!("{element}/address"),
            "PCI slot is 0-31 and function 0-7",
        ));
    }
    let addr = if pci.function == 0 {
        format!("{:#x}", pci.slot)
    } else {
        format!("{:#x}.{:#x}", pci.slot, pci.function)
    };
    let mut props = vec![("bus", json!(chipset.root_bus())), ("addr", json!(addr))];
    if pci.multifunction == Some(true) {
        props.push(("multifunction", json!(true)));
    }
    Ok(props)
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

fn kib_to_mib_rounded_up(kib: u64) -> u64 {
    kib.div_ceil(1024)
}

fn on_off(value: bool) -> &'static str {
    if value {
        "on"
    } else {
        "off"
    }
}

/// QemuOpts values end at a comma; a literal comma is written twice.
fn escape_opt(value: &str) -> String {
    value.replace(',', ",,")
}

fn is_qemu_identifier(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn unsupported_action(element: &str, action: LifecycleAction) -> QemuError {
    QemuError::unsupported(
        element,
        format!("action '{}' is not supported", action_name(action)),
    )
}

fn action_name(action: LifecycleAction) -> &'static str {
    match action {
        LifecycleAction::Destroy => "destroy",
        LifecycleAction::Restart => "restart",
        LifecycleAction::Preserve => "preserve",
        LifecycleAction::RenameRestart => "rename-restart",
        LifecycleAction::CoredumpDestroy => "coredump-destroy",
        LifecycleAction::CoredumpRestart => "coredump-restart",
    }
}

fn timer_name(name: TimerName) -> &'static str {
    match name {
        TimerName::Platform => "platform",
        TimerName::Pit => "pit",
        TimerName::Rtc => "rtc",
        TimerName::Hpet => "hpet",
        TimerName::Tsc => "tsc",
        TimerName::Kvmclock => "kvmclock",
        TimerName::HypervClock => "hypervclock",
    }
}

fn controller_type_name(kind: ControllerType) -> &'static str {
    match kind {
        ControllerType::Ide => "ide",
        ControllerType::Fdc => "fdc",
        ControllerType::Scsi => "scsi",
        ControllerType::Sata => "sata",
        ControllerType::Usb => "usb",
        ControllerType::Pci => "pci",
        ControllerType::VirtioSerial => "virtio-serial",
    }
}
