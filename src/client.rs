//! [`Client`]: the budgets shared by every request, and the calls that use them.

use std::sync::Arc;

use futures_core::Stream;

use crate::config::{ClientBuilder, Config};
use crate::conn::ConnPool;
use crate::engine::ObjectStream;
use crate::memory::MemoryPool;
use crate::object::ObjectRef;
use crate::sign::Signer;
use crate::stats::{Counters, Stats};

/// An S3 client whose requests share one connection budget and one memory budget.
///
/// Cheap to clone: clones share the budgets, connections and counters.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<ClientInner>,
}

#[derive(Debug)]
pub(crate) struct ClientInner {
    pub(crate) config: Config,
    pub(crate) memory: MemoryPool,
    pub(crate) conns: ConnPool,
    pub(crate) signer: Signer,
    pub(crate) counters: Counters,
}

impl Client {
    /// Starts a [`ClientBuilder`] with every setting at its default.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    pub(crate) fn from_config(config: Config) -> Result<Self, crate::ConfigError> {
        let memory = MemoryPool::new(config.slab_size, config.total_slabs);
        let conns = ConnPool::new(config.max_connections, config.connect_timeout)?;
        let signer = Signer::new(Arc::clone(&config.region), &config.credentials);
        Ok(Client {
            inner: Arc::new(ClientInner {
                config,
                memory,
                conns,
                signer,
                counters: Counters::default(),
            }),
        })
    }

    /// Fetches `objects` from `bucket`, returning one result per object in input order.
    ///
    /// Objects are fetched concurrently — at most `max_connections_per_request` at a time for
    /// this call, within the client's `max_connections` and `max_bytes` — and handed back in
    /// the order given. A failed object is an `Err` at its own position (carrying its key) and
    /// the stream goes on. The iterator is consumed lazily, as memory and the window allow.
    ///
    /// Bodies count against `max_bytes` until dropped. A consumer that holds bodies adding up
    /// to the whole budget while it waits for the next object waits forever: drop (or copy
    /// out) what you are done with.
    ///
    /// # Panics
    ///
    /// If called outside a Tokio runtime.
    pub fn get_all<I>(&self, bucket: impl Into<String>, objects: I) -> ObjectStream
    where
        I: IntoIterator<Item = ObjectRef>,
        I::IntoIter: Send + 'static,
    {
        self.get_stream(bucket, futures_util::stream::iter(objects))
    }

    /// Like [`get_all`](Self::get_all), for objects arriving as a [`Stream`] (a listing, a
    /// queue): fetching starts before the input ends, and the input is polled only as fast as
    /// memory and the window allow.
    ///
    /// # Panics
    ///
    /// If called outside a Tokio runtime.
    pub fn get_stream<S>(&self, bucket: impl Into<String>, objects: S) -> ObjectStream
    where
        S: Stream<Item = ObjectRef> + Send + 'static,
    {
        ObjectStream::start(Arc::clone(&self.inner), bucket.into(), objects)
    }

    /// A snapshot of the client's counters and of what it holds now.
    pub fn stats(&self) -> Stats {
        let i = &self.inner;
        let slabs_in_use = i.memory.slabs_in_use();
        Stats {
            connections_opened: i.conns.opened(),
            open_connections: i.conns.open(),
            busy_connections: i.conns.in_use(),
            slabs_in_use,
            bytes_in_use: slabs_in_use as u64 * i.memory.slab_size() as u64,
            slabs_allocated: i.memory.slabs_allocated(),
            ..i.counters.snapshot()
        }
    }
}
