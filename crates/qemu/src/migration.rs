//! A guest's machine state (RAM, vCPUs, devices) into and out of a file, with QEMU's migration
//! stream: `save`/`restore` and managed saves.
//!
//! The file never passes through a shell or a path QEMU opens: the caller opens it, positioned
//! where the stream starts (after oxvirt's own header), and it reaches QEMU over QMP (`getfd`,
//! SCM_RIGHTS). QEMU reads or writes from the descriptor's position, which it shares with the
//! caller's file.
//!
//! - [`save_state`]: `migrate fd:NAME` of the paused guest, waiting for `completed`.
//! - [`migrate_to_stream`]: live migration of the running guest into a connection to another
//!   QEMU (which oxvirtd made and passes the same way), followed with [`migration_stats`].
//! - Loading happens at start: [`crate::launch_with`] with [`crate::LaunchOptions::incoming`]
//!   starts QEMU with `-S -incoming defer`, then `migrate-incoming fd:NAME`; the guest is paused
//!   afterwards, for the caller to resume.

use std::fs::File;
use std::io::Seek;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use serde_json::{json, Value};

use crate::{QemuError, Qmp};

/// The name the state file's descriptor has inside QEMU.
const FD_NAME: &str = "oxvirt-state";
/// The name of an outgoing live migration's connection inside QEMU.
const STREAM_FD_NAME: &str = "oxvirt-migration";
/// How often `query-migrate` is asked.
const POLL: Duration = Duration::from_millis(50);
/// A migration that moves no byte of the file for this long has stalled.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Which way the state goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Save,
    Load,
}

impl Direction {
    fn what(self) -> &'static str {
        match self {
            Direction::Save => "saving the guest's state",
            Direction::Load => "loading the guest's state",
        }
    }
}

/// Writes the machine state of the (paused) guest behind `qmp` into `file`, from its current
/// position on; returns once QEMU reports the migration `completed`.
pub async fn save_state(qmp: &Qmp, file: &File) -> Result<(), QemuError> {
    // QEMU throttles a migration to 32 MiB/s by default, meant for a network link: a save to a
    // local file goes as fast as the disk takes it, as libvirt's does.
    qmp.execute(
        "migrate-set-parameters",
        Some(json!({ "max-bandwidth": i64::MAX })),
    )
    .await?;
    qmp.pass_fd(FD_NAME, file.as_fd()).await?;
    let started = qmp
        .execute("migrate", Some(json!({ "uri": format!("fd:{FD_NAME}") })))
        .await;
    if let Err(err) = started {
        let _ = qmp
            .execute("closefd", Some(json!({ "fdname": FD_NAME })))
            .await;
        return Err(err);
    }
    wait_for_completion(qmp, file, Direction::Save, || async { true }).await
}

/// Starts a live migration of the running guest behind `qmp` into `stream`, a connection to the
/// destination's QEMU; `bandwidth_mib` MiB/s becomes the guest's migration speed limit (it
/// stays for later migrations, as `migrate-getspeed` shows; else the one set stays: none unless
/// one was set, as launch lifts QEMU's default of 32 MiB/s); returns once it
/// started. The guest runs on meanwhile; [`migration_stats`] follows it to `completed`, after
/// which the guest here is paused (QEMU's `postmigrate`: ended once the destination runs it,
/// resumed here when the destination did not take it).
pub async fn migrate_to_stream(
    qmp: &Qmp,
    stream: BorrowedFd<'_>,
    bandwidth_mib: Option<u64>,
) -> Result<(), QemuError> {
    if let Some(mib) = bandwidth_mib {
        set_bandwidth(qmp, mib).await?;
    }
    qmp.pass_fd(STREAM_FD_NAME, stream).await?;
    let started = qmp
        .execute(
            "migrate",
            Some(json!({ "uri": format!("fd:{STREAM_FD_NAME}") })),
        )
        .await;
    if let Err(err) = started {
        let _ = qmp
            .execute("closefd", Some(json!({ "fdname": STREAM_FD_NAME })))
            .await;
        return Err(err);
    }
    Ok(())
}

const MIB: u64 = 1024 * 1024;

/// The guest's migration settings: (largest downtime allowed in ms, bandwidth limit in MiB/s).
pub async fn migration_parameters(qmp: &Qmp) -> Result<(u64, u64), QemuError> {
    let params = qmp.execute("query-migrate-parameters", None).await?;
    Ok((
        params["downtime-limit"].as_u64().unwrap_or(0),
        params["max-bandwidth"].as_u64().unwrap_or(0) / MIB,
    ))
}

/// Sets the guest's migration bandwidth limit in MiB/s (0: none), which a running migration
/// follows at once.
pub async fn set_bandwidth(qmp: &Qmp, mib: u64) -> Result<(), QemuError> {
    let bytes = match mib {
        0 => i64::MAX as u64,
        mib => mib.saturating_mul(MIB).min(i64::MAX as u64),
    };
    qmp.execute(
        "migrate-set-parameters",
        Some(json!({ "max-bandwidth": bytes })),
    )
    .await
    .map(|_| ())
}

/// Sets the largest downtime the guest's migrations may take for their last pass, in ms.
pub async fn set_max_downtime(qmp: &Qmp, milliseconds: u64) -> Result<(), QemuError> {
    qmp.execute(
        "migrate-set-parameters",
        Some(json!({ "downtime-limit": milliseconds })),
    )
    .await
    .map(|_| ())
}

/// What `query-migrate` says of an outgoing migration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationStats {
    /// QEMU's status: "none" before any, "setup", "active", "device", "completed", "failed",
    /// "cancelling", "cancelled".
    pub status: String,
    /// RAM bytes sent, still to send, and in all.
    pub transferred: u64,
    pub remaining: u64,
    pub total: u64,
    /// Bytes per second of RAM the guest dirties (pages per second times the page size).
    pub dirty_rate: u64,
    /// The guest's pause for the last pass, once completed.
    pub downtime_ms: Option<u64>,
    /// QEMU's reason, when it failed.
    pub error: Option<String>,
    /// How many times QEMU synchronized the dirty bitmap (`dirty-sync-count`): 1 during the
    /// first pass over the memory, 2 once it ended (`--postcopy-after-precopy` waits for it).
    pub passes: u64,
    /// Pages the destination asked for since post-copy began (`postcopy-requests`): the
    /// guest running there touched them before they came.
    pub postcopy_requests: u64,
}

/// The outgoing migration's progress.
pub async fn migration_stats(qmp: &Qmp) -> Result<MigrationStats, QemuError> {
    Ok(stats_of(&qmp.execute("query-migrate", None).await?))
}

fn stats_of(info: &Value) -> MigrationStats {
    let ram = &info["ram"];
    let number = |v: &Value| v.as_u64().unwrap_or(0);
    let page_size = ram["page-size"].as_u64().unwrap_or(4096);
    MigrationStats {
        status: info["status"].as_str().unwrap_or("none").to_string(),
        transferred: number(&ram["transferred"]),
        remaining: number(&ram["remaining"]),
        total: number(&ram["total"]),
        dirty_rate: number(&ram["dirty-pages-rate"]).saturating_mul(page_size),
        downtime_ms: info["downtime"].as_u64(),
        error: info["error-desc"].as_str().map(str::to_string),
        passes: number(&ram["dirty-sync-count"]),
        postcopy_requests: number(&ram["postcopy-requests"]),
    }
}

/// Switches the running outgoing migration (started with the `postcopy-ram` capability set on
/// both QEMUs) to post-copy: the guest stops here and runs on the destination, which asks for
/// the pages it touches before they came.
pub async fn start_postcopy(qmp: &Qmp) -> Result<(), QemuError> {
    qmp.execute("migrate-start-postcopy", None)
        .await
        .map(|_| ())
}

/// Starts loading the state from `file` (its current position on) into a QEMU started with
/// `-incoming defer`, and waits until it is loaded. `alive` says whether QEMU still runs: a
/// stream QEMU cannot load makes it exit, not fail the migration. With `postcopy`, QEMU's
/// `postcopy-ram` capability is set first (the source's must be too); QEMU refuses it when it
/// cannot use userfaultfd ("Postcopy is not supported"). Such a load may also end in post-copy
/// (`postcopy-active`): the devices are loaded and the guest can run while the rest of its
/// memory comes.
pub(crate) async fn load_state<F, Fut>(
    qmp: &Qmp,
    file: &File,
    postcopy: bool,
    alive: F,
) -> Result<(), QemuError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    if postcopy {
        qmp.execute(
            "migrate-set-capabilities",
            Some(json!({ "capabilities": [{ "capability": "postcopy-ram", "state": true }] })),
        )
        .await?;
    }
    qmp.pass_fd(FD_NAME, file.as_fd()).await?;
    qmp.execute(
        "migrate-incoming",
        Some(json!({ "uri": format!("fd:{FD_NAME}") })),
    )
    .await?;
    wait_for_completion(qmp, file, Direction::Load, alive).await
}

/// Polls `query-migrate` until the migration completed (Ok) or failed (QEMU's reason), bounded
/// by progress: it fails once no byte moved for [`STALL_TIMEOUT`]. Progress is the position of
/// `file`, which QEMU's descriptor shares (an incoming migration reports no byte counts).
async fn wait_for_completion<F, Fut>(
    qmp: &Qmp,
    mut file: &File,
    direction: Direction,
    alive: F,
) -> Result<(), QemuError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut last_progress = (tokio::time::Instant::now(), None::<u64>);
    let position = |file: &mut &File| file.stream_position().ok();
    loop {
        let info = match qmp.execute("query-migrate", None).await {
            Ok(info) => info,
            // A QEMU that could not load the stream exits; the caller adds its log.
            Err(QemuError::Disconnected) if direction == Direction::Load => {
                return Err(failed(direction, "QEMU exited".to_string()))
            }
            Err(err) => return Err(err),
        };
        match progress(&info) {
            Progress::Completed => return Ok(()),
            Progress::Failed(reason) => return Err(failed(direction, reason)),
            Progress::Moving => {
                let transferred = position(&mut file);
                // A connection (live migration) has no position: the source bounds it, and
                // its end closing fails the load.
                if transferred.is_none() || last_progress.1 != transferred {
                    last_progress = (tokio::time::Instant::now(), transferred);
                } else if last_progress.0.elapsed() >= STALL_TIMEOUT {
                    if direction == Direction::Save {
                        let _ = qmp.execute("migrate_cancel", None).await;
                    }
                    return Err(QemuError::Timeout {
                        what: format!("{} to make progress", direction.what()),
                        seconds: STALL_TIMEOUT.as_secs(),
                        log_tail: None,
                    });
                }
            }
        }
        if !alive().await {
            return Err(failed(direction, "QEMU exited".to_string()));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn failed(direction: Direction, reason: String) -> QemuError {
    QemuError::Migration {
        what: direction.what(),
        reason,
    }
}

/// What one `query-migrate` answer says.
#[derive(Debug, PartialEq, Eq)]
enum Progress {
    Completed,
    Failed(String),
    /// Still going (or not yet started).
    Moving,
}

fn progress(info: &Value) -> Progress {
    match info["status"].as_str() {
        // In post-copy the device state is loaded (QEMU's listen and run commands came): the
        // guest runs here, and its pages it lacks come when it touches them. Paused (the
        // stream broke after the switch): this QEMU has the guest's newest state, so it is
        // loaded as far as it goes and must not be ended as a failed load would be.
        Some("completed" | "postcopy-active" | "postcopy-paused" | "postcopy-recover") => {
            Progress::Completed
        }
        Some(status @ ("failed" | "cancelled")) => Progress::Failed(
            info["error-desc"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("the migration {status}")),
        ),
        _ => Progress::Moving,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outgoing_migration_stats() {
        let info = json!({
            "status": "active",
            "ram": {"transferred": 100, "remaining": 50, "total": 150,
                    "dirty-pages-rate": 10, "page-size": 4096},
        });
        assert_eq!(
            stats_of(&info),
            MigrationStats {
                status: "active".to_string(),
                transferred: 100,
                remaining: 50,
                total: 150,
                dirty_rate: 40960,
                downtime_ms: None,
                error: None,
                passes: 0,
                postcopy_requests: 0,
            }
        );
        let done = stats_of(&json!({"status": "completed", "downtime": 12}));
        assert_eq!(
            (done.status.as_str(), done.downtime_ms),
            ("completed", Some(12))
        );
        assert_eq!(stats_of(&json!({})).status, "none");
        let postcopy = stats_of(&json!({"status": "postcopy-active",
            "ram": {"dirty-sync-count": 3, "postcopy-requests": 17}}));
        assert_eq!((postcopy.passes, postcopy.postcopy_requests), (3, 17));
    }

    #[test]
    fn query_migrate_answers() {
        assert_eq!(
            progress(&json!({"status": "completed"})),
            Progress::Completed
        );
        assert_eq!(
            progress(&json!({"status": "failed", "error-desc": "Unable to write to file"})),
            Progress::Failed("Unable to write to file".to_string())
        );
        assert_eq!(
            progress(&json!({"status": "cancelled"})),
            Progress::Failed("the migration cancelled".to_string())
        );
        assert_eq!(
            progress(&json!({"status": "postcopy-active"})),
            Progress::Completed
        );
        assert_eq!(
            progress(&json!({"status": "active", "ram": {"transferred": 4096}})),
            Progress::Moving
        );
        // Before any migration, QEMU reports no status.
        assert_eq!(progress(&json!({})), Progress::Moving);
    }
}
