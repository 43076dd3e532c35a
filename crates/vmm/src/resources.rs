//! Everything of the host a VM uses, opened at once before anything else: /dev/kvm, the boot
//! files, the disks (and their backing files), the TAPs, the console and API sockets, the saved
//! state to restore, and guest RAM (whose size is checked against /proc/meminfo).
//!
//! This is what lets the VMM jail itself ([`crate::jail`]) before it sets up the VM: once these
//! are open, nothing it does needs a path of the host, a device node or a privilege, so it can
//! run as an unprivileged user in an empty root. Nothing on the host is relabelled for it: its
//! files keep their owners and modes, and it reaches them through these descriptors only. The
//! same path is taken without a jail, so both run the same code.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use anyhow::{anyhow, Context};
use kvm_ioctls::Kvm;
use oxvirt_images::{CacheMode, Disk, DiskOptions};
use oxvirt_virtio::net::Tap;
use oxvirt_virtio::GuestRam;

use crate::boot::BootFiles;
use crate::devices::serial::ConsoleEndpoint;
use crate::memory::{self, MemoryOptions};
use crate::protocol::{DiskCache, DiskConfig, VmConfig};

/// The host's part of one VM, opened.
pub struct HostResources {
    pub kvm: Kvm,
    pub boot: BootFiles,
    /// In `VmConfig::disks` order.
    pub disks: Vec<Disk>,
    /// In `VmConfig::nets` order.
    pub taps: Vec<Tap>,
    pub console: ConsoleEndpoint,
    pub api: Option<ApiSocket>,
    /// The file `VmConfig::restore` names (read after the jail: its contents come from an
    /// earlier run of the guest, so they are parsed by the confined VMM only).
    pub restore: Option<File>,
    pub memory: GuestRam,
}

impl HostResources {
    /// Opens everything `config` names; the first failure names what could not be opened.
    pub fn open(config: &VmConfig) -> anyhow::Result<HostResources> {
        let kvm = open_kvm()?;
        let boot = BootFiles::open(&config.kernel, config.initrd.as_deref())?;
        let disks = config
            .disks
            .iter()
            .map(open_disk)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let taps = config
            .nets
            .iter()
            .map(|net| Tap::open(&net.tap))
            .collect::<Result<Vec<_>, _>>()?;
        let console = ConsoleEndpoint::open(&config.serial)?;
        let api = match &config.api_socket {
            Some(path) => Some(
                ApiSocket::bind(path)
                    .map_err(|e| anyhow!("cannot listen on API socket {}: {e}", path.display()))?,
            ),
            None => None,
        };
        let restore = match &config.restore {
            Some(source) => Some(File::open(&source.path).with_context(|| {
                format!("cannot open the saved state {}", source.path.display())
            })?),
            None => None,
        };
        let memory = memory::create_guest_memory(
            config.memory.size_mib,
            MemoryOptions {
                hugepages: config.memory.hugepages,
                share_pages: config.memory.share_pages,
            },
        )?;
        Ok(HostResources {
            kvm,
            boot,
            disks,
            taps,
            console,
            api,
            restore,
            memory,
        })
    }
}

pub(crate) fn open_kvm() -> anyhow::Result<Kvm> {
    Kvm::new().map_err(|e| {
        anyhow!("cannot open /dev/kvm: {e} (is the kvm module loaded and accessible?)")
    })
}

/// Opens a disk image (and its backing chain, which must be the configured one) as
/// `oxvirt-images` opens it for a VMM.
fn open_disk(disk: &DiskConfig) -> anyhow::Result<Disk> {
    check_backing_chain(disk)?;
    let options = DiskOptions {
        format: disk.format,
        readonly: disk.readonly,
        cache: match disk.cache {
            DiskCache::None => CacheMode::Direct,
            DiskCache::Writeback => CacheMode::Writeback,
        },
    };
    Disk::open(&disk.path, options).with_context(|| format!("disk {}", disk.path.display()))
}

/// The API socket, bound at its path but not listening yet: a client's connect is refused until
/// [`ApiSocket::listen`], once the VM is built (restoring a large state takes a while), so a
/// manager waiting for the API knows the VM is ready when it answers.
pub struct ApiSocket(OwnedFd);

impl ApiSocket {
    /// Binds `path`; a stale socket of a previous run is replaced only if nobody answers.
    pub fn bind(path: &Path) -> std::io::Result<ApiSocket> {
        use std::os::unix::ffi::OsStrExt as _;
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another VMM is listening there",
                ));
            }
            std::fs::remove_file(path)?;
        }
        // SAFETY: all-zero is a valid sockaddr_un (its family is set below).
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let bytes = path.as_os_str().as_bytes();
        if bytes.len() >= addr.sun_path.len() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the path is too long for a Unix socket",
            ));
        }
        for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
            *dst = *src as libc::c_char;
        }
        // SAFETY: socket takes plain integers and returns a new descriptor (or -1).
        let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: bind reads `addr`, a valid sockaddr_un of the size given.
        let rc = unsafe {
            libc::bind(
                socket.as_raw_fd(),
                (&addr as *const libc::sockaddr_un).cast(),
                std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(ApiSocket(socket))
    }

    /// Starts accepting connections.
    pub fn listen(self) -> std::io::Result<UnixListener> {
        // SAFETY: listen takes a descriptor we own and a backlog.
        if unsafe { libc::listen(self.0.as_raw_fd(), 128) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(UnixListener::from(self.0))
    }
}

/// A disk whose config names its backing chain opens only if the image's headers name exactly
/// that chain: the images opened are the ones its manager resolved (and checked), not whatever
/// a header says now. (oxvirt-images then follows the same headers, with stated formats only.)
fn check_backing_chain(disk: &DiskConfig) -> anyhow::Result<()> {
    let Some(expected) = &disk.backing_chain else {
        return Ok(());
    };
    let found = oxvirt_images::backing_chain(&disk.path, disk.format)
        .with_context(|| format!("disk {}", disk.path.display()))?;
    // The first layer is the image itself.
    let found = found.get(1..).unwrap_or_default();
    let same_file = |a: &Path, b: &Path| {
        a == b
            || matches!(
                (std::fs::canonicalize(a), std::fs::canonicalize(b)),
                (Ok(a), Ok(b)) if a == b
            )
    };
    for index in 0..found.len().max(expected.len()) {
        let describe = |path: &Path, format: oxvirt_images::Format| {
            format!("{} ({})", path.display(), format.name())
        };
        let (f, e) = (found.get(index), expected.get(index));
        let matches = match (f, e) {
            (Some(f), Some(e)) => f.format == e.format && same_file(&f.path, &e.path),
            _ => false,
        };
        if !matches {
            anyhow::bail!(
                "disk {}: its backing chain is not the configured one: image {} below it is {}, the config says {}",
                disk.path.display(),
                index + 1,
                f.map_or("missing".to_string(), |f| describe(&f.path, f.format)),
                e.map_or("nothing".to_string(), |e| describe(&e.path, e.format)),
            );
        }
    }
    Ok(())
}
