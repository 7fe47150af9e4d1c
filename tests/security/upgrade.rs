//! Turning a judged request into a tunnel (SPEC §4: only WebSocket upgrades are tunnelled).
//!
//! A tunnel carries bytes the gate never sees again. If an upgrade to a protocol that frames
//! requests (`h2c`) went through on a public route, the attacker could then ask the app for
//! anything over it, unjudged.

use std::time::Duration;

use crate::app::{App, Behaviour};
use crate::client::{ROUTES, RawConn, raw_request, status_of, statuses};
use crate::support::{Whopgate, config};

/// What an attacker sends through a tunnel once it is open: a request for the gated path.
const THROUGH_THE_TUNNEL: &[u8] = b"GET /admin HTTP/1.1\r\nHost: public.example\r\nAccept: application/json\r\n\r\n";

fn h2c_offer(upgrade_header: &str) -> String {
    format!(
        "GET /public HTTP/1.1\r\nHost: public.example\r\nConnection: Upgrade, HTTP2-Settings\r\n\
         {upgrade_header}\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
    )
}

/// Finding 2: an `h2c` upgrade on a public route, in several spellings. The app would switch
/// (it is [`Behaviour::Obliging`]); the gate must not let it. The app receives a plain GET with
/// no `Upgrade` and no `HTTP2-Settings`, and the next request on the connection is judged as
/// HTTP/1.1: a 401 for `/admin`. (Before the fix the app's `101` came back and `/admin` went
/// through the tunnel.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upgrades_are_never_tunnelled() {
    let app = App::start(Behaviour::Obliging).await;
    let gate = Whopgate::start(&config(&app.url(), ROUTES));
    for upgrade in ["Upgrade: h2c", "upgrade: H2C", "UPGRADE: h2c, h2", "Upgrade: TLS/1.2"] {
        let mut conn = RawConn::open(gate.addr);
        conn.send(h2c_offer(upgrade).as_bytes());
        let first = conn.read_for(Duration::from_millis(800));
        conn.send(THROUGH_THE_TUNNEL);
        let second = conn.read_for(Duration::from_millis(800));
        assert_eq!(statuses(&format!("{first}{second}")), [200, 401], "{upgrade}\n{first}\n{second}");
    }
    assert_eq!(app.tunnelled(), "", "nothing was tunnelled");
    assert_eq!(app.received().len(), 4, "{:#?}", app.received());
    for received in app.received() {
        assert_eq!(received.request_line(), "GET /public HTTP/1.1");
        for name in ["upgrade", "http2-settings", "connection"] {
            assert!(received.header(name).is_empty(), "{name} reached the app:\n{}", received.head);
        }
    }
}

/// `Upgrade: websocket, h2c`: the WebSocket handshake goes on, the `h2c` offer does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_websocket_token_of_a_mixed_offer_reaches_the_app() {
    let app = App::start(Behaviour::Obliging).await;
    let gate = Whopgate::start(&config(&app.url(), ROUTES));
    let request = "GET /public HTTP/1.1\r\nHost: public.example\r\nConnection: Upgrade, HTTP2-Settings\r\n\
                   Upgrade: websocket, h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let mut conn = RawConn::open(gate.addr);
    conn.send(request.as_bytes());
    let response = conn.read_for(Duration::from_millis(800));
    assert_eq!(status_of(&response), 101, "{response}");
    let received = app.only();
    assert_eq!(received.header("upgrade"), ["websocket"], "{}", received.head);
    assert_eq!(received.header("connection"), ["upgrade"], "{}", received.head);
    assert!(received.header("http2-settings").is_empty(), "{}", received.head);
}

/// An app that switches protocols unasked, or to another protocol than WebSocket, is not
/// followed: the client gets a 502, never a `101` and a tunnel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_switches_to_another_protocol_is_not_followed() {
    let app = App::start(Behaviour::AlwaysSwitch("h2c")).await;
    let gate = Whopgate::start(&config(&app.url(), ROUTES));
    let plain = "GET /public HTTP/1.1\r\nHost: public.example\r\nConnection: close\r\n\r\n";
    assert_eq!(status_of(&raw_request(gate.addr, plain.as_bytes())), 502, "101 to a request that asked for none");
    let websocket = "GET /public HTTP/1.1\r\nHost: public.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let mut conn = RawConn::open(gate.addr);
    conn.send(websocket.as_bytes());
    let response = conn.read_for(Duration::from_millis(800));
    assert_eq!(status_of(&response), 502, "101 to h2c when WebSocket was asked for\n{response}");
    conn.send(THROUGH_THE_TUNNEL);
    conn.read_for(Duration::from_millis(300));
    assert_eq!(app.tunnelled(), "", "nothing was tunnelled");
}

/// A WebSocket handshake the app answers with `200` instead of `101`: the connection stays
/// HTTP/1.1, and what the client sends next is judged like any request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_websocket_handshake_leaves_no_tunnel() {
    let app = App::start(Behaviour::NeverSwitch).await;
    let gate = Whopgate::start(&config(&app.url(), ROUTES));
    let websocket = "GET /public HTTP/1.1\r\nHost: public.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let mut conn = RawConn::open(gate.addr);
    conn.send(websocket.as_bytes());
    let first = conn.read_for(Duration::from_millis(800));
    conn.send(THROUGH_THE_TUNNEL);
    let second = conn.read_for(Duration::from_millis(800));
    assert_eq!(statuses(&format!("{first}{second}")), [200, 401], "{first}\n{second}");
    assert_eq!(app.received().len(), 1, "only the handshake reached the app: {:#?}", app.received());
    assert_eq!(app.tunnelled(), "");
}

/// A WebSocket handshake is a GET (RFC 6455 §4.1); with any other method the upgrade headers are
/// dropped and the request goes on as plain HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_on_another_method_is_not_tunnelled() {
    let app = App::start(Behaviour::Obliging).await;
    let gate = Whopgate::start(&config(&app.url(), ROUTES));
    let post = "POST /public HTTP/1.1\r\nHost: public.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                Content-Length: 0\r\n\r\n";
    let mut conn = RawConn::open(gate.addr);
    conn.send(post.as_bytes());
    let first = conn.read_for(Duration::from_millis(800));
    conn.send(THROUGH_THE_TUNNEL);
    let second = conn.read_for(Duration::from_millis(800));
    assert_eq!(statuses(&format!("{first}{second}")), [200, 401], "{first}\n{second}");
    assert!(app.only().header("upgrade").is_empty());
}

/// `CONNECT` asks the gate to be a forward proxy and open a tunnel; it is refused and never
/// reaches the app, in authority form and in origin form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_refused() {
    let app = App::start(Behaviour::Obliging).await;
    let gate = Whopgate::start(&config(&app.url(), ROUTES));
    for request in [
        "CONNECT admin.example:443 HTTP/1.1\r\nHost: admin.example:443\r\n\r\n",
        "CONNECT /public HTTP/1.1\r\nHost: public.example\r\n\r\n",
    ] {
        let mut conn = RawConn::open(gate.addr);
        conn.send(request.as_bytes());
        let first = conn.read_for(Duration::from_millis(800));
        conn.send(THROUGH_THE_TUNNEL);
        let second = conn.read_for(Duration::from_millis(500));
        let statuses = statuses(&format!("{first}{second}"));
        assert_eq!(statuses.first(), Some(&400), "{request}\n{first}\n{second}");
        assert!(!statuses.contains(&200), "{request}\n{first}\n{second}");
    }
    assert!(app.received().is_empty(), "the app received {:#?}", app.received());
    assert_eq!(app.tunnelled(), "");
}
