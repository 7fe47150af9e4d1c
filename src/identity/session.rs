//! "Sign in with Whop" cookies (SPEC §3 `[identity.session]`, §5): the session cookie, the
//! short-lived login-state cookie that carries a login from `/login` to `/callback`, reading and
//! removing them from requests, and the PKCE and randomness helpers of that flow.
//!
//! # Formats
//!
//! Both cookies are sealed the same way, each with its own key:
//!
//! ```text
//! value = base64url-nopad( 0x01 || nonce[12] || AES-256-GCM(plaintext) || tag[16] )
//! associated data = 0x01 || cookie name
//! ```
//!
//! so a value is confidential, cannot be altered, and cannot be replayed under another cookie
//! name (or as the other kind of cookie: the keys differ). The plaintext is a compact binary
//! record (varint integers, length-prefixed UTF-8):
//!
//! - session: `issued_at, expires_at, user_id, name?, email?`. A value is about 115 characters
//!   for a typical user (name and email of some 15 characters each), at most about 760 with the
//!   longest name and email kept ([`MAX_NAME_LEN`], [`MAX_EMAIL_LEN`]).
//! - login state: `created_at, state, nonce, verifier, rd`: about 240 characters with a short
//!   `rd`, under 3 KiB with the longest kept ([`MAX_LOGIN_RD_LEN`]), within browsers' 4 KiB.
//!
//! # Keys
//!
//! From each cookie secret (at least [`MIN_SECRET_LEN`] bytes) two AES-256 keys are derived with
//! HKDF-SHA256 under distinct labels, one for sessions and one for login state, so the secret
//! itself never keys anything and never serves two purposes. New cookies are sealed with the
//! current secret's keys; cookies sealed under a `previous_cookie_secrets` entry still open, which
//! is how secrets are rotated without logging everyone out.
//!
//! # Cookies
//!
//! Both are `Path=/; Secure; HttpOnly; SameSite=Lax` and host-only (no `Domain`), as the default
//! `__Host-` name requires; `Secure` is always set (browsers accept it on `http://localhost`).
//!
//! ```text
//! use std::time::Duration;
//! use whopgate::config::Secret;
//! use whopgate::identity::session::{LoginState, SessionCodec, pkce_challenge};
//!
//! let secret = Secret::new("0123456789abcdef0123456789abcdef".to_owned());
//! let codec = SessionCodec::new(&secret, &[], "__Host-whopgate", Duration::from_secs(7 * 86_400)).unwrap();
//!
//! // /login: remember the attempt in a cookie, send the browser to Whop with the challenge.
//! let login = LoginState::new("/dashboard".to_owned());
//! let challenge = pkce_challenge(&login.verifier);
//! let login_cookie = codec.seal_login(&login);
//! # let _ = challenge;
//!
//! // /callback: the `state` Whop sends back must match the cookie's.
//! let back = codec.open_login(&login_cookie, &login.state).unwrap();
//! assert_eq!(back.rd, "/dashboard");
//!
//! // Then the session itself.
//! let session = codec.new_session("user_abc123", Some("Ada"), None);
//! let value = codec.seal(&session);
//! assert_eq!(codec.open(&value).unwrap().user_id, "user_abc123");
//! let set_cookie = codec.session_cookie(&value);
//! assert!(set_cookie.to_str().unwrap().ends_with("; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=604800"));
//! ```
//!
//! (The lines above run as the test `doc_example::login_and_session_cookies`.)

mod cookie;
mod crypto;
mod wire;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use http::header::HeaderValue;
use subtle::ConstantTimeEq;

pub use self::cookie::{find_cookie, login_cookie_name, strip_cookie};
use self::crypto::KeyPair;
pub use self::crypto::{pkce_challenge, random_token};
use self::wire::{Reader, Writer};
use super::{Identity, Source};
use crate::config::{Secret, SessionConfig};

/// Shortest cookie secret accepted, in bytes (SPEC §3).
pub const MIN_SECRET_LEN: usize = 32;
/// How long a login may take from `/login` to `/callback`; also the login cookie's `Max-Age`.
pub const LOGIN_STATE_LIFETIME: Duration = Duration::from_secs(600);
/// Clock difference tolerated between the replica that sealed a cookie and the one opening it.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);
/// Longest display name kept in a session; a longer one is cut at a character boundary.
pub const MAX_NAME_LEN: usize = 256;
/// Longest email kept in a session (RFC 5321's limit). A longer one is dropped rather than cut:
/// a cut address could be somebody else's.
pub const MAX_EMAIL_LEN: usize = 254;
/// Longest `rd` kept in the login state; a longer one is replaced by `/`, so the login cookie
/// stays well under browsers' 4 KiB limit instead of being silently dropped by them.
pub const MAX_LOGIN_RD_LEN: usize = 2048;
/// Longest cookie value looked at; ours are far shorter.
const MAX_VALUE_LEN: usize = 4096;
/// Random bytes in `state`, `nonce` and the PKCE verifier: 256 bits, 43 characters each.
const TOKEN_BYTES: usize = 32;

/// A signed-in Whop user, as carried by the session cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The Whop user id (`user_…`, OIDC `sub`).
    pub user_id: String,
    /// Display name, when Whop gave one.
    pub name: Option<String>,
    /// Email, when Whop gave one.
    pub email: Option<String>,
    /// When the session began (unix seconds).
    pub issued_at: u64,
    /// When it ends (unix seconds).
    pub expires_at: u64,
}

impl Session {
    /// The caller's identity (source `session`); `None` if the user id cannot be a header value.
    pub fn identity(&self) -> Option<Identity> {
        let mut identity = Identity::new(&self.user_id, Source::Session)?;
        identity.name = self.name.as_deref().map(Arc::from);
        identity.email = self.email.as_deref().map(Arc::from);
        Some(identity)
    }
}

/// A login in progress, from `/login` to `/callback`. `Debug` hides the secrets it holds.
#[derive(Clone, PartialEq, Eq)]
pub struct LoginState {
    /// OAuth `state`: `/callback` must receive the same value (CSRF protection).
    pub state: String,
    /// OIDC `nonce`: the ID token must carry the same value.
    pub nonce: String,
    /// PKCE `code_verifier`; Whop gets [`pkce_challenge`] of it.
    pub verifier: String,
    /// Where to go after signing in; already checked with the redirect policy.
    pub rd: String,
    /// When the login began (unix seconds).
    pub created_at: u64,
}

impl LoginState {
    /// A new login to `rd` with fresh random `state`, `nonce` and verifier, starting now.
    pub fn new(rd: String) -> Self {
        LoginState {
            state: random_token(TOKEN_BYTES),
            nonce: random_token(TOKEN_BYTES),
            verifier: random_token(TOKEN_BYTES),
            rd,
            created_at: unix_now(),
        }
    }
}

impl fmt::Debug for LoginState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginState")
            .field("state", &"***")
            .field("nonce", &"***")
            .field("verifier", &"***")
            .field("rd", &self.rd)
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// Why a [`SessionCodec`] could not be built. `Display` names the setting, never a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionSetupError {
    /// A secret is shorter than [`MIN_SECRET_LEN`]. `previous` is `None` for `cookie_secret`, else
    /// the index in `previous_cookie_secrets`.
    SecretTooShort {
        /// Which secret.
        previous: Option<usize>,
        /// Its length in bytes.
        len: usize,
    },
    /// The cookie name is not an RFC 6265 token.
    InvalidCookieName,
    /// The lifetime is zero.
    ZeroLifetime,
    /// Keys could not be derived (not expected to happen).
    KeyDerivation,
}

impl fmt::Display for SessionSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionSetupError::SecretTooShort { previous: None, len } => {
                write!(f, "`identity.session.cookie_secret` is {len} bytes long; it must be at least {MIN_SECRET_LEN}")
            }
            SessionSetupError::SecretTooShort { previous: Some(i), len } => write!(
                f,
                "entry {i} of `identity.session.previous_cookie_secrets` is {len} bytes long; it must be at least {MIN_SECRET_LEN}"
            ),
            SessionSetupError::InvalidCookieName => {
                f.write_str("`identity.session.cookie_name` is not a valid cookie name")
            }
            SessionSetupError::ZeroLifetime => f.write_str("`identity.session.lifetime` must be more than 0"),
            SessionSetupError::KeyDerivation => f.write_str("could not derive the cookie keys"),
        }
    }
}

impl std::error::Error for SessionSetupError {}

/// Why a session cookie was refused. `Display` is safe to show the client: it says nothing about
/// the value or which check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionError {
    /// Not a value this site sealed (tampered, another secret, another cookie, garbage).
    Invalid,
    /// A genuine session that has ended.
    Expired,
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SessionError::Invalid => "the session cookie is not valid",
            SessionError::Expired => "the session has expired",
        })
    }
}

impl std::error::Error for SessionError {}

/// Why a login-state cookie was refused at `/callback`. `Display` is safe to show the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoginStateError {
    /// Not a value this site sealed.
    Invalid,
    /// Older than [`LOGIN_STATE_LIFETIME`].
    Expired,
    /// The `state` sent back does not match the cookie's: not the login this browser started.
    StateMismatch,
}

impl fmt::Display for LoginStateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LoginStateError::Invalid => "the sign-in attempt could not be verified; please sign in again",
            LoginStateError::Expired => "the sign-in attempt took too long; please sign in again",
            LoginStateError::StateMismatch => {
                "the sign-in response does not belong to this browser's sign-in attempt; please sign in again"
            }
        })
    }
}

impl std::error::Error for LoginStateError {}

/// Seals and opens the session and login-state cookies, and builds their `Set-Cookie` headers.
/// Build once from the config and share; `Debug` shows no key material.
#[derive(Clone)]
pub struct SessionCodec {
    /// Index 0: keys of `cookie_secret` (sealing and opening); then `previous_cookie_secrets`
    /// (opening only).
    keys: Arc<[KeyPair]>,
    cookie_name: String,
    login_cookie_name: String,
    lifetime: Duration,
    clear_session: HeaderValue,
    clear_login: HeaderValue,
}

impl fmt::Debug for SessionCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionCodec")
            .field("cookie_name", &self.cookie_name)
            .field("lifetime", &self.lifetime)
            .field("secrets", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl SessionCodec {
    /// A codec sealing with `current` and also opening what `previous` secrets sealed, for the
    /// cookie `cookie_name` (the login cookie is [`login_cookie_name`] of it) and sessions of
    /// `lifetime`.
    pub fn new(
        current: &Secret,
        previous: &[Secret],
        cookie_name: &str,
        lifetime: Duration,
    ) -> Result<Self, SessionSetupError> {
        if current.len() < MIN_SECRET_LEN {
            return Err(SessionSetupError::SecretTooShort { previous: None, len: current.len() });
        }
        if let Some((i, short)) = previous.iter().enumerate().find(|(_, s)| s.len() < MIN_SECRET_LEN) {
            return Err(SessionSetupError::SecretTooShort { previous: Some(i), len: short.len() });
        }
        if !is_cookie_name(cookie_name) {
            return Err(SessionSetupError::InvalidCookieName);
        }
        if lifetime.as_secs() == 0 {
            return Err(SessionSetupError::ZeroLifetime);
        }
        let keys = std::iter::once(current)
            .chain(previous)
            .map(|secret| KeyPair::derive(secret.expose().as_bytes()))
            .collect::<Option<Arc<[KeyPair]>>>()
            .ok_or(SessionSetupError::KeyDerivation)?;
        let login_cookie_name = login_cookie_name(cookie_name);
        let clear = |name: &str| {
            HeaderValue::from_str(&set_cookie(name, "", 0)).map_err(|_| SessionSetupError::InvalidCookieName)
        };
        Ok(SessionCodec {
            keys,
            clear_session: clear(cookie_name)?,
            clear_login: clear(&login_cookie_name)?,
            cookie_name: cookie_name.to_owned(),
            login_cookie_name,
            lifetime,
        })
    }

    /// The codec for `[identity.session]`.
    pub fn from_config(config: &SessionConfig) -> Result<Self, SessionSetupError> {
        Self::new(&config.cookie_secret, &config.previous_cookie_secrets, &config.cookie_name, config.lifetime)
    }

    #[cfg(test)]
    /// The session cookie's name.
    pub fn cookie_name(&self) -> &str {
        &self.cookie_name
    }

    #[cfg(test)]
    /// The login-state cookie's name.
    pub fn login_cookie_name(&self) -> &str {
        &self.login_cookie_name
    }

    #[cfg(test)]
    /// How long a session lasts.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// A session for `user_id` starting now and lasting [`SessionCodec::lifetime`].
    pub fn new_session(&self, user_id: &str, name: Option<&str>, email: Option<&str>) -> Session {
        let now = unix_now();
        Session {
            user_id: user_id.to_owned(),
            name: name.map(str::to_owned),
            email: email.map(str::to_owned),
            issued_at: now,
            expires_at: now.saturating_add(self.lifetime.as_secs()),
        }
    }

    /// The session cookie value for `session`, sealed with the current secret. A name longer
    /// than [`MAX_NAME_LEN`] is cut, an email longer than [`MAX_EMAIL_LEN`] left out; the user id
    /// is kept whole (Whop's are short).
    pub fn seal(&self, session: &Session) -> String {
        let name = session.name.as_deref().map(|n| truncate(n, MAX_NAME_LEN));
        let email = session.email.as_deref().filter(|e| e.len() <= MAX_EMAIL_LEN);
        let plaintext = Writer::default()
            .uint(session.issued_at)
            .uint(session.expires_at)
            .str(&session.user_id)
            .opt_str(name)
            .opt_str(email)
            .finish();
        crypto::seal(&self.current().session, self.cookie_name.as_bytes(), &plaintext)
    }

    /// The session in a session cookie value, if this site sealed it (with the current or a
    /// previous secret) for this cookie name and it has not ended. A session ends at its
    /// `expires_at`, or `lifetime` after `issued_at` if that is sooner (so shortening `lifetime`
    /// also shortens sessions already issued), give or take [`CLOCK_SKEW`].
    pub fn open(&self, value: &str) -> Result<Session, SessionError> {
        self.open_at(value, unix_now())
    }

    fn open_at(&self, value: &str, now: u64) -> Result<Session, SessionError> {
        if value.len() > MAX_VALUE_LEN {
            return Err(SessionError::Invalid);
        }
        let ciphers = self.keys.iter().map(|k| &k.session);
        let plaintext = crypto::open(ciphers, self.cookie_name.as_bytes(), value).ok_or(SessionError::Invalid)?;
        let session = decode_session(&plaintext).ok_or(SessionError::Invalid)?;
        let ends = session.expires_at.min(session.issued_at.saturating_add(self.lifetime.as_secs()));
        if now > ends.saturating_add(CLOCK_SKEW.as_secs()) {
            return Err(SessionError::Expired);
        }
        Ok(session)
    }

    /// The session cookie in `headers`: `None` when there is none, else what
    /// [`SessionCodec::open`] makes of it.
    pub fn read_session(&self, headers: &HeaderMap) -> Option<Result<Session, SessionError>> {
        find_cookie(headers, &self.cookie_name).map(|value| self.open(value))
    }

    /// `Set-Cookie` for a session cookie holding `value` (from [`SessionCodec::seal`]):
    /// `{name}={value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={lifetime}`. A `value`
    /// that is not a sealed value (characters outside base64url) yields the clearing cookie
    /// instead.
    pub fn session_cookie(&self, value: &str) -> HeaderValue {
        self.cookie_header(&self.cookie_name, value, self.lifetime.as_secs(), &self.clear_session)
    }

    /// `Set-Cookie` that removes the session cookie: same name, path and flags, `Max-Age=0`.
    pub fn clear_session_cookie(&self) -> HeaderValue {
        self.clear_session.clone()
    }

    /// The login-state cookie value for `login`. An `rd` longer than [`MAX_LOGIN_RD_LEN`] is
    /// replaced by `/`.
    pub fn seal_login(&self, login: &LoginState) -> String {
        let rd = if login.rd.len() > MAX_LOGIN_RD_LEN { "/" } else { &login.rd };
        let plaintext = Writer::default()
            .uint(login.created_at)
            .str(&login.state)
            .str(&login.nonce)
            .str(&login.verifier)
            .str(rd)
            .finish();
        crypto::seal(&self.current().login, self.login_cookie_name.as_bytes(), &plaintext)
    }

    /// The login state in a login-state cookie value, if this site sealed it, it is at most
    /// [`LOGIN_STATE_LIFETIME`] old, and its `state` equals `expected_state` (the `state` query
    /// parameter of `/callback`; compared in constant time).
    pub fn open_login(&self, value: &str, expected_state: &str) -> Result<LoginState, LoginStateError> {
        self.open_login_at(value, expected_state, unix_now())
    }

    fn open_login_at(&self, value: &str, expected_state: &str, now: u64) -> Result<LoginState, LoginStateError> {
        if value.len() > MAX_VALUE_LEN {
            return Err(LoginStateError::Invalid);
        }
        let ciphers = self.keys.iter().map(|k| &k.login);
        let plaintext =
            crypto::open(ciphers, self.login_cookie_name.as_bytes(), value).ok_or(LoginStateError::Invalid)?;
        let login = decode_login(&plaintext).ok_or(LoginStateError::Invalid)?;
        if login.created_at > now.saturating_add(CLOCK_SKEW.as_secs()) {
            return Err(LoginStateError::Invalid);
        }
        if now > login.created_at.saturating_add(LOGIN_STATE_LIFETIME.as_secs()) {
            return Err(LoginStateError::Expired);
        }
        let same: bool = login.state.as_bytes().ct_eq(expected_state.as_bytes()).into();
        if !same || expected_state.is_empty() {
            return Err(LoginStateError::StateMismatch);
        }
        Ok(login)
    }

    /// The login-state cookie in `headers`, unopened.
    pub fn find_login<'a>(&self, headers: &'a HeaderMap) -> Option<&'a str> {
        find_cookie(headers, &self.login_cookie_name)
    }

    /// `Set-Cookie` for a login-state cookie holding `value` (from [`SessionCodec::seal_login`]):
    /// `{name}-login={value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=600`. `SameSite=Lax`
    /// still sends it on the top-level redirect back from Whop.
    pub fn login_cookie(&self, value: &str) -> HeaderValue {
        self.cookie_header(&self.login_cookie_name, value, LOGIN_STATE_LIFETIME.as_secs(), &self.clear_login)
    }

    /// `Set-Cookie` that removes the login-state cookie.
    pub fn clear_login_cookie(&self) -> HeaderValue {
        self.clear_login.clone()
    }

    /// Removes both cookies from the `Cookie` header(s) before forwarding (see [`strip_cookie`]).
    pub fn strip(&self, headers: &mut HeaderMap) {
        strip_cookie(headers, &self.cookie_name);
    }

    fn current(&self) -> &KeyPair {
        // `new` always puts the current secret's keys first.
        &self.keys[0]
    }

    fn cookie_header(&self, name: &str, value: &str, max_age: u64, clear: &HeaderValue) -> HeaderValue {
        let sealed_shape =
            !value.is_empty() && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !sealed_shape {
            return clear.clone();
        }
        HeaderValue::from_str(&set_cookie(name, value, max_age)).unwrap_or_else(|_| clear.clone())
    }
}

fn set_cookie(name: &str, value: &str, max_age: u64) -> String {
    format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={max_age}")
}

/// An RFC 6265 cookie name (a token), as the config loader checks it.
fn is_cookie_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| (0x21..0x7f).contains(&b) && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

fn decode_session(plaintext: &[u8]) -> Option<Session> {
    let mut r = Reader::new(plaintext);
    let session = Session {
        issued_at: r.uint()?,
        expires_at: r.uint()?,
        user_id: r.str()?.to_owned(),
        name: r.opt_str()?.map(str::to_owned),
        email: r.opt_str()?.map(str::to_owned),
    };
    r.end()?;
    Some(session)
}

fn decode_login(plaintext: &[u8]) -> Option<LoginState> {
    let mut r = Reader::new(plaintext);
    let login = LoginState {
        created_at: r.uint()?,
        state: r.str()?.to_owned(),
        nonce: r.str()?.to_owned(),
        verifier: r.str()?.to_owned(),
        rd: r.str()?.to_owned(),
    };
    r.end()?;
    Some(login)
}

/// `s` cut to at most `max` bytes at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod doc_example {
    #[test]
    fn login_and_session_cookies() {
        use crate::config::Secret;
        use crate::identity::session::{LoginState, SessionCodec, pkce_challenge};
        use std::time::Duration;

        let secret = Secret::new("0123456789abcdef0123456789abcdef".to_owned());
        let codec = SessionCodec::new(&secret, &[], "__Host-whopgate", Duration::from_secs(7 * 86_400)).unwrap();

        // /login: remember the attempt in a cookie, send the browser to Whop with the challenge.
        let login = LoginState::new("/dashboard".to_owned());
        let challenge = pkce_challenge(&login.verifier);
        let login_cookie = codec.seal_login(&login);
        let _ = challenge;

        // /callback: the `state` Whop sends back must match the cookie's.
        let back = codec.open_login(&login_cookie, &login.state).unwrap();
        assert_eq!(back.rd, "/dashboard");

        // Then the session itself.
        let session = codec.new_session("user_abc123", Some("Ada"), None);
        let value = codec.seal(&session);
        assert_eq!(codec.open(&value).unwrap().user_id, "user_abc123");
        let set_cookie = codec.session_cookie(&value);
        assert!(set_cookie.to_str().unwrap().ends_with("; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=604800"));
    }
}
