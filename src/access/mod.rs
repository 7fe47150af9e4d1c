//! Access decisions: does user U have access to resource R? Asked of an [`AccessBackend`] (one
//! per `whop.access_api`: [`CheckAccess`], [`Members`], [`MembershipList`] v2/v5) through
//! [`AccessCache`], so a busy app costs Whop almost no calls (SPEC §4, "Decision"). What each
//! backend can judge is in [`scope`]. Under the cache a [`DecisionStore`] shared by replicas may sit,
//! asked on misses only. The cache's semantics are the same whatever the backend and store:
//!
//! - The key is exactly (user id, resource id).
//! - Granted decisions live `cache.ttl`, refusals `cache.negative_ttl`.
//! - Concurrent misses for one key make one Whop call; the others wait for its answer.
//! - An entry in use near the end of its life is refreshed in the background, so steady traffic
//!   never waits on Whop.
//! - While Whop fails (timeout, 5xx, 429, budget spent), an expired entry is served for up to
//!   `cache.stale_if_error`.
//! - One user's entries can be dropped (a webhook said their access changed) without scanning;
//!   that user's fetches in flight then answer but do not cache, and nobody else's are touched.
//! - Each thread keeps its own copies of the decisions it served (module `near`), served only while
//!   the shared entry they came from is neither changed nor due for refresh, so the warm path
//!   touches no memory other cores write and revocation stays exact.

mod backend;
mod cache;
mod check_access;
mod members;
mod membership_list;
mod near;
mod redis_store;
pub mod scope;
mod store;

pub use backend::backend_for;
pub use cache::{AccessCache, CacheSettings};
#[cfg(feature = "bench-internals")]
pub use check_access::CheckAccess;
pub use redis_store::{Invalidation, RedisStore};
pub use store::DecisionStore;
