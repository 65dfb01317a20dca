//! `corral-bench`: the benchmarks behind `corral bench …`.
//!
//! A binary of its own so that the shipped `corral` does not link the test
//! harness (Bazel, BuildStream and registry drivers); `corral bench` finds
//! this next to itself, execs it with the same arguments and sets
//! `CORRAL_BIN` to itself, so the benchmarks that start a farm run the same
//! build the user invoked.

use std::process::ExitCode;

use clap::Parser;
use corral_integration::bench;

/// Measurements of Corral next to references; see docs/benchmarks.md.
#[derive(Debug, Parser)]
#[command(name = "corral bench", bin_name = "corral bench")]
struct Cli {
    #[command(subcommand)]
    which: Which,
}

#[derive(Debug, clap::Subcommand)]
enum Which {
    /// CAS throughput: FindMissingBlobs, batch upload/download, ByteStream.
    Cas(bench::cas::Args),
    /// Sandbox start-up cost next to bubblewrap and a bare fork/exec.
    Sandbox(bench::sandbox::Args),
    /// Execute round trip of a trivial action, cache off.
    Execute(bench::execute::Args),
    /// Wall time of real BuildStream and Bazel builds on `corral up` next
    /// to buildbox-casd and local sandboxes, and where a round trip's time
    /// goes.
    E2e(bench::e2e::Args),
    /// Worker input staging of a 10,000-file input root, cold and warm.
    Staging(bench::staging::Args),
    /// Scheduler load: simulated workers draining queued trivial actions
    /// through the real Execution and worker services on loopback.
    Scheduler(bench::scheduler::Args),
    /// What a configuration costs: two farms (A and B configs) measured
    /// in alternation, FindMissingBlobs and Execute, as paired ratios.
    Overhead(bench::overhead::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.which {
        Which::Cas(a) => bench::cas::run(a),
        Which::Sandbox(a) => bench::sandbox::run(a),
        Which::Execute(a) => bench::execute::run(a),
        Which::E2e(a) => bench::e2e::run(a),
        Which::Staging(a) => bench::staging::run(a),
        Which::Scheduler(a) => bench::scheduler::run(a),
        Which::Overhead(a) => bench::overhead::run(a),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("corral bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
