//! [`TlsStream`]: a client TLS connection over TCP on rustls's unbuffered API, with buffers of
//! this client's choosing.
//!
//! rustls's buffered connection reads the socket 4 KiB at a time into a buffer that it grows,
//! zeroes and shrinks again around every record, so a 4 KiB object over https costs two reads
//! and a reallocation. Here the ciphertext goes into one buffer of [`INCOMING`] bytes, allocated
//! once per connection and filled by reads as large as the socket offers; records are decrypted
//! from it one at a time and their plaintext copied straight to the caller. Plaintext that does
//! not fit the caller's buffer waits in a second buffer for the next read.
//!
//! The handshake (including what a TLS 1.3 server sends after it: session tickets, key updates)
//! is rustls's state machine; this type only moves bytes between it and the socket. Session
//! resumption, verification and ALPN come from the `ClientConfig` as usual.

use std::io;
use std::sync::Arc;

use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::ServerName;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The ciphertext buffer: four full records, and the largest handshake flight rustls accepts.
const INCOMING: usize = 64 << 10;

/// The most ciphertext held while a handshake message spans records (rustls bounds handshake
/// messages at 64 KiB).
const MAX_INCOMING: usize = INCOMING + (16 << 10);

/// A TLS client connection; see the module docs.
pub(crate) struct TlsStream {
    tcp: TcpStream,
    conn: UnbufferedClientConnection,
    /// Ciphertext: `incoming[start..used]` is not processed yet.
    incoming: Vec<u8>,
    start: usize,
    used: usize,
    /// Encoded records waiting to be written.
    outgoing: Vec<u8>,
    /// Plaintext that did not fit the last read: `plain[plain_at..]`.
    plain: Vec<u8>,
    plain_at: usize,
    /// The server sent close_notify: no more data will come.
    closed: bool,
}

impl TlsStream {
    /// Performs the handshake with `name` over `tcp`.
    ///
    /// # Errors
    ///
    /// The rustls error (certificate, protocol) inside an [`io::Error`], or the socket's error.
    pub(crate) async fn connect(
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
        tcp: TcpStream,
    ) -> io::Result<Self> {
        let conn = UnbufferedClientConnection::new(config, name).map_err(tls_error)?;
        let mut s = TlsStream {
            tcp,
            conn,
            incoming: vec![0; INCOMING],
            start: 0,
            used: 0,
            outgoing: Vec::with_capacity(4 << 10),
            plain: Vec::new(),
            plain_at: 0,
            closed: false,
        };
        // Until the handshake is over and its last flight (the client's Finished, which rustls
        // counts as the end of the handshake once it is encoded) is on the wire.
        while s.conn.is_handshaking() || !s.outgoing.is_empty() {
            s.advance(None, None).await?;
        }
        Ok(s)
    }

    /// The TCP socket under the connection.
    pub(crate) fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Whether plaintext already arrived that no read has taken.
    pub(crate) fn has_plaintext(&self) -> bool {
        self.plain_at < self.plain.len()
    }

    /// Whether any byte arrived that no read has taken: plaintext, or ciphertext not yet
    /// decrypted (a whole record or part of one).
    pub(crate) fn has_unread(&self) -> bool {
        self.has_plaintext() || self.start < self.used
    }

    /// Reads plaintext into `dst` (not empty): how many bytes, 0 once the server closed.
    ///
    /// # Errors
    ///
    /// The socket's error; [`io::ErrorKind::UnexpectedEof`] when the socket closes without
    /// close_notify; [`io::ErrorKind::InvalidData`] with the rustls error for a bad record or an
    /// alert.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a read dropped midway may leave the connection unusable.
    pub(crate) async fn read(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.has_plaintext() {
                let n = dst.len().min(self.plain.len() - self.plain_at);
                dst[..n].copy_from_slice(&self.plain[self.plain_at..self.plain_at + n]);
                self.plain_at += n;
                return Ok(n);
            }
            if self.closed {
                return Ok(0);
            }
            if let Progress::Read(n) = self.advance(Some(&mut *dst), None).await? {
                return Ok(n);
            }
        }
    }

    /// Encrypts `data` and writes it all.
    ///
    /// # Errors
    ///
    /// The socket's error, [`io::ErrorKind::BrokenPipe`] once the server closed, or the rustls
    /// error inside an [`io::Error`].
    pub(crate) async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        loop {
            if self.closed {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the server closed the TLS connection",
                ));
            }
            if let Progress::Wrote = self.advance(None, Some(data)).await? {
                return Ok(());
            }
        }
    }

    /// Moves the connection one state on: decrypts a record (copying its plaintext into `dst`,
    /// when given, and keeping the rest), encrypts and writes `data` (when given and allowed),
    /// writes what the handshake wants sent, or reads more ciphertext.
    async fn advance(
        &mut self,
        dst: Option<&mut [u8]>,
        data: Option<&[u8]>,
    ) -> io::Result<Progress> {
        let UnbufferedStatus { discard, state } = self
            .conn
            .process_tls_records(&mut self.incoming[self.start..self.used]);
        let progress = match state.map_err(tls_error)? {
            ConnectionState::ReadTraffic(mut traffic) => {
                let mut progress = Progress::Continue;
                let mut dst = dst;
                while let Some(record) = traffic.next_record() {
                    let payload = record.map_err(tls_error)?.payload;
                    let n = match dst.take() {
                        Some(d) => {
                            let n = d.len().min(payload.len());
                            d[..n].copy_from_slice(&payload[..n]);
                            if n > 0 {
                                progress = Progress::Read(n);
                            }
                            n
                        }
                        None => 0,
                    };
                    keep(&mut self.plain, &mut self.plain_at, &payload[n..]);
                }
                progress
            }
            ConnectionState::WriteTraffic(mut traffic) => match data {
                Some(data) => {
                    self.outgoing.clear();
                    self.outgoing.resize(data.len() + 1024, 0);
                    let n = match traffic.encrypt(data, &mut self.outgoing) {
                        Err(EncryptError::InsufficientSize(need)) => {
                            self.outgoing.resize(need.required_size, 0);
                            traffic.encrypt(data, &mut self.outgoing)
                        }
                        other => other,
                    }
                    .map_err(|e| io::Error::other(e.to_string()))?;
                    self.tcp.write_all(&self.outgoing[..n]).await?;
                    self.outgoing.clear();
                    Progress::Wrote
                }
                // Nothing to write: a read waits for the server's next record; for the
                // handshake (neither reading nor writing), see below.
                None if dst.is_some() => Progress::Fill,
                None => Progress::Idle,
            },
            ConnectionState::EncodeTlsData(mut encode) => {
                let at = self.outgoing.len();
                self.outgoing.resize(at + 4096, 0);
                let n = match encode.encode(&mut self.outgoing[at..]) {
                    Err(EncodeError::InsufficientSize(need)) => {
                        self.outgoing.resize(at + need.required_size, 0);
                        encode.encode(&mut self.outgoing[at..])
                    }
                    other => other,
                }
                .map_err(|e| io::Error::other(e.to_string()))?;
                self.outgoing.truncate(at + n);
                Progress::Continue
            }
            ConnectionState::TransmitTlsData(transmit) => {
                self.tcp.write_all(&self.outgoing).await?;
                self.outgoing.clear();
                transmit.done();
                Progress::Continue
            }
            ConnectionState::PeerClosed | ConnectionState::Closed => {
                self.closed = true;
                Progress::Continue
            }
            // Blocked in the handshake: more ciphertext is needed.
            _ => Progress::Fill,
        };
        self.start += discard;
        // Room to write during the handshake: it is over (TLS 1.2 ends with the server's
        // flight), unless rustls lets data go before its end, and then more must be read.
        let progress = match progress {
            Progress::Idle if self.conn.is_handshaking() => Progress::Fill,
            Progress::Idle => Progress::Continue,
            other => other,
        };
        if let Progress::Fill = progress {
            if self.fill().await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection without close_notify",
                ));
            }
            return Ok(Progress::Continue);
        }
        Ok(progress)
    }

    /// Reads ciphertext from the socket after what is buffered; the bytes read, 0 at EOF.
    async fn fill(&mut self) -> io::Result<usize> {
        if self.start == self.used {
            (self.start, self.used) = (0, 0);
        } else if self.start > 0 && self.used == self.incoming.len() {
            self.incoming.copy_within(self.start..self.used, 0);
            (self.start, self.used) = (0, self.used - self.start);
        }
        if self.used == self.incoming.len() {
            // A handshake message spanning more records than the buffer holds.
            if self.incoming.len() >= MAX_INCOMING {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a TLS message is larger than the buffer",
                ));
            }
            self.incoming.resize(MAX_INCOMING, 0);
        }
        let n = self.tcp.read(&mut self.incoming[self.used..]).await?;
        self.used += n;
        Ok(n)
    }
}

/// What one [`TlsStream::advance`] did.
enum Progress {
    /// Plaintext was copied to the caller.
    Read(usize),
    /// The caller's data was sent.
    Wrote,
    /// Something else happened; go on.
    Continue,
    /// More ciphertext is needed (internal).
    Fill,
    /// Room to write and nothing to write (internal).
    Idle,
}

/// Keeps plaintext for the next read in `plain[*at..]`.
fn keep(plain: &mut Vec<u8>, at: &mut usize, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    if *at == plain.len() {
        plain.clear();
        *at = 0;
    }
    plain.extend_from_slice(bytes);
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

// The certificates of the integration tests, shared (their items are `pub` for those).
#[cfg(test)]
#[path = "../../tests/support/certs.rs"]
#[allow(dead_code, unreachable_pub)]
mod test_certs;

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject as _;
    use tokio::net::TcpListener;

    use super::test_certs as certs;

    /// A TLS server that runs `script` on its side of one connection, and a client connected
    /// to it.
    async fn pair<F, Fut>(script: F) -> (TlsStream, tokio::task::JoinHandle<()>)
    where
        F: FnOnce(tokio_rustls::server::TlsStream<TcpStream>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        pair_with(None, script).await
    }

    /// [`pair`] with the server speaking only `version` (when given).
    async fn pair_with<F, Fut>(
        version: Option<&'static rustls::SupportedProtocolVersion>,
        script: F,
    ) -> (TlsStream, tokio::task::JoinHandle<()>)
    where
        F: FnOnce(tokio_rustls::server::TlsStream<TcpStream>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let ca = certs::Ca::new();
        let server_config = match version {
            None => ca.server_config(certs::Leaf::Good),
            Some(version) => {
                let (cert, key) = ca.leaf_pem(certs::Leaf::Good);
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let config = rustls::ServerConfig::builder_with_provider(provider)
                    .with_protocol_versions(&[version])
                    .unwrap()
                    .with_no_client_auth()
                    .with_single_cert(
                        vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                        PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
                    )
                    .unwrap();
                Arc::new(config)
            }
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            script(acceptor.accept(tcp).await.unwrap()).await;
        });
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap())
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let client = TlsStream::connect(Arc::new(config), name, tcp)
            .await
            .unwrap();
        (client, server)
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    async fn read_to_end(s: &mut TlsStream, chunk: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0; chunk];
        loop {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[tokio::test]
    async fn records_arrive_whole_in_any_read_size_until_close_notify() {
        for chunk in [1, 7, 4096, 1 << 20] {
            let (mut client, server) = pair(|mut s| async move {
                for n in [100, 40_000, 5, 70_000] {
                    s.write_all(&data(n)).await.unwrap();
                }
                s.shutdown().await.unwrap(); // close_notify
            })
            .await;
            let got = read_to_end(&mut client, chunk).await.unwrap();
            let want: Vec<u8> = [100, 40_000, 5, 70_000]
                .iter()
                .flat_map(|&n| data(n))
                .collect();
            assert_eq!(got.len(), want.len(), "chunk {chunk}");
            assert!(got == want, "chunk {chunk}");
            assert_eq!(client.read(&mut [0; 8]).await.unwrap(), 0);
            server.await.unwrap();
        }
    }

    #[tokio::test]
    async fn tls_1_2_servers_are_spoken_to_as_well() {
        let (mut client, server) = pair_with(Some(&rustls::version::TLS12), |mut s| async move {
            let mut req = [0u8; 4];
            s.read_exact(&mut req).await.unwrap();
            s.write_all(&data(50_000)).await.unwrap();
            s.shutdown().await.unwrap();
        })
        .await;
        assert_eq!(
            client.conn.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_2)
        );
        client.write_all(b"ping").await.unwrap();
        assert!(read_to_end(&mut client, 4096).await.unwrap() == data(50_000));
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_close_without_close_notify_is_an_unexpected_eof() {
        let (mut client, server) = pair(|mut s| async move {
            s.write_all(b"partial").await.unwrap();
            s.flush().await.unwrap();
            // Dropped without shutdown: the TCP connection ends, no close_notify.
        })
        .await;
        server.await.unwrap();
        let mut buf = [0; 64];
        assert_eq!(client.read(&mut buf).await.unwrap(), 7);
        let e = client.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn exchanges_go_on_across_a_key_update_from_the_server() {
        let (mut client, server) = pair(|mut s| async move {
            let mut req = [0u8; 4];
            for round in 0..3u8 {
                s.read_exact(&mut req).await.unwrap();
                assert_eq!(&req, b"ping");
                if round == 1 {
                    s.get_mut().1.refresh_traffic_keys().unwrap();
                }
                s.write_all(&[round; 3000]).await.unwrap();
                s.flush().await.unwrap();
            }
        })
        .await;
        for round in 0..3u8 {
            client.write_all(b"ping").await.unwrap();
            let mut got = vec![0; 3000];
            let mut at = 0;
            while at < got.len() {
                let n = client.read(&mut got[at..]).await.unwrap();
                assert!(n > 0);
                at += n;
            }
            assert!(got.iter().all(|&b| b == round));
        }
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_corrupted_record_is_invalid_data() {
        // A plain TCP peer that finishes no handshake: bytes that are not TLS.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let _ = tcp.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        });
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let Err(e) = TlsStream::connect(Arc::new(config), name, tcp).await else {
            panic!("a handshake with a plain HTTP server succeeded");
        };
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(
            e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()),
            "{e}"
        );
    }
}
