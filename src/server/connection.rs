//! Serving one client connection: HTTP/1.1 or h2c (prior knowledge), with the server limits, and
//! a graceful end when the server drains.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::watch;

use super::rewind::Rewind;

/// The HTTP/2 connection preface a prior-knowledge h2c client starts with.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Limits applied to every client connection.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// A client slower than this to send a request head is disconnected.
    pub header_read_timeout: Duration,
    /// Largest request head accepted (431 beyond).
    pub max_header_bytes: usize,
}

/// Serves HTTP on `io` with `service` until the client leaves or `shutdown` flips and the
/// in-flight request is done. `h2` is what TLS ALPN chose; `None` (cleartext) means sniff for the
/// h2c preface.
pub async fn serve<I, S, B>(
    io: I,
    h2: Option<bool>,
    limits: &ConnectionLimits,
    service: S,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut io = io;
    // The preface sniff is bounded by the header timeout too, or a client could trickle "PRI *"
    // forever.
    let sniffed = match h2 {
        Some(is_h2) => Ok(Ok((Bytes::new(), is_h2))),
        None => tokio::time::timeout(limits.header_read_timeout, sniff(&mut io)).await,
    };
    let (prefix, is_h2) = match sniffed {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "connection closed before a request");
            return;
        }
        Err(_) => {
            tracing::debug!("client sent no request head in time; disconnecting");
            return;
        }
    };
    let io = TokioIo::new(Rewind::new(prefix, io));

    let result = if is_h2 {
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(256);
        let conn = builder.serve_connection(io, AlwaysReady(service));
        tokio::pin!(conn);
        tokio::select! {
            result = conn.as_mut() => result,
            _ = crate::server::stopped(&mut shutdown) => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        }
    } else {
        let mut builder = hyper::server::conn::http1::Builder::new();
        // The header timeout is the idle watch below, not hyper's, which arms a timer for every
        // request.
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(None::<Duration>)
            .max_header_size(limits.max_header_bytes)
            .keep_alive(true);
        let activity = Arc::new(Activity::default());
        let service = Watched { inner: service, activity: activity.clone() };
        let conn = builder.serve_connection(io, service).with_upgrades();
        tokio::pin!(conn);
        let served = async {
            tokio::select! {
                result = conn.as_mut() => result,
                _ = crate::server::stopped(&mut shutdown) => {
                    conn.as_mut().graceful_shutdown();
                    conn.as_mut().await
                }
            }
        };
        tokio::select! {
            result = served => result,
            () = idle_watch(&activity, limits.header_read_timeout) => {
                tracing::debug!("client sent no request head in time; disconnecting");
                Ok(())
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "client connection ended with an error");
    }
}

/// A tower service as a hyper service, for the sidecar's services, which are always ready
/// (the gate is ready when its inner service is, and the proxy always is): each request is a
/// clone's `call`, without `poll_ready` or hyper-util's `Oneshot` in between.
#[derive(Debug, Clone)]
struct AlwaysReady<S>(S);

impl<S> hyper::service::Service<Request<Incoming>> for AlwaysReady<S>
where
    S: tower_service::Service<Request<Incoming>> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        self.0.clone().call(req)
    }
}

/// What an HTTP/1.1 connection's idle watch sees: requests begun and finished.
#[derive(Debug, Default)]
struct Activity {
    /// Requests whose head has arrived.
    started: AtomicU64,
    /// Requests whose response is done (its body finished or dropped).
    finished: AtomicU64,
}

impl Activity {
    fn snapshot(&self) -> (u64, u64) {
        (self.started.load(Ordering::Relaxed), self.finished.load(Ordering::Relaxed))
    }
}

/// Returns once the connection has had no request in flight and no new request head for
/// `timeout` (give or take a quarter): a client that trickles its head, or sends nothing on a
/// kept-alive connection, is then dropped. Checking a few times per timeout costs a timer per
/// connection per check, where a deadline per request would cost one per request.
async fn idle_watch(activity: &Activity, timeout: Duration) {
    const CHECKS: u32 = 4;
    let period = (timeout / CHECKS).max(Duration::from_millis(1));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = activity.snapshot();
    let mut quiet = 0;
    loop {
        ticks.tick().await;
        let now = activity.snapshot();
        if now == last && now.0 == now.1 {
            quiet += 1;
            if quiet >= CHECKS {
                return;
            }
        } else {
            quiet = 0;
        }
        last = now;
    }
}

/// The sidecar's service on an HTTP/1.1 connection, counting requests for the idle watch.
#[derive(Debug, Clone)]
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S, B> hyper::service::Service<Request<Incoming>> for Watched<S>
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone,
{
    type Response = Response<WatchedBody<B>>;
    type Error = S::Error;
    type Future = WatchedFuture<S::Future>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        self.activity.started.fetch_add(1, Ordering::Relaxed);
        WatchedFuture { inner: self.inner.clone().call(req), done: Some(Finished(self.activity.clone())) }
    }
}

/// Counts a request finished when dropped: with its response body, or with the response
/// future if there is no response.
#[derive(Debug)]
struct Finished(Arc<Activity>);

impl Drop for Finished {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// [`Watched`]'s response future.
    struct WatchedFuture<F> {
        #[pin]
        inner: F,
        done: Option<Finished>,
    }
}

impl<F, B, E> Future for WatchedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<WatchedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        let done = this.done.take();
        Poll::Ready(result.map(|response| response.map(|inner| WatchedBody { inner, _done: done })))
    }
}

pin_project_lite::pin_project! {
    /// A response body that counts its request finished when it is dropped.
    struct WatchedBody<B> {
        #[pin]
        inner: B,
        _done: Option<Finished>,
    }
}

impl<B: Body> Body for WatchedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Reads until the first bytes show whether this is an h2c prior-knowledge connection.
async fn sniff<I: AsyncRead + Unpin>(io: &mut I) -> io::Result<(Bytes, bool)> {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if io.read_buf(&mut buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let seen = buf.len().min(H2_PREFACE.len());
        if buf[..seen] != H2_PREFACE[..seen] {
            return Ok((buf.freeze(), false));
        }
        if seen == H2_PREFACE.len() {
            return Ok((buf.freeze(), true));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How long `idle_watch` took to return, or `None` if it was still watching at `limit`.
    async fn watched_for(activity: &Activity, timeout: Duration, limit: Duration) -> Option<Duration> {
        let started = tokio::time::Instant::now();
        tokio::time::timeout(limit, idle_watch(activity, timeout)).await.ok().map(|()| started.elapsed())
    }

    #[tokio::test]
    async fn a_connection_without_a_request_is_dropped_after_the_timeout() {
        let activity = Activity::default();
        let timeout = Duration::from_millis(200);
        let took =
            watched_for(&activity, timeout, Duration::from_secs(10)).await.expect("the silent connection was dropped");
        // Never early; late by at most a quarter, plus what a loaded machine adds.
        assert!(took >= timeout && took < Duration::from_secs(2), "dropped after {took:?}");
    }

    #[tokio::test]
    async fn a_request_in_flight_is_never_cut() {
        let activity = Activity::default();
        activity.started.fetch_add(1, Ordering::Relaxed);
        // Twenty timeouts long.
        assert_eq!(watched_for(&activity, Duration::from_millis(50), Duration::from_secs(1)).await, None);
    }

    #[tokio::test]
    async fn the_timeout_counts_from_the_last_response() {
        let activity = Arc::new(Activity::default());
        let timeout = Duration::from_millis(100);
        let requests = {
            let activity = activity.clone();
            async move {
                // Three requests of two timeouts each, one after another, then silence.
                for _ in 0..3 {
                    activity.started.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(2 * timeout).await;
                    activity.finished.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::Instant::now()
            }
        };
        let watch = async {
            let took = watched_for(&activity, timeout, Duration::from_secs(10)).await;
            (took, tokio::time::Instant::now())
        };
        let ((took, dropped_at), last_response) = tokio::join!(watch, requests);
        assert!(took.is_some(), "the idle connection was never dropped");
        let idle = dropped_at - last_response;
        assert!(idle >= timeout && idle < Duration::from_secs(1), "dropped {idle:?} after the last response");
    }

    #[tokio::test]
    async fn sniffs_versions() {
        let mut h1: &[u8] = b"GET / HTTP/1.1\r\n\r\n";
        assert!(!sniff(&mut h1).await.unwrap().1);
        let mut h2: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0";
        let (prefix, is_h2) = sniff(&mut h2).await.unwrap();
        assert!(is_h2);
        assert_eq!(prefix.len(), 26);
        let mut empty: &[u8] = b"";
        assert!(sniff(&mut empty).await.is_err());
    }
}
