//! [`Head`]: one parsed HTTP/1.1 response head, kept in buffers the connection reuses, and the
//! body [`Framing`] it announces (RFC 9112 §6.3).
//!
//! The head's bytes are copied once out of the read buffer, and each field is kept as a pair of
//! ranges into that copy, so parsing a response allocates nothing once the connection is warm.
//! Names are compared case-insensitively, as HTTP requires.

use std::mem::MaybeUninit;
use std::ops::Range;

use http::StatusCode;

use crate::error::{Error, ErrorKind};

/// The most header fields a response head may carry (hyper's default too).
const MAX_FIELDS: usize = 100;

/// The fields this client reads from every response, indexed while parsing so that looking one
/// up costs no scan.
const KNOWN: [&str; 8] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "content-range",
    "etag",
    "x-amz-version-id",
    "x-amz-checksum-crc32c",
    "x-amz-checksum-crc32",
];

/// No such field in [`Head::known`].
const ABSENT: u8 = u8::MAX;

/// How the body of a response ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body: a reply to HEAD, a 1xx, 204 or 304.
    Empty,
    /// Exactly this many bytes (`Content-Length`).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the server closes the connection.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug)]
pub(crate) struct Head {
    status: StatusCode,
    /// HTTP/1.x minor version.
    minor: u8,
    raw: Vec<u8>,
    fields: Vec<(Range<usize>, Range<usize>)>,
    /// For each of [`KNOWN`], the index of its first field, or [`ABSENT`].
    known: [u8; KNOWN.len()],
    /// Bit `i` set: field [`KNOWN`]`[i]` appears more than once.
    repeated: u8,
}

/// What parsing the bytes at hand gave.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// A whole head of this many bytes, now in the [`Head`].
    Complete(usize),
    /// The head goes on past the bytes given.
    Partial,
}

impl Default for Head {
    fn default() -> Self {
        Head {
            status: StatusCode::OK,
            minor: 1,
            raw: Vec::new(),
            fields: Vec::new(),
            known: [ABSENT; KNOWN.len()],
            repeated: 0,
        }
    }
}

impl Head {
    /// Parses a response head at the start of `bytes`, replacing this one when it is complete.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Connection`] when the bytes are not an HTTP/1.x response head.
    pub(crate) fn parse(&mut self, bytes: &[u8]) -> Result<Parsed, Error> {
        let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
        let mut resp = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut resp,
            bytes,
            &mut fields,
        ) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
            Err(e) => return Err(invalid(format!("invalid response head ({e})"))),
        };
        let code = resp.code.unwrap_or_default();
        self.status = StatusCode::from_u16(code)
            .map_err(|_| invalid(format!("invalid status code {code}")))?;
        self.minor = resp.version.unwrap_or(1);
        // Keep each field as ranges into a copy of the head.
        let base = bytes.as_ptr() as usize;
        let at = |s: &[u8]| {
            let start = s.as_ptr() as usize - base;
            start..start + s.len()
        };
        self.fields.clear();
        self.known = [ABSENT; KNOWN.len()];
        self.repeated = 0;
        for (i, f) in resp.headers.iter().enumerate() {
            if let Some(k) = known_index(f.name.as_bytes()) {
                if self.known[k] == ABSENT {
                    // At most MAX_FIELDS (100) fields: the index fits.
                    self.known[k] = i as u8;
                } else {
                    self.repeated |= 1 << k;
                }
            }
            self.fields.push((at(f.name.as_bytes()), at(f.value)));
        }
        self.raw.clear();
        self.raw.extend_from_slice(&bytes[..len]);
        Ok(Parsed::Complete(len))
    }

    /// The status code.
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// The first value of the field `name` (lower case), without surrounding blanks.
    #[inline]
    pub(crate) fn get(&self, name: &str) -> Option<&[u8]> {
        if let Some(k) = KNOWN.iter().position(|n| *n == name) {
            return self.value(self.known[k]);
        }
        self.fields()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// Every value of the field `name` (lower case), in order.
    pub(crate) fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        // A known field seen at most once needs no scan.
        let known = KNOWN.iter().position(|n| *n == name);
        let single = known.filter(|&k| self.repeated & (1 << k) == 0);
        let first = single.and_then(|k| self.value(self.known[k]));
        let scan = if single.is_some() {
            &self.fields[..0]
        } else {
            &self.fields[..]
        };
        first.into_iter().chain(
            scan.iter()
                .filter(move |(n, _)| self.raw[n.clone()].eq_ignore_ascii_case(name.as_bytes()))
                .map(|(_, v)| self.raw[v.clone()].trim_ascii()),
        )
    }

    /// The value of field number `i`, trimmed; `None` for [`ABSENT`].
    fn value(&self, i: u8) -> Option<&[u8]> {
        let (_, v) = self.fields.get(usize::from(i))?;
        Some(self.raw[v.clone()].trim_ascii())
    }

    /// Every field as (name, value), in order.
    pub(crate) fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.fields
            .iter()
            .map(|(n, v)| (&self.raw[n.clone()], self.raw[v.clone()].trim_ascii()))
    }

    /// The fields as an `http` header map, for callers that keep them (listings, HEAD);
    /// fields that `http` refuses are left out.
    pub(crate) fn to_header_map(&self) -> http::HeaderMap {
        let mut map = http::HeaderMap::with_capacity(self.fields.len());
        for (name, value) in self.fields() {
            if let (Ok(n), Ok(v)) = (
                http::HeaderName::from_bytes(name),
                http::HeaderValue::from_bytes(value),
            ) {
                map.append(n, v);
            }
        }
        map
    }

    /// Whether the server lets the connection carry another request after this response.
    pub(crate) fn keep_alive(&self) -> bool {
        let mut close = false;
        let mut keep = false;
        for value in self.all("connection") {
            for token in value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
        !close && (self.minor >= 1 || keep)
    }

    /// How this response's body ends, for a request with `method_head` telling if it was HEAD.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Connection`] for a `Content-Length` that is not a number, several that
    /// disagree, or `Transfer-Encoding` in an HTTP/1.0 response: the body's end cannot be
    /// known.
    pub(crate) fn framing(&self, method_head: bool) -> Result<Framing, Error> {
        let code = self.status.as_u16();
        if method_head || (100..200).contains(&code) || code == 204 || code == 304 {
            return Ok(Framing::Empty);
        }
        // Transfer-Encoding wins over Content-Length; only a final `chunked` has an end.
        let mut coding = None;
        for value in self.all("transfer-encoding") {
            for c in value.split(|&b| b == b',') {
                coding = Some(c.trim_ascii());
            }
        }
        if let Some(last) = coding {
            // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing;
            // refused, as hyper refuses it.
            if self.minor == 0 {
                return Err(invalid(
                    "an HTTP/1.0 response with Transfer-Encoding cannot be framed".to_owned(),
                ));
            }
            return Ok(if last.eq_ignore_ascii_case(b"chunked") {
                Framing::Chunked
            } else {
                Framing::UntilClose
            });
        }
        let mut length = None;
        for value in self.all("content-length") {
            let n = parse_length(value).ok_or_else(|| {
                invalid(format!(
                    "invalid Content-Length {:?}",
                    String::from_utf8_lossy(value)
                ))
            })?;
            if length.is_some_and(|l| l != n) {
                return Err(invalid("Content-Length values disagree".to_owned()));
            }
            length = Some(n);
        }
        Ok(length.map_or(Framing::UntilClose, Framing::Length))
    }
}

/// The index in [`KNOWN`] of a field name, whatever its case.
fn known_index(name: &[u8]) -> Option<usize> {
    KNOWN
        .iter()
        .position(|k| k.len() == name.len() && k.as_bytes().eq_ignore_ascii_case(name))
}

/// Whether `v` may be sent as a field value: visible ASCII, spaces and tabs (what `http`'s
/// `HeaderValue` accepts, less obs-text). A fold without an early exit, so that it runs as
/// vector code.
pub(crate) fn is_field_value(v: &[u8]) -> bool {
    v.iter().fold(true, |ok, &b| {
        ok & ((b.wrapping_sub(b' ') < 0x5f) | (b == b'\t'))
    })
}

/// A `Content-Length` value: a decimal number, or a list of equal ones (`5, 5`, which RFC 9110
/// §8.6 lets a recipient read as one; hyper does), with blanks (SP, HTAB) around each.
pub(crate) fn parse_length(value: &[u8]) -> Option<u64> {
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let mut length = None;
    for v in value.split(|&b| b == b',') {
        let start = v.iter().position(|b| !blank(b)).unwrap_or(v.len());
        let end = v.iter().rposition(|b| !blank(b)).map_or(start, |i| i + 1);
        let n = parse_decimal(&v[start..end])?;
        if length.is_some_and(|l| l != n) {
            return None;
        }
        length = Some(n);
    }
    length
}

/// A decimal number of ASCII digits only (no sign, no blanks), as `Content-Length` must be;
/// leading zeros may make it as long as it likes, but its value must fit a `u64`.
pub(crate) fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |n, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

fn invalid(why: String) -> Error {
    Error::new(ErrorKind::Connection).with_message(why)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        let mut h = Head::default();
        assert_eq!(
            h.parse(text.as_bytes()).unwrap(),
            Parsed::Complete(text.len())
        );
        h
    }

    #[test]
    fn fields_are_found_whatever_their_case() {
        let h = head("HTTP/1.1 206 Partial Content\r\nETag: \"abc\"\r\ncontent-range:  bytes 0-9/20 \r\nX-Amz-Meta: a\r\nx-amz-meta: b\r\n\r\n");
        assert_eq!(h.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(h.get("etag"), Some(&b"\"abc\""[..]));
        assert_eq!(h.get("content-range"), Some(&b"bytes 0-9/20"[..]));
        assert_eq!(h.all("x-amz-meta").collect::<Vec<_>>(), [b"a", b"b"]);
        assert_eq!(h.all("etag").collect::<Vec<_>>(), [b"\"abc\""]);
        let twice =
            head("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nx: y\r\nCONNECTION: close\r\n\r\n");
        assert_eq!(twice.get("connection"), Some(&b"keep-alive"[..]));
        assert_eq!(
            twice.all("connection").collect::<Vec<_>>(),
            [&b"keep-alive"[..], b"close"]
        );
        assert_eq!(twice.all("content-length").count(), 0);
        assert_eq!(h.get("missing"), None);
        let map = h.to_header_map();
        assert_eq!(map.get_all("x-amz-meta").iter().count(), 2);
        assert_eq!(map["etag"], "\"abc\"");
    }

    #[test]
    fn partial_and_invalid_heads() {
        let mut h = Head::default();
        assert_eq!(
            h.parse(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap(),
            Parsed::Partial
        );
        assert_eq!(h.parse(b"").unwrap(), Parsed::Partial);
        for bad in [
            &b"HTTP/1.1 2x0 OK\r\n\r\n"[..],
            b"HTTP/2 200 OK\r\n\r\n",
            b"garbage\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
        ] {
            let e = h.parse(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Connection, "{bad:?}");
        }
        // A head that is too long to count its fields.
        let many: String = (0..=MAX_FIELDS).map(|i| format!("x-{i}: v\r\n")).collect();
        let text = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
        assert!(h.parse(text.as_bytes()).is_err());
        // The head before is kept until a complete one replaces it.
        let good = head("HTTP/1.1 404 Not Found\r\n\r\n");
        assert_eq!(good.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let f =
            |text: &str, method_head: bool| head(text).framing(method_head).map_err(|e| e.kind());
        assert_eq!(
            f("HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n", false),
            Ok(Framing::Length(12))
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n", true),
            Ok(Framing::Empty)
        );
        assert_eq!(
            f(
                "HTTP/1.1 204 No Content\r\ncontent-length: 12\r\n\r\n",
                false
            ),
            Ok(Framing::Empty)
        );
        assert_eq!(
            f("HTTP/1.1 304 Not Modified\r\n\r\n", false),
            Ok(Framing::Empty)
        );
        assert_eq!(
            f("HTTP/1.1 100 Continue\r\n\r\n", false),
            Ok(Framing::Empty)
        );
        assert_eq!(f("HTTP/1.1 200 OK\r\n\r\n", false), Ok(Framing::UntilClose));
        assert_eq!(
            f(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, Chunked\r\ncontent-length: 5\r\n\r\n",
                false
            ),
            Ok(Framing::Chunked)
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n", false),
            Ok(Framing::UntilClose)
        );
        // A trailing comma leaves an empty last coding: not chunked, so the body ends with
        // the connection (hyper reads it so too).
        assert_eq!(
            f(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked,\r\n\r\n",
                false
            ),
            Ok(Framing::UntilClose)
        );
        assert_eq!(
            f(
                "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                false
            ),
            Err(ErrorKind::Connection)
        );
        assert_eq!(
            f(
                "HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\ncontent-length: 5\r\n\r\n",
                false
            ),
            Ok(Framing::Length(5))
        );
        for bad in [
            "5, 6",
            "+5",
            "-1",
            "",
            "5 5",
            "99999999999999999999",
            "0x10",
        ] {
            let text = format!("HTTP/1.1 200 OK\r\ncontent-length: {bad}\r\n\r\n");
            assert_eq!(f(&text, false), Err(ErrorKind::Connection), "{bad:?}");
        }
    }

    #[test]
    fn keep_alive_by_version_and_connection_field() {
        assert!(head("HTTP/1.1 200 OK\r\n\r\n").keep_alive());
        assert!(!head("HTTP/1.1 200 OK\r\nConnection: Close\r\n\r\n").keep_alive());
        assert!(!head("HTTP/1.1 200 OK\r\nconnection: keep-alive, close\r\n\r\n").keep_alive());
        assert!(!head("HTTP/1.0 200 OK\r\n\r\n").keep_alive());
        assert!(head("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n").keep_alive());
    }

    #[test]
    fn field_values() {
        assert!(is_field_value(b"\"abc-1\" \t~"));
        assert!(is_field_value(b""));
        for bad in [&b"a\x7f"[..], b"a\r\nb", b"caf\xc3\xa9", b"\x00"] {
            assert!(!is_field_value(bad), "{bad:?}");
        }
    }

    #[test]
    fn decimal_lengths() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_decimal(b"18446744073709551616"), None);
        assert_eq!(parse_decimal(&[b'0'; 40]), Some(0));
        assert_eq!(parse_decimal(b"0000000000000000000000012"), Some(12));
        assert_eq!(
            parse_decimal(b"9999999999999999999"),
            Some(9_999_999_999_999_999_999)
        );
        assert_eq!(parse_decimal(b"1a"), None);
        assert_eq!(parse_length(b"5, 5,5"), Some(5));
        assert_eq!(parse_length(b"5, 6"), None);
        assert_eq!(parse_length(b"5,"), None);
        // Blanks are SP and HTAB only; a CR or LF cannot be part of a field value.
        assert_eq!(parse_length(b" 5\t,\t5 "), Some(5));
        assert_eq!(parse_length(b"\r\n5"), None);
        assert_eq!(parse_length(b"5\n"), None);
    }
}
