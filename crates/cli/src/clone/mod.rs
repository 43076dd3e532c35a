//! `oxvirt clone`: virt-clone's job, and cross-host cloning (`--to`, `export`, `import`).
//!
//! - options (this file): the flags, as virt-clone 4.1 names them, plus `--linked` and `--to`.
//! - plan.rs: what the clone gets: its name, a new UUID and MACs, `<sysinfo>` and display
//!   ports, and for each disk whether it is shared, kept (`--preserve-data`) or copied, and
//!   where to (`--file`, or virt-clone's `--auto-clone` names).
//! - copy.rs: the copies: holes kept, a progress bar, `--reflink` (FICLONE), `--linked`
//!   (a qcow2 overlay backed by the original's disk).
//! - flow.rs: the run: every check first, then the copies, then the definition; a failure
//!   removes what the run made.
//! - remote.rs: the definition and disks sent to another oxvirtd: straight (`clone --to`) or
//!   through a tar file (`export`, `import`), disks uploaded as volumes of its pool.
//!
//! docs/clone.md has the rules.

mod copy;
mod flow;
mod plan;
mod remote;

use std::path::PathBuf;

use clap::Args;

/// virt-clone's flags (see `oxvirt clone --help` and docs/clone.md).
#[derive(Args, Debug, Clone, Default)]
pub struct CloneArgs {
    /// Name of the original guest to clone (it must be shut off or paused).
    #[arg(short = 'o', long, value_name = "DOMAIN")]
    pub original: String,
    /// Name for the new guest (default with --auto-clone: ORIGINAL-clone).
    #[arg(short = 'n', long)]
    pub name: Option<String>,
    /// New file for the next disk to copy, in disk order; repeatable.
    #[arg(short = 'f', long, value_name = "PATH")]
    pub file: Vec<PathBuf>,
    /// Name the clone and its disk files as virt-clone does (NAME.qcow2 next to the original).
    #[arg(long)]
    pub auto_clone: bool,
    /// MAC address of the next interface, in order, or RANDOM (the default).
    #[arg(short = 'm', long, value_name = "MAC")]
    pub mac: Vec<String>,
    /// Make each new disk a qcow2 overlay backed by the original's disk (nothing copied).
    #[arg(long, conflicts_with_all = ["preserve_data", "reflink"])]
    pub linked: bool,
    /// Use the --file paths as they are: they must exist, nothing is copied into them.
    #[arg(long, conflicts_with = "reflink")]
    pub preserve_data: bool,
    /// Copy by sharing the file system's extents (FICLONE: btrfs, XFS); refused where the
    /// file system cannot.
    #[arg(long)]
    pub reflink: bool,
    /// Clone onto the oxvirtd listening on this socket: its disks become volumes of --pool there.
    #[arg(long, value_name = "SOCKET", conflicts_with_all = ["file", "linked", "preserve_data", "reflink"])]
    pub to: Option<PathBuf>,
    /// With --to: the storage pool of the other oxvirtd that receives the disks.
    #[arg(long, requires = "to", default_value = "default")]
    pub pool: String,
}

/// `oxvirt export DOMAIN FILE.tar`.
#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    /// The domain (shut off or paused).
    pub domain: String,
    /// The archive to write (must not exist yet).
    pub file: PathBuf,
}

/// `oxvirt import FILE.tar`.
#[derive(Args, Debug, Clone)]
pub struct ImportArgs {
    /// An archive `oxvirt export` wrote.
    pub file: PathBuf,
    /// Define it under this name, as a clone (new UUID and MACs); default: the exported name,
    /// UUID and MACs.
    #[arg(short = 'n', long)]
    pub name: Option<String>,
    /// The storage pool that receives the disks.
    #[arg(long, default_value = "default")]
    pub pool: String,
}

pub use remote::{export, import};

/// Entry point: a clone here, or with `--to` on another oxvirtd.
pub fn run(client: &oxvirt_api::Client, args: CloneArgs) -> anyhow::Result<()> {
    match &args.to {
        Some(socket) => remote::clone_to(client, &args, &oxvirt_api::Client::new(socket.clone())),
        None => flow::run(client, args),
    }
}
