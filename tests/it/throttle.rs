//! Throttling: the adaptive concurrency limit against a server that sheds load above K requests
//! in flight, compared in the same run with a client configured with exactly K connections.

use std::time::{Duration, Instant};

use futures::StreamExt;
use s3_ordered::{Client, ClientBuilder, ObjectRef, ThrottleConfig};

use crate::s3_server::content;
use crate::shed_server::ShedServer;
use crate::support::{assert_quiescent, ACCESS_KEY, SECRET_KEY};

/// How long the server takes to serve one object.
const SERVICE: Duration = Duration::from_millis(5);
const LEN: usize = 1024;

fn builder(server: &ShedServer) -> ClientBuilder {
    crate::client_builder()
        .endpoint_url(format!("http://{}", server.addr))
        .static_credentials(ACCESS_KEY, SECRET_KEY, None)
}

fn key(i: u64) -> String {
    format!("obj/{i:06}")
}

/// Fetches objects `0..n` and checks that each arrives in order and right; returns the time.
async fn fetch_all(client: &Client, n: u64) -> Duration {
    let started = Instant::now();
    let mut stream = client.get_all("bucket", (0..n).map(|i| ObjectRef::new(key(i), LEN as u64)));
    let mut i = 0;
    while let Some(item) = stream.next().await {
        let obj = item.unwrap_or_else(|e| panic!("object {i}: {e}"));
        assert_eq!((obj.seq, obj.key.as_str()), (i, key(i).as_str()));
        assert!(
            obj.body.to_vec() == content(&obj.key, LEN),
            "bytes of {}",
            obj.key
        );
        i += 1;
    }
    assert_eq!(i, n);
    started.elapsed()
}

/// 32 connections against a server that takes K at once, beside exactly K connections.
async fn converges_on(k: usize, n: u64) {
    let oracle_server = ShedServer::start(k, SERVICE, LEN).await;
    let oracle = builder(&oracle_server).max_connections(k).build().unwrap();
    let oracle_time = fetch_all(&oracle, n).await;
    // One request per object, and any the oracle sent again on its own (a late head hedged on
    // a loaded machine, an idle connection found closed): within K connections, none throttled.
    let again = oracle.stats();
    let again = (again.hedges_sent + again.stale_connections) as usize;
    assert_eq!(
        oracle_server.throttled_and_requests(),
        (0, n as usize + again)
    );

    let server = ShedServer::start(k, SERVICE, LEN).await;
    let client = builder(&server).max_connections(32).build().unwrap();
    let time = fetch_all(&client, n).await;
    let (throttled, requests) = server.throttled_and_requests();
    let stats = client.stats();
    eprintln!(
        "K={k}: {requests} requests, {throttled} throttled ({:.1} %), {:.2}x the time of {k} \
         connections; {stats:?}",
        100.0 * throttled as f64 / requests as f64,
        time.as_secs_f64() / oracle_time.as_secs_f64()
    );
    assert_eq!(stats.throttled, throttled as u64);
    assert_eq!(stats.retries, 0, "throttled attempts are not retries");
    assert!(
        throttled as f64 <= 0.15 * requests as f64,
        "K={k}: {throttled} of {requests} requests throttled"
    );
    assert!(
        time.as_secs_f64() <= 1.5 * oracle_time.as_secs_f64(),
        "K={k}: {time:?} against {oracle_time:?} with {k} connections"
    );
    assert_quiescent(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_32_connections_against_a_server_that_takes_2() {
    converges_on(2, 500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_32_connections_against_a_server_that_takes_8() {
    converges_on(8, 2000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_follows_a_capacity_that_changes_both_ways() {
    let server = ShedServer::start(8, SERVICE, LEN).await;
    let client = builder(&server)
        .max_connections(32)
        .throttle(ThrottleConfig {
            recovery: Duration::from_millis(250),
            ..ThrottleConfig::default()
        })
        .build()
        .unwrap();
    // (K, how long) for each phase.
    let phases = [(8, 800), (2, 800), (16, 1500)].map(|(k, ms)| (k, Duration::from_millis(ms)));
    let total: Duration = phases.iter().map(|p| p.1).sum();

    // Sample the limit while the phases go by.
    let sampler = {
        let client = client.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut samples = Vec::new();
            while started.elapsed() < total {
                samples.push((started.elapsed(), client.stats().concurrency_limit));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            samples
        })
    };
    let capacity = server.capacity_handle();
    let switcher = tokio::spawn(async move {
        for (k, how_long) in phases {
            capacity.store(k, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(how_long).await;
        }
    });
    // Objects without end, until the last phase is over; each must be in order and right.
    let started = Instant::now();
    let keys = futures::stream::iter((0u64..).map(|i| ObjectRef::new(key(i), LEN as u64)));
    let mut stream = client.get_stream("bucket", keys);
    let mut i = 0;
    while started.elapsed() < total {
        let obj = stream
            .next()
            .await
            .expect("endless")
            .unwrap_or_else(|e| panic!("{i}: {e}"));
        assert_eq!((obj.seq, obj.key.as_str()), (i, key(i).as_str()));
        assert!(obj.body.to_vec() == content(&obj.key, LEN));
        i += 1;
    }
    drop(stream);
    switcher.await.unwrap();
    let samples = sampler.await.unwrap();

    // The limit in the last 40 % of each phase.
    let mut from = Duration::ZERO;
    let mut seen = Vec::new();
    for (k, how_long) in phases {
        let tail_start = from + how_long.mul_f64(0.6);
        let tail: Vec<usize> = samples
            .iter()
            .filter(|(t, _)| *t >= tail_start && *t < from + how_long)
            .map(|s| s.1)
            .collect();
        assert!(!tail.is_empty());
        seen.push((k, *tail.iter().min().unwrap(), *tail.iter().max().unwrap()));
        from += how_long;
    }
    eprintln!("{i} objects; (K, lowest, highest limit) late in each phase: {seen:?}");
    let [(_, lo8, hi8), (_, lo2, hi2), (_, _, hi16)] = seen[..] else {
        unreachable!()
    };
    assert!((4..=10).contains(&lo8) && hi8 <= 10, "near 8: {seen:?}");
    assert!(lo2 >= 1 && hi2 <= 3, "down to about 2: {seen:?}");
    assert!(hi16 >= 12, "back up toward 16: {seen:?}");
    assert_quiescent(&client).await;
}

/// A server that refuses everything for a while (a prefix not yet scaled): the client must not
/// hammer it. At the floor, each further throttled reply holds the request's slot for a backoff
/// that doubles, so the requests sent in the refusal are few, and every object arrives after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_refusing_everything_is_not_hammered() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use crate::support::{Mock, Reply};

    const REFUSE_FOR: Duration = Duration::from_millis(1500);
    let started = Instant::now();
    let refused = Arc::new(AtomicUsize::new(0));
    let r = Arc::clone(&refused);
    let mock = Mock::start(move |seen| {
        if started.elapsed() < REFUSE_FOR {
            r.fetch_add(1, Ordering::SeqCst);
            Reply {
                status: 503,
                ..Reply::ok(b"<Error><Code>SlowDown</Code></Error>".to_vec())
            }
        } else {
            Reply::ok(content(&seen.key, LEN))
        }
    })
    .await;
    let client = mock
        .builder()
        .max_connections(32)
        .throttle(ThrottleConfig {
            base_delay: Duration::from_millis(50),
            ..ThrottleConfig::default()
        })
        .build()
        .unwrap();
    let time = fetch_all(&client, 200).await;
    let refused = refused.load(Ordering::SeqCst);
    let stats = client.stats();
    eprintln!("{refused} refused requests in {REFUSE_FOR:?}; all in {time:?}; {stats:?}");
    assert!(time >= REFUSE_FOR);
    // 32 at first, then about one per backoff: 50 ms, 100 ms, 200 ms... (full jitter). Without
    // the backoff at the floor, one request at a time would be refused some hundreds of times.
    assert!(refused < 80, "{refused} requests refused");
    assert_eq!(stats.throttled, refused as u64);
    assert_eq!(stats.retries, 0);
    assert_quiescent(&client).await;
}

/// `max_concurrency` bounds the requests in flight below `max_connections`, with no throttling
/// at all, as the server counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_ceiling_bounds_requests_in_flight() {
    use crate::support::{Mock, Reply};

    let mock =
        Mock::start(|seen| Reply::ok(content(&seen.key, LEN)).delayed(Duration::from_millis(15)))
            .await;
    let client = mock
        .builder()
        .max_connections(8)
        .throttle(ThrottleConfig {
            max_concurrency: Some(3),
            ..ThrottleConfig::default()
        })
        .build()
        .unwrap();
    fetch_all(&client, 40).await;
    // Keys are "obj/NNNNNN": the mock groups requests by their first segment.
    assert_eq!(mock.counts.max_in_flight("obj"), 3);
    assert_eq!(client.stats().concurrency_limit, 3);
    assert_quiescent(&client).await;
}
