//! Forward-auth (`{prefix}/auth`) behind real nginx and real Caddy running deploy/'s own files:
//! each answer a user would check, through each front end, and the judgement a forged
//! description cannot change.

use whopgate_mock::{MockState, MockWhop};

use crate::support::front::Front;
use crate::support::{
    SESSION_SECRET, Upstream, Whopgate, free_port, gated_config, raw_request, require_tool, status_of,
};

const CHECKOUT: &str = "https://whop.com/checkout/plan_mockplan00001";

/// whopgate as the judge for a front end on `front_port` (trusted: it is on 127.0.0.1).
fn judge_config(up: &Upstream, mock: &MockWhop, front_port: u16, trusted: bool) -> String {
    let trusted = if trusted { "trusted_proxies = [\"127.0.0.1/32\"]\n" } else { "" };
    let rest = format!(
        r#"{trusted}public_url = "http://localhost:{front_port}"

[[route]]
path = "/public"
public = true

[[route]]
path = "/shop"
require = ["prod_mockproduct1"]
checkout_url = "{CHECKOUT}"

[[route]]
path = "/only-a"
host = "a.example"
public = true

[[route]]
path = "/"
require = ["prod_mockproduct1"]

[identity]
sources = ["user_token", "session"]

[identity.session]
client_id = "{app}"
cookie_secret = "{SESSION_SECRET}"
"#,
        app = mock.app_id()
    );
    gated_config(&up.url(), mock, "", &rest)
}

struct Stack {
    up: Upstream,
    mock: MockWhop,
    _gate: Whopgate,
    front: Front,
}

async fn stack(kind: &str) -> Option<Stack> {
    if !require_tool(kind) {
        return None;
    }
    let up = Upstream::start().await;
    let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default()).unwrap();
    let port = free_port();
    let gate = Whopgate::start(&judge_config(&up, &mock, port, true));
    let front = match kind {
        "nginx" => Front::nginx(port, gate.addr, &up.url()),
        _ => Front::caddy(port, gate.addr, &up.url()),
    };
    Some(Stack { up, mock, _gate: gate, front })
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

const API: &str = "application/json";
const BROWSER: &str = "text/html,application/xhtml+xml";

async fn get(s: &Stack, path: &str, accept: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut r = no_redirects().get(s.front.url(path)).header("accept", accept);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send().await.unwrap()
}

fn location(r: &reqwest::Response) -> String {
    r.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

/// Every answer a user would check, through one front end.
async fn answers_through(kind: &str) {
    let Some(s) = stack(kind).await else { return };
    let alice = s.mock.mint_token("user_alice").unwrap();
    let bob = s.mock.mint_token("user_bob").unwrap();

    // Allowed: the upstream sees the identity headers whopgate answered with.
    let r = get(&s, "/app?x=1", API, &[("x-whop-user-token", &alice)]).await;
    assert_eq!(r.status(), 200, "{kind}");
    let seen = s.up.last();
    assert_eq!(seen.target, "/app?x=1", "{kind}");
    seen.assert_identity("user_alice", "user_token", "customer");
    assert_eq!(seen.header("x-whop-resource-id"), ["prod_mockproduct1"], "{kind}");

    // No credential: 401 for an API client, the sign-in redirect for a browser.
    let before = s.up.seen().len();
    assert_eq!(get(&s, "/app", API, &[]).await.status(), 401, "{kind}");
    let r = get(&s, "/app?x=1", BROWSER, &[]).await;
    assert_eq!(r.status(), 302, "{kind}");
    // nginx's `return 302` makes the target absolute, on the same site.
    let login = location(&r).replace(&format!("http://{}", s.front.addr), "");
    assert!(login.starts_with("/.whopgate/login?rd="), "{kind}: {login}");

    // No access: 403, or the rule's checkout for a browser.
    assert_eq!(get(&s, "/app", API, &[("x-whop-user-token", &bob)]).await.status(), 403, "{kind}");
    let r = get(&s, "/shop", BROWSER, &[("x-whop-user-token", &bob)]).await;
    assert_eq!(r.status(), 302, "{kind}");
    assert_eq!(location(&r), CHECKOUT, "{kind}");
    assert_eq!(s.up.seen().len(), before, "{kind}: a denied request reached the app");

    // A client's own identity headers never reach the app, on a public or a gated path.
    for spelling in ["x-whop-user-id", "X-Whop-User-Id", "x_whop_user_id"] {
        let r = get(&s, "/public/page", API, &[(spelling, "user_forged")]).await;
        assert_eq!(r.status(), 200, "{kind} {spelling}");
        let seen = s.up.last();
        assert!(seen.header("x-whop-user-id").is_empty(), "{kind} {spelling}: {:?}", seen.headers);
        assert!(!format!("{:?}", seen.headers).contains("user_forged"), "{kind} {spelling}: {:?}", seen.headers);
        let r = get(&s, "/app", API, &[(spelling, "user_forged"), ("x-whop-user-token", &alice)]).await;
        assert_eq!(r.status(), 200, "{kind} {spelling}");
        assert_eq!(s.up.last().header("x-whop-user-id"), ["user_alice"], "{kind} {spelling}");
    }

    // A forged description cannot make a protected path look public.
    for forged in ["x-original-uri", "x-forwarded-uri"] {
        let r = get(&s, "/app", API, &[(forged, "/public/x"), ("x-original-method", "GET")]).await;
        assert_eq!(r.status(), 401, "{kind}: {forged}");
    }
}

/// After signing in through the mock, the browser lands on the URL it first asked for.
async fn sign_in_through(kind: &str) {
    let Some(s) = stack(kind).await else { return };
    let client = no_redirects();
    let site = format!("http://localhost:{}", s.front.addr.port());
    let first = client.get(format!("{site}/deep/page?q=1")).header("accept", BROWSER).send().await.unwrap();
    assert_eq!(first.status(), 302, "{kind}");
    let to_login = location(&first).replace(&site, "").replace(&format!("http://{}", s.front.addr), "");
    let login = client.get(format!("{site}{to_login}")).send().await.unwrap();
    assert_eq!(login.status(), 302, "{kind}: /login");
    let login_cookie = cookie(&login, "__Host-whopgate-login");
    let authorize = client.get(location(&login)).send().await.unwrap();
    assert_eq!(authorize.status(), 302, "{kind}: the mock approves");
    let callback = client
        .get(location(&authorize))
        .header("cookie", format!("__Host-whopgate-login={login_cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(callback.status(), 302, "{kind}: /callback");
    assert_eq!(location(&callback), format!("{site}/deep/page?q=1"), "{kind}: back where it started");
    let session = cookie(&callback, "__Host-whopgate");
    let back = client
        .get(location(&callback))
        .header("accept", BROWSER)
        .header("cookie", format!("theme=dark; __Host-whopgate={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(back.status(), 200, "{kind}");
    let seen = s.up.last();
    assert_eq!(seen.target, "/deep/page?q=1");
    seen.assert_identity("user_alice", "session", "customer");
    assert!(!format!("{:?}", seen.headers).contains(&session), "{kind}: the session cookie reached the app");
    let cookies: Vec<String> =
        seen.header("cookie").iter().map(|c| c.trim_end_matches([';', ' ']).to_owned()).collect();
    assert_eq!(cookies, ["theme=dark"], "{kind}: the app's own cookies pass");
}

fn cookie(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.split(';').next()?.strip_prefix(&format!("{name}=")).map(str::to_owned))
        .unwrap_or_else(|| panic!("no {name} cookie"))
}

/// An absolute-form target and a `Host` that disagree (`GET http://a.example/only-a` with
/// `Host: b.example`; `/only-a` is public on a.example only): the host whopgate judges is the
/// host the app receives. Caddy (like the sidecar) goes by the target, a.example; nginx's
/// config passes `$http_host`, b.example, to both the judge and the app.
async fn one_host_through(kind: &str, judged_as_target: bool) {
    let Some(s) = stack(kind).await else { return };
    let answer = raw_request(
        s.front.addr,
        b"GET http://a.example/only-a HTTP/1.1\r\nHost: b.example\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
    );
    let seen = s.up.seen();
    if judged_as_target {
        assert_eq!(status_of(&answer), 200, "{kind}: public on a.example\n{answer}");
        assert_eq!(seen.last().unwrap().header("host"), ["a.example"], "{kind}");
    } else {
        assert_eq!(status_of(&answer), 401, "{kind}: gated on b.example\n{answer}");
        assert!(seen.is_empty(), "{kind}: {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_with_deploy_nginx_conf() {
    answers_through("nginx").await;
    sign_in_through("nginx").await;
    one_host_through("nginx", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_with_deploy_caddyfile() {
    answers_through("caddy").await;
    sign_in_through("caddy").await;
    one_host_through("caddy", true).await;
}

/// From a peer that is not a trusted proxy, the description is not believed: `/auth` is
/// judged as the request it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_peers_description_is_not_believed() {
    let up = Upstream::start().await;
    let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default()).unwrap();
    let untrusted = Whopgate::start(&judge_config(&up, &mock, free_port(), false));
    let trusted = Whopgate::start(&judge_config(&up, &mock, free_port(), true));
    let client = no_redirects();
    for (header, value) in [("x-forwarded-uri", "/public/x"), ("x-original-uri", "/public/x")] {
        let ask = |gate: &Whopgate| {
            client.get(gate.url("/.whopgate/auth")).header("accept", API).header(header, value).send()
        };
        assert_eq!(ask(&trusted).await.unwrap().status(), 200, "{header}: a trusted proxy is believed");
        assert_eq!(ask(&untrusted).await.unwrap().status(), 401, "{header}: judged as itself, a gated path");
    }
    let alice = mock.mint_token("user_alice").unwrap();
    let r = client
        .get(trusted.url("/.whopgate/auth"))
        .header("x-forwarded-uri", "/app")
        .header("x-forwarded-host", "app.example")
        .header("x-whop-user-token", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-whop-user-id"], "user_alice");
    assert_eq!(r.headers()["x-whop-access-level"], "customer");
    assert!(r.bytes().await.unwrap().is_empty(), "no body");
    assert!(up.seen().is_empty(), "forward-auth forwards nothing");
    let metrics = reqwest::get(trusted.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(r#"whopgate_forward_auth_total{decision="allow",front_end="traefik_caddy"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"whopgate_forward_auth_total{decision="public",front_end="traefik_caddy"}"#),
        "{metrics}"
    );
}
