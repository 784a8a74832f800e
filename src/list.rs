//! Listing: [`ListStream`], the keys under a prefix as a stream of [`ObjectRef`]s, one
//! ListObjectsV2 page at a time.
//!
//! Only one page (at most 1000 keys) is held at once, and the next page is requested only when
//! the consumer has taken every key of the current one, so listing millions of keys takes
//! constant memory and can feed [`Client::get_stream`](crate::Client::get_stream) directly.
//! Each page request uses a connection from the client's pool like any GET. An error ends the
//! listing after being yielded once; a listing whose continuation token does not change is an
//! error rather than a loop.

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

/// The keys under a prefix, in S3's (lexicographic) order; see
/// [`Client::list`](crate::Client::list).
#[must_use = "streams do nothing unless polled"]
pub struct ListStream {
    inner: Pin<Box<dyn Stream<Item = Item> + Send>>,
}

struct State {
    ctx: Arc<Context>,
    bucket: String,
    prefix: String,
    start_after: Option<String>,
    token: Option<String>,
    page: VecDeque<ObjectRef>,
    done: bool,
}

impl ListStream {
    pub(crate) fn start(
        ctx: Arc<Context>,
        bucket: String,
        prefix: String,
        start_after: Option<String>,
    ) -> Self {
        let state = State {
            ctx,
            bucket,
            prefix,
            start_after,
            token: None,
            page: VecDeque::new(),
            done: false,
        };
        let inner = futures_util::stream::unfold(state, |mut st| async move {
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
        });
        ListStream {
            inner: Box::pin(inner),
        }
    }
}

async fn next_page(st: &mut State) -> Result<(), Error> {
    let target = st.ctx.target(&st.bucket)?;
    let req = target.list_objects_v2(&st.prefix, st.token.as_deref(), st.start_after.as_deref());
    let (_, body) = request_whole(&st.ctx, req, MAX_LIST_PAGE).await?;
    let page = parse_list_page(&body)?;
    if page.next_token.is_some() && page.next_token == st.token {
        return Err(Error::new(ErrorKind::InvalidResponse)
            .with_message("listing returned the same continuation token twice"));
    }
    st.done = page.next_token.is_none();
    st.token = page.next_token;
    st.page = page.objects.into();
    Ok(())
}

impl Stream for ListStream {
    type Item = Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Option<Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl std::fmt::Debug for ListStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListStream").finish_non_exhaustive()
    }
}
