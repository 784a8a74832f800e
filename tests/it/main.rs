//! Integration tests: the client against a real S3 implementation in process (s3s-fs) and
//! against a scripted mock for budgets, malformed replies and cancellation.

mod budgets;
mod cancel;
#[path = "../support/certs.rs"]
#[allow(dead_code)] // leaf_pem is the CLI tests'
mod certs;
mod credentials;
mod desync;
mod integrity;
mod options;
mod parts;
mod proxy;
#[path = "../support/proxy.rs"]
mod proxy_server;
#[path = "../support/quiescent.rs"]
mod quiescent;
mod real_s3;
mod region;
#[path = "../support/s3_server.rs"]
mod s3_server;
#[path = "../support/shed_server.rs"]
mod shed_server;
mod support;
mod throttle;
mod tls;
#[path = "../support/tls_server.rs"]
mod tls_server;
mod wire;

/// A client builder on the transport these tests run on.
pub fn builder() -> s3_ordered::ClientBuilder {
    s3_ordered::Client::builder()
}
