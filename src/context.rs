//! [`Context`]: what every request of one client shares — the validated configuration, the
//! connection pool, the memory pool, the signer, the retry budget, the concurrency limiter and
//! the counters.
//!
//! Every module below the public [`Client`](crate::Client) takes a `Context` (or an
//! `Arc<Context>` when a task outlives the call), never the `Client` itself, so data and imports
//! flow one way: client → engine / list → fetch → context's parts.

use std::sync::Arc;

use crate::config::Config;
use crate::conn::{ConnPool, Unit};
use crate::limiter::{Limiter, Slot};
use crate::memory::MemoryPool;
use crate::retry::RetryBudget;
use crate::sign::Signer;
use crate::stats::{Counters, Stats};
use crate::waitlist::Place;

/// The state shared by every request of one client.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) config: Config,
    pub(crate) memory: MemoryPool,
    pub(crate) conns: ConnPool,
    pub(crate) signer: Signer,
    pub(crate) counters: Counters,
    pub(crate) budget: RetryBudget,
    pub(crate) limiter: Limiter,
    /// When the client was built: a ready-made instant for timers whose deadline is set later.
    pub(crate) epoch: tokio::time::Instant,
}

impl Context {
    /// Builds the pools, signer and budget for a validated `config`.
    pub(crate) fn new(config: Config) -> Arc<Self> {
        Arc::new(Context {
            memory: MemoryPool::new(config.slab_size, config.total_slabs),
            conns: ConnPool::new(config.max_connections, config.connect_timeout, &config.tls),
            signer: Signer::new(Arc::clone(&config.region), &config.credentials),
            counters: Counters::default(),
            budget: RetryBudget::new(&config.retry),
            limiter: Limiter::new(&config.throttle, config.max_connections),
            epoch: tokio::time::Instant::now(),
            config,
        })
    }

    /// What one attempt needs: a slot under the adaptive limit, then a connection unit.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a slot taken before the future is dropped is given back.
    pub(crate) async fn ticket(&self, place: Place) -> (Slot, Unit) {
        let slot = self.limiter.acquire(place).await;
        let unit = self.conns.unit().await;
        (slot, unit)
    }

    /// A snapshot of the counters and of what the client holds now.
    pub(crate) fn stats(&self) -> Stats {
        let slabs_in_use = self.memory.slabs_in_use();
        let slab = self.memory.slab_size() as u64;
        Stats {
            connections_opened: self.conns.opened(),
            open_connections: self.conns.open(),
            busy_connections: self.conns.in_use(),
            slabs_in_use,
            bytes_in_use: slabs_in_use as u64 * slab,
            streaming_bytes_in_use: self.memory.streaming_slabs() as u64 * slab,
            slabs_allocated: self.memory.slabs_allocated(),
            concurrency_limit: self.limiter.limit(),
            requests_in_flight: self.limiter.in_flight(),
            ..self.counters.snapshot()
        }
    }
}
