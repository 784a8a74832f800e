//! Side-by-side comparison in one run: throughput, client CPU seconds and peak RSS of
//! `s3_ordered` and of other clients over hyper-util, each client in its own child process so
//! CPU and RSS are the client's alone (the server runs in this parent process).
//!
//! * `hyper_util_buffered`: `buffered(n)` whole-object GETs, each body collected (the baseline);
//! * `s3_ordered` (and `s3_ordered_unsigned`, without SigV4), and `s3_ordered_on_hyper`: the
//!   same client with hyper's `client::conn::http1` carrying its exchanges, in every scenario;
//! * `s3_ordered_checksums_off` and `hyper_util_buffered_verified` (W1 and W2): the cost of
//!   verifying every object's CRC64NVME, which the server states as S3 does — this client with
//!   checksums off beside it as shipped (on), and the baseline computing the CRC itself;
//! * `s3_ordered_no_hedge` (the paced 256 KiB scenarios, with and without a tail of one reply
//!   in 100 at 1 s to its first byte): this client with hedging off beside it as shipped;
//! * `ranged_ceiling`: what the link carries — every object cut into part-size ranged GETs, `n`
//!   at a time, bodies counted and never held (paced scenarios only);
//! * `plain_loop`: the plain HTTP load loop, `n` connections each sending its GETs one after the
//!   other — the ceiling of small objects, also behind 20 ms to first byte over 32 to 2,048
//!   connections ("paced over N connections": what holds at thousands of connections).
//!
//! `cargo bench --bench compare` prints a Markdown table; `--rounds N` repeats each scenario
//! (median reported), `--quick` runs smaller scenarios, `--only TEXT` the scenarios whose name
//! contains TEXT. Paced scenarios imitate S3 seen from one instance: 20 ms to first byte and
//! 50 MB/s per connection. For profiling one client alone,
//! `--serve SIZE [--for SECONDS] [--paced] [--tls]`
//! runs only the server (120 s by default) and prints its address (with `--tls`, and on a second
//! line the file holding its CA, for `S3O_BENCH_CA`), and
//! `--child MODE ADDR COUNT SIZE N MAX_BYTES PART` runs only one client against it.
//! `--objects N` makes every scenario fetch N objects. `--against EXE` adds
//! `s3_ordered_before` to every scenario: the `s3_ordered` child of another build of this bench
//! (an earlier commit's, say), run in the same rounds against the same server, for before/after
//! figures measured side by side. Children run on tokio's multi-threaded runtime with a worker
//! per core; `S3O_BENCH_THREADS=N` gives them N workers, and `0` the current-thread runtime.

#[path = "../tests/support/certs.rs"]
#[allow(dead_code)]
mod certs;
#[path = "support/clients.rs"]
#[allow(dead_code)] // the plain client constructor is the criterion bench's
mod clients;
#[path = "support/server.rs"]
#[allow(dead_code)] // `start` is the criterion bench's
mod server;

use std::alloc::{GlobalAlloc, Layout, System};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use s3_ordered::ObjectRef;
use server::Pace;

/// The system allocator, counting allocations (and reallocations), so a child can report
/// allocations per object.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is passed unchanged to the system allocator; the counter has no effect on
// the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller upholds `alloc`'s contract, which `System.alloc` shares.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller upholds `realloc`'s contract, which `System.realloc` shares.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, that is from `System`, with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

struct Scenario {
    name: &'static str,
    count: usize,
    size: usize,
    /// Connections (and `buffered(n)`'s n).
    n: usize,
    max_bytes: u64,
    /// Part size for `s3_ordered` (0: its default) and the ceiling.
    part: u64,
    pace: Option<Pace>,
    modes: &'static [&'static str],
    /// Over https (a private CA made for the run).
    tls: bool,
}

const UNPACED: &[&str] = &["hyper_util_buffered", "s3_ordered", "s3_ordered_unsigned"];
/// W1: checksums verified (as shipped) and off, and the baseline verifying them itself.
const W1: &[&str] = &[
    "hyper_util_buffered",
    "hyper_util_buffered_verified",
    "s3_ordered",
    "s3_ordered_checksums_off",
    "s3_ordered_unsigned",
];
/// Small objects: the plain HTTP load loop first, as the ceiling.
const SMALL: &[&str] = &[
    "plain_loop",
    "hyper_util_buffered",
    "s3_ordered",
    "s3_ordered_unsigned",
];
/// W2, paced: the link's ceiling, the baseline (also verifying), this client with checksums
/// on and off.
const W2: &[&str] = &[
    "ranged_ceiling",
    "hyper_util_buffered",
    "hyper_util_buffered_verified",
    "s3_ordered",
    "s3_ordered_checksums_off",
];
/// Over https: the baseline with hyper-rustls, then this client.
const HTTPS: &[&str] = &["hyper_util_buffered", "s3_ordered"];
/// Sizes given, left out (default streaming threshold), left out with half the budget as
/// threshold (room to run ahead of the probes).
const UNSIZED: &[&str] = &[
    "s3_ordered",
    "s3_ordered_unsized",
    "s3_ordered_unsized_half",
];

/// S3 seen from one instance (issue figures; S3 performance guidelines).
const S3_LINK: Pace = Pace {
    first_byte: Duration::from_millis(20),
    rate: 50_000_000,
    tail: None,
};

/// The same link with S3's far tail: one reply in 100 takes 1 s to its first byte.
const S3_LINK_TAIL: Pace = Pace {
    tail: Some(server::Tail {
        every: 100,
        first_byte: Duration::from_secs(1),
    }),
    ..S3_LINK
};

/// Tail latency: this client (hedging, as shipped), the same without hedging, the baseline.
const TAIL: &[&str] = &["hyper_util_buffered", "s3_ordered", "s3_ordered_no_hedge"];

#[derive(Debug, Clone, Copy)]
struct Sample {
    secs: f64,
    cpu: f64,
    rss_kib: u64,
    bytes: u64,
    allocations: u64,
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
        // Serves for `--for SECONDS` (default 120), then exits.
        let seconds = args
            .iter()
            .position(|a| a == "--for")
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(120);
        // `--paced`: as S3 seen from one instance (the paced scenarios' link).
        // `--tail`: the same with one reply in 100 at 1 s to its first byte.
        let pace = match (
            args.iter().any(|a| a == "--paced"),
            args.iter().any(|a| a == "--tail"),
        ) {
            (_, true) => Some(S3_LINK_TAIL),
            (true, false) => Some(S3_LINK),
            (false, false) => None,
        };
        // `--tls`: https with a CA made now, its PEM written to a file named on a second line
        // (give it to children as S3O_BENCH_CA).
        if args.iter().any(|a| a == "--tls") {
            let ca = certs::Ca::new();
            let path = write_ca(&ca);
            let tls = ca.server_config(certs::Leaf::Good);
            println!("{}", server::start_with(size, pace, Some(tls)));
            println!("{}", path.display());
        } else {
            println!("{}", server::start_paced(size, pace));
        }
        std::thread::sleep(Duration::from_secs(seconds));
        return;
    }
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
    };
    let rounds = value("--rounds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(3usize);
    let only = value("--only").cloned().unwrap_or_default();
    let against = value("--against").map(std::path::PathBuf::from);
    // `--objects N`: every scenario run fetches N objects (longer runs, steadier figures).
    let objects: Option<usize> = value("--objects").and_then(|v| v.parse().ok());
    let quick = args.iter().any(|a| a == "--quick");
    let scale = if quick { 10 } else { 1 };
    let mut scenarios = [
        Scenario {
            name: "2000 x 256 KiB",
            count: 2000 / scale,
            size: 256 << 10,
            n: 16,
            max_bytes: 32 << 20,
            part: 0,
            pace: None,
            modes: W1,
            tls: false,
        },
        Scenario {
            name: "200 x 8 MiB",
            count: 200 / scale,
            size: 8 << 20,
            n: 16,
            max_bytes: 64 << 20,
            part: 0,
            pace: None,
            modes: UNPACED,
            tls: false,
        },
        Scenario {
            name: "16 x 64 MiB paced",
            count: 16 / if quick { 4 } else { 1 },
            size: 64 << 20,
            n: 32,
            max_bytes: 256 << 20,
            part: 8 << 20,
            pace: Some(S3_LINK),
            modes: W2,
            tls: false,
        },
        Scenario {
            name: "2000 x 256 KiB paced, no tail",
            count: 2000 / scale,
            size: 256 << 10,
            n: 32,
            max_bytes: 32 << 20,
            part: 0,
            pace: Some(S3_LINK),
            modes: TAIL,
            tls: false,
        },
        Scenario {
            name: "2000 x 256 KiB paced, 1 % at 1 s",
            count: 2000 / scale,
            size: 256 << 10,
            n: 32,
            max_bytes: 32 << 20,
            part: 0,
            pace: Some(S3_LINK_TAIL),
            modes: TAIL,
            tls: false,
        },
        Scenario {
            name: "1000 x 4 KiB paced, sizes left out",
            count: 1000 / scale,
            size: 4 << 10,
            n: 32,
            max_bytes: 256 << 20,
            part: 1 << 20,
            pace: Some(S3_LINK),
            modes: UNSIZED,
            tls: false,
        },
        small("10000 x 0 B", 0, scale),
        small("10000 x 1 KiB", 1 << 10, scale),
        small("10000 x 4 KiB", 4 << 10, scale),
        Scenario {
            name: "1 x 1 GiB, 64 MiB budget",
            count: 1,
            size: (1 << 30) / scale,
            n: 16,
            max_bytes: 64 << 20,
            part: 0,
            pace: None,
            modes: &["hyper_util_buffered", "s3_ordered"],
            tls: false,
        },
        Scenario {
            name: "2000 x 256 KiB https",
            count: 2000 / scale,
            size: 256 << 10,
            n: 16,
            max_bytes: 32 << 20,
            part: 0,
            pace: None,
            modes: HTTPS,
            tls: true,
        },
        Scenario {
            name: "10000 x 4 KiB https",
            count: 10_000 / scale,
            size: 4 << 10,
            n: 32,
            max_bytes: 256 << 20,
            part: 0,
            pace: None,
            modes: HTTPS,
            tls: true,
        },
        many("4 KiB paced over 32 connections", 32, scale),
        many("4 KiB paced over 256 connections", 256, scale),
        many("4 KiB paced over 1024 connections", 1024, scale),
        many("4 KiB paced over 2048 connections", 2048, scale),
    ];
    println!("| scenario | client | MB/s | objects/s | client CPU s | CPU µs per object | CPU s per GB | allocations per object | peak RSS MiB | budget MiB | speed vs first | CPU vs first |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for sc in scenarios
        .iter_mut()
        .filter(|s| s.name.contains(only.as_str()))
    {
        let name = match objects {
            Some(n) => {
                sc.count = n;
                let rest = sc.name.split_once(" x ").map_or(sc.name, |(_, r)| r);
                format!("{n} x {rest}")
            }
            None => sc.name.to_owned(),
        };
        let sc = &*sc;
        // Over https the children trust the run's CA through the file S3O_BENCH_CA names.
        let ca = sc.tls.then(certs::Ca::new);
        let ca_file = ca.as_ref().map(write_ca);
        let tls = ca.as_ref().map(|ca| ca.server_config(certs::Leaf::Good));
        let addr = server::start_with(sc.size, sc.pace, tls);
        let mut modes: Vec<&str> = sc.modes.to_vec();
        // The same client on hyper's HTTP/1.1, beside it in every round: the native
        // transport's lead (or not), measured each time.
        if let Some(i) = modes.iter().position(|m| *m == "s3_ordered") {
            modes.insert(i + 1, ON_HYPER);
        }
        if against.is_some() && modes.contains(&"s3_ordered") {
            modes.push(BEFORE);
        }
        let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); modes.len()];
        for _ in 0..rounds {
            // Interleave modes so drift on a noisy machine hits all of them alike.
            for (m, mode) in modes.iter().enumerate() {
                let exe = against.as_deref().filter(|_| *mode == BEFORE);
                samples[m].push(run_child(
                    mode,
                    exe,
                    &addr.to_string(),
                    sc,
                    ca_file.as_deref(),
                ));
            }
        }
        let med: Vec<Sample> = samples.iter().map(|s| median(s)).collect();
        let base = med[0];
        for (m, mode) in modes.iter().enumerate() {
            let s = med[m];
            let mbps = s.bytes as f64 / s.secs / 1e6;
            let gb = s.bytes as f64 / 1e9;
            let budget = if mode.starts_with("s3_ordered") {
                (sc.max_bytes >> 20).to_string()
            } else {
                "none".to_owned()
            };
            let per_gb = if gb > 0.0 {
                format!("{:.3}", s.cpu / gb)
            } else {
                "-".to_owned()
            };
            println!(
                "| {} | {mode} | {mbps:.0} | {:.0} | {:.2} | {:.1} | {per_gb} | {:.1} | {:.0} | {budget} | {:.2}x | {:.2}x |",
                name,
                sc.count as f64 / s.secs,
                s.cpu,
                s.cpu * 1e6 / sc.count as f64,
                s.allocations as f64 / sc.count as f64,
                s.rss_kib as f64 / 1024.0,
                base.secs / s.secs,
                s.cpu / base.cpu,
            );
        }
    }
}

/// Small objects behind S3's 20 ms to first byte over `n` connections (50 per connection, about
/// a second's work), beside the plain HTTP loop over as many: what holds at thousands of
/// connections.
fn many(name: &'static str, n: usize, scale: usize) -> Scenario {
    Scenario {
        name,
        count: n * 50 / scale,
        size: 4 << 10,
        n,
        max_bytes: 256 << 20,
        part: 0,
        pace: Some(S3_LINK),
        modes: &["plain_loop", "s3_ordered"],
        tls: false,
    }
}

/// 10,000 objects of `size` bytes over 32 connections, beside the plain HTTP loop.
fn small(name: &'static str, size: usize, scale: usize) -> Scenario {
    Scenario {
        name,
        count: 10_000 / scale,
        size,
        n: 32,
        max_bytes: 256 << 20,
        part: 0,
        pace: None,
        modes: SMALL,
        tls: false,
    }
}

/// Writes `ca`'s PEM where children can read it (`S3O_BENCH_CA`); returns the path.
fn write_ca(ca: &certs::Ca) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("s3o-bench-ca-{}.pem", std::process::id()));
    std::fs::write(&path, &ca.pem).expect("write CA");
    path
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

/// `s3_ordered` with `HttpTransport::Hyper`.
const ON_HYPER: &str = "s3_ordered_on_hyper";

/// The `s3_ordered` child of the build given with `--against`.
const BEFORE: &str = "s3_ordered_before";

/// Runs one child: `mode` of this executable, or — for [`BEFORE`] — `s3_ordered` of `other`.
fn run_child(
    mode: &str,
    other: Option<&std::path::Path>,
    addr: &str,
    sc: &Scenario,
    ca_file: Option<&std::path::Path>,
) -> Sample {
    let exe = match other {
        Some(path) => path.to_path_buf(),
        None => std::env::current_exe().expect("current exe"),
    };
    let mode = if mode == BEFORE { "s3_ordered" } else { mode };
    let mut cmd = Command::new(exe);
    match ca_file {
        Some(path) => cmd.env("S3O_BENCH_CA", path),
        None => cmd.env_remove("S3O_BENCH_CA"),
    };
    let out = cmd
        .args(["--child", mode, addr])
        .args([sc.count, sc.size, sc.n].map(|v| v.to_string()))
        .args([sc.max_bytes, sc.part].map(|v| v.to_string()))
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
        allocations: f[4] as u64,
    }
}

fn child(args: &[String]) {
    let mode = args[0].clone();
    let mode = mode.as_str();
    let addr: std::net::SocketAddr = args[1].parse().expect("addr");
    let num = |i: usize| args[i].parse::<u64>().expect("number");
    let (count, size, n) = (num(2) as usize, num(3) as usize, num(4) as usize);
    let (max_bytes, part) = (num(5), num(6));
    let rt = match std::env::var("S3O_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(0) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
        None => tokio::runtime::Runtime::new(),
    }
    .expect("runtime");
    let mode = mode.to_owned();
    let ca = std::env::var_os("S3O_BENCH_CA").map(std::path::PathBuf::from);
    let work = async move {
        let mode = mode.as_str();
        let objects = clients::objects(count, size);
        let start = Instant::now();
        let allocations = ALLOCATIONS.load(Ordering::Relaxed);
        let bytes = match mode {
            "plain_loop" => clients::run_plain_loop(addr, objects, n).await,
            "hyper_util_buffered" => match &ca {
                Some(ca) => {
                    let c = clients::baseline_tls_client(n, ca);
                    clients::run_baseline_tls(&c, addr, objects, n).await
                }
                None => {
                    let c = clients::baseline_client(n);
                    clients::run_baseline(&c, addr, objects, n).await
                }
            },
            "hyper_util_buffered_verified" => {
                let c = clients::baseline_client(n);
                clients::run_baseline_verified(&c, addr, objects, n).await
            }
            "ranged_ceiling" => {
                let c = clients::baseline_client(n);
                clients::run_ranged_ceiling(&c, addr, objects, n, part).await
            }
            "s3_ordered"
            | "s3_ordered_on_hyper"
            | "s3_ordered_unsigned"
            | "s3_ordered_checksums_off"
            | "s3_ordered_no_hedge"
            | "s3_ordered_unsized"
            | "s3_ordered_unsized_half" => {
                let part = (part > 0).then_some(part);
                let signed = mode != "s3_ordered_unsigned";
                let mut c = clients::s3_ordered_builder(addr, n, max_bytes, signed, part);
                if mode.ends_with("_half") {
                    c = c.stream_threshold(max_bytes / 2);
                }
                if mode == ON_HYPER {
                    c = c.transport(s3_ordered::HttpTransport::Hyper);
                }
                if mode.ends_with("checksums_off") {
                    c = c.checksum_mode(s3_ordered::ChecksumMode::Off);
                }
                if mode.ends_with("no_hedge") {
                    c = c.hedge(s3_ordered::HedgeConfig::off());
                }
                if let Some(ca) = &ca {
                    c = c.endpoint_url(format!("https://{addr}")).ca_bundle_file(ca);
                }
                let c = c.build().expect("client");
                let objects = if mode.contains("unsized") {
                    objects
                        .into_iter()
                        .map(|o| ObjectRef::without_size(o.key))
                        .collect()
                } else {
                    objects
                };
                let got = clients::run_s3_ordered(&c, objects).await;
                let stats = c.stats();
                assert!(stats.bytes_in_use <= max_bytes);
                eprintln!(
                    "{mode}: {} requests for {count} objects, {} hedges sent, {} won",
                    stats.requests, stats.hedges_sent, stats.hedges_won
                );
                // As shipped, every object is verified (an unsized empty object excepted).
                if !mode.ends_with("checksums_off") && (size > 0 || !mode.contains("unsized")) {
                    assert_eq!(stats.checksums_verified, count as u64, "{stats:?}");
                }
                got
            }
            other => panic!("unknown mode {other}"),
        };
        let allocations = ALLOCATIONS.load(Ordering::Relaxed) - allocations;
        (bytes, start.elapsed().as_secs_f64(), allocations)
    };
    // Every client consumes in a task on the runtime, as an application would: the thread that
    // runs `block_on` is not one of the runtime's workers, so each wake-up of a consumer there
    // is a futex call and a context switch, about 3 µs per small object for every client alike.
    let (bytes, secs, allocations) = rt.block_on(rt.spawn(work)).expect("join");
    assert_eq!(bytes, (count * size) as u64);
    let (cpu, rss_kib) = rusage();
    println!("{bytes} {secs} {cpu} {rss_kib} {allocations}");
}

/// User + system CPU seconds and peak RSS (KiB) of this process.
///
/// The peak comes from `VmHWM` in `/proc/self/status`, which belongs to this program's own
/// address space: `ru_maxrss` survives `execve` and would report the parent's resident size at
/// `fork` (the server's payload) for every child.
fn rusage() -> (f64, u64) {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole `rusage` into the pointer it is given, which points to
    // zero-initialised storage of that type; the result is read only after a 0 return.
    let ru = unsafe {
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()), 0);
        ru.assume_init()
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let hwm_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    (secs(ru.ru_utime) + secs(ru.ru_stime), hwm_kib)
}
