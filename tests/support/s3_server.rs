//! A real S3 server in process for tests: s3s + s3s-fs over a temporary directory, which
//! verifies SigV4 with its own code. Binds 127.0.0.1 on an ephemeral port and sets
//! `TCP_NODELAY` on accepted sockets (without it every small GET waits on delayed ACKs).
//! Shared by the library's and the CLI's integration tests.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

use bytes::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use s3_ordered::ClientBuilder;
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

    /// The access key and region of the SigV4 signature's credential scope, if signed.
    pub fn signed_by(&self) -> Option<(&str, &str)> {
        scope(self.header("authorization")?)
    }

    /// The names the signature covers (`SignedHeaders`).
    pub fn signed_headers(&self) -> Vec<&str> {
        self.header("authorization")
            .and_then(|a| a.split("SignedHeaders=").nth(1))
            .and_then(|s| s.split(',').next())
            .map(|s| s.split(';').collect())
            .unwrap_or_default()
    }
}

/// The access key and region of an `Authorization: AWS4-HMAC-SHA256 Credential=KEY/DATE/REGION/…`.
fn scope(authorization: &str) -> Option<(&str, &str)> {
    let mut scope = authorization.split("Credential=").nth(1)?.split('/');
    let key = scope.next()?;
    let region = scope.nth(1)?;
    Some((key, region))
}

/// How a bucket in another region answers a request signed for the wrong one, as S3 does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrongRegion {
    /// `301 PermanentRedirect` with `x-amz-bucket-region`.
    Moved,
    /// `400 AuthorizationHeaderMalformed` whose body names the `<Region>`.
    Malformed,
}

type Regions = std::sync::Arc<std::sync::Mutex<HashMap<String, (String, WrongRegion)>>>;

/// A real S3 server (s3s-fs) over a temporary directory.
pub struct S3Server {
    pub addr: SocketAddr,
    root: tempfile::TempDir,
    seen: std::sync::Arc<std::sync::Mutex<Vec<SeenRequest>>>,
    regions: Regions,
}

/// The bucket of a path-style request, and the region its signature's scope names.
fn bucket_and_region(req: &hyper::Request<hyper::body::Incoming>) -> Option<(String, String)> {
    let bucket = req.uri().path().trim_start_matches('/').split('/').next()?;
    let (_, region) = scope(req.headers().get("authorization")?.to_str().ok()?)?;
    Some((bucket.to_owned(), region.to_owned()))
}

/// S3's answer to a request for a bucket in `region` signed for `signed` (a HEAD's carries
/// `x-amz-bucket-region` in either form, having no body).
fn wrong_region(
    region: &str,
    signed: &str,
    form: WrongRegion,
    head: bool,
) -> hyper::Response<s3s::Body> {
    let (status, body) = match form {
        WrongRegion::Moved => (
            301,
            format!(
                "<Error><Code>PermanentRedirect</Code><Message>The bucket you are attempting to \
                 access must be addressed using the specified endpoint.</Message>\
                 <Endpoint>s3.{region}.amazonaws.com</Endpoint></Error>"
            ),
        ),
        WrongRegion::Malformed => (
            400,
            format!(
                "<Error><Code>AuthorizationHeaderMalformed</Code><Message>The authorization \
                 header is malformed; the region '{signed}' is wrong; expecting '{region}'\
                 </Message><Region>{region}</Region></Error>"
            ),
        ),
    };
    let mut b = hyper::Response::builder()
        .status(status)
        .header("content-type", "application/xml");
    if form == WrongRegion::Moved || head {
        b = b.header("x-amz-bucket-region", region);
    }
    b.body(s3s::Body::from(body)).expect("response")
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
        let regions = Regions::default();
        let (log, bucket_regions) = (seen.clone(), regions.clone());
        serve(listener, move |req| {
            let service = service.clone();
            log.lock().expect("log").push(SeenRequest {
                method: req.method().clone(),
                uri: req.uri().clone(),
                headers: req.headers().clone(),
            });
            let head = req.method() == hyper::Method::HEAD;
            let redirect = bucket_and_region(&req).and_then(|(bucket, signed)| {
                let regions = bucket_regions.lock().expect("regions");
                let (region, form) = regions.get(&bucket)?;
                (*region != signed).then(|| wrong_region(region, &signed, *form, head))
            });
            async move {
                if let Some(resp) = redirect {
                    return Ok(resp);
                }
                let resp = hyper::service::Service::call(&service, req)
                    .await
                    .unwrap_or_else(|e| {
                        panic!("s3s service error: {e:?}");
                    });
                Ok::<_, Infallible>(resp)
            }
        });
        S3Server {
            addr,
            root,
            seen,
            regions,
        }
    }

    /// Puts `bucket` in `region`: a request for it signed for another region gets S3's answer
    /// in `form`.
    pub fn set_bucket_region(&self, bucket: &str, region: &str, form: WrongRegion) {
        self.regions
            .lock()
            .expect("regions")
            .insert(bucket.to_owned(), (region.to_owned(), form));
    }

    /// How many requests so far were signed for another region than `region`.
    pub fn signed_for_other_than(&self, region: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.signed_by().is_some_and(|(_, signed)| signed != region))
            .count()
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

    /// Stores an object through s3s-fs's own PutObject with `algorithm` (`"CRC64NVME"`,
    /// `"CRC32C"`, `"CRC32"`, `"SHA1"`, `"SHA256"`): the server computes the checksum with its
    /// own code, stores it, and returns it on GET and HEAD, as S3 does.
    pub async fn put_with_checksum(&self, bucket: &str, key: &str, data: &[u8], algorithm: &str) {
        use s3s::dto::{ChecksumAlgorithm, PutObjectInput, StreamingBlob};
        let fs = s3s_fs::FileSystem::new(self.root.path()).expect("s3s-fs");
        // The value as an uploader sends it, computed by s3s's own code (which PutObject
        // checks against the body).
        let mut hasher = s3s::checksum::ChecksumHasher::default();
        match algorithm {
            "CRC32" => hasher.crc32 = Some(Default::default()),
            "CRC32C" => hasher.crc32c = Some(Default::default()),
            "SHA1" => hasher.sha1 = Some(Default::default()),
            "SHA256" => hasher.sha256 = Some(Default::default()),
            "CRC64NVME" => hasher.crc64nvme = Some(Default::default()),
            other => panic!("no such checksum algorithm: {other}"),
        }
        hasher.update(data);
        let sums = hasher.finalize();
        let input = PutObjectInput {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            body: Some(StreamingBlob::from(s3s::Body::from(data.to_vec()))),
            content_length: Some(data.len() as i64),
            checksum_algorithm: Some(ChecksumAlgorithm::from(algorithm.to_owned())),
            checksum_crc32: sums.checksum_crc32,
            checksum_crc32c: sums.checksum_crc32c,
            checksum_sha1: sums.checksum_sha1,
            checksum_sha256: sums.checksum_sha256,
            checksum_crc64nvme: sums.checksum_crc64nvme,
            ..Default::default()
        };
        let req = s3s::S3Request {
            input,
            method: hyper::Method::PUT,
            uri: format!("/{bucket}/{key}").parse().expect("uri"),
            headers: Default::default(),
            extensions: Default::default(),
            credentials: None,
            region: None,
            service: None,
            trailing_headers: None,
        };
        s3s::S3::put_object(&fs, req).await.expect("put_object");
    }

    pub fn create_bucket(&self, bucket: &str) {
        std::fs::create_dir_all(self.root.path().join(bucket)).expect("mkdir");
    }

    pub fn builder(&self) -> ClientBuilder {
        crate::client_builder()
            .endpoint_url(format!("http://{}", self.addr))
            .static_credentials(ACCESS_KEY, SECRET_KEY, None)
    }
}
