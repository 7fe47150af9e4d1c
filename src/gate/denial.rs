//! Why a request is not forwarded (SPEC §4, "Answers"); [`super::answer`] turns each reason into
//! the response.

use bytes::Bytes;
use http::Response;
use http::header::HeaderValue;

use std::sync::Arc;
use std::time::Duration;

use super::answer::Answer;
use super::negotiate::ResponseStyle;
use crate::authority::HostRejection;
use crate::config::AccessLevel;
use crate::identity::CredentialError;
use crate::metrics::Decision;
use crate::path::PathRejection;
use crate::whop::WhopError;

/// A request the gate answers itself.
#[derive(Debug, Clone)]
pub enum Denial {
    /// Refused before matching: a path or host the gate and the app could read two ways.
    BadRequest(BadRequest),
    /// No rule matches: default deny.
    NoRule,
    /// A protected route and no credential.
    Unauthenticated {
        /// Where a browser signs in, when the session source is on.
        login_url: Option<String>,
    },
    /// A credential was present and failed.
    InvalidCredentials {
        /// What was wrong with it.
        error: CredentialError,
        /// Where a browser signs in again (a bad session cookie, with sessions on).
        login_url: Option<String>,
        /// `Set-Cookie` removing the bad session cookie.
        clear_cookie: Option<HeaderValue>,
    },
    /// Identity known; none of the required resources grants the required level.
    Forbidden {
        /// Why, in the caller's terms.
        reason: ForbiddenReason,
        /// The rule's `require`.
        required: Vec<Arc<str>>,
        /// The rule's `access_level`.
        access_level: AccessLevel,
        /// Where a browser goes to buy access.
        checkout_url: Option<String>,
    },
    /// Whop could not be asked and nothing usable was cached.
    Unavailable {
        /// For `Retry-After`.
        retry_after: Duration,
        /// What went wrong (logged, not shown).
        cause: WhopError,
    },
}

/// Why a request is refused before any rule is looked at (`400`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRequest {
    /// SPEC §4, "Path".
    Path(PathRejection),
    /// SPEC §4, "Host, method, upgrade".
    Host(HostRejection),
    /// `CONNECT`: the gate is no forward proxy, and a tunnel would carry requests never judged.
    Connect,
    /// A form `POST` whose body could make the app run it as `PUT`, `PATCH` or `DELETE`
    /// (`_method`), which another rule governs (the gate cannot strip it from a streamed body).
    FormMethodOverride,
    /// Forward-auth: the front end's description is not one request (a repeated or
    /// non-text `X-Forwarded-*`/`X-Original-*` header, a URI that is not a path, no host).
    Described,
}

impl BadRequest {
    /// A sentence for the client and the log.
    pub fn message(self) -> &'static str {
        match self {
            BadRequest::Path(rejection) => rejection.message(),
            BadRequest::Host(rejection) => rejection.message(),
            BadRequest::Connect => "CONNECT is not served here",
            BadRequest::FormMethodOverride => {
                "a form POST here could be run by the app as PUT, PATCH or DELETE (a _method field), \
                 which another route rule governs; send that method itself"
            }
            BadRequest::Described => {
                "the forwarded request description (X-Forwarded-Method/-Uri/-Host/-Proto or \
                 X-Original-Method/-URI) is not one request"
            }
        }
    }

    /// The access log's reason.
    fn reason(self) -> &'static str {
        match self {
            BadRequest::Path(_) => "bad_path",
            BadRequest::Host(_) => "bad_host",
            BadRequest::Connect => "connect_method",
            BadRequest::FormMethodOverride => "form_method_override",
            BadRequest::Described => "bad_forwarded_request",
        }
    }
}

impl From<PathRejection> for BadRequest {
    fn from(rejection: PathRejection) -> Self {
        BadRequest::Path(rejection)
    }
}

impl From<HostRejection> for BadRequest {
    fn from(rejection: HostRejection) -> Self {
        BadRequest::Host(rejection)
    }
}

/// Why an identified caller is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForbiddenReason {
    /// Whop says they hold none of the required resources (at the required level).
    NoAccess,
    /// They presented a license key whose membership has this status (not a valid one).
    MembershipStatus(String),
}

impl Denial {
    /// The `decision` label this denial is counted under.
    pub fn decision(&self) -> Decision {
        match self {
            Denial::BadRequest(_) => Decision::BadRequest,
            Denial::NoRule => Decision::Forbidden,
            Denial::Unauthenticated { .. } => Decision::Unauthenticated,
            Denial::InvalidCredentials { .. } => Decision::InvalidCredentials,
            Denial::Forbidden { .. } => Decision::Forbidden,
            Denial::Unavailable { .. } => Decision::Unavailable,
        }
    }

    /// A short machine-readable reason for the access log.
    pub fn reason(&self) -> &'static str {
        match self {
            Denial::BadRequest(bad) => bad.reason(),
            Denial::NoRule => "no_matching_rule",
            Denial::Unauthenticated { .. } => "no_credential",
            Denial::InvalidCredentials { error, .. } => error.reason(),
            Denial::Forbidden { reason: ForbiddenReason::NoAccess, .. } => "no_access",
            Denial::Forbidden { reason: ForbiddenReason::MembershipStatus(_), .. } => "license_not_valid",
            Denial::Unavailable { cause, .. } => match cause {
                WhopError::Timeout => "whop_timeout",
                WhopError::RateLimited { .. } | WhopError::Paused { .. } => "whop_rate_limited",
                WhopError::BudgetExhausted { .. } => "whop_budget_exhausted",
                WhopError::Unauthorized { .. } | WhopError::NoApiKey => "whop_api_key_refused",
                _ => "whop_error",
            },
        }
    }

    /// The answer, in the style the client understands (made in [`super::answer`]).
    pub fn into_response(self, style: ResponseStyle) -> Response<Bytes> {
        Answer::Denial(self).into_response(style)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;
    use serde_json::json;

    fn json_of(response: &Response<Bytes>) -> serde_json::Value {
        serde_json::from_slice(response.body()).unwrap()
    }

    #[test]
    fn unauthenticated_api_has_www_authenticate() {
        let r = Denial::Unauthenticated { login_url: None }.into_response(ResponseStyle::Api);
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()["www-authenticate"], r#"Bearer realm="whopgate""#);
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(json_of(&r)["error"], "unauthenticated");
        assert!(json_of(&r).get("login_url").is_none());
    }

    #[test]
    fn unauthenticated_browser_redirects_to_login_when_possible() {
        let r = Denial::Unauthenticated { login_url: Some("/.whopgate/login?rd=%2Fx".into()) }
            .into_response(ResponseStyle::Browser);
        assert_eq!(r.status(), StatusCode::FOUND);
        assert_eq!(r.headers()["location"], "/.whopgate/login?rd=%2Fx");
        let r = Denial::Unauthenticated { login_url: None }.into_response(ResponseStyle::Browser);
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(std::str::from_utf8(r.body()).unwrap().contains("<h1>Sign in required</h1>"));
    }

    #[test]
    fn bad_requests_are_400_both_ways() {
        for bad in [BadRequest::Path(PathRejection::EncodedSlash), BadRequest::Host(HostRejection::Repeated)] {
            let r = Denial::BadRequest(bad).into_response(ResponseStyle::Api);
            assert_eq!(r.status(), StatusCode::BAD_REQUEST);
            assert_eq!(json_of(&r)["error"], "bad_request");
            assert_eq!(json_of(&r)["message"], bad.message());
            let r = Denial::BadRequest(bad).into_response(ResponseStyle::Browser);
            assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn forbidden_lists_what_is_required_and_redirects_browsers_to_checkout() {
        let denial = Denial::Forbidden {
            reason: ForbiddenReason::NoAccess,
            required: vec![Arc::from("prod_a"), Arc::from("prod_b")],
            access_level: AccessLevel::Customer,
            checkout_url: Some("https://whop.com/checkout/plan_x".into()),
        };
        let api = denial.clone().into_response(ResponseStyle::Api);
        assert_eq!(api.status(), StatusCode::FORBIDDEN);
        let body = json_of(&api);
        assert_eq!(body["error"], "forbidden");
        assert_eq!(body["required"], json!(["prod_a", "prod_b"]));
        assert_eq!(body["checkout_url"], "https://whop.com/checkout/plan_x");
        let browser = denial.into_response(ResponseStyle::Browser);
        assert_eq!(browser.status(), StatusCode::FOUND);
        assert_eq!(browser.headers()["location"], "https://whop.com/checkout/plan_x");
    }

    #[test]
    fn unavailable_has_retry_after() {
        let denial = Denial::Unavailable { retry_after: Duration::from_secs(12), cause: WhopError::Timeout };
        let api = denial.clone().into_response(ResponseStyle::Api);
        assert_eq!(api.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(api.headers()["retry-after"], "12");
        assert_eq!(json_of(&api)["error"], "access_check_unavailable");
        let browser = denial.into_response(ResponseStyle::Browser);
        assert_eq!(browser.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(browser.headers()["retry-after"], "12");
    }
}
