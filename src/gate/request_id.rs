//! `x-request-id`: kept when the client sends a sane one, generated otherwise, forwarded to the
//! upstream, echoed in the response and written in the access log.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

/// `x-request-id`
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied id we keep; longer ones are replaced (they would bloat every log line).
const MAX_LEN: usize = 128;

/// The request's id, inserting a fresh one when the client sent none (or an unusable one).
pub fn ensure(headers: &mut HeaderMap) -> HeaderValue {
    // One lookup, whether the id is kept or made.
    match headers.entry(&X_REQUEST_ID) {
        http::header::Entry::Occupied(mut entry) => {
            let bytes = entry.get().as_bytes();
            if !bytes.is_empty() && bytes.len() <= MAX_LEN && bytes.iter().all(|b| b.is_ascii_graphic()) {
                return entry.get().clone();
            }
            let id = generate();
            entry.insert(id.clone());
            id
        }
        http::header::Entry::Vacant(entry) => entry.insert(generate()).clone(),
    }
}

/// 128 random bits as 32 lowercase hex digits.
fn generate() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n: u128 = rand::random();
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = HEX[((n >> (124 - 4 * i)) & 0xf) as usize];
    }
    // 32 hex digits are always a valid header value.
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_sane_id_and_replaces_others() {
        let mut h = HeaderMap::new();
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(ensure(&mut h), "abc-123");

        let mut h = HeaderMap::new();
        h.insert(&X_REQUEST_ID, HeaderValue::from_str(&"x".repeat(500)).unwrap());
        let id = ensure(&mut h);
        assert_eq!(id.len(), 32);
        assert_eq!(h[&X_REQUEST_ID], id);

        let mut h = HeaderMap::new();
        let a = ensure(&mut h);
        let mut h = HeaderMap::new();
        let b = ensure(&mut h);
        assert_ne!(a, b);
        assert!(a.to_str().unwrap().bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
