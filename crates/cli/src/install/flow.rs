//! The run of an install, as virt-install runs it: every check first (plan), then create the
//! disks, the seed and the installer's kernel, define and start the domain with the install-phase
//! document, attach to the console or say where the display is, and when the first instance ends
//! (the installer's reboot is a power-off there: `on_reboot` destroy) define the final document,
//! drop the seed, and boot the installed system.
//!
//! A failure (or Ctrl-C while waiting) removes what this run created: the domain, the new
//! volumes, the seed ISO and the kernel copies, each said on stderr as virt-install says it.
//!
//! The final document is defined right after the start, while the install phase runs: oxvirtd
//! keeps it for the next start (libvirt's define of a running domain) and makes it current when
//! the first instance ends. The seed ISO and kernel copies are deleted then, by this process when
//! it waits, else (`--noautoconsole`) by a detached `oxvirt __install-finish` process.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use oxvirt_api::Client;

use super::options::GraphicsOption;
use super::xml::Plan;
use super::{disks, media, plan, BootFiles, InstallArgs};
use crate::commands::block_on;

/// What this run made, to remove on failure.
#[derive(Debug, Default)]
struct Created {
    /// (UUID, name).
    domain: Option<(String, String)>,
    volumes: Vec<(String, String, String)>,
    files: Vec<PathBuf>,
}

impl Created {
    fn cleanup(&mut self, client: &Client) {
        let mut err = std::io::stderr();
        if let Some((domain, name)) = self.domain.take() {
            let _ = writeln!(
                err,
                "Domain installation does not appear to have been successful."
            );
            if let Ok(Ok(info)) = block_on(client.domain_info(&domain)) {
                if info.state.is_active() {
                    let _ = block_on(client.destroy(&domain));
                }
            }
            // The NVRAM of a UEFI guest was made by this run too.
            match block_on(
                client.undefine_domain(&domain, Some(oxvirt_api::NvramOnUndefine::Remove)),
            ) {
                Ok(Ok(_)) => {
                    let _ = writeln!(err, "Removing domain '{name}'");
                }
                _ => {
                    let _ = writeln!(err, "Could not remove domain '{name}'");
                }
            }
        }
        for (pool, vol, path) in self.volumes.drain(..) {
            let _ = writeln!(err, "Removing disk '{path}'");
            if !matches!(block_on(client.delete_volume(&pool, &vol)), Ok(Ok(_))) {
                let _ = writeln!(err, "Could not remove disk '{path}'");
            }
        }
        for file in self.files.drain(..) {
            let _ = std::fs::remove_file(&file);
        }
    }
}

/// Whether the plan needs oxvirtd even for `--print-xml` (volumes and pools are looked up).
fn needs_daemon(args: &InstallArgs) -> bool {
    args.disk.iter().any(|disk| {
        let bare_path = !disk.split(',').next().unwrap_or("").contains('=');
        disk.contains("vol=") || disk.contains("pool=") || !(disk.contains("path=") || bare_path)
    })
}

pub fn run(client: &Client, args: InstallArgs) -> anyhow::Result<()> {
    // `--dry-run` asks oxvirtd (the name must be free, pools must have room); `--print-xml` of
    // file paths needs no daemon.
    let offline = args.print_xml && !needs_daemon(&args);
    let daemon = (!offline).then_some(client);
    let (plan, resolved, files, seed) = block_on(plan(daemon, &args))??;
    if args.print_xml {
        let mut out = std::io::stdout().lock();
        if let Some(install) = plan.install_xml() {
            out.write_all(install.as_bytes())?;
        }
        out.write_all(plan.final_xml().as_bytes())?;
        return Ok(());
    }
    match block_on(client.domain_info(&plan.name))? {
        Ok(_) => bail!("Guest name '{}' is already in use.", plan.name),
        Err(err) if err.api_code() == Some(oxvirt_api::code::NOT_FOUND) => {}
        Err(err) => return Err(err.into()),
    }
    if args.dry_run {
        println!("Dry run completed successfully");
        return Ok(());
    }
    let mut created = Created::default();
    match install(
        client,
        &args,
        &plan,
        &resolved,
        &files,
        seed.as_ref(),
        &mut created,
    ) {
        Ok(()) => Ok(()),
        Err(err) => {
            created.cleanup(client);
            Err(err)
        }
    }
}

fn say(message: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout();
    writeln!(out, "{message}")?;
    out.flush()?;
    Ok(())
}

fn install(
    client: &Client,
    args: &InstallArgs,
    plan: &Plan,
    resolved: &[disks::ResolvedDisk],
    files: &BootFiles,
    seed: Option<&super::cloudinit::Seed>,
    created: &mut Created,
) -> anyhow::Result<()> {
    say("\nStarting install...")?;
    for disk in resolved {
        if let Some((pool, vol)) = block_on(disks::create(client, disk))?? {
            say(&format!("Allocating '{vol}'"))?;
            created.volumes.push((pool, vol, disk.path.clone()));
        }
    }
    if files.seed.is_some() || files.kernel.is_some() {
        std::fs::create_dir_all(&args.boot_dir)
            .with_context(|| format!("cannot make {}", args.boot_dir.display()))?;
    }
    if let Some((kernel, initrd, inner_kernel, inner_initrd)) = &files.kernel {
        let location = args
            .location
            .as_deref()
            .context("a kernel without --location")?;
        let tree = media::Location::open(location)?;
        say(&format!(
            "Retrieving '{}'",
            Path::new(inner_kernel).display()
        ))?;
        created.files.push(kernel.clone());
        tree.copy_out(inner_kernel, kernel)?;
        say(&format!(
            "Retrieving '{}'",
            Path::new(inner_initrd).display()
        ))?;
        created.files.push(initrd.clone());
        tree.copy_out(inner_initrd, initrd)?;
    }
    if let (Some(path), Some(seed)) = (&files.seed, seed) {
        created.files.push(path.clone());
        super::cloudinit::write_iso(seed, path)?;
        if let Some(password) = &seed.generated_password {
            say(&format!("Password for first root login is: {password}"))?;
        }
    }
    let first = plan.install_xml().unwrap_or_else(|| plan.final_xml());
    say("Creating domain...")?;
    let defined = block_on(client.define_domain(&first))?
        .with_context(|| format!("cannot define domain '{}'", plan.name))?;
    created.domain = Some((defined.uuid.clone(), defined.name.clone()));
    block_on(client.start(&defined.uuid))?
        .with_context(|| format!("cannot start domain '{}'", plan.name))?;
    if plan.has_install_phase() {
        // As virt-install: the final definition is defined while the install phase runs, so
        // oxvirtd keeps it for the next start and makes it the definition when the first
        // instance ends, whoever is watching then.
        block_on(client.define_domain(&plan.final_xml()))?
            .with_context(|| format!("cannot define the final definition of '{}'", plan.name))?;
    }
    let info = block_on(client.domain_info(&defined.uuid))??;
    for warning in &info.warnings {
        eprintln!("WARNING  {warning}");
    }

    // From here on the domain stays even if the wait is cut short (as virt-install: the
    // install may go on without us).
    let phase = plan.has_install_phase();
    let wait = args
        .wait
        .map(|minutes| (minutes >= 0).then(|| Duration::from_secs(minutes.unsigned_abs() * 60)));
    let text_console = plan.graphics == GraphicsOption::None;
    let attach = !args.noautoconsole && wait.is_none() && text_console;
    if attach {
        // The serial console until the guest stops or the user detaches.
        crate::console::run(client, &defined.uuid)?;
    } else {
        print_display(plan)?;
    }
    // As virt-install: after the console, only a check (the user may have detached); with no
    // console to attach, wait for the end (its default `--wait -1`); `--noautoconsole`: no wait.
    let limit = match (args.noautoconsole, wait) {
        (_, Some(limit)) => limit,
        _ if attach => Some(Duration::from_secs(2)),
        (false, None) => None,
        (true, None) => Some(Duration::ZERO),
    };
    match wait_for_shutoff(client, &defined.uuid, limit)? {
        Waited::Off => {}
        Waited::Interrupted => {
            bail!("installation interrupted (Ctrl-C)");
        }
        Waited::StillRunning => {
            if phase {
                spawn_finisher(client, &defined.uuid, files)?;
            }
            // Nothing more to remove on failure: the domain is the user's now.
            created.domain = None;
            created.volumes.clear();
            created.files.clear();
            if !phase {
                say("Domain creation completed.")?;
            } else {
                say("Domain is still running. Installation may be in progress.")?;
                say("You can reconnect to the console to complete the installation process.")?;
            }
            return Ok(());
        }
    }
    if phase {
        remove_boot_files(files);
        created.domain = None;
        created.volumes.clear();
        created.files.clear();
        say("Domain has shutdown. Continuing.")?;
        block_on(client.start(&defined.uuid))?
            .with_context(|| format!("cannot restart domain '{}'", plan.name))?;
        say("Domain creation completed.")?;
        if !args.noautoconsole && text_console && args.wait.is_none() {
            crate::console::run(client, &defined.uuid)?;
        }
    } else {
        created.domain = None;
        created.volumes.clear();
        say("Domain creation completed.")?;
    }
    Ok(())
}

/// Where the graphical console is, or how to reach the serial one.
fn print_display(plan: &Plan) -> anyhow::Result<()> {
    match &plan.graphics {
        GraphicsOption::None => say(&format!(
            "Domain is running. Connect to its serial console with: oxvirt console {}",
            plan.name
        )),
        GraphicsOption::Vnc { .. } | GraphicsOption::Spice { .. } => say(&format!(
            "Domain is running. Its graphical console: oxvirt domdisplay {}",
            plan.name
        )),
    }
}

enum Waited {
    Off,
    StillRunning,
    Interrupted,
}

/// Polls the domain's state until it is off, `limit` passes (None: no limit), or Ctrl-C.
fn wait_for_shutoff(
    client: &Client,
    domain: &str,
    limit: Option<Duration>,
) -> anyhow::Result<Waited> {
    let start = Instant::now();
    block_on(async {
        loop {
            let info = client.domain_info(domain).await?;
            if !info.state.is_active() {
                return Ok(Waited::Off);
            }
            if limit.is_some_and(|limit| start.elapsed() >= limit) {
                return Ok(Waited::StillRunning);
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = tokio::signal::ctrl_c() => return Ok(Waited::Interrupted),
            }
        }
    })?
}

fn remove_boot_files(files: &BootFiles) {
    if let Some(seed) = &files.seed {
        let _ = std::fs::remove_file(seed);
    }
    if let Some((kernel, initrd, _, _)) = &files.kernel {
        let _ = std::fs::remove_file(kernel);
        let _ = std::fs::remove_file(initrd);
    }
}

/// `--noautoconsole` with an install phase: a detached `oxvirt __install-finish` waits for the
/// first instance to end and removes the seed and the kernel copies.
fn spawn_finisher(client: &Client, domain: &str, files: &BootFiles) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("cannot find the oxvirt executable")?;
    let mut command = std::process::Command::new(exe);
    command
        .arg("--socket")
        .arg(client.socket())
        .args(["__install-finish", domain]);
    for path in files.seed.iter() {
        command.arg("--remove").arg(path);
    }
    if let Some((kernel, initrd, _, _)) = &files.kernel {
        command
            .arg("--remove")
            .arg(kernel)
            .arg("--remove")
            .arg(initrd);
    }
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .context("cannot start the process that finishes the install")?;
    Ok(())
}

/// `oxvirt __install-finish DOMAIN [--remove FILE]...`: waits for the domain's first instance
/// to end (oxvirtd then makes the final definition current), then removes the files.
pub fn finish(client: &Client, domain: &str, remove: &[PathBuf]) -> anyhow::Result<()> {
    loop {
        match block_on(client.domain_info(domain))? {
            Ok(info) if !info.state.is_active() => break,
            Ok(_) => {}
            // Undefined before this poll saw it stop: its first instance is over all the same,
            // and the files are still this install's to remove.
            Err(oxvirt_api::ClientError::Api(err)) if err.code == oxvirt_api::code::NOT_FOUND => {
                break
            }
            Err(err) => return Err(err.into()),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    for file in remove {
        let _ = std::fs::remove_file(file);
    }
    Ok(())
}
