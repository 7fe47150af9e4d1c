//! `POST {prefix}/webhook`: a delivery signed as Whop signs it drops the user's cached decisions
//! at once; anything not shown to be Whop's changes nothing. The signatures here are made with
//! aws-lc's HMAC straight from SPEC §1's recipe, not with whopgate's own signer.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use base64::Engine as _;
use serde_json::{Value, json};
use whopgate_mock::{EndpointKind, MembershipStatus, MockState, MockWhop};

use crate::support::{Upstream, Whopgate, gated_config};

pub(crate) const SECRET: &str = "ws_3f1c0a9d8e7b6a5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c";
const LEGACY_SECRET: &str = "legacy-webhook-secret-0123456789";

struct Setup {
    _up: Upstream,
    mock: MockWhop,
    gate: Whopgate,
    client: reqwest::Client,
}

/// Decisions trusted for an hour either way: only a webhook can make the gate ask again.
async fn setup(webhook: &str) -> Setup {
    let up = Upstream::start().await;
    let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default()).unwrap();
    let rest = format!(
        "[cache]\nttl = \"1h\"\nnegative_ttl = \"1h\"\n\n{webhook}\n\n[[route]]\npath = \"/\"\nrequire = [\"prod_mockproduct1\"]\nmode = \"api\"\n"
    );
    let gate = Whopgate::start(&gated_config(&up.url(), &mock, "", &rest));
    let client = reqwest::Client::new();
    Setup { _up: up, mock, gate, client }
}

async fn configured() -> Setup {
    setup(&format!("[webhook]\nsecret = \"{SECRET}\"\nlegacy_secret = \"{LEGACY_SECRET}\"")).await
}

pub(crate) fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), message).as_ref().to_vec()
}

/// Standard Webhooks headers for `body`, keyed with `key`, stamped `timestamp`.
pub(crate) fn standard(key: &[u8], id: &str, timestamp: i64, body: &str) -> Vec<(String, String)> {
    let tag = hmac_sha256(key, format!("{id}.{timestamp}.{body}").as_bytes());
    let signature = format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(tag));
    vec![
        ("webhook-id".into(), id.into()),
        ("webhook-timestamp".into(), timestamp.to_string()),
        ("webhook-signature".into(), signature),
    ]
}

/// POSTs `body` to `gate`'s webhook endpoint, signed with [`SECRET`] as delivery `id`.
pub(crate) async fn deliver_signed(gate: &Whopgate, id: &str, body: &str) -> reqwest::Response {
    let mut request = reqwest::Client::new().post(gate.url("/.whopgate/webhook")).body(body.to_owned());
    for (name, value) in standard(SECRET.as_bytes(), id, now(), body) {
        request = request.header(name, value);
    }
    request.send().await.unwrap()
}

fn legacy(key: &[u8], timestamp: i64, body: &str) -> Vec<(String, String)> {
    let tag = hmac_sha256(key, format!("{timestamp}.{body}").as_bytes());
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    vec![("x-whop-signature".into(), format!("t={timestamp},v1={hex}"))]
}

pub(crate) fn event(kind: &str, data: Value) -> String {
    json!({"id": "evt_test", "type": kind, "api_version": "v1", "timestamp": "2026-12-03T10:00:00Z",
           "company_id": "biz_mockcompany01", "data": data})
    .to_string()
}

impl Setup {
    async fn status_of(&self, user: &str) -> u16 {
        let token = self.mock.mint_token(user).unwrap();
        let response = self.client.get(self.gate.url("/app")).header("x-whop-user-token", token).send().await.unwrap();
        response.status().as_u16()
    }

    async fn deliver(&self, headers: &[(String, String)], body: &str) -> (u16, Value) {
        let mut request = self.client.post(self.gate.url("/.whopgate/webhook")).body(body.to_owned());
        for (name, value) in headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn metric(&self, result: &str) -> u64 {
        let text = self.client.get(self.gate.admin_url("/metrics")).send().await.unwrap().text().await.unwrap();
        let line = format!("whopgate_webhooks_total{{result=\"{result}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(&line)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    }
}

#[tokio::test]
async fn a_signed_deactivation_revokes_at_once() {
    let s = configured().await;
    assert_eq!(s.status_of("user_alice").await, 200);
    s.mock.set_membership_status("mem_alice00000001", MembershipStatus::Expired).unwrap();
    assert_eq!(s.status_of("user_alice").await, 200, "the cached grant holds for its ttl without a webhook");

    let body = event(
        "membership.deactivated",
        json!({"id": "mem_alice00000001", "status": "expired",
        "user": {"id": "user_alice", "username": "alice"}, "product": {"id": "prod_mockproduct1"}}),
    );
    let started = Instant::now();
    let (status, answer) = s.deliver(&standard(SECRET.as_bytes(), "msg_deact1", now(), &body), &body).await;
    assert_eq!((status, answer), (200, json!({"result": "applied"})));
    assert!(started.elapsed() < Duration::from_secs(1), "answered in {:?}", started.elapsed());
    assert_eq!(s.status_of("user_alice").await, 403, "the next request is judged afresh");
    assert_eq!(s.metric("applied").await, 1);
}

#[tokio::test]
async fn a_signed_activation_with_a_flat_user_lets_a_refused_user_in() {
    let s = configured().await;
    assert_eq!(s.status_of("user_dave").await, 403);
    s.mock.set_membership_status("mem_dave000000001", MembershipStatus::Active).unwrap();
    assert_eq!(s.status_of("user_dave").await, 403, "the cached refusal holds for its ttl without a webhook");

    let body = event("membership.activated", json!({"id": "mem_dave000000001", "user_id": "user_dave"}));
    let (status, _) = s.deliver(&standard(SECRET.as_bytes(), "msg_act1", now(), &body), &body).await;
    assert_eq!(status, 200);
    assert_eq!(s.status_of("user_dave").await, 200);
}

#[tokio::test]
async fn the_legacy_went_invalid_revokes() {
    let s = configured().await;
    assert_eq!(s.status_of("user_alice").await, 200);
    s.mock.set_membership_status("mem_alice00000001", MembershipStatus::Canceled).unwrap();
    let body = json!({"api_version": "v5", "action": "membership.went_invalid",
                      "data": {"id": "mem_alice00000001", "user_id": "user_alice", "valid": false}})
    .to_string();
    let (status, answer) = s.deliver(&legacy(LEGACY_SECRET.as_bytes(), now(), &body), &body).await;
    assert_eq!((status, answer), (200, json!({"result": "applied"})));
    assert_eq!(s.status_of("user_alice").await, 403);
}

#[tokio::test]
async fn a_delivery_not_shown_to_be_whops_changes_nothing() {
    let s = configured().await;
    assert_eq!(s.status_of("user_alice").await, 200);
    s.mock.set_membership_status("mem_alice00000001", MembershipStatus::Expired).unwrap();
    let body = event("membership.deactivated", json!({"id": "mem_alice00000001", "user": {"id": "user_alice"}}));
    let engine = base64::engine::general_purpose::STANDARD;
    let after_prefix = SECRET.strip_prefix("ws_").unwrap();
    // What a verifier that treats the secret as Svix's `whsec_` base64 would accept.
    let decoded = engine.decode(after_prefix).unwrap_or_else(|_| after_prefix.as_bytes().to_vec());
    let mut forged = standard(SECRET.as_bytes(), "msg_bad", now(), &body);
    forged[2].1 = format!("v1,{}", engine.encode([7u8; 32]));
    let cases: Vec<(&str, Vec<(String, String)>)> = vec![
        ("a wrong signature", forged),
        ("a timestamp 6 minutes old", standard(SECRET.as_bytes(), "msg_old", now() - 360, &body)),
        ("the base64-decoded secret", standard(&decoded, "msg_b64", now(), &body)),
        ("the prefix-stripped secret", standard(after_prefix.as_bytes(), "msg_strip", now(), &body)),
        ("no signature", Vec::new()),
        ("a legacy signature made with the current secret", legacy(SECRET.as_bytes(), now(), &body)),
    ];
    for (what, headers) in &cases {
        let (status, answer) = s.deliver(headers, &body).await;
        assert_eq!(status, 401, "{what}: {answer}");
        assert_eq!(answer["error"], "bad_signature", "{what}");
    }
    assert_eq!(s.status_of("user_alice").await, 200, "nothing was forgotten");
    assert_eq!(s.metric("bad_signature").await, cases.len() as u64);
    assert_eq!(s.metric("applied").await, 0);
}

#[tokio::test]
async fn a_malformed_body_with_a_valid_signature_is_400_and_a_replay_is_ignored() {
    let s = configured().await;
    for body in ["{not json", r#"{"type":"membership.deactivated","data":{"id":"pay_x"}}"#] {
        let (status, answer) = s.deliver(&standard(SECRET.as_bytes(), "msg_malformed", now(), body), body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"], "malformed");
    }

    assert_eq!(s.status_of("user_alice").await, 200);
    s.mock.set_membership_status("mem_alice00000001", MembershipStatus::Expired).unwrap();
    let body = event("membership.deactivated", json!({"id": "mem_alice00000001", "user": {"id": "user_alice"}}));
    let headers = standard(SECRET.as_bytes(), "msg_once", now(), &body);
    assert_eq!(s.deliver(&headers, &body).await.0, 200);
    assert_eq!(s.status_of("user_alice").await, 403);

    // Access comes back; the old delivery, sent again, must not drop the fresh refusal's entry
    // (nor anything else): it is acknowledged and ignored.
    s.mock.set_membership_status("mem_alice00000001", MembershipStatus::Active).unwrap();
    let (status, answer) = s.deliver(&headers, &body).await;
    assert_eq!((status, answer), (200, json!({"result": "replayed"})));
    assert_eq!(s.status_of("user_alice").await, 403, "the replay changed nothing");
    assert_eq!(s.metric("replayed").await, 1);
    assert_eq!(s.metric("malformed").await, 2);
}

#[tokio::test]
async fn a_null_user_is_found_through_its_membership() {
    let s = configured().await;
    assert_eq!(s.status_of("user_alice").await, 200);
    s.mock.set_membership_status("mem_alice00000001", MembershipStatus::Expired).unwrap();
    s.mock.reset_calls();
    let body = event("membership.deactivated", json!({"id": "mem_alice00000001", "user": null}));
    let (status, answer) = s.deliver(&standard(SECRET.as_bytes(), "msg_null", now(), &body), &body).await;
    assert_eq!((status, answer), (200, json!({"result": "applied"})));
    assert_eq!(s.mock.calls(EndpointKind::Membership), 1, "one lookup of the membership");
    assert_eq!(s.status_of("user_alice").await, 403);
}

#[tokio::test]
async fn other_events_are_acknowledged_and_the_endpoint_takes_only_signed_posts() {
    let s = configured().await;
    let body = event("invoice.paid", json!({"id": "inv_1"}));
    let (status, answer) = s.deliver(&standard(SECRET.as_bytes(), "msg_other", now(), &body), &body).await;
    assert_eq!((status, answer), (200, json!({"result": "ignored"})));
    let get = s.client.get(s.gate.url("/.whopgate/webhook")).send().await.unwrap();
    assert_eq!(get.status().as_u16(), 405);
    assert_eq!(get.headers()["allow"], "POST");
    let huge = "x".repeat(300 * 1024);
    let (status, _) = s.deliver(&standard(SECRET.as_bytes(), "msg_huge", now(), &huge), &huge).await;
    assert_eq!(status, 413);

    let off = setup("").await;
    let (status, answer) = off.deliver(&standard(SECRET.as_bytes(), "msg_off", now(), &body), &body).await;
    assert_eq!(status, 404, "{answer}");
}
