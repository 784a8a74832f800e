//! Admission of one request: the input planned in order into parts, each part given its
//! memory, a right of the request, a slot under the concurrency limit and a connection unit —
//! in (object, part) order, one at a time — and the HEADs that learn checksums sent in batches
//! while a part waits for memory.
//!
//! Guarantees: memory is taken in (object, part) order, so the head of the line always moves;
//! an object enters only with a slot in the reorder window; past an object whose size is still
//! being learned, only one-part objects whose memory is free now are admitted, within the
//! budget less the streaming threshold, so that the probed object fits beside them whatever
//! its size; every admitted object gets exactly one result.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures_core::Stream;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::Semaphore;

use super::assembly::Assembly;
use super::delivery::{Delivery, Shared};
use super::job::{ChecksumJob, ForObject, Job, PartJob, Right};
use crate::context::Context;
use crate::error::Error;
use crate::fetch::{Rights, Start};
use crate::memory::Lease;
use crate::object::ObjectRef;
use crate::s3::BucketTarget;
use crate::waitlist::Place;

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
pub(super) async fn wait_for_memory(ctx: &Context, key: &str, len: u64) -> crate::memory::Lease {
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
            target: "s3_ordered::engine",
            key,
            needs = ctx.memory.slab_bytes(len),
            held_by_consumer = held,
            max_bytes = ctx.memory.budget(),
            "the next object waits for memory that bodies already handed out hold, with \
             nothing else in flight: it starts only when they are dropped (read or drop each \
             body before waiting for the next object, or raise max_bytes)"
        );
    }
    acquire.await
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
            target: "s3_ordered::engine",
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
pub(super) struct Admission {
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
    /// Admission of `objects` from `bucket`, whose results go to `shared`.
    pub(super) fn new(
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

    /// The request's most jobs at once: `max_connections_per_request`.
    pub(super) fn per_request(&self) -> usize {
        self.ctx.config.max_connections_per_request.max(1)
    }

    /// The next part to fetch, with its memory and ticket taken, in (object, part) order (or
    /// the HEAD of an object's checksum); `None` once every object is admitted or settled.
    ///
    /// # Cancel safety
    ///
    /// Cancelled only with the whole request: what it holds when dropped is dropped with it.
    pub(super) async fn next_job(&mut self) -> Option<Job> {
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
            if self.current.is_none() && self.resume_probed() {
                continue;
            }
            if self.current.is_some() {
                if let Some(job) = self.admit_current().await {
                    return Some(job);
                }
                continue;
            }
            if self.next.is_none() {
                if !self.plan_next().await {
                    return None;
                }
                continue;
            }
            if let Some(job) = self.admit_next().await {
                return Some(job);
            }
        }
    }

    /// Makes the oldest probe that has told its size `current`, so that its other parts come
    /// before anything later; false if no probe is resolved.
    fn resume_probed(&mut self) -> bool {
        if !self.probes.front().is_some_and(|(a, _)| a.is_resolved()) {
            return false;
        }
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
        true
    }

    /// The next job of `current`: its checksum's HEAD (a known-size object fetched in parts,
    /// with checksums on), or its next part if its memory is free now. `None` when the part
    /// waits for memory (then in `waiting`), or `current` is done.
    async fn admit_current(&mut self) -> Option<Job> {
        let cur = self.current.as_mut()?;
        let checksums = self.ctx.config.checksum_mode.is_on();
        // Its slot and connection are taken here, in order, as a part's are: no worker waits
        // for them holding nothing else to do.
        if cur.next == 0 && cur.limit > 1 && checksums && cur.asm.pin.claim_head() {
            if let Ok(target) = &self.target {
                let asm = Arc::clone(&cur.asm);
                let right = Right::acquire(&self.rights).await;
                let (slot, unit) = self.ctx.ticket(Place::Back).await;
                return Some(Job::Checksum(ChecksumJob {
                    of: self.for_object(target, asm, right),
                    start: Start::Ticket(slot, unit),
                }));
            }
        }
        if cur.next >= cur.limit || !cur.asm.wants_more() {
            self.current = None;
            return None;
        }
        let (asm, idx) = (Arc::clone(&cur.asm), cur.next);
        cur.next += 1;
        // Waited for in `next_job`, sending HEADs meanwhile.
        match self.ctx.memory.try_acquire(asm.spec(idx).len) {
            Some(lease) => self.admitted(&asm, idx, lease).await,
            None => {
                self.waiting = Some(self.memory_wait(asm, idx));
                None
            }
        }
    }

    /// Fills `next`: from the objects planned ahead, else from the input, once its object has
    /// a slot in the window. False when there is nothing left to admit: the input has ended
    /// and every probe has told its size.
    async fn plan_next(&mut self) -> bool {
        if let Some(obj) = self.ahead.pop_front() {
            self.next = Some(obj);
            return true;
        }
        if self.input_done {
            match self.probes.front() {
                Some((asm, _)) => Arc::clone(asm).size_known().await,
                None => return false,
            }
            return true;
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
        true
    }

    /// Admits `next`: in order, waiting for memory, when no probe is out; past a probe still
    /// out, only a one-part object whose memory is free now, within `room` — else it waits for
    /// the oldest probe to tell its size. `None` when no job came of it yet.
    async fn admit_next(&mut self) -> Option<Job> {
        let obj = self.next.take()?;
        let Some((oldest, mark)) = self.probes.front() else {
            if !obj.probing() {
                self.current = Some(obj);
                return None;
            }
            let job = self.admit(&obj.asm, 0, Wait::Queue).await;
            self.probes.push_back((obj.asm, self.admitted));
            return job;
        };
        // However large the probed object turns out, what was admitted after it leaves it the
        // memory it needs.
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
        None
    }

    /// What a job for `asm` holding `right` is for.
    fn for_object(
        &self,
        target: &Arc<BucketTarget>,
        asm: Arc<Assembly>,
        right: Right,
    ) -> ForObject {
        ForObject {
            ctx: Arc::clone(&self.ctx),
            target: Arc::clone(target),
            asm,
            right,
        }
    }

    /// Starts the wait for the memory of part `idx` of `asm`.
    fn memory_wait(&self, asm: Arc<Assembly>, idx: usize) -> MemoryWait {
        let ctx = &self.ctx;
        let len = asm.spec(idx).len;
        tracing::debug!(
            target: "s3_ordered::engine",
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
                    let of = self.for_object(target, asm, right);
                    return Some(Waited::Head(Job::Checksum(ChecksumJob { of, start })));
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
        let most_bytes = MAX_AHEAD_BUDGETS * memory.budget();
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
        memory
            .budget()
            .saturating_sub(memory.slab_bytes(self.ctx.config.stream_threshold))
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
        // Planned by the assembly: all its parts when the size is known, else the probe.
        let asm = Assembly::new(&self.ctx, obj, delivery);
        Some(Admitting {
            limit: asm.parts(),
            asm,
            next: 0,
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
            of: self.for_object(target, Arc::clone(asm), right),
            idx,
            spec,
            lease,
            ticket,
        });
        self.admitted += taken;
        Some(job)
    }
}

#[cfg(test)]
mod tests {
    //! Admission driven without sockets: its jobs, held or dropped by the test, checked against
    //! a model of the order it must keep. A job's ticket is a permit, not a connection, so
    //! nothing is sent.

    use std::future::Future;

    use futures_util::stream;

    use super::*;
    use crate::config::ChecksumMode;
    use crate::fetch::PartSpec;

    const SLAB: u64 = 64 << 10;
    const PART: u64 = 256 << 10;

    /// A job as the model names it: the object's position, and its part (`None`: its HEAD).
    type Named = (u64, Option<usize>);

    fn name(job: &Job) -> Named {
        match job {
            Job::Part(p) => (p.of.asm.seq, Some(p.idx)),
            Job::Checksum(c) => (c.of.asm.seq, None),
        }
    }

    fn spec(job: &Job) -> Option<PartSpec> {
        match job {
            Job::Part(p) => Some(p.spec),
            Job::Checksum(_) => None,
        }
    }

    /// A context of `slabs` 64 KiB slabs (and as many connections, at most 64), 256 KiB parts
    /// and `per_request` rights.
    fn context(slabs: u64, per_request: usize, checksums: bool) -> Arc<Context> {
        context_with(slabs, per_request, checksums, |b| b)
    }

    /// [`context`], with more of the builder set by `more`.
    fn context_with(
        slabs: u64,
        per_request: usize,
        checksums: bool,
        more: impl FnOnce(crate::ClientBuilder) -> crate::ClientBuilder,
    ) -> Arc<Context> {
        let mode = if checksums {
            ChecksumMode::WhenAvailable
        } else {
            ChecksumMode::Off
        };
        let builder = crate::Client::builder()
            .endpoint_url("http://127.0.0.1:9")
            .anonymous()
            .slab_size(SLAB as usize)
            .max_bytes(slabs * SLAB)
            .part_size(PART)
            .max_connections(slabs.min(64) as usize)
            .max_connections_per_request(per_request.min(slabs as usize))
            .checksum_mode(mode);
        let config = more(builder).validate().expect("a valid configuration");
        Context::new(config)
    }

    /// Admission of `objects` (a size each; `None`: unknown), with a window of `window`.
    fn admission(
        ctx: &Arc<Context>,
        sizes: &[Option<u64>],
        window: usize,
    ) -> (Admission, Arc<Shared>) {
        let shared = Arc::new(Shared::new(window));
        let objects: Vec<Result<ObjectRef, Error>> = sizes
            .iter()
            .enumerate()
            .map(|(i, size)| {
                let key = format!("k{i}");
                Ok(match size {
                    Some(size) => ObjectRef::new(key, *size),
                    None => ObjectRef::without_size(key),
                })
            })
            .collect();
        let adm = Admission::new(
            Arc::clone(ctx),
            "bucket".to_owned(),
            Arc::clone(&shared),
            Box::pin(stream::iter(objects)),
        );
        (adm, shared)
    }

    /// The model: every object in order; one fetched in parts (more than `PART` bytes) has
    /// its HEAD first with checksums on, then its parts `ceil(size / PART)`, each `PART` bytes
    /// from `idx * PART` (the last one shorter); an object up to `PART` is one GET, unranged.
    fn model(sizes: &[u64], checksums: bool) -> Vec<(Named, Option<PartSpec>)> {
        let mut out = Vec::new();
        for (seq, &size) in sizes.iter().enumerate() {
            let seq = seq as u64;
            if size <= PART {
                let spec = PartSpec {
                    start: 0,
                    len: size,
                    ranged: false,
                };
                out.push(((seq, Some(0)), Some(spec)));
                continue;
            }
            if checksums {
                out.push(((seq, None), None));
            }
            let mut start = 0;
            let mut idx = 0;
            while start < size {
                let len = PART.min(size - start);
                out.push((
                    (seq, Some(idx)),
                    Some(PartSpec {
                        start,
                        len,
                        ranged: true,
                    }),
                ));
                start += len;
                idx += 1;
            }
        }
        out
    }

    /// `fut`'s output if it comes within a few polls (yielding between them); `None` while it
    /// still waits. `fut` is polled in place, so a waiting one can be awaited later.
    async fn waits<F: Future + Unpin>(fut: &mut F) -> Option<F::Output> {
        for _ in 0..16 {
            if let Some(out) = (&mut *fut).now_or_never() {
                return Some(out);
            }
            tokio::task::yield_now().await;
        }
        None
    }

    #[tokio::test]
    async fn jobs_come_in_object_and_part_order_as_the_model_says() {
        let sizes = [100, 600 << 10, 0, PART, PART + 1, 5];
        for checksums in [false, true] {
            let ctx = context(256, 64, checksums);
            let input: Vec<_> = sizes.iter().copied().map(Some).collect();
            let (mut adm, _shared) = admission(&ctx, &input, 64);
            let mut jobs = Vec::new();
            while let Some(job) = adm.next_job().await {
                jobs.push(job);
            }
            let got: Vec<_> = jobs.iter().map(|j| (name(j), spec(j))).collect();
            assert_eq!(got, model(&sizes, checksums), "checksums {checksums}");
            // Each part holds its memory, in whole slabs.
            let slabs: u64 = got
                .iter()
                .filter_map(|(_, s)| s.map(|s| s.len.div_ceil(SLAB)))
                .sum();
            assert_eq!(ctx.memory.slabs_in_use() as u64, slabs);
        }
    }

    /// Four slabs and three objects of two slabs each: the first two admitted, which take the
    /// whole budget.
    async fn budget_taken() -> (Arc<Context>, Admission, Arc<Shared>, Job, Job) {
        let ctx = context(4, 8, false);
        let (mut adm, shared) = admission(&ctx, &[Some(2 * SLAB); 3], 8);
        let first = adm.next_job().await.expect("a job");
        let second = adm.next_job().await.expect("a job");
        assert_eq!((name(&first), name(&second)), ((0, Some(0)), (1, Some(0))));
        assert_eq!(ctx.memory.slabs_in_use(), 4);
        (ctx, adm, shared, first, second)
    }

    #[tokio::test]
    async fn a_part_waits_for_memory_until_an_earlier_one_returns_it() {
        let (ctx, mut adm, _shared, first, second) = budget_taken().await;
        let mut third = Box::pin(adm.next_job());
        assert!(
            waits(&mut third).await.is_none(),
            "admitted past the budget"
        );
        assert_eq!(ctx.memory.slabs_in_use(), 4);
        assert_eq!(
            ctx.counters
                .memory_waits
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        drop(first);
        let third = third.await.expect("a job");
        assert_eq!(name(&third), (2, Some(0)));
        assert_eq!(ctx.memory.slabs_in_use(), 4);
        drop((second, third));
        assert!(adm.next_job().await.is_none());
        assert_eq!(ctx.memory.slabs_in_use(), 0);
    }

    #[tokio::test]
    async fn past_a_probe_only_one_part_objects_with_free_memory_come_within_the_room() {
        // 16 slabs (1 MiB), streaming above 512 KiB: the room past a probe is 512 KiB.
        let ctx = context_with(16, 64, false, |b| b.stream_threshold(512 << 10));
        assert_eq!(adm_room(&ctx), 512 << 10);
        // An object of unknown size, then ten one-slab objects and a large one.
        let mut input = vec![None];
        input.extend([Some(SLAB); 10]);
        input.push(Some(3 * PART));
        let (mut adm, _shared) = admission(&ctx, &input, 64);
        let probe = adm.next_job().await.expect("the probe");
        assert_eq!(name(&probe), (0, Some(0)));
        assert_eq!(
            spec(&probe),
            Some(PartSpec {
                start: 0,
                len: PART,
                ranged: true
            })
        );
        // 512 KiB of one-slab objects past the probe: eight of them.
        let mut small = Vec::new();
        for seq in 1..=8 {
            let job = adm.next_job().await.expect("a small object");
            assert_eq!(name(&job), (seq, Some(0)));
            small.push(job);
        }
        let mut next = Box::pin(adm.next_job());
        assert!(
            waits(&mut next).await.is_none(),
            "past the room while the probe is out"
        );
        // The probe learns the size: its other parts come next, before anything later.
        let Job::Part(p) = &probe else {
            unreachable!("the probe is a part")
        };
        p.of.asm.learned_size(PART + SLAB);
        let rest = next.await.expect("the probed object's next part");
        assert_eq!(name(&rest), (0, Some(1)));
        drop((probe, rest, small));
        let mut later = Vec::new();
        while let Some(job) = adm.next_job().await {
            later.push(name(&job));
        }
        assert_eq!(
            later,
            [
                (9, Some(0)),
                (10, Some(0)),
                (11, Some(0)),
                (11, Some(1)),
                (11, Some(2))
            ]
        );
    }

    fn adm_room(ctx: &Arc<Context>) -> u64 {
        let (adm, _) = admission(ctx, &[], 1);
        adm.room
    }

    #[tokio::test]
    async fn an_object_enters_only_with_a_slot_in_the_window() {
        let ctx = context(64, 8, false);
        let (mut adm, shared) = admission(&ctx, &[Some(10); 4], 2);
        let first = adm.next_job().await.expect("a job");
        let second = adm.next_job().await.expect("a job");
        assert_eq!((name(&first), name(&second)), ((0, Some(0)), (1, Some(0))));
        let mut third = Box::pin(adm.next_job());
        assert!(
            waits(&mut third).await.is_none(),
            "admitted past the window"
        );
        // The first object ends (its job dropped: an error in its place); the consumer pops it.
        drop(first);
        let popped = shared.lock().ring.pop().expect("the first result");
        assert_eq!(
            popped.expect_err("no fetch ran").kind(),
            crate::ErrorKind::Internal
        );
        shared.window.notify_one();
        let third = third.await.expect("a job");
        assert_eq!(name(&third), (2, Some(0)));
        drop((second, third));
    }

    #[tokio::test]
    async fn heads_of_objects_ahead_go_out_in_a_batch_while_a_part_waits_for_memory() {
        // Eight slabs: the first object's first two parts take them all.
        let ctx = context(8, 8, true);
        let input = [
            Some(4 * PART),
            Some(2 * PART),
            Some(2 * PART),
            Some(10),
            Some(2 * PART),
        ];
        let (mut adm, _shared) = admission(&ctx, &input, 64);
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(adm.next_job().await.expect("a job"));
        }
        let named: Vec<_> = held.iter().map(name).collect();
        assert_eq!(named, [(0, None), (0, Some(0)), (0, Some(1))]);
        // Part 2 waits for memory: the HEADs of the objects planned ahead go meanwhile, all of
        // them, before any part; the one-part object needs none.
        for want in [(1, None), (2, None), (4, None)] {
            let mut head = Box::pin(adm.next_job());
            let job = waits(&mut head).await.flatten().expect("a HEAD, at once");
            assert_eq!(name(&job), want);
            held.push(job);
        }
        let mut next = Box::pin(adm.next_job());
        assert!(
            waits(&mut next).await.is_none(),
            "a part admitted past the budget"
        );
        // A part's memory returns: the waiting part comes.
        held.remove(1);
        let part = next.await.expect("a part");
        assert_eq!(name(&part), (0, Some(2)));
        // The HEADs took no memory: the budget holds the first object's parts alone.
        assert_eq!(ctx.memory.slabs_in_use(), 8);
        drop((held, part));
    }

    #[tokio::test]
    async fn dropping_admission_mid_wait_gives_everything_back() {
        let (ctx, mut adm, shared, first, second) = budget_taken().await;
        {
            let mut third = Box::pin(adm.next_job());
            assert!(waits(&mut third).await.is_none());
        }
        drop((adm, first, second));
        assert_eq!(ctx.memory.slabs_in_use(), 0);
        assert_eq!(ctx.limiter.in_flight(), 0);
        assert_eq!(
            ctx.counters
                .memory_waits
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
        // Every object planned has exactly one result: the third, waiting for memory, too.
        let mut st = shared.lock();
        for _ in 0..3 {
            assert!(st.ring.pop().is_some());
        }
        assert!(st.ring.pop().is_none());
    }
}
