//! What oxvirtd does: the domain lifecycle on top of the store and an engine.
//!
//! Each domain has an in-memory [`Vm`] slot with an operation lock (one user operation at a
//! time; a second one gets `busy`) and, while active, the control connection. The store is
//! the truth for definitions and runtime state; supervision tasks keep it current from the
//! engine's events and the process' life.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use oxvirt_api::{Accel, DomainInfo, DomainState, DomainSummary, VersionInfo, API_VERSION};
use oxvirt_domain::{Domain, LifecycleAction};
use tokio::sync::{watch, OwnedMutexGuard};
use uuid::Uuid;

use crate::engine::process;
use crate::engine::{Control, Engine, EngineEvent, Events, GuestStatus};
use crate::services::error::{
    db, definition_error, engine_failure, internal, invalid_state, DaemonError, DaemonResult,
    ErrorKind,
};
use crate::store::{self, DomainRecord, RuntimeRecord, Store};

/// How long destroy waits for a quit to take effect before killing the process.
const QUIT_GRACE: Duration = Duration::from_secs(5);
/// How long we wait for a killed process to be gone.
const KILL_WAIT: Duration = Duration::from_secs(10);

pub struct Daemon {
    pub(crate) store: Store,
    engine: Arc<dyn Engine>,
    state_dir: PathBuf,
    vms: Mutex<HashMap<Uuid, Arc<Vm>>>,
    /// Virtual networks and guest TAPs (see `networks.rs`).
    pub(crate) networks: crate::networks::Networks,
}

/// In-memory companion of one defined domain.
#[derive(Default)]
pub(crate) struct Vm {
    /// Held for the whole of a user operation.
    op: Arc<tokio::sync::Mutex<()>>,
    live: Mutex<Option<Live>>,
    /// Bumped whenever the domain's state changes, to wake waiters.
    changed: watch::Sender<u64>,
}

/// The running side of an active domain.
#[derive(Clone)]
struct Live {
    pid: u32,
    control: Option<Arc<dyn Control>>,
    intent: Arc<Mutex<Intent>>,
}

/// A guest process just started for a domain.
struct Launched {
    pid: u32,
    accel: Accel,
    run_dir: PathBuf,
    /// Runtime id to keep (restart of a running guest), or `None` for a fresh one.
    keep_id: Option<u32>,
}

/// What the daemon asked the guest to do, so the supervisor can tell why it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Intent {
    #[default]
    None,
    Destroy,
    Reboot,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section here is a plain field update: a panic cannot leave it half done.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Whether the XML text has a `<uuid>` element (parsing fills a random one in otherwise).
fn xml_names_uuid(xml: &str) -> bool {
    oxvirt_xml::parse(xml)
        .map(|doc| {
            doc.root_element()
                .children()
                .any(|c| c.has_tag_name("uuid"))
        })
        .unwrap_or(false)
}

impl Daemon {
    pub fn new(
        store: Store,
        engine: Arc<dyn Engine>,
        state_dir: PathBuf,
        networks: crate::networks::Networks,
    ) -> Daemon {
        Daemon {
            store,
            engine,
            state_dir,
            vms: Mutex::new(HashMap::new()),
            networks,
        }
    }

    fn vm(&self, uuid: &Uuid) -> Arc<Vm> {
        lock(&self.vms).entry(*uuid).or_default().clone()
    }

    fn run_dir(&self, uuid: &Uuid) -> PathBuf {
        // The uuid, never the name: names are user input.
        self.state_dir.join("run").join(uuid.to_string())
    }

    /// Takes the domain's operation lock or says it is busy.
    pub(crate) fn begin(
        &self,
        record: &DomainRecord,
    ) -> DaemonResult<(Arc<Vm>, OwnedMutexGuard<()>)> {
        let vm = self.vm(&record.uuid);
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
    pub(crate) fn resolve(&self, id: &str) -> DaemonResult<DomainRecord> {
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

    fn summary(&self, record: &DomainRecord) -> DaemonResult<DomainSummary> {
        let runtime = self.store.runtime(&record.uuid).map_err(db)?;
        Ok(summary_of(record, runtime.as_ref()))
    }

    // ---- read-only endpoints ----

    pub fn version(&self) -> VersionInfo {
        VersionInfo {
            daemon: env!("CARGO_PKG_VERSION").to_string(),
            api: API_VERSION,
            qemu: self.engine.version(),
        }
    }

    pub fn list(&self) -> DaemonResult<Vec<DomainSummary>> {
        let records = self.store.list_domains().map_err(db)?;
        let runtime: HashMap<Uuid, RuntimeRecord> = self
            .store
            .list_runtime()
            .map_err(db)?
            .into_iter()
            .map(|r| (r.uuid, r))
            .collect();
        Ok(records
            .iter()
            .map(|record| summary_of(record, runtime.get(&record.uuid)))
            .collect())
    }

    pub fn info(&self, id: &str) -> DaemonResult<DomainInfo> {
        let record = self.resolve(id)?;
        let runtime = self.store.runtime(&record.uuid).map_err(db)?;
        let domain = stored_domain(&record)?;
        let plan = self.engine.plan_accel(&domain);
        let (state, state_reason) = match &runtime {
            Some(r) => (r.state, r.reason.clone()),
            None => (DomainState::ShutOff, record.off_reason.clone()),
        };
        let accel = match runtime.as_ref().map(|r| r.accel.as_str()) {
            Some("kvm") => Accel::Kvm,
            Some(_) => Accel::Tcg,
            None => plan.accel,
        };
        let console = self.engine.console_paths(&self.run_dir(&record.uuid));
        let console_socket = runtime
            .as_ref()
            .filter(|_| console.socket.exists())
            .map(|_| console.socket.display().to_string());
        let console_log = console
            .log
            .exists()
            .then(|| console.log.display().to_string());
        Ok(DomainInfo {
            id: runtime.as_ref().map(|r| r.id),
            name: record.name.clone(),
            uuid: record.uuid.to_string(),
            os_type: "hvm".to_string(),
            state,
            state_reason,
            vcpus: domain.vcpu.online(),
            max_memory_kib: domain.memory_kib,
            used_memory_kib: domain.current_memory_kib,
            cpu_time_ns: runtime
                .as_ref()
                .and_then(|r| process::cpu_time_ns(r.pid))
                .unwrap_or(0),
            persistent: true,
            autostart: record.autostart,
            engine: self.engine.kind_of(&domain),
            accel,
            warnings: plan.warnings,
            console_socket,
            console_log,
        })
    }

    pub fn xml(&self, id: &str) -> DaemonResult<String> {
        Ok(self.resolve(id)?.xml)
    }

    // ---- definitions ----

    /// virsh define: create, or update an inactive domain with the same name and uuid.
    pub fn define(&self, xml: &str) -> DaemonResult<DomainSummary> {
        let mut domain = oxvirt_domain::parse_domain_xml(xml).map_err(definition_error)?;
        let names_uuid = xml_names_uuid(xml);
        self.ensure_unique_macs(&mut domain, xml)?;
        self.engine
            .check_definition(&domain)
            .map_err(|e| engine_failure(&domain.name, e))?;
        // A definition without <uuid> updates the domain of that name, as in libvirt.
        let existing = match self.store.find_domain(&domain.name).map_err(db)? {
            Some(record) if record.name == domain.name => Some(record),
            _ => self.store.domain_by_uuid(&domain.uuid).map_err(db)?,
        };
        if let Some(record) = &existing {
            if !names_uuid && record.name == domain.name {
                domain.uuid = record.uuid;
            }
        }
        let _guard = match &existing {
            Some(record) => Some(self.begin(record)?),
            None => None,
        };
        let new_xml = domain.to_xml();
        let engine = self.engine.kind_of(&domain).to_string();
        let record = self
            .store
            .transaction_or(db, |tx| -> DaemonResult<DomainRecord> {
                let by_name = store::domain_by_name(tx, &domain.name).map_err(db)?;
                let by_uuid = store::domain_by_uuid(tx, &domain.uuid).map_err(db)?;
                match (by_name, by_uuid) {
                    (None, None) => {
                        let record = DomainRecord {
                            uuid: domain.uuid,
                            name: domain.name.clone(),
                            xml: new_xml.clone(),
                            autostart: false,
                            engine: engine.clone(),
                            off_reason: "unknown".to_string(),
                        };
                        store::insert_domain(tx, &record).map_err(db)?;
                        crate::networks::refuse_mac_clash(tx, &record.uuid, &record.name)?;
                        Ok(record)
                    }
                    (Some(a), Some(b)) if a.uuid == b.uuid => {
                        if store::runtime(tx, &a.uuid).map_err(db)?.is_some() {
                            return Err(invalid_state(format!(
                                "domain '{}' is running; shut it off before redefining it",
                                a.name
                            )));
                        }
                        store::update_domain_xml(tx, &a.uuid, &new_xml, &engine).map_err(db)?;
                        crate::networks::refuse_mac_clash(tx, &a.uuid, &a.name)?;
                        Ok(DomainRecord {
                            xml: new_xml.clone(),
                            engine: engine.clone(),
                            ..a
                        })
                    }
                    (Some(a), _) => Err(DaemonError::new(
                        ErrorKind::AlreadyExists,
                        format!("domain '{}' already exists with uuid {}", a.name, a.uuid),
                    )),
                    (None, Some(b)) => Err(DaemonError::new(
                        ErrorKind::AlreadyExists,
                        format!(
                            "domain with uuid {} already exists with name '{}'",
                            b.uuid, b.name
                        ),
                    )),
                }
            })?;
        tracing::info!(domain = %record.name, uuid = %record.uuid, "defined");
        self.summary(&record)
    }

    /// virsh edit's write: replace the definition of an inactive domain (same name and uuid).
    pub fn replace_xml(&self, id: &str, xml: &str) -> DaemonResult<DomainSummary> {
        let record = self.resolve(id)?;
        let mut domain = oxvirt_domain::parse_domain_xml(xml).map_err(definition_error)?;
        if domain.name != record.name {
            return Err(DaemonError::new(
                ErrorKind::InvalidXml,
                format!(
                    "the new definition of domain '{}' names it '{}'; renaming is not supported",
                    record.name, domain.name
                ),
            ));
        }
        if !xml_names_uuid(xml) {
            domain.uuid = record.uuid;
        }
        if domain.uuid != record.uuid {
            return Err(DaemonError::new(
                ErrorKind::InvalidXml,
                format!(
                    "the new definition of domain '{}' has uuid {}, not {}; the uuid cannot change",
                    record.name, domain.uuid, record.uuid
                ),
            ));
        }
        self.ensure_unique_macs(&mut domain, xml)?;
        self.engine
            .check_definition(&domain)
            .map_err(|e| engine_failure(&domain.name, e))?;
        let engine = self.engine.kind_of(&domain).to_string();
        let (_vm, _guard) = self.begin(&record)?;
        let new_xml = domain.to_xml();
        self.store.transaction_or(db, |tx| -> DaemonResult<()> {
            if store::runtime(tx, &record.uuid).map_err(db)?.is_some() {
                return Err(invalid_state(format!(
                    "domain '{}' is running; shut it off before changing its definition",
                    record.name
                )));
            }
            store::update_domain_xml(tx, &record.uuid, &new_xml, &engine).map_err(db)?;
            crate::networks::refuse_mac_clash(tx, &record.uuid, &record.name)
        })?;
        tracing::info!(domain = %record.name, "definition replaced");
        self.summary(&DomainRecord {
            xml: new_xml,
            ..record
        })
    }

    pub fn undefine(&self, id: &str) -> DaemonResult<DomainSummary> {
        let record = self.resolve(id)?;
        let (_vm, _guard) = self.begin(&record)?;
        self.store.transaction_or(db, |tx| -> DaemonResult<()> {
            if store::runtime(tx, &record.uuid).map_err(db)?.is_some() {
                return Err(invalid_state(format!(
                    "domain '{}' is running; destroy it before undefining it",
                    record.name
                )));
            }
            store::delete_domain(tx, &record.uuid).map_err(db)
        })?;
        let run_dir = self.run_dir(&record.uuid);
        if let Err(err) = std::fs::remove_dir_all(&run_dir) {
            if err.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("cannot remove {}: {err}", run_dir.display());
            }
        }
        lock(&self.vms).remove(&record.uuid);
        tracing::info!(domain = %record.name, "undefined");
        Ok(summary_of(&record, None))
    }

    pub fn set_autostart(&self, id: &str, enabled: bool) -> DaemonResult<DomainSummary> {
        let record = self.resolve(id)?;
        self.store
            .set_autostart(&record.uuid, enabled)
            .map_err(db)?;
        self.summary(&DomainRecord {
            autostart: enabled,
            ..record
        })
    }

    // ---- lifecycle ----

    pub async fn start(self: &Arc<Self>, id: &str) -> DaemonResult<DomainSummary> {
        let record = self.resolve(id)?;
        let (vm, _guard) = self.begin(&record)?;
        self.start_locked(&vm, &record, None).await
    }

    /// Starts a domain; the caller holds its operation lock. `keep_id` is the runtime id of a
    /// guest being restarted (reboot, on_crash=restart): it keeps its id, as in libvirt.
    async fn start_locked(
        self: &Arc<Self>,
        vm: &Arc<Vm>,
        record: &DomainRecord,
        keep_id: Option<u32>,
    ) -> DaemonResult<DomainSummary> {
        // Re-read under the lock: the definition may have changed since it was resolved.
        let record = self
            .store
            .domain_by_uuid(&record.uuid)
            .map_err(db)?
            .ok_or_else(|| {
                DaemonError::new(
                    ErrorKind::NotFound,
                    format!("domain '{}' not found", record.name),
                )
            })?;
        if let Some(runtime) = self.store.runtime(&record.uuid).map_err(db)? {
            return Err(invalid_state(format!(
                "domain '{}' is already {}",
                record.name, runtime.state
            )));
        }
        let mut domain = stored_domain(&record)?;
        // Engines open files only: `<disk type='volume'>` becomes its volume's file in this
        // launched copy (the stored definition keeps the reference).
        self.resolve_volume_disks(&mut domain)?;
        // The definition may predate the engine's current limits; the host may lack what the
        // engine needs (the native engine: hardware KVM).
        self.engine
            .check_definition(&domain)
            .and_then(|()| self.engine.check_host(&domain))
            .map_err(|e| engine_failure(&record.name, e))?;
        check_files_exist(&domain)?;
        // Engines open exactly the backing images the host read from trusted metadata.
        self.resolve_backing_chains(&mut domain)?;
        let plan = self.engine.plan_accel(&domain);
        for warning in &plan.warnings {
            tracing::warn!(domain = %record.name, "{warning}");
        }
        let run_dir = self.run_dir(&record.uuid);
        create_private_dir(&run_dir)?;

        // TAPs for the guest's network interfaces; `domain` becomes the launched (live) copy.
        self.plug_interfaces(&record, &mut domain).await?;
        let pid = match self.engine.launch(&domain, &run_dir, plan.accel).await {
            Ok(pid) => pid,
            Err(err) => {
                self.unplug_interfaces(&record.uuid).await;
                return Err(engine_failure(&record.name, err));
            }
        };
        let launched = Launched {
            pid,
            accel: plan.accel,
            run_dir,
            keep_id,
        };
        match self.attach_new(vm, &record, &domain, &launched).await {
            Ok(summary) => Ok(summary),
            Err(err) => {
                // Never leave a guest running that the store does not know about.
                process::kill_and_reap(pid, &record.uuid, self.engine.as_ref()).await;
                self.unplug_interfaces(&record.uuid).await;
                Err(err)
            }
        }
    }

    /// Connects to a just-launched guest, records it as active and starts its supervisor.
    async fn attach_new(
        self: &Arc<Self>,
        vm: &Arc<Vm>,
        record: &DomainRecord,
        domain: &Domain,
        launched: &Launched,
    ) -> DaemonResult<DomainSummary> {
        let Launched {
            pid,
            accel,
            ref run_dir,
            keep_id,
        } = *launched;
        let (control, events) = self
            .engine
            .connect(run_dir)
            .await
            .map_err(|e| engine_failure(&record.name, e))?;
        let mut status = control
            .status()
            .await
            .map_err(|e| engine_failure(&record.name, e))?;
        if status == GuestStatus::NotStarted {
            control
                .resume()
                .await
                .map_err(|e| engine_failure(&record.name, e))?;
            status = GuestStatus::Running;
        }
        let (state, reason) = state_of_status(&status, "booted");
        let runtime = self
            .store
            .transaction(|tx| -> rusqlite::Result<RuntimeRecord> {
                let runtime = RuntimeRecord {
                    uuid: record.uuid,
                    pid,
                    run_dir: run_dir.to_path_buf(),
                    state,
                    reason: reason.to_string(),
                    id: match keep_id {
                        Some(id) => id,
                        None => store::next_runtime_id(tx)?,
                    },
                    accel: accel.to_string(),
                    started_at: now_unix(),
                };
                store::insert_runtime(tx, &runtime)?;
                Ok(runtime)
            });
        let runtime = runtime.map_err(db)?;
        tracing::info!(domain = %record.name, pid, id = runtime.id, "started");
        self.supervise(vm, record, domain, pid, Some((control, events)));
        Ok(summary_of(record, Some(&runtime)))
    }

    pub async fn destroy(self: &Arc<Self>, id: &str) -> DaemonResult<DomainSummary> {
        let record = self.resolve(id)?;
        let (vm, _guard) = self.begin(&record)?;
        let live = self.live_or_not_running(&vm, &record)?;
        *lock(&live.intent) = Intent::Destroy;
        let mut changes = vm.changed.subscribe();
        if let Some(control) = &live.control {
            if let Err(err) = control.quit().await {
                tracing::warn!(domain = %record.name, "quit failed, killing: {err}");
            }
        }
        if !self
            .wait_inactive(&record, &mut changes, QUIT_GRACE)
            .await?
        {
            process::kill(live.pid, &record.uuid, self.engine.as_ref()).await;
            if !self.wait_inactive(&record, &mut changes, KILL_WAIT).await? {
                return Err(DaemonError::new(
                    ErrorKind::Engine,
                    format!(
                        "domain '{}' (pid {}) did not stop even after SIGKILL",
                        record.name, live.pid
                    ),
                ));
            }
        }
        self.summary(&record)
    }

    pub async fn shutdown(
        self: &Arc<Self>,
        id: &str,
        timeout_secs: Option<u64>,
    ) -> DaemonResult<DomainSummary> {
        // Checked before the guest is asked anything: a wait that long would overflow the
        // clock's deadline arithmetic.
        let timeout = match timeout_secs {
            Some(seconds) if seconds > oxvirt_api::MAX_SHUTDOWN_TIMEOUT_SECS => {
                return Err(DaemonError::new(
                    ErrorKind::BadRequest,
                    format!(
                        "shutdown timeout {seconds} s is too long (at most {} s)",
                        oxvirt_api::MAX_SHUTDOWN_TIMEOUT_SECS
                    ),
                ))
            }
            Some(seconds) => Some(Duration::from_secs(seconds)),
            None => None,
        };
        let record = self.resolve(id)?;
        let mut changes;
        {
            let (vm, _guard) = self.begin(&record)?;
            let live = self.live_or_not_running(&vm, &record)?;
            // A shutdown overrides a reboot requested earlier that the guest has not acted on.
            *lock(&live.intent) = Intent::None;
            changes = vm.changed.subscribe();
            let control = self.control_of(&live, &record)?;
            control
                .power_button()
                .await
                .map_err(|e| engine_failure(&record.name, e))?;
            tracing::info!(domain = %record.name, "shutdown requested");
        }
        // Wait without the operation lock, so a destroy can still come through.
        if let Some(timeout) = timeout {
            if !self.wait_inactive(&record, &mut changes, timeout).await? {
                return Err(DaemonError::new(ErrorKind::Timeout,
                    format!(
                        "domain '{}' did not stop within {} s after the shutdown request; it is still running",
                        record.name,
                        timeout.as_secs()
                    ),
                ));
            }
        }
        self.summary(&record)
    }

    /// Reboot: press the power button and start the guest again once it powered off.
    pub async fn reboot(self: &Arc<Self>, id: &str) -> DaemonResult<DomainSummary> {
        let record = self.resolve(id)?;
        let (vm, _guard) = self.begin(&record)?;
        let live = self.live_or_not_running(&vm, &record)?;
        let control = self.control_of(&live, &record)?;
        *lock(&live.intent) = Intent::Reboot;
        if let Err(err) = control.power_button().await {
            *lock(&live.intent) = Intent::None;
            return Err(engine_failure(&record.name, err));
        }
        tracing::info!(domain = %record.name, "reboot requested");
        self.summary(&record)
    }

    pub async fn reset(self: &Arc<Self>, id: &str) -> DaemonResult<DomainSummary> {
        let record = self.resolve(id)?;
        let (vm, _guard) = self.begin(&record)?;
        let live = self.live_or_not_running(&vm, &record)?;
        let control = self.control_of(&live, &record)?;
        control
            .reset()
            .await
            .map_err(|e| engine_failure(&record.name, e))?;
        self.summary(&record)
    }

    pub async fn suspend(self: &Arc<Self>, id: &str) -> DaemonResult<DomainSummary> {
        let record = self.resolve(id)?;
        let (vm, _guard) = self.begin(&record)?;
        let live = self.live_or_not_running(&vm, &record)?;
        let state = self.current_state(&record)?;
        if state != DomainState::Running {
            return Err(invalid_state(format!(
                "domain '{}' is {state}, not running",
                record.name
            )));
        }
        let control = self.control_of(&live, &record)?;
        control
            .pause()
            .await
            .map_err(|e| engine_failure(&record.name, e))?;
        self.set_state(&vm, &record.uuid, DomainState::Paused, "user");
        self.summary(&record)
    }

    pub async fn resume(self: &Arc<Self>, id: &str) -> DaemonResult<DomainSummary> {
        let record = self.resolve(id)?;
        let (vm, _guard) = self.begin(&record)?;
        let live = self.live_or_not_running(&vm, &record)?;
        let state = self.current_state(&record)?;
        if state != DomainState::Paused {
            return Err(invalid_state(format!(
                "domain '{}' is {state}, not paused",
                record.name
            )));
        }
        let control = self.control_of(&live, &record)?;
        control
            .resume()
            .await
            .map_err(|e| engine_failure(&record.name, e))?;
        self.set_state(&vm, &record.uuid, DomainState::Running, "unpaused");
        self.summary(&record)
    }

    fn current_state(&self, record: &DomainRecord) -> DaemonResult<DomainState> {
        Ok(self
            .store
            .runtime(&record.uuid)
            .map_err(db)?
            .map(|r| r.state)
            .unwrap_or(DomainState::ShutOff))
    }

    fn live_or_not_running(&self, vm: &Vm, record: &DomainRecord) -> DaemonResult<Live> {
        lock(&vm.live)
            .clone()
            .ok_or_else(|| invalid_state(format!("domain '{}' is not running", record.name)))
    }

    /// The control connection of a running domain (for device hotplug); the caller holds the
    /// domain's operation lock.
    pub(crate) fn running_control(
        &self,
        vm: &Vm,
        record: &DomainRecord,
    ) -> DaemonResult<Arc<dyn Control>> {
        let live = self.live_or_not_running(vm, record)?;
        self.control_of(&live, record)
    }

    fn control_of(&self, live: &Live, record: &DomainRecord) -> DaemonResult<Arc<dyn Control>> {
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
    async fn wait_inactive(
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

    fn set_state(&self, vm: &Vm, uuid: &Uuid, state: DomainState, reason: &str) {
        if let Err(err) = self.store.set_runtime_state(uuid, state, reason) {
            tracing::error!(%uuid, "cannot record state {state}: {}", store::named(err));
        }
        vm.changed.send_modify(|n| *n += 1);
    }

    // ---- supervision ----

    /// Runs the supervisor of an active domain in the background.
    fn supervise(
        self: &Arc<Self>,
        vm: &Arc<Vm>,
        record: &DomainRecord,
        domain: &Domain,
        pid: u32,
        connection: Option<(Arc<dyn Control>, Events)>,
    ) {
        let intent = Arc::new(Mutex::new(Intent::None));
        *lock(&vm.live) = Some(Live {
            pid,
            control: connection.as_ref().map(|(c, _)| c.clone()),
            intent: intent.clone(),
        });
        let supervisor = Supervisor {
            daemon: self.clone(),
            vm: vm.clone(),
            uuid: record.uuid,
            name: record.name.clone(),
            run_dir: self.run_dir(&record.uuid),
            pid,
            on_crash: domain.on_crash,
            on_reboot: domain.on_reboot,
            on_poweroff: domain.on_poweroff,
            intent,
        };
        tokio::spawn(supervisor.run(connection));
    }

    /// After a daemon restart: reattach to guests that still run, forget the ones that do not.
    pub async fn recover(self: &Arc<Self>) -> anyhow::Result<()> {
        self.adopt_orphans().await?;
        for runtime in self.store.list_runtime().map_err(store::named)? {
            let Some(record) = self
                .store
                .domain_by_uuid(&runtime.uuid)
                .map_err(store::named)?
            else {
                continue;
            };
            if !self.engine.is_alive(runtime.pid, &runtime.uuid).await {
                tracing::info!(domain = %record.name, pid = runtime.pid, "found stopped while oxvirtd was down");
                self.store
                    .mark_stopped(&runtime.uuid, "unknown")
                    .map_err(store::named)?;
                continue;
            }
            let domain = match stored_domain(&record) {
                Ok(domain) => domain,
                Err(err) => {
                    tracing::error!(domain = %record.name, "stored definition unreadable: {err}");
                    continue;
                }
            };
            let vm = self.vm(&record.uuid);
            let connection = match self.engine.connect(&runtime.run_dir).await {
                Ok((control, events)) => {
                    match control.status().await {
                        Ok(status) => {
                            let (state, reason) = state_of_status(&status, &runtime.reason);
                            let reason = if state == runtime.state {
                                runtime.reason.clone()
                            } else {
                                reason.to_string()
                            };
                            self.set_state(&vm, &record.uuid, state, &reason);
                        }
                        Err(err) => tracing::warn!(domain = %record.name, "query status: {err}"),
                    }
                    Some((control, events))
                }
                Err(err) => {
                    tracing::warn!(domain = %record.name, "cannot reconnect yet: {err}");
                    None
                }
            };
            tracing::info!(domain = %record.name, pid = runtime.pid, "reattached");
            self.supervise(&vm, &record, &domain, runtime.pid, connection);
        }
        Ok(())
    }

    /// A guest launched just before the daemon died, before its start was recorded, still runs
    /// without a runtime row: record it, so the loop in `recover` reattaches it.
    async fn adopt_orphans(&self) -> anyhow::Result<()> {
        let active: Vec<Uuid> = self
            .store
            .list_runtime()
            .map_err(store::named)?
            .iter()
            .map(|r| r.uuid)
            .collect();
        for record in self.store.list_domains().map_err(store::named)? {
            if active.contains(&record.uuid) {
                continue;
            }
            let run_dir = self.run_dir(&record.uuid);
            let Some(pid) = self.engine.recorded_pid(&run_dir) else {
                continue;
            };
            if !self.engine.is_alive(pid, &record.uuid).await {
                continue;
            }
            let accel = match stored_domain(&record) {
                Ok(domain) => self.engine.plan_accel(&domain).accel,
                Err(_) => Accel::Tcg,
            };
            tracing::warn!(domain = %record.name, pid, "adopting a guest whose start was not recorded");
            self.store
                .transaction(|tx| {
                    let runtime = RuntimeRecord {
                        uuid: record.uuid,
                        pid,
                        run_dir: run_dir.clone(),
                        state: DomainState::Running,
                        reason: "booted".to_string(),
                        id: store::next_runtime_id(tx)?,
                        accel: accel.to_string(),
                        started_at: now_unix(),
                    };
                    store::insert_runtime(tx, &runtime)
                })
                .map_err(store::named)?;
        }
        Ok(())
    }

    /// Starts every autostart domain that is not running.
    pub async fn autostart(self: &Arc<Self>) {
        let records = match self.store.list_domains() {
            Ok(records) => records,
            Err(err) => {
                tracing::error!("autostart: cannot list domains: {}", store::named(err));
                return;
            }
        };
        for record in records.into_iter().filter(|r| r.autostart) {
            let vm = self.vm(&record.uuid);
            let _guard = vm.op.clone().lock_owned().await;
            match self.store.runtime(&record.uuid) {
                Ok(None) => match self.start_locked(&vm, &record, None).await {
                    Ok(_) => tracing::info!(domain = %record.name, "autostarted"),
                    Err(err) => tracing::error!(domain = %record.name, "autostart failed: {err}"),
                },
                Ok(Some(_)) => {}
                Err(err) => {
                    tracing::error!(domain = %record.name, "autostart: {}", store::named(err))
                }
            }
        }
    }
}

/// Watches one active domain until its process is gone.
struct Supervisor {
    daemon: Arc<Daemon>,
    vm: Arc<Vm>,
    uuid: Uuid,
    name: String,
    run_dir: PathBuf,
    pid: u32,
    on_crash: LifecycleAction,
    on_reboot: LifecycleAction,
    on_poweroff: LifecycleAction,
    intent: Arc<Mutex<Intent>>,
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
    async fn run(self, mut connection: Option<(Arc<dyn Control>, Events)>) {
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
            match self.daemon.engine.connect(&self.run_dir).await {
                Ok(c) => connection = Some(c),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        self.finish(observed).await;
    }

    async fn alive(&self) -> bool {
        process::reap(self.pid);
        self.daemon.engine.is_alive(self.pid, &self.uuid).await
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
                // A preserved panic pauses the guest: it stays "crashed", not "paused".
                EngineEvent::Stop if !observed.shutdown && !observed.panicked => self
                    .daemon
                    .set_state(&self.vm, &self.uuid, DomainState::Paused, "user"),
                EngineEvent::Stop => {}
                EngineEvent::Resume => {
                    self.daemon
                        .set_state(&self.vm, &self.uuid, DomainState::Running, "unpaused")
                }
                EngineEvent::Reset => {}
                EngineEvent::Shutdown { guest } => {
                    observed.shutdown = true;
                    observed.guest_poweroff |= guest;
                    let reason = if guest { "shutdown" } else { "destroyed" };
                    self.daemon
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
                    self.daemon.set_state(
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
                        LifecycleAction::Preserve => self.daemon.set_state(
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
                            self.daemon.set_state(
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

    async fn finish(self, observed: Observed) {
        // The process may linger a moment after closing its sockets; wait (bounded) for it.
        let deadline = tokio::time::Instant::now() + KILL_WAIT;
        while self.alive().await && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let intent = *lock(&self.intent);
        let reason = if intent == Intent::Destroy {
            "destroyed"
        } else if observed.panicked {
            "crashed"
        } else if observed.shutdown {
            "shutdown"
        } else {
            "crashed"
        };
        let runtime_id = match self.daemon.store.runtime(&self.uuid) {
            Ok(runtime) => runtime.map(|r| r.id),
            Err(_) => None,
        };
        // The guest's TAPs go with it (before the stop is visible, so a caller that saw the
        // domain stop also sees its TAPs gone).
        self.daemon.unplug_interfaces(&self.uuid).await;
        if let Err(err) = self.daemon.store.mark_stopped(&self.uuid, reason) {
            tracing::error!(domain = %self.name, "cannot record stop: {}", store::named(err));
        }
        *lock(&self.vm.live) = None;
        self.vm.changed.send_modify(|n| *n += 1);
        tracing::info!(domain = %self.name, pid = self.pid, reason, "stopped");

        let restart = match (intent, reason) {
            (Intent::Destroy, _) => false,
            (Intent::Reboot, "shutdown") => true,
            (_, "shutdown") if observed.rebooted => is_restart(self.on_reboot),
            (_, "shutdown") => observed.guest_poweroff && is_restart(self.on_poweroff),
            (_, "crashed") => is_restart(self.on_crash),
            _ => false,
        };
        if let (true, Some(runtime_id)) = (restart, runtime_id) {
            let daemon = self.daemon.clone();
            let vm = self.vm.clone();
            let uuid = self.uuid;
            tokio::spawn(async move {
                let _guard = vm.op.clone().lock_owned().await;
                let record = match daemon.store.domain_by_uuid(&uuid) {
                    Ok(Some(record)) => record,
                    _ => return,
                };
                match daemon.start_locked(&vm, &record, Some(runtime_id)).await {
                    Ok(_) => tracing::info!(domain = %record.name, "started again"),
                    Err(err) => tracing::error!(domain = %record.name, "restart failed: {err}"),
                }
            });
        }
    }
}

fn summary_of(record: &DomainRecord, runtime: Option<&RuntimeRecord>) -> DomainSummary {
    DomainSummary {
        id: runtime.map(|r| r.id),
        name: record.name.clone(),
        uuid: record.uuid.to_string(),
        state: runtime.map(|r| r.state).unwrap_or(DomainState::ShutOff),
        autostart: record.autostart,
    }
}

fn state_of_status(status: &GuestStatus, running_reason: &str) -> (DomainState, &'static str) {
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

pub(crate) fn stored_domain(record: &DomainRecord) -> DaemonResult<Domain> {
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

/// A start must not fail deep inside the engine because a file is missing: name it.
fn check_files_exist(domain: &Domain) -> DaemonResult<()> {
    let mut files: Vec<(&str, &str)> = Vec::new();
    if let Some(kernel) = &domain.os.kernel {
        files.push(("kernel", kernel));
    }
    if let Some(initrd) = &domain.os.initrd {
        files.push(("initrd", initrd));
    }
    for disk in &domain.devices.disks {
        if let Some(source) = &disk.source {
            files.push(("disk source", source));
        }
    }
    for (what, path) in files {
        // stat, not open: a FIFO or device named here must not make the daemon (or the
        // engine, which would open it) wait.
        let problem = match std::fs::metadata(path) {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(DaemonError::new(
                    ErrorKind::NotFound,
                    format!(
                        "cannot start domain '{}': {what} '{path}' does not exist",
                        domain.name
                    ),
                ))
            }
            Err(err) => Some(err.to_string()),
            Ok(meta) => {
                use std::os::unix::fs::FileTypeExt;
                let kind = meta.file_type();
                let disk = what == "disk source";
                if kind.is_file() || (disk && kind.is_block_device()) {
                    None
                } else if disk {
                    Some("it is neither a regular file nor a block device".to_string())
                } else {
                    Some("it is not a regular file".to_string())
                }
            }
        };
        if let Some(problem) = problem {
            return Err(DaemonError::new(
                ErrorKind::BadRequest,
                format!(
                    "cannot start domain '{}': {what} '{path}': {problem}",
                    domain.name
                ),
            ));
        }
    }
    Ok(())
}

fn create_private_dir(dir: &Path) -> DaemonResult<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| internal(&format!("cannot create {}", dir.display()), e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| internal(&format!("cannot restrict {}", dir.display()), e))
}
