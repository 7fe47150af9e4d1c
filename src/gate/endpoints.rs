//! The gate answering whopgate's own endpoints under `prefix` (see [`crate::endpoints`]).

use std::future::ready;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use serde_json::json;

use super::GateState;
use super::answer::Answer;
use super::denial::Denial;
use super::judge::{Answering, Judgement};
use super::negotiate::ResponseStyle;
use crate::endpoints::Endpoint;
use crate::identity::{Identified, Identity};
use crate::response::json_response;
use crate::webhook;

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
            (Endpoint::Webhook, _) if self.webhook.is_none() => {
                now(Answer::WebhookOff.into_response(ResponseStyle::Api))
            }
            // The body is the delivery: read where the request is owned (`service::hand_over`).
            (Endpoint::Webhook, _) if method == Method::POST => return Judgement::Webhook { gate: self.clone(), log },
            (Endpoint::Unknown, _) => now(Answer::NoEndpoint.into_response(ResponseStyle::Api)),
            _ => {
                let allow = match endpoint {
                    Endpoint::Logout => "GET, HEAD, POST",
                    Endpoint::Webhook => "POST",
                    _ => "GET, HEAD",
                };
                now(Answer::MethodNotAllowed { allow }.into_response(ResponseStyle::Api))
            }
        };
        Judgement::Answer { answer, log }
    }

    /// `POST {prefix}/webhook`: reads the delivery (bounded in size and time), asks the
    /// [`crate::webhook::Receiver`] what it comes to, and forgets the user it concerns.
    pub(crate) async fn receive_webhook<B>(self: Arc<Self>, headers: HeaderMap, body: B) -> Response<Bytes>
    where
        B: http_body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let Some(receiver) = &self.webhook else {
            return Answer::WebhookOff.into_response(ResponseStyle::Api);
        };
        let read = http_body_util::BodyExt::collect(http_body_util::Limited::new(body, webhook::MAX_BODY_BYTES));
        let body = match tokio::time::timeout(webhook::BODY_DEADLINE, read).await {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(error)) => {
                let too_large = error.downcast_ref::<http_body_util::LengthLimitError>().is_some();
                self.metrics.webhooks.with_label_values(&["malformed"]).inc();
                return Answer::WebhookBody { too_large }.into_response(ResponseStyle::Api);
            }
            Err(_) => {
                self.metrics.webhooks.with_label_values(&["malformed"]).inc();
                return Answer::WebhookBody { too_large: false }.into_response(ResponseStyle::Api);
            }
        };
        let outcome = tokio::time::timeout(webhook::RECEIVE_DEADLINE, receiver.receive(&headers, &body))
            .await
            .unwrap_or(webhook::Outcome::Failed);
        self.metrics.webhooks.with_label_values(&[outcome.label()]).inc();
        match &outcome {
            webhook::Outcome::Applied { kind, user } => {
                self.forget_user(user);
                tracing::info!(event = %kind, user_id = %user, "webhook: the user's cached decisions dropped");
            }
            webhook::Outcome::Ignored { kind } => tracing::debug!(event = %kind, "webhook ignored"),
            webhook::Outcome::Replayed => tracing::debug!("webhook replayed: ignored"),
            webhook::Outcome::BadSignature(rejected) => {
                tracing::debug!(reason = rejected.message(), "webhook refused: not shown to be Whop's");
            }
            webhook::Outcome::Malformed(why) => tracing::warn!(reason = why, "webhook refused: malformed body"),
            webhook::Outcome::Failed => {}
        }
        Answer::Webhook(outcome).into_response(ResponseStyle::Api)
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
