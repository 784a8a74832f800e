//! What goes in ([`ObjectRef`]: a key, its size, optionally a version) and what comes out
//! ([`Object`]: the key, its position in the input, its ETag and its [`Body`]).

use crate::memory::Body;

/// One object to fetch.
///
/// `size` is the object's length in bytes as listed (ListObjectsV2 `Size`, HeadObject
/// `Content-Length`): it decides how much memory is reserved before the GET starts, and the body
/// received must match it exactly.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectRef {
    /// The object key, unencoded (`photos/2024/a b.jpg`).
    pub key: String,
    /// The object's size in bytes.
    pub size: u64,
    /// A specific version to fetch; `None` fetches the current one.
    pub version_id: Option<String>,
}

impl ObjectRef {
    /// An object at its current version.
    pub fn new(key: impl Into<String>, size: u64) -> Self {
        ObjectRef {
            key: key.into(),
            size,
            version_id: None,
        }
    }

    /// The same object pinned to `version_id`.
    pub fn with_version(mut self, version_id: impl Into<String>) -> Self {
        self.version_id = Some(version_id.into());
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
    /// The `ETag` the server sent, quotes included, if any.
    pub etag: Option<String>,
    /// The version id the server sent (`x-amz-version-id`), if any.
    pub version_id: Option<String>,
    /// The object's bytes. Dropping it returns its memory to the client's budget.
    pub body: Body,
}
