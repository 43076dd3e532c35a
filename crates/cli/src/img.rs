//! `oxvirt img`: disk image commands (create, info, convert, resize, check, snapshot, compare).
//! Implemented in `oxvirt-images` (crates/images/src/cli.rs, documented in docs/images.md);
//! this module only hands the parsed arguments over.

pub use oxvirt_images::cli::ImgArgs;

/// Runs an `oxvirt img` command. Exits the process with qemu-img's status for `compare`
/// (1 = different, 2 = error) and `check` (2 corruptions, 3 leaks, 63 unsupported format).
pub fn run(args: ImgArgs) -> anyhow::Result<()> {
    oxvirt_images::cli::run(args)
}
