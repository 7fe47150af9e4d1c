//! The control API under `/_mock/`: JSON in, JSON out, no API key. It is the HTTP face of the
//! methods of [`super::MockWhop`], for people who run the mock as a process. Endpoints are
//! documented in the module docs of [the crate](crate).

use http::{Method, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::MockError;
use super::faults::{Fault, FaultScope};
use super::http::{Query, Reply};
use super::keys::TokenOptions;
use super::runtime::Inner;
use super::state::{AccessLevel, MockState};

/// Control bodies are small; a state with thousands of memberships still fits.
const MAX_BODY: usize = 4 << 20;

impl From<MockError> for Reply {
    fn from(e: MockError) -> Reply {
        match e {
            MockError::NotFound(_) => Reply::not_found(e.to_string()),
            MockError::BadRequest(_) | MockError::InvalidState(_) => Reply::bad_request(e.to_string()),
            MockError::Io { .. } | MockError::Crypto(_) => {
                Reply::error(StatusCode::INTERNAL_SERVER_ERROR, "internal_server_error", e.to_string())
            }
        }
    }
}

pub(crate) async fn handle(inner: &Inner, method: &Method, path: &str, query: &Query, body: Incoming) -> Reply {
    let sub = path.trim_start_matches("/_mock").trim_end_matches('/');
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Reply::bad_request(format!("could not read the body: {e}")),
    };
    let result = match (sub, method) {
        ("", &Method::GET) => Ok(Reply::ok(index())),
        ("/state", &Method::GET) => Ok(Reply::ok(json!(inner.state()))),
        ("/state", &Method::PUT) => {
            MockState::from_json(&body).and_then(|s| inner.replace_state(s)).map(|()| Reply::ok(json!(inner.state())))
        }
        ("/reset", &Method::POST) => inner.reset().map(|()| ok()),
        ("/access", &Method::POST) => set_access(inner, &body),
        ("/memberships", &Method::POST) => {
            parse::<Value>(&body).and_then(|patch| inner.patch_membership(patch)).map(|m| Reply::ok(json!(m)))
        }
        ("/faults", &Method::GET) => Ok(Reply::ok(inner.faults_json())),
        ("/faults", &Method::POST) => set_fault(inner, &body),
        ("/faults", &Method::DELETE) => clear_faults(inner, query),
        ("/rate_limit", &Method::PUT) => set_rate_limit(inner, &body),
        ("/calls", &Method::GET) => {
            let last = inner.last_api_version_date();
            Ok(Reply::ok(inner.calls().to_json(inner.started, last.as_deref())))
        }
        ("/calls", &Method::DELETE) => {
            inner.calls().reset();
            Ok(ok())
        }
        ("/token", &Method::POST) => token(inner, &body),
        ("/keys/rotate", &Method::POST) => rotate(inner, &body),
        ("/oauth", &Method::GET) => Ok(oauth(inner)),
        ("/oauth/login_as", &Method::POST) => login_as(inner, &body),
        (
            "" | "/state" | "/reset" | "/access" | "/memberships" | "/faults" | "/rate_limit" | "/calls" | "/token"
            | "/keys/rotate" | "/oauth" | "/oauth/login_as",
            _,
        ) => Ok(Reply::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed on {path}; GET /_mock lists the control API"),
        )),
        _ => Ok(Reply::not_found(format!("No control endpoint {path}; GET /_mock lists them"))),
    };
    result.unwrap_or_else(Reply::from)
}

fn ok() -> Reply {
    Reply::ok(json!({ "ok": true }))
}

/// Parses a JSON body; an empty body reads as `{}` so that bodiless POSTs take the defaults.
fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, MockError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { body };
    serde_json::from_slice(body).map_err(|e| MockError::BadRequest(format!("JSON body: {e}")))
}

fn index() -> Value {
    json!({
        "endpoints": [
            "GET /_mock/state",
            "PUT /_mock/state",
            "POST /_mock/reset",
            "POST /_mock/access {user_id, resource_id, access_level|null}",
            "POST /_mock/memberships {id?, user_id?, product_id?, status?, license_key?, …}",
            "GET /_mock/faults",
            "POST /_mock/faults {endpoint: all|access|membership|jwks|members|memberships_v2|memberships_v5|oauth_authorize|oauth_token|oauth_userinfo, fault: {type: latency|error|hang|rate_limited, …}}",
            "DELETE /_mock/faults[?endpoint=…]",
            "PUT /_mock/rate_limit {per_minute: N|null}",
            "GET /_mock/calls",
            "DELETE /_mock/calls",
            "POST /_mock/token {user_id, ttl?, expired?, iss?, aud?, no_kid?, kid?, sign_with?, foreign_key?}",
            "POST /_mock/keys/rotate {drop_old?, kid?, private_key?}",
            "GET /_mock/oauth",
            "POST /_mock/oauth/login_as {user_id}",
        ]
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessBody {
    user_id: String,
    resource_id: String,
    /// `null` or absent removes the override.
    #[serde(default)]
    access_level: Option<AccessLevel>,
}

fn set_access(inner: &Inner, body: &[u8]) -> Result<Reply, MockError> {
    let b: AccessBody = parse(body)?;
    inner.set_access(&b.user_id, &b.resource_id, b.access_level)?;
    let level = inner.with_world(|w| w.state.access_level(&b.user_id, &b.resource_id)).unwrap_or(AccessLevel::NoAccess);
    Ok(Reply::ok(json!({
        "user_id": b.user_id,
        "resource_id": b.resource_id,
        "has_access": level.has_access(),
        "access_level": level.as_str(),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultBody {
    #[serde(default = "all")]
    endpoint: String,
    fault: Fault,
}

fn all() -> String {
    "all".to_owned()
}

fn set_fault(inner: &Inner, body: &[u8]) -> Result<Reply, MockError> {
    let b: FaultBody = parse(body)?;
    let scope: FaultScope = b.endpoint.parse()?;
    inner.set_fault(scope, b.fault)?;
    Ok(Reply::ok(inner.faults_json()))
}

fn clear_faults(inner: &Inner, query: &Query) -> Result<Reply, MockError> {
    match query.get("endpoint") {
        Some(e) => inner.clear_fault(e.parse()?),
        None => inner.clear_faults(),
    }
    Ok(Reply::ok(inner.faults_json()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitBody {
    per_minute: Option<u32>,
}

fn set_rate_limit(inner: &Inner, body: &[u8]) -> Result<Reply, MockError> {
    let b: RateLimitBody = parse(body)?;
    inner.set_rate_limit(b.per_minute)?;
    Ok(Reply::ok(json!({ "per_minute": b.per_minute })))
}

fn token(inner: &Inner, body: &[u8]) -> Result<Reply, MockError> {
    let mut v: Value = parse(body)?;
    let user = match v.as_object_mut().and_then(|o| o.remove("user_id")) {
        Some(Value::String(u)) => u,
        _ => {
            return Err(MockError::BadRequest("user_id (a string) is required".into()));
        }
    };
    let opts: TokenOptions =
        serde_json::from_value(v).map_err(|e| MockError::BadRequest(format!("token options: {e}")))?;
    let token = inner.mint(&user, &opts)?;
    Ok(Reply::ok(json!({ "token": token })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    #[serde(default)]
    drop_old: bool,
    kid: Option<String>,
    private_key: Option<String>,
}

fn rotate(inner: &Inner, body: &[u8]) -> Result<Reply, MockError> {
    let b: RotateBody = parse(body)?;
    let kid = inner.rotate_key(b.drop_old, b.kid, b.private_key)?;
    let jwks = inner.with_world(|w| w.keys.jwks());
    Ok(Reply::ok(json!({ "kid": kid, "jwks": jwks })))
}

/// `GET /_mock/oauth`: who authorize signs in, and the codes issued.
fn oauth(inner: &Inner) -> Reply {
    let login_as = inner.with_world(|w| w.state.oauth.login_as.clone());
    Reply::ok(json!({ "login_as": login_as, "codes": inner.issued_codes() }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginAsBody {
    user_id: String,
}

fn login_as(inner: &Inner, body: &[u8]) -> Result<Reply, MockError> {
    let b: LoginAsBody = parse(body)?;
    let id = inner.set_login_as(&b.user_id)?;
    Ok(Reply::ok(json!({ "login_as": id })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_bodies_read_as_empty_objects() {
        let b: RotateBody = parse(b"  ").unwrap();
        assert!(!b.drop_old);
        assert!(parse::<RotateBody>(b"{\"drop\":true}").is_err());
    }

    #[test]
    fn errors_map_to_statuses() {
        assert_eq!(Reply::from(MockError::NotFound("x".into())).status, 404);
        assert_eq!(Reply::from(MockError::BadRequest("x".into())).status, 400);
        assert_eq!(Reply::from(MockError::InvalidState("x".into())).status, 400);
        assert_eq!(Reply::from(MockError::Crypto("x".into())).status, 500);
    }
}
