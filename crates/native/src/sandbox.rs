//! Which user each jailed VMM runs as: one id per running guest, from a reserved range
//! (oxvirtd's `native_user_range`), used as both its uid and gid. Two guests never share one,
//! so one compromised VMM cannot signal, trace or read the memory of another.

use std::collections::HashSet;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};

use oxvirt_host::lock;

/// The jail settings of a supervisor, and the ids its running guests hold.
#[derive(Clone, Debug)]
pub struct Sandbox {
    users: RangeInclusive<u32>,
    taken: Arc<Mutex<HashSet<u32>>>,
}

impl Sandbox {
    /// Jailed VMMs take their ids from `users` (none of them 0).
    pub fn new(users: RangeInclusive<u32>) -> Sandbox {
        Sandbox {
            users,
            taken: Arc::default(),
        }
    }

    /// The lowest free id, now taken; none when every id is.
    pub(crate) fn take(&self) -> Option<u32> {
        let mut taken = lock(&self.taken);
        let id = self
            .users
            .clone()
            .find(|id| *id != 0 && !taken.contains(id))?;
        taken.insert(id);
        Some(id)
    }

    /// Marks `id` taken (a running VMM found again after a daemon restart).
    pub(crate) fn hold(&self, id: u32) {
        lock(&self.taken).insert(id);
    }

    /// Gives `id` back once its VMM has gone.
    pub(crate) fn release(&self, id: u32) {
        lock(&self.taken).remove(&id);
    }

    /// How many ids there are, for the refusal when all are taken.
    pub(crate) fn range(&self) -> &RangeInclusive<u32> {
        &self.users
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_guest_gets_its_own_id_until_it_gives_it_back() {
        let sandbox = Sandbox::new(100..=102);
        assert_eq!(sandbox.take(), Some(100));
        sandbox.hold(101);
        assert_eq!(sandbox.take(), Some(102));
        assert_eq!(sandbox.take(), None);
        sandbox.release(100);
        assert_eq!(sandbox.take(), Some(100));
    }
}
