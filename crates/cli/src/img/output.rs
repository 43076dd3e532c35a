//! What `oxvirt img` prints: qemu-img's JSON layout and check report, and progress bars.

use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use oxvirt_images::qcow2::check::CheckReport;

use super::args::OutputFormat;

/// Pretty JSON with qemu-img's four-space indentation.
pub(super) fn to_json<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    value.serialize(&mut serializer)?;
    Ok(String::from_utf8(out)?)
}

/// A progress bar on stderr for `-p`, or nothing without it.
pub(super) struct Progress(Option<ProgressBar>);

impl Progress {
    pub(super) fn new(enabled: bool) -> Progress {
        if !enabled {
            return Progress(None);
        }
        let bar = ProgressBar::new(0);
        if let Ok(style) = ProgressStyle::with_template(
            "    ({percent:>3}/100%) [{bar:40}] {bytes}/{total_bytes} {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        Progress(Some(bar))
    }

    /// The library's progress callback: `done` of `total` bytes.
    pub(super) fn report(&self, done: u64, total: u64) {
        if let Some(bar) = &self.0 {
            bar.set_length(total);
            bar.set_position(done);
        }
    }

    /// Leaves the full bar on the terminal.
    pub(super) fn finish(self) {
        if let Some(bar) = self.0 {
            bar.finish();
        }
    }

    /// Removes the bar from the terminal.
    pub(super) fn finish_and_clear(self) {
        if let Some(bar) = self.0 {
            bar.finish_and_clear();
        }
    }
}

pub(super) fn print_check(
    report: &CheckReport,
    file: &Path,
    output: OutputFormat,
) -> anyhow::Result<()> {
    if output == OutputFormat::Json {
        let mut value = serde_json::to_value(report)?;
        if let Some(map) = value.as_object_mut() {
            map.insert("filename".into(), file.display().to_string().into());
            map.insert("format".into(), "qcow2".into());
        }
        println!("{}", to_json(&value)?);
        return Ok(());
    }
    if report.corruptions == 0 && report.leaks == 0 && report.check_errors == 0 {
        println!("No errors were found on the image.");
    }
    if report.corruptions > 0 {
        println!(
            "\n{} errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.",
            report.corruptions
        );
    }
    if report.leaks > 0 {
        println!(
            "\n{} leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.",
            report.leaks
        );
    }
    if report.check_errors > 0 {
        println!(
            "\n{} internal errors have occurred during the check.",
            report.check_errors
        );
    }
    if report.total_clusters > 0 && report.allocated_clusters > 0 {
        let pct = |n: u64, d: u64| n as f64 * 100.0 / d as f64;
        println!(
            "{}/{} = {:.2}% allocated, {:.2}% fragmented, {:.2}% compressed clusters",
            report.allocated_clusters,
            report.total_clusters,
            pct(report.allocated_clusters, report.total_clusters),
            pct(report.fragmented_clusters, report.allocated_clusters),
            pct(report.compressed_clusters, report.allocated_clusters),
        );
    }
    println!("Image end offset: {}", report.image_end_offset);
    Ok(())
}
