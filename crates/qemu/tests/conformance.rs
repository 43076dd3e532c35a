//! Conformance with libvirt's QEMU command lines (`../shared/conformance/libvirt-qemuxmlconf`
//! beside the repository, or `$OXVIRT_LIBVIRT_CORPUS`: libvirt's own LGPL-2.1-or-later test data,
//! an input `NAME.xml` and the `NAME.x86_64-latest.args` libvirt generates from it, see INDEX.md
//! there). Not part of a plain `cargo test`: `scripts/conformance.sh` runs it (`--ignored`).
//!
//! For each case with `.args` that `oxvirt-domain` parses and this engine translates (a case
//! the engine refuses with `Unsupported` is listed, not failed), the options whose *meaning*
//! must agree are compared; names of nodes and ids, monitor plumbing (libvirt passes fds) and
//! libvirt-only extras (`-sandbox`, secrets, `-S`) are not:
//! - `-accel`; `-m` (size in KiB, slots, maxmem); `-smp` (count, maxcpus, sockets, dies, cores,
//!   threads); `-rtc base`; presence of `-no-reboot`; `-boot` menu and reboot-timeout;
//! - `-cpu`: the model name (custom mode), and every feature the domain names, except policy
//!   `optional` (libvirt resolves it against the test host's CPU);
//! - each disk, matched in definition order: frontend driver, bootindex, `write-cache`, PCI
//!   address, bus and unit, and on its block nodes `cache.direct`, `cache.no-flush`, the
//!   protocol driver, the format driver, `read-only` and the file name or what locates a
//!   network disk's image (URL, server, export, user, ...);
//! - each NIC, in order: driver, MAC, bootindex, PCI address, netdev type;
//! - the memballoon: presence, `deflate-on-oom`, PCI address;
//! - the `iothread` objects, in order (`-object {"qom-type":"iothread","id":"iothreadN"}`);
//! - `-vnc` for UNIX-socket listens.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oxvirt_qemu::{command_line, Accel, QemuError, RunPaths};
use serde_json::Value;

/// The corpus directory; panics, saying where it comes from, when it is missing.
fn corpus() -> PathBuf {
    let dir = std::env::var_os("OXVIRT_LIBVIRT_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../../shared/conformance/libvirt-qemuxmlconf")
        });
    assert!(
        dir.join("INDEX.md").is_file(),
        "libvirt's qemuxmlconf corpus is missing at {}: it is the project's shared folder \
         (shared/conformance/libvirt-qemuxmlconf beside the repository, as CI lays it out), files \
         copied from libvirt's tests/qemuxmlconfdata; put it there or set OXVIRT_LIBVIRT_CORPUS",
        dir.display()
    );
    dir
}

/// (option, value) pairs of a libvirt `.args` file (environment and emulator lines dropped).
fn parse_libvirt_args(text: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\\').trim();
        if !line.starts_with('-') {
            continue;
        }
        let (option, value) = match line.split_once(' ') {
            Some((option, value)) => (option, Some(unquote(value))),
            None => (line, None),
        };
        out.push((option.to_string(), value));
    }
    out
}

fn unquote(value: &str) -> String {
    value
        .strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .unwrap_or(value)
        .to_string()
}

fn pairs_of(args: &[String]) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut iter = args.iter().peekable();
    while let Some(option) = iter.next() {
        let takes_value = iter
            .peek()
            .is_some_and(|next| !next.starts_with('-') || next.starts_with("-1"));
        let value = if takes_value {
            iter.next().cloned()
        } else {
            None
        };
        out.push((option.clone(), value));
    }
    out
}

/// One side's command line, indexed for comparison.
struct Line {
    pairs: Vec<(String, Option<String>)>,
}

impl Line {
    fn values(&self, option: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(o, _)| o == option)
            .filter_map(|(_, v)| v.as_deref())
            .collect()
    }
    fn first(&self, option: &str) -> Option<&str> {
        self.values(option).first().copied()
    }
    fn has(&self, option: &str) -> bool {
        self.pairs.iter().any(|(o, _)| o == option)
    }
    fn json(&self, option: &str) -> Vec<Value> {
        self.values(option)
            .iter()
            .filter_map(|v| serde_json::from_str(v).ok())
            .collect()
    }
    fn blockdev(&self, node: &str) -> Option<Value> {
        self.json("-blockdev")
            .into_iter()
            .find(|b| b["node-name"] == node)
    }
    fn devices_with_driver(&self, drivers: &[&str]) -> Vec<Value> {
        self.json("-device")
            .into_iter()
            .filter(|d| {
                d["driver"]
                    .as_str()
                    .is_some_and(|driver| drivers.contains(&driver))
            })
            .collect()
    }
    /// The block nodes under a device: (top node, protocol node).
    fn chain(&self, device: &Value) -> Option<(Value, Value)> {
        let top = self.blockdev(device["drive"].as_str()?)?;
        let protocol = match top["file"].as_str() {
            Some(file) => self.blockdev(file)?,
            None => top.clone(),
        };
        Some((top, protocol))
    }
}

/// `key=value` items of a QemuOpts value after its first (implied) item.
fn opts(value: &str) -> (String, BTreeMap<String, String>) {
    let mut parts = value.split(',');
    let head = parts.next().unwrap_or_default().to_string();
    let mut map = BTreeMap::new();
    for part in parts {
        let (key, val) = part.split_once('=').unwrap_or((part, ""));
        map.insert(key.to_string(), val.to_string());
    }
    (head, map)
}

/// `-m` in KiB plus its slots/maxmem, from `size=Nk`, `size=NM` or `N` (MiB).
fn memory(value: &str) -> (u64, Option<String>, Option<u64>) {
    let kib = |text: &str| -> u64 {
        if let Some(k) = text.strip_suffix('k') {
            k.parse().unwrap()
        } else if let Some(m) = text.strip_suffix('M') {
            m.parse::<u64>().unwrap() * 1024
        } else if let Some(g) = text.strip_suffix('G') {
            g.parse::<u64>().unwrap() * 1024 * 1024
        } else {
            text.parse::<u64>().unwrap() * 1024
        }
    };
    let mut size = 0;
    let mut slots = None;
    let mut maxmem = None;
    for part in value.split(',') {
        match part.split_once('=') {
            Some(("size", v)) => size = kib(v),
            Some(("slots", v)) => slots = Some(v.to_string()),
            Some(("maxmem", v)) => maxmem = Some(kib(v)),
            None => size = kib(part),
            _ => {}
        }
    }
    (size, slots, maxmem)
}

struct Comparison<'a> {
    case: &'a str,
    mismatches: Vec<String>,
    compared: usize,
}

impl Comparison<'_> {
    fn check<T: PartialEq + std::fmt::Debug>(&mut self, what: &str, libvirt: T, ours: T) {
        self.compared += 1;
        if libvirt != ours {
            self.mismatches.push(format!(
                "{}: {what}: libvirt {libvirt:?}, oxvirt {ours:?}",
                self.case
            ));
        }
    }
}

fn compare(
    case: &str,
    domain: &oxvirt_qemu::Domain,
    libvirt: &Line,
    ours: &Line,
) -> Comparison<'static> {
    let case: &'static str = Box::leak(case.to_string().into_boxed_str());
    let mut cmp = Comparison {
        case,
        mismatches: Vec::new(),
        compared: 0,
    };

    cmp.check("-accel", libvirt.first("-accel"), ours.first("-accel"));
    if let (Some(l), Some(o)) = (libvirt.first("-m"), ours.first("-m")) {
        cmp.check("-m", memory(l), memory(o));
    }
    if let (Some(l), Some(o)) = (libvirt.first("-smp"), ours.first("-smp")) {
        let (l_count, mut l_opts) = opts(l);
        let (o_count, mut o_opts) = opts(o);
        cmp.check("-smp count", l_count, o_count);
        for map in [&mut l_opts, &mut o_opts] {
            map.remove("clusters");
            map.entry("dies".into()).or_insert_with(|| "1".into());
        }
        cmp.check("-smp topology", l_opts, o_opts);
    }
    if let (Some(l), Some(o)) = (libvirt.first("-rtc"), ours.first("-rtc")) {
        cmp.check(
            "-rtc base",
            opts(&format!("x,{l}")).1.get("base").cloned(),
            opts(&format!("x,{o}")).1.get("base").cloned(),
        );
    }
    cmp.check(
        "-no-reboot",
        libvirt.has("-no-reboot"),
        ours.has("-no-reboot"),
    );
    if let (Some(l), Some(o)) = (libvirt.first("-boot"), ours.first("-boot")) {
        let (_, l_opts) = opts(&format!("x,{l}"));
        let (_, o_opts) = opts(&format!("x,{o}"));
        for key in ["menu", "reboot-timeout", "splash-time"] {
            cmp.check(&format!("-boot {key}"), l_opts.get(key), o_opts.get(key));
        }
    }
    let iothreads = |line: &Line| -> Vec<Value> {
        line.json("-object")
            .into_iter()
            .filter(|o| o["qom-type"] == "iothread")
            .collect()
    };
    cmp.check("iothread objects", iothreads(libvirt), iothreads(ours));
    compare_cpu(&mut cmp, domain, libvirt, ours);
    compare_disks(&mut cmp, domain, libvirt, ours);
    compare_nics(&mut cmp, libvirt, ours);

    let balloon = |line: &Line| {
        line.devices_with_driver(&["virtio-balloon-pci"])
            .first()
            .map(|d| (d["deflate-on-oom"].clone(), d["addr"].clone()))
    };
    cmp.check("memballoon", balloon(libvirt), balloon(ours));
    if let Some(l) = libvirt.first("-vnc").filter(|v| v.starts_with("unix:")) {
        let l = l.split(',').next().map(str::to_string);
        cmp.check("-vnc", l, ours.first("-vnc").map(str::to_string));
    }
    cmp
}

fn compare_cpu(cmp: &mut Comparison, domain: &oxvirt_qemu::Domain, libvirt: &Line, ours: &Line) {
    let (Some(l), Some(o), Some(cpu)) = (
        libvirt.first("-cpu"),
        ours.first("-cpu"),
        domain.cpu.as_ref(),
    ) else {
        return;
    };
    let (l_model, l_features) = opts(l);
    let (o_model, o_features) = opts(o);
    if cpu.mode == oxvirt_domain::CpuMode::Custom {
        cmp.check("-cpu model", l_model, o_model);
    }
    for feature in &cpu.features {
        if feature.policy == oxvirt_domain::FeaturePolicy::Optional {
            continue;
        }
        let name = feature.name.replace('_', "-");
        cmp.check(
            &format!("-cpu {name}"),
            l_features.get(&name),
            o_features.get(&name),
        );
    }
}

const DISK_DRIVERS: &[&str] = &[
    "ide-hd",
    "ide-cd",
    "scsi-hd",
    "scsi-cd",
    "virtio-blk-pci",
    "usb-storage",
];

fn compare_disks(cmp: &mut Comparison, domain: &oxvirt_qemu::Domain, libvirt: &Line, ours: &Line) {
    let libvirt_disks = libvirt.devices_with_driver(DISK_DRIVERS);
    let our_disks = ours.devices_with_driver(DISK_DRIVERS);
    cmp.check(
        "disk count",
        libvirt_disks.len(),
        domain.devices.disks.len(),
    );
    for (disk, l) in domain.devices.disks.iter().zip(&libvirt_disks) {
        let dev = &disk.target.dev;
        let Some(o) = our_disks.iter().find(|d| d["id"] == dev.as_str()) else {
            cmp.check(&format!("disk {dev} present"), true, false);
            continue;
        };
        for key in [
            "driver",
            "bootindex",
            "write-cache",
            "addr",
            "bus",
            "unit",
            "scsi-id",
            "serial",
        ] {
            cmp.check(&format!("disk {dev} device {key}"), &l[key], &o[key]);
        }
        let (Some((l_top, l_proto)), Some((o_top, o_proto))) = (libvirt.chain(l), ours.chain(o))
        else {
            cmp.check(
                &format!("disk {dev} has a medium"),
                libvirt.chain(l).is_some(),
                ours.chain(o).is_some(),
            );
            continue;
        };
        // libvirt merges a raw format layer into the protocol node when it adds nothing.
        let format_of = |top: &Value| match top["file"] {
            Value::Null => Value::from("raw"),
            _ => top["driver"].clone(),
        };
        cmp.check(
            &format!("disk {dev} format"),
            format_of(&l_top),
            format_of(&o_top),
        );
        cmp.check(
            &format!("disk {dev} protocol"),
            &l_proto["driver"],
            &o_proto["driver"],
        );
        // A file's name, or what locates a network disk's image (secrets' ids are names).
        for key in [
            "filename",
            "url",
            "sslverify",
            "username",
            "server",
            "export",
            "portal",
            "target",
            "lun",
            "transport",
            "user",
            "pool",
            "image",
            "auth-client-required",
            "volume",
            "path",
        ] {
            cmp.check(
                &format!("disk {dev} protocol {key}"),
                &l_proto[key],
                &o_proto[key],
            );
        }
        cmp.check(
            &format!("disk {dev} read-only"),
            &l_top["read-only"],
            &o_top["read-only"],
        );
        for key in ["direct", "no-flush"] {
            cmp.check(
                &format!("disk {dev} cache.{key}"),
                &l_proto["cache"][key],
                &o_proto["cache"][key],
            );
        }
    }
}

fn compare_nics(cmp: &mut Comparison, libvirt: &Line, ours: &Line) {
    const NICS: &[&str] = &["virtio-net-pci", "e1000", "e1000e", "rtl8139"];
    let l_nics = libvirt.devices_with_driver(NICS);
    let o_nics = ours.devices_with_driver(NICS);
    cmp.check("nic count", l_nics.len(), o_nics.len());
    let netdev_type = |line: &Line, id: &Value| {
        line.json("-netdev")
            .into_iter()
            .find(|n| &n["id"] == id)
            .map(|n| n["type"].clone())
    };
    for (index, (l, o)) in l_nics.iter().zip(&o_nics).enumerate() {
        for key in [
            "driver",
            "mac",
            "bootindex",
            "addr",
            "mq",
            "vectors",
            "host_mtu",
        ] {
            cmp.check(&format!("nic {index} {key}"), &l[key], &o[key]);
        }
        cmp.check(
            &format!("nic {index} netdev type"),
            netdev_type(libvirt, &l["netdev"]),
            netdev_type(ours, &o["netdev"]),
        );
    }
}

#[test]
#[ignore = "needs libvirt's qemuxmlconf corpus: run scripts/conformance.sh"]
fn command_lines_agree_with_libvirt() {
    let dir = corpus();
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter_map(|name| name.strip_suffix(".x86_64-latest.args").map(str::to_string))
        .collect();
    cases.sort();

    let mut compared_cases = Vec::new();
    let mut not_compared = Vec::new();
    let mut mismatches = Vec::new();
    let mut checks = 0;
    for case in &cases {
        // launch-security-sev-direct's three files do not correspond (see INDEX.md).
        if case == "launch-security-sev-direct" {
            not_compared.push(format!(
                "{case}: input, xml and args from different libvirt versions"
            ));
            continue;
        }
        let xml = std::fs::read_to_string(dir.join(format!("{case}.xml"))).unwrap();
        let domain = match oxvirt_domain::parse_domain_xml(&xml) {
            Ok(domain) => domain,
            Err(err) => {
                not_compared.push(format!("{case}: domain crate: {err}"));
                continue;
            }
        };
        let accel = match domain.domain_type {
            oxvirt_domain::DomainType::Kvm => Accel::Kvm,
            oxvirt_domain::DomainType::Qemu => Accel::Tcg,
        };
        let ours = match command_line(&domain, &RunPaths::new("/run/oxvirt/conformance"), accel) {
            Ok(args) => Line {
                pairs: pairs_of(&args),
            },
            Err(err @ QemuError::Unsupported { .. }) => {
                not_compared.push(format!("{case}: {err}"));
                continue;
            }
            Err(err) => panic!("{case}: unexpected error {err}"),
        };
        let args = std::fs::read_to_string(dir.join(format!("{case}.x86_64-latest.args"))).unwrap();
        let libvirt = Line {
            pairs: parse_libvirt_args(&args),
        };
        let result = compare(case, &domain, &libvirt, &ours);
        checks += result.compared;
        mismatches.extend(result.mismatches);
        compared_cases.push(case.clone());
    }
    println!(
        "compared {} cases ({checks} checks): {}",
        compared_cases.len(),
        compared_cases.join(", ")
    );
    println!("not compared:\n  {}", not_compared.join("\n  "));
    println!(
        "SUMMARY: {} cases with libvirt's QEMU arguments: compared {} ({checks} checks) / not compared {} / mismatches {}",
        cases.len(),
        compared_cases.len(),
        not_compared.len(),
        mismatches.len()
    );
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    assert!(
        compared_cases.len() >= 15,
        "too few cases compared: {compared_cases:?}\nnot compared: {not_compared:#?}"
    );
}
