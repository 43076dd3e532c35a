//! Corrupt and hostile images through `oxvirt img`: clear errors naming the problem, never a
//! panic. (Library-only hostile-input tests are in crates/images/tests/hostile.rs.)

mod imgsupport;

use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use imgsupport::*;

const COPIED: u64 = 1 << 63;

fn be64_at(path: &Path, at: u64) -> u64 {
    let f = std::fs::File::open(path).unwrap();
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, at).unwrap();
    u64::from_be_bytes(b)
}

fn patch(path: &Path, at: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, at).unwrap();
}

/// A 4 MiB qcow2 image (64k clusters) made by qemu-img, with data in its first cluster.
fn good_image(dir: &Path, name: &str) -> PathBuf {
    let img = dir.join(name);
    ok("qemu-img", &["create", "-q", "-f", "qcow2", p(&img), "4M"]);
    ok("qemu-io", &["-c", "write -P 0xab 0 64k", p(&img)]);
    img
}

/// The command failed cleanly: the expected exit status, a message with `needle`, no panic.
fn assert_clean_failure(args: &[&str], status: i32, needle: &str) {
    let out = ours(args);
    let all = text(&out);
    assert!(!all.contains("panicked"), "{args:?} panicked: {all}");
    assert_eq!(out.status.code(), Some(status), "{args:?}: {all}");
    assert!(
        all.contains(needle),
        "{args:?} should mention '{needle}': {all}"
    );
}

/// Generous: every command here ends in milliseconds unless it blocks.
const HANG_DEADLINE: Duration = Duration::from_secs(30);

/// Like `assert_clean_failure`, but the command is killed (and the test fails) if it blocks.
fn assert_prompt_failure(args: &[&str], status: i32, needle: &str) {
    let out = ours_within(HANG_DEADLINE, args);
    let all = text(&out);
    assert!(!all.contains("panicked"), "{args:?} panicked: {all}");
    assert_eq!(out.status.code(), Some(status), "{args:?}: {all}");
    assert!(
        all.contains(needle),
        "{args:?} should mention '{needle}': {all}"
    );
}

/// A qcow2 overlay (made without opening its backing file) whose header names `backing`.
fn overlay_on(dir: &Path, name: &str, backing: &Path, backing_format: &str) -> PathBuf {
    let img = dir.join(name);
    ok(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-u",
            "-b",
            p(backing),
            "-F",
            backing_format,
            p(&img),
            "1M",
        ],
    );
    img
}

/// A FIFO as an image or backing file would block the open until a writer comes (for ever),
/// and /dev/zero never ends: both are refused at once, saying what they are, before any read.
#[test]
fn special_files_are_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe");
    ok("mkfifo", &[p(&fifo)]);
    let plain = good_image(dir.path(), "plain.qcow2");
    let fifo_error = "is a FIFO (named pipe), not a disk image";
    let cases = [
        (
            overlay_on(dir.path(), "on-fifo.qcow2", &fifo, "raw"),
            fifo_error,
        ),
        (
            overlay_on(dir.path(), "on-zero.qcow2", Path::new("/dev/zero"), "raw"),
            "/dev/zero: is a character device, not a disk image",
        ),
    ];
    let out = dir.path().join("out.raw");
    for (overlay, needle) in &cases {
        assert_prompt_failure(&["info", p(overlay)], 1, needle);
        assert_prompt_failure(&["convert", "-O", "raw", p(overlay), p(&out)], 1, needle);
        assert!(!out.exists(), "convert left {}", out.display());
        // compare reports errors with status 2 (1 means "different"), like qemu-img.
        assert_prompt_failure(&["compare", p(overlay), p(&plain)], 2, needle);
        assert_prompt_failure(&["compare", p(&plain), p(overlay)], 2, needle);
    }
    // The FIFO itself, to every command that opens an existing image.
    for args in [
        vec!["info", p(&fifo)],
        vec!["info", "-f", "raw", p(&fifo)],
        vec!["check", p(&fifo)],
        vec!["snapshot", "-l", p(&fifo)],
        vec!["resize", p(&fifo), "1M"],
        vec!["convert", "-O", "raw", p(&fifo), p(&out)],
    ] {
        assert_prompt_failure(&args, 1, fifo_error);
    }
    assert_prompt_failure(&["compare", p(&fifo), p(&plain)], 2, fifo_error);
    // Nor is a FIFO an output or a backing file to create on.
    assert_prompt_failure(
        &["convert", "--force", "-O", "raw", p(&plain), p(&fifo)],
        1,
        fifo_error,
    );
    assert_prompt_failure(&["create", "--force", p(&fifo), "1M"], 1, fifo_error);
    assert_prompt_failure(
        &[
            "create",
            "-f",
            "qcow2",
            "-b",
            p(&fifo),
            "-F",
            "raw",
            p(&dir.path().join("new.qcow2")),
        ],
        1,
        fifo_error,
    );
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
}

#[test]
fn broken_headers_are_rejected_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    type Mutation = (&'static str, u64, Vec<u8>, &'static str);
    let cases: Vec<Mutation> = vec![
        (
            "cluster_bits 8",
            20,
            8u32.to_be_bytes().to_vec(),
            "cluster_bits 8",
        ),
        (
            "cluster_bits 22",
            20,
            22u32.to_be_bytes().to_vec(),
            "cluster_bits 22",
        ),
        (
            "cluster_bits huge",
            20,
            u32::MAX.to_be_bytes().to_vec(),
            "cluster_bits",
        ),
        (
            "size overflow",
            24,
            u64::MAX.to_be_bytes().to_vec(),
            "virtual size",
        ),
        (
            "size needs bigger L1",
            24,
            (1u64 << 50).to_be_bytes().to_vec(),
            "L1 table has",
        ),
        (
            "absurd l1_size",
            36,
            u32::MAX.to_be_bytes().to_vec(),
            "32 MiB",
        ),
        (
            "L1 past EOF",
            40,
            (1u64 << 40).to_be_bytes().to_vec(),
            "past the end",
        ),
        (
            "refcount table past EOF",
            48,
            (1u64 << 40).to_be_bytes().to_vec(),
            "past the end",
        ),
        (
            "absurd refcount table",
            56,
            u32::MAX.to_be_bytes().to_vec(),
            "refcount table of",
        ),
        (
            "absurd snapshot count",
            60,
            u32::MAX.to_be_bytes().to_vec(),
            "snapshots",
        ),
        (
            "refcount_order 7",
            96,
            7u32.to_be_bytes().to_vec(),
            "refcount_order 7",
        ),
        (
            "header length",
            100,
            70000u32.to_be_bytes().to_vec(),
            "header length",
        ),
        ("version 4", 4, 4u32.to_be_bytes().to_vec(), "version 4"),
        (
            "unknown incompatible feature",
            72,
            (1u64 << 40).to_be_bytes().to_vec(),
            "incompatible",
        ),
        (
            "backing name length",
            16,
            5000u32.to_be_bytes().to_vec(),
            "backing file name",
        ),
        // A header extension whose length runs past the first cluster.
        (
            "extension overrun",
            112,
            [0xE2, 0x79, 0x2A, 0xCA, 0x00, 0x10, 0x00, 0x00].to_vec(),
            "overruns",
        ),
    ];
    for (name, at, bytes, needle) in cases {
        let img = good_image(dir.path(), &format!("{}.qcow2", name.replace(' ', "_")));
        if name == "backing name length" {
            patch(&img, 8, &512u64.to_be_bytes());
        }
        patch(&img, at, &bytes);
        assert_clean_failure(&["info", p(&img)], 1, needle);
        assert_clean_failure(
            &[
                "convert",
                "-O",
                "raw",
                p(&img),
                p(&dir.path().join("out.raw")),
            ],
            1,
            needle,
        );
        let _ = std::fs::remove_file(dir.path().join("out.raw"));
    }

    // Truncated header.
    let img = good_image(dir.path(), "short.qcow2");
    let bytes = std::fs::read(&img).unwrap();
    std::fs::write(&img, &bytes[..50]).unwrap();
    assert_clean_failure(&["info", "-f", "qcow2", p(&img)], 1, "too short");
    std::fs::write(&img, &bytes[..90]).unwrap();
    assert_clean_failure(&["info", "-f", "qcow2", p(&img)], 1, "truncated");
    // A file that is not qcow2 at all, opened as qcow2.
    std::fs::write(&img, vec![7u8; 4096]).unwrap();
    assert_clean_failure(&["info", "-f", "qcow2", p(&img)], 1, "magic");
}

#[test]
fn tables_pointing_past_the_end_are_errors_that_check_repairs() {
    let dir = tempfile::tempdir().unwrap();
    for level in ["L1", "L2"] {
        let img = good_image(dir.path(), &format!("{level}.qcow2"));
        let l1 = be64_at(&img, 40);
        let l2 = be64_at(&img, l1) & 0x00ff_ffff_ffff_fe00;
        let target = if level == "L1" { l1 } else { l2 };
        patch(&img, target, &((1u64 << 40) | COPIED).to_be_bytes());
        assert_clean_failure(
            &[
                "convert",
                "-O",
                "raw",
                p(&img),
                p(&dir.path().join(format!("{level}.raw"))),
            ],
            1,
            "past the end",
        );
        assert_clean_failure(&["check", p(&img)], 2, "past the end");
        let qemu = run("qemu-img", &["check", p(&img)]);
        assert_ne!(
            qemu.status.code(),
            Some(0),
            "qemu-img agrees it is broken: {}",
            text(&qemu)
        );
        let out = ours(&["check", "-r", "all", p(&img)]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        qemu_check_clean(&img);
        ours_ok(&[
            "convert",
            "-O",
            "raw",
            p(&img),
            p(&dir.path().join(format!("{level}-fixed.raw"))),
        ]);
    }
}

#[test]
fn corrupted_refcounts_are_found_and_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let img = good_image(dir.path(), "rc.qcow2");
    // Refcount block: find it through the refcount table; zero the data cluster's refcount
    // (a corruption: the cluster could be handed out twice) and mark an unused one (a leak).
    let reftable = be64_at(&img, 48);
    let block = be64_at(&img, reftable);
    let l1 = be64_at(&img, 40);
    let l2 = be64_at(&img, l1) & 0x00ff_ffff_ffff_fe00;
    let data = be64_at(&img, l2) & 0x00ff_ffff_ffff_fe00;
    patch(&img, block + (data >> 16) * 2, &0u16.to_be_bytes());
    patch(&img, block + 60 * 2, &1u16.to_be_bytes());
    let out = ours(&["check", "--output", "json", p(&img)]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["leaks"], 1, "{report}");
    assert!(report["corruptions"].as_u64().unwrap() >= 1, "{report}");
    // -r leaks fixes only the leak.
    assert_eq!(
        ours(&["check", "-r", "leaks", p(&img)]).status.code(),
        Some(2)
    );
    let out = ours(&["check", "-r", "all", p(&img)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    qemu_check_clean(&img);
}

#[test]
fn refcount_overflow_is_refused_before_anything_changes() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("one-bit.qcow2");
    ok(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "refcount_bits=1",
            p(&img),
            "1M",
        ],
    );
    ok("qemu-io", &["-c", "write -P 0xab 0 64k", p(&img)]);
    let before = std::fs::read(&img).unwrap();
    assert_clean_failure(&["snapshot", "-c", "s", p(&img)], 1, "maximum refcount");
    assert!(std::fs::read(&img).unwrap() == before, "image changed");
    qemu_check_clean(&img);
}

#[test]
fn backing_chain_loops_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.qcow2");
    let b = dir.path().join("b.qcow2");
    ok("qemu-img", &["create", "-q", "-f", "qcow2", p(&b), "1M"]);
    ok(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "b.qcow2",
            "-F",
            "qcow2",
            p(&a),
        ],
    );
    ok(
        "qemu-img",
        &["rebase", "-u", "-b", "a.qcow2", "-F", "qcow2", p(&b)],
    );
    assert_clean_failure(&["info", p(&a)], 1, "loop");
    assert_clean_failure(
        &["convert", "-O", "raw", p(&a), p(&dir.path().join("x.raw"))],
        1,
        "loop",
    );

    let selfref = dir.path().join("self.qcow2");
    ok(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", p(&selfref), "1M"],
    );
    ok(
        "qemu-img",
        &[
            "rebase",
            "-u",
            "-b",
            "self.qcow2",
            "-F",
            "qcow2",
            p(&selfref),
        ],
    );
    assert_clean_failure(&["info", p(&selfref)], 1, "loop");
    // Creating an image backed by itself is refused too.
    assert_clean_failure(
        &[
            "create",
            "--force",
            "-f",
            "qcow2",
            "-b",
            "self.qcow2",
            "-F",
            "qcow2",
            p(&selfref),
        ],
        1,
        "loop",
    );

    // A missing backing file is a plain error naming it.
    let orphan = dir.path().join("orphan.qcow2");
    ok(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-u",
            "-b",
            "gone.raw",
            "-F",
            "raw",
            p(&orphan),
            "1M",
        ],
    );
    assert_clean_failure(&["info", p(&orphan)], 1, "gone.raw");
}

#[test]
fn garbage_in_compressed_clusters_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let src = good_image(dir.path(), "plain.qcow2");
    let img = dir.path().join("c.qcow2");
    ok(
        "qemu-img",
        &["convert", "-c", "-O", "qcow2", p(&src), p(&img)],
    );
    let l1 = be64_at(&img, 40);
    let l2 = be64_at(&img, l1) & 0x00ff_ffff_ffff_fe00;
    let entry = be64_at(&img, l2);
    assert!(entry & (1 << 62) != 0, "expected a compressed cluster");
    let x = 62 - (16 - 8);
    let offset = entry & ((1u64 << x) - 1);
    patch(&img, offset, &[0xff; 16]);
    assert_clean_failure(
        &[
            "convert",
            "-O",
            "raw",
            p(&img),
            p(&dir.path().join("c.raw")),
        ],
        1,
        "compressed cluster",
    );
}

#[test]
fn dirty_lazy_refcount_images_are_reported_and_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("dirty.qcow2");
    ok(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "lazy_refcounts=on",
            p(&img),
            "4M",
        ],
    );
    // qemu-io dies (SIGKILL) right after writing: refcounts are left for later, the image dirty.
    let out = run(
        "qemu-io",
        &["-c", "write -P 0xab 0 128k", "-c", "sigraise 9", p(&img)],
    );
    assert!(!out.status.success());
    assert_eq!(qemu_info_json(&img)["dirty-flag"], true);
    assert_eq!(our_info_json(&img)["dirty-flag"], true);
    assert_clean_failure(&["resize", p(&img), "+1M"], 1, "dirty");
    assert_clean_failure(&["check", p(&img)], 2, "refcount=0 reference=1");
    let out = ours(&["check", "-r", "all", p(&img)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    qemu_check_clean(&img);
    assert_eq!(qemu_info_json(&img)["dirty-flag"], false);
    let read = ok("qemu-io", &["-c", "read -P 0xab 0 128k", p(&img)]);
    assert!(!read.contains("verification failed"), "{read}");
}

#[test]
fn guest_writes_never_land_on_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let img = good_image(dir.path(), "overlap.qcow2");
    // Point the first L2 entry at the L1 table itself, flagged as writable in place.
    let l1 = be64_at(&img, 40);
    let l2 = be64_at(&img, l1) & 0x00ff_ffff_ffff_fe00;
    patch(&img, l2, &(l1 | COPIED).to_be_bytes());
    let before = std::fs::read(&img).unwrap();
    let mut image = oxvirt_images::Image::open(
        &img,
        &oxvirt_images::OpenOptions {
            write: true,
            ..Default::default()
        },
    )
    .unwrap();
    let err = image.write_at(&[0x66; 512], 0).unwrap_err();
    assert!(err.to_string().contains("metadata"), "{err}");
    close(image);
    assert!(
        std::fs::read(&img).unwrap() == before,
        "the image was modified"
    );
    assert_clean_failure(&["check", p(&img)], 2, "ERROR");
}

/// Turns the backing-format header extension of a qcow2 image made by qemu-img into the end
/// of the extensions: the image then names its backing file without a format (QEMU 7.2 no
/// longer creates such images, but older ones and hostile ones exist).
fn forget_backing_format(img: &Path) {
    let head = std::fs::read(img).unwrap();
    let at = head[..4096]
        .windows(4)
        .position(|w| w == [0xE2, 0x79, 0x2A, 0xCA])
        .expect("a backing format extension");
    patch(img, at as u64, &[0; 4]);
}

/// A raw disk's contents belong to its guest; probing its format when it is a backing file
/// would let the guest pick it (and through a qcow2 header, the host files opened next). So
/// an overlay must record its backing file's format, unless the caller asks for probing.
#[test]
fn unrecorded_backing_formats_are_not_probed_unless_asked() {
    use oxvirt_images::{Format, Image, ImageError, OpenOptions};
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.raw");
    std::fs::write(&base, vec![0x5a; 1 << 20]).unwrap();
    let overlay = overlay_on(dir.path(), "overlay.qcow2", Path::new("base.raw"), "raw");
    forget_backing_format(&overlay);

    for format in [Some(Format::Qcow2), None] {
        let strict = OpenOptions {
            format,
            ..OpenOptions::default()
        };
        match Image::open(&overlay, &strict) {
            Err(ImageError::BackingFormatMissing {
                overlay: named_overlay,
                backing_name,
                backing,
            }) => {
                assert_eq!(named_overlay, overlay);
                assert_eq!(backing_name, "base.raw");
                assert_eq!(backing, base);
            }
            other => panic!("strict open of {overlay:?} gave {other:?}"),
        }
    }
    let message = Image::open(&overlay, &OpenOptions::default())
        .unwrap_err()
        .to_string();
    for needle in ["overlay.qcow2", "base.raw", "-F", "qemu-img rebase -u -F"] {
        assert!(message.contains(needle), "'{needle}' missing in: {message}");
    }

    let probing = OpenOptions {
        probe_backing_format: true,
        ..OpenOptions::default()
    };
    let mut image = Image::open(&overlay, &probing).unwrap();
    let mut buf = [0u8; 512];
    image.read_at(&mut buf, 4096).unwrap();
    assert_eq!(
        buf, [0x5a; 512],
        "the probed raw backing file shows through"
    );
    close(image);

    // `oxvirt img` plays qemu-img's part, and qemu-img probes.
    let info = our_info_json(&overlay);
    assert_eq!(info["full-backing-filename"], p(&base), "{info}");
    assert!(info.get("backing-filename-format").is_none(), "{info}");
}

/// The compression type is QEMU's to define: 0 (zlib) without incompatible feature bit 3, or
/// 1 (zstd) with it. Anything else is refused at open, by us as by qemu-img, and an unknown
/// type is never given a name.
#[test]
fn compression_types_follow_qemus_rule() {
    let dir = tempfile::tempdir().unwrap();
    const BIT: u8 = 1 << 3; // in the last byte of the big-endian incompatible_features (72..80)
    let make = |name: &str, compression_type: u8, bit: u8, header_length: Option<u32>| {
        let img = dir.path().join(name);
        ok("qemu-img", &["create", "-q", "-f", "qcow2", p(&img), "1M"]);
        assert_eq!(be64_at(&img, 72), 0, "qemu-img made an image with features");
        patch(&img, 79, &[bit]);
        patch(&img, 104, &[compression_type]);
        if let Some(length) = header_length {
            patch(&img, 100, &length.to_be_bytes());
        }
        img
    };
    let cases = [
        (make("t7-bit.qcow2", 7, BIT, None), "unknown compression type 7"),
        (make("t7.qcow2", 7, 0, None), "unknown compression type 7"),
        (
            make("zlib-bit.qcow2", 0, BIT, None),
            "compression_type is 0 (zlib), but incompatible feature bit 3 (compression type) is set",
        ),
        (
            make("zstd-nobit.qcow2", 1, 0, None),
            "compression_type is 1 (zstd), but incompatible feature bit 3 (compression type) is not set",
        ),
        // A 104-byte version 3 header has no compression_type field: zlib, so no bit either.
        (
            make("short-bit.qcow2", 0, BIT, Some(104)),
            "compression_type is 0 (zlib), but incompatible feature bit 3",
        ),
    ];
    for (img, needle) in &cases {
        let qemu = run("qemu-img", &["info", p(img)]);
        assert_eq!(
            qemu.status.code(),
            Some(1),
            "qemu-img refuses it too: {}",
            text(&qemu)
        );
        assert_clean_failure(&["info", p(img)], 1, needle);
        // Nothing about the image is printed (the type used to be printed as "zstd").
        let json = ours(&["info", "--output", "json", p(img)]);
        assert!(json.stdout.is_empty(), "{}", text(&json));
        assert_clean_failure(&["check", p(img)], 1, needle);
    }

    // The valid non-zlib case still opens, named as QEMU names it.
    let zstd = make("zstd.qcow2", 1, BIT, None);
    assert_eq!(
        qemu_info_json(&zstd)["format-specific"]["data"]["compression-type"],
        "zstd"
    );
    assert_eq!(
        our_info_json(&zstd)["format-specific"]["data"]["compression-type"],
        "zstd"
    );
}
