//! Control API server: JSON lines over a Unix socket. The requests and replies are
//! [`crate::protocol::control`]'s: `status`, `pause`, `resume`, `poweroff` (ACPI power button: the guest
//! shuts down cleanly), `stop` (immediate, like pulling the plug),
//! `balloon`, `balloon-stats`, `balloon-stats-period` (the virtio-balloon's target, report and period),
//! `block-stats` (each disk's I/O counters), `save` and `save-fd` (the machine state, into a
//! file named or passed with the request: a jailed VMM can only be given one), `migrate-send-fd`
//! and `migrate-cancel` (a live migration's stream into a passed descriptor, and its undoing).

use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::protocol::{ExitReason, Reply, Request, RunState};
use crate::seccomp::ThreadRole;
use crate::vm::VmHandle;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

/// The longest request line a client may send.
const MAX_LINE: usize = 64 << 10;

fn done_or_refused(result: Result<(), String>) -> Reply {
    match result {
        Ok(()) => Reply::Done,
        Err(error) => Reply::Refused { error },
    }
}

/// Runs one request; `passed` is the last descriptor the client sent, taken by `save-fd`.
fn execute(vm: &VmHandle, request: Request, passed: &mut Option<std::fs::File>) -> Reply {
    match request {
        Request::Save { path, offset } => done_or_refused(vm.save(&path, offset)),
        Request::SaveFd { offset } => match passed.take() {
            Some(file) => done_or_refused(vm.save_into(file, "the file passed", offset)),
            None => Reply::Refused {
                error: "save-fd: no file descriptor came with the request".into(),
            },
        },
        Request::Status => Reply::Status {
            state: if vm.control.exit_reason().is_some() {
                RunState::Stopping
            } else if vm.control.is_created() {
                RunState::Created
            } else if vm.control.is_paused() {
                RunState::Paused
            } else {
                RunState::Running
            },
            vcpus: vm.vcpus,
        },
        Request::Pause => done_or_refused(vm.pause()),
        Request::Resume => done_or_refused(vm.resume()),
        Request::Poweroff => done_or_refused(vm.power_button()),
        Request::Stop => {
            vm.stop();
            Reply::Done
        }
        Request::Balloon { target_kib } => done_or_refused(vm.set_balloon_target(target_kib)),
        Request::BalloonStats => match vm.balloon_report() {
            Ok(report) => Reply::Balloon(report),
            Err(error) => Reply::Refused { error },
        },
        Request::BalloonStatsPeriod { seconds } => {
            done_or_refused(vm.set_balloon_stats_period(seconds))
        }
        Request::BlockStats => Reply::Block(vm.block_stats()),
        Request::MigrateSendFd { max_downtime_ms } => match passed.take() {
            Some(file) => match vm.migrate_send(file, max_downtime_ms) {
                Ok(report) => Reply::Migrated(report),
                Err(error) => Reply::Refused { error },
            },
            None => Reply::Refused {
                error: "migrate-send-fd: no descriptor came with the request".into(),
            },
        },
        Request::MigrateCancel => done_or_refused(vm.migrate_cancel()),
        Request::MigrateStatus => match vm.migrate_status() {
            Ok(progress) => Reply::LiveMigration(progress),
            Err(error) => Reply::Refused { error },
        },
        Request::MigrateSetDowntime { max_downtime_ms } => {
            done_or_refused(vm.migrate_set_downtime(max_downtime_ms))
        }
    }
}

/// Serves one client: lines in, one reply line out each. Read with `recvmsg`, so a descriptor
/// sent with a line (`save-fd`) is received with it.
fn serve_client(vm: &VmHandle, mut stream: UnixStream) {
    let mut pending: Vec<u8> = Vec::new();
    let mut passed: Option<std::fs::File> = None;
    let mut buf = [0u8; 4096];
    loop {
        let (read, file) = match stream.recv_with_fd(&mut buf) {
            Ok(received) => received,
            Err(_) => return,
        };
        if let Some(file) = file {
            passed = Some(file);
        }
        if read == 0 {
            return;
        }
        pending.extend_from_slice(&buf[..read]);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            if line.trim().is_empty() {
                continue;
            }
            let reply = match Request::parse_line(&line) {
                Ok(request) => execute(vm, request, &mut passed),
                Err(error) => Reply::Refused { error: error.0 },
            };
            let mut text = reply.to_line();
            text.push('\n');
            if stream.write_all(text.as_bytes()).is_err() {
                return;
            }
        }
        if pending.len() > MAX_LINE {
            return;
        }
    }
}

/// The listening socket; removed from the filesystem on drop.
pub struct ApiServer {
    path: PathBuf,
}

impl ApiServer {
    /// Serves clients of `listener` (bound at `path`: `crate::resources::ApiSocket`) on a background
    /// thread (one thread per client).
    pub fn start(
        listener: UnixListener,
        path: &Path,
        vm: Arc<VmHandle>,
    ) -> std::io::Result<ApiServer> {
        std::thread::Builder::new()
            .name("api".into())
            .spawn(move || {
                // Client threads inherit the filter.
                if let Err(e) = vm.seccomp.apply(ThreadRole::Api) {
                    vm.control.request_exit(ExitReason::Error {
                        message: e.to_string(),
                    });
                    return;
                }
                for stream in listener.incoming().flatten() {
                    let vm = vm.clone();
                    let _ = std::thread::Builder::new()
                        .name("api-client".into())
                        .spawn(move || serve_client(&vm, stream));
                }
            })?;
        Ok(ApiServer {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};

    fn start(path: &Path, vm: Arc<VmHandle>) -> std::io::Result<ApiServer> {
        let listener = crate::resources::ApiSocket::bind(path)?.listen()?;
        ApiServer::start(listener, path, vm)
    }

    fn ask(stream: &mut UnixStream, line: &str) -> serde_json::Value {
        stream.write_all(format!("{line}\n").as_bytes()).unwrap();
        let mut answer = String::new();
        BufReader::new(stream.try_clone().unwrap())
            .read_line(&mut answer)
            .unwrap();
        serde_json::from_str(&answer).unwrap()
    }

    #[test]
    fn socket_serves_status_pause_resume_poweroff_and_stop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let vm = Arc::new(VmHandle::detached(2));
        let server = start(&path, vm.clone()).unwrap();
        let mut s = UnixStream::connect(&path).unwrap();
        assert_eq!(
            ask(&mut s, r#"{"command":"status"}"#),
            serde_json::json!({"ok": true, "state": "running", "vcpus": 2})
        );
        let save = r#"{"command":"save","path":"/nonexistent/state","offset":0}"#;
        let running = ask(&mut s, save);
        assert_eq!(running["ok"], false);
        assert!(running["error"]
            .as_str()
            .unwrap()
            .contains("pause it before saving"));
        assert_eq!(ask(&mut s, "pause")["ok"], true);
        assert_eq!(ask(&mut s, "status")["state"], "paused");
        // Paused, but this handle has no machine behind it: refused with a reason, still paused.
        let detached = ask(&mut s, save);
        assert_eq!(detached["ok"], false);
        assert!(detached["error"].as_str().unwrap().contains("cannot save"));
        assert_eq!(ask(&mut s, "status")["state"], "paused");
        // save-fd needs the file to come with the line.
        let no_fd = ask(&mut s, r#"{"command":"save-fd","offset":0}"#);
        assert!(no_fd["error"]
            .as_str()
            .unwrap()
            .contains("no file descriptor"));
        // With one, it is taken (and here refused for want of a machine, like save).
        let file = tempfile::tempfile().unwrap();
        s.send_with_fd(
            &b"{\"command\":\"save-fd\",\"offset\":0}\n"[..],
            std::os::fd::AsRawFd::as_raw_fd(&file),
        )
        .unwrap();
        let mut answer = String::new();
        BufReader::new(s.try_clone().unwrap())
            .read_line(&mut answer)
            .unwrap();
        assert!(answer.contains("cannot save"), "{answer}");
        assert_eq!(ask(&mut s, "resume")["ok"], true);
        assert_eq!(ask(&mut s, "status")["state"], "running");
        // No ACPI-aware guest enabled the power button: refused, with a reason.
        let off = ask(&mut s, "poweroff");
        assert_eq!(off["ok"], false);
        assert!(off["error"].as_str().unwrap().contains("power button"));
        assert_eq!(ask(&mut s, "reboot")["ok"], false);
        // No balloon here: the balloon requests say so.
        let balloon = ask(&mut s, r#"{"command":"balloon","target_kib":1024}"#);
        assert_eq!(balloon["ok"], false);
        assert!(balloon["error"].as_str().unwrap().contains("no balloon"));
        assert_eq!(ask(&mut s, "balloon-stats")["ok"], false);
        // No disks here: an empty list.
        assert_eq!(
            ask(&mut s, "block-stats"),
            serde_json::json!({"ok": true, "disks": []})
        );
        assert_eq!(ask(&mut s, "{not json")["ok"], false);
        assert_eq!(ask(&mut s, "stop")["ok"], true);
        assert_eq!(vm.control.exit_reason(), Some(ExitReason::HostStop));
        // A second VMM cannot take over a live socket; dropping the server removes it.
        assert!(start(&path, vm.clone()).is_err());
        drop(server);
        assert!(!path.exists());
    }
}
