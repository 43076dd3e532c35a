//! Standalone `oxvirt-img` (the same as `oxvirt img`), used by this crate's integration tests.

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "oxvirt-img",
    about = "qemu-img-like disk image tool (raw, qcow2)"
)]
struct Cli {
    #[command(flatten)]
    img: oxvirt_images::cli::ImgArgs,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = oxvirt_images::cli::run(cli.img) {
        eprintln!("oxvirt-img: {e:#}");
        std::process::exit(1);
    }
}
