//! The gate answering whopgate's own endpoints under `prefix` (see [`crate::endpoints`]).

use std::future::{Future, ready};
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use serde_json::json;

use super::GateState;
use super::judge::Judgement;
use crate::endpoints::Endpoint;
use crate::identity::{Identified, Identity};
use crate::response::json_response;

type Answer = Pin<Box<dyn Future<Output = Response<Bytes>> + Send>>;

fn now(response: Response<Bytes>) -> Answer {
    Box::pin(ready(response))
}

impl GateState {
    /// Answers a request for one of whopgate's endpoints.
    pub(crate) fn endpoint<B>(
        self: &Arc<Self>,
        endpoint: Endpoint,
        req: &Request<B>,
        request_id: &http::HeaderValue,
        log: bool,
    ) -> Judgement {
        let log = log.then(|| self.log_line(req, None, request_id, endpoint.as_str(), None));
        let query = req.uri().query().map(str::to_owned);
        let method = req.method();
        let get = method == Method::GET || method == Method::HEAD;
        let answer = match (endpoint, &self.signin) {
            (Endpoint::Login, Some(signin)) if get => now(signin.login(query.as_deref())),
            (Endpoint::Callback, Some(signin)) if get => {
                let signin = signin.clone();
                let headers = req.headers().clone();
                Box::pin(async move { signin.callback(query.as_deref(), &headers).await })
            }
            (Endpoint::Logout, Some(signin)) if get || method == Method::POST => now(signin.logout(query.as_deref())),
            (Endpoint::Login | Endpoint::Callback | Endpoint::Logout, None) => now(json_response(
                StatusCode::NOT_FOUND,
                json!({"error": "not_found", "message": "Sign in with Whop is not configured here ([identity.session])"}),
            )),
            (Endpoint::Me, _) if get => {
                let state = self.clone();
                let headers = req.headers().clone();
                let uri = req.uri().clone();
                Box::pin(async move { state.me(uri, headers).await })
            }
            (Endpoint::Unknown, _) => {
                now(json_response(StatusCode::NOT_FOUND, json!({"error": "not_found", "message": "no such endpoint"})))
            }
            _ => {
                let mut response = json_response(
                    StatusCode::METHOD_NOT_ALLOWED,
                    json!({"error": "method_not_allowed", "message": "this endpoint does not take that method"}),
                );
                let allow = if endpoint == Endpoint::Logout { "GET, HEAD, POST" } else { "GET, HEAD" };
                response.headers_mut().insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
                now(response)
            }
        };
        Judgement::Answer { answer, log }
    }

    /// `GET {prefix}/me`: who the caller is, by whichever source identifies them.
    async fn me(self: Arc<Self>, uri: http::Uri, headers: HeaderMap) -> Response<Bytes> {
        let mut req = Request::new(());
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        let identity = match self.identifier.identify_now(&req) {
            Identified::Found(identity) => Ok(identity),
            Identified::Later(credential) => self.identifier.identify_later(credential).await.map_err(Some),
            Identified::Invalid(error) => Err(Some(error)),
            Identified::Anonymous => Err(None),
        };
        match identity {
            Ok(identity) => json_response(StatusCode::OK, describe(&identity)),
            Err(None) => json_response(
                StatusCode::UNAUTHORIZED,
                json!({"error": "unauthenticated", "message": "no Whop identity on this request"}),
            ),
            Err(Some(error)) => json_response(
                StatusCode::UNAUTHORIZED,
                json!({"error": "invalid_credentials", "message": error.to_string()}),
            ),
        }
    }
}

fn describe(identity: &Identity) -> serde_json::Value {
    let mut body = json!({"user_id": &*identity.user_id, "source": identity.source.as_str()});
    if let Some(name) = &identity.name {
        body["name"] = json!(&**name);
    }
    if let Some(email) = &identity.email {
        body["email"] = json!(&**email);
    }
    body
}
