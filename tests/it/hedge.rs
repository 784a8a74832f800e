//! Hedged requests: a GET whose response head is late is sent again on another connection,
//! and the first head wins — within every connection cap, never to a throttling server, never
//! to a server that is uniformly slow. And slow bodies: one below the rate floor is resumed
//! from its first missing byte on a new connection, at most twice per part.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;
use s3_ordered::{ChecksumMode, MinBodyRate, ObjectRef, ThrottleConfig};

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
    // Counted on the client's side: the server sees a loser's close only when it next reads.
    let sockets = mock.counts.max_client_sockets.load(Ordering::SeqCst);
    assert!((1..=8).contains(&sockets), "{sockets} sockets at once");
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
    // The three late replies were overtaken (within the timeout); on a loaded machine a normal
    // reply may be late too, and hedged.
    let stats = client.stats();
    assert!(stats.hedges_won >= 3, "{stats:?}");
    assert_eq!(
        stats.requests,
        OBJECTS as u64 + stats.hedges_sent,
        "{stats:?}"
    );
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

/// A floor of 64 KiB/s over 200 ms: a trickle of 1 KiB every 50 ms (20 KiB/s) is below it.
const FLOOR: MinBodyRate = MinBodyRate {
    bytes_per_second: 64 << 10,
    window: Duration::from_millis(200),
};
const PIECE: usize = 1024;
const EVERY: Duration = Duration::from_millis(50);

/// The GETs a slow-body server saw: `(key, first byte asked for, If-Match sent)`.
type Gets = std::sync::Arc<Mutex<Vec<(String, u64, bool)>>>;

/// A server of 48 KiB objects whose GETs trickle after 4 KiB: the first one of each object
/// (and of its second part, when `parts`), or every one when `always`.
async fn trickling_server(always: bool) -> (Mock, Gets) {
    let gets: Gets = Default::default();
    let log = gets.clone();
    let mock = Mock::start(move |r: &Seen| {
        let data = content(&r.key, 48 << 10);
        let from = r.range().map_or(0, |(a, _)| a);
        let first = {
            let mut log = log.lock().unwrap();
            let first = !log.iter().any(|(k, f, _)| *k == r.key && *f == from);
            let part_start = from / (16 << 10) * (16 << 10);
            let resumed = log.iter().any(|(k, f, _)| *k == r.key && *f == part_start);
            log.push((r.key.clone(), from, r.headers.contains_key("if-match")));
            first && !resumed
        };
        let reply = Reply::ranged(&data, r);
        if always || first {
            reply.trickled(4096, PIECE, EVERY)
        } else {
            reply
        }
    })
    .await;
    (mock, gets)
}

fn slow_body_client(mock: &Mock, floor: MinBodyRate, stream: bool) -> s3_ordered::Client {
    let b = mock
        .builder()
        .slab_size(4096)
        .part_size(16 << 10)
        .max_bytes(256 << 10)
        .max_connections(4)
        .checksum_mode(ChecksumMode::Off)
        .retry(fast_retries(1))
        .stall_timeout(Duration::from_secs(20))
        .min_body_rate(floor);
    let b = if stream {
        b.stream_threshold(32 << 10)
    } else {
        b
    };
    b.build().unwrap()
}

/// Fetches `keys` (48 KiB each, streaming or not) and checks every byte.
async fn fetch_checked(client: &s3_ordered::Client, keys: &[&str], stream: bool) {
    let refs: Vec<_> = keys.iter().map(|k| ObjectRef::new(*k, 48 << 10)).collect();
    let mut results = client.get_all("bucket", refs);
    for key in keys {
        let mut obj = results.next().await.expect("an object").unwrap();
        assert_eq!(obj.key, *key);
        assert_eq!(obj.body.is_streaming(), stream);
        let mut bytes = Vec::new();
        if obj.body.is_streaming() {
            while let Some(chunk) = obj.body.next_chunk().await {
                bytes.extend_from_slice(&chunk.unwrap());
            }
        } else {
            bytes = obj.body.to_vec();
        }
        assert!(bytes == content(key, 48 << 10), "{key}: wrong bytes");
    }
    assert!(results.next().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_body_is_resumed_on_a_new_connection() {
    for stream in [false, true] {
        // At 20 KiB/s each trickling part would take 0.6 s; 3 parts of 2 objects.
        let (mock, gets) = trickling_server(false).await;
        let client = slow_body_client(&mock, FLOOR, stream);
        fetch_checked(&client, &["s/a", "s/b"], stream).await;
        let stats = client.stats();
        assert_eq!(stats.slow_bodies_resumed, 6, "stream {stream}: {stats:?}");
        assert_eq!(stats.retries, 0, "a resume spends no attempt: {stats:?}");
        let gets = gets.lock().unwrap().clone();
        assert_eq!(gets.len(), 12, "{gets:?}");
        // Each resume asked for the part's first missing byte, past the 4 KiB sent at once,
        // with If-Match, on a connection of its own.
        for (key, from, if_match) in gets.iter().filter(|(_, f, _)| f % (16 << 10) != 0) {
            let offset = from % (16 << 10);
            assert!(
                offset >= 4096 && offset % PIECE as u64 == 0,
                "{key} from {from}"
            );
            assert!(if_match, "{key} from {from} without If-Match");
        }
        let accepted = mock.counts.accepted.load(Ordering::SeqCst);
        assert!(accepted >= 6 + 2, "{accepted} connections for 6 resumes");
        // A resume replaces its slow connection, closed first: never a socket past the pool.
        let sockets = mock.counts.max_client_sockets.load(Ordering::SeqCst);
        assert!((1..=4).contains(&sockets), "{sockets} sockets at once");
        assert_quiescent(&client).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uniformly_slow_body_is_resumed_twice_then_read_to_its_end() {
    // Every reply trickles: each part gives up on the floor after two resumes, and its bytes
    // still come, within the stall timeout.
    let (mock, gets) = trickling_server(true).await;
    let client = slow_body_client(&mock, FLOOR, false);
    fetch_checked(&client, &["u/a"], false).await;
    let stats = client.stats();
    assert_eq!(stats.slow_bodies_resumed, 3 * 2, "{stats:?}");
    assert_eq!(gets.lock().unwrap().len(), 3 * 3);
    assert_quiescent(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_floor_a_trickling_body_is_waited_for() {
    let (mock, gets) = trickling_server(false).await;
    let client = slow_body_client(&mock, MinBodyRate::off(), false);
    fetch_checked(&client, &["o/a"], false).await;
    assert_eq!(client.stats().slow_bodies_resumed, 0);
    assert_eq!(gets.lock().unwrap().len(), 3, "one GET per part");
    assert_quiescent(&client).await;
}
