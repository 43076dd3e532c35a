//! Cross-field checks on a (normalized) domain.

use std::collections::HashSet;

use crate::error::{DomainError, Location};
use crate::model::*;
use crate::names::{CHAR_TARGET_TYPES, CONTROLLER_MODELS, NIC_MODELS, SERIAL_TARGET_MODELS};
use crate::rules::{
    disk_index, is_disk_serial, is_host_ifname, is_q35, validate_name, MAX_CONTROLLER_INDEX,
};

/// The most vCPUs QEMU 7.2 accepts for the machine type (i440fx: 255, q35: 288).
fn max_vcpus(machine: &str) -> u32 {
    if is_q35(machine) {
        288
    } else {
        255
    }
}

fn invalid(path: &str, reason: impl Into<String>) -> DomainError {
    DomainError::Invalid {
        reason: reason.into(),
        location: Location::new(path, None),
    }
}

/// Text that XML 1.0 cannot carry (control characters other than tab/newline/CR).
fn check_text(path: &str, what: &str, text: &str) -> Result<(), DomainError> {
    if text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        return Err(invalid(
            path,
            format!("{what} contains a control character"),
        ));
    }
    Ok(())
}

/// Guest NUMA cells and `<numatune>`, with libvirt 9.0's rules.
fn validate_numa(d: &Domain) -> Result<(), DomainError> {
    let cells = d.cpu.as_ref().map_or(&[][..], |c| &c.numa[..]);
    let at = |path: &str, line: SourceLine, reason: String| DomainError::Invalid {
        reason,
        location: Location::new(path, line.get()),
    };
    let mut seen: Vec<(usize, u32)> = Vec::new();
    for (id, cell) in cells.iter().enumerate() {
        if cell.memory_kib == 0 {
            return Err(at(
                "cpu/numa/cell",
                cell.line,
                format!("NUMA cell {id} has no memory"),
            ));
        }
        for cpu in cell.cpus.iter().flat_map(|c| c.iter()) {
            if cpu >= d.vcpu.max {
                return Err(at(
                    "cpu/numa/cell",
                    cell.line,
                    "Number of CPUs in <numa> exceeds the <vcpu> count".to_string(),
                ));
            }
            if let Some((other, _)) = seen.iter().find(|(_, c)| *c == cpu) {
                return Err(at(
                    "cpu/numa/cell",
                    cell.line,
                    format!("NUMA cells {id} and {other} have overlapping vCPU ids"),
                ));
            }
            seen.push((id, cpu));
        }
    }
    let Some(tune) = &d.numatune else {
        return Ok(());
    };
    for node in &tune.memnodes {
        if cells.is_empty() {
            return Err(at(
                "numatune/memnode",
                node.line,
                "<memnode> is invalid without any guest NUMA cells".to_string(),
            ));
        }
        if node.cellid as usize >= cells.len() {
            return Err(at(
                "numatune/memnode",
                node.line,
                format!(
                    "cellid {} in memnode must correspond to existing guest's NUMA cell",
                    node.cellid
                ),
            ));
        }
    }
    Ok(())
}

pub(crate) fn validate(d: &Domain) -> Result<(), DomainError> {
    validate_name(&d.name)?;
    if let Some(title) = &d.title {
        check_text("title", "title", title)?;
        if title.contains(['\n', '\r']) {
            return Err(invalid("title", "title must be a single line"));
        }
    }
    if let Some(description) = &d.description {
        check_text("description", "description", description)?;
    }
    validate_memory(d)?;
    if let Some(tune) = &d.blkiotune {
        validate_blkiotune(tune)?;
    }
    validate_vcpus(d)?;
    validate_numa(d)?;
    validate_os(d)?;
    validate_lifecycle(d)?;
    validate_clock(d)?;
    validate_devices(d)?;
    Ok(())
}

/// `<blkiotune>`: weights in libvirt's documented range (libvirt itself leaves them to the
/// kernel at start), device paths absolute (libvirt's schema: whether each is a block device
/// is checked when the guest starts, on the host it starts on).
pub fn validate_blkiotune(tune: &BlkioTune) -> Result<(), DomainError> {
    let at = |path: &str, reason: String| DomainError::Invalid {
        reason,
        location: Location::new(path, tune.line.get()),
    };
    let weight_ok = |w: Option<u32>| w.is_none_or(|w| BLKIO_WEIGHT_RANGE.contains(&w));
    if !weight_ok(tune.weight) {
        return Err(at(
            "blkiotune/weight",
            format!(
                "I/O weight {} is out of range [{}, {}]",
                tune.weight.unwrap_or(0),
                BLKIO_WEIGHT_RANGE.start(),
                BLKIO_WEIGHT_RANGE.end()
            ),
        ));
    }
    for device in &tune.devices {
        check_text("blkiotune/device/path", "device path", &device.path)?;
        if !device.path.starts_with('/') {
            return Err(at(
                "blkiotune/device/path",
                format!("device path '{}' is not an absolute path", device.path),
            ));
        }
        if !weight_ok(device.weight) {
            return Err(at(
                "blkiotune/device/weight",
                format!(
                    "I/O weight {} of device '{}' is out of range [{}, {}]",
                    device.weight.unwrap_or(0),
                    device.path,
                    BLKIO_WEIGHT_RANGE.start(),
                    BLKIO_WEIGHT_RANGE.end()
                ),
            ));
        }
    }
    Ok(())
}

/// libvirt's QEMU driver has no `platform` timer (it refuses it at define).
fn validate_clock(d: &Domain) -> Result<(), DomainError> {
    let () = match d
        .clock
        .timers
        .iter()
        .find(|t| t.name == TimerName::Platform)
    {
        Some(timer) => Err(DomainError::UnsupportedValue {
            attribute: "attribute 'name'".to_string(),
            value: "platform".to_string(),
            supported: "pit, rtc, hpet, tsc, kvmclock, hypervclock".to_string(),
            location: Location::new("clock/timer", timer.line.get()),
        }),
        None => Ok(()),
    }?;
    // The tick policies libvirt's QEMU driver can set (libvirt 9.0 refuses the others).
    for timer in &d.clock.timers {
        let Some(policy) = timer.tickpolicy else {
            continue;
        };
        let name = match policy {
            TickPolicy::Delay => "delay",
            TickPolicy::Catchup => "catchup",
            TickPolicy::Merge => "merge",
            TickPolicy::Discard => "discard",
        };
        let reason = match (timer.name, policy) {
            (TimerName::Kvmclock, _) => {
                Some("timer kvmclock doesn't support setting of timer tickpolicy".to_string())
            }
            (TimerName::Rtc, TickPolicy::Merge | TickPolicy::Discard) => {
                Some(format!("unsupported rtc timer tickpolicy '{name}'"))
            }
            (TimerName::Pit, TickPolicy::Merge) => {
                Some(format!("unsupported pit tickpolicy '{name}'"))
            }
            _ => None,
        };
        if let Some(reason) = reason {
            return Err(DomainError::Invalid {
                reason,
                location: Location::new("clock/timer", timer.line.get()),
            });
        }
    }
    Ok(())
}

fn validate_memory(d: &Domain) -> Result<(), DomainError> {
    if d.memory_kib == 0 {
        return Err(invalid("memory", "memory size must be greater than zero"));
    }
    if d.current_memory_kib == 0 || d.current_memory_kib > d.memory_kib {
        return Err(invalid(
            "currentMemory",
            format!(
                "currentMemory ({} KiB) must be between 1 KiB and memory ({} KiB)",
                d.current_memory_kib, d.memory_kib
            ),
        ));
    }
    if let Some(max) = &d.max_memory {
        if max.kib < d.memory_kib {
            return Err(invalid(
                "maxMemory",
                format!(
                    "maxMemory ({} KiB) is less than memory ({} KiB)",
                    max.kib, d.memory_kib
                ),
            ));
        }
    }
    if let Some(backing) = &d.memory_backing {
        if backing.hugepages.is_some() && backing.source == Some(MemorySource::Anonymous) {
            return Err(DomainError::Invalid {
                reason: "hugepages are not allowed with anonymous memory source".to_string(),
                location: Location::new("memoryBacking", backing.line.get()),
            });
        }
    }
    if let Some(huge) = d.memory_backing.as_ref().and_then(|b| b.hugepages.as_ref()) {
        let mut seen = HashSet::new();
        for size in &huge.page_sizes_kib {
            if *size == 0 || !seen.insert(*size) {
                return Err(invalid(
                    "memoryBacking/hugepages/page",
                    format!("huge page size {size} KiB is zero or listed twice"),
                ));
            }
        }
    }
    Ok(())
}

/// `<vcpus>`, with libvirt's words: ids below the maximum; vCPU 0 online, not hotpluggable.
fn validate_vcpu_slots(vcpu: &Vcpu) -> Result<(), DomainError> {
    if let Some(slot) = vcpu.slots.iter().find(|slot| slot.id >= vcpu.max) {
        return Err(invalid(
            "vcpus/vcpu",
            format!(
                "vcpu id '{}' is out of range of maximum vcpu count",
                slot.id
            ),
        ));
    }
    match vcpu.slots.first() {
        Some(first) if !first.enabled => Err(invalid("vcpus/vcpu", "vcpu 0 can't be offline")),
        Some(first) if first.hotpluggable == Some(true) => {
            Err(invalid("vcpus/vcpu", "vcpu0 can't be hotpluggable"))
        }
        _ => Ok(()),
    }
}

fn validate_vcpus(d: &Domain) -> Result<(), DomainError> {
    let max = d.vcpu.max;
    let limit = max_vcpus(&d.os.machine);
    if max == 0 || max > limit {
        return Err(invalid(
            "vcpu",
            format!(
                "vCPU count {max} must be between 1 and {limit} for machine '{}'",
                d.os.machine
            ),
        ));
    }
    validate_vcpu_slots(&d.vcpu)?;
    if let Some(current) = d.vcpu.current {
        if current == 0 || current > max {
            return Err(invalid(
                "vcpu",
                format!("current vCPUs {current} must be between 1 and {max}"),
            ));
        }
    }
    if let Some(cpuset) = &d.vcpu.cpuset {
        if cpuset.is_empty() {
            return Err(invalid("vcpu", "cpuset is empty"));
        }
    }
    if let Some(topology) = d.cpu.as_ref().and_then(|c| c.topology) {
        let counts = [
            topology.sockets,
            topology.dies,
            topology.clusters,
            topology.cores,
            topology.threads,
        ];
        if counts.contains(&0) {
            return Err(invalid(
                "cpu/topology",
                "topology counts must be at least 1",
            ));
        }
        if topology.total() != Some(max) {
            return Err(invalid(
                "cpu/topology",
                format!(
                    "topology {}x{}x{}x{}x{} (sockets x dies x clusters x cores x threads) does not equal the maximum vCPU count {max}",
                    topology.sockets, topology.dies, topology.clusters, topology.cores, topology.threads
                ),
            ));
        }
    }
    if let Some(cpu) = &d.cpu {
        if cpu.vendor.is_some() && cpu.model.is_none() {
            return Err(invalid(
                "cpu/vendor",
                "CPU vendor specified without CPU model",
            ));
        }
        if cpu.mode == CpuMode::Custom && cpu.model.is_none() && !cpu.features.is_empty() {
            return Err(invalid(
                "cpu",
                "CPU features need a CPU model in custom mode",
            ));
        }
        for feature in &cpu.features {
            check_text("cpu/feature", "feature name", &feature.name)?;
            if feature.name.is_empty() {
                return Err(invalid("cpu/feature", "feature name is empty"));
            }
        }
        if let Some(model) = &cpu.model {
            if model.name.is_empty() || model.name.chars().any(char::is_control) {
                return Err(invalid(
                    "cpu/model",
                    "CPU model name is empty or has control characters",
                ));
            }
        }
    }
    if let Some(tune) = &d.cputune {
        let mut pinned = HashSet::new();
        for pin in &tune.vcpupins {
            if pin.vcpu >= max {
                return Err(invalid(
                    "cputune/vcpupin",
                    format!(
                        "vcpupin for vCPU {} but the domain has {max} vCPUs",
                        pin.vcpu
                    ),
                ));
            }
            if !pinned.insert(pin.vcpu) {
                return Err(invalid(
                    "cputune/vcpupin",
                    format!("vCPU {} is pinned twice", pin.vcpu),
                ));
            }
            if pin.cpuset.is_empty() {
                return Err(invalid("cputune/vcpupin", "cpuset is empty"));
            }
        }
        let mut pinned = HashSet::new();
        for pin in &tune.iothreadpins {
            let at = |reason: String| DomainError::Invalid {
                reason,
                location: Location::new("cputune/iothreadpin", pin.line.get()),
            };
            if !d.iothreads.contains(pin.iothread) {
                return Err(at(format!(
                    "iothreadpin for IOThread {} but the domain has {} IOThreads (ids: {})",
                    pin.iothread,
                    d.iothreads.len(),
                    d.iothreads.list()
                )));
            }
            if !pinned.insert(pin.iothread) {
                return Err(at(format!("IOThread {} is pinned twice", pin.iothread)));
            }
            if pin.cpuset.is_empty() {
                return Err(at("cpuset is empty".to_string()));
            }
        }
        if tune.emulatorpin.as_ref().is_some_and(CpuSet::is_empty) {
            return Err(invalid("cputune/emulatorpin", "cpuset is empty"));
        }
        let period_ok =
            |p: Option<u64>| p.is_none_or(|p| p == 0 || (1000..=1_000_000).contains(&p));
        let quota_ok = |q: Option<i64>| {
            q.is_none_or(|q| q == -1 || q == 0 || (1000..=17_592_186_044_415).contains(&q))
        };
        if !period_ok(tune.period) || !period_ok(tune.emulator_period) {
            return Err(invalid(
                "cputune",
                "period must be 1000..1000000 microseconds",
            ));
        }
        if !quota_ok(tune.quota) || !quota_ok(tune.emulator_quota) {
            return Err(invalid(
                "cputune",
                "quota must be -1 or 1000..17592186044415 microseconds",
            ));
        }
        if tune.shares.is_some_and(|s| s > 262_144) {
            return Err(invalid("cputune/shares", "shares must be at most 262144"));
        }
    }
    Ok(())
}

fn validate_os(d: &Domain) -> Result<(), DomainError> {
    if d.os.arch != "x86_64" {
        return Err(invalid(
            "os/type",
            format!("architecture '{}' is not supported; only x86_64", d.os.arch),
        ));
    }
    if d.os.machine.is_empty()
        || d.os
            .machine
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ',')
    {
        return Err(invalid(
            "os/type",
            format!("machine type '{}' is not valid", d.os.machine),
        ));
    }
    let per_device_boot = d.devices.disks.iter().any(|x| x.boot_order.is_some())
        || d.devices.interfaces.iter().any(|x| x.boot_order.is_some())
        || d.devices.hostdevs.iter().any(|x| x.boot_order.is_some());
    if per_device_boot && !d.os.boot.is_empty() {
        return Err(invalid(
            "os/boot",
            "per-device <boot order> cannot be combined with <os><boot dev>",
        ));
    }
    let mut seen = HashSet::new();
    for dev in &d.os.boot {
        if !seen.insert(*dev) {
            return Err(invalid("os/boot", "a boot device is listed twice"));
        }
    }
    for (what, value) in [
        ("kernel", &d.os.kernel),
        ("initrd", &d.os.initrd),
        ("cmdline", &d.os.cmdline),
    ] {
        if let Some(v) = value {
            check_text(&format!("os/{what}"), what, v)?;
        }
    }
    if d.os.initrd.is_some() && d.os.kernel.is_none() {
        return Err(invalid("os/initrd", "an initrd needs a kernel"));
    }
    if let Some(t) = d.os.bios_reboot_timeout {
        if !(-1..=65535).contains(&t) {
            return Err(invalid("os/bios", "rebootTimeout must be -1 to 65535"));
        }
    }
    if d.os.firmware == Some(Firmware::Bios) && d.os.nvram.is_some() {
        return Err(invalid(
            "os/nvram",
            "firmware type 'bios' does not support nvram",
        ));
    }
    // Without firmware autoselection the loader must name its file (libvirt: "no loader path
    // specified and firmware auto selection disabled").
    if d.os.firmware.is_none() && d.os.loader.as_ref().is_some_and(|l| l.path.is_none()) {
        return Err(invalid(
            "os/loader",
            "no loader path specified and firmware auto selection disabled",
        ));
    }
    let uefi = d.os.firmware == Some(Firmware::Efi)
        || d.os
            .loader
            .as_ref()
            .is_some_and(|l| l.loader_type == Some(LoaderType::Pflash));
    if uefi && !d.features.acpi {
        return Err(invalid(
            "os",
            "UEFI firmware requires <features><acpi/></features> on x86_64",
        ));
    }
    if let Some(menu) = &d.os.bootmenu {
        if menu.timeout.is_some_and(|t| t > 65535) {
            return Err(invalid("os/bootmenu", "timeout must be at most 65535"));
        }
    }
    Ok(())
}

/// libvirt's rules plus its QEMU driver's (checked against libvirt 9.0 `virsh define`).
fn validate_lifecycle(d: &Domain) -> Result<(), DomainError> {
    use LifecycleAction::*;
    for (path, action) in [("on_poweroff", d.on_poweroff), ("on_reboot", d.on_reboot)] {
        if matches!(action, CoredumpDestroy | CoredumpRestart) {
            return Err(invalid(
                path,
                "coredump-destroy and coredump-restart are only valid for on_crash",
            ));
        }
        if action == Preserve {
            return Err(invalid(
                path,
                "'preserve' is only supported for on_crash by the QEMU driver",
            ));
        }
    }
    for (path, action) in [
        ("on_poweroff", d.on_poweroff),
        ("on_reboot", d.on_reboot),
        ("on_crash", d.on_crash),
    ] {
        if action == RenameRestart {
            return Err(invalid(
                path,
                "'rename-restart' is not supported by the QEMU driver",
            ));
        }
    }
    if d.on_reboot == Destroy && d.on_poweroff == Restart {
        return Err(invalid(
            "on_reboot",
            "on_reboot 'destroy' together with on_poweroff 'restart' is not supported by the QEMU driver",
        ));
    }
    Ok(())
}

fn validate_devices(d: &Domain) -> Result<(), DomainError> {
    let devices = &d.devices;
    if let Some(emulator) = &devices.emulator {
        if !emulator.starts_with('/') || emulator.chars().any(char::is_control) {
            return Err(invalid(
                "devices/emulator",
                format!("emulator '{emulator}' must be an absolute path"),
            ));
        }
    }
    // The PIIX3 IDE controller of a pc machine is the only one; q35 has none (libvirt 9.0
    // refuses both, also when a disk name like hde asks for a second controller).
    for controller in &devices.controllers {
        if controller.controller_type == ControllerType::Ide {
            if is_q35(&d.os.machine) {
                return Err(invalid(
                    "devices/controller",
                    "IDE controllers are unsupported for this QEMU binary or machine type",
                ));
            }
            if controller.index > 0 {
                return Err(invalid(
                    "devices/controller",
                    "Only a single IDE controller is supported for this machine type",
                ));
            }
        }
    }
    let mut targets = HashSet::new();
    let mut boot_orders = HashSet::new();
    for disk in &devices.disks {
        let path = "devices/disk";
        if !targets.insert(disk.target.dev.as_str()) {
            return Err(invalid(
                path,
                format!("target '{}' is used by two disks", disk.target.dev),
            ));
        }
        if disk_index(&disk.target.dev).is_none() {
            return Err(invalid(
                path,
                format!(
                    "target '{}' is not a disk name like vda, sdb, hdc (prefix hd/sd/vd/fd/xvd/ubd, then letters)",
                    disk.target.dev
                ),
            ));
        }
        validate_disk_source_kind(path, disk)?;
        let has_medium = disk.source.is_some() || disk.volume.is_some() || disk.network.is_some();
        match (&disk.source, disk.device) {
            (None, DiskDevice::Disk) if !has_medium => {
                return Err(invalid(
                    path,
                    format!("disk '{}' has no source", disk.target.dev),
                ));
            }
            (None, DiskDevice::Cdrom) if !has_medium && disk.target.bus == DiskBus::Usb => {
                return Err(invalid(
                    path,
                    format!("'usb' disk '{}' must not be empty", disk.target.dev),
                ));
            }
            (Some(source), _) if source.is_empty() || source.chars().any(char::is_control) => {
                return Err(invalid(
                    path,
                    format!("disk '{}' has an invalid source path", disk.target.dev),
                ));
            }
            _ => {}
        }
        if disk.device == DiskDevice::Cdrom && disk.target.bus == DiskBus::Virtio {
            return Err(invalid(path, "a cdrom cannot be on the virtio bus"));
        }
        if disk.target.bus == DiskBus::Fdc {
            return Err(invalid(path, "floppy disks are not supported"));
        }
        if let Some(thread) = disk.driver.iothread {
            if disk.target.bus != DiskBus::Virtio {
                return Err(invalid(path, "iothread is only valid for virtio disks"));
            }
            if !d.iothreads.contains(thread) {
                return Err(DomainError::Invalid {
                    reason: format!(
                        "disk '{}' uses IOThread {thread} but the domain has {} IOThreads (ids: {})",
                        disk.target.dev,
                        d.iothreads.len(),
                        d.iothreads.list()
                    ),
                    location: Location::new("devices/disk/driver", disk.driver.line.get()),
                });
            }
        }
        // Two guests writing one qcow2 image corrupt it: libvirt 9.0 refuses a shareable,
        // writable disk in a format without concurrent access.
        if disk.shareable
            && !disk.readonly
            && disk.driver.format == DiskFormat::Qcow2
            && disk.driver.format_stated
        {
            return Err(invalid(
                path,
                format!(
                    "shared access for disk '{}' requires use of supported storage format",
                    disk.target.dev
                ),
            ));
        }
        if disk.driver.queues.is_some() && disk.target.bus != DiskBus::Virtio {
            // libvirt 9.0 refuses queues there, but lets queue_size through (QEMU then fails
            // at start; the qemu engine refuses it at define).
            return Err(DomainError::Invalid {
                reason: format!(
                    "disk '{}': queues is only supported by virtio disks",
                    disk.target.dev
                ),
                location: Location::new("devices/disk/driver", disk.driver.line.get()),
            });
        }
        if let Some(serial) = &disk.serial {
            if !is_disk_serial(serial) {
                return Err(invalid(
                    path,
                    "serial may only contain A-Z a-z 0-9 _ + - . and space",
                ));
            }
        }
        if let Some(order) = disk.boot_order {
            if order == 0 || !boot_orders.insert(order) {
                return Err(invalid(
                    path,
                    format!("boot order {order} is zero or used twice"),
                ));
            }
        }
        if let Some(tune) = &disk.iotune {
            tune.check().map_err(|reason| DomainError::Invalid {
                reason: format!("disk '{}': {reason}", disk.target.dev),
                location: Location::new("devices/disk/iotune", disk.iotune_line.get()),
            })?;
        }
        validate_address(path, &disk.address)?;
        validate_disk_address(disk)?;
    }
    let mut controllers = HashSet::new();
    for c in &devices.controllers {
        // An ICH9 USB2 set (EHCI and its UHCI companions) is one USB bus: one index.
        let ich9 = |c: &Controller| {
            c.controller_type == ControllerType::Usb
                && c.model.as_deref().is_some_and(|m| m.starts_with("ich9-"))
        };
        let mixed_set = ich9(c)
            && devices.controllers.iter().any(|o| {
                o.controller_type == ControllerType::Usb && o.index == c.index && !ich9(o)
            });
        let companion = c.controller_type == ControllerType::Usb
            && matches!(
                c.model.as_deref(),
                Some("ich9-uhci1" | "ich9-uhci2" | "ich9-uhci3")
            );
        if companion
            && !devices.controllers.iter().any(|o| {
                o.controller_type == ControllerType::Usb
                    && o.index == c.index
                    && o.model.as_deref() == Some("ich9-ehci1")
            })
        {
            return Err(DomainError::Invalid {
                reason: format!(
                    "No master USB controller specified: a {} needs the ich9-ehci1 of index {}",
                    c.model.as_deref().unwrap_or_default(),
                    c.index
                ),
                location: Location::new("devices/controller", c.line.get()),
            });
        }
        if c.master_startport.is_some() && !companion {
            return Err(DomainError::Invalid {
                reason: "No master USB controller specified: <master> is for the UHCI companions (ich9-uhci1..3) of an ich9-ehci1".to_string(),
                location: Location::new("devices/controller/master", c.master_line.get()),
            });
        }
        if let (Some(ports), Some(model @ ("qemu-xhci" | "nec-xhci"))) =
            (c.ports, c.model.as_deref())
        {
            if ports > 15 {
                return Err(DomainError::Invalid {
                    reason: format!("'{model}' controller only supports up to '15' ports"),
                    location: Location::new("devices/controller", c.line.get()),
                });
            }
        }
        let key_model = if ich9(c) { c.model.clone() } else { None };
        if mixed_set || !controllers.insert((c.controller_type, c.index, key_model)) {
            return Err(invalid(
                "devices/controller",
                format!(
                    "two {:?} controllers with index {}",
                    c.controller_type, c.index
                ),
            ));
        }
        if c.index > MAX_CONTROLLER_INDEX {
            return Err(invalid(
                "devices/controller",
                format!("controller index {} is too large", c.index),
            ));
        }
        if let Some(model) = &c.model {
            if !CONTROLLER_MODELS.contains(&model.as_str()) {
                return Err(invalid(
                    "devices/controller",
                    format!("unknown controller model '{model}'"),
                ));
            }
        }
        validate_address("devices/controller", &c.address)?;
    }
    for iface in &devices.interfaces {
        let path = "devices/interface";
        match (&iface.interface_type, &iface.source) {
            (InterfaceType::User, InterfaceSource::None)
            | (InterfaceType::Network, InterfaceSource::Network(_))
            | (InterfaceType::Bridge, InterfaceSource::Bridge(_))
            | (InterfaceType::Ethernet, InterfaceSource::None)
            | (InterfaceType::Direct, InterfaceSource::Direct { .. }) => {}
            _ => return Err(invalid(path, "interface source does not match its type")),
        }
        if iface.target_managed == Some(false) && iface.interface_type != InterfaceType::Ethernet {
            return Err(invalid(
                path,
                "unmanaged target dev is only supported on interfaces of type 'ethernet'",
            ));
        }
        match &iface.source {
            InterfaceSource::Network(n) | InterfaceSource::Bridge(n)
                if n.is_empty() || n.chars().any(char::is_control) =>
            {
                return Err(invalid(
                    path,
                    "interface source name is empty or has control characters",
                ));
            }
            _ => {}
        }
        if let Some(mac) = &iface.mac {
            if mac.0[0] & 1 == 1 {
                return Err(invalid(path, format!("MAC {mac} is a multicast address")));
            }
        }
        if let Some(model) = &iface.model {
            if !NIC_MODELS.contains(&model.as_str()) {
                return Err(invalid(path, format!("unknown NIC model '{model}'")));
            }
        }
        if let Some(dev) = &iface.target_dev {
            if !is_host_ifname(dev) {
                return Err(invalid(
                    path,
                    format!("target dev '{dev}' is not a valid interface name"),
                ));
            }
        }
        if iface.driver_queues == Some(0) {
            return Err(invalid(path, "driver queues must be at least 1"));
        }
        if let Some(mtu) = iface.mtu {
            // libvirt 9.0 sets an MTU only on the host side of a tap device.
            if iface.interface_type == InterfaceType::User {
                return Err(invalid(
                    path,
                    "setting MTU on interface type user is not supported",
                ));
            }
            if !(68..=65535).contains(&mtu) {
                return Err(invalid(path, format!("MTU {mtu} must be 68..65535")));
            }
        }
        if let Some(order) = iface.boot_order {
            if order == 0 || !boot_orders.insert(order) {
                return Err(invalid(
                    path,
                    format!("boot order {order} is zero or used twice"),
                ));
            }
        }
        validate_address(path, &iface.address)?;
    }
    let mut host_sources = HashSet::new();
    for hostdev in &devices.hostdevs {
        let path = "devices/hostdev";
        if !host_sources.insert(&hostdev.source) {
            return Err(invalid(
                path,
                "the same host device is given to the guest twice",
            ));
        }
        if let Some(order) = hostdev.boot_order {
            if order == 0 || !boot_orders.insert(order) {
                return Err(invalid(
                    path,
                    format!("boot order {order} is zero or used twice"),
                ));
            }
        }
        match (&hostdev.source, &hostdev.address) {
            (_, None) | (HostDevSource::Pci { .. }, Some(Address::Pci(_))) => {}
            (HostDevSource::Usb { .. }, Some(Address::Usb(_))) => {}
            (HostDevSource::Pci { .. }, Some(_)) => {
                return Err(invalid(
                    path,
                    "a PCI host device takes a PCI address in the guest",
                ))
            }
            (HostDevSource::Usb { .. }, Some(_)) => {
                return Err(invalid(
                    path,
                    "a USB host device takes a USB address in the guest",
                ))
            }
        }
        validate_address(path, &hostdev.address)?;
    }
    for (path, list) in [
        ("devices/serial", &devices.serials),
        ("devices/console", &devices.consoles),
    ] {
        for dev in list {
            match &dev.source {
                CharSource::File { path: p, .. } | CharSource::Unix { path: p, .. } => {
                    if p.is_empty() || p.chars().any(char::is_control) {
                        return Err(invalid(
                            path,
                            "source path is empty or has control characters",
                        ));
                    }
                }
                CharSource::Tcp { host, service, .. } => {
                    for text in [host, service] {
                        if text.is_empty() || text.chars().any(char::is_control) {
                            return Err(invalid(
                                path,
                                "tcp source host or service is empty or has control characters",
                            ));
                        }
                    }
                }
                CharSource::Udp {
                    bind_host,
                    bind_service,
                    connect_host,
                    connect_service,
                } => {
                    let texts = [bind_host, bind_service, connect_host]
                        .into_iter()
                        .flatten()
                        .chain([connect_service]);
                    for text in texts {
                        if text.is_empty() || text.chars().any(char::is_control) {
                            return Err(invalid(
                                path,
                                "udp source host or service is empty or has control characters",
                            ));
                        }
                    }
                }
                CharSource::Pty | CharSource::Null | CharSource::Stdio | CharSource::Vc => {}
            }
            if let Some(t) = &dev.target.target_type {
                if !CHAR_TARGET_TYPES.contains(&t.as_str()) {
                    return Err(invalid(path, format!("unknown target type '{t}'")));
                }
            }
            if let Some(m) = &dev.target.model {
                if !SERIAL_TARGET_MODELS.contains(&m.as_str()) {
                    return Err(invalid(path, format!("unknown target model '{m}'")));
                }
            }
        }
    }
    if devices
        .consoles
        .iter()
        .skip(1)
        .any(|c| c.target.target_type.as_deref() == Some("serial"))
    {
        return Err(invalid(
            "devices/console",
            "Only the first console can be a serial port",
        ));
    }
    // libvirt defines two serials on one port but then fails to load that config again.
    let mut serial_ports = HashSet::new();
    for serial in &devices.serials {
        if let Some(port) = serial.target.port {
            if !serial_ports.insert(port) {
                return Err(invalid(
                    "devices/serial",
                    format!("two serial ports use port {port}"),
                ));
            }
        }
    }
    for input in &devices.inputs {
        if input.input_type == InputType::Tablet && input.bus == InputBus::Ps2 {
            return Err(invalid(
                "devices/input",
                "a tablet cannot be on the ps2 bus",
            ));
        }
        validate_address("devices/input", &input.address)?;
    }
    for g in &devices.graphics {
        match &g.listen {
            VncListen::Socket(p) if p.is_empty() || p.chars().any(char::is_control) => {
                return Err(invalid(
                    "devices/graphics",
                    "socket path is empty or has control characters",
                ));
            }
            VncListen::Address(Some(a)) if a.is_empty() || a.chars().any(char::is_control) => {
                return Err(invalid(
                    "devices/graphics",
                    "listen address is empty or has control characters",
                ));
            }
            _ => {}
        }
        if let Some(port) = g.port {
            if port < 5900 && port != 0 {
                return Err(invalid(
                    "devices/graphics",
                    format!(
                        "{} port {port} must be 5900 or above",
                        if g.spice.is_some() { "SPICE" } else { "VNC" }
                    ),
                ));
            }
        }
        if let Some(p) = &g.passwd {
            check_text("devices/graphics", "passwd", p)?;
        }
    }
    // SPICE's agent channel and USB redirection are carried by a SPICE display (libvirt:
    // "chardev 'spicevmc' not supported without spice graphics").
    if !devices.graphics.iter().any(|g| g.spice.is_some()) {
        let spicevmc = devices
            .channels
            .iter()
            .find(|c| c.source == ChannelSource::SpiceVmc)
            .map(|c| ("devices/channel", c.line))
            .or_else(|| {
                devices
                    .redirdevs
                    .first()
                    .map(|r| ("devices/redirdev", r.line))
            });
        if let Some((path, line)) = spicevmc {
            return Err(DomainError::Invalid {
                reason: "chardev 'spicevmc' not supported without spice graphics".to_string(),
                location: Location::new(path, line.get()),
            });
        }
    }
    let mut channel_names = HashSet::new();
    for channel in &devices.channels {
        validate_address("devices/channel", &channel.address)?;
        if !channel_names.insert(channel.target_name.as_str()) {
            return Err(DomainError::Invalid {
                reason: format!(
                    "two channels named '{}' (each virtio port has its own name)",
                    channel.target_name
                ),
                location: Location::new("devices/channel/target", channel.line.get()),
            });
        }
    }
    let mut audio_ids = HashSet::new();
    for audio in &devices.audios {
        if audio.id == 0 || !audio_ids.insert(audio.id) {
            return Err(invalid(
                "devices/audio",
                format!("audio id {} is zero or used twice", audio.id),
            ));
        }
        if audio.audio_type == AudioType::Spice
            && !devices.graphics.iter().any(|g| g.spice.is_some())
        {
            // libvirt 9.0: the SPICE client carries the sound, so there must be one.
            return Err(DomainError::Invalid {
                reason: "spice audio needs <graphics type='spice'>".to_string(),
                location: Location::new("devices/audio", audio.line.get()),
            });
        }
        for text in [&audio.server_name, &audio.path].into_iter().flatten() {
            if text.is_empty() || text.chars().any(char::is_control) {
                return Err(invalid(
                    "devices/audio",
                    "empty value or control characters",
                ));
            }
        }
    }
    for sound in &devices.sounds {
        if sound.model == SoundModel::Ich7 {
            // libvirt 9.0 reads the model but QEMU 7.2 has no such device: it refuses it at
            // define (without an address while placing it, with one while validating).
            return Err(DomainError::Invalid {
                reason: "sound card model 'ich7' is not supported by qemu".to_string(),
                location: Location::new("devices/sound", sound.line.get()),
            });
        }
        if let Some(id) = sound.audio_id {
            if !audio_ids.contains(&id) {
                return Err(DomainError::Invalid {
                    reason: format!("no audio device with id {id}"),
                    location: Location::new("devices/sound/audio", sound.line.get()),
                });
            }
        }
        validate_address("devices/sound", &sound.address)?;
    }
    if devices.videos.iter().filter(|v| v.primary).count() > 1 {
        return Err(invalid(
            "devices/video/model",
            "only one video can be primary",
        ));
    }
    // The primary video is the one marked so, else the first; only a virtio card can be
    // another one, or a qxl (libvirt 9.0 refuses a secondary vga, cirrus, bochs or ramfb),
    // and 'none' must be the only one.
    let primary = devices.videos.iter().position(|v| v.primary).unwrap_or(0);
    if devices.videos.len() > 1 {
        if let Some(video) = devices.videos.iter().find(|v| v.model == VideoModel::None) {
            return Err(DomainError::Invalid {
                reason: "a 'none' video type must be the only video device".to_string(),
                location: Location::new("devices/video/model", video.model_line.get()),
            });
        }
    }
    if let Some(video) = devices
        .videos
        .iter()
        .enumerate()
        .find(|(i, v)| *i != primary && !matches!(v.model, VideoModel::Virtio | VideoModel::Qxl))
        .map(|(_, v)| v)
    {
        let model = match video.model {
            VideoModel::Vga => "vga",
            VideoModel::Cirrus => "cirrus",
            VideoModel::Bochs => "bochs",
            VideoModel::Ramfb => "ramfb",
            VideoModel::Virtio | VideoModel::Qxl | VideoModel::None => "none",
        };
        return Err(DomainError::Invalid {
            reason: format!("video model '{model}' is only valid as the primary video device"),
            location: Location::new("devices/video/model", video.model_line.get()),
        });
    }
    for video in &devices.videos {
        if video.heads == Some(0) {
            return Err(invalid("devices/video/model", "heads must be at least 1"));
        }
        if video.model == VideoModel::Vga && video.vram_kib.is_some_and(|v| v < 1024) {
            return Err(invalid(
                "devices/video/model",
                "value for 'vram' must be at least 1 MiB (1024 KiB)",
            ));
        }
        validate_address("devices/video", &video.address)?;
    }
    if let Some(b) = &devices.memballoon {
        if b.model == MemBalloonModel::None
            && (b.autodeflate.is_some() || b.stats_period.is_some() || b.address.is_some())
        {
            return Err(invalid(
                "devices/memballoon",
                "model 'none' takes no options",
            ));
        }
        validate_address("devices/memballoon", &b.address)?;
    }
    for rng in &devices.rngs {
        if !rng.backend_random.starts_with('/') || rng.backend_random.chars().any(char::is_control)
        {
            return Err(invalid(
                "devices/rng/backend",
                "random backend must be an absolute path",
            ));
        }
        validate_address("devices/rng", &rng.address)?;
    }
    validate_drive_addresses(devices)?;
    crate::pci::check(d)?;
    Ok(())
}

/// Two disks of one bus may not share a drive address (libvirt's message).
fn validate_drive_addresses(devices: &Devices) -> Result<(), DomainError> {
    for (i, disk) in devices.disks.iter().enumerate() {
        let Some(Address::Drive(a)) = &disk.address else {
            continue;
        };
        let twin = devices.disks[..i].iter().any(|other| {
            other.target.bus == disk.target.bus
                && matches!(&other.address, Some(Address::Drive(b))
                    if (b.controller, b.bus, b.target, b.unit) == (a.controller, a.bus, a.target, a.unit))
        });
        if twin {
            return Err(DomainError::Invalid {
                reason: format!(
                    "Found duplicate drive address for disk with target name '{}' controller='{}' bus='{}' target='{}' unit='{}'",
                    disk.target.dev, a.controller, a.bus, a.target, a.unit
                ),
                location: Location::new("devices/disk/address", a.line.get().or(disk.line.get())),
            });
        }
    }
    Ok(())
}

/// A disk's source matches its type: a path for file and block disks, a pool volume for
/// volume disks, with names libvirt would accept.
fn validate_disk_source_kind(path: &str, disk: &Disk) -> Result<(), DomainError> {
    let dev = &disk.target.dev;
    if disk.disk_type == DiskType::Network {
        if disk.network.is_none() {
            return Err(invalid(
                path,
                format!("network disk '{dev}' names no <source protocol=>"),
            ));
        }
    } else if disk.network.is_some() || disk.auth.is_some() {
        return Err(invalid(
            path,
            format!("disk '{dev}' has a network source or <auth> but is not type='network'"),
        ));
    }
    match (disk.disk_type, &disk.source, &disk.volume) {
        (DiskType::Volume, Some(_), _) => Err(invalid(
            path,
            format!("volume disk '{dev}' takes <source pool= volume=>, not a path"),
        )),
        (DiskType::Volume, None, None) => Err(invalid(
            path,
            format!("volume disk '{dev}' names no <source pool= volume=>"),
        )),
        (DiskType::File | DiskType::Block, _, Some(_)) => Err(invalid(
            path,
            format!("disk '{dev}' names a pool volume but is not type='volume'"),
        )),
        (DiskType::Volume, None, Some(volume)) => {
            for (what, name) in [("pool", &volume.pool), ("volume", &volume.volume)] {
                if name.is_empty() || name.contains('/') || name.chars().any(char::is_control) {
                    return Err(invalid(
                        path,
                        format!("disk '{dev}' has an invalid {what} name '{name}'"),
                    ));
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The address kind a disk's bus takes, and libvirt 9.0's rules for drive addresses (two
/// disks on one drive address: see the check after the disks).
fn validate_disk_address(disk: &Disk) -> Result<(), DomainError> {
    let path = "devices/disk/address";
    let dev = &disk.target.dev;
    let bus = disk.target.bus;
    let bus_name = match bus {
        DiskBus::Virtio => "virtio",
        DiskBus::Sata => "sata",
        DiskBus::Scsi => "scsi",
        DiskBus::Ide => "ide",
        DiskBus::Usb => "usb",
        DiskBus::Fdc => "fdc",
    };
    match (&disk.address, bus) {
        (None, _) => Ok(()),
        (Some(Address::Pci(_)), DiskBus::Virtio) => Ok(()),
        (Some(_), DiskBus::Virtio) => Err(invalid(
            path,
            "virtio disk cannot have an address of type other than 'pci'",
        )),
        // A PCI address on another bus is refused where PCI addresses are laid out (pci.rs).
        (Some(Address::Pci(_)), _) => Ok(()),
        (Some(Address::Usb(_)), DiskBus::Usb) => Ok(()),
        (Some(_), DiskBus::Usb) => Err(invalid(path, "unexpected address type for usb disk")),
        (Some(Address::Drive(a)), _) => {
            if matches!(bus, DiskBus::Ide | DiskBus::Sata | DiskBus::Fdc) && a.target != 0 {
                return Err(invalid(
                    path,
                    format!("target must be 0 for {bus_name} controller"),
                ));
            }
            if matches!(bus, DiskBus::Sata | DiskBus::Fdc) && a.bus != 0 {
                return Err(invalid(
                    path,
                    format!("bus must be 0 for {bus_name} controller"),
                ));
            }
            Ok(())
        }
        (Some(other), _) => Err(invalid(
            path,
            format!(
                "Invalid address type '{}' for the disk '{dev}' with the bus type '{bus_name}'",
                match other {
                    Address::Pci(_) => "pci",
                    Address::Usb(_) => "usb",
                    Address::VirtioSerial(_) => "virtio-serial",
                    Address::Drive(_) => "drive",
                }
            ),
        )),
    }
}

fn validate_address(path: &str, address: &Option<Address>) -> Result<(), DomainError> {
    match address {
        Some(Address::Pci(p)) if p.slot > 31 || p.function > 7 => {
            Err(invalid(path, "PCI slot must be 0-31 and function 0-7"))
        }
        Some(Address::Usb(u)) => match &u.port {
            Some(port)
                if !port.split('.').all(|s| s.parse::<u8>().is_ok())
                    || port.split('.').count() > 4 =>
            {
                Err(invalid(
                    path,
                    format!("USB port '{port}' is not a dotted port path"),
                ))
            }
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}
