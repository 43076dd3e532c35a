//! Test support shared by oxvirt's test suites.
//!
//! - [`guest_kit`]: the test guest (Debian cloud kernel + busybox initramfs) built by `scripts/guest-kit.sh`.
//!   What the guest does is described there and in `docs/guest-kit.md`.
//! - [`wait_for`]: poll a condition with a bound instead of sleeping a fixed time.
//! - [`Console`]: talk to a guest's serial console over a Unix socket, as an operator would.
//!
//! These helpers panic with a clear message when the environment is broken: a test that cannot get its guest
//! must fail, not skip.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The line the guest prints on its console once its init has loaded its modules.
pub const BOOT_MARKER: &str = "OXVIRT-GUEST-BOOTED";
/// The guest shell's prompt.
pub const PROMPT: &str = "oxvirt-guest# ";

/// Files of the test guest.
#[derive(Debug, Clone)]
pub struct GuestKit {
    /// bzImage of the Debian cloud kernel.
    pub kernel: PathBuf,
    /// busybox initramfs (gzip'd newc cpio); more cpio archives may be appended to it.
    pub initramfs: PathBuf,
    /// The kernel's whole module tree, `modules_dir/<version>/kernel/...`.
    pub modules_dir: PathBuf,
    /// Kernel version string, e.g. `6.1.0-56-cloud-amd64`.
    pub kernel_version: String,
}

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/testkit sits two levels below the workspace root")
        .to_path_buf()
}

/// Builds the guest kit once per test process (the script itself is cached across runs) and returns its files.
pub fn guest_kit() -> GuestKit {
    static KIT: OnceLock<GuestKit> = OnceLock::new();
    KIT.get_or_init(|| {
        let root = workspace_root();
        let script = root.join("scripts/guest-kit.sh");
        let dir = std::env::var_os("OXVIRT_GUEST_KIT_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target/guest-kit"));
        let status = Command::new("bash")
            .arg(&script)
            .env("OXVIRT_GUEST_KIT_DIR", &dir)
            .status()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            status.success(),
            "{} failed ({status}): the test guest cannot be built",
            script.display()
        );
        let kernel_version = std::fs::read_to_string(dir.join("version"))
            .unwrap_or_else(|e| panic!("guest kit in {} has no version file: {e}", dir.display()))
            .trim()
            .to_string();
        GuestKit {
            kernel: dir.join("vmlinuz"),
            initramfs: dir.join("initramfs.img"),
            modules_dir: dir.join("modules"),
            kernel_version,
        }
    })
    .clone()
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes; returns whether it held.
/// A line the guest kernel printed on its console: `[    9.040921] text`.
fn is_kernel_log_line(line: &str) -> bool {
    let Some(rest) = line.strip_prefix('[') else {
        return false;
    };
    let Some((stamp, _)) = rest.split_once("] ") else {
        return false;
    };
    let stamp = stamp.trim_start();
    stamp.split_once('.').is_some_and(|(secs, frac)| {
        !secs.is_empty()
            && secs.bytes().all(|b| b.is_ascii_digit())
            && frac.len() == 6
            && frac.bytes().all(|b| b.is_ascii_digit())
    })
}

pub fn wait_for(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A connection to a guest's serial console (a Unix socket served by the engine).
pub struct Console {
    stream: UnixStream,
    /// Everything received so far, lossily decoded.
    seen: String,
}

impl Console {
    /// Connects, retrying until `timeout` (the engine may still be creating the socket).
    pub fn connect(socket: &Path, timeout: Duration) -> std::io::Result<Console> {
        let deadline = Instant::now() + timeout;
        loop {
            match UnixStream::connect(socket) {
                Ok(stream) => {
                    stream.set_read_timeout(Some(Duration::from_millis(100)))?;
                    return Ok(Console {
                        stream,
                        seen: String::new(),
                    });
                }
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Sends `line` followed by a newline.
    pub fn send_line(&mut self, line: &str) -> std::io::Result<()> {
        self.stream.write_all(line.as_bytes())?;
        self.stream.write_all(b"\n")
    }

    /// Reads until `pattern` appears in the output received after the last successful wait, or `timeout`.
    /// Returns the text from that point up to and including the match; `None` on timeout.
    pub fn wait_for_text(&mut self, pattern: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(pos) = self.seen.find(pattern) {
                let end = pos + pattern.len();
                let text = self.seen[..end].to_string();
                self.seen.drain(..end);
                return Some(text);
            }
            if Instant::now() >= deadline {
                return None;
            }
            self.read_some();
        }
    }

    /// Runs a shell command in the guest and returns its output (the text between the echoed command and the
    /// next prompt). The guest must be at its shell prompt.
    pub fn run(&mut self, command: &str, timeout: Duration) -> Option<String> {
        // A unique end marker, so output that happens to contain the prompt cannot end the read early.
        // The echoed command contains the marker with quotes inside it, so only the shell's output matches.
        let marker = format!(
            "__OXVIRT_DONE_{}__",
            self.seen.len() ^ command.len() ^ 0x5a5a
        );
        let quoted_marker = marker.replace("__", "_\"\"_");
        self.send_line(&format!("{command}; echo {quoted_marker}"))
            .ok()?;
        let text = self.wait_for_text(&marker, timeout)?;
        let body = text.strip_suffix(&marker).unwrap_or(&text);
        // Drop everything up to the end of the echoed command line.
        let after_echo = match body.rfind(&quoted_marker) {
            Some(at) => body[at..]
                .split_once('\n')
                .map(|(_, rest)| rest)
                .unwrap_or(""),
            None => body.split_once('\n').map(|(_, rest)| rest).unwrap_or(""),
        };
        // The kernel prints on the same console whenever it likes (a link coming up, a device
        // found): its timestamped lines are not the command's output.
        let output: String = after_echo
            .replace('\r', "")
            .split_inclusive('\n')
            .filter(|line| !is_kernel_log_line(line))
            .collect();
        Some(output)
    }

    /// What has been received and not yet consumed by a wait.
    pub fn pending(&mut self) -> &str {
        self.read_some();
        &self.seen
    }

    fn read_some(&mut self) {
        let mut buf = [0u8; 4096];
        match self.stream.read(&mut buf) {
            Ok(n) if n > 0 => self.seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            Ok(_) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Building initramfs images for nested labs: an L1 guest that runs our binaries (and an L2 guest's files)
/// on top of the guest kit.
pub mod lab {
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    /// The line a lab's L1 script prints at the end, with its exit status.
    pub const L1_EXIT_MARKER: &str = "OXVIRT-LAB-EXIT=";
    /// The line an L1 lab script prints every few seconds from a background loop (see [`run_l1`]).
    pub const HEARTBEAT: &str = "LAB-HEARTBEAT";
    /// L1 is taken as frozen when its console stays silent this long (its heartbeat comes every 10 s).
    const FROZEN_AFTER: Duration = Duration::from_secs(90);
    /// Boots after a frozen one: L1 gets one more chance, a second freeze fails the lab.
    const ATTEMPTS: usize = 2;

    /// Boots the nested lab's L1 guest (QEMU TCG, `-cpu max`, so it has SVM and loads kvm-amd) with `kernel`
    /// and `initramfs`, whose `/lab/run.sh` is the lab script, and returns L1's console log once the script
    /// printed [`L1_EXIT_MARKER`]. Heartbeat lines are left out of the log.
    ///
    /// L1 has one CPU: with two, the emulated L1 locked up now and then, one CPU waiting on the other for an
    /// interrupt that never came. Even so, L1 as a whole has frozen once in a while (no console output at all,
    /// not even the kernel's soft-lockup reports), somewhere in QEMU's emulation of nested SVM: caught in the
    /// act (docs/bench.md), its CPU sits in the idle loop's `hlt` with the timer interrupt pending in its local
    /// APIC, and not even an NMI from QEMU's monitor wakes it. The lab script
    /// therefore prints [`HEARTBEAT`] every 10 s; when L1 falls silent for [`FROZEN_AFTER`], the run is killed
    /// and L1 boots once more from scratch, said on stderr. Only a frozen machine is retried: a run that ends,
    /// whatever its checks said, is returned as it is.
    pub fn run_l1(
        kernel: &Path,
        initramfs: &Path,
        work: &Path,
        timeout: Duration,
    ) -> Result<String, String> {
        let mut failures = Vec::new();
        for attempt in 1..=ATTEMPTS {
            let log = work.join(format!("l1-console-{attempt}.log"));
            match boot_once(kernel, initramfs, &log, timeout) {
                Ok(text) => return Ok(text),
                Err(Outcome::Frozen(why)) => {
                    eprintln!("nested lab: L1 froze (attempt {attempt} of {ATTEMPTS}): {why}");
                    failures.push(why);
                }
                Err(Outcome::Failed(why)) => return Err(why),
            }
        }
        Err(failures.join("\n---- next attempt ----\n"))
    }

    enum Outcome {
        Frozen(String),
        Failed(String),
    }

    /// Kills QEMU when the harness returns or panics.
    struct KillOnDrop(Child);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn boot_once(
        kernel: &Path,
        initramfs: &Path,
        log: &Path,
        timeout: Duration,
    ) -> Result<String, Outcome> {
        let mut qemu = Command::new("qemu-system-x86_64");
        qemu.args(["-accel", "tcg", "-cpu", "max", "-m", "2048", "-smp", "1"])
            .args(["-nodefaults", "-display", "none", "-no-reboot", "-serial"])
            .arg(format!("file:{}", log.display()))
            .arg("-kernel")
            .arg(kernel)
            .arg("-initrd")
            .arg(initramfs)
            .args(["-append", "console=ttyS0 panic=-1 quiet"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: prctl in the forked child before exec touches no memory of ours; QEMU then dies with the
        // thread that started it even if the test process is killed (Drop guards do not run on signals).
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut qemu, || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let qemu = qemu.spawn().expect(
            "qemu-system-x86_64 is needed for the nested lab (apt-get install qemu-system-x86)",
        );
        let mut qemu = KillOnDrop(qemu);
        let read = || String::from_utf8_lossy(&std::fs::read(log).unwrap_or_default()).into_owned();
        let finished = |text: &str| text.lines().any(|l| l.starts_with(L1_EXIT_MARKER));
        let start = Instant::now();
        let (mut last_len, mut last_change) = (0, Instant::now());
        let mut frozen = false;
        // The log is read again only when it grew: the end marker cannot appear otherwise.
        let mut ended = false;
        crate::wait_for(timeout, || {
            let len = std::fs::metadata(log).map(|m| m.len()).unwrap_or(0);
            if len != last_len {
                (last_len, last_change) = (len, Instant::now());
                ended = finished(&read());
            }
            frozen = last_change.elapsed() > FROZEN_AFTER;
            frozen || ended || qemu.0.try_wait().ok().flatten().is_some()
        });
        let text: String = read()
            .lines()
            .filter(|l| l.trim_end() != HEARTBEAT)
            .map(|l| format!("{l}\n"))
            .collect();
        if let Some(keep) = std::env::var_os("OXVIRT_LAB_LOG") {
            let _ = std::fs::write(keep, &text);
        }
        let tail = || {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(80)..].join("\n")
        };
        if frozen {
            return Err(Outcome::Frozen(format!(
                "no console output for {FROZEN_AFTER:?} after {:?}; L1 console tail:\n{}",
                start.elapsed(),
                tail()
            )));
        }
        if !finished(&text) {
            return Err(Outcome::Failed(format!(
                "the L1 lab did not finish within {timeout:?} (after {:?}); L1 console tail:\n{}",
                start.elapsed(),
                tail()
            )));
        }
        eprintln!("nested lab finished in {:?}", start.elapsed());
        Ok(text)
    }

    /// Copies a binary (stripped: debug info only makes the initramfs bigger and slower to unpack) to
    /// `root/lab/bin/NAME`, and the shared libraries `ldd` lists into `root` at their own paths.
    pub fn install_binary(root: &Path, bin: &Path, name: &str) {
        let dest = root.join("lab/bin").join(name);
        create_parent(&dest);
        std::fs::copy(bin, &dest).unwrap_or_else(|e| panic!("cannot copy {}: {e}", bin.display()));
        let _ = Command::new("strip").arg(&dest).status();
        let out = Command::new("ldd")
            .arg(bin)
            .output()
            .expect("ldd is needed to collect a binary's libraries");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let path = line
                .split("=>")
                .nth(1)
                .unwrap_or(line)
                .split_whitespace()
                .next()
                .unwrap_or("");
            if path.starts_with('/') {
                let target = root.join(path.trim_start_matches('/'));
                create_parent(&target);
                std::fs::copy(path, &target)
                    .unwrap_or_else(|e| panic!("cannot copy library {path}: {e}"));
            }
        }
    }

    /// Writes `out` = `base` followed by a newc cpio of `root`: Linux unpacks concatenated archives in order,
    /// so `root`'s files are added to (or replace) the base initramfs's.
    pub fn initramfs_with(base: &Path, root: &Path, out: &Path) {
        std::fs::copy(base, out).unwrap_or_else(|e| panic!("cannot copy {}: {e}", base.display()));
        let cpio = out.with_extension("extra.cpio");
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "cd '{}' && find . | cpio -o -H newc --quiet > '{}'",
                root.display(),
                cpio.display()
            ))
            .status()
            .expect("sh and cpio are needed to build an initramfs");
        assert!(
            status.success(),
            "cpio of {} failed: {status}",
            root.display()
        );
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(out)
            .expect("initramfs is writable");
        // The kernel looks for the next archive at a 4-byte aligned offset; zero padding is skipped.
        let len = f.metadata().expect("initramfs metadata").len();
        std::io::Write::write_all(&mut f, &vec![0u8; ((4 - len % 4) % 4) as usize])
            .expect("padding");
        std::io::copy(
            &mut std::fs::File::open(&cpio).expect("cpio archive"),
            &mut f,
        )
        .expect("appending cpio");
    }

    fn create_parent(path: &Path) {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", parent.display()));
        }
    }
}

/// Running helper programs (qemu-img, qemu-io, our own binaries) from tests that also hold image locks.
pub mod process {
    use std::path::Path;
    use std::process::{Child, Command, Output, Stdio};
    use std::sync::{Mutex, MutexGuard};

    /// Image locks are OFD locks: they live as long as any copy of the file descriptor. A child forked
    /// by one test thread holds copies of every open fd until it execs, so an image closed by another
    /// thread inside that window stays locked a moment longer and a following qemu-img sees "in use".
    /// Spawning and closing image holders take this lock, so a close never falls between another
    /// thread's fork and exec.
    static SPAWN: Mutex<()> = Mutex::new(());

    pub fn spawn_guard() -> MutexGuard<'static, ()> {
        SPAWN
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Spawns `command` (returns once the child has exec'd).
    pub fn spawn(command: &mut Command) -> Child {
        let _guard = spawn_guard();
        command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
    }

    /// Drops something that holds image files open (an image, a device) under the spawn lock.
    pub fn close<T>(holder: T) {
        let _guard = spawn_guard();
        drop(holder);
    }

    /// Runs a program to completion, capturing its output.
    pub fn run(program: &str, args: &[&str]) -> Output {
        spawn(
            Command::new(program)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .wait_with_output()
        .unwrap_or_else(|e| panic!("cannot wait for {program}: {e}"))
    }

    /// A command's status and output, for assertion messages.
    pub fn text(out: &Output) -> String {
        format!(
            "status {:?}\nstdout:\n{}\nstderr:\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Runs a command and insists on success; returns its stdout.
    pub fn ok(program: &str, args: &[&str]) -> String {
        let out = run(program, args);
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A temporary path as an argument.
    pub fn p(path: &Path) -> &str {
        path.to_str().expect("temporary paths are UTF-8")
    }

    /// A loop device over a file (a host block device for a test), detached again on drop,
    /// also when the test fails.
    pub struct LoopDevice(std::path::PathBuf);

    impl LoopDevice {
        pub fn attach(backing: &Path) -> LoopDevice {
            let device = ok("losetup", &["--find", "--show", p(backing)]);
            LoopDevice(std::path::PathBuf::from(device.trim()))
        }

        /// `/dev/loopN`.
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for LoopDevice {
        fn drop(&mut self) {
            let _ = run("losetup", &["--detach", p(&self.0)]);
        }
    }
}

#[cfg(test)]
mod console_tests {
    use super::is_kernel_log_line;

    #[test]
    fn kernel_log_lines_are_told_from_output() {
        assert!(is_kernel_log_line(
            "[    9.040921] IPv6: ADDRCONF(NETDEV_CHANGE): eth0: link becomes ready\n"
        ));
        assert!(is_kernel_log_line("[12345.000001] x"));
        assert!(!is_kernel_log_line("PING-OK\n"));
        assert!(!is_kernel_log_line("[ ok ] started\n"));
        assert!(!is_kernel_log_line("[1.5] not a printk stamp"));
    }
}

/// Firmware-bootable media made from the guest kit with GRUB (`grub-mkrescue`, Debian's grub-common,
/// grub-pc-bin, grub-efi-amd64-bin, xorriso, mtools): hybrid images that boot as a CD-ROM and as a
/// disk, under SeaBIOS and under OVMF.
pub mod media {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use super::GuestKit;

    /// What the kernel command line of a system installed by [`installer_iso`] carries, so a test
    /// can tell it booted from the disk and not from the installer.
    pub const INSTALLED_MARKER: &str = "oxvirt.installed=yes";
    /// The installer prints this, then waits for a line on its console before it writes the disk.
    pub const INSTALLER_READY: &str = "OXVIRT-INSTALLER-READY";
    /// The installer prints this when the disk is written (then the kit powers off).
    pub const INSTALLER_DONE: &str = "OXVIRT-INSTALLER-DONE";

    /// A hybrid image of `tree` with `grub_cfg` as its GRUB configuration.
    fn grub_image(tree: &Path, grub_cfg: &str, out: &Path) {
        let grub = tree.join("boot/grub");
        std::fs::create_dir_all(&grub).expect("media tree");
        std::fs::write(grub.join("grub.cfg"), grub_cfg).expect("grub.cfg");
        let output = Command::new("grub-mkrescue")
            .arg("-o")
            .arg(out)
            .arg(tree)
            .output()
            .expect("grub-mkrescue is needed (Debian: grub-common grub-pc-bin grub-efi-amd64-bin xorriso mtools)");
        assert!(
            output.status.success(),
            "grub-mkrescue failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn entry(title: &str, cmdline: &str) -> String {
        format!(
            "set timeout=1\nserial --unit=0 --speed=115200\nterminal_output --append serial\n\
             menuentry '{title}' {{\n  linux /vmlinuz {cmdline}\n  initrd /initramfs.img\n}}\n"
        )
    }

    /// Writes `out`, a bootable disk image of the kit: GRUB boots the kit's kernel with
    /// [`INSTALLED_MARKER`] on its command line; the kit then prints its boot marker and serves its
    /// shell on the serial console.
    pub fn installed_system(kit: &GuestKit, out: &Path) {
        let tree = out.with_extension("tree");
        std::fs::create_dir_all(&tree).expect("system tree");
        std::fs::copy(&kit.kernel, tree.join("vmlinuz")).expect("kernel");
        std::fs::copy(&kit.initramfs, tree.join("initramfs.img")).expect("initramfs");
        grub_image(
            &tree,
            &entry(
                "oxvirt test system",
                &format!("console=tty0 console=ttyS0 panic=-1 {INSTALLED_MARKER}"),
            ),
            out,
        );
        std::fs::remove_dir_all(&tree).expect("remove system tree");
    }

    /// An installer ISO: it boots the kit, whose /lab/run.sh prints [`INSTALLER_READY`], waits for
    /// a line on the console (the time a test takes screenshots of the installer), writes
    /// [`installed_system`] onto /dev/vda, prints [`INSTALLER_DONE`] and powers off. The kernel also
    /// prints on the screen (console=tty0), so the installer's screen is not blank.
    pub fn installer_iso(kit: &GuestKit, dir: &Path) -> PathBuf {
        let lab = dir.join("installer-lab");
        std::fs::create_dir_all(lab.join("lab")).expect("installer lab tree");
        installed_system(kit, &lab.join("system.img"));
        let script = format!(
            "#!/bin/sh\necho {INSTALLER_READY}\nread answer\n\
             dd if=/system.img of=/dev/vda bs=1M conv=fsync 2>/dev/null || exit 1\n\
             sync\necho {INSTALLER_DONE}\n"
        );
        let run = lab.join("lab/run.sh");
        std::fs::write(&run, script).expect("installer script");
        std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("script mode");
        let tree = dir.join("installer-tree");
        std::fs::create_dir_all(&tree).expect("installer tree");
        std::fs::copy(&kit.kernel, tree.join("vmlinuz")).expect("kernel");
        super::lab::initramfs_with(&kit.initramfs, &lab, &tree.join("initramfs.img"));
        let extra = tree.join("initramfs.extra.cpio");
        let _ = std::fs::remove_file(extra);
        let out = dir.join("installer.iso");
        grub_image(
            &tree,
            &entry(
                "oxvirt test installer",
                "console=tty0 console=ttyS0 panic=-1",
            ),
            &out,
        );
        std::fs::remove_dir_all(&tree).expect("remove installer tree");
        std::fs::remove_dir_all(&lab).expect("remove installer lab");
        out
    }
}
