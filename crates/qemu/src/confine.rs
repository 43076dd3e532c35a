//! Least privilege for QEMU (docs/security.md, "QEMU (qemu engine)").
//!
//! A sandboxed QEMU gets, from its first instruction on:
//! - `NoNewPrivs` (`prctl(PR_SET_NO_NEW_PRIVS)` before exec): nothing it execs can gain
//!   privileges, and the filters below need no privilege to stay;
//! - QEMU's own seccomp filter ([`SANDBOX_ARGS`]): no obsolete system calls, no set*uid, no
//!   fork/exec, no scheduler or priority changes (oxvirtd pins QEMU's threads from outside);
//! - where the kernel has Landlock, a file system reduced to what it needs
//!   ([`landlock_ruleset`]): the host's libraries and data read-only, a few device nodes, its
//!   run directory, and the files its definition names. Files it gets while it runs (a
//!   plugged disk, a snapshot overlay, a new medium) are handed to it open ([`blockdev_add`]);
//! - with a guest user ([`GuestUser`], oxvirtd's `qemu_user_range`), a uid and gid of its own
//!   and no supplementary groups but those of the device nodes it needs: it reaches only the
//!   files the daemon gave that user ([`guest_files`] lists them: libvirt's DAC model) and
//!   those every user may read;
//! - a mount namespace of its own whose /dev holds only the nodes it needs (`devns`): its
//!   TAPs, vhost-net and serial files come as descriptors, opened by oxvirtd.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use landlock::{
    make_bitflags, AccessFs, BitFlags, PathBeneath, Ruleset, RulesetAttr, RulesetCreated,
    RulesetCreatedAttr,
};
use oxvirt_domain::{DiskDevice, DiskType, Domain};
use serde_json::Value;

use crate::{QemuError, Qmp, RunPaths};

/// QEMU's seccomp sandbox as a sandboxed QEMU runs it. `resourcecontrol=deny` blocks
/// sched_setaffinity and setpriority inside QEMU: `<vcpupin>`, `<emulatorpin>` and
/// `<iothreadpin>` are applied by oxvirtd from outside, and QEMU's own `thread-context`
/// objects are not used. `spawn=deny` makes a QEMU that tries to run a program (a migration to
/// `exec:`) die of SIGSYS.
pub const SANDBOX_ARGS: [&str; 2] = [
    "-sandbox",
    "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
];

/// The user a sandboxed QEMU runs as: `uid`, used as its gid too (one per running guest),
/// with `groups` as its only supplementary groups (the group of /dev/kvm when it uses KVM).
/// `lock_memory`: QEMU locks the guest's memory (`<memoryBacking><locked/>`), so its
/// RLIMIT_MEMLOCK is lifted before it gives up root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestUser {
    pub uid: u32,
    pub groups: Vec<u32>,
    pub lock_memory: bool,
}

/// Sandboxes the calling process: meant for the forked child just before it execs QEMU, so it
/// only makes async-signal-safe system calls on data prepared before the fork. `user`: the
/// identity it takes first, while it still may (setgroups, setgid, setuid: QEMU's own `-runas`
/// would switch only after it has opened its files as root, and its seccomp filter with
/// `elevateprivileges=deny` forbids the switch anyway; descriptors it inherits, the macvtaps
/// and log pipes, stay usable across the switch). `ruleset`: the Landlock ruleset to enforce
/// ([`landlock_ruleset`]), if the kernel has Landlock (after the switch: it needs no privilege
/// once NoNewPrivs is set).
pub(crate) fn apply_in_child(
    user: Option<&GuestUser>,
    ruleset: Option<RulesetCreated>,
) -> std::io::Result<()> {
    if user.is_some_and(|user| user.lock_memory) {
        let unlimited = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: setrlimit reads a live rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    if let Some(user) = user {
        // SAFETY: setgroups reads `groups.len()` gids from a live slice; setgid and setuid
        // take integers. The real, effective and saved ids all change (we are root).
        unsafe {
            if libc::setgroups(user.groups.len(), user.groups.as_ptr()) != 0
                || libc::setgid(user.uid) != 0
                || libc::setuid(user.uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if let Some(ruleset) = ruleset {
        // The crate's restrict_self makes only prctl and landlock_restrict_self here, and its
        // error holds the errno (no allocation): fit for the forked child.
        if let Err(err) = ruleset.restrict_self() {
            return Err(match err {
                landlock::RulesetError::RestrictSelf(
                    landlock::RestrictSelfError::SetNoNewPrivsCall { source, .. }
                    | landlock::RestrictSelfError::RestrictSelfCall { source, .. },
                ) => source,
                _ => std::io::Error::from_raw_os_error(libc::EINVAL),
            });
        }
    }
    Ok(())
}

// ----- the file system: Landlock -----------------------------------------------------------------

/// Landlock's file-system access rights, as the `landlock` crate names them.
type Rights = BitFlags<AccessFs>;

/// The rights a rule on a file (not a directory) may carry.
const FILE_RIGHTS: Rights = make_bitflags!(AccessFs::{Execute | WriteFile | ReadFile | Truncate});
const READ: Rights = make_bitflags!(AccessFs::{ReadFile | ReadDir});
const READ_EXEC: Rights = make_bitflags!(AccessFs::{ReadFile | ReadDir | Execute});
const READ_WRITE: Rights = make_bitflags!(AccessFs::{ReadFile | WriteFile | Truncate});
const MAKE_REG: Rights = make_bitflags!(AccessFs::{MakeReg});
const REMOVE_FILE: Rights = make_bitflags!(AccessFs::{RemoveFile});
/// Everything inside a directory QEMU owns for the run (the run directory, hugetlbfs): every
/// right of ABI 3 but Refer (not handled: files never move between directories).
const ALL: Rights = make_bitflags!(AccessFs::{
    Execute | WriteFile | ReadFile | ReadDir | RemoveDir | RemoveFile | MakeChar | MakeDir
        | MakeReg | MakeSock | MakeFifo | MakeBlock | MakeSym | Truncate
});

/// What of the host's file system every QEMU reads: its libraries, modules, firmware and data
/// (/usr, and the top-level links into it), what the C library and QEMU's TLS and name lookups
/// read in /etc (not /etc itself: /etc/shadow stays out of reach), the kernel's views of itself.
const HOST_READ: &[(&str, Rights)] = &[
    ("/usr", READ_EXEC),
    ("/lib", READ_EXEC),
    ("/lib64", READ_EXEC),
    ("/bin", READ_EXEC),
    ("/etc/ld.so.cache", READ),
    ("/etc/ld.so.preload", READ),
    ("/etc/localtime", READ),
    ("/etc/nsswitch.conf", READ),
    ("/etc/host.conf", READ),
    ("/etc/hosts", READ),
    ("/etc/resolv.conf", READ),
    ("/etc/gai.conf", READ),
    ("/etc/services", READ),
    ("/etc/protocols", READ),
    ("/etc/qemu", READ),
    ("/etc/ssl", READ),
    ("/etc/gnutls", READ),
    ("/etc/pki", READ),
    ("/etc/sasl2", READ),
    ("/proc", READ),
    ("/sys", READ),
];

/// The device nodes QEMU may use (those that exist), and the memory file systems it may make
/// files in. Not /dev/net/tun, /dev/vhost-net, /dev/ptmx: TAPs and vhost-net come as
/// descriptors, and QEMU makes no terminal (its private /dev has none of them either: `devns`).
const HOST_DEVICES: &[(&str, Rights)] = &[
    ("/dev/null", READ_WRITE),
    ("/dev/zero", READ_WRITE),
    ("/dev/full", READ_WRITE),
    ("/dev/random", READ_WRITE),
    ("/dev/urandom", READ_WRITE),
    ("/dev/kvm", READ_WRITE),
    ("/dev/vfio", ALL),
    ("/dev/hugepages", ALL),
    ("/dev/shm", ALL),
];

/// The Landlock ABI version this kernel offers (`None`: none, or disabled), to say so: the
/// ruleset itself ([`landlock_ruleset`]) adapts to it on its own (the crate's best effort).
pub fn landlock_abi() -> Option<u32> {
    /// LANDLOCK_CREATE_RULESET_VERSION: the call only returns the version.
    const VERSION: libc::c_uint = 1;
    // SAFETY: landlock_create_ruleset with a null attribute, size 0 and the VERSION flag only
    // returns a number.
    let version = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            VERSION,
        )
    };
    u32::try_from(version).ok().filter(|v| *v >= 1)
}

/// A file QEMU opens by name at start because the definition names it: what a guest user
/// must be able to reach (oxvirtd gives it to that user for the run: libvirt's DAC labels).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestFile {
    pub path: PathBuf,
    /// QEMU opens it for writing too.
    pub write: bool,
    /// A `<shareable/>` disk: other guests may use it at the same time.
    pub shareable: bool,
    /// What it is, for messages ("disk vda", "kernel", "backing file of disk vda", ...).
    pub what: String,
}

/// The files of `domain` QEMU opens by name at start: kernel, initrd, firmware and NVRAM,
/// its disks (not network ones) and their backing images. Not here: device nodes (the RNG
/// source), the files QEMU makes (serial logs, sockets), its run directory.
pub fn guest_files(domain: &Domain) -> Vec<GuestFile> {
    let file = |path: &str, write: bool, what: String| GuestFile {
        path: PathBuf::from(path),
        write,
        shareable: false,
        what,
    };
    let mut files = Vec::new();
    let os = &domain.os;
    if let Some(path) = &os.kernel {
        files.push(file(path, false, "kernel".into()));
    }
    if let Some(path) = &os.initrd {
        files.push(file(path, false, "initrd".into()));
    }
    if let Some(loader) = &os.loader {
        if let Some(path) = &loader.path {
            files.push(file(path, loader.readonly == Some(false), "loader".into()));
        }
    }
    if let Some(path) = os.nvram.as_ref().and_then(|n| n.path.as_ref()) {
        files.push(file(path, true, "NVRAM".into()));
    }
    for disk in &domain.devices.disks {
        if disk.disk_type == DiskType::Network {
            continue;
        }
        let dev = &disk.target.dev;
        if let Some(source) = &disk.source {
            let read_only = disk.readonly || disk.device == DiskDevice::Cdrom;
            files.push(GuestFile {
                shareable: disk.shareable,
                ..file(source, !read_only, format!("disk {dev}"))
            });
        }
        for layer in &disk.backing_chain {
            files.push(file(
                &layer.path,
                false,
                format!("backing file of disk {dev}"),
            ));
        }
    }
    files
}

/// Why QEMU must keep root's rights for `domain` (inside the sandbox's other layers: NoNewPrivs,
/// seccomp, Landlock) instead of running as a guest user of its own, or `None` when it need not.
/// These are things QEMU opens itself that only root may open and that oxvirtd does not yet hand
/// it open: VFIO groups, Unix sockets of Gluster servers it connects to, and audio files at the
/// definition's own paths, which it creates there. (TAPs and macvtaps it gets open: launch's
/// `open_nic_fds`; serial files: `open_char_files`; serial ports', channels' and NBD servers'
/// sockets bound or connected: `open_sockets`; memory it locks within the RLIMIT_MEMLOCK
/// [`apply_in_child`] lifts, where oxvirtd may lift it: [`can_lift_memlock`].)
/// (libvirt passes each VFIO descriptor too; docs/security.md says what is left to do.)
pub fn needs_root(domain: &Domain) -> Option<String> {
    let devices = &domain.devices;
    if !devices.hostdevs.is_empty() {
        return Some("a host device is a VFIO group QEMU opens".into());
    }
    let gluster_socket = devices
        .disks
        .iter()
        .filter_map(|disk| disk.network.as_ref())
        .filter(|source| source.protocol != oxvirt_domain::NetworkProtocol::Nbd)
        .flat_map(|source| &source.hosts)
        .find_map(|host| match host {
            oxvirt_domain::NetworkHost::Unix { socket } => Some(socket),
            oxvirt_domain::NetworkHost::Tcp { .. } => None,
        });
    if let Some(socket) = gluster_socket {
        return Some(format!(
            "a disk is served on the Unix socket {socket}, which QEMU connects to"
        ));
    }
    if domain.memory_backing.as_ref().is_some_and(|m| m.locked) && !can_lift_memlock() {
        return Some(
            "<memoryBacking><locked/> needs a RLIMIT_MEMLOCK oxvirtd cannot raise (it lacks \
             CAP_SYS_RESOURCE)"
                .into(),
        );
    }
    made_by_qemu(domain)
        .first()
        .map(|(path, _)| format!("QEMU makes {path}, a path of the definition's"))
}

/// Whether this process may give a child an unlimited RLIMIT_MEMLOCK ([`apply_in_child`]):
/// its own hard limit is unlimited, or it has CAP_SYS_RESOURCE (not every container's root has).
pub fn can_lift_memlock() -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes a live rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } == 0
        && limit.rlim_max == libc::RLIM_INFINITY
    {
        return true;
    }
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
            u64::from_str_radix(hex.trim(), 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
}

/// The files QEMU makes at paths of `domain`'s own, with the Landlock right to make each: a
/// file audio backend's WAV file.
fn made_by_qemu(domain: &Domain) -> Vec<(&str, Rights)> {
    let devices = &domain.devices;
    let mut made = Vec::new();
    // (Serial files, serial ports' and channels' sockets are opened by launch and handed
    // over: `open_char_files`, `open_sockets`.)
    for path in devices.audios.iter().filter_map(|a| a.path.as_ref()) {
        made.push((path.as_str(), MAKE_REG));
    }
    made
}

/// The paths under /dev `domain` has QEMU open by name (a block disk, an RNG source, a serial
/// device): its private /dev must hold them (`devns`).
pub(crate) fn device_paths(domain: &Domain) -> Vec<PathBuf> {
    domain_paths(domain, Path::new("/"))
        .into_iter()
        .map(|(path, _, _)| path)
        .filter(|path| path.starts_with("/dev") && path != Path::new("/dev"))
        .collect()
}

/// The paths `domain` has QEMU open, with what it does to each: its disks (and their backing
/// images), kernel, initrd, firmware and NVRAM ([`guest_files`]), RNG source, the files and
/// sockets of its character devices, its emulator.
///
/// Each path comes with whether it must exist (a file QEMU will create need not).
fn domain_paths(domain: &Domain, emulator: &Path) -> Vec<(PathBuf, Rights, bool)> {
    let mut paths = vec![(emulator.to_path_buf(), READ_EXEC)];
    for file in guest_files(domain) {
        paths.push((file.path, if file.write { READ_WRITE } else { READ }));
    }
    for rng in &domain.devices.rngs {
        paths.push((PathBuf::from(&rng.backend_random), READ));
    }
    let mut paths: Vec<(PathBuf, Rights, bool)> = paths
        .into_iter()
        .map(|(path, access)| (path, access, true))
        .collect();
    // Character devices' sockets, a file audio backend's WAV file: QEMU may make
    // them, so the right to do so in their directory, and to the file itself if it is there.
    for (path, make) in made_by_qemu(domain) {
        if let Some(dir) = Path::new(path).parent() {
            paths.push((dir.to_path_buf(), make | REMOVE_FILE, true));
        }
        paths.push((PathBuf::from(path), READ_WRITE, false));
    }
    paths
}

/// A Landlock ruleset that lets QEMU reach only what it needs of the file system: the host's
/// read-only part ([`HOST_READ`]), device nodes ([`HOST_DEVICES`]), the run directory (all of
/// it), and the files of `domain`. `Ok(None)`: the kernel has no Landlock. A file QEMU gets
/// later (a disk plugged in, an overlay, a medium) is passed to it open ([`crate::blockdev_add`]):
/// Landlock governs opening by name, not descriptors.
pub(crate) fn landlock_ruleset(
    domain: &Domain,
    run: &RunPaths,
    emulator: &Path,
) -> Result<Option<RulesetCreated>, QemuError> {
    if landlock_abi().is_none() {
        return Ok(None);
    }
    let failed = |what: String, err: landlock::RulesetError| {
        QemuError::io(what, std::io::Error::other(err.to_string()))
    };
    // Best effort (the crate's default): rights this kernel's ABI lacks (Truncate before ABI 3)
    // are left out of both the handled set and the rules.
    let mut ruleset = Ruleset::default()
        .handle_access(ALL)
        .and_then(|ruleset| ruleset.create())
        .map_err(|err| failed("creating QEMU's Landlock ruleset".into(), err))?;
    let mut rules: Vec<(PathBuf, Rights, bool)> = Vec::new();
    for (path, access) in HOST_READ.iter().chain(HOST_DEVICES) {
        rules.push((PathBuf::from(path), *access, false));
    }
    rules.push((run.dir.clone(), ALL, true));
    rules.extend(domain_paths(domain, emulator));
    for (path, access, required) in rules {
        let what = || format!("allowing QEMU {} (Landlock)", path.display());
        let rule = match path_rule(&path, access) {
            Ok(Some(rule)) => rule,
            Ok(None) => continue,
            // The host has no such file: nothing to allow.
            Err(err) if !required && err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(QemuError::io(what(), err)),
        };
        ruleset = ruleset.add_rule(rule).map_err(|err| failed(what(), err))?;
    }
    Ok(Some(ruleset))
}

/// The rule allowing `access` (narrowed to what a file may carry, when `path` is not a
/// directory) beneath `path`; `None` when nothing is left to allow.
fn path_rule(path: &Path, access: Rights) -> std::io::Result<Option<PathBeneath<File>>> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(path)?;
    let is_dir = file.metadata()?.is_dir();
    let allowed = if is_dir { access } else { access & FILE_RIGHTS };
    Ok((!allowed.is_empty()).then(|| PathBeneath::new(file, allowed)))
}

// ----- files given to a running QEMU -------------------------------------------------------------

/// `blockdev-add` of `node` (a block node as the command line's `-blockdev` takes it, its
/// children inline or not), with every file it names handed to QEMU open rather than by name:
/// a confined QEMU may not open what was not in its definition at start. Each file goes into
/// a descriptor set of its own (QMP `add-fd`: read-only, and read-write too when the node may
/// write, for QEMU to pick by the access it opens with) and the node names the set
/// (`/dev/fdset/N`), as libvirt does. QEMU keeps the set as long as the node uses it.
pub async fn blockdev_add(qmp: &Qmp, mut node: Value) -> Result<Value, QemuError> {
    let mut files = Vec::new();
    files_of_node(&node, String::new(), false, &mut files);
    for (pointer, filename, read_only) in files {
        let set = pass_file(qmp, &filename, read_only).await?;
        if let Some(slot) = node.pointer_mut(&pointer) {
            *slot = Value::String(format!("/dev/fdset/{set}"));
        }
    }
    qmp.execute("blockdev-add", Some(node)).await
}

/// Opens `filename` and adds it to a new descriptor set of QEMU's; returns the set's id.
async fn pass_file(qmp: &Qmp, filename: &str, read_only: bool) -> Result<i64, QemuError> {
    let open = |write: bool| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOCTTY)
            .open(filename)
            .map_err(|err| QemuError::io(format!("opening {filename} for QEMU"), err))
    };
    let read = open(false)?;
    let set = qmp.add_fd(read.as_fd(), None).await?;
    if !read_only {
        let write = open(true)?;
        qmp.add_fd(write.as_fd(), Some(set)).await?;
    }
    Ok(set)
}

/// The file names in `node` QEMU would open itself (those of `file`, `host_device` and
/// `host_cdrom` nodes), each with its JSON pointer and whether its node is read-only (itself
/// or by a parent).
fn files_of_node(
    node: &Value,
    pointer: String,
    read_only: bool,
    out: &mut Vec<(String, String, bool)>,
) {
    let Value::Object(map) = node else {
        return;
    };
    let read_only = read_only || map.get("read-only") == Some(&Value::Bool(true));
    let opens_by_name = matches!(
        map.get("driver").and_then(Value::as_str),
        Some("file" | "host_device" | "host_cdrom")
    );
    if opens_by_name {
        if let Some(filename) = map.get("filename").and_then(Value::as_str) {
            if !filename.starts_with("/dev/fdset/") {
                out.push((
                    format!("{pointer}/filename"),
                    filename.to_string(),
                    read_only,
                ));
            }
        }
    }
    for (key, child) in map {
        let key = key.replace('~', "~0").replace('/', "~1");
        files_of_node(child, format!("{pointer}/{key}"), read_only, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn files_of_a_node_tree_are_found_with_their_access() {
        let node = json!({
            "driver": "qcow2",
            "node-name": "ovl",
            "file": {"driver": "file", "filename": "/srv/a/b.qcow2"},
            "backing": {"driver": "raw", "read-only": true,
                        "file": {"driver": "host_device", "filename": "/dev/loop7"}},
        });
        let mut files = Vec::new();
        files_of_node(&node, String::new(), false, &mut files);
        files.sort();
        assert_eq!(
            files,
            vec![
                (
                    "/backing/file/filename".to_string(),
                    "/dev/loop7".to_string(),
                    true
                ),
                (
                    "/file/filename".to_string(),
                    "/srv/a/b.qcow2".to_string(),
                    false
                ),
            ]
        );
        // Protocols QEMU opens by name only for files; a set already passed stays.
        let nbd = json!({"driver": "nbd", "filename": "nbd://h/x"});
        let passed = json!({"driver": "file", "filename": "/dev/fdset/3"});
        for node in [nbd, passed] {
            let mut files = Vec::new();
            files_of_node(&node, String::new(), false, &mut files);
            assert!(files.is_empty(), "{node}");
        }
    }

    #[test]
    fn qemu_keeps_root_only_for_what_it_must_open_itself() {
        let domain = |devices: &str| {
            oxvirt_domain::parse_domain_xml(&format!(
                "<domain type='qemu'><name>v</name><memory>131072</memory>\
                 <os><type>hvm</type></os><devices>{devices}</devices></domain>"
            ))
            .unwrap()
        };
        // Handed over open: TAPs, serial files and sockets, NBD servers' sockets.
        for handed_over in [
            "<interface type='ethernet'><target dev='tap9'/><model type='virtio'/></interface>",
            "<serial type='file'><source path='/logs/s.txt'/><target port='0'/></serial>",
            "<serial type='unix'><source mode='bind' path='/run/s.sock'/><target port='0'/></serial>",
            "<serial type='unix'><source mode='connect' path='/run/s.sock'/><target port='1'/></serial>",
            "<channel type='unix'><source mode='bind' path='/run/c.sock'/>\
             <target type='virtio' name='org.example.c'/></channel>",
            "<disk type='network' device='disk'><source protocol='nbd' name='e'>\
             <host transport='unix' socket='/run/nbd.sock'/></source>\
             <target dev='vda' bus='virtio'/></disk>",
        ] {
            assert_eq!(needs_root(&domain(handed_over)), None, "{handed_over}");
        }
        // Opened or made by QEMU itself at a path only root may use.
        for (own, reason) in [
            (
                "<disk type='network' device='disk'><source protocol='gluster' name='v/i'>\
                 <host transport='unix' socket='/run/gl.sock'/></source>\
                 <target dev='vda' bus='virtio'/></disk>",
                "/run/gl.sock",
            ),
            (
                "<audio id='1' type='file' path='/snd/out.wav'/>",
                "/snd/out.wav",
            ),
        ] {
            let why = needs_root(&domain(own)).expect(own);
            assert!(why.contains(reason), "{why}");
        }
    }

    #[test]
    fn a_definition_allows_its_own_files_and_no_more_than_it_needs() {
        let domain = oxvirt_domain::parse_domain_xml(
            "<domain type='qemu'><name>v</name><memory>131072</memory>\
             <os><type>hvm</type><kernel>/k/vmlinuz</kernel><initrd>/k/initrd</initrd></os>\
             <devices>\
             <disk type='file'><source file='/d/rw.qcow2'/><target dev='vda' bus='virtio'/></disk>\
             <disk type='file'><source file='/d/ro.raw'/><target dev='vdb' bus='virtio'/><readonly/></disk>\
             <disk type='file' device='cdrom'><source file='/d/x.iso'/><target dev='sda' bus='sata'/></disk>\
             <serial type='file'><source path='/logs/serial.txt'/><target port='0'/></serial>\
             <audio id='1' type='file' path='/snd/out.wav'/>\
             </devices></domain>",
        )
        .unwrap();
        // What the daemon gives the guest's user: each file QEMU opens by name, how, and what
        // it is.
        let files: Vec<(String, bool, bool, String)> = guest_files(&domain)
            .into_iter()
            .map(|f| (f.path.display().to_string(), f.write, f.shareable, f.what))
            .collect();
        let file = |path: &str, write: bool, what: &str| {
            (path.to_string(), write, false, what.to_string())
        };
        assert_eq!(
            files,
            vec![
                file("/k/vmlinuz", false, "kernel"),
                file("/k/initrd", false, "initrd"),
                file("/d/rw.qcow2", true, "disk vda"),
                file("/d/ro.raw", false, "disk vdb"),
                file("/d/x.iso", false, "disk sda"),
            ]
        );
        let paths = domain_paths(&domain, Path::new("/usr/bin/qemu-system-x86_64"));
        let access = |path: &str| {
            paths
                .iter()
                .find(|(p, _, _)| p == Path::new(path))
                .map(|(_, access, required)| (*access, *required))
        };
        assert_eq!(
            access("/usr/bin/qemu-system-x86_64"),
            Some((READ_EXEC, true))
        );
        assert_eq!(access("/k/vmlinuz"), Some((READ, true)));
        assert_eq!(access("/k/initrd"), Some((READ, true)));
        assert_eq!(access("/d/rw.qcow2"), Some((READ_WRITE, true)));
        assert_eq!(access("/d/ro.raw"), Some((READ, true)));
        assert_eq!(access("/d/x.iso"), Some((READ, true)));
        // A serial file comes open: nothing of its directory. An audio file QEMU makes: the
        // right to make it, and to the file if it is there.
        assert_eq!(access("/logs"), None);
        assert_eq!(access("/logs/serial.txt"), None);
        assert_eq!(access("/snd"), Some((MAKE_REG | REMOVE_FILE, true)));
        assert_eq!(access("/snd/out.wav"), Some((READ_WRITE, false)));
        assert_eq!(access("/d"), None, "a disk's directory is not given away");
        // Nothing of the host's secrets.
        assert!(HOST_READ
            .iter()
            .all(|(path, _)| !path.starts_with("/etc/shadow") && *path != "/etc" && *path != "/"));
    }
}
