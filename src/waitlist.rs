//! [`WaitList`]: the queue of tasks waiting for a counted resource (slabs of memory, slots under
//! the concurrency limit), kept under the owner's lock.
//!
//! The owner decides what a waiter needs and whether it can have it; the list keeps the order
//! and the wakers. Granting happens under the owner's lock when the resource is given back, so a
//! waiter's future only collects its grant. A waiter that is dropped leaves the list, and the
//! owner gets back a grant it had not collected. No I/O, no async runtime.

use std::collections::VecDeque;
use std::task::{Context, Poll, Waker};

/// Waiters in order, each with what it needs.
#[derive(Debug)]
pub(crate) struct WaitList<N> {
    next_id: u64,
    queue: VecDeque<Waiter<N>>,
}

#[derive(Debug)]
struct Waiter<N> {
    id: u64,
    need: N,
    granted: bool,
    waker: Option<Waker>,
}

/// Where a waiter joins the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    Back,
    Front,
}

impl<N: Copy> WaitList<N> {
    pub(crate) fn new() -> Self {
        WaitList {
            next_id: 0,
            queue: VecDeque::new(),
        }
    }

    /// True when nobody waits for a grant: a newcomer may take what is free without queueing.
    pub(crate) fn none_waiting(&self) -> bool {
        self.queue.iter().all(|w| w.granted)
    }

    /// Queues a waiter for `need`, to be woken through `cx`; returns its id.
    pub(crate) fn push(&mut self, need: N, place: Place, cx: &Context<'_>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let waiter = Waiter {
            id,
            need,
            granted: false,
            waker: Some(cx.waker().clone()),
        };
        match place {
            Place::Back => self.queue.push_back(waiter),
            Place::Front => self.queue.push_front(waiter),
        }
        id
    }

    /// Grants waiters front to back for as long as `take` (which takes the need from the
    /// owner's count) says yes; returns the wakers to wake once the owner's lock is released.
    pub(crate) fn grant(&mut self, mut take: impl FnMut(N) -> bool) -> Vec<Waker> {
        let mut wake = Vec::new();
        for w in self.queue.iter_mut().filter(|w| !w.granted) {
            if !take(w.need) {
                break;
            }
            w.granted = true;
            wake.extend(w.waker.take());
        }
        wake
    }

    /// For queued waiter `id`: ready (and off the list) once granted, else pending with its
    /// waker updated.
    pub(crate) fn poll(&mut self, id: u64, cx: &Context<'_>) -> Poll<()> {
        let Some(pos) = self.queue.iter().position(|w| w.id == id) else {
            unreachable!("a queued waiter stays queued until it collects its grant");
        };
        if self.queue[pos].granted {
            self.queue.remove(pos);
            return Poll::Ready(());
        }
        match &mut self.queue[pos].waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Takes waiter `id` off the list (its future was dropped); returns what it had been
    /// granted and not collected, for the owner to take back.
    pub(crate) fn cancel(&mut self, id: u64) -> Option<N> {
        let pos = self.queue.iter().position(|w| w.id == id)?;
        self.queue.remove(pos).filter(|w| w.granted).map(|w| w.need)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    #[test]
    fn grants_in_order_and_cancelled_grants_come_back() {
        let cx = Context::from_waker(Waker::noop());
        let mut list = WaitList::new();
        let a = list.push(3, Place::Back, &cx);
        let b = list.push(1, Place::Back, &cx);
        let c = list.push(2, Place::Front, &cx);
        assert!(!list.none_waiting());
        let mut free = 4;
        // c (in front) takes 2, then a needs 3 and stops the line, though b would fit.
        let woken = list.grant(|n| {
            let ok = n <= free;
            if ok {
                free -= n;
            }
            ok
        });
        assert_eq!((woken.len(), free), (1, 2));
        assert_eq!(list.poll(a, &cx), Poll::Pending);
        assert_eq!(list.poll(b, &cx), Poll::Pending);
        assert_eq!(list.poll(c, &cx), Poll::Ready(()));
        // a leaves before being granted: nothing to give back; b is granted then dropped.
        assert_eq!(list.cancel(a), None);
        list.grant(|n| n <= free);
        assert_eq!(list.cancel(b), Some(1));
        assert!(list.none_waiting());
        assert_eq!(list.cancel(b), None);
    }
}
