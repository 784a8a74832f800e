//! Certificates for the TLS tests, made by rcgen: a private CA, and leaf certificates it signs
//! (for 127.0.0.1, for another name, expired), and a rustls server configuration for one.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};

/// A private CA.
pub struct Ca {
    pub pem: String,
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// Which leaf certificate the server shows.
#[derive(Clone, Copy, Debug)]
pub enum Leaf {
    /// For 127.0.0.1, valid now.
    Good,
    /// For `other.example` only.
    OtherName,
    /// For 127.0.0.1, expired in 2001.
    Expired,
}

impl Ca {
    pub fn new() -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "s3-ordered test CA");
        let cert = params.self_signed(&key).expect("CA certificate");
        Ca {
            pem: cert.pem(),
            cert,
            key,
        }
    }

    /// `leaf`'s certificate and private key, as PEM text.
    pub fn leaf_pem(&self, leaf: Leaf) -> (String, String) {
        let (cert, key) = self.make_leaf(leaf);
        (cert.pem(), key.serialize_pem())
    }

    /// A rustls server configuration showing `leaf`.
    pub fn server_config(&self, leaf: Leaf) -> Arc<rustls::ServerConfig> {
        let (cert, key) = self.leaf(leaf);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.into()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()),
            )
            .expect("server config");
        Arc::new(config)
    }

    fn leaf(&self, leaf: Leaf) -> (Vec<u8>, Vec<u8>) {
        let (cert, key) = self.make_leaf(leaf);
        (cert.der().to_vec(), key.serialize_der())
    }

    fn make_leaf(&self, leaf: Leaf) -> (rcgen::Certificate, KeyPair) {
        let key = KeyPair::generate().expect("leaf key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("leaf params");
        match leaf {
            Leaf::OtherName => params
                .subject_alt_names
                .push(SanType::DnsName("other.example".try_into().expect("name"))),
            Leaf::Good | Leaf::Expired => params
                .subject_alt_names
                .push(SanType::IpAddress([127, 0, 0, 1].into())),
        }
        if let Leaf::Expired = leaf {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("leaf certificate");
        (cert, key)
    }
}
