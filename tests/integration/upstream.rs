//! The upstream side of the proxy: HTTP/1.1 framings, HEAD, bodies without a length, and
//! keep-alive connections the upstream closes on its own.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;

use crate::support::{Upstream, Whopgate, config};

const PUBLIC: &str = "[[route]]\npath = \"/\"\npublic = true\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_and_bodiless_statuses_keep_their_headers_and_the_connection() {
    let up = Upstream::start().await;
    let gate = Whopgate::start(&config(&up.url(), PUBLIC));
    let client = reqwest::Client::new();
    let head = client.head(gate.url("/download?bytes=12345")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "12345");
    for status in [204, 304] {
        let r = client.get(gate.url(&format!("/status/{status}"))).send().await.unwrap();
        assert_eq!(r.status().as_u16(), status);
        assert!(r.bytes().await.unwrap().is_empty());
    }
    // The same upstream connection carried all of them and still works.
    let r = client.get(gate.url("/download?bytes=100")).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap().len(), 100);
    assert!(up.connections() <= 2, "{} upstream connections", up.connections());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_without_a_length_is_sent_chunked_and_arrives_whole() {
    let up = Upstream::start().await;
    let gate = Whopgate::start(&config(&up.url(), PUBLIC));
    let stream = tokio::net::TcpStream::connect(gate.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let pieces: Vec<Bytes> = (0..50).map(|i| Bytes::from(vec![b'a' + (i % 26) as u8; 1000 + i * 997])).collect();
    let total: usize = pieces.iter().map(Bytes::len).sum();
    let frames = futures_util::stream::iter(pieces.clone().into_iter().map(|b| Ok::<_, Infallible>(Frame::data(b))));
    let request = http::Request::post("/upload").header("host", "app").body(StreamBody::new(frames)).unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["bytes"], total);
    let expected =
        pieces.iter().flat_map(|b| b.iter()).fold(0u64, |s, b| s.wrapping_mul(31).wrapping_add(u64::from(*b)));
    assert_eq!(echo["sum"], expected);
    assert_eq!(up.last().header("transfer-encoding"), ["chunked"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_connections_the_upstream_closed_are_not_a_failure() {
    let up = Upstream::start_with_idle_timeout(Some(Duration::from_millis(200))).await;
    let gate = Whopgate::start(&config(&up.url(), PUBLIC));
    let client = reqwest::Client::new();
    for round in 0..4 {
        for _ in 0..3 {
            let r = client.get(gate.url("/echo")).send().await.unwrap();
            assert_eq!(r.status(), 200, "round {round}");
            r.bytes().await.unwrap();
        }
        // Long enough for the upstream to drop the idle connections.
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let r = client.post(gate.url("/echo")).body("after idle").send().await.unwrap();
    assert_eq!(r.status(), 200, "a POST after the upstream closed idle connections");
    let metrics = reqwest::get(gate.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"whopgate_upstream_requests_total{status="error"} 0"#), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_upstream_response_is_502() {
    // A "server" that answers garbage.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream.write_all(b"SSH-2.0-OpenSSH\r\n\r\n").await;
            });
        }
    });
    let gate = Whopgate::start(&config(&format!("http://{addr}"), PUBLIC));
    let r = reqwest::get(gate.url("/x")).await.unwrap();
    assert_eq!(r.status(), 502);
}
