//! [`PerCore`]: a value of which each core keeps its own copy, on a cache line of its own.
//!
//! Anything every request writes (a counter, a reference count) and that is shared by all
//! cores makes each write pull the cache line over from the core that wrote it last. With
//! several such writes per request, that traffic costs more than the gate's own work. A thread
//! uses the copy of its slot: the sidecar's workers each claim one ([`claim_slot`]); any other
//! thread takes the next slot in turn. Two threads on one slot share it correctly, only slower.

use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A line pair per slot: adjacent-line prefetchers fetch cache lines two at a time.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot<T>(T);

/// How many slots a [`PerCore`] has: the cores, rounded up to a power of two.
fn slot_count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()).next_power_of_two().min(64))
}

thread_local! {
    static THREAD_SLOT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The slot a thread that claimed none gets next.
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

/// Makes the calling thread use slot `index` (modulo the slot count) of every [`PerCore`]: the
/// sidecar's workers claim one each, so no two of them share a slot whatever other threads do.
pub fn claim_slot(index: usize) {
    THREAD_SLOT.with(|slot| slot.set(Some(index)));
}

#[inline]
fn this_slot() -> usize {
    let index = THREAD_SLOT.with(|slot| match slot.get() {
        Some(index) => index,
        None => {
            let index = NEXT_SLOT.fetch_add(1, Ordering::Relaxed);
            slot.set(Some(index));
            index
        }
    });
    index & (slot_count() - 1)
}

/// One `T` per core.
#[derive(Debug)]
pub struct PerCore<T> {
    slots: Box<[Slot<T>]>,
}

impl<T> PerCore<T> {
    /// One value per slot, each made by `make`.
    pub fn new(mut make: impl FnMut() -> T) -> Self {
        Self { slots: (0..slot_count()).map(|_| Slot(make())).collect() }
    }

    /// The calling thread's copy.
    #[inline]
    pub fn local(&self) -> &T {
        // `this_slot` is below `slot_count()`, the length of `slots`, so indexing cannot fail;
        // `get` keeps that a guarantee rather than a panic path.
        match self.slots.get(this_slot()) {
            Some(slot) => &slot.0,
            None => &self.slots[0].0,
        }
    }

    /// Every copy, for summing.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().map(|slot| &slot.0)
    }
}

/// `value` in an allocation of its own (a `HeaderValue` clone shares one, with a reference count
/// every clone writes): what a per-core or per-thread copy of a header value is made with.
pub fn own_copy(value: &http::HeaderValue) -> http::HeaderValue {
    // The bytes were a valid header value already, so this cannot fail; a shared clone is the
    // correct fallback all the same.
    http::HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;

    #[test]
    fn threads_that_claimed_different_slots_use_different_copies() {
        let values = PerCore::new(|| AtomicU64::new(0));
        std::thread::scope(|s| {
            for t in 0..slot_count() {
                let values = &values;
                s.spawn(move || {
                    claim_slot(t);
                    values.local().fetch_add(t as u64 + 1, Ordering::Relaxed);
                });
            }
        });
        let mut seen: Vec<u64> = values.iter().map(|v| v.load(Ordering::Relaxed)).collect();
        seen.sort_unstable();
        let expected: Vec<u64> = (1..=slot_count() as u64).collect();
        assert_eq!(seen, expected);
    }
}
