//! The sidecar server: listeners, worker threads, connection limits and graceful shutdown.
//!
//! Each worker thread runs its own single-threaded runtime with its own `SO_REUSEPORT` listener
//! and its own upstream connection pool: a request is accepted, judged and forwarded on one core,
//! with nothing shared between cores but the gate's caches and counters.

mod connection;
mod listener;
mod rewind;
mod supervisor;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio_util::task::TaskTracker;
use tower_layer::Layer;

pub use connection::ConnectionLimits;
use supervisor::Supervisor;
pub use tls::{ReloadingCert, TlsError};

use crate::gate::Gate;
use crate::proxy::{Peer, Proxy, WriteIdentityHeaders};

/// Everything a worker needs to serve connections.
#[derive(Clone)]
pub struct ServerSettings {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// Worker threads (each with its own listener and runtime).
    pub workers: usize,
    /// Per-connection limits.
    pub limits: ConnectionLimits,
    /// Most client connections open at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// How long in-flight requests may take to finish after shutdown begins.
    pub drain_timeout: Duration,
    /// Peers whose `X-Forwarded-*` headers are believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Serve HTTPS with this acceptor; cleartext (with h2c) when `None`.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for ServerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSettings")
            .field("listen", &self.listen)
            .field("workers", &self.workers)
            .field("limits", &self.limits)
            .field("max_connections", &self.max_connections)
            .field("drain_timeout", &self.drain_timeout)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// A running sidecar: worker threads accepting on `local_addr`.
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    workers: Vec<JoinHandle<()>>,
}

impl Server {
    /// Binds the listeners and starts the workers; returns once they accept connections.
    pub fn start(settings: ServerSettings, gate: Gate, proxy: Arc<Proxy>) -> std::io::Result<Server> {
        let listeners = listener::bind(settings.listen, settings.workers.max(1))?;
        let local_addr = listeners[0].local_addr()?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let connection_slots = Arc::new(Semaphore::new(settings.max_connections.max(1)));
        let settings = Arc::new(settings);
        let mut workers = Vec::with_capacity(listeners.len());
        for (i, std_listener) in listeners.into_iter().enumerate() {
            let worker = Worker {
                settings: settings.clone(),
                gate: gate.clone(),
                proxy: proxy.clone(),
                slots: connection_slots.clone(),
                shutdown: shutdown_rx.clone(),
            };
            let handle = std::thread::Builder::new().name(format!("whopgate-worker-{i}")).spawn(move || {
                // Each worker counts in a metrics slot of its own.
                crate::per_core::claim_slot(i);
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "could not start a worker runtime");
                        return;
                    }
                };
                runtime.block_on(worker.run(std_listener));
            })?;
            workers.push(handle);
        }
        Ok(Server { local_addr, shutdown, workers })
    }

    /// The address clients connect to (with the real port when `listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets in-flight requests finish (up to the drain timeout), then returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let workers = self.workers;
        let joined = tokio::task::spawn_blocking(move || {
            for worker in workers {
                let _ = worker.join();
            }
        });
        let _ = joined.await;
    }
}

/// Resolves once `shutdown` says stop (or its sender is gone).
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

struct Worker {
    settings: Arc<ServerSettings>,
    gate: Gate,
    proxy: Arc<Proxy>,
    slots: Arc<Semaphore>,
    shutdown: watch::Receiver<bool>,
}

impl Worker {
    async fn run(mut self, std_listener: std::net::TcpListener) {
        let listener = match tokio::net::TcpListener::from_std(std_listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "could not register a listener");
                return;
            }
        };
        let pool = self.proxy.new_pool();
        // The proxy reads the identity headers; WhopUser in the extensions would go unused.
        let layer = self.gate.layer().with_handoff(WriteIdentityHeaders).serving_tls(self.settings.tls.is_some());
        let tracker = TaskTracker::new();
        let supervisor = Supervisor::new(self.settings.limits.header_read_timeout, self.shutdown.clone());
        // Ends with the worker's runtime.
        tokio::spawn(supervisor.clone().run());
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = crate::server::stopped(&mut self.shutdown) => break,
            };
            // At the limit, this worker holds the one connection it accepted and stops accepting:
            // the rest wait in the kernel's backlog. Taking the slot after accept (not before)
            // means an idle worker never sits on a slot another worker's client needs.
            let permit = tokio::select! {
                permit = self.slots.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
                _ = crate::server::stopped(&mut self.shutdown) => break,
            };
            let _ = stream.set_nodelay(true);
            let tls = self.settings.tls.is_some();
            let peer = Peer::new(peer.ip(), tls, &self.settings.trusted_proxies);
            let service = layer.clone().from_trusted_proxy(peer.trusted).layer(self.proxy.service(pool.clone(), peer));
            let settings = self.settings.clone();
            let supervisor = supervisor.clone();
            tracker.spawn(async move {
                match &settings.tls {
                    None => connection::serve(stream, None, &settings.limits, service, &supervisor).await,
                    Some(acceptor) => {
                        // The handshake counts against the header timeout: a slow TLS client is a
                        // slow client.
                        let limit = settings.limits.header_read_timeout;
                        match tokio::time::timeout(limit, acceptor.accept(stream)).await {
                            Ok(Ok(tls_stream)) => {
                                let h2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2");
                                connection::serve(tls_stream, Some(h2), &settings.limits, service, &supervisor).await;
                            }
                            Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                            Err(_) => tracing::debug!("TLS handshake timed out"),
                        }
                    }
                }
                drop(permit);
            });
        }
        drop(listener);
        tracker.close();
        if tokio::time::timeout(self.settings.drain_timeout, tracker.wait()).await.is_err() {
            tracing::warn!(open = tracker.len(), "drain timeout reached; closing the connections still open");
        }
    }
}
