//! Where the objects come from: an `s3://BUCKET[/PREFIX]` URL (the prefix may be a glob), and
//! optionally a file of keys.

use std::pin::Pin;

use anyhow::{bail, Context as _};
use futures::{Stream, StreamExt};
use s3_ordered::{Client, Error, ObjectRef};
use tokio::io::AsyncBufReadExt;

use crate::glob::{is_glob, Glob};

/// A parsed `s3://BUCKET[/PREFIX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct S3Url {
    pub(crate) bucket: String,
    /// What to list: the prefix as given, or a glob's literal prefix.
    pub(crate) prefix: String,
    /// The glob the keys must match, when the prefix holds a wildcard.
    pub(crate) glob: Option<Glob>,
}

impl S3Url {
    /// What keys are written relative to (`get`): the prefix, or for a glob its literal
    /// prefix up to its last `/`.
    pub(crate) fn base(&self) -> &str {
        match self.glob {
            None => &self.prefix,
            Some(_) => self.prefix.rfind('/').map_or("", |i| &self.prefix[..=i]),
        }
    }

    /// The URL with its path read as a glob when it holds `*`, `?` or `[` (else as it is);
    /// `literal` (`--raw`) keeps it a plain prefix. An error says what is wrong with the glob.
    pub(crate) fn resolved(&self, literal: bool) -> Result<S3Url, String> {
        let mut url = self.clone();
        if !literal && url.glob.is_none() && is_glob(&url.prefix) {
            let glob = Glob::parse(&url.prefix)?;
            url.prefix = glob.prefix().to_owned();
            url.glob = Some(glob);
        }
        Ok(url)
    }

    /// The URL as the user wrote it.
    pub(crate) fn display(&self) -> String {
        let path = self
            .glob
            .as_ref()
            .map_or(self.prefix.as_str(), Glob::as_str);
        format!("s3://{}/{path}", self.bucket)
    }
}

/// Parses `s3://BUCKET[/PREFIX]`; the prefix is kept as given (empty for the whole bucket).
/// [`S3Url::resolved`] then reads a prefix with `*`, `?` or `[` as a glob ([`crate::glob`]).
pub(crate) fn parse_s3_url(text: &str) -> Result<S3Url, String> {
    let rest = text
        .strip_prefix("s3://")
        .ok_or_else(|| format!("{text:?} is not an S3 URL; expected s3://BUCKET[/PREFIX]"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(format!(
            "{text:?} has no bucket; expected s3://BUCKET[/PREFIX]"
        ));
    }
    Ok(S3Url {
        bucket: bucket.to_owned(),
        prefix: prefix.to_owned(),
        glob: None,
    })
}

/// One line of a keys file: `KEY`, `KEY<TAB>SIZE` or `KEY<TAB>SIZE<TAB>VERSION_ID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyLine {
    pub(crate) key: String,
    pub(crate) size: Option<u64>,
    pub(crate) version_id: Option<String>,
}

/// Parses one keys-file line (without its line ending); `Ok(None)` for a blank line.
pub(crate) fn parse_key_line(line: &str) -> Result<Option<KeyLine>, String> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.is_empty() {
        return Ok(None);
    }
    let mut fields = line.split('\t');
    let key = fields.next().unwrap_or_default();
    if key.is_empty() {
        return Err("the key is empty".to_owned());
    }
    let size = match fields.next() {
        None | Some("") => None,
        Some(s) => Some(
            s.parse::<u64>()
                .map_err(|_| format!("size {s:?} of {key:?} is not a number of bytes"))?,
        ),
    };
    let version_id = fields.next().filter(|v| !v.is_empty()).map(str::to_owned);
    if fields.next().is_some() {
        return Err(format!(
            "line for {key:?} has more than three tab-separated fields"
        ));
    }
    Ok(Some(KeyLine {
        key: key.to_owned(),
        size,
        version_id,
    }))
}

/// The objects to fetch, in order: from the keys file if given, else the listing of the URL.
pub(crate) type Inputs = Pin<Box<dyn Stream<Item = Result<ObjectRef, Error>> + Send>>;

/// Where the input starts: after a key of the listing, or past its first items.
#[derive(Debug, Clone, Default)]
pub(crate) struct Start {
    /// List from the first key after this one (listings only).
    pub(crate) after: Option<String>,
    /// Items of the input (keys-file lines or listed keys) to pass over first.
    pub(crate) skip: u64,
}

/// Opens the input: a listing of `url`, or the lines of `keys_from` (`-` for stdin), from
/// `start`. Lines without a size become objects of unknown size, whose first GET learns it.
pub(crate) async fn inputs(
    client: &Client,
    url: &S3Url,
    keys_from: Option<&str>,
    start: &Start,
) -> anyhow::Result<Inputs> {
    let items = match keys_from {
        None => listing(client, url, start.after.as_deref()),
        Some(path) => key_lines(path).await?,
    };
    Ok(match usize::try_from(start.skip) {
        Ok(0) => items,
        Ok(n) => Box::pin(items.skip(n)),
        Err(_) => Box::pin(futures::stream::empty()),
    })
}

/// The listing of `url`, from the first key after `after`; with a glob, only the keys it
/// matches (a failed page passes, to be reported).
pub(crate) fn listing(client: &Client, url: &S3Url, after: Option<&str>) -> Inputs {
    let (bucket, prefix) = (url.bucket.clone(), url.prefix.clone());
    let listed: Inputs = match after {
        Some(after) => Box::pin(client.list_after(bucket, prefix, after)),
        None => Box::pin(client.list(bucket, prefix)),
    };
    match url.glob.clone() {
        None => listed,
        Some(glob) => Box::pin(listed.filter(move |item| {
            let keep = item.as_ref().map_or(true, |obj| glob.matches(&obj.key));
            futures::future::ready(keep)
        })),
    }
}

async fn key_lines(path: &str) -> anyhow::Result<Inputs> {
    let reader: Pin<Box<dyn tokio::io::AsyncBufRead + Send>> = if path == "-" {
        Box::pin(tokio::io::BufReader::new(tokio::io::stdin()))
    } else {
        let file = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("opening keys file {path}"))?;
        Box::pin(tokio::io::BufReader::new(file))
    };
    let lines = tokio_lines(reader);
    let path = path.to_owned();
    let items = lines.enumerate().filter_map(move |(n, line)| {
        let parsed = match line {
            Err(e) => Some(Err(Error::invalid_input(format!(
                "reading {path} line {}: {e}",
                n + 1
            )))),
            Ok(text) => match parse_key_line(&text) {
                Ok(None) => None,
                Ok(Some(l)) => Some(Ok(ObjectRef {
                    key: l.key,
                    size: l.size,
                    version_id: l.version_id,
                })),
                Err(why) => Some(Err(Error::invalid_input(format!(
                    "{path} line {}: {why}",
                    n + 1
                )))),
            },
        };
        futures::future::ready(parsed)
    });
    Ok(Box::pin(items))
}

/// The lines of `reader` as a stream; the error of a failed read ends it.
fn tokio_lines(
    reader: Pin<Box<dyn tokio::io::AsyncBufRead + Send>>,
) -> impl Stream<Item = std::io::Result<String>> + Send {
    futures::stream::unfold(Some(reader.lines()), |lines| async move {
        let mut lines = lines?;
        match lines.next_line().await {
            Ok(Some(l)) => Some((Ok(l), Some(lines))),
            Ok(None) => None,
            Err(e) => Some((Err(e), None)),
        }
    })
}

/// Rejects a combination of URL and flags that cannot work.
pub(crate) fn check(url: &S3Url, keys_from: Option<&str>, start: &Start) -> anyhow::Result<()> {
    if keys_from.is_some() && (!url.prefix.is_empty() || url.glob.is_some()) {
        bail!(
            "--keys-from takes the bucket only (s3://{}), not a prefix",
            url.bucket
        );
    }
    if keys_from.is_some() && start.after.is_some() {
        bail!("--start-after resumes a listing; a keys file resumes with --skip N");
    }
    start_after_listable(&url.bucket, start.after.as_deref())
}

/// Rejects `--start-after` for a directory bucket, which has no such listing.
pub(crate) fn start_after_listable(bucket: &str, after: Option<&str>) -> anyhow::Result<()> {
    if after.is_some() && s3_ordered::is_directory_bucket(bucket) {
        bail!(
            "--start-after: {bucket} is a directory bucket (S3 Express One Zone), which lists \
             in an order of its own and cannot start after a key; resume with --skip N"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_s3_urls() {
        let u = parse_s3_url("s3://bkt/some/prefix/").unwrap();
        assert_eq!(
            (u.bucket.as_str(), u.prefix.as_str()),
            ("bkt", "some/prefix/")
        );
        let u = parse_s3_url("s3://bkt").unwrap();
        assert_eq!((u.bucket.as_str(), u.prefix.as_str()), ("bkt", ""));
        let u = parse_s3_url("s3://bkt/").unwrap();
        assert_eq!(u.prefix, "");
        let given = parse_s3_url("s3://bkt/logs/*.json").unwrap();
        let u = given.resolved(false).unwrap();
        assert_eq!(u.prefix, "logs/");
        assert!(u.glob.as_ref().is_some_and(|g| g.matches("logs/a/b.json")));
        assert_eq!(u.display(), "s3://bkt/logs/*.json");
        let raw = given.resolved(true).unwrap();
        assert_eq!((raw.prefix.as_str(), raw.glob), ("logs/*.json", None));
        let bad_glob = parse_s3_url("s3://b/a[x").unwrap();
        assert!(bad_glob.resolved(false).is_err());
        assert_eq!(bad_glob.resolved(true).unwrap().prefix, "a[x");
        for bad in ["bkt/x", "s3://", "s3:///x", "http://bkt/x", ""] {
            assert!(parse_s3_url(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parses_key_lines() {
        let k = |key: &str, size: Option<u64>, v: Option<&str>| {
            Some(KeyLine {
                key: key.into(),
                size,
                version_id: v.map(Into::into),
            })
        };
        assert_eq!(parse_key_line("a/b c"), Ok(k("a/b c", None, None)));
        assert_eq!(parse_key_line("a\t12"), Ok(k("a", Some(12), None)));
        assert_eq!(
            parse_key_line("a\t12\tv1\r"),
            Ok(k("a", Some(12), Some("v1")))
        );
        assert_eq!(parse_key_line("a\t\tv1"), Ok(k("a", None, Some("v1"))));
        assert_eq!(parse_key_line(""), Ok(None));
        assert_eq!(parse_key_line("\r"), Ok(None));
        assert!(parse_key_line("a\tbig").is_err());
        assert!(parse_key_line("a\t-1").is_err());
        assert!(parse_key_line("\t12").is_err());
        assert!(parse_key_line("a\t1\tv\textra").is_err());
    }
}
