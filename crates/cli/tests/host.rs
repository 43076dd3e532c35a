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

/// Every file under `dir` with its bytes (symlinks by their target).
fn tree(dir: &Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).unwrap().flatten() {
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                files.insert(path, target.into_os_string().into_encoded_bytes());
            } else if kind.is_file() {
                files.insert(path.clone(), std::fs::read(&path).unwrap_or_default());
            }
        }
    }
    files
}

/// `oxvirt host tune` in a private mount namespace whose /etc is a copy of this host's: the
/// advice alone changes nothing; `--apply` writes each advised setting into the file the
/// advice names and touches no other file; a second `--apply` changes nothing. The host's own
/// /etc is never written.
#[test]
fn tune_changes_nothing_without_apply_and_applies_once() {
    let scratch = tempfile::tempdir().unwrap();
    let etc = scratch.path().join("etc");
    let copied = Command::new("cp")
        .arg("-a")
        .arg("/etc")
        .arg(&etc)
        .status()
        .unwrap();
    assert!(copied.success());
    let host_etc_before = tree(Path::new("/etc/sysctl.d"));
    let oxvirt = support::oxvirt_bin();
    let tune = |args: &str| -> String {
        let script = format!(
            "mount --bind {} /etc && exec {} host tune --guest-memory 4G {args}",
            etc.display(),
            oxvirt.display()
        );
        let output = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        text
    };

    let before = tree(&etc);
    let advice = tune("");
    assert_eq!(
        tree(&etc),
        before,
        "advice without --apply changed files:\n{advice}"
    );
    let settings: Vec<(String, String)> = advice
        .lines()
        .filter_map(|line| line.trim().strip_prefix("set: "))
        .filter_map(|set| set.split_once(": "))
        .map(|(file, line)| (file.to_string(), line.to_string()))
        .collect();

    let applied = tune("--apply");
    let after = tree(&etc);
    for (file, line) in &settings {
        let content = std::fs::read_to_string(etc.join(file.trim_start_matches("/etc/")))
            .unwrap_or_else(|_| panic!("{file} not written:\n{applied}"));
        assert!(
            content.lines().any(|l| l == line),
            "{file} lacks {line}:\n{content}"
        );
        assert!(applied.contains(&format!("wrote {file}: ")), "{applied}");
    }
    let written: Vec<&std::path::PathBuf> = after
        .iter()
        .filter(|(path, bytes)| before.get(*path) != Some(*bytes))
        .map(|(path, _)| path)
        .collect();
    assert_eq!(
        written.len(),
        settings
            .iter()
            .map(|(file, _)| file)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        "files changed beyond the advised ones: {written:?}\n{applied}"
    );
    assert!(
        before.keys().all(|path| after.contains_key(path)),
        "a file went away"
    );

    let again = tune("--apply");
    assert_eq!(
        tree(&etc),
        after,
        "a second --apply changed files:\n{again}"
    );
    assert!(again.contains("nothing changed"), "{again}");
    assert_eq!(tree(Path::new("/etc/sysctl.d")), host_etc_before);
}
