//! "Sign in with Whop": `{prefix}/login`, `{prefix}/callback`, `{prefix}/logout` (SPEC §5).
//!
//! OAuth 2.1 authorization code flow with PKCE (S256) and OIDC scopes. The state, nonce and PKCE
//! verifier travel in a short-lived login cookie bound to the `state` parameter; the code is
//! exchanged with a JSON body; the user comes from userinfo and is kept in an encrypted session
//! cookie. Every redirect target passes [`RedirectPolicy`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;
use http::header::{self, HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};

use super::redirect::RedirectPolicy;
use crate::config::{Config, Secret};
use crate::identity::session::{LoginState, Session, SessionCodec, pkce_challenge};
use crate::metrics::Metrics;
use crate::response::redirect;

/// Why a sign-in did not complete. Each becomes a page saying what to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignInError {
    /// The callback's `state` is missing, forged, expired or from another browser.
    BadState,
    /// The callback carries no code.
    MissingCode,
    /// Whop sent the user back with an error (they declined, or the request was wrong).
    Refused {
        /// The OAuth `error` code.
        error: String,
    },
    /// Whop would not exchange the code (wrong verifier, replayed or expired code…).
    Exchange {
        /// The OAuth `error` code.
        error: String,
    },
    /// Whop could not be reached or answered nonsense.
    Unavailable(String),
}

/// What the token endpoint is sent (SPEC §1: a JSON body).
#[derive(Serialize)]
struct TokenRequest<'a> {
    grant_type: &'static str,
    code: &'a str,
    redirect_uri: &'a str,
    client_id: &'a str,
    code_verifier: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_secret: Option<&'a str>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
}

#[derive(Deserialize)]
struct OAuthErrorBody {
    error: String,
}

#[derive(Deserialize)]
struct UserInfo {
    sub: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    preferred_username: Option<String>,
    #[serde(default)]
    email: Option<String>,
}

/// The sign-in flow of one gate.
#[derive(Debug)]
pub struct SignIn {
    prefix: String,
    client_id: String,
    client_secret: Option<Secret>,
    scopes: String,
    authorize_url: String,
    token_url: String,
    userinfo_url: String,
    redirect_uri: String,
    codec: Arc<SessionCodec>,
    policy: RedirectPolicy,
    http: reqwest::Client,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

/// `name`'s value in a query string, form-decoded.
pub(crate) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| {
            let value = value.replace('+', " ");
            percent_encoding::percent_decode_str(&value).decode_utf8_lossy().into_owned()
        })
    })
}

fn encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

impl SignIn {
    /// The flow for `config` (which has `[identity.session]` and `public_url`), sealing sessions
    /// with `codec`. `None` when sessions are not configured.
    pub fn new(
        config: &Config,
        codec: Arc<SessionCodec>,
        http: reqwest::Client,
        metrics: Arc<Metrics>,
    ) -> Option<Self> {
        let session = config.identity.session.as_ref()?;
        let public_url = config.public_url.as_ref()?;
        let origin = format!(
            "{}://{}",
            public_url.scheme_str().unwrap_or("https"),
            public_url.authority().map_or("", |a| a.as_str())
        );
        Some(Self {
            prefix: config.prefix.clone(),
            client_id: session.client_id.clone(),
            client_secret: session.client_secret.clone(),
            scopes: session.scopes.join(" "),
            authorize_url: config.whop.url("/oauth/authorize"),
            token_url: config.whop.url("/oauth/token"),
            userinfo_url: config.whop.url("/oauth/userinfo"),
            redirect_uri: format!("{origin}{}/callback", config.prefix),
            codec,
            policy: RedirectPolicy::new(Some(public_url), &session.allowed_redirect_hosts),
            http,
            timeout: config.whop.timeout,
            metrics,
        })
    }

    /// Where a browser without a session is sent to sign in, coming back to `rd`.
    pub fn login_url(&self, rd: &str) -> String {
        format!("{}/login?rd={}", self.prefix, encode(rd))
    }

    /// `GET {prefix}/login?rd=PATH`: to Whop's authorize page, with a fresh login cookie.
    pub fn login(&self, query: Option<&str>) -> Response<Bytes> {
        let rd = self.policy.safe_target(&query_param(query, "rd").unwrap_or_else(|| "/".to_owned()));
        let login = LoginState::new(rd);
        let authorize = format!(
            "{}?response_type=code&client_id={}&redirect_uri={}&scope={}&state={}&nonce={}&code_challenge={}&code_challenge_method=S256",
            self.authorize_url,
            encode(&self.client_id),
            encode(&self.redirect_uri),
            encode(&self.scopes),
            encode(&login.state),
            encode(&login.nonce),
            pkce_challenge(&login.verifier),
        );
        let mut response = redirect(&authorize);
        response.headers_mut().append(header::SET_COOKIE, self.codec.login_cookie(&self.codec.seal_login(&login)));
        response
    }

    /// `GET {prefix}/callback`: checks the state, exchanges the code, reads the user, sets the
    /// session cookie and sends the browser back where it started.
    pub async fn callback(&self, query: Option<&str>, headers: &HeaderMap) -> Response<Bytes> {
        let mut response = match self.finish(query, headers).await {
            Ok((session, rd)) => {
                let mut response = redirect(&self.policy.safe_target(&rd));
                response
                    .headers_mut()
                    .append(header::SET_COOKIE, self.codec.session_cookie(&self.codec.seal(&session)));
                response
            }
            Err(error) => {
                tracing::info!(reason = ?error, "sign-in did not complete");
                crate::gate::answer::Answer::SignIn(error).into_response(crate::gate::negotiate::ResponseStyle::Browser)
            }
        };
        // The login cookie is single use, whatever happened.
        response.headers_mut().append(header::SET_COOKIE, self.codec.clear_login_cookie());
        response
    }

    async fn finish(&self, query: Option<&str>, headers: &HeaderMap) -> Result<(Session, String), SignInError> {
        let state = query_param(query, "state").ok_or(SignInError::BadState)?;
        let login_cookie = self.codec.find_login(headers).ok_or(SignInError::BadState)?;
        let login = self.codec.open_login(login_cookie, &state).map_err(|_| SignInError::BadState)?;
        if let Some(error) = query_param(query, "error") {
            return Err(SignInError::Refused { error });
        }
        let code = query_param(query, "code").ok_or(SignInError::MissingCode)?;
        let access_token = self.exchange(&code, &login.verifier).await?;
        let user = self.userinfo(&access_token).await?;
        let name = user.name.or(user.preferred_username);
        let session = self.codec.new_session(&user.sub, name.as_deref(), user.email.as_deref());
        Ok((session, login.rd))
    }

    async fn exchange(&self, code: &str, verifier: &str) -> Result<String, SignInError> {
        let body = TokenRequest {
            grant_type: "authorization_code",
            code,
            redirect_uri: &self.redirect_uri,
            client_id: &self.client_id,
            code_verifier: verifier,
            client_secret: self.client_secret.as_ref().map(Secret::expose),
        };
        let started = Instant::now();
        let sent = tokio::time::timeout(self.timeout, self.http.post(&self.token_url).json(&body).send()).await;
        let response = match sent {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(self.unavailable("oauth_token", started, e.without_url().to_string())),
            Err(_) => return Err(self.unavailable("oauth_token", started, "timed out".into())),
        };
        let status = response.status();
        self.record("oauth_token", &status.as_u16().to_string(), started);
        let bytes = response.bytes().await.map_err(|e| SignInError::Unavailable(e.without_url().to_string()))?;
        if status.is_success() {
            let token: TokenResponse =
                serde_json::from_slice(&bytes).map_err(|e| SignInError::Unavailable(format!("token answer: {e}")))?;
            return Ok(token.access_token);
        }
        match serde_json::from_slice::<OAuthErrorBody>(&bytes) {
            Ok(body) if status.is_client_error() => Err(SignInError::Exchange { error: body.error }),
            _ => Err(SignInError::Unavailable(format!("token endpoint answered {status}"))),
        }
    }

    async fn userinfo(&self, access_token: &str) -> Result<UserInfo, SignInError> {
        let started = Instant::now();
        let request = self.http.get(&self.userinfo_url).bearer_auth(access_token).send();
        let response = match tokio::time::timeout(self.timeout, request).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(self.unavailable("userinfo", started, e.without_url().to_string())),
            Err(_) => return Err(self.unavailable("userinfo", started, "timed out".into())),
        };
        self.record("userinfo", &response.status().as_u16().to_string(), started);
        if !response.status().is_success() {
            return Err(SignInError::Unavailable(format!("userinfo answered {}", response.status())));
        }
        let user: UserInfo = response
            .json()
            .await
            .map_err(|e| SignInError::Unavailable(format!("userinfo answer: {}", e.without_url())))?;
        if !user.sub.starts_with("user_") || HeaderValue::from_str(&user.sub).is_err() {
            return Err(SignInError::Unavailable("userinfo gave no Whop user id".into()));
        }
        Ok(user)
    }

    /// `GET|POST {prefix}/logout?rd=PATH`: clears the session, back to `rd`.
    pub fn logout(&self, query: Option<&str>) -> Response<Bytes> {
        let rd = self.policy.safe_target(&query_param(query, "rd").unwrap_or_else(|| "/".to_owned()));
        let mut response = redirect(&rd);
        response.headers_mut().append(header::SET_COOKIE, self.codec.clear_session_cookie());
        response.headers_mut().append(header::SET_COOKIE, self.codec.clear_login_cookie());
        response
    }

    fn unavailable(&self, endpoint: &str, started: Instant, why: String) -> SignInError {
        self.record(endpoint, "error", started);
        tracing::warn!(endpoint, error = %why, "Whop sign-in call failed");
        SignInError::Unavailable(why)
    }

    fn record(&self, endpoint: &str, status: &str, started: Instant) {
        self.metrics.whop_api_requests.with_label_values(&[endpoint, status]).inc();
        self.metrics.whop_api_duration.with_label_values(&[endpoint]).observe(started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_form_decoded() {
        assert_eq!(query_param(Some("a=1&rd=%2Fx%3Fy%3D1&b"), "rd").as_deref(), Some("/x?y=1"));
        assert_eq!(query_param(Some("q=a+b"), "q").as_deref(), Some("a b"));
        assert_eq!(query_param(Some("b"), "b").as_deref(), Some(""));
        assert_eq!(query_param(None, "rd"), None);
        assert_eq!(query_param(Some("rdx=1"), "rd"), None);
    }
}
