//! Disks of running and defined domains (more of [`Domains`]): `attach-disk`, `detach-disk`,
//! `attach-device`/`detach-device`/`update-device` of a `<disk>`, `domblkinfo`, `domblkstat`,
//! `blkdeviotune`, with virsh's `--live`/`--config`/`--current` rules.
//!
//! A disk hot-plugged into a running guest gets exactly what a start would give it: the
//! running definition (`RUN/live.xml`) with the disk in it is normalized (its PCI address: a
//! free slot of bus 0 on pc, a free PCIe root port on q35), resolved as for a start (volume,
//! backing chain) and handed to the engine, whose command-line builder makes its block nodes
//! and device. `--config` changes the definition the domain starts with next.

use std::path::Path;
use std::sync::Arc;

use oxvirt_api::{
    AttachDiskRequest, BlockInfo, BlockIoTune, BlockStat, ChangeMediaRequest, DetachDiskRequest,
    DeviceAction, DeviceRequest, DiskChanged, DomainDisk, IoTuneRequest, MediaAction,
};
use oxvirt_domain::{
    BootDevice, Controller, ControllerType, Disk, DiskBus, DiskDevice, DiskType, Domain, IoLimit,
    IoTune,
};
use oxvirt_xml::escape_attr;

use super::change::{Change, Scope};
use super::domains::{disk_list, Domains};
use super::error::{
    bad_request, definition_error, engine_failure, internal, invalid_state, not_found, DaemonError,
    DaemonResult, ErrorKind,
};
use super::guests::Vm;
use super::volumes::image_error;
use crate::store::DomainRecord;

/// The `<disk>` element of an `attach-disk`, from virsh's options.
fn disk_element(request: &AttachDiskRequest) -> DaemonResult<String> {
    let one_of = |what: &str, value: &Option<String>, allowed: &[&str]| -> DaemonResult<()> {
        match value {
            Some(v) if !allowed.contains(&v.as_str()) => Err(bad_request(format!(
                "--{what} '{v}' is not one of {}",
                allowed.join(", ")
            ))),
            _ => Ok(()),
        }
    };
    one_of("subdriver", &request.subdriver, &["raw", "qcow2"])?;
    one_of(
        "cache",
        &request.cache,
        &["none", "writeback", "writethrough", "directsync", "unsafe"],
    )?;
    one_of("io", &request.io, &["threads", "native", "io_uring"])?;
    one_of("targetbus", &request.targetbus, &["virtio", "scsi"])?;
    one_of("mode", &request.mode, &["readonly", "shareable"])?;
    one_of("sourcetype", &request.sourcetype, &["file", "block"])?;
    if request.source.is_empty() {
        return Err(bad_request("attach-disk needs a source"));
    }
    let block = match request.sourcetype.as_deref() {
        Some(kind) => kind == "block",
        None => {
            use std::os::unix::fs::FileTypeExt;
            std::fs::metadata(&request.source).is_ok_and(|m| m.file_type().is_block_device())
        }
    };
    let (kind, attribute) = if block {
        ("block", "dev")
    } else {
        ("file", "file")
    };
    let mut driver = format!(
        "<driver name='qemu' type='{}'",
        request.subdriver.as_deref().unwrap_or("raw")
    );
    for (name, value) in [("cache", &request.cache), ("io", &request.io)] {
        if let Some(value) = value {
            driver.push_str(&format!(" {name}='{value}'"));
        }
    }
    driver.push_str("/>");
    let mode = match request.mode.as_deref() {
        Some("readonly") => "<readonly/>",
        Some("shareable") => "<shareable/>",
        _ => "",
    };
    // As virsh: without --targetbus the target has no bus, which its name gives (sdb: scsi).
    let bus = request
        .targetbus
        .as_deref()
        .map(|bus| format!(" bus='{bus}'"))
        .unwrap_or_default();
    Ok(format!(
        "<disk type='{kind}' device='disk'>{driver}<source {attribute}='{}'/><target dev='{}'{bus}/>{mode}</disk>",
        escape_attr(&request.source),
        escape_attr(&request.target),
    ))
}

/// The one `<disk>` of a device XML text, read as a definition reads it. Errors name the line
/// of `device_xml` (the device is parsed in a small domain whose own text is all on line 1).
fn parse_disk(device_xml: &str) -> DaemonResult<Disk> {
    let document =
        oxvirt_xml::parse(device_xml).map_err(|err| bad_request(format!("device XML: {err}")))?;
    let root = document.root_element();
    let name = root.tag_name().name();
    if name != "disk" {
        return Err(DaemonError::new(
            ErrorKind::Unsupported,
            format!(
                "device XML: <{name}> at line {}: only <disk> devices can be attached, detached or updated this way (interfaces: attach-interface, detach-interface)",
                document.text_pos_at(root.range().start).row
            ),
        ));
    }
    let stated_address = root
        .children()
        .any(|child| child.is_element() && child.tag_name().name() == "address");
    // The element alone, without an XML declaration or comments around it (its lines kept).
    let range = root.range();
    let before_lines = device_xml[..range.start].matches('\n').count();
    let element = format!("{}{}", "\n".repeat(before_lines), &device_xml[range]);
    let wrapper = format!(
        "<domain type='qemu'><name>device</name><memory>131072</memory><os><type arch='x86_64' machine='pc'>hvm</type></os><devices>{element}\n</devices></domain>"
    );
    let domain = oxvirt_domain::parse_domain_xml(&wrapper)
        .map_err(|err| definition_error(err).context("device XML"))?;
    let mut disk = domain
        .devices
        .disks
        .into_iter()
        .next()
        .ok_or_else(|| internal("device XML", "the <disk> was not read"))?;
    // The small domain's layout is not the guest's: the guest's definition places it.
    if !stated_address {
        disk.address = None;
    }
    Ok(disk)
}

/// `domain` with `disk` added, normalized (the disk gets its address as in a definition). A
/// SCSI disk whose controller the domain lacks gets a virtio-scsi one, as libvirt hot-plugs
/// for it (the normalizer alone would add libvirt's define-time default, an lsilogic, which
/// the guest would need another driver for); `--config` gets the same, so that the next start
/// has the controller the running guest has.
fn with_disk(domain: &Domain, disk: &Disk) -> DaemonResult<Domain> {
    let mut new = domain.clone();
    new.devices.disks.push(disk.clone());
    let normalize = |domain: &Domain| {
        oxvirt_domain::parse_domain_xml(&domain.to_xml()).map_err(definition_error)
    };
    let has_scsi = |domain: &Domain, index: u32| {
        domain
            .devices
            .controllers
            .iter()
            .any(|c| c.controller_type == ControllerType::Scsi && c.index == index)
    };
    let added: Vec<u32> = normalize(&new)?
        .devices
        .controllers
        .iter()
        .filter(|c| c.controller_type == ControllerType::Scsi && !has_scsi(domain, c.index))
        .map(|c| c.index)
        .collect();
    for index in added {
        new.devices.controllers.push(Controller::new(
            ControllerType::Scsi,
            index,
            Some("virtio-scsi"),
        ));
    }
    normalize(&new)
}

/// The guest names a disk by its bus (vda for virtio, sda for scsi): a name of another bus is
/// refused, as it would be a different disk in the guest than the definition says.
fn check_target_name(disk: &Disk) -> DaemonResult<()> {
    let (prefix, bus) = match disk.target.bus {
        DiskBus::Virtio => ("vd", "virtio"),
        DiskBus::Scsi => ("sd", "scsi"),
        _ => return Ok(()),
    };
    if disk.target.dev.starts_with(prefix) {
        return Ok(());
    }
    Err(bad_request(format!(
        "target {}: a disk on bus '{bus}' is named {prefix}X ({prefix}a, {prefix}b, ...)",
        disk.target.dev
    )))
}

/// Disks the running guest can gain and lose: virtio disks, and SCSI disks and CD-ROMs.
fn hot_pluggable(disk: &Disk) -> bool {
    match disk.target.bus {
        DiskBus::Virtio => disk.device == DiskDevice::Disk,
        DiskBus::Scsi => true,
        _ => false,
    }
}

/// The disk of `domain` whose target or source is `name`.
fn find_disk(domain: &Domain, name: &str) -> Option<usize> {
    domain
        .devices
        .disks
        .iter()
        .position(|d| d.target.dev == name || d.source.as_deref() == Some(name))
}

fn no_such_disk(name: &str) -> DaemonError {
    not_found(format!(
        "No disk found whose source path or target is {name}"
    ))
}

/// The disk the guest booted from: the one with the first `<boot order>`, else (booting from
/// `hd`, the default) the first hard disk.
fn boot_disk(domain: &Domain) -> Option<&str> {
    let disks = &domain.devices.disks;
    if let Some(disk) = disks
        .iter()
        .filter(|d| d.boot_order.is_some())
        .min_by_key(|d| d.boot_order)
    {
        return Some(&disk.target.dev);
    }
    let ordered = disks.iter().any(|d| d.boot_order.is_some())
        || domain
            .devices
            .interfaces
            .iter()
            .any(|i| i.boot_order.is_some());
    let from_hd = domain.os.boot.is_empty() || domain.os.boot.first() == Some(&BootDevice::Hd);
    if ordered || !from_hd {
        return None;
    }
    disks
        .iter()
        .find(|d| d.device == DiskDevice::Disk)
        .map(|d| d.target.dev.as_str())
}

/// The source of a disk to attach must be there, and be what its type says.
fn check_source(disk: &Disk) -> DaemonResult<()> {
    use std::os::unix::fs::FileTypeExt;
    let Some(source) = &disk.source else {
        return Ok(());
    };
    let meta = std::fs::metadata(source).map_err(|err| match err.kind() {
        std::io::ErrorKind::NotFound => not_found(format!(
            "Cannot access storage file '{source}': No such file or directory"
        )),
        _ => bad_request(format!("Cannot access storage file '{source}': {err}")),
    })?;
    let kind = meta.file_type();
    match disk.disk_type {
        DiskType::File if !kind.is_file() => Err(bad_request(format!(
            "'{source}' is not a regular file (a block device needs --sourcetype block)"
        ))),
        DiskType::Block if !kind.is_block_device() => {
            Err(bad_request(format!("'{source}' is not a block device")))
        }
        _ => Ok(()),
    }
}

fn pci_controllers(domain: &Domain) -> usize {
    domain
        .devices
        .controllers
        .iter()
        .filter(|c| c.controller_type == ControllerType::Pci)
        .count()
}

impl Domains {
    /// `attach-disk`.
    pub async fn attach_disk(
        self: &Arc<Self>,
        id: &str,
        request: &AttachDiskRequest,
    ) -> DaemonResult<DiskChanged> {
        let disk = parse_disk(&disk_element(request)?)?;
        self.attach_disk_device(id, disk, request.live, request.config)
            .await
    }

    /// `attach-device`, `detach-device`, `update-device` of a `<disk>`.
    pub async fn change_device(
        self: &Arc<Self>,
        id: &str,
        request: &DeviceRequest,
    ) -> DaemonResult<DiskChanged> {
        let disk = parse_disk(&request.xml)?;
        match request.action {
            DeviceAction::Attach => {
                self.attach_disk_device(id, disk, request.live, request.config)
                    .await
            }
            DeviceAction::Detach => {
                self.detach_disk(
                    id,
                    &DetachDiskRequest {
                        target: disk.target.dev,
                        live: request.live,
                        config: request.config,
                    },
                )
                .await
            }
            DeviceAction::Update => {
                if disk.device != DiskDevice::Cdrom {
                    return Err(DaemonError::new(
                        ErrorKind::Unsupported,
                        format!(
                            "update-device of disk '{}': only a CD-ROM's medium can change in place; detach the disk and attach the new one",
                            disk.target.dev
                        ),
                    ));
                }
                let changed = self
                    .change_media(
                        id,
                        &ChangeMediaRequest {
                            path: disk.target.dev.clone(),
                            action: if disk.source.is_some() {
                                MediaAction::Update
                            } else {
                                MediaAction::Eject
                            },
                            block: disk.disk_type == DiskType::Block,
                            source: disk.source.clone(),
                            force: false,
                            live: request.live,
                            config: request.config,
                        },
                    )
                    .await?;
                let record = self.guests.resolve(id)?;
                let running = self.is_running(&record)?;
                let scope = Scope::of(request.live, request.config, running, &record.name)?;
                Ok(DiskChanged {
                    target: changed.target,
                    live: scope.live,
                    config: scope.config,
                })
            }
        }
    }

    async fn attach_disk_device(
        self: &Arc<Self>,
        id: &str,
        disk: Disk,
        live: bool,
        config: bool,
    ) -> DaemonResult<DiskChanged> {
        let Change {
            record,
            vm,
            scope,
            // Held until the change is done.
            guard: _guard,
        } = self.begin_change(id, live, config)?;
        let dev = disk.target.dev.clone();
        check_target_name(&disk)?;
        check_source(&disk)?;
        let in_use = |domain: &Domain| -> DaemonResult<()> {
            if domain.devices.disks.iter().any(|d| d.target.dev == dev) {
                return Err(bad_request(format!("target {dev} already exists")));
            }
            Ok(())
        };
        // Everything is checked before anything changes.
        let new_config = if scope.config {
            let current = self.persistent_domain(&record)?;
            in_use(&current)?;
            let new = with_disk(&current, &disk)?;
            self.engine
                .check_definition(&new)
                .map_err(|e| engine_failure(&record.name, e))?;
            Some(new)
        } else {
            None
        };
        if scope.live {
            let current = self.current_domain(&record)?;
            in_use(&current)?;
            let new = with_disk(&current, &disk)?;
            self.plug_disk(&vm, &record, &current, new, &dev).await?;
        }
        if let Some(new) = new_config {
            let engine = self.engine.kind_of(&new).to_string();
            self.store_next_start_xml(&record, &new.to_xml(), &engine)?;
            tracing::info!(domain = %record.name, disk = %dev, "disk added to the definition");
        }
        Ok(DiskChanged {
            target: dev,
            live: scope.live,
            config: scope.config,
        })
    }

    /// Hot-plugs disk `dev` of `new` (the running definition `current` with the disk added)
    /// and makes `new` the live definition.
    async fn plug_disk(
        &self,
        vm: &Vm,
        record: &DomainRecord,
        current: &Domain,
        new: Domain,
        dev: &str,
    ) -> DaemonResult<()> {
        if pci_controllers(&new) > pci_controllers(current) {
            let advice = if current.os.machine.contains("q35") {
                "a q35 guest hot-plugs PCIe devices into free PCIe root ports, and every root port of this one is in use: add one for the next start with <controller type='pci' model='pcie-root-port'/> (define or edit)"
            } else {
                "the guest's PCI bus has no free slot: add <controller type='pci' model='pci-bridge'/> for the next start"
            };
            return Err(DaemonError::new(
                ErrorKind::InvalidState,
                format!(
                    "cannot hot-plug disk {dev} into domain '{}': {advice}",
                    record.name
                ),
            ));
        }
        let index =
            find_disk(&new, dev).ok_or_else(|| internal("attach-disk", "disk not added"))?;
        if !hot_pluggable(&new.devices.disks[index]) {
            return Err(DaemonError::new(
                ErrorKind::Unsupported,
                format!("disk {dev}: only virtio and scsi disks can be hot-plugged (bus='virtio' or bus='scsi')"),
            ));
        }
        // The engine opens files only, and exactly the backing images read from trusted
        // metadata: the disk is resolved as a start resolves it.
        let mut launched = new.clone();
        launched.devices.disks.retain(|d| d.target.dev == dev);
        self.volumes.resolve_volume_disks(&mut launched)?;
        self.volumes.resolve_backing_chains(&mut launched)?;
        let control = self.guests.running_control(vm, record)?;
        control
            .plug_disk(&launched, dev)
            .await
            .map_err(|e| engine_failure(&record.name, e))?;
        // Its <iotune>, as libvirt sets it after device_add; a disk that cannot get its
        // limits is taken out again rather than left running without them.
        if let Some(tune) = &new.devices.disks[index].iotune {
            if let Err(err) = control.set_block_io_tune(dev, tune).await {
                if let Err(unplug) = control.unplug_disk(dev).await {
                    tracing::warn!(domain = %record.name, disk = %dev, "{unplug}");
                }
                return Err(engine_failure(&record.name, err));
            }
        }
        self.write_live_definition(record, &new)?;
        tracing::info!(domain = %record.name, disk = %dev, "disk hot-plugged");
        Ok(())
    }

    /// `detach-disk` (and `detach-device` of a `<disk>`).
    pub async fn detach_disk(
        self: &Arc<Self>,
        id: &str,
        request: &DetachDiskRequest,
    ) -> DaemonResult<DiskChanged> {
        let Change {
            record,
            vm,
            scope,
            // Held until the change is done.
            guard: _guard,
        } = self.begin_change(id, request.live, request.config)?;
        let name = &request.target;
        let new_config = if scope.config {
            let mut domain = self.persistent_domain(&record)?;
            let index = find_disk(&domain, name).ok_or_else(|| no_such_disk(name))?;
            domain.devices.disks.remove(index);
            Some(domain)
        } else {
            None
        };
        let mut target = None;
        if scope.live {
            let mut domain = self.current_domain(&record)?;
            let index = find_disk(&domain, name).ok_or_else(|| no_such_disk(name))?;
            let disk = &domain.devices.disks[index];
            let dev = disk.target.dev.clone();
            if !hot_pluggable(disk) {
                return Err(DaemonError::new(
                    ErrorKind::Unsupported,
                    format!("disk {dev}: only virtio and scsi disks can be hot-unplugged"),
                ));
            }
            let control = self.guests.running_control(&vm, &record)?;
            // A disk hot-plugged into the running guest is not the one it booted from, even
            // when it is the first hard disk now (a guest that started without one).
            if boot_disk(&domain) == Some(dev.as_str())
                && !control
                    .disk_hot_plugged(&dev)
                    .await
                    .map_err(|e| engine_failure(&record.name, e))?
            {
                return Err(invalid_state(format!(
                    "disk {dev} is the disk domain '{}' booted from; it cannot be detached while the guest runs (use --config to remove it from the next start)",
                    record.name
                )));
            }
            control
                .unplug_disk(&dev)
                .await
                .map_err(|e| engine_failure(&record.name, e))?;
            domain.devices.disks.remove(index);
            self.write_live_definition(&record, &domain)?;
            tracing::info!(domain = %record.name, disk = %dev, "disk hot-unplugged");
            target = Some(dev);
        }
        if let Some(domain) = new_config {
            let engine = self.engine.kind_of(&domain).to_string();
            self.store_next_start_xml(&record, &domain.to_xml(), &engine)?;
            tracing::info!(domain = %record.name, disk = %name, "disk removed from the definition");
        }
        Ok(DiskChanged {
            target: target.unwrap_or_else(|| name.clone()),
            live: scope.live,
            config: scope.config,
        })
    }

    /// `domblklist --inactive`: the disks of the definition the domain starts with next.
    pub fn inactive_disks(&self, id: &str) -> DaemonResult<Vec<DomainDisk>> {
        let record = self.guests.resolve(id)?;
        Ok(disk_list(&self.persistent_domain(&record)?))
    }

    /// `domblkinfo`: each disk's capacity (what the guest sees), allocation (what its image
    /// takes on the host) and physical size (the host file's).
    pub async fn block_info(self: &Arc<Self>, id: &str) -> DaemonResult<Vec<BlockInfo>> {
        let record = self.guests.resolve(id)?;
        let mut domain = self.current_domain(&record)?;
        self.volumes.resolve_volume_disks(&mut domain)?;
        let running = self.is_running(&record)?;
        let control = if running {
            let vm = self.guests.slot(&record.uuid);
            self.guests.running_control(&vm, &record).ok()
        } else {
            None
        };
        let mut infos = Vec::new();
        for disk in &domain.devices.disks {
            let dev = disk.target.dev.clone();
            let Some(source) = &disk.source else {
                infos.push(BlockInfo {
                    target: dev,
                    capacity: 0,
                    allocation: 0,
                    physical: 0,
                });
                continue;
            };
            let (capacity, allocation, physical) = file_sizes(Path::new(source), disk)?;
            // A running guest's own view first (a resize it saw, an overlay above the file).
            let capacity = match &control {
                Some(control) => control.block_size(&dev).await.unwrap_or(capacity),
                None => capacity,
            };
            infos.push(BlockInfo {
                target: dev,
                capacity,
                allocation,
                physical,
            });
        }
        Ok(infos)
    }

    /// `domblkstat`: the I/O counters of a running guest's disks.
    pub async fn block_stats(self: &Arc<Self>, id: &str) -> DaemonResult<Vec<BlockStat>> {
        let record = self.guests.resolve(id)?;
        let vm = self.guests.slot(&record.uuid);
        let control = self.guests.running_control(&vm, &record)?;
        let domain = self.current_domain(&record)?;
        let stats = control
            .block_stats()
            .await
            .map_err(|e| engine_failure(&record.name, e))?;
        // In the definition's order, the disks it has.
        Ok(domain
            .devices
            .disks
            .iter()
            .filter_map(|disk| stats.iter().find(|s| s.target == disk.target.dev).cloned())
            .collect())
    }

    /// `blkdeviotune`: shows or changes a disk's I/O limits, of the running guest (`live`)
    /// or of the definition it starts with next (`config`, its `<iotune>`).
    pub async fn block_io_tune(
        self: &Arc<Self>,
        id: &str,
        request: &IoTuneRequest,
    ) -> DaemonResult<BlockIoTune> {
        let changes = io_limit_changes(request)?;
        let asking = changes.is_empty() && request.group_name.is_none();
        let Change {
            record,
            vm,
            scope,
            // Held until the change is done.
            guard: _guard,
        } = self.begin_change(id, request.live, request.config)?;
        if asking && scope.live && scope.config {
            return Err(bad_request(
                "blkdeviotune shows the limits of the running guest (--live) or of the definition (--config), not both",
            ));
        }
        // Everything is checked before anything changes.
        let mut shown = None;
        let mut next = None;
        if scope.config {
            let mut domain = self.persistent_domain(&record)?;
            let index =
                find_disk(&domain, &request.target).ok_or_else(|| no_such_disk(&request.target))?;
            let disk = &mut domain.devices.disks[index];
            let mut tune = disk.iotune.clone().unwrap_or_default();
            if !asking {
                changed_io_tune(&mut tune, &changes, request, &disk.target.dev)?;
                disk.iotune = (!tune.is_empty()).then(|| tune.clone());
                next = Some(domain);
            }
            shown = Some(tune);
        }
        if scope.live {
            let mut current = self.current_domain(&record)?;
            let index = find_disk(&current, &request.target)
                .ok_or_else(|| no_such_disk(&request.target))?;
            let dev = current.devices.disks[index].target.dev.clone();
            let control = self.guests.running_control(&vm, &record)?;
            let mut tune = control
                .block_io_tune(&dev)
                .await
                .map_err(|e| engine_failure(&record.name, e))?;
            if !asking {
                changed_io_tune(&mut tune, &changes, request, &dev)?;
                control
                    .set_block_io_tune(&dev, &tune)
                    .await
                    .map_err(|e| engine_failure(&record.name, e))?;
                current.devices.disks[index].iotune = (!tune.is_empty()).then(|| tune.clone());
                self.write_live_definition(&record, &current)?;
                tracing::info!(domain = %record.name, disk = %dev, ?tune, "disk I/O limits set");
            }
            shown = Some(tune);
        }
        if let Some(domain) = next {
            self.change_persistent(&record, |stored| {
                *stored = domain;
                Ok(())
            })?;
            tracing::info!(domain = %record.name, disk = %request.target, "next start's disk I/O limits set");
        }
        Ok(io_tune_reply(&shown.unwrap_or_default()))
    }
}

/// The limits a blkdeviotune request gives, by libvirt's names.
fn io_limit_changes(request: &IoTuneRequest) -> DaemonResult<Vec<(IoLimit, u64)>> {
    request
        .set
        .iter()
        .map(|(name, value)| {
            IoLimit::from_name(name)
                .map(|limit| (limit, *value))
                .ok_or_else(|| bad_request(format!("unknown I/O limit '{name}'")))
        })
        .collect()
}

/// `tune` with the request's changes, as libvirt makes them, if they pass libvirt's rules.
fn changed_io_tune(
    tune: &mut IoTune,
    changes: &[(IoLimit, u64)],
    request: &IoTuneRequest,
    dev: &str,
) -> DaemonResult<()> {
    let mut changed = tune.clone();
    changed.apply(changes, request.group_name.as_deref());
    changed
        .check()
        .map_err(|reason| bad_request(format!("disk '{dev}': {reason}")))?;
    *tune = changed;
    Ok(())
}

/// The wire form of `tune`: every limit by name, in libvirt's order.
fn io_tune_reply(tune: &IoTune) -> BlockIoTune {
    BlockIoTune {
        limits: IoLimit::ALL
            .into_iter()
            .map(|limit| (limit.name().to_string(), tune.get(limit)))
            .collect(),
        group_name: tune.group_name.clone(),
    }
}

/// Capacity, allocation and physical size of a disk's host file or device.
fn file_sizes(path: &Path, disk: &Disk) -> DaemonResult<(u64, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|err| {
        bad_request(format!(
            "disk {}: cannot access {}: {err}",
            disk.target.dev,
            path.display()
        ))
    })?;
    let format = match disk.driver.format {
        oxvirt_domain::DiskFormat::Qcow2 => oxvirt_images::Format::Qcow2,
        _ => oxvirt_images::Format::Raw,
    };
    let image = oxvirt_images::Image::open(
        path,
        &oxvirt_images::OpenOptions {
            format: Some(format),
            force_share: true,
            no_backing: true,
            ..Default::default()
        },
    )
    .map_err(|e| image_error(&format!("disk {}", disk.target.dev), e))?;
    let capacity = image.virtual_size();
    if meta.file_type().is_file() {
        Ok((capacity, meta.blocks() * 512, meta.len()))
    } else {
        // A block device is all allocated, and as large as it is.
        Ok((capacity, capacity, capacity))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_errors_name_the_line_of_the_device_xml() {
        let err = parse_disk("<disk type='file' device='disk'>\n  <source file='/x'/>\n  <target dev='vdb' bus='virtio' bogus='1'/>\n</disk>")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3"), "{err}");
        let err = parse_disk("<disk type='file'>\n<source file='/x'>\n</disk>")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3"), "{err}");
        let err = parse_disk("\n<interface type='network'/>")
            .unwrap_err()
            .to_string();
        assert!(err.contains("<interface> at line 2"), "{err}");
    }

    #[test]
    fn an_attached_disk_is_placed_by_the_guests_definition() {
        let disk = parse_disk(
            "<?xml version='1.0'?>\n<disk type='file' device='disk'><source file='/x'/><target dev='vdb' bus='virtio'/></disk>",
        )
        .unwrap();
        assert_eq!(disk.address, None);
        assert_eq!(disk.target.dev, "vdb");
        let request = AttachDiskRequest {
            source: "/srv/a'b.qcow2".into(),
            target: "vdc".into(),
            subdriver: Some("qcow2".into()),
            mode: Some("readonly".into()),
            sourcetype: Some("file".into()),
            ..Default::default()
        };
        let disk = parse_disk(&disk_element(&request).unwrap()).unwrap();
        assert_eq!(disk.source.as_deref(), Some("/srv/a'b.qcow2"));
        assert!(disk.readonly);
        assert_eq!(disk.driver.format, oxvirt_domain::DiskFormat::Qcow2);
        let bad = AttachDiskRequest {
            cache: Some("fast".into()),
            ..request
        };
        assert!(disk_element(&bad)
            .unwrap_err()
            .to_string()
            .contains("--cache 'fast'"));
    }

    #[test]
    fn a_scsi_disk_gets_a_virtio_scsi_controller_when_the_domain_has_none() {
        let domain = |devices: &str| {
            oxvirt_domain::parse_domain_xml(&format!(
                "<domain type='qemu'><name>g</name><memory>131072</memory><os><type arch='x86_64' machine='pc'>hvm</type></os><devices>{devices}</devices></domain>"
            ))
            .unwrap()
        };
        let scsi_controllers = |domain: &Domain| -> Vec<(u32, Option<String>, bool)> {
            domain
                .devices
                .controllers
                .iter()
                .filter(|c| c.controller_type == ControllerType::Scsi)
                .map(|c| (c.index, c.model.clone(), c.address.is_some()))
                .collect()
        };
        // The target's name gives the bus when --targetbus is not given, as in virsh.
        let request = AttachDiskRequest {
            source: "/srv/d.qcow2".into(),
            target: "sdb".into(),
            ..Default::default()
        };
        let disk = parse_disk(&disk_element(&request).unwrap()).unwrap();
        assert_eq!(disk.target.bus, DiskBus::Scsi);
        let new = with_disk(&domain(""), &disk).unwrap();
        assert_eq!(
            scsi_controllers(&new),
            [(0, Some("virtio-scsi".to_string()), true)]
        );
        let added = &new.devices.disks[find_disk(&new, "sdb").unwrap()];
        assert!(
            matches!(added.address, Some(oxvirt_domain::Address::Drive(a)) if (a.controller, a.unit) == (0, 1))
        );
        // A controller the domain has is the disk's.
        let lsi = domain("<controller type='scsi' index='0' model='lsilogic'/>");
        assert_eq!(
            scsi_controllers(&with_disk(&lsi, &disk).unwrap()),
            [(0, Some("lsilogic".to_string()), true)]
        );
        // A SCSI disk is named sdX, a virtio one vdX.
        let wrong = AttachDiskRequest {
            target: "vdb".into(),
            targetbus: Some("scsi".into()),
            ..request.clone()
        };
        let disk = parse_disk(&disk_element(&wrong).unwrap()).unwrap();
        assert_eq!(
            check_target_name(&disk).unwrap_err().to_string(),
            "target vdb: a disk on bus 'scsi' is named sdX (sda, sdb, ...)"
        );
        let usb = AttachDiskRequest {
            targetbus: Some("usb".into()),
            ..request
        };
        assert!(disk_element(&usb)
            .unwrap_err()
            .to_string()
            .contains("--targetbus 'usb' is not one of virtio, scsi"));
    }

    #[test]
    fn io_limits_are_named_and_checked() {
        let request = IoTuneRequest {
            target: "vdb".into(),
            set: vec![("total_iops_sec".into(), 50), ("read_iops_sec".into(), 10)],
            ..Default::default()
        };
        let changes = io_limit_changes(&request).unwrap();
        let mut tune = IoTune::default();
        let err = changed_io_tune(&mut tune, &changes, &request, "vdb").unwrap_err();
        assert!(
            err.to_string()
                .contains("disk 'vdb': total and read/write iops_sec"),
            "{err}"
        );
        assert!(
            tune.is_empty(),
            "a refused change leaves the limits as they were"
        );
        let unknown = IoTuneRequest {
            set: vec![("fast".into(), 1)],
            ..request
        };
        assert!(io_limit_changes(&unknown).is_err());
        let reply = io_tune_reply(&tune);
        assert_eq!(reply.limits.len(), IoLimit::ALL.len());
        assert_eq!(reply.limits[0], ("total_bytes_sec".to_string(), 0));
    }
}
