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
    /// Handshakes that resumed an earlier session instead of a full handshake.
    pub resumed: Arc<AtomicUsize>,
}

impl TlsServer {
    pub async fn start(ca: &Ca, leaf: Leaf) -> Self {
        Self::start_with(ca, leaf, false).await
    }

    /// With `close_each`, every response says `Connection: close`, so each request needs a
    /// new connection (and handshake).
    pub async fn start_with(ca: &Ca, leaf: Leaf, close_each: bool) -> Self {
        let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config(leaf));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let handshakes = Arc::new(AtomicUsize::new(0));
        let resumed = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&handshakes);
        let counted_resumed = Arc::clone(&resumed);
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                let counted_resumed = Arc::clone(&counted_resumed);
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(socket).await else {
                        return;
                    };
                    if tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                        counted_resumed.fetch_add(1, Ordering::SeqCst);
                    }
                    let service = service_fn(|req: hyper::Request<hyper::body::Incoming>| {
                        let key = req.uri().path().rsplit('/').next().unwrap_or("").to_owned();
                        async move {
                            let body = Full::new(Bytes::from(content(&key, SIZE)));
                            let mut resp = hyper::Response::builder().header("etag", "\"e\"");
                            if close_each {
                                resp = resp.header("connection", "close");
                            }
                            let resp = resp.body(body).expect("response");
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        TlsServer {
            addr,
            handshakes,
            resumed,
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }
}
