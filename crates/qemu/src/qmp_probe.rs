//! A short-lived QEMU asked questions over QMP on its stdio: the probes behind the CPU model
//! database (`cpu_models.rs`) and the machine types (`machines.rs`). [`ask`] starts
//! `EMULATOR -machine none -accel tcg -nodefaults -nographic -qmp stdio`, reads the greeting
//! (QEMU's version), negotiates capabilities, lets the caller run its commands on a
//! [`Session`], then quits and reaps QEMU. A watchdog kills a QEMU that stops answering.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::QemuError;

/// How long a whole probe may take (the CPU probe's 60 expansions take a second or two).
const PROBE_TIMEOUT: Duration = Duration::from_secs(120);

/// A QMP conversation with the probe's QEMU.
pub(crate) struct Session<'a> {
    stdin: ChildStdin,
    lines: std::io::Lines<BufReader<&'a mut ChildStdout>>,
    /// QEMU's version as its QMP greeting gives it (`7.2.22`).
    pub(crate) qemu_version: String,
}

impl Session<'_> {
    /// Runs one command and returns its `return` value; events in between are skipped.
    pub(crate) fn execute(&mut self, command: Value) -> Result<Value, QemuError> {
        let io = |err: std::io::Error| QemuError::Protocol(format!("QMP over stdio: {err}"));
        writeln!(self.stdin, "{command}").map_err(io)?;
        loop {
            let line = self
                .lines
                .next()
                .ok_or_else(|| QemuError::Protocol("QEMU exited during the probe".into()))?
                .map_err(io)?;
            let reply: Value = serde_json::from_str(&line)
                .map_err(|err| QemuError::Protocol(format!("not JSON from QMP: {err}")))?;
            if reply.get("event").is_some() {
                continue;
            }
            if let Some(ret) = reply.get("return") {
                return Ok(ret.clone());
            }
            return Err(QemuError::Protocol(format!(
                "QMP refused {command}: {}",
                reply.get("error").unwrap_or(&reply)
            )));
        }
    }
}

/// Starts `emulator` for a probe and runs `converse` on its QMP session.
pub(crate) fn ask<T>(
    emulator: &Path,
    converse: impl FnOnce(&mut Session) -> Result<T, QemuError>,
) -> Result<T, QemuError> {
    let mut child = Command::new(emulator)
        .args([
            "-machine",
            "none",
            "-accel",
            "tcg",
            "-nodefaults",
            "-nographic",
        ])
        .args(["-qmp", "stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|err| QemuError::Spawn {
            emulator: emulator.to_path_buf(),
            reason: err.to_string(),
        })?;
    // A watchdog ends a QEMU that stops answering, which ends the reads below with EOF.
    let (done, watch) = mpsc::channel::<()>();
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = watch.recv_timeout(PROBE_TIMEOUT) {
            // SAFETY: kill(2) with a pid we spawned and have not reaped yet (the reaping
            // wait() below happens only after this thread is told to stop or has fired).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    });
    let result = (|| {
        let missing = || QemuError::Protocol("QEMU's stdio pipes are missing".into());
        let stdin = child.stdin.take().ok_or_else(missing)?;
        let stdout = child.stdout.as_mut().ok_or_else(missing)?;
        let mut lines = BufReader::new(stdout).lines();
        let greeting: Value = match lines.next() {
            Some(Ok(line)) => serde_json::from_str(&line)
                .map_err(|err| QemuError::Protocol(format!("QMP greeting is not JSON: {err}")))?,
            _ => return Err(QemuError::Protocol("QEMU gave no QMP greeting".into())),
        };
        let mut session = Session {
            stdin,
            lines,
            qemu_version: version_of(&greeting)?,
        };
        session.execute(json!({"execute": "qmp_capabilities"}))?;
        let answer = converse(&mut session)?;
        let _ = session.execute(json!({"execute": "quit"}));
        Ok(answer)
    })();
    drop(done);
    let _ = watchdog.join();
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn version_of(greeting: &Value) -> Result<String, QemuError> {
    let version = &greeting["QMP"]["version"]["qemu"];
    match (
        version["major"].as_u64(),
        version["minor"].as_u64(),
        version["micro"].as_u64(),
    ) {
        (Some(major), Some(minor), Some(micro)) => Ok(format!("{major}.{minor}.{micro}")),
        _ => Err(QemuError::Protocol(format!(
            "QMP greeting has no version: {greeting}"
        ))),
    }
}
