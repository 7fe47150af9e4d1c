//! [`PerThread`]: each thread's own value for one shared structure, found by the structure's id
//! and gone with it. The near maps in front of the token and decision caches are such values:
//! memory only their thread touches, so a warm lookup writes no cache line another core reads.
//!
//! A `thread_local!` cannot be generic, so each kind of value has its own, declared as
//! `thread_local! { static NEAR: Slots<Map> = const { Slots::new() }; }` and named by the kind's
//! [`ThreadValue`] impl (a static call, so the thread-local access is inlined). It holds one slot
//! per live structure on that thread (one in practice; two while a reload replaces a cache).

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::LocalKey;

/// Tells the structures apart; never reused, whatever the kind of value.
static NEXT_OWNER: AtomicU64 = AtomicU64::new(0);

/// A kind of per-thread value: where its slots are.
pub trait ThreadValue: Sized + 'static {
    /// This kind's `thread_local!` slots.
    fn slots() -> &'static LocalKey<Slots<Self>>;
}

/// One thread's values of one kind, one per live structure.
pub struct Slots<M>(RefCell<Vec<Slot<M>>>);

impl<M> Slots<M> {
    /// No values yet (`const`, for `thread_local!`).
    pub const fn new() -> Self {
        Self(RefCell::new(Vec::new()))
    }
}

impl<M> Default for Slots<M> {
    fn default() -> Self {
        Self::new()
    }
}

struct Slot<M> {
    owner: u64,
    /// Dead once the structure is dropped; such slots go when the thread next makes one.
    alive: Weak<()>,
    value: M,
}

/// A shared structure's handle on its per-thread values.
pub struct PerThread<M: ThreadValue> {
    owner: u64,
    alive: Arc<()>,
    kind: std::marker::PhantomData<fn() -> M>,
}

impl<M: ThreadValue> std::fmt::Debug for PerThread<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerThread").field("owner", &self.owner).finish_non_exhaustive()
    }
}

impl<M: ThreadValue> Default for PerThread<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M: ThreadValue> PerThread<M> {
    /// A new structure's handle.
    pub fn new() -> Self {
        Self { owner: NEXT_OWNER.fetch_add(1, Ordering::Relaxed), alive: Arc::new(()), kind: std::marker::PhantomData }
    }

    /// `f` with this thread's value, if it has one. `None` as well while the thread is being torn
    /// down or the value is in use further up the stack: the shared structure answers then.
    #[inline]
    pub fn get<R>(&self, f: impl FnOnce(&mut M) -> Option<R>) -> Option<R> {
        M::slots()
            .try_with(|slots| {
                let mut slots = slots.0.try_borrow_mut().ok()?;
                let mine = slots.iter_mut().find(|s| s.owner == self.owner)?;
                f(&mut mine.value)
            })
            .ok()
            .flatten()
    }

    /// `f` with this thread's value, made by `make` first if there is none yet (when the slots
    /// of structures that are gone are dropped too). `None` when the slots cannot be reached, as
    /// for [`PerThread::get`].
    pub fn get_or_make<R>(&self, make: impl FnOnce() -> M, f: impl FnOnce(&mut M) -> R) -> Option<R> {
        M::slots()
            .try_with(|slots| {
                let mut slots = slots.0.try_borrow_mut().ok()?;
                let index = match slots.iter().position(|s| s.owner == self.owner) {
                    Some(index) => index,
                    None => {
                        slots.retain(|s| s.alive.strong_count() > 0);
                        slots.push(Slot { owner: self.owner, alive: Arc::downgrade(&self.alive), value: make() });
                        slots.len() - 1
                    }
                };
                slots.get_mut(index).map(|slot| f(&mut slot.value))
            })
            .ok()
            .flatten()
    }

    /// How many values of this kind the calling thread holds, for every structure.
    #[cfg(test)]
    pub fn values_here() -> usize {
        M::slots().with(|slots| slots.0.borrow().len())
    }
}

impl<M: ThreadValue> Drop for PerThread<M> {
    fn drop(&mut self) {
        // This thread's value can go now; other threads drop theirs when they next make one.
        let _ = M::slots().try_with(|slots| {
            if let Ok(mut slots) = slots.0.try_borrow_mut() {
                slots.retain(|s| s.owner != self.owner);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static COUNTS: Slots<Count> = const { Slots::new() };
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Count(u32);

    impl ThreadValue for Count {
        fn slots() -> &'static LocalKey<Slots<Self>> {
            &COUNTS
        }
    }

    #[test]
    fn each_structure_and_each_thread_has_its_own_value() {
        let (one, two) = (PerThread::<Count>::new(), PerThread::<Count>::new());
        assert_eq!(one.get(|n| Some(n.0)), None, "nothing made yet");
        assert_eq!(one.get_or_make(|| Count(1), |n| n.0), Some(1));
        assert_eq!(one.get_or_make(|| Count(100), |n| n.0), Some(1), "made once");
        assert_eq!(two.get(|n| Some(n.0)), None, "another structure's");
        two.get_or_make(|| Count(2), |_| ());
        std::thread::scope(|s| {
            s.spawn(|| assert_eq!(one.get(|n| Some(n.0)), None, "another thread's"));
        });
        assert_eq!(one.get(|n| Some(n.0)), Some(1));
        assert_eq!(PerThread::<Count>::values_here(), 2);
        drop(one);
        assert_eq!(PerThread::<Count>::values_here(), 1, "a dropped structure's value goes with it here");
    }

    #[test]
    fn values_of_structures_dropped_elsewhere_go_when_the_thread_next_makes_one() {
        let gone = PerThread::<Count>::new();
        gone.get_or_make(|| Count(1), |_| ());
        // Dropped on another thread: this thread's value stays until it makes another.
        std::thread::scope(|s| {
            s.spawn(move || drop(gone));
        });
        assert_eq!(PerThread::<Count>::values_here(), 1);
        let next = PerThread::<Count>::new();
        next.get_or_make(|| Count(2), |_| ());
        assert_eq!(PerThread::<Count>::values_here(), 1);
    }

    #[test]
    fn a_value_in_use_up_the_stack_is_not_reached_again() {
        let one = PerThread::<Count>::new();
        one.get_or_make(|| Count(1), |_| ());
        assert_eq!(one.get(|_| one.get(|n| Some(n.0))), None);
    }
}
