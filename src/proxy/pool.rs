//! Keep-alive connections to the upstream.
//!
//! One pool per worker thread, so no lock or cache line is shared between cores on the request
//! path. A connection goes back to the pool only after its response body has been read to the
//! end (see [`super::body::ProxyBody`]); anything else (an aborted download, an upgrade) closes
//! it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::conn::UpstreamConn;
use super::deadline::Deadlines;

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
    idle: Mutex<Vec<UpstreamConn>>,
    /// The upstream timeout of this worker's exchanges (`None` outside a runtime: then each
    /// exchange keeps a timer of its own).
    pub(super) deadlines: Option<Arc<Deadlines>>,
}

impl UpstreamPool {
    /// An empty pool for `addr`, whose exchanges are bounded by `timeout`.
    pub fn new(addr: UpstreamAddr, timeout: Duration) -> Arc<Self> {
        Arc::new(Self { addr, idle: Mutex::new(Vec::new()), deadlines: Deadlines::start(timeout) })
    }

    /// The most recently used idle connection the upstream has not closed, if any.
    pub fn take(&self) -> Option<UpstreamConn> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(conn) = idle.pop() {
            if conn.idle_since.elapsed() < MAX_IDLE_AGE && !conn.is_stale() {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps a connection whose last response was read to the end.
    pub fn put(&self, conn: UpstreamConn) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    /// Opens a new connection to the upstream.
    pub async fn connect(&self) -> std::io::Result<UpstreamConn> {
        UpstreamConn::connect(&self.addr.authority).await
    }
}
