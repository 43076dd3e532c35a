//! Which user each jailed VMM runs as: one id per running guest, from a reserved range
//! (oxvirtd's `native_user_range`), used as both its uid and gid. The pool of ids is the
//! host crate's, shared with the QEMU engine's users (`qemu_user_range`).

/// The jail settings of a supervisor: the ids its running guests hold.
pub type Sandbox = oxvirt_host::ids::IdPool;
