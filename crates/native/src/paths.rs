//! Where a native guest keeps its files: one run directory per VM, fixed names inside.

use std::path::{Path, PathBuf};

/// The run directory of one VM (oxvirtd's `STATE_DIR/run/UUID`). Everything the engine and the
/// VMM create for the VM lives in it under fixed names, so a restarted daemon finds a running
/// guest again from the directory alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPaths {
    pub dir: PathBuf,
}

impl RunPaths {
    pub fn new(dir: impl Into<PathBuf>) -> RunPaths {
        RunPaths { dir: dir.into() }
    }

    /// The VM's configuration, as `oxvirt-vmm --config` reads it.
    pub fn config_file(&self) -> PathBuf {
        self.dir.join("vm.json")
    }

    /// Why the VM ended, written by the VMM just before it exits.
    pub fn exit_record(&self) -> PathBuf {
        self.dir.join("vmm-exit.json")
    }

    /// The VMM's pid, written by the engine at launch.
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("vmm.pid")
    }

    /// The VMM's control API socket.
    pub fn api_socket(&self) -> PathBuf {
        self.dir.join("vmm-api.sock")
    }

    /// The VMM's own serial socket (only the console relay connects to it).
    pub fn serial_socket(&self) -> PathBuf {
        self.dir.join("vmm-serial.sock")
    }

    /// The VMM's stdout and stderr (truncated at each start).
    pub fn vmm_log(&self) -> PathBuf {
        self.dir.join("vmm.log")
    }

    /// The console relay's socket, for `oxvirt console` (any number of clients).
    pub fn console_socket(&self) -> PathBuf {
        self.dir.join("console.sock")
    }

    /// The jailed VMM's root: an empty directory on the host, on which the VMM mounts its own
    /// empty read-only file system (`oxvirt_vmm::jail`).
    pub fn jail_root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// Everything the guest printed on its console (appended across starts).
    pub fn console_log(&self) -> PathBuf {
        self.dir.join("console.log")
    }

    /// The machine state an incoming migration received, while the VMM restores from it (removed
    /// once it has, or if it cannot; not a stale file: it is written before the launch).
    pub fn incoming_state(&self) -> PathBuf {
        self.dir.join("incoming.state")
    }

    /// What a previous run may have left and a new launch must not mistake for its own.
    pub(crate) fn stale_files(&self) -> [PathBuf; 6] {
        let mut exit_temp = self.exit_record().into_os_string();
        exit_temp.push(".tmp");
        [
            self.pid_file(),
            self.api_socket(),
            self.serial_socket(),
            self.console_socket(),
            self.exit_record(),
            PathBuf::from(exit_temp),
        ]
    }

    pub(crate) fn is(&self, dir: &Path) -> bool {
        self.dir == dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_fixed_inside_the_dir() {
        let run = RunPaths::new("/run/ox/8c3a");
        assert_eq!(run.config_file(), Path::new("/run/ox/8c3a/vm.json"));
        assert_eq!(run.exit_record(), Path::new("/run/ox/8c3a/vmm-exit.json"));
        assert_eq!(run.pid_file(), Path::new("/run/ox/8c3a/vmm.pid"));
        assert_eq!(run.api_socket(), Path::new("/run/ox/8c3a/vmm-api.sock"));
        assert_eq!(
            run.serial_socket(),
            Path::new("/run/ox/8c3a/vmm-serial.sock")
        );
        assert_eq!(run.vmm_log(), Path::new("/run/ox/8c3a/vmm.log"));
        assert_eq!(run.console_socket(), Path::new("/run/ox/8c3a/console.sock"));
        assert_eq!(run.console_log(), Path::new("/run/ox/8c3a/console.log"));
        assert_eq!(run.jail_root(), Path::new("/run/ox/8c3a/root"));
    }
}
