//! `qemu-monitor-command` against a private oxvirtd running a real QEMU (TCG) guest, and the
//! same commands through Debian's virsh on libvirt's own QEMU guest: the printed answers are
//! equal but for the command ids each side numbers; bad commands are refused as virsh refuses
//! them, and the guest sees what a passed-on command does.

#[allow(dead_code)]
mod support;

use std::process::Command;
use std::time::Duration;

use oxvirt_testkit::{guest_kit, wait_for, BOOT_MARKER, PROMPT};
use support::{guest_xml, make_disk, Daemon};

const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// Each query, as arguments after `qemu-monitor-command DOMAIN`.
const QUERIES: &[&[&str]] = &[
    &["--hmp", "info status"],
    &["--hmp", "info", "version"],
    &[r#"{"execute":"query-status"}"#],
    &["--pretty", r#"{"execute":"query-status"}"#],
    &["--return-value", r#"{"execute":"query-status"}"#],
    &["--return-value", "--pretty", r#"{"execute":"query-name"}"#],
    &["query-name"],
    &["--pretty", r#"{"execute":"query-jobs"}"#],
    &["human-monitor-command", r#""command-line":"info version""#],
    &[
        "--return-value",
        "human-monitor-command",
        r#""command-line":"info status""#,
    ],
    &[r#"{"execute":"nope"}"#],
    &["--pretty", r#"{"execute":"query-status","arguments":[]}"#],
];

/// Command ids differ between the two (libvirt's "libvirt-N", oxvirt's numbers).
fn without_ids(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("\"id\":") {
        let value_start = at + "\"id\":".len();
        let after = &rest[value_start..];
        let skip = after.trim_start().len();
        let value = &after[after.len() - skip..];
        let end = if let Some(quoted) = value.strip_prefix('"') {
            quoted.find('"').map(|i| i + 2).unwrap_or(value.len())
        } else {
            value
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(value.len())
        };
        out.push_str(&rest[..value_start]);
        out.push_str(&after[..after.len() - skip]);
        out.push_str("ID");
        rest = &value[end..];
    }
    out.push_str(rest);
    out
}

fn libvirt_domain_xml() -> String {
    let kit = guest_kit();
    format!(
        "<domain type='qemu'><name>m</name><memory unit='MiB'>256</memory>\
         <os><type arch='x86_64' machine='pc'>hvm</type><kernel>{}</kernel><initrd>{}</initrd>\
         <cmdline>console=ttyS0 panic=-1</cmdline></os><devices><serial type='pty'/></devices></domain>",
        kit.kernel.display(),
        kit.initramfs.display()
    )
}

#[test]
fn answers_are_printed_as_virsh_prints_them() {
    let daemon = Daemon::start();
    let disk = make_disk(daemon.dir.path(), "m.img", 2048);
    let xml = guest_xml(
        "m",
        "0c5a7e21-3b4d-4f6a-8c9e-1a2b3c4d5e6f",
        &guest_kit(),
        &disk,
        1,
    );
    daemon.define("m.xml", &xml).1.ok();
    let mut console = daemon.start_with_console("m");
    console.expect_text(BOOT_MARKER, BOOT_TIMEOUT);
    console.expect_text(PROMPT, BOOT_TIMEOUT);

    let mut ours = String::new();
    for query in QUERIES {
        let mut args = vec!["qemu-monitor-command", "m"];
        args.extend_from_slice(query);
        ours.push_str(&daemon.oxvirt(&args).ok());
    }

    // libvirt's side: one virsh process (the embedded driver's guest lives as long as it).
    let root = daemon.dir.path().join("libvirt");
    // The guest's output to a file, not through virtlogd (which Debian's libvirt-daemon-system
    // would otherwise ask for, and which no one runs here): the embedded driver reads
    // ROOT/etc/qemu.conf.
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/qemu.conf"), "stdio_handler = \"file\"\n").unwrap();
    let libvirt_xml = daemon.dir.path().join("libvirt-m.xml");
    std::fs::write(&libvirt_xml, libvirt_domain_xml()).unwrap();
    let quote = |word: &str| format!("'{}'", word.replace('\'', r"'\''"));
    let mut script = vec![
        format!("define {}", libvirt_xml.display()),
        "start m".into(),
    ];
    for query in QUERIES {
        let words: Vec<String> = query.iter().map(|w| quote(w)).collect();
        script.push(format!("qemu-monitor-command m {}", words.join(" ")));
    }
    script.push("destroy m".into());
    let virsh = Command::new("virsh")
        .arg("-c")
        .arg(format!("qemu:///embed?root={}", root.display()))
        .arg(script.join("; "))
        .output()
        .expect("run virsh (Debian's libvirt-clients, installed by scripts/setup.sh)");
    let theirs = String::from_utf8_lossy(&virsh.stdout).into_owned();
    assert!(
        virsh.status.success(),
        "virsh failed: {theirs}{}",
        String::from_utf8_lossy(&virsh.stderr)
    );
    let theirs = theirs
        .split_once("Domain 'm' started\n\n")
        .and_then(|(_, rest)| rest.rsplit_once("Domain 'm' destroyed\n\n"))
        .map(|(answers, _)| answers.to_string())
        .unwrap_or_else(|| panic!("virsh printed: {theirs}"));
    assert_eq!(without_ids(&ours), without_ids(&theirs));

    // Refusals, as virsh refuses them; nothing reaches QEMU.
    let err = daemon
        .oxvirt(&["qemu-monitor-command", "m", "query-name", "extra"])
        .error();
    assert!(
        err.contains("failed to wrap arguments 'extra' into a QMP command wrapper"),
        "{err}"
    );
    let refused = daemon.oxvirt(&[
        "qemu-monitor-command",
        "m",
        "--hmp",
        "--pretty",
        "info status",
    ]);
    assert!(
        refused.code != Some(0)
            && refused
                .stderr
                .contains("'--hmp' cannot be used with '--pretty'"),
        "{refused:#?}"
    );

    // A passed-on command acts: the guest stops, and oxvirtd sees it (QEMU's STOP event).
    daemon
        .oxvirt(&["qemu-monitor-command", "m", "--hmp", "stop"])
        .ok();
    assert!(wait_for(Duration::from_secs(10), || daemon
        .oxvirt(&["domstate", "m"])
        .stdout
        == "paused\n\n"));
    daemon.oxvirt(&["resume", "m"]).ok();
    assert_eq!(console.run("echo alive-$((1+1))", 1).trim(), "alive-2");

    // A shut-off domain has no monitor.
    daemon.oxvirt(&["destroy", "m"]).ok();
    let err = daemon
        .oxvirt(&["qemu-monitor-command", "m", "--hmp", "info status"])
        .error();
    assert!(err.contains("not running"), "{err}");
}
