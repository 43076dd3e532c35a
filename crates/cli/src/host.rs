//! `oxvirt host`: what this machine can do for guests (no daemon needed). `validate` is
//! virt-host-validate's report, with the checks it lacks (see `oxvirt_host::validate`);
//! `tune` is the advice for a KVM host and its persistent settings (`oxvirt_host::tune`).

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use oxvirt_host::tune::{self, Advice, GuestPlan};
use oxvirt_host::validate;
use oxvirt_host::{kvm_probe, HostView};

use crate::pool::parse_size;

#[derive(Args, Debug)]
pub struct HostArgs {
    #[command(subcommand)]
    command: HostCommand,
}

#[derive(Subcommand, Debug)]
enum HostCommand {
    /// Check that this host can run guests, and how well (virt-host-validate's checks, a test
    /// of /dev/kvm, nested virtualization, huge pages, KSM, aio limits). Exit status 1 when a
    /// check fails.
    Validate {
        /// Output format.
        #[arg(long, value_enum, default_value_t = ValidateOutput::Text)]
        output: ValidateOutput,
    },
    /// Advise how to set this host up for guests (nested virtualization, huge pages, KSM, THP,
    /// I/O schedulers, aio limits, vhost-net), each item with its reason and the persistent
    /// setting; --apply writes those settings into oxvirt's files under /etc. Nothing changes
    /// without --apply.
    Tune {
        /// The memory of all the guests this host will run (e.g. 48G), for the KSM and huge page
        /// advice.
        #[arg(long)]
        guest_memory: Option<String>,
        /// Back that guest memory with 2 MiB huge pages.
        #[arg(long, requires = "guest_memory")]
        hugepages: bool,
        /// Write the advised settings (sysctl.d, modprobe.d, modules-load.d, tmpfiles.d, udev
        /// rules); files already right are left alone.
        #[arg(long)]
        apply: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ValidateOutput::Text)]
        output: ValidateOutput,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ValidateOutput {
    Text,
    Json,
}

pub fn run(args: HostArgs) -> anyhow::Result<()> {
    match args.command {
        HostCommand::Validate { output } => run_validate(output),
        HostCommand::Tune {
            guest_memory,
            hugepages,
            apply,
            output,
        } => {
            let guest_memory_kib = guest_memory
                .as_deref()
                .map(|text| parse_size(text, 1 << 30).map(|bytes| bytes / 1024))
                .transpose()
                .context("--guest-memory")?;
            let plan = GuestPlan {
                guest_memory_kib,
                hugepages,
            };
            run_tune(&plan, apply, output)
        }
    }
}

fn run_tune(plan: &GuestPlan, apply: bool, output: ValidateOutput) -> anyhow::Result<()> {
    let host = HostView::this_host();
    let items = tune::advise(&host, plan);
    let applied = if apply {
        tune::apply(&host, &items).context("cannot write the settings")?
    } else {
        Vec::new()
    };
    match output {
        ValidateOutput::Text => {
            print!("{}", tune_text(&items));
            if !apply {
                let settings = items.iter().filter(|a| a.setting.is_some()).count();
                if settings > 0 {
                    println!("`oxvirt host tune --apply` writes the {settings} settings above.");
                }
            } else if applied.iter().all(|a| !a.changed) {
                println!("nothing changed: every file already says this");
            }
            for file in applied {
                let verb = if file.changed { "wrote" } else { "unchanged" };
                println!("{verb} {}: {}", file.file, file.lines.join("; "));
            }
        }
        ValidateOutput::Json => {
            let items: Vec<serde_json::Value> = items
                .iter()
                .map(|a| {
                    serde_json::json!({
                        "topic": a.topic,
                        "status": a.status.word(),
                        "current": a.current,
                        "reason": a.reason,
                        "setting": a.setting.as_ref().map(|s| serde_json::json!({
                            "file": s.file, "line": s.line, "now": s.now,
                        })),
                    })
                })
                .collect();
            let applied: Vec<serde_json::Value> = applied
                .iter()
                .map(
                    |a| serde_json::json!({"file": a.file, "lines": a.lines, "changed": a.changed}),
                )
                .collect();
            let report = serde_json::json!({"advice": items, "applied": applied});
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
    }
    Ok(())
}

/// Each item: its status and what the host has, why, and the setting (file and line) with how
/// to make it effective before the next boot.
fn tune_text(items: &[Advice]) -> String {
    let mut text = String::new();
    for item in items {
        text.push_str(&format!(
            "{:<7} {}: {}
        {}
",
            item.status.word(),
            item.topic,
            item.current,
            item.reason
        ));
        if let Some(setting) = &item.setting {
            text.push_str(&format!(
                "        set: {}: {}
        now: {}
",
                setting.file, setting.line, setting.now
            ));
        }
    }
    text
}

/// Exits the process with status 1 when a check failed (as virt-host-validate), after the
/// whole report is printed.
fn run_validate(output: ValidateOutput) -> anyhow::Result<()> {
    let host = HostView::this_host();
    let probe = kvm_probe::probe(&host.cpu_flags());
    let checks = validate::validate(&host, &probe);
    match output {
        ValidateOutput::Text => {
            for check in &checks {
                println!("{}", check.line());
            }
        }
        ValidateOutput::Json => {
            let rows: Vec<serde_json::Value> = checks
                .iter()
                .map(|check| {
                    serde_json::json!({
                        "section": check.section,
                        "check": check.what,
                        "verdict": check.verdict.word(),
                        "advice": check.verdict.advice(),
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&rows)?);
        }
    }
    if !validate::all_passed(&checks) {
        std::io::Write::flush(&mut std::io::stdout())?;
        std::process::exit(1);
    }
    Ok(())
}
