//! The two clients compared by the benchmarks, fetching the same objects from the same server
//! with the same concurrency `n`, and discarding each body as it arrives in order.

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

/// `s3_ordered` with `n` connections, signing every request; returns bytes received.
pub fn s3_ordered_client(addr: SocketAddr, n: usize, max_bytes: u64, signed: bool) -> Client {
    let b = Client::builder()
        .endpoint_url(format!("http://{addr}"))
        .max_connections(n)
        .max_bytes(max_bytes);
    let b = if signed {
        b.static_credentials("AKIDBENCH", "bench-secret", None)
    } else {
        b.anonymous()
    };
    b.build().expect("client")
}

pub async fn run_s3_ordered(client: &Client, objects: Vec<ObjectRef>) -> u64 {
    let mut total = 0u64;
    let mut s = client.get_all(BUCKET, objects);
    while let Some(item) = s.next().await {
        total += item.expect("object").body.len() as u64;
    }
    total
}

pub type Baseline = HyperClient<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

/// The baseline: hyper-util's pooled client, `n` idle connections kept per host.
pub fn baseline_client(n: usize) -> Baseline {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_nodelay(true);
    HyperClient::builder(TokioExecutor::new())
        .pool_max_idle_per_host(n)
        .build(http)
}

/// `futures::stream::iter(..).buffered(n)` over the hyper-util client; each body is collected
/// into one buffer, as a caller needing whole objects would.
pub async fn run_baseline(
    client: &Baseline,
    addr: SocketAddr,
    objects: Vec<ObjectRef>,
    n: usize,
) -> u64 {
    let mut total = 0u64;
    let mut s = futures::stream::iter(objects)
        .map(|o| {
            let uri: hyper::Uri = format!("http://{addr}/{BUCKET}/{}", o.key)
                .parse()
                .expect("uri");
            async move {
                let resp = client.get(uri).await.expect("response");
                resp.into_body().collect().await.expect("body").to_bytes()
            }
        })
        .buffered(n);
    while let Some(body) = s.next().await {
        total += body.len() as u64;
    }
    total
}
