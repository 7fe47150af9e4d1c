//! Verified user tokens, remembered until they expire ([`TokenCache`]).
//!
//! Two levels. The shared level is a moka cache keyed by the token, bounded by
//! `max_cached_tokens`, each entry expiring at its own `exp + leeway`: it holds the count, the
//! bound and the metrics. In front of it each thread keeps a small map of the tokens it has seen
//! ([`NEAR_CAPACITY`] at most): a moka read records itself in a buffer every thread writes to,
//! which costs several hundred nanoseconds once two threads read at the same time, whereas the
//! thread's own map is touched by no other thread. A repeated token therefore costs one hash
//! lookup in memory no other thread writes, a clock read, an `Arc` clone and a counter add, all
//! of it memory this thread alone writes: the near map holds the thread's own copy of the
//! identity, and the counter is per core.
//!
//! Tokens never change, so the near maps need no invalidation: they obey the same expiry
//! instant as the shared entry.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::sync::Cache;
use prometheus::IntGauge;

use crate::identity::Identity;
use crate::metrics::{Counter, Metrics};
use crate::per_thread::{PerThread, Slots, ThreadValue};

/// Most tokens one thread keeps in front of the shared cache.
pub(super) const NEAR_CAPACITY: usize = 1024;
/// How many trailing bytes of a token its hash covers (see [`TokenHashBuilder`]).
const HASHED_TAIL: usize = 32;
/// The `cache` label of the token cache metrics.
const METRIC_CACHE: &str = "token";

/// One thread's map for one cache.
type NearMap = HashMap<Arc<[u8]>, Remembered, TokenHashBuilder>;

thread_local! {
    /// This thread's near map of each live cache.
    static NEAR: Slots<NearMap> = const { Slots::new() };
}

impl ThreadValue for NearMap {
    fn slots() -> &'static std::thread::LocalKey<Slots<Self>> {
        &NEAR
    }
}

/// A remembered token.
#[derive(Clone)]
struct Remembered {
    /// The key again, so that a shared hit can fill a near map without allocating.
    token: Arc<[u8]>,
    identity: Arc<Identity>,
    /// `exp + leeway` (capped by the caller).
    until: Instant,
}

/// Each shared entry lives until its own token's expiry.
struct UntilExpiry;

impl Expiry<Arc<[u8]>, Remembered> for UntilExpiry {
    fn expire_after_create(&self, _token: &Arc<[u8]>, entry: &Remembered, created_at: Instant) -> Option<Duration> {
        Some(entry.until.saturating_duration_since(created_at))
    }
}

/// Hashes a token by its length and its last [`HASHED_TAIL`] bytes, with randomly seeded
/// foldhash.
///
/// The tail of a JWT is its signature, unpredictable for every token Whop signs, so hashing it
/// alone spreads real tokens as well as hashing all of them would, in the same time whatever the
/// token's length. Only verified tokens are inserted, so a caller cannot fill a table with
/// colliding keys; the random seed keeps even lookups unpredictable.
#[derive(Clone, Default)]
pub(super) struct TokenHashBuilder(foldhash::fast::RandomState);

impl BuildHasher for TokenHashBuilder {
    type Hasher = TokenHasher;

    fn build_hasher(&self) -> TokenHasher {
        TokenHasher(self.0.build_hasher())
    }
}

/// See [`TokenHashBuilder`].
pub(super) struct TokenHasher(foldhash::fast::FoldHasher<'static>);

impl Hasher for TokenHasher {
    fn write(&mut self, bytes: &[u8]) {
        let tail = bytes.get(bytes.len().saturating_sub(HASHED_TAIL)..).unwrap_or(bytes);
        self.0.write(tail);
        self.0.write_usize(bytes.len());
    }

    fn finish(&self) -> u64 {
        self.0.finish()
    }
}

/// Verified tokens and the identities they carry, until each expires.
pub(super) struct TokenCache {
    shared: Cache<Arc<[u8]>, Remembered, TokenHashBuilder>,
    near: PerThread<NearMap>,
    // Resolved once: looking a label set up per request would take the metric family's lock.
    hits: Arc<Counter>,
    misses: Arc<Counter>,
    /// `whopgate_cache_entries{cache="token"}`: the shared entries.
    entries: IntGauge,
}

impl TokenCache {
    /// Up to `capacity` shared entries; counts in `metrics` under `cache="token"`.
    pub(super) fn new(capacity: u64, metrics: &Metrics) -> Self {
        let entries = metrics.cache_entries(METRIC_CACHE);
        let removed = entries.clone();
        let shared = Cache::builder()
            .max_capacity(capacity)
            .expire_after(UntilExpiry)
            // Every insert adds one and every removal (expired, evicted, replaced, refused on
            // admission) takes one, so the gauge follows the cache without counting it.
            .eviction_listener(move |_, _, _| removed.dec())
            .build_with_hasher(TokenHashBuilder::default());
        TokenCache {
            shared,
            near: PerThread::new(),
            hits: metrics.cache_requests.with_label_values(&[METRIC_CACHE, "hit"]),
            misses: metrics.cache_requests.with_label_values(&[METRIC_CACHE, "miss"]),
            entries,
        }
    }

    /// The identity of a token remembered and unexpired at `now`; counts a hit or a miss.
    pub(super) fn get(&self, token: &[u8], now: Instant) -> Option<Arc<Identity>> {
        if let Some(identity) = self.near_get(token, now) {
            self.hits.inc();
            return Some(identity);
        }
        match self.shared.get(token) {
            Some(entry) => {
                self.hits.inc();
                self.near_put(&entry);
                Some(entry.identity)
            }
            None => {
                self.misses.inc();
                None
            }
        }
    }

    /// Remembers a verified token until `until`.
    pub(super) fn insert(&self, token: &str, identity: Arc<Identity>, until: Instant) {
        let entry = Remembered { token: Arc::from(token.as_bytes()), identity, until };
        self.near_put(&entry);
        self.shared.insert(entry.token.clone(), entry);
        self.entries.inc();
    }

    /// Shared entries, after applying pending expirations.
    pub(super) fn len(&self) -> u64 {
        self.shared.run_pending_tasks();
        self.shared.entry_count()
    }

    /// Applies pending expirations (and so the gauge) when no traffic does.
    pub(super) fn sweep(&self) {
        self.shared.run_pending_tasks();
    }

    /// Entries in this thread's near map.
    #[cfg(test)]
    pub(super) fn near_len(&self) -> usize {
        self.near.get(|map| Some(map.len())).unwrap_or(0)
    }

    fn near_get(&self, token: &[u8], now: Instant) -> Option<Arc<Identity>> {
        self.near.get(|map| {
            let entry = map.get(token)?;
            if entry.until > now {
                return Some(entry.identity.clone());
            }
            map.remove(token);
            None
        })
    }

    fn near_put(&self, entry: &Remembered) {
        self.near.get_or_make(NearMap::default, |map| {
            if map.len() >= NEAR_CAPACITY {
                let now = Instant::now();
                map.retain(|_, e| e.until > now);
                // Still full of live tokens: start over; the shared level refills what is used.
                if map.len() >= NEAR_CAPACITY {
                    map.clear();
                }
            }
            // This thread's own copy of the identity: see `Identity::unshared`.
            let local = Remembered {
                token: entry.token.clone(),
                identity: Arc::new(entry.identity.unshared()),
                until: entry.until,
            };
            map.insert(entry.token.clone(), local);
        });
    }
}

impl Drop for TokenCache {
    fn drop(&mut self) {
        // The cache does not report the entries it drops with itself; take them off the gauge so
        // that a cache replacing this one (a reload) starts from a true count.
        self.shared.run_pending_tasks();
        self.entries.sub(i64::try_from(self.shared.entry_count()).unwrap_or(i64::MAX));
        // The near maps go with `near`.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Source;

    fn identity(user: &str) -> Arc<Identity> {
        Arc::new(Identity::new(user, Source::UserToken).unwrap())
    }

    fn later(secs: u64) -> Instant {
        Instant::now() + Duration::from_secs(secs)
    }

    fn counts(metrics: &Metrics) -> (u64, u64) {
        let get = |result| metrics.cache_requests.with_label_values(&["token", result]).get();
        (get("hit"), get("miss"))
    }

    #[test]
    fn the_hash_covers_length_and_tail_only() {
        let h = TokenHashBuilder::default();
        let base = format!("{}.{}", "a".repeat(100), "s".repeat(40));
        let head_changed = format!("b{}", &base[1..]);
        let tail_changed = format!("{}t", &base[..base.len() - 1]);
        assert_eq!(h.hash_one(base.as_str()), h.hash_one(head_changed.as_str()));
        assert_ne!(h.hash_one(base.as_str()), h.hash_one(tail_changed.as_str()));
        assert_ne!(h.hash_one(base.as_str()), h.hash_one(&base[1..]));
        assert_ne!(h.hash_one("short"), h.hash_one("shorT"));
        // Keyed: another builder hashes the same token differently.
        assert_ne!(h.hash_one(base.as_str()), TokenHashBuilder::default().hash_one(base.as_str()));
    }

    #[test]
    fn a_token_is_found_on_every_thread_until_it_expires() {
        let metrics = Metrics::new();
        let cache = Arc::new(TokenCache::new(100, &metrics));
        cache.insert("a.b.c", identity("user_a"), later(60));
        assert!(cache.get(b"a.b.c", Instant::now()).is_some());
        assert_eq!(cache.near_len(), 1);
        assert_eq!(counts(&metrics), (1, 0));

        // Another thread finds it in the shared level, then in its own map.
        let other = cache.clone();
        std::thread::spawn(move || {
            assert_eq!(other.near_len(), 0);
            assert_eq!(other.get(b"a.b.c", Instant::now()).map(|i| i.user_id.to_string()).as_deref(), Some("user_a"));
            assert_eq!(other.near_len(), 1);
            assert!(other.get(b"a.b.c", Instant::now()).is_some());
        })
        .join()
        .unwrap();
        assert_eq!(counts(&metrics), (3, 0));
        assert!(cache.get(b"x.y.z", Instant::now()).is_none());
        assert_eq!(counts(&metrics), (3, 1));

        cache.insert("d.e.f", identity("user_d"), Instant::now() + Duration::from_millis(50));
        assert!(cache.get(b"d.e.f", Instant::now()).is_some());
        std::thread::sleep(Duration::from_millis(80));
        assert!(cache.get(b"d.e.f", Instant::now()).is_none(), "expired in both levels");
        assert_eq!(cache.near_len(), 1, "the expired near entry went at the lookup");
        // The shared level counts it until its timer wheel (about 1 s per tick) gets there.
        let deadline = Instant::now() + Duration::from_secs(5);
        while cache.len() > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(cache.len(), 1);
        assert_eq!(metrics.cache_entries("token").get(), 1);
    }

    #[test]
    fn the_near_map_is_bounded_and_goes_with_its_cache() {
        let metrics = Metrics::new();
        let cache = TokenCache::new(10_000, &metrics);
        for i in 0..NEAR_CAPACITY + 10 {
            cache.insert(&format!("token-{i}"), identity("user_a"), later(60));
            assert!(cache.near_len() <= NEAR_CAPACITY);
        }
        assert!(cache.get(format!("token-{}", NEAR_CAPACITY + 9).as_bytes(), Instant::now()).is_some());
        // What the near map let go is still in the shared level.
        assert!(cache.get(b"token-0", Instant::now()).is_some());
        assert_eq!(cache.len(), (NEAR_CAPACITY + 10) as u64);

        let second = TokenCache::new(10, &metrics);
        second.insert("s", identity("user_s"), later(60));
        assert_eq!(PerThread::<NearMap>::values_here(), 2);
        drop(cache);
        assert_eq!(PerThread::<NearMap>::values_here(), 1);
        assert_eq!(metrics.cache_entries("token").get(), 1);
    }
}
