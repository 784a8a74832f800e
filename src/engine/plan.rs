//! How an object is split into parts and how it is delivered: pure arithmetic, no I/O.
//!
//! An object of known size up to `part_size` is one GET with no `Range`; a larger one is
//! `ceil(size / part_size)` ranged GETs of `part_size` bytes (the last one shorter). An object of
//! unknown size starts with one ranged GET of `part_size` bytes, whose reply tells the size and so
//! the rest of the plan.

use crate::fetch::PartSpec;

/// How an object's body reaches the consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Held whole: delivered when every part is in.
    Whole,
    /// Handed out when the first part is in; the rest follow through the body.
    Streaming,
}

/// Parts of an object of `size` bytes (an empty object is one part).
pub(crate) fn part_count(size: u64, part_size: u64) -> usize {
    usize::try_from(size.div_ceil(part_size).max(1)).unwrap_or(usize::MAX)
}

/// The bytes part `idx` stands for. `size` is `None` only for the first part of an object of
/// unknown size: it then asks for one part's range.
pub(crate) fn part_spec(size: Option<u64>, part_size: u64, idx: usize) -> PartSpec {
    match size {
        Some(size) if size <= part_size => PartSpec {
            start: 0,
            len: size,
            ranged: false,
        },
        Some(size) => {
            let start = (idx as u64).saturating_mul(part_size).min(size);
            PartSpec {
                start,
                len: part_size.min(size - start),
                ranged: true,
            }
        }
        None => PartSpec {
            start: 0,
            len: part_size,
            ranged: true,
        },
    }
}

/// Whole or streaming, for an object of `size` bytes.
pub(crate) fn mode(size: u64, stream_threshold: u64) -> Mode {
    if size > stream_threshold {
        Mode::Streaming
    } else {
        Mode::Whole
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn small_objects_are_one_plain_get() {
        for size in [0, 1, 99, 100] {
            assert_eq!(part_count(size, 100), 1);
            let p = part_spec(Some(size), 100, 0);
            assert_eq!((p.start, p.len, p.ranged), (0, size, false));
        }
        let probe = part_spec(None, 100, 0);
        assert_eq!((probe.start, probe.len, probe.ranged), (0, 100, true));
    }

    #[test]
    fn delivery_follows_the_threshold() {
        use Mode::*;
        assert_eq!(mode(0, 0), Whole);
        assert_eq!(mode(1000, 1000), Whole);
        assert_eq!(mode(1001, 1000), Streaming);
        assert_eq!(mode(50, 10), Streaming);
    }

    proptest! {
        /// The parts of a large object tile it exactly, in order, each at most one part long.
        #[test]
        fn parts_tile_the_object(size in 101u64..100_000, part in 1u64..5000) {
            prop_assume!(size > part);
            let n = part_count(size, part);
            let mut next = 0;
            for idx in 0..n {
                let p = part_spec(Some(size), part, idx);
                prop_assert!(p.ranged);
                prop_assert_eq!(p.start, next);
                prop_assert!(p.len >= 1 && p.len <= part);
                next += p.len;
            }
            prop_assert_eq!(next, size);
            // The probe of an unknown size asks for exactly the first part.
            let probe = part_spec(None, part, 0);
            prop_assert_eq!(probe, part_spec(Some(size), part, 0));
        }
    }
}
