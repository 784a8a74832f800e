//! One part of an object (or a whole small object) end to end: attempts until its bytes are in
//! or it fails for good.
//!
//! Each attempt is signed afresh, sent on a pooled connection, and its body copied into the
//! part's leased slabs, which the part keeps across attempts. All parts of an object share one
//! [`ObjectPin`]: the first reply fixes the object's ETag, version and size, every request sent
//! after that carries `If-Match`, and every reply must agree — so a body is never a mix of two
//! versions. When an attempt breaks off mid-body and the ETag is known, the next one asks only for
//! the part's missing bytes (`Range`), and the reply's `Content-Range` must match exactly.
//!
//! An object of unknown size is probed by its first part: a GET for one part's range, whose
//! `Content-Range` (or, from a server that ignores ranges, `Content-Length`) gives the size. A
//! `416` without a size (`Content-Range: bytes */0`) to that first range is an empty object.
//!
//! A part is accepted only if its length equals what was asked for (and `Content-Length`). With
//! checksums on, a part that is the whole object is hashed as it is read and must match the
//! checksum its reply states (a mismatch is sent again once, on a new connection); a part of an
//! object fetched in parts gives the CRC of its bytes, once the object's checksum is learned
//! with a HEAD (sent ahead of a known-size object's parts, or by the first part of an object
//! whose size was unknown). The stall timeout applies to each wait for the server — the
//! response head, every read of the body — never to the whole transfer; a body slower than the
//! [`MinBodyRate`] floor is abandoned and resumed at once on a new connection (twice per part
//! at most), and a late response head is hedged (`send_hedged`).

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use futures_util::StreamExt as _;
use http::StatusCode;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use crate::checksum::{ChecksumAlgorithm, Composite, Hasher, InOrder, Offered, UploadParts, Value};
use crate::config::{ChecksumMode, MinBodyRate};
use crate::conn::{Conn, Unit};
use crate::context::Context;
use crate::error::{Error, ErrorKind};
use crate::http1::{self, Http};
use crate::limiter::{Change, Limiter, Slot};
use crate::memory::Lease;
use crate::retry::{classify, Class, Next, Retrier};
use crate::s3::{
    parse_content_range, status_error, BucketTarget, S3Request, MAX_ERROR_BODY, MAX_REQUEST_FIELDS,
};
use crate::sign::{Signable, Signer};
use crate::stats::Counters;
use crate::waitlist::Place;

/// The bytes of an object one part stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PartSpec {
    /// The part's first byte in the object.
    pub(crate) start: u64,
    /// The part's length; for the first part of an object of unknown size, the most it may hold.
    pub(crate) len: u64,
    /// Whether the first attempt asks for a range: every part except a known-size object fetched
    /// in one GET.
    pub(crate) ranged: bool,
}

/// What the replies fixed for every part and attempt of one object.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Pinned {
    /// The ETag as the server sent it: a field value, which may hold obs-text (octets over
    /// 0x7f, not always UTF-8) that `If-Match` must send back unchanged.
    pub(crate) etag: Option<Box<[u8]>>,
    pub(crate) version_id: Option<String>,
    pub(crate) size: Option<u64>,
    /// `Last-Modified` of the first reply that stated one.
    pub(crate) last_modified: Option<SystemTime>,
    /// The object's checksum, once a reply carrying the whole object (or a HEAD) stated it.
    pub(crate) checksum: Option<Offered>,
    /// A HEAD for the checksum was sent (or is being): no other is.
    head_claimed: bool,
}

/// The [`Pinned`] state of one object, shared by its parts.
#[derive(Debug, Default)]
pub(crate) struct ObjectPin {
    pinned: Mutex<Pinned>,
    /// Signalled when the checksum becomes known.
    checksum_known: Notify,
}

impl ObjectPin {
    /// A pin for an object of `size` bytes (`None`: learned from the first reply).
    pub(crate) fn new(size: Option<u64>) -> Self {
        ObjectPin {
            pinned: Mutex::new(Pinned {
                size,
                ..Pinned::default()
            }),
            checksum_known: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Pinned> {
        self.pinned.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The object's checksum, if known yet.
    pub(crate) fn checksum(&self) -> Option<Offered> {
        self.lock().checksum.clone()
    }

    /// Records what a reply carrying the whole object (or the HEAD) said about the checksum.
    /// A later reply (a resend after a mismatch) replaces it: its ETag pins the same object,
    /// and a value corrupted in transit must not fail the resend.
    /// Upload parts learned for a composite checksum stay: a reply restating the composite
    /// value says nothing new.
    fn learn_checksum(&self, offered: Offered) {
        let mut p = self.lock();
        if let (Some(Offered::Parts(_)), Offered::Composite(_)) = (&p.checksum, &offered) {
            return;
        }
        p.checksum = Some(offered);
        drop(p);
        self.checksum_known.notify_waiters();
    }

    /// True for the one caller that is to send the object's HEAD for its checksum.
    pub(crate) fn claim_head(&self) -> bool {
        !std::mem::replace(&mut self.lock().head_claimed, true)
    }

    /// Whether the object's HEAD for its checksum was claimed (sent, or about to be).
    pub(crate) fn head_claimed(&self) -> bool {
        self.lock().head_claimed
    }

    /// Waits until the object's checksum is known (the object's first part learns it).
    async fn checksum_resolved(&self) -> Offered {
        loop {
            let notified = self.checksum_known.notified();
            let mut notified = pin!(notified);
            // Registered before the check, so a signal between the two is not missed.
            notified.as_mut().enable();
            if let Some(offered) = self.checksum() {
                return offered;
            }
            notified.await;
        }
    }

    /// What is pinned now.
    pub(crate) fn snapshot(&self) -> Pinned {
        self.lock().clone()
    }

    /// The pinned ETag and version, moved out (the size stays): for an object whose parts are
    /// all in.
    pub(crate) fn take(&self) -> Pinned {
        let mut p = self.lock();
        Pinned {
            etag: p.etag.take(),
            version_id: p.version_id.take(),
            size: p.size,
            last_modified: p.last_modified,
            checksum: p.checksum.clone(),
            head_claimed: p.head_claimed,
        }
    }

    /// The object's size, once given or learned.
    pub(crate) fn size(&self) -> Option<u64> {
        self.lock().size
    }

    /// Checks a success reply (its `ETag` and `x-amz-version-id`, and the object size it
    /// states) against what earlier replies pinned, pinning what was still open; its
    /// `Last-Modified` is looked up (by `last_modified`) only while none is kept. Returns true
    /// when this reply told the object's size for the first time.
    fn check<'h>(
        &self,
        status: StatusCode,
        etag: Option<&[u8]>,
        version: Option<&[u8]>,
        last_modified: impl FnOnce() -> Option<&'h [u8]>,
        total: u64,
    ) -> Result<bool, Error> {
        let changed = |why: String| {
            Error::new(ErrorKind::Changed)
                .with_status(status)
                .with_message(why)
        };
        let mut p = self.lock();
        match (&p.etag, etag) {
            (Some(first), Some(now)) if **first != *now => {
                return Err(changed(format!(
                    "ETag changed from {:?} to {:?}",
                    String::from_utf8_lossy(first),
                    String::from_utf8_lossy(now)
                )));
            }
            (Some(_), None) => {
                return Err(changed(
                    "a reply has no ETag to match the first one's".to_owned(),
                ));
            }
            // A field value as parsed (visible ASCII, blanks, obs-text), so it can be sent
            // back in If-Match as it is.
            (None, Some(now)) => p.etag = Some(now.into()),
            _ => {}
        }
        let version = version.and_then(|v| std::str::from_utf8(v).ok());
        match (&p.version_id, version) {
            (Some(first), Some(now)) if first != now => {
                return Err(changed(format!(
                    "version changed from {first:?} to {now:?}"
                )));
            }
            (None, Some(now)) => p.version_id = Some(now.to_owned()),
            _ => {}
        }
        if p.last_modified.is_none() {
            // The first date stated is kept; one that does not parse is left out.
            p.last_modified = last_modified()
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| httpdate::parse_http_date(v.trim()).ok());
        }
        match p.size {
            Some(size) if size != total => Err(changed(format!(
                "size changed from {size} to {total} bytes"
            ))),
            Some(_) => Ok(false),
            None => {
                p.size = Some(total);
                Ok(true)
            }
        }
    }

    fn learn_empty(&self) -> bool {
        let mut p = self.lock();
        let first = p.size.is_none();
        p.size = Some(0);
        first
    }
}

/// A part's bytes, and — for a part of an object fetched in ranged parts whose checksum is a
/// CRC — the CRC of those bytes, for the object to combine with its other parts'.
#[derive(Debug)]
pub(crate) struct Fetched {
    pub(crate) lease: Lease,
    pub(crate) crc: Option<u64>,
}

/// Which connection a part's first attempt goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Connect {
    /// An idle one of the pool if any (the usual).
    Pooled,
    /// A new one: the part is fetched again after a checksum mismatch.
    New,
}

/// Fetches one part of `key` into `lease`; `first` is the slot and connection right for the
/// first attempt, on a connection as `connect` says. `on_size` is called once, mid-download,
/// if this part learns the object's size.
///
/// With checksums on, a part that is the whole object is verified here, as it is read; a
/// mismatch is sent again once on a new connection. A part of an object fetched in ranged parts
/// waits for the object's checksum (learned with a HEAD, which this part sends itself only for
/// an object whose size was unknown), then gives the CRC of its bytes.
///
/// # Errors
///
/// The last attempt's error, with the attempt count and the earlier failures; the caller
/// attaches the key and position.
#[allow(clippy::too_many_arguments)] // one part's whole context; grouping would only rename it
pub(crate) async fn fetch_part(
    ctx: &Context,
    target: &BucketTarget,
    key: &str,
    version_id: Option<&str>,
    spec: PartSpec,
    mut lease: Lease,
    first: (Slot, Unit),
    pin: &ObjectPin,
    on_size: &(dyn Fn(u64) + Sync),
    connect: Connect,
    rights: &Rights,
) -> Result<Fetched, Error> {
    let mut retrier = Retrier::new(&ctx.config.retry, ctx.config.throttle.timeout, &ctx.budget);
    let mut running = Running::default();
    let mut ticket = Some(first);
    let mut place = Place::Front;
    let mut redirects = 0;
    let mut resent = false;
    // Resumes because the body was slower than the floor; `slow`: the last attempt was one.
    let mut slow_resumes = 0;
    let mut slow = false;
    // A whole object's upload parts, once learned (a resend after a mismatch keeps them).
    let mut upload = None;
    let req = PartRequest {
        ctx,
        target,
        key,
        version_id,
        spec,
        pin,
        on_size,
        rights,
    };
    let whole = loop {
        retrier.start_attempt();
        let (slot, unit) = match ticket.take() {
            Some(t) => t,
            None => ctx.ticket(place).await,
        };
        let fresh = connect == Connect::New || resent || std::mem::take(&mut slow);
        let floor = Some(ctx.config.min_body_rate)
            .filter(|rate| rate.is_on() && slow_resumes < MAX_SLOW_RESUMES);
        match req
            .attempt(&mut lease, unit, &mut running, fresh, floor)
            .await
        {
            Ok(whole) => {
                trace_change(slot.succeeded(), &ctx.limiter);
                if !whole {
                    break whole;
                }
                match req.verify_through_upload(&lease, &mut upload).await {
                    Ok(()) => break whole,
                    Err(e) if e.kind() == ErrorKind::ChecksumMismatch && !resent => {
                        Counters::add(&ctx.counters.checksum_mismatches, 1);
                        tracing::warn!(error = %e, "checksum mismatch; sending again on a new connection");
                        resent = true;
                        place = Place::Front;
                    }
                    Err(e) => {
                        if e.kind() == ErrorKind::ChecksumMismatch {
                            Counters::add(&ctx.counters.checksum_mismatches, 1);
                        }
                        return Err(e.with_attempts(retrier.attempts()));
                    }
                }
            }
            Err(Failed::Slow(e)) => {
                // Not a failure of the server's: resumed at once, on a new connection.
                Counters::add(&ctx.counters.slow_bodies_resumed, 1);
                tracing::debug!(error = %e, "slow body; resuming on a new connection");
                slow_resumes += 1;
                slow = true;
                drop(slot);
                place = Place::Front;
            }
            Err(Failed::Error(e)) if e.kind() == ErrorKind::ChecksumMismatch => {
                Counters::add(&ctx.counters.checksum_mismatches, 1);
                if resent {
                    return Err(e.with_attempts(retrier.attempts()));
                }
                // Corruption in transit, most likely: once more, on a new connection.
                tracing::warn!(error = %e, "checksum mismatch; sending again on a new connection");
                resent = true;
                drop(slot);
                place = Place::Front;
            }
            Err(Failed::Error(e))
                if follow_region(ctx, target, &e, &mut redirects, &mut retrier)? =>
            {
                drop(slot);
                place = Place::Front;
            }
            Err(Failed::Error(e)) => place = after_failure(ctx, &mut retrier, slot, e).await?,
        }
    };
    let crc = if ctx.config.checksum_mode.is_on() && !whole {
        req.part_checksum(&lease, &mut running)
            .await
            .map_err(|e| e.with_attempts(retrier.attempts()))?
    } else {
        None
    };
    if ctx.config.checksum_mode == ChecksumMode::Required && spec.start == 0 {
        let size = pin.size().unwrap_or_default();
        match pin.checksum() {
            Some(Offered::Full(_) | Offered::Parts(_)) => {}
            // An empty object has no byte to verify.
            _ if size == 0 => {}
            offered => {
                return Err(
                    Error::new(ErrorKind::ChecksumMissing).with_message(match offered {
                        Some(Offered::Composite(c)) => format!(
                            "the server has only a composite {} checksum (of the upload's \
                             parts), and the parts' own could not be had",
                            c.algorithm
                        ),
                        _ => "the server sent no checksum for the object".to_owned(),
                    }),
                )
            }
        }
    }
    Counters::add(&ctx.counters.parts, 1);
    Counters::add(&ctx.counters.bytes, lease.len() as u64);
    Ok(Fetched { lease, crc })
}

/// The running checksum of the bytes in a part's lease: bytes `..covered` are in `hasher`.
#[derive(Debug, Default)]
struct Running {
    hasher: Option<(ChecksumAlgorithm, Hasher)>,
    covered: usize,
}

impl Running {
    /// Starts over in `algorithm` (the lease was cleared, or this is the first reply).
    fn start(&mut self, algorithm: ChecksumAlgorithm) {
        self.hasher = Some((algorithm, Hasher::new(algorithm)));
        self.covered = 0;
    }

    /// Forgets what was hashed: the lease was cleared.
    fn reset(&mut self) {
        if let Some((algorithm, _)) = self.hasher {
            self.start(algorithm);
        }
    }

    /// Hashes the lease's bytes not hashed yet: after each read, while they are in the cache.
    fn catch_up(&mut self, lease: &Lease) {
        if let Some((_, hasher)) = &mut self.hasher {
            for bytes in lease.bytes_from(self.covered) {
                hasher.update(bytes);
            }
            self.covered = lease.len();
        }
    }

    fn algorithm(&self) -> Option<ChecksumAlgorithm> {
        self.hasher.as_ref().map(|(a, _)| *a)
    }

    /// The value over every byte of `lease`.
    fn finish(&mut self, lease: &Lease) -> Option<Value> {
        self.catch_up(lease);
        let (algorithm, hasher) = self.hasher.take()?;
        self.start(algorithm);
        Some(hasher.finish())
    }
}

/// How many times one request follows a reply naming its bucket's region before such a reply
/// fails it: the first teaches the region; a second covers a bucket that moved meanwhile.
const MAX_REGION_REDIRECTS: u32 = 2;

/// After a failed attempt: true if `e` named the bucket's region and the request should be
/// made again at once, in that region. Such an attempt spends neither an attempt nor retry
/// budget. False for any other error, and once [`MAX_REGION_REDIRECTS`] are used up.
///
/// # Errors
///
/// `e`'s region cannot form a request.
fn follow_region(
    ctx: &Context,
    target: &BucketTarget,
    e: &Error,
    redirects: &mut u32,
    retrier: &mut Retrier<'_>,
) -> Result<bool, Error> {
    let Some(region) = e.region().filter(|_| e.kind() == ErrorKind::WrongRegion) else {
        return Ok(false);
    };
    if *redirects >= MAX_REGION_REDIRECTS {
        return Ok(false);
    }
    *redirects += 1;
    ctx.learn_region(target, region)
        .map_err(|err| err.with_attempts(retrier.attempts()))?;
    retrier.forget_attempt();
    tracing::debug!(region, "sent again in the bucket's region");
    Ok(true)
}

/// After a failed attempt: where the next attempt queues for a slot, once it may be made, or
/// the final error.
///
/// A transient failure gives its slot back and waits its backoff (spending an attempt and
/// retry budget); its next attempt goes to the front of the queue, as its object was admitted
/// before those waiting. A throttled one tells the limiter, which cuts the limit; at the limit's
/// floor the slot is kept through a backoff delay, so nothing else starts meanwhile. Its next
/// attempt queues at the back: the server refused it, and may accept another.
async fn after_failure(
    ctx: &Context,
    retrier: &mut Retrier<'_>,
    mut slot: Slot,
    e: Error,
) -> Result<Place, Error> {
    if classify(&e) != Class::Throttle {
        drop(slot);
        retrier.after_failure(e).await?;
        Counters::add(&ctx.counters.retries, 1);
        return Ok(Place::Front);
    }
    Counters::add(&ctx.counters.throttled, 1);
    let (change, hold) = slot.throttled(retrier.throttled() + 1);
    tracing::debug!(
        status = e.status().map(|s| s.as_u16()),
        code = e.code(),
        hold_ms = hold.map(|d| d.as_millis() as u64),
        "throttled"
    );
    trace_change(change, &ctx.limiter);
    if let Next::Throttled { left } = retrier.after_failure(e).await? {
        if let Some(hold) = hold {
            tokio::time::sleep(hold.min(left)).await;
        }
    }
    Ok(Place::Back)
}

/// Reports a move of the concurrency limit.
fn trace_change(change: Change, limiter: &Limiter) {
    match change {
        Change::None => {}
        Change::Lowered { from, to } => {
            tracing::info!(from, to, "throttled: concurrency limit lowered");
        }
        Change::Refined { from, to } => {
            tracing::debug!(
                from,
                to,
                "throttled: concurrency limit lowered to what was accepted"
            );
        }
        Change::Raised { from, to } if to == limiter.max() => {
            tracing::info!(from, to, "concurrency limit back at its maximum");
        }
        Change::Raised { from, to } => {
            tracing::debug!(from, to, "concurrency limit raised");
        }
    }
}

/// One part's request, as every attempt makes it.
struct PartRequest<'a> {
    ctx: &'a Context,
    target: &'a BucketTarget,
    key: &'a str,
    version_id: Option<&'a str>,
    spec: PartSpec,
    pin: &'a ObjectPin,
    on_size: &'a (dyn Fn(u64) + Sync),
    rights: &'a Rights,
}

impl PartRequest<'_> {
    /// One attempt: on success the lease holds the whole part. True when the reply carried the
    /// whole object, and so (with checksums on) told its checksum and was verified against it.
    /// `fresh`: on a new connection, not an idle one. `floor`: the slowest the body may arrive.
    async fn attempt(
        &self,
        lease: &mut Lease,
        unit: Unit,
        running: &mut Running,
        fresh: bool,
        floor: Option<MinBodyRate>,
    ) -> Result<bool, Failed> {
        let (ctx, spec) = (self.ctx, self.spec);
        let stall = ctx.config.stall_timeout;
        let pinned = self.pin.snapshot();
        // One past the part's last byte: the object's end may come first.
        let end = match pinned.size {
            Some(size) => (spec.start + spec.len).min(size).max(spec.start),
            None => spec.start + spec.len,
        };
        // Resume only what the pinned ETag guarantees is the same object.
        let held = lease.len() as u64;
        let from = if pinned.etag.is_some() && held > 0 && held < end - spec.start {
            spec.start + held
        } else {
            lease.clear();
            running.reset();
            spec.start
        };
        let ranged = spec.ranged || from > spec.start;
        let checksums = ctx.config.checksum_mode.is_on();

        let mut req = self.target.get_object(self.key, self.version_id)?;
        if let Some(etag) = &pinned.etag {
            req.if_match(etag);
        }
        if ranged {
            req.range(from, end - 1);
        }
        if checksums {
            req.checksum_mode();
        }
        tracing::debug!(
            from,
            to = end.saturating_sub(1),
            ranged,
            if_match = pinned.etag.is_some(),
            "GET sent"
        );
        let timer = pin!(unarmed(ctx));
        let mut stalls = Stall::new(timer, stall);
        let mut conn = self.send_hedged(unit, &req, &mut stalls, fresh).await?;
        let status = conn.head().status();

        if !status.is_success() {
            let probe = pinned.size.is_none() && from == 0;
            let empty = probe && is_empty_object_reply(status, conn.head().get("content-range"));
            let region = conn.head().get("x-amz-bucket-region").map(<[u8]>::to_vec);
            let bytes = read_error_body(conn, &mut stalls).await;
            if empty {
                // S3 refuses any range of a 0-byte object (S3-NOTES: "Ranged GET").
                if self.pin.learn_empty() {
                    lease.shrink_to(0);
                    (self.on_size)(0);
                }
                if checksums {
                    self.pin.learn_checksum(Offered::Nothing);
                }
                return Ok(true);
            }
            return Err(status_error(status, &bytes, region.as_deref()).into());
        }

        let head = conn.head();
        let shape = check_reply(
            status,
            head.get("content-length"),
            head.get("content-range"),
            Asked {
                part_start: spec.start,
                from,
                end,
                ranged,
                size: pinned.size,
            },
        )?;
        if shape.restart {
            lease.clear(); // a full body, even if a range was asked for
            running.reset();
        }
        if self.pin.check(
            status,
            head.get("etag"),
            head.get("x-amz-version-id"),
            || head.get("last-modified"),
            shape.total,
        )? {
            // This (first) reply told the size: keep only the slabs the part needs.
            lease.shrink_to(spec.len.min(shape.total - spec.start.min(shape.total)));
            (self.on_size)(shape.total);
        }
        // This part is the whole object: verified here. Else its CRC is computed as it is
        // read, once the object's checksum is known, for the object to combine.
        let whole = spec.start == 0 && spec.len >= shape.total;
        let mut expected = None;
        if checksums {
            // S3 states the object's checksum only on a reply that carries all of it.
            let offered = if shape.restart || (from == 0 && shape.len == shape.total) {
                let offered = Offered::from_fields(|name| head.get(name));
                self.pin.learn_checksum(offered.clone());
                Some(offered)
            } else {
                self.pin.checksum()
            };
            match offered {
                Some(Offered::Full(e)) => {
                    if (whole || e.algorithm.is_crc()) && running.algorithm() != Some(e.algorithm) {
                        running.start(e.algorithm);
                        running.catch_up(lease);
                    }
                    expected = whole.then_some(e);
                }
                // A part whose object's checksum is not known yet (its first part learns it
                // with a HEAD): CRC64NVME, what S3 stores by default, as the bytes arrive,
                // while they are in the cache. Another algorithm costs a pass over the part.
                None if !whole && running.algorithm().is_none() => {
                    running.start(ChecksumAlgorithm::Crc64Nvme);
                    running.catch_up(lease);
                }
                _ => {}
            }
        }

        let want = if shape.restart {
            shape.total
        } else {
            from - spec.start + shape.len
        };
        stalls.floor = floor.map(Floor::new);
        // Each read goes from the connection straight into the lease's slabs.
        loop {
            let room = usize::try_from(want - lease.len() as u64).unwrap_or(usize::MAX);
            let got = lease.len() as u64;
            let spare = lease.spare_mut(room);
            let waited = if spare.is_empty() {
                match stalls.within_body(conn.body_ended(), got).await {
                    Ok(Ok(true)) => break,
                    Ok(Ok(false)) => {
                        return Err(length_error(
                            status,
                            format!("body is longer than the {want} bytes asked for"),
                        )
                        .into())
                    }
                    Ok(Err(e)) => Ok(Err(e)),
                    Err(w) => Err(w),
                }
            } else {
                stalls.within_body(conn.read_body(spare), got).await
            };
            let read = match waited {
                Ok(read) => read,
                Err(Waited::Stalled) => return Err(stalled(status, stall, got, want).into()),
                Err(Waited::Slow { rate }) => {
                    return Err(Failed::Slow(slow_body(status, floor, rate, got, want)))
                }
            };
            match read {
                Ok(0) => break,
                Ok(n) => {
                    lease.advance(n);
                    running.catch_up(lease);
                }
                Err(e) => {
                    return Err(Error::new(ErrorKind::Connection)
                        .with_status(status)
                        .with_message(format!(
                            "body broke off after {} of {want} bytes",
                            lease.len()
                        ))
                        .with_source(e)
                        .into())
                }
            }
        }
        if lease.len() as u64 != want && conn.ends_with_close() {
            // A body framed by the connection's close cannot tell a server that meant to end
            // it from a connection that broke: retried like a broken connection.
            return Err(Error::new(ErrorKind::Connection)
                .with_status(status)
                .with_message(format!(
                    "the connection closed after {} of {want} bytes of a body that ends with it",
                    lease.len()
                ))
                .into());
        }
        if lease.len() as u64 != want {
            return Err(length_error(
                status,
                format!("body ended after {} of {want} bytes", lease.len()),
            )
            .into());
        }
        if let Some(expected) = expected {
            if let Some(got) = running.finish(lease) {
                // The connection is dropped (closed), not released: the resend goes on a new one.
                expected.check(got).map_err(|e| e.with_status(status))?;
            }
        }
        conn.release();
        tracing::debug!(status = status.as_u16(), bytes = want, "GET done");
        Ok(whole)
    }

    /// [`send`], and — when the response head is later than the hedging threshold and a hedge
    /// may be sent — the same request again on another connection: the first head to arrive
    /// wins, and the other exchange is dropped, closing its connection. A hedge needs the
    /// adaptive limit at its ceiling, a token of the budget, a right of the request (the next
    /// one freed) and a slot and connection (at the front of the queue, before new work);
    /// until it has them the first reply may still come and is taken.
    async fn send_hedged(
        &self,
        unit: Unit,
        req: &S3Request<'_>,
        stalls: &mut Stall<'_>,
        fresh: bool,
    ) -> Result<Conn, Error> {
        let ctx = self.ctx;
        let hedging = &ctx.hedging;
        let threshold = hedging.threshold();
        let stall = stalls.stall;
        let started = Instant::now();
        let mut first = pin!(send(ctx, unit, req, stalls, fresh, None));
        let taken = |r: Result<Conn, Error>| {
            if r.is_ok() {
                hedging.record(started.elapsed());
            }
            r
        };
        let Some(threshold) = threshold else {
            return taken(first.await);
        };
        tokio::select! {
            biased;
            r = &mut first => return taken(r),
            () = tokio::time::sleep(threshold) => {}
        }
        // Until a hedge may go, the reply may still come; looked at again every so often.
        let recheck = (threshold / 4).clamp(Duration::from_millis(5), Duration::from_millis(250));
        let right = loop {
            if self.may_hedge() {
                // The next right the request frees, ahead of all but the one admission that
                // may be waiting already: the hedge comes before new work.
                let acquire = Arc::clone(self.rights).acquire_owned();
                let permit = tokio::select! {
                    biased;
                    r = &mut first => return taken(r),
                    p = acquire => p.ok(),
                };
                if let Some(right) = permit.filter(|_| hedging.take()) {
                    break right;
                }
            }
            tokio::select! {
                biased;
                r = &mut first => return taken(r),
                () = tokio::time::sleep(recheck) => {}
            }
        };
        let (slot, hedge_unit) = tokio::select! {
            biased;
            r = &mut first => return taken(r),
            t = ctx.ticket(Place::Front) => t,
        };
        tracing::debug!(
            after_ms = threshold.as_millis() as u64,
            "response head late; sending the same request on another connection"
        );
        let timer = pin!(unarmed(ctx));
        let mut hedge_stalls = Stall::new(timer, stall);
        // Counted as a hedge once written, as every request is: a hedge whose first reply
        // came while it was still connecting was never sent.
        let hedges = Some(&ctx.counters.hedges_sent);
        let mut second = pin!(send(ctx, hedge_unit, req, &mut hedge_stalls, false, hedges));
        let won = |r: Result<Conn, Error>| {
            if r.is_ok() {
                Counters::add(&ctx.counters.hedges_won, 1);
                tracing::debug!("the hedge's response head came first; the first request closed");
            }
            r
        };
        let out = tokio::select! {
            r = &mut first => match r {
                Ok(conn) => {
                    tracing::debug!("the first response head came first; the hedge closed");
                    Ok(conn)
                }
                // The hedge may still answer.
                Err(e) => won(second.await).map_err(|_| e),
            },
            r = &mut second => match r {
                Ok(conn) => won(Ok(conn)),
                Err(_) => first.await,
            },
        };
        drop((slot, right));
        taken(out)
    }

    /// Whether a hedge may be sent now, given a right of the request: the adaptive limit is at
    /// its ceiling (a throttling server gets no more requests) and the budget has a token.
    fn may_hedge(&self) -> bool {
        let limiter = &self.ctx.limiter;
        limiter.limit() >= limiter.max() && self.ctx.hedging.has_token()
    }

    /// For a whole object fetched in one GET whose checksum is composite: verifies its bytes
    /// in `lease` through its upload's parts (learned into `upload` on the first call), and
    /// pins them as its checksum. Nothing to do for any other checksum, or when the parts'
    /// checksums cannot be had (the object then says it was not verified).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::ChecksumMismatch`] naming the first upload part that did not match; the
    /// part HEADs' errors ([`UploadHead::upload_parts`]).
    async fn verify_through_upload(
        &self,
        lease: &Lease,
        upload: &mut Option<Arc<UploadParts>>,
    ) -> Result<(), Error> {
        let Some(Offered::Composite(composite)) = self.pin.checksum() else {
            return Ok(());
        };
        let parts = match upload {
            Some(parts) => Arc::clone(parts),
            None => {
                let (ctx, target, key, pin) = (self.ctx, self.target, self.key, self.pin);
                let version_id = self.version_id;
                let learn =
                    upload_parts(ctx, target, key, version_id, pin, &composite, self.rights);
                let Some(parts) = learn.await? else {
                    return Ok(());
                };
                Arc::clone(upload.insert(Arc::new(parts)))
            }
        };
        let mut check = InOrder::parts(Arc::clone(&parts));
        lease.chunks().for_each(|bytes| check.update(bytes));
        check.finish()?;
        self.pin.learn_checksum(Offered::Parts(parts));
        Ok(())
    }

    /// For a part of an object fetched in ranged parts: learns the object's checksum (the
    /// first part, with a HEAD), or waits for the first part to; then the CRC of this part's
    /// bytes when the checksum is a CRC (a digest is computed over the parts in order where
    /// they meet).
    async fn part_checksum(
        &self,
        lease: &Lease,
        running: &mut Running,
    ) -> Result<Option<u64>, Error> {
        let offered = match self.pin.checksum() {
            Some(offered) => offered,
            None if self.pin.claim_head() => {
                // An object of unknown size found to need parts: its checksum now, at the
                // front of the queue, as a retry is (the object was admitted long ago).
                let (ctx, target) = (self.ctx, self.target);
                let start = Start::Queue(Place::Front);
                let (key, version_id, pin) = (self.key, self.version_id, self.pin);
                learn_checksum(ctx, target, key, version_id, pin, start, self.rights).await?
            }
            None => self.pin.checksum_resolved().await,
        };
        let Offered::Full(e) = offered else {
            return Ok(None);
        };
        if !e.algorithm.is_crc() {
            return Ok(None);
        }
        if running.algorithm() != Some(e.algorithm) {
            running.start(e.algorithm);
        }
        Ok(match running.finish(lease) {
            Some(Value::Crc(crc)) => Some(crc),
            _ => None,
        })
    }
}

/// Learns an object's checksum with a HEAD (checksum mode), started as `start` says, and
/// pins what it learned: the reply's ETag, version and size are checked against (or pinned
/// for) the object's GETs, as any reply's are, so the checksum is the one of the bytes fetched.
/// Sent with `If-Match` once an ETag is pinned.
///
/// # Errors
///
/// The HEAD's error (after its retries), or [`ErrorKind::Changed`] when its reply describes
/// another version of the object.
pub(crate) async fn learn_checksum(
    ctx: &Context,
    target: &BucketTarget,
    key: &str,
    version_id: Option<&str>,
    pin: &ObjectPin,
    start: Start,
    rights: &Rights,
) -> Result<Offered, Error> {
    let pinned = pin.snapshot();
    let mut req = target.head_object(key, version_id)?;
    if let Some(etag) = &pinned.etag {
        req.if_match(etag);
    }
    req.checksum_mode();
    Counters::add(&ctx.counters.checksum_heads, 1);
    let (headers, _) = request_whole_from(ctx, req, 0, start).await?;
    let field = |name: &str| headers.get(name).map(|v| v.as_bytes());
    let size = field("content-length").and_then(http1::parse_length);
    if let Some(size) = size {
        pin.check(
            StatusCode::OK,
            field("etag"),
            field("x-amz-version-id"),
            || field("last-modified"),
            size,
        )?;
    }
    let mut offered = Offered::from_fields(field);
    if let Offered::Composite(composite) = &offered {
        let learn = upload_parts(ctx, target, key, version_id, pin, composite, rights);
        if let Some(parts) = learn.await? {
            offered = Offered::Parts(Arc::new(parts));
        }
    }
    tracing::debug!(?offered, "checksum learned with a HEAD");
    pin.learn_checksum(offered.clone());
    Ok(offered)
}

/// The upload parts of the object `pin` describes, whose checksum is `composite`
/// ([`UploadHead::upload_parts`]); `None` without a pinned ETag and size or a part count (S3's
/// limit at most) to ask by.
///
/// # Errors
///
/// As [`UploadHead::upload_parts`].
async fn upload_parts(
    ctx: &Context,
    target: &BucketTarget,
    key: &str,
    version_id: Option<&str>,
    pin: &ObjectPin,
    composite: &Composite,
    rights: &Rights,
) -> Result<Option<UploadParts>, Error> {
    let pinned = pin.snapshot();
    let (Some(etag), Some(n @ 1..=MAX_UPLOAD_PARTS), Some(size)) =
        (pinned.etag, composite.parts, pinned.size)
    else {
        return Ok(None);
    };
    let head = UploadHead {
        ctx,
        target,
        key,
        version_id,
        etag: &etag,
        rights,
    };
    head.upload_parts(composite, n, size).await
}

/// The most parts a multipart upload has (S3's limit).
const MAX_UPLOAD_PARTS: u32 = 10_000;

/// A request's connection rights: `max_connections_per_request` permits. Each admitted job
/// holds one for its whole run (its retries and follow-up requests included); a job that
/// sends several requests at once takes spare ones for the others, without waiting, so a
/// request never holds more connections than its cap.
pub(crate) type Rights = Arc<tokio::sync::Semaphore>;

/// The most HEADs for an object's upload parts in flight at once.
const UPLOAD_HEADS: usize = 8;

/// The HEADs that learn a multipart upload's parts, each asking for one part of the version
/// `etag` names.
struct UploadHead<'a> {
    ctx: &'a Context,
    target: &'a BucketTarget,
    key: &'a str,
    version_id: Option<&'a str>,
    etag: &'a [u8],
    /// The request's: more than one HEAD at a time only on spare rights.
    rights: &'a Rights,
}

impl UploadHead<'_> {
    /// The `n` parts of an object of `size` bytes whose checksum is `composite`, one HEAD
    /// with `partNumber` each; `None` when the server does not state them in a way that adds
    /// up to the object (the object is then not verified, and says so).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Changed`] when a part's reply is of another version; a HEAD's error that
    /// is not about the part number (after its retries).
    async fn upload_parts(
        &self,
        composite: &Composite,
        n: u32,
        size: u64,
    ) -> Result<Option<UploadParts>, Error> {
        // The first alone: a server that does not state part checksums is asked once. Then
        // up to a few at a time while the request has connections to spare (one is always
        // its own): an object of many parts waits for them before it can be verified.
        let alg = composite.algorithm;
        let Some(first) = self.part(alg, 1).await? else {
            return Ok(None);
        };
        let mut parts = Vec::with_capacity(n as usize);
        parts.push(first);
        let mut heads = futures_util::stream::FuturesOrdered::new();
        let mut next = 2;
        while parts.len() < n as usize {
            while next <= n && heads.len() < UPLOAD_HEADS {
                let extra = if heads.is_empty() {
                    None
                } else {
                    match Arc::clone(self.rights).try_acquire_owned() {
                        Ok(permit) => Some(permit),
                        Err(_) => break,
                    }
                };
                let number = next;
                heads.push_back(async move {
                    let part = self.part(alg, number).await;
                    drop(extra);
                    part
                });
                next += 1;
            }
            let Some(part) = heads.next().await else {
                break;
            };
            let Some(part) = part? else {
                return Ok(None);
            };
            parts.push(part);
        }
        match UploadParts::new(composite, parts, size) {
            Ok(parts) => Ok(Some(parts)),
            Err(why) => {
                tracing::warn!(key = self.key, %why, "the upload's parts are not the object's");
                Ok(None)
            }
        }
    }

    /// Part `number`'s length and checksum in `algorithm`.
    async fn part(
        &self,
        algorithm: ChecksumAlgorithm,
        number: u32,
    ) -> Result<Option<(u64, Value)>, Error> {
        let mut req = self.target.head_object(self.key, self.version_id)?;
        req.part_number(number);
        req.if_match(self.etag);
        req.checksum_mode();
        Counters::add(&self.ctx.counters.checksum_heads, 1);
        let start = Start::Queue(Place::Front);
        let headers = match request_whole_from(self.ctx, req, 0, start).await {
            Ok((headers, _)) => headers,
            // The version changed (If-Match refused): the object's own error.
            Err(e) if e.kind() == ErrorKind::Changed => return Err(e),
            Err(e) if e.kind() == ErrorKind::Cancelled => return Err(e),
            Err(e) => {
                // A server that does not know part numbers: the object is read unverified.
                tracing::warn!(key = self.key, number, error = %e, "no upload part checksum");
                return Ok(None);
            }
        };
        let field = |name: &str| headers.get(name).map(|v| v.as_bytes());
        if field("etag").is_some_and(|e| e != self.etag) {
            return Err(Error::new(ErrorKind::Changed)
                .with_status(StatusCode::OK)
                .with_message(format!(
                    "ETag changed during the HEAD of upload part {number}"
                )));
        }
        let len = field("content-length").and_then(http1::parse_length);
        Ok(match (len, Offered::from_fields(field)) {
            (Some(len), Offered::Full(e)) if e.algorithm == algorithm => Some((len, e.value)),
            _ => None,
        })
    }
}

fn stalled(status: StatusCode, stall: Duration, got: u64, want: u64) -> Error {
    Error::new(ErrorKind::Timeout)
        .with_status(status)
        .with_message(format!(
            "body stalled for {} after {got} of {want} bytes",
            fmt_duration(stall)
        ))
}

/// Why an attempt ended without its part.
enum Failed {
    /// A failure, retried or final as [`classify`] says.
    Error(Error),
    /// The body came slower than the floor: resumed at once on a new connection.
    Slow(Error),
}

impl From<Error> for Failed {
    fn from(e: Error) -> Self {
        Failed::Error(e)
    }
}

/// Resumes for a body's rate one part may make; after them only the stall timeout applies.
const MAX_SLOW_RESUMES: u32 = 2;

fn slow_body(
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
struct Stall<'t> {
    timer: Pin<&'t mut Sleep>,
    stall: Duration,
    /// The body's rate floor, when one applies.
    floor: Option<Floor>,
}

/// A body's progress measured against a [`MinBodyRate`]: `mark` bytes had arrived at `since`
/// (unset until the body first waits).
struct Floor {
    rate: MinBodyRate,
    since: Option<Instant>,
    mark: u64,
}

impl Floor {
    fn new(rate: MinBodyRate) -> Self {
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
enum Waited {
    Stalled,
    /// Slower than the floor: the rate measured over the window, in bytes per second.
    Slow {
        rate: u64,
    },
}

impl<'t> Stall<'t> {
    fn new(timer: Pin<&'t mut Sleep>, stall: Duration) -> Self {
        Stall {
            timer,
            stall,
            floor: None,
        }
    }

    /// `fut`'s output: a wait for body bytes, `got` of which have arrived. Ends early when the
    /// wait passes the stall timeout or the body's rate falls below the floor.
    async fn within_body<F: Future>(&mut self, fut: F, got: u64) -> Result<F::Output, Waited> {
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
    async fn within<F: Future>(&mut self, fut: F) -> Option<F::Output> {
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

fn length_error(status: StatusCode, why: String) -> Error {
    Error::new(ErrorKind::LengthMismatch)
        .with_status(status)
        .with_message(why)
}

/// A timer to build a [`Stall`] on; its deadline is set before it is first polled.
fn unarmed(ctx: &Context) -> Sleep {
    tokio::time::sleep_until(ctx.epoch)
}

/// Reads (a bounded prefix of) an error reply's body; the connection is reused only if the
/// body ended within the bound.
async fn read_error_body(mut conn: Conn, stalls: &mut Stall<'_>) -> Vec<u8> {
    let (bytes, complete) = read_limited(&mut conn, MAX_ERROR_BODY, stalls).await;
    if complete {
        conn.release();
    }
    bytes
}

/// True for S3's answer to a range of an empty object: `416` with no `Content-Range`, or
/// `Content-Range: bytes */0`.
pub(crate) fn is_empty_object_reply(status: StatusCode, content_range: Option<&[u8]>) -> bool {
    status == StatusCode::RANGE_NOT_SATISFIABLE
        && content_range.is_none_or(|v| v.trim_ascii() == b"bytes */0")
}

/// What one request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Asked {
    /// The part's first byte in the object.
    pub(crate) part_start: u64,
    /// The first byte asked for: the part's start, or later when resuming.
    pub(crate) from: u64,
    /// One past the last byte the part may hold.
    pub(crate) end: u64,
    /// The request carried `Range: bytes=from-(end-1)`.
    pub(crate) ranged: bool,
    /// The object's size, when known.
    pub(crate) size: Option<u64>,
}

/// What a success reply carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReplyShape {
    /// Body bytes the reply must carry.
    pub(crate) len: u64,
    /// The body is the whole object from byte 0 (discard any partial part), not the asked range.
    pub(crate) restart: bool,
    /// The object's size, as the reply states it.
    pub(crate) total: u64,
}

/// Checks a success reply's status, `Content-Length` and `Content-Range` against the request.
///
/// A `206` must carry exactly the asked range (clamped to the object's end) of an object of the
/// known size. A `200` is the whole object; it is accepted only where the whole object fits the
/// part (a part at byte 0 that covers the object — a server that ignores `Range` can serve
/// nothing larger).
///
/// # Errors
///
/// [`ErrorKind::LengthMismatch`] when the lengths or the range disagree with the request or the
/// declared size; [`ErrorKind::InvalidResponse`] for a success status other than 200 and 206, a
/// 206 to a GET that asked for no range, a 200 where a part of a larger object was asked for, or
/// a 200 of unknown size without `Content-Length`.
pub(crate) fn check_reply(
    status: StatusCode,
    content_length: Option<&[u8]>,
    content_range: Option<&[u8]>,
    asked: Asked,
) -> Result<ReplyShape, Error> {
    let mismatch = |why: String| length_error(status, why);
    let invalid = |why: String| {
        Error::new(ErrorKind::InvalidResponse)
            .with_status(status)
            .with_message(why)
    };
    let content_length = content_length.map(http1::parse_length);
    let shape = match status {
        StatusCode::OK => {
            let total = match (asked.size, content_length) {
                (Some(size), _) => size,
                (None, Some(Some(len))) => len,
                (None, _) => {
                    return Err(invalid(
                        "a whole-object reply of unknown size has no valid Content-Length".into(),
                    ))
                }
            };
            if asked.part_start != 0 || total > asked.end {
                return Err(invalid(format!(
                    "the server ignored Range: it sent the whole object ({total} bytes) for \
                     bytes {}-{}",
                    asked.from,
                    asked.end.saturating_sub(1)
                )));
            }
            ReplyShape {
                len: total,
                restart: true,
                total,
            }
        }
        StatusCode::PARTIAL_CONTENT if asked.ranged => {
            let range = content_range
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(parse_content_range);
            let shown = || content_range.map(String::from_utf8_lossy);
            let Some((first, last, total)) = range else {
                return Err(mismatch(format!(
                    "asked for bytes {}-{}, got Content-Range {:?}",
                    asked.from,
                    asked.end - 1,
                    shown()
                )));
            };
            let end = asked.end.min(total);
            let size_ok = asked.size.is_none_or(|s| s == total);
            if !size_ok || first != asked.from || asked.from >= end || last != end - 1 {
                return Err(mismatch(format!(
                    "asked for bytes {}-{} of {}, got Content-Range {:?}",
                    asked.from,
                    asked.end - 1,
                    asked
                        .size
                        .map_or_else(|| "an object of unknown size".to_owned(), |s| s.to_string()),
                    shown()
                )));
            }
            ReplyShape {
                len: last - first + 1,
                restart: false,
                total,
            }
        }
        other => {
            return Err(Error::new(ErrorKind::InvalidResponse)
                .with_status(other)
                .with_message("unexpected success status for this GET"))
        }
    };
    match content_length {
        Some(len) if len != Some(shape.len) => {
            let shown = len.map_or_else(|| "invalid".to_owned(), |l| l.to_string());
            Err(mismatch(format!(
                "Content-Length is {shown}, expected {}",
                shape.len
            )))
        }
        _ => Ok(shape),
    }
}

/// Gets a connection for `req` with `unit`, writes `req` into it signed afresh, sends it, and
/// reads the response head within the stall timeout. Counts the request, and once in `also`
/// if given (a hedge).
async fn send(
    ctx: &Context,
    unit: Unit,
    req: &S3Request<'_>,
    stalls: &mut Stall<'_>,
    fresh: bool,
    mut also: Option<&AtomicU64>,
) -> Result<Conn, Error> {
    let creds = ctx.signer.credentials_for_request().await?;
    let conn = if fresh {
        unit.connect_new(req.origin()).await
    } else {
        unit.connect(req.origin()).await
    };
    let mut conn = conn.map_err(|(_, e)| e)?;
    loop {
        compose(&mut conn, req, &ctx.signer, creds.as_ref())?;
        Counters::add(&ctx.counters.requests, 1);
        if let Some(counter) = also.take() {
            Counters::add(counter, 1);
        }
        let exchange = async {
            conn.send(req.method() == http::Method::HEAD).await?;
            conn.read_head().await
        };
        let failed = match stalls.within(exchange).await {
            Some(Ok(())) => return Ok(conn),
            Some(Err(e)) => e,
            None => {
                return Err(Error::new(ErrorKind::Timeout)
                    .with_message(format!("no response within {}", fmt_duration(stalls.stall))))
            }
        };
        // A server may close an idle keep-alive connection just as it is taken for a request:
        // the request is sent again at once on a new connection, spending no attempt, retry
        // budget or backoff. Once only, as the new connection was not idle: a server that
        // closes every connection still fails the request.
        if !(conn.reused() && conn.unanswered() && failed.kind() == ErrorKind::Connection) {
            return Err(failed);
        }
        tracing::debug!(error = %failed, "a reused connection was closed before any reply; sending again on a new one");
        Counters::add(&ctx.counters.stale_connections, 1);
        conn = conn
            .close()
            .connect_new(req.origin())
            .await
            .map_err(|(_, e)| e)?;
    }
}

/// Writes `req` into `conn`'s request buffer as HTTP/1.1: its request line and fields, and —
/// with credentials — the SigV4 fields computed over exactly those bytes.
fn compose(
    conn: &mut Http,
    req: &S3Request<'_>,
    signer: &Signer,
    creds: Option<&Credentials>,
) -> Result<(), Error> {
    let (out, scratch, forward) = conn.compose();
    let method = req.method().as_str();
    let origin_len = forward.map_or(0, |f| f.origin.len());
    let target = http1::push_request_line(out, method, |o| {
        if let Some(f) = forward {
            o.extend_from_slice(f.origin.as_bytes());
        }
        req.write_target(o)
    });
    // What is signed is the path and query, without a proxy's absolute-form origin.
    let target = target.start + origin_len..target.end;
    // The request's own fields, kept on the stack for the signer (as many as it can have).
    let mut fields = [("", &b""[..]); MAX_REQUEST_FIELDS];
    let mut count = 0;
    for (slot, field) in fields.iter_mut().zip(req.headers()) {
        http1::push_field(out, field.0, field.1);
        *slot = field;
        count += 1;
    }
    if let Some(creds) = creds {
        let target = std::str::from_utf8(&out[target]).map_err(|_| {
            Error::new(ErrorKind::Internal).with_message("the request target is not ASCII")
        })?;
        let signable = Signable {
            method,
            target,
            headers: &fields[..count],
        };
        let signed = signer.sign(creds, signable, req.region(), scratch)?;
        for (name, value) in signed.fields(creds.session_token()) {
            http1::push_field(out, name, value);
        }
    }
    if let Some(auth) = forward.and_then(|f| f.authorization.as_ref()) {
        http1::push_field(out, "proxy-authorization", auth.as_bytes());
    }
    http1::end_head(out);
    Ok(())
}

fn fmt_duration(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

/// Signs `req`, sends it on a pooled connection and reads the whole reply body (at most
/// `limit` bytes): for listings and HEAD, whose replies are small. Retried like a GET.
///
/// # Errors
///
/// A typed error for a non-success status (parsed from the S3 error body), a connection
/// failure or stall, or [`ErrorKind::InvalidResponse`] for a body over `limit`.
pub(crate) async fn request_whole(
    ctx: &Context,
    req: S3Request<'_>,
    limit: usize,
) -> Result<(http::HeaderMap, Vec<u8>), Error> {
    request_whole_from(ctx, req, limit, Start::Queue(Place::Back)).await
}

/// How the first attempt of a request gets its slot and connection.
pub(crate) enum Start {
    /// Queued for them at this place: the front for a request an admitted object waits for.
    Queue(Place),
    /// Already taken, in admission order.
    Ticket(Slot, Unit),
}

/// [`request_whole`], its first attempt started as `start` says.
async fn request_whole_from(
    ctx: &Context,
    mut req: S3Request<'_>,
    limit: usize,
    start: Start,
) -> Result<(http::HeaderMap, Vec<u8>), Error> {
    let mut retrier = Retrier::new(&ctx.config.retry, ctx.config.throttle.timeout, &ctx.budget);
    let (mut place, mut ticket) = match start {
        Start::Queue(place) => (place, None),
        Start::Ticket(slot, unit) => (Place::Front, Some((slot, unit))),
    };
    let mut redirects = 0;
    loop {
        retrier.start_attempt();
        let (slot, unit) = match ticket.take() {
            Some(t) => t,
            None => ctx.ticket(place).await,
        };
        tracing::debug!(method = %req.method(), "request sent");
        match whole_once(ctx, unit, &req, limit).await {
            Ok(ok) => {
                tracing::debug!(bytes = ok.1.len(), "request done");
                trace_change(slot.succeeded(), &ctx.limiter);
                return Ok(ok);
            }
            Err(e) if follow_region(ctx, req.target(), &e, &mut redirects, &mut retrier)? => {
                drop(slot);
                req.reroute();
                place = Place::Front;
            }
            Err(e) => place = after_failure(ctx, &mut retrier, slot, e).await?,
        }
    }
}

async fn whole_once(
    ctx: &Context,
    unit: Unit,
    req: &S3Request<'_>,
    limit: usize,
) -> Result<(http::HeaderMap, Vec<u8>), Error> {
    let timer = pin!(unarmed(ctx));
    let mut stalls = Stall::new(timer, ctx.config.stall_timeout);
    let mut conn = send(ctx, unit, req, &mut stalls, false, None).await?;
    let status = conn.head().status();
    let headers = conn.head().to_header_map();
    let limit = if status.is_success() {
        limit
    } else {
        MAX_ERROR_BODY
    };
    let (bytes, complete) = read_limited(&mut conn, limit, &mut stalls).await;
    if complete {
        conn.release();
    }
    if !status.is_success() {
        let region = headers.get("x-amz-bucket-region").map(|v| v.as_bytes());
        return Err(status_error(status, &bytes, region));
    }
    if !complete && bytes.len() >= limit {
        return Err(Error::new(ErrorKind::InvalidResponse)
            .with_status(status)
            .with_message(format!("reply body larger than {limit} bytes")));
    }
    if !complete {
        return Err(Error::new(ErrorKind::Connection)
            .with_status(status)
            .with_message("reply body broke off"));
    }
    Ok((headers, bytes))
}

/// Reads at most `limit` bytes of the body on `conn`, each read within the stall timeout;
/// says whether the body ended within the limit (false also when it broke off or stalled).
async fn read_limited(conn: &mut Conn, limit: usize, stalls: &mut Stall<'_>) -> (Vec<u8>, bool) {
    // Read into the Vec itself (so the future holds no buffer), trimmed to what came.
    let mut out = Vec::new();
    loop {
        let len = out.len();
        let room = (limit - len).min(16 << 10);
        let read = if room == 0 {
            match stalls.within(conn.body_ended()).await {
                Some(Ok(ended)) => return (out, ended),
                _ => return (out, false),
            }
        } else {
            out.resize(len + room, 0);
            let read = stalls.within(conn.read_body(&mut out[len..])).await;
            out.truncate(
                len + read
                    .as_ref()
                    .and_then(|r| r.as_ref().ok())
                    .copied()
                    .unwrap_or(0),
            );
            read
        };
        match read {
            Some(Ok(0)) => return (out, true),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return (out, false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        status: u16,
        cl: Option<&str>,
        cr: Option<&str>,
        asked: Asked,
    ) -> Result<(u64, bool, u64), ErrorKind> {
        check_reply(
            StatusCode::from_u16(status).unwrap(),
            cl.map(str::as_bytes),
            cr.map(str::as_bytes),
            asked,
        )
        .map(|s| (s.len, s.restart, s.total))
        .map_err(|e| e.kind())
    }

    /// A whole known-size object asked for in one GET, resuming at `from`.
    fn whole(from: u64, size: u64) -> Asked {
        Asked {
            part_start: 0,
            from,
            end: size,
            ranged: from > 0,
            size: Some(size),
        }
    }

    /// Part `[start, end)` of an object of `size` bytes (`None`: unknown).
    fn part(start: u64, end: u64, size: Option<u64>) -> Asked {
        Asked {
            part_start: start,
            from: start,
            end,
            ranged: true,
            size,
        }
    }

    #[test]
    fn whole_and_resumed_replies() {
        assert_eq!(
            check(200, Some("100"), None, whole(0, 100)),
            Ok((100, true, 100))
        );
        assert_eq!(check(200, None, None, whole(0, 100)), Ok((100, true, 100)));
        assert_eq!(check(200, Some("0"), None, whole(0, 0)), Ok((0, true, 0)));
        // A server that ignores Range sends everything again.
        assert_eq!(
            check(200, Some("100"), None, whole(40, 100)),
            Ok((100, true, 100))
        );
        assert_eq!(
            check(206, Some("60"), Some("bytes 40-99/100"), whole(40, 100)),
            Ok((60, false, 100))
        );
    }

    #[test]
    fn parts_and_probes() {
        let p = part(100, 200, Some(250));
        assert_eq!(
            check(206, Some("100"), Some("bytes 100-199/250"), p),
            Ok((100, false, 250))
        );
        // A probe learns the size; a short object ends inside the asked range.
        let probe = part(0, 100, None);
        assert_eq!(
            check(206, Some("100"), Some("bytes 0-99/1000"), probe),
            Ok((100, false, 1000))
        );
        assert_eq!(
            check(206, Some("7"), Some("bytes 0-6/7"), probe),
            Ok((7, false, 7))
        );
        // A server that ignores Range: fine if the whole object fits the part.
        assert_eq!(check(200, Some("7"), None, probe), Ok((7, true, 7)));
        assert_eq!(
            check(200, Some("101"), None, probe),
            Err(ErrorKind::InvalidResponse)
        );
        assert_eq!(
            check(200, None, None, probe),
            Err(ErrorKind::InvalidResponse)
        );
        // ...and never for a part other than the first.
        assert_eq!(
            check(200, Some("250"), None, p),
            Err(ErrorKind::InvalidResponse)
        );
        // Resuming inside a part asks for the rest of the part only.
        let resume = Asked { from: 150, ..p };
        assert_eq!(
            check(206, Some("50"), Some("bytes 150-199/250"), resume),
            Ok((50, false, 250))
        );
    }

    #[test]
    fn disagreements_are_typed_errors() {
        use ErrorKind::*;
        let w = whole(0, 100);
        assert_eq!(check(200, Some("101"), None, w), Err(LengthMismatch));
        assert_eq!(check(200, Some("+100"), None, w), Err(LengthMismatch));
        assert_eq!(check(200, Some("abc"), None, w), Err(LengthMismatch));
        let r = whole(40, 100);
        for cr in ["bytes 41-99/100", "bytes 40-99/101", "bytes 40-98/100"] {
            assert_eq!(check(206, None, Some(cr), r), Err(LengthMismatch), "{cr}");
        }
        assert_eq!(
            check(206, Some("59"), Some("bytes 40-99/100"), r),
            Err(LengthMismatch)
        );
        assert_eq!(check(206, Some("60"), None, r), Err(LengthMismatch));
        assert_eq!(
            check(206, Some("100"), Some("bytes 0-99/100"), w),
            Err(InvalidResponse)
        );
        assert_eq!(check(204, None, None, whole(0, 0)), Err(InvalidResponse));
        let p = part(100, 200, Some(250));
        for cr in [
            "bytes 100-198/250",
            "bytes 100-199/251",
            "bytes 0-99/250",
            "bytes */250",
        ] {
            assert_eq!(check(206, None, Some(cr), p), Err(LengthMismatch), "{cr}");
        }
    }

    #[test]
    fn empty_object_replies() {
        let r416 = StatusCode::RANGE_NOT_SATISFIABLE;
        assert!(is_empty_object_reply(r416, None));
        assert!(is_empty_object_reply(r416, Some(b"bytes */0")));
        assert!(!is_empty_object_reply(r416, Some(b"bytes */10")));
        assert!(!is_empty_object_reply(StatusCode::NOT_FOUND, None));
    }

    #[test]
    fn the_pin_catches_a_changed_object() {
        let pin = ObjectPin::new(None);
        let check = |etag: Option<&str>, version: Option<&str>, total| {
            pin.check(
                StatusCode::PARTIAL_CONTENT,
                etag.map(str::as_bytes),
                version.map(str::as_bytes),
                || None,
                total,
            )
            .map_err(|e| e.kind())
        };
        assert_eq!(check(Some("\"a\""), Some("v1"), 10), Ok(true));
        assert_eq!(check(Some("\"a\""), None, 10), Ok(false));
        assert_eq!(
            check(Some("\"a\""), Some("v1"), 11),
            Err(ErrorKind::Changed)
        );
        assert_eq!(
            check(Some("\"b\""), Some("v1"), 10),
            Err(ErrorKind::Changed)
        );
        assert_eq!(check(None, Some("v1"), 10), Err(ErrorKind::Changed));
        assert_eq!(
            check(Some("\"a\""), Some("v2"), 10),
            Err(ErrorKind::Changed)
        );
        assert_eq!(pin.snapshot().version_id.as_deref(), Some("v1"));
    }

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
