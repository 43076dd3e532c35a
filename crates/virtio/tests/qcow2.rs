//! virtio-blk over qcow2 images made by the real qemu-img, driven like Linux's virtio_blk
//! driver; QEMU's own tools then check and read what the guest wrote.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::blk::*;
use common::Driver;
use oxvirt_images::{Format, ImageError};
use oxvirt_virtio::{block_device_from_image, BlockConfig, Error};

const MIB: u64 = 1 << 20;

fn config(path: &Path, readonly: bool) -> BlockConfig {
    BlockConfig {
        path: path.to_path_buf(),
        readonly,
        direct: false,
        serial: Some("oxvirt-qcow2".into()),
    }
}

fn start(path: &Path, format: Format, readonly: bool) -> Driver {
    let dev = block_device_from_image(config(path, readonly), format)
        .unwrap_or_else(|e| panic!("opening {} as {format}: {e}", path.display()));
    Driver::start(dev, BLK_FEATURES, 1)
}

/// Guest data for byte `pos` of a write tagged `seed`.
fn guest_byte(seed: u8, pos: u64) -> u8 {
    ((pos % 251) as u8 ^ (pos >> 9) as u8).wrapping_add(seed)
}

fn guest_data(seed: u8, offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| guest_byte(seed, offset + i))
        .collect()
}

fn qemu_img_create(path: &Path, size: &str, backing: Option<(&str, &str)>) {
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    if let Some((file, format)) = backing {
        args.extend(["-b", file, "-F", format]);
    }
    args.extend([p(path), size]);
    ok("qemu-img", &args);
}

/// True once some process holds an OFD lock on `path` covering `byte` (from /proc/locks).
fn has_lock_at(path: &Path, byte: u64) -> bool {
    let inode = std::fs::metadata(path).unwrap().ino().to_string();
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    locks.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // "N: OFDLCK ADVISORY READ -1 MAJ:MIN:INODE START END"
        fields.len() >= 8
            && fields[1] == "OFDLCK"
            && fields[5].rsplit(':').next() == Some(inode.as_str())
            && fields[6].parse::<u64>().is_ok_and(|s| s <= byte)
            && fields[7].parse::<u64>().is_ok_and(|e| e >= byte)
    })
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn guest_writes_to_a_qemu_img_qcow2_read_back_through_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.qcow2");
    qemu_img_create(&disk, "8M", None);

    let mut d = start(&disk, Format::Qcow2, false);
    let mut capacity = [0u8; 8];
    d.device_config(0, &mut capacity);
    assert_eq!(u64::from_le_bytes(capacity), 8 * MIB / 512, "capacity");
    assert_eq!(d.device_features & F_RO, 0, "writable disk");

    // Fresh image: unallocated clusters read as zeros.
    assert!(read_ok(&mut d, 4 * MIB, 64 << 10).iter().all(|&b| b == 0));

    let mut expected = vec![0u8; 8 * MIB as usize];
    let writes: [(u64, usize); 4] = [
        (0, 4096),
        // Crosses the first 64 KiB cluster boundary.
        (127 * 512, 3 * 512),
        // Longer than the device's 128 KiB copy chunk, three clusters touched.
        (1000 * 512, (128 << 10) + 512),
        // The last sectors of the disk.
        (8 * MIB - 4096, 4096),
    ];
    for (seed, &(offset, len)) in writes.iter().enumerate() {
        let data = guest_data(seed as u8 + 1, offset, len);
        write_ok(&mut d, offset, &data);
        expected[offset as usize..offset as usize + len].copy_from_slice(&data);
    }
    assert_eq!(request(&mut d, T_FLUSH, 0, None, 0).0, S_OK, "flush");
    // Read back through the device, including allocated + unallocated in one request.
    for &(offset, len) in &writes {
        let at = offset as usize;
        assert_eq!(read_ok(&mut d, offset, len), &expected[at..at + len]);
    }
    assert_eq!(read_ok(&mut d, 0, 8192), &expected[..8192]);
    assert_eq!(
        request(&mut d, T_IN, 8 * MIB / 512, None, 512).0,
        S_IOERR,
        "read past the end"
    );
    close(d);

    qemu_check_clean(&disk);
    assert_same_disk(
        &qemu_convert_to_raw(&disk),
        &expected,
        "qemu-img convert of the guest's writes",
    );
}

#[test]
fn a_backing_chain_reads_through_and_only_the_top_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.raw");
    let base_data = guest_data(0x40, 0, 4 * MIB as usize);
    std::fs::write(&base, &base_data).unwrap();
    let mid = dir.path().join("mid.qcow2");
    let top = dir.path().join("top.qcow2");
    // Relative backing names, resolved against the overlay's directory as QEMU does.
    qemu_img_create(&mid, "4M", Some(("base.raw", "raw")));
    ok(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -q -P 0x5a 1M 64k", p(&mid)],
    );
    qemu_img_create(&top, "4M", Some(("mid.qcow2", "qcow2")));
    let mid_before = std::fs::read(&mid).unwrap();

    let mut expected = base_data.clone();
    expected[MIB as usize..(MIB + (64 << 10)) as usize].fill(0x5a);

    let mut d = start(&top, Format::Qcow2, false);
    assert_eq!(read_ok(&mut d, 0, 8192), &expected[..8192], "from base.raw");
    let around = (MIB - 4096) as usize;
    assert_eq!(
        read_ok(&mut d, around as u64, 72 << 10),
        &expected[around..around + (72 << 10)],
        "base.raw, then mid.qcow2's cluster, then base.raw"
    );

    // A partial-cluster write: the rest of the new cluster is copied up from the backing chain.
    let write_at = 2 * MIB + 3 * 512;
    let data = guest_data(7, write_at, 4096);
    write_ok(&mut d, write_at, &data);
    expected[write_at as usize..write_at as usize + 4096].copy_from_slice(&data);
    assert_eq!(
        read_ok(&mut d, 2 * MIB, 64 << 10),
        &expected[2 * MIB as usize..(2 * MIB + (64 << 10)) as usize]
    );

    // The backing files are locked against writers while the device holds them.
    let resize = run("qemu-img", &["resize", "-f", "raw", p(&base), "8M"]);
    assert!(!resize.status.success(), "base.raw resized while in use");
    assert!(
        String::from_utf8_lossy(&resize.stderr).contains("lock"),
        "{}",
        text(&resize)
    );
    close(d);

    assert_eq!(
        std::fs::read(&base).unwrap(),
        base_data,
        "base.raw untouched"
    );
    assert_eq!(
        std::fs::read(&mid).unwrap(),
        mid_before,
        "mid.qcow2 untouched"
    );
    qemu_check_clean(&top);
    assert_same_disk(&qemu_convert_to_raw(&top), &expected, "the whole chain");
}

#[test]
fn a_read_only_qcow2_offers_ro_rejects_writes_and_shares_with_readers() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("ro.qcow2");
    qemu_img_create(&disk, "1M", None);
    ok(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -q -P 0x33 0 64k", p(&disk)],
    );
    let before = std::fs::read(&disk).unwrap();

    let mut d = start(&disk, Format::Qcow2, true);
    assert_ne!(d.device_features & F_RO, 0, "VIRTIO_BLK_F_RO offered");
    assert_eq!(
        request(&mut d, T_OUT, 0, Some(&[0u8; 512]), 0).0,
        S_IOERR,
        "write to a read-only disk"
    );
    assert!(read_ok(&mut d, 0, 4096).iter().all(|&b| b == 0x33));
    // Readers share the image; a writer is refused.
    ok("qemu-img", &["info", p(&disk)]);
    let write = run(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 1 0 512", p(&disk)],
    );
    assert!(
        String::from_utf8_lossy(&write.stderr).contains("lock"),
        "qemu-io could write to a disk a read-only guest uses: {}",
        text(&write)
    );
    close(d);
    assert_eq!(std::fs::read(&disk).unwrap(), before, "image unchanged");
}

#[test]
fn a_device_and_qemu_exclude_each_other_through_image_locks() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("locked.qcow2");
    qemu_img_create(&disk, "1M", None);
    let raw = dir.path().join("locked.raw");
    std::fs::write(&raw, vec![0u8; MIB as usize]).unwrap();

    // While a device has the disks open, QEMU's tools refuse to write them.
    let qcow2_dev = start(&disk, Format::Qcow2, false);
    let raw_dev = start(&raw, Format::Raw, false);
    for (path, format) in [(&disk, "qcow2"), (&raw, "raw")] {
        let write = run("qemu-io", &["-f", format, "-c", "write 0 512", p(path)]);
        assert!(
            String::from_utf8_lossy(&write.stderr).contains("Failed to get \"write\" lock"),
            "qemu-io wrote to a {format} disk in use: {}",
            text(&write)
        );
    }
    // Reading qcow2 metadata needs a consistent view, which a writer in use denies. (`qemu-img
    // info` on raw does no I/O and asks for no permission, so it works on a raw disk in use.)
    let info = run("qemu-img", &["info", "-f", "qcow2", p(&disk)]);
    assert!(
        String::from_utf8_lossy(&info.stderr).contains("Failed to get shared \"write\" lock"),
        "{}",
        text(&info)
    );
    close(qcow2_dev);
    close(raw_dev);
    ok("qemu-img", &["info", p(&disk)]);

    // While QEMU (qemu-io, waiting for commands) has the disk open for writing, we refuse it.
    let mut qemu_io = spawn(
        Command::new("qemu-io")
            .args(["-f", "qcow2", p(&disk)])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_for("qemu-io's write lock", || has_lock_at(&disk, 101));
    let refused = block_device_from_image(config(&disk, false), Format::Qcow2);
    let err = refused.err().expect("opened a disk qemu-io holds");
    assert!(
        matches!(err, Error::Image(ImageError::Locked { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("in use"), "{err}");
    // Read-only is refused too: QEMU does not share "write" with a reader that forbids it.
    assert!(block_device_from_image(config(&disk, true), Format::Qcow2).is_err());
    drop(qemu_io.stdin.take()); // EOF: qemu-io quits
    assert!(qemu_io.wait().unwrap().success());
    close(start(&disk, Format::Qcow2, false));

    // The same for a raw disk.
    let mut qemu_io = spawn(
        Command::new("qemu-io")
            .args(["-f", "raw", p(&raw)])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_for("qemu-io's write lock on the raw disk", || {
        has_lock_at(&raw, 101)
    });
    let err = block_device_from_image(config(&raw, false), Format::Raw)
        .err()
        .expect("opened a raw disk qemu-io holds");
    assert!(
        matches!(err, Error::Image(ImageError::Locked { .. })),
        "{err}"
    );
    drop(qemu_io.stdin.take());
    assert!(qemu_io.wait().unwrap().success());
    close(start(&raw, Format::Raw, false));
}

#[test]
fn a_corrupt_mapping_fails_the_request_not_the_device() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("damaged.qcow2");
    qemu_img_create(&disk, "4M", None);
    ok(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -q -P 0x77 0 128k", p(&disk)],
    );
    // Point the first L2 entry far past the end of the file (as a damaged or hostile image
    // might); the second cluster stays intact.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&disk)
        .unwrap();
    let mut word = [0u8; 8];
    file.read_exact_at(&mut word, 40).unwrap();
    let l1_offset = u64::from_be_bytes(word);
    file.read_exact_at(&mut word, l1_offset).unwrap();
    let l2_offset = u64::from_be_bytes(word) & 0x00ff_ffff_ffff_fe00;
    let bogus: u64 = (1 << 63) | (1 << 40);
    file.write_all_at(&bogus.to_be_bytes(), l2_offset).unwrap();
    drop(file);

    let mut d = start(&disk, Format::Qcow2, false);
    assert_eq!(request(&mut d, T_IN, 0, None, 512).0, S_IOERR);
    // The device keeps serving the parts of the disk that are intact.
    assert!(read_ok(&mut d, 64 << 10, 4096).iter().all(|&b| b == 0x77));
    close(d);
}

/// Points the qcow2 header of `path` at backing file `name` without a backing-format
/// extension (qemu-img 7.2 no longer creates such images, older ones did).
fn set_backing_without_format(path: &Path, name: &str) {
    use std::os::unix::fs::FileExt;
    const NAME_AT: u64 = 0x8000; // inside the header cluster, past the header extensions
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(name.as_bytes(), NAME_AT).unwrap();
    file.write_all_at(&NAME_AT.to_be_bytes(), 8).unwrap();
    file.write_all_at(&(name.len() as u32).to_be_bytes(), 16)
        .unwrap();
}

#[test]
fn formats_are_never_probed() {
    let dir = tempfile::tempdir().unwrap();
    // A raw disk whose guest wrote a qcow2 header into sector 0 stays raw.
    let disguised = dir.path().join("guest-wrote-a-qcow2-header.img");
    qemu_img_create(&disguised, "1G", None);
    let file_size = std::fs::metadata(&disguised).unwrap().len();
    let mut d = start(&disguised, Format::Raw, true);
    let mut capacity = [0u8; 8];
    d.device_config(0, &mut capacity);
    assert_eq!(u64::from_le_bytes(capacity), file_size / 512, "raw size");
    assert_eq!(&read_ok(&mut d, 0, 512)[..4], b"QFI\xfb");
    close(d);

    assert_eq!(Format::default(), Format::Raw);
    assert_eq!("qcow2".parse::<Format>().unwrap(), Format::Qcow2);
    let auto = "auto".parse::<Format>().unwrap_err();
    assert!(matches!(auto, ImageError::InvalidArgument(_)), "{auto}");

    // A backing file without a recorded format would have to be probed: refused, naming it.
    let base = dir.path().join("base.raw");
    std::fs::write(&base, vec![0u8; MIB as usize]).unwrap();
    let overlay = dir.path().join("overlay.qcow2");
    qemu_img_create(&overlay, "1M", None);
    set_backing_without_format(&overlay, "base.raw");
    let info = ok("qemu-img", &["info", p(&overlay)]);
    assert!(info.contains("backing file: base.raw"), "{info}");
    let err = block_device_from_image(config(&overlay, false), Format::Qcow2)
        .err()
        .expect("opened a chain that needs probing");
    assert!(
        err.to_string()
            .contains("\"base.raw\" has no recorded format"),
        "{err}"
    );

    // Also one level down.
    let top = dir.path().join("top.qcow2");
    qemu_img_create(&top, "1M", Some(("overlay.qcow2", "qcow2")));
    let err = block_device_from_image(config(&top, true), Format::Qcow2)
        .err()
        .expect("opened a chain that needs probing");
    assert!(err.to_string().contains("overlay.qcow2"), "{err}");
}

#[test]
fn qcow2_refuses_direct_io_and_names_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.qcow2");
    qemu_img_create(&disk, "1M", None);
    let mut direct = config(&disk, false);
    direct.direct = true;
    let err = block_device_from_image(direct, Format::Qcow2)
        .err()
        .expect("qcow2 with direct I/O");
    assert!(err.to_string().contains("raw disks only"), "{err}");

    // A raw file opened as qcow2: a clear error naming the file, no panic.
    let not_qcow2: PathBuf = dir.path().join("plain.raw");
    std::fs::write(&not_qcow2, vec![0u8; 65536]).unwrap();
    let err = block_device_from_image(config(&not_qcow2, false), Format::Qcow2)
        .err()
        .expect("raw bytes accepted as qcow2");
    assert!(err.to_string().contains("plain.raw"), "{err}");
}
