//! WebSocket tunnelling: once both sides have switched protocols, bytes are copied both ways
//! until either side closes.
//!
//! WebSocket is the one protocol tunnelled. A tunnel carries bytes the gate never sees again, so
//! any protocol that frames further requests inside it would let them reach the app unjudged:
//! `h2c` above all (the client would then ask for `/admin` over HTTP/2, straight to the app).

use bytes::Bytes;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The one `Upgrade` token that is tunnelled.
pub const TUNNELLED: &str = "websocket";

/// Is this `Upgrade` token (`websocket`, `WebSocket`, `websocket/13`) the tunnelled protocol?
pub fn is_tunnelled(token: &str) -> bool {
    let name = token.split_once('/').map_or(token, |(name, _)| name);
    name.trim().eq_ignore_ascii_case(TUNNELLED)
}

/// Joins the client's upgraded connection and the upstream socket in a background task.
/// `early` is what the upstream sent right after its `101` head, which the client gets first.
pub fn tunnel(client: OnUpgrade, mut upstream: TcpStream, early: Bytes) {
    tokio::spawn(async move {
        let client = match client.await {
            Ok(client) => client,
            Err(e) => {
                tracing::debug!(error = %e, "the client's upgrade did not complete");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        if !early.is_empty() && client.write_all(&early).await.is_err() {
            return;
        }
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            tracing::debug!(error = %e, "upgraded connection ended with an error");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_websocket_is_tunnelled() {
        for token in ["websocket", "WebSocket", "WEBSOCKET", "websocket/13"] {
            assert!(is_tunnelled(token), "{token}");
        }
        for token in ["h2c", "HTTP/2.0", "TLS/1.2", "h2", "websockets", "", "web socket"] {
            assert!(!is_tunnelled(token), "{token}");
        }
    }
}
