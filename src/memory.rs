//! The memory budget: a pool of fixed-size slabs, the [`Lease`] of slabs one part of an object
//! holds, and the [`Body`] handed to the consumer.
//!
//! `max_bytes` is divided into `max_bytes / slab_size` slabs. A FIFO slab budget does the
//! accounting: a part waits for `ceil(len / slab_size)` slabs in arrival order across every
//! request of the client, so a large part is never starved by a stream of small ones. Slab buffers are allocated the first time one
//! needs one and kept on a free list afterwards, so a warm client allocates nothing per object and
//! its resident memory never exceeds the budget.
//!
//! Slabs are counted, not tied to a guard: a lease takes them, and every slab gives its own count
//! back when it returns to the free list — when its [`Lease`] is dropped, when a lease is trimmed, or
//! when a chunk handed out by [`Body::next_chunk`] is dropped. So memory comes back slab by slab,
//! as soon as the consumer is done with it, and the count in use is always the count of slabs
//! held.
//!
//! Response bytes are copied straight into the leased slabs. The leases travel inside the
//! [`Body`]; their slabs come back when the consumer drops the body (or its chunks), not when the
//! download ends, so memory held by delivered-but-unconsumed objects counts against the budget.

mod body;
mod budget;

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;

pub use body::{Body, Chunks};
pub(crate) use body::{EndCheck, PartQueue};
use budget::SlabBudget;

/// The shared slab pool of one client.
#[derive(Clone)]
pub(crate) struct MemoryPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    budget: SlabBudget,
    free: Mutex<Vec<Box<[u8]>>>,
    slab_size: usize,
    total: u32,
    /// Slabs held by the parts of streaming bodies.
    streaming: AtomicUsize,
    /// Slabs held by whole bodies handed to the consumer.
    delivered: AtomicUsize,
}

/// Whose slabs a lease (or a chunk taken from it) holds, for the counts of [`PoolInner`].
#[derive(Debug, Clone, Copy, Default)]
struct Held {
    /// A streaming body's part.
    streaming: bool,
    /// A whole body handed to the consumer.
    delivered: bool,
}

impl PoolInner {
    fn lock_free(&self) -> MutexGuard<'_, Vec<Box<[u8]>>> {
        self.free.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts `slabs` back on the free list, then returns them to the budget (in that order, so a
    /// woken waiter finds the buffers free).
    fn give_back(&self, slabs: impl Iterator<Item = Box<[u8]>>, held: Held) {
        let mut n = 0;
        {
            let mut free = self.lock_free();
            for slab in slabs.filter(|s| !s.is_empty()) {
                free.push(slab);
                n += 1;
            }
        }
        if n > 0 {
            if held.streaming {
                self.streaming.fetch_sub(n, Ordering::Relaxed);
            }
            if held.delivered {
                self.delivered.fetch_sub(n, Ordering::Relaxed);
            }
            self.budget.release(n);
        }
    }
}

impl MemoryPool {
    /// A pool of `total` slabs of `slab_size` bytes each; nothing is allocated yet.
    pub(crate) fn new(slab_size: usize, total: u32) -> Self {
        MemoryPool {
            inner: Arc::new(PoolInner {
                budget: SlabBudget::new(total as usize),
                free: Mutex::new(Vec::new()),
                slab_size,
                total,
                streaming: AtomicUsize::new(0),
                delivered: AtomicUsize::new(0),
            }),
        }
    }

    /// Size of one slab in bytes.
    pub(crate) fn slab_size(&self) -> usize {
        self.inner.slab_size
    }

    /// The budget in bytes: every slab.
    pub(crate) fn budget(&self) -> u64 {
        u64::from(self.inner.total) * self.inner.slab_size as u64
    }

    /// Number of slabs in the whole budget.
    pub(crate) fn total_slabs(&self) -> u32 {
        self.inner.total
    }

    /// Slabs currently leased (by downloads in flight, bodies and chunks not yet dropped).
    pub(crate) fn slabs_in_use(&self) -> usize {
        self.inner.total as usize - self.inner.budget.free()
    }

    /// Slabs currently held by the parts of streaming bodies.
    pub(crate) fn streaming_slabs(&self) -> usize {
        self.inner.streaming.load(Ordering::Relaxed)
    }

    /// Slabs the consumer holds: by whole bodies handed out and not yet dropped, and by the
    /// parts of streaming bodies.
    pub(crate) fn held_by_consumer(&self) -> usize {
        self.inner.delivered.load(Ordering::Relaxed) + self.streaming_slabs()
    }

    /// Slab buffers allocated so far (at most the total, never freed while the pool lives).
    pub(crate) fn slabs_allocated(&self) -> usize {
        let free = self.inner.lock_free().len();
        free + self.slabs_in_use()
    }

    /// `len` rounded up to whole slabs: the memory `len` bytes take from the budget.
    pub(crate) fn slab_bytes(&self, len: u64) -> u64 {
        let slab = self.inner.slab_size as u64;
        len.div_ceil(slab).saturating_mul(slab)
    }

    /// How many slabs `len` bytes need, or `None` if more than the whole budget.
    pub(crate) fn slabs_for(&self, len: u64) -> Option<u32> {
        let n = len.div_ceil(self.inner.slab_size as u64);
        u32::try_from(n).ok().filter(|n| *n <= self.inner.total)
    }

    /// Leases the slabs `len` bytes need if they are free now and nobody waits for memory;
    /// never queues.
    pub(crate) fn try_acquire(&self, len: u64) -> Option<Lease> {
        let slabs = self.slabs_for(len)?;
        self.inner
            .budget
            .try_acquire(slabs as usize)
            .then(|| self.lease(slabs, len))
    }

    /// Waits for the slabs `len` bytes need and leases them. `len` must fit the budget
    /// ([`slabs_for`](Self::slabs_for) is `Some`).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future gives up the place in the queue and takes nothing.
    pub(crate) async fn acquire(&self, len: u64) -> Lease {
        let slabs = self.slabs_for(len).unwrap_or(self.inner.total);
        debug_assert_eq!(
            self.slabs_for(len),
            Some(slabs),
            "{len} bytes exceed the budget"
        );
        // Each slab returns its own count (see the module docs).
        self.inner.budget.acquire(slabs as usize).await;
        self.lease(slabs, len)
    }

    /// A lease of `slabs` slabs already taken from the budget, for `len` bytes.
    fn lease(&self, slabs: u32, len: u64) -> Lease {
        let mut bufs = Vec::with_capacity(slabs as usize);
        {
            let mut free = self.inner.lock_free();
            let keep = free.len().saturating_sub(slabs as usize);
            bufs.extend(free.drain(keep..));
        }
        while bufs.len() < slabs as usize {
            bufs.push(vec![0u8; self.inner.slab_size].into_boxed_slice());
        }
        Lease {
            pool: Arc::clone(&self.inner),
            slabs: bufs,
            len: 0,
            size: len,
            held: Held::default(),
        }
    }
}

impl fmt::Debug for MemoryPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryPool")
            .field("slab_size", &self.inner.slab_size)
            .field("total", &self.inner.total)
            .field("in_use", &self.slabs_in_use())
            .field("budget", &self.inner.budget)
            .finish()
    }
}

/// The write would take the lease past its declared size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Overflow;

/// The slabs leased for one part (or a whole object), filled front to back up to a declared size.
///
/// Dropping it returns its slabs to the free list and to the budget.
#[must_use = "dropping a lease returns its memory at once"]
pub(crate) struct Lease {
    pool: Arc<PoolInner>,
    /// Slab buffers; an empty box marks a slab already handed out as a chunk.
    slabs: Vec<Box<[u8]>>,
    len: usize,
    size: u64,
    held: Held,
}

impl Lease {
    /// Appends `data`; refuses (and writes nothing) if that would exceed the declared size.
    pub(crate) fn write(&mut self, mut data: &[u8]) -> Result<(), Overflow> {
        if (self.len + data.len()) as u64 > self.size {
            return Err(Overflow);
        }
        let slab_size = self.pool.slab_size;
        while !data.is_empty() {
            let (idx, off) = (self.len / slab_size, self.len % slab_size);
            let n = data.len().min(slab_size - off);
            self.slabs[idx][off..off + n].copy_from_slice(&data[..n]);
            self.len += n;
            data = &data[n..];
        }
        Ok(())
    }

    /// The free bytes of the slab being filled, at most `max` and never past the declared
    /// size: where the next read goes. Empty when the lease is full (or `max` is 0).
    /// [`advance`](Lease::advance) then counts what was put there.
    pub(crate) fn spare_mut(&mut self, max: usize) -> &mut [u8] {
        let slab_size = self.pool.slab_size;
        let (idx, off) = (self.len / slab_size, self.len % slab_size);
        let left = usize::try_from(self.size - self.len as u64).unwrap_or(usize::MAX);
        let n = (slab_size - off).min(left).min(max);
        match self.slabs.get_mut(idx) {
            Some(slab) if n > 0 => &mut slab[off..off + n],
            _ => &mut [],
        }
    }

    /// Counts `n` bytes just put into [`spare_mut`](Lease::spare_mut) as written.
    pub(crate) fn advance(&mut self, n: usize) {
        debug_assert!(self.len as u64 + n as u64 <= self.size);
        debug_assert!(self.len % self.pool.slab_size + n <= self.pool.slab_size);
        self.len += n;
    }

    /// Bytes written so far.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Forgets what was written (for a new attempt), keeping the slabs.
    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }

    /// The declared size this lease was taken (or trimmed) for.
    #[cfg(test)]
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Lowers the declared size to `size` (at least what is written) and returns the slabs it no
    /// longer needs to the budget at once.
    pub(crate) fn shrink_to(&mut self, size: u64) {
        debug_assert!(size <= self.size && size >= self.len as u64);
        self.size = size;
        let keep = size.div_ceil(self.pool.slab_size as u64) as usize;
        if keep < self.slabs.len() {
            let extra: Vec<_> = self.slabs.drain(keep..).collect();
            self.pool.give_back(extra.into_iter(), self.held);
        }
    }

    /// Appends `next`'s bytes after this lease's, which must be full (every slab filled), so the
    /// slabs of both stay one contiguous run of bytes.
    pub(crate) fn append(&mut self, mut next: Lease) {
        debug_assert_eq!(self.len, self.slabs.len() * self.pool.slab_size);
        debug_assert!(Arc::ptr_eq(&self.pool, &next.pool));
        self.slabs.append(&mut next.slabs);
        self.len += next.len;
        self.size += next.size;
    }

    /// Counts this lease's slabs as held by a streaming body (see [`MemoryPool::streaming_slabs`]).
    pub(crate) fn mark_streaming(&mut self) {
        if !self.held.streaming {
            self.held.streaming = true;
            self.pool
                .streaming
                .fetch_add(self.slabs_held(), Ordering::Relaxed);
        }
    }

    /// Counts this lease's slabs as held by a whole body handed to the consumer (see
    /// [`MemoryPool::held_by_consumer`]).
    pub(crate) fn mark_delivered(&mut self) {
        if !self.held.delivered {
            self.held.delivered = true;
            self.pool
                .delivered
                .fetch_add(self.slabs_held(), Ordering::Relaxed);
        }
    }

    /// Slabs still held (not handed out as chunks).
    fn slabs_held(&self) -> usize {
        self.slabs.iter().filter(|s| !s.is_empty()).count()
    }

    fn slab_size(&self) -> usize {
        self.pool.slab_size
    }

    /// The written bytes of slab `idx` (empty once handed out).
    fn slab_bytes(&self, idx: usize) -> &[u8] {
        let start = idx * self.slab_size();
        let end = self.len.min(start + self.slab_size());
        match self.slabs.get(idx) {
            Some(slab) if !slab.is_empty() && end > start => &slab[..end - start],
            _ => &[],
        }
    }

    /// Moves slab `idx`'s bytes `[off..]` out as zero-copy [`Bytes`]; the slab returns to the budget when the last clone of them is dropped.
    fn take_chunk(&mut self, idx: usize, off: usize) -> Bytes {
        let end = self.len.min((idx + 1) * self.slab_size()) - idx * self.slab_size();
        let buf = std::mem::take(&mut self.slabs[idx]);
        Bytes::from_owner(SlabChunk {
            pool: Arc::clone(&self.pool),
            buf,
            start: off,
            end,
            held: self.held,
        })
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let slabs = std::mem::take(&mut self.slabs);
        self.pool.give_back(slabs.into_iter(), self.held);
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("len", &self.len)
            .field("size", &self.size)
            .field("slabs", &self.slabs.len())
            .finish()
    }
}

/// One slab handed out as a chunk; gives the slab back on drop.
struct SlabChunk {
    pool: Arc<PoolInner>,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    held: Held,
}

impl AsRef<[u8]> for SlabChunk {
    fn as_ref(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }
}

impl Drop for SlabChunk {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        self.pool.give_back(std::iter::once(buf), self.held);
    }
}

pub(crate) mod bench {
    //! A facade over the pool for the crate's benchmarks.

    use super::{Body, MemoryPool};

    /// One memory pool, driven by the pool benchmark.
    #[derive(Debug)]
    pub struct PoolBench(MemoryPool);

    impl PoolBench {
        /// A pool of `total` slabs of `slab_size` bytes.
        pub fn new(slab_size: usize, total: u32) -> Self {
            PoolBench(MemoryPool::new(slab_size, total))
        }

        /// Leases room for `data`, copies it in, and drops the body; returns its length.
        pub async fn cycle(&self, data: &[u8]) -> usize {
            let mut lease = self.0.acquire(data.len() as u64).await;
            lease.write(data).expect("declared size");
            Body::whole(lease).len()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;
    use proptest::prelude::*;

    #[tokio::test]
    async fn reads_go_into_the_spare_room_of_one_slab_at_a_time() {
        let pool = MemoryPool::new(4, 8);
        let mut lease = pool.acquire(10).await;
        let mut filled = Vec::new();
        let mut at = 0;
        // What a reader of 3 bytes at a time would put where spare_mut points.
        loop {
            let spare = lease.spare_mut(3);
            assert!(spare.len() <= 3, "at most what was asked for");
            if spare.is_empty() {
                break;
            }
            let n = spare.len();
            for (i, b) in spare.iter_mut().enumerate() {
                *b = b'a' + (at + i) as u8;
            }
            at += n;
            filled.push(n);
            lease.advance(n);
        }
        // Never across a slab boundary, never past the declared size.
        assert_eq!(filled, [3, 1, 3, 1, 2]);
        assert_eq!(lease.len(), 10);
        assert!(lease.spare_mut(100).is_empty());
        assert_eq!(Body::whole(lease).to_vec(), b"abcdefghij");
    }

    #[tokio::test]
    async fn body_spans_slabs_and_returns_them_on_drop() {
        let pool = MemoryPool::new(4, 8);
        assert_eq!(pool.slabs_for(10), Some(3));
        let mut lease = pool.acquire(10).await;
        lease.write(b"hello").unwrap();
        lease.write(b"worl").unwrap();
        assert_eq!(lease.write(b"d!"), Err(Overflow));
        lease.write(b"d").unwrap();
        assert_eq!(pool.slabs_in_use(), 3);
        let mut body = Body::whole(lease);
        assert_eq!(body.to_vec(), b"helloworld");
        let chunks: Vec<&[u8]> = body.chunks().collect();
        assert_eq!(chunks, vec![&b"hell"[..], b"owor", b"ld"]);
        let mut out = [0u8; 10];
        body.copy_to_slice(&mut out);
        assert_eq!(&out, b"helloworld");
        assert_eq!(body.remaining(), 0);
        assert_eq!(body.len(), 10);
        drop(body);
        assert_eq!(pool.slabs_in_use(), 0);
        assert_eq!(pool.slabs_allocated(), 3);
        // Reuse: no new allocation for the next lease.
        let again = pool.acquire(8).await;
        assert_eq!(pool.slabs_allocated(), 3);
        drop(again);
    }

    #[tokio::test]
    async fn chunks_return_their_slab_one_by_one() {
        let pool = MemoryPool::new(4, 8);
        let mut lease = pool.acquire(10).await;
        lease.write(b"helloworld").unwrap();
        let mut body = Body::whole(lease);
        let a = body.next_chunk().await.unwrap().unwrap();
        assert_eq!(&a[..], b"hell");
        assert_eq!(pool.slabs_in_use(), 3);
        // What is left of the body no longer holds the chunk's slab.
        assert_eq!(body.to_vec(), b"oworld");
        let b = body.next_chunk().await.unwrap().unwrap();
        let c = body.next_chunk().await.unwrap().unwrap();
        assert!(body.next_chunk().await.is_none());
        assert_eq!((&b[..], &c[..]), (&b"owor"[..], &b"ld"[..]));
        drop(body);
        assert_eq!(pool.slabs_in_use(), 3, "chunks still hold their slabs");
        drop(a);
        assert_eq!(pool.slabs_in_use(), 2);
        let tail = c.slice(1..);
        drop((b, c));
        assert_eq!(pool.slabs_in_use(), 1, "a slice keeps its slab");
        drop(tail);
        assert_eq!(pool.slabs_in_use(), 0);
    }

    #[tokio::test]
    async fn shrink_and_append_keep_the_count_exact() {
        let pool = MemoryPool::new(4, 8);
        let mut first = pool.acquire(16).await;
        assert_eq!(pool.slabs_in_use(), 4);
        first.write(b"abcdefgh").unwrap();
        first.shrink_to(8);
        assert_eq!(pool.slabs_in_use(), 2);
        assert_eq!(first.write(b"x"), Err(Overflow));
        let mut second = pool.acquire(3).await;
        second.write(b"xyz").unwrap();
        first.append(second);
        assert_eq!((first.len(), first.size()), (11, 11));
        assert_eq!(Body::whole(first).to_vec(), b"abcdefghxyz");
        assert_eq!(pool.slabs_in_use(), 0);
    }

    #[test]
    fn slabs_for_refuses_more_than_the_budget() {
        let pool = MemoryPool::new(1024, 4);
        assert_eq!(pool.slabs_for(0), Some(0));
        assert_eq!(pool.slabs_for(1), Some(1));
        assert_eq!(pool.slabs_for(4096), Some(4));
        assert_eq!(pool.slabs_for(4097), None);
        assert_eq!(pool.slabs_for(u64::MAX), None);
    }

    #[tokio::test]
    async fn acquire_waits_fifo_until_memory_returns() {
        let pool = MemoryPool::new(1, 4);
        let first = pool.acquire(3).await;
        let p = pool.clone();
        let big = tokio::spawn(async move { p.acquire(4).await });
        tokio::task::yield_now().await;
        // A small request queued behind the big one must not overtake it.
        let p = pool.clone();
        let small = tokio::spawn(async move { p.acquire(1).await });
        tokio::task::yield_now().await;
        assert!(!big.is_finished() && !small.is_finished());
        drop(first);
        let big = big.await.unwrap();
        assert_eq!(pool.slabs_in_use(), 4);
        assert!(!small.is_finished());
        drop(big);
        let small = small.await.unwrap();
        assert_eq!(pool.slabs_in_use(), 1);
        drop(small);
        assert_eq!(pool.slabs_in_use(), 0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Acquire(u64),
        Release(usize),
        TakeChunk(usize),
    }

    proptest! {
        /// Against a counter model: in-use never exceeds the total, every byte written reads
        /// back (whole or chunk by chunk), and everything returns once all leases are dropped.
        #[test]
        fn matches_counter_model(
            slab in 1usize..64,
            total in 1u32..32,
            ops in proptest::collection::vec(
                prop_oneof![
                    (0u64..2048).prop_map(Op::Acquire),
                    (0usize..16).prop_map(Op::Release),
                    (0usize..16).prop_map(Op::TakeChunk),
                ],
                0..64,
            ),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let pool = MemoryPool::new(slab, total);
                // Each held body, the bytes it must still yield, and the chunks taken from it.
                let mut held: Vec<(Body, Vec<u8>, Vec<Bytes>)> = Vec::new();
                let mut used = 0usize;
                for op in ops {
                    match op {
                        Op::Acquire(size) => {
                            let Some(n) = pool.slabs_for(size) else {
                                prop_assert!(size.div_ceil(slab as u64) > total as u64);
                                continue;
                            };
                            if used + n as usize > total as usize {
                                continue; // would wait forever in this single-task model
                            }
                            let mut lease = pool.acquire(size).await;
                            used += n as usize;
                            let data: Vec<u8> = (0..size).map(|i| (i * 31 + size) as u8).collect();
                            for part in data.chunks(7) {
                                prop_assert!(lease.write(part).is_ok());
                            }
                            prop_assert_eq!(lease.write(b"x"), Err(Overflow));
                            held.push((Body::whole(lease), data, Vec::new()));
                        }
                        Op::TakeChunk(i) if !held.is_empty() => {
                            let n = held.len();
                            let (body, _, taken) = &mut held[i % n];
                            if let Some(chunk) = body.next_chunk().await {
                                taken.push(chunk.expect("a whole body never fails"));
                            }
                        }
                        Op::Release(i) if !held.is_empty() => {
                            let (body, data, taken) = held.swap_remove(i % held.len());
                            let mut got: Vec<u8> = taken.iter().flat_map(|c| c.to_vec()).collect();
                            got.extend(body.to_vec());
                            prop_assert_eq!(got, data);
                            used -= pool.slabs_for(body.size()).unwrap_or(0) as usize;
                        }
                        _ => {}
                    }
                    prop_assert_eq!(pool.slabs_in_use(), used);
                    prop_assert!(pool.slabs_allocated() <= total as usize);
                }
                drop(held);
                prop_assert_eq!(pool.slabs_in_use(), 0);
                Ok(())
            })?;
        }
    }
}
