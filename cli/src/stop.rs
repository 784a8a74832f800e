//! Stopping early on SIGINT or SIGTERM: the command's work is dropped — its fetches cancelled,
//! its in-flight temporary file removed by the caller — and it exits 130 or 143 after its
//! summary, naming where a rerun goes on.

use std::future::Future;

use anyhow::Context as _;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// The signal that stopped a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    Interrupt,
    Terminate,
}

impl Stop {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Stop::Interrupt => "SIGINT",
            Stop::Terminate => "SIGTERM",
        }
    }

    /// 128 + the signal's number, as a shell reports a process the signal ended.
    pub(crate) fn exit_status(self) -> u8 {
        match self {
            Stop::Interrupt => 128 + 2,
            Stop::Terminate => 128 + 15,
        }
    }
}

/// SIGINT and SIGTERM, caught from now on (no longer ending the process at once).
pub(crate) struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    pub(crate) fn catch() -> anyhow::Result<Self> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt()).context("catching SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("catching SIGTERM")?,
        })
    }

    /// `work`'s output, or the signal that came first (then `work` is dropped).
    pub(crate) async fn until<F: Future>(&mut self, work: F) -> Result<F::Output, Stop> {
        tokio::select! {
            out = work => Ok(out),
            _ = self.interrupt.recv() => Err(Stop::Interrupt),
            _ = self.terminate.recv() => Err(Stop::Terminate),
        }
    }
}
