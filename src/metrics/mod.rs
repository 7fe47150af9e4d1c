//! Prometheus metrics (SPEC §6).
//!
//! Label sets used on the request path are resolved once (per rule, per decision, per status) and
//! kept as handles, so a request costs a few atomic adds and no map lookup or lock. The metrics a
//! request updates are [`per_core`]: each core adds to a cache line of its own.

pub mod per_core;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub use per_core::{Counter, CounterFamily, Histogram, HistogramFamily};

/// How a request was judged: the `decision` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Identity known and access granted.
    Allow,
    /// A public route.
    Public,
    /// A protected route and no credential.
    Unauthenticated,
    /// A credential that failed verification.
    InvalidCredentials,
    /// Identity known, no access (or no rule matched).
    Forbidden,
    /// Access could not be decided (Whop failing and nothing cached).
    Unavailable,
    /// The request path was refused.
    BadRequest,
}

impl Decision {
    /// Every decision, in label order.
    pub const ALL: [Decision; 7] = [
        Decision::Allow,
        Decision::Public,
        Decision::Unauthenticated,
        Decision::InvalidCredentials,
        Decision::Forbidden,
        Decision::Unavailable,
        Decision::BadRequest,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Public => "public",
            Decision::Unauthenticated => "unauthenticated",
            Decision::InvalidCredentials => "invalid_credentials",
            Decision::Forbidden => "forbidden",
            Decision::Unavailable => "unavailable",
            Decision::BadRequest => "bad_request",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The request counters of one route (or of "no route"), one per decision.
#[derive(Debug, Clone)]
pub struct RouteCounters {
    by_decision: [Arc<Counter>; 7],
}

impl RouteCounters {
    /// The counter for `decision` on this route.
    pub fn get(&self, decision: Decision) -> &Counter {
        &self.by_decision[decision.index()]
    }
}

/// The lookup counters of one cache, resolved once (`whopgate_cache_requests_total{cache=…}`).
#[derive(Debug, Clone)]
pub struct CacheCounters {
    /// Served from the cache, fresh.
    pub hit: Arc<Counter>,
    /// Not in the cache (or expired): a fetch was started.
    pub miss: Arc<Counter>,
    /// Expired, but served because the source is failing (stale-if-error).
    pub stale: Arc<Counter>,
    /// Joined a fetch another request had already started.
    pub coalesced: Arc<Counter>,
}

/// Buckets for whole-request durations: from 100 µs (a cache hit) to 30 s (a slow upstream).
const REQUEST_BUCKETS: [f64; 14] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0];
/// Buckets for Whop API calls: 5 ms to 10 s.
const WHOP_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 3.0, 10.0];

/// All of whopgate's metrics and the registry that renders them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: CounterFamily,
    request_duration: [Arc<Histogram>; 7],
    /// `whopgate_whop_api_requests_total{endpoint, status}`
    pub whop_api_requests: IntCounterVec,
    /// `whopgate_whop_api_duration_seconds{endpoint}`
    pub whop_api_duration: HistogramVec,
    /// `whopgate_cache_requests_total{cache, result}`
    pub cache_requests: CounterFamily,
    /// `whopgate_cache_entries{cache}`
    pub cache_entries: IntGaugeVec,
    /// `whopgate_webhooks_total{result}`
    pub webhooks: IntCounterVec,
    /// `whopgate_streams_closed_total`: open streams (WebSocket, SSE, long responses) ended
    /// because a re-judgement no longer allowed them.
    pub streams_closed: IntCounter,
    /// `whopgate_redis_up`: 1 while the shared store answers, 0 while it does not (or is not
    /// configured).
    pub redis_up: IntGauge,
    /// `whopgate_redis_errors_total`: Redis commands that failed or timed out (each a miss).
    pub redis_errors: IntCounter,
    /// `whopgate_redis_reconnects_total`: subscriptions to the replicas' invalidations made
    /// again after being lost.
    pub redis_reconnects: IntCounter,
    /// `whopgate_forward_auth_total{front_end, decision}`
    forward_auth: IntCounterVec,
    upstream_requests: CounterFamily,
    upstream_by_status: Box<[OnceLock<Arc<Counter>>]>,
    upstream_error: Arc<Counter>,
}

impl Metrics {
    /// A fresh registry holding every whopgate metric.
    pub fn new() -> Self {
        // The names and label sets below are fixed and valid, so registration cannot fail; a
        // failure would be a programming error caught by the tests.
        let registry = Registry::new();
        let requests = per_core_counters(
            &registry,
            "whopgate_requests_total",
            "Requests judged by the gate, by decision and route rule.",
            &["decision", "route"],
        );
        let request_duration_family = per_core_histograms(
            &registry,
            "whopgate_request_duration_seconds",
            "Whole request duration, from the first byte of the request to the last of the response.",
            &["decision"],
            &REQUEST_BUCKETS,
        );
        let request_duration = Decision::ALL.map(|d| request_duration_family.with_label_values(&[d.as_str()]));
        let whop_api_requests = counter_vec(
            &registry,
            "whopgate_whop_api_requests_total",
            "Calls to the Whop API, by endpoint and HTTP status (or error).",
            &["endpoint", "status"],
        );
        let whop_api_duration = histogram_vec(
            &registry,
            "whopgate_whop_api_duration_seconds",
            "Duration of Whop API calls.",
            &["endpoint"],
            &WHOP_BUCKETS,
        );
        let cache_requests = per_core_counters(
            &registry,
            "whopgate_cache_requests_total",
            "Cache lookups, by cache and result.",
            &["cache", "result"],
        );
        let cache_entries =
            IntGaugeVec::new(Opts::new("whopgate_cache_entries", "Entries held per cache."), &["cache"])
                .map(|g| register(&registry, g))
                .unwrap_or_else(|e| unreachable_metric(e));
        let webhooks = counter_vec(&registry, "whopgate_webhooks_total", "Webhook deliveries, by result.", &["result"]);
        let streams_closed = IntCounter::new(
            "whopgate_streams_closed_total",
            "Open streams ended because access was no longer granted when re-judged.",
        )
        .map(|c| register(&registry, c))
        .unwrap_or_else(|e| unreachable_metric(e));
        let redis_up = IntGauge::new("whopgate_redis_up", "1 while the shared Redis store answers, else 0.")
            .map(|g| register(&registry, g))
            .unwrap_or_else(|e| unreachable_metric(e));
        let redis_errors = IntCounter::new(
            "whopgate_redis_errors_total",
            "Redis commands that failed or timed out (each one a miss: Whop is asked instead).",
        )
        .map(|c| register(&registry, c))
        .unwrap_or_else(|e| unreachable_metric(e));
        let redis_reconnects = IntCounter::new(
            "whopgate_redis_reconnects_total",
            "Subscriptions to the other replicas' invalidations made again after being lost.",
        )
        .map(|c| register(&registry, c))
        .unwrap_or_else(|e| unreachable_metric(e));
        let forward_auth = counter_vec(
            &registry,
            "whopgate_forward_auth_total",
            "Forward-auth decisions (also counted in whopgate_requests_total), by the front end that asked and decision.",
            &["front_end", "decision"],
        );
        let upstream_requests = per_core_counters(
            &registry,
            "whopgate_upstream_requests_total",
            "Requests forwarded to the upstream, by response status (or error).",
            &["status"],
        );
        let upstream_error = upstream_requests.with_label_values(&["error"]);
        Self {
            registry,
            requests,
            request_duration,
            whop_api_requests,
            whop_api_duration,
            cache_requests,
            cache_entries,
            webhooks,
            streams_closed,
            redis_up,
            redis_errors,
            redis_reconnects,
            forward_auth,
            upstream_requests,
            upstream_by_status: (0..600).map(|_| OnceLock::new()).collect(),
            upstream_error,
        }
    }

    /// The counters for a route label (a rule's path, or `""` when no rule matched).
    pub fn route_counters(&self, route: &str) -> RouteCounters {
        RouteCounters { by_decision: Decision::ALL.map(|d| self.requests.with_label_values(&[d.as_str(), route])) }
    }

    /// Records one whole request.
    pub fn observe_request(&self, decision: Decision, elapsed: Duration) {
        self.request_duration[decision.index()].observe(elapsed);
    }

    /// Counts one upstream answer by status.
    pub fn upstream_status(&self, status: u16) {
        match self.upstream_by_status.get(usize::from(status)) {
            Some(slot) => slot.get_or_init(|| self.upstream_requests.with_label_values(&[itoa(status).as_str()])).inc(),
            None => self.upstream_requests.with_label_values(&[itoa(status).as_str()]).inc(),
        }
    }

    /// Counts one forward-auth decision.
    pub(crate) fn forward_auth(&self, front_end: crate::gate::forward_auth::FrontEnd, decision: Decision) {
        self.forward_auth.with_label_values(&[front_end.as_str(), decision.as_str()]).inc();
    }

    /// Counts one upstream failure (refused, reset, timed out).
    pub fn upstream_error(&self) {
        self.upstream_error.inc();
    }

    /// The lookup counters of one cache (`decision`, `token` or `license`).
    pub fn cache_counters(&self, cache: &str) -> CacheCounters {
        let counter = |result: &str| self.cache_requests.with_label_values(&[cache, result]);
        CacheCounters {
            hit: counter("hit"),
            miss: counter("miss"),
            stale: counter("stale"),
            coalesced: counter("coalesced"),
        }
    }

    /// A gauge handle for one cache's entry count.
    pub fn cache_entries(&self, cache: &str) -> IntGauge {
        self.cache_entries.with_label_values(&[cache])
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec only fails on a malformed metric family, which we never build.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "could not render metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn itoa(n: u16) -> String {
    n.to_string()
}

fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    if let Err(e) = registry.register(Box::new(metric.clone())) {
        unreachable_metric(e);
    }
    metric
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels)
        .map(|c| register(registry, c))
        .unwrap_or_else(|e| unreachable_metric(e))
}

fn per_core_counters(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> CounterFamily {
    CounterFamily::new(name, help, labels).map(|c| register(registry, c)).unwrap_or_else(|e| unreachable_metric(e))
}

fn per_core_histograms(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramFamily {
    HistogramFamily::new(name, help, labels, buckets)
        .map(|h| register(registry, h))
        .unwrap_or_else(|e| unreachable_metric(e))
}

fn histogram_vec(registry: &Registry, name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
    HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels)
        .map(|h| register(registry, h))
        .unwrap_or_else(|e| unreachable_metric(e))
}

#[cold]
fn unreachable_metric(e: prometheus::Error) -> ! {
    // Only reachable by a programming error in the fixed definitions above (see the tests).
    panic!("whopgate metric definition is invalid: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_in_prometheus_text() {
        let m = Metrics::new();
        let route = m.route_counters("/admin");
        route.get(Decision::Forbidden).inc();
        m.observe_request(Decision::Forbidden, Duration::from_millis(2));
        m.upstream_status(200);
        m.upstream_status(200);
        m.upstream_error();
        m.cache_counters("decision").hit.inc();
        m.cache_entries("decision").set(3);
        m.whop_api_requests.with_label_values(&["access", "200"]).inc();
        m.whop_api_duration.with_label_values(&["access"]).observe(0.01);
        m.webhooks.with_label_values(&["applied"]).inc();
        let text = m.render();
        for line in [
            "# TYPE whopgate_requests_total counter",
            r#"whopgate_requests_total{decision="forbidden",route="/admin"} 1"#,
            "# TYPE whopgate_request_duration_seconds histogram",
            r#"whopgate_request_duration_seconds_bucket{decision="forbidden",le="0.0025"} 1"#,
            r#"whopgate_upstream_requests_total{status="200"} 2"#,
            r#"whopgate_upstream_requests_total{status="error"} 1"#,
            r#"whopgate_cache_requests_total{cache="decision",result="hit"} 1"#,
            r#"whopgate_cache_entries{cache="decision"} 3"#,
            r#"whopgate_whop_api_requests_total{endpoint="access",status="200"} 1"#,
            r#"whopgate_whop_api_duration_seconds_count{endpoint="access"} 1"#,
            r#"whopgate_webhooks_total{result="applied"} 1"#,
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
