//! The integration tests of `tests/it` again, with hyper's `client::conn::http1` carrying every
//! exchange (`HttpTransport::Hyper`): the same servers, budgets and checks.
#![cfg(feature = "hyper")]

#[path = "it/main.rs"]
mod it;
use it::*;

/// What `it::client_builder` builds on.
const TRANSPORT: s3_ordered::HttpTransport = s3_ordered::HttpTransport::Hyper;
