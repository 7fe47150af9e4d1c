//! Request path normalisation: the one place where a request path is judged safe and given the
//! single spelling that routes are matched against and the upstream receives.
//!
//! Auth bypasses in proxies come from the proxy and the app reading one path two ways
//! (`/public/..%2Fadmin`, `/%61dmin`, `/admin..;/`). The rule here (SPEC §4) is: decode what can be
//! decoded without changing meaning (unreserved characters), remove dot segments, merge repeated
//! slashes, and refuse anything whose meaning still depends on who decodes it.
//!
//! ```text
//! use whopgate::path::{normalize, PathRejection};
//!
//! assert_eq!(normalize("/%61dmin//users/./1").unwrap(), "/admin/users/1");
//! assert_eq!(normalize("/public/../admin").unwrap(), "/admin");
//! assert_eq!(normalize("/public/..%2Fadmin"), Err(PathRejection::EncodedSlash));
//! assert_eq!(normalize("/../etc/passwd"), Err(PathRejection::AboveRoot));
//! ```
//!
//! (The lines above run as the test `doc_example::normalised_paths`.)

use std::borrow::Cow;
use std::fmt;

/// Why a request path is refused (answered `400`, never forwarded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRejection {
    /// The path does not start with `/` (for example `*` or an empty path).
    NotAbsolute,
    /// `%2F` or `%5C`: an upstream that decodes it would see a different path.
    EncodedSlash,
    /// A raw backslash, which some servers read as `/`.
    Backslash,
    /// A NUL or other control character, raw or percent-encoded.
    ControlCharacter,
    /// A `%` not followed by two hex digits.
    BadPercentEncoding,
    /// A dot segment disguised with a parameter (`..;`, `.;x`), read as `..` by some servers.
    DisguisedDotSegment,
    /// Dot segments that climb above the root.
    AboveRoot,
}

impl PathRejection {
    /// A sentence for the client and the log.
    pub fn message(self) -> &'static str {
        match self {
            Self::NotAbsolute => "the request path must start with '/'",
            Self::EncodedSlash => "the request path contains an encoded slash (%2F or %5C)",
            Self::Backslash => "the request path contains a backslash",
            Self::ControlCharacter => "the request path contains a control character",
            Self::BadPercentEncoding => "the request path contains a malformed percent-encoding",
            Self::DisguisedDotSegment => "the request path contains a dot segment with a parameter",
            Self::AboveRoot => "the request path climbs above the root",
        }
    }
}

impl fmt::Display for PathRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for PathRejection {}

/// Normalises a request path (without its query), or says why it must be refused.
///
/// Returns the input unchanged (borrowed, no allocation) when it is already normal, which is the
/// case for nearly every real request.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathRejection> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathRejection::NotAbsolute);
    }
    if is_already_normal(bytes) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(bytes)?;
    remove_dot_segments(&decoded).map(Cow::Owned)
}

/// True when nothing in the path could need rewriting or refusing: no `%`, `\`, control bytes,
/// `//`, or segment starting with `.`.
fn is_already_normal(bytes: &[u8]) -> bool {
    let mut prev = 0u8;
    for &b in bytes {
        if b == b'%' || b == b'\\' || b < 0x20 || b == 0x7f || (prev == b'/' && (b == b'/' || b == b'.')) {
            return false;
        }
        prev = b;
    }
    true
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Decodes `%XX` of unreserved characters, upper-cases the hex of the others, and refuses
/// encodings whose meaning differs between decoders.
fn decode_unreserved(bytes: &[u8]) -> Result<Vec<u8>, PathRejection> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (Some(hi), Some(lo)) =
                (bytes.get(i + 1).copied().and_then(hex_value), bytes.get(i + 2).copied().and_then(hex_value))
            else {
                return Err(PathRejection::BadPercentEncoding);
            };
            let decoded = hi << 4 | lo;
            if decoded == b'/' || decoded == b'\\' {
                return Err(PathRejection::EncodedSlash);
            }
            if decoded < 0x20 || decoded == 0x7f {
                return Err(PathRejection::ControlCharacter);
            }
            if is_unreserved(decoded) {
                out.push(decoded);
            } else {
                out.extend_from_slice(&[b'%', bytes[i + 1].to_ascii_uppercase(), bytes[i + 2].to_ascii_uppercase()]);
            }
            i += 3;
            continue;
        }
        if b == b'\\' {
            return Err(PathRejection::Backslash);
        }
        if b < 0x20 || b == 0x7f {
            return Err(PathRejection::ControlCharacter);
        }
        out.push(b);
        i += 1;
    }
    Ok(out)
}

/// RFC 3986 §5.2.4 dot-segment removal on a decoded path, merging empty segments, refusing to
/// climb above the root and refusing `..;`-style segments.
fn remove_dot_segments(path: &[u8]) -> Result<String, PathRejection> {
    // Every byte came from a `&str` or is ASCII we produced, so splitting on `/` keeps UTF-8 valid.
    let text = std::str::from_utf8(path).map_err(|_| PathRejection::BadPercentEncoding)?;
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in text.split('/').skip(1) {
        trailing_slash = false;
        match segment {
            "" => trailing_slash = true,
            "." => trailing_slash = true,
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathRejection::AboveRoot);
                }
                trailing_slash = true;
            }
            s if is_disguised_dot_segment(s) => return Err(PathRejection::DisguisedDotSegment),
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(text.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// `.;x`, `..;`, `..;jsessionid=1`: a dot segment to servers that cut path parameters.
fn is_disguised_dot_segment(segment: &str) -> bool {
    let before_param = segment.split(';').next().unwrap_or(segment);
    segment.contains(';') && (before_param == "." || before_param == "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_paths_are_borrowed() {
        for p in ["/", "/admin", "/a/b/c.txt", "/a/b/", "/x;y=1", "/caf%C3%A9"] {
            let n = normalize(p);
            if p.contains('%') {
                assert!(n.is_ok());
                continue;
            }
            assert!(matches!(n, Ok(Cow::Borrowed(_))), "{p} should pass untouched");
        }
    }

    #[test]
    fn rewrites() {
        let cases = [
            ("//admin", "/admin"),
            ("/admin/../admin", "/admin"),
            ("/%61dmin", "/admin"),
            ("/public/%2e%2e/admin", "/admin"),
            ("/public/%2E%2E/admin", "/admin"),
            ("/public/../admin", "/admin"),
            ("/a/./b", "/a/b"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/a//b///c/", "/a/b/c/"),
            ("/a/%7e%2D%5f", "/a/~-_"),
            ("/q%3a", "/q%3A"),
            ("/%25", "/%25"),
            ("/..a/...", "/..a/..."),
            ("/.well-known/x", "/.well-known/x"),
            ("/.", "/"),
            ("/a/..", "/"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn rejections() {
        use PathRejection::*;
        let cases = [
            ("", NotAbsolute),
            ("*", NotAbsolute),
            ("admin", NotAbsolute),
            ("/public/..%2Fadmin", EncodedSlash),
            ("/admin%2F..", EncodedSlash),
            ("/admin%2f", EncodedSlash),
            ("/a%5Cb", EncodedSlash),
            ("/a\\b", Backslash),
            ("/a%00b", ControlCharacter),
            ("/a%0d%0aX: y", ControlCharacter),
            ("/a\u{7f}", ControlCharacter),
            ("/a%7F", ControlCharacter),
            ("/a%zz", BadPercentEncoding),
            ("/a%4", BadPercentEncoding),
            ("/admin..;/x/..;/", DisguisedDotSegment),
            ("/public/..;/admin", DisguisedDotSegment),
            ("/.;x/admin", DisguisedDotSegment),
            ("/%2e%2e;/admin", DisguisedDotSegment),
            ("/..", AboveRoot),
            ("/a/../..", AboveRoot),
            ("/%2e%2e/etc", AboveRoot),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input), Err(want), "{input:?}");
        }
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        for p in ["//a/./b/../c/", "/%61%62/%2e/x", "/q%3a/%7E", "/a/b/.."] {
            let once = normalize(p).map(Cow::into_owned);
            let once = once.as_deref().unwrap_or("");
            assert_eq!(normalize(once).as_deref(), Ok(once), "{p}");
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// Paths made of the pieces that matter to a normaliser: slashes, dots, escapes of
        /// every kind (unreserved, reserved, slash, backslash, control, percent, malformed),
        /// parameters and plain names.
        fn path() -> impl Strategy<Value = String> {
            let piece = prop::sample::select(vec![
                "/", "/", "/", ".", "..", "a", "b", "admin", "%2e", "%2E", "%2f", "%5c", "%25", "%41", "%7e", "%3a",
                "%00", "%0a", "%", "%zz", ";", ";x=1", "\\", "~", "é", "%C3%A9", "-", "_",
            ]);
            prop::collection::vec(piece, 0..14).prop_map(|pieces| format!("/{}", pieces.concat()))
        }

        fn decode_once(path: &str) -> Vec<u8> {
            percent_encoding::percent_decode_str(path).collect()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            /// Normalising twice gives what normalising once gave.
            #[test]
            fn normalising_is_idempotent(p in path()) {
                if let Ok(once) = normalize(&p) {
                    let twice = normalize(&once);
                    prop_assert_eq!(twice.as_deref(), Ok(&*once), "{:?}", p);
                }
            }

            /// A normalised path means the same to an app that decodes it once: decoding cannot
            /// make a slash, a backslash, a control character or a dot segment appear, so its
            /// segments are the ones that were matched.
            #[test]
            fn a_normalised_path_never_decodes_to_another(p in path()) {
                if let Ok(normal) = normalize(&p) {
                    let decoded = decode_once(&normal);
                    let raw_segments = normal.split('/').count();
                    let decoded_segments = decoded.split(|b| *b == b'/').count();
                    prop_assert_eq!(raw_segments, decoded_segments, "{:?} -> {:?}", p, normal);
                    prop_assert!(!decoded.iter().any(|b| *b == b'\\' || *b < 0x20 || *b == 0x7f), "{:?}", normal);
                    for segment in decoded.split(|b| *b == b'/') {
                        prop_assert!(segment != b"." && segment != b"..", "{:?} -> {:?}", p, normal);
                    }
                    prop_assert!(!normal.contains("//"), "{:?}", normal);
                }
            }

            /// Where the WHATWG URL parser (what browsers and many frameworks use) defines the
            /// result too — dot segments, `%2e` as a dot, no empty segments, nothing above the
            /// root — both give the same path.
            #[test]
            fn agrees_with_the_url_crate(segments in prop::collection::vec(
                prop::sample::select(vec!["a", "b", "admin", ".", "..", "%2e", "%2E", "%2e%2e", ".%2e", "%2e.", "x.y"]),
                1..10,
            )) {
                let p = format!("/{}", segments.join("/"));
                let Ok(ours) = normalize(&p) else {
                    // Ours refuses only what climbs above the root, which the URL parser clamps.
                    prop_assert_eq!(normalize(&p), Err(PathRejection::AboveRoot));
                    return Ok(());
                };
                let theirs = url::Url::parse(&format!("http://h{p}")).expect("a URL");
                prop_assert_eq!(&*ours, theirs.path(), "{}", p);
            }
        }
    }
}

#[cfg(test)]
mod doc_example {
    #[test]
    fn normalised_paths() {
        use crate::path::{PathRejection, normalize};

        assert_eq!(normalize("/%61dmin//users/./1").unwrap(), "/admin/users/1");
        assert_eq!(normalize("/public/../admin").unwrap(), "/admin");
        assert_eq!(normalize("/public/..%2Fadmin"), Err(PathRejection::EncodedSlash));
        assert_eq!(normalize("/../etc/passwd"), Err(PathRejection::AboveRoot));
    }
}
