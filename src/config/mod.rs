//! whopgate's configuration: the TOML file of SPEC §3, read into typed, validated structs.
//!
//! ```
//! use whopgate::config::Config;
//!
//! let toml = r#"
//!     [whop]
//!     api_key = "${WHOP_API_KEY}"
//!     app_id = "app_abc123"
//!
//!     [[route]]
//!     path = "/"
//!     require = ["prod_abc123"]
//! "#;
//! let env = |name: &str| (name == "WHOP_API_KEY").then(|| "apik_test".to_owned());
//! let config = Config::from_toml_with_env(toml, "whopgate.toml", &env).unwrap();
//! assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
//! assert_eq!(config.resources(), ["prod_abc123"]);
//!
//! // Every problem is reported at once, each with its place and what would be right.
//! let errors = Config::from_toml_with_env("upsteam = 1\n", "whopgate.toml", &env).unwrap_err();
//! assert!(errors.to_string().starts_with(
//!     "whopgate.toml:1:1: error: unknown key `upsteam` in the top level; did you mean `upstream`?"
//! ));
//! ```
//!
//! How problems are gathered: the file is parsed into a spanned document
//! ([`toml::de::DeTable`]), then walked table by table with a small typed reader that records a
//! problem (file, line, column, message, hint) whenever a value is missing, mistyped or invalid,
//! and carries on with the default. Cross-field rules run on what was read. Only when nothing was
//! recorded is a [`Config`] returned; otherwise every problem is, in file order.

#![warn(missing_docs)]

mod duration;
mod enums;
mod env;
mod error;
mod load;
#[cfg(test)]
mod properties;
mod reader;
mod secret;
mod values;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, Method, Uri};
use ipnet::IpNet;

pub use enums::{AccessApi, AccessLevel, LogFormat, MembershipStatus, OnWhopError, RouteMode, SourceKind};
pub use error::{ConfigError, ConfigErrors};
pub use secret::Secret;

/// Whop's production API, the default `whop.api_base`.
pub const DEFAULT_API_BASE: &str = "https://api.whop.com";

/// The whole configuration. Field names are the TOML keys.
#[derive(Debug, Clone)]
pub struct Config {
    /// The origin name used in messages, e.g. `whopgate.toml`.
    pub file: String,
    /// `listen`: where clients connect. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// `upstream`: the gated app, `http://host[:port]` (sidecar mode). `None` when absent or `""`.
    pub upstream: Option<Uri>,
    /// `admin_listen`: `/healthz`, `/readyz`, `/metrics`. `None` when absent or `""` (disabled).
    pub admin_listen: Option<SocketAddr>,
    /// `public_url`: this site's external origin (`scheme://host[:port]/`, host lowercase), used for
    /// OAuth redirects, cookies and `rd` checks. Required when the session source is on.
    pub public_url: Option<Uri>,
    /// `prefix`: whopgate's own endpoints live under it. Default `/.whopgate`.
    pub prefix: String,
    /// `trusted_proxies`: networks whose `X-Forwarded-*` headers are believed (a bare IP is a
    /// single-address network). Default empty.
    pub trusted_proxies: Vec<IpNet>,
    /// `upstream_timeout`: how long the upstream may take to answer. Default 30 s.
    pub upstream_timeout: Duration,
    /// `log_format`. Default text.
    pub log_format: LogFormat,
    /// `tls_cert`: PEM certificate chain for HTTPS on `listen`; `None` when empty. Set together
    /// with `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// `tls_key`: PEM private key for HTTPS on `listen`; `None` when empty.
    pub tls_key: Option<PathBuf>,
    /// `[limits]`.
    pub limits: Limits,
    /// `[whop]`.
    pub whop: WhopConfig,
    /// `[identity]`.
    pub identity: IdentityConfig,
    /// `[cache]`.
    pub cache: CacheConfig,
    /// `[mirror]`.
    pub mirror: MirrorConfig,
    /// `[webhook]`.
    pub webhook: WebhookConfig,
    /// `[[route]]`: the rules, in file (= match) order. Never empty in a loaded config.
    pub routes: Vec<RouteConfig>,
}

/// `[limits]`: protection against slow or greedy clients.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A client slower than this to send its request headers is dropped. Default 10 s.
    pub header_read_timeout: Duration,
    /// Largest request head accepted, 8 KiB (hyper's minimum) to 1 MiB. Default 65536.
    pub max_header_bytes: usize,
    /// Most simultaneous client connections, at least 1. Default 10000.
    pub max_connections: usize,
    /// On SIGTERM: stop accepting and let in-flight requests finish this long (0 = at once).
    /// Default 30 s.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 65_536,
            max_connections: 10_000,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// `[whop]`: how to reach the Whop API.
#[derive(Debug, Clone)]
pub struct WhopConfig {
    /// `api_key`: `Authorization: Bearer` credential. Required when access must be checked with
    /// the API (a route has `require` and not only the dev source is on, the license-key
    /// source is on, or the mirror is enabled).
    pub api_key: Option<Secret>,
    /// `api_base`: default `https://api.whop.com`; any trailing slash removed (a root base is
    /// path `/`). Join paths with [`WhopConfig::url`].
    pub api_base: Uri,
    /// `app_id`: the `aud` user tokens must carry (`app_…`). Required with the user-token source.
    pub app_id: Option<String>,
    /// `api_version_date`: sent as `Api-Version-Date`. Default `2026-09-15`.
    pub api_version_date: String,
    /// `timeout`: one Whop API call, retries included. Default 3 s.
    pub timeout: Duration,
    /// `rate_limit_per_minute`: client-side budget per operation, 1..=60000 (`check` warns above
    /// Whop's documented 600). Default 500.
    pub rate_limit_per_minute: u32,
    /// `access_api`: which API decides access. Default `check_access`.
    pub access_api: AccessApi,
}

impl Default for WhopConfig {
    fn default() -> Self {
        WhopConfig {
            api_key: None,
            api_base: Uri::from_static(DEFAULT_API_BASE),
            app_id: None,
            api_version_date: "2026-09-15".to_owned(),
            timeout: Duration::from_secs(3),
            rate_limit_per_minute: 500,
            access_api: AccessApi::CheckAccess,
        }
    }
}

impl WhopConfig {
    /// `api_base` joined with `path` (which starts with `/`), e.g.
    /// `url("/api/v1/members")` → `https://api.whop.com/api/v1/members`. Use this rather than
    /// formatting `api_base`, whose `Display` ends in `/` when its path is the root.
    pub fn url(&self, path: &str) -> String {
        join_base(&self.api_base, path)
    }
}

fn join_base(base: &Uri, path: &str) -> String {
    let scheme = base.scheme_str().unwrap_or("https");
    let authority = base.authority().map_or("", |a| a.as_str());
    let base_path = base.path().trim_end_matches('/');
    format!("{scheme}://{authority}{base_path}{path}")
}

/// `[identity]`: how callers are identified.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// `sources`: tried in this order. Default: `user_token`, then `session`, `license_key` and
    /// `dev` for each of their tables that is present.
    pub sources: Vec<SourceKind>,
    /// `[identity.user_token]`.
    pub user_token: UserTokenConfig,
    /// `[identity.session]`, when present.
    pub session: Option<SessionConfig>,
    /// `[identity.license_key]` (defaults when absent).
    pub license_key: LicenseKeyConfig,
    /// `[identity.dev]`, when present.
    pub dev: Option<DevConfig>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            sources: vec![SourceKind::UserToken],
            user_token: UserTokenConfig::default(),
            session: None,
            license_key: LicenseKeyConfig::default(),
            dev: None,
        }
    }
}

impl IdentityConfig {
    /// True when `kind` is one of the sources.
    pub fn has(&self, kind: SourceKind) -> bool {
        self.sources.contains(&kind)
    }
}

/// `[identity.user_token]`: the JWT Whop's app proxy adds.
#[derive(Debug, Clone)]
pub struct UserTokenConfig {
    /// `header`, lowercase. Default `x-whop-user-token`.
    pub header: HeaderName,
    /// `jwks_url`: default `{whop.api_base}/.well-known/jwks.json`; `None` when `""` (no fetching).
    pub jwks_url: Option<Uri>,
    /// `public_keys`: extra PEM public keys (`-----BEGIN PUBLIC KEY-----` blocks, shape-checked only).
    pub public_keys: Vec<String>,
    /// `leeway`: clock skew allowed on `exp` (0 allowed). Default 30 s.
    pub leeway: Duration,
    /// `accept_query_param`: also accept `?whop-dev-user-token=` (Whop's localhost mode). Default false.
    pub accept_query_param: bool,
}

impl Default for UserTokenConfig {
    fn default() -> Self {
        UserTokenConfig {
            header: HeaderName::from_static("x-whop-user-token"),
            jwks_url: Some(Uri::from_static("https://api.whop.com/.well-known/jwks.json")),
            public_keys: Vec::new(),
            leeway: Duration::from_secs(30),
            accept_query_param: false,
        }
    }
}

/// `[identity.session]`: "Sign in with Whop" and the session cookie. No `Default`: `client_id`
/// and `cookie_secret` must be given.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// `client_id`: the OAuth client, your app id (`app_…`).
    pub client_id: String,
    /// `client_secret`: `None` for a PKCE public client.
    pub client_secret: Option<Secret>,
    /// `cookie_secret`: at least 32 bytes; new cookies are sealed with it.
    pub cookie_secret: Secret,
    /// `previous_cookie_secrets`: still accepted for reading (rotation); each at least 32 bytes.
    pub previous_cookie_secrets: Vec<Secret>,
    /// `cookie_name`. Default `__Host-whopgate` (which browsers accept only over https).
    pub cookie_name: String,
    /// `lifetime` of a session. Default 7 days.
    pub lifetime: Duration,
    /// `scopes` asked for; always includes `openid`. Default `openid profile email`.
    pub scopes: Vec<String>,
    /// `allowed_redirect_hosts`: hosts besides `public_url`'s that `rd` may name (lowercase;
    /// `*.` wildcard and `:port` allowed).
    pub allowed_redirect_hosts: Vec<String>,
}

/// `[identity.license_key]`: a Whop software license key sent by the caller.
#[derive(Debug, Clone)]
pub struct LicenseKeyConfig {
    /// `header`, lowercase. Default `x-whop-license-key`.
    pub header: HeaderName,
    /// `bearer`: also read the key from `Authorization: Bearer`. Default false.
    pub bearer: bool,
    /// `valid_statuses`: membership statuses that make a key valid. Default trialing, active,
    /// past_due, canceling, completed.
    pub valid_statuses: Vec<MembershipStatus>,
}

impl Default for LicenseKeyConfig {
    fn default() -> Self {
        LicenseKeyConfig {
            header: HeaderName::from_static("x-whop-license-key"),
            bearer: false,
            valid_statuses: vec![
                MembershipStatus::Trialing,
                MembershipStatus::Active,
                MembershipStatus::PastDue,
                MembershipStatus::Canceling,
                MembershipStatus::Completed,
            ],
        }
    }
}

/// `[identity.dev]`: a fixed identity for local development. The runtime refuses it unless
/// `listen` is loopback (see [`Config::dev_identity_allowed`]). No `Default`: `user_id` must be given.
#[derive(Debug, Clone)]
pub struct DevConfig {
    /// `user_id` (`user_…`).
    pub user_id: String,
    /// `access_level` the dev user gets on every resource. Default admin.
    pub access_level: AccessLevel,
}

/// `[cache]`: access decisions.
#[derive(Clone)]
pub struct CacheConfig {
    /// `ttl`: how long a granted decision is trusted (> 0). Default 60 s.
    pub ttl: Duration,
    /// `negative_ttl`: how long a refusal is trusted (0 = not cached). Default 10 s.
    pub negative_ttl: Duration,
    /// `stale_if_error`: serve a decision this far past expiry while Whop fails (0 = never).
    /// Default 5 min.
    pub stale_if_error: Duration,
    /// `max_entries`, at least 1. Default 100000.
    pub max_entries: u64,
    /// `redis_url` (`redis://` or `rediss://`); `None` when empty. May hold a password, so
    /// `Debug` hides the user-info part.
    pub redis_url: Option<String>,
    /// `revalidate_streams`: an open WebSocket/SSE stream is re-judged this often (> 0). Default 60 s.
    pub revalidate_streams: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(10),
            stale_if_error: Duration::from_secs(300),
            max_entries: 100_000,
            redis_url: None,
            revalidate_streams: Duration::from_secs(60),
        }
    }
}

impl std::fmt::Debug for CacheConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheConfig")
            .field("ttl", &self.ttl)
            .field("negative_ttl", &self.negative_ttl)
            .field("stale_if_error", &self.stale_if_error)
            .field("max_entries", &self.max_entries)
            .field("redis_url", &self.redis_url.as_deref().map(redact_userinfo))
            .field("revalidate_streams", &self.revalidate_streams)
            .finish()
    }
}

/// `redis://user:pass@host` → `redis://***@host`.
fn redact_userinfo(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}***{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// `[mirror]`: an optional local copy of who holds a valid membership.
#[derive(Debug, Clone)]
pub struct MirrorConfig {
    /// `enabled`. Default false.
    pub enabled: bool,
    /// `interval` between full re-syncs (> 0). Default 15 min.
    pub interval: Duration,
    /// `max_staleness`: `/readyz` is not ready past this without a good sync (> 0, and at least
    /// `interval` when enabled). Default 1 h.
    pub max_staleness: Duration,
}

impl Default for MirrorConfig {
    fn default() -> Self {
        MirrorConfig { enabled: false, interval: Duration::from_secs(900), max_staleness: Duration::from_secs(3_600) }
    }
}

/// `[webhook]`: secrets that verify Whop's webhook deliveries.
#[derive(Debug, Clone, Default)]
pub struct WebhookConfig {
    /// `secret`: the `ws_…` secret, used verbatim (Standard Webhooks); `None` when empty.
    pub secret: Option<Secret>,
    /// `legacy_secret`: for `x-whop-signature` deliveries; `None` when empty.
    pub legacy_secret: Option<Secret>,
}

/// One `[[route]]` rule. No `Default`: a rule needs a `path` and either `require` or `public`.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// `path`: a segment prefix (`/assets` covers `/assets` and `/assets/…`, not `/assetsX`), in
    /// the normalised spelling requests are matched in, without trailing slash (except `/`).
    pub path: String,
    /// `methods` (uppercase); `None` matches every method.
    pub methods: Option<Vec<Method>>,
    /// `host` (lowercase, optionally `*.`-prefixed and with `:port`); `None` matches every host.
    pub host: Option<String>,
    /// `public`: no identity needed. Default false.
    pub public: bool,
    /// `require`: resource ids (`prod_…`, `exp_…`, `biz_…`); access to any one suffices. Empty
    /// only when `public`.
    pub require: Vec<String>,
    /// `access_level` needed. Default customer.
    pub access_level: AccessLevel,
    /// `mode`: how denials are answered. Default auto.
    pub mode: RouteMode,
    /// `on_whop_error`: when access cannot be decided. Default deny.
    pub on_whop_error: OnWhopError,
    /// `checkout_url`: where a signed-in user without access is sent.
    pub checkout_url: Option<Uri>,
    /// Line of the rule's `[[route]]` header (1-based), for `check`, `explain` and logs.
    pub line: u32,
    /// Column of the rule's `[[route]]` header (1-based).
    pub column: u32,
}

impl Config {
    /// Reads and validates the file at `path`; `file` in messages is the path as given.
    /// A file that cannot be read gives one error with line 0.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let file = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Config::from_toml(&text, &file),
            Err(e) => {
                let hint = if e.kind() == std::io::ErrorKind::NotFound {
                    "create it (config.example.toml shows every key), or name another with --config PATH"
                } else {
                    "check the path and its permissions, or name another with --config PATH"
                };
                Err(ConfigErrors(vec![ConfigError {
                    file,
                    line: 0,
                    column: 0,
                    message: format!("cannot read the config file: {e}"),
                    hint: Some(hint.to_owned()),
                }]))
            }
        }
    }

    /// Parses and validates `text`, taking `${NAME}` values from the process environment.
    pub fn from_toml(text: &str, file: &str) -> Result<Config, ConfigErrors> {
        Config::from_toml_with_env(text, file, &|name| std::env::var(name).ok())
    }

    /// Parses and validates `text`, taking `${NAME}` values from `env` (for tests and embedding).
    pub fn from_toml_with_env(
        text: &str,
        file: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        load::load(text, file, env)
    }

    /// True iff `listen` is a loopback address: the only case where the runtime may start with
    /// the `dev` identity source (it must refuse otherwise; `check` still passes).
    pub fn dev_identity_allowed(&self) -> bool {
        self.listen.ip().is_loopback()
    }

    /// Every distinct resource id named by any route, in first-seen order.
    pub fn resources(&self) -> Vec<String> {
        let mut seen: Vec<String> = Vec::new();
        for id in self.routes.iter().flat_map(|r| &r.require) {
            if !seen.contains(id) {
                seen.push(id.clone());
            }
        }
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_defaults_follow_the_spec() {
        let limits = Limits::default();
        assert_eq!(limits.header_read_timeout, Duration::from_secs(10));
        assert_eq!(limits.max_header_bytes, 65_536);
        assert_eq!(limits.max_connections, 10_000);
        assert_eq!(limits.drain_timeout, Duration::from_secs(30));

        let whop = WhopConfig::default();
        assert!(whop.api_key.is_none());
        assert_eq!(whop.api_base, Uri::from_static("https://api.whop.com"));
        assert_eq!(whop.api_version_date, "2026-09-15");
        assert_eq!(whop.timeout, Duration::from_secs(3));
        assert_eq!(whop.rate_limit_per_minute, 500);
        assert_eq!(whop.access_api, AccessApi::CheckAccess);

        let identity = IdentityConfig::default();
        assert_eq!(identity.sources, [SourceKind::UserToken]);
        assert!(identity.has(SourceKind::UserToken) && !identity.has(SourceKind::Dev));
        assert_eq!(identity.user_token.header, "x-whop-user-token");
        assert_eq!(
            identity.user_token.jwks_url.as_ref().map(ToString::to_string).as_deref(),
            Some("https://api.whop.com/.well-known/jwks.json")
        );
        assert_eq!(identity.user_token.leeway, Duration::from_secs(30));
        assert!(!identity.user_token.accept_query_param);
        assert_eq!(identity.license_key.header, "x-whop-license-key");
        assert!(!identity.license_key.bearer);
        assert_eq!(identity.license_key.valid_statuses.len(), 5);

        let cache = CacheConfig::default();
        assert_eq!(
            (cache.ttl, cache.negative_ttl, cache.stale_if_error, cache.revalidate_streams),
            (Duration::from_secs(60), Duration::from_secs(10), Duration::from_secs(300), Duration::from_secs(60))
        );
        assert_eq!(cache.max_entries, 100_000);
        assert!(cache.redis_url.is_none());

        let mirror = MirrorConfig::default();
        assert!(!mirror.enabled);
        assert_eq!((mirror.interval, mirror.max_staleness), (Duration::from_secs(900), Duration::from_secs(3_600)));

        let webhook = WebhookConfig::default();
        assert!(webhook.secret.is_none() && webhook.legacy_secret.is_none());
    }

    #[test]
    fn whop_urls_join_without_double_slashes() {
        let mut whop = WhopConfig::default();
        assert_eq!(whop.url("/api/v1/members"), "https://api.whop.com/api/v1/members");
        whop.api_base = Uri::from_static("http://127.0.0.1:9999/whop");
        assert_eq!(whop.url("/oauth/token"), "http://127.0.0.1:9999/whop/oauth/token");
    }

    #[test]
    fn cache_debug_hides_the_redis_password() {
        let cache = CacheConfig { redis_url: Some("redis://:hunter2@cache:6379/0".into()), ..CacheConfig::default() };
        let text = format!("{cache:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("redis://***@cache:6379/0"), "{text}");
        assert_eq!(redact_userinfo("redis://cache:6379"), "redis://cache:6379");
    }

    #[test]
    fn load_reports_an_unreadable_file_without_a_position() {
        let path = Path::new("/nonexistent/whopgate-test/whopgate.toml");
        let errors = Config::load(path).err().map(|e| e.0).unwrap_or_default();
        assert_eq!(errors.len(), 1);
        assert_eq!((errors[0].line, errors[0].column), (0, 0));
        assert_eq!(errors[0].file, "/nonexistent/whopgate-test/whopgate.toml");
        assert!(errors[0].to_string().starts_with("/nonexistent/whopgate-test/whopgate.toml: error: cannot read"));
    }
}
