//! The hypervisor's CPU model database (`oxvirt cpu-models`, `hypervisor-cpu-baseline`,
//! `hypervisor-cpu-compare`): asked of QEMU by `oxvirt_qemu::cpu_models::probe` once per QEMU
//! version and kept in STATE_DIR/cache/cpu-models-ARCH-VERSION.json, so only the first request
//! after an upgrade of QEMU starts one.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use oxvirt_api::{CpuModelInfo, CpuModels};
use oxvirt_qemu::cpu_models::{self, CpuDatabase};
use oxvirt_qemu::{probe_accel, Accel};

use super::error::{bad_request, internal, DaemonResult};
use super::Services;

impl Services {
    /// The models of `arch` and the CPU that `virttype` (`qemu` or `kvm`) provides here.
    pub fn cpu_models(&self, arch: &str, virttype: &str) -> DaemonResult<CpuModels> {
        if !matches!(virttype, "qemu" | "kvm") {
            return Err(bad_request(format!(
                "unknown virttype '{virttype}': expected qemu or kvm"
            )));
        }
        if arch != "x86_64" {
            return Err(bad_request(format!(
                "no CPU models for architecture '{arch}': this host's QEMU engine runs x86_64"
            )));
        }
        if virttype == "kvm" {
            // Only hardware KVM provides "the host CPU"; a paravirtual /dev/kvm (kvm_pvm)
            // does not, and the probe says why.
            let probe = probe_accel();
            if probe.accel != Accel::Kvm {
                return Err(bad_request(format!(
                    "virttype kvm is not available on this host: {}",
                    probe.reason
                )));
            }
        }
        let database = self.cpu_database(arch)?;
        Ok(CpuModels {
            qemu_version: database.qemu_version,
            arch: database.arch,
            models: database
                .models
                .into_iter()
                .map(|model| CpuModelInfo {
                    name: model.name,
                    vendor: model.vendor,
                    usable: model.usable,
                    features: model.features.into_iter().collect(),
                })
                .collect(),
            virttype: virttype.to_string(),
            // TCG's max; under hardware KVM `-cpu host` would be the answer, which this
            // database does not probe yet (a KVM host reports TCG's set: see docs/cpu-models.md).
            host_features: database.tcg_max.into_iter().collect(),
        })
    }

    fn cpu_database(&self, arch: &str) -> DaemonResult<CpuDatabase> {
        // Found on PATH as a domain without `<emulator>` finds it.
        let emulator = Path::new(oxvirt_qemu::DEFAULT_EMULATOR);
        let cache_dir = self.domains.guests.state_dir().join("cache");
        let version = self.engine.version().unwrap_or_default();
        let cache = cache_file(&cache_dir, arch, &version);
        if !version.is_empty() {
            if let Some(database) = read_cache(&cache) {
                return Ok(database);
            }
        }
        let database = cpu_models::probe(emulator, arch)
            .map_err(|err| internal("asking QEMU for its CPU models", err))?;
        let cache = cache_file(&cache_dir, arch, &database.qemu_version);
        // A cache that cannot be written costs a QEMU start next time, nothing more.
        if let Err(err) = write_cache(&cache_dir, &cache, &database) {
            tracing::warn!("cannot cache CPU models in {}: {err}", cache.display());
        }
        Ok(database)
    }
}

fn cache_file(dir: &Path, arch: &str, version: &str) -> PathBuf {
    dir.join(format!("cpu-models-{arch}-{version}.json"))
}

/// A cache file that is missing or unreadable is asked of QEMU again.
fn read_cache(path: &Path) -> Option<CpuDatabase> {
    let text = std::fs::read(path).ok()?;
    serde_json::from_slice(&text).ok()
}

fn write_cache(dir: &Path, path: &Path, database: &CpuDatabase) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    // Two requests may probe at once: each writes its own file, and a rename is atomic.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let temporary = path.with_extension(format!("tmp{}", NEXT.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&temporary, serde_json::to_vec(database)?)?;
    std::fs::rename(&temporary, path)
}
