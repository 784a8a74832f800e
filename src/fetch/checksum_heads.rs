//! An object's checksum where a GET's reply does not state it: the HEAD that learns it for an
//! object fetched in ranged parts, and for a composite checksum (of a multipart upload's parts)
//! the HEADs of the upload's parts, whose own checksums verify the bytes part by part. A value
//! of unstated type on a multipart upload's object is read as composite when the parts'
//! checksums add up to it, else as full-object: before the bytes are judged when a HEAD learned
//! it, after the full-object reading failed when a whole GET stated it.

use std::sync::Arc;

use futures_util::StreamExt as _;
use http::StatusCode;

use super::attempts::Start;
use super::exchange::request_whole_from;
use super::object::ObjectFetch;
use crate::checksum::{
    ChecksumAlgorithm, Composite, Expected, InOrder, Offered, UploadParts, Value,
};
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
    through_upload(obj, lease, upload, &composite, Reading::Stated).await?;
    Ok(())
}

/// For a whole object fetched in one GET whose checksum's type was not stated and whose bytes
/// do not match it as a full-object value: its other reading, `composite`, the composite of
/// the upload's parts' checksums. True when the bytes were verified so (the parts are then
/// pinned as the object's checksum); false when the parts' checksums cannot be had or do not
/// add up to the value (neither reading then agrees).
///
/// # Errors
///
/// As [`verify_through_upload`].
pub(super) async fn verify_as_composite(
    obj: &ObjectFetch<'_>,
    lease: &Lease,
    upload: &mut Option<Arc<UploadParts>>,
    composite: &Composite,
) -> Result<bool, Error> {
    through_upload(obj, lease, upload, composite, Reading::Untyped).await
}

/// Verifies the bytes in `lease` through the upload's parts for `composite` and pins them;
/// false when the parts cannot be had.
async fn through_upload(
    obj: &ObjectFetch<'_>,
    lease: &Lease,
    upload: &mut Option<Arc<UploadParts>>,
    composite: &Composite,
    reading: Reading,
) -> Result<bool, Error> {
    let parts = match upload {
        Some(parts) => Arc::clone(parts),
        None => {
            let Some(parts) = upload_parts(obj, composite, reading).await? else {
                return Ok(false);
            };
            Arc::clone(upload.insert(Arc::new(parts)))
        }
    };
    let mut check = InOrder::parts(Arc::clone(&parts));
    lease.chunks().for_each(|bytes| check.update(bytes));
    check.finish()?;
    obj.pin.learn_checksum(Offered::Parts(parts));
    Ok(true)
}

/// Where a composite value being verified through the upload's parts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// The server stated it composite: parts that cannot be had or do not add up to it are
    /// worth a warning.
    Stated,
    /// A value of unstated type, read as composite: parts that do not add up to it are an
    /// answer (it is a full-object value), not a fault.
    Untyped,
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
    match &offered {
        Offered::Composite(composite) => {
            if let Some(parts) = upload_parts(obj, composite, Reading::Stated).await? {
                offered = Offered::Parts(Arc::new(parts));
            }
        }
        // A value of unstated type on a multipart upload's object: composite if the upload's
        // parts' checksums add up to it, else full-object. Settled before any byte is judged,
        // as the parts of a streaming body go by once; each reading is then verified strictly.
        Offered::Full(e) => {
            if let Some(composite) = e.composite_reading() {
                offered = match upload_parts(obj, &composite, Reading::Untyped).await? {
                    Some(parts) => Offered::Parts(Arc::new(parts)),
                    None => Offered::Full(Expected::full(e.algorithm, e.value)),
                };
            }
        }
        Offered::Parts(_) | Offered::Nothing => {}
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
    reading: Reading,
) -> Result<Option<UploadParts>, Error> {
    let pinned = obj.pin.snapshot();
    let (Some(etag), Some(n @ 1..=MAX_UPLOAD_PARTS), Some(size)) =
        (pinned.etag, composite.parts, pinned.size)
    else {
        return Ok(None);
    };
    let head = UploadHead {
        obj,
        etag: &etag,
        reading,
    };
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
    reading: Reading,
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
            Err(why) if self.reading == Reading::Untyped => {
                tracing::debug!(
                    target: "s3_ordered::fetch",
                    key = self.obj.key,
                    %why,
                    "a checksum of unstated type is not the composite of the upload's parts",
                );
                Ok(None)
            }
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
                // A server that does not know part numbers: a composite value cannot be
                // verified (an untyped one is then read as full-object).
                if self.reading == Reading::Stated {
                    tracing::warn!(
                        target: "s3_ordered::fetch",
                        key = self.obj.key,
                        number,
                        error = %e,
                        "no upload part checksum",
                    );
                }
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
        Ok(len.zip(Offered::of_part(algorithm, field)))
    }
}
