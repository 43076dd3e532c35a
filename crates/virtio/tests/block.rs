//! virtio-blk through the virtio-pci transport, driven like Linux's drivers would.

mod common;

use std::io::Write;
use std::path::Path;

use common::blk::*;
use common::{Buf, Driver, DATA_BASE, MEM_SIZE};
use oxvirt_virtio::{
    block_device, block_device_with_stats, BlockConfig, BlockStats, BlockStatsHandle, PciFunction,
};

/// A disk image whose byte `i` is `pattern(i)`.
fn pattern(i: usize) -> u8 {
    (i % 251) as u8 ^ (i / 4096) as u8
}

fn image(dir: &Path, sectors: usize) -> std::path::PathBuf {
    let path = dir.join("disk.raw");
    let data: Vec<u8> = (0..sectors * 512).map(pattern).collect();
    std::fs::File::create(&path)
        .unwrap()
        .write_all(&data)
        .unwrap();
    path
}

fn start(path: &Path, readonly: bool, direct: bool) -> Driver {
    let dev = block_device(BlockConfig {
        path: path.to_path_buf(),
        readonly,
        direct,
        serial: Some("OXVIRT-SERIAL-0001".into()),
    })
    .unwrap();
    Driver::start(dev, F_SEG_MAX | F_BLK_SIZE | F_FLUSH | F_RO, 1)
}

#[test]
fn config_space_reports_capacity_and_features() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path(), 64);
    let mut d = Driver::probe(
        block_device(BlockConfig {
            path,
            readonly: false,
            direct: false,
            serial: None,
        })
        .unwrap(),
    );
    assert_eq!(d.dev.vendor_device(), (0x1af4, 0x1042));
    let features = d.begin();
    assert_ne!(features & F_FLUSH, 0);
    assert_eq!(features & F_RO, 0);
    let mut cfg = [0u8; 24];
    d.device_config(0, &mut cfg);
    assert_eq!(
        u64::from_le_bytes(cfg[0..8].try_into().unwrap()),
        64,
        "capacity in sectors"
    );
    assert_eq!(
        u32::from_le_bytes(cfg[12..16].try_into().unwrap()),
        254,
        "seg_max"
    );
    assert_eq!(
        u32::from_le_bytes(cfg[20..24].try_into().unwrap()),
        512,
        "blk_size"
    );
}

#[test]
fn reads_known_bytes_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path(), 64);
    let mut d = start(&path, false, false);
    let (status, used, data) = request(&mut d, T_IN, 3, None, 4096);
    assert_eq!(status, S_OK);
    assert_eq!(used, 4096 + 1);
    let expected: Vec<u8> = (3 * 512..3 * 512 + 4096).map(pattern).collect();
    assert_eq!(data, expected);
}

#[test]
fn read_spread_over_many_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path(), 64);
    let mut d = start(&path, false, false);
    let mut header = [0u8; 16];
    header[8..16].copy_from_slice(&5u64.to_le_bytes());
    d.write_mem(HEADER, &header);
    // 8 segments of 512 bytes, scattered in guest memory.
    let mut bufs = vec![Buf::out(HEADER, 16)];
    for i in 0..8u64 {
        bufs.push(Buf::input(DATA + 0x3000 * i, 512));
    }
    bufs.push(Buf::input(STATUS, 1));
    assert_eq!(d.submit(0, &bufs), 8 * 512 + 1);
    assert_eq!(d.read_mem(STATUS, 1)[0], S_OK);
    for i in 0..8usize {
        let expected: Vec<u8> = ((5 + i) * 512..(6 + i) * 512).map(pattern).collect();
        assert_eq!(
            d.read_mem(DATA + 0x3000 * i as u64, 512),
            expected,
            "segment {i}"
        );
    }
}

#[test]
fn indirect_descriptor_tables_work() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path(), 64);
    let mut d = start(&path, false, false);
    assert_ne!(d.device_features & (1 << 28), 0, "INDIRECT_DESC offered");
    let mut header = [0u8; 16];
    header[8..16].copy_from_slice(&7u64.to_le_bytes());
    d.write_mem(HEADER, &header);
    d.write_mem(STATUS, &[0xff]);
    // The indirect table: header, data, status.
    let table = DATA_BASE + 0x8000;
    common::write_desc(&d.mem, table, 0, HEADER, 16, 1, 1);
    common::write_desc(&d.mem, table, 1, DATA, 1024, 1 | 2, 2);
    common::write_desc(&d.mem, table, 2, STATUS, 1, 2, 0);
    let head = d.write_chain(0, &[Buf::out(table, 48)]);
    // Mark the ring descriptor VIRTQ_DESC_F_INDIRECT.
    common::write_desc(&d.mem, d.queues[0].desc, head, table, 48, 4, 0);
    assert_eq!(d.submit_head(0, head), 1025);
    assert_eq!(d.read_mem(STATUS, 1)[0], S_OK);
    assert_eq!(
        d.read_mem(DATA, 1024),
        (7 * 512..9 * 512).map(pattern).collect::<Vec<_>>()
    );
}

#[test]
fn writes_land_in_the_file_and_flush_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path(), 64);
    let mut d = start(&path, false, false);
    let payload: Vec<u8> = (0..1024).map(|i| (i * 7) as u8).collect();
    let (status, used, _) = request(&mut d, T_OUT, 10, Some(&payload), 0);
    assert_eq!((status, used), (S_OK, 1));
    let (status, _, _) = request(&mut d, T_FLUSH, 0, None, 0);
    assert_eq!(status, S_OK);
    let file = std::fs::read(&path).unwrap();
    assert_eq!(&file[10 * 512..10 * 512 + 1024], &payload[..]);
    assert_eq!(
        file[10 * 512 - 1],
        pattern(10 * 512 - 1),
        "bytes before untouched"
    );
    assert_eq!(file[12 * 512], pattern(12 * 512), "bytes after untouched");
    // And the guest reads back what it wrote.
    let (status, _, data) = request(&mut d, T_IN, 10, None, 1024);
    assert_eq!(status, S_OK);
    assert_eq!(data, payload);
}

#[test]
fn read_only_disk_offers_ro_and_rejects_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path(), 16);
    let mut d = start(&path, true, false);
    assert_ne!(d.device_features & F_RO, 0);
    let (status, _, _) = request(&mut d, T_OUT, 0, Some(&[0u8; 512]), 0);
    assert_eq!(status, S_IOERR);
    assert_eq!(
        std::fs::read(&path).unwrap()[0..512],
        (0..512).map(pattern).collect::<Vec<_>>()[..]
    );
    let (status, _, data) = request(&mut d, T_IN, 1, None, 512);
    assert_eq!(status, S_OK);
    assert_eq!(data, (512..1024).map(pattern).collect::<Vec<_>>());
}

#[test]
fn out_of_range_and_misaligned_requests_fail_with_ioerr() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path(), 16);
    let mut d = start(&path, false, false);
    // Last sector is fine, one past is not; a request straddling the end is not.
    assert_eq!(request(&mut d, T_IN, 15, None, 512).0, S_OK);
    assert_eq!(request(&mut d, T_IN, 16, None, 512).0, S_IOERR);
    assert_eq!(request(&mut d, T_IN, 15, None, 1024).0, S_IOERR);
    assert_eq!(request(&mut d, T_OUT, 16, Some(&[1u8; 512]), 0).0, S_IOERR);
    // Sector numbers whose byte offset overflows.
    assert_eq!(request(&mut d, T_IN, u64::MAX, None, 512).0, S_IOERR);
    assert_eq!(request(&mut d, T_IN, u64::MAX / 512, None, 512).0, S_IOERR);
    // Data not a multiple of the sector size.
    assert_eq!(request(&mut d, T_IN, 0, None, 100).0, S_IOERR);
    assert_eq!(request(&mut d, T_OUT, 0, Some(&[1u8; 100]), 0).0, S_IOERR);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        16 * 512,
        "file not extended"
    );
    assert_eq!(
        std::fs::read(&path).unwrap()[0],
        pattern(0),
        "nothing written"
    );
}

#[test]
fn get_id_returns_the_serial_and_unknown_types_are_unsupported() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path(), 16);
    let mut d = start(&path, false, false);
    let (status, used, data) = request(&mut d, T_GET_ID, 0, None, 20);
    assert_eq!(status, S_OK);
    assert_eq!(used, 21);
    assert_eq!(&data[..18], b"OXVIRT-SERIAL-0001");
    assert_eq!(&data[18..], &[0, 0]);
    // A shorter buffer gets the first bytes only.
    let (status, used, data) = request(&mut d, T_GET_ID, 0, None, 6);
    assert_eq!((status, used), (S_OK, 7));
    assert_eq!(&data[..], b"OXVIRT");
    let (status, _, _) = request(&mut d, 0x1234, 0, None, 0);
    assert_eq!(status, S_UNSUPP);
}

#[test]
fn malformed_chains_do_not_break_the_device() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path(), 16);
    let mut d = start(&path, false, false);

    // No device-writable descriptor at all: nowhere to put a status, returned with length 0.
    d.write_mem(HEADER, &[0u8; 16]);
    assert_eq!(d.submit(0, &[Buf::out(HEADER, 16)]), 0);

    // Header shorter than 16 bytes.
    d.write_mem(STATUS, &[0xff]);
    assert_eq!(
        d.submit(0, &[Buf::out(HEADER, 8), Buf::input(STATUS, 1)]),
        1
    );
    assert_eq!(d.read_mem(STATUS, 1)[0], S_IOERR);

    // A data buffer outside guest memory.
    assert_eq!(
        d.submit(
            0,
            &[
                Buf::out(HEADER, 16),
                Buf::input(MEM_SIZE as u64 - 256, 4096),
                Buf::input(STATUS, 1)
            ]
        ),
        0
    );
    // A buffer whose address + length wraps around.
    assert_eq!(
        d.submit(0, &[Buf::out(u64::MAX - 4, 16), Buf::input(STATUS, 1)]),
        0
    );
    // A descriptor loop: head -> next -> head. The chain ends at the queue size (TTL).
    let head = d.write_chain(0, &[Buf::out(HEADER, 16), Buf::input(STATUS, 1)]);
    common::write_desc(&d.mem, d.queues[0].desc, head + 1, STATUS, 1, 2 | 1, head);
    d.write_mem(HEADER, &[0u8; 16]);
    let _ = d.submit_head(0, head);

    // The device still serves good requests.
    let (status, _, data) = request(&mut d, T_IN, 2, None, 512);
    assert_eq!(status, S_OK);
    assert_eq!(data, (1024..1536).map(pattern).collect::<Vec<_>>());
}

#[test]
fn direct_io_reads_and_writes_including_unaligned_sectors() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path(), 64); // 32 KiB: a multiple of 4 KiB.
    let mut d = start(&path, false, true);
    // Aligned 4 KiB read.
    let (status, _, data) = request(&mut d, T_IN, 8, None, 4096);
    assert_eq!(status, S_OK);
    assert_eq!(
        data,
        (8 * 512..8 * 512 + 4096).map(pattern).collect::<Vec<_>>()
    );
    // One 512-byte sector in the middle of a 4 KiB block (read-modify-write).
    let payload = vec![0xa5u8; 512];
    assert_eq!(request(&mut d, T_OUT, 3, Some(&payload), 0).0, S_OK);
    let (status, _, data) = request(&mut d, T_IN, 2, None, 1536);
    assert_eq!(status, S_OK);
    assert_eq!(
        &data[..512],
        &(1024..1536).map(pattern).collect::<Vec<_>>()[..]
    );
    assert_eq!(&data[512..1024], &payload[..]);
    assert_eq!(
        &data[1024..],
        &(2048..2560).map(pattern).collect::<Vec<_>>()[..]
    );
    let file = std::fs::read(&path).unwrap();
    assert_eq!(&file[3 * 512..4 * 512], &payload[..]);
    assert_eq!(file[4 * 512], pattern(4 * 512));
    assert_eq!(file.len(), 64 * 512);
}

#[test]
fn direct_io_refuses_sizes_that_are_not_4k_multiples() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path(), 9);
    let err = block_device(BlockConfig {
        path,
        readonly: false,
        direct: true,
        serial: None,
    })
    .err()
    .expect("odd-sized image refused for O_DIRECT");
    assert!(err.to_string().contains("multiple of 4096"), "{err}");
}

#[test]
fn missing_image_is_a_clear_error() {
    let err = block_device(BlockConfig {
        path: "/nonexistent/disk.raw".into(),
        readonly: true,
        direct: false,
        serial: None,
    })
    .err()
    .expect("missing file refused");
    assert!(err.to_string().contains("/nonexistent/disk.raw"), "{err}");
}

#[test]
fn reset_and_reinitialize_serves_requests_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path(), 16);
    let mut d = start(&path, false, false);
    assert_eq!(request(&mut d, T_IN, 0, None, 512).0, S_OK);
    // Linux does this on driver unbind/rebind and on suspend.
    d.queues.clear();
    d.begin();
    assert!(d.negotiate(d.device_features));
    d.setup_queues_and_start(1, 128);
    let (status, _, data) = request(&mut d, T_IN, 1, None, 512);
    assert_eq!(status, S_OK);
    assert_eq!(data, (512..1024).map(pattern).collect::<Vec<_>>());
}

#[test]
fn many_requests_in_flight_wrap_the_rings() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path(), 64);
    let mut d = start(&path, false, false);
    const BATCH: u64 = 8;
    for round in 0..40u64 {
        // BATCH reads posted together, one kick. Request i reads sector (round + i) % 64.
        let mut heads = Vec::new();
        for i in 0..BATCH {
            let slot = DATA_BASE + 0x10000 + i * 0x1000;
            let sector = (round + i) % 64;
            let mut header = [0u8; 16];
            header[8..16].copy_from_slice(&sector.to_le_bytes());
            d.write_mem(slot, &header);
            d.write_mem(slot + 0x100, &[0xff]);
            let head = d.write_chain(
                0,
                &[
                    Buf::out(slot, 16),
                    Buf::input(slot + 0x200, 512),
                    Buf::input(slot + 0x100, 1),
                ],
            );
            d.make_available(0, head);
            heads.push(head);
        }
        d.kick(0);
        let mut done = Vec::new();
        let msi = d.msi.clone();
        msi.wait_until("the whole batch", || {
            done.extend(d.take_used(0));
            done.len() == BATCH as usize
        });
        for (i, head) in heads.iter().enumerate() {
            assert!(
                done.contains(&(u32::from(*head), 513)),
                "request {i} of round {round}"
            );
            let slot = DATA_BASE + 0x10000 + i as u64 * 0x1000;
            let sector = ((round + i as u64) % 64) as usize;
            assert_eq!(d.read_mem(slot + 0x100, 1)[0], S_OK);
            assert_eq!(
                d.read_mem(slot + 0x200, 512),
                (sector * 512..(sector + 1) * 512)
                    .map(pattern)
                    .collect::<Vec<_>>()
            );
        }
    }
    assert_eq!(d.used_idx(0), 320, "320 requests through a 256-entry ring");
}

#[test]
fn saved_transport_state_restores_into_a_new_device_and_requests_go_on() {
    use oxvirt_virtio::{rng_device, GuestMemoryHandle, VirtioPciDevice};
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path(), 16);
    let mut d = start(&path, false, false);
    for sector in 0..3 {
        assert_eq!(request(&mut d, T_IN, sector, None, 512).0, S_OK);
    }
    // A running device refuses to be saved: its worker could be taking a chain.
    assert!(d.dev.save_state().is_err());
    d.dev.snapshot_pause().unwrap();
    let state = d.dev.save_state().unwrap();
    let status = d.status();

    // A new process: the same guest RAM, a new transport over the same disk (the old one is
    // gone first: it holds the image's lock).
    let handle = GuestMemoryHandle::new(d.mem.clone());
    let (msi, sink) = common::msi_log();
    let placeholder = VirtioPciDevice::new(rng_device(), handle.clone(), sink.clone()).unwrap();
    drop(std::mem::replace(&mut d.dev, placeholder));
    let disk = block_device(BlockConfig {
        path: path.clone(),
        readonly: false,
        direct: false,
        serial: Some("OXVIRT-SERIAL-0001".into()),
    })
    .unwrap();
    let mut restored = VirtioPciDevice::new(disk, handle.clone(), sink.clone()).unwrap();
    // Another kind of device does not take the state.
    let mut rng = VirtioPciDevice::new(rng_device(), handle, sink).unwrap();
    let err = rng.restore_state(&state).unwrap_err();
    assert!(err.to_string().contains("saved device"), "{err}");
    restored.restore_state(&state).unwrap();
    restored.start_restored().unwrap();
    d.dev = restored;
    d.msi = msi;
    assert_eq!(d.status(), status);
    // The queue goes on at the fourth request, with the driver's vectors.
    let (status, _, data) = request(&mut d, T_IN, 5, None, 512);
    assert_eq!(status, S_OK);
    assert_eq!(data, (5 * 512..6 * 512).map(pattern).collect::<Vec<_>>());
    assert_eq!(d.used_idx(0), 4);
    // Truncated or foreign bytes are refused, not a panic.
    assert!(d.dev.restore_state(&state[..state.len() / 2]).is_err());
    assert!(d.dev.restore_state(b"OXVMSTAT").is_err());
}

/// A started device over `path` and the handle its counters are read through.
fn start_counted(path: &Path, readonly: bool) -> (Driver, BlockStatsHandle) {
    let (dev, stats) = block_device_with_stats(
        BlockConfig {
            path: path.to_path_buf(),
            readonly,
            direct: false,
            serial: None,
        },
        oxvirt_images::Format::Raw,
    )
    .unwrap();
    assert_eq!(stats.get(), BlockStats::default(), "nothing counted yet");
    (Driver::start(dev, BLK_FEATURES, 1), stats)
}

#[test]
fn counters_add_up_the_requests_that_succeeded_and_their_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path(), 64);
    let (mut d, stats) = start_counted(&path, false);
    read_ok(&mut d, 0, 4096);
    read_ok(&mut d, 8192, 1024);
    write_ok(&mut d, 512, &[7u8; 1536]);
    assert_eq!(request(&mut d, T_FLUSH, 0, None, 0).0, S_OK);
    let after = stats.get();
    assert_eq!((after.read.requests, after.read.bytes), (2, 5120));
    assert_eq!((after.write.requests, after.write.bytes), (1, 1536));
    assert_eq!((after.flush.requests, after.flush.bytes), (1, 0));
    // Each request took some time on the disk.
    assert!(
        after.read.total_ns > 0 && after.write.total_ns > 0,
        "{after:?}"
    );

    // Failed requests, GET_ID and unknown types are no I/O done: nothing changes.
    assert_eq!(request(&mut d, T_IN, 64, None, 512).0, S_IOERR);
    assert_eq!(request(&mut d, T_OUT, 0, Some(&[1u8; 100]), 0).0, S_IOERR);
    assert_eq!(request(&mut d, T_GET_ID, 0, None, 20).0, S_OK);
    assert_eq!(request(&mut d, 0x1234, 0, None, 0).0, S_UNSUPP);
    assert_eq!(stats.get(), after);

    // The counters go on across a reset and a new driver (Linux's unbind/rebind).
    d.queues.clear();
    d.begin();
    assert!(d.negotiate(d.device_features));
    d.setup_queues_and_start(1, 128);
    read_ok(&mut d, 0, 512);
    let last = stats.get();
    assert_eq!((last.read.requests, last.read.bytes), (3, 5632));
    assert_eq!(last.write, after.write);
}

#[test]
fn a_read_only_disk_counts_its_reads_and_no_refused_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path(), 16);
    let (mut d, stats) = start_counted(&path, true);
    assert_eq!(request(&mut d, T_OUT, 0, Some(&[0u8; 512]), 0).0, S_IOERR);
    read_ok(&mut d, 0, 2048);
    let stats = stats.get();
    assert_eq!((stats.read.requests, stats.read.bytes), (1, 2048));
    assert_eq!(stats.write, oxvirt_virtio::RequestStats::default());
}
