//! The layer that records when things happened: the worker's name, when
//! the action was queued, when the worker started and finished it, and
//! when each phase started and ended.
//!
//! Phases are read from the progress the layers below report, so the
//! layer that does the work only says which stage it enters; a phase ends
//! where the next one starts, the last one when the inner executor
//! returns. What the inner executor put in the metadata (auxiliary
//! records) is kept.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use corral_proto::reapi;
use corral_proto::worker::v1::{Assignment, Stage};
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::{ActionExecutor, Progress};
use crate::clock::{timestamp, Clock};

/// Records ExecutedActionMetadata around an inner executor.
pub struct Timestamped<E> {
    inner: E,
    worker: String,
    clock: Arc<dyn Clock>,
}

impl<E> Timestamped<E> {
    /// `worker` is the name the metadata gives.
    pub fn new(inner: E, worker: impl Into<String>, clock: Arc<dyn Clock>) -> Self {
        Timestamped {
            inner,
            worker: worker.into(),
            clock,
        }
    }
}

impl<E: ActionExecutor> ActionExecutor for Timestamped<E> {
    fn execute<'a>(
        &'a self,
        assignment: &'a Assignment,
        cancel: &'a CancellationToken,
        progress: &'a Progress<'a>,
    ) -> BoxFuture<'a, reapi::ExecuteResponse> {
        Box::pin(async move {
            let started = self.clock.now();
            let stages: Mutex<Vec<(Stage, SystemTime)>> = Mutex::new(Vec::new());
            let noting = |stage: Stage| {
                if let Ok(mut seen) = stages.lock() {
                    seen.push((stage, self.clock.now()));
                }
                progress(stage);
            };
            let mut response = self.inner.execute(assignment, cancel, &noting).await;
            let completed = self.clock.now();
            let stages = stages.into_inner().unwrap_or_else(|p| p.into_inner());
            if let Some(result) = response.result.as_mut() {
                let meta = result
                    .execution_metadata
                    .get_or_insert_with(Default::default);
                meta.worker = self.worker.clone();
                meta.queued_timestamp = started
                    .checked_sub(Duration::from_millis(assignment.queued_millis))
                    .map(timestamp);
                meta.worker_start_timestamp = Some(timestamp(started));
                meta.worker_completed_timestamp = Some(timestamp(completed));
                stamp_phases(meta, &stages, completed);
            }
            response
        })
    }

    fn cached_images(&self) -> Vec<String> {
        self.inner.cached_images()
    }
}

/// Each phase starts when its stage is first reported and ends when the
/// next stage starts (or at `end`).
fn stamp_phases(
    meta: &mut reapi::ExecutedActionMetadata,
    stages: &[(Stage, SystemTime)],
    end: SystemTime,
) {
    for (i, (stage, start)) in stages.iter().enumerate() {
        let stop = stages.get(i + 1).map_or(end, |(_, next)| *next);
        let (first, last) = match stage {
            Stage::FetchingInputs => (
                &mut meta.input_fetch_start_timestamp,
                &mut meta.input_fetch_completed_timestamp,
            ),
            Stage::Running => (
                &mut meta.execution_start_timestamp,
                &mut meta.execution_completed_timestamp,
            ),
            Stage::UploadingOutputs => (
                &mut meta.output_upload_start_timestamp,
                &mut meta.output_upload_completed_timestamp,
            ),
            Stage::Unspecified => continue,
        };
        first.get_or_insert_with(|| timestamp(*start));
        *last = Some(timestamp(stop));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::failed;
    use crate::executor::fakes::{assignment, SteppingClock};
    use crate::Error;
    use corral_proto::protobuf::{Any, Timestamp};

    /// Reports the three stages and answers with a result carrying one
    /// auxiliary record.
    struct Staged;

    impl ActionExecutor for Staged {
        fn execute<'a>(
            &'a self,
            _: &'a Assignment,
            _: &'a CancellationToken,
            progress: &'a Progress<'a>,
        ) -> BoxFuture<'a, reapi::ExecuteResponse> {
            Box::pin(async move {
                for stage in [
                    Stage::FetchingInputs,
                    Stage::Running,
                    Stage::UploadingOutputs,
                ] {
                    progress(stage);
                }
                let meta = reapi::ExecutedActionMetadata {
                    auxiliary_metadata: vec![Any {
                        type_url: "type.googleapis.com/x".into(),
                        value: vec![1],
                    }],
                    ..Default::default()
                };
                reapi::ExecuteResponse {
                    result: Some(reapi::ActionResult {
                        execution_metadata: Some(meta),
                        ..Default::default()
                    }),
                    ..Default::default()
                }
            })
        }
    }

    fn at(seconds: i64) -> Option<Timestamp> {
        Some(Timestamp { seconds, nanos: 0 })
    }

    #[tokio::test]
    async fn every_phase_is_stamped_from_the_progress_below() {
        // The clock says 1000, 1001, 1002… at each reading.
        let clock = Arc::new(SteppingClock::new(1000));
        let layer = Timestamped::new(Staged, "w1", clock);
        let mut a = assignment("a1");
        a.queued_millis = 5_000;
        let heard = Mutex::new(Vec::new());
        let progress = |s: Stage| heard.lock().unwrap().push(s);
        let response = layer
            .execute(&a, &CancellationToken::new(), &progress)
            .await;
        let meta = response.result.unwrap().execution_metadata.unwrap();
        assert_eq!(meta.worker, "w1");
        assert_eq!(meta.queued_timestamp, at(995));
        assert_eq!(meta.worker_start_timestamp, at(1000));
        assert_eq!(meta.input_fetch_start_timestamp, at(1001));
        assert_eq!(meta.input_fetch_completed_timestamp, at(1002));
        assert_eq!(meta.execution_start_timestamp, at(1002));
        assert_eq!(meta.execution_completed_timestamp, at(1003));
        assert_eq!(meta.output_upload_start_timestamp, at(1003));
        assert_eq!(meta.output_upload_completed_timestamp, at(1004));
        assert_eq!(meta.worker_completed_timestamp, at(1004));
        assert_eq!(meta.auxiliary_metadata.len(), 1, "the inner record stays");
        // The stages still reach the session.
        assert_eq!(
            *heard.lock().unwrap(),
            [
                Stage::FetchingInputs,
                Stage::Running,
                Stage::UploadingOutputs
            ]
        );
    }

    struct Failing;

    impl ActionExecutor for Failing {
        fn execute<'a>(
            &'a self,
            _: &'a Assignment,
            _: &'a CancellationToken,
            progress: &'a Progress<'a>,
        ) -> BoxFuture<'a, reapi::ExecuteResponse> {
            Box::pin(async move {
                progress(Stage::FetchingInputs);
                failed(&Error::MissingBlob("abc/1".into()))
            })
        }
    }

    #[tokio::test]
    async fn a_failure_without_a_result_is_passed_on_as_it_is() {
        let layer = Timestamped::new(Failing, "w1", Arc::new(SteppingClock::new(0)));
        let response = layer
            .execute(&assignment("a1"), &CancellationToken::new(), &|_| {})
            .await;
        assert!(response.result.is_none());
        assert_eq!(
            response.status.unwrap().code,
            tonic::Code::FailedPrecondition as i32
        );
    }
}
