//! The clients compared by the benchmarks, fetching the same objects from the same server with
//! the same concurrency `n`, and discarding each body as it arrives in order.

use std::net::SocketAddr;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use s3_ordered::{Client, ObjectRef};

pub const BUCKET: &str = "bench";

pub fn objects(count: usize, size: usize) -> Vec<ObjectRef> {
    (0..count)
        .map(|i| ObjectRef::new(format!("obj/{i:06}"), size as u64))
        .collect()
}

/// `s3_ordered` with `n` connections (signing every request unless `signed` is false), and the
/// default part size for that budget unless `part_size` is given.
pub fn s3_ordered_client(
    addr: SocketAddr,
    n: usize,
    max_bytes: u64,
    signed: bool,
    part_size: Option<u64>,
) -> Client {
    s3_ordered_builder(addr, n, max_bytes, signed, part_size)
        .build()
        .expect("client")
}

/// The builder behind [`s3_ordered_client`], for settings of its own.
pub fn s3_ordered_builder(
    addr: SocketAddr,
    n: usize,
    max_bytes: u64,
    signed: bool,
    part_size: Option<u64>,
) -> s3_ordered::ClientBuilder {
    let mut b = Client::builder()
        .endpoint_url(format!("http://{addr}"))
        .max_connections(n)
        .max_bytes(max_bytes);
    if let Some(p) = part_size {
        b = b.part_size(p);
    }
    if signed {
        b.static_credentials("AKIDBENCH", "bench-secret", None)
    } else {
        b.anonymous()
    }
}

/// Fetches `objects` in order, reading each body (whole or streaming) to its end; returns bytes
/// received.
pub async fn run_s3_ordered(client: &Client, objects: Vec<ObjectRef>) -> u64 {
    let mut total = 0u64;
    let mut s = client.get_all(BUCKET, objects);
    while let Some(item) = s.next().await {
        let mut obj = item.expect("object");
        if obj.body.is_streaming() {
            while let Some(chunk) = obj.body.next_chunk().await {
                total += chunk.expect("chunk").len() as u64;
            }
        } else {
            total += obj.body.size();
        }
    }
    total
}

pub type Baseline = HyperClient<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

/// The baseline over https: the same client with hyper-rustls (ring), trusting the CA in the
/// PEM file `ca`.
pub type BaselineTls = HyperClient<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Empty<Bytes>,
>;

/// [`BaselineTls`] with `n` idle connections kept per host.
pub fn baseline_tls_client(n: usize, ca: &std::path::Path) -> BaselineTls {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots.add(cert.expect("CA certificate")).expect("CA root");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .wrap_connector(http);
    HyperClient::builder(TokioExecutor::new())
        .pool_max_idle_per_host(n)
        .build(https)
}

/// The baseline: hyper-util's pooled client, `n` idle connections kept per host.
pub fn baseline_client(n: usize) -> Baseline {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_nodelay(true);
    HyperClient::builder(TokioExecutor::new())
        .pool_max_idle_per_host(n)
        .build(http)
}

fn uri(addr: SocketAddr, key: &str) -> hyper::Uri {
    format!("http://{addr}/{BUCKET}/{key}")
        .parse()
        .expect("uri")
}

/// [`run_baseline`] over https.
pub async fn run_baseline_tls(
    client: &BaselineTls,
    addr: SocketAddr,
    objects: Vec<ObjectRef>,
    n: usize,
) -> u64 {
    buffered(client, "https", addr, objects, n, false).await
}

/// `futures::stream::iter(..).buffered(n)` over the hyper-util client; each body is collected
/// into one buffer, as a caller needing whole objects would.
pub async fn run_baseline(
    client: &Baseline,
    addr: SocketAddr,
    objects: Vec<ObjectRef>,
    n: usize,
) -> u64 {
    buffered(client, "http", addr, objects, n, false).await
}

/// [`run_baseline`], each body's CRC64NVME computed (with `crc-fast`) and compared with the
/// one the server states, as an application verifying checksums itself would.
pub async fn run_baseline_verified(
    client: &Baseline,
    addr: SocketAddr,
    objects: Vec<ObjectRef>,
    n: usize,
) -> u64 {
    buffered(client, "http", addr, objects, n, true).await
}

async fn buffered<C>(
    client: &HyperClient<C, Empty<Bytes>>,
    scheme: &str,
    addr: SocketAddr,
    objects: Vec<ObjectRef>,
    n: usize,
    verify: bool,
) -> u64
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let mut total = 0u64;
    let mut s = futures::stream::iter(objects)
        .map(|o| async move {
            let url: hyper::Uri = format!("{scheme}://{addr}/{BUCKET}/{}", o.key)
                .parse()
                .expect("uri");
            let resp = client.get(url).await.expect("response");
            let stated = resp.headers().get("x-amz-checksum-crc64nvme").cloned();
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            if verify {
                let stated = stated.expect("the server states a checksum");
                let computed = crate::server::crc64nvme_base64(&body);
                assert_eq!(stated.as_bytes(), computed.as_bytes());
            }
            body
        })
        .buffered(n);
    while let Some(body) = s.next().await {
        total += body.len() as u64;
    }
    total
}

/// What the link carries: every object cut into `part`-byte ranged GETs, `n` at a time over the
/// hyper-util client, each body counted frame by frame and never held.
pub async fn run_ranged_ceiling(
    client: &Baseline,
    addr: SocketAddr,
    objects: Vec<ObjectRef>,
    n: usize,
    part: u64,
) -> u64 {
    let ranges = objects.into_iter().flat_map(|o| {
        let size = o.size.expect("sized");
        (0..size.div_ceil(part)).map(move |i| {
            let first = i * part;
            (o.key.clone(), first, (first + part).min(size) - 1)
        })
    });
    futures::stream::iter(ranges)
        .map(|(key, first, last)| async move {
            let req = hyper::Request::get(uri(addr, &key))
                .header("range", format!("bytes={first}-{last}"))
                .body(Empty::new())
                .expect("request");
            let mut body = client.request(req).await.expect("response").into_body();
            let mut got = 0u64;
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.expect("frame").into_data() {
                    got += data.len() as u64;
                }
            }
            got
        })
        .buffer_unordered(n)
        .fold(0, |sum, got| async move { sum + got })
        .await
}

/// A plain HTTP load loop, as a load generator such as `wrk` runs it: `n` keep-alive HTTP/1.1
/// connections (hyper's own, no pool), each sending the next GET as soon as its last body has
/// been read, bodies counted frame by frame and dropped. No signing, no ordering, no memory
/// accounting: the ceiling of requests per second for this server and this machine.
pub async fn run_plain_loop(addr: SocketAddr, objects: Vec<ObjectRef>, n: usize) -> u64 {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let objects = Arc::new(objects);
    let next = Arc::new(AtomicUsize::new(0));
    let host = addr.to_string();
    let loops: Vec<_> = (0..n)
        .map(|_| {
            let (objects, next, host) = (Arc::clone(&objects), Arc::clone(&next), host.clone());
            tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
                stream.set_nodelay(true).expect("nodelay");
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                        .await
                        .expect("handshake");
                tokio::spawn(conn);
                let mut got = 0u64;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(o) = objects.get(i) else { break };
                    let req = hyper::Request::get(format!("/{BUCKET}/{}", o.key))
                        .header(hyper::header::HOST, host.as_str())
                        .body(Empty::<Bytes>::new())
                        .expect("request");
                    let mut body = sender
                        .send_request(req)
                        .await
                        .expect("response")
                        .into_body();
                    while let Some(frame) = body.frame().await {
                        if let Ok(data) = frame.expect("frame").into_data() {
                            got += data.len() as u64;
                        }
                    }
                }
                got
            })
        })
        .collect();
    let mut total = 0;
    for l in loops {
        total += l.await.expect("loop");
    }
    total
}
