//! Having the app run another method or path than the one judged (SPEC §4: client headers that
//! make apps route or dispatch differently are removed or judged, never passed through).

use crate::app::{App, Behaviour};
use crate::client::{h2, h2_get, raw_request, status_of};
use crate::support::{Whopgate, config};

/// Reading `/items` is public, changing it needs the company's team; `/comments` takes public
/// posts but deleting one needs the team too.
const METHOD_ROUTES: &str = r#"
[[route]]
path = "/items"
methods = ["GET", "HEAD"]
public = true

[[route]]
path = "/comments"
methods = ["POST"]
public = true

[[route]]
path = "/open"
public = true

[[route]]
path = "/"
require = ["biz_aaaaaaaaaaaaaa"]
access_level = "admin"
"#;

async fn setup() -> (App, Whopgate) {
    let app = App::start(Behaviour::Obliging).await;
    let gate = Whopgate::start(&config(&app.url(), METHOD_ROUTES));
    (app, gate)
}

/// Finding 5: a GET (judged public) carrying a header that tells the app to run it as DELETE.
/// The request goes on as the GET it was judged as, without the override. (Before the fix the
/// override reached the app.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_override_headers_never_reach_the_app() {
    let (app, gate) = setup().await;
    let request = "GET /items/1 HTTP/1.1\r\nHost: app.example\r\nX-HTTP-Method-Override: DELETE\r\n\
                   X-Method-Override: DELETE\r\nX-HTTP-Method: DELETE\r\nx_http_method_override: DELETE\r\n\
                   X_Method_Override: PUT\r\nConnection: close\r\n\r\n";
    let response = raw_request(gate.addr, request.as_bytes());
    assert_eq!(status_of(&response), 200, "{response}");
    let received = app.only();
    assert_eq!(received.request_line(), "GET /items/1 HTTP/1.1");
    let names = received.names();
    for name in
        ["x-http-method-override", "x-method-override", "x-http-method", "x_http_method_override", "x_method_override"]
    {
        assert!(!names.contains(&name.to_owned()), "{name} reached the app:\n{}", received.head);
    }
}

/// Finding 5 and 6 over HTTP/2: the same headers, the same query parameter, the same result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrides_never_reach_the_app_over_http2() {
    let (app, gate) = setup().await;
    let headers = [
        ("x-http-method-override", "DELETE"),
        ("x_method_override", "DELETE"),
        ("x-original-url", "/admin"),
        ("x-rewrite-url", "/admin"),
    ];
    let status = h2(gate.addr, h2_get("http://app.example/items/1?_method=DELETE&a=1", &headers)).await;
    assert_eq!(status, Some(200));
    let received = app.only();
    assert_eq!(received.request_line(), "GET /items/1?a=1 HTTP/1.1");
    let lower = received.head.to_ascii_lowercase();
    assert!(!lower.contains("override") && !lower.contains("/admin"), "{}", received.head);
}

/// Finding 5, the query parameter: `_method` (Laravel, Symfony, Express) in any spelling a
/// framework decodes to it is removed; the rest of the query is kept as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_query_parameter_never_reaches_the_app() {
    let (app, gate) = setup().await;
    for query in ["_method=DELETE&a=1", "a=1&%5Fmethod=DELETE", "a=1&_METHOD=PUT", "a=1&.method=PATCH"] {
        let request = format!("GET /items/1?{query} HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n");
        let response = raw_request(gate.addr, request.as_bytes());
        assert_eq!(status_of(&response), 200, "{query}: {response}");
    }
    for received in app.received() {
        assert_eq!(received.request_line(), "GET /items/1?a=1 HTTP/1.1", "{}", received.head);
    }
    assert_eq!(app.received().len(), 4);
}

/// Finding 5, the form body: `_method=DELETE` in a form POST that is public as a POST, while a
/// DELETE to the same path needs the team. A streamed body cannot be edited, so such a POST is
/// refused; a form POST where every method falls under one rule, and a JSON POST, go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_post_that_could_be_run_as_another_method_is_refused() {
    let (app, gate) = setup().await;
    let form = |path: &str, content_type: &str| {
        let body = "_method=DELETE&id=1";
        format!(
            "POST {path} HTTP/1.1\r\nHost: app.example\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
             Accept: application/json\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    for content_type in [
        "application/x-www-form-urlencoded",
        "Application/X-WWW-Form-Urlencoded; charset=UTF-8",
        "multipart/form-data; boundary=x",
    ] {
        let response = raw_request(gate.addr, form("/comments/1", content_type).as_bytes());
        assert_eq!(status_of(&response), 400, "{content_type}: {response}");
        assert!(response.contains("_method"), "the answer says why: {response}");
    }
    assert!(app.received().is_empty(), "the app received {:#?}", app.received());

    let response = raw_request(gate.addr, form("/comments/1", "application/json").as_bytes());
    assert_eq!(status_of(&response), 200, "{response}");
    let response = raw_request(gate.addr, form("/open/1", "application/x-www-form-urlencoded").as_bytes());
    assert_eq!(status_of(&response), 200, "every method of /open is public: {response}");
    assert_eq!(app.received().len(), 2);
}

/// Finding 6: headers some frameworks route by (IIS URL Rewrite, Symfony, Zend, some Java
/// filters). A request judged as `/open` must not be served as `/admin`. (Before the fix they
/// reached the app.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_override_headers_never_reach_the_app() {
    let (app, gate) = setup().await;
    let request = "GET /open HTTP/1.1\r\nHost: app.example\r\nX-Original-URL: /admin\r\nX-Rewrite-URL: /admin\r\n\
                   X-Original-URI: /admin\r\nx_original_url: /admin\r\nConnection: close\r\n\r\n";
    let response = raw_request(gate.addr, request.as_bytes());
    assert_eq!(status_of(&response), 200, "{response}");
    let received = app.only();
    assert!(!received.head.to_ascii_lowercase().contains("/admin"), "{}", received.head);
}

/// Forwarding headers from a client that is not a trusted proxy: the app would take them for the
/// client's address, scheme, port, prefix or original URL. Only the gate's own
/// `X-Forwarded-For/Proto/Host` reach it, once each, in any spelling the client tried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_from_an_untrusted_client_never_reach_the_app() {
    let (app, gate) = setup().await;
    let request = "GET /open HTTP/1.1\r\nHost: app.example\r\nX-Forwarded-For: 10.0.0.1\r\nX_Forwarded_For: 10.0.0.2\r\n\
                   X-Forwarded-Host: admin.example\r\nX_Forwarded_Host: admin.example\r\nX-Forwarded-Proto: https\r\n\
                   X-Forwarded-Port: 443\r\nX-Forwarded-Prefix: /admin\r\nX-Forwarded-Ssl: on\r\n\
                   X-Forwarded-Scheme: https\r\nX-Forwarded-Uri: /admin\r\nX-Forwarded-Method: DELETE\r\n\
                   Forwarded: for=10.0.0.1;host=admin.example\r\nX-Real-IP: 10.0.0.1\r\nX_Real_IP: 10.0.0.1\r\n\
                   True-Client-IP: 10.0.0.1\r\nX-Client-IP: 10.0.0.1\r\nFront-End-Https: on\r\nConnection: close\r\n\r\n";
    let response = raw_request(gate.addr, request.as_bytes());
    assert_eq!(status_of(&response), 200, "{response}");
    let received = app.only();
    let mut forwarding: Vec<String> = received
        .names()
        .into_iter()
        .filter(|n| {
            n.starts_with("x-forwarded")
                || n.starts_with("x_")
                || n.contains("ip")
                || n.contains("forwarded")
                || n.contains("https")
        })
        .collect();
    forwarding.sort();
    assert_eq!(forwarding, ["x-forwarded-for", "x-forwarded-host", "x-forwarded-proto"], "{}", received.head);
    assert_eq!(received.header("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(received.header("x-forwarded-host"), ["app.example"]);
    assert_eq!(received.header("x-forwarded-proto"), ["http"]);
}
