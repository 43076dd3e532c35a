//! `oxvirt-vmm`: a native x86-64 VMM on KVM, built from rust-vmm crates.
//!
//! Reading order: [`config`] (command line) → [`vm`] (assembly and run loop) → [`boot`], [`acpi`], [`cpuid`],
//! [`memory`], [`layout`] (what the guest sees) → [`devices`] (what exits reach) → [`api`] (control socket)
//! → [`seccomp`] (per-thread system call filters).
//! See `docs/native-vmm.md` for the user-facing description.

pub mod acpi;
pub mod api;
pub mod boot;
pub mod config;
pub mod control;
pub mod cpuid;
pub mod devices;
pub mod layout;
pub mod memory;
pub mod seccomp;
pub mod vm;

/// Process exit status after a guest reset (reboot): the VMM does not restart the guest itself, the
/// management layer decides.
pub const EXIT_STATUS_RESET: i32 = 3;
