//! Request options: requester pays, the expected bucket owner and an SSE-C key reach the
//! server on every request they apply to, signed (the server checks every signed field), and
//! invalid ones are configuration errors.

use std::time::Duration;

use futures::StreamExt;
use s3_ordered::ObjectRef;

use crate::support::{content, S3Server};

const KEY32: &[u8; 32] = b"0123456789abcdef0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_carries_the_options_signed() {
    let server = S3Server::start().await;
    for i in 0..20 {
        let key = format!("k{i}");
        server.put("bkt", &key, &content(&key, 3000 * i));
    }
    let client = server
        .builder()
        .requester_pays(true)
        .expected_bucket_owner("123456789012")
        .sse_customer_key(KEY32.to_vec())
        .part_size(64 << 10)
        .build()
        .unwrap();
    let listed: Vec<ObjectRef> = client.list("bkt", "").map(|r| r.unwrap()).collect().await;
    assert_eq!(listed.len(), 20);
    let mut results = client.get_all("bkt", listed);
    while let Some(r) = results.next().await {
        let o = r.unwrap_or_else(|e| panic!("{}", e.with_causes()));
        let i: usize = o.key[1..].parse().unwrap();
        assert!(o.body.to_vec() == content(&o.key, 3000 * i), "{}", o.key);
    }
    client.head("bkt", "k3", None).await.unwrap();

    let requests = server.requests();
    assert!(requests.len() > 21, "parts as well: {}", requests.len());
    for r in &requests {
        let signed = r.signed_headers();
        assert!(!signed.is_empty(), "signed");
        assert_eq!(
            r.header("x-amz-request-payer"),
            Some("requester"),
            "{}",
            r.uri
        );
        assert_eq!(
            r.header("x-amz-expected-bucket-owner"),
            Some("123456789012")
        );
        for name in ["x-amz-request-payer", "x-amz-expected-bucket-owner"] {
            assert!(signed.contains(&name), "{name} signed: {signed:?}");
        }
        let listing = r.uri.query().is_some_and(|q| q.contains("list-type=2"));
        let sse = [
            ("x-amz-server-side-encryption-customer-algorithm", "AES256"),
            (
                "x-amz-server-side-encryption-customer-key",
                "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
            ),
            (
                // base64 of the key's MD5 (computed with Python's hashlib).
                "x-amz-server-side-encryption-customer-key-md5",
                "hRasmdxgYDKV3nvbahU1MA==",
            ),
        ];
        for (name, value) in sse {
            if listing {
                assert_eq!(r.header(name), None, "no SSE-C on a listing");
            } else {
                assert_eq!(r.header(name), Some(value), "{} {}", r.method, r.uri);
                assert!(signed.contains(&name), "{name} signed: {signed:?}");
            }
        }
    }
}

#[test]
fn invalid_options_are_configuration_errors() {
    let b = || crate::client_builder().anonymous();
    let e = b().expected_bucket_owner("12345").build().unwrap_err();
    assert_eq!(e.field(), "expected_bucket_owner");
    let e = b().sse_customer_key(vec![0u8; 16]).build().unwrap_err();
    assert_eq!(e.field(), "sse_customer_key");
    let hedge = s3_ordered::HedgeConfig {
        quantile: 1.0,
        ..Default::default()
    };
    assert_eq!(b().hedge(hedge).build().unwrap_err().field(), "hedge");
    let rate = |window| s3_ordered::MinBodyRate {
        bytes_per_second: 1,
        window,
    };
    let e = b().min_body_rate(rate(Duration::from_millis(99)));
    assert_eq!(e.build().unwrap_err().field(), "min_body_rate.window");
    b().min_body_rate(rate(Duration::from_millis(100)))
        .build()
        .unwrap();
    // Off, the window does not matter.
    let off = s3_ordered::MinBodyRate {
        window: Duration::ZERO,
        ..s3_ordered::MinBodyRate::off()
    };
    b().min_body_rate(off).build().unwrap();
    // The key never shows.
    let builder = b().sse_customer_key(KEY32.to_vec());
    let shown = format!("{builder:?}");
    assert!(!shown.contains("0123456789abcdef"), "{shown}");
    let client = builder.build().unwrap();
    let shown = format!("{client:?}");
    assert!(
        !shown.contains("0123456789abcdef") && !shown.contains("MDEy"),
        "{shown}"
    );
}
