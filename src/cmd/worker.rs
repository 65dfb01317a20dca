//! `corral worker`, and the `corral bench staging` harness of the worker.

use std::process::ExitCode;

/// Options of `corral worker`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`corral worker` is not built yet")
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
