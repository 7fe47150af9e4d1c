//! "Sign in with Whop" (SPEC §1, the OAuth row): OAuth 2.1 authorization code with PKCE (S256
//! only) and OpenID Connect. `/oauth/authorize` signs in the state's `oauth.login_as` without a
//! page; `/oauth/token` takes a JSON body and answers opaque tokens and an ES256 id_token;
//! `/oauth/userinfo` answers the user's profile. Codes and tokens live in memory (the
//! [`OAuthStore`]) until a reset. The answers are documented in the module docs of
//! [the crate](crate).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::api::OAuthEndpoint;
use super::http::{Query, Reply};
use super::runtime::{Inner, unix_now};
use super::state::{MockState, OAuthClient, User};

/// Token requests are a few hundred bytes; anything near this is a client bug.
const MAX_TOKEN_BODY: usize = 64 << 10;

/// An authorization code the mock issued, as a test sees it ([`super::MockWhop::issued_codes`],
/// `GET /_mock/oauth`): what the client's authorize request asked for, and what became of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IssuedCode {
    /// The code itself.
    pub code: String,
    /// The client it was issued to.
    pub client_id: String,
    /// The redirect URI it was sent to; the token request must repeat it exactly.
    pub redirect_uri: String,
    /// The user who signed in (`oauth.login_as` at the time).
    pub user_id: String,
    /// The scopes asked for, space-separated.
    pub scope: String,
    /// The `state` the client sent, if any.
    pub state: Option<String>,
    /// The `nonce` the client sent, if any; it goes into the id_token.
    pub nonce: Option<String>,
    /// The S256 `code_challenge`.
    pub code_challenge: String,
    /// A token request has used it (with or without getting tokens): it cannot be used again.
    pub redeemed: bool,
    /// Its lifetime (`oauth.code_ttl`) is over.
    pub expired: bool,
}

struct CodeRecord {
    issued: IssuedCode,
    /// Issue order, and the id of the grant: every token bought with this code carries it.
    seq: u64,
    expires: Option<Instant>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum TokenKind {
    Access,
    Refresh,
}

struct TokenRecord {
    kind: TokenKind,
    client_id: String,
    user_id: String,
    scope: String,
    /// The code whose exchange started this line of tokens (refreshes included).
    grant: u64,
    expires: Option<Instant>,
    revoked: bool,
}

/// Tokens handed out by one successful token request.
struct Issued {
    access_token: String,
    refresh_token: String,
    user_id: String,
    /// The authorize request's `nonce`, for the id_token (none on a refresh).
    nonce: Option<String>,
}

/// Every code and token issued since the start or the last reset.
#[derive(Default)]
pub(crate) struct OAuthStore {
    codes: HashMap<String, CodeRecord>,
    tokens: HashMap<String, TokenRecord>,
    next_seq: u64,
}

/// `None` when `now + ttl` is beyond what `Instant` holds: never expires.
fn expiry(now: Instant, ttl: Duration) -> Option<Instant> {
    now.checked_add(ttl)
}

fn is_expired(expires: Option<Instant>, now: Instant) -> bool {
    expires.is_some_and(|e| now >= e)
}

/// 256 random bits, base64url: codes and tokens are opaque, like Whop's.
fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

impl OAuthStore {
    /// Stores a fresh code for `issued` (whose `code` is filled in here) and returns it.
    fn issue_code(&mut self, mut issued: IssuedCode, ttl: Duration, now: Instant) -> String {
        let code = random_token();
        issued.code = code.clone();
        let seq = self.next_seq;
        self.next_seq += 1;
        self.codes.insert(code.clone(), CodeRecord { issued, seq, expires: expiry(now, ttl) });
        code
    }

    /// Exchanges a code. The first attempt uses it up whatever its outcome, so that verifiers
    /// cannot be guessed at; a second attempt also revokes every token the code bought (RFC
    /// 6749 §4.1.2: a code used twice may have been stolen).
    fn redeem(&mut self, req: &CodeExchange<'_>, ttls: (Duration, Duration), now: Instant) -> Result<Issued, Reply> {
        let Some(rec) = self.codes.get_mut(req.code) else {
            return Err(invalid_grant("unknown authorization code"));
        };
        if rec.issued.redeemed {
            let grant = rec.seq;
            for t in self.tokens.values_mut().filter(|t| t.grant == grant) {
                t.revoked = true;
            }
            return Err(invalid_grant("authorization code was already used; the tokens issued for it are revoked"));
        }
        rec.issued.redeemed = true;
        if is_expired(rec.expires, now) {
            return Err(invalid_grant("authorization code expired"));
        }
        if rec.issued.client_id != req.client_id {
            return Err(invalid_grant("authorization code was issued to another client"));
        }
        if rec.issued.redirect_uri != req.redirect_uri {
            return Err(invalid_grant("redirect_uri differs from the one of the authorize request"));
        }
        if s256(req.code_verifier) != rec.issued.code_challenge {
            return Err(invalid_grant(
                "code_verifier does not match the code_challenge (BASE64URL(SHA256(code_verifier)))",
            ));
        }
        let (grant, user_id, scope) = (rec.seq, rec.issued.user_id.clone(), rec.issued.scope.clone());
        let nonce = rec.issued.nonce.clone();
        Ok(Issued { nonce, ..self.issue_tokens(grant, req.client_id, user_id, scope, ttls, now) })
    }

    /// Trades a refresh token for new tokens. Refresh tokens rotate, as Whop's do: each works
    /// once.
    fn refresh(
        &mut self,
        refresh_token: &str,
        client_id: &str,
        ttls: (Duration, Duration),
        now: Instant,
    ) -> Result<Issued, Reply> {
        let Some(rec) = self.tokens.get_mut(refresh_token).filter(|t| t.kind == TokenKind::Refresh) else {
            return Err(invalid_grant("unknown refresh token"));
        };
        if rec.revoked {
            return Err(invalid_grant("refresh token was already used or revoked"));
        }
        if is_expired(rec.expires, now) {
            return Err(invalid_grant("refresh token expired"));
        }
        if rec.client_id != client_id {
            return Err(invalid_grant("refresh token was issued to another client"));
        }
        rec.revoked = true;
        let (grant, user_id, scope) = (rec.grant, rec.user_id.clone(), rec.scope.clone());
        Ok(self.issue_tokens(grant, client_id, user_id, scope, ttls, now))
    }

    fn issue_tokens(
        &mut self,
        grant: u64,
        client_id: &str,
        user_id: String,
        scope: String,
        (access_ttl, refresh_ttl): (Duration, Duration),
        now: Instant,
    ) -> Issued {
        let access_token = random_token();
        let refresh_token = random_token();
        for (token, kind, ttl) in
            [(&access_token, TokenKind::Access, access_ttl), (&refresh_token, TokenKind::Refresh, refresh_ttl)]
        {
            self.tokens.insert(
                token.clone(),
                TokenRecord {
                    kind,
                    client_id: client_id.to_owned(),
                    user_id: user_id.clone(),
                    scope: scope.clone(),
                    grant,
                    expires: expiry(now, ttl),
                    revoked: false,
                },
            );
        }
        Issued { access_token, refresh_token, user_id, nonce: None }
    }

    /// The user and scopes of a live access token, or why it is not one.
    fn access(&self, token: &str, now: Instant) -> Result<(String, String), &'static str> {
        match self.tokens.get(token) {
            Some(t) if t.kind == TokenKind::Access => {
                if t.revoked {
                    Err("the access token was revoked")
                } else if is_expired(t.expires, now) {
                    Err("the access token expired")
                } else {
                    Ok((t.user_id.clone(), t.scope.clone()))
                }
            }
            _ => Err("unknown access token"),
        }
    }

    /// The codes issued, oldest first.
    pub(crate) fn codes(&self, now: Instant) -> Vec<IssuedCode> {
        let mut recs: Vec<&CodeRecord> = self.codes.values().collect();
        recs.sort_by_key(|r| r.seq);
        recs.into_iter().map(|r| IssuedCode { expired: is_expired(r.expires, now), ..r.issued.clone() }).collect()
    }

    /// Forgets every code and token (what a reset does).
    pub(crate) fn clear(&mut self) {
        *self = OAuthStore::default();
    }
}

/// Answers an OAuth endpoint (faults and the rate limit have been applied by `server.rs`).
pub(crate) async fn answer(
    inner: &Inner,
    endpoint: OAuthEndpoint,
    headers: &HeaderMap,
    query: &Query,
    body: Incoming,
) -> Reply {
    match endpoint {
        OAuthEndpoint::Authorize => authorize(inner, query),
        OAuthEndpoint::Token => token(inner, headers, body).await,
        OAuthEndpoint::Userinfo => userinfo(inner, headers),
    }
}

/// Keeps a description to the characters RFC 6749 §5.2 allows (printable ASCII without `"` and
/// `\`), so that it fits a redirect and a `WWW-Authenticate` header as it is.
fn clean(description: &str) -> String {
    description
        .chars()
        .map(|c| match c {
            '"' | '\\' => '\'',
            ' '..='~' => c,
            _ => '?',
        })
        .collect()
}

/// RFC 6749's error body: `{"error","error_description"}`.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Reply {
    Reply { status, body: json!({ "error": error, "error_description": clean(description) }), headers: Vec::new() }
}

fn invalid_request(description: &str) -> Reply {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_request", description)
}

fn invalid_grant(description: &str) -> Reply {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", description)
}

fn invalid_client(description: &str) -> Reply {
    oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", description)
}

fn server_error(description: &str) -> Reply {
    oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", description)
}

/// Checks that a redirect URI is usable: absolute `http`/`https` with a host, without a
/// fragment (RFC 6749 §3.1.2) and without userinfo (which makes the host easy to misread).
pub(crate) fn parse_redirect_uri(s: &str) -> Result<Uri, &'static str> {
    // `Uri` would silently drop a fragment.
    if s.contains('#') {
        return Err("must not have a fragment");
    }
    let uri: Uri = s.parse().map_err(|_| "is not a valid absolute URI")?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err("must be an absolute http or https URI");
    }
    let authority = uri.authority().ok_or("must have a host")?;
    if authority.as_str().contains('@') {
        return Err("must not contain userinfo (user@host)");
    }
    if authority.host().is_empty() {
        return Err("must have a host");
    }
    Ok(uri)
}

/// Whether `client` may be sent to `redirect_uri`: one of its URIs exactly, or, when it lists
/// none, any http(s) URI on 127.0.0.1 or localhost.
fn redirect_allowed(client: &OAuthClient, redirect_uri: &str) -> Result<(), &'static str> {
    if !client.redirect_uris.is_empty() {
        return if client.redirect_uris.iter().any(|u| u == redirect_uri) {
            Ok(())
        } else {
            Err("is not one of the client's redirect_uris (they are compared exactly)")
        };
    }
    let uri = parse_redirect_uri(redirect_uri)?;
    let loopback = uri.host().is_some_and(|h| h == "127.0.0.1" || h.eq_ignore_ascii_case("localhost"));
    if loopback {
        Ok(())
    } else {
        Err("is not on 127.0.0.1 or localhost, the only hosts a client without registered redirect_uris may use")
    }
}

/// What RFC 3986 leaves unencoded in a query value.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// `uri` with `params` appended to its query (keeping the query it has, RFC 6749 §3.1.2).
fn with_params(uri: &str, params: &[(&str, &str)]) -> String {
    let mut url = uri.to_owned();
    for (name, value) in params {
        if !url.contains('?') {
            url.push('?');
        } else if !url.ends_with(['?', '&']) {
            url.push('&');
        }
        url.push_str(name);
        url.push('=');
        url.extend(utf8_percent_encode(value, QUERY_VALUE));
    }
    url
}

/// BASE64URL(SHA256(verifier)), the S256 code challenge (RFC 7636 §4.2).
fn s256(verifier: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

fn is_unreserved(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')
}

/// RFC 7636 §4.1: 43 to 128 characters of `A-Z a-z 0-9 - . _ ~`.
fn is_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len()) && v.chars().all(is_unreserved)
}

/// An S256 challenge is 32 bytes in unpadded base64url: 43 characters of `A-Z a-z 0-9 - _`.
/// Padding or `+`/`/` (plain base64) is a common client bug worth refusing.
fn is_s256_challenge(c: &str) -> bool {
    c.len() == 43 && c.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The one value of a parameter that must be present once.
fn one<'q>(query: &'q Query, name: &str) -> Result<&'q str, String> {
    match query.all(&[name]).as_slice() {
        [] | [""] => Err(format!("{name} is required")),
        [v] => Ok(v),
        _ => Err(format!("{name} is given more than once")),
    }
}

fn redirect_to(url: &str) -> Reply {
    match HeaderValue::from_str(url) {
        Ok(location) => Reply::redirect(location),
        // Cannot happen: the URI was parsed or matched a parsed one, the rest is encoded.
        Err(_) => server_error("could not build the redirect"),
    }
}

fn authorize(inner: &Inner, query: &Query) -> Reply {
    // Until the client and the redirect URI are known good, errors are answered here, never
    // redirected: that would make the mock an open redirector (RFC 6749 §4.1.2.1).
    let client_id = match one(query, "client_id") {
        Ok(c) => c,
        Err(e) => return invalid_request(&e),
    };
    let redirect_uri = match one(query, "redirect_uri") {
        Ok(r) => r,
        Err(e) => return invalid_request(&e),
    };
    let (client, login_as, login_page, code_ttl) = inner.with_world(|w| {
        let oauth = &w.state.oauth;
        (oauth.client(client_id).cloned(), oauth.login_as.clone(), oauth.login_page, oauth.code_ttl)
    });
    let Some(client) = client else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_client", &format!("unknown client_id {client_id}"));
    };
    if let Err(e) = redirect_allowed(&client, redirect_uri) {
        return invalid_request(&format!("redirect_uri {e}"));
    }

    let state = query.get("state");
    let refuse = |error: &str, description: &str| {
        let description = clean(description);
        let mut params = vec![("error", error), ("error_description", description.as_str())];
        params.extend(state.map(|s| ("state", s)));
        redirect_to(&with_params(redirect_uri, &params))
    };
    let once = ["response_type", "scope", "state", "nonce", "code_challenge", "code_challenge_method", "mock_user"];
    if let Some(name) = once.iter().find(|n| query.all(&[n]).len() > 1) {
        return refuse("invalid_request", &format!("{name} is given more than once"));
    }
    match query.get("response_type") {
        Some("code") => {}
        None | Some("") => return refuse("invalid_request", "response_type is required (code)"),
        Some(_) => return refuse("unsupported_response_type", "response_type must be code"),
    }
    let challenge = match query.get("code_challenge") {
        None | Some("") => {
            return refuse("invalid_request", "code_challenge is required (PKCE with S256)");
        }
        Some(c) => c,
    };
    match query.get("code_challenge_method") {
        Some("S256") => {}
        Some("plain") => {
            return refuse("invalid_request", "code_challenge_method plain is not allowed (OAuth 2.1): use S256");
        }
        None | Some("") => {
            return refuse(
                "invalid_request",
                "code_challenge_method is required and must be S256 (absent means plain, which OAuth 2.1 refuses)",
            );
        }
        Some(_) => return refuse("invalid_request", "code_challenge_method must be S256"),
    }
    if !is_s256_challenge(challenge) {
        return refuse(
            "invalid_request",
            "code_challenge must be BASE64URL(SHA256(code_verifier)): 43 characters of A-Z a-z 0-9 - _, no padding",
        );
    }
    let scopes: Vec<&str> = query.get("scope").unwrap_or("").split(' ').filter(|s| !s.is_empty()).collect();
    if !scopes.contains(&"openid") {
        return refuse("invalid_scope", "scope must include openid");
    }
    let user_id = match query.get("mock_user").filter(|u| !u.is_empty()) {
        Some(chosen) => match inner.with_world(|w| w.state.user(chosen).map(|u| u.id.clone())) {
            Some(id) => id,
            None => return refuse("access_denied", &format!("the mock state has no user {chosen}")),
        },
        None if login_page => return inner.with_world(|w| sign_in_page(query, &w.state)),
        None if login_as.is_empty() => return refuse("access_denied", "the mock state has no user to sign in as"),
        None => login_as,
    };

    let issued = IssuedCode {
        code: String::new(),
        client_id: client.client_id,
        redirect_uri: redirect_uri.to_owned(),
        user_id,
        scope: scopes.join(" "),
        state: state.map(str::to_owned),
        nonce: query.get("nonce").filter(|n| !n.is_empty()).map(str::to_owned),
        code_challenge: challenge.to_owned(),
        redeemed: false,
        expired: false,
    };
    let code = inner.oauth().issue_code(issued, code_ttl, Instant::now());
    let mut params = vec![("code", code.as_str())];
    params.extend(state.map(|s| ("state", s)));
    redirect_to(&with_params(redirect_uri, &params))
}

/// The page `oauth.login_page` shows: one link per user, each back to this authorize request
/// with `mock_user` added, and what that user holds, so a person sees whom they pick.
fn sign_in_page(query: &Query, state: &MockState) -> Reply {
    let mut back = String::from("/oauth/authorize?");
    for (name, value) in query.pairs() {
        back.extend(utf8_percent_encode(name, QUERY_VALUE));
        back.push('=');
        back.extend(utf8_percent_encode(value, QUERY_VALUE));
        back.push('&');
    }
    let mut items = String::new();
    for user in &state.users {
        let href = format!("{back}mock_user={}", utf8_percent_encode(&user.id, QUERY_VALUE));
        items.push_str(&format!(
            "<li><a id=\"{id}\" href=\"{href}\">{name}</a> <code>{id}</code><br><small>{holds}</small></li>\n",
            id = escape_html(&user.id),
            href = escape_html(&href),
            name = escape_html(user.name.as_deref().unwrap_or(&user.username)),
            holds = escape_html(&holdings(state, &user.id)),
        ));
    }
    Reply::html(format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Sign in with Whop (mock)</title></head>\n\
         <body><h1>Sign in with Whop</h1>\n<p>This is the local stand-in for Whop: pick who you are.</p>\n\
         <ul>\n{items}</ul>\n</body></html>\n"
    ))
}

/// What `user` holds, in words: their valid memberships and the teams they are on.
fn holdings(state: &MockState, user: &str) -> String {
    let title = |id: &str, titled: Option<&str>| titled.filter(|t| !t.is_empty()).unwrap_or(id).to_owned();
    let mut held: Vec<String> = state
        .memberships
        .iter()
        .filter(|m| m.user_id == user && m.status.is_valid())
        .map(|m| format!("bought {}", title(&m.product_id, state.product(&m.product_id).map(|p| p.title.as_str()))))
        .collect();
    held.extend(
        state
            .companies
            .iter()
            .filter(|c| c.admins.iter().any(|a| a == user))
            .map(|c| format!("on the team of {}", title(&c.id, Some(&c.title)))),
    );
    if held.is_empty() { "holds nothing".to_owned() } else { held.join(", ") }
}

/// Text made safe to put between HTML tags or in a quoted attribute.
fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The fields of a JSON token request.
struct TokenRequest(Map<String, Value>);

impl TokenRequest {
    /// A string field; absent, `null` and `""` all read as absent.
    fn optional(&self, name: &str) -> Result<Option<&str>, Reply> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str()).filter(|s| !s.is_empty())),
            Some(_) => Err(invalid_request(&format!("{name} must be a string"))),
        }
    }

    fn required(&self, name: &str) -> Result<&str, Reply> {
        self.optional(name)?.ok_or_else(|| invalid_request(&format!("{name} is required")))
    }
}

/// What an authorization code exchange must match.
struct CodeExchange<'a> {
    code: &'a str,
    client_id: &'a str,
    redirect_uri: &'a str,
    code_verifier: &'a str,
}

async fn token(inner: &Inner, headers: &HeaderMap, body: Incoming) -> Reply {
    let mut reply = read_token_request(headers, body).await.and_then(|req| exchange(inner, &req)).unwrap_or_else(|e| e);
    // RFC 6749 §5.1: answers carrying tokens must not be cached.
    reply.headers.push((CACHE_CONTROL, HeaderValue::from_static("no-store")));
    reply
}

async fn read_token_request(headers: &HeaderMap, body: Incoming) -> Result<TokenRequest, Reply> {
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case("application/json") {
        let sent = if media_type.is_empty() { "no Content-Type" } else { media_type };
        return Err(invalid_request(&format!(
            "the token endpoint takes a JSON body (Content-Type: application/json), not {sent}: form-encoded bodies are refused"
        )));
    }
    let bytes = Limited::new(body, MAX_TOKEN_BODY)
        .collect()
        .await
        .map_err(|e| invalid_request(&format!("the body could not be read: {e}")))?
        .to_bytes();
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(fields)) => Ok(TokenRequest(fields)),
        Ok(_) => Err(invalid_request("the body must be a JSON object")),
        Err(e) => Err(invalid_request(&format!("the body is not valid JSON: {e}"))),
    }
}

/// What a token request trades in.
enum Grant<'a> {
    Code(CodeExchange<'a>),
    Refresh(&'a str),
}

fn exchange(inner: &Inner, req: &TokenRequest) -> Result<Reply, Reply> {
    let grant_type = req.required("grant_type")?;
    let client_id = req.required("client_id")?;
    let secret = req.optional("client_secret")?;
    let grant = match grant_type {
        "authorization_code" => {
            let code_verifier = req.required("code_verifier")?;
            if !is_verifier(code_verifier) {
                return Err(invalid_request("code_verifier must be 43 to 128 characters of A-Z a-z 0-9 - . _ ~"));
            }
            Grant::Code(CodeExchange {
                code: req.required("code")?,
                client_id,
                redirect_uri: req.required("redirect_uri")?,
                code_verifier,
            })
        }
        "refresh_token" => Grant::Refresh(req.required("refresh_token")?),
        _ => {
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "grant_type must be authorization_code or refresh_token",
            ));
        }
    };

    let (client, ttls) = inner.with_world(|w| {
        let oauth = &w.state.oauth;
        (oauth.client(client_id).cloned(), (oauth.access_token_ttl, oauth.refresh_token_ttl))
    });
    let client = client.ok_or_else(|| invalid_client(&format!("unknown client_id {client_id}")))?;
    match (&client.client_secret, secret) {
        (Some(expected), Some(given)) if expected == given => {}
        (Some(_), Some(_)) => return Err(invalid_client("wrong client_secret")),
        (Some(_), None) => {
            return Err(invalid_client("client_secret is required: this is a confidential client"));
        }
        (None, Some(_)) => {
            return Err(invalid_client("this is a public client without a secret: leave client_secret out"));
        }
        (None, None) => {}
    }

    let now = Instant::now();
    let issued = match &grant {
        Grant::Code(exchange) => inner.oauth().redeem(exchange, ttls, now)?,
        Grant::Refresh(token) => inner.oauth().refresh(token, client_id, ttls, now)?,
    };
    let mut body = json!({
        "access_token": issued.access_token,
        "refresh_token": issued.refresh_token,
        "token_type": "Bearer",
        "expires_in": ttls.0.as_secs(),
    });
    // OpenID Connect: the code exchange proves who signed in; a refresh need not say it again.
    if let Grant::Code(_) = grant {
        body["id_token"] = json!(id_token(inner, &issued, client_id, ttls.0)?);
    }
    Ok(Reply::ok(body))
}

/// The ES256 id_token for a code exchange, signed by the current signing key.
fn id_token(inner: &Inner, issued: &Issued, client_id: &str, ttl: Duration) -> Result<String, Reply> {
    let iat = unix_now();
    let lifetime = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    let mut claims = json!({
        "iss": inner.issuer,
        "sub": issued.user_id,
        "aud": client_id,
        "iat": iat,
        "exp": iat.saturating_add(lifetime),
    });
    if let Some(nonce) = &issued.nonce {
        claims["nonce"] = json!(nonce);
    }
    inner.with_world(|w| w.keys.sign(&claims)).map_err(|e| server_error(&format!("signing the id_token: {e}")))
}

/// The token of `Authorization: Bearer <token>` (scheme in any case).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// 401 with a `WWW-Authenticate: Bearer` challenge (RFC 6750 §3). The challenge names an
/// error only when a token was offered: a request without one gets a bare challenge.
fn unauthorized(token_offered: bool, description: &str) -> Reply {
    let mut reply = oauth_error(StatusCode::UNAUTHORIZED, "invalid_token", description);
    let challenge = if token_offered {
        format!("Bearer realm=\"whop\", error=\"invalid_token\", error_description=\"{}\"", clean(description))
    } else {
        "Bearer realm=\"whop\"".to_owned()
    };
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        reply.headers.push((WWW_AUTHENTICATE, v));
    }
    reply
}

fn userinfo(inner: &Inner, headers: &HeaderMap) -> Reply {
    let Some(token) = bearer(headers) else {
        return unauthorized(false, "no access token: send Authorization: Bearer <access token>");
    };
    let (user_id, scope) = match inner.oauth().access(token, Instant::now()) {
        Ok(found) => found,
        Err(why) => return unauthorized(true, why),
    };
    let user = inner.with_world(|w| w.state.users.iter().find(|u| u.id == user_id).cloned());
    Reply::ok(profile(&user_id, user.as_ref(), &scope))
}

/// The userinfo claims: `sub` always; with scope `profile`, `name` (when the user has one) and
/// `preferred_username`; with scope `email`, `email` (when the user has one). The state has no
/// pictures, so `picture` never appears.
fn profile(user_id: &str, user: Option<&User>, scope: &str) -> Value {
    let granted = |s: &str| scope.split(' ').any(|x| x == s);
    let mut out = Map::new();
    out.insert("sub".into(), json!(user_id));
    if let Some(u) = user {
        if granted("profile") {
            if let Some(name) = &u.name {
                out.insert("name".into(), json!(name));
            }
            out.insert("preferred_username".into(), json!(u.username));
        }
        if granted("email") {
            if let Some(email) = &u.email {
                out.insert("email".into(), json!(email));
            }
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s256_matches_rfc_7636_appendix_b() {
        assert!(is_verifier(VERIFIER));
        let challenge = s256(VERIFIER);
        assert_eq!(challenge, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        assert!(is_s256_challenge(&challenge));
        assert!(!is_s256_challenge("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM="));
        assert!(!is_s256_challenge("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-c+"));
        assert!(!is_verifier(&"a".repeat(42)));
        assert!(is_verifier(&"a".repeat(128)));
        assert!(!is_verifier(&"a".repeat(129)));
        assert!(!is_verifier(&format!("{}!", "a".repeat(43))));
    }

    #[test]
    fn redirect_uris_are_checked() {
        for ok in ["http://127.0.0.1:8080/.whopgate/callback", "https://localhost/cb?x=1", "http://LOCALHOST:1/"] {
            assert!(redirect_allowed(&OAuthClient::public("app_x"), ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://example.com/cb",
            "http://127.0.0.1.example.com/cb",
            "http://localhost@evil.example/cb",
            "http://127.0.0.1/cb#frag",
            "ftp://127.0.0.1/cb",
            "/cb",
            "127.0.0.1/cb",
            "http://[::1]/cb",
        ] {
            assert!(redirect_allowed(&OAuthClient::public("app_x"), bad).is_err(), "{bad}");
        }
        let registered = OAuthClient {
            client_id: "app_x".into(),
            client_secret: None,
            redirect_uris: vec!["https://app.example.com/cb".into()],
        };
        assert!(redirect_allowed(&registered, "https://app.example.com/cb").is_ok());
        assert!(redirect_allowed(&registered, "https://app.example.com/cb/").is_err());
        assert!(redirect_allowed(&registered, "http://127.0.0.1/cb").is_err());
    }

    #[test]
    fn params_are_appended_and_encoded() {
        assert_eq!(
            with_params("http://h/cb", &[("code", "a b"), ("state", "x&y=z/~")]),
            "http://h/cb?code=a%20b&state=x%26y%3Dz%2F~"
        );
        assert_eq!(with_params("http://h/cb?k=v", &[("code", "c")]), "http://h/cb?k=v&code=c");
        assert_eq!(with_params("http://h/cb?", &[("code", "c")]), "http://h/cb?code=c");
        assert_eq!(clean("say \"hi\" \\ é"), "say 'hi' ' ?");
    }

    fn issued(challenge: &str) -> IssuedCode {
        IssuedCode {
            code: String::new(),
            client_id: "app_x".into(),
            redirect_uri: "http://127.0.0.1/cb".into(),
            user_id: "user_alice".into(),
            scope: "openid".into(),
            state: None,
            nonce: Some("n".into()),
            code_challenge: challenge.into(),
            redeemed: false,
            expired: false,
        }
    }

    const TTLS: (Duration, Duration) = (Duration::from_secs(60), Duration::from_secs(600));
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

    /// The exchange that matches a code issued by `issued(&s256(VERIFIER))`.
    fn exchange_of(code: &str) -> CodeExchange<'_> {
        CodeExchange { code, client_id: "app_x", redirect_uri: "http://127.0.0.1/cb", code_verifier: VERIFIER }
    }

    /// A store with one code, already exchanged; the code and what it bought.
    fn signed_in(now: Instant) -> (OAuthStore, String, Issued) {
        let mut store = OAuthStore::default();
        let code = store.issue_code(issued(&s256(VERIFIER)), Duration::from_secs(60), now);
        let first = store.redeem(&exchange_of(&code), TTLS, now).map_err(|r| r.body).unwrap();
        (store, code, first)
    }

    #[test]
    fn codes_are_single_use_and_replays_revoke() {
        let now = Instant::now();
        let (mut store, code, first) = signed_in(now);
        let req = exchange_of(&code);
        assert_eq!(first.nonce.as_deref(), Some("n"));
        assert!(store.access(&first.access_token, now).is_ok());
        assert!(store.redeem(&req, TTLS, now).is_err());
        assert_eq!(store.access(&first.access_token, now), Err("the access token was revoked"));
        assert!(store.refresh(&first.refresh_token, "app_x", TTLS, now).is_err());
        assert!(store.codes(now)[0].redeemed);

        // Expiry.
        let code = store.issue_code(issued(&s256(VERIFIER)), Duration::from_secs(60), now);
        let late = now + Duration::from_secs(61);
        let e = store.redeem(&exchange_of(&code), TTLS, late);
        assert_eq!(e.map(|_| ()).unwrap_err().body["error_description"], "authorization code expired");
        assert!(store.codes(late)[1].expired);
    }

    #[test]
    fn refresh_tokens_rotate_and_access_tokens_expire() {
        let now = Instant::now();
        let (mut store, _, first) = signed_in(now);
        assert!(store.refresh(&first.refresh_token, "app_other", TTLS, now).is_err());
        let second = store.refresh(&first.refresh_token, "app_x", TTLS, now).map_err(|r| r.body).unwrap();
        assert_eq!(second.nonce, None);
        assert!(store.refresh(&first.refresh_token, "app_x", TTLS, now).is_err());
        assert!(store.access(&second.access_token, now).is_ok());
        assert!(store.access(&first.access_token, now).is_ok(), "refreshing does not revoke");
        let later = now + Duration::from_secs(60);
        assert_eq!(store.access(&second.access_token, later), Err("the access token expired"));
        assert_eq!(store.access(&second.refresh_token, now), Err("unknown access token"));
        store.clear();
        assert!(store.codes(now).is_empty());
    }

    #[test]
    fn userinfo_claims_follow_the_scopes() {
        let alice = User {
            id: "user_alice".into(),
            username: "alice".into(),
            name: Some("Alice".into()),
            email: Some("alice@example.com".into()),
        };
        assert_eq!(profile("user_alice", Some(&alice), "openid"), json!({"sub": "user_alice"}));
        assert_eq!(
            profile("user_alice", Some(&alice), "openid profile email"),
            json!({"sub": "user_alice", "name": "Alice", "preferred_username": "alice", "email": "alice@example.com"})
        );
        assert_eq!(profile("user_gone", None, "openid profile email"), json!({"sub": "user_gone"}));
    }
}
