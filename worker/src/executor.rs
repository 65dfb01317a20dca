//! The worker's executor: what turns one assignment into an
//! `ExecuteResponse`, behind one small trait so that its concerns stack as
//! layers and the scheduler session can be tested without a runner.
//!
//! The stack `daemon` builds, outermost first:
//!
//! * [`Timestamped`]: the worker's name, the queued, worker start and
//!   completion timestamps, and each phase's start and end, taken from
//!   the progress the layers below report.
//! * [`Metered`]: time per phase, bytes moved, local CAS hits, sandbox
//!   cost and limits hit, for `/metrics` (when metrics are on).
//! * [`Cancellable`]: a scheduler's `Cancel` drops the run below it (which
//!   closes the runner call, and the runner kills the container) and
//!   answers CANCELLED.
//! * [`LocalExecutor`]: the work itself, in separate steps: inputs (the
//!   image pull and the input root's staging, at once;
//!   [`crate::inputs`]), the run plan ([`crate::plan`]), the run through
//!   the runner protocol ([`crate::sandbox`]), capture and upload
//!   ([`crate::outputs`]).

mod cancellable;
#[cfg(test)]
pub(crate) mod fakes;
mod local;
mod metrics;
pub(crate) mod probe;
mod timestamped;

pub use cancellable::Cancellable;
pub use local::{LocalExecutor, LocalOptions};
pub use metrics::{Metered, WorkerMetrics};
pub use timestamped::Timestamped;

use corral_proto::reapi;
use corral_proto::worker::v1::{Assignment, Stage};
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::status::to_status;

/// Hears each stage of an assignment as it starts.
pub type Progress<'a> = dyn Fn(Stage) + Send + Sync + 'a;

/// Runs assignments. Never fails: every failure is a status in the
/// response, as the worker protocol reports it.
pub trait ActionExecutor: Send + Sync {
    /// Runs `assignment` to its end, or until `cancel` fires; `progress`
    /// hears each stage as it starts.
    fn execute<'a>(
        &'a self,
        assignment: &'a Assignment,
        cancel: &'a CancellationToken,
        progress: &'a Progress<'a>,
    ) -> BoxFuture<'a, reapi::ExecuteResponse>;

    /// The `container-image` values whose images this executor holds, for
    /// the scheduler, which prefers workers that hold an action's image.
    fn cached_images(&self) -> Vec<String> {
        Vec::new()
    }
}

/// The response for an assignment that failed before it had a result.
pub fn failed(error: &Error) -> reapi::ExecuteResponse {
    reapi::ExecuteResponse {
        status: Some(to_status(error)),
        message: error.to_string(),
        ..Default::default()
    }
}
