//! The table of named operations: their stage, their watchers, and the
//! bounded retention of completed ones.
//!
//! Each operation owns a `watch` channel holding only its stage and, once
//! done, a shared `ExecuteResponse` (shared by every caller of a
//! deduplicated action). The `google.longrunning.Operation` is built when
//! it is sent, not stored, which keeps a queued operation small. A
//! keepalive is a re-send of the same value, which wakes every open stream.
//! `Operation.error` is never set: a failure of any kind travels in
//! `ExecuteResponse.status` (BuildStream treats `error` as a protocol
//! violation).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use corral_proto::prost::Message;
use corral_proto::reapi::execution_stage::Value as Stage;
use corral_proto::{longrunning, protobuf, reapi};
use tokio::sync::watch;

use crate::queue::JobId;

const METADATA_URL: &str =
    "type.googleapis.com/build.bazel.remote.execution.v2.ExecuteOperationMetadata";
const RESPONSE_URL: &str = "type.googleapis.com/build.bazel.remote.execution.v2.ExecuteResponse";

/// What an operation's watchers are told.
#[derive(Clone, Debug)]
pub struct OpState {
    pub stage: Stage,
    pub response: Option<Arc<reapi::ExecuteResponse>>,
}

/// A subscription to one operation, able to render it.
#[derive(Debug)]
pub struct OpWatch {
    pub name: Arc<str>,
    pub action_digest: reapi::Digest,
    pub digest_function: i32,
    pub rx: watch::Receiver<OpState>,
}

impl OpWatch {
    /// The operation as it stands, marking the state seen.
    pub fn current(&mut self) -> longrunning::Operation {
        let state = self.rx.borrow_and_update().clone();
        self.render(&state)
    }

    pub fn render(&self, state: &OpState) -> longrunning::Operation {
        build(
            &self.name,
            state.stage,
            &self.action_digest,
            self.digest_function,
            state.response.as_deref(),
        )
    }
}

/// One named operation.
#[derive(Debug)]
pub struct OpRecord {
    /// The job this operation waits on; `None` once done.
    pub job: Option<JobId>,
    /// The instance name the operation was requested under: who may see
    /// it is decided by it.
    pub instance_name: Arc<str>,
    pub action_digest: reapi::Digest,
    pub digest_function: i32,
    name: Arc<str>,
    tx: watch::Sender<OpState>,
    last_sent: Duration,
}

impl OpRecord {
    fn render(&self) -> longrunning::Operation {
        let state = self.tx.borrow();
        build(
            &self.name,
            state.stage,
            &self.action_digest,
            self.digest_function,
            state.response.as_deref(),
        )
    }

    fn done(&self) -> bool {
        self.tx.borrow().response.is_some()
    }
}

/// All operations the scheduler can still name.
#[derive(Debug)]
pub struct OpTable {
    ops: BTreeMap<Arc<str>, OpRecord>,
    completed: VecDeque<(Duration, Arc<str>)>,
    prefix: String,
    next: u64,
}

impl OpTable {
    /// `prefix` keeps names unique across restarts of the process.
    pub fn new(prefix: String) -> Self {
        OpTable {
            ops: BTreeMap::new(),
            completed: VecDeque::new(),
            prefix,
            next: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Creates a QUEUED operation waiting on `job`.
    pub fn create(
        &mut self,
        job: Option<JobId>,
        instance_name: &str,
        action_digest: reapi::Digest,
        digest_function: i32,
        now: Duration,
    ) -> (Arc<str>, OpWatch) {
        self.next += 1;
        let name: Arc<str> = format!("operations/{}-{:012}", self.prefix, self.next).into();
        let (tx, rx) = watch::channel(OpState {
            stage: Stage::Queued,
            response: None,
        });
        let watch = OpWatch {
            name: name.clone(),
            action_digest: action_digest.clone(),
            digest_function,
            rx,
        };
        self.ops.insert(
            name.clone(),
            OpRecord {
                job,
                instance_name: instance_name.into(),
                action_digest,
                digest_function,
                name: name.clone(),
                tx,
                last_sent: now,
            },
        );
        (name, watch)
    }

    pub fn get(&self, name: &str) -> Option<&OpRecord> {
        self.ops.get(name)
    }

    /// The operation as clients see it now.
    pub fn snapshot(&self, name: &str) -> Option<longrunning::Operation> {
        self.ops.get(name).map(OpRecord::render)
    }

    pub fn subscribe(&self, name: &str) -> Option<OpWatch> {
        self.ops.get(name).map(|r| OpWatch {
            name: r.name.clone(),
            action_digest: r.action_digest.clone(),
            digest_function: r.digest_function,
            rx: r.tx.subscribe(),
        })
    }

    /// Moves an unfinished operation to `stage`.
    pub fn set_stage(&mut self, name: &str, stage: Stage, now: Duration) {
        let Some(r) = self.ops.get_mut(name) else {
            return;
        };
        if r.job.is_none() || r.tx.borrow().stage == stage {
            return;
        }
        r.tx.send_replace(OpState {
            stage,
            response: None,
        });
        r.last_sent = now;
    }

    /// Completes an operation with `response`; it is then kept for the
    /// retention period.
    pub fn complete(&mut self, name: &str, response: Arc<reapi::ExecuteResponse>, now: Duration) {
        let Some(r) = self.ops.get_mut(name) else {
            return;
        };
        if r.done() {
            return;
        }
        r.job = None;
        r.tx.send_replace(OpState {
            stage: Stage::Completed,
            response: Some(response),
        });
        r.last_sent = now;
        self.completed.push_back((now, r.name.clone()));
    }

    /// Forgets an operation (Operations.DeleteOperation).
    pub fn remove(&mut self, name: &str) -> Option<OpRecord> {
        self.ops.remove(name)
    }

    /// Re-sends the current state of every unfinished operation that has an
    /// open stream and has been silent for `interval`.
    pub fn keepalive(&mut self, now: Duration, interval: Duration) {
        for r in self.ops.values_mut() {
            if r.job.is_some()
                && r.tx.receiver_count() > 0
                && now.saturating_sub(r.last_sent) >= interval
            {
                r.tx.send_modify(|_| {});
                r.last_sent = now;
            }
        }
    }

    /// Drops completed operations older than `retention`, and the oldest
    /// ones beyond `max`.
    pub fn evict(&mut self, now: Duration, retention: Duration, max: usize) {
        while let Some((at, name)) = self.completed.front() {
            if !self.ops.get(name).is_some_and(OpRecord::done) {
                // Deleted already.
                self.completed.pop_front();
                continue;
            }
            if now.saturating_sub(*at) >= retention || self.completed.len() > max {
                self.ops.remove(name);
                self.completed.pop_front();
            } else {
                break;
            }
        }
    }

    /// A page of operations in name order, starting after `after`.
    pub fn list(
        &self,
        after: &str,
        limit: usize,
        visible: &dyn Fn(&str) -> bool,
    ) -> (Vec<longrunning::Operation>, Option<String>) {
        use std::ops::Bound;
        let start: Bound<&str> = if after.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(after)
        };
        let mut out = Vec::new();
        let mut iter = self
            .ops
            .range::<str, _>((start, Bound::Unbounded))
            .filter(|(_, r)| visible(&r.instance_name));
        for (_, r) in iter.by_ref().take(limit) {
            out.push(r.render());
        }
        let next = if iter.next().is_some() {
            out.last().map(|o| o.name.clone())
        } else {
            None
        };
        (out, next)
    }
}

/// Builds the Operation message for a stage, with the response when done.
pub fn build(
    name: &str,
    stage: Stage,
    action_digest: &reapi::Digest,
    digest_function: i32,
    response: Option<&reapi::ExecuteResponse>,
) -> longrunning::Operation {
    let metadata = reapi::ExecuteOperationMetadata {
        stage: stage as i32,
        action_digest: Some(action_digest.clone()),
        digest_function,
        ..Default::default()
    };
    longrunning::Operation {
        name: name.to_string(),
        metadata: Some(protobuf::Any {
            type_url: METADATA_URL.to_string(),
            value: metadata.encode_to_vec(),
        }),
        done: response.is_some(),
        result: response.map(|r| {
            longrunning::operation::Result::Response(protobuf::Any {
                type_url: RESPONSE_URL.to_string(),
                value: r.encode_to_vec(),
            })
        }),
    }
}

/// Decodes the stage from an Operation's metadata (for tests and clients).
pub fn stage_of(op: &longrunning::Operation) -> Option<Stage> {
    let any = op.metadata.as_ref()?;
    let m = reapi::ExecuteOperationMetadata::decode(any.value.as_slice()).ok()?;
    Stage::try_from(m.stage).ok()
}

/// Decodes the ExecuteResponse of a finished Operation.
pub fn response_of(op: &longrunning::Operation) -> Option<reapi::ExecuteResponse> {
    match op.result.as_ref()? {
        longrunning::operation::Result::Response(any) => {
            reapi::ExecuteResponse::decode(any.value.as_slice()).ok()
        }
        longrunning::operation::Result::Error(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest() -> reapi::Digest {
        reapi::Digest {
            hash: "ab".repeat(32),
            size_bytes: 3,
        }
    }

    #[test]
    fn retention_by_age_and_count() {
        let mut t = OpTable::new("t".into());
        let mut names = Vec::new();
        for i in 0..5 {
            let (n, _) = t.create(Some(i), "", digest(), 1, Duration::ZERO);
            t.complete(&n, Arc::default(), Duration::from_secs(i));
            names.push(n);
        }
        t.evict(Duration::from_secs(4), Duration::from_secs(100), 3);
        assert_eq!(t.len(), 3);
        assert!(t.get(&names[0]).is_none() && t.get(&names[2]).is_some());
        t.evict(Duration::from_secs(103), Duration::from_secs(100), 3);
        assert_eq!(t.len(), 1);
        assert!(t.get(&names[4]).is_some());
    }

    #[test]
    fn completed_operation_has_response_never_error() {
        let mut t = OpTable::new("t".into());
        let (n, mut w) = t.create(Some(1), "", digest(), 1, Duration::ZERO);
        assert_eq!(stage_of(&w.current()), Some(Stage::Queued));
        t.set_stage(&n, Stage::Executing, Duration::ZERO);
        assert_eq!(stage_of(&w.current()), Some(Stage::Executing));
        let resp = reapi::ExecuteResponse {
            status: Some(crate::status::rpc_status(
                corral_proto::tonic::Code::DeadlineExceeded,
                "late",
            )),
            ..Default::default()
        };
        t.complete(&n, Arc::new(resp.clone()), Duration::ZERO);
        let op = w.current();
        assert_eq!(op.name, &*n);
        assert!(op.done);
        assert_eq!(response_of(&op), Some(resp));
        assert!(!matches!(
            op.result,
            Some(longrunning::operation::Result::Error(_))
        ));
    }

    #[test]
    fn list_pages_in_name_order() {
        let mut t = OpTable::new("t".into());
        for i in 0..5 {
            t.create(Some(i), "", digest(), 1, Duration::ZERO);
        }
        let (page, next) = t.list("", 2, &|_| true);
        assert_eq!(page.len(), 2);
        let (page2, next2) = t.list(next.as_deref().unwrap(), 10, &|_| true);
        assert_eq!(page2.len(), 3);
        assert!(next2.is_none());
        assert!(page[1].name < page2[0].name);
    }
}
