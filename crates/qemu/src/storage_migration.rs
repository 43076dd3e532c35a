//! Disks copied along with a live migration (`migrate --copy-storage-all|inc`), as libvirt
//! copies them: the destination's QEMU (started with `-incoming defer`) exports each disk it
//! will run with over NBD, and the source's QEMU mirrors its disks into those exports while the
//! guest runs, before and during the memory's migration.
//!
//! Neither QEMU opens or listens on a socket by itself: the caller (oxvirtd) binds the
//! destination's listening socket and connects the source's connections, and hands them over by
//! descriptor (QMP `getfd`, then socket addresses of type `fd`).
//!
//! - Destination: [`NbdExports`] in [`crate::LaunchOptions`] starts the NBD server on the
//!   listener and exports the disks writable before the state is loaded; [`stop_nbd_server`]
//!   once it is, before the guest resumes.
//! - Source: [`mirror_to_nbd`] per disk, [`mirrors`] follows them to `ready`, [`end_mirrors`]
//!   cancels them (in ready state the target stays consistent: the copy is what the guest wrote
//!   up to then) and removes the NBD nodes.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use serde_json::{json, Value};

use crate::cmdline::disk_node;
use crate::{QemuError, Qmp};

/// The listening socket's name inside the destination's QEMU.
const LISTENER_FD_NAME: &str = "oxvirt-nbd-listener";
/// What the source's block jobs and nodes of a copy are called (oxvirt's jobs start with
/// `oxvirt-`: a restarted oxvirtd dismisses those it finds concluded).
const JOB_PREFIX: &str = "oxvirt-mirror-";
const NODE_PREFIX: &str = "oxvirt-nbd-";
/// How long cancelled mirrors may take to flush and go.
const END_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

/// What the destination's QEMU serves before it loads the migration stream.
#[derive(Debug)]
pub struct NbdExports<'a> {
    /// A listening Unix socket the caller bound.
    pub listener: OwnedFd,
    /// The targets (`vda`) of the disks to export, each under its target's name, writable.
    pub disks: Vec<String>,
    /// Notified once the server runs and every disk is exported.
    pub ready: Option<&'a tokio::sync::Notify>,
}

/// Starts the NBD server of a QEMU started with `-incoming defer` on `exports.listener` and
/// exports its disks (their format nodes: QEMU activates them for the export).
pub(crate) async fn serve_disks(qmp: &Qmp, exports: &NbdExports<'_>) -> Result<(), QemuError> {
    qmp.pass_fd(LISTENER_FD_NAME, exports.listener.as_fd())
        .await?;
    qmp.execute(
        "nbd-server-start",
        Some(json!({ "addr": { "type": "fd", "data": { "str": LISTENER_FD_NAME } } })),
    )
    .await?;
    for dev in &exports.disks {
        qmp.execute(
            "block-export-add",
            Some(json!({
                "type": "nbd",
                "id": format!("{NODE_PREFIX}{dev}"),
                "node-name": disk_node(dev),
                "name": dev,
                "writable": true,
            })),
        )
        .await?;
    }
    if let Some(ready) = exports.ready {
        ready.notify_one();
    }
    Ok(())
}

/// Stops the destination's NBD server (its exports go with it): the copy is over.
pub async fn stop_nbd_server(qmp: &Qmp) -> Result<(), QemuError> {
    qmp.execute("nbd-server-stop", None).await.map(drop)
}

/// Starts mirroring the disk `dev` (whose current top node is `node`) into the export `dev` of
/// the NBD server at the other end of `connection` (a connected Unix socket): all of it, or
/// with `shallow` its top image only (the destination has the backing chain).
pub async fn mirror_to_nbd(
    qmp: &Qmp,
    dev: &str,
    node: &str,
    connection: BorrowedFd<'_>,
    shallow: bool,
) -> Result<(), QemuError> {
    let target = format!("{NODE_PREFIX}{dev}");
    qmp.pass_fd(&target, connection).await?;
    let added = qmp
        .execute(
            "blockdev-add",
            Some(json!({
                "driver": "nbd",
                "node-name": target,
                "export": dev,
                "server": { "type": "fd", "str": target },
            })),
        )
        .await;
    if let Err(err) = added {
        let _ = qmp
            .execute("closefd", Some(json!({ "fdname": target })))
            .await;
        return Err(err);
    }
    let mirrored = qmp
        .execute(
            "blockdev-mirror",
            Some(json!({
                "job-id": format!("{JOB_PREFIX}{dev}"),
                "device": node,
                "target": target,
                "sync": if shallow { "top" } else { "full" },
            })),
        )
        .await;
    if let Err(err) = mirrored {
        let _ = qmp
            .execute("blockdev-del", Some(json!({ "node-name": target })))
            .await;
        return Err(err);
    }
    Ok(())
}

/// How one disk's copy goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MirrorStats {
    /// The disk's target (`vda`).
    pub dev: String,
    /// Bytes copied, and the bytes the job knows of in all (it grows as the guest writes).
    pub offset: u64,
    pub len: u64,
    /// Source and copy are the same but for what the guest writes meanwhile.
    pub ready: bool,
    /// QEMU's status (`running`, `ready`, `concluded`...).
    pub status: String,
    /// Why it failed, once concluded with an error.
    pub error: Option<String>,
}

/// The source's disk copies that still exist.
pub async fn mirrors(qmp: &Qmp) -> Result<Vec<MirrorStats>, QemuError> {
    Ok(mirrors_of(&qmp.execute("query-block-jobs", None).await?))
}

fn mirrors_of(jobs: &Value) -> Vec<MirrorStats> {
    jobs.as_array()
        .into_iter()
        .flatten()
        .filter_map(|job| {
            let dev = job["device"].as_str()?.strip_prefix(JOB_PREFIX)?;
            Some(MirrorStats {
                dev: dev.to_string(),
                offset: job["offset"].as_u64().unwrap_or(0),
                len: job["len"].as_u64().unwrap_or(0),
                ready: job["ready"].as_bool().unwrap_or(false),
                status: job["status"].as_str().unwrap_or("").to_string(),
                error: job["error"].as_str().map(str::to_string),
            })
        })
        .collect()
}

/// Ends the copies of `devs` (those that exist): cancels each (a ready one first copies what
/// is left, so its target is whole), waits until the jobs are gone, and removes the NBD nodes
/// (which closes their connections). Every disk is tried; the first failure is returned.
pub async fn end_mirrors(qmp: &Qmp, devs: &[String]) -> Result<(), QemuError> {
    let mut first_error = None;
    for dev in devs {
        let cancelled = qmp
            .execute(
                "block-job-cancel",
                Some(json!({ "device": format!("{JOB_PREFIX}{dev}") })),
            )
            .await;
        // A job that never started or already went has nothing to cancel.
        if let Err(QemuError::Command { .. }) = cancelled {
            continue;
        }
        if let Err(err) = cancelled {
            first_error.get_or_insert(err);
        }
    }
    let deadline = tokio::time::Instant::now() + END_TIMEOUT;
    loop {
        let left = mirrors(qmp).await?;
        if !left.iter().any(|job| devs.contains(&job.dev)) {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            first_error.get_or_insert(QemuError::Timeout {
                what: "the disk copies to end".to_string(),
                seconds: END_TIMEOUT.as_secs(),
                log_tail: None,
            });
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    for dev in devs {
        let target = format!("{NODE_PREFIX}{dev}");
        let _ = qmp
            .execute("closefd", Some(json!({ "fdname": target })))
            .await;
        let _ = qmp
            .execute("blockdev-del", Some(json!({ "node-name": target })))
            .await;
    }
    match first_error {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_oxvirt_mirrors_are_reported() {
        let jobs = json!([
            {"device": "oxvirt-mirror-vda", "offset": 10, "len": 20, "ready": false,
             "status": "running", "type": "mirror"},
            {"device": "oxvirt-mirror-vdb", "offset": 20, "len": 20, "ready": true,
             "status": "ready", "type": "mirror"},
            {"device": "backup-vda", "offset": 0, "len": 1, "ready": false, "type": "backup"},
        ]);
        let stats = mirrors_of(&jobs);
        assert_eq!(stats.len(), 2);
        assert_eq!(
            stats[0],
            MirrorStats {
                dev: "vda".to_string(),
                offset: 10,
                len: 20,
                ready: false,
                status: "running".to_string(),
                error: None,
            }
        );
        assert!(stats[1].ready);
        assert!(mirrors_of(&json!({})).is_empty());
    }
}
