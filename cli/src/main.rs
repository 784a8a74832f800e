//! `s3-ordered`: the command-line front end. Parses arguments, runs a command, maps the outcome
//! to an exit status: 0 all objects ok, 1 some objects failed, 2 usage or configuration error.

// Doc comments here are clap's help text, written for a terminal (`KEY<TAB>SIZE`), not HTML.
#![allow(rustdoc::invalid_html_tags)]
#![warn(rust_2018_idioms, unreachable_pub)]

mod demo;
mod fdlimit;
mod fetch_cmds;
mod glob;
mod insecure;
mod log;
mod ls;
mod opts;
mod output;
mod serve;
mod source;
mod stop;
mod tar;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "s3-ordered",
    version,
    about = "Fetch many S3 objects concurrently, in order, under connection and memory budgets",
    after_help = "Exit status: 0 all objects ok, 1 some objects failed, 2 usage or configuration error.\n\
                  Diagnostics: -v, -vv, -vvv, or RUST_LOG (e.g. RUST_LOG=s3_ordered=debug)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Show what the client does on stderr: -v retries and throttling, -vv every request and
    /// connection, -vvv everything. RUST_LOG, when set, takes precedence (e.g. s3_ordered=debug)
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List every key under a prefix: SIZE<TAB>KEY a line, in S3's order
    #[command(
        after_help = "Examples:\n  s3-ordered ls s3://my-bucket/logs/2024-06-01/\n  \
        s3-ordered ls s3://my-bucket/logs/ --delimiter /"
    )]
    Ls(ls::Args),
    /// Write the objects' bodies to stdout, concatenated in order
    #[command(
        after_help = "Examples:\n  s3-ordered cat s3://my-bucket/events/ | gzip -dc | jq .\n  \
        s3-ordered cat 's3://my-bucket/logs/*/2024-0[1-6]-*.json'\n  \
        cut -f1 keys.tsv | s3-ordered cat s3://my-bucket --keys-from - > all.bin"
    )]
    Cat(fetch_cmds::CatArgs),
    /// Write each object to DIR/<key relative to the prefix>
    #[command(
        after_help = "Example:\n  s3-ordered get s3://my-bucket/images/ --out ./images --max-bytes 1GiB"
    )]
    Get(fetch_cmds::GetArgs),
    /// Fetch and discard; report objects, bytes, seconds, MB/s, objects/s, CPU and peak RSS
    #[command(
        after_help = "Example:\n  s3-ordered bench s3://my-bucket/shard-00/ --max-connections 128 --json"
    )]
    Bench(fetch_cmds::BenchArgs),
    /// Start an embedded S3-compatible server on 127.0.0.1, write objects to it, and fetch them
    /// back in order under the budgets; prints throughput and client stats
    #[command(
        after_help = "Example:\n  s3-ordered demo --objects 5000 --max-connections 8 --max-bytes 16MiB"
    )]
    Demo(demo::Args),
    /// Serve a local directory as S3 (each top-level directory a bucket), with SigV4 checked
    #[command(
        after_help = "Example:\n  s3-ordered serve --root ./data --addr 127.0.0.1:9000 \\\n      --access-key KEY --secret-key SECRET"
    )]
    Serve(serve::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    log::init(cli.verbose, std::env::var("RUST_LOG").ok().as_deref());
    fdlimit::raise();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("s3-ordered: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let env = opts::Env::from_process();
    // The command runs as a task on the runtime's workers: the thread in `block_on` is not one,
    // and waking it for every object it consumes costs a futex call and a context switch.
    let command = runtime.spawn(async move {
        match cli.command {
            Command::Ls(args) => ls::run(args).await,
            Command::Cat(args) => fetch_cmds::cat(args).await,
            Command::Get(args) => fetch_cmds::get(args).await,
            Command::Bench(args) => fetch_cmds::bench(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Serve(args) => serve::run(args, &env).await,
        }
    });
    let result = match runtime.block_on(command) {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(anyhow::anyhow!("the command was cancelled: {e}")),
    };
    // Do not wait for fetches still in flight (a closed pipe ends `cat` early).
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("s3-ordered: {e:#}");
            ExitCode::from(2)
        }
    }
}
