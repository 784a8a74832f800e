//! SigV4 signing for S3 and S3 Express, with the signing key cached per day, region, service
//! and secret.
//!
//! S3's rules differ from other services: the path is percent-encoded exactly once (keys are
//! encoded when the request is built, the signer must not encode again), the path is never
//! normalised (`a//b` and `a/./b` are distinct keys), and every request carries
//! `x-amz-content-sha256`. Each attempt is signed afresh so the signature's time stays current.
//! A request to a directory bucket is signed for the service `s3express`, and with a session's
//! keys carries their token in `x-amz-s3session-token` instead of `x-amz-security-token`
//! ([`Scope`]).
//!
//! The signature is computed here rather than by `aws-sigv4`, because per request that crate
//! derives the signing key again (four HMACs) and builds the canonical request through dozens of
//! small allocations, several microseconds that dominate the cost of a small GET. This signer
//! derives the key once per day and credentials, and writes the canonical request into one
//! buffer. Its output is checked against `aws-sigv4`'s, byte for byte, by the tests below.

use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use aws_credential_types::Credentials;
use ring::{digest, hmac};

use crate::config::CredentialSource;
use crate::credentials::CredentialCache;
use crate::error::{Error, ErrorKind};
use crate::http1::is_field_value;

/// SHA-256 of an empty body: every request here is a GET or HEAD.
pub(crate) const EMPTY_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

const X_AMZ_DATE: &str = "x-amz-date";
const X_AMZ_CONTENT_SHA256: &str = "x-amz-content-sha256";
const X_AMZ_SECURITY_TOKEN: &str = "x-amz-security-token";
const X_AMZ_S3SESSION_TOKEN: &str = "x-amz-s3session-token";
const AUTHORIZATION: &str = "authorization";

/// Headers that are never signed (proxies may change them), as `aws-sigv4` leaves them out.
const UNSIGNED: [&str; 4] = [
    "authorization",
    "user-agent",
    "x-amzn-trace-id",
    "transfer-encoding",
];

/// What a signature is for: the service its scope names, and the field the credentials'
/// session token goes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Scope {
    service: &'static str,
    token_field: &'static str,
    /// `/SERVICE/aws4_request\n`: the end of the string to sign's scope line.
    scope_line_end: &'static str,
    /// `/SERVICE/aws4_request, SignedHeaders=`: the end of the credential's scope.
    credential_end: &'static str,
}

impl Scope {
    /// S3.
    pub(crate) const S3: Scope = Scope {
        service: "s3",
        token_field: X_AMZ_SECURITY_TOKEN,
        scope_line_end: "/s3/aws4_request\n",
        credential_end: "/s3/aws4_request, SignedHeaders=",
    };
    /// S3 Express with the client's own credentials: `CreateSession`.
    pub(crate) const EXPRESS: Scope = Scope {
        token_field: X_AMZ_SECURITY_TOKEN,
        ..Scope::EXPRESS_SESSION
    };
    /// S3 Express with a session's keys: every request to a directory bucket but
    /// `CreateSession`.
    pub(crate) const EXPRESS_SESSION: Scope = Scope {
        service: "s3express",
        token_field: X_AMZ_S3SESSION_TOKEN,
        scope_line_end: "/s3express/aws4_request\n",
        credential_end: "/s3express/aws4_request, SignedHeaders=",
    };
}

/// Signs requests with credentials from the configured source.
pub(crate) struct Signer {
    credentials: Option<CredentialCache>,
    keys: KeyCache,
}

impl Signer {
    pub(crate) fn new(source: &CredentialSource) -> Self {
        let credentials = match source {
            CredentialSource::Provider(p) => Some(CredentialCache::new(p.clone())),
            // `Environment` is resolved into a provider by validation.
            CredentialSource::Environment | CredentialSource::Anonymous => None,
        };
        Signer {
            credentials,
            keys: KeyCache::default(),
        }
    }

    /// The credentials to sign the next request with; `None` for anonymous clients.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Credentials`] when the provider fails and no valid credentials are cached.
    pub(crate) async fn credentials_for_request(&self) -> Result<Option<Credentials>, Error> {
        match &self.credentials {
            None => Ok(None),
            Some(cache) => cache.get().await.map(Some),
        }
    }

    /// Signs a request now with `creds` for `region` and `scope`; see [`sign_parts`].
    ///
    /// # Errors
    ///
    /// As [`sign_parts`].
    pub(crate) fn sign<'b>(
        &self,
        creds: &Credentials,
        request: Signable<'_>,
        region: &str,
        scope: Scope,
        buf: &'b mut Vec<u8>,
    ) -> Result<Signed<'b>, Error> {
        let at = SystemTime::now();
        sign_parts(request, creds, region, scope, at, &self.keys, buf)
    }
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("anonymous", &self.credentials.is_none())
            .finish_non_exhaustive()
    }
}

/// The signing keys of the last few days, regions, services and secrets signed with.
/// Deriving one takes four HMACs; it changes once a day, or when the credentials rotate. A
/// client signing for directory buckets holds a key per session (one per bucket) beside its
/// own: [`KEYS_CACHED`] of them, the one used last first.
#[derive(Default)]
pub(crate) struct KeyCache(Mutex<Vec<CachedKey>>);

/// The most signing keys a [`KeyCache`] holds.
const KEYS_CACHED: usize = 8;

struct CachedKey {
    date: String,
    region: std::sync::Arc<str>,
    service: &'static str,
    secret: String,
    key: hmac::Key,
}

impl KeyCache {
    fn key(&self, date: &str, region: &str, service: &'static str, secret: &str) -> hmac::Key {
        let mut keys = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let found = keys.iter().position(|c| {
            c.secret == secret && c.date == date && &*c.region == region && c.service == service
        });
        if let Some(at) = found {
            if at > 0 {
                keys[..=at].rotate_right(1);
            }
            return keys[0].key.clone();
        }
        let key = signing_key(date, region, service, secret);
        if keys.len() == KEYS_CACHED {
            keys.pop();
        }
        keys.insert(
            0,
            CachedKey {
                date: date.to_owned(),
                region: region.into(),
                service,
                secret: secret.to_owned(),
                key: key.clone(),
            },
        );
        key
    }
}

/// `kSigning` of SigV4: HMAC("AWS4" + secret, date) → region → service → "aws4_request".
fn signing_key(date: &str, region: &str, service: &str, secret: &str) -> hmac::Key {
    let mut k = Vec::with_capacity(4 + secret.len());
    k.extend_from_slice(b"AWS4");
    k.extend_from_slice(secret.as_bytes());
    let mut tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &k), date.as_bytes());
    for part in [region.as_bytes(), service.as_bytes(), b"aws4_request"] {
        tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, tag.as_ref()), part);
    }
    hmac::Key::new(hmac::HMAC_SHA256, tag.as_ref())
}

/// What is signed of a request: its method, its target as sent (path and query,
/// percent-encoded once) and its header fields — all of them but the ones SigV4 adds
/// (`x-amz-date`, `x-amz-content-sha256`, the session token's field, `authorization`), names
/// in lower case.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Signable<'a> {
    pub(crate) method: &'a str,
    pub(crate) target: &'a str,
    pub(crate) headers: &'a [(&'a str, &'a [u8])],
}

/// The SigV4 fields of one request, to send beside its own: `x-amz-content-sha256`
/// ([`EMPTY_SHA256`]), `x-amz-date`, the session token (with one, in the [`Scope`]'s field)
/// and `authorization`.
#[derive(Debug)]
pub(crate) struct Signed<'b> {
    /// `x-amz-date`: `YYYYMMDDTHHMMSSZ`.
    pub(crate) amz_date: [u8; 16],
    /// `authorization`, in the caller's buffer.
    pub(crate) authorization: &'b [u8],
    /// The field the session token goes in.
    token_field: &'static str,
}

impl Signed<'_> {
    /// Every field to add, in order (with `token`, the session token of the credentials signed
    /// with).
    pub(crate) fn fields<'s>(
        &'s self,
        token: Option<&'s str>,
    ) -> impl Iterator<Item = (&'static str, &'s [u8])> + 's {
        [
            Some((X_AMZ_CONTENT_SHA256, EMPTY_SHA256.as_bytes())),
            Some((X_AMZ_DATE, &self.amz_date[..])),
            token.map(|t| (self.token_field, t.as_bytes())),
            Some((AUTHORIZATION, self.authorization)),
        ]
        .into_iter()
        .flatten()
    }
}

/// Signs a request for `scope` at `time`: the canonical request, the string to sign and the
/// `authorization` value are written into `buf` (cleared first), which the result borrows.
/// Every header given is signed but those in [`UNSIGNED`]; the session token, if any, is
/// signed in the scope's field.
///
/// # Errors
///
/// [`ErrorKind::InvalidRequest`] for a header value or session token that is not visible
/// ASCII.
pub(crate) fn sign_parts<'b>(
    req: Signable<'_>,
    creds: &Credentials,
    region: &str,
    scope: Scope,
    time: SystemTime,
    keys: &KeyCache,
    buf: &'b mut Vec<u8>,
) -> Result<Signed<'b>, Error> {
    let invalid = |why: &str| {
        Error::new(ErrorKind::InvalidRequest)
            .with_message(format!("could not sign the request: {why}"))
    };
    let stamp = Timestamp::new(time);
    let token = creds.session_token();
    if token.is_some_and(|t| !is_field_value(t.as_bytes())) {
        return Err(invalid("bad session token"));
    }
    let added = [
        Some((X_AMZ_DATE, &stamp.amz_date[..])),
        Some((X_AMZ_CONTENT_SHA256, EMPTY_SHA256.as_bytes())),
        token.map(|t| (scope.token_field, t.as_bytes())),
    ];
    // Filled in place: on the stack, it is not moved.
    let mut to_sign = ToSign {
        on_stack: [("", b""); 16],
        on_heap: Vec::new(),
        count: 0,
    };
    let given = req.headers.iter().copied();
    to_sign.extend(given.chain(added.into_iter().flatten()));
    let signed = to_sign.sorted();

    // One buffer holds the canonical request, then the string to sign, then the
    // `Authorization` value.
    buf.clear();
    let names = push_canonical_request(buf, req.method, req.target, signed).map_err(invalid)?;
    let canonical_hash = digest::digest(&digest::SHA256, buf);
    let to_sign_at = buf.len();
    let (amz_date, date) = (stamp.amz_date(), stamp.date());
    push(
        buf,
        &[
            "AWS4-HMAC-SHA256\n",
            amz_date,
            "\n",
            date,
            "/",
            region,
            scope.scope_line_end,
        ],
    );
    push_hex(buf, canonical_hash.as_ref());
    let key = keys.key(date, region, scope.service, creds.secret_access_key());
    let signature = hmac::sign(&key, &buf[to_sign_at..]);

    let auth_at = buf.len();
    let access_key = creds.access_key_id();
    if !is_field_value(access_key.as_bytes()) {
        return Err(invalid("bad access key id"));
    }
    push(
        buf,
        &[
            "AWS4-HMAC-SHA256 Credential=",
            access_key,
            "/",
            date,
            "/",
            region,
            scope.credential_end,
        ],
    );
    buf.extend_from_within(names);
    buf.extend_from_slice(b", Signature=");
    push_hex(buf, signature.as_ref());
    Ok(Signed {
        amz_date: stamp.amz_date,
        authorization: &buf[auth_at..],
        token_field: scope.token_field,
    })
}

/// The headers a request signs (those in [`UNSIGNED`] left out): on the stack for the handful a
/// GET has, all of them on the heap past that.
struct ToSign<'a> {
    on_stack: [(&'a str, &'a [u8]); 16],
    on_heap: Vec<(&'a str, &'a [u8])>,
    count: usize,
}

impl<'a> ToSign<'a> {
    /// Adds `headers`, leaving out those in [`UNSIGNED`].
    fn extend(&mut self, headers: impl Iterator<Item = (&'a str, &'a [u8])>) {
        for (name, value) in headers.filter(|(name, _)| !UNSIGNED.contains(name)) {
            match self.on_stack.get_mut(self.count) {
                Some(slot) => *slot = (name, value),
                None => {
                    if self.on_heap.is_empty() {
                        self.on_heap.extend_from_slice(&self.on_stack);
                    }
                    self.on_heap.push((name, value));
                }
            }
            self.count += 1;
        }
    }

    /// The headers, sorted by name; repeated ones keep their order.
    fn sorted(&mut self) -> &[(&'a str, &'a [u8])] {
        let all: &mut [(&str, &[u8])] = if self.on_heap.is_empty() {
            &mut self.on_stack[..self.count]
        } else {
            &mut self.on_heap
        };
        all.sort_by(|a, b| a.0.cmp(b.0));
        all
    }
}

/// Appends the canonical request of `method` and `target` with the headers `signed` (sorted by
/// name) to `buf`; returns where the list of signed header names is in it.
///
/// # Errors
///
/// Why it cannot be signed: a header value that is not visible ASCII.
fn push_canonical_request(
    buf: &mut Vec<u8>,
    method: &str,
    target: &str,
    signed: &[(&str, &[u8])],
) -> Result<std::ops::Range<usize>, &'static str> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    push(buf, &[method, "\n", path, "\n"]);
    push_canonical_query(buf, query);
    buf.push(b'\n');
    for (i, (name, value)) in signed.iter().enumerate() {
        // Repeated headers are signed as one, their values joined by commas.
        let repeated = i > 0 && signed[i - 1].0 == *name;
        if repeated {
            buf.pop(); // the newline after the previous value
            buf.push(b',');
        } else {
            push(buf, &[name, ":"]);
        }
        if !is_field_value(value) {
            return Err("a header is not visible ASCII");
        }
        push_trimmed(buf, value);
        buf.push(b'\n');
    }
    buf.push(b'\n');
    let names_at = buf.len();
    for (i, (name, _)) in signed.iter().enumerate() {
        if i == 0 || signed[i - 1].0 != *name {
            if i > 0 {
                buf.push(b';');
            }
            buf.extend_from_slice(name.as_bytes());
        }
    }
    let names = names_at..buf.len();
    push(buf, &["\n", EMPTY_SHA256]);
    Ok(names)
}

/// Appends each piece.
fn push(buf: &mut Vec<u8>, pieces: &[&str]) {
    for p in pieces {
        buf.extend_from_slice(p.as_bytes());
    }
}

/// A header value as SigV4 signs it: without leading and trailing blanks, each run of spaces
/// inside as one.
fn push_trimmed(out: &mut Vec<u8>, value: &[u8]) {
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !blank(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !blank(b))
        .map_or(start, |i| i + 1);
    let mut rest = &value[start..end];
    if !rest.contains(&b' ') {
        // Most values (host, dates, ranges, hashes) have no space inside: copied whole.
        out.extend_from_slice(rest);
        return;
    }
    // Runs of spaces inside become one; everything else is copied in slices.
    while let Some(i) = rest.windows(2).position(|w| w == b"  ") {
        out.extend_from_slice(&rest[..=i]);
        let skip = rest[i..].iter().take_while(|&&b| b == b' ').count();
        rest = &rest[i + skip..];
    }
    out.extend_from_slice(rest);
}

/// The canonical query: each parameter's name and value decoded and encoded again as SigV4
/// encodes them (everything but `A-Za-z0-9-_.~`), sorted by name, then by value.
fn push_canonical_query(out: &mut Vec<u8>, query: &str) {
    if query.is_empty() {
        return;
    }
    use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    const SIGV4: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    let mut params: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let enc = |s: &str| {
                let decoded = percent_decode_str(s).decode_utf8_lossy();
                utf8_percent_encode(&decoded, SIGV4).to_string()
            };
            (enc(k), enc(v))
        })
        .collect();
    params.sort();
    for (i, (k, v)) in params.iter().enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        push(out, &[k, "=", v]);
    }
}

/// Appends the lower-case hex of a 32-byte digest.
fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 64];
    for (pair, b) in text.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
    }
    out.extend_from_slice(&text[..2 * bytes.len().min(32)]);
}

/// `YYYYMMDDTHHMMSSZ` of a time, in UTC.
struct Timestamp {
    amz_date: [u8; 16],
}

impl Timestamp {
    fn new(time: SystemTime) -> Self {
        let secs = time
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let (y, m, d) = civil_from_days(days);
        let (hh, mm, ss) = (rem / 3600, rem / 60 % 60, rem % 60);
        let mut amz_date = *b"00000000T000000Z";
        let mut put = |at: usize, width: usize, mut v: u64| {
            for i in (at..at + width).rev() {
                amz_date[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, y);
        put(4, 2, m);
        put(6, 2, d);
        put(9, 2, hh);
        put(11, 2, mm);
        put(13, 2, ss);
        Timestamp { amz_date }
    }

    /// `YYYYMMDDTHHMMSSZ`.
    fn amz_date(&self) -> &str {
        // Only ASCII digits and letters were written.
        std::str::from_utf8(&self.amz_date).unwrap_or_default()
    }

    /// `YYYYMMDD`, the credential scope's date.
    fn date(&self) -> &str {
        &self.amz_date()[..8]
    }
}

/// Year, month, day of the `days`-th day after 1970-01-01 (the proleptic Gregorian calendar;
/// H. Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

pub(crate) mod bench {
    //! A facade over the signer for the crate's benchmarks.

    use super::{sign_parts, KeyCache, Scope, Signable};
    use aws_credential_types::Credentials;
    use std::time::SystemTime;

    /// Signs GETs as the client does, with static credentials and one key cache.
    pub struct SignBench {
        creds: Credentials,
        keys: KeyCache,
        buf: Vec<u8>,
    }

    impl std::fmt::Debug for SignBench {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("SignBench").finish_non_exhaustive()
        }
    }

    impl Default for SignBench {
        fn default() -> Self {
            SignBench {
                creds: Credentials::new(
                    "AKIDEXAMPLE",
                    "wJalrXUtnFEMI/K7MDENG",
                    None,
                    None,
                    "bench",
                ),
                keys: KeyCache::default(),
                buf: Vec::new(),
            }
        }
    }

    impl SignBench {
        /// Signs a GET of `target` (`/bucket/key`) on `host`, with a `range` field when given;
        /// returns the length of the `authorization` value.
        pub fn sign_get(&mut self, host: &str, target: &str, range: Option<&str>) -> usize {
            let fields = [
                ("host", host.as_bytes()),
                ("range", range.unwrap_or_default().as_bytes()),
            ];
            let req = Signable {
                method: "GET",
                target,
                headers: &fields[..1 + usize::from(range.is_some())],
            };
            let now = SystemTime::now();
            sign_parts(
                req,
                &self.creds,
                "us-east-1",
                Scope::S3,
                now,
                &self.keys,
                &mut self.buf,
            )
            .map_or(0, |s| s.authorization.len())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    /// [`sign_parts`] applied to an `http` request whose URI is percent-encoded and which has
    /// its `host` header: the SigV4 headers are added to it.
    fn sign_request(
        req: &mut http::Request<()>,
        creds: &Credentials,
        region: &str,
        time: SystemTime,
        keys: &KeyCache,
    ) -> Result<(), Error> {
        sign_request_for(req, creds, region, Scope::S3, time, keys)
    }

    /// [`sign_request`] for `scope`.
    fn sign_request_for(
        req: &mut http::Request<()>,
        creds: &Credentials,
        region: &str,
        scope: Scope,
        time: SystemTime,
        keys: &KeyCache,
    ) -> Result<(), Error> {
        let target = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let method = req.method().as_str().to_owned();
        let headers: Vec<(&str, &[u8])> = req
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes()))
            .collect();
        let mut buf = Vec::new();
        let signable = Signable {
            method: &method,
            target: &target,
            headers: &headers,
        };
        let signed = sign_parts(signable, creds, region, scope, time, keys, &mut buf)?;
        let fields: Vec<(&'static str, Vec<u8>)> = signed
            .fields(creds.session_token())
            .map(|(n, v)| (n, v.to_vec()))
            .collect();
        drop(headers);
        for (name, value) in fields {
            let value = http::HeaderValue::from_bytes(&value).unwrap();
            req.headers_mut().insert(name, value);
        }
        Ok(())
    }

    /// `req` as an `http` request, as it is sent (before signing).
    fn to_http(req: &crate::s3::S3Request<'_>) -> http::Request<()> {
        let mut target = Vec::new();
        req.write_target(&mut target);
        let mut out = http::Request::new(());
        *out.method_mut() = req.method().clone();
        *out.uri_mut() = http::Uri::try_from(target).unwrap();
        for (name, value) in req.headers() {
            out.headers_mut()
                .append(name, http::HeaderValue::from_bytes(value).unwrap());
        }
        out
    }

    /// What `aws-sigv4` makes of the same request for `scope` (its service, and a session's
    /// token in `x-amz-s3session-token` as the SDKs' S3 Express signer names it): the
    /// reference this signer must match.
    fn sign_with_aws_sigv4_for<B>(
        req: &mut http::Request<B>,
        creds: &Credentials,
        region: &str,
        scope: Scope,
        time: SystemTime,
    ) {
        use aws_sigv4::http_request::{
            sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest,
            SigningSettings, UriPathNormalizationMode,
        };
        use aws_sigv4::sign::v4;
        use aws_smithy_runtime_api::client::identity::Identity;

        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        if scope == Scope::EXPRESS_SESSION {
            settings.session_token_name_override = Some("x-amz-s3session-token");
        }
        let identity: Identity = creds.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name(scope.service)
            .time(time)
            .settings(settings)
            .build()
            .unwrap()
            .into();
        let headers: Vec<(&str, &str)> = req
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        let signable = SignableRequest::new(
            req.method().as_str(),
            req.uri().to_string(),
            headers.into_iter(),
            SignableBody::Bytes(&[]),
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        instructions.apply_to_request_http1x(req);
    }

    fn signed_headers(req: &http::Request<()>) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = req
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        v.sort();
        v
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Byte for byte what `aws-sigv4` sends, for keys of any characters (encoded once, as
        /// requests are built), version ids, part numbers (a HEAD), ranges, `If-Match`,
        /// session tokens, regions, times from 1970 to 2200, up to 20 more headers and a
        /// header sent twice; to a general purpose bucket, to a directory bucket with a
        /// session's keys (`s3express`, the token in `x-amz-s3session-token`, as the SDKs'
        /// S3 Express signer sends it), and `CreateSession` (`s3express`, the client's keys).
        #[test]
        fn matches_aws_sigv4(
            key in "[a-zA-Z0-9 /._~+%=&?!*'()$,;:@-]{1,40}|\\PC{1,12}",
            version in proptest::option::of("[a-zA-Z0-9._+/=-]{1,30}"),
            range in proptest::option::of((0u64..1 << 40, 0u64..1 << 20)),
            if_match in proptest::option::of("\"[ a-f0-9-]{1,40}\""),
            token in proptest::option::of("[A-Za-z0-9/+=]{8,60}"),
            region in "[a-z]{2}-[a-z]{4,9}-[1-9]",
            secs in 0u64..7_258_118_400,
            list in any::<bool>(),
            extra in 0usize..20,
            repeated in proptest::option::of(("[a-z0-9 ]{1,12}", "[a-z0-9 ]{1,12}")),
            part in proptest::option::of(1u32..=10_000),
            express in 0u8..3,
        ) {
            // A session always has a token.
            let token = match express {
                1 => Some(token.unwrap_or_else(|| "SESSIONTOKEN".into())),
                _ => token,
            };
            let creds = Credentials::new("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token, None, "t");
            let time = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            let cfg = crate::config::ClientBuilder::default()
                .endpoint_url("http://127.0.0.1:9000")
                .static_credentials("a", "b", None)
                .validate()
                .unwrap();
            let bucket = if express > 0 { "bucket--use1-az4--x-s3" } else { "bucket" };
            let target = crate::s3::BucketTarget::new(&cfg, bucket).unwrap();
            let built = match (list, part) {
                _ if express == 2 => target.create_session(),
                // A first page after a key (by one level), or a page a token continues to.
                (true, Some(_)) => target.list_objects_v2(&key, Some("/"), None, Some(&key)),
                (true, None) => target.list_objects_v2(&key, None, version.as_deref(), None),
                (false, None) => target.get_object(&key, version.as_deref()).unwrap(),
                (false, Some(n)) => {
                    let mut r = target.head_object(&key, version.as_deref()).unwrap();
                    r.part_number(n);
                    r
                }
            };
            let mut req = to_http(&built);
            if let Some((first, len)) = range {
                let v = format!("bytes={first}-{}", first + len);
                req.headers_mut().insert(http::header::RANGE, v.parse().unwrap());
            }
            if let Some(etag) = if_match {
                req.headers_mut().insert(http::header::IF_MATCH, etag.parse().unwrap());
            }
            // More headers than the signer keeps on the stack, and one sent twice.
            for i in 0..extra {
                let name = http::HeaderName::try_from(format!("x-amz-meta-h{i:02}")).unwrap();
                req.headers_mut().insert(name, format!("v{i}").parse().unwrap());
            }
            if let Some((a, b)) = repeated {
                let h = req.headers_mut();
                h.append("x-amz-meta-twice", a.parse().unwrap());
                h.append("x-amz-meta-twice", b.parse().unwrap());
            }
            let scope = built.scope();
            let expected = [Scope::S3, Scope::EXPRESS_SESSION, Scope::EXPRESS][usize::from(express)];
            prop_assert_eq!(scope, expected);
            let mut reference = req.clone();
            sign_with_aws_sigv4_for(&mut reference, &creds, &region, scope, time);
            // Twice with one cache: the second signature comes from the cached key.
            let keys = KeyCache::default();
            for _ in 0..2 {
                let mut ours = req.clone();
                sign_request_for(&mut ours, &creds, &region, scope, time, &keys).unwrap();
                prop_assert_eq!(signed_headers(&ours), signed_headers(&reference));
            }
        }
    }

    #[test]
    fn the_key_cache_follows_the_day_the_secret_and_the_service() {
        let keys = KeyCache::default();
        let sig = |secret: &str, secs: u64, scope: Scope| {
            let creds = Credentials::new("AKID", secret, Some("T".into()), None, "t");
            let mut req = http::Request::get("/b/k")
                .header("host", "h")
                .body(())
                .unwrap();
            let time = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            sign_request_for(&mut req, &creds, "us-east-1", scope, time, &keys).unwrap();
            let mut reference = http::Request::get("/b/k")
                .header("host", "h")
                .body(())
                .unwrap();
            sign_with_aws_sigv4_for(&mut reference, &creds, "us-east-1", scope, time);
            (
                req.headers()["authorization"].clone(),
                reference.headers()["authorization"].clone(),
            )
        };
        // The same key serves a day; the next day, a rotated secret or another service
        // derives a new one, and one used before comes back from the cache.
        let (s3, express) = (Scope::S3, Scope::EXPRESS_SESSION);
        for (secret, secs, scope) in [
            ("A", 86_400, s3),
            ("A", 86_400 + 3600, s3),
            ("A", 86_400 + 3600, express),
            ("A", 86_400 + 3700, s3),
            ("A", 2 * 86_400, s3),
            ("B", 2 * 86_400, express),
            ("A", 2 * 86_400, s3),
            ("B", 2 * 86_400, express),
        ] {
            let (ours, reference) = sig(secret, secs, scope);
            assert_eq!(ours, reference, "{secret} at {secs} for {scope:?}");
        }
        for i in 0..KEYS_CACHED + 2 {
            let secret = format!("S{i}");
            let (ours, reference) = sig(&secret, 86_400, s3);
            assert_eq!(ours, reference, "{secret}");
        }
        assert_eq!(
            keys.0.lock().unwrap().len(),
            KEYS_CACHED,
            "the cache holds at most {KEYS_CACHED} keys"
        );
    }

    #[test]
    fn a_session_token_goes_in_its_scope_s_field() {
        let creds = Credentials::new("AKID", "SECRET", Some("TOKEN".into()), None, "test");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for (scope, field, other) in [
            (
                Scope::EXPRESS_SESSION,
                "x-amz-s3session-token",
                "x-amz-security-token",
            ),
            (
                Scope::EXPRESS,
                "x-amz-security-token",
                "x-amz-s3session-token",
            ),
        ] {
            let mut req = http::Request::get("/k")
                .header(
                    "host",
                    "b--use1-az4--x-s3.s3express-use1-az4.us-east-1.amazonaws.com",
                )
                .body(())
                .unwrap();
            sign_request_for(
                &mut req,
                &creds,
                "us-east-1",
                scope,
                t,
                &KeyCache::default(),
            )
            .unwrap();
            assert_eq!(req.headers()[field], "TOKEN");
            assert!(req.headers().get(other).is_none(), "{other} for {scope:?}");
            let auth = req.headers()["authorization"].to_str().unwrap();
            assert!(auth.contains("/us-east-1/s3express/aws4_request"), "{auth}");
            assert!(auth.contains(field), "{auth}");
        }
    }

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        let at = |secs: u64| {
            let t = Timestamp::new(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
            String::from_utf8(t.amz_date.to_vec()).unwrap()
        };
        assert_eq!(at(0), "19700101T000000Z");
        assert_eq!(at(951_782_400), "20000229T000000Z"); // a leap day of a century year
        assert_eq!(at(1_369_353_600), "20130524T000000Z");
        assert_eq!(at(4_102_444_799), "20991231T235959Z");
        assert_eq!(at(4_107_542_400), "21000301T000000Z"); // 2100 is not a leap year
    }

    /// The "GET Object" example of the S3 SigV4 documentation ("Examples: Signature
    /// Calculations in AWS Signature Version 4", header-based authentication).
    #[test]
    fn known_answer_get_object_example() {
        let creds = Credentials::new(
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            None,
            None,
            "test",
        );
        let mut req = http::Request::get("/test.txt")
            .header("host", "examplebucket.s3.amazonaws.com")
            .header("range", "bytes=0-9")
            .body(())
            .unwrap();
        // 20130524T000000Z
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_369_353_600);
        sign_request(&mut req, &creds, "us-east-1", time, &KeyCache::default()).unwrap();
        let auth = req.headers()["authorization"].to_str().unwrap();
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
        assert_eq!(
            req.headers()["x-amz-content-sha256"],
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(req.headers()["x-amz-date"], "20130524T000000Z");
    }

    #[test]
    fn session_token_is_sent_and_signed() {
        let creds = Credentials::new("AKID", "SECRET", Some("TOKEN".into()), None, "test");
        let mut req = http::Request::get("/b/k")
            .header("host", "localhost:9000")
            .body(())
            .unwrap();
        sign_request(
            &mut req,
            &creds,
            "us-east-1",
            SystemTime::now(),
            &KeyCache::default(),
        )
        .unwrap();
        assert_eq!(req.headers()["x-amz-security-token"], "TOKEN");
        let auth = req.headers()["authorization"].to_str().unwrap();
        assert!(auth.contains("x-amz-security-token"), "{auth}");
    }

    #[test]
    fn path_is_not_normalised_or_reencoded() {
        // Two different keys must give two different signatures, and %2B must not become %252B.
        let creds = Credentials::new("AKID", "SECRET", None, None, "test");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let sig = |path: &str| {
            let mut req = http::Request::get(path)
                .header("host", "h")
                .body(())
                .unwrap();
            sign_request(&mut req, &creds, "us-east-1", t, &KeyCache::default()).unwrap();
            req.headers()["authorization"].to_str().unwrap().to_owned()
        };
        assert_ne!(sig("/b/a//c"), sig("/b/a/c"));
        assert_ne!(sig("/b/a/./c"), sig("/b/a/c"));
        assert_ne!(sig("/b/a%2Bc"), sig("/b/a%252Bc"));
    }

    #[tokio::test]
    async fn anonymous_clients_have_no_credentials_to_sign_with() {
        let signer = Signer::new(&CredentialSource::Anonymous);
        assert!(signer.credentials_for_request().await.unwrap().is_none());
    }

    #[test]
    fn values_are_trimmed_and_checked() {
        let trimmed = |v: &str| {
            let mut out = Vec::new();
            push_trimmed(&mut out, v.as_bytes());
            String::from_utf8(out).unwrap()
        };
        assert_eq!(trimmed("  a   b \t c  "), "a b \t c");
        assert_eq!(trimmed(" \t "), "");
        assert_eq!(trimmed("x"), "x");
        assert_eq!(trimmed(" a\tb "), "a\tb");
        assert_eq!(trimmed("a  b"), "a b");
        let creds = Credentials::new("AKID", "SECRET", None, None, "test");
        let headers = [("host", &b"h"[..]), ("x-amz-meta-a", &b"caf\xc3\xa9"[..])];
        let req = Signable {
            method: "GET",
            target: "/b/k",
            headers: &headers,
        };
        let e = sign_parts(
            req,
            &creds,
            "r",
            Scope::S3,
            SystemTime::now(),
            &KeyCache::default(),
            &mut Vec::new(),
        )
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidRequest);
    }
}
