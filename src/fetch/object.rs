//! What is being fetched, as every request of one object names it: the object, where it is,
//! what its replies pinned, and the connection rights of the request it belongs to.

use std::sync::Arc;

use super::reply::ObjectPin;
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
