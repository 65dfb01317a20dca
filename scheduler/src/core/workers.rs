//! Worker events: connect, results, drain, loss. A lost worker's running
//! actions are requeued (keeping their place) up to `max_retries` times.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use corral_proto::reapi;
use corral_proto::tonic::Code;
use corral_proto::worker::v1 as wire;
use tokio::sync::mpsc;

use super::{failure, message, ActionKey, Core, JobState};
use crate::error::{Error, Result};
use crate::platform::Offer;
use crate::worker::{Worker, WorkerId};

/// What a worker says about itself when its stream opens.
#[derive(Clone, Debug)]
pub struct Hello {
    pub name: String,
    /// Who the worker's connection proved it to be (never from the hello
    /// message itself).
    pub identity: String,
    /// The pools the farm's policy puts this worker in, by its identity.
    pub pools: Vec<String>,
    pub platform: Option<reapi::Platform>,
    pub slots: u32,
    pub cached_images: Vec<String>,
}

/// What the service needs to write a worker's result into the action
/// cache: the key, and who asked and who ran it (its provenance).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheWrite {
    pub key: ActionKey,
    pub requester: String,
    pub worker: String,
    pub worker_identity: String,
}

impl Core {
    /// Registers a worker. A worker with the same name is replaced (its
    /// work requeued). Returns the session id and the Welcome to send.
    pub fn connect_worker(
        &mut self,
        hello: Hello,
        tx: mpsc::UnboundedSender<wire::SchedulerMessage>,
        now: Duration,
    ) -> Result<WorkerId> {
        if hello.name.trim().is_empty() {
            return Err(Error::invalid("hello.name", "the worker name is empty"));
        }
        if hello.slots == 0 {
            return Err(Error::invalid(
                "hello.slots",
                "a worker needs at least 1 slot",
            ));
        }
        let mut offer = Offer::parse(hello.platform.as_ref(), &self.config)?;
        for pool in &hello.pools {
            offer.join_pool(pool);
        }
        if let Some(old) = self.names.get(&hello.name).copied() {
            self.worker_lost(old, "replaced by a new session of the same name", now);
        }
        let id = self.id();
        let mut worker = Worker {
            id,
            name: hello.name.clone(),
            identity: hello.identity,
            offer,
            slots: hello.slots as usize,
            running: HashMap::new(),
            used: BTreeMap::new(),
            draining: false,
            drained_sent: false,
            held: false,
            images: hello.cached_images.into_iter().collect::<HashSet<_>>(),
            recent_invocations: VecDeque::new(),
            class_match: HashMap::new(),
            last_heard: now,
            last_sent: now,
            tx,
        };
        tracing::info!(worker = %worker.name, slots = worker.slots, offer = %worker.offer, "worker connected");
        worker.send(
            message(wire::scheduler_message::Kind::Welcome(wire::Welcome {
                session_id: id.to_string(),
                keepalive_interval_millis: self.config.worker_keepalive_ms,
            })),
            now,
        );
        self.names.insert(hello.name, id);
        self.workers.insert(id, worker);
        self.dispatch(id, now);
        Ok(id)
    }

    /// Any message from a worker proves it alive.
    pub fn worker_heard(&mut self, wid: WorkerId, now: Duration) {
        if let Some(w) = self.workers.get_mut(&wid) {
            w.last_heard = now;
        }
    }

    /// Whether the worker session is still registered (not replaced or
    /// timed out).
    pub fn worker_alive(&self, wid: WorkerId) -> bool {
        self.workers.contains_key(&wid)
    }

    /// Where and under whose name to cache a worker's result, if the result
    /// belongs to a live, cacheable job this worker holds and is a success
    /// (exit code 0, no error status). Asked before [`Core::worker_result`]
    /// so the service can write the cache first: a client that sees
    /// COMPLETED then finds it.
    pub fn cache_write_for(
        &self,
        wid: WorkerId,
        assignment: &str,
        response: &reapi::ExecuteResponse,
    ) -> Option<CacheWrite> {
        let ok = response.status.as_ref().is_none_or(|s| s.code == 0)
            && response.result.as_ref().is_some_and(|r| r.exit_code == 0);
        if !ok {
            return None;
        }
        let worker = self.workers.get(&wid)?;
        let jid = *worker.running.get(assignment)?;
        let job = self.jobs.get(&jid)?;
        match &job.state {
            JobState::Running { assignment: a, .. } if a == assignment => Some(CacheWrite {
                key: job.key.clone()?,
                requester: job.requester.to_string(),
                worker: worker.name.clone(),
                worker_identity: worker.identity.clone(),
            }),
            _ => None,
        }
    }

    /// A worker reported the outcome of an assignment.
    pub fn worker_result(
        &mut self,
        wid: WorkerId,
        assignment: &str,
        mut response: reapi::ExecuteResponse,
        now: Duration,
    ) -> Result<()> {
        let Some(worker) = self.workers.get_mut(&wid) else {
            return Ok(());
        };
        let Some(jid) = worker.running.remove(assignment) else {
            return Err(Error::Protocol(format!(
                "result for unknown assignment {assignment:?}"
            )));
        };
        let Some(job) = self.jobs.get(&jid) else {
            self.refresh_idle(wid, now);
            self.dispatch(wid, now);
            return Ok(());
        };
        if let Some(class) = self.classes.get(&job.class) {
            worker.release(&class.reqs);
        }
        let capped = self.queue.at_limit(&job.share);
        self.queue.finished(&job.share, job.invocation());
        match &job.state {
            JobState::Running { .. } => {
                response.cached_result = false;
                self.finish(jid, response, now);
            }
            JobState::Abandoned { .. } => self.drop_job(jid),
            JobState::Queued => {}
        }
        self.dispatch(wid, now);
        if capped {
            // The tenant's waiting actions may run anywhere now, not only
            // on the worker this one left.
            self.dispatch_idle(now);
        }
        Ok(())
    }

    /// The worker asks to finish what it runs and take nothing new.
    pub fn worker_drain(&mut self, wid: WorkerId, now: Duration) {
        if let Some(w) = self.workers.get_mut(&wid) {
            tracing::info!(worker = %w.name, "worker draining");
            w.draining = true;
        }
        self.refresh_idle(wid, now);
    }

    /// An operator asks the worker named `name` to drain.
    pub fn drain_by_name(&mut self, name: &str, reason: &str, now: Duration) -> Result<()> {
        let wid = *self
            .names
            .get(name)
            .ok_or_else(|| Error::NotFound(format!("no worker named {name:?} is connected")))?;
        if let Some(w) = self.workers.get_mut(&wid) {
            w.send(
                message(wire::scheduler_message::Kind::Drain(wire::Drain {
                    reason: reason.to_string(),
                })),
                now,
            );
        }
        self.worker_drain(wid, now);
        Ok(())
    }

    /// The worker's cached images changed.
    pub fn worker_images(&mut self, wid: WorkerId, images: Vec<String>) {
        if let Some(w) = self.workers.get_mut(&wid) {
            w.images = images.into_iter().collect();
        }
    }

    /// The worker's stream ended or went silent: requeue its work.
    pub fn worker_lost(&mut self, wid: WorkerId, reason: &str, now: Duration) {
        let Some(worker) = self.workers.remove(&wid) else {
            return;
        };
        self.idle.remove(&wid);
        if self.names.get(&worker.name) == Some(&wid) {
            self.names.remove(&worker.name);
        }
        tracing::warn!(worker = %worker.name, reason, running = worker.running.len(), "worker lost");
        self.lost
            .push_back((now, worker.name.clone(), worker.offer.clone()));
        let mut running: Vec<_> = worker.running.into_values().collect();
        running.sort_unstable();
        let requeued = !running.is_empty();
        for jid in running {
            let Some(job) = self.jobs.get(&jid) else {
                continue;
            };
            self.queue.finished(&job.share, job.invocation());
            match job.state {
                JobState::Abandoned { .. } => self.drop_job(jid),
                JobState::Queued => {}
                JobState::Running { .. } if job.attempts > self.config.max_retries => {
                    let msg = format!(
                        "the action was lost with its worker {} times (last: worker {}: {}); giving up after {} retries",
                        job.attempts, worker.name, reason, self.config.max_retries
                    );
                    self.finish(jid, failure(Code::Unavailable, msg), now);
                }
                JobState::Running { .. } => {
                    tracing::info!(
                        job = jid,
                        attempt = job.attempts,
                        "requeueing action of lost worker"
                    );
                    self.observer.retried();
                    self.place(jid, now);
                }
            }
        }
        if requeued {
            // Tenants capped by what this worker ran may start elsewhere.
            self.dispatch_idle(now);
        }
    }
}
