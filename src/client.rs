//! [`Client`]: the thin public face. It validates a [`ClientBuilder`] into the shared
//! [`Context`] and starts requests on it; everything else lives below.

use std::sync::Arc;

use futures_core::Stream;

use crate::config::ClientBuilder;
use crate::context::Context;
use crate::engine::ObjectStream;
use crate::error::{ConfigError, Error, ErrorKind};
use crate::fetch::request_whole;
use crate::http1;
use crate::list::{EntryStream, ListStream, Listing};
use crate::object::{IntoObjectRef, ObjectRef};
use crate::stats::Stats;

/// An S3 client whose requests share one connection budget and one memory budget.
///
/// Cheap to clone: clones share the budgets, connections and counters.
#[derive(Clone, Debug)]
pub struct Client {
    ctx: Arc<Context>,
}

impl ClientBuilder {
    /// Validates the settings and builds the client.
    ///
    /// Needs a Tokio runtime only when the client is used, not here.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the first invalid field: a budget of zero, `max_connections_per_request`
    /// above `max_connections`, `max_bytes` below one slab per connection, a slab size out of range,
    /// a part size that is not a whole number of slabs or exceeds the budget, a streaming threshold
    /// above the budget, an endpoint that is not an absolute `http`/`https` URL without path, an
    /// empty region, or environment credentials that are not set.
    pub fn build(self) -> Result<Client, ConfigError> {
        Ok(Client {
            ctx: Context::new(self.validate()?),
        })
    }
}

impl Client {
    /// Starts a [`ClientBuilder`] with every setting at its default.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Fetches `objects` from `bucket`, returning one result per object in input order.
    ///
    /// Objects are fetched concurrently — at most `max_connections_per_request` at a time for
    /// this call, within the client's `max_connections` and `max_bytes` — and handed back in
    /// the order given. A failed object is an `Err` at its own position (carrying its key) and
    /// the stream goes on. The iterator is consumed lazily, as memory and the window allow.
    ///
    /// Objects larger than the part size are fetched as parallel ranged parts; those larger than
    /// the streaming threshold (or of unknown size and larger than a part) arrive as streaming
    /// bodies, read with [`Body::next_chunk`](crate::Body::next_chunk).
    ///
    /// Bodies count against `max_bytes` until dropped. **Read or drop each body — a streaming
    /// one to its end — before waiting for the next object**: a consumer that holds bodies adding
    /// up to the whole budget, or sits on an unread streaming body, while it waits for the next
    /// object waits forever.
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
        ObjectStream::start(Arc::clone(&self.ctx), bucket.into(), objects)
    }

    /// Lists the objects under `prefix` (all of `bucket` for `""`), in S3's order, one
    /// ListObjectsV2 page at a time. Feed it to [`get_stream`](Self::get_stream) to fetch what
    /// it lists without collecting the listing first.
    ///
    /// S3's order is lexicographic by key, but for a directory bucket (S3 Express One Zone),
    /// which lists in an order of its own; either way, what is fetched from a listing comes
    /// back in the listing's order.
    ///
    /// An error (a denied listing, an unknown bucket, a malformed page) is yielded once and
    /// ends the stream.
    pub fn list(&self, bucket: impl Into<String>, prefix: impl Into<String>) -> ListStream {
        let what = Listing {
            bucket: bucket.into(),
            prefix: prefix.into(),
            delimiter: None,
            start_after: None,
        };
        ListStream::start(Arc::clone(&self.ctx), what)
    }

    /// [`list`](Self::list), from the first key after `start_after` (ListObjectsV2
    /// `start-after`): to resume a listing where an earlier run's output ended. A directory
    /// bucket has no `start-after`: its stream yields one
    /// [`ErrorKind::InvalidRequest`](crate::ErrorKind::InvalidRequest).
    pub fn list_after(
        &self,
        bucket: impl Into<String>,
        prefix: impl Into<String>,
        start_after: impl Into<String>,
    ) -> ListStream {
        let what = Listing {
            bucket: bucket.into(),
            prefix: prefix.into(),
            delimiter: None,
            start_after: Some(start_after.into()),
        };
        ListStream::start(Arc::clone(&self.ctx), what)
    }

    /// One level of the keys under `prefix`: the objects directly under it and, rolled up, the
    /// common prefixes of the keys that go on past `delimiter` (ListObjectsV2 `delimiter`;
    /// `"/"` lists like a directory), merged in S3's order; from the first name after
    /// `start_after` when given. Errors as for [`list`](Self::list); for a directory bucket,
    /// also a `start_after`, or a `prefix` that does not end in `delimiter`
    /// ([`ErrorKind::InvalidRequest`](crate::ErrorKind::InvalidRequest)).
    pub fn list_with_delimiter(
        &self,
        bucket: impl Into<String>,
        prefix: impl Into<String>,
        delimiter: impl Into<String>,
        start_after: Option<String>,
    ) -> EntryStream {
        let what = Listing {
            bucket: bucket.into(),
            prefix: prefix.into(),
            delimiter: Some(delimiter.into()),
            start_after,
        };
        EntryStream::start(Arc::clone(&self.ctx), what)
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
            let target = self.ctx.target(bucket)?;
            let req = target.head_object(key, version_id)?;
            let (headers, _) = request_whole(&self.ctx, req, 0).await?;
            let size = headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| http1::parse_length(v.as_bytes()))
                .ok_or_else(|| {
                    Error::new(ErrorKind::InvalidResponse)
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
        self.ctx.stats()
    }

    /// `max_connections` as built: the most sockets, and so file descriptors, the client's
    /// connections hold at once. A process that runs it wants that many descriptors and a few
    /// more for everything else; with fewer, the client lowers its connection limit to what it
    /// could open ([`Stats::connection_limit`](crate::Stats::connection_limit)).
    pub fn max_connections(&self) -> usize {
        self.ctx.config.max_connections
    }

    /// The memory budget for bodies, in bytes: `max_bytes` as built, in whole slabs.
    pub fn max_bytes(&self) -> u64 {
        self.ctx.memory.budget()
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
