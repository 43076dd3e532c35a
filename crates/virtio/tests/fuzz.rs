//! Property tests: random descriptor chains and random register traffic must never panic the
//! device (worker thread or vCPU path), never touch memory outside what the chains name, and
//! must leave the device able to serve a good request afterwards.

mod common;

use std::io::Write;

use common::{write_desc, Buf, Driver, DATA_BASE, MEM_SIZE};
use oxvirt_virtio::BlockConfig;
use oxvirt_virtio::{balloon_device, block_device, rng_device, BalloonConfig, PciFunction};
use proptest::prelude::*;

const QUEUE_SIZE: u16 = 16;
/// Slots 13..16 of the descriptor table hold the final good request; junk never uses them.
const GOOD_FIRST_SLOT: u16 = 13;
const JUNK_BASE: u64 = 0x20_0000;
const JUNK_LEN: u64 = 0x1_0000;

fn junk_addr() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => (0..JUNK_LEN).prop_map(|o| JUNK_BASE + o),
        1 => MEM_SIZE as u64 - 64..MEM_SIZE as u64 + 4096,
        1 => u64::MAX - 4096..=u64::MAX,
        1 => any::<u64>(),
    ]
}

fn junk_len() -> impl Strategy<Value = u32> {
    prop_oneof![
        6 => 0u32..1100,
        1 => 0xfff0u32..0x1_0010,
        1 => any::<u32>(),
    ]
}

/// A slot or next index the junk may use: never the good request's slots.
fn junk_index() -> impl Strategy<Value = u16> {
    prop_oneof![
        0..GOOD_FIRST_SLOT,
        QUEUE_SIZE..QUEUE_SIZE + 8,
        Just(u16::MAX)
    ]
}

#[derive(Debug, Clone)]
struct JunkDesc {
    addr: u64,
    len: u32,
    /// NEXT, WRITE and INDIRECT bits in any combination.
    flags: u16,
    next: u16,
}

fn junk_desc() -> impl Strategy<Value = JunkDesc> {
    (junk_addr(), junk_len(), 0u16..8, junk_index()).prop_map(|(addr, len, flags, next)| JunkDesc {
        addr,
        len,
        flags,
        next,
    })
}

fn blk_driver(dir: &std::path::Path) -> Driver {
    let path = dir.join("disk.raw");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(&vec![0x5au8; 64 * 512])
        .unwrap();
    let dev = block_device(BlockConfig {
        path,
        readonly: false,
        direct: false,
        serial: Some("fuzz".into()),
    })
    .unwrap();
    let mut d = Driver::probe(dev);
    d.begin();
    assert!(d.negotiate(d.device_features));
    d.setup_queues_and_start(1, QUEUE_SIZE);
    d
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_chains_never_break_virtio_blk(
        table in proptest::collection::vec(junk_desc(), GOOD_FIRST_SLOT as usize),
        heads in proptest::collection::vec(junk_index(), 1..10),
        junk_bytes in proptest::collection::vec(any::<u8>(), 256),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut d = blk_driver(dir.path());
        // Random request headers and payloads wherever junk descriptors point.
        for chunk in 0..JUNK_LEN / 256 {
            d.write_mem(JUNK_BASE + chunk * 256, &junk_bytes);
        }
        let good_area = d.read_mem(DATA_BASE, 0x1000);
        let desc_table = d.queues[0].desc;
        for (slot, desc) in table.iter().enumerate() {
            write_desc(&d.mem, desc_table, slot as u16, desc.addr, desc.len, desc.flags, desc.next);
        }
        for head in &heads {
            d.make_available(0, *head);
        }
        // The good request: GET_ID, in the reserved slots.
        let mut header = [0u8; 16];
        header[0..4].copy_from_slice(&8u32.to_le_bytes());
        d.write_mem(DATA_BASE, &header);
        d.write_mem(DATA_BASE + 0x100, &[0xff]);
        let good = GOOD_FIRST_SLOT;
        write_desc(&d.mem, desc_table, good, DATA_BASE, 16, 1, good + 1);
        write_desc(&d.mem, desc_table, good + 1, DATA_BASE + 0x200, 20, 1 | 2, good + 2);
        write_desc(&d.mem, desc_table, good + 2, DATA_BASE + 0x100, 1, 2, 0);
        let used = d.submit_head(0, good);
        prop_assert_eq!(used, 21);
        prop_assert_eq!(d.read_mem(DATA_BASE + 0x100, 1)[0], 0, "GET_ID status OK");
        prop_assert_eq!(&d.read_mem(DATA_BASE + 0x200, 4)[..], b"fuzz");
        // Nothing else in the good area changed.
        let after = d.read_mem(DATA_BASE, 0x1000);
        for (i, (a, b)) in good_area.iter().zip(after.iter()).enumerate() {
            let ours = i < 16 || (0x100..0x101).contains(&i) || (0x200..0x214).contains(&i);
            prop_assert!(ours || a == b, "byte {:#x} of the good area changed", i);
        }
        prop_assert_eq!(d.status() & common::STATUS_NEEDS_RESET, 0);
    }

    #[test]
    fn random_register_traffic_never_panics(
        ops in proptest::collection::vec(
            (0u8..3, 0u64..0x8100, prop_oneof![Just(1usize), Just(2), Just(4), Just(8)], any::<u64>()),
            1..200,
        ),
    ) {
        let mut d = Driver::probe(rng_device());
        for (target, offset, len, value) in ops {
            let bytes = &value.to_le_bytes()[..len];
            match target {
                0 => {
                    let _ = d.dev.config_write((offset % 0x1000) as u16, bytes);
                    let mut out = vec![0u8; len];
                    d.dev.config_read((offset % 0x1000) as u16, &mut out);
                }
                1 => d.dev.bar_write(0, offset, bytes),
                _ => {
                    let mut out = vec![0u8; len];
                    d.dev.bar_read(0, offset, &mut out);
                }
            }
        }
        // Whatever state that left, a reset brings the device back.
        d.set_status(0);
        prop_assert_eq!(d.status(), 0);
    }

    #[test]
    fn random_rng_buffers_are_filled_within_bounds(
        bufs in proptest::collection::vec((0u64..0x8000, 1u32..0x3000), 1..6),
    ) {
        let mut d = Driver::start(rng_device(), 0, 1);
        let area = JUNK_BASE;
        d.write_mem(area - 16, &[0u8; 16]);
        d.write_mem(area + 0xb000, &[0u8; 16]);
        let chain: Vec<Buf> = bufs.iter().map(|(off, len)| Buf::input(area + off, *len)).collect();
        let total: u64 = bufs.iter().map(|(_, len)| u64::from(*len)).sum();
        let used = d.submit(0, &chain);
        prop_assert_eq!(u64::from(used), total.min(64 * 1024));
        // Bytes just outside every buffer stay untouched.
        prop_assert_eq!(d.read_mem(area - 16, 16), vec![0u8; 16]);
        prop_assert_eq!(d.read_mem(area + 0xb000, 16), vec![0u8; 16]);
    }

    #[test]
    fn random_chains_never_break_virtio_balloon(
        queue in 0usize..3,
        table in proptest::collection::vec(junk_desc(), GOOD_FIRST_SLOT as usize),
        heads in proptest::collection::vec(junk_index(), 1..10),
        junk_bytes in proptest::collection::vec(any::<u8>(), 256),
    ) {
        let (dev, handle) = balloon_device(BalloonConfig::default()).unwrap();
        let mut d = common::Driver::start(dev, 1 << 1, 3);
        // Random PFNs and statistics wherever junk descriptors point.
        for chunk in 0..JUNK_LEN / 256 {
            d.write_mem(JUNK_BASE + chunk * 256, &junk_bytes);
        }
        let desc_table = d.queues[queue].desc;
        for (slot, desc) in table.iter().enumerate() {
            write_desc(&d.mem, desc_table, slot as u16, desc.addr, desc.len, desc.flags, desc.next);
        }
        for head in &heads {
            d.make_available(queue, *head);
        }
        d.kick(queue);
        // The good request: one page given up on the inflate queue, served after the junk.
        let page = DATA_BASE + 0x1000;
        d.write_mem(page, &[0x77; 4096]);
        d.write_mem(DATA_BASE, &((page >> 12) as u32).to_le_bytes());
        write_desc(&d.mem, d.queues[0].desc, GOOD_FIRST_SLOT, DATA_BASE, 4, 0, 0);
        let used = d.submit_head(0, GOOD_FIRST_SLOT);
        prop_assert_eq!(used, 0);
        prop_assert_eq!(d.read_mem(page, 4096), vec![0u8; 4096]);
        prop_assert_eq!(d.status() & common::STATUS_NEEDS_RESET, 0);
        // The handle still answers.
        handle.set_target_pages(1);
        let _ = handle.stats();
    }
}
