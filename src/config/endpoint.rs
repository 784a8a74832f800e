//! Where requests go: the endpoint (given, or AWS's for the region), the region, and how the
//! bucket is named in each request.

use http::uri::{Scheme, Uri};

use crate::error::ConfigError;

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

/// The endpoint, region and addressing, checked.
#[derive(Debug, Clone)]
pub(super) struct Endpoint {
    pub(super) uri: Uri,
    /// The endpoint is AWS's for the region: a bucket found in another region is reached at
    /// that region's endpoint.
    pub(super) follows_region: bool,
    pub(super) region: String,
    pub(super) addressing: Addressing,
}

impl Endpoint {
    /// The endpoint `url` (`None`: AWS's for the region), in `region` (`None`:
    /// [`DEFAULT_REGION`]), addressed as `addressing` says (`None`: virtual-hosted on AWS,
    /// path-style elsewhere).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for a region that is not a region name, or an endpoint that is not an
    /// http or https URL of a host alone.
    pub(super) fn resolve(
        url: Option<String>,
        region: Option<String>,
        addressing: Option<Addressing>,
    ) -> Result<Self, ConfigError> {
        let region = region.unwrap_or_else(|| DEFAULT_REGION.to_owned());
        if !is_region_name(&region) {
            return Err(ConfigError::new(
                "region",
                format!("{region:?} is not a region name"),
            ));
        }
        let regional = aws_endpoint(&region);
        let (uri, is_aws, follows_region) = match url {
            Some(url) => {
                let uri = parse_endpoint(&url)?;
                let is_aws = uri.host().is_some_and(|h| h.ends_with(".amazonaws.com"));
                // AWS's own regional (or global) endpoint, given by hand, still follows the
                // bucket's region; any other endpoint is kept as given.
                let follows = uri.port().is_none()
                    && uri.scheme() == Some(&Scheme::HTTPS)
                    && uri.host().is_some_and(|h| {
                        h == "s3.amazonaws.com" || Some(h) == regional.strip_prefix("https://")
                    });
                (uri, is_aws, follows)
            }
            None => (parse_endpoint(&regional)?, true, true),
        };
        let addressing = addressing.unwrap_or(if is_aws {
            Addressing::VirtualHosted
        } else {
            Addressing::PathStyle
        });
        Ok(Endpoint {
            uri,
            follows_region,
            region,
            addressing,
        })
    }
}

/// AWS's S3 endpoint for `region`.
pub(crate) fn aws_endpoint(region: &str) -> String {
    format!("https://s3.{region}.amazonaws.com")
}

/// A region name: ASCII letters, digits and `-`, not empty.
pub(crate) fn is_region_name(region: &str) -> bool {
    !region.is_empty()
        && region.len() <= 64
        && region
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
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
