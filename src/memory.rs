//! The memory budget: a pool of fixed-size slabs, the [`Lease`] of slabs one object holds, and
//! the [`Body`] handed to the consumer.
//!
//! `max_bytes` is divided into `max_bytes / slab_size` slabs. A [`tokio::sync::Semaphore`] with one
//! permit per slab does the accounting: an object takes `ceil(size / slab_size)` permits with
//! `acquire_many`, which is fair (FIFO across every request of the client), so a large object is
//! never starved by a stream of small ones. Slab buffers are allocated the first time a permit
//! needs one and kept on a free list afterwards, so a warm client allocates nothing per object and
//! its resident memory never exceeds the budget.
//!
//! Response bytes are copied straight into the leased slabs. The lease travels inside the
//! [`Body`]; the slabs and permits come back when the consumer drops the body, not when the
//! download ends, so memory held by delivered-but-unconsumed objects counts against the budget.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Buf, Bytes};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The shared slab pool of one client.
#[derive(Clone)]
pub(crate) struct MemoryPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    permits: Arc<Semaphore>,
    free: Mutex<Vec<Box<[u8]>>>,
    slab_size: usize,
    total: u32,
}

impl MemoryPool {
    /// A pool of `total` slabs of `slab_size` bytes each; nothing is allocated yet.
    pub(crate) fn new(slab_size: usize, total: u32) -> Self {
        MemoryPool {
            inner: Arc::new(PoolInner {
                permits: Arc::new(Semaphore::new(total as usize)),
                free: Mutex::new(Vec::new()),
                slab_size,
                total,
            }),
        }
    }

    /// Size of one slab in bytes.
    pub(crate) fn slab_size(&self) -> usize {
        self.inner.slab_size
    }

    /// Number of slabs in the whole budget.
    pub(crate) fn total_slabs(&self) -> u32 {
        self.inner.total
    }

    /// Slabs currently leased (by downloads in flight or bodies not yet dropped).
    pub(crate) fn slabs_in_use(&self) -> usize {
        self.inner.total as usize - self.inner.permits.available_permits()
    }

    /// Slab buffers allocated so far (at most the total, never freed while the pool lives).
    pub(crate) fn slabs_allocated(&self) -> usize {
        let free = self.lock_free().len();
        free + self.slabs_in_use()
    }

    /// How many slabs an object of `size` bytes needs, or `None` if more than the whole budget.
    pub(crate) fn slabs_for(&self, size: u64) -> Option<u32> {
        let n = size.div_ceil(self.inner.slab_size as u64);
        u32::try_from(n).ok().filter(|n| *n <= self.inner.total)
    }

    /// Waits for `slabs` slabs (as counted by [`slabs_for`](Self::slabs_for)) and leases them
    /// for an object of `size` bytes.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future gives up the place in the queue and takes nothing.
    pub(crate) async fn acquire(&self, slabs: u32, size: u64) -> Lease {
        debug_assert!(slabs <= self.inner.total);
        debug_assert_eq!(self.slabs_for(size), Some(slabs));
        let permit = Arc::clone(&self.inner.permits)
            .acquire_many_owned(slabs)
            .await
            // The semaphore lives as long as the pool and is never closed.
            .unwrap_or_else(|_| unreachable!("memory semaphore is never closed"));
        let mut bufs = Vec::with_capacity(slabs as usize);
        {
            let mut free = self.lock_free();
            let keep = free.len().saturating_sub(slabs as usize);
            bufs.extend(free.drain(keep..));
        }
        while bufs.len() < slabs as usize {
            bufs.push(vec![0u8; self.inner.slab_size].into_boxed_slice());
        }
        Lease {
            pool: Arc::clone(&self.inner),
            slabs: bufs,
            _permit: permit,
            len: 0,
            size,
        }
    }

    fn lock_free(&self) -> std::sync::MutexGuard<'_, Vec<Box<[u8]>>> {
        self.inner
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for MemoryPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryPool")
            .field("slab_size", &self.inner.slab_size)
            .field("total", &self.inner.total)
            .field("in_use", &self.slabs_in_use())
            .finish()
    }
}

/// The write would take the body past its declared size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Overflow;

/// The slabs leased for one object, filled front to back up to the object's declared size.
///
/// Dropping it returns the slabs to the free list and the permits to the budget.
#[must_use = "dropping a lease returns its memory at once"]
pub(crate) struct Lease {
    pool: Arc<PoolInner>,
    slabs: Vec<Box<[u8]>>,
    // Released after `Drop::drop` has put the slabs back, so a woken waiter finds them free.
    _permit: OwnedSemaphorePermit,
    len: usize,
    size: u64,
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

    /// Bytes written so far.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Forgets what was written (for a new attempt), keeping the slabs.
    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }

    /// The declared size this lease was taken for.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.slabs.is_empty() {
            return;
        }
        let mut free = self
            .pool
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        free.append(&mut self.slabs);
    }
}

/// The bytes of one object, held in slabs leased from the client's memory budget.
///
/// Read it as a [`bytes::Buf`], walk its [`chunks`](Body::chunks), or copy it out with
/// [`to_vec`](Body::to_vec) / [`to_bytes`](Body::to_bytes). Its memory returns to the budget
/// when the `Body` is dropped: keep it only as long as you need it.
pub struct Body {
    lease: Lease,
    pos: usize,
}

impl Body {
    pub(crate) fn new(lease: Lease) -> Self {
        Body { lease, pos: 0 }
    }

    /// Total length of the body in bytes (unaffected by reading through [`Buf`]).
    pub fn len(&self) -> usize {
        self.lease.len
    }

    /// True for an empty object.
    pub fn is_empty(&self) -> bool {
        self.lease.len == 0
    }

    /// The body's contiguous pieces, front to back (each at most one slab long).
    pub fn chunks(&self) -> Chunks<'_> {
        Chunks {
            slabs: self.lease.slabs.iter(),
            remaining: self.lease.len,
        }
    }

    /// Copies the whole body into a new `Vec<u8>`.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len());
        for c in self.chunks() {
            v.extend_from_slice(c);
        }
        v
    }

    /// Copies the whole body into a new [`Bytes`].
    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(self.to_vec())
    }
}

impl Buf for Body {
    fn remaining(&self) -> usize {
        self.lease.len - self.pos
    }

    fn chunk(&self) -> &[u8] {
        if self.pos >= self.lease.len {
            return &[];
        }
        let slab_size = self.lease.pool.slab_size;
        let (idx, off) = (self.pos / slab_size, self.pos % slab_size);
        let end = slab_size.min(self.lease.len - idx * slab_size);
        &self.lease.slabs[idx][off..end]
    }

    fn advance(&mut self, cnt: usize) {
        assert!(
            cnt <= self.remaining(),
            "advance past the end of the body: {cnt} > {}",
            self.remaining()
        );
        self.pos += cnt;
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Body")
            .field("len", &self.lease.len)
            .field("slabs", &self.lease.slabs.len())
            .finish()
    }
}

/// Iterator over a [`Body`]'s contiguous pieces; see [`Body::chunks`].
#[derive(Debug)]
pub struct Chunks<'a> {
    slabs: std::slice::Iter<'a, Box<[u8]>>,
    remaining: usize,
}

impl<'a> Iterator for Chunks<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.remaining == 0 {
            return None;
        }
        let slab = self.slabs.next()?;
        let n = slab.len().min(self.remaining);
        self.remaining -= n;
        Some(&slab[..n])
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
            let size = data.len() as u64;
            let slabs = self.0.slabs_for(size).expect("fits the budget");
            let mut lease = self.0.acquire(slabs, size).await;
            lease.write(data).expect("declared size");
            Body::new(lease).len()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[tokio::test]
    async fn body_spans_slabs_and_returns_them_on_drop() {
        let pool = MemoryPool::new(4, 8);
        let n = pool.slabs_for(10).unwrap();
        assert_eq!(n, 3);
        let mut lease = pool.acquire(n, 10).await;
        lease.write(b"hello").unwrap();
        lease.write(b"worl").unwrap();
        assert_eq!(lease.write(b"d!"), Err(Overflow));
        lease.write(b"d").unwrap();
        assert_eq!(pool.slabs_in_use(), 3);
        let mut body = Body::new(lease);
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
        let again = pool.acquire(2, 8).await;
        assert_eq!(pool.slabs_allocated(), 3);
        drop(again);
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
        let first = pool.acquire(3, 3).await;
        let p = pool.clone();
        let big = tokio::spawn(async move { p.acquire(4, 4).await });
        tokio::task::yield_now().await;
        // A small request queued behind the big one must not overtake it.
        let p = pool.clone();
        let small = tokio::spawn(async move { p.acquire(1, 1).await });
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
    }

    proptest! {
        /// Against a counter model: in-use never exceeds the total, every byte written reads
        /// back, and everything returns once all leases are dropped.
        #[test]
        fn matches_counter_model(
            slab in 1usize..64,
            total in 1u32..32,
            ops in proptest::collection::vec(
                prop_oneof![(0u64..2048).prop_map(Op::Acquire), (0usize..16).prop_map(Op::Release)],
                0..64,
            ),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let pool = MemoryPool::new(slab, total);
                let mut held: Vec<(Body, Vec<u8>)> = Vec::new();
                let mut used = 0u32;
                for op in ops {
                    match op {
                        Op::Acquire(size) => {
                            let Some(n) = pool.slabs_for(size) else {
                                prop_assert!(size.div_ceil(slab as u64) > total as u64);
                                continue;
                            };
                            if used + n > total {
                                continue; // would wait forever in this single-task model
                            }
                            let mut lease = pool.acquire(n, size).await;
                            used += n;
                            let data: Vec<u8> = (0..size).map(|i| (i * 31 + size) as u8).collect();
                            for part in data.chunks(7) {
                                prop_assert!(lease.write(part).is_ok());
                            }
                            prop_assert_eq!(lease.write(b"x"), Err(Overflow));
                            held.push((Body::new(lease), data));
                        }
                        Op::Release(i) if !held.is_empty() => {
                            let (body, data) = held.swap_remove(i % held.len());
                            prop_assert_eq!(body.to_vec(), data);
                            used -= pool.slabs_for(body.len() as u64).unwrap_or(0);
                        }
                        Op::Release(_) => {}
                    }
                    prop_assert_eq!(pool.slabs_in_use(), used as usize);
                    prop_assert!(pool.slabs_allocated() <= total as usize);
                }
                drop(held);
                prop_assert_eq!(pool.slabs_in_use(), 0);
                Ok(())
            })?;
        }
    }
}
