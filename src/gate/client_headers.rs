//! Request headers a client may not pass to the app: the identity headers (only the gate sets
//! them) and headers that make apps route or dispatch a request differently from what the gate
//! judged (SPEC §4).
//!
//! Names are compared after folding `_` to `-`: CGI-style servers (PHP, WSGI, Rack) read
//! `X_Whop_User_Id` and `X-Whop-User-Id` as the same `HTTP_X_WHOP_USER_ID`.
//!
//! | header | why it goes |
//! | --- | --- |
//! | `x-whop-user-id`, `x-whop-access-level`, `x-whop-resource-id`, `x-whopgate-*` | the gate's to set |
//! | `x-http-method-override`, `x-method-override`, `x-http-method` | apps dispatch on them: a `methods = ["GET"]` rule would judge a GET the app runs as a DELETE |
//! | `x-original-url`, `x-original-uri`, `x-rewrite-url` | apps route on them: a judged `/public` would serve `/admin` |
//! | `_` spellings of `x-forwarded-*`, `x-real-ip` | the dash spellings are the proxy's (believed only from `trusted_proxies`); the others would slip past it |

use http::header::{HeaderMap, HeaderName};
use smallvec::SmallVec;

use super::handoff::names::{ACCESS_LEVEL, GATE_PREFIX, RESOURCE_ID, USER_ID};

/// Longest name compared whole (`x-http-method-override`); longer ones can only be the gate's
/// by their prefix.
const LONGEST: usize = 22;

/// Is `name` (lower case, as `HeaderName` holds it) one the gate owns, in any spelling a server
/// might fold to it?
pub fn is_identity_header(name: &str) -> bool {
    classify(name) == Some(Class::Identity)
}

/// Must this header be removed from what the client sent?
pub fn is_reserved(name: &str) -> bool {
    classify(name).is_some()
}

/// Removes every reserved header (all spellings) the client sent.
pub fn strip(headers: &mut HeaderMap) {
    let doomed: SmallVec<[HeaderName; 4]> = headers.keys().filter(|name| is_reserved(name.as_str())).cloned().collect();
    for name in doomed {
        headers.remove(&name);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Identity,
    Rerouting,
    ForwardingSpelledWithUnderscores,
}

fn classify(name: &str) -> Option<Class> {
    // Cheap reject: everything here starts with `x-` or `x_`; most request headers do not.
    let bytes = name.as_bytes();
    if bytes.len() < 9 || bytes[0] != b'x' || !(bytes[1] == b'-' || bytes[1] == b'_') {
        return None;
    }
    if !bytes.contains(&b'_') {
        return classify_folded(name, false);
    }
    let mut buf = [0u8; LONGEST];
    let len = bytes.len().min(LONGEST);
    for (slot, &b) in buf.iter_mut().zip(&bytes[..len]) {
        *slot = if b == b'_' { b'-' } else { b };
    }
    // Folding `_` to `-` keeps ASCII ASCII.
    let folded = std::str::from_utf8(&buf[..len]).ok()?;
    if bytes.len() > LONGEST {
        return folded.starts_with(GATE_PREFIX).then_some(Class::Identity);
    }
    classify_folded(folded, true)
}

/// `name` already has `-` for `_`; `underscored` says whether the client wrote `_`s.
fn classify_folded(name: &str, underscored: bool) -> Option<Class> {
    match name {
        USER_ID | ACCESS_LEVEL | RESOURCE_ID => Some(Class::Identity),
        "x-http-method-override"
        | "x-method-override"
        | "x-http-method"
        | "x-original-url"
        | "x-original-uri"
        | "x-rewrite-url" => Some(Class::Rerouting),
        // The dash spellings are the proxy's, believed only from `trusted_proxies`.
        "x-forwarded-for" | "x-forwarded-proto" | "x-forwarded-host" | "x-forwarded-port" | "x-forwarded-prefix"
        | "x-forwarded-scheme" | "x-forwarded-ssl" | "x-forwarded-uri" | "x-forwarded-method" | "x-real-ip"
            if underscored =>
        {
            Some(Class::ForwardingSpelledWithUnderscores)
        }
        _ if name.starts_with(GATE_PREFIX) => Some(Class::Identity),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use http::header::HeaderValue;

    use super::*;

    #[test]
    fn identity_header_spellings() {
        for name in [
            "x-whop-user-id",
            "x_whop_user_id",
            "x-whop_access-level",
            "x_whop_resource_id",
            "x-whopgate-source",
            "x-whopgate-anything",
            "x_whopgate_anything",
            "x-whopgate-a-name-much-longer-than-the-longest-compared-whole",
        ] {
            assert!(is_identity_header(name), "{name}");
        }
        for name in ["x-whop-user-token", "x-whop", "x-whopgate", "x-whop-user-idx", "accept", "x-whopx-user-id"] {
            assert!(!is_identity_header(name), "{name}");
        }
    }

    #[test]
    fn rerouting_and_underscored_forwarding_headers_are_reserved() {
        for name in [
            "x-http-method-override",
            "x_http_method_override",
            "x-method-override",
            "x-http-method",
            "x-original-url",
            "x-original-uri",
            "x_original_url",
            "x-rewrite-url",
            "x_forwarded_for",
            "x_forwarded-host",
            "x_real_ip",
            "x-forwarded_proto",
        ] {
            assert!(is_reserved(name), "{name}");
            assert!(!is_identity_header(name), "{name}");
        }
        // The dash spellings of forwarding headers are the proxy's to judge (trusted peers).
        for name in ["x-forwarded-for", "x-forwarded-host", "x-real-ip", "x-request-id", "x-whop-user-token", "host"] {
            assert!(!is_reserved(name), "{name}");
        }
    }

    #[test]
    fn strip_removes_every_value_of_every_reserved_name() {
        let mut h = HeaderMap::new();
        h.append("x-whop-user-id", HeaderValue::from_static("user_evil"));
        h.append("x-whop-user-id", HeaderValue::from_static("user_evil2"));
        h.insert("x_whop_access_level", HeaderValue::from_static("admin"));
        h.insert("x-http-method-override", HeaderValue::from_static("DELETE"));
        h.insert("x-original-url", HeaderValue::from_static("/admin"));
        h.insert("x-whop-user-token", HeaderValue::from_static("tok"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        strip(&mut h);
        let mut names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["accept", "x-whop-user-token"]);
    }
}
