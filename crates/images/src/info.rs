//! `info`: what qemu-img info reports, with the same JSON field names.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::Serialize;

use crate::error::{ImageError, Result};
use crate::image::{resolve_backing, Image};
use crate::qcow2::header::{
    CompressionType, COMPAT_LAZY_REFCOUNTS, INCOMPAT_CORRUPT, INCOMPAT_DIRTY, INCOMPAT_EXTL2,
};
use crate::size::human_size;

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct ImageInfo {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<SnapshotInfo>,
    pub virtual_size: u64,
    pub filename: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_size: Option<u64>,
    pub format: String,
    pub actual_size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format_specific: Option<FormatSpecific>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_backing_filename: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backing_filename: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backing_filename_format: Option<String>,
    pub dirty_flag: bool,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct SnapshotInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icount: Option<u64>,
    pub vm_clock_nsec: u64,
    pub name: String,
    pub date_sec: u64,
    pub date_nsec: u64,
    pub vm_clock_sec: u64,
    pub id: String,
    pub vm_state_size: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FormatSpecific {
    #[serde(rename = "type")]
    pub kind: String,
    pub data: Qcow2Specific,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct Qcow2Specific {
    pub compat: String,
    pub compression_type: String,
    /// The three feature flags exist only in version 3 ("1.1") images.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lazy_refcounts: Option<bool>,
    pub refcount_bits: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub corrupt: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extended_l2: Option<bool>,
}

/// Gathers the information about an open image (opened from `path`).
pub fn image_info(image: &Image, path: &Path) -> Result<ImageInfo> {
    let meta = std::fs::metadata(path).map_err(|e| ImageError::io(path, e))?;
    let mut info = ImageInfo {
        snapshots: Vec::new(),
        virtual_size: image.virtual_size(),
        filename: path.display().to_string(),
        cluster_size: None,
        format: image.format().name().to_string(),
        actual_size: meta.blocks() * 512,
        format_specific: None,
        full_backing_filename: None,
        backing_filename: None,
        backing_filename_format: None,
        dirty_flag: false,
    };
    if let Some(q) = image.as_qcow2() {
        let h = q.header();
        let v3 = h.version >= 3;
        info.cluster_size = Some(q.cluster_size());
        info.dirty_flag = h.incompatible_features & INCOMPAT_DIRTY != 0;
        info.format_specific = Some(FormatSpecific {
            kind: "qcow2".into(),
            data: Qcow2Specific {
                compat: if h.version >= 3 { "1.1" } else { "0.10" }.into(),
                // Opening refused unknown types; should one get here, it is not given a name.
                compression_type: CompressionType::from_field(h.compression_type)
                    .map(|known| known.name().to_string())
                    .unwrap_or_else(|| format!("unknown ({})", h.compression_type)),
                lazy_refcounts: v3.then_some(h.compatible_features & COMPAT_LAZY_REFCOUNTS != 0),
                refcount_bits: 1 << h.refcount_order,
                corrupt: v3.then_some(h.incompatible_features & INCOMPAT_CORRUPT != 0),
                extended_l2: v3.then_some(h.incompatible_features & INCOMPAT_EXTL2 != 0),
            },
        });
        if let Some(name) = &h.backing_file {
            info.backing_filename = Some(name.clone());
            info.full_backing_filename = Some(resolve_backing(path, name).display().to_string());
            info.backing_filename_format = h.backing_format.clone();
        }
        info.snapshots = q
            .snapshots()
            .iter()
            .map(|s| SnapshotInfo {
                icount: Some(s.icount.unwrap_or(0)),
                vm_clock_nsec: s.vm_clock_nsec % 1_000_000_000,
                name: s.name.clone(),
                date_sec: s.date_sec as u64,
                date_nsec: s.date_nsec as u64,
                vm_clock_sec: s.vm_clock_nsec / 1_000_000_000,
                id: s.id.clone(),
                vm_state_size: s.vm_state_size,
            })
            .collect();
    }
    Ok(info)
}

/// The human-readable form, laid out like qemu-img's.
pub fn render_human(info: &ImageInfo) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!("image: {}", info.filename));
    line(format!("file format: {}", info.format));
    line(format!(
        "virtual size: {} ({} bytes)",
        human_size(info.virtual_size),
        info.virtual_size
    ));
    line(format!("disk size: {}", human_size(info.actual_size)));
    if let Some(cs) = info.cluster_size {
        line(format!("cluster_size: {cs}"));
    }
    if let Some(b) = &info.backing_filename {
        let full = info.full_backing_filename.as_deref().unwrap_or(b);
        if full != b {
            line(format!("backing file: {b} (actual path: {full})"));
        } else {
            line(format!("backing file: {b}"));
        }
    }
    if let Some(f) = &info.backing_filename_format {
        line(format!("backing file format: {f}"));
    }
    if !info.snapshots.is_empty() {
        line("Snapshot list:".into());
        line(snapshot_table_header());
        for s in &info.snapshots {
            line(snapshot_table_row(s));
        }
    }
    if let Some(fs) = &info.format_specific {
        let d = &fs.data;
        line("Format specific information:".into());
        line(format!("    compat: {}", d.compat));
        line(format!("    compression type: {}", d.compression_type));
        if let Some(lazy) = d.lazy_refcounts {
            line(format!("    lazy refcounts: {lazy}"));
        }
        line(format!("    refcount bits: {}", d.refcount_bits));
        if let Some(corrupt) = d.corrupt {
            line(format!("    corrupt: {corrupt}"));
        }
        if let Some(extended) = d.extended_l2 {
            line(format!("    extended l2: {extended}"));
        }
    }
    out
}

pub fn snapshot_table_header() -> String {
    format!(
        "{:<10}{:<17}{:>8}{:>20}{:>13}{:>11}",
        "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT"
    )
}

pub fn snapshot_table_row(s: &SnapshotInfo) -> String {
    let secs = s.vm_clock_sec;
    let clock = format!(
        "{:02}:{:02}:{:02}.{:03}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60,
        s.vm_clock_nsec / 1_000_000
    );
    format!(
        "{:<10}{:<17}{:>8}{:>20}{:>13}{:>11}",
        s.id,
        s.name,
        human_size(s.vm_state_size),
        format_utc(s.date_sec),
        clock,
        s.icount.unwrap_or(0)
    )
}

/// "YYYY-MM-DD HH:MM:SS" in UTC (civil-from-days, no time zone database needed).
fn format_utc(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + if month <= 2 { 1 } else { 0 };
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::format_utc(0), "1970-01-01 00:00:00");
        assert_eq!(super::format_utc(1795349602), "2026-11-22 12:13:22");
    }
}
