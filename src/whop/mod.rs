//! The Whop API: a small typed client for the calls the gate makes (SPEC §1): the v1 access
//! check and membership, the v1 member list, the v2/v5 membership lists; its rate budgets, and
//! its errors.
//!
//! Every call carries `Authorization: Bearer <api_key>` and `Api-Version-Date`; `whop.timeout`
//! bounds a call including one retry on a connection error or 5xx; a 429 pauses that endpoint for
//! as long as Whop asks (at least 60 s for v5); `whop.rate_limit_per_minute` is a hard budget per
//! v1 endpoint, and the legacy lists have fixed ones below Whop's per-10 s limits, beyond which no
//! call is made at all.

mod budget;
mod client;
mod error;
mod members;
mod membership_lists;
mod types;

pub use budget::{Paused, SharedBudget, SharedTake, Taken};
pub use client::WhopClient;
pub use error::WhopError;
pub use members::Member;
pub use types::Access;
