//! A guest's control groups (more of [`Domains`]): at start its engine process and threads go
//! into groups of their own, with `<cputune>`'s shares, periods and quotas, `<memtune>`'s
//! limits and `<blkiotune>`'s weights and throttles (`oxvirt_host::cgroup`); they go when it
//! stops. A guest without limits whose groups the host refuses runs ungrouped, with a warning
//! in oxvirtd's log. The verbs `schedinfo`, `memtune` and `blkiotune` read and change them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use oxvirt_api::{
    BlkioDeviceValues, BlkioParam, BlkioRequest, BlkioValues, LimitValue, LimitValues,
    LimitsRequest,
};
use oxvirt_domain::{
    validate_blkiotune, BlkioDevice, BlkioTune, CpuTune, Domain, DomainError, MemTune,
};
use oxvirt_host::cgroup::{
    self, BlkioLimits, CgroupError, DeviceIo, GuestCgroup, Limits, UNLIMITED_KIB,
};
use uuid::Uuid;

use super::domains::Domains;
use super::error::{bad_request, engine_failure, DaemonError, DaemonResult, ErrorKind};
use crate::engine::Control;

/// A guest's groups, named by its UUID (unique, stable across renames and daemon restarts).
pub(crate) fn guest_cgroup(uuid: &Uuid) -> GuestCgroup {
    cgroup::of_guest(&uuid.to_string())
}

/// What `domain` asks of its cgroups.
pub(crate) fn limits_of(domain: &Domain) -> Limits {
    let tune = domain.cputune.as_ref();
    let mem = domain.memtune.as_ref();
    Limits {
        shares: tune.and_then(|t| t.shares),
        vcpu_period: tune.and_then(|t| t.period),
        vcpu_quota: tune.and_then(|t| t.quota),
        emulator_period: tune.and_then(|t| t.emulator_period),
        emulator_quota: tune.and_then(|t| t.emulator_quota),
        hard_limit_kib: mem.and_then(|m| m.hard_limit_kib),
        soft_limit_kib: mem.and_then(|m| m.soft_limit_kib),
        swap_hard_limit_kib: mem.and_then(|m| m.swap_hard_limit_kib),
        blkio: BlkioLimits::default(),
    }
}

/// `<blkiotune>` as this host's kernel takes it: each device path resolved to its device
/// number (libvirt's errors for a path that is missing or not a block device).
pub(crate) fn blkio_limits(domain: &Domain) -> Result<BlkioLimits, CgroupError> {
    let Some(tune) = &domain.blkiotune else {
        return Ok(BlkioLimits::default());
    };
    let devices = tune
        .devices
        .iter()
        .map(|device| {
            let path = PathBuf::from(&device.path);
            Ok(DeviceIo {
                number: cgroup::block_device_number(&path)?,
                path,
                weight: device.weight,
                read_bytes_sec: device.read_bytes_sec,
                write_bytes_sec: device.write_bytes_sec,
                read_iops_sec: device.read_iops_sec.map(u64::from),
                write_iops_sec: device.write_iops_sec.map(u64::from),
            })
        })
        .collect::<Result<_, CgroupError>>()?;
    Ok(BlkioLimits {
        weight: tune.weight,
        devices,
    })
}

/// What a running guest's blkio group is given when its `<blkiotune>` goes from `old` to
/// `new`: everything `new` sets, and 0 ("none") for each device value only `old` had.
fn blkio_change(old: &Domain, new: &Domain) -> Result<BlkioLimits, CgroupError> {
    let mut limits = blkio_limits(new)?;
    let old_devices = old.blkiotune.as_ref().map_or(&[][..], |t| &t.devices[..]);
    for was in old_devices {
        let index = match limits
            .devices
            .iter()
            .position(|d| d.path == Path::new(&was.path))
        {
            Some(index) => index,
            None => {
                let path = PathBuf::from(&was.path);
                limits.devices.push(DeviceIo {
                    number: cgroup::block_device_number(&path)?,
                    path,
                    ..DeviceIo::default()
                });
                limits.devices.len() - 1
            }
        };
        let device = &mut limits.devices[index];
        let cleared = |had: bool, now: &mut Option<u64>| {
            if had && now.is_none() {
                *now = Some(0);
            }
        };
        if was.weight.is_some() && device.weight.is_none() {
            device.weight = Some(0);
        }
        cleared(was.read_bytes_sec.is_some(), &mut device.read_bytes_sec);
        cleared(was.write_bytes_sec.is_some(), &mut device.write_bytes_sec);
        cleared(was.read_iops_sec.is_some(), &mut device.read_iops_sec);
        cleared(was.write_iops_sec.is_some(), &mut device.write_iops_sec);
    }
    Ok(limits)
}

pub(crate) fn cgroup_failure(name: &str, err: impl std::fmt::Display) -> DaemonError {
    DaemonError::new(
        ErrorKind::Unsupported,
        format!("cannot set up the cgroups of domain '{name}': {err}"),
    )
}

impl Domains {
    /// Before a start: `<blkiotune>`'s devices must be block devices of this host (refused
    /// before anything is launched, with libvirt's words).
    pub(super) fn check_blkio_fits_host(&self, domain: &Domain) -> DaemonResult<()> {
        blkio_limits(domain)
            .map(|_| ())
            .map_err(|err| cgroup_failure(&domain.name, err))
    }

    /// At start, before the guest runs: its process and threads into its groups, with its
    /// limits. A guest whose engine does not report vCPU threads gets one group for all.
    pub(super) async fn apply_cgroups(
        &self,
        domain: &Domain,
        pid: u32,
        control: &dyn Control,
    ) -> DaemonResult<()> {
        let mut limits = limits_of(domain);
        limits.blkio = blkio_limits(domain).map_err(|err| cgroup_failure(&domain.name, err))?;
        let threads = match control.vcpu_threads().await {
            Ok(threads) => threads,
            Err(err) if limits.vcpu_period.is_none() && limits.vcpu_quota.is_none() => {
                tracing::debug!(domain = %domain.name, "no vCPU threads for cgroups: {err}");
                Vec::new()
            }
            Err(err) => return Err(engine_failure(&domain.name, err)),
        };
        let group = guest_cgroup(&domain.uuid);
        // A few small writes to cgroupfs: not worth a blocking-pool hop.
        match group.place(pid, &threads, &limits) {
            Ok(()) => Ok(()),
            // Without limits the groups only account: a host that refuses them (a container
            // with a read-only cgroupfs) still runs the guest, ungrouped.
            Err(err) if limits == Limits::default() => {
                tracing::warn!(domain = %domain.name, "guest left outside its own cgroups: {err}");
                let _ = group.remove();
                Ok(())
            }
            Err(err) => Err(cgroup_failure(&domain.name, err)),
        }
    }
}

/// Which verb: `schedinfo` (CPU) or `memtune` (memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    Cpu,
    Memory,
}

impl LimitKind {
    fn names(self) -> &'static [&'static str] {
        match self {
            LimitKind::Cpu => &[
                "cpu_shares",
                "vcpu_period",
                "vcpu_quota",
                "emulator_period",
                "emulator_quota",
            ],
            LimitKind::Memory => &["hard_limit", "soft_limit", "swap_hard_limit"],
        }
    }

    fn verb(self) -> &'static str {
        match self {
            LimitKind::Cpu => "schedinfo",
            LimitKind::Memory => "memtune",
        }
    }
}

/// CFS periods the kernel accepts, in µs (1 ms to 1 s), and the largest quota.
const PERIOD_RANGE: std::ops::RangeInclusive<i64> = 1_000..=1_000_000;
const MAX_QUOTA: i64 = 17_592_186_044_415;

/// Checks one `name=value` of `kind` (virsh's ranges) and records it in `domain`.
fn set_limit(domain: &mut Domain, kind: LimitKind, name: &str, value: i64) -> DaemonResult<()> {
    if !kind.names().contains(&name) {
        return Err(bad_request(format!(
            "invalid argument: {} has no parameter '{name}' (it has {})",
            kind.verb(),
            kind.names().join(", ")
        )));
    }
    let out_of_range = |range: &str| {
        bad_request(format!(
            "invalid argument: value of '{name}' is out of range [{range}]: {value}"
        ))
    };
    let tune = || CpuTune::default();
    match name {
        "cpu_shares" => {
            if !(2..=262_144).contains(&value) {
                return Err(out_of_range("2, 262144"));
            }
            domain.cputune.get_or_insert_with(tune).shares = Some(value as u64);
        }
        "vcpu_period" | "emulator_period" => {
            if !PERIOD_RANGE.contains(&value) {
                return Err(out_of_range("1000, 1000000"));
            }
            let t = domain.cputune.get_or_insert_with(tune);
            let slot = if name == "vcpu_period" {
                &mut t.period
            } else {
                &mut t.emulator_period
            };
            *slot = Some(value as u64);
        }
        "vcpu_quota" | "emulator_quota" => {
            if value != -1 && !(1_000..=MAX_QUOTA).contains(&value) {
                return Err(out_of_range("1000, 17592186044415] or -1 [none"));
            }
            let t = domain.cputune.get_or_insert_with(tune);
            let slot = if name == "vcpu_quota" {
                &mut t.quota
            } else {
                &mut t.emulator_quota
            };
            *slot = (value != -1).then_some(value);
        }
        _ => {
            if value < -1 || value as u64 >= UNLIMITED_KIB {
                return Err(out_of_range("0, 9007199254740990] or -1 [unlimited"));
            }
            let m = domain.memtune.get_or_insert_with(MemTune::default);
            let slot = match name {
                "hard_limit" => &mut m.hard_limit_kib,
                "soft_limit" => &mut m.soft_limit_kib,
                _ => &mut m.swap_hard_limit_kib,
            };
            *slot = (value != -1).then_some(value as u64);
        }
    }
    Ok(())
}

/// `domain`'s limits of `kind` under virsh's names and in its order. What the definition
/// leaves unset is 0 in a definition (`--config`, as virsh prints it) and the kernel's
/// default for a running guest; oxvirt sets no global or I/O thread bandwidth (always unset).
fn limit_values(domain: &Domain, kind: LimitKind, live: bool) -> LimitValues {
    let tune = domain.cputune.clone().unwrap_or_default();
    let mem = domain.memtune.clone().unwrap_or_default();
    let kib = |limit: Option<u64>| limit.map_or(-1, |kib| kib as i64);
    let (shares, period, quota) = if live { (1024, 100_000, -1) } else { (0, 0, 0) };
    let values: Vec<(&str, i64)> = match kind {
        LimitKind::Cpu => vec![
            ("cpu_shares", tune.shares.map_or(shares, |v| v as i64)),
            ("vcpu_period", tune.period.map_or(period, |v| v as i64)),
            ("vcpu_quota", tune.quota.unwrap_or(quota)),
            (
                "emulator_period",
                tune.emulator_period.map_or(period, |v| v as i64),
            ),
            ("emulator_quota", tune.emulator_quota.unwrap_or(quota)),
            ("global_period", period),
            ("global_quota", quota),
            ("iothread_period", 0),
            ("iothread_quota", 0),
        ],
        LimitKind::Memory => vec![
            ("hard_limit", kib(mem.hard_limit_kib)),
            ("soft_limit", kib(mem.soft_limit_kib)),
            ("swap_hard_limit", kib(mem.swap_hard_limit_kib)),
        ],
    };
    LimitValues {
        values: values
            .into_iter()
            .map(|(name, value)| LimitValue {
                name: name.to_string(),
                value,
            })
            .collect(),
    }
}

/// The cgroup side of a changed definition: every limit of `kind` it has (a removed one as
/// "none"/"unlimited").
fn cgroup_limits(domain: &Domain, kind: LimitKind) -> Limits {
    let mut limits = limits_of(domain);
    match kind {
        LimitKind::Cpu => {
            limits.vcpu_quota = Some(limits.vcpu_quota.unwrap_or(-1));
            limits.emulator_quota = Some(limits.emulator_quota.unwrap_or(-1));
        }
        LimitKind::Memory => {
            let unlimited = |kib: Option<u64>| Some(kib.unwrap_or(UNLIMITED_KIB));
            limits.hard_limit_kib = unlimited(limits.hard_limit_kib);
            limits.soft_limit_kib = unlimited(limits.soft_limit_kib);
            limits.swap_hard_limit_kib = unlimited(limits.swap_hard_limit_kib);
        }
    }
    limits
}

impl Domains {
    /// `schedinfo` and `memtune`: asks (nothing to set) or sets, live and/or in the definition.
    pub async fn limits(
        self: &Arc<Self>,
        id: &str,
        request: &LimitsRequest,
        kind: LimitKind,
    ) -> DaemonResult<LimitValues> {
        let change = self.begin_change(id, request.live, request.config)?;
        let (record, live, config) = (&change.record, change.scope.live, change.scope.config);
        if request.set.is_empty() {
            if live && config {
                return Err(bad_request("ask with --live or with --config, not both"));
            }
            let domain = if live {
                self.current_domain(record)?
            } else {
                self.persistent_domain(record)?
            };
            return Ok(limit_values(&domain, kind, live));
        }
        // Every value checked before anything changes.
        let apply = |domain: &mut Domain| -> DaemonResult<()> {
            for LimitValue { name, value } in &request.set {
                set_limit(domain, kind, name, *value)?;
            }
            Ok(())
        };
        apply(&mut self.persistent_domain(record)?)?;
        let mut answer = None;
        if live {
            let mut domain = self.current_domain(record)?;
            apply(&mut domain)?;
            let group = guest_cgroup(&record.uuid);
            let limits = cgroup_limits(&domain, kind);
            match kind {
                LimitKind::Cpu => group.set_cpu_limits(&limits),
                LimitKind::Memory => group.set_memory_limits(&limits),
            }
            .map_err(|err| cgroup_failure(&record.name, err))?;
            self.write_live_definition(record, &domain)?;
            answer = Some(limit_values(&domain, kind, true));
        }
        if config {
            self.change_persistent(record, apply)?;
        }
        let answer = match answer {
            Some(answer) => answer,
            None => limit_values(&self.persistent_domain(record)?, kind, false),
        };
        tracing::info!(domain = %record.name, verb = kind.verb(), live, config, "limits set");
        Ok(answer)
    }
}

/// The reason of a definition check, without its location (a verb's values have no line).
fn reason_of(err: DomainError) -> String {
    match err {
        DomainError::Invalid { reason, .. } => reason,
        other => other.to_string(),
    }
}

/// `request`'s values merged into `domain`'s `<blkiotune>` as libvirt merges them: a device
/// value of 0 removes that setting, a device left with nothing set goes; then libvirt's rules
/// (`validate_blkiotune`).
fn merge_blkio(domain: &mut Domain, request: &BlkioRequest) -> DaemonResult<()> {
    let tune = domain.blkiotune.get_or_insert_with(BlkioTune::default);
    if let Some(weight) = request.weight {
        tune.weight = Some(weight);
    }
    for setting in &request.devices {
        let name = setting.param.name();
        let index = match tune.devices.iter().position(|d| d.path == setting.path) {
            Some(index) => index,
            None => {
                tune.devices.push(BlkioDevice {
                    path: setting.path.clone(),
                    ..BlkioDevice::default()
                });
                tune.devices.len() - 1
            }
        };
        let device = &mut tune.devices[index];
        let value = setting.value;
        let small = || {
            u32::try_from(value).map_err(|_| {
                bad_request(format!(
                    "invalid argument: value {value} of '{name}' for device '{}' is out of range [0, {}]",
                    setting.path,
                    u32::MAX
                ))
            })
        };
        match setting.param {
            BlkioParam::DeviceWeight => device.weight = Some(small()?).filter(|v| *v != 0),
            BlkioParam::DeviceReadIopsSec => {
                device.read_iops_sec = Some(small()?).filter(|v| *v != 0)
            }
            BlkioParam::DeviceWriteIopsSec => {
                device.write_iops_sec = Some(small()?).filter(|v| *v != 0)
            }
            BlkioParam::DeviceReadBytesSec => {
                device.read_bytes_sec = Some(value).filter(|v| *v != 0)
            }
            BlkioParam::DeviceWriteBytesSec => {
                device.write_bytes_sec = Some(value).filter(|v| *v != 0)
            }
        }
    }
    tune.devices.retain(|d| !d.is_empty());
    validate_blkiotune(tune)
        .map_err(|err| bad_request(format!("invalid argument: {}", reason_of(err))))?;
    if tune.is_empty() {
        domain.blkiotune = None;
    }
    Ok(())
}

/// `domain`'s block I/O settings as `blkiotune` prints them; `live_weight`: the kernel's
/// weight of a running guest, shown when the definition sets none (as libvirt shows it).
fn blkio_values(domain: &Domain, live_weight: Option<u32>) -> BlkioValues {
    let tune = domain.blkiotune.clone().unwrap_or_default();
    BlkioValues {
        weight: tune.weight.or(live_weight).unwrap_or(0),
        devices: tune
            .devices
            .iter()
            .map(|d| BlkioDeviceValues {
                path: d.path.clone(),
                weight: d.weight.map_or(0, u64::from),
                read_iops_sec: d.read_iops_sec.map_or(0, u64::from),
                write_iops_sec: d.write_iops_sec.map_or(0, u64::from),
                read_bytes_sec: d.read_bytes_sec.unwrap_or(0),
                write_bytes_sec: d.write_bytes_sec.unwrap_or(0),
            })
            .collect(),
    }
}

impl Domains {
    /// `blkiotune`: asks (nothing to set) or sets, live and/or in the definition. Every value
    /// is checked on each side before anything changes; a device given a value must be a
    /// block device of this host, also for `--config` (libvirt checks that only live).
    pub async fn blkiotune(
        self: &Arc<Self>,
        id: &str,
        request: &BlkioRequest,
    ) -> DaemonResult<BlkioValues> {
        let change = self.begin_change(id, request.live, request.config)?;
        let (record, live, config) = (&change.record, change.scope.live, change.scope.config);
        let group = guest_cgroup(&record.uuid);
        if request.weight.is_none() && request.devices.is_empty() {
            if live && config {
                return Err(bad_request("ask with --live or with --config, not both"));
            }
            return Ok(if live {
                blkio_values(&self.current_domain(record)?, group.blkio_weight())
            } else {
                blkio_values(&self.persistent_domain(record)?, None)
            });
        }
        if request.weight == Some(0) {
            return Err(bad_request(
                "invalid argument: Invalid value of 0 for I/O weight",
            ));
        }
        for setting in request.devices.iter().filter(|s| s.value != 0) {
            cgroup::block_device_number(Path::new(&setting.path)).map_err(|err| {
                bad_request(format!(
                    "invalid argument: {} of '{}': {err}",
                    setting.param.name(),
                    setting.path
                ))
            })?;
        }
        merge_blkio(&mut self.persistent_domain(record)?, request)?;
        let mut answer = None;
        if live {
            let old = self.current_domain(record)?;
            let mut domain = old.clone();
            merge_blkio(&mut domain, request)?;
            let limits = blkio_change(&old, &domain)
                .map_err(|err| bad_request(format!("invalid argument: {err}")))?;
            group
                .set_blkio_limits(&limits)
                .map_err(|err| cgroup_failure(&record.name, err))?;
            self.write_live_definition(record, &domain)?;
            answer = Some(blkio_values(&domain, group.blkio_weight()));
        }
        if config {
            self.change_persistent(record, |domain| merge_blkio(domain, request))?;
        }
        let answer = match answer {
            Some(answer) => answer,
            None => blkio_values(&self.persistent_domain(record)?, None),
        };
        tracing::info!(domain = %record.name, live, config, "blkiotune set");
        Ok(answer)
    }
}
