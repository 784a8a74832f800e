//! An https object server for the TLS tests: rustls on the server side with a certificate from
//! [`crate::certs`], and every GET answered with `content(key, SIZE)`. It counts TLS handshakes
//! begun.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

pub use crate::certs::{Ca, Leaf};
use crate::s3_server::content;

/// Bytes in every object.
pub const SIZE: usize = 1000;

/// A running https server.
pub struct TlsServer {
    pub addr: SocketAddr,
    /// TLS handshakes begun (one per connection accepted).
    pub handshakes: Arc<AtomicUsize>,
}

impl TlsServer {
    pub async fn start(ca: &Ca, leaf: Leaf) -> Self {
        let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config(leaf));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let handshakes = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&handshakes);
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(socket).await else {
                        return;
                    };
                    let service = service_fn(|req: hyper::Request<hyper::body::Incoming>| {
                        let key = req.uri().path().rsplit('/').next().unwrap_or("").to_owned();
                        async move {
                            let body = Full::new(Bytes::from(content(&key, SIZE)));
                            let resp = hyper::Response::builder()
                                .header("etag", "\"e\"")
                                .body(body)
                                .expect("response");
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        TlsServer { addr, handshakes }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }
}
