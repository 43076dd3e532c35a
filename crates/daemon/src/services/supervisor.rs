//! Watches one active domain until its process is gone: follows the engine's events, keeps the
//! runtime state current, records why it stopped, and asks for a restart where the definition's
//! `on_poweroff`/`on_reboot`/`on_crash` say so.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oxvirt_api::{DomainState, Lifecycle};
use oxvirt_domain::LifecycleAction;
use oxvirt_host::lock;
use tokio::sync::mpsc::UnboundedSender;
use uuid::Uuid;

use super::dac::Dac;
use super::events::stopped_detail;
use super::guests::{Guests, Intent, Vm};
use super::hostdevs::HostDevs;
use super::networks::Networks;
use crate::engine::{process, Control, Engine, EngineEvent, Events};
use crate::store::{self, Store};

/// How long we wait for a killed process to be gone.
pub const KILL_WAIT: Duration = Duration::from_secs(10);

/// A request to start a stopped domain again, with the runtime id it keeps.
#[derive(Debug, Clone, Copy)]
pub struct Restart {
    pub uuid: Uuid,
    pub runtime_id: u32,
}

/// Watches one active domain until its process is gone.
pub struct Supervisor {
    pub guests: Arc<Guests>,
    pub engine: Arc<dyn Engine>,
    pub store: Arc<Store>,
    pub networks: Arc<Networks>,
    pub hostdevs: Arc<HostDevs>,
    pub dac: Arc<Dac>,
    pub restarts: UnboundedSender<Restart>,
    pub vm: Arc<Vm>,
    pub uuid: Uuid,
    pub name: String,
    pub run_dir: PathBuf,
    pub pid: u32,
    pub on_crash: LifecycleAction,
    pub on_reboot: LifecycleAction,
    pub on_poweroff: LifecycleAction,
    pub intent: Arc<Mutex<Intent>>,
}

/// How the guest's process ended, as far as the supervisor saw.
#[derive(Debug, Default)]
struct Observed {
    shutdown: bool,
    /// The guest itself powered off (as opposed to a quit from the host).
    guest_poweroff: bool,
    panicked: bool,
    /// The guest's process ended because the guest asked for a reset.
    rebooted: bool,
}

fn is_restart(action: LifecycleAction) -> bool {
    matches!(
        action,
        LifecycleAction::Restart
            | LifecycleAction::RenameRestart
            | LifecycleAction::CoredumpRestart
    )
}

impl Supervisor {
    pub async fn run(self, mut connection: Option<(Arc<dyn Control>, Events)>) {
        let mut observed = Observed::default();
        loop {
            if let Some((control, events)) = connection.take() {
                self.set_control(Some(control.clone()));
                self.follow_events(control, events, &mut observed).await;
                self.set_control(None);
            }
            // The control connection is down: either the process is exiting or gone, or the
            // connection broke. Reap and check; reconnect while it lives.
            if !self.alive().await {
                break;
            }
            match self.engine.connect(&self.run_dir).await {
                Ok(c) => connection = Some(c),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        self.finish(observed).await;
    }

    async fn alive(&self) -> bool {
        process::reap(self.pid);
        self.engine.is_alive(self.pid, &self.uuid).await
    }

    fn set_control(&self, control: Option<Arc<dyn Control>>) {
        if let Some(live) = lock(&self.vm.live).as_mut() {
            live.control = control;
        }
    }

    async fn follow_events(
        &self,
        control: Arc<dyn Control>,
        mut events: Events,
        observed: &mut Observed,
    ) {
        while let Some(event) = events.recv().await {
            tracing::debug!(domain = %self.name, ?event, "engine event");
            match event {
                EngineEvent::Monitor(event) => {
                    self.guests.events().monitor(&self.name, &self.uuid, event)
                }
                // A preserved panic pauses the guest: it stays "crashed", not "paused".
                EngineEvent::Stop if !observed.shutdown && !observed.panicked => self
                    .guests
                    .set_state(&self.vm, &self.uuid, DomainState::Paused, "user"),
                EngineEvent::Stop => {}
                // (A resume the daemon made sets its own reason, e.g. "restored", before or
                // after this: never written over.)
                EngineEvent::Resume => self.guests.set_state_unless(
                    &self.vm,
                    &self.uuid,
                    DomainState::Running,
                    DomainState::Running,
                    "unpaused",
                ),
                EngineEvent::Reset => {}
                EngineEvent::Shutdown { guest } => {
                    observed.shutdown = true;
                    observed.guest_poweroff |= guest;
                    let reason = if guest { "shutdown" } else { "destroyed" };
                    self.guests
                        .set_state(&self.vm, &self.uuid, DomainState::InShutdown, reason);
                    // on_poweroff='preserve' keeps the powered-off machine around; otherwise
                    // make sure the process ends even if the engine keeps it.
                    if !(guest && self.on_poweroff == LifecycleAction::Preserve) {
                        let control = control.clone();
                        tokio::spawn(async move {
                            let _ = control.quit().await;
                        });
                    }
                }
                EngineEvent::Rebooted => {
                    observed.shutdown = true;
                    observed.rebooted = true;
                    self.guests.set_state(
                        &self.vm,
                        &self.uuid,
                        DomainState::InShutdown,
                        "shutdown",
                    );
                }
                EngineEvent::Panicked => {
                    observed.panicked = true;
                    tracing::warn!(domain = %self.name, "guest panicked; on_crash={:?}", self.on_crash);
                    match self.on_crash {
                        LifecycleAction::Preserve => self.guests.set_state(
                            &self.vm,
                            &self.uuid,
                            DomainState::Crashed,
                            "panicked",
                        ),
                        // The engine paused the guest; restart it in place.
                        action if is_restart(action) => {
                            observed.panicked = false;
                            let restarted = match control.reset().await {
                                Ok(()) => control.resume().await,
                                Err(err) => Err(err),
                            };
                            if let Err(err) = restarted {
                                tracing::error!(domain = %self.name, "restart after panic failed: {err}");
                            }
                            self.guests.set_state(
                                &self.vm,
                                &self.uuid,
                                DomainState::Running,
                                "crashed",
                            );
                        }
                        _ => {
                            let _ = control.quit().await;
                        }
                    }
                }
            }
        }
    }

    /// The guest's cgroups go once its last threads have left them (bounded: a group that
    /// stays is logged, and reused by the next start).
    async fn remove_cgroups(&self) {
        let group = oxvirt_host::cgroup::of_guest(&self.uuid.to_string());
        for _ in 0..100 {
            if group.remove() {
                return;
            }
            // The groups are named by the guest's UUID: after a migration to another oxvirtd on
            // this host, the destination's QEMU of the same guest is in them, and stays. Waiting
            // for it cost every such migration 5 s (benches/migration.sh found it).
            let processes = group.processes();
            if !processes.is_empty() && !processes.contains(&self.pid) {
                tracing::info!(domain = %self.name, ?processes, "its cgroups are another process's of the same guest now (a migration's destination on this host); left to it");
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::warn!(domain = %self.name, "its cgroups still have tasks; left in place");
    }

    async fn finish(self, observed: Observed) {
        // The process may linger a moment after closing its sockets; wait (bounded) for it.
        let deadline = tokio::time::Instant::now() + KILL_WAIT;
        while self.alive().await && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let intent = *lock(&self.intent);
        let reason = if intent == Intent::Destroy {
            "destroyed"
        } else if intent == Intent::Save {
            "saved"
        } else if intent == Intent::Migrated {
            "migrated"
        } else if observed.panicked {
            "crashed"
        } else if observed.shutdown {
            "shutdown"
        } else {
            "crashed"
        };
        let runtime_id = match self.store.runtime(&self.uuid) {
            Ok(runtime) => runtime.map(|r| r.id),
            Err(_) => None,
        };
        // The guest's TAPs go with it (before the stop is visible, so a caller that saw the
        // domain stop also sees its TAPs gone).
        self.networks.unplug_interfaces(&self.uuid).await;
        self.hostdevs.release(&self.uuid);
        // Its files get their owners back, before the stop is visible too; a migrated guest's
        // are the destination's guest's now (shared storage), and stay so.
        if intent == Intent::Migrated {
            self.dac.release(&self.uuid);
        } else {
            self.dac.restore(&self.uuid);
        }
        self.engine.after_exit(&self.run_dir);
        self.remove_cgroups().await;
        if let Err(err) = self.store.mark_stopped(&self.uuid, reason) {
            tracing::error!(domain = %self.name, "cannot record stop: {}", store::named(err));
        }
        *lock(&self.vm.live) = None;
        self.vm.changed.send_modify(|n| *n += 1);
        tracing::info!(domain = %self.name, pid = self.pid, reason, "stopped");
        self.guests.events().lifecycle(
            &self.name,
            &self.uuid,
            Lifecycle::Stopped,
            stopped_detail(reason, observed.panicked),
        );

        let restart = match (intent, reason) {
            (Intent::Destroy | Intent::Save | Intent::Migrated, _) => false,
            (Intent::Reboot, "shutdown") => true,
            (_, "shutdown") if observed.rebooted => is_restart(self.on_reboot),
            (_, "shutdown") => observed.guest_poweroff && is_restart(self.on_poweroff),
            (_, "crashed") => is_restart(self.on_crash),
            _ => false,
        };
        if let (true, Some(runtime_id)) = (restart, runtime_id) {
            // The domains service starts it again (keeping its runtime id, as libvirt does).
            let _ = self.restarts.send(Restart {
                uuid: self.uuid,
                runtime_id,
            });
        }
    }
}
