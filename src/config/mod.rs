//! TEMPORARY stand-in for the config module (replaced by the real one on merge).
#![allow(missing_docs)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AccessLevel {
    #[default]
    Customer,
    Admin,
}
impl AccessLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Admin => "admin",
        }
    }
}
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RouteMode {
    #[default]
    Auto,
    Browser,
    Api,
}
impl RouteMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Browser => "browser",
            Self::Api => "api",
        }
    }
}
impl OnWhopError {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deny => "deny",
            Self::Allow => "allow",
        }
    }
}
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnWhopError {
    #[default]
    Deny,
    Allow,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub path: String,
    pub methods: Option<Vec<http::Method>>,
    pub host: Option<String>,
    pub public: bool,
    pub require: Vec<String>,
    pub access_level: AccessLevel,
    pub mode: RouteMode,
    pub on_whop_error: OnWhopError,
    pub checkout_url: Option<http::Uri>,
    pub line: u32,
    pub column: u32,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_connections: usize,
    pub drain_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub file: String,
    pub listen: SocketAddr,
    pub upstream: Option<http::Uri>,
    pub admin_listen: Option<SocketAddr>,
    pub prefix: String,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub upstream_timeout: Duration,
    pub log_format: LogFormat,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub limits: Limits,
    pub routes: Vec<RouteConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    listen: Option<String>,
    upstream: Option<String>,
    admin_listen: Option<String>,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    upstream_timeout: Option<String>,
    log_format: Option<LogFormat>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    route: Vec<RawRoute>,
}
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    header_read_timeout: Option<String>,
    max_header_bytes: Option<usize>,
    max_connections: Option<usize>,
    drain_timeout: Option<String>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    path: String,
    methods: Option<Vec<String>>,
    host: Option<String>,
    #[serde(default)]
    public: bool,
    #[serde(default)]
    require: Vec<String>,
    #[serde(default)]
    access_level: AccessLevel,
    #[serde(default)]
    mode: RouteMode,
    #[serde(default)]
    on_whop_error: OnWhopError,
    checkout_url: Option<String>,
}

#[derive(Debug)]
pub struct ConfigErrors(pub Vec<String>);
impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}
impl std::error::Error for ConfigErrors {}

fn dur(s: Option<String>, d: Duration) -> Result<Duration, ConfigErrors> {
    match s {
        None => Ok(d),
        Some(s) => humantime::parse_duration(&s).map_err(|e| ConfigErrors(vec![e.to_string()])),
    }
}

impl Config {
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors(vec![e.to_string()]))?;
        Self::from_toml(&text, &path.display().to_string())
    }
    pub fn from_toml(text: &str, file: &str) -> Result<Config, ConfigErrors> {
        let raw: Raw = toml::from_str(text).map_err(|e| ConfigErrors(vec![e.to_string()]))?;
        let e = |m: String| ConfigErrors(vec![m]);
        Ok(Config {
            file: file.to_owned(),
            listen: raw
                .listen
                .as_deref()
                .unwrap_or("127.0.0.1:8080")
                .parse()
                .map_err(|x| e(format!("{x}")))?,
            upstream: raw
                .upstream
                .map(|u| u.parse())
                .transpose()
                .map_err(|x| e(format!("{x}")))?,
            admin_listen: raw
                .admin_listen
                .map(|u| u.parse())
                .transpose()
                .map_err(|x| e(format!("{x}")))?,
            prefix: "/.whopgate".into(),
            trusted_proxies: raw
                .trusted_proxies
                .iter()
                .map(|p| p.parse())
                .collect::<Result<_, _>>()
                .map_err(|x| e(format!("{x}")))?,
            upstream_timeout: dur(raw.upstream_timeout, Duration::from_secs(30))?,
            log_format: raw.log_format.unwrap_or_default(),
            tls_cert: None,
            tls_key: None,
            limits: Limits {
                header_read_timeout: dur(raw.limits.header_read_timeout, Duration::from_secs(10))?,
                max_header_bytes: raw.limits.max_header_bytes.unwrap_or(65536),
                max_connections: raw.limits.max_connections.unwrap_or(10000),
                drain_timeout: dur(raw.limits.drain_timeout, Duration::from_secs(30))?,
            },
            routes: raw
                .route
                .into_iter()
                .map(|r| RouteConfig {
                    path: r.path,
                    methods: r.methods.map(|m| m.iter().filter_map(|m| m.parse().ok()).collect()),
                    host: r.host,
                    public: r.public,
                    require: r.require,
                    access_level: r.access_level,
                    mode: r.mode,
                    on_whop_error: r.on_whop_error,
                    checkout_url: r.checkout_url.and_then(|u| u.parse().ok()),
                    line: 0,
                    column: 0,
                })
                .collect(),
        })
    }
}
