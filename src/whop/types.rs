//! The Whop API shapes whopgate reads (SPEC §1). Unknown fields are ignored: Whop adds fields.

use serde::Deserialize;

use crate::config::{AccessLevel, MembershipStatus};

/// What Whop says a user holds on a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// No valid membership and not on the team.
    NoAccess,
    /// Holds a valid membership.
    Customer,
    /// A team member of the company.
    Admin,
}

impl Access {
    /// Is this enough for a rule that requires `level`?
    pub fn satisfies(self, level: AccessLevel) -> bool {
        match level {
            AccessLevel::Customer => matches!(self, Access::Customer | Access::Admin),
            AccessLevel::Admin => self == Access::Admin,
        }
    }

    /// `no_access`, `customer` or `admin`, as Whop and `x-whop-access-level` spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::NoAccess => "no_access",
            Access::Customer => "customer",
            Access::Admin => "admin",
        }
    }

    /// [`Access::as_str`] as the `x-whop-access-level` value, made at compile time.
    pub fn header_value(self) -> http::HeaderValue {
        const NO_ACCESS: http::HeaderValue = http::HeaderValue::from_static("no_access");
        const CUSTOMER: http::HeaderValue = http::HeaderValue::from_static("customer");
        const ADMIN: http::HeaderValue = http::HeaderValue::from_static("admin");
        match self {
            Access::NoAccess => NO_ACCESS,
            Access::Customer => CUSTOMER,
            Access::Admin => ADMIN,
        }
    }
}

/// `GET /api/v1/users/{user_id}/access/{resource_id}`
#[derive(Debug, Deserialize)]
pub(crate) struct AccessResponse {
    pub has_access: bool,
    #[serde(default)]
    pub access_level: Option<String>,
}

impl AccessResponse {
    /// An unknown level with `has_access` is read as customer: access, but not admin.
    pub fn access(&self) -> Access {
        match (self.has_access, self.access_level.as_deref()) {
            (true, Some("admin")) => Access::Admin,
            (true, _) => Access::Customer,
            (false, _) => Access::NoAccess,
        }
    }
}

/// An id as the API versions give it: a bare string, or an object `{"id": …}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum IdRef {
    /// `"user_…"`
    Id(String),
    /// `{"id": "user_…", …}`
    Object {
        /// The id.
        id: String,
    },
}

impl IdRef {
    /// The id, however it was given.
    pub fn id(&self) -> &str {
        match self {
            IdRef::Id(id) | IdRef::Object { id } => id,
        }
    }
}

/// `{"id": …}` as older API versions nest it.
#[derive(Debug, Deserialize)]
struct Nested {
    id: String,
}

/// A membership (`GET /api/v1/memberships/{id or license key}`), flat or nested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// `mem_…`
    pub id: String,
    /// Its status; `None` when Whop sent one we do not know.
    pub status: Option<MembershipStatus>,
    /// The status as Whop spelt it.
    pub status_text: String,
    /// The product it is for.
    pub product_id: Option<String>,
    /// The user who holds it.
    pub user_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawMembership {
    id: String,
    status: String,
    #[serde(default)]
    product_id: Option<String>,
    #[serde(default)]
    product: Option<Nested>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    user: Option<Nested>,
}

impl<'de> Deserialize<'de> for Membership {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = RawMembership::deserialize(deserializer)?;
        Ok(Membership {
            id: raw.id,
            status: MembershipStatus::parse(&raw.status),
            status_text: raw.status,
            product_id: raw.product_id.or(raw.product.map(|p| p.id)),
            user_id: raw.user_id.or(raw.user.map(|u| u.id)),
        })
    }
}

/// An error body: `{"error": {"code" | "type": …, "message": …}}` (v1), or the legacy
/// `{"message": …}` (v2, v5).
pub(crate) struct ErrorBody;

impl ErrorBody {
    /// The message in `body`, if it has one of the shapes.
    pub fn message_in(body: &str) -> Option<String> {
        let value: serde_json::Value = serde_json::from_str(body).ok()?;
        let message = value.pointer("/error/message").or_else(|| value.get("message"))?;
        message.as_str().map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_access_levels_header_value_is_its_spelling() {
        for access in [Access::NoAccess, Access::Customer, Access::Admin] {
            assert_eq!(access.header_value(), access.as_str());
        }
    }

    #[test]
    fn access_levels() {
        let r: AccessResponse = serde_json::from_str(r#"{"has_access":true,"access_level":"admin"}"#).unwrap();
        assert_eq!(r.access(), Access::Admin);
        assert!(Access::Admin.satisfies(AccessLevel::Customer));
        assert!(!Access::Customer.satisfies(AccessLevel::Admin));
        assert!(!Access::NoAccess.satisfies(AccessLevel::Customer));
        let r: AccessResponse = serde_json::from_str(r#"{"has_access":false,"access_level":"admin"}"#).unwrap();
        assert_eq!(r.access(), Access::NoAccess);
    }

    #[test]
    fn error_messages_of_every_vintage() {
        let v1 = r#"{"error":{"type":"rate_limit_exceeded","message":"Try again in 12 seconds."}}"#;
        assert_eq!(ErrorBody::message_in(v1).as_deref(), Some("Try again in 12 seconds."));
        let legacy = r#"{"message":"You are being rate limited"}"#;
        assert_eq!(ErrorBody::message_in(legacy).as_deref(), Some("You are being rate limited"));
        assert_eq!(ErrorBody::message_in("<html>"), None);
        assert_eq!(ErrorBody::message_in(r#"{"error":{"code":"x"}}"#), None);
    }

    #[test]
    fn membership_flat_and_nested() {
        let flat: Membership =
            serde_json::from_str(r#"{"id":"mem_1","status":"active","product_id":"prod_1","user_id":"user_1","x":1}"#)
                .unwrap();
        let nested: Membership = serde_json::from_str(
            r#"{"id":"mem_1","status":"active","product":{"id":"prod_1"},"user":{"id":"user_1","username":"u"}}"#,
        )
        .unwrap();
        assert_eq!(flat, nested);
        assert_eq!(flat.status, Some(MembershipStatus::Active));
        let odd: Membership = serde_json::from_str(r#"{"id":"mem_2","status":"paused"}"#).unwrap();
        assert_eq!(odd.status, None);
        assert_eq!(odd.status_text, "paused");
    }
}
