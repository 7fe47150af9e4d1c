//! The app behind the gate, as an attacker's target: a raw HTTP/1.1 server on a real socket that
//! records every byte it receives (request heads exactly as written, bodies, and anything sent
//! through a switched protocol) and, unlike a careful server, does whatever it is asked.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the app answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// `200 ok`; a request with an `Upgrade` header is switched to what it asked for (`101`).
    Obliging,
    /// Always `101 Switching Protocols` to this token, asked or not.
    AlwaysSwitch(&'static str),
    /// `200 ok` to everything, upgrade or not.
    NeverSwitch,
}

/// One request as the app received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The head, byte for byte (request line and header lines, up to the blank line).
    pub head: String,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Received {
    /// The request line.
    pub fn request_line(&self) -> &str {
        self.head.lines().next().unwrap_or("")
    }

    /// Every value of a header, names compared case-insensitively.
    pub fn header(&self, name: &str) -> Vec<String> {
        self.head
            .lines()
            .skip(1)
            .filter_map(|line| line.split_once(':'))
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }

    /// Every header name, lower-cased, in order.
    pub fn names(&self) -> Vec<String> {
        self.head.lines().skip(1).filter_map(|l| l.split_once(':')).map(|(n, _)| n.to_ascii_lowercase()).collect()
    }
}

/// A running app.
#[derive(Clone)]
pub struct App {
    /// Its address.
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    tunnelled: Arc<Mutex<Vec<u8>>>,
}

impl App {
    /// Starts the app on 127.0.0.1.
    pub async fn start(behaviour: Behaviour) -> App {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let app = App { addr: listener.local_addr().unwrap(), received: Arc::default(), tunnelled: Arc::default() };
        let served = app.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(served.clone().serve(stream, behaviour));
            }
        });
        app
    }

    /// `http://addr`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Everything that arrived after a `101`: what a tunnel carried.
    pub fn tunnelled(&self) -> String {
        String::from_utf8_lossy(&self.tunnelled.lock().unwrap()).into_owned()
    }

    /// The one request received; panics on none or several.
    pub fn only(&self) -> Received {
        let received = self.received();
        assert_eq!(received.len(), 1, "the app received {received:#?}");
        received[0].clone()
    }

    async fn serve(self, mut stream: TcpStream, behaviour: Behaviour) {
        let mut buf = Vec::new();
        loop {
            let Some(end) = read_until_head_end(&mut stream, &mut buf).await else { return };
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            let received = Received { head, body: Vec::new() };
            let Some(body) = read_body(&mut stream, &mut buf, &received).await else { return };
            let received = Received { body, ..received };
            let asked = received.header("upgrade").first().cloned();
            self.received.lock().unwrap().push(received);
            let switch_to = match behaviour {
                Behaviour::Obliging => asked,
                Behaviour::AlwaysSwitch(token) => Some(token.to_owned()),
                Behaviour::NeverSwitch => None,
            };
            if let Some(token) = switch_to {
                let head =
                    format!("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {token}\r\n\r\n");
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                self.tunnelled.lock().unwrap().extend_from_slice(&buf);
                let mut chunk = [0u8; 4096];
                while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk)).await {
                    if n == 0 {
                        return;
                    }
                    self.tunnelled.lock().unwrap().extend_from_slice(&chunk[..n]);
                    // Answer whatever came through, as an app speaking the new protocol would.
                    let _ = stream.write_all(b"tunnelled").await;
                }
                return;
            }
            let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok";
            if stream.write_all(reply).await.is_err() {
                return;
            }
        }
    }
}

/// Reads until `buf` holds a whole head; the index of its `\r\n\r\n`.
async fn read_until_head_end(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(end);
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads the body the head announces (`Content-Length` or chunked), leaving what follows in `buf`.
async fn read_body(stream: &mut TcpStream, buf: &mut Vec<u8>, head: &Received) -> Option<Vec<u8>> {
    let chunked = head.header("transfer-encoding").iter().any(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                fill(stream, buf).await?;
            };
            let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            buf.drain(..line_end + 2);
            while buf.len() < size + 2 {
                fill(stream, buf).await?;
            }
            body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
            if size == 0 {
                return Some(body);
            }
        }
    }
    let length: usize = head.header("content-length").first().and_then(|v| v.parse().ok()).unwrap_or(0);
    while buf.len() < length {
        fill(stream, buf).await?;
    }
    Some(buf.drain(..length).collect())
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk).await.ok()?;
    (n > 0).then(|| buf.extend_from_slice(&chunk[..n]))
}
