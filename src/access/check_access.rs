//! `whop.access_api = "check_access"`: the v1 access check,
//! `GET /api/v1/users/{user_id}/access/{resource_id}` (SPEC §1). Judges products, experiences
//! and companies, at both levels.

use std::sync::Arc;

use super::backend::{AccessBackend, Decided};
use crate::whop::WhopClient;

/// The v1 access check: Whop's own answer, `no_access`, `customer` or `admin`.
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
