//! A cleared request reaches the upstream as sent (method, target, headers, body), minus what a
//! proxy must change; forged identity headers never do.

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::support::{Upstream, Whopgate, config, raw_request, status_of};

const PUBLIC: &str = r#"
[[route]]
path = "/public"
public = true

[[route]]
path = "/admin"
require = ["biz_aaaaaaaaaaaaaa"]
access_level = "admin"
"#;

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_route_forwards_method_target_headers_and_body_byte_exact() {
    let up = Upstream::start().await;
    let gate = Whopgate::start(&config(&up.url(), PUBLIC));
    let body: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let response = client()
        .request(reqwest::Method::PATCH, gate.url("/public/echo/%C3%A9?a=1&b=%20x&a=2"))
        .header("X-Custom", "  spaced\tvalue ")
        .header("x-multi", "one")
        .header("Cookie", "a=b; c=d")
        .header("x-whop-user-token", "eyJ.passes.through")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-request-id"));
    let echo: serde_json::Value = response.json().await.unwrap();
    assert_eq!(echo["method"], "PATCH");
    assert_eq!(echo["target"], "/public/echo/%C3%A9?a=1&b=%20x&a=2");
    let seen = up.last();
    assert_eq!(seen.header("x-custom"), ["spaced\tvalue"], "header value trimmed only of outer whitespace by HTTP");
    assert_eq!(seen.header("x-multi"), ["one"]);
    assert_eq!(seen.header("cookie"), ["a=b; c=d"]);
    assert_eq!(seen.header("x-whop-user-token"), ["eyJ.passes.through"]);
    assert_eq!(seen.header("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(seen.header("x-forwarded-proto"), ["http"]);
    assert_eq!(seen.header("x-forwarded-host"), [gate.addr.to_string()]);
    assert_eq!(seen.header("host"), [gate.addr.to_string()]);
    assert_eq!(seen.header("x-request-id").len(), 1);
    let received = base64::engine::general_purpose::STANDARD.decode(echo["body_base64"].as_str().unwrap()).unwrap();
    assert_eq!(received, body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_is_kept_when_sent() {
    let up = Upstream::start().await;
    let gate = Whopgate::start(&config(&up.url(), PUBLIC));
    let response = client().get(gate.url("/public")).header("x-request-id", "trace-abc-123").send().await.unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-abc-123");
    assert_eq!(up.last().header("x-request-id"), ["trace-abc-123"]);
    let line = gate.wait_for_log("trace-abc-123", Duration::from_secs(5)).expect("access log line");
    for field in ["method=GET", "path=/public", "status=200", "rule=/public", "decision=public", "duration_ms="] {
        assert!(line.contains(field), "{field} missing in {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_identity_headers_never_reach_the_upstream() {
    let up = Upstream::start().await;
    let gate = Whopgate::start(&config(&up.url(), PUBLIC));
    // Raw, so every spelling reaches whopgate exactly as written.
    let request = "GET /public/x HTTP/1.1\r\nHost: app\r\nX-Whop-User-Id: user_evil\r\nx_whop_user_id: user_evil2\r\n\
                   X-WHOP-ACCESS-LEVEL: admin\r\nX-Whopgate-Anything: yes\r\nx-whop-resource-id: biz_x\r\n\
                   X_WHOPGATE_SOURCE: dev\r\nx-whop-user-token: tok\r\nConnection: close\r\n\r\n";
    let response = raw_request(gate.addr, request.as_bytes());
    assert_eq!(status_of(&response), 200, "{response}");
    let seen = up.last();
    let names: Vec<String> = seen.headers.iter().map(|(n, _)| n.to_ascii_lowercase()).collect();
    for forged in [
        "x-whop-user-id",
        "x_whop_user_id",
        "x-whop-access-level",
        "x-whopgate-anything",
        "x-whop-resource-id",
        "x_whopgate_source",
    ] {
        assert!(!names.contains(&forged.to_owned()), "{forged} reached the upstream: {names:?}");
    }
    assert_eq!(seen.header("x-whop-user-token"), ["tok"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_dropped_both_ways() {
    let up = Upstream::start().await;
    let gate = Whopgate::start(&config(&up.url(), PUBLIC));
    let request = "GET /public HTTP/1.1\r\nHost: app\r\nConnection: close, x-drop-me\r\nX-Drop-Me: 1\r\n\
                   Keep-Alive: timeout=5\r\nProxy-Authorization: Basic eA==\r\nTE: trailers\r\nX-Keep: 1\r\n\r\n";
    let response = raw_request(gate.addr, request.as_bytes());
    assert_eq!(status_of(&response), 200, "{response}");
    let seen = up.last();
    for dropped in ["x-drop-me", "keep-alive", "proxy-authorization", "te"] {
        assert!(seen.header(dropped).is_empty(), "{dropped} was forwarded");
    }
    assert_eq!(seen.header("x-keep"), ["1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_from_untrusted_client_is_replaced() {
    let up = Upstream::start().await;
    let gate = Whopgate::start(&config(&up.url(), &format!("trusted_proxies = [\"10.0.0.0/8\"]\n{PUBLIC}")));
    client()
        .get(gate.url("/public"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "evil.example")
        .header("forwarded", "for=6.6.6.6")
        .send()
        .await
        .unwrap();
    let seen = up.last();
    assert_eq!(seen.header("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(seen.header("x-forwarded-proto"), ["http"]);
    assert_eq!(seen.header("x-forwarded-host"), [gate.addr.to_string()]);
    assert!(seen.header("forwarded").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_from_trusted_proxy_is_appended() {
    let up = Upstream::start().await;
    let gate = Whopgate::start(&config(&up.url(), &format!("trusted_proxies = [\"127.0.0.1/32\"]\n{PUBLIC}")));
    client()
        .get(gate.url("/public"))
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "app.example.com")
        .send()
        .await
        .unwrap();
    let seen = up.last();
    assert_eq!(seen.header("x-forwarded-for"), ["203.0.113.7, 127.0.0.1"]);
    assert_eq!(seen.header("x-forwarded-proto"), ["https"]);
    assert_eq!(seen.header("x-forwarded-host"), ["app.example.com"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_request_works() {
    let up = Upstream::start().await;
    let gate = Whopgate::start(&config(&up.url(), PUBLIC));
    let stream = tokio::net::TcpStream::connect(gate.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    for i in 0..3 {
        let request = http::Request::post(format!("http://{}/public/h2?i={i}", gate.addr))
            .header("x-h2", "yes")
            .body(Full::new(Bytes::from_static(b"over h2")))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), http::Version::HTTP_2);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(echo["target"], format!("/public/h2?i={i}"));
        assert_eq!(echo["method"], "POST");
        assert_eq!(echo["body_base64"], base64::engine::general_purpose::STANDARD.encode("over h2"));
    }
    let seen = up.last();
    assert_eq!(seen.header("x-h2"), ["yes"]);
    assert_eq!(seen.header("host"), [gate.addr.to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmatched_and_protected_requests_do_not_reach_the_upstream() {
    let up = Upstream::start().await;
    let gate = Whopgate::start(&config(&up.url(), PUBLIC));
    let r = client().get(gate.url("/elsewhere")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = client().get(gate.url("/admin")).header("accept", "application/json").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], r#"Bearer realm="whopgate""#);
    let json: serde_json::Value = r.json().await.unwrap();
    assert_eq!(json["error"], "unauthenticated");
    let r = client().get(gate.url("/admin")).header("accept", "text/html").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(up.seen().is_empty(), "the upstream saw {:?}", up.seen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let up = Upstream::start().await;
    let gate = Whopgate::start(&config(&up.url(), &format!("log_format = \"json\"\n{PUBLIC}")));
    client().get(gate.url("/public/j")).header("x-request-id", "json-req-1").send().await.unwrap();
    let line = gate.wait_for_log("json-req-1", Duration::from_secs(5)).expect("access log line");
    let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["target"], "whopgate::access");
    assert_eq!(entry["method"], "GET");
    assert_eq!(entry["path"], "/public/j");
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["decision"], "public");
    assert_eq!(entry["request_id"], "json-req-1");
    for l in gate.logs() {
        assert!(serde_json::from_str::<serde_json::Value>(&l).is_ok(), "not JSON: {l}");
    }
}
