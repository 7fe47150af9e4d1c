//! Whop user tokens: every bad token is a 401 `invalid_credentials`; key rotation and the JWKS
//! refetch limit.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use whopgate_mock::{EndpointKind, MockState, MockWhop, TokenOptions};

use crate::support::{Upstream, Whopgate, gated_config};

const ROUTES: &str = r#"
[[route]]
path = "/public"
public = true

[[route]]
path = "/"
require = ["prod_mockproduct1"]
"#;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn claims(mock: &MockWhop) -> serde_json::Value {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    serde_json::json!({"iss": "urn:whopcom:exp-proxy", "sub": "user_alice", "aud": mock.app_id(), "iat": now, "exp": now + 3600})
}

/// A token with any header, signed by `sign` over the signing input.
fn hand_made(header: serde_json::Value, claims: &serde_json::Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let signature = sign(input.as_bytes());
    format!("{input}.{}", b64(&signature))
}

async fn status_with_token(gate: &Whopgate, token: &str) -> (u16, serde_json::Value, Option<String>) {
    let r = reqwest::Client::new()
        .get(gate.url("/app"))
        .header("x-whop-user-token", token)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let auth = r.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
    let body = r.json().await.unwrap_or(serde_json::Value::Null);
    (status, body, auth)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_token_is_401_invalid_credentials() {
    let up = Upstream::start().await;
    let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default()).unwrap();
    let gate = Whopgate::start(&gated_config(&up.url(), &mock, "", ROUTES));
    let good = mock.mint_token("user_alice").unwrap();
    assert_eq!(status_with_token(&gate, &good).await.0, 200, "a good token must pass");

    let public_pem = mock.public_key_pem().unwrap();
    let base = claims(&mock);
    let mut aud_array = base.clone();
    aud_array["aud"] = serde_json::json!([mock.app_id()]);
    let cases: Vec<(&str, String)> = vec![
        (
            "bad signature (a key not in the JWKS)",
            mock.mint_token_with("user_alice", TokenOptions::foreign_key()).unwrap(),
        ),
        ("expired", mock.mint_token_with("user_alice", TokenOptions::expired()).unwrap()),
        ("wrong iss", mock.mint_token_with("user_alice", TokenOptions::issuer("urn:evil")).unwrap()),
        ("wrong aud", mock.mint_token_with("user_alice", TokenOptions::audience("app_someoneelse00")).unwrap()),
        ("aud as an array", mock.mint_token_with("user_alice", TokenOptions::audience_array([mock.app_id()])).unwrap()),
        ("alg none", hand_made(serde_json::json!({"alg": "none", "typ": "JWT"}), &base, |_| Vec::new())),
        (
            "HS256 signed with the public key's bytes",
            jsonwebtoken::encode(
                &jsonwebtoken::Header {
                    kid: Some("mock-key-1".into()),
                    ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
                },
                &base,
                &jsonwebtoken::EncodingKey::from_secret(public_pem.as_bytes()),
            )
            .unwrap(),
        ),
        ("RS256", hand_made(serde_json::json!({"alg": "RS256", "kid": "mock-key-1"}), &base, |_| vec![7u8; 256])),
        ("truncated", good[..good.len() - 10].to_owned()),
        ("garbage", "not.a.token".to_owned()),
        ("one segment", "garbage".to_owned()),
        (
            "aud array hand-made",
            hand_made(serde_json::json!({"alg": "ES256", "kid": "mock-key-1"}), &aud_array, |_| vec![1u8; 64]),
        ),
    ];
    for (what, token) in cases {
        let (status, body, auth) = status_with_token(&gate, &token).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(body["error"], "invalid_credentials", "{what}: {body}");
        assert_eq!(auth.as_deref(), Some(r#"Bearer realm="whopgate", error="invalid_token""#), "{what}");
        let text = body.to_string();
        assert!(!text.contains(&token), "{what}: the token was echoed");
    }
    assert_eq!(up.seen().len(), 1, "only the good token's request reaches the upstream");
    // Nothing secret in the logs either.
    for line in gate.logs() {
        assert!(!line.contains(&good[good.len() - 20..]), "a token in the log: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_accepted_after_one_refetch() {
    let up = Upstream::start().await;
    let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default()).unwrap();
    let gate = Whopgate::start(&gated_config(&up.url(), &mock, "", ROUTES));
    assert_eq!(status_with_token(&gate, &mock.mint_token("user_alice").unwrap()).await.0, 200);
    let fetched = mock.calls(EndpointKind::Jwks);
    assert_eq!(fetched, 1, "the JWKS is fetched once at start");

    mock.rotate_key(true).unwrap();
    let rotated = mock.mint_token("user_alice").unwrap();
    assert_eq!(status_with_token(&gate, &rotated).await.0, 200);
    assert_eq!(mock.calls(EndpointKind::Jwks), fetched + 1, "exactly one refetch for the new key");
    assert_eq!(status_with_token(&gate, &rotated).await.0, 200);
    assert_eq!(mock.calls(EndpointKind::Jwks), fetched + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_kids_refetches_at_most_once_per_interval() {
    let up = Upstream::start().await;
    let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default()).unwrap();
    let gate = Whopgate::start(&gated_config(&up.url(), &mock, "", ROUTES));
    let before = mock.calls(EndpointKind::Jwks);
    let client = reqwest::Client::new();
    let requests = (0..300).map(|i| {
        let token = mock.mint_token_with("user_alice", TokenOptions::with_kid(format!("unknown-kid-{i}"))).unwrap();
        let client = client.clone();
        let url = gate.url("/app");
        tokio::spawn(async move {
            client.get(url).header("x-whop-user-token", token).send().await.unwrap().status().as_u16()
        })
    });
    for request in requests.collect::<Vec<_>>() {
        assert_eq!(request.await.unwrap(), 401);
    }
    let refetches = mock.calls(EndpointKind::Jwks) - before;
    assert!(refetches <= 1, "{refetches} JWKS refetches for a flood of unknown kids");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(mock.calls(EndpointKind::Jwks) - before <= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dev_query_parameter_works_only_when_enabled_and_never_reaches_the_upstream() {
    let up = Upstream::start().await;
    let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default()).unwrap();
    let token = mock.mint_token("user_alice").unwrap();
    let off = Whopgate::start(&gated_config(&up.url(), &mock, "", ROUTES));
    let r = reqwest::get(off.url(&format!("/app?x=1&whop-dev-user-token={token}"))).await.unwrap();
    assert_eq!(r.status(), 401);

    let on_routes = format!("{ROUTES}\n[identity.user_token]\naccept_query_param = true\n");
    let on = Whopgate::start(&gated_config(&up.url(), &mock, "", &on_routes));
    let r = reqwest::get(on.url(&format!("/app?x=1&whop-dev-user-token={token}&y=2"))).await.unwrap();
    assert_eq!(r.status(), 200);
    let seen = up.last();
    assert_eq!(seen.target, "/app?x=1&y=2");
    assert_eq!(seen.header("x-whop-user-id"), ["user_alice"]);
}
