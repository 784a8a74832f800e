//! Directory buckets (S3 Express One Zone) against a stand-in that checks what S3 Express checks:
//! `CreateSession` signed with the client's keys for `s3express`, every other request signed
//! with a live session's keys and carrying its token in `x-amz-s3session-token` (and no
//! `x-amz-security-token`). One session serves many GETs over many connections; short sessions
//! are refreshed before they expire; a session the server drops is replaced once and the
//! request sent again; a refused `CreateSession` fails each object with an error naming the
//! bucket; listings work in the server's order; the zonal endpoint follows from the name.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use s3_ordered::{ErrorKind, ObjectRef};

use crate::express_server::{ExpressOptions, ExpressServer, EXPRESS_BUCKET};
use crate::s3_server::{content, ACCESS_KEY, SECRET_KEY};

/// `n` objects `k/0000`… of a few hundred bytes to a few KiB, and one of 3 MiB.
fn objects(n: usize) -> Vec<(String, Vec<u8>)> {
    let mut all: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| {
            let key = format!("k/{i:04}");
            let body = content(&key, 200 + i * 53 % 4000);
            (key, body)
        })
        .collect();
    all.push(("big/three-mib".into(), content("big/three-mib", 3 << 20)));
    all
}

fn client(server: &ExpressServer) -> s3_ordered::ClientBuilder {
    crate::client_builder()
        .endpoint_url(server.url())
        .static_credentials(ACCESS_KEY, SECRET_KEY, None)
        .max_connections(16)
        .part_size(1 << 20)
}

/// Fetches every object in `objects`' order and checks each body.
async fn fetch_checked(client: &s3_ordered::Client, objects: &[(String, Vec<u8>)]) {
    let refs: Vec<ObjectRef> = objects
        .iter()
        .map(|(k, b)| ObjectRef::new(k.clone(), b.len() as u64))
        .collect();
    let mut results = client.get_all(EXPRESS_BUCKET, refs);
    let mut n = 0;
    while let Some(r) = results.next().await {
        let o = r.unwrap_or_else(|e| panic!("{}", e.with_causes()));
        assert_eq!(o.key, objects[n].0);
        assert!(o.body.to_vec() == objects[n].1, "{}", o.key);
        n += 1;
    }
    assert_eq!(n, objects.len());
}

fn assert_clean(server: &ExpressServer) {
    assert!(server.bad().is_empty(), "{:?}", server.bad());
    assert_eq!(server.counts().bad_requests.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_session_serves_many_gets_over_many_connections() {
    let all = objects(300);
    let server = ExpressServer::start(all.clone(), ExpressOptions::default()).await;
    let client = client(&server).build().unwrap();
    fetch_checked(&client, &all).await;
    // Unknown sizes too: a probe GET, then the rest in ranged parts (HEADs for checksums).
    let sizeless: Vec<ObjectRef> = all
        .iter()
        .map(|(k, _)| ObjectRef::without_size(k.clone()))
        .take(20)
        .chain([ObjectRef::without_size("big/three-mib")])
        .collect();
    let got: Vec<_> = client.get_all(EXPRESS_BUCKET, sizeless).collect().await;
    assert_eq!(got.len(), 21);
    for r in got {
        let o = r.unwrap_or_else(|e| panic!("{}", e.with_causes()));
        let want = &all.iter().find(|(k, _)| *k == o.key).unwrap().1;
        assert!(o.body.to_vec() == *want, "{}", o.key);
    }
    let head = client.head(EXPRESS_BUCKET, "k/0001", None).await.unwrap();
    assert_eq!(head.size, Some(all[1].1.len() as u64));

    assert_clean(&server);
    let stats = client.stats();
    assert_eq!(server.counts().sessions.load(Ordering::SeqCst), 1);
    assert_eq!(stats.sessions_created, 1);
    assert!(stats.connections_opened > 1, "{stats:?}");
    assert!(server.counts().served.load(Ordering::SeqCst) > 320);
    assert_eq!(server.counts().session_refusals.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_credentials_sign_create_session_and_stay_off_data_requests() {
    // The client's keys from STS: their token goes with CreateSession (x-amz-security-token,
    // signed), and never with a request signed by the session.
    let all = objects(20);
    let token = "FwoGZXIvYXdzEXAMPLE+token/==";
    let options = ExpressOptions {
        base_token: Some(token.to_owned()),
        ..ExpressOptions::default()
    };
    let server = ExpressServer::start(all.clone(), options).await;
    let temporary = client(&server)
        .static_credentials(ACCESS_KEY, SECRET_KEY, Some(token.to_owned()))
        .build()
        .unwrap();
    fetch_checked(&temporary, &all).await;
    assert_clean(&server);
    assert_eq!(server.counts().sessions.load(Ordering::SeqCst), 1);
    // Without the token, the stand-in refuses CreateSession's signature.
    let tokenless = client(&server).build().unwrap();
    let e = tokenless
        .get_all(
            EXPRESS_BUCKET,
            [ObjectRef::new("k/0000", all[0].1.len() as u64)],
        )
        .next()
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AccessDenied, "{e}");
    assert!(server
        .bad()
        .iter()
        .any(|why| why.starts_with("CreateSession")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_is_enough_to_make_the_session_and_fetch() {
    // The session is made on the connection of the request that needs it, which then goes
    // on: requests holding every connection while they wait for it do not starve it.
    let all = objects(40);
    let server = ExpressServer::start(all.clone(), ExpressOptions::default()).await;
    let client = client(&server).max_connections(1).build().unwrap();
    fetch_checked(&client, &all).await;
    server.invalidate_sessions();
    fetch_checked(&client, &all).await;
    assert_clean(&server);
    assert_eq!(client.stats().sessions_created, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_sessions_are_refreshed_before_they_expire() {
    let all = objects(40);
    let life = Duration::from_secs(6);
    let options = ExpressOptions {
        life,
        ..ExpressOptions::default()
    };
    let server = ExpressServer::start(all.clone(), options).await;
    let client = client(&server).build().unwrap();
    // Fetch over and over until the third session: each is replaced a quarter of its life
    // before it expires, while the others go on signing with it.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut rounds = 0;
    while server.counts().sessions.load(Ordering::SeqCst) < 3 {
        assert!(
            Instant::now() < deadline,
            "no third session after {rounds} rounds"
        );
        fetch_checked(&client, &all).await;
        rounds += 1;
    }
    assert_clean(&server);
    assert_eq!(
        server.counts().session_refusals.load(Ordering::SeqCst),
        0,
        "a request went out with an expired session"
    );
    let stats = client.stats();
    assert_eq!(stats.errors, 0);
    assert_eq!(stats.retries, 0);
    assert_eq!(
        stats.sessions_created,
        server.counts().sessions.load(Ordering::SeqCst) as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_the_server_drops_is_replaced_and_the_requests_sent_again() {
    let all = objects(100);
    let server = ExpressServer::start(all.clone(), ExpressOptions::default()).await;
    let client = client(&server).build().unwrap();
    fetch_checked(&client, &all).await;
    server.invalidate_sessions();
    // Every request in flight is refused once: the session is dropped once and each
    // refused request is sent again with the new one.
    fetch_checked(&client, &all).await;
    server.invalidate_sessions();
    let head = client.head(EXPRESS_BUCKET, "k/0002", None).await.unwrap();
    let want = Some(all[2].1.len() as u64);
    assert_eq!(head.size, want, "a HEAD's refusal has no body");
    let listed: Vec<_> = client.list(EXPRESS_BUCKET, "k/").collect().await;
    assert_eq!(listed.len(), 100);

    assert_clean(&server);
    let refusals = server.counts().session_refusals.load(Ordering::SeqCst);
    assert!(refusals >= 2, "{refusals}");
    let sessions = server.counts().sessions.load(Ordering::SeqCst);
    assert_eq!(
        sessions, 3,
        "one new session per drop, however many were refused"
    );
    let stats = client.stats();
    assert_eq!((stats.errors, stats.retries), (0, 0), "{stats:?}");
    assert_eq!(stats.sessions_created, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_create_session_fails_each_object_naming_the_bucket() {
    let all = objects(30);
    let options = ExpressOptions {
        refuse_sessions: true,
        ..ExpressOptions::default()
    };
    let server = ExpressServer::start(all.clone(), options).await;
    let client = client(&server).build().unwrap();
    let refs: Vec<ObjectRef> = all
        .iter()
        .map(|(k, b)| ObjectRef::new(k.clone(), b.len() as u64))
        .collect();
    let results: Vec<_> = client.get_all(EXPRESS_BUCKET, refs).collect().await;
    assert_eq!(results.len(), all.len());
    for (r, (key, _)) in results.into_iter().zip(&all) {
        let e = r.expect_err("no session, no object");
        assert_eq!(e.kind(), ErrorKind::AccessDenied);
        assert_eq!(e.key(), Some(key.as_str()));
        let text = e.to_string();
        assert!(
            text.contains("could not create an S3 Express session")
                && text.contains(EXPRESS_BUCKET),
            "{text}"
        );
    }
    // Objects waiting on one refused CreateSession share its answer.
    let refused = server.counts().sessions_refused.load(Ordering::SeqCst);
    assert!(
        refused < all.len(),
        "{refused} CreateSessions for {} objects",
        all.len()
    );
    assert_eq!(server.counts().served.load(Ordering::SeqCst), 0);
    assert_eq!(client.stats().sessions_created, 0);
    assert_clean(&server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_a_directory_bucket_goes_in_the_server_s_order() {
    let all = objects(2500);
    let options = ExpressOptions {
        page: 1000,
        ..ExpressOptions::default()
    };
    let server = ExpressServer::start(all.clone(), options).await;
    let client = client(&server).build().unwrap();
    let listed: Vec<String> = client
        .list(EXPRESS_BUCKET, "k/")
        .map(|r| r.unwrap_or_else(|e| panic!("{}", e.with_causes())).key)
        .collect()
        .await;
    // The server's order (reversed here), over three pages: not sorted, none lost.
    let mut want: Vec<String> = all
        .iter()
        .map(|(k, _)| k.clone())
        .filter(|k| k.starts_with("k/"))
        .collect();
    want.reverse();
    assert_eq!(listed, want);
    // Fetched from the listing, in the listing's order.
    let objects = client.list(EXPRESS_BUCKET, "k/00");
    let mut fetched = client.get_stream(EXPRESS_BUCKET, objects.map(|r| r.unwrap()));
    let mut order = Vec::new();
    while let Some(o) = fetched.next().await {
        order.push(o.unwrap().key);
    }
    let want_00: Vec<String> = want
        .iter()
        .filter(|k| k.starts_with("k/00"))
        .cloned()
        .collect();
    assert_eq!(order, want_00);
    // One level under a delimiter.
    let level: Vec<_> = client
        .list_with_delimiter(EXPRESS_BUCKET, "", "/", None)
        .map(|r| r.unwrap().name().to_owned())
        .collect()
        .await;
    assert_eq!(level.len(), 2, "{level:?}");
    assert!(level.contains(&"k/".to_owned()) && level.contains(&"big/".to_owned()));

    // What a directory bucket does not take is refused before any request.
    let before = server.counts().served.load(Ordering::SeqCst);
    let after: Vec<_> = client
        .list_after(EXPRESS_BUCKET, "k/", "k/0100")
        .collect()
        .await;
    assert_eq!(after.len(), 1);
    let e = after.into_iter().next().unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidRequest);
    assert!(e.to_string().contains("directory bucket"), "{e}");
    let under: Vec<_> = client
        .list_with_delimiter(EXPRESS_BUCKET, "k", "/", None)
        .collect()
        .await;
    let e = under.into_iter().next().unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidRequest);
    assert!(e.to_string().contains("must end in the delimiter"), "{e}");
    assert_eq!(server.counts().served.load(Ordering::SeqCst), before);
    assert_clean(&server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_sessions_requests_are_signed_with_the_client_s_keys() {
    let all = objects(50);
    let options = ExpressOptions {
        direct: true,
        ..ExpressOptions::default()
    };
    let server = ExpressServer::start(all.clone(), options).await;
    let client = client(&server).s3_express_sessions(false).build().unwrap();
    fetch_checked(&client, &all).await;
    assert_clean(&server);
    assert_eq!(client.stats().sessions_created, 0);
    // With sessions on, the same server fails each object: it has no CreateSession.
    let client = self::client(&server).build().unwrap();
    let refs: Vec<ObjectRef> = all
        .iter()
        .map(|(k, b)| ObjectRef::new(k.clone(), b.len() as u64))
        .collect();
    let e = client
        .get_all(EXPRESS_BUCKET, refs)
        .next()
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.status().map(|s| s.as_u16()), Some(501), "{e}");
    assert!(e.to_string().contains("S3 Express session"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_zonal_endpoint_is_reached_through_the_proxy() {
    // A proxy that records each CONNECT target and refuses it: nothing leaves the machine.
    let (addr, targets) = crate::proxy_server::refusing().await;
    let client = crate::client_builder()
        .region("us-east-1")
        .static_credentials(ACCESS_KEY, SECRET_KEY, None)
        .https_proxy(format!("http://{addr}"))
        .retry(s3_ordered::RetryConfig {
            max_attempts: 1,
            ..s3_ordered::RetryConfig::default()
        })
        .build()
        .unwrap();
    let mut results = client.get_all(EXPRESS_BUCKET, [ObjectRef::new("k", 10)]);
    let e = results.next().await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
    let host = format!("{EXPRESS_BUCKET}.s3express-use1-az4.us-east-1.amazonaws.com:443");
    let targets = targets.lock().unwrap().clone();
    assert!(!targets.is_empty());
    assert!(
        targets
            .iter()
            .all(|t| *t == format!("CONNECT {host} HTTP/1.1")),
        "{targets:?}"
    );
}
