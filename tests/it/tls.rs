//! https: a private CA trusted by bundle file, PEM bytes, roots or AWS_CA_BUNDLE (through the
//! AWS conventions); certificates refused for the right reason, after one attempt, never retried.

use std::sync::atomic::Ordering;

use futures::StreamExt;
use s3_ordered::{AwsEnv, AwsSettings, Client, ClientBuilder, ErrorKind, ObjectRef};

use crate::s3_server::content;
use crate::tls_server::{Ca, Leaf, TlsServer, SIZE};

fn builder(server: &TlsServer) -> ClientBuilder {
    crate::client_builder()
        .endpoint_url(server.url())
        .static_credentials("AKID", "SECRET", None)
        .max_connections(4)
}

async fn fetch_all(client: &Client) -> Vec<Result<Vec<u8>, s3_ordered::Error>> {
    let keys: Vec<ObjectRef> = (0..20)
        .map(|i| ObjectRef::new(format!("k{i}"), SIZE as u64))
        .collect();
    client
        .get_all("bucket", keys)
        .map(|r| r.map(|o| o.body.to_vec()))
        .collect()
        .await
}

fn assert_all_right(got: &[Result<Vec<u8>, s3_ordered::Error>]) {
    assert_eq!(got.len(), 20);
    for (i, r) in got.iter().enumerate() {
        let body = r.as_ref().expect("object over https");
        assert!(*body == content(&format!("k{i}"), SIZE), "object {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_ca_is_trusted_by_file_pem_roots_and_aws_ca_bundle() {
    let ca = Ca::new();
    let server = TlsServer::start(&ca, Leaf::Good).await;
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("ca.pem");
    std::fs::write(&bundle, &ca.pem).unwrap();

    let by_file = builder(&server).ca_bundle_file(&bundle).build().unwrap();
    assert_all_right(&fetch_all(&by_file).await);

    let by_pem = builder(&server)
        .ca_bundle_pem(ca.pem.clone())
        .build()
        .unwrap();
    assert_all_right(&fetch_all(&by_pem).await);

    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject as _;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap();
    roots.add(der).unwrap();
    let by_roots = builder(&server).root_certificates(roots).build().unwrap();
    assert_all_right(&fetch_all(&by_roots).await);

    let env = AwsEnv::from_vars([
        ("AWS_CA_BUNDLE", bundle.display().to_string()),
        ("AWS_ACCESS_KEY_ID", "AKID".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "SECRET".to_owned()),
    ]);
    let settings = AwsSettings {
        endpoint_url: Some(server.url()),
        ..AwsSettings::default()
    };
    let by_env = crate::client_builder()
        .max_connections(4)
        .aws_settings(&settings, &env)
        .unwrap()
        .build()
        .unwrap();
    assert_all_right(&fetch_all(&by_env).await);
    // Connections were reused: far fewer handshakes than objects.
    assert!(server.handshakes.load(Ordering::SeqCst) <= 4 * 4 + 4);
}

/// The first object's error, which must be a TLS error after one attempt, with `reason` in it.
async fn refused(server: &TlsServer, client: &Client, reason: &str) {
    let got = fetch_all(client).await;
    for r in &got {
        let e = r.as_ref().expect_err("must be refused");
        assert_eq!(e.kind(), ErrorKind::Tls, "{e}");
        assert!(!e.is_retryable());
        assert_eq!(e.attempts(), 1, "{e}");
        assert!(e.to_string().contains(reason), "{e}");
    }
    // No retry: one handshake per object at most (each failed one closes its connection).
    assert!(server.handshakes.load(Ordering::SeqCst) <= got.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_issuer_is_a_tls_error_that_says_how_to_fix_it() {
    let ca = Ca::new();
    let server = TlsServer::start(&ca, Leaf::Good).await;
    let client = builder(&server).build().unwrap();
    refused(&server, &client, "unknown issuer").await;
    let e = fetch_all(&client).await.remove(0).unwrap_err();
    assert!(e.to_string().contains("AWS_CA_BUNDLE"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_name_or_expired_is_refused() {
    let ca = Ca::new();
    let other = TlsServer::start(&ca, Leaf::OtherName).await;
    let client = builder(&other)
        .ca_bundle_pem(ca.pem.clone())
        .build()
        .unwrap();
    refused(&other, &client, "another name").await;

    let expired = TlsServer::start(&ca, Leaf::Expired).await;
    let client = builder(&expired)
        .ca_bundle_pem(ca.pem.clone())
        .build()
        .unwrap();
    refused(&expired, &client, "expired").await;
}

#[test]
fn bad_bundles_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let base = || {
        crate::client_builder()
            .endpoint_url("https://127.0.0.1:1")
            .static_credentials("AKID", "SECRET", None)
    };
    let missing = base()
        .ca_bundle_file(dir.path().join("absent.pem"))
        .build()
        .unwrap_err();
    assert_eq!(missing.field(), "ca_bundle");
    assert!(missing.reason().contains("absent.pem"), "{missing}");

    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "no certificates here\n").unwrap();
    let none = base().ca_bundle_file(&empty).build().unwrap_err();
    assert_eq!(none.field(), "ca_bundle");
    assert!(none.reason().contains("no PEM certificate"), "{none}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_resume_the_tls_session() {
    let ca = Ca::new();
    // Every response closes its connection: 20 objects take 20 connections.
    let server = TlsServer::start_with(&ca, Leaf::Good, true).await;
    let client = builder(&server)
        .max_connections(1)
        .ca_bundle_pem(ca.pem.clone())
        .build()
        .unwrap();
    assert_all_right(&fetch_all(&client).await);
    let (handshakes, resumed) = (
        server.handshakes.load(Ordering::SeqCst),
        server.resumed.load(Ordering::SeqCst),
    );
    assert_eq!(handshakes, 20);
    // All but the first resume the session the first one set up.
    assert!(
        resumed >= 18,
        "{resumed} of {handshakes} handshakes resumed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_left_in_the_ciphertext_after_a_response_are_never_read_as_the_next_one() {
    // In a TLS record of its own, sent in the same TCP write as the reply's.
    bytes_after_a_reply_over_tls(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_after_a_response_in_its_own_tls_record_are_never_read_as_the_next_one() {
    // In the same TLS record as the reply's end.
    bytes_after_a_reply_over_tls(false).await;
}

/// A server that answers the first GET of each connection and then, in the same flight, a
/// second well-formed response nobody asked for — for the object the client asks for next —
/// in a record of its own (`own_record`) or in the reply's. Every connection after the first
/// answers honestly.
async fn bytes_after_a_reply_over_tls(own_record: bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = Ca::new();
    let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config(Leaf::Good));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let first = counted.fetch_add(1, Ordering::SeqCst) == 0;
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                let mut sent_forged = false;
                while tls.read(&mut byte).await.is_ok_and(|n| n == 1) {
                    head.push(byte[0]);
                    if !head.ends_with(b"\r\n\r\n") {
                        continue;
                    }
                    let text = String::from_utf8_lossy(&head).into_owned();
                    head.clear();
                    let key = text
                        .split(' ')
                        .nth(1)
                        .and_then(|p| p.rsplit('/').next())
                        .unwrap_or_default()
                        .to_owned();
                    let reply = |body: &[u8]| {
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\netag: \"e\"\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        r.extend_from_slice(body);
                        r
                    };
                    // Records queued in rustls and written to the socket in one go, so that
                    // the forged one arrives with the real one, as ciphertext.
                    let queued = {
                        let mut writer = tls.get_mut().1.writer();
                        let mut out = reply(&content(&key, SIZE));
                        let forge = first && !sent_forged;
                        sent_forged |= forge;
                        if forge && !own_record {
                            // One write: one record holds the reply's end and the forged one.
                            out.extend(reply(&vec![b'X'; SIZE]));
                        }
                        let mut queued = std::io::Write::write_all(&mut writer, &out);
                        if forge && own_record {
                            // A write of its own: records of its own.
                            queued = queued.and(std::io::Write::write_all(
                                &mut writer,
                                &reply(&vec![b'X'; SIZE]),
                            ));
                        }
                        queued
                    };
                    if queued.is_err() || tls.flush().await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let client = crate::client_builder()
        .endpoint_url(format!("https://{addr}"))
        .static_credentials("AKID", "SECRET", None)
        .ca_bundle_pem(ca.pem.clone())
        .max_connections(1)
        .build()
        .unwrap();
    let keys: Vec<ObjectRef> = (0..4)
        .map(|i| ObjectRef::new(format!("k{i}"), SIZE as u64))
        .collect();
    let got: Vec<_> = client.get_all("bucket", keys).collect().await;
    for (i, r) in got.iter().enumerate() {
        let o = r
            .as_ref()
            .unwrap_or_else(|e| panic!("k{i}: {}", e.with_causes()));
        assert!(
            o.body.to_vec() == content(&format!("k{i}"), SIZE),
            "k{i} delivered with another reply's bytes"
        );
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        2,
        "the connection with bytes left over was closed, the next one reused"
    );
}
