//! A minimal in-process object server for benchmarks, over http or https: every GET gets (a range of) the same
//! in-memory payload (zero-copy `Bytes` slices), so the client is what is measured. Loopback
//! only, `TCP_NODELAY`. It serves `Range` as S3 does (206 with `Content-Range`, clamped at the
//! end), and states the payload's CRC64NVME (`x-amz-checksum-crc64nvme`) on every reply that
//! carries the whole object and on HEAD, as S3 does for an object stored with one.
//!
//! With a [`Pace`] it imitates a remote link: each response waits before its first byte and each
//! connection sends at most a fixed rate (a frame every `frame / rate` seconds), as one S3
//! connection does seen from one instance; optionally one reply in N waits far longer before
//! its first byte (S3's tail).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// How the server imitates a remote link.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Wait before the response head.
    pub first_byte: Duration,
    /// Bytes per second per connection.
    pub rate: u64,
    /// One reply in `every` (the same ones every run: reply number `every / 2`, then every
    /// `every`-th) waits this long before its head instead, as S3's far tail.
    pub tail: Option<Tail>,
}

/// A fraction of replies whose first byte comes late.
#[derive(Debug, Clone, Copy)]
pub struct Tail {
    pub every: u64,
    pub first_byte: Duration,
}

/// Replies started so far, for [`Tail`].
static REPLIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Starts an unpaced server on its own runtime thread and returns its address.
pub fn start(object_size: usize) -> SocketAddr {
    start_paced(object_size, None)
}

/// Starts the server on its own runtime thread (one core's worth) and returns its address.
pub fn start_paced(object_size: usize, pace: Option<Pace>) -> SocketAddr {
    start_with(object_size, pace, None)
}

/// As [`start_paced`], speaking https with `tls` when given.
pub fn start_with(
    object_size: usize,
    pace: Option<Pace>,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
) -> SocketAddr {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let payload = Bytes::from((0..object_size).map(|i| (i * 7) as u8).collect::<Vec<u8>>());
    let checksum: std::sync::Arc<str> = crc64nvme_base64(&payload).into();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("server runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(listener.local_addr().expect("addr"))
                .expect("send addr");
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let _ = socket.set_nodelay(true);
                let (payload, checksum) = (payload.clone(), checksum.clone());
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let (payload, checksum) = (payload.clone(), checksum.clone());
                        async move {
                            Ok::<_, Infallible>(respond(&req, payload, &checksum, pace).await)
                        }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    let _ = match acceptor {
                        None => http.serve_connection(TokioIo::new(socket), service).await,
                        Some(acceptor) => {
                            let Ok(tls) = acceptor.accept(socket).await else {
                                return;
                            };
                            http.serve_connection(TokioIo::new(tls), service).await
                        }
                    };
                });
            }
        });
    });
    rx.recv().expect("server address")
}

/// Base64 of the big-endian CRC64NVME of `data`, as S3 states it.
pub fn crc64nvme_base64(data: &[u8]) -> String {
    use base64::Engine as _;
    let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Nvme, data);
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

async fn respond<B>(
    req: &hyper::Request<B>,
    payload: Bytes,
    checksum: &str,
    pace: Option<Pace>,
) -> hyper::Response<Body> {
    let len = payload.len() as u64;
    let range = req
        .headers()
        .get("range")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split_once('-'))
        .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)));
    let mut resp = hyper::Response::builder().header("etag", "\"bench\"");
    let body = match range {
        Some((first, last)) if first < len && first <= last => {
            let last = last.min(len - 1);
            resp = resp
                .status(206)
                .header("content-range", format!("bytes {first}-{last}/{len}"));
            payload.slice(first as usize..=last as usize)
        }
        Some(_) => {
            return resp
                .status(416)
                .header("content-range", format!("bytes */{len}"))
                .body(Full::new(Bytes::new()).boxed())
                .expect("response");
        }
        None => payload,
    };
    if body.len() as u64 == len {
        resp = resp.header("x-amz-checksum-crc64nvme", checksum);
    }
    resp = resp.header("content-length", body.len());
    let Some(pace) = pace else {
        return resp.body(Full::new(body).boxed()).expect("response");
    };
    let n = REPLIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let wait = match pace.tail {
        Some(t) if n % t.every == t.every / 2 => t.first_byte,
        _ => pace.first_byte,
    };
    tokio::time::sleep(wait).await;
    // Frames on a fixed schedule from the first byte, so the rate holds on average whatever the
    // timer's granularity.
    const FRAME: usize = 64 << 10;
    let start = tokio::time::Instant::now();
    let frames = (0..body.len().div_ceil(FRAME)).map(move |i| {
        let at = start + Duration::from_secs_f64((i * FRAME) as f64 / pace.rate as f64);
        let chunk = body.slice(i * FRAME..((i + 1) * FRAME).min(body.len()));
        (at, chunk)
    });
    let stream = futures::stream::iter(frames).then(|(at, chunk)| async move {
        tokio::time::sleep_until(at).await;
        Ok::<_, Infallible>(Frame::data(chunk))
    });
    resp.body(BodyExt::boxed(StreamBody::new(stream)))
        .expect("response")
}
