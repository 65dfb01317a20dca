//! Placing jobs on workers: direct placement of new work on the best idle
//! worker, and pulling from the queue when a worker frees a slot.

use std::time::Duration;

use corral_proto::prost::Message;
use corral_proto::reapi;
use corral_proto::reapi::execution_stage::Value as Stage;
use corral_proto::worker::v1 as wire;

use super::{message, Core, JobState};
use crate::queue::{JobId, Verdict};
use crate::worker::WorkerId;

/// How many matching idle workers a new action is compared across before
/// the best of them is taken.
const PLACEMENT_CANDIDATES: usize = 64;

impl Core {
    /// Runs a job that is not running: on the best idle worker that can take
    /// it now, else into the queue.
    pub(super) fn place(&mut self, jid: JobId, now: Duration) {
        let Some(job) = self.jobs.get(&jid) else {
            return;
        };
        let Some(class) = self.classes.get(&job.class) else {
            return;
        };
        if self.queue.at_limit(&job.share) {
            // The tenant runs as many actions as its quota allows.
            self.enqueue(jid);
            return;
        }
        let image = class.reqs.image();
        let invocation = job.invocation();
        let want = (u8::from(image.is_some()), u8::from(!invocation.is_empty()));
        let mut best: Option<((u8, u8, usize), WorkerId)> = None;
        let mut candidates = 0;
        for &wid in &self.idle {
            let Some(w) = self.workers.get_mut(&wid) else {
                continue;
            };
            if !w.can_ever_run(job.class, &class.reqs) || !w.fits(&class.reqs) {
                continue;
            }
            let score = w.affinity(image, invocation);
            // Higher score wins; on a tie the lower id (first seen) wins.
            if best.as_ref().is_none_or(|(s, _)| score > *s) {
                best = Some((score, wid));
            }
            // A wholly free worker with every affinity wanted cannot be
            // beaten; and a thousand idle workers must not make each new
            // action cost a thousand checks.
            candidates += 1;
            let perfect = (score.0, score.1) == want && score.2 == w.slots;
            if perfect || candidates >= PLACEMENT_CANDIDATES {
                break;
            }
        }
        match best {
            Some((_, wid)) => self.assign(jid, wid, now),
            None => self.enqueue(jid),
        }
    }

    /// A more urgent caller joined a queued job: move it to that priority
    /// (its old entry goes stale), keeping its place by `seq`.
    pub(super) fn raise_priority(&mut self, jid: JobId, priority: i32) {
        let Some(job) = self.jobs.get_mut(&jid) else {
            return;
        };
        if job.state != JobState::Queued || priority >= job.priority {
            return;
        }
        job.priority = priority;
        queue_entry(&mut self.queue, job, jid);
    }

    fn enqueue(&mut self, jid: JobId) {
        let Some(job) = self.jobs.get_mut(&jid) else {
            return;
        };
        job.state = JobState::Queued;
        queue_entry(&mut self.queue, job, jid);
        if let Some(c) = self.classes.get_mut(&job.class) {
            c.queued += 1;
        }
    }

    /// Gives a worker queued work until it is full or nothing fits.
    pub(super) fn dispatch(&mut self, wid: WorkerId, now: Duration) {
        loop {
            let Some(worker) = self.workers.get_mut(&wid) else {
                return;
            };
            if !worker.accepting() {
                break;
            }
            let jobs = &self.jobs;
            let classes = &self.classes;
            let picked = self.queue.pop(|priority, class, jid| {
                match jobs.get(&jid) {
                    Some(job) if job.state == JobState::Queued && job.priority == priority => {}
                    _ => return Verdict::Stale,
                }
                let Some(c) = classes.get(&class) else {
                    return Verdict::Stale;
                };
                if worker.can_ever_run(class, &c.reqs) && worker.fits(&c.reqs) {
                    Verdict::Take
                } else {
                    Verdict::Skip
                }
            });
            let Some(jid) = picked else {
                break;
            };
            if let Some(c) = self
                .jobs
                .get(&jid)
                .and_then(|j| self.classes.get_mut(&j.class))
            {
                c.queued = c.queued.saturating_sub(1);
            }
            self.assign(jid, wid, now);
        }
        self.refresh_idle(wid, now);
    }

    /// Lets every idle worker pull from the queue (after a tenant's cap on
    /// running actions lifted), stopping once the queue is empty.
    pub(super) fn dispatch_idle(&mut self, now: Duration) {
        let idle: Vec<WorkerId> = self.idle.iter().copied().collect();
        for wid in idle {
            if self.queue.is_empty() {
                break;
            }
            self.dispatch(wid, now);
        }
    }

    /// Starts `jid` on `wid`.
    fn assign(&mut self, jid: JobId, wid: WorkerId, now: Duration) {
        let (Some(job), Some(worker)) = (self.jobs.get_mut(&jid), self.workers.get_mut(&wid))
        else {
            return;
        };
        let Some(class) = self.classes.get(&job.class) else {
            return;
        };
        job.attempts += 1;
        let assignment_id = format!("{jid}.{}", job.attempts);
        job.queue_permit = None;
        job.state = JobState::Running {
            worker: wid,
            assignment: assignment_id.clone(),
            started: now,
        };
        worker.running.insert(assignment_id.clone(), jid);
        worker.consume(&class.reqs);
        worker.ran_invocation(job.invocation());
        self.queue.started(&job.share, job.invocation());
        let queued = now.saturating_sub(job.enqueued_at);
        self.observer.started(queued);
        let assignment = wire::Assignment {
            assignment_id: assignment_id.clone(),
            instance_name: job.instance_name.clone(),
            action_digest: Some(job.action_digest.clone()),
            digest_function: job.digest_function,
            // Encoded by `submit` from decoded messages, so decoding cannot
            // fail; `ok()` only avoids a panic path.
            action: reapi::Action::decode(job.action.as_slice()).ok(),
            command: reapi::Command::decode(job.command.as_slice()).ok(),
            timeout_millis: u64::try_from(job.timeout.as_millis()).unwrap_or(u64::MAX),
            request_metadata: Some(job.metadata.as_deref().cloned().unwrap_or_default()),
            priority: job.priority,
            attempt: job.attempts,
            queued_millis: u64::try_from(queued.as_millis()).unwrap_or(u64::MAX),
            rootfs: self.config.rootfs_for(&job.instance_name).to_wire() as i32,
            hostname: self.config.hostname_for(&job.instance_name).to_string(),
        };
        tracing::debug!(worker = %worker.name, assignment = %assignment_id, "assigned");
        worker.send(
            message(wire::scheduler_message::Kind::Assignment(assignment)),
            now,
        );
        for name in &job.waiters {
            self.ops.set_stage(name, Stage::Executing, now);
        }
        self.assignments += 1;
        self.refresh_idle(wid, now);
    }

    /// Keeps the idle set in step with a worker's slots and drain state, and
    /// says `Drained` once a draining worker runs nothing.
    pub(super) fn refresh_idle(&mut self, wid: WorkerId, now: Duration) {
        let Some(w) = self.workers.get_mut(&wid) else {
            self.idle.remove(&wid);
            return;
        };
        if w.accepting() {
            self.idle.insert(wid);
        } else {
            self.idle.remove(&wid);
        }
        if w.draining && w.running.is_empty() && !w.drained_sent {
            w.drained_sent = true;
            tracing::info!(worker = %w.name, "drained");
            w.send(
                message(wire::scheduler_message::Kind::Drained(wire::Drained {})),
                now,
            );
        }
    }
}

/// Puts `job` in the fair queue at its priority, keeping its place by `seq`.
fn queue_entry(queue: &mut crate::queue::FairQueue, job: &super::Job, jid: JobId) {
    queue.push(
        job.priority,
        &job.share,
        job.invocation(),
        job.class,
        job.seq,
        jid,
    );
}
