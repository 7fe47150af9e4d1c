//! Hiding a second request inside the first, or framing one body two ways (request smuggling,
//! RFC 9112 §6.3 and §11.2), and malformed heads that parsers read differently.
//!
//! The smuggled request always asks for `/admin`: if the app ever receives a request line for
//! it, the gate was walked around. Whatever the framing trick, the gate either refuses the
//! request or re-frames it, so the app receives exactly what the gate judged.

use std::time::Duration;

use crate::app::{App, Behaviour};
use crate::client::{ROUTES, RawConn, raw_request, status_of, statuses};
use crate::support::{Whopgate, config};

const SMUGGLED: &str = "GET /admin HTTP/1.1\r\nHost: public.example\r\nAccept: application/json\r\n\r\n";

/// Sends `request` on one connection and reads everything for a while; the statuses seen.
fn attack(gate: &Whopgate, request: &str) -> (Vec<u16>, String) {
    let mut conn = RawConn::open(gate.addr);
    conn.send(request.as_bytes());
    let response = conn.read_for(Duration::from_millis(700));
    (statuses(&response), response)
}

fn assert_admin_never_reached(app: &App) {
    for received in app.received() {
        // A body that merely contains the text is harmless: the app gets one framing for it.
        assert!(!received.request_line().contains("/admin"), "smuggled through:\n{}", received.head);
    }
    assert!(!app.tunnelled().contains("/admin"));
}

/// Content-Length and Transfer-Encoding together, in the classic orders and obfuscations. The
/// gate reads the body one way (chunked wins, RFC 9112 §6.3) and sends the app one framing of
/// its own, so the smuggled request is either refused or judged as a request of its own (401).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_and_transfer_encoding_cannot_frame_a_body_two_ways() {
    let app = App::start(Behaviour::Obliging).await;
    let gate = Whopgate::start(&config(&app.url(), ROUTES));
    let smuggled_len = SMUGGLED.len();
    let attacks = [
        // CL.TE: a front end reading Content-Length would send the smuggled request as body.
        format!(
            "POST /public HTTP/1.1\r\nHost: public.example\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}",
            5 + smuggled_len
        ),
        // TE.CL: a back end reading Content-Length would see the smuggled request next.
        format!(
            "POST /public HTTP/1.1\r\nHost: public.example\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{smuggled_len:x}\r\n{SMUGGLED}\r\n0\r\n\r\n"
        ),
        // TE.TE: obfuscated Transfer-Encoding that one parser honours and another ignores.
        format!(
            "POST /public HTTP/1.1\r\nHost: public.example\r\nContent-Length: 4\r\nTransfer-Encoding: xchunked\r\n\r\n5c\r\n{SMUGGLED}"
        ),
        format!(
            "POST /public HTTP/1.1\r\nHost: public.example\r\nContent-Length: 4\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{SMUGGLED}"
        ),
        format!(
            "POST /public HTTP/1.1\r\nHost: public.example\r\nContent-Length: 4\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
        ),
        format!(
            "POST /public HTTP/1.1\r\nHost: public.example\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n{SMUGGLED}"
        ),
        format!(
            "POST /public HTTP/1.1\r\nHost: public.example\r\nTransfer-Encoding:\tchunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n{SMUGGLED}"
        ),
        format!(
            "POST /public HTTP/1.1\r\nHost: public.example\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Trailer: {SMUGGLED}"
        ),
    ];
    for request in &attacks {
        let (statuses, response) = attack(&gate, request);
        assert!(!statuses.is_empty(), "no answer at all to:\n{request}");
        assert!(statuses.iter().all(|s| [200, 400, 401, 501].contains(s)), "{request}\n-> {response}");
        assert!(
            statuses.iter().filter(|s| **s == 200).count() <= 1,
            "two 200s: the smuggled request was served\n{response}"
        );
    }
    assert_admin_never_reached(&app);
    for received in app.received() {
        // The app gets one framing: never both headers.
        let framing = received.header("content-length").len() + received.header("transfer-encoding").len();
        assert!(framing <= 1, "{}", received.head);
    }
}

/// Bad Content-Length values: two that differ, a list, a sign, hex, or spaces inside. Each is a
/// 400 and never reaches the app (RFC 9112 §6.3 ¶5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_content_lengths_are_refused() {
    let app = App::start(Behaviour::Obliging).await;
    let gate = Whopgate::start(&config(&app.url(), ROUTES));
    for length in [
        "Content-Length: 4\r\nContent-Length: 40",
        "Content-Length: 4, 40",
        "Content-Length: +4",
        "Content-Length: 0x4",
        "Content-Length: 4 0",
        "Content-Length: -1",
        "Content-Length: 99999999999999999999999",
    ] {
        let request = format!(
            "POST /public HTTP/1.1\r\nHost: public.example\r\n{length}\r\nConnection: close\r\n\r\nabcd{SMUGGLED}"
        );
        let response = raw_request(gate.addr, request.as_bytes());
        assert_eq!(status_of(&response), 400, "{length}: {response}");
    }
    assert!(app.received().is_empty(), "the app received {:#?}", app.received());
}

/// Finding 7: a body whose chunk framing is broken is the client's fault: 400, not 502 (which
/// would blame the app and count against it). (Before the fix: 502.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunk_is_the_clients_fault() {
    let app = App::start(Behaviour::Obliging).await;
    let gate = Whopgate::start(&config(&app.url(), ROUTES));
    for body in [
        "zz\r\nhello\r\n0\r\n\r\n",
        "5\r\nhelloXX0\r\n\r\n",
        "fffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        "-5\r\nhello\r\n0\r\n\r\n",
    ] {
        let request = format!(
            "POST /public HTTP/1.1\r\nHost: public.example\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{body}"
        );
        let response = raw_request(gate.addr, request.as_bytes());
        assert_eq!(status_of(&response), 400, "{body:?}: {response}");
    }
    for received in app.received() {
        assert_ne!(received.body, b"hello", "a broken body was delivered as if whole");
    }
    let metrics = reqwest::get(gate.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("whopgate_upstream_requests_total{status=\"error\"} 0\n"),
        "counted as the app's failure:\n{metrics}"
    );
}

/// Heads that parsers disagree on: obs-fold (a continuation line, which could append
/// `admin.example` to `Host` for one parser and not another), bare CR, NUL, a space before the
/// colon, an invalid name, a request line with extra spaces. Each is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_parsers_read_differently_are_refused() {
    let app = App::start(Behaviour::Obliging).await;
    let gate = Whopgate::start(&config(&app.url(), ROUTES));
    let attacks: &[(&str, &[u8])] = &[
        ("obs-fold in Host", b"GET /x HTTP/1.1\r\nHost: public.example\r\n admin.example\r\nConnection: close\r\n\r\n"),
        ("obs-fold", b"GET /x HTTP/1.1\r\nHost: public.example\r\nX-A: a\r\n\tb\r\nConnection: close\r\n\r\n"),
        ("bare CR in a value", b"GET /x HTTP/1.1\r\nHost: public.example\r\nX-A: a\rX-Whop-User-Id: user_evil\r\nConnection: close\r\n\r\n"),
        ("NUL in a value", b"GET /x HTTP/1.1\r\nHost: public.example\r\nX-A: a\0b\r\nConnection: close\r\n\r\n"),
        ("space before the colon", b"GET /x HTTP/1.1\r\nHost : admin.example\r\nHost: public.example\r\nConnection: close\r\n\r\n"),
        ("invalid header name", b"GET /x HTTP/1.1\r\nHost: public.example\r\nX(A): 1\r\nConnection: close\r\n\r\n"),
        ("CR in the target", b"GET /x\rHost: admin.example HTTP/1.1\r\nHost: public.example\r\nConnection: close\r\n\r\n"),
        ("NUL in the target", b"GET /public\0/../admin HTTP/1.1\r\nHost: public.example\r\nConnection: close\r\n\r\n"),
        ("two spaces in the request line", b"GET  /admin HTTP/1.1\r\nHost: public.example\r\nConnection: close\r\n\r\n"),
    ];
    for (what, request) in attacks {
        let response = raw_request(gate.addr, request);
        assert_eq!(status_of(&response), 400, "{what}: {response}");
    }
    assert!(app.received().is_empty(), "the app received {:#?}", app.received());
}

/// Pipelined requests: each is judged on its own, so a public request cannot carry a gated one
/// along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_each_judged() {
    let app = App::start(Behaviour::Obliging).await;
    let gate = Whopgate::start(&config(&app.url(), ROUTES));
    let request = format!(
        "GET /public HTTP/1.1\r\nHost: public.example\r\n\r\n{SMUGGLED}GET /public/2 HTTP/1.1\r\nHost: public.example\r\n\r\n"
    );
    let (statuses, response) = attack(&gate, &request);
    assert_eq!(statuses, [200, 401, 200], "{response}");
    assert_admin_never_reached(&app);
    assert_eq!(app.received().len(), 2);
}
