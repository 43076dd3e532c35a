//! `oxvirt clone` (virt-clone's job) with real guests under QEMU TCG: the clone boots with its
//! own MAC and UUID (what the guest reads in /sys), writes to its own disk (the original's bytes
//! stay the same), a `--linked` clone is a small qcow2 overlay of the original until its guest
//! writes, and a clone sent to a second oxvirtd (`--to`, and `export`/`import`) boots there.
//! Refusals change nothing.

#[allow(dead_code)]
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use oxvirt_testkit::{guest_kit, BOOT_MARKER, PROMPT};
use support::Daemon;

const BOOT: Duration = Duration::from_secs(120);
const ORIGINAL_MAC: &str = "52:54:00:0c:10:01";

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// A started dir pool `name` in a new directory under the daemon's tempdir.
fn pool(daemon: &Daemon, name: &str) -> PathBuf {
    let dir = daemon.dir.path().join(format!("pool-{name}"));
    std::fs::create_dir(&dir).unwrap();
    daemon
        .oxvirt(&["pool-define-as", name, "dir", "--target", p(&dir)])
        .ok();
    daemon.oxvirt(&["pool-start", name]).ok();
    dir
}

/// A pool `images` with a new qcow2 volume `a.qcow2`, and the guest `a` on it; its file.
fn original_in_a_pool(daemon: &Daemon) -> PathBuf {
    let images = pool(daemon, "images");
    daemon
        .oxvirt(&[
            "vol-create-as",
            "images",
            "a.qcow2",
            "64M",
            "--format",
            "qcow2",
        ])
        .ok();
    let disk = images.join("a.qcow2");
    define_original(daemon, "a", &disk);
    disk
}

/// The kit's guest on a qcow2 disk with a virtio NIC (user networking, a fixed MAC).
fn define_original(daemon: &Daemon, name: &str, disk: &Path) {
    let kit = guest_kit();
    let xml = support::guest_xml(name, "6c2a3f4e-0c10-4d6e-8a1b-00000000c001", &kit, disk, 1)
        .replace("type='raw'", "type='qcow2'")
        .replace(
            "    <serial type='pty'>",
            &format!(
                "    <interface type='user'><mac address='{ORIGINAL_MAC}'/><model type='virtio'/></interface>\n    <serial type='pty'>"
            ),
        );
    let (_, run) = daemon.define(&format!("{name}.xml"), &xml);
    run.ok();
}

fn sha256(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn xml_value(xml: &str, open: &str, close: &str) -> String {
    let start = xml
        .find(open)
        .unwrap_or_else(|| panic!("no {open} in {xml}"))
        + open.len();
    let end = xml[start..].find(close).unwrap() + start;
    xml[start..end].to_string()
}

fn uuid_and_mac(daemon: &Daemon, name: &str) -> (String, String) {
    let xml = daemon.oxvirt(&["dumpxml", name]).ok();
    (
        xml_value(&xml, "<uuid>", "</uuid>"),
        xml_value(&xml, "<mac address='", "'"),
    )
}

fn names(daemon: &Daemon) -> Vec<String> {
    daemon
        .oxvirt(&["list", "--all", "--name"])
        .ok()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn dir_listing(dir: &Path) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    files
}

fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// Boots `name`, checks the guest sees `mac` and `uuid`, writes a marker to its disk, and stops.
fn boot_and_check(daemon: &Daemon, name: &str, uuid: &str, mac: &str, tag: u32) {
    let mut console = daemon.start_with_console(name);
    console.expect_text(BOOT_MARKER, BOOT);
    console.expect_text(PROMPT, BOOT);
    assert_eq!(
        console.run("cat /sys/class/net/eth0/address", tag).trim(),
        mac
    );
    assert_eq!(
        console
            .run("cat /sys/class/dmi/id/product_uuid", tag + 1)
            .trim()
            .to_ascii_lowercase(),
        uuid
    );
    let wrote = console.run(
        "head -c 4194304 /dev/urandom | dd of=/dev/vda bs=1M seek=8 conv=fsync 2>/dev/null; echo wrote-$?",
        tag + 2,
    );
    assert!(wrote.contains("wrote-0"), "{wrote}");
    drop(console);
    daemon.oxvirt(&["destroy", name]).ok();
}

#[test]
fn a_clone_boots_with_its_own_mac_uuid_and_disk_and_refusals_change_nothing() {
    let daemon = Daemon::start();
    let original_disk = original_in_a_pool(&daemon);
    let images = original_disk.parent().unwrap().to_path_buf();
    let (a_uuid, a_mac) = uuid_and_mac(&daemon, "a");
    let before = sha256(&original_disk);

    let out = daemon
        .oxvirt(&["clone", "--original", "a", "--name", "b", "--auto-clone"])
        .ok();
    assert!(out.contains("Allocating 'b.qcow2'"), "{out}");
    assert!(out.contains("Clone 'b' created successfully."), "{out}");
    // The copy is a volume of the pool, which recorded it.
    let vols = daemon.oxvirt(&["vol-list", "images"]).ok();
    assert!(vols.contains("b.qcow2"), "{vols}");
    let (b_uuid, b_mac) = uuid_and_mac(&daemon, "b");
    assert_ne!(b_uuid, a_uuid);
    assert_ne!(b_mac, a_mac);
    assert!(b_mac.starts_with("52:54:00:"), "{b_mac}");
    let b_xml = daemon.oxvirt(&["dumpxml", "b"]).ok();
    assert!(
        b_xml.contains(&format!("{}", images.join("b.qcow2").display())),
        "{b_xml}"
    );

    boot_and_check(&daemon, "b", &b_uuid, &b_mac, 1);
    assert_eq!(
        sha256(&original_disk),
        before,
        "the clone's writes reached the original"
    );
    assert!(
        allocated(&images.join("b.qcow2")) >= 4 << 20,
        "the clone's disk has its writes"
    );

    // --auto-clone names the next one as virt-clone does.
    let out = daemon
        .oxvirt(&["clone", "--original", "a", "--auto-clone"])
        .ok();
    assert!(
        out.contains("Clone 'a-clone' created successfully."),
        "{out}"
    );
    assert!(images.join("a-clone.qcow2").exists());

    // --linked: an overlay backed by the original, small until the guest writes.
    let out = daemon
        .oxvirt(&[
            "clone",
            "--original",
            "a",
            "--name",
            "l",
            "--auto-clone",
            "--linked",
        ])
        .ok();
    assert!(out.contains("Clone 'l' created successfully."), "{out}");
    let linked = images.join("l.qcow2");
    assert!(std::fs::metadata(&linked).unwrap().len() < 1 << 20);
    let chain = std::process::Command::new("qemu-img")
        .args(["info", "-U", "--backing-chain", p(&linked)])
        .output()
        .expect("qemu-img");
    let chain = String::from_utf8_lossy(&chain.stdout);
    assert!(
        chain.contains(&format!("backing file: {}", original_disk.display())),
        "{chain}"
    );
    let (l_uuid, l_mac) = uuid_and_mac(&daemon, "l");
    boot_and_check(&daemon, "l", &l_uuid, &l_mac, 10);
    assert!(std::fs::metadata(&linked).unwrap().len() > 4 << 20);
    assert_eq!(sha256(&original_disk), before);
    // While the linked clone runs, its QEMU reads the original as a backing file: an upload
    // that would replace it is refused (the image lock says so), and nothing changes.
    let saved = daemon.dir.path().join("a-saved.qcow2");
    std::fs::copy(&original_disk, &saved).unwrap();
    daemon.oxvirt(&["start", "l"]).ok();
    let err = daemon
        .oxvirt(&["vol-upload", "a.qcow2", p(&saved), "--pool", "images"])
        .error();
    assert!(err.contains("holds its image lock"), "{err}");
    daemon.oxvirt(&["destroy", "l"]).ok();
    assert_eq!(sha256(&original_disk), before);

    // Refusals: a taken name, an existing file, a running original. Nothing is defined, no
    // file is left behind.
    let domains = names(&daemon);
    let files = dir_listing(&images);
    let err = daemon
        .oxvirt(&["clone", "--original", "a", "--name", "b", "--auto-clone"])
        .error();
    assert!(err.contains("Guest name 'b' is already in use"), "{err}");
    let taken = images.join("b.qcow2");
    let err = daemon
        .oxvirt(&[
            "clone",
            "--original",
            "a",
            "--name",
            "x",
            "--file",
            p(&taken),
        ])
        .error();
    assert!(
        err.contains(&format!("'{}'", taken.display())) && err.contains("exists"),
        "{err}"
    );
    let err = daemon
        .oxvirt(&[
            "clone",
            "--original",
            "nosuch",
            "--name",
            "x",
            "--auto-clone",
        ])
        .error();
    assert!(err.contains("Domain 'nosuch' was not found"), "{err}");
    let mut console = daemon.start_with_console("a");
    console.expect_text(BOOT_MARKER, BOOT);
    let err = daemon
        .oxvirt(&["clone", "--original", "a", "--name", "x", "--auto-clone"])
        .error();
    assert!(err.contains("must be shutoff"), "{err}");
    assert_eq!(names(&daemon), domains);
    assert_eq!(dir_listing(&images), files);

    // A paused original is cloned (its QEMU flushed the disk when it paused).
    daemon.oxvirt(&["suspend", "a"]).ok();
    let out = daemon
        .oxvirt(&["clone", "--original", "a", "--name", "p", "--auto-clone"])
        .ok();
    assert!(out.contains("Clone 'p' created successfully."), "{out}");
    drop(console);
    daemon.oxvirt(&["destroy", "a"]).ok();
    assert!(qemu_img_same(&original_disk, &images.join("p.qcow2")));
    assert_eq!(sha256(&original_disk), before);
}

/// `oxvirt clone --original ORIGINAL --name NAME ARGS...`.
fn clone_of(daemon: &Daemon, original: &str, name: &str, args: &[&str]) -> support::Run {
    let mut all = vec!["clone", "--original", original, "--name", name];
    all.extend_from_slice(args);
    daemon.oxvirt(&all)
}

/// Asserts that the definition `xml` has a disk on `file`.
#[track_caller]
fn assert_names_file(xml: &str, file: &Path) {
    let source = format!("<source file='{}'/>", file.display());
    assert!(xml.contains(&source), "no {source} in {xml}");
}

/// Whether `qemu-img compare` finds the same guest-visible contents.
fn qemu_img_same(a: &Path, b: &Path) -> bool {
    std::process::Command::new("qemu-img")
        .args(["compare", "-U", p(a), p(b)])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("qemu-img compare")
        .success()
}

/// Disks outside every pool are plain files the CLI makes, named as virt-clone names them;
/// `--mac`, `--preserve-data`; refusals (a bad MAC, a missing kept file, too many `--file`s, a
/// file system that cannot reflink) define nothing and leave no file.
#[test]
fn plain_files_macs_preserved_data_and_refusals() {
    let daemon = Daemon::start();
    let dir = daemon.dir.path().join("imgs");
    std::fs::create_dir(&dir).unwrap();
    let web = dir.join("web.qcow2");
    let data = dir.join("data.img");
    let made = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", p(&web), "16M"])
        .status()
        .unwrap();
    assert!(made.success());
    // 64 MiB, data at 1 MiB and 40 MiB only.
    let mut raw = std::fs::File::create(&data).unwrap();
    raw.set_len(64 << 20).unwrap();
    for at in [1u64 << 20, 40 << 20] {
        use std::io::{Seek, Write};
        raw.seek(std::io::SeekFrom::Start(at)).unwrap();
        raw.write_all(&[0x5a; 8192]).unwrap();
    }
    drop(raw);
    // Taken: the copy of web.qcow2 becomes web2-1.qcow2.
    std::fs::write(dir.join("web2.qcow2"), b"").unwrap();
    let kit = guest_kit();
    // A UEFI store the definition names: copied to NAME_VARS.fd beside it, as virt-clone does.
    let vars = dir.join("web_VARS.fd");
    std::fs::write(&vars, b"uefi variables of web").unwrap();
    let xml = support::guest_xml("web", "6c2a3f4e-0c10-4d6e-8a1b-00000000c0a1", &kit, &web, 1)
        .replace("type='raw'", "type='qcow2'")
        .replace(
            "  </os>",
            &format!(
                "    <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>\n    <nvram>{}</nvram>\n  </os>",
                vars.display()
            ),
        )
        .replace(
            "    <serial type='pty'>",
            &format!(
                "    <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{}'/><target dev='vdb' bus='virtio'/></disk>\n    <interface type='user'><mac address='{ORIGINAL_MAC}'/></interface>\n    <serial type='pty'>",
                data.display()
            ),
        );
    daemon.define("web.xml", &xml).1.ok();

    let out = clone_of(
        &daemon,
        "web",
        "web2",
        &["--auto-clone", "--mac", "52:54:00:aa:bb:cc"],
    )
    .ok();
    assert!(out.contains("Allocating 'web2-1.qcow2'"), "{out}");
    assert!(out.contains("Allocating 'data-clone.img'"), "{out}");
    // What virt-clone 4.1 prints for the same layout (`virt-clone --connect test:///default
    // --original-xml web.xml --name web2 --auto-clone --print-xml`, with web2.qcow2 taken):
    // <source file="DIR/web2-1.qcow2"/> and <source file="DIR/data-clone.img"/>.
    let xml = daemon.oxvirt(&["dumpxml", "web2"]).ok();
    assert_names_file(&xml, &dir.join("web2-1.qcow2"));
    assert_names_file(&xml, &dir.join("data-clone.img"));
    assert!(xml.contains("<mac address='52:54:00:aa:bb:cc'/>"), "{xml}");
    let new_vars = dir.join("web2_VARS.fd");
    assert!(
        xml.contains(&format!("<nvram>{}</nvram>", new_vars.display())),
        "{xml}"
    );
    assert_eq!(std::fs::read(&new_vars).unwrap(), b"uefi variables of web");
    assert!(qemu_img_same(&data, &dir.join("data-clone.img")));
    assert!(qemu_img_same(&web, &dir.join("web2-1.qcow2")));
    // Holes stayed holes.
    assert!(allocated(&dir.join("data-clone.img")) < 1 << 20);

    // --preserve-data: the files given are used as they are.
    let kept = sha256(&dir.join("data-clone.img"));
    let (kept_web, kept_data) = (dir.join("web2-1.qcow2"), dir.join("data-clone.img"));
    let out = clone_of(
        &daemon,
        "web",
        "keep",
        &[
            "--preserve-data",
            "--file",
            p(&kept_web),
            "--file",
            p(&kept_data),
        ],
    )
    .ok();
    assert!(!out.contains("Allocating"), "{out}");
    let xml = daemon.oxvirt(&["dumpxml", "keep"]).ok();
    assert_names_file(&xml, &dir.join("data-clone.img"));
    assert_eq!(sha256(&dir.join("data-clone.img")), kept);

    let domains = names(&daemon);
    let files = dir_listing(&dir);
    let refused = |args: &[&str]| clone_of(&daemon, "web", "m", args).error();
    let err = refused(&["--auto-clone", "--mac", "52:54:00:zz:00:01"]);
    assert!(err.contains("--mac 52:54:00:zz:00:01"), "{err}");
    let missing = dir.join("missing.img");
    let err = refused(&["--preserve-data", "--file", p(&web), "--file", p(&missing)]);
    assert!(
        err.contains(&format!("{} does not exist", missing.display())),
        "{err}"
    );
    let (m1, m2, m3) = (dir.join("m1.qcow2"), dir.join("m2.img"), dir.join("m3.img"));
    let err = refused(&["--file", p(&m1), "--file", p(&m2), "--file", p(&m3)]);
    assert!(err.contains("more --file paths than disks"), "{err}");
    // The original's own MAC: oxvirtd refuses the definition after the disks were copied, and
    // the copies go again.
    let err = refused(&["--auto-clone", "--mac", ORIGINAL_MAC]);
    assert!(
        err.contains(&format!("{ORIGINAL_MAC} is already used by domain 'web'")),
        "{err}"
    );
    assert_eq!(dir_listing(&dir), files);
    // --reflink: where the file system shares extents (btrfs, XFS) the clone is a full copy;
    // where it cannot (ext4, this machine's /tmp) it is refused, and the file it made goes.
    let run = daemon.oxvirt(&[
        "clone",
        "--original",
        "web",
        "--name",
        "m",
        "--auto-clone",
        "--reflink",
    ]);
    if run.code == Some(0) {
        assert!(qemu_img_same(&web, &dir.join("m.qcow2")));
        daemon.oxvirt(&["undefine", "m"]).ok();
        std::fs::remove_file(dir.join("m.qcow2")).unwrap();
        std::fs::remove_file(dir.join("data-clone-1.img")).unwrap();
    } else {
        let err = run.error();
        assert!(err.contains("FICLONE"), "{err}");
    }
    assert_eq!(names(&daemon), domains);
    assert_eq!(dir_listing(&dir), files);
}

#[test]
fn a_clone_sent_to_another_oxvirtd_boots_there() {
    let here = Daemon::start();
    let original_disk = original_in_a_pool(&here);
    let there = Daemon::start();
    let remote_pool = pool(&there, "default");

    let out = here
        .oxvirt(&[
            "clone",
            "--original",
            "a",
            "--name",
            "c",
            "--to",
            p(&there.socket),
        ])
        .ok();
    assert!(out.contains("Clone 'c' created successfully."), "{out}");
    assert!(!names(&here).contains(&"c".to_string()));
    let vols = there.oxvirt(&["vol-list", "default"]).ok();
    assert!(vols.contains("c.qcow2"), "{vols}");
    let c_xml = there.oxvirt(&["dumpxml", "c"]).ok();
    assert!(
        c_xml.contains("<source pool='default' volume='c.qcow2'/>"),
        "{c_xml}"
    );
    let (c_uuid, c_mac) = uuid_and_mac(&there, "c");
    assert_ne!(c_mac, ORIGINAL_MAC);
    boot_and_check(&there, "c", &c_uuid, &c_mac, 1);
    // A clone of a volume disk is a new volume of the same pool, named by reference too.
    there
        .oxvirt(&["clone", "--original", "c", "--name", "c2", "--auto-clone"])
        .ok();
    let c2_xml = there.oxvirt(&["dumpxml", "c2"]).ok();
    assert!(
        c2_xml.contains("<source pool='default' volume='c2.qcow2'/>"),
        "{c2_xml}"
    );
    assert!(qemu_img_same(
        &remote_pool.join("c.qcow2"),
        &remote_pool.join("c2.qcow2")
    ));

    // The same through a file: export here, import there under a new name.
    let archive = here.dir.path().join("a.tar");
    let out = here.oxvirt(&["export", "a", p(&archive)]).ok();
    assert!(out.contains("exported"), "{out}");
    // The 64 MiB image is mostly holes: the archive holds its data only.
    assert!(std::fs::metadata(&archive).unwrap().len() < 4 << 20);
    let out = there.oxvirt(&["import", p(&archive), "--name", "d"]).ok();
    assert!(out.contains("Domain 'd' imported"), "{out}");
    assert!(remote_pool.join("d.qcow2").exists());
    assert!(
        qemu_img_same(&original_disk, &remote_pool.join("d.qcow2")),
        "the imported disk differs from the original"
    );
    // Importing onto a taken name is refused, and leaves no volume.
    let before = dir_listing(&remote_pool);
    let err = there
        .oxvirt(&["import", p(&archive), "--name", "d"])
        .error();
    assert!(err.contains("Guest name 'd' is already in use"), "{err}");
    assert_eq!(dir_listing(&remote_pool), before);

    // vol-download gives the volume's file back; vol-upload of a non-image into a qcow2
    // volume is refused and leaves it as it was.
    let copy = there.dir.path().join("d-copy.qcow2");
    there
        .oxvirt(&["vol-download", "d.qcow2", p(&copy), "--pool", "default"])
        .ok();
    assert_eq!(sha256(&copy), sha256(&remote_pool.join("d.qcow2")));
    let junk = there.dir.path().join("junk");
    std::fs::write(&junk, vec![7u8; 70000]).unwrap();
    let err = there
        .oxvirt(&["vol-upload", "d.qcow2", p(&junk), "--pool", "default"])
        .error();
    assert!(err.contains("not a qcow2 image"), "{err}");
    // Nor may an uploaded qcow2 header name a host file for QEMU to open.
    let evil = there.dir.path().join("evil.qcow2");
    let made = std::process::Command::new("qemu-img")
        .args([
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "/etc/passwd",
            "-F",
            "raw",
            p(&evil),
        ])
        .status()
        .unwrap();
    assert!(made.success());
    let err = there
        .oxvirt(&["vol-upload", "d.qcow2", p(&evil), "--pool", "default"])
        .error();
    assert!(err.contains("names backing file /etc/passwd"), "{err}");
    assert_eq!(sha256(&copy), sha256(&remote_pool.join("d.qcow2")));
    assert_eq!(dir_listing(&remote_pool), before);
}
