//! Why a Whop API call gave no answer. Never contains the API key, a license key or a token.

use std::fmt;
use std::time::Duration;

/// A failed Whop API call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WhopError {
    /// No answer within `whop.timeout` (retries included).
    Timeout,
    /// The connection failed (refused, reset, DNS, TLS).
    Network(String),
    /// Whop answered 5xx (after the one retry).
    Server {
        /// The HTTP status.
        status: u16,
    },
    /// Whop answered 429; calls to this endpoint are paused this long.
    RateLimited {
        /// How long Whop asked us to wait.
        retry_after: Duration,
    },
    /// Calls to this endpoint are paused after a 429; no call was made.
    Paused {
        /// Time left until calls resume.
        retry_after: Duration,
    },
    /// The endpoint's rate budget is spent (`whop.rate_limit_per_minute` for v1 calls, a fixed
    /// budget below Whop's limit for the legacy lists); no call was made.
    BudgetExhausted {
        /// Time until the oldest call in the window leaves it.
        retry_after: Duration,
    },
    /// Whop refused the API key (401/403): a configuration problem.
    Unauthorized {
        /// The HTTP status.
        status: u16,
        /// Whop's message.
        message: String,
    },
    /// Whop does not know the user, resource or membership asked about (404).
    NotFound,
    /// Whop answered with another 4xx.
    Client {
        /// The HTTP status.
        status: u16,
        /// Whop's message.
        message: String,
    },
    /// Whop's answer did not have the documented shape.
    Decode(String),
    /// No `whop.api_key` is configured.
    NoApiKey,
}

impl WhopError {
    /// Is this Whop being unavailable (serve stale, or answer 503) rather than an answer?
    pub fn is_unavailable(&self) -> bool {
        !matches!(self, WhopError::NotFound)
    }

    /// How long a client should wait before retrying, for `Retry-After`.
    pub fn retry_after(&self) -> Duration {
        match self {
            WhopError::RateLimited { retry_after }
            | WhopError::Paused { retry_after }
            | WhopError::BudgetExhausted { retry_after } => (*retry_after).max(Duration::from_secs(1)),
            _ => Duration::from_secs(5),
        }
    }
}

impl fmt::Display for WhopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WhopError::Timeout => f.write_str("the Whop API did not answer in time"),
            WhopError::Network(e) => write!(f, "could not reach the Whop API: {e}"),
            WhopError::Server { status } => write!(f, "the Whop API failed ({status})"),
            WhopError::RateLimited { retry_after } => {
                write!(f, "the Whop API is rate limiting us; pausing for {}s", retry_after.as_secs())
            }
            WhopError::Paused { retry_after } => {
                write!(f, "calls to the Whop API are paused after a 429 for {}s more", retry_after.as_secs())
            }
            WhopError::BudgetExhausted { retry_after } => {
                write!(
                    f,
                    "the rate budget for this Whop endpoint is spent; next call possible in {}s",
                    retry_after.as_secs().max(1)
                )
            }
            WhopError::Unauthorized { status, message } => {
                write!(f, "the Whop API refused our API key ({status}): {message}; check whop.api_key")
            }
            WhopError::NotFound => f.write_str("the Whop API does not know it (404)"),
            WhopError::Client { status, message } => write!(f, "the Whop API refused the call ({status}): {message}"),
            WhopError::Decode(e) => write!(f, "unexpected answer from the Whop API: {e}"),
            WhopError::NoApiKey => f.write_str("no whop.api_key is configured"),
        }
    }
}

impl std::error::Error for WhopError {}
