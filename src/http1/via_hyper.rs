//! [`HyperConnection`]: one connection's HTTP/1.1 carried by hyper's `client::conn::http1` (over
//! tokio-rustls for https) instead of this crate's own exchange, behind the same methods as
//! [`Connection`](super::Connection), so the pool, budgets and slabs above cannot tell them
//! apart.
//!
//! hyper runs a connection as a future of its own (the dispatcher) beside the request's. Here it
//! has no task: every wait of an exchange polls the dispatcher and the awaited future together,
//! and an idle connection's dispatcher is polled once, without blocking, before reuse — which is
//! when hyper notices a close or bytes that belong to no request. Dropping the connection drops
//! the dispatcher and so closes its socket at once, as a native connection does: the pool's
//! count of open sockets stays exact.
//!
//! The request is composed into the same buffer as for the native exchange (the signer covers
//! exactly those bytes), then handed to hyper as an `http::Request`; the response head hyper
//! parsed is rewritten into a [`Head`] for the layers above; each body frame is copied into the
//! caller's buffer (the one copy the native exchange does not make).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1 as h1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::{Forward, Head, Parsed};
use crate::error::{Error, ErrorKind};

/// The most fields a request composed by this crate carries, with room to spare.
const MAX_REQUEST_FIELDS: usize = 32;

/// The byte stream under hyper: TCP, or tokio-rustls over TCP. It notes when a byte has been
/// read, so a failed exchange can tell whether any of a reply arrived.
pub(crate) struct HyperStream {
    io: Io,
    answered: Arc<AtomicBool>,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    #[cfg(fuzzing)]
    Memory(super::memory::MemoryStream),
}

impl HyperStream {
    /// Plain TCP.
    pub(crate) fn plain(tcp: TcpStream) -> Self {
        Self::new(Io::Plain(tcp))
    }

    /// TLS, after its handshake.
    pub(crate) fn tls(tls: tokio_rustls::client::TlsStream<TcpStream>) -> Self {
        Self::new(Io::Tls(Box::new(tls)))
    }

    /// Bytes in memory, for the differential fuzz target.
    #[cfg(fuzzing)]
    pub(crate) fn memory(m: super::memory::MemoryStream) -> Self {
        Self::new(Io::Memory(m))
    }

    fn new(io: Io) -> Self {
        HyperStream {
            io,
            answered: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl AsyncRead for HyperStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            #[cfg(fuzzing)]
            Io::Memory(s) => Pin::new(s).poll_read(cx, buf),
        };
        if buf.filled().len() > before {
            this.answered.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for HyperStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, data),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
            #[cfg(fuzzing)]
            Io::Memory(s) => Pin::new(s).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            #[cfg(fuzzing)]
            Io::Memory(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            #[cfg(fuzzing)]
            Io::Memory(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            #[cfg(fuzzing)]
            Io::Memory(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
            #[cfg(fuzzing)]
            Io::Memory(s) => s.is_write_vectored(),
        }
    }
}

/// The body of every request: none (GET, HEAD and listings send no body).
pub(crate) struct NoBody;

impl Body for NoBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        true
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(0)
    }
}

type Dispatcher = h1::Connection<TokioIo<HyperStream>, NoBody>;
type Responding = Pin<Box<dyn Future<Output = hyper::Result<http::Response<Incoming>>> + Send>>;

/// Where the current exchange is.
enum State {
    Ready,
    Sent(Responding),
    Body {
        body: Incoming,
        /// What is left of the last data frame.
        left: Bytes,
    },
    Done,
    Broken,
}

/// One connection driven by hyper; see the module docs.
pub(crate) struct HyperConnection {
    sender: h1::SendRequest<NoBody>,
    /// `None` once hyper has ended the connection (closed, failed or not reusable).
    dispatcher: Option<Pin<Box<Dispatcher>>>,
    out: Vec<u8>,
    scratch: Vec<u8>,
    /// See [`Http::forward_through`](super::Http::forward_through).
    pub(super) forward: Option<Box<Forward>>,
    head: Head,
    /// Scratch for the rewritten response head.
    raw: Vec<u8>,
    state: State,
    answered: Arc<AtomicBool>,
}

impl HyperConnection {
    /// hyper's HTTP/1.1 client, with its default settings, on `stream`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Connection`] if hyper refuses the connection.
    pub(crate) async fn handshake(stream: HyperStream) -> Result<Self, Error> {
        let answered = Arc::clone(&stream.answered);
        let (sender, dispatcher) = h1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| broken("the HTTP/1.1 handshake failed", e))?;
        Ok(HyperConnection {
            sender,
            dispatcher: Some(Box::pin(dispatcher)),
            out: Vec::with_capacity(1024),
            scratch: Vec::with_capacity(1024),
            forward: None,
            head: Head::default(),
            raw: Vec::with_capacity(1024),
            state: State::Ready,
            answered,
        })
    }

    /// As [`Connection::compose`](super::Connection::compose).
    pub(crate) fn compose(&mut self) -> (&mut Vec<u8>, &mut Vec<u8>, Option<&Forward>) {
        self.out.clear();
        self.scratch.clear();
        (&mut self.out, &mut self.scratch, self.forward.as_deref())
    }

    /// Whether the connection may carry another request: its last exchange ended and hyper
    /// keeps the connection, ready for the next one.
    pub(crate) fn reusable(&self) -> bool {
        match self.state {
            State::Ready => self.dispatcher.is_some(),
            State::Done => self.dispatcher.is_some() && self.sender.is_ready(),
            _ => false,
        }
    }

    /// For an idle connection: lets hyper look at it (it notices a close, or bytes no request
    /// asked for, and ends the connection), without blocking; then [`reusable`].
    ///
    /// [`reusable`]: HyperConnection::reusable
    pub(crate) fn idle_alive(&mut self) -> bool {
        self.settle();
        self.reusable()
    }

    /// Polls the dispatcher once with no waker to wake: what it can do without waiting.
    fn settle(&mut self) {
        let mut cx = Context::from_waker(Waker::noop());
        poll_dispatcher(&mut self.dispatcher, &mut cx);
    }

    /// Hands the request [`compose`](HyperConnection::compose)d to hyper once it is ready for
    /// one; hyper writes it while the response is awaited. Whether it is a HEAD, hyper knows
    /// from the request itself.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Connection`] when hyper cannot take a request on this connection.
    pub(crate) async fn send(&mut self, _method_head: bool) -> Result<(), Error> {
        self.state = State::Broken;
        self.answered.store(false, Ordering::Relaxed);
        let request = self.request()?;
        let (sender, dispatcher) = (&mut self.sender, &mut self.dispatcher);
        std::future::poll_fn(|cx| {
            poll_dispatcher(dispatcher, cx);
            sender.poll_ready(cx)
        })
        .await
        .map_err(|e| broken("sending the request failed", e))?;
        self.state = State::Sent(Box::pin(self.sender.send_request(request)));
        Ok(())
    }

    /// The composed request as an `http::Request`.
    fn request(&self) -> Result<http::Request<NoBody>, Error> {
        let internal = |why: String| Error::new(ErrorKind::Internal).with_message(why);
        let mut fields = [httparse::EMPTY_HEADER; MAX_REQUEST_FIELDS];
        let mut parsed = httparse::Request::new(&mut fields);
        match parsed.parse(&self.out) {
            Ok(httparse::Status::Complete(_)) => {}
            other => return Err(internal(format!("an invalid request head ({other:?})"))),
        }
        let mut request = http::Request::builder()
            .method(parsed.method.unwrap_or("GET"))
            .uri(parsed.path.unwrap_or("/"));
        for field in parsed.headers.iter() {
            request = request.header(field.name, field.value);
        }
        request
            .body(NoBody)
            .map_err(|e| internal(format!("an invalid request ({e})")))
    }

    /// As [`Connection::read_head`](super::Connection::read_head); 1xx replies are skipped by
    /// hyper.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Connection`] when hyper refuses the response or the connection fails.
    pub(crate) async fn read_head(&mut self) -> Result<(), Error> {
        let State::Sent(mut response) = std::mem::replace(&mut self.state, State::Broken) else {
            return Err(Error::new(ErrorKind::Internal).with_message("no request was sent"));
        };
        let dispatcher = &mut self.dispatcher;
        let response = std::future::poll_fn(|cx| {
            poll_dispatcher(dispatcher, cx);
            response.as_mut().poll(cx)
        })
        .await
        .map_err(|e| broken("no response", e))?;
        self.rewrite_head(&response)?;
        self.state = State::Body {
            body: response.into_body(),
            left: Bytes::new(),
        };
        Ok(())
    }

    /// Writes hyper's response head back into HTTP/1.1 text and parses it into the [`Head`].
    fn rewrite_head(&mut self, response: &http::Response<Incoming>) -> Result<(), Error> {
        let raw = &mut self.raw;
        raw.clear();
        raw.extend_from_slice(match response.version() {
            http::Version::HTTP_10 => b"HTTP/1.0 ",
            _ => b"HTTP/1.1 ",
        });
        raw.extend_from_slice(response.status().as_str().as_bytes());
        raw.extend_from_slice(b" \r\n");
        for (name, value) in response.headers() {
            super::push_field(raw, name.as_str(), value.as_bytes());
        }
        super::end_head(raw);
        match self.head.parse(raw)? {
            Parsed::Complete(_) => Ok(()),
            Parsed::Partial => Err(Error::new(ErrorKind::Internal)
                .with_message("a response head hyper parsed did not parse again")),
        }
    }

    /// The head [`read_head`](HyperConnection::read_head) read.
    pub(crate) fn head(&self) -> &Head {
        &self.head
    }

    /// As [`Connection::unanswered`](super::Connection::unanswered).
    pub(crate) fn unanswered(&self) -> bool {
        !self.answered.load(Ordering::Relaxed)
    }

    /// As [`Connection::read_body`](super::Connection::read_body): the next bytes of the body,
    /// copied from hyper's frames.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Connection`] when the body breaks off or hyper refuses its framing.
    pub(crate) async fn read_body(&mut self, dst: &mut [u8]) -> Result<usize, Error> {
        debug_assert!(!dst.is_empty());
        loop {
            match &mut self.state {
                State::Done => return Ok(0),
                State::Body { left, .. } if !left.is_empty() => {
                    let n = dst.len().min(left.len());
                    dst[..n].copy_from_slice(&left[..n]);
                    left.advance(n);
                    return Ok(n);
                }
                State::Body { .. } => {
                    if !self.next_frame().await? {
                        return Ok(0);
                    }
                }
                _ => return Err(not_in_body()),
            }
        }
    }

    /// As [`Connection::body_ended`](super::Connection::body_ended).
    ///
    /// # Errors
    ///
    /// As [`read_body`](HyperConnection::read_body).
    pub(crate) async fn body_ended(&mut self) -> Result<bool, Error> {
        loop {
            match &self.state {
                State::Done => return Ok(true),
                State::Body { left, .. } if !left.is_empty() => return Ok(false),
                State::Body { .. } => {
                    if !self.next_frame().await? {
                        return Ok(true);
                    }
                }
                _ => return Err(not_in_body()),
            }
        }
    }

    /// Waits for the body's next data frame: true with it in `left`, false at the body's end.
    async fn next_frame(&mut self) -> Result<bool, Error> {
        let State::Body { body, left } = &mut self.state else {
            return Err(not_in_body());
        };
        let dispatcher = &mut self.dispatcher;
        loop {
            let frame = std::future::poll_fn(|cx| {
                poll_dispatcher(dispatcher, cx);
                Pin::new(&mut *body).poll_frame(cx)
            })
            .await;
            match frame {
                None => break,
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if !data.is_empty() {
                            *left = data;
                            return Ok(true);
                        }
                    }
                }
                Some(Err(e)) => {
                    self.state = State::Broken;
                    return Err(broken("the body broke off", e));
                }
            }
        }
        self.state = State::Done;
        // hyper makes the connection ready for the next request once it has seen the end.
        self.settle();
        Ok(false)
    }
}

/// Polls hyper's dispatcher, if it still runs; once it ends (the connection closed, failed, or
/// is not to be reused), it is dropped, which closes the socket.
fn poll_dispatcher(dispatcher: &mut Option<Pin<Box<Dispatcher>>>, cx: &mut Context<'_>) {
    if let Some(d) = dispatcher {
        if let Poll::Ready(ended) = d.as_mut().poll(cx) {
            if let Err(e) = ended {
                tracing::debug!(error = %e, "hyper ended the connection");
            }
            *dispatcher = None;
        }
    }
}

fn broken(why: &'static str, e: hyper::Error) -> Error {
    Error::new(ErrorKind::Connection)
        .with_message(why)
        .with_source(e)
}

fn not_in_body() -> Error {
    Error::new(ErrorKind::Internal).with_message("no response body is being read")
}
