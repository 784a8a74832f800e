//! Flags shared by the commands that talk to S3, and how they become a [`Client`]: the AWS
//! conventions for endpoint, region, profile and credentials.

use anyhow::{bail, Context as _};
use std::time::Duration;

use s3_ordered::{Addressing, Client, ThrottleConfig};

use crate::profile;
use crate::size::parse_size;

/// Connection, credential and budget flags.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ConnectOpts {
    /// S3 endpoint URL [default: $AWS_ENDPOINT_URL_S3, then $AWS_ENDPOINT_URL, then AWS]
    #[arg(long, value_name = "URL")]
    endpoint_url: Option<String>,
    /// Region [default: $AWS_REGION, $AWS_DEFAULT_REGION, the profile's, then us-east-1]
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
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 1e9 => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds greater than 0")),
    }
}

/// What the environment says, read once so tests can supply it.
#[derive(Debug, Default, Clone)]
pub(crate) struct Env {
    pub(crate) vars: std::collections::HashMap<String, String>,
}

impl Env {
    pub(crate) fn from_process() -> Self {
        Env {
            vars: std::env::vars().collect(),
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

impl ConnectOpts {
    /// Builds the client; every problem is a usage or configuration error (exit status 2).
    pub(crate) fn client(&self, env: &Env) -> anyhow::Result<Client> {
        let (cred_path, config_path) = profile::default_paths();
        let profile_name = self
            .profile
            .clone()
            .or_else(|| env.get("AWS_PROFILE").map(str::to_owned));
        let load_profile =
            |name: &str| profile::load(name, cred_path.as_deref(), config_path.as_deref());

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
        b = b.throttle(ThrottleConfig {
            adaptive: !self.fixed_concurrency,
            timeout: Duration::from_secs_f64(self.throttle_timeout),
            ..ThrottleConfig::default()
        });
        if let Some(url) = self
            .endpoint_url
            .as_deref()
            .or_else(|| env.get("AWS_ENDPOINT_URL_S3"))
            .or_else(|| env.get("AWS_ENDPOINT_URL"))
        {
            b = b.endpoint_url(url);
        }
        if self.path_style {
            b = b.addressing(Addressing::PathStyle);
        }

        // Credentials: --no-sign-request; an explicit --profile; the environment variables;
        // then the profile from AWS_PROFILE or "default".
        let mut profile_region = None;
        let env_keys = match (
            env.get("AWS_ACCESS_KEY_ID"),
            env.get("AWS_SECRET_ACCESS_KEY"),
        ) {
            (Some(id), Some(secret)) => Some((id, secret)),
            _ => None,
        };
        if self.no_sign_request {
            b = b.anonymous();
            if let Some(name) = &profile_name {
                profile_region = load_profile(name)?.and_then(|p| p.region);
            }
        } else if let (Some((id, secret)), None) = (env_keys, &self.profile) {
            b = b.static_credentials(id, secret, env.get("AWS_SESSION_TOKEN").map(str::to_owned));
            if let Some(name) = &profile_name {
                profile_region = load_profile(name)?.and_then(|p| p.region);
            }
        } else {
            let name = profile_name.as_deref().unwrap_or("default");
            const REMEDY: &str = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, add keys to \
                 ~/.aws/credentials, pass --profile, or use --no-sign-request for a public bucket";
            let Some(p) = load_profile(name)? else {
                if profile_name.is_some() {
                    bail!("profile {name:?} is not in the shared credentials or config file");
                }
                bail!("no credentials: {REMEDY}");
            };
            let (Some(id), Some(secret)) = (p.access_key_id, p.secret_access_key) else {
                bail!(
                    "profile {name:?} has no aws_access_key_id and aws_secret_access_key: {REMEDY}"
                );
            };
            b = b.static_credentials(id, secret, p.session_token);
            profile_region = p.region;
        }

        let region = self
            .region
            .clone()
            .or_else(|| env.get("AWS_REGION").map(str::to_owned))
            .or_else(|| env.get("AWS_DEFAULT_REGION").map(str::to_owned))
            .or(profile_region);
        if let Some(region) = region {
            b = b.region(region);
        }
        b.build().context("invalid configuration")
    }
}
