//! [`Assembly`]: one object of a request while its parts are fetched — where the parts' results
//! meet and become the object's one result at its position.
//!
//! * A **whole** object keeps each finished part's lease; when the last one is in, the leases
//!   are joined in order into one [`Body`] and delivered.
//! * A **streaming** object is delivered as soon as its first part is in, with a body reading
//!   from a [`PartQueue`]; later parts go into the queue as they finish.
//! * An object of unknown size is **probing** until its first part's reply tells the size; it
//!   is then planned like any other, and admission, which waits for that before admitting
//!   anything later, admits its other parts.
//!
//! A part that fails for good fails the object: one error at its position and every other part
//! cancelled — or, once a streaming body is out, an error read from the body after the parts
//! before it, with the parts after it cancelled. Dropping a streaming body cancels the parts
//! still to come. Either way no more parts of the object are admitted.
//!
//! Checksums of an object in parts are checked here, against the value its HEAD learned: a
//! whole object's parts' CRCs are combined in order (a digest, or a multipart upload's parts'
//! checksums, is computed over the joined body) before it is delivered, and a first mismatch
//! has every part fetched again, a second fails it; a streaming body ends with the verdict on
//! the combined CRC once every part is in, or checks its bytes in order as it is read.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use futures_util::future::AbortHandle;

use super::plan::{self, Mode};
use tokio::sync::Notify;

use super::delivery::Delivery;
use crate::checksum::{self, Checksum, InOrder, NotVerified, Offered, Value};
use crate::context::Context;
use crate::error::{Error, ErrorKind};
use crate::fetch::{Fetched, ObjectFetch, ObjectPin, PartSpec, Rights};
use crate::memory::{Body, EndCheck, Lease, PartQueue};
use crate::object::{Object, ObjectRef};
use crate::s3::BucketTarget;
use crate::stats::Counters;

/// One object of a request, from its first part's admission to its last part's end.
pub(crate) struct Assembly {
    pub(crate) seq: u64,
    pub(crate) key: String,
    pub(crate) version_id: Option<String>,
    pub(crate) pin: ObjectPin,
    ctx: Arc<Context>,
    /// Signalled when the size becomes known or the object ends.
    sized: Notify,
    state: Mutex<State>,
}

struct State {
    /// Present until the object's result (or its streaming body) is delivered.
    delivery: Option<Delivery>,
    kind: Kind,
    /// Parts in all, once known (1 while probing).
    parts: usize,
    /// No more parts are wanted: the object failed or its streaming body was dropped.
    finished: bool,
    /// Its parts were fetched again after a checksum mismatch (once at most).
    refetched: bool,
    aborts: Vec<(usize, AbortHandle)>,
}

enum Kind {
    Whole {
        /// Each part's lease once in; empty for a one-part object.
        leases: Vec<Option<Lease>>,
        /// Each part's CRC and length once in (with a CRC checksum); empty for one part.
        sums: Vec<Option<(u64, u64)>>,
        received: usize,
    },
    Streaming {
        queue: Arc<PartQueue>,
        sums: Vec<Option<(u64, u64)>>,
        received: usize,
    },
    Probing,
}

/// A part of the object, in: its index, its bytes, and — for a part of an object whose
/// checksum is a CRC combined over its parts — the CRC of its bytes and their count.
struct Arrived {
    idx: usize,
    lease: Lease,
    sum: Option<(u64, u64)>,
}

impl Assembly {
    /// Plans `obj` (whose result goes to `delivery`).
    pub(crate) fn new(ctx: &Arc<Context>, obj: ObjectRef, delivery: Delivery) -> Arc<Self> {
        let seq = delivery.seq;
        Arc::new_cyclic(|me: &Weak<Assembly>| {
            let (kind, parts) = match obj.size {
                Some(size) => plan_known(ctx, me, size),
                None => (Kind::Probing, 1),
            };
            Assembly {
                seq,
                key: obj.key,
                version_id: obj.version_id,
                pin: ObjectPin::new(obj.size),
                ctx: Arc::clone(ctx),
                sized: Notify::new(),
                state: Mutex::new(State {
                    delivery: Some(delivery),
                    kind,
                    parts,
                    finished: false,
                    refetched: false,
                    aborts: Vec::new(),
                }),
            }
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Parts in all, as far as known now (1 while the size is being learned).
    pub(crate) fn parts(&self) -> usize {
        self.lock().parts
    }

    /// False once the object failed or its streaming body was dropped.
    pub(crate) fn wants_more(&self) -> bool {
        !self.lock().finished
    }

    /// This object as its parts and HEADs fetch it, for a request of `target` holding `rights`.
    #[inline]
    pub(crate) fn fetching<'a>(
        &'a self,
        ctx: &'a Context,
        target: &'a BucketTarget,
        rights: &'a Rights,
    ) -> ObjectFetch<'a> {
        ObjectFetch {
            ctx,
            target,
            key: &self.key,
            version_id: self.version_id.as_deref(),
            pin: &self.pin,
            rights,
        }
    }

    /// The bytes part `idx` stands for.
    pub(crate) fn spec(&self, idx: usize) -> PartSpec {
        plan::part_spec(self.pin.size(), self.ctx.config.part_size, idx)
    }

    /// Whether a part's fetch may have to be cancelled: for an object of several parts, or one
    /// still probing. A known one-part object has nothing else to cancel when it fails, and is
    /// whole or already delivered when its body could be dropped.
    pub(crate) fn cancellable(&self) -> bool {
        let st = self.lock();
        st.parts > 1 || matches!(st.kind, Kind::Probing)
    }

    /// Registers the fetch of part `idx`, so a failure or a dropped body can cancel it.
    pub(crate) fn add_abort(&self, idx: usize, handle: AbortHandle) {
        let mut st = self.lock();
        if st.finished {
            handle.abort();
        } else {
            st.aborts.push((idx, handle));
        }
    }

    /// The first part's reply told the object's size (objects of unknown size only).
    pub(crate) fn learned_size(self: &Arc<Self>, size: u64) {
        {
            let mut st = self.lock();
            if !matches!(st.kind, Kind::Probing) {
                return;
            }
            let (kind, parts) = plan_known(&self.ctx, &Arc::downgrade(self), size);
            st.kind = kind;
            st.parts = parts;
        }
        self.sized.notify_waiters();
    }

    /// True once the size is known, or the object ended without it.
    pub(crate) fn is_resolved(&self) -> bool {
        let st = self.lock();
        st.finished || !matches!(st.kind, Kind::Probing)
    }

    /// Waits until the size is known, or the object ended without it.
    pub(crate) async fn size_known(&self) {
        loop {
            let notified = self.sized.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the check, so a signal between the two is not missed.
            notified.as_mut().enable();
            if self.is_resolved() {
                return;
            }
            notified.await;
        }
    }

    /// Takes part `idx`'s result: fills in the object, delivers it when it is complete (or
    /// streamable), or fails it.
    ///
    /// Returns the parts' leases, in order, when a whole object in parts did not match its
    /// checksum for the first time: its caller fetches every part again into them
    /// ([`Refetch`]), and hands each to this again.
    #[must_use = "a refetch returned must be fetched, or the object never ends"]
    pub(crate) fn part_done(&self, idx: usize, result: Result<Fetched, Error>) -> Option<Refetch> {
        let mut out = Outcome::default();
        {
            let mut st = self.lock();
            match result {
                Ok(f) => self.part_in(&mut st, idx, f.lease, f.crc, &mut out),
                Err(e) => self.part_failed(&mut st, idx, e, &mut out),
            }
        }
        let refetch = out.refetch.take();
        self.settle(out);
        refetch
    }

    /// Does what a part's end decided, outside the lock: delivering wakes the consumer,
    /// aborting and dropping return memory.
    fn settle(&self, out: Outcome) {
        for (_, handle) in out.abort {
            handle.abort();
        }
        if let Some((queue, idx, part)) = out.queue_put {
            queue.put(idx, part);
        }
        if let Some((queue, verdict)) = out.verdict {
            queue.verdict(verdict);
        }
        if let Some((delivery, item)) = out.deliver {
            delivery.deliver(item, &self.ctx.counters);
        }
        drop(out.dropped);
        // A probe that ended (in failure) without telling the size must not leave admission
        // waiting for it.
        self.sized.notify_waiters();
    }

    fn part_in(
        &self,
        st: &mut State,
        idx: usize,
        lease: Lease,
        crc: Option<u64>,
        out: &mut Outcome,
    ) {
        let sum = crc.map(|crc| (crc, lease.len() as u64));
        match st.kind {
            Kind::Whole { .. } => self.whole_part_in(st, Arrived { idx, lease, sum }, out),
            Kind::Streaming { .. } => self.streaming_part_in(st, Arrived { idx, lease, sum }, out),
            Kind::Probing => {
                // The size is learned before a part's body is read, so this cannot happen.
                let e = Error::new(ErrorKind::Internal)
                    .with_message("a part finished before the object's size was known");
                out.dropped.push(lease);
                self.part_failed(st, idx, e, out);
            }
        }
    }

    /// [`Assembly::part_in`] for an object delivered whole: once every part is in, they are
    /// verified together and joined into its body.
    fn whole_part_in(&self, st: &mut State, part: Arrived, out: &mut Outcome) {
        let Arrived { idx, lease, sum } = part;
        let Kind::Whole {
            leases,
            sums,
            received,
        } = &mut st.kind
        else {
            return;
        };
        if st.delivery.is_none() {
            out.dropped.push(lease); // the object already failed
            return;
        }
        let (body, checksum) = if leases.is_empty() {
            // The one part of a one-part object, verified as it was read.
            (lease, self.outcome())
        } else {
            leases[idx] = Some(lease);
            sums[idx] = sum;
            *received += 1;
            if *received < leases.len() {
                return;
            }
            let checksum = match self.verify_parts(sums, leases) {
                Ok(checksum) => checksum,
                Err(e) if e.kind() == ErrorKind::ChecksumMismatch && !st.refetched => {
                    // Corruption in transit, most likely, in a part that cannot be told:
                    // every part once more, into the same memory, on new connections.
                    tracing::warn!(error = %e, "checksum mismatch; fetching every part again");
                    st.refetched = true;
                    *received = 0;
                    sums.iter_mut().for_each(|s| *s = None);
                    let leases = leases.iter_mut().filter_map(Option::take).collect();
                    out.refetch = Some(Refetch { leases });
                    return;
                }
                Err(e) => {
                    self.part_failed(st, usize::MAX, e, out);
                    return;
                }
            };
            let mut joined = leases.iter_mut().filter_map(Option::take);
            let Some(mut body) = joined.next() else {
                return;
            };
            for next in joined {
                body.append(next);
            }
            (body, checksum)
        };
        self.count(checksum);
        Counters::add(&self.ctx.counters.objects, 1);
        if let Some(mut delivery) = st.delivery.take() {
            let object = self.object(&mut delivery, Body::whole(body), true, checksum);
            out.deliver = Some((delivery, Ok(object)));
        }
    }

    /// [`Assembly::part_in`] for a streaming object: its body is handed out with its first part,
    /// and each part goes into the body's queue; with the last, a CRC over them all is judged.
    fn streaming_part_in(&self, st: &mut State, part: Arrived, out: &mut Outcome) {
        let (Arrived { idx, lease, sum }, parts) = (part, st.parts);
        let Kind::Streaming {
            queue,
            sums,
            received,
        } = &mut st.kind
        else {
            return;
        };
        *received += 1;
        sums[idx] = sum;
        if idx == 0 {
            if let Some(mut delivery) = st.delivery.take() {
                // The first part learned the checksum: the body checks its end by it.
                let checksum = self.outcome();
                // A CRC combines the parts' CRCs; anything else checks the bytes
                // in order as the body reads them.
                let offered = self.pin.checksum();
                match offered.as_ref() {
                    Some(Offered::Full(e)) if e.algorithm.is_crc() => queue.await_verdict(),
                    o => match o.and_then(Offered::in_order) {
                        Some(check) => queue.check(Box::new(BodyCheck {
                            check,
                            ctx: Arc::clone(&self.ctx),
                            key: self.key.clone(),
                            seq: self.seq,
                        })),
                        None => self.count(checksum),
                    },
                }
                let size = self.pin.size().unwrap_or_default();
                let body = Body::streaming(size, Arc::clone(queue));
                let object = self.object(&mut delivery, body, false, checksum);
                out.deliver = Some((delivery, Ok(object)));
            }
        }
        if *received == parts {
            Counters::add(&self.ctx.counters.objects, 1);
            if let Some(Offered::Full(e)) = self.pin.checksum() {
                if e.algorithm.is_crc() {
                    let verdict = self.verify_parts(sums, &[]).map(|c| self.count(c));
                    let verdict = verdict.map_err(|e| {
                        Counters::add(&self.ctx.counters.errors, 1);
                        e.with_key(&self.key).with_seq(self.seq)
                    });
                    out.verdict = Some((Arc::clone(queue), verdict));
                }
            }
        }
        out.queue_put = Some((Arc::clone(queue), idx, Ok(lease)));
    }

    /// Part `idx` failed for good (`usize::MAX`: the object as a whole did).
    fn part_failed(&self, st: &mut State, idx: usize, e: Error, out: &mut Outcome) {
        let parts = st.parts;
        let e = if parts > 1 && idx < parts {
            e.with_part(idx, parts)
        } else {
            e
        };
        st.finished = true;
        if let Some(delivery) = st.delivery.take() {
            // Nothing handed out yet: the object fails as a whole at its position.
            out.abort = std::mem::take(&mut st.aborts);
            if let Kind::Whole { leases, .. } = &mut st.kind {
                out.dropped
                    .extend(leases.iter_mut().filter_map(Option::take));
            }
            out.deliver = Some((delivery, Err(e)));
            return;
        }
        // A streaming body is out: it reads the error after the parts before it, whose
        // downloads go on; the parts after it are cancelled.
        let (later, earlier) = std::mem::take(&mut st.aborts)
            .into_iter()
            .partition(|(i, _)| *i > idx);
        st.aborts = earlier;
        out.abort = later;
        if let Kind::Streaming { queue, .. } = &st.kind {
            Counters::add(&self.ctx.counters.errors, 1);
            let e = e.with_key(&self.key).with_seq(self.seq);
            out.queue_put = Some((Arc::clone(queue), idx, Err(e)));
        }
    }

    /// The object failed as a whole (its checksum's HEAD did): one error at its position, or
    /// read from a streaming body already out; every part still to come is cancelled.
    pub(crate) fn failed(&self, e: Error) {
        let mut out = Outcome::default();
        {
            let mut st = self.lock();
            if st.finished {
                return;
            }
            let last = st.parts.saturating_sub(1);
            let idx = if st.delivery.is_some() {
                usize::MAX
            } else {
                last
            };
            self.part_failed(&mut st, idx, e, &mut out);
        }
        self.settle(out);
    }

    /// The streaming body was dropped before its end: cancel what is still to come.
    fn close(&self) {
        let aborts = {
            let mut st = self.lock();
            st.finished = true;
            std::mem::take(&mut st.aborts)
        };
        for (_, handle) in aborts {
            handle.abort();
        }
    }

    /// The delivered object; its key comes from `delivery`, which holds the object's one copy.
    /// Once every part is in (`complete`), what the replies pinned is moved into it; a
    /// streaming object gets a copy, as its later parts still need the pin.
    fn object(
        &self,
        delivery: &mut Delivery,
        body: Body,
        complete: bool,
        checksum: Checksum,
    ) -> Object {
        let pinned = if complete {
            self.pin.take()
        } else {
            self.pin.snapshot()
        };
        Object {
            key: delivery.take_key().unwrap_or_else(|| self.key.clone()),
            seq: self.seq,
            etag: pinned.etag.map(etag_text),
            version_id: pinned.version_id,
            last_modified: pinned.last_modified,
            checksum,
            body,
        }
    }

    /// What the object's checksum allows: verified (once the check passes) or why not.
    fn outcome(&self) -> Checksum {
        self.pin
            .checksum()
            .map_or(Checksum::NotVerified(NotVerified::Off), |o| o.outcome())
    }

    /// Counts an object's checksum outcome.
    fn count(&self, checksum: Checksum) {
        let counters = &self.ctx.counters;
        match checksum {
            Checksum::Verified(_) | Checksum::VerifiedParts(_) => {
                Counters::add(&counters.checksums_verified, 1);
            }
            Checksum::NotVerified(NotVerified::Off) => {}
            Checksum::NotVerified(_) => Counters::add(&counters.checksums_unavailable, 1),
        }
    }

    /// Checks an object fetched in parts against its checksum: the parts' CRCs combined in
    /// order, or (a digest, the upload's parts, or a CRC missing) the bytes of `leases` checked
    /// in order (none for a streaming object, whose parts are gone to its body).
    fn verify_parts(
        &self,
        sums: &[Option<(u64, u64)>],
        leases: &[Option<Lease>],
    ) -> Result<Checksum, Error> {
        let Some(offered) = self.pin.checksum() else {
            return Ok(self.outcome());
        };
        let verdict = match &offered {
            Offered::Full(e) if e.algorithm.is_crc() && sums.iter().all(Option::is_some) => {
                let alg = e.algorithm;
                let crc = sums
                    .iter()
                    .flatten()
                    .fold(checksum::empty_crc(alg), |acc, (crc, len)| {
                        checksum::combine(alg, acc, *crc, *len)
                    });
                e.check(Value::Crc(crc))
            }
            _ => match offered.in_order() {
                Some(_) if leases.is_empty() => {
                    return Err(Error::new(ErrorKind::Internal)
                        .with_message("a part of a streaming object came without its CRC"));
                }
                Some(mut check) => {
                    for lease in leases.iter().flatten() {
                        lease.chunks().for_each(|bytes| check.update(bytes));
                    }
                    check.finish()
                }
                None => return Ok(self.outcome()),
            },
        };
        match verdict {
            Ok(()) => Ok(offered.outcome()),
            Err(err) => {
                Counters::add(&self.ctx.counters.checksum_mismatches, 1);
                Err(err)
            }
        }
    }
}

/// A streaming body's check of its bytes in order, as it reads them: a digest (SHA digests do
/// not combine) or the upload's parts.
struct BodyCheck {
    check: InOrder,
    ctx: Arc<Context>,
    key: String,
    seq: u64,
}

impl EndCheck for BodyCheck {
    fn update(&mut self, bytes: &[u8]) {
        self.check.update(bytes);
    }

    fn finish(self: Box<Self>) -> Result<(), Error> {
        let counters = &self.ctx.counters;
        match self.check.finish() {
            Ok(()) => {
                Counters::add(&counters.checksums_verified, 1);
                Ok(())
            }
            Err(e) => {
                Counters::add(&counters.checksum_mismatches, 1);
                Counters::add(&counters.errors, 1);
                Err(e.with_key(&self.key).with_seq(self.seq))
            }
        }
    }
}

/// The ETag as text: moved, not copied, when it is UTF-8 (nearly always); else with U+FFFD
/// for the octets that are not.
fn etag_text(etag: Box<[u8]>) -> String {
    String::from_utf8(etag.into_vec())
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

impl Drop for Assembly {
    /// The last holder is gone — admission and every fetch of the object — so no part
    /// still missing will ever come. A streaming body already out reads that as an error
    /// instead of waiting forever.
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Kind::Streaming {
            queue, received, ..
        } = &st.kind
        {
            if *received < st.parts && st.delivery.is_none() {
                let e = Error::new(ErrorKind::Cancelled)
                    .with_message("the request was dropped before this part arrived")
                    .with_key(&self.key)
                    .with_seq(self.seq);
                queue.abandon(e);
            }
        }
    }
}

/// A whole object in parts to fetch again, every part into its lease (part `i` into
/// `leases[i]`), after its bytes did not match its checksum.
#[derive(Debug)]
pub(crate) struct Refetch {
    pub(crate) leases: Vec<Lease>,
}

/// What a part's end does once the assembly's lock is released.
#[derive(Default)]
struct Outcome {
    refetch: Option<Refetch>,
    deliver: Option<(Delivery, Result<Object, Error>)>,
    queue_put: Option<(Arc<PartQueue>, usize, Result<Lease, Error>)>,
    verdict: Option<(Arc<PartQueue>, Result<(), Error>)>,
    abort: Vec<(usize, AbortHandle)>,
    dropped: Vec<Lease>,
}

/// The kind and part count of an object of `size` bytes; a streaming one gets its queue, whose
/// close hook cancels the object's remaining parts.
fn plan_known(ctx: &Context, me: &Weak<Assembly>, size: u64) -> (Kind, usize) {
    let cfg = &ctx.config;
    let parts = plan::part_count(size, cfg.part_size);
    let kind = match plan::mode(size, cfg.stream_threshold) {
        // A one-part object keeps no list: its part is its body.
        Mode::Whole => Kind::Whole {
            leases: if parts > 1 {
                (0..parts).map(|_| None).collect()
            } else {
                Vec::new()
            },
            sums: if parts > 1 {
                vec![None; parts]
            } else {
                Vec::new()
            },
            received: 0,
        },
        Mode::Streaming => {
            let queue = PartQueue::new(parts);
            let me = Weak::clone(me);
            queue.on_close(Box::new(move || {
                if let Some(asm) = me.upgrade() {
                    asm.close();
                }
            }));
            Kind::Streaming {
                queue,
                sums: vec![None; parts],
                received: 0,
            }
        }
    };
    (kind, parts)
}

impl std::fmt::Debug for Assembly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assembly")
            .field("seq", &self.seq)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}
