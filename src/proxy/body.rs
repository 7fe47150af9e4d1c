//! The body of what the proxy answers: the upstream's, streamed from its connection frame by
//! frame (never buffered whole), or a short local one.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::codec::{self, ChunkState, CodecError, Framing};
use super::conn::{UpstreamConn, UpstreamError};
use super::pool::UpstreamPool;

/// A response body read from an upstream connection, which goes back to the pool once the body
/// has been read to its end (and closes otherwise).
#[derive(Debug)]
pub struct ProxyBody {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Upstream(Upstream),
    Local(Option<Bytes>),
}

#[derive(Debug)]
struct Upstream {
    /// `None` once the body is complete (the connection went back or was closed).
    conn: Option<UpstreamConn>,
    state: State,
    keep_alive: bool,
    pool: Arc<UpstreamPool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    Chunked(ChunkState),
    UntilClose,
    Done,
}

impl ProxyBody {
    /// The body that follows a response head on `conn`.
    pub(crate) fn upstream(conn: UpstreamConn, framing: Framing, keep_alive: bool, pool: Arc<UpstreamPool>) -> Self {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(ChunkState::Size),
            Framing::UntilClose => State::UntilClose,
        };
        let mut upstream = Upstream { conn: Some(conn), state, keep_alive, pool };
        if upstream.state == State::Done {
            upstream.finish();
        }
        Self { kind: Kind::Upstream(upstream) }
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

impl Upstream {
    /// The body is complete: the connection goes back to the pool if it can carry another
    /// request (and nothing unexpected follows the body), else it closes.
    fn finish(&mut self) {
        self.state = State::Done;
        if let Some(mut conn) = self.conn.take() {
            if self.keep_alive && conn.read.is_empty() {
                conn.park();
                self.pool.put(conn);
            }
        }
    }

    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, UpstreamError>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else { return Poll::Ready(None) };
            match self.state {
                State::Done => return Poll::Ready(None),
                State::Length(remaining) => {
                    if !conn.read.is_empty() {
                        let take = usize::try_from(remaining).unwrap_or(usize::MAX).min(conn.read.len());
                        let data = conn.read.split_to(take).freeze();
                        let left = remaining - take as u64;
                        self.state = State::Length(left);
                        if left == 0 {
                            // Done now, not at the next poll: the server stops polling once the
                            // body says it is at its end, and the connection should go back.
                            self.finish();
                        }
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
                State::Chunked(mut chunk) => {
                    let decoded = codec::decode_chunked(&mut conn.read, &mut chunk);
                    self.state = State::Chunked(chunk);
                    match decoded {
                        Err(e) => return Poll::Ready(Some(Err(UpstreamError::Protocol(e)))),
                        Ok(Some(data)) => {
                            if chunk == ChunkState::Done {
                                self.finish();
                            }
                            if !data.is_empty() {
                                return Poll::Ready(Some(Ok(data)));
                            }
                            continue;
                        }
                        Ok(None) => {}
                    }
                }
                State::UntilClose => {
                    if !conn.read.is_empty() {
                        return Poll::Ready(Some(Ok(conn.read.split().freeze())));
                    }
                }
            }
            // Need more bytes from the upstream.
            let Some(conn) = self.conn.as_mut() else { return Poll::Ready(None) };
            match conn.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(UpstreamError::Io(e))));
                }
                Poll::Ready(Ok(0)) => {
                    if self.state == State::UntilClose {
                        self.keep_alive = false;
                        self.finish();
                        return Poll::Ready(None);
                    }
                    self.conn = None;
                    return Poll::Ready(Some(Err(UpstreamError::Protocol(CodecError::Malformed(
                        "the upstream closed the connection mid-body",
                    )))));
                }
                Poll::Ready(Ok(_)) => {}
            }
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        match &mut self.kind {
            Kind::Upstream(upstream) => upstream.poll_data(cx).map(|d| d.map(|r| r.map(Frame::data))),
            Kind::Local(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Upstream(upstream) => upstream.state == State::Done,
            Kind::Local(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream(Upstream { state: State::Length(n), .. }) => SizeHint::with_exact(*n),
            Kind::Upstream(Upstream { state: State::Done, .. }) => SizeHint::with_exact(0),
            Kind::Upstream(_) => SizeHint::default(),
            Kind::Local(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}
