//! `ReorderRing` against a `BTreeMap` model: random insert/pop sequences must give the same
//! answers, the same errors and the same order.
#![no_main]

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use s3_ordered::{ReorderRing, RingError};

#[derive(Debug, Arbitrary)]
enum Op {
    Insert(u16),
    Pop,
}

#[derive(Debug, Arbitrary)]
struct Input {
    capacity: u8,
    ops: Vec<Op>,
}

fuzz_target!(|input: Input| {
    let mut ring = ReorderRing::with_capacity(input.capacity as usize);
    let cap = ring.capacity() as u64;
    assert!(cap.is_power_of_two() && cap >= input.capacity.max(1) as u64);
    let mut model: BTreeMap<u64, usize> = BTreeMap::new();
    let mut next = 0u64;
    for (i, op) in input.ops.into_iter().enumerate() {
        match op {
            Op::Insert(seq) => {
                let seq = u64::from(seq);
                let expect = if seq < next {
                    Err(RingError::Stale {
                        seq,
                        next_out: next,
                    })
                } else if seq >= next + cap {
                    Err(RingError::OutOfWindow {
                        seq,
                        next_out: next,
                        end: next + cap,
                    })
                } else if model.contains_key(&seq) {
                    Err(RingError::Duplicate { seq })
                } else {
                    model.insert(seq, i);
                    Ok(())
                };
                assert_eq!(ring.insert(seq, i), expect);
            }
            Op::Pop => {
                let expect = model.remove(&next);
                if expect.is_some() {
                    next += 1;
                }
                assert_eq!(ring.pop(), expect);
            }
        }
        assert_eq!(ring.len(), model.len());
        assert_eq!(ring.next_out(), next);
        assert_eq!(ring.head_ready(), model.contains_key(&next));
    }
});
