//! When the upstream or the client misbehaves, and when whopgate is asked to stop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::{Upstream, Whopgate, config, raw_request, status_of};

const PUBLIC: &str = r#"
[[route]]
path = "/"
public = true
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_502() {
    // A port that was just free: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let gate = Whopgate::start(&config(&format!("http://{closed}"), PUBLIC));
    let r = reqwest::get(gate.url("/anything")).await.unwrap();
    assert_eq!(r.status(), 502);
    let metrics = reqwest::get(gate.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"whopgate_upstream_requests_total{status="error"} 1"#), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_slower_than_timeout_is_504() {
    let up = Upstream::start().await;
    let gate = Whopgate::start(&config(&up.url(), &format!("upstream_timeout = \"300ms\"\n{PUBLIC}")));
    let started = Instant::now();
    let r = reqwest::get(gate.url("/slow?ms=3000")).await.unwrap();
    assert_eq!(r.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    // A fast request right after is fine.
    assert_eq!(reqwest::get(gate.url("/slow?ms=10")).await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_request_finish_then_exits_0() {
    let up = Upstream::start().await;
    let mut gate = Whopgate::start(&config(&up.url(), PUBLIC));
    let url = gate.url("/slow?ms=1500");
    let in_flight = tokio::spawn(async move { reqwest::get(url).await.unwrap() });
    // Let the request reach the upstream before asking whopgate to stop.
    let deadline = Instant::now() + Duration::from_secs(5);
    while up.seen().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gate.terminate();
    let response = in_flight.await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "slow done");
    let status = tokio::task::block_in_place(|| gate.wait_exit(Duration::from_secs(10))).expect("whopgate exited");
    assert_eq!(status.code(), Some(0), "{:?}", gate.logs());
    // And it stopped accepting.
    assert!(TcpStream::connect(gate.addr).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_bounds_shutdown() {
    let up = Upstream::start().await;
    let mut gate = Whopgate::start(&config(&up.url(), &format!("[limits]\ndrain_timeout = \"500ms\"\n{PUBLIC}")));
    let url = gate.url("/slow?ms=20000");
    let _stuck = tokio::spawn(async move { reqwest::get(url).await });
    let deadline = Instant::now() + Duration::from_secs(5);
    while up.seen().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    gate.terminate();
    let status = tokio::task::block_in_place(|| gate.wait_exit(Duration::from_secs(10))).expect("whopgate exited");
    assert_eq!(status.code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(5), "drain took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trickling_headers_is_disconnected_after_the_header_timeout() {
    let up = Upstream::start().await;
    let gate = Whopgate::start(&config(&up.url(), &format!("[limits]\nheader_read_timeout = \"2s\"\n{PUBLIC}")));
    let addr = gate.addr;
    let outcome = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let started = Instant::now();
        let request = b"GET / HTTP/1.1\r\nHost: app\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        for byte in request {
            // One byte a second, as a slowloris client does.
            if stream.write_all(&[*byte]).is_err() {
                return (started.elapsed(), true);
            }
            let tick = Instant::now();
            while tick.elapsed() < Duration::from_secs(1) {
                let mut buf = [0u8; 256];
                match stream.read(&mut buf) {
                    Ok(0) => return (started.elapsed(), true),
                    Ok(_) => return (started.elapsed(), false),
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => return (started.elapsed(), true),
                }
            }
        }
        (started.elapsed(), false)
    })
    .await
    .unwrap();
    let (elapsed, disconnected) = outcome;
    assert!(disconnected, "the slow client got a response or was never cut off");
    assert!(elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_secs(5), "cut off after {elapsed:?}");
    assert!(up.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_are_refused_with_431() {
    let up = Upstream::start().await;
    let gate = Whopgate::start(&config(&up.url(), &format!("[limits]\nmax_header_bytes = 8192\n{PUBLIC}")));
    let big = "x".repeat(10_000);
    let request = format!("GET / HTTP/1.1\r\nHost: app\r\nX-Big: {big}\r\nConnection: close\r\n\r\n");
    let response = raw_request(gate.addr, request.as_bytes());
    assert_eq!(status_of(&response), 431, "{response}");
    let request = "GET / HTTP/1.1\r\nHost: app\r\nX-Small: 1\r\nConnection: close\r\n\r\n";
    assert_eq!(status_of(&raw_request(gate.addr, request.as_bytes())), 200);
    assert_eq!(up.seen().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_max_connections_wait_their_turn() {
    let up = Upstream::start().await;
    let gate = Whopgate::start(&config(&up.url(), &format!("[limits]\nmax_connections = 2\n{PUBLIC}")));
    // Two slow requests hold both slots; a third connection is not served until one ends.
    let mut held = Vec::new();
    for _ in 0..2 {
        let url = gate.url("/slow?ms=1500");
        held.push(tokio::spawn(async move { reqwest::Client::new().get(url).send().await.unwrap().status() }));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while up.seen().len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    let third = reqwest::Client::new().get(gate.url("/fast")).send().await.unwrap();
    assert_eq!(third.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(800), "served at once: {:?}", started.elapsed());
    for h in held {
        assert_eq!(h.await.unwrap(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_health_readiness_and_metrics() {
    let up = Upstream::start().await;
    let gate = Whopgate::start(&config(&up.url(), PUBLIC));
    assert_eq!(reqwest::get(gate.admin_url("/healthz")).await.unwrap().status(), 200);
    assert_eq!(reqwest::get(gate.admin_url("/readyz")).await.unwrap().status(), 200);
    reqwest::get(gate.url("/x")).await.unwrap();
    let r = reqwest::get(gate.admin_url("/metrics")).await.unwrap();
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let text = r.text().await.unwrap();
    assert!(text.contains(r#"whopgate_requests_total{decision="public",route="/"} 1"#), "{text}");
    assert!(text.contains(r#"whopgate_request_duration_seconds_count{decision="public"} 1"#), "{text}");
}
