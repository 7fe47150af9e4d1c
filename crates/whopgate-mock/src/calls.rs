//! The call log: every request to a Whop-shaped path (not to `/_mock/`), with its arrival
//! time, so tests can assert how often and how densely a client calls.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::api::EndpointKind;

/// One request the mock received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallRecord {
    /// The endpoint kind, `None` for paths that are no endpoint (answered 404 or 401).
    pub kind: Option<EndpointKind>,
    /// HTTP method.
    pub method: String,
    /// The exact path, without the query.
    pub path: String,
    /// When the request arrived.
    pub at: Instant,
    /// The same moment as wall-clock time.
    pub at_system: SystemTime,
    /// The status answered; `None` while the call is in flight (or hanging).
    pub status: Option<u16>,
    seq: u64,
}

/// Every call since the start or the last reset.
#[derive(Default)]
pub(crate) struct CallLog {
    records: Vec<CallRecord>,
    next_seq: u64,
}

impl CallLog {
    /// Records an arriving call; the number identifies it for [`CallLog::finish`].
    pub(crate) fn start(&mut self, kind: Option<EndpointKind>, method: &str, path: &str) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.records.push(CallRecord {
            kind,
            method: method.to_owned(),
            path: path.to_owned(),
            at: Instant::now(),
            at_system: SystemTime::now(),
            status: None,
            seq,
        });
        seq
    }

    /// Notes the status of a call (ignored if the log was reset meanwhile).
    pub(crate) fn finish(&mut self, seq: u64, status: u16) {
        if let Some(r) = self.records.iter_mut().rev().find(|r| r.seq == seq) {
            r.status = Some(status);
        }
    }

    pub(crate) fn reset(&mut self) {
        self.records.clear();
    }

    pub(crate) fn records(&self) -> &[CallRecord] {
        &self.records
    }

    /// Arrival times of the calls of one kind (`None`: every call).
    pub(crate) fn times(&self, kind: Option<EndpointKind>) -> Vec<Instant> {
        self.records.iter().filter(|r| kind.is_none() || r.kind == kind).map(|r| r.at).collect()
    }

    /// The JSON of `GET /_mock/calls`.
    pub(crate) fn to_json(&self, started: Instant, last_api_version_date: Option<&str>) -> Value {
        let mut by_endpoint: BTreeMap<&str, usize> = BTreeMap::new();
        let mut by_path: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &self.records {
            if let Some(k) = r.kind {
                *by_endpoint.entry(k.as_str()).or_default() += 1;
            }
            *by_path.entry(&r.path).or_default() += 1;
        }
        let calls: Vec<Value> = self
            .records
            .iter()
            .map(|r| {
                let unix_ms = r.at_system.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
                json!({
                    "endpoint": r.kind.map(|k| k.as_str()),
                    "method": r.method,
                    "path": r.path,
                    "status": r.status,
                    "ms_since_start": r.at.saturating_duration_since(started).as_millis() as u64,
                    "unix_ms": unix_ms,
                })
            })
            .collect();
        json!({
            "total": self.records.len(),
            "by_endpoint": by_endpoint,
            "by_path": by_path,
            "last_api_version_date": last_api_version_date,
            "calls": calls,
        })
    }
}

/// The largest number of `times` that fall in any window of length `window` (times need not be
/// sorted). "Never more than B calls in any 60 s" is `max_in_window(&t, 60s) <= B`.
pub fn max_in_window(times: &[Instant], window: Duration) -> usize {
    let mut sorted = times.to_vec();
    sorted.sort();
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..sorted.len() {
        while sorted[hi].saturating_duration_since(sorted[lo]) >= window {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_half_open() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        // t0 and t0+60 are a full window apart: never in the same one.
        assert_eq!(max_in_window(&[t0 + s(60), t0, t0 + s(59)], s(60)), 2);
        let times = [t0, t0 + s(10), t0 + s(59), t0 + s(60), t0 + s(61), t0 + s(200)];
        assert_eq!(max_in_window(&times, s(60)), 4);
        assert_eq!(max_in_window(&times, s(1)), 1);
        assert_eq!(max_in_window(&[], s(60)), 0);
    }

    #[test]
    fn log_counts_and_finishes() {
        let mut log = CallLog::default();
        let a = log.start(Some(EndpointKind::Access), "GET", "/a");
        log.start(None, "GET", "/nope");
        log.finish(a, 200);
        assert_eq!(log.times(Some(EndpointKind::Access)).len(), 1);
        assert_eq!(log.times(None).len(), 2);
        let j = log.to_json(Instant::now(), Some("2026-09-15"));
        assert_eq!(j["total"], 2);
        assert_eq!(j["by_endpoint"]["access"], 1);
        assert_eq!(j["by_path"]["/nope"], 1);
        assert_eq!(j["calls"][0]["status"], 200);
        assert_eq!(j["calls"][1]["status"], Value::Null);
        assert_eq!(j["last_api_version_date"], "2026-09-15");
        log.reset();
        log.finish(a, 500);
        assert!(log.records().is_empty());
    }
}
