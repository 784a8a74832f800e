//! Budgets and malformed replies against the scripted mock.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use s3_ordered::{ErrorKind, ObjectRef, RetryConfig};

use crate::support::{assert_quiescent, content, Mock, Reply, Seen};

const SIZE: usize = 20_000;

/// Retries with millisecond backoff, so tests of failing objects stay fast.
pub fn fast_retries(max_attempts: u32) -> RetryConfig {
    RetryConfig {
        max_attempts,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(20),
        budget_capacity: 100_000,
        ..RetryConfig::default()
    }
}
/// 40 slabs: room for eight 20 KB objects (5 slabs each).
const MAX_BYTES: usize = 40 * 4096;

fn sized_reply(req: &Seen) -> Reply {
    Reply::ok(content(&req.key, SIZE)).delayed(Duration::from_millis(3))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_and_per_request_caps_hold_across_three_requests() {
    let mock = Mock::start(sized_reply).await;
    let client = mock
        .builder()
        .max_connections(5)
        .max_connections_per_request(3)
        .slab_size(4096)
        .max_bytes(MAX_BYTES as u64)
        .build()
        .unwrap();
    let run = |group: &'static str| {
        let client = client.clone();
        tokio::spawn(async move {
            let objects: Vec<_> = (0..60)
                .map(|i| ObjectRef::new(format!("{group}/{i}"), SIZE as u64))
                .collect();
            let mut s = client.get_all("bucket", objects);
            let mut n = 0u64;
            while let Some(item) = s.next().await {
                let obj = item.expect("ok");
                assert_eq!(obj.seq, n);
                assert_eq!(obj.key, format!("{group}/{n}"));
                assert!(obj.body.to_vec() == content(&obj.key, SIZE));
                n += 1;
            }
            n
        })
    };
    let sampler = {
        let client = client.clone();
        tokio::spawn(async move {
            let (mut sockets, mut slabs) = (0, 0);
            for _ in 0..2000 {
                let s = client.stats();
                sockets = sockets.max(s.open_connections);
                slabs = slabs.max(s.slabs_in_use);
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            (sockets, slabs)
        })
    };
    let handles = [run("a"), run("b"), run("c")];
    for h in handles {
        assert_eq!(h.await.unwrap(), 60);
    }
    let (sampled_sockets, sampled_slabs) = sampler.await.unwrap();
    assert!(
        sampled_sockets <= 5,
        "client reported {sampled_sockets} sockets"
    );
    assert!(
        sampled_slabs <= MAX_BYTES / 4096,
        "client held {sampled_slabs} slabs"
    );
    assert!(sampled_slabs > 0, "sampler saw no activity");
    let c = &mock.counts;
    let max_sockets = c.max_open_sockets.load(Ordering::SeqCst);
    assert!(max_sockets <= 5, "server saw {max_sockets} sockets at once");
    // The budget was actually exercised (otherwise the check above proves nothing).
    assert!(max_sockets >= 3, "only {max_sockets} sockets used");
    for g in ["a", "b", "c"] {
        let m = c.max_in_flight(g);
        assert!((1..=3).contains(&m), "request {g} had {m} GETs in flight");
    }
    assert!(client.stats().open_connections <= 5);
    // Connections were reused, not redialed per object.
    assert!(c.accepted.load(Ordering::SeqCst) <= 10, "{:?}", c);
    assert_quiescent(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_short_of_memory_waits_then_resumes() {
    let mock = Mock::start(|r: &Seen| Reply::ok(content(&r.key, 4096))).await;
    // Four slabs in all: four 4 KiB objects fill the budget.
    let client = mock
        .builder()
        .max_connections(2)
        .slab_size(4096)
        .max_bytes(4 * 4096)
        .build()
        .unwrap();
    let objects: Vec<_> = (0..8)
        .map(|i| ObjectRef::new(format!("m/{i}"), 4096))
        .collect();
    let mut s = client.get_all("bucket", objects);
    let mut held = Vec::new();
    for i in 0..4 {
        let obj = s.next().await.unwrap().expect("ok");
        assert_eq!(obj.seq, i);
        held.push(obj);
    }
    // Budget exhausted by bodies the consumer still holds: the fifth waits, it does not fail.
    let waited = tokio::time::timeout(Duration::from_millis(300), s.next()).await;
    assert!(
        waited.is_err(),
        "fifth object delivered while memory was full"
    );
    let stats = client.stats();
    assert_eq!(stats.slabs_in_use, 4);
    assert_eq!(stats.delivered_bytes_in_use, 4 * 4096, "{stats:?}");
    assert_eq!(stats.parts_waiting_for_memory, 1, "{stats:?}");
    assert_eq!(stats.requests_in_flight, 0, "{stats:?}");
    // Drop out of order; each drop lets one more object in.
    held.swap(0, 2);
    held.truncate(3);
    let fifth = s.next().await.unwrap().expect("ok");
    assert_eq!(fifth.seq, 4);
    drop(held);
    let rest: Vec<_> = s.map(|r| r.expect("ok").seq).collect().await;
    assert_eq!(rest, vec![5, 6, 7]);
    drop(fifth);
    assert_quiescent(&client).await;
    let stats = client.stats();
    assert_eq!(
        (stats.delivered_bytes_in_use, stats.parts_waiting_for_memory),
        (0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_shorter_or_longer_than_declared_are_typed_errors() {
    let mock = Mock::start(|r: &Seen| {
        let key = r.key.as_str();
        let body = content(key, 10_000);
        match key {
            // The object is now one byte longer: Content-Length disagrees with the declared size.
            "cl-long" => Reply::ok(content(key, 10_001)),
            // Chunked, and the body runs past the declared size.
            "chunked-long" => Reply {
                content_length: None,
                ..Reply::ok(content(key, 12_000))
            },
            // Chunked, and the body ends early.
            "chunked-short" => Reply {
                content_length: None,
                ..Reply::ok(content(key, 9_000))
            },
            // Content-Length is right but the connection breaks mid-body.
            "cut" => Reply {
                cut_after: Some(4_000),
                ..Reply::ok(body)
            },
            "server-error" => Reply {
                status: 500,
                ..Reply::ok(b"<Error><Code>InternalError</Code></Error>".to_vec())
            },
            _ => Reply::ok(body),
        }
    })
    .await;
    let client = mock
        .builder()
        .max_connections(2)
        .retry(fast_retries(3))
        .build()
        .unwrap();
    let keys: [&'static str; 8] = [
        "ok-1",
        "cl-long",
        "chunked-long",
        "ok-2",
        "chunked-short",
        "cut",
        "server-error",
        "ok-3",
    ];
    let results: Vec<_> = client
        .get_all("bucket", keys.map(|k| ObjectRef::new(k, 10_000)))
        .collect()
        .await;
    let kinds: Vec<_> = results
        .iter()
        .map(|r| r.as_ref().err().map(|e| e.kind()))
        .collect();
    assert_eq!(
        kinds,
        [
            None,
            Some(ErrorKind::LengthMismatch),
            Some(ErrorKind::LengthMismatch),
            None,
            Some(ErrorKind::LengthMismatch),
            Some(ErrorKind::Connection),
            Some(ErrorKind::Status),
            None,
        ]
    );
    for (r, k) in results.iter().zip(keys) {
        match r {
            Ok(o) => assert!(o.body.to_vec() == content(k, 10_000)),
            Err(e) => {
                assert_eq!(e.key(), Some(k));
                // Broken transfers and 5xx are retried to the limit; length errors are final.
                let attempts = if e.is_retryable() { 3 } else { 1 };
                assert_eq!(e.attempts(), attempts, "{e}");
                assert_eq!(e.earlier_attempts().len(), attempts as usize - 1, "{e}");
            }
        }
    }
    let cut = results[5].as_ref().unwrap_err();
    assert!(cut.to_string().contains("of 10000 bytes"), "{cut}");
    assert!(std::error::Error::source(cut).is_some());
    let e500 = results[6].as_ref().unwrap_err();
    assert_eq!(e500.code(), Some("InternalError"));
    assert!(e500.is_retryable());
    drop(results);
    assert_quiescent(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_is_a_connect_error_per_item() {
    // Port 1 (tcpmux) has no listener and lies outside the ephemeral range, so no other
    // test's server can ever be there (a freed ephemeral port could be reused by one).
    let addr = "127.0.0.1:1";
    let client = crate::client_builder()
        .endpoint_url(format!("http://{addr}"))
        .anonymous()
        .max_connections(2)
        .retry(fast_retries(3))
        .build()
        .unwrap();
    let results: Vec<_> = client
        .get_all("b", (0..4).map(|i| ObjectRef::new(format!("k{i}"), 1)))
        .collect()
        .await;
    assert_eq!(results.len(), 4);
    for r in &results {
        let e = r.as_ref().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
        assert!(e.is_retryable());
        assert_eq!(e.attempts(), 3, "{e}");
    }
    assert_eq!(client.stats().open_connections, 0);
    assert_quiescent(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_id_and_signature_headers_are_sent() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let mock = Mock::start(move |r: &Seen| {
        log.lock().unwrap().push(r.clone());
        Reply::ok(b"v".to_vec())
    })
    .await;
    let client = mock.builder().max_connections(1).build().unwrap();
    let objects = vec![
        ObjectRef::new("k", 1).with_version("3/L4kqtJl+cHQ "),
        ObjectRef::new("k", 1),
    ];
    let results: Vec<_> = client.get_all("bucket", objects).collect().await;
    assert!(results
        .iter()
        .all(|r| r.as_ref().unwrap().body.to_vec() == b"v"));
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].key, "k");
    assert_eq!(
        seen[0].query.as_deref(),
        Some("versionId=3%2FL4kqtJl%2BcHQ%20")
    );
    assert_eq!(seen[1].query, None);
    for r in seen.iter() {
        let auth = r.headers["authorization"].to_str().unwrap();
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDTESTEXAMPLE/"),
            "{auth}"
        );
        assert!(r.headers.contains_key("x-amz-content-sha256"));
        assert!(r.headers.contains_key("x-amz-date"));
        assert_eq!(r.headers["host"], mock.addr.to_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_endpoint_goes_through_tls_and_fails_cleanly_on_a_plain_server() {
    // The mock speaks plain HTTP: the rustls handshake fails, as a TLS error that is not retried.
    let mock = Mock::start(|r: &Seen| Reply::ok(content(&r.key, 10))).await;
    let client = crate::client_builder()
        .endpoint_url(format!("https://{}", mock.addr))
        .anonymous()
        .max_connections(2)
        .retry(fast_retries(2))
        .build()
        .unwrap();
    let results: Vec<_> = client
        .get_all(
            "bucket",
            (0..3).map(|i| ObjectRef::new(format!("k{i}"), 10)),
        )
        .collect()
        .await;
    assert_eq!(results.len(), 3);
    for r in &results {
        let e = r.as_ref().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Tls, "{e}");
        assert_eq!(e.attempts(), 1, "{e}");
        assert!(e.to_string().contains("handshake"), "{e}");
    }
    // The server saw the TLS attempts but never a request.
    assert!(mock.counts.accepted.load(Ordering::SeqCst) >= 1);
    assert_eq!(mock.counts.requests.load(Ordering::SeqCst), 0);
    assert_quiescent(&client).await;
}
