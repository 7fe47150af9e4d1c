//! Every `whop.access_api` over real sockets against the mock: one allow/deny matrix run through
//! each backend, and the decision cache's promises kept in front of each (one call per cold key,
//! stale-if-error, 503 + `Retry-After`, 429 pauses, rate budgets), and pagination.

use std::sync::Arc;
use std::time::{Duration, Instant};

use whopgate_mock::{Company, EndpointKind, Fault, Membership, MembershipStatus, MockState, MockWhop, Product, User};

use crate::support::{Upstream, Whopgate, gated_config};

const COMPANY: &str = "biz_mockcompany01";
const PRODUCT: &str = "prod_mockproduct1";

/// One backend: its `access_api`, the resource its customer route requires (the kind it can
/// judge), the mock endpoint it calls, and whether it can judge `access_level = "admin"`.
#[derive(Clone, Copy, Debug)]
struct Backend {
    api: &'static str,
    resource: &'static str,
    endpoint: EndpointKind,
    judges_admin: bool,
}

const CHECK_ACCESS: Backend =
    Backend { api: "check_access", resource: PRODUCT, endpoint: EndpointKind::Access, judges_admin: true };
const MEMBERS: Backend =
    Backend { api: "members", resource: COMPANY, endpoint: EndpointKind::Members, judges_admin: true };
const V2: Backend =
    Backend { api: "memberships_v2", resource: PRODUCT, endpoint: EndpointKind::MembershipsV2, judges_admin: false };
const V5: Backend =
    Backend { api: "memberships_v5", resource: PRODUCT, endpoint: EndpointKind::MembershipsV5, judges_admin: false };
const BACKENDS: [Backend; 4] = [CHECK_ACCESS, MEMBERS, V2, V5];

impl Backend {
    fn routes(self, cache: &str) -> String {
        let admin = if self.judges_admin {
            format!("[[route]]\npath = \"/admin\"\nrequire = [\"{COMPANY}\"]\naccess_level = \"admin\"\n\n")
        } else {
            String::new()
        };
        format!(
            "{cache}\n{admin}[[route]]\npath = \"/open\"\nrequire = [\"{r}\"]\non_whop_error = \"allow\"\n\n[[route]]\npath = \"/\"\nrequire = [\"{r}\"]\n",
            r = self.resource
        )
    }

    fn start(self, up: &Upstream, mock: &MockWhop, whop_extra: &str, cache: &str) -> Whopgate {
        let whop = format!("access_api = \"{}\"\n{whop_extra}", self.api);
        Whopgate::start(&gated_config(&up.url(), mock, &whop, &self.routes(cache)))
    }
}

fn user(id: &str) -> User {
    User { id: id.to_owned(), username: id.trim_start_matches("user_").to_owned(), name: None, email: None }
}

/// The mock's company (products 1 and 2) plus another company with its own product, and one
/// user for each row of the matrix.
fn matrix_state() -> MockState {
    let mut state = MockState::default();
    state.companies.push(Company { id: "biz_othercompany1".into(), title: "Other".into(), admins: Vec::new() });
    state.products.push(Product {
        id: "prod_otherproduct1".into(),
        company_id: "biz_othercompany1".into(),
        title: "Other product".into(),
    });
    let on = |product: &str, status| (product.to_owned(), status);
    let rows: [(&str, Option<(String, MembershipStatus)>); 11] = [
        ("user_active", Some(on(PRODUCT, MembershipStatus::Active))),
        ("user_trialing", Some(on(PRODUCT, MembershipStatus::Trialing))),
        ("user_pastdue", Some(on(PRODUCT, MembershipStatus::PastDue))),
        ("user_completed", Some(on(PRODUCT, MembershipStatus::Completed))),
        ("user_expired", Some(on(PRODUCT, MembershipStatus::Expired))),
        ("user_canceled", Some(on(PRODUCT, MembershipStatus::Canceled))),
        ("user_nothing", None),
        ("user_otherproduct", Some(on("prod_mockproduct2", MembershipStatus::Active))),
        ("user_teamadmin", None),
        ("user_left", Some(on("prod_mockproduct2", MembershipStatus::Canceled))),
        ("user_othercompany", Some(on("prod_otherproduct1", MembershipStatus::Active))),
    ];
    for (i, (id, membership)) in rows.into_iter().enumerate() {
        state.users.push(user(id));
        if let Some((product, status)) = membership {
            state.memberships.push(Membership::new(format!("mem_matrix{i:07}"), id, product, status));
        }
    }
    state.companies[0].admins.push("user_teamadmin".into());
    state
}

/// What each backend is specified to answer on its customer route (`/`), as the access level
/// the app is told, or `None` for 403: (user, check_access, members, memberships_v2, v5).
const CUSTOMER_MATRIX: [(&str, [Option<&str>; 4]); 11] = {
    const C: Option<&str> = Some("customer");
    const A: Option<&str> = Some("admin");
    const NO: Option<&str> = None;
    [
        ("user_active", [C, C, C, C]),
        ("user_trialing", [C, C, C, C]),
        ("user_pastdue", [C, C, C, C]),
        ("user_completed", [C, C, C, C]),
        ("user_expired", [NO, NO, NO, NO]),
        ("user_canceled", [NO, NO, NO, NO]),
        ("user_nothing", [NO, NO, NO, NO]),
        // A member record is per company: the company's other product makes a customer of it.
        ("user_otherproduct", [NO, C, NO, NO]),
        // The team is known to the access check and the member list, not to membership lists.
        ("user_teamadmin", [A, A, NO, NO]),
        ("user_left", [NO, NO, NO, NO]),
        ("user_othercompany", [NO, NO, NO, NO]),
    ]
};

async fn get(client: &reqwest::Client, gate: &Whopgate, path: &str, token: &str) -> reqwest::Response {
    client
        .get(gate.url(path))
        .header("x-whop-user-token", token)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_matrix_through_every_backend() {
    let up = Upstream::start().await;
    let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), matrix_state()).unwrap();
    let client = reqwest::Client::new();
    for (column, backend) in BACKENDS.iter().enumerate() {
        let gate = backend.start(&up, &mock, "", "");
        mock.reset_calls();
        for (user, answers) in CUSTOMER_MATRIX {
            let token = mock.mint_token(user).unwrap();
            let r = get(&client, &gate, "/app", &token).await;
            let status = r.status().as_u16();
            match answers[column] {
                Some(level) => {
                    assert_eq!(status, 200, "{} {user}: {}", backend.api, r.text().await.unwrap_or_default());
                    let seen = up.last();
                    assert_eq!(seen.header("x-whop-user-id"), [user], "{} {user}", backend.api);
                    assert_eq!(seen.header("x-whop-access-level"), [level], "{} {user}", backend.api);
                }
                None => assert_eq!(status, 403, "{} {user}", backend.api),
            }
            if backend.judges_admin {
                let r = get(&client, &gate, "/admin", &token).await;
                let expected = if user == "user_teamadmin" { 200 } else { 403 };
                assert_eq!(r.status().as_u16(), expected, "{} {user} on the admin route", backend.api);
            }
        }
        assert!(mock.calls(backend.endpoint) > 0, "{} asked its own endpoint", backend.api);
        let others: usize =
            BACKENDS.iter().filter(|b| b.endpoint != backend.endpoint).map(|b| mock.calls(b.endpoint)).sum();
        assert_eq!(others, 0, "{} asked another backend's endpoint", backend.api);
    }
}

/// Runs `case` for every backend at once, each with its own mock and upstream.
async fn for_each_backend<F, Fut>(case: F)
where
    F: Fn(Backend) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let handles: Vec<_> = BACKENDS.into_iter().map(|b| tokio::spawn(case(b))).collect();
    for h in handles {
        h.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cold_requests_make_one_call_on_every_backend() {
    for_each_backend(|backend| async move {
        let up = Upstream::start().await;
        let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), matrix_state()).unwrap();
        mock.set_fault(backend.endpoint, Fault::latency(Duration::from_millis(300)));
        let gate = backend.start(&up, &mock, "", "");
        let token = mock.mint_token("user_active").unwrap();
        let client = reqwest::Client::new();
        let requests = (0..100).map(|_| get(&client, &gate, "/x", &token));
        let statuses: Vec<u16> =
            futures_util::future::join_all(requests).await.iter().map(|r| r.status().as_u16()).collect();
        assert!(statuses.iter().all(|s| *s == 200), "{}: {statuses:?}", backend.api);
        assert_eq!(mock.calls(backend.endpoint), 1, "{}: 100 cold requests, one call", backend.api);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_whop_fails_every_backend_serves_stale_and_answers_503() {
    for_each_backend(|backend| async move {
        let up = Upstream::start().await;
        let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), matrix_state()).unwrap();
        let cache = "[cache]\nttl = \"1s\"\nstale_if_error = \"1m\"\n";
        let gate = backend.start(&up, &mock, "timeout = \"1s\"", cache);
        let client = reqwest::Client::new();
        let known = mock.mint_token("user_active").unwrap();
        let new = mock.mint_token("user_trialing").unwrap();
        assert_eq!(get(&client, &gate, "/x", &known).await.status(), 200, "{}", backend.api);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        for fault in [Fault::error(), Fault::hang()] {
            mock.set_fault(backend.endpoint, fault.clone());
            let r = get(&client, &gate, "/x", &known).await;
            assert_eq!(r.status(), 200, "{} {fault:?}: the expired decision is served stale", backend.api);
            let r = get(&client, &gate, "/x", &new).await;
            assert_eq!(r.status(), 503, "{} {fault:?}: a user never decided", backend.api);
            assert!(r.headers().contains_key("retry-after"), "{}", backend.api);
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["error"], "access_check_unavailable", "{}", backend.api);
            assert_eq!(
                get(&client, &gate, "/open", &new).await.status(),
                200,
                "{}: on_whop_error = allow",
                backend.api
            );
            mock.clear_faults();
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
        let metrics = reqwest::get(gate.admin_url("/metrics")).await.unwrap().text().await.unwrap();
        assert!(metrics.contains(r#"whopgate_cache_requests_total{cache="decision",result="stale"}"#), "{metrics}");
        let requests = format!(r#"whopgate_whop_api_requests_total{{endpoint="{}",status="500"}}"#, backend.endpoint);
        assert!(metrics.contains(&requests), "{requests} not in\n{metrics}");
        let duration = format!(r#"whopgate_whop_api_duration_seconds_count{{endpoint="{}"}}"#, backend.endpoint);
        assert!(metrics.contains(&duration), "{duration} not in\n{metrics}");
    })
    .await;
}

/// A 429 pauses the backend's endpoint for as long as Whop asked: "Try again in 3 seconds." for
/// v1, the legacy body without a number (a 10 s pause) for v2, and a 60 s cool-down for v5,
/// whatever the body says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_pauses_every_backend_as_its_api_says() {
    for_each_backend(|backend| async move {
        let pause = match backend.endpoint {
            EndpointKind::MembershipsV2 => 10,
            EndpointKind::MembershipsV5 => 60,
            _ => 3,
        };
        let up = Upstream::start().await;
        let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), many_users(50)).unwrap();
        let gate = backend.start(&up, &mock, "", "");
        mock.set_fault(backend.endpoint, Fault::rate_limited(3));
        let client = reqwest::Client::new();
        let tokens: Vec<String> = (0..50).map(|i| mock.mint_token(&format!("user_many{i:05}")).unwrap()).collect();
        let first = get(&client, &gate, "/x", &tokens[0]).await;
        assert_eq!(first.status(), 503, "{}", backend.api);
        assert_eq!(first.headers()["retry-after"], pause.to_string().as_str(), "{}", backend.api);
        mock.clear_faults();
        let limited_at = mock.call_times(backend.endpoint)[0];
        let started = Instant::now();
        let mut i = 1;
        while started.elapsed() < Duration::from_secs(4) {
            let r = get(&client, &gate, "/x", &tokens[i % 50]).await;
            if limited_at.elapsed() < Duration::from_millis(2900) {
                assert_eq!(r.status(), 503, "{}: answered while paused", backend.api);
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let times = mock.call_times(backend.endpoint);
        let during = times.iter().filter(|t| t.duration_since(limited_at) < Duration::from_millis(2900)).count();
        assert_eq!(during, 1, "{}: calls while paused", backend.api);
        if pause < 4 {
            assert!(times.len() > 1, "{}: calls resume after the pause", backend.api);
        } else {
            assert_eq!(times.len(), 1, "{}: no call within its {pause} s pause", backend.api);
        }
    })
    .await;
}

/// The mock's default state plus `n` users (`user_many00000`…) with nothing.
fn many_users(n: usize) -> MockState {
    let mut state = MockState::default();
    state.users.extend((0..n).map(|i| user(&format!("user_many{i:05}"))));
    state
}

/// 2 000 distinct users, each a cold key: the backend's budget holds (v1 members:
/// `rate_limit_per_minute`; v2: 90 per 10 s; v5: 18 per 10 s), so the mock, enforcing Whop's
/// real limits, never has to answer 429; the rest are 503s, never a wrong answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_backends_budget_holds_under_two_thousand_distinct_users() {
    for_each_backend(|backend| async move {
        let (budget, window) = match backend.endpoint {
            EndpointKind::MembershipsV2 => (90, Duration::from_secs(10)),
            EndpointKind::MembershipsV5 => (18, Duration::from_secs(10)),
            _ => (100, Duration::from_secs(60)),
        };
        let up = Upstream::start().await;
        let state = MockState { rate_limit_per_minute: Some(600), ..MockState::default() };
        let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), state).unwrap();
        let gate = backend.start(&up, &mock, "rate_limit_per_minute = 100", "");
        let client = reqwest::Client::builder().pool_max_idle_per_host(16).build().unwrap();
        let semaphore = Arc::new(tokio::sync::Semaphore::new(16));
        let mut handles = Vec::new();
        for i in 0..2_000 {
            let permit = semaphore.clone().acquire_owned().await.unwrap();
            let (client, url) = (client.clone(), gate.url("/x"));
            let token = mock.mint_token(&format!("user_distinct{i:05}")).unwrap();
            handles.push(tokio::spawn(async move {
                let r = client.get(url).header("x-whop-user-token", token).header("accept", "application/json").send();
                let status = r.await.map(|r| r.status().as_u16()).unwrap_or(0);
                drop(permit);
                status
            }));
        }
        let mut statuses = Vec::new();
        for h in handles {
            statuses.push(h.await.unwrap());
        }
        let forbidden = statuses.iter().filter(|s| **s == 403).count();
        let unavailable = statuses.iter().filter(|s| **s == 503).count();
        assert_eq!(forbidden + unavailable, 2_000, "{}: every request 403 or 503", backend.api);
        assert!(forbidden >= budget, "{}: the budget was used ({forbidden} decided)", backend.api);
        let most = mock.max_calls_in_window(backend.endpoint, window);
        assert!(most <= budget, "{}: {most} calls in one {window:?}, budget {budget}", backend.api);
        let refused = mock.call_log().iter().filter(|c| c.status == Some(429)).count();
        assert_eq!(refused, 0, "{}: the mock had to answer 429", backend.api);
    })
    .await;
}

/// v5 cannot filter by user: a user whose valid membership is the 56th of the product's is found
/// on page 2, at one call per page; v2 filters by user and needs one call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_membership_on_page_two_lets_the_user_in() {
    let up = Upstream::start().await;
    let mut state = MockState::default();
    for i in 0..55 {
        let id = format!("user_before{i:05}");
        state.users.push(user(&id));
        state.memberships.push(Membership::new(format!("mem_before{i:07}"), id, PRODUCT, MembershipStatus::Active));
    }
    state.users.push(user("user_pagetwo"));
    state.memberships.push(Membership::new("mem_pagetwo00001", "user_pagetwo", PRODUCT, MembershipStatus::Active));
    let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), state).unwrap();
    let client = reqwest::Client::new();
    let on_page_two = mock.mint_token("user_pagetwo").unwrap();
    let nobody = mock.mint_token("user_bob").unwrap();

    let gate = V5.start(&up, &mock, "", "");
    let r = get(&client, &gate, "/x", &on_page_two).await;
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().header("x-whop-user-id"), ["user_pagetwo"]);
    assert_eq!(mock.calls(EndpointKind::MembershipsV5), 2, "one call per page");
    assert_eq!(get(&client, &gate, "/x", &nobody).await.status(), 403, "read to the end, not found");
    assert_eq!(mock.calls(EndpointKind::MembershipsV5), 4);

    let gate = V2.start(&up, &mock, "", "");
    assert_eq!(get(&client, &gate, "/x", &on_page_two).await.status(), 200);
    assert_eq!(mock.calls(EndpointKind::MembershipsV2), 1, "v2 filters by user");
}
