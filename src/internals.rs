//! Hooks for this crate's own benchmarks and fuzz targets (`s3_ordered::__internals`): thin
//! entries into private parsers and checks. Not part of the API and exempt from semver.

pub use crate::memory::bench::PoolBench;
pub use crate::sign::bench::SignBench;

/// `(code, message, request_id)` of an S3 XML error body.
pub fn parse_error_body(body: &[u8]) -> [Option<String>; 3] {
    let b = crate::s3::parse_error_body(body);
    [b.code, b.message, b.request_id]
}

/// The objects and continuation token of a ListObjectsV2 page.
pub fn parse_list_page(
    body: &[u8],
) -> Result<(Vec<crate::ObjectRef>, Option<String>), crate::Error> {
    crate::s3::parse_list_page(body).map(|p| (p.objects, p.next_token))
}

/// The session keys of a `CreateSession` reply (an S3 Express directory bucket's).
pub fn parse_create_session(body: &[u8]) -> Result<crate::Credentials, crate::Error> {
    crate::express::parse_create_session(body)
}

/// A whole chunked body in `bytes`, fed `split` bytes at a time: its data and the bytes it
/// took, `None` if it does not end within `bytes`.
pub fn decode_chunked(
    bytes: &[u8],
    split: usize,
) -> Result<Option<(Vec<u8>, usize)>, crate::Error> {
    crate::http1::decode_chunked(bytes, split)
}

/// The response head at the start of `bytes`: `(length, status, framing, keep-alive)` with
/// the framing as text (`"empty"`, `"length N"`, `"chunked"`, `"until close"`), `None` when
/// the head goes on past `bytes`.
pub fn parse_response_head(
    bytes: &[u8],
) -> Result<Option<(usize, u16, String, bool)>, crate::Error> {
    let mut head = crate::http1::Head::default();
    let crate::http1::Parsed::Complete(len) = head.parse(bytes)? else {
        return Ok(None);
    };
    let framing = match head.framing(false)? {
        crate::http1::Framing::Empty => "empty".to_owned(),
        crate::http1::Framing::Length(n) => format!("length {n}"),
        crate::http1::Framing::Chunked => "chunked".to_owned(),
        crate::http1::Framing::UntilClose => "until close".to_owned(),
    };
    Ok(Some((
        len,
        head.status().as_u16(),
        framing,
        head.keep_alive(),
    )))
}

/// How one side of the differential fuzz target read a response.
#[cfg(fuzzing)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// The head was accepted with this status; then the body ended so.
    Accepted {
        /// The final status.
        status: u16,
        /// The body bytes delivered.
        body: Vec<u8>,
        /// How the body ended.
        end: End,
        /// Whether the connection would carry another request (after a clean end).
        reusable: bool,
    },
    /// The head was refused, for this reason.
    Refused(String),
    /// The head never completed: more bytes were awaited from a peer that sent no more.
    Stuck,
}

/// How a body ended in [`Read::Accepted`].
#[cfg(fuzzing)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Its framing said so.
    Clean,
    /// Refused, or the stream ended first.
    Error,
    /// More bytes were awaited from a peer that sent no more.
    Stuck,
}

/// Reads the response a GET (or HEAD) gets when the server sends `pieces` (one per read,
/// then the end of the stream if `eof`, else silence), on the native exchange or on
/// hyper's, with body reads into buffers of the sizes `reads` cycles through.
#[cfg(all(fuzzing, feature = "hyper"))]
pub fn read_response(
    hyper: bool,
    pieces: Vec<Vec<u8>>,
    eof: bool,
    method_head: bool,
    reads: &[usize],
) -> Read {
    use crate::http1::{memory::MemoryStream, Connection, Http, HyperConnection, HyperStream};
    let stream = MemoryStream::new(pieces, eof);
    let mut conn = if hyper {
        let io = HyperStream::memory(stream);
        match now(HyperConnection::handshake(io)) {
            Some(Ok(c)) => Http::Hyper(Box::new(c)),
            Some(Err(e)) => return Read::Refused(e.with_causes()),
            None => return Read::Stuck,
        }
    } else {
        Http::Native(Connection::new(crate::http1::Transport::Memory(stream)))
    };
    let (out, _, _) = conn.compose();
    let method = if method_head { "HEAD" } else { "GET" };
    crate::http1::push_request_line(out, method, |o| o.extend_from_slice(b"/b/k"));
    crate::http1::push_field(out, "host", b"h");
    crate::http1::end_head(out);
    let sent = now(async {
        conn.send(method_head).await?;
        conn.read_head().await
    });
    match sent {
        None => return Read::Stuck,
        Some(Err(e)) => return Read::Refused(e.with_causes()),
        Some(Ok(())) => {}
    }
    let status = conn.head().status().as_u16();
    let mut body = Vec::new();
    let mut end = End::Stuck;
    for &size in reads.iter().cycle().take(1 << 16) {
        let mut dst = vec![0u8; size.max(1)];
        match now(conn.read_body(&mut dst)) {
            None => break,
            Some(Err(_)) => {
                end = End::Error;
                break;
            }
            Some(Ok(0)) => {
                end = End::Clean;
                break;
            }
            Some(Ok(n)) => body.extend_from_slice(&dst[..n]),
        }
    }
    let reusable = end == End::Clean && conn.idle_alive();
    Read::Accepted {
        status,
        body,
        end,
        reusable,
    }
}

/// `fut`'s output if it completes without waiting on anything outside: polled with a
/// waker that does nothing, a bounded number of times (a future may wake itself to yield).
#[cfg(fuzzing)]
fn now<F: std::future::Future>(fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    (0..64).find_map(|_| match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(out) => Some(out),
        std::task::Poll::Pending => None,
    })
}

/// `(first, last, total)` of a `Content-Range` value.
pub fn parse_content_range(value: &str) -> Option<(u64, u64, u64)> {
    crate::s3::parse_content_range(value)
}

/// `(body length, whole object from byte 0, object size)` a success reply must carry for
/// a GET of bytes `from..end` of the part starting at `part_start`; see `fetch::check_reply`.
#[allow(clippy::too_many_arguments)] // mirrors the checked request field by field
pub fn check_reply(
    status: u16,
    content_length: Option<&[u8]>,
    content_range: Option<&[u8]>,
    part_start: u64,
    from: u64,
    end: u64,
    ranged: bool,
    size: Option<u64>,
) -> Result<(u64, bool, u64), crate::Error> {
    let status = http::StatusCode::from_u16(status)
        .map_err(|e| crate::Error::invalid_input(e.to_string()))?;
    let asked = crate::fetch::Asked {
        part_start,
        from,
        end,
        ranged,
        size,
    };
    crate::fetch::check_reply(status, content_length, content_range, asked)
        .map(|s| (s.len, s.restart, s.total))
}
