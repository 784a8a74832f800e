//! The credentials cache in front of a provider, and [`Refreshing`], the cache of any value
//! that expires (credentials, S3 Express sessions): what every request of a client signs with.
//!
//! A value that expires is fetched again before it does, by one request at a time, while the
//! others go on signing with the one they have. How early depends on how long it lives:
//! [`REFRESH_BEFORE_EXPIRY`], or a quarter of its lifetime if that is shorter, so values that
//! live only a few minutes (S3 Express sessions last 5) are still used for most of their life.
//! A refresh that fails while the cached value is still valid is not an error: it stays in use
//! and the refresh is tried again after [`RETRY_FAILED_REFRESH`] (sooner if it expires before
//! that). Only when no valid value is left does a failure reach requests, and then once for
//! every request that waited on that load, not once per request.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;

use crate::error::{with_causes, Error, ErrorKind};

/// Values are refreshed at most this long before they expire: the AWS SDKs' default expiry
/// buffer for credentials from STS and the metadata services is of this order, and it leaves a
/// failed refresh minutes to succeed.
pub(crate) const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);

/// After a failed refresh, the cached value is used this long before the next try (at most
/// half of its remaining life).
pub(crate) const RETRY_FAILED_REFRESH: Duration = Duration::from_secs(10);

/// A value with an expiry.
pub(crate) trait Expires: Clone {
    /// When it may no longer be used; `None` for never.
    fn expiry(&self) -> Option<SystemTime>;
}

impl Expires for Credentials {
    fn expiry(&self) -> Option<SystemTime> {
        Credentials::expiry(self)
    }
}

/// The last value loaded, refreshed before it expires by one caller at a time.
pub(crate) struct Refreshing<T> {
    /// What the value is, for the log ("credentials").
    what: &'static str,
    cached: RwLock<Option<Cached<T>>>,
    /// Held by the one caller that loads.
    refresh: tokio::sync::Mutex<()>,
    /// Values stored so far: the current one's number is its generation (a value loaded
    /// later has a higher one).
    stored: AtomicU64,
    /// Loads that failed with nothing valid cached, and the last one's error.
    failed: AtomicU64,
    last_failure: Mutex<Option<Error>>,
}

#[derive(Clone)]
struct Cached<T> {
    value: T,
    /// When to load again; `None` for a value that never expires.
    refresh_at: Option<SystemTime>,
    /// The number of this value among those stored (from 1).
    generation: u64,
}

impl<T: Expires> Cached<T> {
    fn new(value: T, now: SystemTime, generation: u64) -> Self {
        let refresh_at = value.expiry().map(|expiry| {
            let life = expiry.duration_since(now).unwrap_or_default();
            expiry - REFRESH_BEFORE_EXPIRY.min(life / 4)
        });
        Cached {
            value,
            refresh_at,
            generation,
        }
    }

    /// Still to be used as it is, without a refresh.
    fn fresh(&self, now: SystemTime) -> bool {
        self.refresh_at.is_none_or(|at| now < at)
    }

    /// Not expired yet.
    fn valid(&self, now: SystemTime) -> bool {
        self.value.expiry().is_none_or(|exp| now < exp)
    }
}

impl<T: Expires> Refreshing<T> {
    /// An empty cache of values called `what` in the log.
    pub(crate) fn new(what: &'static str) -> Self {
        Refreshing {
            what,
            cached: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(()),
            stored: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            last_failure: Mutex::new(None),
        }
    }

    /// The cached value if it is `usable` and fresh; else one `load`ed (by this caller, or by
    /// the one that was loading meanwhile). A cached value that is not `usable` (made for
    /// other credentials, say) counts as none. With the value, its generation.
    ///
    /// # Errors
    ///
    /// `load`'s error when nothing valid is cached; a copy of it for every caller that waited
    /// on that load.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a load cut short leaves the cache as it was.
    pub(crate) async fn get<F, Fut>(
        &self,
        now: impl Fn() -> SystemTime,
        usable: impl Fn(&T) -> bool,
        load: F,
    ) -> Result<(T, u64), Error>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        if let Some(fresh) = self.fresh(now(), &usable) {
            return Ok(fresh);
        }
        // Not fresh: still valid (to use while one caller refreshes), or nothing to use.
        let stale = self.read().filter(|c| usable(&c.value) && c.valid(now()));
        let Some(stale) = stale else {
            // Nothing valid: every caller waits for the one load.
            let failed_before = self.failed.load(Ordering::Acquire);
            let _refreshing = self.refresh.lock().await;
            if let Some(c) = self.read().filter(|c| usable(&c.value) && c.valid(now())) {
                return Ok((c.value, c.generation));
            }
            if self.failed.load(Ordering::Acquire) != failed_before {
                // The load this caller waited on failed: the same answer, not another try.
                let last = self
                    .last_failure
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if let Some(e) = last.as_ref() {
                    return Err(e.detached());
                }
            }
            return match load().await {
                Ok(value) => Ok((value.clone(), self.store(value, now()))),
                Err(e) => {
                    *self
                        .last_failure
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(e.detached());
                    self.failed.fetch_add(1, Ordering::Release);
                    Err(e)
                }
            };
        };
        // Valid but due for a refresh: one caller refreshes, the others use this one.
        let Ok(_refreshing) = self.refresh.try_lock() else {
            return Ok((stale.value, stale.generation));
        };
        if let Some(c) = self.read().filter(|c| usable(&c.value) && c.fresh(now())) {
            // Refreshed just before this caller took the lock.
            return Ok((c.value, c.generation));
        }
        match load().await {
            Ok(value) => Ok((value.clone(), self.store(value, now()))),
            Err(e) => {
                let t = now();
                let left = stale
                    .value
                    .expiry()
                    .and_then(|exp| exp.duration_since(t).ok())
                    .unwrap_or_default();
                let wait = RETRY_FAILED_REFRESH.min(left / 2);
                tracing::warn!(
                    error = %with_causes(&e),
                    expires_in_s = left.as_secs(),
                    retry_in_ms = wait.as_millis() as u64,
                    "refreshing {} failed; the current ones are still valid",
                    self.what,
                );
                self.postpone(stale.generation, t + wait);
                Ok((stale.value, stale.generation))
            }
        }
    }

    /// The cached value, if it is `usable` and fresh, with its generation.
    #[inline]
    pub(crate) fn fresh(&self, now: SystemTime, usable: impl Fn(&T) -> bool) -> Option<(T, u64)> {
        let cached = self.cached.read().unwrap_or_else(PoisonError::into_inner);
        let c = cached
            .as_ref()
            .filter(|c| usable(&c.value) && c.fresh(now))?;
        Some((c.value.clone(), c.generation))
    }

    /// Drops the cached value if it is of generation `seen` or older (the one a failed
    /// request may have used), so the next caller loads a new one; true if it did. A value
    /// loaded since is kept: many requests failing on one value drop it once.
    pub(crate) fn invalidate(&self, seen: u64) -> bool {
        let mut cached = self.cached.write().unwrap_or_else(PoisonError::into_inner);
        if cached.as_ref().is_some_and(|c| c.generation <= seen) {
            *cached = None;
            return true;
        }
        false
    }

    fn read(&self) -> Option<Cached<T>> {
        self.cached
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stores `value`, refreshed as its lifetime says; returns its generation.
    fn store(&self, value: T, now: SystemTime) -> u64 {
        let generation = self.stored.fetch_add(1, Ordering::AcqRel) + 1;
        let c = Cached::new(value, now, generation);
        *self.cached.write().unwrap_or_else(PoisonError::into_inner) = Some(c);
        generation
    }

    /// Puts the next refresh of the value of `generation`, if it is still cached, off to `at`:
    /// the same value, the same generation (a request refused for it still drops it).
    fn postpone(&self, generation: u64, at: SystemTime) {
        let mut cached = self.cached.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = cached.as_mut().filter(|c| c.generation == generation) {
            c.refresh_at = Some(at);
        }
    }
}

impl<T> std::fmt::Debug for Refreshing<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the value: it holds secrets.
        f.debug_struct("Refreshing")
            .field("what", &self.what)
            .finish_non_exhaustive()
    }
}

/// A provider and the credentials it last gave.
pub(crate) struct CredentialCache {
    provider: SharedCredentialsProvider,
    cache: Refreshing<Credentials>,
}

impl CredentialCache {
    pub(crate) fn new(provider: SharedCredentialsProvider) -> Self {
        CredentialCache {
            provider,
            cache: Refreshing::new("credentials"),
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
        let load = || async {
            self.provider
                .provide_credentials()
                .await
                .map_err(|e| Error::new(ErrorKind::Credentials).with_source(e))
        };
        Ok(self.cache.get(now, |_| true, load).await?.0)
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
    async fn requests_waiting_on_a_failed_load_share_its_error_and_its_cause() {
        #[derive(Debug)]
        struct Sealed {
            calls: Mutex<u32>,
            gate: tokio::sync::Notify,
        }
        impl ProvideCredentials for Sealed {
            fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
            where
                Self: 'a,
            {
                *self.calls.lock().unwrap() += 1;
                future::ProvideCredentials::new(async move {
                    self.gate.notified().await;
                    Err(CredentialsError::provider_error("vault is sealed"))
                })
            }
        }
        let sealed = Arc::new(Sealed {
            calls: Mutex::new(0),
            gate: tokio::sync::Notify::new(),
        });
        let c = CredentialCache::new(SharedCredentialsProvider::new(ArcProvider(sealed.clone())));
        let release = async {
            while *sealed.calls.lock().unwrap() == 0 {
                tokio::task::yield_now().await;
            }
            tokio::task::yield_now().await;
            sealed.gate.notify_one();
        };
        let (a, b, ()) = tokio::join!(id_at(&c, 0), id_at(&c, 0), release);
        for e in [a.unwrap_err(), b.unwrap_err()] {
            assert_eq!(e.kind(), ErrorKind::Credentials);
            assert!(
                e.with_causes().contains("vault is sealed"),
                "{}",
                e.with_causes()
            );
        }
        assert_eq!(
            *sealed.calls.lock().unwrap(),
            1,
            "one load for both requests"
        );
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
