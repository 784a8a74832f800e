//! The client's HTTP/1.1 layer against servers that frame, close and misbehave in the ways the
//! protocol allows (or forbids): chunked bodies and idle connections closed by the server
//! (`desync.rs` has the rest).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use s3_ordered::ObjectRef;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::budgets::fast_retries;
use crate::support::{assert_quiescent, content, Mock, Reply, Seen};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_bodies_arrive_whole_whatever_their_size() {
    let mock = Mock::start(|r: &Seen| {
        let len: usize = r.key.parse().unwrap();
        Reply {
            content_length: None,
            ..Reply::ok(content(&r.key, len))
        }
    })
    .await;
    let client = mock.builder().max_connections(3).build().unwrap();
    let sizes = [0usize, 1, 999, 1000, 1001, 70_000, 300_000];
    let objects: Vec<_> = sizes
        .iter()
        .map(|n| ObjectRef::new(n.to_string(), *n as u64))
        .collect();
    let results: Vec<_> = client.get_all("bucket", objects).collect().await;
    for (n, r) in sizes.iter().zip(results) {
        let obj = r.unwrap_or_else(|e| panic!("{n} bytes: {e}"));
        assert_eq!(obj.body.to_vec(), content(&n.to_string(), *n), "{n} bytes");
    }
    // Chunked bodies that ended cleanly leave their connections reusable.
    assert!(client.stats().connections_opened <= 3);
    assert_quiescent(&client).await;
}

/// A raw HTTP/1.1 server that answers each request with `len` bytes and keeps the connection
/// open for `idle` after each response, then closes it without a word (as servers with an idle
/// timeout do); returns its address, a count of accepted connections and one of the
/// connections it has closed.
async fn idle_closing_server(
    len: usize,
    idle: Duration,
) -> (std::net::SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let (count, closes) = (Arc::clone(&accepted), Arc::clone(&closed));
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let closes = Arc::clone(&closes);
            tokio::spawn(async move {
                serve_until_idle(&mut s, len, idle).await;
                drop(s);
                closes.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, accepted, closed)
}

/// Answers requests on `s` until it has been idle for `idle` or the client closed it.
async fn serve_until_idle(s: &mut tokio::net::TcpStream, len: usize, idle: Duration) {
    loop {
        let mut req = Vec::new();
        let mut byte = [0u8; 1];
        while !req.ends_with(b"\r\n\r\n") {
            match tokio::time::timeout(idle, s.read(&mut byte)).await {
                Ok(Ok(1)) => req.push(byte[0]),
                _ => return, // idle too long, or closed: drop the socket
            }
        }
        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\netag: \"e\"\r\n\r\n");
        let mut reply = head.into_bytes();
        reply.extend(std::iter::repeat_n(b'x', len));
        if s.write_all(&reply).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_the_server_closed_are_not_used() {
    let (addr, accepted, closed) = idle_closing_server(100, Duration::from_millis(30)).await;
    let client = crate::client_builder()
        .endpoint_url(format!("http://{addr}"))
        .anonymous()
        .max_connections(1)
        .retry(fast_retries(3))
        .build()
        .unwrap();
    for i in 0..4 {
        let mut s = client.get_all("bucket", [ObjectRef::new(format!("k{i}"), 100)]);
        let obj = s.next().await.unwrap().expect("object");
        assert_eq!(obj.body.len(), 100);
        drop(obj);
        // Until the server has closed the idle connection, however loaded the machine.
        for _ in 0..1000 {
            if closed.load(Ordering::SeqCst) > i {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            closed.load(Ordering::SeqCst),
            i + 1,
            "the server closed no connection"
        );
    }
    let stats = client.stats();
    // No request was sent on a connection the server had closed: nothing failed or retried.
    assert_eq!((stats.errors, stats.retries), (0, 0), "{stats:?}");
    assert_eq!(stats.requests, 4, "{stats:?}");
    assert_eq!(accepted.load(Ordering::SeqCst), 4);
    // Back to back, the one connection carries every request.
    let keys: Vec<_> = (0..10)
        .map(|i| ObjectRef::new(format!("b{i}"), 100))
        .collect();
    let results: Vec<_> = client.get_all("bucket", keys).collect().await;
    assert!(results.iter().all(|r| r.is_ok()));
    assert_eq!(accepted.load(Ordering::SeqCst), 5);
    drop(results);
    assert_quiescent(&client).await;
}
