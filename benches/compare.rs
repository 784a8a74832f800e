//! Side-by-side comparison in one run: throughput, client CPU seconds and peak RSS of
//! `s3_ordered` and of `buffered(n)` over hyper-util, each client in its own child process so
//! CPU and RSS are the client's alone (the server runs in this parent process).
//!
//! `cargo bench --bench compare` prints a Markdown table; `--rounds N` repeats each scenario
//! (median reported), `--quick` runs smaller scenarios. For profiling one client alone,
//! `--serve SIZE` runs only the server for 120 s and prints its address, and
//! `--child MODE ADDR COUNT SIZE N MAX_BYTES` runs only one client against it.

#[path = "support/clients.rs"]
mod clients;
#[path = "support/server.rs"]
mod server;

use std::process::Command;
use std::time::Instant;

struct Scenario {
    name: &'static str,
    count: usize,
    size: usize,
    n: usize,
    max_bytes: u64,
}

const MODES: [&str; 3] = ["hyper_util_buffered", "s3_ordered", "s3_ordered_unsigned"];

#[derive(Debug, Clone, Copy)]
struct Sample {
    secs: f64,
    cpu: f64,
    rss_kib: u64,
    bytes: u64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(&args[i + 1..]);
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--serve") {
        let size = args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(256 << 10);
        println!("{}", server::start(size));
        std::thread::sleep(std::time::Duration::from_secs(120));
        return;
    }
    let rounds = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(3usize);
    let quick = args.iter().any(|a| a == "--quick");
    let scale = if quick { 10 } else { 1 };
    let scenarios = [
        Scenario {
            name: "2000 x 256 KiB",
            count: 2000 / scale,
            size: 256 << 10,
            n: 16,
            max_bytes: 32 << 20,
        },
        Scenario {
            name: "200 x 8 MiB",
            count: 200 / scale,
            size: 8 << 20,
            n: 16,
            max_bytes: 64 << 20,
        },
    ];
    println!("| scenario | client | MB/s | client CPU s | CPU s per GB | peak RSS MiB | budget MiB | speed vs baseline | CPU vs baseline |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for sc in &scenarios {
        let addr = server::start(sc.size);
        let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); MODES.len()];
        for _ in 0..rounds {
            // Interleave modes so drift on a noisy machine hits all of them alike.
            for (m, mode) in MODES.iter().enumerate() {
                samples[m].push(run_child(mode, &addr.to_string(), sc));
            }
        }
        let med: Vec<Sample> = samples.iter().map(|s| median(s)).collect();
        let base = med[0];
        for (m, mode) in MODES.iter().enumerate() {
            let s = med[m];
            let mbps = s.bytes as f64 / s.secs / 1e6;
            let gb = s.bytes as f64 / 1e9;
            let budget = if m == 0 {
                "none".to_owned()
            } else {
                (sc.max_bytes >> 20).to_string()
            };
            println!(
                "| {} | {mode} | {mbps:.0} | {:.2} | {:.3} | {:.0} | {budget} | {:.2}x | {:.2}x |",
                sc.name,
                s.cpu,
                s.cpu / gb,
                s.rss_kib as f64 / 1024.0,
                base.secs / s.secs,
                s.cpu / base.cpu,
            );
        }
    }
}

fn median(samples: &[Sample]) -> Sample {
    let mut by_time = samples.to_vec();
    by_time.sort_by(|a, b| a.secs.total_cmp(&b.secs));
    let mut s = by_time[by_time.len() / 2];
    let mut cpus: Vec<f64> = samples.iter().map(|s| s.cpu).collect();
    cpus.sort_by(f64::total_cmp);
    s.cpu = cpus[cpus.len() / 2];
    let mut rss: Vec<u64> = samples.iter().map(|s| s.rss_kib).collect();
    rss.sort_unstable();
    s.rss_kib = rss[rss.len() / 2];
    s
}

fn run_child(mode: &str, addr: &str, sc: &Scenario) -> Sample {
    let exe = std::env::current_exe().expect("current exe");
    let out = Command::new(exe)
        .args(["--child", mode, addr])
        .args([sc.count, sc.size, sc.n].map(|v| v.to_string()))
        .arg(sc.max_bytes.to_string())
        .output()
        .expect("run child");
    assert!(
        out.status.success(),
        "child {mode} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<f64> = text
        .split_whitespace()
        .map(|v| v.parse().expect("number"))
        .collect();
    Sample {
        bytes: f[0] as u64,
        secs: f[1],
        cpu: f[2],
        rss_kib: f[3] as u64,
    }
}

fn child(args: &[String]) {
    let mode = args[0].as_str();
    let addr: std::net::SocketAddr = args[1].parse().expect("addr");
    let num = |i: usize| args[i].parse::<u64>().expect("number");
    let (count, size, n, max_bytes) = (num(2) as usize, num(3) as usize, num(4) as usize, num(5));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (bytes, secs) = rt.block_on(async {
        let objects = clients::objects(count, size);
        let start = Instant::now();
        let bytes = match mode {
            "hyper_util_buffered" => {
                let c = clients::baseline_client(n);
                clients::run_baseline(&c, addr, objects, n).await
            }
            "s3_ordered" | "s3_ordered_unsigned" => {
                let c = clients::s3_ordered_client(addr, n, max_bytes, mode == "s3_ordered");
                let got = clients::run_s3_ordered(&c, objects).await;
                assert!(c.stats().bytes_in_use <= max_bytes);
                got
            }
            other => panic!("unknown mode {other}"),
        };
        (bytes, start.elapsed().as_secs_f64())
    });
    assert_eq!(bytes, (count * size) as u64);
    let (cpu, rss_kib) = rusage();
    println!("{bytes} {secs} {cpu} {rss_kib}");
}

/// User + system CPU seconds and peak RSS (KiB) of this process.
fn rusage() -> (f64, u64) {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole `rusage` into the pointer it is given, which points to
    // zero-initialised storage of that type; the result is read only after a 0 return.
    let ru = unsafe {
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()), 0);
        ru.assume_init()
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(ru.ru_utime) + secs(ru.ru_stime), ru.ru_maxrss as u64)
}
