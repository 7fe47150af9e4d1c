//! [`GateLayer`] and [`GateService`]: the gate as tower middleware.

use std::future::Future;
use std::marker::PhantomData;
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

use super::body::GateBody;
use super::record::{self, Record};
use super::request_id::{self, X_REQUEST_ID};
use super::{GateState, Judgement};

/// Puts the gate in front of a service: every request is identified, judged and then either
/// passed on (with identity headers) or answered by the gate.
///
/// Made by [`super::Gate::layer`].
#[derive(Debug, Clone)]
pub struct GateLayer {
    state: Arc<GateState>,
}

impl GateLayer {
    pub(super) fn new(state: Arc<GateState>) -> Self {
        Self { state }
    }
}

impl<S> Layer<S> for GateLayer {
    type Service = GateService<S>;

    fn layer(&self, inner: S) -> GateService<S> {
        GateService {
            inner,
            state: self.state.clone(),
        }
    }
}

/// The gate around an inner service. Denials are responses, never errors: the error type is the
/// inner service's, so it composes without `HandleErrorLayer`.
#[derive(Debug, Clone)]
pub struct GateService<S> {
    inner: S,
    state: Arc<GateState>,
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for GateService<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
{
    type Response = Response<GateBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let start = Instant::now();
        let request_id = request_id::ensure(req.headers_mut());
        let log = record::access_log_enabled();
        match self.state.judge(&mut req, &request_id, log) {
            Judgement::Forward { decision, log } => {
                let record = Record::new(start, decision, self.state.metrics.clone(), log);
                ResponseFuture {
                    state: FutureState::Inner {
                        fut: self.inner.call(req),
                    },
                    record: Some(record),
                    request_id,
                    _body: PhantomData,
                }
            }
            Judgement::Deny {
                response,
                decision,
                log,
            } => {
                let record = Record::new(start, decision, self.state.metrics.clone(), log);
                ResponseFuture {
                    state: FutureState::Denied {
                        response: Some(response),
                    },
                    record: Some(record),
                    request_id,
                    _body: PhantomData,
                }
            }
        }
    }
}

pin_project! {
    /// Response future of [`GateService`].
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: FutureState<F>,
        record: Option<Record>,
        request_id: HeaderValue,
        _body: PhantomData<fn() -> B>,
    }
}

pin_project! {
    #[project = FutureStateProj]
    enum FutureState<F> {
        Inner { #[pin] fut: F },
        Denied { response: Option<Response<Bytes>> },
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<GateBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let (mut parts, body) = match this.state.project() {
            FutureStateProj::Inner { fut } => {
                let (parts, body) = ready!(fut.poll(cx))?.into_parts();
                (parts, Ok(body))
            }
            FutureStateProj::Denied { response } => match response.take() {
                Some(response) => {
                    let (parts, body) = response.into_parts();
                    (parts, Err(body))
                }
                // Polled after completion: a caller bug; stay pending rather than panic.
                None => return Poll::Pending,
            },
        };
        let mut record = this.record.take();
        if let Some(r) = &mut record {
            r.set_status(parts.status.as_u16());
        }
        if !parts.headers.contains_key(&X_REQUEST_ID) {
            parts.headers.insert(X_REQUEST_ID.clone(), this.request_id.clone());
        }
        let body = match body {
            Ok(inner) => GateBody::inner(inner, record),
            Err(local) => GateBody::local(local, record),
        };
        Poll::Ready(Ok(Response::from_parts(parts, body)))
    }
}
