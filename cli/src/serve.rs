//! `s3-ordered serve`: an S3-compatible server over a local directory (s3s-fs), with SigV4
//! checked, over http or (with a certificate and key) https, for trying the tool, for tests and
//! for local pipelines. Each top-level directory of
//! the root is a bucket and each file below it an object. The demo runs the same server.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use hyper_util::rt::TokioIo;

/// Options of `s3-ordered serve`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Directory to serve: each top-level directory is a bucket
    #[arg(long, value_name = "DIR")]
    root: PathBuf,
    /// Address to listen on (port 0 picks a free one)
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9000")]
    addr: SocketAddr,
    /// Access key clients must sign with [default: $AWS_ACCESS_KEY_ID]
    #[arg(long, value_name = "KEY")]
    access_key: Option<String>,
    /// Secret key clients must sign with [default: $AWS_SECRET_ACCESS_KEY]
    #[arg(long, value_name = "SECRET")]
    secret_key: Option<String>,
    /// Serve https with this certificate chain (PEM; with --tls-key)
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM)
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

/// The server's TLS configuration from a PEM certificate chain and key.
fn tls_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading the certificates in {}", cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "{} holds no PEM certificate",
        cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the private key in {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the certificate and key do not make a server configuration")?;
    Ok(Arc::new(config))
}

pub(crate) async fn run(args: Args, env: &crate::opts::Env) -> anyhow::Result<ExitCode> {
    let access = args
        .access_key
        .or_else(|| env.get("AWS_ACCESS_KEY_ID").map(str::to_owned));
    let secret = args
        .secret_key
        .or_else(|| env.get("AWS_SECRET_ACCESS_KEY").map(str::to_owned));
    let (Some(access), Some(secret)) = (access, secret) else {
        anyhow::bail!(
            "the server needs the keys clients sign with: pass --access-key and --secret-key, \
             or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        );
    };
    anyhow::ensure!(
        args.root.is_dir(),
        "--root {} is not a directory",
        args.root.display()
    );
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls_config(cert, key)?),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let addr = start(&args.root, args.addr, &access, &secret, tls).await?;
    // One line on stdout, flushed, so a script or test can read the address.
    println!("serving {} at {scheme}://{addr}", args.root.display());
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    Ok(ExitCode::SUCCESS)
}

/// Starts the server on `addr` in the background (https with `tls`); returns the address it
/// listens on.
pub(crate) async fn start(
    root: &Path,
    addr: SocketAddr,
    access_key: &str,
    secret_key: &str,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> anyhow::Result<SocketAddr> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let fs = s3s_fs::FileSystem::new(root)
        .map_err(|e| anyhow::anyhow!("opening {} to serve: {e:?}", root.display()))?;
    let service = {
        let mut b = s3s::service::S3ServiceBuilder::new(fs);
        b.set_auth(s3s::auth::SimpleAuth::from_single(access_key, secret_key));
        b.build()
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let socket = match listener.accept().await {
                Ok((socket, _)) => socket,
                Err(_) => {
                    // Out of descriptors, say: let some close instead of spinning.
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            // Without it every small response waits on the peer's delayed ACK.
            let _ = socket.set_nodelay(true);
            let service = service.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let service = service.clone();
                    async move {
                        let resp = hyper::service::Service::call(&service, req).await;
                        Ok::<_, Infallible>(resp.unwrap_or_else(|e| {
                            let mut r = hyper::Response::new(s3s::Body::from(format!("{e:?}")));
                            *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                            r
                        }))
                    }
                });
                let http = hyper::server::conn::http1::Builder::new();
                let _ = match acceptor {
                    None => http.serve_connection(TokioIo::new(socket), svc).await,
                    Some(acceptor) => {
                        let Ok(tls) = acceptor.accept(socket).await else {
                            return;
                        };
                        http.serve_connection(TokioIo::new(tls), svc).await
                    }
                };
            });
        }
    });
    Ok(addr)
}
