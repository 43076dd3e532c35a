//! Storage pools, volumes and `blockresize` through the `oxvirt` binary against a private
//! oxvirtd. Volumes are checked with the real qemu-img; the guest test checks what the guest
//! saw (/sys/block) and what it wrote (read back with `oxvirt img convert`).

#[allow(dead_code)]
mod support;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use oxvirt_testkit::{guest_kit, wait_for, BOOT_MARKER, PROMPT};
use support::{guest_xml, Daemon};

const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
const MIB: u64 = 1 << 20;

fn path_str(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// Names in a directory, sorted: "nothing changed" checks compare these.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read pool directory")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// `qemu-img` with `args`; returns (exit code, stdout).
fn qemu_img(args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("run qemu-img");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr),
    )
}

#[track_caller]
fn assert_qemu_img_check_clean(path: &Path) {
    let (code, out) = qemu_img(&["check", path_str(path)]);
    assert_eq!(code, Some(0), "qemu-img check {}: {out}", path.display());
}

/// `qemu-img info --output json`, unlocked so it also works while a guest runs.
fn qemu_img_info(path: &Path) -> String {
    let (code, out) = qemu_img(&["info", "-U", "--output", "json", path_str(path)]);
    assert_eq!(code, Some(0), "qemu-img info {}: {out}", path.display());
    out
}

/// virsh's capacity format (the CLI's own is tested against virsh's output in its unit tests).
fn pretty(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.2} {}", units[unit])
}

fn statvfs_capacity(dir: &Path) -> u64 {
    let path = CString::new(dir.as_os_str().as_bytes()).expect("no NUL in path");
    // SAFETY: all-zero is a valid statvfs for the kernel to fill in.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid NUL-terminated path and a writable statvfs.
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
    assert_eq!(rc, 0, "statvfs {}", dir.display());
    stat.f_frsize as u64 * stat.f_blocks as u64
}

/// A daemon with an active pool `p1` in `<tempdir>/pool`.
fn daemon_with_pool() -> (Daemon, PathBuf) {
    let daemon = Daemon::start();
    let target = daemon.dir.path().join("pool");
    daemon
        .oxvirt(&["pool-define-as", "p1", "dir", "--target", path_str(&target)])
        .ok();
    daemon.oxvirt(&["pool-build", "p1"]).ok();
    daemon.oxvirt(&["pool-start", "p1"]).ok();
    (daemon, target)
}

#[test]
fn pool_lifecycle_and_listings() {
    let daemon = Daemon::start();
    let target = daemon.dir.path().join("images");
    assert_eq!(
        daemon
            .oxvirt(&["pool-define-as", "p1", "dir", "--target", path_str(&target)])
            .ok(),
        "Pool p1 defined\n\n"
    );
    let inactive_listing = " Name   State      Autostart\n\
                            ------------------------------\n \
                            p1     inactive   no\n\n";
    assert_eq!(
        daemon.oxvirt(&["pool-list", "--all"]).ok(),
        inactive_listing
    );
    assert_eq!(
        daemon.oxvirt(&["pool-list", "--inactive", "--name"]).ok(),
        "p1\n\n"
    );
    let info = daemon.oxvirt(&["pool-info", "p1"]).ok();
    let uuid = info
        .lines()
        .find_map(|l| l.strip_prefix("UUID:           "))
        .expect("UUID line")
        .to_string();
    assert_eq!(
        info,
        format!(
            "Name:           p1\nUUID:           {uuid}\nState:          inactive\n\
             Persistent:     yes\nAutostart:      no\n\n"
        )
    );

    // The target does not exist yet: start fails and changes nothing.
    let err = daemon.oxvirt(&["pool-start", "p1"]).error();
    assert!(
        err.contains("Failed to start pool p1") && err.contains("does not exist"),
        "{err}"
    );
    assert_eq!(
        daemon.oxvirt(&["pool-list", "--all"]).ok(),
        inactive_listing
    );

    assert_eq!(
        daemon.oxvirt(&["pool-build", "p1"]).ok(),
        "Pool p1 built\n\n"
    );
    assert!(target.is_dir());
    assert_eq!(
        daemon.oxvirt(&["pool-start", "p1"]).ok(),
        "Pool p1 started\n\n"
    );
    let err = daemon.oxvirt(&["pool-start", "p1"]).error();
    assert!(err.contains("'p1' is already active"), "{err}");
    assert_eq!(
        daemon.oxvirt(&["pool-autostart", "p1"]).ok(),
        "Pool p1 marked as autostarted\n\n"
    );
    assert_eq!(
        daemon.oxvirt(&["pool-list"]).ok(),
        " Name   State    Autostart\n\
         ----------------------------\n \
         p1     active   yes\n\n"
    );
    assert_eq!(
        daemon.oxvirt(&["pool-autostart", "--disable", "p1"]).ok(),
        "Pool p1 unmarked as autostarted\n\n"
    );
    assert_eq!(
        daemon
            .oxvirt(&["pool-list", "--inactive"])
            .ok()
            .lines()
            .count(),
        3
    );

    // Active: file system figures from statvfs, as virsh shows them.
    let capacity = pretty(statvfs_capacity(&target));
    let info = daemon.oxvirt(&["pool-info", uuid.as_str()]).ok();
    let lines: Vec<&str> = info.lines().collect();
    assert_eq!(lines[0], "Name:           p1", "{info}");
    assert_eq!(lines[2], "State:          running", "{info}");
    assert_eq!(lines[5], format!("Capacity:       {capacity}"), "{info}");
    assert!(lines[6].starts_with("Allocation:     "), "{info}");
    assert!(lines[7].starts_with("Available:      "), "{info}");
    let details = daemon.oxvirt(&["pool-list", "--details"]).ok();
    let row = details.lines().nth(2).expect("a pool row");
    assert!(
        row.starts_with(" p1     running   no          yes          ") && row.contains(&capacity),
        "{details}"
    );

    let xml = daemon.oxvirt(&["pool-dumpxml", "p1"]).ok();
    assert!(
        xml.starts_with("<pool type='dir'>\n  <name>p1</name>\n"),
        "{xml}"
    );
    assert!(xml.contains(&format!("<uuid>{uuid}</uuid>")), "{xml}");
    assert!(
        xml.contains(&format!("<path>{}</path>", target.display())),
        "{xml}"
    );
    assert_eq!(
        daemon.oxvirt(&["pool-refresh", "p1"]).ok(),
        "Pool p1 refreshed\n\n"
    );

    // pool-define from a file; a second pool on the same directory is refused.
    let second = daemon.dir.path().join("p2.xml");
    std::fs::write(
        &second,
        format!(
            "<pool type='dir'><name>p2</name><target><path>{}/other</path></target></pool>",
            daemon.dir.path().display()
        ),
    )
    .unwrap();
    assert_eq!(
        daemon.oxvirt(&["pool-define", path_str(&second)]).ok(),
        format!("Pool p2 defined from {}\n\n", second.display())
    );
    let before = daemon.oxvirt(&["pool-list", "--all"]).ok();
    let err = daemon
        .oxvirt(&["pool-define-as", "p3", "dir", "--target", path_str(&target)])
        .error();
    assert!(
        err.contains("storage pool 'p1' already uses the directory"),
        "{err}"
    );
    let err = daemon
        .oxvirt(&["pool-define-as", "p3", "dir", "--target", "relative/dir"])
        .error();
    assert!(err.contains("is not absolute"), "{err}");
    let err = daemon
        .oxvirt(&["pool-define-as", "p3", "logical", "--target", "/x"])
        .error();
    assert!(err.contains("not supported"), "{err}");
    // The dumped XML of an active pool cannot redefine it.
    let dumped = daemon.dir.path().join("p1.xml");
    std::fs::write(&dumped, &xml).unwrap();
    let err = daemon.oxvirt(&["pool-define", path_str(&dumped)]).error();
    assert!(err.contains("'p1' is active"), "{err}");
    assert_eq!(daemon.oxvirt(&["pool-list", "--all"]).ok(), before);

    let err = daemon.oxvirt(&["pool-info", "nosuch"]).error();
    assert_eq!(err, "error: storage pool 'nosuch' not found");

    let err = daemon.oxvirt(&["pool-undefine", "p1"]).error();
    assert!(err.contains("still active"), "{err}");
    assert_eq!(
        daemon.oxvirt(&["pool-destroy", "p1"]).ok(),
        "Pool p1 destroyed\n\n"
    );
    let err = daemon.oxvirt(&["pool-destroy", "p1"]).error();
    assert!(err.contains("'p1' is not active"), "{err}");
    let err = daemon.oxvirt(&["vol-list", "p1"]).error();
    assert!(err.contains("'p1' is not active"), "{err}");
    assert_eq!(
        daemon.oxvirt(&["pool-undefine", "p1"]).ok(),
        "Pool p1 has been undefined\n\n"
    );
    assert!(target.is_dir(), "undefine keeps the directory");
    assert_eq!(
        daemon.oxvirt(&["pool-list", "--all", "--name"]).ok(),
        "p2\n\n"
    );
}

#[test]
fn volumes_are_images_qemu_accepts() {
    let (daemon, pool) = daemon_with_pool();
    assert_eq!(
        daemon
            .oxvirt(&[
                "vol-create-as",
                "p1",
                "disk.qcow2",
                "64M",
                "--format",
                "qcow2"
            ])
            .ok(),
        "Vol disk.qcow2 created\n\n"
    );
    daemon
        .oxvirt(&[
            "vol-create-as",
            "p1",
            "base.raw",
            "10MiB",
            "--format",
            "raw",
        ])
        .ok();
    daemon
        .oxvirt(&[
            "vol-create-as",
            "p1",
            "meta.qcow2",
            "8M",
            "--format",
            "qcow2",
            "--prealloc-metadata",
        ])
        .ok();
    daemon
        .oxvirt(&[
            "vol-create-as",
            "p1",
            "overlay.qcow2",
            "20M",
            "--format",
            "qcow2",
            "--backing-vol",
            "base.raw",
            "--backing-vol-format",
            "raw",
        ])
        .ok();

    for name in ["disk.qcow2", "meta.qcow2", "overlay.qcow2"] {
        assert_qemu_img_check_clean(&pool.join(name));
    }
    let info = qemu_img_info(&pool.join("disk.qcow2"));
    assert!(info.contains("\"format\": \"qcow2\""), "{info}");
    assert!(
        info.contains(&format!("\"virtual-size\": {}", 64 * MIB)),
        "{info}"
    );
    let info = qemu_img_info(&pool.join("base.raw"));
    assert!(info.contains("\"format\": \"raw\""), "{info}");
    assert!(
        info.contains(&format!("\"virtual-size\": {}", 10 * MIB)),
        "{info}"
    );
    let base = pool.join("base.raw");
    let info = qemu_img_info(&pool.join("overlay.qcow2"));
    assert!(
        info.contains(&format!("\"backing-filename\": \"{}\"", base.display()))
            && info.contains("\"backing-filename-format\": \"raw\""),
        "{info}"
    );
    // Metadata preallocation maps every cluster.
    let (_, check) = qemu_img(&["check", path_str(&pool.join("meta.qcow2"))]);
    assert!(check.contains("100.00% allocated"), "{check}");

    // Listings.
    let p = pool.display();
    assert_eq!(
        daemon.oxvirt(&["vol-list", "p1"]).ok(),
        format!(
            " Name            Path\n\
             {dashes}\n \
             base.raw        {p}/base.raw\n \
             disk.qcow2      {p}/disk.qcow2\n \
             meta.qcow2      {p}/meta.qcow2\n \
             overlay.qcow2   {p}/overlay.qcow2\n\n",
            dashes = "-".repeat(1 + 13 + 3 + format!("{p}/overlay.qcow2").len() + 2)
        )
    );
    let details = daemon.oxvirt(&["vol-list", "p1", "--details"]).ok();
    let raw_row = details
        .lines()
        .find(|l| l.starts_with(" base.raw "))
        .expect("base.raw row");
    assert!(raw_row.contains(" file   10.00 MiB   "), "{details}");
    let allocation = std::fs::metadata(pool.join("disk.qcow2")).unwrap().blocks() * 512;
    assert_eq!(
        daemon
            .oxvirt(&["vol-info", "disk.qcow2", "--pool", "p1"])
            .ok(),
        format!(
            "Name:           disk.qcow2\nType:           file\nCapacity:       64.00 MiB\n\
             Allocation:     {}\n\n",
            pretty(allocation)
        )
    );
    // By path, without --pool.
    let by_path = pool.join("disk.qcow2");
    assert!(daemon
        .oxvirt(&["vol-info", path_str(&by_path)])
        .ok()
        .starts_with("Name:           disk.qcow2\n"));
    assert_eq!(
        daemon
            .oxvirt(&["vol-path", "--pool", "p1", "base.raw"])
            .ok(),
        format!("{p}/base.raw\n\n")
    );
    let xml = daemon
        .oxvirt(&["vol-dumpxml", "overlay.qcow2", "--pool", "p1"])
        .ok();
    assert!(
        xml.starts_with("<volume type='file'>\n  <name>overlay.qcow2</name>\n"),
        "{xml}"
    );
    assert!(
        xml.contains(&format!("<capacity unit='bytes'>{}</capacity>", 20 * MIB)),
        "{xml}"
    );
    assert!(xml.contains("<format type='qcow2'/>"), "{xml}");
    assert!(
        xml.contains(&format!(
            "<backingStore>\n    <path>{p}/base.raw</path>\n    <format type='raw'/>\n  </backingStore>"
        )),
        "{xml}"
    );

    // Bad input: a clear error, exit 1, nothing changed.
    let before = listing(&pool);
    for (args, want) in [
        (
            vec!["vol-create-as", "nopool", "x", "1M"],
            "storage pool 'nopool' not found",
        ),
        (
            vec!["vol-create-as", "p1", "../x", "1M"],
            "invalid storage volume name '../x'",
        ),
        (
            vec!["vol-create-as", "p1", ".hidden", "1M"],
            "invalid storage volume name '.hidden'",
        ),
        (
            vec![
                "vol-create-as",
                "p1",
                "disk.qcow2",
                "1M",
                "--format",
                "qcow2",
            ],
            "storage volume 'disk.qcow2' already exists in pool 'p1'",
        ),
        (
            vec!["vol-create-as", "p1", "x", "1Gx"],
            "Malformed size 1Gx: invalid argument: unknown suffix 'Gx'",
        ),
        (
            vec![
                "vol-create-as",
                "p1",
                "x",
                "1M",
                "--format",
                "raw",
                "--prealloc-metadata",
            ],
            "Failed to create vol x",
        ),
        (
            vec![
                "vol-create-as",
                "p1",
                "x",
                "1M",
                "--format",
                "qcow2",
                "--backing-vol",
                "nope",
            ],
            "backing volume 'nope' not found in pool 'p1'",
        ),
        (
            vec!["vol-info", "../disk.qcow2", "--pool", "p1"],
            "invalid storage volume name",
        ),
        (
            vec!["vol-delete", "missing", "--pool", "p1"],
            "storage volume 'missing' not found in pool 'p1'",
        ),
        (
            vec!["vol-clone", "disk.qcow2", "base.raw", "--pool", "p1"],
            "storage volume 'base.raw' already exists",
        ),
        (
            vec!["vol-info", "disk.qcow2"],
            "no storage volume with matching path",
        ),
    ] {
        let err = daemon.oxvirt(&args).error();
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(listing(&pool), before, "{args:?} changed the pool");
    }
    let err = daemon
        .oxvirt(&["vol-create-as", "p1", "x", "1M", "--format", "vmdk"])
        .error();
    assert!(err.contains("vmdk"), "{err}");
    assert_eq!(listing(&pool), before);

    // vol-resize: grow, refuse to shrink without --shrink, shrink with it.
    let disk = pool.join("disk.qcow2");
    assert_eq!(
        daemon
            .oxvirt(&["vol-resize", "disk.qcow2", "128M", "--pool", "p1"])
            .ok(),
        "Size of volume 'disk.qcow2' successfully changed to 128M\n\n"
    );
    assert!(qemu_img_info(&disk).contains(&format!("\"virtual-size\": {}", 128 * MIB)));
    let err = daemon
        .oxvirt(&["vol-resize", "disk.qcow2", "32M", "--pool", "p1"])
        .error();
    assert!(err.contains("use --shrink"), "{err}");
    assert!(qemu_img_info(&disk).contains(&format!("\"virtual-size\": {}", 128 * MIB)));
    daemon
        .oxvirt(&[
            "vol-resize",
            "disk.qcow2",
            "-64M",
            "--shrink",
            "--pool",
            "p1",
        ])
        .ok();
    assert!(qemu_img_info(&disk).contains(&format!("\"virtual-size\": {}", 64 * MIB)));
    daemon
        .oxvirt(&["vol-resize", "disk.qcow2", "+1M", "--delta", "--pool", "p1"])
        .error();
    daemon
        .oxvirt(&["vol-resize", "disk.qcow2", "1M", "--delta", "--pool", "p1"])
        .ok();
    assert!(qemu_img_info(&disk).contains(&format!("\"virtual-size\": {}", 65 * MIB)));
    assert_qemu_img_check_clean(&disk);

    // vol-delete removes the file.
    assert_eq!(
        daemon
            .oxvirt(&["vol-delete", "meta.qcow2", "--pool", "p1"])
            .ok(),
        "Vol meta.qcow2 deleted\n\n"
    );
    assert!(!pool.join("meta.qcow2").exists());
}

#[test]
fn vol_clone_keeps_format_content_and_holes() {
    let (daemon, pool) = daemon_with_pool();
    daemon
        .oxvirt(&["vol-create-as", "p1", "src.raw", "64M"])
        .ok();
    daemon
        .oxvirt(&[
            "vol-create-as",
            "p1",
            "src.qcow2",
            "64M",
            "--format",
            "qcow2",
        ])
        .ok();
    // 64 KiB of data at 1 MiB and at 40 MiB; the rest stays holes / unallocated.
    let raw = std::fs::OpenOptions::new()
        .write(true)
        .open(pool.join("src.raw"))
        .unwrap();
    raw.write_all_at(&[0xab; 65536], MIB).unwrap();
    raw.write_all_at(&[0xcd; 65536], 40 * MIB).unwrap();
    drop(raw);
    let output = Command::new("qemu-io")
        .args([
            "-f",
            "qcow2",
            "-c",
            "write -P 0xab 1M 64k",
            "-c",
            "write -P 0xcd 40M 64k",
        ])
        .arg(pool.join("src.qcow2"))
        .output()
        .expect("run qemu-io");
    assert!(output.status.success(), "{output:?}");

    for (source, clone, format) in [
        ("src.raw", "clone.raw", "raw"),
        ("src.qcow2", "clone.qcow2", "qcow2"),
    ] {
        assert_eq!(
            daemon
                .oxvirt(&["vol-clone", source, clone, "--pool", "p1"])
                .ok(),
            format!("Vol {clone} cloned from {source}\n\n")
        );
        let clone_path = pool.join(clone);
        let info = qemu_img_info(&clone_path);
        assert!(
            info.contains(&format!("\"format\": \"{format}\"")),
            "{info}"
        );
        assert!(
            info.contains(&format!("\"virtual-size\": {}", 64 * MIB)),
            "{info}"
        );
        let (code, out) = qemu_img(&[
            "compare",
            path_str(&pool.join(source)),
            path_str(&clone_path),
        ]);
        assert_eq!(code, Some(0), "{source} vs {clone}: {out}");
        // Holes stay holes: about 128 KiB of data (plus qcow2 metadata), not 64 MiB.
        let allocated = std::fs::metadata(&clone_path).unwrap().blocks() * 512;
        assert!(
            allocated < 2 * MIB,
            "{clone} has {allocated} bytes allocated"
        );
        if format == "qcow2" {
            assert_qemu_img_check_clean(&clone_path);
        }
    }
}

#[test]
fn vol_create_reads_what_vol_dumpxml_prints() {
    let (daemon, pool) = daemon_with_pool();
    daemon
        .oxvirt(&["vol-create-as", "p1", "base.raw", "4M"])
        .ok();
    daemon
        .oxvirt(&[
            "vol-create-as",
            "p1",
            "web.qcow2",
            "16M",
            "--format",
            "qcow2",
            "--backing-vol",
            "base.raw",
            "--backing-vol-format",
            "raw",
        ])
        .ok();

    // vol-dumpxml, renamed (name, key and path; the latter two are ignored on create), gives
    // an equal volume: what vol-dumpxml prints of it is the edited XML.
    let dumped = daemon
        .oxvirt(&["vol-dumpxml", "web.qcow2", "--pool", "p1"])
        .ok();
    let edited = dumped.replace("web.qcow2", "copy.qcow2");
    let file = daemon.dir.path().join("copy.xml");
    std::fs::write(&file, &edited).unwrap();
    assert_eq!(
        daemon.oxvirt(&["vol-create", "p1", path_str(&file)]).ok(),
        format!("Vol copy.qcow2 created from {}\n\n", file.display())
    );
    assert_eq!(
        daemon
            .oxvirt(&["vol-dumpxml", "copy.qcow2", "--pool", "p1"])
            .ok(),
        edited
    );
    assert_qemu_img_check_clean(&pool.join("copy.qcow2"));

    // Units as libvirt; no <allocation> means all of it (space reserved up front), 0 sparse.
    for (name, allocation) in [
        ("full.raw", ""),
        ("sparse.raw", "<allocation>0</allocation>"),
    ] {
        let file = daemon.dir.path().join(format!("{name}.xml"));
        std::fs::write(
            &file,
            format!(
                "<volume><name>{name}</name><capacity unit='MiB'>2</capacity>{allocation}</volume>"
            ),
        )
        .unwrap();
        daemon.oxvirt(&["vol-create", "p1", path_str(&file)]).ok();
        let meta = std::fs::metadata(pool.join(name)).unwrap();
        assert_eq!(meta.len(), 2 * MIB, "{name}");
        let allocated = meta.blocks() * 512;
        if allocation.is_empty() {
            assert!(allocated >= 2 * MIB, "{name}: {allocated} bytes allocated");
        } else {
            assert_eq!(allocated, 0, "{name}");
        }
    }

    // libvirt's qcow2 details: compat 1.1 (what oxvirt makes) and a cluster size.
    let file = daemon.dir.path().join("clusters.xml");
    std::fs::write(
        &file,
        "<volume><name>big-clusters.qcow2</name><capacity unit='MiB'>4</capacity>\
         <target><format type='qcow2'/><compat>1.1</compat>\
         <clusterSize unit='KiB'>128</clusterSize><features/></target></volume>",
    )
    .unwrap();
    daemon.oxvirt(&["vol-create", "p1", path_str(&file)]).ok();
    let info = qemu_img_info(&pool.join("big-clusters.qcow2"));
    assert!(info.contains("\"cluster-size\": 131072"), "{info}");

    // Bad XML: exit status 1, the element and its line, and no file.
    let before = listing(&pool);
    let bad = daemon.dir.path().join("bad.xml");
    std::fs::write(
        &bad,
        "<volume type='file'>
  <name>bad.qcow2</name>
  <capacity unit='M'>1</capacity>
  <target>
    <format type='qcow2'/>
    <compat>0.10</compat>
  </target>
</volume>
",
    )
    .unwrap();
    let err = daemon.oxvirt(&["vol-create", "p1", path_str(&bad)]).error();
    assert!(
        err.contains(&format!("Failed to create vol from {}", bad.display()))
            && err.contains("'0.10'")
            && err.contains("<target/compat> at line 6"),
        "{err}"
    );
    std::fs::write(
        &bad,
        "<volume>\n<name>x</name>\n<capacity unit='parsecs'>1</capacity></volume>",
    )
    .unwrap();
    let err = daemon.oxvirt(&["vol-create", "p1", path_str(&bad)]).error();
    assert!(
        err.contains("'parsecs'") && err.contains("<capacity> at line 3"),
        "{err}"
    );
    assert_eq!(listing(&pool), before);
}

/// A paused QEMU holding a disk open (with QEMU's image locks), killed on drop.
struct LockHolder(Child);

impl Drop for LockHolder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn vol_delete_is_refused_while_a_process_holds_the_image_lock() {
    let (daemon, pool) = daemon_with_pool();
    daemon
        .oxvirt(&[
            "vol-create-as",
            "p1",
            "held.qcow2",
            "16M",
            "--format",
            "qcow2",
        ])
        .ok();
    let held = pool.join("held.qcow2");
    let _qemu = LockHolder(
        Command::new("qemu-system-x86_64")
            .args(["-accel", "tcg", "-S", "-display", "none", "-nodefaults"])
            .arg("-drive")
            .arg(format!("file={},format=qcow2,if=virtio", held.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn qemu"),
    );
    // QEMU holds its locks once a locked qemu-img info fails.
    let locked = wait_for(Duration::from_secs(20), || {
        qemu_img(&["info", path_str(&held)]).0 != Some(0)
    });
    assert!(locked, "QEMU never locked {}", held.display());
    let err = daemon
        .oxvirt(&["vol-delete", "held.qcow2", "--pool", "p1"])
        .error();
    assert!(
        err.contains("Failed to delete vol held.qcow2") && err.contains("in use"),
        "{err}"
    );
    assert!(held.exists());
    // Resizing is refused as well; info still works (it reads without locks).
    daemon
        .oxvirt(&["vol-resize", "held.qcow2", "32M", "--pool", "p1"])
        .error();
    assert!(daemon
        .oxvirt(&["vol-info", "held.qcow2", "--pool", "p1"])
        .ok()
        .contains("Capacity:       16.00 MiB"));
}

/// Keeps kernel messages (a clocksource watchdog note on a loaded host, say) off the guest's
/// console, so they cannot land inside a command's output.
fn quiet_kernel(console: &mut support::ConsoleSession, tag: &mut u32) {
    *tag += 1;
    console.run("dmesg -n 1", *tag);
}

/// Runs `command` in the guest until its output satisfies `done` (the guest may need a moment
/// to notice a change), returning the last output.
fn guest_wait(
    console: &mut support::ConsoleSession,
    command: &str,
    tag: &mut u32,
    done: impl Fn(&str) -> bool,
) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        *tag += 1;
        let out = console.run(command, *tag);
        if done(out.trim()) || std::time::Instant::now() > deadline {
            return out.trim().to_string();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn guest_writes_to_a_qcow2_volume_and_sees_blockresize() {
    let kit = guest_kit();
    let (daemon, pool) = daemon_with_pool();
    daemon
        .oxvirt(&[
            "vol-create-as",
            "p1",
            "guest.qcow2",
            "16M",
            "--format",
            "qcow2",
        ])
        .ok();
    let disk = PathBuf::from(
        daemon
            .oxvirt(&["vol-path", "guest.qcow2", "--pool", "p1"])
            .ok()
            .trim(),
    );
    assert_eq!(disk, pool.join("guest.qcow2"));
    // The domain crate has no <disk type='volume'> yet: the disk names the volume's path.
    let xml = guest_xml(
        "vol-guest",
        "6b0c7a52-1d3e-4f5a-8b9c-0d1e2f3a4b5c",
        &kit,
        &disk,
        1,
    )
    .replace("type='raw'", "type='qcow2'");
    daemon.define("vol-guest.xml", &xml).1.ok();
    daemon.oxvirt(&["start", "vol-guest"]).ok();
    let mut console = daemon.console("vol-guest");
    console.expect_text(BOOT_MARKER, BOOT_TIMEOUT);
    console.expect_text(PROMPT, BOOT_TIMEOUT);
    let mut tag = 0;
    quiet_kernel(&mut console, &mut tag);
    assert_eq!(
        guest_wait(&mut console, "cat /sys/block/vda/size", &mut tag, |_| true),
        (16 * MIB / 512).to_string()
    );

    // The running guest's volume cannot be deleted.
    let err = daemon
        .oxvirt(&["vol-delete", "guest.qcow2", "--pool", "p1"])
        .error();
    assert!(
        err.contains("in use by running domain 'vol-guest'"),
        "{err}"
    );
    assert!(disk.exists());

    // blockresize: bad target and shrinking are refused; growing reaches the guest.
    let err = daemon
        .oxvirt(&["blockresize", "vol-guest", "vdz", "32M"])
        .error();
    assert!(err.contains("has no disk 'vdz'"), "{err}");
    let err = daemon
        .oxvirt(&["blockresize", "vol-guest", "vda", "8M"])
        .error();
    assert!(err.contains("not supported"), "{err}");
    assert_eq!(
        daemon
            .oxvirt(&["blockresize", "vol-guest", "vda", "32M"])
            .ok(),
        "Block device 'vda' is resized\n\n"
    );
    let want = (32 * MIB / 512).to_string();
    assert_eq!(
        guest_wait(&mut console, "cat /sys/block/vda/size", &mut tag, |s| s
            == want),
        want
    );
    assert!(qemu_img_info(&disk).contains(&format!("\"virtual-size\": {}", 32 * MIB)));

    // A known pattern at 1 MiB and past the old end (20 MiB), written by the guest.
    tag += 1;
    let wrote = console.run(
        "yes OXVIRT-PATTERN | head -c 1048576 > /pattern.bin && \
         dd if=/pattern.bin of=/dev/vda bs=65536 seek=16 2>/dev/null && \
         dd if=/pattern.bin of=/dev/vda bs=65536 seek=320 2>/dev/null && sync && echo WROTE-$((20+1))",
        tag,
    );
    assert_eq!(wrote.trim(), "WROTE-21");
    drop(console);
    let shutdown = daemon
        .oxvirt(&["shutdown", "--timeout", "60", "vol-guest"])
        .ok();
    assert!(shutdown.contains("is shut off"), "{shutdown}");

    // Our own checker and converter read back what the guest wrote.
    let check = daemon.oxvirt(&["img", "check", path_str(&disk)]);
    assert_eq!(check.code, Some(0), "{check:#?}");
    assert_qemu_img_check_clean(&disk);
    let flat = converted_to_raw(&daemon, &disk, "flat.raw");
    assert_eq!(flat.len() as u64, 32 * MIB);
    let pattern = repeated(b"OXVIRT-PATTERN\n", MIB);
    let at = |offset: u64| &flat[offset as usize..(offset + MIB) as usize];
    assert!(at(MIB) == pattern.as_slice(), "pattern at 1 MiB differs");
    assert!(
        at(20 * MIB) == pattern.as_slice(),
        "pattern at 20 MiB differs"
    );
    assert!(
        flat[..MIB as usize].iter().all(|&b| b == 0),
        "first MiB not zero"
    );

    // Shut off, the volume can go.
    daemon.oxvirt(&["undefine", "vol-guest"]).ok();
    daemon
        .oxvirt(&["vol-delete", "guest.qcow2", "--pool", "p1"])
        .ok();
    assert!(!disk.exists());
}

/// `guest_xml` with its disk replaced by `disk` (a whole `<disk>` element).
fn guest_xml_with_disk(
    name: &str,
    uuid: &str,
    kit: &oxvirt_testkit::GuestKit,
    disk: &str,
) -> String {
    let xml = guest_xml(name, uuid, kit, Path::new("/unused"), 1);
    let start = xml.find("    <disk ").expect("guest_xml has a disk");
    let end = xml.find("</disk>\n").expect("guest_xml has a disk") + "</disk>\n".len();
    format!("{}{disk}\n{}", &xml[..start], &xml[end..])
}

/// `<disk type='volume'>` naming `pool`/`volume`, with `driver` as its `<driver>` element.
fn volume_disk(driver: &str, pool: &str, volume: &str) -> String {
    format!(
        "    <disk type='volume' device='disk'>
      {driver}
      <source pool='{pool}' volume='{volume}'/>
      <target dev='vda' bus='virtio'/>
    </disk>"
    )
}

#[test]
fn guest_boots_from_a_volume_disk_named_by_pool_and_volume() {
    const NAME: &str = "volref-guest";
    const UUID: &str = "2f1e7c3a-5b6d-4e8f-9a0b-1c2d3e4f5a6b";
    let kit = guest_kit();
    let (daemon, pool) = daemon_with_pool();
    daemon
        .oxvirt(&[
            "vol-create-as",
            "p1",
            "vm.qcow2",
            "16M",
            "--format",
            "qcow2",
        ])
        .ok();
    let disk = pool.join("vm.qcow2");
    // p2 exists but is not started.
    let p2 = daemon.dir.path().join("pool2");
    daemon
        .oxvirt(&["pool-define-as", "p2", "dir", "--target", path_str(&p2)])
        .ok();
    daemon.oxvirt(&["pool-build", "p2"]).ok();
    let qcow2 = "<driver name='qemu' type='qcow2'/>";
    let define = |disk: &str| {
        let xml = guest_xml_with_disk(NAME, UUID, &kit, disk);
        daemon.define("volref.xml", &xml).1.ok();
    };

    // Start refuses, naming the disk and what is wrong, and changes nothing.
    let before = std::fs::read(&disk).expect("read volume");
    let refused = [
        (
            volume_disk(qcow2, "nopool", "vm.qcow2"),
            "storage pool 'nopool' not found",
        ),
        (
            volume_disk(qcow2, "p2", "vm.qcow2"),
            "storage pool 'p2' is not active",
        ),
        (
            volume_disk(qcow2, "p1", "absent.qcow2"),
            "storage volume 'absent.qcow2' not found in pool 'p1'",
        ),
        (
            volume_disk("<driver name='qemu' type='raw'/>", "p1", "vm.qcow2"),
            "<driver type='raw'> does not match storage volume 'vm.qcow2' in pool 'p1', which is qcow2",
        ),
    ];
    for (disk_xml, why) in refused {
        define(&disk_xml);
        let err = daemon.oxvirt(&["start", NAME]).error();
        assert!(
            err.contains(&format!("cannot start domain '{NAME}': disk 'vda': {why}")),
            "{err}"
        );
        assert_eq!(daemon.oxvirt(&["domstate", NAME]).ok(), "shut off\n\n");
    }
    assert!(
        std::fs::read(&disk).expect("read volume") == before,
        "volume changed"
    );

    // The stated format matches: the guest sees the volume and writes a pattern at 1 MiB.
    define(&volume_disk(qcow2, "p1", "vm.qcow2"));
    daemon.oxvirt(&["start", NAME]).ok();
    let mut console = daemon.console(NAME);
    console.expect_text(BOOT_MARKER, BOOT_TIMEOUT);
    console.expect_text(PROMPT, BOOT_TIMEOUT);
    let mut tag = 0;
    quiet_kernel(&mut console, &mut tag);
    tag += 1;
    assert_eq!(
        console.run("cat /sys/block/vda/size", tag).trim(),
        (16 * MIB / 512).to_string()
    );
    tag += 1;
    let wrote = console.run(
        "yes OXVIRT-VOLREF | head -c 1048576 > /pattern.bin && \
         dd if=/pattern.bin of=/dev/vda bs=65536 seek=16 2>/dev/null && sync && echo WROTE-$((1+1))",
        tag,
    );
    assert_eq!(wrote.trim(), "WROTE-2");
    // dumpxml shows what the user wrote, not the resolved file.
    let xml = daemon.oxvirt(&["dumpxml", NAME]).ok();
    assert!(xml.contains("<disk type='volume' device='disk'>"), "{xml}");
    assert!(
        xml.contains("<source pool='p1' volume='vm.qcow2'/>"),
        "{xml}"
    );
    assert!(!xml.contains(path_str(&disk)), "{xml}");
    // The volume reference counts as a use: the running guest's volume cannot be deleted.
    let err = daemon
        .oxvirt(&["vol-delete", "vm.qcow2", "--pool", "p1"])
        .error();
    assert!(
        err.contains(&format!("in use by running domain '{NAME}'")),
        "{err}"
    );
    drop(console);
    let shutdown = daemon.oxvirt(&["shutdown", "--timeout", "60", NAME]).ok();
    assert!(shutdown.contains("is shut off"), "{shutdown}");

    // What the guest wrote is in the volume.
    let flat = converted_to_raw(&daemon, &disk, "volref.raw");
    assert_eq!(flat.len() as u64, 16 * MIB);
    let pattern = repeated(b"OXVIRT-VOLREF\n", MIB);
    assert!(
        flat[MIB as usize..2 * MIB as usize] == pattern[..],
        "pattern at 1 MiB differs"
    );

    // Without <driver type=> the format comes from the image: the guest sees the qcow2
    // volume's 16 MiB and its data (read as raw it would see the qcow2 file itself).
    define(&volume_disk("<driver name='qemu'/>", "p1", "vm.qcow2"));
    let xml = daemon.oxvirt(&["dumpxml", NAME]).ok();
    assert!(xml.contains("<driver name='qemu'/>"), "{xml}");
    daemon.oxvirt(&["start", NAME]).ok();
    let mut console = daemon.console(NAME);
    console.expect_text(BOOT_MARKER, BOOT_TIMEOUT);
    console.expect_text(PROMPT, BOOT_TIMEOUT);
    quiet_kernel(&mut console, &mut tag);
    tag += 1;
    assert_eq!(
        console.run("cat /sys/block/vda/size", tag).trim(),
        (16 * MIB / 512).to_string()
    );
    tag += 1;
    assert_eq!(
        console
            .run(
                "dd if=/dev/vda bs=65536 skip=16 count=1 2>/dev/null | head -n 1",
                tag
            )
            .trim(),
        "OXVIRT-VOLREF"
    );
    drop(console);
    daemon.oxvirt(&["destroy", NAME]).ok();
    daemon.oxvirt(&["undefine", NAME]).ok();
    daemon
        .oxvirt(&["vol-delete", "vm.qcow2", "--pool", "p1"])
        .ok();
}

/// `oxvirt img convert -O raw IMAGE` into FILE_NAME in the daemon's directory; returns the raw bytes.
fn converted_to_raw(daemon: &Daemon, image: &Path, file_name: &str) -> Vec<u8> {
    let raw = daemon.dir.path().join(file_name);
    daemon
        .oxvirt(&[
            "img",
            "convert",
            "-O",
            "raw",
            path_str(image),
            path_str(&raw),
        ])
        .ok();
    std::fs::read(&raw).expect("read converted image")
}

/// `text` repeated to exactly `len` bytes: what `yes TEXT | head -c LEN` writes in the guest.
fn repeated(text: &[u8], len: u64) -> Vec<u8> {
    text.iter().copied().cycle().take(len as usize).collect()
}

#[test]
fn domblklist_lists_the_disks_of_a_definition() {
    let daemon = Daemon::start();
    let kit = oxvirt_testkit::guest_kit();
    let disks = "    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/img/root.qcow2'/><target dev='vda' bus='virtio'/></disk>
    <disk type='volume' device='disk'><source pool='p1' volume='data.raw'/><target dev='vdb' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><target dev='hdc' bus='ide'/><readonly/></disk>";
    let xml = guest_xml_with_disk("disky", "8f1f3c2a-5b6d-4e7f-9a0b-1c2d3e4f5a6b", &kit, disks);
    daemon.define("disky.xml", &xml).1.ok();
    assert_eq!(
        daemon.oxvirt(&["domblklist", "disky"]).ok(),
        " Target   Source\n\
         ---------------------------\n \
         vda      /img/root.qcow2\n \
         vdb      data.raw\n \
         hdc      -\n\n"
    );
    assert_eq!(
        daemon.oxvirt(&["domblklist", "disky", "--details"]).ok(),
        " Type     Device   Target   Source\n\
         ---------------------------------------------\n \
         file     disk     vda      /img/root.qcow2\n \
         volume   disk     vdb      data.raw\n \
         file     cdrom    hdc      -\n\n"
    );
    let err = daemon.oxvirt(&["domblklist", "nosuch"]).error();
    assert!(err.contains("'nosuch'"), "{err}");
}
