//! The v1 member list, `GET /api/v1/members?company_id=&user_ids[]=` (SPEC §1): the company
//! member record of one user, if there is one.

use serde::Deserialize;

use super::client::{WhopClient, WhopEndpoint, segment};
use super::error::WhopError;
use super::types::IdRef;

/// Pages followed at most when Whop ignores the `user_ids[]` filter; beyond, no answer.
const MAX_PAGES: usize = 20;

/// A user's member record in a company, as Whop says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// `admin`, `customer` or `no_access`, as Whop spells it.
    pub access_level: String,
    /// `joined`, `drafted` or `left`, as Whop spells it.
    pub status: String,
}

#[derive(Debug, Deserialize)]
struct MembersPage {
    data: Vec<RawMember>,
    #[serde(default)]
    page_info: Option<PageInfo>,
}

#[derive(Debug, Deserialize)]
struct RawMember {
    #[serde(default)]
    access_level: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    user: Option<IdRef>,
    #[serde(default)]
    user_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PageInfo {
    #[serde(default)]
    end_cursor: Option<String>,
    #[serde(default)]
    has_next_page: bool,
}

impl RawMember {
    fn is_of(&self, user_id: &str) -> bool {
        self.user_id.as_deref() == Some(user_id) || self.user.as_ref().is_some_and(|u| u.id() == user_id)
    }
}

impl WhopClient {
    /// `user_id`'s member record in `company_id`; `None` when the user is not a member (or
    /// Whop does not know the user). A record is taken only when it names the user asked
    /// about, so an ignored filter cannot lend one user another's record.
    pub async fn member(&self, company_id: &str, user_id: &str) -> Result<Option<Member>, WhopError> {
        let deadline = self.deadline();
        let mut after: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut path =
                format!("/api/v1/members?company_id={}&user_ids%5B%5D={}", segment(company_id), segment(user_id));
            if let Some(cursor) = &after {
                path.push_str("&after=");
                path.push_str(&segment(cursor));
            }
            let page: MembersPage = match self.get_by(WhopEndpoint::Members, &path, deadline).await {
                Ok(page) => page,
                Err(WhopError::NotFound) => return Ok(None),
                Err(e) => return Err(e),
            };
            if let Some(found) = page.data.into_iter().find(|m| m.is_of(user_id)) {
                return Ok(Some(Member {
                    access_level: found.access_level.unwrap_or_default(),
                    status: found.status.unwrap_or_default(),
                }));
            }
            match page.page_info {
                Some(PageInfo { has_next_page: true, end_cursor: Some(cursor) }) if Some(&cursor) != after.as_ref() => {
                    after = Some(cursor);
                }
                _ => return Ok(None),
            }
        }
        Err(WhopError::Decode(format!("the member list went on past {MAX_PAGES} pages without the user")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_matched_by_user() {
        let page: MembersPage = serde_json::from_str(
            r#"{"data":[{"id":"mber_1","access_level":"customer","status":"joined","user":{"id":"user_a","name":"A"}},
                       {"id":"mber_2","access_level":"admin","status":"joined","user_id":"user_b"}],
                "page_info":{"end_cursor":"c1","has_next_page":true}}"#,
        )
        .unwrap();
        assert!(page.data[0].is_of("user_a"));
        assert!(!page.data[0].is_of("user_b"));
        assert!(page.data[1].is_of("user_b"));
        assert!(page.page_info.is_some_and(|p| p.has_next_page));
        let bare: MembersPage = serde_json::from_str(r#"{"data":[{"user":null}]}"#).unwrap();
        assert!(!bare.data[0].is_of("user_a"));
    }
}
