//! The walk over the document: every table and key of SPEC §3, then the rules that involve
//! several keys. Problems are recorded and reading carries on with defaults, so one run reports
//! everything; a [`Config`] comes out only when nothing was recorded.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use http::{Method, Uri};
use toml::de::{DeTable, DeValue};

use super::error::{ConfigErrors, Problem};
use super::reader::{Got, Reader, Table, Value, kind, schema};
use super::values;
use super::{
    AccessApi, AccessLevel, CacheConfig, Config, DevConfig, IdentityConfig, LicenseKeyConfig, Limits, MembershipStatus,
    MirrorConfig, OnWhopError, RouteConfig, RouteMode, Secret, SessionConfig, SourceKind, UserTokenConfig,
    WebhookConfig, WhopConfig, join_base,
};

/// Shortest accepted cookie secret (and previous cookie secret), in bytes.
const MIN_COOKIE_SECRET: usize = 32;

/// Parses and validates a whole config.
pub(crate) fn load(text: &str, file: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
    let mut r = Reader::new(text, file, env);
    let (doc, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        // The document recovered from a syntax error is a guess; checking it would mostly
        // produce follow-on noise, so report the syntax errors alone.
        for e in &syntax {
            let message = e.message().trim().replace('\n', "; ");
            r.error(&e.span().unwrap_or(0..0), Problem::new(format!("invalid TOML: {message}")));
        }
        return Err(ConfigErrors(r.into_errors()));
    }
    let root = Table::root(&doc);
    root.check_unknown(&mut r);

    let top = read_top(&mut r, &root);
    let limits = read_limits(&mut r, &root);
    let whop = read_whop(&mut r, &root);
    let identity = read_identity(&mut r, &root, &whop.config);
    let cache = read_cache(&mut r, &root);
    let mirror = read_mirror(&mut r, &root);
    let webhook = read_webhook(&mut r, &root);
    let routes = read_routes(&mut r, &root);

    check_public_url(&mut r, &top, &identity);
    check_app_id(&mut r, &whop, &identity);
    check_api_key(&mut r, &whop, &identity, &mirror, &routes);
    check_access_api(&mut r, &whop, &routes);

    if r.has_errors() {
        return Err(ConfigErrors(r.into_errors()));
    }
    Ok(Config {
        file: file.to_owned(),
        listen: top.listen,
        upstream: top.upstream,
        admin_listen: top.admin_listen,
        public_url: top.public_url,
        prefix: top.prefix,
        trusted_proxies: top.trusted_proxies,
        upstream_timeout: top.upstream_timeout,
        log_format: top.log_format,
        tls_cert: top.tls_cert,
        tls_key: top.tls_key,
        limits,
        whop: whop.config,
        identity: identity.config,
        cache,
        mirror: mirror.config,
        webhook,
        routes: routes.into_iter().map(|d| d.config).collect(),
    })
}

/// Top-level keys, with what the cross-field rules need to know about them.
struct Top {
    listen: SocketAddr,
    upstream: Option<Uri>,
    admin_listen: Option<SocketAddr>,
    public_url: Option<Uri>,
    /// `public_url` had a problem of its own, already reported.
    public_url_failed: bool,
    prefix: String,
    trusted_proxies: Vec<ipnet::IpNet>,
    upstream_timeout: Duration,
    log_format: super::LogFormat,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

fn read_top(r: &mut Reader<'_>, t: &Table<'_, '_>) -> Top {
    let listen = r.parse(t, "listen", values::socket_addr);
    let upstream = r.parse_opt(t, "upstream", values::upstream_uri);
    let admin_listen = r.parse_opt(t, "admin_listen", values::socket_addr);
    let listen_addr = listen.as_ref().map_or_else(default_listen, |g| g.value);

    if let Some(up) = &upstream
        && points_at(&up.value, listen_addr)
    {
        r.error(
            &up.span,
            Problem::new(format!("`upstream` is whopgate's own `listen` address ({listen_addr}); requests would loop"))
                .hint("point it at the app, e.g. \"http://127.0.0.1:3000\""),
        );
    }
    if let Some(admin) = &admin_listen
        && same_port_binding(admin.value, listen_addr)
    {
        r.error(
            &admin.span,
            Problem::new(format!("`admin_listen` ({}) collides with `listen` ({listen_addr})", admin.value))
                .hint("give the admin endpoints a port of their own, e.g. \"127.0.0.1:9091\""),
        );
    }

    let trusted_proxies = match r.list(t, "trusted_proxies") {
        Some((_, items)) => {
            items.iter().filter_map(|v| r.value_parse("trusted_proxies", v, values::ip_net)).map(|g| g.value).collect()
        }
        None => Vec::new(),
    };

    let tls_before = r.error_count();
    let tls_cert = r.parse_opt(t, "tls_cert", |s| Ok(PathBuf::from(s)));
    let tls_key = r.parse_opt(t, "tls_key", |s| Ok(PathBuf::from(s)));
    if r.error_count() == tls_before {
        let lone = match (&tls_cert, &tls_key) {
            (Some(cert), None) => Some((&cert.span, "tls_cert", "tls_key")),
            (None, Some(key)) => Some((&key.span, "tls_key", "tls_cert")),
            _ => None,
        };
        if let Some((span, set, missing)) = lone {
            let span = span.clone();
            r.error(
                &span,
                Problem::new(format!("`{set}` is set but `{missing}` is not"))
                    .hint("set both to PEM file paths (certificate chain and private key) to serve HTTPS, or leave both empty"),
            );
        }
    }

    let before = r.error_count();
    let public_url = r.parse_opt(t, "public_url", values::origin_url).map(|g| g.value);
    let public_url_failed = r.error_count() > before;

    Top {
        listen: listen_addr,
        upstream: upstream.map(|g| g.value),
        admin_listen: admin_listen.map(|g| g.value),
        public_url,
        public_url_failed,
        prefix: r.parse(t, "prefix", values::prefix).map_or_else(|| "/.whopgate".to_owned(), |g| g.value),
        trusted_proxies,
        upstream_timeout: r.duration(t, "upstream_timeout", true).unwrap_or(Duration::from_secs(30)),
        log_format: r
            .choice(t, "log_format", super::LogFormat::parse, &super::LogFormat::spellings())
            .unwrap_or_default(),
        tls_cert: tls_cert.map(|g| g.value),
        tls_key: tls_key.map(|g| g.value),
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

/// True when an `http://host:port` upstream would reach the gate's own `listen` socket.
fn points_at(upstream: &Uri, listen: SocketAddr) -> bool {
    let Some(host) = upstream.host() else {
        return false;
    };
    if upstream.port_u16().unwrap_or(80) != listen.port() {
        return false;
    }
    let ip = match IpAddr::from_str(host.trim_start_matches('[').trim_end_matches(']')) {
        Ok(ip) => ip,
        Err(_) if host.eq_ignore_ascii_case("localhost") => {
            return listen.ip().is_loopback() || listen.ip().is_unspecified();
        }
        Err(_) => return false,
    };
    ip == listen.ip() || (listen.ip().is_unspecified() && (ip.is_loopback() || ip.is_unspecified()))
}

/// True when binding both addresses would collide.
/// Port 0 asks the OS for a free port, so two port-0 listeners never collide.
fn same_port_binding(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0 && a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn read_limits(r: &mut Reader<'_>, root: &Table<'_, '_>) -> Limits {
    let t = root.table(r, "limits", "limits", schema::LIMITS);
    t.check_unknown(r);
    let d = Limits::default();
    Limits {
        header_read_timeout: r.duration(&t, "header_read_timeout", true).unwrap_or(d.header_read_timeout),
        max_header_bytes: r
            .int(
                &t,
                "max_header_bytes",
                8_192,
                1_048_576,
                "hyper needs at least 8192 bytes; more than 1 MiB only helps abusive clients",
            )
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(d.max_header_bytes),
        max_connections: r
            .int(&t, "max_connections", 1, i128::MAX, "at least one connection must be allowed")
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
            .unwrap_or(d.max_connections),
        drain_timeout: r.duration(&t, "drain_timeout", false).unwrap_or(d.drain_timeout),
    }
}

/// `[whop]` and where its keys are, for the cross-field rules.
struct Whop {
    config: WhopConfig,
    /// Where `[whop]` is, when present.
    span: Option<Range<usize>>,
    /// Where `api_key` is, when written (possibly empty or invalid).
    api_key_span: Option<Range<usize>>,
    /// The `${VARS}` `api_key` came from, to explain an empty value.
    api_key_vars: Vec<String>,
    /// `api_key` had a problem of its own, already reported.
    api_key_failed: bool,
    /// Where `app_id` is, when written.
    app_id_span: Option<Range<usize>>,
    /// `app_id` had a problem of its own, already reported.
    app_id_failed: bool,
}

fn read_whop(r: &mut Reader<'_>, root: &Table<'_, '_>) -> Whop {
    let t = root.table(r, "whop", "whop", schema::WHOP);
    t.check_unknown(r);
    let d = WhopConfig::default();

    let before = r.error_count();
    let api_key_raw = r.str(&t, "api_key");
    let api_key_failed = r.error_count() > before;
    let api_key_vars = api_key_raw.as_ref().map(|g| g.vars.clone()).unwrap_or_default();
    let api_key = api_key_raw.filter(|g| !g.value.is_empty()).map(|g| Secret::new(g.value));

    let before = r.error_count();
    let app_id = r.parse_opt(&t, "app_id", |s| values::prefixed_id(s, "app_", "an app id")).map(|g| g.value);
    let app_id_failed = r.error_count() > before;

    let config = WhopConfig {
        api_key,
        api_base: r.parse(&t, "api_base", values::api_base).map_or(d.api_base, |g| g.value),
        app_id,
        api_version_date: r.parse(&t, "api_version_date", values::api_date).map_or(d.api_version_date, |g| g.value),
        timeout: r.duration(&t, "timeout", true).unwrap_or(d.timeout),
        rate_limit_per_minute: r
            .int(
                &t,
                "rate_limit_per_minute",
                1,
                60_000,
                "Whop allows 600 requests per minute per operation; stay below it unless Whop granted you more",
            )
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(d.rate_limit_per_minute),
        access_api: r.choice(&t, "access_api", AccessApi::parse, &AccessApi::spellings()).unwrap_or_default(),
    };
    Whop {
        config,
        span: t.present().then(|| t.span.clone()),
        api_key_span: t.get("api_key").map(Value::span),
        api_key_vars,
        api_key_failed,
        app_id_span: t.get("app_id").map(Value::span),
        app_id_failed,
    }
}

/// `[identity]` and where its sources were named, for the cross-field rules.
struct Identity {
    config: IdentityConfig,
    /// Where each listed source is written, when `sources` is written.
    source_spans: Vec<(SourceKind, Range<usize>)>,
    /// Where `[identity.session]` is, when present.
    session_span: Option<Range<usize>>,
}

impl Identity {
    /// Where a source was turned on: its entry in `sources`, or else `fallback`.
    fn source_span(&self, kind: SourceKind, fallback: Option<&Range<usize>>) -> Option<Range<usize>> {
        self.source_spans.iter().find(|(k, _)| *k == kind).map(|(_, s)| s.clone()).or_else(|| fallback.cloned())
    }
}

fn read_identity(r: &mut Reader<'_>, root: &Table<'_, '_>, whop: &WhopConfig) -> Identity {
    let t = root.table(r, "identity", "identity", schema::IDENTITY);
    t.check_unknown(r);
    let session_t = t.table(r, "session", "identity.session", schema::SESSION);
    let license_t = t.table(r, "license_key", "identity.license_key", schema::LICENSE_KEY);
    let dev_t = t.table(r, "dev", "identity.dev", schema::DEV);
    let user_token_t = t.table(r, "user_token", "identity.user_token", schema::USER_TOKEN);

    let mut source_spans: Vec<(SourceKind, Range<usize>)> = Vec::new();
    let sources = match r.list(&t, "sources") {
        Some((span, items)) => {
            let mut sources = Vec::new();
            for item in items {
                let Some(got) = r.value_choice("identity.sources", item, SourceKind::parse, &SourceKind::spellings())
                else {
                    continue;
                };
                let kind = got.value;
                if sources.contains(&kind) {
                    r.error(
                        &got.span,
                        Problem::new(format!("`{kind}` is listed twice in `identity.sources`"))
                            .hint("list each source once"),
                    );
                    continue;
                }
                let missing_table = match kind {
                    SourceKind::Session if !session_t.present() => {
                        Some("[identity.session] with `client_id` and `cookie_secret`")
                    }
                    SourceKind::Dev if !dev_t.present() => Some("[identity.dev] with `user_id`"),
                    _ => None,
                };
                if let Some(what) = missing_table {
                    r.error(
                        &got.span,
                        Problem::new(format!("`{kind}` is listed in `identity.sources` but its table is missing"))
                            .hint(format!("add {what}, or remove `{kind}` from the list")),
                    );
                }
                sources.push(kind);
                source_spans.push((kind, got.span));
            }
            if items.is_empty() {
                r.error(
                    &span,
                    Problem::new("`identity.sources` is empty: nobody could be identified")
                        .hint(format!("list at least one of {}", values::quoted_list(&SourceKind::spellings()))),
                );
            }
            sources
        }
        None => {
            let mut sources = vec![SourceKind::UserToken];
            for (present, kind) in [
                (session_t.present(), SourceKind::Session),
                (license_t.present(), SourceKind::LicenseKey),
                (dev_t.present(), SourceKind::Dev),
            ] {
                if present {
                    sources.push(kind);
                }
            }
            sources
        }
    };

    let user_token = read_user_token(r, &user_token_t, whop);
    let session = session_t.present().then(|| read_session(r, &session_t)).flatten();
    let license_key = read_license_key(r, &license_t);
    let dev = dev_t.present().then(|| read_dev(r, &dev_t)).flatten();
    Identity {
        config: IdentityConfig { sources, user_token, session, license_key, dev },
        source_spans,
        session_span: session_t.present().then(|| session_t.span.clone()),
    }
}

fn read_user_token(r: &mut Reader<'_>, t: &Table<'_, '_>, whop: &WhopConfig) -> UserTokenConfig {
    t.check_unknown(r);
    let d = UserTokenConfig::default();
    let jwks_url = if t.has("jwks_url") {
        r.parse_opt(t, "jwks_url", |s| values::http_url(s, "https://api.whop.com/.well-known/jwks.json"))
            .map(|g| g.value)
    } else {
        // Follows api_base, so pointing the API at a local fake moves the JWKS with it.
        Uri::from_str(&join_base(&whop.api_base, "/.well-known/jwks.json")).ok()
    };
    let public_keys = match r.list(t, "public_keys") {
        Some((_, items)) => items
            .iter()
            .filter_map(|v| r.value_parse("identity.user_token.public_keys", v, values::pem_public_key))
            .map(|g| g.value)
            .collect(),
        None => Vec::new(),
    };
    UserTokenConfig {
        header: r.parse(t, "header", values::header_name).map_or(d.header, |g| g.value),
        jwks_url,
        public_keys,
        leeway: r.duration(t, "leeway", false).unwrap_or(d.leeway),
        accept_query_param: r.bool(t, "accept_query_param").unwrap_or(d.accept_query_param),
    }
}

/// "(it comes from `${X}`, which is empty)" when an empty value came from the environment.
fn empty_var_note(vars: &[String]) -> String {
    match vars {
        [] => String::new(),
        [one] => format!(" (it comes from `${{{one}}}`, which is empty)"),
        many => format!(
            " (it comes from {}, which are empty)",
            many.iter().map(|v| format!("`${{{v}}}`")).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// A required key missing from its table: reported at the table's header.
fn missing(r: &mut Reader<'_>, t: &Table<'_, '_>, key: &str, hint: &str) {
    r.error(&t.span, Problem::new(format!("{} needs `{key}`", schema::label(t.path))).hint(hint.to_owned()));
}

/// A cookie secret, checked for length; `what` names it in messages (never its value).
fn cookie_secret(r: &mut Reader<'_>, what: &str, got: Got<String>) -> Option<Secret> {
    let len = got.value.len();
    if len >= MIN_COOKIE_SECRET {
        return Some(Secret::new(got.value));
    }
    r.error(
        &got.span,
        Problem::new(format!(
            "{what} is {len} bytes long; it must be at least {MIN_COOKIE_SECRET}{}",
            if len == 0 { empty_var_note(&got.vars) } else { String::new() }
        ))
        .hint("generate one with `openssl rand -base64 48`"),
    );
    None
}

fn read_session(r: &mut Reader<'_>, t: &Table<'_, '_>) -> Option<SessionConfig> {
    t.check_unknown(r);
    if !t.has("client_id") {
        missing(r, t, "client_id", "the OAuth client id is your app's id: `client_id = \"app_…\"`");
    }
    let client_id = r.parse(t, "client_id", |s| values::prefixed_id(s, "app_", "an app id")).map(|g| g.value);
    let client_secret = r.secret(t, "client_secret").map(|g| g.value);
    if !t.has("cookie_secret") {
        missing(r, t, "cookie_secret", "add `cookie_secret = \"${WHOPGATE_COOKIE_SECRET}\"`, at least 32 random bytes");
    }
    let cookie = r.str(t, "cookie_secret").and_then(|g| cookie_secret(r, "`identity.session.cookie_secret`", g));
    let previous_cookie_secrets = match r.list(t, "previous_cookie_secrets") {
        Some((_, items)) => items
            .iter()
            .filter_map(|v| {
                let got = r.value_str("identity.session.previous_cookie_secrets", v)?;
                cookie_secret(r, "an entry of `identity.session.previous_cookie_secrets`", got)
            })
            .collect(),
        None => Vec::new(),
    };
    let scopes = match r.list(t, "scopes") {
        Some((span, items)) => {
            let scopes: Vec<String> = items
                .iter()
                .filter_map(|v| r.value_parse("identity.session.scopes", v, values::scope))
                .map(|g| g.value)
                .collect();
            if !scopes.iter().any(|s| s == "openid") && scopes.len() == items.len() {
                r.error(
                    &span,
                    Problem::new("`identity.session.scopes` must include \"openid\"")
                        .hint("whopgate learns who signed in through OpenID Connect; write [\"openid\", \"profile\", \"email\"]"),
                );
            }
            scopes
        }
        None => ["openid", "profile", "email"].map(str::to_owned).to_vec(),
    };
    let allowed_redirect_hosts = match r.list(t, "allowed_redirect_hosts") {
        Some((_, items)) => items
            .iter()
            .filter_map(|v| r.value_parse("identity.session.allowed_redirect_hosts", v, values::host_pattern))
            .map(|g| g.value)
            .collect(),
        None => Vec::new(),
    };
    let cookie_name =
        r.parse(t, "cookie_name", values::cookie_name).map_or_else(|| "__Host-whopgate".to_owned(), |g| g.value);
    let lifetime = r.duration(t, "lifetime", true).unwrap_or(Duration::from_secs(7 * 86_400));
    Some(SessionConfig {
        client_id: client_id?,
        client_secret,
        cookie_secret: cookie?,
        previous_cookie_secrets,
        cookie_name,
        lifetime,
        scopes,
        allowed_redirect_hosts,
    })
}

fn read_license_key(r: &mut Reader<'_>, t: &Table<'_, '_>) -> LicenseKeyConfig {
    t.check_unknown(r);
    let d = LicenseKeyConfig::default();
    let valid_statuses = match r.list(t, "valid_statuses") {
        Some((span, items)) => {
            let mut statuses: Vec<MembershipStatus> = Vec::new();
            for item in items {
                if let Some(got) = r.value_choice(
                    "identity.license_key.valid_statuses",
                    item,
                    MembershipStatus::parse,
                    &MembershipStatus::spellings(),
                ) && !statuses.contains(&got.value)
                {
                    statuses.push(got.value);
                }
            }
            if items.is_empty() {
                r.error(
                    &span,
                    Problem::new("`identity.license_key.valid_statuses` is empty: no license key could be valid")
                        .hint("write e.g. [\"trialing\", \"active\", \"past_due\", \"canceling\", \"completed\"]"),
                );
            }
            statuses
        }
        None => d.valid_statuses,
    };
    LicenseKeyConfig {
        header: r.parse(t, "header", values::header_name).map_or(d.header, |g| g.value),
        bearer: r.bool(t, "bearer").unwrap_or(d.bearer),
        valid_statuses,
    }
}

fn read_dev(r: &mut Reader<'_>, t: &Table<'_, '_>) -> Option<DevConfig> {
    t.check_unknown(r);
    if !t.has("user_id") {
        missing(r, t, "user_id", "write the Whop user id to act as, e.g. `user_id = \"user_dev\"`");
    }
    let user_id = r.parse(t, "user_id", |s| values::prefixed_id(s, "user_", "a user id")).map(|g| g.value);
    let access_level =
        r.choice(t, "access_level", AccessLevel::parse, &AccessLevel::spellings()).unwrap_or(AccessLevel::Admin);
    Some(DevConfig { user_id: user_id?, access_level })
}

fn read_cache(r: &mut Reader<'_>, root: &Table<'_, '_>) -> CacheConfig {
    let t = root.table(r, "cache", "cache", schema::CACHE);
    t.check_unknown(r);
    let d = CacheConfig::default();
    CacheConfig {
        ttl: r.duration(&t, "ttl", true).unwrap_or(d.ttl),
        negative_ttl: r.duration(&t, "negative_ttl", false).unwrap_or(d.negative_ttl),
        stale_if_error: r.duration(&t, "stale_if_error", false).unwrap_or(d.stale_if_error),
        max_entries: r
            .int(&t, "max_entries", 1, i128::MAX, "the cache needs room for at least one decision")
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(d.max_entries),
        redis_url: r.parse_opt(&t, "redis_url", values::redis_url).map(|g| g.value),
        revalidate_streams: r.duration(&t, "revalidate_streams", true).unwrap_or(d.revalidate_streams),
    }
}

/// `[mirror]`, with where it is for the cross-field rules.
struct Mirror {
    config: MirrorConfig,
    /// Where `enabled = true` is written (to point at when the mirror needs an API key).
    enabled_span: Option<Range<usize>>,
}

fn read_mirror(r: &mut Reader<'_>, root: &Table<'_, '_>) -> Mirror {
    let t = root.table(r, "mirror", "mirror", schema::MIRROR);
    t.check_unknown(r);
    let d = MirrorConfig::default();
    let config = MirrorConfig {
        enabled: r.bool(&t, "enabled").unwrap_or(d.enabled),
        interval: r.duration(&t, "interval", true).unwrap_or(d.interval),
        max_staleness: r.duration(&t, "max_staleness", true).unwrap_or(d.max_staleness),
    };
    if config.enabled && config.max_staleness < config.interval {
        let span = t.get("max_staleness").or_else(|| t.get("interval")).map_or_else(|| t.span.clone(), Value::span);
        r.error(
            &span,
            Problem::new(format!(
                "`mirror.max_staleness` ({}) is shorter than `mirror.interval` ({}): /readyz would fail between syncs",
                humantime::format_duration(config.max_staleness),
                humantime::format_duration(config.interval)
            ))
            .hint("make `max_staleness` at least the interval, e.g. four times it"),
        );
    }
    Mirror { enabled_span: t.get("enabled").map(Value::span), config }
}

fn read_webhook(r: &mut Reader<'_>, root: &Table<'_, '_>) -> WebhookConfig {
    let t = root.table(r, "webhook", "webhook", schema::WEBHOOK);
    t.check_unknown(r);
    WebhookConfig {
        secret: r.secret(&t, "secret").map(|g| g.value),
        legacy_secret: r.secret(&t, "legacy_secret").map(|g| g.value),
    }
}

/// A route as read, with the places the cross-field rules point at.
struct RouteDraft {
    config: RouteConfig,
    header: Range<usize>,
    /// Each `require` entry with its place.
    require_spans: Vec<(String, Range<usize>)>,
    access_level_span: Option<Range<usize>>,
}

fn read_routes(r: &mut Reader<'_>, root: &Table<'_, '_>) -> Vec<RouteDraft> {
    const NO_ROUTE: &str = "add at least one [[route]]; a request that matches no rule is denied";
    let Some(value) = root.get("route") else {
        r.error_at_end(Problem::new("the config has no [[route]] rule").hint(NO_ROUTE));
        return Vec::new();
    };
    let items = match value.get_ref() {
        DeValue::Array(items) => items,
        DeValue::Table(_) => {
            r.error(
                &value.span(),
                Problem::new("`[route]` declares a single table, but rules are a list")
                    .hint("write each rule under `[[route]]`, with double brackets"),
            );
            return Vec::new();
        }
        other => {
            r.error(
                &value.span(),
                Problem::new(format!("`route` must be a list of tables, found {}", kind(other)))
                    .hint("write each rule under `[[route]]`"),
            );
            return Vec::new();
        }
    };
    if items.is_empty() {
        r.error(&value.span(), Problem::new("the config has no [[route]] rule").hint(NO_ROUTE));
    }
    let mut routes = Vec::new();
    for item in items {
        match item.get_ref() {
            DeValue::Table(entries) => {
                if let Some(route) = read_route(r, &Table::route(entries, item.span())) {
                    routes.push(route);
                }
            }
            other => r.error(
                &item.span(),
                Problem::new(format!("each route must be a table, found {}", kind(other)))
                    .hint("write each rule under `[[route]]`"),
            ),
        }
    }
    routes
}

fn read_route(r: &mut Reader<'_>, t: &Table<'_, '_>) -> Option<RouteDraft> {
    t.check_unknown(r);
    if !t.has("path") {
        r.error(
            &t.span,
            Problem::new("this [[route]] has no `path`").hint("add `path = \"/…\"`; \"/\" covers every path"),
        );
    }
    let path = r.parse(t, "path", values::route_path).map(|g| g.value);

    let methods = match r.list(t, "methods") {
        Some((span, items)) => {
            if items.is_empty() {
                r.error(
                    &span,
                    Problem::new("`methods` is empty: the rule could never match")
                        .hint("omit `methods` to match every method"),
                );
            }
            let mut methods: Vec<Method> = Vec::new();
            for got in items.iter().filter_map(|v| r.value_parse("methods", v, values::method)) {
                if !methods.contains(&got.value) {
                    methods.push(got.value);
                }
            }
            Some(methods)
        }
        None => None,
    };

    let mut require: Vec<String> = Vec::new();
    let mut require_spans = Vec::new();
    let mut require_written = 0;
    let require_list = r.list(t, "require");
    // A `require` or `public` of the wrong type is reported already; judging the pair would
    // only add noise.
    let mut pair_readable = t.has("require") == require_list.is_some();
    if let Some((_, items)) = require_list {
        require_written = items.len();
        for got in items.iter().filter_map(|v| r.value_parse("require", v, values::resource_id)) {
            if !require.contains(&got.value) {
                require.push(got.value.clone());
                require_spans.push((got.value, got.span));
            }
        }
    }

    let before = r.error_count();
    let public = r.bool(t, "public").unwrap_or(false);
    pair_readable &= r.error_count() == before;
    if pair_readable && public && require_written > 0 {
        let span = t.key_span("require").unwrap_or_else(|| t.span.clone());
        r.error(
            &span,
            Problem::new("this route is `public = true` but also has `require`")
                .hint("remove `require` to keep it public, or remove `public = true` to gate it"),
        );
    } else if pair_readable && !public && require_written == 0 {
        let span = t.key_span("require").unwrap_or_else(|| t.span.clone());
        r.error(
            &span,
            Problem::new("this route neither requires anything nor is public")
                .hint("add `require = [\"prod_…\"]` or `public = true`"),
        );
    }

    let host = r.parse_opt(t, "host", values::host_pattern).map(|g| g.value);
    let access_level = r.choice(t, "access_level", AccessLevel::parse, &AccessLevel::spellings()).unwrap_or_default();
    let mode = r.choice(t, "mode", RouteMode::parse, &RouteMode::spellings()).unwrap_or_default();
    let on_whop_error = r.choice(t, "on_whop_error", OnWhopError::parse, &OnWhopError::spellings()).unwrap_or_default();
    let checkout_url = r
        .parse_opt(t, "checkout_url", |s| values::http_url(s, "https://whop.com/checkout/plan_xxxxxxxxxxxxxx"))
        .map(|g| g.value);
    let (line, column) = r.position(&t.span);
    // Only now give up on a route without a usable path: every other key has been checked.
    let config = RouteConfig {
        path: path?,
        methods,
        host,
        public,
        require,
        access_level,
        mode,
        on_whop_error,
        checkout_url,
        line,
        column,
    };
    Some(RouteDraft {
        config,
        header: t.span.clone(),
        require_spans,
        access_level_span: t.get("access_level").map(Value::span),
    })
}

/// `public_url` is needed for OAuth redirects and cookies once the session source is on.
fn check_public_url(r: &mut Reader<'_>, top: &Top, identity: &Identity) {
    if !identity.config.has(SourceKind::Session) || top.public_url.is_some() || top.public_url_failed {
        return;
    }
    let span = identity.source_span(SourceKind::Session, identity.session_span.as_ref()).unwrap_or(0..0);
    r.error(
        &span,
        Problem::new(
            "`public_url` is required when the `session` identity source is on: Sign in with Whop redirects back to it",
        )
        .hint("add `public_url = \"https://app.example.com\"` (this site's external origin) at the top level"),
    );
}

/// User tokens are checked to be issued for this app, so the app id must be known.
fn check_app_id(r: &mut Reader<'_>, whop: &Whop, identity: &Identity) {
    if !identity.config.has(SourceKind::UserToken) || whop.config.app_id.is_some() || whop.app_id_failed {
        return;
    }
    // The `user_token` entry if sources are listed, else the empty `app_id`, else [whop].
    let fallback = whop.app_id_span.clone().or_else(|| whop.span.clone());
    let span = identity.source_span(SourceKind::UserToken, fallback.as_ref()).unwrap_or(0..0);
    r.error(
        &span,
        Problem::new("`whop.app_id` is required when the `user_token` identity source is on: user tokens must name your app as `aud`")
            .hint("add `app_id = \"app_…\"` under [whop], or write `identity.sources` without \"user_token\""),
    );
}

/// The API key is needed as soon as anything asks the Whop API.
fn check_api_key(r: &mut Reader<'_>, whop: &Whop, identity: &Identity, mirror: &Mirror, routes: &[RouteDraft]) {
    if whop.config.api_key.is_some() || whop.api_key_failed {
        return;
    }
    let sources = &identity.config.sources;
    let dev_only = !sources.is_empty() && sources.iter().all(|s| *s == SourceKind::Dev);
    let gated = routes.iter().find(|d| !d.config.require.is_empty());
    let (reason, fallback) = if let (Some(route), false) = (gated, dev_only) {
        (
            format!("route `{}` requires Whop resources, and access is checked with the Whop API", route.config.path),
            Some(route.header.clone()),
        )
    } else if identity.config.has(SourceKind::LicenseKey) {
        ("license keys are looked up with the Whop API".to_owned(), identity.source_span(SourceKind::LicenseKey, None))
    } else if mirror.config.enabled {
        ("the mirror syncs memberships from the Whop API".to_owned(), mirror.enabled_span.clone())
    } else {
        return;
    };
    let (what, span) = match &whop.api_key_span {
        Some(span) => (format!("is empty{}", empty_var_note(&whop.api_key_vars)), span.clone()),
        None => ("is missing".to_owned(), whop.span.clone().or(fallback).unwrap_or(0..0)),
    };
    r.error(
        &span,
        Problem::new(format!("`whop.api_key` {what}: {reason}"))
            .hint("add `api_key = \"${WHOP_API_KEY}\"` under [whop] and set WHOP_API_KEY"),
    );
}

/// Every rule must be judgeable by the configured `whop.access_api` (`crate::access::scope`).
fn check_access_api(r: &mut Reader<'_>, whop: &Whop, routes: &[RouteDraft]) {
    use crate::access::scope::{judges_level, judges_resource};
    let api = whop.config.access_api;
    for route in routes {
        for (id, span) in &route.require_spans {
            if let Err(refusal) = judges_resource(api, id) {
                r.error(span, Problem::new(refusal.why).hint(refusal.instead));
            }
        }
        if let (Err(refusal), Some(span)) = (judges_level(api, route.config.access_level), &route.access_level_span) {
            r.error(span, Problem::new(refusal.why).hint(refusal.instead));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigError;

    const WHOP: &str = "[whop]\napi_key = \"apik_test\"\napp_id = \"app_test1\"\n";
    const ROUTE: &str = "\n[[route]]\npath = \"/\"\nrequire = [\"prod_test1\"]\n";

    fn env(name: &str) -> Option<String> {
        match name {
            "WHOP_API_KEY" => Some("apik_from_env".into()),
            "WHOP_CLIENT_SECRET" => Some("client-secret-from-env".into()),
            "WHOPGATE_COOKIE_SECRET" => Some("c".repeat(48)),
            "WHOP_WEBHOOK_SECRET" => Some("ws_webhooksecretvalue".into()),
            "TTL" => Some("90s".into()),
            "PROXY" => Some("10.1.0.0/16".into()),
            "PRODUCT" => Some("prod_fromenv".into()),
            "EMPTY" => Some(String::new()),
            "SHORT" => Some("hunter2".into()),
            "MAX" => Some("42".into()),
            "YES" => Some("true".into()),
            "WEIRD" => Some("a\"b'c\n[whop]\n#d = ${YES}".into()),
            _ => None,
        }
    }

    fn load_ok(text: &str) -> Config {
        match Config::from_toml_with_env(text, "f.toml", &env) {
            Ok(c) => c,
            Err(e) => panic!("expected a valid config, got:\n{e}\n--- config:\n{text}"),
        }
    }

    fn load_err(text: &str) -> Vec<ConfigError> {
        match Config::from_toml_with_env(text, "f.toml", &env) {
            Ok(c) => panic!("expected errors, got {c:?}\n--- config:\n{text}"),
            Err(e) => e.0,
        }
    }

    /// 1-based line:column of the first occurrence of `needle`, computed independently. In
    /// `"key = |value"` the part before `|` is context and the place is after it.
    fn position_of(text: &str, needle: &str) -> (u32, u32) {
        let (context, _) = needle.split_once('|').unwrap_or(("", needle));
        let Some(at) = text.find(&needle.replace('|', "")).map(|at| at + context.len()) else {
            panic!("`{needle}` not in:\n{text}")
        };
        let before = &text[..at];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        (line as u32, column as u32)
    }

    fn top(snippet: &str) -> String {
        format!("{snippet}\n{WHOP}{ROUTE}")
    }
    fn whop(snippet: &str) -> String {
        format!("{WHOP}{snippet}\n{ROUTE}")
    }
    fn table(snippet: &str) -> String {
        format!("{WHOP}\n{snippet}\n{ROUTE}")
    }
    fn route(snippet: &str) -> String {
        format!("{WHOP}\n[[route]]\n{snippet}\n")
    }

    #[test]
    fn a_minimal_config_gets_every_default() {
        let c = load_ok(&format!("{WHOP}{ROUTE}"));
        assert_eq!(c.file, "f.toml");
        assert_eq!(c.listen, default_listen());
        assert!(c.upstream.is_none() && c.admin_listen.is_none() && c.public_url.is_none());
        assert_eq!(c.prefix, "/.whopgate");
        assert!(c.trusted_proxies.is_empty());
        assert_eq!(c.upstream_timeout, Duration::from_secs(30));
        assert_eq!(c.log_format, super::super::LogFormat::Text);
        assert!(c.tls_cert.is_none() && c.tls_key.is_none());
        assert_eq!(c.limits.max_header_bytes, 65_536);
        assert_eq!(c.limits.max_connections, 10_000);
        assert_eq!(c.limits.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.limits.drain_timeout, Duration::from_secs(30));
        assert_eq!(c.whop.api_key.as_ref().map(Secret::expose), Some("apik_test"));
        assert_eq!(c.whop.api_base.to_string(), "https://api.whop.com/");
        assert_eq!(c.whop.app_id.as_deref(), Some("app_test1"));
        assert_eq!(c.whop.api_version_date, "2026-09-15");
        assert_eq!(c.whop.timeout, Duration::from_secs(3));
        assert_eq!(c.whop.rate_limit_per_minute, 500);
        assert_eq!(c.whop.access_api, AccessApi::CheckAccess);
        assert_eq!(c.identity.sources, [SourceKind::UserToken]);
        assert_eq!(c.identity.user_token.header, "x-whop-user-token");
        assert_eq!(
            c.identity.user_token.jwks_url.as_ref().map(ToString::to_string).as_deref(),
            Some("https://api.whop.com/.well-known/jwks.json")
        );
        assert!(c.identity.user_token.public_keys.is_empty());
        assert_eq!(c.identity.user_token.leeway, Duration::from_secs(30));
        assert!(!c.identity.user_token.accept_query_param);
        assert!(c.identity.session.is_none() && c.identity.dev.is_none());
        assert_eq!(c.identity.license_key.header, "x-whop-license-key");
        assert_eq!(
            c.identity.license_key.valid_statuses,
            [
                MembershipStatus::Trialing,
                MembershipStatus::Active,
                MembershipStatus::PastDue,
                MembershipStatus::Canceling,
                MembershipStatus::Completed
            ]
        );
        assert_eq!(c.cache.ttl, Duration::from_secs(60));
        assert_eq!(c.cache.negative_ttl, Duration::from_secs(10));
        assert_eq!(c.cache.stale_if_error, Duration::from_secs(300));
        assert_eq!(c.cache.max_entries, 100_000);
        assert!(c.cache.redis_url.is_none());
        assert_eq!(c.cache.revalidate_streams, Duration::from_secs(60));
        assert!(!c.mirror.enabled);
        assert_eq!(c.mirror.interval, Duration::from_secs(900));
        assert_eq!(c.mirror.max_staleness, Duration::from_secs(3_600));
        assert!(c.webhook.secret.is_none() && c.webhook.legacy_secret.is_none());

        assert_eq!(c.routes.len(), 1);
        let r = &c.routes[0];
        assert_eq!(r.path, "/");
        assert!(r.methods.is_none() && r.host.is_none() && r.checkout_url.is_none());
        assert!(!r.public);
        assert_eq!(r.require, ["prod_test1"]);
        assert_eq!(r.access_level, AccessLevel::Customer);
        assert_eq!(r.mode, RouteMode::Auto);
        assert_eq!(r.on_whop_error, OnWhopError::Deny);
        assert_eq!((r.line, r.column), (5, 1));
        assert!(c.dev_identity_allowed());
    }

    #[test]
    fn the_example_config_loads() {
        let text = include_str!("../../config.example.toml");
        let c = load_ok(text);
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.upstream.as_ref().map(ToString::to_string).as_deref(), Some("http://127.0.0.1:3000/"));
        assert_eq!(c.admin_listen.map(|a| a.to_string()).as_deref(), Some("127.0.0.1:9091"));
        assert_eq!(c.public_url.as_ref().map(ToString::to_string).as_deref(), Some("https://app.example.com/"));
        assert_eq!(c.whop.api_key.as_ref().map(Secret::expose), Some("apik_from_env"));
        assert_eq!(c.identity.sources, [SourceKind::UserToken, SourceKind::Session, SourceKind::LicenseKey]);
        let session = c.identity.session.as_ref();
        assert_eq!(session.and_then(|s| s.client_secret.as_ref()).map(Secret::expose), Some("client-secret-from-env"));
        assert_eq!(session.map(|s| s.cookie_secret.len()), Some(48));
        assert_eq!(session.map(|s| s.cookie_name.as_str()), Some("__Host-whopgate"));
        assert_eq!(session.map(|s| s.lifetime), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(
            c.identity.dev.as_ref().map(|d| (d.user_id.as_str(), d.access_level)),
            Some(("user_dev", AccessLevel::Admin))
        );
        assert_eq!(c.webhook.secret.as_ref().map(Secret::expose), Some("ws_webhooksecretvalue"));
        assert!(c.webhook.legacy_secret.is_none());
        let paths: Vec<&str> = c.routes.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["/assets", "/admin", "/api", "/"]);
        assert!(c.routes[0].public);
        assert_eq!(c.routes[1].access_level, AccessLevel::Admin);
        assert_eq!(c.routes[2].methods, Some(vec![Method::GET, Method::POST]));
        assert_eq!(c.routes[2].mode, RouteMode::Api);
        assert_eq!(
            c.routes[3].checkout_url.as_ref().map(ToString::to_string).as_deref(),
            Some("https://whop.com/checkout/plan_xxxxxxxxxxxxxx")
        );
        assert_eq!(c.resources(), ["biz_xxxxxxxxxxxxxx", "prod_aaaaaaaaaaaaaa", "prod_bbbbbbbbbbbbbb"]);
        let (line, _) = position_of(text, "[[route]]\npath = \"/admin\"");
        assert_eq!(c.routes[1].line, line);
    }

    #[test]
    fn the_example_config_names_its_missing_variables() {
        let text = include_str!("../../config.example.toml");
        let errors = match Config::from_toml_with_env(text, "whopgate.toml", &|_| None) {
            Ok(_) => panic!("loaded without its variables"),
            Err(e) => e.to_string(),
        };
        for var in ["WHOP_API_KEY", "WHOP_CLIENT_SECRET", "WHOPGATE_COOKIE_SECRET", "WHOP_WEBHOOK_SECRET"] {
            assert!(errors.contains(&format!("environment variable `{var}` is not set")), "{var}: {errors}");
        }
    }

    #[test]
    fn every_key_and_enum_is_read() {
        let text = format!(
            r#"listen = "0.0.0.0:9000"
upstream = "http://App.Internal:3000/"
admin_listen = ""
public_url = "http://localhost:9000"
prefix = "/_gate"
trusted_proxies = ["10.0.0.0/8", "192.168.1.10", "::1"]
upstream_timeout = "1m30s"
log_format = "json"
tls_cert = "/etc/gate/cert.pem"
tls_key = "/etc/gate/key.pem"

[limits]
header_read_timeout = "250ms"
max_header_bytes = 8_192
max_connections = 1
drain_timeout = "0s"

[whop]
api_key = "k"
api_base = "http://127.0.0.1:9999/"
app_id = "app_abc"
api_version_date = "2025-01-31"
timeout = "10s"
rate_limit_per_minute = 600
access_api = "members"

[identity]
sources = ["dev", "license_key", "session", "user_token"]

[identity.user_token]
header = "X-Token"
jwks_url = ""
public_keys = ["""
-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAErz8a8vxvexHC0TLT91g7llOdDOsN
uYiGEfic4Qhni+HMfRBuUphOh7F3k8ZcZ1JS9AB5smKrW4S/TbiXrOs9Ow==
-----END PUBLIC KEY-----
"""]
leeway = "0s"
accept_query_param = true

[identity.session]
client_id = "app_abc"
cookie_secret = "{secret}"
previous_cookie_secrets = ["{secret}", "{secret}"]
cookie_name = "gate"
lifetime = "12h"
scopes = ["openid"]
allowed_redirect_hosts = ["Docs.Example.com", "*.example.com:8443"]

[identity.license_key]
header = "X-License"
bearer = true
valid_statuses = ["active", "active", "canceled", "expired", "unresolved", "drafted", "trialing", "past_due", "completed", "canceling"]

[identity.dev]
user_id = "user_abc"
access_level = "customer"

[cache]
ttl = "1s"
negative_ttl = "0s"
stale_if_error = "0s"
max_entries = 1
redis_url = "rediss://:pw@cache:6380/0"
revalidate_streams = "1s"

[mirror]
enabled = true
interval = "1m"
max_staleness = "1m"

[webhook]
secret = "ws_abc"
legacy_secret = "legacy"

[[route]]
path = "/Team/"
methods = ["get", "Delete", "PROPFIND", "get"]
host = "Admin.Example.com"
require = ["biz_a", "biz_b", "biz_a"]
access_level = "admin"
mode = "browser"
on_whop_error = "allow"
checkout_url = "https://whop.com/checkout/plan_x"
"#,
            secret = "s".repeat(32)
        );
        let c = load_ok(&text);
        assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
        assert!(!c.dev_identity_allowed());
        assert_eq!(c.upstream.as_ref().map(ToString::to_string).as_deref(), Some("http://app.internal:3000/"));
        assert!(c.admin_listen.is_none());
        assert_eq!(c.public_url.as_ref().map(ToString::to_string).as_deref(), Some("http://localhost:9000/"));
        assert_eq!(c.prefix, "/_gate");
        let proxies: Vec<String> = c.trusted_proxies.iter().map(ToString::to_string).collect();
        assert_eq!(proxies, ["10.0.0.0/8", "192.168.1.10/32", "::1/128"]);
        assert_eq!(c.upstream_timeout, Duration::from_secs(90));
        assert_eq!(c.log_format, super::super::LogFormat::Json);
        assert_eq!(c.tls_cert, Some(PathBuf::from("/etc/gate/cert.pem")));
        assert_eq!(c.tls_key, Some(PathBuf::from("/etc/gate/key.pem")));
        assert_eq!(c.limits.header_read_timeout, Duration::from_millis(250));
        assert_eq!((c.limits.max_header_bytes, c.limits.max_connections), (8_192, 1));
        assert_eq!(c.limits.drain_timeout, Duration::ZERO);
        assert_eq!(c.whop.api_base.to_string(), "http://127.0.0.1:9999/");
        assert_eq!(c.whop.url("/api/v1/members"), "http://127.0.0.1:9999/api/v1/members");
        assert_eq!(c.whop.api_version_date, "2025-01-31");
        assert_eq!(c.whop.rate_limit_per_minute, 600);
        assert_eq!(c.whop.access_api, AccessApi::Members);
        assert_eq!(
            c.identity.sources,
            [SourceKind::Dev, SourceKind::LicenseKey, SourceKind::Session, SourceKind::UserToken]
        );
        let ut = &c.identity.user_token;
        assert_eq!(ut.header, "x-token");
        assert!(ut.jwks_url.is_none());
        assert_eq!(ut.public_keys.len(), 1);
        assert_eq!((ut.leeway, ut.accept_query_param), (Duration::ZERO, true));
        let Some(s) = &c.identity.session else { panic!("no session") };
        assert_eq!(s.client_id, "app_abc");
        assert!(s.client_secret.is_none());
        assert_eq!(s.previous_cookie_secrets.len(), 2);
        assert_eq!(s.cookie_name, "gate");
        assert_eq!(s.lifetime, Duration::from_secs(12 * 3_600));
        assert_eq!(s.scopes, ["openid"]);
        assert_eq!(s.allowed_redirect_hosts, ["docs.example.com", "*.example.com:8443"]);
        let lk = &c.identity.license_key;
        assert_eq!(lk.header, "x-license");
        assert!(lk.bearer);
        assert_eq!(lk.valid_statuses.len(), 9, "duplicates are dropped");
        assert_eq!(lk.valid_statuses[0], MembershipStatus::Active);
        assert_eq!(c.identity.dev.as_ref().map(|d| d.access_level), Some(AccessLevel::Customer));
        assert_eq!(c.cache.ttl, Duration::from_secs(1));
        assert_eq!((c.cache.negative_ttl, c.cache.stale_if_error), (Duration::ZERO, Duration::ZERO));
        assert_eq!(c.cache.max_entries, 1);
        assert_eq!(c.cache.redis_url.as_deref(), Some("rediss://:pw@cache:6380/0"));
        assert!(c.mirror.enabled);
        assert_eq!(c.webhook.secret.as_ref().map(Secret::expose), Some("ws_abc"));
        assert_eq!(c.webhook.legacy_secret.as_ref().map(Secret::expose), Some("legacy"));
        let r = &c.routes[0];
        assert_eq!(r.path, "/Team");
        assert_eq!(
            r.methods,
            Some(vec![Method::GET, Method::DELETE, Method::from_bytes(b"PROPFIND").unwrap_or(Method::GET)])
        );
        assert_eq!(r.host.as_deref(), Some("admin.example.com"));
        assert_eq!(r.require, ["biz_a", "biz_b"]);
        assert_eq!(
            (r.access_level, r.mode, r.on_whop_error),
            (AccessLevel::Admin, RouteMode::Browser, OnWhopError::Allow)
        );
    }

    #[test]
    fn every_access_api_and_mode_parses() {
        for api in AccessApi::ALL {
            let resource = if *api == AccessApi::Members { "biz_a" } else { "prod_a" };
            let text = format!("{WHOP}access_api = \"{api}\"\n\n[[route]]\npath = \"/\"\nrequire = [\"{resource}\"]\n");
            assert_eq!(load_ok(&text).whop.access_api, *api);
        }
        for mode in RouteMode::ALL {
            assert_eq!(
                load_ok(&route(&format!("path = \"/\"\nrequire = [\"prod_a\"]\nmode = \"{mode}\""))).routes[0].mode,
                *mode
            );
        }
        for level in AccessLevel::ALL {
            let c = load_ok(&route(&format!("path = \"/\"\nrequire = [\"prod_a\"]\naccess_level = \"{level}\"")));
            assert_eq!(c.routes[0].access_level, *level);
        }
        for choice in OnWhopError::ALL {
            let c = load_ok(&route(&format!("path = \"/\"\nrequire = [\"prod_a\"]\non_whop_error = \"{choice}\"")));
            assert_eq!(c.routes[0].on_whop_error, *choice);
        }
        for status in MembershipStatus::ALL {
            let c = load_ok(&table(&format!("[identity.license_key]\nvalid_statuses = [\"{status}\"]")));
            assert_eq!(c.identity.license_key.valid_statuses, [*status]);
        }
    }

    /// Each case: the config, a unique piece of it the error must point at, and part of the
    /// message (or hint). Each config has exactly that one problem.
    #[test]
    fn each_rule_is_reported_at_the_key_or_value_at_fault() {
        let secret = "s".repeat(32);
        let session = format!("[identity.session]\nclient_id = \"app_x\"\ncookie_secret = \"{secret}\"");
        #[rustfmt::skip]
        let cases: Vec<(String, &str, &str)> = vec![
            // top level
            (top("upsteam = \"http://127.0.0.1:3000\""), "upsteam", "unknown key `upsteam` in the top level; did you mean `upstream`?"),
            (top("listen = \"localhost:8080\""), "\"localhost:8080\"", "write \"127.0.0.1:8080\""),
            (top("listen = \":8080\""), "\":8080\"", "no IP address"),
            (top("listen = 8080"), "8080", "`listen` must be a string, found an integer"),
            (top("listen = \"\""), "\"\"", "cannot be empty"),
            (top("admin_listen = \"localhost:9091\""), "\"localhost:9091\"", "names a host"),
            (top("admin_listen = \"127.0.0.1:8080\""), "\"127.0.0.1:8080\"", "collides with `listen`"),
            (top("upstream = \"https://127.0.0.1:3000\""), "\"https:", "not supported yet"),
            (top("upstream = \"http://127.0.0.1:3000/app\""), "\"http:", "path or query"),
            (top("upstream = \"http://127.0.0.1:3000/?a=b\""), "\"http:", "path or query"),
            (top("upstream = \"127.0.0.1:3000\""), "\"127", "not an absolute http(s) URL"),
            (top("upstream = \"http://localhost:8080\""), "\"http:", "would loop"),
            (top("public_url = \"https://app.example.com/app\""), "\"https:", "`public_url` is an origin"),
            (top("public_url = \"ftp://app.example.com\""), "\"ftp:", "not an http(s) URL"),
            (top("prefix = \"/\""), "\"/\"", "cannot be `/`"),
            (top("prefix = \"/gate/\""), "\"/gate/\"", "write \"/gate\""),
            (top("prefix = \"gate\""), "\"gate\"", "does not start with `/`"),
            (top("trusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/33\"]"), "\"10.0.0.0/33\"", "`trusted_proxies`: `10.0.0.0/33` is not a CIDR or IP address"),
            (top("trusted_proxies = [\"proxy.internal\"]"), "\"proxy", "is not a CIDR or IP address"),
            (top("trusted_proxies = \"10.0.0.0/8\""), "\"10.", "must be a list"),
            (top("upstream_timeout = \"0s\""), "\"0s\"", "must be longer than zero"),
            (top("upstream_timeout = \"30\""), "\"30\"", "`upstream_timeout`: `30` has no unit; write a number with a unit"),
            (top("upstream_timeout = 30"), "30", "upstream_timeout = \"30s\""),
            (top("upstream_timeout = \"-1s\""), "\"-1s\"", "negative"),
            (top("upstream_timeout = \"soon\""), "\"soon\"", "`soon` is not a duration; write a number with a unit, like \"250ms\""),
            (top("log_format = \"yaml\""), "\"yaml\"", "`yaml` is not one of \"text\", \"json\""),
            (top("log_format = \"jsn\""), "\"jsn\"", "did you mean `json`?"),
            (top("tls_cert = \"/etc/cert.pem\""), "\"/etc/cert.pem\"", "`tls_cert` is set but `tls_key` is not"),
            (top("tls_cert = \"\"\ntls_key = \"/etc/key.pem\""), "\"/etc/key.pem\"", "`tls_key` is set but `tls_cert` is not"),
            (top("[idenity]\nsources = [\"user_token\"]"), "idenity", "did you mean `identity`?"),
            // [limits]
            (table("[limits]\nmax_header_bytes = 100"), "100", "`limits.max_header_bytes` must be between 8192 and 1048576; found 100"),
            (table("[limits]\nmax_header_bytes = 2_000_000"), "2_000_000", "between 8192 and 1048576"),
            (table("[limits]\nmax_connections = 0"), "0", "`limits.max_connections` must be at least 1; found 0"),
            (table("[limits]\nmax_connections = 1.5"), "1.5", "must be a whole number, found a float"),
            (table("[limits]\nheader_read_timeout = \"0s\""), "\"0s\"", "longer than zero"),
            (table("[limits]\nmax_conections = 5"), "max_conections", "did you mean `max_connections`?"),
            (top("limits = 5"), "5", "`limits` must be a table, found an integer"),
            // [whop]
            (whop("api_base = \"https://api.whop.com/?x=1\""), "\"https:", "query string"),
            (whop("api_base = \"api.whop.com\""), "\"api.", "not an absolute http(s) URL"),
            (whop("api_version_date = \"15-09-2026\""), "\"15-", "is not a date"),
            (whop("timeout = \"0ms\""), "\"0ms\"", "longer than zero"),
            (whop("rate_limit_per_minute = 0"), "0", "between 1 and 60000; found 0"),
            (whop("rate_limit_per_minute = 60001"), "60001", "Whop allows 600"),
            (whop("rate_limit_per_minute = \"500\""), "\"500\"", "must be a whole number, found a string"),
            (whop("access_api = \"graphql\""), "\"graphql\"", "is not one of \"check_access\", \"members\""),
            (whop("acess_api = \"members\""), "acess_api", "did you mean `access_api`?"),
            (whop("listen = \"127.0.0.1:1\""), "listen =", "`listen` is a top-level key: move it above the first `[table]` header"),
            (format!("[whop]\napi_key = \"k\"\napp_id = \"xyz\"\n{ROUTE}"), "\"xyz\"", "`whop.app_id`: `xyz` is not an app id"),
            (format!("[whop]\napi_key = 5\napp_id = \"app_x\"\n{ROUTE}"), "5", "`whop.api_key` must be a string, found an integer"),
            (format!("[whop]\napi_key = \"\"\napp_id = \"app_x\"\n{ROUTE}"), "\"\"", "`whop.api_key` is empty: route `/` requires Whop resources"),
            (format!("[whop]\napp_id = \"app_x\"\n{ROUTE}"), "[whop]", "`whop.api_key` is missing"),
            (format!("[identity]\nsources = [\"license_key\"]\n{ROUTE}"), "[[route]]", "`whop.api_key` is missing: route `/` requires"),
            (format!("[whop]\napi_key = \"k\"\n{ROUTE}"), "[whop]", "`whop.app_id` is required when the `user_token` identity source is on"),
            (format!("[whop]\napi_key = \"k\"\napp_id = \"\"\n{ROUTE}"), "\"\"", "`whop.app_id` is required"),
            (format!("[whop]\napi_key = \"k\"\n[identity]\nsources = [\"license_key\", \"user_token\"]\n{ROUTE}"), "\"user_token\"", "`whop.app_id` is required"),
            // [identity]
            (table("[identity]\nsources = [\"user_token\", \"user_token\"]"), "\"user_token\"]", "`user_token` is listed twice"),
            (format!("public_url = \"https://a.example\"\n{}", table("[identity]\nsources = [\"session\"]")), "\"session\"", "its table is missing; add [identity.session]"),
            (table("[identity]\nsources = [\"user_token\", \"dev\"]"), "\"dev\"", "add [identity.dev]"),
            (table("[identity]\nsources = [\"cookie\"]"), "\"cookie\"", "`identity.sources`: `cookie` is not one of"),
            (table("[identity]\nsources = [\"licence_key\"]"), "\"licence_key\"", "did you mean `license_key`?"),
            (table("[identity]\nsources = []"), "[]", "`identity.sources` is empty"),
            (table("[identity]\nsource = [\"user_token\"]"), "source =", "did you mean `sources`?"),
            // [identity.user_token]
            (table("[identity.user_token]\nheader = \"x bad\""), "\"x bad\"", "not a valid header name"),
            (table("[identity.user_token]\njwks_url = \"jwks.json\""), "\"jwks.json\"", "not an absolute http(s) URL"),
            (table("[identity.user_token]\npublic_keys = [\"/etc/whop.pem\"]"), "\"/etc/whop.pem\"", "not a file path"),
            (table("[identity.user_token]\nleeway = \"soon\""), "\"soon\"", "is not a duration"),
            (table("[identity.user_token]\naccept_query_param = \"yes\""), "\"yes\"", "must be true or false, found a string"),
            // [identity.session]
            (table(&format!("{session}\n[identity]")).replace("\n[identity]\n", "\n"), "[identity.session]", "`public_url` is required when the `session` identity source is on"),
            (format!("public_url = \"https://a.example\"\n{}", table("[identity.session]\ncookie_secret = \"${WHOPGATE_COOKIE_SECRET}\"")), "[identity.session]", "[identity.session] needs `client_id`"),
            (format!("public_url = \"https://a.example\"\n{}", table("[identity.session]\nclient_id = \"app_x\"")), "[identity.session]", "needs `cookie_secret`"),
            (format!("public_url = \"https://a.example\"\n{}", table(&session.replace("app_x", "abc"))), "\"abc\"", "not an app id"),
            (format!("public_url = \"https://a.example\"\n{}", table("[identity.session]\nclient_id = \"app_x\"\ncookie_secret = \"tooshort\"")), "\"tooshort\"", "`identity.session.cookie_secret` is 8 bytes long; it must be at least 32"),
            (format!("public_url = \"https://a.example\"\n{}", table(&format!("{session}\nprevious_cookie_secrets = [\"{secret}\", \"old\"]"))), "\"old\"", "an entry of `identity.session.previous_cookie_secrets` is 3 bytes long"),
            (format!("public_url = \"https://a.example\"\n{}", table(&format!("{session}\ncookie_name = \"a b\""))), "\"a b\"", "not a valid cookie name"),
            (format!("public_url = \"https://a.example\"\n{}", table(&format!("{session}\nscopes = [\"profile\"]"))), "[\"profile\"]", "must include \"openid\""),
            (format!("public_url = \"https://a.example\"\n{}", table(&format!("{session}\nlifetime = \"0s\""))), "\"0s\"", "longer than zero"),
            (format!("public_url = \"https://a.example\"\n{}", table(&format!("{session}\nallowed_redirect_hosts = [\"https://x.com\"]"))), "\"https://x.com\"", "not a host name"),
            (format!("public_url = \"https://a.example\"\n{}", table(&format!("{session}\ncookie_secert = \"x\""))), "cookie_secert", "did you mean `cookie_secret`?"),
            (table(&format!("[identity]\nsources = [\"user_token\", \"session\"]\n{session}")), "\"session\"", "`public_url` is required"),
            // [identity.license_key]
            (table("[identity.license_key]\nvalid_statuses = [\"active\", \"paid\"]"), "\"paid\"", "`paid` is not one of \"trialing\""),
            (table("[identity.license_key]\nvalid_statuses = []"), "[]", "no license key could be valid"),
            (table("[identity.license_key]\nheader = \"\""), "\"\"", "not a valid header name"),
            (table("[identity.license_key]\nbearer = 1"), "bearer = |1", "must be true or false, found an integer"),
            // [identity.dev]
            (table("[identity.dev]\nuser_id = \"dev\""), "\"dev\"", "`identity.dev.user_id`: `dev` is not a user id"),
            (table("[identity.dev]\naccess_level = \"admin\""), "[identity.dev]", "[identity.dev] needs `user_id`"),
            (table("[identity.dev]\nuser_id = \"user_x\"\naccess_level = \"root\""), "\"root\"", "is not one of \"customer\", \"admin\""),
            // [cache]
            (table("[cache]\nttl = \"0s\""), "\"0s\"", "`cache.ttl` must be longer than zero"),
            (table("[cache]\nmax_entries = 0"), "0", "`cache.max_entries` must be at least 1"),
            (table("[cache]\nredis_url = \"http://cache:6379\""), "\"http:", "`cache.redis_url` is not a Redis URL"),
            (table("[cache]\nrevalidate_streams = \"0s\""), "\"0s\"", "longer than zero"),
            (table("[cache]\nttl = \"${TTL_UNSET}\""), "\"${TTL_UNSET}\"", "`cache.ttl`: environment variable `TTL_UNSET` is not set"),
            // [mirror]
            (table("[mirror]\ninterval = \"0s\""), "\"0s\"", "longer than zero"),
            (table("[mirror]\nenabled = true\nmax_staleness = \"5m\""), "\"5m\"", "`mirror.max_staleness` (5m) is shorter than `mirror.interval` (15m)"),
            (table("[mirror]\nenabled = \"yes\""), "\"yes\"", "must be true or false"),
            // [webhook]
            (table("[webhook]\nsecret = 1"), "secret = |1", "`webhook.secret` must be a string"),
            (table("[webhook]\nsecrett = \"x\""), "secrett", "did you mean `secret`?"),
            // [[route]]
            (route("path = \"/a\"\npublic = true\nrequire = [\"prod_a\"]"), "require =", "`public = true` but also has `require`"),
            (route("path = \"/a\""), "[[route]]", "add `require = [\"prod_…\"]` or `public = true`"),
            (route("path = \"/a\"\nrequire = []"), "require =", "neither requires anything nor is public"),
            (route("path = \"/a\"\nrequire = [\"plan_x\"]"), "\"plan_x\"", "`require`: `plan_x` is not a Whop resource id"),
            (route("path = \"/a\"\nrequire = [\"prod_a\"]\naccess_level = \"owner\""), "\"owner\"", "`owner` is not one of \"customer\", \"admin\""),
            (route("path = \"/a\"\nrequire = [\"prod_a\"]\nmode = \"brower\""), "\"brower\"", "did you mean `browser`?"),
            (route("path = \"/a\"\nrequire = [\"prod_a\"]\non_whop_error = \"retry\""), "\"retry\"", "is not one of \"deny\", \"allow\""),
            (route("path = \"/a\"\nrequire = [\"prod_a\"]\nmethods = [\"GET\", \"FETCH ME\"]"), "\"FETCH ME\"", "is not an HTTP method"),
            (route("path = \"/a\"\nrequire = [\"prod_a\"]\nmethods = []"), "[]", "omit `methods` to match every method"),
            (route("path = \"api\"\nrequire = [\"prod_a\"]"), "\"api\"", "`path`: `api` does not start with `/`"),
            (route("require = [\"prod_a\"]"), "[[route]]", "this [[route]] has no `path`"),
            (route("path = \"/a/../b\"\nrequire = [\"prod_a\"]"), "\"/a/../b\"", "`..` segment"),
            (route("path = \"/a//b\"\nrequire = [\"prod_a\"]"), "\"/a//b\"", "`//`"),
            (route("path = \"/a%2Fb\"\nrequire = [\"prod_a\"]"), "\"/a%2Fb\"", "encoded slash"),
            (route("path = \"/a?b=1\"\nrequire = [\"prod_a\"]"), "\"/a?b=1\"", "query"),
            (route("path = \"/a\"\nrequire = [\"prod_a\"]\nhost = \"https://x.com\""), "\"https://x.com\"", "not a host name"),
            (route("path = \"/a\"\nrequire = [\"prod_a\"]\ncheckout_url = \"whop.com/checkout\""), "\"whop.com/checkout\"", "not an absolute http(s) URL"),
            (route("path = \"/a\"\nrequire = [\"prod_a\"]\npubic = true"), "pubic", "unknown key `pubic` in [[route]]; did you mean `public`?"),
            (format!("{WHOP}\n[route]\npath = \"/\"\nrequire = [\"prod_a\"]\n"), "[route]", "write each rule under `[[route]]`"),
            (format!("route = []\n{WHOP}"), "[]", "add at least one [[route]]"),
            (format!("{WHOP}access_api = \"members\"\n\n[[route]]\npath = \"/\"\nrequire = [\"biz_a\", \"prod_a\"]\n"), "\"prod_a\"", "a member record is per company"),
            (format!("{WHOP}access_api = \"memberships_v5\"\n\n[[route]]\npath = \"/\"\nrequire = [\"prod_a\"]\naccess_level = \"admin\"\n"), "\"admin\"", "membership lists do not say who is a team member"),
            (route("path = \"/a\"\nrequire = \"prod_a\""), "\"prod_a\"", "`require` must be a list, found a string"),
            (route("path = \"/a\"\nrequire = [\"prod_a\"]\npublic = \"no\""), "\"no\"", "`public` must be true or false"),
            (format!("route = \"x\"\n{WHOP}"), "\"x\"", "`route` must be a list of tables, found a string"),
            (format!("route = [1]\n{WHOP}"), "1]", "each route must be a table, found an integer"),
            // integers, booleans and tables from odd places
            (table("[limits]\nmax_connections = -5"), "-5", "at least 1; found -5"),
            (table("[limits]\nmax_connections = 0x0"), "0x0", "at least 1; found 0"),
            (table("[limits]\nmax_connections = \"${MAX_UNSET}\""), "\"${MAX_UNSET}\"", "environment variable `MAX_UNSET` is not set"),
            (table("[limits]\nmax_connections = \"${YES}\""), "\"${YES}\"", "its variable gives something else"),
            (table("[mirror]\nenabled = \"${MAX}\""), "\"${MAX}\"", "must be true or false, but its variable gives something else"),
            (table("[cache]\nttl = \"${MAX}\""), "\"${MAX}\"", "`cache.ttl`: `42` has no unit"),
            (table("[identity]\nsession = 5"), "session = |5", "`identity.session` must be a table, found an integer"),
            (table("[cache]\nttl = true"), "true", "`cache.ttl` must be a duration string, found a boolean"),
            (table("[cache]\nttl = 1979-05-27"), "1979", "found a date-time"),
            // TOML syntax
            (top("listen = \"127.0.0.1:8080"), "\n[whop]", "invalid TOML: invalid basic string"),
            (top("listen = \"127.0.0.1:8080\"\nlisten = \"127.0.0.1:8081\""), "listen = \"127.0.0.1:8081", "invalid TOML: duplicate key"),
        ];
        let mut failures = Vec::new();
        for (text, needle, part) in &cases {
            let errors = match Config::from_toml_with_env(text, "f.toml", &env) {
                Ok(_) => {
                    failures.push(format!("no error for `{needle}`\n--- config:\n{text}"));
                    continue;
                }
                Err(e) => e.0,
            };
            let (line, column) = position_of(text, needle);
            let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
            let want = format!("f.toml:{line}:{column}: error: ");
            if errors.len() != 1 || !shown[0].starts_with(&want) || !shown[0].contains(part) {
                failures.push(format!(
                    "for `{needle}` expected one error at {want}… containing `{part}`, got:\n{}\n--- config:\n{text}",
                    shown.join("\n")
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} cases failed:\n\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n\n")
        );
    }

    #[test]
    fn no_route_points_at_the_end_of_the_file() {
        let errors = load_err(WHOP);
        assert_eq!(errors.len(), 1);
        assert_eq!((errors[0].line, errors[0].column), (4, 1));
        assert_eq!(
            errors[0].to_string(),
            "f.toml:4:1: error: the config has no [[route]] rule; add at least one [[route]]; a request that matches no rule is denied"
        );
        let empty = load_err("");
        assert!(empty.iter().any(|e| e.message.contains("no [[route]]") && (e.line, e.column) == (1, 1)));
    }

    #[test]
    fn five_problems_are_all_reported_in_file_order() {
        let text = r#"listen = "localhost:8080"
upsteam = "http://127.0.0.1:3000"

[whop]
api_key = "k"
app_id = "app_x"

[cache]
ttl = "60"

[[route]]
path = "/admin"
require = ["prod_a"]
mode = "brower"

[[route]]
path = "/"
"#;
        let errors = load_err(text);
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "f.toml:1:10: error: `listen`: `localhost:8080` names a host; a listen address must be an IP address and port; write \"127.0.0.1:8080\" (or \"[::1]:8080\")",
                "f.toml:2:1: error: unknown key `upsteam` in the top level; did you mean `upstream`?",
                "f.toml:9:7: error: `cache.ttl`: `60` has no unit; write a number with a unit, like \"250ms\", \"60s\", \"5m\", \"1h30m\" or \"7d\"",
                "f.toml:14:8: error: `mode`: `brower` is not one of \"auto\", \"browser\", \"api\"; did you mean `browser`?",
                "f.toml:16:1: error: this route neither requires anything nor is public; add `require = [\"prod_…\"]` or `public = true`",
            ]
        );
        let all = Config::from_toml_with_env(text, "f.toml", &env).err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(all.lines().count(), 5);
    }

    #[test]
    fn a_route_with_a_bad_path_still_has_its_other_keys_checked() {
        let text =
            route("path = \"/api/*\"\nrequire = [\"prod_a\"]\nmode = \"API\"\nhost = \"a b\"\ncheckout_url = \"x\"");
        let shown: Vec<String> = load_err(&text).iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), 4, "{shown:#?}");
        assert!(shown[0].contains("`path`") && shown[1].contains("`mode`"), "{shown:#?}");
        assert!(shown[2].contains("`host`") && shown[3].contains("`checkout_url`"), "{shown:#?}");
    }

    #[test]
    fn a_misspelt_route_key_reports_the_typo_and_its_consequence() {
        let errors = load_err(&route("path = \"/\"\nrequires = [\"prod_a\"]"));
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), 2, "{shown:?}");
        assert!(shown[0].contains("neither requires anything"), "{shown:?}");
        assert!(shown[1].contains("unknown key `requires` in [[route]]; did you mean `require`?"), "{shown:?}");
    }

    #[test]
    fn variables_are_replaced_in_every_string_value() {
        let text = r#"trusted_proxies = ["10.0.0.0/8", "${PROXY}"]
upstream_timeout = "${TTL}"

[whop]
api_key = "${WHOP_API_KEY}"
app_id = "app_x"

[limits]
max_connections = "${MAX}"

[mirror]
enabled = "${YES}"

[cache]
ttl = "${TTL}"

[webhook]
secret = "${WEIRD}"

[[route]]
path = "/"
require = ["${PRODUCT}", "prod_b"]
"#;
        let c = load_ok(text);
        let proxies: Vec<String> = c.trusted_proxies.iter().map(ToString::to_string).collect();
        assert_eq!(proxies, ["10.0.0.0/8", "10.1.0.0/16"]);
        assert_eq!(c.upstream_timeout, Duration::from_secs(90));
        assert_eq!(c.cache.ttl, Duration::from_secs(90));
        assert_eq!(c.limits.max_connections, 42);
        assert!(c.mirror.enabled);
        assert_eq!(c.whop.api_key.as_ref().map(Secret::expose), Some("apik_from_env"));
        assert_eq!(c.routes[0].require, ["prod_fromenv", "prod_b"]);
        assert_eq!(c.resources(), ["prod_fromenv", "prod_b"]);
        // Substituted after parsing: quotes, newlines and `${` in a value change nothing else.
        assert_eq!(c.webhook.secret.as_ref().map(Secret::expose), Some("a\"b'c\n[whop]\n#d = ${YES}"));
    }

    #[test]
    fn unset_variables_are_named_wherever_they_are() {
        let text = "trusted_proxies = [\"${NO_PROXY_VAR}\"]\n[whop]\napi_key = \"${NO_KEY}\"\napp_id = \"app_x\"\n[cache]\nttl = \"${NO_TTL}\"\n\n[[route]]\npath = \"/\"\nrequire = [\"${NO_PRODUCT}\"]\n";
        let shown: Vec<String> = load_err(text).iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "f.toml:1:20: error: `trusted_proxies`: environment variable `NO_PROXY_VAR` is not set; set `NO_PROXY_VAR` in whopgate's environment, or write the value here directly",
                "f.toml:3:11: error: `whop.api_key`: environment variable `NO_KEY` is not set; set `NO_KEY` in whopgate's environment, or write the value here directly",
                "f.toml:6:7: error: `cache.ttl`: environment variable `NO_TTL` is not set; set `NO_TTL` in whopgate's environment, or write the value here directly",
                "f.toml:10:12: error: `require`: environment variable `NO_PRODUCT` is not set; set `NO_PRODUCT` in whopgate's environment, or write the value here directly",
            ]
        );
    }

    #[test]
    fn an_empty_variable_is_pointed_out() {
        let text = format!("[whop]\napi_key = \"${{EMPTY}}\"\napp_id = \"app_x\"\n{ROUTE}");
        let shown: Vec<String> = load_err(&text).iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), 1);
        assert!(
            shown[0]
                .starts_with("f.toml:2:11: error: `whop.api_key` is empty (it comes from `${EMPTY}`, which is empty)"),
            "{}",
            shown[0]
        );
    }

    #[test]
    fn secrets_never_appear_in_errors_or_debug_output() {
        // A short cookie secret from the environment and one written inline.
        let text = "public_url = \"https://a.example\"\n[whop]\napi_key = \"${WHOP_API_KEY}\"\napp_id = \"app_x\"\n[identity.session]\nclient_id = \"app_x\"\ncookie_secret = \"${SHORT}\"\nprevious_cookie_secrets = [\"inline-hunter3\"]\n[webhook]\nsecret = 12\n[cache]\nredis_url = \"http://:hunter4@cache\"\n";
        let all =
            Config::from_toml_with_env(text, "f.toml", &env).err().map(|e| format!("{e}\n{e:?}")).unwrap_or_default();
        assert!(all.contains("`identity.session.cookie_secret` is 7 bytes long"), "{all}");
        assert!(all.contains("an entry of `identity.session.previous_cookie_secrets` is 14 bytes long"), "{all}");
        for secret in ["hunter2", "hunter3", "hunter4", "apik_from_env"] {
            assert!(!all.contains(secret), "`{secret}` leaked:\n{all}");
        }

        let text = include_str!("../../config.example.toml");
        let c = load_ok(text);
        let debug = format!("{c:?}");
        for secret in ["apik_from_env", "client-secret-from-env", &"c".repeat(48), "ws_webhooksecretvalue"] {
            assert!(!debug.contains(secret), "`{secret}` leaked in Debug");
        }
        assert!(debug.contains("Secret(***)"));
    }

    #[test]
    fn sources_default_to_the_tables_present() {
        let secret = "s".repeat(32);
        let text = format!(
            "public_url = \"https://a.example\"\n{WHOP}\n[identity.dev]\nuser_id = \"user_x\"\n[identity.license_key]\nbearer = true\n[identity.session]\nclient_id = \"app_x\"\ncookie_secret = \"{secret}\"\n{ROUTE}"
        );
        let c = load_ok(&text);
        assert_eq!(
            c.identity.sources,
            [SourceKind::UserToken, SourceKind::Session, SourceKind::LicenseKey, SourceKind::Dev]
        );
        assert_eq!(c.identity.dev.as_ref().map(|d| d.access_level), Some(AccessLevel::Admin));
    }

    #[test]
    fn the_jwks_url_follows_api_base_unless_set() {
        let c = load_ok(&whop("api_base = \"http://127.0.0.1:9999/whop/\""));
        assert_eq!(c.whop.api_base.to_string(), "http://127.0.0.1:9999/whop");
        assert_eq!(
            c.identity.user_token.jwks_url.as_ref().map(ToString::to_string).as_deref(),
            Some("http://127.0.0.1:9999/whop/.well-known/jwks.json")
        );
        let c = load_ok(&table("[identity.user_token]\njwks_url = \"https://keys.example/jwks\""));
        assert_eq!(
            c.identity.user_token.jwks_url.as_ref().map(ToString::to_string).as_deref(),
            Some("https://keys.example/jwks")
        );
        let c = load_ok(&table("[identity.user_token]\njwks_url = \"\""));
        assert!(c.identity.user_token.jwks_url.is_none());
    }

    #[test]
    fn a_dev_only_setup_needs_no_whop_credentials() {
        let text = "listen = \"0.0.0.0:8080\"\n[identity]\nsources = [\"dev\"]\n[identity.dev]\nuser_id = \"user_dev\"\n\n[[route]]\npath = \"/\"\nrequire = [\"prod_a\"]\n";
        let c = load_ok(text);
        assert!(c.whop.api_key.is_none() && c.whop.app_id.is_none());
        // Not a config error: the runtime refuses to start with it.
        assert!(!c.dev_identity_allowed());
        let loopback = load_ok(&text.replace("0.0.0.0:8080", "[::1]:8080"));
        assert!(loopback.dev_identity_allowed());
    }

    #[test]
    fn license_keys_and_the_mirror_need_an_api_key() {
        let public_only = "[whop]\napp_id = \"app_x\"\n\n[[route]]\npath = \"/\"\npublic = true\n";
        assert!(load_ok(public_only).whop.api_key.is_none());
        let with_license = public_only.replace("[whop]", "[identity]\nsources = [\"license_key\"]\n[whop]");
        let e = load_err(&with_license);
        assert_eq!(e.len(), 1);
        assert!(e[0].message.contains("license keys are looked up with the Whop API"), "{}", e[0]);
        let with_mirror = format!("{public_only}\n[mirror]\nenabled = true\n");
        let e = load_err(&with_mirror);
        assert!(e.len() == 1 && e[0].message.contains("the mirror syncs memberships"), "{e:?}");
    }

    #[test]
    fn route_positions_and_canonical_forms() {
        let text = format!(
            "{WHOP}\n[[route]]\npath = \"/%61dmin/\"\nrequire = [\"prod_a\"]\n\n  [[route]]\npath = \"/café\"\npublic = true\n"
        );
        let c = load_ok(&text);
        assert_eq!((c.routes[0].line, c.routes[0].column), (5, 1));
        assert_eq!(c.routes[0].path, "/admin");
        assert_eq!((c.routes[1].line, c.routes[1].column), (9, 3));
        assert_eq!(c.routes[1].path, "/caf%C3%A9");
        assert!(c.routes[1].public && c.routes[1].require.is_empty());
    }

    #[test]
    fn resources_are_distinct_in_first_seen_order() {
        let text = format!(
            "{WHOP}\n[[route]]\npath = \"/b\"\nrequire = [\"prod_b\", \"exp_a\"]\n[[route]]\npath = \"/a\"\nrequire = [\"biz_c\", \"prod_b\"]\n[[route]]\npath = \"/\"\nrequire = [\"exp_a\"]\n"
        );
        assert_eq!(load_ok(&text).resources(), ["prod_b", "exp_a", "biz_c"]);
    }

    #[test]
    fn inline_tables_work_like_headers() {
        let text =
            format!("limits = {{ max_connections = 5 }}\n{WHOP}\n[[route]]\npath = \"/\"\nrequire = [\"prod_a\"]\n");
        assert_eq!(load_ok(&text).limits.max_connections, 5);
        let e = load_err(&format!("limits = {{ max_conections = 5 }}\n{WHOP}{ROUTE}"));
        assert_eq!((e[0].line, e[0].column), (1, 12));
    }

    #[test]
    fn empty_strings_mean_unset() {
        let text = format!(
            "upstream = \"\"\nadmin_listen = \"\"\npublic_url = \"\"\ntls_cert = \"\"\ntls_key = \"\"\n{WHOP}\n[cache]\nredis_url = \"\"\n[webhook]\nsecret = \"\"\nlegacy_secret = \"\"\n{ROUTE}"
        );
        let c = load_ok(&text);
        assert!(c.upstream.is_none() && c.admin_listen.is_none() && c.public_url.is_none());
        assert!(c.tls_cert.is_none() && c.tls_key.is_none() && c.cache.redis_url.is_none());
        assert!(c.webhook.secret.is_none() && c.webhook.legacy_secret.is_none());
    }

    #[test]
    fn a_syntax_error_is_reported_with_its_place() {
        let text = "listen = \"127.0.0.1:8080\"\n[whop\napi_key = \"k\"\n";
        let e = load_err(text);
        assert!(!e.is_empty());
        assert_eq!(e[0].line, 2, "{}", e[0]);
        assert!(e[0].message.starts_with("invalid TOML"), "{}", e[0]);
    }
}
