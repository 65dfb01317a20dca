//! A read-only view of the scheduler for operators (the web pages and the
//! gauges of `/metrics`), and the few operator actions the pages offer:
//! hold a worker (it keeps its connection and finishes what it runs, but
//! gets nothing new) or let it take work again, and cancel an operation.
//!
//! Views are copies taken under the core's lock, so a page never holds it
//! while it renders.

use std::sync::Arc;
use std::time::Duration;

use corral_cas::{BlobStore, RequestContext};
use corral_proto::prost::bytes::Bytes;
use corral_proto::reapi;
use corral_proto::reapi::execution_stage::Value as Stage;
use tokio::sync::mpsc;

use crate::error::Result;
use crate::observer::{Execution, KeptResponse};
use crate::{Scheduler, Stats};

/// One platform queue of one instance name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueView {
    /// The REAPI instance name.
    pub instance_name: String,
    /// The platform requirements of the queue, as matching sees them.
    pub platform: String,
    /// Actions waiting.
    pub queued: usize,
    /// How long the oldest of them has waited.
    pub oldest_wait: Duration,
}

/// What a worker is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerState {
    /// Connected, running nothing.
    Idle,
    /// Running at least one action.
    Executing,
    /// Finishing what it runs before it leaves (it asked, or the scheduler
    /// asked it to).
    Draining,
    /// Held by an operator: connected, finishing what it runs, given
    /// nothing new until released.
    Held,
}

impl WorkerState {
    /// Lower-case name for pages.
    pub fn label(self) -> &'static str {
        match self {
            WorkerState::Idle => "idle",
            WorkerState::Executing => "executing",
            WorkerState::Draining => "draining",
            WorkerState::Held => "drained by an operator",
        }
    }
}

/// An action running on a worker.
#[derive(Clone, Debug)]
pub struct RunningView {
    /// Operations waiting on it.
    pub operations: Vec<String>,
    /// Its instance name.
    pub instance_name: String,
    /// Its Action's digest.
    pub action_digest: reapi::Digest,
    /// The digest function (REAPI enum value).
    pub digest_function: i32,
    /// Time since it started.
    pub running_for: Duration,
}

/// One connected worker.
#[derive(Clone, Debug)]
pub struct WorkerView {
    /// Its name.
    pub name: String,
    /// The platform it offers.
    pub platform: String,
    /// Actions it runs at once.
    pub slots: usize,
    /// What it runs now.
    pub running: Vec<RunningView>,
    /// The `container-image` values it holds.
    pub images: Vec<String>,
    /// What it is doing.
    pub state: WorkerState,
    /// Time since it was last heard from.
    pub silent_for: Duration,
}

/// An operation still queued or running.
#[derive(Clone, Debug)]
pub struct ActiveView {
    /// The operation's name.
    pub name: String,
    /// Its instance name.
    pub instance_name: String,
    /// Its Action's digest.
    pub action_digest: reapi::Digest,
    /// The digest function (REAPI enum value).
    pub digest_function: i32,
    /// QUEUED or EXECUTING.
    pub stage: Stage,
    /// The worker running it.
    pub worker: Option<String>,
    /// Time since it was queued.
    pub age: Duration,
    /// `RequestMetadata.tool_invocation_id`.
    pub invocation: String,
}

/// The whole farm as the farm page shows it.
#[derive(Clone, Debug)]
pub struct FarmView {
    /// Non-empty queues.
    pub queues: Vec<QueueView>,
    /// Connected workers by name.
    pub workers: Vec<WorkerView>,
    /// Operations queued or running, oldest first.
    pub active: Vec<ActiveView>,
    /// Counters.
    pub stats: Stats,
}

/// One operation as its page shows it.
#[derive(Clone, Debug)]
pub struct OperationView {
    /// Its name.
    pub name: String,
    /// Its stage now.
    pub stage: Stage,
    /// The instance name it was requested under.
    pub instance_name: String,
    /// Its Action's digest.
    pub action_digest: reapi::Digest,
    /// The digest function (REAPI enum value).
    pub digest_function: i32,
    /// While queued or running: what the farm page shows of it.
    pub active: Option<ActiveView>,
    /// Once done: the response.
    pub response: Option<reapi::ExecuteResponse>,
    /// Once done, while remembered: the finished execution.
    pub execution: Option<Execution>,
}

impl Scheduler {
    /// Queues, workers and active operations, as of now.
    pub fn farm(&self) -> FarmView {
        let now = self.now();
        self.lock().farm_view(now)
    }

    /// The non-empty queues.
    pub fn queues(&self) -> Vec<QueueView> {
        let now = self.now();
        self.lock().queue_views(now)
    }

    /// The operation named `name`, if the scheduler still knows it.
    pub fn operation_view(&self, name: &str) -> Option<OperationView> {
        let now = self.now();
        self.lock().operation_view(name, now)
    }

    /// Cache hits counted for the invocation `id`.
    pub fn cache_hits(&self, id: &str) -> u64 {
        self.lock().observer_mut().cache_hits(id)
    }

    /// The recently finished executions, newest first.
    pub fn recent_executions(&self) -> Vec<Execution> {
        self.lock().observer_mut().recent().rev().cloned().collect()
    }

    /// Holds the worker `name` (`held`: it finishes what it runs and gets
    /// nothing new, but stays connected) or releases it.
    pub fn hold_worker(&self, name: &str, held: bool) -> Result<()> {
        let now = self.now();
        self.lock().hold_worker(name, held, now)
    }

    /// Cancels an operation, as Operations.CancelOperation does.
    pub fn cancel_operation(&self, name: &str) -> Result<()> {
        let now = self.now();
        self.lock().cancel(name, now)
    }

    /// Links every failed response's message to its action page under
    /// `base` (the pages' external URL), and keeps each failed response in
    /// the CAS (under the action's instance name) so the page still shows
    /// it after the operation is forgotten. Needs a tokio runtime; the
    /// task ends when the scheduler is dropped.
    pub fn link_failures(&self, base: Option<String>) -> tokio::task::JoinHandle<()> {
        let (tx, mut rx) = mpsc::unbounded_channel::<KeptResponse>();
        self.lock().observer_mut().link_failures(base, Some(tx));
        let cas = self.cas().clone();
        tokio::spawn(async move {
            while let Some(kept) = rx.recv().await {
                let ctx = RequestContext::internal(&kept.instance_name, kept.digest.function());
                let bytes = Bytes::from(kept.bytes);
                if let Err(e) = cas.put(&ctx, &kept.digest, bytes).await {
                    tracing::warn!(digest = %kept.digest, error = %e, "could not keep a failed ExecuteResponse");
                }
            }
        })
    }
}

/// Shared between views: an operation name list as strings.
pub(crate) fn names(waiters: &[Arc<str>]) -> Vec<String> {
    waiters.iter().map(|w| w.to_string()).collect()
}
