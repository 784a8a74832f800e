//! Differential: the same response bytes, split into arbitrary reads, go to this crate's
//! HTTP/1.1 exchange and to hyper's `client::conn::http1` (both behind the crate's connection
//! type, over an in-memory stream), and both must read them alike: the head accepted or
//! refused, the status, the body bytes, a clean end or an error, and whether the connection
//! could carry another request.
//!
//! The differences kept on purpose are listed in [`KEPT`], each with its reason; any other
//! difference is a crash.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use s3_ordered::__internals::{read_response, End, Read};

/// The differences between the two readers that are kept, by name, with the reason.
const KEPT: &[(&str, &str)] = &[
    (
        "bytes before an error",
        "when a body turns out malformed or cut short, each side may have handed out a different \
         number of its bytes before it noticed (hyper decodes into frames ahead of the reader, \
         this crate reads straight into the caller's buffer); only the bytes delivered before \
         the error differ, one a prefix of the other, and both refuse the body",
    ),
    (
        "a malformed head refused before its end",
        "after a partial read hyper parses the head again only once an end of head (an empty \
         line) has arrived, so a head that is already invalid waits for more bytes; this crate \
         parses whatever has arrived and refuses at once. hyper refuses too when the stream \
         ends or its buffer fills; only a server that stays open and silent tells them apart",
    ),
];

/// Field names the shaped inputs draw from: those that decide framing and reuse.
const NAMES: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "etag",
    "content-range",
    "upgrade",
    "Content-Length",
    "Transfer-Encoding",
    "x-amz-meta-a",
];

#[derive(Debug, Arbitrary)]
enum Bytes<'a> {
    /// Arbitrary bytes as the whole reply.
    Raw(&'a [u8]),
    /// A status line and fields (names from [`NAMES`], arbitrary values), then arbitrary bytes.
    Shaped {
        version: bool,
        status: u16,
        interim: Option<u16>,
        fields: Vec<(u8, &'a [u8])>,
        rest: &'a [u8],
    },
}

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    bytes: Bytes<'a>,
    /// Sizes of the pieces the server's bytes arrive in.
    splits: Vec<u8>,
    /// Sizes of the buffers the body is read into.
    reads: Vec<u8>,
    /// The server closes after its bytes (else it stays open and quiet).
    eof: bool,
    method_head: bool,
}

fn reply(bytes: &Bytes<'_>) -> Vec<u8> {
    match bytes {
        Bytes::Raw(b) => b.to_vec(),
        Bytes::Shaped {
            version,
            status,
            interim,
            fields,
            rest,
        } => {
            let mut out = Vec::new();
            if let Some(code) = interim {
                out.extend(format!("HTTP/1.1 {} Continue\r\n\r\n", 100 + code % 100).bytes());
            }
            let minor = if *version { 1 } else { 0 };
            out.extend(format!("HTTP/1.{minor} {} X\r\n", 100 + status % 500).bytes());
            for (name, value) in fields.iter().take(12) {
                out.extend(NAMES[usize::from(*name) % NAMES.len()].bytes());
                out.extend(b": ");
                out.extend_from_slice(value);
                out.extend(b"\r\n");
            }
            out.extend(b"\r\n");
            out.extend_from_slice(rest);
            out
        }
    }
}

fn pieces(bytes: &[u8], splits: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut sizes = splits.iter().map(|&s| usize::from(s).max(1)).cycle();
    while at < bytes.len() {
        let n = if splits.is_empty() {
            bytes.len()
        } else {
            sizes.next().unwrap_or(1)
        };
        let end = (at + n).min(bytes.len());
        out.push(bytes[at..end].to_vec());
        at = end;
    }
    out
}

fn is_prefix(a: &[u8], b: &[u8]) -> bool {
    a.len() <= b.len() && b[..a.len()] == *a || b.len() <= a.len() && a[..b.len()] == *b
}

fuzz_target!(|input: Input<'_>| {
    let bytes = reply(&input.bytes);
    let split = pieces(&bytes, &input.splits);
    let reads: Vec<usize> = if input.reads.is_empty() {
        vec![4096]
    } else {
        input.reads.iter().map(|&r| usize::from(r).max(1)).collect()
    };
    let native = read_response(false, split.clone(), input.eof, input.method_head, &reads);
    let hyper = read_response(true, split, input.eof, input.method_head, &reads);
    if native == hyper {
        return;
    }
    // Refusals agree whatever their reasons' words.
    if matches!((&native, &hyper), (Read::Refused(_), Read::Refused(_))) {
        return;
    }
    // KEPT[1].
    if matches!((&native, &hyper), (Read::Refused(_), Read::Stuck)) && !input.eof {
        let _ = KEPT[1];
        return;
    }
    if let (
        Read::Accepted {
            status: s1,
            body: b1,
            end: e1,
            ..
        },
        Read::Accepted {
            status: s2,
            body: b2,
            end: e2,
            ..
        },
    ) = (&native, &hyper)
    {
        // KEPT[0]: both refuse the body; only how much of it came out first differs.
        if s1 == s2 && *e1 != End::Clean && e1 == e2 && is_prefix(b1, b2) {
            let _ = KEPT[0];
            return;
        }
    }
    panic!(
        "the readers disagree on {:?}\n native: {native:?}\n hyper:  {hyper:?}",
        String::from_utf8_lossy(&bytes)
    );
});
