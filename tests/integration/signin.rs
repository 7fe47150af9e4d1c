//! "Sign in with Whop" over HTTP (no browser): state and code checks, redirect-target safety
//! over oauth2-proxy's open-redirect corpus and our own payloads, and the session cookie.

use std::collections::HashMap;

use whopgate_mock::{MockState, MockWhop};

use crate::support::{SESSION_SECRET, Upstream, Whopgate, free_port, session_config};

const SECRET: &str = SESSION_SECRET;
const OLD_SECRET: &str = "the-previous-cookie-secret-also-32-bytes-or-more!";

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// `Set-Cookie` headers as name → (value, attributes).
fn set_cookies(response: &reqwest::Response) -> HashMap<String, (String, String)> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|c| {
            let (pair, attrs) = c.split_once(';').unwrap_or((c, ""));
            let (name, value) = pair.split_once('=')?;
            Some((name.trim().to_owned(), (value.trim().to_owned(), attrs.to_owned())))
        })
        .collect()
}

/// Does the response set a (non-empty) session cookie?
fn sets_session(response: &reqwest::Response) -> bool {
    set_cookies(response).get("__Host-whopgate").is_some_and(|(value, _)| !value.is_empty())
}

fn location(response: &reqwest::Response) -> String {
    response.headers()["location"].to_str().unwrap().to_owned()
}

struct Flow {
    login_cookie: String,
    callback: String,
}

/// `/login?rd=…` then the mock's authorize step; returns the login cookie and the callback URL.
async fn start_login(client: &reqwest::Client, site: &str, rd: &str) -> Flow {
    let login = client.get(format!("{site}/.whopgate/login")).query(&[("rd", rd)]).send().await.unwrap();
    assert_eq!(login.status(), 302);
    let cookies = set_cookies(&login);
    let login_cookie = cookies.get("__Host-whopgate-login").expect("a login cookie").0.clone();
    let authorize = client.get(location(&login)).send().await.unwrap();
    assert_eq!(authorize.status(), 302, "the mock approves");
    Flow { login_cookie, callback: location(&authorize) }
}

async fn callback(client: &reqwest::Client, flow: &Flow) -> reqwest::Response {
    client
        .get(&flow.callback)
        .header("cookie", format!("__Host-whopgate-login={}", flow.login_cookie))
        .send()
        .await
        .unwrap()
}

/// Where a browser on `site` ends up after following `location`.
fn lands_on(site: &str, location: &str) -> Option<String> {
    let base = url::Url::parse(&format!("{site}/")).unwrap();
    base.join(location)
        .ok()
        .and_then(|u| u.host_str().map(|h| format!("{h}:{}", u.port_or_known_default().unwrap_or(0))))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_checks_state_and_code() {
    let up = Upstream::start().await;
    let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default()).unwrap();
    let port = free_port();
    let gate = Whopgate::start(&session_config(&up, &mock, port, ""));
    let site = format!("http://localhost:{port}");
    let client = no_redirects();

    // The happy path, for reference.
    let flow = start_login(&client, &site, "/after?x=1").await;
    let done = callback(&client, &flow).await;
    assert_eq!(done.status(), 302);
    assert_eq!(location(&done), "/after?x=1");
    let cookies = set_cookies(&done);
    let (session, attrs) = cookies.get("__Host-whopgate").expect("a session cookie");
    for flag in ["Path=/", "Secure", "HttpOnly", "SameSite=Lax", "Max-Age="] {
        assert!(attrs.contains(flag), "{flag} missing in {attrs}");
    }
    assert!(cookies.get("__Host-whopgate-login").is_some_and(|(v, a)| v.is_empty() || a.contains("Max-Age=0")));

    // The session works, and /me says who it is.
    let me = client
        .get(format!("{site}/.whopgate/me"))
        .header("cookie", format!("__Host-whopgate={session}"))
        .send()
        .await
        .unwrap();
    let me: serde_json::Value = me.json().await.unwrap();
    assert_eq!(me["user_id"], "user_alice");
    assert_eq!(me["source"], "session");

    // Replayed code: Whop refuses it; 400 and no session cookie.
    let replay = callback(&client, &flow).await;
    assert_eq!(replay.status(), 400);
    assert!(!sets_session(&replay));

    // Missing state, forged state, no login cookie: 400, no session cookie, and Whop not asked.
    let flow = start_login(&client, &site, "/").await;
    let without_state = flow.callback.split("&state=").next().unwrap().to_owned();
    let forged = format!("{without_state}&state=forged-state-value");
    for (what, url, cookie) in [
        ("missing state", without_state.clone(), Some(&flow.login_cookie)),
        ("forged state", forged, Some(&flow.login_cookie)),
        ("no login cookie", flow.callback.clone(), None),
    ] {
        let mut request = client.get(&url);
        if let Some(c) = cookie {
            request = request.header("cookie", format!("__Host-whopgate-login={c}"));
        }
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), 400, "{what}");
        assert!(!sets_session(&r), "{what}");
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"), "{what}: a page");
    }
    drop(gate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_token_exchange_is_a_clear_page_without_a_cookie() {
    let up = Upstream::start().await;
    let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default()).unwrap();
    let port = free_port();
    let _gate = Whopgate::start(&session_config(&up, &mock, port, ""));
    let site = format!("http://localhost:{port}");
    let client = no_redirects();
    let login = client.get(format!("{site}/.whopgate/login")).send().await.unwrap();
    let login_cookie = set_cookies(&login)["__Host-whopgate-login"].0.clone();
    // Swap the PKCE challenge on the way to Whop: the gate's verifier no longer matches.
    let authorize = location(&login);
    let (before, after) = authorize.split_once("code_challenge=").unwrap();
    let rest = after.split_once('&').map_or(String::new(), |(_, r)| format!("&{r}"));
    let tampered = format!("{before}code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM{rest}");
    let approved = client.get(tampered).send().await.unwrap();
    let r = client
        .get(location(&approved))
        .header("cookie", format!("__Host-whopgate-login={login_cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(!sets_session(&r));
    let page = r.text().await.unwrap();
    assert!(page.contains("Sign-in failed") && page.contains("invalid_grant"), "{page}");
}

/// Our own payloads: each class SPEC §5 names, and some the corpus lacks.
const OWN_PAYLOADS: &[&str] = &[
    "//evil.example",
    "/\\evil.example",
    "/%09/evil.example",
    "/%2F%2Fevil.example",
    "/%5Cevil.example",
    "https:evil.example",
    "http:/evil.example",
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "https://evil.example",
    "https://localhost@evil.example",
    "https://evil.example#@localhost",
    "https://localhost.evil.example",
    "\\\\evil.example",
    " //evil.example",
    "/\t/evil.example",
    "/%0d%0aSet-Cookie:x=1",
    "//%65vil.example",
    "ftp://evil.example",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_targets_never_leave_the_site() {
    let up = Upstream::start().await;
    let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default()).unwrap();
    let port = free_port();
    let _gate = Whopgate::start(&session_config(&up, &mock, port, ""));
    let site = format!("http://localhost:{port}");
    let here = format!("localhost:{port}");
    let client = no_redirects();

    let corpus_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/testdata/openredirects.txt");
    let corpus = std::fs::read_to_string(corpus_path).ok();
    if corpus.is_none() {
        eprintln!("note: {corpus_path} is absent; running our own payloads only");
    }
    let mut payloads: Vec<String> = OWN_PAYLOADS.iter().map(|p| (*p).to_owned()).collect();
    payloads.extend(corpus.iter().flat_map(|c| c.lines().filter(|l| !l.is_empty()).map(str::to_owned)));
    if corpus.is_some() {
        assert!(payloads.len() >= 559 + OWN_PAYLOADS.len() - 1, "the corpus has its 559 payloads");
    }

    for payload in &payloads {
        // Logout redirects at once.
        let r = client.get(format!("{site}/.whopgate/logout")).query(&[("rd", payload)]).send().await.unwrap();
        assert_eq!(r.status(), 302);
        let target = location(&r);
        assert_eq!(lands_on(&site, &target).as_deref(), Some(here.as_str()), "logout rd={payload:?} → {target:?}");

        // Login redirects after the whole sign-in.
        let flow = start_login(&client, &site, payload).await;
        let done = callback(&client, &flow).await;
        assert_eq!(done.status(), 302, "login rd={payload:?}");
        let target = location(&done);
        assert_eq!(lands_on(&site, &target).as_deref(), Some(here.as_str()), "login rd={payload:?} → {target:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_foreign_and_rotated_session_cookies() {
    let up = Upstream::start().await;
    let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default()).unwrap();
    let config_for = |secret: &str, previous: &str| {
        let port = free_port();
        let text = session_config(&up, &mock, port, &format!("previous_cookie_secrets = [{previous}]"))
            .replace(&format!("cookie_secret = \"{SECRET}\""), &format!("cookie_secret = \"{secret}\""));
        (port, text)
    };
    let client = no_redirects();

    // A session made under the old secret.
    let (old_port, old_config) = config_for(OLD_SECRET, "");
    let old_gate = Whopgate::start(&old_config);
    let old_site = format!("http://localhost:{old_port}");
    let flow = start_login(&client, &old_site, "/").await;
    let old_session = set_cookies(&callback(&client, &flow).await)["__Host-whopgate"].0.clone();
    drop(old_gate);

    // Rotated: the old secret is now in previous_cookie_secrets.
    let (port, rotated) = config_for(SECRET, &format!("\"{OLD_SECRET}\""));
    let gate = Whopgate::start(&rotated);
    let site = format!("http://localhost:{port}");
    let with_session = |value: String, accept: &'static str| {
        client
            .get(format!("{site}/app"))
            .header("cookie", format!("a=1; __Host-whopgate={value}; b=2"))
            .header("accept", accept)
            .send()
    };
    let r = with_session(old_session.clone(), "application/json").await.unwrap();
    assert_eq!(r.status(), 200, "a cookie from the previous secret is accepted");
    let seen = up.last();
    assert_eq!(seen.header("x-whopgate-source"), ["session"]);
    assert_eq!(seen.header("cookie"), ["a=1; b=2"], "the session cookie is removed, the others kept");

    // Every single-byte flip of the cookie is refused.
    let bytes = old_session.as_bytes().to_vec();
    for i in 0..bytes.len() {
        let mut tampered = bytes.clone();
        tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
        let r = with_session(String::from_utf8(tampered).unwrap(), "application/json").await.unwrap();
        assert_eq!(r.status(), 401, "byte {i} flipped");
        let cleared = set_cookies(&r);
        assert!(cleared.get("__Host-whopgate").is_some_and(|(_, a)| a.contains("Max-Age=0")), "byte {i}: cleared");
    }
    // A browser with a bad cookie is sent to sign in again, with the cookie cleared.
    let r = with_session("garbage".into(), "text/html").await.unwrap();
    assert_eq!(r.status(), 302);
    assert!(location(&r).starts_with("/.whopgate/login?rd="), "{}", location(&r));

    // A gate that never had the old secret refuses the cookie.
    let (other_port, other) = config_for(SECRET, "");
    drop(gate);
    let _other = Whopgate::start(&other);
    let r = client
        .get(format!("http://localhost:{other_port}/app"))
        .header("cookie", format!("__Host-whopgate={old_session}"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_without_a_session_are_sent_to_sign_in() {
    let up = Upstream::start().await;
    let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default()).unwrap();
    let port = free_port();
    let gate = Whopgate::start(&session_config(&up, &mock, port, ""));
    let r = no_redirects().get(gate.url("/deep/page?x=1")).header("accept", "text/html").send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(location(&r), "/.whopgate/login?rd=%2Fdeep%2Fpage%3Fx%3D1");
    let r = no_redirects().get(gate.url("/deep/page")).header("accept", "application/json").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["login_url"], "/.whopgate/login?rd=%2Fdeep%2Fpage");
}
