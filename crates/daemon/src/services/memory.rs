//! A guest's memory (more of [`Domains`]): `setmem`, `setmaxmem`, `dommemstat` and its
//! `--period`, with virsh's `--live`/`--config`/`--current`.
//!
//! A running guest's memory changes through its balloon device: the engine asks the guest's
//! driver to give memory back (or take it again) up to `<memory>`, the size the guest booted
//! with; `<memory>` itself cannot change while it runs (no memory hotplug), as in libvirt.
//! `--config` changes the definition of the next start (`<currentMemory>`, `<memory>`,
//! `<memballoon><stats period=>`); the live definition (what `dumpxml` shows while it runs)
//! follows live changes.

use std::sync::Arc;

use oxvirt_api::{DomainMemoryStats, MemoryChanged, MemoryRequest, MemoryStat, StatsPeriodRequest};
use oxvirt_domain::{Domain, MemBalloon, MemBalloonModel};

use super::domains::Domains;
use super::error::{bad_request, db, engine_failure, invalid_state, DaemonResult};
use crate::store::DomainRecord;

/// The domain's virtio balloon, if it has one.
fn balloon(domain: &mut Domain) -> Option<&mut MemBalloon> {
    domain
        .devices
        .memballoon
        .as_mut()
        .filter(|b| b.model == MemBalloonModel::Virtio)
}

fn no_balloon(name: &str, what: &str) -> super::error::DaemonError {
    invalid_state(format!(
        "domain '{name}' has no memory balloon device (<memballoon model='virtio'>): {what}"
    ))
}

/// The size a request asks for, which must not be 0.
fn nonzero_size(request: &MemoryRequest) -> DaemonResult<u64> {
    match request.size_kib {
        0 => Err(bad_request("memory size must not be zero")),
        size => Ok(size),
    }
}

fn check_below_maximum(size_kib: u64, domain: &Domain) -> DaemonResult<()> {
    if size_kib > domain.memory_kib {
        return Err(bad_request(format!(
            "cannot set memory higher than max memory: {size_kib} KiB > {} KiB",
            domain.memory_kib
        )));
    }
    Ok(())
}

impl Domains {
    /// Stores the next start's definition a change made (checked already), if it made one.
    fn store_next(&self, record: &DomainRecord, next: Option<Domain>) -> DaemonResult<()> {
        match next {
            Some(domain) => self.change_persistent(record, |stored| {
                *stored = domain;
                Ok(())
            }),
            None => Ok(()),
        }
    }

    /// `setmem`: the guest's current memory, through its balloon (live) or `<currentMemory>`.
    pub async fn set_memory(
        self: &Arc<Self>,
        id: &str,
        request: &MemoryRequest,
    ) -> DaemonResult<MemoryChanged> {
        let size = nonzero_size(request)?;
        let change = self.begin_change(id, request.live, request.config)?;
        let (vm, record, live, config) = (
            &change.vm,
            &change.record,
            change.scope.live,
            change.scope.config,
        );
        // Everything is checked before anything changes.
        let mut next = None;
        if config {
            let mut domain = self.persistent_domain(record)?;
            check_below_maximum(size, &domain)?;
            domain.current_memory_kib = size;
            // The engine's word on it (a smaller <currentMemory> needs a balloon) before the
            // running guest changes.
            self.engine
                .check_definition(&domain)
                .map_err(|err| engine_failure(&record.name, err))?;
            next = Some(domain);
        }
        if live {
            let mut current = self.current_domain(record)?;
            check_below_maximum(size, &current)?;
            if balloon(&mut current).is_none() {
                return Err(no_balloon(
                    &record.name,
                    "the memory of a running guest changes only through one",
                ));
            }
            let control = self.guests.running_control(vm, record)?;
            control
                .set_balloon(size)
                .await
                .map_err(|err| engine_failure(&record.name, err))?;
            current.current_memory_kib = size;
            self.write_live_definition(record, &current)?;
        }
        self.store_next(record, next)?;
        tracing::info!(domain = %record.name, size_kib = size, live, config, "setmem");
        Ok(MemoryChanged {
            name: record.name.clone(),
        })
    }

    /// `setmaxmem`: `<memory>` of the next start (a running guest's cannot change); a
    /// `<currentMemory>` above it comes down with it, as in libvirt.
    pub fn set_max_memory(&self, id: &str, request: &MemoryRequest) -> DaemonResult<MemoryChanged> {
        let size = nonzero_size(request)?;
        let change = self.begin_change(id, request.live, request.config)?;
        let (record, live) = (&change.record, change.scope.live);
        if live {
            return Err(invalid_state(format!(
                "cannot resize the maximum memory of running domain '{}': guests here have no \
                 memory hotplug (--config changes it for the next start)",
                record.name
            )));
        }
        self.change_persistent(record, |domain| {
            if domain.cpu.as_ref().is_some_and(|cpu| !cpu.numa.is_empty()) {
                return Err(bad_request(
                    "the memory of a domain with NUMA cells is the sum of its cells' \
                     (<cpu><numa><cell memory=>): change them with edit",
                ));
            }
            domain.memory_kib = size;
            domain.current_memory_kib = domain.current_memory_kib.min(size);
            Ok(())
        })?;
        tracing::info!(domain = %record.name, size_kib = size, "setmaxmem");
        Ok(MemoryChanged {
            name: record.name.clone(),
        })
    }

    /// `dommemstat`: the balloon's size and the guest driver's statistics (without a balloon,
    /// the size the guest has), then the engine process' resident memory.
    pub async fn memory_stats(self: &Arc<Self>, id: &str) -> DaemonResult<DomainMemoryStats> {
        let record = self.guests.resolve(id)?;
        let (vm, _guard) = self.guests.begin(&record)?;
        let runtime = self
            .store
            .runtime(&record.uuid)
            .map_err(db)?
            .ok_or_else(|| invalid_state(format!("domain '{}' is not running", record.name)))?;
        let mut current = self.current_domain(&record)?;
        let mut stats = Vec::new();
        if balloon(&mut current).is_some() {
            let control = self.guests.running_control(&vm, &record)?;
            let memory = control
                .memory_stats()
                .await
                .map_err(|err| engine_failure(&record.name, err))?;
            stats.push(("actual", memory.actual_kib));
            stats.extend(memory.guest);
        } else {
            stats.push(("actual", current.current_memory_kib));
        }
        if let Some(rss) = oxvirt_host::resident_kib(runtime.pid) {
            stats.push(("rss", rss));
        }
        Ok(DomainMemoryStats {
            stats: stats
                .into_iter()
                .map(|(name, value)| MemoryStat {
                    name: name.to_string(),
                    value,
                })
                .collect(),
        })
    }

    /// `dommemstat --period`: how often the guest's balloon driver reports statistics.
    pub async fn set_memory_stats_period(
        self: &Arc<Self>,
        id: &str,
        request: &StatsPeriodRequest,
    ) -> DaemonResult<MemoryChanged> {
        let change = self.begin_change(id, request.live, request.config)?;
        let (vm, record, live, config) = (
            &change.vm,
            &change.record,
            change.scope.live,
            change.scope.config,
        );
        let period = (request.period > 0).then_some(request.period);
        let what = "no statistics period to set";
        let mut next = None;
        if config {
            let mut domain = self.persistent_domain(record)?;
            balloon(&mut domain)
                .ok_or_else(|| no_balloon(&record.name, what))?
                .stats_period = period;
            next = Some(domain);
        }
        if live {
            let mut current = self.current_domain(record)?;
            balloon(&mut current)
                .ok_or_else(|| no_balloon(&record.name, what))?
                .stats_period = period;
            let control = self.guests.running_control(vm, record)?;
            control
                .set_memory_stats_period(request.period)
                .await
                .map_err(|err| engine_failure(&record.name, err))?;
            self.write_live_definition(record, &current)?;
        }
        self.store_next(record, next)?;
        tracing::info!(domain = %record.name, period = request.period, live, config, "memory statistics period");
        Ok(MemoryChanged {
            name: record.name.clone(),
        })
    }
}
