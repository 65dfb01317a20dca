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

use std::time::{Duration, Instant};

use corral_cas::DigestFunction;

use crate::error::Result;
use crate::localcas::{LocalCas, LocalCasOptions};
use crate::remote::RemoteCas;
use crate::stage::{Stager, StagerOptions};
use crate::testkit::{upload_wide_tree, LoopbackCas};
use crate::validate::SymlinkPolicy;

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
pub async fn measure(options: &StagingOptions) -> Result<StagingReport> {
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
        let work = tempfile::tempdir().map_err(|e| crate::Error::io("creating a temp dir", e))?;
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
