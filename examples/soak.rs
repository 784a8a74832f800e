//! Fault soak: many more seeded runs of the fault suite than CI does.
//!
//! ```sh
//! cargo run --release --example soak -- --runs 5000 [--start 1] [--parallel 8] [--throttle-heavy | --tls]
//! ```
//!
//! Each run checks every invariant of the suite (order, bytes, typed errors, budgets, sockets,
//! nothing held afterwards); the first failure prints its seed and stops. Replay one seed with
//! `S3O_FAULT_SEED=N cargo test --test faults`. With `--throttle-heavy`, the runs are those of
//! `tests/throttle_faults.rs` instead (default settings, nothing may fail); replay with
//! `S3O_FAULT_SEED=N cargo test --test throttle_faults`. With `--tls`, the hostile runs go over
//! https (replay with `S3O_FAULT_SEED=N cargo test --test faults -- over_tls`).

#[path = "../tests/support/certs.rs"]
#[allow(dead_code)]
mod certs;
#[path = "../tests/support/fault_server.rs"]
mod fault_server;
#[path = "../tests/support/fault_suite.rs"]
#[allow(dead_code)] // seeds(): the tests take S3O_FAULT_SEED, the soak its own range
mod fault_suite;
#[path = "../tests/support/quiescent.rs"]
#[allow(dead_code)]
mod quiescent;
#[path = "../tests/support/sockets.rs"]
mod sockets;

use std::time::Instant;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number"))
        })
        .unwrap_or(default)
}

fn main() {
    let runs = arg("--runs", 2000);
    let start = arg("--start", 1);
    let parallel = arg("--parallel", 8).max(1) as usize;
    let throttle_heavy = std::env::args().any(|a| a == "--throttle-heavy");
    let tls = std::env::args().any(|a| a == "--tls");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let began = Instant::now();
    let mut t = fault_suite::Totals::default();
    let seeds: Vec<u64> = (start..start + runs).collect();
    // Fifty rounds of `parallel` runs between progress lines.
    for chunk in seeds.chunks(parallel * 50) {
        t += rt.block_on(async {
            if throttle_heavy {
                let lost = |r: &fault_suite::RunReport| {
                    assert_eq!(r.failed, 0, "an object was lost: {r:?}");
                };
                fault_suite::run_all(chunk, parallel, fault_suite::run_defaults_seed, lost).await
            } else if tls {
                fault_suite::run_all(chunk, parallel, fault_suite::run_seed_tls, |_| {}).await
            } else {
                fault_suite::run_all(chunk, parallel, fault_suite::run_seed, |_| {}).await
            }
        });
        eprintln!("{} runs, {:.0} s", t.runs, began.elapsed().as_secs_f64());
    }
    let fault_suite::Totals {
        ok,
        failed,
        cancelled,
        requests,
        throttled,
        ..
    } = t;
    println!(
        "soak: {runs} runs (seeds {start}..{}), {ok} objects ok, {failed} failed with typed \
         errors, {cancelled} runs cancelled, {requests} requests ({throttled} throttled), {:.1} s",
        start + runs,
        began.elapsed().as_secs_f64()
    );
}
