//! The body of what the proxy answers: the upstream's streamed body, or a short local one.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::pool::{UpstreamPool, UpstreamSender};

/// A response body that streams from the upstream frame by frame (never buffered) and hands its
/// connection back to the pool once read to the end.
#[derive(Debug)]
pub struct ProxyBody {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Upstream { body: Incoming, reuse: Option<Reuse> },
    Local(Option<Bytes>),
}

#[derive(Debug)]
struct Reuse {
    sender: UpstreamSender,
    pool: Arc<UpstreamPool>,
}

impl ProxyBody {
    /// The upstream's body; `reuse` returns the connection to `pool` after the last byte.
    pub(crate) fn upstream(body: Incoming, reuse: Option<(UpstreamSender, Arc<UpstreamPool>)>) -> Self {
        let reuse = reuse.map(|(sender, pool)| Reuse { sender, pool });
        Self { kind: Kind::Upstream { body, reuse } }
    }

    /// A body made here (error pages).
    pub fn local(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        Self { kind: Kind::Local((!data.is_empty()).then_some(data)) }
    }

    /// No body.
    pub fn empty() -> Self {
        Self { kind: Kind::Local(None) }
    }
}

impl Kind {
    fn release_if_done(&mut self) {
        if let Kind::Upstream { body, reuse } = self {
            if body.is_end_stream() {
                if let Some(Reuse { sender, pool }) = reuse.take() {
                    pool.put(sender);
                }
            }
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match &mut self.kind {
            Kind::Upstream { body, reuse } => {
                let polled = Pin::new(body).poll_frame(cx);
                match &polled {
                    Poll::Ready(None) => {
                        if let Some(Reuse { sender, pool }) = reuse.take() {
                            pool.put(sender);
                        }
                    }
                    Poll::Ready(Some(Err(_))) => {
                        // A broken body means a broken connection: never reuse it.
                        reuse.take();
                    }
                    _ => self.kind.release_if_done(),
                }
                polled
            }
            Kind::Local(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Upstream { body, .. } => body.is_end_stream(),
            Kind::Local(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream { body, .. } => body.size_hint(),
            Kind::Local(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        // hyper stops polling once `is_end_stream()` says so; the connection is reusable then.
        self.kind.release_if_done();
    }
}
