//! Large objects: ranged parts, streaming bodies, sizes learned without HEAD, one version per
//! body, and the budget held while a body streams (issue: parts and streaming).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use s3_ordered::{ChecksumMode, Client, ErrorKind, Object, ObjectRef};

use crate::budgets::fast_retries;
use crate::support::{assert_quiescent, content, Mock, Reply, S3Server};

const SLAB: usize = 4096;
/// Four slabs a part.
const PART: u64 = 4 * SLAB as u64;
/// Sixteen slabs: four parts.
const BUDGET: u64 = 16 * SLAB as u64;

fn small_budget(b: s3_ordered::ClientBuilder) -> s3_ordered::ClientBuilder {
    b.slab_size(SLAB)
        .max_bytes(BUDGET)
        .part_size(PART)
        .retry(fast_retries(4))
}

/// Reads a body of either kind to its end, checking the budget after every chunk.
async fn read_all(client: &Client, obj: &mut Object) -> Result<Vec<u8>, s3_ordered::Error> {
    if !obj.body.is_streaming() {
        return Ok(obj.body.to_vec());
    }
    let mut out = Vec::new();
    while let Some(chunk) = obj.body.next_chunk().await {
        out.extend_from_slice(&chunk?);
        let s = client.stats();
        assert!(s.bytes_in_use <= BUDGET, "{s:?}");
    }
    Ok(out)
}

/// Fetches the three-part object `obj` alone and returns its error (panics if it arrived).
async fn the_error_of_obj(client: &Client) -> s3_ordered::Error {
    let mut results = client.get_all("bucket", vec![ObjectRef::new("obj", 3 * PART)]);
    let e = match results.next().await {
        Some(Err(e)) => e,
        other => panic!("expected an error, got {other:?}"),
    };
    assert!(results.next().await.is_none(), "one result per input");
    e
}

/// Reads every result in order, as a consumer that follows the rule does, checking position,
/// key and bytes against `expected` (key, size) and running `check` on each object. A request
/// that stops delivering (a head of the line that cannot get memory) fails after 30 s instead of
/// hanging.
async fn read_in_order(
    client: &Client,
    mut results: s3_ordered::ObjectStream,
    expected: &[(String, u64)],
    context: &str,
    check: impl Fn(&Object, u64),
) {
    let run = async {
        let mut n = 0;
        while let Some(item) = results.next().await {
            let (key, size) = &expected[n];
            let mut obj = item.unwrap_or_else(|e| panic!("{context}: {e}"));
            assert_eq!(
                (obj.seq, obj.key.as_str()),
                (n as u64, key.as_str()),
                "{context}"
            );
            check(&obj, *size);
            // A slow consumer lets later objects pile up behind this one.
            tokio::time::sleep(Duration::from_millis(1)).await;
            let bytes = read_all(client, &mut obj).await.unwrap();
            assert!(bytes == content(key, *size as usize), "{context}: {key}");
            n += 1;
        }
        n
    };
    let n = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .unwrap_or_else(|_| panic!("{context}: the request wedged"));
    assert_eq!(n, expected.len(), "{context}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_size_arrives_whole_or_streamed_with_sizes_known_and_unknown() {
    let server = S3Server::start().await;
    server.create_bucket("bkt");
    let sizes = [
        0,
        1,
        PART - 1,
        PART,
        PART + 1,
        3 * PART + 1,
        BUDGET,
        BUDGET + 1,
        8 * BUDGET + 123,
        100,
        5000,
        2 * PART,
    ];
    // Fixed shuffles, with small objects between the large ones.
    let order = [8, 3, 0, 11, 5, 9, 1, 7, 2, 10, 4, 6];
    let all: Vec<(String, u64)> = order
        .iter()
        .map(|&i| (format!("obj/{i:02}-{}", sizes[i]), sizes[i]))
        .collect();
    for (key, size) in &all {
        server.put("bkt", key, &content(key, *size as usize));
    }
    // (sizes given, rotation, streaming threshold): at half the budget, the driver runs ahead of
    // objects of unknown size.
    let passes = [
        (true, 0, BUDGET),
        (false, 0, BUDGET),
        (false, 5, BUDGET),
        (false, 7, BUDGET / 2),
        (true, 3, BUDGET / 2),
        (false, 1, BUDGET / 2),
        (false, 9, 2 * PART),
    ];
    for (sized, rotation, threshold) in passes {
        let mut objects = all.clone();
        objects.rotate_left(rotation);
        let client = small_budget(server.builder())
            .max_connections(4)
            .stream_threshold(threshold)
            .build()
            .unwrap();
        let inputs: Vec<ObjectRef> = objects
            .iter()
            .map(|(k, s)| match sized {
                true => ObjectRef::new(k.clone(), *s),
                false => ObjectRef::without_size(k.clone()),
            })
            .collect();
        let results = client.get_all("bkt", inputs);
        let context = format!("sized {sized}, rotation {rotation}, threshold {threshold}");
        read_in_order(&client, results, &objects, &context, |obj, size| {
            assert_eq!(obj.body.size(), size, "{context}: {}", obj.key);
            assert_eq!(
                obj.body.is_streaming(),
                size > threshold,
                "{context}: {}",
                obj.key
            );
        })
        .await;
        // One GET per part, and no HEAD for the sizes that were not given; one HEAD for the
        // checksum of each object fetched in several parts. A GET whose head is late on a
        // loaded machine may be hedged (on by default): that request is counted on its own.
        let parts: u64 = objects.iter().map(|(_, s)| s.div_ceil(PART).max(1)).sum();
        let multipart = objects.iter().filter(|(_, s)| *s > PART).count() as u64;
        let stats = client.stats();
        assert_eq!(
            (
                stats.requests - stats.hedges_sent,
                stats.parts,
                stats.checksum_heads
            ),
            (parts + multipart, parts, multipart),
            "{context}: {stats:?}"
        );
        assert_eq!(
            (stats.retries, stats.stale_connections),
            (0, 0),
            "{context}"
        );
        assert_eq!(stats.objects, objects.len() as u64);
        assert_quiescent(&client).await;
    }
}

/// `(range start, if-match)` of every request the mock saw.
type Log = Arc<Mutex<Vec<(Option<u64>, Option<String>)>>>;

fn log_request(log: &Log, seen: &crate::support::Seen) {
    let if_match = seen
        .headers
        .get("if-match")
        .map(|v| v.to_str().unwrap().to_owned());
    log.lock()
        .unwrap()
        .push((seen.range().map(|r| r.0), if_match));
}

/// A mock whose object `obj` (`len` bytes) changes after its first part: the first range is of
/// version 1, every later one of version 2. `small` is a plain 4-byte object.
async fn changing_object(len: usize) -> Mock {
    let data = content("obj", len);
    Mock::start(move |seen| {
        if seen.key == "small" {
            return Reply::ok(b"fine".to_vec());
        }
        let etag = if seen.range().is_some_and(|r| r.0 == 0) {
            "\"v1\""
        } else {
            "\"v2\""
        };
        Reply::ranged(&data, seen)
            .header("etag", etag)
            .delayed(Duration::from_millis(2))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etag_that_changes_between_parts_fails_the_object_alone() {
    // With checksums on, the HEAD for the object's checksum is one more request that may see
    // either version first; then the error may come from it and name no part.
    for mode in [ChecksumMode::Off, ChecksumMode::WhenAvailable] {
        let mock = changing_object(3 * PART as usize).await;
        let client = small_budget(mock.builder())
            .checksum_mode(mode)
            .max_connections(4)
            .build()
            .unwrap();
        let inputs = vec![ObjectRef::new("obj", 3 * PART), ObjectRef::new("small", 4)];
        let results: Vec<_> = client.get_all("bucket", inputs).collect().await;
        let e = results[0].as_ref().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Changed, "{mode:?}: {e}");
        assert_eq!((e.key(), e.seq()), (Some("obj"), Some(0)));
        if mode == ChecksumMode::Off {
            assert!(e.part().is_some_and(|(_, of)| of == 3), "{e:?}");
        }
        assert_eq!(results[1].as_ref().unwrap().body.to_vec(), b"fine");
        drop(results);
        assert_quiescent(&client).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_body_reads_an_error_where_the_object_changed() {
    let mock = changing_object(5 * PART as usize).await;
    // One part at a time: the first part (version 1) is delivered before the second fails.
    // Checksums off, so the parts' GETs are the only requests (no HEAD takes version 1).
    let client = small_budget(mock.builder())
        .checksum_mode(ChecksumMode::Off)
        .max_connections(2)
        .max_connections_per_request(1)
        .build()
        .unwrap();
    let inputs = vec![ObjectRef::new("obj", 5 * PART), ObjectRef::new("small", 4)];
    let mut results = client.get_all("bucket", inputs);
    let mut obj = results.next().await.unwrap().unwrap();
    assert!(obj.body.is_streaming());
    let mut got = Vec::new();
    let e = loop {
        match obj.body.next_chunk().await {
            Some(Ok(chunk)) => got.extend_from_slice(&chunk),
            Some(Err(e)) => break e,
            None => panic!("the body ended without its error"),
        }
    };
    assert!(got == content("obj", 5 * PART as usize)[..PART as usize]);
    assert_eq!(e.kind(), ErrorKind::Changed, "{e}");
    assert_eq!(
        (e.key(), e.seq(), e.part()),
        (Some("obj"), Some(0), Some((1, 5)))
    );
    assert!(obj.body.next_chunk().await.is_none());
    drop(obj);
    assert_eq!(
        results.next().await.unwrap().unwrap().body.to_vec(),
        b"fine"
    );
    assert_eq!(client.stats().errors, 1);
    drop(results);
    assert_quiescent(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_parts_send_if_match_and_a_412_is_changed() {
    let data = content("obj", 3 * PART as usize);
    let log: Log = Arc::default();
    let l = Arc::clone(&log);
    let mock = Mock::start(move |seen| {
        log_request(&l, seen);
        if seen.headers.contains_key("if-match") {
            let mut r = Reply::ok(b"<Error><Code>PreconditionFailed</Code></Error>".to_vec());
            r.status = 412;
            return r;
        }
        Reply::ranged(&data, seen).header("etag", "\"v1\"")
    })
    .await;
    // One part at a time, so every part after the first is sent after the first reply;
    // checksums off, so the only requests are the parts' GETs.
    let client = small_budget(mock.builder())
        .checksum_mode(ChecksumMode::Off)
        .max_connections(2)
        .max_connections_per_request(1)
        .build()
        .unwrap();
    let e = the_error_of_obj(&client).await;
    assert_eq!(e.kind(), ErrorKind::Changed, "{e}");
    assert_eq!(e.status().map(|s| s.as_u16()), Some(412));
    let log = log.lock().unwrap().clone();
    assert_eq!(log[0], (Some(0), None));
    assert_eq!(log[1], (Some(PART), Some("\"v1\"".to_owned())));
    assert_quiescent(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_cut_short_resumes_inside_the_part() {
    let data = content("obj", 3 * PART as usize);
    let log: Log = Arc::default();
    let (l, d) = (Arc::clone(&log), data.clone());
    let cut_once = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mock = Mock::start(move |seen| {
        log_request(&l, seen);
        let mut r = Reply::ranged(&d, seen).header("etag", "\"v1\"");
        if seen.range().is_some_and(|r| r.0 == PART) && !cut_once.swap(true, Ordering::SeqCst) {
            r.cut_after = Some(1000);
        }
        r
    })
    .await;
    // Checksums off: the only requests are the parts' GETs.
    let client = small_budget(mock.builder())
        .checksum_mode(ChecksumMode::Off)
        .max_connections(4)
        .build()
        .unwrap();
    let mut results = client.get_all("bucket", vec![ObjectRef::new("obj", 3 * PART)]);
    let obj = results.next().await.unwrap().unwrap();
    assert!(obj.body.to_vec() == data);
    assert_eq!(client.stats().retries, 1);
    // The retry asked for the rest of part 1 only, pinned to the first version.
    let log = log.lock().unwrap().clone();
    assert!(
        log.contains(&(Some(PART + 1000), Some("\"v1\"".to_owned()))),
        "{log:?}"
    );
    assert_eq!(log.len(), 4, "{log:?}");
    drop((obj, results));
    assert_quiescent(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_content_range_is_a_typed_error_of_its_part() {
    let data = content("obj", 3 * PART as usize);
    let mock = Mock::start(move |seen| {
        let mut r = Reply::ranged(&data, seen).header("etag", "\"v1\"");
        if let Some((first, last)) = seen.range().filter(|r| r.0 == PART) {
            // The right length, but the bytes of another range.
            r.headers.retain(|(k, _)| *k != "content-range");
            r = r.header(
                "content-range",
                format!("bytes {}-{}/{}", first + 1, last + 1, 3 * PART),
            );
        }
        r
    })
    .await;
    let client = small_budget(mock.builder())
        .max_connections(4)
        .build()
        .unwrap();
    let e = the_error_of_obj(&client).await;
    assert_eq!(e.kind(), ErrorKind::LengthMismatch, "{e}");
    assert_eq!(e.part(), Some((1, 3)), "{e}");
    assert!(e.to_string().contains("part 2 of 3"), "{e}");
    assert_quiescent(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_sizes_handle_empty_objects_and_servers_that_ignore_range() {
    let big = content("ignored-big", PART as usize + 1);
    let mock = Mock::start(move |seen| match seen.key.as_str() {
        // S3: any range of an empty object is 416, with or without `bytes */0`.
        "empty" => Reply::ranged(&[], seen),
        "empty-bare" => {
            let mut r = Reply::ok(Vec::new());
            r.status = 416;
            r
        }
        "ignored-small" => Reply::ok(b"whole".to_vec()),
        "ignored-big" => Reply::ok(big.clone()),
        _ => Reply::ranged(b"short", seen),
    })
    .await;
    let client = small_budget(mock.builder())
        .max_connections(4)
        .build()
        .unwrap();
    let keys = [
        "empty",
        "empty-bare",
        "ignored-small",
        "ignored-big",
        "short",
    ];
    let results: Vec<_> = client.get_all("bucket", keys).collect().await;
    let bodies: Vec<_> = results
        .iter()
        .map(|r| r.as_ref().map(|o| o.body.to_vec()).map_err(|e| e.kind()))
        .collect();
    assert_eq!(
        bodies,
        vec![
            Ok(Vec::new()),
            Ok(Vec::new()),
            Ok(b"whole".to_vec()),
            Err(ErrorKind::InvalidResponse),
            Ok(b"short".to_vec()),
        ]
    );
    // Each was one GET: no HEAD, and a refused object is not retried.
    assert_eq!(mock.counts.requests.load(Ordering::SeqCst), 5);
    drop(results);
    assert_quiescent(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_count_against_the_per_request_cap() {
    let data = content("big/obj", 12 * PART as usize);
    let mock =
        Mock::start(move |seen| Reply::ranged(&data, seen).delayed(Duration::from_millis(20)))
            .await;
    let client = small_budget(mock.builder())
        .max_connections(8)
        .max_connections_per_request(3)
        .build()
        .unwrap();
    let mut results = client.get_all("bucket", vec![ObjectRef::new("big/obj", 12 * PART)]);
    let mut obj = results.next().await.unwrap().unwrap();
    assert!(obj.body.is_streaming(), "12 parts are more than the budget");
    let bytes = read_all(&client, &mut obj).await.unwrap();
    assert!(bytes == content("big/obj", 12 * PART as usize));
    let most = mock.counts.max_in_flight("big");
    assert!(
        (2..=3).contains(&most),
        "{most} parts were in flight at once"
    );
    // Twelve GETs, and the HEAD for the object's checksum.
    assert_eq!(mock.counts.requests.load(Ordering::SeqCst), 12 + 1);
    assert_eq!(client.stats().checksum_heads, 1);
    drop((obj, results));
    assert_quiescent(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_reader_stops_the_transfer_and_the_budget_holds_throughout() {
    const SIZE: u64 = 8 * BUDGET;
    let data = content("huge", SIZE as usize);
    let d = data.clone();
    let mock = Mock::start(move |seen| Reply::ranged(&d, seen)).await;
    let client = small_budget(mock.builder())
        .max_connections(4)
        .build()
        .unwrap();
    let sampler = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut most_streaming = 0;
            loop {
                let s = client.stats();
                assert!(s.bytes_in_use <= BUDGET, "{s:?}");
                assert!(s.streaming_bytes_in_use <= s.bytes_in_use, "{s:?}");
                most_streaming = most_streaming.max(s.streaming_bytes_in_use);
                if s.objects == 1 && s.slabs_in_use == 0 {
                    return most_streaming;
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        })
    };
    let mut results = client.get_all("bucket", vec![ObjectRef::new("huge", SIZE)]);
    let mut obj = results.next().await.unwrap().unwrap();
    let mut got = obj.body.next_chunk().await.unwrap().unwrap().to_vec();

    // The reader pauses: once the budget is full, no more parts are asked for.
    let requests = || mock.counts.requests.load(Ordering::SeqCst);
    let mut settled = requests();
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if requests() == settled && client.stats().busy_connections == 0 {
            break;
        }
        settled = requests();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let paused = requests();
    assert_eq!(
        paused, settled,
        "parts were fetched while the reader paused"
    );
    let total_parts = (SIZE / PART) as usize;
    assert!(
        paused < total_parts,
        "{paused} of {total_parts} parts fetched"
    );
    assert!(client.stats().bytes_in_use <= BUDGET);

    // It reads again: the transfer resumes and ends with every byte.
    while let Some(chunk) = obj.body.next_chunk().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert!(got == data);
    // Every part's GET, and the HEAD for the object's checksum.
    assert_eq!(requests(), total_parts + 1);
    drop((obj, results));
    let most_streaming = tokio::time::timeout(Duration::from_secs(5), sampler)
        .await
        .expect("sampler ends")
        .expect("budget held");
    assert!(most_streaming > 0);
    assert_quiescent(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_streaming_body_or_the_stream_anywhere_returns_everything() {
    const SIZE: u64 = 6 * BUDGET + 7;
    let big = content("big", SIZE as usize);
    let mock = Mock::start(move |seen| match seen.key.as_str() {
        "big" => Reply::ranged(&big, seen).delayed(Duration::from_millis(1)),
        key => Reply::ok(content(key, 300)),
    })
    .await;
    let client = small_budget(mock.builder())
        .max_connections(4)
        .build()
        .unwrap();
    let inputs = || {
        vec![
            ObjectRef::new("before", 300),
            ObjectRef::new("big", SIZE),
            ObjectRef::without_size("after"),
        ]
    };
    let chunks_in_big = SIZE.div_ceil(SLAB as u64);
    for seed in 0..12u64 {
        // Read `stop` chunks of the big body, then drop it (or the whole stream).
        let stop = (seed * 37 + 5) % chunks_in_big;
        let drop_stream = seed % 3 == 0;
        let mut results = client.get_all("bucket", inputs());
        let first = results.next().await.unwrap().unwrap();
        assert!(first.body.to_vec() == content("before", 300));
        drop(first);
        let mut obj = results.next().await.unwrap().unwrap();
        for _ in 0..stop {
            obj.body.next_chunk().await.unwrap().unwrap();
        }
        if drop_stream {
            drop((results, obj));
        } else {
            drop(obj);
            let after = results.next().await.unwrap().unwrap();
            assert!(after.body.to_vec() == content("after", 300), "seed {seed}");
            assert!(results.next().await.is_none());
        }
        assert_quiescent(&client).await;
    }
    // Nothing ran on after the drops: the big object was never fetched twelve times over.
    let requests = mock.counts.requests.load(Ordering::SeqCst);
    assert!(
        requests < 12 * (SIZE / PART) as usize,
        "{requests} requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_sizes_never_wedge_the_head_of_the_line() {
    // Objects of unknown size that turn out large, between small ones, under a budget of four
    // parts: a large one's later parts must get memory before anything after it.
    for seed in 0..8u64 {
        let sizes: Vec<u64> = (0..24u64)
            .map(|i| {
                let r = (seed * 7919 + i * 104_729) % 97;
                match r % 4 {
                    0 => r * 3000 + 1, // up to ~18 parts
                    1 => PART + r,
                    _ => r * 17,
                }
            })
            .collect();
        let store: std::collections::HashMap<String, Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let key = format!("k{seed}-{i}");
                let data = content(&key, *s as usize);
                (key, data)
            })
            .collect();
        let keys: Vec<String> = (0..sizes.len()).map(|i| format!("k{seed}-{i}")).collect();
        // First parts answer later than the rest, so probes pile up behind a large object.
        let mock = Mock::start(move |seen| {
            let first = seen.range().is_some_and(|r| r.0 == 0);
            Reply::ranged(&store[&seen.key], seen).delayed(Duration::from_millis(if first {
                3
            } else {
                0
            }))
        })
        .await;
        let client = small_budget(mock.builder())
            .max_connections(4)
            .build()
            .unwrap();
        let results = client.get_all("bucket", keys.clone());
        let expected: Vec<(String, u64)> = keys.into_iter().zip(sizes).collect();
        read_in_order(
            &client,
            results,
            &expected,
            &format!("seed {seed}"),
            |_, _| {},
        )
        .await;
        assert_quiescent(&client).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsized_objects_overlap_only_within_the_budget_left_by_the_threshold() {
    let keys: Vec<String> = (0..24).map(|i| format!("g/{i}")).collect();
    let mock = Mock::start(|seen| {
        Reply::ranged(&content(&seen.key, 3000), seen).delayed(Duration::from_millis(10))
    })
    .await;
    let mut most = Vec::new();
    for threshold in [BUDGET, BUDGET / 2] {
        let client = small_budget(mock.builder())
            .max_connections(4)
            .stream_threshold(threshold)
            .build()
            .unwrap();
        let before = mock.counts.max_in_flight("g");
        let results = client.get_all("bucket", keys.clone());
        let expected: Vec<(String, u64)> = keys.iter().map(|k| (k.clone(), 3000)).collect();
        read_in_order(&client, results, &expected, "overlap", |_, _| {}).await;
        assert_quiescent(&client).await;
        most.push((before, mock.counts.max_in_flight("g")));
    }
    // With the default threshold (the whole budget) sizes are learned one at a time; at half
    // the budget the probes overlap, up to the request's connections.
    assert_eq!(most[0], (0, 1), "{most:?}");
    assert!(most[1].1 >= 3, "{most:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_that_fails_for_good_cancels_its_other_parts() {
    let data = content("obj", 4 * PART as usize);
    let mock = Mock::start(move |seen| match seen.range() {
        // Part 1 is refused at once; the others would take far longer than the test's bound.
        Some((first, _)) if first == PART => {
            let mut r = Reply::ok(b"<Error><Code>AccessDenied</Code></Error>".to_vec());
            r.status = 403;
            r
        }
        _ => Reply::ranged(&data, seen).delayed(Duration::from_secs(30)),
    })
    .await;
    let client = small_budget(mock.builder())
        .max_connections(4)
        .build()
        .unwrap();
    let mut results = client.get_all("bucket", vec![ObjectRef::new("obj", 4 * PART)]);
    let e = results.next().await.unwrap().unwrap_err();
    assert_eq!(
        (e.kind(), e.part()),
        (ErrorKind::AccessDenied, Some((1, 4)))
    );
    // The three slow parts were aborted: their memory and connections come back at once, not
    // after the server's 30 s.
    assert_quiescent(&client).await;
    assert!(results.next().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_body_read_after_its_stream_was_dropped_ends_and_never_hangs() {
    const SIZE: u64 = 6 * BUDGET + 7;
    let big = content("big", SIZE as usize);
    let expected = big.clone();
    let mock =
        Mock::start(move |seen| Reply::ranged(&big, seen).delayed(Duration::from_millis(1))).await;
    let client = small_budget(mock.builder())
        .max_connections(4)
        .build()
        .unwrap();
    let mut results = client.get_all("bucket", vec![ObjectRef::new("big", SIZE)]);
    let mut obj = results.next().await.unwrap().unwrap();
    assert!(obj.body.is_streaming());
    drop(results);
    let mut got = Vec::new();
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = obj.body.next_chunk().await {
            match chunk {
                Ok(c) => got.extend_from_slice(&c),
                Err(e) => return Some(e),
            }
        }
        None
    })
    .await
    .expect("the body ends: it does not wait for parts nobody fetches");
    match end {
        None => assert!(got == expected, "a whole body must be the object"),
        Some(e) => {
            assert!(got.len() < expected.len() && expected.starts_with(&got));
            assert_eq!(e.kind(), s3_ordered::ErrorKind::Cancelled, "{e}");
            assert!(e.to_string().contains("cancelled"), "{e}");
        }
    }
    drop(obj);
    assert_quiescent(&client).await;
}
