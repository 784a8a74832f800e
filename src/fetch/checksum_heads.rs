//! An object's checksum where a GET's reply does not state it: the HEAD that learns it for an
//! object fetched in ranged parts, and for a composite checksum (of a multipart upload's parts)
//! the HEADs of the upload's parts, whose own checksums verify the bytes part by part.

use std::sync::Arc;

use futures_util::StreamExt as _;
use http::StatusCode;

use super::attempts::Start;
use super::exchange::request_whole_from;
use super::object::ObjectFetch;
use crate::checksum::{ChecksumAlgorithm, Composite, InOrder, Offered, UploadParts, Value};
use crate::error::{Error, ErrorKind};
use crate::http1;
use crate::memory::Lease;
use crate::stats::Counters;
use crate::waitlist::Place;

/// For a whole object fetched in one GET whose checksum is composite: verifies its bytes
/// in `lease` through its upload's parts (learned into `upload` on the first call), and
/// pins them as its checksum. Nothing to do for any other checksum, or when the parts'
/// checksums cannot be had (the object then says it was not verified).
///
/// # Errors
///
/// [`ErrorKind::ChecksumMismatch`] naming the first upload part that did not match; the
/// part HEADs' errors ([`UploadHead::upload_parts`]).
pub(super) async fn verify_through_upload(
    obj: &ObjectFetch<'_>,
    lease: &Lease,
    upload: &mut Option<Arc<UploadParts>>,
) -> Result<(), Error> {
    let Some(Offered::Composite(composite)) = obj.pin.checksum() else {
        return Ok(());
    };
    let parts = match upload {
        Some(parts) => Arc::clone(parts),
        None => {
            let Some(parts) = upload_parts(obj, &composite).await? else {
                return Ok(());
            };
            Arc::clone(upload.insert(Arc::new(parts)))
        }
    };
    let mut check = InOrder::parts(Arc::clone(&parts));
    lease.chunks().for_each(|bytes| check.update(bytes));
    check.finish()?;
    obj.pin.learn_checksum(Offered::Parts(parts));
    Ok(())
}

/// Learns an object's checksum with a HEAD (checksum mode), started as `start` says, and
/// pins what it learned: the reply's ETag, version and size are checked against (or pinned
/// for) the object's GETs, as any reply's are, so the checksum is the one of the bytes fetched.
/// Sent with `If-Match` once an ETag is pinned.
///
/// # Errors
///
/// The HEAD's error (after its retries), or [`ErrorKind::Changed`] when its reply describes
/// another version of the object.
pub(crate) async fn learn_checksum(obj: &ObjectFetch<'_>, start: Start) -> Result<Offered, Error> {
    let (ctx, pin) = (obj.ctx, obj.pin);
    let pinned = pin.snapshot();
    let mut req = obj.target.head_object(obj.key, obj.version_id)?;
    if let Some(etag) = &pinned.etag {
        req.if_match(etag);
    }
    req.checksum_mode();
    Counters::add(&ctx.counters.checksum_heads, 1);
    let (headers, _) = request_whole_from(ctx, req, 0, start).await?;
    let field = |name: &str| headers.get(name).map(|v| v.as_bytes());
    let size = field("content-length").and_then(http1::parse_length);
    if let Some(size) = size {
        pin.check(
            StatusCode::OK,
            field("etag"),
            field("x-amz-version-id"),
            || field("last-modified"),
            size,
        )?;
    }
    let mut offered = Offered::from_fields(field);
    if let Offered::Composite(composite) = &offered {
        if let Some(parts) = upload_parts(obj, composite).await? {
            offered = Offered::Parts(Arc::new(parts));
        }
    }
    tracing::debug!(target: "s3_ordered::fetch", ?offered, "checksum learned with a HEAD");
    pin.learn_checksum(offered.clone());
    Ok(offered)
}

/// The upload parts of the object `pin` describes, whose checksum is `composite`
/// ([`UploadHead::upload_parts`]); `None` without a pinned ETag and size or a part count (S3's
/// limit at most) to ask by.
///
/// # Errors
///
/// As [`UploadHead::upload_parts`].
async fn upload_parts(
    obj: &ObjectFetch<'_>,
    composite: &Composite,
) -> Result<Option<UploadParts>, Error> {
    let pinned = obj.pin.snapshot();
    let (Some(etag), Some(n @ 1..=MAX_UPLOAD_PARTS), Some(size)) =
        (pinned.etag, composite.parts, pinned.size)
    else {
        return Ok(None);
    };
    let head = UploadHead { obj, etag: &etag };
    head.upload_parts(composite, n, size).await
}

/// The most parts a multipart upload has (S3's limit).
const MAX_UPLOAD_PARTS: u32 = 10_000;

/// The most HEADs for an object's upload parts in flight at once.
const UPLOAD_HEADS: usize = 8;

/// The HEADs that learn a multipart upload's parts, each asking for one part of the version
/// `etag` names.
struct UploadHead<'a> {
    /// The object; more than one HEAD at a time only on spare rights of its request.
    obj: &'a ObjectFetch<'a>,
    etag: &'a [u8],
}

impl UploadHead<'_> {
    /// The `n` parts of an object of `size` bytes whose checksum is `composite`, one HEAD
    /// with `partNumber` each; `None` when the server does not state them in a way that adds
    /// up to the object (the object is then not verified, and says so).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Changed`] when a part's reply is of another version; a HEAD's error that
    /// is not about the part number (after its retries).
    async fn upload_parts(
        &self,
        composite: &Composite,
        n: u32,
        size: u64,
    ) -> Result<Option<UploadParts>, Error> {
        // The first alone: a server that does not state part checksums is asked once. Then
        // up to a few at a time while the request has connections to spare (one is always
        // its own): an object of many parts waits for them before it can be verified.
        let alg = composite.algorithm;
        let Some(first) = self.part(alg, 1).await? else {
            return Ok(None);
        };
        let mut parts = Vec::with_capacity(n as usize);
        parts.push(first);
        let mut heads = futures_util::stream::FuturesOrdered::new();
        let mut next = 2;
        while parts.len() < n as usize {
            while next <= n && heads.len() < UPLOAD_HEADS {
                let extra = if heads.is_empty() {
                    None
                } else {
                    match Arc::clone(self.obj.rights).try_acquire_owned() {
                        Ok(permit) => Some(permit),
                        Err(_) => break,
                    }
                };
                let number = next;
                heads.push_back(async move {
                    let part = self.part(alg, number).await;
                    drop(extra);
                    part
                });
                next += 1;
            }
            let Some(part) = heads.next().await else {
                break;
            };
            let Some(part) = part? else {
                return Ok(None);
            };
            parts.push(part);
        }
        match UploadParts::new(composite, parts, size) {
            Ok(parts) => Ok(Some(parts)),
            Err(why) => {
                tracing::warn!(
                    target: "s3_ordered::fetch",
                    key = self.obj.key,
                    %why,
                    "the upload's parts are not the object's",
                );
                Ok(None)
            }
        }
    }

    /// Part `number`'s length and checksum in `algorithm`.
    async fn part(
        &self,
        algorithm: ChecksumAlgorithm,
        number: u32,
    ) -> Result<Option<(u64, Value)>, Error> {
        let mut req = self
            .obj
            .target
            .head_object(self.obj.key, self.obj.version_id)?;
        req.part_number(number);
        req.if_match(self.etag);
        req.checksum_mode();
        Counters::add(&self.obj.ctx.counters.checksum_heads, 1);
        let start = Start::Queue(Place::Front);
        let headers = match request_whole_from(self.obj.ctx, req, 0, start).await {
            Ok((headers, _)) => headers,
            // The version changed (If-Match refused): the object's own error.
            Err(e) if e.kind() == ErrorKind::Changed => return Err(e),
            Err(e) if e.kind() == ErrorKind::Cancelled => return Err(e),
            Err(e) => {
                // A server that does not know part numbers: the object is read unverified.
                tracing::warn!(
                    target: "s3_ordered::fetch",
                    key = self.obj.key,
                    number,
                    error = %e,
                    "no upload part checksum",
                );
                return Ok(None);
            }
        };
        let field = |name: &str| headers.get(name).map(|v| v.as_bytes());
        if field("etag").is_some_and(|e| e != self.etag) {
            return Err(Error::new(ErrorKind::Changed)
                .with_status(StatusCode::OK)
                .with_message(format!(
                    "ETag changed during the HEAD of upload part {number}"
                )));
        }
        let len = field("content-length").and_then(http1::parse_length);
        Ok(match (len, Offered::from_fields(field)) {
            (Some(len), Offered::Full(e)) if e.algorithm == algorithm => Some((len, e.value)),
            _ => None,
        })
    }
}
