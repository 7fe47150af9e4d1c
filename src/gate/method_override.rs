//! Method overrides: ways a client asks the app to run a request as another method than the
//! one the gate judged (`POST` run as `DELETE`), which would walk around a `methods` rule.
//!
//! - The override headers (`X-HTTP-Method-Override` and kin) are removed with the other
//!   reserved headers ([`super::client_headers`]).
//! - A `_method` query parameter (Laravel, Symfony, Express's `method-override`) is removed from
//!   the query here, in every spelling PHP's parameter parsing folds to `_method`.
//! - A `_method` field in a form body (Rails, Laravel, Symfony) cannot be removed from a body
//!   that streams. A form `POST` is therefore judged only where `POST`, `PUT`, `PATCH` and
//!   `DELETE` fall under one and the same rule; elsewhere it is refused ([`could_be_rerouted`]).

use http::header::{self, HeaderMap};
use http::{Method, Request};

use crate::route::RouteTable;

/// The methods a form `POST` can be run as.
const OVERRIDABLE: [Method; 3] = [Method::PUT, Method::PATCH, Method::DELETE];

/// The query without its `_method` parameters, or `None` when it has none.
pub(crate) fn strip_query(query: &str) -> Option<String> {
    if !query.split('&').any(is_method_param) {
        return None;
    }
    let kept: Vec<&str> = query.split('&').filter(|p| !is_method_param(p)).collect();
    Some(kept.join("&"))
}

/// Is this `key=value` pair a `_method` parameter, as a framework would decode its key?
///
/// Decoded on the fly, without allocating, and given up at the first byte that cannot match.
fn is_method_param(pair: &str) -> bool {
    const TARGET: &[u8] = b"_method";
    let key = pair.split_once('=').map_or(pair, |(k, _)| k).as_bytes();
    let mut matched = 0;
    let mut i = 0;
    while i < key.len() {
        let mut b = key[i];
        if b == b'%' {
            let hex = |at: usize| key.get(at).and_then(|d| (*d as char).to_digit(16));
            match (hex(i + 1), hex(i + 2)) {
                (Some(hi), Some(lo)) => {
                    b = u8::try_from(hi * 16 + lo).unwrap_or(0);
                    i += 2;
                }
                _ => return false,
            }
        } else if b == b'+' {
            b = b' ';
        }
        i += 1;
        // PHP drops leading spaces from a parameter name and reads ' ', '.' and '[' as '_'.
        if b == b' ' && matched == 0 {
            continue;
        }
        let folded = if matches!(b, b' ' | b'.' | b'[') { b'_' } else { b.to_ascii_lowercase() };
        if TARGET.get(matched) != Some(&folded) {
            return false;
        }
        matched += 1;
    }
    matched == TARGET.len()
}

/// A form `POST` (the one kind of request whose body can carry `_method`) that another rule would
/// judge than the rule for `PUT`, `PATCH` or `DELETE` to the same host and path.
pub(crate) fn could_be_rerouted<B>(req: &Request<B>, routes: &RouteTable, host: &str, rule: usize) -> bool {
    if req.method() != Method::POST || !routes.has_method_rules() || !is_form(req.headers()) {
        return false;
    }
    rerouted_to(routes, Some(host), req.uri().path(), Some(rule)).is_some()
}

/// The first method a form `POST` could be run as whose rule is not `post_rule` (the rule `POST`
/// falls under at `host` and `path`), with that method's rule. Also what `check` warns about.
pub(crate) fn rerouted_to(
    routes: &RouteTable,
    host: Option<&str>,
    path: &str,
    post_rule: Option<usize>,
) -> Option<(Method, Option<usize>)> {
    OVERRIDABLE.iter().find_map(|method| {
        let rule = routes.find(method, host, path).map(|r| r.index);
        (rule != post_rule).then(|| (method.clone(), rule))
    })
}

fn is_form(headers: &HeaderMap) -> bool {
    headers.get_all(header::CONTENT_TYPE).iter().any(|value| {
        let essence = value.as_bytes().split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
        essence.eq_ignore_ascii_case(b"application/x-www-form-urlencoded")
            || essence.eq_ignore_ascii_case(b"multipart/form-data")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_parameters_in_every_spelling_are_removed() {
        let cases = [
            ("_method=DELETE", Some("")),
            ("a=1&_method=DELETE&b=2", Some("a=1&b=2")),
            ("_METHOD=DELETE", Some("")),
            ("%5Fmethod=DELETE&x", Some("x")),
            ("_m%65thod=PUT", Some("")),
            (".method=PUT", Some("")),
            ("+_method=PUT", Some("")),
            ("%20.method=PUT", Some("")),
            // Padding with leading spaces (which PHP drops) hides no `_method`, however long.
            ("++++++++++++++++++++++++_method=PUT", Some("")),
            ("%20%20%20%20%20%20%20%20%20_method=PUT", Some("")),
            ("_method%=PUT", None),
            ("_method", Some("")),
            ("a=1&_method=PUT&_method=DELETE", Some("a=1")),
            ("method=DELETE", None),
            ("_methods=DELETE", None),
            ("x=_method", None),
            ("", None),
        ];
        for (query, want) in cases {
            assert_eq!(strip_query(query).as_deref(), want, "{query}");
        }
    }

    #[test]
    fn forms_are_recognised_by_their_media_type() {
        let form = |ct: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, ct.parse().unwrap());
            is_form(&h)
        };
        assert!(form("application/x-www-form-urlencoded"));
        assert!(form("Application/X-WWW-Form-Urlencoded; charset=utf-8"));
        assert!(form("multipart/form-data; boundary=x"));
        assert!(!form("application/json"));
        assert!(!form("text/plain"));
    }
}
