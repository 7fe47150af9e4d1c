//! A local stand-in for the Whop API, the way stripe-mock serves Stripe users: whopgate's
//! integration tests, `whopgate demo` and users' own CI run against it.
//!
//! It serves, over real TCP (HTTP/1.1), the shapes of SPEC §1 from a small state: the access
//! check, memberships (by id or license key, flat or nested), the legacy v2/v5 membership
//! lists, the v1 members list, the JWKS and "Sign in with Whop" (OAuth 2.1 + PKCE + OpenID
//! Connect, signing a configured user in without a page); it mints user tokens like Whop's app
//! proxy does, rotates keys, injects faults (latency, 5xx, hangs, 429s, a real per-minute rate
//! limit) and counts every call. Everything can be driven from Rust ([`MockWhop`]) or over HTTP
//! (the control API under `/_mock/`).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use whopgate_mock::{EndpointKind, Fault, MockState, MockWhop, TokenOptions};
//!
//! let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default())?;
//! let token = mock.mint_token("user_alice").unwrap();          // verifies against the JWKS
//! let expired = mock.mint_token_with("user_alice", TokenOptions::expired()).unwrap();
//! mock.set_fault(EndpointKind::Access, Fault::error_times(1));   // next access check: 500
//! // … point the gate at mock.base_url() with mock.api_key() and mock.app_id() …
//! assert_eq!(mock.calls(EndpointKind::Access), 0);
//! # Ok(()) }
//! ```
//!
//! # The Whop-shaped API
//!
//! | endpoint | kind | answer |
//! | --- | --- | --- |
//! | `GET /api/v1/users/{user_id}/access/{resource_id}` | `access` | `{"has_access","access_level"}`; the user may be given by username; unknown user or resource: 404 |
//! | `GET /api/v1/memberships/{mem_… or license key}` | `membership` | the membership, flat (`product_id`, `user_id`, `plan_id`, `company_id`) or nested (`product.id`, `user.id`, `plan.id`, `company.id`): `membership_shape` in the state, or `?mock_shape=flat\|nested` per call |
//! | `GET /api/v2/memberships?user_id=&product_id=&plan_id=&status=&valid=&page=&per=` | `memberships_v2` | `{"pagination":{"current_page","total_page","total_count"},"data":[{"id","product","user","plan","status","valid",…}]}` |
//! | `GET /api/v5/company/memberships?valid=&product_id=&status=&page=&per=` | `memberships_v5` | `{"pagination":{"current_page","total_pages","next_page","prev_page","total_count"},"data":[{"id","product_id","user_id","plan_id","status","valid",…}]}`; `valid` defaults to `true`; no user filter (as Whop's) |
//! | `GET /api/v1/members?company_id=&user_ids[]=` | `members` | `{"data":[{"id","access_level","status","user":{"id","username","name","email"},…}],"page_info":{…}}`; `company_id` defaults to the API key's company |
//! | `GET /.well-known/jwks.json` | `jwks` | `{"keys":[{"kty":"EC","crv":"P-256","x","y","kid","alg":"ES256","use":"sig"}]}`, no API key needed |
//! | `GET /oauth/authorize?response_type=code&client_id=&redirect_uri=&scope=&state=&nonce=&code_challenge=&code_challenge_method=S256` | `oauth_authorize` | `302` to `redirect_uri?code=…&state=…`, no API key needed (see [Sign in with Whop](#sign-in-with-whop-oauth)) |
//! | `POST /oauth/token`, JSON body | `oauth_token` | `{"access_token","refresh_token","id_token","token_type":"Bearer","expires_in"}`, no API key needed |
//! | `GET\|POST /oauth/userinfo`, `Authorization: Bearer <access token>` | `oauth_userinfo` | `{"sub","name"?,"preferred_username"?,"email"?}` |
//!
//! Lists are in state order; `per` defaults to 10 and is capped at 50; `total_page(s)` is 0
//! for an empty list. An API key with a `company_id` sees only that company's memberships
//! (single and listed). Every `/api/…` call needs `Authorization: Bearer <an api_keys key>`,
//! else 401 `{"error":{"type":"unauthorized","message":…}}`; unknown paths are 404
//! `{"error":{"type":"not_found","message":…}}`, bad query values 400 `bad_request`. The last
//! `Api-Version-Date` header seen is kept ([`MockWhop::last_api_version_date`]).
//!
//! Access levels: an `access` override for the (user, resource) pair wins; else a team member
//! (`admins`) of the owning company is `admin`; else a valid membership (status `trialing`,
//! `active`, `past_due`, `completed` or `canceling`) on the product — on one of an
//! experience's products, on any product of a company — makes `customer`; else `no_access`.
//!
//! A request passes, in order: the call log; faults (latency, then a failure); the API key; the
//! real rate limit; the answer. So injected failures hit even unauthenticated calls, and every
//! call is counted, whatever its answer. The real rate limit (`rate_limit_per_minute`, off by
//! default) counts admitted calls per endpoint kind and API key (calls that take no key, to the
//! JWKS and OAuth, share one budget per kind) over a sliding minute and answers past it with
//! Whop's 429 body and `Retry-After`, both giving the seconds until the oldest call in the
//! window leaves it. While it is on, the legacy lists keep Whop's own limits instead: v2 100
//! calls per 10 s, v5 20 per 10 s after which every v5 call is refused for a 60 s cool-down,
//! both with the legacy 429 body `{"message":"You are being rate limited"}` (also what an
//! injected `rate_limited` fault answers there).
//!
//! # State file (TOML)
//!
//! Every table is optional; what is left out takes the default noted. Unknown keys are errors,
//! and so are references to ids that do not exist; errors name the file, the line or the
//! entry (`memberships[1] (mem_x): product_id "prod_y" is not one of the products`).
//!
//! ```toml
//! app_id = "app_mockapp000001"      # the `aud` of minted tokens (default shown)
//! membership_shape = "flat"         # or "nested": default shape of GET /api/v1/memberships/{id}
//! rate_limit_per_minute = 600       # real 429s past N calls/min per v1 endpoint kind and API key (v2/v5: Whop's limits); off when absent
//! signing_kid = "mock-key-1"        # which key mints tokens (default: the first key)
//!
//! [[api_keys]]                      # default: one key "mock_api_key" with no company
//! key = "mock_api_key"
//! company_id = "biz_mockcompany01"  # optional: scopes membership lookups and the members default
//!
//! [[companies]]
//! id = "biz_mockcompany01"
//! title = "Mock Company"
//! admins = ["user_carol"]           # team members: admin of the company and all it owns
//!
//! [[products]]
//! id = "prod_mockproduct1"
//! company_id = "biz_mockcompany01"
//! title = "Mock Product One"
//!
//! [[experiences]]
//! id = "exp_mockexperienc1"
//! company_id = "biz_mockcompany01"
//! product_ids = ["prod_mockproduct1"] # valid memberships on any of these grant access
//!
//! [[users]]
//! id = "user_alice"
//! username = "alice"                # default: the id without "user_"
//! name = "Alice Customer"           # optional
//! email = "alice@example.com"       # optional
//!
//! [[users]]
//! id = "user_bob"                   # username "bob", no name, no email
//!
//! [[users]]
//! id = "user_carol"
//!
//! [[memberships]]
//! id = "mem_alice00000001"
//! user_id = "user_alice"
//! product_id = "prod_mockproduct1"
//! status = "active"                 # trialing active past_due completed canceled expired unresolved drafted canceling
//! license_key = "MOCK-ALICE-LICENSE" # optional
//! plan_id = "plan_mockplan00001"    # optional (default: "plan_" + product id without "prod_")
//! created_at = 1735689600           # optional unix seconds; also updated_at, expires_at,
//!                                   # renewal_period_start, renewal_period_end
//!
//! [[access]]                        # overrides for the access check only
//! user_id = "user_bob"
//! resource_id = "prod_mockproduct1"
//! access_level = "customer"         # no_access | customer | admin
//!
//! [[keys]]                          # default: the built-in development key "mock-key-1"
//! kid = "mock-key-1"
//! private_key = """
//! -----BEGIN PRIVATE KEY-----
//! …PKCS#8 PEM of a P-256 key (openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256)…
//! -----END PRIVATE KEY-----
//! """
//! # generate = true                 # instead of private_key: a fresh key per process
//! published = true                  # false: can sign (sign_with) but is not in the JWKS
//!
//! [oauth]                           # "Sign in with Whop" (see below)
//! login_as = "user_alice"           # who /oauth/authorize signs in, without a page (id or
//!                                   # username; default: user_alice, else the first user)
//! login_page = false                # true: a page where a person picks the user instead
//! code_ttl = "60s"                  # authorization codes (each works once)
//! access_token_ttl = "1h"           # access tokens (`expires_in`) and id_tokens
//! refresh_token_ttl = "30d"         # refresh tokens (each works once: they rotate)
//!
//! [[oauth.clients]]                 # default: one public client whose client_id is app_id
//! client_id = "app_mockapp000001"
//! redirect_uris = []                # exact matches; empty: any http(s) URI on 127.0.0.1 or localhost
//!
//! [[oauth.clients]]
//! client_id = "app_confidential01"
//! client_secret = "mock_client_secret" # a confidential client: /oauth/token requires it;
//!                                   # without one, a public (PKCE-only) client that must not send one
//! redirect_uris = ["https://app.example.com/.whopgate/callback"]
//! ```
//!
//! The built-in state ([`MockState::default`]; `GET /_mock/state` prints it) is this example
//! without the rate limit, the `[[access]]` override and the second OAuth client, and with
//! four users: `user_alice` (membership `mem_alice00000001`, active, `MOCK-ALICE-LICENSE`),
//! `user_bob` (nothing), `user_carol` (admin of the company) and `user_dave` (membership
//! `mem_dave000000001`, canceled, `MOCK-DAVE-LICENSE`); a second product `prod_mockproduct2`
//! has no memberships.
//! Tokens minted from a state whose keys are given as PEM (or left to the default key)
//! verify against any mock started with the same state, across restarts.
//!
//! # Control API (`/_mock/…`, no API key, JSON)
//!
//! Control calls are not counted and not subject to faults. Errors use the same
//! `{"error":{"type","message"}}` shape (400 `bad_request`, 404 `not_found`, 405).
//!
//! | endpoint | body | effect / answer |
//! | --- | --- | --- |
//! | `GET /_mock` | | the list of control endpoints |
//! | `GET /_mock/state` | | the current state (the TOML schema above, as JSON) |
//! | `PUT /_mock/state` | a state | replaces it (checked as a file is); answers the new state |
//! | `POST /_mock/reset` | | back to the start state; faults, rate-limit budgets, calls, OAuth codes and tokens and the recorded `Api-Version-Date` cleared |
//! | `POST /_mock/access` | `{"user_id","resource_id","access_level":"admin"\|"customer"\|"no_access"\|null}` | sets (or with `null` removes) an override; answers `{"user_id","resource_id","has_access","access_level"}` as the access check now would |
//! | `POST /_mock/memberships` | `{"id"?, "user_id"?, "product_id"?, "status"?, "license_key"?, …}` | merges the fields into the membership named by `id` (a `mem_…` or a license key; `updated_at` becomes now), e.g. `{"id":"mem_dave000000001","status":"active"}`; without a known id, creates one (`user_id`, `product_id` required; `status` defaults to `active`, `id` to `mem_mock000000001`, …); answers the membership |
//! | `GET /_mock/faults` | | `{"access":[fault…],"all":[…]}` |
//! | `POST /_mock/faults` | `{"endpoint":"all"\|KIND, "fault":FAULT}` | sets a fault (see below); answers the table |
//! | `DELETE /_mock/faults[?endpoint=KIND\|all]` | | clears one scope, or everything |
//! | `PUT /_mock/rate_limit` | `{"per_minute":N\|null}` | turns the real rate limit on/off |
//! | `GET /_mock/calls` | | `{"total","by_endpoint":{KIND:n},"by_path":{PATH:n},"last_api_version_date","calls":[{"endpoint","method","path","status","ms_since_start","unix_ms"}]}` |
//! | `DELETE /_mock/calls` | | forgets the calls |
//! | `POST /_mock/token` | `{"user_id", "ttl"?:"30s", "expired"?, "iss"?, "aud"?:"…"\|["…"], "no_kid"?, "kid"?, "sign_with"?, "foreign_key"?}` | `{"token":…}` (see [`TokenOptions`]) |
//! | `POST /_mock/keys/rotate` | `{"drop_old"?:bool, "kid"?, "private_key"?}` | adds a key (generated unless given), publishes it and mints with it from now on; `drop_old` takes the others out of the JWKS; answers `{"kid","jwks"}` |
//! | `GET /_mock/oauth` | | `{"login_as","codes":[{"code","client_id","redirect_uri","user_id","scope","state","nonce","code_challenge","redeemed","expired"}]}`: the codes issued since the start or the last reset, oldest first (see [`IssuedCode`]) |
//! | `POST /_mock/oauth/login_as` | `{"user_id"}` (an id or username) | `/oauth/authorize` signs this user in from now on (the state's `oauth.login_as`); answers `{"login_as":ID}` |
//!
//! KIND is one of `access`, `membership`, `jwks`, `members`, `memberships_v2`,
//! `memberships_v5`, `oauth_authorize`, `oauth_token`, `oauth_userinfo`. FAULT is one of
//! `{"type":"latency","duration":"250ms"}`,
//! `{"type":"error","status"?:500,"times"?:N}` (`{"error":{"type":"internal_server_error",…}}`),
//! `{"type":"hang"}` (no answer for an hour; dropped when the client goes away),
//! `{"type":"rate_limited","retry_after"?:12,"header"?:false,"times"?:N}` (429
//! `{"error":{"type":"rate_limit_exceeded","message":"Try again in 12 seconds."}}`, with
//! `Retry-After: 12` when `header`). Without `times` a failure lasts until cleared. A latency
//! adds to a failure; a failure replaces the previous failure of the same scope; a kind's own
//! failure goes before the one set for `all`, and both latencies add up.
//!
//! ```sh
//! curl -s -X POST localhost:12312/_mock/faults -d '{"endpoint":"access","fault":{"type":"error","times":2}}'
//! curl -s -X POST localhost:12312/_mock/memberships -d '{"id":"mem_alice00000001","status":"canceled"}'
//! curl -s -X POST localhost:12312/_mock/token -d '{"user_id":"user_alice","expired":true}'
//! curl -s -X POST localhost:12312/_mock/oauth/login_as -d '{"user_id":"user_bob"}'
//! ```
//!
//! # User tokens
//!
//! ES256, header `{"alg":"ES256","typ":"JWT","kid":…}`, claims `iss = "urn:whopcom:exp-proxy"`,
//! `sub` = the user id, `aud` = the app id (a single string), `iat`, `exp` (one hour later).
//! Any user id can be minted, known to the state or not.
//!
//! # Sign in with Whop (OAuth)
//!
//! OAuth 2.1 authorization code with PKCE (S256 only) and OpenID Connect, shaped as SPEC §1
//! describes Whop's. No page is shown: authorize signs in `oauth.login_as` at once, unless
//! `oauth.login_page` is on (what `whopgate demo` does), when a valid request gets a `200` HTML
//! page listing the users, what each holds, and a link each that repeats the request with
//! `mock_user=ID`. A `mock_user` (id or username) always picks the user to sign in. These
//! endpoints take no API key. Their own errors are RFC 6749's `{"error","error_description"}`;
//! injected faults answer in the Whop shape above, as on every endpoint.
//!
//! **`GET /oauth/authorize`** `?response_type=code&client_id=&redirect_uri=&scope=&state=&nonce=&code_challenge=&code_challenge_method=S256`
//!
//! - `client_id` missing, repeated or unknown (`invalid_client`), or `redirect_uri` missing,
//!   repeated or not allowed for the client (`invalid_request`): `400
//!   {"error","error_description"}`, never a redirect. A client's `redirect_uris` are matched
//!   exactly; a client without any accepts any http(s) URI on `127.0.0.1` or `localhost`.
//! - Any other problem redirects (`302`, no body) to
//!   `redirect_uri?error=…&error_description=…&state=…` (`state` only when sent):
//!   `unsupported_response_type` (not `code`); `invalid_request` (a parameter repeated,
//!   `code_challenge` missing or not 43 base64url characters, `code_challenge_method` absent,
//!   `plain` or anything but `S256`); `invalid_scope` (`scope` without `openid`);
//!   `access_denied` (the state has no users, or no `mock_user` of that name).
//! - Success: `302` (no body) to `redirect_uri?code=…&state=…`, appended to any query the URI
//!   has, values percent-encoded (`state` decodes to exactly what was sent). The code is
//!   random, works once, within `oauth.code_ttl` (60 s), and is bound to the client, the
//!   redirect URI, the challenge, the nonce, the scopes and the user.
//!
//! **`POST /oauth/token`** with `Content-Type: application/json` (anything else, a form-encoded
//! body included, is `400 invalid_request`); unknown fields are ignored, `""` and `null` count
//! as absent:
//!
//! - `{"grant_type":"authorization_code","code","redirect_uri","client_id","code_verifier","client_secret"?}`
//! - `{"grant_type":"refresh_token","refresh_token","client_id","client_secret"?}`
//!
//! Success: `200 {"access_token","refresh_token","id_token","token_type":"Bearer","expires_in"}`,
//! `expires_in` being `oauth.access_token_ttl` in seconds; a refresh answers the same without
//! `id_token`. Every answer has `Cache-Control: no-store`. Access and refresh tokens are opaque.
//! The id_token is an ES256 JWT signed by the current signing key (its `kid` in the header, so
//! the JWKS verifies it) with `iss` = the mock's base URL ([`MockWhop::base_url`]), `sub` = the
//! user id, `aud` = the client id (one string), `iat`, `exp` = `iat` + `access_token_ttl`, and
//! `nonce` when the authorize request had one. Errors:
//!
//! | error | status | when |
//! | --- | --- | --- |
//! | `invalid_request` | 400 | not JSON; a field missing or not a string; `code_verifier` not 43–128 characters of `A-Z a-z 0-9 - . _ ~` |
//! | `unsupported_grant_type` | 400 | `grant_type` is neither of the two |
//! | `invalid_client` | 401 | unknown `client_id`; a confidential client's secret missing or wrong; a secret sent by a public client |
//! | `invalid_grant` | 400 | the code unknown, expired, already used, issued to another client or for another `redirect_uri`, or `BASE64URL(SHA256(code_verifier)) != code_challenge`; the refresh token unknown, used, revoked, expired or another client's |
//!
//! A code is used up by the first exchange that passes the request and client checks, whatever
//! its outcome. Using it again also revokes every token it bought, refreshed ones included (RFC
//! 6749 §4.1.2). Refresh tokens rotate, as Whop's do: each works once; access tokens stay valid
//! until they expire.
//!
//! **`GET` or `POST /oauth/userinfo`** with `Authorization: Bearer <access token>`: `200 {"sub"}`,
//! plus `"name"` (when the user has one) and `"preferred_username"` (the username) with scope
//! `profile`, and `"email"` (when the user has one) with scope `email`; never `picture` (the
//! state has none). Without a token: `401` with `WWW-Authenticate: Bearer realm="whop"`; with
//! an unknown, expired or revoked one: `401` with `WWW-Authenticate: Bearer realm="whop",
//! error="invalid_token", error_description="…"`; both with
//! `{"error":"invalid_token","error_description"}`.
//!
//! Tests drive it with [`MockWhop::set_login_as`] and look at what the client asked for with
//! [`MockWhop::issued_codes`] (or `GET /_mock/oauth`).

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod admin;
mod api;
mod calls;
mod cli;
mod error;
mod faults;
mod http;
mod keys;
mod oauth;
mod runtime;
mod server;
mod state;

#[cfg(test)]
mod tests;

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use api::EndpointKind;
pub use calls::{CallRecord, max_in_window};
pub use cli::{run_cli, token_cli};
pub use error::MockError;
pub use faults::{Fault, FaultScope, HANG_FOR};
pub use keys::{Audience, DEFAULT_KEY_PEM, DEFAULT_KID, DEFAULT_TOKEN_TTL, ISSUER, TokenOptions};
pub use oauth::IssuedCode;
pub use state::{
    AccessGrant, AccessLevel, ApiKey, Company, DEFAULT_ACCESS_TOKEN_TTL, DEFAULT_API_KEY, DEFAULT_APP_ID,
    DEFAULT_CODE_TTL, DEFAULT_COMPANY_ID, DEFAULT_CREATED_AT, DEFAULT_REFRESH_TOKEN_TTL, Experience, Membership,
    MembershipShape, MembershipStatus, MockState, OAuthClient, OAuthState, Product, Resource, SigningKey, User,
};

use runtime::{Inner, World};

/// Where `whopgate mock-whop` listens unless told otherwise: `127.0.0.1:12312`.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 12312));

/// A running mock Whop API. Dropping it stops the server (as [`MockWhop::shutdown`] does,
/// without waiting).
pub struct MockWhop {
    inner: Arc<Inner>,
    addr: SocketAddr,
    stop: Option<watch::Sender<bool>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MockWhop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockWhop").field("addr", &self.addr).finish()
    }
}

impl MockWhop {
    /// Checks `state`, binds `addr` (port 0 picks a free port) and serves on the current tokio
    /// runtime. Fails with `InvalidInput` for a bad state, with the bind error, or when called
    /// outside a tokio runtime.
    pub fn start(addr: SocketAddr, state: MockState) -> io::Result<MockWhop> {
        let rt = tokio::runtime::Handle::try_current()
            .map_err(|_| io::Error::other("MockWhop::start must be called inside a tokio runtime"))?;
        let world = World::new(state)?;
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let listener = {
            let _guard = rt.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner::new(world, format!("http://{addr}")));
        let (stop, stopped) = watch::channel(false);
        let task = rt.spawn(server::serve(listener, inner.clone(), stopped));
        Ok(MockWhop { inner, addr, stop: Some(stop), task: Some(task) })
    }

    /// The bound address (with the real port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`, what the gate's `whop.api_base` should be; also the `iss` of the
    /// id_tokens `/oauth/token` issues.
    pub fn base_url(&self) -> String {
        self.inner.issuer.clone()
    }

    /// `{base_url}/.well-known/jwks.json`.
    pub fn jwks_url(&self) -> String {
        format!("{}/.well-known/jwks.json", self.base_url())
    }

    /// The first API key of the state.
    pub fn api_key(&self) -> String {
        self.inner.with_world(|w| w.state.api_keys.first().map(|k| k.key.clone()).unwrap_or_default())
    }

    /// The app id (`aud` of minted tokens).
    pub fn app_id(&self) -> String {
        self.inner.with_world(|w| w.state.app_id.clone())
    }

    /// A copy of the current state.
    pub fn state(&self) -> MockState {
        self.inner.state()
    }

    /// Replaces the whole state (checked like a state file).
    pub fn replace_state(&self, state: MockState) -> Result<(), MockError> {
        self.inner.replace_state(state)
    }

    /// Back to the start state, with faults, rate-limit budgets, calls, OAuth codes and tokens
    /// and the recorded `Api-Version-Date` cleared.
    pub fn reset(&self) -> Result<(), MockError> {
        self.inner.reset()
    }

    /// Sets a fault for one endpoint kind or for all ([`FaultScope::All`]). Panics on a fault
    /// that makes no sense (an `Error` status outside 5xx, `times: Some(0)`): a test bug.
    pub fn set_fault(&self, scope: impl Into<FaultScope>, fault: Fault) {
        if let Err(e) = self.inner.set_fault(scope.into(), fault) {
            panic!("MockWhop::set_fault: {e}");
        }
    }

    /// Clears the faults of one scope.
    pub fn clear_fault(&self, scope: impl Into<FaultScope>) {
        self.inner.clear_fault(scope.into());
    }

    /// Clears every fault.
    pub fn clear_faults(&self) {
        self.inner.clear_faults();
    }

    /// Turns the real rate limit (calls per minute per endpoint kind and API key) on or off.
    pub fn set_rate_limit(&self, per_minute: Option<u32>) -> Result<(), MockError> {
        self.inner.set_rate_limit(per_minute)
    }

    /// Calls received for one endpoint kind since the start or the last reset.
    pub fn calls(&self, kind: EndpointKind) -> usize {
        self.inner.calls().times(Some(kind)).len()
    }

    /// Calls received on all Whop-shaped paths, unknown ones included.
    pub fn calls_total(&self) -> usize {
        self.inner.calls().records().len()
    }

    /// Calls received for this exact path (no query), e.g.
    /// `/api/v1/users/user_alice/access/prod_mockproduct1`.
    pub fn calls_to(&self, path: &str) -> usize {
        self.inner.calls().records().iter().filter(|r| r.path == path).count()
    }

    /// Arrival times of the calls of one kind, oldest first.
    pub fn call_times(&self, kind: EndpointKind) -> Vec<Instant> {
        self.inner.calls().times(Some(kind))
    }

    /// The most calls of one kind that arrived within any `window`, e.g. "never more than B in
    /// any 60 s" is `max_calls_in_window(kind, 60s) <= B`.
    pub fn max_calls_in_window(&self, kind: EndpointKind, window: Duration) -> usize {
        max_in_window(&self.call_times(kind), window)
    }

    /// Every recorded call, oldest first.
    pub fn call_log(&self) -> Vec<CallRecord> {
        self.inner.calls().records().to_vec()
    }

    /// Forgets all calls.
    pub fn reset_calls(&self) {
        self.inner.calls().reset();
    }

    /// Sets the access override of a user (id or username) on a company, product or
    /// experience; the access check answers `level` from now on.
    pub fn set_access(&self, user: &str, resource: &str, level: AccessLevel) -> Result<(), MockError> {
        self.inner.set_access(user, resource, Some(level))
    }

    /// Removes the access override, so memberships and teams decide again.
    pub fn clear_access(&self, user: &str, resource: &str) -> Result<(), MockError> {
        self.inner.set_access(user, resource, None)
    }

    /// Changes a membership's status (found by id or license key), e.g. to cancel it.
    pub fn set_membership_status(&self, id: &str, status: MembershipStatus) -> Result<(), MockError> {
        self.inner.set_membership_status(id, status)
    }

    /// Adds a membership, or replaces the one with the same id.
    pub fn upsert_membership(&self, membership: Membership) -> Result<(), MockError> {
        self.inner.upsert_membership(membership)
    }

    /// A valid user token for `user` (any id; unknown users are allowed).
    pub fn mint_token(&self, user: &str) -> Result<String, MockError> {
        self.inner.mint(user, &TokenOptions::default())
    }

    /// A token for `user`, broken (or not) as `options` say.
    pub fn mint_token_with(&self, user: &str, options: TokenOptions) -> Result<String, MockError> {
        self.inner.mint(user, &options)
    }

    /// Adds a freshly generated key (kid `mock-key-N`) to the JWKS and mints with it from now
    /// on; with `drop_old`, the other keys leave the JWKS (they can still sign through
    /// [`TokenOptions::sign_with`]). Returns the new kid.
    pub fn rotate_key(&self, drop_old: bool) -> Result<String, MockError> {
        self.inner.rotate_key(drop_old, None, None)
    }

    /// The public half of the current signing key as PEM, for a verifier configured with keys
    /// instead of the JWKS URL.
    pub fn public_key_pem(&self) -> Result<String, MockError> {
        self.inner.with_world(|w| w.keys.public_pem(w.state.signing_kid()))
    }

    /// Makes `/oauth/authorize` sign in this user (id or username) from now on, as the
    /// state's `oauth.login_as` does.
    pub fn set_login_as(&self, user: &str) -> Result<(), MockError> {
        self.inner.set_login_as(user).map(|_| ())
    }

    /// Makes `/oauth/authorize` show a page where a person picks the user (`true`), or sign in
    /// [`MockWhop::login_as`] at once (`false`, the default), as the state's `oauth.login_page`.
    pub fn set_login_page(&self, on: bool) -> Result<(), MockError> {
        self.inner.set_login_page(on)
    }

    /// The user `/oauth/authorize` signs in.
    pub fn login_as(&self) -> String {
        self.inner.with_world(|w| w.state.oauth.login_as.clone())
    }

    /// The authorization codes `/oauth/authorize` issued since the start or the last reset,
    /// oldest first, with what the client asked for (redirect URI, scope, state, nonce,
    /// challenge) and whether each was redeemed.
    pub fn issued_codes(&self) -> Vec<IssuedCode> {
        self.inner.issued_codes()
    }

    /// The last `Api-Version-Date` header received on a Whop-shaped path.
    pub fn last_api_version_date(&self) -> Option<String> {
        self.inner.last_api_version_date()
    }

    /// Stops accepting, drops open connections (hanging calls included) and waits until the
    /// port is released.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MockWhop {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        // Without an await here, abort makes sure the listener goes even if the runtime is
        // about to stop polling the task.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// `Duration` as a humantime string (`"250ms"`, `"30s"`) in JSON and TOML.
pub(crate) mod serde_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("{e}: expected a duration like \"250ms\" or \"30s\", got {text:?}"))
        })
    }

    /// The same for `Option<Duration>`.
    pub(crate) mod option {
        use std::time::Duration;

        use serde::{Deserialize, Deserializer, Serializer};

        pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            #[derive(Deserialize)]
            struct Wrapped(#[serde(with = "super")] Duration);
            Ok(Option::<Wrapped>::deserialize(d)?.map(|Wrapped(d)| d))
        }
    }
}
