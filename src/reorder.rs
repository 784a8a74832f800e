//! [`ReorderRing`]: puts results that complete out of order back into sequence order.
//!
//! A fixed ring of `capacity` slots (a power of two) indexed by `seq & (capacity - 1)`. The ring
//! only accepts sequence numbers inside its window `next_out .. next_out + capacity`, so a slot
//! can never hold two live entries and memory is fixed at construction. `pop` hands out the entry
//! at `next_out` once it is present and advances the window by one. Stale, duplicate and
//! out-of-window inserts are refused with a [`RingError`] and leave the ring unchanged.
//!
//! This is a pure data structure: no locking, no async, no I/O. The engine admits `seq` only
//! while [`ReorderRing::in_window`] holds, so the head of the line always has a slot.

use std::fmt;

/// Why [`ReorderRing::insert`] refused an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// `seq` was already handed out by `pop`.
    #[error("sequence {seq} is stale: next out is {next_out}")]
    Stale {
        /// The refused sequence number.
        seq: u64,
        /// The ring's next sequence to hand out.
        next_out: u64,
    },
    /// An entry for `seq` is already waiting.
    #[error("sequence {seq} is already present")]
    Duplicate {
        /// The refused sequence number.
        seq: u64,
    },
    /// `seq` is at or beyond `next_out + capacity`.
    #[error("sequence {seq} is outside the window {next_out}..{end}")]
    OutOfWindow {
        /// The refused sequence number.
        seq: u64,
        /// The ring's next sequence to hand out.
        next_out: u64,
        /// One past the last sequence the ring accepts now.
        end: u64,
    },
}

/// A bounded, sequence-indexed reordering buffer.
pub struct ReorderRing<T> {
    slots: Box<[Option<T>]>,
    mask: u64,
    next_out: u64,
    len: usize,
}

impl<T> ReorderRing<T> {
    /// Creates a ring holding up to `capacity` entries, rounded up to a power of two (at least 1).
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.max(1).next_power_of_two();
        ReorderRing {
            slots: (0..capacity).map(|_| None).collect(),
            mask: capacity as u64 - 1,
            next_out: 0,
            len: 0,
        }
    }

    /// The number of slots: the width of the window.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The number of entries waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no entry is waiting.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The sequence number `pop` hands out next.
    pub fn next_out(&self) -> u64 {
        self.next_out
    }

    /// True when `seq` may be inserted now as far as the window is concerned
    /// (`next_out <= seq < next_out + capacity`).
    pub fn in_window(&self, seq: u64) -> bool {
        seq >= self.next_out && seq - self.next_out < self.slots.len() as u64
    }

    /// Stores `value` at `seq`.
    ///
    /// # Errors
    ///
    /// [`RingError`] when `seq` was already popped, is already present, or lies outside the
    /// window; the ring is unchanged and `value` is dropped.
    pub fn insert(&mut self, seq: u64, value: T) -> Result<(), RingError> {
        if seq < self.next_out {
            return Err(RingError::Stale {
                seq,
                next_out: self.next_out,
            });
        }
        if !self.in_window(seq) {
            return Err(RingError::OutOfWindow {
                seq,
                next_out: self.next_out,
                end: self.next_out.saturating_add(self.slots.len() as u64),
            });
        }
        let slot = &mut self.slots[(seq & self.mask) as usize];
        if slot.is_some() {
            return Err(RingError::Duplicate { seq });
        }
        *slot = Some(value);
        self.len += 1;
        Ok(())
    }

    /// True when the entry at `next_out` is present, so `pop` would return it.
    pub fn head_ready(&self) -> bool {
        self.slots[(self.next_out & self.mask) as usize].is_some()
    }

    /// Takes the entry at `next_out` if present and advances the window.
    pub fn pop(&mut self) -> Option<T> {
        let value = self.slots[(self.next_out & self.mask) as usize].take()?;
        self.next_out += 1;
        self.len -= 1;
        Some(value)
    }
}

impl<T> fmt::Debug for ReorderRing<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReorderRing")
            .field("capacity", &self.slots.len())
            .field("next_out", &self.next_out)
            .field("len", &self.len)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[test]
    fn capacity_rounds_up_to_power_of_two() {
        assert_eq!(ReorderRing::<u8>::with_capacity(0).capacity(), 1);
        assert_eq!(ReorderRing::<u8>::with_capacity(5).capacity(), 8);
        assert_eq!(ReorderRing::<u8>::with_capacity(8).capacity(), 8);
    }

    #[test]
    fn reorders_and_rejects_bad_inserts() {
        let mut r = ReorderRing::with_capacity(4);
        r.insert(2, "c").unwrap();
        assert_eq!(r.pop(), None);
        r.insert(0, "a").unwrap();
        assert_eq!(r.insert(0, "x"), Err(RingError::Duplicate { seq: 0 }));
        assert_eq!(
            r.insert(4, "x"),
            Err(RingError::OutOfWindow {
                seq: 4,
                next_out: 0,
                end: 4
            })
        );
        assert_eq!(r.pop(), Some("a"));
        assert_eq!(
            r.insert(0, "x"),
            Err(RingError::Stale {
                seq: 0,
                next_out: 1
            })
        );
        r.insert(4, "e").unwrap();
        r.insert(1, "b").unwrap();
        assert_eq!(r.pop(), Some("b"));
        assert_eq!(r.pop(), Some("c"));
        assert_eq!(r.pop(), None);
        r.insert(3, "d").unwrap();
        assert_eq!(r.pop(), Some("d"));
        assert_eq!(r.pop(), Some("e"));
        assert!(r.is_empty());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64),
        Pop,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![(0u64..40).prop_map(Op::Insert), Just(Op::Pop)]
    }

    proptest! {
        /// The ring behaves like a BTreeMap model with an explicit window.
        #[test]
        fn matches_model(cap in 1usize..10, ops in proptest::collection::vec(op(), 0..200)) {
            let mut ring = ReorderRing::with_capacity(cap);
            let cap = ring.capacity() as u64;
            let mut model: BTreeMap<u64, u64> = BTreeMap::new();
            let mut next = 0u64;
            for (i, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Insert(seq) => {
                        let expect = if seq < next {
                            Err(RingError::Stale { seq, next_out: next })
                        } else if seq >= next + cap {
                            Err(RingError::OutOfWindow { seq, next_out: next, end: next + cap })
                        } else if let std::collections::btree_map::Entry::Vacant(e) = model.entry(seq) {
                            e.insert(i as u64);
                            Ok(())
                        } else {
                            Err(RingError::Duplicate { seq })
                        };
                        prop_assert_eq!(ring.insert(seq, i as u64), expect);
                    }
                    Op::Pop => {
                        let expect = model.remove(&next);
                        if expect.is_some() {
                            next += 1;
                        }
                        prop_assert_eq!(ring.pop(), expect);
                    }
                }
                prop_assert_eq!(ring.len(), model.len());
                prop_assert_eq!(ring.next_out(), next);
                prop_assert_eq!(ring.head_ready(), model.contains_key(&next));
            }
        }
    }
}
