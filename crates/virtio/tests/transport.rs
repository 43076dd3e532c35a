//! The virtio-pci transport itself (config space, BAR, feature negotiation, MSI-X), and
//! virtio-rng as the simplest device behind it.

mod common;

use common::{Buf, Driver, DATA_BASE, STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_FEATURES_OK};
use oxvirt_virtio::{rng_device, PciFunction};

#[test]
fn rng_fills_buffers_with_random_bytes() {
    let mut d = Driver::start(rng_device(), 0, 1);
    assert_eq!(d.dev.vendor_device(), (0x1af4, 0x1044));
    let mut seen = Vec::new();
    for round in 0..3u64 {
        let addr = DATA_BASE + round * 0x1000;
        d.write_mem(addr, &[0u8; 64]);
        let used = d.submit(0, &[Buf::input(addr, 64)]);
        assert_eq!(used, 64);
        let bytes = d.read_mem(addr, 64);
        // 64 zero bytes from a working RNG have probability 2^-512.
        assert!(bytes.iter().any(|b| *b != 0), "buffer was filled");
        assert!(!seen.contains(&bytes), "every buffer differs");
        seen.push(bytes);
    }
    // A large request is capped (64 KiB) rather than filled without bound.
    let used = d.submit(0, &[Buf::input(DATA_BASE, 1 << 20)]);
    assert_eq!(used, 64 * 1024);
    // A buffer outside guest memory gets nothing, and the device keeps working.
    assert_eq!(d.submit(0, &[Buf::input(1 << 40, 16)]), 0);
    assert_eq!(d.submit(0, &[Buf::input(DATA_BASE, 16)]), 16);
}

#[test]
fn features_ok_requires_version_1_and_known_bits() {
    let mut d = Driver::probe(rng_device());
    let offered = d.begin();
    assert_eq!(
        offered,
        (1 << 32) | (1 << 28),
        "rng offers VERSION_1 and INDIRECT_DESC"
    );
    assert!(!d.negotiate(0), "legacy (no VERSION_1) refused");
    d.begin();
    assert!(!d.negotiate((1 << 32) | (1 << 40)), "unoffered bit refused");
    d.begin();
    assert!(d.negotiate(1 << 32));
    assert_eq!(
        d.status(),
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK
    );
}

#[test]
fn bad_queue_addresses_set_needs_reset_instead_of_failing_later() {
    let mut d = Driver::probe(rng_device());
    d.begin();
    assert!(d.negotiate(1 << 32));
    let c = d.layout.common;
    d.bar_write16(c + 0x10, 0);
    d.bar_write16(c + 0x16, 0);
    d.bar_write64(c + 0x20, 1 << 50); // descriptor table far outside guest memory
    d.bar_write64(c + 0x28, 0x2000);
    d.bar_write64(c + 0x30, 0x3000);
    d.bar_write16(c + 0x1c, 1);
    let irqs = d.msi.count_for(0x40);
    let status = d.status();
    d.set_status(status | common::STATUS_DRIVER_OK);
    assert_ne!(d.status() & common::STATUS_NEEDS_RESET, 0);
    assert_eq!(
        d.msi.count_for(0x40),
        irqs + 1,
        "config interrupt for NEEDS_RESET"
    );
    // A reset clears it.
    d.set_status(0);
    assert_eq!(d.status(), 0);
}

#[test]
fn queue_size_and_vectors_are_validated() {
    let mut d = Driver::probe(rng_device());
    d.begin();
    let c = d.layout.common;
    d.bar_write16(c + 0x16, 0);
    assert_eq!(d.bar_read16(c + 0x18), 256, "max size");
    d.bar_write16(c + 0x1a, 999);
    assert_eq!(
        d.bar_read16(c + 0x1a),
        0xffff,
        "vector out of range reads NO_VECTOR"
    );
    d.bar_write16(c + 0x10, 2);
    assert_eq!(d.bar_read16(c + 0x10), 0xffff);
    // A queue that does not exist reads size 0.
    d.bar_write16(c + 0x16, 5);
    assert_eq!(d.bar_read16(c + 0x18), 0);
}

#[test]
fn msix_masked_vector_sets_pending_and_fires_on_unmask() {
    let mut d = Driver::start(rng_device(), 0, 1);
    let table = d.layout.msix_table;
    let vector = u64::from(d.queues[0].vector);
    let data = 0x40 + vector as u32;
    // Mask the queue's vector.
    d.bar_write32(table + vector * 16 + 12, 1);
    let before = d.msi.count_for(data);
    let head = d.write_chain(0, &[Buf::input(DATA_BASE, 8)]);
    d.make_available(0, head);
    d.kick(0);
    let pba = d.layout.msix_pba;
    let msi = d.msi.clone();
    msi.wait_until("the pending bit", || d.bar_read32(pba) & (1 << vector) != 0);
    assert_eq!(d.msi.count_for(data), before, "no MSI while masked");
    assert_eq!(d.take_used(0), vec![(u32::from(head), 8)]);
    // Unmasking delivers the pending interrupt and clears the bit.
    d.bar_write32(table + vector * 16 + 12, 0);
    assert_eq!(d.msi.count_for(data), before + 1);
    assert_eq!(d.bar_read32(pba) & (1 << vector), 0);
    // Function mask works the same way.
    let control = d.cfg_read16(d.layout.msix_cap + 2);
    d.cfg_write16(d.layout.msix_cap + 2, control | 0x4000);
    let head = d.write_chain(0, &[Buf::input(DATA_BASE, 8)]);
    d.make_available(0, head);
    d.kick(0);
    msi.wait_until("the pending bit", || d.bar_read32(pba) & (1 << vector) != 0);
    assert_eq!(d.msi.count_for(data), before + 1);
    d.cfg_write16(d.layout.msix_cap + 2, control & !0x4000);
    assert_eq!(d.msi.count_for(data), before + 2);
}

#[test]
fn notify_eventfds_are_the_kick_path() {
    // A VMM that registers the eventfds as KVM ioeventfds makes guest kicks signal them
    // directly; emulate that by writing the eventfd instead of the notify region.
    let mut d = Driver::start(rng_device(), 0, 1);
    let fds = d.dev.notify_eventfds();
    assert_eq!(fds.len(), 1);
    assert_eq!(fds[0].bar_index, 0);
    assert_eq!(fds[0].offset, d.layout.notify);
    let head = d.write_chain(0, &[Buf::input(DATA_BASE, 32)]);
    d.make_available(0, head);
    fds[0].eventfd.write(1).unwrap();
    let msi = d.msi.clone();
    msi.wait_until("the used entry", || d.used_idx(0) == 1);
    assert_eq!(d.take_used(0), vec![(u32::from(head), 32)]);
}

#[test]
fn guest_can_move_the_bar() {
    let mut d = Driver::start(rng_device(), 0, 1);
    let moved = d.cfg_write32(0x14, 0x1).unwrap();
    assert_eq!(moved.old_address, common::BAR0_ADDRESS);
    assert_eq!(moved.new_address, 0x1_0000_0000 | common::BAR0_ADDRESS);
    assert_eq!(d.dev.bar_address(0), Some(moved.new_address));
    assert_eq!(d.cfg_read32(0x14), 1);
    // Misaligned bits are dropped: the BAR is naturally aligned.
    let moved = d.cfg_write32(0x10, 0xc000_0123).unwrap();
    assert_eq!(moved.new_address, 0x1_c000_0000);
    assert_eq!(d.cfg_read32(0x10), 0xc000_0004);
}

#[test]
fn config_space_edges_do_not_panic() {
    let mut d = Driver::probe(rng_device());
    let mut buf = [0u8; 4];
    d.dev.config_read(0x100, &mut buf);
    assert_eq!(buf, [0; 4], "no extended capabilities");
    d.dev.config_read(4095, &mut buf);
    d.dev.config_read(u16::MAX, &mut buf);
    assert_eq!(buf, [0xff; 4]);
    assert!(d.dev.config_write(0xfff, &[1, 2, 3, 4]).is_none());
    assert!(
        d.dev.config_write(0x12, &[1, 2, 3, 4]).is_none(),
        "dword-crossing write ignored"
    );
    let mut big = [0u8; 64];
    d.dev.bar_read(0, 0x7ff0, &mut big);
    d.dev.bar_read(0, u64::MAX, &mut big);
    d.dev.bar_read(3, 0, &mut big);
    d.dev.bar_write(0, u64::MAX - 1, &big);
    d.dev.bar_write(0, 0x4000 + 0xffc, &big);
    // Read-only header fields stay put.
    d.cfg_write32(0, 0xdead_beef);
    assert_eq!(d.cfg_read16(0), 0x1af4);
}

#[test]
fn isr_is_set_by_interrupts_and_cleared_by_reading() {
    let mut d = Driver::start(rng_device(), 0, 1);
    let isr = d.layout.isr;
    assert_eq!(d.bar_read8(isr), 0);
    d.submit(0, &[Buf::input(DATA_BASE, 8)]);
    assert_eq!(d.bar_read8(isr), 1, "queue interrupt bit");
    assert_eq!(d.bar_read8(isr), 0, "reading acknowledged it");
}

#[test]
fn without_msix_enabled_no_interrupt_is_sent_but_buffers_complete() {
    let mut d = Driver::start(rng_device(), 0, 1);
    let control = d.cfg_read16(d.layout.msix_cap + 2);
    d.cfg_write16(d.layout.msix_cap + 2, control & !0x8000);
    let head = d.write_chain(0, &[Buf::input(DATA_BASE, 8)]);
    d.make_available(0, head);
    d.kick(0);
    let msi = d.msi.clone();
    msi.wait_until("the used entry", || d.used_idx(0) == 1);
    assert_eq!(d.msi.count_for(0x41), 0);
    assert_eq!(d.bar_read8(d.layout.isr), 1);
}
