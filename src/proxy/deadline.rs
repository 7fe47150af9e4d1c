//! The upstream timeout of a worker's exchanges, kept by one coarse clock instead of a timer
//! per request.
//!
//! A `tokio::time::timeout` per exchange inserts an entry into the runtime's timer wheel and
//! removes it again, for a timer that almost never fires: about a fifth of what the proxy itself
//! spends on a request. Here an exchange that has to wait notes the tick it started on and its
//! waker in a slot of the worker's [`Deadlines`]; one task per worker advances the tick
//! [`TICKS_PER_TIMEOUT`] times per timeout and wakes the exchanges whose time is up. So an
//! exchange fails between one timeout and an eighth more after it began to wait, and the
//! common case costs a slot taken and given back, without a clock read.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// Ticks per timeout: how finely the timeout is kept.
const TICKS_PER_TIMEOUT: u32 = 8;

/// One worker's exchanges waiting on the upstream, and the tick that times them.
#[derive(Debug)]
pub(crate) struct Deadlines {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    tick: u64,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
}

#[derive(Debug)]
struct Slot {
    /// The tick when the exchange began to wait.
    since: u64,
    waker: Waker,
    expired: bool,
}

impl Deadlines {
    /// Deadlines for exchanges bounded by `timeout`, kept by a task spawned on the current
    /// runtime, which ends when they are dropped. `None` outside a runtime.
    pub(crate) fn start(timeout: Duration) -> Option<Arc<Deadlines>> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let deadlines = Arc::new(Deadlines { state: Mutex::new(State::default()) });
        let period = (timeout / TICKS_PER_TIMEOUT).max(Duration::from_millis(1));
        runtime.spawn(keep(Arc::downgrade(&deadlines), period));
        Some(deadlines)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Advances the clock by one tick and wakes the exchanges whose time is up.
    fn tick(&self) {
        let mut state = self.state();
        state.tick += 1;
        let now = state.tick;
        for slot in state.slots.iter_mut().flatten() {
            // More than a whole timeout of ticks: waiting began somewhere in the first one.
            if !slot.expired && now - slot.since > u64::from(TICKS_PER_TIMEOUT) {
                slot.expired = true;
                slot.waker.wake_by_ref();
            }
        }
    }

    /// Bounds `future` by the timeout these deadlines keep.
    pub(crate) fn bound<F: Future>(&self, future: F) -> Bounded<'_, F> {
        Bounded { future, deadlines: self, slot: None }
    }

    fn arm(&self, waker: &Waker) -> usize {
        let mut state = self.state();
        let slot = Slot { since: state.tick, waker: waker.clone(), expired: false };
        match state.free.pop() {
            Some(key) => {
                state.slots[key] = Some(slot);
                key
            }
            None => {
                state.slots.push(Some(slot));
                state.slots.len() - 1
            }
        }
    }

    /// Whether the slot's time is up; otherwise it keeps `waker` for the tick to wake.
    fn expired(&self, key: usize, waker: &Waker) -> bool {
        let mut state = self.state();
        let Some(Some(slot)) = state.slots.get_mut(key) else {
            return true;
        };
        if !slot.expired && !slot.waker.will_wake(waker) {
            slot.waker = waker.clone();
        }
        slot.expired
    }

    fn disarm(&self, key: usize) {
        let mut state = self.state();
        if let Some(slot) = state.slots.get_mut(key)
            && slot.take().is_some()
        {
            state.free.push(key);
        }
    }

    #[cfg(test)]
    fn armed(&self) -> usize {
        self.state().slots.iter().flatten().count()
    }
}

/// Ticks while the deadlines live. A sleep per tick rather than an interval: an interval
/// catches up on a late tick with a shorter one, and ticks must never come closer than `period`
/// or an exchange could fail before its timeout.
async fn keep(deadlines: Weak<Deadlines>, period: Duration) {
    loop {
        tokio::time::sleep(period).await;
        match deadlines.upgrade() {
            Some(deadlines) => deadlines.tick(),
            None => return,
        }
    }
}

/// The exchange's time ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Elapsed;

pin_project_lite::pin_project! {
    /// A future bounded by [`Deadlines`]: its output, or [`Elapsed`].
    pub(crate) struct Bounded<'a, F> {
        #[pin]
        future: F,
        deadlines: &'a Deadlines,
        slot: Option<usize>,
    }

    impl<F> PinnedDrop for Bounded<'_, F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(key) = this.slot.take() {
                this.deadlines.disarm(key);
            }
        }
    }
}

impl<F: Future> Future for Bounded<'_, F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.future.poll(cx) {
            if let Some(key) = this.slot.take() {
                this.deadlines.disarm(key);
            }
            return Poll::Ready(Ok(output));
        }
        match *this.slot {
            // The clock starts when the exchange first has to wait.
            None => *this.slot = Some(this.deadlines.arm(cx.waker())),
            Some(key) => {
                if this.deadlines.expired(key, cx.waker()) {
                    this.deadlines.disarm(key);
                    *this.slot = None;
                    return Poll::Ready(Err(Elapsed));
                }
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn a_waiting_future_fails_within_an_eighth_past_the_timeout() {
        let timeout = Duration::from_millis(200);
        let deadlines = Deadlines::start(timeout).unwrap();
        let started = Instant::now();
        let result = deadlines.bound(std::future::pending::<()>()).await;
        let took = started.elapsed();
        assert_eq!(result, Err(Elapsed));
        assert!(took >= timeout, "failed early, after {took:?}");
        // An eighth more, and room for a busy machine.
        assert!(took < timeout + timeout / 8 + Duration::from_millis(150), "failed late, after {took:?}");
        assert_eq!(deadlines.armed(), 0, "the slot is given back");
    }

    #[tokio::test]
    async fn a_future_that_answers_in_time_gives_its_slot_back() {
        let deadlines = Deadlines::start(Duration::from_secs(5)).unwrap();
        let result = deadlines.bound(tokio::time::sleep(Duration::from_millis(20))).await;
        assert_eq!(result, Ok(()));
        assert_eq!(deadlines.armed(), 0);
        // Abandoned while waiting: given back too.
        let mut waiting = Box::pin(deadlines.bound(std::future::pending::<()>()));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        assert_eq!(deadlines.armed(), 1);
        drop(waiting);
        assert_eq!(deadlines.armed(), 0);
    }

    #[tokio::test]
    async fn slots_are_reused_and_each_waits_its_own_time() {
        let deadlines = Deadlines::start(Duration::from_millis(160)).unwrap();
        let early = deadlines.bound(std::future::pending::<()>());
        let late = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let started = Instant::now();
            (deadlines.bound(std::future::pending::<()>()).await, started.elapsed())
        };
        let (early, (late, late_took)) = tokio::join!(early, late);
        assert_eq!(early, Err(Elapsed));
        assert_eq!(late, Err(Elapsed));
        assert!(late_took >= Duration::from_millis(160), "the later one counts from its own start: {late_took:?}");
        assert_eq!(deadlines.armed(), 0);
        assert!(deadlines.state().slots.len() <= 2);
    }

    #[test]
    fn no_deadlines_outside_a_runtime() {
        assert!(Deadlines::start(Duration::from_secs(1)).is_none());
    }
}
