//! The S3 protocol: building GetObject, HeadObject, ListObjectsV2 and (for directory buckets)
//! CreateSession requests — addressing, key encoding, `versionId`, how each is signed — and
//! reading S3's XML error bodies.
//!
//! Keys are percent-encoded once, byte by byte, keeping only RFC 3986 unreserved characters and
//! `/` (S3's canonical URI rules); the signer is told not to encode again. Error bodies are read
//! up to [`MAX_ERROR_BODY`] bytes and parsed leniently: a malformed or missing body still yields
//! a typed error from the status code.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use http::header::{HeaderValue, HOST};
use http::{Method, StatusCode};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::config::{
    aws_endpoint, is_region_name, Addressing, Config, ExtraFields, MAX_EXTRA_FIELDS,
};
use crate::error::{Error, ErrorKind};
use crate::express::{directory_zone, zonal_endpoint, SessionCache};
use crate::http1::Origin;
use crate::object::ObjectRef;
use crate::sign::Scope;

/// The most bytes of an error body that are read and parsed.
pub(crate) const MAX_ERROR_BODY: usize = 64 << 10;

/// Everything but unreserved characters (`A-Z a-z 0-9 - _ . ~`) and `/`.
const KEY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// Everything but unreserved characters.
const QUERY_VALUE: &AsciiSet = &KEY.add(b'/');

/// Where requests for one bucket go in one region: the connection key, the `host` field, the
/// path prefix, and the region they are signed for.
#[derive(Debug)]
pub(crate) struct Route {
    /// `scheme://authority` to dial (connections are pooled per origin).
    pub(crate) origin: Origin,
    host: HeaderValue,
    /// Path prefix before the key: `/bucket/` (path-style) or `/` (virtual-hosted).
    prefix: String,
    /// The region requests are signed for.
    pub(crate) region: Arc<str>,
}

/// How requests for a directory bucket (S3 Express One Zone) are signed.
#[derive(Debug)]
pub(crate) enum Express {
    /// With a session's keys, from `CreateSession`.
    Sessions(Box<SessionCache>),
    /// With the client's own credentials for `s3express`, without sessions (a server that
    /// takes directory-bucket names but not sessions).
    Direct,
}

/// Where requests for one bucket go. The route changes when a reply teaches the bucket's
/// region ([`reroute`](Self::reroute)); each request takes the route current when it is made.
#[derive(Debug)]
pub(crate) struct BucketTarget {
    bucket: String,
    route: Mutex<Arc<Route>>,
    /// The request options' fields.
    extra: Arc<ExtraFields>,
    /// For a directory bucket: how its requests are signed.
    express: Option<Express>,
}

impl BucketTarget {
    /// Resolves addressing for `bucket` in the configured region.
    ///
    /// # Errors
    ///
    /// As [`new_in`](Self::new_in).
    #[cfg(test)]
    pub(crate) fn new(config: &Config, bucket: &str) -> Result<Self, Error> {
        Self::new_in(config, bucket, Arc::clone(&config.region))
    }

    /// Resolves addressing for `bucket` in `region`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidRequest`] for an empty bucket name, one holding `/`, or (with
    /// virtual-hosted addressing) one that is not a valid DNS name.
    pub(crate) fn new_in(config: &Config, bucket: &str, region: Arc<str>) -> Result<Self, Error> {
        let route = Route::new(config, bucket, region)?;
        let express = directory_zone(bucket).map(|_| {
            if config.s3_express_sessions {
                Express::Sessions(Box::default())
            } else {
                Express::Direct
            }
        });
        Ok(BucketTarget {
            bucket: bucket.to_owned(),
            route: Mutex::new(Arc::new(route)),
            extra: Arc::clone(&config.extra_fields),
            express,
        })
    }

    /// The bucket's name.
    pub(crate) fn bucket(&self) -> &str {
        &self.bucket
    }

    /// True for a directory bucket (S3 Express One Zone).
    pub(crate) fn is_directory(&self) -> bool {
        self.express.is_some()
    }

    /// The bucket's sessions, when its requests are signed with them.
    pub(crate) fn sessions(&self) -> Option<&SessionCache> {
        match &self.express {
            Some(Express::Sessions(cache)) => Some(cache),
            _ => None,
        }
    }

    /// A `CreateSession` request (read-only), for a directory bucket's session.
    pub(crate) fn create_session(&self) -> S3Request<'_> {
        S3Request::new(Method::GET, self, Resource::Session)
    }

    /// The route requests take now.
    pub(crate) fn route(&self) -> Arc<Route> {
        Arc::clone(&self.route.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Sends later requests to `region`: signed for it, and for an endpoint that follows the
    /// region (AWS's), to that region's endpoint. Returns false if they already went there.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidResponse`] for a region name that cannot form an endpoint.
    pub(crate) fn reroute(&self, config: &Config, region: &str) -> Result<bool, Error> {
        let mut current = self.route.lock().unwrap_or_else(PoisonError::into_inner);
        if &*current.region == region {
            return Ok(false);
        }
        let route = Route::new(config, &self.bucket, Arc::from(region)).map_err(|e| {
            Error::new(ErrorKind::InvalidResponse)
                .with_message(format!("the server named region {region:?}"))
                .with_source(e)
        })?;
        *current = Arc::new(route);
        Ok(true)
    }

    /// A GetObject request for `key` (optionally at `version_id`).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidRequest`] for an empty key.
    pub(crate) fn get_object<'a>(
        &'a self,
        key: &'a str,
        version_id: Option<&'a str>,
    ) -> Result<S3Request<'a>, Error> {
        self.object_request(Method::GET, key, version_id)
    }

    /// A HeadObject request for `key` (optionally at `version_id`).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidRequest`] for an empty key.
    pub(crate) fn head_object<'a>(
        &'a self,
        key: &'a str,
        version_id: Option<&'a str>,
    ) -> Result<S3Request<'a>, Error> {
        self.object_request(Method::HEAD, key, version_id)
    }

    fn object_request<'a>(
        &'a self,
        method: Method,
        key: &'a str,
        version_id: Option<&'a str>,
    ) -> Result<S3Request<'a>, Error> {
        if key.is_empty() {
            return Err(Error::new(ErrorKind::InvalidRequest).with_message("the key is empty"));
        }
        Ok(S3Request::new(
            method,
            self,
            Resource::Object { key, version_id },
        ))
    }

    /// A ListObjectsV2 request for one page of keys under `prefix`: the first page (no token)
    /// of those after `start_after`, or the page the token continues to.
    pub(crate) fn list_objects_v2<'a>(
        &'a self,
        prefix: &'a str,
        delimiter: Option<&'a str>,
        continuation_token: Option<&'a str>,
        start_after: Option<&'a str>,
    ) -> S3Request<'a> {
        S3Request::new(
            Method::GET,
            self,
            Resource::List {
                prefix,
                delimiter,
                token: continuation_token,
                start_after: start_after.filter(|_| continuation_token.is_none()),
            },
        )
    }
}

impl Route {
    fn new(config: &Config, bucket: &str, region: Arc<str>) -> Result<Self, Error> {
        let invalid = |why: &str| {
            Error::new(ErrorKind::InvalidRequest).with_message(format!("bucket {bucket:?} {why}"))
        };
        if bucket.is_empty() {
            return Err(invalid("is empty"));
        }
        if bucket.contains('/') {
            return Err(invalid("must not contain '/'"));
        }
        if !is_region_name(&region) {
            return Err(Error::new(ErrorKind::InvalidRequest)
                .with_message(format!("{region:?} is not a region name")));
        }
        // AWS's endpoint follows the bucket: a directory bucket's zone, another region.
        let zone = directory_zone(bucket).filter(|_| config.endpoint_follows_region);
        let (own, addressing) = match zone {
            Some(zone) => (
                Some(zonal_endpoint(zone, &region)),
                Addressing::VirtualHosted,
            ),
            None if config.endpoint_follows_region && *region != *config.region => {
                (Some(aws_endpoint(&region)), config.addressing)
            }
            None => (None, config.addressing),
        };
        let own = own
            .map(|url| url.parse::<http::Uri>())
            .transpose()
            .map_err(|e| invalid("does not form a valid URL").with_source(e))?;
        let endpoint = own.as_ref().unwrap_or(&config.endpoint);
        let scheme = endpoint.scheme_str().unwrap_or("https");
        let authority = endpoint.authority().map(|a| a.as_str()).unwrap_or_default();
        let default_port = matches!(
            (scheme, endpoint.port_u16()),
            ("http", Some(80)) | ("https", Some(443)) | (_, None)
        );
        let host_only = endpoint.host().unwrap_or_default();
        let host_header = if default_port { host_only } else { authority };
        let (host, prefix) = match addressing {
            Addressing::PathStyle => (
                host_header.to_owned(),
                format!("/{}/", utf8_percent_encode(bucket, KEY)),
            ),
            Addressing::VirtualHosted => {
                if !is_dns_compatible(bucket) {
                    return Err(invalid(
                        "is not a DNS-compatible name; use path-style addressing",
                    ));
                }
                (format!("{bucket}.{host_header}"), "/".to_owned())
            }
        };
        let dial_authority = match addressing {
            Addressing::PathStyle => authority.to_owned(),
            Addressing::VirtualHosted => format!("{bucket}.{authority}"),
        };
        let origin = http::Uri::builder()
            .scheme(scheme)
            .authority(dial_authority)
            .path_and_query("/")
            .build()
            .map_err(|e| invalid("does not form a valid URL").with_source(e))?;
        let host = HeaderValue::from_str(&host)
            .map_err(|e| invalid("does not form a valid host").with_source(e))?;
        Ok(Route {
            origin: Origin::new(origin),
            host,
            prefix,
            region,
        })
    }
}

/// The fields of a request's own: host, range, if-match, checksum mode (or session mode).
const OWN_FIELDS: usize = 4;

/// The most header fields [`S3Request::headers`] yields: its own and the request options'.
pub(crate) const MAX_REQUEST_FIELDS: usize = OWN_FIELDS + MAX_EXTRA_FIELDS;

/// What a request asks for.
#[derive(Debug, Clone, Copy)]
enum Resource<'a> {
    /// `CreateSession` on a directory bucket.
    Session,
    Object {
        key: &'a str,
        version_id: Option<&'a str>,
    },
    List {
        prefix: &'a str,
        delimiter: Option<&'a str>,
        token: Option<&'a str>,
        start_after: Option<&'a str>,
    },
}

/// One S3 request, described without allocating; written out (and signed) into the buffers of
/// the connection that sends it, afresh for every attempt.
#[derive(Debug)]
pub(crate) struct S3Request<'a> {
    method: Method,
    target: &'a BucketTarget,
    /// The target's route when the request was made (or last [`reroute`](Self::reroute)d).
    route: Arc<Route>,
    resource: Resource<'a>,
    /// `bytes=first-last`, when a range is asked for.
    range: Option<RangeText>,
    if_match: Option<&'a [u8]>,
    checksum_mode: bool,
    /// `partNumber`: one part of a multipart upload (a HEAD for the part's checksum).
    part_number: Option<u32>,
    /// The generation of the S3 Express session it was last signed with (its low 32 bits, in
    /// the struct's padding); 0 for none.
    session: AtomicU32,
}

/// `bytes=first-last`, formatted in place.
#[derive(Debug, Clone, Copy)]
struct RangeText {
    text: [u8; 48],
    len: usize,
}

impl<'a> S3Request<'a> {
    fn new(method: Method, target: &'a BucketTarget, resource: Resource<'a>) -> Self {
        S3Request {
            method,
            route: target.route(),
            target,
            resource,
            range: None,
            if_match: None,
            checksum_mode: false,
            part_number: None,
            session: AtomicU32::new(0),
        }
    }

    /// Asks for bytes `first..=last` only.
    pub(crate) fn range(&mut self, first: u64, last: u64) {
        let mut text = [0u8; 48];
        let mut len = 0;
        let mut put = |s: &[u8]| {
            text[len..len + s.len()].copy_from_slice(s);
            len += s.len();
        };
        put(b"bytes=");
        put(itoa::Buffer::new().format(first).as_bytes());
        put(b"-");
        put(itoa::Buffer::new().format(last).as_bytes());
        self.range = Some(RangeText { text, len });
    }

    /// Asks for the object only if its ETag is still `etag`.
    pub(crate) fn if_match(&mut self, etag: &'a [u8]) {
        self.if_match = Some(etag);
    }

    /// Asks for part `number` of the multipart upload the object was made by.
    pub(crate) fn part_number(&mut self, number: u32) {
        self.part_number = Some(number);
    }

    /// Asks for the object's checksum headers.
    pub(crate) fn checksum_mode(&mut self) {
        self.checksum_mode = true;
    }

    /// The method.
    pub(crate) fn method(&self) -> &Method {
        &self.method
    }

    /// Where requests go: the origin to dial.
    pub(crate) fn origin(&self) -> &Origin {
        &self.route.origin
    }

    /// The bucket's target.
    pub(crate) fn target(&self) -> &'a BucketTarget {
        self.target
    }

    /// The region the request is signed for.
    pub(crate) fn region(&self) -> &str {
        &self.route.region
    }

    /// What the request is signed for: S3, or S3 Express with the client's credentials
    /// (`CreateSession`, or every request without sessions) or with a session's.
    pub(crate) fn scope(&self) -> Scope {
        match (&self.target.express, self.resource) {
            (None, _) => Scope::S3,
            (Some(Express::Sessions(_)), Resource::Session) | (Some(Express::Direct), _) => {
                Scope::EXPRESS
            }
            (Some(Express::Sessions(_)), _) => Scope::EXPRESS_SESSION,
        }
    }

    /// Notes that the request was signed with the session of generation `generation`.
    pub(crate) fn signed_with(&self, generation: u64) {
        // Generations count sessions made (one per bucket every few minutes): they never
        // reach 2^32.
        self.session.store(generation as u32, Ordering::Relaxed);
    }

    /// The generation of the session the request was last signed with, if any.
    pub(crate) fn session_signed(&self) -> Option<u64> {
        Some(u64::from(self.session.load(Ordering::Relaxed))).filter(|&g| g > 0)
    }

    /// The sessions this request is signed with: `None` for a request signed with the
    /// client's credentials.
    pub(crate) fn sessions(&self) -> Option<&'a SessionCache> {
        match self.resource {
            Resource::Session => None,
            _ => self.target.sessions(),
        }
    }

    /// Takes the target's current route, for a request made again after its bucket's region
    /// was learned.
    pub(crate) fn reroute(&mut self) {
        self.route = self.target.route();
    }

    /// Appends the request target (path and query), percent-encoded once: only ASCII.
    pub(crate) fn write_target(&self, out: &mut Vec<u8>) {
        let mut push = |s: &str| out.extend_from_slice(s.as_bytes());
        push(&self.route.prefix);
        match self.resource {
            Resource::Session => push("?session"),
            Resource::Object { key, version_id } => {
                utf8_percent_encode(key, KEY).for_each(&mut push);
                let mut sep = "?";
                if let Some(v) = version_id {
                    push("?versionId=");
                    utf8_percent_encode(v, QUERY_VALUE).for_each(&mut push);
                    sep = "&";
                }
                if let Some(n) = self.part_number {
                    push(sep);
                    push("partNumber=");
                    push(itoa::Buffer::new().format(n));
                }
            }
            Resource::List {
                prefix,
                delimiter,
                token,
                start_after,
            } => {
                push("?list-type=2");
                if let Some(delimiter) = delimiter {
                    push("&delimiter=");
                    utf8_percent_encode(delimiter, QUERY_VALUE).for_each(&mut push);
                }
                if !prefix.is_empty() {
                    push("&prefix=");
                    utf8_percent_encode(prefix, QUERY_VALUE).for_each(&mut push);
                }
                if let Some(after) = start_after {
                    push("&start-after=");
                    utf8_percent_encode(after, QUERY_VALUE).for_each(&mut push);
                }
                if let Some(token) = token {
                    push("&continuation-token=");
                    utf8_percent_encode(token, QUERY_VALUE).for_each(&mut push);
                }
            }
        }
    }

    /// The header fields to send (before signing), names in lower case, `host` first.
    pub(crate) fn headers(&self) -> impl Iterator<Item = (&'static str, &[u8])> + '_ {
        let fields: [Option<(&'static str, &[u8])>; OWN_FIELDS] = [
            Some((HOST.as_str(), self.route.host.as_bytes())),
            self.range.as_ref().map(|r| ("range", &r.text[..r.len])),
            self.if_match.map(|v| ("if-match", v)),
            match self.resource {
                // The client only reads: a session that may only read.
                Resource::Session => Some(("x-amz-create-session-mode", &b"ReadOnly"[..])),
                _ => self
                    .checksum_mode
                    .then_some(("x-amz-checksum-mode", &b"ENABLED"[..])),
            },
        ];
        let extra = &self.target.extra;
        let object = match self.resource {
            Resource::Object { .. } => &extra.object[..],
            Resource::List { .. } | Resource::Session => &[],
        };
        let options = extra.all.iter().chain(object);
        fields
            .into_iter()
            .flatten()
            .chain(options.map(|(name, value)| (*name, value.as_bytes())))
    }
}

/// DNS-compatible bucket names (S3 bucket naming rules, without the dotted forms that break TLS).
fn is_dns_compatible(bucket: &str) -> bool {
    (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !bucket.starts_with('-')
        && !bucket.ends_with('-')
}

/// The fields of an S3 `<Error>` body.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct S3ErrorBody {
    pub(crate) code: Option<String>,
    pub(crate) message: Option<String>,
    pub(crate) request_id: Option<String>,
    /// `<Region>`: the bucket's region, in a wrong-region reply.
    pub(crate) region: Option<String>,
}

/// Parses an S3 XML error body, keeping what it can; never fails.
pub(crate) fn parse_error_body(body: &[u8]) -> S3ErrorBody {
    use quick_xml::events::Event;
    let body = &body[..body.len().min(MAX_ERROR_BODY)];
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut out = S3ErrorBody::default();
    let mut path: Vec<Vec<u8>> = Vec::new();
    let mut buf = Vec::new();
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(Event::Start(e)) => {
                if path.len() > 8 {
                    break;
                }
                path.push(e.local_name().as_ref().to_vec());
            }
            Ok(Event::End(_)) => {
                path.pop();
            }
            Ok(Event::Text(t)) if path.len() == 2 && path[0] == b"Error" => {
                let Ok(text) = t.unescape() else { continue };
                let text = text.trim();
                let text: String = text.chars().take(1024).collect();
                match path[1].as_slice() {
                    b"Code" => out.code = Some(text),
                    b"Message" => out.message = Some(text),
                    b"RequestId" => out.request_id = Some(text),
                    b"Region" => out.region = Some(text),
                    _ => {}
                }
            }
            Ok(Event::Eof) | Err(_) => break,
            Ok(_) => {}
        }
        buf.clear();
    }
    out
}

/// The most bytes of one ListObjectsV2 page that are read (a 1000-key page is well under 1 MiB).
pub(crate) const MAX_LIST_PAGE: usize = 16 << 20;

/// One page of a ListObjectsV2 reply.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ListPage {
    pub(crate) objects: Vec<ObjectRef>,
    /// The page's `CommonPrefixes` (with a delimiter), in S3's order.
    pub(crate) prefixes: Vec<String>,
    /// The token for the next page; `None` on the last page.
    pub(crate) next_token: Option<String>,
}

/// Parses a ListObjectsV2 reply.
///
/// # Errors
///
/// [`ErrorKind::InvalidResponse`] for malformed XML, a `Contents` entry without a key or with a
/// size that is not a number, or a truncated page without a continuation token.
pub(crate) fn parse_list_page(body: &[u8]) -> Result<ListPage, Error> {
    use quick_xml::events::Event;
    let invalid = |why: String| Error::new(ErrorKind::InvalidResponse).with_message(why);
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut page = ListPage::default();
    let mut path: Vec<Vec<u8>> = Vec::new();
    let mut text = String::new();
    let (mut key, mut size): (Option<String>, Option<u64>) = (None, None);
    let mut truncated = false;
    let mut saw_root = false;
    let mut buf = Vec::new();
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| invalid(format!("malformed ListObjectsV2 XML: {e}")))?;
        match event {
            Event::Start(e) => {
                if path.len() >= 8 {
                    return Err(invalid("ListObjectsV2 XML nested too deeply".into()));
                }
                let name = e.local_name().as_ref().to_vec();
                if path.is_empty() {
                    if name != b"ListBucketResult" {
                        return Err(invalid("reply is not a ListBucketResult".into()));
                    }
                    saw_root = true;
                }
                path.push(name);
                text.clear();
            }
            Event::Text(t) => {
                let t = t
                    .unescape()
                    .map_err(|e| invalid(format!("malformed ListObjectsV2 XML: {e}")))?;
                text.push_str(&t);
            }
            Event::CData(t) => text.push_str(&String::from_utf8_lossy(&t)),
            Event::End(_) => {
                let names: Vec<&[u8]> = path.iter().map(Vec::as_slice).collect();
                match names.as_slice() {
                    [_, b"Contents", b"Key"] => key = Some(std::mem::take(&mut text)),
                    [_, b"Contents", b"Size"] => {
                        size = Some(text.trim().parse().map_err(|_| {
                            invalid(format!("object size {:?} is not a number", text.trim()))
                        })?);
                    }
                    [_, b"Contents"] => {
                        let k = key
                            .take()
                            .ok_or_else(|| invalid("a listed object has no Key".into()))?;
                        let s = size
                            .take()
                            .ok_or_else(|| invalid(format!("listed object {k:?} has no Size")))?;
                        page.objects.push(ObjectRef::new(k, s));
                    }
                    [_, b"CommonPrefixes", b"Prefix"] => {
                        page.prefixes.push(std::mem::take(&mut text));
                    }
                    [_, b"IsTruncated"] => truncated = text.trim() == "true",
                    [_, b"NextContinuationToken"] => {
                        page.next_token = Some(std::mem::take(&mut text));
                    }
                    _ => {}
                }
                path.pop();
                text.clear();
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !saw_root {
        return Err(invalid("reply is not a ListBucketResult".into()));
    }
    if !path.is_empty() {
        return Err(invalid(
            "ListObjectsV2 XML ends before its last element closes".into(),
        ));
    }
    if !truncated {
        page.next_token = None;
    } else if page.next_token.as_deref().is_none_or(str::is_empty) {
        return Err(invalid(
            "listing is truncated but has no continuation token".into(),
        ));
    }
    Ok(page)
}

/// A `Content-Range: bytes FIRST-LAST/TOTAL` value, as `(first, last, total)` with
/// `first <= last < total`; `None` for anything else (`*` totals, other units, overflow).
pub(crate) fn parse_content_range(value: &str) -> Option<(u64, u64, u64)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let (first, last, total) = (num(first)?, num(last)?, num(total)?);
    (first <= last && last < total).then_some((first, last, total))
}

/// The region a reply names for a request sent to the wrong one (S3-NOTES "Bucket region"): a
/// 301 or 307 with `x-amz-bucket-region`, a 400 `AuthorizationHeaderMalformed` whose body
/// has `<Region>`, or a HEAD's 400 (which has no body) with `x-amz-bucket-region`.
fn redirect_region(
    status: StatusCode,
    bucket_region: Option<&[u8]>,
    body: &S3ErrorBody,
) -> Option<String> {
    let header = bucket_region
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::trim);
    let region = match status {
        StatusCode::MOVED_PERMANENTLY | StatusCode::TEMPORARY_REDIRECT => {
            header.or(body.region.as_deref())
        }
        StatusCode::BAD_REQUEST
            if matches!(
                body.code.as_deref(),
                Some("AuthorizationHeaderMalformed" | "IllegalLocationConstraintException")
            ) =>
        {
            body.region.as_deref().or(header)
        }
        // A HEAD's 400 has no body to name the code: the field says it all.
        StatusCode::BAD_REQUEST if body.code.is_none() => header,
        _ => None,
    }?;
    is_region_name(region).then(|| region.to_owned())
}

/// S3 and AWS error codes that mean "slow down" (the AWS SDKs' throttling error list).
fn is_throttling_code(code: &str) -> bool {
    matches!(
        code,
        "SlowDown"
            | "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "RequestThrottledException"
            | "TooManyRequestsException"
            | "ProvisionedThroughputExceededException"
            | "TransactionInProgressException"
            | "RequestLimitExceeded"
            | "BandwidthLimitExceeded"
            | "LimitExceededException"
            | "RequestThrottled"
            | "PriorRequestNotComplete"
            | "EC2ThrottledException"
    )
}

/// The error for a non-success response with status `status`, (possibly partial) `body` and
/// `x-amz-bucket-region` field `bucket_region`. A reply that names the bucket's region for a
/// request signed for another is [`ErrorKind::WrongRegion`], with the region.
pub(crate) fn status_error(status: StatusCode, body: &[u8], bucket_region: Option<&[u8]>) -> Error {
    let parsed = parse_error_body(body);
    if let Some(region) = redirect_region(status, bucket_region, &parsed) {
        return Error::new(ErrorKind::WrongRegion)
            .with_status(status)
            .with_s3_details(
                parsed.code,
                Some(format!("the bucket is in region {region}")),
                parsed.request_id,
            )
            .with_region(region);
    }
    let throttling = parsed.code.as_deref().is_some_and(is_throttling_code);
    let kind = match status {
        _ if throttling => ErrorKind::Throttled,
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => ErrorKind::Throttled,
        StatusCode::NOT_FOUND => ErrorKind::NotFound,
        StatusCode::FORBIDDEN => ErrorKind::AccessDenied,
        StatusCode::PRECONDITION_FAILED => ErrorKind::Changed,
        _ => ErrorKind::Status,
    };
    Error::new(kind).with_status(status).with_s3_details(
        parsed.code,
        parsed.message,
        parsed.request_id,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClientBuilder;

    fn config(endpoint: &str, addressing: Addressing) -> Config {
        ClientBuilder::default()
            .endpoint_url(endpoint)
            .anonymous()
            .addressing(addressing)
            .validate()
            .unwrap()
    }

    /// The request's target and its `host` field, as sent.
    fn sent(r: &S3Request<'_>) -> (String, String) {
        let mut target = Vec::new();
        r.write_target(&mut target);
        let host = r.headers().find(|(n, _)| *n == "host").unwrap().1;
        (
            String::from_utf8(target).unwrap(),
            String::from_utf8(host.to_vec()).unwrap(),
        )
    }

    #[test]
    fn headers_follow_what_is_asked() {
        let c = config("http://127.0.0.1:9000", Addressing::PathStyle);
        let t = BucketTarget::new(&c, "bkt").unwrap();
        let mut r = t.get_object("k", None).unwrap();
        r.range(0, u64::MAX);
        r.if_match(b"\"e\"");
        r.checksum_mode();
        let h: Vec<_> = r
            .headers()
            .map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v)))
            .collect();
        assert_eq!(
            h,
            [
                "host: 127.0.0.1:9000",
                "range: bytes=0-18446744073709551615",
                "if-match: \"e\"",
                "x-amz-checksum-mode: ENABLED"
            ]
        );
    }

    #[test]
    fn a_directory_bucket_goes_to_its_zonal_endpoint() {
        let aws = ClientBuilder::default()
            .region("us-west-2")
            .static_credentials("a", "b", None)
            .validate()
            .unwrap();
        let bucket = "data--usw2-az1--x-s3";
        let t = BucketTarget::new(&aws, bucket).unwrap();
        let r = t.get_object("k/1", None).unwrap();
        let host = format!("{bucket}.s3express-usw2-az1.us-west-2.amazonaws.com");
        assert_eq!(sent(&r), ("/k/1".to_owned(), host.clone()));
        assert_eq!(r.origin().uri().to_string(), format!("https://{host}/"));
        assert_eq!(r.scope(), Scope::EXPRESS_SESSION);
        assert!(r.sessions().is_some());
        // Path-style addressing asked for on AWS's endpoint does not apply to the zone.
        let path_style = ClientBuilder::default()
            .region("us-west-2")
            .addressing(Addressing::PathStyle)
            .static_credentials("a", "b", None)
            .validate()
            .unwrap();
        let t = BucketTarget::new(&path_style, bucket).unwrap();
        assert_eq!(sent(&t.get_object("k", None).unwrap()).1, host);
        // A general purpose bucket stays on the regional endpoint, signed for S3.
        let t = BucketTarget::new(&aws, "data").unwrap();
        let r = t.get_object("k", None).unwrap();
        assert_eq!(sent(&r).1, "data.s3.us-west-2.amazonaws.com");
        assert_eq!(r.scope(), Scope::S3);
        assert!(r.sessions().is_none());
    }

    #[test]
    fn a_directory_bucket_behind_a_custom_endpoint_is_addressed_as_configured() {
        let c = config("http://127.0.0.1:9000", Addressing::PathStyle);
        let t = BucketTarget::new(&c, "data--use1-az4--x-s3").unwrap();
        let r = t.get_object("k", None).unwrap();
        assert_eq!(
            sent(&r),
            (
                "/data--use1-az4--x-s3/k".to_owned(),
                "127.0.0.1:9000".to_owned()
            )
        );
        let s = t.create_session();
        assert_eq!(
            sent(&s),
            (
                "/data--use1-az4--x-s3/?session".to_owned(),
                "127.0.0.1:9000".to_owned()
            )
        );
        let fields: Vec<_> = s.headers().map(|(n, v)| (n, v.to_vec())).collect();
        assert!(fields.contains(&("x-amz-create-session-mode", b"ReadOnly".to_vec())));
        // CreateSession is signed with the client's keys, for s3express, and takes no session.
        assert_eq!(s.scope(), Scope::EXPRESS);
        assert!(s.sessions().is_none());
        // Without sessions, every request is signed with the client's keys for s3express.
        let direct = ClientBuilder::default()
            .endpoint_url("http://127.0.0.1:9000")
            .anonymous()
            .s3_express_sessions(false)
            .validate()
            .unwrap();
        let t = BucketTarget::new(&direct, "data--use1-az4--x-s3").unwrap();
        let r = t.get_object("k", None).unwrap();
        assert_eq!((r.scope(), r.sessions().is_none()), (Scope::EXPRESS, true));
    }

    #[test]
    fn path_style_encodes_key_once() {
        let c = config("http://127.0.0.1:9000", Addressing::PathStyle);
        let t = BucketTarget::new(&c, "bkt").unwrap();
        let r = t.get_object("a b+c%d=e&f~g/ü//h", Some("v 1/+")).unwrap();
        let (target, host) = sent(&r);
        assert_eq!(
            target,
            "/bkt/a%20b%2Bc%25d%3De%26f~g/%C3%BC//h?versionId=v%201%2F%2B"
        );
        assert_eq!(host, "127.0.0.1:9000");
        assert_eq!(t.route().origin.uri().to_string(), "http://127.0.0.1:9000/");
        // A HEAD of one upload part, with and without a version.
        let mut r = t.head_object("k", Some("v1")).unwrap();
        r.part_number(7);
        assert_eq!(sent(&r).0, "/bkt/k?versionId=v1&partNumber=7");
        let mut r = t.head_object("k", None).unwrap();
        r.part_number(10_000);
        assert_eq!(sent(&r).0, "/bkt/k?partNumber=10000");
    }

    #[test]
    fn virtual_hosted_puts_bucket_in_host() {
        let c = config(
            "https://s3.eu-west-1.amazonaws.com",
            Addressing::VirtualHosted,
        );
        let t = BucketTarget::new(&c, "my-bucket").unwrap();
        let r = t.get_object("k/x.bin", None).unwrap();
        let (target, host) = sent(&r);
        assert_eq!(target, "/k/x.bin");
        assert_eq!(host, "my-bucket.s3.eu-west-1.amazonaws.com");
        assert_eq!(
            t.route().origin.uri().to_string(),
            "https://my-bucket.s3.eu-west-1.amazonaws.com/"
        );
        let e = BucketTarget::new(&c, "My_Bucket").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidRequest);
    }

    #[test]
    fn wrong_region_replies_name_the_region() {
        let wrong = |status: u16, body: &[u8], header: Option<&[u8]>| {
            let e = status_error(StatusCode::from_u16(status).unwrap(), body, header);
            (e.kind(), e.region().map(str::to_owned))
        };
        let moved = b"<Error><Code>PermanentRedirect</Code><Endpoint>b.s3.eu-west-1.amazonaws.com</Endpoint></Error>";
        assert_eq!(
            wrong(301, moved, Some(b"eu-west-1")),
            (ErrorKind::WrongRegion, Some("eu-west-1".into()))
        );
        // A HEAD's redirect has no body, and a new bucket's may be a 307.
        assert_eq!(
            wrong(301, b"", Some(b"ap-south-2")),
            (ErrorKind::WrongRegion, Some("ap-south-2".into()))
        );
        assert_eq!(
            wrong(307, b"", Some(b"us-west-2")),
            (ErrorKind::WrongRegion, Some("us-west-2".into()))
        );
        let malformed = b"<Error><Code>AuthorizationHeaderMalformed</Code><Message>the region \
            'us-east-1' is wrong; expecting 'eu-central-1'</Message><Region>eu-central-1</Region></Error>";
        assert_eq!(
            wrong(400, malformed, None),
            (ErrorKind::WrongRegion, Some("eu-central-1".into()))
        );
        // Anything else fails as before.
        assert_eq!(
            wrong(
                400,
                b"<Error><Code>InvalidArgument</Code><Region>x</Region></Error>",
                None
            )
            .0,
            ErrorKind::Status
        );
        assert_eq!(
            wrong(403, b"", Some(b"eu-west-1")).0,
            ErrorKind::AccessDenied
        );
        assert_eq!(wrong(301, b"", None), (ErrorKind::Status, None));
        assert_eq!(
            wrong(400, b"", Some(b"eu-north-1")),
            (ErrorKind::WrongRegion, Some("eu-north-1".into())),
            "a HEAD's"
        );
        assert_eq!(wrong(400, b"", None), (ErrorKind::Status, None));
        assert_eq!(
            wrong(301, b"", Some(b"not a region/")),
            (ErrorKind::Status, None)
        );
    }

    #[test]
    fn a_learned_region_moves_aws_endpoints_and_keeps_others() {
        let aws = ClientBuilder::default()
            .anonymous()
            .region("us-east-1")
            .validate()
            .unwrap();
        let t = BucketTarget::new(&aws, "my-bucket").unwrap();
        assert!(t.reroute(&aws, "eu-west-1").unwrap());
        assert!(!t.reroute(&aws, "eu-west-1").unwrap(), "already there");
        let r = t.get_object("k", None).unwrap();
        assert_eq!(r.region(), "eu-west-1");
        assert_eq!(sent(&r).1, "my-bucket.s3.eu-west-1.amazonaws.com");
        assert_eq!(
            r.origin().uri().to_string(),
            "https://my-bucket.s3.eu-west-1.amazonaws.com/"
        );
        // A request made before the move keeps its route until rerouted.
        assert!(t.reroute(&aws, "ap-northeast-1").unwrap());
        let mut r2 = t.get_object("k", None).unwrap();
        r2.route = Arc::clone(&r.route);
        assert_eq!(r2.region(), "eu-west-1");
        r2.reroute();
        assert_eq!(sent(&r2).1, "my-bucket.s3.ap-northeast-1.amazonaws.com");

        let minio = config("http://127.0.0.1:9000", Addressing::PathStyle);
        let t = BucketTarget::new(&minio, "bkt").unwrap();
        t.reroute(&minio, "eu-west-1").unwrap();
        let r = t.get_object("k", None).unwrap();
        assert_eq!(
            (r.region(), sent(&r).1.as_str()),
            ("eu-west-1", "127.0.0.1:9000")
        );
        assert!(t.reroute(&minio, "bad/region").is_err());
    }

    #[test]
    fn default_port_is_left_out_of_host() {
        let c = config("https://example.com:443", Addressing::PathStyle);
        let t = BucketTarget::new(&c, "b").unwrap();
        assert_eq!(sent(&t.get_object("k", None).unwrap()).1, "example.com");
    }

    #[test]
    fn bad_bucket_and_key_are_typed_errors() {
        let c = config("http://h:1", Addressing::PathStyle);
        assert_eq!(
            BucketTarget::new(&c, "").unwrap_err().kind(),
            ErrorKind::InvalidRequest
        );
        assert_eq!(
            BucketTarget::new(&c, "a/b").unwrap_err().kind(),
            ErrorKind::InvalidRequest
        );
        let t = BucketTarget::new(&c, "b").unwrap();
        assert_eq!(
            t.get_object("", None).unwrap_err().kind(),
            ErrorKind::InvalidRequest
        );
    }

    #[test]
    fn list_request_encodes_prefix_and_token() {
        let c = config("http://h:1", Addressing::PathStyle);
        let t = BucketTarget::new(&c, "bkt").unwrap();
        let r = t.list_objects_v2("a b/+", None, Some("tok/="), Some("a b/x"));
        // start-after goes with the first page only: the token says where the next one starts.
        assert_eq!(
            sent(&r).0,
            "/bkt/?list-type=2&prefix=a%20b%2F%2B&continuation-token=tok%2F%3D"
        );
        let r = t.list_objects_v2("a b/+", None, None, Some("a b/+x&y"));
        assert_eq!(
            sent(&r).0,
            "/bkt/?list-type=2&prefix=a%20b%2F%2B&start-after=a%20b%2F%2Bx%26y"
        );
        assert_eq!(
            sent(&t.list_objects_v2("", None, None, None)).0,
            "/bkt/?list-type=2"
        );
        assert_eq!(
            sent(&t.list_objects_v2("p/", Some("/"), None, None)).0,
            "/bkt/?list-type=2&delimiter=%2F&prefix=p%2F"
        );
        let h = t.head_object("k", None).unwrap();
        assert_eq!(h.method(), Method::HEAD);
    }

    #[test]
    fn parses_list_pages() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix></Prefix>
<KeyCount>2</KeyCount><MaxKeys>2</MaxKeys><IsTruncated>true</IsTruncated>
<Contents><Key>a &amp; b</Key><LastModified>2024-01-01T00:00:00.000Z</LastModified>
<ETag>&quot;x&quot;</ETag><Size>12</Size><StorageClass>STANDARD</StorageClass></Contents>
<Contents><Key>c+d</Key><Size>0</Size></Contents>
<CommonPrefixes><Prefix>b/</Prefix></CommonPrefixes><CommonPrefixes><Prefix>d &lt;/</Prefix></CommonPrefixes>
<NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>
</ListBucketResult>"#;
        let page = parse_list_page(body).unwrap();
        assert_eq!(
            page.objects,
            vec![ObjectRef::new("a & b", 12), ObjectRef::new("c+d", 0)]
        );
        assert_eq!(page.prefixes, ["b/", "d </"]);
        assert_eq!(
            page.next_token.as_deref(),
            Some("1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=")
        );
        let last = br#"<ListBucketResult><IsTruncated>false</IsTruncated><KeyCount>0</KeyCount></ListBucketResult>"#;
        assert_eq!(parse_list_page(last).unwrap(), ListPage::default());
    }

    #[test]
    fn malformed_list_pages_are_invalid_responses() {
        let cases: [&[u8]; 7] = [
            b"",
            b"<Error><Code>x</Code></Error>",
            b"<ListBucketResult><Contents><Size>1</Size></Contents></ListBucketResult>",
            b"<ListBucketResult><Contents><Key>k</Key><Size>-1</Size></Contents></ListBucketResult>",
            b"<ListBucketResult><Contents><Key>k</Key></Contents></ListBucketResult>",
            b"<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>",
            b"<ListBucketResult><Contents><Key>k</Key><Size>1</Size></Contents",
        ];
        for body in cases {
            let e = parse_list_page(body).unwrap_err();
            assert_eq!(
                e.kind(),
                ErrorKind::InvalidResponse,
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn content_range_parsing() {
        assert_eq!(parse_content_range("bytes 0-99/100"), Some((0, 99, 100)));
        assert_eq!(parse_content_range("bytes 5-5/6"), Some((5, 5, 6)));
        for bad in [
            "bytes 5-4/10",
            "bytes 0-10/10",
            "bytes 0-9/*",
            "bytes */10",
            "items 0-9/10",
            "bytes -1-9/10",
            "bytes 0-9",
            "bytes +0-9/10",
            "bytes 0-99999999999999999999/1",
            "",
            "bytes 0 - 9/10",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn parses_s3_error_bodies() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message>
<Key>a&amp;b</Key><RequestId>4442587FB7D0A2F9</RequestId></Error>"#;
        let e = status_error(StatusCode::NOT_FOUND, body, None);
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(e.code(), Some("NoSuchKey"));
        assert_eq!(e.message(), Some("The specified key does not exist."));
        assert_eq!(e.request_id(), Some("4442587FB7D0A2F9"));
    }

    #[test]
    fn malformed_error_bodies_still_give_a_typed_error() {
        for body in [
            &b""[..],
            b"not xml",
            b"<Error><Code>Slow",
            b"<<<>>>",
            &[0xff; 100],
        ] {
            let e = status_error(StatusCode::FORBIDDEN, body, None);
            assert_eq!(e.kind(), ErrorKind::AccessDenied);
        }
        let e = status_error(
            StatusCode::SERVICE_UNAVAILABLE,
            b"<Error><Code>SlowDown</Code>",
            None,
        );
        assert_eq!(e.kind(), ErrorKind::Throttled);
        assert_eq!(e.code(), Some("SlowDown"));
        // Deep nesting stops early instead of growing without bound.
        let deep = "<a>".repeat(10_000);
        assert_eq!(parse_error_body(deep.as_bytes()), S3ErrorBody::default());
    }
}
