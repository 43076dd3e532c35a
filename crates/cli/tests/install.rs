//! `oxvirt install` against a private oxvirtd: refused installs leave nothing behind (no domain,
//! no volume, no seed ISO), and a failure after creation removes what was created.

// The harness has more than these tests use.
#[allow(dead_code)]
mod support;

use std::path::Path;

use support::Daemon;

fn names(daemon: &Daemon, args: &[&str]) -> Vec<String> {
    daemon
        .oxvirt(args)
        .ok()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn nothing_left(daemon: &Daemon, boot: &Path, what: &str) {
    assert!(
        names(daemon, &["list", "--all", "--name"]).is_empty(),
        "{what}: a domain was left"
    );
    let vols = daemon.oxvirt(&["vol-list", "imgs"]).ok();
    assert!(
        !vols.contains(".qcow2"),
        "{what}: a volume was left: {vols}"
    );
    let seeds = std::fs::read_dir(boot).map(|d| d.count()).unwrap_or(0);
    assert_eq!(seeds, 0, "{what}: a file was left in the boot directory");
}

#[test]
fn bad_input_is_refused_and_leaves_nothing() {
    let daemon = Daemon::start();
    let images = daemon.dir.path().join("imgs");
    std::fs::create_dir(&images).unwrap();
    let boot = daemon.dir.path().join("boot");
    daemon
        .oxvirt(&[
            "pool-define-as",
            "imgs",
            "dir",
            "--target",
            images.to_str().unwrap(),
        ])
        .ok();
    daemon.oxvirt(&["pool-start", "imgs"]).ok();
    let boot_env = [("OXVIRT_BOOT_DIR", boot.to_str().unwrap())];
    let install = |extra: &[&str]| {
        let mut args = vec![
            "install",
            "--name",
            "vm",
            "--memory",
            "256",
            "--graphics",
            "none",
            "--network",
            "none",
            "--noautoconsole",
            "--cloud-init",
            "root-password-generate=on",
        ];
        args.extend_from_slice(extra);
        daemon.oxvirt_with_env(&args, &boot_env)
    };
    let missing_dir = format!("path={}/nodir/d.qcow2,size=1", daemon.dir.path().display());
    let cases: &[(&str, Vec<&str>, &str)] = &[
        (
            "missing ISO",
            vec![
                "--os-variant",
                "debian11",
                "--cdrom",
                "/nonexistent/x.iso",
                "--disk",
                "pool=imgs,size=1",
            ],
            "Validating install media '/nonexistent/x.iso' failed",
        ),
        (
            "disk in a missing directory",
            vec![
                "--os-variant",
                "debian11",
                "--import",
                "--disk",
                &missing_dir,
            ],
            "does not exist",
        ),
        (
            "size beyond the pool's free space",
            vec![
                "--os-variant",
                "debian11",
                "--import",
                "--disk",
                "pool=imgs,size=1000000",
            ],
            "exceed the available pool space",
        ),
        (
            "unknown OS",
            vec![
                "--os-variant",
                "plan9",
                "--import",
                "--disk",
                "pool=imgs,size=1",
            ],
            "oxvirt install --osinfo list",
        ),
        (
            "--cdrom with --import",
            vec![
                "--os-variant",
                "debian11",
                "--import",
                "--cdrom",
                "/nonexistent/x.iso",
                "--disk",
                "pool=imgs,size=1",
            ],
            "--cdrom and --import cannot be used together",
        ),
    ];
    for (what, extra, message) in cases {
        let line = install(extra).error();
        assert!(line.contains(message), "{what}: {line}");
        nothing_left(&daemon, &boot, what);
    }

    // A dry run checks with oxvirtd and creates nothing.
    let out = install(&[
        "--os-variant",
        "debian11",
        "--import",
        "--disk",
        "pool=imgs,size=1",
        "--dry-run",
    ]);
    assert!(out.ok().contains("Dry run completed successfully"));
    nothing_left(&daemon, &boot, "dry run");

    // A name already defined: the existing domain stays, nothing new is made.
    let kit_disk = support::make_disk(daemon.dir.path(), "taken.img", 2048);
    let xml = format!(
        "<domain type='qemu'><name>vm</name><memory unit='MiB'>64</memory><os><type arch='x86_64' machine='pc'>hvm</type></os><devices><disk type='file' device='disk'><source file='{}'/><target dev='vda' bus='virtio'/></disk></devices></domain>",
        kit_disk.display()
    );
    daemon.define("taken.xml", &xml).1.ok();
    let line = install(&[
        "--os-variant",
        "debian11",
        "--import",
        "--disk",
        "pool=imgs,size=1",
    ])
    .error();
    assert!(line.contains("Guest name 'vm' is already in use"), "{line}");
    assert_eq!(names(&daemon, &["list", "--all", "--name"]), ["vm"]);
    daemon.oxvirt(&["undefine", "vm"]).ok();
    nothing_left(&daemon, &boot, "name in use");

    // A failure after the disk and the domain were made (the network does not exist, so the
    // start fails): both are removed, and said so.
    let run = daemon.oxvirt_with_env(
        &[
            "install",
            "--name",
            "vm",
            "--memory",
            "256",
            "--graphics",
            "none",
            "--network",
            "network=nosuchnet",
            "--noautoconsole",
            "--os-variant",
            "debian11",
            "--import",
            "--disk",
            "pool=imgs,size=1",
        ],
        &boot_env,
    );
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stderr
            .contains("Domain installation does not appear to have been successful"),
        "{run:#?}"
    );
    assert!(run.stderr.contains("Removing domain 'vm'"), "{run:#?}");
    assert!(run.stderr.contains("Removing disk"), "{run:#?}");
    nothing_left(&daemon, &boot, "failed start");
}
