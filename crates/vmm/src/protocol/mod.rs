//! What `oxvirt-vmm` and whoever runs it (oxvirtd's native engine, a user's script) exchange, as
//! typed data. This module is the one owner of each of the three:
//!
//! - [`VmConfig`] (`config`): the whole configuration of one VM. `oxvirt-vmm --config FILE`
//!   reads it as JSON, the command-line flags build the same struct, and the VM builder
//!   consumes nothing else. [`VmConfig::validate`] names the offending field.
//! - [`Request`] / [`Reply`] (`control`): one line each on the API socket (JSON lines).
//! - [`ExitReason`] (`exit`): why the VM ended, written by the VMM as a small JSON file
//!   ([`VmConfig::exit_record`]) just before it exits, so its manager reads how a guest ended
//!   as data instead of interpreting exit statuses or log lines.
//!
//! The formats are described for users in `docs/native-vmm.md`.

pub mod config;
pub mod control;

/// The vCPU threads' names: `vcpu 0`, `vcpu 1`, ... (what `/proc/PID/task/TID/comm` shows), how
/// a manager finds them to pin them.
pub const VCPU_THREAD_PREFIX: &str = "vcpu ";
pub mod exit;

pub use config::{
    BackingFile, BalloonSettings, ConfigError, CpuFeatures, CpuMode, CpusConfig, DiskCache,
    DiskConfig, JailConfig, MacAddress, MemoryConfig, NetConfig, RestoreSource, SeccompMode,
    SerialMode, Topology, VmConfig,
};
pub use control::{
    BalloonReport, DiskStats, LiveProgress, MigrationReport, Reply, Request, RequestError,
    RunState, DEFAULT_MAX_DOWNTIME_MS,
};
pub use exit::{ExitReason, ExitRecordError, ExitRecordWriter};
pub use oxvirt_virtio::{BlockStats, RequestStats};
