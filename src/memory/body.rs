//! [`Body`]: an object's bytes, held whole or streamed part by part, and the [`PartQueue`] that
//! feeds a streaming body.
//!
//! A **whole** body holds every byte of its object in one lease: it is a [`Buf`], walks its
//! [`chunks`](Body::chunks) and copies out with [`to_vec`](Body::to_vec). A **streaming** body —
//! for an object too large to hold whole — is handed out as soon as its first part is in; its
//! parts arrive in a [`PartQueue`] in any order and are read in order. Both are read the same
//! way with [`next_chunk`](Body::next_chunk), which moves each slab out as
//! zero-copy [`Bytes`]: its memory returns to the budget when that chunk is dropped.
//!
//! `Body` deliberately does not implement `Stream`: `StreamExt::chunks` would then shadow
//! [`Body::chunks`] for every caller with `StreamExt` in scope.
//!
//! Dropping a streaming body closes its queue: parts still arriving are dropped on arrival, and
//! the close hook the engine installed cancels the downloads of the parts still to come.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes};

use super::Lease;
use crate::error::Error;

/// Called once when a streaming body is dropped before its last part.
type CloseHook = Box<dyn FnOnce() + Send>;

/// A check a streaming body runs over its bytes as it takes each part, in order, and ends with.
pub(crate) trait EndCheck: Send {
    /// Takes the next bytes of the body.
    fn update(&mut self, bytes: &[u8]);
    /// After the last byte: `Err` is the body's last item.
    fn finish(self: Box<Self>) -> Result<(), Error>;
}

/// What a streaming body does after its last part.
enum Ending {
    /// Ends.
    Open,
    /// Waits for the verdict the engine puts once every part is in; an `Err` is the last item.
    Verdict(Option<Result<(), Error>>),
    /// Runs this check over the bytes as they are read; its error is the last item.
    Check(Box<dyn EndCheck>),
}

/// The parts of one streaming body, put in by the downloads in any order and taken out by the
/// body in order.
pub(crate) struct PartQueue {
    state: Mutex<QueueState>,
}

struct QueueState {
    /// One slot per part; `None` until that part is in (or after the body took it).
    parts: Vec<Option<Result<Lease, Error>>>,
    /// The next part the body reads.
    head: usize,
    /// The body is gone: parts are dropped on arrival.
    closed: bool,
    waker: Option<Waker>,
    on_close: Option<CloseHook>,
    ending: Ending,
}

impl PartQueue {
    /// A queue for `parts` parts.
    pub(crate) fn new(parts: usize) -> Arc<Self> {
        Arc::new(PartQueue {
            state: Mutex::new(QueueState {
                parts: (0..parts).map(|_| None).collect(),
                head: 0,
                closed: false,
                waker: None,
                on_close: None,
                ending: Ending::Open,
            }),
        })
    }

    /// The body does not end after its last part until [`verdict`](PartQueue::verdict) says.
    pub(crate) fn await_verdict(&self) {
        self.lock().ending = Ending::Verdict(None);
    }

    /// The verdict on the whole body: `Err` is read after its last part.
    pub(crate) fn verdict(&self, verdict: Result<(), Error>) {
        let waker = {
            let mut st = self.lock();
            st.ending = Ending::Verdict(Some(verdict));
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The body runs `check` over its bytes as it reads them, and ends with its result. Set
    /// before the body is handed out.
    pub(crate) fn check(&self, check: Box<dyn EndCheck>) {
        self.lock().ending = Ending::Check(check);
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts part `idx` (its bytes, or why it failed for good). Dropped at once if the body is
    /// gone; the body reads an error after the parts before it and then ends.
    pub(crate) fn put(&self, idx: usize, part: Result<Lease, Error>) {
        let part = part.map(|mut lease| {
            lease.mark_streaming();
            lease
        });
        let (waker, refused) = {
            let mut st = self.lock();
            if st.closed || idx < st.head || idx >= st.parts.len() {
                (None, Some(part))
            } else {
                st.parts[idx] = Some(part);
                let waker = if idx == st.head {
                    st.waker.take()
                } else {
                    None
                };
                (waker, None)
            }
        };
        drop(refused); // outside the lock: it returns slabs
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// No more parts will come (the request that fetched them is gone): the body reads `err`
    /// after the parts it has in order, and ends there.
    pub(crate) fn abandon(&self, err: Error) {
        let waker = {
            let mut st = self.lock();
            let head = st.head;
            let Some(missing) = st.parts.iter_mut().skip(head).find(|p| p.is_none()) else {
                return;
            };
            *missing = Some(Err(err));
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Runs `hook` when the body is dropped before its end (at once if it already was).
    pub(crate) fn on_close(&self, hook: CloseHook) {
        let run_now = {
            let mut st = self.lock();
            if st.closed {
                Some(hook)
            } else {
                st.on_close = Some(hook);
                None
            }
        };
        if let Some(hook) = run_now {
            hook();
        }
    }

    /// True once the body is gone.
    #[cfg(test)]
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    fn close(&self) {
        let (parts, hook) = {
            let mut st = self.lock();
            st.closed = true;
            st.waker = None;
            let unfinished = st.head < st.parts.len();
            (
                std::mem::take(&mut st.parts),
                st.on_close.take().filter(|_| unfinished),
            )
        };
        drop(parts);
        if let Some(hook) = hook {
            hook();
        }
    }
}

impl fmt::Debug for PartQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.lock();
        f.debug_struct("PartQueue")
            .field("parts", &st.parts.len())
            .field("head", &st.head)
            .field("closed", &st.closed)
            .finish()
    }
}

/// The bytes of one object, held in slabs leased from the client's memory budget.
///
/// An object that fits the client's streaming threshold comes **whole**: read it as a
/// [`bytes::Buf`], walk its [`chunks`](Body::chunks), or copy it out with
/// [`to_vec`](Body::to_vec) / [`to_bytes`](Body::to_bytes). A larger object comes **streaming**
/// ([`is_streaming`](Body::is_streaming)): it is handed out as soon as its first part is in, and
/// its bytes are read in order with [`next_chunk`](Body::next_chunk) as the later parts arrive.
///
/// `next_chunk` reads both kinds alike, moving the bytes out slab by
/// slab as zero-copy [`Bytes`]; each chunk's memory returns to the budget when the chunk is
/// dropped. The rest returns when the `Body` is dropped: keep it only as long as you need it.
/// Dropping a streaming body before its end cancels the downloads of its remaining parts.
///
/// # Panics
///
/// The whole-body accessors ([`chunks`](Body::chunks), [`to_vec`](Body::to_vec),
/// [`to_bytes`](Body::to_bytes) and the [`Buf`] methods) panic on a streaming body, whose bytes
/// are not all in memory; read it with `next_chunk`.
pub struct Body {
    /// The object's size in bytes.
    len: u64,
    repr: Repr,
}

enum Repr {
    Whole {
        lease: Lease,
        /// The read position of `Buf` and `next_chunk`.
        pos: usize,
    },
    Streaming {
        queue: Arc<PartQueue>,
        /// The part being read, and the index of its next slab.
        current: Option<(Lease, usize)>,
        done: bool,
    },
}

const STREAMING: &str = "this is a streaming body (an object larger than the client's \
                         stream_threshold); read it with next_chunk()";

impl Body {
    /// A whole body over `lease`, which holds every byte of the object.
    pub(crate) fn whole(lease: Lease) -> Self {
        Body {
            len: lease.len() as u64,
            repr: Repr::Whole { lease, pos: 0 },
        }
    }

    /// A streaming body of `len` bytes whose parts arrive through `queue`.
    pub(crate) fn streaming(len: u64, queue: Arc<PartQueue>) -> Self {
        Body {
            len,
            repr: Repr::Streaming {
                queue,
                current: None,
                done: false,
            },
        }
    }

    /// Counts a whole body's memory as the consumer's, once it is handed out (a streaming
    /// body's parts are counted as they arrive).
    pub(crate) fn mark_delivered(&mut self) {
        if let Repr::Whole { lease, .. } = &mut self.repr {
            lease.mark_delivered();
        }
    }

    /// The object's size in bytes (unaffected by reading). On a 32-bit target an object larger
    /// than `usize::MAX` (which can only stream) reports `usize::MAX`; [`size`](Body::size) is
    /// exact everywhere.
    pub fn len(&self) -> usize {
        usize::try_from(self.len).unwrap_or(usize::MAX)
    }

    /// The object's size in bytes, as a `u64` (unaffected by reading).
    pub fn size(&self) -> u64 {
        self.len
    }

    /// True for an empty object.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when the body is streamed part by part rather than held whole; read it with
    /// [`next_chunk`](Body::next_chunk).
    pub fn is_streaming(&self) -> bool {
        matches!(self.repr, Repr::Streaming { .. })
    }

    fn whole_lease(&self) -> &Lease {
        match &self.repr {
            Repr::Whole { lease, .. } => lease,
            Repr::Streaming { .. } => panic!("{STREAMING}"),
        }
    }

    /// The whole body's contiguous pieces, front to back (each at most one slab long), leaving
    /// out those already taken by [`next_chunk`](Body::next_chunk).
    ///
    /// # Panics
    ///
    /// On a streaming body.
    pub fn chunks(&self) -> Chunks<'_> {
        Chunks {
            lease: self.whole_lease(),
            idx: 0,
        }
    }

    /// Copies the whole body (less what [`next_chunk`](Body::next_chunk) took) into a new
    /// `Vec<u8>`.
    ///
    /// # Panics
    ///
    /// On a streaming body.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.whole_lease().len());
        for c in self.chunks() {
            v.extend_from_slice(c);
        }
        v
    }

    /// Copies the whole body into a new [`Bytes`]; see [`to_vec`](Body::to_vec).
    ///
    /// # Panics
    ///
    /// On a streaming body.
    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(self.to_vec())
    }

    /// The next piece of the body, in order, as zero-copy [`Bytes`] (at most one slab long);
    /// `None` at the end. Its memory returns to the budget when the chunk is dropped.
    ///
    /// On a streaming body it waits for the next part to arrive. A part that failed for good
    /// is an `Err` at that point, after every byte before it, and the body ends there.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: no byte is lost if the future is dropped before it completes.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, Error>> {
        std::future::poll_fn(|cx| self.poll_chunk(cx)).await
    }

    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Error>>> {
        match &mut self.repr {
            Repr::Whole { lease, pos } => Poll::Ready(take_next(lease, pos).map(Ok)),
            Repr::Streaming {
                queue,
                current,
                done,
            } => loop {
                if let Some((lease, next)) = current {
                    let mut pos = *next * lease.slab_size();
                    if let Some(chunk) = take_next(lease, &mut pos) {
                        *next += 1;
                        return Poll::Ready(Some(Ok(chunk)));
                    }
                    *current = None; // drops the emptied lease
                }
                if *done {
                    return Poll::Ready(None);
                }
                let mut st = queue.lock();
                if st.head >= st.parts.len() {
                    let end = match std::mem::replace(&mut st.ending, Ending::Open) {
                        Ending::Open | Ending::Verdict(Some(Ok(()))) => Ok(()),
                        Ending::Verdict(Some(Err(e))) => Err(e),
                        Ending::Verdict(None) => {
                            st.ending = Ending::Verdict(None);
                            match &mut st.waker {
                                Some(w) => w.clone_from(cx.waker()),
                                slot => *slot = Some(cx.waker().clone()),
                            }
                            return Poll::Pending;
                        }
                        Ending::Check(check) => {
                            drop(st);
                            check.finish()
                        }
                    };
                    *done = true;
                    return Poll::Ready(end.err().map(Err));
                }
                let head = st.head;
                match st.parts[head].take() {
                    Some(Ok(lease)) => {
                        st.head += 1;
                        if let Ending::Check(check) = &mut st.ending {
                            lease.chunks().for_each(|bytes| check.update(bytes));
                        }
                        *current = Some((lease, 0));
                    }
                    Some(Err(e)) => {
                        st.head = st.parts.len();
                        *done = true;
                        return Poll::Ready(Some(Err(e)));
                    }
                    None => {
                        match &mut st.waker {
                            Some(w) => w.clone_from(cx.waker()),
                            slot => *slot = Some(cx.waker().clone()),
                        }
                        return Poll::Pending;
                    }
                }
            },
        }
    }
}

/// Takes the slab holding byte `*pos` of `lease` out as a chunk from `*pos` to the slab's end,
/// and moves `*pos` there; `None` when nothing is left.
fn take_next(lease: &mut Lease, pos: &mut usize) -> Option<Bytes> {
    if *pos >= lease.len() {
        return None;
    }
    let slab = lease.slab_size();
    let (idx, off) = (*pos / slab, *pos % slab);
    let chunk = lease.take_chunk(idx, off);
    *pos = (idx * slab + off + chunk.len()).max(*pos);
    Some(chunk)
}

impl Drop for Body {
    fn drop(&mut self) {
        if let Repr::Streaming { queue, .. } = &self.repr {
            queue.close();
        }
    }
}

impl Buf for Body {
    fn remaining(&self) -> usize {
        match &self.repr {
            Repr::Whole { lease, pos } => lease.len() - pos,
            Repr::Streaming { .. } => panic!("{STREAMING}"),
        }
    }

    fn chunk(&self) -> &[u8] {
        match &self.repr {
            Repr::Whole { lease, pos } => {
                let slab = lease.slab_size();
                lease
                    .slab_bytes(*pos / slab)
                    .get(*pos % slab..)
                    .unwrap_or_default()
            }
            Repr::Streaming { .. } => panic!("{STREAMING}"),
        }
    }

    fn advance(&mut self, cnt: usize) {
        let remaining = self.remaining();
        assert!(
            cnt <= remaining,
            "advance past the end of the body: {cnt} > {remaining}"
        );
        if let Repr::Whole { pos, .. } = &mut self.repr {
            *pos += cnt;
        }
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Body");
        d.field("len", &self.len);
        match &self.repr {
            Repr::Whole { lease, pos } => d.field("whole", lease).field("pos", pos),
            Repr::Streaming { queue, .. } => d.field("streaming", queue),
        };
        d.finish()
    }
}

impl Lease {
    /// The written bytes, slab by slab.
    pub(crate) fn chunks(&self) -> Chunks<'_> {
        Chunks {
            lease: self,
            idx: 0,
        }
    }

    /// The written bytes from byte `from` on, slab by slab.
    pub(crate) fn bytes_from(&self, from: usize) -> impl Iterator<Item = &[u8]> + '_ {
        let slab = self.slab_size();
        (from / slab..self.len.div_ceil(slab)).filter_map(move |idx| {
            let bytes = self.slab_bytes(idx);
            let skip = from.saturating_sub(idx * slab);
            bytes.get(skip..).filter(|b| !b.is_empty())
        })
    }
}

/// Iterator over a whole [`Body`]'s contiguous pieces; see [`Body::chunks`].
pub struct Chunks<'a> {
    lease: &'a Lease,
    idx: usize,
}

impl<'a> Iterator for Chunks<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        while self.idx * self.lease.slab_size() < self.lease.len() {
            let bytes = self.lease.slab_bytes(self.idx);
            self.idx += 1;
            if !bytes.is_empty() {
                return Some(bytes);
            }
        }
        None
    }
}

impl fmt::Debug for Chunks<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chunks").field("idx", &self.idx).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::memory::MemoryPool;
    use std::sync::atomic::{AtomicBool, Ordering};

    async fn part(pool: &MemoryPool, data: &[u8]) -> Lease {
        let mut lease = pool.acquire(data.len() as u64).await;
        lease.write(data).unwrap();
        lease
    }

    #[tokio::test]
    async fn streaming_body_reads_parts_in_order_whatever_order_they_arrive() {
        let pool = MemoryPool::new(4, 16);
        let queue = PartQueue::new(3);
        let mut body = Body::streaming(20, Arc::clone(&queue));
        assert!(body.is_streaming());
        queue.put(2, Ok(part(&pool, b"6789").await));
        queue.put(0, Ok(part(&pool, b"abcdefgh").await));
        assert_eq!(pool.streaming_slabs(), 3);
        let mut got = Vec::new();
        for _ in 0..2 {
            got.extend_from_slice(&body.next_chunk().await.unwrap().unwrap());
        }
        assert_eq!(got, b"abcdefgh");
        // Part 1 is not in yet: the body waits for it.
        let waiting = futures_util::FutureExt::now_or_never(body.next_chunk());
        assert!(waiting.is_none());
        queue.put(1, Ok(part(&pool, b"ijkl012345").await));
        while let Some(c) = body.next_chunk().await {
            got.extend_from_slice(&c.unwrap());
        }
        assert_eq!(got, b"abcdefghijkl0123456789");
        assert_eq!(pool.slabs_in_use(), 0);
        assert_eq!(pool.streaming_slabs(), 0);
    }

    #[tokio::test]
    async fn a_failed_part_ends_the_body_after_the_parts_before_it() {
        let pool = MemoryPool::new(4, 16);
        let queue = PartQueue::new(3);
        let mut body = Body::streaming(12, Arc::clone(&queue));
        queue.put(1, Err(Error::new(ErrorKind::Changed)));
        queue.put(0, Ok(part(&pool, b"abcd").await));
        assert_eq!(&body.next_chunk().await.unwrap().unwrap()[..], b"abcd");
        let e = body.next_chunk().await.unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Changed);
        assert!(body.next_chunk().await.is_none());
        // A part arriving after the end is dropped, its memory returned.
        queue.put(2, Ok(part(&pool, b"wxyz").await));
        assert_eq!(pool.slabs_in_use(), 0);
    }

    #[tokio::test]
    async fn dropping_a_streaming_body_returns_memory_and_runs_the_hook() {
        let pool = MemoryPool::new(4, 16);
        let queue = PartQueue::new(3);
        let body = Body::streaming(12, Arc::clone(&queue));
        let cancelled = Arc::new(AtomicBool::new(false));
        let c = Arc::clone(&cancelled);
        queue.on_close(Box::new(move || c.store(true, Ordering::SeqCst)));
        queue.put(0, Ok(part(&pool, b"abcd").await));
        queue.put(2, Ok(part(&pool, b"wxyz").await));
        assert_eq!(pool.slabs_in_use(), 2);
        drop(body);
        assert!(cancelled.load(Ordering::SeqCst));
        assert!(queue.is_closed());
        assert_eq!(pool.slabs_in_use(), 0);
        queue.put(1, Ok(part(&pool, b"efgh").await));
        assert_eq!(pool.slabs_in_use(), 0);
    }

    #[tokio::test]
    #[should_panic(expected = "streaming body")]
    async fn whole_accessors_refuse_a_streaming_body() {
        let body = Body::streaming(1, PartQueue::new(1));
        let _ = body.to_vec();
    }
}
