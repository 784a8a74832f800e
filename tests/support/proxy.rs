//! An HTTP proxy stand-in on 127.0.0.1: `CONNECT host:port` opens a tunnel (spliced both
//! ways), and an absolute-form request (`GET http://host:port/path`) is passed on to its origin
//! in origin form, with the rest of the connection spliced after it (a client sends one
//! origin's requests on a connection). It counts tunnels, forwarded connections and the most
//! connections open at once, and keeps every `Proxy-Authorization` it saw. [`refusing`] is a
//! proxy that goes nowhere: it records each request line and answers 403.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
pub struct ProxyCounts {
    pub connects: AtomicUsize,
    pub forwards: AtomicUsize,
    pub open: AtomicUsize,
    pub max_open: AtomicUsize,
    pub authorizations: Mutex<Vec<String>>,
    pub targets: Mutex<Vec<String>>,
}

pub struct ProxyServer {
    pub addr: SocketAddr,
    pub counts: Arc<ProxyCounts>,
}

impl ProxyServer {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let counts = Arc::new(ProxyCounts::default());
        let c = counts.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let c = c.clone();
                tokio::spawn(async move {
                    let open = c.open.fetch_add(1, Ordering::SeqCst) + 1;
                    c.max_open.fetch_max(open, Ordering::SeqCst);
                    let _ = handle(socket, &c).await;
                    c.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        ProxyServer { addr, counts }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn connects(&self) -> usize {
        self.counts.connects.load(Ordering::SeqCst)
    }

    pub fn forwards(&self) -> usize {
        self.counts.forwards.load(Ordering::SeqCst)
    }

    pub fn max_open(&self) -> usize {
        self.counts.max_open.load(Ordering::SeqCst)
    }
}

/// A proxy that records the request line of each connection (`CONNECT host:port HTTP/1.1`)
/// and refuses it with 403: nothing leaves the machine. Its address and the lines seen.
pub async fn refusing() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&lines);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]);
                let first = head.lines().next().unwrap_or_default().to_owned();
                seen.lock().unwrap().push(first);
                let _ = s
                    .write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
                    .await;
            });
        }
    });
    (addr, lines)
}

async fn handle(mut client: TcpStream, c: &ProxyCounts) -> std::io::Result<()> {
    let _ = client.set_nodelay(true);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_owned();
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("proxy-authorization") {
                c.authorizations
                    .lock()
                    .unwrap()
                    .push(value.trim().to_owned());
            }
        }
    }
    let mut parts = request_line.split(' ');
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    c.targets.lock().unwrap().push(format!("{method} {target}"));
    if method == "CONNECT" {
        c.connects.fetch_add(1, Ordering::SeqCst);
        let mut upstream = TcpStream::connect(target).await?;
        let _ = upstream.set_nodelay(true);
        client
            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await?;
        upstream.write_all(&buf[end..]).await?;
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
        return Ok(());
    }
    let Some(rest) = target.strip_prefix("http://") else {
        client
            .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            .await?;
        return Ok(());
    };
    c.forwards.fetch_add(1, Ordering::SeqCst);
    let authority = rest.split('/').next().unwrap_or_default().to_owned();
    let upstream = TcpStream::connect(&authority).await?;
    let _ = upstream.set_nodelay(true);
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_upstream, mut to_upstream) = upstream.into_split();
    let up = async {
        // Every request head (the one read above, and each that follows on this connection,
        // all for the same origin) goes on in origin form, without the proxy's own field.
        let mut pending = buf;
        loop {
            while let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = pending.drain(..at + 4).collect();
                let head = origin_form(&String::from_utf8_lossy(&head), &authority);
                to_upstream.write_all(head.as_bytes()).await?;
            }
            let n = from_client.read(&mut chunk).await?;
            if n == 0 {
                return to_upstream.shutdown().await;
            }
            pending.extend_from_slice(&chunk[..n]);
        }
    };
    let down = tokio::io::copy(&mut from_upstream, &mut to_client);
    let _ = tokio::join!(up, down);
    Ok(())
}

/// An absolute-form request head for `authority` in origin form, without
/// `Proxy-Authorization`.
fn origin_form(head: &str, authority: &str) -> String {
    head.replacen(&format!("http://{authority}"), "", 1)
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("proxy-authorization:"))
        .collect::<Vec<_>>()
        .join("\r\n")
}
