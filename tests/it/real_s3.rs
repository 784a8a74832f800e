//! Correctness against s3s-fs, which checks every SigV4 signature with its own code.

use futures::StreamExt;
use s3_ordered::{ErrorKind, ObjectRef};

use crate::support::{assert_quiescent, content, S3Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_mixed_objects_arrive_in_order_with_the_right_bytes() {
    let server = S3Server::start().await;
    server.create_bucket("data");
    // Mixed sizes from 0 B to 3 MiB; mostly small, as in real ingestion.
    let sizes = |i: usize| match i % 50 {
        0 => 0,
        1 => 3 << 20,
        2..=5 => 300_000 + i * 7,
        _ => (i * 131) % 20_000,
    };
    let mut objects = Vec::new();
    for i in 0..1200 {
        let key = format!("batch/{:02}/obj-{i:05}.bin", i % 17);
        let data = content(&key, sizes(i));
        server.put("data", &key, &data);
        objects.push(ObjectRef::new(key, data.len() as u64));
    }
    // Shuffle deterministically so input order differs from any natural order.
    let mut x = 0x9e37_79b9_u64;
    for i in (1..objects.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        objects.swap(i, (x % (i as u64 + 1)) as usize);
    }

    let client = server
        .builder()
        .max_connections(8)
        .max_bytes(16 << 20)
        .build()
        .unwrap();
    let mut stream = client.get_all("data", objects.clone());
    let mut n = 0;
    while let Some(item) = stream.next().await {
        let obj = item.unwrap_or_else(|e| panic!("item {n}: {e}"));
        assert_eq!(obj.seq, n as u64);
        assert_eq!(obj.key, objects[n].key);
        assert_eq!(Some(obj.body.size()), objects[n].size);
        assert!(
            obj.body.to_vec() == content(&obj.key, objects[n].size.unwrap() as usize),
            "bytes of {}",
            obj.key
        );
        assert!(obj.etag.is_some());
        n += 1;
    }
    assert_eq!(n, objects.len());
    let stats = client.stats();
    assert_eq!(stats.objects, objects.len() as u64);
    assert_eq!(stats.errors, 0);
    assert!(stats.open_connections <= 8, "{stats:?}");
    assert!(stats.slabs_allocated as u64 <= (16 << 20) / s3_ordered::DEFAULT_SLAB_SIZE as u64);
    assert_quiescent(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awkward_keys_are_encoded_and_signed_correctly() {
    let server = S3Server::start().await;
    server.create_bucket("keys");
    let keys = [
        "with space.txt",
        "plus+sign",
        "percent%20literal",
        "equals=and&amp",
        "tilde~dash-under_score.dot",
        "unicodé/日本語/ключ",
        "a//b",
        "(parens)!*'$,;:@",
        "deep/er/and/deeper/still",
    ];
    let mut objects = Vec::new();
    for key in keys {
        let data = content(key, 1000 + key.len());
        server.put("keys", key, &data);
        objects.push(ObjectRef::new(key, data.len() as u64));
    }
    let client = server.builder().max_connections(4).build().unwrap();
    let results: Vec<_> = client.get_all("keys", objects.clone()).collect().await;
    assert_eq!(results.len(), keys.len());
    for (r, o) in results.into_iter().zip(&objects) {
        let obj = r.unwrap_or_else(|e| panic!("{:?}: {e} / {e:?}", o.key));
        assert_eq!(obj.key, o.key);
        assert!(
            obj.body.to_vec() == content(&o.key, o.size.unwrap() as usize),
            "bytes of {:?}",
            o.key
        );
    }
    assert_quiescent(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_is_access_denied_at_every_item() {
    let server = S3Server::start().await;
    server.create_bucket("bkt");
    let objects: Vec<_> = (0..20)
        .map(|i| {
            let key = format!("k{i}");
            server.put("bkt", &key, b"hello");
            ObjectRef::new(key, 5)
        })
        .collect();
    let client = server
        .builder()
        .static_credentials(crate::support::ACCESS_KEY, "wrong-secret", None)
        .max_connections(4)
        .build()
        .unwrap();
    let results: Vec<_> = client.get_all("bkt", objects).collect().await;
    assert_eq!(results.len(), 20);
    for (i, r) in results.iter().enumerate() {
        let e = r.as_ref().expect_err("must be denied");
        assert_eq!(e.kind(), ErrorKind::AccessDenied, "{e}");
        assert_eq!(e.status().map(|s| s.as_u16()), Some(403));
        assert_eq!(e.seq(), Some(i as u64));
        assert_eq!(e.key(), Some(format!("k{i}").as_str()));
        assert!(!e.to_string().contains("wrong-secret"));
    }
    assert_eq!(client.stats().errors, 20);
    assert_quiescent(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_key_fails_only_at_its_position_and_duplicates_come_back_twice() {
    let server = S3Server::start().await;
    server.create_bucket("bkt");
    for k in ["one", "two", "three"] {
        server.put("bkt", k, &content(k, 10_000));
    }
    let objects = vec![
        ObjectRef::new("one", 10_000),
        ObjectRef::new("missing", 10_000),
        ObjectRef::new("two", 10_000),
        ObjectRef::new("one", 10_000),
        ObjectRef::new("three", 10_000),
    ];
    let client = server.builder().max_connections(4).build().unwrap();
    let results: Vec<_> = client.get_all("bkt", objects).collect().await;
    let summary: Vec<_> = results
        .iter()
        .map(|r| match r {
            Ok(o) => {
                assert!(o.body.to_vec() == content(&o.key, 10_000));
                o.key.clone()
            }
            Err(e) => format!("{:?}:{}", e.kind(), e.key().unwrap_or("?")),
        })
        .collect();
    assert_eq!(summary, ["one", "NotFound:missing", "two", "one", "three"]);
    let e = results[1].as_ref().unwrap_err();
    assert!(e.is_not_found());
    assert_eq!(e.code(), Some("NoSuchKey"));
    assert_eq!(e.seq(), Some(1));
    drop(results);
    assert_quiescent(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_bucket_is_not_found_at_every_item() {
    let server = S3Server::start().await;
    server.create_bucket("exists");
    let client = server.builder().max_connections(2).build().unwrap();
    let results: Vec<_> = client
        .get_all(
            "no-such-bucket",
            (0..5).map(|i| ObjectRef::new(format!("k{i}"), 3)),
        )
        .collect()
        .await;
    assert_eq!(results.len(), 5);
    for r in &results {
        let e = r.as_ref().expect_err("bucket does not exist");
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    }
    assert_quiescent(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_input_and_empty_input() {
    let server = S3Server::start().await;
    server.create_bucket("bkt");
    for i in 0..50 {
        let key = format!("s/{i}");
        server.put("bkt", &key, &content(&key, i * 100));
    }
    let client = server.builder().max_connections(3).build().unwrap();
    let input = futures::stream::iter(0..50).map(|i| ObjectRef::new(format!("s/{i}"), i * 100));
    let keys: Vec<String> = client
        .get_stream("bkt", input)
        .map(|r| r.expect("ok").key)
        .collect()
        .await;
    assert_eq!(keys, (0..50).map(|i| format!("s/{i}")).collect::<Vec<_>>());

    let none: Vec<_> = client
        .get_all("bkt", Vec::<ObjectRef>::new())
        .collect()
        .await;
    assert!(none.is_empty());
    assert_quiescent(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_larger_than_budget_streams_between_whole_ones() {
    let server = S3Server::start().await;
    server.create_bucket("bkt");
    server.put("bkt", "small", b"abc");
    let huge = content("huge", 300_000);
    server.put("bkt", "huge", &huge);
    let client = server
        .builder()
        .max_connections(2)
        .slab_size(4096)
        .max_bytes(64 * 1024)
        .build()
        .unwrap();
    let mut results = client.get_all(
        "bkt",
        vec![
            ObjectRef::new("small", 3),
            ObjectRef::new("huge", 300_000),
            ObjectRef::new("small", 3),
        ],
    );
    let first = results.next().await.unwrap().unwrap();
    assert!(!first.body.is_streaming());
    assert_eq!(first.body.to_vec(), b"abc");
    let mut big = results.next().await.unwrap().unwrap();
    assert!(big.body.is_streaming());
    assert_eq!(big.body.size(), 300_000);
    let mut got = Vec::new();
    while let Some(chunk) = big.body.next_chunk().await {
        got.extend_from_slice(&chunk.unwrap());
        assert!(client.stats().bytes_in_use <= 64 * 1024);
    }
    assert!(got == huge, "streamed bytes differ");
    let last = results.next().await.unwrap().unwrap();
    assert_eq!(last.body.to_vec(), b"abc");
    assert!(results.next().await.is_none());
    drop((first, big, last));
    assert_quiescent(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_declared_size_is_a_length_error() {
    let server = S3Server::start().await;
    server.create_bucket("bkt");
    server.put("bkt", "k", &content("k", 5000));
    let client = server.builder().max_connections(2).build().unwrap();
    let results: Vec<_> = client
        .get_all(
            "bkt",
            vec![
                ObjectRef::new("k", 4999),
                ObjectRef::new("k", 5000),
                ObjectRef::new("k", 5001),
            ],
        )
        .collect()
        .await;
    assert_eq!(
        results[0].as_ref().unwrap_err().kind(),
        ErrorKind::LengthMismatch
    );
    assert_eq!(results[1].as_ref().unwrap().body.len(), 5000);
    assert_eq!(
        results[2].as_ref().unwrap_err().kind(),
        ErrorKind::LengthMismatch
    );
    drop(results);
    assert_quiescent(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_through_continuation_tokens_and_feeds_get_stream() {
    let server = S3Server::start().await;
    server.create_bucket("lst");
    // More than one 1000-key page, under two prefixes, plus keys outside the prefix.
    let mut expected = Vec::new();
    for i in 0..2500 {
        let key = format!("p/{:02}/k{i:05}", i % 3);
        let data = content(&key, i % 700);
        server.put("lst", &key, &data);
        expected.push((key, data.len() as u64));
    }
    for i in 0..10 {
        server.put("lst", &format!("q/other{i}"), b"x");
    }
    expected.sort();
    let client = server.builder().max_connections(4).build().unwrap();

    let listed: Vec<(String, u64)> = client
        .list("lst", "p/")
        .map(|r| r.map(|o| (o.key, o.size.expect("size"))).expect("listing"))
        .collect()
        .await;
    assert_eq!(listed, expected);
    assert_eq!(client.list("lst", "").count().await, 2510);
    assert_eq!(client.list("lst", "p/01/").count().await, 833);
    assert_eq!(client.list("lst", "nothing-here/").count().await, 0);

    // From the key after a given one, across pages: the key itself, one between keys, the last.
    let keys: Vec<&str> = expected.iter().map(|(k, _)| k.as_str()).collect();
    for after in [
        keys[0],
        keys[1200],
        "p/01/k00000x",
        keys[keys.len() - 1],
        "a",
        "z",
    ] {
        let listed: Vec<String> = client
            .list_after("lst", "p/", after)
            .map(|r| r.expect("listing").key)
            .collect()
            .await;
        let want: Vec<&str> = keys.iter().copied().filter(|k| *k > after).collect();
        assert_eq!(listed, want, "after {after:?}");
    }

    // The listing feeds the fetch without being collected first.
    let mut fetched = client.get_stream("lst", client.list("lst", "p/"));
    let mut n = 0;
    while let Some(item) = fetched.next().await {
        let obj = item.expect("object");
        assert_eq!(obj.key, expected[n].0);
        assert!(obj.body.to_vec() == content(&obj.key, expected[n].1 as usize));
        n += 1;
    }
    assert_eq!(n, expected.len());
    assert_quiescent(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_errors_are_typed_and_end_the_listing() {
    let server = S3Server::start().await;
    server.create_bucket("lst");
    server.put("lst", "a", b"1");
    let denied = server
        .builder()
        .static_credentials(crate::support::ACCESS_KEY, "wrong", None)
        .build()
        .unwrap();
    let items: Vec<_> = denied.list("lst", "").collect().await;
    assert_eq!(items.len(), 1);
    assert_eq!(
        items[0].as_ref().unwrap_err().kind(),
        ErrorKind::AccessDenied
    );

    let client = server.builder().build().unwrap();
    let items: Vec<_> = client.list("no-such-bucket", "").collect().await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].as_ref().unwrap_err().kind(), ErrorKind::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_learns_sizes_and_upstream_errors_keep_their_position() {
    let server = S3Server::start().await;
    server.create_bucket("heads");
    server.put("heads", "x y+z", &content("x y+z", 4321));
    let client = server.builder().build().unwrap();
    let head = client.head("heads", "x y+z", None).await.unwrap();
    assert_eq!(head, ObjectRef::new("x y+z", 4321));
    let missing = client.head("heads", "missing", None).await.unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound);
    assert_eq!(missing.key(), Some("missing"));

    // A failed HEAD passed to get_all comes out at its own position.
    let inputs = vec![Ok(head.clone()), Err(missing), Ok(head)];
    let results: Vec<_> = client.get_all("heads", inputs).collect().await;
    assert_eq!(results.len(), 3);
    assert_eq!(results[0].as_ref().unwrap().body.len(), 4321);
    let e = results[1].as_ref().unwrap_err();
    assert_eq!(
        (e.kind(), e.key(), e.seq()),
        (ErrorKind::NotFound, Some("missing"), Some(1))
    );
    assert_eq!(results[2].as_ref().unwrap().seq, 2);
    drop(results);
    assert_quiescent(&client).await;
}

/// Keys are read raw from the XML (no `encoding-type=url`), so `+` and `%XX` survive a listing
/// and the listed keys fetch the right objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_keys_with_plus_and_percent_round_trip() {
    let server = S3Server::start().await;
    server.create_bucket("odd");
    for k in ["x/a+b", "x/c%41d", "x/e f"] {
        server.put("odd", k, k.as_bytes());
    }
    let client = server.builder().build().unwrap();
    let keys: Vec<String> = client
        .list("odd", "x/")
        .map(|r| r.unwrap().key)
        .collect()
        .await;
    assert_eq!(keys, ["x/a+b", "x/c%41d", "x/e f"]);
    let bodies: Vec<Vec<u8>> = client
        .get_stream("odd", client.list("odd", "x/"))
        .map(|r| r.unwrap().body.to_vec())
        .collect()
        .await;
    assert_eq!(bodies, [&b"x/a+b"[..], b"x/c%41d", b"x/e f"]);
    assert_quiescent(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_carry_their_last_modified_time_whole_in_parts_or_unsized() {
    let server = S3Server::start().await;
    server.create_bucket("lm-bucket");
    // HTTP dates are to the second.
    let secs = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs()
    };
    let before = secs(std::time::SystemTime::now());
    let sizes = [0usize, 1000, (3 << 20) + 1];
    for (i, size) in sizes.iter().enumerate() {
        server.put("lm-bucket", &format!("k{i}"), &content("lm", *size));
    }
    let after = secs(std::time::SystemTime::now());
    let client = server
        .builder()
        .part_size(1 << 20)
        .max_bytes(8 << 20)
        .build()
        .unwrap();
    let sized = sizes
        .iter()
        .enumerate()
        .map(|(i, s)| ObjectRef::new(format!("k{i}"), *s as u64));
    let unsized_ = (1..sizes.len()).map(|i| ObjectRef::without_size(format!("k{i}")));
    let inputs: Vec<ObjectRef> = sized.chain(unsized_).collect();
    let mut stream = client.get_all("lm-bucket", inputs);
    while let Some(item) = stream.next().await {
        let obj = item.unwrap();
        let at = obj.last_modified.map(secs);
        assert!(
            at.is_some_and(|t| (before..=after + 1).contains(&t)),
            "{}: {at:?} not in {before}..={after}",
            obj.key
        );
    }
}
