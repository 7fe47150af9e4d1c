//! Whop's signed user token (`x-whop-user-token`, SPEC §1): finding it in a request, verifying
//! it ([`UserTokenVerifier`]), and remembering the tokens that verified until they expire, so that
//! a repeated token costs one hash lookup instead of a signature check.
//!
//! A token is accepted only when all of these hold; anything else is [`Verification::Invalid`]:
//! - three base64url parts, at most [`MAX_TOKEN_LEN`] bytes, JSON header and claims;
//! - header `alg` is exactly `ES256` (the token never chooses the algorithm) and no `crit`;
//! - `exp` present and not past (with `leeway`); `nbf` and `iat`, when present, not in the future
//!   beyond `leeway`;
//! - `iss` is [`ISSUER`]; `aud` is a JSON *string* equal to the app id (an array is refused, even
//!   one holding the app id);
//! - `sub` is a Whop user id (`user_…`, visible ASCII) that can be a header value;
//! - the signature verifies under the key of the header's `kid`, or, without `kid`, under any key
//!   (see [`KeySet::check_signature`]).
//!
//! Claims are checked before the signature: they are cheap, and a token that fails them can be
//! refused without a signature check or, for an unknown `kid`, a JWKS refetch.

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderName};
use percent_encoding::percent_decode_str;
use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::Value;
use tokio::runtime::Handle;

use self::cache::TokenCache;
use super::jwks::{Generation, InvalidPublicKey, KeySet, KeySetOptions, SignatureCheck, loggable};
use super::{Identity, Source};
use crate::config::UserTokenConfig;
use crate::metrics::Metrics;

mod cache;

/// The `iss` of Whop user tokens.
pub const ISSUER: &str = "urn:whopcom:exp-proxy";
/// The query parameter that carries the token in Whop's localhost mode.
pub const QUERY_PARAM: &str = "whop-dev-user-token";
/// Longest token looked at; Whop's are well under 1 KiB.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Longest a verified token is remembered, whatever its `exp`: a key Whop withdraws stops
/// vouching for cached tokens within this time, at the cost of one signature check per token
/// per period.
pub const MAX_CACHED_FOR: Duration = Duration::from_secs(60 * 60);

const USER_ID_PREFIX: &str = "user_";
/// Whop ids are short; a longer `sub` is not one.
const MAX_USER_ID_LEN: usize = 128;
/// How often expired cache entries are swept when no traffic does it.
const CACHE_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Why a user token was refused. `Display` is a short sentence safe to show a client; neither it
/// nor `Debug` ever holds token content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenError {
    /// Not a JWT: empty, too long, not three base64url parts, not JSON, claims of the wrong type,
    /// or a header with `crit`.
    Malformed,
    /// Header `alg` is not `ES256` (`none`, `HS256`, `RS256`, `ES384`, …).
    UnsupportedAlgorithm,
    /// The signature does not verify under the key(s) that could have made it.
    BadSignature,
    /// The header names a `kid` no key has, even after a JWKS refetch.
    UnknownKey,
    /// `exp` is past, beyond the leeway.
    Expired,
    /// No `exp`.
    MissingExpiry,
    /// `nbf` or `iat` is in the future, beyond the leeway.
    NotYetValid,
    /// `iss` is not Whop's app proxy.
    WrongIssuer,
    /// `aud` is missing or another app's id.
    WrongAudience,
    /// `aud` is not a single string (an array, even one holding this app's id, is refused).
    AudienceNotAString,
    /// `sub` is missing or not a Whop user id.
    BadSubject,
}

impl TokenError {
    /// A stable snake_case name, for logs and tests.
    #[cfg(test)]
    pub fn as_str(self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed",
            TokenError::UnsupportedAlgorithm => "unsupported_algorithm",
            TokenError::BadSignature => "bad_signature",
            TokenError::UnknownKey => "unknown_key",
            TokenError::Expired => "expired",
            TokenError::MissingExpiry => "missing_expiry",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::WrongIssuer => "wrong_issuer",
            TokenError::WrongAudience => "wrong_audience",
            TokenError::AudienceNotAString => "audience_not_a_string",
            TokenError::BadSubject => "bad_subject",
        }
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenError::Malformed => "the user token is malformed",
            TokenError::UnsupportedAlgorithm => "the user token is not signed with ES256",
            TokenError::BadSignature => "the user token's signature is not valid",
            TokenError::UnknownKey => "the user token is signed by an unknown key",
            TokenError::Expired => "the user token has expired",
            TokenError::MissingExpiry => "the user token has no expiry",
            TokenError::NotYetValid => "the user token is not valid yet",
            TokenError::WrongIssuer => "the user token was not issued by Whop",
            TokenError::WrongAudience => "the user token is for another app",
            TokenError::AudienceNotAString => "the user token's audience is not a single app id",
            TokenError::BadSubject => "the user token does not name a Whop user",
        })
    }
}

impl std::error::Error for TokenError {}

/// The verifier could not be built from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserTokenSetupError {
    /// `whop.app_id` is empty: tokens could not be checked for their audience.
    MissingAppId,
    /// A `public_keys` entry (named by index, never echoed) is not a P-256 public key in PEM.
    InvalidPublicKey(InvalidPublicKey),
}

impl fmt::Display for UserTokenSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserTokenSetupError::MissingAppId => {
                f.write_str("whop.app_id is required to verify user tokens (it is the `aud` they must carry)")
            }
            UserTokenSetupError::InvalidPublicKey(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for UserTokenSetupError {}

impl From<InvalidPublicKey> for UserTokenSetupError {
    fn from(e: InvalidPublicKey) -> Self {
        UserTokenSetupError::InvalidPublicKey(e)
    }
}

/// The result of [`UserTokenVerifier::verify_now`].
#[derive(Debug, Clone)]
pub enum Verification {
    /// The token checked out (or was remembered from an earlier check).
    Valid(Arc<Identity>),
    /// The token is refused.
    Invalid(TokenError),
    /// The token names a `kid` that is not known yet; [`UserTokenVerifier::verify`] refetches the
    /// JWKS (rate-limited) and decides.
    UnknownKey,
}

/// The JOSE header fields that matter; others are ignored.
#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
    kid: Option<String>,
    /// Extensions the verifier would have to understand (RFC 7515 §4.1.11): none are.
    crit: Option<IgnoredAny>,
}

/// The claims that matter; others are ignored. `aud` is read as raw JSON so that an array is
/// told apart from a string (a generic JWT validator accepts both).
#[derive(Deserialize)]
struct Claims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Value>,
    exp: Option<f64>,
    nbf: Option<f64>,
    iat: Option<f64>,
}

/// Why a full check did not produce an identity.
enum Refused {
    Invalid(TokenError),
    /// Unknown kid, and a refetch after `Generation` could help.
    UnknownKey(Generation),
}

impl From<TokenError> for Refused {
    fn from(e: TokenError) -> Self {
        Refused::Invalid(e)
    }
}

/// Verifies Whop user tokens and remembers the good ones until they expire. Shared by every
/// worker thread (`Arc`); a remembered token costs a lookup in the thread's own map, a clock read,
/// an `Arc` clone and a counter add (see the `cache` module).
pub struct UserTokenVerifier {
    header: HeaderName,
    accept_query_param: bool,
    app_id: Box<str>,
    leeway: f64,
    keys: KeySet,
    cache: TokenCache,
}

impl fmt::Debug for UserTokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserTokenVerifier")
            .field("header", &self.header)
            .field("accept_query_param", &self.accept_query_param)
            .field("app_id", &self.app_id)
            .field("leeway", &self.leeway)
            .field("keys", &self.keys)
            .field("cached_tokens", &self.cache.len())
            .finish()
    }
}

impl UserTokenVerifier {
    /// A verifier for `config`, accepting tokens whose `aud` is `app_id`. Starts fetching the JWKS
    /// (when `jwks_url` is set) in the background on `runtime`, with `http`; remembers up to
    /// `max_cached_tokens` verified tokens. Fails on an empty `app_id` or a `public_keys` entry
    /// that is not a P-256 public key (named by index, never echoed).
    pub fn new(
        config: &UserTokenConfig,
        app_id: &str,
        http: reqwest::Client,
        metrics: Arc<Metrics>,
        runtime: Handle,
        max_cached_tokens: u64,
    ) -> Result<Arc<Self>, UserTokenSetupError> {
        Self::with_options(config, app_id, http, metrics, runtime, max_cached_tokens, KeySetOptions::default())
    }

    /// [`UserTokenVerifier::new`] with other key-set timings (tests shorten the refetch interval
    /// instead of sleeping 30 s).
    pub fn with_options(
        config: &UserTokenConfig,
        app_id: &str,
        http: reqwest::Client,
        metrics: Arc<Metrics>,
        runtime: Handle,
        max_cached_tokens: u64,
        options: KeySetOptions,
    ) -> Result<Arc<Self>, UserTokenSetupError> {
        if app_id.is_empty() {
            return Err(UserTokenSetupError::MissingAppId);
        }
        let keys =
            KeySet::new(config.jwks_url.as_ref(), &config.public_keys, http, metrics.clone(), &runtime, options)?;
        let cache = TokenCache::new(max_cached_tokens, &metrics);
        let verifier = Arc::new(UserTokenVerifier {
            header: config.header.clone(),
            accept_query_param: config.accept_query_param,
            app_id: Box::from(app_id),
            leeway: config.leeway.as_secs_f64(),
            keys,
            cache,
        });
        runtime.spawn(sweep(Arc::downgrade(&verifier)));
        Ok(verifier)
    }

    #[cfg(test)]
    /// The header the token is read from (`x-whop-user-token` unless configured otherwise).
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// The token of a request: the configured header, else (only when `accept_query_param`) the
    /// `whop-dev-user-token` query parameter, percent-decoded. `None` when there is none.
    ///
    /// A credential that is present but unusable — given twice — comes back empty; like one that
    /// is not text, it verifies as [`TokenError::Malformed`]: present means judged, never passed
    /// over to a weaker source.
    pub fn find_token<'a>(&self, headers: &'a HeaderMap, query: Option<&'a str>) -> Option<Cow<'a, [u8]>> {
        let mut values = headers.get_all(&self.header).iter();
        if let Some(value) = values.next() {
            if values.next().is_some() {
                return Some(Cow::Borrowed(b""));
            }
            // Bytes: a remembered token is found without checking a few hundred of them are
            // text; one that is not fails verification, like any bad token.
            return Some(Cow::Borrowed(value.as_bytes()));
        }
        if !self.accept_query_param {
            return None;
        }
        let mut found = None;
        for pair in query?.split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if name != QUERY_PARAM {
                continue;
            }
            if found.is_some() {
                return Some(Cow::Borrowed(b""));
            }
            found = Some(percent_decode_str(value).into());
        }
        found
    }

    /// The query without `whop-dev-user-token` (every occurrence), other parameters untouched and
    /// in order; `None` when there is nothing to strip, `Some("")` when nothing is left. Strips
    /// whatever `accept_query_param` says, so a token in a URL never reaches the upstream (or its
    /// logs).
    pub fn strip_query_param(&self, query: &str) -> Option<String> {
        if !query.contains(QUERY_PARAM) {
            return None;
        }
        let mut kept = String::with_capacity(query.len());
        let mut stripped = false;
        let mut first = true;
        for pair in query.split('&') {
            if pair.split_once('=').map_or(pair, |(name, _)| name) == QUERY_PARAM {
                stripped = true;
                continue;
            }
            if !first {
                kept.push('&');
            }
            kept.push_str(pair);
            first = false;
        }
        stripped.then_some(kept)
    }

    #[cfg(test)]
    /// Synchronous, no I/O: a remembered token, or a full ES256 verification when the keys are at
    /// hand. [`Verification::UnknownKey`] when the token names a `kid` not known (yet) and a JWKS
    /// refetch could help; then call [`UserTokenVerifier::verify`].
    pub fn verify_now(&self, token: &[u8]) -> Verification {
        self.verify_at(token, Instant::now())
    }

    /// [`UserTokenVerifier::verify_now`] with the clock already read: `now` is when the request
    /// arrived, so that one request reads the clock once for all its lookups.
    pub fn verify_at(&self, token: &[u8], now: Instant) -> Verification {
        if let Some(identity) = self.cache.get(token, now) {
            return Verification::Valid(identity);
        }
        // Not text: "" verifies as malformed.
        match self.check(std::str::from_utf8(token).unwrap_or("")) {
            Ok(identity) => Verification::Valid(identity),
            Err(Refused::Invalid(e)) => Verification::Invalid(e),
            Err(Refused::UnknownKey(_)) => Verification::UnknownKey,
        }
    }

    /// [`UserTokenVerifier::verify_now`], and on an unknown `kid`: waits for (or starts, at most
    /// once per refetch interval) a JWKS refetch shared with every other caller, then verifies
    /// again. A `kid` still unknown is [`TokenError::UnknownKey`].
    pub async fn verify(&self, token: &str) -> Result<Arc<Identity>, TokenError> {
        if let Some(identity) = self.cache.get(token.as_bytes(), Instant::now()) {
            return Ok(identity);
        }
        let seen = match self.check(token) {
            Ok(identity) => return Ok(identity),
            Err(Refused::Invalid(e)) => return Err(e),
            Err(Refused::UnknownKey(seen)) => seen,
        };
        if !self.keys.refetch(seen).await {
            tracing::debug!("user token with an unknown kid; the JWKS was refetched too recently to try again");
            return Err(TokenError::UnknownKey);
        }
        match self.check(token) {
            Ok(identity) => Ok(identity),
            Err(Refused::Invalid(e)) => Err(e),
            Err(Refused::UnknownKey(_)) => Err(TokenError::UnknownKey),
        }
    }

    /// Resolves once the first JWKS fetch has finished (succeeded or failed); at once when there
    /// is no `jwks_url`.
    pub async fn keys_loaded(&self) {
        self.keys.loaded().await;
    }

    #[cfg(test)]
    /// True once the first JWKS fetch has finished (or when there is no `jwks_url`).
    pub fn keys_are_loaded(&self) -> bool {
        self.keys.is_loaded()
    }

    #[cfg(test)]
    /// The verification keys.
    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    #[cfg(test)]
    /// How many verified tokens are remembered (after applying pending expirations).
    pub fn cached_tokens(&self) -> u64 {
        self.cache.len()
    }

    /// A full check; remembers the token when it is valid.
    fn check(&self, token: &str) -> Result<Arc<Identity>, Refused> {
        let (identity, until) = self.check_token(token)?;
        let identity = Arc::new(identity);
        self.remember(token, &identity, until);
        Ok(identity)
    }

    /// The identity and the unix time (`exp + leeway`) until which it holds.
    fn check_token(&self, token: &str) -> Result<(Identity, f64), Refused> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed.into());
        }
        let (signing_input, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let (header, payload) = signing_input.split_once('.').ok_or(TokenError::Malformed)?;
        if payload.contains('.') {
            return Err(TokenError::Malformed.into());
        }
        let header: JoseHeader = decode_part(header)?;
        if header.alg != "ES256" {
            return Err(TokenError::UnsupportedAlgorithm.into());
        }
        if header.crit.is_some() {
            return Err(TokenError::Malformed.into());
        }
        let claims: Claims = decode_part(payload)?;
        let (user_id, until) = self.check_claims(&claims, unix_now())?;
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| TokenError::Malformed)?;
        // ES256 is r || s, 32 bytes each (RFC 7518 §3.4); anything else cannot verify.
        if signature.len() != 64 {
            return Err(TokenError::BadSignature.into());
        }
        let kid = header.kid.as_deref();
        match self.keys.check_signature(kid, signing_input.as_bytes(), &signature) {
            SignatureCheck::Valid => {}
            SignatureCheck::BadSignature => {
                tracing::debug!(kid = ?kid.map(loggable), "user token signature does not verify");
                return Err(TokenError::BadSignature.into());
            }
            SignatureCheck::UnknownKid { refetch: Some(seen) } => return Err(Refused::UnknownKey(seen)),
            SignatureCheck::UnknownKid { refetch: None } => {
                tracing::debug!(kid = ?kid.map(loggable), "user token names an unknown kid and no JWKS is fetched");
                return Err(TokenError::UnknownKey.into());
            }
        }
        let identity = Identity::new(user_id, Source::UserToken).ok_or(TokenError::BadSubject)?;
        Ok((identity, until))
    }

    fn check_claims<'c>(&self, claims: &'c Claims, now: f64) -> Result<(&'c str, f64), TokenError> {
        let exp = claims.exp.ok_or(TokenError::MissingExpiry)?;
        if now > exp + self.leeway {
            return Err(TokenError::Expired);
        }
        if [claims.nbf, claims.iat].into_iter().flatten().any(|t| t > now + self.leeway) {
            return Err(TokenError::NotYetValid);
        }
        if claims.iss.as_deref() != Some(ISSUER) {
            return Err(TokenError::WrongIssuer);
        }
        match &claims.aud {
            Some(Value::String(aud)) if **aud == *self.app_id => {}
            Some(Value::String(_) | Value::Null) | None => return Err(TokenError::WrongAudience),
            Some(_) => return Err(TokenError::AudienceNotAString),
        }
        let user_id = claims.sub.as_deref().filter(|sub| is_user_id(sub)).ok_or(TokenError::BadSubject)?;
        Ok((user_id, exp + self.leeway))
    }

    fn remember(&self, token: &str, identity: &Arc<Identity>, until_unix: f64) {
        // Negative (already expired) or absurd durations are not remembered at all.
        let Ok(left) = Duration::try_from_secs_f64(until_unix - unix_now()) else {
            return;
        };
        let left = left.min(MAX_CACHED_FOR);
        let Some(until) = Instant::now().checked_add(left).filter(|_| !left.is_zero()) else {
            return;
        };
        self.cache.insert(token, identity.clone(), until);
    }
}

/// Sweeps expired entries (and so the gauge) when no traffic does; ends with the verifier.
async fn sweep(verifier: Weak<UserTokenVerifier>) {
    loop {
        tokio::time::sleep(CACHE_SWEEP_INTERVAL).await;
        match verifier.upgrade() {
            Some(v) => v.cache.sweep(),
            None => return,
        }
    }
}

/// A base64url JSON part of the token.
fn decode_part<T: DeserializeOwned>(part: &str) -> Result<T, TokenError> {
    let json = URL_SAFE_NO_PAD.decode(part).map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)
}

/// `user_` and then visible ASCII: a Whop user id that is safe in a header and in logs.
fn is_user_id(sub: &str) -> bool {
    sub.len() <= MAX_USER_ID_LEN
        && sub
            .strip_prefix(USER_ID_PREFIX)
            .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_graphic()))
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::hmac;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    use base64::engine::general_purpose::STANDARD;
    use futures_util::future::join_all;
    use http::HeaderValue;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::json;

    use super::*;
    use whopgate_mock::{DEFAULT_KEY_PEM, DEFAULT_KID, EndpointKind, MockState, MockWhop, TokenOptions};

    const USER: &str = "user_alice";

    struct Fixture {
        mock: MockWhop,
        metrics: Arc<Metrics>,
        verifier: Arc<UserTokenVerifier>,
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder().no_proxy().build().unwrap()
    }

    fn config(jwks_url: Option<&str>) -> UserTokenConfig {
        UserTokenConfig { jwks_url: jwks_url.map(|u| u.parse().unwrap()), ..UserTokenConfig::default() }
    }

    fn verifier(config: &UserTokenConfig, metrics: &Arc<Metrics>, options: KeySetOptions) -> Arc<UserTokenVerifier> {
        let app_id = MockState::default().app_id;
        UserTokenVerifier::with_options(config, &app_id, client(), metrics.clone(), Handle::current(), 10_000, options)
            .unwrap()
    }

    /// A mock and a verifier on its JWKS, keys loaded.
    async fn fixture_with(config: impl FnOnce(&MockWhop) -> UserTokenConfig, options: KeySetOptions) -> Fixture {
        let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default()).unwrap();
        let metrics = Arc::new(Metrics::new());
        let verifier = verifier(&config(&mock), &metrics, options);
        verifier.keys_loaded().await;
        Fixture { mock, metrics, verifier }
    }

    async fn fixture() -> Fixture {
        fixture_with(|mock| config(Some(&mock.jwks_url())), KeySetOptions::default()).await
    }

    impl Fixture {
        fn token(&self, options: TokenOptions) -> String {
            self.mock.mint_token_with(USER, options).unwrap()
        }

        fn jwks_calls(&self) -> usize {
            self.mock.calls(EndpointKind::Jwks)
        }

        fn cache_count(&self, result: &str) -> u64 {
            self.metrics.cache_requests.with_label_values(&["token", result]).get()
        }
    }

    fn now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Claims as the mock's app proxy would sign them.
    fn good_claims() -> Value {
        json!({"iss": ISSUER, "sub": USER, "aud": MockState::default().app_id, "iat": now(), "exp": now() + 3600})
    }

    fn mock_key() -> EcdsaKeyPair {
        let b64: String = DEFAULT_KEY_PEM.lines().filter(|l| !l.starts_with("-----")).collect();
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &STANDARD.decode(b64).unwrap()).unwrap()
    }

    /// `header.claims.signature` from raw JSON texts, signed (ES256) by `key`.
    fn sign_raw(key: &EcdsaKeyPair, header: &str, claims: &str) -> String {
        let input = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
        let signature = key.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", b64(signature.as_ref()))
    }

    /// A token signed by the mock's key, with the mock's kid, and these claims.
    fn signed(claims: &Value) -> String {
        sign_raw(
            &mock_key(),
            &json!({"alg": "ES256", "typ": "JWT", "kid": DEFAULT_KID}).to_string(),
            &claims.to_string(),
        )
    }

    fn with_claim(name: &str, value: Value) -> Value {
        let mut claims = good_claims();
        claims[name] = value;
        claims
    }

    fn without_claim(name: &str) -> Value {
        let mut claims = good_claims();
        claims.as_object_mut().unwrap().remove(name);
        claims
    }

    fn unsigned(header: Value, claims: &Value, signature: &[u8]) -> String {
        format!("{}.{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()), b64(signature))
    }

    fn closed_port_url() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        format!("http://{addr}/.well-known/jwks.json")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_valid_token_names_its_user() {
        let f = fixture().await;
        let token = f.mock.mint_token(USER).unwrap();
        let identity = f.verifier.verify(&token).await.unwrap();
        assert_eq!(&*identity.user_id, USER);
        assert_eq!(identity.headers.user_id(), USER);
        assert_eq!(identity.source, Source::UserToken);
        assert!(identity.name.is_none() && identity.email.is_none());
        let other = f.mock.mint_token("user_bob").unwrap();
        match f.verifier.verify_now(other.as_bytes()) {
            Verification::Valid(identity) => assert_eq!(&*identity.user_id, "user_bob"),
            v => panic!("{v:?}"),
        }
        assert_eq!(f.jwks_calls(), 1);
        assert_eq!(f.verifier.header(), "x-whop-user-token");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_broken_token_is_refused_with_its_reason() {
        use TokenError::*;
        let f = fixture().await;
        let pem = f.mock.public_key_pem().unwrap();
        let claims = good_claims();
        let kid_header = |alg: &str| json!({"alg": alg, "typ": "JWT", "kid": DEFAULT_KID});

        let mut hs256_header = Header::new(Algorithm::HS256);
        hs256_header.kid = Some(DEFAULT_KID.to_owned());
        let hs256_with_public_key =
            jsonwebtoken::encode(&hs256_header, &claims, &EncodingKey::from_secret(pem.as_bytes())).unwrap();
        // The same trick under an ES256 header: the HMAC is no ECDSA signature.
        let es256_header_hmac_signature = {
            let input =
                format!("{}.{}", b64(kid_header("ES256").to_string().as_bytes()), b64(claims.to_string().as_bytes()));
            let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, pem.as_bytes()), input.as_bytes());
            format!("{input}.{}", b64(tag.as_ref()))
        };
        let valid = f.mock.mint_token(USER).unwrap();
        let key = mock_key();
        // A key of the caller's own, offered in the header: never trusted, never fetched.
        let own = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let point = aws_lc_rs::signature::KeyPair::public_key(&own).as_ref().to_vec();
        let own_jwk = json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..65])});

        let cases: Vec<(&str, String, TokenError)> = vec![
            ("signed by a key not in the JWKS", f.token(TokenOptions::foreign_key()), BadSignature),
            ("expired", f.token(TokenOptions::expired()), Expired),
            ("another issuer", f.token(TokenOptions::issuer("urn:someone:else")), WrongIssuer),
            ("another app", f.token(TokenOptions::audience("app_someoneelse01")), WrongAudience),
            (
                "aud as an array holding the app",
                f.token(TokenOptions::audience_array([MockState::default().app_id])),
                AudienceNotAString,
            ),
            ("alg none", unsigned(json!({"alg": "none", "typ": "JWT"}), &claims, b""), UnsupportedAlgorithm),
            ("alg none with a kid", unsigned(kid_header("none"), &claims, b""), UnsupportedAlgorithm),
            ("HS256 keyed with the public key PEM", hs256_with_public_key, UnsupportedAlgorithm),
            ("ES256 header over an HMAC", es256_header_hmac_signature, BadSignature),
            ("RS256", unsigned(kid_header("RS256"), &claims, &[7; 256]), UnsupportedAlgorithm),
            ("ES384", unsigned(kid_header("ES384"), &claims, &[7; 96]), UnsupportedAlgorithm),
            ("es256 in lower case", unsigned(kid_header("es256"), &claims, &[7; 64]), UnsupportedAlgorithm),
            ("no alg", unsigned(json!({"kid": DEFAULT_KID}), &claims, &[7; 64]), Malformed),
            (
                "crit header",
                sign_raw(&key, r#"{"alg":"ES256","kid":"mock-key-1","crit":["b64"],"b64":false}"#, &claims.to_string()),
                Malformed,
            ),
            ("garbage signature", unsigned(kid_header("ES256"), &claims, &[7; 64]), BadSignature),
            ("short signature", unsigned(kid_header("ES256"), &claims, &[7; 32]), BadSignature),
            (
                "truncated in the signature",
                // 84 of 86 characters: whole base64 quanta, 63 bytes.
                valid[..valid.len() - 2].to_owned(),
                BadSignature,
            ),
            ("truncated to an invalid base64 length", valid[..valid.len() - 1].to_owned(), Malformed),
            ("truncated in the claims", valid[..valid.len() / 2].to_owned(), Malformed),
            ("signature cut off", valid[..valid.rfind('.').unwrap()].to_owned(), Malformed),
            ("a fourth part", format!("{valid}.AAAA"), Malformed),
            ("garbage", "definitely not a token".to_owned(), Malformed),
            ("three garbage parts", "a.b.c".to_owned(), Malformed),
            ("empty", String::new(), Malformed),
            ("too long", format!("{valid}{}", "A".repeat(MAX_TOKEN_LEN)), Malformed),
            ("no exp", signed(&without_claim("exp")), MissingExpiry),
            ("exp as a string", signed(&with_claim("exp", json!("9999999999"))), Malformed),
            ("nbf in the future", signed(&with_claim("nbf", json!(now() + 600))), NotYetValid),
            ("iat in the future", signed(&with_claim("iat", json!(now() + 600))), NotYetValid),
            ("no iss", signed(&without_claim("iss")), WrongIssuer),
            ("no aud", signed(&without_claim("aud")), WrongAudience),
            ("aud as a number", signed(&with_claim("aud", json!(5))), AudienceNotAString),
            (
                "aud as an array with another app",
                signed(&with_claim("aud", json!([MockState::default().app_id, "app_other"]))),
                AudienceNotAString,
            ),
            ("no sub", signed(&without_claim("sub")), BadSubject),
            ("sub not a user", signed(&with_claim("sub", json!("biz_mockcompany01"))), BadSubject),
            ("sub just the prefix", signed(&with_claim("sub", json!("user_"))), BadSubject),
            ("sub with a space", signed(&with_claim("sub", json!("user_a b"))), BadSubject),
            ("sub with a newline", signed(&with_claim("sub", json!("user_a\nx-evil: 1"))), BadSubject),
            ("sub not ASCII", signed(&with_claim("sub", json!("user_é"))), BadSubject),
            ("sub too long", signed(&with_claim("sub", json!(format!("user_{}", "a".repeat(200))))), BadSubject),
            ("sub as a number", signed(&with_claim("sub", json!(5))), Malformed),
            (
                "a claim given twice",
                sign_raw(
                    &key,
                    r#"{"alg":"ES256","kid":"mock-key-1"}"#,
                    &format!(r#"{{"sub":"user_bob",{}"#, &claims.to_string()[1..]),
                ),
                Malformed,
            ),
            (
                "signed by a key embedded in the header",
                sign_raw(&own, &json!({"alg": "ES256", "jwk": own_jwk}).to_string(), &claims.to_string()),
                BadSignature,
            ),
            (
                "signed by a key at a jku",
                sign_raw(
                    &own,
                    &json!({"alg": "ES256", "kid": DEFAULT_KID, "jku": f.mock.jwks_url()}).to_string(),
                    &claims.to_string(),
                ),
                BadSignature,
            ),
            ("claims not JSON", sign_raw(&key, r#"{"alg":"ES256","kid":"mock-key-1"}"#, "user_alice"), Malformed),
        ];
        for (what, token, expected) in &cases {
            match f.verifier.verify_now(token.as_bytes()) {
                Verification::Invalid(e) => assert_eq!(e, *expected, "{what}"),
                v => panic!("{what}: {v:?}"),
            }
            assert_eq!(f.verifier.verify(token).await.err(), Some(*expected), "{what}");
        }
        // None of these needed the JWKS again, and none was remembered.
        assert_eq!(f.jwks_calls(), 1);
        assert_eq!(f.verifier.cached_tokens(), 0);
        assert_eq!(f.cache_count("hit"), 0);
        // The controls: the hand-made tokens do verify when nothing is broken.
        assert!(f.verifier.verify(&signed(&good_claims())).await.is_ok());
        assert!(f.verifier.verify(&signed(&with_claim("nbf", json!(now())))).await.is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_leeway_covers_clock_skew_and_no_more() {
        let f = fixture_with(
            |mock| UserTokenConfig { leeway: Duration::from_secs(2 * 3600), ..config(Some(&mock.jwks_url())) },
            KeySetOptions::default(),
        )
        .await;
        // Expired an hour ago: inside a two-hour leeway.
        assert!(f.verifier.verify(&f.token(TokenOptions::expired())).await.is_ok());
        assert!(f.verifier.verify(&signed(&with_claim("iat", json!(now() + 600)))).await.is_ok());
        assert_eq!(
            f.verifier.verify(&signed(&with_claim("exp", json!(now() - 3 * 3600)))).await.err(),
            Some(TokenError::Expired)
        );
        assert_eq!(
            f.verifier.verify(&signed(&with_claim("nbf", json!(now() + 3 * 3600)))).await.err(),
            Some(TokenError::NotYetValid)
        );

        let strict = fixture_with(
            |mock| UserTokenConfig { leeway: Duration::ZERO, ..config(Some(&mock.jwks_url())) },
            KeySetOptions::default(),
        )
        .await;
        let just_expired = signed(&with_claim("exp", json!(now() - 2)));
        assert_eq!(strict.verifier.verify(&just_expired).await.err(), Some(TokenError::Expired));
        assert!(f.verifier.verify(&just_expired).await.is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_token_without_kid_is_tried_with_every_key() {
        let f = fixture().await;
        let token = f.token(TokenOptions::without_kid());
        assert_eq!(&*f.verifier.verify(&token).await.unwrap().user_id, USER);

        // No key verifies it: a bad signature, and no refetch (a kid-less token names no key to fetch).
        let foreign = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let forged = sign_raw(&foreign, r#"{"alg":"ES256","typ":"JWT"}"#, &good_claims().to_string());
        assert_eq!(f.verifier.verify(&forged).await.err(), Some(TokenError::BadSignature));
        assert_eq!(f.jwks_calls(), 1);

        // Without a JWKS, a configured public key verifies kid-less tokens and kid'd ones alike.
        let metrics = Arc::new(Metrics::new());
        let keys_only = verifier(
            &UserTokenConfig { public_keys: vec![f.mock.public_key_pem().unwrap()], ..config(None) },
            &metrics,
            KeySetOptions::default(),
        );
        assert!(keys_only.keys_are_loaded());
        assert!(keys_only.verify(&f.token(TokenOptions::without_kid())).await.is_ok());
        assert!(keys_only.verify(&f.mock.mint_token(USER).unwrap()).await.is_ok());
        let forged_kid = sign_raw(&foreign, r#"{"alg":"ES256","kid":"k9"}"#, &good_claims().to_string());
        assert!(matches!(keys_only.verify_now(forged_kid.as_bytes()), Verification::Invalid(TokenError::UnknownKey)));
        assert_eq!(f.jwks_calls(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rotated_key_is_accepted_after_exactly_one_refetch() {
        let f = fixture().await;
        assert_eq!(f.jwks_calls(), 1);
        let before = f.mock.mint_token(USER).unwrap();
        assert!(f.verifier.verify(&before).await.is_ok());

        let kid = f.mock.rotate_key(true).unwrap();
        let after = f.mock.mint_token("user_bob").unwrap();
        assert!(matches!(f.verifier.verify_now(after.as_bytes()), Verification::UnknownKey));
        assert_eq!(f.jwks_calls(), 1, "verify_now does no I/O");
        assert_eq!(&*f.verifier.verify(&after).await.unwrap().user_id, "user_bob");
        assert_eq!(f.jwks_calls(), 2);
        assert_eq!(f.verifier.keys().jwks_kids(), [kid]);

        // More tokens of the new key need nothing more.
        assert!(f.verifier.verify(&f.mock.mint_token("user_carol").unwrap()).await.is_ok());
        // The token verified before the rotation stays good until its exp (it is remembered)…
        assert!(f.verifier.verify(&before).await.is_ok());
        // …but a new token of the withdrawn key names a kid the JWKS no longer has; asking again
        // so soon is rate-limited.
        let withdrawn = f.token(TokenOptions::signed_with(DEFAULT_KID));
        assert_eq!(f.verifier.verify(&withdrawn).await.err(), Some(TokenError::UnknownKey));
        assert_eq!(f.jwks_calls(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_of_unknown_kids_refetches_at_most_once_per_interval() {
        let interval = Duration::from_millis(500);
        let options = KeySetOptions { min_refetch_interval: interval, ..KeySetOptions::default() };
        let f = fixture_with(|mock| config(Some(&mock.jwks_url())), options).await;
        f.mock.reset_calls();
        let flood = |wave: usize| -> Vec<String> {
            (0..1000).map(|i| f.token(TokenOptions::with_kid(format!("unknown-{wave}-{i}")))).collect()
        };
        let verify_all = |tokens: Vec<String>| {
            join_all(tokens.into_iter().map(|token| {
                let verifier = f.verifier.clone();
                tokio::spawn(async move { verifier.verify(&token).await })
            }))
        };

        let (first, second) = (flood(0), flood(1));
        let started = Instant::now();
        for result in verify_all(first).await {
            assert_eq!(result.unwrap().err(), Some(TokenError::UnknownKey));
        }
        assert_eq!(f.jwks_calls(), 1);
        let mid = started.elapsed();
        for result in verify_all(second).await {
            assert_eq!(result.unwrap().err(), Some(TokenError::UnknownKey));
        }
        if started.elapsed() < interval {
            assert_eq!(f.jwks_calls(), 1, "a second wave within the interval fetches nothing");
        }
        tokio::time::sleep(interval).await;
        for result in verify_all(flood(2)).await {
            assert_eq!(result.unwrap().err(), Some(TokenError::UnknownKey));
        }
        let elapsed = started.elapsed();
        let calls = f.jwks_calls();
        assert!(calls >= 2, "the third wave came after the interval: {calls}");
        assert!(f.mock.max_calls_in_window(EndpointKind::Jwks, interval) <= 1);
        assert!(
            calls as u128 <= 1 + elapsed.as_millis() / interval.as_millis(),
            "{calls} fetches in {elapsed:?} (first wave {mid:?})"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreachable_jwks_leaves_the_static_keys_working() {
        let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default()).unwrap();
        let metrics = Arc::new(Metrics::new());
        let config =
            UserTokenConfig { public_keys: vec![mock.public_key_pem().unwrap()], ..config(Some(&closed_port_url())) };
        let verifier = verifier(&config, &metrics, KeySetOptions::default());
        tokio::time::timeout(Duration::from_secs(10), verifier.keys_loaded()).await.unwrap();
        assert!(verifier.keys_are_loaded());
        assert!(verifier.keys().jwks_kids().is_empty());
        // The built-in Whop key and the configured one.
        assert_eq!(verifier.keys().static_key_count(), 2);
        assert!(verifier.verify(&mock.mint_token(USER).unwrap()).await.is_ok());
        let no_kid = mock.mint_token_with(USER, TokenOptions::without_kid()).unwrap();
        assert!(verifier.verify(&no_kid).await.is_ok());
        let foreign = mock.mint_token_with(USER, TokenOptions::with_kid("elsewhere")).unwrap();
        assert!(verifier.verify(&foreign).await.is_ok(), "the configured key made it, whatever its kid");
        assert_eq!(metrics.whop_api_requests.with_label_values(&["jwks", "error"]).get(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_repeated_token_is_a_cache_hit() {
        let f = fixture().await;
        let token = f.mock.mint_token(USER).unwrap();
        let first = f.verifier.verify(&token).await.unwrap();
        assert_eq!((f.cache_count("miss"), f.cache_count("hit")), (1, 0));
        let second = f.verifier.verify(&token).await.unwrap();
        // The remembered identity (this thread's own copy of it), not a new check.
        assert_eq!(
            (&*first.user_id, first.headers.user_id(), first.source),
            (&*second.user_id, second.headers.user_id(), second.source)
        );
        assert!(!Arc::ptr_eq(&first.user_id, &second.user_id), "the thread's copy shares no allocation");
        assert!(matches!(f.verifier.verify_now(token.as_bytes()), Verification::Valid(_)));
        assert_eq!((f.cache_count("miss"), f.cache_count("hit")), (1, 2));
        assert_eq!(f.verifier.cached_tokens(), 1);
        assert_eq!(f.metrics.cache_entries("token").get(), 1);
        // Another token of the same user is another entry.
        f.verifier.verify(&f.mock.mint_token(USER).unwrap()).await.unwrap();
        assert_eq!(f.verifier.cached_tokens(), 2);
        assert_eq!(f.metrics.cache_entries("token").get(), 2);
        // A verifier that goes (a reload) takes its entries off the gauge.
        let Fixture { metrics, verifier, .. } = f;
        drop(verifier);
        assert_eq!(metrics.cache_entries("token").get(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_remembered_token_is_forgotten_at_its_exp() {
        let f = fixture_with(
            |mock| UserTokenConfig { leeway: Duration::ZERO, ..config(Some(&mock.jwks_url())) },
            KeySetOptions::default(),
        )
        .await;
        let exp = now() + 2;
        let token = signed(&with_claim("exp", json!(exp)));
        assert!(f.verifier.verify(&token).await.is_ok());
        assert!(matches!(f.verifier.verify_now(token.as_bytes()), Verification::Valid(_)));
        assert_eq!(f.cache_count("hit"), 1);
        assert_eq!(f.verifier.cached_tokens(), 1);
        while now() <= exp {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Never served past its exp…
        assert!(matches!(f.verifier.verify_now(token.as_bytes()), Verification::Invalid(TokenError::Expired)));
        // …and gone from the count once the cache's timer wheel (about 1 s per tick) gets there.
        let deadline = Instant::now() + Duration::from_secs(5);
        while f.verifier.cached_tokens() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(f.verifier.cached_tokens(), 0);
        assert_eq!(f.metrics.cache_entries("token").get(), 0);
        assert!(matches!(f.verifier.verify_now(token.as_bytes()), Verification::Invalid(TokenError::Expired)));
        assert_eq!(f.cache_count("hit"), 1);
    }

    #[tokio::test]
    async fn the_token_comes_from_the_header_or_the_dev_query_parameter() {
        let metrics = Arc::new(Metrics::new());
        let plain = verifier(&config(None), &metrics, KeySetOptions::default());
        let dev =
            verifier(&UserTokenConfig { accept_query_param: true, ..config(None) }, &metrics, KeySetOptions::default());
        let custom = verifier(
            &UserTokenConfig { header: HeaderName::from_static("x-token"), ..config(None) },
            &metrics,
            KeySetOptions::default(),
        );
        let mut headers = HeaderMap::new();
        let none = HeaderMap::new();
        headers.insert("x-whop-user-token", HeaderValue::from_static("eyJ.header.token"));
        let query = Some("a=1&whop-dev-user-token=eyJ.query%2Etoken&b=2");

        assert_eq!(plain.find_token(&headers, None).as_deref(), Some(&b"eyJ.header.token"[..]));
        assert_eq!(plain.find_token(&none, query), None, "the query is read only when enabled");
        assert_eq!(custom.find_token(&headers, None), None);
        assert_eq!(dev.find_token(&headers, query).as_deref(), Some(&b"eyJ.header.token"[..]), "the header wins");
        assert_eq!(dev.find_token(&none, query).as_deref(), Some(&b"eyJ.query.token"[..]));
        assert_eq!(dev.find_token(&none, Some("whop-dev-user-token=a.b.c")).as_deref(), Some(&b"a.b.c"[..]));
        assert_eq!(dev.find_token(&none, Some("xwhop-dev-user-token=a.b.c")), None);
        assert_eq!(dev.find_token(&none, Some("a=1")), None);
        assert_eq!(dev.find_token(&none, None), None);

        // Present but unusable: an empty token, which is refused rather than passed over.
        let bad = [
            dev.find_token(&none, Some("whop-dev-user-token")),
            dev.find_token(&none, Some("whop-dev-user-token=a&whop-dev-user-token=b")),
        ];
        for found in bad {
            assert_eq!(found.as_deref(), Some(&b""[..]));
        }
        // Not text: found as it is, and refused as malformed.
        let not_text = dev.find_token(&none, Some("whop-dev-user-token=%FF%FE"));
        assert_eq!(not_text.as_deref(), Some(&b"\xff\xfe"[..]));
        assert!(matches!(dev.verify_now(b"\xff\xfe"), Verification::Invalid(TokenError::Malformed)));
        let mut twice = HeaderMap::new();
        twice.append("x-whop-user-token", HeaderValue::from_static("a.b.c"));
        twice.append("x-whop-user-token", HeaderValue::from_static("d.e.f"));
        assert_eq!(plain.find_token(&twice, None).as_deref(), Some(&b""[..]));
        let mut opaque = HeaderMap::new();
        opaque.insert("x-whop-user-token", HeaderValue::from_bytes(b"a.b\xff.c").unwrap());
        assert_eq!(plain.find_token(&opaque, None).as_deref(), Some(&b"a.b\xff.c"[..]));
        assert!(matches!(plain.verify_now(b"a.b\xff.c"), Verification::Invalid(TokenError::Malformed)));
        assert!(matches!(plain.verify_now(b""), Verification::Invalid(TokenError::Malformed)));
    }

    #[tokio::test]
    async fn stripping_the_dev_parameter_keeps_the_rest_of_the_query() {
        let metrics = Arc::new(Metrics::new());
        let v = verifier(&config(None), &metrics, KeySetOptions::default());
        let cases = [
            ("a=1&b=2", None),
            ("whop-dev-user-token-ish=1", Some("whop-dev-user-token-ish=1")),
            ("whop-dev-user-token=x", Some("")),
            ("whop-dev-user-token", Some("")),
            ("a=1&whop-dev-user-token=x.y.z&b=%20two&c", Some("a=1&b=%20two&c")),
            ("whop-dev-user-token=x&a=1", Some("a=1")),
            ("a=1&whop-dev-user-token=x", Some("a=1")),
            ("a=1&&whop-dev-user-token=x&b=2&whop-dev-user-token=y", Some("a=1&&b=2")),
            ("q=whop-dev-user-token", Some("q=whop-dev-user-token")),
        ];
        for (query, expected) in cases {
            let stripped = v.strip_query_param(query);
            // The two "-ish" cases mention the name but carry no such parameter: nothing changes.
            let expected = expected.filter(|e| *e != query).map(str::to_owned);
            assert_eq!(stripped, expected, "{query}");
        }
    }

    #[tokio::test]
    async fn errors_never_show_tokens_or_keys() {
        let token = signed(&good_claims());
        let all = [
            TokenError::Malformed,
            TokenError::UnsupportedAlgorithm,
            TokenError::BadSignature,
            TokenError::UnknownKey,
            TokenError::Expired,
            TokenError::MissingExpiry,
            TokenError::NotYetValid,
            TokenError::WrongIssuer,
            TokenError::WrongAudience,
            TokenError::AudienceNotAString,
            TokenError::BadSubject,
        ];
        for e in all {
            let text = format!("{e} {e:?} {:?} {}", Verification::Invalid(e), e.as_str());
            assert!(text.starts_with("the user token"), "{text}");
            assert!(!text.contains("eyJ") && !text.contains(&token[token.len() - 20..]), "{text}");
        }

        let metrics = Arc::new(Metrics::new());
        let secret_body = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEc2VjcmV0";
        let config = UserTokenConfig {
            public_keys: vec![format!("-----BEGIN PUBLIC KEY-----\n{secret_body}\n-----END PUBLIC KEY-----\n")],
            ..config(None)
        };
        let err =
            UserTokenVerifier::new(&config, "app_x", client(), metrics.clone(), Handle::current(), 10).err().unwrap();
        assert_eq!(err, UserTokenSetupError::InvalidPublicKey(InvalidPublicKey { index: 0 }));
        let text = format!("{err} {err:?}");
        assert!(text.contains("public_keys[0]") && !text.contains(secret_body), "{text}");
        let err = UserTokenVerifier::new(&self::config(None), "", client(), metrics.clone(), Handle::current(), 10)
            .err()
            .unwrap();
        assert_eq!(err, UserTokenSetupError::MissingAppId);

        // A verifier holding a token shows neither it nor its parts.
        let pem = MockState::default().resolve().unwrap().public_key_pem(DEFAULT_KID).unwrap();
        let config = UserTokenConfig { public_keys: vec![pem], ..self::config(None) };
        let v = verifier(&config, &metrics, KeySetOptions::default());
        assert!(v.verify(&token).await.is_ok());
        let text = format!("{v:?}");
        assert!(text.contains("cached_tokens") && !text.contains("eyJ"), "{text}");
    }
}
