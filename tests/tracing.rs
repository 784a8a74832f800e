//! What the client tells a `tracing` subscriber: requests, throttling, retries and connections —
//! and never a secret.
//!
//! A test binary of its own: `tracing` caches per call site whether anyone is interested, so a
//! test running beside this one on another thread, without a subscriber, could hide events from
//! it.

#[path = "support/express_server.rs"]
#[allow(dead_code)]
mod express_server;
#[path = "support/quiescent.rs"]
#[allow(dead_code)]
mod quiescent;
#[path = "support/s3_server.rs"]
#[allow(dead_code)]
mod s3_server;

/// Where `S3Server::builder` starts.
#[allow(dead_code)]
fn client_builder() -> s3_ordered::ClientBuilder {
    s3_ordered::Client::builder()
}
#[path = "support/sockets.rs"]
#[allow(dead_code)] // client_socket_rows is the fault suite's
mod sockets;
#[path = "it/support.rs"]
#[allow(dead_code, unused_imports)]
mod support;

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use s3_ordered::{ObjectRef, RetryConfig, ThrottleConfig};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

use crate::support::{content, Mock, Reply, ACCESS_KEY, SECRET_KEY};

const LEN: usize = 5_000;
const SESSION_TOKEN: &str = "session-token-that-must-not-leak";

/// Every event and span, as one line of text each: level, target, name or message, fields.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<String>>>);

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={value:?}", field.name());
    }
}

impl<S: Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let m = event.metadata();
        let mut f = Fields(format!("{} {}:", m.level(), m.target()));
        event.record(&mut f);
        self.0.lock().unwrap().push(f.0);
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, _: &Id, _: Context<'_, S>) {
        let mut f = Fields(format!("SPAN {}:", attrs.metadata().name()));
        attrs.record(&mut f);
        self.0.lock().unwrap().push(f.0);
    }

    fn on_record(&self, _: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut f = Fields("RECORD:".to_owned());
        values.record(&mut f);
        self.0.lock().unwrap().push(f.0);
    }
}

/// A subscriber of this thread that captures what is at `level` or above, until the guard
/// is dropped.
fn capturing(level: LevelFilter) -> (Capture, tracing::subscriber::DefaultGuard) {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone().with_filter(level));
    (capture, tracing::subscriber::set_default(subscriber))
}

// A current-thread runtime: the subscriber set for this thread sees every task of the test.
#[tokio::test]
async fn a_subscriber_sees_throttling_retries_and_connections_and_no_secret() {
    let (capture, _guard) = capturing(LevelFilter::TRACE);

    let attempts = Arc::new(Mutex::new(std::collections::HashMap::<String, u32>::new()));
    let mock = Mock::start(move |r| {
        let n = {
            let mut a = attempts.lock().unwrap();
            let n = a.entry(r.key.clone()).or_insert(0);
            *n += 1;
            *n - 1
        };
        match (r.key.as_str(), n) {
            ("slow", 0 | 1) => Reply {
                status: 503,
                ..Reply::ok(b"<Error><Code>SlowDown</Code></Error>".to_vec())
            },
            ("broken", 0) => Reply {
                cut_after: Some(1000),
                ..Reply::ok(content(&r.key, LEN))
            },
            _ => Reply::ok(content(&r.key, LEN)),
        }
    })
    .await;
    let client = Mock::builder(&mock)
        .static_credentials(ACCESS_KEY, SECRET_KEY, Some(SESSION_TOKEN.to_owned()))
        .max_connections(2)
        .retry(RetryConfig {
            base_delay: Duration::from_millis(1),
            ..RetryConfig::default()
        })
        .throttle(ThrottleConfig {
            base_delay: Duration::from_millis(2),
            ..ThrottleConfig::default()
        })
        .build()
        .unwrap();
    let keys = ["fine", "slow", "broken"].map(|k| ObjectRef::new(k, LEN as u64));
    let results: Vec<_> = client.get_all("bucket", keys).collect().await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    drop(results);
    drop(client);
    // Until the connections' tasks have seen their sockets close, however loaded the machine.
    for _ in 0..1000 {
        let closed = capture
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("connection closed"));
        if closed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let lines = capture.0.lock().unwrap().clone();
    let has = |needle: &str| lines.iter().any(|l| l.contains(needle));
    for needle in [
        "SPAN get_all: bucket=bucket",
        "SPAN part: key=slow seq=1 part=0",
        "DEBUG s3_ordered::fetch: message=GET sent",
        "DEBUG s3_ordered::fetch: message=GET done status=200",
        "DEBUG s3_ordered::fetch: message=throttled status=503 code=\"SlowDown\"",
        "INFO s3_ordered::fetch: message=throttled: concurrency limit lowered",
        "INFO s3_ordered::retry: message=retrying after a transient failure attempt=1",
        "body broke off",
        "DEBUG s3_ordered::conn: message=connection opened",
        "DEBUG s3_ordered::conn: message=connection closed",
    ] {
        assert!(has(needle), "no {needle:?} in:\n{}", lines.join("\n"));
    }
    for secret in [
        SECRET_KEY,
        SESSION_TOKEN,
        "Signature=",
        "Credential=",
        "AWS4-HMAC",
    ] {
        assert!(!has(secret), "{secret:?} leaked:\n{}", lines.join("\n"));
    }
    // Nothing per byte: a handful of lines per request (the signer's own trace is left out).
    let ours: Vec<_> = lines.iter().filter(|l| l.contains("s3_ordered")).collect();
    assert!(ours.len() < 40, "{} lines:\n{ours:#?}", ours.len());
}

// One thread, so the subscriber set here sees every event of the fetch.
#[tokio::test]
async fn s3_express_sessions_are_told_of_but_never_shown() {
    use express_server::{ExpressOptions, ExpressServer, EXPRESS_BUCKET};
    let (capture, _guard) = capturing(LevelFilter::TRACE);
    let objects: Vec<(String, Vec<u8>)> = (0..10)
        .map(|i| {
            let key = format!("x/{i}");
            let body = content(&key, 3000);
            (key, body)
        })
        .collect();
    let server = ExpressServer::start(objects.clone(), ExpressOptions::default()).await;
    let client = client_builder()
        .endpoint_url(server.url())
        .static_credentials(ACCESS_KEY, SECRET_KEY, None)
        .max_connections(2)
        .build()
        .unwrap();
    let refs = || -> Vec<ObjectRef> {
        objects
            .iter()
            .map(|(k, b)| ObjectRef::new(k.clone(), b.len() as u64))
            .collect()
    };
    let fetched: Vec<_> = client.get_all(EXPRESS_BUCKET, refs()).collect().await;
    assert!(fetched.iter().all(Result::is_ok), "{fetched:?}");
    server.invalidate_sessions();
    let again: Vec<_> = client.get_all(EXPRESS_BUCKET, refs()).collect().await;
    assert!(again.iter().all(Result::is_ok), "{again:?}");
    assert!(server.bad().is_empty(), "{:?}", server.bad());

    // The client's lines: not the stand-in's own signer, which traces in this process too.
    let lines: Vec<String> = capture
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|l| !l.contains("aws_sigv4"))
        .cloned()
        .collect();
    let has = |needle: &str| lines.iter().any(|l| l.contains(needle));
    for needle in [
        "DEBUG s3_ordered::fetch: message=S3 Express session created bucket=\"data--use1-az4--x-s3\"",
        "DEBUG s3_ordered::fetch: message=the S3 Express session was refused; sending again with a new one status=403 code=\"InvalidToken\"",
    ] {
        assert!(has(needle), "no {needle:?} in:\n{}", lines.join("\n"));
    }
    // The stand-in's session keys and tokens (see express_server.rs), and the client's.
    for secret in [
        SECRET_KEY,
        "ASIASESSION",
        "session/secret",
        "TOKEN1",
        "TOKEN2",
        "Signature=",
        "Credential=",
    ] {
        assert!(!has(secret), "{secret:?} leaked:\n{}", lines.join("\n"));
    }
}

// One thread, so the subscriber set here sees the engine's events.
#[tokio::test]
async fn a_consumer_that_holds_the_budget_is_warned_and_one_that_reads_on_is_not() {
    let (capture, _guard) = capturing(LevelFilter::WARN);
    let mock = Mock::start(|r| Reply::ok(content(&r.key, 4096))).await;
    let client = Mock::builder(&mock)
        .max_connections(2)
        .slab_size(4096)
        .max_bytes(2 * 4096)
        .build()
        .unwrap();
    let objects = |n: usize| -> Vec<_> {
        (0..n)
            .map(|i| ObjectRef::new(format!("w/{i}"), 4096))
            .collect()
    };
    // Read as it goes: the budget is refilled at once, and nothing is said.
    let read: Vec<_> = client
        .get_all("bucket", objects(6))
        .map(|r| r.expect("ok").body.size())
        .collect()
        .await;
    assert_eq!(read, [4096; 6]);
    let lines = || capture.0.lock().unwrap().clone();
    assert_eq!(lines(), Vec::<String>::new());
    // Holds both bodies, then asks for a third.
    let mut s = client.get_all("bucket", objects(3));
    let held = vec![
        s.next().await.unwrap().unwrap(),
        s.next().await.unwrap().unwrap(),
    ];
    let waited = tokio::time::timeout(Duration::from_secs(7), s.next()).await;
    assert!(
        waited.is_err(),
        "the third object came while memory was held"
    );
    let said = lines();
    assert!(
        said.iter()
            .any(|l| l.starts_with("WARN s3_ordered::engine:")
                && l.contains("bodies already handed out hold")
                && l.contains("held_by_consumer=8192")
                && l.contains("max_bytes=8192")
                && l.contains("key=\"w/2\"")),
        "{said:?}"
    );
    drop(held);
    assert_eq!(s.next().await.unwrap().unwrap().seq, 2);
}
