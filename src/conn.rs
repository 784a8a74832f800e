//! [`ConnPool`]: the client's HTTP/1.1 connections, at most `max_connections` sockets at any
//! instant, counted rather than hoped for.
//!
//! Two semaphores of `max_connections` permits each do the accounting:
//!
//! * a **unit** is the right to use one connection for one transfer. Requests queue for units
//!   FIFO, so no request starves; a unit is held until the response body is fully read.
//! * a **socket** permit is held by each open socket — idle, busy or still closing — and is
//!   released by the connection's background task only once the socket is closed.
//!
//! A unit holder reuses an idle connection to the same origin when one is ready; otherwise it
//! takes a socket permit and dials (TCP with `TCP_NODELAY`, then rustls for https). If every
//! socket permit is held by idle connections to other origins, the oldest is closed to make room.
//! A connection goes back to the idle list only after a complete, well-formed exchange; any
//! error drops it.

use std::future::poll_fn;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_service::Service;

use crate::error::{Error, ErrorKind};

type Sender = SendRequest<Empty<Bytes>>;

/// The client's connection pool.
#[derive(Clone)]
pub(crate) struct ConnPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    units: Arc<Semaphore>,
    sockets: Arc<Semaphore>,
    max: usize,
    opened: AtomicU64,
    idle: Mutex<Vec<Idle>>,
    connector: HttpsConnector<HttpConnector>,
    connect_timeout: Duration,
}

struct Idle {
    origin: http::Uri,
    sender: Sender,
}

impl ConnPool {
    pub(crate) fn new(max: usize, connect_timeout: Duration, tls: &rustls::ClientConfig) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_connect_timeout(Some(connect_timeout));
        // ALPN is the connector's to set (`http/1.1`, below); it refuses a preset list.
        let mut tls = tls.clone();
        tls.alpn_protocols.clear();
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        ConnPool {
            inner: Arc::new(PoolInner {
                units: Arc::new(Semaphore::new(max)),
                sockets: Arc::new(Semaphore::new(max)),
                max,
                opened: AtomicU64::new(0),
                idle: Mutex::new(Vec::new()),
                connector,
                connect_timeout,
            }),
        }
    }

    /// Waits (FIFO) for the right to use one connection.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future gives up the place in the queue.
    pub(crate) async fn unit(&self) -> Unit {
        let permit = Arc::clone(&self.inner.units)
            .acquire_owned()
            .await
            .unwrap_or_else(|_| unreachable!("connection semaphore is never closed"));
        Unit {
            pool: Arc::clone(&self.inner),
            permit,
        }
    }

    /// Sockets open or being opened.
    pub(crate) fn open(&self) -> usize {
        self.inner.max - self.inner.sockets.available_permits()
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

impl std::fmt::Debug for ConnPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnPool")
            .field("max", &self.inner.max)
            .field("open", &self.open())
            .field("in_use", &self.in_use())
            .finish()
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
    /// [`ErrorKind::Connect`] when dialing fails or times out.
    pub(crate) async fn connect(self, origin: &http::Uri) -> Result<Conn, (Unit, Error)> {
        while let Some(mut sender) = self.take_idle(origin) {
            if poll_fn(|cx| sender.poll_ready(cx)).await.is_ok() {
                return Ok(Conn {
                    unit: self,
                    origin: origin.clone(),
                    sender,
                });
            }
        }
        match self.dial(origin).await {
            Ok(sender) => Ok(Conn {
                unit: self,
                origin: origin.clone(),
                sender,
            }),
            Err(e) => Err((self, e)),
        }
    }

    fn take_idle(&self, origin: &http::Uri) -> Option<Sender> {
        let mut idle = self
            .pool
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        idle.retain(|c| !c.sender.is_closed());
        let pos = idle.iter().rposition(|c| c.origin == *origin)?;
        Some(idle.swap_remove(pos).sender)
    }

    async fn socket_permit(&self) -> OwnedSemaphorePermit {
        loop {
            if let Ok(p) = Arc::clone(&self.pool.sockets).try_acquire_owned() {
                return p;
            }
            // Every socket is taken. Busy ones belong to other unit holders, so at least one
            // socket is idle (for another origin) or closing: close the oldest idle one.
            {
                let mut idle = self
                    .pool
                    .idle
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if !idle.is_empty() {
                    idle.remove(0);
                }
            }
            // Wait for a closing socket to finish (its task releases the permit).
            let acquired = tokio::time::timeout(
                Duration::from_millis(50),
                Arc::clone(&self.pool.sockets).acquire_owned(),
            )
            .await;
            if let Ok(Ok(p)) = acquired {
                return p;
            }
        }
    }

    async fn dial(&self, origin: &http::Uri) -> Result<Sender, Error> {
        let socket = self.socket_permit().await;
        let connect = async {
            let mut connector = self.pool.connector.clone();
            poll_fn(|cx| connector.poll_ready(cx)).await?;
            let io = connector.call(origin.clone()).await?;
            let (sender, conn) = http1::Builder::new().handshake(io).await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((sender, conn))
        };
        let (sender, conn) = match tokio::time::timeout(self.pool.connect_timeout, connect).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => {
                if let Some(tls) = crate::tls::classify(origin, e.as_ref()) {
                    return Err(tls.with_source(e));
                }
                return Err(Error::new(ErrorKind::Connect)
                    .with_message(format!("connecting to {origin}"))
                    .with_source(e));
            }
            Err(_) => {
                return Err(Error::new(ErrorKind::Connect).with_message(format!(
                    "connecting to {origin} timed out after {:?}",
                    self.pool.connect_timeout
                )))
            }
        };
        self.pool.opened.fetch_add(1, Ordering::Relaxed);
        let open = self.pool.max - self.pool.sockets.available_permits();
        tracing::debug!(%origin, open, "connection opened");
        let origin = origin.clone();
        tokio::spawn(async move {
            // Resolves when the socket is closed: by the peer, by an error, or because every
            // sender was dropped. Only then is the socket's permit released.
            match conn.await {
                Ok(()) => tracing::debug!(%origin, "connection closed"),
                Err(e) => tracing::debug!(%origin, error = %e, "connection closed"),
            }
            drop(socket);
        });
        Ok(sender)
    }
}

/// A ready connection, held for one transfer.
pub(crate) struct Conn {
    unit: Unit,
    origin: http::Uri,
    sender: Sender,
}

impl Conn {
    /// Sends `req` and waits for the response head.
    pub(crate) fn send(
        &mut self,
        req: http::Request<Empty<Bytes>>,
    ) -> impl std::future::Future<Output = Result<http::Response<hyper::body::Incoming>, hyper::Error>>
    {
        self.sender.send_request(req)
    }

    /// Returns the connection to the idle list after a complete exchange, and frees its unit.
    pub(crate) fn release(self) {
        let Conn {
            unit,
            origin,
            sender,
        } = self;
        if !sender.is_closed() {
            let mut idle = unit
                .pool
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            idle.push(Idle { origin, sender });
        }
        drop(unit.permit);
    }
}
