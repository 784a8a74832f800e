//! One object end to end: attempts until it is fetched whole or fails for good.
//!
//! Each attempt is signed afresh, sent on a pooled connection, and its body copied into the
//! object's leased slabs, which the object keeps across attempts. The first reply's ETag is
//! pinned: later attempts send `If-Match` and must come back with the same ETag, so a delivered
//! body is never a mix of two versions. When an attempt breaks off mid-body and the ETag is
//! known, the next one asks only for the missing bytes (`Range`), and the reply's
//! `Content-Range` must match exactly.
//!
//! The body is accepted only if its length equals the declared size (and `Content-Length`), and
//! — with checksum mode — its CRC matches the whole-object checksum the server sent. The stall
//! timeout applies to the response head and to every gap between body frames, never to the
//! whole transfer.

use std::time::Duration;

use http::header::{CONTENT_LENGTH, CONTENT_RANGE, ETAG, IF_MATCH, RANGE};
use http::{HeaderValue, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::checksum::Expected;
use crate::client::ClientInner;
use crate::conn::{Conn, Unit};
use crate::error::{Error, ErrorKind};
use crate::memory::{Body, Lease};
use crate::object::{Object, ObjectRef};
use crate::retry::Retrier;
use crate::s3::{parse_content_range, status_error, BucketTarget, MAX_ERROR_BODY};
use crate::stats::Counters;

/// What the first reply fixed for the following attempts.
#[derive(Debug, Default)]
struct Pinned {
    etag: Option<HeaderValue>,
    version_id: Option<String>,
    checksum: Option<Expected>,
}

/// Fetches `obj` into `lease`; `unit` is the connection right for the first attempt.
///
/// # Errors
///
/// The last attempt's error, with the attempt count and the earlier failures; the caller
/// attaches the key and position.
pub(crate) async fn fetch_object(
    client: &ClientInner,
    target: &BucketTarget,
    obj: ObjectRef,
    seq: u64,
    mut lease: Lease,
    unit: Unit,
) -> Result<Object, Error> {
    let mut retrier = Retrier::new(&client.config.retry, &client.budget);
    let mut pinned = Pinned::default();
    let mut unit = Some(unit);
    loop {
        retrier.start_attempt();
        let unit = match unit.take() {
            Some(u) => u,
            None => client.conns.unit().await,
        };
        match attempt(client, target, &obj, &mut lease, unit, &mut pinned).await {
            Ok(()) => break,
            Err(e) => {
                retrier.after_failure(e).await?;
                Counters::add(&client.counters.retries, 1);
            }
        }
    }
    let body = Body::new(lease);
    if let Some(expected) = pinned.checksum {
        let got = expected.compute(body.chunks());
        if got != expected.value {
            return Err(Error::new(ErrorKind::ChecksumMismatch)
                .with_message(format!(
                    "{:?} of the body is {got:08x}, the server sent {:08x}",
                    expected.algorithm, expected.value
                ))
                .with_attempts(retrier.attempts()));
        }
    }
    Counters::add(&client.counters.objects, 1);
    Counters::add(&client.counters.bytes, body.len() as u64);
    Ok(Object {
        etag: pinned.etag.and_then(|v| v.to_str().ok().map(str::to_owned)),
        version_id: pinned.version_id,
        key: obj.key,
        seq,
        body,
    })
}

/// One attempt: on success the lease holds the whole body.
async fn attempt(
    client: &ClientInner,
    target: &BucketTarget,
    obj: &ObjectRef,
    lease: &mut Lease,
    unit: Unit,
    pinned: &mut Pinned,
) -> Result<(), Error> {
    let size = lease.size();
    let stall = client.config.stall_timeout;
    // Resume only what the pinned ETag guarantees is the same object.
    let resume_from = match (&pinned.etag, lease.len() as u64) {
        (Some(_), n) if n > 0 && n < size => n,
        _ => {
            lease.clear();
            0
        }
    };

    let mut req = target.get_object(&obj.key, obj.version_id.as_deref())?;
    let headers = req.headers_mut();
    if let Some(etag) = &pinned.etag {
        headers.insert(IF_MATCH, etag.clone());
    }
    if resume_from > 0 {
        let range = format!("bytes={resume_from}-{}", size - 1);
        headers.insert(
            RANGE,
            HeaderValue::try_from(range)
                .map_err(|e| Error::new(ErrorKind::Internal).with_source(e))?,
        );
    }
    if client.config.checksum_mode {
        headers.insert("x-amz-checksum-mode", HeaderValue::from_static("ENABLED"));
    }
    let (conn, resp) = send(client, &target.origin, unit, req).await?;
    let status = resp.status();
    let (parts, mut body) = resp.into_parts();

    if !status.is_success() {
        let read = tokio::time::timeout(stall, read_limited(&mut body, MAX_ERROR_BODY)).await;
        let bytes = match read {
            Ok((bytes, complete)) => {
                if complete {
                    conn.release();
                }
                bytes
            }
            Err(_) => Vec::new(),
        };
        return Err(status_error(status, &bytes));
    }

    let length_error = |why: String| {
        Error::new(ErrorKind::LengthMismatch)
            .with_status(status)
            .with_message(why)
    };
    let expected = expected_reply_len(
        status,
        parts.headers.get(CONTENT_LENGTH).map(HeaderValue::as_bytes),
        parts.headers.get(CONTENT_RANGE).map(HeaderValue::as_bytes),
        resume_from,
        size,
    )?;
    if expected.restart {
        lease.clear(); // a full body, even if a range was asked for
    }

    // The same object on every attempt, or an error.
    let etag = parts.headers.get(ETAG);
    match (&pinned.etag, etag) {
        (Some(first), Some(now)) if first != now => {
            return Err(Error::new(ErrorKind::Changed)
                .with_status(status)
                .with_message(format!("ETag changed from {first:?} to {now:?}")));
        }
        (Some(_), None) => {
            return Err(Error::new(ErrorKind::Changed)
                .with_status(status)
                .with_message("a retry's reply has no ETag to match the first one"));
        }
        (None, Some(now)) => pinned.etag = Some(now.clone()),
        _ => {}
    }
    if pinned.version_id.is_none() {
        pinned.version_id = parts
            .headers
            .get("x-amz-version-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
    }
    if client.config.checksum_mode && status == StatusCode::OK {
        pinned.checksum = Expected::from_headers(&parts.headers);
    }

    loop {
        let frame = match tokio::time::timeout(stall, body.frame()).await {
            Ok(None) => break,
            Ok(Some(Ok(frame))) => frame,
            Ok(Some(Err(e))) => {
                return Err(Error::new(ErrorKind::Connection)
                    .with_status(status)
                    .with_message(format!(
                        "body broke off after {} of {size} bytes",
                        lease.len()
                    ))
                    .with_source(e))
            }
            Err(_) => {
                return Err(Error::new(ErrorKind::Timeout)
                    .with_status(status)
                    .with_message(format!(
                        "body stalled for {} after {} of {size} bytes",
                        fmt_duration(stall),
                        lease.len()
                    )))
            }
        };
        if let Ok(data) = frame.into_data() {
            lease.write(&data).map_err(|_| {
                length_error(format!("body is longer than the declared size {size}"))
            })?;
        }
    }
    if lease.len() as u64 != size {
        return Err(length_error(format!(
            "body ended after {} of the declared {size} bytes",
            lease.len()
        )));
    }
    conn.release();
    Ok(())
}

/// What a success reply must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExpectedLen {
    /// Body bytes the reply must carry.
    pub(crate) len: u64,
    /// The body is the whole object (discard any partial one), not the rest from `resume_from`.
    pub(crate) restart: bool,
}

/// Checks a success reply's status, `Content-Length` and `Content-Range` against the request
/// (resuming at `resume_from`, 0 for a whole GET) and the declared `size`.
///
/// # Errors
///
/// [`ErrorKind::LengthMismatch`] when the lengths or the range disagree with the declared size;
/// [`ErrorKind::InvalidResponse`] for a success status other than 200, or 206 to a GET that
/// asked for no range.
pub(crate) fn expected_reply_len(
    status: StatusCode,
    content_length: Option<&[u8]>,
    content_range: Option<&[u8]>,
    resume_from: u64,
    size: u64,
) -> Result<ExpectedLen, Error> {
    let mismatch = |why: String| {
        Error::new(ErrorKind::LengthMismatch)
            .with_status(status)
            .with_message(why)
    };
    let expected = match status {
        StatusCode::OK => ExpectedLen {
            len: size,
            restart: true,
        },
        StatusCode::PARTIAL_CONTENT if resume_from > 0 && resume_from < size => {
            let range = content_range
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(parse_content_range);
            if range != Some((resume_from, size - 1, size)) {
                return Err(mismatch(format!(
                    "asked for bytes {resume_from}-{} of {size}, got Content-Range {:?}",
                    size - 1,
                    content_range.map(String::from_utf8_lossy)
                )));
            }
            ExpectedLen {
                len: size - resume_from,
                restart: false,
            }
        }
        other => {
            return Err(Error::new(ErrorKind::InvalidResponse)
                .with_status(other)
                .with_message("unexpected success status for this GET"))
        }
    };
    if let Some(raw) = content_length {
        let len = std::str::from_utf8(raw)
            .ok()
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse::<u64>().ok());
        if len != Some(expected.len) {
            let shown = len.map_or_else(|| "invalid".to_owned(), |l| l.to_string());
            return Err(mismatch(format!(
                "Content-Length is {shown}, expected {} (declared size {size})",
                expected.len
            )));
        }
    }
    Ok(expected)
}

/// Signs `req` afresh, gets a connection to `origin` with `unit`, sends, and waits at most the
/// stall timeout for the response head. Counts the request.
async fn send(
    client: &ClientInner,
    origin: &http::Uri,
    unit: Unit,
    mut req: http::Request<http_body_util::Empty<bytes::Bytes>>,
) -> Result<(Conn, http::Response<Incoming>), Error> {
    client.signer.sign(&mut req).await?;
    let mut conn = unit.connect(origin).await.map_err(|(_, e)| e)?;
    Counters::add(&client.counters.requests, 1);
    let stall = client.config.stall_timeout;
    match tokio::time::timeout(stall, conn.send(req)).await {
        Ok(Ok(resp)) => Ok((conn, resp)),
        Ok(Err(e)) => Err(Error::new(ErrorKind::Connection)
            .with_message("no response")
            .with_source(e)),
        Err(_) => Err(Error::new(ErrorKind::Timeout)
            .with_message(format!("no response within {}", fmt_duration(stall)))),
    }
}

fn fmt_duration(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

/// Signs `req`, sends it on a pooled connection and reads the whole reply body (at most
/// `limit` bytes): for listings and HEAD, whose replies are small. Retried like a GET.
///
/// # Errors
///
/// A typed error for a non-success status (parsed from the S3 error body), a connection
/// failure or stall, or [`ErrorKind::InvalidResponse`] for a body over `limit`.
pub(crate) async fn request_whole(
    client: &ClientInner,
    origin: &http::Uri,
    req: http::Request<http_body_util::Empty<bytes::Bytes>>,
    limit: usize,
) -> Result<(http::response::Parts, Vec<u8>), Error> {
    let mut retrier = Retrier::new(&client.config.retry, &client.budget);
    loop {
        retrier.start_attempt();
        let mut attempt_req = http::Request::new(http_body_util::Empty::new());
        *attempt_req.method_mut() = req.method().clone();
        *attempt_req.uri_mut() = req.uri().clone();
        *attempt_req.headers_mut() = req.headers().clone();
        match whole_once(client, origin, attempt_req, limit).await {
            Ok(ok) => return Ok(ok),
            Err(e) => {
                retrier.after_failure(e).await?;
                Counters::add(&client.counters.retries, 1);
            }
        }
    }
}

async fn whole_once(
    client: &ClientInner,
    origin: &http::Uri,
    req: http::Request<http_body_util::Empty<bytes::Bytes>>,
    limit: usize,
) -> Result<(http::response::Parts, Vec<u8>), Error> {
    let stall = client.config.stall_timeout;
    let unit = client.conns.unit().await;
    let (conn, resp) = send(client, origin, unit, req).await?;
    let (parts, mut body) = resp.into_parts();
    let limit = if parts.status.is_success() {
        limit
    } else {
        MAX_ERROR_BODY
    };
    // The whole (small) body must arrive within a few stall periods.
    let Ok((bytes, complete)) =
        tokio::time::timeout(stall.saturating_mul(4), read_limited(&mut body, limit)).await
    else {
        return Err(Error::new(ErrorKind::Timeout).with_message("reply body stalled"));
    };
    if complete {
        conn.release();
    }
    if !parts.status.is_success() {
        return Err(status_error(parts.status, &bytes));
    }
    if !complete && bytes.len() >= limit {
        return Err(Error::new(ErrorKind::InvalidResponse)
            .with_status(parts.status)
            .with_message(format!("reply body larger than {limit} bytes")));
    }
    if !complete {
        return Err(Error::new(ErrorKind::Connection)
            .with_status(parts.status)
            .with_message("reply body broke off"));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        status: u16,
        cl: Option<&str>,
        cr: Option<&str>,
        from: u64,
        size: u64,
    ) -> Result<ExpectedLen, ErrorKind> {
        expected_reply_len(
            StatusCode::from_u16(status).unwrap(),
            cl.map(str::as_bytes),
            cr.map(str::as_bytes),
            from,
            size,
        )
        .map_err(|e| e.kind())
    }

    #[test]
    fn whole_and_resumed_replies() {
        let whole = Ok(ExpectedLen {
            len: 100,
            restart: true,
        });
        assert_eq!(check(200, Some("100"), None, 0, 100), whole);
        assert_eq!(check(200, None, None, 0, 100), whole);
        // A server that ignores Range sends everything again.
        assert_eq!(check(200, Some("100"), None, 40, 100), whole);
        assert_eq!(
            check(206, Some("60"), Some("bytes 40-99/100"), 40, 100),
            Ok(ExpectedLen {
                len: 60,
                restart: false
            })
        );
    }

    #[test]
    fn disagreements_are_typed_errors() {
        use ErrorKind::*;
        assert_eq!(check(200, Some("101"), None, 0, 100), Err(LengthMismatch));
        assert_eq!(check(200, Some("+100"), None, 0, 100), Err(LengthMismatch));
        assert_eq!(check(200, Some("abc"), None, 0, 100), Err(LengthMismatch));
        assert_eq!(
            check(206, Some("60"), Some("bytes 41-99/100"), 40, 100),
            Err(LengthMismatch)
        );
        assert_eq!(
            check(206, Some("60"), Some("bytes 40-99/101"), 40, 100),
            Err(LengthMismatch)
        );
        assert_eq!(
            check(206, Some("59"), Some("bytes 40-99/100"), 40, 100),
            Err(LengthMismatch)
        );
        assert_eq!(check(206, Some("60"), None, 40, 100), Err(LengthMismatch));
        assert_eq!(
            check(206, Some("100"), Some("bytes 0-99/100"), 0, 100),
            Err(InvalidResponse)
        );
        assert_eq!(check(204, None, None, 0, 0), Err(InvalidResponse));
    }
}
