//! Software license keys: a program presents the key Whop issued with a membership; the
//! membership's user becomes the caller, provided its status is one of `valid_statuses`.
//!
//! Lookups (`GET /api/v1/memberships/{key}`) are cached with the decision lifetimes (`cache.ttl`
//! for a known key, `cache.negative_ttl` for an unknown one), concurrent lookups of one key make
//! one call, and a user's keys can be forgotten when their access changes.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::HeaderMap;
use http::header::{self, HeaderName};

use super::{Identity, Source};
use crate::config::{LicenseKeyConfig, MembershipStatus};
use crate::metrics::{CacheCounters, Metrics};
use crate::whop::{WhopClient, WhopError};

/// Longest key accepted; anything longer is not a Whop license key and is refused unasked.
const MAX_KEY_LEN: usize = 256;

/// Why a license key does not identify anyone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LicenseKeyError {
    /// Whop knows no membership with this key (or it is not a plausible key at all).
    Unknown,
    /// The membership exists but its status is not one of `valid_statuses`.
    NotValid {
        /// The status, as Whop spelt it.
        status: String,
    },
    /// Whop could not be asked.
    Unavailable(WhopError),
}

impl fmt::Display for LicenseKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LicenseKeyError::Unknown => f.write_str("the license key is not known"),
            LicenseKeyError::NotValid { status } => write!(f, "the license key's membership is {status}"),
            LicenseKeyError::Unavailable(e) => write!(f, "the license key could not be checked: {e}"),
        }
    }
}

impl std::error::Error for LicenseKeyError {}

/// What Whop said about a key, as cached.
#[derive(Debug, Clone)]
enum KeyRecord {
    Unknown,
    Found { identity: Arc<Identity>, status: Option<MembershipStatus>, status_text: Arc<str> },
}

/// Cache entries live by what they say: a known key `ttl`, an unknown one `negative_ttl`.
struct ByRecord {
    ttl: Duration,
    negative_ttl: Duration,
}

impl moka::Expiry<Arc<str>, KeyRecord> for ByRecord {
    fn expire_after_create(&self, _key: &Arc<str>, value: &KeyRecord, _at: Instant) -> Option<Duration> {
        Some(match value {
            KeyRecord::Unknown => self.negative_ttl,
            KeyRecord::Found { .. } => self.ttl,
        })
    }
}

/// Checks license keys against Whop's memberships.
pub struct LicenseKeyVerifier {
    header: HeaderName,
    bearer: bool,
    valid_statuses: Vec<MembershipStatus>,
    client: Arc<WhopClient>,
    cache: moka::future::Cache<Arc<str>, KeyRecord>,
    keys_by_user: Mutex<HashMap<Arc<str>, Vec<Arc<str>>>>,
    counters: CacheCounters,
}

impl fmt::Debug for LicenseKeyVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LicenseKeyVerifier").field("header", &self.header).field("bearer", &self.bearer).finish()
    }
}

impl LicenseKeyVerifier {
    /// A verifier reading keys as `config` says, asking `client`, caching for `ttl` /
    /// `negative_ttl` up to `max_entries` keys.
    pub fn new(
        config: &LicenseKeyConfig,
        client: Arc<WhopClient>,
        ttl: Duration,
        negative_ttl: Duration,
        max_entries: u64,
        metrics: &Metrics,
    ) -> Arc<Self> {
        let cache = moka::future::Cache::builder()
            .max_capacity(max_entries)
            .expire_after(ByRecord { ttl, negative_ttl })
            .build();
        Arc::new(Self {
            header: config.header.clone(),
            bearer: config.bearer,
            valid_statuses: config.valid_statuses.clone(),
            client,
            cache,
            keys_by_user: Mutex::new(HashMap::new()),
            counters: metrics.cache_counters("license"),
        })
    }

    /// The key a request presents: the configured header, else `Authorization: Bearer` when
    /// `bearer = true`. A present but empty or oversized key is returned as is, to be refused;
    /// so is a key given twice (empty), since the app could read the other one.
    pub fn find_key<'a>(&self, headers: &'a HeaderMap) -> Option<&'a str> {
        let only = |name: &HeaderName| {
            let mut values = headers.get_all(name).iter();
            let first = values.next()?;
            Some(if values.next().is_some() { "" } else { first.to_str().unwrap_or("") })
        };
        if let Some(value) = only(&self.header) {
            return Some(value.trim());
        }
        if self.bearer {
            let value = only(&header::AUTHORIZATION)?;
            if value.is_empty() {
                return Some("");
            }
            let (scheme, key) = value.split_once(' ')?;
            if scheme.eq_ignore_ascii_case("bearer") {
                return Some(key.trim());
            }
        }
        None
    }

    /// The caller the key belongs to, if its membership is valid.
    pub async fn verify(&self, key: &str) -> Result<Arc<Identity>, LicenseKeyError> {
        if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(LicenseKeyError::Unknown);
        }
        let key: Arc<str> = Arc::from(key);
        let entry = self
            .cache
            .entry(key.clone())
            .or_try_insert_with(self.fetch(key.clone()))
            .await
            .map_err(|e| LicenseKeyError::Unavailable((*e).clone()))?;
        if entry.is_fresh() {
            self.counters.miss.inc()
        } else {
            self.counters.hit.inc()
        }
        match entry.into_value() {
            KeyRecord::Unknown => Err(LicenseKeyError::Unknown),
            KeyRecord::Found { identity, status, status_text } => match status {
                Some(s) if self.valid_statuses.contains(&s) => Ok(identity),
                _ => Err(LicenseKeyError::NotValid { status: status_text.to_string() }),
            },
        }
    }

    async fn fetch(&self, key: Arc<str>) -> Result<KeyRecord, WhopError> {
        let membership = match self.client.membership(&key).await {
            Ok(m) => m,
            Err(WhopError::NotFound) => return Ok(KeyRecord::Unknown),
            Err(e) => return Err(e),
        };
        let Some(identity) = membership.user_id.as_deref().and_then(|u| Identity::new(u, Source::LicenseKey)) else {
            // A membership without a usable user cannot identify anyone.
            return Ok(KeyRecord::Unknown);
        };
        let identity = Arc::new(identity);
        let mut by_user = self.keys_by_user.lock().unwrap_or_else(PoisonError::into_inner);
        let keys = by_user.entry(identity.user_id.clone()).or_default();
        if !keys.contains(&key) {
            keys.push(key);
        }
        Ok(KeyRecord::Found {
            identity,
            status: membership.status,
            status_text: Arc::from(membership.status_text.as_str()),
        })
    }

    /// Forgets every cached key of `user_id` (their membership changed).
    pub fn invalidate_user(&self, user_id: &str) {
        let keys = self.keys_by_user.lock().unwrap_or_else(PoisonError::into_inner).remove(user_id);
        for key in keys.into_iter().flatten() {
            // `invalidate` is async only to wait for the removal to be recorded; the removal
            // itself is immediate.
            futures_util::FutureExt::now_or_never(self.cache.invalidate(&key));
        }
    }

    /// Forgets every cached key: its membership may have changed while nobody could say so.
    pub fn forget_everyone(&self) {
        self.keys_by_user.lock().unwrap_or_else(PoisonError::into_inner).clear();
        self.cache.invalidate_all();
    }

    /// Keys cached (approximate).
    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Secret, WhopConfig};
    use whopgate_mock::{EndpointKind, MockState, MockWhop};

    fn verifier(mock: &MockWhop, bearer: bool) -> Arc<LicenseKeyVerifier> {
        let metrics = Metrics::new();
        let config = WhopConfig {
            api_key: Some(Secret::new(mock.api_key())),
            api_base: mock.base_url().parse().unwrap(),
            ..WhopConfig::default()
        };
        let client = Arc::new(WhopClient::new(&config, WhopClient::http_client(), Arc::new(Metrics::new())));
        let license = LicenseKeyConfig { bearer, ..LicenseKeyConfig::default() };
        LicenseKeyVerifier::new(&license, client, Duration::from_secs(60), Duration::from_secs(60), 1000, &metrics)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn valid_canceled_unknown_and_cached() {
        let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default()).unwrap();
        let v = verifier(&mock, false);
        let alice = v.verify("MOCK-ALICE-LICENSE").await.unwrap();
        assert_eq!(&*alice.user_id, "user_alice");
        assert_eq!(alice.source, Source::LicenseKey);
        assert_eq!(
            v.verify("MOCK-DAVE-LICENSE").await.unwrap_err(),
            LicenseKeyError::NotValid { status: "canceled".into() }
        );
        assert_eq!(v.verify("NO-SUCH-KEY").await.unwrap_err(), LicenseKeyError::Unknown);
        assert_eq!(v.verify("").await.unwrap_err(), LicenseKeyError::Unknown);
        let calls = mock.calls(EndpointKind::Membership);
        v.verify("MOCK-ALICE-LICENSE").await.unwrap();
        v.verify("NO-SUCH-KEY").await.unwrap_err();
        assert_eq!(mock.calls(EndpointKind::Membership), calls, "repeated keys are cached");
        v.invalidate_user("user_alice");
        v.verify("MOCK-ALICE-LICENSE").await.unwrap();
        assert_eq!(mock.calls(EndpointKind::Membership), calls + 1, "an invalidated user's key is asked again");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keys_come_from_the_header_or_bearer_when_enabled() {
        let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default()).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "Bearer KEY-1".parse().unwrap());
        assert_eq!(verifier(&mock, false).find_key(&headers), None);
        assert_eq!(verifier(&mock, true).find_key(&headers), Some("KEY-1"));
        headers.insert("x-whop-license-key", " KEY-2 ".parse().unwrap());
        assert_eq!(verifier(&mock, true).find_key(&headers), Some("KEY-2"));
        // Given twice, the gate and the app could each read another key: present, and refused.
        headers.append("x-whop-license-key", "KEY-3".parse().unwrap());
        assert_eq!(verifier(&mock, true).find_key(&headers), Some(""));
        headers.remove("x-whop-license-key");
        headers.append(header::AUTHORIZATION, "Bearer KEY-4".parse().unwrap());
        assert_eq!(verifier(&mock, true).find_key(&headers), Some(""));
    }
}
