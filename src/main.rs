//! `corral`: one binary for every role of the farm.
//!
//! This file only parses arguments and hands them to `cmd::*`, which wire the
//! library crates together. No tokio runtime is started here: `corral runner`
//! must fork its single-threaded container helper before any thread exists,
//! so every command builds the runtime it needs itself.

mod cmd;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "corral",
    version,
    about = "A remote-execution build farm (REAPI v2)"
)]
struct Cli {
    /// Log lines on stderr as text (default) or as JSON objects, one per
    /// line; `CORRAL_LOG_FORMAT=json` does the same, and processes this one
    /// starts (the runner) inherit it.
    #[arg(long, global = true, value_enum)]
    log_format: Option<cmd::LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole farm on this machine: server, scheduler, a worker and its runner.
    Up(cmd::up::Args),
    /// Serve the client-facing REAPI services (CAS, action cache, execution).
    Server(cmd::server::Args),
    /// Take actions from a scheduler and run them in the sandbox.
    Worker(cmd::worker::Args),
    /// Serve the runner protocol, or run one command in the sandbox by hand.
    Runner(cmd::runner::Args),
    /// Manage the local OCI image and layer cache.
    Images(cmd::images::Args),
    /// Measure Corral next to a reference implementation.
    Bench(cmd::bench::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    cmd::init_logging(cli.log_format);
    let result = match cli.command {
        Command::Up(args) => cmd::up::run(args),
        Command::Server(args) => cmd::server::run(args),
        Command::Worker(args) => cmd::worker::run(args),
        Command::Runner(args) => cmd::runner::run(args),
        Command::Images(args) => cmd::images::run(args),
        Command::Bench(args) => cmd::bench::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("corral: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
