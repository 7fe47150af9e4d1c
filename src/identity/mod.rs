//! Identification: who is calling.
//!
//! A request may carry several credentials; the configured sources (`identity.sources`) are
//! tried in order and the first that finds a credential decides. A credential that is present but
//! fails is an error at once ([`CredentialError`]): it never falls through to a weaker source.

mod identifier;
mod jwks;
mod license_key;
pub mod session;
mod user_token;

use std::fmt;
use std::sync::Arc;

use http::header::HeaderValue;

pub use identifier::{Credential, CredentialError, Identified, Identifier, Sources};
pub use license_key::{LicenseKeyError, LicenseKeyVerifier};
pub use user_token::{UserTokenSetupError, UserTokenVerifier};

/// How the caller was identified: the `x-whopgate-source` header value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// Whop's signed user token (`x-whop-user-token`), added by Whop's app proxy.
    UserToken,
    /// A "Sign in with Whop" session cookie.
    Session,
    /// A software license key.
    LicenseKey,
    /// The fixed local-development identity.
    Dev,
}

impl Source {
    /// The header and log spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::UserToken => "user_token",
            Source::Session => "session",
            Source::LicenseKey => "license_key",
            Source::Dev => "dev",
        }
    }

    /// The value of `x-whopgate-source`: made at compile time, where `from_static` at run
    /// time would check every byte of it on every request.
    pub fn header_value(self) -> HeaderValue {
        const USER_TOKEN: HeaderValue = HeaderValue::from_static("user_token");
        const SESSION: HeaderValue = HeaderValue::from_static("session");
        const LICENSE_KEY: HeaderValue = HeaderValue::from_static("license_key");
        const DEV: HeaderValue = HeaderValue::from_static("dev");
        match self {
            Source::UserToken => USER_TOKEN,
            Source::Session => SESSION,
            Source::LicenseKey => LICENSE_KEY,
            Source::Dev => DEV,
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A caller whose credential checked out.
///
/// Shared (`Arc`) between the caches and the requests of one user, and carries its header value
/// ready-made so forwarding costs no formatting.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The Whop user id (`user_…`).
    pub user_id: Arc<str>,
    /// The identity headers naming this caller (`x-whop-user-id`, `x-whopgate-source`), made
    /// once.
    pub headers: crate::gate::UserHeaders,
    /// Which source identified the caller.
    pub source: Source,
    /// Display name, when the source knows it (sessions).
    pub name: Option<Arc<str>>,
    /// Email, when the source knows it (sessions).
    pub email: Option<Arc<str>>,
    /// Access decided by configuration instead of Whop (the dev identity).
    pub fixed_access: Option<crate::whop::Access>,
}

impl Identity {
    /// An identity for `user_id` from `source`; `None` if the id cannot be a header value.
    pub fn new(user_id: &str, source: Source) -> Option<Self> {
        let headers = crate::gate::UserHeaders::new(HeaderValue::from_str(user_id).ok()?, source);
        Some(Self { user_id: Arc::from(user_id), headers, source, name: None, email: None, fixed_access: None })
    }

    /// The fixed local-development identity of `[identity.dev]`: no Whop call decides its access.
    pub fn dev(config: &crate::config::DevConfig) -> Option<Self> {
        let access = match config.access_level {
            crate::config::AccessLevel::Customer => crate::whop::Access::Customer,
            crate::config::AccessLevel::Admin => crate::whop::Access::Admin,
        };
        Some(Self { fixed_access: Some(access), ..Self::new(&config.user_id, Source::Dev)? })
    }

    /// A copy that shares no allocation with `self`. Each thread's token map holds its own, so
    /// the reference counts a request bumps (the identity's, its user header's) are written by
    /// one core alone rather than bounced between cores.
    pub fn unshared(&self) -> Self {
        Self {
            user_id: Arc::from(&*self.user_id),
            headers: self.headers.unshared(),
            source: self.source,
            name: self.name.as_deref().map(Arc::from),
            email: self.email.as_deref().map(Arc::from),
            fixed_access: self.fixed_access,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_sources_header_value_is_its_spelling() {
        for source in [Source::UserToken, Source::Session, Source::LicenseKey, Source::Dev] {
            assert_eq!(source.header_value(), source.as_str());
        }
    }
}
