//! [`ConnPool`]: the client's HTTP/1.1 connections, at most `max_connections` sockets at any
//! instant, counted rather than hoped for.
//!
//! Two semaphores of `max_connections` permits each do the accounting:
//!
//! * a **unit** is the right to use one connection for one transfer. Requests queue for units
//!   FIFO, so no request starves; a unit is held until the response body is fully read.
//! * a **socket** permit is held by each open socket, idle or busy, and is released when the
//!   socket is closed: a connection is a plain value ([`http1::Connection`](crate::http1::Connection)) with no task of its
//!   own, so dropping it closes the socket at once.
//!
//! A unit holder reuses an idle connection to the same origin when one is ready (the server has
//! not closed it: see [`Connection::idle_alive`](crate::http1::Connection::idle_alive)); otherwise it takes a socket permit and dials
//! (TCP with `TCP_NODELAY`, through a proxy if one applies; then [`Http::handshake`]: rustls for
//! https, ALPN `http/1.1`). If every socket permit is
//! held by idle connections to other origins, the oldest is closed to make room. A connection
//! goes back to the idle list only after a complete, well-formed exchange; any error drops it.
//!
//! A dial refused for a local resource — this process out of file descriptors (`EMFILE`), the
//! system out of them (`ENFILE`), no ephemeral port left (`EADDRNOTAVAIL`) — is not the
//! server's fault and is not an attempt: the pool lowers its socket limit to the sockets it has
//! open (less a few descriptors left for the rest of the process), says so once, and the dial
//! waits for one of its sockets to close. Only with no socket of its own open does it fail.

use std::net::IpAddr;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::HttpTransport;
use crate::error::{Error, ErrorKind};
use crate::http1::{Http, Origin};
use crate::proxy::Proxies;

/// The client's connection pool.
#[derive(Clone)]
pub(crate) struct ConnPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    units: Arc<Semaphore>,
    sockets: Arc<Semaphore>,
    max: usize,
    /// Socket permits given up for good after dials refused for a local resource.
    lowered: AtomicUsize,
    /// Sockets connected and not yet closed (not counting dials in progress); each socket
    /// holds it, to count itself out when closed.
    established: Arc<AtomicUsize>,
    /// Socket permits still to give up as sockets close (the descriptors left to the rest of
    /// the process).
    debt: AtomicUsize,
    /// The WARN about a local resource was given.
    warned: std::sync::atomic::AtomicBool,
    /// Unit permits still to give up as transfers end: as many units as sockets, so that a
    /// unit holder finds a socket (idle or to dial) rather than closing another's to dial.
    unit_debt: AtomicUsize,
    opened: AtomicU64,
    /// Boxed, so that taking and returning one moves a pointer, not its buffers' headers.
    #[allow(clippy::vec_box)] // a socket moves in and out of the list at every request
    idle: Mutex<Vec<Box<Socket>>>,
    tls: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
    proxies: Arc<Proxies>,
    transport: HttpTransport,
}

impl ConnPool {
    pub(crate) fn new(
        max: usize,
        connect_timeout: Duration,
        tls: &rustls::ClientConfig,
        proxies: Arc<Proxies>,
        transport: HttpTransport,
    ) -> Self {
        // This client speaks HTTP/1.1 only, whatever the configuration offered.
        let mut tls = tls.clone();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        ConnPool {
            inner: Arc::new(PoolInner {
                units: Arc::new(Semaphore::new(max)),
                sockets: Arc::new(Semaphore::new(max)),
                max,
                lowered: AtomicUsize::new(0),
                established: Arc::new(AtomicUsize::new(0)),
                debt: AtomicUsize::new(0),
                unit_debt: AtomicUsize::new(0),
                warned: std::sync::atomic::AtomicBool::new(false),
                opened: AtomicU64::new(0),
                idle: Mutex::new(Vec::new()),
                tls: Arc::new(tls),
                connect_timeout,
                proxies,
                transport,
            }),
        }
    }

    /// Waits (FIFO) for the right to use one connection.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future gives up the place in the queue.
    pub(crate) async fn unit(&self) -> Unit {
        let inner = &self.inner;
        loop {
            let permit = Arc::clone(&inner.units)
                .acquire_owned()
                .await
                .unwrap_or_else(|_| unreachable!("connection semaphore is never closed"));
            // Units come down with the sockets when the process runs out of descriptors.
            if take_one(&inner.unit_debt) {
                permit.forget();
                continue;
            }
            return Unit {
                pool: Arc::clone(inner),
                permit,
            };
        }
    }

    /// Sockets open or being opened.
    pub(crate) fn open(&self) -> usize {
        self.inner.open()
    }

    /// The most sockets the pool opens now: `max_connections`, or fewer once dials were
    /// refused for a local resource.
    pub(crate) fn limit(&self) -> usize {
        self.inner.limit()
    }

    /// Connections dialed successfully since the pool was made.
    pub(crate) fn opened(&self) -> u64 {
        self.inner.opened.load(Ordering::Relaxed)
    }

    /// Units held: transfers in progress or about to start.
    pub(crate) fn in_use(&self) -> usize {
        self.inner.max - self.inner.units.available_permits()
    }
}

impl PoolInner {
    /// The socket limit now: `max`, less the permits given up.
    fn limit(&self) -> usize {
        self.max
            .saturating_sub(self.lowered.load(Ordering::Relaxed))
    }

    /// Sockets open or being opened.
    fn open(&self) -> usize {
        self.limit()
            .saturating_sub(self.sockets.available_permits())
    }

    /// After a dial refused for a local resource (its permit given up here): the limit comes
    /// down to the sockets connected, less [`DESCRIPTORS_LEFT`] for the rest of the process
    /// (at least one), the permits held now given up as they come back. Said once.
    fn lower(&self, permit: OwnedSemaphorePermit, e: &std::io::Error) {
        self.forget_socket(permit);
        let target = self
            .established
            .load(Ordering::Relaxed)
            .saturating_sub(DESCRIPTORS_LEFT)
            .max(1);
        // Loaded apart, these may be a moment apart: never below 0.
        let limit_then = self
            .limit()
            .saturating_sub(self.debt.load(Ordering::Relaxed));
        if limit_then > target {
            self.debt.fetch_add(limit_then - target, Ordering::Relaxed);
        }
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                target: "s3_ordered::conn",
                error = %e,
                max_connections = self.max,
                "out of a local resource for connections: the connection limit comes down to \
                 the connections open (Stats::connection_limit says to how many); raise the \
                 process's file descriptor limit (ulimit -n) to use more",
            );
        }
    }

    /// Gives up `permit` for good instead of using it, if descriptors are still owed to the
    /// rest of the process; else hands it back.
    fn pay_debt(&self, permit: OwnedSemaphorePermit) -> Option<OwnedSemaphorePermit> {
        if !take_one(&self.debt) {
            return Some(permit);
        }
        self.forget_socket(permit);
        None
    }

    /// Gives up a socket's place for good: the limit comes down by one, and a unit with it.
    fn forget_socket(&self, permit: OwnedSemaphorePermit) {
        permit.forget();
        self.unit_debt.fetch_add(1, Ordering::Relaxed);
        self.lowered.fetch_add(1, Ordering::Relaxed);
    }
}

/// Takes one from `count` if it is above 0; true if it did.
fn take_one(count: &AtomicUsize) -> bool {
    count
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| d.checked_sub(1))
        .is_ok()
}

/// Descriptors a pool that ran out of them leaves to the rest of the process (files written,
/// name lookups), at most, by keeping that many fewer sockets.
const DESCRIPTORS_LEFT: usize = 4;

/// True for an error that says this process or machine is out of a local resource a connection
/// needs: file descriptors (`EMFILE`, `ENFILE`) or ephemeral ports (`EADDRNOTAVAIL`).
pub(crate) fn is_local_limit(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::EADDRNOTAVAIL)
    )
}

impl std::fmt::Debug for ConnPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnPool")
            .field("max", &self.inner.max)
            .field("open", &self.open())
            .field("in_use", &self.in_use())
            .finish()
    }
}

/// An open socket: its connection, the origin it was dialed to, and its socket permit, which
/// goes back when the socket is dropped (and so closed).
struct Socket {
    origin: Origin,
    http: Http,
    /// Taken out only when the socket's place is given up for good ([`Conn::release`]).
    permit: Option<OwnedSemaphorePermit>,
    /// The pool's count of connected sockets, which this one leaves when closed.
    established: Arc<AtomicUsize>,
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.established.fetch_sub(1, Ordering::Relaxed);
        tracing::debug!(origin = %self.origin, "connection closed");
    }
}

/// The right to use one connection; see the module docs.
#[must_use = "dropping a unit gives up the connection slot"]
pub(crate) struct Unit {
    pool: Arc<PoolInner>,
    permit: OwnedSemaphorePermit,
}

impl Unit {
    /// A ready connection to `origin`: an idle one if any, else a new one.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Connect`] when dialing fails or times out, [`ErrorKind::Tls`] when the
    /// server's certificate is refused or the handshake fails.
    pub(crate) async fn connect(self, origin: &Origin) -> Result<Conn, (Unit, Error)> {
        if let Some(socket) = self.take_idle(origin) {
            return Ok(Conn {
                unit: self,
                socket,
                reused: true,
            });
        }
        self.connect_new(origin).await
    }

    /// A new connection to `origin`, whatever is idle.
    ///
    /// # Errors
    ///
    /// As [`connect`](Unit::connect).
    pub(crate) async fn connect_new(self, origin: &Origin) -> Result<Conn, (Unit, Error)> {
        // Boxed: a dial (resolver, TCP, TLS handshake) is rare and large, and would otherwise
        // make every request's future as large as itself.
        match Box::pin(self.dial(origin)).await {
            Ok(socket) => Ok(Conn {
                unit: self,
                socket,
                reused: false,
            }),
            Err(e) => Err((self, e)),
        }
    }

    /// The newest idle connection to `origin` that is still alive; dead ones are dropped.
    fn take_idle(&self, origin: &Origin) -> Option<Box<Socket>> {
        loop {
            // Only the taking under the pool's lock: the peek and the close of a dead socket
            // (system calls) happen outside it.
            let socket = {
                let mut idle = self
                    .pool
                    .idle
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let pos = idle.iter().rposition(|s| s.origin == *origin)?;
                idle.swap_remove(pos)
            };
            let mut socket = socket;
            if socket.http.idle_alive() {
                return Some(socket);
            }
        }
    }

    async fn socket_permit(&self) -> OwnedSemaphorePermit {
        loop {
            if let Ok(p) = Arc::clone(&self.pool.sockets).try_acquire_owned() {
                match self.pool.pay_debt(p) {
                    Some(p) => return p,
                    None => continue,
                }
            }
            // Every socket is taken. Busy ones belong to other unit holders, so at least one
            // socket is idle (for another origin) or being dropped: close the oldest idle one.
            let oldest = {
                let mut idle = self
                    .pool
                    .idle
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                (!idle.is_empty()).then(|| idle.remove(0))
            };
            if oldest.is_some() {
                drop(oldest);
                continue;
            }
            // A socket is being dropped elsewhere; its permit comes back in a moment.
            let acquired = tokio::time::timeout(
                Duration::from_millis(50),
                Arc::clone(&self.pool.sockets).acquire_owned(),
            )
            .await;
            if let Ok(Ok(p)) = acquired {
                if let Some(p) = self.pool.pay_debt(p) {
                    return p;
                }
            }
        }
    }

    async fn dial(&self, origin: &Origin) -> Result<Box<Socket>, Error> {
        let uri = origin.uri();
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let host = uri.host().unwrap_or_default();
        // An IPv6 literal is bracketed in a URI, not in a socket address or a server name.
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let proxy = self.pool.proxies.for_origin(https, host, port);
        let via = || match proxy {
            Some(p) => format!(" through the proxy {}:{}", p.host, p.port),
            None => String::new(),
        };
        let (to_host, to_port) = match proxy {
            Some(p) => (p.host.as_str(), p.port),
            None => (host, port),
        };
        let failed = |e: Box<dyn std::error::Error + Send + Sync>| {
            if let Some(tls) = crate::tls::classify(uri, e.as_ref()) {
                return tls.with_source(e);
            }
            Error::new(ErrorKind::Connect)
                .with_message(format!("connecting to {origin}{}", via()))
                .with_source(e)
        };
        let timed_out = || {
            Error::new(ErrorKind::Connect).with_message(format!(
                "connecting to {origin}{} timed out after {:?}",
                via(),
                self.pool.connect_timeout
            ))
        };
        // The socket; while this process is out of descriptors (or ports), once one of the
        // pool's own sockets closes.
        let (permit, deadline, mut tcp) = loop {
            let permit = self.socket_permit().await;
            let deadline = tokio::time::Instant::now() + self.pool.connect_timeout;
            let tcp = connect_tcp(to_host, to_port, self.pool.connect_timeout);
            match tokio::time::timeout_at(deadline, tcp).await {
                Ok(Ok(tcp)) => break (permit, deadline, tcp),
                Ok(Err(e)) if is_local_limit(&e) => {
                    if self.pool.established.load(Ordering::Relaxed) == 0 {
                        return Err(Error::new(ErrorKind::Connect)
                            .with_message(format!(
                                "connecting to {origin}{}: no connection can be opened, and \
                                 none is open to wait for; raise the process's file \
                                 descriptor limit (ulimit -n)",
                                via()
                            ))
                            .with_source(e));
                    }
                    self.pool.lower(permit, &e);
                }
                Ok(Err(e)) => return Err(failed(e.into())),
                Err(_) => return Err(timed_out()),
            }
        };
        let handshake = async {
            tcp.set_nodelay(true)?;
            if https {
                if let Some(p) = proxy {
                    p.tunnel(&mut tcp, host, port).await?;
                }
            }
            let tls = match https {
                true => Some((
                    Arc::clone(&self.pool.tls),
                    ServerName::try_from(host.to_owned())?,
                )),
                false => None,
            };
            let hyper = self.pool.transport == HttpTransport::Hyper;
            let http = Http::handshake(tcp, tls, hyper).await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(http)
        };
        let mut http = match tokio::time::timeout_at(deadline, handshake).await {
            Ok(Ok(http)) => http,
            Ok(Err(e)) => return Err(failed(e)),
            Err(_) => return Err(timed_out()),
        };
        self.pool.opened.fetch_add(1, Ordering::Relaxed);
        let open = self.pool.open();
        tracing::debug!(%origin, open, "connection opened");
        if let (Some(p), false) = (proxy, https) {
            // Requests of a plain http origin go to the proxy in absolute form.
            http.forward_through(
                format!("http://{}", origin_authority(uri)),
                p.authorization.clone(),
            );
        }
        self.pool.established.fetch_add(1, Ordering::Relaxed);
        Ok(Box::new(Socket {
            origin: origin.clone(),
            http,
            permit: Some(permit),
            established: Arc::clone(&self.pool.established),
        }))
    }
}

/// A TCP connection to `host:port`: an IP address as given, a name through the system's
/// resolver, its addresses tried in turn. When a name has several, each gets an equal share of
/// `timeout` (at least [`MIN_ADDRESS_TIMEOUT`]), so an unreachable first address cannot take
/// the whole connect timeout.
async fn connect_tcp(host: &str, port: u16, timeout: Duration) -> std::io::Result<TcpStream> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return TcpStream::connect((ip, port)).await;
    }
    let addrs: Vec<_> = tokio::net::lookup_host((host, port)).await?.collect();
    let share = (timeout / addrs.len().max(1) as u32).max(MIN_ADDRESS_TIMEOUT);
    let mut last = None;
    for addr in addrs {
        match tokio::time::timeout(share, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) => last = Some(e),
            Err(_) => {
                last = Some(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connecting to {addr} timed out after {share:?}"),
                ))
            }
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{host} resolves to no address"),
        )
    }))
}

/// The authority of `uri` as an absolute-form request names it.
fn origin_authority(uri: &http::Uri) -> &str {
    uri.authority().map_or("", |a| a.as_str())
}

/// The least time one of several addresses of a name gets to connect.
const MIN_ADDRESS_TIMEOUT: Duration = Duration::from_millis(500);

/// A connection held for one transfer, with its unit; it dereferences to the
/// [`http1::Connection`](crate::http1::Connection) to exchange on.
pub(crate) struct Conn {
    // Dropped first: the socket is closed (its permit back) before the unit frees.
    socket: Box<Socket>,
    unit: Unit,
    /// The connection carried an exchange before this one.
    reused: bool,
}

impl Conn {
    /// Whether the connection was taken from the idle list, not dialed for this request.
    pub(crate) fn reused(&self) -> bool {
        self.reused
    }

    /// Closes the connection and keeps its unit, to send the request again on a new one.
    pub(crate) fn close(self) -> Unit {
        let Conn { socket, unit, .. } = self;
        drop(socket);
        unit
    }

    /// Returns the connection to the idle list if its exchange ended cleanly (else closes it),
    /// and frees its unit. A pool that owes descriptors to the rest of the process closes it
    /// and gives up its place instead.
    pub(crate) fn release(self) {
        let Conn {
            unit, mut socket, ..
        } = self;
        if take_one(&unit.pool.debt) {
            if let Some(permit) = socket.permit.take() {
                unit.pool.forget_socket(permit);
            }
            drop(socket);
        } else if socket.http.reusable() {
            let mut idle = unit
                .pool
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            idle.push(socket);
        } else {
            drop(socket);
        }
        drop(unit.permit);
    }
}

impl Deref for Conn {
    type Target = Http;

    fn deref(&self) -> &Http {
        &self.socket.http
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Http {
        &mut self.socket.http
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_limits_are_told_from_a_server_s_refusal() {
        for errno in [libc::EMFILE, libc::ENFILE, libc::EADDRNOTAVAIL] {
            assert!(is_local_limit(&std::io::Error::from_raw_os_error(errno)));
        }
        for errno in [libc::ECONNREFUSED, libc::ETIMEDOUT, libc::ENETUNREACH] {
            assert!(!is_local_limit(&std::io::Error::from_raw_os_error(errno)));
        }
        assert!(!is_local_limit(&std::io::Error::other("no code")));
    }

    #[tokio::test]
    async fn names_and_addresses_both_connect() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let timeout = Duration::from_secs(5);
        for host in ["127.0.0.1", "localhost"] {
            let s = connect_tcp(host, port, timeout).await.unwrap();
            assert_eq!(s.peer_addr().unwrap().port(), port, "{host}");
        }
        drop(listener);
        let e = connect_tcp("127.0.0.1", port, timeout).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    }
}
