//! [`AccessCache`]: (user, resource) → what Whop says, cached with refresh-ahead, coalescing and
//! stale-if-error.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use moka::Equivalent;
use moka::ops::compute::Op;
use prometheus::IntGauge;
use tokio::sync::watch;

use crate::metrics::{CacheCounters, Metrics};
use crate::whop::{Access, WhopClient, WhopError};

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
pub struct Decision {
    /// What the user holds on the resource.
    pub access: Access,
    /// Served stale, under `stale_if_error`.
    pub stale: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct DecisionKey {
    user: Arc<str>,
    resource: Arc<str>,
}

impl Hash for DecisionKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        KeyRef { user: &self.user, resource: &self.resource }.hash(state);
    }
}

/// A borrowed key, so a lookup costs no allocation and touches no shared reference count.
struct KeyRef<'a> {
    user: &'a str,
    resource: &'a str,
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.user.hash(state);
        self.resource.hash(state);
    }
}

impl Equivalent<DecisionKey> for KeyRef<'_> {
    fn equivalent(&self, key: &DecisionKey) -> bool {
        *key.user == *self.user && *key.resource == *self.resource
    }
}

/// One cached answer and its timeline.
#[derive(Debug, Clone, Copy)]
struct Entry {
    access: Access,
    /// Served as fresh until then.
    fresh_until: Instant,
    /// From then on, a request that uses it starts a background refresh.
    refresh_from: Instant,
    /// Kept (for stale-if-error) until then.
    stale_until: Instant,
}

/// moka evicts an entry once it can no longer be served even stale.
struct UntilStale;

impl moka::Expiry<DecisionKey, Entry> for UntilStale {
    fn expire_after_create(&self, _key: &DecisionKey, value: &Entry, created_at: Instant) -> Option<Duration> {
        Some(value.stale_until.saturating_duration_since(created_at))
    }

    fn expire_after_update(
        &self,
        _key: &DecisionKey,
        value: &Entry,
        updated_at: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.stale_until.saturating_duration_since(updated_at))
    }
}

type Pending = watch::Receiver<Option<Result<Access, WhopError>>>;

/// Whop access decisions, cached. See the [module docs](crate::access).
pub struct AccessCache {
    entries: moka::sync::Cache<DecisionKey, Entry>,
    inflight: Mutex<HashMap<DecisionKey, Pending>>,
    /// Bumped by every invalidation: a fetch that overlapped one does not cache its answer.
    epoch: AtomicU64,
    resources: Vec<Arc<str>>,
    client: Arc<WhopClient>,
    settings: CacheSettings,
    runtime: tokio::runtime::Handle,
    counters: CacheCounters,
    entries_gauge: IntGauge,
}

impl std::fmt::Debug for AccessCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessCache")
            .field("entries", &self.entries.entry_count())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl AccessCache {
    /// A cache asking `client`, spawning its fetches on `runtime`. `resources` are every resource
    /// the routes name: invalidating a user drops their entry for each of them.
    pub fn new(
        client: Arc<WhopClient>,
        settings: CacheSettings,
        resources: Vec<Arc<str>>,
        metrics: &Metrics,
        runtime: tokio::runtime::Handle,
    ) -> Arc<Self> {
        let entries = moka::sync::Cache::builder().max_capacity(settings.max_entries).expire_after(UntilStale).build();
        Arc::new(Self {
            entries,
            inflight: Mutex::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            resources,
            client,
            settings,
            runtime,
            counters: metrics.cache_counters("decision"),
            entries_gauge: metrics.cache_entries("decision"),
        })
    }

    /// The fresh cached answer, if there is one: no I/O, no allocation. Starts a background
    /// refresh when the entry nears its end.
    pub fn lookup_now(self: &Arc<Self>, user: &Arc<str>, resource: &Arc<str>) -> Option<Access> {
        let entry = self.entries.get(&KeyRef { user, resource })?;
        let now = Instant::now();
        if now >= entry.fresh_until {
            return None;
        }
        self.counters.hit.inc();
        if now >= entry.refresh_from {
            self.refresh(user, resource);
        }
        Some(entry.access)
    }

    /// The answer, from the cache or from Whop (one call however many ask at once); a stale
    /// answer while Whop fails, within `stale_if_error`.
    pub async fn lookup(self: &Arc<Self>, user: &Arc<str>, resource: &Arc<str>) -> Result<Decision, WhopError> {
        if let Some(access) = self.lookup_now(user, resource) {
            return Ok(Decision { access, stale: false });
        }
        let pending = {
            let key = DecisionKey { user: user.clone(), resource: resource.clone() };
            let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
            match inflight.get(&key) {
                Some(pending) => {
                    self.counters.coalesced.inc();
                    pending.clone()
                }
                None => {
                    self.counters.miss.inc();
                    self.start_fetch(&mut inflight, key)
                }
            }
        };
        match wait(pending).await {
            Ok(access) => Ok(Decision { access, stale: false }),
            Err(error) => {
                // Read again: an invalidation while we waited must not be undone by stale data.
                match self.entries.get(&KeyRef { user, resource }) {
                    Some(old) if Instant::now() < old.stale_until && error.is_unavailable() => {
                        self.counters.stale.inc();
                        Ok(Decision { access: old.access, stale: true })
                    }
                    _ => Err(error),
                }
            }
        }
    }

    /// Forgets every decision about `user` (their access changed), on every resource the routes
    /// name. Costs one removal per resource, never a scan. Fetches already in flight still answer
    /// their waiters but do not cache.
    pub fn invalidate_user(&self, user: &str) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        for resource in &self.resources {
            self.entries.invalidate(&KeyRef { user, resource });
        }
    }

    /// Entries held (approximate, as moka counts).
    pub fn entry_count(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }

    fn entry_for(&self, access: Access, now: Instant) -> Entry {
        let ttl = if access == Access::NoAccess { self.settings.negative_ttl } else { self.settings.ttl };
        // Refresh early enough that a call taking the whole Whop timeout still lands before
        // expiry, but never in the first half of an entry's life.
        let lead = (ttl / 4).max(self.settings.whop_timeout).min(ttl / 2);
        Entry {
            access,
            fresh_until: now + ttl,
            refresh_from: now + ttl - lead,
            stale_until: now + ttl + self.settings.stale_if_error,
        }
    }

    /// Starts a background refresh unless one is already running for this key.
    fn refresh(self: &Arc<Self>, user: &Arc<str>, resource: &Arc<str>) {
        let key = DecisionKey { user: user.clone(), resource: resource.clone() };
        let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        if !inflight.contains_key(&key) {
            self.start_fetch(&mut inflight, key);
        }
    }

    /// Asks Whop in a task of its own (it finishes even if every waiter goes away) and
    /// registers it so that others for the same key wait for it instead of asking again.
    fn start_fetch(self: &Arc<Self>, inflight: &mut HashMap<DecisionKey, Pending>, key: DecisionKey) -> Pending {
        let (tx, rx) = watch::channel(None);
        inflight.insert(key.clone(), rx.clone());
        let cache = self.clone();
        let epoch = self.epoch.load(Ordering::SeqCst);
        self.runtime.spawn(async move {
            let result = cache.client.check_access(&key.user, &key.resource).await;
            match &result {
                Ok(access) => {
                    cache.entries.insert(key.clone(), cache.entry_for(*access, Instant::now()));
                    // Checked after inserting: an invalidation either removed our entry already
                    // or bumped the epoch before we look here.
                    if cache.epoch.load(Ordering::SeqCst) != epoch {
                        cache.entries.invalidate(&key);
                    }
                }
                Err(_) => cache.postpone_refresh(&key),
            }
            cache.inflight.lock().unwrap_or_else(PoisonError::into_inner).remove(&key);
            let _ = tx.send(Some(result));
            cache.entries_gauge.set(i64::try_from(cache.entries.entry_count()).unwrap_or(i64::MAX));
        });
        rx
    }

    /// After a failed refresh, the entry (still fresh) waits a little before the next try.
    fn postpone_refresh(&self, key: &DecisionKey) {
        let retry_at = Instant::now() + REFRESH_RETRY;
        self.entries.entry(key.clone()).and_compute_with(|current| match current {
            Some(entry) if entry.value().refresh_from < retry_at && retry_at < entry.value().fresh_until => {
                Op::Put(Entry { refresh_from: retry_at, ..*entry.value() })
            }
            _ => Op::Nop,
        });
    }
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
    use crate::config::{Secret, WhopConfig};
    use crate::mock::{EndpointKind, Fault, MockState, MockWhop};

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
        AccessCache::new(client, settings(ttl), resources, &metrics, tokio::runtime::Handle::current())
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
            assert_eq!(lookup.await.unwrap().unwrap(), Decision { access: Access::Customer, stale: false });
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
        assert_eq!(cache.lookup(&alice, &product).await.unwrap(), Decision { access: Access::Customer, stale: true });
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
    }
}
