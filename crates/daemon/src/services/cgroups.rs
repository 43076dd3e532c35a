//! A guest's control groups (more of [`Domains`]): at start its engine process and threads go
//! into groups of their own, with `<cputune>`'s shares, periods and quotas and `<memtune>`'s
//! limits (`oxvirt_host::cgroup`); they go when it stops. A guest without limits whose groups
//! the host refuses runs ungrouped, with a warning in oxvirtd's log.

use std::sync::Arc;

use oxvirt_api::{LimitValue, LimitValues, LimitsRequest};
use oxvirt_domain::{CpuTune, Domain, MemTune};
use oxvirt_host::cgroup::{self, GuestCgroup, Limits, UNLIMITED_KIB};
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
    }
}

pub(crate) fn cgroup_failure(name: &str, err: impl std::fmt::Display) -> DaemonError {
    DaemonError::new(
        ErrorKind::Unsupported,
        format!("cannot set up the cgroups of domain '{name}': {err}"),
    )
}

impl Domains {
    /// At start, before the guest runs: its process and threads into its groups, with its
    /// limits. A guest whose engine does not report vCPU threads gets one group for all.
    pub(super) async fn apply_cgroups(
        &self,
        domain: &Domain,
        pid: u32,
        control: &dyn Control,
    ) -> DaemonResult<()> {
        let limits = limits_of(domain);
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
