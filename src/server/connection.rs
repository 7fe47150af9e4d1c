//! Serving one client connection: HTTP/1.1 or h2c (prior knowledge), with the server limits, and
//! a graceful end when the server drains.
//!
//! The connection is supervised by its worker's [`Supervisor`]: it closes when no request head
//! arrives within the header timeout, and drains when the server stops.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::rewind::Rewind;
use super::supervisor::{ConnWatch, Order, Supervisor};

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

/// Serves HTTP on `io` with `service` until the client leaves, the header timeout passes with no
/// request, or the server stops and the in-flight request is done (both told by `supervisor`).
/// `h2` is what TLS ALPN chose; `None` (cleartext) means sniff for the h2c preface.
pub(crate) async fn serve<I, S, B>(
    io: I,
    h2: Option<bool>,
    limits: &ConnectionLimits,
    service: S,
    supervisor: &Supervisor,
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
    // HTTP/2 has no header timeout of ours (hyper's h2 keeps its own limits), only the drain.
    let watch = supervisor.watch(!is_h2);

    let result = if is_h2 {
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(256);
        let conn = builder.serve_connection(io, AlwaysReady(service));
        supervised(conn, &watch, |conn| conn.graceful_shutdown()).await
    } else {
        let mut builder = hyper::server::conn::http1::Builder::new();
        // The header timeout is the supervisor's sweep, not hyper's, which arms a timer for
        // every request.
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(None::<Duration>)
            .max_header_size(limits.max_header_bytes)
            .keep_alive(true);
        let service = Watched { inner: service, watch: watch.clone() };
        let conn = builder.serve_connection(io, service).with_upgrades();
        supervised(conn, &watch, |conn| conn.graceful_shutdown()).await
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "client connection ended with an error");
    }
}

/// Drives `conn`, doing what the supervisor orders: one atomic load per wake, where polling the
/// shutdown channel would take its lock (shared by every connection) on every wake.
async fn supervised<C>(conn: C, watch: &ConnWatch, drain: impl Fn(Pin<&mut C>)) -> Result<(), hyper::Error>
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    let mut conn = pin!(conn);
    let mut draining = false;
    poll_fn(|cx| {
        match watch.order(cx.waker()) {
            Order::Run => {}
            Order::Drain => {
                if !draining {
                    draining = true;
                    drain(conn.as_mut());
                }
            }
            Order::Close => {
                tracing::debug!("client sent no request head in time; disconnecting");
                return Poll::Ready(Ok(()));
            }
        }
        conn.as_mut().poll(cx)
    })
    .await
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

/// The sidecar's service on an HTTP/1.1 connection, counting requests for the supervisor.
#[derive(Debug, Clone)]
struct Watched<S> {
    inner: S,
    watch: Arc<ConnWatch>,
}

impl<S, B> hyper::service::Service<Request<Incoming>> for Watched<S>
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone,
{
    type Response = Response<WatchedBody<B>>;
    type Error = S::Error;
    type Future = WatchedFuture<S::Future>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        self.watch.request_started();
        WatchedFuture { inner: self.inner.clone().call(req), done: Some(Finished(self.watch.clone())) }
    }
}

/// Counts a request finished when dropped: with its response body, or with the response
/// future if there is no response.
#[derive(Debug)]
struct Finished(Arc<ConnWatch>);

impl Drop for Finished {
    fn drop(&mut self) {
        self.0.request_finished();
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
