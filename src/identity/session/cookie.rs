//! Reading cookies from `Cookie` request headers and removing ours before forwarding.
//!
//! Parsing follows the lenient reading of RFC 6265 §5.2 that browsers and servers use: pairs
//! separated by `;`, the name and value trimmed of spaces and tabs, the name matched exactly
//! (cookie names are case-sensitive). It works on bytes, so another cookie holding non-UTF-8
//! bytes neither hides ours nor gets altered.

use http::HeaderMap;
use http::header::{COOKIE, HeaderValue};

/// The login-state cookie's name for session cookie `name`: `{name}-login`. A `__Host-` name
/// keeps its prefix, so the login cookie gets the same protection against being set by a
/// sibling subdomain.
pub fn login_cookie_name(name: &str) -> String {
    format!("{name}-login")
}

/// The value of the first non-empty cookie called `name` across all `Cookie` headers (HTTP/2
/// may split cookies over several), without surrounding double quotes; `None` when there is
/// none or its value is not UTF-8.
pub fn find_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|header| header.as_bytes().split(|&b| b == b';'))
        .filter_map(|pair| match split_pair(pair) {
            (n, Some(value)) if n == name.as_bytes() => Some(unquote(value)),
            _ => None,
        })
        .filter(|value| !value.is_empty())
        .find_map(|value| std::str::from_utf8(value).ok())
}

/// Removes the cookie `name` and its login-state cookie ([`login_cookie_name`]) from the
/// `Cookie` header(s), so the upstream never sees whopgate's credentials. Every other cookie is
/// kept byte for byte, in order; a header that had none of ours is left untouched, one left
/// empty is dropped, and with nothing left at all `Cookie` is removed.
pub fn strip_cookie(headers: &mut HeaderMap, name: &str) {
    let login = login_cookie_name(name);
    let ours = |pair: &[u8]| {
        let (n, _) = split_pair(pair);
        n == name.as_bytes() || n == login.as_bytes()
    };
    let touched = headers.get_all(COOKIE).iter().any(|header| header.as_bytes().split(|&b| b == b';').any(ours));
    if !touched {
        return;
    }
    let originals: Vec<HeaderValue> = headers.get_all(COOKIE).iter().cloned().collect();
    headers.remove(COOKIE);
    for original in originals {
        if !original.as_bytes().split(|&b| b == b';').any(ours) {
            headers.append(COOKIE, original);
            continue;
        }
        let kept: Vec<&[u8]> = original
            .as_bytes()
            .split(|&b| b == b';')
            .map(trim_ows)
            .filter(|pair| !pair.is_empty() && !ours(pair))
            .collect();
        if kept.is_empty() {
            continue;
        }
        // `; ` is the separator browsers send (RFC 6265 §5.4); the pairs are copied unchanged
        // from a valid header value, so the result is one too.
        if let Ok(value) = HeaderValue::from_bytes(&kept.join(&b"; "[..])) {
            headers.append(COOKIE, value);
        }
    }
}

/// `(name, Some(value))`, or `(name, None)` for a pair without `=`; both trimmed.
fn split_pair(pair: &[u8]) -> (&[u8], Option<&[u8]>) {
    match pair.iter().position(|&b| b == b'=') {
        Some(eq) => (trim_ows(&pair[..eq]), Some(trim_ows(&pair[eq + 1..]))),
        None => (trim_ows(pair), None),
    }
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn unquote(value: &[u8]) -> &[u8] {
    match value {
        [b'"', inner @ .., b'"'] => inner,
        _ => value,
    }
}
