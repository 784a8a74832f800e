//! Client configuration: the [`ClientBuilder`], its defaults, and validation.
//!
//! Every setting has a default (named constants below); [`ClientBuilder::build`] checks the whole
//! combination and refuses it with a [`ConfigError`] that names the field at fault.

use std::sync::Arc;
use std::time::Duration;

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use http::header::HeaderValue;
use http::uri::Uri;

mod budgets;
mod endpoint;

pub use budgets::{DEFAULT_PART_SIZE, MAX_SLAB_SIZE, MIN_SLAB_SIZE};
pub(crate) use endpoint::{aws_endpoint, is_region_name};
pub use endpoint::{Addressing, DEFAULT_REGION};

use budgets::{BudgetSettings, Budgets};
use endpoint::Endpoint;

use crate::error::ConfigError;
use crate::hedge::HedgeConfig;
use crate::proxy::{NoProxy, Proxies, Proxy};
use crate::retry::{RetryConfig, ThrottleConfig};
use crate::tls::{Bundle, TlsSettings};

/// Default `max_connections`: enough parallel GETs to fill a 10 Gbit/s link at S3's typical
/// ~85-90 MB/s per connection (S3 performance guidelines, "Horizontal scaling of connections").
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;

/// Default `max_bytes`: 256 MiB of body memory, room for 64 connections × 4 MiB of look-ahead.
pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;

/// Default slab size: 64 KiB. Small objects waste at most one slab each, and a 256 MiB budget
/// still holds 4096 small objects at once (see `PERFORMANCE.md`).
pub const DEFAULT_SLAB_SIZE: usize = 64 << 10;

/// Default connect timeout (TCP and TLS handshake): 10 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Default stall timeout: 30 s without a response head or a body byte. Not a total deadline: a
/// long healthy download is never cut.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Default floor on a body's rate: 64 KiB/s over 5 s, about a thousandth of what one healthy
/// connection to S3 brings.
pub const DEFAULT_MIN_BODY_RATE: MinBodyRate = MinBodyRate {
    bytes_per_second: 64 << 10,
    window: Duration::from_secs(5),
};

/// The slowest a response body may arrive ([`ClientBuilder::min_body_rate`]): a body that
/// brings fewer than `bytes_per_second` over a `window` is abandoned like a stalled one, and
/// the part is resumed from its first missing byte (`Range`, same `If-Match`) on a new
/// connection — so a trickling connection cannot hold up every object behind it for the whole
/// stall timeout. Such a resume spends no retry attempt; a part is resumed for its rate at most
/// twice, after which only the stall timeout applies to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinBodyRate {
    /// The floor, in bytes per second; 0 turns the check off.
    pub bytes_per_second: u64,
    /// How long the rate is measured over, at least 100 ms: the first window starts at the
    /// body's first wait for bytes, not at the response head.
    pub window: Duration,
}

impl Default for MinBodyRate {
    fn default() -> Self {
        DEFAULT_MIN_BODY_RATE
    }
}

impl MinBodyRate {
    /// No floor: only the stall timeout limits a slow body.
    pub const fn off() -> Self {
        MinBodyRate {
            bytes_per_second: 0,
            window: DEFAULT_MIN_BODY_RATE.window,
        }
    }

    /// Whether a floor applies.
    pub const fn is_on(&self) -> bool {
        self.bytes_per_second > 0
    }
}

/// The shortest [`MinBodyRate::window`].
const MIN_BODY_RATE_WINDOW: Duration = Duration::from_millis(100);

/// What carries the HTTP/1.1 exchanges on the pool's connections. Both run under the same
/// connection, memory and retry budgets, with bodies read into the same slabs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum HttpTransport {
    /// This crate's own HTTP/1.1 (`httparse` heads, bodies read straight into the slabs, its
    /// own TLS record layer over rustls): one copy less per body byte and a few allocations per
    /// request. The default.
    #[default]
    Native,
    /// hyper's `client::conn::http1` over tokio-rustls: the reference HTTP/1.1 client of the
    /// Rust ecosystem, at the cost of a copy of every body byte and more allocations per
    /// request (PERFORMANCE.md). Needs the crate feature `hyper` (on by default).
    Hyper,
}

/// Whether object checksums are asked for and verified.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChecksumMode {
    /// Nothing is asked for or checked; every object says
    /// [`NotVerified::Off`](crate::NotVerified::Off).
    Off,
    /// Ask for checksums (`x-amz-checksum-mode: ENABLED`) and verify every object the server
    /// has a full-object checksum for, or (fetched in parts) a composite one with its upload
    /// parts' checksums; an object without one is delivered, saying so. The default, as in the
    /// AWS SDKs.
    #[default]
    WhenAvailable,
    /// As `WhenAvailable`, and an object with no checksum to verify it by fails with
    /// [`ErrorKind::ChecksumMissing`](crate::ErrorKind::ChecksumMissing).
    Required,
}

impl ChecksumMode {
    /// True unless [`ChecksumMode::Off`].
    pub(crate) fn is_on(self) -> bool {
        self != ChecksumMode::Off
    }
}

/// Where credentials come from.
#[derive(Clone)]
pub(crate) enum CredentialSource {
    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`, read at `build()`.
    Environment,
    Provider(SharedCredentialsProvider),
    /// Requests are sent unsigned (public buckets).
    Anonymous,
}

impl std::fmt::Debug for CredentialSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The provider's own Debug may print keys (static `Credentials` mask them, but a
        // user's provider might not), so only the variant is shown.
        f.write_str(match self {
            CredentialSource::Environment => "Environment",
            CredentialSource::Provider(_) => "Provider(..)",
            CredentialSource::Anonymous => "Anonymous",
        })
    }
}

/// Builds a [`Client`](crate::Client); start with [`Client::builder`](crate::Client::builder).
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until build() is called"]
pub struct ClientBuilder {
    pub(crate) endpoint: Option<String>,
    pub(crate) region: Option<String>,
    pub(crate) credentials: CredentialSource,
    pub(crate) addressing: Option<Addressing>,
    pub(crate) tls: TlsSettings,
    max_connections: usize,
    max_connections_per_request: Option<usize>,
    max_bytes: u64,
    slab_size: usize,
    part_size: Option<u64>,
    stream_threshold: Option<u64>,
    connect_timeout: Duration,
    stall_timeout: Duration,
    min_body_rate: MinBodyRate,
    retry: RetryConfig,
    throttle: ThrottleConfig,
    hedge: HedgeConfig,
    checksum_mode: ChecksumMode,
    transport: HttpTransport,
    requester_pays: bool,
    expected_bucket_owner: Option<String>,
    sse_customer_key: Option<SseCustomerKey>,
    http_proxy: Option<String>,
    https_proxy: Option<String>,
    no_proxy: Option<String>,
    s3_express_sessions: bool,
}

/// An SSE-C key: 32 bytes, never shown.
#[derive(Clone)]
struct SseCustomerKey(Vec<u8>);

impl std::fmt::Debug for SseCustomerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SseCustomerKey(..)")
    }
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            endpoint: None,
            region: None,
            credentials: CredentialSource::Environment,
            addressing: None,
            tls: TlsSettings::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_request: None,
            max_bytes: DEFAULT_MAX_BYTES,
            slab_size: DEFAULT_SLAB_SIZE,
            part_size: None,
            stream_threshold: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            min_body_rate: DEFAULT_MIN_BODY_RATE,
            retry: RetryConfig::default(),
            throttle: ThrottleConfig::default(),
            hedge: HedgeConfig::default(),
            checksum_mode: ChecksumMode::WhenAvailable,
            transport: HttpTransport::Native,
            requester_pays: false,
            expected_bucket_owner: None,
            sse_customer_key: None,
            http_proxy: None,
            https_proxy: None,
            no_proxy: None,
            s3_express_sessions: true,
        }
    }
}

impl ClientBuilder {
    /// The S3 endpoint, `http://host:port` or `https://host`.
    /// Default: `https://s3.<region>.amazonaws.com`.
    pub fn endpoint_url(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// The signing region; a bucket found in another region (from a reply that names it) is
    /// signed for its own from then on. Default: `us-east-1`.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Static access key, secret key and optional session token.
    pub fn static_credentials(
        self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        session_token: Option<String>,
    ) -> Self {
        let creds = Credentials::new(
            access_key_id,
            secret_access_key,
            session_token,
            None,
            "static",
        );
        self.credentials_provider(creds)
    }

    /// Any credentials provider (static `Credentials` are one). The provider is asked on the
    /// first request; credentials that expire are asked for again before they do (five
    /// minutes early, or a quarter of their lifetime if that is shorter), by one request while
    /// the others sign with the ones cached, and a refresh that fails while those are still
    /// valid is tried again later without failing anything.
    pub fn credentials_provider(mut self, provider: impl ProvideCredentials + 'static) -> Self {
        self.credentials = CredentialSource::Provider(SharedCredentialsProvider::new(provider));
        self
    }

    /// Read `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN` at `build()`.
    /// Default.
    pub fn credentials_from_env(mut self) -> Self {
        self.credentials = CredentialSource::Environment;
        self
    }

    /// Send requests unsigned, for public buckets.
    pub fn anonymous(mut self) -> Self {
        self.credentials = CredentialSource::Anonymous;
        self
    }

    /// Path-style or virtual-hosted requests. Default: virtual-hosted for AWS endpoints
    /// (`*.amazonaws.com` and the default endpoint), path-style for any other.
    pub fn addressing(mut self, addressing: Addressing) -> Self {
        self.addressing = Some(addressing);
        self
    }

    /// Also trusts the CA certificates in this PEM file, for an https endpoint whose
    /// certificate a private CA signed. Beside the webpki roots and the platform's store, which
    /// are always trusted; once any bundle is given, `AWS_CA_BUNDLE` is not read. Default: the
    /// file `AWS_CA_BUNDLE` names, if set. A file that cannot be read or holds no certificate
    /// makes [`build`](crate::ClientBuilder::build) fail (field `ca_bundle`).
    pub fn ca_bundle_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.tls.bundles.push(Bundle::File(path.into()));
        self
    }

    /// Also trusts the CA certificates in this PEM text; see
    /// [`ca_bundle_file`](Self::ca_bundle_file).
    pub fn ca_bundle_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls.bundles.push(Bundle::Pem(pem.into()));
        self
    }

    /// Also trusts these roots; see [`ca_bundle_file`](Self::ca_bundle_file).
    pub fn root_certificates(mut self, roots: rustls::RootCertStore) -> Self {
        self.tls.bundles.push(Bundle::Roots(roots));
        self
    }

    /// Uses this rustls configuration for https, as given: its roots or verifier, versions,
    /// ALPN and session cache. Replaces every other TLS setting. For a verifier of one's own;
    /// the defaults suit AWS and private CAs.
    pub fn tls_config(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls.config = Some(config);
        self
    }

    /// The most connections open at once, across all requests of the client.
    /// Default: [`DEFAULT_MAX_CONNECTIONS`].
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// The most GETs one `get_all` call may have in flight. Default: `max_connections`.
    pub fn max_connections_per_request(mut self, n: usize) -> Self {
        self.max_connections_per_request = Some(n);
        self
    }

    /// The most body memory held at once, in bytes: being downloaded, or delivered and not yet
    /// dropped. Default: [`DEFAULT_MAX_BYTES`].
    pub fn max_bytes(mut self, n: u64) -> Self {
        self.max_bytes = n;
        self
    }

    /// The unit of memory accounting; an object takes `ceil(size / slab_size)` slabs.
    /// Between [`MIN_SLAB_SIZE`] and [`MAX_SLAB_SIZE`]. Default: [`DEFAULT_SLAB_SIZE`].
    pub fn slab_size(mut self, n: usize) -> Self {
        self.slab_size = n;
        self
    }

    /// Objects larger than this are fetched as ranged GETs of this size, in parallel, each part
    /// on its own connection and counted against `max_connections_per_request`. A whole number
    /// of slabs, no larger than `max_bytes`. Default: [`DEFAULT_PART_SIZE`], lowered to
    /// `max_bytes / max_connections_per_request` when the budget is smaller.
    pub fn part_size(mut self, n: u64) -> Self {
        self.part_size = Some(n);
        self
    }

    /// Objects larger than this (in bytes) are delivered as streaming bodies: handed out as soon
    /// as their first part is in, read part by part with [`Body::next_chunk`](crate::Body::next_chunk),
    /// each part's memory returning to the budget as it is read. Smaller ones are delivered
    /// whole. At most `max_bytes` (a whole body must fit the budget). Default: `max_bytes`, so
    /// that only objects that cannot be held at all stream. Objects whose size is not given
    /// ([`ObjectRef::without_size`](crate::ObjectRef::without_size)) follow the same rule once
    /// their first reply tells the size; until then, later objects are requested only within
    /// `max_bytes` less this threshold, so half the budget lets unsized objects overlap.
    pub fn stream_threshold(mut self, n: u64) -> Self {
        self.stream_threshold = Some(n);
        self
    }

    /// Limit on establishing one connection (TCP connect plus TLS handshake).
    /// Default: [`DEFAULT_CONNECT_TIMEOUT`].
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Longest wait for a response head, or between two pieces of a body, before the attempt
    /// is abandoned as stalled (and retried). Not a total deadline.
    /// Default: [`DEFAULT_STALL_TIMEOUT`].
    pub fn stall_timeout(mut self, timeout: Duration) -> Self {
        self.stall_timeout = timeout;
        self
    }

    /// The slowest a response body may arrive before the attempt is abandoned and its part
    /// resumed on a new connection. Default: [`DEFAULT_MIN_BODY_RATE`];
    /// [`MinBodyRate::off`] leaves only the stall timeout.
    pub fn min_body_rate(mut self, rate: MinBodyRate) -> Self {
        self.min_body_rate = rate;
        self
    }

    /// Retry policy. Default: [`RetryConfig::default`].
    pub fn retry(mut self, retry: RetryConfig) -> Self {
        self.retry = retry;
        self
    }

    /// Behaviour under throttling: the adaptive limit on requests in flight, its bounds, and
    /// how long an object may be refused before it fails. Default: [`ThrottleConfig::default`].
    pub fn throttle(mut self, throttle: ThrottleConfig) -> Self {
        self.throttle = throttle;
        self
    }

    /// When a GET whose response head is late is sent again on another connection, the first
    /// head to arrive winning: after a threshold learned from recent first-byte times, within
    /// a budget, never beyond the connection budgets or while throttled. Default:
    /// [`HedgeConfig::default`] (on); [`HedgeConfig::off`] turns it off.
    pub fn hedge(mut self, hedge: HedgeConfig) -> Self {
        self.hedge = hedge;
        self
    }

    /// Whether object checksums are asked for and verified. Default:
    /// [`ChecksumMode::WhenAvailable`].
    ///
    /// The bytes of an object are checked against the full-object checksum the server stores
    /// (CRC64NVME, CRC32C, CRC32, SHA-256 or SHA-1). An object fetched in one GET gets it with
    /// the reply. One fetched in ranged parts (above the part size) costs one HEAD more, made
    /// after its first part: the parts' CRCs are combined in order (a SHA digest is computed
    /// over the parts in order). A mismatch is fetched again once on new connections (every part of an object in parts), then fails
    /// the object with [`ErrorKind::ChecksumMismatch`](crate::ErrorKind::ChecksumMismatch)
    /// (for a streaming body, as its last item). Each [`Object`](crate::Object) says whether it
    /// was verified ([`Checksum`](crate::Checksum)); [`Stats`](crate::Stats) counts both.
    pub fn checksum_mode(mut self, mode: ChecksumMode) -> Self {
        self.checksum_mode = mode;
        self
    }

    /// What speaks HTTP/1.1 on the connections: this crate's own exchange (the default) or
    /// hyper's; see [`HttpTransport`].
    pub fn transport(mut self, transport: HttpTransport) -> Self {
        self.transport = transport;
        self
    }

    /// Whether requests to a directory bucket (S3 Express One Zone, a name ending `--x-s3`)
    /// are signed with a session: one `CreateSession` per bucket, shared by all the client's
    /// requests to it and made again before it expires, as AWS requires. Off, they are signed
    /// with the client's own credentials for the service `s3express`: for a server that takes
    /// directory-bucket names but not sessions. Default: on.
    pub fn s3_express_sessions(mut self, on: bool) -> Self {
        self.s3_express_sessions = on;
        self
    }

    /// Sends `x-amz-request-payer: requester` with every request, agreeing to pay for the
    /// requests and the data of a requester-pays bucket (without it, such a bucket refuses
    /// every request with 403). Default: off.
    pub fn requester_pays(mut self, pays: bool) -> Self {
        self.requester_pays = pays;
        self
    }

    /// Sends `x-amz-expected-bucket-owner` with every request: S3 refuses (403) a request for
    /// a bucket that another account owns. `account_id` is the 12-digit AWS account ID.
    /// Default: none.
    pub fn expected_bucket_owner(mut self, account_id: impl Into<String>) -> Self {
        self.expected_bucket_owner = Some(account_id.into());
        self
    }

    /// The key of objects stored with SSE-C (server-side encryption with a customer-provided
    /// key): 32 bytes for AES-256, sent with every GET and HEAD (algorithm, key and its MD5,
    /// all signed; never logged). Default: none.
    pub fn sse_customer_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.sse_customer_key = Some(SseCustomerKey(key.into()));
        self
    }

    /// Sends every request through the HTTP proxy at `url`
    /// (`http://[user:password@]host[:port]`): for an https endpoint through a `CONNECT`
    /// tunnel (TLS stays end to end), for an http one as absolute-form requests. Same as
    /// [`http_proxy`](Self::http_proxy) and [`https_proxy`](Self::https_proxy) together.
    /// Sockets to the proxy count under `max_connections` like any other. Default: none (the
    /// AWS conventions of [`aws_settings`](Self::aws_settings) read `HTTPS_PROXY`, `HTTP_PROXY`
    /// and `NO_PROXY`).
    pub fn proxy(self, url: impl Into<String>) -> Self {
        let url = url.into();
        self.http_proxy(url.clone()).https_proxy(url)
    }

    /// The proxy for http endpoints; see [`proxy`](Self::proxy). Default: none.
    pub fn http_proxy(mut self, url: impl Into<String>) -> Self {
        self.http_proxy = Some(url.into());
        self
    }

    /// The proxy for https endpoints; see [`proxy`](Self::proxy). Default: none.
    pub fn https_proxy(mut self, url: impl Into<String>) -> Self {
        self.https_proxy = Some(url.into());
        self
    }

    /// Hosts reached without the proxy, in `NO_PROXY`'s syntax: comma-separated names (each
    /// covering its subdomains), `.domain`, `host:port`, IP addresses, CIDR blocks, or `*`.
    /// Default: none.
    pub fn no_proxy(mut self, rules: impl Into<String>) -> Self {
        self.no_proxy = Some(rules.into());
        self
    }

    fn proxies(&self) -> Result<Proxies, ConfigError> {
        let parse = |url: &Option<String>, field| {
            url.as_deref()
                .filter(|u| !u.is_empty())
                .map(|u| Proxy::parse(u, field))
                .transpose()
        };
        Ok(Proxies {
            http: parse(&self.http_proxy, "http_proxy")?,
            https: parse(&self.https_proxy, "https_proxy")?,
            no_proxy: NoProxy::parse(self.no_proxy.as_deref().unwrap_or_default()),
        })
    }

    /// The fields every request carries for the request options.
    fn extra_fields(&self) -> Result<ExtraFields, ConfigError> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut extra = ExtraFields::default();
        if self.requester_pays {
            extra
                .all
                .push(("x-amz-request-payer", HeaderValue::from_static("requester")));
        }
        if let Some(owner) = &self.expected_bucket_owner {
            if owner.len() != 12 || !owner.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ConfigError::new(
                    "expected_bucket_owner",
                    format!("{owner:?} is not a 12-digit AWS account ID"),
                ));
            }
            let value = HeaderValue::from_str(owner)
                .map_err(|_| ConfigError::new("expected_bucket_owner", "is not a header value"))?;
            extra.all.push(("x-amz-expected-bucket-owner", value));
        }
        if let Some(SseCustomerKey(key)) = &self.sse_customer_key {
            if key.len() != 32 {
                return Err(ConfigError::new(
                    "sse_customer_key",
                    format!("is {} bytes; an AES-256 key is 32", key.len()),
                ));
            }
            let md5 = {
                use md5::Digest as _;
                md5::Md5::digest(key)
            };
            let secret = |text: String| {
                let mut v = HeaderValue::from_str(&text).map_err(|_| {
                    ConfigError::new("sse_customer_key", "does not form a header value")
                })?;
                v.set_sensitive(true);
                Ok::<_, ConfigError>(v)
            };
            extra.object.extend([
                (
                    "x-amz-server-side-encryption-customer-algorithm",
                    HeaderValue::from_static("AES256"),
                ),
                (
                    "x-amz-server-side-encryption-customer-key",
                    secret(b64.encode(key))?,
                ),
                (
                    "x-amz-server-side-encryption-customer-key-md5",
                    secret(b64.encode(md5))?,
                ),
            ]);
        }
        Ok(extra)
    }

    /// Validates the settings into a [`Config`]; [`build`](Self::build) then makes the client.
    pub(crate) fn validate(self) -> Result<Config, ConfigError> {
        let budgets = Budgets::new(&BudgetSettings {
            max_connections: self.max_connections,
            per_request: self.max_connections_per_request,
            slab_size: self.slab_size,
            max_bytes: self.max_bytes,
            part_size: self.part_size,
            stream_threshold: self.stream_threshold,
        })?;
        budgets::validate_throttle(&self.throttle, self.max_connections)?;
        if let Some(why) = self.hedge.invalid() {
            return Err(ConfigError::new("hedge", why));
        }
        if self.min_body_rate.is_on() && self.min_body_rate.window < MIN_BODY_RATE_WINDOW {
            return Err(ConfigError::new(
                "min_body_rate.window",
                format!(
                    "{:?} is shorter than {MIN_BODY_RATE_WINDOW:?}",
                    self.min_body_rate.window
                ),
            ));
        }
        let extra_fields = Arc::new(self.extra_fields()?);
        let proxies = Arc::new(self.proxies()?);
        if self.connect_timeout.is_zero() {
            return Err(ConfigError::new(
                "connect_timeout",
                "must be greater than 0",
            ));
        }

        let endpoint = Endpoint::resolve(self.endpoint, self.region, self.addressing)?;
        let credentials = match self.credentials {
            CredentialSource::Environment => {
                CredentialSource::Provider(SharedCredentialsProvider::new(credentials_from_env()?))
            }
            other => other,
        };

        if self.transport == HttpTransport::Hyper && !cfg!(feature = "hyper") {
            return Err(ConfigError::new(
                "transport",
                "this build has no hyper transport; enable the crate feature `hyper`",
            ));
        }
        // Every origin shares the endpoint's scheme: over http, no connection ever verifies a
        // certificate, and reading the platform's store would only cost start-up time.
        let https = endpoint.uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let tls = self.tls.client_config(https)?;
        Ok(Config {
            endpoint: endpoint.uri,
            endpoint_follows_region: endpoint.follows_region,
            tls,
            region: Arc::from(endpoint.region),
            addressing: endpoint.addressing,
            credentials,
            max_connections: self.max_connections,
            max_connections_per_request: budgets.per_request,
            slab_size: self.slab_size,
            total_slabs: budgets.total_slabs,
            part_size: budgets.part_size,
            stream_threshold: budgets.stream_threshold,
            connect_timeout: self.connect_timeout,
            stall_timeout: self.stall_timeout,
            min_body_rate: self.min_body_rate,
            retry: self.retry,
            throttle: self.throttle,
            hedge: self.hedge,
            checksum_mode: self.checksum_mode,
            transport: self.transport,
            extra_fields,
            proxies,
            s3_express_sessions: self.s3_express_sessions,
        })
    }
}

fn credentials_from_env() -> Result<Credentials, ConfigError> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
        (Some(id), Some(secret)) => Ok(Credentials::new(
            id,
            secret,
            var("AWS_SESSION_TOKEN"),
            None,
            "environment",
        )),
        _ => Err(ConfigError::new(
            "credentials",
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set; \
             set them, pass credentials to the builder, or use anonymous()",
        )),
    }
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) endpoint: Uri,
    /// The endpoint is AWS's for the region: a bucket found in another region is reached at
    /// that region's endpoint.
    pub(crate) endpoint_follows_region: bool,
    /// The rustls configuration of every https connection.
    pub(crate) tls: Arc<rustls::ClientConfig>,
    pub(crate) region: Arc<str>,
    pub(crate) addressing: Addressing,
    pub(crate) credentials: CredentialSource,
    pub(crate) max_connections: usize,
    pub(crate) max_connections_per_request: usize,
    pub(crate) slab_size: usize,
    pub(crate) total_slabs: u32,
    /// Bytes per ranged part: a whole number of slabs, within the budget.
    pub(crate) part_size: u64,
    /// Objects above this size stream; at most the budget.
    pub(crate) stream_threshold: u64,
    pub(crate) connect_timeout: Duration,
    pub(crate) stall_timeout: Duration,
    pub(crate) min_body_rate: MinBodyRate,
    pub(crate) retry: RetryConfig,
    pub(crate) throttle: ThrottleConfig,
    pub(crate) hedge: HedgeConfig,
    pub(crate) checksum_mode: ChecksumMode,
    pub(crate) transport: HttpTransport,
    /// The request options' fields.
    pub(crate) extra_fields: Arc<ExtraFields>,
    /// Where connections go through a proxy.
    pub(crate) proxies: Arc<Proxies>,
    /// Directory buckets' requests are signed with sessions.
    pub(crate) s3_express_sessions: bool,
}

/// Header fields the request options add: to every request, and to object requests (GET and
/// HEAD) only. Lower-case names; secret values are marked sensitive and never shown.
#[derive(Default)]
pub(crate) struct ExtraFields {
    pub(crate) all: Vec<(&'static str, HeaderValue)>,
    pub(crate) object: Vec<(&'static str, HeaderValue)>,
}

/// The most fields [`ExtraFields`] holds: requester pays and expected owner, and SSE-C's three.
pub(crate) const MAX_EXTRA_FIELDS: usize = 5;

impl std::fmt::Debug for ExtraFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: the SSE-C key is a secret.
        let names = self.all.iter().chain(&self.object).map(|(n, _)| n);
        f.debug_list().entries(names).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> ClientBuilder {
        ClientBuilder::default()
            .endpoint_url("http://127.0.0.1:9000")
            .static_credentials("AKID", "SECRET", None)
    }

    #[test]
    fn validation_table() {
        type Case = (
            &'static str,
            fn(ClientBuilder) -> ClientBuilder,
            Option<&'static str>,
        );
        let cases: &[Case] = &[
            ("defaults", |b| b, None),
            (
                "zero connections",
                |b| b.max_connections(0),
                Some("max_connections"),
            ),
            (
                "zero per request",
                |b| b.max_connections_per_request(0),
                Some("max_connections_per_request"),
            ),
            (
                "per request above total",
                |b| b.max_connections(4).max_connections_per_request(5),
                Some("max_connections_per_request"),
            ),
            (
                "per request equal total",
                |b| b.max_connections(4).max_connections_per_request(4),
                None,
            ),
            ("zero bytes", |b| b.max_bytes(0), Some("max_bytes")),
            (
                "bytes below one slab per connection",
                |b| b.max_connections(8).slab_size(4096).max_bytes(8 * 4096 - 1),
                Some("max_bytes"),
            ),
            (
                "bytes exactly one slab per connection",
                |b| b.max_connections(8).slab_size(4096).max_bytes(8 * 4096),
                None,
            ),
            ("slab too small", |b| b.slab_size(100), Some("slab_size")),
            (
                "slab too large",
                |b| b.slab_size(MAX_SLAB_SIZE + 1).max_bytes(1 << 40),
                Some("slab_size"),
            ),
            (
                "too many slabs",
                |b| b.slab_size(MIN_SLAB_SIZE).max_bytes(u64::MAX),
                Some("max_bytes"),
            ),
            (
                "endpoint not a url",
                |b| b.endpoint_url("not a url"),
                Some("endpoint_url"),
            ),
            (
                "endpoint without scheme",
                |b| b.endpoint_url("localhost:9000"),
                Some("endpoint_url"),
            ),
            (
                "endpoint ftp",
                |b| b.endpoint_url("ftp://host"),
                Some("endpoint_url"),
            ),
            (
                "endpoint with path",
                |b| b.endpoint_url("http://host/prefix"),
                Some("endpoint_url"),
            ),
            (
                "endpoint with query",
                |b| b.endpoint_url("http://host/?a=b"),
                Some("endpoint_url"),
            ),
            (
                "endpoint with user",
                |b| b.endpoint_url("http://u:p@host"),
                Some("endpoint_url"),
            ),
            (
                "endpoint https",
                |b| b.endpoint_url("https://s3.example.com"),
                None,
            ),
            (
                "endpoint trailing slash",
                |b| b.endpoint_url("http://host:1/"),
                None,
            ),
            ("empty region", |b| b.region(""), Some("region")),
            ("bad region", |b| b.region("us east"), Some("region")),
            (
                "zero connect timeout",
                |b| b.connect_timeout(Duration::ZERO),
                Some("connect_timeout"),
            ),
            ("zero part size", |b| b.part_size(0), Some("part_size")),
            (
                "throttle floor zero",
                |b| {
                    b.throttle(ThrottleConfig {
                        min_concurrency: 0,
                        ..ThrottleConfig::default()
                    })
                },
                Some("throttle.min_concurrency"),
            ),
            (
                "throttle floor above the ceiling",
                |b| {
                    b.max_connections(8).throttle(ThrottleConfig {
                        min_concurrency: 9,
                        ..ThrottleConfig::default()
                    })
                },
                Some("throttle.min_concurrency"),
            ),
            (
                "throttle ceiling above max_connections",
                |b| {
                    b.max_connections(8).throttle(ThrottleConfig {
                        max_concurrency: Some(9),
                        ..ThrottleConfig::default()
                    })
                },
                Some("throttle.max_concurrency"),
            ),
            (
                "throttle bounded and off",
                |b| {
                    b.max_connections(8).throttle(ThrottleConfig {
                        adaptive: false,
                        min_concurrency: 2,
                        max_concurrency: Some(4),
                        ..ThrottleConfig::default()
                    })
                },
                None,
            ),
            (
                "zero throttle timeout",
                |b| {
                    b.throttle(ThrottleConfig {
                        timeout: Duration::ZERO,
                        ..ThrottleConfig::default()
                    })
                },
                Some("throttle.timeout"),
            ),
            (
                "zero recovery",
                |b| {
                    b.throttle(ThrottleConfig {
                        recovery: Duration::ZERO,
                        ..ThrottleConfig::default()
                    })
                },
                Some("throttle.recovery"),
            ),
            (
                "part size not whole slabs",
                |b| b.slab_size(4096).part_size(4096 * 3 + 1),
                Some("part_size"),
            ),
            (
                "part size above the budget",
                |b| b.max_connections(2).max_bytes(1 << 20).part_size(2 << 20),
                Some("part_size"),
            ),
            (
                "part size equal to the budget",
                |b| b.max_connections(2).max_bytes(1 << 20).part_size(1 << 20),
                None,
            ),
            (
                "stream threshold above the budget",
                |b| b.max_bytes(1 << 24).stream_threshold((1 << 24) + 1),
                Some("stream_threshold"),
            ),
            (
                "stream threshold below a part",
                |b| b.stream_threshold(1),
                None,
            ),
        ];
        for (name, f, expect) in cases {
            let got = f(base()).validate().err().map(|e| e.field());
            assert_eq!(got, *expect, "case {name}");
        }
    }

    #[test]
    fn error_message_names_field_and_values() {
        let err = base()
            .max_connections(4)
            .max_connections_per_request(9)
            .validate()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid max_connections_per_request: 9 is more than max_connections (4)"
        );
    }

    #[test]
    fn addressing_defaults_follow_endpoint() {
        let aws = base()
            .endpoint_url("https://s3.eu-west-1.amazonaws.com")
            .validate()
            .unwrap();
        assert_eq!(aws.addressing, Addressing::VirtualHosted);
        let default = ClientBuilder::default()
            .anonymous()
            .region("eu-west-2")
            .validate()
            .unwrap();
        assert_eq!(default.addressing, Addressing::VirtualHosted);
        assert_eq!(default.endpoint.host(), Some("s3.eu-west-2.amazonaws.com"));
        let custom = base().validate().unwrap();
        assert_eq!(custom.addressing, Addressing::PathStyle);
        let forced = base()
            .addressing(Addressing::VirtualHosted)
            .validate()
            .unwrap();
        assert_eq!(forced.addressing, Addressing::VirtualHosted);
    }

    #[test]
    fn per_request_defaults_to_max_connections() {
        let c = base().max_connections(7).validate().unwrap();
        assert_eq!(c.max_connections_per_request, 7);
        assert_eq!(
            c.total_slabs as u64,
            DEFAULT_MAX_BYTES / DEFAULT_SLAB_SIZE as u64
        );
    }

    #[test]
    fn default_part_size_gives_every_connection_a_part() {
        let c = base().max_connections(32).validate().unwrap();
        assert_eq!(c.part_size, DEFAULT_PART_SIZE); // 256 MiB / 32 = 8 MiB
        let c = base().validate().unwrap();
        assert_eq!(c.part_size, 4 << 20); // 256 MiB / 64
        let c = base()
            .max_connections(3)
            .slab_size(4096)
            .max_bytes(5 * 4096)
            .validate()
            .unwrap();
        assert_eq!(c.part_size, 4096);
        assert_eq!(c.stream_threshold, 5 * 4096);
        let c = base().part_size(1 << 20).validate().unwrap();
        assert_eq!(c.part_size, 1 << 20);
    }

    /// The only test that reads the `AWS_*` variables, so setting them here races with nothing.
    #[test]
    fn environment_credentials_are_read_at_build() {
        let vars = [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
        ];
        let env = || {
            ClientBuilder::default()
                .endpoint_url("http://h:1")
                .credentials_from_env()
        };
        for v in vars {
            std::env::remove_var(v);
        }
        let err = env().validate().unwrap_err();
        assert_eq!(err.field(), "credentials");
        assert!(err.to_string().contains("AWS_ACCESS_KEY_ID"), "{err}");

        std::env::set_var("AWS_ACCESS_KEY_ID", "AKIDENV");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "SECRETENV");
        std::env::set_var("AWS_SESSION_TOKEN", "TOKENENV");
        let cfg = env().validate().unwrap();
        let CredentialSource::Provider(p) = &cfg.credentials else {
            panic!("environment credentials must become a provider");
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let creds = rt.block_on(p.provide_credentials()).unwrap();
        assert_eq!(creds.access_key_id(), "AKIDENV");
        assert_eq!(creds.secret_access_key(), "SECRETENV");
        assert_eq!(creds.session_token(), Some("TOKENENV"));
        for v in vars {
            std::env::remove_var(v);
        }
    }

    #[test]
    fn debug_does_not_leak_secrets() {
        let b = base().static_credentials("AKIDVISIBLE", "TOPSECRET", Some("TOKENSECRET".into()));
        let s = format!("{b:?}");
        assert!(
            !s.contains("TOPSECRET") && !s.contains("TOKENSECRET"),
            "{s}"
        );
    }
}
