//! `s3-ordered`: the command-line front end. Parses arguments, runs a command, maps the outcome
//! to an exit status: 0 all objects ok, 1 some objects failed, 2 usage or configuration error.

mod demo;
mod size;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "s3-ordered",
    version,
    about = "Fetch many S3 objects concurrently, in order, under connection and memory budgets"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start an embedded S3-compatible server on 127.0.0.1, write objects to it, and fetch them
    /// back in order under the budgets; prints throughput and client stats.
    ///
    /// Example: s3-ordered demo --objects 5000 --max-connections 8 --max-bytes 16MiB
    Demo(demo::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("s3-ordered: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Demo(args) => runtime.block_on(demo::run(args)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("s3-ordered: {e:#}");
            ExitCode::from(2)
        }
    }
}
