//! Trust for https endpoints, and what a failed handshake means.
//!
//! [`TlsSettings`] (from the builder) becomes one `rustls::ClientConfig` for the client: the
//! `ring` provider, TLS 1.3 and 1.2, rustls's in-memory session cache (so a reconnect resumes
//! instead of a full handshake), and as roots the webpki roots (AWS's
//! endpoints), the platform's store (which honours `SSL_CERT_FILE` and `SSL_CERT_DIR`; read only
//! for an https endpoint) and any extra PEM bundles — `AWS_CA_BUNDLE` unless the builder names
//! its own. A bundle that cannot be read or holds no certificate is a [`ConfigError`] at build
//! time, whatever the endpoint's scheme.
//!
//! [`classify`] turns a failed connect whose cause is a certificate or handshake failure into an
//! [`ErrorKind::Tls`] error, which is not retried: its message leads with the reason and says
//! how to fix it.

mod stream;

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{CertificateError, ClientConfig, RootCertStore};

use crate::error::{ConfigError, Error, ErrorKind};

pub(crate) use stream::TlsStream;

/// Extra roots to trust, as given to the builder.
#[derive(Clone, Debug)]
pub(crate) enum Bundle {
    /// A PEM file.
    File(PathBuf),
    /// PEM text.
    Pem(Vec<u8>),
    /// Ready roots.
    Roots(RootCertStore),
}

/// The builder's TLS settings.
#[derive(Clone, Debug)]
pub(crate) struct TlsSettings {
    /// Extra roots.
    pub(crate) bundles: Vec<Bundle>,
    /// With no bundle given, read `AWS_CA_BUNDLE` from the process at build time. Off once
    /// [`aws_settings`](crate::ClientBuilder::aws_settings) has decided from its own `AwsEnv`.
    pub(crate) bundle_from_env: bool,
    /// A whole configuration from the caller, used as given.
    pub(crate) config: Option<Arc<ClientConfig>>,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            bundles: Vec::new(),
            bundle_from_env: true,
            config: None,
        }
    }
}

impl TlsSettings {
    /// The client's rustls configuration; the platform's store is read only when `platform`
    /// (an https endpoint). Bundles are read and checked either way.
    pub(crate) fn client_config(&self, platform: bool) -> Result<Arc<ClientConfig>, ConfigError> {
        if let Some(config) = &self.config {
            return Ok(Arc::clone(config));
        }
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        // The platform's store; a store that cannot be read leaves the other roots.
        if platform {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
        }
        let from_env;
        let bundles = if self.bundles.is_empty() && self.bundle_from_env {
            from_env = std::env::var_os("AWS_CA_BUNDLE")
                .filter(|v| !v.is_empty())
                .map(|p| Bundle::File(PathBuf::from(p)));
            from_env.as_slice()
        } else {
            self.bundles.as_slice()
        };
        for bundle in bundles {
            add_bundle(&mut roots, bundle)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::new("tls", e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }
}

fn add_bundle(roots: &mut RootCertStore, bundle: &Bundle) -> Result<(), ConfigError> {
    let (certs, origin) = match bundle {
        Bundle::Roots(extra) => {
            roots.roots.extend(extra.roots.iter().cloned());
            return Ok(());
        }
        Bundle::File(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                ConfigError::new("ca_bundle", format!("reading {}: {e}", path.display()))
            })?;
            (parse(&pem), path.display().to_string())
        }
        Bundle::Pem(pem) => (parse(pem), "the PEM given".to_owned()),
    };
    let certs = certs.map_err(|e| ConfigError::new("ca_bundle", format!("{origin}: {e}")))?;
    if certs.is_empty() {
        return Err(ConfigError::new(
            "ca_bundle",
            format!("{origin} holds no PEM certificate"),
        ));
    }
    let (_, refused) = roots.add_parsable_certificates(certs);
    if refused > 0 {
        return Err(ConfigError::new(
            "ca_bundle",
            format!("{origin}: {refused} certificate(s) could not be parsed"),
        ));
    }
    Ok(())
}

fn parse(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM bundle ({e})"))
}

/// How to fix an untrusted certificate.
const REMEDY: &str = "if the endpoint uses a private CA, give its certificate with \
     AWS_CA_BUNDLE, --ca-bundle or ClientBuilder::ca_bundle_file";

/// `Some` TLS error when `err` was caused by a certificate or handshake failure.
pub(crate) fn classify(
    origin: &http::Uri,
    err: &(dyn std::error::Error + 'static),
) -> Option<Error> {
    let tls = find_rustls_error(err)?;
    let host = origin.host().unwrap_or("?");
    let reason = match tls {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => {
                format!("the certificate of {host} is not trusted (unknown issuer); {REMEDY}")
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!(
                    "the certificate of {host} is for another name ({c:?}); check the \
                     endpoint URL"
                )
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                format!("the certificate of {host} has expired ({c:?})")
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                format!("the certificate of {host} is not valid yet ({c:?}); check the clock")
            }
            other => format!("the certificate of {host} was refused ({other:?}); {REMEDY}"),
        },
        other => format!("the TLS handshake with {host} failed ({other})"),
    };
    Some(Error::new(ErrorKind::Tls).with_message(reason))
}

fn find_rustls_error<'a>(
    mut err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    loop {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        // An io::Error's source() skips the error it wraps: look at that first.
        let wrapped = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn std::error::Error + 'static));
        err = match wrapped {
            Some(inner) => inner,
            None => err.source()?,
        };
    }
}
