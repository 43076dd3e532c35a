//! The order libvirt keeps devices in, where it is not the document's.
//!
//! libvirt inserts each parsed disk next to the disks of the same bus, sorted by the index
//! its target name stands for (`virDomainDiskInsert`): before the first same-bus disk with a
//! higher index, else after the last same-bus disk, else at the end. When it parses, a disk
//! without `bus=` counts as bus "none" (so `vdb, hda` without buses comes out `hda, vdb`);
//! when it reloads its own output every bus is written, and a few orders change again (libvirt
//! 9.0 is not idempotent there). oxvirt orders as written and then as reloaded, which gives
//! libvirt's define output whenever that is stable, its reloaded output otherwise, and an
//! order that parses back to itself (`parse(to_xml(d)) == d`).

use crate::model::{Disk, DiskBus};
use crate::rules::disk_index;

/// Disks in libvirt's order; the bus is the `bus=` the input wrote for each (None: absent).
pub(crate) fn libvirt_disk_order(disks: Vec<(Disk, Option<DiskBus>)>) -> Vec<Disk> {
    let mut as_written: Vec<(Disk, Option<DiskBus>)> = Vec::with_capacity(disks.len());
    for (disk, stated) in disks {
        let at = insert_position(&as_written, &disk, stated);
        as_written.insert(at, (disk, stated));
    }
    let mut reloaded: Vec<(Disk, Option<DiskBus>)> = Vec::with_capacity(as_written.len());
    for (disk, _) in as_written {
        let bus = Some(disk.target.bus);
        let at = insert_position(&reloaded, &disk, bus);
        reloaded.insert(at, (disk, bus));
    }
    reloaded.into_iter().map(|(disk, _)| disk).collect()
}

/// Where `virDomainDiskInsert` puts `disk` (of bus `bus`) into `list`.
fn insert_position(list: &[(Disk, Option<DiskBus>)], disk: &Disk, bus: Option<DiskBus>) -> usize {
    let index = disk_index(&disk.target.dev);
    let mut at = None;
    for (i, (other, other_bus)) in list.iter().enumerate().rev() {
        if *other_bus != bus {
            continue;
        }
        if disk_index(&other.target.dev) > index {
            at = Some(i);
        } else if at.is_none() {
            at = Some(i + 1);
        }
    }
    at.unwrap_or(list.len())
}
