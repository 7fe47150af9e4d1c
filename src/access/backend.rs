//! Where a decision comes from: an [`AccessBackend`] maps (user, resource) to the access the
//! user holds, and nothing else. Caching, coalescing, refresh-ahead, stale-if-error and
//! invalidation are the [`super::AccessCache`]'s, in front of every backend alike.
//!
//! A new source of decisions (another Whop API, a local membership mirror) is a new
//! implementation of this trait; the cache's semantics do not change with it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::whop::{Access, WhopClient, WhopError};

/// The future an [`AccessBackend`] answers with.
pub type Decided<'a> = Pin<Box<dyn Future<Output = Result<Access, WhopError>> + Send + 'a>>;

/// Answers "what access does `user` hold on `resource`?" for the decision cache.
///
/// An unknown user or resource is [`Access::NoAccess`], not an error: errors are for when the
/// answer could not be had (timeouts, 5xx, 429s, a spent budget), which the cache may then
/// cover with a stale answer.
pub trait AccessBackend: Send + Sync + std::fmt::Debug {
    /// The access `user` holds on `resource`, asked now (never from a cache of its own).
    fn decide<'a>(&'a self, user: &'a str, resource: &'a str) -> Decided<'a>;
}

/// `whop.access_api = "check_access"`: the v1 access check,
/// `GET /api/v1/users/{user_id}/access/{resource_id}` (SPEC §1).
#[derive(Debug, Clone)]
pub struct CheckAccess {
    client: Arc<WhopClient>,
}

impl CheckAccess {
    /// The access check through `client`.
    pub fn new(client: Arc<WhopClient>) -> Self {
        Self { client }
    }
}

impl AccessBackend for CheckAccess {
    fn decide<'a>(&'a self, user: &'a str, resource: &'a str) -> Decided<'a> {
        Box::pin(self.client.check_access(user, resource))
    }
}
