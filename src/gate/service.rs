//! [`GateLayer`] and [`GateService`]: the gate as tower middleware.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::ConnectionFacts;
use super::GateState;
use super::body::GateBody;
use super::handoff::{Handoff, InsertIdentity};
use super::judge::{Answering, Judgement, Verdict};
use super::record::{self, LogLine, Record};
use super::request_id::{self, X_REQUEST_ID};
use super::stream_watch::{StreamControl, Subject};
use crate::metrics::Decision;

/// Puts the gate in front of a service: every request is identified, judged and then either
/// passed on (with identity headers, delivered by the [`Handoff`] `H`) or answered by the gate.
///
/// Made by [`super::Gate::layer`].
#[derive(Debug, Clone)]
pub struct GateLayer<H = InsertIdentity> {
    state: Arc<GateState>,
    handoff: H,
    conn: ConnectionFacts,
}

impl GateLayer {
    pub(super) fn new(state: Arc<GateState>) -> Self {
        Self { state, handoff: InsertIdentity::default(), conn: ConnectionFacts::default() }
    }

    /// Do not put [`super::WhopUser`] in the extensions of allowed requests: for an inner
    /// service that only reads the identity headers, which saves an allocation per request.
    pub fn without_user_extension(mut self) -> Self {
        self.handoff.user_extension = false;
        self
    }
}

impl<H> GateLayer<H> {
    /// Delivers cleared requests with `handoff` instead: for an inner service that takes the
    /// identity as values rather than from the header map (as the sidecar's proxy does).
    pub fn with_handoff<H2>(self, handoff: H2) -> GateLayer<H2> {
        GateLayer { state: self.state, handoff, conn: self.conn }
    }

    /// The requests come over TLS: a `Host` that names port 443 names the default port, which
    /// the canonical host leaves out (see SPEC §4, "Host"). Off by default.
    pub fn serving_tls(mut self, tls: bool) -> Self {
        self.conn.tls = tls;
        self
    }

    /// The requests come from one of `trusted_proxies`: forward-auth (`{prefix}/auth`) believes
    /// the request they describe in `X-Forwarded-*` / `X-Original-*`. Off by default: from
    /// anyone else the request is judged as it is.
    pub fn from_trusted_proxy(mut self, trusted: bool) -> Self {
        self.conn.trusted_proxy = trusted;
        self
    }
}

impl<S, H: Clone> Layer<S> for GateLayer<H> {
    type Service = GateService<S, H>;

    fn layer(&self, inner: S) -> GateService<S, H> {
        GateService { inner, state: Arc::new(self.state.clone()), handoff: self.handoff.clone(), conn: self.conn }
    }
}

/// The gate as the services made by one [`Layer::layer`] call hold it (in the sidecar: one
/// client connection). Every request clones it, so it has a reference count of its own: a cache
/// line written by that connection's core alone, where one count shared by every connection
/// would bounce between cores on each request.
pub(crate) type LayerGate = Arc<Arc<GateState>>;

/// What the gate needs of a request body: to read a webhook delivery's (`{prefix}/webhook`)
/// itself. Every `http_body::Body` that can be sent between threads is one (hyper's `Incoming`,
/// axum's `Body`, `Full`, `Empty`).
pub trait RequestBody:
    http_body::Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Send + 'static
{
}

impl<B> RequestBody for B where
    B: http_body::Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Send + 'static
{
}

/// The gate around an inner service. Denials are responses, never errors: the error type is the
/// inner service's, so it composes without `HandleErrorLayer`.
#[derive(Debug, Clone)]
pub struct GateService<S, H = InsertIdentity> {
    inner: S,
    state: LayerGate,
    handoff: H,
    conn: ConnectionFacts,
}

impl<S, H, ReqB, ResB> Service<Request<ReqB>> for GateService<S, H>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone,
    H: Handoff<S, ReqB>,
    ReqB: RequestBody,
{
    type Response = Response<GateBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqB, H>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let start = Instant::now();
        // At most one growth for what may still go into the map (`x-request-id`, the identity
        // headers under `InsertIdentity`, `Host` or `Connection` in the proxy), not one per insert.
        req.headers_mut().reserve(8);
        let request_id = request_id::ensure(req.headers_mut());
        let log = record::access_log_enabled();
        // One clock read for the judgement: the cache lookups check expiry against the same
        // instant the request's duration is measured from.
        let judgement = self.state.judge(&mut req, &request_id, log, self.handoff.wants_user(), start, self.conn);
        let state = match judgement {
            Judgement::Later(later) => {
                // The service that was made ready goes with the request; a clone stays here.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                FutureState::Judging {
                    verdict: later.verdict,
                    rule: later.rule,
                    inner: Some(inner),
                    req: Some(req),
                    gate: self.state.clone(),
                    log,
                }
            }
            concluded => hand_over(&mut self.inner, &self.handoff, concluded, req),
        };
        ResponseFuture { state, start, request_id, gate: self.state.clone(), handoff: self.handoff.clone() }
    }
}

/// The next state for a concluded judgement: hand the request to the inner service, or answer.
fn hand_over<S, H, ReqB>(inner: &mut S, handoff: &H, judgement: Judgement, req: Request<ReqB>) -> FutureState<S, ReqB>
where
    S: Service<Request<ReqB>>,
    H: Handoff<S, ReqB>,
    ReqB: RequestBody,
{
    match judgement {
        Judgement::Forward { decision, log, cleared, subject } => {
            FutureState::Inner { fut: handoff.call(inner, req, cleared), decision, log, subject }
        }
        Judgement::Deny { response, decision, log } => {
            FutureState::Denied { response: Some(response), decision: Some(decision), log }
        }
        Judgement::Answer { answer, log } => FutureState::Answering { answer, log },
        Judgement::Webhook { gate, log } => {
            let (parts, body) = req.into_parts();
            FutureState::Answering { answer: Box::pin(gate.receive_webhook(parts.headers, body)), log }
        }
        // `conclude` never returns `Later`.
        Judgement::Later(_) => {
            FutureState::Denied { response: Some(internal_error()), decision: Some(Decision::Unavailable), log: None }
        }
    }
}

fn internal_error() -> Response<Bytes> {
    super::answer::Answer::Internal.into_response(super::negotiate::ResponseStyle::Api)
}

pin_project! {
    /// Response future of [`GateService`].
    pub struct ResponseFuture<S, ReqB, H = InsertIdentity>
    where
        S: Service<Request<ReqB>>,
    {
        #[pin]
        state: FutureState<S, ReqB>,
        start: Instant,
        request_id: HeaderValue,
        gate: LayerGate,
        handoff: H,
    }
}

pin_project! {
    #[project = FutureStateProj]
    enum FutureState<S, ReqB>
    where
        S: Service<Request<ReqB>>,
    {
        Judging {
            verdict: Pin<Box<dyn Future<Output = Verdict> + Send>>,
            rule: usize,
            inner: Option<S>,
            req: Option<Request<ReqB>>,
            gate: LayerGate,
            log: bool,
        },
        Inner { #[pin] fut: S::Future, decision: Decision, log: Option<Box<LogLine>>, subject: Option<Subject> },
        Answering {
            answer: Answering,
            log: Option<Box<LogLine>>,
        },
        Denied { response: Option<Response<Bytes>>, decision: Option<Decision>, log: Option<Box<LogLine>> },
    }
}

impl<S, H, ReqB, ResB> Future for ResponseFuture<S, ReqB, H>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    H: Handoff<S, ReqB>,
    ReqB: RequestBody,
{
    type Output = Result<Response<GateBody<ResB>>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            let next = match this.state.as_mut().project() {
                FutureStateProj::Judging { verdict, rule, inner, req, gate, log } => {
                    let verdict = ready!(verdict.as_mut().poll(cx));
                    let (Some(mut req), Some(mut inner)) = (req.take(), inner.take()) else {
                        // Polled after completion: stay pending rather than panic.
                        return Poll::Pending;
                    };
                    let wants_user = this.handoff.wants_user();
                    let judgement = gate.conclude(&mut req, Some(*rule), verdict, this.request_id, *log, wants_user);
                    hand_over(&mut inner, this.handoff, judgement, req)
                }
                FutureStateProj::Inner { fut, decision, log, subject } => {
                    let response = ready!(fut.poll(cx))?;
                    let record = Record::new(*this.start, Some(*decision), this.gate.clone(), log.take());
                    let (mut parts, body) = response.into_parts();
                    let mut subject = subject.take();
                    if parts.status == http::StatusCode::SWITCHING_PROTOCOLS {
                        // A tunnel carries no body of ours to end: it takes the watch itself.
                        if let (Some(control), Some(subject)) =
                            (parts.extensions.remove::<StreamControl>(), subject.take())
                        {
                            control.give(super::stream_watch::watch(Arc::clone(this.gate), subject));
                        }
                    }
                    return Poll::Ready(Ok(finish(parts, record, this.request_id, |r| {
                        GateBody::inner(body, r, subject)
                    })));
                }
                FutureStateProj::Answering { answer, log } => {
                    let response = ready!(answer.as_mut().poll(cx));
                    FutureState::Denied { response: Some(response), decision: None, log: log.take() }
                }
                FutureStateProj::Denied { response, decision, log } => {
                    let Some(response) = response.take() else {
                        return Poll::Pending;
                    };
                    let record = Record::new(*this.start, *decision, this.gate.clone(), log.take());
                    let (parts, body) = response.into_parts();
                    return Poll::Ready(Ok(finish(parts, record, this.request_id, |r| GateBody::local(body, r))));
                }
            };
            this.state.set(next);
        }
    }
}

fn finish<B>(
    mut parts: http::response::Parts,
    mut record: Record,
    request_id: &HeaderValue,
    body: impl FnOnce(Option<Record>) -> GateBody<B>,
) -> Response<GateBody<B>> {
    record.set_status(parts.status.as_u16());
    let record = Some(record);
    parts.headers.entry(&X_REQUEST_ID).or_insert_with(|| request_id.clone());
    Response::from_parts(parts, body(record))
}
