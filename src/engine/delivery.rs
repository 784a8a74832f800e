//! What the workers and the consumer of one request share: the reorder ring of results and the
//! window it gives admission, and the [`Delivery`] that puts exactly one result — the fetch's,
//! or an internal error if its task ends without one — at each object's position.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Waker;

use tokio::sync::Notify;

use crate::error::{Error, ErrorKind};
use crate::object::Object;
use crate::reorder::ReorderRing;
use crate::stats::Counters;

/// One result of the stream.
pub(super) type Item = Result<Object, Error>;

/// What the workers and the consumer of one request share.
pub(super) struct Shared {
    state: Mutex<State>,
    /// Signalled when the consumer pops, which may open the window for admission.
    pub(super) window: Notify,
}

pub(super) struct State {
    pub(super) ring: ReorderRing<Item>,
    /// Number of inputs, once the input has ended.
    pub(super) total: Option<u64>,
    /// The consumer, waiting for the result at the ring's head.
    pub(super) consumer: Option<Waker>,
}

impl Shared {
    /// The shared state of a request whose ring holds `window` results.
    pub(super) fn new(window: usize) -> Self {
        Shared {
            state: Mutex::new(State {
                ring: ReorderRing::with_capacity(window),
                total: None,
                consumer: None,
            }),
            window: Notify::new(),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until the object at `seq` has a slot in the ring.
    pub(super) async fn wait_for_window(&self, seq: u64) {
        // `notify_one` stores a permit when nobody waits, so a pop between the check and the
        // await is not lost.
        while !self.lock().ring.in_window(seq) {
            self.window.notified().await;
        }
    }

    /// Whether the object at `seq` has a slot in the ring now.
    pub(super) fn in_window(&self, seq: u64) -> bool {
        self.lock().ring.in_window(seq)
    }

    /// The input has ended after `total` objects: the consumer is told.
    pub(super) fn finish(&self, total: u64) {
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
    /// The delivery of the object at `seq`, whose key is `key` (none for an input error).
    pub(super) fn new(shared: &Arc<Shared>, seq: u64, key: Option<String>) -> Self {
        Delivery {
            shared: Arc::clone(shared),
            seq,
            key,
            delivered: false,
        }
    }

    /// Puts `result` at the object's position; an error is counted and gets its key and
    /// position.
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
