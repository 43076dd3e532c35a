//! A change to a domain (more of [`Domains`]): its running guest, the definition it starts
//! with next, or both (virsh's `--live`, `--config`; neither is `--current`), made under the
//! domain's operation lock. One scope rule for every verb that changes a domain (disks,
//! memory, limits).

use std::sync::Arc;

use tokio::sync::OwnedMutexGuard;

use super::domains::Domains;
use super::error::{db, invalid_state, DaemonResult};
use super::guests::Vm;
use crate::store::DomainRecord;

/// Which definitions a change goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Scope {
    pub live: bool,
    pub config: bool,
}

impl Scope {
    /// As virsh: neither flag is the running guest if it runs, else the definition; a shut-off
    /// domain has no live side.
    pub(super) fn of(live: bool, config: bool, running: bool, name: &str) -> DaemonResult<Scope> {
        let scope = if live || config {
            Scope { live, config }
        } else {
            Scope {
                live: running,
                config: !running,
            }
        };
        if scope.live && !running {
            return Err(invalid_state(format!(
                "domain '{name}' is not running (--live changes a running guest; --config its definition)"
            )));
        }
        Ok(scope)
    }
}

/// A change under way: the domain, its operation lock (held until dropped) and its scope.
pub(super) struct Change {
    pub record: DomainRecord,
    pub vm: Arc<Vm>,
    pub guard: OwnedMutexGuard<()>,
    pub scope: Scope,
}

impl Domains {
    /// Takes domain `id`'s operation lock for a change with virsh's `--live`/`--config`.
    pub(super) fn begin_change(&self, id: &str, live: bool, config: bool) -> DaemonResult<Change> {
        let record = self.guests.resolve(id)?;
        let (vm, guard) = self.guests.begin(&record)?;
        // Re-read under the lock: the definition may have changed since it was resolved.
        let record = self.guests.resolve(id)?;
        let scope = Scope::of(live, config, self.is_running(&record)?, &record.name)?;
        Ok(Change {
            record,
            vm,
            guard,
            scope,
        })
    }

    pub(super) fn is_running(&self, record: &DomainRecord) -> DaemonResult<bool> {
        Ok(self.store.runtime(&record.uuid).map_err(db)?.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::Scope;

    #[test]
    fn no_flag_is_the_running_guest_or_else_the_definition() {
        let of = |live, config, running| {
            Scope::of(live, config, running, "d").map(|s| (s.live, s.config))
        };
        assert_eq!(of(false, false, true), Ok((true, false)));
        assert_eq!(of(false, false, false), Ok((false, true)));
        assert_eq!(of(true, true, true), Ok((true, true)));
        assert_eq!(of(false, true, false), Ok((false, true)));
        assert!(of(true, false, false).is_err());
    }
}
