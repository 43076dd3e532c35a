//! Snapshots through the CLI, against a private oxvirtd running real QEMU (TCG) guests: what
//! the guest sees after a revert (its disk, its memory, a counter it runs), external overlays as
//! `qemu-img` sees them, the snapshot tree as Debian's virsh prints it for the same operations,
//! and bad input that changes nothing.

#[allow(dead_code)]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use oxvirt_testkit::{guest_kit, wait_for, BOOT_MARKER, PROMPT};
use support::{guest_xml, Daemon};

const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

fn qemu_img(args: &[&str]) -> String {
    let output = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("run qemu-img");
    assert!(
        output.status.success(),
        "qemu-img {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn qcow2_disk(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    qemu_img(&["create", "-q", "-f", "qcow2", path.to_str().unwrap(), "64M"]);
    path
}

fn qcow2_guest_xml(name: &str, uuid: &str, disk: &Path) -> String {
    guest_xml(name, uuid, &guest_kit(), disk, 1).replace("type='raw'", "type='qcow2'")
}

/// Reads the counter the guest's background loop writes.
fn counter(console: &mut support::ConsoleSession, tag: u32) -> u64 {
    let text = console.run("cat /tmp/count", tag);
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("counter is not a number: {text:?}"))
}

/// Defines `name` on a new qcow2 disk and boots it to its prompt; the disk and the console.
fn boot_qcow2_guest(daemon: &Daemon, name: &str, uuid: &str) -> (PathBuf, support::ConsoleSession) {
    let disk = qcow2_disk(daemon.dir.path(), &format!("{name}.qcow2"));
    daemon
        .define(&format!("{name}.xml"), &qcow2_guest_xml(name, uuid, &disk))
        .1
        .ok();
    let mut console = daemon.start_with_console(name);
    console.expect_text(BOOT_MARKER, BOOT_TIMEOUT);
    console.expect_text(PROMPT, BOOT_TIMEOUT);
    (disk, console)
}

#[test]
fn revert_brings_back_disk_memory_and_a_running_counter() {
    let daemon = Daemon::start();
    let (disk, mut console) =
        boot_qcow2_guest(&daemon, "snap", "6a1c3e0b-8f2d-4b7e-9d51-3c2e7f0a9b14");

    // Marker A on the disk (sector 100) and in tmpfs; a counter ticking every 200 ms. The
    // kernel keeps its messages (a revert's clock jump makes some) off the console, where they
    // would land among the answers.
    console.run(
        "dmesg -n 1; echo MARKER-A | dd of=/dev/vda bs=512 seek=100 conv=fsync 2>/dev/null; echo MEM-A > /tmp/marker",
        1,
    );
    console.run(
        // Written aside and renamed: `cat` never sees the file truncated and not yet written again.
        "(i=0; while true; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; usleep 200000; done) & true",
        2,
    );
    assert!(wait_for(Duration::from_secs(30), || counter(
        &mut console,
        3
    ) >= 3));
    let before = counter(&mut console, 4);
    assert_eq!(
        daemon
            .oxvirt(&["snapshot-create-as", "snap", "s1", "--description", "A"])
            .ok(),
        "Domain snapshot s1 created\n"
    );
    let after = counter(&mut console, 5);

    // Marker B everywhere, and the counter runs far ahead.
    console.run(
        "echo MARKER-B | dd of=/dev/vda bs=512 seek=100 conv=fsync 2>/dev/null; echo MEM-B > /tmp/marker",
        6,
    );
    assert!(wait_for(Duration::from_secs(60), || {
        counter(&mut console, 7) >= after + 25
    }));
    let ahead = counter(&mut console, 8);

    assert_eq!(
        daemon.oxvirt(&["snapshot-revert", "snap", "s1"]).ok(),
        "Domain snapshot s1 reverted\n\n"
    );
    assert_eq!(daemon.oxvirt(&["domstate", "snap"]).ok(), "running\n\n");
    // The shell the snapshot holds waits for a line: give it one, then ask.
    console.send_line("");
    let disk_marker = console.run(
        "dd if=/dev/vda bs=512 skip=100 count=1 2>/dev/null | head -n 1",
        9,
    );
    assert_eq!(disk_marker.trim(), "MARKER-A");
    assert_eq!(console.run("cat /tmp/marker", 10).trim(), "MEM-A");
    let resumed = counter(&mut console, 11);
    assert!(
        resumed >= before && resumed < ahead,
        "the counter went on from the snapshot ({before}..{after}), not from {ahead} or 0: {resumed}"
    );

    // What virsh shows of it.
    let info = daemon.oxvirt(&["snapshot-info", "snap", "s1"]).ok();
    assert!(info.contains("State:          running\n"), "{info}");
    assert!(info.contains("Location:       internal\n"), "{info}");
    assert!(info.contains("Current:        yes\n"), "{info}");
    let xml = daemon.oxvirt(&["snapshot-dumpxml", "snap", "s1"]).ok();
    assert!(xml.contains("<memory snapshot='internal'/>"), "{xml}");
    assert!(xml.contains("<description>A</description>"), "{xml}");
    // QEMU's own view of the image: the snapshot holds the VM state.
    let listed = qemu_img(&["snapshot", "-U", "-l", disk.to_str().unwrap()]);
    assert!(listed.contains(" s1 "), "{listed}");

    // Disk-only external snapshot: the guest goes on writing into the new overlay.
    assert_eq!(
        daemon
            .oxvirt(&[
                "snapshot-create-as",
                "snap",
                "ext1",
                "--disk-only",
                "--atomic"
            ])
            .ok(),
        "Domain snapshot ext1 created\n"
    );
    let overlay = disk.with_extension("ext1");
    assert!(overlay.exists(), "no overlay {}", overlay.display());
    console.run(
        "echo MARKER-C | dd of=/dev/vda bs=512 seek=200 conv=fsync 2>/dev/null",
        12,
    );
    let chain = qemu_img(&["info", "-U", "--backing-chain", overlay.to_str().unwrap()]);
    assert!(
        chain.contains(&format!("backing file: {}", disk.display())),
        "{chain}"
    );
    let written = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "qemu-io -U -r -f qcow2 -c 'read -v 102400 16' {} | head -n 1",
            overlay.display()
        ))
        .output()
        .expect("qemu-io");
    // qemu-io's text column prints '-' as '.', so compare the hex bytes of "MARKER-C".
    assert!(
        String::from_utf8_lossy(&written.stdout).contains("4d 41 52 4b 45 52 2d 43"),
        "the overlay does not hold the guest's new write: {}",
        String::from_utf8_lossy(&written.stdout)
    );
    let base = std::fs::read(&disk).expect("read base image");
    assert!(
        !base.windows(8).any(|w| w == b"MARKER-C"),
        "the write went into the base image"
    );
    let dumpxml = daemon.oxvirt(&["dumpxml", "snap"]).ok();
    assert!(
        dumpxml.contains(&format!("<source file='{}'", overlay.display())),
        "{dumpxml}"
    );
    let inactive = daemon.oxvirt(&["dumpxml", "--inactive", "snap"]).ok();
    assert!(
        inactive.contains(&format!("<source file='{}'", overlay.display())),
        "{inactive}"
    );
    let listed = daemon.oxvirt(&["snapshot-list", "snap", "--parent"]).ok();
    assert!(listed.contains(" disk-snapshot   s1\n"), "{listed}");

    // undefine is refused while snapshots exist; --snapshots-metadata forgets them.
    daemon.oxvirt(&["destroy", "snap"]).ok();
    let refused = daemon.oxvirt(&["undefine", "snap"]).error();
    assert!(refused.contains("2 snapshots"), "{refused}");
    daemon
        .oxvirt(&["undefine", "snap", "--snapshots-metadata"])
        .ok();
}

/// The shut-off domain of the tree test, for oxvirt and for libvirt alike.
fn tree_domain_xml(disk: &Path) -> String {
    format!(
        "<domain type='qemu'><name>tree</name><uuid>0b7c5e2a-1d3f-4e6a-8b9c-2f4d6e8a0c1e</uuid>\
         <memory unit='MiB'>64</memory><os><type arch='x86_64' machine='pc'>hvm</type></os>\
         <devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
         <source file='{}'/><target dev='vda' bus='virtio'/></disk></devices></domain>",
        disk.display()
    )
}

/// The same operations, each a list of arguments after the verb's domain.
const TREE_STEPS: &[&[&str]] = &[
    &["snapshot-create-as", "tree", "s1"],
    &["snapshot-create-as", "tree", "s2"],
    &["snapshot-create-as", "tree", "s3"],
    &["snapshot-revert", "tree", "s1"],
    &["snapshot-create-as", "tree", "b1"],
];

const TREE_QUERIES: &[&[&str]] = &[
    &["snapshot-list", "tree", "--tree"],
    &["snapshot-list", "tree", "--name"],
    &["snapshot-list", "tree", "--roots", "--name"],
    &["snapshot-list", "tree", "--leaves", "--name"],
    &["snapshot-list", "tree", "--from", "s1", "--name"],
    &[
        "snapshot-list",
        "tree",
        "--from",
        "s1",
        "--descendants",
        "--name",
    ],
    &["snapshot-parent", "tree", "b1"],
    &["snapshot-parent", "tree", "s3"],
    &["snapshot-current", "tree", "--name"],
    &["snapshot-info", "tree", "s1"],
    &["snapshot-info", "tree", "--current"],
];

#[test]
fn snapshot_tree_matches_what_virsh_prints() {
    let daemon = Daemon::start();
    let our_disk = qcow2_disk(daemon.dir.path(), "ours.qcow2");
    let their_disk = qcow2_disk(daemon.dir.path(), "theirs.qcow2");
    daemon
        .define("tree.xml", &tree_domain_xml(&our_disk))
        .1
        .ok();

    // libvirt 9.0's QEMU driver embedded in virsh: its own private root, no daemon.
    let root = daemon.dir.path().join("libvirt-root");
    let uri = format!("qemu:///embed?root={}", root.display());
    let libvirt_xml = daemon.dir.path().join("libvirt-tree.xml");
    std::fs::write(&libvirt_xml, tree_domain_xml(&their_disk)).unwrap();
    let mut script = vec![format!("define {}", libvirt_xml.display())];
    for step in TREE_STEPS {
        daemon.oxvirt(step).ok();
        script.push(step.join(" "));
    }
    // Then the questions, and the changes between them, in the same order on both sides.
    // One virsh process runs it all (each one starts libvirt's driver anew, which costs
    // seconds): a marker line (virsh's `echo`) before each command splits its output.
    let after_steps: Vec<Vec<&str>> = TREE_QUERIES
        .iter()
        .map(|q| q.to_vec())
        .chain([
            vec!["snapshot-list", "tree", "--parent"],
            vec!["snapshot-delete", "tree", "s2"],
            vec!["snapshot-list", "tree", "--tree"],
            vec!["snapshot-parent", "tree", "s3"],
        ])
        .collect();
    for (i, command) in after_steps.iter().enumerate() {
        script.push(format!("echo @@{i}@@"));
        script.push(command.join(" "));
    }
    let session = Command::new("virsh")
        .arg("-c")
        .arg(&uri)
        .arg(script.join("; "))
        .output()
        .expect("run virsh (Debian's libvirt-clients, installed by scripts/setup.sh)");
    let printed = String::from_utf8_lossy(&session.stdout).into_owned();
    assert!(
        session.status.success() && session.stderr.is_empty(),
        "virsh failed: {}{printed}",
        String::from_utf8_lossy(&session.stderr)
    );
    let theirs: Vec<String> = (0..after_steps.len())
        .map(|i| {
            let marker = format!("@@{i}@@\n");
            let start = printed
                .find(&marker)
                .unwrap_or_else(|| panic!("no output of {:?}: {printed}", after_steps[i]))
                + marker.len();
            let end = printed[start..]
                .find(&format!("@@{}@@\n", i + 1))
                .map_or(printed.len(), |at| start + at);
            printed[start..end].to_string()
        })
        .collect();
    let ours: Vec<String> = after_steps
        .iter()
        .map(|command| daemon.oxvirt(command).ok())
        .collect();
    let queries = TREE_QUERIES.len();
    for i in 0..queries {
        assert_eq!(
            ours[i], theirs[i],
            "oxvirt {:?} differs from virsh",
            after_steps[i]
        );
    }
    // The table: the same names, states and parents (times differ).
    let strip_times = |table: &str| -> Vec<String> {
        table
            .lines()
            .map(|line| {
                line.split("   ")
                    .filter(|cell| !cell.trim().is_empty())
                    .filter(|cell| !cell.contains(':') || cell.contains("Creation"))
                    .map(str::trim)
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .collect()
    };
    assert_eq!(strip_times(&ours[queries]), strip_times(&theirs[queries]));
    // Deleting a middle snapshot moves its children up, in both.
    assert_eq!(
        ours[queries + 2],
        theirs[queries + 2],
        "--tree after the delete"
    );
    assert_eq!(
        ours[queries + 3],
        theirs[queries + 3],
        "parent after the delete"
    );

    // The images agree: the same internal snapshots in both qcow2 files.
    let tags = |image: &Path| -> Vec<String> {
        let listed = qemu_img(&["snapshot", "-l", image.to_str().unwrap()]);
        let mut tags: Vec<String> = listed
            .lines()
            .skip(2)
            .filter_map(|line| line.split_whitespace().nth(1).map(str::to_string))
            .collect();
        tags.sort();
        tags
    };
    assert_eq!(tags(&our_disk), tags(&their_disk));
    assert_eq!(tags(&our_disk), ["b1", "s1", "s3"]);
    let check = Command::new("qemu-img")
        .args(["check", our_disk.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "qemu-img check: {}",
        String::from_utf8_lossy(&check.stdout)
    );
}

#[test]
fn bad_snapshot_requests_change_nothing() {
    let daemon = Daemon::start();
    let qcow2 = qcow2_disk(daemon.dir.path(), "bad.qcow2");
    daemon.define("bad.xml", &tree_domain_xml(&qcow2)).1.ok();
    daemon.oxvirt(&["snapshot-create-as", "tree", "good"]).ok();
    let listing = daemon.oxvirt(&["snapshot-list", "tree", "--name"]).ok();

    let refused = [
        (
            vec!["snapshot-revert", "tree", "nope"],
            "no domain snapshot with matching name 'nope'",
        ),
        (
            vec!["snapshot-create-as", "tree", "a/b"],
            "name contains '/'",
        ),
        (vec!["snapshot-create-as", "tree", "good"], "already exists"),
        (vec!["snapshot-delete", "tree", "nope"], "'nope'"),
        (vec!["snapshot-parent", "tree", "good"], "has no parent"),
        (
            vec![
                "snapshot-create-as",
                "tree",
                "m",
                "--memspec",
                "snapshot=external,file=/tmp/m",
            ],
            "external memory",
        ),
    ];
    for (args, expected) in refused {
        let error = daemon.oxvirt(&args).error();
        assert!(error.contains(expected), "{args:?}: {error}");
    }
    // A snapshot XML file with what only a redefinition may give: refused with its line.
    let file = daemon.dir.path().join("snap.xml");
    std::fs::write(
        &file,
        "<domainsnapshot>\n  <name>x</name>\n  <creationTime>1</creationTime>\n</domainsnapshot>\n",
    )
    .unwrap();
    let error = daemon
        .oxvirt(&["snapshot-create", "tree", file.to_str().unwrap()])
        .error();
    assert!(
        error.contains("creationTime") && error.contains("line 3"),
        "{error}"
    );

    // An internal snapshot of a raw disk: refused naming the disk.
    let raw = daemon.dir.path().join("raw.img");
    std::fs::File::create(&raw)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let raw_xml = tree_domain_xml(&raw)
        .replace("type='qcow2'", "type='raw'")
        .replace("<name>tree</name>", "<name>rawdom</name>")
        .replace(
            "0b7c5e2a-1d3f-4e6a-8b9c-2f4d6e8a0c1e",
            "5e2a0b7c-1d3f-4e6a-8b9c-2f4d6e8a0c1f",
        );
    daemon.define("raw.xml", &raw_xml).1.ok();
    let error = daemon
        .oxvirt(&["snapshot-create-as", "rawdom", "r1"])
        .error();
    assert!(
        error.contains("disk 'vda'") && error.contains("raw") && error.contains("qcow2"),
        "{error}"
    );
    assert_eq!(
        daemon.oxvirt(&["snapshot-list", "rawdom", "--name"]).ok(),
        "\n"
    );

    // Nothing changed.
    assert_eq!(
        daemon.oxvirt(&["snapshot-list", "tree", "--name"]).ok(),
        listing
    );
    let tags = qemu_img(&["snapshot", "-l", qcow2.to_str().unwrap()]);
    assert!(tags.contains(" good "), "{tags}");
    assert!(!tags.contains(" a/b ") && !tags.contains(" x "), "{tags}");
}

/// The internal snapshots the qcow2 image holds, by name, as qemu-img lists them.
fn image_snapshot_names(image: &Path) -> Vec<String> {
    let listing = qemu_img(&["snapshot", "-U", "-l", image.to_str().unwrap()]);
    let mut names: Vec<String> = listing
        .lines()
        .skip_while(|l| !l.starts_with("ID"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect();
    names.sort();
    names
}

#[test]
fn a_daemon_killed_during_snapshot_create_leaves_store_and_images_consistent() {
    let mut daemon = Daemon::start();
    let (disk, mut console) =
        boot_qcow2_guest(&daemon, "fault", "2d4f6a8c-0e1b-4c3d-9e5f-7a9b1c3d5e7f");
    // The kernel's messages stay off the console (see above).
    console.run(
        "dmesg -n 1; echo MARKER-A | dd of=/dev/vda bs=512 seek=100 conv=fsync 2>/dev/null",
        1,
    );
    // 64 MiB of guest memory that is not zero pages (which QEMU's stream skips), so the state
    // takes QEMU a while to write and the kill below lands while it does.
    let filled = console.run_within(
        "yes | head -c 1048576 > /tmp/mib; for i in $(seq 64); do cat /tmp/mib; done > /tmp/fill; wc -c < /tmp/fill",
        2,
        Duration::from_secs(180),
    );
    assert!(filled.contains("67108864"), "{filled}");

    // The console client goes first: it holds QEMU's one console connection, which outlives
    // oxvirtd, and a second client would wait behind it (README, "Not yet").
    drop(console);
    // oxvirtd dies (SIGKILL) once QEMU runs the snapshot job: QEMU, which outlives it,
    // finishes the job alone, and nobody writes the snapshot's metadata.
    let create = daemon.spawn_oxvirt(&["snapshot-create-as", "fault", "s1"], &[]);
    assert!(
        wait_for(Duration::from_secs(60), || daemon
            .log()
            .contains("starting QEMU job job=oxvirt-snapshot-save")),
        "the snapshot job never started: {}",
        daemon.log()
    );
    daemon.kill();
    // The client sees the connection drop, or the answer if the create beat the kill.
    support::wait_for_exit(create, Duration::from_secs(30));
    daemon.launch();

    // The guest runs on; the snapshot is listed and usable, or absent and creatable again.
    assert!(wait_for(Duration::from_secs(60), || daemon
        .oxvirt(&["domstate", "fault"])
        .stdout
        == "running\n\n"));
    let listed = daemon.oxvirt(&["snapshot-list", "fault", "--name"]).ok();
    if listed.trim().is_empty() {
        assert_eq!(
            daemon.oxvirt(&["snapshot-create-as", "fault", "s1"]).ok(),
            "Domain snapshot s1 created\n"
        );
    } else {
        assert_eq!(listed, "s1\n\n");
    }
    let mut console = daemon.console("fault");
    console.send_line("");
    console.run(
        "echo MARKER-B | dd of=/dev/vda bs=512 seek=100 conv=fsync 2>/dev/null",
        3,
    );
    assert_eq!(
        daemon.oxvirt(&["snapshot-revert", "fault", "s1"]).ok(),
        "Domain snapshot s1 reverted\n\n"
    );
    console.send_line("");
    let disk_marker = console.run(
        "dd if=/dev/vda bs=512 skip=100 count=1 2>/dev/null | head -n 1",
        4,
    );
    assert_eq!(disk_marker.trim(), "MARKER-A");

    // The store and the image agree, and the image is clean.
    daemon.oxvirt(&["destroy", "fault"]).ok();
    assert_eq!(image_snapshot_names(&disk), vec!["s1".to_string()]);
    assert_eq!(
        daemon.oxvirt(&["snapshot-list", "fault", "--name"]).ok(),
        "s1\n\n"
    );
    let check = support::oxvirt_at(
        &daemon.socket,
        &["img", "check", disk.to_str().unwrap()],
        &[],
    );
    assert_eq!(check.code, Some(0), "{check:#?}");
    assert!(check.stdout.contains("No errors were found"), "{check:#?}");
}
