//! What each `whop.access_api` can judge, decided from Whop's docs (SPEC §1), in one place:
//! `whopgate check` and start-up refuse a rule its backend cannot judge, with these words,
//! instead of giving a silent wrong answer.
//!
//! | access_api | `biz_…` | `prod_…` | `exp_…` | `access_level = "admin"` |
//! | --- | --- | --- | --- | --- |
//! | `check_access` | yes | yes | yes | yes |
//! | `members` | yes | no | no | yes |
//! | `memberships_v2`, `memberships_v5` | no | yes | no | no |

use crate::config::{AccessApi, AccessLevel};

/// Why a backend cannot judge part of a rule, and what would work instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unjudgeable {
    /// What is wrong, naming the resource or level and the API.
    pub why: String,
    /// What would work.
    pub instead: String,
}

/// Can `api` tell whether a user holds `resource`?
pub fn judges_resource(api: AccessApi, resource: &str) -> Result<(), Unjudgeable> {
    let kind = resource.split_once('_').map_or("", |(kind, _)| kind);
    let reason = match (api, kind) {
        (AccessApi::CheckAccess, _) | (AccessApi::Members, "biz") => return Ok(()),
        (AccessApi::MembershipsV2 | AccessApi::MembershipsV5, "prod") => return Ok(()),
        (AccessApi::Members, "prod") => (
            "a member record is per company and does not say which products the member holds",
            "require the company (`biz_…`) instead, or use `access_api = \"check_access\"`, which judges products",
        ),
        (AccessApi::Members, _) => (
            "a member record is per company and says nothing about experiences",
            "require the company (`biz_…`) instead, or use `access_api = \"check_access\"`, which judges experiences",
        ),
        (_, "biz") => (
            "a membership list answers per product, not per company",
            "require the company's products (`prod_…`) instead, or use `access_api = \"members\"` or \"check_access\"",
        ),
        (_, _) => (
            "a membership list knows products, not experiences",
            "require the products (`prod_…`) that grant the experience, or use `access_api = \"check_access\"`",
        ),
    };
    Err(Unjudgeable {
        why: format!("`{resource}` cannot be judged with `whop.access_api = \"{api}\"`: {}", reason.0),
        instead: reason.1.to_owned(),
    })
}

/// Can `api` tell whether a user holds `level`?
pub fn judges_level(api: AccessApi, level: AccessLevel) -> Result<(), Unjudgeable> {
    match (api, level) {
        (AccessApi::MembershipsV2 | AccessApi::MembershipsV5, AccessLevel::Admin) => Err(Unjudgeable {
            why: format!(
                "`access_level = \"admin\"` cannot be judged with `whop.access_api = \"{api}\"`: membership lists do not say who is a team member"
            ),
            instead: "use `access_api = \"members\"` with a company (`biz_…`), or \"check_access\"".to_owned(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_in_the_docs_holds() {
        let kinds = ["biz_a", "prod_a", "exp_a"];
        let expect = [
            (AccessApi::CheckAccess, [true, true, true], true),
            (AccessApi::Members, [true, false, false], true),
            (AccessApi::MembershipsV2, [false, true, false], false),
            (AccessApi::MembershipsV5, [false, true, false], false),
        ];
        for (api, resources, admin) in expect {
            for (resource, ok) in kinds.iter().zip(resources) {
                assert_eq!(judges_resource(api, resource).is_ok(), ok, "{api} {resource}");
            }
            assert_eq!(judges_level(api, AccessLevel::Admin).is_ok(), admin, "{api} admin");
            assert!(judges_level(api, AccessLevel::Customer).is_ok());
        }
        assert_eq!(AccessApi::ALL.len(), expect.len(), "every API is in the table");
    }
}
