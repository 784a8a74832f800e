//! The request driver and the ordered stream it feeds: the only place that knows all the pieces.
//!
//! Each `get_all` call spawns one driver task. For every input object, in order, it:
//!
//! 1. waits until `seq < next_out + window`, so the ring has a slot for it and the head of the
//!    line can always complete;
//! 2. reserves `ceil(size / slab)` slabs from the memory budget (FIFO across all requests);
//! 3. takes one of the request's `max_connections_per_request` permits, then a connection unit
//!    from the client's pool (FIFO across all requests);
//! 4. spawns the fetch, which puts its result — object or error — into the [`ReorderRing`].
//!
//! The consumer pops results at `next_out` and so sees them in input order, exactly one per
//! input. No step waits for something a later step holds: memory is taken in input order and a
//! connection only for one transfer, so requests sharing a client cannot deadlock.
//!
//! Dropping the [`ObjectStream`] aborts the driver, which owns every fetch task in a
//! [`JoinSet`]; their slabs, permits and connections are released as the tasks unwind, and
//! results not yet consumed are dropped with the ring. Other requests are not affected.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use futures_core::Stream;
use futures_util::StreamExt;
use tokio::sync::{Notify, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use crate::client::ClientInner;
use crate::error::{Error, ErrorKind};
use crate::fetch::fetch_object;
use crate::object::{IntoObjectRef, Object};
use crate::reorder::ReorderRing;
use crate::s3::BucketTarget;
use crate::stats::Counters;

type Item = Result<Object, Error>;

/// The largest reorder window; beyond it, tiny objects would only pile up results.
const MAX_WINDOW: usize = 1 << 16;

struct Shared {
    state: Mutex<State>,
    /// Signalled when the consumer pops, which may open the window for the driver.
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
struct Delivery {
    shared: Arc<Shared>,
    seq: u64,
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

    fn deliver(mut self, result: Item, counters: &Counters) {
        self.delivered = true;
        let item = result.map_err(|e| {
            Counters::add(&counters.errors, 1);
            self.attach(e)
        });
        self.put(item);
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
            debug_assert!(
                inserted.is_ok(),
                "driver admitted {}: {inserted:?}",
                self.seq
            );
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
    driver: JoinHandle<()>,
}

impl ObjectStream {
    pub(crate) fn start<S>(client: Arc<ClientInner>, bucket: String, objects: S) -> Self
    where
        S: Stream + Send + 'static,
        S::Item: IntoObjectRef,
    {
        let cfg = &client.config;
        let window = (client.memory.total_slabs() as usize)
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
        let driver = tokio::spawn(drive(client, bucket, objects, Arc::clone(&shared)));
        ObjectStream { shared, driver }
    }
}

impl Stream for ObjectStream {
    type Item = Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        let mut st = self.shared.lock();
        if let Some(item) = st.ring.pop() {
            drop(st);
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
        self.driver.abort();
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

async fn drive<S>(client: Arc<ClientInner>, bucket: String, objects: S, shared: Arc<Shared>)
where
    S: Stream + Send + 'static,
    S::Item: IntoObjectRef,
{
    let target = BucketTarget::new(&client.config, &bucket).map(Arc::new);
    let per_request = Arc::new(Semaphore::new(client.config.max_connections_per_request));
    let mut tasks = JoinSet::new();
    let mut objects = std::pin::pin!(objects);
    let mut seq = 0u64;

    while let Some(input) = objects.next().await {
        shared.wait_for_window(seq).await;
        let counters = &client.counters;
        let obj = match input.into_object_ref() {
            Ok(obj) => obj,
            Err(e) => {
                // An error from upstream (a listing, a HEAD) keeps its position.
                Delivery::new(&shared, seq, None).deliver(Err(e), counters);
                seq += 1;
                continue;
            }
        };
        let delivery = Delivery::new(&shared, seq, Some(obj.key.clone()));
        seq += 1;
        let target = match &target {
            Ok(t) => Arc::clone(t),
            Err(e) => {
                delivery.deliver(Err(e.detached()), counters);
                continue;
            }
        };
        let Some(slabs) = client.memory.slabs_for(obj.size) else {
            let e = Error::new(ErrorKind::TooLarge).with_message(format!(
                "{} bytes need more than the whole budget of {} bytes",
                obj.size, client.config.max_bytes
            ));
            delivery.deliver(Err(e), counters);
            continue;
        };
        let lease = client.memory.acquire(slabs, obj.size).await;
        let permit = Arc::clone(&per_request)
            .acquire_owned()
            .await
            .unwrap_or_else(|_| unreachable!("request semaphore is never closed"));
        let unit = client.conns.unit().await;
        let client = Arc::clone(&client);
        tasks.spawn(async move {
            let result = fetch_object(&client, &target, obj, delivery.seq, lease, unit).await;
            drop(permit);
            delivery.deliver(result, &client.counters);
        });
        // Reap finished tasks so the set stays as small as the in-flight count.
        while tasks.try_join_next().is_some() {}
    }
    shared.finish(seq);
    // Keep owning the fetches until they end, so dropping the stream still cancels them.
    while tasks.join_next().await.is_some() {}
}
