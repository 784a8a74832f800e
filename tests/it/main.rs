//! Integration tests: the client against a real S3 implementation in process (s3s-fs) and
//! against a scripted mock for budgets, malformed replies and cancellation.

mod budgets;
mod cancel;
#[path = "../support/fault_server.rs"]
mod fault_server;
#[path = "../support/fault_suite.rs"]
mod fault_suite;
mod faults;
mod integrity;
mod real_s3;
#[path = "../support/s3_server.rs"]
mod s3_server;
mod support;
