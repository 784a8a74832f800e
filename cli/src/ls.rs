//! `ls`: every key under a prefix, `SIZE<TAB>KEY` a line, in S3's order; with `--delimiter`, one
//! level of them, the common prefixes as `PRE<TAB>PREFIX` lines among the keys.

use std::process::ExitCode;

use futures::StreamExt as _;
use s3_ordered::ListEntry;
use tokio::io::AsyncWriteExt as _;

use crate::opts::ConnectOpts;
use crate::output::is_broken_pipe;
use crate::source::{self, S3Url};

/// What `ls` takes.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// s3://BUCKET[/PREFIX]; a PREFIX with *, ? or [...] is a glob that whole keys must match
    #[arg(value_name = "S3_URL", value_parser = source::parse_s3_url)]
    url: S3Url,
    /// Take the S3 path literally, as a plain prefix: *, ? and [ are not wildcards
    #[arg(long)]
    raw: bool,
    /// List from the first key after KEY (ListObjectsV2 start-after)
    #[arg(long, value_name = "KEY")]
    start_after: Option<String>,
    /// List one level: keys that go on past DELIMITER (usually /) are rolled up into one
    /// PRE<TAB>PREFIX line, in order among the keys
    #[arg(long, value_name = "DELIMITER")]
    delimiter: Option<String>,
    #[command(flatten)]
    conn: ConnectOpts,
}

pub(crate) async fn run(mut args: Args) -> anyhow::Result<ExitCode> {
    args.url = args.url.resolved(args.raw).map_err(anyhow::Error::msg)?;
    if args.delimiter.as_deref() == Some("") {
        anyhow::bail!("--delimiter must not be empty");
    }
    if args.delimiter.is_some() && args.url.glob.is_some() {
        anyhow::bail!("--delimiter lists one level under a prefix; it cannot take a glob");
    }
    source::start_after_listable(&args.url.bucket, args.start_after.as_deref())?;
    let client = args.conn.client().await?;
    let mut listing = match &args.delimiter {
        None => source::listing(&client, &args.url, args.start_after.as_deref())
            .map(|item| item.map(ListEntry::Object))
            .boxed(),
        Some(delimiter) => client
            .list_with_delimiter(
                args.url.bucket.clone(),
                args.url.prefix.clone(),
                delimiter.clone(),
                args.start_after.clone(),
            )
            .boxed(),
    };
    let mut out = tokio::io::BufWriter::with_capacity(256 << 10, tokio::io::stdout());
    let mut status = ExitCode::SUCCESS;
    while let Some(item) = listing.next().await {
        match item {
            Ok(entry) => {
                let line = match entry {
                    ListEntry::Object(obj) => {
                        let size = obj.size.map_or_else(|| "-".to_owned(), |n| n.to_string());
                        format!("{size}\t{}\n", obj.key)
                    }
                    ListEntry::Prefix(prefix) => format!("PRE\t{prefix}\n"),
                };
                if let Err(e) = out.write_all(line.as_bytes()).await {
                    return closed(e);
                }
            }
            Err(e) => {
                eprintln!(
                    "s3-ordered: listing {}: {}",
                    args.url.display(),
                    e.with_causes()
                );
                status = ExitCode::from(1);
            }
        }
    }
    if let Err(e) = out.flush().await {
        return closed(e);
    }
    Ok(status)
}

fn closed(e: std::io::Error) -> anyhow::Result<ExitCode> {
    if is_broken_pipe(&e) {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(anyhow::Error::new(e).context("writing to stdout"))
    }
}
