//! [`AccessCache`]: (user, resource) → what the [`AccessBackend`] says, cached with
//! refresh-ahead, coalescing and stale-if-error.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus::IntGauge;
use quick_cache::Equivalent;
use tokio::sync::watch;

use super::backend::AccessBackend;
use super::near::NearDecisions;
use super::store::{Claim, DecisionStore};

/// How often a replica waiting on another's claim looks for its answer.
const CLAIM_POLL: Duration = Duration::from_millis(20);
use crate::metrics::{CacheCounters, Metrics};
use crate::whop::{Access, WhopError};

/// How long after a failed background refresh the next one may start: a failing Whop is not
/// asked again by every request that passes.
const REFRESH_RETRY: Duration = Duration::from_secs(1);

/// The cache's timing and size (from `[cache]` and `whop.timeout`).
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// How long a granted decision is trusted.
    pub ttl: Duration,
    /// How long a refusal is trusted.
    pub negative_ttl: Duration,
    /// How long past expiry a decision may be served while Whop fails.
    pub stale_if_error: Duration,
    /// Most entries kept.
    pub max_entries: u64,
    /// Bound of one Whop call; refresh-ahead starts at least this long before expiry.
    pub whop_timeout: Duration,
}

/// A decision as served: Whop's answer, and whether it is past its time (served because Whop is
/// failing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServedAccess {
    /// What the user holds on the resource.
    pub access: Access,
    /// Served stale, under `stale_if_error`.
    pub stale: bool,
}

/// (user, resource): the user id shared with the identity that asked, the resource as its
/// index among the routes' resources. Small, so a million of them stay small.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DecisionKey {
    user: Arc<str>,
    resource: u16,
}

impl Hash for DecisionKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        KeyRef { user: &self.user, resource: self.resource }.hash(state);
    }
}

/// A borrowed key, so a lookup costs no allocation and touches no shared reference count.
struct KeyRef<'a> {
    user: &'a str,
    resource: u16,
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.user.hash(state);
        self.resource.hash(state);
    }
}

impl Equivalent<DecisionKey> for KeyRef<'_> {
    fn equivalent(&self, key: &DecisionKey) -> bool {
        key.resource == self.resource && *key.user == *self.user
    }
}

/// One cached answer. Its timeline follows from `fetched_at` and the settings; only the
/// refresh start moves (after a failed refresh).
#[derive(Debug, Clone, Copy)]
struct Entry {
    access: Access,
    fetched_at: Instant,
    /// From then on, a request that uses it starts a background refresh.
    refresh_from: Instant,
}

type Pending = watch::Receiver<Option<Result<Access, WhopError>>>;

/// A fetch under way: its answer, for others asking the same key meanwhile, and whether the
/// key was invalidated since it began (then its answer is given but not cached).
#[derive(Debug, Clone)]
struct InFlight {
    answer: Pending,
    invalidated: Arc<AtomicBool>,
}

/// Whop access decisions, cached. See the [module docs](crate::access).
pub struct AccessCache {
    /// Bounded by `max_entries` (CLOCK-PRO eviction); expired entries are not served and are
    /// evicted like any other cold entry. Reads take a per-thread slot of a sharded lock, so
    /// cores reading the same entry do not contend.
    entries: quick_cache::sync::Cache<DecisionKey, Entry>,
    /// Each thread's copies of the entries it served, in front of `entries`; every change to
    /// `entries` a copy could contradict calls [`NearDecisions::changed`] after it is made.
    near: NearDecisions,
    inflight: Mutex<HashMap<DecisionKey, InFlight>>,
    resources: Vec<Arc<str>>,
    backend: Arc<dyn AccessBackend>,
    /// Shared by replicas, under this cache; asked only by fetches.
    shared: Option<Arc<dyn DecisionStore>>,
    settings: CacheSettings,
    runtime: tokio::runtime::Handle,
    counters: CacheCounters,
    entries_gauge: IntGauge,
}

impl std::fmt::Debug for AccessCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessCache")
            .field("entries", &self.entries.len())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl AccessCache {
    #[cfg(any(test, feature = "bench-internals"))]
    /// A cache asking `backend`, spawning its fetches on `runtime`. `resources` are every
    /// resource the routes name: invalidating a user drops their entry for each of them.
    pub fn new(
        backend: Arc<dyn AccessBackend>,
        settings: CacheSettings,
        resources: Vec<Arc<str>>,
        metrics: &Metrics,
        runtime: tokio::runtime::Handle,
    ) -> Arc<Self> {
        Self::with_store(backend, None, settings, resources, metrics, runtime)
    }

    /// [`AccessCache::new`] with a shared `store` under it, asked on misses and refreshes
    /// before the backend (see [`DecisionStore`]).
    pub fn with_store(
        backend: Arc<dyn AccessBackend>,
        store: Option<Arc<dyn DecisionStore>>,
        settings: CacheSettings,
        resources: Vec<Arc<str>>,
        metrics: &Metrics,
        runtime: tokio::runtime::Handle,
    ) -> Arc<Self> {
        let entries = quick_cache::sync::Cache::new(usize::try_from(settings.max_entries).unwrap_or(usize::MAX));
        Arc::new(Self {
            entries,
            near: NearDecisions::new(),
            inflight: Mutex::new(HashMap::new()),
            resources,
            backend,
            shared: store,
            settings,
            runtime,
            counters: metrics.cache_counters("decision"),
            entries_gauge: metrics.cache_entries("decision"),
        })
    }

    /// The fresh cached answer, if there is one: no I/O, no allocation. Starts a background
    /// refresh when the entry nears its end.
    pub fn lookup_now(self: &Arc<Self>, user: &Arc<str>, resource: &Arc<str>) -> Option<Access> {
        self.lookup_at(user, resource, Instant::now())
    }

    /// [`AccessCache::lookup_now`] with the clock already read: `now` is when the request
    /// arrived, so that one request reads the clock once for all its lookups.
    pub fn lookup_at(self: &Arc<Self>, user: &Arc<str>, resource: &Arc<str>, now: Instant) -> Option<Access> {
        let index = self.resource_index(resource)?;
        if let Some(access) = self.near.get(user, index, now) {
            self.counters.hit.inc();
            return Some(access);
        }
        let epoch = self.near.epoch();
        let entry = self.entries.get(&KeyRef { user, resource: index })?;
        if now >= entry.fetched_at + self.ttl(entry.access) {
            return None;
        }
        self.counters.hit.inc();
        if now >= entry.refresh_from {
            self.refresh(user, index);
        } else {
            self.near.put(user, index, entry.access, entry.refresh_from, epoch);
        }
        Some(entry.access)
    }

    /// The answer, from the cache or from Whop (one call however many ask at once); a stale
    /// answer while Whop fails, within `stale_if_error`.
    pub async fn lookup(self: &Arc<Self>, user: &Arc<str>, resource: &Arc<str>) -> Result<ServedAccess, WhopError> {
        if let Some(access) = self.lookup_now(user, resource) {
            return Ok(ServedAccess { access, stale: false });
        }
        let Some(index) = self.resource_index(resource) else {
            // Not one of the routes' resources: asked, never cached.
            let access = self.backend.decide(user, resource).await?;
            return Ok(ServedAccess { access, stale: false });
        };
        let pending = {
            let key = DecisionKey { user: user.clone(), resource: index };
            let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
            match inflight.get(&key) {
                Some(fetch) => {
                    self.counters.coalesced.inc();
                    fetch.answer.clone()
                }
                None => {
                    self.counters.miss.inc();
                    self.start_fetch(&mut inflight, key)
                }
            }
        };
        match wait(pending).await {
            Ok(access) => Ok(ServedAccess { access, stale: false }),
            Err(error) => {
                // Read again: an invalidation while we waited must not be undone by stale data.
                match self.entries.get(&KeyRef { user, resource: index }) {
                    Some(old) if Instant::now() < self.stale_until(&old) && error.is_unavailable() => {
                        self.counters.stale.inc();
                        Ok(ServedAccess { access: old.access, stale: true })
                    }
                    _ => Err(error),
                }
            }
        }
    }

    #[cfg(feature = "bench-internals")]
    /// Stores a decision learned elsewhere (a membership mirror, a warm start), exactly as if
    /// Whop had just answered it. Ignored for a resource no route names.
    pub fn insert(&self, user: &str, resource: &str, access: Access) {
        if let Some(index) = self.resources.iter().position(|r| **r == *resource) {
            let key = DecisionKey { user: Arc::from(user), resource: index_u16(index) };
            self.entries.insert(key, self.entry_for(access, Instant::now()));
            self.near.changed();
        }
    }

    /// Forgets every decision about `user` (their access changed), on every resource the routes
    /// name. Costs one lookup and one removal per resource, never a scan. That user's fetches
    /// already in flight still answer their waiters but do not cache; other users' fetches are
    /// not touched.
    pub fn invalidate_user(&self, user: &str) {
        self.invalidate_local(user);
        if let Some(store) = self.shared.clone() {
            let user = user.to_owned();
            self.runtime.spawn(async move { store.forget_user(&user).await });
        }
    }

    /// [`AccessCache::invalidate_user`] in this process only: for an invalidation another
    /// replica already made in the shared store.
    pub fn invalidate_local(&self, user: &str) {
        {
            // Flagged first, removed second: a fetch that stores after this sees its flag.
            let inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
            let user: Arc<str> = Arc::from(user);
            for index in 0..self.resources.len() {
                if let Some(fetch) = inflight.get(&DecisionKey { user: user.clone(), resource: index_u16(index) }) {
                    fetch.invalidated.store(true, Ordering::SeqCst);
                }
            }
        }
        for index in 0..self.resources.len() {
            self.entries.remove(&KeyRef { user, resource: index_u16(index) });
        }
        self.near.changed();
    }

    /// Forgets every decision held in this process: after invalidations may have been missed
    /// (a replica cut off from the others' announcements).
    pub fn clear_local(&self) {
        self.entries.clear();
        self.near.changed();
    }

    /// Entries held (some may be past serving; they go as the cache evicts cold entries).
    pub fn entry_count(&self) -> u64 {
        u64::try_from(self.entries.len()).unwrap_or(u64::MAX)
    }

    /// The index of one of the routes' resources. The rules hand us their own `Arc`s, so a
    /// pointer comparison nearly always settles it.
    fn resource_index(&self, resource: &Arc<str>) -> Option<u16> {
        let index = self
            .resources
            .iter()
            .position(|r| Arc::ptr_eq(r, resource))
            .or_else(|| self.resources.iter().position(|r| **r == **resource))?;
        Some(index_u16(index))
    }

    fn ttl(&self, access: Access) -> Duration {
        if access == Access::NoAccess { self.settings.negative_ttl } else { self.settings.ttl }
    }

    fn stale_until(&self, entry: &Entry) -> Instant {
        entry.fetched_at + self.ttl(entry.access) + self.settings.stale_if_error
    }

    fn entry_for(&self, access: Access, now: Instant) -> Entry {
        let ttl = self.ttl(access);
        // Refresh early enough that a call taking the whole Whop timeout still lands before
        // expiry, but never in the first half of an entry's life.
        let lead = (ttl / 4).max(self.settings.whop_timeout).min(ttl / 2);
        Entry { access, fetched_at: now, refresh_from: now + ttl - lead }
    }

    /// Starts a background refresh unless one is already running for this key.
    fn refresh(self: &Arc<Self>, user: &Arc<str>, resource: u16) {
        let key = DecisionKey { user: user.clone(), resource };
        let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        if !inflight.contains_key(&key) {
            self.start_fetch(&mut inflight, key);
        }
    }

    /// Asks the backend in a task of its own (it finishes even if every waiter goes away) and
    /// registers it so that others for the same key wait for it instead of asking again.
    fn start_fetch(self: &Arc<Self>, inflight: &mut HashMap<DecisionKey, InFlight>, key: DecisionKey) -> Pending {
        let (tx, rx) = watch::channel(None);
        let invalidated = Arc::new(AtomicBool::new(false));
        inflight.insert(key.clone(), InFlight { answer: rx.clone(), invalidated: invalidated.clone() });
        let cache = self.clone();
        let resource = self.resources[usize::from(key.resource)].clone();
        self.runtime.spawn(async move {
            let result = cache.fetch(&key.user, &resource, &invalidated).await;
            match &result {
                Ok(entry) => cache.store(&key, *entry, &invalidated),
                Err(_) => cache.postpone_refresh(&key, &invalidated),
            }
            let result = result.map(|entry| entry.access);
            cache.inflight.lock().unwrap_or_else(PoisonError::into_inner).remove(&key);
            let _ = tx.send(Some(result));
            cache.entries_gauge.set(i64::try_from(cache.entries.len()).unwrap_or(i64::MAX));
        });
        rx
    }

    /// The entry one fetch makes: from the shared store when it holds a decision not yet due
    /// for refresh (aged from when its backend answered), else from the backend, whose answer
    /// the store then keeps — unless the key was `invalidated` meanwhile.
    async fn fetch(&self, user: &str, resource: &str, invalidated: &AtomicBool) -> Result<Entry, WhopError> {
        if let Some(store) = &self.shared {
            if let Some(entry) = self.stored_entry(store.as_ref(), user, resource).await {
                return Ok(entry);
            }
            // Another replica asking Whop about the same key: its answer comes through the
            // store, so wait for it a little (at most one backend call's time) before asking.
            let hold = self.settings.whop_timeout + Duration::from_millis(500);
            if store.claim(user, resource, hold).await == Claim::Theirs {
                let deadline = Instant::now() + self.settings.whop_timeout;
                while Instant::now() < deadline {
                    tokio::time::sleep(CLAIM_POLL).await;
                    if let Some(entry) = self.stored_entry(store.as_ref(), user, resource).await {
                        return Ok(entry);
                    }
                }
            }
        }
        let access = self.backend.decide(user, resource).await?;
        let entry = self.entry_for(access, Instant::now());
        if let Some(store) = &self.shared {
            store.put(user, resource, access, self.ttl(access)).await;
            // The invalidation flags this fetch before it clears the store, so either it sees
            // our put and clears it, or we see the flag here and clear it ourselves: an answer
            // from before a revocation never stays in the store for other replicas.
            if invalidated.load(Ordering::SeqCst) {
                store.forget_user(user).await;
            }
        }
        Ok(entry)
    }

    /// The store's decision about the key, as an entry aged from when its backend answered;
    /// `None` when it has none, or one already due for refresh (what a refresh is replacing).
    async fn stored_entry(&self, store: &dyn DecisionStore, user: &str, resource: &str) -> Option<Entry> {
        let stored = store.get(user, resource).await?;
        let now = Instant::now();
        let entry = self.entry_for(stored.access, now.checked_sub(stored.age)?);
        (now < entry.refresh_from).then_some(entry)
    }

    /// Stores what a fetch learned, unless its key was invalidated since it began.
    fn store(&self, key: &DecisionKey, entry: Entry, invalidated: &AtomicBool) {
        let before = self.entries.get(&KeyRef { user: &key.user, resource: key.resource }).map(|old| old.access);
        self.entries.insert(key.clone(), entry);
        // Checked after inserting: an invalidation either removes our entry after this or has
        // flagged the fetch before we look here.
        if invalidated.load(Ordering::SeqCst) {
            self.entries.remove(&KeyRef { user: &key.user, resource: key.resource });
            self.near.changed();
        } else if before != Some(entry.access) {
            // A refresh that confirms the answer leaves the copies be: they say the same.
            self.near.changed();
        }
    }

    /// After a failed refresh, the entry (still fresh) waits a little before the next try.
    fn postpone_refresh(&self, key: &DecisionKey, invalidated: &AtomicBool) {
        let retry_at = Instant::now() + REFRESH_RETRY;
        let Some(entry) = self.entries.get(&KeyRef { user: &key.user, resource: key.resource }) else { return };
        if entry.refresh_from < retry_at && retry_at < entry.fetched_at + self.ttl(entry.access) {
            self.store(key, Entry { refresh_from: retry_at, ..entry }, invalidated);
        }
    }
}

/// Route resources are few (a config's worth); more than `u16::MAX` would be a broken config,
/// and saturating keeps lookups well defined.
fn index_u16(index: usize) -> u16 {
    u16::try_from(index).unwrap_or(u16::MAX)
}

async fn wait(mut pending: Pending) -> Result<Access, WhopError> {
    let result = match pending.wait_for(Option::is_some).await {
        Ok(value) => value.clone(),
        // The fetch task vanished (runtime shutting down).
        Err(_) => None,
    };
    result.unwrap_or(Err(WhopError::Timeout))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::check_access::CheckAccess;
    use crate::config::{Secret, WhopConfig};
    use crate::whop::WhopClient;
    use whopgate_mock::{EndpointKind, Fault, MockState, MockWhop};

    fn client_for(mock: &MockWhop, metrics: &Arc<Metrics>, timeout: Duration) -> Arc<WhopClient> {
        let config = WhopConfig {
            api_key: Some(Secret::new(mock.api_key())),
            api_base: mock.base_url().parse().unwrap(),
            timeout,
            ..WhopConfig::default()
        };
        Arc::new(WhopClient::new(&config, WhopClient::http_client(), metrics.clone()))
    }

    fn settings(ttl: Duration) -> CacheSettings {
        CacheSettings {
            ttl,
            negative_ttl: ttl,
            stale_if_error: Duration::from_secs(60),
            max_entries: 10_000,
            whop_timeout: Duration::from_secs(1),
        }
    }

    fn cache(mock: &MockWhop, ttl: Duration) -> Arc<AccessCache> {
        let metrics = Arc::new(Metrics::new());
        let client = client_for(mock, &metrics, Duration::from_secs(2));
        let resources = vec![Arc::from("prod_mockproduct1"), Arc::from("prod_mockproduct2")];
        AccessCache::new(
            Arc::new(CheckAccess::new(client)),
            settings(ttl),
            resources,
            &metrics,
            tokio::runtime::Handle::current(),
        )
    }

    fn ids(user: &str, resource: &str) -> (Arc<str>, Arc<str>) {
        (Arc::from(user), Arc::from(resource))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_make_one_call() {
        let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default()).unwrap();
        mock.set_fault(EndpointKind::Access, Fault::latency(Duration::from_millis(200)));
        let cache = cache(&mock, Duration::from_secs(60));
        let (user, resource) = ids("user_alice", "prod_mockproduct1");
        let lookups = (0..200).map(|_| {
            let (cache, user, resource) = (cache.clone(), user.clone(), resource.clone());
            tokio::spawn(async move { cache.lookup(&user, &resource).await })
        });
        for lookup in lookups.collect::<Vec<_>>() {
            assert_eq!(lookup.await.unwrap().unwrap(), ServedAccess { access: Access::Customer, stale: false });
        }
        assert_eq!(mock.calls(EndpointKind::Access), 1);
        assert_eq!(cache.lookup_now(&user, &resource), Some(Access::Customer));
        assert_eq!(mock.calls(EndpointKind::Access), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refusals_and_unknowns_are_cached_as_no_access() {
        let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default()).unwrap();
        let cache = cache(&mock, Duration::from_secs(60));
        let (bob, product) = ids("user_bob", "prod_mockproduct1");
        assert_eq!(cache.lookup(&bob, &product).await.unwrap().access, Access::NoAccess);
        let (ghost, _) = ids("user_nobody", "prod_mockproduct1");
        assert_eq!(cache.lookup(&ghost, &product).await.unwrap().access, Access::NoAccess);
        cache.lookup(&bob, &product).await.unwrap();
        assert_eq!(mock.calls(EndpointKind::Access), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stale_if_error_serves_the_old_answer_and_no_entry_is_an_error() {
        let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default()).unwrap();
        let cache = cache(&mock, Duration::from_millis(200));
        let (alice, product) = ids("user_alice", "prod_mockproduct1");
        cache.lookup(&alice, &product).await.unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        mock.set_fault(EndpointKind::Access, Fault::error());
        assert_eq!(
            cache.lookup(&alice, &product).await.unwrap(),
            ServedAccess { access: Access::Customer, stale: true }
        );
        let (carol, _) = ids("user_carol", "prod_mockproduct1");
        assert!(matches!(cache.lookup(&carol, &product).await, Err(WhopError::Server { status: 500 })));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refresh_ahead_keeps_a_used_entry_fresh() {
        let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default()).unwrap();
        mock.set_fault(EndpointKind::Access, Fault::latency(Duration::from_millis(100)));
        let cache = cache(&mock, Duration::from_millis(600));
        let (alice, product) = ids("user_alice", "prod_mockproduct1");
        cache.lookup(&alice, &product).await.unwrap();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(3) {
            assert_eq!(cache.lookup_now(&alice, &product), Some(Access::Customer), "at {:?}", started.elapsed());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let calls = mock.calls(EndpointKind::Access);
        assert!((4..=10).contains(&calls), "{calls} calls in 3 s with a 600 ms ttl");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn invalidating_a_user_drops_their_entries_even_mid_fetch() {
        let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default()).unwrap();
        let cache = cache(&mock, Duration::from_secs(60));
        let (alice, p1) = ids("user_alice", "prod_mockproduct1");
        let (_, p2) = ids("user_alice", "prod_mockproduct2");
        let (carol, _) = ids("user_carol", "prod_mockproduct1");
        cache.lookup(&alice, &p1).await.unwrap();
        cache.lookup(&alice, &p2).await.unwrap();
        cache.lookup(&carol, &p1).await.unwrap();
        // Served once from the shared entries, so this thread holds its own copies too.
        assert_eq!(cache.lookup_now(&alice, &p1), Some(Access::Customer));
        assert_eq!(cache.lookup_now(&alice, &p1), Some(Access::Customer));
        cache.invalidate_user("user_alice");
        assert_eq!(cache.lookup_now(&alice, &p1), None);
        assert_eq!(cache.lookup_now(&alice, &p2), None);
        assert_eq!(cache.lookup_now(&carol, &p1), Some(Access::Admin));

        // A fetch in flight across an invalidation answers but does not cache.
        mock.set_fault(EndpointKind::Access, Fault::latency(Duration::from_millis(300)));
        let in_flight = {
            let (cache, alice, p1) = (cache.clone(), alice.clone(), p1.clone());
            tokio::spawn(async move { cache.lookup(&alice, &p1).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        cache.invalidate_user("user_alice");
        assert_eq!(in_flight.await.unwrap().unwrap().access, Access::Customer);
        assert_eq!(cache.lookup_now(&alice, &p1), None);

        // Only that user's fetches: another user's, in flight across it, is cached as usual.
        let (bob, _) = ids("user_bob", "prod_mockproduct1");
        let in_flight = {
            let (cache, bob, p1) = (cache.clone(), bob.clone(), p1.clone());
            tokio::spawn(async move { cache.lookup(&bob, &p1).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        cache.invalidate_user("user_alice");
        let answer = in_flight.await.unwrap().unwrap().access;
        assert_eq!(cache.lookup_now(&bob, &p1), Some(answer), "bob's answer was cached");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refresh_ahead_still_runs_behind_the_copies_and_its_answer_reaches_every_thread() {
        let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default()).unwrap();
        let cache = cache(&mock, Duration::from_millis(400));
        let (alice, product) = ids("user_alice", "prod_mockproduct1");
        cache.lookup(&alice, &product).await.unwrap();
        // A thread of its own that keeps its copies between lookups.
        let (ask, asked) = std::sync::mpsc::channel::<std::sync::mpsc::Sender<Option<Access>>>();
        let other = {
            let (cache, alice, product) = (cache.clone(), alice.clone(), product.clone());
            std::thread::spawn(move || {
                for reply in asked {
                    let _ = reply.send(cache.lookup_now(&alice, &product));
                }
            })
        };
        let on_another_thread = || {
            let (reply, answer) = std::sync::mpsc::channel();
            ask.send(reply).unwrap();
            answer.recv().unwrap()
        };
        // Copies on this thread and on another, taken before the answer changes.
        assert_eq!(cache.lookup_now(&alice, &product), Some(Access::Customer));
        assert_eq!(cache.lookup_now(&alice, &product), Some(Access::Customer));
        assert_eq!(on_another_thread(), Some(Access::Customer));
        assert_eq!(on_another_thread(), Some(Access::Customer));
        mock.set_access("user_alice", "prod_mockproduct1", whopgate_mock::AccessLevel::NoAccess).unwrap();
        // Kept in use, the entry is refreshed ahead of its expiry; the refreshed answer must be
        // what every lookup gives from then on, copies or not.
        let started = Instant::now();
        let mut changed = None;
        while started.elapsed() < Duration::from_secs(2) {
            if cache.lookup_now(&alice, &product) == Some(Access::NoAccess) {
                changed = Some(started.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(changed.is_some(), "the refresh never showed");
        assert_eq!(cache.lookup_now(&alice, &product), Some(Access::NoAccess));
        assert_eq!(on_another_thread(), Some(Access::NoAccess));
        drop(ask);
        other.join().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_answer_fetched_after_an_eviction_voids_every_copy() {
        let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default()).unwrap();
        let cache = cache(&mock, Duration::from_secs(60));
        let (alice, product) = ids("user_alice", "prod_mockproduct1");
        cache.lookup(&alice, &product).await.unwrap();
        assert_eq!(cache.lookup_now(&alice, &product), Some(Access::Customer), "this thread's copy");
        mock.set_access("user_alice", "prod_mockproduct1", whopgate_mock::AccessLevel::NoAccess).unwrap();
        // Her shared entry goes as an eviction takes it (which tells the copies nothing) while
        // her copy here is still fresh.
        assert!(cache.entries.remove(&KeyRef { user: &alice, resource: 0 }).is_some());
        // Another thread misses, asks Whop, and stores the new answer.
        let fetched = {
            let (cache, alice, product) = (cache.clone(), alice.clone(), product.clone());
            tokio::spawn(async move { cache.lookup(&alice, &product).await.unwrap().access }).await.unwrap()
        };
        assert_eq!(fetched, Access::NoAccess);
        assert_eq!(cache.lookup_now(&alice, &product), Some(Access::NoAccess), "the copy here was voided");
    }

    /// A backend of the test's own: the cache's semantics do not depend on where answers come
    /// from.
    #[derive(Debug, Default)]
    struct Counting {
        calls: std::sync::atomic::AtomicUsize,
    }

    impl AccessBackend for Counting {
        fn decide<'a>(&'a self, user: &'a str, _resource: &'a str) -> crate::access::backend::Decided<'a> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let access = if user == "user_in" { Access::Customer } else { Access::NoAccess };
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(access)
            })
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn any_backend_gets_the_same_cache() {
        let backend = Arc::new(Counting::default());
        let metrics = Metrics::new();
        let resources = vec![Arc::from("prod_x")];
        let cache = AccessCache::new(
            backend.clone(),
            settings(Duration::from_secs(60)),
            resources.clone(),
            &metrics,
            tokio::runtime::Handle::current(),
        );
        let user: Arc<str> = Arc::from("user_in");
        let lookups: Vec<_> = (0..20)
            .map(|_| {
                let (cache, user, resource) = (cache.clone(), user.clone(), resources[0].clone());
                tokio::spawn(async move { cache.lookup(&user, &resource).await })
            })
            .collect();
        for lookup in lookups {
            assert_eq!(lookup.await.unwrap().unwrap().access, Access::Customer);
        }
        assert_eq!(backend.calls.load(Ordering::SeqCst), 1, "20 concurrent misses, one backend call");
        assert_eq!(cache.lookup_now(&user, &resources[0]), Some(Access::Customer));
        let out: Arc<str> = Arc::from("user_out");
        assert_eq!(cache.lookup(&out, &resources[0]).await.unwrap().access, Access::NoAccess);
        assert_eq!(cache.lookup_now(&out, &resources[0]), Some(Access::NoAccess), "refusals are cached too");
        assert_eq!(backend.calls.load(Ordering::SeqCst), 2);
    }

    /// A shared store of the test's own, counting what the cache asks of it.
    #[derive(Debug, Default)]
    struct Memory {
        held: Mutex<HashMap<(String, String), (Access, Instant)>>,
        gets: std::sync::atomic::AtomicUsize,
        forgotten: Mutex<Vec<String>>,
    }

    impl crate::access::DecisionStore for Memory {
        fn get<'a>(&'a self, user: &'a str, resource: &'a str) -> crate::access::store::Found<'a> {
            self.gets.fetch_add(1, Ordering::SeqCst);
            let held = self.held.lock().unwrap().get(&(user.to_owned(), resource.to_owned())).copied();
            Box::pin(async move { held.map(|(access, at)| crate::access::store::Stored { access, age: at.elapsed() }) })
        }
        fn put<'a>(
            &'a self,
            user: &'a str,
            resource: &'a str,
            access: Access,
            _ttl: Duration,
        ) -> crate::access::store::Written<'a> {
            self.held.lock().unwrap().insert((user.to_owned(), resource.to_owned()), (access, Instant::now()));
            Box::pin(async {})
        }
        fn forget_user<'a>(&'a self, user: &'a str) -> crate::access::store::Written<'a> {
            self.forgotten.lock().unwrap().push(user.to_owned());
            Box::pin(async {})
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_shared_store_is_asked_on_misses_only_and_its_decisions_keep_their_age() {
        let backend = Arc::new(Counting::default());
        let store = Arc::new(Memory::default());
        let metrics = Metrics::new();
        let resources: Vec<Arc<str>> = vec![Arc::from("prod_x")];
        let ttl = Duration::from_secs(10);
        let cache = AccessCache::with_store(
            backend.clone(),
            Some(store.clone()),
            settings(ttl),
            resources.clone(),
            &metrics,
            tokio::runtime::Handle::current(),
        );
        // Another replica decided 4 s ago: served without asking the backend, and trusted only
        // until 10 s after that replica's answer.
        let four_seconds_ago = Instant::now() - Duration::from_secs(4);
        store.held.lock().unwrap().insert(("user_other".into(), "prod_x".into()), (Access::Customer, four_seconds_ago));
        let other: Arc<str> = Arc::from("user_other");
        assert_eq!(cache.lookup(&other, &resources[0]).await.unwrap().access, Access::Customer);
        assert_eq!(backend.calls.load(Ordering::SeqCst), 0, "the store answered");
        let now = Instant::now();
        assert!(cache.lookup_at(&other, &resources[0], now + Duration::from_secs(5)).is_some());
        assert_eq!(
            cache.lookup_at(&other, &resources[0], now + Duration::from_millis(6100)),
            None,
            "aged from its fetch"
        );

        // A miss the store cannot answer asks the backend, and the store keeps the answer.
        let user: Arc<str> = Arc::from("user_in");
        assert_eq!(cache.lookup(&user, &resources[0]).await.unwrap().access, Access::Customer);
        assert_eq!(backend.calls.load(Ordering::SeqCst), 1);
        assert!(store.held.lock().unwrap().contains_key(&("user_in".to_owned(), "prod_x".to_owned())));

        // The warm path never touches the store.
        let gets = store.gets.load(Ordering::SeqCst);
        for _ in 0..100 {
            assert_eq!(cache.lookup(&user, &resources[0]).await.unwrap().access, Access::Customer);
        }
        assert_eq!(store.gets.load(Ordering::SeqCst), gets);

        // A decision due for refresh in the store is what a refresh replaces: the backend is asked.
        let nine_seconds_ago = Instant::now() - Duration::from_secs(9);
        store.held.lock().unwrap().insert(("user_late".into(), "prod_x".into()), (Access::NoAccess, nine_seconds_ago));
        let late: Arc<str> = Arc::from("user_late");
        assert_eq!(cache.lookup(&late, &resources[0]).await.unwrap().access, Access::NoAccess);
        assert_eq!(backend.calls.load(Ordering::SeqCst), 2);

        // Invalidation reaches the store, for every replica.
        cache.invalidate_user("user_in");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(*store.forgotten.lock().unwrap(), ["user_in"]);
    }
}
