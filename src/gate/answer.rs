//! Every answer whopgate gives a client itself is made here, and only here (SPEC §4 "Answers",
//! §5): a judgement's [`Denial`], and the answers that are no judgement: a path under the prefix
//! that is no endpoint, a method an endpoint does not take, sign-in that is off or did not
//! complete, an upstream that did not answer, the gate failing. Each is `Cache-Control:
//! no-store` (see [`crate::response`]); the sign-in flow's own redirects are its steps, not
//! answers, and stay with it.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use serde_json::json;

use super::denial::{Denial, ForbiddenReason};
use super::negotiate::ResponseStyle;
use crate::config::AccessLevel;
use crate::endpoints::SignInError;
use crate::response::{html_response, json_response, redirect, text_response};
use crate::webhook::Outcome;

/// An answer the gate gives instead of (or after failing at) forwarding.
#[derive(Debug)]
pub enum Answer {
    /// The judgement refused the request.
    Denial(Denial),
    /// A path under `prefix` that names no endpoint (404).
    NoEndpoint,
    /// An endpoint asked with a method it does not take (405, with `Allow`).
    MethodNotAllowed {
        /// The `Allow` header's value.
        allow: &'static str,
    },
    /// A sign-in endpoint, without `[identity.session]` (404).
    SignInOff,
    /// Sign-in did not complete.
    SignIn(SignInError),
    /// The request was cleared but the upstream did not answer it.
    Upstream(UpstreamFailure),
    /// `{prefix}/webhook` without a `[webhook]` secret (404).
    WebhookOff,
    /// What became of a webhook delivery (`POST {prefix}/webhook`).
    Webhook(Outcome),
    /// A webhook delivery's body was too large, or did not arrive in time (413 / 408).
    WebhookBody {
        /// Too large (rather than too slow).
        too_large: bool,
    },
    /// The gate itself failed; never expected.
    Internal,
}

/// Why a cleared request got no answer from the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// No response head within `upstream_timeout` (504).
    Timeout,
    /// Refused, reset, or not HTTP (502).
    Unavailable,
    /// The client's own request body broke on the way (400).
    ClientBody,
}

impl Answer {
    /// The response, in the style the client understands where there is a choice.
    pub fn into_response(self, style: ResponseStyle) -> Response<Bytes> {
        match self {
            Answer::Denial(denial) => denial_response(denial, style),
            Answer::NoEndpoint => {
                json_response(StatusCode::NOT_FOUND, json!({"error": "not_found", "message": "no such endpoint"}))
            }
            Answer::MethodNotAllowed { allow } => {
                let mut response = json_response(
                    StatusCode::METHOD_NOT_ALLOWED,
                    json!({"error": "method_not_allowed", "message": "this endpoint does not take that method"}),
                );
                response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
                response
            }
            Answer::SignInOff => json_response(
                StatusCode::NOT_FOUND,
                json!({"error": "not_found", "message": "Sign in with Whop is not configured here ([identity.session])"}),
            ),
            Answer::SignIn(error) => sign_in_response(&error),
            // Says what failed, never where the upstream lives.
            Answer::Upstream(UpstreamFailure::Timeout) => {
                text_response(StatusCode::GATEWAY_TIMEOUT, "upstream did not answer in time\n")
            }
            Answer::Upstream(UpstreamFailure::Unavailable) => {
                text_response(StatusCode::BAD_GATEWAY, "upstream unavailable\n")
            }
            Answer::Upstream(UpstreamFailure::ClientBody) => {
                text_response(StatusCode::BAD_REQUEST, "the request body is malformed\n")
            }
            Answer::WebhookOff => json_response(
                StatusCode::NOT_FOUND,
                json!({"error": "not_found", "message": "webhooks are not configured here ([webhook] secret)"}),
            ),
            Answer::Webhook(outcome) => webhook_response(&outcome),
            Answer::WebhookBody { too_large: true } => json_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"error": "too_large", "message": "a webhook body is at most 256 KiB"}),
            ),
            Answer::WebhookBody { too_large: false } => json_response(
                StatusCode::REQUEST_TIMEOUT,
                json!({"error": "timeout", "message": "the webhook body did not arrive in time"}),
            ),
            Answer::Internal => text_response(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n"),
        }
    }
}

/// 2xx for everything Whop need not send again (applied, ignored, replayed), 401 and 400 for
/// what it must fix, 503 for what it should send again.
fn webhook_response(outcome: &Outcome) -> Response<Bytes> {
    let result = outcome.label();
    match outcome {
        Outcome::Applied { .. } | Outcome::Ignored { .. } | Outcome::Replayed => {
            json_response(StatusCode::OK, json!({"result": result}))
        }
        Outcome::BadSignature(rejected) => {
            json_response(StatusCode::UNAUTHORIZED, json!({"error": "bad_signature", "message": rejected.message()}))
        }
        Outcome::Malformed(why) => {
            json_response(StatusCode::BAD_REQUEST, json!({"error": "malformed", "message": why}))
        }
        Outcome::Failed => {
            let mut response = json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "unavailable", "message": "the membership could not be looked up at Whop; deliver again"}),
            );
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
            response
        }
    }
}

fn sign_in_response(error: &SignInError) -> Response<Bytes> {
    let (status, title, message) = match error {
        SignInError::BadState => (
            StatusCode::BAD_REQUEST,
            "This sign-in link has expired",
            "It may be old, used already, or opened in another browser. Start again from the app.".to_owned(),
        ),
        SignInError::MissingCode => {
            (StatusCode::BAD_REQUEST, "Sign-in incomplete", "Whop sent no authorization code.".to_owned())
        }
        SignInError::Refused { error } => (
            StatusCode::FORBIDDEN,
            "Sign-in cancelled",
            format!("Whop did not sign you in ({error}). Start again from the app."),
        ),
        SignInError::Exchange { error } => (
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            format!("Whop did not accept this sign-in ({error}). Start again from the app."),
        ),
        SignInError::Unavailable(_) => (
            StatusCode::BAD_GATEWAY,
            "Whop is not answering",
            "Signing in with Whop is not possible right now. Try again shortly.".to_owned(),
        ),
    };
    html_response(status, title, &message, None)
}

fn denial_response(denial: Denial, style: ResponseStyle) -> Response<Bytes> {
    match (denial, style) {
        (Denial::BadRequest(bad), ResponseStyle::Api) => {
            json_response(StatusCode::BAD_REQUEST, json!({"error": "bad_request", "message": bad.message()}))
        }
        (Denial::BadRequest(bad), ResponseStyle::Browser) => {
            html_response(StatusCode::BAD_REQUEST, "Bad request", bad.message(), None)
        }
        (Denial::NoRule, ResponseStyle::Api) => json_response(
            StatusCode::FORBIDDEN,
            json!({"error": "forbidden", "message": "no route rule allows this request", "required": []}),
        ),
        (Denial::NoRule, ResponseStyle::Browser) => {
            html_response(StatusCode::FORBIDDEN, "Forbidden", "This page is not available.", None)
        }
        (Denial::Unauthenticated { login_url }, ResponseStyle::Api) => {
            let mut body = json!({"error": "unauthenticated", "message": "this route needs a Whop identity"});
            if let Some(url) = &login_url {
                body["login_url"] = json!(url);
            }
            let mut response = json_response(StatusCode::UNAUTHORIZED, body);
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(r#"Bearer realm="whopgate""#));
            response
        }
        (Denial::Unauthenticated { login_url: Some(url) }, ResponseStyle::Browser) => redirect(&url),
        (Denial::Unauthenticated { login_url: None }, ResponseStyle::Browser) => {
            html_response(StatusCode::UNAUTHORIZED, "Sign in required", "Open this app from Whop to sign in.", None)
        }
        (Denial::InvalidCredentials { error, login_url, clear_cookie }, style) => {
            let mut response = match (style, login_url) {
                (ResponseStyle::Api, login_url) => {
                    let mut body = json!({"error": "invalid_credentials", "message": error.to_string()});
                    if let Some(url) = &login_url {
                        body["login_url"] = json!(url);
                    }
                    let mut response = json_response(StatusCode::UNAUTHORIZED, body);
                    response.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static(r#"Bearer realm="whopgate", error="invalid_token""#),
                    );
                    response
                }
                // A browser with a bad session signs in again.
                (ResponseStyle::Browser, Some(url)) => redirect(&url),
                (ResponseStyle::Browser, None) => html_response(
                    StatusCode::UNAUTHORIZED,
                    "Sign in again",
                    &format!("Your sign-in could not be checked: {error}. Open this app from Whop again."),
                    None,
                ),
            };
            if let Some(cookie) = clear_cookie {
                response.headers_mut().append(header::SET_COOKIE, cookie);
            }
            response
        }
        (Denial::Forbidden { reason, required, access_level, checkout_url }, ResponseStyle::Api) => {
            let message = match (&reason, access_level) {
                (ForbiddenReason::MembershipStatus(status), _) => {
                    format!("the license key's membership is {status}, not valid")
                }
                (_, AccessLevel::Admin) => "this route is for the team of the company that sells it".to_owned(),
                (_, AccessLevel::Customer) => "your Whop account does not have access to this".to_owned(),
            };
            let required: Vec<&str> = required.iter().map(|r| &**r).collect();
            let mut body = json!({"error": "forbidden", "message": message, "required": required});
            if let Some(url) = &checkout_url {
                body["checkout_url"] = json!(url);
            }
            json_response(StatusCode::FORBIDDEN, body)
        }
        (Denial::Forbidden { checkout_url: Some(url), .. }, ResponseStyle::Browser) => redirect(&url),
        (Denial::Forbidden { access_level, .. }, ResponseStyle::Browser) => {
            let message = match access_level {
                AccessLevel::Admin => "This page is for the team of the company that sells this app.",
                AccessLevel::Customer => "Your Whop account does not have access to this yet.",
            };
            html_response(StatusCode::FORBIDDEN, "No access", message, None)
        }
        (Denial::Unavailable { retry_after, .. }, style) => {
            let mut response = match style {
                ResponseStyle::Api => json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"error": "access_check_unavailable", "message": "access could not be checked with Whop right now; try again shortly"}),
                ),
                ResponseStyle::Browser => html_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Try again shortly",
                    "Your access could not be checked with Whop right now.",
                    None,
                ),
            };
            let seconds = retry_after.as_secs().max(1);
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_that_are_no_judgement() {
        let r = Answer::MethodNotAllowed { allow: "GET, HEAD" }.into_response(ResponseStyle::Api);
        assert_eq!(r.status(), 405);
        assert_eq!(r.headers()["allow"], "GET, HEAD");
        assert_eq!(Answer::NoEndpoint.into_response(ResponseStyle::Browser).status(), 404);
        assert_eq!(Answer::SignInOff.into_response(ResponseStyle::Api).status(), 404);
        let timeout = Answer::Upstream(UpstreamFailure::Timeout).into_response(ResponseStyle::Api);
        assert_eq!(timeout.status(), 504);
        assert_eq!(timeout.headers()["cache-control"], "no-store");
        assert_eq!(Answer::Upstream(UpstreamFailure::ClientBody).into_response(ResponseStyle::Api).status(), 400);
        assert_eq!(Answer::SignIn(SignInError::BadState).into_response(ResponseStyle::Browser).status(), 400);
        assert_eq!(Answer::Internal.into_response(ResponseStyle::Api).status(), 500);
    }
}
