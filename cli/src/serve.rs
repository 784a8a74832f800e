//! `s3-ordered serve`: an S3-compatible server over a local directory (s3s-fs), with SigV4
//! checked, for trying the tool, for tests and for local pipelines. Each top-level directory of
//! the root is a bucket and each file below it an object. The demo runs the same server.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

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
    let addr = start(&args.root, args.addr, &access, &secret).await?;
    // One line on stdout, flushed, so a script or test can read the address.
    println!("serving {} at http://{addr}", args.root.display());
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    Ok(ExitCode::SUCCESS)
}

/// Starts the server on `addr` in the background; returns the address it listens on.
pub(crate) async fn start(
    root: &Path,
    addr: SocketAddr,
    access_key: &str,
    secret_key: &str,
) -> anyhow::Result<SocketAddr> {
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
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}
