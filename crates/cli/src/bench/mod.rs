//! `oxvirt bench`: what virtualization costs. The same workloads (fio and sysbench from Debian: workloads.rs)
//! run on the host, in a guest of the qemu engine (guest.rs) and in a nested guest, L2 under KVM inside an L1
//! guest of the qemu engine (nested.rs), then the figures are printed as tables, each
//! also as a percentage of the host's, and optionally written as JSON and an SVG chart (report.rs).
//! `oxvirt bench compare A.json B.json` sets two runs side by side. docs/bench.md has the method.
//!
//! Everything the run creates lives in a fresh directory under `--dir` (the data disk), removed at the end
//! however the run ends; the guest is destroyed and undefined the same way.

mod guest;
mod matrix;
mod nested;
mod report;
mod workloads;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use oxvirt_api::Client;

use report::{Machine, Report, WorkloadResult};
use workloads::{Profile, Workload};

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: Option<BenchCommand>,

    /// How long each workload runs: short (seconds, 64 MiB data disk) or full (30 s, 1 GiB).
    #[arg(long, default_value = "full")]
    profile: String,

    /// Where to run, comma-separated: host, qemu (a guest of oxvirtd's qemu engine), nested (L2 under KVM
    /// inside an L1 guest of the qemu engine; needs `scripts/bench-kit.sh --nested`).
    #[arg(long, default_value = "host,qemu", value_delimiter = ',')]
    targets: Vec<String>,

    /// Directory for the data disk (a fresh subdirectory, removed afterwards). It must allow direct I/O
    /// (not tmpfs).
    #[arg(long, default_value = ".")]
    dir: PathBuf,

    /// The bench guest kit (scripts/bench-kit.sh builds it).
    #[arg(long, env = "OXVIRT_BENCH_KIT_DIR", default_value = "target/bench-kit")]
    kit: PathBuf,

    /// Also write the results as JSON into FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,

    /// Also draw the results as an SVG bar chart into FILE.
    #[arg(long, value_name = "FILE")]
    chart: Option<PathBuf>,

    /// Measure the qemu target with every combination of these disk settings, one column each: AXIS=VALUE[,VALUE...]
    /// per axis, axes cache (none, writeback), io (native, threads, io_uring), format (raw, qcow2), bus (virtio,
    /// scsi). An axis not given keeps the qemu target's setting (cache=none io=native
    /// format=raw bus=virtio). The combinations run in one guest, the data disk hot-plugged with each.
    #[arg(long, value_name = "AXIS=VALUES", num_args = 1..)]
    matrix: Vec<String>,

    /// Give the nested target's L1 a CPU without SVM (QEMU's kvm64), as a host without nested virtualization
    /// does (tests of that error).
    #[arg(long, hide = true)]
    nested_l1_without_svm: bool,

    /// Print each workload's id and command line (fio working on DISK), tab-separated, and run nothing:
    /// benches/bench-nested.sh types them in its L2 guest.
    #[arg(long, value_name = "DISK", hide = true)]
    print_commands: Option<String>,
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Print B's figures as a percentage of A's, workload by workload (two `--json` reports).
    Compare {
        /// The reference report.
        a: PathBuf,
        /// The report compared with it.
        b: PathBuf,
    },
    /// Read the workloads' outputs from a guest's console log (each between the lines `BENCH-BEGIN-ID` and
    /// `BENCH-END-ID-STATUS`, as benches/bench-nested.sh has its L2 guest print them) as TARGET's figures.
    #[command(name = "import-console", hide = true)]
    ImportConsole {
        /// The console log.
        log: PathBuf,
        /// The target name the figures are for (e.g. nested).
        #[arg(long)]
        target: String,
        /// The profile the workloads ran with.
        #[arg(long, default_value = "full")]
        profile: String,
        /// Add the target to this report (from `--json`) instead of starting a new one.
        #[arg(long, value_name = "FILE")]
        merge: Option<PathBuf>,
        /// Write the result as JSON into FILE.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
}

/// The places a workload can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Host,
    Qemu,
    Nested,
}

impl Target {
    fn parse(name: &str) -> anyhow::Result<Target> {
        match name.trim() {
            "host" => Ok(Target::Host),
            "qemu" => Ok(Target::Qemu),
            "nested" => Ok(Target::Nested),
            other => bail!("unknown bench target '{other}' (known: host, qemu, nested)"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Target::Host => "host",
            Target::Qemu => "qemu",
            Target::Nested => "nested",
        }
    }
}

pub fn run(client: &Client, args: BenchArgs) -> anyhow::Result<()> {
    match args.command {
        Some(BenchCommand::Compare { a, b }) => {
            let text = report::compare(&Report::read(&a)?, &Report::read(&b)?)?;
            print!("{text}");
            return Ok(());
        }
        Some(BenchCommand::ImportConsole {
            log,
            target,
            profile,
            merge,
            json,
        }) => return import_console(&log, &target, &profile, merge.as_deref(), json.as_deref()),
        None => {}
    }
    let profile = Profile::parse(&args.profile)?;
    if let Some(disk) = &args.print_commands {
        for w in &workloads::ALL {
            println!("{}\t{}", w.id, w.argv(profile, disk).join(" "));
        }
        return Ok(());
    }
    let mut targets = Vec::new();
    for name in &args.targets {
        let target = Target::parse(name)?;
        if !targets.contains(&target) {
            targets.push(target);
        }
    }
    if targets.is_empty() {
        bail!("no bench target given");
    }
    let mut skipped = Vec::new();
    let settings = matrix::parse(&args.matrix, &mut skipped)?;
    if !args.matrix.is_empty() && !targets.contains(&Target::Qemu) {
        bail!("--matrix measures the qemu target: add qemu to --targets");
    }
    for note in &skipped {
        eprintln!("note: --matrix: left out {note}");
    }
    // oxvirtd opens the kit's and the data disk's files: relative paths would be read from its directory.
    let kit_dir = std::path::absolute(&args.kit)
        .with_context(|| format!("cannot resolve {}", args.kit.display()))?;
    let bench_dir = std::path::absolute(&args.dir)
        .with_context(|| format!("cannot resolve {}", args.dir.display()))?;
    // The kits and the daemon before the data disk is written: what is missing is said in a moment, not
    // after a 1 GiB write.
    let kit = if targets.contains(&Target::Qemu) {
        Some(guest::Kit::open(&kit_dir)?)
    } else {
        None
    };
    let nested_kit = if targets.contains(&Target::Nested) {
        Some(nested::Kit::open(&kit_dir)?)
    } else {
        None
    };
    if let Some(target) = targets
        .iter()
        .find(|t| matches!(t, Target::Qemu | Target::Nested))
    {
        crate::commands::block_on(client.version())?.with_context(|| {
            format!(
                "the {} target needs oxvirtd at {}",
                target.name(),
                client.socket().display()
            )
        })?;
    }
    for tool in ["fio", "sysbench"] {
        if targets.contains(&Target::Host) && tool_version(tool).is_none() {
            bail!("{tool} is not installed on this host (apt-get install fio sysbench)");
        }
    }

    let work = tempfile::Builder::new()
        .prefix("oxvirt-bench-")
        .tempdir_in(&bench_dir)
        .with_context(|| format!("cannot create a work directory in {}", args.dir.display()))?;
    // Searchable by others (not readable): a sandboxed guest runs as a user of its own, which must reach the
    // nested target's disk through this directory (docs/security.md), which gives the disk to it for the run.
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o711))
        .with_context(|| format!("cannot open {} to the guests' users", work.path().display()))?;
    let disk = work.path().join("data.raw");
    write_data_disk(&disk, profile.disk_mib())?;

    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let columns: Vec<String> = targets
        .iter()
        .flat_map(|t| match t {
            Target::Qemu => settings.iter().map(matrix::DiskSetting::target).collect(),
            other => vec![other.name().to_string()],
        })
        .collect();
    let bar = ProgressBar::new((columns.len() * workloads::ALL.len()) as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));

    let mut results: Vec<WorkloadResult> = workloads::ALL
        .iter()
        .map(|w| WorkloadResult {
            id: w.id.to_string(),
            unit: w.unit.to_string(),
            results: Default::default(),
        })
        .collect();
    let outcome = (|| -> anyhow::Result<()> {
        for target in &targets {
            match target {
                Target::Host => {
                    for (w, result) in workloads::ALL.iter().zip(results.iter_mut()) {
                        bar.set_message(format!("host: {}", w.id));
                        let value = run_on_host(w, profile, &disk)?;
                        result.results.insert("host".into(), value);
                        bar.inc(1);
                    }
                }
                Target::Qemu if args.matrix.is_empty() => {
                    bar.set_message("qemu: booting the bench guest");
                    let kit = kit.as_ref().context("the bench kit is needed")?;
                    let mut guest = guest::Guest::boot(client, kit, Some(&disk))?;
                    run_in_guest(&mut guest, "qemu", "/dev/vda", profile, &mut results, &bar)?;
                }
                Target::Qemu => {
                    bar.set_message("qemu: booting the bench guest");
                    let kit = kit.as_ref().context("the bench kit is needed")?;
                    // The first disk, which the data disk is plugged beside (guest.rs says why).
                    let first = work.path().join("first.raw");
                    std::fs::write(&first, [0u8; 4096])
                        .with_context(|| format!("cannot write {}", first.display()))?;
                    let mut guest = guest::Guest::boot(client, kit, Some(&first))?;
                    let mut qcow2 = None;
                    for setting in &settings {
                        let column = setting.target();
                        bar.set_message(format!("{column}: plugging the data disk"));
                        let source = match setting.format.as_str() {
                            "qcow2" => qcow2_copy(&mut qcow2, &disk)?,
                            _ => disk.clone(),
                        };
                        guest.plug_data_disk(&source, setting)?;
                        let (_, device) = setting.data_disk();
                        run_in_guest(&mut guest, &column, device, profile, &mut results, &bar)?;
                        guest.unplug_data_disk(setting)?;
                    }
                }
                Target::Nested => {
                    let kit = nested_kit.as_ref().context("the nested kit is needed")?;
                    let svm = !args.nested_l1_without_svm;
                    let boot = |restarts: &mut u32| loop {
                        bar.set_message("nested: booting L1, then L2 in it");
                        match nested::Nested::boot(client, kit, &disk, svm) {
                            Ok(nested) => return Ok(nested),
                            Err(err) if may_restart_l1(&err, restarts) => {
                                // (suspend, not println: a hidden bar, off a terminal, prints nothing)
                                bar.suspend(|| eprintln!("nested: {err:#}; starting L1 again"));
                            }
                            Err(err) => return Err(err),
                        }
                    };
                    let mut restarts = 0;
                    let mut nested = boot(&mut restarts)?;
                    for (w, result) in workloads::ALL.iter().zip(results.iter_mut()) {
                        bar.set_message(format!("nested: {}", w.id));
                        let value = loop {
                            match nested.run(w, profile) {
                                Ok(value) => break value,
                                Err(err) if may_restart_l1(&err, &mut restarts) => {
                                    bar.suspend(|| {
                                        eprintln!(
                                            "nested: {err:#}; starting L1 again to run {} again",
                                            w.id
                                        )
                                    });
                                    // The wedged L1 goes (destroyed, undefined) before the next starts.
                                    drop(nested);
                                    nested = boot(&mut restarts)?;
                                }
                                Err(err) => return Err(err),
                            }
                        };
                        result.results.insert("nested".into(), value);
                        bar.inc(1);
                    }
                }
            }
        }
        Ok(())
    })();
    bar.finish_and_clear();
    outcome?;
    drop(work);

    let report = Report {
        format: report::FORMAT.to_string(),
        oxvirt_version: env!("CARGO_PKG_VERSION").to_string(),
        profile: profile.name().to_string(),
        started,
        machine: machine(),
        targets: columns,
        workloads: results,
    };
    if let Some(path) = &args.json {
        write_json(&report, path)?;
    }
    if let Some(path) = &args.chart {
        std::fs::write(path, report.chart_svg())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let mut stdout = std::io::stdout();
    stdout.write_all(report.tables().as_bytes())?;
    Ok(())
}

/// How many times one run starts a wedged L1 again.
const L1_RESTARTS: u32 = 3;

/// Whether `err` is an L1 that wedged ([`nested::L1Wedged`]: a fault of the emulation under L1, not of the
/// workload) and may be started again, counting the restart in `restarts`: the workload it ran is run again
/// in a new L1, and the restart said on the terminal.
fn may_restart_l1(err: &anyhow::Error, restarts: &mut u32) -> bool {
    if *restarts == L1_RESTARTS || err.downcast_ref::<nested::L1Wedged>().is_none() {
        return false;
    }
    *restarts += 1;
    true
}

fn write_json(report: &Report, path: &Path) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}

/// `bench import-console`: the figures of `target` from a console log, alone or added to `merge`'s report.
fn import_console(
    log: &Path,
    target: &str,
    profile: &str,
    merge: Option<&Path>,
    json: Option<&Path>,
) -> anyhow::Result<()> {
    let profile = Profile::parse(profile)?;
    // A leading newline: a marker on the log's first line starts a line too.
    let text = "\n".to_string()
        + &std::fs::read_to_string(log)
            .with_context(|| format!("cannot read {}", log.display()))?
            .replace('\r', "");
    let mut report = match merge {
        Some(path) => Report::read(path)?,
        None => Report {
            format: report::FORMAT.to_string(),
            oxvirt_version: env!("CARGO_PKG_VERSION").to_string(),
            profile: profile.name().to_string(),
            started: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            machine: machine(),
            targets: Vec::new(),
            workloads: Vec::new(),
        },
    };
    if report.profile != profile.name() {
        bail!(
            "{} ran the {} profile, the console log the {} one",
            merge.map_or_else(String::new, |p| p.display().to_string()),
            report.profile,
            profile.name()
        );
    }
    if report.targets.iter().any(|t| t == target) {
        bail!("the report already has the target '{target}'");
    }
    report.targets.push(target.to_string());
    for w in &workloads::ALL {
        let value = figure_from_console(&text, w, target)
            .with_context(|| format!("in {}", log.display()))?;
        match report.workloads.iter_mut().find(|r| r.id == w.id) {
            Some(row) => {
                row.results.insert(target.to_string(), value);
            }
            None => report.workloads.push(WorkloadResult {
                id: w.id.to_string(),
                unit: w.unit.to_string(),
                results: [(target.to_string(), value)].into(),
            }),
        }
    }
    if let Some(path) = json {
        write_json(&report, path)?;
    }
    print!("{}", report.tables());
    Ok(())
}

/// Every workload in `guest` (its data disk is `device`), as the figures of `column`.
fn run_in_guest(
    guest: &mut guest::Guest,
    column: &str,
    device: &str,
    profile: Profile,
    results: &mut [WorkloadResult],
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    for (w, result) in workloads::ALL.iter().zip(results.iter_mut()) {
        bar.set_message(format!("{column}: {}", w.id));
        let command = w.argv(profile, device).join(" ");
        let output = guest
            .run(&command, Duration::from_secs(profile.seconds().into()))
            .with_context(|| format!("{} in the qemu guest ({column})", w.id))?;
        result.results.insert(column.to_string(), w.parse(&output)?);
        bar.inc(1);
    }
    Ok(())
}

/// The data disk as qcow2 (`data.qcow2` beside it, every cluster allocated as the raw disk's blocks are
/// written), made on first use.
fn qcow2_copy(made: &mut Option<PathBuf>, raw: &Path) -> anyhow::Result<PathBuf> {
    if let Some(path) = made {
        return Ok(path.clone());
    }
    use oxvirt_images::ops::{convert, ConvertOptions};
    use oxvirt_images::{CreateOptions, Format, Image, OpenOptions};
    let path = raw.with_file_name("data.qcow2");
    let mut image = Image::open(
        raw,
        &OpenOptions {
            format: Some(Format::Raw),
            ..OpenOptions::default()
        },
    )
    .with_context(|| format!("cannot open {}", raw.display()))?;
    let options = ConvertOptions {
        format: Format::Qcow2,
        cluster_size: CreateOptions::default().cluster_size,
        overwrite: false,
    };
    convert(&mut image, &path, &options, &mut |_, _| {})
        .with_context(|| format!("cannot write the qcow2 data disk {}", path.display()))?;
    *made = Some(path.clone());
    Ok(path)
}

/// `w`'s figure on `target` from a console's text (with `\n` line ends and a `\n` before its first line),
/// where the workload's output sits between the lines `BENCH-BEGIN-ID` and `BENCH-END-ID-STATUS`.
fn figure_from_console(text: &str, w: &Workload, target: &str) -> anyhow::Result<f64> {
    let begin = format!("\nBENCH-BEGIN-{}\n", w.id);
    let end = format!("\nBENCH-END-{}-", w.id);
    let output = text
        .split_once(&begin)
        .and_then(|(_, rest)| rest.split_once(&end))
        .with_context(|| format!("no output of {} on {target}", w.id))?;
    let status: String = output.1.chars().take_while(char::is_ascii_digit).collect();
    if status != "0" {
        bail!(
            "{} failed on {target} (exit status {status}):\n{}",
            w.id,
            output.0
        );
    }
    w.parse(output.0)
        .with_context(|| format!("{} on {target}", w.id))
}

/// Fills the data disk with non-zero data, so reads cost what reads of written blocks cost (a sparse file's
/// holes read back without touching the device).
fn write_data_disk(path: &Path, mib: u64) -> anyhow::Result<()> {
    let fail = |e: std::io::Error| {
        anyhow::Error::new(e).context(format!("cannot write the data disk {}", path.display()))
    };
    let mut file = std::fs::File::create(path).map_err(fail)?;
    let block: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8 + 1).collect();
    for _ in 0..mib {
        file.write_all(&block).map_err(fail)?;
    }
    file.sync_all().map_err(fail)
}

fn run_on_host(w: &Workload, profile: Profile, disk: &Path) -> anyhow::Result<f64> {
    let argv = w.argv(profile, &disk.display().to_string());
    let output = Command::new(&argv[0])
        .args(&argv[1..])
        .output()
        .with_context(|| format!("cannot run {}", argv[0]))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!(
            "{} on the host failed ({}): {}",
            w.id,
            output.status,
            text.trim()
        );
    }
    w.parse(&text)
        .with_context(|| format!("{} on the host", w.id))
}

/// `fio --version` or `sysbench --version`, if the tool runs.
fn tool_version(tool: &str) -> Option<String> {
    let out = Command::new(tool).arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(String::new, |(_, m)| m.trim().to_string());
    Machine {
        cpu_model,
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        fio: tool_version("fio").unwrap_or_default(),
        sysbench: tool_version("sysbench").unwrap_or_default(),
    }
}
