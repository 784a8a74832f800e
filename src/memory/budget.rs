//! [`SlabBudget`]: the count of slabs free, and a FIFO queue of acquisitions waiting for them.
//!
//! An acquisition of `n` slabs is granted when it is at the front of the queue (ignoring those
//! already granted) and `n` slabs are free, so a large one is never overtaken by a stream of
//! small ones. Granting happens under the lock when slabs are released; the waiter's future only
//! collects its grant. Dropping a waiting future leaves the queue (and gives back a grant it had
//! not collected yet), so acquiring is cancel safe.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use crate::waitlist::{Place, WaitList};

/// Slabs free and the acquisitions waiting for them.
#[derive(Debug)]
pub(super) struct SlabBudget {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    free: usize,
    waiters: WaitList<usize>,
}

impl State {
    /// Grants waiters front to back while their need fits; returns the wakers to wake.
    fn grant(&mut self) -> Vec<Waker> {
        let free = &mut self.free;
        self.waiters.grant(|need| {
            let fits = need <= *free;
            if fits {
                *free -= need;
            }
            fits
        })
    }
}

impl SlabBudget {
    pub(super) fn new(total: usize) -> Self {
        SlabBudget {
            state: Mutex::new(State {
                free: total,
                waiters: WaitList::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Slabs neither held nor granted.
    pub(super) fn free(&self) -> usize {
        self.lock().free
    }

    /// Returns `n` slabs and grants the waiters they now satisfy.
    pub(super) fn release(&self, n: usize) {
        let wake = {
            let mut st = self.lock();
            st.free += n;
            st.grant()
        };
        wake.into_iter().for_each(Waker::wake);
    }

    /// Takes `n` slabs now if they are free and nobody is waiting; never queues.
    pub(super) fn try_acquire(&self, n: usize) -> bool {
        let mut st = self.lock();
        if st.waiters.none_waiting() && st.free >= n {
            st.free -= n;
            true
        } else {
            false
        }
    }

    /// Waits (FIFO) until `n` slabs are granted; the caller then holds them until it releases
    /// them.
    pub(super) fn acquire(&self, n: usize) -> Acquire<'_> {
        Acquire {
            budget: self,
            need: n,
            id: None,
        }
    }
}

/// The future of [`SlabBudget::acquire`].
#[derive(Debug)]
pub(super) struct Acquire<'a> {
    budget: &'a SlabBudget,
    need: usize,
    /// Set once queued.
    id: Option<u64>,
}

impl Future for Acquire<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let mut st = this.budget.lock();
        match this.id {
            None => {
                if st.waiters.none_waiting() && st.free >= this.need {
                    st.free -= this.need;
                    return Poll::Ready(());
                }
                this.id = Some(st.waiters.push(this.need, Place::Back, cx));
                Poll::Pending
            }
            Some(id) => {
                let ready = st.waiters.poll(id, cx);
                if ready.is_ready() {
                    // Completed: nothing for Drop to undo.
                    this.id = None;
                }
                ready
            }
        }
    }
}

impl Drop for Acquire<'_> {
    fn drop(&mut self) {
        let Some(id) = self.id else { return };
        let wake = {
            let mut st = self.budget.lock();
            if let Some(granted) = st.waiters.cancel(id) {
                st.free += granted; // a grant never collected goes back
            }
            // Leaving the queue may unblock those behind.
            st.grant()
        };
        wake.into_iter().for_each(Waker::wake);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[tokio::test]
    async fn fifo_grants_and_cancelled_waiters_step_aside() {
        let b = SlabBudget::new(4);
        b.acquire(3).await;
        let mut big = Box::pin(b.acquire(4));
        assert!((&mut big).now_or_never().is_none());
        // A small one queued behind the big one waits, though a slab is free.
        let mut small = Box::pin(b.acquire(1));
        assert!((&mut small).now_or_never().is_none());
        b.release(3);
        assert!(
            (&mut small).now_or_never().is_none(),
            "the big one is first"
        );
        // Dropping the granted-but-uncollected big one gives its slabs back to the next.
        drop(big);
        assert!((&mut small).now_or_never().is_some());
        assert_eq!(b.free(), 3);
        // A cancelled waiter in front no longer blocks those behind it.
        b.acquire(3).await;
        let mut front = Box::pin(b.acquire(2));
        assert!((&mut front).now_or_never().is_none());
        let mut behind = Box::pin(b.acquire(0));
        assert!((&mut behind).now_or_never().is_none());
        drop(front);
        assert!((&mut behind).now_or_never().is_some());
        b.release(4);
        assert_eq!(b.free(), 4);
    }
}
