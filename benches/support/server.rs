//! A minimal in-process object server for benchmarks: every GET gets the same in-memory payload
//! (zero-copy `Bytes` clones), so the client is what is measured. Loopback only, `TCP_NODELAY`.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// Starts the server on its own runtime thread (one core's worth) and returns its address.
pub fn start(object_size: usize) -> SocketAddr {
    let payload = Bytes::from((0..object_size).map(|i| (i * 7) as u8).collect::<Vec<u8>>());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("server runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(listener.local_addr().expect("addr"))
                .expect("send addr");
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let _ = socket.set_nodelay(true);
                let payload = payload.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |_req| {
                        let body = Full::new(payload.clone());
                        async move { Ok::<_, Infallible>(hyper::Response::new(body)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
    });
    rx.recv().expect("server address")
}
