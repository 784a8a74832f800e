//! Retry policy: which failures are retried, how long to wait, the client-wide budget that keeps
//! a sick endpoint from turning into a retry storm, and the separate bound on throttling.
//!
//! * **What**: decided by [`ErrorKind`] alone (never by message text). Transient kinds —
//!   connect and connection failures, stalls, HTTP 500/502/504/408 — are retried; every other
//!   4xx, length and checksum mismatches and a changed object are not. Throttling (503, 429,
//!   S3's `SlowDown` and friends) is neither: it is the server asking for fewer requests, so a
//!   throttled attempt is tried again under the client's adaptive concurrency limit
//!   ([`ThrottleConfig`]) and spends neither the object's attempts nor the retry budget.
//! * **How long**: exponential backoff with full jitter (a uniformly random delay between zero
//!   and `min(max_delay, base × 2^(attempt-1))`, "Exponential Backoff And Jitter", AWS
//!   Architecture Blog, 2015).
//! * **How many**: at most `max_attempts` per object, and each retry spends tokens from a
//!   bucket shared by the whole client that refills at a fixed rate (the AWS SDKs' standard
//!   retry mode: 500 tokens, 5 per retry, 10 per timeout). When the bucket is empty, failures
//!   are returned instead of retried until it refills. Throttling has its own bound, in time:
//!   a part fails as [`ErrorKind::Throttled`] only once the server has refused it for
//!   [`ThrottleConfig::timeout`].

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind};

/// Retry settings; [`Default`] suits S3.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// Attempts per object, the first included; 1 disables retries. Default: 5.
    pub max_attempts: u32,
    /// Backoff base for transient failures. Default: 50 ms.
    pub base_delay: Duration,
    /// Longest wait between two attempts. Default: 20 s.
    pub max_delay: Duration,
    /// Tokens in the client-wide retry budget when full. Default: 500.
    pub budget_capacity: u32,
    /// Tokens one retry costs (twice that after a timeout). Default: 5.
    pub budget_retry_cost: u32,
    /// Tokens the budget regains per second. Default: 10.
    pub budget_refill_per_sec: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 5,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(20),
            budget_capacity: 500,
            budget_retry_cost: 5,
            budget_refill_per_sec: 10,
        }
    }
}

impl RetryConfig {
    /// No retries at all: every failure is returned after one attempt.
    pub fn disabled() -> Self {
        RetryConfig {
            max_attempts: 1,
            ..RetryConfig::default()
        }
    }
}

/// How the client behaves when the server throttles (503 `SlowDown`, 429 and S3's other
/// throttling codes); [`Default`] suits S3.
///
/// Throttled attempts are tried again without spending the object's `max_attempts` or the
/// retry budget. Instead, a client-wide limit on requests in flight adapts: each throttled
/// reply to a request sent since the last cut multiplies it by 0.7, and it grows back over
/// [`recovery`](Self::recovery), CUBIC-style (the AWS SDKs' adaptive retry mode, applied to
/// concurrency). At its floor, a throttled request keeps its place for a backoff delay, so the
/// request rate can fall below one request in flight.
#[derive(Debug, Clone, PartialEq)]
pub struct ThrottleConfig {
    /// Adapt the limit to throttling. Off, it stays at `max_concurrency` and every throttled
    /// attempt waits out a backoff delay (from [`base_delay`](Self::base_delay)) before it is
    /// tried again. Default: on.
    pub adaptive: bool,
    /// The lowest the limit falls. Default: 1.
    pub min_concurrency: usize,
    /// The highest the limit grows, and where it starts; `None` is `max_connections`, the
    /// hard cap it always sits under. Default: `None`.
    pub max_concurrency: Option<usize>,
    /// How long the limit takes, after a cut, to grow back to where it was cut; it then probes
    /// above, slowly at first. Shorter follows a server that scales up sooner, at the cost of
    /// more throttled replies. Default: 1 s.
    pub recovery: Duration,
    /// How long one part may be refused, counted from its first throttled reply, before it
    /// fails with [`ErrorKind::Throttled`]. Default: 5 minutes.
    pub timeout: Duration,
    /// Backoff base when throttled at the lowest limit (or with `adaptive` off): the delay is
    /// uniformly random up to `base_delay × 2^n`, where `n` counts throttled replies since the
    /// last success. Default: 500 ms.
    pub base_delay: Duration,
    /// The longest such delay. Default: 20 s.
    pub max_delay: Duration,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            adaptive: true,
            min_concurrency: 1,
            max_concurrency: None,
            recovery: Duration::from_secs(1),
            timeout: Duration::from_secs(300),
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(20),
        }
    }
}

/// How a failure is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Transient,
    Throttle,
    Fatal,
}

/// Classifies a failure by its kind and status.
pub(crate) fn classify(e: &Error) -> Class {
    match e.kind() {
        ErrorKind::Throttled => Class::Throttle,
        ErrorKind::Connect | ErrorKind::Connection | ErrorKind::Timeout => Class::Transient,
        ErrorKind::Status if e.is_retryable() => Class::Transient,
        _ => Class::Fatal,
    }
}

/// Exponential backoff with full jitter: uniform in `[0, min(max, base × 2^(n-1)))` after `n`
/// failures (`n >= 1`); `unit_random` is uniform in `[0, 1)` (injected, so tests are
/// deterministic).
pub(crate) fn backoff_delay(base: Duration, max: Duration, n: u32, unit_random: f64) -> Duration {
    let exp = n.saturating_sub(1).min(30);
    let cap = base.saturating_mul(1u32 << exp).min(max);
    cap.mul_f64(unit_random.clamp(0.0, 1.0))
}

/// The client-wide retry budget: a token bucket that refills over time.
#[derive(Debug)]
pub(crate) struct RetryBudget {
    state: Mutex<(f64, Instant)>,
    capacity: f64,
    refill_per_sec: f64,
}

impl RetryBudget {
    pub(crate) fn new(cfg: &RetryConfig) -> Self {
        RetryBudget {
            state: Mutex::new((cfg.budget_capacity as f64, Instant::now())),
            capacity: cfg.budget_capacity as f64,
            refill_per_sec: cfg.budget_refill_per_sec as f64,
        }
    }

    /// Takes `cost` tokens if the bucket holds them.
    pub(crate) fn try_take(&self, cost: u32) -> bool {
        self.try_take_at(cost, Instant::now())
    }

    fn try_take_at(&self, cost: u32, now: Instant) -> bool {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(st.1).as_secs_f64();
        st.0 = (st.0 + elapsed * self.refill_per_sec).min(self.capacity);
        st.1 = now;
        if st.0 >= cost as f64 {
            st.0 -= cost as f64;
            true
        } else {
            false
        }
    }
}

/// What to do after a failed attempt that may be tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// A transient failure: the backoff has passed; go again.
    Retry,
    /// A throttled reply: go again under the concurrency limit, within `left` of the throttle
    /// timeout.
    Throttled { left: Duration },
}

/// One call's way through its attempts: decides after each failure whether to go again, waits
/// the backoff of transient failures, bounds throttling in time, and remembers why each attempt
/// failed.
#[derive(Debug)]
pub(crate) struct Retrier<'a> {
    cfg: &'a RetryConfig,
    budget: &'a RetryBudget,
    throttle_timeout: Duration,
    attempt: u32,
    throttled: u32,
    first_throttled: Option<Instant>,
    earlier: Vec<String>,
}

impl<'a> Retrier<'a> {
    pub(crate) fn new(
        cfg: &'a RetryConfig,
        throttle_timeout: Duration,
        budget: &'a RetryBudget,
    ) -> Self {
        Retrier {
            cfg,
            budget,
            throttle_timeout,
            attempt: 0,
            throttled: 0,
            first_throttled: None,
            earlier: Vec::new(),
        }
    }

    /// Counts the attempt about to be made.
    pub(crate) fn start_attempt(&mut self) {
        self.attempt += 1;
    }

    /// Takes back the attempt just started: it was redirected, not failed.
    pub(crate) fn forget_attempt(&mut self) {
        self.attempt = self.attempt.saturating_sub(1);
    }

    /// After a failed attempt: what to do next, or the final error, carrying the attempt
    /// count and the earlier failures. A transient failure's backoff is waited here.
    pub(crate) async fn after_failure(&mut self, e: Error) -> Result<Next, Error> {
        match classify(&e) {
            Class::Throttle => self.after_throttle(e, Instant::now()),
            Class::Fatal => Err(self.finish(e)),
            Class::Transient => {
                if self.attempt >= self.cfg.max_attempts {
                    return Err(self.finish(e));
                }
                let cost = match e.kind() {
                    ErrorKind::Timeout => self.cfg.budget_retry_cost.saturating_mul(2),
                    _ => self.cfg.budget_retry_cost,
                };
                if !self.budget.try_take(cost) {
                    let e = self.finish(e);
                    return Err(e.with_budget_exhausted());
                }
                let delay = backoff_delay(
                    self.cfg.base_delay,
                    self.cfg.max_delay,
                    self.attempt,
                    fastrand::f64(),
                );
                tracing::info!(
                    attempt = self.attempt,
                    backoff_ms = delay.as_millis() as u64,
                    reason = %e,
                    "retrying after a transient failure"
                );
                self.earlier.push(e.to_string());
                tokio::time::sleep(delay).await;
                Ok(Next::Retry)
            }
        }
    }

    /// A throttled attempt does not count against `max_attempts`; the part fails only once the
    /// throttle timeout has passed since its first throttled reply.
    fn after_throttle(&mut self, e: Error, now: Instant) -> Result<Next, Error> {
        self.attempt -= 1;
        self.throttled += 1;
        let since = *self.first_throttled.get_or_insert(now);
        let refused = now.saturating_duration_since(since);
        match self.throttle_timeout.checked_sub(refused) {
            Some(left) if !left.is_zero() => Ok(Next::Throttled { left }),
            _ => {
                let why = format!(
                    "refused for {:.1}s, the throttle timeout",
                    refused.as_secs_f64()
                );
                let message = match e.message() {
                    Some(m) => format!("{why}: {m}"),
                    None => why,
                };
                let e = e.with_message(message);
                Err(self.finish(e))
            }
        }
    }

    /// Throttled replies so far.
    pub(crate) fn throttled(&self) -> u32 {
        self.throttled
    }

    /// Attempts made so far, throttled ones excepted.
    pub(crate) fn attempts(&self) -> u32 {
        self.attempt
    }

    fn finish(&mut self, e: Error) -> Error {
        e.with_attempts(self.attempt)
            .with_throttled(self.throttled)
            .with_earlier(std::mem::take(&mut self.earlier))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn status(code: u16) -> Error {
        crate::s3::status_error(StatusCode::from_u16(code).unwrap(), b"", None)
    }

    #[test]
    fn classification_follows_kind_and_status() {
        assert_eq!(classify(&status(500)), Class::Transient);
        assert_eq!(classify(&status(502)), Class::Transient);
        assert_eq!(classify(&status(504)), Class::Transient);
        assert_eq!(classify(&status(408)), Class::Transient);
        assert_eq!(classify(&status(503)), Class::Throttle);
        assert_eq!(classify(&status(429)), Class::Throttle);
        let slow = crate::s3::status_error(
            StatusCode::BAD_REQUEST,
            b"<Error><Code>SlowDown</Code></Error>",
            None,
        );
        assert_eq!(classify(&slow), Class::Throttle);
        for fatal in [400, 401, 403, 404, 409, 412, 416] {
            assert_eq!(classify(&status(fatal)), Class::Fatal, "{fatal}");
        }
        assert_eq!(classify(&Error::new(ErrorKind::Timeout)), Class::Transient);
        assert_eq!(classify(&Error::new(ErrorKind::Connect)), Class::Transient);
        assert_eq!(
            classify(&Error::new(ErrorKind::LengthMismatch)),
            Class::Fatal
        );
        assert_eq!(
            classify(&Error::new(ErrorKind::ChecksumMismatch)),
            Class::Fatal
        );
        assert_eq!(classify(&Error::new(ErrorKind::Changed)), Class::Fatal);
    }

    #[test]
    fn backoff_is_exponential_capped_and_jittered() {
        let (base, max) = (Duration::from_millis(100), Duration::from_secs(5));
        assert_eq!(backoff_delay(base, max, 1, 1.0), Duration::from_millis(100));
        assert_eq!(backoff_delay(base, max, 2, 1.0), Duration::from_millis(200));
        assert_eq!(backoff_delay(base, max, 4, 1.0), Duration::from_millis(800));
        assert_eq!(backoff_delay(base, max, 4, 0.5), Duration::from_millis(400));
        assert_eq!(backoff_delay(base, max, 4, 0.0), Duration::ZERO);
        assert_eq!(backoff_delay(base, max, 40, 1.0), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn retrier_stops_at_max_attempts_and_keeps_history() {
        let cfg = RetryConfig {
            max_attempts: 3,
            ..RetryConfig::default()
        };
        let budget = RetryBudget::new(&cfg);
        let mut r = Retrier::new(&cfg, Duration::from_secs(60), &budget);
        let started = tokio::time::Instant::now();
        r.start_attempt();
        let next = r.after_failure(Error::new(ErrorKind::Connection).with_message("reset"));
        assert_eq!(next.await.unwrap(), Next::Retry);
        r.start_attempt();
        r.after_failure(status(502)).await.unwrap();
        r.start_attempt();
        let e = r.after_failure(status(500)).await.unwrap_err();
        assert_eq!(e.attempts(), 3);
        assert_eq!(e.earlier_attempts().len(), 2);
        assert!(e.earlier_attempts()[0].contains("reset"), "{e:?}");
        assert!(e.earlier_attempts()[1].contains("502"), "{e:?}");
        // Backoff is bounded: at most 50 ms, then 100 ms.
        assert!(started.elapsed() <= Duration::from_millis(150));
        assert!(e.to_string().contains("after 3 attempts"), "{e}");
    }

    #[tokio::test]
    async fn throttling_spends_no_attempts_and_is_bounded_in_time() {
        let cfg = RetryConfig {
            max_attempts: 2,
            budget_capacity: 0,
            ..RetryConfig::default()
        };
        let budget = RetryBudget::new(&cfg);
        let mut r = Retrier::new(&cfg, Duration::from_secs(10), &budget);
        let t0 = Instant::now();
        for i in 0..50u64 {
            r.start_attempt();
            let next = r.after_throttle(status(503), t0 + Duration::from_millis(100 * i));
            let left = Duration::from_secs(10) - Duration::from_millis(100 * i);
            assert_eq!(next.unwrap(), Next::Throttled { left });
        }
        assert_eq!(r.attempts(), 0, "throttled attempts are not counted");
        r.start_attempt();
        let e = r
            .after_throttle(status(503), t0 + Duration::from_secs(10))
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Throttled);
        assert_eq!((e.attempts(), e.throttled_attempts()), (0, 51));
        assert!(e.to_string().contains("refused for 10.0s"), "{e}");
        assert!(e.to_string().contains("51 throttled"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn fatal_errors_and_an_empty_budget_stop_at_once() {
        let cfg = RetryConfig {
            budget_capacity: 5,
            budget_refill_per_sec: 0,
            ..RetryConfig::default()
        };
        let budget = RetryBudget::new(&cfg);
        let mut r = Retrier::new(&cfg, Duration::from_secs(60), &budget);
        r.start_attempt();
        let e = r.after_failure(status(404)).await.unwrap_err();
        assert_eq!((e.kind(), e.attempts()), (ErrorKind::NotFound, 1));

        let mut r = Retrier::new(&cfg, Duration::from_secs(60), &budget);
        r.start_attempt();
        r.after_failure(status(500)).await.unwrap(); // spends the only 5 tokens
        r.start_attempt();
        let e = r.after_failure(status(500)).await.unwrap_err();
        assert_eq!(e.attempts(), 2);
        assert!(e.retry_budget_exhausted());
        assert!(e.to_string().contains("retry budget exhausted"), "{e}");
    }

    #[test]
    fn budget_drains_and_refills_over_time() {
        let cfg = RetryConfig {
            budget_capacity: 10,
            budget_refill_per_sec: 2,
            ..RetryConfig::default()
        };
        let b = RetryBudget::new(&cfg);
        let t0 = Instant::now();
        assert!(b.try_take_at(5, t0));
        assert!(b.try_take_at(5, t0));
        assert!(!b.try_take_at(5, t0));
        assert!(!b.try_take_at(5, t0 + Duration::from_secs(2)));
        assert!(b.try_take_at(5, t0 + Duration::from_millis(2600)));
        // Never above capacity, however long it rests.
        let later = t0 + Duration::from_secs(3600);
        assert!(b.try_take_at(10, later));
        assert!(!b.try_take_at(1, later));
    }
}
