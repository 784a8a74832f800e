//! Timers of one exchange: the stall timeout, which bounds each wait for the server (the
//! response head, every read of the body) and never the whole transfer, and the body-rate floor
//! ([`MinBodyRate`]), measured on the same timer. A wait arms the timer only when it begins, so
//! reading bytes already buffered costs no clock read.

use std::future::Future;
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::Duration;

use http::StatusCode;
use tokio::time::{Instant, Sleep};

use crate::config::MinBodyRate;
use crate::context::Context;
use crate::error::{Error, ErrorKind};

/// The error of a body that stalled after `got` of `want` bytes.
pub(super) fn stalled(status: StatusCode, stall: Duration, got: u64, want: u64) -> Error {
    Error::new(ErrorKind::Timeout)
        .with_status(status)
        .with_message(format!(
            "body stalled for {} after {got} of {want} bytes",
            fmt_duration(stall)
        ))
}

/// The error of a body that came slower than `floor`.
pub(super) fn slow_body(
    status: StatusCode,
    floor: Option<MinBodyRate>,
    rate: u64,
    got: u64,
    want: u64,
) -> Error {
    let floor = floor.map_or(0, |f| f.bytes_per_second);
    Error::new(ErrorKind::Timeout)
        .with_status(status)
        .with_message(format!(
            "body came at {rate} B/s, below the floor of {floor} B/s, after {got} of {want} bytes"
        ))
}

/// The stall timeout of one attempt: each wait for the server (the response head, a body read)
/// may last at most `stall`. The deadline is armed when a wait begins — when the future first
/// returns `Pending` — so reading bytes already buffered costs no clock read and no timer.
/// A body's waits also check its rate against the floor, on the same timer.
pub(super) struct Stall<'t> {
    timer: Pin<&'t mut Sleep>,
    pub(super) stall: Duration,
    /// The body's rate floor, when one applies.
    pub(super) floor: Option<Floor>,
}

/// A body's progress measured against a [`MinBodyRate`]: `mark` bytes had arrived at `since`
/// (unset until the body first waits).
pub(super) struct Floor {
    rate: MinBodyRate,
    since: Option<Instant>,
    mark: u64,
}

impl Floor {
    pub(super) fn new(rate: MinBodyRate) -> Self {
        Floor {
            rate,
            since: None,
            mark: 0,
        }
    }

    /// At `now`, with `got` bytes in: the rate if a window has passed below the floor; else,
    /// once a window has passed, a new one starts. Then when the window ends.
    fn check(&mut self, now: Instant, got: u64) -> Result<Instant, u64> {
        let Some(since) = self.since else {
            self.since = Some(now);
            self.mark = got;
            return Ok(now + self.rate.window);
        };
        let elapsed = now.saturating_duration_since(since);
        if elapsed < self.rate.window {
            return Ok(since + self.rate.window);
        }
        let bytes = u128::from(got.saturating_sub(self.mark));
        let nanos = elapsed.as_nanos().max(1);
        if bytes * 1_000_000_000 < u128::from(self.rate.bytes_per_second) * nanos {
            return Err(u64::try_from(bytes * 1_000_000_000 / nanos).unwrap_or(u64::MAX));
        }
        self.since = Some(now);
        self.mark = got;
        Ok(now + self.rate.window)
    }
}

/// How a wait for body bytes ended without them.
pub(super) enum Waited {
    Stalled,
    /// Slower than the floor: the rate measured over the window, in bytes per second.
    Slow {
        rate: u64,
    },
}

impl<'t> Stall<'t> {
    pub(super) fn new(timer: Pin<&'t mut Sleep>, stall: Duration) -> Self {
        Stall {
            timer,
            stall,
            floor: None,
        }
    }

    /// `fut`'s output: a wait for body bytes, `got` of which have arrived. Ends early when the
    /// wait passes the stall timeout or the body's rate falls below the floor.
    pub(super) async fn within_body<F: Future>(
        &mut self,
        fut: F,
        got: u64,
    ) -> Result<F::Output, Waited> {
        let mut fut = pin!(fut);
        // Set when the wait begins (the first `Pending`); the clock is read then, and again
        // only when the timer fires, never on a wake that finds no bytes.
        let mut stall_at = None;
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Ok(out));
            }
            let mut now = None;
            let stall_at = *stall_at.get_or_insert_with(|| {
                let at = Instant::now();
                now = Some(at);
                at + self.stall
            });
            loop {
                if let Some(now) = now {
                    let deadline = match self.floor.as_mut().map(|f| f.check(now, got)) {
                        None => stall_at,
                        Some(Ok(window_end)) => stall_at.min(window_end),
                        Some(Err(rate)) => return Poll::Ready(Err(Waited::Slow { rate })),
                    };
                    if self.timer.deadline() != deadline {
                        self.timer.as_mut().reset(deadline);
                    }
                }
                match self.timer.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(()) if self.timer.deadline() >= stall_at => {
                        return Poll::Ready(Err(Waited::Stalled))
                    }
                    // The floor's window ended during the wait: checked again.
                    Poll::Ready(()) => now = Some(Instant::now()),
                }
            }
        })
        .await
    }

    /// `fut`'s output, or `None` if it waited for longer than the stall timeout.
    pub(super) async fn within<F: Future>(&mut self, fut: F) -> Option<F::Output> {
        let mut fut = pin!(fut);
        let mut armed = false;
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            if !armed {
                armed = true;
                self.timer.as_mut().reset(Instant::now() + self.stall);
            }
            self.timer.as_mut().poll(cx).map(|()| None)
        })
        .await
    }
}

/// A timer to build a [`Stall`] on; its deadline is set before it is first polled.
pub(super) fn unarmed(ctx: &Context) -> Sleep {
    tokio::time::sleep_until(ctx.epoch)
}

/// `d` in seconds, to the millisecond.
pub(super) fn fmt_duration(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_measures_each_window_from_the_first_wait() {
        let rate = MinBodyRate {
            bytes_per_second: 1000,
            window: Duration::from_secs(1),
        };
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut floor = Floor::new(rate);
        // The first wait starts the window, whatever arrived before it.
        assert_eq!(floor.check(at(0), 50_000), Ok(at(1000)));
        // Within the window: nothing is judged yet.
        assert_eq!(floor.check(at(400), 50_000), Ok(at(1000)));
        // 1,000 bytes in 1 s is the floor itself: kept, and a new window starts.
        assert_eq!(floor.check(at(1000), 51_000), Ok(at(2000)));
        // 999 bytes in 1 s is below it.
        let mut below = Floor::new(rate);
        below.check(at(0), 0).unwrap();
        assert_eq!(below.check(at(1000), 999), Err(999));
        // A window checked late is measured over all its time: 1,500 bytes in 2 s.
        assert_eq!(floor.check(at(3000), 52_500), Err(750));
    }
}
