//! One request's measurement and access-log line, emitted when its response body is done.

use std::sync::Arc;
use std::time::Instant;

use http::Method;
use http::header::HeaderValue;

use super::service::LayerGate;
use crate::metrics::Decision;

/// The access log's tracing target: filter it with `RUST_LOG=whopgate::access=off` (or `=info`).
pub const ACCESS_TARGET: &str = "whopgate::access";

/// What the access log says of a request, captured only when the access log is on.
#[derive(Debug)]
pub(crate) struct LogLine {
    pub method: Method,
    pub path: String,
    pub rule: Option<Arc<str>>,
    pub request_id: HeaderValue,
    pub user: Option<Arc<str>>,
    pub reason: &'static str,
}

/// Measures a request from its start until its response body is dropped.
#[derive(Debug)]
pub(crate) struct Record {
    start: Instant,
    /// `None` for whopgate's own endpoints, which are not route decisions.
    decision: Option<Decision>,
    status: u16,
    gate: LayerGate,
    log: Option<Box<LogLine>>,
}

impl Record {
    pub fn new(start: Instant, decision: Option<Decision>, gate: LayerGate, log: Option<Box<LogLine>>) -> Self {
        Self { start, decision, status: 0, gate, log }
    }

    pub fn set_status(&mut self, status: u16) {
        self.status = status;
    }

    /// The gate that judged the request.
    pub fn gate(&self) -> &LayerGate {
        &self.gate
    }
}

/// Is the access log on? Checked once per request, so a disabled log costs nothing more.
pub(crate) fn access_log_enabled() -> bool {
    tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO)
}

impl Drop for Record {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed();
        if let Some(decision) = self.decision {
            self.gate.metrics.observe_request(decision, elapsed);
        }
        if let Some(line) = self.log.take() {
            tracing::info!(
                target: ACCESS_TARGET,
                method = %line.method,
                path = %line.path,
                status = self.status,
                rule = %line.rule.as_deref().unwrap_or("-"),
                decision = %self.decision.map_or("endpoint", Decision::as_str),
                reason = %line.reason,
                user = %line.user.as_deref().unwrap_or("-"),
                duration_ms = %format_args!("{:.3}", elapsed.as_secs_f64() * 1000.0),
                request_id = %line.request_id.to_str().unwrap_or("-"),
                "request"
            );
        }
    }
}
