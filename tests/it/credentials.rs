//! Expiring credentials during long fetches: refreshed before they expire with nothing failing,
//! and a refresh that fails while the old credentials are still valid costs nothing. The server
//! refuses every key once it has expired, so a request signed with stale credentials fails.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{future, ProvideCredentials};
use aws_credential_types::Credentials;
use futures::StreamExt;
use s3_ordered::{Client, ObjectRef};

use crate::support::{content, S3Server, SECRET_KEY};

/// Issues a new key at every call, valid for `lifetime`; as the server's auth, refuses a key
/// that is unknown or expired. Calls listed in `fail_calls` (1-based) fail instead.
#[derive(Debug, Clone)]
struct Rotating {
    keys: Arc<Mutex<HashMap<String, SystemTime>>>,
    calls: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    lifetime: Duration,
    fail_calls: &'static [usize],
}

impl Rotating {
    fn new(lifetime: Duration, fail_calls: &'static [usize]) -> Self {
        Rotating {
            keys: Arc::default(),
            calls: Arc::default(),
            refused: Arc::default(),
            lifetime,
            fail_calls,
        }
    }
}

impl ProvideCredentials for Rotating {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if self.fail_calls.contains(&n) {
            return future::ProvideCredentials::ready(Err(CredentialsError::provider_error(
                format!("call {n} fails"),
            )));
        }
        let key = format!("AKIDROTATING{n}");
        let expiry = SystemTime::now() + self.lifetime;
        self.keys.lock().unwrap().insert(key.clone(), expiry);
        future::ProvideCredentials::ready(Ok(Credentials::new(
            key,
            SECRET_KEY,
            Some(format!("token{n}")),
            Some(expiry),
            "rotating",
        )))
    }
}

#[async_trait::async_trait]
impl s3s::auth::S3Auth for Rotating {
    async fn get_secret_key(&self, access_key: &str) -> s3s::S3Result<s3s::auth::SecretKey> {
        let valid = self
            .keys
            .lock()
            .unwrap()
            .get(access_key)
            .is_some_and(|exp| SystemTime::now() < *exp);
        if valid {
            Ok(SECRET_KEY.into())
        } else {
            self.refused.fetch_add(1, Ordering::SeqCst);
            Err(s3s::s3_error!(ExpiredToken))
        }
    }
}

/// Fetches the same 20 objects over and over for `run`, on one client; returns the rounds made.
async fn fetch_for(client: &Client, run: Duration) -> usize {
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    let start = Instant::now();
    let mut rounds = 0;
    while start.elapsed() < run && rounds < 100_000 {
        let objects = keys.iter().map(|k| ObjectRef::new(k.clone(), 1000));
        let mut results = client.get_all("bkt", objects.collect::<Vec<_>>());
        let mut n = 0;
        while let Some(r) = results.next().await {
            let o = r.unwrap_or_else(|e| panic!("round {rounds}: {}", e.with_causes()));
            assert_eq!(o.body.to_vec(), content(&keys[n], 1000));
            n += 1;
        }
        assert_eq!(n, keys.len());
        rounds += 1;
    }
    rounds
}

fn client(server: &S3Server, rotating: &Rotating) -> Client {
    crate::client_builder()
        .endpoint_url(format!("http://{}", server.addr))
        .credentials_provider(rotating.clone())
        .max_connections(4)
        .build()
        .unwrap()
}

async fn server(auth: &Rotating) -> S3Server {
    let server = S3Server::start_with_auth(auth.clone()).await;
    for i in 0..20 {
        let key = format!("k{i}");
        server.put("bkt", &key, &content(&key, 1000));
    }
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_credentials_are_refreshed_during_a_long_fetch() {
    // One-second credentials: refreshed a quarter of their life before they expire.
    let rotating = Rotating::new(Duration::from_secs(1), &[]);
    let server = server(&rotating).await;
    let client = client(&server, &rotating);
    let rounds = fetch_for(&client, Duration::from_millis(3500)).await;
    let calls = rotating.calls.load(Ordering::SeqCst);
    assert!(calls >= 4, "{calls} credentials in 3.5 s of 1 s ones");
    assert!(calls <= 8, "{calls} credentials: refreshed far too often");
    assert_eq!(rotating.refused.load(Ordering::SeqCst), 0);
    assert!(rounds > 1);
    // Every request carried the session token of the keys it was signed with.
    for r in server.requests() {
        assert_eq!(r.method, hyper::Method::GET, "{}", r.uri);
        let key = r
            .header("authorization")
            .and_then(|a| a.split("Credential=AKIDROTATING").nth(1))
            .and_then(|c| c.split('/').next())
            .expect("signed with a rotating key");
        assert_eq!(
            r.header("x-amz-security-token"),
            Some(&*format!("token{key}"))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_that_fails_while_the_credentials_are_valid_fails_nothing() {
    // The first refresh fails; the next try, before the old ones expire, succeeds.
    let rotating = Rotating::new(Duration::from_secs(2), &[2]);
    let server = server(&rotating).await;
    let client = client(&server, &rotating);
    fetch_for(&client, Duration::from_millis(2500)).await;
    let calls = rotating.calls.load(Ordering::SeqCst);
    assert!(
        calls >= 3,
        "the failed refresh was tried again: {calls} calls"
    );
    assert_eq!(rotating.refused.load(Ordering::SeqCst), 0);
    assert_eq!(client.stats().errors, 0);
}
