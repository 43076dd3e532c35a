//! `oxvirt img`: a qemu-img-like command line over this crate.
//!
//! Exit statuses follow qemu-img: `compare` 0 identical / 1 different / 2 error; `check` 0 clean /
//! 1 check could not finish / 2 corruptions / 3 leaks only / 63 format has no checks.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use crate::image::{create, CreateOptions, Format, Image, OpenOptions, Preallocation};
use crate::info::{image_info, render_human, snapshot_table_header, snapshot_table_row};
use crate::ops::{compare, convert, Comparison, ConvertOptions};
use crate::qcow2::check::{CheckReport, Repair};
use crate::size::parse_size;

#[derive(Args, Debug)]
pub struct ImgArgs {
    #[command(subcommand)]
    pub command: ImgCommand,
}

#[derive(Subcommand, Debug)]
pub enum ImgCommand {
    /// Create a new image: create -f raw|qcow2 [-o opts] [-b backing -F fmt] FILE [SIZE]
    Create(CreateArgs),
    /// Show information about an image
    Info(InfoArgs),
    /// Copy an image's contents into a new image (zero ranges stay holes)
    Convert(ConvertArgs),
    /// Change an image's virtual size: resize FILE [+|-]SIZE
    Resize(ResizeArgs),
    /// Check (and with -r repair) a qcow2 image's metadata
    Check(CheckArgs),
    /// Manage internal snapshots (qcow2): -c/-a/-d NAME, or -l
    Snapshot(SnapshotArgs),
    /// Compare the contents of two images (exit 0 identical, 1 different)
    Compare(CompareArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Human,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RepairArg {
    Leaks,
    All,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Image format
    #[arg(short = 'f', value_enum, default_value = "raw")]
    pub format: Format,
    /// Options: preallocation=off|metadata|falloc|full, cluster_size=N, backing_file=F, backing_fmt=F
    #[arg(short = 'o', action = clap::ArgAction::Append)]
    pub options: Vec<String>,
    /// Backing file (qcow2); stored as given, relative names are relative to FILE's directory
    #[arg(short = 'b')]
    pub backing_file: Option<String>,
    /// Format of the backing file
    #[arg(short = 'F', value_enum)]
    pub backing_format: Option<Format>,
    /// Replace FILE if it exists (refused while a guest or tool has it open)
    #[arg(long)]
    pub force: bool,
    /// Quiet
    #[arg(short = 'q')]
    pub quiet: bool,
    pub file: PathBuf,
    /// Size with optional suffix k, M, G, T (binary); defaults to the backing file's size
    pub size: Option<String>,
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    #[arg(short = 'f', value_enum)]
    pub format: Option<Format>,
    #[arg(long, value_enum, default_value = "human")]
    pub output: OutputFormat,
    /// Open without locks even if the image is in use (data may be inconsistent)
    #[arg(short = 'U', long = "force-share")]
    pub force_share: bool,
    pub file: PathBuf,
}

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// Show a progress bar
    #[arg(short = 'p')]
    pub progress: bool,
    /// Source format
    #[arg(short = 'f', value_enum)]
    pub format: Option<Format>,
    /// Output format
    #[arg(short = 'O', value_enum, default_value = "raw")]
    pub output_format: Format,
    /// Output options: cluster_size=N
    #[arg(short = 'o', action = clap::ArgAction::Append)]
    pub options: Vec<String>,
    /// Replace DST if it exists
    #[arg(long)]
    pub force: bool,
    #[arg(short = 'U', long = "force-share")]
    pub force_share: bool,
    pub source: PathBuf,
    pub destination: PathBuf,
}

#[derive(Args, Debug)]
pub struct ResizeArgs {
    #[arg(short = 'f', value_enum)]
    pub format: Option<Format>,
    /// Allow shrinking (data past the new end is lost)
    #[arg(long)]
    pub shrink: bool,
    #[arg(short = 'q')]
    pub quiet: bool,
    pub file: PathBuf,
    /// New size, or +SIZE / -SIZE relative to the current one
    #[arg(allow_hyphen_values = true)]
    pub size: String,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    #[arg(short = 'f', value_enum)]
    pub format: Option<Format>,
    /// Repair leaked clusters only, or all inconsistencies
    #[arg(short = 'r', value_enum)]
    pub repair: Option<RepairArg>,
    #[arg(long, value_enum, default_value = "human")]
    pub output: OutputFormat,
    #[arg(short = 'U', long = "force-share")]
    pub force_share: bool,
    pub file: PathBuf,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("action").required(true).args(["create", "list", "apply", "delete"])))]
pub struct SnapshotArgs {
    /// Create a snapshot
    #[arg(short = 'c', value_name = "NAME")]
    pub create: Option<String>,
    /// List snapshots
    #[arg(short = 'l')]
    pub list: bool,
    /// Revert the disk to a snapshot
    #[arg(short = 'a', value_name = "NAME")]
    pub apply: Option<String>,
    /// Delete a snapshot
    #[arg(short = 'd', value_name = "NAME")]
    pub delete: Option<String>,
    #[arg(short = 'f', value_enum)]
    pub format: Option<Format>,
    #[arg(short = 'U', long = "force-share")]
    pub force_share: bool,
    pub file: PathBuf,
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Format of the first image
    #[arg(short = 'f', value_enum)]
    pub format_a: Option<Format>,
    /// Format of the second image
    #[arg(short = 'F', value_enum)]
    pub format_b: Option<Format>,
    #[arg(short = 'p')]
    pub progress: bool,
    #[arg(short = 'U', long = "force-share")]
    pub force_share: bool,
    pub first: PathBuf,
    pub second: PathBuf,
}

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

/// Pretty JSON with qemu-img's four-space indentation.
fn to_json<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    value.serialize(&mut serializer)?;
    Ok(String::from_utf8(out)?)
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

fn progress_bar(enabled: bool) -> Option<ProgressBar> {
    if !enabled {
        return None;
    }
    let bar = ProgressBar::new(0);
    if let Ok(style) = ProgressStyle::with_template(
        "    ({percent:>3}/100%) [{bar:40}] {bytes}/{total_bytes} {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    Some(bar)
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
    let bar = progress_bar(a.progress);
    let mut report = |done: u64, total: u64| {
        if let Some(bar) = &bar {
            bar.set_length(total);
            bar.set_position(done);
        }
    };
    convert(
        &mut source,
        &a.destination,
        &ConvertOptions {
            format: a.output_format,
            cluster_size,
            overwrite: a.force,
        },
        &mut report,
    )?;
    if let Some(bar) = bar {
        bar.finish();
    }
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

fn print_check(report: &CheckReport, file: &Path, output: OutputFormat) -> anyhow::Result<()> {
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
    let bar = progress_bar(a.progress);
    let mut report = |done: u64, total: u64| {
        if let Some(bar) = &bar {
            bar.set_length(total);
            bar.set_position(done);
        }
    };
    let result = compare(&mut first, &mut second, &mut report);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
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
