//! Locking against a running QEMU, and surviving kill -9 in the middle of a convert.

mod imgsupport;

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use imgsupport::*;
use oxvirt_images::{Image, OpenOptions};

/// Kills the child process when dropped (also when the test fails).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// True once some process holds an OFD lock on `path` at `byte` (from /proc/locks).
fn has_lock_at(path: &Path, byte: u64) -> bool {
    let inode = std::fs::metadata(path).unwrap().ino();
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    locks.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // "N: OFDLCK ADVISORY READ -1 MAJ:MIN:INODE START END"
        fields.len() >= 8
            && fields[1] == "OFDLCK"
            && fields[5].rsplit(':').next() == Some(&inode.to_string())
            && fields[6].parse::<u64>().is_ok_and(|s| s <= byte)
            && fields[7].parse::<u64>().is_ok_and(|e| e >= byte)
    })
}

fn start_qemu(image: &Path) -> KillOnDrop {
    let child = spawn(
        Command::new("qemu-system-x86_64")
            .args([
                "-accel",
                "tcg",
                "-nodefaults",
                "-display",
                "none",
                "-S",
                "-drive",
            ])
            .arg(format!("file={},if=virtio,format=qcow2", image.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    KillOnDrop(child)
}

#[test]
fn a_running_guest_and_oxvirt_img_exclude_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.qcow2");
    ours_ok(&["create", "-q", "-f", "qcow2", p(&img), "16M"]);

    {
        let _qemu = start_qemu(&img);
        assert!(
            wait_for(Duration::from_secs(30), || has_lock_at(&img, 101)),
            "QEMU never took its write lock"
        );
        for args in [
            vec!["info", p(&img)],
            vec!["check", p(&img)],
            vec!["snapshot", "-c", "s", p(&img)],
            vec!["resize", p(&img), "+1M"],
            vec![
                "convert",
                "-O",
                "raw",
                p(&img),
                p(&dir.path().join("copy.raw")),
            ],
            vec!["create", "--force", "-f", "raw", p(&img), "1M"],
        ] {
            let out = ours(&args);
            assert_eq!(
                out.status.code(),
                Some(1),
                "{args:?} must fail: {}",
                text(&out)
            );
            assert!(text(&out).contains("lock"), "{args:?}: {}", text(&out));
        }
        // -U reads anyway, like qemu-img.
        ours_ok(&["info", "-U", p(&img)]);
    }
    // QEMU is gone: the locks went with it.
    assert!(wait_for(Duration::from_secs(10), || !has_lock_at(
        &img, 101
    )));
    ours_ok(&["info", p(&img)]);

    // The other direction: while we hold the image for writing, QEMU and qemu-img stay out.
    let held = Image::open(
        &img,
        &OpenOptions {
            write: true,
            ..OpenOptions::default()
        },
    )
    .unwrap();
    let out = run("qemu-img", &["info", p(&img)]);
    assert!(
        !out.status.success(),
        "qemu-img info must fail: {}",
        text(&out)
    );
    assert!(
        text(&out).contains("Failed to get shared \"write\" lock"),
        "{}",
        text(&out)
    );
    let qemu = start_qemu(&img);
    let output = {
        let mut qemu = qemu;
        let exited = wait_for(Duration::from_secs(30), || {
            qemu.0.try_wait().ok().flatten().is_some()
        });
        assert!(exited, "QEMU started although the image is locked");
        let mut stderr = String::new();
        if let Some(mut e) = qemu.0.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut stderr);
        }
        stderr
    };
    assert!(output.contains("lock"), "QEMU's complaint: {output}");
    close(held);
    ok("qemu-img", &["info", p(&img)]);

    // Readers share: two read-only users (us and qemu-img) coexist.
    let _reader = Image::open(&img, &OpenOptions::default()).unwrap();
    ok("qemu-img", &["info", p(&img)]);
}

#[test]
fn kill_during_convert_leaves_a_repairable_image() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.raw");
    ok("qemu-img", &["create", "-q", "-f", "raw", p(&src), "256M"]);
    ok(
        "qemu-io",
        &["-f", "raw", "-c", "write -P 0xab 0 256M", p(&src)],
    );

    let mut saw_leaks = false;
    for attempt in 0..8 {
        let dst = dir.path().join(format!("dst{attempt}.qcow2"));
        let child = spawn(
            ours_command()
                .args([
                    "convert",
                    "-O",
                    "qcow2",
                    "-o",
                    "cluster_size=64k",
                    p(&src),
                    p(&dst),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let mut child = KillOnDrop(child);
        let threshold = (8 + attempt * 8) << 20;
        let grew = wait_for(Duration::from_secs(60), || {
            std::fs::metadata(&dst)
                .map(|m| m.len() > threshold)
                .unwrap_or(false)
        });
        assert!(grew, "convert did not make progress");
        // SIGKILL: no chance to clean up, like a power cut as far as ordering goes.
        child.0.kill().unwrap();
        let status = child.0.wait().unwrap();
        assert!(
            !status.success(),
            "convert finished before it was killed (attempt {attempt})"
        );

        // Never corrupt: at worst leaked clusters. We also count refcounts left for clusters
        // past the end of the file (allocated, never written), which qemu-img does not look
        // at, so our leak count may be higher than qemu-img's, never lower.
        let theirs = run("qemu-img", &["check", "--output", "json", p(&dst)]);
        let mine = ours(&["check", "--output", "json", p(&dst)]);
        let code = mine.status.code();
        assert!(
            matches!(code, Some(0) | Some(3)),
            "our check: {}",
            text(&mine)
        );
        assert!(
            matches!(theirs.status.code(), Some(0) | Some(3)),
            "qemu-img check: {}",
            text(&theirs)
        );
        let t: serde_json::Value = serde_json::from_slice(&theirs.stdout).unwrap();
        let m: serde_json::Value = serde_json::from_slice(&mine.stdout).unwrap();
        let count = |v: &serde_json::Value, f: &str| v[f].as_u64().unwrap_or(0);
        assert!(
            count(&m, "leaks") >= count(&t, "leaks"),
            "ours {m} theirs {t}"
        );
        assert_eq!(count(&m, "corruptions"), 0);
        assert_eq!(count(&t, "corruptions"), 0);
        if code == Some(3) {
            saw_leaks = true;
            let repaired = ours(&["check", "-r", "all", p(&dst)]);
            assert_eq!(repaired.status.code(), Some(0), "{}", text(&repaired));
            assert!(
                text(&repaired).contains("leaked clusters"),
                "{}",
                text(&repaired)
            );
            qemu_check_clean(&dst);
            assert_eq!(ours(&["check", p(&dst)]).status.code(), Some(0));
            // What was written is intact: every allocated cluster holds source data.
            let mut image = Image::open(&dst, &OpenOptions::default()).unwrap();
            let mut buf = vec![0u8; 64 << 10];
            image.read_at(&mut buf, 0).unwrap();
            close(image);
            assert!(buf.iter().all(|&b| b == 0xab));
            break;
        }
    }
    assert!(
        saw_leaks,
        "no kill landed between allocation and mapping in 8 attempts"
    );
}

/// Where an operation failed, what is left at `path` (for assertion messages).
fn leftover(path: &Path) -> String {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => format!("{} was left behind ({} bytes)", path.display(), meta.len()),
        Err(_) => String::new(),
    }
}

/// A raw image too large for the file system (ext4 files end at 16 TiB: set_len fails with
/// EFBIG) is an error, and the file made for it is gone again: the daemon would otherwise
/// list a 0-byte storage volume.
#[test]
fn a_create_that_fails_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let huge = dir.path().join("huge.raw");
    let options = oxvirt_images::CreateOptions {
        format: oxvirt_images::Format::Raw,
        size: Some(1 << 50),
        ..oxvirt_images::CreateOptions::default()
    };
    let err = oxvirt_images::create(&huge, &options).unwrap_err();
    assert!(matches!(err, oxvirt_images::ImageError::Io { .. }), "{err}");
    assert!(!huge.exists(), "{}", leftover(&huge));

    let out = ours(&["create", "-f", "raw", p(&huge), "1P"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!huge.exists(), "{}", leftover(&huge));

    // With --force, an existing file is truncated first: its old contents are gone, so the
    // failed create removes it too.
    std::fs::write(&huge, b"old contents").unwrap();
    let out = ours(&["create", "--force", "-f", "raw", p(&huge), "1P"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!huge.exists(), "{}", leftover(&huge));
}

/// A convert whose source fails to read half-way (an L2 entry pointing past the end of the
/// file, after a cluster that copies fine) is an error and leaves no output, through the
/// command and through the library calls the daemon's vol-clone makes.
#[test]
fn a_convert_that_fails_half_way_leaves_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.qcow2");
    ok("qemu-img", &["create", "-q", "-f", "qcow2", p(&src), "4M"]);
    ok(
        "qemu-io",
        &[
            "-c",
            "write -P 0xab 0 64k",
            "-c",
            "write -P 0xcd 3M 64k",
            p(&src),
        ],
    );
    // The L2 entry of guest cluster 48 (3 MiB with 64 KiB clusters) is 48 entries into the
    // first L2 table; the convert reads it in its second 2 MiB chunk, after writing the first.
    let read_be64 = |at: u64| {
        let mut b = [0u8; 8];
        std::fs::File::open(&src)
            .unwrap()
            .read_exact_at(&mut b, at)
            .unwrap();
        u64::from_be_bytes(b)
    };
    let l1 = read_be64(40);
    let l2 = read_be64(l1) & 0x00ff_ffff_ffff_fe00;
    let entry_at = l2 + 48 * 8;
    assert_ne!(read_be64(entry_at), 0, "cluster 48 is allocated");
    let past_the_end = (1u64 << 40) | (1 << 63);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&src)
        .unwrap()
        .write_all_at(&past_the_end.to_be_bytes(), entry_at)
        .unwrap();

    for format in ["raw", "qcow2"] {
        let dst = dir.path().join(format!("dst.{format}"));
        let out = ours(&["convert", "-O", format, p(&src), p(&dst)]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(text(&out).contains("past the end"), "{}", text(&out));
        assert!(!dst.exists(), "convert -O {format}: {}", leftover(&dst));
    }

    let mut source = Image::open(&src, &OpenOptions::default()).unwrap();
    let dst = dir.path().join("clone.qcow2");
    let options = oxvirt_images::ops::ConvertOptions {
        format: oxvirt_images::Format::Qcow2,
        cluster_size: 65536,
        overwrite: false,
    };
    let mut progress_seen = 0;
    let err = oxvirt_images::ops::convert(&mut source, &dst, &options, &mut |done, _| {
        progress_seen = progress_seen.max(done)
    })
    .unwrap_err();
    close(source);
    assert!(err.to_string().contains("past the end"), "{err}");
    assert!(progress_seen >= 2 << 20, "the first chunk was copied");
    assert!(!dst.exists(), "{}", leftover(&dst));
}

/// A convert onto a file that is not ours to replace fails and leaves the file exactly as it
/// was: without --force (it exists), and with --force while somebody holds it (locked).
#[test]
fn a_convert_refused_at_the_output_leaves_the_existing_file_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.raw");
    std::fs::write(&src, vec![0x11; 1 << 20]).unwrap();
    let existing = dir.path().join("existing.raw");
    let contents = vec![0x77; 300_000];
    std::fs::write(&existing, &contents).unwrap();

    let out = ours(&["convert", "-O", "raw", p(&src), p(&existing)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("file exists"), "{}", text(&out));
    assert!(std::fs::read(&existing).unwrap() == contents, "changed");

    let mut source = Image::open(&src, &OpenOptions::default()).unwrap();
    let options = oxvirt_images::ops::ConvertOptions {
        format: oxvirt_images::Format::Raw,
        cluster_size: 65536,
        overwrite: false,
    };
    let err =
        oxvirt_images::ops::convert(&mut source, &existing, &options, &mut |_, _| {}).unwrap_err();
    close(source);
    assert!(
        matches!(err, oxvirt_images::ImageError::Exists { .. }),
        "{err}"
    );
    assert!(std::fs::read(&existing).unwrap() == contents, "changed");

    // A reader (like a guest using the disk read-only) forbids writers: --force is refused
    // before the file is truncated, and the file is not removed.
    let reader = Image::open(&existing, &OpenOptions::default()).unwrap();
    let out = ours(&["convert", "--force", "-O", "raw", p(&src), p(&existing)]);
    close(reader);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("lock"), "{}", text(&out));
    assert!(std::fs::read(&existing).unwrap() == contents, "changed");
}
