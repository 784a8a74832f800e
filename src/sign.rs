//! SigV4 signing for S3 with `aws-sigv4`, and the credentials cache in front of the provider.
//!
//! S3's rules differ from other services: the path is percent-encoded exactly once (keys are
//! encoded when the request is built, the signer must not encode again), the path is never
//! normalised (`a//b` and `a/./b` are distinct keys), and every request carries
//! `x-amz-content-sha256`. Each attempt is signed afresh so the signature's time stays current.

use std::sync::RwLock;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;

use crate::config::CredentialSource;
use crate::error::{Error, ErrorKind};

/// Cached credentials are refreshed this long before they expire.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);

/// Signs requests with credentials from the configured source.
pub(crate) struct Signer {
    region: std::sync::Arc<str>,
    provider: Option<SharedCredentialsProvider>,
    cache: RwLock<Option<Credentials>>,
    refresh: tokio::sync::Mutex<()>,
}

impl Signer {
    pub(crate) fn new(region: std::sync::Arc<str>, source: &CredentialSource) -> Self {
        let provider = match source {
            CredentialSource::Provider(p) => Some(p.clone()),
            // `Environment` is resolved into a provider by validation.
            CredentialSource::Environment | CredentialSource::Anonymous => None,
        };
        Signer {
            region,
            provider,
            cache: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    /// Adds the SigV4 headers to `req`; leaves it unsigned for anonymous clients.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Credentials`] when the provider fails, [`ErrorKind::InvalidRequest`] when
    /// the request cannot be signed.
    pub(crate) async fn sign<B>(&self, req: &mut http::Request<B>) -> Result<(), Error> {
        let Some(provider) = &self.provider else {
            return Ok(());
        };
        let creds = self.credentials(provider).await?;
        sign_request(req, &creds, &self.region, SystemTime::now())
    }

    async fn credentials(
        &self,
        provider: &SharedCredentialsProvider,
    ) -> Result<Credentials, Error> {
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        // One refresh at a time; the others wait and then find the cache filled.
        let _refreshing = self.refresh.lock().await;
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let creds = provider
            .provide_credentials()
            .await
            .map_err(|e| Error::new(ErrorKind::Credentials).with_source(e))?;
        *self.cache.write().unwrap_or_else(|e| e.into_inner()) = Some(creds.clone());
        Ok(creds)
    }

    fn cached(&self) -> Option<Credentials> {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        cache.as_ref().and_then(|c| match c.expiry() {
            None => Some(c.clone()),
            Some(exp) if exp > SystemTime::now() + REFRESH_BEFORE_EXPIRY => Some(c.clone()),
            Some(_) => None,
        })
    }
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("region", &self.region)
            .field("anonymous", &self.provider.is_none())
            .finish_non_exhaustive()
    }
}

/// Signs `req` (whose URI is already percent-encoded and whose `host` header is set) for S3.
pub(crate) fn sign_request<B>(
    req: &mut http::Request<B>,
    creds: &Credentials,
    region: &str,
    time: SystemTime,
) -> Result<(), Error> {
    let invalid = |e: Box<dyn std::error::Error + Send + Sync>| {
        Error::new(ErrorKind::InvalidRequest)
            .with_message("could not sign the request")
            .with_source(e)
    };
    let mut settings = SigningSettings::default();
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;

    let identity: Identity = creds.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("s3")
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| invalid(e.into()))?
        .into();

    let mut headers = Vec::with_capacity(req.headers().len());
    for (name, value) in req.headers() {
        let value = value.to_str().map_err(|e| invalid(e.into()))?;
        headers.push((name.as_str(), value));
    }
    let uri = req.uri().to_string();
    let signable = SignableRequest::new(
        req.method().as_str(),
        uri,
        headers.into_iter(),
        SignableBody::Bytes(&[]),
    )
    .map_err(|e| invalid(e.into()))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| invalid(e.into()))?
        .into_parts();
    instructions.apply_to_request_http1x(req);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The "GET Object" example of the S3 SigV4 documentation ("Examples: Signature
    /// Calculations in AWS Signature Version 4", header-based authentication).
    #[test]
    fn known_answer_get_object_example() {
        let creds = Credentials::new(
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            None,
            None,
            "test",
        );
        let mut req = http::Request::get("/test.txt")
            .header("host", "examplebucket.s3.amazonaws.com")
            .header("range", "bytes=0-9")
            .body(())
            .unwrap();
        // 20130524T000000Z
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_369_353_600);
        sign_request(&mut req, &creds, "us-east-1", time).unwrap();
        let auth = req.headers()["authorization"].to_str().unwrap();
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
        assert_eq!(
            req.headers()["x-amz-content-sha256"],
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(req.headers()["x-amz-date"], "20130524T000000Z");
    }

    #[test]
    fn session_token_is_sent_and_signed() {
        let creds = Credentials::new("AKID", "SECRET", Some("TOKEN".into()), None, "test");
        let mut req = http::Request::get("/b/k")
            .header("host", "localhost:9000")
            .body(())
            .unwrap();
        sign_request(&mut req, &creds, "us-east-1", SystemTime::now()).unwrap();
        assert_eq!(req.headers()["x-amz-security-token"], "TOKEN");
        let auth = req.headers()["authorization"].to_str().unwrap();
        assert!(auth.contains("x-amz-security-token"), "{auth}");
    }

    #[test]
    fn path_is_not_normalised_or_reencoded() {
        // Two different keys must give two different signatures, and %2B must not become %252B.
        let creds = Credentials::new("AKID", "SECRET", None, None, "test");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let sig = |path: &str| {
            let mut req = http::Request::get(path)
                .header("host", "h")
                .body(())
                .unwrap();
            sign_request(&mut req, &creds, "us-east-1", t).unwrap();
            req.headers()["authorization"].to_str().unwrap().to_owned()
        };
        assert_ne!(sig("/b/a//c"), sig("/b/a/c"));
        assert_ne!(sig("/b/a/./c"), sig("/b/a/c"));
        assert_ne!(sig("/b/a%2Bc"), sig("/b/a%252Bc"));
    }

    #[tokio::test]
    async fn anonymous_leaves_request_unsigned() {
        let signer = Signer::new("us-east-1".into(), &CredentialSource::Anonymous);
        let mut req = http::Request::get("/b/k")
            .header("host", "h")
            .body(())
            .unwrap();
        signer.sign(&mut req).await.unwrap();
        assert!(req.headers().get("authorization").is_none());
    }

    #[tokio::test]
    async fn expiring_credentials_are_refreshed() {
        use std::sync::atomic::{AtomicU32, Ordering};
        use std::sync::Arc;

        #[derive(Debug)]
        struct Counting(Arc<AtomicU32>);
        impl ProvideCredentials for Counting {
            fn provide_credentials<'a>(
                &'a self,
            ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
            where
                Self: 'a,
            {
                self.0.fetch_add(1, Ordering::SeqCst);
                // Expires within the refresh margin: never served from the cache.
                let exp = SystemTime::now() + Duration::from_secs(60);
                aws_credential_types::provider::future::ProvideCredentials::ready(Ok(
                    Credentials::new("AKID", "SECRET", None, Some(exp), "test"),
                ))
            }
        }
        let calls = Arc::new(AtomicU32::new(0));
        let source =
            CredentialSource::Provider(SharedCredentialsProvider::new(Counting(calls.clone())));
        let signer = Signer::new("us-east-1".into(), &source);
        for _ in 0..3 {
            let mut req = http::Request::get("/b/k")
                .header("host", "h")
                .body(())
                .unwrap();
            signer.sign(&mut req).await.unwrap();
        }
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        let creds = Credentials::new("AKID", "SECRET", None, None, "static");
        let signer = Signer::new(
            "us-east-1".into(),
            &CredentialSource::Provider(SharedCredentialsProvider::new(creds)),
        );
        for _ in 0..3 {
            let mut req = http::Request::get("/b/k")
                .header("host", "h")
                .body(())
                .unwrap();
            signer.sign(&mut req).await.unwrap();
        }
        // Credentials without expiry stay cached.
        assert!(signer.cached().is_some());
    }
}
