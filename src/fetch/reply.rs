//! What the replies of one object must agree on. [`ObjectPin`] holds what the first reply fixed
//! for every part and attempt of the object — ETag, version, size, `Last-Modified`, checksum —
//! and refuses a reply that disagrees, so a body is never a mix of two versions;
//! [`check_reply`] holds a success reply's status, `Content-Length` and `Content-Range` to the
//! request it answers.

use std::pin::pin;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use http::StatusCode;
use tokio::sync::Notify;

use crate::checksum::Offered;
use crate::error::{Error, ErrorKind};
use crate::http1;
use crate::s3::parse_content_range;

/// What the replies fixed for every part and attempt of one object.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Pinned {
    /// The ETag as the server sent it: a field value, which may hold obs-text (octets over
    /// 0x7f, not always UTF-8) that `If-Match` must send back unchanged.
    pub(crate) etag: Option<Box<[u8]>>,
    pub(crate) version_id: Option<String>,
    pub(crate) size: Option<u64>,
    /// `Last-Modified` of the first reply that stated one.
    pub(crate) last_modified: Option<SystemTime>,
    /// The object's checksum, once a reply carrying the whole object (or a HEAD) stated it.
    pub(crate) checksum: Option<Offered>,
    /// A HEAD for the checksum was sent (or is being): no other is.
    head_claimed: bool,
}

/// The [`Pinned`] state of one object, shared by its parts.
#[derive(Debug, Default)]
pub(crate) struct ObjectPin {
    pinned: Mutex<Pinned>,
    /// Signalled when the checksum becomes known.
    checksum_known: Notify,
}

impl ObjectPin {
    /// A pin for an object of `size` bytes (`None`: learned from the first reply).
    pub(crate) fn new(size: Option<u64>) -> Self {
        ObjectPin {
            pinned: Mutex::new(Pinned {
                size,
                ..Pinned::default()
            }),
            checksum_known: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Pinned> {
        self.pinned.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The object's checksum, if known yet.
    #[inline]
    pub(crate) fn checksum(&self) -> Option<Offered> {
        self.lock().checksum.clone()
    }

    /// Records what a reply carrying the whole object (or the HEAD) said about the checksum.
    /// A later reply (a resend after a mismatch) replaces it: its ETag pins the same object,
    /// and a value corrupted in transit must not fail the resend.
    /// Upload parts learned for a composite checksum stay: a reply restating the composite
    /// value says nothing new.
    pub(super) fn learn_checksum(&self, offered: Offered) {
        let mut p = self.lock();
        if let (Some(Offered::Parts(_)), Offered::Composite(_)) = (&p.checksum, &offered) {
            return;
        }
        p.checksum = Some(offered);
        drop(p);
        self.checksum_known.notify_waiters();
    }

    /// True for the one caller that is to send the object's HEAD for its checksum.
    pub(crate) fn claim_head(&self) -> bool {
        !std::mem::replace(&mut self.lock().head_claimed, true)
    }

    /// Whether the object's HEAD for its checksum was claimed (sent, or about to be).
    pub(crate) fn head_claimed(&self) -> bool {
        self.lock().head_claimed
    }

    /// Waits until the object's checksum is known (the object's first part learns it).
    pub(super) async fn checksum_resolved(&self) -> Offered {
        loop {
            let notified = self.checksum_known.notified();
            let mut notified = pin!(notified);
            // Registered before the check, so a signal between the two is not missed.
            notified.as_mut().enable();
            if let Some(offered) = self.checksum() {
                return offered;
            }
            notified.await;
        }
    }

    /// What is pinned now.
    #[inline]
    pub(crate) fn snapshot(&self) -> Pinned {
        self.lock().clone()
    }

    /// The pinned ETag and version, moved out (the size stays): for an object whose parts are
    /// all in.
    pub(crate) fn take(&self) -> Pinned {
        let mut p = self.lock();
        Pinned {
            etag: p.etag.take(),
            version_id: p.version_id.take(),
            size: p.size,
            last_modified: p.last_modified,
            checksum: p.checksum.clone(),
            head_claimed: p.head_claimed,
        }
    }

    /// The object's size, once given or learned.
    pub(crate) fn size(&self) -> Option<u64> {
        self.lock().size
    }

    /// Checks a success reply (its `ETag` and `x-amz-version-id`, and the object size it
    /// states) against what earlier replies pinned, pinning what was still open; its
    /// `Last-Modified` is looked up (by `last_modified`) only while none is kept. Returns true
    /// when this reply told the object's size for the first time.
    pub(super) fn check<'h>(
        &self,
        status: StatusCode,
        etag: Option<&[u8]>,
        version: Option<&[u8]>,
        last_modified: impl FnOnce() -> Option<&'h [u8]>,
        total: u64,
    ) -> Result<bool, Error> {
        let changed = |why: String| {
            Error::new(ErrorKind::Changed)
                .with_status(status)
                .with_message(why)
        };
        let mut p = self.lock();
        match (&p.etag, etag) {
            (Some(first), Some(now)) if **first != *now => {
                return Err(changed(format!(
                    "ETag changed from {:?} to {:?}",
                    String::from_utf8_lossy(first),
                    String::from_utf8_lossy(now)
                )));
            }
            (Some(_), None) => {
                return Err(changed(
                    "a reply has no ETag to match the first one's".to_owned(),
                ));
            }
            // A field value as parsed (visible ASCII, blanks, obs-text), so it can be sent
            // back in If-Match as it is.
            (None, Some(now)) => p.etag = Some(now.into()),
            _ => {}
        }
        let version = version.and_then(|v| std::str::from_utf8(v).ok());
        match (&p.version_id, version) {
            (Some(first), Some(now)) if first != now => {
                return Err(changed(format!(
                    "version changed from {first:?} to {now:?}"
                )));
            }
            (None, Some(now)) => p.version_id = Some(now.to_owned()),
            _ => {}
        }
        if p.last_modified.is_none() {
            // The first date stated is kept; one that does not parse is left out.
            p.last_modified = last_modified()
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| httpdate::parse_http_date(v.trim()).ok());
        }
        match p.size {
            Some(size) if size != total => Err(changed(format!(
                "size changed from {size} to {total} bytes"
            ))),
            Some(_) => Ok(false),
            None => {
                p.size = Some(total);
                Ok(true)
            }
        }
    }

    /// Pins the object as empty (S3 refused the first range of a 0-byte object); true the
    /// first time.
    pub(super) fn learn_empty(&self) -> bool {
        let mut p = self.lock();
        let first = p.size.is_none();
        p.size = Some(0);
        first
    }
}

/// A [`ErrorKind::LengthMismatch`] of a reply with `status`.
pub(super) fn length_error(status: StatusCode, why: String) -> Error {
    Error::new(ErrorKind::LengthMismatch)
        .with_status(status)
        .with_message(why)
}

/// True for an answer to a range of an empty object: S3's `416` with no `Content-Range`, or
/// `Content-Range: bytes */0`; or a `206` whose `Content-Range` gives the object 0 bytes, as
/// some servers send (s3rver: `bytes 0-0/0`, with a `Content-Length` of 1 and no byte).
pub(crate) fn is_empty_object_reply(status: StatusCode, content_range: Option<&[u8]>) -> bool {
    match status {
        StatusCode::RANGE_NOT_SATISFIABLE => {
            content_range.is_none_or(|v| v.trim_ascii() == b"bytes */0")
        }
        StatusCode::PARTIAL_CONTENT => content_range
            .and_then(|v| v.trim_ascii().strip_prefix(b"bytes "))
            .and_then(|v| v.rsplit(|&b| b == b'/').next())
            .is_some_and(|total| total == b"0"),
        _ => false,
    }
}

/// What one request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Asked {
    /// The part's first byte in the object.
    pub(crate) part_start: u64,
    /// The first byte asked for: the part's start, or later when resuming.
    pub(crate) from: u64,
    /// One past the last byte the part may hold.
    pub(crate) end: u64,
    /// The request carried `Range: bytes=from-(end-1)`.
    pub(crate) ranged: bool,
    /// The object's size, when known.
    pub(crate) size: Option<u64>,
}

/// What a success reply carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReplyShape {
    /// Body bytes the reply must carry.
    pub(crate) len: u64,
    /// The body is the whole object from byte 0 (discard any partial part), not the asked range.
    pub(crate) restart: bool,
    /// The object's size, as the reply states it.
    pub(crate) total: u64,
}

/// Checks a success reply's status, `Content-Length` and `Content-Range` against the request.
///
/// A `206` must carry exactly the asked range (clamped to the object's end) of an object of the
/// known size. A `200` is the whole object; it is accepted only where the whole object fits the
/// part (a part at byte 0 that covers the object — a server that ignores `Range` can serve
/// nothing larger).
///
/// # Errors
///
/// [`ErrorKind::LengthMismatch`] when the lengths or the range disagree with the request or the
/// declared size; [`ErrorKind::InvalidResponse`] for a success status other than 200 and 206, a
/// 206 to a GET that asked for no range, a 200 where a part of a larger object was asked for, or
/// a 200 of unknown size without `Content-Length`.
pub(crate) fn check_reply(
    status: StatusCode,
    content_length: Option<&[u8]>,
    content_range: Option<&[u8]>,
    asked: Asked,
) -> Result<ReplyShape, Error> {
    let mismatch = |why: String| length_error(status, why);
    let invalid = |why: String| {
        Error::new(ErrorKind::InvalidResponse)
            .with_status(status)
            .with_message(why)
    };
    let content_length = content_length.map(http1::parse_length);
    let shape = match status {
        StatusCode::OK => {
            let total = match (asked.size, content_length) {
                (Some(size), _) => size,
                (None, Some(Some(len))) => len,
                (None, _) => {
                    return Err(invalid(
                        "a whole-object reply of unknown size has no valid Content-Length".into(),
                    ))
                }
            };
            if asked.part_start != 0 || total > asked.end {
                return Err(invalid(format!(
                    "the server ignored Range: it sent the whole object ({total} bytes) for \
                     bytes {}-{}",
                    asked.from,
                    asked.end.saturating_sub(1)
                )));
            }
            ReplyShape {
                len: total,
                restart: true,
                total,
            }
        }
        StatusCode::PARTIAL_CONTENT if asked.ranged => {
            let range = content_range
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(parse_content_range);
            let shown = || content_range.map(String::from_utf8_lossy);
            let Some((first, last, total)) = range else {
                return Err(mismatch(format!(
                    "asked for bytes {}-{}, got Content-Range {:?}",
                    asked.from,
                    asked.end - 1,
                    shown()
                )));
            };
            let end = asked.end.min(total);
            let size_ok = asked.size.is_none_or(|s| s == total);
            if !size_ok || first != asked.from || asked.from >= end || last != end - 1 {
                return Err(mismatch(format!(
                    "asked for bytes {}-{} of {}, got Content-Range {:?}",
                    asked.from,
                    asked.end - 1,
                    asked
                        .size
                        .map_or_else(|| "an object of unknown size".to_owned(), |s| s.to_string()),
                    shown()
                )));
            }
            ReplyShape {
                len: last - first + 1,
                restart: false,
                total,
            }
        }
        other => {
            return Err(Error::new(ErrorKind::InvalidResponse)
                .with_status(other)
                .with_message("unexpected success status for this GET"))
        }
    };
    match content_length {
        Some(len) if len != Some(shape.len) => {
            let shown = len.map_or_else(|| "invalid".to_owned(), |l| l.to_string());
            Err(mismatch(format!(
                "Content-Length is {shown}, expected {}",
                shape.len
            )))
        }
        _ => Ok(shape),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        status: u16,
        cl: Option<&str>,
        cr: Option<&str>,
        asked: Asked,
    ) -> Result<(u64, bool, u64), ErrorKind> {
        check_reply(
            StatusCode::from_u16(status).unwrap(),
            cl.map(str::as_bytes),
            cr.map(str::as_bytes),
            asked,
        )
        .map(|s| (s.len, s.restart, s.total))
        .map_err(|e| e.kind())
    }

    /// A whole known-size object asked for in one GET, resuming at `from`.
    fn whole(from: u64, size: u64) -> Asked {
        Asked {
            part_start: 0,
            from,
            end: size,
            ranged: from > 0,
            size: Some(size),
        }
    }

    /// Part `[start, end)` of an object of `size` bytes (`None`: unknown).
    fn part(start: u64, end: u64, size: Option<u64>) -> Asked {
        Asked {
            part_start: start,
            from: start,
            end,
            ranged: true,
            size,
        }
    }

    #[test]
    fn whole_and_resumed_replies() {
        assert_eq!(
            check(200, Some("100"), None, whole(0, 100)),
            Ok((100, true, 100))
        );
        assert_eq!(check(200, None, None, whole(0, 100)), Ok((100, true, 100)));
        assert_eq!(check(200, Some("0"), None, whole(0, 0)), Ok((0, true, 0)));
        // A server that ignores Range sends everything again.
        assert_eq!(
            check(200, Some("100"), None, whole(40, 100)),
            Ok((100, true, 100))
        );
        assert_eq!(
            check(206, Some("60"), Some("bytes 40-99/100"), whole(40, 100)),
            Ok((60, false, 100))
        );
    }

    #[test]
    fn parts_and_probes() {
        let p = part(100, 200, Some(250));
        assert_eq!(
            check(206, Some("100"), Some("bytes 100-199/250"), p),
            Ok((100, false, 250))
        );
        // A probe learns the size; a short object ends inside the asked range.
        let probe = part(0, 100, None);
        assert_eq!(
            check(206, Some("100"), Some("bytes 0-99/1000"), probe),
            Ok((100, false, 1000))
        );
        assert_eq!(
            check(206, Some("7"), Some("bytes 0-6/7"), probe),
            Ok((7, false, 7))
        );
        // A server that ignores Range: fine if the whole object fits the part.
        assert_eq!(check(200, Some("7"), None, probe), Ok((7, true, 7)));
        assert_eq!(
            check(200, Some("101"), None, probe),
            Err(ErrorKind::InvalidResponse)
        );
        assert_eq!(
            check(200, None, None, probe),
            Err(ErrorKind::InvalidResponse)
        );
        // ...and never for a part other than the first.
        assert_eq!(
            check(200, Some("250"), None, p),
            Err(ErrorKind::InvalidResponse)
        );
        // Resuming inside a part asks for the rest of the part only.
        let resume = Asked { from: 150, ..p };
        assert_eq!(
            check(206, Some("50"), Some("bytes 150-199/250"), resume),
            Ok((50, false, 250))
        );
    }

    #[test]
    fn disagreements_are_typed_errors() {
        use ErrorKind::*;
        let w = whole(0, 100);
        assert_eq!(check(200, Some("101"), None, w), Err(LengthMismatch));
        assert_eq!(check(200, Some("+100"), None, w), Err(LengthMismatch));
        assert_eq!(check(200, Some("abc"), None, w), Err(LengthMismatch));
        let r = whole(40, 100);
        for cr in ["bytes 41-99/100", "bytes 40-99/101", "bytes 40-98/100"] {
            assert_eq!(check(206, None, Some(cr), r), Err(LengthMismatch), "{cr}");
        }
        assert_eq!(
            check(206, Some("59"), Some("bytes 40-99/100"), r),
            Err(LengthMismatch)
        );
        assert_eq!(check(206, Some("60"), None, r), Err(LengthMismatch));
        assert_eq!(
            check(206, Some("100"), Some("bytes 0-99/100"), w),
            Err(InvalidResponse)
        );
        assert_eq!(check(204, None, None, whole(0, 0)), Err(InvalidResponse));
        let p = part(100, 200, Some(250));
        for cr in [
            "bytes 100-198/250",
            "bytes 100-199/251",
            "bytes 0-99/250",
            "bytes */250",
        ] {
            assert_eq!(check(206, None, Some(cr), p), Err(LengthMismatch), "{cr}");
        }
    }

    #[test]
    fn empty_object_replies() {
        let r416 = StatusCode::RANGE_NOT_SATISFIABLE;
        assert!(is_empty_object_reply(r416, None));
        assert!(is_empty_object_reply(r416, Some(b"bytes */0")));
        assert!(!is_empty_object_reply(r416, Some(b"bytes */10")));
        assert!(!is_empty_object_reply(StatusCode::NOT_FOUND, None));
        let r206 = StatusCode::PARTIAL_CONTENT;
        assert!(is_empty_object_reply(r206, Some(b"bytes 0-0/0")));
        assert!(!is_empty_object_reply(r206, Some(b"bytes 0-0/10")));
        assert!(!is_empty_object_reply(r206, Some(b"bytes 0-0/100")));
        assert!(!is_empty_object_reply(r206, None));
        assert!(!is_empty_object_reply(StatusCode::OK, Some(b"bytes 0-0/0")));
    }

    #[test]
    fn the_pin_catches_a_changed_object() {
        let pin = ObjectPin::new(None);
        let check = |etag: Option<&str>, version: Option<&str>, total| {
            pin.check(
                StatusCode::PARTIAL_CONTENT,
                etag.map(str::as_bytes),
                version.map(str::as_bytes),
                || None,
                total,
            )
            .map_err(|e| e.kind())
        };
        assert_eq!(check(Some("\"a\""), Some("v1"), 10), Ok(true));
        assert_eq!(check(Some("\"a\""), None, 10), Ok(false));
        assert_eq!(
            check(Some("\"a\""), Some("v1"), 11),
            Err(ErrorKind::Changed)
        );
        assert_eq!(
            check(Some("\"b\""), Some("v1"), 10),
            Err(ErrorKind::Changed)
        );
        assert_eq!(check(None, Some("v1"), 10), Err(ErrorKind::Changed));
        assert_eq!(
            check(Some("\"a\""), Some("v2"), 10),
            Err(ErrorKind::Changed)
        );
        assert_eq!(pin.snapshot().version_id.as_deref(), Some("v1"));
    }
}
