//! XML text -> [`Domain`] (not yet normalized).
//!
//! Every element and attribute is either consumed into the model or reported: an
//! [`Elem`] remembers which attributes were read, and `finish_attrs` rejects the rest, so
//! nothing is dropped silently.

use crate::elem::{self, lookup, set_once, truncate, Elem, Extension, Result};
use crate::error::DomainError;
use crate::iotune::{IoLimit, IoTune};
use crate::model::*;
use crate::names::*;
use crate::rules::{
    is_disk_serial, is_host_ifname, validate_name, MAX_CONTROLLER_INDEX, UNSET_INDEX,
};
use crate::units::{cpuset_at, mac_at, parse_decimal_u64, size_kib_at};

pub(crate) fn parse(xml: &str) -> Result<Domain> {
    let doc = elem::read(xml)?;
    let extension = Extension {
        namespace: crate::OXVIRT_NAMESPACE,
        prefix: "oxvirt",
    };
    let mut root = Elem::root(&doc, "domain", Some(extension))?;
    parse_domain(&mut root)
}

fn parse_domain(root: &mut Elem) -> Result<Domain> {
    let domain_type =
        root.enum_attr("type", DOMAIN_TYPES)?
            .ok_or_else(|| DomainError::Missing {
                what: "attribute 'type'".to_string(),
                location: root.loc(),
            })?;
    // `id` is the number of a running domain (what `virsh dumpxml` of a running one prints);
    // libvirt does not even read it when it defines a domain, and prints no id for a defined
    // one, whatever the value: neither does oxvirt.
    let _running_id = root.attr("id");
    root.finish_attrs()?;

    let mut name = None;
    let mut uuid = None;
    let mut title = None;
    let mut description = None;
    let mut memory = None;
    let mut current_memory = None;
    let mut max_memory = None;
    let mut blkiotune = None;
    let mut memtune = None;
    let mut memory_backing = None;
    let mut vcpu = None;
    let mut vcpu_slots: Option<Vec<VcpuSlot>> = None;
    let mut iothreads = None;
    let mut iothreadids: Option<Vec<u32>> = None;
    let mut cputune = None;
    let mut numatune = None;
    let mut os = None;
    let mut features = None;
    let mut cpu = None;
    let mut clock = None;
    let mut on_poweroff = None;
    let mut on_reboot = None;
    let mut on_crash = None;
    let mut devices = None;
    let mut engine = None;
    let mut metadata = None;
    let mut pm = None;
    let mut sysinfo = None;
    let root_loc = root.loc();
    // Lines of the children that have no struct of their own.
    let mut memory_line = SourceLine::NONE;
    let mut current_memory_line = SourceLine::NONE;
    let mut iothreads_line = SourceLine::NONE;
    let mut iothreadids_line = SourceLine::NONE;
    let mut on_poweroff_line = SourceLine::NONE;
    let mut on_reboot_line = SourceLine::NONE;
    let mut on_crash_line = SourceLine::NONE;

    for mut child in root.children()? {
        if child.namespace() == Some(crate::OXVIRT_NAMESPACE) {
            match child.name() {
                "engine" if engine.is_none() => {
                    engine = Some(
                        child
                            .enum_attr(
                                "name",
                                &[("qemu", Engine::Qemu), ("native", Engine::Native)],
                            )?
                            .ok_or_else(|| DomainError::Missing {
                                what: "attribute 'name'".to_string(),
                                location: child.loc(),
                            })?,
                    );
                    child.finish_attrs()?;
                    child.leaf()?;
                }
                _ => {
                    return Err(DomainError::UnsupportedElement {
                        location: child.loc(),
                    })
                }
            }
            continue;
        }
        match child.name() {
            "name" => set_once(&mut name, child.name_text(validate_name)?, &child)?,
            "uuid" => set_once(&mut uuid, child.uuid_text()?, &child)?,
            "title" => {
                child.finish_attrs()?;
                let text = child.text()?;
                if text.contains('\n') {
                    return Err(child.invalid(
                        "value",
                        &truncate(&text),
                        "title must be a single line",
                    ));
                }
                set_once(&mut title, text, &child)?;
            }
            "description" => {
                child.finish_attrs()?;
                let text = child.text()?;
                set_once(&mut description, text, &child)?;
            }
            "memory" => {
                let kib = parse_memory_elem(&mut child)?;
                set_once(&mut memory, kib, &child)?;
                memory_line = child.source_line();
            }
            "currentMemory" => {
                let kib = parse_memory_elem(&mut child)?;
                set_once(&mut current_memory, kib, &child)?;
                current_memory_line = child.source_line();
            }
            "maxMemory" => {
                // Slots are optional: virtio-mem hotplug needs none.
                let slots = child.u32_attr("slots")?.unwrap_or(0);
                let kib = parse_memory_elem(&mut child)?;
                let line = child.source_line();
                set_once(&mut max_memory, MaxMemory { kib, slots, line }, &child)?;
            }
            "blkiotune" => {
                let parsed = parse_blkiotune(&mut child)?;
                set_once(&mut blkiotune, parsed, &child)?;
            }
            "memtune" => {
                let parsed = parse_memtune(&mut child)?;
                set_once(&mut memtune, parsed, &child)?;
            }
            "memoryBacking" => {
                let parsed = parse_memory_backing(&mut child)?;
                set_once(&mut memory_backing, parsed, &child)?;
            }
            "vcpu" => {
                let parsed = parse_vcpu(&mut child)?;
                set_once(&mut vcpu, parsed, &child)?;
            }
            "vcpus" => {
                let parsed = parse_vcpus(&mut child)?;
                set_once(&mut vcpu_slots, parsed, &child)?;
            }
            "iothreads" => {
                child.finish_attrs()?;
                let n = child.text_u32()?;
                if n > MAX_IOTHREADS {
                    return Err(child.invalid(
                        "value",
                        &n.to_string(),
                        format!("at most {MAX_IOTHREADS} IOThreads"),
                    ));
                }
                set_once(&mut iothreads, n, &child)?;
                iothreads_line = child.source_line();
            }
            "iothreadids" => {
                let parsed = parse_iothreadids(&mut child)?;
                set_once(&mut iothreadids, parsed, &child)?;
                iothreadids_line = child.source_line();
            }
            "cputune" => {
                let parsed = parse_cputune(&mut child)?;
                set_once(&mut cputune, parsed, &child)?;
            }
            "numatune" => {
                let parsed = parse_numatune(&mut child)?;
                set_once(&mut numatune, parsed, &child)?;
            }
            "sysinfo" => {
                let parsed = crate::sysinfo::parse(&mut child)?;
                set_once(&mut sysinfo, parsed, &child)?;
            }
            "os" => {
                let parsed = parse_os(&mut child)?;
                set_once(&mut os, parsed, &child)?;
            }
            "features" => {
                let parsed = parse_features(&mut child)?;
                set_once(&mut features, parsed, &child)?;
            }
            "cpu" => {
                let parsed = parse_cpu(&mut child)?;
                set_once(&mut cpu, parsed, &child)?;
            }
            "clock" => {
                let parsed = parse_clock(&mut child)?;
                set_once(&mut clock, parsed, &child)?;
            }
            "on_poweroff" | "on_reboot" | "on_crash" => {
                child.finish_attrs()?;
                let action = child.text_enum(LIFECYCLE_ACTIONS)?;
                let (slot, line) = match child.name() {
                    "on_poweroff" => (&mut on_poweroff, &mut on_poweroff_line),
                    "on_reboot" => (&mut on_reboot, &mut on_reboot_line),
                    _ => (&mut on_crash, &mut on_crash_line),
                };
                set_once(slot, action, &child)?;
                *line = child.source_line();
            }
            "devices" => {
                let parsed = parse_devices(&mut child)?;
                set_once(&mut devices, parsed, &child)?;
            }
            "metadata" => {
                // libvirt reads the first <metadata> and ignores a second one; oxvirt refuses it
                // rather than drop its content.
                let parsed = crate::metadata::parse(child.node(), &child.loc().path)?;
                set_once(&mut metadata, parsed, &child)?;
            }
            "pm" => {
                // An empty <pm/> says nothing: libvirt drops it, and so does parse_pm's caller.
                let parsed = parse_pm(&mut child)?;
                set_once(&mut pm, parsed, &child)?;
            }
            _ => return Err(child.unsupported()),
        }
    }

    let memory_kib = memory.ok_or_else(|| DomainError::Missing {
        what: "element <memory>".to_string(),
        location: root_loc.clone(),
    })?;
    let mut vcpu = vcpu.unwrap_or(Vcpu {
        placement: VcpuPlacement::Static,
        max: 1,
        current: None,
        cpuset: None,
        slots: Vec::new(),
        line: SourceLine::NONE,
    });
    if let Some(mut slots) = vcpu_slots {
        // As libvirt: the states of <vcpus> decide which vCPUs are online, and so `current`.
        // Those it leaves out are offline (libvirt prints every vCPU).
        for id in 0..vcpu.max {
            if !slots.iter().any(|slot| slot.id == id) {
                slots.push(VcpuSlot {
                    id,
                    enabled: false,
                    hotpluggable: None,
                    order: None,
                });
            }
        }
        slots.sort_by_key(|slot| slot.id);
        let enabled = slots.iter().filter(|slot| slot.enabled).count() as u32;
        vcpu.current = (enabled != vcpu.max).then_some(enabled);
        vcpu.slots = slots;
    }
    let os = os.ok_or_else(|| DomainError::Missing {
        what: "element <os>".to_string(),
        location: root_loc.clone(),
    })?;
    let iothreads = io_threads(iothreads.unwrap_or(0), iothreadids);
    if let Some(uuid) = &uuid {
        crate::sysinfo::check_uuid(sysinfo.as_ref(), uuid)?;
    }
    Ok(Domain {
        domain_type,
        name: name.ok_or_else(|| DomainError::Missing {
            what: "element <name>".to_string(),
            location: root_loc.clone(),
        })?,
        // A nil uuid marks "absent": normalization generates one.
        uuid: uuid.unwrap_or_else(Uuid::nil),
        title,
        description,
        metadata,
        memory_kib,
        // Zero marks "absent": normalization copies memory.
        current_memory_kib: current_memory.unwrap_or(0),
        max_memory,
        // An element with nothing set is not printed back, so it is not kept either.
        blkiotune: blkiotune.filter(|tune| !tune.is_empty()),
        memtune: memtune.filter(|tune| !tune.is_empty()),
        memory_backing,
        vcpu,
        iothreads,
        cputune,
        numatune,
        sysinfo,
        os,
        features: features.unwrap_or_default(),
        cpu,
        clock: clock.unwrap_or(Clock {
            offset: ClockOffset::Utc,
            timers: Vec::new(),
            line: SourceLine::NONE,
        }),
        on_poweroff: on_poweroff.unwrap_or(LifecycleAction::Destroy),
        on_reboot: on_reboot.unwrap_or(LifecycleAction::Restart),
        on_crash: on_crash.unwrap_or(LifecycleAction::Destroy),
        pm: pm.filter(|pm| pm.suspend_to_mem.is_some() || pm.suspend_to_disk.is_some()),
        devices: devices.unwrap_or_default(),
        engine: engine.unwrap_or_default(),
        line: root.source_line(),
        memory_line,
        current_memory_line,
        iothreads_line,
        iothreadids_line,
        on_poweroff_line,
        on_reboot_line,
        on_crash_line,
    })
}

/// More IOThreads than any guest needs; the bound keeps a definition from making oxvirt
/// allocate an id list of billions.
const MAX_IOTHREADS: u32 = 1024;

/// `<iothreadids>`: each `<iothread id='N'/>`, ids above 0 and unique (libvirt's rules).
fn parse_iothreadids(elem: &mut Elem) -> Result<Vec<u32>> {
    elem.finish_attrs()?;
    let mut ids = Vec::new();
    for mut child in elem.children()? {
        if child.name() != "iothread" {
            return Err(child.unsupported());
        }
        let id = child.u32_attr("id")?.ok_or_else(|| DomainError::Missing {
            what: "attribute 'id'".to_string(),
            location: child.loc(),
        })?;
        child.finish_attrs()?;
        child.leaf()?;
        if id == 0 {
            return Err(child.invalid("attribute 'id'", "0", "IOThread ids start at 1"));
        }
        if ids.contains(&id) {
            return Err(child.invalid("attribute 'id'", &id.to_string(), "duplicate iothread id"));
        }
        if ids.len() >= MAX_IOTHREADS as usize {
            return Err(child.invalid(
                "attribute 'id'",
                &id.to_string(),
                format!("at most {MAX_IOTHREADS} IOThreads"),
            ));
        }
        ids.push(id);
    }
    Ok(ids)
}

/// libvirt's IOThreads from `<iothreads>`'s count and `<iothreadids>`: the listed ids, then
/// the lowest free ids in `1..=count` until there are `count` (a count below the number of
/// listed ids is raised to it).
fn io_threads(count: u32, listed: Option<Vec<u32>>) -> IoThreads {
    let ids_stated = listed.as_ref().is_some_and(|ids| !ids.is_empty());
    let mut ids = listed.unwrap_or_default();
    let mut free = (1..=count)
        .filter(|id| !ids.contains(id))
        .collect::<Vec<_>>()
        .into_iter();
    while ids.len() < count as usize {
        match free.next() {
            Some(id) => ids.push(id),
            // Cannot happen: 1..=count has count ids, and fewer than count are listed.
            None => break,
        }
    }
    IoThreads { ids, ids_stated }
}

fn parse_pm(elem: &mut Elem) -> Result<Pm> {
    elem.finish_attrs()?;
    let mut pm = Pm {
        line: elem.source_line(),
        ..Pm::default()
    };
    for mut child in elem.children()? {
        let enabled = child.yes_no_attr("enabled")?;
        child.finish_attrs()?;
        child.leaf()?;
        let slot = match child.name() {
            "suspend-to-mem" => &mut pm.suspend_to_mem,
            "suspend-to-disk" => &mut pm.suspend_to_disk,
            _ => return Err(child.unsupported()),
        };
        let enabled = enabled.ok_or_else(|| child.missing("attribute 'enabled'"))?;
        set_once(slot, enabled, &child)?;
    }
    Ok(pm)
}

fn parse_memory_elem(elem: &mut Elem) -> Result<u64> {
    let unit = elem.attr("unit");
    elem.finish_attrs()?;
    let text = elem.text()?;
    size_kib_at(text.trim(), unit, &elem.loc(), "value")
}

/// `<blkiotune>`: libvirt's elements; a value of 0 is "not set", a device with nothing set is
/// dropped (libvirt neither applies nor prints it). Stricter than libvirt, which keeps the
/// first of two `<path>`s or `<weight>`s and ignores an unreadable top-level weight: those
/// are errors here.
fn parse_blkiotune(elem: &mut Elem) -> Result<BlkioTune> {
    elem.finish_attrs()?;
    let mut tune = BlkioTune {
        line: elem.source_line(),
        ..BlkioTune::default()
    };
    let mut weight = None;
    for mut child in elem.children()? {
        match child.name() {
            "weight" => {
                child.finish_attrs()?;
                let value = child.text_u32()?;
                set_once(&mut weight, value, &child)?;
            }
            "device" => {
                let device = parse_blkio_device(&mut child)?;
                if tune.devices.iter().any(|d| d.path == device.path) {
                    return Err(child.invalid(
                        "path",
                        &device.path,
                        format!("duplicate blkio device path '{}'", device.path),
                    ));
                }
                tune.devices.push(device);
            }
            _ => return Err(child.unsupported()),
        }
    }
    tune.weight = weight.filter(|w| *w != 0);
    tune.devices.retain(|d| !d.is_empty());
    Ok(tune)
}

fn parse_blkio_device(elem: &mut Elem) -> Result<BlkioDevice> {
    elem.finish_attrs()?;
    let mut path = None;
    let (mut weight, mut read_iops, mut write_iops) = (None, None, None);
    let (mut read_bytes, mut write_bytes) = (None, None);
    for child in elem.children()? {
        child.finish_attrs()?;
        match child.name() {
            "path" => {
                let text = child.text()?;
                set_once(&mut path, text, &child)?;
            }
            "weight" => set_once(&mut weight, child.text_u32()?, &child)?,
            "read_iops_sec" => set_once(&mut read_iops, child.text_u32()?, &child)?,
            "write_iops_sec" => set_once(&mut write_iops, child.text_u32()?, &child)?,
            "read_bytes_sec" => set_once(&mut read_bytes, child.text_u64()?, &child)?,
            "write_bytes_sec" => set_once(&mut write_bytes, child.text_u64()?, &child)?,
            _ => return Err(child.unsupported()),
        }
    }
    let path = match path {
        Some(path) if !path.is_empty() => path,
        // libvirt's words.
        _ => return Err(elem.missing("per-device path <path>")),
    };
    let set_u32 = |v: Option<u32>| v.filter(|v| *v != 0);
    let set_u64 = |v: Option<u64>| v.filter(|v| *v != 0);
    Ok(BlkioDevice {
        path,
        weight: set_u32(weight),
        read_iops_sec: set_u32(read_iops),
        write_iops_sec: set_u32(write_iops),
        read_bytes_sec: set_u64(read_bytes),
        write_bytes_sec: set_u64(write_bytes),
    })
}

fn parse_memtune(elem: &mut Elem) -> Result<MemTune> {
    elem.finish_attrs()?;
    let mut tune = MemTune {
        line: elem.source_line(),
        ..MemTune::default()
    };
    for mut child in elem.children()? {
        let slot = match child.name() {
            "hard_limit" => &mut tune.hard_limit_kib,
            "soft_limit" => &mut tune.soft_limit_kib,
            "min_guarantee" => &mut tune.min_guarantee_kib,
            "swap_hard_limit" => &mut tune.swap_hard_limit_kib,
            _ => return Err(child.unsupported()),
        };
        let kib = parse_memory_elem(&mut child)?;
        // libvirt's "unlimited" is no limit: not kept, so not written back.
        if kib < MEMTUNE_UNLIMITED_KIB {
            set_once(slot, kib, &child)?;
        }
    }
    Ok(tune)
}

fn parse_memory_backing(elem: &mut Elem) -> Result<MemoryBacking> {
    elem.finish_attrs()?;
    let mut backing = MemoryBacking {
        line: elem.source_line(),
        ..MemoryBacking::default()
    };
    let mut seen_nosharepages = false;
    let (mut seen_source, mut seen_access, mut seen_allocation) = (None, None, None);
    for mut child in elem.children()? {
        match child.name() {
            "hugepages" => {
                child.finish_attrs()?;
                let mut pages = Hugepages {
                    line: child.source_line(),
                    ..Hugepages::default()
                };
                for mut page in child.children()? {
                    if page.name() != "page" {
                        return Err(page.unsupported());
                    }
                    let size = page.required_attr("size")?;
                    let unit = page.attr("unit");
                    page.finish_attrs()?;
                    page.leaf()?;
                    let kib = size_kib_at(size, unit, &page.loc(), "attribute 'size'")?;
                    pages.page_sizes_kib.push(kib);
                }
                set_once(&mut backing.hugepages, pages, &child)?;
            }
            "nosharepages" => {
                child.finish_attrs()?;
                child.leaf()?;
                if seen_nosharepages {
                    return Err(child.duplicate());
                }
                seen_nosharepages = true;
                backing.nosharepages = true;
            }
            "locked" | "discard" => {
                child.finish_attrs()?;
                child.leaf()?;
                let flag = if child.name() == "locked" {
                    &mut backing.locked
                } else {
                    &mut backing.discard
                };
                if *flag {
                    return Err(child.duplicate());
                }
                *flag = true;
            }
            // An empty <source/>, <access/> or <allocation/> says nothing (libvirt drops it).
            "source" => {
                let source = child.enum_attr("type", MEMORY_SOURCES)?;
                child.finish_attrs()?;
                child.leaf()?;
                set_once(&mut seen_source, (), &child)?;
                backing.source = source;
            }
            "access" => {
                let access = child.enum_attr("mode", MEMORY_ACCESSES)?;
                child.finish_attrs()?;
                child.leaf()?;
                set_once(&mut seen_access, (), &child)?;
                backing.access = access;
            }
            "allocation" => {
                let allocation = child.enum_attr("mode", MEMORY_ALLOCATIONS)?;
                let threads = child.u32_attr("threads")?;
                child.finish_attrs()?;
                child.leaf()?;
                set_once(&mut seen_allocation, (), &child)?;
                backing.allocation = allocation;
                backing.allocation_threads = threads;
            }
            _ => return Err(child.unsupported()),
        }
    }
    Ok(backing)
}

fn parse_vcpu(elem: &mut Elem) -> Result<Vcpu> {
    let placement = elem.enum_attr("placement", PLACEMENTS)?;
    let current = elem.u32_attr("current")?;
    let cpuset = match elem.attr("cpuset") {
        Some(text) => Some(cpuset_at(text, &elem.loc(), "attribute 'cpuset'")?),
        None => None,
    };
    elem.finish_attrs()?;
    let max = elem.text_u32()?;
    Ok(Vcpu {
        // libvirt: placement defaults to 'static', or 'auto' when no cpuset is given
        // and numatune placement is auto (not modelled here).
        placement: placement.unwrap_or(VcpuPlacement::Static),
        max,
        current,
        cpuset,
        slots: Vec::new(),
        line: elem.source_line(),
    })
}

/// `<vcpus>`: one `<vcpu id enabled [hotpluggable] [order]>` a vCPU (ids checked against
/// `<vcpu>` in validate.rs).
fn parse_vcpus(elem: &mut Elem) -> Result<Vec<VcpuSlot>> {
    elem.finish_attrs()?;
    let mut slots: Vec<VcpuSlot> = Vec::new();
    for mut child in elem.children()? {
        if child.name() != "vcpu" {
            return Err(child.unsupported());
        }
        let id = child
            .u32_attr("id")?
            .ok_or_else(|| child.missing("attribute 'id'"))?;
        let enabled = child
            .yes_no_attr("enabled")?
            .ok_or_else(|| child.missing("attribute 'enabled'"))?;
        let hotpluggable = child.yes_no_attr("hotpluggable")?;
        let order = child.u32_attr("order")?.filter(|order| *order != 0);
        child.finish_attrs()?;
        if slots.iter().any(|slot| slot.id == id) {
            return Err(child.duplicate());
        }
        slots.push(VcpuSlot {
            id,
            enabled,
            hotpluggable,
            order,
        });
    }
    Ok(slots)
}

fn parse_cputune(elem: &mut Elem) -> Result<CpuTune> {
    elem.finish_attrs()?;
    let mut tune = CpuTune {
        line: elem.source_line(),
        ..CpuTune::default()
    };
    for mut child in elem.children()? {
        match child.name() {
            "shares" => {
                child.finish_attrs()?;
                let v = child.text_u64()?;
                set_once(&mut tune.shares, v, &child)?;
            }
            "period" => {
                child.finish_attrs()?;
                let v = child.text_u64()?;
                set_once(&mut tune.period, v, &child)?;
            }
            "quota" => {
                child.finish_attrs()?;
                let v = child.text_i64()?;
                set_once(&mut tune.quota, v, &child)?;
            }
            "emulator_period" => {
                child.finish_attrs()?;
                let v = child.text_u64()?;
                set_once(&mut tune.emulator_period, v, &child)?;
            }
            "emulator_quota" => {
                child.finish_attrs()?;
                let v = child.text_i64()?;
                set_once(&mut tune.emulator_quota, v, &child)?;
            }
            "vcpupin" => {
                let vcpu = child
                    .u32_attr("vcpu")?
                    .ok_or_else(|| DomainError::Missing {
                        what: "attribute 'vcpu'".to_string(),
                        location: child.loc(),
                    })?;
                let text = child.required_attr("cpuset")?;
                let cpuset = cpuset_at(text, &child.loc(), "attribute 'cpuset'")?;
                child.finish_attrs()?;
                child.leaf()?;
                if tune.vcpupins.iter().any(|p| p.vcpu == vcpu) {
                    return Err(child.invalid(
                        "attribute 'vcpu'",
                        &vcpu.to_string(),
                        "vCPU is pinned twice",
                    ));
                }
                tune.vcpupins.push(VcpuPin { vcpu, cpuset });
            }
            "emulatorpin" => {
                let text = child.required_attr("cpuset")?;
                let cpuset = cpuset_at(text, &child.loc(), "attribute 'cpuset'")?;
                child.finish_attrs()?;
                child.leaf()?;
                set_once(&mut tune.emulatorpin, cpuset, &child)?;
            }
            "iothreadpin" => {
                let iothread = child
                    .u32_attr("iothread")?
                    .ok_or_else(|| DomainError::Missing {
                        what: "attribute 'iothread'".to_string(),
                        location: child.loc(),
                    })?;
                let text = child.required_attr("cpuset")?;
                let cpuset = cpuset_at(text, &child.loc(), "attribute 'cpuset'")?;
                child.finish_attrs()?;
                child.leaf()?;
                if tune.iothreadpins.iter().any(|p| p.iothread == iothread) {
                    return Err(child.invalid(
                        "attribute 'iothread'",
                        &iothread.to_string(),
                        "IOThread is pinned twice",
                    ));
                }
                tune.iothreadpins.push(IoThreadPin {
                    iothread,
                    cpuset,
                    line: child.source_line(),
                });
            }
            _ => return Err(child.unsupported()),
        }
    }
    Ok(tune)
}

fn parse_os(elem: &mut Elem) -> Result<Os> {
    let firmware = elem.enum_attr("firmware", FIRMWARES)?;
    elem.finish_attrs()?;
    let mut os = Os {
        firmware,
        line: elem.source_line(),
        ..Os::default()
    };
    let mut seen_type = false;
    let mut seen_bios = false;
    for mut child in elem.children()? {
        match child.name() {
            "type" => {
                if seen_type {
                    return Err(child.duplicate());
                }
                seen_type = true;
                os.type_line = child.source_line();
                if let Some(arch) = child.attr("arch") {
                    if arch != "x86_64" {
                        return Err(child.enum_error("attribute 'arch'", arch, &[("x86_64", ())]));
                    }
                    os.arch = arch.to_string();
                }
                if let Some(machine) = child.attr("machine") {
                    if machine.is_empty()
                        || machine
                            .chars()
                            .any(|c| c.is_whitespace() || c.is_control() || c == ',')
                    {
                        return Err(child.invalid(
                            "attribute 'machine'",
                            machine,
                            "not a machine type name",
                        ));
                    }
                    os.machine = machine.to_string();
                }
                child.finish_attrs()?;
                let text = child.text()?;
                if text.trim() != "hvm" {
                    return Err(child.enum_error("value", text.trim(), &[("hvm", ())]));
                }
            }
            "loader" => {
                let readonly = child.yes_no_attr("readonly")?;
                let secure = child.yes_no_attr("secure")?;
                let loader_type = child.enum_attr("type", LOADER_TYPES)?;
                child.finish_attrs()?;
                let text = child.text()?;
                let path = non_empty(text.trim());
                set_once(
                    &mut os.loader,
                    Loader {
                        path,
                        readonly,
                        secure,
                        loader_type,
                        line: child.source_line(),
                    },
                    &child,
                )?;
            }
            "nvram" => {
                let template = child.attr("template").map(str::to_string);
                child.finish_attrs()?;
                let text = child.text()?;
                let path = non_empty(text.trim());
                let line = child.source_line();
                set_once(
                    &mut os.nvram,
                    Nvram {
                        path,
                        template,
                        line,
                    },
                    &child,
                )?;
            }
            "kernel" | "initrd" | "cmdline" => {
                child.finish_attrs()?;
                let text = child.text()?;
                let (slot, line) = match child.name() {
                    "kernel" => (&mut os.kernel, &mut os.kernel_line),
                    "initrd" => (&mut os.initrd, &mut os.initrd_line),
                    _ => (&mut os.cmdline, &mut os.cmdline_line),
                };
                let value = if child.name() == "cmdline" {
                    text
                } else {
                    text.trim().to_string()
                };
                set_once(slot, value, &child)?;
                *line = child.source_line();
            }
            "boot" => {
                let dev = child.required_attr("dev")?;
                let dev = lookup(BOOT_DEVICES, dev)
                    .ok_or_else(|| child.enum_error("attribute 'dev'", dev, BOOT_DEVICES))?;
                child.finish_attrs()?;
                child.leaf()?;
                if os.boot.contains(&dev) {
                    return Err(child.duplicate());
                }
                os.boot.push(dev);
                os.boot_lines.0.push(child.source_line());
            }
            "bootmenu" => {
                let enable = child
                    .yes_no_attr("enable")?
                    .ok_or_else(|| DomainError::Missing {
                        what: "attribute 'enable'".to_string(),
                        location: child.loc(),
                    })?;
                let timeout = child.u32_attr("timeout")?;
                if let Some(t) = timeout {
                    if t > 65535 {
                        return Err(child.invalid(
                            "attribute 'timeout'",
                            &t.to_string(),
                            "must be at most 65535 ms",
                        ));
                    }
                }
                child.finish_attrs()?;
                child.leaf()?;
                let line = child.source_line();
                set_once(
                    &mut os.bootmenu,
                    BootMenu {
                        enable,
                        timeout,
                        line,
                    },
                    &child,
                )?;
            }
            "bios" => {
                if seen_bios {
                    return Err(child.duplicate());
                }
                seen_bios = true;
                if let Some(value) = child.attr("rebootTimeout") {
                    let t: i32 = value
                        .parse()
                        .ok()
                        .filter(|t| (-1..=65535).contains(t))
                        .ok_or_else(|| {
                            child.invalid("attribute 'rebootTimeout'", value, "must be -1 to 65535")
                        })?;
                    os.bios_reboot_timeout = Some(t);
                }
                child.finish_attrs()?;
                child.leaf()?;
            }
            "smbios" => {
                if os.smbios.is_some() {
                    return Err(child.duplicate());
                }
                let (mode, line) = crate::sysinfo::parse_mode(&mut child)?;
                os.smbios = Some(mode);
                os.smbios_line = line;
            }
            _ => return Err(child.unsupported()),
        }
    }
    if !seen_type {
        return Err(DomainError::Missing {
            what: "element <type>".to_string(),
            location: elem.loc(),
        });
    }
    Ok(os)
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_string())
}

fn parse_features(elem: &mut Elem) -> Result<Features> {
    elem.finish_attrs()?;
    let mut features = Features {
        line: elem.source_line(),
        ..Features::default()
    };
    for mut child in elem.children()? {
        if child.name() == "vmport" {
            let state = child
                .on_off_attr("state")?
                .ok_or_else(|| child.missing("attribute 'state'"))?;
            child.finish_attrs()?;
            child.leaf()?;
            set_once(&mut features.vmport, state, &child)?;
            features.vmport_line = child.source_line();
            continue;
        }
        child.finish_attrs()?;
        child.leaf()?;
        let flag = match child.name() {
            "acpi" => &mut features.acpi,
            "apic" => &mut features.apic,
            "pae" => &mut features.pae,
            _ => return Err(child.unsupported()),
        };
        if *flag {
            return Err(child.duplicate());
        }
        *flag = true;
    }
    Ok(features)
}

fn parse_cpu(elem: &mut Elem) -> Result<Cpu> {
    let mode = elem.enum_attr("mode", CPU_MODES)?;
    let match_ = elem.enum_attr("match", CPU_MATCHES)?;
    let check = elem.enum_attr("check", CPU_CHECKS)?;
    let migratable = elem.on_off_attr("migratable")?;
    elem.finish_attrs()?;
    let mut cpu = Cpu {
        mode: mode.unwrap_or(CpuMode::Custom),
        match_,
        check,
        migratable,
        model: None,
        vendor: None,
        topology: None,
        features: Vec::new(),
        numa: Vec::new(),
        line: elem.source_line(),
        vendor_line: SourceLine::NONE,
    };
    let mut model_fallback = None;
    let mut seen_numa = None;
    for mut child in elem.children()? {
        match child.name() {
            "model" => {
                let fallback = child.enum_attr("fallback", CPU_FALLBACKS)?;
                child.finish_attrs()?;
                let text = child.text()?;
                let name = text.trim().to_string();
                if model_fallback.is_some() || cpu.model.is_some() {
                    return Err(child.duplicate());
                }
                if name.is_empty() {
                    // `<model fallback=.../>` without a name: only meaningful for
                    // host-model, where libvirt drops it.
                    model_fallback = Some(fallback);
                } else {
                    cpu.model = Some(CpuModel {
                        name,
                        fallback,
                        line: child.source_line(),
                    });
                }
            }
            "numa" => {
                set_once(&mut seen_numa, (), &child)?;
                cpu.numa = parse_numa(&mut child)?;
            }
            "vendor" => {
                child.finish_attrs()?;
                let text = child.text()?;
                set_once(&mut cpu.vendor, text.trim().to_string(), &child)?;
                cpu.vendor_line = child.source_line();
            }
            "topology" => {
                let count = |name: &'static str, child: &mut Elem| -> Result<Option<u32>> {
                    let v = child.u32_attr(name)?;
                    if v == Some(0) {
                        return Err(child.invalid(
                            &format!("attribute '{name}'"),
                            "0",
                            "must be at least 1",
                        ));
                    }
                    Ok(v)
                };
                let sockets = count("sockets", &mut child)?;
                let dies = count("dies", &mut child)?;
                let clusters = count("clusters", &mut child)?;
                let cores = count("cores", &mut child)?;
                let threads = count("threads", &mut child)?;
                child.finish_attrs()?;
                child.leaf()?;
                let missing = |what: &str| DomainError::Missing {
                    what: format!("attribute '{what}'"),
                    location: child.loc(),
                };
                let topology = CpuTopology {
                    sockets: sockets.ok_or_else(|| missing("sockets"))?,
                    dies: dies.unwrap_or(1),
                    clusters: clusters.unwrap_or(1),
                    cores: cores.ok_or_else(|| missing("cores"))?,
                    threads: threads.ok_or_else(|| missing("threads"))?,
                    line: child.source_line(),
                };
                set_once(&mut cpu.topology, topology, &child)?;
            }
            "feature" => {
                let policy = child.enum_attr("policy", FEATURE_POLICIES)?;
                let name = child.required_attr("name")?.to_string();
                child.finish_attrs()?;
                child.leaf()?;
                if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(child.invalid("attribute 'name'", &name, "not a CPU feature name"));
                }
                if cpu.features.iter().any(|f| f.name == name) {
                    return Err(child.invalid("attribute 'name'", &name, "feature listed twice"));
                }
                cpu.features.push(CpuFeature {
                    policy: policy.unwrap_or(FeaturePolicy::Require),
                    name,
                    line: child.source_line(),
                });
            }
            _ => return Err(child.unsupported()),
        }
    }
    Ok(cpu)
}

fn parse_clock(elem: &mut Elem) -> Result<Clock> {
    let offset = elem
        .enum_attr("offset", CLOCK_OFFSETS)?
        .unwrap_or(ClockOffset::Utc);
    elem.finish_attrs()?;
    let mut timers = Vec::new();
    for mut child in elem.children()? {
        if child.name() != "timer" {
            return Err(child.unsupported());
        }
        let name = child.required_attr("name")?;
        let name = lookup(TIMER_NAMES, name)
            .ok_or_else(|| child.enum_error("attribute 'name'", name, TIMER_NAMES))?;
        let present = child.yes_no_attr("present")?;
        let tickpolicy = child.enum_attr("tickpolicy", TICK_POLICIES)?;
        child.finish_attrs()?;
        child.leaf()?;
        timers.push(Timer {
            name,
            present,
            tickpolicy,
            line: child.source_line(),
        });
    }
    Ok(Clock {
        offset,
        timers,
        line: elem.source_line(),
    })
}

fn parse_devices(elem: &mut Elem) -> Result<Devices> {
    elem.finish_attrs()?;
    let mut devices = Devices::default();
    // With the bus each disk's target stated, for libvirt's disk order (see `order`).
    let mut disks = Vec::new();
    for mut child in elem.children()? {
        match child.name() {
            "emulator" => {
                child.finish_attrs()?;
                let text = child.text()?;
                set_once(&mut devices.emulator, text.trim().to_string(), &child)?;
            }
            "disk" => disks.push(parse_disk(&mut child)?),
            "hostdev" => devices.hostdevs.push(parse_hostdev(&mut child)?),
            "controller" => devices.controllers.push(parse_controller(&mut child)?),
            "interface" => devices.interfaces.push(parse_interface(&mut child)?),
            "serial" => devices.serials.push(parse_chardev(&mut child)?),
            "console" => devices.consoles.push(parse_chardev(&mut child)?),
            "input" => devices.inputs.push(parse_input(&mut child)?),
            "graphics" => devices.graphics.push(parse_graphics(&mut child)?),
            "audio" => devices.audios.push(parse_audio(&mut child)?),
            "sound" => devices.sounds.push(parse_sound(&mut child)?),
            "video" => devices.videos.push(parse_video(&mut child)?),
            "memballoon" => {
                let balloon = parse_memballoon(&mut child)?;
                set_once(&mut devices.memballoon, balloon, &child)?;
            }
            "rng" => devices.rngs.push(parse_rng(&mut child)?),
            "channel" => devices.channels.push(parse_channel(&mut child)?),
            "redirdev" => devices.redirdevs.push(parse_redirdev(&mut child)?),
            _ => return Err(child.unsupported()),
        }
    }
    devices.disks = crate::order::libvirt_disk_order(disks);
    Ok(devices)
}

/// An `<address>` that must be of one kind (`fits`); `why` says which, in the error.
fn address_of_kind(elem: &mut Elem, fits: fn(&Address) -> bool, why: &str) -> Result<Address> {
    let parsed = parse_address(elem)?;
    if !fits(&parsed) {
        return Err(elem.invalid("attribute 'type'", "", why));
    }
    Ok(parsed)
}

fn parse_address(elem: &mut Elem) -> Result<Address> {
    let kind = elem.required_attr("type")?;
    let address = match kind {
        "pci" => Address::Pci(PciAddress {
            domain: elem.c_uint_attr("domain", 0xffff)?.unwrap_or(0) as u16,
            bus: elem.c_uint_attr("bus", 0xff)?.unwrap_or(0) as u8,
            slot: elem.c_uint_attr("slot", 0x1f)?.unwrap_or(0) as u8,
            function: elem.c_uint_attr("function", 7)?.unwrap_or(0) as u8,
            multifunction: elem.on_off_attr("multifunction")?,
            line: elem.source_line(),
        }),
        "drive" => Address::Drive(DriveAddress {
            controller: elem
                .c_uint_attr("controller", u32::MAX.into())?
                .unwrap_or(0) as u32,
            bus: elem.c_uint_attr("bus", u32::MAX.into())?.unwrap_or(0) as u32,
            target: elem.c_uint_attr("target", u32::MAX.into())?.unwrap_or(0) as u32,
            unit: elem.c_uint_attr("unit", u32::MAX.into())?.unwrap_or(0) as u32,
            line: elem.source_line(),
        }),
        "usb" => {
            let bus = elem.c_uint_attr("bus", u32::MAX.into())?.unwrap_or(0) as u32;
            let port = match elem.attr("port") {
                Some(p) => {
                    let valid = p.split('.').count() <= 4
                        && p.split('.')
                            .all(|s| parse_decimal_u64(s).is_some_and(|n| n <= 255));
                    if !valid {
                        return Err(elem.invalid(
                            "attribute 'port'",
                            p,
                            "expected a dotted USB port path like 1.2",
                        ));
                    }
                    Some(p.to_string())
                }
                None => None,
            };
            Address::Usb(UsbAddress {
                bus,
                port,
                line: elem.source_line(),
            })
        }
        "virtio-serial" => Address::VirtioSerial(VirtioSerialAddress {
            controller: elem
                .c_uint_attr("controller", u32::MAX.into())?
                .unwrap_or(0) as u32,
            bus: elem.c_uint_attr("bus", u32::MAX.into())?.unwrap_or(0) as u32,
            port: elem.c_uint_attr("port", u32::MAX.into())?.unwrap_or(0) as u32,
            line: elem.source_line(),
        }),
        other => {
            return Err(elem.enum_error(
                "attribute 'type'",
                other,
                &[
                    ("pci", ()),
                    ("drive", ()),
                    ("usb", ()),
                    ("virtio-serial", ()),
                ],
            ))
        }
    };
    elem.finish_attrs()?;
    elem.leaf()?;
    Ok(address)
}

fn boot_order(elem: &mut Elem) -> Result<u32> {
    let order = elem
        .u32_attr("order")?
        .ok_or_else(|| DomainError::Missing {
            what: "attribute 'order'".to_string(),
            location: elem.loc(),
        })?;
    if order == 0 {
        return Err(elem.invalid("attribute 'order'", "0", "boot order starts at 1"));
    }
    elem.finish_attrs()?;
    elem.leaf()?;
    Ok(order)
}

/// `<hostdev mode='subsystem' type='pci|usb'>`. Other modes and types (scsi, mdev,
/// capabilities) are refused by name.
fn parse_hostdev(elem: &mut Elem) -> Result<HostDev> {
    let mode = elem.attr("mode").unwrap_or("subsystem");
    if mode != "subsystem" {
        return Err(elem.unsupported_value("attribute 'mode'", mode, &[("subsystem", ())]));
    }
    let kind = elem.required_attr("type")?;
    let is_pci = match kind {
        "pci" => true,
        "usb" => false,
        other => {
            return Err(elem.unsupported_value(
                "attribute 'type'",
                other,
                &[("pci", ()), ("usb", ())],
            ))
        }
    };
    let managed = elem.yes_no_attr("managed")?.unwrap_or(false);
    elem.finish_attrs()?;
    let (mut source, mut driver, mut boot, mut rom, mut address) = (None, None, None, None, None);
    for mut child in elem.children()? {
        match child.name() {
            "source" if is_pci => {
                let parsed = parse_hostdev_pci_source(&mut child)?;
                set_once(&mut source, parsed, &child)?;
            }
            "source" => {
                let parsed = parse_hostdev_usb_source(&mut child)?;
                set_once(&mut source, parsed, &child)?;
            }
            "driver" if is_pci => {
                let name = child.required_attr("name")?;
                if name != "vfio" {
                    return Err(child.unsupported_value("attribute 'name'", name, &[("vfio", ())]));
                }
                child.finish_attrs()?;
                child.leaf()?;
                set_once(&mut driver, (), &child)?;
            }
            "rom" if is_pci => {
                let bar = child.on_off_attr("bar")?;
                child.finish_attrs()?;
                child.leaf()?;
                set_once(&mut rom, bar, &child)?;
            }
            "boot" => {
                let order = boot_order(&mut child)?;
                set_once(&mut boot, order, &child)?;
            }
            "address" => {
                let parsed = parse_address(&mut child)?;
                set_once(&mut address, parsed, &child)?;
            }
            _ => return Err(child.unsupported()),
        }
    }
    let source = source.ok_or_else(|| elem.missing("element <source>"))?;
    Ok(HostDev {
        source,
        managed,
        driver_vfio: driver.is_some(),
        boot_order: boot,
        rom_bar: rom.flatten(),
        address,
        line: elem.source_line(),
    })
}

fn parse_hostdev_pci_source(elem: &mut Elem) -> Result<HostDevSource> {
    elem.finish_attrs()?;
    let mut found = None;
    for mut child in elem.children()? {
        if child.name() != "address" {
            return Err(child.unsupported());
        }
        let parsed = HostDevSource::Pci {
            domain: child.c_uint_attr("domain", 0xffff)?.unwrap_or(0) as u16,
            bus: child.c_uint_attr("bus", 0xff)?.unwrap_or(0) as u8,
            slot: child.c_uint_attr("slot", 0x1f)?.unwrap_or(0) as u8,
            function: child.c_uint_attr("function", 7)?.unwrap_or(0) as u8,
        };
        child.finish_attrs()?;
        child.leaf()?;
        set_once(&mut found, parsed, &child)?;
    }
    found.ok_or_else(|| elem.missing("element <address> (the host PCI device)"))
}

fn parse_hostdev_usb_source(elem: &mut Elem) -> Result<HostDevSource> {
    let optional = match elem.attr("startupPolicy") {
        None | Some("mandatory") => false,
        Some("optional") => true,
        Some(other) => {
            return Err(elem.enum_error(
                "attribute 'startupPolicy'",
                other,
                &[("mandatory", ()), ("optional", ())],
            ))
        }
    };
    elem.finish_attrs()?;
    let (mut vendor, mut product, mut place) = (None, None, None);
    for mut child in elem.children()? {
        match child.name() {
            name @ ("vendor" | "product") => {
                let id = child
                    .c_uint_attr("id", 0xffff)?
                    .ok_or_else(|| child.missing("attribute 'id'"))?
                    as u16;
                child.finish_attrs()?;
                child.leaf()?;
                let slot = if name == "vendor" {
                    &mut vendor
                } else {
                    &mut product
                };
                set_once(slot, id, &child)?;
            }
            "address" => {
                let bus = child.c_uint_attr("bus", u32::MAX.into())?;
                let device = child.c_uint_attr("device", u32::MAX.into())?;
                child.finish_attrs()?;
                child.leaf()?;
                let (Some(bus), Some(device)) = (bus, device) else {
                    return Err(child.missing("attributes 'bus' and 'device'"));
                };
                set_once(&mut place, (bus as u32, device as u32), &child)?;
            }
            _ => return Err(child.unsupported()),
        }
    }
    match (vendor, product, place) {
        (None, Some(_), _) => return Err(elem.missing("element <vendor>")),
        (Some(_), None, _) => return Err(elem.missing("element <product>")),
        (None, None, None) => {
            return Err(elem.missing("element <vendor> and <product>, or <address>"))
        }
        _ => {}
    }
    Ok(HostDevSource::Usb {
        vendor,
        product,
        bus: place.map(|p| p.0),
        device: place.map(|p| p.1),
        optional,
    })
}

/// A disk, and the bus its `<target bus=>` stated (None: inferred from the name).
fn parse_disk(elem: &mut Elem) -> Result<(Disk, Option<DiskBus>)> {
    let disk_type = elem
        .enum_attr("type", DISK_TYPES)?
        .unwrap_or(DiskType::File);
    let device = elem
        .enum_attr("device", DISK_DEVICES)?
        .unwrap_or(DiskDevice::Disk);
    elem.finish_attrs()?;
    let mut driver = None;
    let mut source: Option<Option<String>> = None;
    let mut volume: Option<Option<DiskVolume>> = None;
    let mut network = None;
    let mut auth = None;
    let mut target = None;
    let mut stated_bus = None;
    let mut readonly = false;
    let mut shareable = false;
    let mut serial = None;
    let mut boot = None;
    let mut address = None;
    let mut iotune = None;
    let mut iotune_line = SourceLine::NONE;
    let mut source_line = SourceLine::NONE;
    let mut serial_line = SourceLine::NONE;
    let mut shareable_line = SourceLine::NONE;
    for mut child in elem.children()? {
        match child.name() {
            "driver" => {
                if let Some(name) = child.attr("name") {
                    if name != "qemu" {
                        return Err(child.enum_error("attribute 'name'", name, &[("qemu", ())]));
                    }
                }
                let stated = child.enum_attr("type", DISK_FORMATS)?;
                let parsed = DiskDriver {
                    format: stated.unwrap_or(DiskFormat::Raw),
                    format_stated: stated.is_some(),
                    cache: child.enum_attr("cache", DISK_CACHES)?,
                    io: child.enum_attr("io", DISK_IOS)?,
                    discard: child.enum_attr("discard", DISK_DISCARDS)?,
                    detect_zeroes: child.enum_attr("detect_zeroes", DETECT_ZEROES)?,
                    iothread: child.u32_attr("iothread")?,
                    error_policy: child.enum_attr("error_policy", DISK_ERROR_POLICIES)?,
                    rerror_policy: child.enum_attr("rerror_policy", DISK_ERROR_POLICIES)?,
                    copy_on_read: child.on_off_attr("copy_on_read")?,
                    // libvirt reads 0 as "not set" and drops it.
                    queues: child.u32_attr("queues")?.filter(|n| *n != 0),
                    queue_size: child.u32_attr("queue_size")?.filter(|n| *n != 0),
                    line: child.source_line(),
                };
                if parsed.rerror_policy == Some(DiskErrorPolicy::Enospace) {
                    return Err(child.invalid(
                        "attribute 'rerror_policy'",
                        "enospace",
                        "enospace is a write error policy only",
                    ));
                }
                child.finish_attrs()?;
                child.leaf()?;
                set_once(&mut driver, parsed, &child)?;
            }
            "source" if disk_type == DiskType::Network => {
                let (parsed, source_auth) = parse_network_source(&mut child)?;
                set_once(&mut network, parsed, &child)?;
                if let Some(source_auth) = source_auth {
                    set_once(&mut auth, source_auth, &child)?;
                }
                source_line = child.source_line();
            }
            "auth" if disk_type == DiskType::Network => {
                let parsed = parse_disk_auth(&mut child, true)?;
                set_once(&mut auth, parsed, &child)?;
            }
            "source" if disk_type == DiskType::Volume => {
                let parsed = parse_volume_source(&mut child)?;
                set_once(&mut volume, parsed, &child)?;
                source_line = child.source_line();
            }
            "source" => {
                let attr = if disk_type == DiskType::Block {
                    "dev"
                } else {
                    "file"
                };
                let path = child.attr(attr).map(str::to_string);
                child.finish_attrs()?;
                child.leaf()?;
                if path.as_deref() == Some("") {
                    return Err(child.invalid(&format!("attribute '{attr}'"), "", "path is empty"));
                }
                set_once(&mut source, path, &child)?;
                source_line = child.source_line();
            }
            "target" => {
                let dev = child.required_attr("dev")?.to_string();
                let bus = child.enum_attr("bus", DISK_BUSES)?;
                stated_bus = bus;
                child.finish_attrs()?;
                child.leaf()?;
                if dev.is_empty() || !dev.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return Err(child.invalid(
                        "attribute 'dev'",
                        &dev,
                        "expected a device name like vda",
                    ));
                }
                let bus = match bus {
                    Some(bus) => bus,
                    None => bus_from_dev(&dev).ok_or_else(|| {
                        child.invalid("attribute 'dev'", &dev, "cannot infer the bus; add bus=")
                    })?,
                };
                let line = child.source_line();
                set_once(&mut target, DiskTarget { dev, bus, line }, &child)?;
            }
            "readonly" | "shareable" => {
                child.finish_attrs()?;
                child.leaf()?;
                let flag = if child.name() == "readonly" {
                    &mut readonly
                } else {
                    shareable_line = child.source_line();
                    &mut shareable
                };
                if *flag {
                    return Err(child.duplicate());
                }
                *flag = true;
            }
            "serial" => {
                child.finish_attrs()?;
                let text = child.text()?;
                let value = text.trim().to_string();
                if !is_disk_serial(&value) {
                    return Err(child.invalid(
                        "value",
                        &value,
                        "serial may only contain A-Z a-z 0-9 _ + - . and space",
                    ));
                }
                set_once(&mut serial, value, &child)?;
                serial_line = child.source_line();
            }
            "boot" => {
                let order = boot_order(&mut child)?;
                set_once(&mut boot, order, &child)?;
            }
            "address" => {
                let parsed = parse_address(&mut child)?;
                set_once(&mut address, parsed, &child)?;
            }
            "iotune" => {
                let parsed = parse_iotune(&mut child)?;
                set_once(&mut iotune, parsed, &child)?;
                iotune_line = child.source_line();
            }
            _ => return Err(child.unsupported()),
        }
    }
    let target = target.ok_or_else(|| DomainError::Missing {
        what: "element <target>".to_string(),
        location: elem.loc(),
    })?;
    let volume = volume.flatten();
    // A volume disk without a volume is an empty cdrom tray; libvirt makes it a file disk.
    let disk_type = match (disk_type, &volume) {
        (DiskType::Volume, None) => DiskType::File,
        _ => disk_type,
    };
    let driver = match (driver, disk_type) {
        // libvirt's post-parse step makes raw explicit for file and block disks; a volume
        // disk keeps an unstated format, which comes from the volume at start.
        (Some(driver), DiskType::File | DiskType::Block | DiskType::Network) => DiskDriver {
            format_stated: true,
            ..driver
        },
        (Some(driver), DiskType::Volume) => driver,
        (None, _) => DiskDriver {
            format_stated: disk_type != DiskType::Volume,
            ..DiskDriver::default()
        },
    };
    let disk = Disk {
        disk_type,
        device,
        driver,
        source: source.flatten(),
        volume,
        network,
        auth,
        target,
        // libvirt keeps no <iotune> without a limit or a group.
        iotune: iotune.filter(|tune: &IoTune| !tune.is_empty()),
        readonly,
        shareable,
        serial,
        boot_order: boot,
        address,
        backing_chain: Vec::new(),
        line: elem.source_line(),
        source_line,
        serial_line,
        shareable_line,
        iotune_line,
    };
    Ok((disk, stated_bus))
}

/// `<iotune>`: each limit at most once, as an unsigned number (0 is libvirt's "not set"), and
/// `<group_name>` (empty is no group, as in libvirt).
fn parse_iotune(elem: &mut Elem) -> Result<IoTune> {
    elem.finish_attrs()?;
    let mut tune = IoTune::default();
    let mut seen = Vec::new();
    let mut group = None;
    for child in elem.children()? {
        child.finish_attrs()?;
        if child.name() == "group_name" {
            let name = child.text()?.trim().to_string();
            set_once(&mut group, name, &child)?;
            continue;
        }
        let limit = IoLimit::from_name(child.name()).ok_or_else(|| child.unsupported())?;
        if seen.contains(&limit) {
            return Err(child.duplicate());
        }
        seen.push(limit);
        tune.set(limit, child.text_u64()?);
    }
    tune.group_name = group.filter(|name| !name.is_empty());
    Ok(tune)
}

/// `<source protocol= name= query=>` of a network disk, with its `<host>`s, `<ssl>` and an
/// `<auth>` written inside it. libvirt's post-parse steps are applied here: an iSCSI name
/// without a LUN gets `/0`.
fn parse_network_source(elem: &mut Elem) -> Result<(NetworkSource, Option<DiskAuth>)> {
    let protocol = match elem.attr("protocol") {
        Some(value) => lookup(NETWORK_PROTOCOLS, value)
            .ok_or_else(|| elem.enum_error("attribute 'protocol'", value, NETWORK_PROTOCOLS))?,
        None => return Err(elem.missing("attribute 'protocol'")),
    };
    let mut name = elem.attr("name").map(str::to_string);
    let query = elem.attr("query").map(str::to_string);
    elem.finish_attrs()?;
    match &name {
        None if protocol != NetworkProtocol::Nbd => {
            return Err(elem.missing("attribute 'name' (the image the protocol serves)"))
        }
        Some(n) if n.is_empty() || n.chars().any(char::is_control) => {
            return Err(elem.invalid(
                "attribute 'name'",
                n,
                "name is empty or has control characters",
            ))
        }
        _ => {}
    }
    if protocol == NetworkProtocol::Iscsi {
        if let Some(n) = &mut name {
            if !n.contains('/') {
                n.push_str("/0");
            }
        }
    }
    if query.is_some()
        && !matches!(
            protocol,
            NetworkProtocol::Http
                | NetworkProtocol::Https
                | NetworkProtocol::Ftp
                | NetworkProtocol::Ftps
        )
    {
        return Err(elem.invalid(
            "attribute 'query'",
            query.as_deref().unwrap_or_default(),
            "only http, https, ftp and ftps URLs have a query",
        ));
    }
    let mut hosts = Vec::new();
    let mut ssl_verify = None;
    let mut auth = None;
    for mut child in elem.children()? {
        match child.name() {
            "host" => hosts.push(parse_network_host(&mut child, protocol)?),
            "ssl" => {
                let verify = child.yes_no_attr("verify")?;
                child.finish_attrs()?;
                child.leaf()?;
                if !matches!(protocol, NetworkProtocol::Https | NetworkProtocol::Ftps) {
                    return Err(child.invalid(
                        "element",
                        "ssl",
                        "only https and ftps sources take <ssl>",
                    ));
                }
                if let Some(verify) = verify {
                    set_once(&mut ssl_verify, verify, &child)?;
                }
            }
            "auth" => {
                let parsed = parse_disk_auth(&mut child, false)?;
                set_once(&mut auth, parsed, &child)?;
            }
            _ => return Err(child.unsupported()),
        }
    }
    Ok((
        NetworkSource {
            protocol,
            name,
            query,
            hosts,
            ssl_verify,
        },
        auth,
    ))
}

/// `<host name port/>` or `<host transport='unix' socket/>`; a TCP host without a port gets
/// the protocol's default one, as libvirt fills it in.
fn parse_network_host(elem: &mut Elem, protocol: NetworkProtocol) -> Result<NetworkHost> {
    let transport = elem.attr("transport").unwrap_or("tcp");
    let name = elem.attr("name").map(str::to_string);
    let port = elem.attr("port").map(str::to_string);
    let socket = elem.attr("socket").map(str::to_string);
    elem.finish_attrs()?;
    elem.leaf()?;
    match transport {
        "tcp" => {
            if socket.is_some() {
                return Err(elem.invalid(
                    "attribute 'socket'",
                    "",
                    "only a unix transport has a socket",
                ));
            }
            let name = match name {
                Some(n) if !n.is_empty() && !n.chars().any(|c| c.is_control() || c == '/') => n,
                Some(n) => return Err(elem.invalid("attribute 'name'", &n, "not a host name")),
                None => return Err(elem.missing("attribute 'name'")),
            };
            let port = match port {
                Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
                    elem.invalid("attribute 'port'", &p, "expected a port number 1-65535")
                })?),
                None => protocol.default_port(),
            };
            Ok(NetworkHost::Tcp { name, port })
        }
        "unix" => {
            if name.is_some() || port.is_some() {
                return Err(elem.invalid(
                    "attribute 'transport'",
                    "unix",
                    "a unix host has a socket, not a name or port",
                ));
            }
            match socket {
                Some(s) if s.starts_with('/') && !s.chars().any(char::is_control) => {
                    Ok(NetworkHost::Unix { socket: s })
                }
                Some(s) => Err(elem.invalid("attribute 'socket'", &s, "must be an absolute path")),
                None => Err(elem.missing("attribute 'socket'")),
            }
        }
        other => Err(elem.enum_error("attribute 'transport'", other, &[("tcp", ()), ("unix", ())])),
    }
}

/// `<auth username><secret type='iscsi|ceph' uuid=|usage=/></auth>`.
fn parse_disk_auth(elem: &mut Elem, under_disk: bool) -> Result<DiskAuth> {
    let username = elem.required_attr("username")?.to_string();
    elem.finish_attrs()?;
    if username.is_empty() || username.chars().any(char::is_control) {
        return Err(elem.invalid(
            "attribute 'username'",
            &username,
            "user name is empty or has control characters",
        ));
    }
    let mut secret = None;
    for mut child in elem.children()? {
        match child.name() {
            "secret" => {
                let secret_type = match child.attr("type") {
                    Some(value) => lookup(SECRET_USAGE_TYPES, value).ok_or_else(|| {
                        child.enum_error("attribute 'type'", value, SECRET_USAGE_TYPES)
                    })?,
                    None => return Err(child.missing("attribute 'type'")),
                };
                let uuid = child.attr("uuid");
                let usage = child.attr("usage");
                child.finish_attrs()?;
                child.leaf()?;
                let lookup_by = match (uuid, usage) {
                    (Some(u), None) => SecretLookup::Uuid(
                        Uuid::parse_str(u)
                            .map_err(|_| child.invalid("attribute 'uuid'", u, "not a UUID"))?,
                    ),
                    (None, Some(u)) if !u.is_empty() => SecretLookup::Usage(u.to_string()),
                    (None, Some(u)) => {
                        return Err(child.invalid("attribute 'usage'", u, "usage name is empty"))
                    }
                    (Some(_), Some(_)) => {
                        return Err(child.invalid(
                            "attribute 'usage'",
                            usage.unwrap_or_default(),
                            "name the secret by uuid or by usage, not both",
                        ))
                    }
                    (None, None) => return Err(child.missing("attribute 'uuid' or 'usage'")),
                };
                set_once(&mut secret, (secret_type, lookup_by), &child)?;
            }
            _ => return Err(child.unsupported()),
        }
    }
    let (secret_type, secret) = secret.ok_or_else(|| elem.missing("element <secret>"))?;
    Ok(DiskAuth {
        username,
        secret_type,
        secret,
        under_disk,
        line: elem.source_line(),
    })
}

/// `<source pool= volume=>` of a volume disk; `None` for `<source/>` (an empty cdrom tray).
/// libvirt's `mode=` (iSCSI pools only) is not modelled, so it is refused by name.
fn parse_volume_source(elem: &mut Elem) -> Result<Option<DiskVolume>> {
    let pool = elem.attr("pool");
    let volume = elem.attr("volume");
    elem.finish_attrs()?;
    elem.leaf()?;
    match (pool, volume) {
        (None, None) => Ok(None),
        (Some(pool), Some(volume)) => {
            for (attr, value) in [("pool", pool), ("volume", volume)] {
                if value.is_empty() {
                    return Err(elem.invalid(&format!("attribute '{attr}'"), "", "name is empty"));
                }
            }
            Ok(Some(DiskVolume {
                pool: pool.to_string(),
                volume: volume.to_string(),
            }))
        }
        (None, Some(_)) => Err(DomainError::Missing {
            what: "attribute 'pool'".to_string(),
            location: elem.loc(),
        }),
        (Some(_), None) => Err(DomainError::Missing {
            what: "attribute 'volume'".to_string(),
            location: elem.loc(),
        }),
    }
}

/// libvirt infers the bus from the target name prefix when `bus=` is absent.
fn bus_from_dev(dev: &str) -> Option<DiskBus> {
    if dev.starts_with("hd") {
        Some(DiskBus::Ide)
    } else if dev.starts_with("sd") {
        Some(DiskBus::Scsi)
    } else if dev.starts_with("vd") {
        Some(DiskBus::Virtio)
    } else if dev.starts_with("fd") {
        Some(DiskBus::Fdc)
    } else {
        None
    }
}

fn parse_controller(elem: &mut Elem) -> Result<Controller> {
    let controller_type = elem.required_attr("type")?;
    let controller_type = lookup(CONTROLLER_TYPES, controller_type)
        .ok_or_else(|| elem.enum_error("attribute 'type'", controller_type, CONTROLLER_TYPES))?;
    let index = elem.u32_attr("index")?;
    if let Some(i) = index.filter(|i| *i > MAX_CONTROLLER_INDEX) {
        return Err(elem.invalid(
            "attribute 'index'",
            &i.to_string(),
            format!("must be at most {MAX_CONTROLLER_INDEX}"),
        ));
    }
    let model = match elem.attr("model") {
        Some(m) if CONTROLLER_MODELS.contains(&m) => Some(m.to_string()),
        Some(m) => {
            let table: Vec<(&str, ())> = CONTROLLER_MODELS.iter().map(|m| (*m, ())).collect();
            return Err(elem.enum_error("attribute 'model'", m, &table));
        }
        None => None,
    };
    if controller_type == ControllerType::Pci {
        if let Some(m) = model.as_deref() {
            check_pci_controller_model(elem, m)?;
        }
    }
    // `ports=` of USB controllers; libvirt ignores it on the others (and virtio-serial's
    // ports are another thing), so there it stays an unsupported attribute.
    let ports = if controller_type == ControllerType::Usb {
        elem.u32_attr("ports")?
    } else {
        None
    };
    elem.finish_attrs()?;
    let mut controller = Controller {
        controller_type,
        // u32::MAX marks "absent": normalization assigns the lowest free index.
        index: index.unwrap_or(UNSET_INDEX),
        model,
        driver_queues: None,
        address: None,
        ports,
        model_name: None,
        target: None,
        master_startport: None,
        line: elem.source_line(),
        driver_line: SourceLine::NONE,
        model_name_line: SourceLine::NONE,
        master_line: SourceLine::NONE,
    };
    for mut child in elem.children()? {
        match child.name() {
            "model" if controller_type == ControllerType::Pci => {
                let name = child.required_attr("name")?;
                if !PCI_CONTROLLER_MODEL_NAMES.contains(&name) {
                    let table: Vec<(&str, ())> = PCI_CONTROLLER_MODEL_NAMES
                        .iter()
                        .map(|m| (*m, ()))
                        .collect();
                    return Err(child.enum_error("attribute 'name'", name, &table));
                }
                let name = name.to_string();
                child.finish_attrs()?;
                child.leaf()?;
                set_once(&mut controller.model_name, name, &child)?;
                controller.model_name_line = child.source_line();
            }
            "target" if controller_type == ControllerType::Pci => {
                let target = ControllerTarget {
                    // libvirt reads these with base 0 (port='0x10') and bounds them to a byte.
                    chassis_nr: child.c_uint_attr("chassisNr", 0xff)?.map(|n| n as u32),
                    chassis: child.c_uint_attr("chassis", 0xff)?.map(|n| n as u32),
                    port: child.c_uint_attr("port", 0xff)?.map(|n| n as u32),
                    line: child.source_line(),
                };
                child.finish_attrs()?;
                child.leaf()?;
                set_once(&mut controller.target, target, &child)?;
            }
            "master" if controller_type == ControllerType::Usb => {
                let startport =
                    child
                        .u32_attr("startport")?
                        .ok_or_else(|| DomainError::Missing {
                            what: "attribute 'startport'".to_string(),
                            location: child.loc(),
                        })?;
                child.finish_attrs()?;
                child.leaf()?;
                set_once(&mut controller.master_startport, startport, &child)?;
                controller.master_line = child.source_line();
            }
            "driver" => {
                let queues = child
                    .u32_attr("queues")?
                    .ok_or_else(|| DomainError::Missing {
                        what: "attribute 'queues'".to_string(),
                        location: child.loc(),
                    })?;
                child.finish_attrs()?;
                child.leaf()?;
                set_once(&mut controller.driver_queues, queues, &child)?;
                controller.driver_line = child.source_line();
            }
            "address" => {
                let parsed = parse_address(&mut child)?;
                set_once(&mut controller.address, parsed, &child)?;
            }
            _ => return Err(child.unsupported()),
        }
    }
    Ok(controller)
}

/// The PCI controller models oxvirt lays out (`pci-root`, `pcie-root`, `pcie-root-port`,
/// `pci-bridge`, `dmi-to-pci-bridge`, `pcie-to-pci-bridge`); the other models libvirt knows
/// (switch ports, expander buses) are refused as unsupported.
fn check_pci_controller_model(elem: &Elem, model: &str) -> Result<()> {
    if PCI_CONTROLLER_MODELS.contains(&model) {
        return Ok(());
    }
    let table: Vec<(&str, ())> = PCI_CONTROLLER_MODELS.iter().map(|m| (*m, ())).collect();
    if LIBVIRT_ONLY_PCI_CONTROLLER_MODELS.contains(&model) {
        return Err(elem.unsupported_value("attribute 'model'", model, &table));
    }
    Err(elem.enum_error("attribute 'model'", model, &table))
}

fn parse_interface(elem: &mut Elem) -> Result<Interface> {
    let interface_type = elem.required_attr("type")?;
    let interface_type = lookup(INTERFACE_TYPES, interface_type)
        .ok_or_else(|| elem.enum_error("attribute 'type'", interface_type, INTERFACE_TYPES))?;
    elem.finish_attrs()?;
    let mut iface = Interface {
        interface_type,
        mac: None,
        source: InterfaceSource::None,
        model: None,
        driver_name: None,
        driver_queues: None,
        target_dev: None,
        target_managed: None,
        mtu: None,
        link_up: None,
        boot_order: None,
        address: None,
        line: elem.source_line(),
        model_line: SourceLine::NONE,
        driver_line: SourceLine::NONE,
        target_line: SourceLine::NONE,
        mtu_line: SourceLine::NONE,
        link_line: SourceLine::NONE,
    };
    let mut seen = Vec::new();
    for mut child in elem.children()? {
        let name = child.name();
        if name != "boot" && name != "address" {
            if seen.contains(&name) {
                return Err(child.duplicate());
            }
            seen.push(name);
        }
        match name {
            "mac" => {
                let text = child.required_attr("address")?;
                let mac = mac_at(text, &child.loc())?;
                child.finish_attrs()?;
                child.leaf()?;
                if mac.0[0] & 1 == 1 {
                    return Err(child.invalid(
                        "attribute 'address'",
                        text,
                        "a multicast MAC cannot be a NIC address",
                    ));
                }
                iface.mac = Some(mac);
            }
            "source" => {
                let source = match interface_type {
                    InterfaceType::Network => {
                        InterfaceSource::Network(child.required_attr("network")?.to_string())
                    }
                    InterfaceType::Bridge => {
                        InterfaceSource::Bridge(child.required_attr("bridge")?.to_string())
                    }
                    InterfaceType::Direct => {
                        let dev = child.required_attr("dev")?.to_string();
                        let mode = child
                            .enum_attr("mode", DIRECT_MODES)?
                            .unwrap_or(DirectMode::Vepa);
                        if !is_host_ifname(&dev) {
                            return Err(child.invalid(
                                "attribute 'dev'",
                                &dev,
                                "not a valid host interface name (1-15 characters, no '/' or spaces)",
                            ));
                        }
                        InterfaceSource::Direct { dev, mode }
                    }
                    InterfaceType::User | InterfaceType::Ethernet => {
                        return Err(child.unsupported())
                    }
                };
                child.finish_attrs()?;
                child.leaf()?;
                iface.source = source;
            }
            "model" => {
                let model = child.required_attr("type")?;
                if !NIC_MODELS.contains(&model) {
                    let table: Vec<(&str, ())> = NIC_MODELS.iter().map(|m| (*m, ())).collect();
                    return Err(child.enum_error("attribute 'type'", model, &table));
                }
                child.finish_attrs()?;
                child.leaf()?;
                iface.model = Some(model.to_string());
                iface.model_line = child.source_line();
            }
            "driver" => {
                iface.driver_name = child.enum_attr("name", INTERFACE_DRIVERS)?;
                iface.driver_queues = child.u32_attr("queues")?;
                child.finish_attrs()?;
                child.leaf()?;
                iface.driver_line = child.source_line();
            }
            "target" => {
                let managed = child.yes_no_attr("managed")?;
                // libvirt lets an ethernet target give only managed=; elsewhere dev is needed.
                let dev = if managed.is_some() {
                    child.attr("dev")
                } else {
                    Some(child.required_attr("dev")?)
                };
                child.finish_attrs()?;
                child.leaf()?;
                if let Some(dev) = dev {
                    if !is_host_ifname(dev) {
                        return Err(child.invalid(
                            "attribute 'dev'",
                            dev,
                            "not a valid host interface name (1-15 characters, no '/' or spaces)",
                        ));
                    }
                }
                if managed == Some(false) && interface_type != InterfaceType::Ethernet {
                    return Err(DomainError::Invalid {
                        reason: "unmanaged target dev is only supported on interfaces of type 'ethernet'".to_string(),
                        location: child.loc(),
                    });
                }
                iface.target_dev = dev.map(str::to_string);
                iface.target_managed = managed;
                iface.target_line = child.source_line();
            }
            "mtu" => {
                let size = child
                    .u32_attr("size")?
                    .ok_or_else(|| DomainError::Missing {
                        what: "attribute 'size'".to_string(),
                        location: child.loc(),
                    })?;
                child.finish_attrs()?;
                child.leaf()?;
                iface.mtu = Some(size);
                iface.mtu_line = child.source_line();
            }
            "link" => {
                let state = child.required_attr("state")?;
                let up = lookup(&[("up", true), ("down", false)], state).ok_or_else(|| {
                    child.enum_error("attribute 'state'", state, &[("up", ()), ("down", ())])
                })?;
                child.finish_attrs()?;
                child.leaf()?;
                iface.link_up = Some(up);
                iface.link_line = child.source_line();
            }
            "boot" => {
                let order = boot_order(&mut child)?;
                set_once(&mut iface.boot_order, order, &child)?;
            }
            "address" => {
                let parsed = parse_address(&mut child)?;
                set_once(&mut iface.address, parsed, &child)?;
            }
            _ => return Err(child.unsupported()),
        }
    }
    if !matches!(
        interface_type,
        InterfaceType::User | InterfaceType::Ethernet
    ) && iface.source == InterfaceSource::None
    {
        return Err(DomainError::Missing {
            what: "element <source>".to_string(),
            location: elem.loc(),
        });
    }
    Ok(iface)
}

fn parse_chardev(elem: &mut Elem) -> Result<CharDevice> {
    let kind = elem.required_attr("type")?;
    let table = [
        ("pty", ()),
        ("file", ()),
        ("unix", ()),
        ("tcp", ()),
        ("udp", ()),
        ("null", ()),
        ("stdio", ()),
        ("vc", ()),
    ];
    if lookup(&table, kind).is_none() {
        return Err(elem.enum_error("attribute 'type'", kind, &table));
    }
    elem.finish_attrs()?;
    let mut source = None;
    let mut target = None;
    // tcp and udp: every <source mode host service> (udp has a bind and a connect one) and
    // tcp's <protocol>.
    let mut net_sources: Vec<(
        UnixMode,
        Option<String>,
        Option<String>,
        crate::error::Location,
    )> = Vec::new();
    let mut protocol = None;
    for mut child in elem.children()? {
        match child.name() {
            "source" if matches!(kind, "tcp" | "udp") => {
                let mode = child
                    .enum_attr("mode", UNIX_MODES)?
                    .unwrap_or(UnixMode::Connect);
                let host = child.attr("host").map(str::to_string);
                let service = child.attr("service").map(str::to_string);
                child.finish_attrs()?;
                child.leaf()?;
                if net_sources.iter().any(|(m, ..)| *m == mode)
                    || kind == "tcp" && !net_sources.is_empty()
                {
                    return Err(child.duplicate());
                }
                net_sources.push((mode, host, service, child.loc()));
            }
            "protocol" if kind == "tcp" => {
                let value = child.required_attr("type")?;
                let parsed = match lookup(TCP_PROTOCOLS, value) {
                    Some(p) => p,
                    // TLS needs host certificates oxvirt does not manage.
                    None if matches!(value, "telnets" | "tls") => {
                        return Err(child.unsupported_value(
                            "attribute 'type'",
                            value,
                            TCP_PROTOCOLS,
                        ))
                    }
                    None => return Err(child.enum_error("attribute 'type'", value, TCP_PROTOCOLS)),
                };
                child.finish_attrs()?;
                child.leaf()?;
                set_once(&mut protocol, parsed, &child)?;
            }
            "source" => {
                let parsed = match kind {
                    "file" => {
                        let path = child.required_attr("path")?.to_string();
                        let append = child.on_off_attr("append")?;
                        CharSource::File { path, append }
                    }
                    "unix" => {
                        let path = child.required_attr("path")?.to_string();
                        let mode = child
                            .enum_attr("mode", UNIX_MODES)?
                            .unwrap_or(UnixMode::Connect);
                        CharSource::Unix { path, mode }
                    }
                    _ => return Err(child.unsupported()),
                };
                child.finish_attrs()?;
                child.leaf()?;
                set_once(&mut source, parsed, &child)?;
            }
            "target" => {
                let target_type = match child.attr("type") {
                    // libvirt gives a PCI serial port a PCI address; oxvirt neither places
                    // nor runs one (only ISA serial ports and virtio consoles).
                    Some("pci-serial") => {
                        let table: Vec<(&str, ())> = CHAR_TARGET_TYPES
                            .iter()
                            .filter(|m| **m != "pci-serial")
                            .map(|m| (*m, ()))
                            .collect();
                        return Err(child.unsupported_value(
                            "attribute 'type'",
                            "pci-serial",
                            &table,
                        ));
                    }
                    Some(t) if CHAR_TARGET_TYPES.contains(&t) => Some(t.to_string()),
                    Some(t) => {
                        let table: Vec<(&str, ())> =
                            CHAR_TARGET_TYPES.iter().map(|m| (*m, ())).collect();
                        return Err(child.enum_error("attribute 'type'", t, &table));
                    }
                    None => None,
                };
                let port = child.u32_attr("port")?;
                child.finish_attrs()?;
                let mut model = None;
                for mut grandchild in child.children()? {
                    if grandchild.name() != "model" {
                        return Err(grandchild.unsupported());
                    }
                    let name = grandchild.required_attr("name")?;
                    if name == "pci-serial" {
                        let table: Vec<(&str, ())> = SERIAL_TARGET_MODELS
                            .iter()
                            .filter(|m| **m != "pci-serial")
                            .map(|m| (*m, ()))
                            .collect();
                        return Err(grandchild.unsupported_value("attribute 'name'", name, &table));
                    }
                    if !SERIAL_TARGET_MODELS.contains(&name) {
                        let table: Vec<(&str, ())> =
                            SERIAL_TARGET_MODELS.iter().map(|m| (*m, ())).collect();
                        return Err(grandchild.enum_error("attribute 'name'", name, &table));
                    }
                    grandchild.finish_attrs()?;
                    grandchild.leaf()?;
                    set_once(&mut model, name.to_string(), &grandchild)?;
                }
                set_once(
                    &mut target,
                    CharTarget {
                        target_type,
                        port,
                        model,
                        line: child.source_line(),
                    },
                    &child,
                )?;
            }
            _ => return Err(child.unsupported()),
        }
    }
    let missing = |what: &str, location: &crate::error::Location| DomainError::Missing {
        what: format!("attribute '{what}'"),
        location: location.clone(),
    };
    let source = match (kind, source) {
        ("pty", _) => CharSource::Pty,
        ("null", _) => CharSource::Null,
        ("stdio", _) => CharSource::Stdio,
        ("vc", _) => CharSource::Vc,
        ("tcp", _) => {
            let Some((mode, host, service, location)) = net_sources.pop() else {
                return Err(elem.missing("element <source>"));
            };
            CharSource::Tcp {
                mode,
                host: host.ok_or_else(|| missing("host", &location))?,
                service: service.ok_or_else(|| missing("service", &location))?,
                protocol: protocol.unwrap_or(TcpProtocol::Raw),
            }
        }
        ("udp", _) => {
            let find = |wanted: UnixMode| {
                net_sources
                    .iter()
                    .find(|(mode, ..)| *mode == wanted)
                    .map(|(_, host, service, location)| (host.clone(), service.clone(), location))
            };
            let (connect_host, connect_service) = match find(UnixMode::Connect) {
                Some((host, Some(service), _)) => (host, service),
                Some((_, None, location)) => return Err(missing("service", location)),
                None => return Err(elem.missing("element <source mode='connect'> with a service")),
            };
            let (bind_host, bind_service) = match find(UnixMode::Bind) {
                Some((host, service, _)) => (host, service),
                None => (None, None),
            };
            CharSource::Udp {
                bind_host,
                bind_service,
                connect_host,
                connect_service,
            }
        }
        (_, Some(source)) => source,
        (_, None) => {
            return Err(DomainError::Missing {
                what: "element <source>".to_string(),
                location: elem.loc(),
            })
        }
    };
    Ok(CharDevice {
        source,
        target: target.unwrap_or_default(),
        line: elem.source_line(),
    })
}

fn parse_input(elem: &mut Elem) -> Result<Input> {
    let input_type = elem.required_attr("type")?;
    let input_type = lookup(INPUT_TYPES, input_type)
        .ok_or_else(|| elem.enum_error("attribute 'type'", input_type, INPUT_TYPES))?;
    let bus = elem.enum_attr("bus", INPUT_BUSES)?;
    elem.finish_attrs()?;
    let mut address = None;
    for mut child in elem.children()? {
        match child.name() {
            "address" => {
                let parsed = parse_address(&mut child)?;
                set_once(&mut address, parsed, &child)?;
            }
            _ => return Err(child.unsupported()),
        }
    }
    // libvirt's x86 default: ps2 for mouse/keyboard, usb for tablet.
    let bus = bus.unwrap_or(match input_type {
        InputType::Tablet => InputBus::Usb,
        _ => InputBus::Ps2,
    });
    Ok(Input {
        input_type,
        bus,
        address,
        line: elem.source_line(),
    })
}

fn parse_graphics(elem: &mut Elem) -> Result<Graphics> {
    let kind = elem.required_attr("type")?;
    let spice = match kind {
        "vnc" => false,
        "spice" => true,
        _ => return Err(elem.enum_error("attribute 'type'", kind, &[("vnc", ()), ("spice", ())])),
    };
    let mut port_any = false;
    let port = match elem.attr("port") {
        None => None,
        Some(p) => {
            let n: i32 = p
                .trim()
                .parse()
                .map_err(|_| elem.invalid("attribute 'port'", p, "expected a TCP port"))?;
            match n {
                -1 => {
                    port_any = spice;
                    None
                }
                0..=65535 => Some(n as u16),
                _ => return Err(elem.invalid("attribute 'port'", p, "expected a TCP port")),
            }
        }
    };
    let tls_port = if spice { elem.attr("tlsPort") } else { None };
    let autoport_attr = elem.yes_no_attr("autoport")?;
    let listen_attr = elem.attr("listen").map(str::to_string);
    let socket_attr = if spice {
        None
    } else {
        elem.attr("socket").map(str::to_string)
    };
    let passwd = elem.attr("passwd").map(str::to_string);
    elem.finish_attrs()?;
    let mut listen_child: Option<VncListen> = None;
    let mut image: Option<(SpiceImageCompression, SourceLine)> = None;
    for mut child in elem.children()? {
        match child.name() {
            "listen" => {
                let kind = child.required_attr("type")?;
                let listen = match kind {
                    "address" => VncListen::Address(child.attr("address").map(str::to_string)),
                    "socket" if !spice => {
                        VncListen::Socket(child.required_attr("socket")?.to_string())
                    }
                    "none" if spice => VncListen::None,
                    other => {
                        let table: &[(&str, ())] = if spice {
                            &[("address", ()), ("none", ())]
                        } else {
                            &[("address", ()), ("socket", ())]
                        };
                        return Err(child.enum_error("attribute 'type'", other, table));
                    }
                };
                child.finish_attrs()?;
                child.leaf()?;
                set_once(&mut listen_child, listen, &child)?;
            }
            "image" if spice => {
                let compression = child
                    .enum_attr("compression", SPICE_IMAGE_COMPRESSIONS)?
                    .ok_or_else(|| child.missing("attribute 'compression'"))?;
                child.finish_attrs()?;
                child.leaf()?;
                set_once(&mut image, (compression, child.source_line()), &child)?;
            }
            _ => return Err(child.unsupported()),
        }
    }
    let listen = match (socket_attr, listen_attr, listen_child) {
        (Some(socket), _, Some(VncListen::Socket(s))) if s != socket => {
            return Err(elem.invalid(
                "attribute 'socket'",
                &socket,
                "differs from <listen socket=>",
            ))
        }
        (_, Some(addr), Some(VncListen::Address(Some(a)))) if a != addr => {
            return Err(elem.invalid(
                "attribute 'listen'",
                &addr,
                "differs from <listen address=>",
            ))
        }
        (Some(socket), _, _) => VncListen::Socket(socket),
        (None, Some(addr), _) => VncListen::Address(Some(addr)),
        (None, None, Some(listen)) => listen,
        (None, None, None) => VncListen::Address(None),
    };
    if !spice {
        // libvirt: autoport defaults to yes when no port is given; an explicit port turns
        // autoport off. port='0' is no port at all, but still turns autoport off (libvirt 9.0
        // prints `autoport='no'` without a port).
        let autoport = match (port, autoport_attr) {
            (_, Some(a)) => a,
            (Some(_), None) => false,
            (None, None) => true,
        };
        let port = port.filter(|p| *p != 0);
        return Ok(Graphics {
            listen,
            port,
            autoport,
            passwd,
            spice: None,
            line: elem.source_line(),
        });
    }
    let autoport = autoport_attr.unwrap_or(false);
    // libvirt 9.0 (QEMU driver) takes a SPICE TLS port only with TLS on in its qemu.conf, which
    // it is not by default: it refuses the definition; with autoport it drops the port.
    if let Some(tls) = tls_port.filter(|_| !autoport) {
        return Err(elem.invalid(
            "attribute 'tlsPort'",
            tls,
            "a SPICE TLS port needs TLS, which is off (libvirt refuses it the same way)",
        ));
    }
    let (port, port_any) = if autoport {
        (None, false)
    } else {
        (port, port_any)
    };
    // A SPICE display listens nowhere when it says so (<listen type='none'/>) or has neither a
    // port nor autoport: libvirt then drops the ports, autoport and a listen address (the
    // `spice-*` cases).
    let (listen, port, port_any, autoport) =
        if listen == VncListen::None || (port.is_none() && !port_any && !autoport) {
            (VncListen::None, None, false, false)
        } else {
            (listen, port, port_any, autoport)
        };
    Ok(Graphics {
        listen,
        port,
        autoport,
        passwd,
        spice: Some(Spice {
            port_any,
            image_compression: image.map(|(c, _)| c),
            image_line: image.map(|(_, l)| l).unwrap_or_default(),
        }),
        line: elem.source_line(),
    })
}

fn parse_channel(elem: &mut Elem) -> Result<Channel> {
    let kind = elem.required_attr("type")?;
    let table = [("unix", ()), ("pty", ()), ("spicevmc", ())];
    if lookup(&table, kind).is_none() {
        return Err(elem.enum_error("attribute 'type'", kind, &table));
    }
    elem.finish_attrs()?;
    let mut source = None;
    let mut target = None;
    let mut address = None;
    for mut child in elem.children()? {
        match child.name() {
            "source" if kind == "unix" => {
                let mode = child
                    .enum_attr("mode", UNIX_MODES)?
                    .unwrap_or(UnixMode::Connect);
                let path = child.attr("path").map(str::to_string);
                child.finish_attrs()?;
                child.leaf()?;
                if path.is_none() && mode == UnixMode::Connect {
                    return Err(child.missing("attribute 'path'"));
                }
                set_once(&mut source, ChannelSource::Unix { mode, path }, &child)?;
            }
            "target" => {
                let target_type = child.attr("type");
                let name = child.attr("name");
                child.finish_attrs()?;
                child.leaf()?;
                match target_type {
                    Some("virtio") => {}
                    // libvirt: "target type must be specified for channel device".
                    None => return Err(child.missing("attribute 'type'")),
                    Some(other) => {
                        return Err(child.unsupported_value(
                            "attribute 'type'",
                            other,
                            &[("virtio", ())],
                        ))
                    }
                }
                let name = match (name, kind) {
                    (Some(n), _) => n.to_string(),
                    // libvirt's default name of the SPICE agent channel.
                    (None, "spicevmc") => "com.redhat.spice.0".to_string(),
                    (None, _) => return Err(child.missing("attribute 'name'")),
                };
                if name.is_empty() || name.len() > 255 || name.chars().any(|c| c.is_control()) {
                    return Err(child.invalid("attribute 'name'", &name, "not a port name"));
                }
                set_once(&mut target, name, &child)?;
            }
            "address" => {
                let parsed = address_of_kind(
                    &mut child,
                    |a| matches!(a, Address::VirtioSerial(_)),
                    "a virtio channel has a virtio-serial address",
                )?;
                set_once(&mut address, parsed, &child)?;
            }
            _ => return Err(child.unsupported()),
        }
    }
    let target_name = target.ok_or_else(|| {
        // libvirt: "target type must be specified for channel device".
        elem.missing("element <target> (target type must be specified for channel device)")
    })?;
    let source = match kind {
        "pty" => ChannelSource::Pty,
        "spicevmc" => ChannelSource::SpiceVmc,
        // libvirt prints a bind socket whose path it picks without <source>.
        _ => source.unwrap_or(ChannelSource::Unix {
            mode: UnixMode::Bind,
            path: None,
        }),
    };
    Ok(Channel {
        source,
        target_name,
        address,
        line: elem.source_line(),
    })
}

fn parse_redirdev(elem: &mut Elem) -> Result<RedirDev> {
    let bus = elem.attr("bus").unwrap_or("usb");
    if bus != "usb" {
        return Err(elem.enum_error("attribute 'bus'", bus, &[("usb", ())]));
    }
    let kind = elem.required_attr("type")?;
    if kind != "spicevmc" {
        return Err(elem.unsupported_value("attribute 'type'", kind, &[("spicevmc", ())]));
    }
    elem.finish_attrs()?;
    let mut address = None;
    for mut child in elem.children()? {
        match child.name() {
            "address" => {
                let parsed = address_of_kind(
                    &mut child,
                    |a| matches!(a, Address::Usb(_)),
                    "a USB redirection device has a usb address",
                )?;
                set_once(&mut address, parsed, &child)?;
            }
            _ => return Err(child.unsupported()),
        }
    }
    Ok(RedirDev {
        address,
        line: elem.source_line(),
    })
}

fn parse_video(elem: &mut Elem) -> Result<Video> {
    elem.finish_attrs()?;
    let mut model = None;
    let mut address = None;
    for mut child in elem.children()? {
        match child.name() {
            "model" => {
                let kind = child.required_attr("type")?;
                let kind = lookup(VIDEO_MODELS, kind)
                    .ok_or_else(|| child.enum_error("attribute 'type'", kind, VIDEO_MODELS))?;
                let ram_kib = child.u32_attr("ram")?.map(u64::from);
                let vram_kib = child.u32_attr("vram")?.map(u64::from);
                let vgamem_kib = child.u32_attr("vgamem")?.map(u64::from);
                let heads = child.u32_attr("heads")?;
                let primary = child.yes_no_attr("primary")?.unwrap_or(false);
                child.finish_attrs()?;
                if kind != VideoModel::Qxl {
                    // libvirt ignores ram/vgamem on other models; oxvirt refuses them.
                    for (name, value) in [("ram", ram_kib), ("vgamem", vgamem_kib)] {
                        if value.is_some() {
                            return Err(DomainError::UnsupportedAttribute {
                                attribute: name.to_string(),
                                location: child.loc(),
                            });
                        }
                    }
                }
                child.leaf()?;
                set_once(
                    &mut model,
                    Video {
                        model: kind,
                        ram_kib,
                        vram_kib,
                        vgamem_kib,
                        heads,
                        primary,
                        address: None,
                        line: elem.source_line(),
                        model_line: child.source_line(),
                    },
                    &child,
                )?;
            }
            "address" => {
                let parsed = parse_address(&mut child)?;
                set_once(&mut address, parsed, &child)?;
            }
            _ => return Err(child.unsupported()),
        }
    }
    // Without <model>, the video is libvirt's default model, at the line of <video>.
    let mut video = model.unwrap_or(Video {
        model: VideoModel::Cirrus,
        ram_kib: None,
        vram_kib: None,
        vgamem_kib: None,
        heads: None,
        primary: false,
        address: None,
        line: elem.source_line(),
        model_line: SourceLine::NONE,
    });
    video.address = address;
    Ok(video)
}

fn parse_memballoon(elem: &mut Elem) -> Result<MemBalloon> {
    let model = elem.required_attr("model")?;
    let model = lookup(BALLOON_MODELS, model)
        .ok_or_else(|| elem.enum_error("attribute 'model'", model, BALLOON_MODELS))?;
    let autodeflate = elem.on_off_attr("autodeflate")?;
    elem.finish_attrs()?;
    let mut balloon = MemBalloon {
        model,
        autodeflate,
        stats_period: None,
        address: None,
        line: elem.source_line(),
    };
    for mut child in elem.children()? {
        match child.name() {
            "stats" => {
                let period = child
                    .u32_attr("period")?
                    .ok_or_else(|| DomainError::Missing {
                        what: "attribute 'period'".to_string(),
                        location: child.loc(),
                    })?;
                child.finish_attrs()?;
                child.leaf()?;
                set_once(&mut balloon.stats_period, period, &child)?;
            }
            "address" => {
                let parsed = parse_address(&mut child)?;
                set_once(&mut balloon.address, parsed, &child)?;
            }
            _ => return Err(child.unsupported()),
        }
    }
    Ok(balloon)
}

fn parse_rng(elem: &mut Elem) -> Result<Rng> {
    let model = elem.required_attr("model")?;
    if model != "virtio" {
        return Err(elem.enum_error("attribute 'model'", model, &[("virtio", ())]));
    }
    elem.finish_attrs()?;
    let mut backend = None;
    let mut address = None;
    for mut child in elem.children()? {
        match child.name() {
            "backend" => {
                let kind = child.required_attr("model")?;
                if kind != "random" {
                    return Err(child.enum_error("attribute 'model'", kind, &[("random", ())]));
                }
                child.finish_attrs()?;
                let text = child.text()?;
                let path = text.trim();
                // libvirt's default entropy source.
                let path = if path.is_empty() { "/dev/random" } else { path };
                set_once(&mut backend, path.to_string(), &child)?;
            }
            "address" => {
                let parsed = parse_address(&mut child)?;
                set_once(&mut address, parsed, &child)?;
            }
            _ => return Err(child.unsupported()),
        }
    }
    let backend_random = backend.ok_or_else(|| DomainError::Missing {
        what: "element <backend>".to_string(),
        location: elem.loc(),
    })?;
    Ok(Rng {
        backend_random,
        address,
        line: elem.source_line(),
    })
}

/// libvirt's `VIR_XML_PROP_NONZERO` numbers of `<audio>`.
fn nonzero_u32(elem: &mut Elem, name: &'static str) -> Result<Option<u32>> {
    match elem.u32_attr(name)? {
        Some(0) => Err(elem.invalid(&format!("attribute '{name}'"), "0", "zero is not permitted")),
        other => Ok(other),
    }
}

fn parse_audio(elem: &mut Elem) -> Result<Audio> {
    let id = elem
        .u32_attr("id")?
        .ok_or_else(|| elem.missing("attribute 'id'"))?;
    if id == 0 {
        return Err(elem.invalid("attribute 'id'", "0", "audio ids start at 1"));
    }
    let audio_type = elem
        .enum_attr("type", AUDIO_TYPES)?
        .ok_or_else(|| elem.missing("attribute 'type'"))?;
    let timer_period = nonzero_u32(elem, "timerPeriod")?;
    // Attributes of one backend type only; on another type they are unknown attributes.
    let server_name = match audio_type {
        AudioType::Pulseaudio => elem.attr("serverName").map(str::to_string),
        _ => None,
    };
    let sdl_driver = match elem.attr_if(audio_type == AudioType::Sdl, "driver") {
        None => None,
        Some(driver) if SDL_AUDIO_DRIVERS.contains(&driver) => Some(driver.to_string()),
        Some(driver) => {
            let table: Vec<(&str, ())> = SDL_AUDIO_DRIVERS.iter().map(|d| (*d, ())).collect();
            return Err(elem.enum_error("attribute 'driver'", driver, &table));
        }
    };
    let path = match audio_type {
        AudioType::File => elem.attr("path").map(str::to_string),
        _ => None,
    };
    elem.finish_attrs()?;
    let mut input = None;
    let mut output = None;
    for mut child in elem.children()? {
        let slot = match child.name() {
            "input" => &mut input,
            "output" => &mut output,
            _ => return Err(child.unsupported()),
        };
        let stream = parse_audio_stream(&mut child, audio_type)?;
        if slot.is_some() {
            return Err(child.duplicate());
        }
        // An empty <input/> says nothing; libvirt prints none.
        *slot = (stream != AudioStream::default()).then_some(stream);
    }
    Ok(Audio {
        id,
        audio_type,
        timer_period,
        server_name,
        sdl_driver,
        path,
        input,
        output,
        line: elem.source_line(),
    })
}

fn parse_audio_stream(elem: &mut Elem, audio_type: AudioType) -> Result<AudioStream> {
    let mut stream = AudioStream {
        mixing_engine: elem.yes_no_attr("mixingEngine")?,
        fixed_settings: elem.yes_no_attr("fixedSettings")?,
        voices: nonzero_u32(elem, "voices")?,
        buffer_length: nonzero_u32(elem, "bufferLength")?,
        ..AudioStream::default()
    };
    match audio_type {
        AudioType::Alsa => stream.dev = elem.attr("dev").map(str::to_string),
        AudioType::Oss => {
            stream.dev = elem.attr("dev").map(str::to_string);
            stream.try_poll = elem.yes_no_attr("tryPoll")?;
        }
        AudioType::Pulseaudio => {
            stream.name = elem.attr("name").map(str::to_string);
            stream.stream_name = elem.attr("streamName").map(str::to_string);
            stream.latency = nonzero_u32(elem, "latency")?;
        }
        _ => {}
    }
    elem.finish_attrs()?;
    for mut child in elem.children()? {
        if child.name() != "settings" {
            return Err(child.unsupported());
        }
        let settings = AudioSettings {
            frequency: nonzero_u32(&mut child, "frequency")?,
            channels: nonzero_u32(&mut child, "channels")?,
            format: child.enum_attr("format", AUDIO_FORMATS)?,
        };
        child.finish_attrs()?;
        child.leaf()?;
        if stream.fixed_settings != Some(true) {
            return Err(DomainError::Invalid {
                reason: "audio settings specified without fixedSettings='yes'".to_string(),
                location: child.loc(),
            });
        }
        set_once(&mut stream.settings, settings, &child)?;
    }
    if stream.fixed_settings == Some(true) {
        if stream.mixing_engine != Some(true) {
            return Err(DomainError::Invalid {
                reason: "fixed audio settings need mixingEngine='yes'".to_string(),
                location: elem.loc(),
            });
        }
        // libvirt prints <settings/> for fixed settings, even empty ones.
        stream.settings.get_or_insert_with(AudioSettings::default);
    }
    if stream != AudioStream::default() {
        stream.line = elem.source_line();
    }
    Ok(stream)
}

fn parse_sound(elem: &mut Elem) -> Result<Sound> {
    let model = elem.required_attr("model")?;
    let model = lookup(SOUND_MODELS, model)
        .ok_or_else(|| elem.enum_error("attribute 'model'", model, SOUND_MODELS))?;
    elem.finish_attrs()?;
    let mut codecs = Vec::new();
    let mut audio_id = None;
    let mut address = None;
    for mut child in elem.children()? {
        match child.name() {
            "codec" => {
                let codec = child
                    .enum_attr("type", SOUND_CODECS)?
                    .ok_or_else(|| child.missing("attribute 'type'"))?;
                child.finish_attrs()?;
                child.leaf()?;
                codecs.push(codec);
            }
            "audio" => {
                let id = child
                    .u32_attr("id")?
                    .ok_or_else(|| child.missing("attribute 'id'"))?;
                child.finish_attrs()?;
                child.leaf()?;
                // libvirt reads id 0 as "no link".
                set_once(&mut audio_id, id, &child)?;
            }
            "address" => {
                let parsed = parse_address(&mut child)?;
                set_once(&mut address, parsed, &child)?;
            }
            _ => return Err(child.unsupported()),
        }
    }
    // libvirt reads codecs of HD Audio controllers only and drops them elsewhere.
    if !matches!(model, SoundModel::Ich6 | SoundModel::Ich9) {
        codecs.clear();
    }
    Ok(Sound {
        model,
        codecs,
        audio_id: audio_id.filter(|id| *id != 0),
        address,
        line: elem.source_line(),
    })
}

/// `<cpu><numa>`: cells by id, which must be 0..n-1, each once (a cell without `id` takes its
/// position), as libvirt stores them.
fn parse_numa(elem: &mut Elem) -> Result<Vec<NumaCell>> {
    elem.finish_attrs()?;
    let mut cells: Vec<Option<NumaCell>> = Vec::new();
    let children = elem.children()?;
    if children.is_empty() {
        return Err(DomainError::Invalid {
            reason: "NUMA topology defined without NUMA cells".to_string(),
            location: elem.loc(),
        });
    }
    let count = children.len();
    cells.resize(count, None);
    for (index, mut child) in children.into_iter().enumerate() {
        if child.name() != "cell" {
            return Err(child.unsupported());
        }
        let id = child.u32_attr("id")?.unwrap_or(index as u32);
        let cpus = match child.attr("cpus") {
            Some(text) => Some(cpuset_at(text, &child.loc(), "attribute 'cpus'")?),
            None => None,
        };
        let memory = child.required_attr("memory")?;
        let unit = child.attr("unit");
        let mem_access = child.enum_attr("memAccess", MEMORY_ACCESSES)?;
        let discard = child.yes_no_attr("discard")?;
        child.finish_attrs()?;
        child.leaf()?;
        let memory_kib = size_kib_at(memory, unit, &child.loc(), "attribute 'memory'")?;
        let slot = cells.get_mut(id as usize).filter(|slot| slot.is_none());
        let Some(slot) = slot else {
            return Err(DomainError::Invalid {
                reason: "exactly one <cell> per guest NUMA cell, with ids from 0 and no gaps"
                    .to_string(),
                location: child.loc(),
            });
        };
        *slot = Some(NumaCell {
            cpus,
            memory_kib,
            mem_access,
            discard,
            line: child.source_line(),
        });
    }
    // Every slot is filled: n cells took n distinct ids below n.
    Ok(cells.into_iter().flatten().collect())
}

fn parse_numatune(elem: &mut Elem) -> Result<NumaTune> {
    elem.finish_attrs()?;
    let mut tune = NumaTune {
        line: elem.source_line(),
        ..NumaTune::default()
    };
    for mut child in elem.children()? {
        match child.name() {
            "memory" => {
                let mode = child
                    .enum_attr("mode", NUMA_MODES)?
                    .unwrap_or(NumaMode::Strict);
                let placement = child.enum_attr("placement", PLACEMENTS)?;
                let nodeset = match child.attr("nodeset") {
                    Some(text) => Some(cpuset_at(text, &child.loc(), "attribute 'nodeset'")?),
                    None => None,
                };
                child.finish_attrs()?;
                child.leaf()?;
                // libvirt: a nodeset makes the placement static, unless it says auto (which
                // drops the nodeset); static needs one.
                let placement = placement.unwrap_or(if nodeset.is_some() {
                    VcpuPlacement::Static
                } else {
                    VcpuPlacement::Auto
                });
                let nodeset = match placement {
                    VcpuPlacement::Auto => None,
                    VcpuPlacement::Static => Some(nodeset.ok_or_else(|| DomainError::Invalid {
                        reason: "nodeset for NUMA memory tuning must be set if 'placement' is 'static'".to_string(),
                        location: child.loc(),
                    })?),
                };
                let memory = NumaMemory {
                    mode,
                    placement,
                    nodeset,
                    line: child.source_line(),
                };
                set_once(&mut tune.memory, memory, &child)?;
            }
            "memnode" => {
                let cellid = child
                    .u32_attr("cellid")?
                    .ok_or_else(|| child.missing("attribute 'cellid'"))?;
                let mode = child
                    .enum_attr("mode", NUMA_MODES)?
                    .unwrap_or(NumaMode::Strict);
                let nodeset = child.required_attr("nodeset")?;
                let nodeset = cpuset_at(nodeset, &child.loc(), "attribute 'nodeset'")?;
                child.finish_attrs()?;
                child.leaf()?;
                if tune.memnodes.iter().any(|m| m.cellid == cellid) {
                    return Err(child.duplicate());
                }
                tune.memnodes.push(MemNode {
                    cellid,
                    mode,
                    nodeset,
                    line: child.source_line(),
                });
            }
            _ => return Err(child.unsupported()),
        }
    }
    Ok(tune)
}
