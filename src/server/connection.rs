//! Serving one client connection: HTTP/1.1 or h2c (prior knowledge), with the server limits, and
//! a graceful end when the server drains.

use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use http_body::Body;
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
    let service = AlwaysReady(service);

    let result = if is_h2 {
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(256);
        let conn = builder.serve_connection(io, service);
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
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_header_size(limits.max_header_bytes)
            .keep_alive(true);
        let conn = builder.serve_connection(io, service).with_upgrades();
        tokio::pin!(conn);
        tokio::select! {
            result = conn.as_mut() => result,
            _ = crate::server::stopped(&mut shutdown) => {
                conn.as_mut().graceful_shutdown();
                conn.await
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
