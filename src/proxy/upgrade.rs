//! WebSocket (and any HTTP/1.1 `Upgrade`) tunnelling: once both sides have switched protocols,
//! bytes are copied both ways until either side closes.

use bytes::Bytes;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

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
