//! A stand-in for a directory bucket of S3 Express One Zone, on 127.0.0.1, path-style.
//!
//! `GET /BUCKET/?session` is `CreateSession`: it must be signed with the base keys
//! ([`ACCESS_KEY`], [`SECRET_KEY`]) for the service `s3express`, ask for a `ReadOnly` session and
//! carry no `x-amz-s3session-token`; it answers a new session's keys, valid for the configured
//! lifetime. Every other request must be signed with a live session's keys for `s3express`,
//! carry that session's token in `x-amz-s3session-token` and no `x-amz-security-token`.
//! Signatures are checked by recomputing them with `aws-sigv4` (independent of the client's
//! signer). It serves GET (whole or one range), HEAD and ListObjectsV2 — in an order that is
//! not lexicographic (keys reversed), without `start-after`, and with a delimiter only under a
//! prefix that ends in it, as directory buckets list — and counts what it saw.
//!
//! A refused session is answered `400 ExpiredToken` when it expired and `403 InvalidToken`
//! when [`ExpressServer::invalidate_sessions`] dropped it; a bad signature `403
//! SignatureDoesNotMatch`. In the `direct` mode it is a server that takes directory-bucket
//! names but not sessions: `CreateSession` is not implemented, and data requests must be
//! signed with the base keys for `s3express`.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use tokio::net::TcpListener;

use crate::s3_server::{serve, ACCESS_KEY, SECRET_KEY};

/// A directory bucket's name.
pub const EXPRESS_BUCKET: &str = "data--use1-az4--x-s3";

/// What the stand-in counts.
#[derive(Debug, Default)]
pub struct ExpressCounts {
    /// Sessions handed out.
    pub sessions: AtomicUsize,
    /// CreateSession requests refused because the server was told to refuse them.
    pub sessions_refused: AtomicUsize,
    /// Data requests (GET, HEAD, list) served with a valid session.
    pub served: AtomicUsize,
    /// Data requests refused for an expired or dropped session.
    pub session_refusals: AtomicUsize,
    /// Requests refused for anything else: a bad signature, a missing or wrong token field.
    pub bad_requests: AtomicUsize,
}

struct SessionRecord {
    secret: String,
    token: String,
    expires: SystemTime,
    dropped: bool,
}

struct State {
    objects: BTreeMap<String, Vec<u8>>,
    life: Duration,
    refuse_sessions: bool,
    direct: bool,
    page: usize,
    base_token: Option<String>,
    sessions: Mutex<HashMap<String, SessionRecord>>,
    /// Why each bad request was refused.
    why: Mutex<Vec<String>>,
    counts: ExpressCounts,
}

/// The running stand-in.
pub struct ExpressServer {
    pub addr: SocketAddr,
    state: Arc<State>,
}

/// How the stand-in behaves.
pub struct ExpressOptions {
    /// How long a session lives.
    pub life: Duration,
    /// Refuse every CreateSession with `403 AccessDenied`.
    pub refuse_sessions: bool,
    /// Keys per ListObjectsV2 page.
    pub page: usize,
    /// No sessions: data requests signed with the base keys.
    pub direct: bool,
    /// The base keys' session token (temporary credentials), sent and signed in
    /// `x-amz-security-token` with `CreateSession` only.
    pub base_token: Option<String>,
}

impl Default for ExpressOptions {
    fn default() -> Self {
        ExpressOptions {
            life: Duration::from_secs(300),
            refuse_sessions: false,
            page: 1000,
            direct: false,
            base_token: None,
        }
    }
}

impl ExpressServer {
    /// Serves `objects` in [`EXPRESS_BUCKET`].
    pub async fn start(objects: Vec<(String, Vec<u8>)>, options: ExpressOptions) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State {
            objects: objects.into_iter().collect(),
            life: options.life,
            refuse_sessions: options.refuse_sessions,
            direct: options.direct,
            page: options.page,
            base_token: options.base_token,
            sessions: Mutex::new(HashMap::new()),
            why: Mutex::new(Vec::new()),
            counts: ExpressCounts::default(),
        });
        let s = Arc::clone(&state);
        serve(listener, move |req| {
            let s = Arc::clone(&s);
            async move { Ok::<_, Infallible>(respond(&s, req)) }
        });
        ExpressServer { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn counts(&self) -> &ExpressCounts {
        &self.state.counts
    }

    /// Why requests were refused as bad (empty when none was).
    pub fn bad(&self) -> Vec<String> {
        self.state.why.lock().unwrap().clone()
    }

    /// Drops every session handed out so far: requests signed with them are refused.
    pub fn invalidate_sessions(&self) {
        for s in self.state.sessions.lock().unwrap().values_mut() {
            s.dropped = true;
        }
    }
}

fn count(c: &AtomicUsize) {
    c.fetch_add(1, Ordering::SeqCst);
}

fn error(status: u16, code: &str) -> hyper::Response<Full<Bytes>> {
    let body = format!("<Error><Code>{code}</Code><Message>{code}</Message></Error>");
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/xml")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn header<'a>(req: &'a hyper::Request<hyper::body::Incoming>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn respond(s: &State, req: hyper::Request<hyper::body::Incoming>) -> hyper::Response<Full<Bytes>> {
    let query = req.uri().query().unwrap_or_default().to_owned();
    if s.direct {
        if query == "session" {
            return error(501, "NotImplemented");
        }
        if let Err(why) = verify(&req, ACCESS_KEY, SECRET_KEY, Base(s.base_token.as_deref())) {
            count(&s.counts.bad_requests);
            s.why.lock().unwrap().push(why);
            return error(403, "SignatureDoesNotMatch");
        }
    } else if query == "session" {
        return create_session(s, &req);
    } else if let Some(refused) = check_session(s, &req) {
        return refused;
    }
    count(&s.counts.served);
    let path = percent_decode(req.uri().path());
    let Some(rest) = path.strip_prefix(&format!("/{EXPRESS_BUCKET}/")) else {
        return error(404, "NoSuchBucket");
    };
    if rest.is_empty() && query.contains("list-type=2") {
        return list(s, &query);
    }
    let Some(body) = s.objects.get(rest) else {
        return error(404, "NoSuchKey");
    };
    let etag = format!(
        "\"{:016x}\"",
        body.len() as u64 * 31 + body.first().copied().unwrap_or(0) as u64
    );
    let range = header(&req, "range").and_then(|r| {
        let (a, b) = r.strip_prefix("bytes=")?.split_once('-')?;
        let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
        Some((a, b.min(body.len().saturating_sub(1))))
    });
    let head = req.method() == hyper::Method::HEAD;
    let builder = hyper::Response::builder().header("etag", etag);
    let (builder, bytes) = match range {
        Some((a, b)) if a <= b && b < body.len() => (
            builder
                .status(206)
                .header("content-range", format!("bytes {a}-{b}/{}", body.len())),
            body[a..=b].to_vec(),
        ),
        Some(_) => return error(416, "InvalidRange"),
        None => (builder.status(200), body.clone()),
    };
    let builder = builder.header("content-length", bytes.len());
    let bytes = if head { Vec::new() } else { bytes };
    builder.body(Full::new(Bytes::from(bytes))).unwrap()
}

fn create_session(
    s: &State,
    req: &hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let bad = |why: String| {
        count(&s.counts.bad_requests);
        s.why.lock().unwrap().push(why);
        error(403, "SignatureDoesNotMatch")
    };
    if header(req, "x-amz-s3session-token").is_some() {
        return bad("CreateSession carried a session token".into());
    }
    if header(req, "x-amz-create-session-mode") != Some("ReadOnly") {
        return bad("CreateSession did not ask for a ReadOnly session".into());
    }
    if let Err(why) = verify(req, ACCESS_KEY, SECRET_KEY, Base(s.base_token.as_deref())) {
        return bad(format!("CreateSession: {why}"));
    }
    if s.refuse_sessions {
        count(&s.counts.sessions_refused);
        return error(403, "AccessDenied");
    }
    let n = s.counts.sessions.fetch_add(1, Ordering::SeqCst) + 1;
    let (id, secret, token) = (
        format!("ASIASESSION{n:04}"),
        format!("session/secret+{n}"),
        format!("TOKEN{n}/abc+def=="),
    );
    // Whole seconds, as S3 writes them.
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expires = SystemTime::UNIX_EPOCH + Duration::from_secs(secs) + s.life;
    let expiration = aws_smithy_types::DateTime::from(expires)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap();
    s.sessions.lock().unwrap().insert(
        id.clone(),
        SessionRecord {
            secret: secret.clone(),
            token: token.clone(),
            expires,
            dropped: false,
        },
    );
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <CreateSessionResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Credentials>\
         <SessionToken>{token}</SessionToken><SecretAccessKey>{secret}</SecretAccessKey>\
         <AccessKeyId>{id}</AccessKeyId><Expiration>{expiration}</Expiration>\
         </Credentials></CreateSessionResult>"
    );
    hyper::Response::new(Full::new(Bytes::from(body)))
}

/// Checks a data request's session and signature: the refusal, if any.
fn check_session(
    s: &State,
    req: &hyper::Request<hyper::body::Incoming>,
) -> Option<hyper::Response<Full<Bytes>>> {
    let bad = |why: String| {
        count(&s.counts.bad_requests);
        s.why.lock().unwrap().push(why);
        error(403, "SignatureDoesNotMatch")
    };
    if header(req, "x-amz-security-token").is_some() {
        return Some(bad("a data request carried x-amz-security-token".into()));
    }
    let Some(token) = header(req, "x-amz-s3session-token") else {
        return Some(bad("a data request carried no x-amz-s3session-token".into()));
    };
    let id = credential_scope(header(req, "authorization").unwrap_or_default())
        .map(|(id, ..)| id.to_owned())
        .unwrap_or_default();
    let (secret, refused) = {
        let sessions = s.sessions.lock().unwrap();
        let Some(session) = sessions.get(&id) else {
            return Some(bad(format!("signed by {id:?}, not a session")));
        };
        if session.token != token {
            return Some(bad(format!("session {id} with another session's token")));
        }
        let refused = if session.dropped {
            Some((403, "InvalidToken"))
        } else if SystemTime::now() >= session.expires {
            Some((400, "ExpiredToken"))
        } else {
            None
        };
        (session.secret.clone(), refused)
    };
    if let Err(why) = verify(req, &id, &secret, Session(token)) {
        return Some(bad(why));
    }
    let (status, code) = refused?;
    count(&s.counts.session_refusals);
    Some(error(status, code))
}

/// `(access key, region, service)` of an `Authorization` value's credential scope.
fn credential_scope(auth: &str) -> Option<(&str, &str, &str)> {
    let mut scope = auth
        .split("Credential=")
        .nth(1)?
        .split(',')
        .next()?
        .split('/');
    let id = scope.next()?;
    let region = scope.nth(1)?;
    let service = scope.next()?;
    Some((id, region, service))
}

/// Whose token a request carries.
#[derive(Clone, Copy)]
enum Token<'a> {
    /// The base keys' (if temporary), in `x-amz-security-token`.
    Base(Option<&'a str>),
    /// A session's, in `x-amz-s3session-token`.
    Session(&'a str),
}
use Token::{Base, Session};

/// Recomputes the request's signature with `aws-sigv4` from what it says it signed, with the
/// keys and token given, and compares.
fn verify(
    req: &hyper::Request<hyper::body::Incoming>,
    id: &str,
    secret: &str,
    token: Token<'_>,
) -> Result<(), String> {
    let (session_token, field) = match token {
        Base(t) => (t, "x-amz-security-token"),
        Session(t) => (Some(t), "x-amz-s3session-token"),
    };
    use aws_sigv4::http_request::{
        sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest,
        SigningSettings, UriPathNormalizationMode,
    };
    use aws_sigv4::sign::v4;
    use aws_smithy_runtime_api::client::identity::Identity;

    let auth = header(req, "authorization").ok_or("not signed")?;
    let (signer, region, service) = credential_scope(auth).ok_or("no credential scope")?;
    if signer != id {
        return Err(format!("signed by {signer:?}, not {id:?}"));
    }
    if service != "s3express" {
        return Err(format!("signed for {service:?}, not s3express"));
    }
    let amz_date = header(req, "x-amz-date").ok_or("no x-amz-date")?;
    let time = parse_amz_date(amz_date).ok_or("a bad x-amz-date")?;
    let signed: Vec<&str> = auth
        .split("SignedHeaders=")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .ok_or("no SignedHeaders")?
        .split(';')
        .collect();
    let added = [
        "x-amz-date",
        "x-amz-content-sha256",
        "x-amz-s3session-token",
    ];
    let mut headers = Vec::new();
    for name in &signed {
        if added.contains(name) || *name == "x-amz-security-token" {
            continue;
        }
        let value = header(req, name).ok_or_else(|| format!("signed {name} is missing"))?;
        headers.push((*name, value));
    }
    if session_token.is_some() && !signed.contains(&field) {
        return Err(format!("the token is not signed in {field}"));
    }
    if session_token.is_some_and(|t| header(req, field) != Some(t)) {
        return Err(format!("{field} is not the token"));
    }
    let mut settings = SigningSettings::default();
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    settings.session_token_name_override = Some(field);
    let creds = aws_credential_types::Credentials::new(
        id,
        secret,
        session_token.map(str::to_owned),
        None,
        "standin",
    );
    let identity: Identity = creds.into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("s3express")
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let uri = req.uri().to_string();
    let signable = SignableRequest::new(
        req.method().as_str(),
        uri,
        headers.into_iter(),
        SignableBody::Bytes(&[]),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    let expected = instructions
        .headers()
        .find(|(n, _)| *n == "authorization")
        .map(|(_, v)| v.to_owned())
        .ok_or("aws-sigv4 gave no authorization")?;
    if expected != auth {
        return Err(format!(
            "signature mismatch: sent {auth:?}, expected {expected:?}"
        ));
    }
    Ok(())
}

/// `YYYYMMDDTHHMMSSZ` as a time.
fn parse_amz_date(text: &str) -> Option<SystemTime> {
    let iso = format!(
        "{}-{}-{}T{}:{}:{}Z",
        text.get(0..4)?,
        text.get(4..6)?,
        text.get(6..8)?,
        text.get(9..11)?,
        text.get(11..13)?,
        text.get(13..15)?
    );
    let t =
        aws_smithy_types::DateTime::from_str(&iso, aws_smithy_types::date_time::Format::DateTime)
            .ok()?;
    SystemTime::try_from(t).ok()
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// One ListObjectsV2 page: keys reversed (not lexicographic), `page` at a time, the
/// continuation token the index of the next key.
fn list(s: &State, query: &str) -> hyper::Response<Full<Bytes>> {
    let params: HashMap<String, String> = query
        .split('&')
        .filter_map(|p| p.split_once('=').or(Some((p, ""))))
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        .collect();
    if params.contains_key("start-after") {
        return error(400, "InvalidArgument");
    }
    let prefix = params.get("prefix").cloned().unwrap_or_default();
    let delimiter = params.get("delimiter").cloned().filter(|d| !d.is_empty());
    if let Some(d) = &delimiter {
        if !prefix.is_empty() && !prefix.ends_with(d.as_str()) {
            return error(400, "InvalidArgument");
        }
    }
    let mut entries: Vec<(bool, String, usize)> = Vec::new();
    let mut seen_prefixes = std::collections::HashSet::new();
    for (key, body) in s.objects.iter().rev() {
        let Some(rest) = key.strip_prefix(&prefix) else {
            continue;
        };
        match delimiter
            .as_deref()
            .and_then(|d| rest.find(d).map(|at| at + d.len()))
        {
            Some(end) => {
                let common = format!("{prefix}{}", &rest[..end]);
                if seen_prefixes.insert(common.clone()) {
                    entries.push((true, common, 0));
                }
            }
            None => entries.push((false, key.clone(), body.len())),
        }
    }
    let from: usize = params
        .get("continuation-token")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let to = (from + s.page).min(entries.len());
    let mut xml = String::from("<ListBucketResult>");
    for (is_prefix, name, size) in &entries[from.min(to)..to] {
        let name = name.replace('&', "&amp;").replace('<', "&lt;");
        if *is_prefix {
            xml.push_str(&format!(
                "<CommonPrefixes><Prefix>{name}</Prefix></CommonPrefixes>"
            ));
        } else {
            xml.push_str(&format!(
                "<Contents><Key>{name}</Key><Size>{size}</Size></Contents>"
            ));
        }
    }
    let truncated = to < entries.len();
    xml.push_str(&format!("<IsTruncated>{truncated}</IsTruncated>"));
    if truncated {
        xml.push_str(&format!(
            "<NextContinuationToken>{to}</NextContinuationToken>"
        ));
    }
    xml.push_str("</ListBucketResult>");
    hyper::Response::new(Full::new(Bytes::from(xml)))
}
