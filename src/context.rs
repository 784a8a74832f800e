//! [`Context`]: what every request of one client shares — the validated configuration, the
//! connection pool, the memory pool, the signer, the retry budget, the concurrency limiter and
//! the counters.
//!
//! Every module below the public [`Client`](crate::Client) takes a `Context` (or an
//! `Arc<Context>` when a task outlives the call), never the `Client` itself, so data and imports
//! flow one way: client → engine / list → fetch → context's parts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::config::Config;
use crate::conn::{ConnPool, Unit};
use crate::error::Error;
use crate::hedge::Hedging;
use crate::limiter::{Limiter, Slot};
use crate::memory::MemoryPool;
use crate::retry::RetryBudget;
use crate::s3::BucketTarget;
use crate::sign::Signer;
use crate::stats::{Counters, Stats};
use crate::waitlist::Place;

/// The most buckets whose targets (and learned regions) a client keeps.
const MAX_TARGETS: usize = 1024;

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
    pub(crate) hedging: Hedging,
    /// Where each bucket's requests go ([`Context::target`]).
    targets: Mutex<HashMap<String, Arc<BucketTarget>>>,
    /// When the client was built: a ready-made instant for timers whose deadline is set later.
    pub(crate) epoch: tokio::time::Instant,
}

impl Context {
    /// Builds the pools, signer and budget for a validated `config`.
    pub(crate) fn new(config: Config) -> Arc<Self> {
        Arc::new(Context {
            memory: MemoryPool::new(config.slab_size, config.total_slabs),
            conns: ConnPool::new(
                config.max_connections,
                config.connect_timeout,
                &config.tls,
                Arc::clone(&config.proxies),
                config.transport,
            ),
            signer: Signer::new(&config.credentials),
            counters: Counters::default(),
            budget: RetryBudget::new(&config.retry),
            limiter: Limiter::new(&config.throttle, config.max_connections),
            hedging: Hedging::new(config.hedge.clone()),
            targets: Mutex::new(HashMap::new()),
            epoch: tokio::time::Instant::now(),
            config,
        })
    }

    /// Where requests for `bucket` go: one target per bucket, shared by all the client's
    /// requests, so that a region one reply teaches holds for every request made after it.
    ///
    /// # Errors
    ///
    /// As [`BucketTarget::new_in`].
    pub(crate) fn target(&self, bucket: &str) -> Result<Arc<BucketTarget>, Error> {
        let mut targets = self.targets.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = targets.get(bucket) {
            return Ok(Arc::clone(t));
        }
        let target = Arc::new(BucketTarget::new_in(
            &self.config,
            bucket,
            Arc::clone(&self.config.region),
        )?);
        // A client that names ever new buckets keeps only the first ones' regions.
        if targets.len() < MAX_TARGETS {
            targets.insert(bucket.to_owned(), Arc::clone(&target));
        }
        Ok(target)
    }

    /// Learns that `target`'s bucket is in `region`: requests made from now on go there.
    ///
    /// # Errors
    ///
    /// As [`BucketTarget::reroute`].
    pub(crate) fn learn_region(&self, target: &BucketTarget, region: &str) -> Result<(), Error> {
        if target.reroute(&self.config, region)? {
            tracing::info!(
                bucket = target.bucket(),
                region,
                "the bucket is in another region: requests now go there"
            );
            Counters::add(&self.counters.region_redirects, 1);
        }
        Ok(())
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
            connection_limit: self.conns.limit(),
            connections_opened: self.conns.opened(),
            open_connections: self.conns.open(),
            busy_connections: self.conns.in_use(),
            slabs_in_use,
            bytes_in_use: slabs_in_use as u64 * slab,
            streaming_bytes_in_use: self.memory.streaming_slabs() as u64 * slab,
            delivered_bytes_in_use: self.memory.held_by_consumer() as u64 * slab,
            slabs_allocated: self.memory.slabs_allocated(),
            concurrency_limit: self.limiter.limit(),
            requests_in_flight: self.limiter.in_flight(),
            ..self.counters.snapshot()
        }
    }
}
