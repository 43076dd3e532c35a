//! oxvirt-virtio (skeleton; see docs/architecture.md).
