//! The [`DecisionStore`] that replicas share: Redis (`cache.redis_url`).
//!
//! - A decision is a field of the user's hash, `whopgate:user:{user}` → `{resource}` =
//!   `{access},{unix ms when Whop answered}`; the hash lives as long as its longest ttl, and a
//!   reader ages what it finds, so a decision is trusted no longer than its ttl from Whop's
//!   answer on any replica.
//! - Forgetting a user deletes the hash and announces it on `whopgate:invalidate`; every replica
//!   subscribes and forgets the user in its own process.
//! - A cold key is claimed with `SET whopgate:claim:{user}:{resource} NX PX`, so replicas asked
//!   about it at once make one Whop call.
//! - It is also the [`SharedBudget`]: one sliding window per Whop endpoint
//!   (`whopgate:budget:{endpoint}`, on Redis's clock) and the pause after a 429
//!   (`whopgate:pause:{endpoint}`), so the replicas together stay within Whop's limits.
//!
//! Redis is never on the warm path and never needed: every command has a short deadline, and a
//! failure is a miss (the replica asks Whop itself). An outage is logged once, when it starts,
//! and once when it ends; it is counted in `whopgate_redis_errors_total` and shown by
//! `whopgate_redis_up`. A replica whose subscription was lost forgets every decision it holds
//! once it is back, since it may have missed invalidations meanwhile.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::store::{Claim, Claimed, DecisionStore, Found, Stored, Written};
use crate::metrics::Metrics;
use crate::whop::{Access, Paused, SharedBudget, SharedTake, Taken};

/// Longest any Redis command may take before it counts as a failure (a miss).
const COMMAND_DEADLINE: Duration = Duration::from_millis(150);
/// Pause between attempts to reach Redis again.
const RETRY_EVERY: Duration = Duration::from_millis(500);
/// Tries at announcing an invalidation before leaving it to the ttl.
const FORGET_ATTEMPTS: u32 = 4;
/// The channel every replica listens on.
const CHANNEL: &str = "whopgate:invalidate";

/// What a replica does when another announces that a user's access changed, and when it may
/// have missed announcements.
pub trait Invalidation: Send + Sync {
    /// Forget `user` in this process (the store already has).
    fn user(&self, user: &str);
    /// Forget every decision (and every other answer about access, such as license keys) this
    /// process holds: it may have missed announcements.
    fn everything(&self);
}

/// Decisions in Redis, shared by every replica that names the same `redis_url`.
pub struct RedisStore {
    client: redis::Client,
    conn: RwLock<Option<ConnectionManager>>,
    /// Tells this replica's own announcements from the others'.
    replica: String,
    up: AtomicBool,
    metrics: Arc<Metrics>,
    invalidation: OnceLock<Box<dyn Invalidation>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password.
        f.debug_struct("RedisStore").field("up", &self.up.load(Ordering::Relaxed)).finish_non_exhaustive()
    }
}

/// `cache.redis_url` could not be used.
#[derive(Debug)]
pub struct RedisUrlError(String);

impl std::fmt::Display for RedisUrlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cache.redis_url: {}", self.0)
    }
}

impl std::error::Error for RedisUrlError {}

impl RedisStore {
    /// A store on `url`. Redis need not be up: the store connects (and reconnects) in the
    /// background on `runtime`, and until then every lookup is a miss.
    pub fn start(
        url: &str,
        metrics: Arc<Metrics>,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Arc<Self>, RedisUrlError> {
        // The error text of the redis crate can quote the URL, password and all: say only what.
        let client =
            redis::Client::open(url).map_err(|e| RedisUrlError(format!("not a usable Redis URL ({:?})", e.kind())))?;
        let replica = format!("{:016x}", rand::random::<u64>());
        metrics.redis_up.set(0);
        let store = Arc::new(Self {
            client,
            conn: RwLock::new(None),
            replica,
            up: AtomicBool::new(false),
            metrics,
            invalidation: OnceLock::new(),
        });
        runtime.spawn(connect(Arc::downgrade(&store)));
        runtime.spawn(listen(Arc::downgrade(&store)));
        Ok(store)
    }

    /// Who to tell when another replica announces an invalidation. Set once, by the gate.
    pub fn on_invalidation(&self, invalidation: Box<dyn Invalidation>) {
        let _ = self.invalidation.set(invalidation);
    }

    fn connection(&self) -> Option<ConnectionManager> {
        self.conn.read().ok().and_then(|c| c.clone())
    }

    /// Runs `command` with the deadline; a failure or a timeout is `None`, and counted.
    async fn run<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> Option<T> {
        let mut conn = self.connection()?;
        self.settle(tokio::time::timeout(COMMAND_DEADLINE, command.query_async::<T>(&mut conn)).await)
    }

    /// Runs `pipe` with the deadline; whether it went through.
    async fn run_pipe(&self, pipe: &redis::Pipeline) -> bool {
        let Some(mut conn) = self.connection() else { return false };
        self.settle(tokio::time::timeout(COMMAND_DEADLINE, pipe.query_async::<()>(&mut conn)).await).is_some()
    }

    /// What a command came to, with the store's health updated from it.
    fn settle<T>(&self, outcome: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>) -> Option<T> {
        match outcome {
            Ok(Ok(value)) => {
                self.healthy();
                Some(value)
            }
            Ok(Err(error)) => {
                self.failed(&error.to_string());
                None
            }
            Err(_) => {
                self.failed("no answer in time");
                None
            }
        }
    }

    fn healthy(&self) {
        if !self.up.swap(true, Ordering::AcqRel) {
            self.metrics.redis_up.set(1);
            tracing::info!("Redis is reachable: decisions and invalidations are shared with the other replicas");
        }
    }

    fn failed(&self, why: &str) {
        self.metrics.redis_errors.inc();
        if self.up.swap(false, Ordering::AcqRel) {
            self.metrics.redis_up.set(0);
            tracing::warn!(error = %redact(why), "Redis is unreachable: this replica goes on with its own cache and asks Whop itself");
        }
    }

    /// Whether any replica applied the webhook delivery `id` (`None`: Redis cannot say).
    pub async fn delivery_seen(&self, id: &str) -> Option<bool> {
        self.run::<bool>(redis::cmd("EXISTS").arg(format!("whopgate:webhook:{id}"))).await
    }

    /// Remembers that the delivery `id` was applied, for `for_how_long`, for every replica.
    pub async fn remember_delivery(&self, id: &str, for_how_long: Duration) {
        let secs = for_how_long.as_secs().max(1);
        let _: Option<()> =
            self.run(redis::cmd("SET").arg(format!("whopgate:webhook:{id}")).arg(1).arg("EX").arg(secs)).await;
    }

    fn user_key(user: &str) -> String {
        format!("whopgate:user:{user}")
    }
}

/// Error texts of the redis crate may quote the URL; keep them without anything like one.
fn redact(why: &str) -> String {
    why.split_whitespace().filter(|w| !w.contains("://") && !w.contains('@')).collect::<Vec<_>>().join(" ")
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn access_code(access: Access) -> &'static str {
    match access {
        Access::NoAccess => "n",
        Access::Customer => "c",
        Access::Admin => "a",
    }
}

fn parse_stored(value: &str) -> Option<Stored> {
    let (code, at) = value.split_once(',')?;
    let access = match code {
        "n" => Access::NoAccess,
        "c" => Access::Customer,
        "a" => Access::Admin,
        _ => return None,
    };
    let at: u64 = at.parse().ok()?;
    // A clock behind another replica's makes the decision look younger than it is by at most
    // the skew; one from the future is taken as just made.
    Some(Stored { access, age: Duration::from_millis(now_ms().saturating_sub(at)) })
}

impl DecisionStore for RedisStore {
    fn get<'a>(&'a self, user: &'a str, resource: &'a str) -> Found<'a> {
        Box::pin(async move {
            let value: Option<String> = self.run(redis::cmd("HGET").arg(Self::user_key(user)).arg(resource)).await?;
            value.as_deref().and_then(parse_stored)
        })
    }

    fn put<'a>(&'a self, user: &'a str, resource: &'a str, access: Access, ttl: Duration) -> Written<'a> {
        Box::pin(async move {
            let key = Self::user_key(user);
            let value = format!("{},{}", access_code(access), now_ms());
            let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            let mut pipe = redis::pipe();
            pipe.cmd("HSET").arg(&key).arg(resource).arg(value).ignore();
            // The hash lives as long as its longest-lived decision (GT: never shortened).
            pipe.cmd("PEXPIRE").arg(&key).arg(ttl_ms).arg("GT").ignore();
            pipe.cmd("PEXPIRE").arg(&key).arg(ttl_ms).arg("NX").ignore();
            pipe.cmd("DEL").arg(format!("whopgate:claim:{user}:{resource}")).ignore();
            self.run_pipe(&pipe).await;
        })
    }

    fn forget_user<'a>(&'a self, user: &'a str) -> Written<'a> {
        Box::pin(async move {
            // An invalidation is worth a retry: the first command on a connection Redis dropped
            // fails and makes the connection manager reconnect.
            let message = format!("{} {user}", self.replica);
            for attempt in 0..FORGET_ATTEMPTS {
                if attempt > 0 {
                    tokio::time::sleep(RETRY_EVERY / 2).await;
                }
                let mut pipe = redis::pipe();
                pipe.cmd("DEL").arg(Self::user_key(user)).ignore();
                pipe.cmd("PUBLISH").arg(CHANNEL).arg(&message).ignore();
                if self.run_pipe(&pipe).await {
                    return;
                }
            }
            tracing::warn!(user_id = %user, "an invalidation could not reach the other replicas; their copies end with their ttl");
        })
    }

    fn claim<'a>(&'a self, user: &'a str, resource: &'a str, hold: Duration) -> Claimed<'a> {
        Box::pin(async move {
            let hold_ms = u64::try_from(hold.as_millis()).unwrap_or(u64::MAX).max(1);
            let claimed: Option<Option<String>> = self
                .run(
                    redis::cmd("SET")
                        .arg(format!("whopgate:claim:{user}:{resource}"))
                        .arg(&self.replica)
                        .arg("NX")
                        .arg("PX")
                        .arg(hold_ms),
                )
                .await;
            match claimed {
                // Not set: someone holds it.
                Some(None) => Claim::Theirs,
                // Set, or Redis cannot say: ask.
                Some(Some(_)) | None => Claim::Mine,
            }
        })
    }
}

/// The shared sliding window, in one step on Redis's own clock (replicas' clocks differ):
/// a pause in force answers `{2, ms left}`; a spent window `{1, ms until its oldest call
/// leaves}`; else the call is counted and `{0, 0}`.
const BUDGET_SCRIPT: &str = r"
local pause = redis.call('PTTL', KEYS[2])
if pause > 0 then return {2, pause} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {1, math.max(1, tonumber(oldest[2]) + window - now)}
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
return {0, 0}
";

impl SharedBudget for RedisStore {
    fn take<'a>(&'a self, endpoint: &'static str, limit: usize, window: Duration) -> Taken<'a> {
        Box::pin(async move {
            let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
            let member = format!("{}:{:016x}", self.replica, rand::random::<u64>());
            // EVAL rather than a cached script: this runs only where a Whop call is about to.
            let mut eval = redis::cmd("EVAL");
            eval.arg(BUDGET_SCRIPT).arg(2).arg(format!("whopgate:budget:{endpoint}"));
            eval.arg(format!("whopgate:pause:{endpoint}")).arg(window_ms).arg(limit).arg(member);
            let ms = |v: i64| Duration::from_millis(u64::try_from(v).unwrap_or(0));
            match self.run::<Vec<i64>>(&eval).await.as_deref() {
                Some([0, _]) => SharedTake::Granted,
                Some([1, left]) => SharedTake::Exhausted(ms(*left)),
                Some([2, left]) => SharedTake::Paused(ms(*left)),
                _ => SharedTake::Unavailable,
            }
        })
    }

    fn pause<'a>(&'a self, endpoint: &'static str, duration: Duration) -> Paused<'a> {
        Box::pin(async move {
            let key = format!("whopgate:pause:{endpoint}");
            let ms = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX).max(1);
            let left: Option<i64> = self.run(redis::cmd("PTTL").arg(&key)).await;
            // Never shortens a longer pause another replica was told.
            if left.is_some_and(|left| left < ms) {
                let _: Option<()> = self.run(redis::cmd("SET").arg(&key).arg(1).arg("PX").arg(ms)).await;
            }
        })
    }
}

/// Keeps a connection to Redis, reconnecting after it is lost or was never made.
async fn connect(store: std::sync::Weak<RedisStore>) {
    loop {
        let Some(strong) = store.upgrade() else { return };
        if strong.connection().is_none() {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(1)))
                .set_response_timeout(Some(COMMAND_DEADLINE))
                .set_number_of_retries(1);
            match strong.client.get_connection_manager_with_config(config).await {
                Ok(manager) => {
                    if let Ok(mut slot) = strong.conn.write() {
                        *slot = Some(manager);
                    }
                    strong.healthy();
                }
                Err(error) => strong.failed(&error.to_string()),
            }
        }
        drop(strong);
        tokio::time::sleep(RETRY_EVERY).await;
    }
}

/// Listens for the other replicas' invalidations; after a lost subscription, forgets
/// everything this replica holds, since it may have missed some.
async fn listen(store: std::sync::Weak<RedisStore>) {
    let mut lost = false;
    loop {
        let Some(strong) = store.upgrade() else { return };
        let subscribed = async {
            let mut pubsub = strong.client.get_async_pubsub().await.ok()?;
            pubsub.subscribe(CHANNEL).await.ok()?;
            Some(pubsub)
        };
        let pubsub = tokio::time::timeout(Duration::from_secs(2), subscribed).await.ok().flatten();
        let Some(mut pubsub) = pubsub else {
            lost = true;
            drop(strong);
            tokio::time::sleep(RETRY_EVERY).await;
            continue;
        };
        if lost {
            strong.metrics.redis_reconnects.inc();
            if let Some(invalidation) = strong.invalidation.get() {
                invalidation.everything();
            }
            tracing::info!("listening to the other replicas' invalidations again; decisions held here were dropped");
        }
        lost = true;
        let mine = format!("{} ", strong.replica);
        drop(strong);
        let mut messages = pubsub.on_message();
        while let Some(message) = messages.next().await {
            let Ok(payload) = message.get_payload::<String>() else { continue };
            if payload.starts_with(&mine) {
                continue;
            }
            let Some((_, user)) = payload.split_once(' ') else { continue };
            let Some(strong) = store.upgrade() else { return };
            if let Some(invalidation) = strong.invalidation.get() {
                invalidation.user(user);
            }
        }
        // The subscription ended: Redis went away.
        if let Some(strong) = store.upgrade() {
            strong.failed("the subscription to invalidations was lost");
        }
        tokio::time::sleep(RETRY_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_decisions_round_trip_and_age() {
        let now = now_ms();
        let stored = parse_stored(&format!("c,{}", now - 4_000)).unwrap();
        assert_eq!(stored.access, Access::Customer);
        assert!(stored.age >= Duration::from_secs(4) && stored.age < Duration::from_secs(5));
        assert_eq!(parse_stored(&format!("a,{}", now + 60_000)).unwrap().age, Duration::ZERO);
        for bad in ["", "c", "x,1", "c,abc", "c,-1"] {
            assert!(parse_stored(bad).is_none(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_store_whose_redis_is_down_misses_at_once_and_takes_every_claim() {
        let metrics = Arc::new(Metrics::new());
        let runtime = tokio::runtime::Handle::current();
        // TLS URLs are usable too (rediss://), password and all.
        assert!(RedisStore::start("rediss://:pw@cache.invalid:6380/0", metrics.clone(), &runtime).is_ok());
        let store = RedisStore::start("redis://127.0.0.1:9", metrics.clone(), &runtime).unwrap();
        let started = std::time::Instant::now();
        assert_eq!(store.get("user_a", "prod_a").await, None);
        assert_eq!(store.claim("user_a", "prod_a", Duration::from_secs(1)).await, Claim::Mine);
        store.put("user_a", "prod_a", Access::Customer, Duration::from_secs(60)).await;
        assert!(started.elapsed() < Duration::from_millis(500), "{:?}", started.elapsed());
        assert_eq!(metrics.redis_up.get(), 0);
    }

    #[test]
    fn error_texts_lose_anything_like_a_url() {
        assert_eq!(redact("failed to connect redis://:hunter2@cache:6379 refused"), "failed to connect refused");
    }
}
