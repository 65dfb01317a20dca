//! The layer that makes a scheduler's `Cancel` end an assignment at once.
//!
//! Dropping the inner run is the whole mechanism: the dropped runner call
//! closes its gRPC stream, the runner kills the container, and the build
//! directory's guard removes what the run left. The answer is CANCELLED;
//! the scheduler discards it anyway, but the slot is free only once it
//! arrives.

use corral_proto::reapi;
use corral_proto::worker::v1::Assignment;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::{failed, ActionExecutor, Progress};
use crate::error::Error;

/// Stops the inner executor when the assignment is cancelled.
pub struct Cancellable<E> {
    inner: E,
}

impl<E> Cancellable<E> {
    pub fn new(inner: E) -> Self {
        Cancellable { inner }
    }
}

impl<E: ActionExecutor> ActionExecutor for Cancellable<E> {
    fn execute<'a>(
        &'a self,
        assignment: &'a Assignment,
        cancel: &'a CancellationToken,
        progress: &'a Progress<'a>,
    ) -> BoxFuture<'a, reapi::ExecuteResponse> {
        Box::pin(async move {
            tokio::select! {
                response = self.inner.execute(assignment, cancel, progress) => response,
                () = cancel.cancelled() => failed(&Error::Cancelled(
                    "the scheduler cancelled the action".into(),
                )),
            }
        })
    }

    fn cached_images(&self) -> Vec<String> {
        self.inner.cached_images()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::executor::fakes::{assignment, Scripted};

    /// Never answers; says when its run is dropped.
    struct Endless {
        dropped: Arc<AtomicBool>,
    }

    struct SetOnDrop(Arc<AtomicBool>);

    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    impl ActionExecutor for Endless {
        fn execute<'a>(
            &'a self,
            _: &'a Assignment,
            _: &'a CancellationToken,
            _: &'a Progress<'a>,
        ) -> BoxFuture<'a, reapi::ExecuteResponse> {
            let guard = SetOnDrop(self.dropped.clone());
            Box::pin(async move {
                let _guard = guard;
                std::future::pending().await
            })
        }
    }

    #[tokio::test]
    async fn a_cancel_drops_the_run_and_answers_cancelled() {
        let dropped = Arc::new(AtomicBool::new(false));
        let layer = Cancellable::new(Endless {
            dropped: dropped.clone(),
        });
        let cancel = CancellationToken::new();
        let a = assignment("a1");
        let run = layer.execute(&a, &cancel, &|_| {});
        cancel.cancel();
        let response = run.await;
        assert_eq!(response.status.unwrap().code, tonic::Code::Cancelled as i32);
        assert!(dropped.load(Ordering::SeqCst), "the inner run was dropped");
    }

    #[tokio::test]
    async fn without_a_cancel_the_inner_answer_passes() {
        let layer = Cancellable::new(Scripted::default());
        let response = layer
            .execute(&assignment("a1"), &CancellationToken::new(), &|_| {})
            .await;
        assert_eq!(response.result.unwrap().stdout_digest.unwrap().hash, "a1");
    }
}
