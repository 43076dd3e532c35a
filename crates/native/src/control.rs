//! The async client of the VMM's control socket: one connection per request, one line out, one
//! line in (the VMM's API serves each connection until it closes, but a fresh one per request
//! means no state to lose when the VMM restarts its listener or the daemon restarts).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use oxvirt_vmm::protocol::{
    BalloonReport, DiskStats, LiveProgress, MigrationReport, Reply, Request, RunState,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::error::NativeError;

/// How long one request may take (a pause waits for every vCPU to stop).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long saving the machine state may take: all of guest RAM goes to disk and is synced.
const SAVE_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a live migration's stream may take: its pace is the reader's (`migrate --bandwidth`),
/// and the VMM bounds what it sends (3 x RAM before its last pass): a 4 GiB guest at 1 MiB/s
/// takes hours. This only catches a VMM that hangs; `domjobabort` is the way to give up sooner.
const MIGRATE_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Control of one running VMM.
#[derive(Debug, Clone)]
pub struct VmmClient {
    socket: PathBuf,
    /// Set once `stop` was sent: the VM's end is then the host's doing, whatever the guest did
    /// meanwhile (shared with the exit watch, which reads it when the VMM has gone).
    stop_sent: Arc<AtomicBool>,
}

impl VmmClient {
    pub(crate) fn new(socket: PathBuf, stop_sent: Arc<AtomicBool>) -> VmmClient {
        VmmClient { socket, stop_sent }
    }

    /// What the VM is doing.
    pub async fn status(&self) -> Result<RunState, NativeError> {
        match self.request(Request::Status).await? {
            Reply::Status { state, vcpus: _ } => Ok(state),
            other => Err(unexpected(&Request::Status, "a state", other)),
        }
    }

    /// Parks every vCPU; returns once all have stopped.
    pub async fn pause(&self) -> Result<(), NativeError> {
        self.request(Request::Pause).await.map(drop)
    }

    pub async fn resume(&self) -> Result<(), NativeError> {
        self.request(Request::Resume).await.map(drop)
    }

    /// Presses the ACPI power button (refused while the guest has not enabled it).
    pub async fn power_button(&self) -> Result<(), NativeError> {
        self.request(Request::Poweroff).await.map(drop)
    }

    /// Writes the paused VM's whole machine state into the existing file `path` from byte
    /// `offset` on (the bytes before it are left alone) and syncs it; the VM stays paused. A
    /// running VM is refused. [`crate::Supervisor::launch_restoring`] starts it again.
    ///
    /// The file is opened here and passed to the VMM with the request (`save-fd`): a jailed
    /// VMM could not open it, and its owner and mode stay as they are.
    pub async fn save_state(&self, path: &std::path::Path, offset: u64) -> Result<(), NativeError> {
        // Existing, written only: never created or truncated here (its header is the caller's).
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| NativeError::io(format!("cannot open {}", path.display()), e))?;
        self.exchange(Request::SaveFd { offset }, Some(file), SAVE_TIMEOUT)
            .await
            .map(drop)
    }

    /// Live migration's source side: the VMM writes the guest's state into `stream` (a socket
    /// whose other end the caller reads and relays, `crate::migration::relay_state`) while the
    /// guest runs, pass after pass over its RAM, then pauses it for the last pass (aiming at
    /// `max_downtime_ms`); answered once the stream is complete. The VM then stays paused with
    /// its disks' locks released until [`Self::stop`] (it runs on the destination) or
    /// [`Self::migrate_cancel`]. A refusal (the stream failed midway: its reader went) left the
    /// guest running as before, locks kept.
    pub async fn migrate_send(
        &self,
        stream: std::os::fd::OwnedFd,
        max_downtime_ms: u64,
    ) -> Result<MigrationReport, NativeError> {
        let request = Request::MigrateSendFd { max_downtime_ms };
        match self
            .exchange(request.clone(), Some(stream.into()), MIGRATE_TIMEOUT)
            .await?
        {
            Reply::Migrated(report) => Ok(report),
            other => Err(unexpected(&request, "a migration report", other)),
        }
    }

    /// How far the live migration under way ([`Self::migrate_send`], from another task) went,
    /// as of its last pass's end; refused when none streams.
    pub async fn migrate_status(&self) -> Result<LiveProgress, NativeError> {
        match self.request(Request::MigrateStatus).await? {
            Reply::LiveMigration(progress) => Ok(progress),
            other => Err(unexpected(
                &Request::MigrateStatus,
                "a live migration's progress",
                other,
            )),
        }
    }

    /// The downtime the live migration under way aims at from its next pass's end on;
    /// refused when none streams.
    pub async fn migrate_set_downtime(&self, max_downtime_ms: u64) -> Result<(), NativeError> {
        self.request(Request::MigrateSetDowntime { max_downtime_ms })
            .await
            .map(drop)
    }

    /// Undoes a completed [`Self::migrate_send`] (the destination failed): the VMM takes its
    /// disks' locks again and resumes the guest if it ran before.
    pub async fn migrate_cancel(&self) -> Result<(), NativeError> {
        self.request(Request::MigrateCancel).await.map(drop)
    }

    /// Asks the guest's balloon driver to leave the guest `target_kib` KiB (refused above its
    /// memory, or without a balloon); returns once asked.
    pub async fn set_balloon(&self, target_kib: u64) -> Result<(), NativeError> {
        self.request(Request::Balloon { target_kib })
            .await
            .map(drop)
    }

    /// The balloon's view of guest memory: its size now, the target, the guest's statistics.
    pub async fn balloon_stats(&self) -> Result<BalloonReport, NativeError> {
        match self.request(Request::BalloonStats).await? {
            Reply::Balloon(report) => Ok(report),
            other => Err(unexpected(
                &Request::BalloonStats,
                "a balloon report",
                other,
            )),
        }
    }

    /// How often (seconds; 0: never) the guest refreshes its balloon statistics.
    pub async fn set_balloon_stats_period(&self, seconds: u32) -> Result<(), NativeError> {
        self.request(Request::BalloonStatsPeriod { seconds })
            .await
            .map(drop)
    }

    /// Each disk's I/O counters, in the configuration's order (each names its disk by the
    /// config's `id`: the target oxvirtd planned).
    pub async fn block_stats(&self) -> Result<Vec<DiskStats>, NativeError> {
        match self.request(Request::BlockStats).await? {
            Reply::Block(disks) => Ok(disks),
            other => Err(unexpected(&Request::BlockStats, "disk counters", other)),
        }
    }

    /// Stops the VM at once; the VMM exits.
    pub async fn stop(&self) -> Result<(), NativeError> {
        self.stop_sent.store(true, Ordering::SeqCst);
        self.request(Request::Stop).await.map(drop)
    }

    /// One request on a fresh connection; a refusal is an error carrying the VMM's reason.
    async fn request(&self, request: Request) -> Result<Reply, NativeError> {
        self.request_within(request, REQUEST_TIMEOUT).await
    }

    async fn request_within(
        &self,
        request: Request,
        timeout: Duration,
    ) -> Result<Reply, NativeError> {
        self.exchange(request, None, timeout).await
    }

    /// One request, with `file`'s descriptor attached (SCM_RIGHTS) if there is one.
    async fn exchange(
        &self,
        request: Request,
        file: Option<std::fs::File>,
        timeout: Duration,
    ) -> Result<Reply, NativeError> {
        let command = request.to_string();
        let exchange = async {
            let mut line = request.to_line();
            line.push('\n');
            let stream = match file {
                Some(file) => send_with_file(&self.socket, line.as_bytes(), file).await?,
                None => {
                    let mut stream = UnixStream::connect(&self.socket).await?;
                    stream.write_all(line.as_bytes()).await?;
                    stream
                }
            };
            let mut answer = String::new();
            BufReader::new(stream).read_line(&mut answer).await?;
            Ok::<String, std::io::Error>(answer)
        };
        let answer = match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(answer)) if !answer.trim().is_empty() => answer,
            Ok(Ok(_)) => {
                return Err(NativeError::Api {
                    socket: self.socket.clone(),
                    reason: format!("closed without answering '{command}'"),
                })
            }
            Ok(Err(err)) => {
                return Err(NativeError::Api {
                    socket: self.socket.clone(),
                    reason: err.to_string(),
                })
            }
            Err(_) => {
                return Err(NativeError::Timeout {
                    command,
                    seconds: timeout.as_secs(),
                })
            }
        };
        match Reply::parse_line(&answer) {
            Ok(Reply::Refused { error }) => Err(NativeError::Refused {
                command,
                reason: error,
            }),
            Ok(reply) => Ok(reply),
            Err(reason) => Err(NativeError::Protocol { command, reason }),
        }
    }
}

/// Connects and sends `line` with `file`'s descriptor, from a blocking thread (a line this short
/// goes in one `sendmsg` on a local socket); the stream then serves the answer.
async fn send_with_file(
    socket: &std::path::Path,
    line: &[u8],
    file: std::fs::File,
) -> std::io::Result<UnixStream> {
    use std::os::fd::AsRawFd as _;
    use vmm_sys_util::sock_ctrl_msg::ScmSocket as _;
    let socket = socket.to_path_buf();
    let line = line.to_vec();
    let stream = tokio::task::spawn_blocking(move || {
        let stream = std::os::unix::net::UnixStream::connect(&socket)?;
        let sent = stream
            .send_with_fd(&line[..], file.as_raw_fd())
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
        if sent != line.len() {
            return Err(std::io::Error::other("the request was cut short"));
        }
        // Our copy of the descriptor closes here; the VMM holds its own.
        drop(file);
        stream.set_nonblocking(true)?;
        Ok(stream)
    })
    .await
    .map_err(std::io::Error::other)??;
    UnixStream::from_std(stream)
}

/// The error for a success reply of the wrong kind to `request` (where `expected` was due).
fn unexpected(request: &Request, expected: &str, reply: Reply) -> NativeError {
    NativeError::Protocol {
        command: request.to_string(),
        reason: format!("expected {expected}, got {reply:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    /// A VMM stand-in that answers each request line with `reply` and records the requests.
    async fn fake_vmm(listener: UnixListener, reply: &'static str, requests: usize) -> Vec<String> {
        let mut seen = Vec::new();
        for _ in 0..requests {
            let (stream, _) = listener.accept().await.unwrap();
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            BufReader::new(read).read_line(&mut line).await.unwrap();
            seen.push(line.trim_end().to_string());
            write.write_all(reply.as_bytes()).await.unwrap();
        }
        seen
    }

    /// A [`fake_vmm`] serving `requests` requests on a fresh socket: its directory (removed
    /// when dropped), the socket, and the task that returns the requests it saw.
    fn serve(
        reply: &'static str,
        requests: usize,
    ) -> (
        tempfile::TempDir,
        PathBuf,
        tokio::task::JoinHandle<Vec<String>>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("api.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let server = tokio::spawn(fake_vmm(listener, reply, requests));
        (dir, socket, server)
    }

    #[tokio::test]
    async fn requests_are_typed_lines_and_refusals_carry_the_reason() {
        let (_dir, socket, server) = serve(
            "{\"ok\":false,\"error\":\"the guest has not enabled the ACPI power button\"}\n",
            2,
        );
        let stop_sent = Arc::new(AtomicBool::new(false));
        let client = VmmClient::new(socket, stop_sent.clone());
        let err = client.power_button().await.unwrap_err();
        assert!(
            err.to_string()
                .ends_with("refused 'poweroff': the guest has not enabled the ACPI power button"),
            "{err}"
        );
        assert!(!stop_sent.load(Ordering::SeqCst));
        assert!(client.stop().await.is_err());
        assert!(
            stop_sent.load(Ordering::SeqCst),
            "stop marks the end as the host's"
        );
        assert_eq!(
            server.await.unwrap(),
            vec!["{\"command\":\"poweroff\"}", "{\"command\":\"stop\"}"]
        );
    }

    #[tokio::test]
    async fn status_reads_the_state() {
        let (_dir, socket, server) = serve("{\"ok\":true,\"state\":\"paused\",\"vcpus\":2}\n", 3);
        let client = VmmClient::new(socket, Arc::default());
        assert_eq!(client.status().await.unwrap(), RunState::Paused);
        // The state file travels with the request, the offset in it.
        let state = tempfile::NamedTempFile::new().unwrap();
        client.save_state(state.path(), 8192).await.unwrap();
        // A status reply to a pause is not what the protocol allows for it, but it is a success.
        client.pause().await.unwrap();
        assert_eq!(
            server.await.unwrap()[1],
            "{\"command\":\"save-fd\",\"offset\":8192}"
        );
    }

    #[tokio::test]
    async fn a_live_migration_passes_its_socket_and_reads_the_report() {
        let (_dir, socket, server) = serve(
            "{\"ok\":true,\"migration\":{\"passes\":3,\"bytes\":4096,\"last_pass_bytes\":512,\"paused_ms\":9}}\n",
            3,
        );
        let client = VmmClient::new(socket, Arc::default());
        let (ours, _theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let report = client.migrate_send(ours.into(), 120).await.unwrap();
        assert_eq!(
            report,
            MigrationReport {
                passes: 3,
                bytes: 4096,
                last_pass_bytes: 512,
                paused_ms: 9
            }
        );
        // A report where a plain success was expected is still a success.
        client.migrate_cancel().await.unwrap();
        // A success without a report to migrate-send-fd is not what the protocol allows.
        let (ours, _theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let (_dir2, socket2, server2) = serve("{\"ok\":true}\n", 1);
        let err = VmmClient::new(socket2, Arc::default())
            .migrate_send(ours.into(), 300)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected a migration report"), "{err}");
        server2.await.unwrap();
        let (ours, _theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        client.migrate_send(ours.into(), 300).await.unwrap();
        assert_eq!(
            server.await.unwrap(),
            vec![
                "{\"command\":\"migrate-send-fd\",\"max_downtime_ms\":120}",
                "{\"command\":\"migrate-cancel\"}",
                "{\"command\":\"migrate-send-fd\",\"max_downtime_ms\":300}",
            ]
        );
    }

    #[tokio::test]
    async fn a_live_migration_is_followed_and_its_downtime_changed() {
        let (_dir, socket, server) = serve(
            "{\"ok\":true,\"live_migration\":{\"passes\":2,\"ram_bytes\":8192,\"dirty_bytes\":4096,\"dirty_rate\":1024,\"max_downtime_ms\":300}}\n",
            2,
        );
        let client = VmmClient::new(socket, Arc::default());
        let progress = client.migrate_status().await.unwrap();
        assert_eq!(
            progress,
            LiveProgress {
                passes: 2,
                ram_bytes: 8192,
                dirty_bytes: 4096,
                dirty_rate: 1024,
                max_downtime_ms: 300
            }
        );
        client.migrate_set_downtime(2000).await.unwrap();
        assert_eq!(
            server.await.unwrap(),
            vec![
                "{\"command\":\"migrate-status\"}",
                "{\"command\":\"migrate-set-downtime\",\"max_downtime_ms\":2000}",
            ]
        );
        // A plain success to migrate-status is not what the protocol allows.
        let (_dir2, socket2, server2) = serve("{\"ok\":true}\n", 1);
        let err = VmmClient::new(socket2, Arc::default())
            .migrate_status()
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("expected a live migration's progress"),
            "{err}"
        );
        server2.await.unwrap();
    }

    #[tokio::test]
    async fn balloon_requests_and_the_report() {
        let (_dir, socket, server) = serve(
            "{\"ok\":true,\"balloon\":{\"actual_kib\":1024,\"target_kib\":512,\"stats_period_s\":2,\"guest\":[[\"unused\",100]],\"last_update\":7}}\n",
            3,
        );
        let client = VmmClient::new(socket, Arc::default());
        let report = client.balloon_stats().await.unwrap();
        assert_eq!(report.actual_kib, 1024);
        assert_eq!(report.guest, vec![("unused".to_string(), 100)]);
        // A report where a plain success was expected is still a success.
        client.set_balloon(512).await.unwrap();
        client.set_balloon_stats_period(2).await.unwrap();
        assert_eq!(
            server.await.unwrap(),
            vec![
                "{\"command\":\"balloon-stats\"}",
                "{\"command\":\"balloon\",\"target_kib\":512}",
                "{\"command\":\"balloon-stats-period\",\"seconds\":2}"
            ]
        );
    }

    #[tokio::test]
    async fn block_stats_reads_each_disks_counters_and_a_vmm_without_them_is_named() {
        let (_dir, socket, server) = serve(
            "{\"ok\":true,\"disks\":[{\"index\":0,\"id\":\"vda\",\"read\":{\"requests\":2,\"bytes\":1024,\"total_ns\":5},\"write\":{\"requests\":1,\"bytes\":512,\"total_ns\":6},\"flush\":{\"requests\":0,\"bytes\":0,\"total_ns\":0}}]}\n",
            1,
        );
        let disks = VmmClient::new(socket, Arc::default())
            .block_stats()
            .await
            .unwrap();
        assert_eq!(server.await.unwrap(), vec!["{\"command\":\"block-stats\"}"]);
        let [vda] = disks.as_slice() else {
            panic!("one disk expected: {disks:?}");
        };
        assert_eq!(vda.id.as_deref(), Some("vda"));
        let (read, write) = (vda.counters.read, vda.counters.write);
        assert_eq!((read.requests, read.bytes, write.bytes), (2, 1024, 512));

        // A VMM from before the request refuses it as unknown: the error says so.
        let (_old_dir, old_socket, server) = serve(
            "{\"ok\":false,\"error\":\"unknown command \\\"block-stats\\\" (status, pause)\"}\n",
            1,
        );
        let err = VmmClient::new(old_socket, Arc::default())
            .block_stats()
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("refused 'block-stats': unknown command"),
            "{err}"
        );
        server.await.unwrap();
    }
}
