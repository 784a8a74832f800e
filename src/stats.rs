//! Client-wide counters: cheap relaxed atomics updated on the hot path, read as a [`Stats`]
//! snapshot by [`Client::stats`](crate::Client::stats).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Monotonic counters shared by every request of a client.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) objects: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) throttled: AtomicU64,
    pub(crate) parts: AtomicU64,
    pub(crate) region_redirects: AtomicU64,
    pub(crate) stale_connections: AtomicU64,
    pub(crate) checksums_verified: AtomicU64,
    pub(crate) checksums_unavailable: AtomicU64,
    pub(crate) checksum_mismatches: AtomicU64,
    pub(crate) checksum_heads: AtomicU64,
    pub(crate) hedges_sent: AtomicU64,
    pub(crate) hedges_won: AtomicU64,
    pub(crate) slow_bodies_resumed: AtomicU64,
    pub(crate) sessions_created: AtomicU64,
    /// Parts waiting for memory now (a gauge).
    pub(crate) memory_waits: AtomicUsize,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// A snapshot of a client's activity since it was built, and of what it holds now.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Objects fetched successfully.
    pub objects: u64,
    /// Body bytes received (counted as each part completes).
    pub bytes: u64,
    /// GETs completed: one per object fetched in one GET, one per part of an object fetched
    /// as ranged parts.
    pub parts: u64,
    /// HTTP requests sent.
    pub requests: u64,
    /// Objects that ended in an error.
    pub errors: u64,
    /// Attempts made again after a transient failure (GETs, listings and HEADs); throttled
    /// attempts are counted in `throttled` instead.
    pub retries: u64,
    /// Replies in which the server throttled a request (503 `SlowDown`, 429, …); each one's
    /// request was made again under the adaptive concurrency limit.
    pub throttled: u64,
    /// Buckets found in another region than the request was signed for (a 301, 307 or 400
    /// naming the region), counted once per bucket and region learned.
    pub region_redirects: u64,
    /// Requests sent again at once on a new connection because the reused idle connection
    /// they were sent on had been closed by the server before any byte of a reply (its
    /// keep-alive timeout); such a request spends no attempt and no retry budget.
    pub stale_connections: u64,
    /// Objects whose bytes were verified against their full-object checksum, or through their
    /// upload's parts (a streaming body is counted once its last part is in and checked).
    pub checksums_verified: u64,
    /// Objects delivered unverified with checksums on: the server had no checksum for them, or
    /// only a composite one without its parts' checksums.
    pub checksums_unavailable: u64,
    /// Replies (or whole objects fetched in parts) whose bytes did not match the checksum; a
    /// one-GET object is sent again once, so this counts corruption seen, not objects failed.
    pub checksum_mismatches: u64,
    /// HEADs sent to learn checksums: one per object fetched in ranged parts (S3 sends no
    /// checksum with a partial range), and one per upload part of an object whose checksum is
    /// composite.
    pub checksum_heads: u64,
    /// GETs sent again, on another connection, because their response head was late
    /// ([`HedgeConfig`](crate::HedgeConfig)); each is also counted in `requests`. Counted when
    /// written: a hedge whose first reply came while its connection was opening is not.
    pub hedges_sent: u64,
    /// Hedges whose response head came first; the other exchange was closed.
    pub hedges_won: u64,
    /// Bodies slower than the floor ([`MinBodyRate`](crate::MinBodyRate)), abandoned and
    /// resumed from their first missing byte on a new connection.
    pub slow_bodies_resumed: u64,
    /// S3 Express sessions created (`CreateSession` replies taken) for directory buckets:
    /// one per bucket, then about one per bucket every 4 minutes while it is used, and one
    /// more for each session the server refused before it expired.
    pub sessions_created: u64,
    /// The adaptive limit on requests in flight now: `max_connections` (or the configured
    /// ceiling) until the server throttles, lower after.
    pub concurrency_limit: usize,
    /// Slots under that limit held now: requests in flight, and throttled requests waiting out
    /// a backoff at the floor. Above `concurrency_limit` only just after a cut, until those sent
    /// before it end; 0 once the client is idle.
    pub requests_in_flight: usize,
    /// The most connections the client opens now: `max_connections`, or fewer once the process
    /// ran out of file descriptors (or the machine of ephemeral ports) and the pool lowered its
    /// limit to the connections it had open (a WARN event says so, once).
    pub connection_limit: usize,
    /// Connections dialed so far.
    pub connections_opened: u64,
    /// Sockets open (or being opened) now; never more than `max_connections`.
    pub open_connections: usize,
    /// Connections in use by a transfer now.
    pub busy_connections: usize,
    /// Slabs leased now: to downloads in flight and to bodies not yet dropped.
    pub slabs_in_use: usize,
    /// Body memory leased now, in bytes (`slabs_in_use × slab_size`).
    pub bytes_in_use: u64,
    /// The part of `bytes_in_use` held by streaming bodies: parts received and not yet read
    /// (or read as chunks not yet dropped).
    pub streaming_bytes_in_use: u64,
    /// The part of `bytes_in_use` the consumer holds: whole bodies handed out and not yet
    /// dropped, and the parts streaming bodies received (`streaming_bytes_in_use`). When it is
    /// most of the budget and nothing is in flight, the next object waits for the consumer to
    /// drop some (the consumer rule; a WARN event says so after a few seconds).
    pub delivered_bytes_in_use: u64,
    /// Parts (of objects next in line) waiting for memory now.
    pub parts_waiting_for_memory: usize,
    /// Slab buffers allocated so far; they are reused, never more than the budget holds.
    pub slabs_allocated: usize,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            objects: self.objects.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
            parts: self.parts.load(Ordering::Relaxed),
            region_redirects: self.region_redirects.load(Ordering::Relaxed),
            stale_connections: self.stale_connections.load(Ordering::Relaxed),
            checksums_verified: self.checksums_verified.load(Ordering::Relaxed),
            checksums_unavailable: self.checksums_unavailable.load(Ordering::Relaxed),
            checksum_mismatches: self.checksum_mismatches.load(Ordering::Relaxed),
            checksum_heads: self.checksum_heads.load(Ordering::Relaxed),
            hedges_sent: self.hedges_sent.load(Ordering::Relaxed),
            hedges_won: self.hedges_won.load(Ordering::Relaxed),
            slow_bodies_resumed: self.slow_bodies_resumed.load(Ordering::Relaxed),
            sessions_created: self.sessions_created.load(Ordering::Relaxed),
            parts_waiting_for_memory: self.memory_waits.load(Ordering::Relaxed),
            ..Stats::default()
        }
    }
}
