//! Planning: a libvirt [`Domain`] becomes the VMM's [`VmConfig`], or refusals naming every
//! element the native engine cannot honour. The plan *is* the support check: what the engine
//! can run is stated once, here.
//!
//! Every model struct read here is destructured without `..`, so a field added to the domain
//! model does not compile until this engine has decided what to do with it (map it, refuse it,
//! or ignore it with a reason). Each refusal carries the line of the element it names (the
//! model's [`SourceLine`]s), so a define says where in the XML the problem is.

use oxvirt_domain::{
    BackingLayer, BootDevice, BootMenu, CharDevice, CharSource, Clock, ClockOffset, Controller,
    ControllerType, Cpu, CpuMode as DomainCpuMode, CpuModel, CpuTopology, CpuTune, Devices, Disk,
    DiskBus, DiskCache as DomainDiskCache, DiskDevice, DiskDriver, DiskFormat, DiskTarget, Domain,
    DomainType, FeaturePolicy, Hugepages, Input, InputBus, InputType, Interface,
    InterfaceDriverName, InterfaceType, LifecycleAction, MemBalloon, MemBalloonModel, MemTune,
    MemoryBacking, Os, SourceLine, Vcpu, VcpuPlacement, Video, VideoModel,
};
use oxvirt_images::Format;
use oxvirt_vmm::cpuid;
use oxvirt_vmm::protocol::config::DEFAULT_CMDLINE;
use oxvirt_vmm::protocol::{
    BackingFile, BalloonSettings, CpuFeatures, CpuMode, CpusConfig, DiskCache, DiskConfig,
    MacAddress, MemoryConfig, NetConfig, SeccompMode, SerialMode, Topology, VmConfig,
};

use crate::error::{NativeError, Refusal};
use crate::paths::RunPaths;

/// The `oxvirt-vmm` configuration for `domain`, with its files in `run`. The domain is the
/// launched copy: its interfaces name the TAP devices the daemon's network layer created
/// (`<target dev>`), its volume disks are resolved to files.
pub fn plan(domain: &Domain, run: &RunPaths) -> Result<VmConfig, NativeError> {
    let mut planner = Planner::default();
    let config = planner.domain(domain, run);
    if !planner.refusals.is_empty() {
        return Err(NativeError::Unsupported {
            refusals: planner.refusals,
        });
    }
    match planner.unresolved.into_iter().next() {
        Some(error) => Err(error),
        None => Ok(config),
    }
}

/// The define-time check: `Err(Unsupported)` naming every element the native engine cannot
/// run. What only a launch provides (TAP devices, volume files) is not required yet.
pub fn check_definition(domain: &Domain) -> Result<(), NativeError> {
    let mut planner = Planner::default();
    planner.domain(domain, &RunPaths::new("/"));
    if planner.refusals.is_empty() {
        Ok(())
    } else {
        Err(NativeError::Unsupported {
            refusals: planner.refusals,
        })
    }
}

#[derive(Default)]
struct Planner {
    refusals: Vec<Refusal>,
    /// What a launch must have resolved (a TAP per interface, a file per disk).
    unresolved: Vec<NativeError>,
}

impl Planner {
    fn no(&mut self, element: impl Into<String>, line: SourceLine, reason: impl Into<String>) {
        self.refusals.push(Refusal {
            element: element.into(),
            line: line.get(),
            reason: reason.into(),
        });
    }

    fn domain(&mut self, domain: &Domain, run: &RunPaths) -> VmConfig {
        let Domain {
            domain_type,
            // Identity and descriptions: the daemon's; the VMM's argv names the uuid through
            // the run directory.
            name: _,
            uuid: _,
            title: _,
            description: _,
            // Other applications' data: never interpreted (libvirt's rule).
            metadata: _,
            memory_kib,
            current_memory_kib,
            max_memory,
            // The guest's blkio (v2: io) group: oxvirtd's, as for QEMU (docs/cgroups.md); its
            // devices must be host block devices, which the daemon checks before a start.
            blkiotune: _,
            memtune,
            memory_backing,
            vcpu,
            iothreads,
            cputune,
            numatune,
            sysinfo,
            os,
            // ACPI, APIC and PAE are always there: the VMM describes the machine with ACPI only.
            // VMware's I/O port is never there (vmport='on' is refused below).
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
            line,
            memory_line,
            current_memory_line,
            iothreads_line,
            iothreadids_line,
            on_poweroff_line,
            on_reboot_line,
            on_crash_line,
        } = domain;
        if *domain_type != DomainType::Kvm {
            self.no(
                "<domain type='qemu'>",
                *line,
                "the native engine runs guests on hardware KVM only; use type='kvm'",
            );
        }
        if features.vmport == Some(true) {
            self.no(
                "<features/vmport>",
                features.vmport_line,
                "no VMware I/O port",
            );
        }
        // The VMM has no ACPI sleep states: <pm> may only say they are off.
        if let Some(pm) = pm {
            if pm.suspend_to_mem == Some(true) || pm.suspend_to_disk == Some(true) {
                self.no("<pm>", pm.line, "no suspend to RAM or disk");
            }
        }
        let (kernel, initrd, cmdline) = self.os(os);
        let memory = self.memory(
            (*memory_kib, *memory_line),
            max_memory.as_ref(),
            memory_backing.as_ref(),
        );
        if let Some(tune) = numatune {
            self.no("<numatune>", tune.line, "no host NUMA memory policy");
        }
        // <memtune>'s limits (and <blkiotune>) are the guest's cgroups, which oxvirtd makes and
        // places the VMM in before the guest's first instruction, as for QEMU
        // (docs/cgroups.md). A hard limit below <memory> starts, as libvirt lets it: the
        // kernel OOM-kills the VMM if the guest's use reaches it.
        if let Some(MemTune {
            hard_limit_kib: _,
            soft_limit_kib: _,
            swap_hard_limit_kib: _,
            min_guarantee_kib,
            line,
        }) = memtune
        {
            if min_guarantee_kib.is_some() {
                self.no(
                    "<memtune><min_guarantee>",
                    *line,
                    "no cgroup counterpart (libvirt's QEMU driver refuses it too)",
                );
            }
        }
        if let Some(sysinfo) = sysinfo {
            self.no("<sysinfo>", sysinfo.line, "no SMBIOS tables");
        }
        // The VMM runs each disk's I/O in that disk's own worker thread: it has no IOThreads
        // to create, list or pin.
        if iothreads.ids_stated {
            self.no("<iothreadids>", *iothreadids_line, "no I/O threads");
        } else if !iothreads.is_empty() {
            self.no("<iothreads>", *iothreads_line, "no I/O threads");
        }
        // The rest of <cputune> is oxvirtd's to apply on the VMM's threads before the guest's
        // first instruction, as for QEMU: shares, periods and quotas in the guest's cgroups
        // (vCPU N's thread in `vcpuN`, every other thread in `emulator`), vcpupin and
        // emulatorpin as the threads' CPU affinity.
        if let Some(CpuTune {
            shares: _,
            period: _,
            quota: _,
            emulator_period: _,
            emulator_quota: _,
            vcpupins: _,
            emulatorpin: _,
            iothreadpins,
            line: _,
        }) = cputune
        {
            for pin in iothreadpins {
                self.no("<cputune/iothreadpin>", pin.line, "no I/O threads to pin");
            }
        }
        let cpus = self.cpus(vcpu, cpu.as_ref());
        self.clock(clock);
        // Lifecycle: the VMM ends with its guest, so nothing can be preserved.
        for (element, action, line) in [
            ("<on_poweroff>", on_poweroff, on_poweroff_line),
            ("<on_reboot>", on_reboot, on_reboot_line),
            ("<on_crash>", on_crash, on_crash_line),
        ] {
            match action {
                LifecycleAction::Destroy
                | LifecycleAction::Restart
                | LifecycleAction::RenameRestart => {}
                LifecycleAction::Preserve => self.no(
                    format!("{element}preserve"),
                    *line,
                    "the VMM ends with its guest",
                ),
                LifecycleAction::CoredumpDestroy | LifecycleAction::CoredumpRestart => {
                    self.no(format!("{element}coredump-*"), *line, "no guest core dumps")
                }
            }
        }
        let (disks, nets, rng, mut balloon) = self.devices(devices);
        // The guest boots with all of <memory>; the balloon then takes it down to <currentMemory>.
        if current_memory_kib < memory_kib {
            match balloon.as_mut() {
                Some(balloon) => balloon.target_kib = Some(*current_memory_kib),
                None => self.no(
                    "<currentMemory> below <memory>",
                    *current_memory_line,
                    "without a balloon (<memballoon model='none'>) the guest always has all of <memory>",
                ),
            }
        }
        VmConfig {
            kernel: kernel.into(),
            initrd: initrd.map(Into::into),
            cmdline: cmdline.unwrap_or_else(|| DEFAULT_CMDLINE.to_string()),
            memory,
            cpus,
            disks,
            nets,
            rng,
            balloon,
            serial: SerialMode::Socket(run.serial_socket()),
            api_socket: Some(run.api_socket()),
            seccomp: SeccompMode::On,
            exit_record: Some(run.exit_record()),
            // A launch from saved state sets it (Supervisor::launch_restoring).
            restore: None,
            // A launch sets it (Supervisor::launch): the daemon resumes the guest once it has
            // placed its threads.
            start_paused: false,
            // A launch with a sandbox sets it (Supervisor::with_sandbox).
            jail: None,
        }
    }

    /// Boot: a Linux kernel, loaded directly. Returns kernel, initrd and command line.
    fn os(&mut self, os: &Os) -> (String, Option<String>, Option<String>) {
        let Os {
            firmware,
            // x86_64 and the machine type are all the VMM has.
            arch: _,
            machine: _,
            loader,
            nvram,
            kernel,
            initrd,
            cmdline,
            boot,
            bootmenu,
            // No firmware, so nothing to reboot after a failed boot.
            bios_reboot_timeout: _,
            // Refused below when it asks for other strings than none at all.
            smbios,
            smbios_line,
            line,
            // Machine and arch are not refused; kernel, initrd and command line are taken.
            type_line: _,
            kernel_line: _,
            initrd_line: _,
            cmdline_line: _,
            boot_lines,
        } = os;
        if matches!(
            smbios,
            Some(oxvirt_domain::SmbiosMode::Host | oxvirt_domain::SmbiosMode::Sysinfo)
        ) {
            self.no("<os/smbios>", *smbios_line, "no SMBIOS tables");
        }
        if firmware.is_some() {
            self.no(
                "<os firmware=...>",
                *line,
                "no firmware: the kernel is booted directly",
            );
        }
        if let Some(loader) = loader {
            self.no(
                "<os><loader>",
                loader.line,
                "no firmware: the kernel is booted directly",
            );
        }
        if let Some(nvram) = nvram {
            self.no("<os><nvram>", nvram.line, "no firmware");
        }
        if kernel.is_none() {
            self.no(
                "<os> without <kernel>",
                *line,
                "the native engine boots a Linux kernel directly; firmware boot from disk or ISO needs the QEMU engine",
            );
        }
        if let Some(index) = boot.iter().position(|b| *b != BootDevice::Hd) {
            self.no(
                "<os><boot dev=...>",
                boot_lines.get(index),
                "only direct kernel boot",
            );
        }
        if let Some(BootMenu {
            enable,
            timeout: _,
            line,
        }) = bootmenu
        {
            if *enable {
                self.no("<os><bootmenu enable='yes'>", *line, "no firmware");
            }
        }
        (
            kernel.clone().unwrap_or_default(),
            initrd.clone(),
            cmdline.clone(),
        )
    }

    /// `memory` is a size in KiB with the line of its element.
    fn memory(
        &mut self,
        (memory_kib, memory_line): (u64, SourceLine),
        max_memory: Option<&oxvirt_domain::MaxMemory>,
        backing: Option<&MemoryBacking>,
    ) -> MemoryConfig {
        if let Some(oxvirt_domain::MaxMemory {
            kib: _,
            slots: _,
            line,
        }) = max_memory
        {
            self.no("<maxMemory>", *line, "no memory hotplug");
        }
        if memory_kib % 1024 != 0 {
            self.no("<memory>", memory_line, "must be a whole number of MiB");
        }
        let mut config = MemoryConfig {
            size_mib: memory_kib / 1024,
            ..MemoryConfig::default()
        };
        if let Some(MemoryBacking {
            hugepages,
            nosharepages,
            locked,
            source,
            access,
            allocation,
            allocation_threads,
            discard,
            line,
        }) = backing
        {
            // Name exactly what is set, so the message says what to remove.
            let unimplemented: Vec<String> = [
                locked.then(|| "<locked/>".to_string()),
                source.map(|v| format!("<source type='{}'/>", v.as_str())),
                access.map(|v| format!("<access mode='{}'/>", v.as_str())),
                allocation.map(|v| format!("<allocation mode='{}'/>", v.as_str())),
                allocation_threads.map(|v| format!("<allocation threads='{v}'/>")),
                discard.then(|| "<discard/>".to_string()),
            ]
            .into_iter()
            .flatten()
            .collect();
            if !unimplemented.is_empty() {
                self.no(
                    format!("<memoryBacking> {}", unimplemented.join(" ")),
                    *line,
                    "oxvirt-vmm backs guest RAM with anonymous (or huge page) memory only",
                );
            }
            if let Some(Hugepages {
                page_sizes_kib,
                line,
            }) = hugepages
            {
                if page_sizes_kib.iter().any(|&kib| kib != 2048) {
                    self.no(
                        "<memoryBacking><hugepages><page size=...>",
                        *line,
                        "only the default 2 MiB huge pages",
                    );
                }
            }
            config.hugepages = hugepages.is_some();
            config.share_pages = !nosharepages;
        }
        config
    }

    fn cpus(&mut self, vcpu: &Vcpu, cpu: Option<&Cpu>) -> CpusConfig {
        let Vcpu {
            placement,
            max,
            current,
            cpuset,
            // The enabled ones are `current`, refused below when fewer than `max`.
            slots: _,
            line,
        } = vcpu;
        if current.is_some_and(|c| c != *max) {
            self.no("<vcpu current=...>", *line, "no vCPU hotplug");
        }
        if cpuset.is_some() {
            self.no("<vcpu cpuset=...>", *line, "no vCPU pinning");
        }
        if *placement == VcpuPlacement::Auto {
            self.no("<vcpu placement='auto'>", *line, "no automatic placement");
        }
        let mut config = CpusConfig {
            count: *max,
            ..CpusConfig::default()
        };
        let Some(Cpu {
            mode,
            // Matching and checking policies, migratability and the vendor are QEMU's concerns:
            // the VMM's CPU is exactly the mode's.
            match_: _,
            check: _,
            migratable: _,
            model,
            vendor: _,
            topology,
            features,
            numa,
            line: cpu_line,
            vendor_line: _,
        }) = cpu
        else {
            return config;
        };
        if let Some(cell) = numa.first() {
            self.no(
                "<cpu><numa>",
                cell.line,
                "one NUMA node: no guest NUMA topology",
            );
        }
        if let Some(CpuTopology {
            sockets,
            dies,
            clusters,
            cores,
            threads,
            line,
        }) = *topology
        {
            if dies != 1 || clusters != 1 {
                self.no(
                    "<cpu><topology dies/clusters>",
                    line,
                    "only sockets, cores and threads",
                );
            }
            config.topology = Some(Topology {
                sockets,
                cores,
                threads,
            });
        }
        config.mode = match mode {
            DomainCpuMode::HostPassthrough | DomainCpuMode::Maximum => CpuMode::HostPassthrough,
            DomainCpuMode::HostModel => CpuMode::HostModel,
            DomainCpuMode::Custom => match model {
                Some(CpuModel {
                    name,
                    fallback: _,
                    line,
                }) => {
                    if cpuid::model(name).is_none() {
                        let known: Vec<&str> = cpuid::MODELS.iter().map(|m| m.name).collect();
                        self.no(
                            format!("<cpu><model>{name}</model>"),
                            *line,
                            format!("the native engine knows {}", known.join(", ")),
                        );
                    }
                    CpuMode::Custom(name.clone())
                }
                None => {
                    self.no(
                        "<cpu mode='custom'> without <model>",
                        *cpu_line,
                        "name a model",
                    );
                    CpuMode::HostPassthrough
                }
            },
        };
        let mut overrides = CpuFeatures::default();
        let mut optional = None;
        for feature in features {
            let oxvirt_domain::CpuFeature { policy, name, line } = feature;
            match policy {
                FeaturePolicy::Force | FeaturePolicy::Require => {
                    overrides.enable.push(name.clone())
                }
                FeaturePolicy::Disable | FeaturePolicy::Forbid => {
                    overrides.disable.push(name.clone())
                }
                FeaturePolicy::Optional => {
                    optional.get_or_insert(*line);
                }
            }
        }
        if let Some(line) = optional {
            self.no(
                "<cpu><feature policy='optional'>",
                line,
                "use require or disable",
            );
        }
        config.features = overrides;
        config
    }

    fn clock(&mut self, clock: &Clock) {
        // Timers: the VMM has the in-kernel PIT, the LAPIC timer and kvmclock; libvirt's timer
        // settings tune QEMU's and have nothing to change here.
        let Clock {
            offset,
            timers: _,
            line,
        } = clock;
        if *offset == ClockOffset::Localtime {
            self.no("<clock offset='localtime'>", *line, "the RTC runs in UTC");
        }
    }

    fn devices(
        &mut self,
        devices: &Devices,
    ) -> (
        Vec<DiskConfig>,
        Vec<NetConfig>,
        bool,
        Option<BalloonSettings>,
    ) {
        let Devices {
            // The engine is oxvirt-vmm, whatever <emulator> says.
            emulator: _,
            disks,
            controllers,
            interfaces,
            serials,
            consoles,
            inputs,
            graphics,
            // Without a sound card (refused below) a backend plays nothing.
            audios: _,
            videos,
            memballoon,
            rngs,
            hostdevs,
            channels,
            sounds,
            redirdevs,
        } = devices;
        for hostdev in hostdevs {
            self.no(
                "<hostdev>",
                hostdev.line,
                "no device passthrough (VFIO or USB)",
            );
        }
        if let Some(channel) = channels.first() {
            self.no(
                "<channel>",
                channel.line,
                "no virtio-serial ports (no guest agent channel)",
            );
        }
        if let Some(redirdev) = redirdevs.first() {
            self.no("<redirdev>", redirdev.line, "no USB (and no SPICE)");
        }
        let disks = disks.iter().map(|disk| self.disk(disk)).collect();
        for controller in controllers {
            self.controller(controller);
        }
        let nets = interfaces
            .iter()
            .enumerate()
            .map(|(index, iface)| self.interface(index, iface))
            .collect();
        self.serials(serials, consoles);
        for sound in sounds {
            self.no(
                format!("<sound model='{}'>", sound.model.as_str()),
                sound.line,
                "no sound cards",
            );
        }
        for input in inputs {
            let Input {
                input_type,
                bus,
                address: _,
                line,
            } = input;
            let ps2_default = *bus == InputBus::Ps2 && *input_type != InputType::Tablet;
            if !ps2_default {
                self.no(
                    "<input>",
                    *line,
                    "no input devices (PS/2 keyboard and mouse are implied)",
                );
            }
        }
        if let Some(first) = graphics.first() {
            self.no(
                "<graphics>",
                first.line,
                "no display: the console is the serial port",
            );
        }
        for video in videos {
            let Video {
                model,
                ram_kib: _,
                vram_kib: _,
                vgamem_kib: _,
                heads: _,
                primary: _,
                address: _,
                line,
                model_line: _,
            } = video;
            if *model != VideoModel::None {
                self.no("<video>", *line, "no display");
                break;
            }
        }
        // The virtio-rng device reads the host's getrandom(2), whatever the backend path says.
        let rng = match rngs.as_slice() {
            [] => false,
            [oxvirt_domain::Rng {
                backend_random: _,
                address: _,
                line: _,
            }] => true,
            [_, second, ..] => {
                self.no("<rng> (more than one)", second.line, "one virtio-rng");
                true
            }
        };
        let balloon = match memballoon {
            Some(MemBalloon {
                model: MemBalloonModel::Virtio,
                autodeflate,
                stats_period,
                // Devices get the VMM's own slots, whatever address the definition gives.
                address: _,
                line: _,
            }) => Some(BalloonSettings {
                deflate_on_oom: autodeflate.unwrap_or(false),
                stats_period_s: stats_period.unwrap_or(0),
                target_kib: None,
            }),
            Some(MemBalloon {
                model: MemBalloonModel::None,
                ..
            })
            | None => None,
        };
        (disks, nets, rng, balloon)
    }

    fn disk(&mut self, disk: &Disk) -> DiskConfig {
        let Disk {
            // File and block disks are both opened by path; a volume disk is resolved to its
            // file by the daemon before a launch (and then has a `source`).
            disk_type: _,
            device,
            driver,
            source,
            volume: _,
            network,
            // Refused with the network source it belongs to.
            auth: _,
            target,
            iotune,
            readonly,
            shareable,
            serial,
            // Direct kernel boot: there is nothing to boot from a disk.
            boot_order: _,
            // The VMM assigns PCI slots itself.
            address: _,
            backing_chain,
            line,
            // The source is the file to open; nothing about it is refused.
            source_line: _,
            serial_line,
            shareable_line,
            iotune_line,
        } = disk;
        let DiskTarget {
            dev,
            bus,
            line: target_line,
        } = target;
        let DiskDriver {
            format,
            // False only for a volume disk without `type=`, whose format the daemon finds
            // when it resolves the volume at start.
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
        } = driver;
        let name = format!("<disk> {dev}");
        if let Some(network) = network {
            self.no(
                format!("{name}: <source protocol='{}'>", network.protocol.as_str()),
                *line,
                "no network block drivers; the VMM opens local files and block devices",
            );
        }
        if iotune.is_some() {
            self.no(
                format!("{name}: <iotune>"),
                *iotune_line,
                "no I/O throttling in oxvirt-vmm; remove <iotune> or use the qemu engine",
            );
        }
        if *device == DiskDevice::Cdrom {
            self.no(
                format!("{name}: device='cdrom'"),
                *line,
                "no CD-ROM; use a virtio disk",
            );
        }
        if *bus != DiskBus::Virtio {
            self.no(
                format!("{name}: <target bus='{}'>", bus_name(*bus)),
                *target_line,
                "only virtio disks (no IDE, SATA, SCSI, USB or floppy)",
            );
        }
        if *format == DiskFormat::Qcow2 && *cache == Some(DomainDiskCache::None) {
            self.no(
                format!("{name}: <driver type='qcow2' cache='none'>"),
                *driver_line,
                "oxvirt-vmm uses O_DIRECT for raw images only",
            );
        }
        let cache = match cache {
            None | Some(DomainDiskCache::Writeback) => DiskCache::Writeback,
            Some(DomainDiskCache::None) => DiskCache::None,
            Some(other) => {
                self.no(
                    format!("{name}: <driver cache='{}'>", other.as_str()),
                    *driver_line,
                    "only cache='none' or 'writeback'",
                );
                DiskCache::Writeback
            }
        };
        // Name exactly the attributes that are set, so the message says what to remove.
        let unimplemented: Vec<String> = [
            io.map(|v| format!("io='{}'", v.as_str())),
            discard.map(|v| format!("discard='{}'", v.as_str())),
            detect_zeroes.map(|v| format!("detect_zeroes='{}'", v.as_str())),
            iothread.map(|v| format!("iothread='{v}'")),
            error_policy.map(|v| format!("error_policy='{}'", v.as_str())),
            rerror_policy.map(|v| format!("rerror_policy='{}'", v.as_str())),
            copy_on_read.map(|v| format!("copy_on_read='{}'", if v { "on" } else { "off" })),
            queues.map(|v| format!("queues='{v}'")),
            queue_size.map(|v| format!("queue_size='{v}'")),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !unimplemented.is_empty() {
            self.no(
                format!("{name}: <driver {}>", unimplemented.join(" ")),
                *driver_line,
                "not implemented by oxvirt-vmm",
            );
        }
        if serial.is_some() {
            self.no(
                format!("{name}: <serial>"),
                *serial_line,
                "no disk serial numbers",
            );
        }
        if *shareable {
            self.no(
                format!("{name}: <shareable/>"),
                *shareable_line,
                "no shared disks",
            );
        }
        if source.is_none() {
            self.unresolved
                .push(NativeError::NoDiskSource { dev: dev.clone() });
        }
        // The host resolved a qcow2 disk's chain from its headers (empty: no backing file);
        // the VMM opens the disk only if its headers still name exactly this chain. A raw
        // image has no backing file to name.
        let backing_chain = (*format == DiskFormat::Qcow2).then(|| {
            backing_chain
                .iter()
                .map(|BackingLayer { path, format }| BackingFile {
                    path: path.into(),
                    format: image_format(*format),
                })
                .collect()
        });
        DiskConfig {
            path: source.clone().unwrap_or_default().into(),
            format: image_format(*format),
            readonly: *readonly,
            cache,
            backing_chain,
            // The VMM names the disk's counters by it (domblkstat).
            id: Some(dev.clone()),
        }
    }

    fn controller(&mut self, controller: &Controller) {
        let Controller {
            controller_type,
            index: _,
            model: _,
            driver_queues: _,
            // The VMM lays out its own PCI bus: the PCI topology libvirt's XML describes (root
            // ports, bridges, their numbers, every device's address) is not what the guest sees
            // here, so none of it is read.
            address: _,
            ports: _,
            model_name: _,
            target: _,
            model_name_line: _,
            // USB companion controllers: there is no USB at all.
            master_startport: _,
            master_line: _,
            line,
            driver_line: _,
        } = controller;
        let kind = match controller_type {
            ControllerType::Ide => "ide",
            ControllerType::Fdc => "fdc",
            ControllerType::Scsi => "scsi",
            ControllerType::VirtioSerial => "virtio-serial",
            // pci-root and the PCI controllers of a q35 (root ports, bridges), and the USB
            // controller and (q35) SATA controller every definition gets: no devices can use
            // them, so they are simply absent.
            ControllerType::Pci | ControllerType::Usb | ControllerType::Sata => return,
        };
        self.no(format!("<controller type='{kind}'>"), *line, "no such bus");
    }

    fn interface(&mut self, index: usize, iface: &Interface) -> NetConfig {
        let Interface {
            interface_type,
            mac,
            // The network or bridge is the daemon's network layer's: it made the TAP.
            source: _,
            model,
            driver_name,
            driver_queues,
            target_dev,
            // An ethernet TAP the host made (managed='no') is opened by name like the daemon's.
            target_managed: _,
            mtu,
            link_up,
            // Direct kernel boot: no network boot.
            boot_order: _,
            // The VMM assigns PCI slots itself.
            address: _,
            line,
            model_line,
            driver_line,
            // The TAP's name is the daemon's to choose.
            target_line: _,
            mtu_line,
            link_line,
        } = iface;
        let name = format!("<interface> #{index}");
        if *interface_type == InterfaceType::User {
            self.no(
                format!("{name}: type='user'"),
                *line,
                "no user-mode networking; use a network or bridge",
            );
        }
        if *interface_type == InterfaceType::Direct {
            self.no(
                format!("{name}: type='direct'"),
                *line,
                "no macvtap (oxvirt-vmm opens TAPs by name); use a network, bridge or ethernet",
            );
        }
        match model.as_deref() {
            Some("virtio") => {}
            // Without <model>, libvirt's default (rtl8139) was added: that line says so.
            other => self.no(
                format!("{name}: <model type='{}'>", other.unwrap_or("rtl8139")),
                *model_line,
                "only virtio NICs: write <model type='virtio'/>",
            ),
        }
        if *driver_name == Some(InterfaceDriverName::Vhost) {
            self.no(
                format!("{name}: <driver name='vhost'>"),
                *driver_line,
                "no vhost-net",
            );
        }
        if driver_queues.is_some_and(|q| q > 1) {
            self.no(
                format!("{name}: <driver queues=...>"),
                *driver_line,
                "one queue pair",
            );
        }
        if mtu.is_some() {
            self.no(format!("{name}: <mtu>"), *mtu_line, "no MTU setting");
        }
        if *link_up == Some(false) {
            self.no(
                format!("{name}: <link state='down'>"),
                *link_line,
                "no link control",
            );
        }
        if target_dev.is_none() {
            self.unresolved.push(NativeError::NoTap { index });
        }
        NetConfig {
            tap: target_dev.clone().unwrap_or_default(),
            mac: mac.map(|mac| MacAddress(mac.0)),
        }
    }

    /// serials[0] (and its console alias) is the console; its source is the engine's.
    fn serials(&mut self, serials: &[CharDevice], consoles: &[CharDevice]) {
        for (index, serial) in serials.iter().enumerate() {
            let CharDevice {
                source,
                target,
                line,
            } = serial;
            if index > 0 {
                let port = target.port.unwrap_or(0);
                self.no(
                    format!("<serial> port {port}"),
                    *line,
                    "one serial port (COM1)",
                );
            } else if !matches!(source, CharSource::Pty) {
                self.no(
                    "<serial type='file'|'unix'|'tcp'|'udp'|'null'|'stdio'|'vc'>",
                    *line,
                    "the console is the engine's socket and log; use type='pty'",
                );
            }
        }
        let alias = usize::from(!serials.is_empty());
        if let Some(console) = consoles.get(alias) {
            self.no(
                "<console type=... target type='virtio'>",
                console.line,
                "no virtio console",
            );
        }
    }
}

fn image_format(format: DiskFormat) -> Format {
    match format {
        DiskFormat::Raw => Format::Raw,
        DiskFormat::Qcow2 => Format::Qcow2,
    }
}

fn bus_name(bus: DiskBus) -> &'static str {
    match bus {
        DiskBus::Virtio => "virtio",
        DiskBus::Sata => "sata",
        DiskBus::Scsi => "scsi",
        DiskBus::Ide => "ide",
        DiskBus::Usb => "usb",
        DiskBus::Fdc => "fdc",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(xml_devices: &str, extra: &str) -> Domain {
        let xml = format!(
            "<domain type='kvm' xmlns:oxvirt='urn:oxvirt:domain:1.0'><name>n1</name>\
             <uuid>8c3a0b8e-5f3e-4c7e-9d2a-1b2c3d4e5f60</uuid><memory unit='MiB'>256</memory>\
             <vcpu>2</vcpu><os><type arch='x86_64'>hvm</type><kernel>/k/vmlinuz</kernel>\
             <initrd>/k/initrd</initrd><cmdline>console=ttyS0 quiet</cmdline></os>{extra}\
             <devices>{xml_devices}</devices><oxvirt:engine name='native'/></domain>"
        );
        oxvirt_domain::parse_domain_xml(&xml).unwrap()
    }

    #[test]
    fn a_representative_domain_becomes_this_vm_config() {
        let mut d = domain(
            "<disk type='file' device='disk'><driver name='qemu' type='raw' cache='none'/>\
               <source file='/img/root.raw'/><target dev='vda' bus='virtio'/></disk>\
             <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
               <source file='/img/data.qcow2'/><target dev='vdb' bus='virtio'/><readonly/></disk>\
             <interface type='network'><mac address='52:54:00:12:34:56'/>\
               <source network='default'/><model type='virtio'/></interface>\
             <serial type='pty'/><rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>",
            "<memoryBacking><nosharepages/><hugepages/></memoryBacking>\
             <cpu mode='custom'><model>Haswell-noTSX-IBRS</model>\
             <topology sockets='1' cores='2' threads='1'/>\
             <feature policy='require' name='svm'/><feature policy='disable' name='pcid'/></cpu>",
        );
        d.devices.interfaces[0].target_dev = Some("oxtap7".to_string());
        let run = RunPaths::new("/run/ox/run/8c3a");
        let config = plan(&d, &run).unwrap();
        let expected = VmConfig {
            kernel: "/k/vmlinuz".into(),
            initrd: Some("/k/initrd".into()),
            cmdline: "console=ttyS0 quiet".into(),
            memory: MemoryConfig {
                size_mib: 256,
                hugepages: true,
                share_pages: false,
            },
            cpus: CpusConfig {
                count: 2,
                topology: Some(Topology {
                    sockets: 1,
                    cores: 2,
                    threads: 1,
                }),
                mode: CpuMode::Custom("Haswell-noTSX-IBRS".into()),
                features: CpuFeatures {
                    enable: vec!["svm".into()],
                    disable: vec!["pcid".into()],
                },
            },
            disks: vec![
                DiskConfig {
                    path: "/img/root.raw".into(),
                    format: Format::Raw,
                    readonly: false,
                    cache: DiskCache::None,
                    backing_chain: None,
                    id: Some("vda".into()),
                },
                DiskConfig {
                    path: "/img/data.qcow2".into(),
                    format: Format::Qcow2,
                    readonly: true,
                    cache: DiskCache::Writeback,
                    // A qcow2 disk without a resolved backing file: the VMM checks it has none.
                    backing_chain: Some(Vec::new()),
                    id: Some("vdb".into()),
                },
            ],
            nets: vec![NetConfig {
                tap: "oxtap7".into(),
                mac: Some(MacAddress([0x52, 0x54, 0x00, 0x12, 0x34, 0x56])),
            }],
            rng: true,
            balloon: config.balloon,
            serial: SerialMode::Socket("/run/ox/run/8c3a/vmm-serial.sock".into()),
            api_socket: Some("/run/ox/run/8c3a/vmm-api.sock".into()),
            seccomp: SeccompMode::On,
            exit_record: Some("/run/ox/run/8c3a/vmm-exit.json".into()),
            restore: None,
            start_paused: false,
            jail: None,
        };
        assert_eq!(config, expected);
    }

    #[test]
    fn memballoon_becomes_the_balloon_and_current_memory_its_first_target() {
        let d = domain(
            "<memballoon model='virtio' autodeflate='on'><stats period='10'/></memballoon>",
            "<currentMemory unit='MiB'>128</currentMemory>",
        );
        let config = plan(&d, &RunPaths::new("/r")).unwrap();
        assert_eq!(
            config.balloon,
            Some(BalloonSettings {
                deflate_on_oom: true,
                stats_period_s: 10,
                target_kib: Some(128 * 1024),
            })
        );
        // The balloon every definition gets by default: no settings, the whole memory.
        let d = domain("", "");
        assert_eq!(
            plan(&d, &RunPaths::new("/r")).unwrap().balloon,
            Some(BalloonSettings::default())
        );
        let none = domain("<memballoon model='none'/>", "");
        assert_eq!(plan(&none, &RunPaths::new("/r")).unwrap().balloon, None);
        // Without a balloon nothing can take the guest below <memory>.
        let none = domain(
            "<memballoon model='none'/>",
            "<currentMemory unit='MiB'>128</currentMemory>",
        );
        let err = plan(&none, &RunPaths::new("/r")).unwrap_err().to_string();
        assert!(err.contains("<currentMemory> below <memory>"), "{err}");
    }

    #[test]
    fn a_minimal_domain_keeps_the_vmm_defaults() {
        let d = domain("", "<cpu mode='host-passthrough'/>");
        let config = plan(&d, &RunPaths::new("/r")).unwrap();
        assert_eq!(config.cpus.mode, CpuMode::HostPassthrough);
        assert!(!config.rng);
        assert!(!config.memory.hugepages);
        assert!(config.nets.is_empty());
        let without_cmdline = oxvirt_domain::parse_domain_xml(
            "<domain type='kvm'><name>n</name><memory unit='MiB'>64</memory>\
             <os><type>hvm</type><kernel>/k</kernel></os></domain>",
        )
        .unwrap();
        let config = plan(&without_cmdline, &RunPaths::new("/r")).unwrap();
        assert_eq!(config.cmdline, DEFAULT_CMDLINE);
    }

    #[test]
    fn the_plan_is_a_config_the_vmm_accepts() {
        let files = tempfile::tempdir().unwrap();
        let kernel = files.path().join("vmlinuz");
        std::fs::write(&kernel, b"k").unwrap();
        let mut d = domain(
            "<disk type='file' device='disk'><source file='/img/root.raw'/><target dev='vda' bus='virtio'/></disk>\
             <interface type='bridge'><source bridge='br0'/><model type='virtio'/></interface>",
            "<cpu mode='host-model'><topology sockets='2' cores='1' threads='1'/></cpu>",
        );
        d.os.kernel = Some(kernel.display().to_string());
        d.os.initrd = None;
        d.devices.interfaces[0].target_dev = Some("oxtap0".to_string());
        let config = plan(&d, &RunPaths::new(files.path())).unwrap();
        config.validate().unwrap();
        assert_eq!(VmConfig::from_json(&config.to_json()).unwrap(), config);
    }

    #[test]
    fn a_resolved_backing_chain_goes_into_the_disk_config() {
        let mut d = domain(
            "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
               <source file='/img/top.qcow2'/><target dev='vda' bus='virtio'/></disk>",
            "",
        );
        d.devices.disks[0].backing_chain = vec![
            BackingLayer {
                path: "/img/mid.qcow2".into(),
                format: DiskFormat::Qcow2,
            },
            BackingLayer {
                path: "/img/base.raw".into(),
                format: DiskFormat::Raw,
            },
        ];
        let config = plan(&d, &RunPaths::new("/r")).unwrap();
        assert_eq!(
            config.disks[0].backing_chain,
            Some(vec![
                BackingFile {
                    path: "/img/mid.qcow2".into(),
                    format: Format::Qcow2,
                },
                BackingFile {
                    path: "/img/base.raw".into(),
                    format: Format::Raw,
                },
            ])
        );
    }

    #[test]
    fn an_interface_without_a_tap_is_an_error_not_a_guess() {
        let d = domain(
            "<interface type='network'><source network='default'/><model type='virtio'/></interface>",
            "",
        );
        let err = plan(&d, &RunPaths::new("/r")).unwrap_err();
        assert!(err.to_string().contains("no TAP device"), "{err}");
        assert!(!err.is_unsupported());
        // At define time there is no TAP yet, and that is fine.
        check_definition(&d).unwrap();
    }

    #[test]
    fn each_unsupported_element_is_named() {
        let cases = [
            ("<graphics type='vnc'/>", "", "<graphics>"),
            ("<video><model type='vga'/></video>", "", "<video>"),
            (
                "<disk type='file' device='cdrom'><source file='/x.iso'/><target dev='hdc' bus='ide'/></disk>",
                "",
                "device='cdrom'",
            ),
            (
                "<disk type='file' device='disk'><driver name='qemu' type='qcow2' cache='none'/><source file='/x.qcow2'/><target dev='vda' bus='virtio'/></disk>",
                "",
                "type='qcow2' cache='none'",
            ),
            (
                "<disk type='file' device='disk'><source file='/x.raw'/><target dev='sda' bus='sata'/></disk>",
                "",
                "bus='sata'",
            ),
            ("<interface type='user'><model type='virtio'/></interface>", "", "type='user'"),
            (
                "<interface type='network'><source network='default'/><model type='e1000'/></interface>",
                "",
                "<model type='e1000'>",
            ),
            ("<input type='tablet' bus='usb'/>", "", "<input>"),
            ("<controller type='scsi' model='virtio-scsi'/>", "", "<controller type='scsi'>"),
            ("", "<on_crash>preserve</on_crash>", "<on_crash>preserve"),
            ("", "<clock offset='localtime'/>", "<clock offset='localtime'>"),
            ("", "<cpu mode='custom'><model>Skylake-Client</model></cpu>", "Skylake-Client"),
            (
                "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>",
                "",
                "<channel>",
            ),
            ("<sound model='ich6'/>", "", "<sound model='ich6'>"),
            (
                "<graphics type='spice'/><redirdev bus='usb' type='spicevmc'/>",
                "",
                "<redirdev>",
            ),
            ("", "<features><acpi/><vmport state='on'/></features>", "<features/vmport>"),
            ("", "<pm><suspend-to-mem enabled='yes'/></pm>", "<pm>"),
        ];
        for (devices, extra, element) in cases {
            let d = domain(devices, extra);
            let err = check_definition(&d).expect_err(element);
            assert!(err.is_unsupported(), "{element}: {err}");
            assert!(
                err.to_string().contains(element),
                "{element} not named in: {err}"
            );
            // A launch refuses it the same way.
            let at_launch = plan(&d, &RunPaths::new("/r")).expect_err(element);
            assert_eq!(at_launch.to_string(), err.to_string());
        }
    }

    #[test]
    fn firmware_boot_without_a_kernel_is_named() {
        let xml = "<domain type='kvm' xmlns:oxvirt='urn:oxvirt:domain:1.0'><name>n</name>\
                   <memory unit='MiB'>256</memory><os><type>hvm</type><loader>/usr/share/OVMF/OVMF_CODE.fd</loader></os>\
                   <oxvirt:engine name='native'/></domain>";
        let d = oxvirt_domain::parse_domain_xml(xml).unwrap();
        let message = check_definition(&d).unwrap_err().to_string();
        assert!(message.contains("<os><loader>"), "{message}");
        assert!(message.contains("<os> without <kernel>"), "{message}");
        assert!(
            message.starts_with("the native engine (<oxvirt:engine name='native'/>) cannot run: "),
            "{message}"
        );
    }

    /// The refusals of `xml`'s domain, as (element, line).
    fn refusals(xml: &str) -> Vec<(String, Option<u32>)> {
        let d = oxvirt_domain::parse_domain_xml(xml).unwrap();
        match check_definition(&d) {
            Err(NativeError::Unsupported { refusals }) => {
                refusals.into_iter().map(|r| (r.element, r.line)).collect()
            }
            other => panic!("expected refusals, got {other:?}"),
        }
    }

    /// The VMM has no IOThreads: the count, the listed ids and their pins are each refused.
    #[test]
    fn iothreads_are_refused_by_name() {
        let xml = |iothreads: &str| {
            format!(
                "<domain type='kvm' xmlns:oxvirt='urn:oxvirt:domain:1.0'>
  <name>n</name>
  <memory unit='MiB'>256</memory>
{iothreads}
  <os><type>hvm</type><kernel>/k</kernel></os>
  <oxvirt:engine name='native'/>
</domain>"
            )
        };
        let found = refusals(&xml("  <iothreads>2</iothreads>"));
        assert!(
            found.contains(&("<iothreads>".to_string(), Some(4))),
            "{found:?}"
        );
        let found = refusals(&xml("  <iothreadids><iothread id='3'/></iothreadids>
  <cputune><iothreadpin iothread='3' cpuset='0'/></cputune>"));
        assert!(
            found.contains(&("<iothreadids>".to_string(), Some(4))),
            "{found:?}"
        );
        assert!(
            found.contains(&("<cputune/iothreadpin>".to_string(), Some(5))),
            "{found:?}"
        );
    }

    /// A native domain with `tunes` (elements of `<domain>`) and two vCPUs.
    fn tuned(tunes: &str) -> Domain {
        oxvirt_domain::parse_domain_xml(&format!(
            "<domain type='kvm' xmlns:oxvirt='urn:oxvirt:domain:1.0'>
  <name>n</name>
  <memory unit='MiB'>256</memory>
  <vcpu>2</vcpu>
{tunes}
  <os><type>hvm</type><kernel>/k</kernel></os>
  <oxvirt:engine name='native'/>
</domain>"
        ))
        .unwrap()
    }

    /// What the daemon applies to the VMM's process and threads (cgroups, CPU affinity) is not
    /// the VMM's: the tunes are accepted and leave its config as it is without them. A hard
    /// limit below `<memory>` is accepted too (libvirt starts such a guest).
    #[test]
    fn cgroup_and_pinning_tunes_are_accepted() {
        let tunes = "  <cputune><shares>512</shares><period>100000</period><quota>20000</quota>
    <vcpupin vcpu='0' cpuset='0'/><vcpupin vcpu='1' cpuset='1'/><emulatorpin cpuset='0-1'/>
    <emulator_period>50000</emulator_period><emulator_quota>25000</emulator_quota></cputune>
  <memtune><hard_limit unit='MiB'>192</hard_limit><soft_limit unit='MiB'>128</soft_limit>
    <swap_hard_limit unit='MiB'>512</swap_hard_limit></memtune>
  <blkiotune><weight>500</weight>
    <device><path>/dev/loop0</path><read_bytes_sec>1048576</read_bytes_sec></device></blkiotune>";
        let d = tuned(tunes);
        assert!(d.cputune.is_some() && d.memtune.is_some() && d.blkiotune.is_some());
        check_definition(&d).unwrap();
        let run = RunPaths::new("/r");
        assert_eq!(plan(&d, &run).unwrap(), plan(&tuned(""), &run).unwrap());
    }

    /// What the native engine still refuses of the tunes: pins of I/O threads it does not have
    /// (`iothreads_are_refused_by_name`) and `<min_guarantee>`, which has no cgroup counterpart.
    #[test]
    fn min_guarantee_is_refused_by_name() {
        let found = refusals(
            "<domain type='kvm' xmlns:oxvirt='urn:oxvirt:domain:1.0'>
  <name>n</name>
  <memory unit='MiB'>256</memory>
  <memtune><hard_limit unit='MiB'>512</hard_limit><min_guarantee unit='MiB'>64</min_guarantee></memtune>
  <os><type>hvm</type><kernel>/k</kernel></os>
  <oxvirt:engine name='native'/>
</domain>",
        );
        assert_eq!(
            found,
            vec![("<memtune><min_guarantee>".to_string(), Some(4))]
        );
    }

    #[test]
    fn refusals_say_the_line_of_the_element() {
        let xml = "<domain type='kvm' xmlns:oxvirt='urn:oxvirt:domain:1.0'>
  <name>n</name>
  <memory unit='MiB'>256</memory>
  <os><type>hvm</type><kernel>/k</kernel></os>
  <devices>
    <disk type='file' device='disk'>
      <source file='/img/a.raw'/>
      <driver name='qemu' type='raw' cache='writeback' io='native'/>
      <target dev='vda' bus='virtio'/>
      <iotune><total_iops_sec>50</total_iops_sec></iotune>
    </disk>
    <interface type='bridge'>
      <source bridge='br0'/>
      <model type='virtio'/>
      <driver name='vhost'/>
    </interface>
    <graphics type='vnc'/>
  </devices>
  <oxvirt:engine name='native'/>
</domain>";
        let found = refusals(xml);
        let expect = [
            ("<disk> vda: <driver io='native'>", Some(8)),
            ("<disk> vda: <iotune>", Some(10)),
            ("<interface> #0: <driver name='vhost'>", Some(15)),
            ("<graphics>", Some(17)),
            // libvirt adds a cirrus video for a display: the definition has no line for it.
            ("<video>", None),
        ];
        for (element, line) in expect {
            assert!(
                found.contains(&(element.to_string(), line)),
                "{element} at {line:?} not in {found:?}"
            );
        }
        let d = oxvirt_domain::parse_domain_xml(xml).unwrap();
        let message = check_definition(&d).unwrap_err().to_string();
        assert!(
            message.contains("<disk> vda: <driver io='native'> at line 8 (not implemented")
                && message.contains("<disk> vda: <iotune> at line 10 (no I/O throttling")
                && message.contains("<video> (added by default) (no display)"),
            "{message}"
        );
    }

    #[test]
    fn an_added_default_is_named_as_such() {
        // An IDE disk makes the normalizer add IDE controller 0, which the VMM has no bus for;
        // a NIC without <model> gets libvirt's default model, rtl8139.
        let found = refusals(
            "<domain type='kvm'>\n<name>n</name><memory unit='MiB'>64</memory>\n\
             <os><type>hvm</type><kernel>/k</kernel></os><devices>\n\
             <disk type='file'><source file='/x'/><target dev='hda' bus='ide'/></disk>\n\
             <interface type='bridge'><source bridge='br0'/></interface>\n\
             </devices><oxvirt:engine name='native' xmlns:oxvirt='urn:oxvirt:domain:1.0'/></domain>",
        );
        assert!(
            found.contains(&("<controller type='ide'>".to_string(), None)),
            "{found:?}"
        );
        assert!(
            found.contains(&("<disk> hda: <target bus='ide'>".to_string(), Some(4))),
            "{found:?}"
        );
        assert!(
            found.contains(&("<interface> #0: <model type='rtl8139'>".to_string(), None)),
            "{found:?}"
        );
    }

    #[test]
    fn the_defaults_every_definition_gets_are_accepted() {
        // Normalization adds a USB controller, pci-root, PS/2 inputs, a virtio balloon and a
        // console alias of the serial port: none of that may block the native engine.
        let d = domain("<serial type='pty'/><console type='pty'/>", "");
        check_definition(&d).unwrap();
    }
}
