//! Several replicas behind a load balancer, sharing one real `redis-server`: an invalidation on
//! one reaches the others, a cold key costs one Whop call, and Redis going away costs nothing
//! but sharing, which comes back by itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use whopgate_mock::{EndpointKind, Fault, MembershipStatus, MockState, MockWhop};

use crate::open_streams::wait_for_end;
use crate::support::redis::Redis;
use crate::support::{Upstream, Whopgate, gated_config, require_tool, state_with_customers};
use crate::webhooks::{SECRET, deliver_signed, event, now};

struct Replicas {
    _up: Upstream,
    mock: MockWhop,
    a: Whopgate,
    b: Whopgate,
    client: reqwest::Client,
}

async fn replicas(redis: &Redis) -> Replicas {
    replicas_with(redis, "").await
}

/// Two replicas; `whop_extra` goes into their `[whop]` table.
async fn replicas_with(redis: &Redis, whop_extra: &str) -> Replicas {
    replicas_of(redis, state_with_customers(20), whop_extra, "").await
}

/// Two replicas over a mock with `state`; `whop_extra` goes into their `[whop]` table, `tables`
/// (e.g. `[identity]`) beside the others.
async fn replicas_of(redis: &Redis, state: MockState, whop_extra: &str, tables: &str) -> Replicas {
    let up = Upstream::start().await;
    let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), state).unwrap();
    let rest = format!(
        "[cache]\nttl = \"1h\"\nnegative_ttl = \"1h\"\nredis_url = \"{}\"\n\n[webhook]\nsecret = \"{SECRET}\"\n\n{tables}\n\n[[route]]\npath = \"/\"\nrequire = [\"prod_mockproduct1\"]\nmode = \"api\"\n",
        redis.url()
    );
    let config = gated_config(&up.url(), &mock, whop_extra, &rest);
    let (a, b) = (Whopgate::start(&config), Whopgate::start(&config));
    for gate in [&a, &b] {
        assert!(gate.wait_for_log("Redis is reachable", Duration::from_secs(10)).is_some(), "{:?}", gate.logs());
    }
    Replicas { _up: up, mock, a, b, client: reqwest::Client::new() }
}

impl Replicas {
    async fn status(&self, gate: &Whopgate, user: &str) -> u16 {
        let token = self.mock.mint_token(user).unwrap();
        match self.client.get(gate.url("/app")).header("x-whop-user-token", token).send().await {
            Ok(response) => response.status().as_u16(),
            Err(_) => 0,
        }
    }

    async fn revoke(&self, gate: &Whopgate, user: &str, membership: &str) {
        self.mock.set_membership_status(membership, MembershipStatus::Expired).unwrap();
        let body = event("membership.deactivated", json!({"id": membership, "user": {"id": user}}));
        assert_eq!(deliver_signed(gate, &format!("msg_{user}_{}", now()), &body).await.status(), 200);
    }

    /// How long until `gate` refuses `user`, polling every 20 ms, up to `limit`.
    async fn refused_within(&self, gate: &Whopgate, user: &str, limit: Duration) -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if self.status(gate, user).await == 403 {
                return Some(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// A long SSE stream on `gate` as `user`, its first event read.
    async fn open_stream(&self, gate: &Whopgate, user: &str) -> reqwest::Response {
        let token = self.mock.mint_token(user).unwrap();
        let request = self.client.get(gate.url("/sse?n=100000&gap_ms=100")).header("accept", "text/event-stream");
        let mut response = request.header("x-whop-user-token", token).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let first = response.chunk().await.unwrap().unwrap();
        assert!(first.starts_with(b"data: event 0"), "{first:?}");
        response
    }

    async fn metric(&self, gate: &Whopgate, name: &str) -> f64 {
        let text = self.client.get(gate.admin_url("/metrics")).send().await.unwrap().text().await.unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(-1.0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_to_one_replica_revokes_on_the_other_within_a_second() {
    if !require_tool("redis-server") {
        return;
    }
    let redis = Redis::start();
    let r = replicas(&redis).await;
    assert_eq!(r.status(&r.b, "user_load0001").await, 200, "cached on b");
    r.revoke(&r.a, "user_load0001", "mem_load00000001").await;
    let took = r.refused_within(&r.b, "user_load0001", Duration::from_secs(1)).await;
    assert!(took.is_some(), "b still let the user in a second after a's webhook");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_applied_by_one_replica_is_a_replay_on_the_other() {
    if !require_tool("redis-server") {
        return;
    }
    let redis = Redis::start();
    let r = replicas(&redis).await;
    let body = event("membership.updated", json!({"id": "mem_load00000004", "user": {"id": "user_load0004"}}));
    let mut answers = Vec::new();
    for gate in [&r.a, &r.b] {
        let response = deliver_signed(gate, "msg_shared_replay", &body).await;
        answers.push((response.status().as_u16(), response.json::<serde_json::Value>().await.unwrap()));
    }
    assert_eq!(answers[0], (200, json!({"result": "applied"})));
    assert_eq!(answers[1], (200, json!({"result": "replayed"})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replicas_share_one_whop_rate_budget() {
    if !require_tool("redis-server") {
        return;
    }
    let redis = Redis::start();
    let r = replicas_with(&redis, "rate_limit_per_minute = 10").await;
    r.mock.reset_calls();
    // Twenty cold users, alternately on each replica: each replica alone would allow ten calls
    // a minute, twenty in all; together they may make ten.
    let mut statuses = Vec::new();
    for i in 0..20 {
        let gate = if i % 2 == 0 { &r.a } else { &r.b };
        statuses.push(r.status(gate, &format!("user_load{:04}", i)).await);
    }
    assert_eq!(r.mock.calls(EndpointKind::Access), 10, "statuses {statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 10, "{statuses:?}");
    // The rest were refused for the budget, not let in: 503 with Retry-After.
    assert!(statuses.iter().all(|s| *s == 200 || *s == 503), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_key_asked_on_both_replicas_at_once_costs_one_whop_call() {
    if !require_tool("redis-server") {
        return;
    }
    let redis = Redis::start();
    let r = replicas(&redis).await;
    // Slow enough that both replicas are asking at the same time.
    r.mock.set_fault(EndpointKind::Access, Fault::latency(Duration::from_millis(300)));
    r.mock.reset_calls();
    let (on_a, on_b) = tokio::join!(r.status(&r.a, "user_load0002"), r.status(&r.b, "user_load0002"));
    assert_eq!((on_a, on_b), (200, 200));
    assert_eq!(r.mock.calls(EndpointKind::Access), 1, "both replicas asked Whop");
    // And the other replica serves it from the store afterwards too: no call.
    assert_eq!(r.status(&r.b, "user_load0002").await, 200);
    assert_eq!(r.mock.calls(EndpointKind::Access), 1);
}

/// Whop's answer to a question asked before a membership ended, landing in Redis after the
/// webhook that ended it: the other replica must ask Whop again, not serve that answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_in_flight_during_a_revocation_is_not_shared() {
    if !require_tool("redis-server") {
        return;
    }
    let redis = Redis::start();
    let r = replicas(&redis).await;
    let (user, membership) = ("user_load0005", "mem_load00000005");
    r.mock.set_fault(EndpointKind::Access, Fault::latency(Duration::from_millis(700)));
    r.mock.reset_calls();
    // a asks Whop about a cold key (Whop will say "customer"); the membership ends while it
    // waits, and the webhook reaches a before Whop's answer does.
    let revoke = async {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let body = event("membership.deactivated", json!({"id": membership, "user": {"id": user}}));
        assert_eq!(deliver_signed(&r.a, &format!("msg_inflight_{}", now()), &body).await.status(), 200);
    };
    let (asked, ()) = tokio::join!(r.status(&r.a, user), revoke);
    assert_eq!(asked, 200, "the request already asking gets Whop's answer");
    assert_eq!(r.mock.calls(EndpointKind::Access), 1);
    r.mock.clear_fault(EndpointKind::Access);
    r.mock.set_membership_status(membership, MembershipStatus::Expired).unwrap();
    assert_eq!(r.status(&r.b, user).await, 403, "b served the answer from before the revocation");
    assert_eq!(r.mock.calls(EndpointKind::Access), 2, "b asked Whop");
    assert_eq!(r.status(&r.a, user).await, 403, "a did not keep it either");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_under_load_fails_no_request_and_sharing_comes_back() {
    if !require_tool("redis-server") {
        return;
    }
    let mut redis = Redis::start();
    let port = redis.port;
    let r = Arc::new(replicas(&redis).await);
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for worker in 0..4 {
        let (r, failures, done, stop) = (r.clone(), failures.clone(), done.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                // Customers 10..19, some warm, some cold (each replica asks Whop itself then).
                let user = format!("user_load{:04}", 10 + (worker * 3 + i) % 10);
                let gate = if i % 2 == 0 { &r.a } else { &r.b };
                if r.status(gate, &user).await != 200 {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert!(done.load(Ordering::Relaxed) > 100, "too little load: {}", done.load(Ordering::Relaxed));
    assert_eq!(failures.load(Ordering::Relaxed), 0, "requests that would have succeeded without Redis failed");
    for gate in [&r.a, &r.b] {
        assert_eq!(r.metric(gate, "whopgate_redis_up").await, 0.0);
        assert!(r.metric(gate, "whopgate_redis_errors_total").await >= 1.0);
        let warnings = gate.logs().iter().filter(|l| l.contains("Redis is unreachable")).count();
        assert_eq!(warnings, 1, "one warning per outage, not per request");
    }

    // Redis back where it was: the replicas find it again by themselves.
    let _redis = Redis::start_on(port);
    let started = Instant::now();
    while r.metric(&r.a, "whopgate_redis_reconnects_total").await < 1.0
        || r.metric(&r.b, "whopgate_redis_reconnects_total").await < 1.0
    {
        assert!(started.elapsed() < Duration::from_secs(10), "the replicas did not resubscribe");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(r.status(&r.b, "user_load0003").await, 200);
    r.revoke(&r.a, "user_load0003", "mem_load00000003").await;
    assert!(
        r.refused_within(&r.b, "user_load0003", Duration::from_secs(1)).await.is_some(),
        "fan-out did not resume after Redis came back"
    );
}

/// A replica that lost its subscription may have missed what was published meanwhile: once it
/// is back it forgets its license keys too (not only its decisions), so a key whose membership
/// ended during the outage stops working there, even for a user who still has access.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_back_from_an_outage_forgets_license_keys_it_may_have_missed_news_of() {
    if !require_tool("redis-server") {
        return;
    }
    let mut redis = Redis::start();
    let port = redis.port;
    let mut state = state_with_customers(3);
    let (user, membership, key) = ("user_load0001", "mem_load00000001", "LOAD-KEY-0001");
    state.memberships.iter_mut().find(|m| m.id == membership).unwrap().license_key = Some(key.to_owned());
    // A second, keyless membership keeps the user a customer: only the key's own membership
    // ends, so only the cached license-key answer can let the key in afterwards.
    state.memberships.push(whopgate_mock::Membership::new(
        "mem_load00000099".to_owned(),
        user.to_owned(),
        "prod_mockproduct1",
        MembershipStatus::Active,
    ));
    let r = replicas_of(&redis, state, "", "[identity]\nsources = [\"license_key\"]").await;
    let (a, b, mock, client) = (&r.a, &r.b, &r.mock, &r.client);
    let with_key = |gate: &Whopgate| client.get(gate.url("/app")).header("x-whop-license-key", key).send();
    assert_eq!(with_key(b).await.unwrap().status(), 200, "the key is cached on b");

    redis.kill();
    assert!(b.wait_for_log("Redis is unreachable", Duration::from_secs(5)).is_some(), "{:?}", b.logs());
    // The membership ends during the outage; a hears of it, b cannot.
    mock.set_membership_status(membership, MembershipStatus::Expired).unwrap();
    let body = event("membership.deactivated", json!({"id": membership, "user": {"id": user}}));
    assert_eq!(deliver_signed(a, &format!("msg_outage_{}", now()), &body).await.status(), 200);
    assert!(
        a.wait_for_log("could not reach the other replicas", Duration::from_secs(10)).is_some(),
        "a gave up telling the others: {:?}",
        a.logs()
    );
    assert_eq!(with_key(b).await.unwrap().status(), 200, "b could not know yet");

    let _redis = Redis::start_on(port);
    let started = Instant::now();
    loop {
        let status = with_key(b).await.unwrap().status().as_u16();
        if status != 200 {
            assert_eq!(status, 403, "a key whose membership ended");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "b still lets the ended membership's key in");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A replica back from losing its subscription may have missed a revocation: it judges every
/// open stream again at once, so a revoked user's stream there ends as soon as it is back, not
/// at its next re-judgement (`revalidate_streams`, 60 s here), and everyone else's goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_back_from_an_outage_judges_its_open_streams_again_at_once() {
    if !require_tool("redis-server") {
        return;
    }
    let mut redis = Redis::start();
    let port = redis.port;
    let r = replicas(&redis).await;
    let (user, membership) = ("user_load0002", "mem_load00000002");
    let mut revoked = r.open_stream(&r.b, user).await;
    let mut kept = r.open_stream(&r.b, "user_load0004").await;

    redis.kill();
    assert!(r.b.wait_for_log("Redis is unreachable", Duration::from_secs(5)).is_some(), "{:?}", r.b.logs());
    // The membership ends during the outage; a hears of it, b cannot.
    r.revoke(&r.a, user, membership).await;
    assert!(
        r.a.wait_for_log("could not reach the other replicas", Duration::from_secs(10)).is_some(),
        "a never gave up telling the others: {:?}",
        r.a.logs()
    );
    assert!(revoked.chunk().await.unwrap().is_some(), "b could not know yet");

    let _redis = Redis::start_on(port);
    let back = Instant::now();
    let ended = wait_for_end(&mut revoked, Duration::from_secs(10)).await;
    assert!(r.metric(&r.b, "whopgate_redis_reconnects_total").await >= 1.0, "ended before b was back");
    assert!(ended - back < Duration::from_secs(10), "ended {:?} after Redis came back", ended - back);
    // The other user's access holds: their stream, judged again too, goes on.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..3 {
        assert!(kept.chunk().await.unwrap().is_some(), "a stream whose access holds was ended");
    }
    assert_eq!(r.metric(&r.b, "whopgate_streams_closed_total").await, 1.0);
}
