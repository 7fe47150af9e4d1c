//! The keys that verify Whop user tokens ([`KeySet`]): Whop's JWKS, fetched and refetched, plus
//! Whop's long-published static key and the configured `public_keys` (SPEC §1, §4).
//!
//! The JWKS is fetched in the background at start and kept for [`REFRESH_INTERVAL`]; a token
//! naming an unknown `kid` may trigger a refetch at once, and such refetches are at most one per
//! [`MIN_REFETCH_INTERVAL`] however many unknown kids arrive. Everyone who needs a refetch while
//! one is under way waits for that one (one request to Whop, not one per caller). A failed fetch
//! keeps the keys it had; the static keys are always there.
//!
//! Only P-256 keys are ever held and only ES256 is ever verified, so no token can choose its own
//! algorithm (no `none`, no HS256 "signed" with a public key).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, ParsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::Uri;
use serde_json::Value;
use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// `x` of Whop's long-published static user-token key (P-256, base64url), SPEC §1.
pub const WHOP_STATIC_KEY_X: &str = "rz8a8vxvexHC0TLT91g7llOdDOsNuYiGEfic4Qhni-E";
/// `y` of Whop's long-published static user-token key (P-256, base64url), SPEC §1.
pub const WHOP_STATIC_KEY_Y: &str = "zH0QblKYToexd5PEIMGXPVJS9AB5smKrW4S_TbiXrOs";

/// How long a fetched JWKS is kept before it is refreshed in the background.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(12 * 60 * 60);
/// Least time between two refetches caused by unknown `kid`s.
pub const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// Longest a JWKS fetch may take, body included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// When a scheduled fetch failed, how soon the next one is tried.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(60);

/// A JWKS is a few hundred bytes; anything much larger is not one.
const MAX_JWKS_BYTES: usize = 256 * 1024;
/// The `endpoint` label of JWKS calls in the Whop API metrics.
const METRIC_ENDPOINT: &str = "jwks";
/// Bytes of an attacker-chosen `kid` worth putting in a log line.
const MAX_LOGGED_KID: usize = 64;

/// The timings of a [`KeySet`]; the defaults are the constants of this module. Tests shorten
/// them instead of sleeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySetOptions {
    /// How long a fetched JWKS is kept ([`REFRESH_INTERVAL`]).
    pub refresh_interval: Duration,
    /// Least time between two unknown-`kid` refetches ([`MIN_REFETCH_INTERVAL`]).
    pub min_refetch_interval: Duration,
    /// Bound on one fetch, body included ([`FETCH_TIMEOUT`]).
    pub fetch_timeout: Duration,
    /// Delay before retrying a failed scheduled fetch ([`RETRY_AFTER_FAILURE`]).
    pub retry_after_failure: Duration,
}

impl Default for KeySetOptions {
    fn default() -> Self {
        KeySetOptions {
            refresh_interval: REFRESH_INTERVAL,
            min_refetch_interval: MIN_REFETCH_INTERVAL,
            fetch_timeout: FETCH_TIMEOUT,
            retry_after_failure: RETRY_AFTER_FAILURE,
        }
    }
}

/// A `public_keys` entry that is not a P-256 public key in PEM. Names the entry by its index and
/// never echoes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidPublicKey {
    /// Index of the entry in `identity.user_token.public_keys`.
    pub index: usize,
}

impl fmt::Display for InvalidPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "identity.user_token.public_keys[{}] is not a P-256 (ES256) public key in PEM form \
             (\"-----BEGIN PUBLIC KEY-----\")",
            self.index
        )
    }
}

impl std::error::Error for InvalidPublicKey {}

/// How many JWKS fetches had finished when a key lookup was made; handed back to
/// [`KeySet::refetch`] so that a fetch finished since then counts as the refetch asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Generation(u64);

/// The outcome of [`KeySet::check_signature`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureCheck {
    /// A key the set trusts made the signature.
    Valid,
    /// The signature is not one of the keys that could have made it.
    BadSignature,
    /// The token names a `kid` the set does not hold and no static key verifies it.
    /// `refetch` is `Some` when a JWKS refetch could help (a JWKS URL is configured).
    UnknownKid {
        /// Pass to [`KeySet::refetch`].
        refetch: Option<Generation>,
    },
}

/// Where a key came from, for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    Jwks(Option<Box<str>>),
    BuiltIn,
    Configured(usize),
}

/// One verification key, parsed once so a verification does not parse it again.
struct VerifyingKey {
    origin: Origin,
    key: ParsedPublicKey,
}

impl VerifyingKey {
    fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        self.key.verify_sig(message, signature).is_ok()
    }
}

/// The keys at one moment; replaced whole when a fetch brings new ones.
struct Keys {
    /// JWKS keys that have a `kid`.
    by_kid: HashMap<Box<str>, Arc<VerifyingKey>>,
    /// Every key: the static ones first (tokens without `kid` predate the JWKS and were signed by
    /// Whop's static key), then the JWKS's.
    all: Vec<Arc<VerifyingKey>>,
    /// How many of `all` are static.
    static_count: usize,
}

impl Keys {
    fn static_keys(&self) -> &[Arc<VerifyingKey>] {
        self.all.get(..self.static_count).unwrap_or(&self.all)
    }
}

/// Fetch bookkeeping; only touched on fetches and unknown kids, never on a verification that
/// finds its key.
struct FetchState {
    in_flight: bool,
    /// Start of the last refetch caused by an unknown kid (the rate limit).
    last_unknown_kid_refetch: Option<Instant>,
    /// When the background task fetches next (success: `refresh_interval` later; failure:
    /// `retry_after_failure`).
    next_scheduled: Instant,
}

struct Inner {
    url: Option<String>,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    runtime: Handle,
    options: KeySetOptions,
    static_keys: Vec<Arc<VerifyingKey>>,
    keys: RwLock<Arc<Keys>>,
    state: Mutex<FetchState>,
    /// Fetches finished (successful or not); waiters of a fetch watch it, and the set is loaded
    /// once it is above 0 (one value, so that no waiter sees one fact without the other).
    finished: watch::Sender<u64>,
}

/// The keys that verify user tokens, and the fetching that keeps them current. Cheap to clone
/// (one `Arc`).
#[derive(Clone)]
pub struct KeySet {
    inner: Arc<Inner>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet")
            .field("jwks_url", &self.inner.url)
            .field("jwks_kids", &self.jwks_kids())
            .field("static_keys", &self.inner.static_keys.len())
            .field("loaded", &self.is_loaded())
            .finish()
    }
}

impl KeySet {
    /// The built-in Whop key and `public_keys` (PEM), and — when `jwks_url` is set — the JWKS,
    /// whose first fetch starts at once in the background on `runtime`. Fetches use `http`
    /// (bounded by `options.fetch_timeout`) and are counted in `metrics` (endpoint `jwks`).
    pub fn new(
        jwks_url: Option<&Uri>,
        public_keys: &[String],
        http: reqwest::Client,
        metrics: Arc<Metrics>,
        runtime: &Handle,
        options: KeySetOptions,
    ) -> Result<KeySet, InvalidPublicKey> {
        let static_keys = static_keys(public_keys)?;
        let keys = Keys { by_kid: HashMap::new(), all: static_keys.clone(), static_count: static_keys.len() };
        let url = jwks_url.map(ToString::to_string);
        let fetching = url.is_some();
        let inner = Arc::new(Inner {
            url,
            http,
            metrics,
            runtime: runtime.clone(),
            options,
            static_keys,
            keys: RwLock::new(Arc::new(keys)),
            // Marked in flight before the task starts, so that tokens arriving before the first
            // fetch is done wait for it instead of starting another.
            state: Mutex::new(FetchState {
                in_flight: fetching,
                last_unknown_kid_refetch: None,
                next_scheduled: Instant::now(),
            }),
            finished: watch::Sender::new(0),
        });
        if fetching {
            runtime.spawn(maintain(Arc::downgrade(&inner)));
        }
        Ok(KeySet { inner })
    }

    /// Checks an ES256 signature (64 bytes, `r || s`) of `message`: with the key of `kid` when the
    /// JWKS has it; for a token without `kid`, with every key; for an unknown `kid`, with the
    /// static keys (built-in and `public_keys`, which carry no kid) before giving up.
    pub fn check_signature(&self, kid: Option<&str>, message: &[u8], signature: &[u8]) -> SignatureCheck {
        // Read before the keys: a fetch that finishes in between then looks newer than what we
        // saw, and the refetch does not wait for another one.
        let seen = self.generation();
        let keys = self.keys();
        let valid = |k: &Arc<VerifyingKey>| k.verifies(message, signature);
        let Some(kid) = kid else {
            return match keys.all.iter().find(|k| valid(k)) {
                Some(_) => SignatureCheck::Valid,
                None => SignatureCheck::BadSignature,
            };
        };
        if let Some(key) = keys.by_kid.get(kid) {
            return if valid(key) { SignatureCheck::Valid } else { SignatureCheck::BadSignature };
        }
        if let Some(key) = keys.static_keys().iter().find(|k| valid(k)) {
            tracing::debug!(kid = %loggable(kid), key = ?key.origin, "user token with an unknown kid verified by a static key");
            return SignatureCheck::Valid;
        }
        SignatureCheck::UnknownKid { refetch: self.inner.url.is_some().then_some(seen) }
    }

    /// Makes sure a JWKS fetch has finished after `seen` (from [`SignatureCheck::UnknownKid`]):
    /// returns at once if one already has, waits for the one under way, or starts one unless an
    /// unknown-kid refetch started less than `min_refetch_interval` ago. True when a fetch
    /// finished after `seen` (the keys may have changed: check again); false when rate-limited or
    /// without a JWKS URL. The fetch runs on the key set's runtime, so dropping this future does
    /// not cancel it.
    pub async fn refetch(&self, seen: Generation) -> bool {
        let mut finished = {
            let mut state = self.inner.lock_state();
            if self.generation() != seen {
                return true;
            }
            if !state.in_flight {
                if self.inner.url.is_none() {
                    return false;
                }
                let now = Instant::now();
                if let Some(last) = state.last_unknown_kid_refetch
                    && now.saturating_duration_since(last) < self.inner.options.min_refetch_interval
                {
                    return false;
                }
                state.last_unknown_kid_refetch = Some(now);
                state.in_flight = true;
                let fetch = InFlight(self.inner.clone());
                self.inner.runtime.spawn(async move { fetch.run("unknown kid").await });
            }
            // Subscribed under the lock that `finish` takes, so the end of this fetch is seen.
            self.inner.finished.subscribe()
        };
        // An error means the sender is gone, which cannot happen while `self` lives.
        let _ = finished.changed().await;
        true
    }

    /// Resolves once the first JWKS fetch has finished, whether it succeeded or not; at once
    /// without a JWKS URL.
    pub async fn loaded(&self) {
        if self.inner.url.is_none() {
            return;
        }
        let mut finished = self.inner.finished.subscribe();
        // An error means the sender is gone, which cannot happen while `self` lives.
        let _ = finished.wait_for(|n| *n > 0).await;
    }

    /// True once the first JWKS fetch has finished (or when there is no JWKS URL).
    pub fn is_loaded(&self) -> bool {
        self.inner.url.is_none() || *self.inner.finished.borrow() > 0
    }

    #[cfg(test)]
    /// True when the set fetches a JWKS.
    pub fn fetches_jwks(&self) -> bool {
        self.inner.url.is_some()
    }

    /// The kids of the JWKS keys held now, sorted.
    pub fn jwks_kids(&self) -> Vec<String> {
        let mut kids: Vec<String> = self.keys().by_kid.keys().map(|k| k.to_string()).collect();
        kids.sort();
        kids
    }

    #[cfg(test)]
    /// How many keys carry no kid and are always held: the built-in Whop key and `public_keys`.
    pub fn static_key_count(&self) -> usize {
        self.inner.static_keys.len()
    }

    fn generation(&self) -> Generation {
        Generation(*self.inner.finished.borrow())
    }

    fn keys(&self) -> Arc<Keys> {
        self.inner.keys.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Inner {
    fn lock_state(&self) -> MutexGuard<'_, FetchState> {
        // Nothing panics while holding it; if something did, the state is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One fetch; installs what it brings. The caller holds an [`InFlight`].
    async fn fetch_and_install(&self, why: &'static str) {
        let Some(url) = self.url.as_deref() else { return };
        let started = Instant::now();
        let (status, result) = self.fetch(url).await;
        self.metrics
            .whop_api_requests
            .with_label_values(&[METRIC_ENDPOINT, status.as_deref().unwrap_or("error")])
            .inc();
        self.metrics.whop_api_duration.with_label_values(&[METRIC_ENDPOINT]).observe(started.elapsed().as_secs_f64());
        let installed = match result.and_then(|body| parse_jwks(&body)) {
            Ok(jwks) => {
                self.install(jwks, why);
                true
            }
            Err(e) => {
                tracing::warn!(url, reason = why, error = %e, "could not fetch the user-token JWKS; keeping the keys we have");
                false
            }
        };
        let mut state = self.lock_state();
        state.next_scheduled =
            Instant::now() + if installed { self.options.refresh_interval } else { self.options.retry_after_failure };
    }

    /// GET the JWKS: the status (when an answer came) and the body of a 200.
    async fn fetch(&self, url: &str) -> (Option<String>, Result<Vec<u8>, FetchError>) {
        let request =
            self.http.get(url).header(http::header::ACCEPT, "application/json").timeout(self.options.fetch_timeout);
        let mut response = match request.send().await {
            Ok(r) => r,
            Err(e) => return (None, Err(FetchError::Transport(e))),
        };
        let status = response.status();
        if !status.is_success() {
            return (Some(status.as_str().to_owned()), Err(FetchError::Status(status.as_u16())));
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) if body.len() + chunk.len() > MAX_JWKS_BYTES => {
                    return (Some(status.as_str().to_owned()), Err(FetchError::TooLarge));
                }
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => return (Some(status.as_str().to_owned()), Ok(body)),
                Err(e) => return (Some(status.as_str().to_owned()), Err(FetchError::Transport(e))),
            }
        }
    }

    fn install(&self, jwks: Vec<(Option<String>, ParsedPublicKey)>, why: &'static str) {
        let mut by_kid = HashMap::with_capacity(jwks.len());
        let mut all = self.static_keys.clone();
        for (kid, key) in jwks {
            let key = Arc::new(VerifyingKey { origin: Origin::Jwks(kid.as_deref().map(Box::from)), key });
            if let Some(kid) = kid {
                if by_kid.contains_key(kid.as_str()) {
                    tracing::debug!(kid = %loggable(&kid), "skipping a JWKS key whose kid is taken by an earlier one");
                    continue;
                }
                by_kid.insert(Box::from(kid), key.clone());
            }
            all.push(key);
        }
        let new = Keys { by_kid, all, static_count: self.static_keys.len() };
        let mut kids: Vec<&str> = new.by_kid.keys().map(|k| &**k).collect();
        kids.sort_unstable();
        tracing::debug!(reason = why, ?kids, jwks_keys = new.all.len() - new.static_count, "user-token JWKS fetched");
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(new);
    }

    /// Ends a fetch: waiters wake, and the set counts as loaded.
    fn finish(&self) {
        let mut state = self.lock_state();
        state.in_flight = false;
        self.finished.send_modify(|n| *n += 1);
    }
}

/// A fetch under way; however it ends (done, failed, cancelled with the runtime), dropping this
/// marks it finished so that nobody waits for it forever.
struct InFlight(Arc<Inner>);

impl InFlight {
    async fn run(self, why: &'static str) {
        self.0.fetch_and_install(why).await;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.finish();
    }
}

/// The background task: the first fetch, then one every `refresh_interval` (sooner after a
/// failure). Holds the set only weakly between fetches, so it ends once the set is dropped.
async fn maintain(set: Weak<Inner>) {
    if let Some(inner) = set.upgrade() {
        // `new` marked this fetch in flight.
        InFlight(inner).run("start").await;
    }
    loop {
        let Some(deadline) = set.upgrade().map(|inner| inner.lock_state().next_scheduled) else {
            return;
        };
        tokio::time::sleep_until(deadline.into()).await;
        let Some(inner) = set.upgrade() else { return };
        let wait_for = {
            let mut state = inner.lock_state();
            if Instant::now() < state.next_scheduled {
                // Another fetch moved the schedule while we slept.
                continue;
            }
            if state.in_flight {
                Some(inner.finished.subscribe())
            } else {
                state.in_flight = true;
                None
            }
        };
        match wait_for {
            // Its end reschedules; sleeping again before it would spin.
            Some(mut finished) => {
                drop(inner);
                let _ = finished.changed().await;
            }
            None => InFlight(inner).run("scheduled refresh").await,
        }
    }
}

/// Why a fetch brought no keys; never holds response content.
#[derive(Debug)]
enum FetchError {
    Transport(reqwest::Error),
    Status(u16),
    TooLarge,
    NotJwks,
    NoUsableKey,
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Transport(e) if e.is_timeout() => f.write_str("timed out"),
            FetchError::Transport(e) => {
                write!(f, "request failed: {e}")?;
                // reqwest's own message is generic; the cause (refused, reset, DNS) is below it.
                let mut source = std::error::Error::source(e);
                while let Some(cause) = source {
                    write!(f, ": {cause}")?;
                    source = cause.source();
                }
                Ok(())
            }
            FetchError::Status(s) => write!(f, "answered HTTP {s}"),
            FetchError::TooLarge => write!(f, "answer larger than {MAX_JWKS_BYTES} bytes"),
            FetchError::NotJwks => f.write_str("answer is not a JWKS (JSON with a \"keys\" array)"),
            FetchError::NoUsableKey => f.write_str("JWKS has no EC P-256 (ES256) key"),
        }
    }
}

/// The usable keys of a JWKS document (`kty` EC, `crv` P-256, `alg` absent or ES256, `use`
/// absent or `sig`), with their kids; the others are skipped with a debug log. A document without
/// any usable key is refused as a whole, so a broken answer cannot empty the set.
fn parse_jwks(body: &[u8]) -> Result<Vec<(Option<String>, ParsedPublicKey)>, FetchError> {
    #[derive(serde::Deserialize)]
    struct Document {
        keys: Vec<Value>,
    }
    let document: Document = serde_json::from_slice(body).map_err(|_| FetchError::NotJwks)?;
    let mut keys = Vec::with_capacity(document.keys.len());
    for (index, jwk) in document.keys.iter().enumerate() {
        let kid = jwk.get("kid").and_then(Value::as_str);
        match parse_jwk(jwk) {
            Ok(key) => keys.push((kid.map(str::to_owned), key)),
            Err(why) => tracing::debug!(index, kid = kid.map(loggable), why, "skipping a JWKS key"),
        }
    }
    if keys.is_empty() {
        return Err(FetchError::NoUsableKey);
    }
    Ok(keys)
}

fn parse_jwk(jwk: &Value) -> Result<ParsedPublicKey, &'static str> {
    let field = |name: &str| jwk.get(name).and_then(Value::as_str);
    if field("kty") != Some("EC") {
        return Err("kty is not EC");
    }
    if field("crv") != Some("P-256") {
        return Err("crv is not P-256");
    }
    if jwk.get("alg").is_some_and(|alg| alg != "ES256") {
        return Err("alg is not ES256");
    }
    if jwk.get("use").is_some_and(|usage| usage != "sig") {
        return Err("use is not sig");
    }
    if jwk.get("kid").is_some_and(|kid| !kid.is_string()) {
        return Err("kid is not a string");
    }
    match (field("x"), field("y")) {
        (Some(x), Some(y)) => p256_point(x, y).ok_or("x/y are not a point on P-256"),
        _ => Err("x or y missing"),
    }
}

/// The P-256 public key with these base64url coordinates, if it is one (on the curve).
fn p256_point(x: &str, y: &str) -> Option<ParsedPublicKey> {
    let x = URL_SAFE_NO_PAD.decode(x).ok()?;
    let y = URL_SAFE_NO_PAD.decode(y).ok()?;
    if x.len() != 32 || y.len() != 32 {
        return None;
    }
    // Uncompressed SEC1 point: 0x04 || x || y.
    let mut point = Vec::with_capacity(65);
    point.push(4);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point).ok()
}

/// The built-in Whop key, then `public_keys` in order.
fn static_keys(public_keys: &[String]) -> Result<Vec<Arc<VerifyingKey>>, InvalidPublicKey> {
    let mut keys = Vec::with_capacity(1 + public_keys.len());
    match p256_point(WHOP_STATIC_KEY_X, WHOP_STATIC_KEY_Y) {
        Some(key) => keys.push(Arc::new(VerifyingKey { origin: Origin::BuiltIn, key })),
        // Fixed constants, checked by a test: only a broken build gets here.
        None => tracing::error!("Whop's built-in user-token key does not parse; it is left out"),
    }
    for (index, pem) in public_keys.iter().enumerate() {
        let key = pem_key(pem).ok_or(InvalidPublicKey { index })?;
        keys.push(Arc::new(VerifyingKey { origin: Origin::Configured(index), key }));
    }
    Ok(keys)
}

fn pem_key(pem: &str) -> Option<ParsedPublicKey> {
    let decoded = jsonwebtoken::DecodingKey::from_ec_pem(pem.as_bytes()).ok()?;
    // The SEC1 point from the SubjectPublicKeyInfo; P-384 and the like are refused here.
    ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, decoded.try_get_as_bytes().ok()?).ok()
}

/// A kid as it may appear in a log line: it comes from the token, so it is cut short.
pub(super) fn loggable(kid: &str) -> &str {
    match kid.char_indices().nth(MAX_LOGGED_KID) {
        Some((end, _)) => &kid[..end],
        None => kid,
    }
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    };
    use base64::engine::general_purpose::STANDARD;
    use futures_util::future::join_all;
    use serde_json::json;

    use super::*;
    use whopgate_mock::{DEFAULT_KEY_PEM, DEFAULT_KID, EndpointKind, Fault, MockState, MockWhop};

    fn start_mock() -> MockWhop {
        MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default()).unwrap()
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder().no_proxy().build().unwrap()
    }

    fn key_set(url: Option<&str>, public_keys: &[String], metrics: &Arc<Metrics>, options: KeySetOptions) -> KeySet {
        let url = url.map(|u| u.parse::<Uri>().unwrap());
        KeySet::new(url.as_ref(), public_keys, client(), metrics.clone(), &Handle::current(), options).unwrap()
    }

    fn fetched(metrics: &Metrics, status: &str) -> u64 {
        metrics.whop_api_requests.with_label_values(&["jwks", status]).get()
    }

    /// The mock's default signing key (the one behind `mock-key-1`).
    fn mock_signer() -> EcdsaKeyPair {
        let b64: String = DEFAULT_KEY_PEM.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = STANDARD.decode(b64).unwrap();
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der).unwrap()
    }

    fn sign(key: &EcdsaKeyPair, message: &[u8]) -> Vec<u8> {
        key.sign(&SystemRandom::new(), message).unwrap().as_ref().to_vec()
    }

    fn public_pem(der: &[u8]) -> String {
        let b64 = STANDARD.encode(der);
        let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
        format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", lines.join("\n"))
    }

    fn closed_port_url() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        format!("http://{addr}/.well-known/jwks.json")
    }

    async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[test]
    fn the_built_in_key_is_a_p256_point() {
        assert!(p256_point(WHOP_STATIC_KEY_X, WHOP_STATIC_KEY_Y).is_some());
        let keys = static_keys(&[]).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].origin, Origin::BuiltIn);
    }

    #[test]
    fn only_p256_es256_signing_keys_are_taken_from_a_jwks() {
        let mock_key = MockState::default().resolve().unwrap().jwks().unwrap()["keys"][0].clone();
        let (x, y) = (mock_key["x"].clone(), mock_key["y"].clone());
        let doc = json!({"keys": [
            {"kty": "RSA", "kid": "rsa", "n": "AQAB", "e": "AQAB"},
            {"kty": "EC", "crv": "P-384", "kid": "p384", "x": x, "y": y},
            {"kty": "EC", "crv": "P-256", "kid": "es384", "alg": "ES384", "x": x, "y": y},
            {"kty": "EC", "crv": "P-256", "kid": "enc", "use": "enc", "x": x, "y": y},
            {"kty": "EC", "crv": "P-256", "kid": "short", "x": "AAAA", "y": y},
            {"kty": "EC", "crv": "P-256", "kid": "off-curve", "x": x, "y": x},
            {"kty": "EC", "crv": "P-256", "kid": 7, "x": x, "y": y},
            {"kty": "EC", "crv": "P-256", "kid": "no-y", "x": x},
            {"kty": "EC", "crv": "P-256", "kid": "good", "alg": "ES256", "use": "sig", "x": x, "y": y},
            {"kty": "EC", "crv": "P-256", "x": x, "y": y},
        ]});
        let keys = parse_jwks(doc.to_string().as_bytes()).unwrap();
        let kids: Vec<Option<&str>> = keys.iter().map(|(kid, _)| kid.as_deref()).collect();
        assert_eq!(kids, [Some("good"), None]);

        assert!(matches!(parse_jwks(b"not json"), Err(FetchError::NotJwks)));
        assert!(matches!(parse_jwks(br#"{"keys": 1}"#), Err(FetchError::NotJwks)));
        assert!(matches!(parse_jwks(br#"{"keys": []}"#), Err(FetchError::NoUsableKey)));
        let only_rsa = json!({"keys": [{"kty": "RSA", "kid": "rsa", "n": "AQAB", "e": "AQAB"}]});
        assert!(matches!(parse_jwks(only_rsa.to_string().as_bytes()), Err(FetchError::NoUsableKey)));
    }

    #[test]
    fn bad_public_keys_are_named_by_index_and_never_echoed() {
        let good = public_pem(mock_signer().public_key().as_der().unwrap().as_ref());
        assert_eq!(static_keys(std::slice::from_ref(&good)).unwrap().len(), 2);

        let p384 = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).unwrap();
        let p384 = public_pem(p384.public_key().as_der().unwrap().as_ref());
        let garbage = "-----BEGIN PUBLIC KEY-----\nc2VjcmV0LXNoYXBlZA==\n-----END PUBLIC KEY-----\n".to_owned();
        for (bad, secret) in [(p384, "MHYwEAYHKoZIzj0CAQYFK4EEACID"), (garbage, "c2VjcmV0LXNoYXBlZA")] {
            let err = static_keys(&[good.clone(), bad.clone()]).err().unwrap();
            assert_eq!(err, InvalidPublicKey { index: 1 });
            let text = format!("{err} {err:?}");
            assert!(text.contains("public_keys[1]"), "{text}");
            assert!(!text.contains(secret) && !text.contains("BEGIN PUBLIC KEY-----\n"), "{text}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn loads_the_jwks_in_the_background_and_checks_signatures() {
        let mock = start_mock();
        let metrics = Arc::new(Metrics::new());
        let set = key_set(Some(&mock.jwks_url()), &[], &metrics, KeySetOptions::default());
        set.loaded().await;
        assert!(set.is_loaded() && set.fetches_jwks());
        assert_eq!(set.jwks_kids(), [DEFAULT_KID]);
        assert_eq!(set.static_key_count(), 1);
        assert_eq!(mock.calls(EndpointKind::Jwks), 1);
        assert_eq!(fetched(&metrics, "200"), 1);
        assert_eq!(metrics.whop_api_duration.with_label_values(&["jwks"]).get_sample_count(), 1);

        let signer = mock_signer();
        let signature = sign(&signer, b"header.payload");
        assert_eq!(set.check_signature(Some(DEFAULT_KID), b"header.payload", &signature), SignatureCheck::Valid);
        assert_eq!(set.check_signature(None, b"header.payload", &signature), SignatureCheck::Valid);
        assert_eq!(set.check_signature(Some(DEFAULT_KID), b"header.payloaX", &signature), SignatureCheck::BadSignature);
        assert_eq!(set.check_signature(None, b"header.payloaX", &signature), SignatureCheck::BadSignature);
        assert!(matches!(
            set.check_signature(Some("mock-key-404"), b"header.payload", &signature),
            SignatureCheck::UnknownKid { refetch: Some(_) }
        ));
        // A known kid is checked with its key only, not with whatever else might verify.
        let other = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        assert_eq!(
            set.check_signature(Some(DEFAULT_KID), b"header.payload", &sign(&other, b"header.payload")),
            SignatureCheck::BadSignature
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreachable_jwks_leaves_the_static_keys_working() {
        let mock = start_mock();
        let pem = mock.public_key_pem().unwrap();
        let metrics = Arc::new(Metrics::new());
        let set = key_set(Some(&closed_port_url()), &[pem], &metrics, KeySetOptions::default());
        tokio::time::timeout(Duration::from_secs(10), set.loaded()).await.unwrap();
        assert!(set.is_loaded());
        assert!(set.jwks_kids().is_empty());
        assert_eq!(set.static_key_count(), 2);
        assert_eq!(fetched(&metrics, "error"), 1);
        // The token's kid is unknown, but a configured key verifies it.
        let signature = sign(&mock_signer(), b"h.p");
        assert_eq!(set.check_signature(Some(DEFAULT_KID), b"h.p", &signature), SignatureCheck::Valid);
        assert_eq!(set.check_signature(None, b"h.p", &signature), SignatureCheck::Valid);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_refetch_keeps_the_keys_it_had() {
        let mock = start_mock();
        let metrics = Arc::new(Metrics::new());
        let set = key_set(Some(&mock.jwks_url()), &[], &metrics, KeySetOptions::default());
        set.loaded().await;
        mock.set_fault(EndpointKind::Jwks, Fault::error());
        assert!(set.refetch(set.generation()).await);
        assert_eq!(mock.calls(EndpointKind::Jwks), 2);
        assert_eq!(fetched(&metrics, "500"), 1);
        assert_eq!(set.jwks_kids(), [DEFAULT_KID]);
        assert_eq!(set.static_key_count(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_refetches_share_one_fetch() {
        let mock = start_mock();
        let metrics = Arc::new(Metrics::new());
        let set = key_set(Some(&mock.jwks_url()), &[], &metrics, KeySetOptions::default());
        set.loaded().await;
        mock.set_fault(EndpointKind::Jwks, Fault::latency(Duration::from_millis(200)));
        let seen = set.generation();
        let results = join_all((0..200).map(|_| {
            let set = set.clone();
            tokio::spawn(async move { set.refetch(seen).await })
        }))
        .await;
        assert!(results.into_iter().all(|r| r.unwrap()));
        assert_eq!(mock.calls(EndpointKind::Jwks), 2);
        // Someone who looked at the keys before that fetch ended does not need another one.
        assert!(set.refetch(seen).await);
        assert_eq!(mock.calls(EndpointKind::Jwks), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_for_the_first_fetch_joins_it() {
        let mock = start_mock();
        mock.set_fault(EndpointKind::Jwks, Fault::latency(Duration::from_millis(200)));
        let metrics = Arc::new(Metrics::new());
        let set = key_set(Some(&mock.jwks_url()), &[], &metrics, KeySetOptions::default());
        assert!(!set.is_loaded());
        let seen = set.generation();
        let results = join_all((0..20).map(|_| set.refetch(seen))).await;
        assert!(results.into_iter().all(|r| r));
        assert!(set.is_loaded());
        assert_eq!(set.jwks_kids(), [DEFAULT_KID]);
        assert_eq!(mock.calls(EndpointKind::Jwks), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unknown_kid_refetches_are_rate_limited() {
        let mock = start_mock();
        let metrics = Arc::new(Metrics::new());
        let interval = Duration::from_millis(300);
        let options = KeySetOptions { min_refetch_interval: interval, ..KeySetOptions::default() };
        let set = key_set(Some(&mock.jwks_url()), &[], &metrics, options);
        set.loaded().await;
        let started = Instant::now();
        assert!(set.refetch(set.generation()).await);
        assert_eq!(mock.calls(EndpointKind::Jwks), 2);
        assert!(!set.refetch(set.generation()).await);
        assert_eq!(mock.calls(EndpointKind::Jwks), 2);
        tokio::time::sleep(interval.saturating_sub(started.elapsed()) + Duration::from_millis(20)).await;
        assert!(set.refetch(set.generation()).await);
        assert_eq!(mock.calls(EndpointKind::Jwks), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_jwks_is_refreshed_on_schedule_until_the_set_is_dropped() {
        let mock = start_mock();
        let metrics = Arc::new(Metrics::new());
        let options = KeySetOptions {
            refresh_interval: Duration::from_millis(100),
            retry_after_failure: Duration::from_millis(100),
            ..KeySetOptions::default()
        };
        let set = key_set(Some(&mock.jwks_url()), &[], &metrics, options);
        set.loaded().await;
        eventually("a scheduled refresh", || mock.calls(EndpointKind::Jwks) >= 3).await;
        // A failure is retried too, and keeps the keys.
        mock.set_fault(EndpointKind::Jwks, Fault::error());
        eventually("failed refreshes", || fetched(&metrics, "500") >= 2).await;
        assert_eq!(set.jwks_kids(), [DEFAULT_KID]);

        drop(set);
        tokio::time::sleep(Duration::from_millis(150)).await;
        let calls = mock.calls(EndpointKind::Jwks);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(mock.calls(EndpointKind::Jwks), calls);
    }

    #[tokio::test]
    async fn without_a_url_nothing_is_fetched() {
        let metrics = Arc::new(Metrics::new());
        let set = key_set(None, &[], &metrics, KeySetOptions::default());
        assert!(set.is_loaded() && !set.fetches_jwks());
        set.loaded().await;
        let signature = sign(&mock_signer(), b"h.p");
        assert_eq!(
            set.check_signature(Some(DEFAULT_KID), b"h.p", &signature),
            SignatureCheck::UnknownKid { refetch: None }
        );
        assert_eq!(set.check_signature(None, b"h.p", &signature), SignatureCheck::BadSignature);
        assert!(!set.refetch(set.generation()).await);
        assert_eq!(fetched(&metrics, "error") + fetched(&metrics, "200"), 0);
    }
}
