//! An https object server for the TLS tests: certificates made by rcgen (a private CA, and leaf
//! certificates it signs: for 127.0.0.1, for another name, expired), rustls on the server side,
//! and every GET answered with `content(key, SIZE)`. It counts TLS handshakes begun.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
use tokio::net::TcpListener;

use crate::s3_server::content;

/// Bytes in every object.
pub const SIZE: usize = 1000;

/// A private CA.
pub struct Ca {
    pub pem: String,
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// Which leaf certificate the server shows.
#[derive(Clone, Copy, Debug)]
pub enum Leaf {
    /// For 127.0.0.1, valid now.
    Good,
    /// For `other.example` only.
    OtherName,
    /// For 127.0.0.1, expired in 2001.
    Expired,
}

impl Ca {
    pub fn new() -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "s3-ordered test CA");
        let cert = params.self_signed(&key).expect("CA certificate");
        Ca {
            pem: cert.pem(),
            cert,
            key,
        }
    }

    fn leaf(&self, leaf: Leaf) -> (Vec<u8>, Vec<u8>) {
        let key = KeyPair::generate().expect("leaf key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("leaf params");
        match leaf {
            Leaf::OtherName => params
                .subject_alt_names
                .push(SanType::DnsName("other.example".try_into().expect("name"))),
            Leaf::Good | Leaf::Expired => params
                .subject_alt_names
                .push(SanType::IpAddress([127, 0, 0, 1].into())),
        }
        if let Leaf::Expired = leaf {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("leaf certificate");
        (cert.der().to_vec(), key.serialize_der())
    }
}

/// A running https server.
pub struct TlsServer {
    pub addr: SocketAddr,
    /// TLS handshakes begun (one per connection accepted).
    pub handshakes: Arc<AtomicUsize>,
}

impl TlsServer {
    pub async fn start(ca: &Ca, leaf: Leaf) -> Self {
        let (cert, key) = ca.leaf(leaf);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.into()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()),
            )
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
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
