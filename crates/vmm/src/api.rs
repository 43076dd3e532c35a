//! Control API: JSON lines over a Unix socket.
//!
//! Each request is one line, `{"command": "<name>"}` (a bare `<name>` line is accepted too); each answer is
//! one line, `{"ok": true, ...}` or `{"ok": false, "error": "..."}`. Commands: `status`, `pause`, `resume`,
//! `poweroff` (ACPI power button: the guest shuts down cleanly), `stop` (immediate, like pulling the plug).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::seccomp::ThreadRole;
use crate::vm::VmHandle;

#[derive(Debug, Deserialize)]
struct Request {
    command: String,
}

#[derive(Debug, Serialize, Default)]
pub struct Response {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn ok() -> Response {
    Response {
        ok: true,
        ..Default::default()
    }
}

fn err(e: impl Into<String>) -> Response {
    Response {
        ok: false,
        error: Some(e.into()),
        ..Default::default()
    }
}

/// Parses one request line into a command name.
pub fn parse_request(line: &str) -> Result<String, String> {
    let line = line.trim();
    if line.starts_with('{') {
        serde_json::from_str::<Request>(line)
            .map(|r| r.command)
            .map_err(|e| format!("invalid request: {e}"))
    } else if !line.is_empty() && line.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        Ok(line.to_string())
    } else {
        Err("invalid request: expected {\"command\": \"...\"}".into())
    }
}

fn execute(vm: &VmHandle, command: &str) -> Response {
    match command {
        "status" => Response {
            ok: true,
            state: Some(if vm.control.exit_reason().is_some() {
                "stopping"
            } else if vm.control.is_paused() {
                "paused"
            } else {
                "running"
            }),
            vcpus: Some(vm.vcpus),
            ..Default::default()
        },
        "pause" => vm.pause().map_or_else(err, |_| ok()),
        "resume" => {
            vm.resume();
            ok()
        }
        "poweroff" => vm.power_button().map_or_else(err, |_| ok()),
        "stop" => {
            vm.stop();
            ok()
        }
        other => err(format!(
            "unknown command {other:?} (status, pause, resume, poweroff, stop)"
        )),
    }
}

fn serve_client(vm: &VmHandle, stream: UnixStream) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        if line.trim().is_empty() {
            continue;
        }
        let resp = match parse_request(&line) {
            Ok(cmd) => execute(vm, &cmd),
            Err(e) => err(e),
        };
        let mut text = serde_json::to_string(&resp).unwrap_or_else(|_| "{\"ok\":false}".into());
        text.push('\n');
        if out.write_all(text.as_bytes()).is_err() {
            return;
        }
    }
}

/// The listening socket; removed from the filesystem on drop.
pub struct ApiServer {
    path: PathBuf,
}

impl ApiServer {
    /// Binds the socket and serves clients on a background thread (one thread per client).
    pub fn start(path: &Path, vm: Arc<VmHandle>) -> std::io::Result<ApiServer> {
        if path.exists() {
            // A stale socket from a previous run: only replace it if nobody answers.
            if UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another VMM is listening there",
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        std::thread::Builder::new()
            .name("api".into())
            .spawn(move || {
                // Client threads inherit the filter.
                if let Err(e) = vm.seccomp.apply(ThreadRole::Api) {
                    vm.control
                        .request_exit(crate::control::ExitReason::Error(e.to_string()));
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

    #[test]
    fn requests_parse_as_json_or_bare_words() {
        assert_eq!(parse_request("{\"command\":\"pause\"}").unwrap(), "pause");
        assert_eq!(parse_request("resume\n").unwrap(), "resume");
        assert!(parse_request("{\"cmd\":1}").is_err());
        assert!(parse_request("rm -rf /").is_err());
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
        let server = ApiServer::start(&path, vm.clone()).unwrap();
        let mut s = UnixStream::connect(&path).unwrap();
        assert_eq!(
            ask(&mut s, r#"{"command":"status"}"#),
            serde_json::json!({"ok": true, "state": "running", "vcpus": 2})
        );
        assert_eq!(ask(&mut s, "pause")["ok"], true);
        assert_eq!(ask(&mut s, "status")["state"], "paused");
        assert_eq!(ask(&mut s, "resume")["ok"], true);
        assert_eq!(ask(&mut s, "status")["state"], "running");
        // No ACPI-aware guest enabled the power button: refused, with a reason.
        let off = ask(&mut s, "poweroff");
        assert_eq!(off["ok"], false);
        assert!(off["error"].as_str().unwrap().contains("power button"));
        assert_eq!(ask(&mut s, "reboot")["ok"], false);
        assert_eq!(ask(&mut s, "{not json")["ok"], false);
        assert_eq!(ask(&mut s, "stop")["ok"], true);
        assert_eq!(
            vm.control.exit_reason(),
            Some(crate::control::ExitReason::Poweroff)
        );
        // A second VMM cannot take over a live socket; dropping the server removes it.
        assert!(ApiServer::start(&path, vm.clone()).is_err());
        drop(server);
        assert!(!path.exists());
    }

    #[test]
    fn responses_serialize_compactly() {
        assert_eq!(serde_json::to_string(&ok()).unwrap(), "{\"ok\":true}");
        assert_eq!(
            serde_json::to_string(&err("x")).unwrap(),
            "{\"ok\":false,\"error\":\"x\"}"
        );
    }
}
