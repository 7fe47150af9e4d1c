//! Whop's webhooks (`POST {prefix}/webhook`, SPEC §5): a verified access event drops every
//! cached decision of the user it concerns, so access ends on the next request rather than at
//! the end of the ttl. A webhook only shortens that window: Whop retries a failed delivery only
//! three times and does not order them, so the ttl stays the safety net.
//!
//! [`signature`] says whether a delivery is Whop's, [`event`] what it says; [`Receiver`] puts
//! them together with replay detection and, when a body names no user, a membership lookup.
//! The gate answers the endpoint (`crate::gate::endpoints`) and does the forgetting.

pub mod event;
pub mod signature;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;

use crate::access::RedisStore;
use crate::config::WebhookConfig;
use crate::whop::{WhopClient, WhopError};
use event::Event;
use signature::{Rejected, Secrets};

/// Largest body accepted (Whop's events are a few KiB).
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// The body must have arrived within this...
pub const BODY_DEADLINE: Duration = Duration::from_millis(1500);
/// ...and a membership lookup be done within this: answered well within Whop's 5 s.
pub const RECEIVE_DEADLINE: Duration = Duration::from_secs(2);
/// How many delivery ids are remembered for replay detection.
const REMEMBERED: u64 = 100_000;
/// How long a delivery id is remembered: past the tolerance on both sides, when its timestamp
/// alone refuses it.
const REMEMBER_FOR: Duration = Duration::from_secs(2 * signature::TOLERANCE_SECS as u64 + 60);

/// What became of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Verified and access-relevant: forget this user's cached decisions.
    Applied {
        /// The event type.
        kind: String,
        /// Whose decisions to drop.
        user: String,
    },
    /// Verified, nothing to do (an event that does not touch access, or a membership Whop no
    /// longer knows).
    Ignored {
        /// The event type.
        kind: String,
    },
    /// Verified, and this delivery was already applied.
    Replayed,
    /// Not shown to be Whop's: nothing changed.
    BadSignature(Rejected),
    /// Verified, but the body cannot be read.
    Malformed(&'static str),
    /// The body names only a membership and Whop could not be asked whose it is: Whop should
    /// deliver again.
    Failed,
}

impl Outcome {
    /// The `result` label of `whopgate_webhooks_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Applied { .. } => "applied",
            Outcome::Ignored { .. } => "ignored",
            Outcome::Replayed => "replayed",
            Outcome::BadSignature(_) => "bad_signature",
            Outcome::Malformed(_) => "malformed",
            Outcome::Failed => "failed",
        }
    }
}

/// Verifies and reads deliveries; remembers the ones applied.
#[derive(Debug)]
pub struct Receiver {
    secrets: Secrets,
    seen: moka::sync::Cache<String, ()>,
    /// With several replicas, the deliveries any of them applied.
    shared: Option<Arc<RedisStore>>,
    whop: Arc<WhopClient>,
}

impl Receiver {
    /// A receiver for `config`'s secrets; `None` when neither is set (the endpoint is then 404).
    pub fn new(config: &WebhookConfig, whop: Arc<WhopClient>, shared: Option<Arc<RedisStore>>) -> Option<Self> {
        let bytes = |s: &crate::config::Secret| s.expose().as_bytes().to_vec();
        let secrets =
            Secrets { standard: config.secret.as_ref().map(bytes), legacy: config.legacy_secret.as_ref().map(bytes) };
        if secrets.standard.is_none() && secrets.legacy.is_none() {
            return None;
        }
        let seen = moka::sync::Cache::builder().max_capacity(REMEMBERED).time_to_live(REMEMBER_FOR).build();
        Some(Self { secrets, seen, shared, whop })
    }

    /// What `body` (with `headers`) comes to. The caller forgets [`Outcome::Applied`]'s user.
    pub async fn receive(&self, headers: &HeaderMap, body: &[u8]) -> Outcome {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let verified = match signature::verify(headers, body, now, &self.secrets) {
            Ok(verified) => verified,
            Err(rejected) => return Outcome::BadSignature(rejected),
        };
        if self.seen.contains_key(&verified.id) {
            return Outcome::Replayed;
        }
        // Whop may deliver the same event to another replica; Redis unreachable is not a replay.
        if let Some(shared) = &self.shared {
            if shared.delivery_seen(&verified.id).await == Some(true) {
                self.seen.insert(verified.id, ());
                return Outcome::Replayed;
            }
        }
        let outcome = match event::parse(body) {
            Err(event::Malformed(why)) => return Outcome::Malformed(why),
            Ok(Event::Other { kind }) => Outcome::Ignored { kind },
            Ok(Event::AccessChanged { kind, user: Some(user), .. }) => Outcome::Applied { kind, user },
            Ok(Event::AccessChanged { kind, user: None, membership: Some(membership) }) => {
                match self.whop.membership(&membership).await {
                    Ok(found) => match found.user_id {
                        Some(user) => Outcome::Applied { kind, user },
                        None => Outcome::Ignored { kind },
                    },
                    Err(WhopError::NotFound) => Outcome::Ignored { kind },
                    Err(error) => {
                        tracing::warn!(%error, membership = %membership, event = %kind,
                            "a webhook names only a membership and Whop could not be asked whose it is");
                        return Outcome::Failed;
                    }
                }
            }
            Ok(Event::AccessChanged { .. }) => {
                return Outcome::Malformed("the event names neither a user nor a membership");
            }
        };
        // Remembered only once done: a delivery that failed may come again and be applied then.
        if let Some(shared) = &self.shared {
            shared.remember_delivery(&verified.id, REMEMBER_FOR).await;
        }
        self.seen.insert(verified.id, ());
        outcome
    }
}
