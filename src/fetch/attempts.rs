//! The attempts of one request, for a part's GETs and a whole-body request (a listing page, a
//! HEAD) alike: the slot and connection each attempt goes on, the backoff and retry budget
//! after a failure, the concurrency limit's reports, re-routes to the bucket's region, and a
//! new S3 Express session when the server refuses the one a request was signed with.
//!
//! Each caller's loop is the same three steps — [`Attempts::next`], one exchange, then
//! [`Attempts::succeeded`] or [`Attempts::failed`] — so a rule about retrying lives here once.
//! A re-send on a stale connection, which spends no attempt, is the exchange's own
//! (`exchange::send`).

use crate::conn::Unit;
use crate::context::Context;
use crate::error::{Error, ErrorKind};
use crate::express::is_session_refused;
use crate::limiter::{Change, Limiter, Slot};
use crate::retry::{classify, Class, Next, Retrier};
use crate::s3::BucketTarget;
use crate::stats::Counters;
use crate::waitlist::Place;

/// How many times one request follows a reply naming its bucket's region before such a reply
/// fails it: the first teaches the region; a second covers a bucket that moved meanwhile.
const MAX_REGION_REDIRECTS: u32 = 2;

/// How the first attempt of a request gets its slot and connection.
pub(crate) enum Start {
    /// Queued for them at this place: the front for a request an admitted object waits for.
    Queue(Place),
    /// Already taken, in admission order.
    Ticket(Slot, Unit),
}

/// What a failed attempt leads to, when it is not the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Then {
    /// Another attempt, after the backoff the failure called for.
    Retry,
    /// Another attempt at once, in the bucket's region, which the failure named and the
    /// client now knows: a request built before must be re-routed.
    Rerouted,
}

/// The attempts of one request.
pub(super) struct Attempts<'c> {
    ctx: &'c Context,
    retrier: Retrier<'c>,
    /// The first attempt's slot and connection, when taken ahead.
    ticket: Option<(Slot, Unit)>,
    /// Where the next attempt queues for its slot.
    place: Place,
    redirects: u32,
    /// A refused S3 Express session was dropped for this request's sake.
    renewed_session: bool,
}

impl<'c> Attempts<'c> {
    #[inline]
    pub(super) fn new(ctx: &'c Context, start: Start) -> Self {
        let (place, ticket) = match start {
            Start::Queue(place) => (place, None),
            Start::Ticket(slot, unit) => (Place::Front, Some((slot, unit))),
        };
        Attempts {
            ctx,
            retrier: Retrier::new(&ctx.config.retry, ctx.config.throttle.timeout, &ctx.budget),
            ticket,
            place,
            redirects: 0,
            renewed_session: false,
        }
    }

    /// Starts an attempt: its slot under the concurrency limit and its connection unit.
    #[inline]
    pub(super) async fn next(&mut self) -> (Slot, Unit) {
        self.retrier.start_attempt();
        match self.ticket.take() {
            Some(ticket) => ticket,
            None => self.ctx.ticket(self.place).await,
        }
    }

    /// The attempts made so far, for the final error.
    #[inline]
    pub(super) fn attempts(&self) -> u32 {
        self.retrier.attempts()
    }

    /// The attempt on `slot` succeeded: the limiter hears of it.
    #[inline]
    pub(super) fn succeeded(&self, slot: Slot) {
        trace_change(slot.succeeded(), &self.ctx.limiter);
    }

    /// The next attempt is made at once, at the front of the queue, spending no retry: the
    /// caller's own reason (a body slower than the floor, a checksum mismatch sent again).
    #[inline]
    pub(super) fn again(&mut self) {
        self.place = Place::Front;
    }

    /// After a failed attempt on `slot`: what comes next, once it may, or the final error.
    ///
    /// An error naming the bucket's region teaches it to the client ([`Then::Rerouted`]),
    /// spending neither an attempt nor retry budget, at most [`MAX_REGION_REDIRECTS`] times.
    /// A transient failure gives its slot back and waits its backoff (spending an attempt and
    /// retry budget); its next attempt goes to the front of the queue, as its object was
    /// admitted before those waiting. A throttled one tells the limiter, which cuts the limit;
    /// at the limit's floor the slot is kept through a backoff delay, so nothing else starts
    /// meanwhile. Its next attempt queues at the back: the server refused it, and may accept
    /// another.
    ///
    /// # Errors
    ///
    /// `e` itself when it is not retried (or the retries are spent), with the attempt count;
    /// an error naming a region that cannot form a request.
    pub(super) async fn failed(
        &mut self,
        slot: Slot,
        e: Error,
        target: &BucketTarget,
    ) -> Result<Then, Error> {
        if self.follow_region(target, &e)? {
            drop(slot);
            self.place = Place::Front;
            return Ok(Then::Rerouted);
        }
        if self.renew_session(target, &e) {
            drop(slot);
            self.place = Place::Front;
            return Ok(Then::Retry);
        }
        let ctx = self.ctx;
        if classify(&e) != Class::Throttle {
            drop(slot);
            self.retrier.after_failure(e).await?;
            Counters::add(&ctx.counters.retries, 1);
            self.place = Place::Front;
            return Ok(Then::Retry);
        }
        Counters::add(&ctx.counters.throttled, 1);
        let mut slot = slot;
        let (change, hold) = slot.throttled(self.retrier.throttled() + 1);
        tracing::debug!(
            target: "s3_ordered::fetch",
            status = e.status().map(|s| s.as_u16()),
            code = e.code(),
            hold_ms = hold.map(|d| d.as_millis() as u64),
            "throttled"
        );
        trace_change(change, &ctx.limiter);
        if let Next::Throttled { left } = self.retrier.after_failure(e).await? {
            if let Some(hold) = hold {
                tokio::time::sleep(hold.min(left)).await;
            }
        }
        self.place = Place::Back;
        Ok(Then::Retry)
    }

    /// True if `e` named the bucket's region, which the client has now learned.
    fn follow_region(&mut self, target: &BucketTarget, e: &Error) -> Result<bool, Error> {
        let Some(region) = e.region().filter(|_| e.kind() == ErrorKind::WrongRegion) else {
            return Ok(false);
        };
        if self.redirects >= MAX_REGION_REDIRECTS {
            return Ok(false);
        }
        self.redirects += 1;
        self.ctx
            .learn_region(target, region)
            .map_err(|err| err.with_attempts(self.retrier.attempts()))?;
        self.retrier.forget_attempt();
        tracing::debug!(target: "s3_ordered::fetch", region, "sent again in the bucket's region");
        Ok(true)
    }
}

impl Attempts<'_> {
    /// True if `e` refused the S3 Express session the request was signed with, for the first
    /// time in this request: the session is dropped (unless a newer one replaced it already),
    /// and the request is sent again at once, with a new one, spending no attempt.
    fn renew_session(&mut self, target: &BucketTarget, e: &Error) -> bool {
        let (Some(seen), Some(sessions)) = (e.session(), target.sessions()) else {
            return false;
        };
        if self.renewed_session || !is_session_refused(e) {
            return false;
        }
        self.renewed_session = true;
        let dropped = sessions.invalidate(seen);
        self.retrier.forget_attempt();
        tracing::debug!(
            target: "s3_ordered::fetch",
            status = e.status().map(|s| s.as_u16()),
            code = e.code(),
            dropped,
            "the S3 Express session was refused; sending again with a new one",
        );
        true
    }
}

/// Reports a move of the concurrency limit.
fn trace_change(change: Change, limiter: &Limiter) {
    match change {
        Change::None => {}
        Change::Lowered { from, to } => {
            tracing::info!(
                target: "s3_ordered::fetch",
                from,
                to,
                "throttled: concurrency limit lowered",
            );
        }
        Change::Refined { from, to } => {
            tracing::debug!(
                target: "s3_ordered::fetch",
                from,
                to,
                "throttled: concurrency limit lowered to what was accepted"
            );
        }
        Change::Raised { from, to } if to == limiter.max() => {
            tracing::info!(
                target: "s3_ordered::fetch",
                from,
                to,
                "concurrency limit back at its maximum",
            );
        }
        Change::Raised { from, to } => {
            tracing::debug!(target: "s3_ordered::fetch", from, to, "concurrency limit raised");
        }
    }
}
