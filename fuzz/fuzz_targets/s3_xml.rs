//! S3 XML error bodies, ListObjectsV2 pages and CreateSession replies: any input parses or is
//! refused with a typed error — no panic, no unbounded work — and what is accepted is
//! consistent.
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
    match internals::parse_create_session(data) {
        Ok(keys) => {
            assert!(!keys.access_key_id().is_empty() && !keys.secret_access_key().is_empty());
            assert!(keys.session_token().is_some_and(|t| !t.is_empty()));
            assert!(keys.expiry().is_some(), "a session always expires");
        }
        Err(e) => assert_eq!(e.kind(), ErrorKind::InvalidResponse),
    }
});
