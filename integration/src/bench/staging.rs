//! `corral bench staging`: how long staging a large input root takes,
//! cold and warm, against a real CAS on loopback.
//!
//! Three cases, each timed from "stage this root digest" to "directory
//! ready for the runner":
//! * cold: empty local CAS; every Directory and file is fetched from the
//!   remote CAS, stored locally, and the tree is built with hardlinks;
//! * local: blobs already in the local CAS, tree not staged (a new input
//!   root made of known files);
//! * warm: the same root staged before; the staged tree is reused.

use crate::bench::stats::ms;
use std::time::{Duration, Instant};

use anyhow::Context;
use corral_cas::DigestFunction;
use corral_worker::stage::{Stager, StagerOptions};
use corral_worker::testkit::{upload_wide_tree, LoopbackCas};
use corral_worker::validate::SymlinkPolicy;
use corral_worker::{LocalCas, LocalCasOptions, RemoteCas};

/// Options of `corral bench staging`.
#[derive(Debug, clap::Args)]
pub struct Args {
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
pub fn run(args: Args) -> anyhow::Result<()> {
    let options = StagingOptions {
        dirs: args.dirs,
        files_per_dir: args.files_per_dir,
        file_size: args.file_size,
        runs: args.runs,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime.block_on(measure(&options))?;
    println!(
        "staging an input root of {} files ({} B each), median of {} runs:",
        report.files,
        args.file_size,
        options.runs.max(1)
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

/// What to measure.
#[derive(Clone, Debug)]
pub struct StagingOptions {
    /// Directories under the root.
    pub dirs: usize,
    /// Files in each directory.
    pub files_per_dir: usize,
    /// Bytes per file.
    pub file_size: usize,
    /// Repetitions of each case; the median is reported.
    pub runs: usize,
}

/// Median times of the three cases.
#[derive(Clone, Debug)]
pub struct StagingReport {
    pub files: usize,
    pub cold: Duration,
    pub local: Duration,
    pub warm: Duration,
}

/// Runs the three cases in temporary directories.
pub async fn measure(options: &StagingOptions) -> anyhow::Result<StagingReport> {
    let cas = LoopbackCas::start(None).await?;
    let runs = options.runs.max(1);
    let mut cold = Vec::new();
    let mut local = Vec::new();
    let mut warm = Vec::new();
    for run in 0..runs {
        // A fresh tree each run so that "cold" is cold on the remote side too.
        let root = upload_wide_tree(
            &cas,
            options.dirs,
            options.files_per_dir,
            options.file_size,
            run as u64,
        )
        .await?;
        let work = tempfile::tempdir().context("creating a temp dir")?;
        let remote = RemoteCas::connect(&cas.url, "").await?;
        let cas_options = LocalCasOptions {
            max_bytes: 8 << 30,
            max_exec_bytes: 1 << 30,
            parallel_fetches: 8,
        };
        let local_cas = LocalCas::open(&work.path().join("cas"), &cas_options, remote)?;
        let stager = Stager::open(
            local_cas.clone(),
            work.path().join("trees"),
            StagerOptions {
                policy: SymlinkPolicy::default(),
                max_files: 10_000_000,
                owner: None,
            },
        )?;
        let t = Instant::now();
        let staged = stager.stage(DigestFunction::Sha256, root).await?;
        cold.push(t.elapsed());
        drop(staged);

        let t = Instant::now();
        let staged = stager.stage(DigestFunction::Sha256, root).await?;
        warm.push(t.elapsed());
        drop(staged);

        // A second stager over the same local CAS: blobs local, no tree.
        let fresh = Stager::open(
            local_cas,
            work.path().join("trees2"),
            StagerOptions {
                policy: SymlinkPolicy::default(),
                max_files: 10_000_000,
                owner: None,
            },
        )?;
        let t = Instant::now();
        let staged = fresh.stage(DigestFunction::Sha256, root).await?;
        local.push(t.elapsed());
        drop(staged);
    }
    Ok(StagingReport {
        files: options.dirs * options.files_per_dir,
        cold: median(cold),
        local: median(local),
        warm: median(warm),
    })
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}
