//! The attacker's side: raw HTTP/1.1 bytes on a socket, and HTTP/2 requests whose headers a
//! client library would not normally let through.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};

pub use crate::support::{raw_request, status_of};

/// Routes most attacks aim at: an admin host and an `/admin` path behind the gate, the rest
/// public, so that any request that slips past a protected rule is forwarded, and shows.
pub const ROUTES: &str = r#"
[[route]]
path = "/"
host = "admin.example"
require = ["biz_aaaaaaaaaaaaaa"]
access_level = "admin"

[[route]]
path = "/admin"
require = ["biz_aaaaaaaaaaaaaa"]
access_level = "admin"

[[route]]
path = "/"
public = true
"#;

/// One connection kept open across several raw requests (keep-alive, tunnels).
pub struct RawConn {
    stream: TcpStream,
}

impl RawConn {
    /// Connects to `addr`.
    pub fn open(addr: SocketAddr) -> RawConn {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        RawConn { stream }
    }

    /// Writes `bytes` as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        // A closed connection is an answer too: what was read so far tells it.
        let _ = self.stream.write_all(bytes);
    }

    /// Reads what arrives within `wait` (or until the server closes).
    pub fn read_for(&mut self, wait: Duration) -> String {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        let mut chunk = [0u8; 8192];
        while Instant::now() < deadline {
            match self.stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// Every response's status code in `response` (several responses on one connection), in order.
pub fn statuses(response: &str) -> Vec<u16> {
    // A response may follow a body that does not end in a line break ("ok" then "HTTP/1.1 …").
    response
        .match_indices("HTTP/1.1 ")
        .filter_map(|(at, prefix)| response.get(at + prefix.len()..at + prefix.len() + 3)?.parse().ok())
        .collect()
}

/// Sends `request` over HTTP/2 (prior knowledge, cleartext) exactly as built, header for header;
/// the status, or `None` when the gate refused the stream or the connection.
pub async fn h2(addr: SocketAddr, request: http::Request<Empty<Bytes>>) -> Option<u16> {
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.ok()?;
    tokio::spawn(conn);
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request)).await.ok()?.ok()?;
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    Some(status)
}

/// A GET for `target` (absolute, as HTTP/2 needs) with extra `headers`.
pub fn h2_get(target: &str, headers: &[(&str, &str)]) -> http::Request<Empty<Bytes>> {
    let mut builder = http::Request::get(target).version(http::Version::HTTP_2);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Empty::new()).unwrap()
}
