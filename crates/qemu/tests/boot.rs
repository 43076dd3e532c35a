//! Real guests under real QEMU (TCG): the engine's launch, QMP control and device translation,
//! judged by what the guest prints on its serial console.

use std::path::{Path, PathBuf};
use std::time::Duration;

use oxvirt_qemu::{
    launch, probe_accel, Accel, QemuError, Qmp, QmpEvent, QmpEventMessage, RunPaths, RunState,
};
use oxvirt_testkit::{guest_kit, wait_for, Console, BOOT_MARKER};

const BOUND: Duration = Duration::from_secs(60);

/// Kills the QEMU it guards when the test ends, however it ends.
struct QemuGuard {
    pid: i32,
    uuid: String,
}

impl Drop for QemuGuard {
    fn drop(&mut self) {
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", self.pid)).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&self.uuid) {
            // SAFETY: kill() has no memory-safety preconditions; the pid is our QEMU (checked above).
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
    }
}

/// Kills whatever QEMU a run directory's pid file names, for tests where another process
/// launches it (so the pid may never reach the test).
struct RunDirGuard(RunPaths);

impl Drop for RunDirGuard {
    fn drop(&mut self) {
        if let Some(pid) = oxvirt_qemu::read_pid_file(&self.0) {
            drop(QemuGuard {
                pid,
                uuid: UUID.to_string(),
            });
        }
    }
}

/// A test VM: its run directory (inside a tempdir) and definition.
struct TestVm {
    _tmp: tempfile::TempDir,
    run: RunPaths,
    domain: oxvirt_qemu::Domain,
}

const UUID: &str = "6f1a3c2e-7d4b-4e1f-9a8c-0b5d2e3f4a10";

fn guest_xml(name: &str, extra_os: &str, devices: &str) -> String {
    let kit = guest_kit();
    format!(
        "<domain type='qemu'>
          <name>{name}</name>
          <uuid>{UUID}</uuid>
          <memory unit='MiB'>256</memory>
          <vcpu>1</vcpu>
          <os>
            <type arch='x86_64' machine='pc'>hvm</type>
            <kernel>{kernel}</kernel>
            <initrd>{initrd}</initrd>
            <cmdline>console=ttyS0 panic=-1</cmdline>
            {extra_os}
          </os>
          <features><acpi/></features>
          <devices>
            <serial type='pty'><target port='0'/></serial>
            <console type='pty'><target type='serial' port='0'/></console>
            {devices}
          </devices>
        </domain>",
        kernel = kit.kernel.display(),
        initrd = kit.initramfs.display(),
    )
}

fn test_vm(xml: &str) -> TestVm {
    let tmp = tempfile::tempdir().expect("tempdir");
    let run = RunPaths::new(tmp.path().join("run"));
    let domain = oxvirt_domain::parse_domain_xml(xml).expect("test domain parses");
    TestVm {
        _tmp: tmp,
        run,
        domain,
    }
}

async fn start(vm: &TestVm) -> QemuGuard {
    let launched = launch(&vm.domain, &vm.run, Accel::Tcg)
        .await
        .expect("launch");
    QemuGuard {
        pid: launched.pid,
        uuid: UUID.to_string(),
    }
}

fn console_log(run: &RunPaths) -> String {
    String::from_utf8_lossy(&std::fs::read(run.console_log()).unwrap_or_default()).into_owned()
}

/// Waits until console.log holds `count` boot markers.
fn wait_for_boots(run: &RunPaths, count: usize) {
    let booted = wait_for(BOUND, || {
        console_log(run).matches(BOOT_MARKER).count() >= count
    });
    assert!(
        booted,
        "guest did not print {BOOT_MARKER} {count} time(s); console.log:\n{}",
        console_log(run)
    );
}

fn shell(run: &RunPaths) -> Console {
    let mut console = Console::connect(&run.console_socket(), BOUND).expect("console socket");
    let ready = console.run("echo shell-ready", BOUND);
    assert_eq!(
        ready.as_deref().map(str::trim),
        Some("shell-ready"),
        "guest shell did not answer"
    );
    console
}

async fn next_shutdown(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<QmpEventMessage>,
) -> Option<QmpEvent> {
    loop {
        match tokio::time::timeout(BOUND, events.recv())
            .await
            .expect("event within bound")?
            .event
        {
            event @ QmpEvent::Shutdown { .. } => return Some(event),
            _ => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_resume_and_guest_poweroff() {
    let vm = test_vm(&guest_xml("oxvirt-qemu-pause", "", ""));
    let guard = start(&vm).await;
    wait_for_boots(&vm.run, 1);
    let mut console = shell(&vm.run);
    let (qmp, mut events) = Qmp::connect(&vm.run.qmp_socket()).await.expect("qmp");
    assert_eq!(qmp.query_status().await.unwrap(), RunState::Running);

    qmp.stop().await.unwrap();
    assert_eq!(qmp.query_status().await.unwrap(), RunState::Paused);
    // The guest computes the answer, so its appearance proves the guest ran the command; the
    // typed text itself ("$((6*7))") never contains it.
    console.send_line("echo answer-$((6*7))").unwrap();
    let while_paused = console.wait_for_text("answer-42", Duration::from_secs(3));
    assert_eq!(while_paused, None, "a paused guest must not answer");

    qmp.cont().await.unwrap();
    assert!(
        console.wait_for_text("answer-42", BOUND).is_some(),
        "resumed guest answers"
    );
    assert_eq!(qmp.query_status().await.unwrap(), RunState::Running);

    qmp.system_powerdown().await.unwrap();
    let shutdown = next_shutdown(&mut events).await;
    assert_eq!(
        shutdown,
        Some(QmpEvent::Shutdown {
            guest: true,
            reason: "guest-shutdown".into()
        })
    );
    let closed =
        tokio::time::timeout(BOUND, async { while events.recv().await.is_some() {} }).await;
    assert!(closed.is_ok(), "event stream ends when QEMU exits");
    let uuid = vm.domain.uuid;
    let mut gone = false;
    for _ in 0..600 {
        if !oxvirt_qemu::is_alive(guard.pid, &uuid).await {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "QEMU exits after the guest powers off");
    assert!(
        console_log(&vm.run).contains("reboot: Power down"),
        "the guest powered itself off"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn system_reset_reboots_the_guest() {
    let vm = test_vm(&guest_xml("oxvirt-qemu-reset", "", ""));
    let _guard = start(&vm).await;
    wait_for_boots(&vm.run, 1);
    let (qmp, mut events) = Qmp::connect(&vm.run.qmp_socket()).await.expect("qmp");
    qmp.system_reset().await.unwrap();
    let reset = tokio::time::timeout(BOUND, async {
        loop {
            match events.recv().await.map(|m| m.event) {
                Some(QmpEvent::Reset { guest }) => return Some(guest),
                Some(_) => continue,
                None => return None,
            }
        }
    })
    .await
    .expect("RESET event within bound");
    assert_eq!(reset, Some(false), "a QMP reset is not the guest's doing");
    wait_for_boots(&vm.run, 2);
    qmp.quit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn qemu_is_detached_from_the_launcher() {
    // Also pins QEMU to host CPU 0 (<vcpu cpuset>), which launch applies before exec.
    let xml = guest_xml("oxvirt-qemu-detached", "", "")
        .replace("<vcpu>1</vcpu>", "<vcpu cpuset='0'>1</vcpu>");
    let vm = test_vm(&xml);
    let guard = start(&vm).await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", guard.pid)).unwrap();
    let allowed = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap();
    assert_eq!(
        allowed.trim(),
        "0",
        "vcpu cpuset becomes QEMU's CPU affinity"
    );
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", guard.pid)).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let (ppid, session): (i32, i32) = (fields[1].parse().unwrap(), fields[3].parse().unwrap());
    assert_ne!(
        ppid,
        std::process::id() as i32,
        "QEMU must not be the launcher's child"
    );
    // SAFETY: getsid(0) only reads the calling process's session id.
    let our_session = unsafe { libc::getsid(0) };
    assert_ne!(session, our_session, "QEMU runs in a session of its own");
    let stdin = std::fs::read_link(format!("/proc/{}/fd/0", guard.pid)).unwrap();
    assert_eq!(stdin, Path::new("/dev/null"));
    let stdout = std::fs::read_link(format!("/proc/{}/fd/1", guard.pid)).unwrap();
    assert_eq!(stdout, vm.run.qemu_log());
    assert_eq!(oxvirt_qemu::read_pid_file(&vm.run), Some(guard.pid));
    // A second launch into the same run directory must not disturb the running VM.
    let again = launch(&vm.domain, &vm.run, Accel::Tcg).await.unwrap_err();
    assert!(again.to_string().contains("already holds"), "{again}");
    assert!(vm.run.qmp_socket().exists());
    assert!(oxvirt_qemu::is_alive(guard.pid, &vm.domain.uuid).await);
    let other = oxvirt_qemu::Uuid::parse_str("00000000-0000-0000-0000-00000000abcd").unwrap();
    assert!(
        !oxvirt_qemu::is_alive(guard.pid, &other).await,
        "another VM's uuid does not match"
    );
    oxvirt_qemu::terminate(guard.pid, &vm.domain.uuid, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(!oxvirt_qemu::is_alive(guard.pid, &vm.domain.uuid).await);
}

/// A raw image with known bytes at sector 0 and sector 1000.
fn patterned_disk(dir: &Path, name: &str, first: &[u8], later: &[u8]) -> PathBuf {
    let path = dir.join(name);
    let mut image = vec![0u8; 1024 * 1024];
    image[..first.len()].copy_from_slice(first);
    image[512 * 1000..512 * 1000 + later.len()].copy_from_slice(later);
    std::fs::write(&path, image).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn guest_sees_disks_and_nic_as_defined() {
    let images = tempfile::tempdir().unwrap();
    let rw = patterned_disk(
        images.path(),
        "rw.raw",
        b"OXVIRT-SECTOR-ZERO",
        b"OXVIRT-SECTOR-1000",
    );
    let ro = patterned_disk(images.path(), "ro.raw", b"READ-ONLY-DISK", b"");
    let devices = format!(
        "<disk type='file' device='disk'>
           <driver name='qemu' type='raw' cache='none' io='native' discard='unmap'/>
           <source file='{}'/><target dev='vda' bus='virtio'/><serial>OXV-SERIAL-1</serial>
         </disk>
         <disk type='file' device='disk'>
           <driver name='qemu' type='raw' cache='writethrough'/>
           <source file='{}'/><target dev='vdb' bus='virtio'/><readonly/>
         </disk>
         <interface type='user'><mac address='52:54:00:12:34:56'/><model type='virtio'/></interface>
         <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>",
        rw.display(),
        ro.display()
    );
    let vm = test_vm(&guest_xml("oxvirt-qemu-devices", "", &devices));
    let _guard = start(&vm).await;
    wait_for_boots(&vm.run, 1);
    let mut console = shell(&vm.run);
    let mut run = |command: &str| {
        console
            .run(command, BOUND)
            .unwrap_or_else(|| panic!("no answer to {command}"))
    };

    assert_eq!(
        run("cat /sys/block/vda/size").trim(),
        "2048",
        "1 MiB = 2048 sectors"
    );
    let sector0 = run("dd if=/dev/vda bs=512 count=1 2>/dev/null | hexdump -C | head -n 2");
    assert!(
        sector0.contains("|OXVIRT-SECTOR-ZE|"),
        "sector 0 as the guest reads it:\n{sector0}"
    );
    let sector1000 =
        run("dd if=/dev/vda bs=512 skip=1000 count=1 2>/dev/null | hexdump -C | head -n 1");
    assert!(
        sector1000.contains("|OXVIRT-SECTOR-10|"),
        "sector 1000 as the guest reads it:\n{sector1000}"
    );
    assert_eq!(run("cat /sys/block/vda/serial").trim(), "OXV-SERIAL-1");
    assert_eq!(run("cat /sys/block/vda/ro").trim(), "0");
    assert_eq!(
        run("cat /sys/block/vdb/ro").trim(),
        "1",
        "<readonly/> disk is read-only in the guest"
    );
    // writethrough: the device reports no volatile write cache.
    assert_eq!(
        run("cat /sys/block/vdb/queue/write_cache").trim(),
        "write through"
    );
    assert_eq!(
        run("cat /sys/block/vda/queue/write_cache").trim(),
        "write back"
    );

    // The guest writes; the host sees it in the image (cache='none' means no host page cache
    // in between, and the guest's sync flushes the device).
    run("printf GUEST-WROTE-THIS | dd of=/dev/vda bs=512 seek=2000 conv=notrunc,fsync 2>/dev/null; sync");
    let image = std::fs::read(&rw).unwrap();
    assert_eq!(&image[512 * 2000..512 * 2000 + 16], b"GUEST-WROTE-THIS");

    assert_eq!(
        run("cat /sys/class/net/eth0/address").trim(),
        "52:54:00:12:34:56"
    );
    assert!(run("cat /sys/class/misc/hw_random/rng_available").contains("virtio_rng"));
}

/// `<driver queues='2'>` gives the guest a virtio-blk with two request queues, one blk-mq
/// hardware queue each (with 3 vCPUs, QEMU's default would be 3); the disk still reads through
/// its copy-on-read node and its error policies.
#[tokio::test(flavor = "multi_thread")]
async fn guest_sees_virtio_blk_queues() {
    let images = tempfile::tempdir().unwrap();
    let disk = patterned_disk(images.path(), "mq.raw", b"OXVIRT-MQ-DISK", b"");
    let devices = format!(
        "<disk type='file' device='disk'>
           <driver name='qemu' type='raw' queues='2' queue_size='64' copy_on_read='on' error_policy='stop' rerror_policy='report'/>
           <source file='{}'/><target dev='vda' bus='virtio'/>
         </disk>",
        disk.display()
    );
    let xml =
        guest_xml("oxvirt-qemu-blk-mq", "", &devices).replace("<vcpu>1</vcpu>", "<vcpu>3</vcpu>");
    let vm = test_vm(&xml);
    let _guard = start(&vm).await;
    wait_for_boots(&vm.run, 1);
    let mut console = shell(&vm.run);
    let mut run = |command: &str| {
        console
            .run(command, BOUND)
            .unwrap_or_else(|| panic!("no answer to {command}"))
    };
    assert_eq!(run("grep -c ^processor /proc/cpuinfo").trim(), "3");
    assert_eq!(run("ls /sys/block/vda/mq/ | wc -l").trim(), "2");
    let sector0 = run("dd if=/dev/vda bs=512 count=1 2>/dev/null | hexdump -C | head -n 1");
    assert!(sector0.contains("|OXVIRT-MQ-DISK"), "{sector0}");
}

/// A `<serial type='tcp'>` server on 127.0.0.1: the test connects to it and reads what the
/// guest writes to that port (ttyS1; ttyS0 stays the console the test drives).
#[tokio::test(flavor = "multi_thread")]
async fn serial_tcp_server_carries_guest_output() {
    use std::io::Read;
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let devices = format!(
        "<serial type='tcp'>
           <source mode='bind' host='127.0.0.1' service='{port}'/>
           <protocol type='raw'/>
           <target port='1'/>
         </serial>"
    );
    let vm = test_vm(&guest_xml("oxvirt-qemu-serial-tcp", "", &devices));
    let _guard = start(&vm).await;
    wait_for_boots(&vm.run, 1);
    let mut console = shell(&vm.run);
    let mut socket = std::net::TcpStream::connect(("127.0.0.1", port)).expect("QEMU listens");
    socket.set_read_timeout(Some(BOUND)).unwrap();
    console
        .run("echo OXVIRT-OVER-TCP > /dev/ttyS1", BOUND)
        .expect("guest wrote to ttyS1");
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("OXVIRT-OVER-TCP") {
        let n = socket.read(&mut buf).expect("read from the serial socket");
        assert!(
            n > 0,
            "socket closed; got {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
}

/// Sound cards on a `file` audio backend: QEMU starts with them, the guest finds them on its
/// PCI bus (the cloud kernel has no sound drivers, so by vendor:device), and QEMU writes the
/// WAV file on the host.
#[tokio::test(flavor = "multi_thread")]
async fn guest_sees_sound_cards_on_a_wav_backend() {
    let out = tempfile::tempdir().unwrap();
    let wav = out.path().join("sound.wav");
    let devices = format!(
        "<sound model='ich9'><codec type='output'/><audio id='1'/></sound>
         <sound model='ac97'/>
         <sound model='es1370'/>
         <audio id='1' type='file' path='{}'/>",
        wav.display()
    );
    let vm = test_vm(&guest_xml("oxvirt-qemu-sound", "", &devices));
    let _guard = start(&vm).await;
    wait_for_boots(&vm.run, 1);
    let mut console = shell(&vm.run);
    let ids = console
        .run(
            "for d in /sys/bus/pci/devices/*; do echo $(cat $d/vendor):$(cat $d/device); done",
            BOUND,
        )
        .expect("PCI ids");
    for (card, id) in [
        ("ich9-intel-hda", "0x8086:0x293e"),
        ("AC97", "0x8086:0x2415"),
        ("ES1370", "0x1274:0x5000"),
    ] {
        assert!(
            ids.contains(id),
            "{card} ({id}) not on the guest's PCI bus:\n{ids}"
        );
    }
    assert!(wav.is_file(), "QEMU did not open the WAV file");
}

/// A network namespace made for one test, deleted with whatever runs in it when dropped: tests
/// that touch real links never use the machine's own namespace.
struct Netns(String);

impl Netns {
    fn create() -> Netns {
        let name = format!("oxvirt-qt-{}", std::process::id());
        let netns = Netns(name);
        netns.ip(&["netns", "add", &netns.0]);
        netns
    }

    fn ip(&self, args: &[&str]) {
        let status = std::process::Command::new("ip")
            .args(args)
            .status()
            .unwrap();
        assert!(status.success(), "ip {args:?} failed");
    }

    /// `ip` inside the namespace.
    fn ip_in(&self, args: &[&str]) {
        let mut all = vec!["-n", self.0.as_str()];
        all.extend_from_slice(args);
        self.ip(&all);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let pids = std::process::Command::new("ip")
            .args(["netns", "pids", &self.0])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            // SAFETY: kill(2) of a process inside this test's own namespace (its QEMU).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

/// `<interface type='ethernet'><target dev='T' managed='no'/>`: launch opens the host's own TAP
/// (QEMU gets the descriptor) and the guest talks through it. All of it inside a namespace made
/// for the test: the TAP is created there, and the launch runs there (on a thread that entered
/// it, so QEMU starts there too).
#[tokio::test(flavor = "multi_thread")]
async fn ethernet_interface_uses_an_existing_tap() {
    let netns = Netns::create();
    let tap = "oxveth0";
    netns.ip_in(&["tuntap", "add", "dev", tap, "mode", "tap", "vnet_hdr"]);
    netns.ip_in(&["addr", "add", "10.77.0.1/24", "dev", tap]);
    netns.ip_in(&["link", "set", tap, "up"]);
    netns.ip_in(&["link", "set", "lo", "up"]);
    let devices = format!(
        "<interface type='ethernet'>
           <mac address='52:54:00:77:00:02'/>
           <target dev='{tap}' managed='no'/>
           <model type='virtio'/>
         </interface>"
    );
    let vm = test_vm(&guest_xml("oxvirt-qemu-ethernet", "", &devices));
    let _guard = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let ns = std::fs::File::open(format!("/run/netns/{}", netns.0)).unwrap();
                // SAFETY: setns on an open network namespace file, for this thread (and the
                // threads and processes it starts) only.
                let entered = unsafe {
                    libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET)
                };
                assert_eq!(entered, 0, "{}", std::io::Error::last_os_error());
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(start(&vm))
            })
            .join()
            .unwrap()
    });
    wait_for_boots(&vm.run, 1);
    let mut console = shell(&vm.run);
    let mut run = |command: &str| {
        console
            .run(command, BOUND)
            .unwrap_or_else(|| panic!("no answer to {command}"))
    };
    run("ip link set eth0 up; ip addr add 10.77.0.2/24 dev eth0");
    // A TCG guest on a loaded host answers slowly: a few tries.
    let ping = run(
        "r=PING-FAILED; for i in 1 2 3 4 5 6 7 8 9 10; do \
         if ping -c 1 -W 3 10.77.0.1 >/dev/null 2>&1; then r=PING-OK; break; fi; sleep 1; done; echo $r",
    );
    // Kernel messages (eth0's link coming up) share the console with the command's output.
    let ping_ok = ping.lines().any(|line| line.trim() == "PING-OK");
    let diagnostics = if ping_ok {
        String::new()
    } else {
        let guest = run("ip addr; ip route; cat /sys/class/net/eth0/carrier");
        let host = std::process::Command::new("ip")
            .args(["-n", &netns.0, "-s", "addr"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        format!("guest:\n{guest}\nhost namespace:\n{host}")
    };
    assert!(
        ping_ok,
        "the guest cannot reach the TAP's address: {ping}\n{diagnostics}"
    );
}

/// Guest RAM from the memory backends `<memoryBacking>` asks for (memfd shared and
/// preallocated; a file in the run directory, shared, discarded): QEMU starts, the guest runs
/// with all its memory, and no RAM file is left in the run directory.
#[tokio::test(flavor = "multi_thread")]
async fn guest_runs_on_memfd_and_file_memory_backends() {
    for backing in [
        "<source type='memfd'/><access mode='shared'/><allocation mode='immediate'/>",
        "<source type='file'/><access mode='shared'/><discard/>",
    ] {
        let xml = guest_xml("oxvirt-qemu-membacking", "", "").replace(
            "<vcpu>1</vcpu>",
            &format!("<vcpu>1</vcpu><memoryBacking>{backing}</memoryBacking>"),
        );
        let vm = test_vm(&xml);
        let _guard = start(&vm).await;
        wait_for_boots(&vm.run, 1);
        let mut console = shell(&vm.run);
        let total = console
            .run("grep MemTotal /proc/meminfo", BOUND)
            .expect("meminfo");
        let kib: u64 = total
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("MemTotal line: {total}"));
        assert!(
            (200_000..=262_144).contains(&kib),
            "{backing}: MemTotal {kib} KiB"
        );
        let leftovers: Vec<_> = std::fs::read_dir(&vm.run.dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("mem"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}

/// `<cpu><numa>` with two cells: the guest sees two NUMA nodes, with their vCPUs and memory.
#[tokio::test(flavor = "multi_thread")]
async fn guest_sees_its_numa_nodes() {
    let xml = guest_xml("oxvirt-qemu-numa", "", "").replace(
        "<vcpu>1</vcpu>",
        "<vcpu>2</vcpu>
         <cpu><numa>
           <cell id='0' cpus='0' memory='128' unit='MiB'/>
           <cell id='1' cpus='1' memory='128' unit='MiB' memAccess='shared'/>
         </numa></cpu>",
    );
    let vm = test_vm(&xml);
    let _guard = start(&vm).await;
    wait_for_boots(&vm.run, 1);
    let mut console = shell(&vm.run);
    let mut run = |command: &str| {
        console
            .run(command, BOUND)
            .unwrap_or_else(|| panic!("no answer to {command}"))
    };
    assert_eq!(
        run("ls -d /sys/devices/system/node/node* | wc -l").trim(),
        "2"
    );
    assert_eq!(
        run("cat /sys/devices/system/node/node1/cpulist").trim(),
        "1"
    );
    let node1 = run("grep MemTotal /sys/devices/system/node/node1/meminfo");
    let kib: u64 = node1
        .split_whitespace()
        .rev()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("node1 meminfo: {node1}"));
    // (The kernel keeps some of each node for itself.)
    assert!((64_000..=131_072).contains(&kib), "node1 has {kib} KiB");
}

#[tokio::test(flavor = "multi_thread")]
async fn on_reboot_destroy_ends_qemu_when_the_guest_reboots() {
    let xml = guest_xml("oxvirt-qemu-noreboot", "", "")
        .replace("<features>", "<on_reboot>destroy</on_reboot><features>");
    let vm = test_vm(&xml);
    let _guard = start(&vm).await;
    wait_for_boots(&vm.run, 1);
    let mut console = shell(&vm.run);
    let (_qmp, mut events) = Qmp::connect(&vm.run.qmp_socket()).await.expect("qmp");
    console.send_line("reboot -f").unwrap();
    let shutdown = next_shutdown(&mut events).await;
    assert_eq!(
        shutdown,
        Some(QmpEvent::Shutdown {
            guest: true,
            reason: "guest-reset".into()
        })
    );
    let closed =
        tokio::time::timeout(BOUND, async { while events.recv().await.is_some() {} }).await;
    assert!(closed.is_ok(), "QEMU exits instead of rebooting");
    assert_eq!(console_log(&vm.run).matches(BOOT_MARKER).count(), 1);
}

#[tokio::test]
async fn missing_kernel_is_refused_before_spawning() {
    let xml = guest_xml("oxvirt-qemu-nokernel", "", "");
    let kit = guest_kit();
    let xml = xml.replace(&kit.kernel.display().to_string(), "/nonexistent/vmlinuz");
    let vm = test_vm(&xml);
    let err = launch(&vm.domain, &vm.run, Accel::Tcg).await.unwrap_err();
    match &err {
        QemuError::Invalid {
            element, reason, ..
        } => {
            assert_eq!(element, "os/kernel");
            assert!(reason.contains("/nonexistent/vmlinuz"), "{reason}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(!vm.run.qemu_log().exists(), "nothing was started");
}

#[tokio::test]
async fn qemu_start_failure_carries_the_log_tail() {
    // A CPU model QEMU does not know: the translation passes it through, QEMU refuses it.
    let xml = guest_xml("oxvirt-qemu-badcpu", "", "").replace(
        "<features>",
        "<cpu mode='custom'><model>oxvirt-no-such-cpu</model></cpu><features>",
    );
    let vm = test_vm(&xml);
    let err = match launch(&vm.domain, &vm.run, Accel::Tcg).await {
        Ok(launched) => {
            let _guard = QemuGuard {
                pid: launched.pid,
                uuid: UUID.to_string(),
            };
            panic!("QEMU with an unknown CPU model was reported started");
        }
        Err(err) => err,
    };
    match &err {
        QemuError::EarlyExit { log_tail } => {
            assert!(
                log_tail.contains("oxvirt-no-such-cpu"),
                "log tail: {log_tail}"
            );
            assert!(
                !log_tail.contains("---- oxvirt: starting"),
                "only QEMU's own output"
            );
        }
        other => panic!("expected EarlyExit, got {other:?}"),
    }
    assert!(err.to_string().contains("oxvirt-no-such-cpu"));
}

#[test]
fn probe_reports_tcg_on_a_host_without_hardware_kvm() {
    let probe = probe_accel();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let has_virt_flag = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    let vendor_module =
        Path::new("/sys/module/kvm_intel").exists() || Path::new("/sys/module/kvm_amd").exists();
    if Path::new("/sys/module/kvm_pvm").exists() && !vendor_module {
        // This project's machines: /dev/kvm is kvm_pvm.
        assert_eq!(probe.accel, Accel::Tcg);
        assert!(probe.reason.contains("kvm_pvm"), "{}", probe.reason);
    } else if !has_virt_flag || !vendor_module {
        assert_eq!(probe.accel, Accel::Tcg, "{}", probe.reason);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn settings_only_qmp_can_make_are_applied_at_launch() {
    let devices = "<interface type='user'><model type='virtio'/><link state='down'/></interface>
         <graphics type='vnc' socket='VNC_SOCKET' passwd='s3cret'/>
         <memballoon model='virtio'><stats period='7'/></memballoon>";
    let tmp = tempfile::tempdir().unwrap();
    let vnc_socket = tmp.path().join("vnc.sock");
    let xml = guest_xml(
        "oxvirt-qemu-runtime",
        "",
        &devices.replace("VNC_SOCKET", &vnc_socket.display().to_string()),
    )
    .replace(
        "<vcpu>",
        "<currentMemory unit='MiB'>192</currentMemory><vcpu>",
    );
    let vm = test_vm(&xml);
    let _guard = start(&vm).await;
    let (qmp, _events) = Qmp::connect(&vm.run.qmp_socket()).await.expect("qmp");

    let period = qmp
        .execute(
            "qom-get",
            Some(serde_json::json!({"path": "/machine/peripheral/balloon0", "property": "guest-stats-polling-interval"})),
        )
        .await
        .unwrap();
    assert_eq!(period, 7);
    let vnc = qmp.execute("query-vnc", None).await.unwrap();
    assert_eq!(vnc["auth"], "vnc", "password authentication is on: {vnc}");
    assert!(
        vnc_socket.exists(),
        "VNC listens on the socket from the definition"
    );

    // The guest sees the link down: no carrier even once the interface is up.
    wait_for_boots(&vm.run, 1);
    let mut console = shell(&vm.run);
    let carrier = console
        .run(
            "ip link set eth0 up; cat /sys/class/net/eth0/carrier",
            BOUND,
        )
        .unwrap();
    assert_eq!(carrier.trim(), "0");
    qmp.execute(
        "set_link",
        Some(serde_json::json!({"name": "net0", "up": true})),
    )
    .await
    .unwrap();
    let up = wait_for(BOUND, || {
        console
            .run("cat /sys/class/net/eth0/carrier", BOUND)
            .is_some_and(|c| c.trim() == "1")
    });
    assert!(up, "carrier returns when the link is set up");
    qmp.quit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn q35_smp_guest_boots() {
    let xml = guest_xml("oxvirt-qemu-q35", "", "")
        .replace("machine='pc'", "machine='q35'")
        .replace("<vcpu>1</vcpu>", "<vcpu>2</vcpu>");
    let vm = test_vm(&xml);
    let _guard = start(&vm).await;
    wait_for_boots(&vm.run, 1);
    let mut console = shell(&vm.run);
    assert_eq!(
        console
            .run("grep -c ^processor /proc/cpuinfo", BOUND)
            .unwrap()
            .trim(),
        "2"
    );
    // q35's host bridge is the Q35/MCH (8086:29c0).
    let bridge = console
        .run("cat /sys/bus/pci/devices/0000:00:00.0/device", BOUND)
        .unwrap();
    assert_eq!(bridge.trim(), "0x29c0");
}

/// Set by `qemu_outlives_its_launcher` for the child copy of this test binary that launches.
const LAUNCHER_ENV: &str = "OXVIRT_QEMU_TEST_LAUNCHER_DIR";

/// Not a test on its own: the launcher half of `qemu_outlives_its_launcher`, run in a child
/// process of this test binary. It launches a VM, prints QEMU's pid and then waits to be killed.
#[tokio::test(flavor = "multi_thread")]
async fn launcher_process_helper() {
    let Some(dir) = std::env::var_os(LAUNCHER_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let xml = std::fs::read_to_string(dir.join("domain.xml")).unwrap();
    let domain = oxvirt_domain::parse_domain_xml(&xml).unwrap();
    let launched = launch(&domain, &RunPaths::new(dir.join("run")), Accel::Tcg)
        .await
        .unwrap();
    println!("LAUNCHED-PID={}", launched.pid);
    tokio::time::sleep(BOUND).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn qemu_outlives_its_launcher() {
    use std::io::{BufRead, BufReader};
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("domain.xml"),
        guest_xml("oxvirt-qemu-orphan", "", ""),
    )
    .unwrap();
    let run = RunPaths::new(tmp.path().join("run"));
    let _run_guard = RunDirGuard(run.clone());
    let mut launcher = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "launcher_process_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(LAUNCHER_ENV, tmp.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut pid = None;
    for line in BufReader::new(launcher.stdout.take().unwrap()).lines() {
        // libtest may print "test NAME ... " on the same line first.
        let line = line.unwrap();
        if let Some((_, found)) = line.split_once("LAUNCHED-PID=") {
            pid = Some(found.trim().parse::<i32>().unwrap());
            break;
        }
    }
    let pid = pid.expect("the launcher reports QEMU's pid");
    // SIGKILL the launcher, as a crashed daemon would die.
    launcher.kill().unwrap();
    launcher.wait().unwrap();

    let uuid = oxvirt_qemu::Uuid::parse_str(UUID).unwrap();
    assert!(
        oxvirt_qemu::is_alive(pid, &uuid).await,
        "QEMU survives its launcher"
    );
    // A new "daemon" re-attaches through the run directory alone.
    assert_eq!(oxvirt_qemu::read_pid_file(&run), Some(pid));
    let (qmp, _events) = Qmp::connect(&run.qmp_socket())
        .await
        .expect("re-attach over QMP");
    assert_eq!(qmp.query_status().await.unwrap(), RunState::Running);
    wait_for_boots(&run, 1);
    let mut console = shell(&run);
    assert_eq!(console.run("echo $((40+2))", BOUND).unwrap().trim(), "42");
    qmp.quit().await.unwrap();
}

#[tokio::test]
async fn missing_emulator_is_a_clear_error() {
    let xml = guest_xml(
        "oxvirt-qemu-noemu",
        "",
        "<emulator>/nonexistent/qemu-system-x86_64</emulator>",
    );
    let vm = test_vm(&xml);
    let err = launch(&vm.domain, &vm.run, Accel::Tcg).await.unwrap_err();
    match &err {
        QemuError::Spawn { emulator, reason } => {
            assert_eq!(emulator, Path::new("/nonexistent/qemu-system-x86_64"));
            assert!(reason.contains("not found"), "{reason}");
        }
        other => panic!("expected Spawn, got {other:?}"),
    }
}

/// The guest kit's initramfs with an uncompressed cpio holding the pvpanic driver modules
/// under /extra in front (the kernel unpacks concatenated archives in order).
fn initrd_with_pvpanic(dir: &Path) -> PathBuf {
    let kit = guest_kit();
    let modules = kit
        .modules_dir
        .join(&kit.kernel_version)
        .join("kernel/drivers/misc/pvpanic");
    let staging = dir.join("extra-root");
    std::fs::create_dir_all(staging.join("extra")).unwrap();
    for module in ["pvpanic.ko", "pvpanic-mmio.ko"] {
        std::fs::copy(modules.join(module), staging.join("extra").join(module)).unwrap();
    }
    let cpio = std::process::Command::new("sh")
        .arg("-c")
        .arg("find extra | cpio -o -H newc --quiet")
        .current_dir(&staging)
        .output()
        .expect("cpio (apt-get install cpio)");
    assert!(
        cpio.status.success(),
        "cpio failed: {}",
        String::from_utf8_lossy(&cpio.stderr)
    );
    // The uncompressed archive goes first: the kernel finds a cpio header after an uncompressed
    // archive, but not reliably after a compressed one.
    let mut initrd = cpio.stdout;
    initrd.extend_from_slice(&std::fs::read(&kit.initramfs).unwrap());
    let path = dir.join("initrd-pvpanic.img");
    std::fs::write(&path, initrd).unwrap();
    path
}

/// A guest whose kernel panicked and reported it; dropping it kills QEMU and removes its files.
struct CrashedGuest {
    _vm: TestVm,
    _images: tempfile::TempDir,
    _guard: QemuGuard,
    qmp: Qmp,
    /// The events after GUEST_PANICKED.
    events: tokio::sync::mpsc::UnboundedReceiver<QmpEventMessage>,
}

/// Boots a guest with the given on_crash action and makes its kernel panic.
async fn crash_guest(name: &str, on_crash: &str) -> CrashedGuest {
    let images = tempfile::tempdir().unwrap();
    let initrd = initrd_with_pvpanic(images.path());
    let xml = guest_xml(name, "", "")
        .replace(
            &guest_kit().initramfs.display().to_string(),
            &initrd.display().to_string(),
        )
        .replace(
            "<features>",
            &format!("<on_crash>{on_crash}</on_crash><features>"),
        );
    let vm = test_vm(&xml);
    let guard = start(&vm).await;
    wait_for_boots(&vm.run, 1);
    let mut console = shell(&vm.run);
    let loaded = console.run(
        "insmod /extra/pvpanic.ko && insmod /extra/pvpanic-mmio.ko && echo loaded",
        BOUND,
    );
    assert_eq!(
        loaded.as_deref().map(str::trim),
        Some("loaded"),
        "pvpanic driver loads in the guest"
    );
    let (qmp, mut events) = Qmp::connect(&vm.run.qmp_socket()).await.expect("qmp");
    console.send_line("echo c > /proc/sysrq-trigger").unwrap();
    assert!(
        console.wait_for_text("Trigger a crash", BOUND).is_some(),
        "the guest takes the command"
    );
    // Then disconnect: QEMU holds back serial output for a console client that does not read,
    // and the panicking kernel would wait on its console before it reports the panic.
    drop(console);
    let panicked = tokio::time::timeout(BOUND, async {
        loop {
            match events.recv().await.map(|m| m.event) {
                Some(QmpEvent::GuestPanicked) => return true,
                Some(_) => continue,
                None => return false,
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no GUEST_PANICKED within bound; console.log:\n{}",
            console_log(&vm.run)
        )
    });
    assert!(panicked, "QEMU reports the guest's panic");
    CrashedGuest {
        _vm: vm,
        _images: images,
        _guard: guard,
        qmp,
        events,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn on_crash_destroy_ends_qemu_on_guest_panic() {
    let mut crashed = crash_guest("oxvirt-qemu-crash-destroy", "destroy").await;
    let events = &mut crashed.events;
    let shutdown = next_shutdown(events).await;
    assert_eq!(
        shutdown,
        Some(QmpEvent::Shutdown {
            guest: true,
            reason: "guest-panic".into()
        })
    );
    let closed =
        tokio::time::timeout(BOUND, async { while events.recv().await.is_some() {} }).await;
    assert!(closed.is_ok(), "QEMU exits after the panic");
}

#[tokio::test(flavor = "multi_thread")]
async fn on_crash_preserve_keeps_the_panicked_guest() {
    let crashed = crash_guest("oxvirt-qemu-crash-preserve", "preserve").await;
    let qmp = &crashed.qmp;
    assert_eq!(qmp.query_status().await.unwrap(), RunState::GuestPanicked);
    qmp.quit().await.unwrap();
}

/// A sparse raw image of `mib` MiB (no blocks written: tests stay small on disk).
fn sparse_disk(dir: &Path, name: &str, mib: u64) -> PathBuf {
    let path = dir.join(name);
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(mib * 1024 * 1024).unwrap();
    path
}

/// The PCI address a normalized domain gave a device, as the guest names it (`bb:ss.f`).
fn pci_name(address: &Option<oxvirt_domain::Address>) -> String {
    match address {
        Some(oxvirt_domain::Address::Pci(a)) => {
            format!("{:02x}:{:02x}.{:x}", a.bus, a.slot, a.function)
        }
        other => panic!("not a PCI address: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn q35_virtio_disk_sits_behind_its_pcie_root_port() {
    let images = tempfile::tempdir().unwrap();
    let disk = sparse_disk(images.path(), "vda.raw", 1);
    let devices = format!(
        "<disk type='file' device='disk'><driver name='qemu' type='raw'/>
           <source file='{}'/><target dev='vda' bus='virtio'/></disk>",
        disk.display()
    );
    let xml = guest_xml("oxvirt-qemu-q35-root-port", "", &devices)
        .replace("machine='pc'", "machine='q35'");
    let vm = test_vm(&xml);
    // The domain crate put the disk alone on a root port's bus, the root port on bus 0.
    let disk_address = &vm.domain.devices.disks[0].address;
    let Some(oxvirt_domain::Address::Pci(on)) = disk_address else {
        panic!("{disk_address:?}")
    };
    assert!(on.bus > 0 && on.slot == 0, "{on:?}");
    let port = vm
        .domain
        .devices
        .controllers
        .iter()
        .find(|c| c.index == u32::from(on.bus) && c.model.as_deref() == Some("pcie-root-port"))
        .expect("the disk's bus is a pcie-root-port");
    let port_name = pci_name(&port.address);
    assert!(port_name.starts_with("00:"), "{port_name}");

    let _guard = start(&vm).await;
    wait_for_boots(&vm.run, 1);
    let mut console = shell(&vm.run);
    let mut run = |command: &str| {
        console
            .run(command, BOUND)
            .unwrap_or_else(|| panic!("no answer to {command}"))
    };
    assert_eq!(run("cat /sys/block/vda/size").trim(), "2048");
    // The guest numbers the buses behind the root ports in their order on bus 0, as libvirt
    // numbers them: the disk is function 0 of the one slot of that root port's bus.
    let path = run("readlink -f /sys/block/vda");
    let expected = format!("/0000:{port_name}/0000:{}/", pci_name(disk_address));
    assert!(path.contains(&expected), "{path} should contain {expected}");
    // QEMU's generic PCIe root port (1b36:000c).
    assert_eq!(
        run(&format!("cat /sys/bus/pci/devices/0000:{port_name}/device")).trim(),
        "0x000c"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pc_guest_with_40_virtio_disks_sees_them_all() {
    let images = tempfile::tempdir().unwrap();
    let mut devices = String::new();
    for i in 0..40u8 {
        // vda..vdz, vdaa..vdan
        let name = if i < 26 {
            format!("vd{}", char::from(b'a' + i))
        } else {
            format!("vda{}", char::from(b'a' + i - 26))
        };
        let disk = sparse_disk(images.path(), &format!("{name}.raw"), 1);
        devices.push_str(&format!(
            "<disk type='file' device='disk'><driver name='qemu' type='raw'/>
               <source file='{}'/><target dev='{name}' bus='virtio'/></disk>",
            disk.display()
        ));
    }
    let vm = test_vm(&guest_xml("oxvirt-qemu-40-disks", "", &devices));
    // Bus 0 runs out: libvirt's pci-bridge (index 1) takes the rest.
    assert!(vm
        .domain
        .devices
        .controllers
        .iter()
        .any(|c| c.index == 1 && c.model.as_deref() == Some("pci-bridge")));
    let _guard = start(&vm).await;
    wait_for_boots(&vm.run, 1);
    let mut console = shell(&vm.run);
    let count = console
        .run("ls /sys/block | grep -c '^vd'", BOUND)
        .expect("answer");
    assert_eq!(count.trim(), "40");
    // The last disk is behind the bridge (bus 1 in the guest as in the definition).
    let last = console
        .run("readlink -f /sys/block/vdan", BOUND)
        .expect("answer");
    assert!(last.contains("/0000:01:"), "{last}");
}

/// What virt-install writes for `--graphics spice`: QEMU starts with SPICE listening on the
/// address and the port the start picked (autoport), the password set over QMP, and the agent
/// channels, sound card, QXL card and USB redirection in place; the guest sees both virtio
/// ports by name, and what it writes to the guest agent's port reaches the socket on the host.
#[tokio::test(flavor = "multi_thread")]
async fn spice_display_listens_and_the_agent_channel_reaches_the_host() {
    let devices = "<controller type='usb' model='qemu-xhci' ports='15'/>
         <channel type='unix'><source mode='bind'/>
           <target type='virtio' name='org.qemu.guest_agent.0'/></channel>
         <channel type='spicevmc'><target type='virtio' name='com.redhat.spice.0'/></channel>
         <graphics type='spice' autoport='yes' listen='127.0.0.1' passwd='s3cret'>
           <image compression='off'/>
         </graphics>
         <sound model='ich6'/>
         <video><model type='qxl'/></video>
         <redirdev bus='usb' type='spicevmc'/>";
    let vm = test_vm(&guest_xml("oxvirt-qemu-spice", "", devices));
    let _guard = start(&vm).await;
    let (qmp, _events) = Qmp::connect(&vm.run.qmp_socket()).await.expect("qmp");
    let spice = qmp.execute("query-spice", None).await.expect("query-spice");
    assert_eq!(spice["enabled"], true, "{spice}");
    assert_eq!(spice["host"], "127.0.0.1", "{spice}");
    assert_eq!(
        spice["auth"], "spice",
        "password authentication is on: {spice}"
    );
    let port = spice["port"].as_u64().expect("a TCP port") as u16;
    assert!(port >= 5900, "{spice}");
    std::net::TcpStream::connect(("127.0.0.1", port)).expect("SPICE accepts a TCP connection");
    let channel = vm.run.qemu_dir().join("channel-0.sock");
    assert!(
        channel.exists(),
        "the guest agent's socket is in the run directory"
    );

    // The guest sees both ports by name, and what it writes to the agent's port comes out of
    // the socket on the host.
    let mut agent = std::os::unix::net::UnixStream::connect(&channel).expect("agent socket");
    agent.set_read_timeout(Some(BOUND)).unwrap();
    wait_for_boots(&vm.run, 1);
    let mut console = shell(&vm.run);
    let names = console
        .run("cat /sys/class/virtio-ports/*/name", BOUND)
        .expect("virtio port names");
    assert!(names.contains("org.qemu.guest_agent.0"), "{names}");
    assert!(names.contains("com.redhat.spice.0"), "{names}");
    // No udev in the guest kit: find the port's device node by its name in sysfs.
    let wrote = console
        .run(
            "for p in /sys/class/virtio-ports/*; do \
               [ \"$(cat $p/name)\" = org.qemu.guest_agent.0 ] && echo hello-from-the-guest > /dev/${p##*/} && echo written; \
             done",
            BOUND,
        )
        .expect("write to the agent port");
    assert!(wrote.contains("written"), "{wrote}");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(&mut agent), &mut line)
        .expect("read the agent socket");
    assert_eq!(line.trim(), "hello-from-the-guest");
    qmp.quit().await.unwrap();
}
