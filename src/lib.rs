//! Fetch many S3 objects concurrently and get them back **in the order asked for**, at the speed
//! of the link, in memory that never grows past a budget.
//!
//! A [`Client`] holds three budgets shared by all its requests:
//!
//! * `max_connections` — sockets open at once, across all requests (a hard count);
//! * `max_connections_per_request` — GETs one [`Client::get_all`] call may have in flight;
//! * `max_bytes` — body memory held at once: being downloaded, or delivered and not yet dropped.
//!
//! Objects larger than [`ClientBuilder::part_size`] (8 MiB by default) are fetched as ranged
//! GETs, one per part, in parallel, each part on its own connection and all parts pinned to one
//! version with `If-Match`. An object that fits [`ClientBuilder::stream_threshold`] (the whole
//! budget, by default) is delivered whole; a larger one is delivered as a **streaming** [`Body`]
//! as soon as its first part is in, and its parts' memory returns to the budget as they are read.
//! [`Body::next_chunk`] reads both kinds alike. An [`ObjectRef`] may leave the size out: the
//! first GET asks for one part and learns the size from the reply (no HEAD).
//!
//! **The one rule for consumers**: memory comes back only when bodies (and their chunks) are
//! dropped, so read or drop each body — a streaming one to its end — before waiting for the next
//! object. A consumer that stops reading stops the downloads once the budget is full; one that
//! holds bodies adding up to the whole budget while waiting for the next object waits forever.
//!
//! [`Client::get_all`] takes a list (or [`Client::get_stream`] a stream) of [`ObjectRef`]s and
//! returns an [`ObjectStream`] with exactly one `Result<Object, Error>` per input, in input order.
//! A missing or forbidden object is an [`Error`] at its own position; the rest still arrive.
//!
//! Requests are signed with SigV4 (computed here, its signing key cached per day; checked against
//! `aws-sigv4` in the tests) and sent over the client's own pool of HTTP/1.1 connections, driven
//! by the crate itself (rustls's unbuffered API for https). Bodies are read from the socket
//! straight into slabs reserved before each GET (over https, copied there from each decrypted
//! record), and the slabs return to the budget when the [`Body`] is dropped. For many small
//! objects, consume the stream in a task on the runtime rather than in `block_on`, whose thread is
//! not a worker: waking it costs a futex call and a context switch per object.
//!
//! Failures are survived where they can be: connection errors, stalls ([`ClientBuilder::stall_timeout`])
//! and 5xx are retried with backoff under a client-wide budget ([`RetryConfig`]); a broken body
//! resumes with a `Range` request pinned to the first reply's ETag, so a body is never a mix of two
//! versions. A late reply is sent again on another connection ([`HedgeConfig`]), and a body
//! trickling below a floor resumed on a new one ([`MinBodyRate`]); lengths are always checked, and so — by default — is every object's checksum where the
//! server has one ([`ClientBuilder::checksum_mode`], [`Object::checksum`]). Every [`Error`] says how many attempts were made and why each
//! failed.
//!
//! Credentials come from static keys, the environment, any `aws_credential_types` provider, or
//! (feature `aws-config`) the whole AWS default chain — roles, web identity, profiles,
//! `credential_process`, SSO, container credentials, the instance's metadata — with
//! `ClientBuilder::aws_default_chain`; they are refreshed before they expire. A bucket in
//! another region is learned from the first reply that names it, once. Requester pays, the
//! expected bucket owner, SSE-C keys and HTTP proxies (`CONNECT` for https) are options of the
//! builder.
//!
//! Throttling (503 `SlowDown`, 429) slows the client down instead of failing objects: every
//! request takes a slot under an adaptive limit on requests in flight, below `max_connections`,
//! which throttled replies cut and time grows back, CUBIC-style. Throttled attempts spend neither
//! attempts nor retry budget; an object fails from throttling only after the server has refused it
//! for a configurable time ([`ThrottleConfig`]). [`Stats`] shows the limit and the throttled
//! replies. The client reports what it does through `tracing` (spans per request and part; retries,
//! throttling, connections), never with a secret.
//!
//! ```no_run
//! # use futures::StreamExt;
//! # async fn run(client: s3_ordered::Client) -> Result<(), s3_ordered::Error> {
//! // Any object, whole or streaming, chunk by chunk: each chunk's memory returns when dropped.
//! let mut results = client.get_all("my-bucket", ["video/big.mp4", "logs/small.json"]);
//! while let Some(object) = results.next().await {
//!     let mut object = object?;
//!     while let Some(chunk) = object.body.next_chunk().await {
//!         let chunk: bytes::Bytes = chunk?;
//!         // write `chunk` somewhere
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! ```no_run
//! use futures::StreamExt;
//! use s3_ordered::{Client, ObjectRef};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::builder()
//!     .endpoint_url("http://127.0.0.1:9000")
//!     .static_credentials("AKID", "SECRET", None)
//!     .max_connections(32)
//!     .max_bytes(512 << 20)
//!     .build()?;
//! let objects = vec![ObjectRef::new("logs/a.json", 1024), ObjectRef::new("logs/b.json", 2048)];
//! let mut results = client.get_all("my-bucket", objects);
//! while let Some(result) = results.next().await {
//!     let object = result?;
//!     println!("{} #{}: {} bytes", object.key, object.seq, object.body.len());
//! }
//! # Ok(())
//! # }
//! ```

#![deny(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

#[cfg(feature = "aws-config")]
mod aws_chain;
mod aws_env;
mod checksum;
mod client;
mod config;
mod conn;
mod context;
mod credentials;
mod engine;
mod error;
mod fetch;
mod hedge;
mod http1;
mod limiter;
mod list;
mod memory;
mod object;
mod proxy;
mod reorder;
mod retry;
mod s3;
mod sign;
mod size;
mod stats;
mod tls;
mod waitlist;

pub use aws_env::{AwsEnv, AwsSettings};
pub use checksum::{Checksum, ChecksumAlgorithm, NotVerified};
pub use client::Client;
pub use config::{
    Addressing, ChecksumMode, ClientBuilder, HttpTransport, MinBodyRate, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_BYTES, DEFAULT_MAX_CONNECTIONS, DEFAULT_MIN_BODY_RATE, DEFAULT_PART_SIZE,
    DEFAULT_REGION, DEFAULT_SLAB_SIZE, DEFAULT_STALL_TIMEOUT, MAX_SLAB_SIZE, MIN_SLAB_SIZE,
};
pub use engine::ObjectStream;
pub use error::{ConfigError, Error, ErrorKind};
pub use hedge::HedgeConfig;
pub use list::{EntryStream, ListEntry, ListStream};
pub use memory::{Body, Chunks};
pub use object::{IntoObjectRef, Object, ObjectRef};
pub use reorder::{ReorderRing, RingError};
pub use retry::{RetryConfig, ThrottleConfig};
pub use size::parse_size;
pub use stats::Stats;

pub use aws_credential_types::Credentials;

/// Hooks for this crate's own benchmarks and fuzz targets; not part of the API and exempt
/// from semver.
#[doc(hidden)]
pub mod __internals {
    pub use crate::memory::bench::PoolBench;
    pub use crate::sign::bench::SignBench;

    /// `(code, message, request_id)` of an S3 XML error body.
    pub fn parse_error_body(body: &[u8]) -> [Option<String>; 3] {
        let b = crate::s3::parse_error_body(body);
        [b.code, b.message, b.request_id]
    }

    /// The objects and continuation token of a ListObjectsV2 page.
    pub fn parse_list_page(
        body: &[u8],
    ) -> Result<(Vec<crate::ObjectRef>, Option<String>), crate::Error> {
        crate::s3::parse_list_page(body).map(|p| (p.objects, p.next_token))
    }

    /// A whole chunked body in `bytes`, fed `split` bytes at a time: its data and the bytes it
    /// took, `None` if it does not end within `bytes`.
    pub fn decode_chunked(
        bytes: &[u8],
        split: usize,
    ) -> Result<Option<(Vec<u8>, usize)>, crate::Error> {
        crate::http1::decode_chunked(bytes, split)
    }

    /// The response head at the start of `bytes`: `(length, status, framing, keep-alive)` with
    /// the framing as text (`"empty"`, `"length N"`, `"chunked"`, `"until close"`), `None` when
    /// the head goes on past `bytes`.
    pub fn parse_response_head(
        bytes: &[u8],
    ) -> Result<Option<(usize, u16, String, bool)>, crate::Error> {
        let mut head = crate::http1::Head::default();
        let crate::http1::Parsed::Complete(len) = head.parse(bytes)? else {
            return Ok(None);
        };
        let framing = match head.framing(false)? {
            crate::http1::Framing::Empty => "empty".to_owned(),
            crate::http1::Framing::Length(n) => format!("length {n}"),
            crate::http1::Framing::Chunked => "chunked".to_owned(),
            crate::http1::Framing::UntilClose => "until close".to_owned(),
        };
        Ok(Some((
            len,
            head.status().as_u16(),
            framing,
            head.keep_alive(),
        )))
    }

    /// How one side of the differential fuzz target read a response.
    #[cfg(fuzzing)]
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Read {
        /// The head was accepted with this status; then the body ended so.
        Accepted {
            /// The final status.
            status: u16,
            /// The body bytes delivered.
            body: Vec<u8>,
            /// How the body ended.
            end: End,
            /// Whether the connection would carry another request (after a clean end).
            reusable: bool,
        },
        /// The head was refused, for this reason.
        Refused(String),
        /// The head never completed: more bytes were awaited from a peer that sent no more.
        Stuck,
    }

    /// How a body ended in [`Read::Accepted`].
    #[cfg(fuzzing)]
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum End {
        /// Its framing said so.
        Clean,
        /// Refused, or the stream ended first.
        Error,
        /// More bytes were awaited from a peer that sent no more.
        Stuck,
    }

    /// Reads the response a GET (or HEAD) gets when the server sends `pieces` (one per read,
    /// then the end of the stream if `eof`, else silence), on the native exchange or on
    /// hyper's, with body reads into buffers of the sizes `reads` cycles through.
    #[cfg(all(fuzzing, feature = "hyper"))]
    pub fn read_response(
        hyper: bool,
        pieces: Vec<Vec<u8>>,
        eof: bool,
        method_head: bool,
        reads: &[usize],
    ) -> Read {
        use crate::http1::{memory::MemoryStream, Connection, Http, HyperConnection, HyperStream};
        let stream = MemoryStream::new(pieces, eof);
        let mut conn = if hyper {
            let io = HyperStream::memory(stream);
            match now(HyperConnection::handshake(io)) {
                Some(Ok(c)) => Http::Hyper(Box::new(c)),
                Some(Err(e)) => return Read::Refused(e.with_causes()),
                None => return Read::Stuck,
            }
        } else {
            Http::Native(Connection::new(crate::http1::Transport::Memory(stream)))
        };
        let (out, _, _) = conn.compose();
        let method = if method_head { "HEAD" } else { "GET" };
        crate::http1::push_request_line(out, method, |o| o.extend_from_slice(b"/b/k"));
        crate::http1::push_field(out, "host", b"h");
        crate::http1::end_head(out);
        let sent = now(async {
            conn.send(method_head).await?;
            conn.read_head().await
        });
        match sent {
            None => return Read::Stuck,
            Some(Err(e)) => return Read::Refused(e.with_causes()),
            Some(Ok(())) => {}
        }
        let status = conn.head().status().as_u16();
        let mut body = Vec::new();
        let mut end = End::Stuck;
        for &size in reads.iter().cycle().take(1 << 16) {
            let mut dst = vec![0u8; size.max(1)];
            match now(conn.read_body(&mut dst)) {
                None => break,
                Some(Err(_)) => {
                    end = End::Error;
                    break;
                }
                Some(Ok(0)) => {
                    end = End::Clean;
                    break;
                }
                Some(Ok(n)) => body.extend_from_slice(&dst[..n]),
            }
        }
        let reusable = end == End::Clean && conn.idle_alive();
        Read::Accepted {
            status,
            body,
            end,
            reusable,
        }
    }

    /// `fut`'s output if it completes without waiting on anything outside: polled with a
    /// waker that does nothing, a bounded number of times (a future may wake itself to yield).
    #[cfg(fuzzing)]
    fn now<F: std::future::Future>(fut: F) -> Option<F::Output> {
        let mut fut = std::pin::pin!(fut);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        (0..64).find_map(|_| match fut.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(out) => Some(out),
            std::task::Poll::Pending => None,
        })
    }

    /// `(first, last, total)` of a `Content-Range` value.
    pub fn parse_content_range(value: &str) -> Option<(u64, u64, u64)> {
        crate::s3::parse_content_range(value)
    }

    /// `(body length, whole object from byte 0, object size)` a success reply must carry for
    /// a GET of bytes `from..end` of the part starting at `part_start`; see `fetch::check_reply`.
    #[allow(clippy::too_many_arguments)] // mirrors the checked request field by field
    pub fn check_reply(
        status: u16,
        content_length: Option<&[u8]>,
        content_range: Option<&[u8]>,
        part_start: u64,
        from: u64,
        end: u64,
        ranged: bool,
        size: Option<u64>,
    ) -> Result<(u64, bool, u64), crate::Error> {
        let status = http::StatusCode::from_u16(status)
            .map_err(|e| crate::Error::invalid_input(e.to_string()))?;
        let asked = crate::fetch::Asked {
            part_start,
            from,
            end,
            ranged,
            size,
        };
        crate::fetch::check_reply(status, content_length, content_range, asked)
            .map(|s| (s.len, s.restart, s.total))
    }
}
