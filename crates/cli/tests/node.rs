//! The node verbs (`nodeinfo`, `nodecpumap`, `nodecpustats`, `nodememstats`, `freecell`,
//! `freepages`, `allocpages`, `node-memory-tune`) through a private oxvirtd, against Debian's
//! virsh on the same host (libvirt's embedded QEMU driver, which answers them from the same
//! /proc and /sys): what cannot change between two reads is equal, counters that grow lie
//! between our reads before and after virsh's, and a huge page pool sized by `allocpages` is
//! the size the kernel reports.

#[allow(dead_code)]
mod support;

use std::path::Path;
use std::process::Command;

use support::Daemon;

/// virsh's outputs of `commands`, in one process, split at echo markers.
fn virsh(root: &Path, commands: &[&str]) -> Vec<String> {
    let script: Vec<String> = commands
        .iter()
        .enumerate()
        .flat_map(|(i, command)| [command.to_string(), format!("echo @@{i}@@")])
        .collect();
    let output = Command::new("virsh")
        .arg("-c")
        .arg(format!("qemu:///embed?root={}", root.display()))
        .arg(script.join("; "))
        .output()
        .expect("run virsh (Debian's libvirt-clients, installed by scripts/setup.sh)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "virsh failed: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut answers = Vec::new();
    let mut rest = text.as_str();
    for i in 0..commands.len() {
        let marker = format!("@@{i}@@\n");
        let (answer, after) = rest
            .split_once(&marker)
            .unwrap_or_else(|| panic!("no {marker:?} in virsh's output: {text}"));
        answers.push(answer.to_string());
        rest = after.trim_start_matches('\n');
    }
    answers
}

/// `name: value` lines (any spacing) as pairs, the value's first word a number.
fn numbers(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            let value = value.split_whitespace().next()?.parse().ok()?;
            Some((name.trim().to_string(), value))
        })
        .collect()
}

fn names(pairs: &[(String, u64)]) -> Vec<&str> {
    pairs.iter().map(|(name, _)| name.as_str()).collect()
}

fn value(pairs: &[(String, u64)], name: &str) -> u64 {
    pairs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no {name} in {pairs:?}"))
}

#[test]
fn node_verbs_answer_as_virsh_does() {
    let daemon = Daemon::start();
    let root = daemon.dir.path().join("libvirt");
    std::fs::create_dir_all(&root).unwrap();

    let cpus_before = numbers(&daemon.oxvirt(&["nodecpustats"]).ok());
    let cpu1_before = numbers(&daemon.oxvirt(&["nodecpustats", "--cpu", "1"]).ok());
    let theirs = virsh(
        &root,
        &[
            "nodeinfo",
            "nodecpumap",
            "nodecpumap --pretty",
            "nodecpustats",
            "nodecpustats --cpu 1",
            "nodememstats",
            "nodememstats --cell 0",
            "freecell --all",
            "freepages --all",
            "node-memory-tune",
        ],
    );
    let cpus_after = numbers(&daemon.oxvirt(&["nodecpustats"]).ok());
    let cpu1_after = numbers(&daemon.oxvirt(&["nodecpustats", "--cpu", "1"]).ok());

    // What the host's hardware and configuration fix: equal, byte for byte.
    assert_eq!(daemon.oxvirt(&["nodeinfo"]).ok(), theirs[0]);
    assert_eq!(daemon.oxvirt(&["nodecpumap"]).ok(), theirs[1]);
    assert_eq!(daemon.oxvirt(&["nodecpumap", "--pretty"]).ok(), theirs[2]);

    // CPU times only grow: virsh's lie between ours before and after, under the same names.
    for (before, theirs, after) in [
        (&cpus_before, &theirs[3], &cpus_after),
        (&cpu1_before, &theirs[4], &cpu1_after),
    ] {
        let theirs = numbers(theirs);
        assert_eq!(names(before), names(&theirs));
        for (name, value) in &theirs {
            let (low, high) = (self::value(before, name), self::value(after, name));
            assert!(
                low <= *value && *value <= high,
                "{name}: virsh's {value} not within ours {low}..{high}"
            );
        }
    }

    // Memory: the same names; totals equal (free memory moves between reads).
    let ours = numbers(&daemon.oxvirt(&["nodememstats"]).ok());
    let their = numbers(&theirs[5]);
    assert_eq!(names(&ours), names(&their));
    assert_eq!(value(&ours, "total"), value(&their, "total"));
    let ours_cell = numbers(&daemon.oxvirt(&["nodememstats", "--cell", "0"]).ok());
    assert_eq!(names(&ours_cell), ["total", "free"]);
    assert_eq!(
        value(&ours_cell, "total"),
        value(&numbers(&theirs[6]), "total")
    );

    // freecell and freepages: the same lines, numbers aside where memory is free or not.
    let shape = |text: &str| -> String {
        let mut out = String::new();
        for c in text.chars() {
            if !c.is_ascii_digit() {
                out.push(c);
            } else if !out.ends_with('#') {
                out.push('#');
            }
        }
        out.split_whitespace().collect::<Vec<_>>().join(" ")
    };
    let ours_cells = daemon.oxvirt(&["freecell", "--all"]).ok();
    assert_eq!(shape(&ours_cells), shape(&theirs[7]));
    let ours_pages = daemon.oxvirt(&["freepages", "--all"]).ok();
    assert_eq!(shape(&ours_pages), shape(&theirs[8]));
    let huge_pages = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|line| !line.starts_with("4KiB") && line.contains("KiB:"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(huge_pages(&ours_pages), huge_pages(&theirs[8]));

    // KSM: the same knobs in the same order, the settings equal.
    let ours_ksm = daemon.oxvirt(&["node-memory-tune"]).ok();
    assert!(ours_ksm.starts_with("Shared memory:\n\tshm_pages_to_scan"));
    let knobs = |text: &str| -> Vec<(String, u64)> {
        text.lines()
            .filter_map(|line| {
                let (name, value) = line.trim().split_once(' ')?;
                Some((name.to_string(), value.trim().parse().ok()?))
            })
            .collect()
    };
    let (ours_ksm, their_ksm) = (knobs(&ours_ksm), knobs(&theirs[9]));
    assert_eq!(names(&ours_ksm), names(&their_ksm));
    for knob in ["shm_pages_to_scan", "shm_sleep_millisecs"] {
        assert_eq!(value(&ours_ksm, knob), value(&their_ksm, knob));
    }

    // Bad input: clear errors, exit code 1.
    let err = daemon.oxvirt(&["nodecpustats", "--cpu", "4096"]).error();
    assert!(err.contains("host CPU 4096 does not exist"), "{err}");
    let err = daemon.oxvirt(&["nodememstats", "--cell", "64"]).error();
    assert!(err.contains("NUMA cell 64 does not exist"), "{err}");
    let err = daemon.oxvirt(&["freepages"]).error();
    assert!(err.contains("missing cellno argument"), "{err}");
    let err = daemon.oxvirt(&["allocpages", "3M", "1"]).error();
    assert!(
        err.contains("page size 3072 KiB is not available on this host"),
        "{err}"
    );
    let err = daemon.oxvirt(&["allocpages", "4", "1"]).error();
    assert!(err.contains("system's page size"), "{err}");
}

#[test]
fn allocpages_sizes_the_kernels_pool() {
    let daemon = Daemon::start();
    let pool = Path::new("/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages");
    let read = || -> u64 {
        std::fs::read_to_string(pool)
            .expect("read the 2 MiB pool of cell 0")
            .trim()
            .parse()
            .expect("a number")
    };
    let before = read();
    // Put the pool back however the test ends.
    struct Restore<'a>(&'a Path, u64);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            let _ = std::fs::write(self.0, self.1.to_string());
        }
    }
    let _restore = Restore(pool, before);

    daemon
        .oxvirt(&["allocpages", "2M", "2", "--cellno", "0", "--add"])
        .ok();
    assert_eq!(read(), before + 2);
    let free = daemon
        .oxvirt(&["freepages", "--cellno", "0", "--pagesize", "2048"])
        .ok();
    let free: u64 = free
        .trim()
        .strip_prefix("2048KiB: ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("freepages printed {free:?}"));
    assert!(free >= 2, "2 pages were added, {free} are free");
    daemon
        .oxvirt(&["allocpages", "2048", &before.to_string(), "--cellno", "0"])
        .ok();
    assert_eq!(read(), before);
}
