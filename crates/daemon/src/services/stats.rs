//! `domstats` (more of [`Domains`]): each domain's statistics under libvirt's names, by group
//! (`state`, `cpu-total`, `balloon`, `vcpu`, `interface`, `block`), read without taking the
//! domain's operation lock (a statistic never waits for a snapshot or a hotplug to end).
//!
//! Sources, as libvirt's: the state and its reason from the store (libvirt's numbers); CPU
//! time from the guest's cgroup (`oxvirt_host::cgroup`), user and system time from the
//! engine process; the balloon from the engine's Control and the process' RSS; each vCPU's
//! time and run-queue delay from its thread; NIC counters from `/proc/net/dev` for the guest's
//! TAP (its receive is the TAP's transmit); disk counters from the engine's Control, sizes from
//! the engine and the image file.

use std::sync::Arc;

use oxvirt_api::{DomainState, DomainStats, DomainsStats, StatField, StatsRequest};
use oxvirt_domain::Domain;
use oxvirt_host::affinity;

use super::domains::Domains;
use super::error::{bad_request, db, DaemonResult};
use super::guests::stored_domain;
use crate::engine::Control;
use crate::store::{DomainRecord, RuntimeRecord};

const GROUPS: [&str; 6] = [
    "state",
    "cpu-total",
    "balloon",
    "vcpu",
    "interface",
    "block",
];

/// libvirt's number for a state (`virDomainState`) and for its reason (`virDomain*Reason`).
fn state_numbers(state: DomainState, reason: &str) -> (u32, u32) {
    let (number, reasons): (u32, &[&str]) = match state {
        DomainState::Running => (
            1,
            &[
                "unknown",
                "booted",
                "migrated",
                "restored",
                "from snapshot",
                "unpaused",
                "migration canceled",
                "save canceled",
                "wakeup",
                "crashed",
                "post-copy",
            ],
        ),
        DomainState::Paused => (
            3,
            &[
                "unknown",
                "user",
                "migration",
                "save",
                "dump",
                "ioerror",
                "watchdog",
                "from snapshot",
                "shutting down",
                "snapshot",
                "crashed",
                "starting up",
                "post-copy",
            ],
        ),
        DomainState::InShutdown => (4, &["unknown", "user"]),
        DomainState::ShutOff => (
            5,
            &[
                "unknown",
                "shutdown",
                "destroyed",
                "crashed",
                "migrated",
                "saved",
                "failed",
                "from snapshot",
                "daemon",
            ],
        ),
        DomainState::Crashed => (6, &["unknown", "panicked"]),
        DomainState::PmSuspended => (7, &["unknown"]),
    };
    let reason = reasons.iter().position(|r| *r == reason).unwrap_or(0) as u32;
    (number, reason)
}

/// A domain's fields, in order.
#[derive(Default)]
struct Fields(Vec<StatField>);

impl Fields {
    fn add(&mut self, name: impl Into<String>, value: impl ToString) {
        self.0.push(StatField {
            name: name.into(),
            value: value.to_string(),
        });
    }
}

/// One TAP's counters from `/proc/net/dev`: (rx bytes, packets, errs, drop, tx bytes,
/// packets, errs, drop), the host's view.
fn tap_counters(net_dev: &str, tap: &str) -> Option<[u64; 8]> {
    let line = net_dev
        .lines()
        .find(|line| line.trim_start().split(':').next() == Some(tap))?;
    let numbers: Vec<u64> = line
        .split_once(':')?
        .1
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    // rx: bytes packets errs drop fifo frame compressed multicast; tx: bytes packets errs drop ...
    Some([
        *numbers.first()?,
        *numbers.get(1)?,
        *numbers.get(2)?,
        *numbers.get(3)?,
        *numbers.get(8)?,
        *numbers.get(9)?,
        *numbers.get(10)?,
        *numbers.get(11)?,
    ])
}

impl Domains {
    /// `domstats`.
    pub async fn domain_stats(
        self: &Arc<Self>,
        request: &StatsRequest,
    ) -> DaemonResult<DomainsStats> {
        for group in &request.groups {
            if !GROUPS.contains(&group.as_str()) {
                return Err(bad_request(format!(
                    "unknown statistics group '{group}' (oxvirt has {})",
                    GROUPS.join(", ")
                )));
            }
        }
        let wants =
            |group: &str| request.groups.is_empty() || request.groups.iter().any(|g| g == group);
        let records = if request.domains.is_empty() {
            self.store.list_domains().map_err(db)?
        } else {
            request
                .domains
                .iter()
                .map(|id| self.guests.resolve(id))
                .collect::<DaemonResult<Vec<_>>>()?
        };
        let runtimes = self.runtimes_by_uuid()?;
        let net_dev = std::fs::read_to_string("/proc/net/dev").unwrap_or_default();
        let mut domains = Vec::new();
        for record in records {
            let runtime = runtimes.get(&record.uuid);
            let state = runtime.map_or(DomainState::ShutOff, |r| r.state);
            let state_word = match state {
                DomainState::Running => "running",
                DomainState::Paused => "paused",
                DomainState::ShutOff => "shutoff",
                _ => "other",
            };
            if !request.states.is_empty() && !request.states.iter().any(|s| s == state_word) {
                continue;
            }
            let domain = match runtime {
                Some(_) => self.current_domain(&record)?,
                None => stored_domain(&record)?,
            };
            // The control connection, if the guest runs and it is up; no operation lock.
            let control = runtime.and_then(|_| {
                let vm = self.guests.slot(&record.uuid);
                let live = self.guests.live_or_not_running(&vm, &record).ok()?;
                self.guests.control_of(&live, &record).ok()
            });
            let mut fields = Fields::default();
            if wants("state") {
                let reason = runtime.map_or(record.off_reason.as_str(), |r| r.reason.as_str());
                let (number, reason) = state_numbers(state, reason);
                fields.add("state.state", number);
                fields.add("state.reason", reason);
            }
            if let Some(runtime) = runtime {
                if wants("cpu-total") {
                    cpu_total(&mut fields, &record, runtime.pid);
                }
            }
            if wants("balloon") {
                balloon(&mut fields, &domain, runtime, control.as_deref()).await;
            }
            if wants("vcpu") {
                vcpus(&mut fields, &domain, runtime, control.as_deref()).await;
            }
            if wants("interface") {
                interfaces(&mut fields, &domain, runtime.is_some(), &net_dev);
            }
            if wants("block") {
                block(&mut fields, &domain, control.as_deref()).await;
            }
            domains.push(DomainStats {
                name: record.name.clone(),
                fields: fields.0,
            });
        }
        Ok(DomainsStats { domains })
    }
}

fn cpu_total(fields: &mut Fields, record: &DomainRecord, pid: u32) {
    let (user, system) = oxvirt_host::user_and_system_ns(pid).unwrap_or((0, 0));
    // The guest's cgroup counts every thread precisely; the process' ticks are the fallback.
    let time = oxvirt_host::cgroup::of_guest(&record.uuid.to_string())
        .cpu_time_ns("")
        .unwrap_or(user + system);
    fields.add("cpu.time", time);
    fields.add("cpu.user", user);
    fields.add("cpu.system", system);
}

async fn balloon(
    fields: &mut Fields,
    domain: &Domain,
    runtime: Option<&RuntimeRecord>,
    control: Option<&dyn Control>,
) {
    let stats = match control {
        Some(control) => control.memory_stats().await.ok(),
        None => None,
    };
    let current = stats
        .as_ref()
        .map_or(domain.current_memory_kib, |s| s.actual_kib);
    fields.add("balloon.current", current);
    fields.add("balloon.maximum", domain.memory_kib);
    for (key, value) in stats.iter().flat_map(|s| s.guest.iter()) {
        // domstats spells it with a dash, dommemstat with an underscore (libvirt's names).
        let key = if *key == "last_update" {
            "last-update"
        } else {
            key
        };
        fields.add(format!("balloon.{key}"), value);
    }
    if let Some(rss) = runtime.and_then(|r| oxvirt_host::resident_kib(r.pid)) {
        fields.add("balloon.rss", rss);
    }
}

async fn vcpus(
    fields: &mut Fields,
    domain: &Domain,
    runtime: Option<&RuntimeRecord>,
    control: Option<&dyn Control>,
) {
    let threads = match control {
        Some(control) => control.vcpu_threads().await.unwrap_or_default(),
        None => Vec::new(),
    };
    let current = if threads.is_empty() {
        domain.vcpu.online()
    } else {
        threads.len() as u32
    };
    fields.add("vcpu.current", current);
    fields.add("vcpu.maximum", domain.vcpu.max);
    let Some(runtime) = runtime else { return };
    for (n, tid) in threads.iter().enumerate() {
        let Some(stat) = affinity::thread_stat(runtime.pid, *tid) else {
            continue;
        };
        fields.add(format!("vcpu.{n}.state"), 1);
        fields.add(format!("vcpu.{n}.time"), stat.cpu_time_ns);
        fields.add(format!("vcpu.{n}.wait"), 0);
        if let Some(delay) = affinity::thread_delay_ns(runtime.pid, *tid) {
            fields.add(format!("vcpu.{n}.delay"), delay);
        }
    }
}

fn interfaces(fields: &mut Fields, domain: &Domain, running: bool, net_dev: &str) {
    let nics = &domain.devices.interfaces;
    fields.add("net.count", nics.len());
    if !running {
        return;
    }
    for (n, nic) in nics.iter().enumerate() {
        let Some(tap) = nic.target_dev.as_deref() else {
            continue;
        };
        fields.add(format!("net.{n}.name"), tap);
        let Some([rx_b, rx_p, rx_e, rx_d, tx_b, tx_p, tx_e, tx_d]) = tap_counters(net_dev, tap)
        else {
            continue;
        };
        // What the TAP sends is what the guest receives.
        for (name, value) in [
            ("rx.bytes", tx_b),
            ("rx.pkts", tx_p),
            ("rx.errs", tx_e),
            ("rx.drop", tx_d),
            ("tx.bytes", rx_b),
            ("tx.pkts", rx_p),
            ("tx.errs", rx_e),
            ("tx.drop", rx_d),
        ] {
            fields.add(format!("net.{n}.{name}"), value);
        }
    }
}

async fn block(fields: &mut Fields, domain: &Domain, control: Option<&dyn Control>) {
    let disks = &domain.devices.disks;
    fields.add("block.count", disks.len());
    let stats = match control {
        Some(control) => control.block_stats().await.unwrap_or_default(),
        None => Vec::new(),
    };
    for (n, disk) in disks.iter().enumerate() {
        let dev = &disk.target.dev;
        fields.add(format!("block.{n}.name"), dev);
        // A file or block device (a volume's source is resolved at start, into the live
        // definition).
        let path = disk.source.clone();
        if let Some(path) = &path {
            fields.add(format!("block.{n}.path"), path);
        }
        if let Some(stat) = stats.iter().find(|s| &s.target == dev) {
            for (name, value) in [
                ("rd.reqs", stat.rd_req),
                ("rd.bytes", stat.rd_bytes),
                ("rd.times", stat.rd_total_times),
                ("wr.reqs", stat.wr_req),
                ("wr.bytes", stat.wr_bytes),
                ("wr.times", stat.wr_total_times),
                ("fl.reqs", stat.flush_operations),
                ("fl.times", stat.flush_total_times),
            ] {
                fields.add(format!("block.{n}.{name}"), value);
            }
        }
        if let Some(control) = control {
            if let Ok(capacity) = control.block_size(dev).await {
                fields.add(format!("block.{n}.capacity"), capacity);
            }
        }
        if let Some(physical) = path.as_ref().and_then(|p| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(p).ok().map(|m| m.blocks() * 512)
        }) {
            fields.add(format!("block.{n}.physical"), physical);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_reasons_are_libvirts_numbers() {
        assert_eq!(state_numbers(DomainState::Running, "booted"), (1, 1));
        assert_eq!(state_numbers(DomainState::Paused, "user"), (3, 1));
        assert_eq!(state_numbers(DomainState::ShutOff, "destroyed"), (5, 2));
        assert_eq!(
            state_numbers(DomainState::ShutOff, "no such reason"),
            (5, 0)
        );
    }

    #[test]
    fn tap_counters_are_read_by_name() {
        let net_dev = "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls carrier compressed\n  vnet0: 100 2 0 1 0 0 0 0 300 4 0 0 0 0 0 0\n";
        assert_eq!(
            tap_counters(net_dev, "vnet0"),
            Some([100, 2, 0, 1, 300, 4, 0, 0])
        );
        assert_eq!(tap_counters(net_dev, "vnet1"), None);
    }
}
