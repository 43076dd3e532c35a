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
//! Accepted without a QEMU option, on purpose: `<cpu match>`, `<model fallback>` and
//! `check='none'|'partial'` (libvirt-side checks of the host CPU; `check='full'` becomes
//! `enforce=on`), `<title>`/`<description>` (metadata), absent `<apic/>`/`<pae/>` (always present
//! on x86_64), `<vcpu cpuset>` (applied as QEMU's CPU affinity by `launch`).
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
    Address, BootDevice, ClockOffset, ControllerType, Cpu, CpuCheck, CpuMode, DiskDevice, Domain,
    DomainType, FeaturePolicy, LifecycleAction, PciAddress, TickPolicy, TimerName, VcpuPlacement,
};
use serde_json::{json, Value};

use crate::{Accel, QemuError, RunPaths};

mod devices;
mod storage;

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
        if machine == "pc" || machine.starts_with("pc-i440fx-") {
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
            line: oxvirt_domain::SourceLine::NONE,
            vendor_line: oxvirt_domain::SourceLine::NONE,
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
