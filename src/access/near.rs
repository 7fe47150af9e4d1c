//! [`NearDecisions`]: each thread's own copy of the decisions it served lately, in front of the
//! shared [`AccessCache`](super::AccessCache) entries.
//!
//! A shared entry's read takes a slot of a sharded lock and touches memory other cores write;
//! this thread's map is touched by no other thread. A copy is served only while two things hold:
//!
//! - the cache's *epoch* is the one read before the copy was taken. Everything that could make
//!   the shared answer differ from the copy (an invalidation, a clear, a fetch storing another
//!   answer) moves the epoch after it changed the shared entries, so a copy never outlives an
//!   answer it no longer matches: revocation stays exact.
//! - its entry is not yet due for refresh. From then on the shared path serves the request and
//!   starts the refresh, and the copy is taken again from the refreshed entry.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::per_thread::{PerThread, Slots, ThreadValue};
use crate::whop::Access;

/// Most users one thread keeps decisions for.
const NEAR_USERS: usize = 1024;

/// One thread's copies for one cache: by user, then (a few) by resource.
type ThreadMap = HashMap<Arc<str>, Vec<Copied>, foldhash::fast::RandomState>;

thread_local! {
    /// This thread's map of each live cache.
    static NEAR: Slots<ThreadMap> = const { Slots::new() };
}

impl ThreadValue for ThreadMap {
    fn slots() -> &'static std::thread::LocalKey<Slots<Self>> {
        &NEAR
    }
}

/// One copied decision.
#[derive(Debug, Clone, Copy)]
struct Copied {
    resource: u16,
    access: Access,
    /// The shared entry's refresh start: the copy is not served from then on.
    until: Instant,
    /// The cache's epoch when the copy was taken.
    epoch: u64,
}

/// The per-thread level of one cache, and the epoch that keeps it exact.
#[derive(Debug)]
pub(super) struct NearDecisions {
    maps: PerThread<ThreadMap>,
    epoch: AtomicU64,
}

impl NearDecisions {
    pub(super) fn new() -> Self {
        Self { maps: PerThread::new(), epoch: AtomicU64::new(0) }
    }

    /// Read before the shared entry a copy is taken from: a change made meanwhile moves it, and
    /// the copy is then never served.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Called after the shared entries changed in a way a copy could contradict.
    pub(super) fn changed(&self) {
        self.epoch.fetch_add(1, Ordering::Release);
    }

    /// This thread's copy of (user, resource), if it may be served at `now`.
    #[inline]
    pub(super) fn get(&self, user: &str, resource: u16, now: Instant) -> Option<Access> {
        let epoch = self.epoch();
        self.maps.get(|users| {
            let copy = users.get(user)?.iter().find(|c| c.resource == resource)?;
            (copy.epoch == epoch && now < copy.until).then_some(copy.access)
        })
    }

    /// Keeps a copy of what the shared entry says, `epoch` being [`NearDecisions::epoch`] read
    /// before that entry was.
    pub(super) fn put(&self, user: &Arc<str>, resource: u16, access: Access, until: Instant, epoch: u64) {
        self.maps.get_or_make(ThreadMap::default, |users| {
            let copy = Copied { resource, access, until, epoch };
            if let Some(copies) = users.get_mut(&**user) {
                match copies.iter_mut().find(|c| c.resource == resource) {
                    Some(old) => *old = copy,
                    None => copies.push(copy),
                }
                return;
            }
            if users.len() >= NEAR_USERS {
                // Full: start over; the shared level refills what is used.
                users.clear();
            }
            // This thread's own `Arc` of the id, so its reference count is no other core's line.
            users.insert(Arc::from(&**user), vec![copy]);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_copy_is_served_until_its_refresh_start() {
        let near = NearDecisions::new();
        let user: Arc<str> = Arc::from("user_a");
        let now = Instant::now();
        near.put(&user, 0, Access::Customer, now + Duration::from_secs(10), near.epoch());
        assert_eq!(near.get("user_a", 0, now), Some(Access::Customer));
        assert_eq!(near.get("user_a", 1, now), None, "another resource");
        assert_eq!(near.get("user_b", 0, now), None, "another user");
        assert_eq!(near.get("user_a", 0, now + Duration::from_secs(10)), None, "due for refresh");
    }

    #[test]
    fn a_change_after_the_epoch_was_read_voids_the_copy() {
        let near = NearDecisions::new();
        let user: Arc<str> = Arc::from("user_a");
        let now = Instant::now();
        let until = now + Duration::from_secs(10);
        let epoch = near.epoch();
        near.changed();
        near.put(&user, 0, Access::Customer, until, epoch);
        assert_eq!(near.get("user_a", 0, now), None, "taken before the change");
        near.put(&user, 0, Access::NoAccess, until, near.epoch());
        assert_eq!(near.get("user_a", 0, now), Some(Access::NoAccess), "replaced in place");
        near.changed();
        assert_eq!(near.get("user_a", 0, now), None);
    }

    #[test]
    fn other_threads_and_other_caches_keep_their_own() {
        let (one, two) = (NearDecisions::new(), NearDecisions::new());
        let user: Arc<str> = Arc::from("user_a");
        let until = Instant::now() + Duration::from_secs(10);
        one.put(&user, 0, Access::Admin, until, one.epoch());
        two.put(&user, 1, Access::Customer, until, two.epoch());
        assert_eq!(two.get("user_a", 0, Instant::now()), None);
        std::thread::scope(|s| {
            s.spawn(|| assert_eq!(one.get("user_a", 0, Instant::now()), None));
        });
        assert_eq!(one.get("user_a", 0, Instant::now()), Some(Access::Admin));
        drop(one);
        assert_eq!(PerThread::<ThreadMap>::values_here(), 1, "a dropped cache's map goes with it on its thread");
    }

    #[test]
    fn a_full_map_starts_over() {
        let near = NearDecisions::new();
        let until = Instant::now() + Duration::from_secs(10);
        for i in 0..=NEAR_USERS {
            near.put(&Arc::from(format!("user_{i}")), 0, Access::Customer, until, near.epoch());
        }
        assert_eq!(near.get("user_0", 0, Instant::now()), None);
        assert_eq!(near.get(&format!("user_{NEAR_USERS}"), 0, Instant::now()), Some(Access::Customer));
    }
}
