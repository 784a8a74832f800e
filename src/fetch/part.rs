//! One part of an object (or a whole small object) end to end: attempts until its bytes are in
//! or it fails for good.
//!
//! Each attempt asks for what the part still lacks, signed afresh and sent on a pooled
//! connection; its reply is held to the request and to the object's pin, and its body is
//! copied into the part's leased slabs, which the part keeps across attempts. When an attempt
//! breaks off mid-body and the ETag is pinned, the next one asks only for the missing bytes.
//! An object of unknown size is probed by its first part, whose reply gives the size; a `416`
//! to that first range is an empty object.
//!
//! A part is accepted only if its length is what was asked for. With checksums on, a part that
//! is the whole object is hashed as it is read and must match the checksum its reply states
//! (a mismatch is sent again once, on a new connection); a part of an object fetched in parts
//! gives the CRC of its bytes, once the object's checksum is learned. A body slower than the
//! [`MinBodyRate`] floor is resumed at once on a new connection (twice per part at most).

use std::pin::pin;

use super::attempts::{Attempts, Start};
use super::checksum_heads::{learn_checksum, verify_as_composite, verify_through_upload};
use super::exchange::send_hedged;
use super::object::ObjectFetch;
use super::reply::{check_reply, is_empty_object_reply, length_error, Asked, ObjectPin, Pinned};
use super::signed::read_error_body;
use super::stall::{slow_body, stalled, unarmed, Floor, Stall, Waited};
use crate::checksum::{ChecksumAlgorithm, Composite, Hasher, Offered, Value};
use crate::config::{ChecksumMode, MinBodyRate};
use crate::conn::{Conn, Unit};
use crate::context::Context;
use crate::error::{Error, ErrorKind};
use crate::limiter::Slot;
use crate::memory::Lease;
use crate::s3::{status_error, S3Request};
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

/// Resumes for a body's rate one part may make; after them only the stall timeout applies.
const MAX_SLOW_RESUMES: u32 = 2;

/// Fetches one part of `obj` into `lease`; `first` is the slot and connection right for the
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
pub(crate) async fn fetch_part(
    obj: &ObjectFetch<'_>,
    spec: PartSpec,
    mut lease: Lease,
    first: (Slot, Unit),
    on_size: &(dyn Fn(u64) + Sync),
    connect: Connect,
) -> Result<Fetched, Error> {
    let ctx = obj.ctx;
    let mut attempts = Attempts::new(ctx, Start::Ticket(first.0, first.1));
    let mut running = Running::default();
    // Sent again after a checksum mismatch (once only).
    let mut resent = false;
    // Resumes because the body was slower than the floor; `slow`: the last attempt was one.
    let mut slow_resumes = 0;
    let mut slow = false;
    // A whole object's upload parts, once learned (a resend after a mismatch keeps them).
    let mut upload = None;
    let part = PartRequest { obj, spec, on_size };
    let whole = loop {
        let (slot, unit) = attempts.next().await;
        let fresh = connect == Connect::New || resent || std::mem::take(&mut slow);
        let floor = Some(ctx.config.min_body_rate)
            .filter(|rate| rate.is_on() && slow_resumes < MAX_SLOW_RESUMES);
        match part
            .attempt(&mut lease, unit, &mut running, fresh, floor)
            .await
        {
            Ok(whole) => {
                attempts.succeeded(slot);
                if !whole {
                    break whole;
                }
                match verify_through_upload(obj, &lease, &mut upload).await {
                    Ok(()) => break whole,
                    Err(e) => resend_after_mismatch(ctx, e, &mut resent)
                        .map_err(|e| e.with_attempts(attempts.attempts()))?,
                }
                attempts.again();
            }
            Err(Failed::Slow(e)) => {
                // Not a failure of the server's: resumed at once, on a new connection.
                Counters::add(&ctx.counters.slow_bodies_resumed, 1);
                tracing::debug!(
                    target: "s3_ordered::fetch",
                    error = %e,
                    "slow body; resuming on a new connection",
                );
                slow_resumes += 1;
                slow = true;
                attempts.again();
            }
            Err(Failed::Untyped(full, composite)) => {
                attempts.succeeded(slot);
                // Neither reading agreeing is a mismatch, sent again once as any is.
                let verdict = match verify_as_composite(obj, &lease, &mut upload, &composite).await
                {
                    Ok(true) => break true,
                    Ok(false) => full,
                    Err(e) => e,
                };
                resend_after_mismatch(ctx, verdict, &mut resent)
                    .map_err(|e| e.with_attempts(attempts.attempts()))?;
                attempts.again();
            }
            Err(Failed::Error(e)) if e.kind() == ErrorKind::ChecksumMismatch => {
                resend_after_mismatch(ctx, e, &mut resent)
                    .map_err(|e| e.with_attempts(attempts.attempts()))?;
                attempts.again();
            }
            Err(Failed::Error(e)) => {
                attempts.failed(slot, e, obj.target).await?;
            }
        }
    };
    let crc = if ctx.config.checksum_mode.is_on() && !whole {
        part.checksum(&lease, &mut running)
            .await
            .map_err(|e| e.with_attempts(attempts.attempts()))?
    } else {
        None
    };
    if ctx.config.checksum_mode == ChecksumMode::Required && spec.start == 0 {
        checksum_required(obj.pin)?;
    }
    Counters::add(&ctx.counters.parts, 1);
    Counters::add(&ctx.counters.bytes, lease.len() as u64);
    Ok(Fetched { lease, crc })
}

/// After `e`, an attempt's failure or its whole body's verification's: `Ok` when the part is
/// to be sent again on a new connection — a first checksum mismatch, most likely corruption in
/// transit; else `e`, final.
fn resend_after_mismatch(ctx: &Context, e: Error, resent: &mut bool) -> Result<(), Error> {
    if e.kind() != ErrorKind::ChecksumMismatch {
        return Err(e);
    }
    Counters::add(&ctx.counters.checksum_mismatches, 1);
    if std::mem::replace(resent, true) {
        return Err(e);
    }
    tracing::warn!(
        target: "s3_ordered::fetch",
        error = %e,
        "checksum mismatch; sending again on a new connection",
    );
    Ok(())
}

/// With checksums required: the object (whose first part this is) has a checksum its bytes
/// were verified against, unless it is empty.
fn checksum_required(pin: &ObjectPin) -> Result<(), Error> {
    let offered = pin.checksum();
    if matches!(offered, Some(Offered::Full(_) | Offered::Parts(_)))
        || pin.size().unwrap_or_default() == 0
    {
        return Ok(());
    }
    Err(
        Error::new(ErrorKind::ChecksumMissing).with_message(match offered {
            Some(Offered::Composite(c)) => format!(
                "the server has only a composite {} checksum (of the upload's parts), and the \
                 parts' own could not be had",
                c.algorithm
            ),
            _ => "the server sent no checksum for the object".to_owned(),
        }),
    )
}

/// Why an attempt ended without its part.
enum Failed {
    /// A failure, retried or final as [`classify`] says.
    Error(Error),
    /// The body came slower than the floor: resumed at once on a new connection.
    Slow(Error),
    /// The whole object's bytes do not match its checksum read as full-object (`Error`), and
    /// the value's type was not stated on a multipart upload's object: it is judged as the
    /// composite of the upload's parts next.
    Untyped(Error, Composite),
}

impl From<Error> for Failed {
    fn from(e: Error) -> Self {
        Failed::Error(e)
    }
}

/// One part's request, as every attempt makes it.
struct PartRequest<'a> {
    obj: &'a ObjectFetch<'a>,
    spec: PartSpec,
    on_size: &'a (dyn Fn(u64) + Sync),
}

/// What one attempt asks for: bytes `from..end` of the object, as the pin stood when it began.
struct Ask {
    pinned: Pinned,
    from: u64,
    /// One past the part's last byte: the object's end may come first.
    end: u64,
    /// The request carries `Range`.
    ranged: bool,
}

/// What an accepted response head says the body must be.
struct Accepted {
    /// The bytes the lease must hold when the body ends.
    want: u64,
    /// The part is the whole object.
    whole: bool,
    /// The checksum the whole object's bytes must have, when one is checked here.
    expected: Option<crate::checksum::Expected>,
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
        let ctx = self.obj.ctx;
        let ask = self.ask(lease, running);
        let req = self.request(&ask)?;
        let timer = pin!(unarmed(ctx));
        let mut stalls = Stall::new(timer, ctx.config.stall_timeout);
        let mut conn = send_hedged(ctx, self.obj.rights, unit, &req, &mut stalls, fresh).await?;
        let status = conn.head().status();
        if !status.is_success() || self.empty(&conn, &ask) {
            let session = req.session_signed();
            return self.refused(conn, &mut stalls, &ask, lease, session).await;
        }
        let accepted = self.accept(&conn, &ask, lease, running)?;
        stalls.floor = floor.map(Floor::new);
        // Each read goes from the connection straight into the lease's slabs and into the
        // running checksum (in this future, not one of its own: no copy of a future per GET).
        let want = accepted.want;
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
                Err(Waited::Stalled) => return Err(stalled(status, stalls.stall, got, want).into()),
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
        Self::body_complete(&conn, lease, want)?;
        if let Some(expected) = accepted.expected {
            if let Some(got) = running.finish(lease) {
                if let Err(e) = expected.check(got) {
                    let e = e.with_status(status);
                    let Some(composite) = expected.composite_reading() else {
                        // The connection is dropped (closed), not released: the resend goes
                        // on a new one.
                        return Err(e.into());
                    };
                    // Perhaps the composite of the upload's parts: the reply was whole and well
                    // framed, so its connection serves on.
                    conn.release();
                    return Err(Failed::Untyped(e, composite));
                }
            }
        }
        conn.release();
        tracing::debug!(
            target: "s3_ordered::fetch",
            status = status.as_u16(),
            bytes = accepted.want,
            "GET done",
        );
        Ok(accepted.whole)
    }

    /// What this attempt asks for: the part, or — when the pinned ETag guarantees the same
    /// object — only the bytes the lease still lacks. Else the lease starts over.
    #[inline]
    fn ask(&self, lease: &mut Lease, running: &mut Running) -> Ask {
        let spec = self.spec;
        let pinned = self.obj.pin.snapshot();
        let end = match pinned.size {
            Some(size) => (spec.start + spec.len).min(size).max(spec.start),
            None => spec.start + spec.len,
        };
        let held = lease.len() as u64;
        let from = if pinned.etag.is_some() && held > 0 && held < end - spec.start {
            spec.start + held
        } else {
            lease.clear();
            running.reset();
            spec.start
        };
        Ask {
            ranged: spec.ranged || from > spec.start,
            pinned,
            from,
            end,
        }
    }

    /// The GET for `ask`: `If-Match` once an ETag is pinned, `Range` when ranged.
    #[inline]
    fn request<'r>(&'r self, ask: &'r Ask) -> Result<S3Request<'r>, Error> {
        let obj = self.obj;
        let mut req = obj.target.get_object(obj.key, obj.version_id)?;
        if let Some(etag) = &ask.pinned.etag {
            req.if_match(etag);
        }
        if ask.ranged {
            req.range(ask.from, ask.end - 1);
        }
        if obj.ctx.config.checksum_mode.is_on() {
            req.checksum_mode();
        }
        tracing::debug!(
            target: "s3_ordered::fetch",
            from = ask.from,
            to = ask.end.saturating_sub(1),
            ranged = ask.ranged,
            if_match = ask.pinned.etag.is_some(),
            "GET sent"
        );
        Ok(req)
    }

    /// A reply whose status is not a success, or a 206 that gives the object 0 bytes: the
    /// answer to the first range of an empty object (the part is then done, empty), or the
    /// error it states (marked with the session the request was signed with, if any).
    async fn refused(
        &self,
        conn: Conn,
        stalls: &mut Stall<'_>,
        ask: &Ask,
        lease: &mut Lease,
        session: Option<u64>,
    ) -> Result<bool, Failed> {
        let status = conn.head().status();
        if !self.empty(&conn, ask) {
            let region = conn.head().get("x-amz-bucket-region").map(<[u8]>::to_vec);
            let bytes = read_error_body(conn, stalls).await;
            let e = status_error(status, &bytes, region.as_deref());
            return Err(e.signed_with_session(session).into());
        }
        if status.is_success() {
            // A 206 that gives the object 0 bytes: its body cannot be trusted to match its
            // framing, so the connection is closed, not read.
            drop(conn);
        } else {
            read_error_body(conn, stalls).await;
        }
        // S3 refuses any range of a 0-byte object (S3-NOTES: "Ranged GET").
        let pin = self.obj.pin;
        if pin.learn_empty() {
            lease.shrink_to(0);
            (self.on_size)(0);
        }
        if self.obj.ctx.config.checksum_mode.is_on() {
            pin.learn_checksum(Offered::Nothing);
        }
        Ok(true)
    }

    /// True when the reply to the first range of an object of unknown size says the object
    /// is empty ([`is_empty_object_reply`]).
    fn empty(&self, conn: &Conn, ask: &Ask) -> bool {
        let probe = ask.pinned.size.is_none() && ask.from == 0;
        let head = conn.head();
        probe && is_empty_object_reply(head.status(), head.get("content-range"))
    }

    /// Holds a success reply's head to `ask` and to the object's pin (pinning what it tells
    /// first, the size among it), and readies the checksum its body is hashed in.
    #[inline]
    fn accept(
        &self,
        conn: &Conn,
        ask: &Ask,
        lease: &mut Lease,
        running: &mut Running,
    ) -> Result<Accepted, Error> {
        let (spec, pin) = (self.spec, self.obj.pin);
        let head = conn.head();
        let status = head.status();
        let asked = Asked {
            part_start: spec.start,
            from: ask.from,
            end: ask.end,
            ranged: ask.ranged,
            size: ask.pinned.size,
        };
        let shape = check_reply(
            status,
            head.get("content-length"),
            head.get("content-range"),
            asked,
        )?;
        if shape.restart {
            lease.clear(); // a full body, even if a range was asked for
            running.reset();
        }
        let last_modified = || head.get("last-modified");
        let (etag, version) = (head.get("etag"), head.get("x-amz-version-id"));
        if pin.check(status, etag, version, last_modified, shape.total)? {
            // This (first) reply told the size: keep only the slabs the part needs.
            lease.shrink_to(spec.len.min(shape.total - spec.start.min(shape.total)));
            (self.on_size)(shape.total);
        }
        // This part is the whole object: verified here. Else its CRC is computed as it is
        // read, once the object's checksum is known, for the object to combine.
        let whole = spec.start == 0 && spec.len >= shape.total;
        let mut expected = None;
        if self.obj.ctx.config.checksum_mode.is_on() {
            // S3 states the object's checksum only on a reply that carries all of it.
            let offered = if shape.restart || (ask.from == 0 && shape.len == shape.total) {
                let offered = Offered::from_fields(|name| head.get(name));
                pin.learn_checksum(offered.clone());
                Some(offered)
            } else {
                pin.checksum()
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
            ask.from - spec.start + shape.len
        };
        Ok(Accepted {
            want,
            whole,
            expected,
        })
    }

    /// After the body's last read: `Ok` if the lease holds the `want` bytes asked for.
    #[inline]
    fn body_complete(conn: &Conn, lease: &Lease, want: u64) -> Result<(), Failed> {
        let status = conn.head().status();
        let got = lease.len();
        if got as u64 == want {
            return Ok(());
        }
        if conn.ends_with_close() {
            // A body framed by the connection's close cannot tell a server that meant to end
            // it from a connection that broke: retried like a broken connection.
            return Err(Error::new(ErrorKind::Connection)
                .with_status(status)
                .with_message(format!(
                    "the connection closed after {got} of {want} bytes of a body that ends with it"
                ))
                .into());
        }
        Err(length_error(status, format!("body ended after {got} of {want} bytes")).into())
    }

    /// For a part of an object fetched in ranged parts: learns the object's checksum (the
    /// first part, with a HEAD), or waits for the first part to; then the CRC of this part's
    /// bytes when the checksum is a CRC (a digest is computed over the parts in order where
    /// they meet).
    async fn checksum(&self, lease: &Lease, running: &mut Running) -> Result<Option<u64>, Error> {
        let pin = self.obj.pin;
        let offered = match pin.checksum() {
            Some(offered) => offered,
            None if pin.claim_head() => {
                // An object of unknown size found to need parts: its checksum now, at the
                // front of the queue, as a retry is (the object was admitted long ago).
                learn_checksum(self.obj, Start::Queue(Place::Front)).await?
            }
            None => pin.checksum_resolved().await,
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
