//! One keep-alive HTTP/1.1 connection to the upstream, driven by the request that uses it.
//!
//! No background task and no channels: the request's own future writes the head and the body
//! and reads the response head, and the response body (see [`super::body`]) reads the rest and
//! hands the connection back to the worker's pool. Buffers live with the connection and are
//! reused from one request to the next.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{Method, Response};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::Added;
use super::codec::{self, CodecError, Framing, Head};
use super::deadline::Deadlines;

/// Read buffer size: one read takes a typical response whole.
const READ_CHUNK: usize = 16 * 1024;
/// Request body pieces up to this size are copied next to their framing and sent in one write.
const COALESCE_LIMIT: usize = 16 * 1024;

/// Why an exchange with the upstream failed.
#[derive(Debug)]
pub enum UpstreamError {
    /// The socket failed.
    Io(io::Error),
    /// The upstream closed the connection before a complete response head.
    Closed,
    /// The upstream's response could not be read.
    Protocol(CodecError),
    /// The client's request body failed mid-stream.
    RequestBody(hyper::Error),
    /// No progress within `upstream_timeout`.
    Timeout,
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Io(e) => write!(f, "{e}"),
            UpstreamError::Closed => f.write_str("connection closed before a response"),
            UpstreamError::Protocol(e) => write!(f, "{e}"),
            UpstreamError::RequestBody(e) => write!(f, "the client's request body failed: {e}"),
            UpstreamError::Timeout => f.write_str("timed out"),
        }
    }
}

impl std::error::Error for UpstreamError {}

/// An open connection to the upstream.
#[derive(Debug)]
pub struct UpstreamConn {
    io: TcpStream,
    /// Bytes read and not yet consumed.
    pub(super) read: BytesMut,
    write: Vec<u8>,
    /// Requests this connection has carried.
    uses: u64,
    pub(super) idle_since: Instant,
}

/// The outcome of sending a request: its response head, and the connection to read the body
/// from.
#[derive(Debug)]
pub struct Exchange {
    /// The response, without its body.
    pub response: Response<()>,
    /// How the body is framed.
    pub framing: Framing,
    /// Whether the connection can carry another request once the body is read.
    pub keep_alive: bool,
    /// The connection, positioned at the start of the body.
    pub conn: UpstreamConn,
}

impl UpstreamConn {
    /// Connects to `authority` (`host:port`).
    pub async fn connect(authority: &str) -> io::Result<Self> {
        let io = TcpStream::connect(authority).await?;
        io.set_nodelay(true)?;
        Ok(Self {
            io,
            read: BytesMut::with_capacity(READ_CHUNK),
            write: Vec::with_capacity(1024),
            uses: 0,
            idle_since: Instant::now(),
        })
    }

    /// Has the upstream closed (or written unasked) while this connection was idle? Uses the
    /// readiness the reactor already recorded: no syscall.
    pub fn is_stale(&self) -> bool {
        if !self.read.is_empty() {
            return true;
        }
        let mut cx = Context::from_waker(Waker::noop());
        matches!(self.io.poll_read_ready(&mut cx), Poll::Ready(_))
    }

    /// Sends `req` (head and body) and reads the response head. Every wait on the upstream is
    /// bounded by `timeout` (kept by the worker's `deadlines` when there are). On failure, the
    /// flag says whether the request may be sent again on another connection: only when nothing
    /// of it can have been acted on.
    pub(crate) async fn send(
        mut self,
        parts: &http::request::Parts,
        added: Added<'_>,
        body: Option<Incoming>,
        timeout: Duration,
        deadlines: Option<&Deadlines>,
    ) -> Result<Exchange, (UpstreamError, bool)> {
        let reused = self.uses > 0;
        self.uses += 1;
        let method = &parts.method;
        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let empty = body.is_none();
        let framing = match &body {
            // Only methods that carry a body say it is empty.
            None if matches!(*method, Method::POST | Method::PUT | Method::PATCH) => Framing::Length(0),
            None => Framing::Empty,
            Some(body) => match body.size_hint().exact() {
                Some(n) => Framing::Length(n),
                None => Framing::Chunked,
            },
        };
        codec::encode_request_head(&mut self.write, method, target, &parts.headers, |out| added.write(out), framing);

        // A keep-alive connection the upstream closed just as we reused it fails before any
        // response byte; an idempotent request without a body is then safely sent again.
        let retryable = |error: &UpstreamError, read_nothing: bool| {
            reused
                && empty
                && read_nothing
                && method.is_idempotent()
                && matches!(error, UpstreamError::Closed | UpstreamError::Io(_))
        };
        let result = match body {
            // The common case, one timer for the whole exchange: the head goes out in one write
            // and the response head comes back.
            None => {
                let exchange = async {
                    self.io.write_all(&self.write).await.map_err(|e| (UpstreamError::Io(e), true))?;
                    self.read_head(method).await.map_err(|e| (e, false))
                };
                let bounded = match deadlines {
                    Some(deadlines) => deadlines.bound(exchange).await.ok(),
                    None => tokio::time::timeout(timeout, exchange).await.ok(),
                };
                bounded.unwrap_or(Err((UpstreamError::Timeout, false)))
            }
            Some(mut body) => match self.send_body(&mut body, framing, timeout).await {
                Err(e) => Err((e, true)),
                Ok(()) => match tokio::time::timeout(timeout, self.read_head(method)).await {
                    Ok(result) => result.map_err(|e| (e, false)),
                    Err(_) => Err((UpstreamError::Timeout, false)),
                },
            },
        };
        match result {
            Ok(Head { response, framing, keep_alive }) => Ok(Exchange { response, framing, keep_alive, conn: self }),
            Err((error, before_response)) => {
                let again = retryable(&error, before_response || self.read.is_empty());
                Err((error, again))
            }
        }
    }

    async fn write_all_timed(&mut self, timeout: Duration) -> Result<(), UpstreamError> {
        match tokio::time::timeout(timeout, self.io.write_all(&self.write)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(UpstreamError::Io(e)),
            Err(_) => Err(UpstreamError::Timeout),
        }
    }

    /// Streams the request body after the head, as it arrives from the client (never
    /// buffered whole): raw for a known length, chunked otherwise.
    async fn send_body(
        &mut self,
        body: &mut Incoming,
        framing: Framing,
        timeout: Duration,
    ) -> Result<(), UpstreamError> {
        let chunked = framing == Framing::Chunked;
        // The head waits in `write` and goes out with the first piece of body.
        let mut head_pending = true;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(UpstreamError::RequestBody)?;
            let Ok(data) = frame.into_data() else { continue };
            if data.is_empty() {
                continue;
            }
            if !head_pending {
                self.write.clear();
            }
            head_pending = false;
            if chunked {
                codec::encode_chunk_size(&mut self.write, data.len());
            }
            if data.len() <= COALESCE_LIMIT {
                self.write.extend_from_slice(&data);
                if chunked {
                    self.write.extend_from_slice(codec::CHUNK_END);
                }
                self.write_all_timed(timeout).await?;
            } else {
                self.write_all_timed(timeout).await?;
                self.write_bytes_timed(&data, timeout).await?;
                if chunked {
                    self.write_bytes_timed(codec::CHUNK_END, timeout).await?;
                }
            }
        }
        if head_pending {
            // The body turned out empty: the head (and the last chunk) go now.
            if chunked {
                self.write.extend_from_slice(codec::LAST_CHUNK);
            }
            self.write_all_timed(timeout).await
        } else if chunked {
            self.write_bytes_timed(codec::LAST_CHUNK, timeout).await
        } else {
            Ok(())
        }
    }

    async fn write_bytes_timed(&mut self, data: &[u8], timeout: Duration) -> Result<(), UpstreamError> {
        match tokio::time::timeout(timeout, self.io.write_all(data)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(UpstreamError::Io(e)),
            Err(_) => Err(UpstreamError::Timeout),
        }
    }

    /// Reads until a final (non-1xx, or 101) response head is complete.
    async fn read_head(&mut self, method: &Method) -> Result<Head, UpstreamError> {
        loop {
            if !self.read.is_empty() {
                match codec::parse_response_head(&mut self.read, method) {
                    Ok(Some(head))
                        if head.response.status().is_informational()
                            && head.response.status() != http::StatusCode::SWITCHING_PROTOCOLS =>
                    {
                        // 100 Continue, 103 Early Hints: the final answer follows.
                        continue;
                    }
                    Ok(Some(head)) => return Ok(head),
                    Ok(None) => {}
                    Err(e) => return Err(UpstreamError::Protocol(e)),
                }
            }
            self.read.reserve(READ_CHUNK);
            match tokio::io::AsyncReadExt::read_buf(&mut self.io, &mut self.read).await {
                Ok(0) => return Err(UpstreamError::Closed),
                Ok(_) => {}
                Err(e) => return Err(UpstreamError::Io(e)),
            }
        }
    }

    /// Reads more bytes into the buffer (for the body). `Ready(Ok(0))` is end of stream.
    pub(super) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read.capacity() - self.read.len() < READ_CHUNK / 4 {
            self.read.reserve(READ_CHUNK);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read)
    }

    /// The socket and what was read beyond the response head, for an upgraded connection.
    pub fn into_upgraded(self) -> (TcpStream, Bytes) {
        (self.io, self.read.freeze())
    }

    /// Ready to wait in the pool.
    pub(super) fn park(&mut self) {
        self.idle_since = Instant::now();
    }
}
