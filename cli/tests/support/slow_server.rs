//! A server of fixed objects whose later parts can be made to trickle: for a command that is
//! still running when a test stops it. Answers GET (whole or `Range`) and HEAD, checks no
//! signature, and counts the GETs of each key.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;

use crate::s3_server::{content, serve};

type Body = BoxBody<Bytes, Infallible>;

pub struct SlowServer {
    pub addr: SocketAddr,
    /// While set, a GET of a range that does not start at 0 trickles: 1 KiB every 20 ms.
    pub slow: Arc<AtomicBool>,
    /// GETs seen, by key.
    pub gets: Arc<Mutex<HashMap<String, usize>>>,
}

impl SlowServer {
    /// Serves `objects` (key, length) of bucket `bkt`, with `content(key, len)` as bodies.
    pub async fn start(objects: &[(&str, usize)]) -> Self {
        let objects: Arc<HashMap<String, Bytes>> = Arc::new(
            objects
                .iter()
                .map(|(k, n)| (k.to_string(), Bytes::from(content(k, *n))))
                .collect(),
        );
        let slow = Arc::new(AtomicBool::new(true));
        let gets: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (s, g) = (slow.clone(), gets.clone());
        serve(
            listener,
            move |req: hyper::Request<hyper::body::Incoming>| {
                let (objects, slow, gets) = (objects.clone(), s.clone(), g.clone());
                async move { Ok::<_, Infallible>(respond(&objects, &slow, &gets, &req)) }
            },
        );
        SlowServer { addr, slow, gets }
    }

    pub fn gets_of(&self, key: &str) -> usize {
        self.gets.lock().unwrap().get(key).copied().unwrap_or(0)
    }
}

fn respond(
    objects: &HashMap<String, Bytes>,
    slow: &AtomicBool,
    gets: &Mutex<HashMap<String, usize>>,
    req: &hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Body> {
    let key = req
        .uri()
        .path()
        .strip_prefix("/bkt/")
        .unwrap_or_default()
        .to_owned();
    let Some(data) = objects.get(&key) else {
        let body = Full::new(Bytes::from_static(b"<Error><Code>NoSuchKey</Code></Error>"));
        return hyper::Response::builder()
            .status(404)
            .body(body.boxed())
            .unwrap();
    };
    let len = data.len() as u64;
    let builder = hyper::Response::builder().header("etag", "\"slow-etag\"");
    if req.method() == hyper::Method::HEAD {
        let body = Full::new(Bytes::new()).boxed();
        return builder.header("content-length", len).body(body).unwrap();
    }
    *gets.lock().unwrap().entry(key).or_default() += 1;
    let range = req
        .headers()
        .get("range")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split_once('-'))
        .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)));
    let (builder, first, last) = match range {
        None => (builder.status(200), 0, len.saturating_sub(1)),
        Some((a, b)) => {
            let b = b.min(len - 1);
            let cr = format!("bytes {a}-{b}/{len}");
            (builder.status(206).header("content-range", cr), a, b)
        }
    };
    let part = data.slice(first as usize..=last as usize);
    let builder = builder.header("content-length", part.len());
    if first == 0 || !slow.load(Ordering::SeqCst) {
        return builder.body(Full::new(part).boxed()).unwrap();
    }
    let pieces: Vec<Bytes> = (0..part.len())
        .step_by(1024)
        .map(|i| part.slice(i..(i + 1024).min(part.len())))
        .collect();
    let stream = futures::stream::iter(pieces).then(|p| async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok::<_, Infallible>(Frame::data(p))
    });
    builder
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap()
}
