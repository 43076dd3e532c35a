//! [`Engine`] on top of `oxvirt-vmm`, oxvirt's own VMM (docs/native-vmm.md, "Native engine in
//! oxvirtd").
//!
//! A domain becomes one `oxvirt-vmm` process, started in its own session so it outlives oxvirtd.
//! Its files live in the domain's run directory (see [`VmmPaths`]). Control goes through the
//! VMM's JSON-lines API socket, one connection per request. The VMM has no event stream: the
//! engine learns how a guest ended from the VMM's exit status (0 = powered off, 3 = the guest
//! asked for a reset), which it can read while the VMM is its child; after an oxvirtd restart the
//! VMM is not, and the VMM's log says why it ended instead.
//!
//! The VMM's serial socket has one client and drops output while none is connected, so oxvirtd
//! keeps a console relay connected to it: the relay appends everything to `console.log` and
//! serves `console.sock` to any number of `oxvirt console` clients, like QEMU's chardev does for
//! the QEMU engine.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use oxvirt_api::{Accel, Engine as EngineKind};
use oxvirt_domain::{
    BootDevice, CharSource, ClockOffset, ControllerType, CpuMode, DiskBus, DiskCache, DiskDevice,
    DiskFormat, Domain, DomainType, FeaturePolicy, InputBus, InputType, InterfaceDriverName,
    InterfaceType, LifecycleAction, MemBalloonModel, VideoModel,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc, watch};
use uuid::Uuid;

use crate::engine::{
    AccelPlan, ConsolePaths, Control, Engine, EngineError, EngineErrorKind, EngineEvent, Events,
    GuestStatus,
};

/// The VMM's executable name (found next to oxvirtd, or in PATH).
pub const VMM_BINARY: &str = "oxvirt-vmm";
/// How long a start waits for the VMM's API socket.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one API request may take (a pause waits for every vCPU to stop).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// The VMM's exit status after the guest asked for a reset (oxvirt-vmm's EXIT_STATUS_RESET).
const EXIT_STATUS_RESET: i32 = 3;
/// What the VMM prints on stderr (its log) before exiting with [`EXIT_STATUS_RESET`].
const RESET_LOG_LINE: &str = "the guest requested a reset";

/// The files of one native guest in its run directory.
#[derive(Debug, Clone)]
pub struct VmmPaths {
    dir: PathBuf,
}

impl VmmPaths {
    pub fn new(run_dir: &Path) -> VmmPaths {
        VmmPaths {
            dir: run_dir.to_path_buf(),
        }
    }
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("vmm.pid")
    }
    pub fn api_socket(&self) -> PathBuf {
        self.dir.join("vmm-api.sock")
    }
    /// The VMM's own serial socket (only the relay connects to it).
    pub fn serial_socket(&self) -> PathBuf {
        self.dir.join("vmm-serial.sock")
    }
    /// The VMM's stderr.
    pub fn vmm_log(&self) -> PathBuf {
        self.dir.join("vmm.log")
    }
    /// The relay's socket, for `oxvirt console`.
    pub fn console_socket(&self) -> PathBuf {
        self.dir.join("console.sock")
    }
    pub fn console_log(&self) -> PathBuf {
        self.dir.join("console.log")
    }
}

fn unsupported(message: String) -> EngineError {
    EngineError {
        kind: EngineErrorKind::Unsupported,
        message,
    }
}

fn failed(message: String) -> EngineError {
    EngineError {
        kind: EngineErrorKind::Failed,
        message,
    }
}

// ---- what the native engine can run ----

/// Every element of `domain` the native engine cannot honour, each named as in the XML.
pub fn unsupported_elements(domain: &Domain) -> Vec<String> {
    let mut out = Vec::new();
    let mut no = |what: &str, why: &str| out.push(format!("{what} ({why})"));
    if domain.domain_type != DomainType::Kvm {
        no(
            "<domain type='qemu'>",
            "the native engine runs guests on hardware KVM only; use type='kvm'",
        );
    }
    // Boot: a Linux kernel, loaded directly.
    let os = &domain.os;
    if os.firmware.is_some() {
        no(
            "<os firmware=...>",
            "no firmware: the kernel is booted directly",
        );
    }
    if os.loader.is_some() {
        no("<os><loader>", "no firmware: the kernel is booted directly");
    }
    if os.nvram.is_some() {
        no("<os><nvram>", "no firmware");
    }
    if os.kernel.is_none() {
        no(
            "<os> without <kernel>",
            "the native engine boots a Linux kernel directly; firmware boot from disk or ISO needs the QEMU engine",
        );
    }
    if os.boot.iter().any(|b| *b != BootDevice::Hd) {
        no("<os><boot dev=...>", "only direct kernel boot");
    }
    if os.bootmenu.is_some_and(|m| m.enable) {
        no("<os><bootmenu enable='yes'>", "no firmware");
    }
    // Memory.
    if domain.max_memory.is_some() {
        no("<maxMemory>", "no memory hotplug");
    }
    if domain.current_memory_kib != domain.memory_kib {
        no(
            "<currentMemory> below <memory>",
            "no balloon: the guest always has all of <memory>",
        );
    }
    if domain.memory_kib % 1024 != 0 {
        no("<memory>", "must be a whole number of MiB");
    }
    if let Some(hugepages) = domain
        .memory_backing
        .as_ref()
        .and_then(|b| b.hugepages.as_ref())
    {
        if hugepages.page_sizes_kib.iter().any(|&kib| kib != 2048) {
            no(
                "<memoryBacking><hugepages><page size=...>",
                "only the default 2 MiB huge pages",
            );
        }
    }
    // vCPUs.
    if domain.vcpu.current.is_some_and(|c| c != domain.vcpu.max) {
        no("<vcpu current=...>", "no vCPU hotplug");
    }
    if domain.vcpu.cpuset.is_some() {
        no("<vcpu cpuset=...>", "no vCPU pinning");
    }
    if domain.vcpu.placement == oxvirt_domain::VcpuPlacement::Auto {
        no("<vcpu placement='auto'>", "no automatic placement");
    }
    if domain.cputune.is_some() {
        no("<cputune>", "no pinning or CPU quotas");
    }
    if domain.iothreads.is_some() {
        no("<iothreads>", "no I/O threads");
    }
    if let Some(cpu) = &domain.cpu {
        if let Some(topology) = cpu.topology {
            if topology.dies != 1 || topology.clusters != 1 {
                no(
                    "<cpu><topology dies/clusters>",
                    "only sockets, cores and threads",
                );
            }
        }
        if cpu.mode == CpuMode::Custom {
            match &cpu.model {
                Some(model) if NAMED_MODELS.contains(&model.name.as_str()) => {}
                Some(model) => no(
                    &format!("<cpu><model>{}</model>", model.name),
                    &format!("the native engine knows {}", NAMED_MODELS.join(", ")),
                ),
                None => no("<cpu mode='custom'> without <model>", "name a model"),
            }
        }
        if cpu
            .features
            .iter()
            .any(|f| f.policy == FeaturePolicy::Optional)
        {
            no("<cpu><feature policy='optional'>", "use require or disable");
        }
    }
    if domain.clock.offset == ClockOffset::Localtime {
        no("<clock offset='localtime'>", "the RTC runs in UTC");
    }
    // Lifecycle: the VMM ends with its guest, so nothing can be preserved.
    for (element, action) in [
        ("<on_poweroff>", domain.on_poweroff),
        ("<on_reboot>", domain.on_reboot),
        ("<on_crash>", domain.on_crash),
    ] {
        match action {
            LifecycleAction::Destroy
            | LifecycleAction::Restart
            | LifecycleAction::RenameRestart => {}
            LifecycleAction::Preserve => {
                no(&format!("{element}preserve"), "the VMM ends with its guest")
            }
            LifecycleAction::CoredumpDestroy | LifecycleAction::CoredumpRestart => {
                no(&format!("{element}coredump-*"), "no guest core dumps")
            }
        }
    }
    unsupported_devices(domain, &mut out);
    out
}

/// The `custom` CPU models oxvirt-vmm implements (its `--cpu-mode custom:MODEL`).
const NAMED_MODELS: [&str; 3] = ["qemu64", "kvm64", "Haswell-noTSX-IBRS"];

fn unsupported_devices(domain: &Domain, out: &mut Vec<String>) {
    let mut no = |what: String, why: &str| out.push(format!("{what} ({why})"));
    let devices = &domain.devices;
    for disk in &devices.disks {
        let name = format!("<disk> {}", disk.target.dev);
        if disk.device == DiskDevice::Cdrom {
            no(
                format!("{name}: device='cdrom'"),
                "no CD-ROM; use a virtio disk",
            );
        }
        if disk.target.bus != DiskBus::Virtio {
            no(
                format!("{name}: <target bus='{}'>", bus_name(disk.target.bus)),
                "only virtio disks (no IDE, SATA, SCSI, USB or floppy)",
            );
        }
        if disk.driver.format == DiskFormat::Qcow2 && disk.driver.cache == Some(DiskCache::None) {
            no(
                format!("{name}: <driver type='qcow2' cache='none'>"),
                "oxvirt-vmm uses O_DIRECT for raw images only",
            );
        }
        match disk.driver.cache {
            None | Some(DiskCache::None) | Some(DiskCache::Writeback) => {}
            Some(_) => no(
                format!("{name}: <driver cache=...>"),
                "only cache='none' or 'writeback'",
            ),
        }
        if disk.driver.io.is_some()
            || disk.driver.discard.is_some()
            || disk.driver.detect_zeroes.is_some()
            || disk.driver.iothread.is_some()
        {
            no(
                format!("{name}: <driver io/discard/detect_zeroes/iothread>"),
                "not implemented by oxvirt-vmm",
            );
        }
        if disk.serial.is_some() {
            no(format!("{name}: <serial>"), "no disk serial numbers");
        }
        if disk.shareable {
            no(format!("{name}: <shareable/>"), "no shared disks");
        }
    }
    for controller in &devices.controllers {
        let kind = match controller.controller_type {
            ControllerType::Ide => "ide",
            ControllerType::Fdc => "fdc",
            ControllerType::Scsi => "scsi",
            ControllerType::VirtioSerial => "virtio-serial",
            // pci-root, and the USB controller and (q35) SATA controller every definition gets:
            // no devices can use them, so they are simply absent.
            ControllerType::Pci | ControllerType::Usb | ControllerType::Sata => continue,
        };
        no(format!("<controller type='{kind}'>"), "no such bus");
    }
    for (index, iface) in devices.interfaces.iter().enumerate() {
        let name = format!("<interface> #{index}");
        if iface.interface_type == InterfaceType::User {
            no(
                format!("{name}: type='user'"),
                "no user-mode networking; use a network or bridge",
            );
        }
        match iface.model.as_deref() {
            Some("virtio") => {}
            other => no(
                format!("{name}: <model type='{}'>", other.unwrap_or("rtl8139")),
                "only virtio NICs: write <model type='virtio'/>",
            ),
        }
        if iface.driver_name == Some(InterfaceDriverName::Vhost) {
            no(format!("{name}: <driver name='vhost'>"), "no vhost-net");
        }
        if iface.driver_queues.is_some_and(|q| q > 1) {
            no(format!("{name}: <driver queues=...>"), "one queue pair");
        }
        if iface.mtu.is_some() {
            no(format!("{name}: <mtu>"), "no MTU setting");
        }
        if iface.link_up == Some(false) {
            no(format!("{name}: <link state='down'>"), "no link control");
        }
    }
    // serials[0] (and its console alias) is the console; its source is the engine's.
    for serial in devices.serials.iter().skip(1) {
        let port = serial.target.port.unwrap_or(0);
        no(format!("<serial> port {port}"), "one serial port (COM1)");
    }
    if let Some(serial) = devices.serials.first() {
        if !matches!(serial.source, CharSource::Pty) {
            no(
                "<serial type='file'|'unix'>".to_string(),
                "the console is the engine's socket and log; use type='pty'",
            );
        }
    }
    let alias = usize::from(!devices.serials.is_empty());
    if devices.consoles.len() > alias {
        no(
            "<console type=... target type='virtio'>".to_string(),
            "no virtio console",
        );
    }
    for input in &devices.inputs {
        let ps2_default = input.bus == InputBus::Ps2 && input.input_type != InputType::Tablet;
        if !ps2_default {
            no(
                "<input>".to_string(),
                "no input devices (PS/2 keyboard and mouse are implied)",
            );
        }
    }
    if !devices.graphics.is_empty() {
        no(
            "<graphics>".to_string(),
            "no display: the console is the serial port",
        );
    }
    if devices.videos.iter().any(|v| v.model != VideoModel::None) {
        no("<video>".to_string(), "no display");
    }
    if devices.rngs.len() > 1 {
        no("<rng> (more than one)".to_string(), "one virtio-rng");
    }
    if let Some(balloon) = &devices.memballoon {
        // The implied virtio balloon is accepted and ignored (every definition gets one), but
        // not a configured one.
        if balloon.model == MemBalloonModel::Virtio
            && (balloon.autodeflate.is_some() || balloon.stats_period.is_some())
        {
            no("<memballoon> settings".to_string(), "no balloon");
        }
    }
}

fn bus_name(bus: DiskBus) -> &'static str {
    match bus {
        DiskBus::Virtio => "virtio",
        DiskBus::Sata => "sata",
        DiskBus::Scsi => "scsi",
        DiskBus::Ide => "ide",
        DiskBus::Usb => "usb",
        DiskBus::Fdc => "fdc",
    }
}

/// `Err(unsupported)` naming every element the native engine cannot honour.
pub fn check_domain(domain: &Domain) -> Result<(), EngineError> {
    let elements = unsupported_elements(domain);
    if elements.is_empty() {
        return Ok(());
    }
    Err(unsupported(format!(
        "the native engine (<oxvirt:engine name='native'/>) cannot run: {}",
        elements.join("; ")
    )))
}

// ---- the VMM's command line ----

/// The `oxvirt-vmm` arguments for `domain`, whose interfaces already name their TAP devices
/// (`target_dev`, set by the daemon's network layer on the launched copy).
pub fn vmm_args(domain: &Domain, paths: &VmmPaths) -> Result<Vec<OsString>, EngineError> {
    check_domain(domain)?;
    let mut args: Vec<OsString> = Vec::new();
    let mut arg = |key: &str, value: OsString| {
        args.push(key.into());
        args.push(value);
    };
    let kernel = domain
        .os
        .kernel
        .as_ref()
        .ok_or_else(|| unsupported("no <kernel>".to_string()))?;
    arg("--kernel", kernel.into());
    if let Some(initrd) = &domain.os.initrd {
        arg("--initrd", initrd.into());
    }
    if let Some(cmdline) = &domain.os.cmdline {
        arg("--cmdline", cmdline.into());
    }
    arg("--memory", (domain.memory_kib / 1024).to_string().into());
    arg("--vcpus", domain.vcpu.max.to_string().into());
    if let Some(cpu) = &domain.cpu {
        if let Some(t) = cpu.topology {
            arg(
                "--topology",
                format!(
                    "sockets={},cores={},threads={}",
                    t.sockets, t.cores, t.threads
                )
                .into(),
            );
        }
        let mode = match cpu.mode {
            CpuMode::HostPassthrough | CpuMode::Maximum => "host-passthrough".to_string(),
            CpuMode::HostModel => "host-model".to_string(),
            CpuMode::Custom => {
                let model = cpu.model.as_ref().map(|m| m.name.as_str()).unwrap_or("");
                format!("custom:{model}")
            }
        };
        arg("--cpu-mode", mode.into());
        let features: Vec<String> = cpu
            .features
            .iter()
            .filter_map(|f| match f.policy {
                FeaturePolicy::Force | FeaturePolicy::Require => Some(format!("+{}", f.name)),
                FeaturePolicy::Disable | FeaturePolicy::Forbid => Some(format!("-{}", f.name)),
                FeaturePolicy::Optional => None,
            })
            .collect();
        if !features.is_empty() {
            arg("--cpu-features", features.join(",").into());
        }
    }
    for disk in &domain.devices.disks {
        let source = disk
            .source
            .as_ref()
            .ok_or_else(|| unsupported(format!("<disk> {} has no <source>", disk.target.dev)))?;
        let mut spec = OsString::from("path=");
        spec.push(source);
        if disk.driver.format == DiskFormat::Qcow2 {
            spec.push(",format=qcow2");
        }
        if disk.readonly {
            spec.push(",readonly=on");
        }
        if disk.driver.cache == Some(DiskCache::None) {
            spec.push(",cache=none");
        }
        arg("--disk", spec);
    }
    for (index, iface) in domain.devices.interfaces.iter().enumerate() {
        let tap = iface.target_dev.as_ref().ok_or_else(|| {
            failed(format!(
                "<interface> #{index} has no TAP device (the network layer did not create one)"
            ))
        })?;
        let mut spec = format!("tap={tap}");
        if let Some(mac) = iface.mac {
            spec.push_str(&format!(",mac={mac}"));
        }
        arg("--net", spec.into());
    }
    let mut serial = OsString::from("socket=");
    serial.push(paths.serial_socket());
    arg("--serial", serial);
    arg("--api-socket", paths.api_socket().into());
    let backing = domain.memory_backing.as_ref();
    if backing.is_some_and(|b| b.hugepages.is_some()) {
        args.push("--hugepages".into());
    }
    if backing.is_some_and(|b| b.nosharepages) {
        args.push("--no-share-pages".into());
    }
    if !domain.devices.rngs.is_empty() {
        args.push("--rng".into());
    }
    Ok(args)
}

/// `oxvirt-vmm` next to the running oxvirtd, else in PATH.
pub fn find_vmm() -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(VMM_BINARY)))
        .filter(|path| path.is_file());
    beside.or_else(|| {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(VMM_BINARY))
                .find(|candidate| candidate.is_file())
        })
    })
}

// ---- the engine ----

/// How a VMM process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VmmExit {
    Status(i32),
    Signal(i32),
    /// Not our child (oxvirtd restarted since the start): its log tells.
    NotOurChild,
}

/// Exit tracking of one VMM process.
#[derive(Clone)]
struct ExitWatch {
    exit: watch::Receiver<Option<VmmExit>>,
    /// A quit (API `stop`) was sent: an exit 0 is the host's doing, not the guest's.
    quit_sent: Arc<AtomicBool>,
}

pub struct NativeEngine {
    /// `Err(reason)` when this host has no hardware KVM.
    kvm: Result<(), String>,
    /// Exit tracking by VMM pid, until the exit has been reported.
    exits: Arc<Mutex<HashMap<u32, ExitWatch>>>,
    /// Run directories whose console relay runs.
    relays: Arc<Mutex<HashSet<PathBuf>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain map updates: a panic cannot leave them half done.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl NativeEngine {
    /// Probes the host once for hardware KVM (the native engine cannot emulate).
    pub fn probe() -> NativeEngine {
        let probe = oxvirt_qemu::probe_accel();
        let kvm = match probe.accel {
            oxvirt_qemu::Accel::Kvm => Ok(()),
            oxvirt_qemu::Accel::Tcg => Err(probe
                .reason
                .strip_suffix(": using TCG")
                .unwrap_or(&probe.reason)
                .to_string()),
        };
        NativeEngine {
            kvm,
            exits: Arc::new(Mutex::new(HashMap::new())),
            relays: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    fn no_kvm_error(reason: &str) -> EngineError {
        unsupported(format!(
            "the native engine needs hardware KVM and this host has none ({reason}); it cannot \
             emulate a CPU: run the domain with the QEMU engine (remove <oxvirt:engine name='native'/>)"
        ))
    }

    /// The host-side precondition of a start: hardware KVM.
    pub fn check_host(&self) -> Result<(), EngineError> {
        self.kvm
            .as_ref()
            .map_err(|reason| Self::no_kvm_error(reason))
            .copied()
    }

    /// Exit tracking of `pid`: a waiting thread if it is our child, else a pidfd watch.
    fn exit_watch(&self, pid: u32) -> ExitWatch {
        let mut exits = lock(&self.exits);
        if let Some(watch) = exits.get(&pid) {
            return watch.clone();
        }
        let watch = spawn_exit_watch(pid, false);
        exits.insert(pid, watch.clone());
        watch
    }

    /// Keeps the console relay of `run_dir` running (started at launch, restarted after an
    /// oxvirtd restart).
    async fn ensure_relay(&self, paths: &VmmPaths) {
        if lock(&self.relays).contains(&paths.dir) {
            return;
        }
        match UnixStream::connect(paths.serial_socket()).await {
            Ok(serial) => self.start_relay(paths, serial),
            Err(err) => tracing::warn!(
                "cannot connect to the guest console {}: {err}",
                paths.serial_socket().display()
            ),
        }
    }

    fn start_relay(&self, paths: &VmmPaths, serial: UnixStream) {
        if !lock(&self.relays).insert(paths.dir.clone()) {
            return;
        }
        let relays = self.relays.clone();
        let paths = paths.clone();
        tokio::spawn(async move {
            if let Err(err) = console_relay(serial, &paths).await {
                tracing::warn!("console relay of {}: {err}", paths.dir.display());
            }
            let _ = std::fs::remove_file(paths.console_socket());
            lock(&relays).remove(&paths.dir);
        });
    }

    /// Waits until the VMM of a launch serves its API socket, with the console relay connected
    /// first so it sees the guest's whole boot.
    async fn wait_until_started(
        &self,
        paths: &VmmPaths,
        pid: u32,
        watch: &ExitWatch,
    ) -> Result<u32, EngineError> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        let mut exit = watch.exit.clone();
        loop {
            if !lock(&self.relays).contains(&paths.dir) {
                if let Ok(serial) = UnixStream::connect(paths.serial_socket()).await {
                    self.start_relay(paths, serial);
                }
            }
            if lock(&self.relays).contains(&paths.dir)
                && UnixStream::connect(paths.api_socket()).await.is_ok()
            {
                return Ok(pid);
            }
            if exit.borrow().is_some() {
                let log = std::fs::read_to_string(paths.vmm_log()).unwrap_or_default();
                let last = log.lines().rev().find(|l| !l.trim().is_empty());
                return Err(failed(format!(
                    "{VMM_BINARY} exited at start: {}",
                    last.unwrap_or("(no message)")
                )));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(failed(format!(
                    "{VMM_BINARY} (pid {pid}) did not open its API socket within {} s",
                    START_TIMEOUT.as_secs()
                )));
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), exit.changed()).await;
        }
    }
}

/// Waits for `pid` to end: `waitpid` for our child (which gives the exit status), a pidfd
/// otherwise.
fn spawn_exit_watch(pid: u32, child: bool) -> ExitWatch {
    let (tx, rx) = watch::channel(None);
    std::thread::Builder::new()
        .name(format!("vmm-exit-{pid}"))
        .spawn(move || {
            let exit = if child {
                wait_child(pid)
            } else {
                wait_foreign(pid);
                VmmExit::NotOurChild
            };
            let _ = tx.send(Some(exit));
        })
        .map_err(|err| tracing::error!(pid, "cannot start the exit watch: {err}"))
        .ok();
    ExitWatch {
        exit: rx,
        quit_sent: Arc::new(AtomicBool::new(false)),
    }
}

fn wait_child(pid: u32) -> VmmExit {
    let Ok(raw) = libc::pid_t::try_from(pid) else {
        return VmmExit::NotOurChild;
    };
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only `status`, a valid local.
        let rc = unsafe { libc::waitpid(raw, &mut status, 0) };
        if rc == raw {
            if libc::WIFEXITED(status) {
                return VmmExit::Status(libc::WEXITSTATUS(status));
            }
            if libc::WIFSIGNALED(status) {
                return VmmExit::Signal(libc::WTERMSIG(status));
            }
            continue;
        }
        if rc < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        // Someone else reaped it (ECHILD): the log must tell.
        wait_foreign(pid);
        return VmmExit::NotOurChild;
    }
}

/// Blocks until `pid` has ended (pidfd; polling /proc if pidfds are unavailable).
fn wait_foreign(pid: u32) {
    let Ok(raw) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: pidfd_open takes plain integers and returns a new descriptor we own (or -1).
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw, 0) } as libc::c_int;
    if fd >= 0 {
        let mut pollfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            // SAFETY: one valid pollfd; a pidfd becomes readable when the process ends.
            let rc = unsafe { libc::poll(&mut pollfd, 1, -1) };
            if rc > 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                break;
            }
        }
        // SAFETY: closing the descriptor opened above, once.
        unsafe { libc::close(fd) };
        return;
    }
    while process_is_running(pid) {
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Whether `pid` exists and is not a zombie.
fn process_is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat[stat.rfind(')')? + 1..].split_whitespace().next()?;
            Some(state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

/// Whether a process' argv is `oxvirt-vmm` running the guest `uuid` (its run directory, which
/// is named after the uuid, is in its arguments).
fn argv_is_vmm_of(cmdline: &[u8], uuid: &Uuid) -> bool {
    let mut args = cmdline.split(|&b| b == 0).filter(|a| !a.is_empty());
    let Some(program) = args.next() else {
        return false;
    };
    let program = String::from_utf8_lossy(program);
    if program.rsplit('/').next() != Some(VMM_BINARY) {
        return false;
    }
    let uuid = uuid.to_string();
    args.any(|a| String::from_utf8_lossy(a).contains(&uuid))
}

/// The engine events that end of the VMM means, given its log.
fn exit_events(exit: VmmExit, quit_sent: bool, log: &str) -> Vec<EngineEvent> {
    let reset = match exit {
        VmmExit::Status(EXIT_STATUS_RESET) => true,
        VmmExit::Status(0) => false,
        VmmExit::Status(_) | VmmExit::Signal(_) => return Vec::new(),
        VmmExit::NotOurChild => {
            let last = log
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            if last.contains("oxvirt-vmm: error:") {
                return Vec::new();
            }
            last.contains(RESET_LOG_LINE)
        }
    };
    if reset && !quit_sent {
        vec![EngineEvent::Rebooted]
    } else {
        vec![EngineEvent::Shutdown { guest: !quit_sent }]
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[async_trait]
impl Engine for NativeEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Native
    }

    fn version(&self) -> Option<String> {
        Some(env!("CARGO_PKG_VERSION").to_string())
    }

    fn plan_accel(&self, _domain: &Domain) -> AccelPlan {
        AccelPlan {
            accel: Accel::Kvm,
            warnings: match &self.kvm {
                Ok(()) => Vec::new(),
                Err(reason) => vec![format!(
                    "no hardware KVM here ({reason}): the native engine cannot start this domain"
                )],
            },
        }
    }

    fn check_definition(&self, domain: &Domain) -> Result<(), EngineError> {
        check_domain(domain)
    }

    fn check_host(&self, _domain: &Domain) -> Result<(), EngineError> {
        NativeEngine::check_host(self)
    }

    async fn launch(
        &self,
        domain: &Domain,
        run_dir: &Path,
        _accel: Accel,
    ) -> Result<u32, EngineError> {
        self.check_host()?;
        let paths = VmmPaths::new(run_dir);
        let args = vmm_args(domain, &paths)?;
        let vmm = find_vmm().ok_or_else(|| {
            failed(format!(
                "{VMM_BINARY} was found neither next to oxvirtd nor in PATH"
            ))
        })?;
        for stale in [
            paths.pid_file(),
            paths.api_socket(),
            paths.serial_socket(),
            paths.console_socket(),
        ] {
            let _ = std::fs::remove_file(stale);
        }
        let log = std::fs::File::create(paths.vmm_log())
            .map_err(|e| failed(format!("cannot create {}: {e}", paths.vmm_log().display())))?;
        let log_out = log
            .try_clone()
            .map_err(|e| failed(format!("cannot duplicate the VMM log descriptor: {e}")))?;
        let mut command = Command::new(&vmm);
        command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log_out)
            .stderr(log);
        // SAFETY: setsid is async-signal-safe and touches no memory of ours: the VMM gets its own
        // session, so it outlives oxvirtd (and its terminal).
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .map_err(|e| failed(format!("cannot run {}: {e}", vmm.display())))?;
        let pid = child.id();
        // The exit status is collected by the exit watch (never by std's Child).
        drop(child);
        let watch = spawn_exit_watch(pid, true);
        lock(&self.exits).insert(pid, watch.clone());
        if let Err(err) = std::fs::write(paths.pid_file(), format!("{pid}\n")) {
            tracing::warn!(pid, "cannot record the VMM pid: {err}");
        }
        tracing::info!(domain = %domain.name, pid, vmm = %vmm.display(), "oxvirt-vmm started");

        // Wait for the console (so the relay sees the boot) and the API socket.
        let result = self.wait_until_started(&paths, pid, &watch).await;
        if result.is_err() && watch.exit.borrow().is_none() {
            // Never leave a VMM behind that the daemon will not know about; the exit watch reaps it.
            // SAFETY: kill(2) has no memory effects; `pid` is our child and not reaped yet (its
            // exit watch has not seen it end), so it cannot have been recycled.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
        if result.is_err() {
            lock(&self.exits).remove(&pid);
        }
        result
    }

    async fn is_alive(&self, pid: u32, uuid: &Uuid) -> bool {
        if !process_is_running(pid) {
            return false;
        }
        match tokio::fs::read(format!("/proc/{pid}/cmdline")).await {
            Ok(cmdline) => argv_is_vmm_of(&cmdline, uuid),
            Err(_) => false,
        }
    }

    fn recorded_pid(&self, run_dir: &Path) -> Option<u32> {
        read_pid(&VmmPaths::new(run_dir).pid_file())
    }

    async fn connect(&self, run_dir: &Path) -> Result<(Arc<dyn Control>, Events), EngineError> {
        let paths = VmmPaths::new(run_dir);
        let pid = read_pid(&paths.pid_file()).ok_or_else(|| {
            failed(format!(
                "no VMM pid recorded in {}",
                paths.pid_file().display()
            ))
        })?;
        let control = ApiControl {
            socket: paths.api_socket(),
            quit_sent: Arc::new(AtomicBool::new(false)),
        };
        // The VMM must answer before we call it connected.
        control.request("status").await?;
        let watch = self.exit_watch(pid);
        let control = ApiControl {
            quit_sent: watch.quit_sent.clone(),
            ..control
        };
        self.ensure_relay(&paths).await;
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let log_path = paths.vmm_log();
        let exits = self.exits.clone();
        tokio::spawn(async move {
            let mut exit = watch.exit;
            let ended = match exit.wait_for(|e| e.is_some()).await {
                Ok(ended) => *ended,
                Err(_) => None,
            };
            let Some(ended) = ended else { return };
            lock(&exits).remove(&pid);
            let log = tokio::fs::read_to_string(&log_path)
                .await
                .unwrap_or_default();
            tracing::info!(pid, ?ended, "oxvirt-vmm ended");
            if let Some(line) = log.lines().rev().find(|l| l.contains("oxvirt-vmm: error:")) {
                tracing::warn!(pid, "{line}");
            }
            for event in exit_events(ended, watch.quit_sent.load(Ordering::SeqCst), &log) {
                if events_tx.send(event).is_err() {
                    return;
                }
            }
            // Dropping the sender ends the event stream: the supervisor sees the guest gone.
        });
        Ok((Arc::new(control), events_rx))
    }

    fn console_paths(&self, run_dir: &Path) -> ConsolePaths {
        let paths = VmmPaths::new(run_dir);
        ConsolePaths {
            socket: paths.console_socket(),
            log: paths.console_log(),
        }
    }
}

// ---- control over the API socket ----

struct ApiControl {
    socket: PathBuf,
    quit_sent: Arc<AtomicBool>,
}

#[derive(Debug, serde::Deserialize)]
struct ApiAnswer {
    ok: bool,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

impl ApiControl {
    /// One request on a fresh connection: the VMM's API is one line in, one line out.
    async fn request(&self, command: &str) -> Result<ApiAnswer, EngineError> {
        let exchange = async {
            let mut stream = UnixStream::connect(&self.socket).await?;
            let line = serde_json::json!({ "command": command }).to_string();
            stream.write_all(format!("{line}\n").as_bytes()).await?;
            let mut answer = String::new();
            BufReader::new(stream).read_line(&mut answer).await?;
            Ok::<String, std::io::Error>(answer)
        };
        let answer = match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(Ok(answer)) if !answer.trim().is_empty() => answer,
            Ok(Ok(_)) => {
                return Err(failed(format!(
                    "{VMM_BINARY} closed its API socket without answering '{command}'"
                )))
            }
            Ok(Err(err)) => {
                return Err(failed(format!(
                    "{VMM_BINARY} API {}: {err}",
                    self.socket.display()
                )))
            }
            Err(_) => {
                return Err(failed(format!(
                    "{VMM_BINARY} did not answer '{command}' within {} s",
                    REQUEST_TIMEOUT.as_secs()
                )))
            }
        };
        let answer: ApiAnswer = serde_json::from_str(answer.trim()).map_err(|e| {
            failed(format!(
                "{VMM_BINARY} sent an unreadable answer to '{command}': {e}"
            ))
        })?;
        if !answer.ok {
            return Err(failed(format!(
                "{VMM_BINARY} refused '{command}': {}",
                answer.error.as_deref().unwrap_or("no reason given")
            )));
        }
        Ok(answer)
    }
}

#[async_trait]
impl Control for ApiControl {
    async fn status(&self) -> Result<GuestStatus, EngineError> {
        let answer = self.request("status").await?;
        Ok(match answer.state.as_deref() {
            Some("running") => GuestStatus::Running,
            Some("paused") => GuestStatus::Paused,
            Some("stopping") => GuestStatus::ShutDown,
            other => GuestStatus::Other(other.unwrap_or("unknown").to_string()),
        })
    }

    async fn pause(&self) -> Result<(), EngineError> {
        self.request("pause").await.map(drop)
    }

    async fn resume(&self) -> Result<(), EngineError> {
        self.request("resume").await.map(drop)
    }

    async fn power_button(&self) -> Result<(), EngineError> {
        self.request("poweroff").await.map(drop)
    }

    async fn reset(&self) -> Result<(), EngineError> {
        Err(unsupported(
            "the native engine cannot reset a guest in place; use reboot, or destroy and start"
                .to_string(),
        ))
    }

    async fn quit(&self) -> Result<(), EngineError> {
        self.quit_sent.store(true, Ordering::SeqCst);
        self.request("stop").await.map(drop)
    }
}

// ---- console relay ----

/// Copies the VMM's serial output to the console log and to every client of the console
/// socket, and the clients' input to the serial port, until the VMM closes the serial socket.
async fn console_relay(serial: UnixStream, paths: &VmmPaths) -> std::io::Result<()> {
    let socket = paths.console_socket();
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
    }
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths.console_log())?;
    let (mut serial_in, serial_out) = serial.into_split();
    let serial_out = Arc::new(tokio::sync::Mutex::new(serial_out));
    let (output_tx, _) = broadcast::channel::<Arc<[u8]>>(1024);

    let accept = {
        let output_tx = output_tx.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(serve_console_client(
                    client,
                    output_tx.subscribe(),
                    serial_out.clone(),
                ));
            }
        })
    };
    let mut buf = vec![0u8; 4096];
    let result = loop {
        match serial_in.read(&mut buf).await {
            Ok(0) => break Ok(()),
            Ok(n) => {
                // The log is best effort: a full disk must not stop the console.
                let _ = log.write_all(&buf[..n]);
                let _ = output_tx.send(Arc::from(&buf[..n]));
            }
            Err(err) => break Err(err),
        }
    };
    accept.abort();
    // Dropping the sender ends every client's output task, which closes its connection.
    drop(output_tx);
    result
}

async fn serve_console_client(
    client: UnixStream,
    mut output: broadcast::Receiver<Arc<[u8]>>,
    serial_out: Arc<tokio::sync::Mutex<tokio::net::unix::OwnedWriteHalf>>,
) {
    let (mut client_in, mut client_out) = client.into_split();
    let input = tokio::spawn(async move {
        let mut buf = vec![0u8; 1024];
        loop {
            match client_in.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if serial_out.lock().await.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    loop {
        match output.recv().await {
            Ok(bytes) => {
                if client_out.write_all(&bytes).await.is_err() {
                    break;
                }
            }
            // A slow client misses output rather than holding the guest back.
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => break,
        }
    }
    input.abort();
    let _ = client_out.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(xml_devices: &str, extra: &str) -> Domain {
        let xml = format!(
            "<domain type='kvm' xmlns:oxvirt='urn:oxvirt:domain:1.0'><name>n1</name>\
             <uuid>8c3a0b8e-5f3e-4c7e-9d2a-1b2c3d4e5f60</uuid><memory unit='MiB'>256</memory>\
             <vcpu>2</vcpu><os><type arch='x86_64'>hvm</type><kernel>/k/vmlinuz</kernel>\
             <initrd>/k/initrd</initrd><cmdline>console=ttyS0 quiet</cmdline></os>{extra}\
             <devices>{xml_devices}</devices><oxvirt:engine name='native'/></domain>"
        );
        oxvirt_domain::parse_domain_xml(&xml).unwrap()
    }

    fn strings(args: &[OsString]) -> Vec<String> {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn a_representative_domain_becomes_these_vmm_flags() {
        let mut d = domain(
            "<disk type='file' device='disk'><driver name='qemu' type='raw' cache='none'/>\
               <source file='/img/root.raw'/><target dev='vda' bus='virtio'/></disk>\
             <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
               <source file='/img/data.qcow2'/><target dev='vdb' bus='virtio'/><readonly/></disk>\
             <interface type='network'><mac address='52:54:00:12:34:56'/>\
               <source network='default'/><model type='virtio'/></interface>\
             <serial type='pty'/><rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>",
            "<memoryBacking><nosharepages/><hugepages/></memoryBacking>\
             <cpu mode='custom'><model>Haswell-noTSX-IBRS</model>\
             <topology sockets='1' cores='2' threads='1'/>\
             <feature policy='require' name='svm'/><feature policy='disable' name='pcid'/></cpu>",
        );
        d.devices.interfaces[0].target_dev = Some("oxtap7".to_string());
        let paths = VmmPaths::new(Path::new("/run/ox/run/8c3a"));
        let args = strings(&vmm_args(&d, &paths).unwrap());
        let expected: Vec<String> = [
            "--kernel",
            "/k/vmlinuz",
            "--initrd",
            "/k/initrd",
            "--cmdline",
            "console=ttyS0 quiet",
            "--memory",
            "256",
            "--vcpus",
            "2",
            "--topology",
            "sockets=1,cores=2,threads=1",
            "--cpu-mode",
            "custom:Haswell-noTSX-IBRS",
            "--cpu-features",
            "+svm,-pcid",
            "--disk",
            "path=/img/root.raw,cache=none",
            "--disk",
            "path=/img/data.qcow2,format=qcow2,readonly=on",
            "--net",
            "tap=oxtap7,mac=52:54:00:12:34:56",
            "--serial",
            "socket=/run/ox/run/8c3a/vmm-serial.sock",
            "--api-socket",
            "/run/ox/run/8c3a/vmm-api.sock",
            "--hugepages",
            "--no-share-pages",
            "--rng",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(args, expected);
    }

    #[test]
    fn a_minimal_domain_keeps_the_vmm_defaults() {
        let d = domain("", "<cpu mode='host-passthrough'/>");
        let args = strings(&vmm_args(&d, &VmmPaths::new(Path::new("/r"))).unwrap());
        assert!(args
            .windows(2)
            .any(|w| w == ["--cpu-mode", "host-passthrough"]));
        assert!(!args.contains(&"--rng".to_string()));
        assert!(!args.contains(&"--hugepages".to_string()));
        assert!(!args.contains(&"--net".to_string()));
    }

    #[test]
    fn an_interface_without_a_tap_is_an_error_not_a_guess() {
        let d = domain(
            "<interface type='network'><source network='default'/><model type='virtio'/></interface>",
            "",
        );
        let err = vmm_args(&d, &VmmPaths::new(Path::new("/r"))).unwrap_err();
        assert!(err.message.contains("no TAP device"), "{}", err.message);
    }

    #[test]
    fn each_unsupported_element_is_named() {
        let cases = [
            ("<graphics type='vnc'/>", "", "<graphics>"),
            ("<video><model type='vga'/></video>", "", "<video>"),
            (
                "<disk type='file' device='cdrom'><source file='/x.iso'/><target dev='hdc' bus='ide'/></disk>",
                "",
                "device='cdrom'",
            ),
            (
                "<disk type='file' device='disk'><driver name='qemu' type='qcow2' cache='none'/><source file='/x.qcow2'/><target dev='vda' bus='virtio'/></disk>",
                "",
                "type='qcow2' cache='none'",
            ),
            (
                "<disk type='file' device='disk'><source file='/x.raw'/><target dev='sda' bus='sata'/></disk>",
                "",
                "bus='sata'",
            ),
            ("<interface type='user'><model type='virtio'/></interface>", "", "type='user'"),
            (
                "<interface type='network'><source network='default'/><model type='e1000'/></interface>",
                "",
                "<model type='e1000'>",
            ),
            ("", "<cputune><vcpupin vcpu='0' cpuset='1'/></cputune>", "<cputune>"),
            ("<input type='tablet' bus='usb'/>", "", "<input>"),
            ("<controller type='scsi' model='virtio-scsi'/>", "", "<controller type='scsi'>"),
            ("", "<on_crash>preserve</on_crash>", "<on_crash>preserve"),
            ("", "<clock offset='localtime'/>", "<clock offset='localtime'>"),
            ("", "<cpu mode='custom'><model>Skylake-Client</model></cpu>", "Skylake-Client"),
        ];
        for (devices, extra, element) in cases {
            let d = domain(devices, extra);
            let err = check_domain(&d).expect_err(element);
            assert_eq!(err.kind, EngineErrorKind::Unsupported);
            assert!(
                err.message.contains(element),
                "{element} not named in: {}",
                err.message
            );
        }
    }

    #[test]
    fn firmware_boot_without_a_kernel_is_named() {
        let xml = "<domain type='kvm' xmlns:oxvirt='urn:oxvirt:domain:1.0'><name>n</name>\
                   <memory unit='MiB'>256</memory><os><type>hvm</type><loader>/usr/share/OVMF/OVMF_CODE.fd</loader></os>\
                   <oxvirt:engine name='native'/></domain>";
        let d = oxvirt_domain::parse_domain_xml(xml).unwrap();
        let message = check_domain(&d).unwrap_err().message;
        assert!(message.contains("<os><loader>"), "{message}");
        assert!(message.contains("<os> without <kernel>"), "{message}");
    }

    #[test]
    fn the_defaults_every_definition_gets_are_accepted() {
        // Normalization adds a USB controller, pci-root, PS/2 inputs, a virtio balloon and a
        // console alias of the serial port: none of that may block the native engine.
        let d = domain("<serial type='pty'/><console type='pty'/>", "");
        check_domain(&d).unwrap();
    }

    #[test]
    fn the_vmm_exit_tells_what_happened() {
        assert_eq!(
            exit_events(VmmExit::Status(0), false, ""),
            vec![EngineEvent::Shutdown { guest: true }]
        );
        assert_eq!(
            exit_events(VmmExit::Status(0), true, ""),
            vec![EngineEvent::Shutdown { guest: false }]
        );
        assert_eq!(
            exit_events(VmmExit::Status(3), false, ""),
            vec![EngineEvent::Rebooted]
        );
        assert_eq!(exit_events(VmmExit::Status(1), false, ""), vec![]);
        assert_eq!(exit_events(VmmExit::Signal(9), false, ""), vec![]);
        let reset_log = "oxvirt-vmm: the guest requested a reset; exiting with status 3\n";
        assert_eq!(
            exit_events(VmmExit::NotOurChild, false, reset_log),
            vec![EngineEvent::Rebooted]
        );
        assert_eq!(
            exit_events(
                VmmExit::NotOurChild,
                false,
                "oxvirt-vmm: error: KVM_RUN: x\n"
            ),
            vec![]
        );
        assert_eq!(
            exit_events(VmmExit::NotOurChild, false, ""),
            vec![EngineEvent::Shutdown { guest: true }]
        );
    }

    #[test]
    fn only_the_vmm_of_this_uuid_counts_as_alive() {
        let uuid: Uuid = "8c3a0b8e-5f3e-4c7e-9d2a-1b2c3d4e5f60".parse().unwrap();
        let other: Uuid = "00000000-5f3e-4c7e-9d2a-1b2c3d4e5f60".parse().unwrap();
        let argv = format!(
            "/usr/bin/oxvirt-vmm\0--kernel\0/k\0--api-socket\0/var/lib/oxvirt/run/{uuid}/vmm-api.sock\0"
        );
        assert!(argv_is_vmm_of(argv.as_bytes(), &uuid));
        assert!(!argv_is_vmm_of(argv.as_bytes(), &other));
        let qemu = format!("qemu-system-x86_64\0-uuid\0{uuid}\0");
        assert!(!argv_is_vmm_of(qemu.as_bytes(), &uuid));
        assert!(!argv_is_vmm_of(b"", &uuid));
    }
}
