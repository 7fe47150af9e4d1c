//! Injected trouble: latency, errors, hangs and 429s per endpoint kind, and the optional real
//! per-minute rate limit.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::api::EndpointKind;
use super::error::MockError;

/// How long a hanging call sleeps: far beyond any client timeout. The connection task is
/// dropped, and the sleep with it, when the client goes away or the mock shuts down.
pub const HANG_FOR: Duration = Duration::from_secs(3600);

/// One kind of trouble. Latency adds to whatever else is set; the failures (`Error`, `Hang`,
/// `RateLimited`) replace each other. As JSON: `{"type":"latency","duration":"250ms"}`,
/// `{"type":"error","status":500,"times":2}`, `{"type":"hang"}`,
/// `{"type":"rate_limited","retry_after":12,"header":true,"times":1}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// Wait this long before answering.
    Latency {
        /// The added delay, e.g. `"250ms"` in JSON.
        #[serde(with = "super::serde_duration")]
        duration: Duration,
    },
    /// Answer `{"error":{"type":"internal_server_error",…}}` (or the type fitting `status`).
    Error {
        /// 500 unless given (502, 503 and 504 are useful too).
        #[serde(default = "default_error_status")]
        status: u16,
        /// Only the next N calls; every call until cleared when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        times: Option<u32>,
    },
    /// Never answer (sleep [`HANG_FOR`]).
    Hang,
    /// Answer 429 `{"error":{"type":"rate_limit_exceeded","message":"Try again in N seconds."}}`.
    RateLimited {
        /// The N in the message (and in `Retry-After`).
        #[serde(default = "default_retry_after")]
        retry_after: u64,
        /// Also send `Retry-After: N` (Whop does sometimes).
        #[serde(default)]
        header: bool,
        /// Only the next N calls; every call until cleared when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        times: Option<u32>,
    },
}

fn default_error_status() -> u16 {
    500
}
fn default_retry_after() -> u64 {
    12
}

impl Fault {
    /// Adds `d` before every answer.
    pub fn latency(d: Duration) -> Fault {
        Fault::Latency { duration: d }
    }

    /// 500 on every call until cleared.
    pub fn error() -> Fault {
        Fault::Error { status: 500, times: None }
    }

    /// 500 on the next `n` calls.
    pub fn error_times(n: u32) -> Fault {
        Fault::Error { status: 500, times: Some(n) }
    }

    /// Never answer.
    pub fn hang() -> Fault {
        Fault::Hang
    }

    /// 429 "Try again in `secs` seconds." on every call until cleared, without `Retry-After`.
    pub fn rate_limited(secs: u64) -> Fault {
        Fault::RateLimited { retry_after: secs, header: false, times: None }
    }

    /// 429 "Try again in `secs` seconds." with `Retry-After: secs`, on every call until cleared.
    pub fn rate_limited_with_header(secs: u64) -> Fault {
        Fault::RateLimited { retry_after: secs, header: true, times: None }
    }

    fn check(&self) -> Result<(), MockError> {
        match self {
            Fault::Error { status, .. } if !(500..=599).contains(status) => {
                Err(MockError::BadRequest(format!("error status must be 5xx, not {status}")))
            }
            Fault::Error { times: Some(0), .. } | Fault::RateLimited { times: Some(0), .. } => {
                Err(MockError::BadRequest("times must be at least 1 (leave it out for \"until cleared\")".into()))
            }
            _ => Ok(()),
        }
    }
}

/// Where a fault applies: one endpoint kind, or all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultScope {
    /// Every Whop-shaped endpoint (not the control API).
    All,
    /// One kind of endpoint.
    Endpoint(EndpointKind),
}

impl From<EndpointKind> for FaultScope {
    fn from(k: EndpointKind) -> Self {
        FaultScope::Endpoint(k)
    }
}

impl fmt::Display for FaultScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultScope::All => f.write_str("all"),
            FaultScope::Endpoint(k) => f.write_str(k.as_str()),
        }
    }
}

impl FromStr for FaultScope {
    type Err = MockError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "all" { Ok(FaultScope::All) } else { s.parse().map(FaultScope::Endpoint) }
    }
}

/// What one call must suffer, decided when it arrives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    Error { status: u16 },
    Hang,
    RateLimited { retry_after: u64, header: bool },
}

#[derive(Default)]
struct Slot {
    latency: Option<Duration>,
    failure: Option<Fault>,
}

/// The faults currently set.
#[derive(Default)]
pub(crate) struct FaultTable {
    slots: HashMap<FaultScope, Slot>,
}

impl FaultTable {
    pub(crate) fn set(&mut self, scope: FaultScope, fault: Fault) -> Result<(), MockError> {
        fault.check()?;
        let slot = self.slots.entry(scope).or_default();
        match fault {
            Fault::Latency { duration } => slot.latency = Some(duration),
            other => slot.failure = Some(other),
        }
        Ok(())
    }

    pub(crate) fn clear(&mut self, scope: FaultScope) {
        self.slots.remove(&scope);
    }

    pub(crate) fn clear_all(&mut self) {
        self.slots.clear();
    }

    /// Decides the fate of one call of `kind`, using up one of any counted fault. Latencies of
    /// the kind and of "all" add up; the kind's own failure wins over the one set for all.
    pub(crate) fn take(&mut self, kind: EndpointKind) -> (Duration, Option<Failure>) {
        let mut latency = Duration::ZERO;
        let mut failure = None;
        for scope in [FaultScope::Endpoint(kind), FaultScope::All] {
            let Some(slot) = self.slots.get_mut(&scope) else {
                continue;
            };
            latency += slot.latency.unwrap_or_default();
            if failure.is_none() {
                failure = take_failure(&mut slot.failure);
            }
        }
        (latency, failure)
    }

    /// The table as JSON for `GET /_mock/faults`: `{"access":[{…fault…}], "all":[…]}`.
    pub(crate) fn to_json(&self) -> Value {
        let mut out = serde_json::Map::new();
        let mut scopes: Vec<_> = self.slots.iter().collect();
        scopes.sort_by_key(|(s, _)| s.to_string());
        for (scope, slot) in scopes {
            let mut list = Vec::new();
            if let Some(d) = slot.latency {
                list.push(json!(Fault::Latency { duration: d }));
            }
            if let Some(f) = &slot.failure {
                list.push(json!(f));
            }
            if !list.is_empty() {
                out.insert(scope.to_string(), Value::Array(list));
            }
        }
        Value::Object(out)
    }
}

fn take_failure(slot: &mut Option<Fault>) -> Option<Failure> {
    let (failure, times) = match slot.as_mut()? {
        Fault::Latency { .. } => return None,
        Fault::Hang => (Failure::Hang, None),
        Fault::Error { status, times } => (Failure::Error { status: *status }, times.as_mut()),
        Fault::RateLimited { retry_after, header, times } => {
            (Failure::RateLimited { retry_after: *retry_after, header: *header }, times.as_mut())
        }
    };
    if let Some(n) = times {
        *n = n.saturating_sub(1);
        if *n == 0 {
            *slot = None;
        }
    }
    Some(failure)
}

/// The real rate limit, per endpoint kind and API key over a sliding window: `per_minute` calls
/// a minute for v1 kinds; for the legacy lists Whop's own (SPEC §1): v2 100 per 10 s, v5 20 per
/// 10 s, where a 429 starts a 60 s cool-down.
#[derive(Default)]
pub(crate) struct RateLimiter {
    windows: HashMap<(EndpointKind, String), VecDeque<Instant>>,
    cooling: HashMap<(EndpointKind, String), Instant>,
}

/// How one kind is limited: calls, window, cool-down after a refusal.
fn limits(kind: EndpointKind, per_minute: u32) -> (usize, Duration, Option<Duration>) {
    const TEN_SECONDS: Duration = Duration::from_secs(10);
    match kind {
        EndpointKind::MembershipsV2 => (100, TEN_SECONDS, None),
        EndpointKind::MembershipsV5 => (20, TEN_SECONDS, Some(Duration::from_secs(60))),
        _ => (per_minute as usize, Duration::from_secs(60), None),
    }
}

/// Whole seconds, rounded up: "Try again in 0 seconds." would invite an immediate retry that
/// fails.
fn seconds_up(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

impl RateLimiter {
    /// Admits a call, or says how many seconds to wait (at least 1). Refused calls do not use
    /// up the budget.
    pub(crate) fn check(&mut self, per_minute: u32, kind: EndpointKind, key: &str, now: Instant) -> Result<(), u64> {
        let (limit, window_length, cool_down) = limits(kind, per_minute);
        let slot = (kind, key.to_owned());
        if let Some(until) = self.cooling.get(&slot) {
            if now < *until {
                return Err(seconds_up(*until - now));
            }
            self.cooling.remove(&slot);
        }
        let window = self.windows.entry(slot.clone()).or_default();
        while window.front().is_some_and(|t| now.saturating_duration_since(*t) >= window_length) {
            window.pop_front();
        }
        if window.len() < limit {
            window.push_back(now);
            return Ok(());
        }
        if let Some(cool_down) = cool_down {
            self.cooling.insert(slot, now + cool_down);
            return Err(seconds_up(cool_down));
        }
        let wait = window
            .front()
            .map(|oldest| window_length.saturating_sub(now.saturating_duration_since(*oldest)))
            .unwrap_or(window_length);
        Err(seconds_up(wait))
    }

    pub(crate) fn clear(&mut self) {
        self.windows.clear();
        self.cooling.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_errors_run_out() {
        let mut t = FaultTable::default();
        t.set(EndpointKind::Access.into(), Fault::error_times(2)).unwrap();
        let fail = Some(Failure::Error { status: 500 });
        assert_eq!(t.take(EndpointKind::Access).1, fail);
        assert_eq!(t.take(EndpointKind::Jwks).1, None);
        assert_eq!(t.take(EndpointKind::Access).1, fail);
        assert_eq!(t.take(EndpointKind::Access).1, None);
    }

    #[test]
    fn latency_adds_and_kind_failure_wins() {
        let mut t = FaultTable::default();
        t.set(FaultScope::All, Fault::latency(Duration::from_millis(100))).unwrap();
        t.set(EndpointKind::Access.into(), Fault::latency(Duration::from_millis(50))).unwrap();
        t.set(FaultScope::All, Fault::error()).unwrap();
        t.set(EndpointKind::Access.into(), Fault::rate_limited(3)).unwrap();
        let (lat, f) = t.take(EndpointKind::Access);
        assert_eq!(lat, Duration::from_millis(150));
        assert_eq!(f, Some(Failure::RateLimited { retry_after: 3, header: false }));
        let (lat, f) = t.take(EndpointKind::Members);
        assert_eq!(lat, Duration::from_millis(100));
        assert_eq!(f, Some(Failure::Error { status: 500 }));
        t.clear_all();
        assert_eq!(t.take(EndpointKind::Access), (Duration::ZERO, None));
    }

    #[test]
    fn faults_read_from_json() {
        let f: Fault = serde_json::from_str(r#"{"type":"latency","duration":"250ms"}"#).unwrap();
        assert_eq!(f, Fault::latency(Duration::from_millis(250)));
        let f: Fault = serde_json::from_str(r#"{"type":"rate_limited"}"#).unwrap();
        assert_eq!(f, Fault::rate_limited(12));
        let f: Fault = serde_json::from_str(r#"{"type":"error","times":1}"#).unwrap();
        assert_eq!(f, Fault::error_times(1));
        assert!(serde_json::from_str::<Fault>(r#"{"type":"explode"}"#).is_err());
        let mut t = FaultTable::default();
        assert!(t.set(FaultScope::All, Fault::Error { status: 404, times: None }).is_err());
        assert_eq!("all".parse::<FaultScope>().unwrap(), FaultScope::All);
        assert_eq!("memberships_v5".parse::<FaultScope>().unwrap(), FaultScope::Endpoint(EndpointKind::MembershipsV5));
    }

    #[test]
    fn the_legacy_lists_have_whops_limits() {
        let mut l = RateLimiter::default();
        let t0 = Instant::now();
        for _ in 0..100 {
            assert!(l.check(600, EndpointKind::MembershipsV2, "k", t0).is_ok());
        }
        assert_eq!(l.check(600, EndpointKind::MembershipsV2, "k", t0), Err(10));
        assert!(l.check(600, EndpointKind::MembershipsV2, "k", t0 + Duration::from_secs(10)).is_ok());

        for _ in 0..20 {
            assert!(l.check(600, EndpointKind::MembershipsV5, "k", t0).is_ok());
        }
        assert_eq!(l.check(600, EndpointKind::MembershipsV5, "k", t0), Err(60), "a 60 s cool-down");
        let later = t0 + Duration::from_secs(30);
        assert_eq!(l.check(600, EndpointKind::MembershipsV5, "k", later), Err(30), "even after the window");
        assert!(l.check(600, EndpointKind::MembershipsV5, "k", t0 + Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn rate_limiter_slides() {
        let mut r = RateLimiter::default();
        let t0 = Instant::now();
        let k = EndpointKind::Access;
        assert!(r.check(2, k, "a", t0).is_ok());
        assert!(r.check(2, k, "a", t0 + Duration::from_secs(10)).is_ok());
        assert_eq!(r.check(2, k, "a", t0 + Duration::from_secs(20)), Err(40));
        // Other key, other kind: own budgets.
        assert!(r.check(2, k, "b", t0).is_ok());
        assert!(r.check(2, EndpointKind::Jwks, "a", t0).is_ok());
        assert!(r.check(2, k, "a", t0 + Duration::from_secs(60)).is_ok());
        assert_eq!(r.check(2, k, "a", t0 + Duration::from_millis(60_500)), Err(10));
    }
}
