//! `Content-Range` / `Content-Length` handling: a reply is accepted only when its headers
//! describe exactly the bytes that were asked for, and never panics.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use s3_ordered::{__internals as internals, ErrorKind};

#[derive(Debug, Arbitrary)]
struct Reply<'a> {
    status: u16,
    content_length: Option<&'a [u8]>,
    content_range: Option<&'a str>,
    part_start: u64,
    /// Offset of the first byte asked for, from the part's start.
    resume: u32,
    /// The part's length.
    len: u32,
    ranged: bool,
    size: Option<u64>,
}

fuzz_target!(|r: Reply<'_>| {
    if let Some(cr) = r.content_range {
        if let Some((first, last, total)) = internals::parse_content_range(cr) {
            assert!(first <= last && last < total);
            let again = format!("bytes {first}-{last}/{total}");
            assert_eq!(
                internals::parse_content_range(&again),
                Some((first, last, total))
            );
        }
    }
    // A well-formed request: `from` inside the part, the part non-empty.
    let len = u64::from(r.len).max(1);
    let Some(end) = r.part_start.checked_add(len) else {
        return;
    };
    let from = r.part_start + u64::from(r.resume) % len;
    let ranged = r.ranged || from > r.part_start;
    let result = internals::check_reply(
        r.status,
        r.content_length,
        r.content_range.map(str::as_bytes),
        r.part_start,
        from,
        end,
        ranged,
        r.size,
    );
    match &result {
        Ok((got, true, total)) => {
            // The whole object, from byte 0, fitting the part.
            assert_eq!(r.status, 200);
            assert_eq!(r.part_start, 0);
            assert_eq!(got, total);
            assert!(*total <= end);
            assert!(r.size.is_none_or(|s| s == *total));
        }
        Ok((got, false, total)) => {
            // Exactly the asked range, clamped at the object's end.
            assert_eq!(r.status, 206);
            assert!(ranged);
            assert!(r.size.is_none_or(|s| s == *total));
            let last = end.min(*total) - 1;
            assert_eq!(*got, last - from + 1);
            let cr = r.content_range.and_then(internals::parse_content_range);
            assert_eq!(cr, Some((from, last, *total)));
        }
        Err(e) => assert!(matches!(
            e.kind(),
            ErrorKind::LengthMismatch | ErrorKind::InvalidResponse | ErrorKind::InvalidRequest
        )),
    }
    if let (Ok((got, _, _)), Some(cl)) = (result.as_ref(), r.content_length) {
        assert_eq!(model_length(cl), Some(*got));
    }
});

/// `Content-Length` as RFC 9110 §8.6 lets a recipient read it: a decimal number, or a list of
/// equal ones, each with optional blanks (SP, HTAB) around it.
fn model_length(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?;
    let mut values = text.split(',').map(|v| {
        let v = v.trim_matches(|c| c == ' ' || c == '\t');
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        v.parse::<u64>().ok()
    });
    let first = values.next()??;
    for v in values {
        if v? != first {
            return None;
        }
    }
    Some(first)
}
