//! Fetching from S3: one part of an object end to end, and the small whole-body requests
//! (listings, HEADs) the client sends besides.
//!
//! [`fetch_part`] makes a part's attempts until its bytes are in its leased slabs or it fails
//! for good; [`request_whole`] does the same for a reply read whole into memory. Both run
//! their attempts through one loop's rules (`attempts`) and one exchange (`exchange`), and
//! hold each reply to what the object's earlier replies pinned (`reply`). Stall and body-rate
//! timers are in `stall`; the HEADs that learn a checksum a GET does not state are in
//! `checksum_heads`.
//!
//! Guarantees: every request of an object after the first reply carries `If-Match`, and
//! every reply must agree with the pin, so a body is never a mix of two versions; an attempt
//! resumes only the bytes the pinned ETag vouches for; a part is accepted only with exactly the
//! bytes asked for and, with checksums on, verified.

mod attempts;
mod checksum_heads;
mod exchange;
mod part;
mod reply;
mod stall;

use std::sync::Arc;

pub(crate) use attempts::Start;
pub(crate) use checksum_heads::learn_checksum;
pub(crate) use exchange::request_whole;
pub(crate) use part::{fetch_part, Connect, Fetched, PartSpec};
pub(crate) use reply::{check_reply, Asked, ObjectPin};

use crate::context::Context;
use crate::s3::BucketTarget;

/// A request's connection rights: `max_connections_per_request` permits. Each admitted job
/// holds one for its whole run (its retries and follow-up requests included); a job that
/// sends several requests at once takes spare ones for the others, without waiting, so a
/// request never holds more connections than its cap.
pub(crate) type Rights = Arc<tokio::sync::Semaphore>;

/// What is being fetched: one object of a request, as each of its parts and HEADs asks for it.
#[derive(Clone, Copy)]
pub(crate) struct ObjectFetch<'a> {
    pub(crate) ctx: &'a Context,
    pub(crate) target: &'a BucketTarget,
    pub(crate) key: &'a str,
    pub(crate) version_id: Option<&'a str>,
    /// What the object's replies fixed, shared by its parts.
    pub(crate) pin: &'a ObjectPin,
    /// The request's connection rights: more than one request of the object at a time only on
    /// spare ones.
    pub(crate) rights: &'a Rights,
}
