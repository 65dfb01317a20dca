//! The core's side of [`crate::view`]: copies of its state for operators,
//! and holding a worker. Nothing here changes a scheduling rule; holding
//! only takes a worker out of the set that is offered work.

use std::collections::BTreeMap;
use std::time::Duration;

use corral_proto::reapi::execution_stage::Value as Stage;

use super::{Core, JobState};
use crate::error::{Error, Result};
use crate::observer::Observer;
use crate::operations::{response_of, stage_of};
use crate::queue::{ClassId, JobId};
use crate::view::{
    names, ActiveView, FarmView, OperationView, QueueView, RunningView, WorkerState, WorkerView,
};

/// Active operations the farm view lists at most (oldest first).
pub const MAX_ACTIVE_LISTED: usize = 500;

impl Core {
    /// What the core tells the people watching it.
    pub fn observer_mut(&mut self) -> &mut Observer {
        &mut self.observer
    }

    /// The non-empty queues by instance name and platform class.
    pub fn queue_views(&self, now: Duration) -> Vec<QueueView> {
        let mut by: BTreeMap<(&str, ClassId), (usize, Duration)> = BTreeMap::new();
        for job in self.jobs.values() {
            if job.state != JobState::Queued {
                continue;
            }
            let entry = by
                .entry((job.instance_name.as_str(), job.class))
                .or_insert((0, job.enqueued_at));
            entry.0 += 1;
            entry.1 = entry.1.min(job.enqueued_at);
        }
        by.into_iter()
            .map(|((instance, class), (queued, oldest))| QueueView {
                instance_name: instance.to_string(),
                platform: self
                    .classes
                    .get(&class)
                    .map(|c| c.reqs.to_string())
                    .unwrap_or_default(),
                queued,
                oldest_wait: now.saturating_sub(oldest),
            })
            .collect()
    }

    /// Queues, workers and the oldest active operations.
    pub fn farm_view(&self, now: Duration) -> FarmView {
        let mut workers: Vec<WorkerView> = self
            .workers
            .values()
            .map(|w| {
                let mut running: Vec<RunningView> = w
                    .running
                    .values()
                    .filter_map(|jid| self.running_view(*jid, now))
                    .collect();
                running.sort_by_key(|r| std::cmp::Reverse(r.running_for));
                let state = if w.held {
                    WorkerState::Held
                } else if w.draining {
                    WorkerState::Draining
                } else if w.running.is_empty() {
                    WorkerState::Idle
                } else {
                    WorkerState::Executing
                };
                let mut images: Vec<String> = w.images.iter().cloned().collect();
                images.sort();
                WorkerView {
                    name: w.name.clone(),
                    platform: w.offer.to_string(),
                    slots: w.slots,
                    running,
                    images,
                    state,
                    silent_for: now.saturating_sub(w.last_heard),
                }
            })
            .collect();
        workers.sort_by(|a, b| a.name.cmp(&b.name));
        let mut active: Vec<ActiveView> = self
            .jobs
            .keys()
            .flat_map(|jid| self.active_views(*jid, now))
            .collect();
        active.sort_by(|a, b| b.age.cmp(&a.age).then_with(|| a.name.cmp(&b.name)));
        active.truncate(MAX_ACTIVE_LISTED);
        FarmView {
            queues: self.queue_views(now),
            workers,
            active,
            stats: self.stats(),
        }
    }

    fn running_view(&self, jid: JobId, now: Duration) -> Option<RunningView> {
        let job = self.jobs.get(&jid)?;
        let running_for = match job.state {
            JobState::Running { started, .. } => now.saturating_sub(started),
            _ => Duration::ZERO,
        };
        Some(RunningView {
            operations: names(&job.waiters),
            instance_name: job.instance_name.clone(),
            action_digest: job.action_digest.clone(),
            digest_function: job.digest_function,
            running_for,
        })
    }

    /// One view per operation waiting on a queued or running job.
    fn active_views(&self, jid: JobId, now: Duration) -> Vec<ActiveView> {
        let Some(job) = self.jobs.get(&jid) else {
            return Vec::new();
        };
        let (stage, worker) = match &job.state {
            JobState::Queued => (Stage::Queued, None),
            JobState::Running { worker, .. } => (
                Stage::Executing,
                self.workers.get(worker).map(|w| w.name.clone()),
            ),
            JobState::Abandoned { .. } => return Vec::new(),
        };
        job.waiters
            .iter()
            .map(|name| ActiveView {
                name: name.to_string(),
                instance_name: job.instance_name.clone(),
                action_digest: job.action_digest.clone(),
                digest_function: job.digest_function,
                stage,
                worker: worker.clone(),
                age: now.saturating_sub(job.enqueued_at),
                invocation: job.invocation().to_string(),
            })
            .collect()
    }

    /// The operation `name`, with what the core knows of its job or, once
    /// done, of its execution.
    pub fn operation_view(&self, name: &str, now: Duration) -> Option<OperationView> {
        let record = self.ops.get(name)?;
        let op = self.ops.snapshot(name)?;
        let active = record.job.and_then(|jid| {
            self.active_views(jid, now)
                .into_iter()
                .find(|a| a.name == name)
        });
        let execution = op.done.then(|| {
            self.observer
                .recent()
                .rev()
                .find(|e| e.operations.iter().any(|o| &**o == name))
                .cloned()
        });
        Some(OperationView {
            name: name.to_string(),
            stage: stage_of(&op).unwrap_or(Stage::Unknown),
            instance_name: record.instance_name.to_string(),
            action_digest: record.action_digest.clone(),
            digest_function: record.digest_function,
            active,
            response: response_of(&op),
            execution: execution.flatten(),
        })
    }

    /// An operator holds (or releases) the worker named `name`.
    pub fn hold_worker(&mut self, name: &str, held: bool, now: Duration) -> Result<()> {
        let wid = *self
            .names
            .get(name)
            .ok_or_else(|| Error::NotFound(format!("no worker named {name:?} is connected")))?;
        if let Some(w) = self.workers.get_mut(&wid) {
            tracing::info!(worker = %w.name, held, "an operator changed the worker's hold");
            w.held = held;
        }
        self.refresh_idle(wid, now);
        if !held {
            self.dispatch(wid, now);
        }
        Ok(())
    }
}
