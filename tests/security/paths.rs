//! Spelling a protected path so the gate reads another one (SPEC §4, "Path"): dot segments,
//! encoded slashes and dots, backslashes, path parameters, over HTTP/1.1 and HTTP/2, in
//! origin and absolute form.

use crate::app::{App, Behaviour};
use crate::client::{ROUTES, h2, h2_get, raw_request, status_of};
use crate::support::{Whopgate, config};

/// (target, the answer: 400 refused, 401 judged as `/admin`).
const TRICKS: &[(&str, u16)] = &[
    ("/public/../admin", 401),
    ("/public/%2e%2e/admin", 401),
    ("/public/.%2E/admin", 401),
    ("//admin", 401),
    ("/%61dmin", 401),
    ("/admin;x=1", 401),
    ("/admin/./", 401),
    ("/public/..%2Fadmin", 400),
    ("/public/..%2fadmin", 400),
    ("/public/..%5Cadmin", 400),
    ("/public/..\\admin", 400),
    ("/public/..;/admin", 400),
    ("/public/.;/../admin", 400),
    ("/public/%00/../../admin", 400),
    ("/../admin", 400),
    ("/admin%2F", 400),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_tricks_over_http1_never_reach_the_app_as_admin() {
    let app = App::start(Behaviour::Obliging).await;
    let gate = Whopgate::start(&config(&app.url(), ROUTES));
    for (target, want) in TRICKS {
        for target in [target.to_string(), format!("http://public.example{target}")] {
            let request = format!(
                "GET {target} HTTP/1.1\r\nHost: public.example\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
            );
            let response = raw_request(gate.addr, request.as_bytes());
            assert_eq!(status_of(&response), *want, "{target}: {response}");
        }
    }
    assert!(app.received().is_empty(), "the app received {:#?}", app.received());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_tricks_over_http2_never_reach_the_app_as_admin() {
    let app = App::start(Behaviour::Obliging).await;
    let gate = Whopgate::start(&config(&app.url(), ROUTES));
    for (target, want) in TRICKS {
        // HTTP/2 cannot carry a raw backslash or NUL in :path through this client; the HTTP/1.1
        // test covers those.
        let Ok(uri) = format!("http://public.example{target}").parse::<http::Uri>() else { continue };
        let status = h2(gate.addr, h2_get(&uri.to_string(), &[("accept", "application/json")])).await;
        assert_eq!(status, Some(*want), "{target}");
    }
    assert!(app.received().is_empty(), "the app received {:#?}", app.received());
}

/// The app receives the one spelling the gate matched, never the one the client sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_receives_the_normalised_path() {
    let app = App::start(Behaviour::Obliging).await;
    let gate = Whopgate::start(&config(&app.url(), ROUTES));
    let request = "GET /public/a/./b/../%63//d?q=%2e%2e HTTP/1.1\r\nHost: public.example\r\nConnection: close\r\n\r\n";
    assert_eq!(status_of(&raw_request(gate.addr, request.as_bytes())), 200);
    assert_eq!(app.only().request_line(), "GET /public/a/c/d?q=%2e%2e HTTP/1.1");
}
