//! Bodies stream through whopgate in both directions without being buffered: 1 GiB each way in
//! bounded memory, server-sent events one at a time, WebSocket frames both ways.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Upstream, Whopgate, config};

const GIB: u64 = 1 << 30;
const MAX_GROWTH: u64 = 32 << 20;

const PUBLIC: &str = r#"
[[route]]
path = "/"
public = true
"#;

/// Samples the process's resident size until stopped; returns the peak.
fn watch_rss(gate: &Whopgate) -> (Arc<AtomicBool>, std::thread::JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let pid = gate.pid();
    let flag = stop.clone();
    let handle = std::thread::spawn(move || {
        let mut peak = 0;
        while !flag.load(Ordering::Relaxed) {
            if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                let kib: u64 = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                peak = peak.max(kib * 1024);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        peak
    });
    (stop, handle)
}

async fn h1_sender<B>(gate: &Whopgate) -> hyper::client::conn::http1::SendRequest<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(gate.addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    sender
}

async fn warm_up(gate: &Whopgate) {
    for _ in 0..4 {
        let r = reqwest::get(gate.url("/warm")).await.unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_upload_streams_in_bounded_memory() {
    let up = Upstream::start().await;
    let gate = Whopgate::start(&config(&up.url(), PUBLIC));
    warm_up(&gate).await;
    let baseline = gate.rss_bytes();
    let (stop, peak) = watch_rss(&gate);

    let chunk = Bytes::from(vec![7u8; 256 * 1024]);
    let chunks = GIB / chunk.len() as u64;
    let stream = futures_util::stream::iter((0..chunks).map(move |_| Ok::<_, Infallible>(Frame::data(chunk.clone()))));
    let mut sender = h1_sender(&gate).await;
    let request = http::Request::post("/upload")
        .header("host", "app")
        .header("content-length", GIB)
        .body(StreamBody::new(stream))
        .unwrap();
    let started = Instant::now();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let peak = peak.join().unwrap();
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["bytes"], GIB);
    let growth = peak.saturating_sub(baseline);
    eprintln!("upload: 1 GiB in {elapsed:?}, RSS baseline {} MiB, peak {} MiB", baseline >> 20, peak >> 20);
    assert!(growth < MAX_GROWTH, "RSS grew by {} MiB during a 1 GiB upload", growth >> 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_download_streams_in_bounded_memory() {
    let up = Upstream::start().await;
    let gate = Whopgate::start(&config(&up.url(), PUBLIC));
    warm_up(&gate).await;
    let baseline = gate.rss_bytes();
    let (stop, peak) = watch_rss(&gate);

    let mut sender = h1_sender::<http_body_util::Empty<Bytes>>(&gate).await;
    let request = http::Request::get(format!("/download?bytes={GIB}"))
        .header("host", "app")
        .body(http_body_util::Empty::new())
        .unwrap();
    let started = Instant::now();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame.unwrap().data_ref() {
            received += data.len() as u64;
        }
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let peak = peak.join().unwrap();
    assert_eq!(received, GIB);
    let growth = peak.saturating_sub(baseline);
    eprintln!("download: 1 GiB in {elapsed:?}, RSS baseline {} MiB, peak {} MiB", baseline >> 20, peak >> 20);
    assert!(growth < MAX_GROWTH, "RSS grew by {} MiB during a 1 GiB download", growth >> 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_arrive_one_at_a_time() {
    let up = Upstream::start().await;
    let gate = Whopgate::start(&config(&up.url(), PUBLIC));
    let mut sender = h1_sender::<http_body_util::Empty<Bytes>>(&gate).await;
    let gap = Duration::from_millis(400);
    let request = http::Request::get(format!("/sse?n=4&gap_ms={}", gap.as_millis()))
        .header("host", "app")
        .header("accept", "text/event-stream")
        .body(http_body_util::Empty::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let mut arrivals = Vec::new();
    let mut text = String::new();
    let started = Instant::now();
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame.unwrap().data_ref() {
            text.push_str(std::str::from_utf8(data).unwrap());
            // Record when each complete event arrived.
            while arrivals.len() < text.matches("\n\n").count() {
                arrivals.push(started.elapsed());
            }
        }
    }
    assert_eq!(text, "data: event 0\n\ndata: event 1\n\ndata: event 2\n\ndata: event 3\n\n");
    assert_eq!(arrivals.len(), 4);
    // Each event arrived on its own, roughly when the upstream flushed it: never batched.
    for pair in arrivals.windows(2) {
        let between = pair[1] - pair[0];
        assert!(between >= gap - Duration::from_millis(100), "events batched: arrivals {arrivals:?}");
    }
    assert!(arrivals[0] < gap, "first event held back: {arrivals:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_round_trips_text_and_binary() {
    let up = Upstream::start().await;
    let gate = Whopgate::start(&config(&up.url(), PUBLIC));
    let (mut ws, response) = tokio_tungstenite::connect_async(format!("ws://{}/ws", gate.addr)).await.unwrap();
    assert_eq!(response.status(), 101);
    ws.send(Message::text("hello through the gate")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello through the gate"));
    let binary: Vec<u8> = (0..=255u8).cycle().take(200_000).collect();
    ws.send(Message::binary(binary.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(binary));
    for i in 0..50 {
        ws.send(Message::text(format!("msg {i}"))).await.unwrap();
    }
    for i in 0..50 {
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(format!("msg {i}")));
    }
    ws.close(None).await.unwrap();
    assert_eq!(up.last().header("upgrade"), ["websocket"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_connections_are_reused_upstream() {
    let up = Upstream::start().await;
    let gate = Whopgate::start(&config(&up.url(), PUBLIC));
    let client = reqwest::Client::new();
    for _ in 0..200 {
        let r = client.get(gate.url("/public")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    assert_eq!(up.seen().len(), 200);
    // One connection per worker at most: each response's connection went back to the pool.
    assert!(up.connections() <= 2, "{} upstream connections for 200 sequential requests", up.connections());
    let metrics = reqwest::get(gate.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"whopgate_upstream_requests_total{status="200"} 200"#), "{metrics}");
}
