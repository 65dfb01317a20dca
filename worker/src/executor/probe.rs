//! What the steps of one run note for the metrics layer ([`super::Metered`])
//! without a parameter threaded through every call: a task-local record
//! the layer installs around the run it measures.
//!
//! A step notes into the record of the run it belongs to (a staging, a
//! pull, a capture, an upload run inside the run's own task); outside a
//! measured run (a benchmark, `corral runner exec --action`) noting does
//! nothing. Steps only add numbers here: nothing reads the record but the
//! layer, after the run.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

tokio::task_local! {
    static PROBE: Arc<Probe>;
}

/// A step of a run timed by the step itself, finer than the stages the
/// executor reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Pulling the action's `container-image`.
    ImagePull,
    /// Staging the input root (tree fetch, blobs made local, links).
    Staging,
    /// Capturing outputs from the overlay and hashing them.
    OutputCapture,
    /// Uploading what the remote CAS lacks.
    Upload,
}

/// The numbers one run's steps noted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Noted {
    /// Time per step, summed if a step ran more than once.
    pub steps: Vec<(Step, Duration)>,
    /// Bytes fetched from the remote CAS into the local one.
    pub fetched_bytes: u64,
    /// Bytes uploaded to the remote CAS.
    pub uploaded_bytes: u64,
    /// Input blobs the local CAS already held.
    pub local_hits: u64,
    /// Input blobs it had to fetch.
    pub local_misses: u64,
}

/// The record one measured run fills.
#[derive(Debug, Default)]
pub struct Probe {
    noted: Mutex<Noted>,
}

impl Probe {
    /// What was noted so far.
    pub fn noted(&self) -> Noted {
        self.noted.lock().map(|n| n.clone()).unwrap_or_default()
    }
}

/// Runs `run` with `probe` as the record its steps note into.
pub async fn measured<F: Future>(probe: Arc<Probe>, run: F) -> F::Output {
    PROBE.scope(probe, run).await
}

/// Adds to the current run's record, if this is a measured run.
pub fn note(add: impl FnOnce(&mut Noted)) {
    let _ = PROBE.try_with(|p| {
        if let Ok(mut noted) = p.noted.lock() {
            add(&mut noted);
        }
    });
}

/// Runs `step` and notes how long it took.
pub async fn timed<F: Future>(which: Step, step: F) -> F::Output {
    let started = Instant::now();
    let out = step.await;
    let took = started.elapsed();
    note(|n| match n.steps.iter_mut().find(|(s, _)| *s == which) {
        Some((_, total)) => *total += took,
        None => n.steps.push((which, took)),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn notes_reach_only_the_measured_run() {
        note(|n| n.fetched_bytes += 1);
        let probe = Arc::new(Probe::default());
        measured(probe.clone(), async {
            note(|n| n.fetched_bytes += 10);
            timed(Step::Upload, async { note(|n| n.uploaded_bytes += 3) }).await;
            timed(Step::Upload, async {}).await;
        })
        .await;
        let noted = probe.noted();
        assert_eq!(noted.fetched_bytes, 10);
        assert_eq!(noted.uploaded_bytes, 3);
        assert_eq!(noted.steps.len(), 1);
        assert_eq!(noted.steps[0].0, Step::Upload);
    }
}
