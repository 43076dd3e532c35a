//! A guest's machine state (RAM, vCPUs, devices) into and out of a file, with QEMU's migration
//! stream: `save`/`restore` and managed saves.
//!
//! The file never passes through a shell or a path QEMU opens: the caller opens it, positioned
//! where the stream starts (after oxvirt's own header), and it reaches QEMU over QMP (`getfd`,
//! SCM_RIGHTS). QEMU reads or writes from the descriptor's position, which it shares with the
//! caller's file.
//!
//! - [`save_state`]: `migrate fd:NAME` of the paused guest, waiting for `completed`.
//! - Loading happens at start: [`crate::launch_with`] with [`crate::LaunchOptions::incoming`]
//!   starts QEMU with `-S -incoming defer`, then `migrate-incoming fd:NAME`; the guest is paused
//!   afterwards, for the caller to resume.

use std::fs::File;
use std::io::Seek;
use std::os::fd::AsFd;
use std::time::Duration;

use serde_json::{json, Value};

use crate::{QemuError, Qmp};

/// The name the state file's descriptor has inside QEMU.
const FD_NAME: &str = "oxvirt-state";
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

/// Starts loading the state from `file` (its current position on) into a QEMU started with
/// `-incoming defer`, and waits until it is loaded. `alive` says whether QEMU still runs: a
/// stream QEMU cannot load makes it exit, not fail the migration.
pub(crate) async fn load_state<F, Fut>(qmp: &Qmp, file: &File, alive: F) -> Result<(), QemuError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
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
                if last_progress.1 != transferred {
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
        Some("completed") => Progress::Completed,
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
            progress(&json!({"status": "active", "ram": {"transferred": 4096}})),
            Progress::Moving
        );
        // Before any migration, QEMU reports no status.
        assert_eq!(progress(&json!({})), Progress::Moving);
    }
}
