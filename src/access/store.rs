//! What sits under the in-process decision cache: a [`DecisionStore`] that several replicas
//! share (Redis, `cache.redis_url`, comes next). The cache asks it only inside the one
//! coalesced fetch of a miss or a refresh, never on the warm path, and tells it what a backend
//! decided, so a cold key asked on several replicas costs about one Whop call.
//!
//! A store is a cache, not an authority: when it cannot answer (down, slow, empty) the backend
//! is asked, and a decision read from it keeps its age, so it is trusted no longer than its ttl
//! from when Whop gave it.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::whop::Access;

/// A decision found in the store, and how long ago a backend made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// What the user holds on the resource.
    pub access: Access,
    /// Time since the backend answered.
    pub age: Duration,
}

/// The future [`DecisionStore::get`] answers with.
pub type Found<'a> = Pin<Box<dyn Future<Output = Option<Stored>> + Send + 'a>>;
/// The future of a store write; a store that fails says so in its own logs and metrics.
pub type Written<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Who is to ask the backend about a key no replica has decided yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This replica: ask, then [`DecisionStore::put`] the answer (which releases the claim).
    Mine,
    /// Another replica is asking now: wait a little for its answer in the store.
    Theirs,
}

/// The future of [`DecisionStore::claim`].
pub type Claimed<'a> = Pin<Box<dyn Future<Output = Claim> + Send + 'a>>;

/// Decisions shared across replicas, under the in-process [`super::AccessCache`].
pub trait DecisionStore: Send + Sync + std::fmt::Debug {
    /// Claims the backend call for (`user`, `resource`) for at most `hold`, so that a cold key
    /// asked on several replicas at once costs one call. A store that cannot tell says
    /// [`Claim::Mine`]: every replica then asks, as without a store.
    fn claim<'a>(&'a self, _user: &'a str, _resource: &'a str, _hold: Duration) -> Claimed<'a> {
        Box::pin(std::future::ready(Claim::Mine))
    }

    /// The decision about (`user`, `resource`) some replica stored, if it is still held.
    /// `None` when the store does not know or cannot answer.
    fn get<'a>(&'a self, user: &'a str, resource: &'a str) -> Found<'a>;

    /// Keeps what a backend just decided for `ttl`.
    fn put<'a>(&'a self, user: &'a str, resource: &'a str, access: Access, ttl: Duration) -> Written<'a>;

    /// Drops every decision about `user` (their access changed), for every replica.
    fn forget_user<'a>(&'a self, user: &'a str) -> Written<'a>;
}
