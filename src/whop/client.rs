//! `WhopClient`: the small typed Whop API client the gate needs (SPEC §1), on reqwest with rustls
//! and pooled connections.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderValue};
use serde::de::DeserializeOwned;

use super::budget::{CallBudget, SharedBudget, SharedTake};
use super::error::WhopError;
use super::types::{Access, AccessResponse, ErrorBody, Membership};
use crate::config::WhopConfig;
use crate::metrics::Metrics;

/// The Whop endpoints whopgate calls: the `endpoint` label of the Whop metrics, and the unit of
/// Whop's per-operation rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhopEndpoint {
    /// The v1 access check.
    Access,
    /// Retrieve a membership (by id or license key).
    Membership,
    /// The v1 member list of a company.
    Members,
    /// The v2 membership list.
    MembershipsV2,
    /// The v5 company membership list.
    MembershipsV5,
}

impl WhopEndpoint {
    /// Every endpoint, in the order of [`WhopEndpoint::index`].
    pub const ALL: [WhopEndpoint; 5] = [
        WhopEndpoint::Access,
        WhopEndpoint::Membership,
        WhopEndpoint::Members,
        WhopEndpoint::MembershipsV2,
        WhopEndpoint::MembershipsV5,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            WhopEndpoint::Access => "access",
            WhopEndpoint::Membership => "membership",
            WhopEndpoint::Members => "members",
            WhopEndpoint::MembershipsV2 => "memberships_v2",
            WhopEndpoint::MembershipsV5 => "memberships_v5",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The client-side budget: `whop.rate_limit_per_minute` for v1 operations; for the legacy
    /// lists, which Whop limits per 10 s (v2: 100, v5: 20; SPEC §1), nine tenths of that.
    fn budget(self, per_minute: u32) -> CallBudget {
        const TEN_SECONDS: Duration = Duration::from_secs(10);
        match self {
            WhopEndpoint::Access | WhopEndpoint::Membership | WhopEndpoint::Members => CallBudget::new(per_minute),
            WhopEndpoint::MembershipsV2 => CallBudget::per_window(90, TEN_SECONDS),
            WhopEndpoint::MembershipsV5 => CallBudget::per_window(18, TEN_SECONDS),
        }
    }

    /// The shortest pause after a 429: a 429 from v5 means a 60 s cool-down (SPEC §1), whatever
    /// its body says.
    fn least_pause(self) -> Duration {
        match self {
            WhopEndpoint::MembershipsV5 => Duration::from_secs(60),
            _ => Duration::from_secs(1),
        }
    }
}

/// Longest pause a 429 can impose; protects against a garbled "Try again in 999999 seconds".
const MAX_PAUSE: Duration = Duration::from_secs(600);
/// Pause after a 429 that names no duration.
const DEFAULT_PAUSE: Duration = Duration::from_secs(10);

/// Calls the Whop API with the configured key, version date, timeout and rate budgets.
#[derive(Debug)]
pub struct WhopClient {
    http: reqwest::Client,
    base: String,
    headers: Option<HeaderMap>,
    timeout: Duration,
    budgets: [CallBudget; WhopEndpoint::ALL.len()],
    /// With several replicas, the budgets they share.
    shared_budget: std::sync::OnceLock<Arc<dyn SharedBudget>>,
    metrics: Arc<Metrics>,
}

impl WhopClient {
    /// A client for `config`. Without an API key every call fails with [`WhopError::NoApiKey`].
    pub fn new(config: &WhopConfig, http: reqwest::Client, metrics: Arc<Metrics>) -> Self {
        let headers = config.api_key.as_ref().and_then(|key| {
            let mut auth = HeaderValue::from_str(&format!("Bearer {}", key.expose())).ok()?;
            auth.set_sensitive(true);
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, auth);
            if let Ok(date) = HeaderValue::from_str(&config.api_version_date) {
                headers.insert("api-version-date", date);
            }
            headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
            Some(headers)
        });
        Self {
            http,
            base: config.url(""),
            headers,
            timeout: config.timeout,
            budgets: WhopEndpoint::ALL.map(|e| e.budget(config.rate_limit_per_minute)),
            shared_budget: std::sync::OnceLock::new(),
            metrics,
        }
    }

    /// Draws on `shared` too (after this client's own budgets): the replicas' calls together
    /// stay within Whop's limits. Set once.
    pub fn share_budget(&self, shared: Arc<dyn SharedBudget>) {
        let _ = self.shared_budget.set(shared);
    }

    /// A reqwest client suited to the Whop API (rustls, pooled, HTTP/2 when offered).
    pub fn http_client() -> reqwest::Client {
        reqwest::Client::builder()
            .user_agent(concat!("whopgate/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()
            .unwrap_or_default()
    }

    /// What `user_id` holds on `resource_id`. An unknown user or resource is `NoAccess`.
    pub async fn check_access(&self, user_id: &str, resource_id: &str) -> Result<Access, WhopError> {
        let path = format!("/api/v1/users/{}/access/{}", segment(user_id), segment(resource_id));
        match self.get::<AccessResponse>(WhopEndpoint::Access, &path).await {
            Ok(answer) => Ok(answer.access()),
            Err(WhopError::NotFound) => Ok(Access::NoAccess),
            Err(e) => Err(e),
        }
    }

    /// The membership with this id or license key.
    pub async fn membership(&self, id_or_license_key: &str) -> Result<Membership, WhopError> {
        let path = format!("/api/v1/memberships/{}", segment(id_or_license_key));
        self.get(WhopEndpoint::Membership, &path).await
    }

    /// A deadline `whop.timeout` from now: one call, or one walk through a list's pages.
    pub(super) fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    /// GET with the API key; one retry on a connection error or 5xx; everything (retry
    /// included) within `whop.timeout`.
    async fn get<T: DeserializeOwned>(&self, endpoint: WhopEndpoint, path: &str) -> Result<T, WhopError> {
        self.get_by(endpoint, path, self.deadline()).await
    }

    /// GET `path` (with its query) before `deadline`, as [`WhopClient::get`].
    pub(super) async fn get_by<T: DeserializeOwned>(
        &self,
        endpoint: WhopEndpoint,
        path: &str,
        deadline: Instant,
    ) -> Result<T, WhopError> {
        let headers = self.headers.as_ref().ok_or(WhopError::NoApiKey)?;
        let budget = &self.budgets[endpoint.index()];
        let url = format!("{}{}", self.base, path);
        let mut retried = false;
        loop {
            budget.take()?;
            if let Some(shared) = self.shared_budget.get() {
                match shared.take(endpoint.as_str(), budget.limit(), budget.window()).await {
                    SharedTake::Granted | SharedTake::Unavailable => {}
                    SharedTake::Exhausted(retry_after) => return Err(WhopError::BudgetExhausted { retry_after }),
                    SharedTake::Paused(retry_after) => return Err(WhopError::Paused { retry_after }),
                }
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(WhopError::Timeout);
            }
            let started = Instant::now();
            let attempt = tokio::time::timeout(remaining, self.attempt::<T>(&url, headers)).await;
            let outcome = attempt.unwrap_or(Err(Attempt::Timeout));
            self.record(endpoint, &outcome, started.elapsed());
            match outcome {
                Ok(value) => return Ok(value),
                Err(Attempt::Connect(_) | Attempt::Status(500..=599, _)) if !retried => {
                    retried = true;
                }
                Err(failure) => {
                    let mut error = failure.into_error();
                    if let WhopError::RateLimited { retry_after } = &mut error {
                        *retry_after = (*retry_after).max(endpoint.least_pause());
                        budget.pause(*retry_after);
                        if let Some(shared) = self.shared_budget.get() {
                            shared.pause(endpoint.as_str(), *retry_after).await;
                        }
                    }
                    if !matches!(error, WhopError::NotFound) {
                        tracing::warn!(endpoint = endpoint.as_str(), error = %error, "Whop API call failed");
                    }
                    return Err(error);
                }
            }
        }
    }

    async fn attempt<T: DeserializeOwned>(&self, url: &str, headers: &HeaderMap) -> Result<T, Attempt> {
        let response = self.http.get(url).headers(headers.clone()).send().await.map_err(|e| {
            // reqwest puts the URL in its errors; a license key can be in that URL.
            let e = e.without_url();
            if e.is_connect() { Attempt::Connect(e.to_string()) } else { Attempt::Network(e.to_string()) }
        })?;
        let status = response.status().as_u16();
        if status == 429 {
            let header_seconds = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let body = response.text().await.unwrap_or_default();
            let seconds = header_seconds.or_else(|| seconds_in_message(&body));
            let pause = seconds.map_or(DEFAULT_PAUSE, Duration::from_secs).clamp(Duration::from_secs(1), MAX_PAUSE);
            return Err(Attempt::RateLimited(pause));
        }
        if !(200..300).contains(&status) {
            let body = response.text().await.unwrap_or_default();
            return Err(Attempt::Status(status, ErrorBody::message_in(&body).unwrap_or_default()));
        }
        let bytes = response.bytes().await.map_err(|e| Attempt::Network(e.without_url().to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| Attempt::Decode(e.to_string()))
    }

    fn record<T>(&self, endpoint: WhopEndpoint, outcome: &Result<T, Attempt>, elapsed: Duration) {
        let status = match outcome {
            Ok(_) => "200".to_owned(),
            Err(Attempt::Status(code, _)) => code.to_string(),
            Err(Attempt::RateLimited(_)) => "429".to_owned(),
            Err(Attempt::Decode(_)) => "200".to_owned(),
            Err(Attempt::Timeout | Attempt::Connect(_) | Attempt::Network(_)) => "error".to_owned(),
        };
        self.metrics.whop_api_requests.with_label_values(&[endpoint.as_str(), status.as_str()]).inc();
        self.metrics.whop_api_duration.with_label_values(&[endpoint.as_str()]).observe(elapsed.as_secs_f64());
    }
}

/// One attempt's failure, before retry logic.
#[derive(Debug)]
enum Attempt {
    Timeout,
    Connect(String),
    Network(String),
    RateLimited(Duration),
    Status(u16, String),
    Decode(String),
}

impl Attempt {
    fn into_error(self) -> WhopError {
        match self {
            Attempt::Timeout => WhopError::Timeout,
            Attempt::Connect(e) | Attempt::Network(e) => WhopError::Network(e),
            Attempt::RateLimited(retry_after) => WhopError::RateLimited { retry_after },
            Attempt::Status(404, _) => WhopError::NotFound,
            Attempt::Status(status @ (401 | 403), message) => WhopError::Unauthorized { status, message },
            Attempt::Status(status @ 500..=599, _) => WhopError::Server { status },
            Attempt::Status(status, message) => WhopError::Client { status, message },
            Attempt::Decode(e) => WhopError::Decode(e),
        }
    }
}

/// "Try again in 12 seconds." → 12
fn seconds_in_message(body: &str) -> Option<u64> {
    let message = ErrorBody::message_in(body)?;
    let after = &message[message.find(" in ")? + 4..];
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// A path segment or query value, percent-encoded (ids are plain, license keys might not be).
pub(super) fn segment(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, SEGMENT).to_string()
}

const SEGMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_pause_from_whops_message() {
        let body = r#"{"error":{"type":"rate_limit_exceeded","message":"Try again in 12 seconds."}}"#;
        assert_eq!(seconds_in_message(body), Some(12));
        assert_eq!(seconds_in_message(r#"{"error":{"message":"slow down"}}"#), None);
        assert_eq!(seconds_in_message("garbage"), None);
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(segment("user_abc"), "user_abc");
        assert_eq!(segment("KEY/../x?y"), "KEY%2F..%2Fx%3Fy");
    }
}
