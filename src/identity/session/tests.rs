use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::{COOKIE, HeaderName};

use super::*;

const SECRET_A: &str = "secret-a-0123456789abcdef0123456789";
const SECRET_B: &str = "secret-b-0123456789abcdef0123456789";
const NAME: &str = "__Host-whopgate";
const WEEK: Duration = Duration::from_secs(7 * 86_400);

fn secret(s: &str) -> Secret {
    Secret::new(s.to_owned())
}

fn codec(current: &str, previous: &[&str]) -> SessionCodec {
    let previous: Vec<Secret> = previous.iter().map(|s| secret(s)).collect();
    SessionCodec::new(&secret(current), &previous, NAME, WEEK).unwrap()
}

fn sample(codec: &SessionCodec) -> Session {
    codec.new_session("user_abc123XYZ", Some("Ada Lovelace"), Some("ada@example.com"))
}

fn headers(cookies: &[&str]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for c in cookies {
        h.append(COOKIE, HeaderValue::from_str(c).unwrap());
    }
    h
}

fn raw_headers(cookies: &[&[u8]]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for c in cookies {
        h.append(COOKIE, HeaderValue::from_bytes(c).unwrap());
    }
    h
}

fn cookie_headers(h: &HeaderMap) -> Vec<&[u8]> {
    h.get_all(COOKIE).iter().map(HeaderValue::as_bytes).collect()
}

#[test]
fn session_round_trip() {
    let c = codec(SECRET_A, &[]);
    let session = sample(&c);
    assert_eq!(session.expires_at - session.issued_at, WEEK.as_secs());
    let value = c.seal(&session);
    assert_eq!(c.open(&value), Ok(session.clone()));
    // A fresh nonce every time: the same session never seals to the same value.
    assert_ne!(c.seal(&session), value);

    let bare = c.new_session("user_1", None, None);
    assert_eq!(c.open(&c.seal(&bare)), Ok(bare));
    let unicode = c.new_session("user_2", Some("Zoë 山田 🦀"), Some("zoë@例え.jp"));
    assert_eq!(c.open(&c.seal(&unicode)), Ok(unicode));
}

#[test]
fn session_identity() {
    let c = codec(SECRET_A, &[]);
    let identity = sample(&c).identity().unwrap();
    assert_eq!(&*identity.user_id, "user_abc123XYZ");
    assert_eq!(identity.source, Source::Session);
    assert_eq!(identity.name.as_deref(), Some("Ada Lovelace"));
    assert_eq!(identity.email.as_deref(), Some("ada@example.com"));
    assert!(c.new_session("user\n1", None, None).identity().is_none());
}

#[test]
fn every_changed_character_is_invalid() {
    let c = codec(SECRET_A, &[]);
    let value = c.seal(&sample(&c));
    for i in 0..value.len() {
        for flip in [0x01u8, 0x20, 0x02] {
            let mut bytes = value.clone().into_bytes();
            bytes[i] ^= flip;
            let Ok(tampered) = String::from_utf8(bytes) else {
                continue;
            };
            assert_eq!(c.open(&tampered), Err(SessionError::Invalid), "char {i} ^ {flip:#x}");
        }
    }
    // Truncated, extended, emptied, padded, or the standard alphabet: all refused.
    assert_eq!(c.open(&value[..value.len() - 1]), Err(SessionError::Invalid));
    assert_eq!(c.open(&format!("{value}A")), Err(SessionError::Invalid));
    assert_eq!(c.open(&format!("{value}=")), Err(SessionError::Invalid));
    assert_eq!(c.open(""), Err(SessionError::Invalid));
    assert_eq!(c.open("not a cookie"), Err(SessionError::Invalid));
    assert_eq!(c.open(&"A".repeat(10_000)), Err(SessionError::Invalid));
}

#[test]
fn every_flipped_bit_is_invalid() {
    let c = codec(SECRET_A, &[]);
    let sessions = [sample(&c), c.new_session("user_1", None, None)];
    for session in &sessions {
        let raw = URL_SAFE_NO_PAD.decode(c.seal(session)).unwrap();
        for i in 0..raw.len() {
            for bit in 0..8 {
                let mut tampered = raw.clone();
                tampered[i] ^= 1 << bit;
                let value = URL_SAFE_NO_PAD.encode(&tampered);
                assert_eq!(c.open(&value), Err(SessionError::Invalid), "byte {i} bit {bit}");
            }
        }
        // Every byte replaced wholesale too (e.g. the version byte set to each other value).
        for i in 0..raw.len() {
            let mut tampered = raw.clone();
            tampered[i] = tampered[i].wrapping_add(0x5a);
            assert_eq!(c.open(&URL_SAFE_NO_PAD.encode(&tampered)), Err(SessionError::Invalid));
        }
    }
}

#[test]
fn another_secret_is_invalid_and_a_previous_one_is_accepted() {
    let a = codec(SECRET_A, &[]);
    let b = codec(SECRET_B, &[]);
    let session = sample(&a);
    let sealed_by_a = a.seal(&session);
    assert_eq!(b.open(&sealed_by_a), Err(SessionError::Invalid));

    // Rotation: B is current, A is previous.
    let rotated = codec(SECRET_B, &[SECRET_A]);
    assert_eq!(rotated.open(&sealed_by_a), Ok(session.clone()));
    // New cookies use the current secret only.
    let sealed_now = rotated.seal(&session);
    assert_eq!(b.open(&sealed_now), Ok(session.clone()));
    assert_eq!(a.open(&sealed_now), Err(SessionError::Invalid));
    // Once A is dropped from the list, its cookies stop working.
    assert_eq!(codec(SECRET_B, &[]).open(&sealed_by_a), Err(SessionError::Invalid));
    // A secret that is a prefix or extension of another is another secret.
    let longer = format!("{SECRET_A}x");
    assert_eq!(codec(&longer, &[]).open(&sealed_by_a), Err(SessionError::Invalid));
}

#[test]
fn expiry() {
    let c = codec(SECRET_A, &[]);
    let session = Session {
        user_id: "user_1".to_owned(),
        name: None,
        email: None,
        issued_at: 1_000_000,
        expires_at: 1_000_000 + 3_600,
    };
    let value = c.seal(&session);
    let skew = CLOCK_SKEW.as_secs();
    assert_eq!(c.open_at(&value, 1_000_000), Ok(session.clone()));
    assert_eq!(c.open_at(&value, 1_003_600 + skew), Ok(session.clone()));
    assert_eq!(c.open_at(&value, 1_003_601 + skew), Err(SessionError::Expired));
    // With the real clock this session ended long ago.
    assert_eq!(c.open(&value), Err(SessionError::Expired));

    // Shortening `lifetime` shortens sessions already issued.
    let long = Session { expires_at: 1_000_000 + 30 * 86_400, ..session };
    let value = c.seal(&long);
    assert_eq!(c.open_at(&value, 1_000_000 + 6 * 86_400), Ok(long.clone()));
    assert_eq!(c.open_at(&value, 1_000_000 + 8 * 86_400), Err(SessionError::Expired));
    // Tampering is reported as invalid, never as expired: expiry is read only from a genuine value.
    let mut raw = URL_SAFE_NO_PAD.decode(&value).unwrap();
    raw[20] ^= 1;
    assert_eq!(c.open_at(&URL_SAFE_NO_PAD.encode(&raw), 2_000_000_000), Err(SessionError::Invalid));
}

#[test]
fn value_is_bound_to_cookie_name_and_purpose() {
    let a = codec(SECRET_A, &[]);
    let other = SessionCodec::new(&secret(SECRET_A), &[], "whopgate_other", WEEK).unwrap();
    let session = sample(&a);
    let value = a.seal(&session);
    assert_eq!(other.open(&value), Err(SessionError::Invalid));
    assert_eq!(a.open(&other.seal(&session)), Err(SessionError::Invalid));

    // A session value is not a login state, and the reverse.
    let login = LoginState::new("/".to_owned());
    assert_eq!(a.open_login(&value, &login.state), Err(LoginStateError::Invalid));
    assert_eq!(a.open(&a.seal_login(&login)), Err(SessionError::Invalid));
}

#[test]
fn set_cookie_headers_are_exact() {
    let c = codec(SECRET_A, &[]);
    assert_eq!(
        c.session_cookie("abc-_123"),
        "__Host-whopgate=abc-_123; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=604800"
    );
    assert_eq!(c.clear_session_cookie(), "__Host-whopgate=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0");
    assert_eq!(c.login_cookie("xyz"), "__Host-whopgate-login=xyz; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=600");
    assert_eq!(c.clear_login_cookie(), "__Host-whopgate-login=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0");
    // Anything that is not a sealed value cannot inject attributes; it clears instead.
    for bad in ["", "a; Domain=evil.com", "a\r\nX: y", "a b", "a=b", "\"a\""] {
        assert_eq!(c.session_cookie(bad), c.clear_session_cookie(), "{bad:?}");
        assert_eq!(c.login_cookie(bad), c.clear_login_cookie(), "{bad:?}");
    }
    let value = c.seal(&sample(&c));
    let header = c.session_cookie(&value);
    assert_eq!(
        header.to_str().unwrap(),
        format!("__Host-whopgate={value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=604800")
    );
    assert_eq!(c.cookie_name(), NAME);
    assert_eq!(c.login_cookie_name(), "__Host-whopgate-login");
    assert_eq!(c.lifetime(), WEEK);
}

#[test]
fn find_cookie_reads_every_cookie_header() {
    let h = raw_headers(&[
        b"a=1; __Host-whopgate-login=LOGIN;__Host-whopgate=",
        b"b=\xff\xfe; \t__Host-whopgate = \"SESSION\" ; c=3",
        b"__Host-whopgate=SECOND",
    ]);
    assert_eq!(find_cookie(&h, NAME), Some("SESSION"));
    assert_eq!(find_cookie(&h, "__Host-whopgate-login"), Some("LOGIN"));
    assert_eq!(find_cookie(&h, "a"), Some("1"));
    assert_eq!(find_cookie(&h, "c"), Some("3"));
    assert_eq!(find_cookie(&h, "__host-whopgate"), None);
    assert_eq!(find_cookie(&h, "__Host-whop"), None);
    assert_eq!(find_cookie(&HeaderMap::new(), NAME), None);
    assert_eq!(find_cookie(&headers(&["x=1", "__Host-whopgate"]), NAME), None);

    let c = codec(SECRET_A, &[]);
    let session = sample(&c);
    let cookie = format!("theme=dark; {NAME}={}", c.seal(&session));
    assert_eq!(c.read_session(&headers(&[&cookie])), Some(Ok(session)));
    assert_eq!(c.read_session(&headers(&["__Host-whopgate=forged"])), Some(Err(SessionError::Invalid)));
    assert_eq!(c.read_session(&headers(&["theme=dark"])), None);
    assert_eq!(c.find_login(&h), Some("LOGIN"));
}

#[test]
fn strip_cookie_keeps_every_other_cookie_exactly() {
    let mut h = raw_headers(&[
        b"a=1; __Host-whopgate=S; b=\"quoted value\"; __Host-whopgate-login=L;c=x=y",
        b"untouched=1;odd  spacing=2",
        b"__Host-whopgate=S2; __Host-whopgate-login=L2",
        b"weird=\xff; __Host-whopgate=S3",
    ]);
    h.insert(HeaderName::from_static("x-other"), HeaderValue::from_static("kept"));
    strip_cookie(&mut h, NAME);
    assert_eq!(
        cookie_headers(&h),
        [&b"a=1; b=\"quoted value\"; c=x=y"[..], b"untouched=1;odd  spacing=2", b"weird=\xff",]
    );
    assert_eq!(h.get("x-other").unwrap(), "kept");

    // Nothing left: the header goes.
    let mut h = headers(&["__Host-whopgate=S", " __Host-whopgate-login=L ; "]);
    strip_cookie(&mut h, NAME);
    assert!(h.get(COOKIE).is_none());

    // None of ours: every header left exactly as it was.
    let mut h = headers(&["a=1;b=2", "  c=3 ;", "__Host-whopgatex=1; __host-whopgate=2"]);
    let before = h.clone();
    strip_cookie(&mut h, NAME);
    assert_eq!(h, before);

    // The codec strips its own names.
    let c = SessionCodec::new(&secret(SECRET_A), &[], "sess", WEEK).unwrap();
    let mut h = headers(&["sess=1; sess-login=2; other=3"]);
    c.strip(&mut h);
    assert_eq!(cookie_headers(&h), [&b"other=3"[..]]);
}

#[test]
fn login_state_round_trip() {
    let c = codec(SECRET_A, &[]);
    let login = LoginState::new("/dashboard?tab=2".to_owned());
    assert_eq!(login.state.len(), 43);
    assert_eq!(login.verifier.len(), 43);
    assert_ne!(login.state, login.nonce);
    assert_ne!(login.state, login.verifier);
    let value = c.seal_login(&login);
    assert_eq!(c.open_login(&value, &login.state), Ok(login.clone()));
    // Sealed under a secret now in `previous_cookie_secrets`: still finishes.
    assert_eq!(codec(SECRET_B, &[SECRET_A]).open_login(&value, &login.state), Ok(login.clone()));
    assert_eq!(codec(SECRET_B, &[]).open_login(&value, &login.state), Err(LoginStateError::Invalid));
}

#[test]
fn login_state_refusals() {
    let c = codec(SECRET_A, &[]);
    let login = LoginState {
        state: random_token(32),
        nonce: random_token(32),
        verifier: random_token(32),
        rd: "/x".to_owned(),
        created_at: 1_000_000,
    };
    let value = c.seal_login(&login);
    let ok = |now| c.open_login_at(&value, &login.state, now);
    assert_eq!(ok(1_000_000), Ok(login.clone()));
    assert_eq!(ok(1_000_600), Ok(login.clone()));
    assert_eq!(ok(1_000_601), Err(LoginStateError::Expired));
    assert_eq!(c.open_login(&value, &login.state), Err(LoginStateError::Expired));
    // Made "in the future" beyond the skew: not something we sealed honestly.
    assert_eq!(ok(1_000_000 - CLOCK_SKEW.as_secs() - 1), Err(LoginStateError::Invalid));

    // Wrong, empty, prefix or extended state.
    for wrong in [random_token(32), String::new(), login.state[..42].to_owned(), format!("{}x", login.state)] {
        assert_eq!(c.open_login_at(&value, &wrong, 1_000_000), Err(LoginStateError::StateMismatch));
    }

    // Tampered anywhere.
    let raw = URL_SAFE_NO_PAD.decode(&value).unwrap();
    for i in 0..raw.len() {
        let mut tampered = raw.clone();
        tampered[i] ^= 0x80;
        assert_eq!(
            c.open_login_at(&URL_SAFE_NO_PAD.encode(&tampered), &login.state, 1_000_000),
            Err(LoginStateError::Invalid),
            "byte {i}"
        );
    }
    assert_eq!(c.open_login("garbage", &login.state), Err(LoginStateError::Invalid));

    // A login cookie for another cookie name does not open here.
    let other = SessionCodec::new(&secret(SECRET_A), &[], "other", WEEK).unwrap();
    assert_eq!(other.open_login_at(&value, &login.state, 1_000_000), Err(LoginStateError::Invalid));
}

#[test]
fn long_rd_is_replaced_not_truncated() {
    let c = codec(SECRET_A, &[]);
    let mut login = LoginState::new(format!("/{}", "a".repeat(MAX_LOGIN_RD_LEN)));
    let opened = c.open_login(&c.seal_login(&login), &login.state).unwrap();
    assert_eq!(opened.rd, "/");
    login.rd = format!("/{}", "a".repeat(MAX_LOGIN_RD_LEN - 1));
    let value = c.seal_login(&login);
    assert!(value.len() < 3 * 1024, "{}", value.len());
    assert_eq!(c.open_login(&value, &login.state).unwrap().rd, login.rd);
}

#[test]
fn cookie_sizes() {
    let c = codec(SECRET_A, &[]);
    let typical = c.seal(&sample(&c));
    assert!(typical.len() <= 130, "typical session value is {} bytes", typical.len());

    // Long name: cut at a character boundary; over-long email: dropped, never cut.
    let long =
        c.new_session("user_abc123XYZ", Some(&"é".repeat(1000)), Some(&format!("{}@example.com", "a".repeat(300))));
    let value = c.seal(&long);
    assert!(value.len() < 800, "longest session value is {} bytes", value.len());
    let opened = c.open(&value).unwrap();
    assert_eq!(opened.name.as_deref(), Some("é".repeat(MAX_NAME_LEN / 2).as_str()));
    assert_eq!(opened.email, None);
    let longest_email = format!("{}@example.com", "a".repeat(MAX_EMAIL_LEN - 12));
    let kept = c.new_session("user_1", Some(&"n".repeat(MAX_NAME_LEN)), Some(&longest_email));
    let value = c.seal(&kept);
    assert!(value.len() < 800, "{}", value.len());
    assert_eq!(c.open(&value), Ok(kept));
    assert_eq!(truncate("aé", 2), "a");
    assert_eq!(truncate("ab", 2), "ab");

    let login = LoginState::new("/dashboard".to_owned());
    let value = c.seal_login(&login);
    assert!(value.len() <= 240, "typical login value is {} bytes", value.len());
    let header = c.login_cookie(&value);
    assert!(header.len() < 4096);
}

#[test]
fn pkce_matches_rfc_7636_appendix_b() {
    assert_eq!(
        pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    );
}

#[test]
fn hkdf_matches_rfc_5869_test_case_1() {
    let ikm = [0x0b; 22];
    let salt: Vec<u8> = (0x00..=0x0c).collect();
    let info: Vec<u8> = (0xf0..=0xf9).collect();
    let okm = crypto::hkdf_sha256(&ikm, &salt, &info).unwrap();
    // The first 32 of the RFC's 42 output bytes (T(1)).
    let expected = "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf";
    let hex: String = okm.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, expected);
    assert_ne!(crypto::SESSION_LABEL, crypto::LOGIN_LABEL);
}

#[test]
fn random_tokens() {
    let a = random_token(32);
    assert_eq!(a.len(), 43);
    assert!(a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert_ne!(a, random_token(32));
    assert_eq!(random_token(0), "");
    assert_eq!(URL_SAFE_NO_PAD.decode(random_token(48)).unwrap().len(), 48);
}

#[test]
fn setup_errors_name_the_setting_not_the_secret() {
    let short = secret("short-secret");
    let err = SessionCodec::new(&short, &[], NAME, WEEK).unwrap_err();
    assert_eq!(err, SessionSetupError::SecretTooShort { previous: None, len: 12 });
    assert!(!err.to_string().contains("short-secret"));
    assert!(err.to_string().contains("cookie_secret` is 12 bytes"), "{err}");

    let err = SessionCodec::new(&secret(SECRET_A), &[secret(SECRET_B), short], NAME, WEEK).unwrap_err();
    assert_eq!(err, SessionSetupError::SecretTooShort { previous: Some(1), len: 12 });
    assert!(err.to_string().contains("entry 1 of"), "{err}");

    for bad in ["", "a b", "a;b", "a=b", "é"] {
        assert_eq!(
            SessionCodec::new(&secret(SECRET_A), &[], bad, WEEK).unwrap_err(),
            SessionSetupError::InvalidCookieName
        );
    }
    assert_eq!(
        SessionCodec::new(&secret(SECRET_A), &[], NAME, Duration::from_millis(999)).unwrap_err(),
        SessionSetupError::ZeroLifetime
    );
    assert!(SessionCodec::new(&secret(&"x".repeat(MIN_SECRET_LEN)), &[], NAME, WEEK).is_ok());
}

#[test]
fn nothing_secret_in_debug_or_errors() {
    let c = codec(SECRET_A, &[SECRET_B]);
    let debug = format!("{c:?}");
    assert!(!debug.contains("secret-"), "{debug}");
    assert!(debug.contains("secrets: 2"), "{debug}");
    let login = LoginState::new("/x".to_owned());
    let debug = format!("{login:?}");
    for hidden in [&login.state, &login.nonce, &login.verifier] {
        assert!(!debug.contains(hidden.as_str()), "{debug}");
    }
    assert_eq!(SessionError::Invalid.to_string(), "the session cookie is not valid");
    assert_eq!(SessionError::Expired.to_string(), "the session has expired");
    assert!(LoginStateError::StateMismatch.to_string().contains("sign in again"));
}

#[test]
fn from_config() {
    let config = SessionConfig {
        client_id: "app_x".to_owned(),
        client_secret: None,
        cookie_secret: secret(SECRET_B),
        previous_cookie_secrets: vec![secret(SECRET_A)],
        cookie_name: "whopgate_session".to_owned(),
        lifetime: Duration::from_secs(3_600),
        scopes: vec!["openid".to_owned()],
        allowed_redirect_hosts: Vec::new(),
    };
    let c = SessionCodec::from_config(&config).unwrap();
    assert_eq!(c.cookie_name(), "whopgate_session");
    assert_eq!(c.login_cookie_name(), "whopgate_session-login");
    assert_eq!(c.lifetime(), Duration::from_secs(3_600));
    let old = SessionCodec::new(&secret(SECRET_A), &[], "whopgate_session", WEEK).unwrap();
    let session = old.new_session("user_1", None, None);
    assert_eq!(c.open(&old.seal(&session)), Ok(session));
}

#[test]
fn wire_varints() {
    for n in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
        let bytes = Writer::default().uint(n).finish();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.uint(), Some(n));
        assert_eq!(r.end(), Some(()));
    }
    // Past u64, unterminated, lengths past the end, bad option tag, trailing bytes.
    assert_eq!(Reader::new(&[0xff; 9].iter().chain(&[0x02]).copied().collect::<Vec<_>>()).uint(), None);
    assert_eq!(Reader::new(&[0x80]).uint(), None);
    assert_eq!(Reader::new(&[0x05, b'a']).str(), None);
    assert_eq!(Reader::new(&[0x02, 0xc3, 0x28]).str(), None);
    assert_eq!(Reader::new(&[0x02]).opt_str(), None);
    assert_eq!(Reader::new(&[0x00, 0x00]).end(), None);
}
