//! Resident memory of the access cache holding N decisions (default 1 000 000): part of the
//! benchmark in `bench/`.
//!
//! ```sh
//! cargo run --release --features bench-internals --example decision_memory -- 1000000
//! ```
//!
//! Decisions are inserted as Whop answers would be (one user id string per user, a shared
//! resource id), and the process's resident size is read from `/proc/self/status` before and
//! after.

use std::sync::Arc;
use std::time::{Duration, Instant};

use whopgate::bench_internals::{Access, AccessCache, CacheSettings, CheckAccess, Metrics, WhopClient, WhopConfig};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmRSS:")).map(str::to_owned))
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn main() {
    let count: u64 = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(1_000_000);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let _guard = runtime.enter();
    let metrics = Metrics::new();
    let client = Arc::new(WhopClient::new(&WhopConfig::default(), WhopClient::http_client(), Arc::new(Metrics::new())));
    let settings = CacheSettings {
        ttl: Duration::from_secs(3600),
        negative_ttl: Duration::from_secs(3600),
        stale_if_error: Duration::from_secs(300),
        max_entries: count,
        whop_timeout: Duration::from_secs(3),
    };
    let backend = Arc::new(CheckAccess::new(client));
    let cache =
        AccessCache::new(backend, settings, vec![Arc::from("prod_aaaaaaaaaaaaaa")], &metrics, runtime.handle().clone());
    let before = rss_kib();
    let started = Instant::now();
    for i in 0..count {
        // Whop user ids are `user_` and 14 characters.
        let user = format!("user_{i:014}");
        let access = if i % 10 == 0 { Access::NoAccess } else { Access::Customer };
        cache.insert(&user, "prod_aaaaaaaaaaaaaa", access);
    }
    let entries = cache.entry_count();
    let after = rss_kib();
    println!(
        "decisions={entries} rss_before_mib={:.1} rss_after_mib={:.1} growth_mib={:.1} bytes_per_decision={:.0} fill_seconds={:.2}",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        (after - before) as f64 / 1024.0,
        (after - before) as f64 * 1024.0 / entries.max(1) as f64,
        started.elapsed().as_secs_f64()
    );
}
