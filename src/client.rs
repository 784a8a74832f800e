//! [`Client`]: the budgets shared by every request, and the calls that use them.

use std::sync::Arc;

use futures_core::Stream;

use crate::config::{ClientBuilder, Config};
use crate::conn::ConnPool;
use crate::engine::ObjectStream;
use crate::error::Error;
use crate::fetch::request_whole;
use crate::list::ListStream;
use crate::memory::MemoryPool;
use crate::object::{IntoObjectRef, ObjectRef};
use crate::retry::RetryBudget;
use crate::s3::BucketTarget;
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
    pub(crate) budget: RetryBudget,
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
                memory,
                conns,
                signer,
                counters: Counters::default(),
                budget: RetryBudget::new(&config.retry),
                config,
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
        I: IntoIterator,
        I::Item: IntoObjectRef,
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
        S: Stream + Send + 'static,
        S::Item: IntoObjectRef,
    {
        ObjectStream::start(Arc::clone(&self.inner), bucket.into(), objects)
    }

    /// Lists the objects under `prefix` (all of `bucket` for `""`), in S3's order, one
    /// ListObjectsV2 page at a time. Feed it to [`get_stream`](Self::get_stream) to fetch what
    /// it lists without collecting the listing first.
    ///
    /// An error (a denied listing, an unknown bucket, a malformed page) is yielded once and
    /// ends the stream.
    pub fn list(&self, bucket: impl Into<String>, prefix: impl Into<String>) -> ListStream {
        ListStream::start(Arc::clone(&self.inner), bucket.into(), prefix.into())
    }

    /// Asks for one object's size (and ETag) with HeadObject, for inputs whose size is unknown.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound),
    /// [`ErrorKind::AccessDenied`](crate::ErrorKind::AccessDenied), a connection error, or
    /// [`ErrorKind::InvalidResponse`](crate::ErrorKind::InvalidResponse) when the reply has no
    /// valid `Content-Length`. The error carries the key.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future abandons the request and its connection.
    pub async fn head(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<ObjectRef, Error> {
        let result = async {
            let target = BucketTarget::new(&self.inner.config, bucket)?;
            let req = target.head_object(key, version_id)?;
            let (parts, _) = request_whole(&self.inner, &target.origin, req, 0).await?;
            let size = parts
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| {
                    Error::new(crate::ErrorKind::InvalidResponse)
                        .with_message("HEAD reply has no valid Content-Length")
                })?;
            let mut obj = ObjectRef::new(key, size);
            obj.version_id = version_id.map(str::to_owned);
            Ok(obj)
        }
        .await;
        result.map_err(|e: Error| e.with_key(key))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_a_built_client_shows_no_secret() {
        let client = Client::builder()
            .endpoint_url("http://127.0.0.1:9000")
            .static_credentials("AKIDSHOWN", "SECRETHIDDEN", Some("TOKENHIDDEN".into()))
            .build()
            .unwrap();
        let shown = format!("{client:?}");
        assert!(shown.contains("127.0.0.1"), "{shown}");
        assert!(
            !shown.contains("SECRETHIDDEN") && !shown.contains("TOKENHIDDEN"),
            "{shown}"
        );
    }
}
