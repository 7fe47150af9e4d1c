//! Forwarding to the upstream: where a request that the gate cleared is sent on.
//!
//! [`ProxyService`] is a tower service over `Request<Incoming>` that streams the request body to
//! the upstream and the response body back, frame by frame, on pooled keep-alive connections
//! (one pool per worker thread). It rewrites only what a proxy must: hop-by-hop headers,
//! `X-Forwarded-*`, the request target, and WebSocket upgrades, which it tunnels.
//!
//! The gate in front of it (see [`crate::gate`]) has already normalised the path and removed
//! spoofed identity headers; it hands the real ones over as values ([`WriteIdentityHeaders`]),
//! which go straight into the upstream request head.

mod body;
mod codec;
mod conn;
mod deadline;
mod error;
pub mod headers;
mod pool;
mod upgrade;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use tokio_util::sync::ReusableBoxFuture;

pub use body::ProxyBody;
pub use error::ProxyError;
use headers::Forwarded;
pub use headers::Peer;
pub use pool::{UpstreamAddr, UpstreamPool};

use crate::gate::{Cleared, Handoff, IdentityHeaders, StreamControl};
use crate::metrics::Metrics;
use conn::Exchange;

/// What every worker's proxy shares: the upstream, its timeout and the metrics.
#[derive(Debug)]
pub struct Proxy {
    upstream: UpstreamAddr,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Proxy {
    /// A proxy to `upstream` (`host:port`) that gives up on a response head after `timeout`.
    pub fn new(upstream: UpstreamAddr, timeout: Duration, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self { upstream, timeout, metrics })
    }

    /// A fresh connection pool, one per worker thread (made on the worker's runtime, where it
    /// keeps its exchanges' timeout).
    pub fn new_pool(&self) -> Arc<UpstreamPool> {
        UpstreamPool::new(self.upstream.clone(), self.timeout)
    }

    /// The service for one client connection from `peer`, using the worker's `pool`.
    pub fn service(self: &Arc<Self>, pool: Arc<UpstreamPool>, peer: Peer) -> ProxyService {
        ProxyService { conn: Arc::new(ClientConn { proxy: self.clone(), pool, peer, spare: Mutex::new(None) }) }
    }
}

/// Forwards requests of one client connection to the upstream.
///
/// Cloned for every request, so it holds one reference count of its own: cloning touches a
/// cache line only this connection's core writes, not one shared by every core (as cloning the
/// `Arc<Proxy>` would).
#[derive(Debug, Clone)]
pub struct ProxyService {
    conn: Arc<ClientConn>,
}

/// What the requests of one client connection share.
#[derive(Debug)]
struct ClientConn {
    proxy: Arc<Proxy>,
    pool: Arc<UpstreamPool>,
    peer: Peer,
    /// The allocation the previous request's exchange ran in, for the next one: every exchange
    /// is the same future type, too big (about 1.8 KiB) for the allocator's fast path.
    spare: Mutex<Option<ExchangeBox>>,
}

type ExchangeBox = ReusableBoxFuture<'static, Result<Response<ProxyBody>, Infallible>>;

/// [`ProxyService`]'s response future: the exchange, in an allocation that goes back to its
/// connection for the next request once the exchange is done.
#[derive(Debug)]
pub struct ResponseFuture {
    exchange: Option<ExchangeBox>,
    done: bool,
    home: Arc<ClientConn>,
}

impl Future for ResponseFuture {
    type Output = Result<Response<ProxyBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(exchange) = this.exchange.as_mut() else {
            // Polled after completion: stay pending rather than panic.
            return Poll::Pending;
        };
        let result = std::task::ready!(exchange.poll(cx));
        this.done = true;
        Poll::Ready(result)
    }
}

impl Drop for ResponseFuture {
    fn drop(&mut self) {
        // Only a finished exchange holds nothing; an abandoned one (the client left) is dropped
        // here with its allocation, so its upstream connection closes now.
        if self.done
            && let Some(exchange) = self.exchange.take()
        {
            *self.home.spare.lock().unwrap_or_else(PoisonError::into_inner) = Some(exchange);
        }
    }
}

impl tower_service::Service<Request<Incoming>> for ProxyService {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        self.forward(req, None)
    }
}

impl ProxyService {
    /// The request rewritten now, then the exchange as a future that holds only what it needs:
    /// the future is boxed and moved once per request, so every byte of it costs.
    fn forward(
        &self,
        req: Request<Incoming>,
        identity: Option<IdentityHeaders>,
    ) -> <Self as tower_service::Service<Request<Incoming>>>::Future {
        let prepared = self.conn.prepare(req);
        let exchange = ClientConn::forward(self.conn.clone(), prepared, identity);
        let spare = self.conn.spare.lock().unwrap_or_else(PoisonError::into_inner).take();
        let exchange = match spare {
            Some(mut spare) => {
                spare.set(exchange);
                spare
            }
            None => ReusableBoxFuture::new(exchange),
        };
        ResponseFuture { exchange: Some(exchange), done: false, home: self.conn.clone() }
    }
}

/// The sidecar's [`Handoff`]: the gate's identity headers are written straight into the upstream
/// request head after the client's headers, as `X-Forwarded-*` are, instead of being inserted
/// into the header map first.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteIdentityHeaders;

impl Handoff<ProxyService, Incoming> for WriteIdentityHeaders {
    fn wants_user(&self) -> bool {
        false
    }

    fn call(
        &self,
        inner: &mut ProxyService,
        req: Request<Incoming>,
        cleared: Option<Cleared>,
    ) -> <ProxyService as tower_service::Service<Request<Incoming>>>::Future {
        inner.forward(req, cleared.map(|c| c.headers))
    }
}

/// A request rewritten for the upstream, before anything is sent.
struct Prepared {
    parts: http::request::Parts,
    body: Option<Incoming>,
    forwarded: Forwarded,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
}

impl ClientConn {
    fn prepare(&self, mut req: Request<Incoming>) -> Prepared {
        let found = headers::NamesFound::scan(req.headers());
        let upgrade = req.version() == Version::HTTP_11 && found.wants_upgrade(req.method(), req.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let forwarded = prepare_request(&mut req, &found, &self.peer, upgrade);
        let (parts, body) = req.into_parts();
        let body = (!body.is_end_stream()).then_some(body);
        Prepared { parts, body, forwarded, client_upgrade }
    }

    /// An `async` block rather than an `async fn`: an `async fn` moves every argument into a
    /// local of its own, so the future would hold the prepared request twice.
    #[allow(clippy::manual_async_fn)]
    fn forward(
        self: Arc<Self>,
        mut prepared: Prepared,
        identity: Option<IdentityHeaders>,
    ) -> impl Future<Output = Result<Response<ProxyBody>, Infallible>> + Send {
        async move {
            let added = Added { forwarded: &prepared.forwarded, identity: identity.as_ref() };
            let exchange = match self.send(&prepared.parts, added, prepared.body.take()).await {
                Ok(exchange) => exchange,
                Err(e) => return Ok(self.fail(e)),
            };
            let Exchange { response, framing, keep_alive, conn } = exchange;
            self.proxy.metrics.upstream_status(response.status().as_u16());
            let (mut parts, ()) = response.into_parts();
            // Our answer to the client is HTTP/1.1 (or h2) whatever the upstream spoke.
            parts.version = Version::HTTP_11;

            if parts.status == StatusCode::SWITCHING_PROTOCOLS {
                // An upstream that switches protocols unasked, or to another protocol than the
                // one asked for, cannot be followed: the tunnel would carry requests never judged.
                let to_websocket =
                    parts.headers.get_all(header::UPGRADE).iter().all(|v| v.to_str().is_ok_and(upgrade::is_tunnelled));
                let Some(client) = prepared
                    .client_upgrade
                    .take()
                    .filter(|_| to_websocket && parts.headers.contains_key(header::UPGRADE))
                else {
                    return Ok(self.fail(ProxyError::UnexpectedUpgrade));
                };
                let (socket, early) = conn.into_upgraded();
                let (control, end) = StreamControl::new();
                upgrade::tunnel(client, socket, early, end);
                let mut response = Response::from_parts(parts, ProxyBody::empty());
                // The gate in front hands the tunnel its watch through this (a gated route's only).
                response.extensions_mut().insert(control);
                return Ok(response);
            }
            Ok(Response::from_parts(parts, ProxyBody::upstream(conn, framing, keep_alive, self.pool.clone())))
        }
    }

    fn fail(&self, error: ProxyError) -> Response<ProxyBody> {
        if error.is_client_fault() {
            // Not the upstream's failure, and a client must not be able to flood the log.
            tracing::debug!(error = %error, "the client's request could not be forwarded");
        } else {
            self.proxy.metrics.upstream_error();
            tracing::warn!(error = %error, upstream = %self.proxy.upstream.authority, "upstream request failed");
        }
        error.into_response()
    }

    /// Sends on a pooled connection when one is open, else on a new one. A request that a
    /// reused connection failed before the upstream could act on it goes again on a new one.
    async fn send(
        &self,
        parts: &http::request::Parts,
        added: Added<'_>,
        body: Option<Incoming>,
    ) -> Result<Exchange, ProxyError> {
        let timeout = self.proxy.timeout;
        let conn = match self.pool.take() {
            Some(conn) => conn,
            None => self.connect().await?,
        };
        let deadlines = self.pool.deadlines.as_deref();
        match conn.send(parts, added, body, timeout, deadlines).await {
            Ok(exchange) => Ok(exchange),
            // Only a body-less request is ever retryable, so nothing is lost by sending it again.
            Err((error, true)) => {
                tracing::debug!(error = %error, "a reused upstream connection had closed; sending again");
                let conn = self.connect().await?;
                conn.send(parts, added, None, timeout, deadlines).await.map_err(|(e, _)| ProxyError::from(e))
            }
            Err((error, false)) => Err(ProxyError::from(error)),
        }
    }

    async fn connect(&self) -> Result<conn::UpstreamConn, ProxyError> {
        match tokio::time::timeout(self.proxy.timeout, self.pool.connect()).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(ProxyError::Connect(e)),
            Err(_) => Err(ProxyError::Timeout(self.proxy.timeout)),
        }
    }
}

/// The header fields the proxy writes into the upstream request head after the request's own.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Added<'a> {
    forwarded: &'a Forwarded,
    identity: Option<&'a IdentityHeaders>,
}

impl Added<'_> {
    /// Writes every added field into the head, `X-Forwarded-*` first.
    fn write(self, out: &mut Vec<u8>) {
        self.forwarded.each_field(|name, value| codec::write_field(out, name, value));
        if let Some(identity) = self.identity {
            let [user, grant] = identity.lines();
            out.reserve(user.len() + grant.len());
            out.extend_from_slice(user);
            out.extend_from_slice(grant);
        }
    }
}

/// Rewrites a request for the upstream: origin-form target, `Host`, hop-by-hop headers,
/// HTTP/1.1. Returns the forwarding headers, which the request head is written with.
fn prepare_request<B>(req: &mut Request<B>, found: &headers::NamesFound, peer: &Peer, upgrade: bool) -> Forwarded {
    let host = match req.headers().get(header::HOST) {
        Some(h) => Some(h.clone()),
        None => {
            let from_uri = req.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok());
            if let Some(h) = &from_uri {
                req.headers_mut().insert(header::HOST, h.clone());
            }
            from_uri
        }
    };
    headers::strip_hop_by_hop(req.headers_mut(), found, upgrade);
    let forwarded = headers::take_forwarded(req.headers_mut(), found, peer, host.as_ref());
    if req.uri().scheme().is_some() || req.uri().authority().is_some() {
        let target = req.uri().path_and_query().cloned();
        let mut parts = http::uri::Parts::default();
        parts.path_and_query = target;
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    *req.version_mut() = Version::HTTP_11;
    forwarded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h2_request_becomes_origin_form_with_host() {
        let mut req = Request::builder()
            .version(Version::HTTP_2)
            .uri("http://app.test:8080/a/b?x=1")
            .header("te", "trailers")
            .body(())
            .unwrap();
        let peer = Peer::new("127.0.0.1".parse().unwrap(), false, &[]);
        let found = headers::NamesFound::scan(req.headers());
        let forwarded = prepare_request(&mut req, &found, &peer, false);
        assert_eq!(req.uri(), "/a/b?x=1");
        assert_eq!(req.version(), Version::HTTP_11);
        assert_eq!(req.headers()["host"], "app.test:8080");
        assert_eq!(forwarded.host.unwrap(), "app.test:8080");
        assert_eq!(forwarded.for_, "127.0.0.1");
        assert!(!req.headers().contains_key("te"));
    }
}
