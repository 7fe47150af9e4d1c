//! Keys and sealing: HKDF-SHA256 per-purpose keys, AES-256-GCM envelopes, randomness, PKCE.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Envelope format version, the first byte of every sealed value (and of its associated data).
pub(super) const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Version byte, nonce and tag: what sealing adds to the plaintext before base64.
pub(super) const OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;

/// HKDF salt: fixes the context, so these keys differ from anything else derived from the secret.
const KDF_SALT: &[u8] = b"whopgate/cookie-keys/v1";
/// HKDF `info` labels: one key per purpose, so no key ever serves two.
pub(super) const SESSION_LABEL: &[u8] = b"whopgate session cookie v1 aes-256-gcm";
pub(super) const LOGIN_LABEL: &[u8] = b"whopgate login-state cookie v1 aes-256-gcm";

/// The two keys derived from one cookie secret.
pub(super) struct KeyPair {
    pub(super) session: Aes256Gcm,
    pub(super) login: Aes256Gcm,
}

impl KeyPair {
    /// `None` only if HMAC refused a key, which it never does (any length is valid).
    pub(super) fn derive(secret: &[u8]) -> Option<Self> {
        let cipher = |label| {
            let key = hkdf_sha256(secret, KDF_SALT, label)?;
            Some(Aes256Gcm::new(&Key::<Aes256Gcm>::from(key)))
        };
        Some(KeyPair { session: cipher(SESSION_LABEL)?, login: cipher(LOGIN_LABEL)? })
    }
}

/// HKDF-SHA256 (RFC 5869) with a 32-byte output, i.e. one block: `T(1) = HMAC(PRK, info || 1)`.
pub(super) fn hkdf_sha256(ikm: &[u8], salt: &[u8], info: &[u8]) -> Option<[u8; 32]> {
    let prk = hmac_sha256(salt, &[ikm])?;
    hmac_sha256(&prk, &[info, &[1]])
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Option<[u8; 32]> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).ok()?;
    for part in parts {
        mac.update(part);
    }
    Some(mac.finalize().into_bytes().into())
}

/// `base64url(VERSION || nonce || AES-256-GCM(plaintext, aad = VERSION || aad) || tag)`.
pub(super) fn seal(cipher: &Aes256Gcm, aad: &[u8], plaintext: &[u8]) -> String {
    let mut nonce = [0u8; NONCE_LEN];
    rand::fill(&mut nonce);
    let aad = with_version(aad);
    // AES-GCM refuses only inputs beyond 64 GiB; ours are under a few KiB, so this never fails.
    let sealed = cipher.encrypt(&Nonce::from(nonce), Payload { msg: plaintext, aad: &aad }).unwrap_or_default();
    let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
    out.push(VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    URL_SAFE_NO_PAD.encode(out)
}

/// The plaintext of a value [`seal`]ed under one of `ciphers` with `aad`; `None` for anything
/// else. Which step failed is deliberately not told.
pub(super) fn open<'a>(mut ciphers: impl Iterator<Item = &'a Aes256Gcm>, aad: &[u8], value: &str) -> Option<Vec<u8>> {
    let bytes = URL_SAFE_NO_PAD.decode(value).ok()?;
    if bytes.len() < OVERHEAD || bytes[0] != VERSION {
        return None;
    }
    let nonce: [u8; NONCE_LEN] = bytes[1..1 + NONCE_LEN].try_into().ok()?;
    let nonce = Nonce::from(nonce);
    let msg = &bytes[1 + NONCE_LEN..];
    let aad = with_version(aad);
    ciphers.find_map(|cipher| cipher.decrypt(&nonce, Payload { msg, aad: &aad }).ok())
}

fn with_version(aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + aad.len());
    out.push(VERSION);
    out.extend_from_slice(aad);
    out
}

/// `bytes` random bytes from a CSPRNG (the thread-local ChaCha generator, seeded and
/// periodically reseeded from the OS), as URL-safe base64 without padding. 32 bytes give
/// 43 characters, a valid PKCE verifier (RFC 7636 §4.1).
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    URL_SAFE_NO_PAD.encode(buf)
}

/// The PKCE `code_challenge` for `verifier` with method `S256` (RFC 7636 §4.2):
/// `base64url(SHA-256(ASCII(verifier)))`, no padding.
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}
