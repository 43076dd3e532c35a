//! oxvirtd's man pages, generated from its definitions so that they never drift: oxvirtd(8)
//! from the flags (clap, `settings::Args`), oxvirtd.conf(5) from the configuration key table
//! (`config::KEYS`), each key described by the help of the flag that overrides it.
//! `oxvirtd __man-pages DIR` writes both (scripts/setup.sh installs them).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

use crate::config::{DEFAULT_CONFIG, KEYS};
use crate::settings::Args;

/// The hidden mode that writes the pages: `oxvirtd __man-pages DIR`.
pub const MAN_PAGES: &str = "__man-pages";

/// Writes `DIR/oxvirtd.8` and `DIR/oxvirtd.conf.5`.
pub fn write(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut page = Vec::new();
    clap_mangen::Man::new(Args::command())
        .section("8")
        .render(&mut page)
        .context("cannot render oxvirtd(8)")?;
    let path = dir.join("oxvirtd.8");
    std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
    let path = dir.join("oxvirtd.conf.5");
    std::fs::write(&path, conf_page()).with_context(|| format!("cannot write {}", path.display()))
}

/// Text for roff: backslashes and hyphens escaped, no line starting with a control character.
fn roff(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    escaped
        .lines()
        .map(|line| {
            let line = line.trim();
            if line.starts_with('.') || line.starts_with('\'') {
                format!("\\&{line}")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// oxvirtd.conf(5).
fn conf_page() -> String {
    let command = Args::command();
    let mut page = String::new();
    let version = env!("CARGO_PKG_VERSION");
    let _ = writeln!(
        page,
        ".TH OXVIRTD.CONF 5 \"\" \"oxvirt {version}\" \"File Formats\""
    );
    page.push_str(".SH NAME\noxvirtd.conf \\- the oxvirt daemon's configuration file\n");
    let _ = writeln!(page, ".SH SYNOPSIS\n{}", roff(DEFAULT_CONFIG));
    page.push_str(&format!(
        ".SH DESCRIPTION\n{}\n.PP\n{}\n.PP\n{}\n",
        roff(
            "oxvirtd(8) reads this file at start (another one with --config FILE). The syntax \
             is libvirtd.conf's: one key = value a line, strings in double quotes, integers \
             bare, # starts a comment (not inside a string)."
        ),
        roff(
            "A missing default file means every default; a missing --config FILE is an error. \
             Every key is also a flag of oxvirtd, and a flag given wins over the file. An \
             unknown key or a bad value stops oxvirtd with a message naming the key and its \
             line; oxvirtd --check-config checks the file and the flags without starting."
        ),
        roff(
            "Logging follows libvirtd: levels 1 debug, 2 info, 3 warning, 4 error; log_filters \
             as \"3:qemu 1:daemon.engine\"; log_outputs as \"1:file:/var/log/oxvirt/oxvirtd.log \
             3:stderr\" (also LEVEL:syslog:IDENT and LEVEL:journald). Log files, and each \
             guest's console.log and qemu.log, rotate by size into gzip-compressed backups \
             FILE.1.gz (newest) to FILE.N.gz."
        ),
    ));
    page.push_str(".SH KEYS\n");
    for (key, flag) in KEYS {
        let long = flag.trim_start_matches("--");
        let help = command
            .get_arguments()
            .find(|arg| arg.get_long() == Some(long))
            .and_then(|arg| arg.get_long_help().or(arg.get_help()))
            .map(|help| help.to_string())
            .unwrap_or_default();
        let _ = writeln!(
            page,
            ".TP\n.B {key}\n{}\n.br\nFlag: \\fB{}\\fR.",
            roff(&help),
            roff(flag)
        );
    }
    let _ = writeln!(
        page,
        ".SH FILES\n{}\n.br\n{}",
        roff(DEFAULT_CONFIG),
        roff("/etc/oxvirt/oxvirtd.conf.example: every key commented out at its default")
    );
    page.push_str(".SH SEE ALSO\n.BR oxvirtd (8),\n.BR oxvirt (1)\n");
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key's flag exists, so every key has its text in oxvirtd.conf(5).
    #[test]
    fn every_key_has_a_flag_with_help() {
        let command = Args::command();
        for (key, flag) in KEYS {
            let long = flag.trim_start_matches("--");
            let arg = command
                .get_arguments()
                .find(|arg| arg.get_long() == Some(long))
                .unwrap_or_else(|| panic!("{key}: no flag {flag}"));
            assert!(arg.get_help().is_some(), "{flag} has no help");
        }
    }

    #[test]
    fn roff_escapes() {
        assert_eq!(roff("a-b \\ c"), "a\\-b \\e c");
        assert_eq!(roff(".x\n'y"), "\\&.x\n\\&'y");
    }
}
