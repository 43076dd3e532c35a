//! `oxvirt host validate` against Debian's `virt-host-validate` on this same host: every check
//! it prints, oxvirt prints word for word with the same verdict and advice; oxvirt's own test of
//! /dev/kvm agrees with what the kernel says about its KVM module; the JSON report carries the
//! same verdicts as the text one, and the exit statuses agree.

#[allow(dead_code)]
mod support;

use std::path::Path;
use std::process::Command;

fn run(program: &Path, args: &[&str]) -> (String, Option<i32>) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("run {}: {err}", program.display()));
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        output.status.code(),
    )
}

#[test]
fn validate_has_every_check_of_virt_host_validate_with_its_verdict() {
    let oxvirt = support::oxvirt_bin();
    let (ours, our_code) = run(&oxvirt, &["host", "validate"]);
    let (theirs, their_code) = run(Path::new("/usr/bin/virt-host-validate"), &[]);
    assert!(
        theirs.lines().count() > 10,
        "virt-host-validate (Debian's libvirt-clients, installed by scripts/setup.sh) printed: {theirs}"
    );
    for line in theirs.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            ours.lines().any(|ours| ours == line),
            "virt-host-validate's line is not in oxvirt's report:\n{line}\noxvirt's:\n{ours}"
        );
    }
    // A FAIL of theirs is one of ours; ours may fail more (the /dev/kvm test).
    if their_code != Some(0) {
        assert_eq!(our_code, Some(1), "{ours}");
    }

    // The /dev/kvm test, against what the kernel says.
    let kvm_line = ours
        .lines()
        .find(|l| l.contains("Checking if /dev/kvm runs guests as hardware KVM"))
        .unwrap_or_else(|| panic!("no /dev/kvm check:\n{ours}"));
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let hardware_flags = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    if !Path::new("/dev/kvm").exists() {
        assert!(kvm_line.contains(": FAIL (no /dev/kvm"), "{kvm_line}");
    } else if Path::new("/sys/module/kvm_pvm").exists() {
        assert!(
            kvm_line.contains(": FAIL (") && kvm_line.contains("kvm_pvm"),
            "{kvm_line}"
        );
    } else if hardware_flags
        && (Path::new("/sys/module/kvm_intel").exists()
            || Path::new("/sys/module/kvm_amd").exists())
    {
        assert!(kvm_line.ends_with(": PASS"), "{kvm_line}");
    }
    if !hardware_flags {
        assert_eq!(our_code, Some(1), "no hardware virtualization is a FAIL");
    }

    // JSON: the same checks and verdicts.
    let (json, json_code) = run(&oxvirt, &["host", "validate", "--output", "json"]);
    assert_eq!(json_code, our_code);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json).expect("JSON report");
    assert_eq!(rows.len(), ours.lines().count());
    for (row, line) in rows.iter().zip(ours.lines()) {
        let check = row["check"].as_str().unwrap();
        let verdict = row["verdict"].as_str().unwrap();
        assert!(
            line.contains(&format!("Checking {check}")) && line.contains(&format!(": {verdict}")),
            "{row} vs {line}"
        );
        assert_eq!(row["advice"].is_null(), verdict == "PASS", "{row}");
    }
}
