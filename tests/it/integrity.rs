//! Retries, resume, timeouts and integrity checks, each scripted deterministically.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use s3_ordered::{
    Checksum, ChecksumAlgorithm, ChecksumMode, Client, ErrorKind, NotVerified, Object, ObjectRef,
    RetryConfig, ThrottleConfig,
};

use crate::budgets::fast_retries;
use crate::support::{assert_quiescent, content, Mock, Reply, Seen};

const LEN: usize = 10_000;

/// A mock whose script also gets the attempt number (0-based) of the key, and a log of what
/// each request carried.
async fn scripted(
    script: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static,
) -> (Mock, Arc<Mutex<Vec<Seen>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let attempts = Arc::new(Mutex::new(std::collections::HashMap::<String, usize>::new()));
    let l = log.clone();
    let mock = Mock::start(move |r: &Seen| {
        l.lock().unwrap().push(r.clone());
        let n = {
            let mut a = attempts.lock().unwrap();
            let e = a.entry(r.key.clone()).or_insert(0);
            *e += 1;
            *e - 1
        };
        script(r, n)
    })
    .await;
    (mock, log)
}

fn client(mock: &Mock, retry: RetryConfig) -> Client {
    client_stalling_after(mock, retry, Duration::from_secs(10))
}

/// [`client`] with a stall timeout of `stall`.
fn client_stalling_after(mock: &Mock, retry: RetryConfig, stall: Duration) -> Client {
    mock.builder()
        .max_connections(2)
        .retry(retry)
        .stall_timeout(stall)
        .build()
        .unwrap()
}

async fn fetch(client: &Client, key: &str) -> Result<Object, s3_ordered::Error> {
    let mut results: Vec<_> = client
        .get_all("bucket", vec![ObjectRef::new(key, LEN as u64)])
        .collect()
        .await;
    results.pop().expect("one result")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_body_resumes_with_range_and_if_match() {
    let (mock, log) = scripted(|r, n| {
        let body = content(&r.key, LEN);
        match n {
            0 => Reply {
                cut_after: Some(4_000),
                ..Reply::ok(body)
            }
            .header("etag", "\"v1\""),
            _ => {
                assert_eq!(r.headers["range"], "bytes=4000-9999");
                assert_eq!(r.headers["if-match"], "\"v1\"");
                Reply {
                    status: 206,
                    ..Reply::ok(body[4_000..].to_vec())
                }
                .header("etag", "\"v1\"")
                .header("content-range", "bytes 4000-9999/10000")
            }
        }
    })
    .await;
    let client = client(&mock, fast_retries(3));
    let obj = fetch(&client, "k").await.expect("resumed");
    assert!(obj.body.to_vec() == content("k", LEN));
    assert_eq!(obj.etag.as_deref(), Some("\"v1\""));
    {
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 2);
        // Each attempt was signed afresh.
        assert!(log.iter().all(|r| r.headers.contains_key("authorization")));
    }
    assert_eq!(client.stats().retries, 1);
    drop(obj);
    assert_quiescent(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_ignoring_range_sends_the_whole_body_again() {
    let (mock, _log) = scripted(|r, n| {
        let body = content(&r.key, LEN);
        match n {
            0 => Reply {
                cut_after: Some(7_000),
                ..Reply::ok(body)
            },
            _ => Reply::ok(body), // 200, full body, Range ignored
        }
    })
    .await;
    let client = client(&mock, fast_retries(3));
    let obj = fetch(&client, "k").await.expect("whole body");
    assert!(obj.body.to_vec() == content("k", LEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_content_range_is_refused() {
    let (mock, _log) = scripted(|r, n| {
        let body = content(&r.key, LEN);
        match n {
            0 => Reply {
                cut_after: Some(4_000),
                ..Reply::ok(body)
            },
            _ => Reply {
                status: 206,
                ..Reply::ok(body[3_000..9_000].to_vec())
            }
            .header("content-range", "bytes 3000-8999/10000"),
        }
    })
    .await;
    let client = client(&mock, fast_retries(3));
    let e = fetch(&client, "k").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LengthMismatch, "{e}");
    assert_eq!(e.attempts(), 2);
    assert_quiescent(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etag_change_between_attempts_is_an_error_not_a_mix() {
    let (mock, _log) = scripted(|r, n| {
        let body = content(&r.key, LEN);
        match n {
            0 => Reply {
                cut_after: Some(5_000),
                ..Reply::ok(body)
            }
            .header("etag", "\"v1\""),
            // A server that ignores If-Match and serves a new version in full.
            _ => Reply::ok(content("other version", LEN)).header("etag", "\"v2\""),
        }
    })
    .await;
    let client = client(&mock, fast_retries(3));
    let e = fetch(&client, "k").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Changed, "{e}");
    assert!(e.to_string().contains("v2"), "{e}");

    // A server honouring If-Match answers 412.
    let (mock, _log) = scripted(|r, n| match n {
        0 => Reply {
            cut_after: Some(5_000),
            ..Reply::ok(content(&r.key, LEN))
        },
        _ => Reply {
            status: 412,
            ..Reply::ok(b"<Error><Code>PreconditionFailed</Code></Error>".to_vec())
        },
    })
    .await;
    let client = self::client(&mock, fast_retries(3));
    let e = fetch(&client, "k").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Changed, "{e}");
    assert_eq!(e.attempts(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksums_are_verified_by_default_and_a_mismatch_is_sent_again_once() {
    let crc32c = |key: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .encode(crc32c::crc32c(&content(key, LEN)).to_be_bytes())
    };
    let good = crc32c("bad");
    let (mock, log) = scripted(move |r, n| {
        let reply = Reply::ok(content(&r.key, LEN));
        match (r.key.as_str(), n) {
            ("k", _) => reply.header("x-amz-checksum-crc32c", crc32c("k")),
            // Corrupted in transit once: the resend is right.
            ("once", 0) => reply.header("x-amz-checksum-crc32c", "AAAAAA=="),
            ("once", _) => reply.header("x-amz-checksum-crc32c", crc32c("once")),
            ("bad", _) => reply.header("x-amz-checksum-crc32c", "AAAAAA=="),
            // Multipart composite checksum: not a whole-object CRC, and the HEAD for the first
            // upload part's checksum states none; delivered, saying so.
            _ => reply.header("x-amz-checksum-crc32c", "AAAAAA==-3"),
        }
    })
    .await;
    let client = mock
        .builder()
        .max_connections(1)
        .retry(fast_retries(4))
        .build()
        .unwrap();
    let keys = ["k", "bad", "multipart", "k"];
    let results: Vec<_> = client
        .get_all("bucket", keys.map(|k| ObjectRef::new(k, LEN as u64)))
        .collect()
        .await;
    let ok = results[0].as_ref().unwrap();
    assert_eq!(ok.checksum, Checksum::Verified(ChecksumAlgorithm::Crc32c));
    let e = results[1].as_ref().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ChecksumMismatch, "{e}");
    assert!(
        e.to_string().contains("CRC32C") && e.to_string().contains(&good),
        "{e}"
    );
    assert!(e.to_string().contains("AAAAAA=="), "{e}");
    assert_eq!(e.attempts(), 2, "{e}");
    let composite = results[2].as_ref().unwrap();
    assert_eq!(
        composite.checksum,
        Checksum::NotVerified(NotVerified::Composite(ChecksumAlgorithm::Crc32c))
    );
    assert!(results[3].is_ok());
    let stats = client.stats();
    // Four GETs, the resend of "bad", and the HEAD of "multipart"'s first upload part.
    assert_eq!(mock.counts.requests.load(Ordering::SeqCst), 6, "{stats:?}");
    assert_eq!(
        (
            stats.checksums_verified,
            stats.checksums_unavailable,
            stats.checksum_mismatches
        ),
        (2, 1, 2),
        "{stats:?}"
    );
    // Each mismatch closed its connection: "bad" took two new ones, on one connection slot.
    assert_eq!(mock.counts.accepted.load(Ordering::SeqCst), 3, "{stats:?}");
    assert!(log
        .lock()
        .unwrap()
        .iter()
        .all(|r| r.headers["x-amz-checksum-mode"] == "ENABLED"));

    // Corrupted once: the resend's bytes are delivered, verified.
    let obj = fetch(&client, "once").await.unwrap();
    assert_eq!(obj.checksum, Checksum::Verified(ChecksumAlgorithm::Crc32c));
    assert!(obj.body.to_vec() == content("once", LEN));

    // Off: nothing is asked for or checked.
    let plain = mock
        .builder()
        .checksum_mode(ChecksumMode::Off)
        .build()
        .unwrap();
    let obj = fetch(&plain, "bad").await.unwrap();
    assert_eq!(obj.checksum, Checksum::NotVerified(NotVerified::Off));
    assert!(!log
        .lock()
        .unwrap()
        .last()
        .unwrap()
        .headers
        .contains_key("x-amz-checksum-mode"));

    // Required: an object with only a composite checksum fails.
    let strict = mock
        .builder()
        .checksum_mode(ChecksumMode::Required)
        .build()
        .unwrap();
    let e = fetch(&strict, "multipart").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ChecksumMissing, "{e}");
    assert!(e.to_string().contains("composite CRC32C"), "{e}");
    assert!(fetch(&strict, "k").await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalls_time_out_and_retry_but_slow_healthy_bodies_do_not() {
    let (mock, _log) = scripted(|r, n| {
        let body = content(&r.key, LEN);
        match (r.key.as_str(), n) {
            // Stalls longer than the 600 ms stall timeout on the first attempt only.
            ("stall-once", 0) => Reply {
                stall_after: Some((3_000, Duration::from_secs(3))),
                ..Reply::ok(body)
            },
            ("stall-always", _) => Reply {
                stall_after: Some((3_000, Duration::from_secs(3))),
                ..Reply::ok(body)
            },
            ("slow-head", 0) => Reply::ok(body).delayed(Duration::from_secs(3)),
            // Healthy but slow: gaps well below the stall timeout (so that a loaded machine
            // cannot stretch them past it), total above it.
            ("slow-body", _) => Reply {
                stall_after: Some((5_000, Duration::from_millis(350))),
                ..Reply::ok(body)
            }
            .delayed(Duration::from_millis(350)),
            _ => Reply::ok(body),
        }
    })
    .await;
    let client = client_stalling_after(&mock, fast_retries(3), Duration::from_millis(600));
    let keys = ["stall-once", "stall-always", "slow-head", "slow-body"];
    let results: Vec<_> = client
        .get_all("bucket", keys.map(|k| ObjectRef::new(k, LEN as u64)))
        .collect()
        .await;
    assert!(results[0].as_ref().unwrap().body.to_vec() == content("stall-once", LEN));
    let e = results[1].as_ref().unwrap_err();
    assert_eq!((e.kind(), e.attempts()), (ErrorKind::Timeout, 3), "{e}");
    assert!(e.to_string().contains("stalled"), "{e}");
    assert!(results[2].is_ok(), "{:?}", results[2]);
    assert!(results[3].is_ok(), "{:?}", results[3]);
    drop(results);
    assert_quiescent(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_spends_no_attempts_and_fails_only_after_the_throttle_timeout() {
    let (mock, _log) = scripted(|r, n| {
        let slow = Reply {
            status: 503,
            ..Reply::ok(b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>".to_vec())
        };
        match (r.key.as_str(), n) {
            // More throttled replies than max_attempts allows failures.
            ("often", 0..=5) => slow,
            ("always", _) => slow,
            _ => Reply::ok(content(&r.key, LEN)),
        }
    })
    .await;
    let client = mock
        .builder()
        .max_connections(2)
        .retry(RetryConfig {
            budget_capacity: 0, // no retry budget at all: throttling must not need it
            ..fast_retries(3)
        })
        .throttle(ThrottleConfig {
            timeout: Duration::from_millis(300),
            base_delay: Duration::from_millis(2),
            max_delay: Duration::from_millis(20),
            ..ThrottleConfig::default()
        })
        .build()
        .unwrap();
    let ok = fetch(&client, "often")
        .await
        .expect("arrives after 6 throttled replies");
    assert!(ok.body.to_vec() == content("often", LEN));
    let started = std::time::Instant::now();
    let e = fetch(&client, "always").await.unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        (e.kind(), e.code()),
        (ErrorKind::Throttled, Some("SlowDown"))
    );
    assert!(e.throttled_attempts() > 3, "{e:?}");
    assert_eq!(e.attempts(), 0, "every attempt was throttled: {e:?}");
    assert!(!e.retry_budget_exhausted(), "{e:?}");
    assert!(e.to_string().contains("throttle timeout"), "{e}");
    let stats = client.stats();
    assert_eq!(
        stats.retries, 0,
        "throttled attempts are not retries: {stats:?}"
    );
    assert_eq!(stats.throttled, 6 + u64::from(e.throttled_attempts()));
    assert_eq!(stats.concurrency_limit, 1, "{stats:?}");
}

/// Up to 10 attempts per object, but a client-wide budget that pays for two retries in all and
/// never refills.
fn two_retries_in_all() -> RetryConfig {
    RetryConfig {
        budget_capacity: 10,
        budget_retry_cost: 5,
        budget_refill_per_sec: 0,
        ..fast_retries(10)
    }
}

async fn five_objects(client: &Client) -> Vec<Result<Object, s3_ordered::Error>> {
    client
        .get_all(
            "bucket",
            (0..5).map(|i| ObjectRef::new(format!("k{i}"), LEN as u64)),
        )
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_retry_budget_stops_a_retry_storm() {
    let (mock, log) = scripted(|_, _| Reply {
        status: 500,
        ..Reply::ok(b"<Error><Code>InternalError</Code></Error>".to_vec())
    })
    .await;
    let client = client(&mock, two_retries_in_all());
    let results = five_objects(&client).await;
    // 5 first attempts plus the 2 retries the budget pays for.
    assert_eq!(log.lock().unwrap().len(), 7);
    assert!(results
        .iter()
        .all(|r| r.as_ref().unwrap_err().kind() == ErrorKind::Status));
    let exhausted = results
        .iter()
        .filter(|r| r.as_ref().unwrap_err().retry_budget_exhausted())
        .count();
    assert!(exhausted >= 3, "{results:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_stops_a_storm_of_refused_connections() {
    // A port nobody listens on: every connection is refused.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let client = crate::client_builder()
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .static_credentials("AKID", "SECRET", None)
        .max_connections(2)
        .retry(two_retries_in_all())
        .build()
        .unwrap();
    let results = five_objects(&client).await;
    let errors: Vec<_> = results.iter().map(|r| r.as_ref().unwrap_err()).collect();
    assert!(
        errors.iter().all(|e| e.kind() == ErrorKind::Connect),
        "{errors:?}"
    );
    assert!(
        errors[0].to_string().contains("could not connect"),
        "{}",
        errors[0]
    );
    // 5 first attempts plus the 2 retries the budget pays for, and nothing throttled.
    let attempts: u32 = errors.iter().map(|e| e.attempts()).sum();
    assert_eq!(attempts, 7, "{errors:?}");
    assert!(errors.iter().filter(|e| e.retry_budget_exhausted()).count() >= 3);
    let stats = client.stats();
    assert_eq!((stats.retries, stats.throttled), (2, 0), "{stats:?}");
    assert_eq!(stats.concurrency_limit, 2, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_error_body_is_read_only_up_to_its_limit() {
    let mut body = b"<Error><Code>AccessDenied</Code><Message>".to_vec();
    body.extend(std::iter::repeat_n(b'x', 8 << 20));
    let (mock, _log) = scripted(move |_, _| Reply {
        status: 403,
        ..Reply::ok(body.clone())
    })
    .await;
    let client = client(&mock, fast_retries(2));
    for key in ["k", "j"] {
        let e = fetch(&client, key).await.unwrap_err();
        assert_eq!((e.kind(), e.attempts()), (ErrorKind::AccessDenied, 1));
    }
    // The body left unread past the limit makes each connection one not to reuse.
    assert_eq!(client.stats().connections_opened, 2, "{:?}", client.stats());
    assert_quiescent(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_that_hangs_in_the_tls_handshake_times_out() {
    // Accepts TCP, then never answers the ClientHello.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    let client = crate::client_builder()
        .endpoint_url(format!("https://{addr}"))
        .anonymous()
        .max_connections(1)
        .connect_timeout(Duration::from_millis(200))
        .retry(fast_retries(2))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let e = fetch(&client, "k").await.unwrap_err();
    assert_eq!((e.kind(), e.attempts()), (ErrorKind::Connect, 2), "{e}");
    assert!(e.to_string().contains("timed out"), "{e}");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    // Two 200 ms timeouts and a short backoff, not the 10 s default.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(client.stats().open_connections, 0);
    assert_quiescent(&client).await;
}
