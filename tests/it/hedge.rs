//! Hedged requests: a GET whose response head is late is sent again on another connection,
//! and the first head wins — within every connection cap, never to a throttling server, never
//! to a server that is uniformly slow.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;
use s3_ordered::{ObjectRef, ThrottleConfig};

use crate::budgets::fast_retries;
use crate::support::{assert_quiescent, content, Mock, Reply, Seen};

const LEN: usize = 4096;
const OBJECTS: usize = 200;
/// Objects whose first GET is late (after more than enough replies to learn the threshold).
const LATE: [usize; 3] = [100, 130, 160];

fn key(i: usize) -> String {
    format!("k/{i:04}")
}

/// A server that answers every GET after `normal`, except the first GET of the `LATE` keys
/// (after `late`), and — when `throttle_at` is given — the first GET of that key with a 503.
async fn tail_server(normal: Duration, late: Duration, throttle_at: Option<usize>) -> Mock {
    let seen: Mutex<HashMap<String, usize>> = Mutex::new(HashMap::new());
    Mock::start(move |r: &Seen| {
        let n = {
            let mut seen = seen.lock().unwrap();
            let n = seen.entry(r.key.clone()).or_default();
            *n += 1;
            *n
        };
        let i: usize = r.key[2..].parse().unwrap_or(usize::MAX);
        if throttle_at == Some(i) && n == 1 {
            let mut reply = Reply::ok(b"<Error><Code>SlowDown</Code></Error>".to_vec());
            reply.status = 503;
            return reply;
        }
        let delay = if LATE.contains(&i) && n == 1 {
            late
        } else {
            normal
        };
        Reply::ok(content(&r.key, LEN)).delayed(delay)
    })
    .await
}

/// A client whose budget holds 16 objects, so a late object soon holds up the others.
fn client(mock: &Mock, per_request: usize) -> s3_ordered::Client {
    mock.builder()
        .slab_size(LEN)
        .max_bytes(16 * LEN as u64)
        .max_connections(8)
        .max_connections_per_request(per_request)
        .retry(fast_retries(3))
        .throttle(ThrottleConfig {
            // Once cut, the limit stays below its ceiling for the whole test.
            recovery: Duration::from_secs(600),
            base_delay: Duration::from_millis(1),
            ..ThrottleConfig::default()
        })
        .build()
        .unwrap()
}

/// Every object, in order, with its bytes (each dropped once checked: held bodies count
/// against the budget).
async fn fetch_all(client: &s3_ordered::Client) {
    let keys: Vec<_> = (0..OBJECTS)
        .map(|i| ObjectRef::new(key(i), LEN as u64))
        .collect();
    let mut results = client.get_all("bucket", keys);
    let mut n = 0;
    while let Some(r) = results.next().await {
        let obj = r.unwrap();
        assert_eq!(obj.key, key(n));
        assert!(obj.body.to_vec() == content(&key(n), LEN), "{}", obj.key);
        n += 1;
    }
    assert_eq!(n, OBJECTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_reply_is_hedged_and_the_hedge_wins() {
    // The late replies would take 20 s; the hedges answer at once.
    let mock = tail_server(Duration::from_millis(1), Duration::from_secs(20), None).await;
    let client = client(&mock, 8);
    let fetched = tokio::time::timeout(Duration::from_secs(10), fetch_all(&client)).await;
    assert!(fetched.is_ok(), "the late replies were waited for");
    let stats = client.stats();
    assert_eq!((stats.hedges_sent, stats.hedges_won), (3, 3), "{stats:?}");
    assert_eq!(stats.requests, OBJECTS as u64 + 3, "{stats:?}");
    // The losers' connections were closed, not kept: nothing is busy, and never more sockets
    // than max_connections.
    assert!(stats.open_connections <= 8, "{stats:?}");
    let sockets = mock.counts.max_open_sockets.load(Ordering::SeqCst);
    assert!(sockets <= 8, "{sockets} sockets at once");
    assert_quiescent(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hedges_stay_within_the_requests_connections() {
    // At 10 ms a reply, the budget behind a late object fills after the hedging threshold:
    // the hedge waits until the request's other connection is free.
    let mock = tail_server(Duration::from_millis(10), Duration::from_secs(20), None).await;
    let client = client(&mock, 2);
    // The connections the client uses, sampled through the run (the server still counts the
    // losers' requests, which it sleeps through after their connections closed).
    let sampler = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut busy = 0;
            loop {
                busy = busy.max(client.stats().busy_connections);
                tokio::time::sleep(Duration::from_micros(200)).await;
                if client.stats().objects == OBJECTS as u64 {
                    return busy;
                }
            }
        })
    };
    tokio::time::timeout(Duration::from_secs(10), fetch_all(&client))
        .await
        .expect("hedged");
    let stats = client.stats();
    assert_eq!(stats.hedges_won, 3, "{stats:?}");
    let busy = sampler.await.unwrap();
    assert!((1..=2).contains(&busy), "{busy} connections busy at once");
    assert_quiescent(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttling_server_gets_no_hedges() {
    // The same late replies (300 ms), after the server throttled once: the limit is below its
    // ceiling, so they are waited for.
    let mock = tail_server(
        Duration::from_millis(1),
        Duration::from_millis(300),
        Some(80),
    )
    .await;
    let client = client(&mock, 8);
    fetch_all(&client).await;
    let stats = client.stats();
    assert_eq!(stats.throttled, 1, "{stats:?}");
    assert_eq!(stats.hedges_sent, 0, "{stats:?}");
    assert_eq!(stats.requests, OBJECTS as u64 + 1, "{stats:?}");
    assert_quiescent(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uniformly_slow_server_is_not_hedged() {
    // Every reply after 100 ms: above the floor, and the threshold half as much again.
    let mock = tail_server(Duration::from_millis(100), Duration::from_millis(100), None).await;
    let client = client(&mock, 8);
    fetch_all(&client).await;
    let stats = client.stats();
    assert_eq!(
        (stats.hedges_sent, stats.requests),
        (0, OBJECTS as u64),
        "{stats:?}"
    );
    assert_quiescent(&client).await;
}
