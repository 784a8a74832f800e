//! A server that sheds load the way an S3 prefix pushed past its request rate does: it answers
//! `503 SlowDown` at once to any request that would make more than K requests in flight, and
//! serves every other after a fixed service time. K can change while it runs.
//!
//! It serves `GET /bucket/KEY` with [`content`]`(KEY, len)` (no ranges, no signature check);
//! whoever includes it includes `s3_server.rs` too.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::s3_server::content;

/// What the server counts.
#[derive(Debug, Default)]
pub struct ShedCounts {
    /// Requests in flight now (being served).
    pub in_flight: AtomicUsize,
    /// The most ever served at once.
    pub max_in_flight: AtomicUsize,
    /// Requests received.
    pub requests: AtomicUsize,
    /// Requests answered with 503 SlowDown.
    pub throttled: AtomicUsize,
}

/// The running server; stops accepting when dropped.
pub struct ShedServer {
    pub addr: SocketAddr,
    pub counts: Arc<ShedCounts>,
    capacity: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ShedServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ShedServer {
    /// Serves objects of `len` bytes, each after `service`, at most `capacity` at once.
    pub async fn start(capacity: usize, service: Duration, len: usize) -> Self {
        let counts = Arc::new(ShedCounts::default());
        let cap = Arc::new(AtomicUsize::new(capacity));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (c, k) = (Arc::clone(&counts), Arc::clone(&cap));
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let _ = socket.set_nodelay(true);
                let (c, k) = (Arc::clone(&c), Arc::clone(&k));
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (c, k) = (Arc::clone(&c), Arc::clone(&k));
                        async move { Ok::<_, Infallible>(respond(&c, &k, service, len, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), svc)
                        .await;
                });
            }
        });
        ShedServer {
            addr,
            counts,
            capacity: cap,
            task,
        }
    }

    /// K, to be changed while the server runs.
    pub fn capacity_handle(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.capacity)
    }

    /// Throttled replies so far, and requests so far.
    pub fn throttled_and_requests(&self) -> (usize, usize) {
        (
            self.counts.throttled.load(Ordering::SeqCst),
            self.counts.requests.load(Ordering::SeqCst),
        )
    }
}

async fn respond(
    counts: &ShedCounts,
    capacity: &AtomicUsize,
    service: Duration,
    len: usize,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Full<Bytes>> {
    counts.requests.fetch_add(1, Ordering::SeqCst);
    let k = capacity.load(Ordering::SeqCst);
    let admitted = counts
        .in_flight
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            (n < k).then_some(n + 1)
        });
    let Ok(before) = admitted else {
        counts.throttled.fetch_add(1, Ordering::SeqCst);
        let body = "<?xml version=\"1.0\"?><Error><Code>SlowDown</Code>\
                    <Message>Please reduce your request rate.</Message></Error>";
        return hyper::Response::builder()
            .status(503)
            .header("content-type", "application/xml")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .expect("response");
    };
    counts.max_in_flight.fetch_max(before + 1, Ordering::SeqCst);
    tokio::time::sleep(service).await;
    let key = req.uri().path().splitn(3, '/').nth(2).unwrap_or_default();
    let body = content(key, len);
    counts.in_flight.fetch_sub(1, Ordering::SeqCst);
    hyper::Response::builder()
        .status(200)
        .header("etag", "\"shed\"")
        .body(Full::new(Bytes::from(body)))
        .expect("response")
}
