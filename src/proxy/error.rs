//! Why forwarding failed: 502 or 504, or 400 when the client's own body was broken (the answer
//! itself is made in [`crate::gate::answer`]).

use std::fmt;
use std::time::Duration;

use http::Response;

use super::body::ProxyBody;
use crate::gate::answer::{Answer, UpstreamFailure};
use crate::gate::negotiate::ResponseStyle;

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

    /// The answer the client gets (made in [`crate::gate::answer`]).
    pub fn into_response(self) -> Response<ProxyBody> {
        let failure = match self {
            _ if self.is_client_fault() => UpstreamFailure::ClientBody,
            ProxyError::Timeout(_) => UpstreamFailure::Timeout,
            _ => UpstreamFailure::Unavailable,
        };
        Answer::Upstream(failure).into_response(ResponseStyle::Api).map(ProxyBody::local)
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
