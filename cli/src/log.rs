//! Diagnostics on stderr through `tracing-subscriber`: `RUST_LOG` when set, else `-v` levels.
//! Lines are written around the progress bar (which is hidden while one prints), never
//! through stdout, which carries `cat`'s data.

use std::io::{IsTerminal as _, Write as _};
use std::sync::Mutex;

use indicatif::ProgressBar;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// The progress bar being drawn, if any, so that log lines do not tear it.
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Registers the bar log lines must step around (`None` when it is gone).
pub(crate) fn set_bar(bar: Option<ProgressBar>) {
    *BAR.lock().unwrap_or_else(|e| e.into_inner()) = bar;
}

/// The filter for `verbose` (the count of `-v`) when `RUST_LOG` is not set: this program's
/// warnings only, then its info, debug and trace. Other crates say nothing by default (what
/// matters of theirs reaches the closing error, or this program's own warnings), then their
/// warnings from `-v` on, but for the credential chain (`aws_config`): its errors only, then its
/// info and debug (which source it tried, and why each gave nothing) from `-vv` on.
pub(crate) fn default_filter(verbose: u8) -> &'static str {
    match verbose {
        0 => "off,s3_ordered=warn",
        1 => "warn,aws_config=error,s3_ordered=info",
        2 => "warn,aws_config=info,s3_ordered=debug",
        _ => "warn,aws_config=debug,s3_ordered=trace",
    }
}

/// Installs the subscriber. A `RUST_LOG` that does not parse is reported and replaced by the
/// `-v` default.
pub(crate) fn init(verbose: u8, rust_log: Option<&str>) {
    let filter = match rust_log.filter(|v| !v.is_empty()) {
        Some(spec) => EnvFilter::try_new(spec).unwrap_or_else(|e| {
            eprintln!("s3-ordered: ignoring RUST_LOG={spec:?}: {e}");
            EnvFilter::new(default_filter(verbose))
        }),
        None => EnvFilter::new(default_filter(verbose)),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(AroundBar)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Makes a [`LineWriter`] per event.
struct AroundBar;

impl<'a> MakeWriter<'a> for AroundBar {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter(Vec::with_capacity(256))
    }
}

/// Collects one event's text and writes it to stderr when dropped, with the bar hidden.
struct LineWriter(Vec<u8>);

impl std::io::Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        let write = || {
            // Nothing sensible to do if stderr itself fails.
            let _ = std::io::stderr().lock().write_all(&self.0);
        };
        let bar = BAR.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match bar {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_level_s_filter_parses() {
        // What each level shows is checked end to end (tests/aws.rs: other crates' lines).
        for v in 0..=7 {
            let filter = default_filter(v);
            assert!(EnvFilter::try_new(filter).is_ok(), "-v x{v}: {filter}");
        }
    }
}
