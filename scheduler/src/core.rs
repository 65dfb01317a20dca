//! The scheduling core: jobs, workers and operations, driven by events and
//! an injected notion of "now". No I/O and no async here: the services
//! translate gRPC into calls on [`Core`], and every time-driven rule runs in
//! [`Core::tick`], so tests can replay any sequence deterministically.
//!
//! Invariant kept after every event: no accepting worker could run any
//! queued job. New jobs therefore go straight to the best idle worker when
//! one matches (and only otherwise into the queue), and a worker that frees
//! a slot pulls from the queue in priority and fair-share order.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use corral_proto::prost::Message;
use corral_proto::reapi;
use corral_proto::reapi::execution_stage::Value as Stage;
use corral_proto::tonic::Code;
use corral_proto::worker::v1 as wire;

use crate::config::SchedulerConfig;
use crate::error::{Error, Result};
use crate::operations::{OpTable, OpWatch};
use crate::platform::{Offer, Requirements};
use crate::queue::{ClassId, FairQueue, JobId};
use crate::status::rpc_status;
use crate::worker::{Worker, WorkerId};

mod dispatch;
mod observe;
mod tick;
mod view;
mod workers;

pub use workers::{CacheWrite, Hello};

/// Identity of an action for deduplication.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ActionKey {
    pub instance_name: String,
    pub digest_function: i32,
    pub hash: String,
    pub size_bytes: i64,
}

/// A validated Execute request, with its Action and Command already read
/// from the CAS.
#[derive(Clone, Debug)]
pub struct Submission {
    pub instance_name: String,
    pub action_digest: reapi::Digest,
    pub digest_function: i32,
    pub action: reapi::Action,
    pub command: reapi::Command,
    pub priority: i32,
    pub metadata: reapi::RequestMetadata,
    /// Who asked, as the connection proved it (for the result's
    /// provenance).
    pub requester: String,
    /// The worker pools the action's tenant may use; `None`: any worker.
    pub pools: Option<Vec<String>>,
    /// The tenant of the instance name, when a tenancy policy knows one.
    pub tenant: Option<String>,
    /// How many of the tenant's actions may run at once (its
    /// `concurrent_executions` quota); `None`: no cap.
    pub max_running: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum JobState {
    Queued,
    Running {
        worker: WorkerId,
        assignment: String,
        started: Duration,
    },
    /// Nobody waits any more (cancelled, timed out); the worker was told to
    /// stop and the job lingers only until its slot comes back.
    Abandoned {
        worker: WorkerId,
        assignment: String,
    },
}

/// One action to run, kept compact: a queue of a hundred thousand holds
/// this per action, so the Action and Command stay in their wire encoding
/// (decoded again for each assignment) and absent metadata costs a pointer.
#[derive(Debug)]
struct Job {
    instance_name: String,
    action_digest: reapi::Digest,
    digest_function: i32,
    priority: i32,
    action: Vec<u8>,
    command: Vec<u8>,
    metadata: Option<Box<reapi::RequestMetadata>>,
    class: ClassId,
    timeout: Duration,
    seq: u64,
    state: JobState,
    attempts: u32,
    enqueued_at: Duration,
    waiters: Vec<Arc<str>>,
    key: Option<ActionKey>,
    /// The first requester of the action (others join it by deduplication).
    requester: Arc<str>,
    /// Whose share of the farm the job counts against: its tenant, or its
    /// instance name when no tenancy policy names a tenant.
    share: Arc<str>,
    /// The tenant's `queued_operations` count this job holds while queued.
    queue_permit: Option<crate::tenancy::QueuePermit>,
}

impl Job {
    fn invocation(&self) -> &str {
        self.metadata
            .as_deref()
            .map_or("", |m| m.tool_invocation_id.as_str())
    }
}

#[derive(Debug)]
struct Class {
    reqs: Requirements,
    /// Jobs of this class that still exist (queued, running or abandoned).
    jobs: usize,
    queued: usize,
    unmatched_since: Option<Duration>,
}

/// Counters for tests, logs and the benchmark.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub queued: usize,
    pub running: usize,
    pub workers: usize,
    pub operations: usize,
    pub assignments: u64,
}

/// An operator's view of one connected worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerInfo {
    pub name: String,
    pub slots: usize,
    /// Slots in use (including cancelled work not yet reported back).
    pub running: usize,
    pub draining: bool,
    /// Time since the worker was last heard from.
    pub silent_for: Duration,
    /// The offered properties, as matching sees them.
    pub offer: String,
}

/// The scheduler's whole state. See the module comment.
#[derive(Debug)]
pub struct Core {
    config: SchedulerConfig,
    ops: OpTable,
    jobs: HashMap<JobId, Job>,
    inflight: HashMap<ActionKey, JobId>,
    classes: HashMap<ClassId, Class>,
    class_ids: HashMap<Requirements, ClassId>,
    queue: FairQueue,
    workers: HashMap<WorkerId, Worker>,
    names: HashMap<String, WorkerId>,
    idle: BTreeSet<WorkerId>,
    lost: VecDeque<(Duration, String, Offer)>,
    next_id: u64,
    assignments: u64,
    /// Metrics and recent executions for operators (crate::observer).
    observer: crate::observer::Observer,
}

impl Core {
    pub fn new(config: SchedulerConfig, prefix: String) -> Self {
        Core {
            config,
            ops: OpTable::new(prefix),
            jobs: HashMap::new(),
            inflight: HashMap::new(),
            classes: HashMap::new(),
            class_ids: HashMap::new(),
            queue: FairQueue::new(),
            workers: HashMap::new(),
            names: HashMap::new(),
            idle: BTreeSet::new(),
            lost: VecDeque::new(),
            next_id: 0,
            assignments: 0,
            observer: Default::default(),
        }
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    pub fn stats(&self) -> Stats {
        let running = self.workers.values().map(|w| w.running.len()).sum();
        Stats {
            queued: self.classes.values().map(|c| c.queued).sum(),
            running,
            workers: self.workers.len(),
            operations: self.ops.len(),
            assignments: self.assignments,
        }
    }

    /// Every connected worker, by name.
    pub fn workers(&self, now: Duration) -> Vec<WorkerInfo> {
        let mut out: Vec<WorkerInfo> = self
            .workers
            .values()
            .map(|w| WorkerInfo {
                name: w.name.clone(),
                slots: w.slots,
                running: w.running.len(),
                draining: w.draining,
                silent_for: now.saturating_sub(w.last_heard),
                offer: w.offer.to_string(),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    // ----- client side -------------------------------------------------

    /// Queues an action (or joins an identical one in flight) and returns
    /// the new operation's name and a watch on it.
    pub fn submit(
        &mut self,
        sub: Submission,
        queue_permit: Option<crate::tenancy::QueuePermit>,
        now: Duration,
    ) -> Result<(Arc<str>, OpWatch)> {
        // `Command.platform` is deprecated in REAPI 2.2 but is all that older
        // clients (Bazel 4) send, so it is the fallback.
        #[allow(deprecated)]
        let command_platform = sub.command.platform.as_ref();
        let platform = sub
            .action
            .platform
            .as_ref()
            .filter(|p| !p.properties.is_empty())
            .or(command_platform);
        let mut reqs = Requirements::parse(platform, &self.config)?;
        if let Some(pools) = &sub.pools {
            reqs.restrict_to_pools(pools);
        }
        let requested = match &sub.action.timeout {
            None => None,
            Some(t) if t.seconds < 0 || t.nanos < 0 => {
                return Err(Error::invalid("action.timeout", "the timeout is negative"));
            }
            Some(t) => Some(Duration::new(t.seconds as u64, t.nanos as u32)),
        };
        let key = (!sub.action.do_not_cache).then(|| ActionKey {
            instance_name: sub.instance_name.clone(),
            digest_function: sub.digest_function,
            hash: sub.action_digest.hash.clone(),
            size_bytes: sub.action_digest.size_bytes,
        });
        if let Some(&jid) = key.as_ref().and_then(|k| self.inflight.get(k)) {
            if let Some(job) = self.jobs.get_mut(&jid) {
                let (name, rx) = self.ops.create(
                    Some(jid),
                    &sub.instance_name,
                    sub.action_digest,
                    sub.digest_function,
                    now,
                );
                job.waiters.push(name.clone());
                if matches!(job.state, JobState::Running { .. }) {
                    self.ops.set_stage(&name, Stage::Executing, now);
                }
                self.raise_priority(jid, sub.priority);
                tracing::debug!(operation = %name, job = jid, "joined identical action in flight");
                self.observer.dedup_hit();
                return Ok((name, rx));
            }
        }
        let class = self.intern(reqs);
        let jid = self.id();
        let (name, rx) = self.ops.create(
            Some(jid),
            &sub.instance_name,
            sub.action_digest.clone(),
            sub.digest_function,
            now,
        );
        if let Some(k) = &key {
            self.inflight.insert(k.clone(), jid);
        }
        let metadata =
            (sub.metadata != reapi::RequestMetadata::default()).then(|| Box::new(sub.metadata));
        let instance_name = sub.instance_name;
        let share: Arc<str> = sub
            .tenant
            .map_or_else(|| Arc::from(instance_name.as_str()), Arc::from);
        self.queue.set_limit(&share, sub.max_running);
        let job = Job {
            timeout: self.config.effective_timeout(requested),
            instance_name: instance_name.clone(),
            action_digest: sub.action_digest,
            digest_function: sub.digest_function,
            priority: sub.priority,
            action: sub.action.encode_to_vec(),
            command: sub.command.encode_to_vec(),
            metadata,
            class,
            seq: jid,
            state: JobState::Queued,
            attempts: 0,
            enqueued_at: now,
            waiters: vec![name.clone()],
            key,
            requester: sub.requester.into(),
            share,
            queue_permit,
        };
        self.jobs.insert(jid, job);
        if let Some(c) = self.classes.get_mut(&class) {
            c.jobs += 1;
        }
        self.place(jid, now);
        self.note_unmatched(class, now);
        Ok((name, rx))
    }

    /// Creates an operation that is complete at once (action cache hit).
    pub fn completed(
        &mut self,
        instance_name: &str,
        action_digest: reapi::Digest,
        digest_function: i32,
        response: reapi::ExecuteResponse,
        now: Duration,
    ) -> (Arc<str>, OpWatch) {
        let (name, watch) =
            self.ops
                .create(None, instance_name, action_digest, digest_function, now);
        self.ops.complete(&name, Arc::new(response), now);
        self.observer.ended_early(crate::observer::Outcome::Cached);
        (name, watch)
    }

    /// The instance name an operation was requested under.
    pub fn operation_instance(&self, name: &str) -> Option<Arc<str>> {
        self.ops.get(name).map(|r| r.instance_name.clone())
    }

    pub fn subscribe(&self, name: &str) -> Option<OpWatch> {
        self.ops.subscribe(name)
    }

    pub fn operation(&self, name: &str) -> Option<corral_proto::longrunning::Operation> {
        self.ops.snapshot(name)
    }

    /// A page of the operations whose instance name `visible` accepts.
    pub fn list_operations(
        &self,
        after: &str,
        limit: usize,
        visible: &dyn Fn(&str) -> bool,
    ) -> (Vec<corral_proto::longrunning::Operation>, Option<String>) {
        self.ops.list(after, limit, visible)
    }

    /// Cancels one operation. Its action stops (queued: removed; running:
    /// killed on its worker) when no other operation waits on it.
    pub fn cancel(&mut self, name: &str, now: Duration) -> Result<()> {
        let record = self
            .ops
            .get(name)
            .ok_or_else(|| Error::NotFound(format!("no operation named {name:?}")))?;
        let Some(jid) = record.job else {
            return Ok(());
        };
        self.ops.complete(
            name,
            Arc::new(failure(
                Code::Cancelled,
                "the operation was cancelled by a client",
            )),
            now,
        );
        self.detach(jid, name, "cancelled by a client", now);
        self.observer
            .ended_early(crate::observer::Outcome::Cancelled);
        Ok(())
    }

    /// Forgets an operation. As longrunning says, this does not cancel the
    /// action: it still runs and fills the action cache.
    pub fn delete(&mut self, name: &str) -> Result<()> {
        let record = self
            .ops
            .remove(name)
            .ok_or_else(|| Error::NotFound(format!("no operation named {name:?}")))?;
        if let Some(job) = record.job.and_then(|j| self.jobs.get_mut(&j)) {
            job.waiters.retain(|w| &**w != name);
        }
        Ok(())
    }

    fn detach(&mut self, jid: JobId, name: &str, reason: &str, now: Duration) {
        let Some(job) = self.jobs.get_mut(&jid) else {
            return;
        };
        job.waiters.retain(|w| &**w != name);
        if job.waiters.is_empty() {
            self.abandon(jid, reason, now);
        }
    }

    /// Stops a job nobody waits for any more.
    fn abandon(&mut self, jid: JobId, reason: &str, now: Duration) {
        let Some(job) = self.jobs.get_mut(&jid) else {
            return;
        };
        if let Some(k) = &job.key {
            if self.inflight.get(k) == Some(&jid) {
                self.inflight.remove(k);
            }
        }
        match job.state.clone() {
            JobState::Queued => {
                let class = job.class;
                if let Some(c) = self.classes.get_mut(&class) {
                    c.queued = c.queued.saturating_sub(1);
                }
                self.drop_job(jid);
            }
            JobState::Running {
                worker, assignment, ..
            } => {
                job.state = JobState::Abandoned {
                    worker,
                    assignment: assignment.clone(),
                };
                if let Some(w) = self.workers.get_mut(&worker) {
                    tracing::info!(worker = %w.name, %assignment, reason, "cancelling on worker");
                    w.send(
                        message(wire::scheduler_message::Kind::Cancel(wire::Cancel {
                            assignment_id: assignment,
                            reason: reason.to_string(),
                        })),
                        now,
                    );
                }
            }
            JobState::Abandoned { .. } => {}
        }
    }

    /// Completes every waiter of a job with `response` and forgets the job.
    fn finish(&mut self, jid: JobId, response: reapi::ExecuteResponse, now: Duration) {
        let response = self.observe_finished(jid, response, now);
        let Some(job) = self.jobs.get(&jid) else {
            return;
        };
        let response = Arc::new(response);
        for name in &job.waiters {
            self.ops.complete(name, response.clone(), now);
        }
        if let Some(k) = &job.key {
            if self.inflight.get(k) == Some(&jid) {
                self.inflight.remove(k);
            }
        }
        self.drop_job(jid);
    }

    fn drop_job(&mut self, jid: JobId) {
        if let Some(job) = self.jobs.remove(&jid) {
            if let Some(c) = self.classes.get_mut(&job.class) {
                c.jobs = c.jobs.saturating_sub(1);
            }
        }
    }

    fn intern(&mut self, reqs: Requirements) -> ClassId {
        if let Some(&id) = self.class_ids.get(&reqs) {
            return id;
        }
        let id = self.id();
        self.class_ids.insert(reqs.clone(), id);
        self.classes.insert(
            id,
            Class {
                reqs,
                jobs: 0,
                queued: 0,
                unmatched_since: None,
            },
        );
        id
    }
}

/// An ExecuteResponse carrying only an infrastructure failure.
pub fn failure(code: Code, message: impl Into<String>) -> reapi::ExecuteResponse {
    reapi::ExecuteResponse {
        status: Some(rpc_status(code, message)),
        ..Default::default()
    }
}

pub(crate) fn message(kind: wire::scheduler_message::Kind) -> wire::SchedulerMessage {
    wire::SchedulerMessage { kind: Some(kind) }
}
