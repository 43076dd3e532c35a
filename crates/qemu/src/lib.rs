//! oxvirt-qemu (skeleton; see docs/architecture.md).
