//! `{prefix}/auth`: forward-auth for nginx `auth_request`, Traefik `ForwardAuth` and Caddy
//! `forward_auth` (SPEC §5). The front end describes the request it is about to serve; the gate
//! judges that request with the code that judges a proxied one ([`settle`], then
//! [`GateState::judge_route`]: the same normalisation, 400s, rules, identity and decision) and
//! answers instead of forwarding: `200` with the identity headers as response headers and no
//! body, or the denial.
//!
//! | front end | describes the request with | denials |
//! | --- | --- | --- |
//! | nginx | `X-Original-Method`, `X-Original-URI`, `Host` (never `X-Forwarded-Host`, which nginx passes on from the client), `X-Forwarded-Proto` | `auth_request` turns all but 2xx/401/403 into a 500: a redirect goes out as 401 (sign in) or 403 (checkout) with its `Location`, which `deploy/nginx.conf` turns back into the redirect |
//! | Traefik, Caddy | `X-Forwarded-Method`, `-Uri`, `-Host`, `-Proto` | passed through as the sidecar answers them |
//!
//! The description is believed only from `trusted_proxies`. From anyone else the request is
//! judged as it is (a `GET {prefix}/auth` under whatever rule covers that path), so a forged
//! `X-Forwarded-Uri` cannot make a protected path look public.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};

use super::denial::{BadRequest, Denial};
use super::judge::{Answering, Judgement, Verdict, settle};
use super::negotiate::ResponseStyle;
use super::record::LogLine;
use super::{ConnectionFacts, GateState};
use crate::metrics::Decision;

/// `X-Original-Method` (nginx)
static X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
/// `X-Original-URI` (nginx)
static X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
/// `X-Forwarded-Method` (Traefik, Caddy)
static X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
/// `X-Forwarded-Uri` (Traefik, Caddy)
static X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
/// `X-Forwarded-Host`
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Forwarded-Proto`
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Which front end asked: the `front_end` label of `whopgate_forward_auth_total` and field of
/// the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontEnd {
    /// nginx `auth_request` (`X-Original-URI`).
    Nginx,
    /// Traefik `ForwardAuth` or Caddy `forward_auth` (`X-Forwarded-Uri`).
    Forwarded,
    /// No description believed: the request judged as it is.
    Direct,
}

impl FrontEnd {
    /// The label.
    pub fn as_str(self) -> &'static str {
        match self {
            FrontEnd::Nginx => "nginx",
            FrontEnd::Forwarded => "traefik_caddy",
            FrontEnd::Direct => "direct",
        }
    }
}

/// The one value of `name`; `Err` when the header is repeated or not text (a description
/// that is not one request).
fn one<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a str>, BadRequest> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(BadRequest::Described);
    }
    first.to_str().map(|v| Some(v.trim())).map_err(|_| BadRequest::Described)
}

/// The request a trusted front end describes, as an absolute-form request carrying the auth
/// request's other headers (its credentials), or `None` when nothing is described.
fn described<B>(req: &Request<B>) -> Result<Option<(FrontEnd, Request<()>)>, BadRequest> {
    let headers = req.headers();
    // Each front end passes the client's other headers on: a client's own `X-Original-URI`
    // reaches us through Caddy, its `X-Forwarded-Uri` through nginx. Both at once is no one
    // request.
    let (front_end, method, uri, host) = match (one(headers, &X_ORIGINAL_URI)?, one(headers, &X_FORWARDED_URI)?) {
        (Some(_), Some(_)) => return Err(BadRequest::Described),
        // nginx: the `Host` it served under (deploy/nginx.conf sets it); a client's
        // `X-Forwarded-Host` would pass through nginx untouched, so it is not read.
        (Some(uri), None) => (FrontEnd::Nginx, one(headers, &X_ORIGINAL_METHOD)?, uri, one(headers, &header::HOST)?),
        (None, Some(uri)) => {
            let host = one(headers, &X_FORWARDED_HOST)?.or(one(headers, &header::HOST)?);
            (FrontEnd::Forwarded, one(headers, &X_FORWARDED_METHOD)?, uri, host)
        }
        (None, None) => return Ok(None),
    };
    let method = match method {
        None | Some("") => Method::GET,
        Some(m) => Method::from_bytes(m.as_bytes()).map_err(|_| BadRequest::Described)?,
    };
    let scheme = match one(headers, &X_FORWARDED_PROTO)? {
        None => "http",
        Some(p) if p.eq_ignore_ascii_case("http") => "http",
        Some(p) if p.eq_ignore_ascii_case("https") => "https",
        Some(_) => return Err(BadRequest::Described),
    };
    // Origin form only: an absolute URI here would be a second, competing host.
    if !uri.starts_with('/') {
        return Err(BadRequest::Described);
    }
    let host = host.filter(|h| !h.is_empty()).ok_or(BadRequest::Described)?;
    let target: Uri = format!("{scheme}://{host}{uri}").parse().map_err(|_| BadRequest::Described)?;
    let mut described = Request::new(());
    *described.method_mut() = method;
    *described.uri_mut() = target;
    let mut carried = headers.clone();
    for name in
        [&X_ORIGINAL_METHOD, &X_ORIGINAL_URI, &X_FORWARDED_METHOD, &X_FORWARDED_URI, &X_FORWARDED_HOST, &header::HOST]
    {
        carried.remove(name);
    }
    carried.remove(header::CONTENT_LENGTH);
    *described.headers_mut() = carried;
    Ok(Some((front_end, described)))
}

impl GateState {
    /// `{prefix}/auth`: judges the described request (or this one, from an untrusted peer, or
    /// when nothing is described) and answers the front end.
    pub(crate) fn forward_auth<B>(
        self: &Arc<Self>,
        req: &mut Request<B>,
        request_id: &HeaderValue,
        log: bool,
        now: Instant,
        conn: ConnectionFacts,
    ) -> Judgement {
        let description = if conn.trusted_proxy { described(req) } else { Ok(None) };
        let (front_end, mut judged) = match description {
            Ok(Some(found)) => found,
            Ok(None) => {
                // Judged as it is: the request itself (settled again below, stripped too).
                let mut itself = Request::new(());
                *itself.method_mut() = req.method().clone();
                *itself.uri_mut() = req.uri().clone();
                *itself.headers_mut() = req.headers().clone();
                (FrontEnd::Direct, itself)
            }
            Err(bad) => {
                super::client_headers::strip(req.headers_mut());
                let verdict = Verdict::Deny { denial: Denial::BadRequest(bad), identity: None };
                let judgement = self.conclude(req, None, verdict, request_id, log, false);
                return self.answered(FrontEnd::Direct, judgement);
            }
        };
        let tls = judged.uri().scheme_str() == Some("https") || (front_end == FrontEnd::Direct && conn.tls);
        if let Err(bad) = settle(&mut judged) {
            let verdict = Verdict::Deny { denial: Denial::BadRequest(bad), identity: None };
            let judgement = self.conclude(&mut judged, None, verdict, request_id, log, false);
            return self.answered(front_end, judgement);
        }
        let judgement = self.judge_route(&mut judged, request_id, log, false, now, tls);
        self.answered_later(front_end, judgement, judged, request_id.clone(), log)
    }

    /// A judgement that may still need I/O, answered once concluded.
    fn answered_later(
        self: &Arc<Self>,
        front_end: FrontEnd,
        judgement: Judgement,
        mut judged: Request<()>,
        request_id: HeaderValue,
        log: bool,
    ) -> Judgement {
        let Judgement::Later(later) = judgement else {
            return self.answered(front_end, judgement);
        };
        let state = self.clone();
        let answer: Answering = Box::pin(async move {
            let verdict = later.verdict.await;
            let judgement = state.conclude(&mut judged, Some(later.rule), verdict, &request_id, log, false);
            state.respond_logged(front_end, judgement)
        });
        Judgement::Answer { answer, log: None }
    }

    /// A concluded judgement as the front end's answer.
    fn answered(&self, front_end: FrontEnd, judgement: Judgement) -> Judgement {
        let response = self.respond_logged(front_end, judgement);
        Judgement::Answer { answer: Box::pin(std::future::ready(response)), log: None }
    }

    /// [`GateState::respond`], with its access-log line written.
    fn respond_logged(&self, front_end: FrontEnd, judgement: Judgement) -> Response<Bytes> {
        let (response, decision, line) = self.respond(front_end, judgement);
        if let Some(line) = line {
            emit(&line, front_end, response.status().as_u16(), decision);
        }
        response
    }

    /// The response for the front end, the decision counted, and the log line to write.
    fn respond(&self, front_end: FrontEnd, judgement: Judgement) -> (Response<Bytes>, Decision, Option<Box<LogLine>>) {
        let (response, decision, log) = match judgement {
            Judgement::Forward { decision, log, cleared, .. } => {
                let mut response = Response::new(Bytes::new());
                if let Some(cleared) = cleared {
                    cleared.headers.insert_into(response.headers_mut());
                }
                (response, decision, log)
            }
            Judgement::Deny { mut response, decision, log } => {
                if front_end == FrontEnd::Nginx && response.status().is_redirection() {
                    // nginx cannot pass a redirect on from auth_request: 401 (sign in) or 403
                    // (checkout), `Location` kept for deploy/nginx.conf to redirect with.
                    *response.status_mut() = match decision {
                        Decision::Forbidden => StatusCode::FORBIDDEN,
                        _ => StatusCode::UNAUTHORIZED,
                    };
                }
                (response, decision, log)
            }
            // Neither comes out of `judge_route` concluded.
            Judgement::Later(_) | Judgement::Answer { .. } | Judgement::Webhook { .. } => {
                (super::answer::Answer::Internal.into_response(ResponseStyle::Api), Decision::Unavailable, None)
            }
        };
        self.metrics.forward_auth(front_end, decision);
        (response, decision, log)
    }
}

/// The access log line of a forward-auth decision, naming the front end that asked.
fn emit(line: &LogLine, front_end: FrontEnd, status: u16, decision: Decision) {
    tracing::info!(
        target: super::record::ACCESS_TARGET,
        method = %line.method,
        path = %line.path,
        status,
        rule = %line.rule.as_deref().unwrap_or("-"),
        decision = decision.as_str(),
        reason = %line.reason,
        user = %line.user.as_deref().unwrap_or("-"),
        front_end = front_end.as_str(),
        request_id = %line.request_id.to_str().unwrap_or("-"),
        "forward_auth"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(headers: &[(&str, &str)]) -> Request<()> {
        let mut req = Request::get("/.whopgate/auth").body(()).unwrap();
        for (k, v) in headers {
            req.headers_mut().append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        req
    }

    #[test]
    fn each_front_end_describes_one_request() {
        let nginx = auth(&[
            ("host", "app.example"),
            ("x-original-uri", "/a?b=1"),
            ("x-original-method", "POST"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "forged.example"),
            ("cookie", "c=1"),
        ]);
        let (front, judged) = described(&nginx).unwrap().unwrap();
        assert_eq!(front, FrontEnd::Nginx);
        assert_eq!(judged.method(), Method::POST);
        assert_eq!(judged.uri(), "https://app.example/a?b=1");
        assert_eq!(judged.headers()["cookie"], "c=1", "credentials travel");
        assert!(!judged.headers().contains_key("x-original-uri"));

        let traefik = auth(&[
            ("host", "whopgate:8080"),
            ("x-forwarded-uri", "/x"),
            ("x-forwarded-host", "shop.example"),
            ("x-forwarded-method", "GET"),
        ]);
        let (front, judged) = described(&traefik).unwrap().unwrap();
        assert_eq!(front, FrontEnd::Forwarded);
        assert_eq!(judged.uri(), "http://shop.example/x");
        assert!(described(&auth(&[("host", "a")])).unwrap().is_none(), "nothing described");
    }

    #[test]
    fn a_description_that_is_not_one_request_is_refused() {
        let bad = [
            vec![("host", "a"), ("x-forwarded-uri", "/x"), ("x-forwarded-uri", "/y")],
            vec![("host", "a"), ("x-forwarded-uri", "http://b.example/x")],
            vec![("host", "a"), ("x-forwarded-uri", "/x"), ("x-forwarded-method", "G ET")],
            vec![("host", "a"), ("x-forwarded-uri", "/x"), ("x-forwarded-proto", "gopher")],
            vec![("x-forwarded-uri", "/x")],
            vec![("host", "a"), ("x-forwarded-uri", "/x"), ("x-forwarded-host", "b"), ("x-forwarded-host", "c")],
            vec![("host", "a"), ("x-original-uri", "/x"), ("x-forwarded-uri", "/public")],
        ];
        for headers in bad {
            assert_eq!(described(&auth(&headers)).err(), Some(BadRequest::Described), "{headers:?}");
        }
    }
}
