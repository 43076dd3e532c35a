//! `oxvirt-vmm --config FILE` on this host: a config that is malformed (not JSON, an unknown
//! field, a wrong type) or that cannot run (0 vCPUs, a topology that does not add up, an unknown
//! CPU model, a missing kernel) is refused with one line naming the file and the field, and
//! exit status 1, before anything touches KVM (so these run without it). The exit record of
//! such a run says `error`. Booting from a config file is tested in the nested lab (lab.rs).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use oxvirt_vmm::protocol::ExitReason;

struct Refusal {
    stderr: String,
    status: Option<i32>,
}

fn run_vmm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_oxvirt-vmm"))
        .args(args)
        .output()
        .expect("oxvirt-vmm runs")
}

fn refuse(config_file: &Path) -> Refusal {
    let out = run_vmm(&["--config", config_file.to_str().unwrap()]);
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    Refusal {
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        status: out.status.code(),
    }
}

/// The one line of a refusal; it names the file, then `field`, and contains `phrase`.
fn assert_refused(file: &Path, field: &str, phrase: &str) {
    let refusal = refuse(file);
    assert_eq!(refusal.status, Some(1), "{}", refusal.stderr);
    let lines: Vec<&str> = refusal.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected: {}", refusal.stderr);
    let expected_start = format!("oxvirt-vmm: error: config file {}: {field}", file.display());
    assert!(
        lines[0].starts_with(&expected_start),
        "expected {expected_start:?}…, got {:?}",
        lines[0]
    );
    assert!(
        lines[0].contains(phrase),
        "{phrase:?} not in {:?}",
        lines[0]
    );
    assert!(!lines[0].contains("panicked"), "{}", lines[0]);
}

struct Files {
    dir: tempfile::TempDir,
    /// An existing file that stands in for the kernel: validation only checks it is a file.
    kernel: PathBuf,
}

impl Files {
    fn new() -> Files {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("vmlinuz");
        std::fs::write(&kernel, b"not booted by these tests").unwrap();
        Files { dir, kernel }
    }

    fn config(&self, name: &str, json: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        let json = json.replace("KERNEL", self.kernel.to_str().unwrap());
        std::fs::write(&path, json).unwrap();
        path
    }
}

#[test]
fn a_malformed_config_is_refused_naming_the_file_and_field() {
    let files = Files::new();
    // Not JSON: the position stands in for a field.
    let not_json = files.config(
        "not-json.json",
        r#"{"kernel": "KERNEL", "cpus": {"count": 2"#,
    );
    let refusal = refuse(&not_json);
    assert_eq!(refusal.status, Some(1), "{}", refusal.stderr);
    assert_eq!(refusal.stderr.lines().count(), 1, "{}", refusal.stderr);
    assert!(
        refusal.stderr.starts_with(&format!(
            "oxvirt-vmm: error: config file {}: ",
            not_json.display()
        )) && refusal.stderr.contains("line 1 column"),
        "{}",
        refusal.stderr
    );

    let unknown = files.config(
        "unknown.json",
        r#"{"kernel": "KERNEL", "disks": [{"path": "/d.raw", "cahce": "none"}]}"#,
    );
    assert_refused(&unknown, "disks[0].cahce", "unknown field");

    let wrong_type = files.config(
        "wrong-type.json",
        r#"{"kernel": "KERNEL", "memory": {"size_mib": "lots"}}"#,
    );
    assert_refused(&wrong_type, "memory.size_mib", "invalid type");

    let missing = files.dir.path().join("missing.json");
    let refusal = refuse(&missing);
    assert_eq!(refusal.status, Some(1), "{}", refusal.stderr);
    assert!(
        refusal.stderr.starts_with(&format!(
            "oxvirt-vmm: error: cannot read config file {}",
            missing.display()
        )),
        "{}",
        refusal.stderr
    );
}

#[test]
fn an_unsupported_config_is_refused_naming_the_file_and_field() {
    let files = Files::new();
    let no_vcpus = files.config(
        "no-vcpus.json",
        r#"{"kernel": "KERNEL", "cpus": {"count": 0}}"#,
    );
    assert_refused(&no_vcpus, "cpus.count", "at least 1");

    let topology = files.config(
        "topology.json",
        r#"{"kernel": "KERNEL", "cpus": {"count": 3, "topology": {"sockets": 1, "cores": 2, "threads": 1}}}"#,
    );
    assert_refused(&topology, "cpus.topology", "gives 2 vCPUs");

    let model = files.config(
        "model.json",
        r#"{"kernel": "KERNEL", "cpus": {"mode": {"custom": "Skylake-Client"}}}"#,
    );
    assert_refused(&model, "cpus.mode", "unknown CPU model \"Skylake-Client\"");

    let kernel = files.config("kernel.json", r#"{"kernel": "/nonexistent/vmlinuz"}"#);
    assert_refused(&kernel, "kernel", "/nonexistent/vmlinuz");
}

#[test]
fn a_refused_config_leaves_an_error_exit_record() {
    let files = Files::new();
    let record = files.dir.path().join("exit.json");
    // A record from an earlier run must not survive this one.
    std::fs::write(&record, r#"{"reason":"guest-poweroff"}"#).unwrap();
    let config = files.config(
        "vm.json",
        &format!(
            r#"{{"kernel": "KERNEL", "cpus": {{"count": 0}}, "exit_record": "{}"}}"#,
            record.display()
        ),
    );
    let refusal = refuse(&config);
    assert_eq!(refusal.status, Some(1), "{}", refusal.stderr);
    match ExitReason::read(&record).unwrap() {
        Some(ExitReason::Error { message }) => {
            assert!(message.contains("cpus.count"), "{message}");
            // The record carries the same text as the log line, without the prefix.
            assert_eq!(
                refusal.stderr.trim_end(),
                format!("oxvirt-vmm: error: {message}")
            );
        }
        other => panic!("expected an error record, got {other:?}"),
    }
    let leftovers: Vec<_> = std::fs::read_dir(files.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn the_flags_refuse_an_unsupported_vm_the_same_way() {
    let files = Files::new();
    let out = run_vmm(&[
        "--kernel",
        files.kernel.to_str().unwrap(),
        "--vcpus",
        "3",
        "--topology",
        "cores=2",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("oxvirt-vmm: error: cpus.topology: ")
            && stderr.contains("gives 2 vCPUs"),
        "{stderr}"
    );
}
