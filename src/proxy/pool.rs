//! Keep-alive connections to the upstream.
//!
//! One pool per worker thread, so no lock or cache line is shared between cores on the request
//! path. A connection goes back to the pool only after its response body has been read to the end
//! (see [`super::body::ProxyBody`]); anything else (an aborted download, an upgrade) closes it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A sender on one upstream HTTP/1.1 connection.
pub type UpstreamSender = SendRequest<Incoming>;

/// Idle connections older than this are closed rather than reused: upstreams close idle
/// connections on their own schedule, and a stale one costs a retry.
const MAX_IDLE_AGE: Duration = Duration::from_secs(30);
/// Idle connections kept per worker; more are closed.
const MAX_IDLE: usize = 512;

/// Where the upstream is.
#[derive(Debug, Clone)]
pub struct UpstreamAddr {
    /// `host:port` to connect to.
    pub authority: String,
}

/// The idle upstream connections of one worker.
#[derive(Debug)]
pub struct UpstreamPool {
    addr: UpstreamAddr,
    idle: Mutex<Vec<(UpstreamSender, Instant)>>,
}

impl UpstreamPool {
    /// An empty pool for `addr`.
    pub fn new(addr: UpstreamAddr) -> Arc<Self> {
        Arc::new(Self { addr, idle: Mutex::new(Vec::new()) })
    }

    /// The most recently used idle connection that is still open, if any.
    ///
    /// It may still be finishing its last response; callers wait for `ready()`.
    pub fn take(&self) -> Option<UpstreamSender> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some((sender, since)) = idle.pop() {
            if !sender.is_closed() && since.elapsed() < MAX_IDLE_AGE {
                return Some(sender);
            }
        }
        None
    }

    /// Returns a connection whose last response was read to the end.
    pub fn put(&self, sender: UpstreamSender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push((sender, Instant::now()));
        }
    }

    /// Opens a new connection to the upstream.
    pub async fn connect(&self) -> std::io::Result<UpstreamSender> {
        let stream = TcpStream::connect(&self.addr.authority).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) =
            http1::Builder::new().handshake(TokioIo::new(stream)).await.map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            // The connection ends when either side closes it; nothing to report beyond debug.
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection closed with an error");
            }
        });
        Ok(sender)
    }

    /// Number of idle connections (for tests and metrics).
    pub fn idle_len(&self) -> usize {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}
