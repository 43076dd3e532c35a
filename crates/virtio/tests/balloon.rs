//! virtio-balloon through the transport, driven the way Linux's virtio_balloon driver does it:
//! the target in the configuration, pages given up on the inflate queue, statistics on the
//! stats queue kept by the device until the next refresh.

mod common;

use common::{Buf, Driver, DATA_BASE, MEM_SIZE};
use oxvirt_virtio::{balloon_device, BalloonConfig, BalloonHandle, PciFunction};

const F_STATS_VQ: u64 = 1 << 1;
const F_DEFLATE_ON_OOM: u64 = 1 << 2;
/// Vector data of the configuration-change MSI (vector 0, see common::Driver).
const CONFIG_MSI: u32 = 0x40;

fn started(config: BalloonConfig) -> (Driver, BalloonHandle) {
    let (dev, handle) = balloon_device(config).unwrap();
    (Driver::start(dev, F_STATS_VQ, 3), handle)
}

fn config_u32(d: &mut Driver, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    d.device_config(offset, &mut b);
    u32::from_le_bytes(b)
}

/// Posts a statistics buffer holding `entries` as the driver does, waits until the device read
/// it, and returns its head.
fn post_stats(d: &mut Driver, handle: &BalloonHandle, entries: &[(u16, u64)]) -> u16 {
    let buf: Vec<u8> = entries
        .iter()
        .flat_map(|(tag, value)| {
            let mut e = tag.to_le_bytes().to_vec();
            e.extend_from_slice(&value.to_le_bytes());
            e
        })
        .collect();
    d.write_mem(DATA_BASE, &buf);
    let head = d.write_chain(2, &[Buf::out(DATA_BASE, buf.len() as u32)]);
    d.make_available(2, head);
    d.kick(2);
    let msi = d.msi.clone();
    msi.wait_until("the statistics", || handle.stats().is_some());
    head
}

#[test]
fn offers_stats_and_deflate_on_oom_only_when_asked() {
    let (plain, _) = balloon_device(BalloonConfig::default()).unwrap();
    let mut d = Driver::probe(plain);
    let features = d.begin();
    assert_eq!(d.cfg_read16(2), 0x1045, "modern virtio-balloon device id");
    assert_ne!(features & F_STATS_VQ, 0);
    assert_eq!(features & F_DEFLATE_ON_OOM, 0);
    let (oom, _) = balloon_device(BalloonConfig {
        deflate_on_oom: true,
        stats_period_s: 0,
    })
    .unwrap();
    let mut d = Driver::probe(oom);
    assert_ne!(d.begin() & F_DEFLATE_ON_OOM, 0);
}

#[test]
fn the_target_reaches_the_driver_and_actual_comes_back() {
    let (mut d, handle) = started(BalloonConfig::default());
    assert_eq!(config_u32(&mut d, 0), 0);
    let before = d.msi.count_for(CONFIG_MSI);
    handle.set_target_pages(4096);
    assert_eq!(
        d.msi.count_for(CONFIG_MSI),
        before + 1,
        "a config interrupt"
    );
    assert_eq!(config_u32(&mut d, 0), 4096, "num_pages");
    // The driver writes `actual`; num_pages is read-only for it.
    let device = d.layout.device;
    d.bar_write32(device + 4, 1000);
    d.bar_write32(device, 7);
    assert_eq!(handle.actual_pages(), 1000);
    assert_eq!(config_u32(&mut d, 0), 4096);
    // Byte-wise writes of `actual` (any width is allowed) land too.
    d.bar_write8(device + 5, 0x10);
    assert_eq!(handle.actual_pages(), 0x10e8);
    // A reset means the driver left: it holds nothing, the host's target stays.
    d.set_status(0);
    assert_eq!(handle.actual_pages(), 0);
    assert_eq!(handle.target_pages(), 4096);
}

#[test]
fn inflated_pages_are_released_and_pfns_outside_ram_ignored() {
    let (mut d, _handle) = started(BalloonConfig::default());
    let page = DATA_BASE + 0x10_000;
    d.write_mem(page, &[0xaa; 8192]);
    d.write_mem(page + 8192, &[0xbb; 4096]);
    let pfn = (page >> 12) as u32;
    let pfns: Vec<u8> = [
        pfn,
        pfn + 1,
        0xffff_ffff,
        (MEM_SIZE >> 12) as u32,
        u32::MAX - 1,
    ]
    .iter()
    .flat_map(|p| p.to_le_bytes())
    .collect();
    let list = DATA_BASE;
    d.write_mem(list, &pfns);
    let used = d.submit(0, &[Buf::out(list, pfns.len() as u32)]);
    assert_eq!(used, 0);
    assert_eq!(
        d.read_mem(page, 8192),
        vec![0; 8192],
        "released pages read zero"
    );
    assert_eq!(
        d.read_mem(page + 8192, 4096),
        vec![0xbb; 4096],
        "the next page kept"
    );
    // Deflate is only acknowledged.
    d.write_mem(page, &[0xcc; 16]);
    d.submit(1, &[Buf::out(list, 8)]);
    assert_eq!(d.read_mem(page, 16), vec![0xcc; 16]);
}

#[test]
fn statistics_are_kept_and_the_buffer_held_until_a_refresh() {
    let (mut d, handle) = started(BalloonConfig::default());
    assert!(handle.stats().is_none());
    let entries = [(4u16, 100 << 20), (5, 256 << 20), (6, 200 << 20), (99, 7)];
    let head = post_stats(&mut d, &handle, &entries);
    let msi = d.msi.clone();
    assert_eq!(handle.stats().unwrap().entries, entries.to_vec());
    assert!(d.take_used(2).is_empty(), "the device keeps the buffer");
    // A period makes the device hand it back for a refresh.
    handle.set_stats_period(1).unwrap();
    let mut back = Vec::new();
    msi.wait_until("the buffer back", || {
        back.extend(d.take_used(2));
        !back.is_empty()
    });
    assert_eq!(back, vec![(u32::from(head), 0)]);
}

#[test]
fn a_pause_returns_the_statistics_buffer_and_state_survives_a_restore() {
    let (mut d, handle) = started(BalloonConfig::default());
    let head = post_stats(&mut d, &handle, &[(4, 1)]);
    handle.set_target_pages(512);
    d.bar_write32(d.layout.device + 4, 300);
    d.dev.snapshot_pause().unwrap();
    assert_eq!(d.take_used(2), vec![(u32::from(head), 0)]);
    let saved = d.dev.save_state().unwrap();
    d.dev.snapshot_resume();

    let (dev, restored) = balloon_device(BalloonConfig::default()).unwrap();
    let mut other = Driver::probe(dev);
    other.dev.restore_state(&saved).unwrap();
    other.dev.start_restored().unwrap();
    assert_eq!(restored.target_pages(), 512);
    assert_eq!(restored.actual_pages(), 300);
    assert_eq!(config_u32(&mut other, 0), 512);
}

#[test]
fn statistics_read_in_virsh_terms() {
    let stats = oxvirt_virtio::GuestStats {
        entries: vec![(0, 8192), (2, 5), (4, 1 << 20), (77, 1), (4, 2 << 20)],
        received_s: 1,
    };
    assert_eq!(
        stats.virsh_terms(),
        vec![("swap_in", 8), ("major_fault", 5), ("unused", 2048)]
    );
}
