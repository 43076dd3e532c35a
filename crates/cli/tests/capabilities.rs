//! CPU models against a private oxvirtd and this host's QEMU, with Debian's virsh (libvirt's
//! embedded QEMU driver) as the peer: `cpu-models x86_64` is virsh's list but for the models
//! one side's sources lack; `hypervisor-cpu-baseline` over three hosts (Haswell, Skylake-SP,
//! EPYC: tests/cpus/) gives a CPU each of them runs, agrees with libvirt where libvirt answers,
//! and a guest defined with it boots under TCG with that model; `hypervisor-cpu-compare`
//! gives virsh's verdicts and names what the host lacks; bad files are named with their line.
//! `capabilities` and `domcapabilities` parse as XML and have libvirt's element structure but
//! for the differences listed here with their reasons, and the values both sides read from
//! the same host and the same QEMU binary agree.

#[allow(dead_code)]
mod support;

use std::collections::{BTreeMap, BTreeSet};
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

/// Every element path of an XML document (`capabilities/host/cpu/feature`), with the `name`
/// of `<mode>` and `<enum>` kept (`.../enum[@name='bus']/value`): the document's structure.
/// Parsing is through oxvirt's reader of untrusted XML, under its limits.
fn element_paths(xml: &str) -> BTreeSet<String> {
    let document = oxvirt_xml::parse(xml).unwrap_or_else(|err| panic!("{err}: {xml}"));
    document
        .descendants()
        .filter(|n| n.is_element())
        .map(|node| {
            let mut parts: Vec<String> = node
                .ancestors()
                .filter(|n| n.is_element())
                .map(|n| match (n.tag_name().name(), n.attribute("name")) {
                    (tag @ ("mode" | "enum"), Some(name)) => format!("{tag}[@name='{name}']"),
                    (tag, _) => tag.to_string(),
                })
                .collect();
            parts.reverse();
            parts.join("/")
        })
        .collect()
}

/// Paths only in `ours` and only in `theirs`.
fn path_differences(ours: &str, theirs: &str) -> (Vec<String>, Vec<String>) {
    let (ours, theirs) = (element_paths(ours), element_paths(theirs));
    (
        ours.difference(&theirs).cloned().collect(),
        theirs.difference(&ours).cloned().collect(),
    )
}

/// The listed differences, each with its reason; the reasons are for the reader.
fn allowed(list: &[(&str, &str)]) -> Vec<String> {
    list.iter().map(|(path, _why)| path.to_string()).collect()
}

/// The attributes of the first element at `path` (tag names from the root's child down).
fn attrs_at(xml: &str, path: &[&str]) -> BTreeMap<String, String> {
    let document = oxvirt_xml::parse(xml).unwrap();
    let mut node = document.root_element();
    for tag in path {
        node = node
            .children()
            .find(|c| c.has_tag_name(*tag))
            .unwrap_or_else(|| panic!("no {path:?} in {xml}"));
    }
    node.attributes()
        .map(|a| (a.name().to_string(), a.value().to_string()))
        .chain(
            node.text()
                .map(|t| ("#text".to_string(), t.trim().to_string())),
        )
        .collect()
}

fn text_at(xml: &str, path: &[&str]) -> String {
    attrs_at(xml, path).remove("#text").unwrap_or_default()
}

/// The x86_64 `<guest>`'s machines (name, canonical, maxCpus, deprecated) and domain types.
type Machines = Vec<(String, Option<String>, Option<String>, Option<String>)>;
fn x86_64_guest(xml: &str) -> (Machines, Vec<String>, Vec<String>) {
    let document = oxvirt_xml::parse(xml).unwrap();
    let arch = document
        .descendants()
        .find(|n| n.has_tag_name("arch") && n.attribute("name") == Some("x86_64"))
        .unwrap_or_else(|| panic!("no x86_64 guest in {xml}"));
    let machines = arch
        .children()
        .filter(|n| n.has_tag_name("machine"))
        .map(|m| {
            let attr = |name: &str| m.attribute(name).map(String::from);
            (
                m.text().unwrap_or_default().to_string(),
                attr("canonical"),
                attr("maxCpus"),
                attr("deprecated"),
            )
        })
        .collect();
    let types = arch
        .children()
        .filter(|n| n.has_tag_name("domain"))
        .filter_map(|n| n.attribute("type").map(String::from))
        .collect();
    let features = arch
        .parent()
        .into_iter()
        .flat_map(|guest| guest.children())
        .filter(|n| n.has_tag_name("features"))
        .flat_map(|f| f.children().filter(|n| n.is_element()))
        .map(|n| {
            let mut text = n.tag_name().name().to_string();
            for a in n.attributes() {
                text += &format!(" {}={}", a.name(), a.value());
            }
            text
        })
        .collect();
    (machines, types, features)
}

#[test]
fn capabilities_have_libvirts_structure_and_the_same_host_and_machines() {
    let daemon = Daemon::start();
    let ours = daemon.oxvirt(&["capabilities"]).ok();
    assert!(ours.ends_with("</capabilities>\n\n"), "virsh's blank line");
    let (code, theirs, err) = virsh(&daemon.dir.path().join("libvirt"), &["capabilities"]);
    assert_eq!(code, Some(0), "{err}");

    let (only_ours, only_theirs) = path_differences(&ours, &theirs);
    assert_eq!(only_ours, Vec::<String>::new());
    assert_eq!(
        only_theirs,
        allowed(&[
            (
                "capabilities/guest/features/nonpae",
                "libvirt's i686 guest; oxvirt's QEMU engine runs x86_64 guests only"
            ),
            ("capabilities/guest/features/pae", "the same i686 guest"),
            (
                "capabilities/host/migration_features",
                "oxvirt has no migration between hosts (no `migrate` verb)"
            ),
            ("capabilities/host/migration_features/live", "the same"),
            (
                "capabilities/host/migration_features/uri_transports",
                "the same"
            ),
            (
                "capabilities/host/migration_features/uri_transports/uri_transport",
                "the same"
            ),
            (
                "capabilities/host/secmodel/baselabel",
                "libvirt's DAC model runs QEMU as its own user; oxvirt relabels nothing \
                 (secmodel none only)"
            ),
        ])
    );

    // The same machine, read by both.
    for path in [
        &["host", "cpu", "arch"][..],
        &["host", "cpu", "vendor"],
        &["host", "cpu", "microcode"],
        &["host", "cpu", "signature"],
        &["host", "cpu", "counter"],
        &["host", "cpu", "topology"],
        &["host", "cpu", "maxphysaddr"],
        &["host", "iommu"],
        &["host", "topology", "cells"],
        &["host", "topology", "cells", "cell"],
        &["host", "topology", "cells", "cell", "memory"],
        &["host", "topology", "cells", "cell", "distances", "sibling"],
        &["host", "topology", "cells", "cell", "cpus"],
        &["host", "cache", "bank"],
    ] {
        assert_eq!(attrs_at(&ours, path), attrs_at(&theirs, path), "{path:?}");
    }
    let cells = |xml: &str| {
        let document = oxvirt_xml::parse(xml).unwrap();
        document
            .descendants()
            .filter(|n| n.has_tag_name("cell") || n.has_tag_name("pages"))
            .filter(|n| n.ancestors().any(|a| a.has_tag_name("topology")))
            .flat_map(|n| n.descendants())
            .filter(|n| n.has_tag_name("cpu") || n.has_tag_name("pages"))
            .map(|n| {
                n.attributes()
                    .map(|a| format!("{}={}", a.name(), a.value()))
                    .chain(n.text().map(String::from))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(cells(&ours), cells(&theirs));
    let page_sizes = |xml: &str| {
        oxvirt_xml::parse(xml)
            .unwrap()
            .descendants()
            .filter(|n| {
                n.has_tag_name("pages") && n.parent().is_some_and(|p| p.has_tag_name("cpu"))
            })
            .filter_map(|n| n.attribute("size").map(String::from))
            .collect::<Vec<_>>()
    };
    assert_eq!(page_sizes(&ours), page_sizes(&theirs));
    assert_eq!(
        text_at(&ours, &["host", "secmodel", "model"]),
        "none",
        "oxvirt's only model"
    );

    // The same QEMU binary: its emulator path, machine types (canonical names, aliases,
    // maxCpus, deprecation, in libvirt's order) and guest features.
    let (our_machines, our_types, our_features) = x86_64_guest(&ours);
    let (their_machines, their_types, their_features) = x86_64_guest(&theirs);
    assert_eq!(our_machines, their_machines);
    assert!(our_machines.iter().any(|m| m.0 == "q35"));
    assert_eq!(our_features, their_features);
    assert_eq!(
        text_at(&ours, &["guest", "arch", "emulator"]),
        text_at(&theirs, &["guest", "arch", "emulator"]).replace("i386", "x86_64")
    );
    // qemu (TCG) is offered; kvm is not, as this host's /dev/kvm is kvm_pvm, not hardware
    // KVM. libvirt offers kvm because /dev/kvm opens.
    assert_eq!(our_types, ["qemu"]);
    assert_eq!(their_types, ["qemu", "kvm"]);
}

/// The values of each `<enum>` of a domcapabilities document, by its path.
fn enums(xml: &str) -> BTreeMap<String, BTreeSet<String>> {
    let document = oxvirt_xml::parse(xml).unwrap();
    let mut map = BTreeMap::new();
    for node in document.descendants().filter(|n| n.has_tag_name("enum")) {
        let parent = node
            .parent()
            .map(|p| p.tag_name().name())
            .unwrap_or_default();
        let values = node
            .children()
            .filter(|c| c.has_tag_name("value"))
            .filter_map(|c| c.text().map(String::from))
            .collect();
        map.insert(
            format!("{parent}/{}", node.attribute("name").unwrap_or_default()),
            values,
        );
    }
    map
}

#[test]
fn domcapabilities_have_libvirts_structure_and_agree_on_the_same_qemu() {
    let daemon = Daemon::start();
    let root = daemon.dir.path().join("libvirt");
    let ours = daemon
        .oxvirt(&["domcapabilities", "--virttype", "qemu"])
        .ok();
    let (code, theirs, err) = virsh(&root, &["domcapabilities", "--virttype", "qemu"]);
    assert_eq!(code, Some(0), "{err}");

    let (only_ours, only_theirs) = path_differences(&ours, &theirs);
    assert_eq!(
        only_ours,
        allowed(&[
            (
                "domainCapabilities/devices/crypto",
                "newer libvirt (10.x) lists <crypto>; Debian's 9.0 does not (oxvirt: supported='no')"
            ),
            (
                "domainCapabilities/devices/hostdev/enum[@name='pciBackend']/value",
                "oxvirt accepts <driver name='vfio'/> at define; libvirt lists no backend \
                 where the host has no VFIO (checked at start by oxvirt)"
            ),
            (
                "domainCapabilities/devices/interface",
                "newer libvirt (10.x) lists interface backends; Debian's 9.0 does not"
            ),
            (
                "domainCapabilities/devices/interface/enum[@name='backendType']",
                "the same"
            ),
            (
                "domainCapabilities/devices/interface/enum[@name='backendType']/value",
                "the same"
            ),
            (
                "domainCapabilities/devices/panic",
                "newer libvirt (10.x) lists panic models; oxvirt has no <panic> (supported='no')"
            ),
            (
                "domainCapabilities/features/async-teardown",
                "newer libvirt (10.x) lists it; oxvirt does not accept it (supported='no')"
            ),
        ])
    );
    // libvirt lists the TPM emulator's versions only when swtpm is installed (Debian's
    // libvirt recommends it; setup.sh installs libvirt without recommends, and a host may have
    // it anyway).
    let swtpm = Path::new("/usr/bin/swtpm").exists();
    let tpm_versions = [
        (
            "domainCapabilities/devices/tpm/enum[@name='backendVersion']",
            "oxvirt has no <tpm> (supported='no'); libvirt lists it with swtpm installed",
        ),
        (
            "domainCapabilities/devices/tpm/enum[@name='backendVersion']/value",
            "the same",
        ),
    ];
    let mut expected_only_theirs = allowed(&[
        (
            "domainCapabilities/devices/disk/enum[@name='model']/value",
            "oxvirt's <disk> has no model= attribute (an empty enum)",
        ),
        (
            "domainCapabilities/devices/filesystem/enum[@name='driverType']",
            "oxvirt has no <filesystem> (supported='no')",
        ),
        (
            "domainCapabilities/devices/filesystem/enum[@name='driverType']/value",
            "the same",
        ),
        (
            "domainCapabilities/devices/tpm/enum[@name='backendModel']",
            "oxvirt has no <tpm> (supported='no')",
        ),
        (
            "domainCapabilities/devices/tpm/enum[@name='backendModel']/value",
            "the same",
        ),
        (
            "domainCapabilities/devices/tpm/enum[@name='model']",
            "the same",
        ),
        (
            "domainCapabilities/devices/tpm/enum[@name='model']/value",
            "the same",
        ),
        (
            "domainCapabilities/features/hyperv/enum[@name='features']",
            "oxvirt has no Hyper-V enlightenments (supported='no')",
        ),
        (
            "domainCapabilities/features/hyperv/enum[@name='features']/value",
            "the same",
        ),
    ]);
    if swtpm {
        expected_only_theirs.extend(allowed(&tpm_versions));
        expected_only_theirs.sort();
    }
    assert_eq!(only_theirs, expected_only_theirs);

    // The same QEMU and host: binary, default machine, vCPU limit, firmware files, memory
    // sources.
    for path in ["path", "domain", "machine", "arch"] {
        assert_eq!(text_at(&ours, &[path]), text_at(&theirs, &[path]), "{path}");
    }
    assert_eq!(text_at(&ours, &["machine"]), "pc-i440fx-7.2");
    assert_eq!(attrs_at(&ours, &["vcpu"]), attrs_at(&theirs, &["vcpu"]));
    assert_eq!(
        text_at(&ours, &["os", "loader", "value"]),
        text_at(&theirs, &["os", "loader", "value"])
    );
    // Every value oxvirt lists, QEMU (as libvirt sees it) has too, but for what libvirt
    // leaves out for its own reasons.
    let (our_enums, their_enums) = (enums(&ours), enums(&theirs));
    for (name, values) in &our_enums {
        let theirs = their_enums.get(name).cloned().unwrap_or_default();
        let extra: Vec<&String> = values.difference(&theirs).collect();
        let expected: &[&str] = match name.as_str() {
            // libvirt 9.0 lists efi only (bios is what no firmware= means).
            "os/firmware" => &["bios"],
            "hostdev/pciBackend" => &["vfio"],
            "interface/backendType" => &["default"],
            _ => &[],
        };
        assert_eq!(extra, expected, "{name}: {values:?} against {theirs:?}");
    }
    assert_eq!(
        our_enums["memoryBacking/sourceType"],
        their_enums["memoryBacking/sourceType"]
    );
    assert_eq!(our_enums["disk/bus"].len(), 5, "ide scsi virtio usb sata");
    assert!(
        !our_enums["disk/bus"].contains("fdc"),
        "no floppies in oxvirt"
    );
    // The custom models are QEMU's, with cpu-models' differences to libvirt's map.
    let models = |xml: &str| {
        oxvirt_xml::parse(xml)
            .unwrap()
            .descendants()
            .filter(|n| n.has_tag_name("model") && n.attribute("usable").is_some())
            .filter_map(|n| n.text().map(String::from))
            .collect::<BTreeSet<_>>()
    };
    let (our_models, their_models) = (models(&ours), models(&theirs));
    assert_eq!(
        our_models.difference(&their_models).collect::<Vec<_>>(),
        ["Denverton", "KnightsMill"]
    );

    // The host-model CPU is the CPU the hypervisor provides, as a model plus features: the
    // comparison reads it back as identical.
    let file = daemon.dir.path().join("domcaps.xml");
    std::fs::write(&file, &ours).unwrap();
    let verdict = daemon
        .oxvirt(&["hypervisor-cpu-compare", file.to_str().unwrap()])
        .ok();
    assert!(verdict.contains("is identical to"), "{verdict}");

    // Another machine of the same QEMU, by its alias.
    let ours = daemon.oxvirt(&["domcapabilities", "--machine", "q35"]).ok();
    let (code, theirs, err) = virsh(
        &root,
        &["domcapabilities", "--virttype", "qemu", "--machine", "q35"],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(text_at(&ours, &["machine"]), "pc-q35-7.2");
    assert_eq!(text_at(&ours, &["machine"]), text_at(&theirs, &["machine"]));
    assert_eq!(attrs_at(&ours, &["vcpu"]), attrs_at(&theirs, &["vcpu"]));
    assert!(element_paths(&ours).contains("domainCapabilities/cpu/mode[@name='custom']/model"));
}

#[test]
fn bad_capability_requests_are_refused_with_what_was_wrong() {
    let daemon = Daemon::start();
    let error = daemon
        .oxvirt(&["domcapabilities", "--arch", "aarch64"])
        .error();
    assert!(
        error.contains("architecture 'aarch64'") && error.contains("x86_64"),
        "{error}"
    );
    let error = daemon
        .oxvirt(&["domcapabilities", "--virttype", "xen"])
        .error();
    assert!(
        error.contains("unknown virttype 'xen': expected qemu or kvm"),
        "{error}"
    );
    let error = daemon
        .oxvirt(&["domcapabilities", "--machine", "pc-i440fx-99.9"])
        .error();
    assert!(
        error.contains("unknown machine type 'pc-i440fx-99.9'"),
        "{error}"
    );
    // kvm needs hardware KVM, which this host's kvm_pvm is not.
    let error = daemon
        .oxvirt(&["domcapabilities", "--virttype", "kvm"])
        .error();
    assert!(
        error.contains("virttype kvm is not available") && error.contains("kvm_pvm"),
        "{error}"
    );
    let error = daemon
        .oxvirt(&["domcapabilities", "--emulatorbin", "/bin/true"])
        .error();
    assert!(error.contains("emulator '/bin/true'"), "{error}");
    let error = daemon
        .oxvirt(&["capabilities", "--xpath", "//cpu/arch"])
        .error();
    assert!(
        error.contains("--xpath '//cpu/arch' is not supported"),
        "{error}"
    );
    let error = daemon.oxvirt(&["domcapabilities", "--wrap"]).error();
    assert!(error.contains("--wrap"), "{error}");
}
