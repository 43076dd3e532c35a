//! A guest's IOThreads (more of [`Domains`]): `iothreadinfo`, `iothreadpin`, `iothreadadd`,
//! `iothreaddel`, with virsh's `--live`/`--config`/`--current`.
//!
//! An IOThread is one thread of the engine process that virtio disks may run their I/O in
//! (`<driver iothread='N'/>`); the definition lists them (`<iothreads>`, `<iothreadids>`) and
//! may pin them (`<cputune><iothreadpin>`, applied at start by `tuning.rs`). While the guest
//! runs, the engine adds and removes them ([`crate::engine::Control::add_iothread`]) and says
//! which host thread each is; pinning is that thread's CPU affinity (`oxvirt_host::affinity`).
//! Every check is made, on each side the change goes to, before anything changes.

use std::collections::BTreeSet;
use std::sync::Arc;

use oxvirt_api::{
    IoThreadAffinity, IoThreadInfo, IoThreadPinRequest, IoThreadRequest, IoThreadScope,
    IoThreadsChanged,
};
use oxvirt_domain::{CpuSet, CpuTune, Domain, IoThreadPin, SourceLine};
use oxvirt_host::affinity;

use super::domains::Domains;
use super::error::{bad_request, engine_failure, internal, DaemonResult};
use super::tuning::{configured_cpus, cpulist, host_cpu_set};
use crate::store::DomainRecord;

/// The side of a domain a check speaks of, for messages.
fn side(live: bool) -> &'static str {
    if live {
        "the running guest"
    } else {
        "the definition"
    }
}

fn check_exists(domain: &Domain, id: u32, live: bool) -> DaemonResult<()> {
    if domain.iothreads.contains(id) {
        return Ok(());
    }
    Err(bad_request(format!(
        "IOThread {id} does not exist in {} of domain '{}' (its IOThreads: {})",
        side(live),
        domain.name,
        domain.iothreads.list()
    )))
}

/// An IOThread may go only when no disk runs its I/O in it (libvirt's rule).
fn check_unused(domain: &Domain, id: u32, live: bool) -> DaemonResult<()> {
    check_exists(domain, id, live)?;
    match domain
        .devices
        .disks
        .iter()
        .find(|disk| disk.driver.iothread == Some(id))
    {
        Some(disk) => Err(bad_request(format!(
            "cannot remove IOThread {id} of domain '{}': disk '{}' uses it (<driver iothread='{id}'/>) in {}",
            domain.name,
            disk.target.dev,
            side(live)
        ))),
        None => Ok(()),
    }
}

fn check_new(domain: &Domain, id: u32, live: bool) -> DaemonResult<()> {
    if id == 0 {
        return Err(bad_request("IOThread ids start at 1: 0 is not one"));
    }
    if domain.iothreads.contains(id) {
        return Err(bad_request(format!(
            "IOThread {id} already exists in {} of domain '{}'",
            side(live),
            domain.name
        )));
    }
    Ok(())
}

/// Records `<iothreadpin>` of `id` in `domain` (in the IOThreads' order, as libvirt prints
/// it; a pinned IOThread's id is stated from then on, as in libvirt: `<iothreadids>`).
fn record_pin(domain: &mut Domain, id: u32, cpus: &BTreeSet<u32>) {
    domain.iothreads.ids_stated = true;
    let ids = domain.iothreads.ids.clone();
    let tune = domain.cputune.get_or_insert_with(CpuTune::default);
    tune.iothreadpins.retain(|pin| pin.iothread != id);
    tune.iothreadpins.push(IoThreadPin {
        iothread: id,
        cpuset: CpuSet(cpus.clone()),
        line: SourceLine::NONE,
    });
    tune.iothreadpins
        .sort_by_key(|pin| ids.iter().position(|i| *i == pin.iothread));
}

/// Adds IOThread `id` last, as libvirt does (its id is then stated: `<iothreadids>`).
fn record_add(domain: &mut Domain, id: u32) {
    domain.iothreads.ids.push(id);
    domain.iothreads.ids_stated = true;
}

/// Removes IOThread `id` and its pin.
fn record_del(domain: &mut Domain, id: u32) {
    domain.iothreads.ids.retain(|i| *i != id);
    domain.iothreads.ids_stated = domain.iothreads.print_ids();
    if let Some(tune) = domain.cputune.as_mut() {
        tune.iothreadpins.retain(|pin| pin.iothread != id);
        let empty = CpuTune {
            line: tune.line,
            ..CpuTune::default()
        };
        if *tune == empty {
            domain.cputune = None;
        }
    }
}

/// The definition's pinning of IOThread `id` (what libvirt reports for a domain that is not
/// running).
fn configured_pin(domain: &Domain, id: u32, host: &BTreeSet<u32>) -> BTreeSet<u32> {
    let pin = domain
        .cputune
        .as_ref()
        .and_then(|tune| tune.iothreadpins.iter().find(|pin| pin.iothread == id))
        .map(|pin| &pin.cpuset);
    configured_cpus(domain, pin, host)
}

impl Domains {
    /// `iothreadinfo`: each IOThread and the host CPUs it may run on, of the running guest (its
    /// threads' affinity) or of the definition.
    pub async fn iothread_info(
        self: &Arc<Self>,
        id: &str,
        scope: &IoThreadScope,
    ) -> DaemonResult<IoThreadInfo> {
        if scope.live && scope.config {
            return Err(bad_request("ask with --live or with --config, not both"));
        }
        let change = self.begin_change(id, scope.live, scope.config)?;
        let record = &change.record;
        let iothreads = if change.scope.live {
            let domain = self.current_domain(record)?;
            let control = self.guests.running_control(&change.vm, record)?;
            let threads = control
                .iothreads()
                .await
                .map_err(|err| engine_failure(&record.name, err))?;
            let mut out = Vec::new();
            for id in &domain.iothreads.ids {
                let Some(thread) = threads.iter().find(|t| t.id == *id) else {
                    continue;
                };
                let cpus = affinity::affinity(thread.thread)
                    .map_err(|err| internal("cannot read an IOThread's CPU affinity", err))?;
                out.push(IoThreadAffinity {
                    id: *id,
                    cpulist: cpulist(&cpus),
                });
            }
            out
        } else {
            let domain = self.persistent_domain(record)?;
            let host = affinity::online_cpus();
            domain
                .iothreads
                .ids
                .iter()
                .map(|id| IoThreadAffinity {
                    id: *id,
                    cpulist: cpulist(&configured_pin(&domain, *id, &host)),
                })
                .collect()
        };
        Ok(IoThreadInfo { iothreads })
    }

    /// `iothreadpin`: the host CPUs IOThread `iothread` may run on.
    pub async fn iothread_pin(
        self: &Arc<Self>,
        id: &str,
        request: &IoThreadPinRequest,
    ) -> DaemonResult<IoThreadsChanged> {
        let change = self.begin_change(id, request.live, request.config)?;
        let (record, live, config) = (&change.record, change.scope.live, change.scope.config);
        let cpus = host_cpu_set(&request.cpulist, &affinity::online_cpus())?;
        let n = request.iothread;
        let next = if config {
            Some(self.next_definition(record, |domain| {
                check_exists(domain, n, false)?;
                record_pin(domain, n, &cpus);
                Ok(())
            })?)
        } else {
            None
        };
        if live {
            let mut current = self.current_domain(record)?;
            check_exists(&current, n, true)?;
            let control = self.guests.running_control(&change.vm, record)?;
            let threads = control
                .iothreads()
                .await
                .map_err(|err| engine_failure(&record.name, err))?;
            let thread = threads.iter().find(|t| t.id == n).ok_or_else(|| {
                bad_request(format!(
                    "IOThread {n} of domain '{}' is not in its engine",
                    record.name
                ))
            })?;
            affinity::set_affinity(thread.thread, &cpus)
                .map_err(|err| internal("cannot set an IOThread's CPU affinity", err))?;
            record_pin(&mut current, n, &cpus);
            self.write_live_definition(record, &current)?;
        }
        self.store_next(record, next)?;
        tracing::info!(domain = %record.name, iothread = n, cpus = %cpulist(&cpus), live, config, "iothreadpin");
        Ok(IoThreadsChanged {
            name: record.name.clone(),
        })
    }

    /// `iothreadadd`: a new IOThread (QEMU's `object-add` while the guest runs).
    pub async fn iothread_add(
        self: &Arc<Self>,
        id: &str,
        request: &IoThreadRequest,
    ) -> DaemonResult<IoThreadsChanged> {
        self.iothread_change(id, request, Op::Add).await
    }

    /// `iothreaddel`: removes an IOThread no disk uses (QEMU's `object-del` while it runs).
    pub async fn iothread_del(
        self: &Arc<Self>,
        id: &str,
        request: &IoThreadRequest,
    ) -> DaemonResult<IoThreadsChanged> {
        self.iothread_change(id, request, Op::Del).await
    }

    async fn iothread_change(
        self: &Arc<Self>,
        id: &str,
        request: &IoThreadRequest,
        op: Op,
    ) -> DaemonResult<IoThreadsChanged> {
        let change = self.begin_change(id, request.live, request.config)?;
        let (record, live, config) = (&change.record, change.scope.live, change.scope.config);
        let n = request.iothread;
        let next = if config {
            Some(self.next_definition(record, |domain| op.apply(domain, n, false))?)
        } else {
            None
        };
        if live {
            let mut current = self.current_domain(record)?;
            op.apply(&mut current, n, true)?;
            let control = self.guests.running_control(&change.vm, record)?;
            match op {
                Op::Add => control.add_iothread(n).await,
                Op::Del => control.del_iothread(n).await,
            }
            .map_err(|err| engine_failure(&record.name, err))?;
            self.write_live_definition(record, &current)?;
        }
        self.store_next(record, next)?;
        tracing::info!(domain = %record.name, iothread = n, live, config, op = ?op, "iothread change");
        Ok(IoThreadsChanged {
            name: record.name.clone(),
        })
    }
}

/// What `iothreadadd` and `iothreaddel` do to a definition.
#[derive(Debug, Clone, Copy)]
enum Op {
    Add,
    Del,
}

impl Op {
    /// Checks the change against `domain` (`live`: the running guest's) and makes it.
    fn apply(self, domain: &mut Domain, id: u32, live: bool) -> DaemonResult<()> {
        match self {
            Op::Add => {
                check_new(domain, id, live)?;
                record_add(domain, id);
            }
            Op::Del => {
                check_unused(domain, id, live)?;
                record_del(domain, id);
            }
        }
        Ok(())
    }
}

impl Domains {
    /// The next start's definition with `change` made, checked by the engine (before the
    /// running guest changes).
    fn next_definition(
        &self,
        record: &DomainRecord,
        change: impl FnOnce(&mut Domain) -> DaemonResult<()>,
    ) -> DaemonResult<Domain> {
        let mut domain = self.persistent_domain(record)?;
        change(&mut domain)?;
        self.engine
            .check_definition(&domain)
            .map_err(|err| engine_failure(&record.name, err))?;
        Ok(domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(xml_extra: &str) -> Domain {
        oxvirt_domain::parse_domain_xml(&format!(
            "<domain type='qemu'><name>d</name><memory>65536</memory>{xml_extra}\
             <os><type>hvm</type></os></domain>"
        ))
        .unwrap()
    }

    #[test]
    fn changes_read_back_as_libvirt_prints_them() {
        let mut d = domain("<iothreads>3</iothreads>");
        record_del(&mut d, 2);
        record_pin(&mut d, 3, &BTreeSet::from([0]));
        record_add(&mut d, 7);
        let again = oxvirt_domain::parse_domain_xml(&d.to_xml()).unwrap();
        assert_eq!(again.iothreads.ids, [1, 3, 7]);
        assert_eq!(again.cputune.unwrap().iothreadpins[0].iothread, 3);
        // The last one goes: the rest is what the count alone says.
        let mut d = domain("<iothreads>2</iothreads>");
        record_del(&mut d, 2);
        assert!(!d.to_xml().contains("iothreadids"));
    }

    #[test]
    fn a_used_iothread_stays() {
        let d = domain(
            "<iothreads>1</iothreads><devices><disk type='file' device='disk'>\
             <driver name='qemu' type='raw' iothread='1'/><source file='/a'/>\
             <target dev='vda' bus='virtio'/></disk></devices>",
        );
        let err = check_unused(&d, 1, true).unwrap_err().to_string();
        assert!(err.contains("disk 'vda' uses it"), "{err}");
        assert!(check_new(&d, 0, false).is_err());
        assert!(check_new(&d, 1, false).is_err());
        assert!(check_exists(&d, 2, false).is_err());
    }
}
