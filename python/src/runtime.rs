//! The module's tokio runtime: one per process, made on first use. A child made by `fork` has
//! none of its parent's threads, so it makes its own, and objects made before the fork (which
//! belong to the parent's runtime) refuse to be used in it.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

/// How long a wait goes with the GIL released before Python may run its signal handlers.
pub(crate) const SLICE: Duration = Duration::from_millis(50);

static CURRENT: Mutex<Option<Runtime>> = Mutex::new(None);

/// A handle on the runtime of the process that made it.
#[derive(Clone)]
pub(crate) struct Runtime {
    rt: Arc<tokio::runtime::Runtime>,
    pid: u32,
}

impl Runtime {
    /// This process's runtime, made now if there is none yet.
    pub(crate) fn current() -> PyResult<Runtime> {
        let pid = std::process::id();
        let mut current = CURRENT.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(rt) = current.as_ref().filter(|rt| rt.pid == pid) {
            return Ok(rt.clone());
        }
        if let Some(parent) = current.take() {
            // Made before a fork: its threads are not in this process, and dropping it would
            // wait for them forever.
            std::mem::forget(parent);
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .thread_name("s3-ordered")
            .enable_all()
            .build()
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start the runtime: {e}")))?;
        let rt = Runtime {
            rt: Arc::new(rt),
            pid,
        };
        *current = Some(rt.clone());
        Ok(rt)
    }

    /// Refuses an object made in another process (before a `fork`).
    pub(crate) fn check_process(&self) -> PyResult<()> {
        if self.pid == std::process::id() {
            return Ok(());
        }
        Err(PyRuntimeError::new_err(format!(
            "this object was made in process {} before a fork; make a new Client in this process",
            self.pid
        )))
    }

    /// Enters the runtime, for calls that spawn tasks.
    pub(crate) fn enter(&self) -> tokio::runtime::EnterGuard<'_> {
        self.rt.enter()
    }

    /// Waits for `fut` with the GIL released, letting Python handle signals every [`SLICE`]:
    /// a `KeyboardInterrupt` comes back as `Err`, and `fut` is dropped with it.
    pub(crate) fn wait<F>(&self, py: Python<'_>, fut: F) -> PyResult<F::Output>
    where
        F: Future + Send,
        F::Output: Send,
    {
        self.check_process()?;
        let mut fut = std::pin::pin!(fut);
        loop {
            if let Some(out) = self.wait_slice(py, fut.as_mut())? {
                return Ok(out);
            }
        }
    }

    /// Waits for `fut` at most one [`SLICE`] with the GIL released; `None` if it is not done
    /// then, after Python has run its signal handlers (a `KeyboardInterrupt` is `Err`).
    pub(crate) fn wait_slice<F>(&self, py: Python<'_>, fut: F) -> PyResult<Option<F::Output>>
    where
        F: Future + Send,
        F::Output: Send,
    {
        let out = py.allow_threads(|| {
            self.rt
                .block_on(async { tokio::time::timeout(SLICE, fut).await.ok() })
        });
        if out.is_none() {
            py.check_signals()?;
        }
        Ok(out)
    }
}

/// A value tied to the process that made it. In a child made by `fork` it is never dropped:
/// dropping it would touch the parent's runtime (its timers, sockets and tasks), whose threads
/// are not in the child and whose locks one of them may have held at the fork.
pub(crate) struct ForkGuard<T> {
    value: std::mem::ManuallyDrop<T>,
    pid: u32,
}

impl<T> ForkGuard<T> {
    pub(crate) fn new(value: T) -> Self {
        ForkGuard {
            value: std::mem::ManuallyDrop::new(value),
            pid: std::process::id(),
        }
    }
}

impl<T> std::ops::Deref for ForkGuard<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> std::ops::DerefMut for ForkGuard<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

impl<T> Drop for ForkGuard<T> {
    fn drop(&mut self) {
        if self.pid == std::process::id() {
            // SAFETY: dropped once, here, and never used again.
            unsafe { std::mem::ManuallyDrop::drop(&mut self.value) }
        }
    }
}
