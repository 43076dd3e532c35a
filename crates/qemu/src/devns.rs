//! A private mount namespace for a sandboxed QEMU, with a minimal /dev (docs/security.md), as
//! libvirt's `namespaces` option makes one: QEMU sees the host's file system as it is (Landlock
//! and its user's rights narrow that), but in /dev only the nodes it needs, so a QEMU taken over
//! by its guest cannot even name the host's disks, terminals or other devices.
//!
//! The plan ([`PrivateDev::plan`]) is made before the fork, with every path a C string; the
//! forked child carries it out with system calls only ([`PrivateDev::enter`]): a new mount
//! namespace whose mounts no longer propagate to the host, a tmpfs at the run directory's
//! staging point filled with bind mounts of the host's nodes, then moved onto /dev. Bind mounts,
//! not new nodes: a bind mount is the host's own inode, so the Landlock rules made for the
//! host's /dev (which name inodes) hold for it unchanged.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use oxvirt_domain::{Domain, HostDevSource, MemorySource};

use crate::cmdline::HUGEPAGES_MOUNT;
use crate::{Accel, QemuError, RunPaths};

/// The device nodes every QEMU gets (those the host has): the C library's and QEMU's own. No
/// /dev/ptmx nor /dev/pts (libvirt gives both): QEMU makes no terminal here, as oxvirt serves
/// the one `<serial type='pty'>` as the console socket and refuses pty channels.
const BASE_NODES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];

/// The directories every QEMU gets (those the host has): POSIX shared memory.
const BASE_DIRS: &[&str] = &["/dev/shm"];

/// The links a /dev has (as libvirt's and systemd's make them).
const LINKS: &[(&str, &str)] = &[
    ("/proc/self/fd", "fd"),
    ("/proc/self/fd/0", "stdin"),
    ("/proc/self/fd/1", "stdout"),
    ("/proc/self/fd/2", "stderr"),
];

/// What the child does to make its /dev, in order, every path prepared.
#[derive(Debug)]
enum Step {
    /// Make this directory (under the staging point).
    Dir(CString),
    /// Bind-mount `source` (the host's) on `target` (under the staging point), made first as an
    /// empty directory or file.
    Bind {
        source: CString,
        target: CString,
        dir: bool,
    },
    /// `link` (under the staging point) pointing at `to`.
    Link { to: CString, link: CString },
}

/// The private /dev of one QEMU: made by [`PrivateDev::plan`] before the fork, entered by the
/// child ([`PrivateDev::enter`]).
#[derive(Debug)]
pub(crate) struct PrivateDev {
    /// Where the tmpfs is filled before it moves onto /dev: RUN/dev, root's.
    staging: CString,
    steps: Vec<Step>,
    /// The /dev paths it holds, for messages and tests.
    pub(crate) nodes: Vec<PathBuf>,
}

impl PrivateDev {
    /// The /dev QEMU needs for `domain` under `accel`: [`BASE_NODES`], [`BASE_DIRS`], /dev/kvm
    /// under KVM, /dev/vfio for PCI host devices and /dev/bus/usb for USB ones, /dev/hugepages
    /// for huge-page RAM, and every path under /dev the definition names (a block disk, an RNG
    /// source: the node it resolves to, at the path named). TAPs and vhost-net come as
    /// descriptors and need no node. Creates the staging directory in `run`.
    pub(crate) fn plan(
        domain: &Domain,
        run: &RunPaths,
        accel: Accel,
    ) -> Result<PrivateDev, QemuError> {
        let staging = run.dev_staging();
        std::fs::create_dir_all(&staging)
            .map_err(|err| QemuError::io(format!("creating {}", staging.display()), err))?;
        let mut wanted: Vec<(PathBuf, bool)> = BASE_NODES
            .iter()
            .chain(BASE_DIRS)
            .map(|path| (PathBuf::from(path), false))
            .collect();
        // Those below are checked before a start (the accelerator probe, the host devices'
        // and huge pages' checks) or QEMU names what it misses: none is required here.
        if accel == Accel::Kvm {
            wanted.push((PathBuf::from("/dev/kvm"), false));
        }
        for hostdev in &domain.devices.hostdevs {
            let dir = match hostdev.source {
                HostDevSource::Pci { .. } => "/dev/vfio",
                HostDevSource::Usb { .. } => "/dev/bus/usb",
            };
            wanted.push((PathBuf::from(dir), false));
        }
        let hugepages = domain
            .memory_backing
            .as_ref()
            .filter(|b| b.source != Some(MemorySource::Memfd))
            .is_some_and(|b| b.hugepages.is_some());
        if hugepages {
            wanted.push((PathBuf::from(HUGEPAGES_MOUNT), false));
        }
        for path in crate::confine::device_paths(domain) {
            wanted.push((path, true));
        }

        let mut plan = PrivateDev {
            staging: c_path(&staging)?,
            steps: Vec::new(),
            nodes: Vec::new(),
        };
        let mut dirs: Vec<PathBuf> = Vec::new();
        let mut bound_dirs: Vec<PathBuf> = Vec::new();
        for (path, required) in wanted {
            // Once each; and what is inside a directory bound whole is there already.
            if plan.nodes.contains(&path) || bound_dirs.iter().any(|d| path.starts_with(d)) {
                continue;
            }
            let Ok(relative) = path.strip_prefix("/dev") else {
                continue;
            };
            // The node the name leads to on the host (a /dev/disk/by-id link: its disk).
            let source = match std::fs::canonicalize(&path) {
                Ok(source) => source,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound && !required => continue,
                Err(err) => {
                    return Err(QemuError::io(
                        format!("finding {} for QEMU's /dev", path.display()),
                        err,
                    ))
                }
            };
            let dir = source.is_dir();
            // Its parents inside the new /dev, each once, outermost first.
            let mut parents: Vec<&Path> = relative
                .ancestors()
                .skip(1)
                .filter(|p| !p.as_os_str().is_empty())
                .collect();
            parents.reverse();
            for parent in parents {
                if !dirs.iter().any(|d| d == parent) {
                    dirs.push(parent.to_path_buf());
                    plan.steps.push(Step::Dir(c_path(&staging.join(parent))?));
                }
            }
            if dir {
                dirs.push(relative.to_path_buf());
                bound_dirs.push(path.clone());
            }
            plan.steps.push(Step::Bind {
                source: c_path(&source)?,
                target: c_path(&staging.join(relative))?,
                dir,
            });
            plan.nodes.push(path);
        }
        for (to, link) in LINKS {
            plan.steps.push(Step::Link {
                to: c_path(Path::new(to))?,
                link: c_path(&staging.join(link))?,
            });
        }
        Ok(plan)
    }

    /// Puts the calling process into a mount namespace of its own whose /dev is this plan's.
    /// Meant for the forked child before it execs QEMU (and before it gives up root): only
    /// system calls on the prepared paths, no allocation.
    pub(crate) fn enter(&self) -> std::io::Result<()> {
        // SAFETY: every call below is a system call on NUL-terminated strings that live in
        // `self` (or are literals) across the call, and integer flags.
        unsafe {
            check(libc::unshare(libc::CLONE_NEWNS))?;
            // Nothing mounted from here on reaches the host (a shared / would carry it there),
            // while the host's later mounts still show up here.
            check(libc::mount(
                c"none".as_ptr(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_SLAVE,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                c"tmpfs".as_ptr(),
                self.staging.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NOEXEC,
                c"mode=755,size=65536".as_ptr().cast(),
            ))?;
            for step in &self.steps {
                match step {
                    Step::Dir(dir) => check(libc::mkdir(dir.as_ptr(), 0o755))?,
                    Step::Bind {
                        source,
                        target,
                        dir,
                    } => {
                        if *dir {
                            check(libc::mkdir(target.as_ptr(), 0o755))?;
                        } else {
                            let fd = libc::open(
                                target.as_ptr(),
                                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC,
                                0o600,
                            );
                            check(fd)?;
                            libc::close(fd);
                        }
                        let flags = if *dir {
                            libc::MS_BIND | libc::MS_REC
                        } else {
                            libc::MS_BIND
                        };
                        check(libc::mount(
                            source.as_ptr(),
                            target.as_ptr(),
                            std::ptr::null(),
                            flags,
                            std::ptr::null(),
                        ))?;
                    }
                    Step::Link { to, link } => check(libc::symlink(to.as_ptr(), link.as_ptr()))?,
                }
            }
            check(libc::mount(
                self.staging.as_ptr(),
                c"/dev".as_ptr(),
                std::ptr::null(),
                libc::MS_MOVE,
                std::ptr::null(),
            ))?;
        }
        Ok(())
    }
}

fn check(rc: libc::c_int) -> std::io::Result<()> {
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn c_path(path: &Path) -> Result<CString, QemuError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        QemuError::io(
            format!("preparing QEMU's /dev: {}", path.display()),
            std::io::Error::from(std::io::ErrorKind::InvalidInput),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(xml: &str, accel: Accel) -> (tempfile::TempDir, PrivateDev) {
        let domain = oxvirt_domain::parse_domain_xml(xml).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let run = RunPaths::new(dir.path());
        let plan = PrivateDev::plan(&domain, &run, accel).unwrap();
        (dir, plan)
    }

    #[test]
    fn the_plan_holds_the_base_nodes_and_what_the_definition_names_under_dev() {
        let xml = "<domain type='qemu'><name>v</name><memory>131072</memory>\
             <os><type>hvm</type></os><devices>\
             <disk type='block'><source dev='/dev/null'/><target dev='vda' bus='virtio'/></disk>\
             <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>\
             </devices></domain>";
        let (dir, plan) = plan_of(xml, Accel::Tcg);
        let nodes: Vec<&str> = plan.nodes.iter().filter_map(|p| p.to_str()).collect();
        // The host's own, each once; no /dev/kvm under TCG, no /dev/net/tun ever.
        for node in ["/dev/null", "/dev/zero", "/dev/urandom", "/dev/shm"] {
            assert_eq!(nodes.iter().filter(|n| **n == node).count(), 1, "{nodes:?}");
        }
        for absent in ["/dev/kvm", "/dev/net/tun", "/dev/ptmx", "/dev/sda"] {
            assert!(!nodes.contains(&absent), "{nodes:?}");
        }
        assert!(dir.path().join("dev").is_dir(), "the staging point is made");
        // A name that is missing on the host but required fails clearly.
        let missing = xml.replace("/dev/null'/>", "/dev/oxvirt-no-such-disk'/>");
        let domain = oxvirt_domain::parse_domain_xml(&missing).unwrap();
        let err = PrivateDev::plan(&domain, &RunPaths::new(dir.path()), Accel::Tcg).unwrap_err();
        assert!(
            err.to_string().contains("/dev/oxvirt-no-such-disk"),
            "{err}"
        );
    }
}
