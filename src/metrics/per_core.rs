//! Counters and histograms that every core updates in a cache line of its own ([`PerCore`]); a
//! scrape sums the cores. prometheus's own `IntCounter` and `Histogram` are one set of atomics
//! shared by every core, which the request path would write several times per request. Values
//! are exact: the slots are atomics, so two threads that land on one slot still both count.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, LabelPair, MetricFamily, MetricType};

use crate::per_core::PerCore;

/// A monotonic counter, one slot per core.
#[derive(Debug)]
pub struct Counter {
    slots: PerCore<AtomicU64>,
}

impl Counter {
    fn new() -> Self {
        Self { slots: PerCore::new(|| AtomicU64::new(0)) }
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.inc_by(1);
    }

    /// Adds `n`.
    #[inline]
    pub fn inc_by(&self, n: u64) {
        self.slots.local().fetch_add(n, Ordering::Relaxed);
    }

    /// The total over every core.
    pub fn get(&self) -> u64 {
        self.slots.iter().map(|s| s.load(Ordering::Relaxed)).sum()
    }
}

/// Most buckets a [`Histogram`] has (besides `+Inf`): the counts live inline in each core's
/// slot, since a separate allocation per core could share a cache line with another core's.
pub const MAX_BUCKETS: usize = 16;

/// One core's counts: per bucket (up to the bounds given, then `+Inf`), and the sum.
#[derive(Debug)]
struct HistogramSlot {
    buckets: [AtomicU64; MAX_BUCKETS + 1],
    sum_nanos: AtomicU64,
}

/// A histogram of durations, one slot per core.
#[derive(Debug)]
pub struct Histogram {
    upper_bounds: Arc<[f64]>,
    upper_nanos: Box<[u64]>,
    slots: PerCore<HistogramSlot>,
}

impl Histogram {
    fn new(upper_bounds: Arc<[f64]>) -> Self {
        let upper_nanos = upper_bounds.iter().map(|s| Duration::from_secs_f64(*s).as_nanos() as u64).collect();
        let slots = PerCore::new(|| HistogramSlot {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        });
        Self { upper_bounds, upper_nanos, slots }
    }

    /// Records one duration.
    #[inline]
    pub fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = self.upper_nanos.iter().position(|upper| nanos <= *upper).unwrap_or(self.upper_nanos.len());
        let slot = self.slots.local();
        if let Some(count) = slot.buckets.get(bucket) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        slot.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Non-cumulative counts per bucket (the last is `+Inf`) and the sum in seconds.
    fn snapshot(&self) -> (Vec<u64>, f64) {
        let mut counts = vec![0; self.upper_bounds.len() + 1];
        let mut sum_nanos = 0u128;
        for slot in self.slots.iter() {
            for (total, count) in counts.iter_mut().zip(slot.buckets.iter()) {
                *total += count.load(Ordering::Relaxed);
            }
            sum_nanos += u128::from(slot.sum_nanos.load(Ordering::Relaxed));
        }
        (counts, sum_nanos as f64 / 1e9)
    }

    /// The total number of observations.
    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.snapshot().0.iter().sum()
    }
}

/// A family of per-core metrics told apart by label values, registered with a prometheus
/// `Registry` as one collector.
#[derive(Debug)]
pub struct Family<M> {
    inner: Arc<FamilyInner<M>>,
}

// Not derived: that would ask for `M: Clone`.
impl<M> Clone for Family<M> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

#[derive(Debug)]
struct FamilyInner<M> {
    desc: Desc,
    label_names: Vec<String>,
    members: Mutex<HashMap<Vec<String>, Arc<M>>>,
    make: fn(&FamilyInner<M>) -> M,
    upper_bounds: Arc<[f64]>,
}

/// A family of [`Counter`]s.
pub type CounterFamily = Family<Counter>;
/// A family of [`Histogram`]s.
pub type HistogramFamily = Family<Histogram>;

impl<M> Family<M> {
    fn build(
        name: &str,
        help: &str,
        labels: &[&str],
        upper_bounds: &[f64],
        make: fn(&FamilyInner<M>) -> M,
    ) -> prometheus::Result<Self> {
        let label_names: Vec<String> = labels.iter().map(|l| (*l).to_owned()).collect();
        let desc = Desc::new(name.to_owned(), help.to_owned(), label_names.clone(), HashMap::new())?;
        Ok(Self {
            inner: Arc::new(FamilyInner {
                desc,
                label_names,
                members: Mutex::new(HashMap::new()),
                make,
                upper_bounds: upper_bounds.into(),
            }),
        })
    }

    /// The member with these label values (one per label name, in order), made on first use.
    /// Resolve it once and keep it: this takes a lock.
    pub fn with_label_values(&self, values: &[&str]) -> Arc<M> {
        let key: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        let mut members = self.inner.members.lock().unwrap_or_else(PoisonError::into_inner);
        members.entry(key).or_insert_with(|| Arc::new((self.inner.make)(&self.inner))).clone()
    }

    fn family(&self, field_type: MetricType, metric: impl Fn(&M) -> proto::Metric) -> MetricFamily {
        let members = self.inner.members.lock().unwrap_or_else(PoisonError::into_inner);
        let mut sorted: Vec<_> = members.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        let metrics = sorted
            .into_iter()
            .map(|(values, member)| {
                let mut m = metric(member);
                m.set_label(
                    self.inner
                        .label_names
                        .iter()
                        .zip(values)
                        .map(|(name, value)| {
                            let mut pair = LabelPair::default();
                            pair.set_name(name.clone());
                            pair.set_value(value.clone());
                            pair
                        })
                        .collect(),
                );
                m
            })
            .collect();
        let mut family = MetricFamily::default();
        family.set_name(self.inner.desc.fq_name.clone());
        family.set_help(self.inner.desc.help.clone());
        family.set_field_type(field_type);
        family.set_metric(metrics);
        family
    }
}

impl CounterFamily {
    /// A counter family named `name` with these label names.
    pub fn new(name: &str, help: &str, labels: &[&str]) -> prometheus::Result<Self> {
        Self::build(name, help, labels, &[], |_| Counter::new())
    }
}

impl HistogramFamily {
    /// A histogram family of durations in seconds, with these bucket upper bounds.
    /// At most [`MAX_BUCKETS`] bounds.
    pub fn new(name: &str, help: &str, labels: &[&str], upper_bounds: &[f64]) -> prometheus::Result<Self> {
        if upper_bounds.len() > MAX_BUCKETS {
            return Err(prometheus::Error::Msg(format!("{name}: more than {MAX_BUCKETS} buckets")));
        }
        Self::build(name, help, labels, upper_bounds, |family| Histogram::new(family.upper_bounds.clone()))
    }
}

impl Collector for CounterFamily {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.inner.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        vec![self.family(MetricType::COUNTER, |counter| {
            let mut value = proto::Counter::default();
            value.set_value(counter.get() as f64);
            let mut m = proto::Metric::default();
            m.set_counter(value);
            m
        })]
    }
}

impl Collector for HistogramFamily {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.inner.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        vec![self.family(MetricType::HISTOGRAM, |histogram| {
            let (counts, sum) = histogram.snapshot();
            let mut cumulative = 0;
            let buckets = histogram
                .upper_bounds
                .iter()
                .zip(&counts)
                .map(|(upper, count)| {
                    cumulative += count;
                    let mut bucket = proto::Bucket::default();
                    bucket.set_upper_bound(*upper);
                    bucket.set_cumulative_count(cumulative);
                    bucket
                })
                .collect();
            let mut value = proto::Histogram::default();
            // The count is the buckets' total (with `+Inf`), so the two always agree.
            value.set_sample_count(counts.iter().sum());
            value.set_sample_sum(sum);
            value.set_bucket(buckets);
            let mut m = proto::Metric::default();
            m.set_histogram(value);
            m
        })]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::per_core::claim_slot;

    #[test]
    fn counts_from_many_threads_add_up_exactly() {
        let family = CounterFamily::new("t_total", "test", &["k"]).unwrap();
        let counter = family.with_label_values(&["a"]);
        std::thread::scope(|s| {
            for t in 0..8 {
                let counter = counter.clone();
                s.spawn(move || {
                    if t % 2 == 0 {
                        claim_slot(t);
                    }
                    for _ in 0..10_000 {
                        counter.inc();
                    }
                });
            }
        });
        assert_eq!(counter.get(), 80_000);
        assert!(Arc::ptr_eq(&counter, &family.with_label_values(&["a"])), "one member per label set");
        let collected = family.collect();
        assert_eq!(collected[0].get_metric()[0].get_counter().get_value(), 80_000.0);
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_agree_with_the_count() {
        let family = HistogramFamily::new("t_seconds", "test", &["k"], &[0.001, 0.01]).unwrap();
        let h = family.with_label_values(&["a"]);
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(1)); // on the bound: `le` is inclusive
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_secs(2));
        assert_eq!(h.count(), 4);
        let collected = family.collect();
        let value = collected[0].get_metric()[0].get_histogram();
        let cumulative: Vec<u64> = value.get_bucket().iter().map(|b| b.cumulative_count()).collect();
        assert_eq!(cumulative, [2, 3]);
        assert_eq!(value.get_sample_count(), 4);
        assert!((value.get_sample_sum() - 2.0065).abs() < 1e-9, "{}", value.get_sample_sum());
    }
}
