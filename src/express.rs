//! S3 Express One Zone: directory buckets known by their names, their zonal endpoints, and the
//! cache of their sessions.
//!
//! A directory bucket is named `BASE--ZONEID--x-s3`; AWS serves it at
//! `https://BUCKET.s3express-ZONEID.REGION.amazonaws.com`. Its data requests are signed with
//! the keys of a session that `CreateSession` hands out for 5 minutes (S3-NOTES "S3 Express One
//! Zone"). A [`SessionCache`] holds one bucket's session and the credentials it was made from:
//! refreshed before it expires by one request while the others sign with it, made again when
//! the client's credentials change or when the server refuses it. Sessions are secrets: they
//! are never shown by `Debug` or logged.

use std::time::SystemTime;

use aws_credential_types::Credentials;

use crate::credentials::{Expires, Refreshing};
use crate::error::{Error, ErrorKind};

/// The suffix of every directory bucket's name.
const DIRECTORY_SUFFIX: &str = "--x-s3";

/// The most bytes of a `CreateSession` reply that are read.
pub(crate) const MAX_SESSION_REPLY: usize = 64 << 10;

/// True for the name of a directory bucket of S3 Express One Zone (`BASE--ZONEID--x-s3`), whose
/// requests the client sends to its zone's endpoint (when no endpoint is given), signed with a
/// session, and whose listings come in the bucket's own order, without `start-after`.
pub fn is_directory_bucket(bucket: &str) -> bool {
    directory_zone(bucket).is_some()
}

/// The zone ID of a directory bucket (`use1-az4` of `data--use1-az4--x-s3`); `None` for a
/// general purpose bucket's name.
pub(crate) fn directory_zone(bucket: &str) -> Option<&str> {
    let rest = bucket.strip_suffix(DIRECTORY_SUFFIX)?;
    let (base, zone) = rest.rsplit_once("--")?;
    let zone_ok = !zone.is_empty()
        && zone
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    (!base.is_empty() && zone_ok).then_some(zone)
}

/// AWS's zonal endpoint for the directory buckets of `zone` in `region` (a bucket's requests
/// name it in the host: virtual-hosted addressing).
pub(crate) fn zonal_endpoint(zone: &str, region: &str) -> String {
    format!("https://s3express-{zone}.{region}.amazonaws.com")
}

/// True for an error that says the session a request was signed with is no longer good: it
/// expired, or the server does not know it. A HEAD's refusal has no body to name a code, so a
/// 400 or 403 without one counts too; the request is sent once more with a new session, and
/// fails with the server's answer if that one is refused as well.
pub(crate) fn is_session_refused(e: &Error) -> bool {
    match e.code() {
        Some(code) => matches!(
            code,
            "ExpiredToken" | "InvalidToken" | "TokenRefreshRequired"
        ),
        None => e
            .status()
            .is_some_and(|s| s.as_u16() == 400 || s.as_u16() == 403),
    }
}

/// A session: its keys and token, and the credentials it was made with.
#[derive(Clone)]
pub(crate) struct Session {
    /// What requests are signed with (the token goes in `x-amz-s3session-token`).
    pub(crate) keys: Credentials,
    /// The client's credentials that made it: a session is used only with them.
    base: Credentials,
}

impl Session {
    pub(crate) fn new(keys: Credentials, base: Credentials) -> Self {
        Session { keys, base }
    }

    /// Made with `base`: the same access key, secret and token.
    fn made_with(&self, base: &Credentials) -> bool {
        self.base.access_key_id() == base.access_key_id()
            && self.base.secret_access_key() == base.secret_access_key()
            && self.base.session_token() == base.session_token()
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither keys nor token: a session is a secret.
        f.debug_struct("Session")
            .field("expiry", &self.keys.expiry())
            .finish_non_exhaustive()
    }
}

impl Expires for Session {
    fn expiry(&self) -> Option<SystemTime> {
        self.keys.expiry()
    }
}

/// One directory bucket's session.
#[derive(Debug)]
pub(crate) struct SessionCache(Refreshing<Session>);

impl Default for SessionCache {
    fn default() -> Self {
        SessionCache(Refreshing::new("an S3 Express session"))
    }
}

impl SessionCache {
    /// The session to sign the next request with, made with `base`: the cached one while it
    /// is fresh, else one `create`d (by this request, or by the one creating it meanwhile);
    /// with its generation.
    ///
    /// # Errors
    ///
    /// `create`'s error when no valid session made with `base` is cached.
    pub(crate) async fn get<F, Fut>(
        &self,
        now: impl Fn() -> SystemTime,
        base: &Credentials,
        create: F,
    ) -> Result<(Session, u64), Error>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Session, Error>>,
    {
        self.0.get(now, |s| s.made_with(base), create).await
    }

    /// The cached session if it is fresh and made with `base`, with its generation: what most
    /// requests sign with, without waiting.
    #[inline]
    pub(crate) fn fresh(&self, now: SystemTime, base: &Credentials) -> Option<(Session, u64)> {
        self.0.fresh(now, |s| s.made_with(base))
    }

    /// Drops the session if it is of generation `seen` or older; true if it did.
    pub(crate) fn invalidate(&self, seen: u64) -> bool {
        self.0.invalidate(seen)
    }
}

/// The credentials of a `CreateSession` reply (`<CreateSessionResult><Credentials>`).
///
/// # Errors
///
/// [`ErrorKind::InvalidResponse`] for malformed XML or a missing or invalid field.
pub(crate) fn parse_create_session(body: &[u8]) -> Result<Credentials, Error> {
    use quick_xml::events::Event;
    let invalid = |why: String| {
        Error::new(ErrorKind::InvalidResponse)
            .with_message(format!("the CreateSession reply {why}"))
    };
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut path: Vec<Vec<u8>> = Vec::new();
    let mut text = String::new();
    let mut fields: [Option<String>; 4] = Default::default();
    let mut buf = Vec::new();
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| invalid(format!("is not valid XML: {e}")))?;
        match event {
            Event::Start(e) => {
                if path.len() >= 8 {
                    return Err(invalid("is nested too deeply".into()));
                }
                path.push(e.local_name().as_ref().to_vec());
                text.clear();
            }
            Event::Text(t) => {
                let t = t
                    .unescape()
                    .map_err(|e| invalid(format!("is not valid XML: {e}")))?;
                text.push_str(&t);
            }
            Event::End(_) => {
                if let [root, creds, name] = path.as_slice() {
                    let at = [
                        &b"AccessKeyId"[..],
                        b"SecretAccessKey",
                        b"SessionToken",
                        b"Expiration",
                    ]
                    .iter()
                    .position(|n| n == name);
                    if let (b"CreateSessionResult", b"Credentials", Some(at)) =
                        (root.as_slice(), creds.as_slice(), at)
                    {
                        fields[at] = Some(text.trim().to_owned());
                    }
                }
                path.pop();
                text.clear();
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    let [Some(id), Some(secret), Some(token), Some(expiration)] = fields else {
        return Err(invalid(
            "lacks AccessKeyId, SecretAccessKey, SessionToken or Expiration".into(),
        ));
    };
    if id.is_empty() || secret.is_empty() || token.is_empty() {
        return Err(invalid("has an empty key or token".into()));
    }
    let expiry = parse_timestamp(&expiration).ok_or_else(|| {
        invalid(format!(
            "has an Expiration that is not a time: {expiration:?}"
        ))
    })?;
    Ok(Credentials::new(
        id,
        secret,
        Some(token),
        Some(expiry),
        "s3express-session",
    ))
}

/// An ISO 8601 time as S3 writes it (`2024-05-01T12:00:00Z`, `…00.000Z`).
fn parse_timestamp(text: &str) -> Option<SystemTime> {
    use aws_smithy_types::date_time::{DateTime, Format};
    let t = DateTime::from_str(text, Format::DateTime).ok()?;
    SystemTime::try_from(t).ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn directory_buckets_are_known_by_name() {
        assert_eq!(directory_zone("data--use1-az4--x-s3"), Some("use1-az4"));
        assert_eq!(
            directory_zone("my--bucket--usw2-lax1-az1--x-s3"),
            Some("usw2-lax1-az1")
        );
        for general in [
            "data",
            "data-x-s3",
            "--use1-az4--x-s3",
            "data----x-s3",
            "data--USE1--x-s3",
            "data--use1-az4--x-s3-not",
        ] {
            assert_eq!(directory_zone(general), None, "{general}");
        }
    }

    #[test]
    fn the_zonal_endpoint_names_zone_and_region() {
        assert_eq!(
            zonal_endpoint("use1-az4", "us-east-1"),
            "https://s3express-use1-az4.us-east-1.amazonaws.com"
        );
    }

    #[test]
    fn a_create_session_reply_gives_the_session_keys() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<CreateSessionResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Credentials>
    <SessionToken>TOKEN/+=</SessionToken>
    <SecretAccessKey>SECRET</SecretAccessKey>
    <AccessKeyId>ASIAID</AccessKeyId>
    <Expiration>2024-05-01T12:05:00Z</Expiration>
  </Credentials>
</CreateSessionResult>"#;
        let c = parse_create_session(body).unwrap();
        assert_eq!(c.access_key_id(), "ASIAID");
        assert_eq!(c.secret_access_key(), "SECRET");
        assert_eq!(c.session_token(), Some("TOKEN/+="));
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_714_565_100);
        assert_eq!(c.expiry(), Some(at));
        let millis = String::from_utf8_lossy(body).replace("00Z<", "00.250Z<");
        let c = parse_create_session(millis.as_bytes()).unwrap();
        assert_eq!(c.expiry(), Some(at + Duration::from_millis(250)));
    }

    #[test]
    fn a_bad_create_session_reply_is_an_invalid_response() {
        for body in [
            &b"<CreateSessionResult><Credentials><AccessKeyId>A</AccessKeyId></Credentials></CreateSessionResult>"[..],
            b"<CreateSessionResult><Credentials><AccessKeyId>A</AccessKeyId><SecretAccessKey>S</SecretAccessKey><SessionToken>T</SessionToken><Expiration>soon</Expiration></Credentials></CreateSessionResult>",
            b"<Other><Credentials><AccessKeyId>A</AccessKeyId><SecretAccessKey>S</SecretAccessKey><SessionToken>T</SessionToken><Expiration>2024-05-01T12:05:00Z</Expiration></Credentials></Other>",
            b"<CreateSessionResult><Credentials>",
            b"not xml <<<",
        ] {
            let e = parse_create_session(body).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidResponse, "{e}");
        }
    }

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn session(id: &str, expires: u64, base: &Credentials) -> Session {
        let keys = Credentials::new(id, "s", Some("tok".into()), Some(t(expires)), "test");
        Session::new(keys, base.clone())
    }

    /// Gets the session at `secs`, creating `next` if asked to; the id signed with and the
    /// session's generation.
    async fn id_at(
        cache: &SessionCache,
        secs: u64,
        base: &Credentials,
        next: Session,
    ) -> (String, u64) {
        let created = cache.get(|| t(secs), base, || async { Ok(next) }).await;
        let (session, generation) = created.unwrap();
        (session.keys.access_key_id().to_owned(), generation)
    }

    /// The id of [`id_at`]'s session.
    async fn key_at(cache: &SessionCache, secs: u64, base: &Credentials, next: Session) -> String {
        id_at(cache, secs, base, next).await.0
    }

    #[tokio::test]
    async fn a_session_serves_three_quarters_of_its_life_then_is_refreshed() {
        let base = Credentials::new("AKID", "secret", None, None, "test");
        let cache = SessionCache::default();
        let s1 = id_at(&cache, 0, &base, session("S1", 300, &base)).await;
        assert_eq!(s1, ("S1".into(), 1));
        let still = id_at(&cache, 224, &base, session("S2", 524, &base)).await;
        assert_eq!(still, ("S1".into(), 1));
        let s2 = id_at(&cache, 225, &base, session("S2", 525, &base)).await;
        assert_eq!(s2, ("S2".into(), 2));
    }

    #[tokio::test]
    async fn new_credentials_make_a_new_session() {
        let base = Credentials::new("AKID", "secret", None, None, "test");
        let rotated = Credentials::new("AKID", "secret", Some("new".into()), None, "test");
        let cache = SessionCache::default();
        assert_eq!(
            key_at(&cache, 0, &base, session("S1", 300, &base)).await,
            "S1"
        );
        let s2 = session("S2", 300, &rotated);
        assert_eq!(key_at(&cache, 1, &rotated, s2).await, "S2");
    }

    #[tokio::test]
    async fn a_refused_session_is_dropped_once() {
        let base = Credentials::new("AKID", "secret", None, None, "test");
        let cache = SessionCache::default();
        let (_, seen) = id_at(&cache, 0, &base, session("S1", 300, &base)).await;
        assert!(cache.invalidate(seen));
        assert_eq!(
            key_at(&cache, 1, &base, session("S2", 300, &base)).await,
            "S2"
        );
        // Another request that signed with S1 and fails later keeps S2.
        assert!(!cache.invalidate(seen));
        assert_eq!(
            key_at(&cache, 2, &base, session("S3", 300, &base)).await,
            "S2"
        );
    }

    #[tokio::test]
    async fn a_session_kept_after_a_failed_refresh_can_still_be_dropped() {
        let base = Credentials::new("AKID", "secret", None, None, "test");
        let cache = SessionCache::default();
        let (_, seen) = id_at(&cache, 0, &base, session("S1", 300, &base)).await;
        // Due for a refresh, which fails: S1 stays in use, as the same session.
        let refused = || async { Err(Error::new(ErrorKind::Status).with_message("503")) };
        let (kept, generation) = cache.get(|| t(230), &base, refused).await.unwrap();
        assert_eq!((kept.keys.access_key_id(), generation), ("S1", seen));
        // The server refuses S1: the request that signed with it drops it.
        assert!(cache.invalidate(seen));
        assert_eq!(
            key_at(&cache, 231, &base, session("S2", 531, &base)).await,
            "S2"
        );
    }

    #[tokio::test]
    async fn requests_waiting_on_a_failed_creation_share_its_error() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let base = Credentials::new("AKID", "secret", None, None, "test");
        let cache = std::sync::Arc::new(SessionCache::default());
        let calls = AtomicU32::new(0);
        let gate = tokio::sync::Notify::new();
        let refused = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            gate.notified().await;
            Err(Error::new(ErrorKind::AccessDenied).with_message("no"))
        };
        let first = cache.get(|| t(0), &base, refused);
        let second = cache.get(
            || t(0),
            &base,
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok(session("S", 300, &base))
            },
        );
        let release = async {
            // Both wait (the first on its creation, the second on the lock) before it fails.
            while calls.load(Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
            tokio::task::yield_now().await;
            gate.notify_one();
        };
        let (a, b, ()) = tokio::join!(first, second, release);
        assert_eq!(a.unwrap_err().kind(), ErrorKind::AccessDenied);
        assert_eq!(b.unwrap_err().kind(), ErrorKind::AccessDenied);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "one CreateSession for both"
        );
        // A later request tries again.
        assert_eq!(
            key_at(&cache, 1, &base, session("S", 300, &base)).await,
            "S"
        );
    }

    #[test]
    fn session_refusals_are_told_from_other_errors() {
        let status = |n: u16| http::StatusCode::from_u16(n).unwrap();
        let with = |n: u16, code: Option<&str>| {
            Error::new(ErrorKind::Status)
                .with_status(status(n))
                .with_s3_details(code.map(str::to_owned), None, None)
        };
        assert!(is_session_refused(&with(400, Some("ExpiredToken"))));
        assert!(is_session_refused(&with(403, Some("InvalidToken"))));
        assert!(is_session_refused(&with(403, None)));
        assert!(!is_session_refused(&with(403, Some("AccessDenied"))));
        assert!(!is_session_refused(&with(404, None)));
        assert!(!is_session_refused(&with(500, None)));
    }
}
