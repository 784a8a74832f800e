//! Listing: [`ListStream`], the keys under a prefix as a stream of [`ObjectRef`]s, and
//! [`EntryStream`], one level of them under a delimiter (objects and common prefixes merged in
//! S3's order), one ListObjectsV2 page at a time.
//!
//! Only one page (at most 1000 keys) is held at once, and the next page is requested only when
//! the consumer has taken every key of the current one, so listing millions of keys takes
//! constant memory and can feed [`Client::get_stream`](crate::Client::get_stream) directly.
//! Each page request uses a connection from the client's pool like any GET. An error ends the
//! listing after being yielded once; a listing whose continuation token does not change is an
//! error rather than a loop.
//!
//! A directory bucket (S3 Express One Zone) lists in its own order, not lexicographically,
//! has no `start-after`, and takes a prefix with a delimiter only if the prefix ends in it:
//! asking for either of those is an [`ErrorKind::InvalidRequest`] before any request.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use futures_core::Stream;

use crate::context::Context;
use crate::error::{Error, ErrorKind};
use crate::fetch::request_whole;
use crate::object::ObjectRef;
use crate::s3::{parse_list_page, MAX_LIST_PAGE};

type Item = Result<ObjectRef, Error>;

/// One entry of a listing by a delimiter ([`Client::list_with_delimiter`]).
///
/// [`Client::list_with_delimiter`]: crate::Client::list_with_delimiter
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListEntry {
    /// An object directly under the prefix.
    Object(ObjectRef),
    /// A common prefix: the keys that go on past the delimiter, rolled up into their prefix
    /// through the delimiter (`logs/2024/`).
    Prefix(String),
}

impl ListEntry {
    /// The key or the common prefix: what the listing is ordered by.
    pub fn name(&self) -> &str {
        match self {
            ListEntry::Object(obj) => &obj.key,
            ListEntry::Prefix(p) => p,
        }
    }
}

/// One level of the keys under a prefix, objects and common prefixes in S3's order
/// (lexicographic, but for a directory bucket's); see
/// [`Client::list_with_delimiter`](crate::Client::list_with_delimiter).
#[must_use = "streams do nothing unless polled"]
pub struct EntryStream {
    inner: Pin<Box<dyn Stream<Item = Result<ListEntry, Error>> + Send>>,
}

/// The keys under a prefix, in S3's order (lexicographic, but for a directory bucket's); see
/// [`Client::list`](crate::Client::list).
#[must_use = "streams do nothing unless polled"]
pub struct ListStream {
    inner: Pin<Box<dyn Stream<Item = Item> + Send>>,
}

/// What to list.
pub(crate) struct Listing {
    pub(crate) bucket: String,
    pub(crate) prefix: String,
    pub(crate) delimiter: Option<String>,
    pub(crate) start_after: Option<String>,
}

struct State {
    ctx: Arc<Context>,
    what: Listing,
    token: Option<String>,
    page: VecDeque<ListEntry>,
    done: bool,
}

impl ListStream {
    pub(crate) fn start(ctx: Arc<Context>, what: Listing) -> Self {
        let objects = futures_util::StreamExt::filter_map(entries(ctx, what), |entry| {
            // Without a delimiter there are no common prefixes.
            futures_util::future::ready(match entry {
                Ok(ListEntry::Object(obj)) => Some(Ok(obj)),
                Ok(ListEntry::Prefix(_)) => None,
                Err(e) => Some(Err(e)),
            })
        });
        ListStream {
            inner: Box::pin(objects),
        }
    }
}

impl EntryStream {
    pub(crate) fn start(ctx: Arc<Context>, what: Listing) -> Self {
        EntryStream {
            inner: Box::pin(entries(ctx, what)),
        }
    }
}

fn entries(
    ctx: Arc<Context>,
    what: Listing,
) -> impl Stream<Item = Result<ListEntry, Error>> + Send {
    let state = State {
        ctx,
        what,
        token: None,
        page: VecDeque::new(),
        done: false,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(obj) = st.page.pop_front() {
                return Some((Ok(obj), st));
            }
            if st.done {
                return None;
            }
            if let Err(e) = next_page(&mut st).await {
                st.done = true;
                return Some((Err(e), st));
            }
        }
    })
}

async fn next_page(st: &mut State) -> Result<(), Error> {
    let what = &st.what;
    let target = st.ctx.target(&what.bucket)?;
    if target.is_directory() {
        directory_listing(what)?;
    }
    let req = target.list_objects_v2(
        &what.prefix,
        what.delimiter.as_deref(),
        st.token.as_deref(),
        what.start_after.as_deref(),
    );
    let (_, body) = request_whole(&st.ctx, req, MAX_LIST_PAGE).await?;
    let page = parse_list_page(&body)?;
    if page.next_token.is_some() && page.next_token == st.token {
        return Err(Error::new(ErrorKind::InvalidResponse)
            .with_message("listing returned the same continuation token twice"));
    }
    st.done = page.next_token.is_none();
    st.token = page.next_token;
    st.page = merged(page.objects, page.prefixes);
    Ok(())
}

/// What a directory bucket cannot list: from a key on (`start-after`), or under a prefix
/// that does not end in the delimiter given.
fn directory_listing(what: &Listing) -> Result<(), Error> {
    let invalid = |why: String| {
        Err(Error::new(ErrorKind::InvalidRequest).with_message(format!(
            "{why}: bucket {:?} is a directory bucket (S3 Express One Zone)",
            what.bucket
        )))
    };
    if what.start_after.is_some() {
        return invalid("a listing cannot start after a key".into());
    }
    match &what.delimiter {
        Some(d) if !what.prefix.is_empty() && !what.prefix.ends_with(d.as_str()) => {
            invalid(format!(
                "the prefix {:?} must end in the delimiter {d:?}",
                what.prefix
            ))
        }
        _ => Ok(()),
    }
}

/// A page's objects and common prefixes (each in S3's order) as one run in that order.
fn merged(objects: Vec<ObjectRef>, prefixes: Vec<String>) -> VecDeque<ListEntry> {
    let mut out = VecDeque::with_capacity(objects.len() + prefixes.len());
    let mut prefixes = prefixes.into_iter().peekable();
    for obj in objects {
        while let Some(p) = prefixes.next_if(|p| p.as_str() < obj.key.as_str()) {
            out.push_back(ListEntry::Prefix(p));
        }
        out.push_back(ListEntry::Object(obj));
    }
    out.extend(prefixes.map(ListEntry::Prefix));
    out
}

impl Stream for ListStream {
    type Item = Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Option<Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl Stream for EntryStream {
    type Item = Result<ListEntry, Error>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl std::fmt::Debug for EntryStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntryStream").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ListStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListStream").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_and_prefixes_merge_in_key_order() {
        let objects = vec![ObjectRef::new("a", 1), ObjectRef::new("c", 2)];
        let prefixes = vec!["b/".to_owned(), "d/".to_owned(), "e/".to_owned()];
        let names: Vec<String> = merged(objects, prefixes)
            .iter()
            .map(|e| e.name().to_owned())
            .collect();
        assert_eq!(names, ["a", "b/", "c", "d/", "e/"]);
        assert!(merged(Vec::new(), Vec::new()).is_empty());
    }
}
