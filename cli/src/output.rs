//! What the commands share about output: the progress bar, failure lines with their cause
//! chain, the closing summary, broken-pipe detection and the process's CPU and RSS.

use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use s3_ordered::{Client, Stats};

/// Counts objects and bytes, draws the progress bar, prints failures and the summary.
pub(crate) struct Tally {
    pub(crate) ok: u64,
    pub(crate) failed: u64,
    pub(crate) bytes: u64,
    /// Objects passed over without a request (`get --skip-existing`), counted as the input
    /// is read.
    pub(crate) skipped: Arc<AtomicU64>,
    /// The last object done, in order: its item number in the input (0 for the first item
    /// after `--skip`) and its key.
    last: Option<(u64, String)>,
    /// How a run stopped early resumes: from a listing (`--start-after`) or not (`--skip`).
    resume: Resume,
    started: Instant,
    bar: ProgressBar,
    quiet: bool,
    /// The client whose retries and throttling the bar and the summary show.
    client: Client,
}

impl Tally {
    /// A tally; the bar is drawn only when stderr is a terminal and `quiet` is off.
    /// `total` (objects) enables a bar with an ETA; without it a spinner counts.
    pub(crate) fn new(total: Option<u64>, quiet: bool, client: Client, resume: Resume) -> Self {
        let show = !quiet && std::io::stderr().is_terminal();
        let bar = match total {
            Some(n) => ProgressBar::new(n).with_style(
                ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} objects, {msg} [{elapsed_precise}, ETA {eta}]",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{spinner} {pos} objects, {msg} [{elapsed_precise}]")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        bar.set_draw_target(if show {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        if show {
            bar.enable_steady_tick(Duration::from_millis(200));
            crate::log::set_bar(Some(bar.clone()));
        }
        Tally {
            ok: 0,
            failed: 0,
            bytes: 0,
            skipped: Arc::default(),
            last: None,
            resume,
            started: Instant::now(),
            bar,
            quiet,
            client,
        }
    }

    /// Records one object done.
    pub(crate) fn ok(&mut self, bytes: u64) {
        self.ok += 1;
        self.bytes += bytes;
        self.bar.inc(1);
        if self.ok % 64 == 1 {
            let secs = self.started.elapsed().as_secs_f64().max(1e-9);
            self.bar.set_message(format!(
                "{}, {}/s{}",
                human_bytes(self.bytes),
                human_bytes((self.bytes as f64 / secs) as u64),
                trouble(&self.client.stats(), false)
            ));
        }
    }

    /// Records one failed object and prints `message` (its reason and causes) on stderr.
    pub(crate) fn failed(&mut self, message: &str) {
        self.failed += 1;
        self.bar.inc(1);
        self.say(message);
    }

    /// Prints `message` on stderr, around the bar.
    pub(crate) fn say(&self, message: &str) {
        self.bar.suspend(|| eprintln!("s3-ordered: {message}"));
    }

    /// Records that the object at item `index` of the input (`key`) is done, ok or not: every
    /// item before it is done too.
    pub(crate) fn done_through(&mut self, index: u64, key: &str) {
        match &mut self.last {
            Some((i, k)) => {
                *i = index;
                k.clear();
                k.push_str(key);
            }
            None => self.last = Some((index, key.to_owned())),
        }
    }

    /// Records the failed object at item `index` of the input, and prints why.
    pub(crate) fn failed_at(&mut self, index: u64, e: &s3_ordered::Error) {
        self.failed(&e.with_causes());
        if let Some(key) = e.key() {
            self.done_through(index, key);
        }
    }

    /// Forgets the last object done: its bytes may not have reached the output.
    pub(crate) fn forget_position(&mut self) {
        self.last = None;
    }

    /// Removes the bar from the terminal (before printing a report).
    pub(crate) fn clear(&self) {
        crate::log::set_bar(None);
        self.bar.finish_and_clear();
    }

    /// Stops without a summary (the reader went away).
    pub(crate) fn abandon(self) {
        self.clear();
    }

    /// True when a bar would be drawn.
    pub(crate) fn visible(quiet: bool) -> bool {
        !quiet && std::io::stderr().is_terminal()
    }

    /// Seconds since the tally started.
    pub(crate) fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Clears the bar and prints the one-line summary (unless quiet); returns the exit status.
    pub(crate) fn finish(self) -> std::process::ExitCode {
        self.summary();
        if self.failed > 0 {
            std::process::ExitCode::from(1)
        } else {
            std::process::ExitCode::SUCCESS
        }
    }

    fn summary(&self) {
        self.clear();
        if !self.quiet {
            let secs = self.elapsed().max(1e-9);
            let stats = self.client.stats();
            let skipped = match self.skipped.load(Ordering::Relaxed) {
                0 => String::new(),
                n => format!(", {n} skipped (already there)"),
            };
            eprintln!(
                "{} objects ok, {} failed{skipped}, {} in {secs:.2} s ({}/s){}{}",
                self.ok,
                self.failed,
                human_bytes(self.bytes),
                human_bytes((self.bytes as f64 / secs) as u64),
                trouble(&stats, true),
                checksums(&stats)
            );
        }
        let (limit, max) = (
            self.client.stats().connection_limit,
            self.client.max_connections(),
        );
        if limit < max {
            let soft = crate::fdlimit::get().map_or_else(String::new, |(soft, hard)| {
                format!(" (now {soft}, at most {hard} without privileges)")
            });
            eprintln!(
                "s3-ordered: out of file descriptors: connections capped at {limit} of \
                 --max-connections {max}; raise the limit with ulimit -n{soft} to use more"
            );
        }
    }

    /// After a stop by `signal`: the summary, then the last object done and the flag that
    /// goes on after it (always printed); returns the exit status, 128 + the signal's number.
    pub(crate) fn stopped(self, signal: crate::stop::Stop) -> std::process::ExitCode {
        self.summary();
        let resume = match &self.last {
            None if self.resume.skip == 0 && self.resume.after.is_none() => {
                "no object was done; run it again as it was".to_owned()
            }
            None => {
                "no object was done; run it again with the same --skip or --start-after".to_owned()
            }
            Some((index, key)) => {
                let how = if self.resume.listing {
                    format!("--start-after {}", shell_quote(key))
                } else {
                    format!("--skip {}", self.resume.skip + index + 1)
                };
                let item = self.resume.skip + index;
                format!(
                    "the last object done in order was {key:?} (item {item} of the input, \
                     counting from 0); to go on after it: {how}"
                )
            }
        };
        eprintln!("s3-ordered: stopped by {}; {resume}", signal.name());
        std::process::ExitCode::from(signal.exit_status())
    }
}

/// Where the input of a command started, to say how a stopped run goes on.
#[derive(Debug, Clone, Default)]
pub(crate) struct Resume {
    /// The input is a listing (resumed with `--start-after`), not a keys file.
    pub(crate) listing: bool,
    /// The `--skip` this run was given.
    pub(crate) skip: u64,
    /// The `--start-after` this run was given.
    pub(crate) after: Option<String>,
}

/// `key` as one shell word: bare when it is plain, else in single quotes.
pub(crate) fn shell_quote(key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:@,%".contains(&b));
    if plain {
        key.to_owned()
    } else {
        format!("'{}'", key.replace('\'', "'\\''"))
    }
}

/// `; 3 retries, 40 throttled (limit 6 of 64)`: the retries and throttled replies so far, and
/// the concurrency limit if throttling lowered it. Empty when there were none, unless `always`.
pub(crate) fn trouble(stats: &Stats, always: bool) -> String {
    if stats.retries == 0 && stats.throttled == 0 && !always {
        return String::new();
    }
    let mut out = format!("; {} retries, {} throttled", stats.retries, stats.throttled);
    if stats.throttled > 0 {
        out.push_str(&format!(" (concurrency limit {})", stats.concurrency_limit));
    }
    out
}

/// `; checksums: 12 verified, 3 unavailable, 1 mismatch`: empty with checksums off.
pub(crate) fn checksums(stats: &Stats) -> String {
    let (verified, unavailable) = (stats.checksums_verified, stats.checksums_unavailable);
    let mismatches = stats.checksum_mismatches;
    if verified + unavailable + mismatches == 0 {
        return String::new();
    }
    let mut out = format!("; checksums: {verified} verified, {unavailable} unavailable");
    if mismatches > 0 {
        let s = if mismatches == 1 { "" } else { "es" };
        out.push_str(&format!(", {mismatches} mismatch{s}"));
    }
    out
}

/// True for the error a write to a closed pipe gives (`| head`).
pub(crate) fn is_broken_pipe(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::BrokenPipe
}

/// `12.3 MiB`-style sizes.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// User + system CPU seconds and peak resident set size in bytes of this process.
///
/// The peak is `VmHWM` of this program's own address space where `/proc` has it: `ru_maxrss`
/// survives `execve`, so it reports the parent's size at `fork` when that was larger.
pub(crate) fn cpu_and_peak_rss() -> (f64, u64) {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the whole `rusage` behind the pointer, which points to zeroed
    // storage of that type; it is read only after getrusage reports success.
    let ru = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) != 0 {
            return (0.0, 0);
        }
        ru.assume_init()
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    // Both are in KiB.
    let peak_kib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(ru.ru_maxrss as u64);
    (
        secs(ru.ru_utime) + secs(ru.ru_stime),
        peak_kib.saturating_mul(1024),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
    }

    #[test]
    fn trouble_shows_retries_throttling_and_the_limit() {
        let mut calm = Stats::default();
        calm.concurrency_limit = 64;
        assert_eq!(trouble(&calm, false), "");
        assert_eq!(trouble(&calm, true), "; 0 retries, 0 throttled");
        let mut rough = calm;
        (rough.retries, rough.throttled, rough.concurrency_limit) = (3, 40, 6);
        assert_eq!(
            trouble(&rough, false),
            "; 3 retries, 40 throttled (concurrency limit 6)"
        );
    }
}
