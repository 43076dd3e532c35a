//! CPU models against a private oxvirtd and this host's QEMU, with Debian's virsh (libvirt's
//! embedded QEMU driver) as the peer: `cpu-models x86_64` is virsh's list but for the models
//! one side's sources lack; `hypervisor-cpu-baseline` over three hosts (Haswell, Skylake-SP,
//! EPYC: tests/cpus/) gives a CPU each of them runs, agrees with libvirt where libvirt answers,
//! and a guest defined with it boots under TCG with that model; `hypervisor-cpu-compare`
//! gives virsh's verdicts and names what the host lacks; bad files are named with their line.

#[allow(dead_code)]
mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use oxvirt_testkit::{guest_kit, BOOT_MARKER, PROMPT};
use support::{guest_xml, make_disk, Daemon};

const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
const UUID: &str = "6a1c3e5f-7b9d-4f1a-8c3e-5a7b9c1d3e5f";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/cpus")
        .join(name)
}

/// Debian's virsh on an embedded driver rooted in `root`: (exit code, stdout, stderr).
fn virsh(root: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    std::fs::create_dir_all(root).unwrap();
    let output = Command::new("virsh")
        .arg("-c")
        .arg(format!("qemu:///embed?root={}", root.display()))
        .args(args)
        .output()
        .expect("run virsh (Debian's libvirt-clients, installed by scripts/setup.sh)");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn lines(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// The model and the required features of a `<cpu>` printed by a baseline.
fn model_and_features(xml: &str) -> (String, BTreeSet<String>) {
    let model = xml
        .split_once("'>")
        .and_then(|_| xml.split_once("<model fallback='forbid'>"))
        .and_then(|(_, rest)| rest.split_once("</model>"))
        .map(|(model, _)| model.to_string())
        .unwrap_or_else(|| panic!("no model in {xml}"));
    let features = xml
        .lines()
        .filter_map(|l| l.trim().strip_prefix("<feature policy='require' name='"))
        .filter_map(|l| l.strip_suffix("'/>"))
        .map(String::from)
        .collect();
    (model, features)
}

#[test]
fn cpu_models_are_virshs_list_less_what_either_side_lacks() {
    let daemon = Daemon::start();
    let ours = daemon.oxvirt(&["cpu-models", "x86_64"]).ok();
    assert!(ours.ends_with("\n\n"), "virsh's blank line after the list");
    let (code, theirs, err) = virsh(
        &daemon.dir.path().join("libvirt"),
        &["cpu-models", "x86_64"],
    );
    assert_eq!(code, Some(0), "{err}");
    let (ours, theirs) = (lines(&ours), lines(&theirs));
    let only_ours: Vec<&String> = ours.difference(&theirs).collect();
    let only_theirs: Vec<&String> = theirs.difference(&ours).collect();
    // QEMU 7.2 has these; libvirt 9.0's map has no entry for them.
    assert_eq!(only_ours, ["Denverton", "KnightsMill"]);
    // libvirt's map has these; QEMU 7.2 dropped Icelake-Client and never had the others.
    assert_eq!(
        only_theirs,
        [
            "Icelake-Client",
            "Icelake-Client-noTSX",
            "cpu64-rhel5",
            "cpu64-rhel6",
            "pentiumpro"
        ]
    );
    // Asked of QEMU once and kept by its version.
    let cache: Vec<String> = std::fs::read_dir(daemon.dir.path().join("state/cache"))
        .expect("cache dir")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        cache.len() == 1 && cache[0].starts_with("cpu-models-x86_64-"),
        "{cache:?}"
    );
    let again = daemon.oxvirt(&["cpu-models", "x86_64"]).ok();
    assert_eq!(lines(&again), ours);

    let error = daemon.oxvirt(&["cpu-models", "aarch64"]).error();
    assert!(error.contains("'aarch64'"), "{error}");
}

#[test]
fn baseline_of_three_hosts_runs_on_each_agrees_with_libvirt_and_boots() {
    let daemon = Daemon::start();
    let dir = daemon.dir.path();
    let hosts = ["haswell.xml", "skylake.xml", "epyc.xml"].map(fixture);
    let host_args: Vec<&str> = hosts.iter().map(|p| p.to_str().unwrap()).collect();
    let mut args = vec!["hypervisor-cpu-baseline"];
    args.extend(&host_args);
    let run = daemon.oxvirt(&args);
    let report = run.stderr.clone();
    let baseline = run.ok();
    assert!(
        baseline.starts_with("<cpu mode='custom' match='exact'>\n  <model fallback='forbid'>"),
        "{baseline}"
    );
    let (model, extra) = model_and_features(&baseline);
    // One line per host; the AMD host lacks Intel's vmx, the Intel hosts AMD's svm.
    let report: Vec<&str> = report.lines().collect();
    assert_eq!(report.len(), 3, "{report:?}");
    assert!(
        report[0].starts_with("host 1 (") && report[0].contains(" svm"),
        "{report:?}"
    );
    assert!(
        report[2].starts_with("host 3 (") && report[2].contains(" vmx"),
        "{report:?}"
    );

    // Every host runs it: its baseline with the result is the result again.
    let all = daemon.oxvirt(&[&args[..], &["--features"]].concat()).ok();
    let (_, all_features) = model_and_features(&all);
    assert!(all_features.is_superset(&extra));
    let baseline_file = dir.join("baseline.xml");
    std::fs::write(&baseline_file, &baseline).unwrap();
    for host in &host_args {
        let again = daemon
            .oxvirt(&[
                "hypervisor-cpu-baseline",
                host,
                baseline_file.to_str().unwrap(),
                "--features",
            ])
            .ok();
        assert_eq!(model_and_features(&again).1, all_features, "{host}");
    }
    // A model some host cannot run is refused, naming that host.
    let error = daemon
        .oxvirt(&[&args[..], &["--model", "Skylake-Server"]].concat())
        .error();
    assert!(error.contains("haswell.xml"), "{error}");

    // libvirt refuses hosts of two vendors; for the two Intel hosts both pick a model and
    // the same features every host has (compared expanded, --features, as the two sides'
    // model definitions differ in detail): see docs/cpu-models.md.
    let root = dir.join("libvirt");
    let both = dir.join("intel.xml");
    let intel = [&hosts[0], &hosts[1]]
        .map(|p| std::fs::read_to_string(p).unwrap())
        .concat();
    std::fs::write(&both, intel).unwrap();
    let all_three = dir.join("all.xml");
    let texts = hosts
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect::<String>();
    std::fs::write(&all_three, texts).unwrap();
    let (code, _, err) = virsh(
        &root,
        &[
            "hypervisor-cpu-baseline",
            all_three.to_str().unwrap(),
            "--virttype",
            "qemu",
        ],
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("CPU vendors do not match"), "{err}");
    let (code, theirs, err) = virsh(
        &root,
        &[
            "hypervisor-cpu-baseline",
            both.to_str().unwrap(),
            "--virttype",
            "qemu",
            "--features",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    let ours = daemon
        .oxvirt(&[
            "hypervisor-cpu-baseline",
            both.to_str().unwrap(),
            "--features",
        ])
        .ok();
    let (their_model, theirs) = model_and_features(&theirs);
    let (our_model, ours) = model_and_features(&ours);
    assert_eq!(their_model, "Haswell-noTSX");
    assert_eq!(our_model, "Haswell-noTSX");
    let only_ours: Vec<&str> = ours.difference(&theirs).map(String::as_str).collect();
    let only_theirs: Vec<&str> = theirs.difference(&ours).map(String::as_str).collect();
    // libvirt's `hypervisor-` baseline drops (`policy='disable'`) what TCG's max lacks: invpcid,
    // pcid, tsc-deadline, x2apic; arat, f16c and rdrand are in QEMU's definitions of the hosts'
    // models, not in libvirt's map. Nothing libvirt requires is missing from ours.
    assert_eq!(
        (only_ours, only_theirs),
        (
            vec![
                "arat",
                "f16c",
                "invpcid",
                "pcid",
                "rdrand",
                "tsc-deadline",
                "x2apic"
            ],
            vec![]
        )
    );

    // A guest defined with the baseline boots under TCG and sees the model.
    let disk = make_disk(dir, "disk.raw", 2048);
    let cpu = baseline.trim_end();
    let xml = guest_xml("base", UUID, &guest_kit(), &disk, 1)
        .replace("  <os>\n", &format!("  {cpu}\n  <os>\n"));
    daemon.define("base.xml", &xml).1.ok();
    let mut console = daemon.start_with_console("base");
    console.expect_text(BOOT_MARKER, BOOT_TIMEOUT);
    console.expect_text(PROMPT, BOOT_TIMEOUT);
    let flags = console.run("grep -m1 '^flags' /proc/cpuinfo", 1);
    for feature in ["sse2", "avx", "avx2", "bmi1", "bmi2", "fma", "movbe"] {
        assert!(flags.split_whitespace().any(|f| f == feature), "{flags}");
    }
    // QEMU 7.2's models and the fixtures make it SandyBridge plus later features (Haswell's
    // AVX2 and BMI among them, which TCG emulates); the guest sees the model's name (QEMU's
    // model-id, where max says "QEMU TCG CPU") and the added features.
    assert_eq!(model, "SandyBridge");
    assert!(
        extra.contains("avx2") && extra.contains("bmi2"),
        "{baseline}"
    );
    let name = console.run("grep -m1 'model name' /proc/cpuinfo", 2);
    assert!(name.contains("(Sandy Bridge)"), "{name}");
}

#[test]
fn compare_gives_virshs_verdicts_and_names_what_the_host_lacks() {
    let daemon = Daemon::start();
    let dir = daemon.dir.path();
    let root = dir.join("libvirt");
    let small = dir.join("qemu64.xml");
    std::fs::write(&small, "<cpu>\n  <model>qemu64</model>\n</cpu>\n").unwrap();
    let ours = daemon
        .oxvirt(&["hypervisor-cpu-compare", small.to_str().unwrap()])
        .ok();
    let (code, theirs, err) = virsh(
        &root,
        &[
            "hypervisor-cpu-compare",
            small.to_str().unwrap(),
            "--virttype",
            "qemu",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(ours, theirs);

    let skylake = fixture("skylake.xml");
    let skylake = skylake.to_str().unwrap();
    let run = daemon.oxvirt(&["hypervisor-cpu-compare", skylake]);
    let (code, theirs, _) = virsh(
        &root,
        &["hypervisor-cpu-compare", skylake, "--virttype", "qemu"],
    );
    assert_eq!((run.code, code), (Some(1), Some(1)));
    assert_eq!(run.stdout, theirs);
    assert!(
        run.stderr
            .contains("Host CPU does not provide required features: ")
            && run.stderr.contains("avx512f"),
        "{run:?}"
    );
    let error = daemon
        .oxvirt(&["hypervisor-cpu-compare", skylake, "--error"])
        .error();
    assert!(
        error.contains("Failed to compare hypervisor CPU with"),
        "{error}"
    );
    assert!(error.contains("avx512f"), "{error}");

    // Whole documents, as virsh reads them: libvirt's own domcapabilities (its host-model CPU
    // is TCG's max as libvirt sees it) is identical for both; in capabilities the host's <cpu>
    // counts, not the <cpu id=...> entries of its NUMA cells.
    let (code, domcaps, err) = virsh(&root, &["domcapabilities", "--virttype", "qemu"]);
    assert_eq!(code, Some(0), "{err}");
    let domcaps_file = dir.join("domcaps.xml");
    std::fs::write(&domcaps_file, &domcaps).unwrap();
    let domcaps_file = domcaps_file.to_str().unwrap();
    let ours = daemon
        .oxvirt(&["hypervisor-cpu-compare", domcaps_file])
        .ok();
    let (code, theirs, err) = virsh(
        &root,
        &["hypervisor-cpu-compare", domcaps_file, "--virttype", "qemu"],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(ours, theirs);
    assert!(ours.contains("is identical to"), "{ours}");
    let (code, caps, err) = virsh(&root, &["capabilities"]);
    assert_eq!(code, Some(0), "{err}");
    let caps_file = dir.join("caps.xml");
    std::fs::write(&caps_file, &caps).unwrap();
    let run = daemon.oxvirt(&[
        "hypervisor-cpu-baseline",
        caps_file.to_str().unwrap(),
        domcaps_file,
    ]);
    let line_of = |text: &str, start: &str| {
        1 + text
            .lines()
            .position(|l| l.trim_start().starts_with(start))
            .unwrap_or_else(|| panic!("no {start} in {text}"))
    };
    let hosts: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(hosts.len(), 2, "{run:?}");
    let host_cpu = line_of(&caps, "<cpu>");
    let host_model = line_of(&domcaps, "<mode name='host-model'");
    assert!(
        hosts[0].starts_with(&format!("host 1 ({}:{host_cpu})", caps_file.display())),
        "{run:?}"
    );
    assert!(
        hosts[1].starts_with(&format!("host 2 ({domcaps_file}:{host_model})")),
        "{run:?}"
    );
    assert!(run.ok().contains("<model fallback='forbid'>"));

    // virttype kvm needs hardware KVM; this host's /dev/kvm (kvm_pvm) is not.
    let error = daemon
        .oxvirt(&["hypervisor-cpu-compare", skylake, "--virttype", "kvm"])
        .error();
    assert!(error.contains("virttype kvm is not available"), "{error}");
}

#[test]
fn files_that_are_not_cpu_descriptions_are_named_with_their_line() {
    let daemon = Daemon::start();
    let dir = daemon.dir.path();
    let garbage = dir.join("garbage.xml");
    std::fs::write(
        &garbage,
        "<cpu>\n  <model>EPYC</model>\n  <feature name='x'>\n</cpu>\n",
    )
    .unwrap();
    let error = daemon
        .oxvirt(&["hypervisor-cpu-baseline", garbage.to_str().unwrap()])
        .error();
    assert!(
        error.contains("garbage.xml: malformed XML at line 4"),
        "{error}"
    );
    let domain = dir.join("domain.xml");
    std::fs::write(
        &domain,
        "<?xml version='1.0'?>\n<domain type='qemu'>\n</domain>\n",
    )
    .unwrap();
    let error = daemon
        .oxvirt(&["hypervisor-cpu-compare", domain.to_str().unwrap()])
        .error();
    assert!(error.contains("domain.xml: line 2: no <cpu>"), "{error}");
    let unknown = dir.join("unknown.xml");
    std::fs::write(&unknown, "<cpu>\n  <model>Pentium-9000</model>\n</cpu>\n").unwrap();
    let error = daemon
        .oxvirt(&["hypervisor-cpu-baseline", unknown.to_str().unwrap()])
        .error();
    assert!(
        error.contains("line 2: unknown CPU model 'Pentium-9000'"),
        "{error}"
    );
}
