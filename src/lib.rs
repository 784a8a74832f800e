//! Fetch many S3 objects concurrently and get them back **in the order asked for**, at the speed
//! of the link, in memory that never grows past a budget.
//!
//! A [`Client`] holds three budgets shared by all its requests:
//!
//! * `max_connections` — sockets open at once, across all requests (a hard count);
//! * `max_connections_per_request` — GETs one [`Client::get_all`] call may have in flight;
//! * `max_bytes` — body memory held at once: being downloaded, or delivered and not yet dropped.
//!
//! [`Client::get_all`] takes a list (or [`Client::get_stream`] a stream) of [`ObjectRef`]s and
//! returns an [`ObjectStream`] with exactly one `Result<Object, Error>` per input, in input order.
//! A missing or forbidden object is an [`Error`] at its own position; the rest still arrive.
//!
//! Requests are signed with SigV4 (`aws-sigv4`) and sent over the client's own pool of hyper
//! HTTP/1.1 connections (rustls for https). Bodies are copied straight into slabs reserved before
//! each GET, and the slabs return to the budget when the [`Body`] is dropped.
//!
//! What it does not do (yet): objects larger than the whole memory budget fail with
//! [`ErrorKind::TooLarge`] rather than streaming; failed requests are not retried.
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

mod checksum;
mod client;
mod config;
mod conn;
mod engine;
mod error;
mod fetch;
mod list;
mod memory;
mod object;
mod reorder;
mod retry;
mod s3;
mod sign;
mod stats;

pub use client::Client;
pub use config::{
    Addressing, ClientBuilder, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_BYTES, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_REGION, DEFAULT_SLAB_SIZE, DEFAULT_STALL_TIMEOUT, MAX_SLAB_SIZE, MIN_SLAB_SIZE,
};
pub use engine::ObjectStream;
pub use error::{ConfigError, Error, ErrorKind};
pub use list::ListStream;
pub use memory::{Body, Chunks};
pub use object::{IntoObjectRef, Object, ObjectRef};
pub use reorder::{ReorderRing, RingError};
pub use retry::RetryConfig;
pub use stats::Stats;

pub use aws_credential_types::Credentials;

/// Hooks for this crate's own benchmarks; not part of the API and exempt from semver.
#[doc(hidden)]
pub mod __bench {
    pub use crate::memory::bench::PoolBench;
}
