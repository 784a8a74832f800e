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
    resume_from: u64,
    size: u64,
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
    let result = internals::expected_reply_len(
        r.status,
        r.content_length,
        r.content_range.map(str::as_bytes),
        r.resume_from,
        r.size,
    );
    match &result {
        Ok((len, true)) => {
            assert_eq!(r.status, 200);
            assert_eq!(*len, r.size);
        }
        Ok((len, false)) => {
            assert_eq!(r.status, 206);
            assert!(r.resume_from > 0 && r.resume_from < r.size);
            assert_eq!(*len, r.size - r.resume_from);
            let cr = r.content_range.and_then(internals::parse_content_range);
            assert_eq!(cr, Some((r.resume_from, r.size - 1, r.size)));
        }
        Err(e) => assert!(matches!(
            e.kind(),
            ErrorKind::LengthMismatch | ErrorKind::InvalidResponse | ErrorKind::InvalidRequest
        )),
    }
    if let (Ok((len, _)), Some(cl)) = (result.as_ref(), r.content_length) {
        assert_eq!(
            std::str::from_utf8(cl)
                .ok()
                .and_then(|v| v.parse::<u64>().ok()),
            Some(*len)
        );
    }
});
