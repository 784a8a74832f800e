//! A scripted HTTP mock for what a real server won't do on demand (short, long and broken
//! bodies, delays), which also counts sockets and concurrent requests; and the quiescence check
//! run after every test.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use s3_ordered::ClientBuilder;
use tokio::net::TcpListener;

pub use crate::quiescent::assert_quiescent;
pub use crate::s3_server::{content, S3Server, ACCESS_KEY, SECRET_KEY};

/// What the mock sends for one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    /// `Content-Length` to announce; `None` sends the body chunked.
    pub content_length: Option<u64>,
    /// Wait before sending the response head.
    pub delay: Duration,
    /// Break the connection after this many body bytes.
    pub cut_after: Option<usize>,
    /// Send this many body bytes, then go silent for the duration, then send the rest.
    pub stall_after: Option<(usize, Duration)>,
    /// Send this many body bytes, then the rest in pieces of `.1` bytes, one every `.2`.
    pub trickle_after: Option<(usize, usize, Duration)>,
    /// Extra response headers (an `etag` here replaces the default one).
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub fn ok(body: Vec<u8>) -> Self {
        Reply {
            status: 200,
            content_length: Some(body.len() as u64),
            body,
            delay: Duration::ZERO,
            cut_after: None,
            stall_after: None,
            trickle_after: None,
            headers: Vec::new(),
        }
    }

    /// What S3 sends for `data` to a request with `seen`'s `Range` header (none: all of it):
    /// `206` with `Content-Range` for a range starting inside the object (clamped at its end),
    /// `416` with `Content-Range: bytes */len` for one past it (any range of an empty object).
    pub fn ranged(data: &[u8], seen: &Seen) -> Self {
        let len = data.len() as u64;
        let Some((first, last)) = seen.range() else {
            return Reply::ok(data.to_vec());
        };
        if first >= len {
            let mut r = Reply::ok(b"<Error><Code>InvalidRange</Code></Error>".to_vec());
            r.status = 416;
            return r.header("content-range", format!("bytes */{len}"));
        }
        let last = last.min(len - 1);
        let mut r = Reply::ok(data[first as usize..=last as usize].to_vec());
        r.status = 206;
        r.header("content-range", format!("bytes {first}-{last}/{len}"))
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Sends `after` bytes at once, then `piece` bytes every `every`.
    pub fn trickled(mut self, after: usize, piece: usize, every: Duration) -> Self {
        self.trickle_after = Some((after, piece.max(1), every));
        self
    }
}

/// What the mock's script sees of a request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: http::Method,
    /// The key, percent-decoded.
    pub key: String,
    /// The raw query string, if any.
    pub query: Option<String>,
    pub headers: http::HeaderMap,
}

impl Seen {
    /// The `Range: bytes=A-B` asked for, if any.
    pub fn range(&self) -> Option<(u64, u64)> {
        let v = self.headers.get("range")?.to_str().ok()?;
        let (a, b) = v.strip_prefix("bytes=")?.split_once('-')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    }
}

type Script = dyn Fn(&Seen) -> Reply + Send + Sync;

/// A scripted HTTP server that also counts sockets and concurrent requests.
pub struct Mock {
    pub addr: SocketAddr,
    pub counts: Arc<Counts>,
}

#[derive(Debug, Default)]
pub struct Counts {
    pub open_sockets: AtomicUsize,
    pub max_open_sockets: AtomicUsize,
    /// The most client-side sockets to the mock the kernel listed open when one was accepted:
    /// unlike `max_open_sockets`, not raised by a socket the client closed and the server has
    /// not yet seen close.
    pub max_client_sockets: AtomicUsize,
    pub accepted: AtomicUsize,
    pub requests: AtomicUsize,
    /// Concurrent requests per first path segment after the bucket, and their maxima.
    in_flight: Mutex<std::collections::HashMap<String, (usize, usize)>>,
}

impl Counts {
    pub fn max_in_flight(&self, group: &str) -> usize {
        self.in_flight.lock().unwrap().get(group).map_or(0, |v| v.1)
    }

    fn enter(&self, group: &str) {
        let mut m = self.in_flight.lock().unwrap();
        let e = m.entry(group.to_owned()).or_default();
        e.0 += 1;
        e.1 = e.1.max(e.0);
    }

    fn leave(&self, group: &str) {
        let mut m = self.in_flight.lock().unwrap();
        if let Some(e) = m.get_mut(group) {
            e.0 -= 1;
        }
    }
}

struct SocketGuard(Arc<Counts>);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        self.0.open_sockets.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Mock {
    pub async fn start(script: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Self {
        let script: Arc<Script> = Arc::new(script);
        let counts = Arc::new(Counts::default());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let c = Arc::clone(&counts);
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let _ = socket.set_nodelay(true);
                let open = c.open_sockets.fetch_add(1, Ordering::SeqCst) + 1;
                c.max_open_sockets.fetch_max(open, Ordering::SeqCst);
                let most = c.max_client_sockets.load(Ordering::SeqCst);
                let client = crate::sockets::open_client_sockets(addr.port(), most);
                c.max_client_sockets.fetch_max(client, Ordering::SeqCst);
                c.accepted.fetch_add(1, Ordering::SeqCst);
                let guard = SocketGuard(Arc::clone(&c));
                let (c, script) = (Arc::clone(&c), Arc::clone(&script));
                tokio::spawn(async move {
                    let _guard = guard;
                    let service = move |req: hyper::Request<hyper::body::Incoming>| {
                        let (c, script) = (Arc::clone(&c), Arc::clone(&script));
                        async move { Ok::<_, Infallible>(respond(&c, &*script, req).await) }
                    };
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service_fn(service))
                        .await;
                });
            }
        });
        Mock { addr, counts }
    }

    pub fn builder(&self) -> ClientBuilder {
        crate::client_builder()
            .endpoint_url(format!("http://{}", self.addr))
            .static_credentials(ACCESS_KEY, SECRET_KEY, None)
    }
}

type MockBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

async fn respond(
    counts: &Counts,
    script: &Script,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<MockBody> {
    counts.requests.fetch_add(1, Ordering::SeqCst);
    // Path-style: /bucket/key...; the group is the key's first segment.
    let path = req.uri().path().to_owned();
    let raw_key = path.splitn(3, '/').nth(2).unwrap_or_default();
    let key = percent_encoding::percent_decode_str(raw_key)
        .decode_utf8_lossy()
        .into_owned();
    let group = key.split('/').next().unwrap_or_default().to_owned();
    counts.enter(&group);
    let seen = Seen {
        method: req.method().clone(),
        key,
        query: req.uri().query().map(str::to_owned),
        headers: req.headers().clone(),
    };
    let reply = script(&seen);
    tokio::time::sleep(reply.delay).await;
    counts.leave(&group);

    let mut builder = hyper::Response::builder().status(reply.status);
    if let Some(len) = reply.content_length {
        builder = builder.header("content-length", len);
    }
    if !reply.headers.iter().any(|(k, _)| *k == "etag") {
        builder = builder.header("etag", "\"mock-etag\"");
    }
    for (k, v) in &reply.headers {
        builder = builder.header(*k, v.as_str());
    }
    if let Some((n, piece, every)) = reply.trickle_after {
        let body = Bytes::from(reply.body);
        let head = body.slice(..n.min(body.len()));
        let tail = body.slice(n.min(body.len())..);
        let pieces: Vec<Bytes> = (0..tail.len())
            .step_by(piece)
            .map(|i| tail.slice(i..(i + piece).min(tail.len())))
            .collect();
        let s = futures::stream::iter(vec![Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
            Frame::data(head),
        )])
        .chain(futures::stream::iter(pieces).then(move |p| async move {
            tokio::time::sleep(every).await;
            Ok(Frame::data(p))
        }));
        return builder
            .body(BodyExt::boxed(StreamBody::new(s)))
            .expect("response");
    }
    if let Some((n, pause)) = reply.stall_after {
        let body = Bytes::from(reply.body);
        let head = body.slice(..n.min(body.len()));
        let tail = body.slice(n.min(body.len())..);
        let s = futures::stream::iter(vec![Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
            Frame::data(head),
        )])
        .chain(futures::stream::once(async move {
            tokio::time::sleep(pause).await;
            Ok(Frame::data(tail))
        }));
        return builder
            .body(BodyExt::boxed(StreamBody::new(s)))
            .expect("response");
    }
    let body: MockBody = match reply.cut_after {
        None if reply.content_length == Some(reply.body.len() as u64) => {
            Full::new(Bytes::from(reply.body))
                .map_err(|never| match never {})
                .boxed()
        }
        None => {
            // Several frames so the client sees a streamed, chunked body.
            let frames: Vec<Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>> = reply
                .body
                .chunks(1000)
                .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
                .collect();
            BodyExt::boxed(StreamBody::new(futures::stream::iter(frames)))
        }
        Some(n) => {
            let head = Bytes::copy_from_slice(&reply.body[..n.min(reply.body.len())]);
            let s = futures::stream::iter(vec![Ok(Frame::data(head))]).chain(
                futures::stream::once(async {
                    // Let hyper flush the head and the first bytes before the break.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Err::<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>(
                        "cut by the mock".into(),
                    )
                }),
            );
            BodyExt::boxed(StreamBody::new(s))
        }
    };
    builder.body(body).expect("response")
}
