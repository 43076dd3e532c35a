//! A cluster guest's lock during its migration (docs/cluster.md, "Migrating a cluster guest"):
//! what services/migration.rs asks at each step, implemented by services/cluster.rs (which knows
//! etcd). A domain outside a cluster migrates without one.
//!
//! The rule both sides keep: only the lock's holder may run the guest. S holds it until its QEMU
//! completed (the guest paused there); D takes it over in one etcd transaction before it resumes
//! the guest, and gives it back (after ending its QEMU) if it cannot; S resumes after a failure
//! only once it made sure the lock is still its own.

use async_trait::async_trait;
use oxvirt_api::LockHolder;

use super::error::DaemonResult;

/// The source's side.
#[async_trait]
pub trait SourceLock: Send + Sync {
    /// The source's hold of the lock, sent in the prepare.
    fn holder(&self) -> LockHolder;
    /// Refuses a destination that is not a live member of this cluster other than this host
    /// (`host` is its answer to the prepare; none from an oxvirtd outside a cluster).
    async fn check_destination(&self, host: Option<&str>) -> DaemonResult<()>;
    /// Once the guest is paused here with its state sent: the lock's revision, which the
    /// destination takes over at; an error when the lock is no longer this host's.
    async fn offer(&self) -> DaemonResult<i64>;
    /// After a failed finish, before the guest may run here again: re-writes this host's lock,
    /// so the offer made cannot be taken any more. An error (naming the holder) when the lock is
    /// not this host's: the guest must not run here.
    async fn keep(&self) -> DaemonResult<()>;
    /// The guest runs on the destination, under its lock.
    fn handed_over(&self);
}

/// The destination's side.
#[async_trait]
pub trait DestinationLock: Send + Sync {
    /// This host's name in the cluster, answered to the prepare.
    fn host(&self) -> String;
    /// Before the guest resumes here: takes the lock over from the source, if it is still the
    /// source's at `revision`; else an error (the guest must not run here).
    async fn take(&self, revision: Option<i64>) -> DaemonResult<()>;
    /// The guest did not resume here (its QEMU is ended): the lock goes back to the source, or,
    /// when the source's lease is gone, is released (the guest stays wanted: HA restarts it).
    async fn give_back(&self);
}
