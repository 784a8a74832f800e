//! The request's workers and the ordered stream they feed: the only place that knows all the
//! pieces.
//!
//! Each `get_all` call runs up to `max_connections_per_request` worker tasks ([`Workers`]),
//! started as they are needed. They share the request's [`Admission`]: the input, planned in
//! order into parts ([`plan`]: one plain GET up to `part_size`, ranged parts above it, a probe of
//! one part when the size is unknown). A worker takes the admission lock and admits the next part
//! in (object, part) order — for each object it first waits until `seq < next_out + window`, so
//! the ring has a slot for it — then lets go of the lock and fetches the part:
//!
//! 1. the part's slabs are reserved from the memory budget (FIFO across all requests);
//! 2. a slot under the client's adaptive concurrency limit and a connection unit from the
//!    client's pool are taken (both FIFO across all requests);
//! 3. the worker fetches the part; the result goes to the object's [`Assembly`], which delivers
//!    the object — whole when its last part is in, streaming when its first is — or its error
//!    into the [`ReorderRing`]; then the worker comes back for the next part.
//!
//! So a part costs no task and no hand-over of its own: the task that finished a fetch admits
//! the next one, and the consumer is the only other task woken per object. The number of
//! workers is what bounds a request's fetches in flight.
//!
//! With checksums on, an object fetched in parts needs a HEAD for its checksum (S3 states none
//! on a partial range). It needs no memory: while a part waits for memory, admission plans the
//! objects after it (as many as the request has connections, within four budgets of bytes)
//! and, at a connection nobody queued for, sends the HEADs of all those that want one as a
//! batch, ahead of any part (`Admission::wait_sending_heads`). An object whose HEAD no batch
//! sent gets it as its first part is admitted. A HEAD's error is its object's result alone, in
//! its place.
//!
//! The consumer pops results at `next_out` and so sees them in input order, exactly one per
//! input. The head of the line always moves: memory is taken in (object, part) order and a
//! connection only for one transfer. An object of unknown size is probed with its first part.
//! Until the probe's reply tells the size, admission goes on past it only with one-part objects
//! whose memory is free at once, and only up to the budget less the streaming threshold — so
//! whatever the size turns out to be, the object fits beside them — and then its other parts
//! come next. A streaming body's later parts wait for memory its reader returns, so a consumer
//! that stops reading stops the downloads once the budget is full. Requests sharing a client
//! cannot deadlock as long as their consumers read (or drop) each body before waiting for the
//! next object.
//!
//! Dropping the [`ObjectStream`] aborts every worker (they live in one [`JoinSet`]), and no worker
//! starts after it, not even from one mid-poll at that moment. Their slabs, slots and connections
//! are released as their futures are dropped, and results not yet consumed are dropped with the
//! ring. Other requests are not affected.

mod assembly;
mod plan;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};
use std::time::Instant;

use futures_core::Stream;
use futures_util::future::{abortable, Aborted};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::conn::Unit;
use crate::context::Context;
use crate::error::{Error, ErrorKind};
use crate::fetch::{fetch_part, learn_checksum, Connect, PartSpec, Rights, Start};
use crate::limiter::Slot;
use crate::memory::Lease;
use crate::object::{IntoObjectRef, Object, ObjectRef};
use crate::reorder::ReorderRing;
use crate::s3::BucketTarget;
use crate::stats::Counters;
use crate::waitlist::Place;
use assembly::{Assembly, Refetch};

type Item = Result<Object, Error>;

/// The largest reorder window; beyond it, tiny objects would only pile up results.
const MAX_WINDOW: usize = 1 << 16;

/// What the workers and the consumer of one request share.
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Signalled when the consumer pops, which may open the window for admission.
    window: Notify,
}

struct State {
    ring: ReorderRing<Item>,
    /// Number of inputs, once the input has ended.
    total: Option<u64>,
    consumer: Option<Waker>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn wait_for_window(&self, seq: u64) {
        // `notify_one` stores a permit when nobody waits, so a pop between the check and the
        // await is not lost.
        while !self.lock().ring.in_window(seq) {
            self.window.notified().await;
        }
    }

    /// Whether the object at `seq` has a slot in the ring now.
    fn in_window(&self, seq: u64) -> bool {
        self.lock().ring.in_window(seq)
    }

    fn finish(&self, total: u64) {
        let waker = {
            let mut st = self.lock();
            st.total = Some(total);
            st.consumer.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// Puts exactly one result at its position: the fetch's, or — if the task is dropped or
/// unwinds without one — an internal error, so the consumer never waits for a lost item.
/// Errors get the object's key (unless they carry one) and position, and are counted here.
pub(crate) struct Delivery {
    shared: Arc<Shared>,
    pub(crate) seq: u64,
    key: Option<String>,
    delivered: bool,
}

impl Delivery {
    fn new(shared: &Arc<Shared>, seq: u64, key: Option<String>) -> Self {
        Delivery {
            shared: Arc::clone(shared),
            seq,
            key,
            delivered: false,
        }
    }

    pub(crate) fn deliver(mut self, result: Item, counters: &Counters) {
        self.delivered = true;
        let item = result.map_err(|e| {
            Counters::add(&counters.errors, 1);
            self.attach(e)
        });
        self.put(item);
    }

    /// Hands over the object's key for a delivered object, so it is not copied again.
    pub(crate) fn take_key(&mut self) -> Option<String> {
        self.key.take()
    }

    fn attach(&self, e: Error) -> Error {
        let e = match (&self.key, e.key()) {
            (Some(key), None) => e.with_key(key),
            _ => e,
        };
        e.with_seq(self.seq)
    }

    fn put(&self, item: Item) {
        let waker = {
            let mut st = self.shared.lock();
            let inserted = st.ring.insert(self.seq, item);
            debug_assert!(inserted.is_ok(), "admitted {}: {inserted:?}", self.seq);
            if st.ring.head_ready() {
                st.consumer.take()
            } else {
                None
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if !self.delivered {
            let err = Error::new(ErrorKind::Internal)
                .with_message("the fetch task ended without a result");
            self.put(Err(self.attach(err)));
        }
    }
}

/// The ordered results of one [`Client::get_all`](crate::Client::get_all) call: one item per
/// input object, in input order, errors included.
///
/// Dropping it cancels every GET of this call still in flight and returns their memory and
/// connections; other calls on the same client go on.
#[must_use = "streams do nothing unless polled; dropping this one cancels the request"]
pub struct ObjectStream {
    shared: Arc<Shared>,
    workers: Arc<Workers>,
}

impl ObjectStream {
    pub(crate) fn start<S>(ctx: Arc<Context>, bucket: String, objects: S) -> Self
    where
        S: Stream + Send + 'static,
        S::Item: IntoObjectRef,
    {
        let cfg = &ctx.config;
        let window = (ctx.memory.total_slabs() as usize)
            .max(cfg.max_connections_per_request * 2)
            .min(MAX_WINDOW);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                ring: ReorderRing::with_capacity(window),
                total: None,
                consumer: None,
            }),
            window: Notify::new(),
        });
        let span = tracing::debug_span!("get_all", %bucket);
        let objects = objects.map(IntoObjectRef::into_object_ref);
        let admission = Admission::new(ctx, bucket, Arc::clone(&shared), Box::pin(objects));
        let workers = Workers::start(admission, span);
        ObjectStream { shared, workers }
    }
}

impl Stream for ObjectStream {
    type Item = Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Option<Item>> {
        let mut st = self.shared.lock();
        if let Some(mut item) = st.ring.pop() {
            drop(st);
            if let Ok(obj) = &mut item {
                obj.body.mark_delivered();
            }
            self.shared.window.notify_one();
            return Poll::Ready(Some(item));
        }
        if st.total == Some(st.ring.next_out()) {
            return Poll::Ready(None);
        }
        match &mut st.consumer {
            Some(w) => w.clone_from(cx.waker()),
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Drop for ObjectStream {
    fn drop(&mut self) {
        self.workers.abort();
    }
}

impl std::fmt::Debug for ObjectStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.shared.lock();
        f.debug_struct("ObjectStream")
            .field("next", &st.ring.next_out())
            .field("ready", &st.ring.len())
            .field("total", &st.total)
            .finish()
    }
}

/// How long a part waits for memory before a WARN event says that the consumer holds it.
const HELD_MEMORY_WARNING: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits for the memory of a part of `key` of `len` bytes, counted in
/// [`Stats::parts_waiting_for_memory`](crate::Stats::parts_waiting_for_memory). After
/// [`HELD_MEMORY_WARNING`] with nothing in flight and memory held by bodies already handed
/// out, only the consumer can free what it needs: a WARN event says so, once.
///
/// # Cancel safety
///
/// Cancel safe, as [`MemoryPool::acquire`](crate::memory::MemoryPool::acquire).
async fn wait_for_memory(ctx: &Context, key: &str, len: u64) -> crate::memory::Lease {
    struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);
    impl Drop for Waiting<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let gauge = &ctx.counters.memory_waits;
    gauge.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let _waiting = Waiting(gauge);
    let acquire = ctx.memory.acquire(len);
    let mut acquire = std::pin::pin!(acquire);
    if let Ok(lease) = tokio::time::timeout(HELD_MEMORY_WARNING, acquire.as_mut()).await {
        return lease;
    }
    let slab = ctx.memory.slab_size() as u64;
    let held = ctx.memory.held_by_consumer() as u64 * slab;
    if ctx.limiter.in_flight() == 0 && held > 0 {
        tracing::warn!(
            key,
            needs = ctx.memory.slab_bytes(len),
            held_by_consumer = held,
            max_bytes = u64::from(ctx.memory.total_slabs()) * slab,
            "the next object waits for memory that bodies already handed out hold, with \
             nothing else in flight: it starts only when they are dropped (read or drop each \
             body before waiting for the next object, or raise max_bytes)"
        );
    }
    acquire.await
}

/// The worker tasks of one request, at most `max_connections_per_request` of them. Each takes
/// the admission lock, admits the next part in order (memory, then a slot and a connection
/// unit), lets go of the lock and fetches the part — then comes back for another. The task that
/// finishes a fetch is the one that admits the next, so a part costs no task of its own and no
/// hand-over to a driver.
struct Workers {
    admission: tokio::sync::Mutex<Admission>,
    /// Workers waiting for the admission lock or holding it.
    admitting: AtomicUsize,
    /// Workers started.
    started: AtomicUsize,
    max: usize,
    span: tracing::Span,
    /// Every worker, so that dropping the stream cancels them all; `None` once it has. A worker
    /// mid-poll when the stream is dropped may still try to start another: under this lock it
    /// finds `None` and starts none, so no worker outlives the stream.
    tasks: Mutex<Option<JoinSet<()>>>,
}

impl Workers {
    fn start(admission: Admission, span: tracing::Span) -> Arc<Self> {
        let workers = Arc::new(Workers {
            max: admission.ctx.config.max_connections_per_request.max(1),
            admission: tokio::sync::Mutex::new(admission),
            admitting: AtomicUsize::new(0),
            started: AtomicUsize::new(0),
            span,
            tasks: Mutex::new(Some(JoinSet::new())),
        });
        workers.spawn();
        workers
    }

    /// Starts one more worker, unless there are as many as allowed or the stream was dropped.
    fn spawn(self: &Arc<Self>) {
        if self.started.fetch_add(1, Ordering::Relaxed) >= self.max {
            self.started.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        // Counted as admitting from now, so that two workers do not both start a third.
        self.admitting.fetch_add(1, Ordering::AcqRel);
        let me = Arc::clone(self);
        let span = self.span.clone();
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tasks) = tasks.as_mut() {
            tasks.spawn(Box::pin(me.run().instrument(span)));
        }
    }

    /// One worker: admit a part, fetch it, again, until every object is admitted.
    async fn run(self: Arc<Self>) {
        loop {
            let job = {
                let mut admission = self.admission.lock().await;
                let job = admission.next_job().await;
                self.admitting.fetch_sub(1, Ordering::AcqRel);
                job
            };
            let Some(job) = job else { return };
            // Nobody else is admitting: start a worker to admit the next part meanwhile.
            if self.admitting.load(Ordering::Acquire) == 0 {
                self.spawn();
            }
            job.run().await;
            self.admitting.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Cancels every worker, and any start of one from now on.
    fn abort(&self) {
        let tasks = self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        // Dropped outside the lock; dropping a `JoinSet` aborts its tasks.
        drop(tasks);
    }
}

/// One of a request's connection rights, held by a job for its whole run.
struct Right {
    _permit: OwnedSemaphorePermit,
    /// The request's rights, for the job's extra requests at once (spare ones only).
    rights: Rights,
}

impl Right {
    /// Waits for a right; the workers are as many as the rights, so only a job's extra
    /// requests still out, or the HEADs of a batch, make this wait.
    async fn acquire(rights: &Rights) -> Self {
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

/// What a worker does next: fetch an admitted part, or learn an object's checksum.
enum Job {
    Part(PartJob),
    Checksum(ChecksumJob),
}

impl Job {
    async fn run(self) {
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
struct ChecksumJob {
    ctx: Arc<Context>,
    target: Arc<BucketTarget>,
    asm: Arc<Assembly>,
    start: Start,
    right: Right,
}

impl ChecksumJob {
    /// Learns the checksum into the object's pin, where its parts find it; a failure fails the
    /// object. Cancelled with the object, like its parts.
    async fn run(self) {
        let ChecksumJob {
            ctx,
            target,
            asm,
            start,
            right,
        } = self;
        let span = tracing::debug_span!("checksum", key = %asm.key, seq = asm.seq);
        let learn = async {
            let obj = asm.fetching(&ctx, &target, &right.rights);
            learn_checksum(&obj, start).await
        };
        let (learn, handle) = abortable(learn.instrument(span));
        asm.add_abort(0, handle);
        if let Ok(Err(e)) = learn.await {
            asm.failed(e);
        }
    }
}

/// One admitted part: its memory and its ticket (a slot under the limit, a connection unit).
struct PartJob {
    ctx: Arc<Context>,
    target: Arc<BucketTarget>,
    asm: Arc<Assembly>,
    idx: usize,
    spec: PartSpec,
    lease: Lease,
    ticket: (Slot, Unit),
    right: Right,
}

impl PartJob {
    /// Fetches the part and hands its result to its object. A part whose object may cancel it
    /// (one of several parts, or a probe) is fetched abortably; a failure of a sibling or a
    /// dropped streaming body aborts it, and nothing is handed over. A panic (a bug) becomes
    /// the object's error, as the [`Delivery`] of an object never dropped unanswered does.
    async fn run(self) {
        let PartJob {
            ctx,
            target,
            asm,
            idx,
            spec,
            lease,
            ticket,
            right,
        } = self;
        let span = tracing::debug_span!("part", key = %asm.key, seq = asm.seq, part = idx);
        let fetch = async {
            let on_size = |size| asm.learned_size(size);
            let obj = asm.fetching(&ctx, &target, &right.rights);
            fetch_part(&obj, spec, lease, ticket, &on_size, Connect::Pooled).await
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
            refetch_parts(&ctx, &target, &asm, refetch, &right.rights).await;
        }
    }
}

/// Fetches every part of a whole object again, one after the other, into the memory they had,
/// each on a new connection, after the object's bytes did not match its checksum. Rare
/// (corruption in transit), so one worker does it in order rather than admission in parallel.
/// The object then delivers, or fails with a second mismatch; it stops at a part that fails.
async fn refetch_parts(
    ctx: &Context,
    target: &BucketTarget,
    asm: &Arc<Assembly>,
    r: Refetch,
    rights: &Rights,
) {
    for (idx, lease) in r.leases.into_iter().enumerate() {
        if !asm.wants_more() {
            return;
        }
        let span = tracing::debug_span!("part", key = %asm.key, seq = asm.seq, part = idx);
        let ticket = ctx.ticket(Place::Front).await;
        let on_size = |size| asm.learned_size(size);
        let obj = asm.fetching(ctx, target, rights);
        let result = fetch_part(&obj, asm.spec(idx), lease, ticket, &on_size, Connect::New)
            .instrument(span)
            .await;
        // A second mismatch fails the object; it asks for nothing more.
        if asm.part_done(idx, result).is_some() {
            return;
        }
    }
}

/// An object whose parts are being admitted, and the next part to admit.
struct Admitting {
    asm: Arc<Assembly>,
    next: usize,
    /// Parts to admit: all of a known-size object, only the probe of an object of unknown size.
    limit: usize,
}

impl Admitting {
    /// Its size is to be learned from its first part.
    fn probing(&self) -> bool {
        !self.asm.is_resolved()
    }
}

/// A part of the object being admitted that waits for its memory, and the wait itself: kept
/// across calls of [`Admission::next_job`], so that a HEAD sent meanwhile does not cost the
/// part its place in the memory queue.
struct MemoryWait {
    asm: Arc<Assembly>,
    idx: usize,
    lease: Pin<Box<dyn Future<Output = Lease> + Send>>,
    since: Instant,
}

impl MemoryWait {
    /// Says how long the part waited.
    fn granted(&self) {
        tracing::debug!(
            waited_ms = self.since.elapsed().as_millis() as u64,
            "memory granted"
        );
    }
}

/// What admission found while a part waited for memory.
enum Waited {
    /// The part's memory, granted.
    Memory(MemoryWait, Lease),
    /// The HEAD of an object planned ahead, to send.
    Head(Job),
}

/// The most objects planned ahead of admission while it waits for memory.
const MAX_AHEAD: usize = 64;

/// The most bytes of objects planned ahead, in budgets (`max_bytes`): an object's plan holds a
/// few words per part, so this keeps the plans ahead proportional to the budget however large
/// the objects (one object is planned whatever its size).
const MAX_AHEAD_BUDGETS: u64 = 4;

/// Whether an admission may wait for memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// Queue for memory (FIFO) until it is free.
    Queue,
    /// Take memory only if it is free now; admit nothing otherwise.
    NoQueue,
}

/// The admission state of one request: the input, the objects being admitted, and the probes
/// out. Workers take it in turn ([`Workers`]), so parts are admitted one at a time in
/// (object, part) order.
struct Admission {
    ctx: Arc<Context>,
    target: Result<Arc<BucketTarget>, Error>,
    shared: Arc<Shared>,
    objects: Pin<Box<dyn Stream<Item = Result<ObjectRef, Error>> + Send>>,
    seq: u64,
    input_done: bool,
    /// The object whose parts are being admitted (in order, waiting for memory).
    current: Option<Admitting>,
    /// The next object, planned but not admitted yet.
    next: Option<Admitting>,
    /// Objects planned after `next`, in order, while admission waited for memory (see
    /// [`Admission::plan_ahead`]).
    ahead: VecDeque<Admitting>,
    /// The part of `current` that waits for memory, if one does.
    waiting: Option<MemoryWait>,
    /// Whether a batch of HEADs for the objects in `ahead` is being sent.
    batch: bool,
    /// Objects of unknown size whose probe is out, oldest first, each with the bytes admitted
    /// up to and including its probe.
    probes: VecDeque<(Arc<Assembly>, u64)>,
    /// Bytes admitted so far.
    admitted: u64,
    /// How far admission may run ahead of a probe still out; see [`Admission::lookahead_room`].
    room: u64,
    /// The request's connection rights: one for each job admitted, until it ends.
    rights: Rights,
}

impl Admission {
    fn new(
        ctx: Arc<Context>,
        bucket: String,
        shared: Arc<Shared>,
        objects: Pin<Box<dyn Stream<Item = Result<ObjectRef, Error>> + Send>>,
    ) -> Self {
        let per_request = ctx.config.max_connections_per_request.max(1);
        let mut adm = Admission {
            target: ctx.target(&bucket),
            ctx,
            shared,
            objects,
            seq: 0,
            input_done: false,
            current: None,
            next: None,
            ahead: VecDeque::new(),
            waiting: None,
            batch: false,
            probes: VecDeque::new(),
            admitted: 0,
            room: 0,
            rights: Arc::new(Semaphore::new(per_request)),
        };
        adm.room = adm.lookahead_room();
        adm
    }

    /// The next part to fetch, with its memory and ticket taken, in (object, part) order;
    /// `None` once every object is admitted or settled.
    ///
    /// # Cancel safety
    ///
    /// Cancelled only with the whole request: what it holds when dropped is dropped with it.
    async fn next_job(&mut self) -> Option<Job> {
        loop {
            if self.waiting.is_some() {
                match self.wait_sending_heads().await? {
                    Waited::Head(job) => return Some(job),
                    Waited::Memory(w, lease) => {
                        w.granted();
                        if let Some(job) = self.admitted(&w.asm, w.idx, lease).await {
                            return Some(job);
                        }
                        continue;
                    }
                }
            }
            // A probe that has told its size: its other parts come before anything later.
            if self.current.is_none() && self.probes.front().is_some_and(|(a, _)| a.is_resolved()) {
                if let Some((asm, _)) = self.probes.pop_front() {
                    let parts = asm.parts();
                    if parts > 1 && asm.wants_more() {
                        self.current = Some(Admitting {
                            asm,
                            next: 1,
                            limit: parts,
                        });
                    }
                }
                continue;
            }
            if let Some(cur) = &mut self.current {
                // An object of known size fetched in parts: its checksum's HEAD goes first.
                let checksums = self.ctx.config.checksum_mode.is_on();
                // Its slot and connection are taken here, in order, as a part's are: no worker
                // waits for them holding nothing else to do.
                if cur.next == 0 && cur.limit > 1 && checksums && cur.asm.pin.claim_head() {
                    if let Ok(target) = &self.target {
                        let (ctx, target, asm) = (
                            Arc::clone(&self.ctx),
                            Arc::clone(target),
                            Arc::clone(&cur.asm),
                        );
                        let right = Right::acquire(&self.rights).await;
                        let (slot, unit) = ctx.ticket(Place::Back).await;
                        return Some(Job::Checksum(ChecksumJob {
                            ctx,
                            target,
                            asm,
                            start: Start::Ticket(slot, unit),
                            right,
                        }));
                    }
                }
                if cur.next < cur.limit && cur.asm.wants_more() {
                    let (asm, idx) = (Arc::clone(&cur.asm), cur.next);
                    cur.next += 1;
                    // Waited for at the top of the loop, sending HEADs meanwhile.
                    let len = asm.spec(idx).len;
                    match self.ctx.memory.try_acquire(len) {
                        Some(lease) => {
                            if let Some(job) = self.admitted(&asm, idx, lease).await {
                                return Some(job);
                            }
                        }
                        None => self.waiting = Some(self.memory_wait(asm, idx)),
                    }
                } else {
                    self.current = None;
                }
                continue;
            }
            if self.next.is_none() {
                if let Some(obj) = self.ahead.pop_front() {
                    self.next = Some(obj);
                    continue;
                }
                if self.input_done {
                    match self.probes.front() {
                        Some((asm, _)) => Arc::clone(asm).size_known().await,
                        None => return None,
                    }
                    continue;
                }
                match self.objects.next().await {
                    Some(input) => {
                        self.shared.wait_for_window(self.seq).await;
                        self.next = self.start_object(self.seq, input);
                        self.seq += 1;
                    }
                    None => {
                        self.input_done = true;
                        self.shared.finish(self.seq);
                    }
                }
                continue;
            }
            let Some(obj) = self.next.take() else {
                continue;
            };
            let Some((oldest, mark)) = self.probes.front() else {
                // Nothing unresolved ahead: admit in order, waiting for memory as needed.
                if obj.probing() {
                    if let Some(job) = self.admit(&obj.asm, 0, Wait::Queue).await {
                        self.probes.push_back((obj.asm, self.admitted));
                        return Some(job);
                    }
                    self.probes.push_back((obj.asm, self.admitted));
                } else {
                    self.current = Some(obj);
                }
                continue;
            };
            // Past a probe still out, admit only one-part objects whose memory is free now,
            // within `room`: then however large the probed object turns out, what was admitted
            // after it leaves it the memory it needs.
            let (oldest, mark) = (Arc::clone(oldest), *mark);
            let len = self.ctx.memory.slab_bytes(obj.asm.spec(0).len);
            if obj.limit == 1 && self.admitted - mark + len <= self.room {
                if let Some(job) = self.admit(&obj.asm, 0, Wait::NoQueue).await {
                    if obj.probing() {
                        self.probes.push_back((obj.asm, self.admitted));
                    }
                    return Some(job);
                }
            }
            self.next = Some(obj);
            oldest.size_known().await;
        }
    }

    /// Starts the wait for the memory of part `idx` of `asm`.
    fn memory_wait(&self, asm: Arc<Assembly>, idx: usize) -> MemoryWait {
        let ctx = &self.ctx;
        let len = asm.spec(idx).len;
        tracing::debug!(
            key = %asm.key,
            part = idx,
            bytes = len,
            in_use = ctx.memory.slabs_in_use() as u64 * ctx.memory.slab_size() as u64,
            "waiting for memory"
        );
        let (ctx, key) = (Arc::clone(ctx), asm.key.clone());
        MemoryWait {
            asm,
            idx,
            lease: Box::pin(async move { wait_for_memory(&ctx, &key, len).await }),
            since: Instant::now(),
        }
    }

    /// Waits for the memory of the part in `waiting`, and meanwhile sends the HEADs that learn
    /// the checksums of the objects planned ahead that are fetched in parts, a batch at a time.
    /// A batch opens at a connection nobody queued for (the request's oldest object has parts
    /// still coming in and the next waits for its memory), once at least half of
    /// [`Admission::most_ahead`] objects want a HEAD, or all there are to plan now do; it then
    /// sends all their HEADs, ahead of any part, and closes. Each HEAD on a connection a part
    /// would have taken delays that part, and with it the release of its object's memory:
    /// batched, they cost that delay once per batch rather than once per object. Returns the
    /// part's memory or a HEAD to send; `None` if nothing waits.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the wait stays in `waiting`.
    async fn wait_sending_heads(&mut self) -> Option<Waited> {
        loop {
            // Only between batches, so that a long input gets its HEADs a batch at a time, not
            // one per object as each is planned.
            let cut_short = !self.batch && self.plan_ahead();
            let (first, count) = self.heads_ahead();
            let first = first.map(Arc::clone);
            let opens = cut_short || 2 * count >= self.most_ahead();
            let w = self.waiting.as_mut()?;
            let (ctx, rights) = (&self.ctx, &self.rights);
            let (right, start) = match first {
                Some(_) if self.batch => (Right::acquire(rights).await, Start::Queue(Place::Back)),
                Some(_) if opens => {
                    // A connection nobody queued for: at the back of the queue.
                    let free = async {
                        let right = Right::acquire(rights).await;
                        let (slot, unit) = ctx.ticket(Place::Back).await;
                        (right, Start::Ticket(slot, unit))
                    };
                    tokio::select! {
                        biased;
                        lease = w.lease.as_mut() => {
                            return self.waiting.take().map(|w| Waited::Memory(w, lease));
                        }
                        free = free => free,
                    }
                }
                _ => {
                    self.batch = false;
                    let lease = w.lease.as_mut().await;
                    return self.waiting.take().map(|w| Waited::Memory(w, lease));
                }
            };
            self.batch = true;
            // Claimed by nobody else: only admission claims the HEAD of an object not admitted.
            if let (Some(asm), Ok(target)) = (first, &self.target) {
                if asm.pin.claim_head() {
                    return Some(Waited::Head(Job::Checksum(ChecksumJob {
                        ctx: Arc::clone(&self.ctx),
                        target: Arc::clone(target),
                        asm,
                        start,
                        right,
                    })));
                }
            }
        }
    }

    /// The first object planned after `current` that is fetched in parts and whose checksum's
    /// HEAD is not claimed yet, and how many such objects there are; none with checksums off.
    fn heads_ahead(&self) -> (Option<&Arc<Assembly>>, usize) {
        if !self.ctx.config.checksum_mode.is_on() {
            return (None, 0);
        }
        let mut wanting = self
            .next
            .iter()
            .chain(&self.ahead)
            .filter(|o| o.limit > 1 && !o.asm.pin.head_claimed() && o.asm.wants_more())
            .map(|o| &o.asm);
        let first = wanting.next();
        (first, first.map_or(0, |_| 1 + wanting.count()))
    }

    /// The most objects planned ahead: the request's connections, each of which may carry one
    /// of their HEADs.
    fn most_ahead(&self) -> usize {
        self.ctx
            .config
            .max_connections_per_request
            .clamp(1, MAX_AHEAD)
    }

    /// Plans the objects after `next` that are ready in the input now and have a slot in the
    /// ring, waiting for neither, up to [`Admission::most_ahead`] objects and
    /// [`MAX_AHEAD_BUDGETS`] budgets of bytes. Only with checksums on, for
    /// [`Admission::wait_sending_heads`] to send their HEADs. True if it stopped short of the
    /// count: the input ended, is not ready, the ring is full or the bytes are reached.
    fn plan_ahead(&mut self) -> bool {
        if !self.ctx.config.checksum_mode.is_on() || self.target.is_err() {
            return false;
        }
        let most = self.most_ahead();
        let memory = &self.ctx.memory;
        let most_bytes =
            MAX_AHEAD_BUDGETS * u64::from(memory.total_slabs()) * memory.slab_size() as u64;
        let mut planned: u64 = self
            .ahead
            .iter()
            .map(|o| o.asm.pin.size().unwrap_or(0))
            .sum();
        while self.ahead.len() < most {
            if self.input_done || !self.shared.in_window(self.seq) || planned >= most_bytes {
                return true;
            }
            let Some(input) = self.objects.next().now_or_never() else {
                return true;
            };
            let Some(input) = input else {
                self.input_done = true;
                self.shared.finish(self.seq);
                return true;
            };
            if let Some(obj) = self.start_object(self.seq, input) {
                planned = planned.saturating_add(obj.asm.pin.size().unwrap_or(0));
                self.ahead.push_back(obj);
            }
            self.seq += 1;
        }
        false
    }

    /// How far admission may run ahead of an object whose size is still being learned: the
    /// budget less the most such an object can hold whole (the streaming threshold), so that it
    /// fits beside everything admitted after it.
    fn lookahead_room(&self) -> u64 {
        let memory = &self.ctx.memory;
        let budget = memory.total_slabs() as u64 * memory.slab_size() as u64;
        budget.saturating_sub(memory.slab_bytes(self.ctx.config.stream_threshold))
    }

    /// Plans the object at `seq`; `None` when it was settled at once (an input error, a bad
    /// bucket).
    fn start_object(&self, seq: u64, input: Result<ObjectRef, Error>) -> Option<Admitting> {
        let counters = &self.ctx.counters;
        let obj = match input {
            Ok(obj) => obj,
            Err(e) => {
                // An error from upstream (a listing, a HEAD) keeps its position.
                Delivery::new(&self.shared, seq, None).deliver(Err(e), counters);
                return None;
            }
        };
        let delivery = Delivery::new(&self.shared, seq, Some(obj.key.clone()));
        if let Err(e) = &self.target {
            delivery.deliver(Err(e.detached()), counters);
            return None;
        }
        let limit = match obj.size {
            Some(size) => plan::part_count(size, self.ctx.config.part_size),
            None => 1,
        };
        let asm = Assembly::new(&self.ctx, obj, delivery);
        Some(Admitting {
            asm,
            next: 0,
            limit,
        })
    }

    /// Takes memory, then a limiter slot and a connection unit, for part `idx` of `asm`;
    /// returns the job, or `None` when nothing was admitted: a bad bucket (settled in
    /// `start_object`), or `wait` is [`Wait::NoQueue`] and the memory was not free.
    async fn admit(&mut self, asm: &Arc<Assembly>, idx: usize, wait: Wait) -> Option<Job> {
        if self.target.is_err() {
            return None;
        }
        let spec = asm.spec(idx);
        let ctx = &self.ctx;
        let lease = match (wait, ctx.memory.try_acquire(spec.len)) {
            (_, Some(lease)) => lease,
            (Wait::NoQueue, None) => return None,
            (Wait::Queue, None) => {
                let mut w = self.memory_wait(Arc::clone(asm), idx);
                let lease = w.lease.as_mut().await;
                w.granted();
                lease
            }
        };
        self.admitted(asm, idx, lease).await
    }

    /// With its memory taken, takes a right, a limiter slot and a connection unit for part
    /// `idx` of `asm`, and counts its memory in `admitted`; returns the job (`None` for a bad
    /// bucket).
    async fn admitted(&mut self, asm: &Arc<Assembly>, idx: usize, lease: Lease) -> Option<Job> {
        let Ok(target) = &self.target else {
            return None;
        };
        let spec = asm.spec(idx);
        let ctx = &self.ctx;
        let taken = ctx.memory.slab_bytes(spec.len);
        let right = Right::acquire(&self.rights).await;
        let ticket = ctx.ticket(Place::Back).await;
        let job = Job::Part(PartJob {
            ctx: Arc::clone(ctx),
            target: Arc::clone(target),
            asm: Arc::clone(asm),
            idx,
            spec,
            lease,
            ticket,
            right,
        });
        self.admitted += taken;
        Some(job)
    }
}
