//! "Sign in with Whop" in a real browser: headless Chromium driven through WebDriver
//! (chromedriver), against the sidecar and the mock's OAuth endpoints.
//!
//! Skipped with a note when Chromium or chromedriver is missing, unless
//! `WHOPGATE_TEST_REQUIRE_TOOLS=1` (set by `scripts/test`), which makes a missing tool a failure.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use whopgate_mock::{EndpointKind, Fault, MockState, MockWhop};

use crate::support::{Upstream, Whopgate, free_port, require_tool, session_config};

struct Driver {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // chromedriver leads its own process group: ending the group ends Chromium too, even
        // when the test failed before closing the session.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts chromedriver and a headless Chromium session, or `None` when they are not installed.
async fn browser() -> Option<(Driver, Client)> {
    if !require_tool("chromedriver") || !require_tool("chromium") {
        return None;
    }
    let port = free_port();
    let child = Command::new("chromedriver")
        .process_group(0)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let profile = tempfile::tempdir().unwrap();
    let driver = Driver { child, port, _profile: profile };
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", format!("--user-data-dir={}", driver._profile.path().display()),
            ],
        }),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match ClientBuilder::rustls()
            .expect("rustls")
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
        {
            Ok(client) => return Some((driver, client)),
            Err(e) if Instant::now() > deadline => panic!("could not start a Chromium session: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_signs_in_with_whop_sees_me_and_signs_out() {
    let Some((_driver, client)) = browser().await else { return };
    let up = Upstream::start().await;
    let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default()).unwrap();
    let port = free_port();
    let gate = Whopgate::start(&session_config(&up, &mock, port, ""));
    let site = format!("http://localhost:{port}");

    // Protected page → login → Whop (mock) authorize → callback → back on the protected page.
    client.goto(&format!("{site}/dashboard?tab=2")).await.unwrap();
    assert_eq!(client.current_url().await.unwrap().as_str(), format!("{site}/dashboard?tab=2"));
    let page = client.find(Locator::Css("body")).await.unwrap().text().await.unwrap();
    assert!(page.contains("\"target\":\"/dashboard?tab=2\""), "the app's page: {page}");
    let seen = up.last();
    seen.assert_identity("user_alice", "session", "customer");
    assert!(!seen.header("cookie").iter().any(|c| c.contains("__Host-whopgate")), "the session cookie reached the app");
    assert_eq!(mock.calls(EndpointKind::OauthAuthorize), 1);
    assert_eq!(mock.calls(EndpointKind::OauthToken), 1);

    // The session cookie's flags.
    let cookies = client.get_all_cookies().await.unwrap();
    let session = cookies.iter().find(|c| c.name() == "__Host-whopgate").expect("a session cookie");
    assert_eq!(session.secure(), Some(true));
    assert_eq!(session.http_only(), Some(true));
    assert_eq!(format!("{:?}", session.same_site()), "Some(Lax)");
    assert_eq!(session.path(), Some("/"));
    assert!(session.value().len() < 400, "the session cookie is small: {} bytes", session.value().len());
    assert!(!cookies.iter().any(|c| c.name().ends_with("-login")), "the login cookie outlived the sign-in");

    // /me
    client.goto(&format!("{site}/.whopgate/me")).await.unwrap();
    let me = client.find(Locator::Css("body")).await.unwrap().text().await.unwrap();
    let me: serde_json::Value = serde_json::from_str(&me).unwrap();
    assert_eq!(me["user_id"], "user_alice");
    assert_eq!(me["source"], "session");

    // Logout → the protected page asks to sign in again. The mock's authorize page now fails,
    // so the browser stays on it instead of being signed straight back in (the mock approves
    // without asking).
    mock.set_fault(EndpointKind::OauthAuthorize, Fault::error());
    client.goto(&format!("{site}/.whopgate/logout?rd=/dashboard")).await.unwrap();
    assert!(!client.get_all_cookies().await.unwrap().iter().any(|c| c.name() == "__Host-whopgate"));
    let authorize = format!("{}/oauth/authorize", mock.base_url());
    let url = client.current_url().await.unwrap();
    assert!(url.as_str().starts_with(&authorize), "after logout, ended on {url}");
    client.goto(&format!("{site}/dashboard")).await.unwrap();
    let url = client.current_url().await.unwrap();
    assert!(url.as_str().starts_with(&authorize), "the protected page did not ask to sign in: {url}");
    assert_eq!(mock.calls(EndpointKind::OauthToken), 1, "no new sign-in completed");
    client.close().await.unwrap();
    drop(gate);
}

/// `whopgate demo` as a process, killed on drop; `site` is the address it tells a browser to
/// open.
struct Demo {
    child: Child,
    site: String,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Demo {
    fn start() -> Demo {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new(crate::support::process::binary())
            .args(["demo", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start whopgate demo");
        let stdout = child.stdout.take().unwrap();
        let mut site = None;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.trim().strip_prefix("In a browser, open ") {
                site = Some(url.trim_end_matches('/').to_owned());
            }
            if line.contains("Ctrl-C stops the demo") {
                break;
            }
        }
        let site = site.expect("the demo says what to open in a browser");
        Demo { child, site }
    }
}

/// The README's first command as a person tries it: the demo's address in a browser, each demo
/// user picked on the mock's sign-in page, and the app's page saying whom the gate let in (or
/// the checkout, for the user without access).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_in_a_browser_signs_in_each_demo_user() {
    let Some((_driver, client)) = browser().await else { return };
    let demo = Demo::start();
    let site = &demo.site;
    let text = |id: &'static str| {
        let client = client.clone();
        async move { client.find(Locator::Id(id)).await.unwrap().text().await.unwrap() }
    };
    for user in ["user_alice", "user_bob", "user_carol"] {
        client.delete_all_cookies().await.unwrap();
        client.goto(&format!("{site}/")).await.unwrap();
        let page = client.find(Locator::Css("body")).await.unwrap().text().await.unwrap();
        assert!(page.contains("Sign in with Whop") && page.contains("pick who you are"), "the mock's page: {page}");
        client.find(Locator::Id(user)).await.unwrap().click().await.unwrap();
        let url = client.current_url().await.unwrap();
        if user == "user_bob" {
            assert_eq!(url.as_str(), format!("{site}/checkout"), "Bob holds nothing: to checkout");
            assert_eq!(text("checkout").await, "Checkout");
            continue;
        }
        assert_eq!(url.as_str(), format!("{site}/"), "{user} lands back on the page first asked for");
        assert_eq!(text("user").await, user);
        assert_eq!(text("x-whopgate-source").await, "session");
        assert_eq!(text("x-whop-resource-id").await, "prod_mockproduct1");
        let level = if user == "user_carol" { "admin" } else { "customer" };
        assert_eq!(text("x-whop-access-level").await, level);
        let why = text("why").await;
        assert!(why.contains(&format!("{level} of prod_mockproduct1")) && why.contains("signed in with Whop"), "{why}");
    }
    // Carol, still signed in, is on the company's team: /admin lets her in too.
    client.goto(&format!("{site}/admin")).await.unwrap();
    assert_eq!(text("x-whop-resource-id").await, "biz_mockcompany01");
    assert_eq!(text("x-whop-access-level").await, "admin");
    // Sign out: the next visit is the mock's page again.
    client.find(Locator::Id("logout")).await.unwrap().click().await.unwrap();
    client.goto(&format!("{site}/admin")).await.unwrap();
    let page = client.find(Locator::Css("body")).await.unwrap().text().await.unwrap();
    assert!(page.contains("pick who you are"), "after signing out: {page}");
    client.close().await.unwrap();
}
