//! The worker tasks of one request, at most `max_connections_per_request` of them, started as
//! they are needed and all aborted with the request's stream: no worker outlives it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::task::JoinSet;
use tracing::Instrument;

use super::admission::Admission;

/// The worker tasks of one request, at most `max_connections_per_request` of them. Each takes
/// the admission lock, admits the next part in order (memory, then a slot and a connection
/// unit), lets go of the lock and fetches the part — then comes back for another. The task that
/// finishes a fetch is the one that admits the next, so a part costs no task of its own and no
/// hand-over to a driver.
pub(super) struct Workers {
    admission: tokio::sync::Mutex<Admission>,
    /// Workers waiting for the admission lock or holding it.
    admitting: AtomicUsize,
    /// Workers started.
    started: AtomicUsize,
    max: usize,
    span: tracing::Span,
    /// Every worker, so that dropping the stream cancels them all; `None` once it has. A worker
    /// mid-poll when the stream is dropped may still try to start another: under this lock it
    /// finds `None` and starts none, so no worker outlives the stream.
    tasks: Mutex<Option<JoinSet<()>>>,
}

impl Workers {
    /// Starts the first worker of a request admitted by `admission`.
    pub(super) fn start(admission: Admission, span: tracing::Span) -> Arc<Self> {
        let workers = Arc::new(Workers {
            max: admission.per_request(),
            admission: tokio::sync::Mutex::new(admission),
            admitting: AtomicUsize::new(0),
            started: AtomicUsize::new(0),
            span,
            tasks: Mutex::new(Some(JoinSet::new())),
        });
        workers.spawn();
        workers
    }

    /// Starts one more worker, unless there are as many as allowed or the stream was dropped.
    fn spawn(self: &Arc<Self>) {
        if self.started.fetch_add(1, Ordering::Relaxed) >= self.max {
            self.started.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        // Counted as admitting from now, so that two workers do not both start a third.
        self.admitting.fetch_add(1, Ordering::AcqRel);
        let me = Arc::clone(self);
        let span = self.span.clone();
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tasks) = tasks.as_mut() {
            tasks.spawn(Box::pin(me.run().instrument(span)));
        }
    }

    /// One worker: admit a part, fetch it, again, until every object is admitted.
    async fn run(self: Arc<Self>) {
        loop {
            let job = {
                let mut admission = self.admission.lock().await;
                let job = admission.next_job().await;
                self.admitting.fetch_sub(1, Ordering::AcqRel);
                job
            };
            let Some(job) = job else { return };
            // Nobody else is admitting: start a worker to admit the next part meanwhile.
            if self.admitting.load(Ordering::Acquire) == 0 {
                self.spawn();
            }
            job.run().await;
            self.admitting.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Cancels every worker, and any start of one from now on.
    pub(super) fn abort(&self) {
        let tasks = self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        // Dropped outside the lock; dropping a `JoinSet` aborts its tasks.
        drop(tasks);
    }
}
