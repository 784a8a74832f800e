//! Replies that real servers and proxies send and a client may misread: heads and framing at
//! the edges of what RFC 9112 (and hyper) accept, bodies that end with the connection cut
//! short, and idle connections closed just as a request goes out. Each case checks the bytes
//! delivered, the error of the object concerned, and the attempts spent.

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use s3_ordered::{ErrorKind, ObjectRef};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::budgets::fast_retries;
use crate::support::assert_quiescent;

/// What the scripted server does with one request.
enum Act {
    /// Write these bytes and keep the connection for the next request.
    Reply(Vec<u8>),
    /// Write these bytes and close the connection.
    ReplyAndClose(Vec<u8>),
    /// Close the connection without a word (FIN).
    Close,
    /// Reset the connection (RST).
    Reset,
}

/// One request as the server read it: which connection (0, 1, … in accept order), its number on
/// that connection, and its head.
#[derive(Debug, Clone)]
struct Request {
    conn: usize,
    nth: usize,
    head: Vec<u8>,
}

impl Request {
    fn field(&self, name: &str) -> Option<Vec<u8>> {
        let text = &self.head;
        text.split(|&b| b == b'\n').find_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let colon = line.iter().position(|&b| b == b':')?;
            line[..colon]
                .eq_ignore_ascii_case(name.as_bytes())
                .then(|| line[colon + 1..].trim_ascii().to_vec())
        })
    }
}

type Script = dyn Fn(&Request) -> Act + Send + Sync;

/// A raw HTTP/1.1 server acting out `script` for every request; the requests it read, in order.
async fn scripted(script: Box<Script>) -> (std::net::SocketAddr, Arc<Mutex<Vec<Request>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let script: Arc<Script> = Arc::from(script);
    tokio::spawn(async move {
        for conn in 0.. {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            let (log, script) = (Arc::clone(&log), Arc::clone(&script));
            tokio::spawn(serve(s, conn, log, script));
        }
    });
    (addr, seen)
}

async fn serve(mut s: TcpStream, conn: usize, log: Arc<Mutex<Vec<Request>>>, script: Arc<Script>) {
    for nth in 0.. {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match s.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        let req = Request { conn, nth, head };
        log.lock().unwrap().push(req.clone());
        match script(&req) {
            Act::Reply(bytes) => {
                if s.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Act::ReplyAndClose(bytes) => {
                let _ = s.write_all(&bytes).await;
                return;
            }
            Act::Close => return,
            Act::Reset => {
                let _ = s.set_zero_linger();
                return;
            }
        }
    }
}

fn one_connection(addr: std::net::SocketAddr, attempts: u32) -> s3_ordered::Client {
    crate::client_builder()
        .endpoint_url(format!("http://{addr}"))
        .anonymous()
        .max_connections(1)
        .retry(fast_retries(attempts))
        .build()
        .unwrap()
}

fn ok(fields: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 200 OK\r\n{fields}\r\n").into_bytes();
    out.extend_from_slice(body);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_and_lengths_the_rfc_allows_are_read() {
    let (addr, seen) = scripted(Box::new(|r: &Request| {
        let key = String::from_utf8_lossy(&r.head);
        Act::Reply(if key.starts_with("GET /bucket/repeated") {
            ok("content-length: 5, 5\r\ncontent-length: 5\r\n", b"hello")
        } else if key.starts_with("GET /bucket/zeros") {
            ok("content-length: 00000000000000000000000005\r\n", b"hello")
        } else {
            // A 200 KiB head: over the old 64 KiB bound, under hyper's.
            let big = format!("x-amz-meta-big: {}\r\n", "a".repeat(200 << 10));
            ok(&format!("{big}content-length: 5\r\n"), b"hello")
        })
    }))
    .await;
    let client = one_connection(addr, 1);
    let keys = ["repeated", "zeros", "long-head"].map(|k| ObjectRef::new(k, 5));
    let results: Vec<_> = client.get_all("bucket", keys).collect().await;
    for r in results {
        assert_eq!(r.expect("read").body.to_vec(), b"hello");
    }
    // One connection carried them all.
    assert!(seen.lock().unwrap().iter().all(|r| r.conn == 0));
    assert_quiescent(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etag_with_obs_text_is_sent_back_as_it_came() {
    // Two parts, after the HEAD for the object's checksum: both are asked for with If-Match
    // holding the HEAD's ETag, octet for octet (0xe9 is Latin-1, not UTF-8).
    let etag: &[u8] = b"\"caf\xe9\"";
    let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
    let body = data.clone();
    let (addr, seen) = scripted(Box::new(move |r: &Request| {
        if r.head.starts_with(b"HEAD ") {
            let mut out = b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\netag: ".to_vec();
            out.extend_from_slice(b"\"caf\xe9\"\r\n\r\n");
            return Act::Reply(out);
        }
        let range = String::from_utf8(r.field("range").unwrap_or_default()).unwrap();
        let (first, last) = range
            .trim_start_matches("bytes=")
            .split_once('-')
            .map(|(a, b)| (a.parse::<usize>().unwrap(), b.parse::<usize>().unwrap()))
            .unwrap();
        let mut out = format!(
            "HTTP/1.1 206 Partial Content\r\ncontent-length: {}\r\ncontent-range: bytes {first}-{last}/100000\r\netag: ",
            last + 1 - first
        )
        .into_bytes();
        out.extend_from_slice(b"\"caf\xe9\"");
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(&body[first..=last]);
        Act::Reply(out)
    }))
    .await;
    let client = crate::client_builder()
        .endpoint_url(format!("http://{addr}"))
        .anonymous()
        .max_connections(1)
        .max_connections_per_request(1)
        .slab_size(64 << 10)
        .part_size(64 << 10)
        .retry(fast_retries(1))
        .build()
        .unwrap();
    let mut s = client.get_all("bucket", [ObjectRef::new("k", 100_000)]);
    let obj = s.next().await.unwrap().expect("object");
    assert_eq!(obj.body.to_vec(), data);
    assert_eq!(obj.etag.as_deref(), Some("\"caf\u{fffd}\""));
    drop((obj, s));
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    assert!(seen[0].head.starts_with(b"HEAD "));
    for get in &seen[1..] {
        assert!(get.head.starts_with(b"GET "));
        assert_eq!(get.field("if-match").as_deref(), Some(etag));
    }
    assert_quiescent(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_ending_with_the_connection_cut_short_is_resumed() {
    let data: Vec<u8> = (0..100u32).map(|i| (i * 7) as u8).collect();
    let body = data.clone();
    let (addr, seen) = scripted(Box::new(move |r: &Request| {
        if r.conn == 0 {
            // No length: the body ends with the connection, which closes after 60 bytes.
            Act::ReplyAndClose(ok("etag: \"e\"\r\nconnection: close\r\n", &body[..60]))
        } else {
            let mut out = b"HTTP/1.1 206 Partial Content\r\ncontent-length: 40\r\n\
                content-range: bytes 60-99/100\r\netag: \"e\"\r\n\r\n"
                .to_vec();
            out.extend_from_slice(&body[60..]);
            Act::Reply(out)
        }
    }))
    .await;
    let client = one_connection(addr, 2);
    let mut s = client.get_all("bucket", [ObjectRef::new("k", 100)]);
    let obj = s.next().await.unwrap().expect("resumed");
    assert_eq!(obj.body.to_vec(), data);
    drop((obj, s));
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].field("range").as_deref(), Some(&b"bytes=60-99"[..]));
    assert_eq!(client.stats().retries, 1);

    // With no attempt left, the object fails as a broken connection, not a length mismatch.
    let (addr, _) = scripted(Box::new(|_: &Request| {
        Act::ReplyAndClose(ok("connection: close\r\n", b"short"))
    }))
    .await;
    let client = one_connection(addr, 1);
    let mut s = client.get_all("bucket", [ObjectRef::new("k", 100)]);
    let e = s.next().await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
    assert!(e.is_retryable());
    drop(s);
    assert_quiescent(&client).await;
}

/// A server that answers the first request of each connection, and does `then` to the
/// second, as a server whose keep-alive timeout fires just as the request arrives.
fn closes_on_reuse(then: fn() -> Act) -> Box<Script> {
    Box::new(move |r: &Request| {
        if r.nth == 0 {
            Act::Reply(ok("content-length: 2\r\netag: \"e\"\r\n", b"ok"))
        } else {
            then()
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_closed_on_reuse_costs_no_attempt() {
    for (name, then) in [
        ("FIN", (|| Act::Close) as fn() -> Act),
        ("RST", || Act::Reset),
    ] {
        let (addr, seen) = scripted(closes_on_reuse(then)).await;
        // One attempt per object: a resend that spent one would fail the second object.
        let client = one_connection(addr, 1);
        for key in ["a", "b", "c"] {
            let mut s = client.get_all("bucket", [ObjectRef::new(key, 2)]);
            let obj = s.next().await.unwrap();
            assert_eq!(obj.expect(name).body.to_vec(), b"ok", "{name}");
        }
        let stats = client.stats();
        assert_eq!((stats.retries, stats.errors), (0, 0), "{name}: {stats:?}");
        assert_eq!(stats.stale_connections, 2, "{name}: {stats:?}");
        assert_eq!(stats.requests, 5, "{name}: {stats:?}");
        // Every resend went on a new connection: nothing more was written to the closed one.
        let seen = seen.lock().unwrap().clone();
        let on: Vec<_> = seen.iter().map(|r| (r.conn, r.nth)).collect();
        assert_eq!(on, [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0)], "{name}");
        assert_quiescent(&client).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_closes_every_connection_still_fails_the_request() {
    let (addr, seen) = scripted(Box::new(|r: &Request| {
        if r.conn == 0 && r.nth == 0 {
            Act::Reply(ok("content-length: 2\r\n", b"ok"))
        } else {
            Act::Close
        }
    }))
    .await;
    let client = one_connection(addr, 1);
    let results: Vec<_> = client
        .get_all("bucket", [ObjectRef::new("a", 2), ObjectRef::new("b", 2)])
        .collect()
        .await;
    assert_eq!(results[0].as_ref().expect("first").body.to_vec(), b"ok");
    let e = results[1].as_ref().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
    // Sent on the reused connection, then once on a new one: no more.
    assert_eq!(seen.lock().unwrap().len(), 3);
    assert_eq!(client.stats().stale_connections, 1);
    drop(results);
    assert_quiescent(&client).await;

    // The resend is not a retry: with three attempts, each fails on a new connection.
    let client = one_connection(addr, 3);
    let before = seen.lock().unwrap().len();
    let mut s = client.get_all("bucket", [ObjectRef::new("c", 2)]);
    let e = s.next().await.unwrap().unwrap_err();
    assert_eq!(e.attempts(), 3, "{e}");
    assert_eq!(seen.lock().unwrap().len() - before, 3);
    drop(s);
    assert_quiescent(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_that_cannot_be_trusted_fails_the_object_and_its_connection() {
    let (addr, seen) = scripted(Box::new(|r: &Request| {
        let head = String::from_utf8_lossy(&r.head);
        let reply: &[u8] = if head.starts_with("GET /bucket/http10-chunked") {
            b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n2\r\nok\r\n0\r\n\r\n"
        } else if head.starts_with("GET /bucket/empty-size") {
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n\r\n\r\n"
        } else if head.starts_with("GET /bucket/lf-in-extension") {
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2;a\nb\r\nok\r\n0\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
        };
        Act::Reply(reply.to_vec())
    }))
    .await;
    let client = one_connection(addr, 1);
    let keys = [
        "http10-chunked",
        "good",
        "empty-size",
        "lf-in-extension",
        "last",
    ];
    let results: Vec<_> = client
        .get_all("bucket", keys.map(|k| ObjectRef::new(k, 2)))
        .collect()
        .await;
    for (key, r) in keys.iter().zip(&results) {
        match *key {
            "good" | "last" => assert_eq!(r.as_ref().expect(key).body.to_vec(), b"ok"),
            _ => {
                let e = r.as_ref().expect_err(key);
                assert_eq!(e.kind(), ErrorKind::Connection, "{key}: {e}");
            }
        }
    }
    // Each refused reply's connection was given up: the next object came on a new one.
    let conns: Vec<_> = seen.lock().unwrap().iter().map(|r| r.conn).collect();
    assert_eq!(conns, [0, 1, 1, 2, 3]);
    drop(results);
    assert_quiescent(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_after_a_reply_over_plain_tcp_are_never_read_as_the_next_one() {
    // The first reply carries a second, well-formed one of the same length behind it, in the
    // same write; read as the next object's reply, it would deliver "XX" for "b".
    let (addr, seen) = scripted(Box::new(|r: &Request| {
        if r.conn == 0 && r.nth == 0 {
            let mut out = ok("content-length: 2\r\n", b"ok");
            out.extend(ok("content-length: 2\r\n", b"XX"));
            Act::Reply(out)
        } else {
            Act::Reply(ok("content-length: 2\r\n", b"ok"))
        }
    }))
    .await;
    let client = one_connection(addr, 1);
    let results: Vec<_> = client
        .get_all("bucket", [ObjectRef::new("a", 2), ObjectRef::new("b", 2)])
        .collect()
        .await;
    for r in &results {
        assert_eq!(r.as_ref().expect("object").body.to_vec(), b"ok");
    }
    let conns: Vec<_> = seen.lock().unwrap().iter().map(|r| r.conn).collect();
    assert_eq!(conns, [0, 1]);
    drop(results);
    assert_quiescent(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_206_that_gives_the_object_0_bytes_is_the_empty_object_and_closes_its_connection() {
    // s3rver answers a range of an empty object so: a 206 of `bytes 0-0/0`, a Content-Length of
    // 1 and no byte (S3 answers 416). Read, its body would stall; reused, its connection would
    // give the next reply's first byte to this one.
    let (addr, seen) = scripted(Box::new(|r: &Request| {
        let head = String::from_utf8_lossy(&r.head);
        let reply: &[u8] = if head.starts_with("GET /bucket/empty ") {
            b"HTTP/1.1 206 Partial Content\r\ncontent-range: bytes 0-0/0\r\ncontent-length: 1\r\n\r\n"
        } else {
            b"HTTP/1.1 206 Partial Content\r\ncontent-range: bytes 0-1/2\r\ncontent-length: 2\r\n\r\nok"
        };
        Act::Reply(reply.to_vec())
    }))
    .await;
    let client = one_connection(addr, 1);
    let keys = ["empty", "a", "empty", "b"];
    let results: Vec<_> = client
        .get_all("bucket", keys.map(ObjectRef::without_size))
        .collect()
        .await;
    for (key, r) in keys.iter().zip(&results) {
        let body = r
            .as_ref()
            .unwrap_or_else(|e| panic!("{key}: {e}"))
            .body
            .to_vec();
        let want: &[u8] = if *key == "empty" { b"" } else { b"ok" };
        assert_eq!(body, want, "{key}");
    }
    // Each empty reply's connection was closed: the next object came on a new one.
    let conns: Vec<_> = seen.lock().unwrap().iter().map(|r| r.conn).collect();
    assert_eq!(conns, [0, 1, 1, 2]);
    let stats = client.stats();
    assert_eq!((stats.errors, stats.retries), (0, 0), "{stats:?}");
    drop(results);
    assert_quiescent(&client).await;
}

/// The bound on response heads: hyper's.
const MAX_HEAD_KIB: usize = (8192 + 4096 * 100) >> 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_over_hypers_bound_is_refused() {
    // This crate's transport refuses a head just over the bound. Hyper checks its buffer only
    // between reads, each into all the buffer's spare capacity (which its growth can make
    // larger than the bound): a head that ends in the read that crosses the bound is read, so
    // hyper gets one well beyond what such a read can hold.
    let kib = match crate::TRANSPORT {
        s3_ordered::HttpTransport::Hyper => 4 * MAX_HEAD_KIB + 8,
        _ => MAX_HEAD_KIB + 8,
    };
    let (addr, _) = scripted(Box::new(move |_: &Request| {
        let big = format!("x-amz-meta-big: {}\r\n", "a".repeat(kib << 10));
        Act::Reply(ok(&format!("{big}content-length: 2\r\n"), b"ok"))
    }))
    .await;
    let client = one_connection(addr, 1);
    let mut s = client.get_all("bucket", [ObjectRef::new("k", 2)]);
    let e = s.next().await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
    drop(s);
    assert_quiescent(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_and_get_read_content_length_alike() {
    // Two equal values and leading zeros are one length (RFC 9110, 8.6); a sign is none.
    let lengths = [("repeated", "5, 5"), ("zeros", "0005"), ("plus", "+5")];
    let (addr, _) = scripted(Box::new(move |r: &Request| {
        let head = String::from_utf8_lossy(&r.head);
        let (_, value) = lengths
            .iter()
            .find(|(k, _)| head.contains(&format!("/bucket/{k} ")))
            .expect("a known key");
        let fields = format!("content-length: {value}\r\netag: \"e\"\r\n");
        Act::Reply(if head.starts_with("HEAD ") {
            ok(&fields, b"")
        } else {
            ok(&fields, b"hello")
        })
    }))
    .await;
    let client = one_connection(addr, 1);
    for (key, value) in lengths {
        let head = client.head("bucket", key, None).await;
        let get = client
            .get_all("bucket", [ObjectRef::new(key, 5)])
            .next()
            .await
            .expect("one result");
        let head_size = head.as_ref().ok().and_then(|o| o.size);
        let get_len = get.as_ref().ok().map(|o| o.body.len() as u64);
        assert_eq!(head_size, get_len, "Content-Length: {value}");
        assert_eq!(
            head_size.is_some(),
            value != "+5",
            "Content-Length: {value}"
        );
    }
}
