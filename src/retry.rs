//! Retry policy: which failures are retried, how long to wait, and the client-wide budget that
//! keeps a sick endpoint from turning into a retry storm.
//!
//! * **What**: decided by [`ErrorKind`] alone (never by message text). Transient kinds —
//!   connect and connection failures, stalls, HTTP 500/502/504/408 — and throttling (503, 429,
//!   S3's `SlowDown` and friends) are retried; every other 4xx, length and checksum mismatches
//!   and a changed object are not.
//! * **How long**: exponential backoff with full jitter (a uniformly random delay between zero
//!   and `min(max_delay, base × 2^(attempt-1))`, "Exponential Backoff And Jitter", AWS
//!   Architecture Blog, 2015). Throttling uses the larger `throttle_base_delay`.
//! * **How many**: at most `max_attempts` per object, and each retry spends tokens from a
//!   bucket shared by the whole client that refills at a fixed rate (the AWS SDKs' standard
//!   retry mode: 500 tokens, 5 per retry, 10 per timeout). When the bucket is empty, failures
//!   are returned instead of retried until it refills.

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
    /// Backoff base for throttling (503 `SlowDown`, 429). Default: 500 ms.
    pub throttle_base_delay: Duration,
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
            throttle_base_delay: Duration::from_millis(500),
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

/// The wait before attempt `attempt + 1`, after `attempt` failures (`attempt >= 1`);
/// `unit_random` is uniform in `[0, 1)` (injected, so tests are deterministic).
pub(crate) fn backoff_delay(
    cfg: &RetryConfig,
    class: Class,
    attempt: u32,
    unit_random: f64,
) -> Duration {
    let base = match class {
        Class::Throttle => cfg.throttle_base_delay,
        Class::Transient | Class::Fatal => cfg.base_delay,
    };
    let exp = attempt.saturating_sub(1).min(30);
    let cap = base.saturating_mul(1u32 << exp).min(cfg.max_delay);
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

/// One call's way through its attempts: decides after each failure whether to go again, waits
/// the backoff, and remembers why each attempt failed.
#[derive(Debug)]
pub(crate) struct Retrier<'a> {
    cfg: &'a RetryConfig,
    budget: &'a RetryBudget,
    attempt: u32,
    earlier: Vec<String>,
}

impl<'a> Retrier<'a> {
    pub(crate) fn new(cfg: &'a RetryConfig, budget: &'a RetryBudget) -> Self {
        Retrier {
            cfg,
            budget,
            attempt: 0,
            earlier: Vec::new(),
        }
    }

    /// Counts the attempt about to be made.
    pub(crate) fn start_attempt(&mut self) {
        self.attempt += 1;
    }

    /// After a failed attempt: `Ok(())` once the backoff has passed and another attempt may
    /// be made, or the final error, carrying the attempt count and the earlier failures.
    pub(crate) async fn after_failure(&mut self, e: Error) -> Result<(), Error> {
        let class = classify(&e);
        let cost = match e.kind() {
            ErrorKind::Timeout => self.cfg.budget_retry_cost.saturating_mul(2),
            _ => self.cfg.budget_retry_cost,
        };
        if class == Class::Fatal || self.attempt >= self.cfg.max_attempts {
            return Err(self.finish(e));
        }
        if !self.budget.try_take(cost) {
            let e = self.finish(e);
            return Err(e.with_budget_exhausted());
        }
        self.earlier.push(e.to_string());
        let delay = backoff_delay(self.cfg, class, self.attempt, fastrand::f64());
        tokio::time::sleep(delay).await;
        Ok(())
    }

    /// Attempts made so far.
    pub(crate) fn attempts(&self) -> u32 {
        self.attempt
    }

    fn finish(&mut self, e: Error) -> Error {
        e.with_attempts(self.attempt)
            .with_earlier(std::mem::take(&mut self.earlier))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn status(code: u16) -> Error {
        crate::s3::status_error(StatusCode::from_u16(code).unwrap(), b"")
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
        let cfg = RetryConfig {
            base_delay: Duration::from_millis(100),
            throttle_base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(5),
            ..RetryConfig::default()
        };
        let t = Class::Transient;
        assert_eq!(backoff_delay(&cfg, t, 1, 1.0), Duration::from_millis(100));
        assert_eq!(backoff_delay(&cfg, t, 2, 1.0), Duration::from_millis(200));
        assert_eq!(backoff_delay(&cfg, t, 4, 1.0), Duration::from_millis(800));
        assert_eq!(backoff_delay(&cfg, t, 4, 0.5), Duration::from_millis(400));
        assert_eq!(backoff_delay(&cfg, t, 4, 0.0), Duration::ZERO);
        assert_eq!(backoff_delay(&cfg, t, 40, 1.0), Duration::from_secs(5));
        assert_eq!(
            backoff_delay(&cfg, Class::Throttle, 1, 1.0),
            Duration::from_secs(1)
        );
        assert_eq!(
            backoff_delay(&cfg, Class::Throttle, 3, 1.0),
            Duration::from_secs(4)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retrier_stops_at_max_attempts_and_keeps_history() {
        let cfg = RetryConfig {
            max_attempts: 3,
            ..RetryConfig::default()
        };
        let budget = RetryBudget::new(&cfg);
        let mut r = Retrier::new(&cfg, &budget);
        let started = tokio::time::Instant::now();
        r.start_attempt();
        r.after_failure(Error::new(ErrorKind::Connection).with_message("reset"))
            .await
            .unwrap();
        r.start_attempt();
        r.after_failure(status(503)).await.unwrap();
        r.start_attempt();
        let e = r.after_failure(status(500)).await.unwrap_err();
        assert_eq!(e.attempts(), 3);
        assert_eq!(e.earlier_attempts().len(), 2);
        assert!(e.earlier_attempts()[0].contains("reset"), "{e:?}");
        assert!(e.earlier_attempts()[1].contains("503"), "{e:?}");
        // Backoff is bounded: transient ≤ 50 ms, then throttle ≤ 1 s.
        assert!(started.elapsed() <= Duration::from_millis(1050));
        assert!(e.to_string().contains("after 3 attempts"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn fatal_errors_and_an_empty_budget_stop_at_once() {
        let cfg = RetryConfig {
            budget_capacity: 5,
            budget_refill_per_sec: 0,
            ..RetryConfig::default()
        };
        let budget = RetryBudget::new(&cfg);
        let mut r = Retrier::new(&cfg, &budget);
        r.start_attempt();
        let e = r.after_failure(status(404)).await.unwrap_err();
        assert_eq!((e.kind(), e.attempts()), (ErrorKind::NotFound, 1));

        let mut r = Retrier::new(&cfg, &budget);
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
