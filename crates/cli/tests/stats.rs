//! `domstats` against a private oxvirtd running a real QEMU (TCG) guest, and Debian's virsh on
//! libvirt's own guest of the same definition (the embedded driver): the same fields in the
//! same order, but for the ones oxvirt does not have (listed here); values that both sides fix
//! (state, memory sizes, vCPU counts, the disk's name, path and capacity) equal; counters that
//! the guest moves (its disk reads, its vCPU time) grow.

#[allow(dead_code)]
mod support;

use std::time::Duration;

use oxvirt_testkit::{guest_kit, wait_for, BOOT_MARKER, PROMPT};
use support::{guest_xml, make_disk, Daemon};

const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
const UUID: &str = "5d7f9b1c-3e5a-4c7e-9a1b-3c5e7a9b1d3f";

/// libvirt's fields that oxvirt does not report: resctrl cache monitors, halt polling (a
/// debugfs counter), a disk's backing index and highest written offset, the dirty-rate
/// calculation (its own verb).
fn libvirt_only(name: &str) -> bool {
    name.starts_with("cpu.cache.")
        || name.starts_with("cpu.haltpoll.")
        || name.starts_with("dirtyrate.")
        || name.ends_with(".backingIndex")
        || name.ends_with(".allocation")
}

/// The balloon figures the guest's driver reports, in libvirt's order: there once the driver has
/// reported (oxvirt's guest is asked after it booted, libvirt's before), so compared apart.
const GUEST_BALLOON: [&str; 10] = [
    "balloon.swap_in",
    "balloon.swap_out",
    "balloon.major_fault",
    "balloon.minor_fault",
    "balloon.unused",
    "balloon.available",
    "balloon.usable",
    "balloon.disk_caches",
    "balloon.hugetlb_pgalloc",
    "balloon.hugetlb_pgfail",
];

/// `Domain: 'NAME'` blocks as (name, fields).
fn blocks(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut out: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for line in text.lines() {
        if let Some(name) = line
            .strip_prefix("Domain: '")
            .and_then(|r| r.strip_suffix('\''))
        {
            out.push((name.to_string(), Vec::new()));
        } else if let Some((key, value)) = line.trim().split_once('=') {
            if let Some(last) = out.last_mut() {
                last.1.push((key.to_string(), value.to_string()));
            }
        }
    }
    out
}

fn value<'a>(fields: &'a [(String, String)], key: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {key} in {fields:?}"))
}

#[test]
fn domstats_has_libvirts_fields_and_the_guests_numbers() {
    let daemon = Daemon::start();
    let disk = make_disk(daemon.dir.path(), "st.img", 8192);
    let xml = guest_xml("st", UUID, &guest_kit(), &disk, 2);
    daemon.define("st.xml", &xml).1.ok();

    // Shut off: the state, the definition's sizes.
    let off = blocks(
        &daemon
            .oxvirt(&["domstats", "st", "--state", "--balloon"])
            .ok(),
    );
    assert_eq!(off.len(), 1);
    assert_eq!(value(&off[0].1, "state.state"), "5");
    assert_eq!(value(&off[0].1, "balloon.maximum"), "262144");

    let mut console = daemon.start_with_console("st");
    console.expect_text(BOOT_MARKER, BOOT_TIMEOUT);
    console.expect_text(PROMPT, BOOT_TIMEOUT);
    let first = blocks(&daemon.oxvirt(&["domstats", "st"]).ok());
    let ours = &first[0].1;
    assert_eq!(value(ours, "state.state"), "1");
    assert_eq!(value(ours, "state.reason"), "1", "booted");
    assert_eq!(value(ours, "balloon.current"), "262144");
    assert_eq!(value(ours, "vcpu.current"), "2");
    assert_eq!(value(ours, "vcpu.maximum"), "2");
    assert_eq!(value(ours, "block.count"), "1");
    assert_eq!(value(ours, "block.0.name"), "vda");
    assert_eq!(value(ours, "block.0.path"), disk.display().to_string());
    assert_eq!(value(ours, "block.0.capacity"), (8192 * 512).to_string());
    assert!(value(ours, "cpu.time").parse::<u64>().unwrap() > 0);
    assert!(value(ours, "balloon.rss").parse::<u64>().unwrap() > 0);

    // The guest reads its disk: the counter grows; its vCPU time too.
    console.send_line("dd if=/dev/vda of=/dev/null bs=4k count=64 iflag=direct; echo DD-DONE");
    console.expect_text("DD-DONE", BOOT_TIMEOUT);
    let reqs =
        |fields: &[(String, String)]| -> u64 { value(fields, "block.0.rd.reqs").parse().unwrap() };
    assert!(wait_for(Duration::from_secs(10), || {
        let now = blocks(&daemon.oxvirt(&["domstats", "st", "--block"]).ok());
        reqs(&now[0].1) >= reqs(ours) + 64
    }));
    let later = blocks(
        &daemon
            .oxvirt(&["domstats", "--vcpu", "--list-running"])
            .ok(),
    );
    assert_eq!(later.len(), 1);
    let vcpu_time =
        |fields: &[(String, String)]| -> u64 { value(fields, "vcpu.0.time").parse().unwrap() };
    assert!(vcpu_time(&later[0].1) >= vcpu_time(ours));
    assert!(later[0].1.iter().all(|(k, _)| k.starts_with("vcpu.")));
    assert!(blocks(&daemon.oxvirt(&["domstats", "--list-shutoff"]).ok()).is_empty());

    // libvirt's guest of the same definition: the same fields, in the same order.
    let root = daemon.dir.path().join("libvirt");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/qemu.conf"), "stdio_handler = \"file\"\n").unwrap();
    let libvirt_disk = make_disk(daemon.dir.path(), "lv.img", 8192);
    let libvirt_xml = daemon.dir.path().join("lv.xml");
    std::fs::write(
        &libvirt_xml,
        guest_xml(
            "lv",
            "6e8a0c2d-4f6b-4d8f-8b2c-4d6f8b0c2e4a",
            &guest_kit(),
            &libvirt_disk,
            2,
        ),
    )
    .unwrap();
    let theirs = support::virsh_embedded(
        &root,
        &format!(
            "define {}; start lv; domstats lv; destroy lv",
            libvirt_xml.display()
        ),
    );
    let theirs = blocks(&theirs);
    let their_names: Vec<&str> = theirs[0]
        .1
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !libvirt_only(k) && !GUEST_BALLOON.contains(k))
        .collect();
    let our_names: Vec<&str> = ours
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !GUEST_BALLOON.contains(k))
        .collect();
    assert_eq!(our_names, their_names);
    // The guest's own balloon figures that are there come in libvirt's order.
    let reported: Vec<&str> = ours
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| GUEST_BALLOON.contains(k))
        .collect();
    let in_order: Vec<&str> = GUEST_BALLOON
        .iter()
        .copied()
        .filter(|k| reported.contains(k))
        .collect();
    assert_eq!(reported, in_order);
    for key in [
        "state.state",
        "balloon.maximum",
        "vcpu.current",
        "vcpu.maximum",
        "block.count",
        "block.0.capacity",
    ] {
        assert_eq!(value(ours, key), value(&theirs[0].1, key), "{key}");
    }

    // Bad input: a domain that does not exist.
    let err = daemon.oxvirt(&["domstats", "nosuch"]).error();
    assert!(err.contains("nosuch"), "{err}");
}
