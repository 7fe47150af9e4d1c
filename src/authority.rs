//! The request's authority (host and port): computed once, in one spelling, matched against the
//! route table and given to the app, so the host that is judged is the host the app serves.
//!
//! Host-based bypasses come from the gate and the app reading the host two ways: an
//! absolute-form target naming one host and `Host` another, two `Host` headers, or spellings a
//! host rule misses but DNS and the app treat as the same name (`Admin.Example.`,
//! `admin.example:80`). The rule here (SPEC §4, "Host, method, upgrade"): the absolute-form
//! target's authority when there is one (RFC 9112 §3.2.2; HTTP/2's `:authority`), else the one
//! `Host`; lower-cased, without a trailing dot or the scheme's default port; anything ambiguous
//! or malformed is refused.
//!
//! ```text
//! use whopgate::authority::{canonical, HostRejection};
//!
//! assert_eq!(canonical("Admin.Example.:80", false).unwrap(), "admin.example");
//! assert_eq!(canonical("admin.example:443", true).unwrap(), "admin.example");
//! assert_eq!(canonical("admin.example:443", false).unwrap(), "admin.example:443");
//! assert_eq!(canonical("[::1]:8080", false).unwrap(), "[::1]:8080");
//! assert_eq!(canonical("a.example, b.example", false), Err(HostRejection::List));
//! assert_eq!(canonical("user@admin.example", false), Err(HostRejection::UserInfo));
//! ```
//!
//! (The lines above run as the test `doc_example::canonical_hosts`.)

use std::borrow::Cow;
use std::fmt;

use http::Request;
use http::header::HOST;

/// Why a request's host is refused (answered `400`, never forwarded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostRejection {
    /// A request that names no host at all.
    Missing,
    /// More than one `Host` header: the gate and the app could each read a different one.
    Repeated,
    /// A list in `Host` (`a, b`).
    List,
    /// Userinfo in the authority (`user@host`), which names no host of its own.
    UserInfo,
    /// An absolute-form target with a scheme other than `http` or `https`.
    Scheme,
    /// Not a host name, an IP address or `[IPv6]`, with an optional port.
    Invalid,
}

impl HostRejection {
    /// A sentence for the client and the log.
    pub fn message(self) -> &'static str {
        match self {
            Self::Missing => "the request names no host (send a Host header)",
            Self::Repeated => "the request has more than one Host header",
            Self::List => "the Host header holds a list",
            Self::UserInfo => "the request's authority contains userinfo",
            Self::Scheme => "the request target's scheme is neither http nor https",
            Self::Invalid => "the request's host is not a valid host name",
        }
    }
}

impl fmt::Display for HostRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for HostRejection {}

/// The canonical authority of `req`.
///
/// Every request must name a host, HTTP/1.0 ones too (which RFC 9112 lets go without): an app
/// serves a host-less request from its default host, and that host is not the one judged. `tls`
/// says whether the connection is TLS, which decides the default port when the request
/// names no scheme of its own (an origin-form target). Borrowed from the request when it is
/// already canonical, which is the case for nearly every real request.
pub fn of_request<B>(req: &Request<B>, tls: bool) -> Result<Cow<'_, str>, HostRejection> {
    let mut hosts = req.headers().get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(HostRejection::Repeated);
    }
    if let Some(authority) = req.uri().authority() {
        // The target's authority wins over `Host` (RFC 9112 §3.2.2, RFC 9113 §8.3.1).
        let https = match req.uri().scheme_str() {
            Some(scheme) if scheme.eq_ignore_ascii_case("https") => true,
            Some(scheme) if scheme.eq_ignore_ascii_case("http") => false,
            Some(_) => return Err(HostRejection::Scheme),
            None => tls,
        };
        return canonical(authority.as_str(), https);
    }
    let host = host.ok_or(HostRejection::Missing)?;
    canonical(host.to_str().map_err(|_| HostRejection::Invalid)?, tls)
}

/// The canonical spelling of an authority (`host[:port]`): lower case, no trailing dot, no
/// default port (80, or 443 when `https`), the port without leading zeros.
pub fn canonical(authority: &str, https: bool) -> Result<Cow<'_, str>, HostRejection> {
    if is_canonical_name(authority.as_bytes(), https) {
        return Ok(Cow::Borrowed(authority));
    }
    let bytes = authority.as_bytes();
    if bytes.contains(&b',') {
        return Err(HostRejection::List);
    }
    if bytes.contains(&b'@') {
        return Err(HostRejection::UserInfo);
    }
    let (host, port) = split_port(authority)?;
    let host_needs_rewrite = check_host(host)?;
    let default = if https { 443 } else { 80 };
    let port_value = match port {
        // `host:` is `host` (RFC 3986 §6.2.3).
        Some("") | None => None,
        Some(digits) => Some(parse_port(digits)?),
    };
    let port_kept = port_value.filter(|p| *p != default);
    let port_canonical = match (port, port_kept) {
        (None, None) => true,
        (Some(digits), Some(p)) => !digits.starts_with('0') && digits.len() == decimal_len(p),
        _ => false,
    };
    if !host_needs_rewrite && port_canonical {
        return Ok(Cow::Borrowed(authority));
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    let mut out = host.to_ascii_lowercase();
    if let Some(p) = port_kept {
        out.push(':');
        out.push_str(&p.to_string());
    }
    Ok(Cow::Owned(out))
}

/// The spelling nearly every request uses, checked in one pass: a lower-case name or IPv4
/// address of at most 63 bytes, with no empty label and no trailing dot, and at most a port
/// that is not the default, in decimal without a leading zero. False means "look closer" (the
/// full check in [`canonical`]), not "bad".
fn is_canonical_name(bytes: &[u8], https: bool) -> bool {
    // A dot "before" the first byte: a leading dot is an empty label.
    let mut after_dot = true;
    let mut host_len = bytes.len();
    for (i, &b) in bytes.iter().enumerate() {
        match HOST_BYTES[usize::from(b)] {
            NAME => after_dot = false,
            DOT if !after_dot => after_dot = true,
            COLON => {
                host_len = i;
                break;
            }
            _ => return false,
        }
    }
    // Up to 63 bytes, no label can be over-long: longer hosts take the full check.
    if after_dot || host_len > 63 {
        return false;
    }
    let Some(port) = bytes.get(host_len + 1..) else { return true };
    if port.is_empty() || port.len() > 5 || port[0] == b'0' {
        return false;
    }
    let mut value = 0u32;
    for &d in port {
        if !d.is_ascii_digit() {
            return false;
        }
        value = value * 10 + u32::from(d - b'0');
    }
    value <= 65535 && value != if https { 443 } else { 80 }
}

const OTHER: u8 = 0;
const NAME: u8 = 1;
const DOT: u8 = 2;
const COLON: u8 = 3;

/// What each byte is to [`is_canonical_name`].
static HOST_BYTES: [u8; 256] = {
    let mut table = [OTHER; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = match c {
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => NAME,
            b'.' => DOT,
            b':' => COLON,
            _ => OTHER,
        };
        b += 1;
    }
    table
};

/// Splits `host[:port]`, minding `[IPv6]` literals.
fn split_port(authority: &str) -> Result<(&str, Option<&str>), HostRejection> {
    if authority.starts_with('[') {
        let end = authority.find(']').ok_or(HostRejection::Invalid)?;
        let (host, rest) = authority.split_at(end + 1);
        return match rest.strip_prefix(':') {
            Some(port) => Ok((host, Some(port))),
            None if rest.is_empty() => Ok((host, None)),
            None => Err(HostRejection::Invalid),
        };
    }
    Ok(match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    })
}

/// Checks a host (name, IPv4 or `[IPv6]`); true when its spelling is not canonical.
fn check_host(host: &str) -> Result<bool, HostRejection> {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner.parse::<std::net::Ipv6Addr>().map_err(|_| HostRejection::Invalid)?;
        return Ok(inner.bytes().any(|b| b.is_ascii_uppercase()));
    }
    // One trailing dot is the same name to DNS; more is an empty label.
    let (name, trailing_dot) = match host.strip_suffix('.') {
        Some(name) => (name, true),
        None => (host, false),
    };
    if name.is_empty() || name.len() > 253 {
        return Err(HostRejection::Invalid);
    }
    let mut upper = false;
    let mut label_len = 0usize;
    for b in name.bytes() {
        match b {
            b'.' if label_len == 0 => return Err(HostRejection::Invalid),
            b'.' => label_len = 0,
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => label_len += 1,
            b'A'..=b'Z' => {
                upper = true;
                label_len += 1;
            }
            _ => return Err(HostRejection::Invalid),
        }
        if label_len > 63 {
            return Err(HostRejection::Invalid);
        }
    }
    if label_len == 0 {
        return Err(HostRejection::Invalid);
    }
    Ok(upper || trailing_dot)
}

fn parse_port(digits: &str) -> Result<u16, HostRejection> {
    if digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HostRejection::Invalid);
    }
    match digits.parse::<u16>() {
        Ok(0) | Err(_) => Err(HostRejection::Invalid),
        Ok(port) => Ok(port),
    }
}

fn decimal_len(port: u16) -> usize {
    match port {
        0..=9 => 1,
        10..=99 => 2,
        100..=999 => 3,
        1000..=9999 => 4,
        _ => 5,
    }
}

#[cfg(test)]
mod tests {
    use http::Version;

    use super::*;

    #[test]
    fn canonical_spellings_are_borrowed() {
        for (raw, https) in [
            ("app.example", false),
            ("app.example:8080", false),
            ("127.0.0.1:3000", false),
            ("[::1]:8080", false),
            ("[::1]", true),
            ("app.example:443", false),
            ("app.example:80", true),
            ("my_host", false),
        ] {
            assert!(matches!(canonical(raw, https), Ok(Cow::Borrowed(_))), "{raw}");
        }
    }

    #[test]
    fn other_spellings_become_the_canonical_one() {
        let cases = [
            ("Admin.Example", false, "admin.example"),
            ("admin.example.", false, "admin.example"),
            ("ADMIN.EXAMPLE.:80", false, "admin.example"),
            ("admin.example:80", false, "admin.example"),
            ("admin.example:443", true, "admin.example"),
            ("admin.example:0080", false, "admin.example"),
            ("admin.example:08080", false, "admin.example:8080"),
            ("admin.example:", false, "admin.example"),
            ("[::1]:80", false, "[::1]"),
            ("[::ABCD]:81", false, "[::abcd]:81"),
        ];
        for (raw, https, want) in cases {
            assert_eq!(canonical(raw, https).as_deref(), Ok(want), "{raw}");
            assert!(matches!(canonical(want, https), Ok(Cow::Borrowed(_))), "{want} is a fixed point");
        }
    }

    #[test]
    fn ambiguous_and_malformed_hosts_are_refused() {
        use HostRejection::*;
        let cases = [
            ("a.example, b.example", List),
            ("a.example,", List),
            ("user@admin.example", UserInfo),
            ("admin.example@public.example", UserInfo),
            ("", Invalid),
            (".", Invalid),
            ("admin..example", Invalid),
            ("admin.example..", Invalid),
            (".admin.example", Invalid),
            ("admin example", Invalid),
            ("admin.example/x", Invalid),
            ("admin.example\\x", Invalid),
            ("admin.example:80:80", Invalid),
            ("admin.example:http", Invalid),
            ("admin.example:0", Invalid),
            ("admin.example:65536", Invalid),
            ("admin.example:-1", Invalid),
            ("[::1", Invalid),
            ("[::1]x", Invalid),
            ("[nope]", Invalid),
            ("admin%2eexample", Invalid),
            ("admin.example\t", Invalid),
            ("admïn.example", Invalid),
        ];
        for (raw, want) in cases {
            assert_eq!(canonical(raw, false), Err(want), "{raw:?}");
        }
        let long_label = format!("{}.example", "a".repeat(64));
        assert_eq!(canonical(&long_label, false), Err(Invalid));
    }

    fn request(version: Version, target: &str, hosts: &[&str]) -> Request<()> {
        let mut builder = Request::get(target).version(version);
        for host in hosts {
            builder = builder.header(HOST, *host);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn the_target_authority_wins_over_host() {
        let req = request(Version::HTTP_11, "http://Public.Example/x", &["admin.example"]);
        assert_eq!(of_request(&req, false).unwrap(), "public.example");
        let req = request(Version::HTTP_11, "https://public.example:443/x", &["admin.example"]);
        assert_eq!(of_request(&req, false).unwrap(), "public.example");
        let req = request(Version::HTTP_2, "https://public.example/x", &["admin.example"]);
        assert_eq!(of_request(&req, true).unwrap(), "public.example");
    }

    #[test]
    fn host_rules_of_rfc_9112() {
        let one = request(Version::HTTP_11, "/x", &["app.example:443"]);
        assert_eq!(of_request(&one, true).unwrap(), "app.example", "TLS: 443 is the default");
        assert_eq!(of_request(&one, false).unwrap(), "app.example:443");
        let two = request(Version::HTTP_11, "/x", &["public.example", "admin.example"]);
        assert_eq!(of_request(&two, false), Err(HostRejection::Repeated));
        let two_with_target = request(Version::HTTP_11, "http://a.example/x", &["a.example", "b.example"]);
        assert_eq!(of_request(&two_with_target, false), Err(HostRejection::Repeated));
        let none = request(Version::HTTP_11, "/x", &[]);
        assert_eq!(of_request(&none, false), Err(HostRejection::Missing));
        let none_h2 = request(Version::HTTP_2, "/x", &[]);
        assert_eq!(of_request(&none_h2, false), Err(HostRejection::Missing));
        let http10 = request(Version::HTTP_10, "/x", &[]);
        assert_eq!(of_request(&http10, false), Err(HostRejection::Missing), "an app would serve its default host");
        let ftp = request(Version::HTTP_11, "ftp://a.example/x", &[]);
        assert_eq!(of_request(&ftp, false), Err(HostRejection::Scheme));
        let mut opaque = request(Version::HTTP_11, "/x", &[]);
        opaque.headers_mut().insert(HOST, http::HeaderValue::from_bytes(b"adm\xefn.example").unwrap());
        assert_eq!(of_request(&opaque, false), Err(HostRejection::Invalid));
    }
}

#[cfg(test)]
mod doc_example {
    #[test]
    fn canonical_hosts() {
        use crate::authority::{HostRejection, canonical};

        assert_eq!(canonical("Admin.Example.:80", false).unwrap(), "admin.example");
        assert_eq!(canonical("admin.example:443", true).unwrap(), "admin.example");
        assert_eq!(canonical("admin.example:443", false).unwrap(), "admin.example:443");
        assert_eq!(canonical("[::1]:8080", false).unwrap(), "[::1]:8080");
        assert_eq!(canonical("a.example, b.example", false), Err(HostRejection::List));
        assert_eq!(canonical("user@admin.example", false), Err(HostRejection::UserInfo));
    }
}
