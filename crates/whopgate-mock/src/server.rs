//! The listener and the per-request pipeline: count the call, apply faults, check the API key
//! and the rate limit, answer. `/_mock/…` goes to the control API untouched by all of that.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{HeaderMap, Method, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::admin;
use super::api::{self, Route};
use super::faults::{Failure, HANG_FOR};
use super::http::{Query, Reply};
use super::oauth;
use super::runtime::Inner;
use super::state::ApiKey;

/// Accepts connections until `shutdown` flips; then every open connection (a hanging call
/// included) is dropped with the `JoinSet`.
pub(crate) async fn serve(listener: TcpListener, inner: Arc<Inner>, mut shutdown: watch::Receiver<bool>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let inner = inner.clone();
                    conns.spawn(async move {
                        let svc = service_fn(move |req| {
                            let inner = inner.clone();
                            async move { Ok::<_, Infallible>(dispatch(&inner, req).await) }
                        });
                        // Client resets and malformed requests end the connection; nothing to do.
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "mock Whop API: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn dispatch(inner: &Inner, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    let query = Query::parse(parts.uri.query());
    if path == "/_mock" || path.starts_with("/_mock/") {
        return admin::handle(inner, &parts.method, path, &query, body).await.into_response();
    }
    if let Some(v) = parts.headers.get("api-version-date").and_then(|v| v.to_str().ok()) {
        inner.note_api_version_date(v);
    }
    let route = api::route(&parts.method, path);
    let seq = inner.calls().start(route.as_ref().map(Route::kind), parts.method.as_str(), path);
    let reply = whop(inner, &parts.method, path, &parts.headers, route, &query, body).await;
    inner.calls().finish(seq, reply.status.as_u16());
    reply.into_response()
}

async fn whop(
    inner: &Inner,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    route: Option<Route>,
    query: &Query,
    body: Incoming,
) -> Reply {
    let Some(route) = route else {
        // Like Whop: no key, no information about which paths exist.
        if path.starts_with("/api/") {
            if let Err(r) = authorize(inner, headers) {
                return r;
            }
        }
        return Reply::not_found(format!("No route matches {method} {path}"));
    };
    let kind = route.kind();
    let (latency, failure) = inner.take_fault(kind);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match failure {
        None => {}
        Some(Failure::Error { status }) => return Reply::server_error(status),
        Some(Failure::RateLimited { retry_after, header }) => {
            return Reply::rate_limited_for(kind, retry_after, header);
        }
        Some(Failure::Hang) => {
            let _hanging = Hanging::new(inner);
            tokio::time::sleep(HANG_FOR).await;
            return Reply::server_error(504);
        }
    }
    let key = if route.needs_api_key() {
        match authorize(inner, headers) {
            Ok(k) => Some(k),
            Err(r) => return r,
        }
    } else {
        None
    };
    let bucket = key.as_ref().map_or("", |k| k.key.as_str());
    if let Err(wait) = inner.rate_check(kind, bucket) {
        return Reply::rate_limited_for(kind, wait, true);
    }
    match route {
        Route::OAuth(endpoint) => oauth::answer(inner, endpoint, headers, query, body).await,
        route => inner.with_world(|w| api::answer(&w.state, &w.keys, &route, query, key.as_ref())),
    }
}

/// The API key named by `Authorization: Bearer …`, if the state has it.
fn authorize(inner: &Inner, headers: &HeaderMap) -> Result<ApiKey, Reply> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Err(Reply::unauthorized("Missing Authorization header: send `Authorization: Bearer <API key>`."));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    let Some(token) = token else {
        return Err(Reply::unauthorized("Malformed Authorization header: send `Authorization: Bearer <API key>`."));
    };
    inner
        .with_world(|w| w.state.api_keys.iter().find(|k| k.key == token).cloned())
        .ok_or_else(|| Reply::unauthorized("The API key is invalid."))
}

/// Counts a hanging call for as long as its future lives: hyper drops the future when the
/// client closes the connection, and the count goes down with it.
struct Hanging<'a>(&'a Inner);

impl<'a> Hanging<'a> {
    fn new(inner: &'a Inner) -> Self {
        inner.hanging.fetch_add(1, Ordering::SeqCst);
        Hanging(inner)
    }
}

impl Drop for Hanging<'_> {
    fn drop(&mut self) {
        self.0.hanging.fetch_sub(1, Ordering::SeqCst);
    }
}
