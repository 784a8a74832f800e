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
mod express;
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
pub use express::is_directory_bucket;
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
#[path = "internals.rs"]
pub mod __internals;
