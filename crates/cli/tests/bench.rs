//! `oxvirt bench` end to end: the short profile on the host, in a qemu-engine guest of a private oxvirtd
//! (booted from scripts/bench-kit.sh's kit) and nested (L2 under KVM inside an L1 guest of that oxvirtd, TCG
//! with SVM), its tables, JSON report, SVG chart and `bench compare`; and the bad inputs (unknown profile or
//! target, a read-only or a full bench directory, the nested target where L1 gets no KVM), which must fail
//! with one clear error and leave nothing behind: no guest defined, no file in the bench directory.
//!
//! The nested parts need `oxvirt-vmm` built next to `oxvirt` (`cargo build -p oxvirt-vmm`); they fail, never
//! skip, without it.

#[allow(dead_code)]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use oxvirt_testkit::workspace_root;
use support::{entries, oxvirt_bin, Daemon, Run};

const WORKLOADS: [&str; 10] = [
    "cpu",
    "memory",
    "randread-4k-qd1",
    "randread-4k-qd32",
    "randwrite-4k-qd1",
    "randwrite-4k-qd32",
    "read-1m-qd1",
    "read-1m-qd32",
    "write-1m-qd1",
    "write-1m-qd32",
];

/// Builds (or finds cached) the bench kit, with the nested target's L1 (around the `oxvirt-vmm` built next to
/// `oxvirt`), and returns its directory.
fn bench_kit() -> PathBuf {
    let root = workspace_root();
    let dir = root.join("target/bench-kit");
    let vmm = oxvirt_bin().with_file_name("oxvirt-vmm");
    assert!(
        vmm.is_file(),
        "{} is missing: run `cargo build -p oxvirt-vmm` before this test",
        vmm.display()
    );
    let status = Command::new("bash")
        .arg(root.join("scripts/bench-kit.sh"))
        .arg("--nested")
        .env("OXVIRT_BENCH_KIT_DIR", &dir)
        .env("OXVIRT_VMM", &vmm)
        .status()
        .expect("run scripts/bench-kit.sh");
    assert!(status.success(), "scripts/bench-kit.sh failed: {status}");
    dir
}

fn p(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// `oxvirt bench --profile short --kit KIT --dir DIR --json JSON` with `args`; its stdout.
fn short_run(daemon: &Daemon, kit: &Path, dir: &Path, json: &Path, args: &[&str]) -> String {
    let mut all = vec![
        "bench",
        "--profile",
        "short",
        "--kit",
        p(kit),
        "--dir",
        p(dir),
    ];
    all.extend(["--json", p(json)]);
    all.extend(args);
    daemon.oxvirt(&all).ok()
}

fn assert_no_guest(daemon: &Daemon) {
    let list = daemon.oxvirt(&["list", "--all", "--name"]).ok();
    assert_eq!(list.trim(), "", "a bench guest was left defined");
}

#[test]
fn short_profile_on_host_qemu_guest_and_nested_guest_end_to_end() {
    let kit = bench_kit();
    let daemon = Daemon::start();
    let out = tempfile::tempdir().expect("tempdir");
    // The nested target's L1 runs as a guest user of its own and reaches its disk through this directory.
    support::searchable(out.path());
    let bench_dir = out.path().join("work");
    std::fs::create_dir(&bench_dir).expect("bench dir");
    let json = out.path().join("run.json");
    let chart = out.path().join("run.svg");
    let stdout = short_run(
        &daemon,
        &kit,
        &bench_dir,
        &json,
        &["--targets", "host,qemu,nested", "--chart", p(&chart)],
    );

    // The tables: every workload with every target's figures, and the guests' as a percentage of the host's.
    assert!(stdout.contains("Results (short profile)"), "{stdout}");
    assert!(stdout.contains("qemu % of host"), "{stdout}");
    assert!(stdout.contains("nested % of host"), "{stdout}");
    for w in WORKLOADS {
        assert_eq!(
            stdout
                .lines()
                .filter(|l| l.starts_with(&format!(" {w} ")))
                .count(),
            2,
            "{w} should have a row in each table:\n{stdout}"
        );
    }

    // The JSON: its structure, and a positive figure for every workload and target, nothing else.
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json written")).expect("json");
    let keys = |v: &serde_json::Value| -> Vec<String> {
        let mut keys: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
        keys.sort();
        keys
    };
    assert_eq!(
        keys(&report),
        [
            "format",
            "machine",
            "oxvirt_version",
            "profile",
            "started",
            "targets",
            "workloads"
        ]
    );
    assert_eq!(report["format"], "oxvirt-bench/1");
    assert_eq!(report["profile"], "short");
    assert!(report["started"].as_u64().is_some_and(|s| s > 0));
    assert_eq!(
        keys(&report["machine"]),
        ["cpu_model", "cpus", "fio", "kernel", "sysbench"]
    );
    assert_eq!(
        report["targets"],
        serde_json::json!(["host", "qemu", "nested"])
    );
    let rows = report["workloads"].as_array().expect("workloads");
    let ids: Vec<&str> = rows.iter().map(|w| w["id"].as_str().expect("id")).collect();
    assert_eq!(ids, WORKLOADS);
    for row in rows {
        assert_eq!(keys(row), ["id", "results", "unit"], "{row}");
        assert_eq!(keys(&row["results"]), ["host", "nested", "qemu"], "{row}");
        for target in ["host", "qemu", "nested"] {
            let value = row["results"][target].as_f64();
            assert!(
                value.is_some_and(|v| v.is_finite() && v > 0.0),
                "{} on {target}: {value:?}",
                row["id"]
            );
        }
    }

    // The chart is XML with a bar per workload and target.
    let svg = std::fs::read_to_string(&chart).expect("chart written");
    let doc = roxmltree::Document::parse(&svg).expect("the chart parses as XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let bars = doc.descendants().filter(|n| n.has_tag_name("rect")).count();
    assert_eq!(bars, WORKLOADS.len() * 3 + 3, "bars and legend:\n{svg}");

    // A report compared with itself: 100% everywhere.
    let compared = daemon
        .oxvirt(&["bench", "compare", p(&json), p(&json)])
        .ok();
    let rows: Vec<&str> = compared.lines().skip(2).collect();
    assert_eq!(rows.len(), WORKLOADS.len() * 3, "{compared}");
    assert!(rows.iter().all(|r| r.ends_with("   100.0%")), "{compared}");

    // Nothing left behind.
    assert_no_guest(&daemon);
    assert!(entries(&bench_dir).is_empty(), "{:?}", entries(&bench_dir));
}

#[test]
fn unknown_profile_and_target_are_refused() {
    let daemon = Daemon::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let err = daemon
        .oxvirt(&["bench", "--profile", "bogus", "--dir", p(dir.path())])
        .error();
    assert_eq!(err, "error: unknown profile 'bogus' (known: short, full)");
    let err = daemon
        .oxvirt(&["bench", "--targets", "host,moon", "--dir", p(dir.path())])
        .error();
    assert_eq!(
        err,
        "error: unknown bench target 'moon' (known: host, qemu, nested)"
    );
    let err = daemon
        .oxvirt(&[
            "bench",
            "compare",
            "/nonexistent/a.json",
            "/nonexistent/b.json",
        ])
        .error();
    assert!(err.contains("cannot read /nonexistent/a.json"), "{err}");
    // No daemon behind the socket: said before anything is written.
    let kit = bench_kit();
    let socket = dir.path().join("no-daemon.sock");
    let err = support::oxvirt_at(
        &socket,
        &[
            "bench",
            "--targets",
            "qemu",
            "--kit",
            p(&kit),
            "--dir",
            p(dir.path()),
        ],
        &[],
    )
    .error();
    assert!(
        err.contains(&format!("the qemu target needs oxvirtd at {}", p(&socket))),
        "{err}"
    );
    assert!(entries(dir.path()).is_empty());
    assert_no_guest(&daemon);
}

/// The nested target where L1's CPU has no SVM (what a host without nested virtualization gives L1): kvm-amd
/// cannot load in L1, and the run fails saying so, with L1 undefined and the bench directory empty.
#[test]
fn nested_target_without_kvm_in_l1_is_a_clear_error() {
    let kit = bench_kit();
    let daemon = Daemon::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let err = daemon
        .oxvirt(&[
            "bench",
            "--profile",
            "short",
            "--targets",
            "nested",
            "--nested-l1-without-svm",
            "--kit",
            p(&kit),
            "--dir",
            p(dir.path()),
        ])
        .error();
    assert!(
        err.contains("the nested target cannot run on this host: L1's CPU has no svm flag"),
        "{err}"
    );
    assert_no_guest(&daemon);
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
}

/// Runs `oxvirt bench` in a private mount namespace where `dir` is a fresh tmpfs mounted with `options`
/// (`ro`, or a size too small for the data disk); then lists what is left in it.
fn bench_on_tmpfs(daemon: &Daemon, kit: &Path, dir: &Path, mount: &str) -> (Run, String) {
    let script = format!(
        "set -e; mount -t tmpfs {mount} tmpfs '{d}'; set +e; \
         '{oxvirt}' --socket '{sock}' bench --profile short --targets host,qemu --dir '{d}' --kit '{kit}'; \
         rc=$?; echo LEFT:; ls -A '{d}'; exit $rc",
        d = p(dir),
        oxvirt = p(&oxvirt_bin()),
        sock = p(&daemon.socket),
        kit = p(kit),
    );
    let output = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("run unshare");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let left = stdout
        .split_once("LEFT:\n")
        .map(|(_, rest)| rest.to_string())
        .unwrap_or_default();
    let run = Run {
        code: output.status.code(),
        stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    (run, left)
}

#[test]
fn read_only_or_full_bench_directory_fails_cleanly() {
    let kit = bench_kit();
    let daemon = Daemon::start();
    let dir = tempfile::tempdir().expect("tempdir");

    let (run, left) = bench_on_tmpfs(&daemon, &kit, dir.path(), "-o ro");
    let err = run.error();
    assert!(
        err.contains(&format!(
            "cannot create a work directory in {}",
            p(dir.path())
        )) && err.contains("Read-only file system"),
        "{err}"
    );
    assert_eq!(left, "", "files left in the read-only directory");

    let (run, left) = bench_on_tmpfs(&daemon, &kit, dir.path(), "-o size=1m");
    let err = run.error();
    assert!(
        err.contains("cannot write the data disk") && err.contains("No space left on device"),
        "{err}"
    );
    assert_eq!(left, "", "files left in the full directory");
    assert_no_guest(&daemon);
}

/// The nested target's path (benches/bench-nested.sh): the commands `--print-commands` gives, run for real
/// (here on the host, by sh, as L2's shell runs them) between the console markers, read back by
/// `import-console`; a log missing a workload is refused, naming it.
#[test]
fn printed_commands_run_and_their_console_log_imports() {
    let daemon = Daemon::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = dir.path().join("data.raw");
    std::fs::write(&disk, vec![7u8; 64 << 20]).expect("data disk");
    let commands = daemon
        .oxvirt(&["bench", "--profile", "short", "--print-commands", p(&disk)])
        .ok();
    let mut script = String::new();
    for line in commands.lines() {
        let (id, command) = line.split_once('\t').expect("ID<TAB>COMMAND");
        script.push_str(&format!(
            "echo BENCH-BEGIN-{id}; {command} 2>&1; echo BENCH-END-{id}-$?\n"
        ));
    }
    assert_eq!(commands.lines().count(), WORKLOADS.len(), "{commands}");
    let log = dir.path().join("console.log");
    let out = Command::new("sh")
        .args(["-c", &script])
        .output()
        .expect("run the commands");
    std::fs::write(&log, &out.stdout).expect("console log");

    let json = dir.path().join("replay.json");
    let import = |extra: &[&str]| {
        let mut args = vec!["bench", "import-console", p(&log), "--target", "replay"];
        args.extend(["--profile", "short"]);
        args.extend(extra);
        daemon.oxvirt(&args)
    };
    let tables = import(&["--json", p(&json)]).ok();
    assert!(tables.contains(" randwrite-4k-qd32 "), "{tables}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("json");
    assert_eq!(report["targets"], serde_json::json!(["replay"]));
    for row in report["workloads"].as_array().expect("workloads") {
        assert!(
            row["results"]["replay"].as_f64().is_some_and(|v| v > 0.0),
            "{row}"
        );
    }

    let cut = String::from_utf8_lossy(&out.stdout).replace("BENCH-END-memory-", "BENCH-GONE-");
    std::fs::write(&log, cut).expect("console log");
    let err = import(&[]).error();
    assert!(err.contains("no output of memory"), "{err}");
}

/// `--matrix` with two combinations on the qemu target: one guest, the data disk hot-plugged with each
/// setting (on bus virtio, then on bus scsi, with the virtio-scsi controller oxvirtd plugs for it), one
/// column per combination with a measured figure for every workload; nothing left behind.
#[test]
fn matrix_of_two_disk_settings_gives_a_column_each() {
    let kit = bench_kit();
    let daemon = Daemon::start();
    let out = tempfile::tempdir().expect("tempdir");
    let bench_dir = out.path().join("work");
    std::fs::create_dir(&bench_dir).expect("bench dir");
    let json = out.path().join("matrix.json");
    let stdout = short_run(
        &daemon,
        &kit,
        &bench_dir,
        &json,
        &[
            "--targets",
            "qemu",
            "--matrix",
            "io=threads",
            "bus=virtio,scsi",
        ],
    );
    let columns = ["qemu:io=threads,bus=virtio", "qemu:io=threads,bus=scsi"];
    assert!(
        stdout.contains("qemu:io=threads,bus=scsi % of qemu:io=threads,bus=virtio"),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json written")).expect("json");
    assert_eq!(report["targets"], serde_json::json!(columns));
    let rows = report["workloads"].as_array().expect("workloads");
    assert_eq!(rows.len(), WORKLOADS.len());
    for row in rows {
        for column in columns {
            let value = row["results"][column].as_f64();
            assert!(
                value.is_some_and(|v| v.is_finite() && v > 0.0),
                "{} on {column}: {value:?}",
                row["id"]
            );
        }
    }
    assert_no_guest(&daemon);
    assert!(entries(&bench_dir).is_empty(), "{:?}", entries(&bench_dir));
}

/// An unknown matrix axis or value, or a matrix without the qemu target: one clear error before anything
/// is made.
#[test]
fn bad_matrix_is_refused() {
    let daemon = Daemon::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let bench = |matrix: &[&str], targets: &str| {
        let mut args = vec!["bench", "--profile", "short", "--targets", targets];
        args.extend(["--dir", p(dir.path()), "--matrix"]);
        args.extend(matrix);
        daemon.oxvirt(&args).error()
    };
    assert_eq!(
        bench(&["speed=fast"], "qemu"),
        "error: --matrix 'speed=fast': unknown axis 'speed' (known: cache, io, format, bus)"
    );
    assert_eq!(
        bench(&["io=native", "cache=none,fast"], "qemu"),
        "error: --matrix 'cache=none,fast': unknown cache 'fast' (known: none, writeback)"
    );
    assert_eq!(
        bench(&["io=threads"], "host"),
        "error: --matrix measures the qemu target: add qemu to --targets"
    );
    assert!(entries(dir.path()).is_empty());
    assert_no_guest(&daemon);
}
