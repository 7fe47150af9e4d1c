//! HTTP/1.1 on the upstream side, as bytes: request heads written straight from the
//! (already rewritten) `http::Request`, response heads parsed with `httparse` into an
//! `http::Response` whose header values are slices of the bytes read (no copies), and the
//! message-body framings of RFC 9112 §6 (length, chunked, until close).
//!
//! It is our own rather than hyper's client because the proxy's hot path is exactly this, and
//! owning it lets one task drive the whole exchange with reused buffers (see
//! [`super::conn`]).

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};

/// Most header lines accepted in an upstream response head.
const MAX_HEADERS: usize = 128;
/// Largest upstream response head accepted.
pub const MAX_HEAD_BYTES: usize = 64 * 1024 - 1;
/// Longest chunk-size line (size, extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;

/// How the upstream frames what follows a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 204, 304, a request without one).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the upstream closes the connection.
    UntilClose,
}

/// Why an upstream response could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecError {
    /// Not HTTP/1.x, or malformed.
    Malformed(&'static str),
    /// The head exceeds [`MAX_HEAD_BYTES`] or [`MAX_HEADERS`].
    TooLarge,
}

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CodecError::Malformed(what) => write!(f, "malformed upstream response: {what}"),
            CodecError::TooLarge => f.write_str("upstream response head too large"),
        }
    }
}

/// Writes a request head for `method target` with `headers` and then the `added` fields
/// (forwarding and identity headers), declaring `framing` for the body that follows. `headers`
/// must already be rid of hop-by-hop, forwarding and identity fields (the proxy and the gate do
/// that).
pub fn encode_request_head(
    out: &mut Vec<u8>,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    added: impl FnOnce(&mut Vec<u8>),
    framing: Framing,
) {
    out.clear();
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        // Framing is ours to state (below), never the client's.
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        write_field(out, name.as_str(), value);
    }
    added(out);
    match framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa_u64(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::Empty | Framing::UntilClose => {}
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes one header line, `name: value`.
pub fn write_field(out: &mut Vec<u8>, name: &str, value: &HeaderValue) {
    out.reserve(name.len() + value.len() + 4);
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn itoa_u64(n: u64) -> String {
    n.to_string()
}

/// A parsed upstream response head.
#[derive(Debug)]
pub struct Head {
    /// Status, headers (hop-by-hop ones removed, unless `keep_upgrade`), version.
    pub response: Response<()>,
    /// How the body is framed.
    pub framing: Framing,
    /// Whether the connection may carry another request afterwards.
    pub keep_alive: bool,
}

/// Parses a response head from the front of `buf`, consuming it. `Ok(None)`: more bytes needed.
/// `request_method` decides whether a body follows (HEAD has none).
pub fn parse_response_head(buf: &mut BytesMut, request_method: &Method) -> Result<Option<Head>, CodecError> {
    // Uninitialised slots: zeroing 128 of them per response cost more than parsing the head.
    let mut slots = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut parsed, buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD_BYTES => return Err(CodecError::TooLarge),
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => return Err(CodecError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(CodecError::TooLarge),
        Err(_) => return Err(CodecError::Malformed("invalid response head")),
    };
    let code = parsed.code.ok_or(CodecError::Malformed("no status"))?;
    let status = StatusCode::from_u16(code).map_err(|_| CodecError::Malformed("invalid status"))?;
    let version = if parsed.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
    // Header positions, so the values can become slices of the head once it is split off.
    let base = buf.as_ptr() as usize;
    let count = parsed.headers.len();
    // Offsets fit in u16: heads are at most MAX_HEAD_BYTES (64 KiB) long.
    let offset = |slice: &[u8]| u16::try_from(slice.as_ptr() as usize - base).unwrap_or(u16::MAX);
    let length = |slice: &[u8]| u16::try_from(slice.len()).unwrap_or(u16::MAX);
    let spans: smallvec::SmallVec<[(u16, u16, u16, u16); 16]> = parsed
        .headers
        .iter()
        .map(|h| (offset(h.name.as_bytes()), length(h.name.as_bytes()), offset(h.value), length(h.value)))
        .collect();
    let head = buf.split_to(len).freeze();
    let upgrade = status == StatusCode::SWITCHING_PROTOCOLS;

    // Room for what the gate adds (x-request-id) without growing the map again. Not tighter:
    // hyper keeps the response's map (cleared) for the next request on the connection, which
    // then needs room for the headers the gate and proxy may add.
    let mut headers = HeaderMap::with_capacity(count + 2);
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut keep_alive = version == Version::HTTP_11;
    let mut connection_named: smallvec::SmallVec<[HeaderName; 2]> = smallvec::SmallVec::new();
    for &(name_at, name_len, value_at, value_len) in &spans {
        let (name_at, name_len) = (usize::from(name_at), usize::from(name_len));
        let (value_at, value_len) = (usize::from(value_at), usize::from(value_len));
        let name = HeaderName::from_bytes(&head[name_at..name_at + name_len])
            .map_err(|_| CodecError::Malformed("invalid header name"))?;
        let value_bytes = &head[value_at..value_at + value_len];
        match name.as_str() {
            "content-length" => {
                let n = parse_content_length(value_bytes)?;
                if content_length.is_some_and(|c| c != n) {
                    return Err(CodecError::Malformed("conflicting content-length"));
                }
                content_length = Some(n);
                continue;
            }
            "transfer-encoding" => {
                transfer_encoding = true;
                // Chunked only when it is the final coding (RFC 9112 §6.3).
                chunked = value_bytes
                    .rsplit(|b| *b == b',')
                    .next()
                    .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
                continue;
            }
            "connection" => {
                for token in value_bytes.split(|b| *b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        keep_alive = false;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        keep_alive = keep_alive || version == Version::HTTP_10;
                    } else if let Ok(named) = HeaderName::from_bytes(token) {
                        connection_named.push(named);
                    }
                }
                if upgrade {
                    headers.append(name, HeaderValue::from_static("upgrade"));
                }
                continue;
            }
            "keep-alive" | "proxy-connection" | "proxy-authenticate" | "proxy-authorization" | "te" | "trailer" => {
                continue;
            }
            "upgrade" if !upgrade => continue,
            _ => {}
        }
        let value = HeaderValue::from_maybe_shared(head.slice(value_at..value_at + value_len))
            .map_err(|_| CodecError::Malformed("invalid header value"))?;
        headers.append(name, value);
    }
    for name in connection_named {
        if !(upgrade && name == header::UPGRADE) {
            headers.remove(&name);
        }
    }

    let no_body = request_method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if no_body {
        if let Some(n) = content_length {
            // Tells the client the size of what a GET would get; the body is absent.
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        Framing::Empty
    } else if transfer_encoding {
        if chunked { Framing::Chunked } else { Framing::UntilClose }
    } else if let Some(n) = content_length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    if framing == Framing::UntilClose {
        keep_alive = false;
    }
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    Ok(Some(Head { response, framing, keep_alive }))
}

fn parse_content_length(value: &[u8]) -> Result<u64, CodecError> {
    // A list of identical values is allowed (RFC 9110 §8.6); anything else is an error.
    let mut found: Option<u64> = None;
    for part in value.split(|b| *b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return Err(CodecError::Malformed("invalid content-length"));
        }
        let n = part.iter().fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
        if found.is_some_and(|f| f != n) {
            return Err(CodecError::Malformed("conflicting content-length"));
        }
        found = Some(n);
    }
    found.ok_or(CodecError::Malformed("empty content-length"))
}

/// Where a chunked body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkState {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk with this many data bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
    /// The body is complete.
    Done,
}

/// Decodes as much of a chunked body as `buf` holds. Returns the next data (possibly empty when
/// only framing was consumed), or `None` when more bytes are needed; `state` becomes `Done` at
/// the end. Trailers are read and dropped.
pub fn decode_chunked(buf: &mut BytesMut, state: &mut ChunkState) -> Result<Option<Bytes>, CodecError> {
    loop {
        match *state {
            ChunkState::Done => return Ok(Some(Bytes::new())),
            ChunkState::Data(remaining) => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let take = usize::try_from(remaining).unwrap_or(usize::MAX).min(buf.len());
                let data = buf.split_to(take).freeze();
                let left = remaining - take as u64;
                *state = if left == 0 { ChunkState::DataEnd } else { ChunkState::Data(left) };
                return Ok(Some(data));
            }
            ChunkState::DataEnd => {
                if buf.len() < 2 {
                    return Ok(None);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(CodecError::Malformed("chunk not followed by CRLF"));
                }
                buf.advance(2);
                *state = ChunkState::Size;
            }
            ChunkState::Size => {
                let Some(line_end) = find_crlf(buf) else {
                    if buf.len() > MAX_CHUNK_LINE {
                        return Err(CodecError::Malformed("chunk-size line too long"));
                    }
                    return Ok(None);
                };
                let line = &buf[..line_end];
                let size_part = line.split(|b| *b == b';').next().unwrap_or(line).trim_ascii();
                if size_part.is_empty() || size_part.len() > 15 || !size_part.iter().all(u8::is_ascii_hexdigit) {
                    return Err(CodecError::Malformed("invalid chunk size"));
                }
                let size = size_part.iter().fold(0u64, |acc, d| {
                    acc * 16
                        + u64::from(match d {
                            b'0'..=b'9' => d - b'0',
                            b'a'..=b'f' => d - b'a' + 10,
                            _ => d - b'A' + 10,
                        })
                });
                buf.advance(line_end + 2);
                *state = if size == 0 { ChunkState::Trailers } else { ChunkState::Data(size) };
            }
            ChunkState::Trailers => {
                let Some(line_end) = find_crlf(buf) else {
                    if buf.len() > MAX_HEAD_BYTES {
                        return Err(CodecError::TooLarge);
                    }
                    return Ok(None);
                };
                buf.advance(line_end + 2);
                if line_end == 0 {
                    *state = ChunkState::Done;
                    return Ok(Some(Bytes::new()));
                }
            }
        }
    }
}

/// Writes the size line of a chunk of `len` data bytes (`len` in hex, then CRLF). The data and
/// [`CHUNK_END`] follow; the body ends with [`LAST_CHUNK`].
pub fn encode_chunk_size(out: &mut Vec<u8>, len: usize) {
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    let mut rest = len;
    loop {
        at -= 1;
        digits[at] = b"0123456789abcdef"[rest & 0xf];
        rest >>= 4;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
}

/// What follows a chunk's data.
pub const CHUNK_END: &[u8] = b"\r\n";

/// The last chunk of a chunked body, with no trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::super::headers::Forwarded;
    use super::*;

    fn parse(text: &str, method: Method) -> Result<Option<Head>, CodecError> {
        let mut buf = BytesMut::from(text);
        parse_response_head(&mut buf, &method)
    }

    #[test]
    fn encodes_a_request_head_with_our_framing() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("app"));
        headers.insert("content-length", HeaderValue::from_static("999"));
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        let mut out = Vec::new();
        let forwarded = Forwarded {
            for_: HeaderValue::from_static("192.0.2.1"),
            proto: HeaderValue::from_static("http"),
            host: None,
        };
        encode_request_head(
            &mut out,
            &Method::POST,
            "/p?q=1",
            &headers,
            |out| forwarded.each_field(|n, v| write_field(out, n, v)),
            Framing::Length(3),
        );
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "POST /p?q=1 HTTP/1.1\r\nhost: app\r\nx-a: 1\r\nx-a: 2\r\n\
             x-forwarded-for: 192.0.2.1\r\nx-forwarded-proto: http\r\ncontent-length: 3\r\n\r\n"
        );
        encode_request_head(
            &mut out,
            &Method::PUT,
            "/",
            &headers,
            |out| forwarded.each_field(|n, v| write_field(out, n, v)),
            Framing::Chunked,
        );
        assert!(std::str::from_utf8(&out).unwrap().ends_with("transfer-encoding: chunked\r\n\r\n"));
    }

    #[test]
    fn parses_a_head_and_strips_hop_by_hop() {
        let text = "HTTP/1.1 200 OK\r\nServer: nginx\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\nok";
        let mut buf = BytesMut::from(text);
        let head = parse_response_head(&mut buf, &Method::GET).unwrap().unwrap();
        assert_eq!(head.response.status(), 200);
        assert_eq!(head.framing, Framing::Length(2));
        assert!(head.keep_alive);
        let h = head.response.headers();
        assert_eq!(h["server"], "nginx");
        assert_eq!(h.get_all("set-cookie").iter().count(), 2);
        for gone in ["connection", "keep-alive", "x-hop", "content-length"] {
            assert!(!h.contains_key(gone), "{gone}");
        }
        assert_eq!(&buf[..], b"ok", "the body stays in the buffer");
    }

    #[test]
    fn framing_rules() {
        let cases = [
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
                Method::GET,
                Framing::Chunked,
                true,
            ),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", Method::GET, Framing::UntilClose, false),
            ("HTTP/1.1 200 OK\r\n\r\n", Method::GET, Framing::UntilClose, false),
            ("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", Method::HEAD, Framing::Empty, true),
            ("HTTP/1.1 204 No Content\r\n\r\n", Method::GET, Framing::Empty, true),
            ("HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n", Method::GET, Framing::Empty, true),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\n",
                Method::GET,
                Framing::Length(4),
                false,
            ),
            ("HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\n", Method::GET, Framing::Length(4), false),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 4\r\nConnection: keep-alive\r\n\r\n",
                Method::GET,
                Framing::Length(4),
                true,
            ),
            ("HTTP/1.1 200 OK\r\nContent-Length: 4, 4\r\n\r\n", Method::GET, Framing::Length(4), true),
        ];
        for (text, method, framing, keep_alive) in cases {
            let head = parse(text, method).unwrap().unwrap();
            assert_eq!((head.framing, head.keep_alive), (framing, keep_alive), "{text:?}");
        }
    }

    #[test]
    fn refuses_bad_heads() {
        for text in [
            "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 4, 5\r\n\r\n",
            "SMTP ready\r\n\r\n",
            "HTTP/1.1 99999 Huh\r\n\r\n",
        ] {
            assert!(parse(text, Method::GET).is_err(), "{text:?}");
        }
        assert!(matches!(parse("HTTP/1.1 200 OK\r\nX: y", Method::GET), Ok(None)), "partial");
        let huge = format!("HTTP/1.1 200 OK\r\nX: {}", "y".repeat(MAX_HEAD_BYTES + 10));
        assert_eq!(parse(&huge, Method::GET).unwrap_err(), CodecError::TooLarge);
        let complete_but_huge = format!("{huge}\r\n\r\n");
        assert_eq!(parse(&complete_but_huge, Method::GET).unwrap_err(), CodecError::TooLarge);
    }

    #[test]
    fn upgrade_keeps_upgrade_headers() {
        let head = parse(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        let h = head.response.headers();
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(head.framing, Framing::Empty);
    }

    fn decode_all(input: &[u8], split: usize) -> Result<Vec<u8>, CodecError> {
        let mut state = ChunkState::Size;
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input.chunks(split.max(1)) {
            buf.extend_from_slice(piece);
            while state != ChunkState::Done {
                match decode_chunked(&mut buf, &mut state)? {
                    Some(data) => out.extend_from_slice(&data),
                    None => break,
                }
            }
        }
        if state != ChunkState::Done {
            return Err(CodecError::Malformed("incomplete"));
        }
        Ok(out)
    }

    #[test]
    fn decodes_chunked_bodies_split_anywhere() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\n";
        for split in 1..body.len() {
            assert_eq!(decode_all(body, split).unwrap(), b"hello world0123456789", "split {split}");
        }
        assert!(decode_all(b"zz\r\n", 100).is_err());
        assert!(decode_all(b"5\r\nhelloXX0\r\n\r\n", 100).is_err());
        assert!(decode_all(b"5\r\nhel", 100).is_err(), "incomplete");
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// A response as the upstream might write it: status, headers, body and its framing.
        #[derive(Debug, Clone)]
        struct Written {
            status: u16,
            headers: Vec<(String, String)>,
            body: Vec<u8>,
            /// `None`: `Content-Length`; `Some(sizes)`: chunked, cut into chunks of these sizes.
            chunks: Option<Vec<usize>>,
        }

        impl Written {
            fn bytes(&self) -> Vec<u8> {
                let mut out = format!("HTTP/1.1 {} X\r\n", self.status).into_bytes();
                for (name, value) in &self.headers {
                    out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
                }
                match &self.chunks {
                    None => out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", self.body.len()).as_bytes()),
                    Some(_) => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n"),
                }
                match &self.chunks {
                    None => out.extend_from_slice(&self.body),
                    Some(sizes) => out.extend_from_slice(&encode_chunked(&self.body, sizes)),
                }
                out
            }
        }

        /// `body` with the proxy's own chunk encoder, cut where `sizes` say (the rest in one).
        fn encode_chunked(body: &[u8], sizes: &[usize]) -> Vec<u8> {
            let mut out = Vec::new();
            let mut rest = body;
            for &size in sizes.iter().chain(std::iter::once(&usize::MAX)) {
                if rest.is_empty() {
                    break;
                }
                let (chunk, tail) = rest.split_at(size.clamp(1, rest.len()));
                encode_chunk_size(&mut out, chunk.len());
                out.extend_from_slice(chunk);
                out.extend_from_slice(CHUNK_END);
                rest = tail;
            }
            out.extend_from_slice(LAST_CHUNK);
            out
        }

        /// Status, headers and body, as a reader made them out.
        type Read = (u16, Vec<(String, Vec<u8>)>, Vec<u8>);

        /// What a reader makes of `pieces` fed one after another.
        fn read(pieces: &[&[u8]]) -> Result<Read, CodecError> {
            let mut buf = BytesMut::new();
            let mut head = None;
            let mut body = Vec::new();
            let mut state = ChunkState::Size;
            for piece in pieces {
                buf.extend_from_slice(piece);
                if head.is_none() {
                    head = parse_response_head(&mut buf, &Method::GET)?;
                }
                match head.as_ref().map(|h: &Head| h.framing) {
                    Some(Framing::Chunked) => {
                        while state != ChunkState::Done {
                            match decode_chunked(&mut buf, &mut state)? {
                                Some(data) => body.extend_from_slice(&data),
                                None => break,
                            }
                        }
                    }
                    Some(_) => body.extend_from_slice(&buf.split()),
                    None => {}
                }
            }
            let head = head.ok_or(CodecError::Malformed("incomplete head"))?;
            if head.framing == Framing::Chunked && state != ChunkState::Done {
                return Err(CodecError::Malformed("incomplete body"));
            }
            let headers =
                head.response.headers().iter().map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec())).collect();
            Ok((head.response.status().as_u16(), headers, body))
        }

        fn written() -> impl Strategy<Value = Written> {
            let header = ("[a-z][a-z0-9-]{0,12}", "[ -~&&[^ ]]([ -~]{0,20}[!-~])?").prop_filter(
                "not a framing or hop-by-hop name",
                |(n, _)| {
                    !matches!(
                        n.as_str(),
                        "content-length"
                            | "transfer-encoding"
                            | "connection"
                            | "keep-alive"
                            | "te"
                            | "trailer"
                            | "upgrade"
                            | "proxy-connection"
                            | "proxy-authenticate"
                    )
                },
            );
            (
                prop::sample::select(vec![200u16, 201, 301, 404, 500, 503]),
                prop::collection::vec(header, 0..6),
                prop::collection::vec(any::<u8>(), 0..300),
                prop::option::of(prop::collection::vec(1usize..40, 0..8)),
            )
                .prop_map(|(status, headers, body, chunks)| Written { status, headers, body, chunks })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]

            /// However the upstream's bytes arrive (cut at any one byte, or one byte at a time),
            /// the reader sees the same head and body as from one read.
            #[test]
            fn a_response_split_anywhere_reads_the_same(written in written()) {
                let bytes = written.bytes();
                let whole = read(&[&bytes]).expect("a well-formed response");
                prop_assert_eq!(whole.0, written.status);
                prop_assert_eq!(&whole.2, &written.body);
                for (name, value) in &written.headers {
                    prop_assert!(whole.1.iter().any(|(n, v)| n == name && v == value.as_bytes()), "{} lost", name);
                }
                for split in 0..=bytes.len() {
                    let (a, b) = bytes.split_at(split);
                    prop_assert_eq!(&read(&[a, b]).expect("split"), &whole, "split at {}", split);
                }
                let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
                prop_assert_eq!(&read(&bytewise).expect("byte by byte"), &whole);
            }

            /// What the proxy's chunk encoder writes, the decoder reads back, split anywhere.
            #[test]
            fn chunked_bodies_round_trip(
                body in prop::collection::vec(any::<u8>(), 0..2000),
                sizes in prop::collection::vec(1usize..600, 0..10),
                split in 1usize..64,
            ) {
                let encoded = encode_chunked(&body, &sizes);
                let mut buf = BytesMut::new();
                let mut state = ChunkState::Size;
                let mut decoded = Vec::new();
                for piece in encoded.chunks(split) {
                    buf.extend_from_slice(piece);
                    while state != ChunkState::Done {
                        match decode_chunked(&mut buf, &mut state).expect("our own encoding") {
                            Some(data) => decoded.extend_from_slice(&data),
                            None => break,
                        }
                    }
                }
                prop_assert_eq!(state, ChunkState::Done);
                prop_assert_eq!(decoded, body);
                prop_assert!(buf.is_empty(), "nothing left over");
            }

            /// Chunk size lines for any length read back as that length.
            #[test]
            fn chunk_sizes_round_trip(len in 0usize..(1 << 40)) {
                let mut line = Vec::new();
                encode_chunk_size(&mut line, len);
                prop_assert_eq!(line, format!("{len:x}\r\n").into_bytes());
            }
        }
    }
}
