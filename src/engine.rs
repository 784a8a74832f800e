//! The request's workers and the ordered stream they feed: the only place that knows all the
//! pieces.
//!
//! Each `get_all` call runs up to `max_connections_per_request` worker tasks (`workers`),
//! started as they are needed. They share the request's admission (`admission`): the input,
//! planned in order into parts ([`plan`]: one plain GET up to `part_size`, ranged parts above
//! it, a probe of one part when the size is unknown). A worker takes the admission lock and
//! admits the next part in (object, part) order — for each object it first waits until `seq < next_out + window`, so
//! the ring has a slot for it — then lets go of the lock and fetches the part:
//!
//! 1. the part's slabs are reserved from the memory budget (FIFO across all requests);
//! 2. a slot under the client's adaptive concurrency limit and a connection unit from the
//!    client's pool are taken (both FIFO across all requests);
//! 3. the worker fetches the part (`job`); the result goes to the object's assembly
//!    (`assembly`), which delivers the object — whole when its last part is in, streaming when
//!    its first is — or its error into the reorder ring (`delivery`); then the worker comes
//!    back for the next part.
//!
//! So a part costs no task and no hand-over of its own: the task that finished a fetch admits
//! the next one, and the consumer is the only other task woken per object. The number of
//! workers is what bounds a request's fetches in flight.
//!
//! With checksums on, an object fetched in parts needs a HEAD for its checksum (S3 states none
//! on a partial range). It needs no memory: while a part waits for memory, admission plans the
//! objects after it (as many as the request has connections, within four budgets of bytes)
//! and, at a connection nobody queued for, sends the HEADs of all those that want one as a
//! batch, ahead of any part. An object whose HEAD no batch sent gets it as its first part is
//! admitted. A HEAD's error is its object's result alone, in its place.
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
//! Dropping the [`ObjectStream`] aborts every worker (they live in one `JoinSet`), and no worker
//! starts after it, not even from one mid-poll at that moment. Their slabs, slots and connections
//! are released as their futures are dropped, and results not yet consumed are dropped with the
//! ring. Other requests are not affected.
//!
//! The events and spans of admission and of the jobs carry the `tracing` target
//! `s3_ordered::engine`.

mod admission;
mod assembly;
mod delivery;
mod job;
mod plan;
mod workers;

use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use futures_core::Stream;
use futures_util::StreamExt;

use crate::context::Context;
use crate::object::IntoObjectRef;
use admission::Admission;
use delivery::{Item, Shared};
use workers::Workers;

/// The largest reorder window; beyond it, tiny objects would only pile up results.
const MAX_WINDOW: usize = 1 << 16;

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
    /// Starts fetching `objects` from `bucket`: the first worker begins admitting at once.
    pub(crate) fn start<S>(ctx: Arc<Context>, bucket: String, objects: S) -> Self
    where
        S: Stream + Send + 'static,
        S::Item: IntoObjectRef,
    {
        let cfg = &ctx.config;
        let window = (ctx.memory.total_slabs() as usize)
            .max(cfg.max_connections_per_request * 2)
            .min(MAX_WINDOW);
        let shared = Arc::new(Shared::new(window));
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
