//! ES256 signing keys, the JWKS document and the minting of user tokens shaped like the ones
//! Whop's app proxy puts in `x-whop-user-token`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::error::MockError;
use super::state::MockState;

/// `kid` of the built-in development key.
pub const DEFAULT_KID: &str = "mock-key-1";

/// The built-in development key (P-256, PKCS#8). It is published on purpose: it only ever
/// signs tokens for the mock, and a fixed key lets `whopgate mock-whop token USER` print a
/// token that a separately started default mock accepts. Never trust it outside tests.
pub const DEFAULT_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgV8nk5S+hWYH+in8/
VjKc5XEJutg1/xJoacZT/qCJVa6hRANCAAQYbWbdzxkaqWsNtxaKu2BMdLFn03qf
nw/KSOFB0HjXI2trWGUdwUtCSMJYFTMRs9QDShKY/kOLilq0+SdOJQ+q
-----END PRIVATE KEY-----
";

/// The `iss` of Whop user tokens.
pub const ISSUER: &str = "urn:whopcom:exp-proxy";

/// Lifetime of minted tokens unless [`TokenOptions::ttl`] says otherwise.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);

const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";

/// The `aud` claim of a minted token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// A single string, as Whop sends it.
    One(String),
    /// An array, which a strict verifier must refuse (Whop's `aud` is a single string).
    Many(Vec<String>),
}

/// How to mint a token; the default is a valid Whop-like token for the state's app, signed by
/// the signing key, valid for one hour. Each option breaks one thing, for negative tests.
/// As JSON (in `POST /_mock/token`) the fields have the same names; `ttl` is a string like
/// `"30s"`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenOptions {
    /// Lifetime (`exp - iat`); default one hour.
    #[serde(with = "super::serde_duration::option")]
    pub ttl: Option<Duration>,
    /// Issued two hours ago, expired one hour ago.
    pub expired: bool,
    /// Replaces `iss`.
    pub iss: Option<String>,
    /// Replaces `aud` (default: the app id as a single string).
    pub aud: Option<Audience>,
    /// Leaves `kid` out of the header (like tokens from before Whop had a JWKS).
    pub no_kid: bool,
    /// Puts this `kid` in the header instead of the signing key's.
    pub kid: Option<String>,
    /// Signs with this key of the state (e.g. one dropped from the JWKS by a rotation)
    /// instead of the current signing key; the header names it unless `kid`/`no_kid` say else.
    pub sign_with: Option<String>,
    /// Signs with a freshly generated key that no JWKS lists, keeping the signing key's `kid`
    /// in the header: the signature cannot verify.
    pub foreign_key: bool,
}

impl TokenOptions {
    /// An already expired token.
    pub fn expired() -> Self {
        TokenOptions { expired: true, ..Self::default() }
    }

    /// A token with another issuer.
    pub fn issuer(iss: impl Into<String>) -> Self {
        TokenOptions { iss: Some(iss.into()), ..Self::default() }
    }

    /// A token for another audience (a single string).
    pub fn audience(aud: impl Into<String>) -> Self {
        TokenOptions { aud: Some(Audience::One(aud.into())), ..Self::default() }
    }

    /// A token whose `aud` is an array of these values.
    pub fn audience_array<S: Into<String>>(aud: impl IntoIterator<Item = S>) -> Self {
        TokenOptions { aud: Some(Audience::Many(aud.into_iter().map(Into::into).collect())), ..Self::default() }
    }

    /// A token without `kid` in its header.
    pub fn without_kid() -> Self {
        TokenOptions { no_kid: true, ..Self::default() }
    }

    /// A token whose header names this `kid` (the signature is still the signing key's).
    pub fn with_kid(kid: impl Into<String>) -> Self {
        TokenOptions { kid: Some(kid.into()), ..Self::default() }
    }

    /// A token signed by a key no JWKS lists.
    pub fn foreign_key() -> Self {
        TokenOptions { foreign_key: true, ..Self::default() }
    }

    /// A token signed by this key of the state.
    pub fn signed_with(kid: impl Into<String>) -> Self {
        TokenOptions { sign_with: Some(kid.into()), ..Self::default() }
    }

    /// A token with this lifetime.
    pub fn ttl(ttl: Duration) -> Self {
        TokenOptions { ttl: Some(ttl), ..Self::default() }
    }
}

/// Wraps DER in PEM armour with 64-column lines.
fn der_to_pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

/// Decodes a PKCS#8 PEM to DER.
fn pem_to_der(pem: &str) -> Result<Vec<u8>, String> {
    let hint = "expected a PKCS#8 PEM P-256 private key (\"-----BEGIN PRIVATE KEY-----\"); \
                convert an \"EC PRIVATE KEY\" with `openssl pkcs8 -topk8 -nocrypt`";
    let pem = pem.trim();
    let body =
        pem.strip_prefix(PEM_BEGIN).and_then(|rest| rest.strip_suffix(PEM_END)).ok_or_else(|| hint.to_owned())?;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD.decode(b64).map_err(|e| format!("{hint}: the base64 inside is broken ({e})"))
}

/// A parsed key: what signing and the JWKS need.
pub(crate) struct LoadedKey {
    pub kid: String,
    encoding: EncodingKey,
    x: String,
    y: String,
    /// SubjectPublicKeyInfo PEM, for verifiers configured with keys instead of a JWKS.
    public_pem: String,
    pub published: bool,
}

fn load_key(kid: &str, pem: &str, published: bool) -> Result<LoadedKey, String> {
    let der = pem_to_der(pem)?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
        .map_err(|e| format!("not a P-256 private key in PKCS#8 ({e}); ES256 needs curve P-256 (prime256v1)"))?;
    // Uncompressed SEC1 point: 0x04 || X (32 bytes) || Y (32 bytes).
    let point = pair.public_key().as_ref();
    if point.len() != 65 || point[0] != 4 {
        return Err("unexpected public key encoding".to_owned());
    }
    let spki = pair.public_key().as_der().map_err(|e| format!("encoding the public key: {e}"))?;
    Ok(LoadedKey {
        kid: kid.to_owned(),
        public_pem: der_to_pem("PUBLIC KEY", spki.as_ref()),
        encoding: EncodingKey::from_ec_der(&der),
        x: URL_SAFE_NO_PAD.encode(&point[1..33]),
        y: URL_SAFE_NO_PAD.encode(&point[33..65]),
        published,
    })
}

/// Checks that a PEM is a usable ES256 key.
pub(crate) fn check_private_key(pem: &str) -> Result<(), String> {
    load_key("check", pem, false).map(|_| ())
}

/// A fresh P-256 key as PKCS#8 PEM.
pub(crate) fn generate_pem() -> Result<String, MockError> {
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
        .map_err(|e| MockError::Crypto(format!("generating a P-256 key: {e}")))?;
    let doc = pair.to_pkcs8v1().map_err(|e| MockError::Crypto(format!("encoding a P-256 key: {e}")))?;
    Ok(der_to_pem("PRIVATE KEY", doc.as_ref()))
}

/// The parsed keys of one state.
pub(crate) struct KeyRing {
    keys: Vec<LoadedKey>,
    signing_kid: String,
    app_id: String,
}

impl KeyRing {
    /// Parses the keys of a resolved state.
    pub(crate) fn new(state: &MockState) -> Result<KeyRing, MockError> {
        let mut keys = Vec::with_capacity(state.keys.len());
        for k in &state.keys {
            let pem = k
                .private_key
                .as_deref()
                .ok_or_else(|| MockError::InvalidState(format!("key {:?} has no private_key", k.kid)))?;
            keys.push(
                load_key(&k.kid, pem, k.published)
                    .map_err(|e| MockError::InvalidState(format!("key {:?}: {e}", k.kid)))?,
            );
        }
        Ok(KeyRing { keys, signing_kid: state.signing_kid().to_owned(), app_id: state.app_id.clone() })
    }

    /// The JWKS document: every published key.
    pub(crate) fn jwks(&self) -> Value {
        let keys: Vec<Value> = self
            .keys
            .iter()
            .filter(|k| k.published)
            .map(|k| {
                json!({
                    "kty": "EC",
                    "crv": "P-256",
                    "x": k.x,
                    "y": k.y,
                    "kid": k.kid,
                    "alg": "ES256",
                    "use": "sig",
                })
            })
            .collect();
        json!({ "keys": keys })
    }

    /// The public key of `kid` as SubjectPublicKeyInfo PEM.
    pub(crate) fn public_pem(&self, kid: &str) -> Result<String, MockError> {
        self.keys
            .iter()
            .find(|k| k.kid == kid)
            .map(|k| k.public_pem.clone())
            .ok_or_else(|| MockError::NotFound(format!("no key with kid {kid:?}")))
    }

    /// Signs `claims` as an ES256 JWT with the current signing key, its `kid` in the header
    /// (the OAuth id_token).
    pub(crate) fn sign(&self, claims: &Value) -> Result<String, MockError> {
        let key = self
            .keys
            .iter()
            .find(|k| k.kid == self.signing_kid)
            .ok_or_else(|| MockError::NotFound(format!("no signing key with kid {:?}", self.signing_kid)))?;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding)
            .map_err(|e| MockError::Crypto(format!("signing a token: {e}")))
    }

    /// Mints a token for `user` (any string: unknown users are allowed, to test 404s).
    pub(crate) fn mint(&self, user: &str, opts: &TokenOptions) -> Result<String, MockError> {
        let signer_kid = opts.sign_with.as_deref().unwrap_or(&self.signing_kid);
        let signer = self
            .keys
            .iter()
            .find(|k| k.kid == signer_kid)
            .ok_or_else(|| MockError::NotFound(format!("no signing key with kid {signer_kid:?}")))?;
        let foreign;
        let encoding = if opts.foreign_key {
            foreign = load_key(signer_kid, &generate_pem()?, false).map_err(MockError::Crypto)?;
            &foreign.encoding
        } else {
            &signer.encoding
        };

        let mut header = Header::new(Algorithm::ES256);
        header.kid = match (&opts.kid, opts.no_kid) {
            (_, true) => None,
            (Some(k), false) => Some(k.clone()),
            (None, false) => Some(signer.kid.clone()),
        };

        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let ttl = opts.ttl.unwrap_or(DEFAULT_TOKEN_TTL).as_secs();
        let (iat, exp) = if opts.expired {
            (now.saturating_sub(7200), now.saturating_sub(3600))
        } else {
            (now, now.saturating_add(ttl))
        };
        let aud = match &opts.aud {
            None => json!(self.app_id),
            Some(Audience::One(a)) => json!(a),
            Some(Audience::Many(a)) => json!(a),
        };
        let claims = json!({
            "iss": opts.iss.as_deref().unwrap_or(ISSUER),
            "sub": user,
            "aud": aud,
            "iat": iat,
            "exp": exp,
        });
        jsonwebtoken::encode(&header, &claims, encoding).map_err(|e| MockError::Crypto(format!("signing a token: {e}")))
    }
}

impl MockState {
    /// Mints a user token with this state's keys and app id, without a running mock (what
    /// `whopgate mock-whop token USER` prints).
    pub fn mint_token(&self, user: &str, opts: &TokenOptions) -> Result<String, MockError> {
        KeyRing::new(self)?.mint(user, opts)
    }

    /// The public half of key `kid` as PEM (`-----BEGIN PUBLIC KEY-----`), for verifiers that
    /// are given keys rather than a JWKS URL (whopgate's `identity.user_token.public_keys`).
    pub fn public_key_pem(&self, kid: &str) -> Result<String, MockError> {
        KeyRing::new(self)?.public_pem(kid)
    }

    /// The JWKS this state serves at `/.well-known/jwks.json`.
    pub fn jwks(&self) -> Result<Value, MockError> {
        Ok(KeyRing::new(self)?.jwks())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation, decode, decode_header};

    fn state() -> MockState {
        MockState::default().resolve().unwrap()
    }

    fn verify(state: &MockState, token: &str) -> Result<Value, jsonwebtoken::errors::Error> {
        let jwks = state.jwks().unwrap();
        let header = decode_header(token)?;
        let kid = header.kid.unwrap_or_default();
        let key = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid.as_str())
            .ok_or(jsonwebtoken::errors::ErrorKind::InvalidKeyFormat)?;
        let dk = DecodingKey::from_ec_components(key["x"].as_str().unwrap(), key["y"].as_str().unwrap())?;
        let mut v = Validation::new(Algorithm::ES256);
        v.set_issuer(&[ISSUER]);
        v.set_audience(&[state.app_id.as_str()]);
        Ok(decode::<Value>(token, &dk, &v)?.claims)
    }

    #[test]
    fn default_key_is_the_documented_point() {
        let jwks = state().jwks().unwrap();
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
        let k = &jwks["keys"][0];
        assert_eq!(k["kid"], "mock-key-1");
        assert_eq!(k["kty"], "EC");
        assert_eq!(k["crv"], "P-256");
        assert_eq!(k["alg"], "ES256");
        assert_eq!(k["use"], "sig");
        // Fixed key, fixed point: a change here breaks tokens printed by older binaries.
        assert_eq!(k["x"], "GG1m3c8ZGqlrDbcWirtgTHSxZ9N6n58PykjhQdB41yM");
        assert_eq!(k["y"], "a2tYZR3BS0JIwlgVMxGz1ANKEpj-Q4uKWrT5J04lD6o");
    }

    #[test]
    fn minted_token_has_whops_claims() {
        let s = state();
        let t = s.mint_token("user_alice", &TokenOptions::default()).unwrap();
        let h = decode_header(&t).unwrap();
        assert_eq!(h.alg, Algorithm::ES256);
        assert_eq!(h.kid.as_deref(), Some("mock-key-1"));
        let c = verify(&s, &t).unwrap();
        assert_eq!(c["iss"], ISSUER);
        assert_eq!(c["sub"], "user_alice");
        assert_eq!(c["aud"], "app_mockapp000001");
        let (iat, exp) = (c["iat"].as_u64().unwrap(), c["exp"].as_u64().unwrap());
        assert_eq!(exp - iat, 3600);
    }

    #[test]
    fn broken_tokens_fail_verification() {
        let s = state();
        for opts in [
            TokenOptions::expired(),
            TokenOptions::issuer("urn:someone:else"),
            TokenOptions::audience("app_other"),
            TokenOptions::with_kid("mock-key-404"),
            TokenOptions::foreign_key(),
        ] {
            let t = s.mint_token("user_alice", &opts).unwrap();
            assert!(verify(&s, &t).is_err(), "{opts:?} verified");
        }
        let t = s.mint_token("user_alice", &TokenOptions::without_kid()).unwrap();
        assert_eq!(decode_header(&t).unwrap().kid, None);
        let t = s.mint_token("user_alice", &TokenOptions::audience_array(["app_mockapp000001"])).unwrap();
        let c = jsonwebtoken::dangerous::insecure_decode::<Value>(&t).unwrap().claims;
        assert!(c["aud"].is_array());
    }

    #[test]
    fn public_pem_verifies_tokens() {
        let s = state();
        let pem = s.public_key_pem("mock-key-1").unwrap();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        let dk = DecodingKey::from_ec_pem(pem.as_bytes()).unwrap();
        let t = s.mint_token("user_alice", &TokenOptions::default()).unwrap();
        let mut v = Validation::new(Algorithm::ES256);
        v.set_issuer(&[ISSUER]);
        v.set_audience(&[s.app_id.as_str()]);
        assert!(decode::<Value>(&t, &dk, &v).is_ok());
        assert!(s.public_key_pem("nope").is_err());
    }

    #[test]
    fn generated_keys_work_and_bad_pems_are_refused() {
        let pem = generate_pem().unwrap();
        assert!(check_private_key(&pem).is_ok());
        let p384 = "-----BEGIN PRIVATE KEY-----
MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDC3Vqg8ylUbi2vFNDm9
bt/0AJXlaBdQ5CRfzOyz5KOwzK6jNVgUWtwwcXqSFSxlPoKhZANiAATMjHPH1p9b
YCqV9TivtDKkOOAZpRYCoJRpYj2cCf/vqxxrVwmO4f6dDubQj73lJCoror+kWFn9
K9TBmrKEaB7DfJShHYJ5LxWzYkcbO6/FKHVn0ZP+ck1yCRgQ5cfrquI=
-----END PRIVATE KEY-----";
        let e = check_private_key(p384).unwrap_err();
        assert!(e.contains("P-256"), "{e}");
        let e = check_private_key("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----").unwrap_err();
        assert!(e.contains("openssl pkcs8"), "{e}");
    }

    #[test]
    fn token_options_read_from_json() {
        let o: TokenOptions = serde_json::from_str(r#"{"ttl":"30s","aud":["a","b"],"no_kid":true}"#).unwrap();
        assert_eq!(o.ttl, Some(Duration::from_secs(30)));
        assert_eq!(o.aud, Some(Audience::Many(vec!["a".into(), "b".into()])));
        assert!(o.no_kid);
        assert!(serde_json::from_str::<TokenOptions>(r#"{"tll":"30s"}"#).is_err());
    }
}
