//! The running side of domains, in memory: one slot per defined domain with its operation lock
//! (one user operation at a time; a second one gets `busy`), its live control connection and a
//! change notification. The store holds what survives a restart (runtime rows); this holds what
//! only a running daemon has.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oxvirt_api::DomainState;
use oxvirt_domain::Domain;
use oxvirt_host::lock;
use tokio::sync::{watch, OwnedMutexGuard};
use uuid::Uuid;

use super::error::{db, internal, invalid_state, DaemonError, DaemonResult, ErrorKind};
use super::events::{lifecycle_of, EventBus};
use crate::engine::{Control, GuestStatus};
use crate::store::{self, DomainRecord, Store};

/// In-memory companion of one defined domain.
#[derive(Default)]
pub struct Vm {
    /// Held for the whole of a user operation.
    pub(super) op: Arc<tokio::sync::Mutex<()>>,
    pub(super) live: Mutex<Option<Live>>,
    /// Bumped whenever the domain's state changes, to wake waiters.
    pub(super) changed: watch::Sender<u64>,
}

/// The running side of an active domain.
#[derive(Clone)]
pub struct Live {
    pub pid: u32,
    pub control: Option<Arc<dyn Control>>,
    pub intent: Arc<Mutex<Intent>>,
}

/// What the daemon asked the guest to do, so the supervisor can tell why it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Intent {
    #[default]
    None,
    Destroy,
    Reboot,
    /// The guest's state was saved (`save`, `managedsave`) and its process ends.
    Save,
    /// The guest runs on another oxvirtd now (services/migration.rs); its process here ends.
    Migrated,
}

/// The slots of every domain this daemon has seen, and where their run directories are.
pub struct Guests {
    store: Arc<Store>,
    state_dir: PathBuf,
    vms: Mutex<HashMap<Uuid, Arc<Vm>>>,
    /// Where every domain event goes (services/events.rs).
    events: EventBus,
    /// Held while a state is recorded: a conditional change ([`Guests::set_state_unless`])
    /// looks and writes in one step.
    state_writes: Mutex<()>,
}

impl Guests {
    pub fn new(store: Arc<Store>, state_dir: PathBuf) -> Guests {
        Guests {
            store,
            state_dir,
            vms: Mutex::new(HashMap::new()),
            events: EventBus::default(),
            state_writes: Mutex::new(()),
        }
    }

    /// The daemon's state directory (its `cache/` holds what is asked of QEMU once per version).
    pub fn state_dir(&self) -> &std::path::Path {
        &self.state_dir
    }

    /// The event bus every service publishes domain events on.
    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// Forgets an undefined domain's slot.
    pub fn forget(&self, uuid: &Uuid) {
        lock(&self.vms).remove(uuid);
    }
}

impl Guests {
    pub fn slot(&self, uuid: &Uuid) -> Arc<Vm> {
        lock(&self.vms).entry(*uuid).or_default().clone()
    }

    pub fn run_dir(&self, uuid: &Uuid) -> PathBuf {
        // The uuid, never the name: names are user input.
        self.state_dir.join("run").join(uuid.to_string())
    }

    /// The domain's managed save image (`managedsave`): the uuid, never the name.
    pub fn managed_save_path(&self, uuid: &Uuid) -> PathBuf {
        self.state_dir.join("save").join(format!("{uuid}.save"))
    }

    /// Where the machine states of the domain's snapshots live, for engines that keep them
    /// outside the disk images (the native engine): one save image per snapshot, `NAME.save`.
    pub fn snapshot_state_dir(&self, uuid: &Uuid) -> PathBuf {
        self.state_dir.join("snapshot").join(uuid.to_string())
    }

    /// The machine state of the domain's snapshot `name` (a checked snapshot name: no `/`, no
    /// leading dot, so it is one file name and never one of the daemon's own dot files).
    pub fn snapshot_state_path(&self, uuid: &Uuid, name: &str) -> PathBuf {
        self.snapshot_state_dir(uuid).join(format!("{name}.save"))
    }

    /// Takes the domain's operation lock or says it is busy.
    pub fn begin(&self, record: &DomainRecord) -> DaemonResult<(Arc<Vm>, OwnedMutexGuard<()>)> {
        let vm = self.slot(&record.uuid);
        let guard = vm.op.clone().try_lock_owned().map_err(|_| {
            DaemonError::new(
                ErrorKind::Busy,
                format!(
                    "another operation on domain '{}' is in progress",
                    record.name
                ),
            )
        })?;
        Ok((vm, guard))
    }

    /// Finds a domain by name, UUID or runtime id.
    pub fn resolve(&self, id: &str) -> DaemonResult<DomainRecord> {
        if let Some(record) = self.store.find_domain(id).map_err(db)? {
            return Ok(record);
        }
        if let Ok(runtime_id) = id.parse::<u32>() {
            let active = self.store.list_runtime().map_err(db)?;
            if let Some(row) = active.iter().find(|r| r.id == runtime_id) {
                if let Some(record) = self.store.domain_by_uuid(&row.uuid).map_err(db)? {
                    return Ok(record);
                }
            }
        }
        Err(DaemonError::new(
            ErrorKind::NotFound,
            format!("domain '{id}' not found"),
        ))
    }

    pub fn current_state(&self, record: &DomainRecord) -> DaemonResult<DomainState> {
        Ok(self
            .store
            .runtime(&record.uuid)
            .map_err(db)?
            .map(|r| r.state)
            .unwrap_or(DomainState::ShutOff))
    }

    pub fn live_or_not_running(&self, vm: &Vm, record: &DomainRecord) -> DaemonResult<Live> {
        lock(&vm.live)
            .clone()
            .ok_or_else(|| invalid_state(format!("domain '{}' is not running", record.name)))
    }

    /// The control connection of a running domain (for device hotplug); the caller holds the
    /// domain's operation lock.
    pub fn running_control(
        &self,
        vm: &Vm,
        record: &DomainRecord,
    ) -> DaemonResult<Arc<dyn Control>> {
        let live = self.live_or_not_running(vm, record)?;
        self.control_of(&live, record)
    }

    pub fn control_of(&self, live: &Live, record: &DomainRecord) -> DaemonResult<Arc<dyn Control>> {
        live.control.clone().ok_or_else(|| {
            DaemonError::new(
                ErrorKind::Engine,
                format!(
                    "the control connection to domain '{}' (pid {}) is down; try again shortly",
                    record.name, live.pid
                ),
            )
        })
    }

    /// Waits until the domain has no runtime row; false if `timeout` passed first.
    pub async fn wait_inactive(
        &self,
        record: &DomainRecord,
        changes: &mut watch::Receiver<u64>,
        timeout: Duration,
    ) -> DaemonResult<bool> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.store.runtime(&record.uuid).map_err(db)?.is_none() {
                return Ok(true);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => continue,
                // The slot went away (undefined): nothing is running any more.
                Ok(Err(_)) => return Ok(true),
                Err(_) => return Ok(false),
            }
        }
    }

    /// Records a running domain's new state; a change of state is published as libvirt's
    /// lifecycle event for it ([`lifecycle_of`]), the one place Suspended, Resumed, Shutdown and
    /// Crashed come from.
    pub fn set_state(&self, vm: &Vm, uuid: &Uuid, state: DomainState, reason: &str) {
        let _writing = lock(&self.state_writes);
        self.record_state(vm, uuid, state, reason);
    }

    /// [`Guests::set_state`] unless the domain is `unless` already, looked at and written in one
    /// step: an engine's event (QEMU's RESUME: "unpaused") never writes over the state a
    /// service recorded between the event's look and its write ("restored", "migrated").
    pub fn set_state_unless(
        &self,
        vm: &Vm,
        uuid: &Uuid,
        unless: DomainState,
        state: DomainState,
        reason: &str,
    ) {
        let _writing = lock(&self.state_writes);
        let now = self.store.runtime(uuid).ok().flatten().map(|r| r.state);
        if now != Some(unless) {
            self.record_state(vm, uuid, state, reason);
        }
    }

    fn record_state(&self, vm: &Vm, uuid: &Uuid, state: DomainState, reason: &str) {
        let before = self.store.runtime(uuid).ok().flatten().map(|r| r.state);
        if let Err(err) = self.store.set_runtime_state(uuid, state, reason) {
            tracing::error!(%uuid, "cannot record state {state}: {}", store::named(err));
        }
        vm.changed.send_modify(|n| *n += 1);
        if before == Some(state) {
            return;
        }
        if let Some((event, detail)) = lifecycle_of(state, reason) {
            if let Ok(Some(record)) = self.store.domain_by_uuid(uuid) {
                self.events.lifecycle(&record.name, uuid, event, detail);
            }
        }
    }
}

pub fn state_of_status(status: &GuestStatus, running_reason: &str) -> (DomainState, &'static str) {
    match status {
        GuestStatus::Running | GuestStatus::NotStarted => (
            DomainState::Running,
            if running_reason == "booted" {
                "booted"
            } else {
                "unpaused"
            },
        ),
        GuestStatus::Paused => (DomainState::Paused, "user"),
        GuestStatus::ShutDown => (DomainState::InShutdown, "shutdown"),
        GuestStatus::Panicked => (DomainState::Crashed, "panicked"),
        GuestStatus::Other(_) => (DomainState::Paused, "unknown"),
    }
}

pub fn stored_domain(record: &DomainRecord) -> DaemonResult<Domain> {
    oxvirt_domain::parse_domain_xml(&record.xml).map_err(|err| {
        internal(
            &format!(
                "stored definition of domain '{}' does not parse",
                record.name
            ),
            err,
        )
    })
}
