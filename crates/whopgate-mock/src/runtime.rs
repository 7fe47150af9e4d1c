//! The live mock behind one listener: the current state and its parsed keys, faults, the call
//! log and the last `Api-Version-Date`. Every change goes through here, whether it comes from
//! the Rust handle or from the control API, so both behave the same.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::api::EndpointKind;
use super::calls::CallLog;
use super::error::MockError;
use super::faults::{Failure, Fault, FaultScope, FaultTable, RateLimiter};
use super::keys::{KeyRing, TokenOptions, generate_pem};
use super::oauth::{IssuedCode, OAuthStore};
use super::state::{AccessGrant, AccessLevel, Membership, MembershipStatus, MockState, SigningKey};

/// A resolved state with its keys parsed once.
pub(crate) struct World {
    pub state: MockState,
    pub keys: KeyRing,
}

impl World {
    pub(crate) fn new(state: MockState) -> Result<World, MockError> {
        let state = state.resolve()?;
        let keys = KeyRing::new(&state)?;
        Ok(World { state, keys })
    }
}

/// A poisoned lock only means a panic elsewhere (in a test); the data is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)).unwrap_or(0)
}

pub(crate) struct Inner {
    world: Mutex<World>,
    initial: MockState,
    faults: Mutex<FaultTable>,
    limiter: Mutex<RateLimiter>,
    calls: Mutex<CallLog>,
    api_version_date: Mutex<Option<String>>,
    oauth: Mutex<OAuthStore>,
    /// The mock's base URL (`http://IP:PORT`): the `iss` of id_tokens.
    pub issuer: String,
    pub started: Instant,
    next_membership: AtomicU64,
    /// Calls sleeping in a hang fault right now (tests check that they end with the client).
    pub hanging: AtomicUsize,
}

impl Inner {
    /// A mock serving `world` at `issuer` (its base URL, known once the port is bound).
    pub(crate) fn new(world: World, issuer: String) -> Inner {
        Inner {
            initial: world.state.clone(),
            world: Mutex::new(world),
            faults: Mutex::default(),
            limiter: Mutex::default(),
            calls: Mutex::default(),
            api_version_date: Mutex::default(),
            oauth: Mutex::default(),
            issuer,
            started: Instant::now(),
            next_membership: AtomicU64::new(1),
            hanging: AtomicUsize::new(0),
        }
    }

    /// Runs `f` on the current world (keep it short: requests wait on this lock).
    pub(crate) fn with_world<R>(&self, f: impl FnOnce(&World) -> R) -> R {
        f(&lock(&self.world))
    }

    /// Applies a change to a copy of the state and swaps it in only if the result is valid.
    fn update<R>(&self, f: impl FnOnce(&mut MockState) -> Result<R, MockError>) -> Result<R, MockError> {
        let mut world = lock(&self.world);
        let mut next = world.state.clone();
        let out = f(&mut next)?;
        *world = World::new(next)?;
        Ok(out)
    }

    pub(crate) fn state(&self) -> MockState {
        self.with_world(|w| w.state.clone())
    }

    pub(crate) fn replace_state(&self, state: MockState) -> Result<(), MockError> {
        let world = World::new(state)?;
        *lock(&self.world) = world;
        // Budgets counted against the old state's keys mean nothing now.
        lock(&self.limiter).clear();
        Ok(())
    }

    /// Back to the state the mock started with; faults, rate-limit budgets, calls, OAuth codes
    /// and tokens and the recorded `Api-Version-Date` cleared.
    pub(crate) fn reset(&self) -> Result<(), MockError> {
        self.replace_state(self.initial.clone())?;
        lock(&self.faults).clear_all();
        lock(&self.calls).reset();
        lock(&self.oauth).clear();
        *lock(&self.api_version_date) = None;
        Ok(())
    }

    /// Makes `/oauth/authorize` sign in this user (id or username) from now on; returns the id.
    pub(crate) fn set_login_as(&self, user: &str) -> Result<String, MockError> {
        self.update(|s| {
            let id = s.user(user).map(|u| u.id.clone()).ok_or_else(|| MockError::NotFound(format!("user {user:?}")))?;
            s.oauth.login_as = id.clone();
            Ok(id)
        })
    }

    pub(crate) fn set_login_page(&self, on: bool) -> Result<(), MockError> {
        self.update(|s| {
            s.oauth.login_page = on;
            Ok(())
        })
    }

    /// The OAuth codes and tokens (keep it short, and do not take the world lock meanwhile).
    pub(crate) fn oauth(&self) -> MutexGuard<'_, OAuthStore> {
        lock(&self.oauth)
    }

    /// The authorization codes issued since the start or the last reset, oldest first.
    pub(crate) fn issued_codes(&self) -> Vec<IssuedCode> {
        self.oauth().codes(Instant::now())
    }

    /// Sets (or with `None` removes) the access override of a user (id or username) on a
    /// resource.
    pub(crate) fn set_access(&self, user: &str, resource: &str, level: Option<AccessLevel>) -> Result<(), MockError> {
        self.update(|s| {
            let user_id =
                s.user(user).map(|u| u.id.clone()).ok_or_else(|| MockError::NotFound(format!("user {user:?}")))?;
            if s.resource(resource).is_none() {
                return Err(MockError::NotFound(format!(
                    "resource {resource:?} (no company, product or experience has this id)"
                )));
            }
            s.access.retain(|g| !(g.user_id == user_id && g.resource_id == resource));
            if let Some(access_level) = level {
                s.access.push(AccessGrant { user_id, resource_id: resource.to_owned(), access_level });
            }
            Ok(())
        })
    }

    /// Changes the status of a membership (by id or license key); `updated_at` becomes now.
    pub(crate) fn set_membership_status(&self, id: &str, status: MembershipStatus) -> Result<(), MockError> {
        self.update(|s| {
            let m = s
                .memberships
                .iter_mut()
                .find(|m| m.id == id || m.license_key.as_deref() == Some(id))
                .ok_or_else(|| MockError::NotFound(format!("membership {id:?}")))?;
            m.status = status;
            m.updated_at = Some(unix_now());
            Ok(())
        })
    }

    /// Adds a membership, or replaces the one with the same id.
    pub(crate) fn upsert_membership(&self, m: Membership) -> Result<(), MockError> {
        self.update(|s| {
            match s.memberships.iter_mut().find(|x| x.id == m.id) {
                Some(x) => *x = m,
                None => s.memberships.push(m),
            }
            Ok(())
        })
    }

    /// The control API's membership change: the given fields are merged into the membership
    /// named by `id` (or license key); an unknown or absent id creates one (`status` defaults
    /// to `active`, the id to a fresh `mem_…`). Returns the result.
    pub(crate) fn patch_membership(&self, patch: Value) -> Result<Membership, MockError> {
        let Value::Object(patch) = patch else {
            return Err(MockError::BadRequest("expected a JSON object with membership fields".into()));
        };
        self.update(|s| {
            let id = patch.get("id").and_then(Value::as_str);
            let existing =
                id.and_then(|id| s.memberships.iter().position(|m| m.id == id || m.license_key.as_deref() == Some(id)));
            let now = unix_now();
            let mut obj = match existing {
                Some(i) => match serde_json::to_value(&s.memberships[i]) {
                    Ok(Value::Object(o)) => o,
                    _ => serde_json::Map::new(),
                },
                None => {
                    let mut o = serde_json::Map::new();
                    let fresh = loop {
                        let n = self.next_membership.fetch_add(1, Ordering::Relaxed);
                        let candidate = format!("mem_mock{n:09}");
                        if s.membership(&candidate).is_none() {
                            break candidate;
                        }
                    };
                    o.insert("id".into(), Value::from(fresh));
                    o.insert("status".into(), Value::from("active"));
                    o.insert("created_at".into(), Value::from(now));
                    o
                }
            };
            for (k, v) in &patch {
                // A license key used to find the membership must not rename it.
                if k == "id" && existing.is_some() {
                    continue;
                }
                obj.insert(k.clone(), v.clone());
            }
            if existing.is_some() && !patch.contains_key("updated_at") {
                obj.insert("updated_at".into(), Value::from(now));
            }
            let m: Membership = serde_json::from_value(Value::Object(obj))
                .map_err(|e| MockError::BadRequest(format!("membership: {e}")))?;
            match existing {
                Some(i) => s.memberships[i] = m.clone(),
                None => s.memberships.push(m.clone()),
            }
            Ok(m)
        })
    }

    pub(crate) fn mint(&self, user: &str, opts: &TokenOptions) -> Result<String, MockError> {
        self.with_world(|w| w.keys.mint(user, opts))
    }

    /// Adds a signing key (given as PEM, or generated), publishes it, signs with it from now
    /// on and, with `drop_old`, takes every other key out of the JWKS (they can still sign,
    /// via [`TokenOptions::sign_with`]). Returns the new kid.
    pub(crate) fn rotate_key(
        &self,
        drop_old: bool,
        kid: Option<String>,
        private_key: Option<String>,
    ) -> Result<String, MockError> {
        let pem = match private_key {
            Some(p) => p,
            None => generate_pem()?,
        };
        self.update(|s| {
            let kid = match kid {
                Some(k) => k,
                None => (s.keys.len() + 1..)
                    .map(|n| format!("mock-key-{n}"))
                    .find(|k| s.keys.iter().all(|x| x.kid != *k))
                    .unwrap_or_else(|| "mock-key-next".to_owned()),
            };
            if drop_old {
                for k in &mut s.keys {
                    k.published = false;
                }
            }
            s.keys.push(SigningKey { kid: kid.clone(), private_key: Some(pem), generate: false, published: true });
            s.signing_kid = Some(kid.clone());
            Ok(kid)
        })
    }

    pub(crate) fn set_rate_limit(&self, per_minute: Option<u32>) -> Result<(), MockError> {
        self.update(|s| {
            s.rate_limit_per_minute = per_minute;
            Ok(())
        })?;
        lock(&self.limiter).clear();
        Ok(())
    }

    /// Admits a call under the real rate limit, or gives the seconds to wait.
    pub(crate) fn rate_check(&self, kind: EndpointKind, api_key: &str) -> Result<(), u64> {
        let Some(per_minute) = self.with_world(|w| w.state.rate_limit_per_minute) else {
            return Ok(());
        };
        lock(&self.limiter).check(per_minute, kind, api_key, Instant::now())
    }

    pub(crate) fn set_fault(&self, scope: FaultScope, fault: Fault) -> Result<(), MockError> {
        lock(&self.faults).set(scope, fault)
    }

    pub(crate) fn clear_fault(&self, scope: FaultScope) {
        lock(&self.faults).clear(scope);
    }

    pub(crate) fn clear_faults(&self) {
        lock(&self.faults).clear_all();
    }

    pub(crate) fn take_fault(&self, kind: EndpointKind) -> (std::time::Duration, Option<Failure>) {
        lock(&self.faults).take(kind)
    }

    pub(crate) fn faults_json(&self) -> Value {
        lock(&self.faults).to_json()
    }

    pub(crate) fn calls(&self) -> MutexGuard<'_, CallLog> {
        lock(&self.calls)
    }

    pub(crate) fn note_api_version_date(&self, value: &str) {
        *lock(&self.api_version_date) = Some(value.to_owned());
    }

    pub(crate) fn last_api_version_date(&self) -> Option<String> {
        lock(&self.api_version_date).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn inner() -> Inner {
        Inner::new(World::new(MockState::default()).unwrap(), "http://mock.test".into())
    }

    fn level(i: &Inner, u: &str, r: &str) -> Option<AccessLevel> {
        i.with_world(|w| w.state.access_level(u, r))
    }

    #[test]
    fn access_overrides_set_and_clear() {
        let i = inner();
        i.set_access("bob", "prod_mockproduct2", Some(AccessLevel::Customer)).unwrap();
        assert_eq!(level(&i, "user_bob", "prod_mockproduct2"), Some(AccessLevel::Customer));
        i.set_access("user_bob", "prod_mockproduct2", None).unwrap();
        assert_eq!(level(&i, "user_bob", "prod_mockproduct2"), Some(AccessLevel::NoAccess));
        assert!(matches!(i.set_access("user_zed", "prod_mockproduct2", None), Err(MockError::NotFound(_))));
        assert!(matches!(i.set_access("user_bob", "prod_zed", None), Err(MockError::NotFound(_))));
    }

    #[test]
    fn status_changes_take_effect() {
        let i = inner();
        i.set_membership_status("MOCK-ALICE-LICENSE", MembershipStatus::Canceled).unwrap();
        assert_eq!(level(&i, "user_alice", "prod_mockproduct1"), Some(AccessLevel::NoAccess));
        assert!(i.set_membership_status("mem_nope", MembershipStatus::Active).is_err());
    }

    #[test]
    fn patches_update_and_create() {
        let i = inner();
        let m = i.patch_membership(json!({"id": "MOCK-DAVE-LICENSE", "status": "active"})).unwrap();
        assert_eq!(m.id, "mem_dave000000001");
        assert!(m.updated_at.is_some());
        assert_eq!(level(&i, "user_dave", "prod_mockproduct1"), Some(AccessLevel::Customer));
        let m = i.patch_membership(json!({"user_id": "user_bob", "product_id": "prod_mockproduct2"})).unwrap();
        assert_eq!(m.id, "mem_mock000000001");
        assert_eq!(m.status, MembershipStatus::Active);
        let e = i.patch_membership(json!({"user_id": "user_bob", "product_id": "prod_nope"})).unwrap_err();
        assert!(e.to_string().contains("prod_nope"), "{e}");
        let e = i.patch_membership(json!({"user_id": "user_bob"})).unwrap_err();
        assert!(e.to_string().contains("product_id"), "{e}");
        // A failed change leaves the state as it was.
        assert_eq!(i.state().memberships.len(), 3);
    }

    #[test]
    fn login_as_takes_ids_and_usernames() {
        let i = inner();
        assert_eq!(i.state().oauth.login_as, "user_alice");
        assert_eq!(i.set_login_as("carol").unwrap(), "user_carol");
        assert_eq!(i.state().oauth.login_as, "user_carol");
        assert!(matches!(i.set_login_as("user_zed"), Err(MockError::NotFound(_))));
        assert_eq!(i.state().oauth.login_as, "user_carol");
    }

    #[test]
    fn rotation_switches_the_signing_key() {
        let i = inner();
        let kid = i.rotate_key(false, None, None).unwrap();
        assert_eq!(kid, "mock-key-2");
        let s = i.state();
        assert_eq!(s.signing_kid(), "mock-key-2");
        assert_eq!(s.jwks().unwrap()["keys"].as_array().unwrap().len(), 2);
        let kid = i.rotate_key(true, None, None).unwrap();
        assert_eq!(kid, "mock-key-3");
        let jwks = i.state().jwks().unwrap();
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
        assert_eq!(jwks["keys"][0]["kid"], "mock-key-3");
        assert!(i.rotate_key(false, Some("mock-key-3".into()), None).is_err());
    }

    #[test]
    fn reset_restores_everything() {
        let i = inner();
        i.set_membership_status("mem_alice00000001", MembershipStatus::Expired).unwrap();
        i.set_fault(FaultScope::All, Fault::hang()).unwrap();
        i.calls().start(None, "GET", "/x");
        i.note_api_version_date("2026-09-15");
        i.set_login_as("bob").unwrap();
        i.reset().unwrap();
        assert_eq!(i.state(), MockState::default().resolve().unwrap());
        assert_eq!(i.take_fault(EndpointKind::Access).1, None);
        assert!(i.calls().records().is_empty());
        assert_eq!(i.last_api_version_date(), None);
    }
}
