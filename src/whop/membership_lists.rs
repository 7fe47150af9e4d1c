//! The legacy membership lists (SPEC §1): v2 `GET /api/v2/memberships`, filtered by user,
//! product and validity, and v5 `GET /api/v5/company/memberships`, which filters by product
//! and validity but not by user, so the user is looked for page by page.

use std::time::Instant;

use serde::Deserialize;

use super::client::{WhopClient, WhopEndpoint, segment};
use super::error::WhopError;
use super::types::IdRef;

/// The largest page Whop serves.
const PER: usize = 50;
/// Pages read at most for one decision; the per-10 s budgets stop a walk well before this.
const MAX_PAGES: u64 = 100;

#[derive(Debug, Deserialize)]
struct ListPage {
    data: Vec<Listed>,
    #[serde(default)]
    pagination: Option<Pagination>,
}

/// v2 says `total_page`, v5 `total_pages` and `next_page`.
#[derive(Debug, Deserialize)]
struct Pagination {
    #[serde(default)]
    total_page: Option<u64>,
    #[serde(default)]
    total_pages: Option<u64>,
    #[serde(default)]
    next_page: Option<u64>,
}

/// One listed membership: v2 names product and user as `product`/`user` (an id, or an object
/// with one), v5 as `product_id`/`user_id`.
#[derive(Debug, Deserialize)]
struct Listed {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    valid: Option<bool>,
    #[serde(default)]
    product: Option<IdRef>,
    #[serde(default)]
    product_id: Option<String>,
    #[serde(default)]
    user: Option<IdRef>,
    #[serde(default)]
    user_id: Option<String>,
}

impl Listed {
    /// A valid membership of `product` held by `user`: every fact checked here, whatever the
    /// filters asked, so a filter Whop ignored cannot let anyone in.
    fn grants(&self, user: &str, product: &str) -> bool {
        let product_is =
            self.product_id.as_deref() == Some(product) || self.product.as_ref().is_some_and(|p| p.id() == product);
        let user_is = self.user_id.as_deref() == Some(user) || self.user.as_ref().is_some_and(|u| u.id() == user);
        self.valid == Some(true) && product_is && user_is
    }
}

impl Pagination {
    /// The page after `page`, if the answer says there is one.
    fn after(&self, page: u64) -> Option<u64> {
        let total = self.total_pages.or(self.total_page).unwrap_or(0);
        let next = self.next_page.or((page < total).then_some(page + 1))?;
        (next > page).then_some(next)
    }
}

/// Which list to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum List {
    V2,
    V5,
}

impl WhopClient {
    /// The id of a valid v2-listed membership of `product_id` held by `user_id`, if any.
    pub async fn valid_membership_v2(&self, user_id: &str, product_id: &str) -> Result<Option<String>, WhopError> {
        self.find_valid(List::V2, user_id, product_id).await
    }

    /// The id of a valid v5-listed membership of `product_id` held by `user_id`, if any. v5
    /// cannot filter by user: this reads the product's valid memberships until it meets one
    /// of the user's, one call per page of 50.
    pub async fn valid_membership_v5(&self, user_id: &str, product_id: &str) -> Result<Option<String>, WhopError> {
        self.find_valid(List::V5, user_id, product_id).await
    }

    async fn find_valid(&self, list: List, user_id: &str, product_id: &str) -> Result<Option<String>, WhopError> {
        let deadline: Instant = self.deadline();
        let mut page = 1;
        while page <= MAX_PAGES {
            let (endpoint, path) = match list {
                List::V2 => (
                    WhopEndpoint::MembershipsV2,
                    format!(
                        "/api/v2/memberships?user_id={}&product_id={}&valid=true&per={PER}&page={page}",
                        segment(user_id),
                        segment(product_id)
                    ),
                ),
                List::V5 => (
                    WhopEndpoint::MembershipsV5,
                    format!(
                        "/api/v5/company/memberships?valid=true&product_id={}&per={PER}&page={page}",
                        segment(product_id)
                    ),
                ),
            };
            let answer: ListPage = match self.get_by(endpoint, &path, deadline).await {
                Ok(answer) => answer,
                Err(WhopError::NotFound) => return Ok(None),
                Err(e) => return Err(e),
            };
            if let Some(found) = answer.data.iter().find(|m| m.grants(user_id, product_id)) {
                return Ok(Some(found.id.clone().unwrap_or_default()));
            }
            // A short page is the last, whatever the pagination says.
            let next = answer.pagination.as_ref().and_then(|p| p.after(page));
            match next {
                Some(next) if answer.data.len() >= PER => page = next,
                _ => return Ok(None),
            }
        }
        Err(WhopError::Decode(format!("the membership list went on past {MAX_PAGES} pages without the user")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(json: &str) -> Listed {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn every_fact_of_a_listed_membership_is_checked() {
        let v2 = listed(r#"{"id":"mem_1","product":"prod_a","user":"user_a","valid":true,"status":"active"}"#);
        assert!(v2.grants("user_a", "prod_a"));
        assert!(!v2.grants("user_b", "prod_a"), "another user's membership");
        assert!(!v2.grants("user_a", "prod_b"), "another product's membership");
        let nested = listed(r#"{"id":"mem_1","product":{"id":"prod_a"},"user":{"id":"user_a"},"valid":true}"#);
        assert!(nested.grants("user_a", "prod_a"));
        let v5 = listed(r#"{"id":"mem_1","product_id":"prod_a","user_id":"user_a","valid":true}"#);
        assert!(v5.grants("user_a", "prod_a"));
        let invalid = listed(r#"{"id":"mem_1","product_id":"prod_a","user_id":"user_a","valid":false}"#);
        assert!(!invalid.grants("user_a", "prod_a"));
        let unsaid = listed(r#"{"id":"mem_1","product_id":"prod_a","user_id":"user_a","status":"active"}"#);
        assert!(!unsaid.grants("user_a", "prod_a"), "validity must be stated");
    }

    #[test]
    fn the_next_page_is_read_from_either_vintage() {
        let p = |json: &str| serde_json::from_str::<Pagination>(json).unwrap();
        assert_eq!(p(r#"{"current_page":1,"total_page":3}"#).after(1), Some(2));
        assert_eq!(p(r#"{"current_page":3,"total_page":3}"#).after(3), None);
        assert_eq!(p(r#"{"total_pages":2,"next_page":2,"prev_page":null}"#).after(1), Some(2));
        assert_eq!(p(r#"{"total_pages":2,"next_page":null}"#).after(2), None);
        assert_eq!(p(r#"{"next_page":1}"#).after(1), None, "a page that points back is the end");
    }
}
