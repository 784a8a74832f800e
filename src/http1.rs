//! [`Connection`]: this client's side of HTTP/1.1 — one request at a time on a TCP or TLS
//! stream, the response head parsed in a reused buffer, and the body read **straight into the
//! caller's buffer**.
//!
//! A general HTTP client reads every response into a buffer of its own and hands the body out
//! as frames, which the caller then copies where it wants them; it also runs each connection
//! as a task of its own, with a channel for the body and one for the response. For a client
//! whose caller always knows where the bytes go (the slabs of a lease), all of that is a second
//! copy of every body byte and several allocations, wake-ups and task switches per request. So
//! here the connection is a plain struct, driven by the task that awaits the reply:
//!
//! * the request head is written from one reused buffer, in one write;
//! * the response head is read into a fixed read buffer (16 KiB, grown up to [`MAX_HEAD`] only
//!   for a larger head) and parsed by `httparse`; the body bytes that came with it are copied out of
//!   that buffer, and every later read goes from the socket (or TLS) directly into the
//!   caller's slice, never past the body's end — except the last few KiB of a body over plain
//!   TCP (below [`SMALL_REST`]), read through the read buffer (see there why);
//! * bodies are framed by `Content-Length`, `chunked` (decoded by [`chunked`]) or the
//!   connection's close, as RFC 9112 says; a reply to HEAD, a 1xx, 204 and 304 have none, and
//!   1xx responses before the final one are skipped, but for 101 Switching Protocols, which
//!   is final and ends the connection's use.
//!
//! A connection may carry another request only after an exchange that ended cleanly: the whole
//! body read, no byte after it, and a server that did not ask to close. Before an idle
//! connection is used again, [`Connection::idle_alive`] peeks at its socket without blocking,
//! so one the server closed meanwhile is dropped instead of failing a request.
//!
//! Where this reader and hyper's could differ, it reads as hyper does (RFC 9112): a `101` is
//! final, `Transfer-Encoding` in an HTTP/1.0 reply is refused, chunk-size lines follow the
//! grammar strictly (no empty size, no bare LF), and `Content-Length` may be a list of equal
//! values or carry leading zeros. The fuzz target `http1_vs_hyper` checks the two against each
//! other. [`Http`] holds either this connection or hyper's (`via_hyper`), for
//! [`HttpTransport`](crate::HttpTransport).

mod chunked;
mod head;
#[cfg(fuzzing)]
pub(crate) mod memory;
#[cfg(feature = "hyper")]
mod via_hyper;

use std::io;
use std::sync::Arc;
use std::task::{Context, Waker};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::error::{Error, ErrorKind};
use crate::tls::TlsStream;
pub(crate) use chunked::decode_all as decode_chunked;
use chunked::{Chunked, Step};
pub(crate) use head::{is_field_value, parse_length, Framing, Head, Parsed};
#[cfg(feature = "hyper")]
pub(crate) use via_hyper::{HyperConnection, HyperStream};

/// The read buffer's size: a response head and, for a small object, its whole body.
const READ_BUF: usize = 16 << 10;

/// Over plain TCP, what is left of a body up to this size is read through the read buffer
/// (and copied out), not straight into the caller's slice. tokio clears a socket's read
/// readiness only when a read returns less than it asked for; a read of exactly the body's rest
/// leaves it set, so the next read of the connection (or the peek before it is used again) is a
/// system call that finds nothing. One read into the larger buffer returns short and spares it,
/// for the price of copying a few KiB.
const SMALL_REST: u64 = 8 << 10;

/// The largest response head accepted: hyper's default read buffer limit (8 KiB + 100 × 4 KiB),
/// so that a head hyper reads is read here too.
pub(crate) const MAX_HEAD: usize = 8192 + 4096 * 100;

/// Where connections go: a `scheme://authority` URI, with its text (lower case) as the key that
/// pooled connections are matched by — a pointer or string comparison, not a URI's.
#[derive(Clone, Debug)]
pub(crate) struct Origin {
    uri: http::Uri,
    key: std::sync::Arc<str>,
}

impl Origin {
    /// The origin of `uri` (its scheme and authority).
    pub(crate) fn new(uri: http::Uri) -> Self {
        let scheme = uri.scheme_str().unwrap_or("https");
        let authority = uri.authority().map_or("", |a| a.as_str());
        let key = format!("{scheme}://{authority}")
            .to_ascii_lowercase()
            .into();
        Origin { uri, key }
    }

    /// The origin as a URI.
    pub(crate) fn uri(&self) -> &http::Uri {
        &self.uri
    }
}

impl PartialEq for Origin {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.key, &other.key) || self.key == other.key
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.key)
    }
}

/// The byte stream a connection speaks HTTP on.
pub(crate) enum Transport {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream>),
    /// Bytes in memory, for the differential fuzz target.
    #[cfg(fuzzing)]
    Memory(memory::MemoryStream),
}

impl Transport {
    #[cfg(test)]
    fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(s) => s.tcp(),
        }
    }

    /// Nothing waits to be read and the peer has not closed: peeks at the socket, never blocks.
    fn quiet(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        let mut byte = [0u8; 1];
        let mut peek = ReadBuf::new(&mut byte);
        let tcp = match self {
            Transport::Plain(s) => s,
            Transport::Tls(s) => s.tcp(),
            #[cfg(fuzzing)]
            Transport::Memory(m) => return m.quiet(),
        };
        tcp.poll_peek(&mut cx, &mut peek).is_pending()
    }

    /// Bytes arrived that no read has taken yet: over TLS, plaintext decrypted ahead or
    /// ciphertext not yet decrypted.
    fn has_buffered(&self) -> bool {
        matches!(self, Transport::Tls(s) if s.has_unread())
    }

    /// One read into `dst`: how many bytes, 0 at the end of the stream.
    async fn read(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(dst).await,
            Transport::Tls(s) => s.read(dst).await,
            #[cfg(fuzzing)]
            Transport::Memory(s) => s.read(dst).await,
        }
    }

    async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.write_all(data).await,
            Transport::Tls(s) => s.write_all(data).await,
            #[cfg(fuzzing)]
            Transport::Memory(s) => s.write_all(data).await,
        }
    }
}

/// Where the current exchange is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No exchange, or the last one ended cleanly: a request may be sent.
    Ready,
    /// A request was sent; its response head is awaited.
    Sent { method_head: bool },
    /// The head is in; the body is being read.
    Body(BodyLeft),
    /// The body has ended.
    Done,
    /// An exchange failed or was abandoned midway: the connection must be dropped.
    Broken,
}

/// What is left of a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyLeft {
    Length(u64),
    Chunked(Chunked),
    UntilClose,
}

/// One HTTP/1.1 connection; see the module docs.
pub(crate) struct Connection {
    io: Transport,
    buf: Box<[u8]>,
    /// Unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    out: Vec<u8>,
    scratch: Vec<u8>,
    head: Head,
    state: State,
    keep_alive: bool,
    /// A byte of the current response has arrived.
    answered: bool,
    /// For a plain http origin reached through a proxy: what requests add to go there.
    forward: Option<Box<Forward>>,
}

/// What a request sent to a proxy for a plain http origin adds: the origin before its target
/// (absolute form), and the proxy's credentials.
#[derive(Debug)]
pub(crate) struct Forward {
    /// `http://host[:port]`.
    pub(crate) origin: String,
    /// `Proxy-Authorization`, if the proxy wants it.
    pub(crate) authorization: Option<http::HeaderValue>,
}

impl Connection {
    /// A connection over `io`, before its first request.
    pub(crate) fn new(io: Transport) -> Self {
        Connection {
            io,
            buf: vec![0; READ_BUF].into_boxed_slice(),
            start: 0,
            end: 0,
            out: Vec::with_capacity(1024),
            scratch: Vec::with_capacity(1024),
            head: Head::default(),
            state: State::Ready,
            keep_alive: true,
            answered: false,
            forward: None,
        }
    }

    /// Whether the connection may carry another request: its last exchange ended cleanly and
    /// no byte is left after it, in the read buffer or (over TLS) in the ciphertext. Bytes the
    /// server sent after a response belong to no request (RFC 9112 §6.3): reading them as the
    /// next response could deliver another object's bytes.
    pub(crate) fn reusable(&self) -> bool {
        self.exchange_ended() && !self.io.has_buffered()
    }

    /// No exchange, or the last one ended cleanly with nothing left in the read buffer.
    fn exchange_ended(&self) -> bool {
        self.state == State::Ready
            || (self.state == State::Done && self.keep_alive && self.start == self.end)
    }

    /// For an idle connection: true unless the server closed it or sent something unasked for
    /// meanwhile. Never blocks: it peeks at the socket.
    pub(crate) fn idle_alive(&mut self) -> bool {
        self.reusable() && self.io.quiet()
    }

    /// The buffers to compose the next request in, both cleared: the request's bytes (see
    /// [`push_request_line`], [`push_field`], [`end_head`]) and a scratch buffer (for signing);
    /// and, for a connection to a proxy, what requests add ([`Http::forward_through`]).
    pub(crate) fn compose(&mut self) -> (&mut Vec<u8>, &mut Vec<u8>, Option<&Forward>) {
        self.out.clear();
        self.scratch.clear();
        (&mut self.out, &mut self.scratch, self.forward.as_deref())
    }

    /// Writes the request [`compose`](Connection::compose)d (one without a body) in one go;
    /// `method_head` tells if it is a HEAD, whose response has no body.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Connection`] when the write fails; the connection is then broken.
    pub(crate) async fn send(&mut self, method_head: bool) -> Result<(), Error> {
        // A new TLS connection may hold ciphertext the handshake left (session tickets): it is
        // read with the response, so only the exchange's state matters here.
        debug_assert!(
            self.exchange_ended(),
            "send on a connection in state {:?}",
            self.state
        );
        self.state = State::Broken; // until the response is whole
        self.start = 0;
        self.end = 0;
        self.answered = false;
        self.io.write_all(&self.out).await.map_err(|e| {
            Error::new(ErrorKind::Connection)
                .with_message("sending the request failed")
                .with_source(e)
        })?;
        self.state = State::Sent { method_head };
        Ok(())
    }

    /// Reads the response head of the request sent, skipping 1xx responses; then [`head`]
    /// tells it and [`read_body`] reads the body.
    ///
    /// [`head`]: Connection::head
    /// [`read_body`]: Connection::read_body
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Connection`] when the connection breaks or closes first, or the head is
    /// not valid HTTP/1.x or over [`MAX_HEAD`].
    pub(crate) async fn read_head(&mut self) -> Result<(), Error> {
        let State::Sent { method_head } = self.state else {
            return Err(Error::new(ErrorKind::Internal).with_message("no request was sent"));
        };
        self.state = State::Broken;
        loop {
            if let head::Parsed::Complete(len) = self.head.parse(&self.buf[self.start..self.end])? {
                self.start += len;
                let status = self.head.status();
                // 100 Continue and other interim replies come before the final one; 101
                // Switching Protocols is final (hyper's reading too): after it the connection
                // speaks another protocol, so it is never reused, and what follows is no
                // HTTP response to read.
                if status.is_informational() && status != http::StatusCode::SWITCHING_PROTOCOLS {
                    continue;
                }
                self.keep_alive =
                    self.head.keep_alive() && status != http::StatusCode::SWITCHING_PROTOCOLS;
                self.state = match self.head.framing(method_head)? {
                    Framing::Empty | Framing::Length(0) => State::Done,
                    Framing::Length(n) => State::Body(BodyLeft::Length(n)),
                    Framing::Chunked => State::Body(BodyLeft::Chunked(Chunked::Size)),
                    Framing::UntilClose => {
                        self.keep_alive = false;
                        State::Body(BodyLeft::UntilClose)
                    }
                };
                return Ok(());
            }
            let got = self.fill(MAX_HEAD).await.map_err(|e| {
                Error::new(ErrorKind::Connection)
                    .with_message("no response")
                    .with_source(e)
            })?;
            if got == 0 {
                let why = if self.start == self.end {
                    "the server closed the connection without a response"
                } else {
                    "the server closed the connection inside the response head"
                };
                return Err(Error::new(ErrorKind::Connection).with_message(why));
            }
        }
    }

    /// The head [`read_head`](Connection::read_head) read.
    pub(crate) fn head(&self) -> &Head {
        &self.head
    }

    /// Whether no byte of a response has arrived since the request was sent: a failure then
    /// is a connection the server had closed, never a reply that went wrong.
    pub(crate) fn unanswered(&self) -> bool {
        !self.answered
    }

    /// Reads body bytes into `dst` (not empty): how many, or 0 once the body has ended.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Connection`] when the connection breaks or closes before the body's end,
    /// or the chunked framing is invalid.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a read dropped midway leaves the connection broken.
    pub(crate) async fn read_body(&mut self, dst: &mut [u8]) -> Result<usize, Error> {
        debug_assert!(!dst.is_empty());
        loop {
            let left = match self.state {
                State::Done => return Ok(0),
                State::Body(left) => left,
                _ => return Err(not_in_body()),
            };
            let buffered = self.end - self.start;
            let (limit, chunked) = match left {
                BodyLeft::Length(n) => (n, None),
                BodyLeft::UntilClose => (u64::MAX, None),
                BodyLeft::Chunked(mut c) => match c.step(&self.buf[self.start..self.end]) {
                    Err(e) => return Err(self.broke(e)),
                    Ok(Step::Done) => {
                        self.state = State::Done;
                        return Ok(0);
                    }
                    Ok(Step::Framing(n)) => {
                        self.start += n;
                        self.state = State::Body(BodyLeft::Chunked(c));
                        continue;
                    }
                    Ok(Step::NeedMore) => {
                        self.fill_body(READ_BUF).await?;
                        continue;
                    }
                    Ok(Step::Data(n)) => (n, Some(c)),
                },
            };
            let want = dst.len().min(usize::try_from(limit).unwrap_or(usize::MAX));
            if buffered == 0 && limit <= SMALL_REST && matches!(self.io, Transport::Plain(_)) {
                self.fill_body(READ_BUF).await?;
                continue;
            }
            let n = if buffered > 0 {
                let n = want.min(buffered);
                dst[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
                self.start += n;
                n
            } else {
                self.state = State::Broken; // until the read completes
                let n = self
                    .io
                    .read(&mut dst[..want])
                    .await
                    .map_err(|e| body_broke().with_source(e))?;
                if n == 0 && left != BodyLeft::UntilClose {
                    return Err(body_broke().with_message("the server closed the connection"));
                }
                n
            };
            self.state = match (left, chunked) {
                (_, Some(mut c)) => {
                    c.took(n as u64);
                    State::Body(BodyLeft::Chunked(c))
                }
                (BodyLeft::Length(total), None) if total == n as u64 => State::Done,
                (BodyLeft::Length(total), None) => State::Body(BodyLeft::Length(total - n as u64)),
                (_, None) if n == 0 => State::Done, // closed: the end of the body
                (left, None) => State::Body(left),
            };
            return Ok(n);
        }
    }

    /// Whether the body has ended: reads framing (and, for a body that ends with the
    /// connection, one read) to find out, without consuming any body byte.
    ///
    /// # Errors
    ///
    /// As [`read_body`](Connection::read_body).
    pub(crate) async fn body_ended(&mut self) -> Result<bool, Error> {
        loop {
            match self.state {
                State::Done => return Ok(true),
                State::Body(BodyLeft::Length(_)) => return Ok(false),
                State::Body(BodyLeft::UntilClose) => {
                    if self.start < self.end {
                        return Ok(false);
                    }
                    if self.fill_body(READ_BUF).await? == 0 {
                        self.state = State::Done;
                        return Ok(true);
                    }
                }
                State::Body(BodyLeft::Chunked(mut c)) => {
                    match c.step(&self.buf[self.start..self.end]) {
                        Err(e) => return Err(self.broke(e)),
                        Ok(Step::Done) => self.state = State::Done,
                        Ok(Step::Data(_)) if self.start < self.end => return Ok(false),
                        Ok(Step::Data(_)) | Ok(Step::NeedMore) => {
                            self.fill_body(READ_BUF).await?;
                        }
                        Ok(Step::Framing(n)) => {
                            self.start += n;
                            self.state = State::Body(BodyLeft::Chunked(c));
                        }
                    }
                }
                _ => return Err(not_in_body()),
            }
        }
    }

    /// Reads more into the read buffer (growing it up to `max`); the bytes read, 0 at EOF.
    async fn fill(&mut self, max: usize) -> io::Result<usize> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        if self.end == self.buf.len() {
            if self.buf.len() >= max {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("response head larger than {} KiB", max >> 10),
                ));
            }
            let mut bigger = vec![0; (self.buf.len() * 2).min(max)].into_boxed_slice();
            bigger[..self.end].copy_from_slice(&self.buf[..self.end]);
            self.buf = bigger;
        }
        let n = self.io.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        self.answered |= n > 0;
        Ok(n)
    }

    /// [`fill`](Connection::fill) inside a body: the connection is broken if it fails, and a
    /// close is an error unless the body ends with the connection.
    async fn fill_body(&mut self, max: usize) -> Result<usize, Error> {
        let state = std::mem::replace(&mut self.state, State::Broken);
        let n = self
            .fill(max)
            .await
            .map_err(|e| body_broke().with_source(e))?;
        if n == 0 && state != State::Body(BodyLeft::UntilClose) {
            return Err(body_broke().with_message("the server closed the connection"));
        }
        self.state = state;
        Ok(n)
    }

    fn broke(&mut self, e: Error) -> Error {
        self.state = State::Broken;
        e
    }
}

fn body_broke() -> Error {
    Error::new(ErrorKind::Connection).with_message("the body broke off")
}

fn not_in_body() -> Error {
    Error::new(ErrorKind::Internal).with_message("no response body is being read")
}

/// One connection's HTTP/1.1, on the transport the client was built with
/// ([`HttpTransport`](crate::HttpTransport)): the same methods whichever it is.
// The native connection inline: it is on every request's path, and its socket is boxed already.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Http {
    /// This crate's exchange.
    Native(Connection),
    /// hyper's `client::conn::http1`.
    #[cfg(feature = "hyper")]
    Hyper(Box<HyperConnection>),
}

/// `$body` with `$c` bound to whichever connection `$http` holds.
macro_rules! on_either {
    ($http:expr, $c:ident => $body:expr) => {
        match $http {
            Http::Native($c) => $body,
            #[cfg(feature = "hyper")]
            Http::Hyper($c) => $body,
        }
    };
}

impl Http {
    /// Makes requests on this connection go to a proxy for `origin`: in absolute form, with
    /// `authorization` as `Proxy-Authorization`.
    pub(crate) fn forward_through(
        &mut self,
        origin: String,
        authorization: Option<http::HeaderValue>,
    ) {
        let forward = Some(Box::new(Forward {
            origin,
            authorization,
        }));
        on_either!(self, c => c.forward = forward)
    }

    /// See [`Connection::reusable`].
    pub(crate) fn reusable(&self) -> bool {
        on_either!(self, c => c.reusable())
    }

    /// See [`Connection::idle_alive`].
    pub(crate) fn idle_alive(&mut self) -> bool {
        on_either!(self, c => c.idle_alive())
    }

    /// The connection over `tcp`, for https (`tls`: the client's configuration and the
    /// server's name) after the TLS handshake, and driven by hyper if `hyper` (after its own
    /// handshake) or else by [`Connection`].
    ///
    /// # Errors
    ///
    /// The TLS or HTTP handshake's failure.
    pub(crate) async fn handshake(
        tcp: TcpStream,
        tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
        hyper: bool,
    ) -> Result<Http, Box<dyn std::error::Error + Send + Sync>> {
        if hyper {
            return Self::handshake_hyper(tcp, tls).await;
        }
        Ok(Http::Native(Connection::new(match tls {
            Some((config, name)) => {
                Transport::Tls(Box::new(TlsStream::connect(config, name, tcp).await?))
            }
            None => Transport::Plain(tcp),
        })))
    }

    #[cfg(feature = "hyper")]
    async fn handshake_hyper(
        tcp: TcpStream,
        tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    ) -> Result<Http, Box<dyn std::error::Error + Send + Sync>> {
        let stream = match tls {
            Some((config, name)) => {
                let connect = tokio_rustls::TlsConnector::from(config).connect(name, tcp);
                HyperStream::tls(connect.await?)
            }
            None => HyperStream::plain(tcp),
        };
        Ok(Http::Hyper(Box::new(
            HyperConnection::handshake(stream).await?,
        )))
    }

    #[cfg(not(feature = "hyper"))]
    async fn handshake_hyper(
        _: TcpStream,
        _: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    ) -> Result<Http, Box<dyn std::error::Error + Send + Sync>> {
        unreachable!("refused when the client is built")
    }

    /// See [`Connection::compose`].
    pub(crate) fn compose(&mut self) -> (&mut Vec<u8>, &mut Vec<u8>, Option<&Forward>) {
        on_either!(self, c => c.compose())
    }

    /// See [`Connection::send`].
    pub(crate) async fn send(&mut self, method_head: bool) -> Result<(), Error> {
        on_either!(self, c => c.send(method_head).await)
    }

    /// See [`Connection::read_head`].
    pub(crate) async fn read_head(&mut self) -> Result<(), Error> {
        on_either!(self, c => c.read_head().await)
    }

    /// See [`Connection::head`].
    pub(crate) fn head(&self) -> &Head {
        on_either!(self, c => c.head())
    }

    /// Whether the body of the current response, to a GET, ends when the server closes the
    /// connection: then a body shorter than expected may be a connection that broke, not a
    /// server that meant it.
    pub(crate) fn ends_with_close(&self) -> bool {
        matches!(self.head().framing(false), Ok(Framing::UntilClose))
    }

    /// See [`Connection::unanswered`].
    pub(crate) fn unanswered(&self) -> bool {
        on_either!(self, c => c.unanswered())
    }

    /// See [`Connection::read_body`].
    pub(crate) async fn read_body(&mut self, dst: &mut [u8]) -> Result<usize, Error> {
        on_either!(self, c => c.read_body(dst).await)
    }

    /// See [`Connection::body_ended`].
    pub(crate) async fn body_ended(&mut self) -> Result<bool, Error> {
        on_either!(self, c => c.body_ended().await)
    }
}

/// Starts a request: `method`, a space, then the target that `target` appends (which must be
/// ASCII), then the version. Returns where the target lies in `out`.
pub(crate) fn push_request_line(
    out: &mut Vec<u8>,
    method: &str,
    target: impl FnOnce(&mut Vec<u8>),
) -> std::ops::Range<usize> {
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    let start = out.len();
    target(out);
    let end = out.len();
    out.extend_from_slice(b" HTTP/1.1\r\n");
    start..end
}

/// Appends one header field.
pub(crate) fn push_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Ends the request head.
pub(crate) fn end_head(out: &mut Vec<u8>) {
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A connection to a server that answers each request with the next of `replies` (split
    /// into writes of `split` bytes), and the requests it saw.
    async fn serve(
        replies: Vec<Vec<u8>>,
        split: usize,
    ) -> (Connection, tokio::task::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            for reply in replies {
                let Some(req) = read_request(&mut s).await else {
                    return seen;
                };
                seen.push(req);
                for piece in reply.chunks(split.max(1)) {
                    s.write_all(piece).await.unwrap();
                    s.flush().await.unwrap();
                    tokio::task::yield_now().await;
                }
            }
            seen
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        (Connection::new(Transport::Plain(tcp)), server)
    }

    /// The next request head on `s`, byte by byte; `None` if the client closed first.
    async fn read_request(s: &mut TcpStream) -> Option<String> {
        let mut req = Vec::new();
        while !req.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            if s.read(&mut b).await.unwrap() == 0 {
                return None;
            }
            req.push(b[0]);
        }
        Some(String::from_utf8(req).unwrap())
    }

    /// Sends `GET path` with a `host` field.
    async fn get(conn: &mut Connection, path: &str) -> Result<(), Error> {
        let (out, _, _) = conn.compose();
        push_request_line(out, "GET", |o| o.extend_from_slice(path.as_bytes()));
        push_field(out, "host", b"h");
        end_head(out);
        conn.send(false).await
    }

    async fn body(conn: &mut Connection, chunk: usize) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        let mut dst = vec![0; chunk];
        loop {
            let n = conn.read_body(&mut dst).await?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&dst[..n]);
        }
    }

    #[tokio::test]
    async fn exchanges_in_every_framing_reuse_the_connection() {
        let big: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let mut length = b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n".to_vec();
        length.extend_from_slice(&big);
        let chunked =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
                .to_vec();
        let empty = b"HTTP/1.1 204 No Content\r\n\r\n".to_vec();
        for split in [1, 7, 1 << 20] {
            let replies = vec![length.clone(), chunked.clone(), empty.clone()];
            let (mut conn, server) = serve(replies, split).await;
            get(&mut conn, "/a?x=1").await.unwrap();
            conn.read_head().await.unwrap();
            assert_eq!(conn.head().status(), 200);
            assert_eq!(body(&mut conn, 4096).await.unwrap(), big, "split {split}");
            assert!(conn.reusable());
            get(&mut conn, "/b").await.unwrap();
            conn.read_head().await.unwrap();
            assert_eq!(body(&mut conn, 2).await.unwrap(), b"abcde", "split {split}");
            assert!(conn.body_ended().await.unwrap());
            assert!(conn.reusable());
            get(&mut conn, "/c").await.unwrap();
            conn.read_head().await.unwrap();
            assert_eq!(conn.head().status(), 204);
            assert!(conn.body_ended().await.unwrap());
            assert!(conn.reusable());
            let seen = server.await.unwrap();
            assert_eq!(seen[0], "GET /a?x=1 HTTP/1.1\r\nhost: h\r\n\r\n");
            assert_eq!(seen.len(), 3);
        }
    }

    #[tokio::test]
    async fn switching_protocols_is_a_final_reply_and_ends_the_connection() {
        // What follows the 101 looks like a response; it must not be read as one.
        let reply = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\n\r\n\
            HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi"
            .to_vec();
        let (mut conn, _server) = serve(vec![reply], 1 << 20).await;
        get(&mut conn, "/a").await.unwrap();
        conn.read_head().await.unwrap();
        assert_eq!(conn.head().status(), 101);
        assert_eq!(body(&mut conn, 16).await.unwrap(), b"");
        assert!(!conn.reusable());
    }

    #[tokio::test]
    async fn a_small_rest_of_a_body_leaves_no_stale_read_readiness() {
        // The head comes first and the body's 4 KiB later, so the body is one read of its own;
        // read as exactly its length, it would leave the socket marked readable and cost the
        // next use of the connection a read that finds nothing.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            assert!(read_request(&mut s).await.is_some());
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4096\r\n\r\n")
                .await
                .unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            s.write_all(&[7u8; 4096]).await.unwrap();
            // Open and quiet until the client has looked.
            let _ = done_rx.await;
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut conn = Connection::new(Transport::Plain(tcp));
        get(&mut conn, "/").await.unwrap();
        conn.read_head().await.unwrap();
        assert_eq!(body(&mut conn, 4096).await.unwrap(), vec![7u8; 4096]);
        assert!(conn.reusable());
        let mut cx = Context::from_waker(Waker::noop());
        assert!(
            conn.io.tcp().poll_read_ready(&mut cx).is_pending(),
            "the socket is still marked readable after the body"
        );
        done_tx.send(()).unwrap();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_body_until_close_ends_the_connection() {
        let reply = b"HTTP/1.1 200 OK\r\n\r\nall of it".to_vec();
        let (mut conn, _server) = serve(vec![reply], 3).await;
        get(&mut conn, "/").await.unwrap();
        conn.read_head().await.unwrap();
        assert_eq!(body(&mut conn, 4).await.unwrap(), b"all of it");
        assert!(!conn.reusable());
    }

    #[tokio::test]
    async fn short_bodies_and_missing_heads_are_connection_errors() {
        let cases: [&[u8]; 4] = [
            b"",
            b"HTTP/1.1 200 OK\r\ncontent-le",
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab",
        ];
        for reply in cases {
            let (mut conn, server) = serve(vec![reply.to_vec()], 4).await;
            get(&mut conn, "/").await.unwrap();
            let result = async {
                conn.read_head().await?;
                body(&mut conn, 64).await
            };
            // The server closes once it has written the reply.
            let e = result.await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Connection, "{reply:?}: {e}");
            assert!(!conn.reusable());
            server.await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_byte_after_the_body_or_a_close_request_stops_reuse() {
        let extra = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokX".to_vec();
        let close = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok".to_vec();
        for reply in [extra, close] {
            let (mut conn, _server) = serve(vec![reply], 1 << 20).await;
            get(&mut conn, "/").await.unwrap();
            conn.read_head().await.unwrap();
            // Give the whole reply time to arrive in one read.
            assert_eq!(body(&mut conn, 64).await.unwrap(), b"ok");
            assert!(!conn.reusable());
        }
    }

    #[tokio::test]
    async fn an_idle_connection_closed_by_the_server_is_seen_dead() {
        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec();
        let (mut conn, server) = serve(vec![reply], 1 << 20).await;
        get(&mut conn, "/").await.unwrap();
        conn.read_head().await.unwrap();
        assert_eq!(body(&mut conn, 64).await.unwrap(), b"ok");
        assert!(conn.idle_alive());
        // The server's loop ends after one reply and closes the socket.
        server.await.unwrap();
        let mut alive = true;
        for _ in 0..100 {
            alive = conn.idle_alive();
            if !alive {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(!alive);
    }

    /// A response carrying `body` in `framing` (0: Content-Length, 1: chunked in pieces of
    /// `piece` bytes, 2: until close), after `informational` 100 Continue heads.
    fn response(body: &[u8], framing: u8, piece: usize, informational: usize) -> Vec<u8> {
        let mut out = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(informational);
        match framing {
            0 => {
                out.extend(
                    format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len()).bytes(),
                );
                out.extend_from_slice(body);
            }
            1 => {
                out.extend(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
                for c in body.chunks(piece.max(1)) {
                    out.extend(format!("{:x}\r\n", c.len()).bytes());
                    out.extend_from_slice(c);
                    out.extend(b"\r\n");
                }
                out.extend(b"0\r\n\r\n");
            }
            _ => {
                out.extend(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n");
                out.extend_from_slice(body);
            }
        }
        out
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(96))]

        /// Whatever the framing, the body's size, how the server's writes are split and how
        /// large the reader's buffer is, the body read is the body sent, and a connection is
        /// reusable exactly when its framing allows.
        #[test]
        fn bodies_arrive_intact_through_the_connection(
            len in 0usize..70_000,
            framings in proptest::collection::vec(0u8..3, 1..4),
            piece in 1usize..20_000,
            split in 1usize..9_000,
            chunk in 1usize..20_000,
            informational in 0usize..2,
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                // Until close can only be the last.
                let mut framings = framings;
                if let Some(i) = framings.iter().position(|&f| f == 2) {
                    framings.truncate(i + 1);
                }
                let bodies: Vec<Vec<u8>> = (0..framings.len())
                    .map(|i| (0..len + i).map(|j| (j * 13 + i) as u8).collect())
                    .collect();
                let replies = framings
                    .iter()
                    .zip(&bodies)
                    .map(|(&f, b)| response(b, f, piece, informational))
                    .collect();
                let (mut conn, server) = serve(replies, split).await;
                for (&f, want) in framings.iter().zip(&bodies) {
                    get(&mut conn, "/k").await.unwrap();
                    conn.read_head().await.unwrap();
                    assert_eq!(conn.head().status(), 200);
                    let got = body(&mut conn, chunk).await.unwrap();
                    assert!(got == *want, "framing {f}: {} bytes, want {}", got.len(), want.len());
                    assert_eq!(conn.reusable(), f != 2, "framing {f}");
                }
                server.await.unwrap();
            });
        }
    }

    #[test]
    fn requests_are_written_as_http_1_1() {
        let mut out = Vec::new();
        let at = push_request_line(&mut out, "HEAD", |o| o.extend_from_slice(b"/k%20y?v=1"));
        push_field(&mut out, "host", b"h");
        push_field(&mut out, "range", b"bytes=0-9");
        end_head(&mut out);
        assert_eq!(&out[at], b"/k%20y?v=1");
        assert_eq!(
            out,
            b"HEAD /k%20y?v=1 HTTP/1.1\r\nhost: h\r\nrange: bytes=0-9\r\n\r\n"
        );
    }
}
