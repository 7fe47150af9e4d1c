//! The closed sets of words a config may use, each with its TOML spelling.

use std::fmt;

/// Declares a config enum with its TOML spellings, `as_str`, `ALL`, `parse` and `Display`.
macro_rules! config_enum {
    (
        $(#[$meta:meta])*
        $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in the order the documentation lists them.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The TOML spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }

            /// The value spelt `text` in TOML (exact, lowercase spelling).
            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $( $text => Some($name::$variant), )+
                    _ => None,
                }
            }

            /// The TOML spellings, for messages.
            pub(crate) fn spellings() -> Vec<&'static str> {
                Self::ALL.iter().map(|v| v.as_str()).collect()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

config_enum! {
    /// `log_format`: how log lines are written.
    #[derive(Default)]
    LogFormat {
        /// Human-readable lines (the default).
        #[default]
        Text = "text",
        /// One JSON object per line, for log shippers.
        Json = "json",
    }
}

config_enum! {
    /// `whop.access_api`: which Whop API answers "may this user use this resource?".
    #[derive(Default)]
    AccessApi {
        /// `GET /api/v1/users/{user_id}/access/{resource_id}` (the default; any resource kind).
        #[default]
        CheckAccess = "check_access",
        /// v1 Members of a company (`biz_…` resources).
        Members = "members",
        /// Legacy v2 membership list (`prod_…` resources).
        MembershipsV2 = "memberships_v2",
        /// Legacy v5 company membership list (`prod_…` resources).
        MembershipsV5 = "memberships_v5",
    }
}

config_enum! {
    /// An entry of `identity.sources`: a way to find out who is calling.
    SourceKind {
        /// The `x-whop-user-token` JWT that Whop's app proxy adds.
        UserToken = "user_token",
        /// whopgate's own session cookie, set after "Sign in with Whop".
        Session = "session",
        /// A Whop software license key in a header.
        LicenseKey = "license_key",
        /// A fixed identity for local development.
        Dev = "dev",
    }
}

config_enum! {
    /// A Whop membership status (SPEC §1).
    MembershipStatus {
        /// In a free trial.
        Trialing = "trialing",
        /// Paid and current.
        Active = "active",
        /// A payment failed; Whop is retrying.
        PastDue = "past_due",
        /// A one-time purchase that has been fulfilled.
        Completed = "completed",
        /// Cancelled.
        Canceled = "canceled",
        /// Ran out.
        Expired = "expired",
        /// A payment dispute or similar is open.
        Unresolved = "unresolved",
        /// Created but never started.
        Drafted = "drafted",
        /// Cancelled at the end of the current period, still valid until then.
        Canceling = "canceling",
    }
}

config_enum! {
    /// `access_level` of a route or of the dev identity.
    #[derive(Default)]
    AccessLevel {
        /// Holds a valid membership (`has_access`); admins pass too. The default.
        #[default]
        Customer = "customer",
        /// A team member of the company.
        Admin = "admin",
    }
}

config_enum! {
    /// `mode` of a route: how denials are answered.
    #[derive(Default)]
    RouteMode {
        /// Browser-style for navigations that prefer HTML, API-style otherwise. The default.
        #[default]
        Auto = "auto",
        /// Always browser-style: redirects and HTML pages.
        Browser = "browser",
        /// Always API-style: status codes and JSON, never a redirect.
        Api = "api",
    }
}

config_enum! {
    /// `on_whop_error` of a route: what to do when access cannot be decided.
    #[derive(Default)]
    OnWhopError {
        /// Answer 503 with `Retry-After` (fail closed). The default.
        #[default]
        Deny = "deny",
        /// Let the request through (fail open).
        Allow = "allow",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_enum_round_trips_its_spelling() {
        fn check<T: Copy + PartialEq + fmt::Debug + fmt::Display>(
            all: &[T],
            as_str: fn(T) -> &'static str,
            parse: fn(&str) -> Option<T>,
        ) {
            for &v in all {
                assert_eq!(parse(as_str(v)), Some(v));
                assert_eq!(v.to_string(), as_str(v));
            }
        }
        check(LogFormat::ALL, LogFormat::as_str, LogFormat::parse);
        check(AccessApi::ALL, AccessApi::as_str, AccessApi::parse);
        check(SourceKind::ALL, SourceKind::as_str, SourceKind::parse);
        check(MembershipStatus::ALL, MembershipStatus::as_str, MembershipStatus::parse);
        check(AccessLevel::ALL, AccessLevel::as_str, AccessLevel::parse);
        check(RouteMode::ALL, RouteMode::as_str, RouteMode::parse);
        check(OnWhopError::ALL, OnWhopError::as_str, OnWhopError::parse);
    }

    #[test]
    fn spellings_are_the_contract() {
        assert_eq!(LogFormat::spellings(), ["text", "json"]);
        assert_eq!(AccessApi::spellings(), ["check_access", "members", "memberships_v2", "memberships_v5"]);
        assert_eq!(SourceKind::spellings(), ["user_token", "session", "license_key", "dev"]);
        assert_eq!(
            MembershipStatus::spellings(),
            [
                "trialing",
                "active",
                "past_due",
                "completed",
                "canceled",
                "expired",
                "unresolved",
                "drafted",
                "canceling"
            ]
        );
        assert_eq!(AccessLevel::spellings(), ["customer", "admin"]);
        assert_eq!(RouteMode::spellings(), ["auto", "browser", "api"]);
        assert_eq!(OnWhopError::spellings(), ["deny", "allow"]);
    }

    #[test]
    fn parsing_is_exact() {
        assert_eq!(RouteMode::parse("API"), None);
        assert_eq!(AccessLevel::parse(" admin"), None);
        assert_eq!(OnWhopError::parse(""), None);
    }

    #[test]
    fn defaults_follow_the_spec() {
        assert_eq!(LogFormat::default(), LogFormat::Text);
        assert_eq!(AccessApi::default(), AccessApi::CheckAccess);
        assert_eq!(AccessLevel::default(), AccessLevel::Customer);
        assert_eq!(RouteMode::default(), RouteMode::Auto);
        assert_eq!(OnWhopError::default(), OnWhopError::Deny);
    }
}
