//! oxvirt-images (skeleton; see docs/architecture.md).
