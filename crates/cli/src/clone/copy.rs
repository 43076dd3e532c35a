//! Filling a clone's new disk from the original's image, with virt-clone's "Allocating 'NAME'"
//! line and a progress bar:
//! - copy: `oxvirt_images::ops::convert` in the same format, so holes stay holes (a qcow2
//!   overlay's chain is flattened into the copy, as libvirt's volume clone does);
//! - reflink: FICLONE, the copy shares the original's extents until either is written; a file
//!   system that cannot (ext4) is an error naming it, nothing is copied the slow way instead;
//! - linked: a qcow2 overlay whose backing file is the original image (made by the caller
//!   through the pool API for pool volumes; here for plain files).
//!
//! The original is read with QEMU's read lock, so a guest writing it is noticed; a paused
//! original's QEMU holds its write lock, and the read shares it: QEMU flushed the disk when it
//! paused, and nothing writes while it stays paused.

use std::path::Path;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use oxvirt_images::ops::{convert, ConvertOptions};
use oxvirt_images::{CreateOptions, Format, Image, OpenOptions};

use super::plan::Source;

/// virt-clone's meter: the line, then a bar of bytes (hidden when stderr is not a terminal).
pub fn allocating(target: &Path) -> ProgressBar {
    let name = target
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    println!("Allocating '{name}'");
    let bar = ProgressBar::new(0);
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {eta}") {
        bar.set_style(style);
    }
    bar
}

/// Opens the original's image in its stated format.
fn open_source(source: &Source, shared: bool) -> anyhow::Result<Image> {
    Image::open(
        &source.path,
        &OpenOptions {
            format: Some(source.format),
            force_share: shared,
            ..OpenOptions::default()
        },
    )
    .with_context(|| format!("cannot open the original's disk {}", source.path.display()))
}

/// Copies `source` into `target` in the same format, holes kept. `overwrite`: `target` is the
/// empty volume oxvirtd just made for it. On failure `convert` removes what it wrote.
pub fn copy(
    source: &Source,
    target: &Path,
    shared: bool,
    overwrite: bool,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let mut image = open_source(source, shared)?;
    let options = ConvertOptions {
        format: source.format,
        cluster_size: image
            .as_qcow2()
            .map(|q| q.cluster_size())
            .unwrap_or(CreateOptions::default().cluster_size),
        overwrite,
    };
    convert(&mut image, target, &options, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .with_context(|| {
        format!(
            "cannot copy {} to {}",
            source.path.display(),
            target.display()
        )
    })?;
    bar.finish();
    Ok(())
}

/// Copies `source` into `target` by sharing its extents (FICLONE). `existing`: `target` is
/// the empty volume oxvirtd just made for it; else a new file is made (and removed on failure).
pub fn reflink(source: &Source, target: &Path, shared: bool, existing: bool) -> anyhow::Result<()> {
    // The lock guard: held while the extents are shared, so no writer is in the middle.
    let image = open_source(source, shared)?;
    if let Some(qcow2) = image.as_qcow2() {
        if let Some(backing) = &qcow2.header().backing_file {
            anyhow::bail!(
                "--reflink: {} is an overlay of {backing}; a copy of its file would share that backing file (clone without --reflink to flatten it)",
                source.path.display()
            );
        }
    }
    let from = std::fs::File::open(&source.path)
        .with_context(|| format!("cannot open {}", source.path.display()))?;
    let mut open = std::fs::OpenOptions::new();
    open.write(true);
    if existing {
        open.truncate(true);
    } else {
        open.create_new(true);
    }
    let to = open
        .open(target)
        .with_context(|| format!("cannot create {}", target.display()))?;
    let result = rustix::fs::ioctl_ficlone(&to, &from).map_err(|errno| {
        anyhow::anyhow!(
            "--reflink: the file system cannot share the extents of {} with {} (FICLONE: {errno}); clone without --reflink to copy",
            source.path.display(),
            target.display()
        )
    });
    drop(image);
    if result.is_err() && !existing {
        let _ = std::fs::remove_file(target);
    }
    result
}

/// Makes `target`, a new qcow2 file backed by the original's image (absolute path, stated
/// format).
pub fn overlay(source: &Source, target: &Path) -> anyhow::Result<()> {
    let options = CreateOptions {
        format: Format::Qcow2,
        size: None,
        backing_file: Some(source.path.display().to_string()),
        backing_format: Some(source.format),
        ..CreateOptions::default()
    };
    oxvirt_images::create(target, &options)
        .with_context(|| format!("cannot create the overlay {}", target.display()))
}

/// Copies a small plain file (an NVRAM store) to a new file.
pub fn copy_file(from: &Path, to: &Path) -> anyhow::Result<()> {
    let mut input =
        std::fs::File::open(from).with_context(|| format!("cannot open {}", from.display()))?;
    let mut output = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)
        .with_context(|| format!("cannot create {}", to.display()))?;
    std::io::copy(&mut input, &mut output)
        .and_then(|_| output.sync_all())
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(to);
        })?;
    Ok(())
}
