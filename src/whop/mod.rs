//! The Whop API: a small typed client for the calls the gate makes (SPEC §1), its rate budget,
//! and its errors.
//!
//! Every call carries `Authorization: Bearer <api_key>` and `Api-Version-Date`; `whop.timeout`
//! bounds a call including one retry on a connection error or 5xx; a 429 pauses that endpoint for
//! as long as Whop asks; `whop.rate_limit_per_minute` is a hard budget per endpoint, beyond which
//! no call is made at all.

mod budget;
mod client;
mod error;
mod types;

pub use budget::CallBudget;
pub use client::{Endpoint, WhopClient};
pub use error::WhopError;
pub use types::{Access, Membership};
