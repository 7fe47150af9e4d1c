//! Redirect targets (`rd`, SPEC §5): where whopgate may send a browser after login or logout.
//!
//! A target is accepted only in one of two shapes, and is re-encoded so that the browser reads
//! exactly what was checked:
//! - a path on this site: starts with a single `/`;
//! - an absolute `http`/`https` URL whose origin is `public_url`'s, or whose host is one of
//!   `allowed_redirect_hosts` (exact, or `*.` for any subdomain; on the scheme's default port
//!   unless the entry names a port).
//!
//! Anything else becomes `/`. Open redirects come from the validator and the browser reading one
//! string two ways (`/\evil`, `/%09/evil`, `https:evil`, `http://good@evil`), so the rules are
//! written against how browsers parse (the WHATWG URL standard), and are deliberately stricter
//! than any legitimate target needs:
//! - nowhere, raw or under any number of percent-decodings: control characters, whitespace
//!   (Unicode too), backslashes or look-alike slashes, bidi and zero-width format characters, or
//!   bytes that are not UTF-8;
//! - in the path, under any number of decodings: no `//` and no `.`/`..` segments;
//! - in an absolute URL's authority: no userinfo (`@`), no percent-encoding, ASCII letters, digits,
//!   `-` and `.` only (no trailing dot, no empty label), an IPv6 literal in brackets, and a port
//!   written as a plain decimal number.
//!
//! ```text
//! use http::Uri;
//! use whopgate::endpoints::redirect::RedirectPolicy;
//!
//! let public = Uri::from_static("https://app.example.com");
//! let policy = RedirectPolicy::new(Some(&public), &["docs.example.com".to_owned()]);
//! assert_eq!(policy.safe_target("/dashboard?tab=1#top"), "/dashboard?tab=1#top");
//! assert_eq!(policy.safe_target("https://docs.example.com/guide"), "https://docs.example.com/guide");
//! assert_eq!(policy.safe_target("/café"), "/caf%C3%A9");
//! for evil in ["//evil.com", "/\\evil.com", "/%09/evil.com", "https:evil.com", "https://app.example.com@evil.com"] {
//!     assert_eq!(policy.safe_target(evil), "/");
//!     assert!(!policy.is_safe(evil));
//! }
//! ```
//!
//! (The lines above run as the test `doc_example::redirect_targets`.)

use std::fmt;
use std::net::Ipv6Addr;

use http::Uri;
use percent_encoding::percent_decode;

/// Longest `rd` considered; a longer one is replaced by `/`. Targets are paths the gate itself
/// produced or links an operator wrote, far shorter than this.
pub const MAX_TARGET_LEN: usize = 4096;

/// How many rounds of percent-decoding a target is checked through. A target still changing
/// after this many is refused: no legitimate target is encoded that deeply.
const MAX_DECODE_ROUNDS: usize = 8;

/// ASCII characters re-encoded in the output: they are not valid unescaped in a URL, and browsers
/// disagree on whether to escape them, so escaping them ourselves fixes what the browser reads.
const ESCAPED_ASCII: &[u8] = b"\"'<>`{}|^";

/// Which redirect targets are allowed. Cheap to clone and to query; build once per config.
#[derive(Debug, Clone, Default)]
pub struct RedirectPolicy {
    /// `public_url`'s origin, when configured.
    public: Option<Origin>,
    /// `allowed_redirect_hosts`, parsed.
    allowed: Vec<HostRule>,
}

impl RedirectPolicy {
    /// A policy for this site (`public_url`, whose origin absolute targets may name) and the
    /// `allowed_redirect_hosts` entries (`host`, `*.domain` or either with `:port`, any case).
    /// Entries that are not host names are ignored (the config loader refuses them anyway).
    pub fn new(public_url: Option<&Uri>, allowed_hosts: &[String]) -> Self {
        let public = public_url.and_then(Origin::from_uri);
        let allowed = allowed_hosts.iter().filter_map(|h| HostRule::parse(h)).collect();
        RedirectPolicy { public, allowed }
    }

    /// Where to send the browser for `rd`: `rd` itself in canonical spelling when it is allowed
    /// (see the module docs), else `/`. The result is always a valid `Location` header value.
    pub fn safe_target(&self, rd: &str) -> String {
        self.check(rd).unwrap_or_else(|| "/".to_owned())
    }

    #[cfg(test)]
    /// True when `rd` is an allowed target (possibly after re-encoding, see
    /// [`RedirectPolicy::safe_target`]).
    pub fn is_safe(&self, rd: &str) -> bool {
        self.check(rd).is_some()
    }

    fn check(&self, rd: &str) -> Option<String> {
        if rd.is_empty() || rd.len() > MAX_TARGET_LEN {
            return None;
        }
        if rd.starts_with('/') {
            return checked_tail(rd);
        }
        self.check_absolute(rd)
    }

    fn check_absolute(&self, rd: &str) -> Option<String> {
        // Only these two exact scheme spellings (any case) followed by `//`: `https:evil`,
        // `https:/evil` and `https:\\evil` are all read by browsers as something else.
        let (https, rest) = match strip_prefix_ignore_case(rd, "https://") {
            Some(rest) => (true, rest),
            None => (false, strip_prefix_ignore_case(rd, "http://")?),
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let (host, port) = parse_authority(authority)?;
        if !self.allows(https, &host, port) {
            return None;
        }
        let tail = match tail.as_bytes().first() {
            None => "/".to_owned(),
            Some(b'/') => tail.to_owned(),
            Some(_) => format!("/{tail}"),
        };
        let tail = checked_tail(&tail)?;
        let scheme = if https { "https" } else { "http" };
        // An explicit default port is dropped: browsers drop it too, and the origin is the same.
        let port = match port {
            Some(p) if p != default_port(https) => format!(":{p}"),
            _ => String::new(),
        };
        Some(format!("{scheme}://{host}{port}{tail}"))
    }

    fn allows(&self, https: bool, host: &Host, port: Option<u16>) -> bool {
        let default = default_port(https);
        let effective = port.unwrap_or(default);
        // This site: its exact origin only, so neither a scheme downgrade nor another service on
        // another port of the same host.
        let is_public =
            self.public.as_ref().is_some_and(|p| p.https == https && p.host == *host && p.port == effective);
        if is_public {
            return true;
        }
        self.allowed.iter().any(|rule| {
            rule.matches_host(host)
                && match rule.port {
                    Some(p) => effective == p,
                    None => effective == default,
                }
        })
    }
}

fn default_port(https: bool) -> u16 {
    if https { 443 } else { 80 }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

/// `public_url`'s origin.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    https: bool,
    host: Host,
    /// Effective port (the scheme's default when the URL names none).
    port: u16,
}

impl Origin {
    fn from_uri(uri: &Uri) -> Option<Self> {
        let https = match uri.scheme_str()? {
            s if s.eq_ignore_ascii_case("https") => true,
            s if s.eq_ignore_ascii_case("http") => false,
            _ => return None,
        };
        let (host, port) = parse_authority(uri.authority()?.as_str())?;
        Some(Origin { https, host, port: port.unwrap_or(default_port(https)) })
    }
}

/// A host as browsers compare it: a lowercase ASCII name or an IPv6 address.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Name(String),
    V6(Ipv6Addr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::V6(addr) => write!(f, "[{addr}]"),
        }
    }
}

/// One `allowed_redirect_hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostRule {
    /// `*.example.com`: any host under `example.com`, not `example.com` itself (as route `host`
    /// patterns).
    wildcard: bool,
    host: Host,
    /// `None`: the scheme's default port only.
    port: Option<u16>,
}

impl HostRule {
    fn parse(pattern: &str) -> Option<Self> {
        let (wildcard, rest) = match pattern.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, pattern),
        };
        let (host, port) = parse_authority(rest)?;
        if wildcard && !matches!(host, Host::Name(_)) {
            return None;
        }
        Some(HostRule { wildcard, host, port })
    }

    fn matches_host(&self, host: &Host) -> bool {
        match (&self.host, host, self.wildcard) {
            (Host::Name(suffix), Host::Name(name), true) => {
                name.len() > suffix.len() + 1
                    && name.ends_with(suffix.as_str())
                    && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
            }
            (rule, host, false) => rule == host,
            _ => false,
        }
    }
}

/// `host[:port]` or `[v6][:port]`, in the strict form described in the module docs.
fn parse_authority(authority: &str) -> Option<(Host, Option<u16>)> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']');
    if authority.is_empty() || !authority.bytes().all(allowed) {
        return None;
    }
    if let Some(rest) = authority.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        let addr: Ipv6Addr = inner.parse().ok()?;
        let port = match after {
            "" => None,
            _ => Some(parse_port(after.strip_prefix(':')?)?),
        };
        return Some((Host::V6(addr), port));
    }
    let (name, port) = match authority.split_once(':') {
        Some((name, port)) => (name, Some(parse_port(port)?)),
        None => (authority, None),
    };
    let labels_ok = name.len() <= 253
        && name
            .split('.')
            .all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    labels_ok.then(|| (Host::Name(name.to_ascii_lowercase()), port))
}

/// A port in canonical decimal (no sign, no leading zero), 1–65535.
fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || text.len() > 5 || text.starts_with('0') || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|&p| p != 0)
}

/// `tail` (path, query, fragment; starts with `/`) re-encoded and checked through every round of
/// percent-decoding; `None` when unsafe.
fn checked_tail(tail: &str) -> Option<String> {
    let encoded = encode_tail(tail)?;
    decoded_layers_are_safe(encoded.as_bytes()).then_some(encoded)
}

/// Escapes what a browser might otherwise read differently: non-ASCII (as UTF-8 percent escapes),
/// [`ESCAPED_ASCII`], and a `%` that does not start an escape. Refuses what has no safe reading.
fn encode_tail(tail: &str) -> Option<String> {
    let bytes = tail.as_bytes();
    let mut out = String::with_capacity(tail.len());
    for (i, c) in tail.char_indices() {
        if !c.is_ascii() {
            if forbidden_char(c) {
                return None;
            }
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                push_escape(&mut out, b);
            }
            continue;
        }
        let b = c as u8;
        if forbidden_byte(b) {
            return None;
        }
        let starts_escape = || {
            bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit) && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
        };
        if ESCAPED_ASCII.contains(&b) || (b == b'%' && !starts_escape()) {
            push_escape(&mut out, b);
        } else {
            out.push(c);
        }
    }
    Some(out)
}

fn push_escape(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 0xf)]));
}

/// Checks `tail` and each string percent-decoding makes of it, until decoding changes nothing.
fn decoded_layers_are_safe(tail: &[u8]) -> bool {
    let mut layer = tail.to_vec();
    for _ in 0..=MAX_DECODE_ROUNDS {
        if !layer_is_safe(&layer) {
            return false;
        }
        let next: Vec<u8> = percent_decode(&layer).collect();
        if next == layer {
            return true;
        }
        layer = next;
    }
    false
}

fn layer_is_safe(layer: &[u8]) -> bool {
    if layer.iter().any(|&b| forbidden_byte(b)) {
        return false;
    }
    // Bytes that are not UTF-8 (overlong `/`, stray Latin-1) are read differently by different
    // decoders; no legitimate target needs them.
    let Ok(text) = std::str::from_utf8(layer) else {
        return false;
    };
    if text.chars().any(forbidden_char) {
        return false;
    }
    let path = text.split(['?', '#']).next().unwrap_or_default();
    // `//` would start an authority wherever a later reader resolves this path again, and dot
    // segments make the browser read a different path from the one checked.
    !path.contains("//") && !path.split('/').any(|segment| segment == "." || segment == "..")
}

/// ASCII bytes no target may hold: controls, space, backslash (which browsers read as `/`).
fn forbidden_byte(b: u8) -> bool {
    b < 0x20 || b == 0x7f || b == b' ' || b == b'\\'
}

/// Non-ASCII characters no target may hold: whitespace, controls, invisible format characters
/// (bidi overrides, zero-width, BOM) and slash look-alikes some normalisers turn into `/` or `\`.
fn forbidden_char(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || matches!(c,
            '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}'
            // slash and backslash look-alikes
            | '\u{2044}' | '\u{2215}' | '\u{2216}' | '\u{29F5}' | '\u{29F8}' | '\u{29F9}'
            | '\u{FE68}' | '\u{FF0F}' | '\u{FF3C}')
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod doc_example {
    #[test]
    fn redirect_targets() {
        use crate::endpoints::redirect::RedirectPolicy;
        use http::Uri;

        let public = Uri::from_static("https://app.example.com");
        let policy = RedirectPolicy::new(Some(&public), &["docs.example.com".to_owned()]);
        assert_eq!(policy.safe_target("/dashboard?tab=1#top"), "/dashboard?tab=1#top");
        assert_eq!(policy.safe_target("https://docs.example.com/guide"), "https://docs.example.com/guide");
        assert_eq!(policy.safe_target("/café"), "/caf%C3%A9");
        for evil in ["//evil.com", "/\\evil.com", "/%09/evil.com", "https:evil.com", "https://app.example.com@evil.com"]
        {
            assert_eq!(policy.safe_target(evil), "/");
            assert!(!policy.is_safe(evil));
        }
    }
}
