//! Path tricks never reach the upstream as a request for a protected path (SPEC §4, "Path").

use crate::support::{Upstream, Whopgate, config, raw_request, status_of};

const ROUTES: &str = r#"
[[route]]
path = "/admin"
require = ["biz_aaaaaaaaaaaaaa"]
access_level = "admin"

[[route]]
path = "/public"
public = true
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_tricks_never_reach_the_upstream_as_admin() {
    let up = Upstream::start().await;
    let gate = Whopgate::start(&config(&up.url(), ROUTES));
    // (request target, the answers allowed: 400 rejected, 401 the protected route's answer)
    let table: &[(&str, &[u16])] = &[
        ("/admin/../admin", &[401]),
        ("//admin", &[401]),
        ("/%61dmin", &[401]),
        ("/public/..%2Fadmin", &[400]),
        ("/public/%2e%2e/admin", &[401]),
        ("/public/%2E%2E/admin", &[401]),
        ("/public/../admin", &[401]),
        ("/admin%2F..", &[400]),
        ("/public/..;/admin", &[400]),
        ("/public/.%2e/admin", &[401]),
        ("/public/%2e./admin", &[401]),
        ("/public/..%5cadmin", &[400]),
        ("/public/..\\admin", &[400]),
        ("/public//../admin", &[401]),
        ("/public/./../admin/", &[401]),
        ("/./admin", &[401]),
        ("/admin;x=1/../admin", &[401]),
        ("/admin;jsessionid=1", &[401]),
        ("/%2fadmin", &[400]),
        ("/public/%00/../../admin", &[400]),
        ("/../admin", &[400]),
        ("/public/../../admin", &[400]),
        ("/ADMIN/../admin", &[401]),
        ("http://evil.example/admin", &[401]),
        ("/public/%252e%252e/admin", &[200]), // stays an odd but harmless name under /public
    ];
    for (target, allowed) in table {
        let request =
            format!("GET {target} HTTP/1.1\r\nHost: app\r\nAccept: application/json\r\nConnection: close\r\n\r\n");
        let response = raw_request(gate.addr, request.as_bytes());
        let status = status_of(&response);
        assert!(allowed.contains(&status), "{target}: got {status}, expected one of {allowed:?}\n{response}");
    }
    for seen in up.seen() {
        let path = seen.target.split('?').next().unwrap_or("");
        assert!(path.starts_with("/public/"), "the upstream received {:?}", seen.target);
        assert!(!path.contains("/admin") || path.contains("%252e"), "the upstream received {:?}", seen.target);
    }
    assert_eq!(up.seen().len(), 1, "only the harmless /public request is forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_receives_exactly_the_matched_path() {
    let up = Upstream::start().await;
    let gate = Whopgate::start(&config(&up.url(), ROUTES));
    let cases = [
        ("/public//a/./b/../c?q=%2F&x", "/public/a/c?q=%2F&x"),
        ("/%70ublic/%7euser", "/public/~user"),
        ("/public/caf%c3%a9", "/public/caf%C3%A9"),
        ("/public/a%3ab", "/public/a%3Ab"),
    ];
    for (sent, forwarded) in cases {
        let request = format!("GET {sent} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n");
        let response = raw_request(gate.addr, request.as_bytes());
        assert_eq!(status_of(&response), 200, "{sent}: {response}");
        assert_eq!(up.last().target, forwarded, "{sent}");
    }
}
