//! Header rewriting on the way to the upstream and back: hop-by-hop headers, spoofed identity
//! headers, and `X-Forwarded-*`.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;
use smallvec::SmallVec;

use crate::gate::client_headers::is_identity_header;
use crate::gate::request_id::X_REQUEST_ID;

/// `x-forwarded-for`
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `x-forwarded-proto`
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `x-forwarded-host`
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// What one pass over a request's header names found. Most requests carry none of these names,
/// and asking the map for each absent one costs a hash lookup apiece.
#[derive(Debug, Default)]
pub struct NamesFound {
    /// Hop-by-hop names present (RFC 9110 §7.6.1 plus the de-facto ones), but for
    /// `Connection` and `Upgrade`, which are flagged on their own.
    hop_by_hop: SmallVec<[HeaderName; 2]>,
    connection: bool,
    upgrade: bool,
    forwarded_for: bool,
    forwarded_proto: bool,
    forwarded_host: bool,
    /// Other forwarding headers (`Forwarded`, `X-Real-IP`, `X-Forwarded-Port`, …): kept only
    /// from a trusted proxy.
    spoofable: SmallVec<[HeaderName; 1]>,
}

impl NamesFound {
    /// One pass over the names in `headers`.
    pub fn scan(headers: &HeaderMap) -> Self {
        let mut found = Self::default();
        for name in headers.keys() {
            match name.as_str() {
                "connection" => found.connection = true,
                "upgrade" => found.upgrade = true,
                "keep-alive"
                | "proxy-connection"
                | "proxy-authenticate"
                | "proxy-authorization"
                | "te"
                | "trailer"
                | "transfer-encoding"
                // Only meaningful with `Upgrade: h2c`, which is never forwarded (RFC 9113 §3.1).
                | "http2-settings" => found.hop_by_hop.push(name.clone()),
                "x-forwarded-for" => found.forwarded_for = true,
                "x-forwarded-proto" => found.forwarded_proto = true,
                "x-forwarded-host" => found.forwarded_host = true,
                // What apps read the client's address, scheme, port or original URL from.
                "forwarded"
                | "x-real-ip"
                | "x-forwarded-port"
                | "x-forwarded-prefix"
                | "x-forwarded-scheme"
                | "x-forwarded-ssl"
                | "x-forwarded-server"
                | "x-forwarded-uri"
                | "x-forwarded-method"
                | "x-url-scheme"
                | "front-end-https"
                | "x-client-ip"
                | "true-client-ip"
                | "cf-connecting-ip" => found.spoofable.push(name.clone()),
                _ => {}
            }
        }
        found
    }

    /// Does the request ask for a protocol switch that may be tunnelled: a WebSocket handshake
    /// (a GET with `Connection: upgrade` and `websocket` among its `Upgrade` tokens)? Any other
    /// upgrade (`h2c` above all: the client would then speak HTTP/2 to the app, unjudged) is
    /// not, and its headers are dropped.
    pub fn wants_upgrade(&self, method: &http::Method, headers: &HeaderMap) -> bool {
        self.upgrade
            && self.connection
            && method == http::Method::GET
            && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"))
            && list_tokens(headers, &header::UPGRADE).any(super::upgrade::is_tunnelled)
    }
}

/// The comma-separated tokens of every `Connection` header.
fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    list_tokens(headers, &header::CONNECTION)
}

/// The comma-separated tokens of every `name` header.
fn list_tokens<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a str> {
    headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).map(str::trim)
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
///
/// With `keep_upgrade` (a WebSocket handshake), `Upgrade: websocket` and `Connection: upgrade`
/// are set again, as the handshake needs both; any other token the client offered is dropped.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, found: &NamesFound, keep_upgrade: bool) {
    let mut doomed = found.hop_by_hop.clone();
    if found.connection {
        let named = connection_tokens(headers)
            .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
            .filter(|name| !set_by_whopgate(name));
        let named: SmallVec<[HeaderName; 4]> = named.collect();
        doomed.extend(named);
        doomed.push(header::CONNECTION);
    }
    if found.upgrade {
        doomed.push(header::UPGRADE);
    }
    for name in &doomed {
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(header::UPGRADE, HeaderValue::from_static(super::upgrade::TUNNELLED));
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Headers whopgate itself puts on the forwarded request. A client that names one in
/// `Connection` must not get the proxy to drop it: the identity headers would vanish after the
/// gate set them, and `Host` or the request id with them.
fn set_by_whopgate(name: &HeaderName) -> bool {
    name == header::HOST || name == X_REQUEST_ID || is_identity_header(name.as_str())
}

/// Who sent the request and whether their forwarding headers are believed.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The peer is one of `trusted_proxies`.
    pub trusted: bool,
    /// The client connection is TLS.
    pub tls: bool,
    /// `ip` as a header value, made once per connection rather than once per request.
    ip_header: HeaderValue,
}

impl Peer {
    /// Classifies `ip` against the trusted proxy list.
    pub fn new(ip: IpAddr, tls: bool, trusted_proxies: &[IpNet]) -> Self {
        let ip = ip.to_canonical();
        Self { trusted: trusted_proxies.iter().any(|net| net.contains(&ip)), tls, ip_header: ip_header_value(ip) }
    }
}

/// The `X-Forwarded-For/Proto/Host` values one request is sent upstream with.
///
/// They are written straight into the upstream request head rather than inserted into the
/// header map: three map inserts per request (and the regrowth they can cause) cost more than
/// the rest of the rewriting together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    /// `X-Forwarded-For`: the client address, after a trusted peer's list.
    pub for_: HeaderValue,
    /// `X-Forwarded-Proto`: `http` or `https`, or a trusted peer's value.
    pub proto: HeaderValue,
    /// `X-Forwarded-Host`: the `Host` the client asked for, or a trusted peer's value.
    pub host: Option<HeaderValue>,
}

impl Forwarded {
    /// Calls `f` with each of the three headers (`X-Forwarded-Host` only when there is a host),
    /// in the order they are written.
    pub fn each_field(&self, mut f: impl FnMut(&'static str, &HeaderValue)) {
        f("x-forwarded-for", &self.for_);
        f("x-forwarded-proto", &self.proto);
        if let Some(host) = &self.host {
            f("x-forwarded-host", host);
        }
    }
}

/// Takes `X-Forwarded-For/Proto/Host` out of `headers` and decides their values: appended to /
/// kept from a trusted peer, replaced otherwise. The other forwarding headers an untrusted
/// client sent (`Forwarded`, `X-Real-IP`, `X-Forwarded-Port`, …) are dropped so the upstream
/// cannot be fooled by them.
pub fn take_forwarded(
    headers: &mut HeaderMap,
    found: &NamesFound,
    peer: &Peer,
    host: Option<&HeaderValue>,
) -> Forwarded {
    let (has_for, has_proto, has_host) = (found.forwarded_for, found.forwarded_proto, found.forwarded_host);
    let trusted = |present: bool, name: &HeaderName, headers: &HeaderMap| {
        (peer.trusted && present).then(|| joined(headers, name)).flatten()
    };
    let for_ = match trusted(has_for, &X_FORWARDED_FOR, headers) {
        Some(list) => {
            let mut bytes = list.as_bytes().to_vec();
            bytes.extend_from_slice(b", ");
            bytes.extend_from_slice(peer.ip_header.as_bytes());
            HeaderValue::from_bytes(&bytes).unwrap_or_else(|_| peer.ip_header.clone())
        }
        None => peer.ip_header.clone(),
    };
    let proto = trusted(has_proto, &X_FORWARDED_PROTO, headers)
        .unwrap_or_else(|| HeaderValue::from_static(if peer.tls { "https" } else { "http" }));
    let host = trusted(has_host, &X_FORWARDED_HOST, headers).or_else(|| host.cloned());
    for (present, name) in [(has_for, &X_FORWARDED_FOR), (has_proto, &X_FORWARDED_PROTO), (has_host, &X_FORWARDED_HOST)]
    {
        if present {
            headers.remove(name);
        }
    }
    if !peer.trusted {
        for name in &found.spoofable {
            headers.remove(name);
        }
    }
    Forwarded { for_, proto, host }
}

/// Every value of `name`, joined as one list (`a, b`); `None` when it cannot be a header value.
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<HeaderValue> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let Some(second) = values.next() else { return Some(first.clone()) };
    let mut bytes = first.as_bytes().to_vec();
    for value in std::iter::once(second).chain(values) {
        bytes.extend_from_slice(b", ");
        bytes.extend_from_slice(value.as_bytes());
    }
    HeaderValue::from_bytes(&bytes).ok()
}

fn ip_header_value(ip: IpAddr) -> HeaderValue {
    // An IP address always formats to a valid header value.
    HeaderValue::try_from(ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_identity_and_hop_by_hop() {
        let mut h = HeaderMap::new();
        h.insert("x-whop-user-id", HeaderValue::from_static("user_evil"));
        h.insert("x_whop_access_level", HeaderValue::from_static("admin"));
        h.insert("x-whop-user-token", HeaderValue::from_static("tok"));
        h.insert("connection", HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        crate::gate::client_headers::strip(&mut h);
        let found = NamesFound::scan(&h);
        strip_hop_by_hop(&mut h, &found, false);
        let mut names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["accept", "x-whop-user-token"]);
    }

    #[test]
    fn connection_cannot_name_what_whopgate_sets() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("x-whop-user-id, Host, x-request-id, x-whopgate-source, x-a"));
        h.insert("x-whop-user-id", HeaderValue::from_static("user_1"));
        h.insert("x-whopgate-source", HeaderValue::from_static("user_token"));
        h.insert("host", HeaderValue::from_static("app.test"));
        h.insert("x-request-id", HeaderValue::from_static("abc"));
        h.insert("x-a", HeaderValue::from_static("1"));
        let found = NamesFound::scan(&h);
        strip_hop_by_hop(&mut h, &found, false);
        let mut names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["host", "x-request-id", "x-whop-user-id", "x-whopgate-source"]);
    }

    #[test]
    fn upgrade_keeps_upgrade() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("Upgrade"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        let found = NamesFound::scan(&h);
        assert!(found.wants_upgrade(&http::Method::GET, &h));
        assert!(!found.wants_upgrade(&http::Method::POST, &h), "a WebSocket handshake is a GET");
        strip_hop_by_hop(&mut h, &found, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }

    #[test]
    fn only_websocket_upgrades_survive() {
        let offer = |upgrade: &str| {
            let mut h = HeaderMap::new();
            h.insert("connection", HeaderValue::from_static("Upgrade, HTTP2-Settings"));
            h.insert("upgrade", HeaderValue::from_str(upgrade).unwrap());
            h.insert("http2-settings", HeaderValue::from_static("AAMAAABkAARAAAAAAAIAAAAA"));
            h
        };
        for upgrade in ["h2c", "H2C", "h2c, h2", "TLS/1.2"] {
            let mut h = offer(upgrade);
            let found = NamesFound::scan(&h);
            assert!(!found.wants_upgrade(&http::Method::GET, &h), "{upgrade}");
            strip_hop_by_hop(&mut h, &found, false);
            assert!(h.is_empty(), "{upgrade}: {h:?}");
        }
        let mut h = offer("websocket, h2c");
        let found = NamesFound::scan(&h);
        assert!(found.wants_upgrade(&http::Method::GET, &h));
        strip_hop_by_hop(&mut h, &found, true);
        assert_eq!(h.get_all("upgrade").iter().collect::<Vec<_>>(), ["websocket"], "h2c is dropped from the offer");
        assert!(!h.contains_key("http2-settings"));
    }

    #[test]
    fn forwarded_from_untrusted_is_replaced() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert("forwarded", HeaderValue::from_static("for=1.2.3.4"));
        let host = HeaderValue::from_static("app.test");
        h.insert("x-real-ip", HeaderValue::from_static("1.2.3.4"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        let found = NamesFound::scan(&h);
        let f = take_forwarded(&mut h, &found, &Peer::new("192.0.2.1".parse().unwrap(), false, &trusted), Some(&host));
        assert_eq!(f.for_, "192.0.2.1");
        assert_eq!(f.proto, "http");
        assert_eq!(f.host.as_ref().unwrap(), "app.test");
        let names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["accept"], "the client's copies are gone from the map");
        let mut fields: Vec<(&str, String)> = Vec::new();
        f.each_field(|n, v| fields.push((n, v.to_str().unwrap().to_owned())));
        assert_eq!(
            fields,
            [
                ("x-forwarded-for", "192.0.2.1".to_owned()),
                ("x-forwarded-proto", "http".to_owned()),
                ("x-forwarded-host", "app.test".to_owned())
            ]
        );
    }

    #[test]
    fn forwarded_from_trusted_is_appended() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        h.append("x-forwarded-for", HeaderValue::from_static("5.6.7.8"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert("x-forwarded-host", HeaderValue::from_static("public.test"));
        h.insert("x-real-ip", HeaderValue::from_static("1.2.3.4"));
        let found = NamesFound::scan(&h);
        let f = take_forwarded(&mut h, &found, &Peer::new("10.1.2.3".parse().unwrap(), false, &trusted), None);
        assert_eq!(f.for_, "1.2.3.4, 5.6.7.8, 10.1.2.3");
        assert_eq!(f.proto, "https");
        assert_eq!(f.host.as_ref().unwrap(), "public.test");
        assert!(!h.contains_key("x-forwarded-for") && !h.contains_key("x-forwarded-host"));
        assert_eq!(h["x-real-ip"], "1.2.3.4", "a trusted proxy's X-Real-IP is kept");
    }

    #[test]
    fn no_host_no_forwarded_host() {
        let mut h = HeaderMap::new();
        let found = NamesFound::scan(&h);
        let f = take_forwarded(&mut h, &found, &Peer::new("192.0.2.1".parse().unwrap(), true, &[]), None);
        assert_eq!(f.proto, "https");
        let mut count = 0;
        f.each_field(|_, _| count += 1);
        assert_eq!(count, 2);
    }

    #[test]
    fn ipv4_mapped_peer_is_canonical() {
        let trusted: Vec<IpNet> = vec!["127.0.0.1/32".parse().unwrap()];
        let peer = Peer::new("::ffff:127.0.0.1".parse().unwrap(), false, &trusted);
        assert!(peer.trusted);
        assert_eq!(peer.ip_header, "127.0.0.1");
    }
}
