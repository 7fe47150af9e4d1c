//! `whopgate` (no subcommand): the sidecar reverse proxy, from config to a draining exit.

use std::sync::Arc;

use tokio::sync::watch;

use crate::admin::{AdminServer, Readiness};
use crate::config::Config;
use crate::gate::{Gate, GateError};
use crate::proxy::{Proxy, UpstreamAddr};
use crate::server::{ConnectionLimits, ReloadingCert, Server, ServerSettings};

/// Why the sidecar stopped with an error.
#[derive(Debug)]
pub enum RunError {
    /// The config has no `upstream`, which the sidecar forwards to.
    NoUpstream,
    /// The gate could not be built.
    Gate(GateError),
    /// `[identity.dev]` is on but `listen` is not a loopback address.
    DevIdentityNotLoopback(std::net::SocketAddr),
    /// The TLS certificate or key could not be loaded.
    Tls(crate::server::TlsError),
    /// A listener could not be bound.
    Bind {
        /// What was being bound (`listen` or `admin_listen`).
        what: &'static str,
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::NoUpstream => f.write_str("the config has no `upstream`: set upstream = \"http://host:port\""),
            RunError::Gate(e) => write!(f, "could not build the gate: {e}"),
            RunError::Tls(e) => write!(f, "could not load the TLS certificate: {e}"),
            RunError::DevIdentityNotLoopback(addr) => write!(
                f,
                "refusing to start: the dev identity lets anyone in as a fixed user, and `listen` ({addr}) is not a \
                 loopback address; use it only with listen = \"127.0.0.1:…\" (or remove \"dev\" from identity.sources)"
            ),
            RunError::Bind { what, addr, source } => write!(f, "could not listen on {addr} ({what}): {source}"),
        }
    }
}

impl std::error::Error for RunError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RunError::Gate(e) => Some(e),
            RunError::Tls(e) => Some(e),
            RunError::Bind { source, .. } => Some(source),
            RunError::NoUpstream | RunError::DevIdentityNotLoopback(_) => None,
        }
    }
}

/// Worker threads: `WHOPGATE_WORKERS`, else one per core.
fn worker_count() -> usize {
    std::env::var("WHOPGATE_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n: &usize| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Runs the sidecar until SIGTERM or SIGINT, then drains and returns.
pub async fn run(config: Config) -> Result<(), RunError> {
    Sidecar::start(config).await?.run_until_signal().await;
    Ok(())
}

/// A started sidecar: serving, ready, and waiting to be told to stop.
#[derive(Debug)]
pub struct Sidecar {
    server: Server,
    admin_addr: Option<std::net::SocketAddr>,
    readiness: Arc<Readiness>,
    stop_admin: watch::Sender<bool>,
    drain_timeout: std::time::Duration,
}

impl Sidecar {
    /// Where clients connect.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.server.local_addr()
    }

    /// The admin listener's address, when configured.
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin_addr
    }

    /// Serves until SIGTERM or SIGINT, then stops accepting, drains and returns.
    pub async fn run_until_signal(self) {
        let signal = wait_for_signal().await;
        tracing::info!(
            signal,
            drain_timeout = %humantime::format_duration(self.drain_timeout),
            "shutting down: no new connections; finishing in-flight requests"
        );
        self.readiness.set(false);
        self.server.shutdown().await;
        let _ = self.stop_admin.send(true);
        tracing::info!("stopped");
    }

    /// Binds the listeners, starts the workers and returns once ready (logging the ready line).
    pub async fn start(config: Config) -> Result<Sidecar, RunError> {
        let dev_on = config.identity.dev.is_some() && config.identity.sources.contains(&crate::config::SourceKind::Dev);
        if dev_on && !config.dev_identity_allowed() {
            return Err(RunError::DevIdentityNotLoopback(config.listen));
        }
        let upstream = config.upstream.clone().ok_or(RunError::NoUpstream)?;
        let authority = upstream.authority().map(|a| a.to_string()).ok_or(RunError::NoUpstream)?;
        let gate = Gate::from_config(&config).await.map_err(RunError::Gate)?;
        let metrics = gate.metrics().clone();
        let gate_keys_loaded = {
            let gate = gate.clone();
            async move { gate.keys_loaded().await }
        };
        let proxy = Proxy::new(UpstreamAddr { authority }, config.upstream_timeout, metrics.clone());
        let readiness = Arc::new(Readiness::default());
        let (stop_admin, admin_stopped) = watch::channel(false);

        let admin_addr = match config.admin_listen {
            Some(addr) => {
                let admin = AdminServer::bind(addr).await.map_err(|source| RunError::Bind {
                    what: "admin_listen",
                    addr,
                    source,
                })?;
                let bound = admin.local_addr().ok();
                tokio::spawn(admin.serve(metrics, readiness.clone(), admin_stopped));
                bound
            }
            None => None,
        };

        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => {
                let reloading = ReloadingCert::load(cert, key).map_err(RunError::Tls)?;
                Some(reloading.acceptor().map_err(RunError::Tls)?)
            }
            _ => None,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let settings = ServerSettings {
            listen: config.listen,
            workers: worker_count(),
            limits: ConnectionLimits {
                header_read_timeout: config.limits.header_read_timeout,
                max_header_bytes: config.limits.max_header_bytes,
            },
            max_connections: config.limits.max_connections,
            drain_timeout: config.limits.drain_timeout,
            trusted_proxies: config.trusted_proxies.clone(),
            tls,
        };
        let workers = settings.workers;
        let server = Server::start(settings, gate.clone(), proxy).map_err(|source| RunError::Bind {
            what: "listen",
            addr: config.listen,
            source,
        })?;
        // Ready once the user-token keys are loaded (or their first fetch failed: the built-in key
        // still works), but never held back longer than a Whop call may take.
        let _ = tokio::time::timeout(config.whop.timeout, gate_keys_loaded).await;
        readiness.set(true);
        for what in crate::check::not_yet_acted_on(&config) {
            tracing::warn!("{what} is accepted but not acted on by this version of whopgate");
        }
        tracing::info!(
            listen = %server.local_addr(),
            scheme,
            upstream = %upstream,
            routes = config.routes.len(),
            admin = %admin_addr.map_or_else(|| "off".to_owned(), |a| a.to_string()),
            workers,
            "whopgate ready"
        );
        Ok(Sidecar { server, admin_addr, readiness, stop_admin, drain_timeout: config.limits.drain_timeout })
    }
}

/// Waits for SIGTERM or SIGINT (Ctrl-C) and names it.
pub async fn wait_for_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}
