//! The gate's response body: the inner service's, or a denial's; either way the request is
//! measured and logged when the body is finished or dropped.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::record::Record;
use super::stream_watch::{self, Subject, Watch};

pin_project! {
    /// Body of every response that passes through [`super::GateService`]. A gated response
    /// that turns into a stream is watched (see [`super::stream_watch`]) and ends, its inner
    /// body dropped, once its user is no longer allowed.
    pub struct GateBody<B> {
        #[pin]
        kind: Kind<B>,
        // Dropped with the body: that is when the request is over.
        record: Option<Record>,
        stream: Stream,
    }
}

/// Whether the body is watched.
enum Stream {
    /// Public, local, or not a stream.
    Off,
    /// Gated; watched once the body first has nothing ready.
    Armed(Subject),
    Watching(Watch),
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Local { data: Option<Bytes> },
    }
}

impl<B> GateBody<B> {
    pub(super) fn inner(body: B, record: Option<Record>, subject: Option<Subject>) -> Self {
        let stream = subject.map_or(Stream::Off, Stream::Armed);
        Self { kind: Kind::Inner { body }, record, stream }
    }

    pub(super) fn local(data: Bytes, record: Option<Record>) -> Self {
        Self { kind: Kind::Local { data: (!data.is_empty()).then_some(data) }, record, stream: Stream::Off }
    }
}

impl<B> std::fmt::Debug for GateBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GateBody").finish_non_exhaustive()
    }
}

/// Ends the body where it stands: the inner body (and with it the upstream's connection) is
/// dropped, and the client sees the stream end.
fn end<B, E>(mut kind: Pin<&mut Kind<B>>, stream: &mut Stream) -> Poll<Option<Result<Frame<Bytes>, E>>> {
    kind.set(Kind::Local { data: None });
    *stream = Stream::Off;
    Poll::Ready(None)
}

impl<B: Body<Data = Bytes>> Body for GateBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        if let Stream::Watching(watch) = this.stream {
            if watch.as_mut().poll(cx).is_ready() {
                return end(this.kind, this.stream);
            }
        }
        let polled = match this.kind.as_mut().project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Local { data } => return Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        };
        if polled.is_pending() && matches!(this.stream, Stream::Armed(_)) {
            // Nothing to send for now: the response has become a stream, so watch it.
            let (Stream::Armed(subject), Some(record)) =
                (std::mem::replace(this.stream, Stream::Off), this.record.as_ref())
            else {
                return polled;
            };
            let mut watch = stream_watch::watch(Arc::clone(record.gate()), subject);
            if watch.as_mut().poll(cx).is_ready() {
                return end(this.kind, this.stream);
            }
            *this.stream = Stream::Watching(watch);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Local { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Local { data } => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}
