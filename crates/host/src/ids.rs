//! User ids for confined guest processes: one id per running guest, from a reserved range
//! (oxvirtd's `native_user_range` for jailed VMMs, `qemu_user_range` for QEMU), used as both
//! its uid and gid. Two guests never share one, so one compromised engine process cannot
//! signal, trace or read the memory or files of another.

use std::collections::HashSet;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};

use crate::lock;

/// A range of ids and those of it running guests hold; clones share the holdings.
#[derive(Clone, Debug)]
pub struct IdPool {
    users: RangeInclusive<u32>,
    taken: Arc<Mutex<HashSet<u32>>>,
}

impl IdPool {
    /// Guests take their ids from `users` (never 0, root's).
    pub fn new(users: RangeInclusive<u32>) -> IdPool {
        IdPool {
            users,
            taken: Arc::default(),
        }
    }

    /// The lowest free id, now taken; none when every id is.
    pub fn take(&self) -> Option<u32> {
        let mut taken = lock(&self.taken);
        let id = self
            .users
            .clone()
            .find(|id| *id != 0 && !taken.contains(id))?;
        taken.insert(id);
        Some(id)
    }

    /// Marks `id` taken (a running guest found again after a daemon restart).
    pub fn hold(&self, id: u32) {
        lock(&self.taken).insert(id);
    }

    /// Gives `id` back once its guest's process has gone.
    pub fn release(&self, id: u32) {
        lock(&self.taken).remove(&id);
    }

    /// The ids there are, for the refusal when all are taken.
    pub fn range(&self) -> &RangeInclusive<u32> {
        &self.users
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_guest_gets_its_own_id_until_it_gives_it_back() {
        let pool = IdPool::new(100..=102);
        assert_eq!(pool.take(), Some(100));
        pool.hold(101);
        assert_eq!(pool.take(), Some(102));
        assert_eq!(pool.take(), None);
        pool.release(100);
        assert_eq!(pool.take(), Some(100));
    }
}
