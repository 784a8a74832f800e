//! [`Chunked`]: the decoder of `Transfer-Encoding: chunked` bodies, as a pure state machine over
//! the bytes at hand — no I/O, so the connection decides where data bytes go (straight into the
//! caller's buffer when a chunk is larger than what is buffered) and the fuzzer can drive it.
//!
//! Chunk-size lines and trailer lines are bounded ([`MAX_LINE`], [`MAX_TRAILERS`]); extensions
//! and trailer fields are skipped.

use crate::error::{Error, ErrorKind};

/// The longest chunk-size line (with extensions) or trailer line accepted.
pub(crate) const MAX_LINE: usize = 4096;

/// The most trailer bytes accepted after the last chunk.
pub(crate) const MAX_TRAILERS: usize = 16 << 10;

/// Where the decoder is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunked {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data: this many bytes are left.
    Data(u64),
    /// After a chunk's data: expecting its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines, then an empty line; the bytes read so far.
    Trailers(usize),
    /// The body has ended.
    Done,
}

/// What [`Chunked::step`] made of the bytes at hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Consumed this many framing bytes; call again.
    Framing(usize),
    /// The next bytes are data: at most this many of them (until the chunk's end).
    Data(u64),
    /// A line is not complete in the bytes at hand: read more.
    NeedMore,
    /// The body has ended.
    Done,
}

impl Chunked {
    /// Interprets the framing at the start of `bytes` (the bytes buffered and not yet consumed).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Connection`] for a malformed chunk-size line, a missing CRLF after a chunk,
    /// or a line or trailer section over its bound.
    pub(crate) fn step(&mut self, bytes: &[u8]) -> Result<Step, Error> {
        match *self {
            Chunked::Done => Ok(Step::Done),
            Chunked::Data(left) => Ok(Step::Data(left)),
            Chunked::Size => match size_line(bytes)? {
                Some((used, _)) if used > MAX_LINE => Err(invalid("chunk-size line too long")),
                Some((used, 0)) => {
                    *self = Chunked::Trailers(0);
                    Ok(Step::Framing(used))
                }
                Some((used, size)) => {
                    *self = Chunked::Data(size);
                    Ok(Step::Framing(used))
                }
                None if bytes.len() < MAX_LINE => Ok(Step::NeedMore),
                None => Err(invalid("chunk-size line too long")),
            },
            Chunked::DataEnd => match bytes {
                [b'\r', b'\n', ..] => {
                    *self = Chunked::Size;
                    Ok(Step::Framing(2))
                }
                [] | [b'\r'] => Ok(Step::NeedMore),
                _ => Err(invalid("chunk data not followed by CRLF")),
            },
            Chunked::Trailers(seen) => {
                // A line ends at its first CR, which LF must follow (hyper's reading).
                let Some(cr) = bytes.iter().position(|&b| b == b'\r') else {
                    return more_trailers(bytes.len(), seen);
                };
                match bytes.get(cr + 1) {
                    None => return more_trailers(bytes.len(), seen),
                    Some(b'\n') => {}
                    Some(_) => return Err(invalid("trailer line not ended by CRLF")),
                }
                let used = cr + 2;
                if used > MAX_LINE || seen + used > MAX_TRAILERS {
                    return Err(invalid("trailer section too long"));
                }
                // An empty line ends the body; any other line is a trailer field, checked as
                // a field and skipped.
                *self = if cr == 0 {
                    Chunked::Done
                } else {
                    trailer_field(&bytes[..used])?;
                    Chunked::Trailers(seen + used)
                };
                Ok(Step::Framing(used))
            }
        }
    }

    /// Records that `n` data bytes (at most what [`Step::Data`] allowed) were taken.
    pub(crate) fn took(&mut self, n: u64) {
        if let Chunked::Data(left) = self {
            debug_assert!(n <= *left);
            *left -= n;
            if *left == 0 {
                *self = Chunked::DataEnd;
            }
        }
    }
}

/// Read more of a trailer line, if the bounds allow.
fn more_trailers(have: usize, seen: usize) -> Result<Step, Error> {
    if have < MAX_LINE && seen + have < MAX_TRAILERS {
        Ok(Step::NeedMore)
    } else {
        Err(invalid("trailer section too long"))
    }
}

/// Checks one trailer line (CRLF included) as header fields, as hyper does before it hands
/// trailers out: a malformed one is refused, not skipped.
fn trailer_field(line: &[u8]) -> Result<(), Error> {
    let mut block = Vec::with_capacity(line.len() + 2);
    block.extend_from_slice(line);
    block.extend_from_slice(b"\r\n");
    let mut fields = [httparse::EMPTY_HEADER; 8];
    match httparse::parse_headers(&block, &mut fields) {
        Ok(httparse::Status::Complete((used, parsed)))
            if used == block.len()
                && parsed
                    .iter()
                    .all(|f| http::HeaderValue::from_bytes(f.value).is_ok()) =>
        {
            Ok(())
        }
        _ => Err(invalid("malformed trailer field")),
    }
}

/// A chunk-size line at the start of `bytes`: its length (CRLF included) and the size, or
/// `None` when the line goes on past `bytes`. The grammar is RFC 9112 §7.1 as hyper reads it:
/// at least one hex digit (a size over `u64` is refused), then optional blanks, then an optional
/// extension (`;` and anything but CR or LF), then CRLF. An empty size (`\r\n` alone) is not
/// the last chunk but an error, and so is a bare LF anywhere in the line: a peer that ends lines
/// differently could see a different body in the same bytes.
fn size_line(bytes: &[u8]) -> Result<Option<(usize, u64)>, Error> {
    #[derive(Clone, Copy, PartialEq)]
    enum At {
        Digits,
        Blanks,
        Extension,
        Lf,
    }
    let mut size: u64 = 0;
    let mut at = At::Digits;
    for (i, &b) in bytes.iter().enumerate() {
        at = match (at, b) {
            (At::Digits, _) if b.is_ascii_hexdigit() => {
                let digit = u64::from((b as char).to_digit(16).unwrap_or(0));
                size = size
                    .checked_mul(16)
                    .and_then(|s| s.checked_add(digit))
                    .ok_or_else(|| invalid("chunk size over 2^64"))?;
                At::Digits
            }
            (At::Digits, _) if i == 0 => return Err(invalid("chunk-size line without a size")),
            (At::Digits | At::Blanks, b' ' | b'\t') => At::Blanks,
            (At::Digits | At::Blanks | At::Extension, b';') => At::Extension,
            (At::Digits | At::Blanks | At::Extension, b'\r') => At::Lf,
            (At::Extension, b'\n') => return Err(invalid("bare LF in a chunk extension")),
            (At::Extension, _) => At::Extension,
            (At::Lf, b'\n') => return Ok(Some((i + 1, size))),
            _ => return Err(invalid("invalid chunk-size line")),
        };
    }
    Ok(None)
}

fn invalid(why: &str) -> Error {
    Error::new(ErrorKind::Connection).with_message(format!("invalid chunked body: {why}"))
}

/// Decodes a whole chunked body held in `bytes`, fed `split` bytes at a time: the data, and
/// how many bytes the body took, or `None` when it does not end within `bytes`. The reference
/// that the connection's incremental use is checked against (tests and fuzzing).
pub(crate) fn decode_all(bytes: &[u8], split: usize) -> Result<Option<(Vec<u8>, usize)>, Error> {
    let split = split.max(1);
    let mut state = Chunked::Size;
    let mut out = Vec::new();
    let (mut pos, mut avail) = (0, split.min(bytes.len()));
    loop {
        match state.step(&bytes[pos..avail])? {
            Step::Done => return Ok(Some((out, pos))),
            Step::Framing(n) => pos += n,
            Step::Data(left) => {
                let n = (avail - pos).min(usize::try_from(left).unwrap_or(usize::MAX));
                if n == 0 {
                    if avail == bytes.len() {
                        return Ok(None);
                    }
                    avail = (avail + split).min(bytes.len());
                    continue;
                }
                out.extend_from_slice(&bytes[pos..pos + n]);
                state.took(n as u64);
                pos += n;
            }
            Step::NeedMore => {
                if avail == bytes.len() {
                    return Ok(None);
                }
                avail = (avail + split).min(bytes.len());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_whatever_the_split() {
        let body =
            b"5\r\nhello\r\n1 \t;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\nx-trailer: t\r\n\r\nNEXT";
        for split in 1..body.len() {
            let (data, used) = decode_all(body, split).unwrap().unwrap();
            assert_eq!(data, b"hello 0123456789", "split {split}");
            assert_eq!(&body[used..], b"NEXT", "split {split}");
        }
    }

    #[test]
    fn unfinished_bodies_need_more() {
        for cut in [
            &b"5\r\nhel"[..],
            b"5\r\nhello\r",
            b"0\r\n",
            b"0\r\nx: y\r\n",
            b"1f",
        ] {
            assert_eq!(decode_all(cut, 3).unwrap(), None, "{cut:?}");
        }
    }

    #[test]
    fn malformed_framing_is_a_connection_error() {
        let long_line = format!("5;{}\r\nhello\r\n0\r\n\r\n", "x".repeat(MAX_LINE));
        let long_trailer = format!("0\r\nx: {}\r\n\r\n", "y".repeat(MAX_LINE));
        let long_trailers = format!("0\r\n{}\r\n", "x: y\r\n".repeat(MAX_TRAILERS / 6 + 1));
        for bad in [
            &b"g\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"-1\r\n",
            b"ffffffffffffffffff\r\n",
            b"10000000000000000\r\n",
            // An empty size is no last chunk, and lines end in CRLF only.
            b"\r\n\r\n",
            b";ext\r\n\r\n",
            b"5;a\nb\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\rhello\r\n0\r\n\r\n",
            b"5 5\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            long_line.as_bytes(),
            long_trailer.as_bytes(),
            long_trailers.as_bytes(),
            b"0\r\nx: y\rz\r\n\r\n",
            b"0\r\nnot a field\r\n\r\n",
            b"0\r\nx: \x01\r\n\r\n",
        ] {
            for split in [7, bad.len()] {
                let e = decode_all(bad, split).unwrap_err();
                assert_eq!(e.kind(), ErrorKind::Connection, "{bad:?}");
            }
        }
    }
}
