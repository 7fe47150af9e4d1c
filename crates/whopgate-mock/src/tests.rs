//! Tests that start the mock on 127.0.0.1:0 and talk to it over real TCP, as clients will.

use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::*;

mod sign_in;

fn start() -> MockWhop {
    start_with(MockState::default())
}

fn start_with(state: MockState) -> MockWhop {
    MockWhop::start("127.0.0.1:0".parse().unwrap(), state).unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

async fn send(req: reqwest::RequestBuilder) -> Answer {
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.json().await.unwrap();
    Answer { status, headers, body }
}

/// A Whop API call with the mock's key and an `Api-Version-Date`.
async fn api(mock: &MockWhop, path: &str) -> Answer {
    send(
        client()
            .get(format!("{}{path}", mock.base_url()))
            .bearer_auth(mock.api_key())
            .header("Api-Version-Date", "2026-09-15"),
    )
    .await
}

async fn control(mock: &MockWhop, method: reqwest::Method, path: &str, body: Value) -> Answer {
    send(client().request(method, format!("{}{path}", mock.base_url())).json(&body)).await
}

fn access_path(user: &str, resource: &str) -> String {
    format!("/api/v1/users/{user}/access/{resource}")
}

#[tokio::test]
async fn access_check_for_the_default_users() {
    let mock = start();
    let cases = [
        ("user_alice", "prod_mockproduct1", true, "customer"),
        ("user_alice", "exp_mockexperienc1", true, "customer"),
        ("user_alice", "prod_mockproduct2", false, "no_access"),
        ("user_bob", "prod_mockproduct1", false, "no_access"),
        ("user_bob", "biz_mockcompany01", false, "no_access"),
        ("user_carol", "prod_mockproduct1", true, "admin"),
        ("user_carol", "prod_mockproduct2", true, "admin"),
        ("user_carol", "biz_mockcompany01", true, "admin"),
        ("user_carol", "exp_mockexperienc1", true, "admin"),
        ("user_dave", "prod_mockproduct1", false, "no_access"),
        ("alice", "prod_mockproduct1", true, "customer"),
    ];
    for (user, resource, has, level) in cases {
        let a = api(&mock, &access_path(user, resource)).await;
        assert_eq!(a.status, 200, "{user} {resource}");
        assert_eq!(a.body, json!({"has_access": has, "access_level": level}), "{user} {resource}");
        assert_eq!(a.headers["content-type"], "application/json", "{user} {resource}");
    }
    assert_eq!(mock.last_api_version_date().as_deref(), Some("2026-09-15"));

    for path in [access_path("user_nobody", "prod_mockproduct1"), access_path("user_alice", "prod_nothing")] {
        let a = api(&mock, &path).await;
        assert_eq!(a.status, 404, "{path}");
        assert_eq!(a.body["error"]["type"], "not_found", "{path}");
        assert!(a.body["error"]["message"].is_string(), "{path}");
    }
}

#[tokio::test]
async fn membership_by_id_and_license_key_in_both_shapes() {
    let mock = start();
    let expected = json!({
        "id": "mem_alice00000001",
        "status": "active",
        "valid": true,
        "license_key": "MOCK-ALICE-LICENSE",
        "product_id": "prod_mockproduct1",
        "user_id": "user_alice",
        "plan_id": "plan_mockplan00001",
        "company_id": "biz_mockcompany01",
        "quantity": 1,
        "created_at": 1_735_689_600,
        "updated_at": 1_735_689_600,
        "expires_at": null,
        "renewal_period_start": null,
        "renewal_period_end": null,
        "cancel_at_period_end": false,
        "canceled_at": null,
        "manage_url": "https://whop.com/orders/mem_alice00000001/manage",
        "metadata": {},
    });
    for id in ["mem_alice00000001", "MOCK-ALICE-LICENSE"] {
        let a = api(&mock, &format!("/api/v1/memberships/{id}")).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.body, expected);
    }

    let dave = api(&mock, "/api/v1/memberships/MOCK-DAVE-LICENSE").await.body;
    assert_eq!(dave["id"], "mem_dave000000001");
    assert_eq!(dave["status"], "canceled");
    assert_eq!(dave["valid"], false);
    assert_eq!(dave["canceled_at"], 1_735_689_600);

    let nested = api(&mock, "/api/v1/memberships/mem_alice00000001?mock_shape=nested").await.body;
    assert_eq!(nested["product"], json!({"id": "prod_mockproduct1", "title": "Mock Product One"}));
    assert_eq!(nested["user"], json!({"id": "user_alice", "username": "alice", "name": "Alice Customer"}));
    assert_eq!(nested["plan"], json!({"id": "plan_mockplan00001"}));
    assert_eq!(nested["company"]["id"], "biz_mockcompany01");
    for flat in ["product_id", "user_id", "plan_id", "company_id"] {
        assert!(nested.get(flat).is_none(), "{flat} in nested shape");
    }

    // The state switch makes nested the default; the query still wins.
    let nested_mock = start_with(MockState { membership_shape: MembershipShape::Nested, ..MockState::default() });
    let b = api(&nested_mock, "/api/v1/memberships/mem_alice00000001").await.body;
    assert_eq!(b["user"]["id"], "user_alice");
    let b = api(&nested_mock, "/api/v1/memberships/mem_alice00000001?mock_shape=flat").await.body;
    assert_eq!(b["user_id"], "user_alice");

    let a = api(&mock, "/api/v1/memberships/mem_unknown00001").await;
    assert_eq!(a.status, 404);
    assert_eq!(a.body["error"]["type"], "not_found");
}

/// What a license-key identity source sees after a cancellation: the same membership, found by
/// the key, now `canceled` and not valid.
#[tokio::test]
async fn a_canceled_membership_is_found_by_its_license_key() {
    let mock = start();
    mock.set_membership_status("MOCK-ALICE-LICENSE", MembershipStatus::Canceled).unwrap();
    for shape in ["flat", "nested"] {
        let a = api(&mock, &format!("/api/v1/memberships/MOCK-ALICE-LICENSE?mock_shape={shape}")).await;
        assert_eq!(a.status, 200, "{shape}");
        assert_eq!(a.body["id"], "mem_alice00000001", "{shape}");
        assert_eq!(a.body["license_key"], "MOCK-ALICE-LICENSE", "{shape}");
        assert_eq!(a.body["status"], "canceled", "{shape}");
        assert_eq!(a.body["valid"], false, "{shape}");
        assert!(a.body["canceled_at"].as_i64().unwrap() > DEFAULT_CREATED_AT, "{shape}");
    }
    let a = api(&mock, "/api/v1/memberships/MOCK-NOBODY-LICENSE").await;
    assert_eq!(a.status, 404);
}

#[tokio::test]
async fn company_keys_see_only_their_memberships() {
    let mut state = MockState::default();
    state.companies.push(Company { id: "biz_other".into(), title: String::new(), admins: vec![] });
    state.api_keys.push(ApiKey { key: "other_key".into(), company_id: Some("biz_other".into()) });
    let mock = start_with(state);
    let a = send(
        client().get(format!("{}/api/v1/memberships/mem_alice00000001", mock.base_url())).bearer_auth("other_key"),
    )
    .await;
    assert_eq!(a.status, 404);
}

#[tokio::test]
async fn jwks_shape_and_no_key_needed() {
    let mock = start();
    let a = send(client().get(mock.jwks_url())).await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.body,
        json!({"keys": [{
            "kty": "EC",
            "crv": "P-256",
            "x": "GG1m3c8ZGqlrDbcWirtgTHSxZ9N6n58PykjhQdB41yM",
            "y": "a2tYZR3BS0JIwlgVMxGz1ANKEpj-Q4uKWrT5J04lD6o",
            "kid": "mock-key-1",
            "alg": "ES256",
            "use": "sig",
        }]})
    );
    assert_eq!(mock.calls(EndpointKind::Jwks), 1);
}

#[tokio::test]
async fn legacy_v2_list() {
    let mock = start();
    let a = api(&mock, "/api/v2/memberships?user_id=user_alice&product_id=prod_mockproduct1&valid=true&page=1&per=10")
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["pagination"], json!({"current_page": 1, "total_page": 1, "total_count": 1}));
    let m = &a.body["data"][0];
    assert_eq!(m["id"], "mem_alice00000001");
    assert_eq!(m["product"], "prod_mockproduct1");
    assert_eq!(m["user"], "user_alice");
    assert_eq!(m["plan"], "plan_mockplan00001");
    assert_eq!(m["status"], "active");
    assert_eq!(m["valid"], true);
    assert_eq!(m["license_key"], "MOCK-ALICE-LICENSE");
    assert_eq!(m["email"], "alice@example.com");

    let a = api(&mock, "/api/v2/memberships?user_id=user_dave&valid=true").await;
    assert_eq!(a.body, json!({"pagination": {"current_page": 1, "total_page": 0, "total_count": 0}, "data": []}));

    // No filter: both memberships; one per page.
    let a = api(&mock, "/api/v2/memberships?per=1&page=2").await;
    assert_eq!(a.body["pagination"], json!({"current_page": 2, "total_page": 2, "total_count": 2}));
    assert_eq!(a.body["data"][0]["id"], "mem_dave000000001");
    assert_eq!(a.body["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn legacy_v5_list_defaults_to_valid_and_caps_per() {
    let mut state = MockState::default();
    for i in 0..60 {
        state.users.push(User { id: format!("user_bulk{i:02}"), username: String::new(), name: None, email: None });
        state.memberships.push(Membership::new(
            format!("mem_bulk{i:02}"),
            format!("user_bulk{i:02}"),
            "prod_mockproduct2",
            MembershipStatus::Trialing,
        ));
    }
    let mock = start_with(state);

    let a = api(&mock, "/api/v5/company/memberships?product_id=prod_mockproduct1").await;
    assert_eq!(
        a.body["pagination"],
        json!({"current_page": 1, "total_pages": 1, "next_page": null, "prev_page": null, "total_count": 1})
    );
    let m = &a.body["data"][0];
    for (k, v) in [
        ("id", json!("mem_alice00000001")),
        ("product_id", json!("prod_mockproduct1")),
        ("user_id", json!("user_alice")),
        ("plan_id", json!("plan_mockplan00001")),
        ("status", json!("active")),
        ("valid", json!(true)),
        ("license_key", json!("MOCK-ALICE-LICENSE")),
    ] {
        assert_eq!(m[k], v, "{k}");
    }

    let a = api(&mock, "/api/v5/company/memberships?valid=false&product_id=prod_mockproduct1").await;
    assert_eq!(a.body["data"][0]["id"], "mem_dave000000001");

    // v5 has no user filter: like Whop, the mock ignores one.
    let a = api(&mock, "/api/v5/company/memberships?product_id=prod_mockproduct1&user_id=user_bob").await;
    assert_eq!(a.body["data"][0]["user_id"], "user_alice");

    // 61 valid memberships, per capped at 50.
    let a = api(&mock, "/api/v5/company/memberships?per=100&page=1").await;
    assert_eq!(
        a.body["pagination"],
        json!({"current_page": 1, "total_pages": 2, "next_page": 2, "prev_page": null, "total_count": 61})
    );
    assert_eq!(a.body["data"].as_array().unwrap().len(), 50);
    let a = api(&mock, "/api/v5/company/memberships?per=50&page=2").await;
    assert_eq!(
        a.body["pagination"],
        json!({"current_page": 2, "total_pages": 2, "next_page": null, "prev_page": 1, "total_count": 61})
    );
    assert_eq!(a.body["data"].as_array().unwrap().len(), 11);
}

#[tokio::test]
async fn members_list() {
    let mock = start();
    let a = api(&mock, "/api/v1/members?company_id=biz_mockcompany01&user_ids[]=user_alice").await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.body,
        json!({
            "data": [{
                "id": "mber_alice",
                "access_level": "customer",
                "status": "joined",
                "user": {"id": "user_alice", "username": "alice", "name": "Alice Customer", "email": "alice@example.com"},
                "company_token_balance": 0,
                "created_at": "2025-01-01T00:00:00Z",
                "joined_at": "2025-01-01T00:00:00Z",
                "updated_at": "2025-01-01T00:00:00Z",
                "most_recent_action": null,
                "most_recent_action_at": null,
                "phone": null,
                "usd_total_spent": 0,
            }],
            "page_info": {"end_cursor": null, "start_cursor": null, "has_next_page": false, "has_previous_page": false},
        })
    );

    // Encoded brackets, several users; bob is no member at all.
    let a = api(
        &mock,
        "/api/v1/members?company_id=biz_mockcompany01&user_ids%5B%5D=user_carol&user_ids%5B%5D=user_dave&user_ids%5B%5D=user_bob",
    )
    .await;
    let got: Vec<(Value, Value, Value)> = a.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["user"]["id"].clone(), m["access_level"].clone(), m["status"].clone()))
        .collect();
    assert_eq!(
        got,
        [
            (json!("user_carol"), json!("admin"), json!("joined")),
            (json!("user_dave"), json!("no_access"), json!("left")),
        ]
    );

    // The key's company is the default.
    let a = api(&mock, "/api/v1/members").await;
    assert_eq!(a.body["data"].as_array().unwrap().len(), 3);
    let a = api(&mock, "/api/v1/members?company_id=biz_nope").await;
    assert_eq!(a.status, 404);
}

#[tokio::test]
async fn api_key_is_required_and_checked() {
    let mock = start();
    let url = format!("{}{}", mock.base_url(), access_path("user_alice", "prod_mockproduct1"));
    for req in [
        client().get(&url),
        client().get(&url).bearer_auth("wrong_key"),
        client().get(&url).header("Authorization", "Basic bW9jazptb2Nr"),
        client().get(&url).header("Authorization", "mock_api_key"),
    ] {
        let a = send(req).await;
        assert_eq!(a.status, 401);
        assert_eq!(a.body["error"]["type"], "unauthorized");
        assert!(a.body["error"]["message"].as_str().unwrap().len() > 5);
    }
    // Scheme is case-insensitive.
    let a = send(client().get(&url).header("Authorization", "bearer mock_api_key")).await;
    assert_eq!(a.status, 200);
    // Unknown /api/ routes: 401 without a key, 404 with one.
    let a = send(client().get(format!("{}/api/v1/nothing", mock.base_url()))).await;
    assert_eq!(a.status, 401);
    let a = api(&mock, "/api/v1/nothing").await;
    assert_eq!(a.status, 404);
    assert_eq!(a.body["error"]["type"], "not_found");
    let a = send(client().get(format!("{}/elsewhere", mock.base_url()))).await;
    assert_eq!(a.status, 404);
    assert_eq!(a.body["error"]["type"], "not_found");
    let a = send(client().post(format!("{}/api/v1/members", mock.base_url())).bearer_auth("mock_api_key")).await;
    assert_eq!(a.status, 404);
}

#[tokio::test]
async fn latency_fault_delays() {
    // Long enough that an undelayed call on a loaded machine still stays below it.
    const LATENCY: Duration = Duration::from_millis(800);
    let mock = start();
    mock.set_fault(EndpointKind::Access, Fault::latency(LATENCY));
    let t = Instant::now();
    let a = api(&mock, &access_path("user_alice", "prod_mockproduct1")).await;
    assert_eq!(a.status, 200);
    assert!(t.elapsed() >= LATENCY, "{:?}", t.elapsed());
    // Other kinds are not delayed.
    let t = Instant::now();
    api(&mock, "/api/v1/memberships/mem_alice00000001").await;
    assert!(t.elapsed() < LATENCY, "{:?}", t.elapsed());
}

#[tokio::test]
async fn error_fault_for_n_calls_then_until_cleared() {
    let mock = start();
    mock.set_fault(EndpointKind::Membership, Fault::error_times(2));
    let path = "/api/v1/memberships/mem_alice00000001";
    for _ in 0..2 {
        let a = api(&mock, path).await;
        assert_eq!(a.status, 500);
        assert_eq!(a.body["error"]["type"], "internal_server_error");
        assert!(a.body["error"]["message"].is_string());
    }
    assert_eq!(api(&mock, path).await.status, 200);

    mock.set_fault(FaultScope::All, Fault::error());
    for _ in 0..3 {
        assert_eq!(api(&mock, path).await.status, 500);
    }
    assert_eq!(send(client().get(mock.jwks_url())).await.status, 500);
    mock.clear_faults();
    assert_eq!(api(&mock, path).await.status, 200);
    // Faults hit before the key check: a server in trouble does not look at keys.
    mock.set_fault(EndpointKind::Membership, Fault::error_times(1));
    let a = send(client().get(format!("{}{path}", mock.base_url()))).await;
    assert_eq!(a.status, 500);
}

#[tokio::test]
async fn hang_fault_outlasts_the_client_timeout() {
    let mock = start();
    mock.set_fault(EndpointKind::Access, Fault::hang());
    let url = format!("{}{}", mock.base_url(), access_path("user_alice", "prod_mockproduct1"));
    let hanging = || mock.inner.hanging.load(std::sync::atomic::Ordering::SeqCst);
    let t = Instant::now();
    let call = tokio::spawn(client().get(&url).bearer_auth(mock.api_key()).timeout(Duration::from_secs(2)).send());
    while hanging() == 0 {
        assert!(t.elapsed() < Duration::from_millis(1900), "never hung");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let err = call.await.unwrap().unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!(mock.calls(EndpointKind::Access), 1);
    assert_eq!(mock.call_log()[0].status, None);
    // The client went away, so the hanging call was dropped rather than left sleeping.
    let gone = Instant::now();
    while hanging() != 0 {
        assert!(gone.elapsed() < Duration::from_secs(2), "hang outlived its client");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The rest of the mock is fine meanwhile.
    assert_eq!(send(client().get(mock.jwks_url())).await.status, 200);
    mock.clear_faults();
    assert_eq!(api(&mock, &access_path("user_alice", "prod_mockproduct1")).await.status, 200);
}

#[tokio::test]
async fn rate_limited_fault_with_and_without_retry_after() {
    let mock = start();
    mock.set_fault(EndpointKind::Access, Fault::rate_limited_with_header(12));
    let a = api(&mock, &access_path("user_alice", "prod_mockproduct1")).await;
    assert_eq!(a.status, 429);
    assert_eq!(a.body, json!({"error": {"type": "rate_limit_exceeded", "message": "Try again in 12 seconds."}}));
    assert_eq!(a.headers["retry-after"], "12");

    mock.set_fault(EndpointKind::Access, Fault::RateLimited { retry_after: 3, header: false, times: Some(1) });
    let a = api(&mock, &access_path("user_alice", "prod_mockproduct1")).await;
    assert_eq!(a.status, 429);
    assert_eq!(a.body["error"]["message"], "Try again in 3 seconds.");
    assert!(a.headers.get("retry-after").is_none());
    assert_eq!(api(&mock, &access_path("user_alice", "prod_mockproduct1")).await.status, 200);
}

#[tokio::test]
async fn real_rate_limit_per_kind_and_key() {
    let mut state = MockState { rate_limit_per_minute: Some(3), ..MockState::default() };
    state.api_keys.push(ApiKey { key: "second_key".into(), company_id: None });
    let mock = start_with(state);
    let path = access_path("user_alice", "prod_mockproduct1");
    for _ in 0..3 {
        assert_eq!(api(&mock, &path).await.status, 200);
    }
    let a = api(&mock, &path).await;
    assert_eq!(a.status, 429);
    assert_eq!(a.body["error"]["type"], "rate_limit_exceeded");
    let secs: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((59..=60).contains(&secs), "{secs}");
    assert_eq!(a.body["error"]["message"], format!("Try again in {secs} seconds."));
    // Another operation, another key: their own budgets.
    assert_eq!(api(&mock, "/api/v1/memberships/mem_alice00000001").await.status, 200);
    let a = send(client().get(format!("{}{path}", mock.base_url())).bearer_auth("second_key")).await;
    assert_eq!(a.status, 200);
    mock.set_rate_limit(None).unwrap();
    assert_eq!(api(&mock, &path).await.status, 200);
}

#[tokio::test]
async fn calls_are_counted_with_times() {
    let mock = start();
    let before = Instant::now();
    let alice = access_path("user_alice", "prod_mockproduct1");
    api(&mock, &alice).await;
    api(&mock, &alice).await;
    api(&mock, &access_path("user_bob", "prod_mockproduct1")).await;
    api(&mock, "/api/v1/nothing").await;
    send(client().get(format!("{}/_mock/calls", mock.base_url()))).await;

    assert_eq!(mock.calls(EndpointKind::Access), 3);
    assert_eq!(mock.calls(EndpointKind::Membership), 0);
    assert_eq!(mock.calls_to(&alice), 2);
    assert_eq!(mock.calls_total(), 4, "control calls are not counted");
    let times = mock.call_times(EndpointKind::Access);
    assert_eq!(times.len(), 3);
    assert!(times.iter().all(|t| *t >= before));
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(mock.max_calls_in_window(EndpointKind::Access, Duration::from_secs(60)), 3);
    let log = mock.call_log();
    assert_eq!(log[0].status, Some(200));
    assert_eq!(log[3].kind, None);
    assert_eq!(log[3].status, Some(404));

    let calls = control(&mock, reqwest::Method::GET, "/_mock/calls", json!({})).await.body;
    assert_eq!(calls["total"], 4);
    assert_eq!(calls["by_endpoint"], json!({"access": 3}));
    assert_eq!(calls["by_path"][&alice], 2);
    assert_eq!(calls["last_api_version_date"], "2026-09-15");
    assert_eq!(calls["calls"][0]["endpoint"], "access");
    assert_eq!(calls["calls"][0]["status"], 200);

    mock.reset_calls();
    assert_eq!(mock.calls(EndpointKind::Access), 0);
    api(&mock, &alice).await;
    control(&mock, reqwest::Method::DELETE, "/_mock/calls", json!({})).await;
    assert_eq!(mock.calls_total(), 0);
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)] // read for their presence and types
struct WhopClaims {
    iss: String,
    sub: String,
    aud: String, // a single string: an array must fail
    iat: u64,
    exp: u64,
}

/// The key of the mock's JWKS (fetched over HTTP) that the token's header names by kid.
async fn jwks_key(mock: &MockWhop, token: &str) -> Result<DecodingKey, String> {
    let jwks: JwkSet = client().get(mock.jwks_url()).send().await.unwrap().json().await.unwrap();
    let header = decode_header(token).map_err(|e| e.to_string())?;
    let kid = header.kid.ok_or("no kid")?;
    let jwk = jwks.find(&kid).ok_or("unknown kid")?;
    DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())
}

/// Verifies like a strict client: JWKS over HTTP, key by kid, ES256, iss, aud, exp.
async fn verify(mock: &MockWhop, token: &str) -> Result<WhopClaims, String> {
    let key = jwks_key(mock, token).await?;
    let mut v = Validation::new(Algorithm::ES256);
    v.set_issuer(&["urn:whopcom:exp-proxy"]);
    v.set_audience(&[mock.app_id()]);
    v.leeway = 0;
    decode::<WhopClaims>(token, &key, &v).map(|d| d.claims).map_err(|e| e.to_string())
}

#[tokio::test]
async fn minted_tokens_verify_and_broken_ones_do_not() {
    let mock = start();
    let token = mock.mint_token("user_alice").unwrap();
    let c = verify(&mock, &token).await.unwrap();
    assert_eq!(c.iss, "urn:whopcom:exp-proxy");
    assert_eq!(c.sub, "user_alice");
    assert_eq!(c.aud, "app_mockapp000001");
    assert_eq!(c.exp - c.iat, 3600);
    assert_eq!(decode_header(&token).unwrap().kid.as_deref(), Some("mock-key-1"));

    // The token CLI, with no server, mints what the server accepts.
    let cli = token_cli("user_bob", None).unwrap();
    assert_eq!(verify(&mock, &cli).await.unwrap().sub, "user_bob");

    let broken = [
        ("expired", TokenOptions::expired()),
        ("other iss", TokenOptions::issuer("urn:whopcom:other")),
        ("other aud", TokenOptions::audience("app_someoneelse0")),
        ("aud array", TokenOptions::audience_array(["app_mockapp000001"])),
        ("other kid", TokenOptions::with_kid("mock-key-404")),
        ("foreign key", TokenOptions::foreign_key()),
    ];
    for (what, opts) in broken {
        let t = mock.mint_token_with("user_alice", opts).unwrap();
        assert!(verify(&mock, &t).await.is_err(), "{what} verified");
    }

    // No kid (like Whop's older tokens): a verifier that insists on a kid refuses it, one that
    // tries every served key accepts it, since the signing key is served.
    let t = mock.mint_token_with("user_alice", TokenOptions::without_kid()).unwrap();
    assert_eq!(decode_header(&t).unwrap().kid, None);
    assert_eq!(verify(&mock, &t).await.unwrap_err(), "no kid");
    let jwks: JwkSet = client().get(mock.jwks_url()).send().await.unwrap().json().await.unwrap();
    let mut v = Validation::new(Algorithm::ES256);
    v.set_issuer(&[ISSUER]);
    v.set_audience(&[mock.app_id()]);
    assert!(jwks.keys.iter().any(|k| {
        let key = DecodingKey::from_jwk(k).unwrap();
        decode::<WhopClaims>(&t, &key, &v).is_ok()
    }));
}

#[tokio::test]
async fn rotation_changes_the_jwks() {
    let mock = start();
    let old = mock.mint_token("user_alice").unwrap();
    let kid = mock.rotate_key(false).unwrap();
    assert_eq!(kid, "mock-key-2");
    let jwks = send(client().get(mock.jwks_url())).await.body;
    let kids: Vec<&str> = jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert_eq!(kids, ["mock-key-1", "mock-key-2"]);
    let new = mock.mint_token("user_alice").unwrap();
    assert_eq!(decode_header(&new).unwrap().kid.as_deref(), Some("mock-key-2"));
    assert!(verify(&mock, &old).await.is_ok());
    assert!(verify(&mock, &new).await.is_ok());
    // The PEM of the current signing key verifies its tokens without any JWKS.
    let pem = mock.public_key_pem().unwrap();
    let mut v = Validation::new(Algorithm::ES256);
    v.set_issuer(&[ISSUER]);
    v.set_audience(&[mock.app_id()]);
    let key = DecodingKey::from_ec_pem(pem.as_bytes()).unwrap();
    assert!(decode::<WhopClaims>(&new, &key, &v).is_ok());
    assert!(decode::<WhopClaims>(&old, &key, &v).is_err());

    let kid = mock.rotate_key(true).unwrap();
    let jwks = send(client().get(mock.jwks_url())).await.body;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    assert_eq!(jwks["keys"][0]["kid"], kid.as_str());
    assert!(verify(&mock, &old).await.is_err());
    assert!(verify(&mock, &new).await.is_err());
    let dropped = mock.mint_token_with("user_alice", TokenOptions::signed_with("mock-key-1")).unwrap();
    assert!(verify(&mock, &dropped).await.is_err());
    assert!(verify(&mock, &mock.mint_token("user_alice").unwrap()).await.is_ok());
}

#[tokio::test]
async fn control_api_drives_everything() {
    use reqwest::Method;
    let mock = start();
    let alice_p1 = access_path("user_alice", "prod_mockproduct1");

    // Index, 404 and 405.
    let a = control(&mock, Method::GET, "/_mock", json!({})).await;
    assert!(a.body["endpoints"].as_array().unwrap().len() > 10);
    let a = control(&mock, Method::GET, "/_mock/nope", json!({})).await;
    assert_eq!(a.status, 404);
    let a = control(&mock, Method::DELETE, "/_mock/token", json!({})).await;
    assert_eq!(a.status, 405);

    // Access overrides.
    let a = control(
        &mock,
        Method::POST,
        "/_mock/access",
        json!({"user_id": "user_bob", "resource_id": "prod_mockproduct2", "access_level": "customer"}),
    )
    .await;
    assert_eq!(
        a.body,
        json!({"user_id": "user_bob", "resource_id": "prod_mockproduct2", "has_access": true, "access_level": "customer"})
    );
    assert_eq!(api(&mock, &access_path("user_bob", "prod_mockproduct2")).await.body["access_level"], "customer");
    let a = control(
        &mock,
        Method::POST,
        "/_mock/access",
        json!({"user_id": "user_bob", "resource_id": "prod_mockproduct2", "access_level": null}),
    )
    .await;
    assert_eq!(a.body["access_level"], "no_access");
    let a = control(
        &mock,
        Method::POST,
        "/_mock/access",
        json!({"user_id": "user_zed", "resource_id": "prod_mockproduct2", "access_level": "admin"}),
    )
    .await;
    assert_eq!(a.status, 404);
    let a = control(
        &mock,
        Method::POST,
        "/_mock/access",
        json!({"user_id": "user_bob", "resource_id": "prod_mockproduct2", "access_level": "owner"}),
    )
    .await;
    assert_eq!(a.status, 400);
    assert_eq!(a.body["error"]["type"], "bad_request");

    // Cancel a membership, then revive dave's.
    let a =
        control(&mock, Method::POST, "/_mock/memberships", json!({"id": "mem_alice00000001", "status": "canceled"}))
            .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["status"], "canceled");
    assert_eq!(api(&mock, &alice_p1).await.body["access_level"], "no_access");
    control(&mock, Method::POST, "/_mock/memberships", json!({"id": "MOCK-DAVE-LICENSE", "status": "past_due"})).await;
    assert_eq!(api(&mock, &access_path("user_dave", "prod_mockproduct1")).await.body["access_level"], "customer");
    let a = control(
        &mock,
        Method::POST,
        "/_mock/memberships",
        json!({"user_id": "user_bob", "product_id": "prod_mockproduct2", "license_key": "BOB-KEY"}),
    )
    .await;
    assert_eq!(a.body["id"], "mem_mock000000001");
    assert_eq!(api(&mock, "/api/v1/memberships/BOB-KEY").await.body["user_id"], "user_bob");

    // Faults over HTTP.
    let a = control(
        &mock,
        Method::POST,
        "/_mock/faults",
        json!({"endpoint": "access", "fault": {"type": "rate_limited", "retry_after": 7, "header": true}}),
    )
    .await;
    assert_eq!(a.body, json!({"access": [{"type": "rate_limited", "retry_after": 7, "header": true}]}));
    let r = api(&mock, &alice_p1).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.headers["retry-after"], "7");
    let a =
        control(&mock, Method::POST, "/_mock/faults", json!({"endpoint": "bogus", "fault": {"type": "hang"}})).await;
    assert_eq!(a.status, 400);
    let a = send(client().delete(format!("{}/_mock/faults?endpoint=access", mock.base_url()))).await;
    assert_eq!(a.body, json!({}));
    assert_eq!(api(&mock, &alice_p1).await.status, 200);

    // Real rate limit on and off.
    control(&mock, Method::PUT, "/_mock/rate_limit", json!({"per_minute": 1})).await;
    api(&mock, "/api/v1/memberships/mem_alice00000001").await;
    assert_eq!(api(&mock, "/api/v1/memberships/mem_alice00000001").await.status, 429);
    control(&mock, Method::PUT, "/_mock/rate_limit", json!({"per_minute": null})).await;

    // Tokens and rotation.
    let a = control(&mock, Method::POST, "/_mock/token", json!({"user_id": "user_carol"})).await;
    let token = a.body["token"].as_str().unwrap().to_owned();
    assert_eq!(verify(&mock, &token).await.unwrap().sub, "user_carol");
    let a = control(&mock, Method::POST, "/_mock/token", json!({"user_id": "user_carol", "expired": true})).await;
    assert!(verify(&mock, a.body["token"].as_str().unwrap()).await.is_err());
    let a = control(&mock, Method::POST, "/_mock/token", json!({"expired": true})).await;
    assert_eq!(a.status, 400);
    let a = control(&mock, Method::POST, "/_mock/keys/rotate", json!({"drop_old": true})).await;
    assert_eq!(a.body["kid"], "mock-key-2");
    assert_eq!(a.body["jwks"]["keys"][0]["kid"], "mock-key-2");
    assert!(verify(&mock, &token).await.is_err());

    // State: read, replace (bad and good), reset.
    let state = control(&mock, Method::GET, "/_mock/state", json!({})).await.body;
    assert_eq!(state["app_id"], "app_mockapp000001");
    let mut bad = state.clone();
    bad["memberships"][0]["product_id"] = json!("prod_missing");
    let a = control(&mock, Method::PUT, "/_mock/state", bad).await;
    assert_eq!(a.status, 400);
    assert!(a.body["error"]["message"].as_str().unwrap().contains("prod_missing"));
    let mut good = state.clone();
    good["app_id"] = json!("app_replaced00001");
    let a = control(&mock, Method::PUT, "/_mock/state", good).await;
    assert_eq!(a.status, 200);
    assert_eq!(mock.app_id(), "app_replaced00001");
    let a = control(&mock, Method::POST, "/_mock/reset", json!({})).await;
    assert_eq!(a.body, json!({"ok": true}));
    assert_eq!(mock.app_id(), "app_mockapp000001");
    assert_eq!(api(&mock, &alice_p1).await.body["access_level"], "customer");
    assert_eq!(mock.state(), MockState::default().resolve().unwrap());
}

#[tokio::test]
async fn rust_handle_mirrors_the_control_api() {
    let mock = start();
    let bob_p2 = access_path("user_bob", "prod_mockproduct2");
    mock.set_access("user_bob", "prod_mockproduct2", AccessLevel::Admin).unwrap();
    assert_eq!(api(&mock, &bob_p2).await.body["access_level"], "admin");
    mock.clear_access("user_bob", "prod_mockproduct2").unwrap();
    assert_eq!(api(&mock, &bob_p2).await.body["access_level"], "no_access");
    mock.set_membership_status("mem_alice00000001", MembershipStatus::Expired).unwrap();
    let m = api(&mock, "/api/v1/memberships/mem_alice00000001").await.body;
    assert_eq!(m["status"], "expired");
    assert_eq!(m["valid"], false);
    assert!(matches!(mock.set_membership_status("mem_nope", MembershipStatus::Active), Err(MockError::NotFound(_))));
}

#[tokio::test]
async fn shutdown_releases_the_port_and_drop_stops() {
    let mock = start();
    let addr = mock.addr();
    mock.set_fault(EndpointKind::Access, Fault::hang());
    let url = format!("{}{}", mock.base_url(), access_path("user_alice", "prod_mockproduct1"));
    let hanging = tokio::spawn(client().get(url).bearer_auth("mock_api_key").timeout(Duration::from_secs(30)).send());
    tokio::time::sleep(Duration::from_millis(100)).await;
    mock.shutdown().await;
    // The hanging call ends (connection dropped) long before its own timeout.
    let r = tokio::time::timeout(Duration::from_secs(5), hanging).await.unwrap().unwrap();
    assert!(r.is_err());
    let again = MockWhop::start(addr, MockState::default()).unwrap();
    assert_eq!(again.addr(), addr);
    drop(again);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(client().get(format!("http://{addr}/.well-known/jwks.json")).send().await.is_err());
}

#[tokio::test]
async fn bad_state_is_refused_at_start() {
    let mut state = MockState::default();
    state.memberships[0].user_id = "user_ghost".into();
    let e = MockWhop::start("127.0.0.1:0".parse().unwrap(), state).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("user_ghost"), "{e}");
}

#[test]
fn start_outside_a_runtime_is_an_error_not_a_panic() {
    let e = MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default()).unwrap_err();
    assert!(e.to_string().contains("tokio runtime"), "{e}");
}

#[tokio::test]
async fn a_state_file_round_trips_through_a_running_mock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.toml");
    let mut state = MockState::default();
    state.keys.push(SigningKey { kid: "generated".into(), private_key: None, generate: true, published: false });
    state.rate_limit_per_minute = Some(600);
    let resolved = state.resolve().unwrap();
    std::fs::write(&path, resolved.to_toml().unwrap()).unwrap();
    let loaded = MockState::load(&path).unwrap();
    assert_eq!(loaded, resolved);
    let mock = start_with(loaded);
    let served = control(&mock, reqwest::Method::GET, "/_mock/state", json!({})).await.body;
    let back: MockState = serde_json::from_value(served).unwrap();
    assert_eq!(back, resolved);
    // Unpublished keys sign but are not served.
    let jwks = send(client().get(mock.jwks_url())).await.body;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    let t = mock.mint_token_with("user_alice", TokenOptions::signed_with("generated")).unwrap();
    assert!(verify(&mock, &t).await.is_err());
}
