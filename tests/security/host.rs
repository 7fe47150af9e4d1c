//! Judged under one host, served under another (SPEC §4, "Host, method, upgrade").
//!
//! `admin.example` is gated, every other host public (see [`ROUTES`]). An app that serves
//! virtual hosts serves whatever `Host` it receives, so each attack succeeds the moment the app
//! receives `admin.example` for a request the gate judged as public.

use crate::app::{App, Behaviour};
use crate::client::{ROUTES, h2, h2_get, raw_request, status_of};
use crate::support::{Whopgate, config};

async fn setup() -> (App, Whopgate) {
    let app = App::start(Behaviour::Obliging).await;
    let gate = Whopgate::start(&config(&app.url(), ROUTES));
    (app, gate)
}

fn get(target: &str, headers: &str) -> String {
    format!("GET {target} HTTP/1.1\r\n{headers}Accept: application/json\r\nConnection: close\r\n\r\n")
}

/// Finding 1: `GET http://public.example/x` with `Host: admin.example`. RFC 9112 §3.2.2: the
/// target's authority wins, so the request is judged as public.example and the app must receive
/// public.example, in `Host` and in `X-Forwarded-Host`, and nothing else. (Before the fix the app
/// received `Host: admin.example`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_target_and_host_cannot_disagree() {
    let (app, gate) = setup().await;
    for target in ["http://public.example/x", "https://public.example/x", "http://PUBLIC.example:80/x"] {
        let response = raw_request(gate.addr, get(target, "Host: admin.example\r\n").as_bytes());
        assert_eq!(status_of(&response), 200, "{target}: {response}");
    }
    for received in app.received() {
        assert_eq!(received.request_line(), "GET /x HTTP/1.1", "origin form upstream");
        assert_eq!(received.header("host"), ["public.example"], "{}", received.head);
        assert_eq!(received.header("x-forwarded-host"), ["public.example"], "{}", received.head);
    }
    assert_eq!(app.received().len(), 3);

    // The other way round: judged as the gated host, whatever Host says.
    let response = raw_request(gate.addr, get("http://admin.example/x", "Host: public.example\r\n").as_bytes());
    assert_eq!(status_of(&response), 401, "{response}");
    assert_eq!(app.received().len(), 3, "nothing more reached the app");
}

/// Finding 1 over HTTP/2: `:authority public.example` with a `host: admin.example` header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_authority_and_host_cannot_disagree() {
    let (app, gate) = setup().await;
    let status = h2(gate.addr, h2_get("http://public.example/x", &[("host", "admin.example")])).await;
    assert_eq!(status, Some(200));
    let received = app.only();
    assert_eq!(received.header("host"), ["public.example"], "{}", received.head);
    assert_eq!(received.header("x-forwarded-host"), ["public.example"], "{}", received.head);

    let status = h2(gate.addr, h2_get("http://admin.example/x", &[("host", "public.example")])).await;
    assert_eq!(status, Some(401));
    let status = h2(gate.addr, h2_get("http://admin.example./x", &[])).await;
    assert_eq!(status, Some(401), "the trailing dot over HTTP/2");
    assert_eq!(app.received().len(), 1, "nothing more reached the app");
}

/// Finding 3: spellings of admin.example that DNS and the app treat as the same name. Each is
/// judged as admin.example; a public host spelled the same ways reaches the app in its one
/// canonical spelling. (Before the fix `admin.example.` was forwarded under the public rule.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spelling_of_a_gated_host_is_judged_as_that_host() {
    let (app, gate) = setup().await;
    for host in [
        "admin.example.",
        "ADMIN.EXAMPLE",
        "Admin.Example.",
        "admin.example:80",
        "admin.example.:80",
        "admin.example:0080",
        "admin.example:",
    ] {
        let response = raw_request(gate.addr, get("/x", &format!("Host: {host}\r\n")).as_bytes());
        assert_eq!(status_of(&response), 401, "Host: {host}\n{response}");
    }
    assert!(app.received().is_empty(), "the app received {:#?}", app.received());

    for host in ["public.example.", "Public.Example", "public.example:80"] {
        let response = raw_request(gate.addr, get("/x", &format!("Host: {host}\r\n")).as_bytes());
        assert_eq!(status_of(&response), 200, "Host: {host}\n{response}");
    }
    for received in app.received() {
        assert_eq!(received.header("host"), ["public.example"], "{}", received.head);
        assert_eq!(received.header("x-forwarded-host"), ["public.example"], "{}", received.head);
    }
    // A port that is not the default is part of the host the app receives.
    let response = raw_request(gate.addr, get("/x", "Host: Public.Example:8080\r\n").as_bytes());
    assert_eq!(status_of(&response), 200, "{response}");
    assert_eq!(app.received().last().unwrap().header("host"), ["public.example:8080"]);
}

/// Finding 4: requests whose host is ambiguous, missing or no host at all. Each is a 400 and
/// never reaches the app. (Before the fix two `Host` headers were both forwarded, and a request
/// without `Host` was forwarded under the public rule.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_or_missing_hosts_are_refused() {
    let (app, gate) = setup().await;
    let attacks: &[(&str, &[u8])] = &[
        ("two Host headers", b"GET /x HTTP/1.1\r\nHost: public.example\r\nHost: admin.example\r\nConnection: close\r\n\r\n"),
        ("two Host headers, absolute form", b"GET http://public.example/x HTTP/1.1\r\nHost: public.example\r\nHost: admin.example\r\nConnection: close\r\n\r\n"),
        ("a list in Host", b"GET /x HTTP/1.1\r\nHost: public.example, admin.example\r\nConnection: close\r\n\r\n"),
        ("no Host", b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\n"),
        ("no Host, HTTP/1.0", b"GET /x HTTP/1.0\r\n\r\n"),
        ("an empty Host", b"GET /x HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n"),
        ("userinfo in the target", b"GET http://public.example@admin.example/x HTTP/1.1\r\nHost: admin.example\r\nConnection: close\r\n\r\n"),
        ("userinfo in Host", b"GET /x HTTP/1.1\r\nHost: public.example@admin.example\r\nConnection: close\r\n\r\n"),
        ("a path in Host", b"GET /x HTTP/1.1\r\nHost: admin.example/x\r\nConnection: close\r\n\r\n"),
        ("a non-ASCII Host", b"GET /x HTTP/1.1\r\nHost: adm\xc3\xafn.example\r\nConnection: close\r\n\r\n"),
        ("an empty label", b"GET /x HTTP/1.1\r\nHost: admin..example\r\nConnection: close\r\n\r\n"),
        ("another scheme", b"GET ftp://admin.example/x HTTP/1.1\r\nHost: admin.example\r\nConnection: close\r\n\r\n"),
    ];
    for (what, request) in attacks {
        let response = raw_request(gate.addr, request);
        assert_eq!(status_of(&response), 400, "{what}: {response}");
    }
    assert!(app.received().is_empty(), "the app received {:#?}", app.received());

    let two_hosts = h2_get("http://public.example/x", &[("host", "public.example"), ("host", "admin.example")]);
    assert_eq!(h2(gate.addr, two_hosts).await, Some(400), "two host headers over HTTP/2");
    assert!(app.received().is_empty(), "the app received {:#?}", app.received());
}

/// The answer to a refused host says why, as JSON for an API client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_host_is_a_bad_request_that_says_why() {
    let (_app, gate) = setup().await;
    let response = raw_request(gate.addr, b"GET /x HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nAccept: application/json\r\nConnection: close\r\n\r\n");
    assert_eq!(status_of(&response), 400);
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{response}"));
    assert_eq!(json["error"], "bad_request");
    assert_eq!(json["message"], "the request has more than one Host header");
}
