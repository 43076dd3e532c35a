//! `oxvirt builder debian-12` and `oxvirt install --import --cloud-init`, together, as an operator
//! uses them: the image the builder makes (root password, SSH key for root) is imported with a
//! cloud-init NoCloud seed, and boots through its own GRUB under BIOS (SeaBIOS) and, separately,
//! under UEFI with Secure Boot enforced (`--boot uefi`: q35 gets OVMF with Microsoft's keys from
//! libvirt's firmware autoselection). Checked inside the guest, logged in on the serial console with
//! the builder's password: cloud-init's hostname, user with its SSH key and user-data file; the
//! builder's SSH key for root and sshd on host keys of the guest's own; the seed present in the first
//! boot and gone after it (from the definition and the host); under UEFI, Secure Boot on and an EFI
//! variable written in the first boot still there in the second (the NVRAM is kept). The image is
//! built once per run of this file; the template's root filesystem comes from the builder's cache
//! (/var/cache/oxvirt/builder) after the first build on a machine.

#[allow(dead_code)]
mod support;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::OnceLock;
use std::time::Duration;

use support::{oxvirt_bin, wait_for_exit, ConsoleSession, Daemon};

/// A full Debian boot under TCG, on a machine shared with other guests.
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
const ROOT_PASSWORD: &str = "oxvirt-built";

struct Built {
    image: PathBuf,
    public_key: String,
}

/// The image, built on first use (the tests of this file share it through qcow2 overlays).
fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        // Cargo's scratch directory for integration tests: one image, replaced at each run.
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("builder-test");
        std::fs::create_dir_all(&dir).expect("scratch directory");
        let key = dir.join("id.pub");
        let public_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTheBuilderTestOnly0123456789ab test@oxvirt";
        std::fs::write(&key, format!("{public_key}\n")).unwrap();
        let image = dir.join("debian-12.qcow2");
        let output = std::process::Command::new(oxvirt_bin())
            .args(["builder", "debian-12", "-o"])
            .arg(&image)
            .arg("--force")
            .args(["--size", "3G", "--hostname", "built-by-oxvirt"])
            .arg(format!("--root-password=password:{ROOT_PASSWORD}"))
            .arg("--ssh-inject")
            .arg(&key)
            .output()
            .expect("run oxvirt builder");
        assert!(
            output.status.success(),
            "oxvirt builder failed: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let said = String::from_utf8_lossy(&output.stdout);
        assert!(said.contains("Output format: qcow2"), "{said}");
        Built {
            image,
            public_key: public_key.to_string(),
        }
    })
}

/// A qcow2 overlay on the built image, so each test boots a disk of its own.
fn overlay(daemon: &Daemon, name: &str) -> PathBuf {
    let path = daemon.dir.path().join(format!("{name}.qcow2"));
    let image = &built().image;
    daemon
        .oxvirt(&[
            "img",
            "create",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            image.to_str().unwrap(),
            path.to_str().unwrap(),
        ])
        .ok();
    path
}

/// Logs in as root on the serial console of a guest that is booting (the root password is the
/// builder's) and waits until systemd has finished starting units. A login prompt that never
/// comes fails with where the guest is ([`where_the_guest_is`]).
fn log_in(daemon: &Daemon, name: &str, console: &mut ConsoleSession) {
    if !console.wait_for_text(" login: ", BOOT_TIMEOUT) {
        panic!(
            "console never showed \" login: \"; {}\nthe console connection showed:\n{}",
            where_the_guest_is(daemon, name),
            console.all_output()
        );
    }
    console.send_line("root");
    console.expect_text("Password: ", Duration::from_secs(60));
    console.send_line(ROOT_PASSWORD);
    console.expect_text(":~# ", Duration::from_secs(120));
    // The login prompt comes before the boot is over (the shell computes the marker, so its
    // echo cannot match).
    // The kernel's console messages (a driver that loads late, e.g. powernow_k8) would land in
    // the middle of the commands' output: only emergencies reach the console from here on.
    console.send_line("dmesg -n 1; systemctl is-system-running --wait; echo BOOT-DONE-$((20+1))");
    console.expect_text("BOOT-DONE-21", BOOT_TIMEOUT);
}

/// Where a guest that did not get to its login prompt is, for the failure's message: its state,
/// its vCPUs' instruction pointers twice a second apart (QEMU's `info registers -a`: moving, or
/// stuck in one place), and the end of the console log QEMU wrote itself, which does not go
/// through the console connection the test reads (more there than the test saw: the output
/// stalled on its way, not the guest).
fn where_the_guest_is(daemon: &Daemon, name: &str) -> String {
    let state = daemon.oxvirt(&["domstate", "--reason", name]);
    let instruction_pointers = || {
        let registers =
            daemon.oxvirt(&["qemu-monitor-command", name, "--hmp", "info registers -a"]);
        let rips: Vec<&str> = registers
            .stdout
            .split_whitespace()
            .filter(|word| word.starts_with("RIP="))
            .collect();
        format!("{} {}", rips.join(" "), registers.stderr.trim())
    };
    let first = instruction_pointers();
    std::thread::sleep(Duration::from_secs(1));
    let second = instruction_pointers();
    let uuid = daemon.oxvirt(&["domuuid", name]).stdout.trim().to_string();
    let run_dir = daemon.dir.path().join("state/run").join(uuid);
    let log = run_dir.join("console.log");
    // Each QEMU thread's state and where in the kernel it waits (a main loop blocked writing
    // the console's log pipe, say).
    let qemu_pid = run_dir.join("qemu/qemu.pid");
    let threads = match std::fs::read_to_string(&qemu_pid) {
        Ok(pid) => {
            let tasks = format!("/proc/{}/task", pid.trim());
            let mut seen = Vec::new();
            for task in std::fs::read_dir(&tasks).into_iter().flatten().flatten() {
                let read = |file: &str| {
                    std::fs::read_to_string(task.path().join(file)).unwrap_or_default()
                };
                let stat = read("stat");
                // The state is the field after the command's closing parenthesis.
                let state = stat
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .split_whitespace()
                    .next();
                seen.push(format!(
                    "{} {} {}",
                    read("comm").trim(),
                    state.unwrap_or("?"),
                    read("wchan").trim()
                ));
            }
            seen.join(", ")
        }
        Err(err) => format!("({}: {err})", qemu_pid.display()),
    };
    let tail = match std::fs::read(&log) {
        Ok(bytes) => {
            String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(2000)..]).replace('\r', "")
        }
        Err(err) => format!("({}: {err})", log.display()),
    };
    format!(
        "domstate: {} {}; vCPUs at {first}, a second later at {second}; QEMU's threads \
         (state, wait channel): {threads}; the end of QEMU's console log:\n{tail}",
        state.stdout.trim(),
        state.stderr.trim()
    )
}

/// What the builder put into the image, seen from inside the guest.
fn check_builder_customizations(console: &mut ConsoleSession) {
    let keys = console.run("cat /root/.ssh/authorized_keys", 2);
    assert!(keys.contains(&built().public_key), "{keys}");
    // sshd needs host keys made for this machine (the builder removed the template's).
    let sshd = console.run(
        "systemctl is-active ssh; ls /etc/ssh/ssh_host_ed25519_key.pub",
        3,
    );
    assert!(sshd.starts_with("active\n"), "{sshd}");
    assert!(sshd.contains("/etc/ssh/ssh_host_ed25519_key.pub"), "{sshd}");
    // The root filesystem was mounted by the UUID fstab names, read-write.
    let root = console.run("findmnt -n -o FSTYPE,OPTIONS /", 4);
    assert!(root.starts_with("ext4") && root.contains("rw"), "{root}");
}

const CLOUD_USER_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOxadminKeyFromCloudInitUserData01234567 oxadmin@oxvirt";
const USER_DATA_FILE: &str = "/var/lib/oxvirt-test/written-by-user-data";

/// `oxvirt install --import --cloud-init` of the built image, run as an operator runs it (it waits
/// for the first boot to end and starts the guest again); returns the install process and the
/// path of the seed ISO it makes.
fn install_with_cloud_init(daemon: &Daemon, name: &str, extra: &[&str]) -> (Child, PathBuf) {
    let dir = daemon.dir.path();
    let disk = overlay(daemon, name);
    let user_data = dir.join("user-data");
    std::fs::write(
        &user_data,
        format!(
            "#cloud-config\nusers:\n  - name: oxadmin\n    shell: /bin/bash\n    \
             ssh_authorized_keys:\n      - {CLOUD_USER_KEY}\nwrite_files:\n  - path: {USER_DATA_FILE}\n    \
             content: \"cloud-init user-data of {name}\\n\"\n"
        ),
    )
    .unwrap();
    let meta_data = dir.join("meta-data");
    std::fs::write(
        &meta_data,
        format!("instance-id: iid-{name}\nlocal-hostname: {name}\n"),
    )
    .unwrap();
    let boot = dir.join("boot");
    let disk_option = format!("path={},format=qcow2", disk.display());
    let seed_option = format!(
        "user-data={},meta-data={}",
        user_data.display(),
        meta_data.display()
    );
    let mut args = vec![
        "install",
        "--name",
        name,
        "--memory",
        "1024",
        "--vcpus",
        "2",
        "--os-variant",
        "debian11",
        "--import",
        "--network",
        "none",
        "--graphics",
        "none",
        "--wait",
        "-1",
        "--disk",
        &disk_option,
        "--cloud-init",
        &seed_option,
    ];
    args.extend_from_slice(extra);
    let child = daemon.spawn_oxvirt(&args, &[("OXVIRT_BOOT_DIR", &boot)]);
    (child, boot.join(format!("oxvirt-{name}-cloudinit.iso")))
}

/// The first boot: cloud-init did what the seed says, and the builder's image is as built.
fn check_first_boot(daemon: &Daemon, console: &mut ConsoleSession, name: &str) {
    log_in(daemon, name, console);
    // `--wait` blocks until cloud-init's last stage ended, and cloud-init is Python on a TCG
    // guest: it may take longer than an ordinary command.
    let status = console.run_within(
        "cloud-init status --wait --long",
        5,
        Duration::from_secs(180),
    );
    assert!(status.contains("status: done"), "{status}");
    let hostname = console.run("hostname", 6);
    assert_eq!(
        hostname.trim(),
        name,
        "cloud-init did not set the hostname; its log says: {}",
        console.run(
            "cat /run/cloud-init/ds-identify.log | tail -5; grep -iE 'hostname|datasource' /var/log/cloud-init.log | head -20",
            60
        )
    );
    let keys = console.run("cat /home/oxadmin/.ssh/authorized_keys", 7);
    assert!(keys.contains(CLOUD_USER_KEY), "{keys}");
    let written = console.run(&format!("cat {USER_DATA_FILE}"), 8);
    assert_eq!(written.trim(), format!("cloud-init user-data of {name}"));
    // The seed is the CD-ROM labelled cidata.
    let seed = console.run("blkid -L cidata || echo no-seed", 9);
    assert!(seed.trim().starts_with("/dev/sr"), "{seed}");
    check_builder_customizations(console);
}

/// Reboots the guest; the install's first instance ends there (its definition says so), and
/// `oxvirt install` starts the final definition. Checks the seed is gone.
fn end_first_boot(
    daemon: &Daemon,
    console: ConsoleSession,
    install: Child,
    seed: &Path,
    name: &str,
) {
    let mut console = console;
    console.send_line("systemctl reboot");
    // The console stays attached until the install ends: killing `oxvirt console` right after
    // the line was handed to it could lose the line.
    let out = wait_for_exit(install, BOOT_TIMEOUT).ok();
    drop(console);
    assert!(out.contains("Domain has shutdown. Continuing."), "{out}");
    assert!(
        !seed.exists(),
        "the seed ISO {} is still there",
        seed.display()
    );
    let xml = daemon.oxvirt(&["dumpxml", name]).ok();
    assert!(!xml.contains("cloudinit.iso"), "{xml}");
}

#[test]
fn a_built_image_imported_with_cloud_init_boots_under_bios() {
    let daemon = Daemon::start();
    let name = "cloudy-bios";
    let (install, seed) = install_with_cloud_init(&daemon, name, &[]);
    let mut console = daemon.console_when_ready(name, BOOT_TIMEOUT);
    check_first_boot(&daemon, &mut console, name);
    let firmware = console.run("test -d /sys/firmware/efi && echo uefi || echo bios", 10);
    assert_eq!(firmware.trim(), "bios");
    let cmdline = console.run("cat /proc/cmdline", 11);
    assert!(cmdline.contains("console=ttyS0,115200"), "{cmdline}");
    end_first_boot(&daemon, console, install, &seed, name);

    // The second boot: no seed, and what cloud-init did stays.
    let mut console = daemon.console_when_ready(name, BOOT_TIMEOUT);
    log_in(&daemon, name, &mut console);
    assert_eq!(
        console.run("blkid -L cidata || echo no-seed", 20).trim(),
        "no-seed"
    );
    assert_eq!(console.run("hostname", 21).trim(), name);
    drop(console);
    daemon.oxvirt(&["destroy", name]).ok();
}

#[test]
fn a_built_image_imported_with_cloud_init_boots_under_uefi_with_secure_boot() {
    let daemon = Daemon::start();
    let name = "cloudy-uefi";
    let (install, seed) = install_with_cloud_init(&daemon, name, &["--boot", "uefi"]);
    let mut console = daemon.console_when_ready(name, BOOT_TIMEOUT);
    check_first_boot(&daemon, &mut console, name);
    // The SecureBoot variable's last byte is 1 when the firmware enforced signatures on shim,
    // GRUB and the kernel.
    let secure_boot = console.run(
        "od -An -tu1 /sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c",
        10,
    );
    assert!(
        secure_boot.split_whitespace().last() == Some("1"),
        "Secure Boot is not on: {secure_boot}"
    );
    // The EFI system partition is mounted where Debian's GRUB packages update it.
    assert_eq!(
        console.run("findmnt -n -o FSTYPE /boot/efi", 11).trim(),
        "vfat"
    );
    // A variable of our own in the NVRAM (attributes: non-volatile, boot and run time).
    console.run(
        &format!("printf '\\007\\000\\000\\000kept' > /sys/firmware/efi/efivars/{NVRAM_PROBE}"),
        12,
    );
    end_first_boot(&daemon, console, install, &seed, name);

    // The second boot keeps the NVRAM: the variable is still there.
    let mut console = daemon.console_when_ready(name, BOOT_TIMEOUT);
    log_in(&daemon, name, &mut console);
    let kept = console.run(
        &format!("tail -c 4 /sys/firmware/efi/efivars/{NVRAM_PROBE}; echo"),
        20,
    );
    assert_eq!(kept.trim(), "kept");
    assert_eq!(
        console.run("blkid -L cidata || echo no-seed", 21).trim(),
        "no-seed"
    );
    drop(console);
    daemon.oxvirt(&["destroy", name]).ok();
}

/// An EFI variable name with a GUID of this test's own.
const NVRAM_PROBE: &str = "OxvirtProbe-2f1c9a4e-7d3b-4c55-9e0a-6b8f1d2c3e4f";

#[test]
fn bad_builder_input_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let existing = dir.path().join("taken.qcow2");
    std::fs::write(&existing, b"keep me").unwrap();
    let run = |args: &[&str]| support::oxvirt_at(Path::new("/nonexistent.sock"), args, &[]);
    let out = dir.path().join("new.qcow2");
    let out = out.to_str().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (
            &["builder", "debian-99", "-o", out],
            "no template 'debian-99'",
        ),
        (
            &["builder", "debian-12", "-o", existing.to_str().unwrap()],
            "exists",
        ),
        (
            &["builder", "debian-12", "-o", "/nonexistent/dir/x.qcow2"],
            "does not exist",
        ),
        (
            &["builder", "debian-12", "-o", out, "--size", "200M"],
            "too small",
        ),
        (
            &[
                "builder",
                "debian-12",
                "-o",
                out,
                "--root-password",
                "hunter2",
            ],
            "password:PASSWORD",
        ),
        (
            &["builder", "debian-12", "-o", out, "--hostname", "bad_name"],
            "--hostname",
        ),
    ];
    for (args, want) in cases {
        let line = run(args).error();
        assert!(line.contains(want), "{args:?}: {line}");
    }
    assert_eq!(std::fs::read(&existing).unwrap(), b"keep me");
    assert!(!Path::new(out).exists());
    let list = run(&["builder", "--list"]).ok();
    assert!(list.starts_with("debian-12 "), "{list}");
}
