//! "Sign in with Whop" over real TCP, as whopgate's `/login` and `/callback` will use it:
//! redirects are never followed, so every `302` is looked at.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Url;
use reqwest::header::{CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};

use super::*;

/// Like the `client()` of the other tests, but a `302` is an answer, not an instruction.
fn browser() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

const CALLBACK: &str = "http://127.0.0.1:8080/.whopgate/callback";
/// Spaces, reserved characters and non-ASCII: it must come back exactly.
const STATE: &str = "st/ate a+b&c=d?é%";

/// One login attempt's secrets, as the gate's `/login` makes them.
struct Pkce {
    verifier: String,
    challenge: String,
}

impl Pkce {
    fn new() -> Pkce {
        let verifier = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
        let challenge = URL_SAFE_NO_PAD.encode(digest.as_ref());
        Pkce { verifier, challenge }
    }
}

fn encode(params: &[(&str, &str)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, NON_ALPHANUMERIC)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The authorize parameters whopgate sends, for `client_id` and `challenge`.
fn authorize_params<'a>(client_id: &'a str, challenge: &'a str) -> Params<'a> {
    vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", CALLBACK),
        ("scope", "openid profile email"),
        ("state", STATE),
        ("nonce", "n-0S6_WzA2Mj"),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ]
}

/// Query parameters, in order.
type Params<'a> = Vec<(&'a str, &'a str)>;

/// `params` with `name` replaced by `value` (or removed when `None`).
fn with<'a>(mut params: Params<'a>, name: &'a str, value: Option<&'a str>) -> Params<'a> {
    params.retain(|(k, _)| *k != name);
    params.extend(value.map(|v| (name, v)));
    params
}

async fn authorize(mock: &MockWhop, params: &[(&str, &str)]) -> reqwest::Response {
    browser().get(format!("{}/oauth/authorize?{}", mock.base_url(), encode(params))).send().await.unwrap()
}

/// The `Location` of a `302`, split into the URI before the query and the decoded parameters.
fn redirected(resp: &reqwest::Response) -> (String, HashMap<String, String>) {
    assert_eq!(resp.status(), StatusCode::FOUND);
    let location = resp.headers()[LOCATION].to_str().unwrap();
    let url = Url::parse(location).unwrap();
    let params = url.query_pairs().into_owned().collect();
    let base = location.split('?').next().unwrap().to_owned();
    (base, params)
}

/// An authorize answered without a redirect: 400 and an OAuth error.
async fn refused_here(resp: reqwest::Response, error: &str) {
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.headers().get(LOCATION).is_none(), "must not redirect");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], error, "{body}");
    assert!(body["error_description"].as_str().unwrap().len() > 5, "{body}");
}

/// An authorize answered with an error redirect carrying the state back.
fn refused_by_redirect(resp: &reqwest::Response, error: &str) -> String {
    let (base, params) = redirected(resp);
    assert_eq!(base, CALLBACK);
    assert_eq!(params.get("error").map(String::as_str), Some(error), "{params:?}");
    assert_eq!(params.get("state").map(String::as_str), Some(STATE));
    assert!(!params.contains_key("code"));
    params["error_description"].clone()
}

/// A code for the default client and `pkce`.
async fn code_for(mock: &MockWhop, pkce: &Pkce) -> String {
    let resp = authorize(mock, &authorize_params(DEFAULT_APP_ID, &pkce.challenge)).await;
    let (_, params) = redirected(&resp);
    params["code"].clone()
}

async fn token(mock: &MockWhop, body: Value) -> Answer {
    let a = send(client().post(format!("{}/oauth/token", mock.base_url())).json(&body)).await;
    assert_eq!(a.headers["cache-control"], "no-store");
    a
}

fn exchange_body(code: &str, pkce: &Pkce) -> Value {
    json!({
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": CALLBACK,
        "client_id": DEFAULT_APP_ID,
        "code_verifier": pkce.verifier,
    })
}

fn assert_oauth_error(a: &Answer, status: u16, error: &str) {
    assert_eq!(a.status, status, "{}", a.body);
    assert_eq!(a.body["error"], error, "{}", a.body);
    assert!(a.body["error_description"].is_string(), "{}", a.body);
}

async fn userinfo(mock: &MockWhop, access_token: Option<&str>) -> Answer {
    let mut req = client().get(format!("{}/oauth/userinfo", mock.base_url()));
    if let Some(t) = access_token {
        req = req.bearer_auth(t);
    }
    send(req).await
}

/// Signs in through the whole flow; answers the token response.
async fn sign_in(mock: &MockWhop) -> Value {
    let pkce = Pkce::new();
    let code = code_for(mock, &pkce).await;
    let a = token(mock, exchange_body(&code, &pkce)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    a.body
}

#[derive(Debug, Deserialize)]
struct IdClaims {
    iss: String,
    sub: String,
    aud: String,
    iat: u64,
    exp: u64,
    nonce: Option<String>,
}

/// Verifies an id_token as an OpenID client would: key from the JWKS by kid, ES256, iss, aud.
async fn verify_id_token(mock: &MockWhop, id_token: &str, client_id: &str) -> IdClaims {
    let key = jwks_key(mock, id_token).await.unwrap();
    let mut v = Validation::new(Algorithm::ES256);
    v.set_issuer(&[mock.base_url()]);
    v.set_audience(&[client_id]);
    v.leeway = 0;
    decode::<IdClaims>(id_token, &key, &v).unwrap().claims
}

#[tokio::test]
async fn the_whole_flow_signs_alice_in() {
    let mock = start();
    let pkce = Pkce::new();
    let resp = authorize(&mock, &authorize_params(DEFAULT_APP_ID, &pkce.challenge)).await;
    let (base, params) = redirected(&resp);
    assert_eq!(base, CALLBACK);
    assert_eq!(params["state"], STATE, "state comes back verbatim");
    let code = params["code"].clone();
    assert!(code.len() >= 43, "{code}");
    assert_eq!(params.len(), 2, "{params:?}");
    assert!(resp.headers().get(CONTENT_TYPE).is_none(), "a redirect has no body");

    // What the client asked for is on record.
    let issued = mock.issued_codes();
    assert_eq!(issued.len(), 1);
    let c = &issued[0];
    assert_eq!(c.code, code);
    assert_eq!(c.client_id, DEFAULT_APP_ID);
    assert_eq!(c.redirect_uri, CALLBACK);
    assert_eq!(c.user_id, "user_alice");
    assert_eq!(c.scope, "openid profile email");
    assert_eq!(c.state.as_deref(), Some(STATE));
    assert_eq!(c.nonce.as_deref(), Some("n-0S6_WzA2Mj"));
    assert_eq!(c.code_challenge, pkce.challenge);
    assert!(!c.redeemed && !c.expired);

    let a = token(&mock, exchange_body(&code, &pkce)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let mut keys: Vec<&str> = a.body.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["access_token", "expires_in", "id_token", "refresh_token", "token_type"]);
    assert_eq!(a.body["token_type"], "Bearer");
    assert_eq!(a.body["expires_in"], 3600);
    assert_ne!(a.body["access_token"], a.body["refresh_token"]);
    assert!(mock.issued_codes()[0].redeemed);

    let id_token = a.body["id_token"].as_str().unwrap();
    assert_eq!(decode_header(id_token).unwrap().kid.as_deref(), Some("mock-key-1"));
    let claims = verify_id_token(&mock, id_token, DEFAULT_APP_ID).await;
    assert_eq!(claims.iss, mock.base_url());
    assert_eq!(claims.sub, "user_alice");
    assert_eq!(claims.aud, DEFAULT_APP_ID);
    assert_eq!(claims.nonce.as_deref(), Some("n-0S6_WzA2Mj"));
    assert_eq!(claims.exp - claims.iat, 3600);

    let u = userinfo(&mock, a.body["access_token"].as_str()).await;
    assert_eq!(u.status, 200);
    assert_eq!(
        u.body,
        json!({"sub": "user_alice", "name": "Alice Customer", "preferred_username": "alice", "email": "alice@example.com"})
    );
    // OpenID Connect lets userinfo be POSTed too.
    let u = send(
        client()
            .post(format!("{}/oauth/userinfo", mock.base_url()))
            .bearer_auth(a.body["access_token"].as_str().unwrap()),
    )
    .await;
    assert_eq!(u.body["sub"], "user_alice");

    assert_eq!(mock.calls(EndpointKind::OauthAuthorize), 1);
    assert_eq!(mock.calls(EndpointKind::OauthToken), 1);
    assert_eq!(mock.calls(EndpointKind::OauthUserinfo), 2);
}

#[tokio::test]
async fn scopes_decide_the_userinfo_fields_and_the_nonce_is_optional() {
    let mock = start();
    let pkce = Pkce::new();
    let params = with(authorize_params(DEFAULT_APP_ID, &pkce.challenge), "scope", Some("openid"));
    let params = with(params, "nonce", None);
    let (_, got) = redirected(&authorize(&mock, &params).await);
    let a = token(&mock, exchange_body(&got["code"], &pkce)).await;
    let claims = verify_id_token(&mock, a.body["id_token"].as_str().unwrap(), DEFAULT_APP_ID).await;
    assert_eq!(claims.nonce, None);
    let u = userinfo(&mock, a.body["access_token"].as_str()).await;
    assert_eq!(u.body, json!({"sub": "user_alice"}));

    // A user without name or email: only what exists.
    mock.set_login_as("user_bob").unwrap();
    let mut state = mock.state();
    state.users.iter_mut().find(|u| u.id == "user_bob").unwrap().name = None;
    state.users.iter_mut().find(|u| u.id == "user_bob").unwrap().email = None;
    mock.replace_state(state).unwrap();
    let body = sign_in(&mock).await;
    let u = userinfo(&mock, body["access_token"].as_str()).await;
    assert_eq!(u.body, json!({"sub": "user_bob", "preferred_username": "bob"}));
}

#[tokio::test]
async fn the_redirect_keeps_its_query_and_state_is_optional() {
    let mock = start();
    let pkce = Pkce::new();
    let cb = "http://localhost:3000/cb?from=app";
    let params = with(authorize_params(DEFAULT_APP_ID, &pkce.challenge), "redirect_uri", Some(cb));
    let params = with(params, "state", None);
    let resp = authorize(&mock, &params).await;
    let location = resp.headers()[LOCATION].to_str().unwrap().to_owned();
    assert!(location.starts_with("http://localhost:3000/cb?from=app&code="), "{location}");
    let (_, got) = redirected(&resp);
    assert!(!got.contains_key("state"));
    let mut body = exchange_body(&got["code"], &pkce);
    body["redirect_uri"] = json!(cb);
    assert_eq!(token(&mock, body).await.status, 200);
}

#[tokio::test]
async fn a_wrong_verifier_is_invalid_grant_and_uses_the_code_up() {
    let mock = start();
    let pkce = Pkce::new();
    let code = code_for(&mock, &pkce).await;
    let other = Pkce::new();
    let a = token(&mock, exchange_body(&code, &other)).await;
    assert_oauth_error(&a, 400, "invalid_grant");
    assert!(a.body["error_description"].as_str().unwrap().contains("code_verifier"));
    // One attempt per code: guessing is not an option.
    let a = token(&mock, exchange_body(&code, &pkce)).await;
    assert_oauth_error(&a, 400, "invalid_grant");

    // A verifier that is no verifier at all is a malformed request, and leaves the code alone.
    let code = code_for(&mock, &pkce).await;
    let mut body = exchange_body(&code, &pkce);
    body["code_verifier"] = json!("too-short");
    assert_oauth_error(&token(&mock, body).await, 400, "invalid_request");
    assert_eq!(token(&mock, exchange_body(&code, &pkce)).await.status, 200);
}

#[tokio::test]
async fn a_replayed_code_is_refused_and_revokes_what_it_bought() {
    let mock = start();
    let pkce = Pkce::new();
    let code = code_for(&mock, &pkce).await;
    let first = token(&mock, exchange_body(&code, &pkce)).await;
    assert_eq!(first.status, 200);
    let access = first.body["access_token"].as_str().unwrap();
    assert_eq!(userinfo(&mock, Some(access)).await.status, 200);

    let again = token(&mock, exchange_body(&code, &pkce)).await;
    assert_oauth_error(&again, 400, "invalid_grant");
    assert!(again.body["error_description"].as_str().unwrap().contains("already used"));

    let u = userinfo(&mock, Some(access)).await;
    assert_eq!(u.status, 401);
    assert_eq!(u.body["error"], "invalid_token");
    assert!(u.headers[WWW_AUTHENTICATE].to_str().unwrap().contains("revoked"));
    let refresh = token(
        &mock,
        json!({"grant_type": "refresh_token", "refresh_token": first.body["refresh_token"], "client_id": DEFAULT_APP_ID}),
    )
    .await;
    assert_oauth_error(&refresh, 400, "invalid_grant");
}

#[tokio::test]
async fn unknown_expired_or_misdirected_codes_are_invalid_grant() {
    let mock = start_with(MockState {
        oauth: OAuthState { code_ttl: Duration::from_millis(200), ..MockState::default().oauth },
        ..MockState::default()
    });
    let pkce = Pkce::new();
    let a = token(&mock, exchange_body("no-such-code", &pkce)).await;
    assert_oauth_error(&a, 400, "invalid_grant");

    let code = code_for(&mock, &pkce).await;
    let mut body = exchange_body(&code, &pkce);
    body["redirect_uri"] = json!("http://127.0.0.1:8080/.whopgate/callback/");
    let a = token(&mock, body).await;
    assert_oauth_error(&a, 400, "invalid_grant");
    assert!(a.body["error_description"].as_str().unwrap().contains("redirect_uri"));

    let code = code_for(&mock, &pkce).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(mock.issued_codes()[1].expired);
    let a = token(&mock, exchange_body(&code, &pkce)).await;
    assert_oauth_error(&a, 400, "invalid_grant");
    assert!(a.body["error_description"].as_str().unwrap().contains("expired"));
}

#[tokio::test]
async fn a_bad_client_or_redirect_uri_is_never_redirected_to() {
    let mut state = MockState::default();
    state.oauth.clients.push(OAuthClient {
        client_id: "app_registered001".into(),
        client_secret: None,
        redirect_uris: vec!["https://app.example.com/.whopgate/callback".into()],
    });
    let mock = start_with(state);
    let challenge = Pkce::new().challenge;
    let ok = authorize_params(DEFAULT_APP_ID, &challenge);

    refused_here(authorize(&mock, &with(ok.clone(), "client_id", Some("app_nobody0000001"))).await, "invalid_client")
        .await;
    refused_here(authorize(&mock, &with(ok.clone(), "client_id", None)).await, "invalid_request").await;
    refused_here(authorize(&mock, &with(ok.clone(), "redirect_uri", None)).await, "invalid_request").await;
    // A client without registered URIs takes loopback ones only.
    for uri in [
        "https://evil.example/cb",
        "http://127.0.0.1.evil.example/cb",
        "http://localhost@evil.example/cb",
        "http://127.0.0.1/cb#fragment",
        "/relative",
    ] {
        refused_here(authorize(&mock, &with(ok.clone(), "redirect_uri", Some(uri))).await, "invalid_request").await;
    }
    // A client with registered URIs takes exactly those.
    let registered = with(ok.clone(), "client_id", Some("app_registered001"));
    refused_here(authorize(&mock, &registered).await, "invalid_request").await;
    let registered = with(registered, "redirect_uri", Some("https://app.example.com/.whopgate/callback"));
    let (base, params) = redirected(&authorize(&mock, &registered).await);
    assert_eq!(base, "https://app.example.com/.whopgate/callback");
    assert!(params.contains_key("code"));
    // Even a bad request with a good client redirects only once the URI is known good.
    let both_bad = with(with(ok, "redirect_uri", Some("https://evil.example/cb")), "response_type", None);
    refused_here(authorize(&mock, &both_bad).await, "invalid_request").await;
}

#[tokio::test]
async fn authorize_errors_redirect_with_the_state() {
    let mock = start();
    let challenge = Pkce::new().challenge;
    let ok = authorize_params(DEFAULT_APP_ID, &challenge);
    let cases: Vec<(&str, Params, &str)> = vec![
        ("plain", with(ok.clone(), "code_challenge_method", Some("plain")), "invalid_request"),
        ("no method", with(ok.clone(), "code_challenge_method", None), "invalid_request"),
        ("no challenge", with(ok.clone(), "code_challenge", None), "invalid_request"),
        (
            "padded challenge",
            with(ok.clone(), "code_challenge", Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM=")),
            "invalid_request",
        ),
        ("token flow", with(ok.clone(), "response_type", Some("token")), "unsupported_response_type"),
        ("no response_type", with(ok.clone(), "response_type", None), "invalid_request"),
        ("no openid", with(ok.clone(), "scope", Some("profile email")), "invalid_scope"),
        ("no scope", with(ok.clone(), "scope", None), "invalid_scope"),
    ];
    for (what, params, error) in cases {
        let resp = authorize(&mock, &params).await;
        let description = refused_by_redirect(&resp, error);
        assert!(!description.is_empty(), "{what}");
        if what == "plain" {
            assert!(description.contains("S256"), "{description}");
        }
    }
    let mut repeated = ok.clone();
    repeated.push(("nonce", "second"));
    refused_by_redirect(&authorize(&mock, &repeated).await, "invalid_request");
    assert!(mock.issued_codes().is_empty(), "no code for a refused request");
}

#[tokio::test]
async fn the_token_endpoint_takes_json_only() {
    let mock = start();
    let pkce = Pkce::new();
    let code = code_for(&mock, &pkce).await;
    let url = format!("{}/oauth/token", mock.base_url());
    let form = encode(&[
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", CALLBACK),
        ("client_id", DEFAULT_APP_ID),
        ("code_verifier", &pkce.verifier),
    ]);
    let a = send(client().post(&url).header(CONTENT_TYPE, "application/x-www-form-urlencoded").body(form)).await;
    assert_oauth_error(&a, 400, "invalid_request");
    let description = a.body["error_description"].as_str().unwrap();
    assert!(description.contains("JSON"), "{description}");
    assert!(description.contains("application/x-www-form-urlencoded"), "{description}");

    let a = send(client().post(&url).header(CONTENT_TYPE, "application/json").body("{not json")).await;
    assert_oauth_error(&a, 400, "invalid_request");
    let a = token(&mock, json!(["grant_type"])).await;
    assert_oauth_error(&a, 400, "invalid_request");
    let mut body = exchange_body(&code, &pkce);
    body["grant_type"] = json!("password");
    assert_oauth_error(&token(&mock, body).await, 400, "unsupported_grant_type");
    let mut body = exchange_body(&code, &pkce);
    body["code"] = json!(42);
    assert_oauth_error(&token(&mock, body).await, 400, "invalid_request");
    for missing in ["code", "redirect_uri", "client_id", "code_verifier", "grant_type"] {
        let mut body = exchange_body(&code, &pkce);
        body.as_object_mut().unwrap().remove(missing);
        let a = token(&mock, body).await;
        assert_oauth_error(&a, 400, "invalid_request");
        assert!(a.body["error_description"].as_str().unwrap().contains(missing), "{missing}");
    }
    // None of that touched the code; a charset parameter and unknown fields are fine.
    let mut body = exchange_body(&code, &pkce);
    body["extra"] = json!("ignored");
    let a =
        send(client().post(&url).header(CONTENT_TYPE, "application/json; charset=utf-8").body(body.to_string())).await;
    assert_eq!(a.status, 200, "{}", a.body);
}

#[tokio::test]
async fn confidential_clients_need_their_secret() {
    let mut state = MockState::default();
    state.oauth.clients.push(OAuthClient {
        client_id: "app_confidential01".into(),
        client_secret: Some("s3cret".into()),
        redirect_uris: vec![CALLBACK.into()],
    });
    let mock = start_with(state);
    let pkce = Pkce::new();
    let (_, params) = redirected(&authorize(&mock, &authorize_params("app_confidential01", &pkce.challenge)).await);
    let code = &params["code"];
    let mut body = exchange_body(code, &pkce);
    body["client_id"] = json!("app_confidential01");
    for secret in [None, Some("wrong"), Some("")] {
        let mut b = body.clone();
        if let Some(s) = secret {
            b["client_secret"] = json!(s);
        }
        let a = token(&mock, b).await;
        assert_oauth_error(&a, 401, "invalid_client");
    }
    // The refused attempts left the code usable.
    body["client_secret"] = json!("s3cret");
    let a = token(&mock, body).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let claims = verify_id_token(&mock, a.body["id_token"].as_str().unwrap(), "app_confidential01").await;
    assert_eq!(claims.aud, "app_confidential01");

    // A code of one client is no good to another.
    let (_, params) = redirected(&authorize(&mock, &authorize_params("app_confidential01", &pkce.challenge)).await);
    let a = token(&mock, exchange_body(&params["code"], &pkce)).await;
    assert_oauth_error(&a, 400, "invalid_grant");

    // A public client must not send a secret, and unknown clients are invalid_client.
    let code = code_for(&mock, &pkce).await;
    let mut body = exchange_body(&code, &pkce);
    body["client_secret"] = json!("s3cret");
    assert_oauth_error(&token(&mock, body).await, 401, "invalid_client");
    let mut body = exchange_body(&code, &pkce);
    body["client_id"] = json!("app_nobody0000001");
    assert_oauth_error(&token(&mock, body).await, 401, "invalid_client");
}

#[tokio::test]
async fn refresh_tokens_buy_new_tokens_once() {
    let mock = start();
    let first = sign_in(&mock).await;
    let refresh = |rt: &Value| json!({"grant_type": "refresh_token", "refresh_token": rt, "client_id": DEFAULT_APP_ID});
    let a = token(&mock, refresh(&first["refresh_token"])).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.get("id_token").is_none());
    assert_eq!(a.body["token_type"], "Bearer");
    assert_ne!(a.body["access_token"], first["access_token"]);
    assert_eq!(userinfo(&mock, a.body["access_token"].as_str()).await.body["sub"], "user_alice");
    // Rotated: the old refresh token is spent; the old access token lives until it expires.
    assert_oauth_error(&token(&mock, refresh(&first["refresh_token"])).await, 400, "invalid_grant");
    assert_eq!(userinfo(&mock, first["access_token"].as_str()).await.status, 200);
    assert_oauth_error(&token(&mock, refresh(&json!("nope"))).await, 400, "invalid_grant");
    assert_oauth_error(&token(&mock, refresh(&first["access_token"])).await, 400, "invalid_grant");
}

#[tokio::test]
async fn userinfo_wants_a_live_access_token() {
    let mock = start_with(MockState {
        oauth: OAuthState { access_token_ttl: Duration::ZERO, ..MockState::default().oauth },
        ..MockState::default()
    });
    let u = userinfo(&mock, None).await;
    assert_eq!(u.status, 401);
    assert_eq!(u.headers[WWW_AUTHENTICATE], "Bearer realm=\"whop\"");
    assert_eq!(u.body["error"], "invalid_token");

    for bad in ["nope", "mock_api_key"] {
        let u = userinfo(&mock, Some(bad)).await;
        assert_eq!(u.status, 401);
        let challenge = u.headers[WWW_AUTHENTICATE].to_str().unwrap();
        assert!(challenge.starts_with("Bearer realm=\"whop\", error=\"invalid_token\""), "{challenge}");
        assert_eq!(u.body["error"], "invalid_token");
        assert!(u.body["error_description"].is_string());
    }
    let u =
        send(client().get(format!("{}/oauth/userinfo", mock.base_url())).header("Authorization", "Basic YWxpY2U6cHc="))
            .await;
    assert_eq!(u.status, 401);

    let body = sign_in(&mock).await;
    assert_eq!(body["expires_in"], 0);
    let u = userinfo(&mock, body["access_token"].as_str()).await;
    assert_eq!(u.status, 401);
    assert!(u.body["error_description"].as_str().unwrap().contains("expired"));
    let u = userinfo(&mock, body["refresh_token"].as_str()).await;
    assert_eq!(u.status, 401, "a refresh token is no access token");
}

#[tokio::test]
async fn login_as_switches_the_user() {
    use reqwest::Method;
    let mock = start();
    assert_eq!(mock.login_as(), "user_alice");
    mock.set_login_as("carol").unwrap();
    assert_eq!(mock.login_as(), "user_carol");
    let body = sign_in(&mock).await;
    let claims = verify_id_token(&mock, body["id_token"].as_str().unwrap(), DEFAULT_APP_ID).await;
    assert_eq!(claims.sub, "user_carol");
    assert_eq!(userinfo(&mock, body["access_token"].as_str()).await.body["email"], "carol@example.com");
    assert!(matches!(mock.set_login_as("user_zed"), Err(MockError::NotFound(_))));

    // The same over HTTP.
    let a = control(&mock, Method::POST, "/_mock/oauth/login_as", json!({"user_id": "user_dave"})).await;
    assert_eq!(a.body, json!({"login_as": "user_dave"}));
    let body = sign_in(&mock).await;
    assert_eq!(userinfo(&mock, body["access_token"].as_str()).await.body["sub"], "user_dave");
    let a = control(&mock, Method::POST, "/_mock/oauth/login_as", json!({"user_id": "user_zed"})).await;
    assert_eq!(a.status, 404);
    let a = control(&mock, Method::POST, "/_mock/oauth/login_as", json!({"user": "user_bob"})).await;
    assert_eq!(a.status, 400);
    let a = control(&mock, Method::GET, "/_mock/oauth", json!({})).await;
    assert_eq!(a.body["login_as"], "user_dave");
    let codes = a.body["codes"].as_array().unwrap();
    assert_eq!(codes.len(), 2);
    assert_eq!(codes[1]["user_id"], "user_dave");
    assert_eq!(codes[1]["redeemed"], true);
    assert_eq!(codes[1]["state"], STATE);
    assert_eq!(mock.state().oauth.login_as, "user_dave", "it is the state's login_as");

    // A reset forgets codes and tokens and goes back to alice.
    mock.reset().unwrap();
    assert!(mock.issued_codes().is_empty());
    assert_eq!(mock.login_as(), "user_alice");
    assert_eq!(userinfo(&mock, body["access_token"].as_str()).await.status, 401);
}

#[tokio::test]
async fn faults_hit_the_oauth_endpoints_too() {
    let mock = start();
    let pkce = Pkce::new();
    let params = authorize_params(DEFAULT_APP_ID, &pkce.challenge);

    mock.set_fault(EndpointKind::OauthAuthorize, Fault::error_times(1));
    let resp = authorize(&mock, &params).await;
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(resp.headers().get(LOCATION).is_none());
    let code = code_for(&mock, &pkce).await;

    mock.set_fault(EndpointKind::OauthToken, Fault::rate_limited_with_header(7));
    let a = send(client().post(format!("{}/oauth/token", mock.base_url())).json(&exchange_body(&code, &pkce))).await;
    assert_eq!(a.status, 429);
    assert_eq!(a.headers["retry-after"], "7");
    assert_eq!(a.body["error"]["type"], "rate_limit_exceeded");
    mock.clear_fault(EndpointKind::OauthToken);
    // The faulted call never reached the code.
    let a = token(&mock, exchange_body(&code, &pkce)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let access = a.body["access_token"].as_str().unwrap().to_owned();

    const LATENCY: Duration = Duration::from_millis(500);
    mock.set_fault(EndpointKind::OauthUserinfo, Fault::latency(LATENCY));
    let t = Instant::now();
    assert_eq!(userinfo(&mock, Some(&access)).await.status, 200);
    assert!(t.elapsed() >= LATENCY);
    mock.clear_faults();

    mock.set_fault(EndpointKind::OauthToken, Fault::hang());
    let hung = client()
        .post(format!("{}/oauth/token", mock.base_url()))
        .json(&exchange_body("whatever", &pkce))
        .timeout(Duration::from_millis(300))
        .send()
        .await
        .unwrap_err();
    assert!(hung.is_timeout(), "{hung}");
    mock.clear_faults();

    // Set over HTTP by name, and counted by name.
    let a = control(
        &mock,
        reqwest::Method::POST,
        "/_mock/faults",
        json!({"endpoint": "oauth_userinfo", "fault": {"type": "error", "status": 503, "times": 1}}),
    )
    .await;
    assert_eq!(a.body["oauth_userinfo"][0]["status"], 503);
    assert_eq!(userinfo(&mock, Some(&access)).await.status, 503);
    let calls = control(&mock, reqwest::Method::GET, "/_mock/calls", json!({})).await.body;
    assert_eq!(calls["by_endpoint"]["oauth_authorize"], 2);
    assert_eq!(calls["by_endpoint"]["oauth_token"], 3);
    assert_eq!(calls["by_endpoint"]["oauth_userinfo"], 2);
}

#[tokio::test]
async fn oauth_state_is_checked() {
    let e = MockState::from_toml("[[oauth.clients]]\nclient_id = \"client1\"").unwrap_err().to_string();
    assert!(e.contains("must start with \"app_\""), "{e}");
    let e =
        MockState::from_toml("[[oauth.clients]]\nclient_id = \"app_a\"\nredirect_uris = [\"https://x.example/cb#f\"]")
            .unwrap_err()
            .to_string();
    assert!(e.contains("oauth.clients[0] (app_a): redirect_uri"), "{e}");
    assert!(e.contains("fragment"), "{e}");
    let e = MockState::from_toml("[oauth]\nlogin_as = \"user_zed\"").unwrap_err().to_string();
    assert!(e.contains("oauth.login_as \"user_zed\""), "{e}");
    let e =
        MockState::from_toml("[[oauth.clients]]\nclient_id = \"app_a\"\nclient_secret = \"\"").unwrap_err().to_string();
    assert!(e.contains("client_secret must not be empty"), "{e}");
    let e = MockState::from_toml("[oauth]\ncode_ttl = \"soon\"").unwrap_err().to_string();
    assert!(e.contains("expected a duration"), "{e}");

    // Left out, [oauth] means: a public client named after app_id, signing in alice or,
    // without her, the first user.
    let s = MockState::from_toml("app_id = \"app_mine00000001\"\n[[users]]\nid = \"user_zoe\"").unwrap();
    assert_eq!(s.oauth.clients, [OAuthClient::public("app_mine00000001")]);
    assert_eq!(s.oauth.login_as, "user_zoe");
    assert_eq!(s.oauth.code_ttl, Duration::from_secs(60));
    let s = MockState::from_toml("[oauth]\nlogin_as = \"bob\"\n[[users]]\nid = \"user_bob\"").unwrap();
    assert_eq!(s.oauth.login_as, "user_bob", "a username is stored as the id");

    // No users at all: authorize says access_denied.
    let mock = start_with(MockState::from_toml("").unwrap());
    let pkce = Pkce::new();
    let resp = authorize(&mock, &authorize_params(DEFAULT_APP_ID, &pkce.challenge)).await;
    refused_by_redirect(&resp, "access_denied");
}

/// The `href` of the link with `id` on a page, HTML entities of `&` undone.
fn link_of(page: &str, id: &str) -> String {
    let start = page.find(&format!("<a id=\"{id}\" href=\"")).unwrap_or_else(|| panic!("no link {id} in {page}"));
    let rest = &page[start + format!("<a id=\"{id}\" href=\"").len()..];
    rest[..rest.find('"').unwrap()].replace("&amp;", "&")
}

#[tokio::test]
async fn the_login_page_lists_the_users_and_a_link_signs_that_user_in() {
    let mut state = MockState::default();
    state.users[1].name = Some("Bob <script>alert(1)</script>".into());
    let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), state).unwrap();
    // Off by default: authorize approves login_as at once.
    let pkce = Pkce::new();
    let (base, _) = redirected(&authorize(&mock, &authorize_params(DEFAULT_APP_ID, &pkce.challenge)).await);
    assert_eq!(base, CALLBACK);

    mock.set_login_page(true).unwrap();
    let resp = authorize(&mock, &authorize_params(DEFAULT_APP_ID, &pkce.challenge)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
    let page = resp.text().await.unwrap();
    assert!(page.contains("Bob &lt;script&gt;alert(1)&lt;/script&gt;"), "names are escaped: {page}");
    assert!(!page.contains("<script>"), "{page}");
    for (user, holds) in [
        ("user_alice", "bought Mock Product One"),
        ("user_bob", "holds nothing"),
        ("user_carol", "on the team of Mock Company"),
        ("user_dave", "holds nothing"),
    ] {
        let item = &page[page.find(&format!("id=\"{user}\"")).unwrap()..];
        assert!(item[..item.find("</li>").unwrap()].contains(holds), "{user} {holds}: {page}");
    }
    assert_eq!(mock.issued_codes().len(), 1, "the page issues no code");

    let carol = link_of(&page, "user_carol");
    let resp = browser().get(format!("{}{carol}", mock.base_url())).send().await.unwrap();
    let (base, params) = redirected(&resp);
    assert_eq!(base, CALLBACK);
    assert_eq!(params.get("state").map(String::as_str), Some(STATE), "the state comes back exactly");
    let issued = mock.issued_codes().pop().unwrap();
    assert_eq!((issued.code.as_str(), issued.user_id.as_str()), (params["code"].as_str(), "user_carol"));
    assert_eq!(issued.code_challenge, pkce.challenge, "the link repeats the request it came from");

    let unknown = with(authorize_params(DEFAULT_APP_ID, &pkce.challenge), "mock_user", Some("user_nobody"));
    refused_by_redirect(&authorize(&mock, &unknown).await, "access_denied");
    let twice = [authorize_params(DEFAULT_APP_ID, &pkce.challenge), vec![("mock_user", "alice"), ("mock_user", "bob")]]
        .concat();
    refused_by_redirect(&authorize(&mock, &twice).await, "invalid_request");
    let by_username = with(authorize_params(DEFAULT_APP_ID, &pkce.challenge), "mock_user", Some("bob"));
    redirected(&authorize(&mock, &by_username).await);
    assert_eq!(mock.issued_codes().pop().unwrap().user_id, "user_bob");
}
