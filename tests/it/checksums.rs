//! Response checksums, on by default: every algorithm S3 stores, objects fetched whole or in
//! parts, sizes known or not, against a real server that stores and returns them (s3s-fs);
//! corruption in transit and composite checksums (verified through the upload's parts, or
//! saying why not) from the scripted mock.

use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::StreamExt;
use s3_ordered::{
    Checksum, ChecksumAlgorithm, ChecksumMode, ErrorKind, NotVerified, Object, ObjectRef,
};

use crate::budgets::fast_retries;
use crate::support::{assert_quiescent, content, Mock, Reply, S3Server, Seen};

const SLAB: usize = 4096;
const PART: u64 = 16 * 1024;
const THRESHOLD: u64 = 40 * 1024;

fn small(b: s3_ordered::ClientBuilder) -> s3_ordered::ClientBuilder {
    b.slab_size(SLAB)
        .max_bytes(256 * 1024)
        .part_size(PART)
        .stream_threshold(THRESHOLD)
        .retry(fast_retries(3))
}

/// Every byte of a body, whole or streaming; a streaming body's last item may be its error.
async fn read_all(obj: &mut Object) -> Result<Vec<u8>, s3_ordered::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = obj.body.next_chunk().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

const ALGORITHMS: [(&str, ChecksumAlgorithm); 5] = [
    ("CRC64NVME", ChecksumAlgorithm::Crc64Nvme),
    ("CRC32C", ChecksumAlgorithm::Crc32c),
    ("CRC32", ChecksumAlgorithm::Crc32),
    ("SHA1", ChecksumAlgorithm::Sha1),
    ("SHA256", ChecksumAlgorithm::Sha256),
];

/// Sizes at the edges of the plan: empty, one byte, one part less one, a part and a byte
/// (whole, in two parts), three parts and a byte (streaming).
const SIZES: [u64; 6] = [0, 1, PART - 1, PART + 1, 2 * PART, 3 * PART + 1];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_algorithm_and_size_is_verified_with_sizes_known_and_unknown() {
    let server = S3Server::start().await;
    server.create_bucket("bkt-ck");
    let mut objects = Vec::new();
    for (name, algorithm) in ALGORITHMS {
        for size in SIZES {
            let key = format!("{name}/{size}");
            server
                .put_with_checksum("bkt-ck", &key, &content(&key, size as usize), name)
                .await;
            objects.push((key, size, algorithm));
        }
    }
    for sized in [true, false] {
        let client = small(server.builder()).build().unwrap();
        let inputs = objects.iter().map(|(k, s, _)| match sized {
            true => ObjectRef::new(k.clone(), *s),
            false => ObjectRef::without_size(k.clone()),
        });
        let mut results = client.get_all("bkt-ck", inputs.collect::<Vec<_>>());
        let mut expected_verified = 0;
        for (key, size, algorithm) in &objects {
            let mut obj = results.next().await.expect("an item").expect("an object");
            assert_eq!(&obj.key, key);
            assert_eq!(obj.body.is_streaming(), *size > THRESHOLD, "{key}");
            // A probe of an empty object is refused (416) and says nothing of a checksum.
            let want = if *size == 0 && !sized {
                Checksum::NotVerified(NotVerified::NoChecksum)
            } else {
                expected_verified += 1;
                Checksum::Verified(*algorithm)
            };
            assert_eq!(obj.checksum, want, "sized {sized}: {key}");
            let bytes = read_all(&mut obj)
                .await
                .unwrap_or_else(|e| panic!("{key}: {e}"));
            assert!(bytes == content(key, *size as usize), "{key}");
        }
        assert!(results.next().await.is_none());
        let stats = client.stats();
        let multipart = objects.iter().filter(|(_, s, _)| *s > PART).count() as u64;
        let parts: u64 = objects
            .iter()
            .map(|(_, s, _)| s.div_ceil(PART).max(1))
            .sum();
        assert_eq!(stats.checksums_verified, expected_verified, "{stats:?}");
        assert_eq!(
            stats.checksums_unavailable,
            objects.len() as u64 - expected_verified,
            "{stats:?}"
        );
        assert_eq!(stats.checksum_mismatches, 0, "{stats:?}");
        // The cost: one HEAD per object fetched in parts, nothing for the others.
        assert_eq!(stats.checksum_heads, multipart, "{stats:?}");
        // A GET whose head is late on a loaded machine may be hedged (on by default).
        assert_eq!(
            stats.requests - stats.hedges_sent,
            parts + multipart,
            "{stats:?}"
        );
        // Every GET and HEAD asked for the checksum.
        let asked = server
            .requests()
            .iter()
            .filter(|r| r.header("x-amz-checksum-mode") == Some("ENABLED"))
            .count() as u64;
        assert!(
            asked + stats.hedges_sent >= stats.requests,
            "{asked} of {stats:?}"
        );
        drop(results);
        assert_quiescent(&client).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_without_a_checksum_say_so_and_required_fails_them() {
    let server = S3Server::start().await;
    server.create_bucket("bkt-ck");
    server.put("bkt-ck", "plain", &content("plain", 5000));
    server.put(
        "bkt-ck",
        "plain-big",
        &content("plain-big", 3 * PART as usize),
    );
    server
        .put_with_checksum("bkt-ck", "sum", &content("sum", 5000), "CRC32C")
        .await;
    let client = small(server.builder()).build().unwrap();
    let keys = ["plain", "plain-big", "sum"].map(ObjectRef::without_size);
    let mut results = client.get_all("bkt-ck", keys);
    for (key, want) in [
        ("plain", Checksum::NotVerified(NotVerified::NoChecksum)),
        ("plain-big", Checksum::NotVerified(NotVerified::NoChecksum)),
        ("sum", Checksum::Verified(ChecksumAlgorithm::Crc32c)),
    ] {
        let mut obj = results.next().await.unwrap().unwrap();
        assert_eq!(obj.checksum, want, "{key}");
        assert!(read_all(&mut obj).await.unwrap() == content(key, obj.body.size() as usize));
    }
    let stats = client.stats();
    assert_eq!(
        (stats.checksums_verified, stats.checksums_unavailable),
        (1, 2)
    );

    let strict = small(server.builder())
        .checksum_mode(ChecksumMode::Required)
        .build()
        .unwrap();
    let results: Vec<_> = strict
        .get_all(
            "bkt-ck",
            ["plain", "plain-big", "sum"].map(ObjectRef::without_size),
        )
        .collect()
        .await;
    for r in &results[..2] {
        let e = r.as_ref().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ChecksumMissing, "{e}");
        assert!(e.to_string().contains("no checksum"), "{e}");
    }
    assert!(results[2].is_ok());

    let off = small(server.builder())
        .checksum_mode(ChecksumMode::Off)
        .build()
        .unwrap();
    let obj = off
        .get_all("bkt-ck", [ObjectRef::new("sum", 5000)])
        .next()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(obj.checksum, Checksum::NotVerified(NotVerified::Off));
    assert_eq!(off.stats().checksums_unavailable, 0);
}

fn crc32c_of(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(crc32c::crc32c(data).to_be_bytes())
}

/// A server that stores `data` under every key with its CRC32C, and flips one byte of the
/// bytes it sends for keys starting with `always/`, and for the first GET of `once/` keys.
async fn flipping_server(data: Vec<u8>) -> Mock {
    let sum = crc32c_of(&data);
    let sent =
        std::sync::Mutex::new(std::collections::HashSet::<(String, Option<(u64, u64)>)>::new());
    Mock::start(move |r: &Seen| {
        let mut reply = Reply::ranged(&data, r).header("x-amz-checksum-crc32c", sum.clone());
        let first = sent.lock().unwrap().insert((r.key.clone(), r.range()));
        let flip = r.key.starts_with("always/") || (r.key.starts_with("once/") && first);
        // The byte in the middle of what this reply carries (the first part of a ranged
        // object covers the middle of nothing else).
        if flip && r.method == http::Method::GET && !reply.body.is_empty() {
            let mid = reply.body.len() / 2;
            reply.body[mid] ^= 0x20;
        }
        reply
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_is_sent_again_once_or_fails_that_object_alone() {
    let data = content("flip", 10_000);
    let mock = flipping_server(data.clone()).await;
    let client = small(mock.builder()).build().unwrap();
    let keys = ["ok/a", "once/b", "always/c", "ok/d"].map(|k| ObjectRef::new(k, 10_000));
    let results: Vec<_> = client.get_all("bucket", keys).collect().await;
    for i in [0, 1, 3] {
        let obj = results[i].as_ref().unwrap();
        assert!(obj.body.to_vec() == data, "{}", obj.key);
        assert_eq!(obj.checksum, Checksum::Verified(ChecksumAlgorithm::Crc32c));
    }
    let e = results[2].as_ref().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ChecksumMismatch, "{e}");
    assert_eq!((e.key(), e.attempts()), (Some("always/c"), 2), "{e}");
    assert!(e.to_string().contains(&crc32c_of(&data)), "{e}");
    let stats = client.stats();
    // once/b: one mismatch then right; always/c: two.
    assert_eq!(stats.checksum_mismatches, 3, "{stats:?}");
    assert_eq!(
        (stats.checksums_verified, stats.errors),
        (3, 1),
        "{stats:?}"
    );
    drop(results);
    assert_quiescent(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_a_part_refetches_a_whole_object_or_ends_its_stream() {
    // Whole in three parts (below the threshold): fetched again once, every part on a new
    // connection. Streaming in eight: its bytes are out, so the mismatch is its last item.
    for (len, streaming) in [(2 * PART as usize + 100, false), (8 * PART as usize, true)] {
        let data = content("parts", len);
        let mock = flipping_server(data.clone()).await;
        let client = small(mock.builder()).build().unwrap();
        let names = ["ok/a", "always/b", "once/c", "ok/d"];
        let keys = names.map(|k| ObjectRef::new(k, len as u64));
        let mut results = client.get_all("bucket", keys);
        for key in names {
            let item = results.next().await.unwrap();
            let fails = key.starts_with("always/") || (streaming && key.starts_with("once/"));
            if !fails {
                let mut obj = item.unwrap();
                assert_eq!(obj.body.is_streaming(), streaming);
                assert_eq!(obj.checksum, Checksum::Verified(ChecksumAlgorithm::Crc32c));
                assert!(read_all(&mut obj).await.unwrap() == data, "{key}");
                continue;
            }
            let e = if streaming {
                // Handed out before its end; every byte comes, then the mismatch.
                let mut obj = item.unwrap();
                let mut got = 0;
                let err = loop {
                    match obj.body.next_chunk().await {
                        Some(Ok(c)) => got += c.len(),
                        Some(Err(e)) => break e,
                        None => panic!("a corrupted stream ended without an error"),
                    }
                };
                assert_eq!(got, len);
                assert!(obj.body.next_chunk().await.is_none());
                err
            } else {
                item.unwrap_err()
            };
            assert_eq!(e.kind(), ErrorKind::ChecksumMismatch, "{e}");
            assert_eq!(e.key(), Some(key), "{e}");
        }
        let stats = client.stats();
        // Whole: always/b mismatched twice, once/c once; streaming: once each, not refetched.
        let (mismatches, verified, errors) = if streaming { (2, 2, 2) } else { (3, 3, 1) };
        assert_eq!(
            (stats.checksum_heads, stats.checksum_mismatches),
            (4, mismatches),
            "{stats:?}"
        );
        assert_eq!(
            (stats.checksums_verified, stats.errors),
            (verified, errors),
            "{stats:?}"
        );
        // A refetch asks for every part again: 3 parts more for each of the two whole ones.
        let parts = if streaming { 4 * 8 } else { 4 * 3 + 2 * 3 };
        assert_eq!(stats.parts, parts, "{stats:?}");
        drop(results);
        assert_quiescent(&client).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_composite_checksum_is_not_verified_and_says_so() {
    let data = content("mpu", 2 * PART as usize + 5);
    let d = data.clone();
    let mock = Mock::start(move |r: &Seen| {
        Reply::ranged(&d, r)
            .header("x-amz-checksum-crc64nvme", "AAAAAAAAAAA=-3")
            .header("x-amz-checksum-type", "COMPOSITE")
            .delayed(Duration::from_millis(1))
    })
    .await;
    let client = small(mock.builder()).build().unwrap();
    let keys = [
        ObjectRef::new("mpu", data.len() as u64),
        ObjectRef::without_size("mpu"),
    ];
    let results: Vec<_> = client.get_all("bucket", keys).collect().await;
    for r in &results {
        let obj = r.as_ref().unwrap();
        assert!(obj.body.to_vec() == data);
        assert_eq!(
            obj.checksum,
            Checksum::NotVerified(NotVerified::Composite(ChecksumAlgorithm::Crc64Nvme))
        );
    }
    let stats = client.stats();
    // Each: the HEAD for its checksum, and one for its first upload part, whose reply (this
    // server ignores `partNumber`) states no part checksum, so no more are sent.
    assert_eq!((stats.checksums_unavailable, stats.checksum_heads), (2, 4));
    let strict = small(mock.builder())
        .checksum_mode(ChecksumMode::Required)
        .build()
        .unwrap();
    let e = strict
        .get_all("bucket", [ObjectRef::new("mpu", data.len() as u64)])
        .next()
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ChecksumMissing, "{e}");
    assert!(e.to_string().contains("composite CRC64NVME"), "{e}");
}

/// The checksum in `alg` (`CRC32C` or `SHA256`) of `bytes`, big-endian.
fn digest(alg: &str, bytes: &[u8]) -> Vec<u8> {
    match alg {
        "CRC32C" => crc32c::crc32c(bytes).to_be_bytes().to_vec(),
        _ => ring::digest::digest(&ring::digest::SHA256, bytes)
            .as_ref()
            .to_vec(),
    }
}

/// An object stored as a multipart upload of parts of `upload_part` bytes (the last one
/// shorter), with a composite checksum in `alg`.
struct Upload {
    data: Vec<u8>,
    alg: &'static str,
    upload_part: usize,
}

impl Upload {
    fn parts(&self) -> Vec<&[u8]> {
        self.data.chunks(self.upload_part).collect()
    }

    fn field(&self) -> &'static str {
        match self.alg {
            "CRC32C" => "x-amz-checksum-crc32c",
            _ => "x-amz-checksum-sha256",
        }
    }
}

/// A server of multipart uploads: a HEAD or GET of a key states its composite checksum; a
/// HEAD with `partNumber=K` states part K's length and checksum. Keys starting with
/// `always/` have one byte flipped in every GET; `wrong/` ones state a wrong checksum for
/// part 2; `noparts/` ones ignore `partNumber` (the reply is of the whole object).
///
/// A key with `untyped/` in it states its checksum's type nowhere on the object's replies,
/// as some servers do on a HEAD: no `-N`, no `x-amz-checksum-type` (its part replies say
/// `COMPOSITE`, as S3's do), and a multipart ETag; with `full/` in it, the value is the
/// whole object's checksum instead of the composite one (an upload with a full-object
/// checksum, its type unstated too).
async fn multipart_server(uploads: Vec<(String, Upload)>) -> Mock {
    let b64 = base64::engine::general_purpose::STANDARD;
    Mock::start(move |r: &Seen| {
        let Some((key, up)) = uploads.iter().find(|(k, _)| *k == r.key) else {
            let mut reply = Reply::ok(b"<Error><Code>NoSuchKey</Code></Error>".to_vec());
            reply.status = 404;
            return reply;
        };
        let parts = up.parts();
        let untyped = key.contains("untyped/");
        let etag = format!("\"mock-etag-{}\"", parts.len());
        let number = r.query.as_deref().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("partNumber="))
                .and_then(|n| n.parse::<usize>().ok())
        });
        if let Some(k) = number.filter(|_| !key.starts_with("noparts/")) {
            let Some(part) = parts.get(k.wrapping_sub(1)) else {
                let mut reply =
                    Reply::ok(b"<Error><Code>InvalidPartNumber</Code></Error>".to_vec());
                reply.status = 416;
                return reply;
            };
            let sum = if key.starts_with("wrong/") && k == 2 {
                digest(up.alg, b"another part")
            } else {
                digest(up.alg, part)
            };
            let reply = Reply::ok(part.to_vec())
                .header(up.field(), b64.encode(sum))
                .header("x-amz-mp-parts-count", parts.len().to_string())
                .delayed(Duration::from_millis(5));
            return match untyped {
                true => reply
                    .header("x-amz-checksum-type", "COMPOSITE")
                    .header("etag", etag.clone()),
                false => reply,
            };
        }
        let of_parts: Vec<u8> = parts.iter().flat_map(|p| digest(up.alg, p)).collect();
        let composite = b64.encode(digest(up.alg, &of_parts));
        let reply = Reply::ranged(&up.data, r).delayed(Duration::from_millis(1));
        let mut reply = match (untyped, key.contains("full/")) {
            (false, _) => reply
                .header(up.field(), format!("{composite}-{}", parts.len()))
                .header("x-amz-checksum-type", "COMPOSITE"),
            (true, false) => reply.header(up.field(), composite).header("etag", etag),
            (true, true) => reply
                .header(up.field(), b64.encode(digest(up.alg, &up.data)))
                .header("etag", etag),
        };
        if key.starts_with("always/") && r.method == http::Method::GET && !reply.body.is_empty() {
            let mid = reply.body.len() / 2;
            reply.body[mid] ^= 0x20;
        }
        reply
    })
    .await
}

/// Objects fetched in one GET, in parts, and above the stream threshold, each cut by its
/// upload at other places than the client's parts.
fn uploads(prefix: &str) -> Vec<(String, Upload)> {
    let mut out = Vec::new();
    for alg in ["CRC32C", "SHA256"] {
        for (size, upload_part) in [(12_000, 5_000), (39_000, 15_000), (70_000, 25_000)] {
            let key = format!("{prefix}{alg}/{size}");
            let data = content(&key, size);
            out.push((
                key,
                Upload {
                    data,
                    alg,
                    upload_part,
                },
            ));
        }
    }
    out
}

/// A [`multipart_server`] of the [`uploads`] under each of `prefixes`, and each key's bytes.
async fn serving(prefixes: &[&str]) -> (Mock, Vec<(String, Vec<u8>)>) {
    let all: Vec<(String, Upload)> = prefixes.iter().flat_map(|p| uploads(p)).collect();
    let expected = all
        .iter()
        .map(|(k, u)| (k.clone(), u.data.clone()))
        .collect();
    (multipart_server(all).await, expected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_composite_checksum_is_verified_through_the_uploads_parts() {
    let uploads = uploads("mpu/");
    let expected: Vec<(String, Vec<u8>, &str, usize)> = uploads
        .iter()
        .map(|(k, u)| (k.clone(), u.data.clone(), u.alg, u.parts().len()))
        .collect();
    let mock = multipart_server(uploads).await;
    for sized in [true, false] {
        let client = small(mock.builder())
            .checksum_mode(ChecksumMode::Required)
            .build()
            .unwrap();
        let inputs = expected.iter().map(|(k, d, _, _)| match sized {
            true => ObjectRef::new(k.clone(), d.len() as u64),
            false => ObjectRef::without_size(k.clone()),
        });
        let mut results = client.get_all("bucket", inputs.collect::<Vec<_>>());
        for (key, data, alg, _) in &expected {
            let mut obj = results.next().await.unwrap().unwrap();
            assert_eq!(&obj.key, key);
            assert_eq!(obj.body.is_streaming(), data.len() as u64 > THRESHOLD);
            let want = match *alg {
                "CRC32C" => ChecksumAlgorithm::Crc32c,
                _ => ChecksumAlgorithm::Sha256,
            };
            assert_eq!(obj.checksum, Checksum::VerifiedParts(want), "{key}");
            assert!(obj.checksum.is_verified());
            assert!(read_all(&mut obj).await.unwrap() == *data, "{key}");
        }
        assert!(results.next().await.is_none());
        let stats = client.stats();
        // One HEAD per upload part, and one for the checksum of each object fetched in parts
        // (a whole GET states it).
        let heads: usize = expected
            .iter()
            .map(|(_, d, _, n)| n + usize::from(d.len() as u64 > PART))
            .sum();
        assert_eq!(
            (stats.checksums_verified, stats.checksum_heads),
            (expected.len() as u64, heads as u64),
            "sized {sized}: {stats:?}"
        );
        assert_eq!((stats.errors, stats.checksum_mismatches), (0, 0));
        drop(results);
        assert_quiescent(&client).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_part_that_does_not_match_fails_its_object_alone() {
    let (mock, expected) = serving(&["always/", "wrong/", "noparts/", "mpu/"]).await;
    let client = small(mock.builder()).build().unwrap();
    let inputs = expected
        .iter()
        .map(|(k, d)| ObjectRef::new(k.clone(), d.len() as u64));
    let mut results = client.get_all("bucket", inputs.collect::<Vec<_>>());
    for (key, data) in &expected {
        let item = results.next().await.unwrap();
        if key.starts_with("always/") && data.len() as u64 <= THRESHOLD {
            // A whole object (in one GET or in parts): fetched again once, then fails at its
            // position.
            let e = item.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ChecksumMismatch, "{key}: {e}");
            assert!(e.to_string().contains("upload part"), "{e}");
            assert_eq!(e.key(), Some(key.as_str()));
            continue;
        }
        let mut obj = item.unwrap();
        let read = read_all(&mut obj).await;
        if key.starts_with("always/") {
            // A streaming body: its bytes, then the mismatch as its last item.
            let e = read.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ChecksumMismatch, "{key}: {e}");
            assert!(e.to_string().contains("upload part"), "{e}");
            continue;
        }
        assert!(read.unwrap() == *data, "{key}");
        if key.starts_with("mpu/") {
            assert!(obj.checksum.is_verified(), "{key}");
        } else {
            // Parts that do not add up to the composite value, or none stated: delivered,
            // saying the checksum was not verified.
            assert!(
                matches!(
                    obj.checksum,
                    Checksum::NotVerified(NotVerified::Composite(_))
                ),
                "{key}: {:?}",
                obj.checksum
            );
        }
    }
    assert!(results.next().await.is_none());
    let stats = client.stats();
    assert_eq!(
        (stats.checksums_verified, stats.checksums_unavailable),
        (6, 12),
        "{stats:?}"
    );
    // Each of the four whole `always/` objects was fetched twice.
    assert_eq!(stats.checksum_mismatches, 4 * 2 + 2, "{stats:?}");
    drop(results);
    assert_quiescent(&client).await;
    // With checksums required, those eight fail for want of a checksum.
    let strict = small(mock.builder())
        .checksum_mode(ChecksumMode::Required)
        .build()
        .unwrap();
    for prefix in ["wrong/", "noparts/"] {
        let (key, data) = expected
            .iter()
            .find(|(k, _)| k.starts_with(prefix))
            .unwrap();
        let e = strict
            .get_all("bucket", [ObjectRef::new(key.clone(), data.len() as u64)])
            .next()
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ChecksumMissing, "{key}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checksum_of_unstated_type_is_verified_as_the_kind_it_is() {
    // Composite and full-object values, neither typed, on multipart ETags; bytes flipped in
    // transit under each reading; fetched in one GET, in parts, and streaming.
    let prefixes = [
        "untyped/",
        "untyped/full/",
        "always/untyped/",
        "always/untyped/full/",
    ];
    let (mock, expected) = serving(&prefixes).await;
    for sized in [true, false] {
        let client = small(mock.builder()).build().unwrap();
        let inputs = expected.iter().map(|(k, d)| match sized {
            true => ObjectRef::new(k.clone(), d.len() as u64),
            false => ObjectRef::without_size(k.clone()),
        });
        let mut results = client.get_all("bucket", inputs.collect::<Vec<_>>());
        let mut failed = 0;
        for (key, data) in &expected {
            let alg = if key.contains("CRC32C") {
                ChecksumAlgorithm::Crc32c
            } else {
                ChecksumAlgorithm::Sha256
            };
            let item = results.next().await.unwrap();
            let read = match item {
                Ok(mut obj) => read_all(&mut obj).await.map(|bytes| (obj, bytes)),
                Err(e) => Err(e),
            };
            if key.starts_with("always/") {
                // Neither reading agrees with flipped bytes: the strict rule holds for both.
                let e = read.map(|(o, _)| o.checksum).unwrap_err();
                assert_eq!(e.kind(), ErrorKind::ChecksumMismatch, "{key}: {e}");
                failed += 1;
                continue;
            }
            let (obj, bytes) = read.unwrap_or_else(|e| panic!("{key}: {e}"));
            assert!(bytes == *data, "{key}");
            // The object says which reading verified it.
            let want = match key.contains("full/") {
                true => Checksum::Verified(alg),
                false => Checksum::VerifiedParts(alg),
            };
            assert_eq!(obj.checksum, want, "{key} (sized {sized})");
        }
        assert!(results.next().await.is_none());
        let stats = client.stats();
        assert_eq!(failed, 12);
        assert_eq!(
            (stats.checksums_verified, stats.checksums_unavailable),
            (12, 0),
            "sized {sized}: {stats:?}"
        );
        drop(results);
        assert_quiescent(&client).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_checksum_keeps_the_strict_rule_on_a_multipart_etag() {
    // A value typed FULL_OBJECT on a multipart ETag that is in fact the composite one: not
    // read as composite, so the object fails, and no upload part is asked for.
    let b64 = base64::engine::general_purpose::STANDARD;
    let data = content("typed", 12_000);
    let parts: Vec<u8> = data
        .chunks(5_000)
        .flat_map(|p| crc32c::crc32c(p).to_be_bytes())
        .collect();
    let composite = b64.encode(crc32c::crc32c(&parts).to_be_bytes());
    let body = data.clone();
    let mock = Mock::start(move |r: &Seen| {
        Reply::ranged(&body, r)
            .header("x-amz-checksum-crc32c", composite.clone())
            .header("x-amz-checksum-type", "FULL_OBJECT")
            .header("etag", "\"mock-etag-3\"")
    })
    .await;
    let client = small(mock.builder()).build().unwrap();
    let e = client
        .get_all("bucket", [ObjectRef::new("typed", data.len() as u64)])
        .next()
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ChecksumMismatch, "{e}");
    assert_eq!(client.stats().checksum_heads, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_part_heads_go_a_few_at_a_time_within_the_requests_connections() {
    // 20 upload parts of an object fetched in one GET: the HEADs for their checksums are the
    // only requests after it.
    for (cap, most) in [(1, 1..=1), (2, 2..=2), (8, 3..=8)] {
        let data = content("many", 16_000);
        let upload = Upload {
            data,
            alg: "CRC32C",
            upload_part: 800,
        };
        let mock = multipart_server(vec![("many/a".to_owned(), upload)]).await;
        let client = small(mock.builder())
            .max_connections(8)
            .max_connections_per_request(cap)
            .build()
            .unwrap();
        let obj = client
            .get_all("bucket", [ObjectRef::new("many/a", 16_000)])
            .next()
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            obj.checksum,
            Checksum::VerifiedParts(ChecksumAlgorithm::Crc32c)
        );
        assert_eq!(client.stats().checksum_heads, 20);
        let seen = mock.counts.max_in_flight("many");
        assert!(most.contains(&seen), "cap {cap}: {seen} at once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_of_the_objects_ahead_go_in_one_batch_while_memory_is_awaited() {
    // Eight objects of four parts, a budget of one, eight connections: each object's last part
    // is slow, so connections stand idle while the next object waits for memory. They carry
    // the HEADs of the objects ahead at once, before the next object's first GET: up to one
    // per connection and four budgets of bytes, so four objects here. One object is missing:
    // its HEAD's error is its result alone, in its place.
    let len = 4 * PART as usize;
    let data = content("ahead", len);
    let sum = crc32c_of(&data);
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = std::sync::Arc::clone(&log);
    let served = data.clone();
    let mock = Mock::start(move |r: &Seen| {
        seen.lock()
            .unwrap()
            .push((r.method.clone(), r.key.clone(), r.range(), Instant::now()));
        if r.key == "k/5" {
            let mut reply = Reply::ok(b"<Error><Code>NoSuchKey</Code></Error>".to_vec());
            reply.status = 404;
            return reply;
        }
        let slow = r.range().is_some_and(|(first, _)| first == 3 * PART);
        let reply = Reply::ranged(&served, r).header("x-amz-checksum-crc32c", sum.clone());
        match slow {
            true => reply.delayed(Duration::from_millis(150)),
            false => reply,
        }
    })
    .await;
    let client = small(mock.builder())
        .max_bytes(4 * PART)
        .stream_threshold(4 * PART)
        .max_connections(8)
        .hedge(s3_ordered::HedgeConfig::off())
        .build()
        .unwrap();
    let keys = (0..8).map(move |i| ObjectRef::new(format!("k/{i}"), len as u64));
    let mut results = client.get_all("bucket", keys);
    for i in 0..8 {
        let item = results.next().await.unwrap();
        if i == 5 {
            let e = item.unwrap_err();
            assert_eq!(
                (e.kind(), e.key()),
                (ErrorKind::NotFound, Some("k/5")),
                "{e}"
            );
            continue;
        }
        let obj = item.unwrap();
        assert_eq!(obj.key, format!("k/{i}"));
        assert!(obj.body.to_vec() == data, "{}", obj.key);
        assert_eq!(obj.checksum, Checksum::Verified(ChecksumAlgorithm::Crc32c));
    }
    let log = log.lock().unwrap().clone();
    let first_get = |key: &str| {
        log.iter()
            .position(|(m, k, _, _)| m == http::Method::GET && k == key)
    };
    let head = |key: &str| {
        log.iter()
            .position(|(m, k, _, _)| m == http::Method::HEAD && k == key)
    };
    let next_get = first_get("k/1").expect("a GET of k/1");
    // k/0 is whole, and k/1 admitted, no sooner than its slow last part's delay after that
    // part reached the server.
    let slow = log
        .iter()
        .find(|(_, k, range, _)| k == "k/0" && range.is_some_and(|(first, _)| first == 3 * PART))
        .map(|(.., at)| *at)
        .expect("k/0's last part");
    for i in 2..8 {
        let key = format!("k/{i}");
        let at = head(&key).unwrap_or_else(|| panic!("no HEAD of {key}: {log:?}"));
        if i < 6 {
            assert!(
                at < next_get,
                "HEAD of {key} after k/1's first GET: {log:?}"
            );
        } else {
            // Past four budgets: planned only once admission has gone on past k/1.
            let after = log[at].3.duration_since(slow);
            assert!(
                after >= Duration::from_millis(100),
                "HEAD of {key} {after:?} after k/0's last part was asked for: {log:?}"
            );
        }
    }
    // One HEAD per object, none for the missing one's GETs, which were never sent.
    let stats = client.stats();
    assert_eq!(stats.checksum_heads, 8, "{stats:?}");
    assert_eq!(first_get("k/5"), None, "{log:?}");
    assert_eq!(stats.requests, 8 + 7 * 4, "{stats:?}");
    drop(results);
    assert_quiescent(&client).await;
}
