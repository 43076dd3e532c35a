//! oxvirt-testkit (skeleton; see docs/architecture.md).
