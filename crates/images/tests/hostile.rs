//! Hostile images through the library alone: mutated metadata never panics, and backing
//! chains are read from headers without probing. (The `oxvirt img` side of hostile input is
//! tested in crates/cli/tests/img_hostile.rs.)

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use oxvirt_testkit::process::{ok, p};

fn patch(path: &Path, at: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, at).unwrap();
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

/// A small in-test fuzzer: flip bytes in the metadata of real images and read through them.
#[test]
fn mutated_images_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let seed_img = dir.path().join("seed.qcow2");
    ok(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=512",
            p(&seed_img),
            "256k",
        ],
    );
    ok(
        "qemu-io",
        &[
            "-c",
            "write -P 0xab 0 8k",
            "-c",
            "write -P 0xcd 100k 3k",
            p(&seed_img),
        ],
    );
    ok("qemu-img", &["snapshot", "-c", "s", p(&seed_img)]);
    ok("qemu-io", &["-c", "write -P 0x11 1k 2k", p(&seed_img)]);
    let seed = std::fs::read(&seed_img).unwrap();
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let target = dir.path().join("mutant.qcow2");
    let mut readable = 0;
    for _ in 0..1500 {
        let mut bytes = seed.clone();
        for _ in 0..(1 + next() % 4) {
            let at = (next() % bytes.len() as u64) as usize;
            // Mostly metadata: the first few clusters hold the header and tables.
            let at = if next() % 4 == 0 { at } else { at % 4096 };
            bytes[at] = match next() % 3 {
                0 => next() as u8,
                1 => 0xff,
                _ => 0,
            };
        }
        std::fs::write(&target, &bytes).unwrap();
        readable += oxvirt_images::fuzzing::read_through(&target);
    }
    assert!(readable > 0, "some mutants should still be readable");
}

/// `backing_chain` reads the chain from the headers, for callers (the qemu engine) that hand
/// QEMU an explicit chain instead of letting it probe.
#[test]
fn backing_chain_is_read_from_headers_and_never_probed() {
    use oxvirt_images::image::MAX_CHAIN_DEPTH;
    use oxvirt_images::{backing_chain, ChainLayer, Format, ImageError};
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.raw");
    ok("qemu-img", &["create", "-q", "-f", "raw", p(&base), "1M"]);
    let mid = overlay_on(dir.path(), "mid.qcow2", Path::new("base.raw"), "raw");
    let top = overlay_on(dir.path(), "top.qcow2", Path::new("mid.qcow2"), "qcow2");
    let layer = |path: &Path, format| ChainLayer {
        path: path.to_path_buf(),
        format,
    };
    assert_eq!(
        backing_chain(&top, Format::Qcow2).unwrap(),
        vec![
            layer(&top, Format::Qcow2),
            layer(&mid, Format::Qcow2),
            layer(&base, Format::Raw),
        ]
    );
    // The format given for the top image is believed, not probed.
    assert_eq!(
        backing_chain(&top, Format::Raw).unwrap(),
        vec![layer(&top, Format::Raw)]
    );

    // A missing format anywhere in the chain refuses the chain, naming that overlay.
    forget_backing_format(&mid);
    match backing_chain(&top, Format::Qcow2) {
        Err(ImageError::BackingFormatMissing {
            overlay, backing, ..
        }) => {
            assert_eq!(overlay, mid);
            assert_eq!(backing, base);
        }
        other => panic!("expected BackingFormatMissing, got {other:?}"),
    }

    // Loops, including an image backed by itself.
    let a = dir.path().join("a.qcow2");
    overlay_on(dir.path(), "b.qcow2", Path::new("a.qcow2"), "qcow2");
    overlay_on(dir.path(), "a.qcow2", Path::new("b.qcow2"), "qcow2");
    assert!(matches!(
        backing_chain(&a, Format::Qcow2),
        Err(ImageError::BackingLoop { path }) if path == a
    ));
    let selfish = overlay_on(dir.path(), "self.qcow2", Path::new("self.qcow2"), "qcow2");
    assert!(matches!(
        backing_chain(&selfish, Format::Qcow2),
        Err(ImageError::BackingLoop { .. })
    ));

    // A FIFO as the raw bottom layer: refused without blocking (nothing is read from it).
    let fifo = dir.path().join("pipe");
    ok("mkfifo", &[p(&fifo)]);
    let on_fifo = overlay_on(dir.path(), "on-fifo.qcow2", &fifo, "raw");
    assert!(matches!(
        backing_chain(&on_fifo, Format::Qcow2),
        Err(ImageError::NotAnImage { path, .. }) if path == fifo
    ));

    // MAX_CHAIN_DEPTH images are fine, one more is not.
    let deep = dir.path().join("deep");
    std::fs::create_dir(&deep).unwrap();
    ok(
        "qemu-img",
        &["create", "-q", "-f", "raw", p(&deep.join("0")), "64k"],
    );
    for level in 1..=MAX_CHAIN_DEPTH {
        let backing = (level - 1).to_string();
        let format = if level == 1 { "raw" } else { "qcow2" };
        overlay_on(&deep, &level.to_string(), Path::new(&backing), format);
    }
    let at_limit = deep.join((MAX_CHAIN_DEPTH - 1).to_string());
    assert_eq!(
        backing_chain(&at_limit, Format::Qcow2).unwrap().len(),
        MAX_CHAIN_DEPTH
    );
    let too_deep = deep.join(MAX_CHAIN_DEPTH.to_string());
    assert!(matches!(
        backing_chain(&too_deep, Format::Qcow2),
        Err(ImageError::BackingTooDeep { max, .. }) if max == MAX_CHAIN_DEPTH
    ));
}
