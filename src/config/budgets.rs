//! The budgets a client is built with — connections, per-request connections, memory in slabs,
//! the part size and the streaming threshold — checked together, and the default part size
//! derived from them; and the adaptive limit's bounds.

use crate::error::ConfigError;
use crate::retry::ThrottleConfig;

/// Smallest slab size accepted: one page.
pub const MIN_SLAB_SIZE: usize = 4 << 10;

/// Largest slab size accepted: 64 MiB.
pub const MAX_SLAB_SIZE: usize = 64 << 20;

/// Default part size: 8 MiB, the byte-range size AWS's S3 performance guidelines name for
/// parallel ranged GETs (and the AWS CRT's default part size). Objects larger than a part are
/// fetched as ranged GETs of this size, in parallel. When `max_bytes` cannot give every one of a
/// request's connections a part of this size, the default part is lowered to
/// `max_bytes / max_connections_per_request` (whole slabs, at least one).
pub const DEFAULT_PART_SIZE: u64 = 8 << 20;

/// The budget settings as given to the builder.
pub(super) struct BudgetSettings {
    pub(super) max_connections: usize,
    /// `None`: as many as `max_connections`.
    pub(super) per_request: Option<usize>,
    pub(super) slab_size: usize,
    pub(super) max_bytes: u64,
    /// `None`: [`DEFAULT_PART_SIZE`], lowered to give every connection of a request a part.
    pub(super) part_size: Option<u64>,
    /// `None`: the whole budget.
    pub(super) stream_threshold: Option<u64>,
}

/// The budgets, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Budgets {
    pub(super) per_request: usize,
    pub(super) total_slabs: u32,
    pub(super) part_size: u64,
    pub(super) stream_threshold: u64,
}

impl Budgets {
    /// Checks `s` as a whole.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first setting at fault.
    pub(super) fn new(s: &BudgetSettings) -> Result<Self, ConfigError> {
        let per_request = connections(s.max_connections, s.per_request)?;
        let total_slabs = slabs(s)?;
        let budget = u64::from(total_slabs) * s.slab_size as u64;
        let slab = s.slab_size as u64;
        let part_size = match s.part_size {
            Some(n) if n == 0 || n % slab != 0 => {
                return Err(ConfigError::new(
                    "part_size",
                    format!("{n} is not a whole number of slabs of {slab} bytes"),
                ))
            }
            Some(n) if n > budget => {
                return Err(ConfigError::new(
                    "part_size",
                    format!("{n} bytes are more than max_bytes ({budget} usable)"),
                ))
            }
            Some(n) => n,
            None => {
                let share = (budget / per_request as u64) / slab * slab;
                DEFAULT_PART_SIZE.min(share.max(slab))
            }
        };
        let stream_threshold = s.stream_threshold.unwrap_or(budget);
        if stream_threshold > budget {
            return Err(ConfigError::new(
                "stream_threshold",
                format!(
                    "{stream_threshold} bytes are more than max_bytes ({budget} usable): \
                     a whole body must fit the budget"
                ),
            ));
        }
        Ok(Budgets {
            per_request,
            total_slabs,
            part_size,
            stream_threshold,
        })
    }
}

/// The per-request connections: at least one, at most `max_connections`.
fn connections(max_connections: usize, per_request: Option<usize>) -> Result<usize, ConfigError> {
    if max_connections == 0 {
        return Err(ConfigError::new(
            "max_connections",
            "must be greater than 0",
        ));
    }
    let per_request = per_request.unwrap_or(max_connections);
    if per_request == 0 {
        return Err(ConfigError::new(
            "max_connections_per_request",
            "must be greater than 0",
        ));
    }
    if per_request > max_connections {
        return Err(ConfigError::new(
            "max_connections_per_request",
            format!("{per_request} is more than max_connections ({max_connections})"),
        ));
    }
    Ok(per_request)
}

/// The slabs `max_bytes` holds: at least one per connection.
fn slabs(s: &BudgetSettings) -> Result<u32, ConfigError> {
    if !(MIN_SLAB_SIZE..=MAX_SLAB_SIZE).contains(&s.slab_size) {
        return Err(ConfigError::new(
            "slab_size",
            format!(
                "{} is outside {MIN_SLAB_SIZE}..={MAX_SLAB_SIZE} bytes",
                s.slab_size
            ),
        ));
    }
    if s.max_bytes == 0 {
        return Err(ConfigError::new("max_bytes", "must be greater than 0"));
    }
    let slabs = s.max_bytes / s.slab_size as u64;
    if slabs < s.max_connections as u64 {
        return Err(ConfigError::new(
            "max_bytes",
            format!(
                "{} bytes hold {slabs} slabs of {} bytes, fewer than max_connections ({}); \
                 need at least {}",
                s.max_bytes,
                s.slab_size,
                s.max_connections,
                s.max_connections as u64 * s.slab_size as u64
            ),
        ));
    }
    // tokio's Semaphore holds at most usize::MAX >> 3 permits and acquire_many takes a u32.
    u32::try_from(slabs)
        .ok()
        .filter(|n| (*n as usize) <= tokio::sync::Semaphore::MAX_PERMITS)
        .ok_or_else(|| {
            ConfigError::new(
                "max_bytes",
                format!("{slabs} slabs are too many; raise slab_size"),
            )
        })
}

/// Checks the adaptive limit's bounds against `max_connections`.
pub(super) fn validate_throttle(
    t: &ThrottleConfig,
    max_connections: usize,
) -> Result<(), ConfigError> {
    let max = t.max_concurrency.unwrap_or(max_connections);
    if max == 0 || max > max_connections {
        return Err(ConfigError::new(
            "throttle.max_concurrency",
            format!("{max} is outside 1..=max_connections ({max_connections})"),
        ));
    }
    if t.min_concurrency == 0 || t.min_concurrency > max {
        return Err(ConfigError::new(
            "throttle.min_concurrency",
            format!(
                "{} is outside 1..=max_concurrency ({max})",
                t.min_concurrency
            ),
        ));
    }
    for (field, value) in [
        ("throttle.recovery", t.recovery),
        ("throttle.timeout", t.timeout),
    ] {
        if value.is_zero() {
            return Err(ConfigError::new(field, "must be greater than 0"));
        }
    }
    Ok(())
}
