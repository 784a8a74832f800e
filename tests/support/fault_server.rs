//! A hostile object server for the fault suite: raw HTTP/1.1 over TCP on 127.0.0.1, so it can do
//! what a well-behaved server library never would — close before the head, cut a body short,
//! stall mid-body, send garbage status lines. It serves `GET /bucket/KEY` (with `Range` and
//! `If-Match`) from an in-memory map and keeps connections alive between clean responses.
//!
//! Ranges follow S3: a range starting inside the object is served (clamped at its end) as `206`,
//! one starting at or past its end — any range of an empty object — is `416` with
//! `Content-Range: bytes */len`.
//!
//! Which fault a request meets is a pure function of (seed, key, first byte asked for, attempt
//! number of that range), so a run is replayable from its seed whatever order the requests — and
//! the parts of one object — arrive in.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A connection the server speaks HTTP on: a TCP socket, or TLS over one.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}

/// What the server does to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    CloseBeforeHead,
    CloseAfterHead,
    CutMidBody,
    InternalError,
    SlowDown,
    StallMidBody,
    SlowFirstByte,
    GarbageStatus,
    EtagChanged,
}

/// Timing of the slow faults.
#[derive(Debug, Clone, Copy)]
pub struct FaultTiming {
    /// How long a stalled body stays silent before the server closes it.
    pub stall: Duration,
    /// Delay before a slow first byte (shorter than the client's stall timeout).
    pub slow_first_byte: Duration,
}

/// A small, fast, seedable mixer (SplitMix64).
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn hash_str(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Which faults a run draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    /// Every kind of fault, 40 % of requests in all.
    Hostile,
    /// What a throttled prefix behind a flaky network does: 5 % 503 SlowDown, 3 % resets after
    /// the head, 3 % bodies cut short, 1 % bodies that stall; and one key in 20 is hot, refused
    /// with SlowDown for [`HOT_FOR`] after its first request, however often it is asked for.
    ThrottleHeavy,
}

/// How long a hot key of [`Mix::ThrottleHeavy`] is refused.
pub const HOT_FOR: Duration = Duration::from_millis(300);

fn is_hot(faults: Mix, seed: u64, key: &str) -> bool {
    faults == Mix::ThrottleHeavy && mix(seed ^ hash_str(key) ^ 0x4807) % 20 == 0
}

/// The fault for attempt `attempt` (0-based) at `key` in the run of `seed`.
pub fn fault_for(mix_of: Mix, seed: u64, key: &str, attempt: u32) -> Fault {
    let r = mix(seed ^ mix(hash_str(key) ^ u64::from(attempt))) % 100;
    match mix_of {
        Mix::Hostile => match r {
            0..=59 => Fault::None,
            60..=64 => Fault::CloseBeforeHead,
            65..=69 => Fault::CloseAfterHead,
            70..=75 => Fault::CutMidBody,
            76..=80 => Fault::InternalError,
            81..=85 => Fault::SlowDown,
            86..=88 => Fault::StallMidBody,
            89..=93 => Fault::SlowFirstByte,
            94..=97 => Fault::GarbageStatus,
            _ => Fault::EtagChanged,
        },
        Mix::ThrottleHeavy => match r {
            0..=4 => Fault::SlowDown,
            5..=7 => Fault::CloseAfterHead,
            8..=10 => Fault::CutMidBody,
            11 => Fault::StallMidBody,
            _ => Fault::None,
        },
    }
}

/// Sockets the server has open now, and the most it ever had.
#[derive(Debug, Default)]
pub struct SocketCounts {
    pub open: AtomicUsize,
    pub max_open: AtomicUsize,
    pub requests: AtomicUsize,
}

struct SocketGuard(Arc<SocketCounts>);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Stored {
    data: Vec<u8>,
    etag: String,
    crc32c: u32,
}

/// The running server.
pub struct FaultServer {
    pub addr: SocketAddr,
    pub counts: Arc<SocketCounts>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shared {
    seed: u64,
    mix: Mix,
    timing: FaultTiming,
    objects: HashMap<String, Stored>,
    attempts: Mutex<HashMap<String, u32>>,
    first_asked: Mutex<HashMap<String, std::time::Instant>>,
    counts: Arc<SocketCounts>,
}

impl FaultServer {
    /// Serves `objects` (key → bytes) in bucket `bucket`, with the faults of `seed` drawn from
    /// `mix`.
    pub async fn start(
        seed: u64,
        faults: Mix,
        timing: FaultTiming,
        objects: Vec<(String, Vec<u8>)>,
    ) -> Self {
        Self::start_with(seed, faults, timing, objects, None).await
    }

    /// As [`start`](Self::start), speaking TLS with `tls` when given: the same faults then cut
    /// TLS records short, reset mid-record and stall inside them.
    pub async fn start_with(
        seed: u64,
        faults: Mix,
        timing: FaultTiming,
        objects: Vec<(String, Vec<u8>)>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Self {
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let counts = Arc::new(SocketCounts::default());
        let shared = Arc::new(Shared {
            seed,
            mix: faults,
            timing,
            objects: objects
                .into_iter()
                .map(|(k, data)| {
                    let etag = format!("\"{:016x}\"", mix(hash_str(&k) ^ data.len() as u64));
                    let crc32c = crc32c::crc32c(&data);
                    (k, Stored { data, etag, crc32c })
                })
                .collect(),
            attempts: Mutex::new(HashMap::new()),
            first_asked: Mutex::new(HashMap::new()),
            counts: Arc::clone(&counts),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let _ = socket.set_nodelay(true);
                let open = shared.counts.open.fetch_add(1, Ordering::SeqCst) + 1;
                shared.counts.max_open.fetch_max(open, Ordering::SeqCst);
                let guard = SocketGuard(Arc::clone(&shared.counts));
                let shared = Arc::clone(&shared);
                let acceptor = acceptor.clone();
                conns.spawn(async move {
                    let _guard = guard;
                    match acceptor {
                        None => serve_connection(socket, &shared).await,
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(socket).await {
                                serve_connection(tls, &shared).await;
                            }
                        }
                    }
                });
                while conns.try_join_next().is_some() {}
            }
        });
        FaultServer { addr, counts, task }
    }
}

async fn serve_connection<S: Stream>(mut socket: S, shared: &Shared) {
    let mut buf = Vec::with_capacity(4096);
    loop {
        let Some(head) = read_head(&mut socket, &mut buf).await else {
            return;
        };
        shared.counts.requests.fetch_add(1, Ordering::SeqCst);
        if !respond(&mut socket, shared, &head).await {
            return;
        }
    }
}

/// Reads one request head (up to the blank line); `None` when the peer closed or misbehaved.
async fn read_head<S: Stream>(socket: &mut S, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            return Some(head);
        }
        if buf.len() > 64 << 10 {
            return None;
        }
        let mut chunk = [0u8; 4096];
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Answers one request; false when the connection must end.
async fn respond<S: Stream>(socket: &mut S, shared: &Shared, head: &str) -> bool {
    let request_line = head.split("\r\n").next().unwrap_or_default();
    let path = request_line.split(' ').nth(1).unwrap_or_default();
    let path = path.split('?').next().unwrap_or_default();
    let key = path.splitn(3, '/').nth(2).unwrap_or_default().to_owned();
    let header = |name: &str| {
        head.split("\r\n").skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    let (range, if_match) = (header("range"), header("if-match"));

    let asked = range.as_deref().and_then(parse_range);
    let attempt_key = format!("{key}@{}", asked.map_or(0, |r| r.0));
    let attempt = {
        let mut a = shared.attempts.lock().expect("attempts");
        let n = a.entry(attempt_key.clone()).or_insert(0);
        *n += 1;
        *n - 1
    };
    let mut fault = fault_for(shared.mix, shared.seed, &attempt_key, attempt);
    if is_hot(shared.mix, shared.seed, &key) {
        let mut first = shared.first_asked.lock().expect("first_asked");
        let since = *first
            .entry(key.clone())
            .or_insert_with(std::time::Instant::now);
        if since.elapsed() < HOT_FOR {
            fault = Fault::SlowDown;
        }
    }
    let Some(obj) = shared.objects.get(&key) else {
        return write_all(socket, &simple(404, "NoSuchKey")).await;
    };

    match fault {
        Fault::CloseBeforeHead => return false,
        Fault::GarbageStatus => {
            let junk: &[u8] = if attempt % 2 == 0 {
                b"HTTP/1.1 2x0 OK\r\ncontent-length: 0\r\n\r\n"
            } else {
                b"\x00\x01garbage that is not HTTP\r\n\r\n"
            };
            let _ = socket.write_all(junk).await;
            return false;
        }
        Fault::InternalError => {
            return write_all(socket, &simple(500, "InternalError")).await;
        }
        Fault::SlowDown => return write_all(socket, &simple(503, "SlowDown")).await,
        Fault::SlowFirstByte => tokio::time::sleep(shared.timing.slow_first_byte).await,
        _ => {}
    }

    if let Some(expected) = &if_match {
        if *expected != obj.etag {
            return write_all(socket, &simple(412, "PreconditionFailed")).await;
        }
    }
    let len = obj.data.len() as u64;
    let (status, first, last) = match asked {
        Some((a, _)) if a >= len => {
            let body = "<Error><Code>InvalidRange</Code></Error>";
            let reply = format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\ncontent-range: bytes */{len}\r\n\
                 content-length: {}\r\n\r\n{body}",
                body.len()
            );
            return write_all(socket, reply.as_bytes()).await;
        }
        Some((a, b)) if a <= b => (206, a, b.min(len - 1)),
        _ => (200, 0, len.saturating_sub(1)),
    };
    let body: &[u8] = if len == 0 {
        &[]
    } else {
        &obj.data[first as usize..=last as usize]
    };
    let etag = if fault == Fault::EtagChanged {
        "\"changed-etag\"".to_owned()
    } else {
        obj.etag.clone()
    };
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\ncontent-length: {}\r\netag: {etag}\r\n",
        if status == 206 {
            "Partial Content"
        } else {
            "OK"
        },
        body.len()
    );
    if status == 206 {
        head.push_str(&format!("content-range: bytes {first}-{last}/{len}\r\n"));
    } else {
        let b64 = base64_4(obj.crc32c.to_be_bytes());
        head.push_str(&format!("x-amz-checksum-crc32c: {b64}\r\n"));
    }
    head.push_str("\r\n");
    if request_line.starts_with("HEAD ") {
        // A HEAD's reply has no body, whatever fault the body would have had.
        return write_all(socket, head.as_bytes()).await;
    }

    match fault {
        Fault::CloseAfterHead => {
            let _ = socket.write_all(head.as_bytes()).await;
            false
        }
        Fault::CutMidBody | Fault::StallMidBody => {
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(&body[..body.len() / 2]).await;
            let _ = socket.flush().await;
            if fault == Fault::StallMidBody {
                // Stay silent, but let go as soon as the client gives up.
                let mut scratch = [0u8; 64];
                let _ = tokio::time::timeout(shared.timing.stall, async {
                    while let Ok(n) = socket.read(&mut scratch).await {
                        if n == 0 {
                            break;
                        }
                    }
                })
                .await;
            }
            false
        }
        _ => {
            let mut out = head.into_bytes();
            out.extend_from_slice(body);
            write_all(socket, &out).await
        }
    }
}

fn parse_range(v: &str) -> Option<(u64, u64)> {
    let (a, b) = v.strip_prefix("bytes=")?.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn simple(status: u16, code: &str) -> Vec<u8> {
    let body = format!("<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>injected</Message><RequestId>F4U17</RequestId></Error>");
    format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/xml\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn write_all<S: Stream>(socket: &mut S, bytes: &[u8]) -> bool {
    socket.write_all(bytes).await.is_ok()
}

fn base64_4(bytes: [u8; 4]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
