//! `whop.access_api = "members"`: the v1 member list of a company,
//! `GET /api/v1/members?company_id=&user_ids[]=` (SPEC §1). Judges companies (`biz_…`) only: a
//! member record is per company and does not say which product a member holds.

use std::sync::Arc;

use super::backend::{AccessBackend, Decided};
use crate::whop::{Access, Member, WhopClient};

/// Decides from the user's member record in the rule's company.
#[derive(Debug, Clone)]
pub struct Members {
    client: Arc<WhopClient>,
}

impl Members {
    /// The member list through `client`.
    pub fn new(client: Arc<WhopClient>) -> Self {
        Self { client }
    }
}

impl AccessBackend for Members {
    fn decide<'a>(&'a self, user: &'a str, resource: &'a str) -> Decided<'a> {
        Box::pin(async move {
            // `check` refuses other kinds; should one reach here, it is asked nothing and let
            // in nowhere.
            if !resource.starts_with("biz_") {
                return Ok(Access::NoAccess);
            }
            Ok(self.client.member(resource, user).await?.as_ref().map_or(Access::NoAccess, access_of))
        })
    }
}

/// A member's access: `access_level` as Whop says it, but only while the member has `joined`
/// (`left` and `drafted` members, and any status Whop may add, hold none).
fn access_of(member: &Member) -> Access {
    match (member.status.as_str(), member.access_level.as_str()) {
        ("joined", "admin") => Access::Admin,
        ("joined", "customer") => Access::Customer,
        _ => Access::NoAccess,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_holds_what_whop_says_while_joined() {
        let m = |status: &str, level: &str| Member { access_level: level.into(), status: status.into() };
        assert_eq!(access_of(&m("joined", "admin")), Access::Admin);
        assert_eq!(access_of(&m("joined", "customer")), Access::Customer);
        assert_eq!(access_of(&m("joined", "no_access")), Access::NoAccess);
        assert_eq!(access_of(&m("left", "customer")), Access::NoAccess, "left overrides the level");
        assert_eq!(access_of(&m("left", "admin")), Access::NoAccess);
        assert_eq!(access_of(&m("drafted", "customer")), Access::NoAccess);
        assert_eq!(access_of(&m("paused", "customer")), Access::NoAccess, "an unknown status grants nothing");
        assert_eq!(access_of(&m("joined", "owner")), Access::NoAccess, "an unknown level grants nothing");
    }
}
