//! The credentials cache in front of a provider: what every request of a client signs with.
//!
//! Credentials that expire are fetched again before they do, by one request at a time, while
//! the others go on signing with the ones they have. How early depends on how long they live:
//! [`REFRESH_BEFORE_EXPIRY`], or a quarter of their lifetime if that is shorter, so credentials
//! that live only a few minutes (S3 Express sessions last 5) are still used for most of their
//! life. A refresh that fails while the cached credentials are still valid is not an error: they
//! stay in use and the refresh is tried again after [`RETRY_FAILED_REFRESH`] (sooner if they
//! expire before that). Only when no valid credentials are left does a failure reach requests.

use std::sync::RwLock;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;

use crate::error::{with_causes, Error, ErrorKind};

/// Credentials are refreshed at most this long before they expire: the AWS SDKs' default
/// expiry buffer for credentials from STS and the metadata services is of this order, and it
/// leaves a failed refresh minutes to succeed.
pub(crate) const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);

/// After a failed refresh, the cached credentials are used this long before the next try (at
/// most half of their remaining life).
pub(crate) const RETRY_FAILED_REFRESH: Duration = Duration::from_secs(10);

/// A provider and the credentials it last gave.
pub(crate) struct CredentialCache {
    provider: SharedCredentialsProvider,
    cached: RwLock<Option<Cached>>,
    /// Held by the one request that calls the provider.
    refresh: tokio::sync::Mutex<()>,
}

#[derive(Clone)]
struct Cached {
    creds: Credentials,
    /// When to ask the provider again; `None` for credentials that never expire.
    refresh_at: Option<SystemTime>,
}

impl Cached {
    fn new(creds: Credentials, now: SystemTime) -> Self {
        let refresh_at = creds.expiry().map(|expiry| {
            let life = expiry.duration_since(now).unwrap_or_default();
            expiry - REFRESH_BEFORE_EXPIRY.min(life / 4)
        });
        Cached { creds, refresh_at }
    }

    /// Still to be used as they are, without a refresh.
    fn fresh(&self, now: SystemTime) -> bool {
        self.refresh_at.is_none_or(|at| now < at)
    }

    /// Not expired yet.
    fn valid(&self, now: SystemTime) -> bool {
        self.creds.expiry().is_none_or(|exp| now < exp)
    }
}

impl CredentialCache {
    pub(crate) fn new(provider: SharedCredentialsProvider) -> Self {
        CredentialCache {
            provider,
            cached: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    /// The credentials to sign the next request with.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Credentials`] when the provider fails and no valid credentials are cached.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a refresh cut short leaves the cache as it was.
    pub(crate) async fn get(&self) -> Result<Credentials, Error> {
        self.get_at(SystemTime::now).await
    }

    /// [`get`](Self::get) with the clock given (tests move it).
    async fn get_at(&self, now: impl Fn() -> SystemTime) -> Result<Credentials, Error> {
        let stale = match self.read() {
            Some(c) if c.fresh(now()) => return Ok(c.creds),
            Some(c) if c.valid(now()) => Some(c),
            _ => None,
        };
        let Some(stale) = stale else {
            // Nothing valid: every request waits for the one refresh.
            let _refreshing = self.refresh.lock().await;
            if let Some(c) = self.read().filter(|c| c.valid(now())) {
                return Ok(c.creds);
            }
            let creds = self
                .provider
                .provide_credentials()
                .await
                .map_err(|e| Error::new(ErrorKind::Credentials).with_source(e))?;
            self.store(Cached::new(creds.clone(), now()));
            return Ok(creds);
        };
        // Valid but due for a refresh: one request refreshes, the others sign with these.
        let Ok(_refreshing) = self.refresh.try_lock() else {
            return Ok(stale.creds);
        };
        if let Some(c) = self.read().filter(|c| c.fresh(now())) {
            return Ok(c.creds); // refreshed just before this request took the lock
        }
        match self.provider.provide_credentials().await {
            Ok(creds) => {
                self.store(Cached::new(creds.clone(), now()));
                Ok(creds)
            }
            Err(e) => {
                let t = now();
                let left = stale
                    .creds
                    .expiry()
                    .and_then(|exp| exp.duration_since(t).ok())
                    .unwrap_or_default();
                let wait = RETRY_FAILED_REFRESH.min(left / 2);
                tracing::warn!(
                    error = %with_causes(&e),
                    expires_in_s = left.as_secs(),
                    retry_in_ms = wait.as_millis() as u64,
                    "refreshing credentials failed; the current ones are still valid"
                );
                self.store(Cached {
                    refresh_at: Some(t + wait),
                    ..stale.clone()
                });
                Ok(stale.creds)
            }
        }
    }

    fn read(&self) -> Option<Cached> {
        self.cached
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn store(&self, c: Cached) {
        *self.cached.write().unwrap_or_else(|e| e.into_inner()) = Some(c);
    }
}

impl std::fmt::Debug for CredentialCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the provider nor the credentials: a user's provider may print secrets.
        f.debug_struct("CredentialCache").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use aws_credential_types::provider::error::CredentialsError;
    use aws_credential_types::provider::future;

    use super::*;

    /// Hands out scripted results in order and counts the calls.
    #[derive(Debug, Clone, Default)]
    struct Script(Arc<Mutex<Scripted>>);

    #[derive(Debug, Default)]
    struct Scripted {
        next: VecDeque<Result<Credentials, String>>,
        calls: u32,
    }

    impl Script {
        fn push(&self, r: Result<Credentials, String>) {
            self.0.lock().unwrap().next.push_back(r);
        }
        fn calls(&self) -> u32 {
            self.0.lock().unwrap().calls
        }
    }

    impl ProvideCredentials for Script {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            let mut s = self.0.lock().unwrap();
            s.calls += 1;
            let next = s
                .next
                .pop_front()
                .expect("an unscripted call to the provider");
            future::ProvideCredentials::ready(next.map_err(CredentialsError::provider_error))
        }
    }

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn creds(id: &str, expires: Option<u64>) -> Credentials {
        Credentials::new(id, "secret", Some("token".into()), expires.map(t), "test")
    }

    fn cache(script: &Script) -> CredentialCache {
        CredentialCache::new(SharedCredentialsProvider::new(script.clone()))
    }

    async fn id_at(c: &CredentialCache, secs: u64) -> Result<String, Error> {
        c.get_at(|| t(secs))
            .await
            .map(|c| c.access_key_id().to_owned())
    }

    #[tokio::test]
    async fn hour_long_credentials_refresh_five_minutes_before_expiry() {
        let s = Script::default();
        s.push(Ok(creds("A", Some(3600))));
        s.push(Ok(creds("B", Some(7200))));
        let c = cache(&s);
        assert_eq!(id_at(&c, 0).await.unwrap(), "A");
        assert_eq!(id_at(&c, 3299).await.unwrap(), "A");
        assert_eq!(s.calls(), 1);
        assert_eq!(id_at(&c, 3300).await.unwrap(), "B");
        assert_eq!(id_at(&c, 3500).await.unwrap(), "B");
        assert_eq!(s.calls(), 2);
    }

    #[tokio::test]
    async fn short_lived_credentials_are_cached_for_most_of_their_life() {
        // An S3 Express session: 5 minutes, shorter than the usual margin.
        let s = Script::default();
        s.push(Ok(creds("A", Some(300))));
        s.push(Ok(creds("B", Some(600))));
        let c = cache(&s);
        for secs in [0, 100, 224] {
            assert_eq!(id_at(&c, secs).await.unwrap(), "A");
        }
        assert_eq!(s.calls(), 1, "3/4 of a 300 s life come from the cache");
        assert_eq!(id_at(&c, 225).await.unwrap(), "B");
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_valid_credentials_and_tries_again_later() {
        let s = Script::default();
        s.push(Ok(creds("A", Some(3600))));
        s.push(Err("sts is down".into()));
        s.push(Ok(creds("B", Some(7200))));
        let c = cache(&s);
        assert_eq!(id_at(&c, 0).await.unwrap(), "A");
        // Due for a refresh, which fails: the old ones are still valid and are used.
        assert_eq!(id_at(&c, 3400).await.unwrap(), "A");
        assert_eq!(s.calls(), 2);
        // Not asked again before the retry delay.
        assert_eq!(id_at(&c, 3405).await.unwrap(), "A");
        assert_eq!(s.calls(), 2);
        assert_eq!(id_at(&c, 3410).await.unwrap(), "B");
        assert_eq!(s.calls(), 3);
    }

    #[tokio::test]
    async fn a_failure_with_nothing_valid_is_an_error() {
        let s = Script::default();
        s.push(Ok(creds("A", Some(100))));
        s.push(Err("imds is down".into()));
        s.push(Ok(creds("B", Some(1000))));
        let c = cache(&s);
        assert_eq!(id_at(&c, 0).await.unwrap(), "A");
        let e = id_at(&c, 100).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Credentials);
        // The next request asks again at once.
        assert_eq!(id_at(&c, 100).await.unwrap(), "B");
        assert_eq!(s.calls(), 3);
    }

    #[tokio::test]
    async fn credentials_without_expiry_are_fetched_once() {
        let s = Script::default();
        s.push(Ok(creds("A", None)));
        let c = cache(&s);
        for secs in [0, 10_000, 100_000_000] {
            assert_eq!(id_at(&c, secs).await.unwrap(), "A");
        }
        assert_eq!(s.calls(), 1);
    }

    #[tokio::test]
    async fn one_refresh_at_a_time_while_the_others_use_the_old_credentials() {
        // A provider whose second call waits until released.
        #[derive(Debug)]
        struct Slow {
            calls: Mutex<u32>,
            gate: Arc<tokio::sync::Notify>,
        }
        impl ProvideCredentials for Slow {
            fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
            where
                Self: 'a,
            {
                let n = {
                    let mut calls = self.calls.lock().unwrap();
                    *calls += 1;
                    *calls
                };
                future::ProvideCredentials::new(async move {
                    if n > 1 {
                        self.gate.notified().await;
                    }
                    Ok(creds(if n == 1 { "A" } else { "B" }, Some(3600 * n as u64)))
                })
            }
        }
        let gate = Arc::new(tokio::sync::Notify::new());
        let slow = Arc::new(Slow {
            calls: Mutex::new(0),
            gate: gate.clone(),
        });
        let c = Arc::new(CredentialCache::new(SharedCredentialsProvider::new(
            ArcProvider(slow.clone()),
        )));
        assert_eq!(id_at(&c, 0).await.unwrap(), "A");
        let refreshing = tokio::spawn({
            let c = c.clone();
            async move { id_at(&c, 3400).await }
        });
        tokio::task::yield_now().await;
        // While one request waits on the provider, the others sign with the old credentials.
        for _ in 0..5 {
            assert_eq!(id_at(&c, 3400).await.unwrap(), "A");
        }
        assert_eq!(*slow.calls.lock().unwrap(), 2);
        gate.notify_one();
        assert_eq!(refreshing.await.unwrap().unwrap(), "B");
        assert_eq!(id_at(&c, 3400).await.unwrap(), "B");
    }

    #[derive(Debug)]
    struct ArcProvider<P>(Arc<P>);
    impl<P: ProvideCredentials> ProvideCredentials for ArcProvider<P> {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            self.0.provide_credentials()
        }
    }
}
