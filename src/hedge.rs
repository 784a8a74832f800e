//! Hedged requests: a GET whose response head is late gets a second, identical request on
//! another connection, and the first head to arrive wins.
//!
//! [`HedgeConfig`] says when: after a threshold learned from the client's own recent first-byte
//! times (a high quantile times a factor, never below a floor, so a uniformly slow server is
//! not hedged at all), within a budget of hedges per request (a token bucket). [`Hedging`] is
//! the client-wide state: the first-byte times, kept as a decaying log-scale histogram, and
//! the tokens. Whether a hedge may take a connection (the limiter at its ceiling, a spare right
//! of the request, a free connection) is decided where it is sent, in `fetch`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// When slow GETs are sent again ([`ClientBuilder::hedge`](crate::ClientBuilder::hedge)).
///
/// A part whose response head has not arrived after `quantile` of the recent first-byte times
/// × `factor` (and at least `floor`) is requested again on another connection, with the same
/// range and `If-Match`; the first head to arrive wins and the other exchange is closed
/// (HTTP/1.1 cannot cancel a request in flight). Hedges take no connection beyond
/// `max_connections` or the request's `max_connections_per_request`, and none while the
/// adaptive limit is below its ceiling: a throttling server gets fewer requests, never more.
#[derive(Debug, Clone, PartialEq)]
pub struct HedgeConfig {
    /// Hedge at all. Default: on.
    pub enabled: bool,
    /// The quantile of recent first-byte times the threshold starts from, in (0, 1).
    /// Default: 0.95.
    pub quantile: f64,
    /// What the quantile is multiplied by, at least 1. Default: 1.5.
    pub factor: f64,
    /// The least the threshold can be. Default: 30 ms.
    pub floor: Duration,
    /// Hedges allowed per GET, in [0, 1]: each GET answered earns this much of a hedge, up to
    /// [`burst`](Self::burst) saved. Default: 0.02 (at most 2 % more GETs, over time).
    pub budget: f64,
    /// The most hedges that can be sent in a row, at least 1. Default: 10.
    pub burst: u32,
}

impl Default for HedgeConfig {
    fn default() -> Self {
        HedgeConfig {
            enabled: true,
            quantile: 0.95,
            factor: 1.5,
            floor: Duration::from_millis(30),
            budget: 0.02,
            burst: 10,
        }
    }
}

impl HedgeConfig {
    /// No hedging.
    pub fn off() -> Self {
        HedgeConfig {
            enabled: false,
            ..HedgeConfig::default()
        }
    }

    /// Why the configuration is invalid, naming the field, if it is.
    pub(crate) fn invalid(&self) -> Option<String> {
        if !(self.quantile > 0.0 && self.quantile < 1.0) {
            return Some(format!("hedge quantile {} is not in (0, 1)", self.quantile));
        }
        if !(self.factor >= 1.0 && self.factor.is_finite()) {
            return Some(format!("hedge factor {} is less than 1", self.factor));
        }
        if !(0.0..=1.0).contains(&self.budget) {
            return Some(format!("hedge budget {} is not in [0, 1]", self.budget));
        }
        if self.burst == 0 {
            return Some("hedge burst is 0".to_owned());
        }
        None
    }
}

/// First-byte times seen before any hedge is sent: too few say nothing of the tail.
const MIN_SAMPLES: u32 = 16;

/// Buckets per doubling of the time: a bucket spans 9 % of its value.
const STEPS: f64 = 8.0;

/// Buckets: from 1 µs to 2^32 µs (over an hour).
const BUCKETS: usize = 32 * STEPS as usize;

/// Counts are halved when they add up to this, so old times fade.
const DECAY_AT: u32 = 4096;

/// The threshold is computed again after this many new times.
const REFRESH: u32 = 32;

/// The client-wide hedging state.
#[derive(Debug)]
pub(crate) struct Hedging {
    config: HedgeConfig,
    /// The threshold in nanoseconds, 0 until enough times were seen: read without the lock,
    /// by every GET sent.
    threshold: AtomicU64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    counts: Box<[u32; BUCKETS]>,
    total: u32,
    /// Times recorded since the threshold was computed.
    fresh: u32,
    /// Hedges that may be sent now.
    tokens: f64,
}

impl Hedging {
    pub(crate) fn new(config: HedgeConfig) -> Self {
        let tokens = f64::from(config.burst);
        Hedging {
            config,
            threshold: AtomicU64::new(0),
            state: Mutex::new(State {
                counts: Box::new([0; BUCKETS]),
                total: 0,
                fresh: 0,
                tokens,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How long to wait for a GET's response head before hedging it, if it may be hedged at
    /// all (hedging on, enough times seen).
    pub(crate) fn threshold(&self) -> Option<Duration> {
        match self.threshold.load(Ordering::Relaxed) {
            0 => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }

    /// A response head came `after` its request was sent: the time is kept, and the GET earns
    /// its share of a hedge.
    pub(crate) fn record(&self, after: Duration) {
        if !self.config.enabled {
            return;
        }
        let micros = after.as_micros().max(1) as f64;
        let idx = ((micros.log2() * STEPS) as usize).min(BUCKETS - 1);
        let mut st = self.lock();
        st.tokens = (st.tokens + self.config.budget).min(f64::from(self.config.burst));
        st.counts[idx] += 1;
        st.total += 1;
        st.fresh += 1;
        if st.total >= DECAY_AT {
            st.counts.iter_mut().for_each(|c| *c /= 2);
            st.total = st.counts.iter().sum();
        }
        let unset = self.threshold.load(Ordering::Relaxed) == 0;
        if st.total >= MIN_SAMPLES && (unset || st.fresh >= REFRESH) {
            st.fresh = 0;
            let at = self.threshold_of(&st).as_nanos();
            self.threshold.store(
                u64::try_from(at).unwrap_or(u64::MAX).max(1),
                Ordering::Relaxed,
            );
        }
    }

    /// `quantile` of the times × `factor`, at least `floor`.
    fn threshold_of(&self, st: &State) -> Duration {
        let want = (f64::from(st.total) * self.config.quantile).ceil() as u32;
        let mut seen = 0;
        let mut idx = BUCKETS - 1;
        for (i, c) in st.counts.iter().enumerate() {
            seen += c;
            if seen >= want.max(1) {
                idx = i;
                break;
            }
        }
        // The bucket's upper edge.
        let micros = ((idx + 1) as f64 / STEPS).exp2();
        let at = Duration::from_secs_f64(micros * self.config.factor / 1e6);
        at.max(self.config.floor)
    }

    /// Whether the budget has a hedge to give.
    pub(crate) fn has_token(&self) -> bool {
        self.lock().tokens >= 1.0
    }

    /// Takes a hedge from the budget; false when it is spent.
    pub(crate) fn take(&self) -> bool {
        let mut st = self.lock();
        if st.tokens >= 1.0 {
            st.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_threshold_follows_the_tail_of_recent_times_above_the_floor() {
        let h = Hedging::new(HedgeConfig::default());
        // Too few times: no hedging yet.
        for _ in 0..MIN_SAMPLES - 1 {
            h.record(ms(20));
        }
        assert_eq!(h.threshold(), None);
        h.record(ms(20));
        // 95 % at 20 ms: one and a half times that (within a bucket), above the 30 ms floor.
        let t = h.threshold().unwrap();
        assert!(t >= ms(30) && t <= ms(33), "{t:?}");
        // A fast server: the floor.
        let fast = Hedging::new(HedgeConfig::default());
        (0..200).for_each(|_| fast.record(Duration::from_micros(300)));
        assert_eq!(fast.threshold(), Some(ms(30)));
        // A uniformly slow server: half as much again as its own time, so its replies are not
        // hedged.
        let slow = Hedging::new(HedgeConfig::default());
        (0..200).for_each(|_| slow.record(ms(1000)));
        assert!(slow.threshold().unwrap() >= ms(1500));
        // A tail of 1 % does not move the 95th percentile.
        let tail = Hedging::new(HedgeConfig::default());
        for i in 0..1000 {
            tail.record(if i % 100 == 0 { ms(1000) } else { ms(20) });
        }
        assert!(tail.threshold().unwrap() <= ms(33));
    }

    #[test]
    fn old_times_fade() {
        let h = Hedging::new(HedgeConfig::default());
        (0..1000).for_each(|_| h.record(ms(500)));
        assert!(h.threshold().unwrap() >= ms(750));
        (0..20_000).for_each(|_| h.record(ms(20)));
        assert!(h.threshold().unwrap() <= ms(33));
    }

    #[test]
    fn the_budget_allows_a_burst_then_its_share_per_get() {
        let h = Hedging::new(HedgeConfig {
            budget: 0.25,
            burst: 2,
            ..HedgeConfig::default()
        });
        assert!(h.take() && h.take());
        assert!(!h.take());
        // Four GETs answered earn one hedge.
        (0..3).for_each(|_| h.record(ms(20)));
        assert!(!h.take());
        h.record(ms(20));
        assert!(h.take());
        let bad = HedgeConfig {
            quantile: 1.0,
            ..HedgeConfig::default()
        };
        assert!(bad.invalid().unwrap().contains("quantile"));
        assert!(HedgeConfig::off().invalid().is_none());
        assert_eq!(Hedging::new(HedgeConfig::off()).threshold(), None);
    }
}
