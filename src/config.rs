//! Client configuration: the [`ClientBuilder`], its defaults, and validation.
//!
//! Every setting has a default (named constants below); [`ClientBuilder::build`] checks the whole
//! combination and refuses it with a [`ConfigError`] that names the field at fault.

use std::sync::Arc;
use std::time::Duration;

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use http::uri::{Scheme, Uri};

use crate::client::Client;
use crate::error::ConfigError;
use crate::retry::RetryConfig;

/// Default `max_connections`: enough parallel GETs to fill a 10 Gbit/s link at S3's typical
/// ~85-90 MB/s per connection (S3 performance guidelines, "Horizontal scaling of connections").
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;

/// Default `max_bytes`: 256 MiB of body memory, room for 64 connections × 4 MiB of look-ahead.
pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;

/// Default slab size: 64 KiB. Small objects waste at most one slab each, and a 256 MiB budget
/// still holds 4096 small objects at once (see `PERFORMANCE.md`).
pub const DEFAULT_SLAB_SIZE: usize = 64 << 10;

/// Smallest slab size accepted: one page.
pub const MIN_SLAB_SIZE: usize = 4 << 10;

/// Largest slab size accepted: 64 MiB.
pub const MAX_SLAB_SIZE: usize = 64 << 20;

/// Default connect timeout (TCP and TLS handshake): 10 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Default stall timeout: 30 s without a response head or a body byte. Not a total deadline: a
/// long healthy download is never cut.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Default region when none is given.
pub const DEFAULT_REGION: &str = "us-east-1";

/// How the bucket is named in each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressing {
    /// `https://endpoint/bucket/key` — works with every S3-compatible server.
    PathStyle,
    /// `https://bucket.endpoint/key` — AWS's preferred form; needs a DNS-compatible bucket name.
    VirtualHosted,
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

/// Builds a [`Client`]; start with [`Client::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until build() is called"]
pub struct ClientBuilder {
    endpoint: Option<String>,
    region: Option<String>,
    credentials: CredentialSource,
    addressing: Option<Addressing>,
    max_connections: usize,
    max_connections_per_request: Option<usize>,
    max_bytes: u64,
    slab_size: usize,
    connect_timeout: Duration,
    stall_timeout: Duration,
    retry: RetryConfig,
    checksum_mode: bool,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            endpoint: None,
            region: None,
            credentials: CredentialSource::Environment,
            addressing: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_request: None,
            max_bytes: DEFAULT_MAX_BYTES,
            slab_size: DEFAULT_SLAB_SIZE,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            retry: RetryConfig::default(),
            checksum_mode: false,
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

    /// The signing region. Default: `us-east-1`.
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

    /// Any credentials provider (static `Credentials` are one). Credentials are fetched before
    /// each signature and cached until five minutes before they expire.
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

    /// Retry policy. Default: [`RetryConfig::default`].
    pub fn retry(mut self, retry: RetryConfig) -> Self {
        self.retry = retry;
        self
    }

    /// Ask for and verify object checksums (`x-amz-checksum-mode: ENABLED`): a CRC32C or CRC32
    /// the server sends for the whole object is checked against the bytes received, and a
    /// mismatch is [`ErrorKind::ChecksumMismatch`](crate::ErrorKind::ChecksumMismatch).
    /// Composite checksums of multipart uploads (`…-N`) cannot be checked this way and are
    /// skipped. Default: off.
    pub fn checksum_mode(mut self, enabled: bool) -> Self {
        self.checksum_mode = enabled;
        self
    }

    /// Validates the settings and builds the client.
    ///
    /// Needs a Tokio runtime only when the client is used, not here.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the first invalid field: a budget of zero, `max_connections_per_request`
    /// above `max_connections`, `max_bytes` below one slab per connection, a slab size out of range,
    /// an endpoint that is not an absolute `http`/`https` URL without path, an empty region, or
    /// environment credentials that are not set.
    pub fn build(self) -> Result<Client, ConfigError> {
        Client::from_config(self.validate()?)
    }

    pub(crate) fn validate(self) -> Result<Config, ConfigError> {
        if self.max_connections == 0 {
            return Err(ConfigError::new(
                "max_connections",
                "must be greater than 0",
            ));
        }
        let per_request = self
            .max_connections_per_request
            .unwrap_or(self.max_connections);
        if per_request == 0 {
            return Err(ConfigError::new(
                "max_connections_per_request",
                "must be greater than 0",
            ));
        }
        if per_request > self.max_connections {
            return Err(ConfigError::new(
                "max_connections_per_request",
                format!(
                    "{per_request} is more than max_connections ({})",
                    self.max_connections
                ),
            ));
        }
        if !(MIN_SLAB_SIZE..=MAX_SLAB_SIZE).contains(&self.slab_size) {
            return Err(ConfigError::new(
                "slab_size",
                format!(
                    "{} is outside {MIN_SLAB_SIZE}..={MAX_SLAB_SIZE} bytes",
                    self.slab_size
                ),
            ));
        }
        if self.max_bytes == 0 {
            return Err(ConfigError::new("max_bytes", "must be greater than 0"));
        }
        let slabs = self.max_bytes / self.slab_size as u64;
        if slabs < self.max_connections as u64 {
            return Err(ConfigError::new(
                "max_bytes",
                format!(
                    "{} bytes hold {slabs} slabs of {} bytes, fewer than max_connections ({}); \
                     need at least {}",
                    self.max_bytes,
                    self.slab_size,
                    self.max_connections,
                    self.max_connections as u64 * self.slab_size as u64
                ),
            ));
        }
        // tokio's Semaphore holds at most usize::MAX >> 3 permits and acquire_many takes a u32.
        let total_slabs = u32::try_from(slabs)
            .ok()
            .filter(|n| (*n as usize) <= tokio::sync::Semaphore::MAX_PERMITS)
            .ok_or_else(|| {
                ConfigError::new(
                    "max_bytes",
                    format!("{slabs} slabs are too many; raise slab_size"),
                )
            })?;
        if self.connect_timeout.is_zero() {
            return Err(ConfigError::new(
                "connect_timeout",
                "must be greater than 0",
            ));
        }

        let region = self.region.unwrap_or_else(|| DEFAULT_REGION.to_owned());
        if region.is_empty()
            || !region
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(ConfigError::new(
                "region",
                format!("{region:?} is not a region name"),
            ));
        }
        let (endpoint, is_aws) = match self.endpoint {
            Some(url) => {
                let uri = parse_endpoint(&url)?;
                let is_aws = uri.host().is_some_and(|h| h.ends_with(".amazonaws.com"));
                (uri, is_aws)
            }
            None => (
                parse_endpoint(&format!("https://s3.{region}.amazonaws.com"))?,
                true,
            ),
        };
        let addressing = self.addressing.unwrap_or(if is_aws {
            Addressing::VirtualHosted
        } else {
            Addressing::PathStyle
        });
        let credentials = match self.credentials {
            CredentialSource::Environment => {
                CredentialSource::Provider(SharedCredentialsProvider::new(credentials_from_env()?))
            }
            other => other,
        };

        Ok(Config {
            endpoint,
            region: Arc::from(region),
            addressing,
            credentials,
            max_connections: self.max_connections,
            max_connections_per_request: per_request,
            max_bytes: self.max_bytes,
            slab_size: self.slab_size,
            total_slabs,
            connect_timeout: self.connect_timeout,
            stall_timeout: self.stall_timeout,
            retry: self.retry,
            checksum_mode: self.checksum_mode,
        })
    }
}

fn parse_endpoint(url: &str) -> Result<Uri, ConfigError> {
    let bad = |why: &str| ConfigError::new("endpoint_url", format!("{url:?} {why}"));
    let uri: Uri = url.parse().map_err(|_| bad("is not a URL"))?;
    match uri.scheme() {
        Some(s) if *s == Scheme::HTTP || *s == Scheme::HTTPS => {}
        Some(_) => return Err(bad("must use http or https")),
        None => return Err(bad("must start with http:// or https://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(bad("must not contain user information"));
    }
    if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
        return Err(bad("must not have a path or query"));
    }
    Ok(uri)
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
    pub(crate) region: Arc<str>,
    pub(crate) addressing: Addressing,
    pub(crate) credentials: CredentialSource,
    pub(crate) max_connections: usize,
    pub(crate) max_connections_per_request: usize,
    pub(crate) max_bytes: u64,
    pub(crate) slab_size: usize,
    pub(crate) total_slabs: u32,
    pub(crate) connect_timeout: Duration,
    pub(crate) stall_timeout: Duration,
    pub(crate) retry: RetryConfig,
    pub(crate) checksum_mode: bool,
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
