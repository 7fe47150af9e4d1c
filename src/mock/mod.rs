//! A local stand-in for the Whop API, the way stripe-mock serves Stripe users: whopgate's
//! integration tests, `whopgate demo` and users' own CI run against it.
//!
//! This first part is the mock's world: the state it answers from, and the ES256 keys that
//! sign its user tokens.
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
//! rate_limit_per_minute = 600       # real 429s past N calls/min per endpoint kind and API key; off when absent
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
//! # [oauth]                         # reserved for the OAuth endpoints (a later task)
//! ```
//!
//! The built-in state ([`MockState::default`]; `GET /_mock/state` prints it) is this example
//! without the rate limit and the `[[access]]` override, and with four users: `user_alice`
//! (membership `mem_alice00000001`, active, `MOCK-ALICE-LICENSE`), `user_bob` (nothing),
//! `user_carol` (admin of the company) and `user_dave` (membership `mem_dave000000001`,
//! canceled, `MOCK-DAVE-LICENSE`); a second product `prod_mockproduct2` has no memberships.
//! Tokens minted from a state whose keys are given as PEM (or left to the default key)
//! verify against any mock started with the same state, across restarts.
//!
//! # User tokens
//!
//! ES256, header `{"alg":"ES256","typ":"JWT","kid":…}`, claims `iss = "urn:whopcom:exp-proxy"`,
//! `sub` = the user id, `aud` = the app id (a single string), `iat`, `exp` (one hour later).
//! Any user id can be minted, known to the state or not.
//!

#![warn(missing_docs)]

mod error;
mod keys;
mod state;

pub use error::MockError;
pub use keys::{Audience, DEFAULT_KEY_PEM, DEFAULT_KID, DEFAULT_TOKEN_TTL, ISSUER, TokenOptions};
pub use state::{
    AccessGrant, AccessLevel, ApiKey, Company, DEFAULT_API_KEY, DEFAULT_APP_ID, DEFAULT_COMPANY_ID,
    DEFAULT_CREATED_AT, Experience, Membership, MembershipShape, MembershipStatus, MockState,
    OAuthState, Product, Resource, SigningKey, User,
};

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
            serde::de::Error::custom(format!(
                "{e}: expected a duration like \"250ms\" or \"30s\", got {text:?}"
            ))
        })
    }

    /// The same for `Option<Duration>`.
    pub(crate) mod option {
        use std::time::Duration;

        use serde::{Deserialize, Deserializer, Serializer};

        pub(crate) fn serialize<S: Serializer>(
            d: &Option<Duration>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<Duration>, D::Error> {
            #[derive(Deserialize)]
            struct Wrapped(#[serde(with = "super")] Duration);
            Ok(Option::<Wrapped>::deserialize(d)?.map(|Wrapped(d)| d))
        }
    }
}
