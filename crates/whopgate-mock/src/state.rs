//! The mock's world: apps, keys, companies, products, experiences, users, memberships and
//! access overrides, as one serde value that is read from TOML and served as JSON by
//! `GET /_mock/state`. The schema is documented with an example in the module docs of
//! [the crate](crate).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::MockError;
use super::keys;
use super::oauth;

/// The app id of the built-in state (the `aud` of its user tokens).
pub const DEFAULT_APP_ID: &str = "app_mockapp000001";
/// The API key of the built-in state.
pub const DEFAULT_API_KEY: &str = "mock_api_key";
/// The company of the built-in state.
pub const DEFAULT_COMPANY_ID: &str = "biz_mockcompany01";
/// `created_at` of memberships that do not give one: 2025-01-01T00:00:00Z, fixed so that
/// answers are the same on every run.
pub const DEFAULT_CREATED_AT: i64 = 1_735_689_600;

/// The access levels of Whop's access check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessLevel {
    /// No access.
    NoAccess,
    /// Holds a valid membership.
    Customer,
    /// Team member of the company that owns the resource.
    Admin,
}

impl AccessLevel {
    /// The wire name: `no_access`, `customer` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessLevel::NoAccess => "no_access",
            AccessLevel::Customer => "customer",
            AccessLevel::Admin => "admin",
        }
    }

    /// Whop's `has_access`: true for customers and admins.
    pub fn has_access(self) -> bool {
        self != AccessLevel::NoAccess
    }
}

impl fmt::Display for AccessLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AccessLevel {
    type Err = MockError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "no_access" => Ok(AccessLevel::NoAccess),
            "customer" => Ok(AccessLevel::Customer),
            "admin" => Ok(AccessLevel::Admin),
            other => Err(MockError::BadRequest(format!(
                "unknown access level {other:?} (expected no_access, customer or admin)"
            ))),
        }
    }
}

/// Whop's membership statuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MembershipStatus {
    /// In a free trial (valid).
    Trialing,
    /// Paid and running (valid).
    Active,
    /// A renewal payment failed; still valid while Whop retries.
    PastDue,
    /// A one-time purchase that is done (valid: lifetime access).
    Completed,
    /// Canceled (not valid).
    Canceled,
    /// Ran out (not valid).
    Expired,
    /// Payment dispute or similar (not valid).
    Unresolved,
    /// Created but never started (not valid).
    Drafted,
    /// Will cancel at the end of the period; valid until then.
    Canceling,
}

impl MembershipStatus {
    /// Every status, in Whop's documented order.
    pub const ALL: [MembershipStatus; 9] = [
        MembershipStatus::Trialing,
        MembershipStatus::Active,
        MembershipStatus::PastDue,
        MembershipStatus::Completed,
        MembershipStatus::Canceled,
        MembershipStatus::Expired,
        MembershipStatus::Unresolved,
        MembershipStatus::Drafted,
        MembershipStatus::Canceling,
    ];

    /// The wire name, e.g. `past_due`.
    pub fn as_str(self) -> &'static str {
        match self {
            MembershipStatus::Trialing => "trialing",
            MembershipStatus::Active => "active",
            MembershipStatus::PastDue => "past_due",
            MembershipStatus::Completed => "completed",
            MembershipStatus::Canceled => "canceled",
            MembershipStatus::Expired => "expired",
            MembershipStatus::Unresolved => "unresolved",
            MembershipStatus::Drafted => "drafted",
            MembershipStatus::Canceling => "canceling",
        }
    }

    /// Whether a membership in this status grants access (Whop's `valid`).
    pub fn is_valid(self) -> bool {
        matches!(
            self,
            MembershipStatus::Trialing
                | MembershipStatus::Active
                | MembershipStatus::PastDue
                | MembershipStatus::Completed
                | MembershipStatus::Canceling
        )
    }
}

impl fmt::Display for MembershipStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MembershipStatus {
    type Err = MockError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MembershipStatus::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| {
            MockError::BadRequest(format!(
                "unknown membership status {s:?} (expected one of {})",
                MembershipStatus::ALL.map(|s| s.as_str()).join(", ")
            ))
        })
    }
}

/// Which JSON shape `GET /api/v1/memberships/{id}` answers in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MembershipShape {
    /// Current shape: `product_id`, `user_id`, `plan_id`, `company_id` as strings.
    #[default]
    Flat,
    /// Older shape: `product: {id, …}`, `user: {id, …}`, `plan: {id}`, `company: {id, …}`.
    Nested,
}

/// An API key the mock accepts as `Authorization: Bearer <key>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// The secret itself.
    pub key: String,
    /// A company key sees only this company's memberships and members; without it the key sees
    /// everything (like an app key installed everywhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company_id: Option<String>,
}

/// A company (`biz_…`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Company {
    /// `biz_…`.
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub title: String,
    /// Team members (user ids): `admin` of the company and of all its products and experiences.
    #[serde(default)]
    pub admins: Vec<String>,
}

/// A product (`prod_…`, formerly "access pass").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Product {
    /// `prod_…`.
    pub id: String,
    /// The owning company.
    pub company_id: String,
    /// Display name.
    #[serde(default)]
    pub title: String,
}

/// An experience (`exp_…`): customers reach it through any of its products.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experience {
    /// `exp_…`.
    pub id: String,
    /// The owning company.
    pub company_id: String,
    /// Products whose valid memberships grant access (all of the same company).
    #[serde(default)]
    pub product_ids: Vec<String>,
    /// Display name.
    #[serde(default)]
    pub title: String,
}

/// A Whop user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// `user_…`.
    pub id: String,
    /// Whop username; the access check accepts it in place of the id. Defaults to the id
    /// without its `user_` prefix.
    #[serde(default)]
    pub username: String,
    /// Full name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// A membership: one user's purchase of one product.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Membership {
    /// `mem_…`.
    pub id: String,
    /// The buyer.
    pub user_id: String,
    /// The product bought.
    pub product_id: String,
    /// Current status; only the valid ones grant access.
    pub status: MembershipStatus,
    /// The plan bought; defaults to `plan_` + the product id without its prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
    /// Software license key; `GET /api/v1/memberships/{key}` finds the membership by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license_key: Option<String>,
    /// Unix seconds; defaults to [`DEFAULT_CREATED_AT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    /// Unix seconds; defaults to `created_at`. Set to now by status changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<i64>,
    /// Unix seconds, if the membership has an end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// Unix seconds: start of the current billing period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_period_start: Option<i64>,
    /// Unix seconds: end of the current billing period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_period_end: Option<i64>,
}

impl Membership {
    /// A membership with only what every one needs; the rest takes its documented defaults.
    pub fn new(
        id: impl Into<String>,
        user_id: impl Into<String>,
        product_id: impl Into<String>,
        status: MembershipStatus,
    ) -> Self {
        Membership {
            id: id.into(),
            user_id: user_id.into(),
            product_id: product_id.into(),
            status,
            plan_id: None,
            license_key: None,
            created_at: None,
            updated_at: None,
            expires_at: None,
            renewal_period_start: None,
            renewal_period_end: None,
        }
    }

    /// The plan id, defaulted from the product when the state gives none.
    pub fn plan(&self) -> String {
        match &self.plan_id {
            Some(p) => p.clone(),
            None => format!("plan_{}", self.product_id.strip_prefix("prod_").unwrap_or(&self.product_id)),
        }
    }

    /// `created_at`, defaulted.
    pub fn created(&self) -> i64 {
        self.created_at.unwrap_or(DEFAULT_CREATED_AT)
    }

    /// `updated_at`, defaulted.
    pub fn updated(&self) -> i64 {
        self.updated_at.unwrap_or_else(|| self.created())
    }
}

/// An explicit access level for one (user, resource) pair. It wins over what memberships and
/// teams would give, in the access check only (lists and members still follow memberships).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessGrant {
    /// The user.
    pub user_id: String,
    /// A company, product or experience id.
    pub resource_id: String,
    /// The level the access check answers.
    pub access_level: AccessLevel,
}

/// An ES256 (P-256) signing key for user tokens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningKey {
    /// The `kid` in the JWKS and in token headers.
    pub kid: String,
    /// PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`) of a P-256 key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// Generate a fresh key when the state is loaded (instead of `private_key`). Tokens signed
    /// by it only verify against the process that generated it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub generate: bool,
    /// Listed in the JWKS (default true). An unpublished key can still sign, to test tokens
    /// signed by a key the verifier cannot know.
    #[serde(default = "yes")]
    pub published: bool,
}

/// An OAuth client of "Sign in with Whop" (in Whop, an app: its id is the client id).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthClient {
    /// `app_…`.
    pub client_id: String,
    /// A confidential client's secret: `POST /oauth/token` then requires it. Without one the
    /// client is a public (PKCE-only) client and must not send a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// The redirect URIs `/oauth/authorize` accepts, compared exactly (as strings). Empty: any
    /// `http`/`https` URI whose host is `127.0.0.1` or `localhost` (any port, path and query),
    /// which suits tests on ephemeral ports.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
}

impl OAuthClient {
    /// A public client with no fixed redirect URIs (any loopback URI is accepted).
    pub fn public(client_id: impl Into<String>) -> OAuthClient {
        OAuthClient { client_id: client_id.into(), client_secret: None, redirect_uris: Vec::new() }
    }
}

/// Lifetime of authorization codes unless the state says otherwise.
pub const DEFAULT_CODE_TTL: Duration = Duration::from_secs(60);
/// Lifetime of OAuth access tokens (and id_tokens) unless the state says otherwise; Whop's
/// are valid for one hour.
pub const DEFAULT_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// Lifetime of refresh tokens unless the state says otherwise.
pub const DEFAULT_REFRESH_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// "Sign in with Whop" (`/oauth/authorize`, `/oauth/token`, `/oauth/userinfo`): the clients,
/// the user the authorize step signs in, and the lifetimes of what it issues.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthState {
    /// The user (id, or username when loading) that `/oauth/authorize` approves without asking.
    /// Left empty, it becomes `user_alice` when the state has her, else the first user; with no
    /// users at all, authorize answers `access_denied`.
    #[serde(default)]
    pub login_as: String,
    /// Show a page at `/oauth/authorize` where a person picks the user to sign in as (what
    /// `whopgate demo` does), instead of approving `login_as` at once. Off by default.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub login_page: bool,
    /// How long an authorization code can be exchanged (default 60 s).
    #[serde(default = "default_code_ttl", with = "super::serde_duration")]
    pub code_ttl: Duration,
    /// `expires_in` of access tokens, and `exp - iat` of id_tokens (default 1 h).
    #[serde(default = "default_access_token_ttl", with = "super::serde_duration")]
    pub access_token_ttl: Duration,
    /// How long a refresh token can be used (default 30 days).
    #[serde(default = "default_refresh_token_ttl", with = "super::serde_duration")]
    pub refresh_token_ttl: Duration,
    /// The clients. Left empty, one public client whose `client_id` is the state's `app_id`,
    /// with no fixed redirect URIs.
    #[serde(default)]
    pub clients: Vec<OAuthClient>,
}

impl Default for OAuthState {
    /// Default lifetimes; `login_as` and `clients` are filled in by [`MockState::resolve`].
    fn default() -> Self {
        OAuthState {
            login_as: String::new(),
            login_page: false,
            code_ttl: DEFAULT_CODE_TTL,
            access_token_ttl: DEFAULT_ACCESS_TOKEN_TTL,
            refresh_token_ttl: DEFAULT_REFRESH_TOKEN_TTL,
            clients: Vec::new(),
        }
    }
}

impl OAuthState {
    /// The client with this id.
    pub fn client(&self, client_id: &str) -> Option<&OAuthClient> {
        self.clients.iter().find(|c| c.client_id == client_id)
    }
}

fn default_code_ttl() -> Duration {
    DEFAULT_CODE_TTL
}
fn default_access_token_ttl() -> Duration {
    DEFAULT_ACCESS_TOKEN_TTL
}
fn default_refresh_token_ttl() -> Duration {
    DEFAULT_REFRESH_TOKEN_TTL
}

/// Everything the mock knows. [`MockState::default`] is the built-in state; files are read
/// with [`MockState::from_toml`] / [`MockState::load`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockState {
    /// The app id: the `aud` of minted user tokens.
    #[serde(default = "default_app_id")]
    pub app_id: String,
    /// Default shape of `GET /api/v1/memberships/{id}`.
    #[serde(default)]
    pub membership_shape: MembershipShape,
    /// Answer 429 past this many calls per minute per endpoint kind and API key (off when
    /// absent). Whop's own limit is 600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_per_minute: Option<u32>,
    /// The key that signs minted tokens (default: the first key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_kid: Option<String>,
    /// Accepted API keys (default: `mock_api_key`).
    #[serde(default = "default_api_keys")]
    pub api_keys: Vec<ApiKey>,
    /// Companies.
    #[serde(default)]
    pub companies: Vec<Company>,
    /// Products.
    #[serde(default)]
    pub products: Vec<Product>,
    /// Experiences.
    #[serde(default)]
    pub experiences: Vec<Experience>,
    /// Users.
    #[serde(default)]
    pub users: Vec<User>,
    /// Memberships.
    #[serde(default)]
    pub memberships: Vec<Membership>,
    /// Access overrides.
    #[serde(default)]
    pub access: Vec<AccessGrant>,
    /// Signing keys (default: the built-in development key `mock-key-1`).
    #[serde(default = "default_keys")]
    pub keys: Vec<SigningKey>,
    /// "Sign in with Whop": clients, the signed-in user, lifetimes.
    #[serde(default)]
    pub oauth: OAuthState,
}

fn is_false(b: &bool) -> bool {
    !*b
}
fn yes() -> bool {
    true
}
fn default_app_id() -> String {
    DEFAULT_APP_ID.to_owned()
}
fn default_api_keys() -> Vec<ApiKey> {
    vec![ApiKey { key: DEFAULT_API_KEY.to_owned(), company_id: None }]
}
fn default_keys() -> Vec<SigningKey> {
    vec![SigningKey {
        kid: keys::DEFAULT_KID.to_owned(),
        private_key: Some(keys::DEFAULT_KEY_PEM.to_owned()),
        generate: false,
        published: true,
    }]
}

impl Default for MockState {
    /// The built-in state: app `app_mockapp000001`, API key `mock_api_key` (of company
    /// `biz_mockcompany01`), products `prod_mockproduct1` and `prod_mockproduct2`, experience
    /// `exp_mockexperienc1` (via product 1), users alice (active customer of product 1, license
    /// key `MOCK-ALICE-LICENSE`), bob (nothing), carol (admin of the company) and dave
    /// (canceled membership on product 1, license key `MOCK-DAVE-LICENSE`), the published
    /// development key `mock-key-1`, and one public OAuth client `app_mockapp000001` (any
    /// loopback redirect URI) that signs in as alice.
    fn default() -> Self {
        let user = |id: &str, name: &str| User {
            id: format!("user_{id}"),
            username: id.to_owned(),
            name: Some(name.to_owned()),
            email: Some(format!("{id}@example.com")),
        };
        let membership = |id: &str, user: &str, status, key: &str| Membership {
            id: id.to_owned(),
            user_id: user.to_owned(),
            product_id: "prod_mockproduct1".to_owned(),
            status,
            plan_id: Some("plan_mockplan00001".to_owned()),
            license_key: Some(key.to_owned()),
            created_at: Some(DEFAULT_CREATED_AT),
            updated_at: None,
            expires_at: None,
            renewal_period_start: None,
            renewal_period_end: None,
        };
        MockState {
            app_id: DEFAULT_APP_ID.to_owned(),
            membership_shape: MembershipShape::Flat,
            rate_limit_per_minute: None,
            signing_kid: None,
            api_keys: vec![ApiKey { key: DEFAULT_API_KEY.to_owned(), company_id: Some(DEFAULT_COMPANY_ID.to_owned()) }],
            companies: vec![Company {
                id: DEFAULT_COMPANY_ID.to_owned(),
                title: "Mock Company".to_owned(),
                admins: vec!["user_carol".to_owned()],
            }],
            products: vec![
                Product {
                    id: "prod_mockproduct1".to_owned(),
                    company_id: DEFAULT_COMPANY_ID.to_owned(),
                    title: "Mock Product One".to_owned(),
                },
                Product {
                    id: "prod_mockproduct2".to_owned(),
                    company_id: DEFAULT_COMPANY_ID.to_owned(),
                    title: "Mock Product Two".to_owned(),
                },
            ],
            experiences: vec![Experience {
                id: "exp_mockexperienc1".to_owned(),
                company_id: DEFAULT_COMPANY_ID.to_owned(),
                product_ids: vec!["prod_mockproduct1".to_owned()],
                title: "Mock Experience".to_owned(),
            }],
            users: vec![
                user("alice", "Alice Customer"),
                user("bob", "Bob Nobody"),
                user("carol", "Carol Admin"),
                user("dave", "Dave Canceled"),
            ],
            memberships: vec![
                membership("mem_alice00000001", "user_alice", MembershipStatus::Active, "MOCK-ALICE-LICENSE"),
                membership("mem_dave000000001", "user_dave", MembershipStatus::Canceled, "MOCK-DAVE-LICENSE"),
            ],
            access: Vec::new(),
            keys: default_keys(),
            oauth: OAuthState {
                login_as: "user_alice".to_owned(),
                clients: vec![OAuthClient::public(DEFAULT_APP_ID)],
                ..OAuthState::default()
            },
        }
    }
}

/// A company, product or experience found by id.
#[derive(Clone, Copy, Debug)]
pub enum Resource<'a> {
    /// `biz_…`
    Company(&'a Company),
    /// `prod_…`
    Product(&'a Product),
    /// `exp_…`
    Experience(&'a Experience),
}

impl Resource<'_> {
    /// The resource's id.
    pub fn id(&self) -> &str {
        match self {
            Resource::Company(c) => &c.id,
            Resource::Product(p) => &p.id,
            Resource::Experience(e) => &e.id,
        }
    }

    /// The id of the company that owns it (the company itself for a company).
    pub fn company_id(&self) -> &str {
        match self {
            Resource::Company(c) => &c.id,
            Resource::Product(p) => &p.company_id,
            Resource::Experience(e) => &e.company_id,
        }
    }
}

impl MockState {
    /// Parses and checks a TOML state (see the module docs for the schema). Keys marked
    /// `generate = true` are generated here. Errors name the line and column or the entry that
    /// is wrong.
    pub fn from_toml(text: &str) -> Result<MockState, MockError> {
        Self::parse_toml(text)?.resolve()
    }

    /// Reads and checks a TOML state file; errors name the file.
    pub fn load(path: &Path) -> Result<MockState, MockError> {
        let raw = Self::read_unresolved(path)?;
        raw.resolve().map_err(|e| in_file(path, e))
    }

    /// Reads a state file without generating keys or checking references (the token CLI
    /// looks at the raw keys first).
    pub(crate) fn read_unresolved(path: &Path) -> Result<MockState, MockError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| MockError::Io { context: format!("reading state file {}", path.display()), source })?;
        Self::parse_toml(&text).map_err(|e| in_file(path, e))
    }

    fn parse_toml(text: &str) -> Result<MockState, MockError> {
        toml::from_str(text).map_err(|e| MockError::InvalidState(e.to_string()))
    }

    /// Parses and checks a JSON state (the body of `PUT /_mock/state`).
    pub fn from_json(text: &[u8]) -> Result<MockState, MockError> {
        let raw: MockState = serde_json::from_slice(text).map_err(|e| MockError::InvalidState(e.to_string()))?;
        raw.resolve()
    }

    /// The state as TOML, readable back by [`MockState::from_toml`].
    pub fn to_toml(&self) -> Result<String, MockError> {
        toml::to_string(self).map_err(|e| MockError::InvalidState(e.to_string()))
    }

    /// Checks every reference and uniqueness rule, fills defaults (usernames) and generates the
    /// keys that ask for it. Runs on every state the mock is given.
    pub fn resolve(mut self) -> Result<MockState, MockError> {
        let bad = |msg: String| Err(MockError::InvalidState(msg));
        if self.app_id.trim().is_empty() {
            return bad("app_id must not be empty".into());
        }
        if self.rate_limit_per_minute == Some(0) {
            return bad("rate_limit_per_minute must be at least 1 (leave it out to disable)".into());
        }

        let mut ids = HashSet::new();
        let mut unique = |what: &str, id: &str| -> Result<(), MockError> {
            if id.trim().is_empty() {
                return Err(MockError::InvalidState(format!("{what}: id must not be empty")));
            }
            if !ids.insert(id.to_owned()) {
                return Err(MockError::InvalidState(format!("{what}: id {id:?} is used twice")));
            }
            Ok(())
        };
        let prefixed = |what: String, id: &str, prefix: &str| -> Result<(), MockError> {
            if id.starts_with(prefix) {
                Ok(())
            } else {
                Err(MockError::InvalidState(format!("{what}: id {id:?} must start with {prefix:?}")))
            }
        };

        for (i, u) in self.users.iter_mut().enumerate() {
            unique(&format!("users[{i}]"), &u.id)?;
            if u.username.is_empty() {
                u.username = u.id.strip_prefix("user_").unwrap_or(&u.id).to_owned();
            }
        }
        let mut usernames = HashSet::new();
        for (i, u) in self.users.iter().enumerate() {
            if !usernames.insert(u.username.as_str()) {
                return bad(format!("users[{i}] ({}): username {:?} is used twice", u.id, u.username));
            }
        }
        let users: HashSet<&str> = self.users.iter().map(|u| u.id.as_str()).collect();

        for (i, c) in self.companies.iter().enumerate() {
            let at = format!("companies[{i}]");
            prefixed(at.clone(), &c.id, "biz_")?;
            unique(&at, &c.id)?;
            for a in &c.admins {
                if !users.contains(a.as_str()) {
                    return bad(format!("{at} ({}): admin {a:?} is not one of the users", c.id));
                }
            }
        }
        let companies: HashSet<&str> = self.companies.iter().map(|c| c.id.as_str()).collect();

        let mut product_company = HashMap::new();
        for (i, p) in self.products.iter().enumerate() {
            let at = format!("products[{i}]");
            prefixed(at.clone(), &p.id, "prod_")?;
            unique(&at, &p.id)?;
            if !companies.contains(p.company_id.as_str()) {
                return bad(format!("{at} ({}): company_id {:?} is not one of the companies", p.id, p.company_id));
            }
            product_company.insert(p.id.as_str(), p.company_id.as_str());
        }

        for (i, e) in self.experiences.iter().enumerate() {
            let at = format!("experiences[{i}]");
            prefixed(at.clone(), &e.id, "exp_")?;
            unique(&at, &e.id)?;
            if !companies.contains(e.company_id.as_str()) {
                return bad(format!("{at} ({}): company_id {:?} is not one of the companies", e.id, e.company_id));
            }
            for p in &e.product_ids {
                match product_company.get(p.as_str()) {
                    None => {
                        return bad(format!("{at} ({}): product {p:?} is not one of the products", e.id));
                    }
                    Some(c) if *c != e.company_id => {
                        return bad(format!(
                            "{at} ({}): product {p:?} belongs to {c:?}, not to {:?}",
                            e.id, e.company_id
                        ));
                    }
                    Some(_) => {}
                }
            }
        }

        let mut license_keys = HashSet::new();
        for (i, m) in self.memberships.iter().enumerate() {
            let at = format!("memberships[{i}]");
            prefixed(at.clone(), &m.id, "mem_")?;
            unique(&at, &m.id)?;
            if !users.contains(m.user_id.as_str()) {
                return bad(format!("{at} ({}): user_id {:?} is not one of the users", m.id, m.user_id));
            }
            if !product_company.contains_key(m.product_id.as_str()) {
                return bad(format!("{at} ({}): product_id {:?} is not one of the products", m.id, m.product_id));
            }
            if let Some(k) = &m.license_key {
                // A key that looks like a membership id would make the lookup ambiguous.
                if k.is_empty() || k.starts_with("mem_") || k.contains('/') {
                    return bad(format!(
                        "{at} ({}): license_key {k:?} must be non-empty, not start with \"mem_\" and not contain '/'",
                        m.id
                    ));
                }
                if !license_keys.insert(k.as_str()) {
                    return bad(format!("{at} ({}): license_key {k:?} is used twice", m.id));
                }
            }
        }

        for (i, g) in self.access.iter().enumerate() {
            if !users.contains(g.user_id.as_str()) {
                return bad(format!("access[{i}]: user_id {:?} is not one of the users", g.user_id));
            }
            if self.resource(&g.resource_id).is_none() {
                return bad(format!(
                    "access[{i}]: resource_id {:?} is not a company, product or experience of this state",
                    g.resource_id
                ));
            }
        }

        if self.api_keys.is_empty() {
            return bad("api_keys: give at least one API key".into());
        }
        let mut api_keys = HashSet::new();
        for (i, k) in self.api_keys.iter().enumerate() {
            if k.key.trim().is_empty() || k.key.chars().any(|c| c.is_whitespace()) {
                return bad(format!("api_keys[{i}]: key must be non-empty and without spaces"));
            }
            if !api_keys.insert(k.key.as_str()) {
                return bad(format!("api_keys[{i}]: key is listed twice"));
            }
            if let Some(c) = &k.company_id {
                if !companies.contains(c.as_str()) {
                    return bad(format!("api_keys[{i}]: company_id {c:?} is not one of the companies"));
                }
            }
        }

        if self.keys.is_empty() {
            return bad("keys: give at least one signing key".into());
        }
        let mut kids = HashSet::new();
        for (i, k) in self.keys.iter_mut().enumerate() {
            let at = format!("keys[{i}] ({})", k.kid);
            if k.kid.is_empty() {
                return bad(format!("keys[{i}]: kid must not be empty"));
            }
            if !kids.insert(k.kid.clone()) {
                return bad(format!("{at}: kid is used twice"));
            }
            match (&k.private_key, k.generate) {
                (Some(_), true) => {
                    return bad(format!("{at}: give either private_key or generate = true, not both"));
                }
                (None, false) => {
                    return bad(format!("{at}: give private_key (PKCS#8 PEM of a P-256 key) or generate = true"));
                }
                (None, true) => {
                    k.private_key = Some(keys::generate_pem()?);
                    k.generate = false;
                }
                (Some(pem), false) => {
                    keys::check_private_key(pem).map_err(|e| MockError::InvalidState(format!("{at}: {e}")))?;
                }
            }
        }
        if let Some(kid) = &self.signing_kid {
            if !kids.contains(kid) {
                return bad(format!("signing_kid {kid:?} is not one of the keys"));
            }
        }

        let login_as = if self.oauth.login_as.is_empty() {
            // Absent from the file: alice when she exists, as documented; else anyone rather
            // than nobody.
            self.user("user_alice").or(self.users.first()).map(|u| u.id.clone())
        } else {
            match self.user(&self.oauth.login_as) {
                Some(u) => Some(u.id.clone()),
                None => {
                    return bad(format!("oauth.login_as {:?} is not one of the users", self.oauth.login_as));
                }
            }
        };
        let oauth = &mut self.oauth;
        oauth.login_as = login_as.unwrap_or_default();
        if oauth.clients.is_empty() {
            oauth.clients.push(OAuthClient::public(self.app_id.clone()));
        }
        let mut client_ids = HashSet::new();
        for (i, c) in oauth.clients.iter().enumerate() {
            let at = format!("oauth.clients[{i}] ({})", c.client_id);
            if !c.client_id.starts_with("app_") {
                return bad(format!("oauth.clients[{i}]: client_id {:?} must start with \"app_\"", c.client_id));
            }
            if !client_ids.insert(c.client_id.as_str()) {
                return bad(format!("{at}: client_id is used twice"));
            }
            if c.client_secret.as_deref().is_some_and(|s| s.trim().is_empty()) {
                return bad(format!("{at}: client_secret must not be empty (leave it out for a public client)"));
            }
            for uri in &c.redirect_uris {
                if let Err(e) = oauth::parse_redirect_uri(uri) {
                    return bad(format!("{at}: redirect_uri {uri:?}: {e}"));
                }
            }
        }
        Ok(self)
    }

    /// The kid that signs minted tokens.
    pub fn signing_kid(&self) -> &str {
        match &self.signing_kid {
            Some(k) => k,
            None => self.keys.first().map(|k| k.kid.as_str()).unwrap_or(""),
        }
    }

    /// The user with this id or username.
    pub fn user(&self, id_or_username: &str) -> Option<&User> {
        self.users
            .iter()
            .find(|u| u.id == id_or_username)
            .or_else(|| self.users.iter().find(|u| u.username == id_or_username))
    }

    /// The company, product or experience with this id.
    pub fn resource(&self, id: &str) -> Option<Resource<'_>> {
        if let Some(c) = self.companies.iter().find(|c| c.id == id) {
            return Some(Resource::Company(c));
        }
        if let Some(p) = self.products.iter().find(|p| p.id == id) {
            return Some(Resource::Product(p));
        }
        self.experiences.iter().find(|e| e.id == id).map(Resource::Experience)
    }

    /// The company with this id.
    pub fn company(&self, id: &str) -> Option<&Company> {
        self.companies.iter().find(|c| c.id == id)
    }

    /// The product with this id.
    pub fn product(&self, id: &str) -> Option<&Product> {
        self.products.iter().find(|p| p.id == id)
    }

    /// The membership with this id (`mem_…`) or license key.
    pub fn membership(&self, id_or_key: &str) -> Option<&Membership> {
        self.memberships
            .iter()
            .find(|m| m.id == id_or_key)
            .or_else(|| self.memberships.iter().find(|m| m.license_key.as_deref() == Some(id_or_key)))
    }

    /// The company that owns a membership's product.
    pub fn membership_company(&self, m: &Membership) -> Option<&str> {
        self.product(&m.product_id).map(|p| p.company_id.as_str())
    }

    /// What the access check answers for a user (id or username) and a resource, or `None`
    /// when either is unknown (the endpoint's 404). An entry in `access` wins; else a team
    /// member of the owning company is `admin`; else a valid membership on the product (on one
    /// of the experience's products, on any of the company's products) is `customer`.
    pub fn access_level(&self, user: &str, resource_id: &str) -> Option<AccessLevel> {
        let user = self.user(user)?;
        let resource = self.resource(resource_id)?;
        if let Some(g) = self.access.iter().find(|g| g.user_id == user.id && g.resource_id == resource.id()) {
            return Some(g.access_level);
        }
        let company = self.company(resource.company_id())?;
        if company.admins.contains(&user.id) {
            return Some(AccessLevel::Admin);
        }
        let grants = |product_id: &str| match resource {
            Resource::Product(p) => p.id == product_id,
            Resource::Experience(e) => e.product_ids.iter().any(|p| p == product_id),
            Resource::Company(c) => self.product(product_id).is_some_and(|p| p.company_id == c.id),
        };
        let customer =
            self.memberships.iter().any(|m| m.user_id == user.id && m.status.is_valid() && grants(&m.product_id));
        Some(if customer { AccessLevel::Customer } else { AccessLevel::NoAccess })
    }
}

/// Puts the file name in front of a state error.
fn in_file(path: &Path, e: MockError) -> MockError {
    match e {
        MockError::InvalidState(msg) => MockError::InvalidState(format!("state file {}: {msg}", path.display())),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_state_is_consistent_and_answers_as_documented() {
        let s = MockState::default().resolve().unwrap();
        assert_eq!(s.app_id, "app_mockapp000001");
        assert_eq!(s.signing_kid(), "mock-key-1");
        let lvl = |u, r| s.access_level(u, r);
        assert_eq!(lvl("user_alice", "prod_mockproduct1"), Some(AccessLevel::Customer));
        assert_eq!(lvl("user_alice", "exp_mockexperienc1"), Some(AccessLevel::Customer));
        assert_eq!(lvl("user_alice", "prod_mockproduct2"), Some(AccessLevel::NoAccess));
        assert_eq!(lvl("user_alice", "biz_mockcompany01"), Some(AccessLevel::Customer));
        assert_eq!(lvl("user_bob", "prod_mockproduct1"), Some(AccessLevel::NoAccess));
        assert_eq!(lvl("user_carol", "prod_mockproduct2"), Some(AccessLevel::Admin));
        assert_eq!(lvl("user_carol", "biz_mockcompany01"), Some(AccessLevel::Admin));
        assert_eq!(lvl("carol", "exp_mockexperienc1"), Some(AccessLevel::Admin));
        assert_eq!(lvl("user_dave", "prod_mockproduct1"), Some(AccessLevel::NoAccess));
        assert_eq!(lvl("user_nobody", "prod_mockproduct1"), None);
        assert_eq!(lvl("user_alice", "prod_nothing"), None);
        assert_eq!(s.membership("MOCK-ALICE-LICENSE").map(|m| m.id.as_str()), Some("mem_alice00000001"));
    }

    #[test]
    fn valid_statuses_are_whops() {
        let valid: Vec<_> = MembershipStatus::ALL.into_iter().filter(|s| s.is_valid()).map(|s| s.as_str()).collect();
        assert_eq!(valid, ["trialing", "active", "past_due", "completed", "canceling"]);
        assert_eq!("past_due".parse::<MembershipStatus>().unwrap(), MembershipStatus::PastDue);
        assert!("paused".parse::<MembershipStatus>().is_err());
    }

    #[test]
    fn overrides_win() {
        let mut s = MockState::default();
        s.access.push(AccessGrant {
            user_id: "user_carol".into(),
            resource_id: "prod_mockproduct1".into(),
            access_level: AccessLevel::NoAccess,
        });
        let s = s.resolve().unwrap();
        assert_eq!(s.access_level("user_carol", "prod_mockproduct1"), Some(AccessLevel::NoAccess));
        assert_eq!(s.access_level("user_carol", "prod_mockproduct2"), Some(AccessLevel::Admin));
    }

    #[test]
    fn toml_round_trip() {
        let s = MockState::default().resolve().unwrap();
        let text = s.to_toml().unwrap();
        let back = MockState::from_toml(&text).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn minimal_toml_gets_defaults() {
        let s = MockState::from_toml(
            r#"
            [[companies]]
            id = "biz_x"
            [[products]]
            id = "prod_x"
            company_id = "biz_x"
            [[users]]
            id = "user_x"
            [[memberships]]
            id = "mem_x"
            user_id = "user_x"
            product_id = "prod_x"
            status = "trialing"
            "#,
        )
        .unwrap();
        assert_eq!(s.app_id, DEFAULT_APP_ID);
        assert_eq!(s.api_keys[0].key, DEFAULT_API_KEY);
        assert_eq!(s.keys[0].kid, "mock-key-1");
        assert_eq!(s.users[0].username, "x");
        assert_eq!(s.memberships[0].plan(), "plan_x");
        assert_eq!(s.access_level("user_x", "prod_x"), Some(AccessLevel::Customer));
    }

    #[test]
    fn generated_keys_are_filled_in() {
        let s = MockState::from_toml(
            r#"
            [[keys]]
            kid = "fresh"
            generate = true
            "#,
        )
        .unwrap();
        assert!(!s.keys[0].generate);
        assert!(s.keys[0].private_key.as_deref().unwrap().starts_with("-----BEGIN PRIVATE KEY-----"));
    }

    fn err(text: &str) -> String {
        MockState::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn bad_states_give_clear_errors() {
        let e = err("app_id = 3");
        assert!(e.contains("line 1"), "{e}");
        let e = err("colour = \"red\"");
        assert!(e.contains("unknown field `colour`"), "{e}");
        let e = err("[[products]]\nid = \"prod_a\"\ncompany_id = \"biz_nope\"");
        assert!(e.contains("products[0] (prod_a): company_id \"biz_nope\" is not one of the companies"), "{e}");
        let e = err("[[companies]]\nid = \"company1\"");
        assert!(e.contains("must start with \"biz_\""), "{e}");
        let e = err("[[users]]\nid = \"user_a\"\n[[users]]\nid = \"user_a\"");
        assert!(e.contains("users[1]: id \"user_a\" is used twice"), "{e}");
        let e = err("[[companies]]\nid = \"biz_a\"\n[[products]]\nid = \"prod_a\"\ncompany_id = \"biz_a\"\n\
             [[users]]\nid = \"user_a\"\n[[memberships]]\nid = \"mem_a\"\nuser_id = \"user_a\"\n\
             product_id = \"prod_a\"\nstatus = \"paused\"");
        assert!(e.contains("unknown variant `paused`"), "{e}");
        let e = err("[[keys]]\nkid = \"k\"\nprivate_key = \"not a pem\"");
        assert!(e.contains("keys[0] (k)"), "{e}");
        assert!(e.contains("PKCS#8"), "{e}");
        let e = err("api_keys = []");
        assert!(e.contains("at least one API key"), "{e}");
        let e = err("signing_kid = \"nope\"");
        assert!(e.contains("signing_kid \"nope\""), "{e}");
    }

    /// The schema example in the module docs must stay a valid state.
    #[test]
    fn documented_example_parses() {
        let docs: String = include_str!("lib.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("//!"))
            .map(|l| format!("{}\n", l.strip_prefix(' ').unwrap_or(l)))
            .collect();
        let start = docs.find("```toml\n").unwrap() + "```toml\n".len();
        let example = &docs[start..];
        let example = &example[..example.find("```").unwrap()];
        let pem_start = example.find("private_key = \"\"\"").unwrap();
        let pem_end = example[pem_start + 20..].find("\"\"\"").unwrap() + pem_start + 23;
        let example = format!(
            "{}private_key = \"\"\"\n{}\"\"\"{}",
            &example[..pem_start],
            keys::DEFAULT_KEY_PEM,
            &example[pem_end..]
        );
        let s = MockState::from_toml(&example).unwrap();
        assert_eq!(s.rate_limit_per_minute, Some(600));
        assert_eq!(s.access_level("user_bob", "prod_mockproduct1"), Some(AccessLevel::Customer));
        assert_eq!(s.access_level("carol", "exp_mockexperienc1"), Some(AccessLevel::Admin));
        assert_eq!(s.jwks().unwrap(), MockState::default().jwks().unwrap());
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.toml");
        std::fs::write(&path, "[[users]]\nid = 5\n").unwrap();
        let e = MockState::load(&path).unwrap_err().to_string();
        assert!(e.contains("state.toml"), "{e}");
        assert!(e.contains("line 2"), "{e}");
        let e = MockState::load(&dir.path().join("missing.toml")).unwrap_err().to_string();
        assert!(e.starts_with("reading state file"), "{e}");
    }
}
