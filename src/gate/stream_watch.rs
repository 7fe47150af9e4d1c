//! Open streams stay judged: a response that is still streaming (server-sent events, a long
//! download) or a WebSocket tunnel is re-judged every `cache.revalidate_streams`, and at once
//! when a webhook names its user (or a replica learns it may have missed some); it ends as soon
//! as the judgement is no longer "allow".
//!
//! Nothing here runs for an ordinary response: [`Subject`] only carries what the judgement
//! already had (the rule and the identity, moved, not copied), and the watch starts the first
//! time the response body has nothing ready to send, i.e. when it has become a stream.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::broadcast;

use super::GateState;
use super::judge::Verdict;
use crate::identity::Identity;

/// What a cleared request was judged as: enough to judge it again.
#[derive(Debug, Clone)]
pub(crate) struct Subject {
    pub(crate) rule: usize,
    pub(crate) identity: Arc<Identity>,
    /// [`Revocations::epoch`] when it was judged: a revocation between then and the watch's
    /// start is not missed.
    pub(crate) epoch: u64,
}

/// Whose streams must be judged again now.
#[derive(Debug, Clone)]
enum Revoked {
    /// A webhook (here or on another replica) changed this user's access.
    User(Arc<str>),
    /// Changes may have been missed (a replica back from losing its subscription): anyone's.
    Everyone,
}

/// Which users webhooks revoked, told to every open stream.
#[derive(Debug)]
pub(crate) struct Revocations {
    epoch: AtomicU64,
    sender: broadcast::Sender<Revoked>,
}

impl Revocations {
    pub(crate) fn new() -> Self {
        // A stream that falls this far behind re-judges at once (`Lagged`), so nothing is lost.
        let (sender, _) = broadcast::channel(256);
        Self { epoch: AtomicU64::new(0), sender }
    }

    /// How many revocations there have been.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// `user`'s access changed: every stream of theirs is judged again now.
    pub(crate) fn revoke(&self, user: &str) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        // No receiver (no open stream) is not an error.
        let _ = self.sender.send(Revoked::User(Arc::from(user)));
    }

    /// Revocations may have been missed: every open stream is judged again now, so none
    /// outlives a revocation by more than its re-judgement.
    pub(crate) fn revoke_everyone(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        let _ = self.sender.send(Revoked::Everyone);
    }
}

/// A stream's watch: resolves when the stream must end.
pub type Watch = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The watch for a stream of `subject`'s, re-judged every `gate.revalidate_streams`.
pub(crate) fn watch(gate: Arc<GateState>, subject: Subject) -> Watch {
    Box::pin(async move {
        let mut revoked = gate.revocations.sender.subscribe();
        let interval = gate.revalidate_streams;
        let mut stale = gate.revocations.epoch() != subject.epoch;
        let mut next = tokio::time::Instant::now() + interval;
        loop {
            if !stale {
                tokio::select! {
                    () = tokio::time::sleep_until(next) => {}
                    received = revoked.recv() => match received {
                        Ok(Revoked::User(user)) if *user != *subject.identity.user_id => continue,
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        // The gate is gone: so is whatever served this stream.
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                }
            }
            stale = false;
            next = tokio::time::Instant::now() + interval;
            if !gate.still_allowed(&subject).await {
                gate.metrics.streams_closed.inc();
                tracing::info!(user_id = %subject.identity.user_id, "an open stream was closed: access is no longer granted");
                return;
            }
        }
    })
}

impl GateState {
    /// Judges `subject` again, as a new request under its rule would be (through the cache).
    async fn still_allowed(self: &Arc<Self>, subject: &Subject) -> bool {
        let Some(rule) = self.routes.rules().get(subject.rule) else { return false };
        let verdict = match self.decide_now(rule, &subject.identity, std::time::Instant::now()) {
            Some(verdict) => verdict,
            None => self.decide_later(rule, subject.identity.clone()).await,
        };
        matches!(verdict, Verdict::Forward { .. })
    }
}

/// How a tunnel behind the gate learns when to end: the service that answers `101` puts a
/// `StreamControl` into the extensions of that response and keeps its [`StreamEnd`]; the gate,
/// seeing the control, hands over the watch of the request it judged, and the [`StreamEnd`]
/// resolves once that request would no longer be allowed (a webhook revoked its user, or the
/// re-judgement every `cache.revalidate_streams` said no). The sidecar's WebSocket tunnel works
/// this way; so can a WebSocket an app behind [`GateLayer`](crate::GateLayer) upgrades itself:
///
/// ```no_run
/// use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
/// use axum::response::{IntoResponse, Response};
/// use whopgate::{StreamControl, StreamEnd};
///
/// async fn chat(upgrade: WebSocketUpgrade) -> Response {
///     let (control, end) = StreamControl::new();
///     let mut response = upgrade.on_upgrade(move |socket| serve(socket, end)).into_response();
///     // The gate in front takes this on the way out and starts watching.
///     response.extensions_mut().insert(control);
///     response
/// }
///
/// async fn serve(mut socket: WebSocket, end: StreamEnd) {
///     tokio::pin!(end);
///     loop {
///         tokio::select! {
///             () = &mut end => {
///                 let frame = CloseFrame { code: 1008, reason: "access revoked".into() };
///                 let _ = socket.send(Message::Close(Some(frame))).await;
///                 return;
///             }
///             message = socket.recv() => match message {
///                 Some(Ok(Message::Text(text))) => {
///                     if socket.send(Message::Text(text)).await.is_err() {
///                         return;
///                     }
///                 }
///                 Some(Ok(_)) => {}
///                 _ => return,
///             },
///         }
///     }
/// }
/// ```
///
/// A tunnel on a public route, or with no gate in front, is never given a watch: its
/// [`StreamEnd`] never resolves.
#[derive(Clone)]
pub struct StreamControl(Arc<std::sync::Mutex<Option<tokio::sync::oneshot::Sender<Watch>>>>);

impl std::fmt::Debug for StreamControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamControl")
    }
}

/// Resolves when the tunnel of a [`StreamControl`] must end: its request is no longer allowed.
/// Never resolves for a tunnel the gate did not watch (a public route, no gate in front).
pub struct StreamEnd(Pin<Box<dyn Future<Output = ()> + Send>>);

impl std::fmt::Debug for StreamEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamEnd")
    }
}

impl Future for StreamEnd {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

impl StreamControl {
    /// A control to put into a `101` response's extensions, and the end of its tunnel.
    pub fn new() -> (Self, StreamEnd) {
        let (sender, receiver) = tokio::sync::oneshot::channel::<Watch>();
        let end = StreamEnd(Box::pin(async move {
            match receiver.await {
                Ok(watch) => watch.await,
                // No watch was given (the control was dropped unused): nothing ends the tunnel.
                Err(_) => std::future::pending().await,
            }
        }));
        (Self(Arc::new(std::sync::Mutex::new(Some(sender)))), end)
    }

    pub(crate) fn give(&self, watch: Watch) {
        let sender = self.0.lock().ok().and_then(|mut slot| slot.take());
        if let Some(sender) = sender {
            // A tunnel that already ended does not need it.
            let _ = sender.send(watch);
        }
    }
}
