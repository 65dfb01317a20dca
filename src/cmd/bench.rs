//! `corral bench …`: a dispatcher to the separate `corral-bench` binary.
//!
//! The benchmarks drive real clients (Bazel, BuildStream, registries)
//! through the end-to-end harness in `corral-integration`; keeping them in a
//! binary of their own keeps that harness out of the shipped `corral`. Every
//! argument, `--help` included, goes to `corral-bench` unchanged, and
//! `CORRAL_BIN` names this executable so the benchmarks that start a farm
//! start the very build the user ran.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitCode};

use anyhow::{bail, Context};

/// The benchmark binary's name; it must sit next to `corral`.
const BENCH_BINARY: &str = "corral-bench";

/// Options of `corral bench`: everything after `bench`, parsed by
/// `corral-bench` (`corral bench --help` lists the benchmarks).
#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true)]
pub struct Args {
    /// The benchmark and its options: cas, sandbox, execute, e2e, staging,
    /// scheduler or overhead (see docs/benchmarks.md).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    args: Vec<OsString>,
}

/// Replaces this process with `corral-bench`; returns only on failure.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let farm = std::env::current_exe().context("locating the corral executable")?;
    // The benchmarks run what a person runs: the `corral` in front of this
    // program (src/front.rs), when it is here.
    let front = farm.with_file_name("corral");
    let corral = if front.is_file() { front } else { farm };
    let bench = corral
        .parent()
        .map(|dir| dir.join(BENCH_BINARY))
        .context("the corral executable has no parent directory")?;
    if !bench.is_file() {
        bail!(missing_message(&bench));
    }
    let err = Command::new(&bench)
        .args(&args.args)
        .env("CORRAL_BIN", &corral)
        .exec();
    Err(err).with_context(|| format!("running {}", bench.display()))
}

/// Why `corral bench` cannot run, and how to build what it needs.
fn missing_message(bench: &Path) -> String {
    format!(
        "{BENCH_BINARY} is missing at {}: the benchmarks are a separate binary; \
         build it next to corral with \
         `cargo build --release -p corral-integration --bin {BENCH_BINARY}` \
         (or `cargo build --workspace --bins`)",
        bench.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Sub,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Sub {
        Bench(Args),
    }

    fn passed_through(argv: &[&str]) -> Vec<OsString> {
        let cli = Cli::try_parse_from(argv).expect("parses");
        let Sub::Bench(args) = cli.command;
        args.args
    }

    /// Flags, `--help` included, reach `corral-bench` untouched.
    #[test]
    fn passes_every_argument_through() {
        assert_eq!(
            passed_through(&["corral", "bench", "cas", "--blobs", "10", "--help"]),
            ["cas", "--blobs", "10", "--help"]
        );
        assert_eq!(passed_through(&["corral", "bench", "--help"]), ["--help"]);
        assert_eq!(passed_through(&["corral", "bench", "-h"]), ["-h"]);
        assert!(passed_through(&["corral", "bench"]).is_empty());
    }

    #[test]
    fn the_missing_binary_message_says_how_to_build_it() {
        let text = missing_message(Path::new("/x/corral-bench"));
        assert!(
            text.contains("cargo build --release -p corral-integration --bin corral-bench"),
            "{text}"
        );
    }
}
