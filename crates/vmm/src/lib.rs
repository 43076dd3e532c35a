//! `oxvirt-vmm`: a native x86-64 VMM on KVM, built from rust-vmm crates.
//!
//! Reading order: [`protocol`] (the VM's configuration, the control API's messages, the exit record) →
//! [`cli`] (the command line, one front end of the configuration) → [`resources`] (what of the host is opened
//! first) → [`jail`] (the confinement entered next) → [`vm`] (assembly and run loop) → [`boot`], [`acpi`], [`cpuid`],
//! [`memory`], [`layout`] (what the guest sees) → [`devices`] (what exits reach) → [`api`] (control socket)
//! → [`seccomp`] (per-thread system call filters) → [`snapshot`] and [`kvm_state`] (the saved machine state).
//! See `docs/native-vmm.md` for the user-facing description.

pub mod acpi;
pub mod api;
pub mod boot;
pub mod cli;
pub mod control;
pub mod cpuid;
pub mod devices;
pub mod jail;
pub mod kvm_state;
pub mod layout;
pub mod memory;
pub mod protocol;
pub mod resources;
pub mod seccomp;
pub mod snapshot;
pub mod vm;

/// Process exit status after a guest reset (reboot): the VMM does not restart the guest itself, the
/// management layer decides.
pub const EXIT_STATUS_RESET: i32 = protocol::exit::EXIT_STATUS_RESET as i32;
