//! What a worker runs once admission has given it what it needs: a part's fetch ([`PartJob`]:
//! memory, a slot and a connection unit taken) or the HEAD that learns an object's checksum
//! ([`ChecksumJob`]), each holding one of the request's connection rights ([`Right`]) to its
//! end. The result goes to the object's [`Assembly`]; a job whose object fails or is dropped is
//! aborted, and a panic becomes its object's error.

use std::sync::Arc;

use futures_util::future::{abortable, Aborted};
use futures_util::FutureExt;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use super::assembly::{Assembly, Refetch};
use crate::conn::Unit;
use crate::context::Context;
use crate::error::{Error, ErrorKind};
use crate::fetch::{fetch_part, learn_checksum, Connect, ObjectFetch, PartSpec, Rights, Start};
use crate::limiter::Slot;
use crate::memory::Lease;
use crate::s3::BucketTarget;
use crate::waitlist::Place;

/// One of a request's connection rights, held by a job for its whole run.
pub(super) struct Right {
    _permit: OwnedSemaphorePermit,
    /// The request's rights, for the job's extra requests at once (spare ones only).
    rights: Rights,
}

impl Right {
    /// Waits for a right; the workers are as many as the rights, so only a job's extra
    /// requests still out, or the HEADs of a batch, make this wait.
    pub(super) async fn acquire(rights: &Rights) -> Self {
        let permit = Arc::clone(rights)
            .acquire_owned()
            .await
            .unwrap_or_else(|_| unreachable!("a request's rights are never closed"));
        Right {
            _permit: permit,
            rights: Arc::clone(rights),
        }
    }
}

/// The object a job is for: where it is, its assembly, and the right of its request that the
/// job holds to its end.
pub(super) struct ForObject {
    pub(super) ctx: Arc<Context>,
    pub(super) target: Arc<BucketTarget>,
    pub(super) asm: Arc<Assembly>,
    pub(super) right: Right,
}

impl ForObject {
    /// The object as its requests name it.
    #[inline]
    fn fetching(&self) -> ObjectFetch<'_> {
        self.asm
            .fetching(&self.ctx, &self.target, &self.right.rights)
    }
}

/// What a worker does next: fetch an admitted part, or learn an object's checksum.
pub(super) enum Job {
    Part(PartJob),
    Checksum(ChecksumJob),
}

impl Job {
    /// Runs the job to its end; its result goes to its object.
    pub(super) async fn run(self) {
        match self {
            Job::Part(job) => job.run().await,
            Job::Checksum(job) => job.run().await,
        }
    }
}

/// The HEAD that learns the checksum of an object fetched in ranged parts (S3 states none on
/// a partial range). It needs no memory, only a slot and a connection: it is sent in a batch
/// while admission waits for the memory of an earlier object ([`Admission::wait_sending_heads`]),
/// or else as the object's first part is admitted, taking its slot and connection in the same
/// FIFO as the parts.
pub(super) struct ChecksumJob {
    pub(super) of: ForObject,
    pub(super) start: Start,
}

impl ChecksumJob {
    /// Learns the checksum into the object's pin, where its parts find it; a failure fails the
    /// object. Cancelled with the object, like its parts.
    async fn run(self) {
        let ChecksumJob { of, start } = self;
        let asm = &of.asm;
        let span = tracing::debug_span!(
            target: "s3_ordered::engine",
            "checksum",
            key = %asm.key,
            seq = asm.seq,
        );
        let learn = async { learn_checksum(&of.fetching(), start).await };
        let (learn, handle) = abortable(learn.instrument(span));
        asm.add_abort(0, handle);
        if let Ok(Err(e)) = learn.await {
            asm.failed(e);
        }
    }
}

/// One admitted part: its memory and its ticket (a slot under the limit, a connection unit).
pub(super) struct PartJob {
    pub(super) of: ForObject,
    pub(super) idx: usize,
    pub(super) spec: PartSpec,
    pub(super) lease: Lease,
    pub(super) ticket: (Slot, Unit),
}

impl PartJob {
    /// Fetches the part and hands its result to its object. A part whose object may cancel it
    /// (one of several parts, or a probe) is fetched abortably; a failure of a sibling or a
    /// dropped streaming body aborts it, and nothing is handed over. A panic (a bug) becomes
    /// the object's error, as the [`Delivery`] of an object never dropped unanswered does.
    async fn run(self) {
        let PartJob {
            of,
            idx,
            spec,
            lease,
            ticket,
        } = self;
        let asm = &of.asm;
        let span = part_span(asm, idx);
        let fetch = async {
            let on_size = |size| asm.learned_size(size);
            fetch_part(
                &of.fetching(),
                spec,
                lease,
                ticket,
                &on_size,
                Connect::Pooled,
            )
            .await
        };
        // Pinned here, so that the wrappers below hold a pointer to the fetch (a few KiB)
        // rather than moving it at each layer.
        let fetch = std::pin::pin!(fetch);
        let fetch = std::panic::AssertUnwindSafe(fetch.instrument(span)).catch_unwind();
        let result = if asm.cancellable() {
            let (fetch, handle) = abortable(fetch);
            asm.add_abort(idx, handle);
            match fetch.await {
                Ok(result) => result,
                Err(Aborted) => return,
            }
        } else {
            fetch.await
        };
        let result = result.unwrap_or_else(|_| {
            Err(Error::new(ErrorKind::Internal).with_message("the fetch of a part panicked"))
        });
        if let Some(refetch) = asm.part_done(idx, result) {
            refetch_parts(&of, refetch).await;
        }
    }
}

/// Fetches every part of a whole object again, one after the other, into the memory they had,
/// each on a new connection, after the object's bytes did not match its checksum. Rare
/// (corruption in transit), so one worker does it in order rather than admission in parallel.
/// The object then delivers, or fails with a second mismatch; it stops at a part that fails.
async fn refetch_parts(of: &ForObject, r: Refetch) {
    let asm = &of.asm;
    for (idx, lease) in r.leases.into_iter().enumerate() {
        if !asm.wants_more() {
            return;
        }
        let span = part_span(asm, idx);
        let ticket = of.ctx.ticket(Place::Front).await;
        let on_size = |size| asm.learned_size(size);
        let obj = of.fetching();
        let result = fetch_part(&obj, asm.spec(idx), lease, ticket, &on_size, Connect::New)
            .instrument(span)
            .await;
        // A second mismatch fails the object; it asks for nothing more.
        if asm.part_done(idx, result).is_some() {
            return;
        }
    }
}

/// The span of part `idx` of `asm`'s object, for its fetch and its refetch alike.
fn part_span(asm: &Assembly, idx: usize) -> tracing::Span {
    tracing::debug_span!(
        target: "s3_ordered::engine",
        "part",
        key = %asm.key,
        seq = asm.seq,
        part = idx,
    )
}
