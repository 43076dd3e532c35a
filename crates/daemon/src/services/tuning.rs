//! Where a guest's threads run (more of [`Domains`]): `vcpuinfo`, `vcpupin`, `emulatorpin`,
//! and `<cputune>`'s `<vcpupin>`/`<emulatorpin>` applied when a guest starts; how many vCPUs
//! it has: `vcpucount`, `setvcpus` (vCPU hotplug through the engine's [`Control`]).
//!
//! A running guest is one engine process: each vCPU is one of its threads (the engine says
//! which), and every other thread is the "emulator" (libvirt's word). Pinning is the kernel's
//! CPU affinity of those threads (`oxvirt_host::affinity`); the definition records it in
//! `<cputune>`, as libvirt's does. Pinning a vCPU to every host CPU removes its `<vcpupin>`.

use std::collections::BTreeSet;
use std::sync::Arc;

use oxvirt_api::{Pin, PinRequest, Pins, SetVcpus, VcpuCounts, VcpuInfo, VcpuState};
use oxvirt_domain::{CpuSet, CpuTune, Domain, Vcpu, VcpuPin, VcpuSlot};
use oxvirt_host::affinity;

use super::change::Scope;
use super::domains::Domains;
use super::error::{bad_request, db, engine_failure, internal, invalid_state, DaemonResult};
use super::guests::Vm;
use crate::engine::{Control, EngineErrorKind, IoThreadState, VcpuSlotState};
use crate::store::DomainRecord;

/// `cpulist` as a set of the `host`'s CPUs; each must exist (virsh's words when one does not).
pub(super) fn host_cpu_set(cpulist: &str, host: &BTreeSet<u32>) -> DaemonResult<BTreeSet<u32>> {
    let cpus = oxvirt_domain::parse_cpuset(cpulist)
        .map_err(|err| bad_request(format!("invalid cpulist '{cpulist}': {err}")))?;
    check_on_host(&cpus, host, &format!("cpulist '{cpulist}'"))?;
    Ok(cpus.0)
}

pub(super) fn check_on_host(cpus: &CpuSet, host: &BTreeSet<u32>, what: &str) -> DaemonResult<()> {
    match cpus.iter().find(|cpu| !host.contains(cpu)) {
        Some(cpu) => Err(bad_request(format!(
            "CPU {cpu} in {what} exceed the maxcpu {}",
            host.len()
        ))),
        None => Ok(()),
    }
}

pub(super) fn cpulist(cpus: &BTreeSet<u32>) -> String {
    CpuSet(cpus.clone()).to_string()
}

/// A thread's pinning in the definition: its own pin, else `<vcpu cpuset>`, else every host
/// CPU (libvirt's rule for vCPUs, the emulator and IOThreads).
pub(super) fn configured_cpus(
    domain: &Domain,
    pin: Option<&CpuSet>,
    host: &BTreeSet<u32>,
) -> BTreeSet<u32> {
    pin.or(domain.vcpu.cpuset.as_ref())
        .map(|set| set.0.clone())
        .unwrap_or_else(|| host.clone())
}

/// The definition's pinning of `vcpu`.
fn configured_vcpu_pin(domain: &Domain, vcpu: u32, host: &BTreeSet<u32>) -> BTreeSet<u32> {
    let pin = domain
        .cputune
        .as_ref()
        .and_then(|tune| tune.vcpupins.iter().find(|pin| pin.vcpu == vcpu))
        .map(|pin| &pin.cpuset);
    configured_cpus(domain, pin, host)
}

/// The definition's pinning of the emulator threads.
fn configured_emulator_pin(domain: &Domain, host: &BTreeSet<u32>) -> BTreeSet<u32> {
    let pin = domain
        .cputune
        .as_ref()
        .and_then(|tune| tune.emulatorpin.as_ref());
    configured_cpus(domain, pin, host)
}

/// Records a pin in `domain`'s `<cputune>` (`vcpu` `None`: the emulator); every host CPU means
/// no pin, as in libvirt.
fn record_pin(domain: &mut Domain, vcpu: Option<u32>, cpus: &BTreeSet<u32>, host: &BTreeSet<u32>) {
    let tune = domain.cputune.get_or_insert_with(CpuTune::default);
    let pin = (cpus != host).then(|| CpuSet(cpus.clone()));
    match vcpu {
        Some(vcpu) => {
            tune.vcpupins.retain(|p| p.vcpu != vcpu);
            if let Some(cpuset) = pin {
                tune.vcpupins.push(VcpuPin { vcpu, cpuset });
                tune.vcpupins.sort_by_key(|p| p.vcpu);
            }
        }
        None => tune.emulatorpin = pin,
    }
    let empty = CpuTune {
        line: tune.line,
        ..CpuTune::default()
    };
    if *tune == empty {
        domain.cputune = None;
    }
}

impl Domains {
    /// `vcpuinfo`: each vCPU's host CPU, CPU time and affinity.
    pub async fn vcpu_info(self: &Arc<Self>, id: &str) -> DaemonResult<VcpuInfo> {
        let record = self.guests.resolve(id)?;
        let (vm, _guard) = self.guests.begin(&record)?;
        let (pid, threads) = self.guest_threads(&vm, &record).await?;
        let mut vcpus = Vec::with_capacity(threads.len());
        for (vcpu, tid) in threads.into_iter().enumerate() {
            let stat = affinity::thread_stat(pid, tid);
            vcpus.push(VcpuState {
                vcpu: vcpu as u32,
                cpu: stat.map_or(0, |s| s.cpu),
                cpu_time_ns: stat.map_or(0, |s| s.cpu_time_ns),
                affinity: affinity::affinity(tid)
                    .map_err(|err| internal("cannot read a vCPU's affinity", err))?
                    .into_iter()
                    .collect(),
            });
        }
        let host_cpus = affinity::online_cpus().last().map_or(1, |last| last + 1);
        Ok(VcpuInfo { host_cpus, vcpus })
    }

    /// The running guest's engine process and its vCPU threads (by vCPU number).
    async fn guest_threads(&self, vm: &Vm, record: &DomainRecord) -> DaemonResult<(u32, Vec<u32>)> {
        let control = self.guests.running_control(vm, record)?;
        let pid = self
            .store
            .runtime(&record.uuid)
            .map_err(db)?
            .map(|runtime| runtime.pid)
            .ok_or_else(|| invalid_state(format!("domain '{}' is not running", record.name)))?;
        let threads = control
            .vcpu_threads()
            .await
            .map_err(|err| engine_failure(&record.name, err))?;
        Ok((pid, threads))
    }

    /// `vcpupin`: asks (no `cpulist`) or pins.
    pub async fn vcpu_pin(self: &Arc<Self>, id: &str, request: &PinRequest) -> DaemonResult<Pins> {
        self.pin(id, request, true).await
    }

    /// `emulatorpin`: asks (no `cpulist`) or pins.
    pub async fn emulator_pin(
        self: &Arc<Self>,
        id: &str,
        request: &PinRequest,
    ) -> DaemonResult<Pins> {
        self.pin(id, request, false).await
    }

    async fn pin(
        self: &Arc<Self>,
        id: &str,
        request: &PinRequest,
        of_vcpus: bool,
    ) -> DaemonResult<Pins> {
        let record = self.guests.resolve(id)?;
        let (vm, _guard) = self.guests.begin(&record)?;
        // Re-read under the lock: the definition may have changed since it was resolved.
        let record = self.guests.resolve(id)?;
        let running = self.store.runtime(&record.uuid).map_err(db)?.is_some();
        let targets = Scope::of(request.live, request.config, running, &record.name)?;
        let host = affinity::online_cpus();
        let vcpu = if of_vcpus { request.vcpu } else { None };
        let Some(list) = &request.cpulist else {
            if targets.live && targets.config {
                return Err(bad_request("ask with --live or with --config, not both"));
            }
            return if targets.live {
                let (pid, threads) = self.guest_threads(&vm, &record).await?;
                live_pins(pid, &threads, of_vcpus, vcpu)
            } else {
                let domain = self.persistent_domain(&record)?;
                configured_pins(&domain, of_vcpus, vcpu, &host)
            };
        };
        let cpus = host_cpu_set(list, &host)?;
        if of_vcpus && vcpu.is_none() {
            return Err(bad_request("which vCPU? (vcpupin DOMAIN VCPU CPULIST)"));
        }
        if targets.live {
            let (pid, threads) = self.guest_threads(&vm, &record).await?;
            let tids = match vcpu {
                Some(n) => vec![*threads.get(n as usize).ok_or_else(|| {
                    bad_request(format!(
                        "vcpu {n} is out of range of live cpu count {}",
                        threads.len()
                    ))
                })?],
                None => {
                    let control = self.guests.running_control(&vm, &record)?;
                    let domain = self.current_domain(&record)?;
                    let iothreads = io_threads(control.as_ref(), &domain, false).await?;
                    emulator_threads(pid, &threads, &iothreads)
                }
            };
            for tid in tids {
                affinity::set_affinity(tid, &cpus)
                    .map_err(|err| internal("cannot set a thread's CPU affinity", err))?;
            }
            let mut live = self.current_domain(&record)?;
            record_pin(&mut live, vcpu, &cpus, &host);
            self.write_live_definition(&record, &live)?;
        }
        if targets.config {
            self.change_persistent(&record, |domain| {
                if let Some(n) = vcpu {
                    if n >= domain.vcpu.max {
                        return Err(bad_request(format!(
                            "vcpu {n} is out of range of persistent cpu count {}",
                            domain.vcpu.max
                        )));
                    }
                }
                record_pin(domain, vcpu, &cpus, &host);
                Ok(())
            })?;
        }
        tracing::info!(domain = %record.name, vcpu = ?vcpu, cpus = %cpulist(&cpus), live = targets.live, config = targets.config, "pinned");
        Ok(Pins { pins: Vec::new() })
    }

    /// Changes the definition the domain starts with next.
    pub(super) fn change_persistent(
        &self,
        record: &DomainRecord,
        change: impl FnOnce(&mut Domain) -> DaemonResult<()>,
    ) -> DaemonResult<()> {
        let mut domain = self.persistent_domain(record)?;
        change(&mut domain)?;
        self.engine
            .check_definition(&domain)
            .map_err(|err| engine_failure(&record.name, err))?;
        let engine = self.engine.kind_of(&domain).to_string();
        self.store_next_start_xml(record, &domain.to_xml(), &engine)
    }

    /// Before a start: every CPU `<cputune>` pins to must exist on this host.
    pub(super) fn check_pins_fit_host(&self, domain: &Domain) -> DaemonResult<()> {
        let Some(tune) = &domain.cputune else {
            return Ok(());
        };
        let host = affinity::online_cpus();
        for pin in &tune.vcpupins {
            check_on_host(
                &pin.cpuset,
                &host,
                &format!("<vcpupin vcpu='{}'>", pin.vcpu),
            )?;
        }
        if let Some(emulator) = &tune.emulatorpin {
            check_on_host(emulator, &host, "<emulatorpin>")?;
        }
        for pin in &tune.iothreadpins {
            check_on_host(
                &pin.cpuset,
                &host,
                &format!("<iothreadpin iothread='{}'>", pin.iothread),
            )?;
        }
        Ok(())
    }

    /// At start, before the guest runs: `<cputune>`'s pins on the engine's threads (vCPUs,
    /// IOThreads from the engine's list, and the emulator: every other thread).
    pub(super) async fn apply_cputune(
        &self,
        domain: &Domain,
        pid: u32,
        control: &dyn Control,
    ) -> DaemonResult<()> {
        let Some(tune) = &domain.cputune else {
            return Ok(());
        };
        if tune.vcpupins.is_empty() && tune.emulatorpin.is_none() && tune.iothreadpins.is_empty() {
            return Ok(());
        }
        let failed = |err: std::io::Error| internal("cannot set a thread's CPU affinity", err);
        let iothreads = io_threads(control, domain, !tune.iothreadpins.is_empty()).await?;
        for pin in &tune.iothreadpins {
            let thread = iothreads
                .iter()
                .find(|t| t.id == pin.iothread)
                .ok_or_else(|| {
                    invalid_state(format!(
                        "the engine of domain '{}' has no IOThread {} to pin",
                        domain.name, pin.iothread
                    ))
                })?;
            affinity::set_affinity(thread.thread, &pin.cpuset.0).map_err(failed)?;
        }
        let threads = control
            .vcpu_threads()
            .await
            .map_err(|err| engine_failure(&domain.name, err))?;
        for pin in &tune.vcpupins {
            if let Some(&tid) = threads.get(pin.vcpu as usize) {
                affinity::set_affinity(tid, &pin.cpuset.0).map_err(failed)?;
            }
        }
        if let Some(emulator) = &tune.emulatorpin {
            for tid in emulator_threads(pid, &threads, &iothreads) {
                affinity::set_affinity(tid, &emulator.0).map_err(failed)?;
            }
        }
        Ok(())
    }
}

/// The engine's IOThreads; an engine without any has none (`needed`: that is an error).
pub(super) async fn io_threads(
    control: &dyn Control,
    domain: &Domain,
    needed: bool,
) -> DaemonResult<Vec<IoThreadState>> {
    match control.iothreads().await {
        Ok(threads) => Ok(threads),
        Err(err) if needed || err.kind != EngineErrorKind::Unsupported => {
            Err(engine_failure(&domain.name, err))
        }
        Err(_) => Ok(Vec::new()),
    }
}

impl Domains {
    /// `vcpucount`: the definition's counts, and the running guest's (its live definition).
    pub async fn vcpu_count(self: &Arc<Self>, id: &str) -> DaemonResult<VcpuCounts> {
        let record = self.guests.resolve(id)?;
        let (_vm, _guard) = self.guests.begin(&record)?;
        let record = self.guests.resolve(id)?;
        self.vcpu_counts(&record)
    }

    fn vcpu_counts(&self, record: &DomainRecord) -> DaemonResult<VcpuCounts> {
        let config = self.persistent_domain(record)?.vcpu;
        let live = match self.store.runtime(&record.uuid).map_err(db)? {
            Some(_) => Some(self.current_domain(record)?.vcpu),
            None => None,
        };
        Ok(VcpuCounts {
            config_maximum: config.max,
            config_current: config.online(),
            live_maximum: live.as_ref().map(|v| v.max),
            live_current: live.as_ref().map(Vcpu::online),
        })
    }

    /// `setvcpus`: vCPUs hot-plugged into or unplugged from the running guest (`live`), and/or
    /// the count (or, with `maximum`, the maximum) the definition starts with (`config`).
    /// Everything is checked before anything changes.
    pub async fn set_vcpus(
        self: &Arc<Self>,
        id: &str,
        request: &SetVcpus,
    ) -> DaemonResult<VcpuCounts> {
        let record = self.guests.resolve(id)?;
        let (vm, _guard) = self.guests.begin(&record)?;
        let record = self.guests.resolve(id)?;
        let count = request.count;
        if request.guest {
            return Err(bad_request(
                "--guest changes the vCPUs through a guest agent, which oxvirt does not have: \
                 use --live (vCPU hotplug) instead",
            ));
        }
        if count == 0 {
            return Err(bad_request("Can't set 0 processors for a VM"));
        }
        let running = self.store.runtime(&record.uuid).map_err(db)?.is_some();
        if request.maximum && (request.live || !request.config) {
            return Err(bad_request(
                "--maximum changes the maximum the definition starts with: only with --config \
                 (the maximum of a running guest can't be modified)",
            ));
        }
        let targets = Scope::of(request.live, request.config, running, &record.name)?;
        let mut persistent = self.persistent_domain(&record)?;
        if targets.config {
            set_config_vcpus(&mut persistent, count, request.maximum)?;
            let xml = persistent.to_xml();
            oxvirt_domain::parse_domain_xml(&xml).map_err(|err| bad_request(err.to_string()))?;
            self.engine
                .check_definition(&persistent)
                .map_err(|err| engine_failure(&record.name, err))?;
        }
        if targets.live {
            self.set_live_vcpus(&vm, &record, count).await?;
        }
        if targets.config {
            let engine = self.engine.kind_of(&persistent).to_string();
            self.store_next_start_xml(&record, &persistent.to_xml(), &engine)?;
        }
        tracing::info!(domain = %record.name, count, maximum = request.maximum, live = targets.live, config = targets.config, "set vCPUs");
        self.vcpu_counts(&record)
    }

    /// Hot-plugs the lowest offline vCPUs, or unplugs the highest hot-plugged ones, until
    /// `count` are online; the live definition then says what the guest has.
    async fn set_live_vcpus(&self, vm: &Vm, record: &DomainRecord, count: u32) -> DaemonResult<()> {
        let mut live = self.current_domain(record)?;
        let max = live.vcpu.max;
        if count > max {
            return Err(bad_request(format!(
                "requested vcpus is greater than max allowable vcpus for the live domain: {count} > {max}"
            )));
        }
        let control = self.guests.running_control(vm, record)?;
        let failed = |err| engine_failure(&record.name, err);
        let slots = control.vcpu_slots().await.map_err(failed)?;
        let online = slots.iter().filter(|slot| slot.online).count() as u32;
        let result = if count > online {
            let mut plugged = Ok(());
            for id in offline_ids(&slots)
                .into_iter()
                .take((count - online) as usize)
            {
                plugged = control.plug_vcpu(id).await.map_err(failed);
                if plugged.is_err() {
                    break;
                }
            }
            plugged
        } else {
            let removable = hotplugged_ids(&slots);
            let wanted = (online - count) as usize;
            if removable.len() < wanted {
                return Err(bad_request(format!(
                    "failed to find appropriate hotpluggable vcpus to reach the desired target \
                     vcpu count (only vCPUs hot-plugged while the guest runs can be unplugged; \
                     {} are)",
                    removable.len()
                )));
            }
            let mut unplugged = Ok(());
            for id in removable.into_iter().take(wanted) {
                unplugged = control.unplug_vcpu(id).await.map_err(failed);
                if unplugged.is_err() {
                    break;
                }
            }
            unplugged
        };
        // What the guest has now, even after a failure midway.
        let slots = control.vcpu_slots().await.map_err(failed)?;
        record_live_vcpus(&mut live.vcpu, &slots);
        self.write_live_definition(record, &live)?;
        result
    }
}

/// `--config` (`maximum`: `--config --maximum`) on the definition, with libvirt's words.
fn set_config_vcpus(domain: &mut Domain, count: u32, maximum: bool) -> DaemonResult<()> {
    let vcpu = &mut domain.vcpu;
    if maximum {
        if let Some(total) = domain
            .cpu
            .as_ref()
            .and_then(|cpu| cpu.topology)
            .and_then(|t| t.total())
        {
            if total != count {
                return Err(bad_request(
                    "CPU topology doesn't match the desired vcpu count",
                ));
            }
        }
        let online = vcpu.online().min(count);
        vcpu.max = count;
        vcpu.current = (online != count).then_some(online);
        // Their order may no longer hold, as libvirt clears it.
        vcpu.slots.clear();
        return Ok(());
    }
    if count > vcpu.max {
        return Err(bad_request(format!(
            "requested vcpus is greater than max allowable vcpus for the persistent domain: {count} > {}",
            vcpu.max
        )));
    }
    vcpu.current = (count != vcpu.max).then_some(count);
    for slot in &mut vcpu.slots {
        slot.enabled = slot.id < count;
        if !slot.enabled {
            slot.order = None;
        }
    }
    Ok(())
}

/// Offline vCPU ids, lowest first (the ones hotplug adds next).
fn offline_ids(slots: &[VcpuSlotState]) -> Vec<u32> {
    (0..slots.len() as u32)
        .filter(|&id| !slots[id as usize].online)
        .collect()
}

/// Hot-plugged vCPU ids, highest first (the ones unplug removes next); vCPU 0 and those the
/// guest booted with never are.
fn hotplugged_ids(slots: &[VcpuSlotState]) -> Vec<u32> {
    (1..slots.len() as u32)
        .rev()
        .filter(|&id| slots[id as usize].hotplugged)
        .collect()
}

/// The live definition's `<vcpu current>` and `<vcpus>` after a hotplug, as libvirt prints
/// them: boot vCPUs not hotpluggable, hot-plugged and offline ones hotpluggable, `order` the
/// order they came online in (the boot vCPUs, the first ones, by id when none was recorded).
fn record_live_vcpus(vcpu: &mut Vcpu, slots: &[VcpuSlotState]) {
    let previous = std::mem::take(&mut vcpu.slots);
    let mut next_order = previous
        .iter()
        .filter_map(|slot| slot.order)
        .max()
        .unwrap_or(0);
    let mut recorded = Vec::with_capacity(slots.len());
    for (id, state) in slots.iter().enumerate() {
        let id = id as u32;
        let before = previous.iter().find(|slot| slot.id == id);
        let order = match before.and_then(|slot| slot.enabled.then_some(slot.order).flatten()) {
            Some(order) if state.online => Some(order),
            _ if state.online => {
                next_order += 1;
                Some(next_order)
            }
            _ => None,
        };
        recorded.push(VcpuSlot {
            id,
            enabled: state.online,
            hotpluggable: Some(!state.online || state.hotplugged),
            order,
        });
    }
    let online = recorded.iter().filter(|slot| slot.enabled).count() as u32;
    vcpu.current = (online != vcpu.max).then_some(online);
    vcpu.slots = recorded;
}

/// Every thread of the engine process that is neither a vCPU's nor an IOThread (libvirt's
/// "emulator"; IOThreads have their own pins).
fn emulator_threads(pid: u32, vcpu_threads: &[u32], iothreads: &[IoThreadState]) -> Vec<u32> {
    affinity::threads(pid)
        .into_iter()
        .filter(|tid| !vcpu_threads.contains(tid) && !iothreads.iter().any(|t| t.thread == *tid))
        .collect()
}

fn configured_pins(
    domain: &Domain,
    of_vcpus: bool,
    vcpu: Option<u32>,
    host: &BTreeSet<u32>,
) -> DaemonResult<Pins> {
    if !of_vcpus {
        return Ok(Pins {
            pins: vec![Pin {
                vcpu: None,
                cpulist: cpulist(&configured_emulator_pin(domain, host)),
            }],
        });
    }
    if let Some(n) = vcpu {
        if n >= domain.vcpu.max {
            return Err(bad_request(format!(
                "vcpu {n} is out of range of persistent cpu count {}",
                domain.vcpu.max
            )));
        }
    }
    Ok(Pins {
        pins: (0..domain.vcpu.max)
            .filter(|n| vcpu.is_none_or(|wanted| wanted == *n))
            .map(|n| Pin {
                vcpu: Some(n),
                cpulist: cpulist(&configured_vcpu_pin(domain, n, host)),
            })
            .collect(),
    })
}

/// The running guest's pins, as the kernel has them.
fn live_pins(pid: u32, threads: &[u32], of_vcpus: bool, vcpu: Option<u32>) -> DaemonResult<Pins> {
    let read = |tid: u32| {
        affinity::affinity(tid)
            .map(|cpus| cpulist(&cpus))
            .map_err(|err| internal("cannot read a thread's CPU affinity", err))
    };
    if !of_vcpus {
        return Ok(Pins {
            pins: vec![Pin {
                vcpu: None,
                cpulist: read(pid)?,
            }],
        });
    }
    let mut pins = Vec::new();
    for (n, tid) in threads.iter().enumerate() {
        if vcpu.is_none_or(|wanted| wanted as usize == n) {
            pins.push(Pin {
                vcpu: Some(n as u32),
                cpulist: read(*tid)?,
            });
        }
    }
    if pins.is_empty() {
        return Err(bad_request(format!(
            "vcpu {} is out of range of live cpu count {}",
            vcpu.unwrap_or(0),
            threads.len()
        )));
    }
    Ok(Pins { pins })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(online: bool, hotplugged: bool) -> VcpuSlotState {
        VcpuSlotState { online, hotplugged }
    }

    fn domain(max: u32) -> Domain {
        Domain::new(oxvirt_domain::DomainType::Qemu, "t", 256 * 1024, max).unwrap()
    }

    #[test]
    fn live_vcpus_are_recorded_as_libvirt_prints_them() {
        let mut live = domain(4).vcpu;
        live.current = Some(1);
        record_live_vcpus(
            &mut live,
            &[
                state(true, false),
                state(true, true),
                state(true, true),
                state(false, false),
            ],
        );
        assert_eq!(live.current, Some(3));
        let orders: Vec<_> = live
            .slots
            .iter()
            .map(|s| (s.enabled, s.hotpluggable, s.order))
            .collect();
        assert_eq!(
            orders,
            [
                (true, Some(false), Some(1)),
                (true, Some(true), Some(2)),
                (true, Some(true), Some(3)),
                (false, Some(true), None)
            ]
        );
        // vCPU 1 out, then 3 in: the order goes on from the highest recorded.
        record_live_vcpus(
            &mut live,
            &[
                state(true, false),
                state(false, false),
                state(true, true),
                state(true, true),
            ],
        );
        let orders: Vec<_> = live.slots.iter().map(|s| s.order).collect();
        assert_eq!(orders, [Some(1), None, Some(3), Some(4)]);
        assert_eq!(live.current, Some(3));
    }

    #[test]
    fn config_counts_follow_libvirt() {
        let mut domain = domain(4);
        let err = set_config_vcpus(&mut domain, 5, false).unwrap_err();
        assert!(
            err.to_string().contains("persistent domain: 5 > 4"),
            "{err}"
        );
        set_config_vcpus(&mut domain, 2, false).unwrap();
        assert_eq!((domain.vcpu.max, domain.vcpu.current), (4, Some(2)));
        set_config_vcpus(&mut domain, 6, true).unwrap();
        assert_eq!((domain.vcpu.max, domain.vcpu.current), (6, Some(2)));
        set_config_vcpus(&mut domain, 1, true).unwrap();
        assert_eq!((domain.vcpu.max, domain.vcpu.current), (1, None));
    }
}
