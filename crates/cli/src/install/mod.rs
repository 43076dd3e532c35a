//! `oxvirt install`: virt-install's job. It builds the domain XML virt-install 4.1 builds for the
//! same arguments (xml.rs, osinfo.rs), creates the disks it is asked to create (disks.rs), the
//! cloud-init seed (cloudinit.rs) and the kernel of a `--location` tree (media.rs), defines and
//! starts the domain, and attaches to its serial console or says where the graphical one is
//! (flow.rs). When anything fails, or on Ctrl-C while it waits, it removes what it created.

mod cloudinit;
mod disks;
mod flow;
mod media;
mod options;
mod osinfo;
mod xml;

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use oxvirt_api::Client;

use options::{CpuOption, GraphicsOption, NetworkOption};
use xml::{InstallMedia, Plan, XmlDisk};

/// virt-install's flags (see `oxvirt install --help`; virt-install(1) documents their grammar).
#[derive(Args, Debug, Clone, Default)]
pub struct InstallArgs {
    /// Name of the new domain.
    #[arg(short = 'n', long, required_unless_present = "os_variant")]
    pub name: Option<String>,
    /// Memory in MiB (also `memory=N`).
    #[arg(long, alias = "ram", short = 'r', value_name = "MIB")]
    pub memory: Option<String>,
    /// Virtual CPUs: N[,maxvcpus=M].
    #[arg(long)]
    pub vcpus: Option<String>,
    /// host-passthrough (the default), host-model, or MODEL[,+feature][,-feature].
    #[arg(long)]
    pub cpu: Option<String>,
    /// Machine type (default: q35 for OSes that support it, else i440fx).
    #[arg(long)]
    pub machine: Option<String>,
    /// A disk: path=FILE|vol=POOL/VOL|pool=POOL, size=GIB, format=raw|qcow2,
    /// bus=virtio|sata|scsi|ide, cache=MODE, io=MODE, device=disk|cdrom. Repeatable.
    #[arg(long)]
    pub disk: Vec<String>,
    /// Install from this ISO, booted from a CD-ROM first.
    #[arg(short = 'c', long, value_name = "ISO")]
    pub cdrom: Option<String>,
    /// Install from a tree (directory or ISO): its kernel and initrd boot the installer.
    #[arg(short = 'l', long, value_name = "TREE")]
    pub location: Option<String>,
    /// Kernel command line of a --location install.
    #[arg(short = 'x', long, value_name = "ARGS", requires = "location")]
    pub extra_args: Option<String>,
    /// Boot the first disk as it is (no install phase).
    #[arg(long)]
    pub import: bool,
    /// uefi, boot devices (hd,cdrom,network), kernel=,initrd=,kernel_args=.
    #[arg(long)]
    pub boot: Option<String>,
    /// vnc[,listen=ADDR][,port=N][,password=P], spice[,...] or none (default spice).
    #[arg(long)]
    pub graphics: Option<String>,
    /// network=NAME, bridge=NAME (or bridge:NAME), none; model=, mac=. Repeatable.
    #[arg(short = 'w', long)]
    pub network: Vec<String>,
    /// The guest OS (see `--osinfo list`); `list` lists the known names.
    #[arg(long, alias = "osinfo", value_name = "NAME")]
    pub os_variant: Option<String>,
    /// The console device (pty[,target_type=serial|virtio]); bare: attach to it (the default).
    #[arg(long, num_args = 0..=1, default_missing_value = "", value_name = "SPEC")]
    pub console: Option<String>,
    /// Don't attach to a console; return once the domain runs.
    #[arg(long)]
    pub noautoconsole: bool,
    /// Wait this many minutes for the install to end (negative: no limit; 0: don't wait).
    #[arg(long, value_name = "MINUTES", allow_negative_numbers = true)]
    pub wait: Option<i64>,
    /// NoCloud seed: user-data=FILE,meta-data=FILE,network-config=FILE,
    /// root-password-generate=on,root-password-file=FILE,ssh-key=FILE,disable=on.
    #[arg(long, num_args = 0..=1, default_missing_value = "", value_name = "OPTIONS")]
    pub cloud_init: Option<String>,
    /// Print the domain XML (install phase first, when there is one) and create nothing.
    #[arg(long)]
    pub print_xml: bool,
    /// Check everything, create nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The domain's UUID (default: a random one).
    #[arg(long)]
    pub uuid: Option<String>,
    /// Where seed ISOs and --location kernels go (default /var/lib/oxvirt/boot).
    #[arg(
        long,
        env = "OXVIRT_BOOT_DIR",
        default_value = "/var/lib/oxvirt/boot",
        hide = true
    )]
    pub boot_dir: PathBuf,
}

/// Entry point.
pub fn run(client: &Client, args: InstallArgs) -> anyhow::Result<()> {
    if args.os_variant.as_deref() == Some("list") {
        print!("{}", osinfo::list());
        return Ok(());
    }
    flow::run(client, args)
}

/// Random bytes from the kernel.
fn random_bytes<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut file| std::io::Read::read_exact(&mut file, &mut bytes))
        .context("cannot read /dev/urandom")?;
    Ok(bytes)
}

fn random_uuid() -> anyhow::Result<String> {
    let mut b: [u8; 16] = random_bytes()?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|byte| format!("{byte:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

fn random_mac() -> anyhow::Result<String> {
    let b: [u8; 3] = random_bytes()?;
    Ok(format!("52:54:00:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2]))
}

fn valid_uuid(uuid: &str) -> bool {
    let groups: Vec<&str> = uuid.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Paths of the files an install makes outside pools.
#[derive(Debug, Clone, Default)]
pub struct BootFiles {
    pub seed: Option<PathBuf>,
    pub kernel: Option<(PathBuf, PathBuf, &'static str, &'static str)>,
}

/// Checks the arguments and builds the plan, creating nothing. `client` None: no daemon is
/// asked (`--print-xml` of what needs none).
async fn plan(
    client: Option<&Client>,
    args: &InstallArgs,
) -> anyhow::Result<(
    Plan,
    Vec<disks::ResolvedDisk>,
    BootFiles,
    Option<cloudinit::Seed>,
)> {
    let name = args.name.clone().context("--name is required")?;
    if name.is_empty() || name.contains('/') {
        bail!("--name '{name}': not a valid domain name");
    }
    // One line each, checked here rather than by clap (whose usage text is several lines).
    if args.import && args.cdrom.is_some() {
        bail!("--cdrom and --import cannot be used together");
    }
    if args.import && args.location.is_some() {
        bail!("--location and --import cannot be used together");
    }
    if args.cdrom.is_some() && args.location.is_some() {
        bail!("--cdrom and --location cannot be used together");
    }
    let location = args
        .location
        .as_deref()
        .map(media::Location::open)
        .transpose()?;
    let os_name = match (&args.os_variant, &location) {
        (Some(name), _) => name.clone(),
        (None, Some(tree)) => tree.detect_os()?.context(
            "--os-variant/--osinfo OS name is required, but no value was set or detected (see `oxvirt install --osinfo list`)",
        )?,
        (None, None) => bail!(
            "--os-variant/--osinfo OS name is required, but no value was set or detected; `--os-variant generic` if the OS is not known (see `oxvirt install --osinfo list`)"
        ),
    };
    let os = osinfo::lookup(&os_name)?;
    if let Some(iso) = &args.cdrom {
        media::check_iso(iso)?;
    }
    let uuid = match &args.uuid {
        Some(uuid) if valid_uuid(uuid) => uuid.to_ascii_lowercase(),
        Some(uuid) => bail!("--uuid {uuid}: not a UUID"),
        None => random_uuid()?,
    };
    let memory_mib = match &args.memory {
        Some(memory) => options::parse_memory(memory)?,
        None => bail!("--memory amount in MiB is required"),
    };
    let vcpus = match &args.vcpus {
        Some(vcpus) => options::parse_vcpus(vcpus)?,
        None => (1, None),
    };
    let cpu = match &args.cpu {
        Some(cpu) => options::parse_cpu(cpu)?,
        None => CpuOption::HostPassthrough,
    };
    let boot = args
        .boot
        .as_deref()
        .map(options::parse_boot)
        .transpose()?
        .unwrap_or_default();
    let graphics = match &args.graphics {
        Some(graphics) => options::parse_graphics(graphics)?,
        None => GraphicsOption::Spice {
            listen: None,
            port: None,
            password: None,
        },
    };
    let console_target = match args.console.as_deref() {
        Some("") | None => None,
        Some(spec) => options::parse_console(spec)?,
    };
    let machine = match &args.machine {
        Some(machine) => machine.clone(),
        None if os.q35() => "q35".to_string(),
        None => xml::DEFAULT_PC_MACHINE.to_string(),
    };
    let mut interfaces = Vec::new();
    let networks = if args.network.is_empty() {
        vec!["network=default".to_string()]
    } else {
        args.network.clone()
    };
    for network in &networks {
        let parsed = options::parse_network(network)?;
        let mac = match &parsed {
            NetworkOption::None => continue,
            NetworkOption::Network { mac, .. } | NetworkOption::Bridge { mac, .. } => mac.clone(),
        };
        let mac = match mac {
            Some(mac) => mac,
            None => random_mac()?,
        };
        interfaces.push((parsed, mac));
    }
    let mut plan = Plan {
        name: name.clone(),
        uuid: uuid.clone(),
        os,
        memory_mib,
        vcpus,
        cpu,
        machine,
        uefi: boot.uefi || os.needs_efi,
        disks: Vec::new(),
        interfaces,
        graphics,
        console_target,
        boot_devices: boot.devices.clone(),
        direct_kernel: (boot.kernel.is_some() || boot.initrd.is_some()).then(|| {
            (
                boot.kernel.clone(),
                boot.initrd.clone(),
                boot.kernel_args.clone(),
            )
        }),
        media: InstallMedia::None,
        seed: None,
    };
    if args.disk.is_empty() && args.import {
        bail!("--import needs a --disk to boot");
    }
    let mut resolved = Vec::new();
    let mut targets = xml::Targets::default();
    let mut taken = Vec::new();
    for spec in &args.disk {
        let disk = options::parse_disk(spec)?;
        let bus = disk.bus.clone().unwrap_or_else(|| {
            if disk.device == "cdrom" {
                plan.cdrom_bus().to_string()
            } else if os.virtio {
                "virtio".to_string()
            } else {
                plan.cdrom_bus().to_string()
            }
        });
        let found = disks::resolve(client, &disk, &name, &taken).await?;
        taken.push(found.path.clone());
        plan.disks.push(XmlDisk {
            device: disk.device.clone(),
            path: Some(found.path.clone()),
            format: Some(found.format.clone()),
            target: targets.next(&bus),
            bus,
            cache: disk.cache.clone(),
            io: disk.io.clone(),
        });
        resolved.push(found);
    }
    let mut files = BootFiles::default();
    if let Some(iso) = &args.cdrom {
        plan.media = InstallMedia::Cdrom(iso.clone());
    }
    if let Some(tree) = &location {
        let (kernel, initrd) = tree.find_kernel()?;
        let kernel_path = args.boot_dir.join(format!("oxvirt-{name}-vmlinuz"));
        let initrd_path = args.boot_dir.join(format!("oxvirt-{name}-initrd"));
        plan.media = InstallMedia::Kernel {
            kernel: kernel_path.to_string_lossy().into_owned(),
            initrd: initrd_path.to_string_lossy().into_owned(),
            args: args.extra_args.clone(),
        };
        files.kernel = Some((kernel_path, initrd_path, kernel, initrd));
    }
    let seed = match &args.cloud_init {
        Some(spec) => {
            let option = options::parse_cloud_init(spec)?;
            let seed = cloudinit::prepare(&option, &name, &uuid)?;
            let path = args.boot_dir.join(format!("oxvirt-{name}-cloudinit.iso"));
            plan.seed = Some(path.to_string_lossy().into_owned());
            files.seed = Some(path);
            Some(seed)
        }
        None => None,
    };
    Ok((plan, resolved, files, seed))
}

pub use flow::finish;
