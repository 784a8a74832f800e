//! `cat`, `get` and `bench`: fetch the objects of a listing or a keys file in order, and write
//! them to stdout, to files, or nowhere.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use futures::{FutureExt as _, StreamExt as _};
use s3_ordered::{Body, Client, Object};
use tokio::io::AsyncWriteExt as _;

use crate::opts::ConnectOpts;
use crate::output::{cpu_and_peak_rss, is_broken_pipe, Tally};
use crate::source::{self, S3Url};

/// What `cat`, `get` and `bench` take.
#[derive(clap::Args, Debug)]
pub(crate) struct FetchArgs {
    /// s3://BUCKET[/PREFIX]: the objects under PREFIX, in listing order
    #[arg(value_name = "S3_URL", value_parser = source::parse_s3_url)]
    pub(crate) url: S3Url,
    /// Fetch the keys listed in FILE instead (one per line: KEY, KEY<TAB>SIZE or
    /// KEY<TAB>SIZE<TAB>VERSION_ID; a missing size is learned from the first GET); `-` reads stdin
    #[arg(long, value_name = "FILE")]
    pub(crate) keys_from: Option<String>,
    /// No progress bar and no summary line
    #[arg(long, short)]
    pub(crate) quiet: bool,
    #[command(flatten)]
    pub(crate) conn: ConnectOpts,
}

impl FetchArgs {
    async fn start(&self) -> anyhow::Result<(Client, s3_ordered::ObjectStream, Tally)> {
        source::check(&self.url, self.keys_from.as_deref())?;
        let client = self.conn.client().await?;
        let total = match self.keys_from.as_deref() {
            Some(path) if path != "-" && Tally::visible(self.quiet) => count_lines(path).ok(),
            _ => None,
        };
        let inputs = source::inputs(&client, &self.url, self.keys_from.as_deref()).await?;
        let results = client.get_stream(self.url.bucket.clone(), inputs);
        let tally = Tally::new(total, self.quiet, client.clone());
        Ok((client, results, tally))
    }
}

fn count_lines(path: &str) -> std::io::Result<u64> {
    let text = std::fs::read(path)?;
    Ok(text
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty() && *l != b"\r")
        .count() as u64)
}

/// `cat`: the bodies, concatenated in order, to stdout.
pub(crate) async fn cat(args: FetchArgs) -> anyhow::Result<ExitCode> {
    let (_client, mut results, mut tally) = args.start().await?;
    let mut out = tokio::io::BufWriter::with_capacity(1 << 20, tokio::io::stdout());
    loop {
        // Flush whenever the next object is not ready yet, so output streams.
        let next = match results.next().now_or_never() {
            Some(next) => next,
            None => {
                if let Err(e) = out.flush().await {
                    return closed_or_failed(e, tally);
                }
                results.next().await
            }
        };
        let Some(result) = next else { break };
        match result {
            Ok(mut obj) if obj.body.is_streaming() => {
                // Part by part, as the parts arrive; each chunk's memory returns once written.
                let mut written = 0u64;
                loop {
                    match obj.body.next_chunk().await {
                        None => {
                            tally.ok(written);
                            break;
                        }
                        Some(Ok(chunk)) => {
                            if let Err(e) = out.write_all(&chunk).await {
                                return closed_or_failed(e, tally);
                            }
                            written += chunk.len() as u64;
                        }
                        Some(Err(e)) => {
                            tally.failed(&format!(
                                "{} (after {written} bytes were written)",
                                e.with_causes()
                            ));
                            break;
                        }
                    }
                }
            }
            Ok(obj) => {
                for chunk in obj.body.chunks() {
                    if let Err(e) = out.write_all(chunk).await {
                        return closed_or_failed(e, tally);
                    }
                }
                tally.ok(obj.body.size());
            }
            Err(e) => tally.failed(&e.with_causes()),
        }
    }
    if let Err(e) = out.flush().await {
        return closed_or_failed(e, tally);
    }
    Ok(tally.finish())
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
    /// Directory to write the objects into, as DIR/<key relative to the prefix>
    #[arg(long, value_name = "DIR")]
    pub(crate) out: PathBuf,
}

/// `get`: each object to its own file under `--out`.
pub(crate) async fn get(args: GetArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let prefix = args.fetch.url.prefix.clone();
    let (_client, mut results, mut tally) = args.fetch.start().await?;
    while let Some(result) = results.next().await {
        let obj = match result {
            Ok(obj) => obj,
            Err(e) => {
                tally.failed(&e.with_causes());
                continue;
            }
        };
        let key = obj.key.clone();
        let len = obj.body.size();
        let rel = key.strip_prefix(prefix.as_str()).unwrap_or(&key).to_owned();
        match save(&args.out, &rel, obj).await {
            Ok(()) => tally.ok(len),
            Err(e) => tally.failed(&format!("object {key:?}: {e:#}")),
        }
    }
    Ok(tally.finish())
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
/// part by part as it arrives, and renamed only once complete.
async fn save(dir: &Path, rel: &str, obj: Object) -> anyhow::Result<()> {
    let (dir, rel, seq, empty) = (
        dir.to_path_buf(),
        rel.to_owned(),
        obj.seq,
        obj.body.is_empty(),
    );
    let target = tokio::task::spawn_blocking(move || prepare(&dir, &rel, seq, empty))
        .await
        .context("the writer task failed")??;
    let Some(target) = target else {
        return Ok(()); // a directory marker
    };
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
    result
}

/// Checks `rel` and creates its parent directories under `dir`; `None` for a directory marker
/// (a key ending in `/`), which needs nothing written.
fn prepare(dir: &Path, rel: &str, seq: u64, empty: bool) -> anyhow::Result<Option<Target>> {
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
        tmp: path.join(format!(
            ".{name}.s3-ordered-{}-{seq}.tmp",
            std::process::id()
        )),
        dest: path.join(name),
    }))
}

/// Opens `path` for writing; refuses an existing file or symlink at the temporary name.
fn create_new(path: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))
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
    let (client, mut results, mut tally) = args.fetch.start().await?;
    while let Some(result) = results.next().await {
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
            }
            Ok(obj) => tally.ok(obj.body.size()),
            Err(e) => tally.failed(&e.with_causes()),
        }
    }
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
                "stale_connections": stats.stale_connections,
                "checksums_verified": stats.checksums_verified,
                "checksums_unavailable": stats.checksums_unavailable,
                "checksum_mismatches": stats.checksum_mismatches,
                "checksum_heads": stats.checksum_heads,
                "hedges_sent": stats.hedges_sent,
                "hedges_won": stats.hedges_won,
                "slow_bodies_resumed": stats.slow_bodies_resumed,
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
