//! Interoperability with the real qemu-img 7.2 in both directions.

mod imgsupport;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use imgsupport::*;
use oxvirt_images::{Image, OpenOptions};

const MIB: usize = 1 << 20;

#[test]
fn images_we_create_pass_qemu_check_and_hold_what_we_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let size = 64 * MIB + 4096; // not a multiple of the cluster size
    for prealloc in ["off", "metadata", "falloc", "full"] {
        for (cluster_name, cluster) in [("64k", 64 << 10), ("2M", 2 * MIB)] {
            let img = dir.path().join(format!("{prealloc}-{cluster_name}.qcow2"));
            ours_ok(&[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-o",
                &format!("preallocation={prealloc},cluster_size={cluster_name}"),
                p(&img),
                &size.to_string(),
            ]);
            qemu_check_clean(&img);
            let info = qemu_info_json(&img);
            assert_eq!(
                info["virtual-size"], size as u64,
                "{prealloc} {cluster_name}"
            );
            assert_eq!(info["cluster-size"], cluster as u64);
            assert_eq!(info["format-specific"]["data"]["compat"], "1.1");

            let mut expected = vec![0u8; size];
            write_known_content(&img, &mut expected, cluster);
            let raw = write_file(&dir.path().join("expected.raw"), &expected);
            qemu_check_clean(&img);
            qemu_compare_identical(&img, &raw);

            let allocated = std::fs::metadata(&img).unwrap().blocks() * 512;
            match prealloc {
                "falloc" | "full" => assert!(
                    allocated >= size as u64,
                    "{prealloc}: only {allocated} bytes allocated"
                ),
                _ => assert!(
                    allocated < size as u64 / 2,
                    "{prealloc}: {allocated} bytes allocated"
                ),
            }
        }
    }
    for prealloc in ["off", "falloc", "full"] {
        let img = dir.path().join(format!("{prealloc}.raw"));
        ours_ok(&[
            "create",
            "-q",
            "-f",
            "raw",
            "-o",
            &format!("preallocation={prealloc}"),
            p(&img),
            "3M",
        ]);
        let info = qemu_info_json(&img);
        assert_eq!(info["virtual-size"], 3 * MIB as u64);
        assert_eq!(info["format"], "raw");
    }
    let out = ours(&[
        "create",
        "-f",
        "raw",
        "-o",
        "preallocation=metadata",
        p(&dir.path().join("m.raw")),
        "1M",
    ]);
    assert!(
        !out.status.success(),
        "raw + metadata preallocation must be refused"
    );
}

#[test]
fn overlays_we_create_read_through_their_backing_files() {
    let dir = tempfile::tempdir().unwrap();
    let size = 16 * MIB;
    for (base_fmt, cluster) in [("raw", 64 << 10), ("qcow2", 2 * MIB)] {
        let base = dir.path().join(format!("base.{base_fmt}"));
        ok(
            "qemu-img",
            &["create", "-q", "-f", base_fmt, p(&base), &size.to_string()],
        );
        ok(
            "qemu-io",
            &[
                "-f",
                base_fmt,
                "-c",
                "write -P 0xab 0 1M",
                "-c",
                "write -P 0x5c 15M 1M",
                p(&base),
            ],
        );
        let mut expected = vec![0u8; size];
        expected[..MIB].fill(0xab);
        expected[15 * MIB..].fill(0x5c);

        // Relative backing name, as users usually give it.
        let overlay = dir.path().join(format!("overlay-{base_fmt}.qcow2"));
        ours_ok(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            &format!("cluster_size={cluster}"),
            "-b",
            &format!("base.{base_fmt}"),
            "-F",
            base_fmt,
            p(&overlay),
        ]);
        qemu_check_clean(&overlay);
        let theirs = qemu_info_json(&overlay);
        let mine = our_info_json(&overlay);
        for field in [
            "virtual-size",
            "backing-filename",
            "full-backing-filename",
            "backing-filename-format",
            "cluster-size",
        ] {
            assert_eq!(mine[field], theirs[field], "field {field}");
        }
        assert_eq!(
            theirs["virtual-size"], size as u64,
            "size taken from the backing file"
        );

        write_known_content(&overlay, &mut expected, cluster);
        let raw = write_file(&dir.path().join("expected.raw"), &expected);
        qemu_check_clean(&overlay);
        qemu_compare_identical(&overlay, &raw);
        // The backing file was not touched.
        let out = ok(
            "qemu-io",
            &["-f", base_fmt, "-c", "read -P 0xab 0 1M", p(&base)],
        );
        assert!(!out.contains("Pattern verification failed"), "{out}");
    }

    let out = ours(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        "base.raw",
        p(&dir.path().join("x.qcow2")),
    ]);
    assert!(
        !out.status.success(),
        "backing file without -F must be refused"
    );
    let out = ours(&[
        "create",
        "-f",
        "qcow2",
        "-o",
        "preallocation=full",
        "-b",
        "base.raw",
        "-F",
        "raw",
        p(&dir.path().join("y.qcow2")),
    ]);
    assert!(
        !out.status.success(),
        "backing file with preallocation must be refused"
    );
}

/// Builds, with QEMU's tools only, a chain base.raw <- mid.qcow2 <- top.qcow2 with data in
/// every layer, a zeroed range, an internal snapshot and a compressed image.
fn qemu_made_images(dir: &Path) {
    let d = |n: &str| dir.join(n).to_str().unwrap().to_string();
    ok(
        "qemu-img",
        &["create", "-q", "-f", "raw", &d("base.raw"), "16M"],
    );
    ok(
        "qemu-io",
        &["-f", "raw", "-c", "write -P 0x01 0 3M", &d("base.raw")],
    );
    ok(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "base.raw",
            "-F",
            "raw",
            &d("mid.qcow2"),
        ],
    );
    ok(
        "qemu-io",
        &[
            "-c",
            "write -P 0xab 0 1M",
            "-c",
            "write -P 0x22 5M 100k",
            &d("mid.qcow2"),
        ],
    );
    ok(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=4k",
            "-b",
            "mid.qcow2",
            "-F",
            "qcow2",
            &d("top.qcow2"),
        ],
    );
    ok(
        "qemu-io",
        &[
            "-c",
            "write -P 0x33 512k 8k",
            "-c",
            "write -z 2M 64k",
            &d("top.qcow2"),
        ],
    );
    ok(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", &d("snap.qcow2"), "32M"],
    );
    ok("qemu-io", &["-c", "write -P 0xab 0 1M", &d("snap.qcow2")]);
    ok("qemu-img", &["snapshot", "-c", "first", &d("snap.qcow2")]);
    ok(
        "qemu-io",
        &[
            "-c",
            "write -P 0xcd 512k 1M",
            "-c",
            "write -z 0 64k",
            &d("snap.qcow2"),
        ],
    );
    ok(
        "qemu-img",
        &[
            "convert",
            "-c",
            "-O",
            "qcow2",
            &d("snap.qcow2"),
            &d("compressed.qcow2"),
        ],
    );
    // A version 2 ("compat=0.10") image with a snapshot.
    ok(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "compat=0.10",
            &d("v2.qcow2"),
            "8M",
        ],
    );
    ok(
        "qemu-io",
        &["-c", "write -P 0x5a 100k 200k", &d("v2.qcow2")],
    );
    ok("qemu-img", &["snapshot", "-c", "old", &d("v2.qcow2")]);
    ok("qemu-io", &["-c", "write -P 0x5b 150k 10k", &d("v2.qcow2")]);
}

#[test]
fn images_qemu_made_are_read_correctly() {
    let dir = tempfile::tempdir().unwrap();
    qemu_made_images(dir.path());
    for name in [
        "base.raw",
        "mid.qcow2",
        "top.qcow2",
        "snap.qcow2",
        "compressed.qcow2",
        "v2.qcow2",
    ] {
        let img = dir.path().join(name);
        let theirs = qemu_info_json(&img);
        let mine = our_info_json(&img);
        for field in [
            "format",
            "virtual-size",
            "cluster-size",
            "backing-filename",
            "full-backing-filename",
            "backing-filename-format",
            "dirty-flag",
            "format-specific",
            "filename",
        ] {
            assert_eq!(mine[field], theirs[field], "{name}: field {field}");
        }
        assert_eq!(
            mine["snapshots"].as_array().map(|a| a.len()),
            theirs["snapshots"].as_array().map(|a| a.len()),
            "{name}: snapshots"
        );

        // Flattened contents are byte-identical to qemu-img's conversion.
        let ours_raw = dir.path().join(format!("{name}.ours.raw"));
        let theirs_raw = dir.path().join(format!("{name}.theirs.raw"));
        ours_ok(&["convert", "-O", "raw", p(&img), p(&ours_raw)]);
        ok(
            "qemu-img",
            &["convert", "-O", "raw", p(&img), p(&theirs_raw)],
        );
        assert!(
            std::fs::read(&ours_raw).unwrap() == std::fs::read(&theirs_raw).unwrap(),
            "{name}: converted contents differ"
        );
        assert_eq!(
            ours(&["compare", p(&img), p(&theirs_raw)]).status.code(),
            Some(0),
            "{name}"
        );
        if name.ends_with(".qcow2") {
            let out = ours(&["check", p(&img)]);
            assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out));
        }
    }
    // Our check --output json agrees with qemu-img's on the counts.
    let img = dir.path().join("snap.qcow2");
    let theirs: serde_json::Value =
        serde_json::from_str(&ok("qemu-img", &["check", "--output", "json", p(&img)])).unwrap();
    let mine: serde_json::Value =
        serde_json::from_str(&ours_ok(&["check", "--output", "json", p(&img)])).unwrap();
    for field in [
        "image-end-offset",
        "total-clusters",
        "check-errors",
        "allocated-clusters",
        "leaks",
        "corruptions",
    ] {
        assert_eq!(mine[field], theirs[field], "check field {field}");
    }
    // Spot check the data itself through the library.
    let mut top = Image::open(&dir.path().join("top.qcow2"), &OpenOptions::default()).unwrap();
    let mut buf = vec![0u8; 4];
    top.read_at(&mut buf, 0).unwrap();
    assert_eq!(buf, [0xab; 4], "from mid");
    top.read_at(&mut buf, 512 << 10).unwrap();
    assert_eq!(buf, [0x33; 4], "from top");
    top.read_at(&mut buf, 2 << 20).unwrap();
    assert_eq!(buf, [0; 4], "zeroed in top over base data");
    top.read_at(&mut buf, (2 << 20) + (64 << 10)).unwrap();
    assert_eq!(buf, [0x01; 4], "from base");
}

fn allocated_ranges(path: &Path) -> Vec<(u64, u64)> {
    use std::os::unix::io::AsRawFd;
    let file = std::fs::File::open(path).unwrap();
    let len = file.metadata().unwrap().len() as i64;
    let fd = file.as_raw_fd();
    let mut ranges = Vec::new();
    let mut at = 0i64;
    while at < len {
        // SAFETY: lseek on an fd we own.
        let data = unsafe { libc::lseek(fd, at, libc::SEEK_DATA) };
        if data < 0 {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        ranges.push((data as u64, hole as u64));
        at = hole;
    }
    ranges
}

#[test]
fn convert_keeps_holes() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.raw");
    ok("qemu-img", &["create", "-q", "-f", "raw", p(&src), "64M"]);
    ok(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -P 0xab 1M 1M",
            "-c",
            "write -P 0xcd 40M 64k",
            "-c",
            "write -P 0 50M 1M",
            p(&src),
        ],
    );
    // 50M..51M holds written zeros: still data in the source, must become a hole.
    let raw = dir.path().join("out.raw");
    let qcow = dir.path().join("out.qcow2");
    ours_ok(&["convert", "-p", "-O", "raw", p(&src), p(&raw)]);
    ours_ok(&["convert", "-O", "qcow2", p(&src), p(&qcow)]);
    qemu_compare_identical(&src, &raw);
    qemu_compare_identical(&src, &qcow);
    qemu_check_clean(&qcow);
    assert_eq!(
        allocated_ranges(&raw),
        vec![(1 << 20, 2 << 20), (40 << 20, (40 << 20) + (64 << 10))]
    );
    let qcow_blocks = std::fs::metadata(&qcow).unwrap().blocks() * 512;
    assert!(
        qcow_blocks < 2 * MIB as u64,
        "qcow2 output allocates {qcow_blocks} bytes"
    );
    let map = ok("qemu-img", &["map", "--output", "json", p(&qcow)]);
    let map: Vec<serde_json::Value> = serde_json::from_str(&map).unwrap();
    let data_bytes: u64 = map
        .iter()
        .filter(|e| e["data"] == true)
        .map(|e| e["length"].as_u64().unwrap())
        .sum();
    assert_eq!(data_bytes, (1 << 20) + (64 << 10));
    // Refuses to overwrite unless --force.
    let out = ours(&["convert", "-O", "raw", p(&src), p(&raw)]);
    assert!(
        !out.status.success() && text(&out).contains("--force"),
        "{}",
        text(&out)
    );
    ours_ok(&["convert", "--force", "-O", "raw", p(&src), p(&raw)]);
}

#[test]
fn snapshots_interoperate() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("s.qcow2");
    let size = 4 * MIB;
    ours_ok(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=64k",
        p(&img),
        "4M",
    ]);
    let mut v1 = vec![0u8; size];
    write_known_content(&img, &mut v1, 64 << 10);
    ours_ok(&["snapshot", "-c", "v1", p(&img)]);
    qemu_check_clean(&img);
    assert!(ok("qemu-img", &["snapshot", "-l", p(&img)]).contains("v1"));

    // Writing after the snapshot copies shared clusters; the snapshot keeps the old data.
    let mut image = Image::open(
        &img,
        &OpenOptions {
            write: true,
            ..OpenOptions::default()
        },
    )
    .unwrap();
    let mut v2 = v1.clone();
    let data = pattern(200_000, 99);
    image.write_at(&data, 1000).unwrap();
    v2[1000..201_000].copy_from_slice(&data);
    close(image);
    qemu_check_clean(&img);
    let v1_raw = write_file(&dir.path().join("v1.raw"), &v1);
    let v2_raw = write_file(&dir.path().join("v2.raw"), &v2);
    qemu_compare_identical(&img, &v2_raw);
    ok(
        "qemu-img",
        &[
            "convert",
            "-l",
            "v1",
            "-O",
            "raw",
            p(&img),
            p(&dir.path().join("v1-by-qemu.raw")),
        ],
    );
    qemu_compare_identical(&dir.path().join("v1-by-qemu.raw"), &v1_raw);

    // A snapshot made by qemu-img, applied by us, and ours applied back.
    ok("qemu-img", &["snapshot", "-c", "v2", p(&img)]);
    ours_ok(&["snapshot", "-a", "v1", p(&img)]);
    qemu_check_clean(&img);
    qemu_compare_identical(&img, &v1_raw);
    ours_ok(&["snapshot", "-a", "v2", p(&img)]);
    qemu_compare_identical(&img, &v2_raw);
    let list = ours_ok(&["snapshot", "-l", p(&img)]);
    assert!(list.contains("v1") && list.contains("v2"), "{list}");

    ours_ok(&["snapshot", "-d", "v1", p(&img)]);
    qemu_check_clean(&img);
    ok("qemu-img", &["snapshot", "-d", "v2", p(&img)]);
    qemu_check_clean(&img);
    assert_eq!(ours(&["check", p(&img)]).status.code(), Some(0));
    qemu_compare_identical(&img, &v2_raw);
    let out = ours(&["snapshot", "-a", "nope", p(&img)]);
    assert!(!out.status.success() && text(&out).contains("not found"));
}

#[test]
fn resize_grows_and_shrinks() {
    let dir = tempfile::tempdir().unwrap();
    // 512-byte clusters: one L1 cluster covers 2 MiB, so growing to 100M must move the L1 table.
    let img = dir.path().join("r.qcow2");
    ours_ok(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=512",
        p(&img),
        "1M",
    ]);
    let mut expected = vec![0u8; MIB];
    write_known_content(&img, &mut expected, 512);
    ours_ok(&["resize", "-q", p(&img), "+99M"]);
    assert_eq!(qemu_info_json(&img)["virtual-size"], 100 * MIB as u64);
    qemu_check_clean(&img);
    expected.resize(100 * MIB, 0);
    write_known_content(&img, &mut expected, 512);
    qemu_check_clean(&img);
    qemu_compare_identical(&img, &write_file(&dir.path().join("e.raw"), &expected));

    let out = ours(&["resize", p(&img), "10M"]);
    assert!(
        !out.status.success() && text(&out).contains("--shrink"),
        "{}",
        text(&out)
    );
    ours_ok(&["resize", "-q", "--shrink", p(&img), "-90M"]);
    qemu_check_clean(&img);
    expected.truncate(10 * MIB);
    qemu_compare_identical(&img, &write_file(&dir.path().join("e10.raw"), &expected));

    // Shrink to an unaligned size, grow again: the cut-off bytes must not come back.
    ours_ok(&[
        "resize",
        "-q",
        "--shrink",
        p(&img),
        &(10 * MIB - 1024).to_string(),
    ]);
    let out = ours(&["resize", p(&img), "10500001"]);
    assert!(text(&out).contains("multiple of 512"), "{}", text(&out));
    ours_ok(&["resize", "-q", p(&img), "11M"]);
    expected.truncate(10 * MIB - 1024);
    expected.resize(11 * MIB, 0);
    qemu_check_clean(&img);
    qemu_compare_identical(&img, &write_file(&dir.path().join("e11.raw"), &expected));

    // An overlay shrunk and grown again must not show its (bigger) backing file there.
    let base = dir.path().join("base.raw");
    ok("qemu-img", &["create", "-q", "-f", "raw", p(&base), "8M"]);
    ok(
        "qemu-io",
        &["-f", "raw", "-c", "write -P 0x42 0 8M", p(&base)],
    );
    let overlay = dir.path().join("overlay.qcow2");
    ours_ok(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.raw",
        "-F",
        "raw",
        p(&overlay),
    ]);
    ours_ok(&["resize", "-q", "--shrink", p(&overlay), "3000320"]);
    ours_ok(&["resize", "-q", p(&overlay), "8M"]);
    qemu_check_clean(&overlay);
    let mut expected = vec![0x42u8; 3_000_320];
    expected.resize(8 * MIB, 0);
    qemu_compare_identical(&overlay, &write_file(&dir.path().join("o.raw"), &expected));

    let raw = dir.path().join("r.raw");
    ours_ok(&["create", "-q", "-f", "raw", p(&raw), "1M"]);
    ours_ok(&["resize", "-q", p(&raw), "2G"]);
    assert_eq!(std::fs::metadata(&raw).unwrap().len(), 2 << 30);
}

#[test]
fn compare_reports_the_first_difference() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.qcow2");
    let b = dir.path().join("b.raw");
    ok("qemu-img", &["create", "-q", "-f", "qcow2", p(&a), "8M"]);
    ok("qemu-img", &["create", "-q", "-f", "raw", p(&b), "8M"]);
    ok("qemu-io", &["-c", "write -P 0x11 1M 4k", p(&a)]);
    ok(
        "qemu-io",
        &["-f", "raw", "-c", "write -P 0x11 1M 4k", p(&b)],
    );
    let same = ours(&["compare", "-f", "qcow2", "-F", "raw", p(&a), p(&b)]);
    assert_eq!(same.status.code(), Some(0), "{}", text(&same));
    ok(
        "qemu-io",
        &["-f", "raw", "-c", "write -P 0x12 1050000 1", p(&b)],
    );
    let diff = ours(&["compare", p(&a), p(&b)]);
    assert_eq!(diff.status.code(), Some(1), "{}", text(&diff));
    assert!(text(&diff).contains("offset 1050000"), "{}", text(&diff));
    let theirs = run("qemu-img", &["compare", p(&a), p(&b)]);
    assert_eq!(theirs.status.code(), Some(1));
    let missing = ours(&["compare", p(&a), p(&dir.path().join("missing"))]);
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn writes_over_compressed_zero_and_shared_clusters_and_odd_refcount_widths() {
    let dir = tempfile::tempdir().unwrap();
    for refcount_bits in ["1", "8", "64"] {
        let src = dir.path().join(format!("src{refcount_bits}.qcow2"));
        ok(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-o",
                &format!("refcount_bits={refcount_bits}"),
                p(&src),
                "4M",
            ],
        );
        ok(
            "qemu-io",
            &[
                "-c",
                "write -P 0xab 0 1M",
                "-c",
                "write -P 0xcd 2M 256k",
                "-c",
                "write -z 2M 64k",
                p(&src),
            ],
        );
        let mut expected = vec![0u8; 4 * MIB];
        expected[..MIB].fill(0xab);
        expected[2 * MIB + (64 << 10)..2 * MIB + (256 << 10)].fill(0xcd);

        // The same content compressed, and as-is; write over both (partial clusters over
        // compressed data, zero-flag clusters and plain data).
        let compressed = dir.path().join(format!("c{refcount_bits}.qcow2"));
        ok(
            "qemu-img",
            &[
                "convert",
                "-c",
                "-O",
                "qcow2",
                "-o",
                &format!("refcount_bits={refcount_bits}"),
                p(&src),
                p(&compressed),
            ],
        );
        for img in [&src, &compressed] {
            let mut want = expected.clone();
            write_known_content(img, &mut want, 64 << 10);
            let mut image = Image::open(
                img,
                &OpenOptions {
                    write: true,
                    ..OpenOptions::default()
                },
            )
            .unwrap();
            let data = pattern(5000, 7);
            image.write_at(&data, 2 * MIB as u64 + 1000).unwrap(); // inside the zeroed cluster
            want[2 * MIB + 1000..2 * MIB + 6000].copy_from_slice(&data);
            close(image);
            qemu_check_clean(img);
            qemu_compare_identical(img, &write_file(&dir.path().join("w.raw"), &want));
        }
    }

    // Applying a snapshot taken at another size restores that size.
    let img = dir.path().join("sized.qcow2");
    ours_ok(&["create", "-q", "-f", "qcow2", p(&img), "1M"]);
    ours_ok(&["snapshot", "-c", "small", p(&img)]);
    ours_ok(&["resize", "-q", p(&img), "64M"]);
    ok("qemu-io", &["-c", "write -P 0x99 60M 1M", p(&img)]);
    ours_ok(&["snapshot", "-a", "small", p(&img)]);
    assert_eq!(qemu_info_json(&img)["virtual-size"], MIB as u64);
    qemu_check_clean(&img);
}

/// Random writes and snapshots through our library on an image qemu-img made with 512-byte
/// clusters (so its one-cluster refcount table must grow and move), checked against a model.
#[test]
fn random_writes_and_snapshots_against_a_model() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("model.qcow2");
    let size = 24 * MIB;
    ok(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=512",
            p(&img),
            "24M",
        ],
    );
    let mut model = vec![0u8; size];
    let mut snapshots: Vec<(String, Vec<u8>)> = Vec::new();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for round in 0..6 {
        let mut image = Image::open(
            &img,
            &OpenOptions {
                write: true,
                ..OpenOptions::default()
            },
        )
        .unwrap();
        for i in 0..60 {
            let len = 1 + (next() % (300 << 10)) as usize;
            let offset = (next() % (size - len) as u64) as usize;
            let data = pattern(len, round * 1000 + i);
            image.write_at(&data, offset as u64).unwrap();
            model[offset..offset + len].copy_from_slice(&data);
        }
        let q = image.as_qcow2_mut().unwrap();
        let name = format!("r{round}");
        q.snapshot_create(&name).unwrap();
        snapshots.push((name, model.clone()));
        if round == 3 {
            // Drop an older snapshot in the middle of the history.
            q.snapshot_delete("r1").unwrap();
            snapshots.retain(|(n, _)| n != "r1");
        }
        close(image);
        qemu_check_clean(&img);
    }
    // The refcount table qemu-img made (one cluster, covering 8 MiB) had to grow.
    let header = std::fs::read(&img).unwrap();
    let reftable_clusters = u32::from_be_bytes(header[56..60].try_into().unwrap());
    assert!(reftable_clusters > 1, "refcount table never grew");
    qemu_compare_identical(&img, &write_file(&dir.path().join("now.raw"), &model));
    for (name, contents) in &snapshots {
        let out = dir.path().join(format!("{name}.raw"));
        ok(
            "qemu-img",
            &["convert", "-l", name, "-O", "raw", p(&img), p(&out)],
        );
        assert!(
            std::fs::read(&out).unwrap() == *contents,
            "snapshot {name} differs"
        );
    }
    // Revert to the first snapshot and check through qemu-img.
    ours_ok(&["snapshot", "-a", "r0", p(&img)]);
    qemu_check_clean(&img);
    qemu_compare_identical(
        &img,
        &write_file(&dir.path().join("r0.raw"), &snapshots[0].1),
    );
    let our_check = ours(&["check", p(&img)]);
    assert_eq!(our_check.status.code(), Some(0), "{}", text(&our_check));
}

#[test]
fn images_on_block_devices_have_the_devices_size() {
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("device.img");
    let size = 48u64 << 20;
    std::fs::File::create(&backing)
        .and_then(|f| f.set_len(size))
        .unwrap();
    let device = oxvirt_testkit::process::LoopDevice::attach(&backing);

    // Raw: the device's capacity (st_size of a block device is 0).
    let mut expected = vec![0u8; size as usize];
    write_known_content(device.path(), &mut expected, 65536);
    let ours = our_info_json(device.path());
    assert_eq!(ours["virtual-size"], size, "{ours}");
    assert_eq!(
        ours["virtual-size"],
        qemu_info_json(device.path())["virtual-size"]
    );
    let copy = dir.path().join("copy.raw");
    ours_ok(&["convert", "-O", "raw", p(device.path()), p(&copy)]);
    assert_eq!(std::fs::read(&copy).unwrap(), expected);

    // qcow2 formatted onto the device by qemu-img: its metadata may lie anywhere on it.
    ok(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", p(device.path()), "32M"],
    );
    let mut expected = vec![0u8; 32 << 20];
    write_known_content(device.path(), &mut expected, 65536);
    qemu_check_clean(device.path());
    let raw = write_file(&dir.path().join("expected.raw"), &expected);
    qemu_compare_identical(device.path(), &raw);
    assert_eq!(our_info_json(device.path())["virtual-size"], 32u64 << 20);
}
