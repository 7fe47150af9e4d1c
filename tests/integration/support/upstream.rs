//! A real upstream app for the tests, on a real TCP port: it echoes what it received, streams
//! large bodies, serves server-sent events, waits on request, and speaks WebSocket.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method.
    pub method: String,
    /// Request target as received (path and query).
    pub target: String,
    /// Header names and values, in order, as received.
    pub headers: Vec<(String, String)>,
}

impl Seen {
    /// All values of a header (names compared case-insensitively).
    pub fn header(&self, name: &str) -> Vec<String> {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone()).collect()
    }

    /// Asserts the identity headers the gate sets: exactly one of each, with these values.
    #[track_caller]
    pub fn assert_identity(&self, user: &str, source: &str, access_level: &str) {
        assert_eq!(self.header("x-whop-user-id"), [user]);
        assert_eq!(self.header("x-whopgate-source"), [source]);
        assert_eq!(self.header("x-whop-access-level"), [access_level]);
    }
}

/// A running upstream.
#[derive(Clone)]
pub struct Upstream {
    /// Its address.
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    /// HTTP connections being served now (an upgraded one counts until its upgrade).
    open: Arc<std::sync::atomic::AtomicUsize>,
}

type Body = BoxBody<Bytes, Infallible>;

impl Upstream {
    /// Starts the upstream on 127.0.0.1 with an OS-chosen port.
    pub async fn start() -> Upstream {
        Self::start_with_idle_timeout(None).await
    }

    /// Like [`Upstream::start`], closing keep-alive connections idle for `idle` (as many app
    /// servers do, on their own schedule).
    pub async fn start_with_idle_timeout(idle: Option<Duration>) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let up = Upstream { addr, seen: seen.clone(), connections: connections.clone(), open: open.clone() };
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                open.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let seen = seen.clone();
                let open = open.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(req, seen.clone()));
                    let mut builder = hyper::server::conn::http1::Builder::new();
                    if let Some(idle) = idle {
                        builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(idle);
                    }
                    let _ = builder.serve_connection(TokioIo::new(stream), service).with_upgrades().await;
                    open.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                });
            }
        });
        up
    }

    /// `http://addr`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// HTTP connections open now.
    pub fn open_connections(&self) -> usize {
        self.open.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The last request seen.
    pub fn last(&self) -> Seen {
        self.seen().last().cloned().expect("the upstream saw no request")
    }
}

fn query_param(req: &Request<Incoming>, name: &str) -> Option<u64> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| v.parse().ok()).flatten()
    })
}

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    r
}

async fn handle(mut req: Request<Incoming>, seen: Arc<Mutex<Vec<Seen>>>) -> Result<Response<Body>, Infallible> {
    let record = Seen {
        method: req.method().to_string(),
        target: req.uri().to_string(),
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
    };
    seen.lock().unwrap().push(record.clone());
    let path = req.uri().path().to_owned();

    if path.starts_with("/slow") {
        tokio::time::sleep(Duration::from_millis(query_param(&req, "ms").unwrap_or(1000))).await;
        return Ok(full(StatusCode::OK, "slow done"));
    }
    if path.starts_with("/download") {
        let total = query_param(&req, "bytes").unwrap_or(1024);
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let stream = futures_util::stream::unfold(0u64, move |sent| {
            let chunk = chunk.clone();
            async move {
                if sent >= total {
                    return None;
                }
                let n = (total - sent).min(chunk.len() as u64);
                Some((Ok::<_, Infallible>(Frame::data(chunk.slice(..n as usize))), sent + n))
            }
        });
        let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
        r.headers_mut().insert("content-length", total.into());
        return Ok(r);
    }
    if path.starts_with("/upload") {
        let mut body = req.into_body();
        let mut total = 0u64;
        let mut sum = 0u64;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return Ok(full(StatusCode::BAD_REQUEST, "broken body"));
            };
            if let Some(data) = frame.data_ref() {
                total += data.len() as u64;
                sum = data.iter().fold(sum, |s, b| s.wrapping_mul(31).wrapping_add(u64::from(*b)));
            }
        }
        return Ok(full(StatusCode::OK, json!({"bytes": total, "sum": sum}).to_string()));
    }
    if path.starts_with("/sse") {
        let n = query_param(&req, "n").unwrap_or(3);
        let gap = Duration::from_millis(query_param(&req, "gap_ms").unwrap_or(300));
        let stream = futures_util::stream::unfold(0u64, move |i| async move {
            if i >= n {
                return None;
            }
            if i > 0 {
                tokio::time::sleep(gap).await;
            }
            Some((Ok::<_, Infallible>(Frame::data(Bytes::from(format!("data: event {i}\n\n")))), i + 1))
        });
        let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
        r.headers_mut().insert("content-type", "text/event-stream".parse().unwrap());
        r.headers_mut().insert("cache-control", "no-cache".parse().unwrap());
        return Ok(r);
    }
    if path.starts_with("/ws") {
        return Ok(websocket_echo(&mut req));
    }
    if let Some(code) = path.strip_prefix("/status/") {
        let code = code.parse().unwrap_or(500);
        return Ok(full(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), ""));
    }

    // Echo: what was received, byte for byte (the body base64-encoded).
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let echo = json!({
        "method": record.method,
        "target": record.target,
        "headers": record.headers,
        "body_base64": base64::engine::general_purpose::STANDARD.encode(&body),
    });
    let mut r = full(StatusCode::OK, echo.to_string());
    r.headers_mut().insert("content-type", "application/json".parse().unwrap());
    r.headers_mut().insert("x-upstream", "echo".parse().unwrap());
    Ok(r)
}

/// Answers a WebSocket handshake and echoes every text and binary message.
fn websocket_echo(req: &mut Request<Incoming>) -> Response<Body> {
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role;
    let Some(key) = req.headers().get("sec-websocket-key") else {
        return full(StatusCode::BAD_REQUEST, "not a websocket request");
    };
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else { return };
        let mut ws =
            tokio_tungstenite::WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() || msg.is_binary() {
                if ws.send(msg).await.is_err() {
                    break;
                }
            } else if msg.is_close() {
                break;
            }
        }
    });
    let mut r = full(StatusCode::SWITCHING_PROTOCOLS, Bytes::new());
    r.headers_mut().insert("upgrade", "websocket".parse().unwrap());
    r.headers_mut().insert("connection", "Upgrade".parse().unwrap());
    r.headers_mut().insert("sec-websocket-accept", accept.parse().unwrap());
    r
}
