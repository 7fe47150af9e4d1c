//! HTTP plumbing shared by the Whop-shaped API and the control API: JSON replies, Whop's error
//! bodies, query strings and percent-decoding.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};

use super::api::EndpointKind;

/// A JSON answer, built by handlers and turned into a hyper response at the end.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Reply {
    pub(crate) fn ok(body: Value) -> Reply {
        Reply { status: StatusCode::OK, body, headers: Vec::new() }
    }

    /// A `200` HTML page (the mock's sign-in page).
    pub(crate) fn html(page: String) -> Reply {
        Reply {
            status: StatusCode::OK,
            body: Value::String(page),
            headers: vec![(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"))],
        }
    }

    /// A `302 Found` to `location`, without a body.
    pub(crate) fn redirect(location: HeaderValue) -> Reply {
        Reply { status: StatusCode::FOUND, body: Value::Null, headers: vec![(http::header::LOCATION, location)] }
    }

    /// Whop's error shape: `{"error":{"type":…,"message":…}}`.
    pub(crate) fn error(status: StatusCode, kind: &str, message: impl Into<String>) -> Reply {
        Reply { status, body: json!({ "error": { "type": kind, "message": message.into() } }), headers: Vec::new() }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Reply {
        Reply::error(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Reply {
        Reply::error(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub(crate) fn unauthorized(message: impl Into<String>) -> Reply {
        Reply::error(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// A 5xx with the error type Whop uses for that status.
    pub(crate) fn server_error(status: u16) -> Reply {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let kind = match status {
            StatusCode::BAD_GATEWAY => "bad_gateway",
            StatusCode::SERVICE_UNAVAILABLE => "service_unavailable",
            StatusCode::GATEWAY_TIMEOUT => "gateway_timeout",
            _ => "internal_server_error",
        };
        Reply::error(status, kind, "An unexpected error occurred (injected by the mock).")
    }

    /// Whop's 429: the wait is in the message, and in `Retry-After` when `header`.
    pub(crate) fn rate_limited(retry_after: u64, header: bool) -> Reply {
        let mut r = Reply::error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_exceeded",
            format!("Try again in {retry_after} seconds."),
        );
        if header {
            r.headers.push((http::header::RETRY_AFTER, HeaderValue::from(retry_after)));
        }
        r
    }

    /// A 429 as `kind` answers it: the legacy lists (v2, v5) say only
    /// `{"message":"You are being rate limited"}` (SPEC §1), v1 as [`Reply::rate_limited`].
    pub(crate) fn rate_limited_for(kind: EndpointKind, retry_after: u64, header: bool) -> Reply {
        if !matches!(kind, EndpointKind::MembershipsV2 | EndpointKind::MembershipsV5) {
            return Reply::rate_limited(retry_after, header);
        }
        let body = json!({ "message": "You are being rate limited" });
        let mut r = Reply { status: StatusCode::TOO_MANY_REQUESTS, body, headers: Vec::new() };
        if header {
            r.headers.push((http::header::RETRY_AFTER, HeaderValue::from(retry_after)));
        }
        r
    }

    /// The hyper response; a `Null` body (redirects) goes out empty, without a content type.
    pub(crate) fn into_response(self) -> Response<Full<Bytes>> {
        let typed = self.headers.iter().any(|(name, _)| name == CONTENT_TYPE);
        let body = match &self.body {
            Value::Null => Vec::new(),
            Value::String(page) if typed => page.clone().into_bytes(),
            body => serde_json::to_vec(body).unwrap_or_default(),
        };
        let json = !body.is_empty() && !typed;
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        if json {
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        for (name, value) in self.headers {
            h.insert(name, value);
        }
        resp
    }
}

/// Decodes `%XX` (and `+` as space when `plus_is_space`, as in query strings). `None` when the
/// result is not UTF-8 or an escape is broken.
pub(crate) fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A parsed query string; repeated names keep every value, in order.
#[derive(Debug, Default)]
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub(crate) fn parse(q: Option<&str>) -> Query {
        let pairs = q
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .filter_map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                Some((percent_decode(k, true)?, percent_decode(v, true)?))
            })
            .collect();
        Query(pairs)
    }

    /// The last value of `name`.
    /// Every `(name, value)` pair, decoded, in order.
    pub(crate) fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Every value of any of `names`.
    pub(crate) fn all(&self, names: &[&str]) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| names.contains(&k.as_str())).map(|(_, v)| v.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes() {
        assert_eq!(percent_decode("a%20b+c", true).as_deref(), Some("a b c"));
        assert_eq!(percent_decode("a+b", false).as_deref(), Some("a+b"));
        assert_eq!(percent_decode("%zz", false), None);
        assert_eq!(percent_decode("%4", false), None);
        assert_eq!(percent_decode("%ff", false), None);
    }

    #[test]
    fn query_keeps_repeats() {
        let q = Query::parse(Some("user_ids%5B%5D=a&user_ids[]=b&per=5&per=7&flag"));
        assert_eq!(q.all(&["user_ids[]"]), ["a", "b"]);
        assert_eq!(q.get("per"), Some("7"));
        assert_eq!(q.get("flag"), Some(""));
        assert_eq!(q.get("nope"), None);
    }

    #[test]
    fn rate_limited_reply_is_whops() {
        let r = Reply::rate_limited(12, true);
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.body, json!({"error":{"type":"rate_limit_exceeded","message":"Try again in 12 seconds."}}));
        assert_eq!(r.headers[0].1, "12");
        assert!(Reply::rate_limited(3, false).headers.is_empty());
        let legacy = Reply::rate_limited_for(EndpointKind::MembershipsV5, 60, true);
        assert_eq!(legacy.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(legacy.body, json!({"message":"You are being rate limited"}));
        assert_eq!(Reply::rate_limited_for(EndpointKind::Access, 3, false).body, Reply::rate_limited(3, false).body);
    }
}
