//! Flags shared by the commands that talk to S3, and how they become a [`Client`]: the AWS
//! conventions for endpoint, region, profile and credentials.

use anyhow::Context as _;
use std::time::Duration;

use s3_ordered::{AwsSettings, ChecksumMode, Client, ConfigError, ThrottleConfig};

use s3_ordered::parse_size;

/// Connection, credential and budget flags.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ConnectOpts {
    /// S3 endpoint URL [default: $AWS_ENDPOINT_URL_S3, then $AWS_ENDPOINT_URL, then AWS]
    #[arg(long, value_name = "URL")]
    endpoint_url: Option<String>,
    /// Region [default: $AWS_REGION, $AWS_DEFAULT_REGION, the profile's, the instance's (IMDS),
    /// then us-east-1]
    #[arg(long)]
    region: Option<String>,
    /// Named profile from the shared credentials and config files [default: $AWS_PROFILE]
    #[arg(long)]
    profile: Option<String>,
    /// Send requests unsigned (public buckets); no credentials needed
    #[arg(long)]
    no_sign_request: bool,
    /// Path-style requests (https://endpoint/bucket/key) [default for non-AWS endpoints]
    #[arg(long)]
    path_style: bool,
    /// Also trust the CA certificates in this PEM file [default: $AWS_CA_BUNDLE, then the
    /// profile's ca_bundle]
    #[arg(long, value_name = "PATH")]
    ca_bundle: Option<std::path::PathBuf>,
    /// Do not verify the server's TLS certificate: only for a local test endpoint. Prints a
    /// warning every time
    #[arg(long)]
    no_verify_ssl: bool,
    /// Sign requests to a directory bucket (S3 Express One Zone, a name ending --x-s3) with
    /// the credentials themselves, not a session: for a server that takes such names but has
    /// no CreateSession
    #[arg(long)]
    no_s3_express_session: bool,
    /// Agree to pay for the requests and data of a requester-pays bucket
    #[arg(long, value_name = "WHO", value_parser = ["requester"])]
    request_payer: Option<String>,
    /// Refuse a bucket that another AWS account owns (12-digit account ID)
    #[arg(long, value_name = "ACCOUNT_ID")]
    expected_bucket_owner: Option<String>,
    /// The key of SSE-C encrypted objects (AES-256): the 32 bytes themselves, their base64, or
    /// fileb://PATH to a file of 32 bytes
    #[arg(long, value_name = "KEY")]
    sse_c_key: Option<String>,
    /// Connections open at once
    #[arg(long, value_name = "N", default_value_t = s3_ordered::DEFAULT_MAX_CONNECTIONS)]
    pub(crate) max_connections: usize,
    /// GETs in flight for this command [default: --max-connections]
    #[arg(long, value_name = "N")]
    max_connections_per_request: Option<usize>,
    /// Memory for object bodies held at once: bytes, or with a unit (512MiB, 2GiB)
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = parse_size)]
    max_bytes: u64,
    /// Objects larger than this are fetched as parallel ranged GETs of this size
    /// [default: 8MiB, less when --max-bytes cannot give every connection a part]
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    part_size: Option<u64>,
    /// Fail an object once the server has throttled it (503 SlowDown, 429) for this long
    #[arg(long, value_name = "SECONDS", default_value_t = 300.0, value_parser = parse_seconds)]
    throttle_timeout: f64,
    /// Keep --max-connections requests in flight even when throttled, instead of slowing down
    /// to what the server accepts (throttled requests then back off one by one)
    #[arg(long)]
    fixed_concurrency: bool,
    /// What speaks HTTP/1.1: this tool's own exchange, or hyper's client (slower; to rule the
    /// tool's HTTP layer out when a server misbehaves)
    #[arg(long, value_name = "WHICH", default_value = "native", value_parser = ["native", "hyper"])]
    transport: String,
    /// Verify each object against the checksum the server stores: when-available (objects
    /// without one are delivered, counted in the summary), required (they fail), or off
    #[arg(long, value_name = "MODE", default_value = "when-available",
          value_parser = ["when-available", "required", "off"])]
    checksum_mode: String,
    /// Do not send a slow GET again: by default a GET whose reply has not begun after 1.5 × the
    /// 95th percentile of recent ones (at least 30 ms) is sent once more on another connection
    /// (within --max-connections and a budget of 2 % more GETs), and the first reply wins
    #[arg(long)]
    no_hedge: bool,
    /// The quantile of recent first-byte times a GET's hedging threshold starts from, in (0, 1)
    #[arg(long, value_name = "Q", default_value_t = 0.95)]
    hedge_quantile: f64,
    /// What that quantile is multiplied by, at least 1
    #[arg(long, value_name = "X", default_value_t = 1.5)]
    hedge_factor: f64,
    /// The least the hedging threshold can be
    #[arg(long, value_name = "SECONDS", default_value_t = 0.03, value_parser = parse_seconds)]
    hedge_floor: f64,
    /// Hedges per GET over time, in [0, 1]
    #[arg(long, value_name = "FRACTION", default_value_t = 0.02)]
    hedge_budget: f64,
    /// Resume a body on a new connection when it brings fewer than SIZE bytes per second over
    /// --body-rate-window (at most twice per part, from its first missing byte); 0 turns it off
    #[arg(long, value_name = "SIZE", default_value = "64KiB", value_parser = parse_size)]
    min_body_rate: u64,
    /// The window --min-body-rate is measured over
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0, value_parser = parse_seconds)]
    body_rate_window: f64,
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 1e9 => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds greater than 0")),
    }
}

/// What the environment holds: the AWS variables, and where the shared files are.
pub(crate) use s3_ordered::AwsEnv as Env;

impl ConnectOpts {
    /// Builds the client, with credentials and region from the AWS default chain; every problem
    /// is a usage or configuration error (exit status 2).
    pub(crate) async fn client(&self) -> anyhow::Result<Client> {
        // Objects above half the budget stream (the commands write both kinds alike), which
        // lets keys without sizes overlap within the other half.
        let mut b = Client::builder()
            .max_connections(self.max_connections)
            .max_bytes(self.max_bytes)
            .stream_threshold(self.max_bytes / 2);
        if let Some(n) = self.max_connections_per_request {
            b = b.max_connections_per_request(n);
        }
        if let Some(n) = self.part_size {
            b = b.part_size(n);
        }
        if self.transport == "hyper" {
            b = b.transport(s3_ordered::HttpTransport::Hyper);
        }
        b = b.checksum_mode(match self.checksum_mode.as_str() {
            "required" => ChecksumMode::Required,
            "off" => ChecksumMode::Off,
            _ => ChecksumMode::WhenAvailable,
        });
        b = b.hedge(s3_ordered::HedgeConfig {
            enabled: !self.no_hedge,
            quantile: self.hedge_quantile,
            factor: self.hedge_factor,
            floor: Duration::from_secs_f64(self.hedge_floor),
            budget: self.hedge_budget,
            ..s3_ordered::HedgeConfig::default()
        });
        b = b.min_body_rate(s3_ordered::MinBodyRate {
            bytes_per_second: self.min_body_rate,
            window: Duration::from_secs_f64(self.body_rate_window),
        });
        b = b.throttle(ThrottleConfig {
            adaptive: !self.fixed_concurrency,
            timeout: Duration::from_secs_f64(self.throttle_timeout),
            ..ThrottleConfig::default()
        });
        let settings = AwsSettings {
            endpoint_url: self.endpoint_url.clone(),
            region: self.region.clone(),
            profile: self.profile.clone(),
            anonymous: self.no_sign_request,
            path_style: self.path_style.then_some(true),
            ca_bundle: self.ca_bundle.clone(),
        };
        if self.request_payer.is_some() {
            b = b.requester_pays(true);
        }
        if self.no_s3_express_session {
            b = b.s3_express_sessions(false);
        }
        if let Some(owner) = &self.expected_bucket_owner {
            b = b.expected_bucket_owner(owner);
        }
        if let Some(key) = &self.sse_c_key {
            b = b.sse_customer_key(sse_c_key(key)?);
        }
        let mut b = b.aws_default_chain(&settings).await.map_err(cli_words)?;
        if self.no_verify_ssl {
            eprintln!("{}", crate::insecure::WARNING);
            b = b.tls_config(crate::insecure::config()?);
        }
        b.build().context("invalid configuration")
    }
}

/// The bytes of `--sse-c-key`: a file's (`fileb://PATH`), the text itself when it is 32 bytes
/// long, else its base64 decoding.
fn sse_c_key(arg: &str) -> anyhow::Result<Vec<u8>> {
    use base64::Engine as _;
    if let Some(path) = arg.strip_prefix("fileb://") {
        return std::fs::read(path).with_context(|| format!("reading the SSE-C key from {path}"));
    }
    if arg.len() == 32 {
        return Ok(arg.as_bytes().to_vec());
    }
    base64::engine::general_purpose::STANDARD
        .decode(arg.trim())
        .map_err(|_| {
            anyhow::anyhow!("--sse-c-key is neither 32 bytes, nor base64, nor fileb://PATH")
        })
}

/// A configuration error; missing credentials also get the command line's ways out.
fn cli_words(e: ConfigError) -> anyhow::Error {
    if e.field() == "credentials" {
        anyhow::anyhow!("{e} (here: --profile NAME, or --no-sign-request for a public bucket)")
    } else {
        anyhow::Error::new(e)
    }
}
