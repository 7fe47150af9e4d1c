//! Is a delivery Whop's? Standard Webhooks (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature`) and Whop's legacy `x-whop-signature` (SPEC §1).
//!
//! Written here on `hmac`/`sha2` (already ours for the session cookies) rather than with the
//! `standardwebhooks` crate: that crate base64-decodes the secret, and Whop keys the HMAC with
//! the literal bytes of the `ws_…` secret, prefix included.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use http::HeaderMap;
use sha2::Sha256;

/// How far a delivery's timestamp may be from our clock, either way (Standard Webhooks: 5 min).
pub const TOLERANCE_SECS: i64 = 300;
/// Longest `webhook-id` accepted (it is remembered to recognise replays).
const MAX_ID_LEN: usize = 256;
/// Most signature entries read from one `webhook-signature` header.
const MAX_SIGNATURES: usize = 8;

/// A delivery whose signature checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// What identifies the delivery for replay detection: its `webhook-id`, or for a legacy
    /// delivery (which has none) its timestamp and signature.
    pub id: String,
}

/// Why a delivery was refused. Each says what to fix, for the 401's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Neither `webhook-signature` nor `x-whop-signature`.
    Unsigned,
    /// Signed in a scheme whose secret is not configured.
    NotConfigured(&'static str),
    /// The signature headers could not be read.
    Malformed(&'static str),
    /// The timestamp is more than [`TOLERANCE_SECS`] away from now.
    Stale,
    /// No signature matched.
    Mismatch,
}

impl Rejected {
    /// The reason, for the 401's body (never the secret or the expected signature).
    pub fn message(self) -> &'static str {
        match self {
            Rejected::Unsigned => "the delivery is not signed (no webhook-signature or x-whop-signature header)",
            Rejected::NotConfigured(what) => what,
            Rejected::Malformed(what) => what,
            Rejected::Stale => "the delivery's timestamp is more than 5 minutes from now",
            Rejected::Mismatch => {
                "no signature matches: webhook.secret must be the ws_… secret exactly as Whop shows it, \
                 prefix included (legacy deliveries: webhook.legacy_secret)"
            }
        }
    }
}

/// The configured secrets, as bytes.
#[derive(Clone)]
pub struct Secrets {
    /// `webhook.secret`, verbatim.
    pub standard: Option<Vec<u8>>,
    /// `webhook.legacy_secret`, verbatim.
    pub legacy: Option<Vec<u8>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("standard", &self.standard.as_ref().map(|_| "<redacted>"))
            .field("legacy", &self.legacy.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Checks a delivery's signature over its raw `body` as of `now` (Unix seconds). A
/// `webhook-signature` header means Standard Webhooks, else `x-whop-signature` the legacy scheme.
pub fn verify(headers: &HeaderMap, body: &[u8], now: i64, secrets: &Secrets) -> Result<Verified, Rejected> {
    if let Some(signature) = headers.get("webhook-signature") {
        let secret = secrets
            .standard
            .as_deref()
            .ok_or(Rejected::NotConfigured("a Standard Webhooks delivery, but webhook.secret is not set"))?;
        let id = single(headers, "webhook-id")?;
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return Err(Rejected::Malformed("webhook-id is empty or too long"));
        }
        let timestamp = single(headers, "webhook-timestamp")?;
        check_time(timestamp, now)?;
        let signature = signature.to_str().map_err(|_| Rejected::Malformed("webhook-signature is not text"))?;
        let mac = keyed(secret, &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body]).ok_or(Rejected::Mismatch)?;
        let engine = base64::engine::general_purpose::STANDARD;
        let matched = signature
            .split(' ')
            .filter(|entry| !entry.is_empty())
            .take(MAX_SIGNATURES)
            .filter_map(|entry| entry.strip_prefix("v1,"))
            .filter_map(|encoded| engine.decode(encoded).ok())
            .any(|candidate| mac.clone().verify_slice(&candidate).is_ok());
        return if matched { Ok(Verified { id: id.to_owned() }) } else { Err(Rejected::Mismatch) };
    }
    if let Some(signature) = headers.get("x-whop-signature") {
        let secret = secrets.legacy.as_deref().ok_or(Rejected::NotConfigured(
            "a legacy x-whop-signature delivery, but webhook.legacy_secret is not set",
        ))?;
        let signature = signature.to_str().map_err(|_| Rejected::Malformed("x-whop-signature is not text"))?;
        let (mut timestamp, mut expected) = (None, Vec::new());
        for part in signature.split(',').map(str::trim) {
            if let Some(t) = part.strip_prefix("t=") {
                timestamp = Some(t);
            } else if let Some(v1) = part.strip_prefix("v1=") {
                expected.push(v1);
            }
        }
        let timestamp = timestamp.ok_or(Rejected::Malformed("x-whop-signature has no t="))?;
        check_time(timestamp, now)?;
        let mac = keyed(secret, &[timestamp.as_bytes(), b".", body]).ok_or(Rejected::Mismatch)?;
        let matched = expected
            .iter()
            .take(MAX_SIGNATURES)
            .find(|hex| decode_hex(hex).is_some_and(|candidate| mac.clone().verify_slice(&candidate).is_ok()));
        return match matched {
            Some(hex) => Ok(Verified { id: format!("legacy:{timestamp}:{}", hex.to_ascii_lowercase()) }),
            None => Err(Rejected::Mismatch),
        };
    }
    Err(Rejected::Unsigned)
}

/// The one value of header `name`.
fn single<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, Rejected> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => value.to_str().map_err(|_| Rejected::Malformed("a webhook header is not text")),
        (None, _) => Err(Rejected::Malformed("webhook-id and webhook-timestamp are required")),
        (Some(_), Some(_)) => Err(Rejected::Malformed("a webhook header is repeated")),
    }
}

fn check_time(timestamp: &str, now: i64) -> Result<(), Rejected> {
    if timestamp.is_empty() || timestamp.len() > 12 || !timestamp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Rejected::Malformed("the timestamp is not a number of seconds"));
    }
    let t: i64 = timestamp.parse().map_err(|_| Rejected::Malformed("the timestamp is not a number of seconds"))?;
    if (now - t).abs() > TOLERANCE_SECS { Err(Rejected::Stale) } else { Ok(()) }
}

/// The MAC over `parts`; `None` only if HMAC refused the key, which it does for no length.
fn keyed(secret: &[u8], parts: &[&[u8]]) -> Option<Hmac<Sha256>> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).ok()?;
    for part in parts {
        mac.update(part);
    }
    Some(mac)
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 || hex.len() > 128 {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
/// Signs as Whop does, for tests and the mock: the `webhook-signature` value for a Standard
/// Webhooks delivery.
pub fn sign_standard(secret: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let tag = keyed(secret, &[id.as_bytes(), b".", timestamp.to_string().as_bytes(), b".", body])
        .map(|mac| mac.finalize().into_bytes().to_vec())
        .unwrap_or_default();
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(tag))
}

#[cfg(test)]
/// Signs as Whop's legacy scheme does: the `x-whop-signature` value.
pub fn sign_legacy(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let tag = keyed(secret, &[timestamp.to_string().as_bytes(), b".", body])
        .map(|mac| mac.finalize().into_bytes().to_vec())
        .unwrap_or_default();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"ws_0123456789abcdef";
    const NOW: i64 = 1_800_000_000;

    fn secrets() -> Secrets {
        Secrets { standard: Some(SECRET.to_vec()), legacy: Some(b"legacy-secret".to_vec()) }
    }

    fn standard(id: &str, timestamp: i64, signature: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("webhook-id", id.parse().unwrap());
        h.insert("webhook-timestamp", timestamp.to_string().parse().unwrap());
        h.insert("webhook-signature", signature.parse().unwrap());
        h
    }

    #[test]
    fn a_standard_signature_made_with_the_literal_secret_verifies() {
        let body = br#"{"type":"membership.deactivated"}"#;
        let sig = sign_standard(SECRET, "msg_1", NOW, body);
        assert_eq!(verify(&standard("msg_1", NOW, &sig), body, NOW, &secrets()), Ok(Verified { id: "msg_1".into() }));
        // Any one of several entries suffices, whatever the others are.
        let several = format!("v1,AAAA v2,xyz {sig}");
        assert!(verify(&standard("msg_1", NOW, &several), body, NOW, &secrets()).is_ok());
    }

    #[test]
    fn the_wrong_key_body_id_or_time_is_refused() {
        let body = b"{}";
        let engine = base64::engine::general_purpose::STANDARD;
        let stripped = sign_standard(b"0123456789abcdef", "msg_1", NOW, body);
        let decoded_key = engine.decode("MDEyMzQ1Njc4OWFiY2RlZg==").unwrap();
        let decoded = sign_standard(&decoded_key, "msg_1", NOW, body);
        for sig in [stripped, decoded] {
            assert_eq!(verify(&standard("msg_1", NOW, &sig), body, NOW, &secrets()), Err(Rejected::Mismatch));
        }
        let sig = sign_standard(SECRET, "msg_1", NOW, body);
        assert_eq!(verify(&standard("msg_1", NOW, &sig), b"{ }", NOW, &secrets()), Err(Rejected::Mismatch));
        assert_eq!(verify(&standard("msg_2", NOW, &sig), body, NOW, &secrets()), Err(Rejected::Mismatch));
        let old = sign_standard(SECRET, "msg_1", NOW - 360, body);
        assert_eq!(verify(&standard("msg_1", NOW - 360, &old), body, NOW, &secrets()), Err(Rejected::Stale));
        let future = sign_standard(SECRET, "msg_1", NOW + 360, body);
        assert_eq!(verify(&standard("msg_1", NOW + 360, &future), body, NOW, &secrets()), Err(Rejected::Stale));
        let edge = sign_standard(SECRET, "msg_1", NOW - 300, body);
        assert!(verify(&standard("msg_1", NOW - 300, &edge), body, NOW, &secrets()).is_ok());
    }

    #[test]
    fn unsigned_unconfigured_and_unreadable_deliveries_are_refused() {
        assert_eq!(verify(&HeaderMap::new(), b"{}", NOW, &secrets()), Err(Rejected::Unsigned));
        let sig = sign_standard(SECRET, "msg_1", NOW, b"{}");
        let none = Secrets { standard: None, legacy: None };
        assert!(matches!(verify(&standard("msg_1", NOW, &sig), b"{}", NOW, &none), Err(Rejected::NotConfigured(_))));
        let mut h = standard("msg_1", NOW, &sig);
        h.remove("webhook-id");
        assert!(matches!(verify(&h, b"{}", NOW, &secrets()), Err(Rejected::Malformed(_))));
        let mut h = standard("msg_1", NOW, &sig);
        h.insert("webhook-timestamp", "17e8".parse().unwrap());
        assert!(matches!(verify(&h, b"{}", NOW, &secrets()), Err(Rejected::Malformed(_))));
        let mut h = standard("msg_1", NOW, &sig);
        h.append("webhook-id", "msg_2".parse().unwrap());
        assert!(matches!(verify(&h, b"{}", NOW, &secrets()), Err(Rejected::Malformed(_))));
    }

    #[test]
    fn the_legacy_scheme_verifies_with_the_legacy_secret_only() {
        let body = br#"{"action":"membership.went_invalid"}"#;
        let sig = sign_legacy(b"legacy-secret", NOW, body);
        let mut h = HeaderMap::new();
        h.insert("x-whop-signature", sig.parse().unwrap());
        let verified = verify(&h, body, NOW, &secrets()).unwrap();
        assert!(verified.id.starts_with(&format!("legacy:{NOW}:")));
        h.insert("x-whop-signature", sign_legacy(SECRET, NOW, body).parse().unwrap());
        assert_eq!(verify(&h, body, NOW, &secrets()), Err(Rejected::Mismatch));
        h.insert("x-whop-signature", sign_legacy(b"legacy-secret", NOW - 301, body).parse().unwrap());
        assert_eq!(verify(&h, body, NOW, &secrets()), Err(Rejected::Stale));
    }
}
