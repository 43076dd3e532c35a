//! `oxvirt img`: a qemu-img-like command line over `oxvirt-images` (create, info, convert,
//! resize, check, snapshot, compare; documented in docs/images.md). Works on image files
//! directly and needs no daemon.
//!
//! Exit statuses follow qemu-img: `compare` 0 identical / 1 different / 2 error; `check` 0 clean /
//! 1 check could not finish / 2 corruptions / 3 leaks only / 63 format has no checks.

mod args;
mod output;

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};
use oxvirt_images::info::{image_info, render_human, snapshot_table_header, snapshot_table_row};
use oxvirt_images::ops::{compare, convert, Comparison, ConvertOptions};
use oxvirt_images::qcow2::check::Repair;
use oxvirt_images::{create, parse_size, CreateOptions, Format, Image, OpenOptions, Preallocation};

pub use args::ImgArgs;
use args::{
    CheckArgs, CompareArgs, ConvertArgs, CreateArgs, ImgCommand, InfoArgs, OutputFormat, RepairArg,
    ResizeArgs, SnapshotArgs,
};
use output::{print_check, to_json, Progress};

/// Runs the command; exits the process with qemu-img's status when it is not 0.
pub fn run(args: ImgArgs) -> anyhow::Result<()> {
    let status = execute(args)?;
    if status != 0 {
        let _ = std::io::stdout().flush();
        std::process::exit(status);
    }
    Ok(())
}

/// Runs the command and returns the exit status it calls for (see the module docs).
pub fn execute(args: ImgArgs) -> anyhow::Result<i32> {
    match args.command {
        ImgCommand::Create(a) => cmd_create(a),
        ImgCommand::Info(a) => cmd_info(a),
        ImgCommand::Convert(a) => cmd_convert(a),
        ImgCommand::Resize(a) => cmd_resize(a),
        ImgCommand::Check(a) => cmd_check(a),
        ImgCommand::Snapshot(a) => cmd_snapshot(a),
        ImgCommand::Compare(a) => cmd_compare(a),
    }
}

/// Parses `-o key=value,key=value` lists.
fn parse_options(list: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for item in list.iter().flat_map(|s| s.split(',')) {
        if item.is_empty() {
            continue;
        }
        let (key, value) = item
            .split_once('=')
            .with_context(|| format!("option '{item}' must look like key=value"))?;
        out.push((key.to_string(), value.to_string()));
    }
    Ok(out)
}

fn cmd_create(a: CreateArgs) -> anyhow::Result<i32> {
    let mut options = CreateOptions {
        format: a.format,
        size: a.size.as_deref().map(parse_size).transpose()?,
        backing_file: a.backing_file,
        backing_format: a.backing_format,
        overwrite: a.force,
        ..CreateOptions::default()
    };
    for (key, value) in parse_options(&a.options)? {
        match key.as_str() {
            "preallocation" => options.preallocation = Preallocation::parse(&value)?,
            "cluster_size" => options.cluster_size = parse_size(&value)?,
            "backing_file" => options.backing_file = Some(value),
            "backing_fmt" => options.backing_format = Some(Format::parse(&value)?),
            "size" => options.size = Some(parse_size(&value)?),
            other => bail!("unknown create option '{other}'"),
        }
    }
    if options.format == Format::Raw && options.cluster_size != 65536 {
        bail!("cluster_size is a qcow2 option");
    }
    create(&a.file, &options)?;
    if !a.quiet {
        let size = options
            .size
            .map(|s| s.to_string())
            .unwrap_or_else(|| "(backing size)".into());
        println!(
            "Formatting '{}', fmt={} size={}",
            a.file.display(),
            options.format.name(),
            size
        );
    }
    Ok(0)
}

fn open(
    path: &Path,
    format: Option<Format>,
    write: bool,
    force_share: bool,
) -> anyhow::Result<Image> {
    Ok(Image::open(
        path,
        &OpenOptions {
            format,
            write,
            force_share,
            // qemu-img probes a backing file whose format its overlay does not record.
            probe_backing_format: true,
            ..OpenOptions::default()
        },
    )?)
}

fn cmd_info(a: InfoArgs) -> anyhow::Result<i32> {
    let image = open(&a.file, a.format, false, a.force_share)?;
    let info = image_info(&image, &a.file)?;
    match a.output {
        OutputFormat::Json => println!("{}", to_json(&info)?),
        OutputFormat::Human => print!("{}", render_human(&info)),
    }
    Ok(0)
}

fn cmd_convert(a: ConvertArgs) -> anyhow::Result<i32> {
    let mut cluster_size = 65536;
    for (key, value) in parse_options(&a.options)? {
        match key.as_str() {
            "cluster_size" => cluster_size = parse_size(&value)?,
            other => bail!("unknown convert option '{other}'"),
        }
    }
    let mut source = open(&a.source, a.format, false, a.force_share)?;
    let progress = Progress::new(a.progress);
    convert(
        &mut source,
        &a.destination,
        &ConvertOptions {
            format: a.output_format,
            cluster_size,
            overwrite: a.force,
        },
        &mut |done, total| progress.report(done, total),
    )?;
    progress.finish();
    Ok(0)
}

fn cmd_resize(a: ResizeArgs) -> anyhow::Result<i32> {
    let mut image = open(&a.file, a.format, true, false)?;
    let current = image.virtual_size();
    let new_size = if let Some(delta) = a.size.strip_prefix('+') {
        current
            .checked_add(parse_size(delta)?)
            .context("new size overflows")?
    } else if let Some(delta) = a.size.strip_prefix('-') {
        current
            .checked_sub(parse_size(delta)?)
            .context("cannot shrink below zero")?
    } else {
        parse_size(&a.size)?
    };
    image.resize(new_size, a.shrink)?;
    image.flush()?;
    if !a.quiet {
        println!("Image resized.");
    }
    Ok(0)
}

fn cmd_check(a: CheckArgs) -> anyhow::Result<i32> {
    let repair = a.repair.map(|r| match r {
        RepairArg::Leaks => Repair::Leaks,
        RepairArg::All => Repair::All,
    });
    let mut image = Image::open(
        &a.file,
        &OpenOptions {
            format: a.format,
            write: repair.is_some(),
            force_share: a.force_share && repair.is_none(),
            no_backing: true,
            repair: repair.is_some(),
            probe_backing_format: true,
        },
    )?;
    let Some(qcow2) = image.as_qcow2_mut() else {
        eprintln!("qemu-img-compatible: This image format does not support checks");
        return Ok(63);
    };
    let report = qcow2.check(repair)?;
    if a.output == OutputFormat::Human {
        for message in &report.messages {
            println!("{message}");
        }
        if repair.is_some() && (report.leaks_fixed > 0 || report.corruptions_fixed > 0) {
            println!(
                "The following inconsistencies were found and repaired:\n\n    {} leaked clusters\n    {} corruptions\n\nDouble checking the fixed image now...",
                report.leaks_fixed, report.corruptions_fixed
            );
        }
    }
    print_check(&report, &a.file, a.output)?;
    Ok(if report.check_errors > 0 {
        1
    } else if report.corruptions > 0 {
        2
    } else if report.leaks > 0 {
        3
    } else {
        0
    })
}

fn cmd_snapshot(a: SnapshotArgs) -> anyhow::Result<i32> {
    let write = !a.list;
    let mut image = Image::open(
        &a.file,
        &OpenOptions {
            format: a.format,
            write,
            force_share: a.force_share && !write,
            no_backing: true,
            repair: false,
            probe_backing_format: true,
        },
    )?;
    let path = a.file.display().to_string();
    let Some(qcow2) = image.as_qcow2_mut() else {
        bail!("{path}: snapshots need a qcow2 image");
    };
    if let Some(name) = &a.create {
        qcow2.snapshot_create(name)?;
    } else if let Some(name) = &a.apply {
        qcow2.snapshot_apply(name)?;
    } else if let Some(name) = &a.delete {
        qcow2.snapshot_delete(name)?;
    } else {
        let info = image_info(&image, &a.file)?;
        println!("Snapshot list:");
        println!("{}", snapshot_table_header());
        for s in &info.snapshots {
            println!("{}", snapshot_table_row(s));
        }
        return Ok(0);
    }
    image.flush()?;
    Ok(0)
}

fn cmd_compare(a: CompareArgs) -> anyhow::Result<i32> {
    let opened = open(&a.first, a.format_a, false, a.force_share)
        .and_then(|first| Ok((first, open(&a.second, a.format_b, false, a.force_share)?)));
    let (mut first, mut second) = match opened {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("oxvirt img compare: {e:#}");
            return Ok(2);
        }
    };
    if first.virtual_size() != second.virtual_size() {
        println!("Warning: Image size mismatch!");
    }
    let progress = Progress::new(a.progress);
    let result = compare(&mut first, &mut second, &mut |done, total| {
        progress.report(done, total)
    });
    progress.finish_and_clear();
    match result {
        Ok(Comparison::Identical) => {
            println!("Images are identical.");
            Ok(0)
        }
        Ok(Comparison::Mismatch { offset }) => {
            println!("Content mismatch at offset {offset}!");
            Ok(1)
        }
        Err(e) => {
            eprintln!("oxvirt img compare: {e}");
            Ok(2)
        }
    }
}
