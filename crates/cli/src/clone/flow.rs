//! The run of a clone, as virt-clone runs it: the original must be shut off (or paused), every
//! check is made (plan.rs) before anything is created, then the disks are made and filled,
//! then the clone is defined. Any failure removes the disks, files and definition this run
//! made, and nothing else.
//!
//! New disks in a pool are made by oxvirtd (`vol-create-as`, or with a backing volume for
//! `--linked`), so the pool records their format; the CLI then fills them. It can: oxvirtd is
//! on this host (it is reached through a local Unix socket), and the CLI reads the original's
//! image anyway. Files outside every pool are made by the CLI alone, as virt-clone makes them.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use oxvirt_api::{Client, CreateVolumeRequest, DomainState};
use oxvirt_domain::Domain;

use super::copy;
use super::plan::{self, Mode, Plan, Target};
use crate::commands::block_on;

/// What this run made, removed again if it fails.
#[derive(Debug, Default)]
pub(super) struct Created {
    /// UUID of the defined clone.
    pub domain: Option<String>,
    pub volumes: Vec<(String, String)>,
    pub files: Vec<PathBuf>,
}

impl Created {
    pub(super) fn cleanup(&mut self, client: &Client) {
        if let Some(uuid) = self.domain.take() {
            let _ =
                block_on(client.undefine_domain(&uuid, Some(oxvirt_api::NvramOnUndefine::Remove)));
        }
        for (pool, volume) in self.volumes.drain(..) {
            if !matches!(block_on(client.delete_volume(&pool, &volume)), Ok(Ok(_))) {
                eprintln!("Could not remove disk '{volume}' of pool '{pool}'");
            }
        }
        for file in self.files.drain(..) {
            let _ = std::fs::remove_file(&file);
        }
    }
}

/// The original's definition for the next start and whether its disks are shared with a
/// paused QEMU; refused while it runs (virt-clone: "Domain to clone must be shutoff").
pub(super) fn original(client: &Client, name: &str) -> anyhow::Result<(Domain, bool)> {
    let info = match block_on(client.domain_info(name))? {
        Ok(info) => info,
        Err(err) if err.api_code() == Some(oxvirt_api::code::NOT_FOUND) => {
            bail!("Domain '{name}' was not found.")
        }
        Err(err) => return Err(err.into()),
    };
    let paused = match info.state {
        DomainState::ShutOff | DomainState::Crashed => false,
        DomainState::Paused => true,
        state => bail!(
            "Domain to clone must be shutoff or paused: '{}' is {state}",
            info.name
        ),
    };
    let xml = block_on(client.domain_inactive_xml(&info.uuid))??;
    let domain = oxvirt_domain::parse_domain_xml(&xml)
        .with_context(|| format!("cannot read the definition of '{}'", info.name))?;
    Ok((domain, paused))
}

/// Names of the domains `client`'s oxvirtd has.
pub(super) fn domain_names(client: &Client) -> anyhow::Result<Vec<String>> {
    Ok(block_on(client.list_domains())??
        .into_iter()
        .map(|d| d.name)
        .collect())
}

/// A clone on the same oxvirtd.
pub fn run(client: &Client, args: super::CloneArgs) -> anyhow::Result<()> {
    let (original, paused) = original(client, &args.original)?;
    let names = domain_names(client)?;
    let plan = block_on(plan::plan(client, &original, &args, |n| {
        names.iter().any(|m| m == n)
    }))??;
    for warning in &plan.warnings {
        eprintln!("WARNING  {warning}");
    }
    let mut created = Created::default();
    match make(client, &plan, paused, &mut created) {
        Ok(()) => {
            println!("\nClone '{}' created successfully.", plan.domain.name);
            Ok(())
        }
        Err(err) => {
            created.cleanup(client);
            Err(err)
        }
    }
}

fn make(client: &Client, plan: &Plan, paused: bool, created: &mut Created) -> anyhow::Result<()> {
    for disk in &plan.disks {
        if plan.mode == Mode::Preserve {
            continue;
        }
        let path = disk.target.path().to_path_buf();
        let bar = copy::allocating(&path);
        match &disk.target {
            Target::Volume { pool, name, .. } => {
                let linked = plan.mode == Mode::Linked;
                let capacity = virtual_size(&disk.source)?;
                let request = CreateVolumeRequest {
                    name: name.clone(),
                    capacity,
                    format: disk.format.name().to_string(),
                    prealloc_metadata: false,
                    allocation: Some(0),
                    backing_vol: linked.then(|| disk.source.path.display().to_string()),
                    backing_format: linked.then(|| disk.source.format.name().to_string()),
                    cluster_size: None,
                };
                block_on(client.create_volume(pool, &request))?
                    .with_context(|| format!("cannot create volume '{name}' in pool '{pool}'"))?;
                created.volumes.push((pool.clone(), name.clone()));
                match plan.mode {
                    Mode::Copy => copy::copy(&disk.source, &path, paused, true, &bar)?,
                    Mode::Reflink => copy::reflink(&disk.source, &path, paused, true)?,
                    Mode::Linked | Mode::Preserve => {}
                }
            }
            Target::File(path) => {
                match plan.mode {
                    Mode::Copy => copy::copy(&disk.source, path, paused, false, &bar)?,
                    Mode::Reflink => copy::reflink(&disk.source, path, paused, false)?,
                    Mode::Linked => copy::overlay(&disk.source, path)?,
                    Mode::Preserve => {}
                }
                created.files.push(path.clone());
            }
        }
        bar.finish_and_clear();
    }
    if let Some((from, to)) = &plan.nvram {
        copy::copy_file(from, to)?;
        created.files.push(to.clone());
    }
    let defined = block_on(client.define_domain(&plan.domain.to_xml()))?
        .with_context(|| format!("cannot define the clone '{}'", plan.domain.name))?;
    created.domain = Some(defined.uuid);
    std::io::stdout().flush()?;
    Ok(())
}

/// The size the guest sees of the original's disk.
pub(super) fn virtual_size(source: &plan::Source) -> anyhow::Result<u64> {
    let image = oxvirt_images::Image::open(
        &source.path,
        &oxvirt_images::OpenOptions {
            format: Some(source.format),
            force_share: true,
            no_backing: true,
            ..oxvirt_images::OpenOptions::default()
        },
    )
    .with_context(|| format!("cannot read {}", source.path.display()))?;
    Ok(image.virtual_size())
}
