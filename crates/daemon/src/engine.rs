//! The seam between the daemon and whatever runs guests.
//!
//! The daemon only needs to launch a guest, find out whether its process still lives, and hold a
//! control connection that accepts a few commands and reports lifecycle events. [`Engine`] and
//! [`Control`] are exactly that, so the native VMM can slot in next to QEMU.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use oxvirt_api::{Accel, Engine as EngineKind};
use oxvirt_domain::Domain;
use tokio::sync::mpsc::UnboundedReceiver;
use uuid::Uuid;

/// Lifecycle events of a running guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineEvent {
    /// The machine is shutting down; `guest` is true when the guest itself asked.
    Shutdown { guest: bool },
    /// The machine was reset (it keeps running).
    Reset,
    /// vCPUs stopped.
    Stop,
    /// vCPUs resumed.
    Resume,
    /// The guest reported a kernel panic.
    Panicked,
}

/// What the engine says the guest is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestStatus {
    Running,
    Paused,
    /// Created but not yet started (waiting for a resume).
    NotStarted,
    ShutDown,
    Panicked,
    /// Anything else, in the engine's words.
    Other(String),
}

/// An engine failure; `unsupported` marks "this engine cannot do what the definition asks".
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct EngineError {
    pub kind: EngineErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineErrorKind {
    /// The definition asks for something the engine does not support.
    Unsupported,
    /// The definition is inconsistent with the host (a missing file, an overlong path, ...).
    Invalid,
    /// The engine failed (spawn, early exit, protocol, timeout).
    Failed,
}

/// Where a guest's console can be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsolePaths {
    pub socket: PathBuf,
    pub log: PathBuf,
}

/// Accelerator choice for one start, with what the user should know about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccelPlan {
    pub accel: Accel,
    pub warnings: Vec<String>,
}

pub type Events = UnboundedReceiver<EngineEvent>;

#[async_trait]
pub trait Engine: Send + Sync {
    fn kind(&self) -> EngineKind;

    /// Version of the underlying emulator, if known.
    fn version(&self) -> Option<String>;

    /// The accelerator a start of `domain` would use now.
    fn plan_accel(&self, domain: &Domain) -> AccelPlan;

    /// Starts the guest with its files in `run_dir`; returns the process id once the control
    /// connection can be made.
    async fn launch(
        &self,
        domain: &Domain,
        run_dir: &Path,
        accel: Accel,
    ) -> Result<u32, EngineError>;

    /// Whether `pid` is still the process running the guest `uuid` (guards against pid reuse).
    async fn is_alive(&self, pid: u32, uuid: &Uuid) -> bool;

    /// The pid the guest process recorded in `run_dir`, if any (finds a guest whose start the
    /// daemon did not get to record).
    fn recorded_pid(&self, run_dir: &Path) -> Option<u32>;

    /// Opens the control connection of the guest whose files are in `run_dir`. The event
    /// receiver ends when the connection closes (normally: the guest's process exited).
    async fn connect(&self, run_dir: &Path) -> Result<(Arc<dyn Control>, Events), EngineError>;

    fn console_paths(&self, run_dir: &Path) -> ConsolePaths;
}

#[async_trait]
pub trait Control: Send + Sync {
    async fn status(&self) -> Result<GuestStatus, EngineError>;
    async fn pause(&self) -> Result<(), EngineError>;
    async fn resume(&self) -> Result<(), EngineError>;
    /// Presses the ACPI power button.
    async fn power_button(&self) -> Result<(), EngineError>;
    async fn reset(&self) -> Result<(), EngineError>;
    /// Ends the guest's process at once.
    async fn quit(&self) -> Result<(), EngineError>;
}
