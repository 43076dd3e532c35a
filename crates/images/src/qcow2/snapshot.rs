//! Internal snapshots: the snapshot table, and create / apply / delete.
//!
//! A snapshot is a copy of the active L1 table. Refcounts count references along every
//! L1 -> L2 -> data path, so taking a snapshot adds one to every L2 table and data cluster the
//! active L1 reaches (and clears their COPIED flags); deleting one subtracts it again.

use std::time::{SystemTime, UNIX_EPOCH};

use super::header::{MAX_L1_BYTES, MAX_SNAPSHOTS, OFF_SNAPSHOTS};
use super::{read_at_exact, Qcow2, OFFSET_MASK};
use crate::error::{ImageError, Result};

/// QEMU's limits: extra data per entry, and the whole table.
const MAX_EXTRA_DATA: u32 = 1024;
const MAX_TABLE_BYTES: u64 = 64 << 20;
/// Our own bound on the work a check or snapshot operation may be made to do: all snapshot
/// L1 tables together (512 MiB of entries; a 1 TiB disk with 64 KiB clusters needs 2048).
const MAX_TOTAL_SNAPSHOT_L1: u64 = 1 << 26;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub l1_table_offset: u64,
    pub l1_size: u32,
    pub id: String,
    pub name: String,
    pub date_sec: u32,
    pub date_nsec: u32,
    pub vm_clock_nsec: u64,
    pub vm_state_size: u64,
    /// Virtual disk size when the snapshot was taken.
    pub disk_size: u64,
    pub icount: Option<u64>,
    /// Extra data bytes beyond the fields we know, preserved when rewriting the table.
    unknown_extra: Vec<u8>,
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

/// Reads the snapshot table named by the header, with every length checked against the file.
/// Returns the snapshots and the table's length in bytes.
pub(crate) fn read_table(image: &Qcow2) -> Result<(Vec<Snapshot>, u64)> {
    let h = &image.header;
    let path = &image.path;
    if h.nb_snapshots == 0 {
        return Ok((Vec::new(), 0));
    }
    if h.nb_snapshots > MAX_SNAPSHOTS {
        return Err(ImageError::corrupt(
            path,
            format!("{} snapshots (at most {MAX_SNAPSHOTS})", h.nb_snapshots),
        ));
    }
    if h.snapshots_offset % image.cluster_size != 0 || h.snapshots_offset >= image.file_len {
        return Err(ImageError::corrupt(
            path,
            format!("snapshot table offset {:#x} is invalid", h.snapshots_offset),
        ));
    }
    let mut snapshots = Vec::new();
    let mut total_l1_entries = 0u64;
    let mut at = h.snapshots_offset;
    let limit = image.file_len.min(h.snapshots_offset + MAX_TABLE_BYTES);
    let read = |at: u64, len: usize| -> Result<Vec<u8>> {
        if at.checked_add(len as u64).is_none_or(|end| end > limit) {
            return Err(ImageError::corrupt(
                path,
                format!(
                    "snapshot table entry at {at:#x} runs past the end of the file or table limit"
                ),
            ));
        }
        let mut buf = vec![0u8; len];
        read_at_exact(&image.file, path, &mut buf, at)?;
        Ok(buf)
    };
    for _ in 0..h.nb_snapshots {
        let fixed = read(at, 40)?;
        let l1_table_offset = be64(&fixed, 0);
        let l1_size = be32(&fixed, 8);
        let id_len = u16::from_be_bytes([fixed[12], fixed[13]]) as usize;
        let name_len = u16::from_be_bytes([fixed[14], fixed[15]]) as usize;
        let extra_len = be32(&fixed, 36);
        if extra_len > MAX_EXTRA_DATA {
            return Err(ImageError::corrupt(
                path,
                format!("snapshot extra data of {extra_len} bytes (at most {MAX_EXTRA_DATA})"),
            ));
        }
        let extra = read(at + 40, extra_len as usize)?;
        let strings = read(at + 40 + extra_len as u64, id_len + name_len)?;
        let mut snapshot = Snapshot {
            l1_table_offset,
            l1_size,
            id: String::from_utf8_lossy(&strings[..id_len]).into_owned(),
            name: String::from_utf8_lossy(&strings[id_len..]).into_owned(),
            date_sec: be32(&fixed, 16),
            date_nsec: be32(&fixed, 20),
            vm_clock_nsec: be64(&fixed, 24),
            vm_state_size: be32(&fixed, 32) as u64,
            disk_size: h.size,
            icount: None,
            unknown_extra: Vec::new(),
        };
        if extra.len() >= 8 {
            snapshot.vm_state_size = be64(&extra, 0);
        }
        if extra.len() >= 16 {
            snapshot.disk_size = be64(&extra, 8);
        }
        if extra.len() >= 24 {
            let icount = be64(&extra, 16);
            snapshot.icount = (icount != u64::MAX).then_some(icount);
        }
        if extra.len() > 24 {
            snapshot.unknown_extra = extra[24..].to_vec();
        }
        if l1_size as u64 * 8 > MAX_L1_BYTES {
            return Err(ImageError::corrupt(
                path,
                format!(
                    "snapshot '{}' has an L1 table of {l1_size} entries",
                    snapshot.name
                ),
            ));
        }
        total_l1_entries += l1_size as u64;
        if total_l1_entries > MAX_TOTAL_SNAPSHOT_L1 {
            return Err(ImageError::corrupt(
                path,
                format!(
                    "snapshot L1 tables hold more than {MAX_TOTAL_SNAPSHOT_L1} entries in total"
                ),
            ));
        }
        at = (at + 40 + extra_len as u64 + (id_len + name_len) as u64).div_ceil(8) * 8;
        snapshots.push(snapshot);
    }
    Ok((snapshots, at - h.snapshots_offset))
}

fn serialize(snapshots: &[Snapshot]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in snapshots {
        let mut extra = Vec::new();
        extra.extend_from_slice(&s.vm_state_size.to_be_bytes());
        extra.extend_from_slice(&s.disk_size.to_be_bytes());
        extra.extend_from_slice(&s.icount.unwrap_or(u64::MAX).to_be_bytes());
        extra.extend_from_slice(&s.unknown_extra);
        out.extend_from_slice(&s.l1_table_offset.to_be_bytes());
        out.extend_from_slice(&s.l1_size.to_be_bytes());
        out.extend_from_slice(&(s.id.len() as u16).to_be_bytes());
        out.extend_from_slice(&(s.name.len() as u16).to_be_bytes());
        out.extend_from_slice(&s.date_sec.to_be_bytes());
        out.extend_from_slice(&s.date_nsec.to_be_bytes());
        out.extend_from_slice(&s.vm_clock_nsec.to_be_bytes());
        out.extend_from_slice(&(s.vm_state_size.min(u32::MAX as u64) as u32).to_be_bytes());
        out.extend_from_slice(&(extra.len() as u32).to_be_bytes());
        out.extend_from_slice(&extra);
        out.extend_from_slice(s.id.as_bytes());
        out.extend_from_slice(s.name.as_bytes());
        out.resize(out.len().div_ceil(8) * 8, 0);
    }
    out
}

impl Qcow2 {
    /// Reads a snapshot's L1 table (bounds-checked).
    pub(crate) fn snapshot_l1(&self, snapshot: &Snapshot) -> Result<Vec<u64>> {
        let bytes = snapshot.l1_size as u64 * 8;
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let offset = snapshot.l1_table_offset;
        if offset % self.cluster_size != 0
            || offset.checked_add(bytes).is_none_or(|e| e > self.file_len)
        {
            return Err(ImageError::corrupt(
                &self.path,
                format!(
                    "L1 table of snapshot '{}' at {offset:#x} lies outside the file",
                    snapshot.name
                ),
            ));
        }
        let mut raw = vec![0u8; bytes as usize];
        read_at_exact(&self.file, &self.path, &mut raw, offset)?;
        Ok(raw.chunks_exact(8).map(|c| be64(c, 0)).collect())
    }

    /// Adds `delta` to the refcount of every L2 table and data cluster reachable from `l1`.
    fn update_l1_refcounts(&mut self, l1: &[u64], delta: i64) -> Result<()> {
        // Distinct tables once each, weighted by how often the L1 table names them.
        let mut uses: std::collections::BTreeMap<u64, i64> = std::collections::BTreeMap::new();
        for &l1_entry in l1 {
            let l2_offset = l1_entry & OFFSET_MASK;
            if l2_offset != 0 {
                *uses.entry(l2_offset).or_insert(0) += delta;
            }
        }
        for (l2_offset, weight) in uses {
            let table = self.l2_table(l2_offset)?.clone();
            for entry in table {
                let mapping = self.decode(entry)?;
                for cluster in self.host_clusters(mapping) {
                    self.adjust_refcount(cluster, weight)?;
                }
            }
            self.adjust_refcount(l2_offset >> self.cluster_bits, weight)?;
        }
        Ok(())
    }

    /// Fails, before anything changes, if one more reference to everything `l1` reaches would
    /// overflow a refcount (e.g. with refcount_bits=1).
    fn check_refcount_room(&mut self, l1: &[u64]) -> Result<()> {
        let max = self.max_refcount();
        for &l1_entry in l1 {
            let l2_offset = l1_entry & OFFSET_MASK;
            if l2_offset == 0 {
                continue;
            }
            let mut clusters = vec![l2_offset >> self.cluster_bits];
            for entry in self.l2_table(l2_offset)?.clone() {
                let mapping = self.decode(entry)?;
                clusters.extend(self.host_clusters(mapping));
            }
            for cluster in clusters {
                if self.refcount(cluster)? >= max {
                    return Err(ImageError::InvalidArgument(format!(
                        "cannot snapshot: cluster {cluster} already has the maximum refcount {max} ({}-bit refcounts)",
                        self.refcount_bits()
                    )));
                }
            }
        }
        Ok(())
    }

    fn write_l1_copy(&mut self, entries: &[u64], capacity: u64) -> Result<u64> {
        let clusters = (capacity * 8).div_ceil(self.cluster_size);
        let offset = self.alloc_clusters(clusters)?;
        let mut bytes: Vec<u8> = entries.iter().flat_map(|e| e.to_be_bytes()).collect();
        bytes.resize((clusters * self.cluster_size) as usize, 0);
        self.write_meta(&bytes, offset)?;
        Ok(offset)
    }

    fn free_clusters(&mut self, offset: u64, bytes: u64) -> Result<()> {
        let first = offset >> self.cluster_bits;
        for cluster in first..first + bytes.div_ceil(self.cluster_size) {
            self.adjust_refcount(cluster, -1)?;
        }
        Ok(())
    }

    /// Writes a new snapshot table and frees the old one.
    fn replace_snapshot_table(&mut self, snapshots: Vec<Snapshot>) -> Result<()> {
        let old_offset = self.header.snapshots_offset;
        let old_bytes = self.snapshot_table_bytes;
        let bytes = serialize(&snapshots);
        let offset = if bytes.is_empty() {
            0
        } else {
            let offset = self.alloc_clusters((bytes.len() as u64).div_ceil(self.cluster_size))?;
            self.write_meta(&bytes, offset)?;
            offset
        };
        let mut field = (snapshots.len() as u32).to_be_bytes().to_vec();
        field.extend_from_slice(&offset.to_be_bytes());
        self.write_meta(&field, OFF_SNAPSHOTS)?;
        self.header.nb_snapshots = snapshots.len() as u32;
        self.header.snapshots_offset = offset;
        self.snapshots = snapshots;
        self.snapshot_table_bytes = bytes.len() as u64;
        self.free_clusters(old_offset, old_bytes)?;
        Ok(())
    }

    fn find_snapshot(&self, name: &str) -> Result<usize> {
        self.snapshots
            .iter()
            .position(|s| s.name == name)
            .or_else(|| self.snapshots.iter().position(|s| s.id == name))
            .ok_or_else(|| ImageError::SnapshotNotFound {
                path: self.path.clone(),
                name: name.to_string(),
            })
    }

    /// `snapshot -c NAME`.
    pub fn snapshot_create(&mut self, name: &str) -> Result<()> {
        if name.is_empty() || name.len() > u16::MAX as usize {
            return Err(ImageError::InvalidArgument(
                "snapshot name must be 1..65535 bytes".into(),
            ));
        }
        if self.snapshots.iter().any(|s| s.name == name) {
            return Err(ImageError::InvalidArgument(format!(
                "snapshot '{name}' already exists"
            )));
        }
        if self.snapshots.len() as u32 >= MAX_SNAPSHOTS {
            return Err(ImageError::InvalidArgument("too many snapshots".into()));
        }
        let next_id = self
            .snapshots
            .iter()
            .filter_map(|s| s.id.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
            + 1;
        let active = self.l1.clone();
        self.check_refcount_room(&active)?;
        let l1_offset = self.write_l1_copy(&active, active.len() as u64)?;
        self.update_l1_refcounts(&active, 1)?;
        self.fix_copied_flags(true)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut snapshots = self.snapshots.clone();
        snapshots.push(Snapshot {
            l1_table_offset: l1_offset,
            l1_size: active.len() as u32,
            id: next_id.to_string(),
            name: name.to_string(),
            date_sec: now.as_secs() as u32,
            date_nsec: now.subsec_nanos(),
            vm_clock_nsec: 0,
            vm_state_size: 0,
            disk_size: self.header.size,
            icount: Some(0),
            unknown_extra: Vec::new(),
        });
        self.replace_snapshot_table(snapshots)
    }

    /// `snapshot -a NAME`: makes the snapshot's contents the active state again.
    pub fn snapshot_apply(&mut self, name: &str) -> Result<()> {
        let index = self.find_snapshot(name)?;
        let snapshot = self.snapshots[index].clone();
        let snap_l1 = self.snapshot_l1(&snapshot)?;
        let needed = snapshot
            .disk_size
            .max(self.header.size)
            .div_ceil(self.cluster_size)
            .div_ceil(self.l2_entries)
            .max(snap_l1.len() as u64);
        if needed * 8 > MAX_L1_BYTES {
            return Err(ImageError::corrupt(
                &self.path,
                "snapshot needs an oversized L1 table",
            ));
        }
        self.update_l1_refcounts(&snap_l1, 1)?;
        let mut new_l1 = snap_l1;
        new_l1.resize(needed as usize, 0);
        let new_offset = self.write_l1_copy(&new_l1, needed)?;
        let old_l1 = std::mem::replace(&mut self.l1, new_l1);
        let old_offset = self.header.l1_table_offset;
        self.write_l1_location(new_offset, needed as u32)?;
        self.write_size(snapshot.disk_size)?;
        self.update_l1_refcounts(&old_l1, -1)?;
        self.free_clusters(old_offset, old_l1.len() as u64 * 8)?;
        self.fix_copied_flags(true)?;
        Ok(())
    }

    /// `snapshot -d NAME`.
    pub fn snapshot_delete(&mut self, name: &str) -> Result<()> {
        let index = self.find_snapshot(name)?;
        let snapshot = self.snapshots[index].clone();
        let snap_l1 = self.snapshot_l1(&snapshot)?;
        let mut remaining = self.snapshots.clone();
        remaining.remove(index);
        self.replace_snapshot_table(remaining)?;
        self.update_l1_refcounts(&snap_l1, -1)?;
        self.free_clusters(snapshot.l1_table_offset, snapshot.l1_size as u64 * 8)?;
        self.fix_copied_flags(true)?;
        Ok(())
    }
}
