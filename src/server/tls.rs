//! HTTPS on the client listener (`tls_cert` / `tls_key`), with renewed certificate files picked
//! up without a restart: each handshake checks the files' modification times (two `stat`s, next
//! to nothing beside a handshake) and reloads when they changed. A renewal that fails to load is
//! logged and the previous certificate kept.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// Why the certificate or key could not be loaded.
#[derive(Debug)]
pub struct TlsError {
    path: PathBuf,
    problem: String,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.problem)
    }
}

impl std::error::Error for TlsError {}

/// The files a certificate came from, and when they were last changed.
#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    stamps: (Option<SystemTime>, Option<SystemTime>),
}

/// Serves the certificate from `cert`/`key`, reloading them when they change on disk.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: Mutex<Loaded>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl ReloadingCert {
    /// Loads the pair now; fails with a clear message when either file is unusable.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<Self>, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let stamps = (modified(cert_path), modified(key_path));
        let key = load_pair(cert_path, key_path, &provider)?;
        Ok(Arc::new(Self {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            provider,
            current: Mutex::new(Loaded { key, stamps }),
        }))
    }

    /// A TLS acceptor offering h2 and http/1.1 with this certificate.
    pub fn acceptor(self: &Arc<Self>) -> Result<TlsAcceptor, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError { path: self.cert_path.clone(), problem: e.to_string() })?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    fn current(&self) -> Arc<CertifiedKey> {
        let mut loaded = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let stamps = (modified(&self.cert_path), modified(&self.key_path));
        if stamps != loaded.stamps {
            // Remember the stamps either way, so a broken renewal is reported once, not per
            // handshake.
            loaded.stamps = stamps;
            match load_pair(&self.cert_path, &self.key_path, &self.provider) {
                Ok(key) => {
                    tracing::info!(cert = %self.cert_path.display(), "reloaded the TLS certificate");
                    loaded.key = key;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the renewed TLS certificate could not be loaded; keeping the old one")
                }
            }
        }
        loaded.key.clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn load_pair(cert_path: &Path, key_path: &Path, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, TlsError> {
    let bad_cert = |problem: String| TlsError { path: cert_path.to_owned(), problem };
    let bad_key = |problem: String| TlsError { path: key_path.to_owned(), problem };
    let certs = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| bad_cert(format!("cannot read the certificate: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_cert(format!("not a PEM certificate chain: {e}")))?;
    if certs.is_empty() {
        return Err(bad_cert("no CERTIFICATE block found".to_owned()));
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| bad_key(format!("not a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}")))?;
    let certified = CertifiedKey::from_der(certs, key, provider)
        .map_err(|e| bad_key(format!("the key does not fit the certificate: {e}")))?;
    Ok(Arc::new(certified))
}
