//! The host's files seen from a root directory: `/` on a real host, a prepared tree in tests,
//! so the readers of `/proc` and `/sys` (host validation, the node verbs) are plain functions of
//! what the host shows.

use std::path::{Path, PathBuf};

/// The host's files, under `root`.
#[derive(Debug, Clone)]
pub struct HostView {
    root: PathBuf,
}

impl HostView {
    /// This machine.
    pub fn this_host() -> HostView {
        HostView::at(Path::new("/"))
    }

    /// A host tree under `root` (tests).
    pub fn at(root: &Path) -> HostView {
        HostView {
            root: root.to_path_buf(),
        }
    }

    pub(crate) fn path(&self, absolute: &str) -> PathBuf {
        self.root.join(absolute.trim_start_matches('/'))
    }

    pub(crate) fn read(&self, absolute: &str) -> Option<String> {
        std::fs::read_to_string(self.path(absolute)).ok()
    }

    pub(crate) fn exists(&self, absolute: &str) -> bool {
        self.path(absolute).exists()
    }

    pub(crate) fn value(&self, absolute: &str) -> Option<String> {
        self.read(absolute).map(|text| text.trim().to_string())
    }

    /// The CPU flags of `/proc/cpuinfo`'s first processor.
    pub fn cpu_flags(&self) -> Vec<String> {
        self.read("/proc/cpuinfo")
            .and_then(|info| {
                info.lines()
                    .find(|line| line.starts_with("flags"))
                    .and_then(|line| line.split_once(':'))
                    .map(|(_, flags)| flags.split_whitespace().map(str::to_string).collect())
            })
            .unwrap_or_default()
    }

    /// The loaded KVM module: `kvm_intel`, `kvm_amd`, `kvm_pvm`, or none.
    pub(crate) fn kvm_module(&self) -> Option<&'static str> {
        ["kvm_intel", "kvm_amd", "kvm_pvm"]
            .into_iter()
            .find(|module| self.exists(&format!("/sys/module/{module}")))
    }
}
