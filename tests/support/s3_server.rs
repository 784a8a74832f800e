//! A real S3 server in process for tests: s3s + s3s-fs over a temporary directory, which
//! verifies SigV4 with its own code. Binds 127.0.0.1 on an ephemeral port and sets
//! `TCP_NODELAY` on accepted sockets (without it every small GET waits on delayed ACKs).
//! Shared by the library's and the CLI's integration tests.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

use bytes::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use s3_ordered::{Client, ClientBuilder};
use tokio::net::TcpListener;

pub const ACCESS_KEY: &str = "AKIDTESTEXAMPLE";
pub const SECRET_KEY: &str = "test/secret+key/EXAMPLE";

/// Deterministic contents for `key`, `len` bytes long.
pub fn content(key: &str, len: usize) -> Vec<u8> {
    let seed = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Accepts connections on `listener` and serves each with `service` until the runtime ends.
pub fn serve<S, F, B>(listener: TcpListener, service: S)
where
    S: Fn(hyper::Request<hyper::body::Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<hyper::Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let _ = socket.set_nodelay(true);
            let service = service.clone();
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), service_fn(service))
                    .await;
            });
        }
    });
}

/// What the server saw of one request.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub method: hyper::Method,
    pub uri: hyper::Uri,
    pub headers: hyper::HeaderMap,
}

impl SeenRequest {
    /// The value of header `name`, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A real S3 server (s3s-fs) over a temporary directory.
pub struct S3Server {
    pub addr: SocketAddr,
    root: tempfile::TempDir,
    seen: std::sync::Arc<std::sync::Mutex<Vec<SeenRequest>>>,
}

impl S3Server {
    /// A server that knows one key pair, [`ACCESS_KEY`] and [`SECRET_KEY`].
    pub async fn start() -> Self {
        Self::start_with_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY)).await
    }

    /// A server that looks secret keys up with `auth`.
    pub async fn start_with_auth(auth: impl s3s::auth::S3Auth) -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        let fs = s3s_fs::FileSystem::new(root.path()).expect("s3s-fs");
        let service = {
            let mut b = s3s::service::S3ServiceBuilder::new(fs);
            b.set_auth(auth);
            b.build()
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        serve(listener, move |req| {
            let service = service.clone();
            log.lock().expect("log").push(SeenRequest {
                method: req.method().clone(),
                uri: req.uri().clone(),
                headers: req.headers().clone(),
            });
            async move {
                let resp = hyper::service::Service::call(&service, req)
                    .await
                    .unwrap_or_else(|e| {
                        panic!("s3s service error: {e:?}");
                    });
                Ok::<_, Infallible>(resp)
            }
        });
        S3Server { addr, root, seen }
    }

    /// Every request received so far, in order of arrival.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.seen.lock().expect("log").clone()
    }

    /// Stores an object by writing the file s3s-fs serves it from.
    pub fn put(&self, bucket: &str, key: &str, data: &[u8]) {
        let path = self.root.path().join(bucket).join(key);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, data).expect("write");
    }

    pub fn create_bucket(&self, bucket: &str) {
        std::fs::create_dir_all(self.root.path().join(bucket)).expect("mkdir");
    }

    pub fn builder(&self) -> ClientBuilder {
        Client::builder()
            .endpoint_url(format!("http://{}", self.addr))
            .static_credentials(ACCESS_KEY, SECRET_KEY, None)
    }
}
