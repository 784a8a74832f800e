//! The AWS default credential and region chain, from `aws-config` (feature `aws-config`): what
//! the AWS CLI and boto3 find on a laptop, on EC2, ECS, EKS, Batch, SageMaker or Lambda.
//!
//! Credentials are looked for in this order, the first source that has them winning:
//!
//! 1. `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN` (skipped when a
//!    profile is named in the settings, as the AWS CLI's `--profile` skips them);
//! 2. web identity: `AWS_WEB_IDENTITY_TOKEN_FILE` with `AWS_ROLE_ARN` (EKS IRSA), through STS
//!    `AssumeRoleWithWebIdentity`;
//! 3. the profile of the shared `config` and `credentials` files: static keys, `role_arn` with
//!    `source_profile` or `credential_source`, `credential_process`, SSO (`sso_session`);
//! 4. container credentials: `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` or
//!    `AWS_CONTAINER_CREDENTIALS_FULL_URI`, with `AWS_CONTAINER_AUTHORIZATION_TOKEN(_FILE)` (ECS,
//!    Batch, EKS Pod Identity);
//! 5. the instance's metadata service, IMDSv2 (a session token first), unless
//!    `AWS_EC2_METADATA_DISABLED=true`; `AWS_EC2_METADATA_SERVICE_ENDPOINT` points it elsewhere.
//!
//! The region: the settings', then `AWS_REGION` / `AWS_DEFAULT_REGION`, the profile's, the
//! instance's, and [`DEFAULT_REGION`] only as the last resort. The chain reads the process's
//! environment and files. Its own HTTP traffic (STS, SSO, the metadata services) goes through
//! `aws-smithy-http-client` over rustls with `ring`.
//!
//! The chain is asked for credentials once while the client is configured, so that no
//! credentials anywhere, or a source that fails, is a [`ConfigError`] before any request is made;
//! those first credentials are then used without asking again. The metadata service is given
//! [`IMDS_ATTEMPTS`] tries of [`IMDS_TIMEOUT`] each, so that off AWS compute the chain gives up
//! within seconds.

use std::sync::Mutex;
use std::time::Duration;

use aws_config::meta::credentials::CredentialsProviderChain;
use aws_config::meta::region::RegionProviderChain;
use aws_config::provider_config::ProviderConfig;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{future, ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use aws_types::region::Region;

use crate::aws_env::{AwsEnv, AwsSettings, Resolution};
use crate::config::{ClientBuilder, DEFAULT_REGION};
use crate::error::{with_causes, ConfigError};

/// Each try of the instance metadata service waits this long to connect, and as long again for
/// a reply: the SDKs' default (1 s).
pub(crate) const IMDS_TIMEOUT: Duration = Duration::from_secs(1);

/// Tries of the instance metadata service per look-up. Two instead of the SDKs' four: off EC2
/// nothing answers, and the chain should say so within seconds.
pub(crate) const IMDS_ATTEMPTS: u32 = 2;

/// What every source of the chain is configured with.
struct Chain {
    conf: ProviderConfig,
    imds: aws_config::imds::Client,
    profile: Option<String>,
}

impl Chain {
    fn new(profile: Option<&str>) -> Self {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let conf = ProviderConfig::default().with_http_client(http);
        let imds = aws_config::imds::Client::builder()
            .configure(&conf)
            .connect_timeout(IMDS_TIMEOUT)
            .read_timeout(IMDS_TIMEOUT)
            .max_attempts(IMDS_ATTEMPTS)
            .build();
        Chain {
            conf,
            imds,
            profile: profile.map(str::to_owned),
        }
    }

    /// The region of the environment, the profile or the instance.
    async fn region(&self) -> Option<Region> {
        use aws_config::environment::region::EnvironmentVariableRegionProvider;
        use aws_config::imds::region::ImdsRegionProvider;
        use aws_config::profile::ProfileFileRegionProvider;
        let mut profile = ProfileFileRegionProvider::builder().configure(&self.conf);
        if let Some(name) = &self.profile {
            profile = profile.profile_name(name);
        }
        RegionProviderChain::first_try(EnvironmentVariableRegionProvider::new())
            .or_else(profile.build())
            .or_else(
                ImdsRegionProvider::builder()
                    .configure(&self.conf)
                    .imds_client(self.imds.clone())
                    .build(),
            )
            .region()
            .await
    }

    /// The credential sources, in order, for requests to STS in `region`.
    fn credentials(&self, region: &str) -> CredentialsProviderChain {
        use aws_config::ecs::EcsCredentialsProvider;
        use aws_config::environment::credentials::EnvironmentVariableCredentialsProvider;
        use aws_config::imds::credentials::ImdsCredentialsProvider;
        use aws_config::profile::ProfileFileCredentialsProvider;
        use aws_config::web_identity_token::WebIdentityTokenCredentialsProvider;

        let conf = self
            .conf
            .clone()
            .with_region(Some(Region::new(region.to_owned())));
        let web_identity = WebIdentityTokenCredentialsProvider::builder()
            .configure(&conf)
            .build();
        let mut profile = ProfileFileCredentialsProvider::builder().configure(&conf);
        if let Some(name) = &self.profile {
            profile = profile.profile_name(name);
        }
        let first = match self.profile {
            // A profile named in the settings wins over the key variables (the AWS CLI's
            // `--profile`).
            Some(_) => CredentialsProviderChain::first_try("WebIdentityToken", web_identity),
            None => CredentialsProviderChain::first_try(
                "Environment",
                EnvironmentVariableCredentialsProvider::new(),
            )
            .or_else("WebIdentityToken", web_identity),
        };
        first
            .or_else("Profile", profile.build())
            .or_else(
                "EcsContainer",
                EcsCredentialsProvider::builder().configure(&conf).build(),
            )
            .or_else(
                "Ec2InstanceMetadata",
                ImdsCredentialsProvider::builder()
                    .configure(&conf)
                    .imds_client(self.imds.clone())
                    .build(),
            )
    }
}

/// How to give credentials, for the error that none were found.
const REMEDY: &str = "give them as AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, in a profile of \
     ~/.aws/credentials or ~/.aws/config (keys, role_arn, credential_process, SSO), through web \
     identity (AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN), container credentials \
     (AWS_CONTAINER_CREDENTIALS_FULL_URI or _RELATIVE_URI) or the instance's role (IMDS), or \
     send requests unsigned for a public bucket";

impl ClientBuilder {
    /// Applies `settings` as [`aws_settings`](Self::aws_settings) does, but finds credentials
    /// and the region through the whole AWS default chain (in this order; the README's
    /// *Credentials, regions, proxies* says more): key variables, web identity, the shared
    /// files' profile with roles, `credential_process` and SSO, container credentials, then
    /// the instance's metadata.
    /// Endpoint, addressing, CA bundle and proxies come from the settings and the process's
    /// variables as with `aws_settings`.
    ///
    /// The chain is asked for credentials once, now: the client then starts with them and
    /// refreshes them before they expire.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] with field `"profile"` for a named profile that neither shared file has,
    /// and `"credentials"` when no source has credentials (the message lists every way to give
    /// them) or when the source that has them fails (an STS or metadata error, a
    /// `credential_process` that exits non-zero: its message is kept).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is kept until it returns.
    pub async fn aws_default_chain(mut self, settings: &AwsSettings) -> Result<Self, ConfigError> {
        let env = AwsEnv::from_process();
        let r = Resolution::new(settings, &env);
        self = r.apply_endpoint(self);
        self = r.apply_proxy(self);
        self = r.apply_ca_bundle(self)?;
        r.require_named_profile()?;
        let chain = Chain::new(settings.profile.as_deref());
        let region = match &settings.region {
            Some(region) => region.clone(),
            None => chain
                .region()
                .await
                .map_or_else(|| DEFAULT_REGION.to_owned(), |r| r.as_ref().to_owned()),
        };
        if settings.anonymous {
            return Ok(self.region(region).anonymous());
        }
        let provider = chain.credentials(&region);
        let first = provider.provide_credentials().await.map_err(|e| {
            let why = match &e {
                CredentialsError::CredentialsNotLoaded(_) => format!("none found: {REMEDY}"),
                _ => with_causes(&e),
            };
            ConfigError::new("credentials", why)
        })?;
        Ok(self.region(region).credentials_provider(Primed {
            first: Mutex::new(Some(first)),
            rest: SharedCredentialsProvider::new(provider),
        }))
    }
}

/// Credentials already obtained, handed out once, then the provider's.
struct Primed {
    first: Mutex<Option<Credentials>>,
    rest: SharedCredentialsProvider,
}

impl std::fmt::Debug for Primed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Primed").finish_non_exhaustive()
    }
}

impl ProvideCredentials for Primed {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        let first = self
            .first
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        match first {
            Some(creds) => future::ProvideCredentials::ready(Ok(creds)),
            None => self.rest.provide_credentials(),
        }
    }
}
