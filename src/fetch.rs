//! One object end to end: sign, send on a pooled connection, copy the body into the object's
//! leased slabs, and check its length.
//!
//! The body is accepted only if the response is a success, its `Content-Length` (when sent)
//! equals the declared size, and exactly that many bytes arrive. Anything else is a typed
//! [`Error`]; the partial body is discarded and the connection is not reused.

use http::header::{CONTENT_LENGTH, ETAG};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::client::ClientInner;
use crate::conn::Unit;
use crate::error::{Error, ErrorKind};
use crate::memory::{Body, Lease};
use crate::object::{Object, ObjectRef};
use crate::s3::{status_error, BucketTarget, MAX_ERROR_BODY};
use crate::stats::Counters;

/// Fetches `obj` into `lease` using the connection right `unit`.
///
/// # Errors
///
/// Any [`ErrorKind`] an object can fail with; the caller attaches the key and position.
pub(crate) async fn fetch_object(
    client: &ClientInner,
    target: &BucketTarget,
    obj: ObjectRef,
    seq: u64,
    mut lease: Lease,
    unit: Unit,
) -> Result<Object, Error> {
    let mut req = target.get_object(&obj.key, obj.version_id.as_deref())?;
    client.signer.sign(&mut req).await?;
    let mut conn = unit.connect(&target.origin).await.map_err(|(_, e)| e)?;

    Counters::add(&client.counters.requests, 1);
    let sent = |e: Error| e.with_attempts(1);
    let resp = conn.send(req).await.map_err(|e| {
        sent(
            Error::new(ErrorKind::Connection)
                .with_message("no response")
                .with_source(e),
        )
    })?;
    let status = resp.status();
    let (parts, mut body) = resp.into_parts();

    if !status.is_success() {
        let (bytes, complete) = read_limited(&mut body, MAX_ERROR_BODY).await;
        if complete {
            conn.release();
        }
        return Err(sent(status_error(status, &bytes)));
    }

    let size = lease.size();
    if let Some(len) = parts.headers.get(CONTENT_LENGTH) {
        let len = len.to_str().ok().and_then(|v| v.parse::<u64>().ok());
        if len != Some(size) {
            let shown = len.map_or_else(|| "invalid".to_owned(), |l| l.to_string());
            return Err(sent(
                Error::new(ErrorKind::LengthMismatch)
                    .with_status(status)
                    .with_message(format!(
                        "Content-Length is {shown}, the declared size is {size}"
                    )),
            ));
        }
    }

    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            sent(
                Error::new(ErrorKind::Connection)
                    .with_status(status)
                    .with_message(format!(
                        "body broke off after {} of {size} bytes",
                        lease.len()
                    ))
                    .with_source(e),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            lease.write(&data).map_err(|_| {
                sent(
                    Error::new(ErrorKind::LengthMismatch)
                        .with_status(status)
                        .with_message(format!("body is longer than the declared size {size}")),
                )
            })?;
        }
    }
    if lease.len() as u64 != size {
        return Err(sent(
            Error::new(ErrorKind::LengthMismatch)
                .with_status(status)
                .with_message(format!(
                    "body ended after {} of the declared {size} bytes",
                    lease.len()
                )),
        ));
    }
    conn.release();

    Counters::add(&client.counters.objects, 1);
    Counters::add(&client.counters.bytes, size);
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    Ok(Object {
        etag: header(ETAG.as_str()),
        version_id: header("x-amz-version-id"),
        key: obj.key,
        seq,
        body: Body::new(lease),
    })
}

/// Signs `req`, sends it on a pooled connection and reads the whole reply body (at most
/// `limit` bytes): for listings and HEAD, whose replies are small.
///
/// # Errors
///
/// A typed error for a non-success status (parsed from the S3 error body), a connection
/// failure, or [`ErrorKind::InvalidResponse`] for a body over `limit`.
pub(crate) async fn request_whole(
    client: &ClientInner,
    origin: &http::Uri,
    mut req: http::Request<http_body_util::Empty<bytes::Bytes>>,
    limit: usize,
) -> Result<(http::response::Parts, Vec<u8>), Error> {
    client.signer.sign(&mut req).await?;
    let unit = client.conns.unit().await;
    let mut conn = unit.connect(origin).await.map_err(|(_, e)| e)?;
    Counters::add(&client.counters.requests, 1);
    let resp = conn.send(req).await.map_err(|e| {
        Error::new(ErrorKind::Connection)
            .with_message("no response")
            .with_source(e)
            .with_attempts(1)
    })?;
    let (parts, mut body) = resp.into_parts();
    let limit = if parts.status.is_success() {
        limit
    } else {
        MAX_ERROR_BODY
    };
    let (bytes, complete) = read_limited(&mut body, limit).await;
    if complete {
        conn.release();
    }
    if !parts.status.is_success() {
        return Err(status_error(parts.status, &bytes).with_attempts(1));
    }
    if !complete {
        return Err(Error::new(ErrorKind::InvalidResponse)
            .with_status(parts.status)
            .with_message(format!(
                "reply body broken off or larger than {limit} bytes"
            ))
            .with_attempts(1));
    }
    Ok((parts, bytes))
}

/// Reads at most `limit` bytes of `body`; says whether the body ended within the limit.
async fn read_limited(body: &mut Incoming, limit: usize) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return (out, false);
        };
        if let Ok(data) = frame.into_data() {
            let room = limit - out.len();
            out.extend_from_slice(&data[..data.len().min(room)]);
            if data.len() > room {
                return (out, false);
            }
        }
    }
    (out, true)
}
