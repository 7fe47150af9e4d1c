//! WebSocket tunnelling: once both sides have switched protocols, bytes are copied both ways
//! until either side closes.
//!
//! WebSocket is the one protocol tunnelled. A tunnel carries bytes the gate never sees again, so
//! any protocol that frames further requests inside it would let them reach the app unjudged:
//! `h2c` above all (the client would then ask for `/admin` over HTTP/2, straight to the app).

use crate::gate::StreamEnd;
use bytes::Bytes;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
/// `end` is the gate's watch of a gated tunnel (see [`crate::gate::StreamControl`]): when it
/// resolves, the client gets a close frame (1008, "access revoked") if the upstream's last frame
/// was sent whole, else the connection simply closes, and so does the upstream's.
pub fn tunnel(client: OnUpgrade, upstream: TcpStream, early: Bytes, end: StreamEnd) {
    tokio::spawn(async move {
        let client = match client.await {
            Ok(client) => client,
            Err(e) => {
                tracing::debug!(error = %e, "the client's upgrade did not complete");
                return;
            }
        };
        let (mut client_read, mut client_write) = tokio::io::split(TokioIo::new(client));
        let (mut upstream_read, mut upstream_write) = upstream.into_split();
        let mut frames = FrameBoundary::default();
        if !early.is_empty() {
            if client_write.write_all(&early).await.is_err() {
                return;
            }
            frames.feed(&early);
        }
        let mut writing = false;
        let revoked = {
            let up = async {
                let _ = tokio::io::copy(&mut client_read, &mut upstream_write).await;
                let _ = upstream_write.shutdown().await;
            };
            let down = async {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = match upstream_read.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    // Cut off mid-write, the client may hold part of a frame: no close frame then.
                    writing = true;
                    if client_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    writing = false;
                    frames.feed(&buf[..n]);
                }
                let _ = client_write.shutdown().await;
            };
            tokio::select! {
                _ = futures_util::future::join(up, down) => false,
                // Never, on a public route.
                () = end => true,
            }
        };
        if revoked {
            if !writing && frames.at_boundary() {
                let _ = client_write.write_all(&close_frame(1008, "access revoked")).await;
            }
            let _ = client_write.shutdown().await;
        }
    });
}

/// A server-to-client close frame (unmasked) with `code` and `reason` (at most 123 bytes).
fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let reason = &reason.as_bytes()[..reason.len().min(123)];
    let mut frame = vec![0x88, (2 + reason.len()) as u8];
    frame.extend_from_slice(&code.to_be_bytes());
    frame.extend_from_slice(reason);
    frame
}

/// Where the upstream's WebSocket frames begin and end in the bytes sent on, so a close frame
/// is only ever written between two frames (RFC 6455 §5.2 framing; payloads are not read).
#[derive(Debug, Default)]
struct FrameBoundary {
    header: [u8; 14],
    have: usize,
    payload_left: u64,
}

impl FrameBoundary {
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let take = usize::try_from(self.payload_left).unwrap_or(usize::MAX).min(bytes.len());
                self.payload_left -= take as u64;
                bytes = &bytes[take..];
                continue;
            }
            self.header[self.have] = bytes[0];
            self.have += 1;
            bytes = &bytes[1..];
            if let Some(len) = self.payload_len() {
                self.payload_left = len;
                self.have = 0;
            }
        }
    }

    /// The payload length once the header is complete.
    fn payload_len(&self) -> Option<u64> {
        if self.have < 2 {
            return None;
        }
        let h = &self.header;
        let len7 = h[1] & 0x7f;
        let extended = match len7 {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if h[1] & 0x80 != 0 { 4 } else { 0 };
        if self.have < 2 + extended + mask {
            return None;
        }
        Some(match extended {
            0 => u64::from(len7),
            2 => u64::from(u16::from_be_bytes([h[2], h[3]])),
            _ => u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]),
        })
    }

    fn at_boundary(&self) -> bool {
        self.have == 0 && self.payload_left == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_boundaries_are_found_across_any_split() {
        // A text frame "hi", a 300-byte binary frame (16-bit length), an empty ping, a masked
        // frame: fed whole, and byte by byte.
        let mut stream = vec![0x81, 2, b'h', b'i', 0x82, 126, 0x01, 0x2c];
        stream.extend(std::iter::repeat_n(7u8, 300));
        stream.extend([0x89, 0]);
        stream.extend([0x81, 0x81, 1, 2, 3, 4, b'x']);
        let mut whole = FrameBoundary::default();
        whole.feed(&stream);
        assert!(whole.at_boundary());
        let mut bytewise = FrameBoundary::default();
        let ends = [4usize, 308, 310, 317];
        for (i, b) in stream.iter().enumerate() {
            bytewise.feed(&[*b]);
            assert_eq!(bytewise.at_boundary(), ends.contains(&(i + 1)), "after byte {}", i + 1);
        }
        let mut long = FrameBoundary::default();
        long.feed(&[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
        long.feed(&[0; 65535]);
        assert!(!long.at_boundary());
        long.feed(&[0]);
        assert!(long.at_boundary());
    }

    #[test]
    fn the_close_frame_says_policy_violation() {
        assert_eq!(close_frame(1008, "access revoked")[..4], [0x88, 16, 0x03, 0xF0]);
    }

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
