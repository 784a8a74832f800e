//! What goes in ([`ObjectRef`]: a key, its size if known, optionally a version) and what comes
//! out ([`Object`]: the key, its position in the input, its ETag and its [`Body`]).

use crate::checksum::Checksum;
use crate::error::Error;
use crate::memory::Body;

/// One object to fetch.
///
/// `size` is the object's length in bytes as listed (ListObjectsV2 `Size`, HeadObject
/// `Content-Length`): it decides how the object is split into parts and how much memory is
/// reserved before its GETs start, and the bytes received must match it exactly. Without a size
/// (`None`), the first GET asks for one part's range and learns the size from the reply's
/// `Content-Range`: a small object then costs that one request (no HEAD), a large one goes on
/// with its other parts. Until its size is known, only one-part objects within the budget less
/// the [streaming threshold](crate::ClientBuilder::stream_threshold) are requested after it:
/// with the default threshold none are, so a run of unsized objects costs one time-to-first-byte
/// each, in sequence; lower the threshold (or give sizes) when the latency is high.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectRef {
    /// The object key, unencoded (`photos/2024/a b.jpg`).
    pub key: String,
    /// The object's size in bytes, if known.
    pub size: Option<u64>,
    /// A specific version to fetch; `None` fetches the current one.
    pub version_id: Option<String>,
}

impl ObjectRef {
    /// An object of `size` bytes, at its current version.
    pub fn new(key: impl Into<String>, size: u64) -> Self {
        ObjectRef {
            key: key.into(),
            size: Some(size),
            version_id: None,
        }
    }

    /// An object whose size is not known; its first GET learns it.
    pub fn without_size(key: impl Into<String>) -> Self {
        ObjectRef {
            key: key.into(),
            size: None,
            version_id: None,
        }
    }

    /// The same object pinned to `version_id`.
    pub fn with_version(mut self, version_id: impl Into<String>) -> Self {
        self.version_id = Some(version_id.into());
        self
    }
}

/// One input of [`Client::get_all`](crate::Client::get_all) and
/// [`Client::get_stream`](crate::Client::get_stream): an [`ObjectRef`], or a `Result` of one as
/// [`Client::list`](crate::Client::list) yields. An `Err` input (a failed listing page, a failed
/// HEAD) comes out as that same error at its position, so nothing is lost or reordered.
pub trait IntoObjectRef: Send {
    /// The object to fetch, or the error to pass through at this position.
    fn into_object_ref(self) -> Result<ObjectRef, Error>;
}

impl IntoObjectRef for ObjectRef {
    fn into_object_ref(self) -> Result<ObjectRef, Error> {
        Ok(self)
    }
}

/// A bare key: an object of unknown size ([`ObjectRef::without_size`]).
impl IntoObjectRef for String {
    fn into_object_ref(self) -> Result<ObjectRef, Error> {
        Ok(ObjectRef::without_size(self))
    }
}

/// A bare key: an object of unknown size ([`ObjectRef::without_size`]).
impl IntoObjectRef for &str {
    fn into_object_ref(self) -> Result<ObjectRef, Error> {
        Ok(ObjectRef::without_size(self))
    }
}

impl IntoObjectRef for Result<ObjectRef, Error> {
    fn into_object_ref(self) -> Result<ObjectRef, Error> {
        self
    }
}

/// One fetched object, delivered in input order.
#[non_exhaustive]
#[derive(Debug)]
pub struct Object {
    /// The key it was asked for with.
    pub key: String,
    /// Its position in the input (0-based).
    pub seq: u64,
    /// The `ETag` the server sent, quotes included, if any (octets that are not UTF-8, which
    /// HTTP allows, are shown as U+FFFD here; requests send the ETag back as it came).
    pub etag: Option<String>,
    /// The version id the server sent (`x-amz-version-id`), if any.
    pub version_id: Option<String>,
    /// When the object was last written, as its first reply's `Last-Modified` stated (to the
    /// second); `None` when no reply stated one that parses.
    pub last_modified: Option<std::time::SystemTime>,
    /// Whether its bytes were verified against the server's checksum, and how
    /// ([`ClientBuilder::checksum_mode`](crate::ClientBuilder::checksum_mode)).
    pub checksum: Checksum,
    /// The object's bytes, held whole or streaming ([`Body::is_streaming`]). Dropping it returns
    /// its memory to the client's budget (and cancels what a streaming body still had to fetch).
    pub body: Body,
}
