//! Where a decision comes from: an [`AccessBackend`] maps (user, resource) to the access the
//! user holds, and nothing else. Caching, coalescing, refresh-ahead, stale-if-error and
//! invalidation are the [`super::AccessCache`]'s, in front of every backend alike.
//!
//! A new source of decisions (another Whop API, a local membership mirror) is a new
//! implementation of this trait, and a line in [`backend_for`]; what it can judge goes in
//! [`super::scope`]. The cache's semantics do not change with it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::check_access::CheckAccess;
use super::members::Members;
use super::membership_list::MembershipList;
use crate::config::AccessApi;
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

/// The backend `whop.access_api` names, calling Whop through `client`.
pub fn backend_for(api: AccessApi, client: Arc<WhopClient>) -> Arc<dyn AccessBackend> {
    match api {
        AccessApi::CheckAccess => Arc::new(CheckAccess::new(client)),
        AccessApi::Members => Arc::new(Members::new(client)),
        AccessApi::MembershipsV2 => Arc::new(MembershipList::v2(client)),
        AccessApi::MembershipsV5 => Arc::new(MembershipList::v5(client)),
    }
}
