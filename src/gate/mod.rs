//! The gate: where a request is judged.
//!
//! For every request the gate normalises the path ([`crate::path`]), removes identity headers the
//! client may have forged, finds the route rule ([`crate::route`]) and decides: forward (with
//! identity headers) or answer with a denial ([`denial`]). It is a tower layer, so the same gate
//! runs in front of the sidecar proxy and inside an existing axum or hyper service.
//!
//! ```
//! use whopgate::{Config, Gate};
//! use tower::{Layer, ServiceExt, service_fn};
//! use http::{Request, Response, StatusCode};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::from_toml(r#"
//!     [whop]
//!     app_id = "app_xxxxxxxxxxxxxx"
//!
//!     [[route]]
//!     path = "/assets"
//!     public = true
//! "#, "inline.toml")?;
//! let gate = Gate::from_config(&config).await?;
//! let app = gate.layer().layer(service_fn(|_req: Request<String>| async {
//!     Ok::<_, std::convert::Infallible>(Response::new(String::from("hello")))
//! }));
//!
//! let public = app.clone().oneshot(Request::get("/assets/app.js").body(String::new())?).await?;
//! assert_eq!(public.status(), StatusCode::OK);
//! let other = app.oneshot(Request::get("/secret").body(String::new())?).await?;
//! assert_eq!(other.status(), StatusCode::FORBIDDEN);
//! # Ok(())
//! # }
//! ```

mod body;
pub mod denial;
pub mod negotiate;
mod record;
pub mod request_id;
mod service;

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, Uri};

pub use body::GateBody;
pub use denial::Denial;
pub use record::ACCESS_TARGET;
pub use service::{GateLayer, GateService, ResponseFuture};

use crate::config::Config;
use crate::metrics::{Decision, Metrics, RouteCounters};
use crate::path;
use crate::proxy::headers::strip_identity_headers;
use crate::route::{RouteTable, Rule};
use record::LogLine;

/// The gate, built once from the config and shared by every connection and worker.
#[derive(Debug, Clone)]
pub struct Gate {
    state: Arc<GateState>,
}

/// Why a gate could not be built.
#[derive(Debug)]
pub enum GateError {}

impl std::fmt::Display for GateError {
    fn fmt(&self, _f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {}
    }
}

impl std::error::Error for GateError {}

impl Gate {
    /// Builds the gate a config describes.
    pub async fn from_config(config: &Config) -> Result<Gate, GateError> {
        let metrics = Arc::new(Metrics::new());
        let routes = RouteTable::new(&config.routes);
        let route_labels = routes
            .rules()
            .iter()
            .map(|r| Arc::<str>::from(r.path.as_str()))
            .collect::<Vec<_>>();
        let route_counters = route_labels.iter().map(|l| metrics.route_counters(l)).collect();
        let no_route_counters = metrics.route_counters("");
        Ok(Gate {
            state: Arc::new(GateState {
                routes,
                route_labels,
                route_counters,
                no_route_counters,
                metrics,
            }),
        })
    }

    /// The tower layer that puts this gate in front of a service.
    pub fn layer(&self) -> GateLayer {
        GateLayer::new(self.state.clone())
    }

    /// The gate's metrics (render them with [`Metrics::render`]).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.state.metrics
    }

    /// The route table in match order.
    pub fn routes(&self) -> &RouteTable {
        &self.state.routes
    }
}

#[derive(Debug)]
pub(crate) struct GateState {
    routes: RouteTable,
    route_labels: Vec<Arc<str>>,
    route_counters: Vec<RouteCounters>,
    no_route_counters: RouteCounters,
    metrics: Arc<Metrics>,
}

/// The gate's verdict on one request.
pub(crate) enum Judgement {
    /// Pass the (rewritten) request on.
    Forward {
        decision: Decision,
        log: Option<Box<LogLine>>,
    },
    /// Answer with this response.
    Deny {
        response: Response<Bytes>,
        decision: Decision,
        log: Option<Box<LogLine>>,
    },
}

impl GateState {
    /// Judges a request, rewriting it for forwarding: normalised path, forged identity headers
    /// removed.
    fn judge<B>(&self, req: &mut Request<B>, request_id: &HeaderValue, log: bool) -> Judgement {
        strip_identity_headers(req.headers_mut());

        let normalized = match path::normalize(req.uri().path()) {
            Ok(Cow::Borrowed(_)) => None,
            Ok(Cow::Owned(p)) => Some(p),
            Err(rejection) => return self.deny(req, None, Denial::BadPath(rejection), request_id, log),
        };
        if let Some(p) = normalized {
            if !set_path(req, &p) {
                // Never forward a spelling other than the one we matched.
                let rejection = path::PathRejection::BadPercentEncoding;
                return self.deny(req, None, Denial::BadPath(rejection), request_id, log);
            }
        }

        let host = request_host(req);
        let Some(rule) = self.routes.find(req.method(), host, req.uri().path()) else {
            return self.deny(req, None, Denial::NoRule, request_id, log);
        };
        if rule.public {
            return self.forward(req, rule, Decision::Public, request_id, log);
        }
        self.deny(
            req,
            Some(rule),
            Denial::Unauthenticated { login_url: None },
            request_id,
            log,
        )
    }

    fn forward<B>(
        &self,
        req: &Request<B>,
        rule: &Rule,
        decision: Decision,
        request_id: &HeaderValue,
        log: bool,
    ) -> Judgement {
        self.route_counters[rule.index].get(decision).inc();
        let log = log.then(|| self.log_line(req, Some(rule), request_id, "-"));
        Judgement::Forward { decision, log }
    }

    fn deny<B>(
        &self,
        req: &Request<B>,
        rule: Option<&Rule>,
        denial: Denial,
        request_id: &HeaderValue,
        log: bool,
    ) -> Judgement {
        let decision = denial.decision();
        match rule {
            Some(rule) => self.route_counters[rule.index].get(decision).inc(),
            None => self.no_route_counters.get(decision).inc(),
        }
        let log = log.then(|| self.log_line(req, rule, request_id, denial.reason()));
        let style = negotiate::style(rule.map(|r| r.mode), req.method(), req.headers());
        Judgement::Deny {
            response: denial.into_response(style),
            decision,
            log,
        }
    }

    fn log_line<B>(
        &self,
        req: &Request<B>,
        rule: Option<&Rule>,
        request_id: &HeaderValue,
        reason: &'static str,
    ) -> Box<LogLine> {
        Box::new(LogLine {
            method: req.method().clone(),
            path: req.uri().path().to_owned(),
            rule: rule.map(|r| self.route_labels[r.index].clone()),
            request_id: request_id.clone(),
            user: None,
            reason,
        })
    }
}

/// The host the client addressed: the URI's authority (HTTP/2, absolute form) or `Host`.
fn request_host<B>(req: &Request<B>) -> Option<&str> {
    match req.uri().host() {
        Some(_) => req.uri().authority().map(|a| a.as_str()),
        None => req.headers().get(header::HOST).and_then(|h| h.to_str().ok()),
    }
}

/// Replaces the request's path, keeping scheme, authority and query. False if it could not.
fn set_path<B>(req: &mut Request<B>, path: &str) -> bool {
    let target = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let mut parts = req.uri().clone().into_parts();
    let Ok(pq) = PathAndQuery::try_from(target) else {
        return false;
    };
    parts.path_and_query = Some(pq);
    match Uri::from_parts(parts) {
        Ok(uri) => {
            *req.uri_mut() = uri;
            true
        }
        Err(_) => false,
    }
}
