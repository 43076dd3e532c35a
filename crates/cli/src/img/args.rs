//! The `oxvirt img` command line: qemu-img's subcommands, flags and defaults, parsed by clap.

use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Subcommand, ValueEnum};
use oxvirt_images::Format;

/// Parses `raw`/`qcow2` into the library's [`Format`]. The library knows nothing of clap: clap
/// checks the name against the possible values (so help and errors list them, as for the other
/// enums here) and the library's `FromStr` makes the value.
fn format_parser() -> impl TypedValueParser<Value = Format> {
    PossibleValuesParser::new(Format::ALL.map(Format::name)).try_map(|name| name.parse::<Format>())
}

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
    #[arg(short = 'f', value_parser = format_parser(), default_value = "raw")]
    pub format: Format,
    /// Options: preallocation=off|metadata|falloc|full, cluster_size=N, backing_file=F, backing_fmt=F
    #[arg(short = 'o', action = clap::ArgAction::Append)]
    pub options: Vec<String>,
    /// Backing file (qcow2); stored as given, relative names are relative to FILE's directory
    #[arg(short = 'b')]
    pub backing_file: Option<String>,
    /// Format of the backing file
    #[arg(short = 'F', value_parser = format_parser())]
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
    #[arg(short = 'f', value_parser = format_parser())]
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
    #[arg(short = 'f', value_parser = format_parser())]
    pub format: Option<Format>,
    /// Output format
    #[arg(short = 'O', value_parser = format_parser(), default_value = "raw")]
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
    #[arg(short = 'f', value_parser = format_parser())]
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
    #[arg(short = 'f', value_parser = format_parser())]
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
    #[arg(short = 'f', value_parser = format_parser())]
    pub format: Option<Format>,
    #[arg(short = 'U', long = "force-share")]
    pub force_share: bool,
    pub file: PathBuf,
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Format of the first image
    #[arg(short = 'f', value_parser = format_parser())]
    pub format_a: Option<Format>,
    /// Format of the second image
    #[arg(short = 'F', value_parser = format_parser())]
    pub format_b: Option<Format>,
    #[arg(short = 'p')]
    pub progress: bool,
    #[arg(short = 'U', long = "force-share")]
    pub force_share: bool,
    pub first: PathBuf,
    pub second: PathBuf,
}
