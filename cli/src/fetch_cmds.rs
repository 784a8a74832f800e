//! `cat`, `get` and `bench`: fetch the objects of a listing or a keys file in order, and write
//! them to stdout, to files, or nowhere.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context as _;
use futures::{FutureExt as _, StreamExt as _};
use s3_ordered::{Body, Client, Object, ObjectRef};
use tokio::io::AsyncWriteExt as _;

use crate::opts::ConnectOpts;
use crate::output::{cpu_and_peak_rss, is_broken_pipe, Resume, Tally};
use crate::source::{self, Inputs, S3Url, Start};
use crate::stop::Signals;

/// What `cat`, `get` and `bench` take.
#[derive(clap::Args, Debug)]
pub(crate) struct FetchArgs {
    /// s3://BUCKET[/PREFIX]: the objects under PREFIX, in listing order. A PREFIX with *, ? or
    /// [...] is a glob that whole keys must match (* and ** match across /; quote it)
    #[arg(value_name = "S3_URL", value_parser = source::parse_s3_url)]
    url: S3Url,
    /// Take the S3 path literally, as a plain prefix: *, ? and [ are not wildcards (for keys
    /// that hold them)
    #[arg(long)]
    raw: bool,
    /// Fetch the keys listed in FILE instead (one per line: KEY, KEY<TAB>SIZE or
    /// KEY<TAB>SIZE<TAB>VERSION_ID; a missing size is learned from the first GET); `-` reads stdin
    #[arg(long, value_name = "FILE")]
    pub(crate) keys_from: Option<String>,
    /// List from the first key after KEY: how a run of a listing stopped early goes on (it
    /// prints the flag)
    #[arg(long, value_name = "KEY")]
    pub(crate) start_after: Option<String>,
    /// Pass over the first N objects of the input (keys-file lines or listed keys): how a run
    /// of a keys file stopped early goes on (it prints the flag)
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub(crate) skip: u64,
    /// No progress bar and no summary line
    #[arg(long, short)]
    pub(crate) quiet: bool,
    #[command(flatten)]
    pub(crate) conn: ConnectOpts,
}

/// Which inputs are passed over without a request: false for those.
type Keep = Box<dyn FnMut(&ObjectRef) -> bool + Send>;

/// A started fetch.
struct Run {
    client: Client,
    results: s3_ordered::ObjectStream,
    tally: Tally,
    order: Order,
}

impl FetchArgs {
    /// The URL to fetch from: its path a glob if it holds a wildcard, unless `--raw`.
    pub(crate) fn url(&self) -> anyhow::Result<S3Url> {
        self.url.resolved(self.raw).map_err(anyhow::Error::msg)
    }

    /// Starts fetching the input, less the items `keep` refuses.
    async fn start(&self, keep: Option<Keep>) -> anyhow::Result<Run> {
        let start = Start {
            after: self.start_after.clone(),
            skip: self.skip,
        };
        let url = self.url()?;
        source::check(&url, self.keys_from.as_deref(), &start)?;
        let client = self.conn.client().await?;
        let total = match self.keys_from.as_deref() {
            Some(path) if path != "-" && Tally::visible(self.quiet) => {
                count_lines(path).ok().map(|n| n.saturating_sub(self.skip))
            }
            _ => None,
        };
        let inputs = source::inputs(&client, &url, self.keys_from.as_deref(), &start).await?;
        let resume = Resume {
            // A directory bucket lists in its own order, with no start-after: resumed by skipping.
            listing: self.keys_from.is_none() && !s3_ordered::is_directory_bucket(&url.bucket),
            skip: self.skip,
            after: self.start_after.clone(),
        };
        let tally = Tally::new(total, self.quiet, client.clone(), resume);
        let (inputs, order) = match keep {
            None => (inputs, Order::default()),
            Some(keep) => filtered(inputs, keep, Arc::clone(&tally.skipped)),
        };
        let results = client.get_stream(url.bucket, inputs);
        Ok(Run {
            client,
            results,
            tally,
            order,
        })
    }
}

/// The item number in the input of each result, in order, when items were passed over.
#[derive(Default)]
struct Order(Option<Arc<Mutex<VecDeque<u64>>>>);

impl Order {
    /// The item number of the next result, whose position among the results is `seq`.
    fn next(&self, seq: u64) -> u64 {
        match &self.0 {
            None => seq,
            Some(queue) => queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop_front()
                .unwrap_or(seq),
        }
    }
}

/// `inputs` less the objects `keep` refuses (counted in `skipped`); bad items pass, to fail
/// at their position.
fn filtered(
    inputs: Inputs,
    mut keep: Keep,
    skipped: Arc<std::sync::atomic::AtomicU64>,
) -> (Inputs, Order) {
    let queue = Arc::new(Mutex::new(VecDeque::new()));
    let numbers = Arc::clone(&queue);
    let items = inputs.enumerate().filter_map(move |(i, item)| {
        let pass = item.as_ref().map_or(true, &mut keep);
        if pass {
            numbers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push_back(i as u64);
        } else {
            skipped.fetch_add(1, Ordering::Relaxed);
        }
        futures::future::ready(pass.then_some(item))
    });
    (Box::pin(items), Order(Some(queue)))
}

/// The position among the results of `result`.
fn seq_of(result: &Result<Object, s3_ordered::Error>) -> u64 {
    match result {
        Ok(obj) => obj.seq,
        Err(e) => e.seq().unwrap_or_default(),
    }
}

fn count_lines(path: &str) -> std::io::Result<u64> {
    let text = std::fs::read(path)?;
    Ok(text
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty() && *l != b"\r")
        .count() as u64)
}

/// What `cat` takes.
#[derive(clap::Args, Debug)]
pub(crate) struct CatArgs {
    #[command(flatten)]
    pub(crate) fetch: FetchArgs,
    /// How the bodies are framed: raw (concatenated as they are), tar (a POSIX tar stream, one
    /// member per object in order: name the key, size, mtime from Last-Modified), or jsonl (a
    /// line {"key": KEY, "body": TEXT} per object, for small UTF-8 text objects)
    #[arg(long, value_name = "FORMAT", default_value = "raw", value_parser = ["raw", "tar", "jsonl"])]
    pub(crate) format: String,
}

/// How `cat` frames each body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Raw,
    Tar,
    Jsonl,
}

/// `cat`: the bodies, concatenated or as tar members, in order, to stdout.
pub(crate) async fn cat(args: CatArgs) -> anyhow::Result<ExitCode> {
    let mut signals = Signals::catch()?;
    let framing = match args.format.as_str() {
        "tar" => Framing::Tar,
        "jsonl" => Framing::Jsonl,
        _ => Framing::Raw,
    };
    let mut run = args.fetch.start(None).await?;
    let mut out = tokio::io::BufWriter::with_capacity(1 << 20, tokio::io::stdout());
    match signals.until(cat_all(&mut run, &mut out, framing)).await {
        Ok(Ok(())) => Ok(run.tally.finish()),
        Ok(Err(e)) => closed_or_failed(e, run.tally),
        Err(stop) => {
            // What was written of the objects done goes out; a reader that does not take it
            // leaves the position unknown.
            let flushed = tokio::time::timeout(std::time::Duration::from_secs(2), out.flush());
            if !matches!(flushed.await, Ok(Ok(()))) {
                run.tally.forget_position();
            }
            Ok(run.tally.stopped(stop))
        }
    }
}

/// Writes every result's body in order, framed. An object that failed is left out (reported);
/// in a tar stream, a body that fails after its header was written ends the stream there,
/// without the end-of-archive blocks, so no reader takes the cut member as whole.
async fn cat_all(
    run: &mut Run,
    out: &mut tokio::io::BufWriter<tokio::io::Stdout>,
    framing: Framing,
) -> std::io::Result<()> {
    let tar = framing == Framing::Tar;
    loop {
        // Flush whenever the next object is not ready yet, so output streams.
        let next = match run.results.next().now_or_never() {
            Some(next) => next,
            None => {
                out.flush().await?;
                run.results.next().await
            }
        };
        let Some(result) = next else { break };
        let index = run.order.next(seq_of(&result));
        let tally = &mut run.tally;
        let mut obj = match result {
            Ok(obj) => obj,
            Err(e) => {
                tally.failed_at(index, &e);
                continue;
            }
        };
        let size = obj.body.size();
        if framing == Framing::Jsonl {
            match json_line(&obj) {
                Ok(line) => {
                    out.write_all(&line).await?;
                    tally.ok(size);
                }
                Err(why) => tally.failed(&format!("object {:?}: {why}", obj.key)),
            }
            tally.done_through(index, &obj.key);
            continue;
        }
        if tar {
            let mtime = obj
                .last_modified
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            out.write_all(&crate::tar::member_header(&obj.key, size, mtime))
                .await?;
        }
        if obj.body.is_streaming() {
            // Part by part, as the parts arrive; each chunk's memory returns once written.
            let mut written = 0u64;
            while let Some(chunk) = obj.body.next_chunk().await {
                match chunk {
                    Ok(chunk) => {
                        out.write_all(&chunk).await?;
                        written += chunk.len() as u64;
                    }
                    Err(e) => {
                        tally.failed(&format!(
                            "{} (after {written} bytes were written)",
                            e.with_causes()
                        ));
                        if tar {
                            tally.done_through(index, &obj.key);
                            tally.say(&format!(
                                "the tar stream ends at {:?}, cut short; the objects after it \
                                 were not written",
                                obj.key
                            ));
                            return out.flush().await;
                        }
                        break;
                    }
                }
            }
            if written == size {
                tally.ok(written);
            }
        } else {
            for chunk in obj.body.chunks() {
                out.write_all(chunk).await?;
            }
            tally.ok(size);
        }
        if tar {
            out.write_all(&crate::tar::END[..crate::tar::padding(size)])
                .await?;
        }
        tally.done_through(index, &obj.key);
    }
    if tar {
        out.write_all(&crate::tar::END).await?;
    }
    out.flush().await
}

/// The `--format jsonl` line of `obj`: `{"key": KEY, "body": TEXT}`; an error for a body that
/// is not UTF-8 or that streams.
fn json_line(obj: &Object) -> Result<Vec<u8>, String> {
    if obj.body.is_streaming() {
        return Err(format!(
            "{} bytes is too large for a jsonl line (above half of --max-bytes, it streams); \
             --format tar carries any size",
            obj.body.size()
        ));
    }
    let bytes = obj.body.to_vec();
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| format!("not UTF-8 text ({e}); --format tar carries any bytes"))?;
    let mut line = serde_json::to_vec(&serde_json::json!({ "key": obj.key, "body": text }))
        .map_err(|e| e.to_string())?;
    line.push(b'\n');
    Ok(line)
}

fn closed_or_failed(e: std::io::Error, tally: Tally) -> anyhow::Result<ExitCode> {
    tally.abandon();
    if is_broken_pipe(&e) {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(anyhow::Error::new(e).context("writing to stdout"))
    }
}

/// What `get` takes.
#[derive(clap::Args, Debug)]
pub(crate) struct GetArgs {
    #[command(flatten)]
    pub(crate) fetch: FetchArgs,
    /// Directory to write the objects into, as DIR/<key relative to the prefix> (to a glob's
    /// literal part up to its last /)
    #[arg(long, value_name = "DIR")]
    pub(crate) out: PathBuf,
    /// Send nothing for an object whose file is already there with the object's size (for a
    /// keys-file line without a size, any file there): a rerun fetches what is missing
    #[arg(long, conflicts_with = "if_size_differ")]
    pub(crate) skip_existing: bool,
    /// Fetch an object only when its file is missing or of another size (a keys-file line
    /// without a size is always fetched)
    #[arg(long)]
    pub(crate) if_size_differ: bool,
}

/// `get`: each object to its own file under `--out`.
pub(crate) async fn get(args: GetArgs) -> anyhow::Result<ExitCode> {
    let mut signals = Signals::catch()?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let prefix = args.fetch.url()?.base().to_owned();
    let keep: Option<Keep> = if args.skip_existing || args.if_size_differ {
        let (dir, prefix, unsized_there) = (args.out.clone(), prefix.clone(), args.skip_existing);
        Some(Box::new(move |obj: &ObjectRef| {
            !already_there(&dir, &prefix, obj, unsized_there)
        }))
    } else {
        None
    };
    let mut run = args.fetch.start(keep).await?;
    // The temporary file being written, if any: removed when a signal stops the command.
    let mut writing = None;
    match signals
        .until(get_all(&mut run, &args.out, &prefix, &mut writing))
        .await
    {
        Ok(()) => Ok(run.tally.finish()),
        Err(stop) => {
            if let Some(tmp) = writing {
                let _ = tokio::fs::remove_file(&tmp).await;
            }
            Ok(run.tally.stopped(stop))
        }
    }
}

async fn get_all(run: &mut Run, dir: &Path, prefix: &str, writing: &mut Option<PathBuf>) {
    while let Some(result) = run.results.next().await {
        let index = run.order.next(seq_of(&result));
        let obj = match result {
            Ok(obj) => obj,
            Err(e) => {
                run.tally.failed_at(index, &e);
                continue;
            }
        };
        let key = obj.key.clone();
        let len = obj.body.size();
        let rel = key.strip_prefix(prefix).unwrap_or(&key).to_owned();
        match save(dir, &rel, obj, writing).await {
            Ok(()) => run.tally.ok(len),
            Err(e) => run.tally.failed(&format!("object {key:?}: {e:#}")),
        }
        run.tally.done_through(index, &key);
    }
}

/// Whether `obj`'s file under `dir` is already there with its size (or, for an object of
/// unknown size, at all when `unsized_there`); then a leftover temporary file of it goes too.
fn already_there(dir: &Path, prefix: &str, obj: &ObjectRef, unsized_there: bool) -> bool {
    let rel = obj.key.strip_prefix(prefix).unwrap_or(&obj.key);
    let Ok((segments, is_dir)) = safe_segments(rel) else {
        return false; // refused when it is fetched, with the reason
    };
    let mut path = dir.to_path_buf();
    path.extend(&segments);
    let Ok(meta) = std::fs::symlink_metadata(&path) else {
        return false;
    };
    if is_dir {
        return meta.is_dir();
    }
    let there = meta.is_file()
        && match obj.size {
            Some(size) => meta.len() == size,
            None => unsized_there,
        };
    if there {
        if let Some(name) = segments.last() {
            let _ = std::fs::remove_file(tmp_path(path.parent().unwrap_or(dir), name));
        }
    }
    there
}

/// The path segments of `rel` below the output directory, and whether it names a directory
/// (a zero-byte `dir/` marker). Refuses anything that could leave the directory.
pub(crate) fn safe_segments(rel: &str) -> Result<(Vec<&str>, bool), String> {
    let (rel, is_dir) = match rel.strip_suffix('/') {
        Some(r) => (r, true),
        None => (rel, false),
    };
    if rel.is_empty() {
        return Err("the key names the output directory itself".to_owned());
    }
    let segments: Vec<&str> = rel.split('/').collect();
    for s in &segments {
        match *s {
            "" => return Err("the key has an empty path segment (`//` or a leading `/`)".into()),
            "." | ".." => return Err(format!("the key has a `{s}` path segment")),
            s if s.contains('\0') => return Err("the key contains a NUL byte".into()),
            _ => {}
        }
    }
    Ok((segments, is_dir))
}

/// Where an object's bytes go: a temporary name beside the final one.
struct Target {
    tmp: PathBuf,
    dest: PathBuf,
}

/// Writes `obj` to `dir/rel` through a temporary file and a rename; a streaming body is written
/// part by part as it arrives, and renamed only once complete. `writing` names the temporary
/// file while it may exist.
async fn save(
    dir: &Path,
    rel: &str,
    obj: Object,
    writing: &mut Option<PathBuf>,
) -> anyhow::Result<()> {
    let (dir, rel, empty) = (dir.to_path_buf(), rel.to_owned(), obj.body.is_empty());
    let target = tokio::task::spawn_blocking(move || prepare(&dir, &rel, empty))
        .await
        .context("the writer task failed")??;
    let Some(target) = target else {
        return Ok(()); // a directory marker
    };
    *writing = Some(target.tmp.clone());
    let written = if obj.body.is_streaming() {
        write_streaming(&target.tmp, obj.body).await
    } else {
        let tmp = target.tmp.clone();
        tokio::task::spawn_blocking(move || write_whole(&tmp, &obj.body))
            .await
            .context("the writer task failed")
            .and_then(|r| r)
    };
    let result = match written {
        Ok(()) => {
            let (tmp, dest) = (target.tmp.clone(), target.dest.clone());
            tokio::task::spawn_blocking(move || {
                if std::fs::symlink_metadata(&dest).is_ok_and(|m| m.is_dir()) {
                    anyhow::bail!("refused: {} is a directory", dest.display());
                }
                std::fs::rename(&tmp, &dest)
                    .with_context(|| format!("renaming into {}", dest.display()))
            })
            .await
            .context("the writer task failed")
            .and_then(|r| r)
        }
        Err(e) => Err(e),
    };
    if result.is_err() {
        let _ = tokio::fs::remove_file(&target.tmp).await;
    }
    *writing = None;
    result
}

/// Checks `rel` and creates its parent directories under `dir`; `None` for a directory marker
/// (a key ending in `/`), which needs nothing written.
fn prepare(dir: &Path, rel: &str, empty: bool) -> anyhow::Result<Option<Target>> {
    let (segments, is_dir) = safe_segments(rel).map_err(|why| anyhow::anyhow!("refused: {why}"))?;
    if is_dir && !empty {
        anyhow::bail!("refused: a key ending in `/` has a body");
    }
    let (name, parents) = if is_dir {
        (None, &segments[..])
    } else {
        let (name, parents) = segments.split_last().expect("at least one segment");
        (Some(*name), parents)
    };
    let mut path = dir.to_path_buf();
    for seg in parents {
        path.push(seg);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => anyhow::bail!("refused: {} exists and is not a directory", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match std::fs::create_dir(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => {
                        return Err(e).with_context(|| format!("creating {}", path.display()))
                    }
                }
            }
            Err(e) => return Err(e).with_context(|| format!("checking {}", path.display())),
        }
    }
    let Some(name) = name else {
        return Ok(None);
    };
    Ok(Some(Target {
        tmp: tmp_path(&path, name),
        dest: path.join(name),
    }))
}

/// The temporary name of file `name` in `dir`: the same on every run, so that a run stopped
/// before it could remove it leaves one a rerun finds.
fn tmp_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{name}.s3-ordered.tmp"))
}

/// Opens `path` for writing as a new file. Whatever is at the temporary name (a leftover of a
/// run that was stopped, a symlink) is removed first, never written through.
fn create_new(path: &Path) -> anyhow::Result<std::fs::File> {
    let open = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
    };
    match open() {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::remove_file(path)
            .and_then(|()| open())
            .with_context(|| format!("replacing the leftover {}", path.display())),
        opened => opened.with_context(|| format!("creating {}", path.display())),
    }
}

fn write_whole(path: &Path, body: &Body) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut f = create_new(path)?;
    for chunk in body.chunks() {
        f.write_all(chunk)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

async fn write_streaming(path: &Path, mut body: Body) -> anyhow::Result<()> {
    let file = {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || create_new(&path))
            .await
            .context("the writer task failed")??
    };
    let mut file = tokio::fs::File::from_std(file);
    while let Some(chunk) = body.next_chunk().await {
        file.write_all(&chunk?)
            .await
            .with_context(|| format!("writing {}", path.display()))?;
    }
    file.flush()
        .await
        .with_context(|| format!("writing {}", path.display()))
}

/// What `bench` takes.
#[derive(clap::Args, Debug)]
pub(crate) struct BenchArgs {
    #[command(flatten)]
    pub(crate) fetch: FetchArgs,
    /// Print one JSON object instead of text
    #[arg(long)]
    pub(crate) json: bool,
}

/// `bench`: fetch and discard, then report speed, CPU and memory.
pub(crate) async fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let mut signals = Signals::catch()?;
    let mut run = args.fetch.start(None).await?;
    if let Err(stop) = signals.until(bench_all(&mut run)).await {
        return Ok(run.tally.stopped(stop));
    }
    let Run { client, tally, .. } = run;
    tally.clear();
    let secs = tally.elapsed().max(1e-9);
    let (cpu, rss) = cpu_and_peak_rss();
    let stats = client.stats();
    let (ok, failed, bytes) = (tally.ok, tally.failed, tally.bytes);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "objects": ok,
                "failed": failed,
                "bytes": bytes,
                "seconds": secs,
                "mb_per_s": bytes as f64 / 1e6 / secs,
                "objects_per_s": ok as f64 / secs,
                "cpu_seconds": cpu,
                "peak_rss_bytes": rss,
                "requests": stats.requests,
                "retries": stats.retries,
                "throttled": stats.throttled,
                "parts": stats.parts,
                "connections_opened": stats.connections_opened,
                "connection_limit": stats.connection_limit,
                "stale_connections": stats.stale_connections,
                "checksums_verified": stats.checksums_verified,
                "checksums_unavailable": stats.checksums_unavailable,
                "checksum_mismatches": stats.checksum_mismatches,
                "checksum_heads": stats.checksum_heads,
                "hedges_sent": stats.hedges_sent,
                "hedges_won": stats.hedges_won,
                "slow_bodies_resumed": stats.slow_bodies_resumed,
                "sessions_created": stats.sessions_created,
            })
        );
    } else {
        println!(
            "objects {ok}  failed {failed}  bytes {bytes}  seconds {secs:.3}  MB/s {:.1}  \
             objects/s {:.0}  cpu_seconds {cpu:.3}  peak_rss_MiB {:.1}",
            bytes as f64 / 1e6 / secs,
            ok as f64 / secs,
            rss as f64 / (1 << 20) as f64
        );
    }
    Ok(tally.finish())
}

async fn bench_all(run: &mut Run) {
    let tally = &mut run.tally;
    while let Some(result) = run.results.next().await {
        let index = run.order.next(seq_of(&result));
        match result {
            Ok(mut obj) if obj.body.is_streaming() => {
                let mut failed = None;
                while let Some(chunk) = obj.body.next_chunk().await {
                    if let Err(e) = chunk {
                        failed = Some(e);
                    }
                }
                match failed {
                    None => tally.ok(obj.body.size()),
                    Some(e) => tally.failed(&e.with_causes()),
                }
                tally.done_through(index, &obj.key);
            }
            Ok(obj) => {
                tally.ok(obj.body.size());
                tally.done_through(index, &obj.key);
            }
            Err(e) => tally.failed_at(index, &e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::safe_segments;

    #[test]
    fn refuses_keys_that_could_escape() {
        for bad in [
            "",
            "/",
            "../x",
            "a/../../x",
            "a/./b",
            "/abs",
            "a//b",
            ".",
            "..",
            "a/..",
            "x\0y",
        ] {
            assert!(safe_segments(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            safe_segments("a/b c/d.txt"),
            Ok((vec!["a", "b c", "d.txt"], false))
        );
        assert_eq!(safe_segments("dir/sub/"), Ok((vec!["dir", "sub"], true)));
        assert_eq!(safe_segments("..x/y.."), Ok((vec!["..x", "y.."], false)));
    }
}
