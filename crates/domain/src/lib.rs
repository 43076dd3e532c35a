//! oxvirt-domain (skeleton; see docs/architecture.md).
