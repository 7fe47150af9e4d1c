//! [`Identifier`]: tries the configured identity sources in order on a request.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use http::Request;

use super::Identity;
use super::license_key::{LicenseKeyError, LicenseKeyVerifier};
use super::session::{SessionCodec, SessionError};
use super::user_token::{TokenError, UserTokenVerifier, Verification};
use crate::config::SourceKind;

/// What the sources found, without waiting on anything.
#[derive(Debug)]
pub enum Identified {
    /// No source found a credential.
    Anonymous,
    /// A credential checked out.
    Found(Arc<Identity>),
    /// A credential is present and bad: answered 401, never passed to a weaker source.
    Invalid(CredentialError),
    /// A credential needs I/O to check (a user token signed by a key not fetched yet).
    Later(Credential),
}

/// A credential waiting for I/O to be checked. Its `Debug` never shows the credential.
pub enum Credential {
    /// A user token whose `kid` is not in the key set yet.
    UserToken(String),
    /// A license key: Whop's memberships say whose it is (cached).
    LicenseKey(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::UserToken(_) => f.write_str("UserToken(***)"),
            Credential::LicenseKey(_) => f.write_str("LicenseKey(***)"),
        }
    }
}

/// Why a credential that was present is refused. Each source's reasons are typed; `Display` is
/// a sentence safe to show the client (it never contains the credential).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialError {
    /// The Whop user token is invalid.
    UserToken(TokenError),
    /// The license key is unknown, not valid, or could not be checked.
    LicenseKey(LicenseKeyError),
    /// The session cookie was tampered with, made with another secret, or expired.
    Session(SessionError),
}

impl CredentialError {
    /// A short machine-readable reason for the access log.
    pub fn reason(&self) -> &'static str {
        match self {
            CredentialError::UserToken(_) => "invalid_user_token",
            CredentialError::LicenseKey(LicenseKeyError::Unknown) => "unknown_license_key",
            CredentialError::LicenseKey(LicenseKeyError::NotValid { .. }) => "license_not_valid",
            CredentialError::LicenseKey(LicenseKeyError::Unavailable(_)) => "license_check_unavailable",
            CredentialError::Session(SessionError::Expired) => "session_expired",
            CredentialError::Session(_) => "invalid_session",
        }
    }
}

impl fmt::Display for CredentialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialError::UserToken(e) => write!(f, "{e}"),
            CredentialError::LicenseKey(e) => write!(f, "{e}"),
            CredentialError::Session(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for CredentialError {}

/// The identity sources of a gate, in `identity.sources` order.
#[derive(Debug)]
pub struct Identifier {
    order: Vec<SourceKind>,
    user_token: Option<Arc<UserTokenVerifier>>,
    license_key: Option<Arc<LicenseKeyVerifier>>,
    session: Option<Arc<SessionCodec>>,
    dev: Option<Arc<Identity>>,
}

/// The sources an [`Identifier`] may use; each is tried only if it is also in the order.
#[derive(Debug, Default)]
pub struct Sources {
    /// Verifies Whop user tokens.
    pub user_token: Option<Arc<UserTokenVerifier>>,
    /// Looks up license keys.
    pub license_key: Option<Arc<LicenseKeyVerifier>>,
    /// Opens session cookies.
    pub session: Option<Arc<SessionCodec>>,
    /// The fixed development identity.
    pub dev: Option<Arc<Identity>>,
}

impl Identifier {
    /// Tries `sources` in `order`.
    pub fn new(order: Vec<SourceKind>, sources: Sources) -> Self {
        Self {
            order,
            user_token: sources.user_token,
            license_key: sources.license_key,
            session: sources.session,
            dev: sources.dev,
        }
    }

    /// Identifies the caller as far as possible without I/O.
    pub fn identify_now<B>(&self, req: &Request<B>) -> Identified {
        self.identify_at(req, Instant::now())
    }

    /// [`Identifier::identify_now`] with the clock already read: `now` is when the request
    /// arrived.
    pub fn identify_at<B>(&self, req: &Request<B>, now: Instant) -> Identified {
        for source in &self.order {
            match source {
                SourceKind::UserToken => {
                    let Some(verifier) = &self.user_token else { continue };
                    let Some(token) = verifier.find_token(req.headers(), req.uri().query()) else {
                        continue;
                    };
                    return match verifier.verify_at(&token, now) {
                        Verification::Valid(identity) => Identified::Found(identity),
                        Verification::Invalid(e) => Identified::Invalid(CredentialError::UserToken(e)),
                        // `verify_now` only says so of a token that is text.
                        Verification::UnknownKey => {
                            Identified::Later(Credential::UserToken(String::from_utf8_lossy(&token).into_owned()))
                        }
                    };
                }
                SourceKind::LicenseKey => {
                    let Some(verifier) = &self.license_key else { continue };
                    if let Some(key) = verifier.find_key(req.headers()) {
                        return Identified::Later(Credential::LicenseKey(key.to_owned()));
                    }
                }
                SourceKind::Dev => {
                    if let Some(identity) = &self.dev {
                        return Identified::Found(identity.clone());
                    }
                }
                SourceKind::Session => {
                    let Some(codec) = &self.session else { continue };
                    match codec.read_session(req.headers()) {
                        None => continue,
                        Some(Ok(session)) => match session.identity() {
                            Some(identity) => return Identified::Found(Arc::new(identity)),
                            None => return Identified::Invalid(CredentialError::Session(SessionError::Invalid)),
                        },
                        Some(Err(e)) => return Identified::Invalid(CredentialError::Session(e)),
                    }
                }
            }
        }
        Identified::Anonymous
    }

    /// Finishes checking a credential that needed I/O.
    pub async fn identify_later(&self, credential: Credential) -> Result<Arc<Identity>, CredentialError> {
        match credential {
            Credential::UserToken(token) => match &self.user_token {
                Some(verifier) => verifier.verify(&token).await.map_err(CredentialError::UserToken),
                None => Err(CredentialError::UserToken(TokenError::UnknownKey)),
            },
            Credential::LicenseKey(key) => match &self.license_key {
                Some(verifier) => verifier.verify(&key).await.map_err(CredentialError::LicenseKey),
                None => Err(CredentialError::LicenseKey(LicenseKeyError::Unknown)),
            },
        }
    }

    /// The request's query with credentials that must not reach the upstream removed (the
    /// localhost-mode `whop-dev-user-token`), or `None` when there is nothing to remove.
    pub fn strip_query(&self, query: &str) -> Option<String> {
        self.user_token.as_ref().and_then(|v| v.strip_query_param(query))
    }

    /// License keys cached, when the license-key source is on.
    pub fn license_entries(&self) -> Option<u64> {
        self.license_key.as_ref().map(|v| v.entry_count())
    }

    /// The session codec, when the session source is on.
    pub fn session(&self) -> Option<&Arc<SessionCodec>> {
        self.session.as_ref()
    }

    /// Forgets what the sources cached about `user_id` (their license keys).
    pub fn invalidate_user(&self, user_id: &str) {
        if let Some(v) = &self.license_key {
            v.invalidate_user(user_id);
        }
    }

    /// Forgets what the sources cached about everyone (after missed invalidations).
    pub fn forget_everyone(&self) {
        if let Some(v) = &self.license_key {
            v.forget_everyone();
        }
    }

    /// Resolves once the keys every source needs are loaded (the first JWKS fetch is done).
    pub async fn keys_loaded(&self) {
        if let Some(v) = &self.user_token {
            v.keys_loaded().await;
        }
    }
}
