//! `oxvirt builder`: bootable Debian disk images made from Debian's packages (virt-builder's role).
//! Runs on the host as root, with no daemon. The steps, each in its own module:
//!
//! 1. `template.rs`: what a template is (suite, archive, packages); `--list`.
//! 2. `rootfs.rs`: the template's root filesystem as a tarball, made by mmdebstrap once and cached by
//!    its inputs.
//! 3. `customize.rs`: the tarball unpacked into a work directory and made this image: fresh identity,
//!    fstab, hostname, root password, SSH key, extra packages.
//! 4. `bootloader.rs`: GRUB for BIOS and shim + signed GRUB for UEFI.
//! 5. `disk.rs`: the GPT layout; each filesystem made as a file and copied into the disk.
//!
//! The raw disk is then written as qcow2 (by oxvirt-images) or moved as it is. Every external program
//! is run through `tools.rs`, which names the Debian package of a missing one.

mod bootloader;
mod customize;
mod disk;
pub(crate) use disk::data_ranges;
mod rootfs;
mod template;
mod tools;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use oxvirt_images::ops::{convert, ConvertOptions};
use oxvirt_images::{parse_size, Format, Image, OpenOptions};

use disk::{FilesystemIds, Layout};
use template::Template;

#[derive(Args, Debug)]
#[command(
    after_long_help = "Example: oxvirt builder debian-12 -o debian.qcow2 --size 8G \
                             --root-password password:secret --ssh-inject ~/.ssh/id_ed25519.pub"
)]
pub struct BuilderArgs {
    /// The template to build (see --list).
    #[arg(required_unless_present = "list")]
    template: Option<String>,
    /// List the templates and exit.
    #[arg(long)]
    list: bool,
    /// The image file to write (refused if it exists, unless --force).
    #[arg(
        short = 'o',
        long,
        value_name = "FILE",
        required_unless_present = "list"
    )]
    output: Option<PathBuf>,
    /// Replace an existing output file.
    #[arg(long)]
    force: bool,
    /// The output image's format.
    #[arg(long, value_enum, default_value_t = ImageFormat::Qcow2)]
    format: ImageFormat,
    /// The disk's size (the root filesystem fills it).
    #[arg(long, default_value = "4G")]
    size: String,
    /// root's password: password:PASSWORD, file:FILE (its first line), random (printed once),
    /// or disabled (no password login).
    #[arg(long, value_name = "SELECTOR", default_value = "random")]
    root_password: String,
    /// A public key file to add to root's authorized_keys (may be repeated).
    #[arg(long, value_name = "KEYFILE")]
    ssh_inject: Vec<PathBuf>,
    /// More Debian packages to install (comma-separated, may be repeated).
    #[arg(long, value_name = "PKG,...", value_delimiter = ',')]
    install: Vec<String>,
    /// The guest's hostname (cloud-init's meta-data replaces it when the guest has one).
    #[arg(long, default_value = "debian")]
    hostname: String,
    /// Which firmware the image boots under.
    #[arg(long, value_enum, default_value_t = Firmware::Both)]
    firmware: Firmware,
    /// Where the template's root filesystem tarballs are cached.
    #[arg(
        long,
        env = "OXVIRT_BUILDER_CACHE",
        default_value = "/var/cache/oxvirt/builder"
    )]
    cache: PathBuf,
    /// Make the template's root filesystem again even if it is cached.
    #[arg(long)]
    no_cache: bool,
    /// Where the work directory goes (it needs room for the root filesystem twice).
    #[arg(long, env = "TMPDIR", default_value = "/var/tmp")]
    tmpdir: PathBuf,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ImageFormat {
    Qcow2,
    Raw,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Firmware {
    Bios,
    Uefi,
    Both,
}

/// What root's password becomes.
#[derive(Debug, PartialEq, Eq)]
enum RootPassword {
    Set(String),
    Random,
    Disabled,
}

impl RootPassword {
    fn parse(selector: &str) -> anyhow::Result<RootPassword> {
        let password = match selector.split_once(':') {
            Some(("password", password)) => password.to_string(),
            Some(("file", file)) => std::fs::read_to_string(file)
                .with_context(|| format!("--root-password: cannot read {file}"))?
                .lines()
                .next()
                .unwrap_or_default()
                .to_string(),
            None if selector == "random" => return Ok(RootPassword::Random),
            None if selector == "disabled" => return Ok(RootPassword::Disabled),
            _ => bail!(
                "--root-password '{selector}': use password:PASSWORD, file:FILE, random or disabled"
            ),
        };
        if password.is_empty() || password.contains(['\n', ':']) {
            bail!("--root-password: the password must be one line, not empty, without ':'");
        }
        Ok(RootPassword::Set(password))
    }
}

/// Everything the command line asks, checked before any work starts.
struct Request {
    template: &'static Template,
    output: PathBuf,
    format: Format,
    size: u64,
    root_password: RootPassword,
    ssh_keys: Vec<(PathBuf, String)>,
    install: Vec<String>,
    hostname: String,
    firmware: Firmware,
}

impl Request {
    fn from_args(args: &BuilderArgs) -> anyhow::Result<Request> {
        let name = args.template.as_deref().unwrap_or_default();
        let template = template::find(name).with_context(|| {
            format!("no template '{name}' (`oxvirt builder --list` shows the templates)")
        })?;
        let output = args.output.clone().context("--output is required")?;
        if output.exists() && !args.force {
            bail!(
                "{} exists: choose another --output, or --force to replace it",
                output.display()
            );
        }
        let parent = match output.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !parent.is_dir() {
            bail!("the directory of {} does not exist", output.display());
        }
        let size = parse_size(&args.size).with_context(|| format!("--size {}", args.size))?;
        let ssh_keys = args
            .ssh_inject
            .iter()
            .map(|file| {
                let key = std::fs::read_to_string(file)
                    .with_context(|| format!("--ssh-inject: cannot read {}", file.display()))?;
                if !key.trim_start().starts_with("ssh-") && !key.trim_start().starts_with("ecdsa-")
                {
                    bail!(
                        "--ssh-inject: {} is not an OpenSSH public key",
                        file.display()
                    );
                }
                Ok((file.clone(), key))
            })
            .collect::<anyhow::Result<_>>()?;
        if !valid_hostname(&args.hostname) {
            bail!(
                "--hostname '{}': letters, digits and '-' only, 1 to 63 characters, not starting or ending with '-'",
                args.hostname
            );
        }
        for package in &args.install {
            if package.is_empty()
                || !package
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.:=~".contains(c))
            {
                bail!("--install: '{package}' is not a Debian package name");
            }
        }
        let request = Request {
            template,
            output,
            format: match args.format {
                ImageFormat::Qcow2 => Format::Qcow2,
                ImageFormat::Raw => Format::Raw,
            },
            size,
            root_password: RootPassword::parse(&args.root_password)?,
            ssh_keys,
            install: args.install.clone(),
            hostname: args.hostname.clone(),
            firmware: args.firmware,
        };
        // The layout refuses a disk too small for the boot partitions, before any download.
        request.layout()?;
        Ok(request)
    }

    fn bios(&self) -> bool {
        self.firmware != Firmware::Uefi
    }

    fn uefi(&self) -> bool {
        self.firmware != Firmware::Bios
    }

    fn layout(&self) -> anyhow::Result<Layout> {
        Layout::new(self.size, self.bios(), self.uefi())
            .with_context(|| format!("--size {}", self.size))
    }

    fn tools(&self) -> Vec<tools::Tool> {
        use tools::*;
        let mut needed = vec![MMDEBSTRAP, TAR, CHROOT, SFDISK, MKE2FS];
        if self.bios() {
            needed.extend([GRUB_BIOS_SETUP, LOSETUP, MOUNT, UMOUNT]);
        }
        if self.uefi() {
            needed.extend([MKFS_VFAT, MMD, MCOPY]);
        }
        if !self.install.is_empty() {
            needed.extend([MOUNT, UMOUNT]);
        }
        needed
    }
}

fn valid_hostname(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

pub fn run(args: BuilderArgs) -> anyhow::Result<()> {
    if args.list {
        print!("{}", template::list());
        return Ok(());
    }
    let request = Request::from_args(&args)?;
    tools::require(&request.tools())?;
    if !rustix::process::geteuid().is_root() {
        bail!("oxvirt builder must run as root (it installs packages into a tree and mounts a scratch filesystem)");
    }
    let work = WorkDir::new(&args.tmpdir)?;
    let progress = Steps::new();
    build(&request, &args, &work.path, &progress)?;
    progress.finish();
    summary(&request)
}

fn build(request: &Request, args: &BuilderArgs, work: &Path, steps: &Steps) -> anyhow::Result<()> {
    let template = request.template;
    steps.step(&format!(
        "Getting {}'s root filesystem (cached in {})",
        template.name,
        args.cache.display()
    ));
    let (tarball, cached) = rootfs::tarball(template, &args.cache, args.no_cache)?;
    steps.step(if cached {
        "Unpacking the cached root filesystem"
    } else {
        "Unpacking the new root filesystem"
    });
    let root = work.join("root");
    std::fs::create_dir(&root)?;
    rootfs::unpack(&tarball, &root)?;

    steps.step("Setting the image's identity, hostname and filesystems");
    let ids = FilesystemIds::new(request.uefi());
    customize::prepare(&root, template, &ids, &request.hostname)?;
    if !request.install.is_empty() {
        steps.step(&format!("Installing {}", request.install.join(", ")));
        customize::install_packages(&root, &request.install)?;
    }
    steps.step("Setting passwords");
    match &request.root_password {
        RootPassword::Set(password) => customize::set_root_password(&root, password)?,
        RootPassword::Random => {
            let password = random_password()?;
            customize::set_root_password(&root, &password)?;
            steps.say(&format!(
                "oxvirt builder: Setting random password of root to {password}"
            ));
        }
        RootPassword::Disabled => {}
    }
    if !request.ssh_keys.is_empty() {
        steps.step("Injecting SSH keys for root");
        customize::inject_ssh_keys(&root, &request.ssh_keys)?;
    }

    steps.step("Installing the bootloader's files");
    bootloader::write_grub_cfg(
        &root,
        &ids.root_uuid,
        &format!("Debian GNU/Linux ({})", template.suite),
    )?;
    let bios_images = if request.bios() {
        Some(bootloader::prepare_bios(&root, &ids.root_uuid, work)?)
    } else {
        None
    };

    let layout = request.layout()?;
    let needed = tree_size(&root)?;
    // ext4's metadata and reserved blocks, and room to boot and log.
    if needed + needed / 4 + (128 << 20) > layout.root.size {
        bail!(
            "--size {}: too small, the root filesystem alone needs about {} MiB",
            args.size,
            (needed + needed / 4 + (128 << 20) + (128 << 20)) >> 20
        );
    }
    steps.step("Making the disk and its filesystems");
    let raw = work.join("disk.raw");
    disk::partition(&raw, &layout)?;
    let root_image = work.join("root.ext4");
    disk::make_root_filesystem(&root_image, layout.root.size, &root, &ids)?;
    disk::copy_into(&root_image, &raw, layout.root)?;
    std::fs::remove_file(&root_image)?;
    if let (Some(esp), Some(volume_id)) = (layout.esp, &ids.esp_volume_id) {
        let files = bootloader::efi_files(&root, &ids.root_uuid, work)?;
        let files: Vec<(&str, &Path)> = files.iter().map(|(t, s)| (*t, s.as_path())).collect();
        let esp_image = work.join("esp.vfat");
        disk::make_esp(&esp_image, esp.size, volume_id, &files)?;
        disk::copy_into(&esp_image, &raw, esp)?;
    }
    if let Some(images) = bios_images {
        steps.step("Installing GRUB for BIOS");
        bootloader::install_bios(&raw, &images, work)?;
    }
    write_output(request, &raw, steps)
}

/// Writes the finished raw disk to the output: moved when it is to stay raw and the output is on
/// the same filesystem, else copied by oxvirt-images (to qcow2, or raw keeping the holes). A partial
/// output never remains.
fn write_output(request: &Request, raw: &Path, steps: &Steps) -> anyhow::Result<()> {
    let partial = request.output.with_extension("oxvirt-partial");
    let result = (|| -> anyhow::Result<()> {
        let format = request.format;
        steps.step(&format!("Writing the {format} image"));
        let moved = format == Format::Raw && std::fs::rename(raw, &partial).is_ok();
        if !moved {
            let mut source = Image::open(
                raw,
                &OpenOptions {
                    format: Some(Format::Raw),
                    ..OpenOptions::default()
                },
            )?;
            let bar = steps.bytes_bar();
            convert(
                &mut source,
                &partial,
                &ConvertOptions {
                    format,
                    // qemu-img's default cluster size; raw has no clusters.
                    cluster_size: 65536,
                    overwrite: true,
                },
                &mut |done, total| {
                    bar.set_length(total);
                    bar.set_position(done);
                },
            )?;
            bar.finish_and_clear();
        }
        std::fs::rename(&partial, &request.output)
            .with_context(|| format!("cannot write {}", request.output.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

fn summary(request: &Request) -> anyhow::Result<()> {
    let size = request.size as f64 / (1u64 << 30) as f64;
    println!("{:>30}: {}", "Output file", request.output.display());
    println!("{:>30}: {size:.1}G", "Output size");
    println!("{:>30}: {}", "Output format", request.format);
    println!(
        "{:>30}: {}",
        "Boots under",
        match request.firmware {
            Firmware::Bios => "BIOS",
            Firmware::Uefi => "UEFI (Secure Boot too)",
            Firmware::Both => "BIOS and UEFI (Secure Boot too)",
        }
    );
    Ok(())
}

/// 16 letters and digits from the kernel's random source.
fn random_password() -> anyhow::Result<String> {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 64];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom")?;
    // Rejection sampling keeps every character equally likely.
    let limit = 256 - 256 % ALPHABET.len();
    let password: String = bytes
        .iter()
        .filter(|&&b| (b as usize) < limit)
        .take(16)
        .map(|&b| ALPHABET[b as usize % ALPHABET.len()] as char)
        .collect();
    if password.len() < 16 {
        bail!("not enough random bytes for a password");
    }
    Ok(password)
}

/// The bytes the files of a tree take, rounded up to 4 KiB blocks (links not followed).
fn tree_size(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += meta.len().div_ceil(4096) * 4096;
        if meta.is_dir() {
            total += tree_size(&entry.path())?;
        }
    }
    Ok(total)
}

/// The work directory: removed at the end, unless something is still mounted under it (removing
/// a tree with the host's /dev bound into it would remove the host's device nodes).
struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    fn new(parent: &Path) -> anyhow::Result<WorkDir> {
        let dir = tempfile::Builder::new()
            .prefix("oxvirt-builder-")
            .tempdir_in(parent)
            .with_context(|| format!("cannot make a work directory in {}", parent.display()))?;
        Ok(WorkDir { path: dir.keep() })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let prefix = self.path.to_string_lossy().into_owned();
        let busy = mounts
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .any(|mount_point| mount_point.starts_with(&prefix));
        if busy || mounts.is_empty() {
            eprintln!(
                "warning: {} still has something mounted in it: not removed",
                self.path.display()
            );
        } else if let Err(err) = std::fs::remove_dir_all(&self.path) {
            eprintln!("warning: cannot remove {}: {err}", self.path.display());
        }
    }
}

/// virt-builder's step lines (`[  12.3] Step`), with a spinner on a terminal.
struct Steps {
    start: Instant,
    spinner: ProgressBar,
}

impl Steps {
    fn new() -> Steps {
        let spinner = ProgressBar::new_spinner();
        spinner.set_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        spinner.enable_steady_tick(Duration::from_millis(200));
        Steps {
            start: Instant::now(),
            spinner,
        }
    }

    fn step(&self, what: &str) {
        let elapsed = self.start.elapsed().as_secs_f64();
        self.say(&format!("[{elapsed:>6.1}] {what}"));
        self.spinner.set_message(what.to_string());
    }

    fn say(&self, line: &str) {
        self.spinner.suspend(|| println!("{line}"));
    }

    fn bytes_bar(&self) -> ProgressBar {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} ({eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    }

    fn finish(&self) {
        self.spinner.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_password_selectors_parse_as_virt_builder_spells_them() {
        assert_eq!(
            RootPassword::parse("password:s3cret").unwrap(),
            RootPassword::Set("s3cret".into())
        );
        assert_eq!(RootPassword::parse("random").unwrap(), RootPassword::Random);
        assert_eq!(
            RootPassword::parse("disabled").unwrap(),
            RootPassword::Disabled
        );
        for bad in [
            "password:",
            "s3cret",
            "password:a:b",
            "file:/nonexistent/oxvirt",
        ] {
            assert!(RootPassword::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn random_passwords_are_sixteen_characters_and_differ() {
        let a = random_password().unwrap();
        let b = random_password().unwrap();
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }

    #[test]
    fn hostnames_follow_rfc_1123_labels() {
        assert!(valid_hostname("web-1"));
        for bad in ["", "-web", "web-", "a.b", "we b", &"x".repeat(64)] {
            assert!(!valid_hostname(bad), "{bad}");
        }
    }
}
