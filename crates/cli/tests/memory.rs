//! Guest memory against a private oxvirtd running real QEMU (TCG) guests: `<currentMemory>`
//! below `<memory>` is what the guest has after boot, `setmem --live` moves the guest's
//! MemTotal through its balloon both ways, `dommemstat` reports the balloon's size and (after
//! `--period`) the guest driver's own figures, QEMU's monitor agrees; bad sizes are refused
//! and change nothing; `--config` changes only the next start's definition. Huge pages: a
//! guest runs on 2 MiB pages of the host's pool (its QEMU's smaps say so), a pool too small is
//! refused before launch with the counts; `<nosharepages/>` keeps QEMU's RAM out of KSM.

#[allow(dead_code)]
mod support;

use std::time::Duration;

use oxvirt_testkit::{guest_kit, wait_for, BOOT_MARKER, PROMPT};
use support::{field, guest_xml, make_disk, qemu_pid, ConsoleSession, Daemon};

const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the guest's balloon driver may take to follow a new target under TCG.
const BALLOON_TIMEOUT: Duration = Duration::from_secs(90);
const MIB: u64 = 1024;

/// MemTotal (KiB) of the guest's /proc/meminfo, read on its console.
fn mem_total(console: &mut ConsoleSession, tag: &mut u32) -> u64 {
    *tag += 1;
    let out = console.run("grep MemTotal /proc/meminfo", *tag);
    out.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no MemTotal in {out:?}"))
}

/// Waits until the guest's MemTotal satisfies `ok` and has settled (two readings in a row
/// agree); returns that value. The balloon driver moves pages in batches, so a reading that
/// already satisfies `ok` can still be one batch (about 1 MiB) short of where it stops, and a
/// later comparison against it would fail.
fn wait_mem_total(
    console: &mut ConsoleSession,
    tag: &mut u32,
    what: &str,
    ok: impl Fn(u64) -> bool,
) -> u64 {
    let mut previous = None;
    let mut last = 0;
    let reached = wait_for(BALLOON_TIMEOUT, || {
        last = mem_total(console, tag);
        let settled = previous == Some(last);
        previous = Some(last);
        ok(last) && settled
    });
    assert!(
        reached,
        "the guest's MemTotal never {what} and settled; last {last} kB"
    );
    last
}

/// Waits until the balloon's size as the guest reports it (`dommemstat`'s `actual`) is `kib`.
/// The guest driver updates it after each batch of pages, after it changed MemTotal, so from
/// then on MemTotal holds still.
fn wait_balloon_actual(daemon: &Daemon, kib: u64) {
    let reached = wait_for(BALLOON_TIMEOUT, || {
        stat(&daemon.oxvirt(&["dommemstat", "mem"]).ok(), "actual") == Some(kib)
    });
    assert!(reached, "{}", daemon.oxvirt(&["dommemstat", "mem"]).ok());
}

/// `dommemstat`'s value of `key`, if it printed one.
fn stat(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (name, value) = l.split_once(' ')?;
        (name == key).then(|| value.parse().ok())?
    })
}

/// The smaps entry of the guest's RAM in QEMU `pid`: the mapping of `memory_kib` (QEMU may
/// add a little for alignment).
fn guest_ram_smaps(pid: u32, memory_kib: u64) -> String {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mut entries: Vec<String> = Vec::new();
    for line in smaps.lines() {
        let starts_mapping = line
            .split_whitespace()
            .next()
            .is_some_and(|range| range.contains('-') && !range.ends_with(':'));
        if starts_mapping || entries.is_empty() {
            entries.push(String::new());
        }
        let entry = entries.last_mut().unwrap();
        entry.push_str(line);
        entry.push('\n');
    }
    let size = |entry: &str| -> Option<u64> {
        entry
            .lines()
            .find_map(|l| l.strip_prefix("Size:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse().ok())
    };
    entries
        .into_iter()
        .find(|e| size(e).is_some_and(|s| s >= memory_kib && s <= memory_kib + 8 * MIB))
        .unwrap_or_else(|| panic!("no mapping of {memory_kib} kB in QEMU {pid}'s smaps"))
}

fn smaps_field<'a>(entry: &'a str, name: &str) -> &'a str {
    entry
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {name} in {entry}"))
}

const UUID: &str = "5a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";

#[test]
fn balloon_moves_the_guests_memory_and_dommemstat_reports_it() {
    let daemon = Daemon::start();
    let disk = make_disk(daemon.dir.path(), "mem.img", 2048);
    // 256 MiB, of which the balloon takes 96 at start.
    let xml = guest_xml("mem", UUID, &guest_kit(), &disk, 1).replace(
        "<memory unit='MiB'>256</memory>",
        "<memory unit='MiB'>256</memory>\n  <currentMemory unit='MiB'>160</currentMemory>",
    );
    daemon.define("mem.xml", &xml).1.ok();
    let mut console = daemon.start_with_console("mem");
    console.expect_text(BOOT_MARKER, BOOT_TIMEOUT);
    console.expect_text(PROMPT, BOOT_TIMEOUT);
    let mut tag = 0;

    // <currentMemory> at start: the balloon holds 96 MiB, the guest has that much less than
    // once it gives them back.
    wait_balloon_actual(&daemon, 160 * MIB);
    let small = wait_mem_total(&mut console, &mut tag, "held still", |_| true);
    daemon.oxvirt(&["setmem", "mem", "256M", "--live"]).ok();
    wait_balloon_actual(&daemon, 256 * MIB);
    let full = wait_mem_total(&mut console, &mut tag, "grew by 96 MiB", |now| {
        now >= small + 96 * MIB - 2 * MIB
    });
    assert!(
        full.abs_diff(small + 96 * MIB) <= 2 * MIB,
        "booted with {small} kB, {full} kB after deflating"
    );

    // setmem --live 128 MiB: the guest's MemTotal drops by about that.
    daemon.oxvirt(&["setmem", "mem", "131072", "--live"]).ok();
    wait_balloon_actual(&daemon, 128 * MIB);
    let now = wait_mem_total(&mut console, &mut tag, "dropped by 128 MiB", |now| {
        now <= full - 128 * MIB + 2 * MIB
    });
    assert!(
        (full - now).abs_diff(128 * MIB) <= 2 * MIB,
        "{full} kB before, {now} kB after"
    );
    let stats = daemon.oxvirt(&["dommemstat", "mem"]).ok();
    assert_eq!(stat(&stats, "actual"), Some(131072), "{stats}");
    assert!(stat(&stats, "rss").is_some_and(|rss| rss > 0), "{stats}");
    assert!(stats.starts_with("actual 131072\n"), "{stats}");
    let hmp = daemon
        .oxvirt(&["qemu-monitor-command", "mem", "--hmp", "info balloon"])
        .ok();
    assert!(hmp.contains("actual=128"), "{hmp}");
    assert_eq!(
        field(&daemon.oxvirt(&["dominfo", "mem"]).ok(), "Used memory:"),
        "131072 KiB"
    );
    let live_xml = daemon.oxvirt(&["dumpxml", "mem"]).ok();
    assert!(
        live_xml.contains("<currentMemory unit='KiB'>131072</currentMemory>"),
        "{live_xml}"
    );

    // The guest driver's statistics, once it reports every second.
    daemon.oxvirt(&["dommemstat", "mem", "--period", "1"]).ok();
    let mut stats = String::new();
    let reported = wait_for(BALLOON_TIMEOUT, || {
        stats = daemon.oxvirt(&["dommemstat", "mem"]).ok();
        stat(&stats, "last_update").is_some()
    });
    assert!(reported, "no guest statistics: {stats}");
    for key in [
        "swap_in",
        "swap_out",
        "major_fault",
        "minor_fault",
        "unused",
        "available",
        "usable",
        "disk_caches",
    ] {
        assert!(stat(&stats, key).is_some(), "no {key} in {stats}");
    }
    // libvirt's order: actual first, the guest's figures, rss last.
    let keys: Vec<&str> = stats.lines().filter_map(|l| l.split(' ').next()).collect();
    assert_eq!(keys.first(), Some(&"actual"), "{stats}");
    assert_eq!(keys.iter().rev().find(|k| !k.is_empty()), Some(&"rss"));
    // `available` is the guest's own MemTotal (stat-total-memory), in KiB.
    let available = stat(&stats, "available").unwrap();
    assert!(available.abs_diff(now) <= MIB, "{available} vs {now}");
    assert!(stat(&stats, "unused").unwrap() < available, "{stats}");
    let live_xml = daemon.oxvirt(&["dumpxml", "mem"]).ok();
    assert!(live_xml.contains("<stats period='1'/>"), "{live_xml}");

    // Refused, and nothing changes: above the maximum, zero, the maximum while it runs.
    let err = daemon.oxvirt(&["setmem", "mem", "300M", "--live"]).error();
    assert!(err.contains("higher than max memory"), "{err}");
    let err = daemon
        .oxvirt(&["setmem", "mem", "300M", "--config"])
        .error();
    assert!(err.contains("higher than max memory"), "{err}");
    let err = daemon.oxvirt(&["setmem", "mem", "0"]).error();
    assert!(err.contains("must not be zero"), "{err}");
    let err = daemon.oxvirt(&["setmaxmem", "mem", "512M"]).error();
    assert!(err.contains("cannot resize the maximum memory"), "{err}");
    let err = daemon
        .oxvirt(&["setmaxmem", "mem", "512M", "--live"])
        .error();
    assert!(err.contains("cannot resize the maximum memory"), "{err}");
    let err = daemon
        .oxvirt(&["dommemstat", "mem", "--period", "-1"])
        .error();
    assert!(
        err.contains("Invalid collection period value '-1'"),
        "{err}"
    );
    assert_eq!(
        stat(&daemon.oxvirt(&["dommemstat", "mem"]).ok(), "actual"),
        Some(131072)
    );
    assert_eq!(daemon.oxvirt(&["dumpxml", "mem"]).ok(), live_xml);
    assert_eq!(mem_total(&mut console, &mut tag), now);

    // --config: the next start's definition only.
    let before = daemon.oxvirt(&["dumpxml", "--inactive", "mem"]).ok();
    assert!(
        before.contains("<currentMemory unit='KiB'>163840</currentMemory>"),
        "{before}"
    );
    daemon.oxvirt(&["setmem", "mem", "196608", "--config"]).ok();
    daemon
        .oxvirt(&["setmaxmem", "mem", "200M", "--config"])
        .ok();
    daemon
        .oxvirt(&["dommemstat", "mem", "--period", "5", "--config"])
        .ok();
    let after = daemon.oxvirt(&["dumpxml", "--inactive", "mem"]).ok();
    assert!(
        after.contains("<memory unit='KiB'>204800</memory>"),
        "{after}"
    );
    assert!(
        after.contains("<currentMemory unit='KiB'>196608</currentMemory>"),
        "{after}"
    );
    assert!(after.contains("<stats period='5'/>"), "{after}");
    assert_eq!(
        stat(&daemon.oxvirt(&["dommemstat", "mem"]).ok(), "actual"),
        Some(131072),
        "--config leaves the running guest"
    );
    // A maximum below the current memory brings it down too.
    daemon
        .oxvirt(&["setmaxmem", "mem", "150M", "--config"])
        .ok();
    let after = daemon.oxvirt(&["dumpxml", "--inactive", "mem"]).ok();
    assert!(
        after.contains("<currentMemory unit='KiB'>153600</currentMemory>"),
        "{after}"
    );
    drop(console);
    daemon.oxvirt(&["destroy", "mem"]).ok();

    // Shut off: --current is the definition; dommemstat needs a running guest.
    daemon.oxvirt(&["setmem", "mem", "100M"]).ok();
    let after = daemon.oxvirt(&["dumpxml", "--inactive", "mem"]).ok();
    assert!(
        after.contains("<currentMemory unit='KiB'>102400</currentMemory>"),
        "{after}"
    );
    let err = daemon.oxvirt(&["dommemstat", "mem"]).error();
    assert!(err.contains("is not running"), "{err}");
    let err = daemon.oxvirt(&["setmem", "mem", "100M", "--live"]).error();
    assert!(err.contains("is not running"), "{err}");

    // Without a balloon: a smaller current memory is refused, naming why.
    let no_balloon = xml.replace("</devices>", "<memballoon model='none'/>\n  </devices>");
    let err = daemon
        .define(
            "nob.xml",
            &no_balloon
                .replace("<name>mem</name>", "<name>nob</name>")
                .replace(UUID, "6b2c3d4e-5f60-4b7c-9d8e-0f1a2b3c4d5e"),
        )
        .1
        .error();
    assert!(err.contains("memballoon"), "{err}");

    // A running guest without one: its memory cannot change, dommemstat has its size and rss.
    let full_size = no_balloon.replace("\n  <currentMemory unit='MiB'>160</currentMemory>", "");
    daemon
        .define(
            "nob.xml",
            &full_size
                .replace("<name>mem</name>", "<name>nob</name>")
                .replace(UUID, "6b2c3d4e-5f60-4b7c-9d8e-0f1a2b3c4d5e"),
        )
        .1
        .ok();
    daemon.oxvirt(&["start", "nob"]).ok();
    let err = daemon.oxvirt(&["setmem", "nob", "128M"]).error();
    assert!(err.contains("has no memory balloon device"), "{err}");
    let err = daemon
        .oxvirt(&["dommemstat", "nob", "--period", "1"])
        .error();
    assert!(err.contains("has no memory balloon device"), "{err}");
    let stats = daemon.oxvirt(&["dommemstat", "nob"]).ok();
    assert!(stats.starts_with("actual 262144\nrss "), "{stats}");
    daemon.oxvirt(&["destroy", "nob"]).ok();
}

/// The host's 2 MiB huge page pool, given back as it was when the test ends (even by a
/// panic); with hugetlbfs mounted at /dev/hugepages for the test if it was not.
struct HugepageReservation {
    old: u64,
    mounted: bool,
}

const NR_HUGEPAGES: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";
const FREE_HUGEPAGES: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages";

fn read_number(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

impl HugepageReservation {
    fn take() -> HugepageReservation {
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
        let mounted = !mounts
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some("/dev/hugepages"));
        if mounted {
            std::fs::create_dir_all("/dev/hugepages").unwrap();
            let status = std::process::Command::new("mount")
                .args(["-t", "hugetlbfs", "hugetlbfs", "/dev/hugepages"])
                .status()
                .unwrap();
            assert!(status.success(), "mount hugetlbfs on /dev/hugepages");
        }
        HugepageReservation {
            old: read_number(NR_HUGEPAGES),
            mounted,
        }
    }

    /// Sizes the pool so that `free` pages are free (pages in use stay).
    fn free(&self, free: u64) {
        let used = read_number(NR_HUGEPAGES) - read_number(FREE_HUGEPAGES);
        std::fs::write(NR_HUGEPAGES, (used + free).to_string()).unwrap();
        assert_eq!(
            read_number(FREE_HUGEPAGES),
            free,
            "the kernel gave fewer pages"
        );
    }
}

impl Drop for HugepageReservation {
    fn drop(&mut self) {
        let _ = std::fs::write(NR_HUGEPAGES, self.old.to_string());
        if self.mounted {
            let _ = std::process::Command::new("umount")
                .arg("/dev/hugepages")
                .status();
            let _ = std::fs::remove_dir("/dev/hugepages");
        }
    }
}

#[test]
fn hugepages_back_the_guest_or_the_start_is_refused_and_nosharepages_stays_out_of_ksm() {
    const HUGE_UUID: &str = "7c3d4e5f-6071-4c8d-8e9f-1a2b3c4d5e6f";
    const PLAIN_UUID: &str = "8d4e5f60-7182-4d9e-9fa0-2b3c4d5e6f70";
    // Taken first, so it is given back last (after the daemon's guests are gone) on a panic.
    let pool = HugepageReservation::take();
    let daemon = Daemon::start();
    let disk = make_disk(daemon.dir.path(), "huge.img", 2048);
    let kit = guest_kit();
    let huge = guest_xml("huge", HUGE_UUID, &kit, &disk, 1).replace(
        "<vcpu>",
        "<memoryBacking><hugepages/></memoryBacking>\n  <vcpu>",
    );
    daemon.define("huge.xml", &huge).1.ok();

    // Too few: refused before launch, with the page size and both counts; nothing runs.
    pool.free(100);
    let err = daemon.oxvirt(&["start", "huge"]).error();
    assert!(
        err.contains("needs 128 huge pages of 2048 KiB") && err.contains("100 free"),
        "{err}"
    );
    assert_eq!(daemon.oxvirt(&["domstate", "huge"]).ok(), "shut off\n\n");
    assert_eq!(qemu_pid(HUGE_UUID), None);

    // Enough: the guest boots on them, its RAM mapped in 2 MiB pages.
    pool.free(128);
    let mut console = daemon.start_with_console("huge");
    console.expect_text(BOOT_MARKER, BOOT_TIMEOUT);
    let pid = qemu_pid(HUGE_UUID).expect("the guest's QEMU");
    let ram = guest_ram_smaps(pid, 256 * MIB);
    assert_eq!(smaps_field(&ram, "KernelPageSize:"), "2048 kB", "{ram}");
    assert_eq!(read_number(FREE_HUGEPAGES), 0, "QEMU took every page");
    drop(console);
    daemon.oxvirt(&["destroy", "huge"]).ok();
    drop(pool);

    // KSM: QEMU marks guest RAM mergeable unless <nosharepages/> says not to.
    let plain = guest_xml("plain", PLAIN_UUID, &kit, &disk, 1);
    daemon.define("plain.xml", &plain).1.ok();
    let flags = |uuid: &str| {
        let pid = qemu_pid(uuid).expect("the guest's QEMU");
        let cmdline =
            String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap())
                .replace('\0', " ");
        let ram = guest_ram_smaps(pid, 256 * MIB);
        (cmdline, smaps_field(&ram, "VmFlags:").to_string())
    };
    daemon.oxvirt(&["start", "plain"]).ok();
    let (cmdline, vm_flags) = flags(PLAIN_UUID);
    assert!(!cmdline.contains("mem-merge=off"), "{cmdline}");
    assert!(vm_flags.split(' ').any(|f| f == "mg"), "{vm_flags}");
    daemon.oxvirt(&["destroy", "plain"]).ok();
    let unshared = plain.replace(
        "<vcpu>",
        "<memoryBacking><nosharepages/></memoryBacking>\n  <vcpu>",
    );
    daemon.define("plain.xml", &unshared).1.ok();
    daemon.oxvirt(&["start", "plain"]).ok();
    let (cmdline, vm_flags) = flags(PLAIN_UUID);
    assert!(cmdline.contains("mem-merge=off"), "{cmdline}");
    assert!(!vm_flags.split(' ').any(|f| f == "mg"), "{vm_flags}");
    daemon.oxvirt(&["destroy", "plain"]).ok();
}
