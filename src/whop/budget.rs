//! Staying inside Whop's rate limits: a hard budget per endpoint over a sliding window (a minute
//! for v1, ten seconds for the legacy lists), and a pause after a 429 for as long as Whop asked.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::error::WhopError;

const MINUTE: Duration = Duration::from_secs(60);

/// The calls one endpoint may still make.
///
/// The budget is exact over every sliding window (not a token bucket, which lets twice the
/// budget through across a window boundary): a call is allowed only if fewer than `limit` calls
/// were made in the `window` before it.
#[derive(Debug)]
pub struct CallBudget {
    limit: usize,
    window: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    calls: VecDeque<Instant>,
    paused_until: Option<Instant>,
}

impl CallBudget {
    /// A budget of `per_minute` calls in any minute.
    pub fn new(per_minute: u32) -> Self {
        Self::per_window(per_minute, MINUTE)
    }

    /// A budget of `limit` calls in any `window`.
    pub fn per_window(limit: u32, window: Duration) -> Self {
        let limit = usize::try_from(limit.max(1)).unwrap_or(usize::MAX);
        Self { limit, window, state: Mutex::new(State::default()) }
    }

    /// Takes one call from the budget, or says why not (paused, or spent).
    pub fn take(&self) -> Result<(), WhopError> {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(until) = state.paused_until {
            if now < until {
                return Err(WhopError::Paused { retry_after: until - now });
            }
            state.paused_until = None;
        }
        while state.calls.front().is_some_and(|t| now.duration_since(*t) >= self.window) {
            state.calls.pop_front();
        }
        if state.calls.len() >= self.limit {
            let oldest = state.calls.front().copied().unwrap_or(now);
            return Err(WhopError::BudgetExhausted {
                retry_after: self.window.saturating_sub(now.duration_since(oldest)),
            });
        }
        state.calls.push_back(now);
        Ok(())
    }

    /// At most this many calls...
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// ...in any window this long.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// No calls for `duration` (Whop said so).
    pub fn pause(&self, duration: Duration) {
        let until = Instant::now() + duration;
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.paused_until = Some(state.paused_until.map_or(until, |u| u.max(until)));
    }
}

/// What a [`SharedBudget`] says to one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedTake {
    /// Go ahead.
    Granted,
    /// The replicas together have spent the budget; this much until the oldest call leaves it.
    Exhausted(Duration),
    /// A replica was told by Whop (429) to pause this much longer.
    Paused(Duration),
    /// The shared budget cannot be asked (Redis down): the replica's own budget decides.
    Unavailable,
}

/// The future of [`SharedBudget::take`].
pub type Taken<'a> = Pin<Box<dyn Future<Output = SharedTake> + Send + 'a>>;
/// The future of [`SharedBudget::pause`].
pub type Paused<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// A rate budget every replica draws on (Redis), asked after the replica's own
/// [`CallBudget`], which stays as its cap: Whop's limits are per key, not per replica.
pub trait SharedBudget: Send + Sync + std::fmt::Debug {
    /// One call to `endpoint`, if fewer than `limit` were made by all replicas in `window`.
    fn take<'a>(&'a self, endpoint: &'static str, limit: usize, window: Duration) -> Taken<'a>;
    /// No replica calls `endpoint` for `duration`.
    fn pause<'a>(&'a self, endpoint: &'static str, duration: Duration) -> Paused<'a>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_hard() {
        let b = CallBudget::new(3);
        assert!(b.take().is_ok());
        assert!(b.take().is_ok());
        assert!(b.take().is_ok());
        match b.take() {
            Err(WhopError::BudgetExhausted { retry_after }) => assert!(retry_after > Duration::from_secs(59)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_short_window_refills() {
        let b = CallBudget::per_window(2, Duration::from_millis(100));
        assert!(b.take().is_ok());
        assert!(b.take().is_ok());
        match b.take() {
            Err(WhopError::BudgetExhausted { retry_after }) => assert!(retry_after <= Duration::from_millis(100)),
            other => panic!("{other:?}"),
        }
        std::thread::sleep(Duration::from_millis(110));
        assert!(b.take().is_ok());
    }

    #[test]
    fn pause_blocks_calls() {
        let b = CallBudget::new(100);
        b.pause(Duration::from_millis(50));
        assert!(matches!(b.take(), Err(WhopError::Paused { .. })));
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.take().is_ok());
    }
}
