//! The gate: where a request is judged.
//!
//! For every request the gate settles the host ([`crate::authority`]) and normalises the path
//! ([`crate::path`]), removes identity headers the client may have forged and headers that would
//! re-route the request in the app ([`client_headers`]), finds the route rule ([`crate::route`]) and decides: forward (with
//! identity headers, delivered by a [`Handoff`]) or answer with a denial ([`denial`]). It is a
//! tower layer, so the same gate runs in front of the sidecar proxy and inside an existing axum
//! or hyper service.
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
//! let public = app.clone().oneshot(Request::get("http://app.example/assets/app.js").body(String::new())?).await?;
//! assert_eq!(public.status(), StatusCode::OK);
//! let other = app.oneshot(Request::get("http://app.example/secret").body(String::new())?).await?;
//! assert_eq!(other.status(), StatusCode::FORBIDDEN);
//! # Ok(())
//! # }
//! ```

pub mod answer;
mod body;
mod builder;
pub mod client_headers;
mod denial;
mod endpoints;
pub(crate) mod forward_auth;
mod handoff;
mod judge;
pub(crate) mod method_override;
pub mod negotiate;
mod record;
pub mod request_id;
mod service;
mod stream_watch;
mod user;

use std::sync::{Arc, Weak};
use std::time::Duration;

use http::header::HeaderValue;

pub use body::GateBody;
pub use builder::GateBuilder;
pub use handoff::{
    Cleared, Handoff, IdentityHeaders, InsertIdentity, X_WHOP_ACCESS_LEVEL, X_WHOP_RESOURCE_ID, X_WHOP_USER_ID,
    X_WHOPGATE_SOURCE,
};
pub use service::{GateLayer, GateService, RequestBody, ResponseFuture};
pub use stream_watch::{StreamControl, StreamEnd};
#[cfg(feature = "axum")]
pub use user::MissingWhopUser;
pub use user::WhopUser;

use crate::access::{AccessCache, CacheSettings, Invalidation, RedisStore, backend_for};
use crate::config::{Config, SourceKind};
use crate::endpoints::SignIn;
use crate::identity::session::{SessionCodec, SessionSetupError};
use crate::identity::{Identifier, Identity, LicenseKeyVerifier, Sources, UserTokenSetupError, UserTokenVerifier};
use crate::metrics::{Metrics, RouteCounters};
use crate::per_core::PerCore;
use crate::route::RouteTable;
use crate::whop::WhopClient;
use handoff::Grants;
pub(crate) use handoff::UserHeaders;

/// The gate, built once from the config and shared by every connection and worker.
#[derive(Debug, Clone)]
pub struct Gate {
    state: Arc<GateState>,
}

/// Why a gate could not be built. The messages name the config key at fault.
#[derive(Debug)]
#[non_exhaustive]
pub enum GateError {
    /// Not called from within a tokio runtime (the gate spawns its background work there).
    NoRuntime,
    /// The user-token verifier could not be set up (a bad `public_keys` entry).
    UserToken(String),
    /// The config asks for something this build does not do yet.
    Unsupported(String),
    /// The session cookie secrets are unusable.
    Session(String),
    /// A [`GateBuilder`] description is not a valid config.
    Config(crate::config::ConfigErrors),
    /// `cache.redis_url` cannot be used.
    Redis(String),
}

/// What the gate knows of the connection a request came on, handed to the judgement with the
/// request: the default port (443 on TLS), and whether the peer is a trusted proxy whose
/// forward-auth description is believed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ConnectionFacts {
    /// The connection is TLS.
    pub tls: bool,
    /// The peer is one of `trusted_proxies`.
    pub trusted_proxy: bool,
}

impl std::fmt::Display for GateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GateError::NoRuntime => f.write_str("the gate must be built inside a tokio runtime"),
            GateError::UserToken(e) => write!(f, "identity.user_token: {e}"),
            GateError::Unsupported(what) => write!(f, "{what} is not supported yet"),
            GateError::Session(e) => write!(f, "identity.session: {e}"),
            GateError::Config(e) => write!(f, "invalid gate description:\n{e}"),
            GateError::Redis(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for GateError {}

impl Gate {
    /// Describes a gate in code (instead of a TOML file); see [`GateBuilder`].
    pub fn builder() -> GateBuilder {
        GateBuilder::new()
    }

    /// Builds the gate a config describes. Must run inside a tokio runtime: background work
    /// (JWKS fetches, Whop calls, refreshes) is spawned there.
    pub async fn from_config(config: &Config) -> Result<Gate, GateError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| GateError::NoRuntime)?;

        let metrics = Arc::new(Metrics::new());
        let http = WhopClient::http_client();
        let client = Arc::new(WhopClient::new(&config.whop, http.clone(), metrics.clone()));
        // The dev identity makes no Whop calls; with it as the only source nothing needs Whop.

        let user_token = if config.identity.sources.contains(&SourceKind::UserToken) {
            let app_id = config.whop.app_id.as_deref().unwrap_or_default();
            let verifier = UserTokenVerifier::new(
                &config.identity.user_token,
                app_id,
                http,
                metrics.clone(),
                runtime.clone(),
                config.cache.max_entries,
            )
            .map_err(|e: UserTokenSetupError| GateError::UserToken(e.to_string()))?;
            Some(verifier)
        } else {
            None
        };
        let license_key = config.identity.sources.contains(&SourceKind::LicenseKey).then(|| {
            LicenseKeyVerifier::new(
                &config.identity.license_key,
                client.clone(),
                config.cache.ttl,
                config.cache.negative_ttl,
                config.cache.max_entries,
                &metrics,
            )
        });
        let dev = match (&config.identity.dev, config.identity.sources.contains(&SourceKind::Dev)) {
            (Some(dev), true) => {
                let identity = Identity::dev(dev)
                    .ok_or_else(|| GateError::Unsupported(format!("the dev user id {:?}", dev.user_id)))?;
                Some(Arc::new(identity))
            }
            _ => None,
        };
        let session = match (&config.identity.session, config.identity.sources.contains(&SourceKind::Session)) {
            (Some(session), true) => Some(Arc::new(
                SessionCodec::from_config(session).map_err(|e: SessionSetupError| GateError::Session(e.to_string()))?,
            )),
            _ => None,
        };
        let signin = session
            .as_ref()
            .and_then(|codec| SignIn::new(config, codec.clone(), WhopClient::http_client(), metrics.clone()))
            .map(Arc::new);
        let identifier =
            Identifier::new(config.identity.sources.clone(), Sources { user_token, license_key, session, dev });

        let routes = RouteTable::new(&config.routes);
        let mut resources: Vec<Arc<str>> = Vec::new();
        for rule in routes.rules() {
            for resource in &rule.require {
                if !resources.contains(resource) {
                    resources.push(resource.clone());
                }
            }
        }
        let settings = CacheSettings {
            ttl: config.cache.ttl,
            negative_ttl: config.cache.negative_ttl,
            stale_if_error: config.cache.stale_if_error,
            max_entries: config.cache.max_entries,
            whop_timeout: config.whop.timeout,
        };
        let backend = backend_for(config.whop.access_api, client.clone());
        let redis = match config.cache.redis_url.as_deref().filter(|url| !url.is_empty()) {
            Some(url) => {
                Some(RedisStore::start(url, metrics.clone(), &runtime).map_err(|e| GateError::Redis(e.to_string()))?)
            }
            None => None,
        };
        if let Some(redis) = &redis {
            client.share_budget(redis.clone());
        }
        let shared = redis.clone().map(|store| store as Arc<dyn crate::access::DecisionStore>);
        let webhook = crate::webhook::Receiver::new(&config.webhook, client.clone(), redis.clone());
        let access = AccessCache::with_store(backend, shared, settings, resources, &metrics, runtime.clone());

        let rules = routes
            .rules()
            .iter()
            .map(|rule| RuleState {
                label: Arc::from(rule.path.as_str()),
                counters: metrics.route_counters(&rule.path),
                resources: rule
                    .require
                    .iter()
                    .map(|r| {
                        // Each core its own allocations: the clone each request makes then bumps a
                        // count only that core writes. (An id that is no header value names no
                        // resource header; `check` rejects such ids.)
                        let grants = HeaderValue::from_str(r).ok().map(|value| PerCore::new(|| Grants::new(&value)));
                        (r.clone(), grants)
                    })
                    .collect(),
            })
            .collect();
        let no_route_counters = metrics.route_counters("");
        let state = Arc::new(GateState {
            routes,
            rules,
            no_route_counters,
            metrics,
            identifier,
            access,
            prefix: config.prefix.clone(),
            signin,
            webhook,
            revocations: stream_watch::Revocations::new(),
            revalidate_streams: config.cache.revalidate_streams,
        });
        if let Some(redis) = redis {
            redis.on_invalidation(Box::new(ReplicaInvalidation(Arc::downgrade(&state))));
        }
        runtime.spawn(update_gauges(Arc::downgrade(&state)));
        Ok(Gate { state })
    }

    /// The tower layer that puts this gate in front of a service.
    pub fn layer(&self) -> GateLayer {
        GateLayer::new(self.state.clone())
    }

    /// The gate's metrics.
    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.state.metrics
    }

    /// The gate's metrics in Prometheus's text format (SPEC §6), for an app that serves its own
    /// `/metrics`.
    pub fn render_metrics(&self) -> String {
        self.state.metrics.render()
    }

    /// The number of route rules, the gate's own endpoints not counted.
    pub fn rule_count(&self) -> usize {
        self.state.routes.rules().len()
    }

    /// Resolves once the keys the identity sources need are loaded (the first JWKS fetch is
    /// done, whether it succeeded or not).
    pub async fn keys_loaded(&self) {
        self.state.identifier.keys_loaded().await;
    }

    /// whopgate's own endpoints (`{prefix}/login`, `/callback`, `/logout`, `/me`) as an axum
    /// router, for apps that merge them instead of (or besides) putting every route behind
    /// [`Gate::layer`]: `Router::new().route(…).merge(gate.endpoints()).layer(gate.layer())`.
    #[cfg(feature = "axum")]
    pub fn endpoints(&self) -> axum::Router {
        use tower_layer::Layer;
        let path = format!("{}/{{*rest}}", self.state.prefix);
        // The gate answers its endpoints itself; the inner service only sees what it does not
        // know, which under the prefix is nothing.
        let service = self.layer().layer(NotFound);
        axum::Router::new().route_service(&path, service)
    }

    /// Forgets every cached decision about `user_id`: call it when their access changed.
    pub fn invalidate_user(&self, user_id: &str) {
        self.state.forget_user(user_id);
    }
}

/// Answers 404 to everything; the inner service of [`Gate::endpoints`].
#[cfg(feature = "axum")]
#[derive(Debug, Clone, Copy)]
struct NotFound;

#[cfg(feature = "axum")]
impl<B> tower_service::Service<http::Request<B>> for NotFound {
    type Response = http::Response<http_body_util::Empty<bytes::Bytes>>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: http::Request<B>) -> Self::Future {
        let mut response = http::Response::new(http_body_util::Empty::new());
        *response.status_mut() = http::StatusCode::NOT_FOUND;
        std::future::ready(Ok(response))
    }
}

/// Keeps the `whopgate_cache_entries` gauges current while the gate lives.
async fn update_gauges(state: Weak<GateState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        let Some(state) = state.upgrade() else { return };
        let entries = i64::try_from(state.access.entry_count()).unwrap_or(i64::MAX);
        state.metrics.cache_entries("decision").set(entries);
        if let Some(licenses) = state.identifier.license_entries() {
            state.metrics.cache_entries("license").set(i64::try_from(licenses).unwrap_or(i64::MAX));
        }
    }
}

#[derive(Debug)]
pub(crate) struct GateState {
    routes: RouteTable,
    rules: Vec<RuleState>,
    no_route_counters: RouteCounters,
    metrics: Arc<Metrics>,
    identifier: Identifier,
    access: Arc<AccessCache>,
    /// Where whopgate's own endpoints live.
    prefix: String,
    /// "Sign in with Whop", when sessions are on.
    signin: Option<Arc<SignIn>>,
    /// Whop's webhooks, when a `[webhook]` secret is set.
    webhook: Option<crate::webhook::Receiver>,
    /// Users whose access a webhook changed, told to their open streams.
    revocations: stream_watch::Revocations,
    /// `cache.revalidate_streams`.
    revalidate_streams: Duration,
}

/// What another replica's invalidation (through Redis) does here.
struct ReplicaInvalidation(Weak<GateState>);

impl Invalidation for ReplicaInvalidation {
    fn user(&self, user: &str) {
        if let Some(state) = self.0.upgrade() {
            // The store is already rid of the user: only this process's copies go.
            state.access.invalidate_local(user);
            state.identifier.invalidate_user(user);
            state.revocations.revoke(user);
        }
    }

    fn everything(&self) {
        if let Some(state) = self.0.upgrade() {
            state.access.clear_local();
            state.identifier.forget_everyone();
            // A missed revocation would otherwise leave its user's streams open until their
            // next re-judgement (`cache.revalidate_streams`).
            state.revocations.revoke_everyone();
        }
    }
}

impl GateState {
    /// Drops every cached decision and license-key entry of `user_id`, and has their open
    /// streams judged again now.
    pub(crate) fn forget_user(&self, user_id: &str) {
        self.access.invalidate_user(user_id);
        self.identifier.invalidate_user(user_id);
        self.revocations.revoke(user_id);
    }
}

/// What the gate keeps per rule, resolved once: metric handles and header values (one per core).
#[derive(Debug)]
pub(crate) struct RuleState {
    label: Arc<str>,
    counters: RouteCounters,
    resources: Vec<(Arc<str>, Option<PerCore<Grants>>)>,
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http::{Request, Response, StatusCode};
    use tower::{Layer, ServiceExt, service_fn};

    use super::*;
    use whopgate_mock::{MockState, MockWhop};

    /// The echo service: answers with the identity it was handed.
    async fn echo(req: Request<String>) -> Result<Response<String>, Infallible> {
        let user = req.extensions().get::<WhopUser>().cloned();
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
        Ok(Response::new(format!(
            "{} {} {} {} {:?}",
            header("x-whop-user-id"),
            header("x-whop-access-level"),
            header("x-whop-resource-id"),
            header("x-whopgate-source"),
            user.map(|u| (u.id.to_string(), u.access_level, u.resource.map(|r| r.to_string()))),
        )))
    }

    async fn gate_for(mock: &MockWhop) -> Gate {
        let config = Config::from_toml(
            &format!(
                r#"
                [whop]
                api_key = "{}"
                app_id = "{}"
                api_base = "{}"

                [[route]]
                path = "/public"
                public = true

                [[route]]
                path = "/"
                require = ["prod_mockproduct2", "prod_mockproduct1"]
                "#,
                mock.api_key(),
                mock.app_id(),
                mock.base_url()
            ),
            "test.toml",
        )
        .unwrap();
        Gate::from_config(&config).await.unwrap()
    }

    fn request(path: &str, token: Option<&str>) -> Request<String> {
        let mut builder = Request::get(path).header("host", "app.example").header("accept", "application/json");
        if let Some(token) = token {
            builder = builder.header("x-whop-user-token", token);
        }
        builder.body(String::new()).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_app_can_serve_the_gates_metrics_and_count_its_rules() {
        let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default()).unwrap();
        let gate = gate_for(&mock).await;
        assert_eq!(gate.rule_count(), 2);
        let service = gate.layer().layer(service_fn(echo));
        let response = service.oneshot(request("/x", None)).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let text = gate.render_metrics();
        assert!(text.contains(r#"whopgate_requests_total{decision="unauthenticated",route="/"} 1"#), "{text}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn allowed_requests_carry_headers_and_the_whop_user() {
        let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default()).unwrap();
        let gate = gate_for(&mock).await;
        let service = gate.layer().layer(service_fn(echo));
        let token = mock.mint_token("user_alice").unwrap();
        let response = service.clone().oneshot(request("/x", Some(&token))).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers().contains_key("x-request-id"));
        let body = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"user_alice customer prod_mockproduct1 user_token Some(("user_alice", Some(Customer), Some("prod_mockproduct1")))"#
        );
        // Cached now: the same request is decided without I/O.
        let again = service.oneshot(request("/x", Some(&token))).await.unwrap();
        assert_eq!(again.status(), StatusCode::OK);
        // Both required resources were asked about at once; the grant did not wait for the other.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while mock.calls(whopgate_mock::EndpointKind::Access) < 2 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(mock.calls(whopgate_mock::EndpointKind::Access), 2, "one call per required resource");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn denials_are_responses_not_errors() {
        let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default()).unwrap();
        let gate = gate_for(&mock).await;
        let service = gate.layer().layer(service_fn(echo));
        let bob = mock.mint_token("user_bob").unwrap();
        for (req, status) in [
            (request("/x", None), StatusCode::UNAUTHORIZED),
            (request("/x", Some("garbage")), StatusCode::UNAUTHORIZED),
            (request("/x", Some(&bob)), StatusCode::FORBIDDEN),
            (request("/a%2Fb", None), StatusCode::BAD_REQUEST),
        ] {
            let response = service.clone().oneshot(req).await.unwrap();
            assert_eq!(response.status(), status);
        }
        let public = service.oneshot(request("/public", Some(&bob))).await.unwrap();
        assert_eq!(public.status(), StatusCode::OK);
    }

    #[cfg(feature = "axum")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn whop_user_is_an_axum_extractor() {
        use axum::routing::get;
        let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default()).unwrap();
        let gate = gate_for(&mock).await;
        let app = axum::Router::new()
            .route("/me", get(|user: WhopUser| async move { user.id.to_string() }))
            .route("/public", get(|user: Option<WhopUser>| async move { format!("{:?}", user.map(|u| u.id)) }))
            .layer(gate.layer());
        let token = mock.mint_token("user_carol").unwrap();
        let body = |r: Response<axum::body::Body>| async move {
            String::from_utf8(axum::body::to_bytes(r.into_body(), 1024).await.unwrap().to_vec()).unwrap()
        };
        let me = app.clone().oneshot(axum_request("/me", Some(&token))).await.unwrap();
        assert_eq!(me.status(), StatusCode::OK);
        assert_eq!(body(me).await, "user_carol");
        let anonymous = app.oneshot(axum_request("/public", None)).await.unwrap();
        assert_eq!(body(anonymous).await, "None");
    }

    #[cfg(feature = "axum")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn endpoints_merge_into_an_axum_router() {
        use axum::routing::get;
        let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default()).unwrap();
        let gate = gate_for(&mock).await;
        // Only the endpoints, no layer: /me still identifies the caller.
        let app = axum::Router::new().route("/", get(|| async { "home" })).merge(gate.endpoints());
        let token = mock.mint_token("user_alice").unwrap();
        let me = app.clone().oneshot(axum_request("/.whopgate/me", Some(&token))).await.unwrap();
        assert_eq!(me.status(), StatusCode::OK);
        let body = axum::body::to_bytes(me.into_body(), 1024).await.unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["user_id"], "user_alice");
        assert_eq!(json["source"], "user_token");
        let anonymous = app.clone().oneshot(axum_request("/.whopgate/me", None)).await.unwrap();
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
        let home = app.oneshot(axum_request("/", None)).await.unwrap();
        assert_eq!(home.status(), StatusCode::OK);
    }

    #[cfg(feature = "axum")]
    fn axum_request(path: &str, token: Option<&str>) -> Request<axum::body::Body> {
        let mut builder = Request::get(path).header("host", "app.example");
        if let Some(token) = token {
            builder = builder.header("x-whop-user-token", token);
        }
        builder.body(axum::body::Body::empty()).unwrap()
    }
}
