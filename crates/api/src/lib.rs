//! oxvirt-api (skeleton; see docs/architecture.md).
