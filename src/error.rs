//! Errors: one opaque [`Error`] for everything that can go wrong with an object, classified by
//! [`ErrorKind`], and [`ConfigError`] for a client that cannot be built.
//!
//! An [`Error`] always says which object it concerns (key and sequence number, when known), how
//! many attempts were made, and keeps the underlying cause in its [`source`](std::error::Error::source)
//! chain. Its `Display` is one lower-case line that does not repeat the source's text; print the
//! chain to see everything. Secrets never appear in either.

use std::fmt;

use http::StatusCode;

/// Boxed cause kept in an error's `source()` chain.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong with an object. Decisions (retry, skip, abort) branch on this, never on text.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The bucket, key or version does not exist (HTTP 404: `NoSuchKey`, `NoSuchBucket`,
    /// `NoSuchVersion`). Not retryable.
    NotFound,
    /// The credentials were refused or lack permission (HTTP 403, including a bad signature).
    /// Not retryable.
    AccessDenied,
    /// The server answered with another non-success status; [`Error::status`] and
    /// [`Error::code`] say which. Retried for 500, 502, 504 and 408.
    Status,
    /// The server asked to slow down (HTTP 503, 429, or an S3 throttling code such as
    /// `SlowDown`). Tried again under the client's adaptive concurrency limit without spending
    /// attempts; an object fails with this kind only once the server has refused it for the
    /// throttle timeout ([`ThrottleConfig::timeout`](crate::ThrottleConfig::timeout)).
    Throttled,
    /// No response, or no body bytes, within the stall timeout. Retried.
    Timeout,
    /// The bytes received do not match the object's checksum (with checksum mode on, the
    /// default). Sent again once on a new connection (corruption in transit), then the object
    /// fails with this kind; the message names the algorithm and both values.
    ChecksumMismatch,
    /// [`ChecksumMode::Required`](crate::ChecksumMode::Required) and the server has no
    /// full-object checksum for the object (none, or only a composite one). Not retried.
    ChecksumMissing,
    /// The object changed between attempts: its ETag differs from the first attempt's, or the
    /// server refused `If-Match` (HTTP 412). Not retried; no mix of two versions is delivered.
    Changed,
    /// The body was longer or shorter than the declared size, or `Content-Length` (or
    /// `Content-Range`) disagreed with it. The body was discarded; nothing was truncated
    /// silently. Not retried.
    LengthMismatch,
    /// No connection could be established (DNS, TCP, or TLS other than the certificate).
    /// Retryable.
    Connect,
    /// The server's TLS certificate was refused — unknown issuer, another name, expired — or
    /// the handshake failed. Not retried; the message says why and how to fix it.
    Tls,
    /// The connection broke or the reply was not valid HTTP. Retryable.
    Connection,
    /// Credentials could not be obtained from the provider.
    Credentials,
    /// The bucket is in another region than the request was signed for (HTTP 301
    /// `PermanentRedirect` or 307 with `x-amz-bucket-region`, or 400
    /// `AuthorizationHeaderMalformed` naming the region; [`Error::region`] says which). The
    /// client learns the region and sends the request again at once, so this is seen only when
    /// the server keeps redirecting after that.
    WrongRegion,
    /// The request could not be built or signed (for example a key that cannot form a URI).
    InvalidRequest,
    /// The server's reply could not be understood: malformed or oversized XML, a missing or
    /// invalid field, a listing that does not advance. Not retryable.
    InvalidResponse,
    /// The request was cancelled before this data arrived: its
    /// [`ObjectStream`](crate::ObjectStream) was dropped while a streaming body delivered
    /// from it still had parts to come. The body reads this error after the bytes it has.
    Cancelled,
    /// An internal task ended without producing a result. Indicates a bug; please report it.
    Internal,
}

impl ErrorKind {
    fn describe(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::AccessDenied => "access denied",
            ErrorKind::Status => "unexpected response status",
            ErrorKind::Throttled => "throttled by the server",
            ErrorKind::Timeout => "timed out",
            ErrorKind::ChecksumMismatch => "checksum mismatch",
            ErrorKind::ChecksumMissing => "no checksum to verify",
            ErrorKind::Changed => "object changed while being fetched",
            ErrorKind::LengthMismatch => "body length does not match the declared size",
            ErrorKind::Connect => "could not connect",
            ErrorKind::Tls => "TLS failed",
            ErrorKind::Connection => "connection failed",
            ErrorKind::Credentials => "could not load credentials",
            ErrorKind::WrongRegion => "the bucket is in another region",
            ErrorKind::InvalidRequest => "invalid request",
            ErrorKind::InvalidResponse => "invalid response from the server",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Internal => "internal error",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// The error of one object: its kind, the object it concerns, and the cause.
///
/// Boxed inside, so a `Result<Object, Error>` stays small.
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    key: Option<String>,
    seq: Option<u64>,
    part: Option<(usize, usize)>,
    attempts: u32,
    throttled: u32,
    status: Option<StatusCode>,
    code: Option<String>,
    message: Option<String>,
    request_id: Option<String>,
    region: Option<String>,
    earlier: Vec<String>,
    budget_exhausted: bool,
    /// The generation of the S3 Express session the refused request was signed with.
    session: Option<u64>,
    source: Option<BoxError>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind) -> Self {
        Error {
            inner: Box::new(Inner {
                kind,
                key: None,
                seq: None,
                part: None,
                attempts: 0,
                throttled: 0,
                status: None,
                code: None,
                message: None,
                request_id: None,
                region: None,
                earlier: Vec::new(),
                budget_exhausted: false,
                session: None,
                source: None,
            }),
        }
    }

    pub(crate) fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.inner.source = Some(source.into());
        self
    }

    pub(crate) fn with_message(mut self, message: impl Into<String>) -> Self {
        self.inner.message = Some(message.into());
        self
    }

    /// Puts `context` before the message: what was being done when this went wrong.
    pub(crate) fn with_context(mut self, context: &str) -> Self {
        self.inner.message = Some(match self.inner.message.take() {
            Some(m) => format!("{context}: {m}"),
            None => context.to_owned(),
        });
        self
    }

    pub(crate) fn with_status(mut self, status: StatusCode) -> Self {
        self.inner.status = Some(status);
        self
    }

    pub(crate) fn with_s3_details(
        mut self,
        code: Option<String>,
        message: Option<String>,
        request_id: Option<String>,
    ) -> Self {
        self.inner.code = code;
        if message.is_some() {
            self.inner.message = message;
        }
        self.inner.request_id = request_id;
        self
    }

    /// The region the server says the bucket is in.
    pub(crate) fn with_region(mut self, region: String) -> Self {
        self.inner.region = Some(region);
        self
    }

    /// Attaches the key of the object this error concerns.
    pub(crate) fn with_key(mut self, key: &str) -> Self {
        self.inner.key = Some(key.to_owned());
        self
    }

    /// A copy for another object: everything but the source, whose text (with its causes)
    /// joins the message.
    pub(crate) fn detached(&self) -> Self {
        let i = &self.inner;
        // The source's whole chain: its own text may only say what failed, not why.
        let message = match (&i.message, &i.source) {
            (Some(m), Some(s)) => Some(format!("{m}: {}", with_causes(&**s))),
            (None, Some(s)) => Some(with_causes(&**s)),
            (m, None) => m.clone(),
        };
        Error {
            inner: Box::new(Inner {
                kind: i.kind,
                key: i.key.clone(),
                seq: i.seq,
                part: i.part,
                attempts: i.attempts,
                throttled: i.throttled,
                status: i.status,
                code: i.code.clone(),
                message,
                request_id: i.request_id.clone(),
                region: i.region.clone(),
                earlier: i.earlier.clone(),
                budget_exhausted: i.budget_exhausted,
                session: i.session,
                source: None,
            }),
        }
    }

    /// Sets the position, keeping the key (if any).
    pub(crate) fn with_seq(mut self, seq: u64) -> Self {
        self.inner.seq = Some(seq);
        self
    }

    /// Marks the error as part `idx` (0-based) of an object fetched in `of` parts.
    pub(crate) fn with_part(mut self, idx: usize, of: usize) -> Self {
        self.inner.part = Some((idx, of));
        self
    }

    pub(crate) fn with_attempts(mut self, attempts: u32) -> Self {
        self.inner.attempts = attempts;
        self
    }

    pub(crate) fn with_throttled(mut self, throttled: u32) -> Self {
        self.inner.throttled = throttled;
        self
    }

    /// An [`ErrorKind::InvalidRequest`] error for an input that cannot become a request (a
    /// malformed line of a key list, say), to pass through
    /// [`get_stream`](crate::Client::get_stream) at its position.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidRequest).with_message(message)
    }

    /// This error's text followed by each cause of its [`source`](std::error::Error::source)
    /// chain, joined by `": "`, leaving out a cause whose text the line already ends with: the
    /// whole story on one line, for logs and messages.
    pub fn with_causes(&self) -> String {
        with_causes(self)
    }

    /// For [`ErrorKind::WrongRegion`], the region the server says the bucket is in.
    pub fn region(&self) -> Option<&str> {
        self.inner.region.as_deref()
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The key of the object this error concerns, if it concerns one.
    pub fn key(&self) -> Option<&str> {
        self.inner.key.as_deref()
    }

    /// The position of the object in the input (0-based), if it concerns one.
    pub fn seq(&self) -> Option<u64> {
        self.inner.seq
    }

    /// For an object fetched as ranged parts: the part that failed (0-based) and the number of
    /// parts.
    pub fn part(&self) -> Option<(usize, usize)> {
        self.inner.part
    }

    /// How many HTTP attempts were made for the object (or its failed part; 0 if none was
    /// sent), not counting throttled ones: the count that
    /// [`RetryConfig::max_attempts`](crate::RetryConfig::max_attempts) bounds.
    pub fn attempts(&self) -> u32 {
        self.inner.attempts
    }

    /// How many of the object's (or its failed part's) attempts the server throttled; these
    /// are bounded by [`ThrottleConfig::timeout`](crate::ThrottleConfig::timeout), not by
    /// `max_attempts`.
    pub fn throttled_attempts(&self) -> u32 {
        self.inner.throttled
    }

    /// The HTTP status of the failed response, if one arrived.
    pub fn status(&self) -> Option<StatusCode> {
        self.inner.status
    }

    /// The S3 error code from the response body (`NoSuchKey`, `AccessDenied`, …), if any.
    pub fn code(&self) -> Option<&str> {
        self.inner.code.as_deref()
    }

    /// The human-readable message from the server or from the check that failed, if any.
    pub fn message(&self) -> Option<&str> {
        self.inner.message.as_deref()
    }

    /// The S3 request id of the failed response, if any (quote it to AWS support).
    pub fn request_id(&self) -> Option<&str> {
        self.inner.request_id.as_deref()
    }

    /// True for [`ErrorKind::NotFound`].
    pub fn is_not_found(&self) -> bool {
        self.inner.kind == ErrorKind::NotFound
    }

    /// Why each earlier attempt failed, oldest first (empty if the first attempt was the last).
    /// The last attempt's failure is this error itself.
    pub fn earlier_attempts(&self) -> &[String] {
        &self.inner.earlier
    }

    /// True when a retry was possible but the client-wide retry budget was empty.
    pub fn retry_budget_exhausted(&self) -> bool {
        self.inner.budget_exhausted
    }

    /// Marks the error as a reply to a request signed with the S3 Express session of
    /// generation `generation` (if any).
    pub(crate) fn signed_with_session(mut self, generation: Option<u64>) -> Self {
        self.inner.session = generation;
        self
    }

    /// The generation of the S3 Express session the request this error answers was signed
    /// with.
    pub(crate) fn session(&self) -> Option<u64> {
        self.inner.session
    }

    pub(crate) fn with_budget_exhausted(mut self) -> Self {
        self.inner.budget_exhausted = true;
        self
    }

    pub(crate) fn with_earlier(mut self, earlier: Vec<String>) -> Self {
        self.inner.earlier = earlier;
        self
    }

    /// True when trying the same request again may succeed: connection failures, timeouts,
    /// throttling, and HTTP 5xx and 408.
    pub fn is_retryable(&self) -> bool {
        match self.inner.kind {
            ErrorKind::Connect
            | ErrorKind::Connection
            | ErrorKind::Timeout
            | ErrorKind::Throttled => true,
            ErrorKind::Status => self
                .inner
                .status
                .is_some_and(|s| s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT),
            _ => false,
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        let mut d = f.debug_struct("Error");
        d.field("kind", &i.kind);
        if let Some(key) = &i.key {
            d.field("key", key);
        }
        if let Some(seq) = i.seq {
            d.field("seq", &seq);
        }
        if let Some(part) = i.part {
            d.field("part", &part);
        }
        d.field("attempts", &i.attempts);
        if i.throttled > 0 {
            d.field("throttled", &i.throttled);
        }
        if let Some(status) = i.status {
            d.field("status", &status);
        }
        if let Some(code) = &i.code {
            d.field("code", code);
        }
        if let Some(message) = &i.message {
            d.field("message", message);
        }
        if let Some(request_id) = &i.request_id {
            d.field("request_id", request_id);
        }
        if !i.earlier.is_empty() {
            d.field("earlier", &i.earlier);
        }
        if let Some(source) = &i.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        if let Some(key) = &i.key {
            write!(f, "object {key:?}")?;
            match (i.seq, i.part) {
                (Some(seq), Some((idx, of))) => write!(f, " (#{seq}, part {} of {of})", idx + 1)?,
                (Some(seq), None) => write!(f, " (#{seq})")?,
                (None, Some((idx, of))) => write!(f, " (part {} of {of})", idx + 1)?,
                (None, None) => {}
            }
            f.write_str(": ")?;
        }
        f.write_str(i.kind.describe())?;
        match (i.status, &i.code) {
            (Some(status), Some(code)) => write!(f, " (HTTP {} {code})", status.as_u16())?,
            (Some(status), None) => write!(f, " (HTTP {})", status.as_u16())?,
            (None, Some(code)) => write!(f, " ({code})")?,
            (None, None) => {}
        }
        if let Some(message) = &i.message {
            write!(f, ": {message}")?;
        }
        if i.attempts > 1 || i.throttled > 0 {
            f.write_str(" (")?;
            if i.attempts > 1 {
                write!(f, "after {} attempts", i.attempts)?;
                if i.throttled > 0 {
                    f.write_str(", ")?;
                }
            }
            if i.throttled > 0 {
                write!(f, "{} throttled", i.throttled)?;
            }
            if !i.earlier.is_empty() {
                write!(f, "; earlier: {}", i.earlier.join("; "))?;
            }
            f.write_str(")")?;
        }
        if i.budget_exhausted {
            f.write_str(" (retry budget exhausted)")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// A client configuration that [`ClientBuilder::build`](crate::ClientBuilder::build) refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct ConfigError {
    field: &'static str,
    reason: String,
}

impl ConfigError {
    pub(crate) fn new(field: &'static str, reason: impl Into<String>) -> Self {
        ConfigError {
            field,
            reason: reason.into(),
        }
    }

    /// The name of the builder setting at fault, e.g. `"max_connections"`.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// Why the value was refused.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// `e`'s text followed by each cause of its source chain, as [`Error::with_causes`] writes it.
pub(crate) fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(e) = next {
        let text = e.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_causes_joins_the_chain_without_repeating() {
        let io = std::io::Error::other("connection reset");
        let e = Error::new(ErrorKind::Connection)
            .with_message("body broke off")
            .with_source(io);
        assert_eq!(
            e.with_causes(),
            "connection failed: body broke off: connection reset"
        );
        // A cause the text already ends with is not repeated.
        let e = Error::new(ErrorKind::Connection).with_message("connection reset");
        let e = e.with_source(std::io::Error::other("connection reset"));
        assert_eq!(e.with_causes(), "connection failed: connection reset");
    }

    #[test]
    fn display_names_object_status_and_code() {
        let e = Error::new(ErrorKind::NotFound)
            .with_status(StatusCode::NOT_FOUND)
            .with_s3_details(Some("NoSuchKey".into()), Some("gone".into()), None)
            .with_key("a/b")
            .with_seq(7)
            .with_attempts(1);
        assert_eq!(
            e.to_string(),
            "object \"a/b\" (#7): not found (HTTP 404 NoSuchKey): gone"
        );
        assert!(e.is_not_found());
        assert!(!e.is_retryable());
    }

    #[test]
    fn retryable_statuses() {
        for (code, retry) in [
            (500, true),
            (502, true),
            (503, true),
            (429, true),
            (408, true),
            (400, false),
            (404, false),
            (412, false),
        ] {
            let e = crate::s3::status_error(StatusCode::from_u16(code).unwrap(), b"", None);
            assert_eq!(e.is_retryable(), retry, "{code}");
        }
        assert!(Error::new(ErrorKind::Timeout).is_retryable());
        assert!(!Error::new(ErrorKind::ChecksumMismatch).is_retryable());
        assert!(!Error::new(ErrorKind::Changed).is_retryable());
        assert!(Error::new(ErrorKind::Connection).is_retryable());
        assert!(!Error::new(ErrorKind::LengthMismatch).is_retryable());
    }

    #[test]
    fn source_chain_is_kept() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let e = Error::new(ErrorKind::Connection).with_source(io);
        let src = std::error::Error::source(&e).expect("source");
        assert_eq!(src.to_string(), "reset");
    }
}
