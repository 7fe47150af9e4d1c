//! Judging one request: normalise, match, identify, decide; then the one place where a verdict
//! becomes either a forwarded request (identity headers set) or a denial.
//!
//! Everything that can be decided from the caches is decided synchronously, without allocating a
//! future: that is the path nearly every request of a busy app takes. Only a cache miss (or a
//! token signed by a key not fetched yet) goes through [`GateState::judge_later`].

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Method, Request, Response, Uri};

use super::denial::{BadRequest, Denial, ForbiddenReason};
use super::handoff::{Cleared, IdentityHeaders};
use super::record::LogLine;
use super::stream_watch::Subject;
use super::user::WhopUser;
use super::{ConnectionFacts, GateState, RuleState};
use super::{client_headers, method_override, negotiate};
use crate::authority::{self, HostRejection};
use crate::config::OnWhopError;
use crate::endpoints::Endpoint;
use crate::identity::{Credential, CredentialError, Identified, Identity, LicenseKeyError};
use crate::metrics::Decision;
use crate::path;
use crate::route::Rule;
use crate::whop::{Access, WhopError};

/// What the gate decided about a request.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Pass it on.
    Forward {
        /// Who is calling, when known.
        identity: Option<Arc<Identity>>,
        /// What granted access, and at which level (index into the rule's `require`).
        grant: Option<(Access, usize)>,
        /// The metric label.
        decision: Decision,
        /// For the access log.
        reason: &'static str,
    },
    /// Answer it here.
    Deny {
        /// Why.
        denial: Denial,
        /// Who asked, when known.
        identity: Option<Arc<Identity>>,
    },
}

/// A verdict that needs I/O, with the rule it is about.
pub(crate) struct Later {
    pub rule: usize,
    pub verdict: Pin<Box<dyn Future<Output = Verdict> + Send>>,
}

/// A response still being made (an endpoint that asks Whop, or a webhook being read).
pub(crate) type Answering = Pin<Box<dyn Future<Output = Response<Bytes>> + Send>>;

/// The gate's answer to [`GateState::judge`].
pub(crate) enum Judgement {
    /// Pass the (rewritten) request on, with who is calling when known.
    Forward {
        decision: Decision,
        log: Option<Box<LogLine>>,
        cleared: Option<Cleared>,
        /// What to judge again should the response become a stream (gated rules only).
        subject: Option<Subject>,
    },
    /// Answer with this response.
    Deny { response: Response<Bytes>, decision: Decision, log: Option<Box<LogLine>> },
    /// Wait for this, then [`GateState::conclude`].
    Later(Later),
    /// One of whopgate's own endpoints: answer with what this future gives.
    Answer { answer: Answering, log: Option<Box<LogLine>> },
    /// A webhook delivery: answer with what [`GateState::receive_webhook`] makes of its body.
    Webhook { gate: Arc<GateState>, log: Option<Box<LogLine>> },
}

/// What `judge_later` still has to find out.
enum Pending {
    Credential(Credential),
    Identity(Arc<Identity>),
}

impl GateState {
    /// Judges a request, rewriting it for forwarding: canonical host, normalised path, forged
    /// identity and re-routing headers removed, credentials and method overrides that must not
    /// travel stripped from the query. `conn`: what is known of the connection (TLS, a trusted
    /// proxy). The identity headers are not set here but handed over with
    /// [`Judgement::Forward`] (see [`super::handoff`]); whopgate's own endpoints are answered,
    /// forward-auth among them, which judges the request a front end describes with this same
    /// code ([`super::forward_auth`]).
    /// `now` is when the request arrived: cached entries are judged fresh or not as of then.
    // Inlined into its one caller, `GateService::call`, as it was before the host checks made
    // it bigger: a call and the arguments' moves per request (154 instructions).
    #[inline(always)]
    pub(crate) fn judge<B>(
        self: &Arc<Self>,
        req: &mut Request<B>,
        request_id: &HeaderValue,
        log: bool,
        user_extension: bool,
        now: Instant,
        conn: ConnectionFacts,
    ) -> Judgement {
        let path = settle_path(req);
        let endpoint = match path {
            Ok(()) => Endpoint::route(&self.prefix, req.uri().path()),
            Err(_) => None,
        };
        if endpoint == Some(Endpoint::Auth) {
            // Reads the front end's description (`X-Original-URI` among it) before anything
            // strips it, then settles the described request like any other.
            return self.forward_auth(req, request_id, log, now, conn);
        }
        client_headers::strip(req.headers_mut());
        let settled = match (path, endpoint) {
            (Err(bad), _) => Err(bad),
            (Ok(()), None) => return self.judge_route(req, request_id, log, user_extension, now, conn.tls),
            (Ok(()), Some(endpoint)) => settle_host(req, conn.tls).map(|()| endpoint),
        };
        match settled {
            Ok(endpoint) => self.endpoint(endpoint, req, request_id, log),
            Err(bad) => {
                let verdict = Verdict::Deny { denial: Denial::BadRequest(bad), identity: None };
                self.conclude(req, None, verdict, request_id, log, user_extension)
            }
        }
    }

    /// Judges a settled request (see [`settle`]) by the route rules: host, match, identify,
    /// decide. `tls`: the default port is 443.
    #[inline(always)]
    pub(crate) fn judge_route<B>(
        self: &Arc<Self>,
        req: &mut Request<B>,
        request_id: &HeaderValue,
        log: bool,
        user_extension: bool,
        now: Instant,
        tls: bool,
    ) -> Judgement {
        // The host, looked up once: borrowed from the request in the common case (one `Host`,
        // canonical already), else written back into it first.
        let host = match authority::of_request(req, tls) {
            Ok(Cow::Borrowed(host)) if req.uri().authority().is_none() => host,
            Ok(canonical) => {
                let canonical = canonical.into_owned();
                if let Err(rejection) = set_authority(req, canonical) {
                    let verdict = Verdict::Deny { denial: Denial::BadRequest(rejection.into()), identity: None };
                    return self.conclude(req, None, verdict, request_id, log, user_extension);
                }
                req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default()
            }
            Err(rejection) => {
                let verdict = Verdict::Deny { denial: Denial::BadRequest(rejection.into()), identity: None };
                return self.conclude(req, None, verdict, request_id, log, user_extension);
            }
        };
        let Some(rule) = self.routes.find(req.method(), Some(host), req.uri().path()) else {
            return self.conclude(
                req,
                None,
                Verdict::Deny { denial: Denial::NoRule, identity: None },
                request_id,
                log,
                user_extension,
            );
        };
        let rule_index = rule.index;
        if method_override::could_be_rerouted(req, &self.routes, host, rule_index) {
            let verdict = Verdict::Deny { denial: Denial::BadRequest(BadRequest::FormMethodOverride), identity: None };
            return self.conclude(req, None, verdict, request_id, log, user_extension);
        }

        let identified = self.identifier.identify_at(req, now);
        if let Some(query) = req.uri().query() {
            // What must not reach the app: a dev user token, a `_method` override.
            let without_token = self.identifier.strip_query(query);
            let stripped = method_override::strip_query(without_token.as_deref().unwrap_or(query)).or(without_token);
            if let Some(stripped) = stripped {
                let path = req.uri().path().to_owned();
                set_path(req, &path, Some(&stripped));
            }
        }

        let verdict = match identified {
            Identified::Anonymous if rule.public => public(None),
            Identified::Anonymous => Verdict::Deny { denial: self.unauthenticated(req), identity: None },
            // A public page does not break for a caller with a stale token: it just does not
            // learn who they are.
            Identified::Invalid(_) if rule.public => public(None),
            Identified::Invalid(error) => {
                let target = return_to(req);
                Verdict::Deny { denial: self.credential_denial(rule, error, Some(&target)), identity: None }
            }
            Identified::Found(identity) if rule.public => public(Some(identity)),
            Identified::Found(identity) => match self.decide_now(rule, &identity, now) {
                Some(verdict) => verdict,
                None => return self.later(rule_index, Pending::Identity(identity)),
            },
            Identified::Later(credential) => return self.later(rule_index, Pending::Credential(credential)),
        };
        self.conclude(req, Some(rule_index), verdict, request_id, log, user_extension)
    }

    fn later(self: &Arc<Self>, rule: usize, pending: Pending) -> Judgement {
        let state = self.clone();
        Judgement::Later(Later { rule, verdict: Box::pin(async move { state.judge_later(rule, pending).await }) })
    }

    /// No credential: browsers are sent to sign in when sessions are on.
    fn unauthenticated<B>(&self, req: &Request<B>) -> Denial {
        Denial::Unauthenticated { login_url: self.signin.as_ref().map(|s| s.login_url(&return_to(req))) }
    }

    /// The denial for a credential that failed: a license key with an invalid membership is a
    /// 403 naming its status, one Whop could not check is a 503, a bad session cookie is cleared
    /// (and browsers sign in again), everything else a 401.
    fn credential_denial(&self, rule: &Rule, error: CredentialError, target: Option<&str>) -> Denial {
        match error {
            CredentialError::LicenseKey(LicenseKeyError::NotValid { status }) => Denial::Forbidden {
                reason: ForbiddenReason::MembershipStatus(status),
                required: rule.require.clone(),
                access_level: rule.access_level,
                checkout_url: rule.checkout_url.clone(),
            },
            CredentialError::LicenseKey(LicenseKeyError::Unavailable(cause)) => {
                Denial::Unavailable { retry_after: cause.retry_after(), cause }
            }
            error @ CredentialError::Session(_) => Denial::InvalidCredentials {
                error,
                login_url: self.signin.as_ref().map(|s| s.login_url(target.unwrap_or("/"))),
                clear_cookie: self.identifier.session().map(|codec| codec.clear_session_cookie()),
            },
            error => Denial::InvalidCredentials { error, login_url: None, clear_cookie: None },
        }
    }

    /// The decision from fresh cache entries alone: granted as soon as one required resource
    /// grants, refused when every one is known to refuse, `None` when one must be asked.
    pub(super) fn decide_now(self: &Arc<Self>, rule: &Rule, identity: &Arc<Identity>, now: Instant) -> Option<Verdict> {
        if let Some(access) = identity.fixed_access {
            // The dev identity: configuration decides, Whop is never asked.
            return Some(match access.satisfies(rule.access_level) {
                true => allow(identity, access, 0, "dev_identity"),
                false => forbidden(rule, identity),
            });
        }
        let mut all_known = true;
        for (i, resource) in rule.require.iter().enumerate() {
            match self.access.lookup_at(&identity.user_id, resource, now) {
                Some(access) if access.satisfies(rule.access_level) => return Some(allow(identity, access, i, "-")),
                Some(_) => {}
                None => all_known = false,
            }
        }
        all_known.then(|| forbidden(rule, identity))
    }

    async fn judge_later(self: Arc<Self>, rule_index: usize, pending: Pending) -> Verdict {
        let rule = &self.routes.rules()[rule_index];
        let identity = match pending {
            Pending::Identity(identity) => identity,
            Pending::Credential(credential) => match self.identifier.identify_later(credential).await {
                Ok(identity) => identity,
                Err(_) if rule.public => return public(None),
                Err(CredentialError::LicenseKey(LicenseKeyError::Unavailable(_)))
                    if rule.on_whop_error == OnWhopError::Allow =>
                {
                    return Verdict::Forward {
                        identity: None,
                        grant: None,
                        decision: Decision::Unavailable,
                        reason: "whop_unavailable_fail_open",
                    };
                }
                Err(error) => {
                    return Verdict::Deny { denial: self.credential_denial(rule, error, None), identity: None };
                }
            },
        };
        if rule.public {
            return public(Some(identity));
        }
        if let Some(verdict) = self.decide_now(rule, &identity, Instant::now()) {
            return verdict;
        }
        self.decide_later(rule, identity).await
    }

    /// Asks (through the cache) about every required resource at once; the first grant wins.
    pub(super) async fn decide_later(&self, rule: &Rule, identity: Arc<Identity>) -> Verdict {
        let mut lookups: FuturesUnordered<_> = rule
            .require
            .iter()
            .enumerate()
            .map(|(i, resource)| {
                let access = self.access.clone();
                let user = identity.user_id.clone();
                let resource = resource.clone();
                async move { (i, access.lookup(&user, &resource).await) }
            })
            .collect();
        let mut failure: Option<WhopError> = None;
        while let Some((i, result)) = lookups.next().await {
            match result {
                Ok(decision) if decision.access.satisfies(rule.access_level) => {
                    let reason = if decision.stale { "stale_if_error" } else { "-" };
                    return allow(&identity, decision.access, i, reason);
                }
                Ok(_) => {}
                Err(error) => {
                    failure.get_or_insert(error);
                }
            }
        }
        match failure {
            None => forbidden(rule, &identity),
            Some(_) if rule.on_whop_error == OnWhopError::Allow => Verdict::Forward {
                identity: Some(identity),
                grant: None,
                decision: Decision::Unavailable,
                reason: "whop_unavailable_fail_open",
            },
            Some(error) => Verdict::Deny {
                denial: Denial::Unavailable { retry_after: error.retry_after(), cause: error },
                identity: Some(identity),
            },
        }
    }

    /// The one place a verdict becomes a forwardable request or a denial response.
    pub(crate) fn conclude<B>(
        &self,
        req: &mut Request<B>,
        rule: Option<usize>,
        verdict: Verdict,
        request_id: &HeaderValue,
        log: bool,
        user_extension: bool,
    ) -> Judgement {
        let rule_state = rule.map(|i| &self.rules[i]);
        let counters = rule_state.map_or(&self.no_route_counters, |r| &r.counters);
        match verdict {
            Verdict::Forward { identity, grant, decision, reason } => {
                counters.get(decision).inc();
                let log = log.then(|| self.log_line(req, rule_state, request_id, reason, identity.as_deref()));
                if let Some(codec) = self.identifier.session() {
                    // whopgate's own cookies are whopgate's: the app never sees them.
                    codec.strip(req.headers_mut());
                }
                let gated = rule.filter(|&i| !self.routes.rules()[i].public);
                let (cleared, subject) = match identity {
                    Some(identity) => {
                        let cleared = cleared(&identity, grant, rule_state, user_extension);
                        // The identity moves on with the request rather than being dropped here.
                        let subject = gated.map(|rule| Subject { rule, identity, epoch: self.revocations.epoch() });
                        (Some(cleared), subject)
                    }
                    None => (None, None),
                };
                Judgement::Forward { decision, log, cleared, subject }
            }
            Verdict::Deny { denial, identity } => {
                let decision = denial.decision();
                counters.get(decision).inc();
                let log = log.then(|| self.log_line(req, rule_state, request_id, denial.reason(), identity.as_deref()));
                let mode = rule.map(|i| self.routes.rules()[i].mode);
                let style = negotiate::style(mode, req.method(), req.headers());
                Judgement::Deny { response: denial.into_response(style), decision, log }
            }
        }
    }

    pub(crate) fn log_line<B>(
        &self,
        req: &Request<B>,
        rule: Option<&RuleState>,
        request_id: &HeaderValue,
        reason: &'static str,
        identity: Option<&Identity>,
    ) -> Box<LogLine> {
        Box::new(LogLine {
            method: req.method().clone(),
            path: req.uri().path().to_owned(),
            rule: rule.map(|r| r.label.clone()),
            request_id: request_id.clone(),
            user: identity.map(|i| i.user_id.clone()),
            reason,
        })
    }
}

fn public(identity: Option<Arc<Identity>>) -> Verdict {
    Verdict::Forward { identity, grant: None, decision: Decision::Public, reason: "-" }
}

fn allow(identity: &Arc<Identity>, access: Access, resource: usize, reason: &'static str) -> Verdict {
    Verdict::Forward {
        identity: Some(identity.clone()),
        grant: Some((access, resource)),
        decision: Decision::Allow,
        reason,
    }
}

fn forbidden(rule: &Rule, identity: &Arc<Identity>) -> Verdict {
    Verdict::Deny {
        denial: Denial::Forbidden {
            reason: ForbiddenReason::NoAccess,
            required: rule.require.clone(),
            access_level: rule.access_level,
            checkout_url: rule.checkout_url.clone(),
        },
        identity: Some(identity.clone()),
    }
}

/// What the service behind the gate is told about a caller it lets through.
fn cleared(
    identity: &Identity,
    grant: Option<(Access, usize)>,
    rule: Option<&RuleState>,
    user_extension: bool,
) -> Cleared {
    let granted = grant.zip(rule).and_then(|((access, i), rule)| Some((access, rule.resources.get(i)?)));
    let grant_headers = granted.and_then(|(access, (_, grants))| grants.as_ref()?.local().of(access).cloned());
    let headers = IdentityHeaders::new(identity.headers.clone(), grant_headers);
    let user = user_extension.then(|| WhopUser {
        id: identity.user_id.clone(),
        source: identity.source,
        access_level: grant.map(|(access, _)| access),
        resource: granted.map(|(_, (id, _))| id.clone()),
        name: identity.name.clone(),
        email: identity.email.clone(),
    });
    Cleared { headers, user }
}

/// Where sign-in brings the browser back: the request's path and query, or its whole URL when
/// the target is absolute (forward-auth describes requests that way, so the browser lands on
/// the front end's host; `{prefix}/login` checks it like every `rd`).
fn return_to<B>(req: &Request<B>) -> Cow<'_, str> {
    let uri = req.uri();
    match (uri.scheme(), uri.authority()) {
        (Some(_), Some(_)) => Cow::Owned(uri.to_string()),
        _ => Cow::Borrowed(uri.path_and_query().map_or("/", |pq| pq.as_str())),
    }
}

/// Makes a request judgeable by [`GateState::judge_route`], or says why it is not: the
/// client's forged identity and re-routing headers removed, the one path that is matched and
/// forwarded. (`judge_route` settles the host: it reads it once, where it uses it.)
pub(crate) fn settle<B>(req: &mut Request<B>) -> Result<(), BadRequest> {
    client_headers::strip(req.headers_mut());
    settle_path(req)
}

/// The one canonical host in `Host` (and in the target, when it has an authority), for the
/// requests that are not judged by the rules (whopgate's endpoints). `tls`: 443 is the default.
fn settle_host<B>(req: &mut Request<B>, tls: bool) -> Result<(), BadRequest> {
    match authority::of_request(req, tls)? {
        Cow::Borrowed(_) if req.uri().authority().is_none() => Ok(()),
        canonical => {
            let canonical = canonical.into_owned();
            set_authority(req, canonical).map_err(BadRequest::from)
        }
    }
}

/// Refuses what cannot be judged and gives the request the one path that is matched and
/// forwarded (see [`path`]).
fn settle_path<B>(req: &mut Request<B>) -> Result<(), BadRequest> {
    if req.method() == Method::CONNECT {
        return Err(BadRequest::Connect);
    }
    match path::normalize(req.uri().path())? {
        Cow::Borrowed(_) => Ok(()),
        // Never forward a spelling other than the one we matched.
        Cow::Owned(normalized) => match set_path(req, &normalized, None) {
            true => Ok(()),
            false => Err(BadRequest::Path(path::PathRejection::BadPercentEncoding)),
        },
    }
}

/// Sets `Host` to the request's canonical authority (see [`authority`]), and the target's
/// authority too when it has one (absolute form, HTTP/2), so the gate and the app cannot read
/// two hosts.
fn set_authority<B>(req: &mut Request<B>, canonical: String) -> Result<(), HostRejection> {
    if req.uri().authority().is_some_and(|a| a.as_str() != canonical) {
        let mut parts = req.uri().clone().into_parts();
        parts.authority = Some(Authority::try_from(canonical.as_str()).map_err(|_| HostRejection::Invalid)?);
        *req.uri_mut() = Uri::from_parts(parts).map_err(|_| HostRejection::Invalid)?;
    }
    if req.headers().get(header::HOST).map(HeaderValue::as_bytes) != Some(canonical.as_bytes()) {
        let value = HeaderValue::try_from(canonical).map_err(|_| HostRejection::Invalid)?;
        req.headers_mut().insert(header::HOST, value);
    }
    Ok(())
}

/// Replaces the request's path (and query, when `query` is given), keeping scheme and
/// authority. False if the result is not a valid URI.
fn set_path<B>(req: &mut Request<B>, path: &str, query: Option<&str>) -> bool {
    let query = match query {
        Some(q) => Some(q),
        None => req.uri().query(),
    };
    let target = match query {
        Some(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path.to_owned(),
    };
    let mut parts = req.uri().clone().into_parts();
    let Ok(pq) = PathAndQuery::try_from(target) else {
        return false;
    };
    parts.path_and_query = Some(pq);
    match Uri::from_parts(parts) {
        Ok(uri) => {
            *req.uri_mut() = uri;
            true
        }
        Err(_) => false,
    }
}
