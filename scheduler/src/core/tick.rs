//! Everything that happens because time passed: lost workers, keepalives
//! both ways, action timeouts, unsatisfiable requests, retention.

use std::sync::Arc;
use std::time::Duration;

use corral_proto::tonic::Code;
use corral_proto::worker::v1 as wire;

use super::{failure, message, Core, JobState};
use crate::platform::explain_unsatisfiable;
use crate::queue::{ClassId, JobId};

impl Core {
    /// Applies every time-driven rule as of `now`.
    pub fn tick(&mut self, now: Duration) {
        let c = &self.config;
        let worker_timeout = Duration::from_millis(c.worker_timeout_ms);
        let worker_keepalive = Duration::from_millis(c.worker_keepalive_ms);
        let client_keepalive = Duration::from_millis(c.client_keepalive_ms);
        let retention = Duration::from_millis(c.completed_retention_ms);
        let max_completed = c.max_completed_operations;

        let mut silent: Vec<_> = self
            .workers
            .values()
            .filter(|w| now.saturating_sub(w.last_heard) >= worker_timeout)
            .map(|w| w.id)
            .collect();
        silent.sort_unstable();
        for wid in silent {
            let reason = format!("silent for {} ms", worker_timeout.as_millis());
            self.worker_lost(wid, &reason, now);
        }
        for w in self.workers.values_mut() {
            if now.saturating_sub(w.last_sent) >= worker_keepalive {
                w.send(
                    message(wire::scheduler_message::Kind::KeepAlive(wire::KeepAlive {})),
                    now,
                );
            }
        }
        self.expire_running(now);
        self.fail_unsatisfiable(now);
        self.ops.keepalive(now, client_keepalive);
        self.ops.evict(now, retention, max_completed);
        self.collect_classes();
    }

    /// Actions running past their timeout plus the grace the worker gets to
    /// enforce it itself: complete with DEADLINE_EXCEEDED and stop them.
    fn expire_running(&mut self, now: Duration) {
        let grace = Duration::from_millis(self.config.timeout_grace_ms);
        let mut late: Vec<(JobId, Duration)> = Vec::new();
        for w in self.workers.values() {
            for &jid in w.running.values() {
                if let Some(job) = self.jobs.get(&jid) {
                    if let JobState::Running { started, .. } = job.state {
                        if now.saturating_sub(started) >= job.timeout + grace {
                            late.push((jid, job.timeout));
                        }
                    }
                }
            }
        }
        late.sort_unstable();
        for (jid, timeout) in late {
            let msg = format!(
                "the action exceeded its timeout of {} s and its worker did not stop it",
                timeout.as_secs_f64()
            );
            let waiters = self
                .jobs
                .get(&jid)
                .map(|j| j.waiters.clone())
                .unwrap_or_default();
            let response =
                Arc::new(self.observe_finished(jid, failure(Code::DeadlineExceeded, msg), now));
            for name in &waiters {
                self.ops.complete(name, response.clone(), now);
            }
            if let Some(job) = self.jobs.get_mut(&jid) {
                job.waiters.clear();
            }
            self.abandon(jid, "timeout", now);
        }
    }

    /// Fails queued actions that no connected or recently seen worker could
    /// ever run, once they have waited the grace period.
    fn fail_unsatisfiable(&mut self, now: Duration) {
        let memory = Duration::from_millis(self.config.lost_worker_memory_ms);
        let grace = Duration::from_millis(self.config.unsatisfiable_grace_ms);
        while self
            .lost
            .front()
            .is_some_and(|(at, _, _)| now.saturating_sub(*at) >= memory)
        {
            self.lost.pop_front();
        }
        let mut doomed = Vec::new();
        for (&cid, class) in self.classes.iter_mut() {
            if class.queued == 0 {
                class.unmatched_since = None;
                continue;
            }
            let possible = self
                .workers
                .values_mut()
                .any(|w| w.can_ever_run(cid, &class.reqs))
                || self
                    .lost
                    .iter()
                    .any(|(_, _, o)| o.satisfies_all(&class.reqs));
            if possible {
                class.unmatched_since = None;
                continue;
            }
            let since = *class.unmatched_since.get_or_insert(now);
            if now.saturating_sub(since) >= grace {
                let offers = self
                    .workers
                    .values()
                    .map(|w| &w.offer)
                    .chain(self.lost.iter().map(|(_, _, o)| o));
                doomed.push((cid, explain_unsatisfiable(&class.reqs, offers)));
            }
        }
        doomed.sort();
        for (cid, msg) in doomed {
            let mut jobs: Vec<JobId> = self
                .jobs
                .iter()
                .filter(|(_, j)| j.class == cid && j.state == JobState::Queued)
                .map(|(&id, _)| id)
                .collect();
            jobs.sort_unstable();
            tracing::warn!(jobs = jobs.len(), reason = %msg, "failing unsatisfiable actions");
            for jid in jobs {
                if let Some(c) = self.classes.get_mut(&cid) {
                    c.queued = c.queued.saturating_sub(1);
                }
                self.finish(jid, failure(Code::FailedPrecondition, msg.clone()), now);
            }
        }
    }

    /// Starts the grace period of a class no worker (connected or recently
    /// seen) could ever run, so it is counted from submission.
    pub(super) fn note_unmatched(&mut self, cid: ClassId, now: Duration) {
        let Some(class) = self.classes.get_mut(&cid) else {
            return;
        };
        if class.queued == 0 || class.unmatched_since.is_some() {
            return;
        }
        let possible = self
            .workers
            .values_mut()
            .any(|w| w.can_ever_run(cid, &class.reqs))
            || self
                .lost
                .iter()
                .any(|(_, _, o)| o.satisfies_all(&class.reqs));
        if !possible {
            class.unmatched_since = Some(now);
        }
    }

    /// Forgets platform classes no job refers to any more.
    fn collect_classes(&mut self) {
        let dead: Vec<_> = self
            .classes
            .iter()
            .filter(|(_, c)| c.jobs == 0)
            .map(|(&id, _)| id)
            .collect();
        if dead.is_empty() {
            return;
        }
        for id in &dead {
            if let Some(c) = self.classes.remove(id) {
                self.class_ids.remove(&c.reqs);
            }
        }
        for w in self.workers.values_mut() {
            w.class_match.retain(|id, _| !dead.contains(id));
        }
    }
}
