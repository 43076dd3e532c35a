//! The Debian tools the builder drives, and the one way it runs them: a failure names the program,
//! what it was doing and the end of its error output; a missing program names its Debian package.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

/// A program the builder needs, with the Debian package that ships it.
#[derive(Clone, Copy)]
pub struct Tool {
    pub program: &'static str,
    pub package: &'static str,
}

pub const MMDEBSTRAP: Tool = Tool {
    program: "mmdebstrap",
    package: "mmdebstrap",
};
pub const SFDISK: Tool = Tool {
    program: "sfdisk",
    package: "fdisk",
};
pub const MKE2FS: Tool = Tool {
    program: "mke2fs",
    package: "e2fsprogs",
};
pub const MKFS_VFAT: Tool = Tool {
    program: "mkfs.vfat",
    package: "dosfstools",
};
pub const MMD: Tool = Tool {
    program: "mmd",
    package: "mtools",
};
pub const MCOPY: Tool = Tool {
    program: "mcopy",
    package: "mtools",
};
pub const TAR: Tool = Tool {
    program: "tar",
    package: "tar",
};
pub const CHROOT: Tool = Tool {
    program: "chroot",
    package: "coreutils",
};
pub const LOSETUP: Tool = Tool {
    program: "losetup",
    package: "mount",
};
pub const MOUNT: Tool = Tool {
    program: "mount",
    package: "mount",
};
pub const UMOUNT: Tool = Tool {
    program: "umount",
    package: "mount",
};
/// Not on PATH in Debian: grub-install runs it from the platform directory.
pub const GRUB_BIOS_SETUP: Tool = Tool {
    program: "/usr/lib/grub/i386-pc/grub-bios-setup",
    package: "grub-pc-bin",
};

impl Tool {
    fn found(&self) -> bool {
        if self.program.starts_with('/') {
            return Path::new(self.program).is_file();
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        // Tools in /usr/sbin are missing from some users' PATH; the builder runs as root anyway.
        std::env::split_paths(&path)
            .chain(["/usr/sbin".into(), "/sbin".into()])
            .any(|dir| dir.join(self.program).is_file())
    }
}

/// Fails with every missing program and the packages to install, before any work is done.
pub fn require(tools: &[Tool]) -> anyhow::Result<()> {
    let missing: Vec<&Tool> = tools.iter().filter(|tool| !tool.found()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut packages: Vec<&str> = missing.iter().map(|tool| tool.package).collect();
    packages.sort_unstable();
    packages.dedup();
    let programs: Vec<&str> = missing.iter().map(|tool| tool.program).collect();
    bail!(
        "the builder needs {} (install them with: apt-get install {})",
        programs.join(", "),
        packages.join(" ")
    )
}

/// A command for `tool`, with /usr/sbin on its PATH.
pub fn command(tool: Tool) -> Command {
    let mut command = Command::new(tool.program);
    let path = std::env::var("PATH").unwrap_or_default();
    command.env("PATH", format!("{path}:/usr/sbin:/sbin"));
    command
}

/// A filesystem mounted by [`Mount::new`], unmounted when dropped.
pub struct Mount {
    target: PathBuf,
    /// `umount --lazy`: for mounts a leftover process could keep busy.
    lazy: bool,
}

impl Mount {
    /// Runs `mount ARGS... TARGET`; `what` says what it was for in the error.
    pub fn new<A: AsRef<OsStr>>(
        args: impl IntoIterator<Item = A>,
        target: &Path,
        lazy: bool,
        what: &str,
    ) -> anyhow::Result<Mount> {
        let mut command = command(MOUNT);
        command.args(args).arg(target);
        run(command, what)?;
        Ok(Mount {
            target: target.to_path_buf(),
            lazy,
        })
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let mut command = command(UMOUNT);
        if self.lazy {
            command.arg("--lazy");
        }
        command.arg(&self.target);
        if let Err(err) = run(command, &format!("unmounting {}", self.target.display())) {
            eprintln!("warning: {err:#}");
        }
    }
}

/// Runs `command` to completion; `what` says what it was for in the error.
pub fn run(mut command: Command, what: &str) -> anyhow::Result<()> {
    run_with_input(&mut command, what, None).map(|_| ())
}

/// Runs `command`, feeding `input` on its standard input, and returns its standard output.
pub fn run_with_input(
    command: &mut Command,
    what: &str,
    input: Option<&[u8]>,
) -> anyhow::Result<Vec<u8>> {
    let program = command.get_program().to_string_lossy().into_owned();
    command
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .with_context(|| format!("{what}: cannot run {program}"))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        use std::io::Write;
        stdin
            .write_all(input)
            .with_context(|| format!("{what}: cannot write to {program}"))?;
    }
    let output = child
        .wait_with_output()
        .with_context(|| format!("{what}: {program} did not finish"))?;
    if !output.status.success() {
        bail!(
            "{what}: {program} failed ({}): {}",
            output.status,
            tail(&output.stderr, &output.stdout)
        );
    }
    Ok(output.stdout)
}

/// The last lines of what a failed program said (stderr, else stdout), for the error message.
fn tail(stderr: &[u8], stdout: &[u8]) -> String {
    let text = if stderr.iter().any(|b| !b.is_ascii_whitespace()) {
        String::from_utf8_lossy(stderr)
    } else {
        String::from_utf8_lossy(stdout)
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(5)..].join(" / ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_names_its_package() {
        let missing = Tool {
            program: "oxvirt-no-such-program",
            package: "oxvirt-no-such-package",
        };
        let err = require(&[TAR, missing]).unwrap_err().to_string();
        assert!(err.contains("oxvirt-no-such-program"), "{err}");
        assert!(
            err.contains("apt-get install oxvirt-no-such-package"),
            "{err}"
        );
        assert!(!err.contains(" tar"), "{err}");
    }

    #[test]
    fn a_failing_program_reports_what_it_said() {
        let mut command = command(TAR);
        command.arg("--no-such-option");
        let err = run(command, "listing").unwrap_err().to_string();
        assert!(err.starts_with("listing: tar failed"), "{err}");
        assert!(err.contains("no-such-option"), "{err}");
    }
}
