//! What the gate costs Whop, and what it does when Whop is slow, failing or rate limiting.

use std::sync::Arc;
use std::time::{Duration, Instant};

use whopgate_mock::{EndpointKind, Fault, MockState, MockWhop};

use crate::support::{Upstream, Whopgate, gated_config, state_with_customers};

const ROUTES: &str = r#"
[[route]]
path = "/open"
require = ["prod_mockproduct1"]
on_whop_error = "allow"

[[route]]
path = "/"
require = ["prod_mockproduct1"]
"#;

fn tokens(mock: &MockWhop, users: impl IntoIterator<Item = String>) -> Vec<String> {
    users.into_iter().map(|u| mock.mint_token(&u).unwrap()).collect()
}

/// Sends every request (token, path) with `concurrency` in flight; returns each status and latency.
async fn load(gate: &Whopgate, requests: Vec<(String, &'static str)>, concurrency: usize) -> Vec<(u16, Duration)> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build().unwrap();
    let semaphore = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut handles = Vec::with_capacity(requests.len());
    for (token, path) in requests {
        let permit = semaphore.clone().acquire_owned().await.unwrap();
        let client = client.clone();
        let url = gate.url(path);
        handles.push(tokio::spawn(async move {
            let started = Instant::now();
            let r =
                client.get(url).header("x-whop-user-token", token).header("accept", "application/json").send().await;
            drop(permit);
            let status = r.map(|r| r.status().as_u16()).unwrap_or(0);
            (status, started.elapsed())
        }));
    }
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_cold_requests_make_one_whop_call() {
    let up = Upstream::start().await;
    let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default()).unwrap();
    mock.set_fault(EndpointKind::Access, Fault::latency(Duration::from_millis(300)));
    let gate = Whopgate::start(&gated_config(&up.url(), &mock, "", ROUTES));
    let token = mock.mint_token("user_alice").unwrap();
    let results = load(&gate, vec![(token, "/x"); 200], 200).await;
    assert!(results.iter().all(|(status, _)| *status == 200), "{results:?}");
    assert_eq!(mock.calls(EndpointKind::Access), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_requests_across_a_hundred_users_make_a_hundred_calls() {
    let up = Upstream::start().await;
    let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), state_with_customers(100)).unwrap();
    let gate = Whopgate::start(&gated_config(&up.url(), &mock, "", ROUTES));
    let tokens = tokens(&mock, (0..100).map(|i| format!("user_load{i:04}")));
    let requests: Vec<(String, &str)> = (0..10_000).map(|i| (tokens[i % 100].clone(), "/x")).collect();
    let results = load(&gate, requests, 32).await;
    assert!(results.iter().all(|(status, _)| *status == 200));
    assert_eq!(mock.calls(EndpointKind::Access), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_traffic_never_waits_on_a_slow_whop() {
    let up = Upstream::start().await;
    let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default()).unwrap();
    mock.set_fault(EndpointKind::Access, Fault::latency(Duration::from_millis(500)));
    let cache = "[cache]\nttl = \"2s\"\nnegative_ttl = \"2s\"\n";
    let gate = Whopgate::start(&gated_config(&up.url(), &mock, "timeout = \"1s\"", &format!("{cache}{ROUTES}")));
    let token = mock.mint_token("user_alice").unwrap();
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut latencies = Vec::new();
    // Five ttl periods of steady traffic.
    while started.elapsed() < Duration::from_secs(10) {
        let t = Instant::now();
        let r = client.get(gate.url("/x")).header("x-whop-user-token", &token).send().await.unwrap();
        assert_eq!(r.status(), 200);
        latencies.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(latencies[0] >= Duration::from_millis(500), "the first request asks Whop");
    let slow: Vec<_> = latencies[1..].iter().filter(|l| **l >= Duration::from_millis(400)).collect();
    assert!(slow.is_empty(), "requests waited on Whop: {slow:?}");
    let calls = mock.calls(EndpointKind::Access);
    assert!((5..=12).contains(&calls), "{calls} Whop calls over five ttl periods");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_whop_fails_stale_decisions_are_served_and_new_users_get_503() {
    let up = Upstream::start().await;
    let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default()).unwrap();
    let cache = "[cache]\nttl = \"1s\"\nstale_if_error = \"1m\"\n";
    let gate = Whopgate::start(&gated_config(&up.url(), &mock, "timeout = \"1s\"", &format!("{cache}{ROUTES}")));
    let alice = mock.mint_token("user_alice").unwrap();
    let carol = mock.mint_token("user_carol").unwrap();
    let client = reqwest::Client::new();
    let get = |path: &'static str, token: &str| {
        client.get(gate.url(path)).header("x-whop-user-token", token).header("accept", "application/json").send()
    };
    assert_eq!(get("/x", &alice).await.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;

    for fault in [Fault::error(), Fault::hang(), Fault::rate_limited(1)] {
        mock.set_fault(EndpointKind::Access, fault);
        // Alice's expired decision is served stale.
        let r = get("/x", &alice).await.unwrap();
        assert_eq!(r.status(), 200);
        // Carol has no entry: 503 with Retry-After, or forwarded where on_whop_error = "allow".
        let r = get("/x", &carol).await.unwrap();
        assert_eq!(r.status(), 503);
        assert!(r.headers().contains_key("retry-after"));
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "access_check_unavailable");
        let r = get("/open", &carol).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(up.last().header("x-whop-user-id"), ["user_carol"]);
        mock.clear_faults();
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let metrics = reqwest::get(gate.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"whopgate_cache_requests_total{cache="decision",result="stale"}"#), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_429_whop_sees_no_call_for_the_time_it_named() {
    let up = Upstream::start().await;
    let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), state_with_customers(50)).unwrap();
    let gate = Whopgate::start(&gated_config(&up.url(), &mock, "", ROUTES));
    mock.set_fault(EndpointKind::Access, Fault::rate_limited(3));
    let tokens = tokens(&mock, (0..50).map(|i| format!("user_load{i:04}")));
    let client = reqwest::Client::new();
    let first = client.get(gate.url("/x")).header("x-whop-user-token", &tokens[0]).send().await.unwrap();
    assert_eq!(first.status(), 503);
    assert_eq!(first.headers()["retry-after"], "3");
    mock.clear_faults();
    let limited_at = mock.call_times(EndpointKind::Access)[0];
    // Keep asking about new users for the next 4 s.
    let mut i = 1;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        client.get(gate.url("/x")).header("x-whop-user-token", &tokens[i % 50]).send().await.unwrap();
        i += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let times = mock.call_times(EndpointKind::Access);
    let during_pause = times.iter().filter(|t| t.duration_since(limited_at) < Duration::from_millis(2950)).count();
    assert_eq!(
        during_pause,
        1,
        "calls during the pause: {:?}",
        times.iter().map(|t| t.duration_since(limited_at)).collect::<Vec<_>>()
    );
    assert!(times.len() > 1, "calls resumed after the pause");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_budget_holds_under_five_thousand_distinct_users() {
    let up = Upstream::start().await;
    let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default()).unwrap();
    let budget = 100;
    let gate = Whopgate::start(&gated_config(&up.url(), &mock, &format!("rate_limit_per_minute = {budget}"), ROUTES));
    // Unknown users are simply no-access to Whop: each still costs a call.
    let tokens = tokens(&mock, (0..5_000).map(|i| format!("user_many{i:05}")));
    let requests: Vec<(String, &str)> = tokens.into_iter().map(|t| (t, "/x")).collect();
    let results = load(&gate, requests, 32).await;
    let forbidden = results.iter().filter(|(s, _)| *s == 403).count();
    let unavailable = results.iter().filter(|(s, _)| *s == 503).count();
    assert_eq!(forbidden + unavailable, 5_000, "every request answered 403 or 503");
    assert_eq!(forbidden, budget as usize, "exactly the budget was asked");
    assert!(mock.max_calls_in_window(EndpointKind::Access, Duration::from_secs(60)) <= budget as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_5xx_is_retried_within_the_timeout() {
    let up = Upstream::start().await;
    let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default()).unwrap();
    let gate = Whopgate::start(&gated_config(&up.url(), &mock, "", ROUTES));
    mock.set_fault(EndpointKind::Access, Fault::error_times(1));
    let token = mock.mint_token("user_alice").unwrap();
    let r = reqwest::Client::new().get(gate.url("/x")).header("x-whop-user-token", token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(mock.calls(EndpointKind::Access), 2);
    assert_eq!(mock.last_api_version_date().as_deref(), Some("2026-09-15"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_api_key_is_503_and_never_logged() {
    let up = Upstream::start().await;
    let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default()).unwrap();
    let secret = "sk_live_should_never_be_printed_1234";
    let config = gated_config(&up.url(), &mock, "", ROUTES)
        .replace(&format!("api_key = \"{}\"", mock.api_key()), &format!("api_key = \"{secret}\""));
    let gate = Whopgate::start(&config);
    let token = mock.mint_token("user_alice").unwrap();
    let r = reqwest::Client::new().get(gate.url("/x")).header("x-whop-user-token", token).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let line = gate.wait_for_log("refused our API key", Duration::from_secs(5)).expect("a clear log line");
    assert!(line.contains("whop.api_key"), "{line}");
    for line in gate.logs() {
        assert!(!line.contains(secret), "the API key was logged: {line}");
    }
}
