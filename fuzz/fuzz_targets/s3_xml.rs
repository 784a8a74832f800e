//! S3 XML error bodies and ListObjectsV2 pages: any input parses or is refused with a typed
//! error — no panic, no unbounded work — and what is accepted is consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use s3_ordered::{__internals as internals, ErrorKind};

fuzz_target!(|data: &[u8]| {
    let [code, message, request_id] = internals::parse_error_body(data);
    for field in [code, message, request_id].into_iter().flatten() {
        assert!(field.chars().count() <= 1024, "field not bounded");
    }
    match internals::parse_list_page(data) {
        Ok((_objects, token)) => {
            if let Some(t) = token {
                assert!(!t.is_empty(), "an empty continuation token would loop");
            }
        }
        Err(e) => assert_eq!(e.kind(), ErrorKind::InvalidResponse),
    }
});
