//! `oxvirt img`: placeholder until the images work lands.

#[derive(clap::Args, Debug)]
pub struct ImgArgs {}

pub fn run(_args: ImgArgs) -> anyhow::Result<()> {
    anyhow::bail!("oxvirt img is not implemented yet")
}
