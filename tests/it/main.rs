//! Integration tests: the client against a real S3 implementation in process (s3s-fs) and
//! against a scripted mock for budgets, malformed replies and cancellation.

pub(crate) mod budgets;
pub(crate) mod cancel;
#[path = "../support/certs.rs"]
#[allow(dead_code)] // leaf_pem is the CLI tests'
pub(crate) mod certs;
pub(crate) mod checksums;
pub(crate) mod credentials;
pub(crate) mod desync;
pub(crate) mod express;
#[path = "../support/express_server.rs"]
pub(crate) mod express_server;
pub(crate) mod hedge;
pub(crate) mod integrity;
pub(crate) mod options;
pub(crate) mod parts;
pub(crate) mod proxy;
#[path = "../support/proxy.rs"]
pub(crate) mod proxy_server;
#[path = "../support/quiescent.rs"]
pub(crate) mod quiescent;
pub(crate) mod real_s3;
pub(crate) mod region;
#[path = "../support/s3_server.rs"]
pub(crate) mod s3_server;
#[path = "../support/shed_server.rs"]
pub(crate) mod shed_server;
#[path = "../support/sockets.rs"]
#[allow(dead_code)] // client_socket_rows is the fault suite's
pub(crate) mod sockets;
pub(crate) mod support;
pub(crate) mod throttle;
pub(crate) mod tls;
#[path = "../support/tls_server.rs"]
pub(crate) mod tls_server;
pub(crate) mod wire;

/// The transport these tests run on: this crate's own here; `tests/it_hyper.rs` runs the same
/// tests with hyper's.
#[allow(dead_code)] // unused where it_hyper.rs holds these tests as a module
const TRANSPORT: s3_ordered::HttpTransport = s3_ordered::HttpTransport::Native;

/// `Client::builder()` on [`TRANSPORT`]; every client of these tests starts here.
pub fn client_builder() -> s3_ordered::ClientBuilder {
    s3_ordered::Client::builder().transport(crate::TRANSPORT)
}
