//! Proxies: https endpoints through a `CONNECT` tunnel (TLS end to end), http endpoints as
//! absolute-form requests, `NO_PROXY` rules, the proxy's credentials, and sockets to the proxy
//! counted under `max_connections`. The proxy is a stand-in on 127.0.0.1 that counts.

use futures::StreamExt;
use s3_ordered::{AwsEnv, AwsSettings, ObjectRef};

use crate::proxy_server::ProxyServer;
use crate::support::{content, S3Server};
use crate::tls_server::{Ca, Leaf, TlsServer, SIZE};

const CONNECTIONS: usize = 4;

async fn fetch_checked(client: &s3_ordered::Client, n: usize, size: usize) {
    let keys: Vec<ObjectRef> = (0..n)
        .map(|i| ObjectRef::new(format!("k{i}"), size as u64))
        .collect();
    let mut results = client.get_all("bkt", keys);
    let mut i = 0;
    while let Some(r) = results.next().await {
        let o = r.unwrap_or_else(|e| panic!("{}", e.with_causes()));
        assert!(o.body.to_vec() == content(&format!("k{i}"), size), "k{i}");
        i += 1;
    }
    assert_eq!(i, n);
}

async fn s3_with_objects(n: usize) -> S3Server {
    let s3 = S3Server::start().await;
    for i in 0..n {
        let k = format!("k{i}");
        s3.put("bkt", &k, &content(&k, 2000));
    }
    s3
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_endpoints_go_through_the_proxy_in_absolute_form() {
    let s3 = s3_with_objects(60).await;
    let proxy = ProxyServer::start().await;
    let with_auth = format!("http://pipeline:s%40cret@{}", proxy.addr);
    let client = s3
        .builder()
        .http_proxy(with_auth)
        .max_connections(CONNECTIONS)
        .build()
        .unwrap();
    fetch_checked(&client, 60, 2000).await;
    let forwarded = proxy.forwards();
    assert!(
        (1..=CONNECTIONS).contains(&forwarded),
        "{forwarded} connections"
    );
    assert!(
        proxy.max_open() <= CONNECTIONS,
        "{} at once",
        proxy.max_open()
    );
    assert_eq!(proxy.connects(), 0);
    // base64("pipeline:s@cret"), on every request; the S3 server never sees it.
    let auths = proxy.counts.authorizations.lock().unwrap().clone();
    assert_eq!(
        auths.len(),
        forwarded,
        "one per forwarded connection's first request"
    );
    assert!(
        auths.iter().all(|a| a == "Basic cGlwZWxpbmU6c0BjcmV0"),
        "{auths:?}"
    );
    assert!(s3
        .requests()
        .iter()
        .all(|r| r.header("proxy-authorization").is_none()));
    assert_eq!(s3.requests().len(), 60);
    let first = proxy.counts.targets.lock().unwrap()[0].clone();
    assert!(
        first.starts_with(&format!("GET http://{}/bkt/k", s3.addr)),
        "absolute form: {first}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_endpoints_tunnel_with_connect_and_verify_end_to_end() {
    let ca = Ca::new();
    let server = TlsServer::start(&ca, Leaf::Good).await;
    let proxy = ProxyServer::start().await;
    let client = crate::client_builder()
        .endpoint_url(server.url())
        .static_credentials("AKID", "SECRET", None)
        .ca_bundle_pem(ca.pem.clone())
        .https_proxy(proxy.url())
        .max_connections(CONNECTIONS)
        .build()
        .unwrap();
    let keys: Vec<ObjectRef> = (0..40)
        .map(|i| ObjectRef::new(format!("k{i}"), SIZE as u64))
        .collect();
    let got: Vec<_> = client.get_all("bkt", keys).collect().await;
    for (i, r) in got.iter().enumerate() {
        let o = r.as_ref().expect("object through the tunnel");
        assert!(o.body.to_vec() == content(&format!("k{i}"), SIZE), "k{i}");
    }
    let tunnels = proxy.connects();
    assert!((1..=CONNECTIONS).contains(&tunnels), "{tunnels} tunnels");
    assert!(proxy.max_open() <= CONNECTIONS);
    assert_eq!(proxy.forwards(), 0);
    let targets = proxy.counts.targets.lock().unwrap().clone();
    assert!(
        targets
            .iter()
            .all(|t| *t == format!("CONNECT {}", server.addr)),
        "{targets:?}"
    );

    // An untrusted certificate is still refused through the tunnel: TLS is end to end.
    let untrusting = crate::client_builder()
        .endpoint_url(server.url())
        .static_credentials("AKID", "SECRET", None)
        .https_proxy(proxy.url())
        .build()
        .unwrap();
    let mut results = untrusting.get_all("bkt", [ObjectRef::new("k0", SIZE as u64)]);
    let e = results.next().await.unwrap().unwrap_err();
    assert_eq!(e.kind(), s3_ordered::ErrorKind::Tls, "{}", e.with_causes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_proxy_and_the_proxy_variables() {
    let s3 = s3_with_objects(10).await;
    let proxy = ProxyServer::start().await;
    let through = |vars: Vec<(&str, String)>| {
        let env = AwsEnv::from_vars(
            vars.into_iter()
                .chain([
                    ("AWS_ACCESS_KEY_ID", crate::support::ACCESS_KEY.to_owned()),
                    (
                        "AWS_SECRET_ACCESS_KEY",
                        crate::support::SECRET_KEY.to_owned(),
                    ),
                ])
                .collect::<Vec<_>>(),
        );
        crate::client_builder()
            .aws_settings(
                &AwsSettings {
                    endpoint_url: Some(format!("http://{}", s3.addr)),
                    ..AwsSettings::default()
                },
                &env,
            )
            .unwrap()
            .build()
            .unwrap()
    };
    let client = through(vec![("HTTP_PROXY", proxy.url())]);
    fetch_checked(&client, 10, 2000).await;
    let via_proxy = proxy.forwards();
    assert!(via_proxy >= 1);
    for rules in ["127.0.0.1", "127.0.0.0/8", "*", "example.com,127.0.0.1"] {
        let client = through(vec![
            ("http_proxy", proxy.url()),
            ("NO_PROXY", rules.to_owned()),
        ]);
        fetch_checked(&client, 10, 2000).await;
        assert_eq!(proxy.forwards(), via_proxy, "NO_PROXY={rules}");
    }
    // HTTPS_PROXY alone leaves an http endpoint direct.
    let client = through(vec![("HTTPS_PROXY", proxy.url())]);
    fetch_checked(&client, 10, 2000).await;
    assert_eq!(proxy.forwards(), via_proxy);

    let e = crate::client_builder()
        .anonymous()
        .https_proxy("https://proxy:3129")
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "https_proxy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_refuses_connect_is_a_connect_error_naming_it() {
    let ca = Ca::new();
    let server = TlsServer::start(&ca, Leaf::Good).await;
    // A proxy that answers every request with 403.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
                    .await;
            });
        }
    });
    let client = crate::client_builder()
        .endpoint_url(server.url())
        .static_credentials("AKID", "SECRET", None)
        .ca_bundle_pem(ca.pem.clone())
        .https_proxy(format!("http://{addr}"))
        .retry(s3_ordered::RetryConfig {
            max_attempts: 2,
            ..s3_ordered::RetryConfig::default()
        })
        .build()
        .unwrap();
    let mut results = client.get_all("bkt", [ObjectRef::new("k0", SIZE as u64)]);
    let e = results.next().await.unwrap().unwrap_err();
    assert_eq!(e.kind(), s3_ordered::ErrorKind::Connect);
    let text = e.with_causes();
    assert!(
        text.contains("403") && text.contains("through the proxy"),
        "{text}"
    );
}
