//! `corral worker`, and the `corral bench staging` harness of the worker.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use corral_worker::config::WorkerConfig;
use corral_worker::daemon::{Worker, WorkerSettings};
use tokio_util::sync::CancellationToken;

/// Options of `corral worker`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Scheduler URL, e.g. http://127.0.0.1:8980.
    #[arg(long)]
    scheduler: Option<String>,
    /// CAS URL (default: the scheduler's).
    #[arg(long)]
    cas: Option<String>,
    /// Data directory: local CAS, staged trees, build directories.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Actions run at once (default: the number of cores).
    #[arg(long)]
    slots: Option<u32>,
    /// Name shown by the scheduler (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// TOML configuration (docs/worker.md); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut config = match &args.config {
        Some(path) => WorkerConfig::load(path)?,
        None => WorkerConfig::default(),
    };
    if args.cas.is_some() {
        config.cas = args.cas;
    }
    if args.slots.is_some() {
        config.slots = args.slots;
    }
    if args.name.is_some() {
        config.name = args.name;
    }
    let scheduler = args
        .scheduler
        .or(config.scheduler.clone())
        .context("no scheduler: pass --scheduler URL or set `scheduler` in the config")?;
    let data = args
        .data
        .or(config.data.clone())
        .context("no data directory: pass --data DIR or set `data` in the config")?;
    let settings = WorkerSettings {
        config,
        scheduler,
        data,
        corral_binary: std::env::current_exe().context("locating the corral binary")?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("corral-worker")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let worker = Worker::start(settings).await?;
        let shutdown = CancellationToken::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            super::server::shutdown_signal().await;
            trigger.cancel();
        });
        worker.run(shutdown).await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
/// Options of `corral bench staging`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Directories under the input root.
    #[arg(long, default_value_t = 100)]
    dirs: usize,
    /// Files per directory (dirs × files = the input root's size).
    #[arg(long, default_value_t = 100)]
    files_per_dir: usize,
    /// Bytes per file.
    #[arg(long, default_value_t = 256)]
    file_size: usize,
    /// Repetitions; medians are reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

/// Stages an input root cold, from local blobs, and warm, and prints the
/// medians.
pub fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let options = corral_worker::bench::StagingOptions {
        dirs: args.dirs,
        files_per_dir: args.files_per_dir,
        file_size: args.file_size,
        runs: args.runs,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(corral_worker::bench::measure(&options))?;
    println!(
        "staging an input root of {} files ({} B each), median of {} runs:",
        report.files, args.file_size, args.runs
    );
    println!(
        "  cold  (empty local CAS, fetched from loopback CAS): {:>9.1} ms",
        ms(report.cold)
    );
    println!(
        "  local (blobs local, tree new):                      {:>9.1} ms",
        ms(report.local)
    );
    println!(
        "  warm  (same input root staged before):              {:>9.3} ms",
        ms(report.warm)
    );
    Ok(())
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
