//! Consistency check and repair (`check [-r leaks|all]`).
//!
//! We recount every reference the metadata makes (header, tables, L1 -> L2 -> data paths of
//! the active state and of every snapshot) and compare with the stored refcounts, like QEMU:
//! a stored refcount above the references is a leak (harmless, wastes space); one below is a
//! corruption (the cluster could be handed out twice). Entries that point outside the file or
//! at unaligned offsets, and wrong COPIED flags, are corruptions too.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::header::OFF_INCOMPAT;
use super::header::{INCOMPAT_CORRUPT, INCOMPAT_DIRTY};
use super::{Mapping, Qcow2, OFFSET_MASK, REFT_OFFSET_MASK};
use crate::error::Result;

/// What `check -r` may fix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repair {
    Leaks,
    All,
}

/// The result of a check, with qemu-img's JSON field names.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct CheckReport {
    pub image_end_offset: u64,
    pub total_clusters: u64,
    pub check_errors: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub leaks: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub corruptions: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub leaks_fixed: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub corruptions_fixed: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub allocated_clusters: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub fragmented_clusters: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub compressed_clusters: u64,
    /// One line per problem found (human output).
    #[serde(skip)]
    pub messages: Vec<String>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// References counted so far (one slot per cluster of the file), and the report being built.
struct Counter {
    refs: Vec<u32>,
    report: CheckReport,
}

impl Counter {
    /// Counts one reference to each cluster in `offset..offset+len`. Returns false (and reports
    /// a corruption) if the range leaves the file.
    /// Like `mark`, `times` references at once, for a range already known to be in the file.
    fn mark_times(&mut self, cluster_bits: u32, offset: u64, len: u64, times: u32) {
        let first = offset >> cluster_bits;
        let end = (offset + len)
            .div_ceil(1u64 << cluster_bits)
            .min(self.refs.len() as u64);
        for cluster in first..end {
            let r = &mut self.refs[cluster as usize];
            *r = r.saturating_add(times);
        }
    }

    fn mark(&mut self, cluster_bits: u32, offset: u64, len: u64, what: &str) -> bool {
        if len == 0 {
            return true;
        }
        let first = offset >> cluster_bits;
        let end = (offset.saturating_add(len)).div_ceil(1u64 << cluster_bits);
        if end > self.refs.len() as u64 {
            self.report.corruptions += 1;
            self.report.messages.push(format!(
                "ERROR {what} at offset {offset:#x} lies past the end of the image file"
            ));
            return false;
        }
        for cluster in first..end {
            let r = &mut self.refs[cluster as usize];
            *r = r.saturating_add(1);
        }
        true
    }
}

impl Qcow2 {
    /// Checks the image; with `repair`, fixes what it may and checks again. The returned
    /// report describes the image after repair, with the `*_fixed` counts set.
    pub fn check(&mut self, repair: Option<Repair>) -> Result<CheckReport> {
        let Some(mode) = repair else {
            return self.check_once(None);
        };
        let first = self.check_once(Some(mode))?;
        // Repairs can add refcount blocks, which need counting themselves: repeat until clean.
        for _ in 0..4 {
            let again = self.check_once(Some(mode))?;
            if again.corruptions == 0 && again.leaks == 0 {
                break;
            }
        }
        let mut after = self.check_once(None)?;
        // A clean image is neither corrupt nor dirty (refcounts are now exact, which is what
        // replaying lazy refcounts would achieve).
        let flags = INCOMPAT_CORRUPT | INCOMPAT_DIRTY;
        if after.corruptions == 0
            && after.leaks == 0
            && self.header.incompatible_features & flags != 0
        {
            self.header.incompatible_features &= !flags;
            let flags = self.header.incompatible_features.to_be_bytes();
            self.write_meta(&flags, OFF_INCOMPAT)?;
        }
        after.leaks_fixed = first.leaks.saturating_sub(after.leaks);
        after.corruptions_fixed = first.corruptions.saturating_sub(after.corruptions);
        after.messages = first.messages;
        self.flush()?;
        Ok(after)
    }

    fn check_once(&mut self, repair: Option<Repair>) -> Result<CheckReport> {
        let fix_all = repair == Some(Repair::All);
        let cb = self.cluster_bits;
        let clusters_in_file = self.file_len.div_ceil(self.cluster_size);
        let mut c = Counter {
            refs: vec![0; clusters_in_file as usize],
            report: CheckReport {
                total_clusters: self.header.size.div_ceil(self.cluster_size),
                ..CheckReport::default()
            },
        };

        // Header cluster, active L1, snapshot table and snapshot L1s, refcount table and blocks.
        c.mark(cb, 0, self.cluster_size, "header");
        let l1_offset = self.header.l1_table_offset;
        c.mark(cb, l1_offset, self.l1.len() as u64 * 8, "L1 table");
        // Each distinct L2 table is read once and counted as often as L1 entries point at it,
        // so hostile tables that all point at one L2 table cost no more than one.
        let mut l2_uses: HashMap<u64, u32> = HashMap::new();
        let active = self.l1.clone();
        self.collect_l2(&mut c, &active, true, fix_all, &mut l2_uses)?;
        if !self.snapshots.is_empty() {
            c.mark(
                cb,
                self.header.snapshots_offset,
                self.snapshot_table_bytes,
                "snapshot table",
            );
        }
        for snapshot in self.snapshots.clone() {
            match self.snapshot_l1(&snapshot) {
                Ok(l1) => {
                    c.mark(
                        cb,
                        snapshot.l1_table_offset,
                        l1.len() as u64 * 8,
                        "snapshot L1 table",
                    );
                    self.collect_l2(&mut c, &l1, false, false, &mut l2_uses)?;
                }
                Err(e) => {
                    c.report.corruptions += 1;
                    c.report.messages.push(format!("ERROR {e}"));
                }
            }
        }
        self.count_l2_tables(&mut c, &l2_uses, fix_all)?;
        self.active_stats(&mut c)?;
        c.mark(
            cb,
            self.header.refcount_table_offset,
            self.header.refcount_table_clusters as u64 * self.cluster_size,
            "refcount table",
        );
        for (index, entry) in self.reftable.clone().into_iter().enumerate() {
            let offset = entry & REFT_OFFSET_MASK;
            if offset == 0 {
                continue;
            }
            if offset % self.cluster_size != 0 {
                c.report.corruptions += 1;
                c.report.messages.push(format!(
                    "ERROR refcount block {index} is not cluster aligned"
                ));
                continue;
            }
            c.mark(
                cb,
                offset,
                self.cluster_size,
                &format!("refcount block {index}"),
            );
        }

        // Compare with the stored refcounts.
        let max_refcount = match self.header.refcount_order {
            6 => u64::MAX,
            order => (1u64 << (1u32 << order)) - 1,
        };
        for cluster in 0..clusters_in_file {
            let computed = c.refs[cluster as usize] as u64;
            let stored = match self.refcount(cluster) {
                Ok(v) => v,
                Err(e) => {
                    c.report.check_errors += 1;
                    c.report
                        .messages
                        .push(format!("ERROR reading refcount of cluster {cluster}: {e}"));
                    continue;
                }
            };
            if computed > max_refcount {
                c.report.corruptions += 1;
                c.report.messages.push(format!(
                    "ERROR cluster {cluster} has {computed} references, more than a {}-bit refcount holds",
                    self.refcount_bits()
                ));
                continue;
            }
            if stored == computed {
                continue;
            }
            if stored > computed {
                c.report.leaks += 1;
                c.report.messages.push(format!(
                    "Leaked cluster {cluster} refcount={stored} reference={computed}"
                ));
                if repair.is_some() {
                    self.set_refcount(cluster, computed)?;
                }
            } else {
                c.report.corruptions += 1;
                c.report.messages.push(format!(
                    "ERROR cluster {cluster} refcount={stored} reference={computed}"
                ));
                if fix_all {
                    self.set_refcount(cluster, computed)?;
                }
            }
        }
        // Refcounts stored for clusters past the end of the file are leaks.
        let shift = self.cluster_bits + 3 - self.header.refcount_order;
        for (index, entry) in self.reftable.clone().into_iter().enumerate() {
            let block_end = ((index as u64) + 1) << shift;
            if entry & REFT_OFFSET_MASK == 0 || block_end <= clusters_in_file {
                continue;
            }
            let start = clusters_in_file.max((index as u64) << shift);
            for cluster in start..block_end {
                let stored = match self.refcount(cluster) {
                    Ok(v) => v,
                    Err(_) => break, // already reported as a bad refcount block
                };
                if stored != 0 {
                    c.report.leaks += 1;
                    c.report.messages.push(format!(
                        "Leaked cluster {cluster} refcount={stored} reference=0 (past end of file)"
                    ));
                    if repair.is_some() {
                        self.set_refcount(cluster, 0)?;
                    }
                }
            }
        }

        let wrong_flags = self.fix_copied_flags(fix_all)?;
        if wrong_flags > 0 {
            c.report.corruptions += wrong_flags;
            c.report.messages.push(format!(
                "ERROR {wrong_flags} L1/L2 entries have a wrong COPIED flag"
            ));
        }
        let last_used = c
            .refs
            .iter()
            .rposition(|&r| r > 0)
            .map_or(0, |i| i as u64 + 1);
        c.report.image_end_offset = last_used << cb;
        Ok(c.report)
    }

    /// Checks the entries of one L1 table (active or snapshot) and notes which L2 tables it
    /// uses. With `fix_all`, active entries pointing outside the file are cleared.
    fn collect_l2(
        &mut self,
        c: &mut Counter,
        l1: &[u64],
        active: bool,
        fix_all: bool,
        l2_uses: &mut HashMap<u64, u32>,
    ) -> Result<()> {
        for (l1_index, &l1_entry) in l1.iter().enumerate() {
            let l2_offset = l1_entry & OFFSET_MASK;
            if l2_offset == 0 {
                continue;
            }
            let problem = if l2_offset % self.cluster_size != 0 {
                Some("is not cluster aligned")
            } else if l2_offset + self.cluster_size > self.file_len {
                Some("lies past the end of the image file")
            } else {
                None
            };
            if let Some(problem) = problem {
                c.report.corruptions += 1;
                c.report.messages.push(format!(
                    "ERROR L2 table at {l2_offset:#x} (L1 index {l1_index}) {problem}"
                ));
                if active && fix_all {
                    self.l1[l1_index] = 0;
                    let at = self.header.l1_table_offset + l1_index as u64 * 8;
                    self.write_meta(&0u64.to_be_bytes(), at)?;
                }
                continue;
            }
            let uses = l2_uses.entry(l2_offset).or_insert(0);
            *uses = uses.saturating_add(1);
        }
        Ok(())
    }

    /// Counts each distinct L2 table and the clusters it maps, `uses` times over.
    fn count_l2_tables(
        &mut self,
        c: &mut Counter,
        l2_uses: &HashMap<u64, u32>,
        fix_all: bool,
    ) -> Result<()> {
        let mut tables: Vec<(u64, u32)> = l2_uses.iter().map(|(&o, &u)| (o, u)).collect();
        tables.sort_unstable();
        for (l2_offset, uses) in tables {
            c.mark_times(self.cluster_bits, l2_offset, self.cluster_size, uses);
            let table = self.l2_table(l2_offset)?.clone();
            for (l2_index, entry) in table.into_iter().enumerate() {
                let bad = |what: &str| {
                    format!("ERROR L2 entry {entry:#x} (L2 table {l2_offset:#x} index {l2_index}) {what}")
                };
                let mapping = match self.decode(entry) {
                    Ok(m) => m,
                    Err(_) => {
                        c.report.corruptions += 1;
                        c.report.messages.push(bad("points at an unaligned offset"));
                        if fix_all {
                            self.set_l2_entry(l2_offset, l2_index, 0)?;
                        }
                        continue;
                    }
                };
                let range = self.host_clusters(mapping);
                if range.is_empty() {
                    continue;
                }
                if range.end > c.refs.len() as u64 {
                    c.report.corruptions += 1;
                    c.report
                        .messages
                        .push(bad("points past the end of the image file"));
                    if fix_all {
                        self.set_l2_entry(l2_offset, l2_index, 0)?;
                    }
                    continue;
                }
                for cluster in range {
                    let r = &mut c.refs[cluster as usize];
                    *r = r.saturating_add(uses);
                }
            }
        }
        Ok(())
    }

    /// Allocation statistics of the active state (each L2 table visited once).
    fn active_stats(&mut self, c: &mut Counter) -> Result<()> {
        let mut seen = HashSet::new();
        let mut last_host: Option<u64> = None;
        for l1_entry in self.l1.clone() {
            let l2_offset = l1_entry & OFFSET_MASK;
            if l2_offset == 0
                || !seen.insert(l2_offset)
                || self.check_meta_cluster(l2_offset, "L2 table").is_err()
            {
                continue;
            }
            for entry in self.l2_table(l2_offset)?.clone() {
                match self.decode(entry) {
                    Ok(Mapping::Data { host }) | Ok(Mapping::Zero { host: Some(host) }) => {
                        c.report.allocated_clusters += 1;
                        if last_host.is_some_and(|prev| prev + self.cluster_size != host) {
                            c.report.fragmented_clusters += 1;
                        }
                        last_host = Some(host);
                    }
                    Ok(Mapping::Compressed { .. }) => {
                        c.report.allocated_clusters += 1;
                        c.report.compressed_clusters += 1;
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}
