//! The gate's decisions: who gets in, with which identity headers, and what everyone else gets.

use std::time::Duration;

use whopgate_mock::{MockState, MockWhop};

use crate::support::{Upstream, Whopgate, gated_config};

const ROUTES: &str = r#"
[[route]]
path = "/public"
public = true

[[route]]
path = "/admin"
require = ["biz_mockcompany01"]
access_level = "admin"

[[route]]
path = "/api"
require = ["prod_mockproduct2", "prod_mockproduct1"]
mode = "api"

[[route]]
path = "/"
require = ["prod_mockproduct1"]
checkout_url = "https://whop.com/checkout/plan_demo"
"#;

const BROWSER: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

struct Setup {
    up: Upstream,
    mock: MockWhop,
    gate: Whopgate,
    client: reqwest::Client,
}

async fn setup() -> Setup {
    let up = Upstream::start().await;
    let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default()).unwrap();
    let gate = Whopgate::start(&gated_config(&up.url(), &mock, "", ROUTES));
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    Setup { up, mock, gate, client }
}

impl Setup {
    async fn get(&self, path: &str, user: Option<&str>, accept: &str) -> reqwest::Response {
        let mut request = self.client.get(self.gate.url(path)).header("accept", accept);
        if let Some(user) = user {
            request = request.header("x-whop-user-token", self.mock.mint_token(user).unwrap());
        }
        request.send().await.unwrap()
    }

    /// A GET of `path` as `user`, with `headers` added (repeated names are appended).
    async fn get_with(&self, path: &str, user: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request =
            self.client.get(self.gate.url(path)).header("x-whop-user-token", self.mock.mint_token(user).unwrap());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_gets_in_with_trustworthy_identity_headers() {
    let s = setup().await;
    let r = s.get("/dashboard", Some("user_alice"), "application/json").await;
    assert_eq!(r.status(), 200);
    let seen = s.up.last();
    seen.assert_identity("user_alice", "user_token", "customer");
    assert_eq!(seen.header("x-whop-resource-id"), ["prod_mockproduct1"]);
    // The Whop-signed token itself passes through unchanged.
    assert_eq!(seen.header("x-whop-user-token").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_headers_are_replaced_by_the_real_identity() {
    let s = setup().await;
    let forged = [("x-whop-user-id", "user_carol"), ("x-whop-access-level", "admin"), ("x-whopgate-source", "dev")];
    let r = s.get_with("/dashboard", "user_alice", &forged).await;
    assert_eq!(r.status(), 200);
    let seen = s.up.last();
    seen.assert_identity("user_alice", "user_token", "customer");

    // Naming the gate's headers in `Connection` (hop-by-hop, so a proxy drops what it names)
    // must not strip them after the gate has set them.
    let naming = [
        ("connection", "keep-alive, x-whop-user-id, X-Whop-Access-Level, x-whop-resource-id, x-whopgate-source"),
        ("connection", "x-request-id, host, x-forwarded-for"),
    ];
    let r = s.get_with("/dashboard", "user_alice", &naming).await;
    assert_eq!(r.status(), 200);
    let seen = s.up.last();
    seen.assert_identity("user_alice", "user_token", "customer");
    assert_eq!(seen.header("x-whop-resource-id"), ["prod_mockproduct1"]);
    assert_eq!(seen.header("x-request-id").len(), 1);
    assert_eq!(seen.header("host").len(), 1);
    assert_eq!(seen.header("x-forwarded-for"), ["127.0.0.1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_access_is_403_json_for_api_clients_and_checkout_for_browsers() {
    let s = setup().await;
    let r = s.get("/dashboard", Some("user_bob"), "application/json").await;
    assert_eq!(r.status(), 403);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "forbidden");
    assert_eq!(body["required"], serde_json::json!(["prod_mockproduct1"]));
    assert_eq!(body["checkout_url"], "https://whop.com/checkout/plan_demo");

    let r = s.get("/dashboard", Some("user_bob"), BROWSER).await;
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "https://whop.com/checkout/plan_demo");
    assert!(s.up.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_route_admits_the_team_only() {
    let s = setup().await;
    let r = s.get("/admin/settings", Some("user_alice"), "application/json").await;
    assert_eq!(r.status(), 403);
    let r = s.get("/admin/settings", Some("user_carol"), "application/json").await;
    assert_eq!(r.status(), 200);
    let seen = s.up.last();
    assert_eq!(seen.header("x-whop-user-id"), ["user_carol"]);
    assert_eq!(seen.header("x-whop-access-level"), ["admin"]);
    assert_eq!(seen.header("x-whop-resource-id"), ["biz_mockcompany01"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_required_resource_grants_and_api_mode_never_redirects() {
    let s = setup().await;
    // Alice holds prod_mockproduct1, the second of /api's resources.
    let r = s.get("/api/items", Some("user_alice"), BROWSER).await;
    assert_eq!(r.status(), 200);
    assert_eq!(s.up.last().header("x-whop-resource-id"), ["prod_mockproduct1"]);
    let r = s.get("/api/items", Some("user_bob"), BROWSER).await;
    assert_eq!(r.status(), 403, "mode = api answers JSON even to a browser");
    assert_eq!(r.headers()["content-type"], "application/json");
    let r = s.get("/api/items", None, BROWSER).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], r#"Bearer realm="whopgate""#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_routes_set_identity_headers_only_for_a_valid_token() {
    let s = setup().await;
    s.get("/public/page", None, "*/*").await;
    assert!(s.up.last().header("x-whop-user-id").is_empty());
    s.get("/public/page", Some("user_bob"), "*/*").await;
    let seen = s.up.last();
    assert_eq!(seen.header("x-whop-user-id"), ["user_bob"]);
    assert_eq!(seen.header("x-whopgate-source"), ["user_token"]);
    assert!(seen.header("x-whop-access-level").is_empty(), "nothing was checked on a public route");
    let r = s.client.get(s.gate.url("/public/page")).header("x-whop-user-token", "garbage").send().await.unwrap();
    assert_eq!(r.status(), 200, "a bad token does not break a public page");
    assert!(s.up.last().header("x-whop-user-id").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_are_counted_and_logged_without_tokens() {
    let s = setup().await;
    s.get("/dashboard", Some("user_alice"), "application/json").await;
    s.get("/dashboard", Some("user_bob"), "application/json").await;
    s.get("/dashboard", None, "application/json").await;
    let metrics = reqwest::get(s.gate.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    for line in [
        r#"whopgate_requests_total{decision="allow",route="/"} 1"#,
        r#"whopgate_requests_total{decision="forbidden",route="/"} 1"#,
        r#"whopgate_requests_total{decision="unauthenticated",route="/"} 1"#,
        r#"whopgate_whop_api_requests_total{endpoint="access",status="200"} 2"#,
        r#"whopgate_cache_requests_total{cache="decision",result="miss"} 2"#,
        r#"whopgate_cache_requests_total{cache="token",result="miss"} 2"#,
    ] {
        assert!(metrics.contains(line), "missing {line}\n{metrics}");
    }
    let line = s.gate.wait_for_log("decision=forbidden", Duration::from_secs(5)).expect("access log");
    assert!(line.contains("user=user_bob") && line.contains("reason=no_access"), "{line}");
    for line in s.gate.logs() {
        assert!(!line.contains("eyJ"), "a token in the log: {line}");
    }
}
