//! whopgate's own endpoints, under `prefix` (SPEC §5): "Sign in with Whop" (`/login`,
//! `/callback`, `/logout`), `/me`, forward-auth (`/auth`) and Whop's webhooks (`/webhook`). The gate answers them before any route rule is consulted,
//! so they work whatever the routes say.

pub mod redirect;
mod signin;

pub use signin::{SignIn, SignInError};

/// One of whopgate's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `{prefix}/login`
    Login,
    /// `{prefix}/callback`
    Callback,
    /// `{prefix}/logout`
    Logout,
    /// `{prefix}/me`
    Me,
    /// `{prefix}/auth`: forward-auth (see `crate::gate::forward_auth`).
    Auth,
    /// `{prefix}/webhook`: Whop's webhook deliveries (see [`crate::webhook`]).
    Webhook,
    /// Anything else under the prefix: 404.
    Unknown,
}

impl Endpoint {
    /// The endpoint a (normalised) path names, if it is under `prefix`.
    pub fn route(prefix: &str, path: &str) -> Option<Endpoint> {
        let rest = path.strip_prefix(prefix)?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        Some(match rest.trim_end_matches('/') {
            "/login" => Endpoint::Login,
            "/callback" => Endpoint::Callback,
            "/logout" => Endpoint::Logout,
            "/me" => Endpoint::Me,
            "/auth" => Endpoint::Auth,
            "/webhook" => Endpoint::Webhook,
            _ => Endpoint::Unknown,
        })
    }

    /// For the access log.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Login => "endpoint_login",
            Endpoint::Callback => "endpoint_callback",
            Endpoint::Logout => "endpoint_logout",
            Endpoint::Me => "endpoint_me",
            Endpoint::Auth => "endpoint_auth",
            Endpoint::Webhook => "endpoint_webhook",
            Endpoint::Unknown => "endpoint_unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_under_the_prefix_only() {
        assert_eq!(Endpoint::route("/.whopgate", "/.whopgate/login"), Some(Endpoint::Login));
        assert_eq!(Endpoint::route("/.whopgate", "/.whopgate/me/"), Some(Endpoint::Me));
        assert_eq!(Endpoint::route("/.whopgate", "/.whopgate/auth"), Some(Endpoint::Auth));
        assert_eq!(Endpoint::route("/.whopgate", "/.whopgate/webhook"), Some(Endpoint::Webhook));
        assert_eq!(Endpoint::route("/.whopgate", "/.whopgate"), Some(Endpoint::Unknown));
        assert_eq!(Endpoint::route("/.whopgate", "/.whopgate/x"), Some(Endpoint::Unknown));
        assert_eq!(Endpoint::route("/.whopgate", "/.whopgatex/login"), None);
        assert_eq!(Endpoint::route("/.whopgate", "/login"), None);
    }
}
