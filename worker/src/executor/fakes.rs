//! Stand-ins for the executor's tests and the session's: a clock that
//! steps, and an executor whose behaviour each test scripts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use corral_proto::reapi;
use corral_proto::worker::v1::{Assignment, Stage};
use futures::future::BoxFuture;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{ActionExecutor, Progress};
use crate::clock::Clock;

/// An assignment with an id and an empty action and command.
pub fn assignment(id: &str) -> Assignment {
    Assignment {
        assignment_id: id.to_string(),
        action: Some(reapi::Action::default()),
        command: Some(reapi::Command {
            arguments: vec!["true".into()],
            ..Default::default()
        }),
        timeout_millis: 1_000,
        ..Default::default()
    }
}

/// Reads `start`, `start + 1`, `start + 2`… seconds after the epoch, one
/// step per reading.
pub struct SteppingClock {
    next: AtomicU64,
}

impl SteppingClock {
    pub fn new(start: u64) -> Self {
        SteppingClock {
            next: AtomicU64::new(start),
        }
    }
}

impl Clock for SteppingClock {
    fn now(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(self.next.fetch_add(1, Ordering::SeqCst))
    }
}

/// Runs nothing: reports the running stage, then answers exit code 0 with
/// the assignment id as stdout's hash, or (with `hold`) waits until
/// released or cancelled first.
#[derive(Default)]
pub struct Scripted {
    /// Wait for [`Scripted::release`] before answering.
    pub hold: bool,
    release: Notify,
    /// Ids of the assignments started, in order.
    pub started: Mutex<Vec<String>>,
    /// Ids of the assignments that saw their cancellation.
    pub cancelled: Mutex<Vec<String>>,
    /// What `cached_images` answers.
    pub images: Mutex<Vec<String>>,
}

impl Scripted {
    pub fn holding() -> Self {
        Scripted {
            hold: true,
            ..Default::default()
        }
    }

    /// Lets one held assignment answer.
    pub fn release(&self) {
        self.release.notify_one();
    }
}

impl ActionExecutor for Scripted {
    fn execute<'a>(
        &'a self,
        a: &'a Assignment,
        cancel: &'a CancellationToken,
        progress: &'a Progress<'a>,
    ) -> BoxFuture<'a, reapi::ExecuteResponse> {
        Box::pin(async move {
            if let Ok(mut started) = self.started.lock() {
                started.push(a.assignment_id.clone());
            }
            progress(Stage::Running);
            if self.hold {
                tokio::select! {
                    () = self.release.notified() => {}
                    () = cancel.cancelled() => {
                        if let Ok(mut seen) = self.cancelled.lock() {
                            seen.push(a.assignment_id.clone());
                        }
                        return super::failed(&crate::Error::Cancelled("cancelled".into()));
                    }
                }
            }
            reapi::ExecuteResponse {
                result: Some(reapi::ActionResult {
                    stdout_digest: Some(reapi::Digest {
                        hash: a.assignment_id.clone(),
                        size_bytes: 0,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }
        })
    }

    fn cached_images(&self) -> Vec<String> {
        self.images.lock().map(|i| i.clone()).unwrap_or_default()
    }
}
