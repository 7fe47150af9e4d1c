//! Why forwarding failed, and the one place that turns it into an answer (502 or 504, or 400 when
//! the client's own body was broken).

use std::fmt;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::body::ProxyBody;

/// A request the gate cleared but the upstream did not answer.
#[derive(Debug)]
pub enum ProxyError {
    /// No response head within `upstream_timeout`.
    Timeout(Duration),
    /// The upstream refused or dropped the TCP connection.
    Connect(std::io::Error),
    /// The upstream connection broke mid-exchange or spoke invalid HTTP.
    Upstream(super::conn::UpstreamError),
    /// The upstream answered `101` to a request that did not ask to upgrade.
    UnexpectedUpgrade,
}

impl From<super::conn::UpstreamError> for ProxyError {
    fn from(error: super::conn::UpstreamError) -> Self {
        match error {
            super::conn::UpstreamError::Timeout => ProxyError::Timeout(std::time::Duration::ZERO),
            other => ProxyError::Upstream(other),
        }
    }
}

impl ProxyError {
    /// The client's request body broke (a malformed chunk, a connection cut mid-body): the
    /// client's fault, not the upstream's.
    pub fn is_client_fault(&self) -> bool {
        matches!(self, ProxyError::Upstream(super::conn::UpstreamError::RequestBody(_)))
    }

    /// `400` for the client's broken body, `504` for a timeout, `502` for everything else.
    pub fn status(&self) -> StatusCode {
        match self {
            _ if self.is_client_fault() => StatusCode::BAD_REQUEST,
            ProxyError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// The answer the client gets. It says what failed but not where the upstream lives.
    pub fn into_response(self) -> Response<ProxyBody> {
        let text = match self {
            _ if self.is_client_fault() => "the request body is malformed\n",
            ProxyError::Timeout(_) => "upstream did not answer in time\n",
            _ => "upstream unavailable\n",
        };
        let mut response = Response::new(ProxyBody::local(text));
        *response.status_mut() = self.status();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::Timeout(d) => write!(f, "no response head within {}", humantime::format_duration(*d)),
            ProxyError::Connect(e) => write!(f, "could not connect: {e}"),
            ProxyError::Upstream(e) => write!(f, "upstream connection failed: {e}"),
            ProxyError::UnexpectedUpgrade => f.write_str("upstream switched protocols unasked"),
        }
    }
}

impl std::error::Error for ProxyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProxyError::Connect(e) => Some(e),
            ProxyError::Upstream(e) => Some(e),
            _ => None,
        }
    }
}
