//! One worker's watch over its client connections: the graceful stop, and the header timeout.
//!
//! A connection task wakes for every request. If it also polled the server's shutdown channel
//! and a timer on each wake, every request would take the channel's lock (one lock for all
//! connections on all cores) and touch the timer wheel. Instead each connection holds a
//! [`ConnWatch`]: two counters its requests bump, an order it reads with one atomic load, and
//! the waker to reach it. The worker's [`Supervisor`] task does the waiting: it sweeps its
//! connections four times per header timeout, closing those that have sent no complete request
//! head for a whole timeout, and on shutdown tells every connection to drain.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::sync::watch;

/// Sweeps per header timeout: a silent or trickling client is cut between one timeout and a
/// quarter more.
const SWEEPS_PER_TIMEOUT: u32 = 4;

/// What the supervisor tells a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    /// Serve on.
    Run,
    /// Finish the request in flight, then close (the server is stopping).
    Drain,
    /// Close now: no request head arrived within the header timeout.
    Close,
}

impl Order {
    fn from_u8(value: u8) -> Order {
        match value {
            1 => Order::Drain,
            2 => Order::Close,
            _ => Order::Run,
        }
    }
}

/// One connection's side of the supervision.
#[derive(Debug)]
pub(crate) struct ConnWatch {
    /// Requests whose head has arrived.
    started: AtomicU64,
    /// Requests whose response is done (its body finished or dropped).
    finished: AtomicU64,
    order: AtomicU8,
    waker: AtomicWaker,
    /// Whether the header timeout applies (HTTP/1.1; HTTP/2 has its own keep-alive).
    timed: bool,
    // Only the supervisor reads and writes these.
    seen_started: AtomicU64,
    seen_finished: AtomicU64,
    quiet: AtomicU32,
}

impl ConnWatch {
    fn new(timed: bool) -> ConnWatch {
        ConnWatch {
            started: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            order: AtomicU8::new(Order::Run as u8),
            waker: AtomicWaker::new(),
            timed,
            seen_started: AtomicU64::new(0),
            seen_finished: AtomicU64::new(0),
            quiet: AtomicU32::new(0),
        }
    }

    /// A request head arrived.
    pub(crate) fn request_started(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
    }

    /// A response is done.
    pub(crate) fn request_finished(&self) {
        self.finished.fetch_add(1, Ordering::Relaxed);
    }

    /// The current order; `waker` is woken when it changes.
    pub(crate) fn order(&self, waker: &std::task::Waker) -> Order {
        // Register first: an order given after the load still wakes the task.
        self.waker.register(waker);
        Order::from_u8(self.order.load(Ordering::Acquire))
    }

    fn give(&self, order: Order) {
        // Close outranks drain; neither is ever taken back.
        self.order.fetch_max(order as u8, Ordering::AcqRel);
        self.waker.wake();
    }

    /// One sweep: true once the connection has had no request in flight and no new request
    /// for `SWEEPS_PER_TIMEOUT` sweeps in a row.
    fn sweep_is_idle(&self) -> bool {
        let started = self.started.load(Ordering::Relaxed);
        let finished = self.finished.load(Ordering::Relaxed);
        let started_before = self.seen_started.swap(started, Ordering::Relaxed);
        let finished_before = self.seen_finished.swap(finished, Ordering::Relaxed);
        if started == started_before && finished == finished_before && started == finished {
            self.quiet.fetch_add(1, Ordering::Relaxed) + 1 >= SWEEPS_PER_TIMEOUT
        } else {
            self.quiet.store(0, Ordering::Relaxed);
            false
        }
    }
}

/// A worker's connections, swept by one task.
#[derive(Debug)]
pub(crate) struct Supervisor {
    conns: Mutex<Vec<Weak<ConnWatch>>>,
    period: Duration,
    shutdown: watch::Receiver<bool>,
}

impl Supervisor {
    /// A supervisor for connections with this header timeout, draining them when `shutdown`
    /// turns true.
    pub(crate) fn new(header_read_timeout: Duration, shutdown: watch::Receiver<bool>) -> Arc<Supervisor> {
        let period = (header_read_timeout / SWEEPS_PER_TIMEOUT).max(Duration::from_millis(1));
        Arc::new(Supervisor { conns: Mutex::new(Vec::new()), period, shutdown })
    }

    /// Watches a new connection; `timed` applies the header timeout to it.
    pub(crate) fn watch(&self, timed: bool) -> Arc<ConnWatch> {
        let conn = Arc::new(ConnWatch::new(timed));
        self.conns.lock().unwrap_or_else(PoisonError::into_inner).push(Arc::downgrade(&conn));
        // Checked after joining the list: a shutdown that sweeps the list before this push
        // has already set the value read here.
        if *self.shutdown.borrow() {
            conn.give(Order::Drain);
        }
        conn
    }

    /// Sweeps until the worker's runtime ends.
    pub(crate) async fn run(self: Arc<Self>) {
        let mut shutdown = self.shutdown.clone();
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + self.period, self.period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut draining = false;
        loop {
            tokio::select! {
                _ = ticks.tick() => self.sweep(),
                _ = crate::server::stopped(&mut shutdown), if !draining => {
                    draining = true;
                    self.each(|conn| conn.give(Order::Drain));
                }
            }
        }
    }

    /// Closes the connections that have been idle for a whole timeout.
    fn sweep(&self) {
        self.each(|conn| {
            if conn.timed && conn.sweep_is_idle() {
                conn.give(Order::Close);
            }
        });
    }

    /// Runs `f` on every open connection, forgetting the closed ones.
    fn each(&self, mut f: impl FnMut(&ConnWatch)) {
        let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        conns.retain(|weak| match weak.upgrade() {
            Some(conn) => {
                f(&conn);
                true
            }
            None => false,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn supervisor() -> (Arc<Supervisor>, watch::Sender<bool>) {
        let (tx, rx) = watch::channel(false);
        (Supervisor::new(Duration::from_secs(10), rx), tx)
    }

    fn order(conn: &ConnWatch) -> Order {
        conn.order(Waker::noop())
    }

    /// Three quiet sweeps leave `conn` open; the fourth closes it.
    fn closed_by_the_fourth_quiet_sweep(supervisor: &Supervisor, conn: &ConnWatch) {
        for _ in 0..3 {
            supervisor.sweep();
            assert_eq!(order(conn), Order::Run);
        }
        supervisor.sweep();
        assert_eq!(order(conn), Order::Close);
    }

    #[test]
    fn a_connection_without_a_request_is_closed_after_four_sweeps() {
        let (supervisor, _tx) = supervisor();
        closed_by_the_fourth_quiet_sweep(&supervisor, &supervisor.watch(true));
    }

    #[test]
    fn a_request_in_flight_is_never_cut() {
        let (supervisor, _tx) = supervisor();
        let conn = supervisor.watch(true);
        conn.request_started();
        for _ in 0..100 {
            supervisor.sweep();
        }
        assert_eq!(order(&conn), Order::Run);
    }

    #[test]
    fn the_timeout_counts_from_the_last_response() {
        let (supervisor, _tx) = supervisor();
        let conn = supervisor.watch(true);
        for _ in 0..3 {
            conn.request_started();
            supervisor.sweep();
            supervisor.sweep();
            conn.request_finished();
        }
        // The sweep that sees the last response counts it as activity, then four quiet ones.
        supervisor.sweep();
        closed_by_the_fourth_quiet_sweep(&supervisor, &conn);
    }

    #[test]
    fn untimed_connections_are_left_alone_but_drained() {
        let (supervisor, tx) = supervisor();
        let conn = supervisor.watch(false);
        for _ in 0..10 {
            supervisor.sweep();
        }
        assert_eq!(order(&conn), Order::Run);
        tx.send(true).unwrap();
        supervisor.each(|c| c.give(Order::Drain));
        assert_eq!(order(&conn), Order::Drain);
    }

    #[test]
    fn a_connection_joining_after_shutdown_drains_at_once() {
        let (supervisor, tx) = supervisor();
        tx.send(true).unwrap();
        assert_eq!(order(&supervisor.watch(true)), Order::Drain);
    }

    #[test]
    fn close_outranks_drain_and_closed_connections_are_forgotten() {
        let (supervisor, _tx) = supervisor();
        let conn = supervisor.watch(true);
        conn.give(Order::Close);
        conn.give(Order::Drain);
        assert_eq!(order(&conn), Order::Close);
        drop(conn);
        supervisor.sweep();
        assert!(supervisor.conns.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_supervisor_task_wakes_a_connection_with_its_order() {
        let (tx, rx) = watch::channel(false);
        let supervisor = Supervisor::new(Duration::from_secs(3600), rx);
        let conn = supervisor.watch(true);
        tokio::spawn(supervisor.clone().run());
        let waited = std::future::poll_fn(|cx| match conn.order(cx.waker()) {
            Order::Run => std::task::Poll::Pending,
            order => std::task::Poll::Ready(order),
        });
        tx.send(true).unwrap();
        let order = tokio::time::timeout(Duration::from_secs(5), waited).await.expect("woken");
        assert_eq!(order, Order::Drain);
    }
}
