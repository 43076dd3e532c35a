//! Disks of running and defined domains: `attach-disk`, `detach-disk`, `attach-device`,
//! `detach-device`, `update-device` (of a `<disk>`), `domblkinfo`, `domblkstat`,
//! `blkdeviotune`, with virsh's arguments and output. (`domblklist` is in `pool.rs`.)

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use oxvirt_api::{
    AttachDiskRequest, BlockInfo, BlockIoTune, BlockStat, Client, DetachDiskRequest, DeviceAction,
    DeviceRequest, IoTuneRequest,
};
use oxvirt_domain::{IoLevel, IoLimit};

use crate::commands::{block_on, Scope};
use crate::format::table;
use crate::pool::pretty_capacity_places;

/// virsh's `--live`, `--config`, `--current` and `--persistent` (`--config`, and `--live` too
/// while the domain runs).
#[derive(Args, Debug, Clone, Copy)]
pub struct ChangeScope {
    #[command(flatten)]
    scope: Scope,
    /// The definition, and the running guest too if it runs.
    #[arg(long, conflicts_with = "current")]
    persistent: bool,
}

impl ChangeScope {
    /// (live, config) for the request.
    fn flags(&self, client: &Client, domain: &str) -> anyhow::Result<(bool, bool)> {
        if self.persistent {
            let running = block_on(client.domain_info(domain))??.id.is_some();
            return Ok((self.scope.live || running, true));
        }
        Ok((self.scope.live, self.scope.config))
    }
}

#[derive(Subcommand, Debug)]
pub enum DiskCommand {
    /// Attach a disk (a file or block device) to a domain: hot-plug it into the running guest
    /// (virtio, scsi) and/or add it to the definition.
    AttachDisk {
        /// Domain name or UUID.
        domain: String,
        /// The file or block device.
        source: String,
        /// The guest's name for it (vdb).
        target: String,
        /// Driver name (qemu, the only one).
        #[arg(long, value_parser = ["qemu"])]
        driver: Option<String>,
        /// Image format: raw (the default) or qcow2.
        #[arg(long)]
        subdriver: Option<String>,
        /// Cache mode: none, writeback, writethrough, directsync, unsafe.
        #[arg(long)]
        cache: Option<String>,
        /// I/O mode: threads, native, io_uring.
        #[arg(long)]
        io: Option<String>,
        /// Target bus: virtio or scsi (default: the target's name says, vdb virtio, sdb scsi).
        #[arg(long)]
        targetbus: Option<String>,
        /// readonly or shareable.
        #[arg(long)]
        mode: Option<String>,
        /// file or block (default: what the source is).
        #[arg(long)]
        sourcetype: Option<String>,
        #[command(flatten)]
        scope: ChangeScope,
    },
    /// Detach a disk from a domain (the running guest releases it) and/or its definition.
    DetachDisk {
        /// Domain name or UUID.
        domain: String,
        /// The disk's target (vdb) or source path.
        target: String,
        #[command(flatten)]
        scope: ChangeScope,
    },
    /// Attach a device from an XML file (a <disk> element).
    AttachDevice(DeviceArgs),
    /// Detach a device described in an XML file (a <disk>, found by its target).
    DetachDevice(DeviceArgs),
    /// Update a device from an XML file (a CD-ROM <disk>: its medium).
    UpdateDevice(DeviceArgs),
    /// Show a disk's capacity, allocation and physical size.
    Domblkinfo {
        /// Domain name or UUID.
        domain: String,
        /// The disk's target or source path.
        #[arg(required_unless_present = "all")]
        device: Option<String>,
        /// Sizes with units (KiB, MiB, GiB, ...).
        #[arg(long)]
        human: bool,
        /// Every disk, as a table.
        #[arg(long)]
        all: bool,
    },
    /// Show a running domain's disk I/O counters (all disks summed without a disk).
    Domblkstat {
        /// Domain name or UUID.
        domain: String,
        /// The disk's target or source path.
        device: Option<String>,
        /// Spelled-out names.
        #[arg(long)]
        human: bool,
    },
    /// Show or set a disk's I/O limits, of the running guest or the definition (per second; 0 removes one).
    Blkdeviotune {
        /// Domain name or UUID.
        domain: String,
        /// The disk's target or source path.
        device: String,
        #[command(flatten)]
        limits: IoLimits,
        #[command(flatten)]
        scope: Scope,
    },
}

/// The arguments of attach-device, detach-device, update-device.
#[derive(Args, Debug)]
pub struct DeviceArgs {
    /// Domain name or UUID.
    domain: String,
    /// The device XML.
    file: PathBuf,
    #[command(flatten)]
    scope: ChangeScope,
}

/// blkdeviotune's limits, by libvirt's names (`--total-iops-sec` or `--total_iops_sec`): the
/// options come from oxvirt-domain's [`IoLimit`] list, so a limit is named in one place.
#[derive(Debug, Clone, Default)]
pub struct IoLimits {
    given: Vec<(IoLimit, u64)>,
    group_name: Option<String>,
}

/// The option of `--group-name`.
const GROUP_NAME: &str = "group_name";

impl clap::FromArgMatches for IoLimits {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut limits = IoLimits::default();
        limits.update_from_arg_matches(matches)?;
        Ok(limits)
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        for limit in IoLimit::ALL {
            if let Some(value) = matches.get_one::<u64>(limit.name()) {
                self.given.retain(|(given, _)| *given != limit);
                self.given.push((limit, *value));
            }
        }
        if let Some(group) = matches.get_one::<String>(GROUP_NAME) {
            self.group_name = Some(group.clone());
        }
        Ok(())
    }
}

impl Args for IoLimits {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let mut cmd = cmd;
        for limit in IoLimit::ALL {
            // virsh lists the group after size_iops_sec, before the burst lengths.
            if limit == IoLimit::TotalBytesSecMaxLength {
                cmd = cmd.arg(
                    clap::Arg::new(GROUP_NAME)
                        .long("group-name")
                        .alias(GROUP_NAME)
                        .value_name("NAME")
                        .help(
                            "Throttle group: disks of one group share their limits (empty: none)",
                        ),
                );
            }
            cmd = cmd.arg(
                clap::Arg::new(limit.name())
                    .long(limit.name().replace('_', "-"))
                    .alias(limit.name())
                    .value_name("N")
                    // So that `-5` is refused as a value, not taken for an option.
                    .allow_negative_numbers(true)
                    .value_parser(clap::value_parser!(u64))
                    .help(limit.describe()),
            );
        }
        cmd
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

/// attach-, detach- or update-device; returns virsh's message (`done`: attached, ...).
fn device_change(
    client: &Client,
    args: DeviceArgs,
    action: DeviceAction,
    done: &str,
) -> anyhow::Result<String> {
    let DeviceArgs {
        domain,
        file,
        scope,
    } = args;
    let xml = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read device XML {}", file.display()))?;
    let (live, config) = scope.flags(client, &domain)?;
    let request = DeviceRequest {
        action,
        xml,
        live,
        config,
    };
    block_on(client.change_device(&domain, &request))??;
    Ok(format!("Device {done} successfully\n"))
}

/// The target of the disk `device` names: itself if `targets` has it, else the disk whose
/// source path it is.
fn target_of(
    client: &Client,
    domain: &str,
    device: &str,
    targets: &[&str],
) -> anyhow::Result<String> {
    if targets.contains(&device) {
        return Ok(device.to_string());
    }
    block_on(client.domain_disks(domain))??
        .into_iter()
        .find(|d| d.source.as_deref() == Some(device))
        .map(|d| d.target)
        .ok_or_else(|| {
            anyhow::anyhow!("invalid argument: invalid path {device} not assigned to domain")
        })
}

pub fn run(client: &Client, command: DiskCommand) -> anyhow::Result<String> {
    match command {
        DiskCommand::AttachDisk {
            domain,
            source,
            target,
            driver: _,
            subdriver,
            cache,
            io,
            targetbus,
            mode,
            sourcetype,
            scope,
        } => {
            let (live, config) = scope.flags(client, &domain)?;
            let request = AttachDiskRequest {
                source,
                target,
                subdriver,
                cache,
                io,
                targetbus,
                mode,
                sourcetype,
                live,
                config,
            };
            block_on(client.attach_disk(&domain, &request))??;
            Ok("Disk attached successfully\n".to_string())
        }
        DiskCommand::DetachDisk {
            domain,
            target,
            scope,
        } => {
            let (live, config) = scope.flags(client, &domain)?;
            let request = DetachDiskRequest {
                target,
                live,
                config,
            };
            block_on(client.detach_disk(&domain, &request))??;
            Ok("Disk detached successfully\n".to_string())
        }
        DiskCommand::AttachDevice(args) => {
            device_change(client, args, DeviceAction::Attach, "attached")
        }
        DiskCommand::DetachDevice(args) => {
            device_change(client, args, DeviceAction::Detach, "detached")
        }
        DiskCommand::UpdateDevice(args) => {
            device_change(client, args, DeviceAction::Update, "updated")
        }
        DiskCommand::Domblkinfo {
            domain,
            device,
            human,
            all,
        } => {
            let infos = block_on(client.block_info(&domain))??;
            if all {
                return Ok(blkinfo_table(&infos, human));
            }
            let device = device.unwrap_or_default();
            let targets: Vec<&str> = infos.iter().map(|i| i.target.as_str()).collect();
            let target = target_of(client, &domain, &device, &targets)?;
            let info = infos.iter().find(|i| i.target == target).ok_or_else(|| {
                anyhow::anyhow!("invalid argument: invalid path {device} not assigned to domain")
            })?;
            Ok(blkinfo_text(info, human))
        }
        DiskCommand::Domblkstat {
            domain,
            device,
            human,
        } => {
            let stats = block_on(client.block_stats(&domain))??;
            let (name, stat) = match &device {
                Some(device) => {
                    let targets: Vec<&str> = stats.iter().map(|s| s.target.as_str()).collect();
                    let target = target_of(client, &domain, device, &targets)?;
                    let stat = stats
                        .into_iter()
                        .find(|s| s.target == target)
                        .ok_or_else(|| {
                            anyhow::anyhow!(
                                "invalid argument: invalid path {device} not assigned to domain"
                            )
                        })?;
                    (device.clone(), stat)
                }
                None => (String::new(), sum(&stats)),
            };
            Ok(blkstat_text(&name, &stat, human))
        }
        DiskCommand::Blkdeviotune {
            domain,
            device,
            limits,
            scope,
        } => {
            let IoLimits { given, group_name } = limits;
            let asking = given.is_empty() && group_name.is_none();
            let request = IoTuneRequest {
                target: device,
                set: given
                    .into_iter()
                    .map(|(limit, value)| (limit.name().to_string(), value))
                    .collect(),
                group_name,
                live: scope.live,
                config: scope.config,
            };
            let tune = block_on(client.block_io_tune(&domain, &request))??;
            Ok(if asking {
                iotune_text(&tune)
            } else {
                String::new()
            })
        }
    }
}

/// All disks' counters added up (`domblkstat` without a disk).
fn sum(stats: &[BlockStat]) -> BlockStat {
    stats.iter().fold(BlockStat::default(), |a, s| BlockStat {
        target: String::new(),
        rd_req: a.rd_req + s.rd_req,
        rd_bytes: a.rd_bytes + s.rd_bytes,
        wr_req: a.wr_req + s.wr_req,
        wr_bytes: a.wr_bytes + s.wr_bytes,
        flush_operations: a.flush_operations + s.flush_operations,
        rd_total_times: a.rd_total_times + s.rd_total_times,
        wr_total_times: a.wr_total_times + s.wr_total_times,
        flush_total_times: a.flush_total_times + s.flush_total_times,
    })
}

/// virsh domblkstat: `DEV KEY VALUE` lines, or with `--human` spelled out under `Device: DEV`.
pub fn blkstat_text(device: &str, stat: &BlockStat, human: bool) -> String {
    let fields = [
        ("rd_req", "number of read operations:", stat.rd_req),
        ("rd_bytes", "number of bytes read:", stat.rd_bytes),
        ("wr_req", "number of write operations:", stat.wr_req),
        ("wr_bytes", "number of bytes written:", stat.wr_bytes),
        (
            "flush_operations",
            "number of flush operations:",
            stat.flush_operations,
        ),
        (
            "rd_total_times",
            "total duration of reads (ns):",
            stat.rd_total_times,
        ),
        (
            "wr_total_times",
            "total duration of writes (ns):",
            stat.wr_total_times,
        ),
        (
            "flush_total_times",
            "total duration of flushes (ns):",
            stat.flush_total_times,
        ),
    ];
    let mut out = String::new();
    if human {
        out.push_str(&format!("Device: {device}\n"));
        for (_, name, value) in fields {
            out.push_str(&format!(" {name:<31} {value}\n"));
        }
    } else {
        for (key, _, value) in fields {
            out.push_str(&format!("{device} {key} {value}\n"));
        }
    }
    out
}

fn size(bytes: u64, human: bool) -> String {
    if human {
        // domblkinfo prints three decimals (pool-info two).
        pretty_capacity_places(bytes, 3)
    } else {
        bytes.to_string()
    }
}

/// virsh domblkinfo DEVICE.
pub fn blkinfo_text(info: &BlockInfo, human: bool) -> String {
    format!(
        "{:<15} {}\n{:<15} {}\n{:<15} {}\n",
        "Capacity:",
        size(info.capacity, human),
        "Allocation:",
        size(info.allocation, human),
        "Physical:",
        size(info.physical, human)
    )
}

/// virsh domblkinfo --all.
pub fn blkinfo_table(infos: &[BlockInfo], human: bool) -> String {
    let rows: Vec<Vec<String>> = infos
        .iter()
        .map(|i| {
            vec![
                i.target.clone(),
                size(i.capacity, human),
                size(i.allocation, human),
                size(i.physical, human),
            ]
        })
        .collect();
    table(&["Target", "Capacity", "Allocation", "Physical"], &rows)
}

/// virsh blkdeviotune without limits: `name: value` lines, names padded to 15, in libvirt's
/// order (the group, when there is one, before the burst lengths).
pub fn iotune_text(tune: &BlockIoTune) -> String {
    let mut text = String::new();
    let mut group = tune.group_name.as_deref();
    for (name, value) in &tune.limits {
        let level = IoLimit::from_name(name).map(|limit| limit.kind().2);
        if level == Some(IoLevel::MaxLength) {
            if let Some(group) = group.take() {
                text.push_str(&format!("{GROUP_NAME:<15}: {group}\n"));
            }
        }
        text.push_str(&format!("{name:<15}: {value}\n"));
    }
    if let Some(group) = group {
        text.push_str(&format!("{GROUP_NAME:<15}: {group}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_virshs() {
        let stat = BlockStat {
            target: "vda".into(),
            rd_req: 174670,
            ..Default::default()
        };
        let text = blkstat_text("vda", &stat, false);
        assert!(
            text.starts_with("vda rd_req 174670\nvda rd_bytes 0\n"),
            "{text}"
        );
        let human = blkstat_text("vda", &stat, true);
        assert!(
            human.starts_with("Device: vda\n number of read operations:      174670\n"),
            "{human}"
        );
        let info = BlockInfo {
            target: "vda".into(),
            capacity: 1 << 30,
            allocation: 200704,
            physical: 1 << 30,
        };
        assert_eq!(
            blkinfo_text(&info, false),
            "Capacity:       1073741824\nAllocation:     200704\nPhysical:       1073741824\n"
        );
        assert!(blkinfo_text(&info, true).starts_with("Capacity:       1.000 GiB\n"));
        assert_eq!(size(200704, true), "196.000 KiB");
        let tune = BlockIoTune {
            limits: IoLimit::ALL
                .iter()
                .map(|limit| {
                    (
                        limit.name().to_string(),
                        u64::from(*limit == IoLimit::TotalIopsSec) * 50,
                    )
                })
                .collect(),
            group_name: Some("g1".into()),
        };
        let text = iotune_text(&tune);
        assert!(text.contains("total_iops_sec : 50\n"), "{text}");
        assert!(text.starts_with("total_bytes_sec: 0\n"), "{text}");
        assert!(
            text.contains(
                "size_iops_sec  : 0\ngroup_name     : g1\ntotal_bytes_sec_max_length: 0\n"
            ),
            "{text}"
        );
    }
}
