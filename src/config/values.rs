//! Checks and canonical forms of single values: addresses, URLs, paths, names and ids.
//!
//! Each check is a pure function from the (already interpolated) string to the typed value or a
//! [`Problem`] saying what is wrong and what would be right. Checks of values that may be secret
//! (keys, Redis URLs with passwords) never quote the value.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use http::uri::{Authority, Scheme};
use http::{HeaderName, Method, Uri};
use ipnet::IpNet;

use super::error::Problem;

/// The closest of `candidates` to `word`, if one is close enough to be a likely typo.
pub(crate) fn suggest<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let folded = word.to_ascii_lowercase().replace('-', "_");
    let mut best: Option<(usize, &str)> = None;
    for &candidate in candidates {
        if candidate == folded {
            return Some(candidate);
        }
        let distance = levenshtein(&folded, candidate);
        let longest = folded.chars().count().max(candidate.chars().count());
        // One edit is always a likely typo; more only when they are a third of the word or less.
        let close = distance <= 1 || (distance <= 3 && distance * 3 <= longest);
        if close && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != cb)).min(above + 1).min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

/// "did you mean `x`?" or the list of what is allowed.
pub(crate) fn one_of_hint(word: &str, allowed: &[&str]) -> String {
    match suggest(word, allowed) {
        Some(near) => format!("did you mean `{near}`?"),
        None => format!("use one of: {}", quoted_list(allowed)),
    }
}

/// `"a", "b", "c"`.
pub(crate) fn quoted_list(items: &[&str]) -> String {
    items.iter().map(|i| format!("\"{i}\"")).collect::<Vec<_>>().join(", ")
}

/// `listen` and `admin_listen`: an IP address and a port; host names are not resolved here.
pub(crate) fn socket_addr(text: &str) -> Result<SocketAddr, Problem> {
    if text.is_empty() {
        return Err(
            Problem::new("an address cannot be empty").hint("write an IP address and port, like \"127.0.0.1:8080\"")
        );
    }
    if let Ok(addr) = SocketAddr::from_str(text) {
        return Ok(addr);
    }
    if let Ok(ip) = IpAddr::from_str(text) {
        let example = match ip {
            IpAddr::V4(_) => format!("\"{ip}:8080\""),
            IpAddr::V6(_) => {
                format!("\"[{ip}]:8080\" (IPv6 addresses take brackets when a port follows)")
            }
        };
        return Err(Problem::new(format!("`{text}` has no port")).hint(format!("add one, e.g. {example}")));
    }
    if text.starts_with(':') {
        return Err(Problem::new(format!("`{text}` has a port but no IP address")).hint(format!(
            "write \"127.0.0.1{text}\" for this machine only, or \"0.0.0.0{text}\" for every interface"
        )));
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Problem::new(format!("`{text}` is a port without an IP address")).hint(format!(
            "write \"127.0.0.1:{text}\" for this machine only, or \"0.0.0.0:{text}\" for every interface"
        )));
    }
    if let Some((host, port)) = text.rsplit_once(':')
        && port.parse::<u16>().is_ok()
    {
        let hint = if host.eq_ignore_ascii_case("localhost") {
            format!("write \"127.0.0.1:{port}\" (or \"[::1]:{port}\")")
        } else {
            format!("write the IP address to listen on, e.g. \"0.0.0.0:{port}\" for every interface")
        };
        return Err(
            Problem::new(format!("`{text}` names a host; a listen address must be an IP address and port")).hint(hint)
        );
    }
    Err(Problem::new(format!("`{text}` is not an IP address and port"))
        .hint("write e.g. \"127.0.0.1:8080\" or \"[::1]:8080\""))
}

/// Parses an absolute URL and checks its scheme, host and absence of userinfo.
fn absolute_url(text: &str, example: &str) -> Result<Uri, Problem> {
    let bad =
        || Problem::new(format!("`{text}` is not an absolute http(s) URL")).hint(format!("write e.g. \"{example}\""));
    let uri = Uri::from_str(text).map_err(|_| bad())?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(bad());
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(Problem::new(format!("`{text}` is not an http(s) URL")).hint(format!("write e.g. \"{example}\"")));
    }
    if authority.host().is_empty() {
        return Err(bad());
    }
    if authority.as_str().contains('@') {
        return Err(Problem::new("a user name or password in the URL is not allowed")
            .hint(format!("write only the scheme and host, e.g. \"{example}\"")));
    }
    Ok(uri)
}

/// Rebuilds `scheme://authority` + `path_and_query` with the host in lowercase.
fn rebuild(scheme: &str, authority: &str, path_and_query: &str) -> Result<Uri, Problem> {
    let scheme = Scheme::from_str(&scheme.to_ascii_lowercase()).map_err(|_| Problem::new("invalid URL scheme"))?;
    let authority =
        Authority::from_str(&authority.to_ascii_lowercase()).map_err(|_| Problem::new("invalid URL host"))?;
    Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(path_and_query)
        .build()
        .map_err(|_| Problem::new("invalid URL"))
}

fn has_query(uri: &Uri) -> bool {
    uri.query().is_some()
}

/// `upstream`: `http://host[:port]`, nothing else.
pub(crate) fn upstream_uri(text: &str) -> Result<Uri, Problem> {
    const EXAMPLE: &str = "http://127.0.0.1:3000";
    let uri = absolute_url(text, EXAMPLE)?;
    if uri.scheme_str().is_some_and(|s| s.eq_ignore_ascii_case("https")) {
        return Err(Problem::new(format!("https upstreams are not supported yet: `{text}`"))
            .hint("use `http://` to reach the app on a local or private address"));
    }
    if uri.path() != "/" || has_query(&uri) {
        return Err(Problem::new(format!(
            "`{text}` has a path or query; the upstream is only a scheme, host and port"
        ))
        .hint("requests keep their own path; write e.g. \"http://127.0.0.1:3000\""));
    }
    let authority = uri.authority().map(Authority::as_str).unwrap_or_default();
    rebuild("http", authority, "/")
}

/// `public_url`: an http(s) origin, i.e. no path other than `/`.
pub(crate) fn origin_url(text: &str) -> Result<Uri, Problem> {
    const EXAMPLE: &str = "https://app.example.com";
    let uri = absolute_url(text, EXAMPLE)?;
    if uri.path() != "/" || has_query(&uri) {
        return Err(Problem::new(format!("`{text}` has a path or query; `public_url` is an origin"))
            .hint("write only the scheme and host, e.g. \"https://app.example.com\""));
    }
    let scheme = uri.scheme_str().unwrap_or("https");
    let authority = uri.authority().map(Authority::as_str).unwrap_or_default();
    rebuild(scheme, authority, "/")
}

/// `checkout_url`, `jwks_url`: any absolute http(s) URL.
pub(crate) fn http_url(text: &str, example: &str) -> Result<Uri, Problem> {
    absolute_url(text, example)
}

/// `whop.api_base`: an absolute http(s) URL without query; trailing slashes are dropped.
pub(crate) fn api_base(text: &str) -> Result<Uri, Problem> {
    const EXAMPLE: &str = "https://api.whop.com";
    let uri = absolute_url(text, EXAMPLE)?;
    if has_query(&uri) {
        return Err(Problem::new(format!("`{text}` has a query string")).hint(format!("write e.g. \"{EXAMPLE}\"")));
    }
    let path = uri.path().trim_end_matches('/');
    let scheme = uri.scheme_str().unwrap_or("https");
    let authority = uri.authority().map(Authority::as_str).unwrap_or_default();
    rebuild(scheme, authority, if path.is_empty() { "/" } else { path })
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// A route `path` (or `prefix`) in the one spelling the request normaliser produces, so that a
/// rule written `/%61dmin/` or `/café` matches what requests are compared with: unreserved
/// characters decoded, other escapes in uppercase, non-ASCII percent-encoded, no trailing slash.
pub(crate) fn route_path(text: &str) -> Result<String, Problem> {
    if text.is_empty() {
        return Err(Problem::new("a path cannot be empty").hint("write \"/\" to cover every path"));
    }
    if !text.starts_with('/') {
        return Err(Problem::new(format!("`{text}` does not start with `/`"))
            .hint(format!("write \"/{}\"", text.trim_start_matches('/'))));
    }
    if let Some(at) = text.find(['?', '#']) {
        return Err(Problem::new(format!("`{text}` contains a query or fragment"))
            .hint(format!("rules match the path only; write \"{}\"", &text[..at])));
    }
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (Some(hi), Some(lo)) =
                    (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex))
                else {
                    return Err(Problem::new(format!("`{text}` has a `%` that is not followed by two hex digits"))
                        .hint("write a literal `%` as `%25`"));
                };
                let decoded = (hi << 4) | lo;
                if decoded == b'/' || decoded == b'\\' {
                    return Err(Problem::new(format!("`{text}` contains an encoded slash (%2F or %5C)")).hint(
                        "requests containing one are refused, so this rule could never match; write plain `/` segments",
                    ));
                }
                if decoded < 0x20 || decoded == 0x7f {
                    return Err(
                        Problem::new(format!("`{text}` contains an encoded control character")).hint("remove it")
                    );
                }
                if is_unreserved(decoded) {
                    out.push(char::from(decoded));
                } else {
                    out.push('%');
                    out.push(char::from(bytes[i + 1].to_ascii_uppercase()));
                    out.push(char::from(bytes[i + 2].to_ascii_uppercase()));
                }
                i += 3;
                continue;
            }
            b'\\' => {
                return Err(Problem::new(format!("`{text}` contains a backslash"))
                    .hint("requests containing one are refused; use `/`"));
            }
            b'*' => {
                return Err(Problem::new(format!("`{text}` contains `*`; paths are literal, not patterns"))
                    .hint("a rule's path is a segment prefix: \"/api\" already covers \"/api/…\""));
            }
            0..0x20 | 0x7f => {
                return Err(Problem::new("the path contains a control character").hint("remove it"));
            }
            b' ' | b'"' | b'<' | b'>' | b'^' | b'`' | b'{' | b'|' | b'}' => {
                return Err(Problem::new(format!(
                    "`{text}` contains `{}`, which a request path cannot contain unencoded",
                    char::from(b)
                ))
                .hint(format!("write it percent-encoded as `%{b:02X}`; paths are literal, not patterns")));
            }
            0x80.. => {
                // Requests carry non-ASCII percent-encoded; store the rule the same way.
                out.push_str(&format!("%{b:02X}"));
            }
            _ => out.push(char::from(b)),
        }
        i += 1;
    }
    let segments: Vec<&str> = out[1..].split('/').collect();
    let last = segments.len() - 1;
    for (n, segment) in segments.iter().enumerate() {
        if segment.is_empty() && n != last {
            return Err(Problem::new(format!("`{text}` contains an empty segment (`//`)"))
                .hint("requests have repeated slashes merged before matching; write a single `/`"));
        }
        let before_param = segment.split(';').next().unwrap_or(segment);
        if before_param == "." || before_param == ".." {
            return Err(Problem::new(format!("`{text}` contains a `.` or `..` segment"))
                .hint("requests have dot segments removed before matching, so write the path they resolve to"));
        }
    }
    if out.len() > 1 && out.ends_with('/') {
        out.pop();
    }
    Ok(out)
}

/// `prefix`: like a route path, but not `/` and without a trailing slash.
pub(crate) fn prefix(text: &str) -> Result<String, Problem> {
    if text == "/" {
        return Err(Problem::new("`prefix` cannot be `/`: whopgate's endpoints need a path of their own")
            .hint("keep the default \"/.whopgate\""));
    }
    let path = route_path(text)?;
    if text.ends_with('/') {
        return Err(Problem::new(format!("`{text}` ends with `/`")).hint(format!("write \"{path}\"")));
    }
    Ok(path)
}

/// A route's `host` or an entry of `allowed_redirect_hosts`: a host name, optionally `*.`
/// wildcard-prefixed, optionally with `:port`; stored lowercase.
pub(crate) fn host_pattern(text: &str) -> Result<String, Problem> {
    let lower = text.to_ascii_lowercase();
    let bad = |why: &str| {
        Problem::new(format!("`{text}` is not a host name: {why}"))
            .hint("write a host like \"app.example.com\", \"*.example.com\" or \"app.example.com:8443\"")
    };
    if lower.contains("://") || lower.contains('/') {
        return Err(bad("write only the host, without scheme or path"));
    }
    if lower.is_empty() {
        return Err(bad("it is empty"));
    }
    let valid_port = |port: &str| port.parse::<u16>().is_ok_and(|p| p != 0);
    // Requests are matched on their canonical host, which never names its scheme's default port
    // (`crate::authority`): a pattern that does would never match, and its requests would fall
    // to a later rule.
    let default_port = |port: &str| matches!(port.parse::<u16>(), Ok(80 | 443));
    let refuse_default_port = |host: &str| {
        Problem::new(format!("`{text}` names a default port, which a request's host never carries here"))
            .hint(format!("write \"{host}\": whopgate compares hosts without :80 and :443, as the app reads them"))
    };
    if let Some(rest) = lower.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return Err(bad("`[` without `]`"));
        };
        if std::net::Ipv6Addr::from_str(v6).is_err() {
            return Err(bad("not an IPv6 address in brackets"));
        }
        if !after.is_empty() && !after.strip_prefix(':').is_some_and(valid_port) {
            return Err(bad("invalid port"));
        }
        if after.strip_prefix(':').is_some_and(default_port) {
            return Err(refuse_default_port(&format!("[{v6}]")));
        }
        return Ok(lower);
    }
    let (host, port) = match lower.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (lower.as_str(), None),
    };
    if port.is_some_and(|port| !valid_port(port)) {
        return Err(bad("invalid port"));
    }
    if port.is_some_and(default_port) {
        return Err(refuse_default_port(host));
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    if name.is_empty() || name.len() > 253 {
        return Err(bad("wrong length"));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(bad("empty or over-long label"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad("a label cannot start or end with `-`"));
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            if label.contains('*') {
                return Err(bad("`*` is only allowed as a whole first label, as in \"*.example.com\""));
            }
            return Err(bad("only letters, digits, `-` and `.` are allowed"));
        }
    }
    Ok(lower)
}

/// A `trusted_proxies` entry: a CIDR, or a bare IP meaning that single address.
pub(crate) fn ip_net(text: &str) -> Result<IpNet, Problem> {
    if let Ok(net) = IpNet::from_str(text) {
        return Ok(net.trunc());
    }
    if let Ok(ip) = IpAddr::from_str(text) {
        return Ok(IpNet::from(ip));
    }
    Err(Problem::new(format!("`{text}` is not a CIDR or IP address"))
        .hint("write a network like \"10.0.0.0/8\" or \"fd00::/8\", or one address like \"192.168.1.10\""))
}

/// A header name, stored lowercase.
pub(crate) fn header_name(text: &str) -> Result<HeaderName, Problem> {
    HeaderName::from_bytes(text.as_bytes()).map_err(|_| {
        Problem::new(format!("`{text}` is not a valid header name"))
            .hint("a header name is letters, digits and `-`, e.g. \"x-whop-user-token\"")
    })
}

/// A cookie name: an RFC 6265 token.
pub(crate) fn cookie_name(text: &str) -> Result<String, Problem> {
    let valid =
        !text.is_empty() && text.bytes().all(|b| (0x21..0x7f).contains(&b) && !b"()<>@,;:\\\"/[]?={}".contains(&b));
    if valid {
        Ok(text.to_owned())
    } else {
        Err(Problem::new(format!("`{text}` is not a valid cookie name"))
            .hint("use letters, digits, `-` and `_`, e.g. \"__Host-whopgate\""))
    }
}

/// An HTTP method token, stored uppercase.
pub(crate) fn method(text: &str) -> Result<Method, Problem> {
    let upper = text.to_ascii_uppercase();
    let token =
        !upper.is_empty() && upper.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    match Method::from_bytes(upper.as_bytes()) {
        Ok(m) if token => Ok(m),
        _ => Err(Problem::new(format!("`{text}` is not an HTTP method"))
            .hint("write method names like \"GET\", \"POST\", \"DELETE\"")),
    }
}

/// The part after an id's prefix: Whop ids are ASCII letters and digits (`_` tolerated).
fn id_tail_ok(tail: &str) -> bool {
    !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A resource a route may require: a product, an experience or a company.
pub(crate) fn resource_id(text: &str) -> Result<String, Problem> {
    for prefix in ["prod_", "exp_", "biz_"] {
        if let Some(tail) = text.strip_prefix(prefix) {
            if id_tail_ok(tail) {
                return Ok(text.to_owned());
            }
            return Err(Problem::new(format!("`{text}` is not a valid Whop id"))
                .hint(format!("write the whole id, e.g. \"{prefix}xxxxxxxxxxxxxx\"")));
        }
    }
    let hint = match text.split_once('_').map(|(kind, _)| kind) {
        Some("plan") => "a plan is not a resource: require its product (`prod_…`) and use the plan in `checkout_url`",
        Some("app") => "an app is not a resource: require the experience (`exp_…`) or product (`prod_…`) it is sold as",
        Some("pass") => "access passes are products in Whop's current API: require the `prod_…` id",
        _ => "require a product (`prod_…`), an experience (`exp_…`) or a company (`biz_…`)",
    };
    Err(Problem::new(format!("`{text}` is not a Whop resource id")).hint(hint))
}

/// An id with a fixed prefix: `app_…`, `user_…`.
pub(crate) fn prefixed_id(text: &str, prefix: &str, what: &str) -> Result<String, Problem> {
    match text.strip_prefix(prefix) {
        Some(tail) if id_tail_ok(tail) => Ok(text.to_owned()),
        _ => Err(Problem::new(format!("`{text}` is not {what}"))
            .hint(format!("{what} starts with `{prefix}`, e.g. \"{prefix}xxxxxxxxxxxxxx\""))),
    }
}

/// A PEM public key block. Only its shape is checked here; the key itself is parsed where it is
/// used. The text is never quoted back: someone may have pasted a private key.
pub(crate) fn pem_public_key(text: &str) -> Result<String, Problem> {
    let trimmed = text.trim();
    let Some(after_begin) = trimmed.strip_prefix("-----BEGIN ") else {
        let looks_like_path = trimmed.starts_with('/') || trimmed.starts_with("./") || trimmed.ends_with(".pem");
        let problem = if looks_like_path {
            Problem::new("expected the PEM text of a public key, not a file path")
                .hint("paste the key itself, in a multi-line string: \"\"\"-----BEGIN PUBLIC KEY-----\\n…\\n-----END PUBLIC KEY-----\"\"\"")
        } else {
            Problem::new("expected a PEM public key block")
                .hint("it starts with `-----BEGIN PUBLIC KEY-----` and ends with `-----END PUBLIC KEY-----`")
        };
        return Err(problem);
    };
    let Some((label, body)) = after_begin.split_once("-----") else {
        return Err(Problem::new("the PEM `BEGIN` line is not closed with `-----`")
            .hint("it reads `-----BEGIN PUBLIC KEY-----`"));
    };
    if label.contains("PRIVATE") {
        return Err(Problem::new("this is a private key; only public keys belong in `public_keys`")
            .hint("give the public half: `openssl pkey -in key.pem -pubout`"));
    }
    if label == "CERTIFICATE" {
        return Err(Problem::new("this is a certificate, not a public key")
            .hint("extract the key: `openssl x509 -pubkey -noout -in cert.pem`"));
    }
    if label != "PUBLIC KEY" {
        return Err(Problem::new(format!("a PEM block labelled `{label}` is not a public key"))
            .hint("use a `-----BEGIN PUBLIC KEY-----` (SubjectPublicKeyInfo) block"));
    }
    if body.contains("-----BEGIN") {
        return Err(Problem::new("this entry holds more than one PEM block")
            .hint("put exactly one key in each entry of `public_keys`"));
    }
    let end = "-----END PUBLIC KEY-----";
    let Some(base64) = body.strip_suffix(end) else {
        return Err(Problem::new("the PEM block does not end with `-----END PUBLIC KEY-----`")
            .hint("put exactly one key in each entry of `public_keys`"));
    };
    let base64: String = base64.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let base64_ok = !base64.is_empty()
        && base64.len() % 4 == 0
        && base64.trim_end_matches('=').bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    if !base64_ok {
        return Err(Problem::new("the PEM block's body is not base64").hint("paste the key exactly as exported"));
    }
    Ok(trimmed.to_owned())
}

/// `cache.redis_url`. Never quoted back: it may hold a password.
pub(crate) fn redis_url(text: &str) -> Result<String, Problem> {
    let rest = text.strip_prefix("redis://").or_else(|| text.strip_prefix("rediss://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(text.to_owned()),
        _ => Err(Problem::new("`cache.redis_url` is not a Redis URL")
            .hint("write e.g. \"redis://127.0.0.1:6379\" or \"rediss://…\" for TLS, or \"\" for no Redis")),
    }
}

/// `whop.api_version_date`: `YYYY-MM-DD`.
pub(crate) fn api_date(text: &str) -> Result<String, Problem> {
    let parts: Vec<&str> = text.split('-').collect();
    let number = |s: &str, len: usize| {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse::<u32>().ok()).flatten()
    };
    let ok = match parts.as_slice() {
        [y, m, d] => {
            number(y, 4).is_some()
                && number(m, 2).is_some_and(|m| (1..=12).contains(&m))
                && number(d, 2).is_some_and(|d| (1..=31).contains(&d))
        }
        _ => false,
    };
    if ok {
        Ok(text.to_owned())
    } else {
        Err(Problem::new(format!("`{text}` is not a date")).hint("write it as YYYY-MM-DD, e.g. \"2026-09-15\""))
    }
}

/// An OAuth scope token (RFC 6749 §3.3).
pub(crate) fn scope(text: &str) -> Result<String, Problem> {
    let ok = !text.is_empty() && text.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b'"' && b != b'\\');
    if ok {
        Ok(text.to_owned())
    } else {
        Err(Problem::new(format!("`{text}` is not a valid OAuth scope"))
            .hint("write one scope per entry, e.g. [\"openid\", \"profile\", \"email\"]"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message<T: std::fmt::Debug>(r: Result<T, Problem>) -> String {
        match r {
            Ok(v) => panic!("expected an error, got {v:?}"),
            Err(p) => p.message,
        }
    }

    fn hint<T: std::fmt::Debug>(r: Result<T, Problem>) -> String {
        match r {
            Ok(v) => panic!("expected an error, got {v:?}"),
            Err(p) => p.hint.unwrap_or_default(),
        }
    }

    #[test]
    fn suggestions() {
        let keys = ["upstream", "upstream_timeout", "listen", "admin_listen", "max_header_bytes"];
        assert_eq!(suggest("upsteam", &keys), Some("upstream"));
        assert_eq!(suggest("lisen", &keys), Some("listen"));
        assert_eq!(suggest("Listen", &keys), Some("listen"));
        assert_eq!(suggest("max-header-bytes", &keys), Some("max_header_bytes"));
        assert_eq!(suggest("upstream_timout", &keys), Some("upstream_timeout"));
        assert_eq!(suggest("database", &keys), None);
        assert_eq!(suggest("x", &keys), None);
        assert_eq!(one_of_hint("brower", &["auto", "browser", "api"]), "did you mean `browser`?");
        assert_eq!(one_of_hint("zzz", &["auto", "api"]), "use one of: \"auto\", \"api\"");
    }

    #[test]
    fn socket_addresses() {
        assert_eq!(socket_addr("127.0.0.1:8080").ok(), SocketAddr::from_str("127.0.0.1:8080").ok());
        assert!(socket_addr("[::1]:0").is_ok());
        assert!(message(socket_addr("localhost:8080")).contains("names a host"));
        assert_eq!(hint(socket_addr("localhost:8080")), "write \"127.0.0.1:8080\" (or \"[::1]:8080\")");
        assert!(hint(socket_addr(":8080")).contains("\"0.0.0.0:8080\""));
        assert!(message(socket_addr(":8080")).contains("no IP address"));
        assert!(message(socket_addr("8080")).contains("port without an IP address"));
        assert!(message(socket_addr("127.0.0.1")).contains("has no port"));
        assert!(hint(socket_addr("::1")).contains("[::1]:8080"));
        assert!(hint(socket_addr("example.com:80")).contains("0.0.0.0:80"));
        assert!(message(socket_addr("nonsense")).contains("not an IP address and port"));
        assert!(message(socket_addr("")).contains("empty"));
    }

    #[test]
    fn upstreams() {
        assert_eq!(
            upstream_uri("http://127.0.0.1:3000").map(|u| u.to_string()).ok().as_deref(),
            Some("http://127.0.0.1:3000/")
        );
        assert_eq!(
            upstream_uri("http://App.Local:3000/").map(|u| u.to_string()).ok().as_deref(),
            Some("http://app.local:3000/")
        );
        assert!(upstream_uri("http://localhost").is_ok());
        assert!(message(upstream_uri("https://127.0.0.1:3000")).contains("not supported yet"));
        assert!(message(upstream_uri("http://127.0.0.1:3000/app")).contains("path or query"));
        assert!(message(upstream_uri("http://127.0.0.1:3000/?a=1")).contains("path or query"));
        assert!(message(upstream_uri("127.0.0.1:3000")).contains("not an absolute http(s) URL"));
        assert!(message(upstream_uri("ftp://h")).contains("not an http(s) URL"));
        assert!(message(upstream_uri("http://u:p@h:1")).contains("user name or password"));
        assert!(upstream_uri("").is_err());
    }

    #[test]
    fn origins_and_urls() {
        assert_eq!(
            origin_url("https://App.Example.com/").map(|u| u.to_string()).ok().as_deref(),
            Some("https://app.example.com/")
        );
        assert!(origin_url("http://127.0.0.1:8080").is_ok());
        assert!(message(origin_url("https://app.example.com/app")).contains("origin"));
        assert!(origin_url("app.example.com").is_err());
        assert!(http_url("https://whop.com/checkout/plan_x?d=1", "x").is_ok());
        assert!(http_url("/checkout", "x").is_err());
        assert!(http_url("javascript:alert(1)", "x").is_err());
    }

    #[test]
    fn api_base_drops_trailing_slashes() {
        let base = |t| api_base(t).map(|u| (u.to_string(), u.path().to_owned())).ok();
        assert_eq!(base("https://api.whop.com"), Some(("https://api.whop.com/".into(), "/".into())));
        assert_eq!(base("https://api.whop.com/"), Some(("https://api.whop.com/".into(), "/".into())));
        assert_eq!(base("http://127.0.0.1:9999/whop//"), Some(("http://127.0.0.1:9999/whop".into(), "/whop".into())));
        assert!(api_base("https://api.whop.com/?x=1").is_err());
        assert!(api_base("api.whop.com").is_err());
    }

    #[test]
    fn route_paths_are_canonical() {
        for (input, want) in [
            ("/", "/"),
            ("/api", "/api"),
            ("/api/", "/api"),
            ("/%61dmin", "/admin"),
            ("/q%3a", "/q%3A"),
            ("/café", "/caf%C3%A9"),
            ("/.well-known/x", "/.well-known/x"),
            ("/a;b=1", "/a;b=1"),
            ("/..a", "/..a"),
        ] {
            assert_eq!(route_path(input).ok().as_deref(), Some(want), "{input}");
        }
    }

    #[test]
    fn route_paths_that_could_never_match_are_refused() {
        for (input, part) in [
            ("", "empty"),
            ("api", "does not start with `/`"),
            ("/api?x=1", "query"),
            ("/api#x", "query or fragment"),
            ("/a//b", "`//`"),
            ("//", "`//`"),
            ("/a/../b", "`..`"),
            ("/a/./b", "`.`"),
            ("/a/%2e%2e/b", "`..`"),
            ("/..;/admin", "`..`"),
            ("/a%2Fb", "encoded slash"),
            ("/a%5cb", "encoded slash"),
            ("/a\\b", "backslash"),
            ("/a%zz", "two hex digits"),
            ("/a%4", "two hex digits"),
            ("/a b", "`%20`"),
            ("/api/*", "patterns"),
            ("/users/{id}", "`{`"),
            ("/a\u{1}", "control"),
            ("/a%00", "control"),
        ] {
            let p = route_path(input).err();
            let text = p.map(|p| format!("{} {}", p.message, p.hint.unwrap_or_default())).unwrap_or_default();
            assert!(text.contains(part), "{input:?}: {text}");
        }
    }

    #[test]
    fn prefixes() {
        assert_eq!(prefix("/.whopgate").ok().as_deref(), Some("/.whopgate"));
        assert_eq!(prefix("/auth/gate").ok().as_deref(), Some("/auth/gate"));
        assert!(message(prefix("/")).contains("cannot be `/`"));
        assert_eq!(hint(prefix("/.whopgate/")), "write \"/.whopgate\"");
        assert!(prefix(".whopgate").is_err());
    }

    #[test]
    fn hosts() {
        for (input, want) in [
            ("App.Example.com", "app.example.com"),
            ("*.example.com", "*.example.com"),
            ("example.com:8443", "example.com:8443"),
            ("localhost", "localhost"),
            ("10.0.0.1:8080", "10.0.0.1:8080"),
            ("[::1]", "[::1]"),
            ("[::1]:8080", "[::1]:8080"),
        ] {
            assert_eq!(host_pattern(input).ok().as_deref(), Some(want), "{input}");
        }
        for input in [
            "",
            "https://example.com",
            "example.com/x",
            "ex ample.com",
            "*",
            "a.*.com",
            "-a.com",
            "a..com",
            "example.com:0",
            "example.com:99999",
            "example.com:",
            "[::1",
            "[nope]",
            "[::1]x",
            "a_b.com",
        ] {
            assert!(host_pattern(input).is_err(), "{input}");
        }
        for (input, fix) in [
            ("admin.example:443", "\"admin.example\""),
            ("Admin.Example:80", "\"admin.example\""),
            ("[::1]:443", "\"[::1]\""),
        ] {
            let problem = host_pattern(input).err().unwrap_or_else(|| panic!("{input} accepted"));
            assert!(problem.message.contains("default port"), "{input}: {}", problem.message);
            assert!(hint(host_pattern(input)).contains(fix), "{input}");
        }
    }

    #[test]
    fn cidrs() {
        assert_eq!(ip_net("10.0.0.0/8").ok(), IpNet::from_str("10.0.0.0/8").ok());
        assert_eq!(ip_net("10.1.2.3/8").ok(), IpNet::from_str("10.0.0.0/8").ok());
        assert_eq!(ip_net("192.168.1.10").ok(), IpNet::from_str("192.168.1.10/32").ok());
        assert_eq!(ip_net("::1").ok(), IpNet::from_str("::1/128").ok());
        assert_eq!(message(ip_net("10.0.0.0/33")), "`10.0.0.0/33` is not a CIDR or IP address");
        assert!(ip_net("proxy.internal").is_err());
        assert!(ip_net("").is_err());
    }

    #[test]
    fn names_and_tokens() {
        assert_eq!(header_name("X-Whop-User-Token").map(|h| h.to_string()).ok().as_deref(), Some("x-whop-user-token"));
        assert!(header_name("x whop").is_err());
        assert!(header_name("").is_err());
        assert!(cookie_name("__Host-whopgate").is_ok());
        assert!(cookie_name("whopgate_session").is_ok());
        for bad in ["", "a b", "a;b", "a=b", "é"] {
            assert!(cookie_name(bad).is_err(), "{bad}");
        }
        assert_eq!(method("get").ok(), Some(Method::GET));
        assert_eq!(method("PROPFIND").map(|m| m.to_string()).ok().as_deref(), Some("PROPFIND"));
        for bad in ["", "GE T", "GET/", "G(ET"] {
            assert!(method(bad).is_err(), "{bad}");
        }
        assert!(scope("openid").is_ok());
        assert!(scope("a b").is_err());
        assert!(api_date("2026-09-15").is_ok());
        for bad in ["2026-13-01", "26-09-15", "2026/09/15", "2026-09-32", "today"] {
            assert!(api_date(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids() {
        for ok in ["prod_abc123", "exp_XYZ", "biz_1"] {
            assert!(resource_id(ok).is_ok(), "{ok}");
        }
        for bad in ["prod_", "product_1", "plan_123", "app_1", "", "prod_a-b"] {
            assert!(resource_id(bad).is_err(), "{bad}");
        }
        assert!(hint(resource_id("plan_abc")).contains("checkout_url"));
        assert!(prefixed_id("app_abc", "app_", "an app id").is_ok());
        assert_eq!(
            hint(prefixed_id("abc", "app_", "an app id")),
            "an app id starts with `app_`, e.g. \"app_xxxxxxxxxxxxxx\""
        );
        assert!(prefixed_id("user_dev", "user_", "a user id").is_ok());
        assert!(prefixed_id("user_", "user_", "a user id").is_err());
    }

    const PEM: &str = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAErz8a8vxvexHC0TLT91g7llOdDOsN\nuYiGEfic4Qhni+HMfRBuUphOh7F3k8ZcZ1JS9AB5smKrW4S/TbiXrOs9Ow==\n-----END PUBLIC KEY-----\n";

    #[test]
    fn pem_keys() {
        assert_eq!(pem_public_key(PEM).ok().as_deref(), Some(PEM.trim()));
        let private = "-----BEGIN PRIVATE KEY-----\nSECRETSTUFF\n-----END PRIVATE KEY-----";
        let p = pem_public_key(private).err();
        assert!(p.as_ref().is_some_and(|p| p.message.contains("private key") && !p.message.contains("SECRETSTUFF")));
        assert!(message(pem_public_key("/etc/whop.pem")).contains("file path"));
        assert!(message(pem_public_key("hello")).contains("PEM public key block"));
        assert!(
            message(pem_public_key("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"))
                .contains("certificate")
        );
        assert!(message(pem_public_key("-----BEGIN PUBLIC KEY-----\nAAAA\n")).contains("does not end"));
        assert!(
            message(pem_public_key("-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----")).contains("base64")
        );
        let two = format!("{PEM}{PEM}");
        assert!(message(pem_public_key(&two)).contains("more than one PEM block"));
    }

    #[test]
    fn redis_urls_are_never_quoted() {
        assert!(redis_url("redis://127.0.0.1:6379").is_ok());
        assert!(redis_url("rediss://:pw@cache:6380/0").is_ok());
        for bad in ["http://:hunter2@cache", "redis://", "hunter2"] {
            let text = format!("{:?}", redis_url(bad));
            assert!(!text.contains("hunter2"), "{text}");
            assert!(redis_url(bad).is_err());
        }
    }
}
