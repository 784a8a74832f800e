//! [`SlabBudget`]: the count of slabs free, and a FIFO queue of acquisitions waiting for them.
//!
//! An acquisition of `n` slabs is granted when it is at the front of the queue (ignoring those
//! already granted) and `n` slabs are free, so a large one is never overtaken by a stream of
//! small ones. Granting happens under the lock when slabs are released; the waiter's future only
//! collects its grant. Dropping a waiting future leaves the queue (and gives back a grant it had
//! not collected yet), so acquiring is cancel safe.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

/// Slabs free and the acquisitions waiting for them.
#[derive(Debug)]
pub(super) struct SlabBudget {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    free: usize,
    next_id: u64,
    queue: VecDeque<Waiter>,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    need: usize,
    granted: bool,
    waker: Option<Waker>,
}

impl State {
    /// Grants waiters front to back while their need fits; returns the wakers to wake.
    fn grant(&mut self) -> Vec<Waker> {
        let mut wake = Vec::new();
        for w in self.queue.iter_mut().filter(|w| !w.granted) {
            if w.need > self.free {
                break;
            }
            self.free -= w.need;
            w.granted = true;
            wake.extend(w.waker.take());
        }
        wake
    }
}

impl SlabBudget {
    pub(super) fn new(total: usize) -> Self {
        SlabBudget {
            state: Mutex::new(State {
                free: total,
                next_id: 0,
                queue: VecDeque::new(),
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
        if st.queue.iter().all(|w| w.granted) && st.free >= n {
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
                if st.queue.iter().all(|w| w.granted) && st.free >= this.need {
                    st.free -= this.need;
                    return Poll::Ready(());
                }
                let id = st.next_id;
                st.next_id += 1;
                st.queue.push_back(Waiter {
                    id,
                    need: this.need,
                    granted: false,
                    waker: Some(cx.waker().clone()),
                });
                this.id = Some(id);
                Poll::Pending
            }
            Some(id) => {
                let Some(pos) = st.queue.iter().position(|w| w.id == id) else {
                    unreachable!("a queued acquisition stays queued until it completes");
                };
                if st.queue[pos].granted {
                    st.queue.remove(pos);
                    this.id = None;
                    // Completed: nothing for Drop to undo.
                    this.need = 0;
                    return Poll::Ready(());
                }
                match &mut st.queue[pos].waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    slot => *slot = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for Acquire<'_> {
    fn drop(&mut self) {
        let Some(id) = self.id else { return };
        let wake = {
            let mut st = self.budget.lock();
            let Some(pos) = st.queue.iter().position(|w| w.id == id) else {
                return;
            };
            if let Some(w) = st.queue.remove(pos) {
                if w.granted {
                    st.free += w.need; // a grant never collected goes back
                }
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
