//! Telling the app who you are yourself (SPEC §4, "Upstream headers"): identity headers in any
//! letter case or with `_`, over HTTP/1.1 and HTTP/2, on public and gated routes, and a
//! `Connection` header that names the gate's own headers so that a proxy would drop them.

use crate::app::{App, Behaviour};
use crate::client::{h2, h2_get, raw_request, status_of};
use crate::support::{Whopgate, config};

/// `/admin` needs the team; the dev identity (loopback only) is a team member, so gated
/// requests are allowed without Whop and the identity the gate sets can be told from a forged one.
const ROUTES: &str = r#"
[[route]]
path = "/admin"
require = ["biz_aaaaaaaaaaaaaa"]
access_level = "admin"

[[route]]
path = "/"
public = true

[identity]
sources = ["dev"]

[identity.dev]
user_id = "user_dev"
access_level = "admin"
"#;

const FORGED: &[(&str, &str)] = &[
    ("X-Whop-User-Id", "user_evil"),
    ("x_whop_user_id", "user_evil"),
    ("X-WHOP-ACCESS-LEVEL", "admin"),
    ("x-whop_resource-id", "biz_evil"),
    ("X-Whopgate-Source", "user_token"),
    ("x_whopgate_anything", "1"),
];

fn forged_head() -> String {
    FORGED.iter().map(|(n, v)| format!("{n}: {v}\r\n")).collect()
}

/// The app receives the gate's identity, once, and no forged spelling of it.
fn assert_only_the_gates_identity(received: &crate::app::Received) {
    assert_eq!(received.header("x-whop-user-id"), ["user_dev"], "{}", received.head);
    assert_eq!(received.header("x-whopgate-source"), ["dev"], "{}", received.head);
    for name in received.names() {
        assert!(!name.contains('_'), "{name} reached the app:\n{}", received.head);
    }
    assert!(!received.head.contains("user_evil") && !received.head.contains("biz_evil"), "{}", received.head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_identity_headers_never_reach_the_app_over_http1() {
    let app = App::start(Behaviour::Obliging).await;
    let gate = Whopgate::start(&config(&app.url(), ROUTES));
    for path in ["/admin", "/public"] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: app.example\r\n{}Connection: close\r\n\r\n", forged_head());
        let response = raw_request(gate.addr, request.as_bytes());
        assert_eq!(status_of(&response), 200, "{path}: {response}");
    }
    let received = app.received();
    assert_eq!(received.len(), 2);
    for r in &received {
        assert_only_the_gates_identity(r);
    }
    assert_eq!(received[0].header("x-whop-access-level"), ["admin"]);
    assert_eq!(received[0].header("x-whop-resource-id"), ["biz_aaaaaaaaaaaaaa"]);
    assert!(received[1].header("x-whop-access-level").is_empty(), "a public route names no level");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_identity_headers_never_reach_the_app_over_http2() {
    let app = App::start(Behaviour::Obliging).await;
    let gate = Whopgate::start(&config(&app.url(), ROUTES));
    let lower: Vec<(String, &str)> = FORGED.iter().map(|(n, v)| (n.to_ascii_lowercase(), *v)).collect();
    let headers: Vec<(&str, &str)> = lower.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    for path in ["/admin", "/public"] {
        let status = h2(gate.addr, h2_get(&format!("http://app.example{path}"), &headers)).await;
        assert_eq!(status, Some(200), "{path}");
    }
    for r in &app.received() {
        assert_only_the_gates_identity(r);
    }
    assert_eq!(app.received().len(), 2);
}

/// `Connection: x-whop-user-id, x-whopgate-source, host` asks a proxy to drop those headers as
/// hop-by-hop, after the gate set them. They are the gate's, and stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cannot_make_the_gates_headers_disappear() {
    let app = App::start(Behaviour::Obliging).await;
    let gate = Whopgate::start(&config(&app.url(), ROUTES));
    let request = "GET /admin HTTP/1.1\r\nHost: app.example\r\n\
                   Connection: close, x-whop-user-id, X-Whopgate-Source, host, x-whop-access-level\r\n\r\n";
    let response = raw_request(gate.addr, request.as_bytes());
    assert_eq!(status_of(&response), 200, "{response}");
    let received = app.only();
    assert_only_the_gates_identity(&received);
    assert_eq!(received.header("x-whop-access-level"), ["admin"]);
    assert_eq!(received.header("host"), ["app.example"]);
}
