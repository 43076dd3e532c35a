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
//!   `console.log`), `-pidfile`, `-nodefaults -no-user-config`, `-display none` unless VNC or SPICE.
//! - No `-no-shutdown` (unless `on_poweroff='preserve'`): a guest poweroff emits SHUTDOWN and
//!   QEMU exits, so the daemon sees both the event and the end of the process.
//! - No `-S`: the guest starts running at once; settings that only QMP can make (balloon target,
//!   VNC or SPICE password, link state) are applied by [`crate::launch`] right after start. A
//!   start that loads a saved machine state adds [`INCOMING_ARGS`] instead (a launch option,
//!   not part of the definition).

use std::fmt::Write as _;

use oxvirt_domain::{
    Address, BootDevice, BootMenu, Clock, ClockOffset, Controller, ControllerType, Cpu, CpuCheck,
    CpuFeature, CpuMode, CpuModel, CpuTopology, CpuTune, DiskDevice, DiskType, Domain, DomainType,
    FeaturePolicy, Features, InterfaceType, LifecycleAction, MaxMemory, MemTune, MemoryBacking,
    NumaCell, NumaTune, Os, PciAddress, SourceLine, TickPolicy, Timer, TimerName, Vcpu,
    VcpuPlacement,
};
use serde_json::{json, Value};

use crate::{Accel, QemuError, RunPaths};

mod devices;
mod media;
mod memory;
mod sound;
mod spice;
mod storage;

pub use devices::{
    char_files, char_sockets, nic_driver, nic_fds, NicFds, NicIds, PassedSocket, BALLOON_QOM_PATH,
};
pub use media::{medium_blockdevs, medium_node_names};
pub use spice::assign_spice_ports;
pub use storage::{disk_node, hotplug_disk, nbd_sockets, DiskPlug};

/// The full translation: QEMU's arguments and what the operator should know about them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuCommandLine {
    /// Arguments, without argv\[0\].
    pub args: Vec<String>,
    /// Places where the VM differs from what the definition asked, in words (e.g. host CPU
    /// passthrough under TCG).
    pub warnings: Vec<String>,
}

/// Added to the arguments of a start that loads a saved machine state rather than booting
/// ([`crate::LaunchOptions::incoming`]): QEMU waits for `migrate-incoming`, and the loaded guest
/// stays paused (`-S`) until the daemon resumes it.
pub(crate) const INCOMING_ARGS: [&str; 3] = ["-S", "-incoming", "defer"];

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
    Builder::build(domain, run, accel)
}

/// Where [`check`] pretends the VM's files are: short enough for any socket path.
const CHECK_RUN_DIR: &str = "/run/oxvirt/check";
/// The TAP device [`check`] pretends the network layer made for an interface.
const CHECK_TAP: &str = "oxvirt-check";
/// The UEFI firmware and NVRAM [`check`] pretends a start resolves.
const CHECK_FIRMWARE: &str = "/run/oxvirt/check/firmware.fd";
const CHECK_NVRAM: &str = "/run/oxvirt/check/nvram.fd";
/// The file [`check`] pretends a storage volume resolves to.
const CHECK_VOLUME_FILE: &str = "/run/oxvirt/check/volume";

/// The define-time check: whether this engine can run `domain`, answered by a dry run of the
/// command-line builder a start uses ([`build_command_line`]), so everything a start would
/// refuse in the definition is refused here, with the element and its line.
///
/// What only a start provides is filled in with placeholders: the run directory, a TAP device
/// for each network or bridge interface (the daemon's network layer creates it at start), the
/// file of each storage volume (the daemon resolves it at start), and the accelerator (hardware
/// KVM for `type='kvm'`, which the host may lack: then a start runs under TCG with a warning).
///
/// What depends on the host stays a start-time check ([`crate::launch`] and the daemon): that
/// the emulator, kernel, initrd, disk images and RNG source exist, that `/dev/hugepages` is
/// mounted for `<hugepages/>`, that `/dev/vhost-net` exists for `<driver name='vhost'>`, that
/// the run directory's socket paths fit, the backing chains read from qcow2 headers, and the
/// volume's real format.
pub fn check(domain: &Domain) -> Result<(), QemuError> {
    let mut launched = domain.clone();
    for disk in &mut launched.devices.disks {
        if disk.disk_type == DiskType::Volume && disk.volume.take().is_some() {
            disk.disk_type = DiskType::File;
            disk.source = Some(CHECK_VOLUME_FILE.to_string());
        }
    }
    for interface in &mut launched.devices.interfaces {
        // (An unmanaged ethernet TAP is the host's own: it must be named.)
        let needs_tap = match interface.interface_type {
            InterfaceType::Network | InterfaceType::Bridge => true,
            InterfaceType::Ethernet => interface.target_managed != Some(false),
            // (The macvtap device the daemon makes at start.)
            InterfaceType::Direct => true,
            InterfaceType::User => false,
        };
        if needs_tap && interface.target_dev.is_none() {
            interface.target_dev = Some(CHECK_TAP.to_string());
        }
    }
    // A start resolves UEFI firmware from the host's descriptors (firmware::resolve_uefi);
    // the check pretends it found one, with the Secure Boot the definition asks for.
    let os = &mut launched.os;
    if os.firmware == Some(oxvirt_domain::Firmware::Efi)
        && os.loader.as_ref().is_none_or(|l| l.path.is_none())
    {
        let stated = os.loader.take();
        os.loader = Some(oxvirt_domain::Loader {
            path: Some(CHECK_FIRMWARE.to_string()),
            readonly: Some(true),
            secure: stated.as_ref().and_then(|l| l.secure),
            loader_type: Some(oxvirt_domain::LoaderType::Pflash),
            line: stated.map_or(SourceLine::NONE, |l| l.line),
        });
    }
    let pflash = os
        .loader
        .as_ref()
        .is_some_and(|l| l.loader_type == Some(oxvirt_domain::LoaderType::Pflash));
    if pflash {
        let nvram = os.nvram.get_or_insert(oxvirt_domain::Nvram {
            path: None,
            template: None,
            line: SourceLine::NONE,
        });
        nvram.path.get_or_insert_with(|| CHECK_NVRAM.to_string());
    }
    // A start picks free SPICE ports (assign_spice_ports); the check pretends it did.
    spice::placeholder_spice_ports(&mut launched);
    let run = RunPaths::new(CHECK_RUN_DIR);
    Builder::build(&launched, &run, Accel::Kvm).map(|_| ())
}

/// The QOM id of IOThread `id` (libvirt's name: `iothreadN`), on the command line, in
/// `query-iothreads` and for `object-add`/`object-del`.
pub fn iothread_qom_id(id: u32) -> String {
    format!("iothread{id}")
}

/// IOThread `id`'s object, as `-object` takes it at start and `object-add` while it runs.
pub fn iothread_object(id: u32) -> serde_json::Value {
    json!({"qom-type": "iothread", "id": iothread_qom_id(id)})
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

/// One translation. Every model struct it reads is destructured without `..` (in `build` or
/// the method that handles it), so a field added to the domain model does not compile until
/// this engine has decided what to do with it: map it, refuse it, or ignore it saying why.
/// (A `line: _` is the line of an element that method never refuses.)
struct Builder<'a> {
    run: &'a RunPaths,
    accel: Accel,
    chipset: Chipset,
    args: Vec<String>,
    warnings: Vec<String>,
    devices: DeviceGroups,
    /// The controllers, for the devices that plug into them.
    controllers: &'a [Controller],
    /// `<iothreads>`/`<iothreadids>`: IOThread `iothreadN` exists for each of these ids.
    iothreads: &'a [u32],
    /// `bootindex` per disk / per interface, from `<os><boot dev>` or `<boot order>`.
    disk_boot: Vec<Option<u32>>,
    interface_boot: Vec<Option<u32>>,
    /// Guest NUMA cells (`<cpu><numa>`): guest RAM is then one backend per cell.
    numa_cells: usize,
    numatune: Option<&'a NumaTune>,
    /// `-machine` options the firmware needs (`smm=on`, `pflash0=`, `pflash1=`), added by
    /// machine_and_memory() in libvirt's order.
    machine_firmware: MachineFirmware,
}

/// What the firmware asks of the machine.
#[derive(Default)]
struct MachineFirmware {
    smm: bool,
    pflash0: bool,
    pflash1: bool,
}

impl<'a> Builder<'a> {
    fn build(
        domain: &'a Domain,
        run: &'a RunPaths,
        available: Accel,
    ) -> Result<QemuCommandLine, QemuError> {
        let Domain {
            // The accelerator (below) follows it.
            domain_type,
            name,
            uuid,
            // Metadata, for people.
            title: _,
            description: _,
            // Other applications' data: never interpreted (libvirt's rule), not an argument.
            metadata: _,
            memory_kib,
            current_memory_kib,
            max_memory,
            // The guest's blkio cgroup, set by oxvirtd at start (docs/cgroups.md): no argument.
            blkiotune: _,
            memtune,
            memory_backing,
            vcpu,
            iothreads,
            cputune,
            numatune,
            sysinfo,
            os,
            features,
            cpu,
            clock,
            on_poweroff,
            on_reboot,
            on_crash,
            pm,
            devices,
            // The daemon picked this engine because of it.
            engine: _,
            // Where <domain> and <memory> are: nothing about them is refused.
            line: _,
            memory_line: _,
            current_memory_line,
            // Any number of IOThreads, with any ids, is fine.
            iothreads_line: _,
            iothreadids_line: _,
            on_poweroff_line,
            on_reboot_line,
            on_crash_line,
        } = domain;
        let Os {
            firmware,
            arch,
            machine,
            loader,
            nvram,
            kernel,
            initrd,
            cmdline,
            boot,
            bootmenu,
            bios_reboot_timeout,
            smbios,
            smbios_line,
            line: os_line,
            type_line,
            // Any kernel path goes; whether the file exists is launch's question.
            kernel_line: _,
            initrd_line,
            cmdline_line,
            boot_lines,
        } = os;
        if arch != "x86_64" {
            return Err(QemuError::unsupported(
                "os/type@arch",
                *type_line,
                format!("arch '{arch}': this engine runs x86_64 guests only"),
            ));
        }
        let chipset = Chipset::of(machine).ok_or_else(|| {
            QemuError::unsupported(
                "os/type@machine",
                *type_line,
                format!("machine '{machine}': only pc (i440fx) and q35 are supported"),
            )
        })?;
        let accel = effective_accel(domain, available);
        let mut warnings = Vec::new();
        if *domain_type == DomainType::Kvm && accel == Accel::Tcg {
            warnings.push(
                "domain type is 'kvm' but hardware KVM is not available: running under TCG (much slower)"
                    .to_string(),
            );
        }
        let mut builder = Builder {
            run,
            accel,
            chipset,
            args: Vec::new(),
            warnings,
            devices: DeviceGroups::default(),
            controllers: &devices.controllers,
            iothreads: &iothreads.ids,
            disk_boot: vec![None; devices.disks.len()],
            interface_boot: vec![None; devices.interfaces.len()],
            numa_cells: cpu.as_ref().map_or(0, |c| c.numa.len()),
            numatune: numatune.as_ref(),
            machine_firmware: MachineFirmware::default(),
        };
        let b = &mut builder;
        b.arg(
            "-name",
            format!("guest={},debug-threads=on", escape_opt(name)),
        );
        b.arg("-uuid", uuid.to_string());
        b.smbios(*smbios, *smbios_line, sysinfo.as_ref())?;
        b.flag("-no-user-config");
        b.flag("-nodefaults");
        b.firmware(*firmware, *os_line, loader.as_ref(), nvram.as_ref())?;
        b.vcpu_placement(vcpu)?;
        b.cputune(cputune.as_ref())?;
        b.memtune(memtune.as_ref())?;
        b.machine_and_memory(
            machine,
            features,
            clock,
            (*memory_kib, max_memory.as_ref()),
            memory_backing.as_ref(),
        )?;
        b.numa(
            cpu.as_ref().map_or(&[][..], |c| &c.numa[..]),
            numatune.as_ref(),
            memory_backing.as_ref(),
        )?;
        b.arg("-accel", accel.qemu_name());
        b.cpu(cpu.as_ref())?;
        b.smp(vcpu, cpu.as_ref().and_then(|c| c.topology.as_ref()))?;
        b.iothreads();
        b.monitor_and_pidfile();
        b.clock(clock)?;
        b.lifecycle(
            (*on_poweroff, *on_poweroff_line),
            (*on_reboot, *on_reboot_line),
            (*on_crash, *on_crash_line),
        )?;
        b.pm(pm.as_ref());
        b.boot_order(boot, boot_lines, devices)?;
        b.boot_options(*bootmenu, *bios_reboot_timeout);
        b.kernel(
            kernel.as_deref(),
            (initrd.as_deref(), *initrd_line),
            (cmdline.as_deref(), *cmdline_line),
        )?;
        b.devices(
            devices,
            (*memory_kib, *current_memory_kib, *current_memory_line),
        )?;
        Ok(builder.finish())
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

    // ----- machine, memory, CPU ---------------------------------------------------------------

    /// `<os firmware>`, `<loader>`, `<nvram>`. `firmware='efi'` must have been resolved to a
    /// loader and an NVRAM before a start (`crate::firmware::resolve_uefi`; [`check`] uses
    /// placeholders). A pflash loader becomes libvirt's read-only `pflash0` node and the NVRAM
    /// the writable `pflash1`; a ROM loader is `-bios`. Secure Boot needs SMM (q35) and a
    /// secure flash.
    fn firmware(
        &mut self,
        firmware: Option<oxvirt_domain::Firmware>,
        os_line: SourceLine,
        loader: Option<&oxvirt_domain::Loader>,
        nvram: Option<&oxvirt_domain::Nvram>,
    ) -> Result<(), QemuError> {
        let loader_path = loader.and_then(|l| l.path.as_deref());
        let Some(loader_path) = loader_path else {
            if firmware == Some(oxvirt_domain::Firmware::Efi) {
                return Err(QemuError::invalid(
                    "os/@firmware",
                    os_line,
                    "the UEFI firmware was not resolved before the start",
                ));
            }
            if let Some(nvram) = nvram {
                return Err(QemuError::invalid(
                    "os/nvram",
                    nvram.line,
                    "an NVRAM needs a pflash <loader>",
                ));
            }
            // The built-in BIOS (SeaBIOS).
            return Ok(());
        };
        let Some(oxvirt_domain::Loader {
            path: _,
            readonly,
            secure,
            loader_type,
            line,
        }) = loader
        else {
            return Ok(());
        };
        if *loader_type != Some(oxvirt_domain::LoaderType::Pflash) {
            if secure == &Some(true) || nvram.is_some() {
                return Err(QemuError::invalid(
                    "os/loader",
                    *line,
                    "Secure Boot and an NVRAM need a pflash loader (type='pflash')",
                ));
            }
            self.arg("-bios", loader_path);
            return Ok(());
        }
        if *secure == Some(true) {
            if self.chipset != Chipset::Q35 {
                return Err(QemuError::invalid(
                    "os/loader@secure",
                    *line,
                    "Secure Boot needs SMM, which only q35 machines have",
                ));
            }
            self.machine_firmware.smm = true;
        }
        let read_only = *readonly != Some(false);
        self.pflash(0, loader_path, read_only);
        self.machine_firmware.pflash0 = true;
        match nvram.and_then(|n| n.path.as_deref()) {
            Some(path) => {
                self.pflash(1, path, false);
                self.machine_firmware.pflash1 = true;
            }
            None if read_only => {
                return Err(QemuError::invalid(
                    "os/nvram",
                    *line,
                    "a read-only pflash loader needs an NVRAM for its variables",
                ))
            }
            None => {}
        }
        if *secure == Some(true) {
            self.arg("-global", "driver=cfi.pflash01,property=secure,value=on");
        }
        Ok(())
    }

    /// A pflash unit as libvirt writes it: a file node and a raw format node.
    fn pflash(&mut self, unit: u8, path: &str, read_only: bool) {
        let storage = format!("libvirt-pflash{unit}-storage");
        self.arg(
            "-blockdev",
            json!({"driver": "file", "filename": path, "node-name": storage,
                   "auto-read-only": true, "discard": "unmap"})
            .to_string(),
        );
        self.arg(
            "-blockdev",
            json!({"node-name": format!("libvirt-pflash{unit}-format"), "read-only": read_only,
                   "driver": "raw", "file": storage})
            .to_string(),
        );
    }

    fn vcpu_placement(&mut self, vcpu: &Vcpu) -> Result<(), QemuError> {
        let Vcpu {
            placement,
            // -smp (below).
            max: _,
            current: _,
            cpuset,
            slots,
            line,
        } = vcpu;
        // QEMU boots the first vCPUs (-smp); libvirt would hot-plug the others at start.
        // Enabled hotpluggable ones boot with them (only vCPUs hot-plugged while the guest
        // runs can be unplugged).
        if slots
            .iter()
            .any(|slot| slot.enabled && slot.id >= vcpu.online())
        {
            return Err(QemuError::unsupported(
                "vcpus/vcpu@enabled",
                *line,
                "the enabled vCPUs must be the first ones (vCPUs hot-plugged at start are not supported)",
            ));
        }
        if *placement == VcpuPlacement::Auto {
            return Err(QemuError::unsupported(
                "vcpu@placement",
                *line,
                "placement='auto' needs numad, which this engine does not use",
            ));
        }
        // The cpuset becomes QEMU's CPU affinity at launch, in a fixed-size mask.
        if let Some(cpu) = cpuset
            .as_ref()
            .and_then(|set| set.iter().find(|&cpu| cpu >= MAX_AFFINITY_CPUS))
        {
            return Err(QemuError::invalid(
                "vcpu@cpuset",
                *line,
                format!("host CPU {cpu} is beyond {MAX_AFFINITY_CPUS}"),
            ));
        }
        Ok(())
    }

    fn cputune(&mut self, cputune: Option<&CpuTune>) -> Result<(), QemuError> {
        let Some(CpuTune {
            // Applied by oxvirtd at start, no command-line option: pins to QEMU's threads
            // (IOThreads' from query-iothreads), shares, periods and quotas to the guest's
            // cgroups.
            shares: _,
            period: _,
            quota: _,
            emulator_period: _,
            emulator_quota: _,
            vcpupins: _,
            emulatorpin: _,
            iothreadpins: _,
            line: _,
        }) = cputune
        else {
            return Ok(());
        };
        Ok(())
    }

    /// `<memtune>`'s limits are the guest's memory cgroup, set by oxvirtd at start;
    /// `min_guarantee` has no cgroup counterpart (libvirt's QEMU driver refuses it too).
    fn memtune(&mut self, memtune: Option<&MemTune>) -> Result<(), QemuError> {
        match memtune {
            Some(tune) if tune.min_guarantee_kib.is_some() => Err(QemuError::unsupported(
                "memtune/min_guarantee",
                tune.line,
                "a guaranteed minimum has no cgroup setting for QEMU (hard_limit, soft_limit and swap_hard_limit work)",
            )),
            _ => Ok(()),
        }
    }

    fn machine_and_memory(
        &mut self,
        machine_type: &str,
        features: &Features,
        clock: &Clock,
        (memory_kib, max_memory): (u64, Option<&MaxMemory>),
        backing: Option<&MemoryBacking>,
    ) -> Result<(), QemuError> {
        let Features {
            acpi,
            // Always there on x86_64, whatever the definition says.
            apic: _,
            pae: _,
            vmport,
            vmport_line: _,
            line: _,
        } = features;
        let mut machine = machine_type.to_string();
        machine.push_str(",usb=off");
        // libvirt puts vmport between usb and dump-guest-core.
        if let Some(vmport) = vmport {
            machine.push_str(if *vmport { ",vmport=on" } else { ",vmport=off" });
        }
        if self.machine_firmware.smm {
            machine.push_str(",smm=on");
        }
        machine.push_str(",dump-guest-core=off");
        if !acpi {
            // libvirt does the same: no <acpi/> means no ACPI tables. Note that guests then
            // cannot be powered down with the ACPI button, and Linux needs ACPI for SMP here.
            machine.push_str(",acpi=off");
        }
        // <timer name='hpet' present='no'/> is a machine property (the timers are in clock()).
        if clock
            .timers
            .iter()
            .any(|t| t.name == TimerName::Hpet && t.present == Some(false))
        {
            machine.push_str(",hpet=off");
        }
        // With guest NUMA cells, each cell has a backend of its own (numa()), and no pc.ram.
        let numa = self.numa_cells > 0;
        let nosharepages = backing.is_some_and(|b| b.nosharepages);
        let locked = backing.is_some_and(|b| b.locked);
        if nosharepages {
            machine.push_str(",mem-merge=off");
        }

        let memory_mib = kib_to_mib_rounded_up(memory_kib);
        // pc.ram's size in bytes: a <memory> whose bytes do not fit in 64 bits is refused here
        // rather than overflowing (setmaxmem stores a size without the XML parser's checks).
        let ram_bytes = memory_mib
            .checked_mul(1024 * 1024)
            .ok_or_else(|| QemuError::Invalid {
                element: "memory".to_string(),
                line: None,
                reason: format!("{memory_kib} KiB is more memory than a 64-bit guest can address"),
            })?;
        // The cells' sizes must add up to it exactly: in KiB then, as libvirt writes it.
        let mut memory = if numa {
            format!("size={memory_kib}k")
        } else {
            format!("size={memory_mib}M")
        };
        if let Some(MaxMemory {
            kib,
            slots,
            line: _,
        }) = max_memory
        {
            write!(
                memory,
                ",slots={slots},maxmem={}M",
                kib_to_mib_rounded_up(*kib)
            )
            .expect("writing to a String cannot fail");
        }

        let mut backend = if numa {
            None
        } else {
            memory::backend(
                self.run,
                backing,
                ("pc.ram", ram_bytes),
                memory::CellMemory::default(),
                false,
            )?
        };
        // <numatune><memory> without guest cells binds all of guest RAM (QEMU needs a
        // backend object for that).
        if !numa {
            if let Some(binding) = memory::binding(self.numatune, None)? {
                let backend = backend.get_or_insert(
                    memory::backend(
                        self.run,
                        backing,
                        ("pc.ram", ram_bytes),
                        memory::CellMemory::default(),
                        true,
                    )?
                    .expect("a backend is always made when asked to"),
                );
                memory::bind(backend, Some(binding));
            }
        }
        if backend.is_some() {
            machine.push_str(",memory-backend=pc.ram");
        }
        if self.machine_firmware.pflash0 {
            machine.push_str(",pflash0=libvirt-pflash0-format");
        }
        if self.machine_firmware.pflash1 {
            machine.push_str(",pflash1=libvirt-pflash1-format");
        }
        self.arg("-machine", machine);
        self.arg("-m", memory);
        if let Some(backend) = backend {
            self.arg("-object", backend.to_string());
        }
        if locked {
            // <locked/>: QEMU mlocks guest memory (the host must allow it: RLIMIT_MEMLOCK).
            self.arg("-overcommit", "mem-lock=on");
        }
        Ok(())
    }

    /// One memory backend and one `-numa node` per guest NUMA cell, as libvirt: the backend
    /// follows `<memoryBacking>` with the cell's own memAccess/discard, bound to the host
    /// nodes of the cell's `<memnode>` (or of `<numatune><memory>`).
    fn numa(
        &mut self,
        cells: &[NumaCell],
        numatune: Option<&NumaTune>,
        backing: Option<&MemoryBacking>,
    ) -> Result<(), QemuError> {
        for (id, cell) in cells.iter().enumerate() {
            let NumaCell {
                cpus,
                memory_kib,
                mem_access,
                discard,
                // Nothing about a cell itself is refused.
                line: _,
            } = cell;
            let cell_memory = memory::CellMemory {
                access: *mem_access,
                discard: *discard,
            };
            let mut backend = memory::backend(
                self.run,
                backing,
                (&format!("ram-node{id}"), memory_kib.saturating_mul(1024)),
                cell_memory,
                true,
            )?
            .expect("a backend is always made when asked to");
            memory::bind(&mut backend, memory::binding(numatune, Some(id))?);
            self.arg("-object", backend.to_string());
            self.arg("-numa", memory::numa_node(id, cpus.as_ref()));
        }
        Ok(())
    }

    fn cpu(&mut self, cpu: Option<&Cpu>) -> Result<(), QemuError> {
        let Some(Cpu {
            mode,
            // libvirt-side comparisons with the host CPU; check='full' is below.
            match_: _,
            check,
            migratable,
            model,
            vendor,
            // -smp (below).
            topology: _,
            features,
            // -numa (numa()).
            numa: _,
            line: _,
            vendor_line,
        }) = cpu
        else {
            self.arg("-cpu", DEFAULT_CPU_MODEL);
            return Ok(());
        };
        let mut value = match mode {
            CpuMode::Custom => match model {
                Some(CpuModel {
                    name,
                    // libvirt's choice between the model and the host's closest match; QEMU
                    // has the model or refuses to start.
                    fallback: _,
                    line,
                }) => {
                    if !is_qemu_identifier(name) {
                        return Err(QemuError::invalid(
                            "cpu/model",
                            *line,
                            "model name must be letters, digits, '-', '_' or '.'",
                        ));
                    }
                    name.clone()
                }
                None => DEFAULT_CPU_MODEL.to_string(),
            },
            CpuMode::Maximum => "max".to_string(),
            CpuMode::HostModel | CpuMode::HostPassthrough => match self.accel {
                Accel::Kvm => "host".to_string(),
                Accel::Tcg => {
                    let mode = if *mode == CpuMode::HostModel {
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
        if *mode != CpuMode::Custom {
            if let Some(model) = model.as_ref().filter(|m| !is_qemu_identifier(&m.name)) {
                return Err(QemuError::invalid(
                    "cpu/model",
                    model.line,
                    "model name must be letters, digits, '-', '_' or '.'",
                ));
            }
        }
        if let Some(migratable) = migratable {
            if *mode == CpuMode::HostPassthrough && self.accel == Accel::Kvm {
                write!(value, ",migratable={}", on_off(*migratable)).expect("String write");
            }
        }
        if let Some(vendor) = vendor {
            if vendor.len() != 12 || !vendor.is_ascii() || vendor.contains(',') {
                return Err(QemuError::invalid(
                    "cpu/vendor",
                    *vendor_line,
                    "a CPU vendor id is exactly 12 ASCII characters",
                ));
            }
            write!(value, ",vendor={vendor}").expect("String write");
        }
        for feature in features {
            let CpuFeature { policy, name, line } = feature;
            if !is_qemu_identifier(name) {
                return Err(QemuError::invalid(
                    "cpu/feature@name",
                    *line,
                    format!("'{name}' is not a CPU feature name"),
                ));
            }
            // libvirt spells features with '_' where QEMU's canonical names use '-'.
            let name = name.replace('_', "-");
            let on = match policy {
                FeaturePolicy::Force | FeaturePolicy::Require | FeaturePolicy::Optional => true,
                FeaturePolicy::Disable | FeaturePolicy::Forbid => false,
            };
            write!(value, ",{name}={}", on_off(on)).expect("String write");
        }
        if *check == Some(CpuCheck::Full) {
            // QEMU refuses to start rather than silently drop a feature the host lacks.
            value.push_str(",enforce=on");
        }
        self.arg("-cpu", value);
        Ok(())
    }

    fn smp(&mut self, vcpu: &Vcpu, topology: Option<&CpuTopology>) -> Result<(), QemuError> {
        let online = vcpu.online();
        let mut smp = online.to_string();
        if online != vcpu.max {
            write!(smp, ",maxcpus={}", vcpu.max).expect("String write");
        }
        match topology {
            Some(topology) => {
                let CpuTopology {
                    sockets,
                    dies,
                    clusters,
                    cores,
                    threads,
                    line,
                } = *topology;
                if topology.total() != Some(vcpu.max) {
                    return Err(QemuError::invalid(
                        "cpu/topology",
                        line,
                        format!(
                            "sockets*dies*clusters*cores*threads must equal the vcpu count {}",
                            vcpu.max
                        ),
                    ));
                }
                write!(smp, ",sockets={sockets},dies={dies}").expect("String write");
                if clusters != 1 {
                    return Err(QemuError::unsupported(
                        "cpu/topology@clusters",
                        line,
                        "x86 machines have no CPU clusters in QEMU 7.2",
                    ));
                }
                write!(smp, ",cores={cores},threads={threads}").expect("String write");
            }
            None => write!(smp, ",sockets={},cores=1,threads=1", vcpu.max).expect("String write"),
        }
        self.arg("-smp", smp);
        Ok(())
    }

    /// One `iothread` object per IOThread, in the definition's order (libvirt's).
    fn iothreads(&mut self) {
        for id in self.iothreads {
            self.arg("-object", iothread_object(*id).to_string());
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

    fn clock(&mut self, clock: &Clock) -> Result<(), QemuError> {
        let Clock {
            offset,
            timers,
            line: _,
        } = clock;
        let mut rtc = match offset {
            ClockOffset::Utc => "base=utc".to_string(),
            ClockOffset::Localtime => "base=localtime".to_string(),
        };
        for timer in timers {
            let Timer {
                name,
                present,
                tickpolicy,
                line,
            } = timer;
            let element = format!("clock/timer[@name='{}']", name.as_str());
            match (name, present, tickpolicy) {
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
                    if self.accel == Accel::Tcg && *present {
                        return Err(QemuError::unsupported(
                            element,
                            *line,
                            "kvmclock needs KVM",
                        ));
                    }
                    if self.accel == Accel::Kvm && !present {
                        // Appended to -cpu, which was written just before.
                        self.append_to_cpu(",kvmclock=off");
                    }
                }
                _ => {
                    return Err(QemuError::unsupported(
                        element,
                        *line,
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

    fn lifecycle(
        &mut self,
        (on_poweroff, poweroff_line): (LifecycleAction, SourceLine),
        (on_reboot, reboot_line): (LifecycleAction, SourceLine),
        (on_crash, crash_line): (LifecycleAction, SourceLine),
    ) -> Result<(), QemuError> {
        match on_poweroff {
            // QEMU exits after the guest powers off; for 'restart' the daemon starts it again.
            LifecycleAction::Destroy | LifecycleAction::Restart => {}
            LifecycleAction::Preserve => self.flag("-no-shutdown"),
            other => return Err(unsupported_action("on_poweroff", poweroff_line, other)),
        }
        match on_reboot {
            LifecycleAction::Restart => {}
            LifecycleAction::Destroy => self.flag("-no-reboot"),
            other => return Err(unsupported_action("on_reboot", reboot_line, other)),
        }
        // A pvpanic device lets the guest report a panic (GUEST_PANICKED); without one QEMU
        // could not honour on_crash at all. 'restart' pauses the VM so the daemon can reset it
        // on the GuestPanicked event.
        let panic = match on_crash {
            LifecycleAction::Destroy => "shutdown",
            LifecycleAction::Preserve | LifecycleAction::Restart => "pause",
            other => return Err(unsupported_action("on_crash", crash_line, other)),
        };
        self.arg("-action", format!("panic={panic}"));
        self.devices
            .on_buses
            .push(json!({"driver": "pvpanic", "id": "panic0"}));
        Ok(())
    }

    /// `bootindex` of each disk and interface, from `<os><boot dev>` or `<boot order>`.
    fn boot_order(
        &mut self,
        boot: &[BootDevice],
        boot_lines: &oxvirt_domain::SourceLines,
        devices: &oxvirt_domain::Devices,
    ) -> Result<(), QemuError> {
        let per_device = devices.disks.iter().any(|d| d.boot_order.is_some())
            || devices.interfaces.iter().any(|i| i.boot_order.is_some())
            || devices.hostdevs.iter().any(|h| h.boot_order.is_some());
        if !per_device {
            // <os><boot dev=...> in order becomes bootindex 1, 2, ... on the first device of
            // each kind, as libvirt does.
            for (position, device) in boot.iter().enumerate() {
                let bootindex = position as u32 + 1;
                match device {
                    BootDevice::Hd => {
                        let first = devices
                            .disks
                            .iter()
                            .position(|d| d.device == DiskDevice::Disk);
                        if let Some(index) = first {
                            self.disk_boot[index] = Some(bootindex);
                        }
                    }
                    BootDevice::Cdrom => {
                        let first = devices
                            .disks
                            .iter()
                            .position(|d| d.device == DiskDevice::Cdrom);
                        if let Some(index) = first {
                            self.disk_boot[index] = Some(bootindex);
                        }
                    }
                    BootDevice::Network => {
                        if !devices.interfaces.is_empty() {
                            self.interface_boot[0] = Some(bootindex);
                        }
                    }
                    BootDevice::Fd => {
                        return Err(QemuError::unsupported(
                            "os/boot@dev",
                            boot_lines.get(position),
                            "floppy boot: floppies are not supported",
                        ))
                    }
                }
            }
        } else if !boot.is_empty() {
            return Err(QemuError::invalid(
                "os/boot",
                boot_lines.get(0),
                "<os><boot dev> and per-device <boot order> cannot be combined",
            ));
        }
        for (index, disk) in devices.disks.iter().enumerate() {
            if disk.boot_order.is_some() {
                self.disk_boot[index] = disk.boot_order;
            }
        }
        for (index, interface) in devices.interfaces.iter().enumerate() {
            if interface.boot_order.is_some() {
                self.interface_boot[index] = interface.boot_order;
            }
        }
        Ok(())
    }

    /// `<os><smbios mode='sysinfo'>`: the `<sysinfo>` system strings as SMBIOS table 1, as
    /// libvirt passes them (`-smbios type=1,serial=...`). QEMU's own strings otherwise.
    fn smbios(
        &mut self,
        mode: Option<oxvirt_domain::SmbiosMode>,
        line: SourceLine,
        sysinfo: Option<&oxvirt_domain::Sysinfo>,
    ) -> Result<(), QemuError> {
        match mode {
            None | Some(oxvirt_domain::SmbiosMode::Emulate) => Ok(()),
            Some(oxvirt_domain::SmbiosMode::Host) => Err(QemuError::unsupported(
                "os/smbios",
                line,
                "mode 'host' (the host's SMBIOS tables) is not supported; use 'sysinfo' or 'emulate'",
            )),
            Some(oxvirt_domain::SmbiosMode::Sysinfo) => {
                let Some(sysinfo) = sysinfo else {
                    return Err(QemuError::unsupported(
                        "os/smbios",
                        line,
                        "mode 'sysinfo' needs a <sysinfo type='smbios'> element",
                    ));
                };
                if !sysinfo.system.is_empty() {
                    let mut table = "type=1".to_string();
                    for (name, value) in &sysinfo.system {
                        write!(table, ",{name}={}", escape_opt(value)).expect("String write");
                    }
                    self.arg("-smbios", table);
                }
                Ok(())
            }
        }
    }

    fn boot_options(&mut self, bootmenu: Option<BootMenu>, bios_reboot_timeout: Option<i32>) {
        let mut boot = "strict=on".to_string();
        if let Some(BootMenu {
            enable,
            timeout,
            line: _,
        }) = bootmenu
        {
            write!(boot, ",menu={}", on_off(enable)).expect("String write");
            if let Some(timeout) = timeout {
                write!(boot, ",splash-time={timeout}").expect("String write");
            }
        }
        if let Some(timeout) = bios_reboot_timeout {
            write!(boot, ",reboot-timeout={timeout}").expect("String write");
        }
        self.arg("-boot", boot);
    }

    fn kernel(
        &mut self,
        kernel: Option<&str>,
        (initrd, initrd_line): (Option<&str>, SourceLine),
        (cmdline, cmdline_line): (Option<&str>, SourceLine),
    ) -> Result<(), QemuError> {
        if let Some(kernel) = kernel {
            self.arg("-kernel", kernel);
        }
        if let Some(initrd) = initrd {
            if kernel.is_none() {
                return Err(QemuError::invalid(
                    "os/initrd",
                    initrd_line,
                    "an initrd needs a <kernel>",
                ));
            }
            self.arg("-initrd", initrd);
        }
        if let Some(cmdline) = cmdline {
            if kernel.is_none() {
                return Err(QemuError::invalid(
                    "os/cmdline",
                    cmdline_line,
                    "a kernel command line needs a <kernel>",
                ));
            }
            self.arg("-append", cmdline);
        }
        Ok(())
    }

    /// `<pm>`: ACPI S3/S4 on or off, a property of the chipset's power management device,
    /// as libvirt sets it.
    fn pm(&mut self, pm: Option<&oxvirt_domain::Pm>) {
        let Some(oxvirt_domain::Pm {
            suspend_to_mem,
            suspend_to_disk,
            line: _,
        }) = pm
        else {
            return;
        };
        let device = match self.chipset {
            Chipset::I440fx => "PIIX4_PM",
            Chipset::Q35 => "ICH9-LPC",
        };
        for (state, enabled) in [("s3", suspend_to_mem), ("s4", suspend_to_disk)] {
            if let Some(enabled) = enabled {
                let disable = if *enabled { 0 } else { 1 };
                self.arg("-global", format!("{device}.disable_{state}={disable}"));
            }
        }
    }

    fn devices(
        &mut self,
        devices: &oxvirt_domain::Devices,
        (memory_kib, current_memory_kib, current_memory_line): (u64, u64, SourceLine),
    ) -> Result<(), QemuError> {
        let oxvirt_domain::Devices {
            // The daemon chooses the binary (`emulator_path`); it is not an argument.
            emulator: _,
            disks,
            // Read where devices plug into them (`self.controllers`) and emitted here.
            controllers: _,
            interfaces,
            serials,
            consoles,
            inputs,
            graphics,
            audios,
            videos,
            memballoon,
            rngs,
            hostdevs,
            channels,
            sounds,
            redirdevs,
        } = devices;
        self.serials(serials, consoles)?;
        self.controllers()?;
        for (index, disk) in disks.iter().enumerate() {
            self.disk(index, disk)?;
        }
        for ((index, interface), fds) in interfaces.iter().enumerate().zip(nic_fds(interfaces)) {
            self.interface(index, interface, &fds)?;
        }
        self.inputs(inputs)?;
        self.graphics_and_video(graphics, videos)?;
        self.hostdevs(hostdevs)?;
        let spice_display = graphics.iter().any(|g| g.spice.is_some());
        self.channels(channels, spice_display)?;
        self.sounds(sounds, audios)?;
        self.audio(audios, spice_display)?;
        self.redirdevs(redirdevs, spice_display)?;
        let balloon = self.memballoon(memballoon.as_ref())?;
        // The balloon takes back what the guest does not get at boot; without one, QEMU
        // would give the guest all of <memory>.
        if current_memory_kib < memory_kib && !balloon {
            return Err(QemuError::unsupported(
                "currentMemory",
                current_memory_line,
                "currentMemory below memory needs a virtio memballoon to take the difference back",
            ));
        }
        self.rngs(rngs)
    }

    /// Queue a PCI device, placing it at its `<address type='pci'>` if it has one. `element`
    /// names the device, for errors about its address.
    fn add_pci_device(
        &mut self,
        mut device: Value,
        address: Option<&Address>,
        element: &str,
    ) -> Result<(), QemuError> {
        match address {
            None => self.devices.pci_auto.push(device),
            Some(Address::Pci(pci)) => {
                for (key, value) in pci_properties(pci, self.chipset, self.controllers, element)? {
                    device[key] = value;
                }
                self.devices.pci_fixed.push(device);
            }
            Some(other) => {
                return Err(QemuError::invalid(
                    format!("{element}/address"),
                    other.line(),
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
/// Host CPUs a `<vcpu cpuset>` can name: the size of the affinity mask `launch` applies.
const MAX_AFFINITY_CPUS: u32 = libc::CPU_SETSIZE as u32;
const VNC_BASE_PORT: u16 = 5900;
const VNC_AUTOPORT_DISPLAYS: u16 = 99;

/// `bus` and `addr` (and `multifunction`) of a device at a PCI address: bus 0 is the root
/// bus (`pci.0` on pc, `pcie.0` on q35), bus N the bus of PCI controller N (`pci.N`, libvirt's
/// id for it).
fn pci_properties(
    pci: &PciAddress,
    chipset: Chipset,
    controllers: &[Controller],
    element: &str,
) -> Result<Vec<(&'static str, Value)>, QemuError> {
    let PciAddress {
        domain,
        bus,
        slot,
        function,
        multifunction,
        line,
    } = *pci;
    if domain != 0 {
        return Err(QemuError::unsupported(
            format!("{element}/address"),
            line,
            "only PCI domain 0 exists",
        ));
    }
    let bus_id = if bus == 0 {
        chipset.root_bus().to_string()
    } else if controllers
        .iter()
        .any(|c| c.controller_type == ControllerType::Pci && c.index == u32::from(bus))
    {
        format!("pci.{bus}")
    } else {
        return Err(QemuError::invalid(
            format!("{element}/address"),
            line,
            format!("PCI bus {bus:#04x} has no PCI controller with index {bus}"),
        ));
    };
    if slot > 31 || function > 7 {
        return Err(QemuError::invalid(
            format!("{element}/address"),
            line,
            "PCI slot is 0-31 and function 0-7",
        ));
    }
    let addr = if function == 0 {
        format!("{slot:#x}")
    } else {
        format!("{slot:#x}.{function:#x}")
    };
    let mut props = vec![("bus", json!(bus_id)), ("addr", json!(addr))];
    // As libvirt: `multifunction` when the definition says on or off.
    if let Some(multifunction) = multifunction {
        props.push(("multifunction", json!(multifunction)));
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

fn unsupported_action(element: &str, line: SourceLine, action: LifecycleAction) -> QemuError {
    QemuError::unsupported(
        element,
        line,
        format!("action '{}' is not supported", action.as_str()),
    )
}
