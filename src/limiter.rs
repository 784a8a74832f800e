//! [`Limiter`]: the client-wide limit on requests in flight, which adapts to throttling.
//!
//! Every request takes a [`Slot`] before its connection and gives it back when its exchange
//! ends, saying whether the server throttled it. The limit always sits under the hard connection
//! cap. It starts at its maximum, so a server that never throttles sees no difference, and moves
//! like TCP CUBIC's congestion window, counted in requests (β = 0.7, the AWS SDKs' adaptive retry
//! constant):
//!
//! * **Cut.** A throttled reply to a request sent since the last cut multiplies the limit (or
//!   the requests in flight, if fewer) by β and starts a new generation of slots. Throttled
//!   replies to requests sent before the cut were caused by the old limit and do not cut again;
//!   they refine the cut instead: when `t` of the `n` requests in flight at the cut come back
//!   throttled, the server accepted `n − t` at once, and the limit falls to that if it is lower.
//!   A burst far above what the server takes so converges in one round trip instead of one β
//!   step per round trip.
//! * **Growth.** After a cut to `start` from `w_max`, the limit is
//!   `max(start, w_max · (1 + (1 − β) · (t/R − 1)³))` at time `t`, where `R` is
//!   [`recovery`](crate::ThrottleConfig::recovery): back at `w_max` after `R`, flat around it,
//!   then probing above ever faster — by 30 % of `w_max` at `2R`. The curve depends on time, not
//!   on the request rate, so fast requests do not make probing (and its throttled replies) more
//!   frequent. A refined cut plateaus at what the server accepted (`w_max = start`).
//! * **Floor.** Throttled replies at the floor with no success between them mean even the floor
//!   is too much: from the second on, the request keeps its slot for a backoff delay
//!   (exponential in the throttled replies since the last success, full jitter), which takes
//!   the request rate below the floor. A lone throttled reply among successes (one hot key)
//!   costs only itself. With adaptation off the floor is the ceiling, and each part backs off
//!   on its own count of throttled replies instead.
//!
//! Waiting for a slot is FIFO, except that an attempt made again after a transient failure goes
//! to the front: it belongs to an object that was admitted earlier. Acquiring is cancel safe.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::retry::{backoff_delay, ThrottleConfig};
use crate::waitlist::{Place, WaitList};

/// The multiplicative decrease on a throttled reply.
const BETA: f64 = 0.7;

/// The client's limit on requests in flight.
#[derive(Debug, Clone)]
pub(crate) struct Limiter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    min: f64,
    max: f64,
    recovery: Duration,
    base_delay: Duration,
    max_delay: Duration,
}

#[derive(Debug)]
struct State {
    limit: f64,
    in_flight: usize,
    /// Bumped by every cut; a slot remembers the generation it was granted in.
    generation: u64,
    /// The last cut, until the limit is back at its maximum.
    cut: Option<Cut>,
    /// Throttled replies at the floor since the last success.
    strikes: u32,
    waiters: WaitList<()>,
}

#[derive(Debug, Clone, Copy)]
struct Cut {
    at: Instant,
    /// The limit the curve grows back to.
    w_max: f64,
    /// Requests in flight when the cut was made, and how many of them came back throttled.
    in_flight: usize,
    throttled: usize,
}

/// How the limit moved after a reply, for the caller's tracing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Change {
    /// No visible change.
    None,
    /// Cut from one whole limit to another.
    Lowered { from: usize, to: usize },
    /// The last cut refined lower by the replies to requests sent before it.
    Refined { from: usize, to: usize },
    /// Grown from one whole limit to another.
    Raised { from: usize, to: usize },
}

impl State {
    /// Slots that may be held at once now.
    fn cap(&self) -> usize {
        self.limit as usize
    }

    /// Moves the limit up the growth curve to `now` (never down: only a cut lowers it); drops
    /// the cut once back at the maximum.
    fn grow(&mut self, inner: &Inner, now: Instant) {
        let Some(cut) = self.cut else { return };
        let r = inner.recovery.as_secs_f64();
        let x = now.saturating_duration_since(cut.at).as_secs_f64() / r - 1.0;
        let w = cut.w_max * (1.0 + (1.0 - BETA) * x * x * x);
        self.limit = w.max(self.limit).clamp(inner.min, inner.max);
        if self.limit >= inner.max {
            self.cut = None;
        }
    }

    /// Grants waiters front to back while the limit allows; returns the wakers to wake.
    fn grant(&mut self) -> Vec<Waker> {
        let cap = self.cap();
        let in_flight = &mut self.in_flight;
        self.waiters.grant(|()| {
            let room = *in_flight < cap;
            if room {
                *in_flight += 1;
            }
            room
        })
    }
}

impl Limiter {
    /// A limiter for at most `max_connections` requests, as `cfg` (validated) sets it.
    pub(crate) fn new(cfg: &ThrottleConfig, max_connections: usize) -> Self {
        let max = cfg.max_concurrency.unwrap_or(max_connections) as f64;
        let min = if cfg.adaptive {
            cfg.min_concurrency as f64
        } else {
            max
        };
        Limiter {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    limit: max,
                    in_flight: 0,
                    generation: 0,
                    cut: None,
                    strikes: 0,
                    waiters: WaitList::new(),
                }),
                min,
                max,
                recovery: cfg.recovery,
                base_delay: cfg.base_delay,
                max_delay: cfg.max_delay,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.lock()
    }

    /// Slots held now: requests in flight, and throttled ones held through their backoff.
    pub(crate) fn in_flight(&self) -> usize {
        self.lock().in_flight
    }

    /// The highest the limit goes.
    pub(crate) fn max(&self) -> usize {
        self.inner.max as usize
    }

    /// The limit now, in whole requests.
    pub(crate) fn limit(&self) -> usize {
        let mut st = self.lock();
        st.grow(&self.inner, Instant::now());
        st.cap()
    }

    /// Waits for a slot, at the back of the queue for a first attempt, or at the front for an
    /// attempt made again after a transient failure (its object was admitted earlier).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future leaves the queue (and gives back a slot it was granted
    /// but had not collected).
    pub(crate) fn acquire(&self, place: Place) -> Acquire<'_> {
        Acquire {
            limiter: self,
            place,
            id: None,
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Gives a slot back and grants it to the next waiter.
    fn release(&self) {
        let wake = {
            let mut st = self.lock();
            st.in_flight -= 1;
            if st.cut.is_some() {
                st.grow(self, Instant::now());
            }
            st.grant()
        };
        wake.into_iter().for_each(Waker::wake);
    }

    fn slot(self: &Arc<Self>, generation: u64) -> Slot {
        Slot {
            inner: Arc::clone(self),
            generation,
            released: false,
        }
    }
}

/// The future of [`Limiter::acquire`].
#[derive(Debug)]
pub(crate) struct Acquire<'a> {
    limiter: &'a Limiter,
    place: Place,
    /// Set once queued.
    id: Option<u64>,
}

impl Future for Acquire<'_> {
    type Output = Slot;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Slot> {
        let this = &mut *self;
        let inner = &this.limiter.inner;
        let mut st = inner.lock();
        match this.id {
            None => {
                if st.cut.is_some() {
                    st.grow(inner, Instant::now());
                }
                if st.waiters.none_waiting() && st.in_flight < st.cap() {
                    st.in_flight += 1;
                    return Poll::Ready(inner.slot(st.generation));
                }
                tracing::trace!(
                    limit = st.cap(),
                    in_flight = st.in_flight,
                    "waiting for a slot under the concurrency limit"
                );
                this.id = Some(st.waiters.push((), this.place, cx));
                Poll::Pending
            }
            Some(id) => match st.waiters.poll(id, cx) {
                Poll::Ready(()) => {
                    this.id = None;
                    Poll::Ready(inner.slot(st.generation))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl Drop for Acquire<'_> {
    fn drop(&mut self) {
        let Some(id) = self.id else { return };
        let inner = &self.limiter.inner;
        let wake = {
            let mut st = inner.lock();
            if st.waiters.cancel(id).is_some() {
                st.in_flight -= 1; // a grant never collected goes back
            }
            st.grant()
        };
        wake.into_iter().for_each(Waker::wake);
    }
}

/// The right to have one request in flight; given back on drop. Tell the limiter how the
/// request ended with [`succeeded`](Self::succeeded) or [`throttled`](Self::throttled); a slot
/// dropped without either (a transient failure, a cancelled request) leaves the limit as it is.
#[must_use = "dropping a slot gives it back at once"]
#[derive(Debug)]
pub(crate) struct Slot {
    inner: Arc<Inner>,
    generation: u64,
    /// Given back already (by [`succeeded`](Self::succeeded)).
    released: bool,
}

impl Slot {
    /// The request succeeded: the limit may grow, and throttling at the floor is forgotten.
    pub(crate) fn succeeded(self) -> Change {
        self.succeeded_at(None)
    }

    /// Gives the slot back after a success (at `now`, or the clock's now), under one lock.
    fn succeeded_at(mut self, now: Option<Instant>) -> Change {
        let inner = &*self.inner;
        let (change, wake) = {
            let mut st = inner.lock();
            st.strikes = 0;
            st.in_flight -= 1;
            let mut change = Change::None;
            if st.cut.is_some() {
                let from = st.cap();
                st.grow(inner, now.unwrap_or_else(Instant::now));
                let to = st.cap();
                if to > from {
                    change = Change::Raised { from, to };
                }
            }
            (change, st.grant())
        };
        self.released = true;
        wake.into_iter().for_each(Waker::wake);
        change
    }

    /// The request was throttled, the `part_throttled`-th time in a row for its part: cuts (or
    /// refines the last cut of) the limit. Returns how the limit moved, and — at the floor —
    /// how long the caller should keep this slot before it tries again.
    pub(crate) fn throttled(&mut self, part_throttled: u32) -> (Change, Option<Duration>) {
        self.throttled_at(part_throttled, Instant::now(), fastrand::f64())
    }

    fn throttled_at(
        &mut self,
        part_throttled: u32,
        now: Instant,
        unit_random: f64,
    ) -> (Change, Option<Duration>) {
        let inner = &*self.inner;
        let mut st = inner.lock();
        st.grow(inner, now);
        let from = st.cap();
        let at_floor = st.cap() as f64 <= inner.min;
        let cut = self.generation == st.generation;
        if cut {
            // Sent under the limit now in force: cut it — from what was in use, if that was
            // less (a limit never reached says nothing about what the server takes).
            st.generation += 1;
            let w_max = st.limit.min(st.in_flight as f64);
            let start = (w_max * BETA).max(inner.min);
            st.cut = Some(Cut {
                at: now,
                w_max,
                in_flight: st.in_flight,
                throttled: 1,
            });
            st.limit = start;
        } else if self.generation + 1 == st.generation {
            // Sent before the last cut: what the server accepted of that generation.
            let limit = st.limit;
            if let Some(cut) = &mut st.cut {
                cut.throttled += 1;
                let accepted = (cut.in_flight.saturating_sub(cut.throttled) as f64).max(inner.min);
                if accepted < limit {
                    *cut = Cut {
                        at: now,
                        w_max: accepted,
                        ..*cut
                    };
                    st.limit = accepted;
                }
            }
        }
        let to = st.cap();
        // At the floor, one throttled reply among successes costs only itself; two with no
        // success between mean even the floor is too much, and the holds begin. A fixed limit
        // (floor and ceiling alike) holds many slots at once, so each part backs off on its own
        // count instead of the client's.
        let hold = if at_floor {
            st.strikes += 1;
            let n = if inner.min >= inner.max {
                part_throttled
            } else {
                st.strikes
            };
            (n > 1).then(|| backoff_delay(inner.base_delay, inner.max_delay, n - 1, unit_random))
        } else {
            None
        };
        let change = match (to < from, cut) {
            (false, _) => Change::None,
            (true, true) => Change::Lowered { from, to },
            (true, false) => Change::Refined { from, to },
        };
        (change, hold)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.released {
            self.inner.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    fn limiter(min: usize, max: usize) -> Limiter {
        let cfg = ThrottleConfig {
            min_concurrency: min,
            max_concurrency: Some(max),
            recovery: Duration::from_secs(1),
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            ..ThrottleConfig::default()
        };
        Limiter::new(&cfg, 64)
    }

    fn take(l: &Limiter, n: usize) -> Vec<Slot> {
        (0..n)
            .map(|_| l.acquire(Place::Back).now_or_never().expect("a free slot"))
            .collect()
    }

    fn raw_limit(l: &Limiter) -> f64 {
        l.lock().limit
    }

    #[test]
    fn a_cut_is_once_per_generation_and_refined_by_what_was_accepted() {
        let l = limiter(1, 32);
        let mut slots = take(&l, 32);
        assert!(l.acquire(Place::Back).now_or_never().is_none());
        let t0 = Instant::now();
        // The first throttled reply cuts to 0.7 × 32.
        let (change, hold) = slots[31].throttled_at(1, t0, 0.5);
        assert_eq!(change, Change::Lowered { from: 32, to: 22 });
        assert_eq!(hold, None);
        // 29 more of the same 32 come back throttled: the server took 2 at once.
        for s in &mut slots[2..31] {
            s.throttled_at(1, t0, 0.5);
        }
        assert_eq!(raw_limit(&l), 2.0);
        slots.truncate(2);
        // Only one more may start beside the two in flight... none, until one ends.
        assert!(l.acquire(Place::Back).now_or_never().is_none());
        drop(slots.pop());
        let mut next = take(&l, 1);
        // A throttled reply to a request of the new generation cuts again, to the floor.
        let (change, hold) = next[0].throttled_at(1, t0, 0.5);
        assert_eq!(change, Change::Lowered { from: 2, to: 1 });
        assert_eq!(hold, None, "the limit was above the floor when it was sent");
    }

    #[test]
    fn growth_returns_to_the_cut_point_after_recovery_then_probes_above() {
        let l = limiter(1, 64);
        let mut slots = take(&l, 10);
        // Slots given back with the real clock must not move the curve: start it later.
        let t0 = Instant::now() + Duration::from_secs(3600);
        let _ = slots[0].throttled_at(1, t0, 0.5);
        drop(slots);
        assert_eq!(raw_limit(&l), 7.0);
        let at = |ms: u64| {
            let s = take(&l, 1).pop().unwrap();
            let _ = s.succeeded_at(Some(t0 + Duration::from_millis(ms)));
            raw_limit(&l)
        };
        let half = at(500);
        assert!(
            half > 9.0 && half < 10.0,
            "concave: most of the way back: {half}"
        );
        assert!((at(1000) - 10.0).abs() < 1e-9, "back at w_max after R");
        assert!((at(2000) - 13.0).abs() < 1e-9, "30 % above at 2R");
        assert_eq!(at(10_000), 64.0, "and up to the maximum");
        assert!(l.lock().cut.is_none());
    }

    #[test]
    fn at_the_floor_a_throttled_request_keeps_its_slot_for_a_growing_backoff() {
        let l = limiter(1, 4);
        let t0 = Instant::now();
        // Throttled with one request in flight: that one is the measure, whatever the limit.
        let mut s = take(&l, 1).pop().unwrap();
        let (change, hold) = s.throttled_at(1, t0, 1.0);
        assert_eq!((change, hold), (Change::Lowered { from: 4, to: 1 }, None));
        drop(s);
        let mut delays = Vec::new();
        for _ in 0..4 {
            let mut s = take(&l, 1).pop().unwrap();
            let (_, hold) = s.throttled_at(1, t0, 1.0);
            delays.push(hold);
            // Nothing else may start while it is held.
            assert!(l.acquire(Place::Back).now_or_never().is_none());
        }
        assert_eq!(
            delays,
            [None, Some(100), Some(200), Some(400)].map(|d| d.map(Duration::from_millis)),
            "the first costs only itself; then doubling from the base"
        );
        // A success forgets the strikes.
        let _ = take(&l, 1).pop().unwrap().succeeded_at(Some(t0));
        let mut s = take(&l, 1).pop().unwrap();
        assert_eq!(s.throttled_at(1, t0, 1.0).1, None);
        drop(s);
        let mut s = take(&l, 1).pop().unwrap();
        assert_eq!(
            s.throttled_at(1, t0, 1.0).1,
            Some(Duration::from_millis(100))
        );
    }

    #[test]
    fn off_the_limit_stays_put_and_throttled_parts_back_off_each_on_its_own() {
        let cfg = ThrottleConfig {
            adaptive: false,
            ..ThrottleConfig::default()
        };
        let l = Limiter::new(&cfg, 8);
        // Each part backs off on its own count: 8 first throttles hold nothing, thirds do.
        let mut slots = take(&l, 8);
        for s in &mut slots {
            let (change, hold) = s.throttled_at(1, Instant::now(), 0.5);
            assert_eq!((change, hold), (Change::None, None));
        }
        for s in &mut slots {
            let (_, hold) = s.throttled_at(3, Instant::now(), 1.0);
            assert_eq!(hold, Some(Duration::from_millis(1000)));
        }
        drop(slots);
        assert_eq!(l.limit(), 8);
    }

    #[tokio::test]
    async fn waiters_are_fifo_retries_go_first_and_cancelled_ones_step_aside() {
        let l = limiter(1, 1);
        let held = take(&l, 1).pop().unwrap();
        let mut first = Box::pin(l.acquire(Place::Back));
        let mut second = Box::pin(l.acquire(Place::Back));
        let mut retry = Box::pin(l.acquire(Place::Front));
        assert!((&mut first).now_or_never().is_none());
        assert!((&mut second).now_or_never().is_none());
        assert!((&mut retry).now_or_never().is_none());
        drop(held);
        // The retry was queued last but goes first.
        assert!((&mut first).now_or_never().is_none());
        let slot = (&mut retry).now_or_never().expect("granted");
        drop(slot);
        // A granted but uncollected slot goes on to the next when its future is dropped.
        drop(first);
        assert!((&mut second).now_or_never().is_some());
        assert_eq!(l.lock().in_flight, 0);
    }
}
