//! The gate answering whopgate's own endpoints under `prefix` (see [`crate::endpoints`]).

use std::future::{Future, ready};
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use serde_json::json;

use super::GateState;
use super::answer::Answer;
use super::denial::Denial;
use super::judge::Judgement;
use super::negotiate::ResponseStyle;
use crate::endpoints::Endpoint;
use crate::identity::{Identified, Identity};
use crate::response::json_response;

type Answering = Pin<Box<dyn Future<Output = Response<Bytes>> + Send>>;

fn now(response: Response<Bytes>) -> Answering {
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
            (Endpoint::Login | Endpoint::Callback | Endpoint::Logout, None) => {
                now(Answer::SignInOff.into_response(ResponseStyle::Api))
            }
            (Endpoint::Me, _) if get => {
                let state = self.clone();
                let headers = req.headers().clone();
                let uri = req.uri().clone();
                Box::pin(async move { state.me(uri, headers).await })
            }
            (Endpoint::Unknown, _) => now(Answer::NoEndpoint.into_response(ResponseStyle::Api)),
            _ => {
                let allow = if endpoint == Endpoint::Logout { "GET, HEAD, POST" } else { "GET, HEAD" };
                now(Answer::MethodNotAllowed { allow }.into_response(ResponseStyle::Api))
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
            Err(None) => Denial::Unauthenticated { login_url: None }.into_response(ResponseStyle::Api),
            Err(Some(error)) => Denial::InvalidCredentials { error, login_url: None, clear_cookie: None }
                .into_response(ResponseStyle::Api),
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
